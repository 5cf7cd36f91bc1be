//! The ingest service: the HTTP front door of StorePulse.
//!
//! Store gateways and POS connectors post JSON batches to `POST /v1/events` with a
//! per-store API key ([`api_keys`]). Events are validated ([`validate`]), published as
//! typed Avro keyed by store with an idempotent producer, and answered only after
//! the broker acknowledged them ([`api`]). Invalid events are answered with the field
//! and reason, and a copy goes to `ingest.rejected.v1`.

pub mod api;
pub mod api_keys;
pub mod rate_limit;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use storepulse_runtime::config::{ConfigError, ConfigSource, Validate, invalid};
use storepulse_runtime::{
    AvroCodec, DeadLetters, EventProducer, KafkaConfig, LogConfig, PostgresConfig, ProducerMetrics,
    ServiceTasks, db, kafka, ops_http, telemetry,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::api::{IngestApi, IngestMetrics};
use crate::api_keys::KeyStore;
use crate::rate_limit::RateLimiter;
use crate::validate::ValidationPolicy;

/// The `[ingest]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Address of the API and of `/metrics`, `/healthz`, `/readyz`.
    pub listen: String,
    /// Largest request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Most events in one batch; more get 413.
    pub max_batch_events: usize,
    /// Sustained events per second allowed per API key.
    pub rate_limit_events_per_sec: f64,
    /// Burst of events allowed per API key above the sustained rate.
    pub rate_limit_burst: f64,
    /// How long a key lookup is cached (revocations take effect within this).
    pub key_cache_ttl_ms: u64,
    /// `Retry-After` seconds sent with 503 answers.
    pub retry_after_secs: u64,
    /// How far in the future `occurred_at` may be (device clock skew).
    pub max_future_skew_secs: u64,
    /// How far in the past `occurred_at` may be. Store gateways buffer for days while
    /// offline, so the default is 30 days; older events are refused, not stored.
    pub max_event_age_secs: u64,
    /// Largest absolute quantity of a sale line, stock level or adjustment.
    pub max_quantity: f64,
    /// Largest unit price, in minor currency units.
    pub max_unit_price_minor: i64,
    /// Longest a client may take to send a request's headers, and then its body, in
    /// ms. A body slower than this gets 408; headers slower than this close the
    /// connection. Stalled clients hold neither a connection nor shutdown.
    pub read_timeout_ms: u64,
    /// Time given to in-flight requests on SIGTERM, in ms.
    pub shutdown_grace_ms: u64,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            max_body_bytes: 1024 * 1024,
            max_batch_events: 1_000,
            rate_limit_events_per_sec: 1_000.0,
            rate_limit_burst: 5_000.0,
            key_cache_ttl_ms: 30_000,
            retry_after_secs: 5,
            max_future_skew_secs: 300,
            max_event_age_secs: 30 * 24 * 3600,
            max_quantity: 1_000_000.0,
            max_unit_price_minor: 100_000_000_000,
            read_timeout_ms: 15_000,
            shutdown_grace_ms: 30_000,
        }
    }
}

impl Validate for IngestSettings {
    fn validate(&self, s: &str) -> Result<(), ConfigError> {
        if self.max_body_bytes < 1024 {
            return Err(invalid(s, "max_body_bytes", "must be >= 1024"));
        }
        if self.max_batch_events == 0 {
            return Err(invalid(s, "max_batch_events", "must be >= 1"));
        }
        if self.rate_limit_events_per_sec.is_nan() || self.rate_limit_events_per_sec <= 0.0 {
            return Err(invalid(s, "rate_limit_events_per_sec", "must be > 0"));
        }
        if self.rate_limit_burst < 1.0 {
            return Err(invalid(s, "rate_limit_burst", "must be >= 1"));
        }
        if self.read_timeout_ms < 100 {
            return Err(invalid(s, "read_timeout_ms", "must be >= 100"));
        }
        if self.shutdown_grace_ms < 1_000 {
            return Err(invalid(s, "shutdown_grace_ms", "must be >= 1000"));
        }
        if self.max_event_age_secs == 0 {
            return Err(invalid(s, "max_event_age_secs", "must be > 0"));
        }
        if !(self.max_quantity.is_finite() && self.max_quantity > 0.0 && self.max_quantity <= 1e12)
        {
            return Err(invalid(s, "max_quantity", "must be in (0, 1e12]"));
        }
        if self.max_unit_price_minor <= 0 {
            return Err(invalid(s, "max_unit_price_minor", "must be > 0"));
        }
        Ok(())
    }
}

