//! Demand forecaster: daily demand per store and SKU, forecasts with intervals and
//! stock-out risk, published to `forecasts.v1`.
//!
//! It consumes `pos.sales.v1` (net units: sold − refunded − voided, per store/sku and
//! day in the store's time zone) and `pos.inventory.v1` (on hand) with the shared batch
//! consumer, keeps them with its consumed offsets in its own Postgres schema
//! ([`state`]), and publishes a 14-day forecast per series on a schedule and when
//! enough new data arrived ([`publisher`]): the method chosen per series by
//! rolling-origin backtest ([`methods`]), 80% and 95% intervals, the backtest error,
//! and — with stock known — days of cover and the probability of running out within
//! the lead time ([`risk`]), which the rules' forecast stock rule reads.

pub mod backtest_report;
pub mod methods;
pub mod processor;
pub mod publisher;
pub mod risk;
pub mod state;
pub mod zones;

use std::collections::{BTreeMap, HashMap};
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

use crate::methods::selection::Selection;
use crate::processor::DemandProcessor;
use crate::publisher::{ForecasterMetrics, PublishSettings};
use crate::state::DuePolicy;
use crate::zones::StoreZones;

/// Name of the config section and of the service in metrics.
pub const SERVICE: &str = "forecaster";
/// Default address of the ops endpoints.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9104";

/// The `[forecaster]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecasterSettings {
    /// Consumer group; run more replicas (up to the partition count) to scale out.
    pub group_id: String,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub http_listen: String,
    /// Days forecast, today included.
    pub horizon_days: usize,
    /// Most days of history a series is fitted on.
    pub history_days: i64,
    /// Backtest origins (a week apart) the method choice averages over.
    pub backtest_origins: usize,
    /// Offer MSTL + AutoETS (augurs) to regular sellers (slower).
    pub mstl: bool,
    /// Every series is forecast again at least this often, s (the schedule).
    pub refresh_interval_secs: u64,
    /// New sale lines that make a series due before its schedule.
    pub refresh_after_lines: i64,
    /// No series is forecast more often than this, s.
    pub min_republish_secs: u64,
    /// How often due series are looked for, ms.
    pub scan_interval_ms: u64,
    /// Most series claimed per round.
    pub scan_batch: i64,
    /// A claimed series not published within this is claimed again, s.
    pub claim_secs: u64,
    /// Replenishment lead time, days: the stock-out probability's window.
    pub lead_time_days: usize,
    /// Lead times of particular stores (`"tenant/store" = days`).
    pub store_lead_time_days: BTreeMap<String, usize>,
    /// IANA time zone of the stores: days are counted in it.
    pub time_zone: String,
    /// Time zones of particular stores (`"tenant/store" = "Europe/Paris"`).
    pub store_time_zones: BTreeMap<String, String>,
    /// How long an event id is remembered against retries, days.
    pub dedup_days: i32,
    /// Most records per batch (one transaction).
    pub batch_max_records: usize,
    /// Longest wait to fill a batch, ms.
    pub batch_max_wait_ms: u64,
    /// Time given to finish the batch in hand on SIGTERM, ms.
    pub shutdown_grace_ms: u64,
    /// How long a partition waits for an unknown writer schema, s.
    pub unknown_schema_hold_secs: u64,
}

/// `storepulse-forecaster`.
pub fn default_group_id() -> String {
    "storepulse-forecaster".into()
}

/// 14 days: two weeks of demand, the horizon.
pub fn default_horizon_days() -> usize {
    14
}

/// 7 days: a weekly delivery.
pub fn default_lead_time_days() -> usize {
    7
}

/// `UTC`: the store time zone is not on the topics; set it for your stores.
pub fn default_time_zone() -> String {
    "UTC".into()
}

impl Default for ForecasterSettings {
    fn default() -> Self {
        Self {
            group_id: default_group_id(),
            http_listen: DEFAULT_LISTEN.into(),
            horizon_days: default_horizon_days(),
            history_days: 400,
            backtest_origins: 3,
            mstl: false,
            refresh_interval_secs: 86_400,
            refresh_after_lines: 50,
            min_republish_secs: 300,
            scan_interval_ms: 10_000,
            scan_batch: 500,
            claim_secs: 300,
            lead_time_days: default_lead_time_days(),
            store_lead_time_days: BTreeMap::new(),
            time_zone: default_time_zone(),
            store_time_zones: BTreeMap::new(),
            dedup_days: 35,
            batch_max_records: 2_000,
            batch_max_wait_ms: 100,
            shutdown_grace_ms: 30_000,
            unknown_schema_hold_secs: 120,
        }
    }
}

