//! `POST /v1/events`: a JSON array of events from one store.
//!
//! Answers only after the broker acknowledged every accepted event and every
//! rejection copy. Status codes:
//!
//! | status | when |
//! |---|---|
//! | 200 | every event accepted |
//! | 207 | some accepted, some rejected (see `results`) |
//! | 422 | every event rejected (see `results`) |
//! | 400 | body is not a JSON array of events, is empty, or could not be read whole |
//! | 408 | the body did not arrive whole within `read_timeout_ms` |
//! | 401 | missing, unknown or revoked API key |
//! | 403 | an event names another tenant or store than the key's; nothing published |
//! | 413 | body larger than `max_body_bytes`, or more than `max_batch_events` events |
//! | 415 | `Content-Type` is not JSON (`application/json`, or `application/*+json`), or a `Content-Encoding` is set |
//! | 404/405 | unknown path / wrong method (JSON `error` and `message` as everywhere) |
//! | 429 | the key's event rate is exhausted; `Retry-After` says when to retry |
//! | 503 | broker or key store unavailable; `Retry-After`; retry the whole batch |
//!
//! Retrying a batch is always safe: event ids are idempotency keys, and downstream
//! de-duplicates by them. A 503 therefore means "retry all of it", never "some of it
//! went through, work out which".

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures::future::join_all;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};
use serde::Serialize;
use serde_json::value::RawValue;
use storepulse_runtime::dead_letter::{RejectedFrom, Rejection};
use storepulse_runtime::kafka::ProduceError;
use storepulse_runtime::{DeadLetters, EventProducer};
use tracing::{info, warn};

use crate::IngestSettings;
use crate::api_keys::{Authn, KeyStore};
use crate::rate_limit::RateLimiter;
use crate::validate::{Checked, ValidEvent, check_event};

/// Metrics of the ingest API (bounded labels).
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    /// `storepulse_ingest_events_total{type, outcome}`.
    events: IntCounterVec,
    /// `storepulse_ingest_requests_total{status}`.
    requests: IntCounterVec,
    /// `storepulse_ingest_request_seconds`.
    latency: Histogram,
}

impl IngestMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            events: IntCounterVec::new(
                Opts::new("ingest_events_total", "Events posted, by type and outcome"),
                &["type", "outcome"],
            )?,
            requests: IntCounterVec::new(
                Opts::new(
                    "ingest_requests_total",
                    "Requests to POST /v1/events by status",
                ),
                &["status"],
            )?,
            latency: Histogram::with_opts(HistogramOpts::new(
                "ingest_request_seconds",
                "Time from request to answer, broker acknowledgement included",
            ))?,
        };
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.latency.clone()))?;
        Ok(m)
    }
}

/// What the handler needs.
#[derive(Debug)]
pub struct IngestApi {
    pub settings: IngestSettings,
    pub producer: EventProducer,
    pub dead_letters: DeadLetters,
    pub keys: KeyStore,
    pub limiter: RateLimiter,
    pub metrics: IngestMetrics,
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: &'static str,
    message: String,
}

fn error(status: StatusCode, error: &'static str, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error,
            message: message.into(),
        }),
    )
        .into_response()
}

fn retry_after(mut resp: Response, secs: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// The per-event answer.
#[derive(Debug, Serialize)]
pub struct EventResult {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct BatchAnswer {
    accepted: usize,
    rejected: usize,
    results: Vec<EventResult>,
}

/// Handler of `POST /v1/events`.
pub async fn post_events(
    State(api): State<Arc<IngestApi>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let resp = handle(&api, &headers, body).await;
    api.metrics
        .requests
        .with_label_values(&[resp.status().as_str()])
        .inc();
    api.metrics.latency.observe(started.elapsed().as_secs_f64());
    resp
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is
/// case-insensitive (RFC 9110 §11.1).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether the request says its body is JSON.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = ct.split(';');
    let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    // JSON is UTF-8 (RFC 8259); a declared other charset is not JSON we can read.
    let utf8 = parts.all(|p| {
        let (name, value) = p.split_once('=').unwrap_or((p, ""));
        !name.trim().eq_ignore_ascii_case("charset")
            || value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
    });
    utf8 && (mime == "application/json"
        || (mime.starts_with("application/") && mime.ends_with("+json")))
}

/// One event's JSON as a value. The batch already parsed as JSON, so what fails here
/// is a value JSON allows but we cannot read (a number beyond f64 such as `1e400`, a
/// lone UTF-16 surrogate in a string): that event is rejected naming the field, and
/// the rest of the batch goes on.
fn parse_event_value(raw: &str) -> Result<serde_json::Value, Rejection> {
    let mut de = serde_json::Deserializer::from_str(raw);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let reason = format!("unreadable value: {}", e.inner());
        if path.is_empty() || path == "." {
            Rejection::whole(reason)
        } else {
            Rejection::field(path, reason)
        }
    })
}

