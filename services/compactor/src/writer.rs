//! The read-store writer: one Postgres transaction per batch holding the rows and the
//! consumer offsets they cover.
//!
//! Exactness comes from two independent guards:
//! - the stored offset of each partition is locked (`FOR UPDATE`) and records below it
//!   are skipped, so a batch re-read after a crash (or by a new partition owner) is
//!   not applied twice;
//! - every raw table is keyed by `event_id` with `ON CONFLICT DO NOTHING`, so the same
//!   event published twice (a client retry) is one row.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use prometheus::{IntCounterVec, Opts, Registry};
use storepulse_runtime::avro::AvroCodec;
use storepulse_runtime::consumer::{Batch, BatchProcessor, ConsumedRecord};
use storepulse_runtime::dead_letter::Rejection;
use storepulse_runtime::records::{
    Envelope, InventoryChange, InventoryChangeKind, PosHeartbeat, Record, RejectedRecord, SaleKind,
    SaleTransaction, SensorReading, from_micros, topic,
};
use uuid::Uuid;

/// The topics the compactor folds into the read store.
pub const INPUT_TOPICS: [&str; 5] = [
    topic::SALES,
    topic::INVENTORY,
    topic::DEVICE,
    topic::SENSOR_READINGS,
    topic::REJECTED,
];

