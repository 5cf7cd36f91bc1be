//! The notifier: routes alert transitions (alerts.v1) to receivers, groups them,
//! delivers them over webhooks with retries, and records every final outcome in its
//! delivery ledger (Postgres schema `notifier`) and on notifications.v1.
//!
//! Flow: the batch consumer hands transitions to [`router::AlertRouter`], which
//! routes them with the current [`policy::Policy`] and records one pending delivery
//! per (transition, receiver) before the offsets are committed; one
//! [`delivery`] worker per receiver groups and sends them. The policy file is
//! re-read when it changes ([`watch_policy`]); an invalid edit is logged and the
//! running policy kept.

pub mod acks;
pub mod channels;
pub mod delivery;
pub mod grouping;
pub mod ledger;
pub mod policy;
pub mod rate_limit;
pub mod render;
pub mod router;
pub mod silences;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, Opts};
use serde::{Deserialize, Serialize};
use storepulse_runtime::config::{ConfigError, ConfigSource, Validate, invalid};
use storepulse_runtime::consumer::{BatchConsumer, ConsumerSettings};
use storepulse_runtime::records::topic;
use storepulse_runtime::schema_registry::{self, SchemaRegistry};
use storepulse_runtime::{
    AvroCodec, ConsumerMetrics, DeadLetters, EventProducer, KafkaConfig, LogConfig, PostgresConfig,
    ProducerMetrics, ServiceTasks, db, kafka, ops_http, telemetry,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::delivery::{DeliveryContext, DeliveryMetrics};
use crate::ledger::Ledger;
use crate::policy::{Policy, PolicyError};
use crate::router::AlertRouter;

/// Name of the config section and of the service in metrics.
pub const SERVICE: &str = "notifier";
/// Default address of the ops endpoints.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9105";

/// The `[notifier]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifierSettings {
    /// Consumer group of alerts.v1.
    pub group_id: String,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub http_listen: String,
    /// The notification policy: routes and receivers (see README).
    pub policy_file: PathBuf,
    /// How often the policy file is checked for changes, in ms.
    pub reload_interval_ms: u64,
    /// Most transitions recorded per ledger transaction.
    pub batch_max_records: usize,
    /// Longest wait to fill a batch, in ms; adds to alert latency.
    pub batch_max_wait_ms: u64,
    /// `fetch.min.bytes` of the alerts.v1 consumer, in place of
    /// `kafka.fetch_min_bytes`: alerts are a trickle that never fills the pipeline's
    /// 64 KiB, so with that every alert would wait out `kafka.fetch_wait_max_ms`.
    /// Default 1: a fetch is answered as soon as an alert is there.
    pub fetch_min_bytes: u32,
    /// Time given to finish the batch in hand on SIGTERM, in ms.
    pub shutdown_grace_ms: u64,
    /// How long a partition waits for an unknown writer schema, in s.
    pub unknown_schema_hold_secs: u64,
    /// File holding the bearer token of `POST /v1/alerts/{id}/ack` ("": the
    /// endpoint is off).
    pub ack_token_file: PathBuf,
}

/// Consumer group of the notifier.
pub fn default_group_id() -> String {
    "storepulse-notifier".into()
}
/// Policy file looked for when none is configured.
pub fn default_policy_file() -> PathBuf {
    PathBuf::from("config/notifier.toml")
}

impl Default for NotifierSettings {
    fn default() -> Self {
        Self {
            group_id: default_group_id(),
            http_listen: DEFAULT_LISTEN.into(),
            policy_file: default_policy_file(),
            reload_interval_ms: 2_000,
            batch_max_records: 500,
            batch_max_wait_ms: 5,
            fetch_min_bytes: 1,
            shutdown_grace_ms: 30_000,
            unknown_schema_hold_secs: 120,
            ack_token_file: PathBuf::new(),
        }
    }
}

impl Validate for NotifierSettings {
    fn validate(&self, s: &str) -> Result<(), ConfigError> {
        if self.group_id.is_empty() {
            return Err(invalid(s, "group_id", "must not be empty"));
        }
        if self.batch_max_records == 0 {
            return Err(invalid(s, "batch_max_records", "must be >= 1"));
        }
        if self.fetch_min_bytes == 0 || self.fetch_min_bytes > 100_000_000 {
            return Err(invalid(s, "fetch_min_bytes", "must be in 1..=100000000"));
        }
        if self.reload_interval_ms == 0 {
            return Err(invalid(s, "reload_interval_ms", "must be >= 1"));
        }
        if self.http_listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                s,
                "http_listen",
                format!("{:?} is not an ip:port address", self.http_listen),
            ));
        }
        Ok(())
    }
}

/// Everything the notifier reads from configuration.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    pub kafka: KafkaConfig,
    pub postgres: PostgresConfig,
    pub log: LogConfig,
    pub notifier: NotifierSettings,
}

/// Reads this service's configuration.
pub fn config(src: &ConfigSource) -> Result<NotifierConfig, ConfigError> {
    Ok(NotifierConfig {
        kafka: src.section("kafka")?,
        postgres: src.section("postgres")?,
        log: src.section("log")?,
        notifier: src.section("notifier")?,
    })
}

/// Runs until `shutdown` is cancelled.
pub async fn run(config: NotifierConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = ops_http::bind(&config.notifier.http_listen).await?;
    run_with_listener(config, listener, shutdown).await
}

