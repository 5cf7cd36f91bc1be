//! Sending one message over one channel, once; the caller retries.
//!
//! Guarantees:
//! - every answer is classified: 2xx delivered; 5xx, 429 (with its `Retry-After`)
//!   and network errors retryable; any other 4xx permanent;
//! - error texts carry the status and a short, cut excerpt of the answer, never the
//!   URL (Slack and WhatsApp URLs and tokens are secrets) nor a secret.
//!
//! Webhook requests: `POST` of the JSON body with `Idempotency-Key: <message id>`,
//! `X-StorePulse-Timestamp: <unix seconds>` and, when the channel has a secret,
//! `X-StorePulse-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
//!
//! Slack: `POST` `{"text": ...}` to an incoming webhook, or `{"channel", "text"}` to
//! `chat.postMessage` with `Authorization: Bearer <token>` (whose HTTP 200 answers
//! carry `"ok": false` on errors: permanent, except `ratelimited`).
//! WhatsApp Business Cloud API: `POST /<version>/<phone-number-id>/messages` with a
//! bearer token; a template message (two body parameters) or a text message; the
//! message id rides in `biz_opaque_callback_data`.
//! Email: one SMTP session per message (lettre), `multipart/alternative` plain text
//! and HTML, `Message-ID: <message id@storepulse>`; SMTP 5xx answers are permanent,
//! 4xx and connection errors retryable.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::policy::{ChannelSpec, Secret, SlackTarget, StartTls};
use crate::render;

/// Header carrying the message id; the same on every retry and resend.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Header carrying the signing time, unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-StorePulse-Timestamp";
/// Header carrying `v1=<hex signature>`.
pub const SIGNATURE_HEADER: &str = "X-StorePulse-Signature";

/// Why a send did not deliver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth another try (after `retry_after` if the receiver said so).
    #[error("{reason}")]
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The receiver refused the message; retrying would not help.
    #[error("{0}")]
    Permanent(String),
}

/// A rendered message, ready for any channel.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub message_id: uuid::Uuid,
    /// The webhook body.
    pub body: serde_json::Value,
}

/// `v1=` + hex HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`.
pub fn signature(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends `message` over `channel` once.
pub async fn send_once(
    http: &reqwest::Client,
    channel: &ChannelSpec,
    message: &Outgoing,
) -> Result<(), SendError> {
    match channel {
        ChannelSpec::Webhook {
            url,
            secret,
            timeout,
        } => {
            let body = serde_json::to_vec(&message.body)
                .map_err(|e| SendError::Permanent(format!("cannot encode the body: {e}")))?;
            let timestamp = chrono::Utc::now().timestamp();
            let mut req = http
                .post(url)
                .timeout(*timeout)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(IDEMPOTENCY_HEADER, message.message_id.to_string())
                .header(TIMESTAMP_HEADER, timestamp.to_string());
            if let Some(secret) = secret {
                req = req.header(SIGNATURE_HEADER, signature(secret, timestamp, &body));
            }
            answer(req.body(body).send().await).await
        }
        ChannelSpec::Slack { target, timeout } => match target {
            SlackTarget::IncomingWebhook { url } => {
                let req = http
                    .post(url.expose())
                    .timeout(*timeout)
                    .json(&slack_payload(None, &message.body));
                answer(req.send().await).await
            }
            SlackTarget::PostMessage {
                url,
                token,
                channel,
            } => {
                let req = http
                    .post(url)
                    .timeout(*timeout)
                    .bearer_auth(token.expose())
                    .json(&slack_payload(Some(channel), &message.body));
                let resp = req.send().await;
                slack_api_answer(resp).await
            }
        },
        ChannelSpec::WhatsApp {
            messages_url,
            to,
            token,
            template,
            timeout,
        } => {
            let payload = whatsapp_payload(to, template.as_ref(), message);
            let req = http
                .post(messages_url)
                .timeout(*timeout)
                .bearer_auth(token.expose())
                .json(&payload);
            whatsapp_answer(req.send().await).await
        }
        ChannelSpec::Email { .. } => send_email(channel, message).await,
    }
}

/// The Slack request body (`channel` only for chat.postMessage).
pub fn slack_payload(channel: Option<&str>, body: &serde_json::Value) -> serde_json::Value {
    let mut payload = serde_json::json!({
        "text": render::slack(body),
        "unfurl_links": false,
    });
    if let Some(c) = channel {
        payload["channel"] = serde_json::Value::String(c.to_string());
    }
    payload
}

/// The WhatsApp Cloud API request body.
pub fn whatsapp_payload(
    to: &str,
    template: Option<&(String, String)>,
    message: &Outgoing,
) -> serde_json::Value {
    let mut payload = match template {
        Some((name, language)) => {
            let parameters: Vec<serde_json::Value> = render::whatsapp_parameters(&message.body)
                .into_iter()
                .map(|text| serde_json::json!({"type": "text", "text": text}))
                .collect();
            serde_json::json!({
                "type": "template",
                "template": {
                    "name": name,
                    "language": {"code": language},
                    "components": [{"type": "body", "parameters": parameters}],
                },
            })
        }
        None => serde_json::json!({
            "type": "text",
            "text": {"preview_url": false, "body": render::whatsapp_text(&message.body)},
        }),
    };
    payload["messaging_product"] = "whatsapp".into();
    payload["recipient_type"] = "individual".into();
    payload["to"] = to.into();
    payload["biz_opaque_callback_data"] = message.message_id.to_string().into();
    payload
}

/// The email of a message: plain text and HTML alternatives.
pub fn email_message(
    from: &lettre::message::Mailbox,
    to: &[lettre::message::Mailbox],
    message: &Outgoing,
) -> Result<lettre::Message, SendError> {
    use lettre::message::MultiPart;
    let mut builder = lettre::Message::builder()
        .from(from.clone())
        .subject(render::headline(&message.body))
        .message_id(Some(format!("<{}@storepulse>", message.message_id)));
    for rcpt in to {
        builder = builder.to(rcpt.clone());
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            render::plain(&message.body),
            render::html(&message.body),
        ))
        .map_err(|e| SendError::Permanent(format!("cannot build the email: {e}")))
}

