//! The batch consumer loop every consuming service runs.
//!
//! Guarantees:
//! - records of a partition are handed to the processor in offset order;
//! - a record that cannot be decoded goes to the dead-letter topic (acknowledged by
//!   the broker) and the partition moves on;
//! - a record the processor's store refuses ([`Failure::Poison`]) is isolated by
//!   splitting the batch: the rest is applied, the bad record is dead-lettered with
//!   the store's reason, and the partition moves on;
//! - a record whose writer schema is unknown is never skipped: the loop reads the
//!   schema registry; if the schema is still unknown it pauses that partition at that
//!   record, reports not-ready naming the fingerprint, and resumes once the schema is
//!   published;
//! - a transient failure (the connection, not the data) is retried with backoff while
//!   the consumer keeps polling with its partitions paused, so it stays in its group;
//!   `/readyz` is false meanwhile;
//! - offsets are committed to Kafka only after [`BatchProcessor::apply`] made the
//!   batch durable — and processors that need exactness (the compactor) also store
//!   them with their effects, see [`Batch::next_offsets`];
//! - on shutdown the batch in hand is finished and committed before returning;
//! - a processor that keeps per-partition state is told of every assignment before
//!   the first batch holding records of the assigned partitions
//!   ([`BatchProcessor::assigned`], retried like a batch), and of every revocation
//!   ([`BatchProcessor::revoked`]);
//! - a processor that asks for it ([`BatchProcessor::idle_tick`]) is told, about once
//!   per tick, which assigned partitions delivered nothing while the loop kept up
//!   ([`BatchProcessor::idle`]), and may then apply an empty batch (time moves on
//!   for a partition nothing arrives on).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::avro::CodecError;
use crate::config::KafkaConfig;
use crate::dead_letter::{DeadLetters, RejectedFrom, Rejection};
use crate::kafka::{ProduceError, client_config};
use crate::metrics::ConsumerMetrics;
use crate::ops_http::ReadinessCheck;
use crate::schema_registry::SchemaRegistry;

/// One record as read from Kafka.
#[derive(Debug, Clone)]
pub struct ConsumedRecord {
    /// Base topic name (deployment prefix removed), e.g. `pos.sales.v1`.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// A decoded record with its position.
#[derive(Debug, Clone)]
pub struct Positioned<I> {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub item: I,
}

/// Records to apply together, in offset order per partition.
#[derive(Debug, Clone)]
pub struct Batch<I> {
    pub items: Vec<Positioned<I>>,
    /// Per (base topic, partition): the offset to read next once this batch is applied.
    /// Covers dead-lettered records too, so a processor storing these never re-reads them.
    pub next_offsets: BTreeMap<(String, i32), i64>,
}

impl<I> Batch<I> {
    /// A batch of `items` whose offsets cover exactly those items.
    fn covering(items: Vec<Positioned<I>>) -> Self {
        let mut next_offsets = BTreeMap::new();
        for p in &items {
            let next = next_offsets
                .entry((p.topic.clone(), p.partition))
                .or_insert(0);
            *next = (*next).max(p.offset + 1);
        }
        Self {
            items,
            next_offsets,
        }
    }
}

/// What an apply error says about the batch, and so what the loop does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The store could not be reached (a dropped connection, a restarting server):
    /// the same batch is retried, with backoff, for as long as it takes.
    Transient,
    /// The store refused something in the batch (a value it cannot hold): the batch
    /// is split until the refused record is alone, which is dead-lettered.
    Poison,
    /// A bug or misconfiguration (a missing table, no permission): the service stops.
    Fatal,
}

/// What a consuming service does with its records.
pub trait BatchProcessor: Send {
    type Item: Send + Sync;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decodes and validates one record. An `Err` sends it to the dead-letter topic.
    fn decode(&self, record: &ConsumedRecord) -> Result<Self::Item, Rejection>;

