//! `storepulse load`: drives the ingest API at a target rate or flat out and measures
//! what the pipeline sustains, from the HTTP answer to the row in Postgres.
//!
//! Unlike `storepulse dev`, nothing here is paced by a simulated clock: events are
//! generated on demand ([`EventFactory`]: valid by construction, random v4 ids, the
//! current wall-clock time), so the only limits are the target rate and the pipeline.
//!
//! What it measures, over a window after a warm-up:
//! - accepted events/s and HTTP latency percentiles (send to answer, per request);
//! - applied records/s: the growth of the compactor's stored offsets
//!   (`consumer_offsets`, written in the rows' transaction, so exact and cheap), and
//!   the backlog (accepted but not yet applied) at the end of the window;
//! - answer-to-visible latency: the last event of every request is a sample; a poller
//!   looks the samples up in their raw table every [`LoadOptions::poll_interval`], so
//!   a sample's latency is an upper bound at most one poll interval above the truth;
//! - CPU seconds per watched process (the broker, Postgres, the services), from
//!   `/proc`, when the processes are known (the stack `load` starts itself).
//!
//! Per store, requests are posted one at a time and in order (each store belongs to
//! one worker), as a store gateway does. A 429 or 503 answer is retried after its
//! `Retry-After` (counted; event ids make retries safe).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Which events a load posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// Roughly the simulator's mix: 55% POS heartbeats, 35% sensor readings, 8%
    /// sales (1-4 lines), 2% stock changes.
    Mixed,
    /// Sensor readings only.
    Sensor,
    /// Sales only, 1-4 lines each.
    Sales,
}

/// What to post, how fast and for how long.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub tenant_id: String,
    pub stores: usize,
    /// Target events per second; `None` posts flat out.
    pub rate: Option<f64>,
    /// Measured window.
    pub duration: Duration,
    /// Load before the window, not measured (group joins, connection pools, caches).
    pub warmup: Duration,
    /// Events per request.
    pub batch_events: usize,
    /// Requests in flight at most (one per store at a time).
    pub concurrency: usize,
    pub mix: Mix,
    pub seed: u64,
    /// How often the visibility poller looks for sampled events.
    pub poll_interval: Duration,
    /// How long to wait after the window for the backlog to be applied.
    pub drain_timeout: Duration,
    /// Print a progress line every second on stderr.
    pub progress: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            tenant_id: "load".into(),
            stores: 300,
            rate: None,
            duration: Duration::from_secs(30),
            warmup: Duration::from_secs(5),
            batch_events: 100,
            concurrency: 32,
            mix: Mix::Mixed,
            seed: 42,
            poll_interval: Duration::from_millis(20),
            drain_timeout: Duration::from_secs(120),
            progress: true,
        }
    }
}

/// A process whose CPU time the report shows.
#[derive(Debug, Clone)]
pub struct WatchedProcess {
    pub name: String,
    pub pid: u32,
    /// Count its children too (a postmaster's backends), exited ones included.
    pub with_children: bool,
}

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct LoadTarget {
    /// Base URL of the ingest API.
    pub ingest_url: String,
    /// The read store: API keys are minted here and samples looked up.
    pub pool: Pool,
    /// The compactor's consumer group, whose stored offsets give the applied rate.
    pub compactor_group: String,
    pub processes: Vec<WatchedProcess>,
    /// `/metrics` URLs of the services, by name: their Kafka request counters are
    /// read at the window's edges.
    pub metrics_urls: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("postgres: {}", storepulse_runtime::db::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("api key: {0}")]
    Key(#[from] storepulse_ingest::api_keys::KeyError),
    #[error("invalid options: {0}")]
    Options(String),
    #[error("broker ceiling: {0}")]
    Ceiling(String),
}

/// Percentiles of a set of durations, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// From durations in µs (sorted here).
    pub fn of_micros(mut v: Vec<u64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_unstable();
        let at = |q: f64| {
            let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
            v[i] as f64 / 1000.0
        };
        Self {
            count: v.len(),
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms, self.count
        )
    }
}

/// CPU time one watched process used during the window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProcessCpu {
    pub name: String,
    /// CPU seconds per wall-clock second (1.0 = one core busy).
    pub cores: f64,
}

/// Kafka requests one service sent during the window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KafkaRequests {
    pub service: String,
    pub produce_per_sec: f64,
    /// Records acknowledged per produce request.
    pub records_per_produce: f64,
    pub fetch_per_sec: f64,
}

/// The counters of one `/metrics` page a load report uses.
#[derive(Debug, Clone, Copy, Default)]
struct KafkaCounters {
    produce_requests: f64,
    produced_records: f64,
    fetch_requests: f64,
}

