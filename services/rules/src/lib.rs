//! Rules evaluator: stateful, event-time alert rules over the store topics.
//!
//! It consumes `pos.sales.v1`, `pos.inventory.v1`, `pos.device.v1`,
//! `sensor.readings.v1` and `forecasts.v1` with the shared batch consumer,
//! evaluates the rules of a rule file ([`rule_file`]) per store in event time
//! ([`engine`]), checkpoints its state with the consumed offsets in Postgres
//! ([`checkpoint`]), and emits each alert's lifecycle (`Firing`, then `Resolved`)
//! to `alerts.v1` ([`processor`]). The rule file is re-read when it changes; a
//! valid new version is put in force without a restart and without losing state,
//! an invalid one is refused (logged, counted) and the rules in force stay.

pub mod backtest;
pub mod calendar;
pub mod checkpoint;
pub mod engine;
pub mod machines;
pub mod observation;
pub mod processor;
pub mod rule_file;
pub use storepulse_runtime::span;
pub mod topic_reader;

use std::path::{Path, PathBuf};
use std::sync::Arc;
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
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::calendar::Calendar;
use crate::engine::{Engine, TimeSettings};
use crate::processor::{RulesMetrics, RulesProcessor};
use crate::rule_file::RuleSet;

/// Name of the config section and of the service in metrics.
pub const SERVICE: &str = "rules";
/// Default address of the ops endpoints.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9103";

/// The `[rules]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesSettings {
    /// Consumer group; run more replicas (up to the partition count) to scale out.
    pub group_id: String,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub http_listen: String,
    /// The rule file (TOML). Required.
    pub rules_file: String,
    /// The store calendar file (TOML); empty: every store always open.
    pub calendar_file: String,
    /// How far behind a store's latest event an event may be and still count, ms.
    pub allowed_lateness_ms: u64,
    /// How long a store may be silent on a source before its time follows the
    /// partition's arrival (and the wall clock, once the partition is idle), ms.
    pub idle_timeout_ms: u64,
    /// How often idle partitions move time on, ms.
    pub idle_tick_ms: u64,
    /// How often the rule file is checked for changes, ms.
    pub reload_interval_ms: u64,
    /// Most records per batch (one checkpoint transaction).
    pub batch_max_records: usize,
    /// Longest wait to fill a batch, ms.
    pub batch_max_wait_ms: u64,
    /// Time given to finish the batch in hand on SIGTERM, ms.
    pub shutdown_grace_ms: u64,
    /// How long a partition waits for an unknown writer schema, s.
    pub unknown_schema_hold_secs: u64,
}

/// `storepulse-rules`.
pub fn default_group_id() -> String {
    "storepulse-rules".into()
}

/// 30 s: a store's events may arrive this much out of order.
pub fn default_allowed_lateness_ms() -> u64 {
    30_000
}

/// 60 s: a store silent this long on a source follows the partition's time.
pub fn default_idle_timeout_ms() -> u64 {
    60_000
}

impl Default for RulesSettings {
    fn default() -> Self {
        Self {
            group_id: default_group_id(),
            http_listen: DEFAULT_LISTEN.into(),
            rules_file: String::new(),
            calendar_file: String::new(),
            allowed_lateness_ms: default_allowed_lateness_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            idle_tick_ms: 1_000,
            reload_interval_ms: 2_000,
            batch_max_records: 2_000,
            batch_max_wait_ms: 100,
            shutdown_grace_ms: 30_000,
            unknown_schema_hold_secs: 120,
        }
    }
}

impl Validate for RulesSettings {
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
        if self.idle_timeout_ms < self.allowed_lateness_ms {
            return Err(invalid(
                s,
                "idle_timeout_ms",
                "must be at least allowed_lateness_ms (a live store's own events must not be late)",
            ));
        }
        if self.batch_max_records == 0 {
            return Err(invalid(s, "batch_max_records", "must be >= 1"));
        }
        if self.idle_tick_ms == 0 || self.reload_interval_ms == 0 {
            return Err(invalid(s, "idle_tick_ms", "ticks must be > 0"));
        }
        Ok(())
    }
}

impl RulesSettings {
    pub fn time(&self) -> TimeSettings {
        TimeSettings {
            allowed_lateness: self.allowed_lateness_ms as i64 * 1_000,
            idle_timeout: self.idle_timeout_ms as i64 * 1_000,
        }
    }
}

/// Everything the rules service reads from configuration.
#[derive(Debug, Clone)]
pub struct RulesConfig {
    pub kafka: KafkaConfig,
    pub postgres: PostgresConfig,
    pub log: LogConfig,
    pub rules: RulesSettings,
}

impl RulesConfig {
    pub fn from_source(src: &ConfigSource) -> Result<Self, ConfigError> {
        Ok(Self {
            kafka: src.section("kafka")?,
            postgres: src.section("postgres")?,
            log: src.section("log")?,
            rules: src.section("rules")?,
        })
    }
}

/// Reads this service's configuration.
pub fn config(src: &ConfigSource) -> Result<RulesConfig, ConfigError> {
    RulesConfig::from_source(src)
}

/// Why the rule file or the store calendar named in the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("rules.rules_file is not set: name a rule file (see config/rules.example.toml)")]
    NoRuleFile,
    #[error("rule file {path}: {source}")]
    RuleFile {
        path: String,
        source: rule_file::RuleFileError,
    },
    #[error("calendar file {path}: {source}")]
    CalendarFile {
        path: String,
        source: calendar::CalendarError,
    },
}

