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

/// How long [`serve`] lets clients take, and lets requests finish at shutdown.
#[derive(Debug, Clone, Copy)]
pub struct HttpTimeouts {
    /// Longest a client may take to send a request's headers; the connection is
    /// closed after that (a stalled or slow-loris client cannot hold a connection,
    /// nor hold up shutdown).
    pub header_read: Duration,
    /// After shutdown begins: how long requests already being answered may take to
    /// finish before their connections are closed. Idle keep-alive connections close
    /// at once.
    pub drain: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            drain: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, with the default
/// [`HttpTimeouts`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> Result<(), std::io::Error> {
    serve_with(listener, router, shutdown, HttpTimeouts::default()).await
}

/// Serves `router` (HTTP/1.1) on `listener` until `shutdown` is cancelled, then stops
/// accepting, lets requests in flight finish for at most `timeouts.drain`, and
/// returns.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    timeouts: HttpTimeouts,
) -> Result<(), std::io::Error> {
    let mut connections = tokio::task::JoinSet::new();
    let closing = CancellationToken::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(
                        stream,
                        router.clone(),
                        timeouts.header_read,
                        closing.clone(),
                    ));
                }
                // A connection that failed between SYN and accept, or a process out of
                // file descriptors: neither stops the server.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    closing.cancel();
    let drained = tokio::time::timeout(timeouts.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            drain = ?timeouts.drain,
            "requests still unanswered when the shutdown drain ended; closing their connections"
        );
        connections.abort_all();
    }
    Ok(())
}

/// One connection: HTTP/1.1 with a header-read timeout, shut down gracefully (finish
/// the request in flight, then close) once `closing` is cancelled.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    router: Router,
    header_read: Duration,
    closing: CancellationToken,
) {
    let service = hyper_util::service::TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = closing.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Binds `addr`, with an error that names it.
pub async fn bind(addr: &str) -> Result<TcpListener, std::io::Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}
