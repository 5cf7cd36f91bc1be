//! Drives the compactor's writer directly, as its consumer would: records appended
//! to per-topic logs (partition 0) at their next offsets, handed over in batches.

use std::collections::BTreeMap;

use storepulse_compactor::writer::{RawEvent, ReadStoreWriter, WriteError};
use storepulse_runtime::AvroCodec;
use storepulse_runtime::consumer::{Batch, BatchProcessor, ConsumedRecord, Positioned};
use storepulse_runtime::dead_letter::Rejection;
use storepulse_runtime::records::Record;

pub struct Feed {
    pub writer: ReadStoreWriter,
    pub codec: AvroCodec,
    next: BTreeMap<String, i64>,
    pending: Vec<ConsumedRecord>,
}

impl Feed {
    /// A writer storing its offsets under consumer group `group`.
    pub fn new(pool: &deadpool_postgres::Pool, group: &str) -> Self {
        let codec = AvroCodec::new();
        let writer = ReadStoreWriter::new(
            pool.clone(),
            codec.clone(),
            group.into(),
            &prometheus::Registry::new(),
        )
        .expect("writer");
        Self {
            writer,
            codec,
            next: BTreeMap::new(),
            pending: Vec::new(),
        }
    }

    /// The record as the consumer would receive it at the end of its topic's log.
    fn logged<T: Record>(&mut self, record: &T) -> ConsumedRecord {
        let next = self.next.entry(T::TOPIC.to_string()).or_insert(0);
        let offset = *next;
        *next += 1;
        ConsumedRecord {
            topic: T::TOPIC.into(),
            partition: 0,
            offset,
            key: Some(record.envelope().partition_key().into_bytes()),
            payload: self.codec.encode(record).expect("encode"),
        }
    }

    /// Appends `record` to its topic; [`Feed::flush`] applies what was appended.
    pub fn push<T: Record>(&mut self, record: &T) {
        let rec = self.logged(record);
        self.pending.push(rec);
    }

    /// What the writer makes of `record` (without appending it): the contract's verdict.
    pub fn decode<T: Record>(&mut self, record: &T) -> Result<RawEvent, Rejection> {
        let rec = ConsumedRecord {
            topic: T::TOPIC.into(),
            partition: 0,
            offset: 0,
            key: Some(record.envelope().partition_key().into_bytes()),
            payload: self.codec.encode(record).expect("encode"),
        };
        self.writer.decode(&rec)
    }

    /// Applies everything appended since the last flush as one batch.
    pub async fn flush(&mut self) -> Result<(), WriteError> {
        let mut batch = Batch {
            items: Vec::new(),
            next_offsets: BTreeMap::new(),
        };
        for rec in std::mem::take(&mut self.pending) {
            let item = self.writer.decode(&rec).expect("honours the contract");
            let next = batch
                .next_offsets
                .entry((rec.topic.clone(), rec.partition))
                .or_insert(0);
            *next = (*next).max(rec.offset + 1);
            batch.items.push(Positioned {
                topic: rec.topic,
                partition: rec.partition,
                offset: rec.offset,
                item,
            });
        }
        self.writer.apply(&batch).await
    }
}
