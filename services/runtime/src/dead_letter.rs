//! Dead letters: input that cannot be decoded or validated goes to
//! `ingest.rejected.v1` with its reason and its source coordinates, so it is never
//! lost and never blocks the partition it came from.
//!
//! Rejection ids are deterministic (UUIDv5 of the source coordinates, or of the
//! rejected bytes), so a rejection published twice — after a crash, or for a retried
//! HTTP batch — is one row in the read store.

use chrono::Utc;
use uuid::Uuid;

use crate::kafka::{EventProducer, ProduceError};
use crate::records::{Envelope, RejectedRecord, to_micros};

/// Namespace of rejection ids.
const REJECTION_NAMESPACE: Uuid = Uuid::from_u128(0x6a0d_4f0e_8d1c_4c55_9b3e_5354_5055_4c53);

/// Why one input was refused: a reason a person can act on, and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub field: Option<String>,
    pub reason: String,
}

impl Rejection {
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            reason: reason.into(),
        }
    }

    pub fn whole(reason: impl Into<String>) -> Self {
        Self {
            field: None,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// Where a rejected input came from.
#[derive(Debug, Clone)]
pub enum RejectedFrom<'a> {
    /// A record read from Kafka.
    Topic {
        topic: &'a str,
        partition: i32,
        offset: i64,
        key: Option<&'a [u8]>,
    },
    /// An event posted to an API, on behalf of a known store.
    Api {
        tenant_id: &'a str,
        store_id: &'a str,
        original_event_id: Option<&'a str>,
    },
}

/// Builds the dead-letter record for `original` refused for `rejection`.
pub fn rejected_record(
    from: RejectedFrom<'_>,
    original: &[u8],
    rejection: &Rejection,
    source: &str,
) -> RejectedRecord {
    let now = to_micros(Utc::now());
    let (tenant_id, store_id, event_id, original_event_id, topic, partition, offset) = match from {
        RejectedFrom::Topic {
            topic,
            partition,
            offset,
            key,
        } => {
            let key = key.map(String::from_utf8_lossy).unwrap_or_default();
            let (tenant, store) = key.split_once('/').unwrap_or(("unknown", "unknown"));
            let id = Uuid::new_v5(
                &REJECTION_NAMESPACE,
                format!("{topic}/{partition}/{offset}").as_bytes(),
            );
            (
                tenant.to_string(),
                store.to_string(),
                id,
                None,
                Some(topic.to_string()),
                Some(partition),
                Some(offset),
            )
        }
        RejectedFrom::Api {
            tenant_id,
            store_id,
            original_event_id,
        } => {
            let mut name = format!("{tenant_id}/{store_id}/").into_bytes();
            name.extend_from_slice(original);
            let id = Uuid::new_v5(&REJECTION_NAMESPACE, &name);
            (
                tenant_id.to_string(),
                store_id.to_string(),
                id,
                original_event_id.map(str::to_string),
                None,
                None,
                None,
            )
        }
    };
    RejectedRecord {
        envelope: Envelope {
            event_id: event_id.to_string(),
            tenant_id,
            store_id,
            occurred_at: now,
            received_at: now,
            source: source.to_string(),
        },
        reason: rejection.reason.clone(),
        field: rejection.field.clone(),
        original: original.to_vec().into(),
        original_event_id,
        source_topic: topic,
        source_partition: partition,
        source_offset: offset,
    }
}

/// Publishes rejections to the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    producer: EventProducer,
    /// Written as the rejection's `source`, so operators see who refused it.
    service: String,
}

impl DeadLetters {
    pub fn new(producer: EventProducer, service: impl Into<String>) -> Self {
        Self {
            producer,
            service: service.into(),
        }
    }

    /// Publishes one rejection; resolves once the broker acknowledged it.
    pub async fn publish(
        &self,
        from: RejectedFrom<'_>,
        original: &[u8],
        rejection: &Rejection,
    ) -> Result<RejectedRecord, ProduceError> {
        let record = rejected_record(from, original, rejection, &self.service);
        self.producer.send(&record).await?;
        Ok(record)
    }
}
