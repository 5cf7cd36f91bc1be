//! The writer-schema registry: a compacted Kafka topic, `storepulse.schemas.v1`.
//!
//! Every record names its writer schema by fingerprint (single-object encoding). A
//! consumer that meets a fingerprint it was not built with — a producer upgraded
//! first, or a foreign connector with its own schema version — looks it up here
//! instead of dead-lettering the record. Producers publish the schemas they write
//! with when they start ([`publish_bundled`]); anyone may publish one (key: the hex
//! fingerprint, value: the `.avsc` JSON). The registry trusts no key: it parses each
//! value and computes the fingerprint itself, so a wrong or forged key registers
//! nothing under a false name.
//!
//! Why a topic rather than a Postgres table: every producer already talks to Kafka
//! (a foreign connector has no Postgres credentials), compaction keeps one record per
//! fingerprint forever, and the registry stays next to the data it describes
//! (docs/decisions/0006-schema-registry-topic.md).

use std::time::{Duration, Instant};

use apache_avro::Schema;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::avro::{AvroCodec, fingerprint};
use crate::config::KafkaConfig;
use crate::kafka::{EventProducer, ProduceError, client_config};
use crate::records::{
    AlertTransition, DemandForecast, InventoryChange, NotificationOutcome, PosHeartbeat, Record,
    RejectedRecord, SaleTransaction, SensorReading,
};

/// Base name of the registry topic (one partition, compacted; created with the
/// others by [`crate::kafka::ensure_topics`]).
pub const SCHEMAS_TOPIC: &str = crate::records::topic::SCHEMAS;

/// Why the registry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry topic: {0}")]
    Kafka(#[from] KafkaError),
    #[error("schema registry read was interrupted: {0}")]
    Join(String),
}

/// The `.avsc` text of every record type this build writes.
fn bundled_texts() -> [&'static str; 8] {
    [
        SaleTransaction::SCHEMA_JSON,
        InventoryChange::SCHEMA_JSON,
        PosHeartbeat::SCHEMA_JSON,
        SensorReading::SCHEMA_JSON,
        RejectedRecord::SCHEMA_JSON,
        AlertTransition::SCHEMA_JSON,
        DemandForecast::SCHEMA_JSON,
        NotificationOutcome::SCHEMA_JSON,
    ]
}

/// Hex of a fingerprint as it appears on the wire (the registry record key).
pub fn fingerprint_hex(fp: &[u8; 8]) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect()
}

/// Publishes `schema_json` to the registry; returns its fingerprint.
pub async fn publish(producer: &EventProducer, schema_json: &str) -> Result<String, ProduceError> {
    let schema = Schema::parse_str(schema_json)
        .map_err(|e| ProduceError::Encode(crate::avro::CodecError::from(e)))?;
    let key = fingerprint_hex(&fingerprint(&schema));
    producer
        .send_raw(SCHEMAS_TOPIC, key.as_bytes(), schema_json.as_bytes())
        .await?;
    Ok(key)
}

/// Publishes every schema this build writes with (idempotent: compaction keeps one).
pub async fn publish_bundled(producer: &EventProducer) -> Result<(), ProduceError> {
    for text in bundled_texts() {
        publish(producer, text).await?;
    }
    Ok(())
}

/// Reads the registry into a codec.
#[derive(Debug, Clone)]
pub struct SchemaRegistry {
    codec: AvroCodec,
    kafka: KafkaConfig,
}

impl SchemaRegistry {
    /// A registry that teaches `codec` the schemas it finds.
    pub fn new(codec: AvroCodec, kafka: &KafkaConfig) -> Self {
        Self {
            codec,
            kafka: kafka.clone(),
        }
    }

    /// The codec this registry feeds.
    pub fn codec(&self) -> &AvroCodec {
        &self.codec
    }

    /// Whether the codec knows the writer schema `fp`.
    pub fn knows(&self, fp: &[u8; 8]) -> bool {
        self.codec.knows(fp)
    }

    /// Reads the whole registry topic and registers every schema found; returns how
    /// many were new. Unparseable values are logged and skipped (they name no schema).
    pub async fn refresh(&self) -> Result<usize, RegistryError> {
        let kafka = self.kafka.clone();
        let texts = tokio::task::spawn_blocking(move || read_all(&kafka))
            .await
            .map_err(|e| RegistryError::Join(e.to_string()))??;
        let mut new = 0;
        for text in texts {
            match Schema::parse_str(&text) {
                Ok(schema) => {
                    let fp = fingerprint(&schema);
                    if !self.codec.knows(&fp) {
                        self.codec.register(schema);
                        info!(fingerprint = %fingerprint_hex(&fp), "learned writer schema from the registry");
                        new += 1;
                    }
                }
                Err(e) => warn!(error = %e, "registry holds a value that is not an Avro schema"),
            }
        }
        Ok(new)
    }
}

/// Every value of the registry topic, from the beginning to the current end.
fn read_all(kafka: &KafkaConfig) -> Result<Vec<String>, RegistryError> {
    let topic = kafka.topic(SCHEMAS_TOPIC);
    let consumer: BaseConsumer = client_config(kafka, "storepulse-schema-registry")
        .set("group.id", "storepulse-schema-registry-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let timeout = Duration::from_secs(5);
    let (low, high) = consumer.fetch_watermarks(&topic, 0, timeout)?;
    if high <= low {
        return Ok(Vec::new());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut out = Vec::new();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if let Some(v) = m.payload() {
                    out.push(String::from_utf8_lossy(v).into_owned());
                }
                if m.offset() + 1 >= high {
                    return Ok(out);
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    warn!(
        read = out.len(),
        "schema registry not read to its end within 15 s"
    );
    Ok(out)
}
