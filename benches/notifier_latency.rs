//! Added latency of the notifier: from an alert record produced on alerts.v1 to the
//! webhook call that carries it, at a steady 100 alerts/s, with `group_wait = "0s"`
//! (so it measures the pipeline, not the policy's waiting). Starts its own Postgres
//! and broker (like `storepulse dev`), the notifier in-process with its default
//! settings, and a local webhook that notes when each alert arrives.
//!
//! `cargo bench --bench notifier_latency` (`NOTIFIER_BENCH_SECONDS`, default 20)
//!
//! Each alert's `occurred_at` is stamped just before it is produced (the bench's
//! producer does not linger), so a latency is the webhook's arrival time minus that:
//! it includes the produce itself (its acknowledgement time is printed apart). Each
//! alert has its own `alert_id` and group (`group_by = ["subject"]`), so every alert
//! is one webhook call. A warm-up (100 alerts, every one delivered before measuring
//! starts: the notifier has joined its group and its connections are open) is left
//! out. The figures are over the measured alerts only, and only when every one of
//! them reached the webhook exactly once and the ledger says every alert delivered
//! (checked after the notifier stopped, so a late duplicate would be seen).
//! Prints the count measured, the send rate achieved, p50/p90/p99/max, the two legs
//! split at the ledger row's `received_at` (when the router's transaction recorded
//! the alert: fetch + routing before it, the delivery worker after it), and the load
//! average before and after (the machine may be shared).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use storepulse::dev_stack::wait_for_broker;
use storepulse::local_stack::{self, LocalBroker, LocalPostgres};
use storepulse_notifier::{NotifierConfig, NotifierSettings};
use storepulse_runtime::records::{AlertTransition, topic};
use storepulse_runtime::{AvroCodec, EventProducer, PostgresConfig, ProducerMetrics, kafka};
use tokio_util::sync::CancellationToken;

const RATE_PER_SEC: u64 = 100;
const WARMUP: usize = 100;
/// Longest wait for the warm-up, or for the measured alerts after the last send.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(120);

fn alert_id(i: usize) -> String {
    format!("lat-{i}")
}

fn alert(i: usize, occurred_at: i64) -> AlertTransition {
    serde_json::from_value(serde_json::json!({
        "envelope": {"event_id": uuid::Uuid::new_v4().to_string(), "tenant_id": "acme",
                     "store_id": format!("store-{:03}", i % 300),
                     "occurred_at": occurred_at, "received_at": occurred_at, "source": "bench"},
        "alert_id": alert_id(i), "rule_id": "pos-offline", "state": "Firing",
        "severity": "Warning", "subject": format!("pos-{i}"), "summary": "terminal silent",
        "value": null, "started_at": occurred_at, "labels": {},
    }))
    .expect("bench alert")
}

/// Nearest-rank percentile of sorted values (`p` in 0..=1).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// One webhook arrival of an alert: its `occurred_at` (stamped when produced) and
/// when the webhook got it.
type Arrival = (DateTime<Utc>, DateTime<Utc>);

/// Every webhook arrival, by alert id (more than one: a duplicate).
#[derive(Default)]
struct Arrivals {
    by_alert: HashMap<String, Vec<Arrival>>,
    calls: usize,
}

impl Arrivals {
    fn delivered(&self, ids: &[String]) -> usize {
        ids.iter()
            .filter(|id| self.by_alert.contains_key(id.as_str()))
            .count()
    }
}

fn lock(a: &Mutex<Arrivals>) -> std::sync::MutexGuard<'_, Arrivals> {
    a.lock().unwrap_or_else(|e| e.into_inner())
}

