//! `storepulse dlq`: the dead letters of `ingest.rejected.v1` for operators — list
//! them, and redrive them (produce a dead letter's original record again to its
//! source topic, keyed by its store, once the cause is fixed).
//!
//! Guarantees:
//! - Reading changes nothing: partitions are assigned by hand under a throwaway
//!   group id and no offset is ever committed; it reads every partition up to its
//!   end at the start (or from `since`, by time) and stops there.
//! - Only what can be sent as it was is redriven: a dead letter from a topic whose
//!   original is complete (its length is `original_length`). Rejections of the HTTP
//!   API (the connector re-posts those), truncated originals (over 256 KiB) and
//!   dead letters of the dead-letter topic itself are reported with why, not sent.
//! - A redriven record keeps its bytes and its key (`tenant/store`, so it lands on
//!   its store's partition); consumers dedupe by event id, so a record that was
//!   applied meanwhile is not applied twice by the compactor.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use storepulse_runtime::kafka::{self, Delivery};
use storepulse_runtime::records::{RejectedRecord, topic};
use storepulse_runtime::{AvroCodec, EventProducer, KafkaConfig, ProducerMetrics};

/// One dead letter and where it is in `ingest.rejected.v1`.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub record: RejectedRecord,
}

/// Which dead letters to take. Every given condition must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Base name of the topic the original came from (`api` for the HTTP API).
    pub source_topic: Option<String>,
    /// Rejected at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// The reason contains this text (case-insensitive).
    pub reason_contains: Option<String>,
    pub tenant: Option<String>,
    pub store: Option<String>,
    /// Only these dead letters, by `partition:offset` in `ingest.rejected.v1`.
    pub positions: Vec<(i32, i64)>,
}

impl Filter {
    fn matches(&self, d: &DeadLetter) -> bool {
        let r = &d.record;
        let source = r.source_topic.as_deref().unwrap_or("api");
        self.source_topic.as_deref().is_none_or(|t| t == source)
            && self
                .since
                .is_none_or(|t| r.envelope.received_at >= t.timestamp_micros())
            && self
                .reason_contains
                .as_deref()
                .is_none_or(|text| r.reason.to_lowercase().contains(&text.to_lowercase()))
            && self
                .tenant
                .as_deref()
                .is_none_or(|t| t == r.envelope.tenant_id)
            && self
                .store
                .as_deref()
                .is_none_or(|s| s == r.envelope.store_id)
            && (self.positions.is_empty() || self.positions.contains(&(d.partition, d.offset)))
    }
}

/// A `partition:offset` of the dead-letter topic, as `dlq list` prints it.
pub fn parse_position(text: &str) -> Result<(i32, i64), String> {
    let (p, o) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?}: expected PARTITION:OFFSET, e.g. 2:1041"))?;
    let p = p
        .parse()
        .map_err(|_| format!("{text:?}: partition {p:?} is not a number"))?;
    let o = o
        .parse()
        .map_err(|_| format!("{text:?}: offset {o:?} is not a number"))?;
    Ok((p, o))
}

/// What [`read`] found.
#[derive(Debug, Default)]
pub struct ReadResult {
    /// Dead letters matching the filter, by partition then offset.
    pub letters: Vec<DeadLetter>,
    /// Records of the topic that are not dead letters this build can decode, by
    /// `partition:offset` and why.
    pub undecodable: Vec<(i32, i64, String)>,
}

/// Every dead letter matching `filter`, read from `ingest.rejected.v1` up to the end
/// each partition had at the start. Gives up when no record arrives for `idle`.
pub async fn read(
    kafka: &KafkaConfig,
    filter: &Filter,
    idle: Duration,
) -> anyhow::Result<ReadResult> {
    let cfg = kafka.clone();
    let filter = filter.clone();
    tokio::task::spawn_blocking(move || read_blocking(&cfg, &filter, idle)).await?
}

