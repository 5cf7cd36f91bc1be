//! `storepulse dev`: the whole pipeline on one machine with simulated stores.
//!
//! Starts a throwaway Postgres and broker, creates topics, migrates, runs every
//! service in-process, mints API keys for the simulated stores, and posts their
//! events through the ingest API, showing live what flows. Ctrl-C stops the
//! services (each finishes and commits its in-flight work), then the broker and
//! Postgres, and removes the data directory.
//!
//! A service that stops on its own (an error, a panic, or a return before Ctrl-C)
//! is shown at once: a live line naming it and why, repeated in every live line
//! after, and a log line on stderr. The other services keep running so the state
//! can be inspected; `dev` then exits with an error status after Ctrl-C.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use storepulse_runtime::records::topic;
use storepulse_runtime::vocabulary::{EventType, Vocabulary};
use storepulse_runtime::{KafkaConfig, LogConfig, PostgresConfig, db, kafka};
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;
use crate::local_stack::{self, LocalBroker, LocalPostgres};
use crate::simulator::{SimConfig, Simulator};

/// The rule file `storepulse dev` runs: the documented example.
pub const DEV_RULES: &str = include_str!("../config/rules.example.toml");

/// Prints every alert transition on `alerts.v1` as one line, until `shutdown`.
async fn print_alerts(kafka: KafkaConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use storepulse_runtime::records::{AlertState, AlertTransition};

    let consumer: StreamConsumer =
        storepulse_runtime::kafka::client_config(&kafka, "storepulse-dev-alerts")
            .set(
                "group.id",
                format!("storepulse-dev-alerts-{}", uuid::Uuid::new_v4()),
            )
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
    consumer.subscribe(&[&kafka.topic(topic::ALERTS)])?;
    let codec = storepulse_runtime::AvroCodec::new();
    loop {
        let m = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = consumer.recv() => m,
        };
        let Ok(m) = m else { continue };
        let Ok(a) = codec.decode::<AlertTransition>(m.payload().unwrap_or_default()) else {
            continue;
        };
        let at = chrono::DateTime::from_timestamp_micros(a.envelope.occurred_at)
            .map(|t| t.format("%H:%M:%S").to_string())
            .unwrap_or_default();
        let state = match a.state {
            AlertState::Firing => "FIRING  ",
            AlertState::Resolved => "resolved",
        };
        println!(
            "ALERT {state} {at} {:?} {}/{} {}: {}",
            a.severity, a.envelope.store_id, a.subject, a.rule_id, a.summary
        );
    }
}

/// Options of `storepulse dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    pub stores: usize,
    pub rate: u32,
    pub seed: u64,
    pub ingest_port: u16,
    pub backfill_hours: i64,
    pub data_dir: PathBuf,
    pub tenant_id: String,
}

/// The topic an event posted with `type` lands on (unknown types: the sensor topic,
/// only for the live statistics).
fn topic_of(ty: &str) -> &'static str {
    EventType::parse(ty).map_or(topic::SENSOR_READINGS, EventType::topic)
}

