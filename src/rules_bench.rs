//! The rules benchmarks: their fleet and rule set, and the end-to-end run
//! (`cargo bench --bench rules_e2e`).
//!
//! The fleet is shared with the engine's criterion benchmark (`benches/rules.rs`):
//! 10,000 entities (100 tenants × 10 stores × 10 freezers) and 1,000 rules in force
//! ([`rule_file`]: each tenant has its own 10 rules, so an event meets its tenant's
//! rules — threshold with hysteresis, absence, rate of change, cold-chain exposure —
//! and rules of other kinds and sources it must skip).
//!
//! The end-to-end run ([`run`]), on a throwaway Postgres cluster and broker
//! ([`crate::local_stack`]), measures three rates over the same records:
//! 1. **produce** — the readings, one per freezer per minute ([`freezer_temperature`]),
//!    checked and Avro-encoded as ingest publishes them ([`raw_produce::encode_posted`])
//!    and produced flat out ([`raw_produce::produce_flat_out`]): the broker's raw
//!    produce rate;
//! 2. **raw consume** — a plain consumer reads them back from the start of the
//!    topic, without decoding ([`consume_flat_out`]): what any consumer can get;
//! 3. **rules** — the rules service (its library, in this process, default
//!    settings, the 1,000 rules) consumes the topic from the start; its rate is the
//!    growth of the offsets it checkpoints in Postgres with its state (one
//!    transaction per batch), from its first commit to the last record, so the
//!    group join is not counted. Then the alert transitions it decided and
//!    published to `alerts.v1` are counted.
//!
//! The figures depend on the machine and on what else runs on it: the report
//! carries the load average at each measurement and the CPU the processes used
//! while the rules ran. Nothing here asserts a speed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use storepulse_ingest::validate::StoreIdentity;
use storepulse_rules::{RulesConfig, RulesSettings};
use storepulse_runtime::avro::AvroCodec;
use storepulse_runtime::db;
use storepulse_runtime::records::topic;
use storepulse_runtime::{KafkaConfig, PostgresConfig, kafka};
use tokio_util::sync::CancellationToken;

use crate::load::{WatchedProcess, cpu_seconds};
use crate::local_stack::{LocalBroker, LocalPostgres};
use crate::raw_produce::{self, EncodedEvent, ProduceRun};
use crate::read_store_bench::load_average;

/// Tenants of the fleet, each with its own 10 rules.
pub const TENANTS: usize = 100;
/// Stores per tenant.
pub const STORES: usize = 10;
/// Freezers per store.
pub const FREEZERS: usize = 10;
/// Entities (freezers) of the fleet.
pub const ENTITIES: usize = TENANTS * STORES * FREEZERS;
/// Rules in force: 10 per tenant.
pub const RULES: usize = TENANTS * 10;

/// The id of tenant `t`.
pub fn tenant_id(t: usize) -> String {
    format!("t{t}")
}

/// The id of store `s` (of any tenant).
pub fn store_id(s: usize) -> String {
    format!("s{s}")
}

/// The id of freezer `d` (of any store).
pub fn freezer_id(d: usize) -> String {
    format!("freezer-{d}")
}

/// The rule file: ten rules per tenant, [`RULES`] in all.
pub fn rule_file() -> String {
    let mut f = String::new();
    for t in 0..TENANTS {
        let tenant = tenant_id(t);
        let rules = format!(
            r#"
[[tenants.{tenant}.rules]]
name = "freezer-warm"
kind = "threshold"
match = {{ source = "sensor", kind = "temperature", labels = {{ appliance = "freezer" }} }}
above = -15
for = "10m"
clear = -17
clear_for = "5m"

[[tenants.{tenant}.rules]]
name = "freezer-critical"
kind = "threshold"
match = {{ source = "sensor", kind = "temperature", entities = ["freezer-*"] }}
above = -5
for = "2m"

[[tenants.{tenant}.rules]]
name = "sensor-silent"
kind = "absence"
match = {{ source = "sensor" }}
timeout = "15m"

[[tenants.{tenant}.rules]]
name = "freezer-rising"
kind = "rate_of_change"
match = {{ source = "sensor", kind = "temperature" }}
window = "10m"
rise = 3

[[tenants.{tenant}.rules]]
name = "exposure"
kind = "cold_chain"
match = {{ source = "sensor", kind = "temperature", labels = {{ appliance = "freezer" }} }}
limit = -12
budget = 60

[[tenants.{tenant}.rules]]
name = "humid"
kind = "threshold"
match = {{ source = "sensor", kind = "humidity" }}
above = 80

[[tenants.{tenant}.rules]]
name = "pos-offline"
kind = "absence"
match = {{ source = "heartbeat" }}
timeout = "2m"

[[tenants.{tenant}.rules]]
name = "store-silent"
kind = "absence"
match = {{ source = "any" }}
per = "store"
timeout = "10m"

[[tenants.{tenant}.rules]]
name = "low-stock"
kind = "stock"
match = {{ source = "inventory" }}
reorder_point = 5

[[tenants.{tenant}.rules]]
name = "sales-drop"
kind = "sales_anomaly"
match = {{ source = "sales" }}
"#
        );
        f.push_str(&rules);
    }
    f
}

