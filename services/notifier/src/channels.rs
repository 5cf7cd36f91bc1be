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

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::policy::{ChannelSpec, Secret};

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
    }
}

/// Classifies an HTTP answer.
async fn answer(result: Result<reqwest::Response, reqwest::Error>) -> Result<(), SendError> {
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            return Err(SendError::Retryable {
                reason: format!("request failed: {}", e.without_url()),
                retry_after: None,
            });
        }
    };
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = resp.text().await.unwrap_or_default();
    let excerpt: String = text.chars().take(200).collect();
    let reason = format!("HTTP {}: {}", status.as_u16(), excerpt.trim());
    if status.is_server_error() || status.as_u16() == 429 {
        Err(SendError::Retryable {
            reason,
            retry_after,
        })
    } else {
        Err(SendError::Permanent(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
