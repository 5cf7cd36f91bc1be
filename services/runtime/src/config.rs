//! Layered configuration: built-in defaults, then an optional TOML file, then
//! `STOREPULSE_<SECTION>__<KEY>` environment variables (e.g. `STOREPULSE_KAFKA__BROKERS`).
//!
//! One file configures the whole pipeline; each service extracts the sections it
//! uses. Unknown sections and unknown keys are errors that name the key, so a typo
//! never silently falls back to a default. Values are validated at start
//! ([`Validate`]), again naming the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Environment variable prefix of every override.
pub const ENV_PREFIX: &str = "STOREPULSE_";
/// `STOREPULSE_` variables that are not configuration: the config file's name and
/// the password `storepulse analysts create` reads.
/// Environment variable naming the config file (alternative to `--config`).
pub const CONFIG_FILE_ENV: &str = "STOREPULSE_CONFIG";

/// Every top-level section any StorePulse service reads.
pub const SECTIONS: &[&str] = &[
    "kafka",
    "postgres",
    "log",
    "ingest",
    "compactor",
    "rules",
    "forecaster",
    "notifier",
];

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("unknown config section `{0}` (known: {known})", known = SECTIONS.join(", "))]
    UnknownSection(String),
    #[error(
        "environment variable {var} is read as configuration (every STOREPULSE_* variable is), \
         but `{section}` is not a section: configuration variables are \
         STOREPULSE_<SECTION>__<KEY> with a double underscore (sections: {known}); \
         rename the variable",
        known = SECTIONS.join(", ")
    )]
    UnknownEnvSection { var: String, section: String },
    #[error("config: {0}")]
    Parse(Box<figment::Error>),
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    /// A value of the wrong type, and where it came from (file or variable).
    #[error("config key `{key}`{from}: {reason}")]
    Value {
        key: String,
        from: String,
        reason: String,
    },
}

/// Checks that go beyond types. Errors name the full key (`section.key`).
pub trait Validate {
    fn validate(&self, section: &str) -> Result<(), ConfigError>;
}

/// Shorthand for an [`ConfigError::Invalid`].
pub fn invalid(section: &str, key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: format!("{section}.{key}"),
        reason: reason.into(),
    }
}

/// The merged configuration sources, from which services extract their sections.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    figment: Figment,
}

impl ConfigSource {
    /// Defaults ← `file` (or `$STOREPULSE_CONFIG`) ← `STOREPULSE_*` environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let from_env = std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from);
        let file = file.map(Path::to_path_buf).or(from_env);
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::File {
                    path,
                    reason: "not found or not a file".into(),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .ignore(&["CONFIG", "ANALYST_PASSWORD"])
                .split("__"),
        );
        Self::from_figment(figment)
    }

    /// Only the given TOML text, no file and no environment (tests, embedded stacks).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let top: BTreeMap<String, figment::value::Value> = figment
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        if let Some(unknown) = top.keys().find(|k| !SECTIONS.contains(&k.as_str())) {
            let from_env = figment
                .find_metadata(unknown)
                .is_some_and(|m| m.name.contains("environment"));
            return Err(if from_env {
                ConfigError::UnknownEnvSection {
                    var: env_var_of(unknown),
                    section: unknown.clone(),
                }
            } else {
                ConfigError::UnknownSection(unknown.clone())
            });
        }
        Ok(Self { figment })
    }

    /// One section layered over `default` (for sections whose defaults differ per
    /// service, like listen ports), validated.
    pub fn section_or<T: DeserializeOwned + Serialize + Validate>(
        &self,
        name: &str,
        default: T,
    ) -> Result<T, ConfigError> {
        let value: T = Figment::from(Serialized::default(name, &default))
            .merge(self.figment.clone())
            .extract_inner(name)
            .map_err(|e| keyed_error(name, e))?;
        value.validate(name)?;
        Ok(value)
    }

    /// One section, defaults filled in, validated.
    pub fn section<T: DeserializeOwned + Default + Validate>(
        &self,
        name: &str,
    ) -> Result<T, ConfigError> {
        let value: T = if self.figment.find_value(name).is_ok() {
            self.figment
                .extract_inner(name)
                .map_err(|e| keyed_error(name, e))?
        } else {
            T::default()
        };
        value.validate(name)?;
        Ok(value)
    }
}