    /// Makes the batch's effects durable, and records `next_offsets` if the processor
    /// keeps its own. Must be idempotent: it is called again with the same batch after
    /// a transient error, and after a [`Failure::Poison`] with parts of the batch (each
    /// part's `next_offsets` covering its items) and finally with no items and the
    /// whole batch's offsets.
    fn apply(
        &mut self,
        batch: &Batch<Self::Item>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// How the loop treats an apply error.
    fn classify(&self, error: &Self::Error) -> Failure;

    /// Partitions (base topic, partition) were assigned to this member: restore
    /// whatever state the processor keeps for them. Called before the first batch
    /// holding their records; retried like [`BatchProcessor::apply`] after a
    /// [`Failure::Transient`] error (any other error stops the service).
    fn assigned(
        &mut self,
        partitions: &[(String, i32)],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = partitions;
        async { Ok(()) }
    }

    /// Partitions were revoked: drop their state. Records of them may still be in
    /// the batch in hand; a processor keeping state must not apply those (their next
    /// owner re-reads them from the last commit).
    fn revoked(&mut self, partitions: &[(String, i32)]) {
        let _ = partitions;
    }

    /// How often to call [`BatchProcessor::idle`]; `None` (the default): never.
    fn idle_tick(&self) -> Option<Duration> {
        None
    }

    /// The assigned partitions that delivered no record since the previous tick
    /// (assigned before it, not held at an unknown schema), while the loop kept up
    /// (no full batch since the previous tick: a saturated loop reports none).
    /// Return true to have an empty batch applied now (through the same retries as
    /// any batch), e.g. to move time on for those partitions.
    fn idle(&mut self, partitions: &[(String, i32)]) -> bool {
        let _ = partitions;
        false
    }
}

/// How the loop consumes.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Consumer group; members share the partitions.
    pub group_id: String,
    /// Base topic names to subscribe to.
    pub topics: Vec<String>,
    /// Most records per batch.
    pub batch_max_records: usize,
    /// Longest wait to fill a batch once its first record arrived.
    pub batch_max_wait: Duration,
    /// How long a partition is held at a record whose writer schema is unknown
    /// before that record is dead-lettered and the partition moves on (a corrupt
    /// header would otherwise hold it forever). Redrive it once the schema is
    /// published.
    pub unknown_schema_hold: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("dead-letter publish failed for good: {0}")]
    DeadLetter(#[from] ProduceError),
    #[error("applying a batch failed: {0}")]
    Apply(Box<dyn std::error::Error + Send + Sync>),
    #[error("shutdown requested while retrying a batch (not committed; it will be re-read): {0}")]
    Interrupted(String),
}

/// Why a consumer is not ready, shared with its `/readyz` check.
#[derive(Debug, Clone, Default)]
pub struct ConsumerHealth {
    /// Reasons by cause; empty = ready.
    problems: Arc<Mutex<BTreeMap<String, String>>>,
}

impl ConsumerHealth {
    fn set(&self, cause: &str, reason: impl Into<String>) {
        self.lock().insert(cause.to_string(), reason.into());
    }

    fn clear(&self, cause: &str) {
        self.lock().remove(cause);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.problems.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ok when nothing is wrong, else every problem on one line.
    pub fn status(&self) -> Result<(), String> {
        let p = self.lock();
        if p.is_empty() {
            Ok(())
        } else {
            Err(p.values().cloned().collect::<Vec<_>>().join("; "))
        }
    }

    /// A `/readyz` check named `consumer`.
    pub fn readiness(&self) -> ReadinessCheck {
        let health = self.clone();
        ReadinessCheck::new("consumer", move || {
            let status = health.status();
            Box::pin(async move { status })
        })
    }
}

/// A change of assignment, for the loop to pass on to its processor.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RebalanceEvent {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

/// Logs rebalances, keeps the assigned-partitions gauge current, queues each change
/// for the loop (the callbacks run inside a poll and cannot await), and counts fetch
/// requests from librdkafka's statistics.
struct RebalanceObserver {
    metrics: ConsumerMetrics,
    prefix: String,
    events: Arc<Mutex<Vec<RebalanceEvent>>>,
}

impl RebalanceObserver {
    /// The (base topic, partition) pairs of `tpl`.
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<(String, i32)> {
        tpl.elements()
            .iter()
            .map(|e| {
                let topic = e.topic().strip_prefix(&self.prefix).unwrap_or(e.topic());
                (topic.to_string(), e.partition())
            })
            .collect()
    }

    fn queue(&self, event: RebalanceEvent) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }
}

impl ClientContext for RebalanceObserver {
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        self.metrics.fetch_requests.observe(&statistics);
        self.metrics.observe_lag(&statistics, &self.prefix);
    }
}

impl ConsumerContext for RebalanceObserver {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.queue(RebalanceEvent::Revoked(self.partitions(tpl)));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = self.partitions(tpl);
                for (topic, _) in &partitions {
                    *counts.entry(topic.clone()).or_default() += 1;
                }
                info!(partitions = tpl.count(), "partitions assigned");
                self.queue(RebalanceEvent::Assigned(partitions));
            }
            Rebalance::Revoke(tpl) => info!(partitions = tpl.count(), "partitions revoked"),
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
        self.metrics.assigned_partitions.reset();
        for (topic, n) in counts {
            self.metrics
                .assigned_partitions
                .with_label_values(&[&topic])
                .set(n);
        }
    }
}