impl KafkaCounters {
    fn parse(page: &str) -> Self {
        let mut c = Self::default();
        for line in page.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            let value: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            match name {
                "storepulse_kafka_produce_requests_total" => c.produce_requests += value,
                "storepulse_kafka_fetch_requests_total" => c.fetch_requests += value,
                "storepulse_produced_records_total" if line.contains("outcome=\"acked\"") => {
                    c.produced_records += value
                }
                _ => {}
            }
        }
        c
    }
}

async fn scrape(urls: &[(String, String)]) -> Vec<KafkaCounters> {
    let mut out = Vec::with_capacity(urls.len());
    for (_, url) in urls {
        let page = match reqwest::get(url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        out.push(KafkaCounters::parse(&page));
    }
    out
}

/// What a load run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    pub target_rate: Option<f64>,
    pub window_secs: f64,
    /// Events accepted with an answer inside the window.
    pub accepted: u64,
    /// Events accepted during the whole run (warm-up, and answers after the window).
    pub accepted_total: u64,
    pub accepted_per_sec: f64,
    /// Records the compactor applied inside the window (its stored offsets' growth).
    pub applied: u64,
    pub applied_per_sec: f64,
    /// Accepted but not applied at the end of the window (whole run).
    pub backlog_at_end: i64,
    /// Time after the window until everything accepted was applied; `None` if the
    /// drain timed out.
    pub drain_secs: Option<f64>,
    pub rejected: u64,
    pub retries: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Send to answer, per request in the window.
    pub http: Percentiles,
    pub events_per_request: usize,
    /// HTTP answer to row visible, per sample (the last event of a request).
    pub visible: Percentiles,
    /// Samples not visible when the drain ended.
    pub not_visible: usize,
    pub poll_interval_ms: f64,
    /// CPU of watched processes (and of this load driver) during the window.
    pub cpu: Vec<ProcessCpu>,
    /// Kafka requests of the services during the window.
    pub kafka_requests: Vec<KafkaRequests>,
    /// The broker's raw produce rate measured after the load on the same broker
    /// (`--broker-ceiling`).
    pub broker_ceiling: Option<BrokerCeiling>,
}

/// The broker's raw produce rate in the same run: as many records as the load had
/// accepted, of the same mix, produced flat out by one producer
/// ([`crate::raw_produce`]) into topics of their own (the compactor does not read
/// them), with the broker's CPU meanwhile.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BrokerCeiling {
    pub records: usize,
    pub secs: f64,
    pub records_per_sec: f64,
    /// Broker CPU during the produce, in cores (when its process is known).
    pub broker_cores: Option<f64>,
    /// The load's accepted events/s as a share of this rate.
    pub pipeline_share: f64,
}

