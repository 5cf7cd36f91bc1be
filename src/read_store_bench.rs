//! The read-store benchmark (`cargo bench --bench read_store`): rows/s from the broker
//! into Postgres by the compactor, beside a raw `COPY` of the same rows into the same
//! tables in the same run.
//!
//! Per flavour, on a throwaway Postgres cluster and broker ([`crate::local_stack`]):
//! 1. events are generated and encoded as ingest publishes them
//!    ([`crate::raw_produce`]) and produced flat out into their topic — the broker's
//!    raw produce rate, reported too;
//! 2. the compactor (its library, in this process, default settings) consumes the
//!    pre-produced topic; its rate is the growth of its stored offsets (written in
//!    the rows' transaction) from its first commit to the last record, so the group
//!    join is not counted; every event must then be a row;
//! 3. the rows the compactor wrote are copied out of their raw tables (`COPY ... TO
//!    STDOUT`), the tables emptied, and the same rows copied back in one transaction:
//!    binary and text `COPY` of the raw rows (the ceiling the issue names), and binary
//!    `COPY` of the rows plus their `event_keys` (the least the exactly-once writer
//!    has to write). The last leaves the tables as the compactor left them.
//!
//! The figures depend on the machine and on what else runs on it: the report carries
//! the load average at each measurement. Nothing here asserts a speed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{SinkExt, TryStreamExt};
use storepulse_runtime::db::{self, Flavour};
use storepulse_runtime::records::topic;
use storepulse_runtime::{PostgresConfig, kafka};
use tokio_util::sync::CancellationToken;

use crate::load::{Mix, WatchedProcess, cpu_seconds};
use crate::local_stack::{LocalBroker, LocalPostgres, PostgresOptions};
use crate::raw_produce::{self, ProduceRun};

/// What to measure.
#[derive(Debug, Clone)]
pub struct ReadStoreBenchOptions {
    pub flavour: Flavour,
    /// `Sensor` or `Sales` (a mix of raw tables has no single ceiling).
    pub mix: Mix,
    /// Events produced and consumed.
    pub events: usize,
    pub stores: usize,
    pub partitions: i32,
    /// Under which the throwaway data lives (removed at the end).
    pub data_dir: PathBuf,
}

/// One raw `COPY` of the rows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyCeiling {
    /// What was copied.
    pub what: String,
    pub rows: u64,
    pub secs: f64,
    pub rows_per_sec: f64,
    pub load_average: f64,
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReadStoreBenchReport {
    pub flavour: &'static str,
    pub mix: String,
    pub events: usize,
    /// Raw rows the events became (a sale: the sale and its lines).
    pub raw_rows: u64,
    /// The broker's raw produce rate of the same records.
    pub produce: ProduceRun,
    pub produce_load_average: f64,
    /// Events applied by the compactor in the timed span (after its first commit).
    pub compactor_events: u64,
    pub compactor_secs: f64,
    pub compactor_events_per_sec: f64,
    /// Raw rows per second (events/s × rows per event).
    pub compactor_rows_per_sec: f64,
    pub compactor_load_average: f64,
    /// CPU cores used meanwhile by Postgres (all backends) and by this process (the
    /// compactor's decoding, hashing and encoding).
    pub compactor_cpu_postgres: f64,
    pub compactor_cpu_compactor: f64,
    /// `storepulse_compactor_write_path_total` by path after the run.
    pub write_paths: Vec<(String, f64)>,
    pub ceilings: Vec<CopyCeiling>,
}

impl ReadStoreBenchReport {
    /// The compactor's rows/s as a share of a ceiling's.
    pub fn share_of(&self, ceiling: &CopyCeiling) -> f64 {
        self.compactor_rows_per_sec / ceiling.rows_per_sec
    }
}

