//! Reading topics outside the consumer group, from a point in time to their end at
//! the start of the read: for the outbox check on restore (which transitions are
//! already on `alerts.v1`) and for `storepulse rules backtest`.
//!
//! Blocking (librdkafka's base consumer); call it from `spawn_blocking`. Every
//! partition is read in offset order; the read ends once each partition reached
//! the high watermark it had when the read began.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use storepulse_runtime::KafkaConfig;
use storepulse_runtime::consumer::ConsumedRecord;
use storepulse_runtime::kafka::client_config;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("reading {topic} did not reach its end within {secs} s")]
    Timeout { topic: String, secs: u64 },
}

/// Reads `topics` (base names) from the first record at or after `since_ms`
/// (Kafka timestamps, ms; `None`: the beginning) to their current end, calling
/// `each` per record in offset order per partition.
pub fn read_to_end(
    kafka: &KafkaConfig,
    topics: &[&str],
    since_ms: Option<i64>,
    timeout: Duration,
    mut each: impl FnMut(&ConsumedRecord),
) -> Result<u64, ReadError> {
    let consumer: BaseConsumer = client_config(kafka, "storepulse-rules-reader")
        .set(
            "group.id",
            format!("storepulse-rules-reader-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let started = Instant::now();
    let wait = Duration::from_secs(10).min(timeout);
    let mut start = TopicPartitionList::new();
    // (full topic, partition) -> high watermark at the start.
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    for base in topics {
        let full = kafka.topic(base);
        let meta = consumer.fetch_metadata(Some(&full), wait)?;
        for t in meta.topics() {
            for p in t.partitions() {
                let (low, high) = consumer.fetch_watermarks(&full, p.id(), wait)?;
                if high <= low {
                    continue;
                }
                ends.insert((full.clone(), p.id()), high);
                let offset = match since_ms {
                    Some(ms) => Offset::Offset(ms),
                    None => Offset::Beginning,
                };
                start.add_partition_offset(&full, p.id(), offset)?;
            }
        }
    }
    if ends.is_empty() {
        return Ok(0);
    }
    let start = match since_ms {
        Some(_) => consumer.offsets_for_times(start, wait)?,
        None => start,
    };
    // Partitions with nothing at or after `since` have an End offset: skip them.
    let mut assign = TopicPartitionList::new();
    for e in start.elements() {
        match e.offset() {
            Offset::Offset(o)
                if ends
                    .get(&(e.topic().to_string(), e.partition()))
                    .is_some_and(|h| o < *h) =>
            {
                assign.add_partition_offset(e.topic(), e.partition(), Offset::Offset(o))?;
            }
            Offset::Beginning => {
                assign.add_partition_offset(e.topic(), e.partition(), Offset::Beginning)?;
            }
            _ => {
                ends.remove(&(e.topic().to_string(), e.partition()));
            }
        }
    }
    if ends.is_empty() {
        return Ok(0);
    }
    consumer.assign(&assign)?;
    let mut read = 0u64;
    while !ends.is_empty() {
        if started.elapsed() > timeout {
            let topic = ends
                .keys()
                .next()
                .map(|(t, _)| t.clone())
                .unwrap_or_default();
            return Err(ReadError::Timeout {
                topic,
                secs: timeout.as_secs(),
            });
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        let key = (m.topic().to_string(), m.partition());
        let Some(end) = ends.get(&key).copied() else {
            continue;
        };
        if m.offset() < end {
            each(&ConsumedRecord {
                topic: kafka.base_topic(m.topic()).to_string(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            });
            read += 1;
        }
        if m.offset() + 1 >= end {
            ends.remove(&key);
        }
    }
    Ok(read)
}