/// The end-to-end run's reading of freezer `d` of store `s` of tenant `t` at
/// `minute`: -18 °C, except that every 7th freezer is at -10 °C for 12 minutes of
/// every 30 — long enough to fire `freezer-warm` (10 min), `freezer-rising` and
/// `exposure`, then cool long enough to resolve them.
pub fn freezer_temperature(t: usize, s: usize, d: usize, minute: usize) -> f64 {
    if (t + s + d).is_multiple_of(7) && minute % 30 < 12 {
        -10.0
    } else {
        -18.0
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct RulesE2eOptions {
    /// Sensor readings produced and consumed (one per freezer per minute).
    pub readings: usize,
    /// Partitions of every topic.
    pub partitions: i32,
    /// Under which the throwaway data lives (removed at the end).
    pub data_dir: PathBuf,
}

/// How a flat-out consume went.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ConsumeRun {
    pub records: usize,
    pub bytes: usize,
    /// Assignment to the last record.
    pub secs: f64,
    pub records_per_sec: f64,
}

/// CPU cores used by one process while the rules ran (CPU seconds / wall seconds).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CoresUsed {
    pub process: String,
    pub cores: f64,
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RulesE2eReport {
    pub readings: usize,
    pub entities: usize,
    pub rules: usize,
    pub partitions: i32,
    /// Ceiling 1: the broker's raw produce rate of the records.
    pub produce: ProduceRun,
    pub produce_load_average: f64,
    /// Ceiling 2: a plain consumer's rate over the same records.
    pub consume: ConsumeRun,
    pub consume_load_average: f64,
    /// Records consumed, evaluated and checkpointed by the rules in the timed span
    /// (after their first commit).
    pub rules_records: u64,
    pub rules_secs: f64,
    pub rules_records_per_sec: f64,
    pub rules_load_average: f64,
    /// CPU used meanwhile by this process (the rules service), Postgres (all
    /// backends) and the broker.
    pub rules_cores: Vec<CoresUsed>,
    /// Records per CPU-second of this process (the rules service).
    pub rules_records_per_core_sec: f64,
    /// `rules_applied_events_total` at the end (readings still within their store's
    /// allowed lateness stay buffered, not yet applied).
    pub applied: u64,
    /// `rules_late_events_total` at the end.
    pub late: u64,
    /// Alert transitions decided (`rules_transitions_total`), firing and resolved.
    pub firing: u64,
    pub resolved: u64,
    /// Records on `alerts.v1` once the outbox drained.
    pub alerts_published: i64,
    /// Batches the rules applied (`batch_apply_seconds` count) and their mean time
    /// to apply: evaluate, checkpoint, publish.
    pub batches: u64,
    pub batch_apply_mean_ms: f64,
    /// Stores whose evaluation state is checkpointed, and the state's mean size
    /// (JSON text, and as stored: `jsonb`, compressed when large).
    pub stores_checkpointed: i64,
    pub store_state_mean_json_bytes: f64,
    pub store_state_mean_stored_bytes: f64,
    /// How the stored state is compressed (`pglz`, `lz4`; none when small).
    pub store_state_compression: Option<String>,
}

impl RulesE2eReport {
    /// The rules' records/s as a share of the raw consume rate.
    pub fn share_of_consume(&self) -> f64 {
        self.rules_records_per_sec / self.consume.records_per_sec
    }
}

impl std::fmt::Display for RulesE2eReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "rules end to end: {} sensor readings over {} entities, {} rules in force, {} partitions",
            self.readings, self.entities, self.rules, self.partitions
        )?;
        writeln!(
            f,
            "  broker raw produce   {:>9.0} records/s  ({:.1} s, {:.1} MB; load avg {:.1})",
            self.produce.records_per_sec,
            self.produce.secs,
            self.produce.bytes as f64 / 1e6,
            self.produce_load_average
        )?;
        writeln!(
            f,
            "  broker raw consume   {:>9.0} records/s  ({:.1} s, {:.1} MB; load avg {:.1})",
            self.consume.records_per_sec,
            self.consume.secs,
            self.consume.bytes as f64 / 1e6,
            self.consume_load_average
        )?;
        writeln!(
            f,
            "  rules                {:>9.0} records/s  ({} records over {:.1} s; {:.0} records per CPU-second of the rules; load avg {:.1}) -> {:.0}% of raw consume",
            self.rules_records_per_sec,
            self.rules_records,
            self.rules_secs,
            self.rules_records_per_core_sec,
            self.rules_load_average,
            100.0 * self.share_of_consume()
        )?;
        writeln!(
            f,
            "    cores while the rules ran: {}",
            self.rules_cores
                .iter()
                .map(|c| format!("{} {:.2}", c.process, c.cores))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(
            f,
            "    applied {} (late {}), transitions decided: {} firing, {} resolved; {} records on alerts.v1",
            self.applied, self.late, self.firing, self.resolved, self.alerts_published
        )?;
        writeln!(
            f,
            "    {} batches, {:.1} ms each to apply (evaluate, checkpoint, publish); state of {} stores checkpointed, {:.0} bytes of JSON each ({:.0} stored, {})",
            self.batches,
            self.batch_apply_mean_ms,
            self.stores_checkpointed,
            self.store_state_mean_json_bytes,
            self.store_state_mean_stored_bytes,
            self.store_state_compression
                .as_deref()
                .unwrap_or("not compressed")
        )
    }
}

