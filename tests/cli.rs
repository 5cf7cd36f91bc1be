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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("STOREPULSE_INGST__LISTEN") && err.contains("`ingst` is not a section"),
        "{err}"
    );
    assert!(
        err.trim_end().lines().count() == 1 && err.starts_with("error: "),
        "one line, no backtrace: {err}"
    );
}

/// The documented example configuration loads, every section and key known, and its
/// values are the defaults the README lists.
#[test]
fn the_example_config_is_valid_and_matches_the_defaults() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/storepulse.example.toml");
    let src = storepulse_runtime::ConfigSource::from_toml(
        &std::fs::read_to_string(&path).expect("example config"),
    )
    .expect("example parses");
    let ingest: storepulse_ingest::IngestSettings = src.section("ingest").expect("ingest");
    let defaults = storepulse_ingest::IngestSettings::default();
    assert_eq!(ingest.max_event_age_secs, defaults.max_event_age_secs);
    assert_eq!(ingest.max_unit_price_minor, defaults.max_unit_price_minor);
    let compactor: storepulse_compactor::CompactorSettings =
        src.section("compactor").expect("compactor");
    assert_eq!(
        compactor.unknown_schema_hold_secs,
        storepulse_compactor::CompactorSettings::default().unknown_schema_hold_secs
    );
    assert_eq!(
        compactor.retention,
        storepulse_compactor::CompactorSettings::default().retention
    );
    assert_eq!(compactor.maintenance_interval_secs, 3_600);
    let pg: storepulse_runtime::PostgresConfig = src.section("postgres").expect("postgres");
    assert_eq!(pg.statement_timeout_ms, 30_000);
    let rules: storepulse_rules::RulesSettings = src.section("rules").expect("rules");
    let defaults = storepulse_rules::RulesSettings::default();
    assert_eq!(rules.allowed_lateness_ms, defaults.allowed_lateness_ms);
    assert_eq!(rules.idle_timeout_ms, defaults.idle_timeout_ms);
    storepulse_rules::load_rules(&storepulse_rules::RulesSettings {
        rules_file: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(&rules.rules_file)
            .display()
            .to_string(),
        ..defaults
    })
    .expect("the example config names the example rule file");
    let _: storepulse_runtime::KafkaConfig = src.section("kafka").expect("kafka");
    let _: storepulse_runtime::LogConfig = src.section("log").expect("log");
    let notifier: storepulse_notifier::NotifierSettings =
        src.section("notifier").expect("notifier");
    let defaults = storepulse_notifier::NotifierSettings::default();
    assert_eq!(notifier.policy_file, defaults.policy_file);
    assert_eq!(notifier.batch_max_wait_ms, defaults.batch_max_wait_ms);
}

/// `storepulse stores` shows a store's calendar; `storepulse rules check` names the
/// rule and field of an invalid rule file.
#[test]
fn store_calendars_and_rule_files_are_checked_from_the_cli() {
    let root = env!("CARGO_MANIFEST_DIR");
    let calendar = format!("{root}/config/stores.example.toml");
    let out = storepulse(&["stores", "check", "--calendar", &calendar]);
    assert!(out.status.success(), "{out:?}");
    // Saturday lunch break in Lisbon.
    let out = storepulse(&[
        "stores",
        "show",
        "acme/store-017",
        "--at",
        "2026-11-28T13:30:00Z",
        "--calendar",
        &calendar,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("Europe/Lisbon"), "{text}");
    assert!(text.contains("sat 09:00-13:00,14:00-19:00"), "{text}");
    assert!(
        text.contains("at 2026-11-28 13:30 UTC: closed; opens 2026-11-28 14:00 UTC"),
        "{text}"
    );
    let out = storepulse(&[
        "rules",
        "check",
        "--rules",
        &format!("{root}/config/rules.example.toml"),
    ]);
    assert!(out.status.success(), "{out:?}");
    let dir = tempfile::tempdir().expect("dir");
    let bad = dir.path().join("rules.toml");
    std::fs::write(
        &bad,
        "[[rules]]\nname = \"warm\"\nkind = \"threshold\"\nmatch = { source = \"sensor\" }\nabove = 5\nclear = 9\n",
    )
    .expect("write");
    let out = storepulse(&["rules", "check", "--rules", &bad.display().to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rule \"warm\": field `clear`"), "{err}");
}