/// The environment variable that set top-level key `key` (`STOREPULSE_OPS_SECRET`,
/// `STOREPULSE_INGST__LISTEN`), as it is spelled in the environment.
fn env_var_of(key: &str) -> String {
    std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .find(|name| {
            name.strip_prefix(ENV_PREFIX).is_some_and(|rest| {
                let rest = rest.to_ascii_lowercase();
                rest == key || rest.starts_with(&format!("{key}__"))
            })
        })
        .unwrap_or_else(|| format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()))
}

/// A section's extraction error as `config key `section.key` (from <source>): <what>`.
/// figment's own text names an environment variable's key backwards
/// (`PARTITIONS.KAFKA`); this names the key as the file and `config show` spell it,
/// and the variable as it is set.
fn keyed_error(section: &str, e: figment::Error) -> ConfigError {
    // figment appends the section to the inner key's path (["partitions", "kafka"]).
    let mut path: Vec<String> = e.path.clone();
    if path.last().map(String::as_str) == Some(section) {
        path.pop();
    }
    if path.first().map(String::as_str) == Some(section) {
        path.remove(0);
    }
    path.insert(0, section.to_string());
    if path.len() < 2 {
        return ConfigError::Parse(Box::new(e));
    }
    let key = path.join(".");
    let from = match &e.metadata {
        Some(m) if m.name.contains("environment") => format!(
            " (from environment variable {ENV_PREFIX}{})",
            path.join("__").to_ascii_uppercase()
        ),
        Some(m) => match &m.source {
            Some(figment::Source::File(f)) => format!(" (from {})", f.display()),
            _ => String::new(),
        },
        None => String::new(),
    };
    ConfigError::Value {
        key,
        from,
        reason: e.kind.to_string(),
    }
}

/// How to reach Kafka, and how topics are named.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// Prepended to every topic name, e.g. `staging.` → `staging.pos.sales.v1`.
    pub topic_prefix: String,
    /// How long a produce may wait for the broker before the caller gets an error.
    pub produce_timeout_ms: u64,
    /// `linger.ms` of every producer: how long records wait to be sent with others
    /// in one produce request. Ingest answers after the broker acknowledged, so this
    /// is added to its answer time. Default [`default_producer_linger_ms`].
    #[serde(default = "default_producer_linger_ms")]
    pub producer_linger_ms: u64,
    /// `batch.num.messages`: most records in one produce request per partition.
    /// Default [`default_producer_batch_max_records`].
    #[serde(default = "default_producer_batch_max_records")]
    pub producer_batch_max_records: u32,
    /// `fetch.wait.max.ms` of every consumer: longest time the broker may hold a
    /// fetch waiting for `fetch_min_bytes`; bounds end-to-end latency.
    /// Default [`default_fetch_wait_max_ms`].
    #[serde(default = "default_fetch_wait_max_ms")]
    pub fetch_wait_max_ms: u64,
    /// `fetch.min.bytes` of every consumer: the broker answers a fetch once this
    /// much is there (or `fetch_wait_max_ms` passed). Default [`default_fetch_min_bytes`].
    #[serde(default = "default_fetch_min_bytes")]
    pub fetch_min_bytes: u32,
    /// Partitions of topics created by `storepulse topics create` and the dev stack.
    pub partitions: i32,
    /// Extra librdkafka properties (security.protocol, sasl.*, ...), passed verbatim.
    /// Keys with a setting of their own above, and keys a guarantee rests on
    /// ([`RESERVED_PROPERTIES`]), are refused.
    pub properties: BTreeMap<String, String>,
    /// Durability and retention of the topics `storepulse topics` creates and checks.
    pub topics: TopicSettings,
}