/// Measures [`BrokerCeiling`] on the broker of `kafka`: topics prefixed
/// `storepulse-ceiling.` are created with `partitions` partitions.
pub async fn broker_ceiling(
    kafka: &storepulse_runtime::KafkaConfig,
    opts: &LoadOptions,
    records: usize,
    broker: Option<&WatchedProcess>,
    pipeline_events_per_sec: f64,
) -> Result<BrokerCeiling, LoadError> {
    let kafka = storepulse_runtime::KafkaConfig {
        topic_prefix: format!("{}storepulse-ceiling.", kafka.topic_prefix),
        ..kafka.clone()
    };
    use storepulse_runtime::records::topic;
    storepulse_runtime::kafka::ensure_topics(
        &kafka,
        &[
            topic::SALES,
            topic::INVENTORY,
            topic::DEVICE,
            topic::SENSOR_READINGS,
        ],
        kafka.partitions,
    )
    .await
    .map_err(|e| LoadError::Ceiling(format!("create the ceiling's topics: {e}")))?;
    let events = crate::raw_produce::encode_events(
        opts.mix,
        &opts.tenant_id,
        opts.stores,
        records.max(1),
        opts.seed,
    )
    .map_err(|e| LoadError::Ceiling(e.to_string()))?;
    let watched: Vec<WatchedProcess> = broker.into_iter().cloned().collect();
    let before = cpu_seconds(&watched);
    let run = crate::raw_produce::produce_flat_out(&kafka, &events)
        .await
        .map_err(|e| LoadError::Ceiling(e.to_string()))?;
    let after = cpu_seconds(&watched);
    Ok(BrokerCeiling {
        records: run.records,
        secs: run.secs,
        records_per_sec: run.records_per_sec,
        broker_cores: (!watched.is_empty()).then(|| (after[0] - before[0]) / run.secs),
        pipeline_share: pipeline_events_per_sec / run.records_per_sec,
    })
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match self.target_rate {
            Some(r) => format!("target {r:.0} events/s"),
            None => "flat out".to_string(),
        };
        writeln!(f, "load: {target}, window {:.1} s", self.window_secs)?;
        writeln!(
            f,
            "  accepted        {:>10} events  {:>9.0} events/s   (rejected {}, retried requests {}, failed requests {})",
            self.accepted, self.accepted_per_sec, self.rejected, self.retries, self.errors
        )?;
        writeln!(
            f,
            "  applied         {:>10} records {:>9.0} records/s  (compactor offsets; backlog at end {})",
            self.applied, self.applied_per_sec, self.backlog_at_end
        )?;
        match self.drain_secs {
            Some(s) => writeln!(f, "  drained         {s:.1} s after the window")?,
            None => writeln!(f, "  drained         NOT within the drain timeout")?,
        }
        writeln!(
            f,
            "  http            {} ({} events per request)",
            self.http, self.events_per_request
        )?;
        writeln!(
            f,
            "  answer→visible  {} (poll every {:.0} ms; {} samples never seen)",
            self.visible, self.poll_interval_ms, self.not_visible
        )?;
        if !self.cpu.is_empty() {
            let parts: Vec<String> = self
                .cpu
                .iter()
                .map(|c| format!("{} {:.2}", c.name, c.cores))
                .collect();
            writeln!(f, "  cpu (cores)     {}", parts.join("  "))?;
        }
        for k in &self.kafka_requests {
            writeln!(
                f,
                "  kafka requests  {}: produce {:.0}/s ({:.1} records each), fetch {:.0}/s",
                k.service, k.produce_per_sec, k.records_per_produce, k.fetch_per_sec
            )?;
        }
        if let Some(c) = &self.broker_ceiling {
            writeln!(
                f,
                "  broker raw      {:>10} records {:>9.0} records/s  (one producer, full batches, same mix; broker {} cores) -> pipeline at {:.0}%",
                c.records,
                c.records_per_sec,
                c.broker_cores
                    .map_or("?".to_string(), |c| format!("{c:.2}")),
                100.0 * c.pipeline_share
            )?;
        }
        if let Some(e) = &self.first_error {
            writeln!(f, "  first error     {e}")?;
        }
        Ok(())
    }
}

/// The raw table an event type lands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RawTable {
    Sales,
    Inventory,
    Heartbeats,
    Sensor,
}

impl RawTable {
    const ALL: [RawTable; 4] = [
        RawTable::Sales,
        RawTable::Inventory,
        RawTable::Heartbeats,
        RawTable::Sensor,
    ];

    fn name(self) -> &'static str {
        match self {
            RawTable::Sales => "sales",
            RawTable::Inventory => "inventory_changes",
            RawTable::Heartbeats => "pos_heartbeats",
            RawTable::Sensor => "sensor_readings",
        }
    }
}

/// An event to look for in the read store.
#[derive(Debug, Clone)]
struct Sample {
    table: RawTable,
    store: Arc<str>,
    id: Uuid,
    answered: Instant,
}

/// Generates valid events as JSON text, cheaply: the driver must not be what limits
/// the rate.
#[derive(Debug)]
pub struct EventFactory {
    rng: ChaCha8Rng,
    mix: Mix,
    next_txn: u64,
}

