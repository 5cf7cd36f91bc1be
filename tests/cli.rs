//! The `storepulse` binary as an operator uses it.

mod support;

use std::process::Command;

use support::TestStack;

fn storepulse(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_storepulse"))
        .args(args)
        .env_remove("STOREPULSE_CONFIG")
        .output()
        .expect("run storepulse")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_created_listed_and_revoked() {
    let stack = TestStack::start("clikeys").await;
    let url = stack.postgres.url.as_str();
    let out = storepulse(&[
        "keys",
        "create",
        "--tenant",
        "acme",
        "--store",
        "s-7",
        "--label",
        "till",
        "--database-url",
        url,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string();
    assert!(token.starts_with("sp_"), "{token}");
    let key_id = token.split('_').nth(1).expect("key id").to_string();

    let list = storepulse(&["keys", "list", "--tenant", "acme", "--database-url", url]);
    let text = String::from_utf8_lossy(&list.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with(&key_id))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("s-7") && line.contains("active"), "{line}");
    assert!(
        !text.contains(token.rsplit('_').next().expect("secret")),
        "secrets are never listed"
    );

    let revoke = storepulse(&["keys", "revoke", &key_id, "--database-url", url]);
    assert!(revoke.status.success());
    let text =
        String::from_utf8_lossy(&storepulse(&["keys", "list", "--database-url", url]).stdout)
            .to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with(&key_id) && l.contains("revoked")),
        "{text}"
    );

    let missing = storepulse(&["keys", "revoke", "nosuchkey", "--database-url", url]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no API key with id nosuchkey"));
}

#[test]
fn a_bad_setting_is_named_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_storepulse"))
        .args(["run", "compactor"])
        .env("STOREPULSE_KAFKA__PARTITIONS", "0")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kafka.partitions"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_storepulse"))
        .args(["run", "ingest"])
        .env("STOREPULSE_INGST__LISTEN", "x")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown config section `ingst`"));
}
