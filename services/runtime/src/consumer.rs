//! The batch consumer loop every consuming service runs.
//!
//! Guarantees:
//! - records of a partition are handed to the processor in offset order;
//! - a record that cannot be decoded goes to the dead-letter topic (acknowledged by
//!   the broker) and the partition moves on;
//! - offsets are committed to Kafka only after [`BatchProcessor::apply`] made the
//!   batch durable — and processors that need exactness (the compactor) also store
//!   them with their effects, see [`Batch::next_offsets`];
//! - on shutdown the batch in hand is finished and committed before returning;
//! - a retryable apply error is retried with backoff, never skipped.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::KafkaConfig;
use crate::dead_letter::{DeadLetters, RejectedFrom, Rejection};
use crate::kafka::{ProduceError, client_config};
use crate::metrics::ConsumerMetrics;

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

/// What a consuming service does with its records.
pub trait BatchProcessor: Send {
    type Item: Send + Sync;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decodes and validates one record. An `Err` sends it to the dead-letter topic.
    fn decode(&self, record: &ConsumedRecord) -> Result<Self::Item, Rejection>;

    /// Makes the batch's effects durable. Called again with the same batch after a
    /// retryable error, so it must be idempotent.
    fn apply(
        &mut self,
        batch: &Batch<Self::Item>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Whether an apply error may go away by itself (a dropped connection) rather than
    /// being a bug or misconfiguration that stops the service.
    fn is_retryable(&self, _error: &Self::Error) -> bool {
        true
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
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("dead-letter publish failed: {0}")]
    DeadLetter(#[from] ProduceError),
    #[error("applying a batch failed: {0}")]
    Apply(Box<dyn std::error::Error + Send + Sync>),
}

/// Logs rebalances and keeps the assigned-partitions gauge current.
struct RebalanceObserver {
    metrics: ConsumerMetrics,
    prefix: String,
}

impl ClientContext for RebalanceObserver {}

impl ConsumerContext for RebalanceObserver {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        match rebalance {
            Rebalance::Assign(tpl) => {
                for e in tpl.elements() {
                    let topic = e.topic().strip_prefix(&self.prefix).unwrap_or(e.topic());
                    *counts.entry(topic.to_string()).or_default() += 1;
                }
                info!(partitions = tpl.count(), "partitions assigned");
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

/// A group consumer driving a [`BatchProcessor`].
pub struct BatchConsumer<P: BatchProcessor> {
    consumer: StreamConsumer<RebalanceObserver>,
    processor: P,
    dead_letters: DeadLetters,
    metrics: ConsumerMetrics,
    settings: ConsumerSettings,
    kafka: KafkaConfig,
}

impl<P: BatchProcessor> std::fmt::Debug for BatchConsumer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchConsumer")
            .field("settings", &self.settings)
            .finish()
    }
}

impl<P: BatchProcessor> BatchConsumer<P> {
    pub fn new(
        kafka: &KafkaConfig,
        settings: ConsumerSettings,
        processor: P,
        dead_letters: DeadLetters,
        metrics: ConsumerMetrics,
    ) -> Result<Self, ConsumerError> {
        let consumer: StreamConsumer<RebalanceObserver> = client_config(kafka, &settings.group_id)
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", kafka.fetch_wait_max_ms.to_string())
            .set("partition.assignment.strategy", "range")
            .create_with_context(RebalanceObserver {
                metrics: metrics.clone(),
                prefix: kafka.topic_prefix.clone(),
            })?;
        let topics: Vec<String> = settings.topics.iter().map(|t| kafka.topic(t)).collect();
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&refs)?;
        Ok(Self {
            consumer,
            processor,
            dead_letters,
            metrics,
            settings,
            kafka: kafka.clone(),
        })
    }

    /// Consumes until `shutdown` is cancelled, then finishes the batch in hand.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ConsumerError> {
        loop {
            let records = self.next_batch(&shutdown).await;
            if !records.is_empty() {
                self.process(records, &shutdown).await?;
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
        info!(group = %self.settings.group_id, "consumer stopped after its last batch");
        Ok(())
    }

    /// Waits for a first record (or shutdown), then fills the batch for at most
    /// `batch_max_wait` or `batch_max_records`.
    async fn next_batch(&self, shutdown: &CancellationToken) -> Vec<ConsumedRecord> {
        let mut out = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        while out.len() < self.settings.batch_max_records {
            let recv = self.consumer.recv();
            let msg = match deadline {
                None => tokio::select! {
                    _ = shutdown.cancelled() => break,
                    m = recv => m,
                },
                Some(d) => tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep_until(d) => break,
                    m = recv => m,
                },
            };
            match msg {
                Ok(m) => {
                    let topic = self.kafka.base_topic(m.topic()).to_string();
                    out.push(ConsumedRecord {
                        topic,
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    });
                    deadline.get_or_insert_with(|| {
                        tokio::time::Instant::now() + self.settings.batch_max_wait
                    });
                }
                Err(e) => {
                    warn!(error = %e, "kafka consume error");
                    if out.is_empty() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    } else {
                        break;
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
        let mut batch = Batch {
            items: Vec::with_capacity(records.len()),
            next_offsets: BTreeMap::new(),
        };
        for rec in &records {
            self.metrics.consumed.with_label_values(&[&rec.topic]).inc();
            batch
                .next_offsets
                .insert((rec.topic.clone(), rec.partition), rec.offset + 1);
            match self.processor.decode(rec) {
                Ok(item) => batch.items.push(Positioned {
                    topic: rec.topic.clone(),
                    partition: rec.partition,
                    offset: rec.offset,
                    item,
                }),
                Err(rejection) => {
                    warn!(topic = %rec.topic, partition = rec.partition, offset = rec.offset, %rejection, "dead-lettering record");
                    self.dead_letters
                        .publish(
                            RejectedFrom::Topic {
                                topic: &rec.topic,
                                partition: rec.partition,
                                offset: rec.offset,
                                key: rec.key.as_deref(),
                            },
                            &rec.payload,
                            &rejection,
                        )
                        .await?;
                    self.metrics
                        .dead_lettered
                        .with_label_values(&[&rec.topic])
                        .inc();
                }
            }
        }

        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.processor.apply(&batch).await {
                Ok(()) => break,
                Err(e) if self.processor.is_retryable(&e) && !shutdown.is_cancelled() => {
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "batch apply failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(ConsumerError::Apply(Box::new(e))),
            }
        }
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());

        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &batch.next_offsets {
            tpl.add_partition_offset(&self.kafka.topic(topic), *partition, Offset::Offset(*next))?;
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
        Ok(())
    }
}
