//! The Helm chart's configuration reaches the services: every key under `config`,
//! `services.<name>.config`, `services.<name>.port` and `services.<name>.env`, the
//! read store's Secret and the Kafka TLS/SASL settings of the default, dev and prod
//! values arrive, with their values, in the configuration each service loads with
//! its own loader (`storepulse config show SERVICE`, run with exactly the rendered
//! ConfigMap file and container environment); so does every `STOREPULSE_*`
//! variable of docker-compose.yml's containers. A misspelt key and a value of the
//! wrong type are refused, naming the key. The rule files and notification
//! policies deployed load with the services' loaders.
//!
//! The chart is rendered offline by `scripts/deploy/config_cases.py` (the Helm v4
//! library from PyPI's helm-python-sdk, installed by scripts/install-deps.sh).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The rendered containers and what the values say they must get.
fn cases() -> Vec<Value> {
    config_cases(&[])
}

/// The output of `scripts/deploy/config_cases.py ARGS`.
fn config_cases(args: &[&str]) -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("scripts/deploy/config_cases.py"))
        .args(args)
        .current_dir(root.join("scripts/deploy"))
        .output()
        .expect("run python3 scripts/deploy/config_cases.py (scripts/install-deps.sh installs its packages)");
    assert!(
        out.status.success(),
        "rendering the chart failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cases are JSON")
}

/// `storepulse config show SERVICE` with only the container's environment and its
/// config file written where `STOREPULSE_CONFIG` points (redirected to a temp dir).
fn show(case: &Value, dir: &Path) -> std::process::Output {
    let file = dir.join("storepulse.toml");
    std::fs::write(&file, case["config_toml"].as_str().expect("toml")).expect("write config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_storepulse"));
    cmd.env_clear();
    for (name, value) in case["env"].as_object().expect("env") {
        cmd.env(name, value.as_str().expect("env value"));
    }
    cmd.env("STOREPULSE_CONFIG", &file);
    cmd.args(["config", "show", case["service"].as_str().expect("service")]);
    cmd.output().expect("run storepulse config show")
}

/// A values scalar equals a loaded one: numbers numerically (YAML `5000` and the
/// loader's `5000.0`, or an env string `"1000"`), everything else as text.
fn same(wanted: &Value, got: &Value) -> bool {
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    };
    match (wanted, got) {
        (Value::Array(w), Value::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(w, g)| same(w, g))
        }
        (Value::String(w), Value::String(g)) => w == g,
        (Value::Bool(w), Value::Bool(g)) => w == g,
        (Value::String(w), Value::Bool(g)) => w == &g.to_string(),
        _ => match (number(wanted), number(got)) {
            (Some(w), Some(g)) => w == g,
            _ => false,
        },
    }
}

#[test]
fn every_helm_config_value_reaches_the_service_that_reads_it() {
    let cases = cases();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    let (mut checked, mut refused) = (0, 0);
    for case in &cases {
        let label = format!(
            "[{} values] {} ({})",
            case["case"].as_str().unwrap_or_default(),
            case["container"].as_str().unwrap_or_default(),
            case["service"].as_str().unwrap_or_default()
        );
        let out = show(case, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(expected) = case["expect_error"].as_str() {
            if out.status.success() || !stderr.contains(expected) {
                failures.push(format!(
                    "{label}: the loader should refuse it naming `{expected}`; status {}, stderr: {stderr}",
                    out.status
                ));
            } else {
                refused += 1;
            }
            continue;
        }
        if !out.status.success() {
            failures.push(format!(
                "{label}: the service refuses its configuration: {stderr}"
            ));
            continue;
        }
        let loaded: Value = serde_json::from_slice(&out.stdout).expect("config show prints JSON");
        for claim in case["claims"].as_array().expect("claims") {
            let path: Vec<&str> = claim["path"]
                .as_array()
                .expect("path")
                .iter()
                .map(|p| p.as_str().expect("path part"))
                .collect();
            let got = path.iter().try_fold(&loaded, |v, k| v.get(*k));
            match got {
                Some(got) if same(&claim["value"], got) => checked += 1,
                other => failures.push(format!(
                    "{label}: values key {} = {} should reach {} but the service has {}",
                    claim["from"],
                    claim["value"],
                    path.join("."),
                    other.map_or("nothing".to_string(), Value::to_string)
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 100, "only {checked} keys checked");
    assert_eq!(refused, 2, "both deliberately wrong values were refused");
}

#[test]
fn the_rule_files_and_policies_deployed_load_with_the_services_loaders() {
    let cases = config_cases(&["files"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    let (mut rules, mut policies) = (0, 0);
    for case in &cases {
        let origin = case["origin"].as_str().unwrap_or_default();
        let text = case["text"].as_str().expect("text");
        match case["kind"].as_str() {
            Some("rules") => {
                let file = dir.path().join(format!("rules-{rules}.toml"));
                std::fs::write(&file, text).expect("write");
                let out = Command::new(env!("CARGO_BIN_EXE_storepulse"))
                    .env_clear()
                    .args(["rules", "check", "--rules"])
                    .arg(&file)
                    .output()
                    .expect("run storepulse rules check");
                if out.status.success() {
                    rules += 1;
                } else {
                    failures.push(format!(
                        "{origin}: storepulse rules check refuses it: {}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            Some("policy") => {
                let env = case["env"].as_object().expect("env").clone();
                let lookup =
                    move |name: &str| env.get(name).and_then(Value::as_str).map(String::from);
                match storepulse_notifier::policy::Policy::parse(text, &lookup) {
                    Ok(_) => policies += 1,
                    Err(e) => failures.push(format!("{origin}: the notifier refuses it: {e}")),
                }
            }
            other => failures.push(format!("{origin}: unknown kind {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        (rules, policies),
        (4, 4),
        "three values files and compose, each"
    );
}

#[test]
fn the_comparison_is_strict() {
    use serde_json::json;
    assert!(same(&json!(5000), &json!(5000.0)));
    assert!(same(&json!("1000"), &json!(1000)));
    assert!(!same(&json!(5000), &json!(5001)));
    assert!(!same(&json!("30d"), &json!("31d")));
    assert!(!same(&json!("x"), &json!(null)));
}