impl EventFactory {
    pub fn new(mix: Mix, seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            mix,
            next_txn: 1,
        }
    }

    /// Writes a JSON array of `n` events of `store` occurring around `now` into `out`
    /// (what one request of a store gateway carries).
    pub fn fill(&mut self, store: &str, n: usize, now: DateTime<Utc>, out: &mut String) {
        self.batch(store, n, now, out);
    }

    /// Appends a JSON array of `n` events of `store` occurring around `now` to `out`;
    /// returns the last event's table and id.
    fn batch(&mut self, store: &str, n: usize, now: DateTime<Utc>, out: &mut String) -> Sample {
        out.clear();
        out.push('[');
        let mut last = (RawTable::Sensor, Uuid::nil());
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            // Events of a batch are spread over the last seconds, in order.
            let at = now - chrono::Duration::milliseconds(((n - i) * 10) as i64);
            last = self.event(store, at, out);
        }
        out.push(']');
        Sample {
            table: last.0,
            store: Arc::from(store),
            id: last.1,
            answered: Instant::now(),
        }
    }

    fn event(&mut self, store: &str, at: DateTime<Utc>, out: &mut String) -> (RawTable, Uuid) {
        let id = uuid::Builder::from_random_bytes(self.rng.random()).into_uuid();
        let table = match self.mix {
            Mix::Sensor => RawTable::Sensor,
            Mix::Sales => RawTable::Sales,
            Mix::Mixed => match self.rng.random_range(0..100) {
                0..55 => RawTable::Heartbeats,
                55..90 => RawTable::Sensor,
                90..98 => RawTable::Sales,
                _ => RawTable::Inventory,
            },
        };
        let ty = match table {
            RawTable::Sales => "sale",
            RawTable::Inventory => "stock_adjustment",
            RawTable::Heartbeats => "pos_heartbeat",
            RawTable::Sensor => "sensor_reading",
        };
        let _ = write!(
            out,
            r#"{{"type":"{ty}","event_id":"{id}","store_id":"{store}","occurred_at":"{}""#,
            at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        let r = &mut self.rng;
        let _ = match table {
            RawTable::Heartbeats => write!(
                out,
                r#","terminal_id":"pos-{}","app_up":true,"printer":"{}","network":"online"}}"#,
                r.random_range(1..=3),
                if r.random_bool(0.01) {
                    "paper_low"
                } else {
                    "ok"
                }
            ),
            RawTable::Sensor => match r.random_range(0..4) {
                0 => write!(
                    out,
                    r#","device_id":"door-1","kind":"door","value":{}}}"#,
                    r.random_range(0..=1)
                ),
                1 => write!(
                    out,
                    r#","device_id":"freezer-1","kind":"temperature","value":{:.2},"unit":"celsius","appliance":"freezer"}}"#,
                    r.random_range(-21.0..-16.0)
                ),
                _ => write!(
                    out,
                    r#","device_id":"fridge-{}","kind":"temperature","value":{:.2},"unit":"celsius","appliance":"fridge"}}"#,
                    r.random_range(1..=2),
                    r.random_range(2.5..6.5)
                ),
            },
            RawTable::Inventory => write!(
                out,
                r#","sku":"sku-{:04}","quantity":{},"reason":"delivery"}}"#,
                r.random_range(0..40),
                r.random_range(1..100)
            ),
            RawTable::Sales => {
                let txn = self.next_txn;
                self.next_txn += 1;
                let _ = write!(
                    out,
                    r#","transaction_id":"T-{txn}","terminal_id":"pos-{}","currency":"EUR","lines":["#,
                    r.random_range(1..=3)
                );
                for l in 0..r.random_range(1..=4) {
                    if l > 0 {
                        out.push(',');
                    }
                    let _ = write!(
                        out,
                        r#"{{"sku":"sku-{:04}","quantity":{},"unit_price_minor":{}}}"#,
                        r.random_range(0..40),
                        r.random_range(1..=3),
                        r.random_range(49..2999)
                    );
                }
                write!(out, "]}}")
            }
        };
        (table, id)
    }
}

/// Counters shared by the workers.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
    errors: AtomicU64,
    /// Accepted with the answer inside the window.
    accepted_in_window: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Request latencies (µs) in the window.
    latencies: Mutex<Vec<u64>>,
    /// Latencies since the last progress line.
    recent: Mutex<Vec<u64>>,
}

impl Counters {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(e);
    }
}

/// The phases of a run, for the workers and the poller.
#[derive(Debug)]
struct Clock {
    start: Instant,
    window_start: Instant,
    window_end: Instant,
}

impl Clock {
    fn in_window(&self, t: Instant) -> bool {
        t >= self.window_start && t < self.window_end
    }
}

/// Sum of the compactor group's stored next offsets.
async fn applied_offsets(pool: &Pool, group: &str) -> Result<i64, LoadError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE consumer_group = $1",
            &[&group],
        )
        .await?;
    Ok(row.get(0))
}

/// Mints one API key per store; returns (store id, token) in store order.
async fn mint_keys(pool: &Pool, opts: &LoadOptions) -> Result<Vec<(Arc<str>, String)>, LoadError> {
    let mut keys = Vec::with_capacity(opts.stores);
    for s in 0..opts.stores {
        let store = format!("store-{:04}", s + 1);
        let k =
            storepulse_ingest::api_keys::create(pool, &opts.tenant_id, &store, "storepulse load")
                .await?;
        keys.push((Arc::from(store.as_str()), k.token));
    }
    Ok(keys)
}