impl std::fmt::Display for ReadStoreBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "read store {} / {}: {} events = {} raw rows",
            self.flavour, self.mix, self.events, self.raw_rows
        )?;
        writeln!(
            f,
            "  broker raw produce      {:>9.0} records/s  ({:.1} s, {:.1} MB; load avg {:.1})",
            self.produce.records_per_sec,
            self.produce.secs,
            self.produce.bytes as f64 / 1e6,
            self.produce_load_average
        )?;
        writeln!(
            f,
            "  compactor               {:>9.0} rows/s     ({:.0} events/s over {:.1} s; cores: postgres {:.2}, compactor {:.2}; load avg {:.1}; paths {})",
            self.compactor_rows_per_sec,
            self.compactor_events_per_sec,
            self.compactor_secs,
            self.compactor_cpu_postgres,
            self.compactor_cpu_compactor,
            self.compactor_load_average,
            self.write_paths
                .iter()
                .map(|(p, n)| format!("{p}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        )?;
        for c in &self.ceilings {
            writeln!(
                f,
                "  {:<23} {:>9.0} rows/s     ({} rows in {:.2} s; load avg {:.1}) -> compactor at {:.0}%",
                c.what,
                c.rows_per_sec,
                c.rows,
                c.secs,
                c.load_average,
                100.0 * self.share_of(c)
            )?;
        }
        Ok(())
    }
}

/// The raw tables a mix lands in.
fn raw_tables(mix: Mix) -> anyhow::Result<&'static [&'static str]> {
    match mix {
        Mix::Sensor => Ok(&["sensor_readings"]),
        Mix::Sales => Ok(&["sales", "sale_lines"]),
        Mix::Mixed => anyhow::bail!("the read-store benchmark runs sensor or sales, not mixed"),
    }
}