/// A partition held at a record whose writer schema is unknown.
#[derive(Debug, Clone)]
struct Blocked {
    offset: i64,
    fingerprint: String,
    /// When the partition was paused, for [`ConsumerSettings::unknown_schema_hold`].
    since: Instant,
}

/// How often a paused partition's schema is looked up again.
const REGISTRY_RECHECK: Duration = Duration::from_secs(2);
/// How long the loop waits for a first record before doing housekeeping.
const IDLE_TICK: Duration = Duration::from_millis(500);

/// A group consumer driving a [`BatchProcessor`].
pub struct BatchConsumer<P: BatchProcessor> {
    consumer: StreamConsumer<RebalanceObserver>,
    processor: P,
    dead_letters: DeadLetters,
    registry: SchemaRegistry,
    metrics: ConsumerMetrics,
    settings: ConsumerSettings,
    kafka: KafkaConfig,
    health: ConsumerHealth,
    /// Records received while the partitions were paused for a retry; they open the
    /// next batch (pausing does not recall what was already fetched).
    pending: Vec<ConsumedRecord>,
    /// Partitions paused at an unknown writer schema, by (base topic, partition).
    blocked: HashMap<(String, i32), Blocked>,
    /// When the registry was last read for the blocked partitions.
    last_registry_check: Instant,
    /// Held records whose hold ran out, by (base topic, partition, offset), with the
    /// reason they are dead-lettered when read again.
    given_up: HashMap<(String, i32, i64), String>,
    /// Assignment changes queued by the rebalance callbacks, not yet handled.
    rebalances: Arc<Mutex<Vec<RebalanceEvent>>>,
    /// Assigned partitions and when they were assigned.
    assigned: HashMap<(String, i32), Instant>,
    /// Partitions that delivered a record since the last idle tick.
    delivered: HashSet<(String, i32)>,
    /// Whether a full batch was read since the last idle tick.
    saturated: bool,
    /// When the processor was last told of idle partitions.
    last_idle_tick: Instant,
}

impl<P: BatchProcessor> std::fmt::Debug for BatchConsumer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchConsumer")
            .field("settings", &self.settings)
            .finish()
    }
}

fn to_record(kafka: &KafkaConfig, m: &BorrowedMessage<'_>) -> ConsumedRecord {
    ConsumedRecord {
        topic: kafka.base_topic(m.topic()).to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

/// Awaits `work` while polling the consumer, so that it stays in its group; records
/// that still arrive are kept in `pending`.
async fn keep_polling<T>(
    consumer: &StreamConsumer<RebalanceObserver>,
    kafka: &KafkaConfig,
    pending: &mut Vec<ConsumedRecord>,
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            m = consumer.recv() => match m {
                Ok(m) => pending.push(to_record(kafka, &m)),
                Err(e) => debug!(error = %e, "consume error while paused"),
            },
        }
    }
}

