//! Human-readable text of a message, for the channels people read (Slack, WhatsApp,
//! email), rendered from the webhook body ([`crate::delivery::body`]).
//!
//! Guarantees: the same body always renders the same text; every alert of the
//! message is listed (one line each); HTML is escaped; WhatsApp template parameters
//! hold no newline, tab or run of more than four spaces (the Cloud API refuses them)
//! and are cut to a bounded length.

use serde_json::Value;

/// Longest WhatsApp template parameter we send (characters).
const WHATSAPP_PARAMETER_MAX: usize = 900;

/// `FIRING: 2 alerts (store=s-001, tenant=acme)` / `RESOLVED: 1 alert (...)`.
pub fn headline(body: &Value) -> String {
    let status = body["status"].as_str().unwrap_or("firing").to_uppercase();
    let n = body["alerts"].as_array().map_or(0, Vec::len);
    let noun = if n == 1 { "alert" } else { "alerts" };
    let labels: Vec<String> = body["group_labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if labels.is_empty() {
        format!("{status}: {n} {noun}")
    } else {
        format!("{status}: {n} {noun} ({})", labels.join(", "))
    }
}

/// One line per alert: `[critical] store-001 freezer-1: freezer-1 at -9.5 °C (firing since ...)`.
pub fn alert_lines(body: &Value) -> Vec<String> {
    body["alerts"]
        .as_array()
        .map(|alerts| {
            alerts
                .iter()
                .map(|a| {
                    let s = |k: &str| a[k].as_str().unwrap_or("");
                    let when = if s("state") == "resolved" {
                        format!("resolved at {}", s("occurred_at"))
                    } else if let Some(step) = a["escalation"].as_u64() {
                        format!(
                            "unacknowledged, escalation step {step}; firing since {}",
                            s("started_at")
                        )
                    } else if a["repeat"].is_number() {
                        format!("still firing since {}", s("started_at"))
                    } else {
                        format!("firing since {}", s("started_at"))
                    };
                    format!(
                        "[{}] {} {}: {} ({when})",
                        s("severity"),
                        s("store_id"),
                        s("subject"),
                        s("summary")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Plain text: the headline, a blank line, the alert lines, the message id.
pub fn plain(body: &Value) -> String {
    let mut out = headline(body);
    out.push_str("\n\n");
    for line in alert_lines(body) {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!(
        "\nmessage {}\n",
        body["message_id"].as_str().unwrap_or("")
    ));
    out
}

/// HTML: the headline as a heading and the alerts as a list, escaped.
pub fn html(body: &Value) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html><body>\n<h2>{}</h2>\n<ul>\n",
        escape_html(&headline(body))
    );
    for line in alert_lines(body) {
        out.push_str(&format!("<li>{}</li>\n", escape_html(&line)));
    }
    out.push_str(&format!(
        "</ul>\n<p><small>message {}</small></p>\n</body></html>\n",
        escape_html(body["message_id"].as_str().unwrap_or(""))
    ));
    out
}

/// Slack `mrkdwn`: bold headline, one bullet per alert; `&`, `<`, `>` escaped.
pub fn slack(body: &Value) -> String {
    let mut out = format!("*{}*", escape_slack(&headline(body)));
    for line in alert_lines(body) {
        out.push_str("\n• ");
        out.push_str(&escape_slack(&line));
    }
    out
}

/// The two parameters of a WhatsApp template (`{{1}}` headline, `{{2}}` alerts).
pub fn whatsapp_parameters(body: &Value) -> [String; 2] {
    [
        whatsapp_parameter(&headline(body)),
        whatsapp_parameter(&alert_lines(body).join("; ")),
    ]
}

/// A WhatsApp text message body (newlines allowed there).
pub fn whatsapp_text(body: &Value) -> String {
    let mut out = format!("*{}*", headline(body));
    for line in alert_lines(body) {
        out.push('\n');
        out.push_str(&line);
    }
    out.chars().take(4000).collect()
}

fn whatsapp_parameter(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut spaces = 0;
    for c in text.chars() {
        let c = if c.is_whitespace() { ' ' } else { c };
        if c == ' ' {
            spaces += 1;
            if spaces > 1 {
                continue;
            }
        } else {
            spaces = 0;
        }
        out.push(c);
    }
    let trimmed = out.trim();
    if trimmed.chars().count() > WHATSAPP_PARAMETER_MAX {
        let mut cut: String = trimmed.chars().take(WHATSAPP_PARAMETER_MAX - 1).collect();
        cut.push('…');
        cut
    } else {
        trimmed.to_string()
    }
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn escape_slack(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Value {
        serde_json::json!({
            "message_id": "m-1", "status": "firing",
            "group_labels": {"store": "s-001", "tenant": "acme"},
            "alerts": [
                {"state": "firing", "severity": "critical", "store_id": "s-001",
                 "subject": "freezer-1", "summary": "freezer <1> at -9.5 °C\n\tnow",
                 "started_at": "2026-11-23T10:00:00+00:00", "occurred_at": "2026-11-23T10:00:00+00:00"},
                {"state": "resolved", "severity": "warning", "store_id": "s-001",
                 "subject": "pos-2", "summary": "pos-2 back",
                 "started_at": "2026-11-23T09:00:00+00:00", "occurred_at": "2026-11-23T10:05:00+00:00"}
            ]
        })
    }

    #[test]
    fn every_alert_is_listed_and_escaped_per_channel() {
        let b = body();
        assert_eq!(headline(&b), "FIRING: 2 alerts (store=s-001, tenant=acme)");
        let lines = alert_lines(&b);
        assert_eq!(lines.len(), 2);
        assert!(
            lines[1].contains("resolved at 2026-11-23T10:05:00"),
            "{lines:?}"
        );
        assert!(html(&b).contains("freezer &lt;1&gt; at -9.5 °C"));
        assert!(slack(&b).contains("freezer &lt;1&gt;"));
        assert!(plain(&b).ends_with("message m-1\n"));
        let [h, alerts] = whatsapp_parameters(&b);
        assert_eq!(h, "FIRING: 2 alerts (store=s-001, tenant=acme)");
        assert!(!alerts.contains('\n') && !alerts.contains('\t') && !alerts.contains("  "));
        assert!(alerts.contains("; [warning] s-001 pos-2"), "{alerts}");
    }

    #[test]
    fn long_whatsapp_parameters_are_cut() {
        let p = whatsapp_parameter(&"x".repeat(5000));
        assert_eq!(p.chars().count(), WHATSAPP_PARAMETER_MAX);
        assert!(p.ends_with('…'));
    }
}