/// The 1-minute load average of the machine.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Runs the benchmark once: its own Postgres cluster and broker, removed at the end.
pub async fn run(opts: &ReadStoreBenchOptions) -> anyhow::Result<ReadStoreBenchReport> {
    let tables = raw_tables(opts.mix)?;
    std::fs::create_dir_all(&opts.data_dir)?;
    let root = tempfile::Builder::new()
        .prefix("bench-read-store-")
        .tempdir_in(&opts.data_dir)?;
    let pg = LocalPostgres::start_with(
        &root.path().join("pg"),
        None,
        PostgresOptions {
            flavour: opts.flavour,
            background_jobs: false,
        },
    )?;
    let url = pg.create_database("storepulse").await?;
    let postgres = PostgresConfig {
        url,
        ..PostgresConfig::default()
    };
    let pool = db::pool(&postgres)?;
    db::migrate(&pool).await?;
    let broker = LocalBroker::start(root.path(), "memory://nisshi/", None)?;
    let kafka = broker.kafka_config("", opts.partitions);
    crate::dev_stack::wait_for_broker(&kafka).await?;
    kafka::ensure_topics(&kafka, &topic::PROVISIONED, opts.partitions).await?;

    // 1. The records, produced flat out.
    let events = raw_produce::encode_events(opts.mix, "bench", opts.stores, opts.events, 7)?;
    let raw_rows: u64 = events.iter().map(|e| e.raw_rows as u64).sum();
    let produce_load_average = load_average();
    let produce = raw_produce::produce_flat_out(&kafka, &events).await?;
    drop(events);

    // 2. The compactor, from the start of the topics.
    let group = "storepulse-compactor-bench".to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ops = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let config = storepulse_compactor::CompactorConfig {
        kafka: kafka.clone(),
        postgres: postgres.clone(),
        log: Default::default(),
        compactor: storepulse_compactor::CompactorSettings {
            group_id: group.clone(),
            ..Default::default()
        },
    };
    let compactor = tokio::spawn(storepulse_compactor::run_with_listener(
        config,
        listener,
        shutdown.clone(),
    ));
    let watched = [
        WatchedProcess {
            name: "postgres".into(),
            pid: pg.pid(),
            with_children: true,
        },
        WatchedProcess {
            name: "compactor".into(),
            pid: std::process::id(),
            with_children: false,
        },
    ];
    let client = pool.get().await?;
    let applied = || async {
        let row = client
            .query_one(
                "SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE consumer_group = $1",
                &[&group],
            )
            .await?;
        anyhow::Ok(row.get::<_, i64>(0))
    };
    let total = opts.events as i64;
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut first: Option<(Instant, i64, Vec<f64>, f64)> = None;
    let done = loop {
        anyhow::ensure!(
            !compactor.is_finished(),
            "the compactor stopped: {:?}",
            compactor.await
        );
        anyhow::ensure!(
            Instant::now() < deadline,
            "the compactor did not apply {total} events within 15 minutes"
        );
        let n = applied().await?;
        let now = Instant::now();
        if first.is_none() && n > 0 {
            first = Some((now, n, cpu_seconds(&watched), load_average()));
        }
        if n >= total {
            break (now, cpu_seconds(&watched));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (t0, n0, cpu0, load0) = first.context("no commit seen")?;
    let compactor_secs = done.0.duration_since(t0).as_secs_f64().max(1e-6);
    let compactor_events = (total - n0) as u64;
    let compactor_events_per_sec = compactor_events as f64 / compactor_secs;
    let rows_per_event = raw_rows as f64 / opts.events as f64;
    let cores = |i: usize| (done.1[i] - cpu0[i]) / compactor_secs;
    let metrics = reqwest::get(format!("{ops}/metrics")).await?.text().await?;
    let write_paths = ["copy", "statement"]
        .iter()
        .map(|p| {
            let n = metrics
                .lines()
                .filter(|l| {
                    l.starts_with("storepulse_compactor_write_path_total")
                        && l.contains(&format!("path=\"{p}\""))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
                + 0.0; // an empty sum is -0
            (p.to_string(), n)
        })
        .collect();
    shutdown.cancel();
    compactor.await??;

    let stored: i64 = client
        .query_one(&format!("SELECT count(*) FROM {}", tables[0]), &[])
        .await?
        .get(0);
    anyhow::ensure!(
        stored == total,
        "{stored} rows in {} for {total} events",
        tables[0]
    );

    // 3. The ceiling: the same rows, copied.
    let mut ceilings = Vec::new();
    let mut with_keys: Vec<&str> = vec!["event_keys"];
    with_keys.extend(tables);
    let binary = copy_out(&client, tables, "binary").await?;
    let text = copy_out(&client, tables, "text").await?;
    let binary_keys = copy_out(&client, &with_keys, "binary").await?;
    for (what, data, copied) in [
        ("COPY binary (raw rows)", &binary, tables),
        ("COPY text (raw rows)", &text, tables),
        (
            "COPY binary (rows+keys)",
            &binary_keys,
            with_keys.as_slice(),
        ),
    ] {
        let mut client = pool.get().await?;
        client
            .batch_execute(&format!("TRUNCATE {}", with_keys.join(", ")))
            .await?;
        client.batch_execute("CHECKPOINT").await?;
        let load_average = load_average();
        let start = Instant::now();
        let tx = client.transaction().await?;
        for (table, (format, bytes)) in copied.iter().zip(data) {
            let sink = tx
                .copy_in(&format!("COPY {table} FROM STDIN (FORMAT {format})"))
                .await?;
            let mut sink = std::pin::pin!(sink);
            for chunk in bytes.chunks(1 << 20) {
                sink.send(std::io::Cursor::new(chunk.to_vec())).await?;
            }
            sink.as_mut().finish().await?;
        }
        tx.commit().await?;
        let secs = start.elapsed().as_secs_f64().max(1e-6);
        ceilings.push(CopyCeiling {
            what: what.to_string(),
            rows: raw_rows,
            secs,
            // The keys are the writer's cost: rows/s counts the raw rows only.
            rows_per_sec: raw_rows as f64 / secs,
            load_average,
        });
    }

    Ok(ReadStoreBenchReport {
        flavour: match opts.flavour {
            Flavour::Plain => "plain PostgreSQL",
            Flavour::TimescaleDb => "TimescaleDB",
        },
        mix: format!("{:?}", opts.mix).to_lowercase(),
        events: opts.events,
        raw_rows,
        produce,
        produce_load_average,
        compactor_events,
        compactor_secs,
        compactor_events_per_sec,
        compactor_rows_per_sec: compactor_events_per_sec * rows_per_event,
        compactor_load_average: load0,
        compactor_cpu_postgres: cores(0),
        compactor_cpu_compactor: cores(1),
        write_paths,
        ceilings,
    })
}

/// The rows of `tables` as `COPY ... TO STDOUT` gives them, by table: (format, bytes).
async fn copy_out(
    client: &deadpool_postgres::Object,
    tables: &[&str],
    format: &'static str,
) -> anyhow::Result<Vec<(&'static str, Vec<u8>)>> {
    let mut out = Vec::with_capacity(tables.len());
    for table in tables {
        let stream = client
            // A partitioned table or hypertable copies out only through a query.
            .copy_out(&format!(
                "COPY (SELECT * FROM {table}) TO STDOUT (FORMAT {format})"
            ))
            .await?;
        let chunks: Vec<_> = stream.try_collect().await?;
        let mut bytes = Vec::with_capacity(chunks.iter().map(|c| c.len()).sum());
        for c in &chunks {
            bytes.extend_from_slice(c);
        }
        out.push((format, bytes));
    }
    Ok(out)
}