fn read_blocking(cfg: &KafkaConfig, filter: &Filter, idle: Duration) -> anyhow::Result<ReadResult> {
    let name = cfg.topic(topic::REJECTED);
    let group = format!("storepulse-dlq-{}", uuid::Uuid::new_v4().simple());
    let consumer: BaseConsumer = kafka::client_config(cfg, "storepulse-dlq")
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("kafka client")?;
    let timeout = Duration::from_secs(10);
    let meta = consumer
        .fetch_metadata(Some(&name), timeout)
        .with_context(|| format!("metadata of {name}"))?;
    let partitions: Vec<i32> = meta
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(
        !partitions.is_empty(),
        "topic {name} not found (run storepulse topics)"
    );

    // Where to start and stop, per partition.
    let mut start = TopicPartitionList::new();
    let mut ends = std::collections::BTreeMap::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(&name, p, timeout)
            .with_context(|| format!("end offset of {name}/{p}"))?;
        if high > low {
            ends.insert(p, high);
            start.add_partition_offset(&name, p, Offset::Offset(low))?;
        }
    }
    if let Some(since) = filter.since {
        // Skip what was written before `since` (record timestamps are the produce time).
        let mut times = TopicPartitionList::new();
        for &p in ends.keys() {
            times.add_partition_offset(&name, p, Offset::Offset(since.timestamp_millis()))?;
        }
        let found = consumer
            .offsets_for_times(times, timeout)
            .context("offsets by time")?;
        for e in found.elements() {
            match e.offset() {
                Offset::Offset(o) => {
                    start.set_partition_offset(&name, e.partition(), Offset::Offset(o))?
                }
                // Nothing written since then in this partition.
                _ => {
                    ends.remove(&e.partition());
                }
            }
        }
    }
    let mut result = ReadResult::default();
    if ends.is_empty() {
        return Ok(result);
    }
    let mut assignment = TopicPartitionList::new();
    for e in start.elements() {
        if ends.contains_key(&e.partition()) {
            assignment.add_partition_offset(&name, e.partition(), e.offset())?;
        }
    }
    consumer.assign(&assignment).context("assign")?;

    let codec = AvroCodec::new();
    let mut last_progress = Instant::now();
    while !ends.is_empty() {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            anyhow::ensure!(
                last_progress.elapsed() < idle,
                "no record from {name} for {idle:?} before its end (partitions left: {:?})",
                ends.keys().collect::<Vec<_>>()
            );
            continue;
        };
        let message = message.context("reading the dead-letter topic")?;
        last_progress = Instant::now();
        let (p, o) = (message.partition(), message.offset());
        match codec.decode_resolving::<RejectedRecord>(message.payload().unwrap_or_default()) {
            Ok(record) => {
                let letter = DeadLetter {
                    partition: p,
                    offset: o,
                    record,
                };
                if filter.matches(&letter) {
                    result.letters.push(letter);
                }
            }
            Err(e) => result.undecodable.push((p, o, e.to_string())),
        }
        if ends.get(&p).is_some_and(|end| o + 1 >= *end) {
            ends.remove(&p);
        }
    }
    result.letters.sort_by_key(|d| (d.partition, d.offset));
    Ok(result)
}

/// Why a dead letter cannot be redriven, if it cannot.
pub fn not_redrivable(d: &DeadLetter) -> Option<&'static str> {
    let r = &d.record;
    match r.source_topic.as_deref() {
        None => Some("rejected by the HTTP API: the connector re-posts it"),
        Some(t) if t == topic::REJECTED => Some("a dead letter of the dead-letter topic"),
        Some(_)
            if r.original_length
                .is_some_and(|n| n != r.original.0.len() as i64) =>
        {
            Some("original truncated (over 256 KiB); only its length and SHA-256 are kept")
        }
        Some(_) => None,
    }
}

/// The key a redriven record is produced with: its store's (`tenant/store`), none
/// when the original had none.
fn redrive_key(r: &RejectedRecord) -> Option<String> {
    let (t, s) = (&r.envelope.tenant_id, &r.envelope.store_id);
    (!(t == "unknown" && s == "unknown")).then(|| format!("{t}/{s}"))
}

/// One dead letter's fate in a redrive.
#[derive(Debug, Clone, Serialize)]
pub struct RedriveOutcome {
    pub dead_letter: String,
    pub source: String,
    /// Where it was produced (`partition:offset` of the source topic), or why not.
    pub result: Result<String, String>,
}