/// What [`BatchConsumer::retrying`] makes durable.
enum Work<'a, I> {
    Apply(&'a Batch<I>),
    Assign(&'a [(String, i32)]),
}

impl<I> Clone for Work<'_, I> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I> Copy for Work<'_, I> {}

/// Runs one piece of work on the processor.
async fn perform<P: BatchProcessor>(
    processor: &mut P,
    work: Work<'_, P::Item>,
) -> Result<(), P::Error> {
    match work {
        Work::Apply(batch) => processor.apply(batch).await,
        Work::Assign(partitions) => processor.assigned(partitions).await,
    }
}

/// Outcome of applying one (part of a) batch.
enum Applied {
    Done,
    /// The store refused something in it, for this reason.
    Refused(String),
}

impl<P: BatchProcessor> BatchConsumer<P> {
    pub fn new(
        kafka: &KafkaConfig,
        settings: ConsumerSettings,
        processor: P,
        dead_letters: DeadLetters,
        registry: SchemaRegistry,
        metrics: ConsumerMetrics,
    ) -> Result<Self, ConsumerError> {
        let mut config = client_config(kafka, &settings.group_id);
        // A member that dies (kill -9, a lost node) holds its partitions until its
        // session times out: 10 s rather than librdkafka's 45 s, so a replacement
        // takes over quickly. `kafka.properties` may set another value.
        for (key, value) in [
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "3000"),
            (
                "statistics.interval.ms",
                crate::metrics::STATISTICS_INTERVAL_MS,
            ),
        ] {
            if !kafka.properties.contains_key(key) {
                config.set(key, value);
            }
        }
        let rebalances = Arc::new(Mutex::new(Vec::new()));
        let consumer: StreamConsumer<RebalanceObserver> = config
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", kafka.fetch_wait_max_ms.to_string())
            .set("fetch.min.bytes", kafka.fetch_min_bytes.to_string())
            .set("partition.assignment.strategy", "range")
            .create_with_context(RebalanceObserver {
                metrics: metrics.clone(),
                prefix: kafka.topic_prefix.clone(),
                events: rebalances.clone(),
            })?;
        let topics: Vec<String> = settings.topics.iter().map(|t| kafka.topic(t)).collect();
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&refs)?;
        Ok(Self {
            consumer,
            processor,
            dead_letters,
            registry,
            metrics,
            settings,
            kafka: kafka.clone(),
            health: ConsumerHealth::default(),
            pending: Vec::new(),
            blocked: HashMap::new(),
            last_registry_check: Instant::now(),
            given_up: HashMap::new(),
            rebalances,
            assigned: HashMap::new(),
            delivered: HashSet::new(),
            saturated: false,
            last_idle_tick: Instant::now(),
        })
    }

    /// The consumer's readiness, for `/readyz`.
    pub fn health(&self) -> ConsumerHealth {
        self.health.clone()
    }

    /// Consumes until `shutdown` is cancelled, then finishes the batch in hand.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ConsumerError> {
        loop {
            let records = self.next_batch(&shutdown).await;
            self.handle_rebalances(&shutdown).await?;
            if !records.is_empty() {
                self.saturated |= records.len() >= self.settings.batch_max_records;
                for r in &records {
                    self.delivered.insert((r.topic.clone(), r.partition));
                }
                self.process(records, &shutdown).await?;
            }
            self.tick_idle(&shutdown).await?;
            if !self.blocked.is_empty() && self.last_registry_check.elapsed() >= REGISTRY_RECHECK {
                self.unblock_known().await;
            }
            self.give_up_expired_holds();
            if shutdown.is_cancelled() {
                break;
            }
        }
        info!(group = %self.settings.group_id, "consumer stopped after its last batch");
        Ok(())
    }

    /// Waits for a first record (or shutdown, or an idle tick), then fills the batch
    /// for at most `batch_max_wait` or `batch_max_records`.
    async fn next_batch(&mut self, shutdown: &CancellationToken) -> Vec<ConsumedRecord> {
        // Records kept while paused open the batch, at most a batch's worth.
        let take = self.pending.len().min(self.settings.batch_max_records);
        let mut out: Vec<ConsumedRecord> = self.pending.drain(..take).collect();
        let mut deadline =
            (!out.is_empty()).then(|| tokio::time::Instant::now() + self.settings.batch_max_wait);
        let idle = tokio::time::Instant::now() + IDLE_TICK;
        while out.len() < self.settings.batch_max_records {
            let recv = self.consumer.recv();
            let until = deadline.unwrap_or(idle);
            let msg = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(until) => break,
                m = recv => m,
            };
            match msg {
                Ok(m) => {
                    out.push(to_record(&self.kafka, &m));
                    deadline.get_or_insert_with(|| {
                        tokio::time::Instant::now() + self.settings.batch_max_wait
                    });
                }
                Err(e) => {
                    warn!(error = %e, "kafka consume error");
                    if !out.is_empty() {
                        break;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
        out
    }

    async fn process(
        &mut self,
        records: Vec<ConsumedRecord>,
        shutdown: &CancellationToken,
    ) -> Result<(), ConsumerError> {
        let records = self.hold_unknown_schemas(records).await;
        if records.is_empty() {
            return Ok(());
        }
        let mut batch = Batch {
            items: Vec::with_capacity(records.len()),
            next_offsets: BTreeMap::new(),
        };
        let mut rejected = Vec::new();
        for rec in &records {
            self.metrics.consumed.with_label_values(&[&rec.topic]).inc();
            batch
                .next_offsets
                .insert((rec.topic.clone(), rec.partition), rec.offset + 1);
            let given_up = self
                .given_up
                .remove(&(rec.topic.clone(), rec.partition, rec.offset));
            if let Some(reason) = given_up {
                rejected.push((rec, Rejection::whole(reason)));
                continue;
            }
            match self.processor.decode(rec) {
                Ok(item) => batch.items.push(Positioned {
                    topic: rec.topic.clone(),
                    partition: rec.partition,
                    offset: rec.offset,
                    item,
                }),
                Err(rejection) => rejected.push((rec, rejection)),
            }
        }
        self.dead_letter(&rejected, shutdown).await?;

        let started = Instant::now();
        let positions: HashMap<(&str, i32, i64), &ConsumedRecord> = records
            .iter()
            .map(|r| ((r.topic.as_str(), r.partition, r.offset), r))
            .collect();
        if let Applied::Refused(reason) = self.apply_retrying(&batch, shutdown).await? {
            warn!(%reason, records = batch.items.len(), "the store refused part of a batch; isolating the record at fault");
            self.isolate(batch.items, &positions, shutdown).await?;
            let offsets_only = Batch {
                items: Vec::new(),
                next_offsets: batch.next_offsets.clone(),
            };
            if let Applied::Refused(reason) = self.apply_retrying(&offsets_only, shutdown).await? {
                return Err(ConsumerError::Apply(
                    format!("storing offsets alone was refused: {reason}").into(),
                ));
            }
        }
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        self.commit(&batch.next_offsets, shutdown);
        Ok(())
    }

    /// Drops records of partitions held at an unknown writer schema and holds new
    /// ones: reads the registry once, then pauses each partition whose record names
    /// a schema still unknown.
    async fn hold_unknown_schemas(&mut self, records: Vec<ConsumedRecord>) -> Vec<ConsumedRecord> {
        let mut refreshed = false;
        let mut kept = Vec::with_capacity(records.len());
        for rec in records {
            let tp = (rec.topic.clone(), rec.partition);
            if self.blocked.contains_key(&tp) {
                continue; // re-read after the seek that resumes the partition
            }
            if self
                .given_up
                .contains_key(&(rec.topic.clone(), rec.partition, rec.offset))
            {
                kept.push(rec); // dead-lettered by process()
                continue;
            }
            let fp = match self.registry.codec().writer_schema(&rec.payload) {
                Err(CodecError::UnknownWriterSchema(fp)) => fp,
                _ => {
                    kept.push(rec);
                    continue;
                }
            };
            if !refreshed {
                refreshed = true;
                match self.registry.refresh().await {
                    Ok(n) if n > 0 => info!(new = n, "schema registry read"),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "schema registry unreadable"),
                }
                self.last_registry_check = Instant::now();
            }
            if self.registry.codec().writer_schema(&rec.payload).is_ok() {
                kept.push(rec);
                continue;
            }
            self.block(&rec, fp);
        }
        kept
    }

    fn block(&mut self, rec: &ConsumedRecord, fingerprint: String) {
        let reason = format!(
            "partition {}/{} paused at offset {}: unknown writer schema fingerprint {fingerprint}; publish it to the schema registry",
            rec.topic, rec.partition, rec.offset
        );
        warn!(topic = %rec.topic, partition = rec.partition, offset = rec.offset, %fingerprint, "unknown writer schema; pausing the partition until the registry has it");
        let mut tpl = TopicPartitionList::new();
        if let Err(e) = tpl
            .add_partition(&self.kafka.topic(&rec.topic), rec.partition)
            .set_offset(Offset::Offset(rec.offset))
            .map_err(|e| e.to_string())
            .and_then(|()| self.consumer.pause(&tpl).map_err(|e| e.to_string()))
        {
            warn!(error = %e, "pausing a partition failed; its records are dropped until resumed");
        }
        self.metrics
            .paused_partitions
            .with_label_values(&[&rec.topic])
            .inc();
        self.health
            .set(&format!("schema:{}/{}", rec.topic, rec.partition), reason);
        self.blocked.insert(
            (rec.topic.clone(), rec.partition),
            Blocked {
                offset: rec.offset,
                fingerprint,
                since: Instant::now(),
            },
        );
    }

    /// Resumes the partitions held longer than `unknown_schema_hold`; their held
    /// record is dead-lettered when it is read again.
    fn give_up_expired_holds(&mut self) {
        let hold = self.settings.unknown_schema_hold;
        let expired: Vec<(String, i32)> = self
            .blocked
            .iter()
            .filter(|(_, b)| b.since.elapsed() >= hold)
            .map(|(k, _)| k.clone())
            .collect();
        for (topic, partition) in expired {
            let Some(b) = self.blocked.remove(&(topic.clone(), partition)) else {
                continue;
            };
            warn!(%topic, partition, offset = b.offset, fingerprint = %b.fingerprint, hold_secs = hold.as_secs(), "writer schema still unknown; dead-lettering the held record");
            self.given_up.insert(
                (topic.clone(), partition, b.offset),
                format!(
                    "unknown writer schema fingerprint {}: not in the schema registry after {} s; publish the schema, then redrive this record",
                    b.fingerprint,
                    hold.as_secs()
                ),
            );
            self.resume_at(&topic, partition, b.offset);
        }
    }

    /// Seeks a held partition back to `offset` and resumes it.
    fn resume_at(&mut self, topic: &str, partition: i32, offset: i64) {
        let full = self.kafka.topic(topic);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&full, partition);
        let resumed = self
            .consumer
            .seek(
                &full,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(5),
            )
            .and_then(|()| self.consumer.resume(&tpl));
        match resumed {
            Ok(()) => info!(%topic, partition, offset, "partition resumed"),
            // Revoked meanwhile: its next owner starts from the last commit, which
            // is before the held record.
            Err(e) => info!(%topic, partition, error = %e, "held partition no longer ours"),
        }
        self.metrics
            .paused_partitions
            .with_label_values(&[topic])
            .dec();
        self.health.clear(&format!("schema:{topic}/{partition}"));
    }

    /// Resumes the held partitions whose schema the registry now has, from the held
    /// record.
    async fn unblock_known(&mut self) {
        self.last_registry_check = Instant::now();
        if let Err(e) = self.registry.refresh().await {
            warn!(error = %e, "schema registry unreadable");
            return;
        }
        let known: Vec<(String, i32)> = self
            .blocked
            .iter()
            .filter(|(_, b)| {
                crate::avro::parse_fingerprint_hex(&b.fingerprint)
                    .is_some_and(|fp| self.registry.knows(&fp))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (topic, partition) in known {
            if let Some(b) = self.blocked.remove(&(topic.clone(), partition)) {
                info!(%topic, partition, "writer schema now known");
                self.resume_at(&topic, partition, b.offset);
            }
        }
    }

    /// Publishes every rejection of a batch concurrently, retrying transient broker
    /// failures with the partitions paused; returns once all are acknowledged.
    async fn dead_letter(
        &mut self,
        rejected: &[(&ConsumedRecord, Rejection)],
        shutdown: &CancellationToken,
    ) -> Result<(), ConsumerError> {
        if rejected.is_empty() {
            return Ok(());
        }
        for (rec, rejection) in rejected {
            warn!(topic = %rec.topic, partition = rec.partition, offset = rec.offset, %rejection, "dead-lettering record");
        }
        let mut todo: Vec<usize> = (0..rejected.len()).collect();
        let mut backoff = Backoff::new();
        let mut paused = false;
        loop {
            let dead_letters = &self.dead_letters;
            let sends = todo.iter().map(|&i| {
                let (rec, rejection) = &rejected[i];
                dead_letters.publish(
                    RejectedFrom::Topic {
                        topic: &rec.topic,
                        partition: rec.partition,
                        offset: rec.offset,
                        key: rec.key.as_deref(),
                    },
                    &rec.payload,
                    rejection,
                )
            });
            let outcomes = if paused {
                keep_polling(
                    &self.consumer,
                    &self.kafka,
                    &mut self.pending,
                    join_all(sends),
                )
                .await
            } else {
                join_all(sends).await
            };
            let mut failed = Vec::new();
            let mut last_error = None;
            for (&i, outcome) in todo.iter().zip(outcomes) {
                match outcome {
                    Ok(_) => {
                        self.metrics
                            .dead_lettered
                            .with_label_values(&[&rejected[i].0.topic])
                            .inc();
                    }
                    Err(e) if e.is_retryable() => {
                        failed.push(i);
                        last_error = Some(e);
                    }
                    Err(e) => {
                        if paused {
                            self.resume_all();
                        }
                        return Err(e.into());
                    }
                }
            }
            let Some(e) = last_error else {
                if paused {
                    self.health.clear("dead-letters");
                    self.resume_all();
                }
                return Ok(());
            };
            todo = failed;
            self.health.set(
                "dead-letters",
                format!("dead-letter topic unavailable: {e}"),
            );
            self.pause_all();
            paused = true;
            if shutdown.is_cancelled() {
                return Err(ConsumerError::Interrupted(e.to_string()));
            }
            let wait = backoff.next();
            warn!(error = %e, pending = todo.len(), retry_in_ms = wait.as_millis() as u64, "dead-letter publish failed; retrying");
            self.wait_polling(wait).await;
        }
    }

    /// Waits `wait` (a retry's backoff) while still polling the consumer.
    async fn wait_polling(&mut self, wait: Duration) {
        keep_polling(
            &self.consumer,
            &self.kafka,
            &mut self.pending,
            tokio::time::sleep(wait),
        )
        .await;
    }

    /// Applies `batch`, retrying transient failures (partitions paused, still polling)
    /// until it is applied or refused.
    async fn apply_retrying(
        &mut self,
        batch: &Batch<P::Item>,
        shutdown: &CancellationToken,
    ) -> Result<Applied, ConsumerError> {
        self.retrying(Work::Apply(batch), shutdown).await
    }

    /// Performs `work`, retrying transient failures (partitions paused, still
    /// polling) until it is done or refused.
    async fn retrying(
        &mut self,
        work: Work<'_, P::Item>,
        shutdown: &CancellationToken,
    ) -> Result<Applied, ConsumerError> {
        let mut backoff = Backoff::new();
        let mut paused = false;
        let outcome = loop {
            // Only a retry (partitions paused) polls meanwhile: polling during a
            // normal apply would pull the backlog into memory.
            let result = if paused {
                keep_polling(
                    &self.consumer,
                    &self.kafka,
                    &mut self.pending,
                    perform(&mut self.processor, work),
                )
                .await
            } else {
                perform(&mut self.processor, work).await
            };
            let e = match result {
                Ok(()) => break Ok(Applied::Done),
                Err(e) => e,
            };
            match self.processor.classify(&e) {
                Failure::Poison => break Ok(Applied::Refused(e.to_string())),
                Failure::Fatal => {
                    error!(error = %e, "batch apply failed for good; stopping");
                    break Err(ConsumerError::Apply(Box::new(e)));
                }
                Failure::Transient => {}
            }
            if shutdown.is_cancelled() {
                break Err(ConsumerError::Interrupted(e.to_string()));
            }
            if !paused {
                self.pause_all();
                paused = true;
            }
            self.health.set("apply", format!("retrying a batch: {e}"));
            let wait = backoff.next();
            warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "batch apply failed; retrying");
            self.wait_polling(wait).await;
        };
        if paused {
            self.health.clear("apply");
            self.resume_all();
        }
        outcome
    }

    /// Passes queued assignment changes on to the processor, in order.
    async fn handle_rebalances(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<(), ConsumerError> {
        loop {
            let events: Vec<RebalanceEvent> =
                std::mem::take(&mut *self.rebalances.lock().unwrap_or_else(|e| e.into_inner()));
            if events.is_empty() {
                return Ok(());
            }
            for event in events {
                match event {
                    RebalanceEvent::Revoked(partitions) => {
                        for tp in &partitions {
                            self.assigned.remove(tp);
                            self.delivered.remove(tp);
                        }
                        self.processor.revoked(&partitions);
                    }
                    RebalanceEvent::Assigned(partitions) => {
                        let now = Instant::now();
                        for tp in &partitions {
                            self.assigned.insert(tp.clone(), now);
                        }
                        if let Applied::Refused(reason) =
                            self.retrying(Work::Assign(&partitions), shutdown).await?
                        {
                            return Err(ConsumerError::Apply(
                                format!("restoring assigned partitions failed: {reason}").into(),
                            ));
                        }
                    }
                }
            }
        }
    }

    /// Tells the processor, once per its idle tick, which partitions delivered
    /// nothing, and applies an empty batch if it asks for one.
    async fn tick_idle(&mut self, shutdown: &CancellationToken) -> Result<(), ConsumerError> {
        let Some(every) = self.processor.idle_tick() else {
            return Ok(());
        };
        if self.last_idle_tick.elapsed() < every {
            return Ok(());
        }
        let previous = std::mem::replace(&mut self.last_idle_tick, Instant::now());
        let delivered = std::mem::take(&mut self.delivered);
        let saturated = std::mem::replace(&mut self.saturated, false);
        let mut idle: Vec<(String, i32)> = self
            .assigned
            .iter()
            .filter(|(tp, since)| {
                !saturated
                    && **since <= previous
                    && !delivered.contains(*tp)
                    && !self.blocked.contains_key(*tp)
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        idle.sort();
        if !self.processor.idle(&idle) {
            return Ok(());
        }
        let empty = Batch {
            items: Vec::new(),
            next_offsets: BTreeMap::new(),
        };
        if let Applied::Refused(reason) = self.apply_retrying(&empty, shutdown).await? {
            return Err(ConsumerError::Apply(
                format!("an idle tick was refused: {reason}").into(),
            ));
        }
        Ok(())
    }

    /// Splits a refused batch until each refused record is alone, applying the good
    /// parts in order and dead-lettering each refused record with the store's reason.
    async fn isolate(
        &mut self,
        items: Vec<Positioned<P::Item>>,
        originals: &HashMap<(&str, i32, i64), &ConsumedRecord>,
        shutdown: &CancellationToken,
    ) -> Result<(), ConsumerError> {
        // A stack of parts still to apply; the next part in offset order is on top.
        let mut parts = vec![items];
        while let Some(part) = parts.pop() {
            let batch = Batch::covering(part);
            let reason = match self.apply_retrying(&batch, shutdown).await? {
                Applied::Done => continue,
                Applied::Refused(reason) => reason,
            };
            let mut left = batch.items;
            if left.len() > 1 {
                let right = left.split_off(left.len() / 2);
                parts.push(right);
                parts.push(left);
                continue;
            }
            for p in &left {
                let Some(rec) = originals.get(&(p.topic.as_str(), p.partition, p.offset)) else {
                    continue;
                };
                let rejection = Rejection::whole(format!("refused by the store: {reason}"));
                self.dead_letter(&[(*rec, rejection)], shutdown).await?;
            }
        }
        Ok(())
    }

    fn commit(&self, next_offsets: &BTreeMap<(String, i32), i64>, shutdown: &CancellationToken) {
        if next_offsets.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in next_offsets {
            if let Err(e) = tpl.add_partition_offset(
                &self.kafka.topic(topic),
                *partition,
                Offset::Offset(*next),
            ) {
                debug!(error = %e, "offset not committable");
            }
        }
        let mode = if shutdown.is_cancelled() {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            // After a rebalance the partition may belong to another member: its new
            // owner resumes from the last commit, and processors dedupe by offset/id.
            debug!(error = %e, "offset commit failed");
        }
    }

    /// Pauses every assigned partition (a retry must not pile up records).
    fn pause_all(&self) {
        if let Ok(tpl) = self.consumer.assignment()
            && let Err(e) = self.consumer.pause(&tpl)
        {
            debug!(error = %e, "pause failed");
        }
    }

    /// Resumes every assigned partition except those held at an unknown schema.
    fn resume_all(&self) {
        let Ok(assigned) = self.consumer.assignment() else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        for e in assigned.elements() {
            let base = self.kafka.base_topic(e.topic()).to_string();
            if !self.blocked.contains_key(&(base, e.partition())) {
                tpl.add_partition(e.topic(), e.partition());
            }
        }
        if let Err(e) = self.consumer.resume(&tpl) {
            debug!(error = %e, "resume failed");
        }
    }
}

/// Exponential backoff with jitter, 100 ms doubling to 5 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: Duration::from_millis(100),
        }
    }

    fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        // Up to 25% jitter, so replicas that failed together do not retry together.
        let jitter = base.as_millis() as u64 / 4;
        let nanos = u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default(),
        );
        base + Duration::from_millis(if jitter == 0 { 0 } else { nanos % jitter })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(topic: &str, partition: i32, offset: i64) -> Positioned<()> {
        Positioned {
            topic: topic.into(),
            partition,
            offset,
            item: (),
        }
    }

    #[test]
    fn a_part_covers_exactly_its_items() {
        let b = Batch::covering(vec![at("a", 0, 5), at("b", 1, 9), at("a", 0, 6)]);
        assert_eq!(b.next_offsets.get(&("a".into(), 0)), Some(&7));
        assert_eq!(b.next_offsets.get(&("b".into(), 1)), Some(&10));
        assert_eq!(b.next_offsets.len(), 2);
    }

    #[test]
    fn backoff_grows_to_a_ceiling_with_bounded_jitter() {
        let mut b = Backoff::new();
        let first = b.next();
        assert!(first >= Duration::from_millis(100) && first < Duration::from_millis(126));
        for _ in 0..10 {
            b.next();
        }
        let late = b.next();
        assert!(late >= Duration::from_secs(5) && late <= Duration::from_millis(6250));
    }

    #[test]
    fn health_reports_every_problem_until_cleared() {
        let h = ConsumerHealth::default();
        assert!(h.status().is_ok());
        h.set("apply", "retrying");
        h.set("schema:x/1", "paused at 3");
        let err = h.status().expect_err("not ready");
        assert!(
            err.contains("retrying") && err.contains("paused at 3"),
            "{err}"
        );
        h.clear("apply");
        h.clear("schema:x/1");
        assert!(h.status().is_ok());
    }
}