/// 20 ms: with one producer per ingest process, records of concurrent requests for
/// the same partition share a produce request. Every produce request is work for
/// the broker, and an answer waits at most this long more. See
/// `docs/decisions/0010-batching-trade-offs.md`.
pub fn default_producer_linger_ms() -> u64 {
    20
}

/// 10,000 (librdkafka's default): the linger, not the count, closes batches at
/// the rates a store fleet sends.
pub fn default_producer_batch_max_records() -> u32 {
    10_000
}

/// 50 ms: a fetch waits at most this for [`default_fetch_min_bytes`] to gather, so
/// a quiet stream's records reach a consumer within it.
pub fn default_fetch_wait_max_ms() -> u64 {
    50
}

/// 64 KiB: under load a fetch is answered once this much is there, not for every
/// few records (Kafka's default, 1 byte, answers at once: many small fetches).
pub fn default_fetch_min_bytes() -> u32 {
    65_536
}

/// librdkafka properties `kafka.properties` may not set, and why: each has a typed
/// setting of its own, or a guarantee rests on it.
pub const RESERVED_PROPERTIES: &[(&str, &str)] = &[
    ("linger.ms", "set kafka.producer_linger_ms instead"),
    (
        "queue.buffering.max.ms",
        "set kafka.producer_linger_ms instead",
    ),
    (
        "batch.num.messages",
        "set kafka.producer_batch_max_records instead",
    ),
    ("fetch.wait.max.ms", "set kafka.fetch_wait_max_ms instead"),
    ("fetch.min.bytes", "set kafka.fetch_min_bytes instead"),
    ("message.timeout.ms", "set kafka.produce_timeout_ms instead"),
    (
        "enable.idempotence",
        "producers are idempotent: retries must not duplicate records",
    ),
    (
        "acks",
        "producers use acks=all: ingest answers only once the event is replicated",
    ),
    (
        "enable.auto.commit",
        "consumers commit offsets only after a batch is durable",
    ),
    (
        "enable.auto.offset.store",
        "consumers commit offsets only after a batch is durable",
    ),
    ("group.id", "set the service's own group_id instead"),
];

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: String::new(),
            produce_timeout_ms: 5_000,
            producer_linger_ms: default_producer_linger_ms(),
            producer_batch_max_records: default_producer_batch_max_records(),
            fetch_wait_max_ms: default_fetch_wait_max_ms(),
            fetch_min_bytes: default_fetch_min_bytes(),
            partitions: 6,
            properties: BTreeMap::new(),
            topics: TopicSettings::default(),
        }
    }
}

/// `[kafka.topics]`: the settings every pipeline topic is created with, and that
/// `storepulse topics` checks existing topics against. The defaults are for a
/// production cluster of at least three brokers; a single local broker (the dev
/// stack, the tests) uses [`TopicSettings::single_broker`]. See
/// `docs/decisions/0005-topic-settings.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    /// Copies of every partition. Default [`default_replication_factor`].
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i16,
    /// `min.insync.replicas`: with the producers' `acks=all`, an acknowledged record
    /// is on at least this many brokers. Default [`default_min_insync_replicas`].
    #[serde(default = "default_min_insync_replicas")]
    pub min_insync_replicas: i16,
    /// `retention.ms` of the event-log topics (every topic but the dead letters):
    /// the read store is rebuilt from them. Default [`default_retention`].
    #[serde(default = "default_retention")]
    pub retention: Retention,
    /// `retention.ms` of the dead-letter topic `ingest.rejected.v1`.
    /// Default [`default_dead_letter_retention`].
    #[serde(default = "default_dead_letter_retention")]
    pub dead_letter_retention: Retention,
}

