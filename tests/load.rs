//! `storepulse load` measures what it claims: every accepted event is applied and seen,
//! against a running stack and against the stack it starts itself. No timing is
//! asserted here (speed belongs in benches); only that the counts add up.

mod support;

use std::process::Command;
use std::time::Duration;

use storepulse::load::{LoadOptions, LoadTarget, Mix};
use support::TestStack;
use tokio_util::sync::CancellationToken;

const RAW_COUNT: &str =
    "SELECT (SELECT count(*) FROM sales) + (SELECT count(*) FROM inventory_changes)
     + (SELECT count(*) FROM pos_heartbeats) + (SELECT count(*) FROM sensor_readings)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_against_a_running_stack_counts_every_event_once() {
    let stack = TestStack::start("loadrun").await;
    let shutdown = CancellationToken::new();
    let ingest_url = support::start_ingest(&stack, shutdown.clone()).await;
    let (ops, compactor) = support::start_compactor(&stack, &shutdown, None, None).await;
    let opts = LoadOptions {
        tenant_id: "loadtest".into(),
        stores: 7,
        rate: Some(400.0),
        duration: Duration::from_secs(3),
        warmup: Duration::ZERO,
        batch_events: 10,
        concurrency: 4,
        mix: Mix::Mixed,
        seed: 1,
        poll_interval: Duration::from_millis(20),
        drain_timeout: Duration::from_secs(120),
        progress: false,
    };
    let target = LoadTarget {
        ingest_url,
        pool: stack.pool.clone(),
        compactor_group: format!("{}compactor", stack.kafka.topic_prefix),
        processes: Vec::new(),
        metrics_urls: Vec::new(),
    };
    let report = storepulse::load::run(&opts, &target, CancellationToken::new())
        .await
        .expect("load runs");

    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    assert_eq!(report.rejected, 0, "generated events are valid");
    assert!(report.accepted > 0, "{report}");
    assert_eq!(report.accepted % 10, 0, "whole requests: {report}");
    assert!(report.drain_secs.is_some(), "drained: {report}");
    // No warm-up: the window's start is the run's.
    assert_eq!(
        report.backlog_at_end + report.applied as i64,
        report.accepted_total as i64
    );
    // Every request of the window is a sample, and each was seen in Postgres.
    assert_eq!(report.http.count as u64, report.accepted / 10);
    assert_eq!(report.visible.count, report.http.count);
    assert_eq!(report.not_visible, 0);
    // The rows are exactly the accepted events.
    assert_eq!(stack.count(RAW_COUNT).await, report.accepted_total as i64);
    assert_eq!(
        stack
            .count("SELECT count(DISTINCT store_id) FROM pos_heartbeats")
            .await,
        7,
        "every store posted"
    );
    // Fresh keys only: every relation of every batch went through the bulk (COPY)
    // path — but inventory changes, which always take the insert statement (their
    // stock_on_hand reads the store's stored changes; decision 0016).
    let metrics = reqwest::get(format!("{ops}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let path = |p: &str, table: &dyn Fn(&str) -> bool| {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("storepulse_compactor_write_path_total")
                    && l.contains(&format!("path=\"{p}\""))
                    && table(l)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let inventory = |l: &str| l.contains("table=\"inventory_changes\"");
    for table in ["sensor_readings", "pos_heartbeats", "sales"] {
        let of = |l: &str| l.contains(&format!("table=\"{table}\""));
        assert!(path("copy", &of) > 0.0, "{table}: {metrics}");
    }
    assert_eq!(path("statement", &|l| !inventory(l)), 0.0, "{metrics}");
    assert_eq!(path("copy", &inventory), 0.0, "{metrics}");
    shutdown.cancel();
    compactor
        .await
        .expect("join")
        .expect("compactor stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_starts_its_own_stack_and_reports_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("batching.toml");
    std::fs::write(&config, "[kafka]\nproducer_linger_ms = 30\n").expect("config");
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            Command::new(env!("CARGO_BIN_EXE_storepulse"))
                .arg("--config")
                .arg(&config)
                .args([
                    "load",
                    "--rate",
                    "300",
                    "--duration",
                    "3",
                    "--warmup",
                    "1",
                    "--stores",
                    "5",
                    "--batch",
                    "5",
                    "--mix",
                    "sales",
                    "--json",
                    "--broker-ceiling",
                    "--data-dir",
                ])
                .arg(&dir)
                .env_remove("STOREPULSE_CONFIG")
                .output()
                .expect("run storepulse load")
        }
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let accepted = report["accepted"].as_u64().expect("accepted");
    assert!(accepted > 0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["not_visible"], 0, "{report}");
    assert!(report["drain_secs"].is_number(), "drained: {report}");
    // The CPU of every process of the stack, and the services' Kafka requests.
    let cpu: Vec<&str> = report["cpu"]
        .as_array()
        .expect("cpu")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        cpu,
        ["broker", "postgres", "ingest", "compactor", "load driver"],
        "{report}"
    );
    let ingest = &report["kafka_requests"][0];
    assert_eq!(ingest["service"], "ingest");
    assert!(ingest["produce_per_sec"].as_f64() > Some(0.0), "{report}");
    assert!(
        report["kafka_requests"][1]["fetch_per_sec"].as_f64() > Some(0.0),
        "{report}"
    );
    assert!(stderr.contains("measuring"), "a progress line: {stderr}");
    // The broker's raw produce rate, measured after the load on the same broker.
    let ceiling = &report["broker_ceiling"];
    assert_eq!(
        ceiling["records"].as_u64(),
        report["accepted_total"].as_u64(),
        "{report}"
    );
    assert!(ceiling["records_per_sec"].as_f64() > Some(0.0), "{report}");
    assert!(ceiling["broker_cores"].is_number(), "{report}");
    // The stack is gone with the command: its data directory is removed.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("load-"))
        .collect();
    assert!(left.is_empty(), "stack data removed");
}
