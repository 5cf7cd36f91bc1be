//! The compactor folds the event log into the Postgres read store.
//!
//! It consumes every record topic (sales, inventory, POS device, sensor readings, the
//! rejected-records topic, alerts, forecasts and notification outcomes) and writes raw rows together with its consumer offsets
//! in one transaction per batch (see [`writer`]). It is the only writer of the read
//! store and applies the schema migrations at start. A crash at any point leaves no
//! gap and no duplicate.

pub mod bulk_copy;
pub mod maintenance;
pub mod retention;
pub mod writer;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use storepulse_runtime::config::{ConfigError, ConfigSource, Validate, invalid};
use storepulse_runtime::consumer::{BatchConsumer, ConsumerSettings};
use storepulse_runtime::schema_registry::{self, SchemaRegistry};
use storepulse_runtime::{
    AvroCodec, ConsumerMetrics, DeadLetters, EventProducer, KafkaConfig, LogConfig, PostgresConfig,
    ProducerMetrics, ServiceTasks, db, kafka, ops_http, telemetry,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use writer::{INPUT_TOPICS, ReadStoreWriter};

/// The `[compactor]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactorSettings {
    /// Consumer group; run more replicas (up to the partition count) to scale out.
    pub group_id: String,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub http_listen: String,
    /// Most records written per transaction.
    pub batch_max_records: usize,
    /// Longest wait to fill a batch, in ms; bounds read-store freshness.
    pub batch_max_wait_ms: u64,
    /// Time given to finish the batch in hand on SIGTERM, in ms.
    pub shutdown_grace_ms: u64,
    /// How long a partition waits, paused, for an unknown writer schema to appear in
    /// the schema registry before the record is dead-lettered, in s.
    pub unknown_schema_hold_secs: u64,
    /// How often the maintenance task runs (partitions ahead, retention, archiving,
    /// key-ledger pruning; TimescaleDB: retention policies), in s; it also runs at start.
    pub maintenance_interval_secs: u64,
    /// Retention per relation (`[compactor.retention]`), merged over
    /// [`retention::default_retention`]: `unlimited`, a duration after which rows are
    /// dropped (`30d`), or `archive after <duration>`.
    #[serde(
        default = "retention::default_retention",
        deserialize_with = "retention::retention_over_defaults"
    )]
    pub retention: BTreeMap<String, retention::RetentionRule>,
}

impl Default for CompactorSettings {
    fn default() -> Self {
        Self {
            group_id: "storepulse-compactor".into(),
            http_listen: "0.0.0.0:9102".into(),
            batch_max_records: 2_000,
            batch_max_wait_ms: 100,
            shutdown_grace_ms: 30_000,
            unknown_schema_hold_secs: 120,
            maintenance_interval_secs: 3_600,
            retention: retention::default_retention(),
        }
    }
}

impl Validate for CompactorSettings {
    fn validate(&self, s: &str) -> Result<(), ConfigError> {
        if self.group_id.is_empty() {
            return Err(invalid(s, "group_id", "must not be empty"));
        }
        if self.batch_max_records == 0 {
            return Err(invalid(s, "batch_max_records", "must be >= 1"));
        }
        if self.maintenance_interval_secs == 0 {
            return Err(invalid(s, "maintenance_interval_secs", "must be >= 1"));
        }
        retention::validate(&self.retention).map_err(|(key, reason)| invalid(s, &key, reason))?;
        Ok(())
    }
}

/// Everything the compactor reads from configuration.
#[derive(Debug, Clone)]
pub struct CompactorConfig {
    pub kafka: KafkaConfig,
    pub postgres: PostgresConfig,
    pub log: LogConfig,
    pub compactor: CompactorSettings,
}

impl CompactorConfig {
    pub fn from_source(src: &ConfigSource) -> Result<Self, ConfigError> {
        Ok(Self {
            kafka: src.section("kafka")?,
            postgres: src.section("postgres")?,
            log: src.section("log")?,
            compactor: src.section("compactor")?,
        })
    }
}

/// Runs the compactor until `shutdown` is cancelled, serving ops on `http_listen`.
pub async fn run(config: CompactorConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = ops_http::bind(&config.compactor.http_listen).await?;
    run_with_listener(config, listener, shutdown).await
}

/// Like [`run`], with the ops listener given by the caller (tests bind port 0).
pub async fn run_with_listener(
    config: CompactorConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics_registry = telemetry::service_registry("compactor");
    let producer_metrics = ProducerMetrics::register(&metrics_registry)?;
    let consumer_metrics = ConsumerMetrics::register(&metrics_registry)?;
    let maintenance_metrics = maintenance::MaintenanceMetrics::register(&metrics_registry)?;
    let pool = db::pool(&config.postgres)?;
    let applied = db::migrate(&pool).await?;
    let flavour = db::flavour(&pool).await?;
    info!(?applied, %flavour, "read store schema is current");

    let codec = AvroCodec::new();
    let producer = EventProducer::new(
        &config.kafka,
        "storepulse-compactor",
        codec.clone(),
        producer_metrics,
    )?;
    let dead_letters = DeadLetters::new(producer.clone(), "compactor");
    if let Err(e) = schema_registry::publish_bundled(&producer).await {
        warn!(error = %e, "could not publish this build's schemas to the schema registry");
    }
    let registry = SchemaRegistry::new(codec.clone(), &config.kafka);
    let writer = ReadStoreWriter::new(
        pool.clone(),
        codec,
        config.compactor.group_id.clone(),
        &metrics_registry,
    )?;
    let settings = ConsumerSettings {
        group_id: config.compactor.group_id.clone(),
        topics: INPUT_TOPICS.iter().map(|t| t.to_string()).collect(),
        batch_max_records: config.compactor.batch_max_records,
        batch_max_wait: Duration::from_millis(config.compactor.batch_max_wait_ms),
        unknown_schema_hold: Duration::from_secs(config.compactor.unknown_schema_hold_secs),
    };
    let consumer = BatchConsumer::new(
        &config.kafka,
        settings,
        writer,
        dead_letters,
        registry,
        consumer_metrics,
    )?;

    let router = ops_http::ops_router(
        metrics_registry,
        vec![
            kafka::readiness(&config.kafka),
            db::readiness(pool.clone()),
            consumer.health().readiness(),
        ],
    );
    info!(addr = %listener.local_addr()?, group = %config.compactor.group_id, "compactor running");
    let mut tasks = ServiceTasks::new(&shutdown);
    tasks.spawn("ops-http", ops_http::serve(listener, router, tasks.token()));
    tasks.spawn("consumer", consumer.run(tasks.token()));
    tasks.spawn(
        "maintenance",
        maintenance::run_periodically(
            pool.clone(),
            config.compactor.retention.clone(),
            Duration::from_secs(config.compactor.maintenance_interval_secs),
            maintenance_metrics,
            tasks.token(),
        ),
    );
    tasks
        .join(Duration::from_millis(config.compactor.shutdown_grace_ms))
        .await?;
    producer.flush(Duration::from_secs(5))?;
    info!("compactor stopped");
    Ok(())
}
