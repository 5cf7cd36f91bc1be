//! Added latency of the notifier: from an alert record produced on alerts.v1 to the
//! webhook call that carries it, at a steady 100 alerts/s, with `group_wait = "0s"`
//! (so it measures the pipeline, not the policy's waiting). Starts its own Postgres
//! and broker (like `storepulse dev`), the notifier in-process with its default
//! settings, and a local webhook that notes when each alert arrives.
//!
//! `cargo bench --bench notifier_latency` (`NOTIFIER_BENCH_SECONDS`, default 20)
//!
//! Each alert's `occurred_at` is stamped just before it is produced (the bench's
//! producer does not linger); the latency is the webhook's arrival time minus that.
//! Prints p50, p90, p99 and max over all alerts sent after a warm-up (100 alerts,
//! all delivered before measuring starts).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use chrono::Utc;
use storepulse::dev_stack::wait_for_broker;
use storepulse::local_stack::{self, LocalBroker, LocalPostgres};
use storepulse_notifier::{NotifierConfig, NotifierSettings};
use storepulse_runtime::records::{AlertTransition, topic};
use storepulse_runtime::{AvroCodec, EventProducer, PostgresConfig, ProducerMetrics, kafka};
use tokio_util::sync::CancellationToken;

const RATE_PER_SEC: u64 = 100;
const WARMUP: usize = 100;

fn alert(i: usize, occurred_at: i64) -> AlertTransition {
    serde_json::from_value(serde_json::json!({
        "envelope": {"event_id": uuid::Uuid::new_v4().to_string(), "tenant_id": "acme",
                     "store_id": format!("store-{:03}", i % 300),
                     "occurred_at": occurred_at, "received_at": occurred_at, "source": "bench"},
        "alert_id": format!("lat-{i}"), "rule_id": "pos-offline", "state": "Firing",
        "severity": "Warning", "subject": format!("pos-{i}"), "summary": "terminal silent",
        "value": null, "started_at": occurred_at, "labels": {},
    }))
    .expect("bench alert")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
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

    // The webhook: latency of every alert it receives, in ms.
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let sink = latencies.clone();
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let sink = sink.clone();
        async move {
            let now = Utc::now();
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                let mut l = sink.lock().unwrap_or_else(|e| e.into_inner());
                for a in v["alerts"].as_array().into_iter().flatten() {
                    if let Some(t) = a["occurred_at"]
                        .as_str()
                        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    {
                        let us = (now - t.with_timezone(&Utc))
                            .num_microseconds()
                            .unwrap_or(0);
                        l.push(us as f64 / 1000.0);
                    }
                }
            }
            "ok"
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
                url,
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
    for i in 0..WARMUP {
        producer
            .send(&alert(i, Utc::now().timestamp_micros()))
            .await?;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while latencies.lock().unwrap_or_else(|e| e.into_inner()).len() < WARMUP {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "warm-up not delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    latencies.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let total = (seconds * RATE_PER_SEC) as usize;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SEC));
    let mut sends = Vec::with_capacity(total);
    for i in WARMUP..WARMUP + total {
        tick.tick().await;
        let p = producer.clone();
        let a = alert(i, Utc::now().timestamp_micros());
        sends.push(tokio::spawn(async move { p.send(&a).await }));
    }
    for s in sends {
        s.await??;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let n = latencies.lock().unwrap_or_else(|e| e.into_inner()).len();
        if n >= total {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "only {n} of {total} alerts reached the webhook"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    let _ = notifier.await;
    let all = latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut measured: Vec<f64> = all;
    measured.sort_by(f64::total_cmp);
    println!(
        "notifier latency, alert record -> webhook call, {RATE_PER_SEC} alerts/s for {seconds} s ({} alerts after {WARMUP} warm-up): p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        measured.len(),
        percentile(&measured, 0.50),
        percentile(&measured, 0.90),
        percentile(&measured, 0.99),
        measured.last().copied().unwrap_or(0.0),
    );
    drop(broker);
    drop(pg);
    Ok(())
}