/// `count` readings, one per freezer per minute, minute by minute and store by
/// store (a store's gateway posts its freezers' readings of a minute together),
/// the last minute ending before `now`; checked and encoded as ingest does, as if
/// it had received each post live (2 s after its last reading), so the stream is
/// a replay of the fleet's last minutes rather than a backlog of late events.
pub fn encode_readings(count: usize, now: DateTime<Utc>) -> anyhow::Result<Vec<EncodedEvent>> {
    let codec = AvroCodec::new();
    let policy = storepulse_ingest::IngestSettings::default().validation_policy();
    let minutes = count.div_ceil(ENTITIES);
    let start = now - chrono::Duration::minutes(minutes as i64 + 1);
    let mut out = Vec::with_capacity(count);
    let mut post = Vec::with_capacity(FREEZERS);
    'minutes: for minute in 0..minutes {
        for t in 0..TENANTS {
            for s in 0..STORES {
                post.clear();
                let mut received = start;
                for d in 0..FREEZERS.min(count - out.len()) {
                    let at = start
                        + chrono::Duration::minutes(minute as i64)
                        + chrono::Duration::seconds(5 * d as i64);
                    received = at + chrono::Duration::seconds(2);
                    post.push(serde_json::json!({
                        "type": "sensor_reading",
                        "event_id": uuid::Uuid::new_v4().to_string(),
                        "store_id": store_id(s),
                        "occurred_at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        "device_id": freezer_id(d),
                        "kind": "temperature",
                        "value": freezer_temperature(t, s, d, minute),
                        "unit": "celsius",
                        "appliance": "freezer",
                    }));
                }
                let who = StoreIdentity {
                    tenant_id: tenant_id(t),
                    store_id: store_id(s),
                };
                raw_produce::encode_posted(&codec, policy, &who, &post, received, &mut out)?;
                if out.len() == count {
                    break 'minutes;
                }
            }
        }
    }
    Ok(out)
}

/// Reads `expected` records of `base_topic` from its start with one plain consumer
/// (partitions assigned, no group, no decoding; the fetch settings of the services'
/// consumers), timing the assignment to the last record.
pub async fn consume_flat_out(
    kafka: &KafkaConfig,
    base_topic: &str,
    expected: usize,
) -> anyhow::Result<ConsumeRun> {
    let kafka = kafka.clone();
    let name = kafka.topic(base_topic);
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = kafka::client_config(&kafka, "storepulse-raw-consume")
            .set("group.id", "storepulse-raw-consume")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", kafka.fetch_wait_max_ms.to_string())
            .set("fetch.min.bytes", kafka.fetch_min_bytes.to_string())
            .create()?;
        let mut assignment = TopicPartitionList::new();
        for p in partitions(&consumer, &name)? {
            assignment.add_partition_offset(&name, p, Offset::Beginning)?;
        }
        // Timed from the assignment: fetching starts then, in librdkafka's threads
        // (the connection is already up, from the metadata request).
        let start = Instant::now();
        consumer.assign(&assignment)?;
        let deadline = start + Duration::from_secs(300);
        let (mut records, mut bytes) = (0usize, 0usize);
        while records < expected {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {records} of {expected} records of {name} consumed within 5 minutes"
            );
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    records += 1;
                    bytes += m.payload_len();
                }
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
        }
        let secs = start.elapsed().as_secs_f64().max(1e-6);
        Ok(ConsumeRun {
            records,
            bytes,
            secs,
            records_per_sec: records as f64 / secs,
        })
    })
    .await?
}