/// The request's `Content-Encoding` unless it is absent or `identity`.
fn content_encoding(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_ENCODING)?;
    let value = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
    (!value.is_empty() && !value.eq_ignore_ascii_case("identity")).then_some(value)
}

/// JSON answer for paths the API does not have (instead of an empty 404).
pub async fn not_found(uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no such path `{}`; events go to POST /v1/events",
            uri.path()
        ),
    )
}

/// JSON answer for a known path asked with the wrong method (instead of an empty 405).
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "`{method} {}` is not served; events go to POST /v1/events",
            uri.path()
        ),
    )
}

/// Whether a body read failed because the body is longer than the limit (413), not
/// because the client broke off or sent a malformed body (400).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The first earlier event in the batch with the same id, for each event.
fn repeated_ids(checked: &[Checked]) -> Vec<Option<usize>> {
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    checked
        .iter()
        .enumerate()
        .map(|(i, c)| match c {
            Checked::Valid(ev) => match first.get(ev.event_id()) {
                Some(&earlier) => Some(earlier),
                None => {
                    first.insert(ev.event_id(), i);
                    None
                }
            },
            Checked::Invalid { .. } => None,
        })
        .collect()
}

async fn handle(api: &IngestApi, headers: &HeaderMap, body: Body) -> Response {
    let s = &api.settings;
    let Some(token) = bearer_token(headers) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the API key as `Authorization: Bearer <api key>`",
        );
    };
    let (who, key_id) = match api.keys.authenticate(token).await {
        Ok(Authn::Store(who, key_id)) => (who, key_id),
        Ok(Authn::Unknown) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown or revoked API key",
            );
        }
        Err(e) => {
            warn!(error = %e, "key store unavailable");
            return retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "key store unavailable; retry later",
                ),
                s.retry_after_secs,
            );
        }
    };

    if !is_json(headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the batch as UTF-8 JSON with `Content-Type: application/json`",
        );
    }
    if let Some(encoding) = content_encoding(headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_encoding",
            format!("Content-Encoding `{encoding}` is not accepted; send the JSON uncompressed"),
        );
    }
    let read_timeout = std::time::Duration::from_millis(s.read_timeout_ms);
    let read = tokio::time::timeout(read_timeout, axum::body::to_bytes(body, s.max_body_bytes));
    let Ok(read) = read.await else {
        return error(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive whole within {} ms; nothing was published",
                s.read_timeout_ms
            ),
        );
    };
    let bytes = match read {
        Ok(b) => b,
        Err(e) if !is_length_limit(&e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("the request body could not be read whole: {e}"),
            );
        }
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "body exceeds {} bytes; send smaller batches",
                    s.max_body_bytes
                ),
            );
        }
    };
    let raw: Vec<&RawValue> = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("body must be a JSON array of event objects: {e}"),
            );
        }
    };
    if raw.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "empty_batch",
            "the batch has no events",
        );
    }
    if raw.len() > s.max_batch_events {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "{} events in one batch; at most {} allowed",
                raw.len(),
                s.max_batch_events
            ),
        );
    }
    if let Err(wait) = api.limiter.check(&key_id, raw.len()) {
        return retry_after(
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "rate limit of {} events/s for this key exceeded",
                    s.rate_limit_events_per_sec
                ),
            ),
            wait.as_secs_f64().ceil() as u64,
        );
    }

    let now = Utc::now();
    let policy = s.validation_policy();
    let mut checked = Vec::with_capacity(raw.len());
    for (index, r) in raw.iter().enumerate() {
        let value = match parse_event_value(r.get()) {
            Ok(v) => v,
            Err(rejection) => {
                checked.push(Checked::Invalid {
                    event_id: None,
                    rejection,
                });
                continue;
            }
        };
        match check_event(&value, &who, now, policy) {
            Ok(outcome) => checked.push(outcome),
            Err(f) => {
                return error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "event {index}: {} {:?} is not the key's ({}/{}); nothing was published",
                        f.field, f.value, who.tenant_id, who.store_id
                    ),
                );
            }
        }
    }

    // An id may appear once per batch: a second event under it is refused (the first
    // one stands), never silently merged into it.
    for (index, earlier) in repeated_ids(&checked).into_iter().enumerate() {
        if let Some(earlier) = earlier {
            let event_id = Some(checked[index].event_id().to_string());
            checked[index] = Checked::Invalid {
                event_id,
                rejection: Rejection::field(
                    "event_id",
                    format!(
                        "repeats the id of event {earlier} in this batch; every event needs its own id"
                    ),
                ),
            };
        }
    }

    // Publish everything concurrently; per store the enqueue order is the batch order.
    let who = &who;
    let sends = checked.iter().zip(&raw).map(|(c, r)| async move {
        match c {
            Checked::Valid(ev) => publish(&api.producer, ev).await,
            Checked::Invalid {
                event_id,
                rejection,
            } => api
                .dead_letters
                .publish(
                    RejectedFrom::Api {
                        tenant_id: &who.tenant_id,
                        store_id: &who.store_id,
                        original_event_id: event_id.as_deref(),
                    },
                    r.get().as_bytes(),
                    rejection,
                )
                .await
                .map(|_| ()),
        }
    });
    let outcomes = join_all(sends).await;
    if let Some(e) = outcomes.iter().find_map(|o| o.as_ref().err()) {
        warn!(error = %e, store = %who.store_id, "publish failed; answering 503");
        let (status, code) = if e.is_retryable() {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        };
        let resp = error(
            status,
            code,
            format!(
                "the broker did not acknowledge the batch ({e}); retry the whole batch, event ids make retries safe"
            ),
        );
        return retry_after(resp, s.retry_after_secs);
    }

    let mut results = Vec::with_capacity(checked.len());
    let (mut accepted, mut rejected) = (0, 0);
    for (index, c) in checked.into_iter().enumerate() {
        match c {
            Checked::Valid(ev) => {
                accepted += 1;
                api.metrics
                    .events
                    .with_label_values(&[ev.kind_label(), "accepted"])
                    .inc();
                results.push(EventResult {
                    index,
                    event_id: Some(ev.event_id().to_string()),
                    status: "accepted",
                    field: None,
                    reason: None,
                });
            }
            Checked::Invalid {
                event_id,
                rejection: Rejection { field, reason },
            } => {
                rejected += 1;
                api.metrics
                    .events
                    .with_label_values(&["invalid", "rejected"])
                    .inc();
                results.push(EventResult {
                    index,
                    event_id,
                    status: "rejected",
                    field,
                    reason: Some(reason),
                });
            }
        }
    }
    let status = match (accepted, rejected) {
        (_, 0) => StatusCode::OK,
        (0, _) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::MULTI_STATUS,
    };
    if rejected > 0 {
        info!(store = %who.store_id, accepted, rejected, "batch with rejections");
    }
    (
        status,
        Json(BatchAnswer {
            accepted,
            rejected,
            results,
        }),
    )
        .into_response()
}

async fn publish(producer: &EventProducer, ev: &ValidEvent) -> Result<(), ProduceError> {
    match ev {
        ValidEvent::Sale(r) => producer.send(r).await,
        ValidEvent::Inventory(r) => producer.send(r).await,
        ValidEvent::Heartbeat(r) => producer.send(r).await,
        ValidEvent::Sensor(r) => producer.send(r).await,
    }
    .map(|_| ())
}