/// Produces each redrivable letter's original to its source topic (nothing with
/// `dry_run`), one after another, each acknowledged before the next.
pub async fn redrive(
    kafka: &KafkaConfig,
    letters: &[DeadLetter],
    dry_run: bool,
) -> anyhow::Result<Vec<RedriveOutcome>> {
    let producer = if dry_run {
        None
    } else {
        Some(EventProducer::new(
            kafka,
            "storepulse-dlq",
            AvroCodec::new(),
            // The CLI's own registry: the producer needs one; nothing scrapes it.
            ProducerMetrics::register(&storepulse_runtime::telemetry::service_registry("dlq"))?,
        )?)
    };
    let mut outcomes = Vec::with_capacity(letters.len());
    for d in letters {
        let r = &d.record;
        let source = match (&r.source_topic, r.source_partition, r.source_offset) {
            (Some(t), Some(p), Some(o)) => format!("{t}/{p}/{o}"),
            (Some(t), _, _) => t.clone(),
            _ => "api".into(),
        };
        let result = match (not_redrivable(d), &producer, r.source_topic.as_deref()) {
            (Some(why), _, _) => Err(why.to_string()),
            (None, None, _) => Ok("would be produced (dry run)".to_string()),
            (None, Some(producer), Some(topic)) => {
                let key = redrive_key(r).unwrap_or_default();
                let Delivery { partition, offset } = producer
                    .send_raw(topic, key.as_bytes(), &r.original.0)
                    .await
                    .with_context(|| {
                        format!(
                            "producing dead letter {}:{} to {topic}",
                            d.partition, d.offset
                        )
                    })?;
                Ok(format!("{topic}/{partition}/{offset}"))
            }
            (None, Some(_), None) => Err("no source topic".to_string()),
        };
        outcomes.push(RedriveOutcome {
            dead_letter: format!("{}:{}", d.partition, d.offset),
            source,
            result,
        });
    }
    Ok(outcomes)
}

/// A rejection time (µs since the epoch) as RFC 3339.
pub fn micros_to_rfc3339(micros: i64) -> String {
    Utc.timestamp_micros(micros)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| micros.to_string())
}

/// One line of `dlq list` as JSON.
#[derive(Debug, Serialize)]
pub struct ListedDeadLetter<'a> {
    pub dead_letter: String,
    pub rejected_at: String,
    pub rejected_by: &'a str,
    pub source_topic: Option<&'a str>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub tenant_id: &'a str,
    pub store_id: &'a str,
    pub original_event_id: Option<&'a str>,
    pub field: Option<&'a str>,
    pub reason: &'a str,
    pub original_length: Option<i64>,
    pub original_sha256: Option<&'a str>,
    pub redrivable: bool,
}

impl<'a> From<&'a DeadLetter> for ListedDeadLetter<'a> {
    fn from(d: &'a DeadLetter) -> Self {
        let r = &d.record;
        Self {
            dead_letter: format!("{}:{}", d.partition, d.offset),
            rejected_at: micros_to_rfc3339(r.envelope.received_at),
            rejected_by: &r.envelope.source,
            source_topic: r.source_topic.as_deref(),
            source_partition: r.source_partition,
            source_offset: r.source_offset,
            tenant_id: &r.envelope.tenant_id,
            store_id: &r.envelope.store_id,
            original_event_id: r.original_event_id.as_deref(),
            field: r.field.as_deref(),
            reason: &r.reason,
            original_length: r.original_length,
            original_sha256: r.original_sha256.as_deref(),
            redrivable: not_redrivable(d).is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_or_say_what_is_wrong() {
        assert_eq!(parse_position("2:1041"), Ok((2, 1041)));
        assert!(
            parse_position("2")
                .expect_err("invalid")
                .contains("PARTITION:OFFSET")
        );
        assert!(
            parse_position("x:1")
                .expect_err("invalid")
                .contains("partition")
        );
        assert!(
            parse_position("1:y")
                .expect_err("invalid")
                .contains("offset")
        );
    }
}