/// Runs a load against `target` until the window ends (or `cancel`), then waits for
/// the backlog to drain; returns what was measured.
pub async fn run(
    opts: &LoadOptions,
    target: &LoadTarget,
    cancel: CancellationToken,
) -> Result<LoadReport, LoadError> {
    if opts.stores == 0 || opts.batch_events == 0 || opts.concurrency == 0 {
        return Err(LoadError::Options(
            "stores, batch size and concurrency must be at least 1".into(),
        ));
    }
    if opts.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(LoadError::Options(
            "the rate must be a positive number".into(),
        ));
    }
    let keys = mint_keys(&target.pool, opts).await?;
    let workers = opts.concurrency.min(opts.stores);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(workers)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| LoadError::Options(format!("http client: {e}")))?;
    let url = format!("{}/v1/events", target.ingest_url.trim_end_matches('/'));

    // Offsets before the first request; and the window's start values when there is
    // no warm-up.
    let baseline = applied_offsets(&target.pool, &target.compactor_group).await?;
    let mut in_window = opts.warmup.is_zero();
    let mut offsets_at_window_start = baseline;
    let mut cpu_at_window_start = in_window.then(|| cpu_seconds(&target.processes));
    let mut kafka_at_window_start = if in_window {
        scrape(&target.metrics_urls).await
    } else {
        Vec::new()
    };
    let start = Instant::now();
    let clock = Arc::new(Clock {
        start,
        window_start: start + opts.warmup,
        window_end: start + opts.warmup + opts.duration,
    });
    let counters = Arc::new(Counters::default());
    let next_request = Arc::new(AtomicU64::new(0));
    let (sample_tx, sample_rx) = tokio::sync::mpsc::unbounded_channel::<Sample>();

    let poller = tokio::spawn(poll_visibility(
        target.pool.clone(),
        opts.tenant_id.clone(),
        sample_rx,
        opts.poll_interval,
        Arc::clone(&clock),
    ));

    let mut handles = Vec::with_capacity(workers);
    for w in 0..workers {
        let stores: Vec<(Arc<str>, String)> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| i % workers == w)
            .map(|(_, k)| k.clone())
            .collect();
        let worker = Worker {
            client: client.clone(),
            url: url.clone(),
            stores,
            factory: EventFactory::new(opts.mix, opts.seed.wrapping_add(w as u64)),
            batch_events: opts.batch_events,
            rate: opts.rate,
            clock: Arc::clone(&clock),
            counters: Arc::clone(&counters),
            next_request: Arc::clone(&next_request),
            samples: sample_tx.clone(),
            cancel: cancel.clone(),
        };
        handles.push(tokio::spawn(worker.run()));
    }
    drop(sample_tx);

    // Progress, and the window's offsets and CPU at its edges.
    let mut last = (Instant::now(), 0u64, baseline);
    let mut last_cpu = cpu_seconds(&target.processes);
    let mut next_tick = start + Duration::from_secs(1);
    loop {
        let edge = if in_window {
            clock.window_end
        } else {
            clock.window_start
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(next_tick.min(edge)) => {}
        }
        let now = Instant::now();
        if !in_window && now >= clock.window_start {
            in_window = true;
            cpu_at_window_start = Some(cpu_seconds(&target.processes));
            offsets_at_window_start =
                applied_offsets(&target.pool, &target.compactor_group).await?;
            kafka_at_window_start = scrape(&target.metrics_urls).await;
        }
        if now >= next_tick {
            next_tick += Duration::from_secs(1);
            let applied = applied_offsets(&target.pool, &target.compactor_group).await?;
            let accepted = counters.accepted.load(Ordering::Relaxed);
            if opts.progress {
                let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
                let recent =
                    std::mem::take(&mut *counters.recent.lock().unwrap_or_else(|p| p.into_inner()));
                let phase = if in_window { "measuring" } else { "warm-up" };
                let cpu = cpu_seconds(&target.processes);
                let cores: String = target
                    .processes
                    .iter()
                    .zip(cpu.iter().zip(&last_cpu))
                    .map(|(p, (now, before))| format!(" {} {:.2}", p.name, (now - before) / secs))
                    .collect();
                last_cpu = cpu;
                eprintln!(
                    "{phase:>9} {:>4.0}s | accepted {accepted} ({:.0}/s), http p99 {:.0} ms | applied {} ({:.0}/s), backlog {}{}",
                    now.duration_since(clock.start).as_secs_f64(),
                    (accepted - last.1) as f64 / secs,
                    Percentiles::of_micros(recent).p99_ms,
                    applied - baseline,
                    (applied - last.2) as f64 / secs,
                    accepted as i64 - (applied - baseline),
                    if cores.is_empty() {
                        String::new()
                    } else {
                        format!(" | cores{cores}")
                    },
                );
            }
            last = (now, accepted, applied);
        }
        if in_window && now >= clock.window_end {
            break;
        }
    }
    let window_end = Instant::now();
    let cpu_end = cpu_seconds(&target.processes);
    let kafka_end = scrape(&target.metrics_urls).await;
    let offsets_at_window_end = applied_offsets(&target.pool, &target.compactor_group).await?;
    for h in handles {
        let _ = h.await;
    }
    let accepted_total = counters.accepted.load(Ordering::Relaxed) as i64;
    let backlog_at_end = accepted_total - (offsets_at_window_end - baseline);

    // Drain: everything accepted applied (the samples with it).
    let drain_deadline = Instant::now() + opts.drain_timeout;
    let mut drain_secs = None;
    while !cancel.is_cancelled() && Instant::now() < drain_deadline {
        let applied = applied_offsets(&target.pool, &target.compactor_group).await? - baseline;
        if applied >= accepted_total {
            drain_secs = Some(window_end.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (visible, not_visible) = poller.await.unwrap_or_else(|_| (Percentiles::default(), 0));

    let window_secs = window_end
        .duration_since(clock.window_start.min(window_end))
        .as_secs_f64()
        .max(1e-3);
    let cpu = match cpu_at_window_start {
        Some(begin) => target
            .processes
            .iter()
            .zip(begin.iter().zip(cpu_end))
            .map(|(p, (b, e))| ProcessCpu {
                name: p.name.clone(),
                cores: (e - b) / window_secs,
            })
            .collect(),
        None => Vec::new(),
    };
    let kafka_requests = target
        .metrics_urls
        .iter()
        .zip(kafka_at_window_start.iter().zip(&kafka_end))
        .map(|((name, _), (b, e))| {
            let produce = e.produce_requests - b.produce_requests;
            KafkaRequests {
                service: name.clone(),
                produce_per_sec: produce / window_secs,
                records_per_produce: (e.produced_records - b.produced_records) / produce.max(1.0),
                fetch_per_sec: (e.fetch_requests - b.fetch_requests) / window_secs,
            }
        })
        .collect();
    let accepted = counters.accepted_in_window.load(Ordering::Relaxed);
    let applied = (offsets_at_window_end - offsets_at_window_start).max(0) as u64;
    let http = Percentiles::of_micros(std::mem::take(
        &mut *counters.latencies.lock().unwrap_or_else(|p| p.into_inner()),
    ));
    let first_error = counters
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(LoadReport {
        target_rate: opts.rate,
        window_secs,
        accepted,
        accepted_total: accepted_total as u64,
        accepted_per_sec: accepted as f64 / window_secs,
        applied,
        applied_per_sec: applied as f64 / window_secs,
        backlog_at_end,
        drain_secs,
        rejected: counters.rejected.load(Ordering::Relaxed),
        retries: counters.retries.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        first_error,
        http,
        events_per_request: opts.batch_events,
        visible,
        not_visible,
        poll_interval_ms: opts.poll_interval.as_secs_f64() * 1000.0,
        cpu,
        kafka_requests,
        broker_ceiling: None,
    })
}

/// Posts one set of stores' batches in turn.
struct Worker {
    client: reqwest::Client,
    url: String,
    stores: Vec<(Arc<str>, String)>,
    factory: EventFactory,
    batch_events: usize,
    rate: Option<f64>,
    clock: Arc<Clock>,
    counters: Arc<Counters>,
    next_request: Arc<AtomicU64>,
    samples: tokio::sync::mpsc::UnboundedSender<Sample>,
    cancel: CancellationToken,
}

impl Worker {
    async fn run(mut self) {
        let mut body = String::with_capacity(self.batch_events * 256);
        let mut turn = 0usize;
        loop {
            let n = self.next_request.fetch_add(1, Ordering::Relaxed);
            if let Some(rate) = self.rate {
                // Request n is due when the rate has allowed n batches.
                let due = self.clock.start
                    + Duration::from_secs_f64(n as f64 * self.batch_events as f64 / rate);
                if due >= self.clock.window_end {
                    return;
                }
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(due) => {}
                }
            }
            if self.cancel.is_cancelled() || Instant::now() >= self.clock.window_end {
                return;
            }
            let (store, key) = &self.stores[turn % self.stores.len()];
            turn += 1;
            let mut sample = self
                .factory
                .batch(store, self.batch_events, Utc::now(), &mut body);
            let sent = Instant::now();
            let Some(answered) = self.post(key, body.as_bytes()).await else {
                continue;
            };
            let micros = answered.duration_since(sent).as_micros() as u64;
            self.counters
                .recent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(micros);
            if self.clock.in_window(answered) {
                self.counters
                    .latencies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(micros);
                sample.answered = answered;
                let _ = self.samples.send(sample);
            }
        }
    }

    /// Posts one batch, retrying 429/503; returns when it was answered, or `None`
    /// if it failed for good (counted).
    async fn post(&self, key: &str, body: &[u8]) -> Option<Instant> {
        for _ in 0..20 {
            let resp = self
                .client
                .post(&self.url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    self.counters.error(format!("http: {e}"));
                    return None;
                }
            };
            let status = resp.status().as_u16();
            match status {
                200 => {
                    let _ = resp.bytes().await;
                    let answered = Instant::now();
                    self.count_accepted(self.batch_events as u64, answered);
                    return Some(answered);
                }
                207 | 422 => {
                    let text = resp.text().await.unwrap_or_default();
                    let answered = Instant::now();
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    let accepted = v["accepted"].as_u64().unwrap_or(0);
                    let rejected = v["rejected"].as_u64().unwrap_or(0);
                    self.count_accepted(accepted, answered);
                    self.counters
                        .rejected
                        .fetch_add(rejected, Ordering::Relaxed);
                    let mut first = self
                        .counters
                        .first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    first.get_or_insert_with(|| format!("rejections ({status}): {text:.300}"));
                    return Some(answered);
                }
                429 | 503 => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    let wait = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(1)
                        .min(10);
                    tokio::select! {
                        _ = self.cancel.cancelled() => return None,
                        _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
                    }
                }
                _ => {
                    let text = resp.text().await.unwrap_or_default();
                    self.counters
                        .error(format!("ingest answered {status}: {text:.300}"));
                    return None;
                }
            }
        }
        self.counters
            .error("ingest kept answering 429/503 (20 attempts)".into());
        None
    }

    fn count_accepted(&self, n: u64, answered: Instant) {
        self.counters.accepted.fetch_add(n, Ordering::Relaxed);
        if self.clock.in_window(answered) {
            self.counters
                .accepted_in_window
                .fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Looks the samples up until every one is visible (or, once the senders are gone,
/// until none was seen for the drain's sake for 30 s); returns the answer-to-visible
/// percentiles and how many were never seen.
async fn poll_visibility(
    pool: Pool,
    tenant: String,
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<Sample>,
    interval: Duration,
    clock: Arc<Clock>,
) -> (Percentiles, usize) {
    let mut pending: Vec<Sample> = Vec::new();
    let mut seen: Vec<u64> = Vec::new();
    let mut senders_gone = false;
    let mut last_progress = Instant::now();
    let Ok(client) = pool.get().await else {
        return (Percentiles::default(), 0);
    };
    // With the idempotency key ledger (`event_keys`), a key is looked up there (the
    // raw tables have no key index then); it commits with its row.
    let ledger = client
        .query_one("SELECT to_regclass('event_keys') IS NOT NULL", &[])
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false);
    let mut statements = HashMap::new();
    for table in RawTable::ALL {
        let sql = if ledger {
            format!(
                "SELECT t.event_id FROM event_keys t
                 JOIN unnest($2::text[], $3::uuid[]) AS k(store_id, event_id) USING (store_id, event_id)
                 WHERE t.tenant_id = $1 AND t.relation = '{}'",
                table.name()
            )
        } else {
            format!(
                "SELECT t.event_id FROM {} t
                 JOIN unnest($2::text[], $3::uuid[]) AS k(store_id, event_id) USING (store_id, event_id)
                 WHERE t.tenant_id = $1",
                table.name()
            )
        };
        match client.prepare(&sql).await {
            Ok(s) => {
                statements.insert(table, s);
            }
            Err(_) => return (Percentiles::default(), 0),
        }
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        loop {
            match incoming.try_recv() {
                Ok(s) => pending.push(s),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    senders_gone = true;
                    break;
                }
            }
        }
        if pending.is_empty() {
            if senders_gone {
                break;
            }
            continue;
        }
        // A row seen by this query was committed before its snapshot, taken now.
        let polled = Instant::now();
        for table in RawTable::ALL {
            let (stores, ids): (Vec<&str>, Vec<Uuid>) = pending
                .iter()
                .filter(|s| s.table == table)
                .map(|s| (&*s.store, s.id))
                .unzip();
            if ids.is_empty() {
                continue;
            }
            let Ok(rows) = client
                .query(&statements[&table], &[&tenant, &stores, &ids])
                .await
            else {
                continue;
            };
            let found: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.get(0)).collect();
            if !found.is_empty() {
                last_progress = Instant::now();
            }
            pending.retain(|s| {
                if s.table == table && found.contains(&s.id) {
                    seen.push(polled.duration_since(s.answered).as_micros() as u64);
                    false
                } else {
                    true
                }
            });
        }
        // The senders stopped and nothing has become visible for a long time: the
        // rest is not coming (the run's drain reports why).
        if senders_gone
            && last_progress.elapsed() > Duration::from_secs(30)
            && Instant::now() > clock.window_end
        {
            break;
        }
    }
    let missing = pending.len();
    (Percentiles::of_micros(seen), missing)
}

