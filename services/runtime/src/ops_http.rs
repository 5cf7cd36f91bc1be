//! The operations endpoints every service serves:
//!
//! - `GET /healthz` — 200 while the process runs its loops (liveness);
//! - `GET /readyz` — 200 only when every dependency (broker, Postgres) answers,
//!   503 naming the ones that do not;
//! - `GET /metrics` — Prometheus text exposition of the service's registry.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long one dependency check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

type CheckFn = dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync;

/// A named dependency check for `/readyz`.
#[derive(Clone)]
pub struct ReadinessCheck {
    /// Shown in the `/readyz` body, e.g. `kafka`, `postgres`.
    pub name: &'static str,
    check: Arc<CheckFn>,
}

impl std::fmt::Debug for ReadinessCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadinessCheck")
            .field("name", &self.name)
            .finish()
    }
}

impl ReadinessCheck {
    pub fn new<F>(name: &'static str, check: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    {
        Self {
            name,
            check: Arc::new(check),
        }
    }
}

#[derive(Clone, Debug)]
struct OpsState {
    registry: Registry,
    checks: Arc<Vec<ReadinessCheck>>,
}

/// Router with `/healthz`, `/readyz` and `/metrics`, to serve alone or merge into an API.
pub fn ops_router(registry: Registry, checks: Vec<ReadinessCheck>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(OpsState {
            registry,
            checks: Arc::new(checks),
        })
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let mut body = String::new();
    let mut ready = true;
    for check in state.checks.iter() {
        let outcome = tokio::time::timeout(CHECK_TIMEOUT, (check.check)()).await;
        match outcome {
            Ok(Ok(())) => body.push_str(&format!("{}: ok\n", check.name)),
            Ok(Err(e)) => {
                ready = false;
                body.push_str(&format!("{}: {e}\n", check.name));
            }
            Err(_) => {
                ready = false;
                body.push_str(&format!(
                    "{}: no answer within {CHECK_TIMEOUT:?}\n",
                    check.name
                ));
            }
        }
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut buf = Vec::new();
    if let Err(e) = encoder.encode(&state.registry.gather(), &mut buf) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(header::CONTENT_TYPE, encoder.format_type().to_string())],
        buf,
    )
        .into_response()
}

/// Serves `router` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> Result<(), std::io::Error> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Binds `addr`, with an error that names it.
pub async fn bind(addr: &str) -> Result<TcpListener, std::io::Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}