impl Validate for ForecasterSettings {
    fn validate(&self, s: &str) -> Result<(), ConfigError> {
        if self.group_id.is_empty() {
            return Err(invalid(s, "group_id", "must not be empty"));
        }
        if self.http_listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                s,
                "http_listen",
                format!("{:?} is not an ip:port address", self.http_listen),
            ));
        }
        if !(1..=366).contains(&self.horizon_days) {
            return Err(invalid(s, "horizon_days", "must be 1..=366"));
        }
        if self.history_days < 14 {
            return Err(invalid(
                s,
                "history_days",
                "must be at least 14 (two weeks)",
            ));
        }
        if self.backtest_origins == 0 {
            return Err(invalid(s, "backtest_origins", "must be >= 1"));
        }
        if self.lead_time_days == 0 || self.store_lead_time_days.values().any(|d| *d == 0) {
            return Err(invalid(s, "lead_time_days", "lead times must be >= 1 day"));
        }
        if let Err(e) = StoreZones::new(&self.time_zone, &self.store_time_zones) {
            return Err(invalid(s, "time_zone", e.to_string()));
        }
        if self.scan_interval_ms == 0 || self.scan_batch <= 0 || self.claim_secs == 0 {
            return Err(invalid(
                s,
                "scan_interval_ms",
                "scan interval, batch and claim must be > 0",
            ));
        }
        if self.batch_max_records == 0 {
            return Err(invalid(s, "batch_max_records", "must be >= 1"));
        }
        if self.dedup_days <= 0 {
            return Err(invalid(s, "dedup_days", "must be >= 1"));
        }
        Ok(())
    }
}

impl ForecasterSettings {
    /// How methods are chosen.
    pub fn selection(&self) -> Selection {
        Selection {
            horizon: self.horizon_days,
            origins: self.backtest_origins,
            mstl: self.mstl,
            ..Selection::default()
        }
    }

    fn publish_settings(&self) -> Result<PublishSettings, zones::UnknownZone> {
        Ok(PublishSettings {
            selection: self.selection(),
            history_days: self.history_days,
            lead_time_days: self.lead_time_days,
            lead_times: self
                .store_lead_time_days
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect::<HashMap<_, _>>(),
            zones: StoreZones::new(&self.time_zone, &self.store_time_zones)?,
            policy: DuePolicy {
                max_series: self.scan_batch,
                claim_secs: self.claim_secs as f64,
                refresh_secs: self.refresh_interval_secs as f64,
                refresh_after_lines: self.refresh_after_lines,
                min_republish_secs: self.min_republish_secs as f64,
            },
            scan_interval: Duration::from_millis(self.scan_interval_ms),
            dedup_days: self.dedup_days,
        })
    }
}

/// Everything the forecaster reads from configuration.
#[derive(Debug, Clone)]
pub struct ForecasterConfig {
    pub kafka: KafkaConfig,
    pub postgres: PostgresConfig,
    pub log: LogConfig,
    pub forecaster: ForecasterSettings,
}

/// Reads this service's configuration.
pub fn config(src: &ConfigSource) -> Result<ForecasterConfig, ConfigError> {
    Ok(ForecasterConfig {
        kafka: src.section("kafka")?,
        postgres: src.section("postgres")?,
        log: src.section("log")?,
        forecaster: src.section("forecaster")?,
    })
}

/// Runs the forecaster until `shutdown` is cancelled.
pub async fn run(config: ForecasterConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = ops_http::bind(&config.forecaster.http_listen).await?;
    run_with_listener(config, listener, shutdown).await
}

/// Like [`run`], on a listener the caller bound.
pub async fn run_with_listener(
    config: ForecasterConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = &config.forecaster;
    let publish = settings.publish_settings()?;
    let metrics_registry = telemetry::service_registry(SERVICE);
    let producer_metrics = ProducerMetrics::register(&metrics_registry)?;
    let consumer_metrics = ConsumerMetrics::register(&metrics_registry)?;
    let metrics = ForecasterMetrics::register(&metrics_registry)?;
    let pool = db::pool(&config.postgres)?;
    db::migrate_set(&pool, &state::MIGRATIONS).await?;

    let codec = AvroCodec::new();
    let producer = EventProducer::new(
        &config.kafka,
        "storepulse-forecaster",
        codec.clone(),
        producer_metrics,
    )?;
    if let Err(e) = schema_registry::publish_bundled(&producer).await {
        warn!(error = %e, "could not publish this build's schemas to the schema registry");
    }
    let registry = SchemaRegistry::new(codec.clone(), &config.kafka);
    let processor = DemandProcessor::new(
        pool.clone(),
        settings.group_id.clone(),
        codec,
        publish.zones.clone(),
        metrics.clone(),
    );
    let consumer = BatchConsumer::new(
        &config.kafka,
        ConsumerSettings {
            group_id: settings.group_id.clone(),
            topics: processor::input_topics(),
            batch_max_records: settings.batch_max_records,
            batch_max_wait: Duration::from_millis(settings.batch_max_wait_ms),
            unknown_schema_hold: Duration::from_secs(settings.unknown_schema_hold_secs),
        },
        processor,
        DeadLetters::new(producer.clone(), SERVICE),
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
    info!(addr = %listener.local_addr()?, group = %settings.group_id, time_zone = %settings.time_zone, "forecaster running");
    let mut tasks = ServiceTasks::new(&shutdown);
    tasks.spawn("ops-http", ops_http::serve(listener, router, tasks.token()));
    tasks.spawn("consumer", consumer.run(tasks.token()));
    tasks.spawn(
        "publisher",
        publisher::run(pool, producer.clone(), publish, metrics, tasks.token()),
    );
    tasks
        .join(Duration::from_millis(settings.shutdown_grace_ms))
        .await?;
    producer.flush(Duration::from_secs(5))?;
    info!("forecaster stopped");
    Ok(())
}