/// 3: survives the loss of one broker while still holding two copies.
pub fn default_replication_factor() -> i16 {
    3
}

/// 2: an acknowledged record is on two brokers before ingest answers, so losing
/// any one broker loses nothing accepted.
pub fn default_min_insync_replicas() -> i16 {
    2
}

/// Unlimited: the event-log topics are the source of truth; the read store is
/// rebuilt by replaying them from the start.
pub fn default_retention() -> Retention {
    Retention::Unlimited
}

/// 30 days: dead letters are evidence for operators to inspect and re-submit, not
/// a source the read store is rebuilt from (the compactor also keeps every one in
/// `rejected_events`), and a poison-record storm must not grow the log forever.
pub fn default_dead_letter_retention() -> Retention {
    Retention::Finite(std::time::Duration::from_secs(30 * 86_400))
}

impl Default for TopicSettings {
    fn default() -> Self {
        Self {
            replication_factor: default_replication_factor(),
            min_insync_replicas: default_min_insync_replicas(),
            retention: default_retention(),
            dead_letter_retention: default_dead_letter_retention(),
        }
    }
}

impl TopicSettings {
    /// For a cluster of one broker (dev stack, tests): one copy, one in sync,
    /// retention as in production.
    pub fn single_broker() -> Self {
        Self {
            replication_factor: 1,
            min_insync_replicas: 1,
            ..Self::default()
        }
    }

    fn validate(&self, s: &str) -> Result<(), ConfigError> {
        let s = format!("{s}.topics");
        if self.replication_factor < 1 {
            return Err(invalid(&s, "replication_factor", "must be >= 1"));
        }
        if self.min_insync_replicas < 1 {
            return Err(invalid(&s, "min_insync_replicas", "must be >= 1"));
        }
        if self.min_insync_replicas > self.replication_factor {
            return Err(invalid(
                &s,
                "min_insync_replicas",
                format!(
                    "{} is more than the replication factor {}: no produce with acks=all could succeed",
                    self.min_insync_replicas, self.replication_factor
                ),
            ));
        }
        Ok(())
    }
}

/// How long a topic keeps records: `unlimited` or a duration such as `30d`, `12h`,
/// `90m`, `2w`, `500ms` (units ms, s, m, h, d, w).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    Unlimited,
    Finite(std::time::Duration),
}