/// Loads the rule file named in the settings.
pub fn load_rules(settings: &RulesSettings) -> Result<RuleSet, LoadError> {
    if settings.rules_file.is_empty() {
        return Err(LoadError::NoRuleFile);
    }
    RuleSet::load(Path::new(&settings.rules_file)).map_err(|source| LoadError::RuleFile {
        path: settings.rules_file.clone(),
        source,
    })
}

/// Loads the store calendar named in the settings (always open when none).
pub fn load_calendar(settings: &RulesSettings) -> Result<Calendar, LoadError> {
    if settings.calendar_file.is_empty() {
        return Ok(Calendar::always_open());
    }
    Calendar::load(Path::new(&settings.calendar_file)).map_err(|source| LoadError::CalendarFile {
        path: settings.calendar_file.clone(),
        source,
    })
}

/// Runs the rules service until `shutdown` is cancelled.
pub async fn run(config: RulesConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = ops_http::bind(&config.rules.http_listen).await?;
    run_with_listener(config, listener, shutdown).await
}

/// Like [`run`], on a listener the caller bound.
pub async fn run_with_listener(
    config: RulesConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = &config.rules;
    let rules = Arc::new(load_rules(settings)?);
    let calendar = Arc::new(load_calendar(settings)?);
    info!(rules = rules.count(), file = %settings.rules_file, "rules loaded");

    let metrics_registry = telemetry::service_registry(SERVICE);
    let producer_metrics = ProducerMetrics::register(&metrics_registry)?;
    let consumer_metrics = ConsumerMetrics::register(&metrics_registry)?;
    let rules_metrics = RulesMetrics::register(&metrics_registry)?;
    let pool = db::pool(&config.postgres)?;
    db::migrate_set(&pool, &checkpoint::MIGRATIONS).await?;

    let codec = AvroCodec::new();
    let producer = EventProducer::new(
        &config.kafka,
        "storepulse-rules",
        codec.clone(),
        producer_metrics,
    )?;
    if let Err(e) = schema_registry::publish_bundled(&producer).await {
        warn!(error = %e, "could not publish this build's schemas to the schema registry");
    }
    let registry = SchemaRegistry::new(codec.clone(), &config.kafka);
    let (rules_tx, rules_rx) = watch::channel(rules.clone());
    let engine = Engine::new(rules, calendar, settings.time());
    let processor = RulesProcessor::new(
        engine,
        pool.clone(),
        settings.group_id.clone(),
        codec,
        producer.clone(),
        config.kafka.clone(),
        rules_metrics.clone(),
        rules_rx,
        Duration::from_millis(settings.idle_tick_ms),
    );
    let consumer = BatchConsumer::new(
        &config.kafka,
        ConsumerSettings {
            group_id: settings.group_id.clone(),
            topics: observation::input_topics(),
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
            db::readiness(pool),
            consumer.health().readiness(),
        ],
    );
    info!(addr = %listener.local_addr()?, group = %settings.group_id, "rules running");
    let mut tasks = ServiceTasks::new(&shutdown);
    tasks.spawn("ops-http", ops_http::serve(listener, router, tasks.token()));
    tasks.spawn("consumer", consumer.run(tasks.token()));
    tasks.spawn(
        "rule-reload",
        watch_rule_file(
            PathBuf::from(&settings.rules_file),
            Duration::from_millis(settings.reload_interval_ms),
            rules_tx,
            rules_metrics,
            tasks.token(),
        ),
    );
    tasks
        .join(Duration::from_millis(settings.shutdown_grace_ms))
        .await?;
    producer.flush(Duration::from_secs(5))?;
    info!("rules stopped");
    Ok(())
}

/// Re-reads the rule file every `every`; sends each valid new version, refuses an
/// invalid one (the rules in force stay). A new version is taken only once two
/// reads in a row find the same bytes, so a file caught half-written (an editor or
/// `cp` writing in place) is never put in force — not even when the part written
/// so far happens to be valid.
async fn watch_rule_file(
    path: PathBuf,
    every: Duration,
    rules: watch::Sender<Arc<RuleSet>>,
    metrics: RulesMetrics,
    shutdown: CancellationToken,
) -> Result<(), std::io::Error> {
    let mut last = std::fs::read(&path).ok();
    let mut settling: Option<Vec<u8>> = None;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                if last.is_some() {
                    warn!(file = %path.display(), error = %e, "rule file unreadable; the rules in force stay");
                    last = None;
                }
                continue;
            }
        };
        if last.as_deref() == Some(now.as_slice()) {
            settling = None;
            continue;
        }
        if settling.as_deref() != Some(now.as_slice()) {
            // Changed since the last read: wait for it to stay put for one interval.
            settling = Some(now);
            continue;
        }
        settling = None;
        last = Some(now.clone());
        match RuleSet::parse(&String::from_utf8_lossy(&now)) {
            Ok(set) => {
                info!(file = %path.display(), rules = set.count(), "rule file changed; reloading");
                metrics.reloads.with_label_values(&["ok"]).inc();
                if rules.send(Arc::new(set)).is_err() {
                    return Ok(());
                }
            }
            Err(e) => {
                error!(file = %path.display(), error = %e, "rule file changed but is invalid; the rules in force stay");
                metrics.reloads.with_label_values(&["invalid"]).inc();
            }
        }
    }
}