/// The partitions of `topic`.
fn partitions(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let t = metadata
        .topics()
        .first()
        .with_context(|| format!("no metadata for {topic}"))?;
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// Records on `base_topic`: the sum of its partitions' end offsets.
async fn records_on(kafka: &KafkaConfig, base_topic: &str) -> anyhow::Result<i64> {
    let kafka = kafka.clone();
    let name = kafka.topic(base_topic);
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            kafka::client_config(&kafka, "storepulse-bench-watermarks").create()?;
        let mut total = 0;
        for p in partitions(&consumer, &name)? {
            let (low, high) = consumer.fetch_watermarks(&name, p, Duration::from_secs(10))?;
            total += high - low;
        }
        Ok(total)
    })
    .await?
}

/// The sum of the samples of metric `name` (with every label in `labels`) in a
/// Prometheus text exposition.
fn metric_sum(exposition: &str, name: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
                && labels.iter().all(|label| l.contains(label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0 // an empty sum is -0
}

/// Runs the benchmark once: its own Postgres cluster and broker, removed at the end.
pub async fn run(opts: &RulesE2eOptions) -> anyhow::Result<RulesE2eReport> {
    anyhow::ensure!(opts.readings > 0, "no readings to measure");
    std::fs::create_dir_all(&opts.data_dir)?;
    let root = tempfile::Builder::new()
        .prefix("bench-rules-e2e-")
        .tempdir_in(&opts.data_dir)?;
    let pg = LocalPostgres::start(&root.path().join("pg"), None)?;
    let postgres = PostgresConfig {
        url: pg.create_database("storepulse").await?,
        ..PostgresConfig::default()
    };
    let pool = db::pool(&postgres)?;
    // The service migrates its schema too; done here so its offsets can be watched
    // from the start.
    db::migrate_set(&pool, &storepulse_rules::checkpoint::MIGRATIONS).await?;
    let broker = LocalBroker::start(root.path(), "memory://nisshi/", None)?;
    let kafka = broker.kafka_config("", opts.partitions);
    crate::dev_stack::wait_for_broker(&kafka).await?;
    kafka::ensure_topics(&kafka, &topic::PROVISIONED, opts.partitions).await?;

    // 1. The readings, produced flat out.
    let readings = encode_readings(opts.readings, Utc::now())?;
    let produce_load_average = load_average();
    let produce = raw_produce::produce_flat_out(&kafka, &readings).await?;
    drop(readings);

    // 2. The same records, read back by a plain consumer.
    let consume_load_average = load_average();
    let consume = consume_flat_out(&kafka, topic::SENSOR_READINGS, opts.readings).await?;

    // 3. The rules service, from the start of the topics.
    let rules_file = root.path().join("rules.toml");
    std::fs::write(&rules_file, rule_file())?;
    let group = "storepulse-rules-bench".to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ops = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let config = RulesConfig {
        kafka: kafka.clone(),
        postgres: postgres.clone(),
        log: Default::default(),
        rules: RulesSettings {
            group_id: group.clone(),
            rules_file: rules_file.display().to_string(),
            ..Default::default()
        },
    };
    let rules = tokio::spawn(storepulse_rules::run_with_listener(
        config,
        listener,
        shutdown.clone(),
    ));
    let watched = [
        WatchedProcess {
            name: "rules (this process)".into(),
            pid: std::process::id(),
            with_children: false,
        },
        WatchedProcess {
            name: "postgres".into(),
            pid: pg.pid(),
            with_children: true,
        },
        WatchedProcess {
            name: "broker".into(),
            pid: broker.pid(),
            with_children: false,
        },
    ];
    let client = pool.get().await?;
    let checkpointed = || async {
        let row = client
            .query_one(
                "SELECT coalesce(sum(next_offset), 0)::bigint FROM rules.offsets WHERE consumer_group = $1",
                &[&group],
            )
            .await?;
        anyhow::Ok(row.get::<_, i64>(0))
    };
    let total = opts.readings as i64;
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut first: Option<(Instant, i64, Vec<f64>, f64)> = None;
    let done = loop {
        anyhow::ensure!(
            !rules.is_finished(),
            "the rules service stopped: {:?}",
            rules.await
        );
        anyhow::ensure!(
            Instant::now() < deadline,
            "the rules did not checkpoint {total} records within 15 minutes"
        );
        let n = checkpointed().await?;
        let now = Instant::now();
        if first.is_none() && n > 0 {
            first = Some((now, n, cpu_seconds(&watched), load_average()));
        }
        if n >= total {
            break (now, cpu_seconds(&watched));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (t0, n0, cpu0, rules_load_average) = first.context("no commit seen")?;
    let rules_secs = done.0.duration_since(t0).as_secs_f64().max(1e-6);
    let rules_records = (total - n0) as u64;
    let rules_cores: Vec<CoresUsed> = watched
        .iter()
        .zip(done.1.iter().zip(&cpu0))
        .map(|(p, (end, start))| CoresUsed {
            process: p.name.clone(),
            cores: (end - start) / rules_secs,
        })
        .collect();

    // The decided transitions, once all are on alerts.v1.
    let deadline = Instant::now() + Duration::from_secs(120);
    let metrics = loop {
        let text = reqwest::get(format!("{ops}/metrics")).await?.text().await?;
        if metric_sum(&text, "storepulse_rules_outbox_records", &[]) == 0.0 {
            break text;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the rules' outbox did not drain within 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let alerts_published = records_on(&kafka, topic::ALERTS).await?;
    shutdown.cancel();
    rules.await??;
    let state = client
        .query_one(
            "SELECT count(*), coalesce(avg(length(state::text)), 0)::float8, \
                    coalesce(avg(pg_column_size(state)), 0)::float8, \
                    max(pg_column_compression(state)) \
             FROM rules.store_state WHERE consumer_group = $1",
            &[&group],
        )
        .await?;
    let batches = metric_sum(&metrics, "storepulse_batch_apply_seconds_count", &[]);
    let batch_seconds = metric_sum(&metrics, "storepulse_batch_apply_seconds_sum", &[]);

    Ok(RulesE2eReport {
        readings: opts.readings,
        entities: ENTITIES,
        rules: RULES,
        partitions: opts.partitions,
        produce,
        produce_load_average,
        consume,
        consume_load_average,
        rules_records,
        rules_secs,
        rules_records_per_sec: rules_records as f64 / rules_secs,
        rules_load_average,
        rules_records_per_core_sec: rules_records as f64 / (rules_cores[0].cores * rules_secs),
        rules_cores,
        applied: metric_sum(&metrics, "storepulse_rules_applied_events_total", &[]) as u64,
        late: metric_sum(&metrics, "storepulse_rules_late_events_total", &[]) as u64,
        firing: metric_sum(
            &metrics,
            "storepulse_rules_transitions_total",
            &["state=\"firing\""],
        ) as u64,
        resolved: metric_sum(
            &metrics,
            "storepulse_rules_transitions_total",
            &["state=\"resolved\""],
        ) as u64,
        alerts_published,
        batches: batches as u64,
        batch_apply_mean_ms: 1000.0 * batch_seconds / batches.max(1.0),
        stores_checkpointed: state.get(0),
        store_state_mean_json_bytes: state.get(1),
        store_state_mean_stored_bytes: state.get(2),
        store_state_compression: state.get(3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_file_has_a_thousand_rules() {
        let rules = storepulse_rules::rule_file::RuleSet::parse(&rule_file()).expect("valid");
        assert_eq!(rules.count(), RULES);
    }

    #[test]
    fn readings_cover_every_freezer_each_minute_as_ingest_encodes_them() {
        let readings = encode_readings(ENTITIES + 15, Utc::now()).expect("valid readings");
        assert_eq!(readings.len(), ENTITIES + 15);
        assert!(
            readings
                .iter()
                .all(|r| r.topic == topic::SENSOR_READINGS && !r.payload.is_empty())
        );
        let stores: std::collections::BTreeSet<&str> =
            readings.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(stores.len(), TENANTS * STORES);
        assert_eq!(readings[ENTITIES].key, "t0/s0");
    }

    #[test]
    fn metric_sum_adds_the_matching_samples_only() {
        let text = "storepulse_x_total{service=\"rules\",state=\"firing\"} 3\n\
                    storepulse_x_total{service=\"rules\",state=\"resolved\"} 2\n\
                    storepulse_x_total_other 7\n";
        assert_eq!(metric_sum(text, "storepulse_x_total", &[]), 5.0);
        assert_eq!(
            metric_sum(text, "storepulse_x_total", &["state=\"firing\""]),
            3.0
        );
        assert_eq!(metric_sum(text, "storepulse_y", &[]), 0.0);
    }
}