impl Retention {
    /// The value of the topic config `retention.ms` (`-1` = unlimited).
    pub fn as_retention_ms(&self) -> i64 {
        match self {
            Retention::Unlimited => -1,
            Retention::Finite(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// A `retention.ms` value in the humane form, for messages (`-1` → `unlimited`).
    pub fn describe_ms(ms: i64) -> String {
        match u64::try_from(ms) {
            Ok(ms) => Retention::Finite(std::time::Duration::from_millis(ms)).to_string(),
            Err(_) => Retention::Unlimited.to_string(),
        }
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = match self {
            Retention::Unlimited => return f.write_str("unlimited"),
            Retention::Finite(d) => d,
        };
        let ms = d.as_millis();
        for (unit, size) in [
            ("w", 604_800_000u128),
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms >= size && ms % size == 0 {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl std::str::FromStr for Retention {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("unlimited") {
            return Ok(Retention::Unlimited);
        }
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (number, unit) = t.split_at(digits);
        let bad = || {
            format!(
                "{text:?} is not a retention: use `unlimited` or a number with a unit (ms, s, m, h, d, w), e.g. 30d"
            )
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        let ms_per = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return Err(bad()),
        };
        if n == 0 {
            return Err(format!(
                "{text:?}: a retention of zero would delete every record at once"
            ));
        }
        let ms = n.checked_mul(ms_per).ok_or_else(bad)?;
        Ok(Retention::Finite(std::time::Duration::from_millis(ms)))
    }
}

impl Serialize for Retention {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl KafkaConfig {
    /// The full name of a topic in this deployment.
    pub fn topic(&self, base: &str) -> String {
        format!("{}{}", self.topic_prefix, base)
    }

    /// The base name of a full topic name, if it carries this deployment's prefix.
    pub fn base_topic<'a>(&self, full: &'a str) -> &'a str {
        full.strip_prefix(self.topic_prefix.as_str())
            .unwrap_or(full)
    }
}

impl Validate for KafkaConfig {
    fn validate(&self, s: &str) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(invalid(s, "brokers", "must name at least one host:port"));
        }
        if self.produce_timeout_ms == 0 {
            return Err(invalid(s, "produce_timeout_ms", "must be > 0"));
        }
        if self.partitions < 1 {
            return Err(invalid(s, "partitions", "must be >= 1"));
        }
        if self.producer_linger_ms > 900_000 {
            return Err(invalid(s, "producer_linger_ms", "must be <= 900000"));
        }
        if !(1..=1_000_000).contains(&self.producer_batch_max_records) {
            return Err(invalid(
                s,
                "producer_batch_max_records",
                "must be in 1..=1000000",
            ));
        }
        if self.fetch_min_bytes == 0 || self.fetch_min_bytes > 100_000_000 {
            return Err(invalid(s, "fetch_min_bytes", "must be in 1..=100000000"));
        }
        for key in self.properties.keys() {
            if let Some((_, why)) = RESERVED_PROPERTIES.iter().find(|(k, _)| k == key) {
                return Err(invalid(
                    s,
                    &format!("properties.{key}"),
                    format!("not settable here: {why}"),
                ));
            }
        }
        if self
            .topic_prefix
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
        {
            return Err(invalid(s, "topic_prefix", "only [A-Za-z0-9._-] allowed"));
        }
        self.topics.validate(s)
    }
}

/// The read store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// libpq-style URL, e.g. `postgres://storepulse@127.0.0.1:5432/storepulse`.
    pub url: String,
    /// Most connections this service holds.
    pub pool_size: usize,
    /// Bound on waiting for a connection, so a dead database fails requests fast.
    pub connect_timeout_ms: u64,
    /// `statement_timeout` of every session: a statement running longer is cancelled
    /// (a stuck write fails the batch instead of hanging the consumer). 0 = none.
    pub statement_timeout_ms: u64,
    /// `lock_timeout` of every session: waiting longer for a lock fails the statement.
    /// 0 = none.
    pub lock_timeout_ms: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: "postgres://storepulse@127.0.0.1:5432/storepulse".into(),
            pool_size: 8,
            connect_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            lock_timeout_ms: 10_000,
        }
    }
}

