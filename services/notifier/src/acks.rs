//! Acknowledgements: someone has taken an alert in hand (`storepulse ack`, or
//! `POST /v1/alerts/{alert_id}/ack` on the notifier's HTTP port with a bearer token).
//!
//! Guarantees: only an alert the notifier has routed can be acknowledged (else
//! [`AckError::Unknown`], HTTP 404); acknowledging again keeps the first
//! acknowledgement (idempotent); an acknowledged alert is neither repeated nor
//! escalated further (the scans exclude it); the HTTP endpoint refuses a missing or
//! wrong token (401, compared in constant time) and is off (503) when no token is
//! configured; the token never appears in logs or answers.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::ledger::LedgerError;
use crate::policy::Secret;

/// Longest `by` and `comment` accepted.
const MAX_TEXT: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("no alert {0:?} has been routed by the notifier")]
    Unknown(String),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// An acknowledgement in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ack {
    pub alert_id: String,
    pub acked_by: String,
    pub comment: String,
    pub acked_at: DateTime<Utc>,
}

/// Acknowledges `alert_id`; returns the acknowledgement in force (the first one).
pub async fn ack(pool: &Pool, alert_id: &str, by: &str, comment: &str) -> Result<Ack, AckError> {
    for (field, value) in [("alert_id", alert_id), ("by", by)] {
        if value.trim().is_empty() {
            return Err(AckError::Invalid {
                field,
                reason: "must not be empty".into(),
            });
        }
    }
    for (field, value) in [("alert_id", alert_id), ("by", by), ("comment", comment)] {
        if value.len() > MAX_TEXT || value.contains('\0') {
            return Err(AckError::Invalid {
                field,
                reason: format!("at most {MAX_TEXT} bytes, no NUL"),
            });
        }
    }
    let client = pool.get().await.map_err(LedgerError::from)?;
    let row = client
        .query_opt(include_str!("../sql/ack.sql"), &[&alert_id, &by, &comment])
        .await
        .map_err(LedgerError::from)?
        .ok_or_else(|| AckError::Unknown(alert_id.to_string()))?;
    Ok(Ack {
        alert_id: row.get(0),
        acked_by: row.get(1),
        comment: row.get(2),
        acked_at: row.get(3),
    })
}

/// Body of `POST /v1/alerts/{alert_id}/ack` (both fields optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    #[serde(default)]
    pub by: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Clone)]
struct AckState {
    pool: Pool,
    token: Option<Secret>,
}

/// The acknowledgement endpoint; `token` `None` turns it off (503).
pub fn router(pool: Pool, token: Option<Secret>) -> axum::Router {
    axum::Router::new()
        .route("/v1/alerts/{alert_id}/ack", axum::routing::post(post_ack))
        .with_state(AckState { pool, token })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Constant-time comparison (no early exit on the first differing byte).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn post_ack(
    State(state): State<AckState>,
    Path(alert_id): Path<String>,
    headers: HeaderMap,
    body: Option<Json<AckRequest>>,
) -> Response {
    let Some(token) = &state.token else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "acknowledgement over HTTP is off: set notifier.ack_token_file",
        );
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same(given.as_bytes(), token.expose().as_bytes()) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let request = body.map(|Json(b)| b).unwrap_or_default();
    let by = request.by.unwrap_or_else(|| "http".into());
    let comment = request.comment.unwrap_or_default();
    match ack(&state.pool, &alert_id, &by, &comment).await {
        Ok(a) => {
            info!(alert_id = %a.alert_id, by = %a.acked_by, "alert acknowledged");
            (StatusCode::OK, Json(a)).into_response()
        }
        Err(e @ AckError::Unknown(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ AckError::Invalid { .. }) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(AckError::Ledger(e)) => {
            warn!(error = %e, "acknowledgement not stored");
            error(StatusCode::SERVICE_UNAVAILABLE, "the ledger is unavailable")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(!same(b"", b"x"));
    }
}
