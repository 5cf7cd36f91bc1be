//! Kafka plumbing: client configuration, the idempotent [`EventProducer`], topic
//! administration, and the broker readiness check. The consumer side lives in
//! [`crate::consumer`].

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::avro::{AvroCodec, CodecError};
use crate::config::KafkaConfig;
use crate::metrics::{ProducerContext, ProducerMetrics, STATISTICS_INTERVAL_MS};
use crate::ops_http::ReadinessCheck;
use crate::records::Record;
use crate::topic_admin::{Mode, TopicError, TopicReport, TopicStatus, reconcile_topics};

/// Base librdkafka configuration of every client: brokers, client id, extra properties.
pub fn client_config(cfg: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", client_id)
        .set("broker.address.family", "v4");
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// Why a produce failed, split by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The broker could not be reached or did not acknowledge in time: retry later.
    #[error("broker unavailable: {0}")]
    Unavailable(KafkaError),
    /// The broker refused the record; retrying the same record will not help.
    #[error("broker rejected the record: {0}")]
    Rejected(KafkaError),
    #[error("encoding: {0}")]
    Encode(#[from] CodecError),
}

impl ProduceError {
    /// True when the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProduceError::Unavailable(_))
    }

    fn from_kafka(e: KafkaError) -> Self {
        let code = e.rdkafka_error_code();
        let permanent = matches!(
            code,
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessage
                    | RDKafkaErrorCode::InvalidRecord
                    | RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::InvalidMessageSize
            )
        );
        if permanent {
            ProduceError::Rejected(e)
        } else {
            ProduceError::Unavailable(e)
        }
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
}

/// An idempotent, acks=all producer of typed records. Cheap to clone.
#[derive(Clone)]
pub struct EventProducer {
    producer: FutureProducer<ProducerContext>,
    codec: AvroCodec,
    cfg: KafkaConfig,
    /// Where produce outcomes are counted.
    metrics: ProducerMetrics,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer")
            .field("brokers", &self.cfg.brokers)
            .finish()
    }
}

impl EventProducer {
    pub fn new(
        cfg: &KafkaConfig,
        client_id: &str,
        codec: AvroCodec,
        metrics: ProducerMetrics,
    ) -> Result<Self, KafkaError> {
        let mut config = client_config(cfg, client_id);
        if !cfg.properties.contains_key("statistics.interval.ms") {
            config.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        }
        let producer: FutureProducer<ProducerContext> = config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", cfg.producer_linger_ms.to_string())
            .set(
                "batch.num.messages",
                cfg.producer_batch_max_records.to_string(),
            )
            .set("message.timeout.ms", cfg.produce_timeout_ms.to_string())
            .create_with_context(ProducerContext {
                produce_requests: metrics.produce_requests.clone(),
            })?;
        Ok(Self {
            producer,
            codec,
            cfg: cfg.clone(),
            metrics,
        })
    }

    /// The codec records are encoded with.
    pub fn codec(&self) -> &AvroCodec {
        &self.codec
    }

    /// Encodes `record` and sends it keyed by its store; resolves once acknowledged.
    pub async fn send<T: Record>(&self, record: &T) -> Result<Delivery, ProduceError> {
        let payload = self.codec.encode(record)?;
        let key = record.envelope().partition_key();
        self.send_raw(T::TOPIC, key.as_bytes(), &payload).await
    }

    /// Sends already-encoded bytes to the base topic `topic`.
    pub async fn send_raw(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
    ) -> Result<Delivery, ProduceError> {
        let full = self.cfg.topic(topic);
        let record = FutureRecord::to(&full).key(key).payload(payload);
        let timeout = Duration::from_millis(self.cfg.produce_timeout_ms);
        match self.producer.send(record, timeout).await {
            Ok(d) => {
                self.metrics
                    .produced
                    .with_label_values(&[topic, "acked"])
                    .inc();
                Ok(Delivery {
                    partition: d.partition,
                    offset: d.offset,
                })
            }
            Err((e, _)) => {
                self.metrics
                    .produced
                    .with_label_values(&[topic, "failed"])
                    .inc();
                Err(ProduceError::from_kafka(e))
            }
        }
    }

    /// Waits until everything queued is delivered (shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

/// Creates the pipeline's topics that do not exist yet, with the partitions given
/// and the durability and retention of `cfg.topics`, and compares the existing ones
/// with what is wanted (they are never changed). See [`crate::topic_admin`].
pub async fn ensure_topics(
    cfg: &KafkaConfig,
    topics: &[&str],
    partitions: i32,
) -> Result<Vec<TopicReport>, TopicError> {
    let reports = reconcile_topics(cfg, topics, partitions, Mode::Create).await?;
    for r in &reports {
        if let TopicStatus::Differs(diffs) = &r.status {
            for d in diffs {
                tracing::warn!(topic = %r.topic, difference = %d, "existing topic differs from its wanted settings");
            }
        }
    }
    Ok(reports)
}

/// Fetches cluster metadata once; Ok when a broker answers.
pub async fn probe(cfg: &KafkaConfig, timeout: Duration) -> Result<usize, String> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client_config(&cfg, "storepulse-probe")
            .create()
            .map_err(|e| e.to_string())?;
        consumer
            .fetch_metadata(None, timeout)
            .map(|m| m.brokers().len())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A `/readyz` check that a broker answers a metadata request.
pub fn readiness(cfg: &KafkaConfig) -> ReadinessCheck {
    let cfg = cfg.clone();
    ReadinessCheck::new("kafka", move || {
        let cfg = cfg.clone();
        Box::pin(async move { probe(&cfg, Duration::from_secs(2)).await.map(|_| ()) })
    })
}