impl IngestSettings {
    /// The validation bounds these settings give.
    pub fn validation_policy(&self) -> ValidationPolicy {
        ValidationPolicy {
            max_future_skew: chrono::Duration::seconds(self.max_future_skew_secs as i64),
            max_event_age: chrono::Duration::seconds(self.max_event_age_secs as i64),
            max_quantity: self.max_quantity,
            max_unit_price_minor: self.max_unit_price_minor,
        }
    }
}

/// Everything ingest reads from configuration.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub kafka: KafkaConfig,
    pub postgres: PostgresConfig,
    pub log: LogConfig,
    pub ingest: IngestSettings,
}

impl IngestConfig {
    pub fn from_source(src: &ConfigSource) -> Result<Self, ConfigError> {
        Ok(Self {
            kafka: src.section("kafka")?,
            postgres: src.section("postgres")?,
            log: src.section("log")?,
            ingest: src.section("ingest")?,
        })
    }
}

/// Runs ingest until `shutdown` is cancelled, listening on `ingest.listen`.
pub async fn run(config: IngestConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = ops_http::bind(&config.ingest.listen).await?;
    run_with_listener(config, listener, shutdown).await
}

/// Like [`run`], on a listener the caller bound (tests use port 0).
pub async fn run_with_listener(
    config: IngestConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let registry = telemetry::service_registry("ingest");
    let producer_metrics = ProducerMetrics::register(&registry)?;
    let pool = db::pool(&config.postgres)?;
    db::migrate(&pool).await?;
    let producer = EventProducer::new(
        &config.kafka,
        "storepulse-ingest",
        AvroCodec::new(),
        producer_metrics,
    )?;
    if let Err(e) = storepulse_runtime::schema_registry::publish_bundled(&producer).await {
        tracing::warn!(error = %e, "could not publish this build's schemas to the schema registry");
    }
    let s = &config.ingest;
    let api = Arc::new(IngestApi {
        settings: s.clone(),
        producer: producer.clone(),
        dead_letters: DeadLetters::new(producer.clone(), "ingest-http"),
        keys: KeyStore::new(pool.clone(), Duration::from_millis(s.key_cache_ttl_ms)),
        limiter: RateLimiter::new(s.rate_limit_events_per_sec, s.rate_limit_burst),
        metrics: IngestMetrics::register(&registry)?,
    });
    let router = Router::new()
        .route("/v1/events", post(api::post_events))
        .with_state(api)
        .merge(ops_http::ops_router(
            registry,
            vec![kafka::readiness(&config.kafka), db::readiness(pool)],
        ))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed);

    info!(addr = %listener.local_addr()?, "ingest listening");
    let mut tasks = ServiceTasks::new(&shutdown);
    // Requests in flight at shutdown get most of the grace period to finish (their
    // body reads are bounded by read_timeout_ms); the rest is for the producer flush.
    let timeouts = ops_http::HttpTimeouts {
        header_read: Duration::from_millis(s.read_timeout_ms),
        drain: Duration::from_millis(s.shutdown_grace_ms * 3 / 4),
    };
    tasks.spawn(
        "http",
        ops_http::serve_with(listener, router, tasks.token(), timeouts),
    );
    tasks
        .join(Duration::from_millis(s.shutdown_grace_ms))
        .await?;
    producer.flush(Duration::from_secs(5))?;
    info!("ingest stopped");
    Ok(())
}