impl Validate for PostgresConfig {
    fn validate(&self, s: &str) -> Result<(), ConfigError> {
        if let Err(e) = self.url.parse::<tokio_postgres::Config>() {
            return Err(invalid(s, "url", format!("not a Postgres URL: {e}")));
        }
        if self.pool_size == 0 {
            return Err(invalid(s, "pool_size", "must be >= 1"));
        }
        Ok(())
    }
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` (one object per line, for collectors) or `text` (for humans).
    pub format: LogFormat,
    /// `tracing` filter directives, e.g. `info,storepulse_ingest=debug`. `RUST_LOG` wins.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            filter: "info".into(),
        }
    }
}

impl Validate for LogConfig {
    fn validate(&self, s: &str) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.filter)
            .map(|_| ())
            .map_err(|e| invalid(s, "filter", e.to_string()))
    }
}

/// Ops endpoints and lifecycle of a service without settings of its own yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsSettings {
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub http_listen: String,
    /// Time given to in-flight work on SIGTERM, in ms.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

fn default_shutdown_grace_ms() -> u64 {
    30_000
}

impl OpsSettings {
    /// Settings listening on `addr`, other fields at their defaults.
    pub fn listening_on(addr: &str) -> Self {
        Self {
            http_listen: addr.into(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
        }
    }
}

impl Validate for OpsSettings {
    fn validate(&self, s: &str) -> Result<(), ConfigError> {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_sections_are_absent() {
        let src = ConfigSource::from_toml("").expect("empty is fine");
        let k: KafkaConfig = src.section("kafka").expect("defaults");
        assert_eq!(k.brokers, "127.0.0.1:9092");
        assert_eq!(k.topic("pos.sales.v1"), "pos.sales.v1");
    }

    #[test]
    fn unknown_key_is_named() {
        let src = ConfigSource::from_toml("[kafka]\nbrokerz = \"x:1\"\n").expect("loads");
        let err = src.section::<KafkaConfig>("kafka").expect_err("typo");
        let msg = err.to_string();
        assert!(msg.contains("brokerz"), "{msg}");
    }

    #[test]
    fn per_service_defaults_layer_under_the_file() {
        let src = ConfigSource::from_toml("[rules]\nshutdown_grace_ms = 5\n").expect("loads");
        let ops: OpsSettings = src
            .section_or("rules", OpsSettings::listening_on("0.0.0.0:9103"))
            .expect("ok");
        assert_eq!(ops.http_listen, "0.0.0.0:9103");
        assert_eq!(ops.shutdown_grace_ms, 5);
        let src = ConfigSource::from_toml("[rules]\nhttp_listen = \"nowhere\"\n").expect("loads");
        let err = src
            .section_or("rules", OpsSettings::listening_on("0.0.0.0:9103"))
            .expect_err("bad addr");
        assert!(err.to_string().contains("rules.http_listen"), "{err}");
    }

    #[test]
    fn batching_settings_default_and_reserved_properties_are_refused() {
        let src = ConfigSource::from_toml("").expect("empty");
        let k: KafkaConfig = src.section("kafka").expect("defaults");
        assert_eq!(k.producer_linger_ms, default_producer_linger_ms());
        assert_eq!(k.fetch_min_bytes, default_fetch_min_bytes());
        let src =
            ConfigSource::from_toml("[kafka]\nproducer_linger_ms = 50\nfetch_min_bytes = 65536\n")
                .expect("loads");
        let k: KafkaConfig = src.section("kafka").expect("valid");
        assert_eq!((k.producer_linger_ms, k.fetch_min_bytes), (50, 65_536));
        for (key, hint) in [
            ("linger.ms", "kafka.producer_linger_ms"),
            ("acks", "acks=all"),
            ("enable.auto.commit", "durable"),
        ] {
            let src = ConfigSource::from_toml(&format!("[kafka.properties]\n\"{key}\" = \"1\"\n"))
                .expect("loads");
            let err = src.section::<KafkaConfig>("kafka").expect_err(key);
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("kafka.properties.{key}")) && msg.contains(hint),
                "{msg}"
            );
        }
        let src = ConfigSource::from_toml("[kafka]\nfetch_min_bytes = 0\n").expect("loads");
        let err = src.section::<KafkaConfig>("kafka").expect_err("zero");
        assert!(err.to_string().contains("kafka.fetch_min_bytes"), "{err}");
    }

    #[test]
    fn unknown_section_is_named() {
        let err = ConfigSource::from_toml("[kafak]\nbrokers = \"x:1\"\n").expect_err("typo");
        assert!(err.to_string().contains("kafak"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let src = ConfigSource::from_toml("[kafka]\npartitions = 0\n").expect("loads");
        let err = src.section::<KafkaConfig>("kafka").expect_err("invalid");
        assert!(err.to_string().contains("kafka.partitions"), "{err}");
        let src = ConfigSource::from_toml("[postgres]\nurl = \"nope://\"\n").expect("loads");
        let err = src
            .section::<PostgresConfig>("postgres")
            .expect_err("invalid");
        assert!(err.to_string().contains("postgres.url"), "{err}");
        let src =
            ConfigSource::from_toml("[kafka]\nproduce_timeout_ms = \"soon\"\n").expect("loads");
        let err = src.section::<KafkaConfig>("kafka").expect_err("wrong type");
        assert!(err.to_string().contains("produce_timeout_ms"), "{err}");
    }

    #[test]
    fn topic_settings_default_for_production_and_parse_humane_retention() {
        let src = ConfigSource::from_toml("").expect("empty");
        let k: KafkaConfig = src.section("kafka").expect("defaults");
        assert_eq!(k.topics.replication_factor, 3);
        assert_eq!(k.topics.min_insync_replicas, 2);
        assert_eq!(k.topics.retention.as_retention_ms(), -1);
        assert_eq!(
            k.topics.dead_letter_retention.as_retention_ms(),
            2_592_000_000
        );

        let src = ConfigSource::from_toml(
            "[kafka.topics]\nreplication_factor = 1\nmin_insync_replicas = 1\nretention = \"2w\"\n",
        )
        .expect("loads");
        let k: KafkaConfig = src.section("kafka").expect("valid");
        assert_eq!(k.topics.retention.as_retention_ms(), 14 * 86_400_000);
        assert_eq!(k.topics.retention.to_string(), "2w");
        assert_eq!(k.topics.dead_letter_retention.to_string(), "30d");

        for (text, ms) in [("unlimited", -1), ("90m", 5_400_000), ("500ms", 500)] {
            let r: Retention = text.parse().expect(text);
            assert_eq!(r.as_retention_ms(), ms, "{text}");
            assert_eq!(r.to_string(), text);
        }
        for bad in ["7", "7 days", "0d", "-1", "d", ""] {
            assert!(bad.parse::<Retention>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(Retention::describe_ms(-1), "unlimited");
        assert_eq!(Retention::describe_ms(604_800_000), "1w");
    }

    #[test]
    fn bad_topic_settings_are_named() {
        for (toml, key) in [
            ("[kafka.topics]\nretention = \"forever\"\n", "retention"),
            (
                "[kafka.topics]\nreplication_factor = 2\nmin_insync_replicas = 3\n",
                "kafka.topics.min_insync_replicas",
            ),
            (
                "[kafka.topics]\nreplication_factor = 0\n",
                "kafka.topics.replication_factor",
            ),
            ("[kafka.topics]\nreplicas = 3\n", "replicas"),
        ] {
            let src = ConfigSource::from_toml(toml).expect("loads");
            let err = src.section::<KafkaConfig>("kafka").expect_err(toml);
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
    fn file_and_environment_layer_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("storepulse.toml");
        std::fs::write(&path, "[kafka]\nbrokers = \"file:1\"\npartitions = 3\n").expect("write");
        figment::Jail::expect_with(|jail| {
            jail.set_env("STOREPULSE_KAFKA__BROKERS", "env:2");
            let src = ConfigSource::load(Some(&path)).expect("load");
            let k: KafkaConfig = src.section("kafka").expect("kafka");
            assert_eq!(k.brokers, "env:2", "env overrides file");
            assert_eq!(k.partitions, 3, "file overrides default");
            assert_eq!(k.produce_timeout_ms, 5_000, "default kept");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
    fn environment_errors_name_the_variable_and_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("STOREPULSE_OPS_WEBHOOK_SECRET", "s3cret");
            let err = ConfigSource::load(None)
                .expect_err("not a section")
                .to_string();
            assert!(
                err.contains("STOREPULSE_OPS_WEBHOOK_SECRET") && err.contains("__"),
                "{err}"
            );
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("STOREPULSE_KAFKA__PARTITIONS", "many");
            let src = ConfigSource::load(None).expect("load");
            let err = src
                .section::<KafkaConfig>("kafka")
                .expect_err("not a number")
                .to_string();
            assert!(
                err.contains(
                    "`kafka.partitions` (from environment variable STOREPULSE_KAFKA__PARTITIONS)"
                ),
                "{err}"
            );
            Ok(())
        });
    }
}