/// A decoded input record.
#[derive(Debug, Clone)]
pub enum RawEvent {
    Sale(SaleTransaction),
    Inventory(InventoryChange),
    Heartbeat(PosHeartbeat),
    Sensor(SensorReading),
    Rejected(RejectedRecord),
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("postgres: {}", storepulse_runtime::db::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// Columns shared by the raw tables, as parallel arrays for `unnest`.
#[derive(Default)]
struct EnvelopeColumns {
    event_id: Vec<Uuid>,
    tenant_id: Vec<String>,
    store_id: Vec<String>,
    occurred_at: Vec<DateTime<Utc>>,
    received_at: Vec<DateTime<Utc>>,
    source: Vec<String>,
}

impl EnvelopeColumns {
    fn push(&mut self, e: &Envelope, id: Uuid) {
        self.event_id.push(id);
        self.tenant_id.push(e.tenant_id.clone());
        self.store_id.push(e.store_id.clone());
        self.occurred_at.push(from_micros(e.occurred_at));
        self.received_at.push(from_micros(e.received_at));
        self.source.push(e.source.clone());
    }
    fn len(&self) -> usize {
        self.event_id.len()
    }
}

/// Writes batches of raw events to Postgres with their offsets.
#[derive(Debug)]
pub struct ReadStoreWriter {
    pool: Pool,
    codec: AvroCodec,
    /// The consumer group whose offsets this writer stores.
    group_id: String,
    /// `storepulse_compactor_rows_written_total{table}`.
    rows_written: IntCounterVec,
    /// `storepulse_compactor_records_skipped_total{reason}`: already applied.
    skipped: IntCounterVec,
}

impl ReadStoreWriter {
    pub fn new(
        pool: Pool,
        codec: AvroCodec,
        group_id: String,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let rows_written = IntCounterVec::new(
            Opts::new(
                "compactor_rows_written_total",
                "Rows inserted into the read store",
            ),
            &["table"],
        )?;
        let skipped = IntCounterVec::new(
            Opts::new(
                "compactor_records_skipped_total",
                "Records not written because they were already applied",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(rows_written.clone()))?;
        registry.register(Box::new(skipped.clone()))?;
        Ok(Self {
            pool,
            codec,
            group_id,
            rows_written,
            skipped,
        })
    }

    /// Runs one bulk insert and counts the rows it added.
    async fn insert(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        table: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<(), WriteError> {
        let n = tx.execute(sql, params).await?;
        self.rows_written.with_label_values(&[table]).inc_by(n);
        Ok(())
    }
}

fn event_uuid(e: &Envelope) -> Result<Uuid, Rejection> {
    Uuid::parse_str(&e.event_id)
        .map_err(|_| Rejection::field("envelope.event_id", format!("not a UUID: {:?}", e.event_id)))
}

fn decode_as<T: Record>(codec: &AvroCodec, rec: &ConsumedRecord) -> Result<T, Rejection> {
    let value: T = codec
        .decode(&rec.payload)
        .map_err(|e| Rejection::whole(format!("undecodable {}: {e}", T::TOPIC)))?;
    event_uuid(value.envelope())?;
    Ok(value)
}

impl BatchProcessor for ReadStoreWriter {
    type Item = RawEvent;
    type Error = WriteError;

    fn decode(&self, rec: &ConsumedRecord) -> Result<RawEvent, Rejection> {
        let c = &self.codec;
        Ok(match rec.topic.as_str() {
            topic::SALES => RawEvent::Sale(decode_as(c, rec)?),
            topic::INVENTORY => RawEvent::Inventory(decode_as(c, rec)?),
            topic::DEVICE => RawEvent::Heartbeat(decode_as(c, rec)?),
            topic::SENSOR_READINGS => RawEvent::Sensor(decode_as(c, rec)?),
            topic::REJECTED => RawEvent::Rejected(decode_as(c, rec)?),
            other => {
                return Err(Rejection::whole(format!(
                    "compactor does not read topic {other}"
                )));
            }
        })
    }

    async fn apply(&mut self, batch: &Batch<RawEvent>) -> Result<(), WriteError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;

        let mut stored: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        let lock = tx
            .prepare_cached(include_str!("../sql/lock_offset.sql"))
            .await?;
        for (topic, partition) in batch.next_offsets.keys() {
            let row = tx
                .query_opt(&lock, &[&self.group_id, topic, partition])
                .await?;
            stored.insert((topic.as_str(), *partition), row.map_or(0, |r| r.get(0)));
        }

        let mut sales = EnvelopeColumns::default();
        let (mut s_kind, mut s_txn, mut s_term, mut s_cur, mut s_total, mut s_orig) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        let mut lines = EnvelopeColumns::default();
        let (mut l_no, mut l_sku, mut l_qty, mut l_price) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut inv = EnvelopeColumns::default();
        let (mut i_kind, mut i_sku, mut i_qty, mut i_reason) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut hb = EnvelopeColumns::default();
        let (mut h_term, mut h_up, mut h_printer, mut h_net, mut h_ver) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut sr = EnvelopeColumns::default();
        let (mut r_dev, mut r_kind, mut r_val, mut r_unit, mut r_app) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut rj = EnvelopeColumns::default();
        let (mut j_reason, mut j_field, mut j_orig, mut j_oid, mut j_topic, mut j_part, mut j_off) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );

        let mut already = 0u64;
        for p in &batch.items {
            if p.offset
                < stored
                    .get(&(p.topic.as_str(), p.partition))
                    .copied()
                    .unwrap_or(0)
            {
                already += 1;
                continue;
            }
            // decode() guaranteed the id parses.
            let id = |e: &Envelope| Uuid::parse_str(&e.event_id).unwrap_or_default();
            match &p.item {
                RawEvent::Sale(s) => {
                    sales.push(&s.envelope, id(&s.envelope));
                    s_kind.push(match s.kind {
                        SaleKind::Sale => "sale",
                        SaleKind::Refund => "refund",
                        SaleKind::Void => "void",
                    });
                    s_txn.push(s.transaction_id.clone());
                    s_term.push(s.terminal_id.clone());
                    s_cur.push(s.currency.clone());
                    s_total.push(s.total_minor);
                    s_orig.push(s.original_transaction_id.clone());
                    for (n, line) in s.lines.iter().enumerate() {
                        lines.push(&s.envelope, id(&s.envelope));
                        l_no.push(n as i32);
                        l_sku.push(line.sku.clone());
                        l_qty.push(line.quantity);
                        l_price.push(line.unit_price_minor);
                    }
                }
                RawEvent::Inventory(c) => {
                    inv.push(&c.envelope, id(&c.envelope));
                    i_kind.push(match c.kind {
                        InventoryChangeKind::Snapshot => "snapshot",
                        InventoryChangeKind::Adjustment => "adjustment",
                    });
                    i_sku.push(c.sku.clone());
                    i_qty.push(c.quantity);
                    i_reason.push(c.reason.map(|r| format!("{r:?}").to_lowercase()));
                }
                RawEvent::Heartbeat(h) => {
                    hb.push(&h.envelope, id(&h.envelope));
                    h_term.push(h.terminal_id.clone());
                    h_up.push(h.app_up);
                    h_printer.push(format!("{:?}", h.printer).to_lowercase());
                    h_net.push(format!("{:?}", h.network).to_lowercase());
                    h_ver.push(h.software_version.clone());
                }
                RawEvent::Sensor(r) => {
                    sr.push(&r.envelope, id(&r.envelope));
                    r_dev.push(r.device_id.clone());
                    r_kind.push(format!("{:?}", r.kind).to_lowercase());
                    r_val.push(r.value);
                    r_unit.push(format!("{:?}", r.unit).to_lowercase());
                    r_app.push(r.appliance.clone());
                }
                RawEvent::Rejected(r) => {
                    rj.push(&r.envelope, id(&r.envelope));
                    j_reason.push(r.reason.clone());
                    j_field.push(r.field.clone());
                    j_orig.push(r.original.0.clone());
                    j_oid.push(r.original_event_id.clone());
                    j_topic.push(r.source_topic.clone());
                    j_part.push(r.source_partition);
                    j_off.push(r.source_offset);
                }
            }
        }

        if sales.len() > 0 {
            self.insert(
                &tx,
                "sales",
                include_str!("../sql/insert_sales.sql"),
                &[
                    &sales.event_id,
                    &sales.tenant_id,
                    &sales.store_id,
                    &sales.occurred_at,
                    &sales.received_at,
                    &sales.source,
                    &s_kind,
                    &s_txn,
                    &s_term,
                    &s_cur,
                    &s_total,
                    &s_orig,
                ],
            )
            .await?;
            self.insert(
                &tx,
                "sale_lines",
                include_str!("../sql/insert_sale_lines.sql"),
                &[
                    &lines.event_id,
                    &l_no,
                    &lines.tenant_id,
                    &lines.store_id,
                    &lines.occurred_at,
                    &l_sku,
                    &l_qty,
                    &l_price,
                ],
            )
            .await?;
        }
        if inv.len() > 0 {
            self.insert(
                &tx,
                "inventory_changes",
                include_str!("../sql/insert_inventory.sql"),
                &[
                    &inv.event_id,
                    &inv.tenant_id,
                    &inv.store_id,
                    &inv.occurred_at,
                    &inv.received_at,
                    &inv.source,
                    &i_kind,
                    &i_sku,
                    &i_qty,
                    &i_reason,
                ],
            )
            .await?;
        }
        if hb.len() > 0 {
            self.insert(
                &tx,
                "pos_heartbeats",
                include_str!("../sql/insert_heartbeats.sql"),
                &[
                    &hb.event_id,
                    &hb.tenant_id,
                    &hb.store_id,
                    &hb.occurred_at,
                    &hb.received_at,
                    &hb.source,
                    &h_term,
                    &h_up,
                    &h_printer,
                    &h_net,
                    &h_ver,
                ],
            )
            .await?;
        }
        if sr.len() > 0 {
            self.insert(
                &tx,
                "sensor_readings",
                include_str!("../sql/insert_sensor_readings.sql"),
                &[
                    &sr.event_id,
                    &sr.tenant_id,
                    &sr.store_id,
                    &sr.occurred_at,
                    &sr.received_at,
                    &sr.source,
                    &r_dev,
                    &r_kind,
                    &r_val,
                    &r_unit,
                    &r_app,
                ],
            )
            .await?;
        }
        if rj.len() > 0 {
            self.insert(
                &tx,
                "rejected_events",
                include_str!("../sql/insert_rejected.sql"),
                &[
                    &rj.event_id,
                    &rj.tenant_id,
                    &rj.store_id,
                    &rj.occurred_at,
                    &rj.received_at,
                    &rj.source,
                    &j_reason,
                    &j_field,
                    &j_orig,
                    &j_oid,
                    &j_topic,
                    &j_part,
                    &j_off,
                ],
            )
            .await?;
        }

        let store = tx
            .prepare_cached(include_str!("../sql/store_offset.sql"))
            .await?;
        for ((topic, partition), next) in &batch.next_offsets {
            tx.execute(&store, &[&self.group_id, topic, partition, next])
                .await?;
        }
        tx.commit().await?;
        if already > 0 {
            self.skipped
                .with_label_values(&["offset_already_applied"])
                .inc_by(already);
        }
        Ok(())
    }

    fn is_retryable(&self, error: &WriteError) -> bool {
        match error {
            WriteError::Pool(_) => true,
            WriteError::Postgres(e) => match e.code() {
                // No SQLSTATE: the connection broke.
                None => true,
                Some(code) => {
                    let c = code.code();
                    c.starts_with("08")
                        || c.starts_with("40")
                        || c.starts_with("53")
                        || c.starts_with("57P")
                }
            },
        }
    }
}