/// Like [`run`], on a listener the caller bound.
pub async fn run_with_listener(
    config: NotifierConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = &config.notifier;
    let policy = Policy::load(&settings.policy_file)?;
    info!(file = %settings.policy_file.display(), routes = policy.route_count(), receivers = policy.receivers.len(), "notification policy loaded");
    let metrics_registry = telemetry::service_registry(SERVICE);
    let producer_metrics = ProducerMetrics::register(&metrics_registry)?;
    let consumer_metrics = ConsumerMetrics::register(&metrics_registry)?;
    let delivery_metrics = DeliveryMetrics::register(&metrics_registry)?;
    let reloads = IntCounterVec::new(
        Opts::new(
            "notifier_policy_reloads_total",
            "Policy file reloads by result (applied, rejected)",
        ),
        &["result"],
    )?;
    metrics_registry.register(Box::new(reloads.clone()))?;

    let ack_token = if settings.ack_token_file.as_os_str().is_empty() {
        None
    } else {
        let text = std::fs::read_to_string(&settings.ack_token_file).map_err(|e| {
            anyhow::anyhow!(
                "notifier.ack_token_file: cannot read {}: {}",
                settings.ack_token_file.display(),
                e.kind()
            )
        })?;
        let token = text.trim_end_matches(['\n', '\r']);
        if token.is_empty() {
            anyhow::bail!(
                "notifier.ack_token_file: {} is empty",
                settings.ack_token_file.display()
            );
        }
        Some(policy::Secret::new(token))
    };
    let pool = db::pool(&config.postgres)?;
    let ledger = Ledger::new(pool.clone());
    let applied = ledger.migrate().await?;
    info!(?applied, "notifier schema is current");

    let codec = AvroCodec::new();
    let producer = EventProducer::new(
        &config.kafka,
        "storepulse-notifier",
        codec.clone(),
        producer_metrics,
    )?;
    let dead_letters = DeadLetters::new(producer.clone(), SERVICE);
    if let Err(e) = schema_registry::publish_bundled(&producer).await {
        warn!(error = %e, "could not publish this build's schemas to the schema registry");
    }
    let registry = SchemaRegistry::new(codec.clone(), &config.kafka);
    let (policy_tx, policy_rx) = watch::channel(Arc::new(policy));
    let (wake_tx, wake_rx) = watch::channel(0u64);
    let router = AlertRouter {
        ledger: ledger.clone(),
        codec,
        policy: policy_rx.clone(),
        wake: wake_tx,
    };
    // Alerts are few: their fetches answer at once rather than gather bytes.
    let consumer_kafka = KafkaConfig {
        fetch_min_bytes: settings.fetch_min_bytes,
        ..config.kafka.clone()
    };
    let consumer = BatchConsumer::new(
        &consumer_kafka,
        ConsumerSettings {
            group_id: settings.group_id.clone(),
            topics: vec![topic::ALERTS.to_string()],
            batch_max_records: settings.batch_max_records,
            batch_max_wait: Duration::from_millis(settings.batch_max_wait_ms),
            unknown_schema_hold: Duration::from_secs(settings.unknown_schema_hold_secs),
        },
        router,
        dead_letters,
        registry,
        consumer_metrics,
    )?;
    let http = reqwest::Client::builder()
        .user_agent(concat!("storepulse-notifier/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let delivery = DeliveryContext {
        ledger,
        producer: producer.clone(),
        http,
        policy: policy_rx,
        wake: wake_rx,
        metrics: delivery_metrics,
    };
    let router = ops_http::ops_router(
        metrics_registry,
        vec![
            kafka::readiness(&config.kafka),
            db::readiness(pool.clone()),
            consumer.health().readiness(),
        ],
    )
    .merge(acks::router(pool, ack_token));
    info!(addr = %listener.local_addr()?, group = %settings.group_id, "notifier running");
    let mut tasks = ServiceTasks::new(&shutdown);
    tasks.spawn("ops-http", ops_http::serve(listener, router, tasks.token()));
    tasks.spawn("consumer", consumer.run(tasks.token()));
    tasks.spawn("delivery", delivery::supervise(delivery, tasks.token()));
    tasks.spawn(
        "policy-reload",
        watch_policy(
            settings.policy_file.clone(),
            Duration::from_millis(settings.reload_interval_ms),
            policy_tx,
            reloads,
            tasks.token(),
        ),
    );
    tasks
        .join(Duration::from_millis(settings.shutdown_grace_ms))
        .await?;
    producer.flush(Duration::from_secs(5))?;
    info!("notifier stopped");
    Ok(())
}

/// Re-reads `file` every `every` and publishes a changed, valid policy; an invalid
/// one is logged (with the route/receiver/field at fault) and the running one kept.
pub async fn watch_policy(
    file: PathBuf,
    every: Duration,
    tx: watch::Sender<Arc<Policy>>,
    reloads: IntCounterVec,
    shutdown: CancellationToken,
) -> Result<(), PolicyError> {
    let mut last = std::fs::read(&file).ok();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
        let current = std::fs::read(&file).ok();
        if current == last {
            continue;
        }
        last = current;
        match Policy::load(Path::new(&file)) {
            Ok(p) => {
                info!(file = %file.display(), routes = p.route_count(), receivers = p.receivers.len(), "notification policy reloaded");
                reloads.with_label_values(&["applied"]).inc();
                tx.send_replace(Arc::new(p));
            }
            Err(e) => {
                error!(error = %e, "notification policy change rejected; keeping the running policy");
                reloads.with_label_values(&["rejected"]).inc();
            }
        }
    }
}