async fn await_delivery(
    arrivals: &Mutex<Arrivals>,
    ids: &[String],
    what: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    loop {
        let n = lock(arrivals).delivered(ids);
        if n == ids.len() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: only {n} of {} alerts reached the webhook within {DELIVERY_DEADLINE:?}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let seconds: u64 = std::env::var("NOTIFIER_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    local_stack::ensure_nisshi()?;
    let dir = tempfile::tempdir()?;
    let pg = LocalPostgres::start(&dir.path().join("pg"), None)?;
    let url = pg.create_database("bench").await?;
    let broker = LocalBroker::start(dir.path(), "memory://nisshi/", None)?;
    let kafka_cfg = broker.kafka_config("bench.", 4);
    wait_for_broker(&kafka_cfg).await?;
    kafka::ensure_topics(&kafka_cfg, &topic::PROVISIONED, 4).await?;

    // The webhook: when each alert arrives, as latency from its occurred_at, in ms.
    let arrivals: Arc<Mutex<Arrivals>> = Arc::default();
    let sink = arrivals.clone();
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let sink = sink.clone();
        async move {
            let now = Utc::now();
            let v: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => return (axum::http::StatusCode::BAD_REQUEST, "not json"),
            };
            let mut a = lock(&sink);
            a.calls += 1;
            for alert in v["alerts"].as_array().into_iter().flatten() {
                let (Some(id), Some(t)) = (
                    alert["alert_id"].as_str(),
                    alert["occurred_at"]
                        .as_str()
                        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()),
                ) else {
                    continue;
                };
                a.by_alert
                    .entry(id.to_string())
                    .or_default()
                    .push((t.with_timezone(&Utc), now));
            }
            (axum::http::StatusCode::OK, "ok")
        }
    });
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hook", hook.local_addr()?);
    tokio::spawn(async move { axum::serve(hook, app).await });

    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[route]\nreceiver = \"hook\"\ngroup_wait = \"0s\"\ngroup_by = [\"subject\"]\n\
             [[receivers]]\nname = \"hook\"\n[[receivers.channels]]\ntype = \"webhook\"\nurl = \"{hook_url}\"\n"
        ),
    )?;
    let shutdown = CancellationToken::new();
    let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let notifier = tokio::spawn(storepulse_notifier::run_with_listener(
        NotifierConfig {
            kafka: kafka_cfg.clone(),
            postgres: PostgresConfig {
                url: url.clone(),
                ..PostgresConfig::default()
            },
            log: Default::default(),
            notifier: NotifierSettings {
                policy_file: policy,
                ..Default::default()
            },
        },
        ops,
        shutdown.clone(),
    ));

    let mut producer_cfg = kafka_cfg.clone();
    producer_cfg.producer_linger_ms = 0;
    let producer = EventProducer::new(
        &producer_cfg,
        "notifier-bench",
        AvroCodec::new(),
        ProducerMetrics::register(&prometheus::Registry::new())?,
    )?;

    // Warm-up: the notifier has joined its group and delivers before measuring.
    let warmup_ids: Vec<String> = (0..WARMUP).map(alert_id).collect();
    for i in 0..WARMUP {
        producer
            .send(&alert(i, Utc::now().timestamp_micros()))
            .await?;
    }
    await_delivery(&arrivals, &warmup_ids, "warm-up").await?;

    let load_before = load_average();
    let total = (seconds * RATE_PER_SEC) as usize;
    let measured_ids: Vec<String> = (WARMUP..WARMUP + total).map(alert_id).collect();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SEC));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sends = Vec::with_capacity(total);
    let started = Instant::now();
    for i in WARMUP..WARMUP + total {
        tick.tick().await;
        let p = producer.clone();
        let stamp = Utc::now();
        let a = alert(i, stamp.timestamp_micros());
        sends.push(tokio::spawn(async move {
            p.send(&a).await?;
            let acked = (Utc::now() - stamp).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            anyhow::Ok(acked)
        }));
    }
    let send_secs = started.elapsed().as_secs_f64();
    let mut acks = Vec::with_capacity(total);
    for s in sends {
        acks.push(s.await??);
    }
    await_delivery(&arrivals, &measured_ids, "measurement").await?;
    let load_after = load_average();

    // Stop the notifier before checking, so nothing can arrive after the check.
    shutdown.cancel();
    notifier.await??;
    let arrivals = std::mem::take(&mut *lock(&arrivals));
    let duplicates: Vec<(&String, usize)> = arrivals
        .by_alert
        .iter()
        .filter(|(_, l)| l.len() > 1)
        .map(|(id, l)| (id, l.len()))
        .collect();
    anyhow::ensure!(
        duplicates.is_empty(),
        "{} alerts reached the webhook more than once, e.g. {:?}",
        duplicates.len(),
        &duplicates[..duplicates.len().min(5)]
    );
    let expected = WARMUP + total;
    anyhow::ensure!(
        arrivals.by_alert.len() == expected && arrivals.calls == expected,
        "the webhook saw {} alerts in {} calls; {expected} were produced",
        arrivals.by_alert.len(),
        arrivals.calls
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT status, count(*) FROM notifier.deliveries GROUP BY status",
            &[],
        )
        .await?;
    // When the router recorded each alert in the ledger (its transaction's start).
    let recorded: HashMap<String, DateTime<Utc>> = client
        .query("SELECT alert_id, received_at FROM notifier.deliveries", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let statuses: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    anyhow::ensure!(
        statuses == [("delivered".to_string(), expected as i64)],
        "the ledger should say all {expected} delivered, says {statuses:?}"
    );

    let ms = |from: DateTime<Utc>, to: DateTime<Utc>| {
        (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
    };
    let (mut measured, mut to_ledger, mut from_ledger) = (Vec::new(), Vec::new(), Vec::new());
    for id in &measured_ids {
        let (produced, arrived) = arrivals.by_alert[id.as_str()][0];
        let in_ledger = *recorded
            .get(id.as_str())
            .ok_or_else(|| anyhow::anyhow!("{id} is not in the ledger"))?;
        measured.push(ms(produced, arrived));
        to_ledger.push(ms(produced, in_ledger));
        from_ledger.push(ms(in_ledger, arrived));
    }
    for v in [&mut measured, &mut to_ledger, &mut from_ledger, &mut acks] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "notifier latency, alert record produced -> webhook call, {} alerts measured \
         (after {WARMUP} warm-up, each delivered exactly once) sent over {send_secs:.1} s \
         ({:.1}/s, target {RATE_PER_SEC}/s): p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        measured.len(),
        total as f64 / send_secs,
        percentile(&measured, 0.50),
        percentile(&measured, 0.90),
        percentile(&measured, 0.99),
        measured.last().copied().unwrap_or(0.0),
    );
    println!(
        "  of which producing the alert (stamp -> broker ack): p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        percentile(&acks, 0.50),
        percentile(&acks, 0.99),
        acks.last().copied().unwrap_or(0.0),
    );
    println!(
        "  legs: produced -> recorded in the ledger (consumer + routing): p50 {:.1} ms  p99 {:.1} ms; \
         recorded -> webhook call (delivery worker): p50 {:.1} ms  p99 {:.1} ms",
        percentile(&to_ledger, 0.50),
        percentile(&to_ledger, 0.99),
        percentile(&from_ledger, 0.50),
        percentile(&from_ledger, 0.99),
    );
    println!("  load average (1/5/15 min) before: {load_before}  after: {load_after}");
    drop(client);
    drop(broker);
    drop(pg);
    Ok(())
}