async fn send_email(channel: &ChannelSpec, message: &Outgoing) -> Result<(), SendError> {
    use lettre::transport::smtp::AsyncSmtpTransport;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{AsyncTransport, Tokio1Executor};
    let ChannelSpec::Email {
        host,
        port,
        starttls,
        credentials,
        from,
        to,
        timeout,
    } = channel
    else {
        return Err(SendError::Permanent("not an email channel".into()));
    };
    let email = email_message(from, to, message)?;
    let tls = match starttls {
        StartTls::Off => Tls::None,
        StartTls::Required | StartTls::Opportunistic => {
            let params = TlsParameters::new(host.clone())
                .map_err(|e| SendError::Permanent(format!("TLS setup: {e}")))?;
            if *starttls == StartTls::Required {
                Tls::Required(params)
            } else {
                Tls::Opportunistic(params)
            }
        }
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
        .port(*port)
        .tls(tls)
        .timeout(Some(*timeout));
    if let Some((user, password)) = credentials {
        transport = transport.credentials(Credentials::new(
            user.clone(),
            password.expose().to_string(),
        ));
    }
    match transport.build().send(email).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(SendError::Permanent(format!("SMTP: {e}"))),
        Err(e) => Err(SendError::Retryable {
            reason: format!("SMTP: {e}"),
            retry_after: None,
        }),
    }
}

/// Classifies a chat.postMessage answer: HTTP errors as usual, then the JSON `ok`.
async fn slack_api_answer(
    result: Result<reqwest::Response, reqwest::Error>,
) -> Result<(), SendError> {
    let resp = match result {
        Ok(r) if r.status().is_success() => r,
        other => return answer(other).await,
    };
    let text = resp.text().await.unwrap_or_default();
    slack_api_result(&text)
}

/// `{"ok": true}` delivered; `{"ok": false, "error": e}` permanent unless Slack says
/// it is rate-limited or failing internally.
pub fn slack_api_result(text: &str) -> Result<(), SendError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| SendError::Retryable {
        reason: "Slack answered something that is not JSON".into(),
        retry_after: None,
    })?;
    if v["ok"].as_bool() == Some(true) {
        return Ok(());
    }
    let error = v["error"].as_str().unwrap_or("unknown error");
    let reason = format!("Slack: {}", error.chars().take(100).collect::<String>());
    match error {
        "ratelimited"
        | "internal_error"
        | "fatal_error"
        | "service_unavailable"
        | "request_timeout" => Err(SendError::Retryable {
            reason,
            retry_after: None,
        }),
        _ => Err(SendError::Permanent(reason)),
    }
}

/// An HTTP answer that was not a success, read whole.
#[derive(Debug)]
struct FailedAnswer {
    status: u16,
    /// `Retry-After` in seconds, when given.
    retry_after: Option<Duration>,
    text: String,
}

impl FailedAnswer {
    /// `HTTP 400: <first 200 characters of the body>`.
    fn reason(&self) -> String {
        let excerpt: String = self.text.chars().take(200).collect();
        format!("HTTP {}: {}", self.status, excerpt.trim())
    }

    /// 5xx and 429 are worth retrying; other statuses are not.
    fn by_status(self) -> SendError {
        let reason = self.reason();
        if self.status >= 500 || self.status == 429 {
            SendError::Retryable {
                reason,
                retry_after: self.retry_after,
            }
        } else {
            SendError::Permanent(reason)
        }
    }
}

