//! Dead letters: input that cannot be decoded or validated goes to
//! `ingest.rejected.v1` with its reason and its source coordinates, so it is never
//! lost and never blocks the partition it came from.
//!
//! Rejection ids are deterministic (UUIDv5 of the source coordinates, or of the
//! rejected bytes), so a rejection published twice — after a crash, or for a retried
//! HTTP batch — is one row in the read store.
//!
//! A dead letter is bounded in size: an original longer than
//! [`MAX_ORIGINAL_BYTES`] is truncated, and its full length and SHA-256 are kept
//! (`original_length`, `original_sha256`). Its text fields never hold a NUL (which
//! Postgres text cannot store): the dead-letter topic must always be storable, or a
//! bad record would have nowhere left to go.

use std::borrow::Cow;

use chrono::Utc;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::kafka::{EventProducer, ProduceError};
use crate::records::{Envelope, RejectedRecord, to_micros};

/// Most bytes of an original kept in a dead letter (the rest is cut; length and
/// hash of the whole are kept). Well under Kafka's default 1 MiB message size.
pub const MAX_ORIGINAL_BYTES: usize = 256 * 1024;

/// `text` as Postgres can store it: NUL replaced by U+FFFD.
pub fn storable_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

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
            let key = storable_text(&key);
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
                original_event_id.map(|id| storable_text(id).into_owned()),
                None,
                None,
                None,
            )
        }
    };
    RejectedRecord {
        envelope: Envelope {
            event_id: event_id.to_string(),
            tenant_id: storable_text(&tenant_id).into_owned(),
            store_id: storable_text(&store_id).into_owned(),
            occurred_at: now,
            received_at: now,
            source: source.to_string(),
        },
        reason: storable_text(&rejection.reason).into_owned(),
        field: rejection
            .field
            .as_deref()
            .map(|f| storable_text(f).into_owned()),
        original: original[..original.len().min(MAX_ORIGINAL_BYTES)]
            .to_vec()
            .into(),
        original_event_id,
        source_topic: topic,
        source_partition: partition,
        source_offset: offset,
        original_length: Some(original.len() as i64),
        original_sha256: Some(hex::encode(Sha256::digest(original))),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_original_is_cut_with_its_length_and_hash_kept() {
        let original = vec![b'x'; MAX_ORIGINAL_BYTES + 10];
        let r = rejected_record(
            RejectedFrom::Api {
                tenant_id: "t",
                store_id: "s",
                original_event_id: None,
            },
            &original,
            &Rejection::whole("too big"),
            "test",
        );
        assert_eq!(r.original.0.len(), MAX_ORIGINAL_BYTES);
        assert_eq!(r.original_length, Some(original.len() as i64));
        assert_eq!(
            r.original_sha256.as_deref(),
            Some(hex::encode(Sha256::digest(&original)).as_str())
        );
    }

    #[test]
    fn text_fields_never_carry_a_nul() {
        let r = rejected_record(
            RejectedFrom::Topic {
                topic: "pos.sales.v1",
                partition: 0,
                offset: 1,
                key: Some(b"ac\0me/s-\x001"),
            },
            b"\0raw\0",
            &Rejection::field("sku\0", "bad \0 value"),
            "test",
        );
        for text in [&r.envelope.tenant_id, &r.envelope.store_id, &r.reason] {
            assert!(!text.contains('\0'), "{text:?}");
        }
        assert_eq!(r.field.as_deref(), Some("sku\u{FFFD}"));
        assert_eq!(r.original.0, b"\0raw\0", "bytes are kept as they were");
    }
}