/// How an in-process service task ended, for people: the error's Display chain on
/// one line, a panic's message, or a note that it returned.
pub fn describe_exit(outcome: &Result<anyhow::Result<()>, tokio::task::JoinError>) -> String {
    let text = match outcome {
        Ok(Ok(())) => "returned without an error".to_string(),
        Ok(Err(e)) => error_chain(e),
        Err(e) if e.is_panic() => {
            format!("panicked: {e}")
        }
        Err(e) => format!("task failed: {e}"),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An error and its causes on one line, `: `-separated, leaving out a cause whose
/// text the message before it already includes (errors that print their source).
fn error_chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !parts.last().is_some_and(|prev| prev.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// The tail of the live line: every stopped service and why, in name order.
/// Empty while every service runs.
pub fn stopped_suffix(stopped: &BTreeMap<&'static str, String>) -> String {
    stopped
        .iter()
        .map(|(name, why)| format!(" | {name} STOPPED: {why}"))
        .collect()
}

type ServiceExit = (
    &'static str,
    Result<anyhow::Result<()>, tokio::task::JoinError>,
);
type Running = FuturesUnordered<Pin<Box<dyn Future<Output = ServiceExit> + Send>>>;

/// Spawns a service and adds its end (name, outcome) to `running`.
fn spawn_service<F>(running: &mut Running, name: &'static str, service: F)
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let handle = tokio::spawn(service);
    running.push(Box::pin(async move { (name, handle.await) }));
}

/// Why the service behind `readyz_url` is not ready (its failing checks), or `None`
/// when it is ready or cannot be asked (a stopped service is reported as stopped).
async fn not_ready(readyz_url: &str) -> Option<String> {
    let resp = reqwest::get(readyz_url).await.ok()?;
    if resp.status().is_success() {
        return None;
    }
    let body = resp.text().await.unwrap_or_default();
    Some(failing_checks(&body))
}

/// The lines of a `/readyz` body that are not `name: ok`, on one line.
fn failing_checks(body: &str) -> String {
    body.lines()
        .filter(|l| !l.trim().is_empty() && !l.ends_with(": ok"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs the dev stack until `shutdown`.
pub async fn run(opts: DevOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    local_stack::ensure_nisshi()?;
    std::fs::create_dir_all(&opts.data_dir)?;
    let root = tempfile::Builder::new()
        .prefix("dev-")
        .tempdir_in(&opts.data_dir)
        .context("create the data directory")?;
    eprintln!(
        "starting Postgres and the broker in {} ...",
        root.path().display()
    );
    let pg = LocalPostgres::start(&root.path().join("pg"), None)?;
    let database_url = pg.create_database("storepulse").await?;
    let broker = LocalBroker::start(root.path(), "memory://nisshi/", None)?;
    let kafka_cfg = broker.kafka_config("", 6);
    wait_for_broker(&kafka_cfg).await?;
    kafka::ensure_topics(&kafka_cfg, &topic::PROVISIONED, kafka_cfg.partitions).await?;
    let postgres = PostgresConfig {
        url: database_url.clone(),
        ..PostgresConfig::default()
    };
    let pool = db::pool(&postgres)?;
    db::migrate(&pool).await?;
    let flavour = db::flavour(&pool).await?;
    let read_store = match flavour {
        db::Flavour::TimescaleDb => {
            "TimescaleDB: raw hypertables, continuous aggregates with real-time aggregation"
        }
        db::Flavour::Plain => {
            "plain PostgreSQL (TimescaleDB is not installed; scripts/install-deps.sh builds it): partitioned raw tables, rollups kept by the compactor"
        }
    };
    eprintln!("read store: {read_store}");

    let log = LogConfig {
        format: storepulse_runtime::config::LogFormat::Text,
        filter: "warn".into(),
    };
    let services = CancellationToken::new();
    let mut running = Running::new();
    let ingest_addr = format!("127.0.0.1:{}", opts.ingest_port);
    let ingest_listener = match tokio::net::TcpListener::bind(&ingest_addr).await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    };
    let ingest_url = format!("http://{}", ingest_listener.local_addr()?);
    let ingest_cfg = storepulse_ingest::IngestConfig {
        kafka: kafka_cfg.clone(),
        postgres: postgres.clone(),
        log: log.clone(),
        ingest: storepulse_ingest::IngestSettings {
            rate_limit_events_per_sec: 100_000.0,
            rate_limit_burst: 100_000.0,
            ..Default::default()
        },
    };
    spawn_service(
        &mut running,
        "ingest",
        storepulse_ingest::run_with_listener(ingest_cfg, ingest_listener, services.clone()),
    );
    let compactor_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let compactor_addr = compactor_listener.local_addr()?;
    let compactor_cfg = storepulse_compactor::CompactorConfig {
        kafka: kafka_cfg.clone(),
        postgres: postgres.clone(),
        log: log.clone(),
        compactor: Default::default(),
    };
    spawn_service(
        &mut running,
        "compactor",
        storepulse_compactor::run_with_listener(
            compactor_cfg,
            compactor_listener,
            services.clone(),
        ),
    );
    // The rules run the example rule file, copied where the newcomer can edit it:
    // changes are picked up live.
    let rules_file = root.path().join("rules.toml");
    std::fs::write(&rules_file, DEV_RULES).context("write the dev rule file")?;
    let rules_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let rules_addr = rules_listener.local_addr()?;
    let rules_cfg = storepulse_rules::RulesConfig {
        kafka: kafka_cfg.clone(),
        postgres: postgres.clone(),
        log: log.clone(),
        rules: storepulse_rules::RulesSettings {
            rules_file: rules_file.display().to_string(),
            ..Default::default()
        },
    };
    spawn_service(
        &mut running,
        "rules",
        storepulse_rules::run_with_listener(rules_cfg, rules_listener, services.clone()),
    );
    spawn_service(
        &mut running,
        "alerts-tail",
        print_alerts(kafka_cfg.clone(), services.clone()),
    );
    // The forecaster scans often in dev so forecasts show within seconds.
    let forecaster_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let forecaster_addr = forecaster_listener.local_addr()?;
    let forecaster_cfg = storepulse_forecaster::ForecasterConfig {
        kafka: kafka_cfg.clone(),
        postgres: postgres.clone(),
        log: log.clone(),
        forecaster: storepulse_forecaster::ForecasterSettings {
            scan_interval_ms: 2_000,
            refresh_after_lines: 20,
            min_republish_secs: 60,
            ..Default::default()
        },
    };
    spawn_service(
        &mut running,
        "forecaster",
        storepulse_forecaster::run_with_listener(
            forecaster_cfg,
            forecaster_listener,
            services.clone(),
        ),
    );
    // The notifier runs a policy sending every alert to a local webhook that prints
    // each notification (NOTIFY lines); the policy file is editable, reloaded live.
    let sink_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_url = format!("http://{}", sink_listener.local_addr()?);
    spawn_service(
        &mut running,
        "notification-sink",
        crate::notification_sink::serve(sink_listener, services.clone()),
    );
    let notifier_policy = root.path().join("notifier.toml");
    std::fs::write(
        &notifier_policy,
        crate::notification_sink::DEV_NOTIFIER_POLICY.replace("{sink}", &sink_url),
    )
    .context("write the dev notification policy")?;
    let notifier_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let notifier_addr = notifier_listener.local_addr()?;
    let notifier_cfg = storepulse_notifier::NotifierConfig {
        kafka: kafka_cfg.clone(),
        postgres: postgres.clone(),
        log: log.clone(),
        notifier: storepulse_notifier::NotifierSettings {
            policy_file: notifier_policy.clone(),
            ..Default::default()
        },
    };
    spawn_service(
        &mut running,
        "notifier",
        storepulse_notifier::run_with_listener(notifier_cfg, notifier_listener, services.clone()),
    );

    let mut sim = Simulator::new(SimConfig {
        tenant_id: opts.tenant_id.clone(),
        stores: opts.stores,
        seed: opts.seed,
        start: Utc::now() - chrono::Duration::hours(opts.backfill_hours),
        invalid_ratio: 0.002,
    });
    let mut keys = HashMap::new();
    let mut sample_key = String::new();
    for store in sim.store_ids() {
        let k = storepulse_ingest::api_keys::create(&pool, &opts.tenant_id, &store, "simulator")
            .await?;
        if sample_key.is_empty() {
            sample_key = format!("{} (store {store})", k.token);
        }
        keys.insert(store, k.token);
    }
    let gateway = Gateway::new(&ingest_url, keys);

    println!();
    println!(
        "StorePulse is running ({} simulated stores, up to {} events/s).",
        opts.stores, opts.rate
    );
    println!("  ingest API : {ingest_url}/v1/events   (metrics: {ingest_url}/metrics)");
    println!("  sample key : {sample_key}");
    println!("  read store : {flavour}");
    println!("  Postgres   : psql {database_url}");
    println!("  broker     : {}", kafka_cfg.brokers);
    println!("  compactor  : http://{compactor_addr}/metrics");
    println!(
        "  forecaster : http://{forecaster_addr}/metrics   (forecasts: forecast_daily in Postgres)"
    );
    println!(
        "  rules      : {} (edit it: reloaded live)   metrics: http://{rules_addr}/metrics",
        rules_file.display()
    );
    println!("  alerts     : printed below as they fire and resolve (topic alerts.v1)");
    println!(
        "  notifier   : {} (edit it: reloaded live)   metrics: http://{notifier_addr}/metrics",
        notifier_policy.display()
    );
    println!(
        "               its notifications print below as NOTIFY lines (webhook {sink_url}/notify)"
    );
    println!("Press Ctrl-C to stop.\n");

    let mut per_topic: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut last_report = Instant::now();
    let mut last_counts = per_topic.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let per_tick = (opts.rate as usize / 10).max(1);
    // Services that stopped before Ctrl-C, and why.
    let mut stopped: BTreeMap<&'static str, String> = BTreeMap::new();
    while !shutdown.is_cancelled() {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some((name, outcome)) = running.next() => {
                let why = describe_exit(&outcome);
                eprintln!(
                    "{} service {name} stopped: {why}",
                    Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
                );
                stopped.insert(name, why);
                println!(
                    "rows in Postgres {}{} | the other services keep running; Ctrl-C stops all",
                    rows_written(&pool).await.unwrap_or(0),
                    stopped_suffix(&stopped)
                );
                continue;
            }
            _ = tick.tick() => {}
        }
        let now = Utc::now();
        let mut batch = Vec::new();
        while batch.len() < per_tick && sim.peek_time().is_some_and(|t| t <= now) {
            batch.push(sim.next_event());
        }
        for e in &batch {
            *per_topic
                .entry(topic_of(e.json["type"].as_str().unwrap_or("")))
                .or_default() += 1;
        }
        if !batch.is_empty()
            && let Err(e) = gateway.post_all(&batch, 500, 8).await
        {
            eprintln!("posting failed: {e}");
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            let secs = last_report.elapsed().as_secs_f64();
            let rates: Vec<String> = per_topic
                .iter()
                .map(|(t, n)| {
                    format!(
                        "{t} {:.0}/s",
                        (n - last_counts.get(t).copied().unwrap_or(0)) as f64 / secs
                    )
                })
                .collect();
            let rows = rows_written(&pool).await.unwrap_or(0);
            let readiness = not_ready(&format!("http://{compactor_addr}/readyz"))
                .await
                .map(|why| format!(" | compactor NOT READY: {why}"))
                .unwrap_or_default();
            println!(
                "{} | rows in Postgres {rows} | accepted {} rejected {} | sim time {}{}{readiness}",
                rates.join("  "),
                gateway.stats.accepted.load(Ordering::Relaxed),
                gateway.stats.rejected.load(Ordering::Relaxed),
                sim.peek_time()
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default(),
                stopped_suffix(&stopped),
            );
            last_counts = per_topic.clone();
            last_report = Instant::now();
        }
    }

    eprintln!("stopping services ...");
    services.cancel();
    while let Some((name, outcome)) = running.next().await {
        if !matches!(outcome, Ok(Ok(()))) {
            let why = describe_exit(&outcome);
            eprintln!("service {name} ended with an error while stopping: {why}");
            stopped.insert(name, why);
        }
    }
    drop(pool);
    drop(broker);
    drop(pg);
    eprintln!("stopped; removed {}", root.path().display());
    if !stopped.is_empty() {
        let names: Vec<&str> = stopped.keys().copied().collect();
        anyhow::bail!(
            "services stopped before Ctrl-C or failed while stopping: {}",
            names.join(", ")
        );
    }
    Ok(())
}

async fn rows_written(pool: &deadpool_postgres::Pool) -> anyhow::Result<i64> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            // Raw relations are partitioned (chunks on TimescaleDB): their rows are
            // in the partitions.
            "SELECT coalesce(sum(s.n_tup_ins), 0)::bigint FROM pg_stat_user_tables s
             WHERE s.relid IN (SELECT i.inhrelid FROM pg_inherits i
                               JOIN raw_relations r
                                 ON i.inhparent = format('public.%I', r.relation)::regclass)",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Waits until the broker answers metadata requests.
pub async fn wait_for_broker(cfg: &KafkaConfig) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match kafka::probe(cfg, Duration::from_secs(2)).await {
            Ok(n) if n > 0 => return Ok(()),
            Ok(_) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(_) => anyhow::bail!("broker lists no brokers"),
            Err(e) => anyhow::bail!("broker not reachable: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn not_ready_shows_only_the_failing_checks() {
        let body = "kafka: ok\npostgres: ok\nconsumer: partition x/2 paused at offset 9: unknown writer schema\n";
        assert_eq!(
            super::failing_checks(body),
            "consumer: partition x/2 paused at offset 9: unknown writer schema"
        );
    }

    use super::*;

    #[tokio::test]
    async fn a_stopped_service_is_named_with_its_reason() {
        let mut stopped = BTreeMap::new();
        assert_eq!(stopped_suffix(&stopped), "", "nothing while all run");

        #[derive(Debug, thiserror::Error)]
        #[error("applying a batch failed: {0}")]
        struct PrintsItsSource(#[source] std::io::Error);
        let cause = std::io::Error::other("relation \"sensor_readings\" does not exist (42P01)");
        let failed: Result<anyhow::Result<()>, _> = Ok(Err(anyhow::Error::new(PrintsItsSource(
            cause,
        ))
        .context("apply batch\n  of 12 records")));
        stopped.insert("compactor", describe_exit(&failed));
        let panicked: Result<anyhow::Result<()>, tokio::task::JoinError> =
            tokio::spawn(async { panic!("boom") }).await;
        stopped.insert("rules", describe_exit(&panicked));
        let returned: Result<anyhow::Result<()>, tokio::task::JoinError> = Ok(Ok(()));
        stopped.insert("notifier", describe_exit(&returned));

        let line = stopped_suffix(&stopped);
        let parts: Vec<&str> = line.split(" | ").collect();
        assert_eq!(parts[0], "", "{line}");
        assert_eq!(
            parts[1],
            "compactor STOPPED: apply batch of 12 records: applying a batch failed: relation \"sensor_readings\" does not exist (42P01)"
        );
        assert_eq!(parts[2], "notifier STOPPED: returned without an error");
        assert!(
            parts[3].starts_with("rules STOPPED: panicked") && parts[3].contains("boom"),
            "{line}"
        );
        assert_eq!(parts.len(), 4, "{line}");
    }
}