/// `Ok(None)` for a success; the failed answer, or a retryable error when there was
/// no answer at all.
async fn read_answer(
    result: Result<reqwest::Response, reqwest::Error>,
) -> Result<Option<FailedAnswer>, SendError> {
    let resp = result.map_err(|e| SendError::Retryable {
        reason: format!("request failed: {}", e.without_url()),
        retry_after: None,
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(None);
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Ok(Some(FailedAnswer {
        status: status.as_u16(),
        retry_after,
        text: resp.text().await.unwrap_or_default(),
    }))
}

/// Classifies an HTTP answer by its status.
async fn answer(result: Result<reqwest::Response, reqwest::Error>) -> Result<(), SendError> {
    match read_answer(result).await? {
        None => Ok(()),
        Some(failed) => Err(failed.by_status()),
    }
}

/// Graph API error codes of the WhatsApp Cloud API that mean "not now" rather than
/// "never": rate limits (4, 80007, 130429, 131048, 131056) and temporary failures
/// (1, 2, 131000, 131016, 133004). Meta answers them with HTTP 400, which alone would
/// read as permanent and drop the notification.
const WHATSAPP_RETRYABLE_CODES: [i64; 10] = [
    1, 2, 4, 80_007, 130_429, 131_000, 131_016, 131_048, 131_056, 133_004,
];

/// Classifies a WhatsApp Cloud API answer: its `error.code` first, then the status.
async fn whatsapp_answer(
    result: Result<reqwest::Response, reqwest::Error>,
) -> Result<(), SendError> {
    match read_answer(result).await? {
        None => Ok(()),
        Some(failed) => Err(whatsapp_failure(failed)),
    }
}

fn whatsapp_failure(failed: FailedAnswer) -> SendError {
    let error = serde_json::from_str::<serde_json::Value>(&failed.text)
        .ok()
        .and_then(|v| v.get("error").cloned());
    let code = error.as_ref().and_then(|e| e["code"].as_i64());
    match code {
        Some(code) if WHATSAPP_RETRYABLE_CODES.contains(&code) => SendError::Retryable {
            reason: format!(
                "WhatsApp error {code} (rate limit or temporary): {}",
                error
                    .as_ref()
                    .and_then(|e| e["message"].as_str())
                    .unwrap_or_default()
                    .chars()
                    .take(150)
                    .collect::<String>()
            ),
            retry_after: failed.retry_after,
        },
        _ => failed.by_status(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing() -> Outgoing {
        Outgoing {
            message_id: uuid::Uuid::from_u128(1),
            body: serde_json::json!({
                "message_id": uuid::Uuid::from_u128(1), "status": "firing", "group_labels": {},
                "alerts": [{"state": "firing", "severity": "critical", "store_id": "s-1",
                            "subject": "freezer-1", "summary": "warm", "started_at": "t"}]
            }),
        }
    }

    #[test]
    fn whatsapp_rate_limits_are_retried_though_answered_400() {
        let failed = |status: u16, text: &str| FailedAnswer {
            status,
            retry_after: None,
            text: text.into(),
        };
        let limited = r#"{"error":{"message":"(#131056) (Business Account, Consumer Account) pair rate limit hit","type":"OAuthException","code":131056}}"#;
        assert!(matches!(
            whatsapp_failure(failed(400, limited)),
            SendError::Retryable { reason, .. } if reason.contains("131056") && reason.contains("pair rate limit")
        ));
        let bad_number = r#"{"error":{"message":"(#100) Invalid parameter","type":"OAuthException","code":100}}"#;
        assert!(matches!(
            whatsapp_failure(failed(400, bad_number)),
            SendError::Permanent(reason) if reason.starts_with("HTTP 400")
        ));
        assert!(matches!(
            whatsapp_failure(failed(503, "<html>")),
            SendError::Retryable { .. }
        ));
        assert!(matches!(
            whatsapp_failure(failed(401, "{}")),
            SendError::Permanent(_)
        ));
    }

    #[test]
    fn slack_api_answers_are_classified() {
        assert_eq!(slack_api_result(r#"{"ok":true,"ts":"1"}"#), Ok(()));
        assert!(matches!(
            slack_api_result(r#"{"ok":false,"error":"channel_not_found"}"#),
            Err(SendError::Permanent(e)) if e == "Slack: channel_not_found"
        ));
        assert!(matches!(
            slack_api_result(r#"{"ok":false,"error":"ratelimited"}"#),
            Err(SendError::Retryable { .. })
        ));
        assert!(matches!(
            slack_api_result("<html>"),
            Err(SendError::Retryable { .. })
        ));
    }

    #[test]
    fn whatsapp_requests_follow_the_cloud_api_shape() {
        let m = outgoing();
        let t = whatsapp_payload(
            "4915112345678",
            Some(&("storepulse_alert".into(), "de".into())),
            &m,
        );
        assert_eq!(t["messaging_product"], "whatsapp");
        assert_eq!(t["to"], "4915112345678");
        assert_eq!(t["type"], "template");
        assert_eq!(t["template"]["name"], "storepulse_alert");
        assert_eq!(t["template"]["language"]["code"], "de");
        let params = &t["template"]["components"][0]["parameters"];
        assert_eq!(params[0]["text"], "FIRING: 1 alert");
        assert_eq!(params[1]["type"], "text");
        assert_eq!(t["biz_opaque_callback_data"], m.message_id.to_string());
        let x = whatsapp_payload("4915112345678", None, &m);
        assert_eq!(x["type"], "text");
        assert!(
            x["text"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("freezer-1: warm"))
        );
    }

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
        let s = signature(&Secret::new("s3cret"), 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            s,
            "v1=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }
}