/// CPU seconds (user + system) so far of each watched process.
pub fn cpu_seconds(processes: &[WatchedProcess]) -> Vec<f64> {
    processes
        .iter()
        .map(|p| {
            let own = proc_stat_ticks(p.pid, p.with_children);
            let children: u64 = if p.with_children {
                child_pids(p.pid)
                    .into_iter()
                    .map(|c| proc_stat_ticks(c, false))
                    .sum()
            } else {
                0
            };
            (own + children) as f64 / clock_ticks_per_sec()
        })
        .collect()
}

/// utime + stime of `pid` (plus its reaped children's, when asked), in clock ticks.
fn proc_stat_ticks(pid: u32, reaped_children: bool) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which may hold spaces: state is the first.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0;
    };
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime = field 14, stime 15, cutime 16, cstime 17 (1-based, state = 3).
    let get = |n: usize| f.get(n - 3).copied().unwrap_or(0);
    let mut ticks = get(14) + get(15);
    if reaped_children {
        ticks += get(16) + get(17);
    }
    ticks
}

/// Live children of `pid`.
fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&c| {
            std::fs::read_to_string(format!("/proc/{c}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 2..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

#[allow(unsafe_code)]
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_nearest_ranks() {
        let p = Percentiles::of_micros((1..=100).map(|x| x * 1000).collect());
        assert_eq!(p.count, 100);
        assert_eq!(p.p50_ms, 50.0);
        assert_eq!(p.p99_ms, 99.0);
        assert_eq!(p.max_ms, 100.0);
        assert_eq!(Percentiles::of_micros(Vec::new()).count, 0);
    }

    #[test]
    fn generated_batches_are_json_arrays_of_distinct_events() {
        for mix in [Mix::Mixed, Mix::Sensor, Mix::Sales] {
            let mut f = EventFactory::new(mix, 7);
            let mut body = String::new();
            let sample = f.batch("store-0001", 50, Utc::now(), &mut body);
            let v: Vec<serde_json::Value> = serde_json::from_str(&body).expect(&body);
            assert_eq!(v.len(), 50);
            let ids: std::collections::HashSet<&str> = v
                .iter()
                .map(|e| e["event_id"].as_str().expect("id"))
                .collect();
            assert_eq!(ids.len(), 50);
            assert_eq!(
                v[49]["event_id"].as_str(),
                Some(sample.id.to_string().as_str())
            );
            let who = storepulse_ingest::validate::StoreIdentity {
                tenant_id: "t".into(),
                store_id: "store-0001".into(),
            };
            for e in &v {
                let checked = storepulse_ingest::validate::check_event(
                    e,
                    &who,
                    Utc::now(),
                    storepulse_ingest::IngestSettings::default().validation_policy(),
                )
                .expect("the key's store");
                assert!(
                    matches!(checked, storepulse_ingest::validate::Checked::Valid(_)),
                    "{e}: {checked:?}"
                );
            }
        }
    }

    #[test]
    fn kafka_counters_are_read_from_a_metrics_page() {
        let page = "# HELP x\nstorepulse_kafka_produce_requests_total{service=\"ingest\"} 40\n\
                    storepulse_produced_records_total{outcome=\"acked\",service=\"ingest\",topic=\"a\"} 300\n\
                    storepulse_produced_records_total{outcome=\"failed\",service=\"ingest\",topic=\"a\"} 7\n\
                    storepulse_produced_records_total{outcome=\"acked\",service=\"ingest\",topic=\"b\"} 100\n\
                    storepulse_kafka_fetch_requests_total{service=\"ingest\"} 3\n";
        let c = KafkaCounters::parse(page);
        assert_eq!(c.produce_requests, 40.0);
        assert_eq!(c.produced_records, 400.0);
        assert_eq!(c.fetch_requests, 3.0);
    }

    #[test]
    fn proc_stat_of_this_process_counts_cpu() {
        let me = std::process::id();
        let t0 = proc_stat_ticks(me, false);
        let mut x = 0u64;
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(proc_stat_ticks(me, false) > t0, "60 ms of spinning shows");
    }
}
