//! The dev stack's stand-in for a notification receiver: a local webhook endpoint
//! that prints each notification the notifier delivers to it, one line per message.
//!
//! Guarantees: every request is answered 200 (so the notifier's ledger shows it
//! delivered); a body that is not a notifier message is printed as such, never a
//! panic.

use axum::body::Bytes;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The notifier's policy in `storepulse dev`: every alert to the local sink, grouped
/// per store, with the example's inhibition (a store offline mutes its terminals).
pub const DEV_NOTIFIER_POLICY: &str = r#"# storepulse dev: every alert goes to a local webhook that prints it (edit me:
# reloaded live). See config/notifier.example.toml for every option.
[route]
receiver = "dev-sink"
group_by = ["tenant", "store"]
group_wait = "10s"
group_interval = "1m"
repeat_interval = "30m"

[[receivers]]
name = "dev-sink"
[[receivers.channels]]
type = "webhook"
url = "{sink}/notify"

[[inhibit_rules]]
source_matchers = ['rule = "store-network-down"']
target_matchers = ['rule =~ "terminal-offline|pos-offline|sensor-silent"']
equal = ["tenant", "store"]
"#;

/// One line for a delivered message: `NOTIFY  <receiver> FIRING: 2 alerts (...) | first summary`.
pub fn describe(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return format!("NOTIFY  (not a notifier message: {} bytes)", body.len());
    };
    let alerts = v["alerts"].as_array().map_or(0, Vec::len);
    let summaries: Vec<&str> = v["alerts"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["summary"].as_str()).collect())
        .unwrap_or_default();
    let labels: Vec<String> = v["group_labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "NOTIFY  {} {} {} {} ({}) | {}",
        Utc::now().format("%H:%M:%S"),
        v["receiver"].as_str().unwrap_or("?"),
        v["status"].as_str().unwrap_or("?").to_uppercase(),
        if alerts == 1 {
            "1 alert".to_string()
        } else {
            format!("{alerts} alerts")
        },
        labels.join(", "),
        summaries.join("; ")
    )
}

/// Serves the sink on `listener` until `shutdown`, printing each message.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let app = axum::Router::new().fallback(|body: Bytes| async move {
        println!("{}", describe(&body));
        "ok"
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_one_line_and_junk_does_not_panic() {
        let line = describe(
            br#"{"receiver":"dev-sink","status":"firing","group_labels":{"store":"s-1"},
                 "alerts":[{"summary":"pos-2 silent"},{"summary":"pos-3 silent"}]}"#,
        );
        assert!(line.starts_with("NOTIFY  "), "{line}");
        assert!(
            line.ends_with("dev-sink FIRING 2 alerts (store=s-1) | pos-2 silent; pos-3 silent"),
            "{line}"
        );
        assert!(describe(b"\xff").contains("not a notifier message"));
    }

    #[test]
    fn the_dev_policy_is_valid() {
        let text = DEV_NOTIFIER_POLICY.replace("{sink}", "http://127.0.0.1:1");
        let p = storepulse_notifier::policy::Policy::parse(&text, &|_| None).expect("valid");
        assert_eq!(p.receivers.len(), 1);
    }
}
