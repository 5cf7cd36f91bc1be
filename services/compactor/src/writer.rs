//! The read-store writer: one Postgres transaction per batch holding the rows and the
//! consumer offsets they cover.
//!
//! Exactness comes from two independent guards:
//! - the stored offset of each partition is locked (`FOR UPDATE`) and records below it
//!   are skipped, so a batch re-read after a crash (or by a new partition owner) is
//!   not applied twice;
//! - the scoped idempotency key `(tenant_id, store_id, event_id)` of every raw event
//!   is inserted into the key ledger `event_keys` (per relation, with the content
//!   hash) with `ON CONFLICT DO NOTHING`, and the raw row is inserted only for the
//!   keys that statement inserted, so the same event published twice (a client
//!   retry) is one row. The raw tables themselves carry no unique key, so they can be
//!   partitioned by time (decision 0009). A record that reuses a stored key with a
//!   different payload is not applied, counted
//!   (`storepulse_compactor_event_id_conflicts_total`) and recorded in
//!   `event_id_conflicts` with its coordinates.
//!
//! On plain PostgreSQL the analyst rollups (`sales_hourly`, `sales_daily`,
//! `sensor_stats_5m`, `sensor_stats_hourly`, `pos_uptime_daily`) are maintained in the
//! same transaction, by the statements that insert the raw rows: their increments
//! come only from the rows those statements actually inserted (`RETURNING`), so a
//! rollup always equals a recount of the raw tables (decision 0008).
//!
//! On both flavours the current-state relations (`device_last_seen`, `stock_on_hand`,
//! `alert_history`, `forecast_daily`; migration 0007) are kept the same way, from the
//! rows inserted, with order-independent combinations (the greatest `(occurred_at,
//! event_id)` stands, earliest/latest times, highest severity, sums), so arrival
//! order, batching and repeats cannot change them. `stock_on_hand` also reads the
//! store's stored adjustments when a newer snapshot arrives; the writer locks the
//! batch's stores first (`lock_stores.sql`) so no other writer of a store races it.
//!
//! A value Postgres refuses fails the batch with a data error, which the consumer
//! loop treats as [`Failure::Poison`]: it splits the batch until the record at fault
//! is alone and dead-letters it with the database's reason.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use prometheus::{IntCounterVec, Opts, Registry};
use sha2::{Digest, Sha256};
use storepulse_runtime::avro::AvroCodec;
use storepulse_runtime::consumer::{Batch, BatchProcessor, ConsumedRecord, Failure, Positioned};
use storepulse_runtime::contract::{self, RecordContract};
use storepulse_runtime::db::{self, Flavour};
use storepulse_runtime::dead_letter::{Rejection, storable_text};
use storepulse_runtime::records::{
    AlertTransition, DemandForecast, Envelope, InventoryChange, NotificationOutcome, PosHeartbeat,
    Record, RejectedRecord, SaleTransaction, SensorReading, from_days, from_micros, topic,
};
use storepulse_runtime::vocabulary::Vocabulary;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

/// The topics the compactor folds into the read store.
pub const INPUT_TOPICS: [&str; 8] = [
    topic::SALES,
    topic::INVENTORY,
    topic::DEVICE,
    topic::SENSOR_READINGS,
    topic::REJECTED,
    topic::ALERTS,
    topic::FORECASTS,
    topic::NOTIFICATIONS,
];

/// A decoded input record with its idempotency key and content hash.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub id: Uuid,
    /// SHA-256 of the record encoded with `received_at` zeroed: equal for a retry of
    /// the same event, different for another payload under the same id.
    pub content_hash: Vec<u8>,
    pub body: RawBody,
}

/// What a raw event is.
#[derive(Debug, Clone)]
pub enum RawBody {
    Sale(SaleTransaction),
    Inventory(InventoryChange),
    Heartbeat(PosHeartbeat),
    Sensor(SensorReading),
    Rejected(RejectedRecord),
    Alert(AlertTransition),
    Forecast(DemandForecast),
    Notification(NotificationOutcome),
}

impl RawBody {
    fn envelope(&self) -> &Envelope {
        match self {
            RawBody::Sale(r) => &r.envelope,
            RawBody::Inventory(r) => &r.envelope,
            RawBody::Heartbeat(r) => &r.envelope,
            RawBody::Sensor(r) => &r.envelope,
            RawBody::Rejected(r) => &r.envelope,
            RawBody::Alert(r) => &r.envelope,
            RawBody::Forecast(r) => &r.envelope,
            RawBody::Notification(r) => &r.envelope,
        }
    }

    /// The raw table the event lands in.
    fn relation(&self) -> Relation {
        match self {
            RawBody::Sale(_) => Relation::Sales,
            RawBody::Inventory(_) => Relation::Inventory,
            RawBody::Heartbeat(_) => Relation::Heartbeats,
            RawBody::Sensor(_) => Relation::Sensor,
            RawBody::Rejected(_) => Relation::Rejected,
            RawBody::Alert(_) => Relation::Alerts,
            RawBody::Forecast(_) => Relation::Forecasts,
            RawBody::Notification(_) => Relation::Notifications,
        }
    }
}

/// The raw event tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Relation {
    Sales,
    Inventory,
    Heartbeats,
    Sensor,
    Rejected,
    Alerts,
    Forecasts,
    Notifications,
}

impl Relation {
    const ALL: [Relation; 8] = [
        Relation::Sales,
        Relation::Inventory,
        Relation::Heartbeats,
        Relation::Sensor,
        Relation::Rejected,
        Relation::Alerts,
        Relation::Forecasts,
        Relation::Notifications,
    ];

    fn table(self) -> &'static str {
        match self {
            Relation::Sales => "sales",
            Relation::Inventory => "inventory_changes",
            Relation::Heartbeats => "pos_heartbeats",
            Relation::Sensor => "sensor_readings",
            Relation::Rejected => "rejected_events",
            Relation::Alerts => "alert_transitions",
            Relation::Forecasts => "demand_forecasts",
            Relation::Notifications => "notification_outcomes",
        }
    }

    /// The statement that inserts the relation's rows: keys into `event_keys`, rows
    /// for the keys inserted (CTE `ins`), then the current-state relations kept from
    /// `ins` (both flavours); with `rollups`, the rollup increments from `ins` in the
    /// same statement (plain PostgreSQL, decision 0008). Selects the keys inserted.
    /// The relation's insert statement (keys, rows, CTE `ins`), and what continues
    /// from `ins`: the current-state relations, the rollups (plain PostgreSQL).
    #[allow(clippy::type_complexity)]
    fn parts(self) -> (&'static str, Option<&'static str>, Option<&'static str>) {
        match self {
            Relation::Sales => (include_str!("../sql/insert_sales.sql"), None, None),
            Relation::Inventory => (
                include_str!("../sql/insert_inventory.sql"),
                Some(include_str!("../sql/state_inventory.sql")),
                None,
            ),
            Relation::Heartbeats => (
                include_str!("../sql/insert_heartbeats.sql"),
                Some(include_str!("../sql/state_heartbeats.sql")),
                Some(include_str!("../sql/rollup_heartbeats.sql")),
            ),
            Relation::Sensor => (
                include_str!("../sql/insert_sensor_readings.sql"),
                Some(include_str!("../sql/state_sensor_readings.sql")),
                Some(include_str!("../sql/rollup_sensor_readings.sql")),
            ),
            Relation::Rejected => (include_str!("../sql/insert_rejected.sql"), None, None),
            Relation::Alerts => (
                include_str!("../sql/insert_alert_transitions.sql"),
                Some(include_str!("../sql/state_alerts.sql")),
                None,
            ),
            Relation::Forecasts => (
                include_str!("../sql/insert_demand_forecasts.sql"),
                None,
                None,
            ),
            Relation::Notifications => (
                include_str!("../sql/insert_notification_outcomes.sql"),
                None,
                None,
            ),
        }
    }

    fn insert_sql(self, rollups: bool) -> String {
        let (raw, state, rollup) = self.parts();
        compose(
            raw,
            [state, rollup.filter(|_| rollups)],
            "SELECT tenant_id, store_id, event_id FROM ins",
        )
    }
}

/// One statement from an insert's CTEs, the CTEs continuing them (current state,
/// rollups; `None`: left out), and the final select.
fn compose<'a>(
    raw: &str,
    continuations: impl IntoIterator<Item = Option<&'a str>>,
    select: &str,
) -> String {
    let mut sql = raw.trim_end().to_string();
    for part in continuations.into_iter().flatten() {
        sql.push('\n');
        sql.push_str(part.trim_end());
    }
    sql.push('\n');
    sql.push_str(select);
    sql
}

/// The writer's statements for the read store's flavour.
#[derive(Debug)]
struct Statements {
    insert: BTreeMap<Relation, String>,
    forecast_days: String,
    /// Bulk path (rows copied): what continues from the rows inserted, over exactly
    /// those rows (`ins` given as arrays), by relation; none when nothing continues.
    continue_from_copied: BTreeMap<Relation, String>,
    /// Bulk path: what continues from the sale lines copied (the sales rollups).
    continue_from_copied_lines: Option<String>,
}

/// The columns of CTE `ins` of a relation's insert statement (its `RETURNING` list),
/// as arrays the bulk path passes: `WITH ins AS (SELECT * FROM unnest(...))`.
fn copied_ins(columns: &[(&str, &str)]) -> String {
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| format!("${}::{ty}[]", i + 1))
        .collect();
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    format!(
        "WITH ins AS (\n    SELECT * FROM unnest({}) AS u({})\n)",
        arrays.join(", "),
        names.join(", ")
    )
}

/// `ins` of the statements the bulk path continues (see [`ins_params`]).
const SENSOR_INS: [(&str, &str); 8] = [
    ("tenant_id", "text"),
    ("store_id", "text"),
    ("event_id", "uuid"),
    ("occurred_at", "timestamptz"),
    ("device_id", "text"),
    ("kind", "text"),
    ("value", "float8"),
    ("out_of_range", "bool"),
];
const HEARTBEAT_INS: [(&str, &str); 9] = [
    ("tenant_id", "text"),
    ("store_id", "text"),
    ("event_id", "uuid"),
    ("occurred_at", "timestamptz"),
    ("terminal_id", "text"),
    ("app_up", "bool"),
    ("printer", "text"),
    ("network", "text"),
    ("software_version", "text"),
];
const KEY_INS: [(&str, &str); 3] = [
    ("tenant_id", "text"),
    ("store_id", "text"),
    ("event_id", "uuid"),
];
const SALE_LINE_INS: [(&str, &str); 9] = [
    ("event_id", "uuid"),
    ("tenant_id", "text"),
    ("store_id", "text"),
    ("occurred_at", "timestamptz"),
    ("sku", "text"),
    ("quantity", "float8"),
    ("unit_price_minor", "int8"),
    ("kind", "text"),
    ("currency", "text"),
];

impl Statements {
    fn new(rollups: bool) -> Self {
        Self {
            insert: Relation::ALL
                .iter()
                .map(|r| (*r, r.insert_sql(rollups)))
                .collect(),
            forecast_days: compose(
                include_str!("../sql/insert_forecast_days.sql"),
                [Some(include_str!("../sql/state_forecast_days.sql"))],
                "SELECT count(*) FROM ins",
            ),
            continue_from_copied: Relation::ALL
                .iter()
                .filter_map(|r| {
                    let (_, state, rollup) = r.parts();
                    let rollup = rollup.filter(|_| rollups);
                    let ins = match r {
                        Relation::Sensor => copied_ins(&SENSOR_INS),
                        Relation::Heartbeats => copied_ins(&HEARTBEAT_INS),
                        _ => copied_ins(&KEY_INS),
                    };
                    (state.is_some() || rollup.is_some())
                        .then(|| (*r, compose(&ins, [state, rollup], "SELECT 1")))
                })
                .collect(),
            continue_from_copied_lines: rollups.then(|| {
                compose(
                    &copied_ins(&SALE_LINE_INS),
                    [Some(include_str!("../sql/rollup_sale_lines.sql"))],
                    "SELECT 1",
                )
            }),
        }
    }
}

/// The arrays of `ins` ([`SENSOR_INS`], [`HEARTBEAT_INS`], [`KEY_INS`]) for rows the
/// bulk path copied; `out_of_range` per row for sensor readings.
fn ins_params(relation: Relation, rows: &[Row<'_>], out_of_range: &[bool]) -> Params {
    let mut p: Params = vec![
        Box::new(rows.iter().map(|r| r.key.0.clone()).collect::<Vec<_>>()),
        Box::new(rows.iter().map(|r| r.key.1.clone()).collect::<Vec<_>>()),
        Box::new(rows.iter().map(|r| r.key.2).collect::<Vec<Uuid>>()),
    ];
    let occurred = || {
        Box::new(
            rows.iter()
                .map(|r| from_micros(r.at.item.body.envelope().occurred_at))
                .collect::<Vec<DateTime<Utc>>>(),
        )
    };
    match relation {
        Relation::Sensor => {
            p.push(occurred());
            p.push(column(rows, |b| sr(b).map(|r| r.device_id.clone())));
            p.push(column(rows, |b| sr(b).map(|r| r.kind.as_str())));
            p.push(column(rows, |b| sr(b).map(|r| r.value)));
            p.push(Box::new(out_of_range.to_vec()));
        }
        Relation::Heartbeats => {
            p.push(occurred());
            p.push(column(rows, |b| hb(b).map(|h| h.terminal_id.clone())));
            p.push(column(rows, |b| hb(b).map(|h| h.app_up)));
            p.push(column(rows, |b| hb(b).map(|h| h.printer.as_str())));
            p.push(column(rows, |b| hb(b).map(|h| h.network.as_str())));
            p.push(column(rows, |b| hb(b).map(|h| h.software_version.clone())));
        }
        _ => {}
    }
    p
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("postgres: {}", storepulse_runtime::db::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("read store layout: {0}")]
    Layout(storepulse_runtime::db::DbError),
}

/// The scoped idempotency key of an event.
type EventKey = (String, String, Uuid);

/// One row to insert, with where it came from.
struct Row<'a> {
    at: &'a Positioned<RawEvent>,
    key: EventKey,
}

/// A record that reused a stored key with another payload.
struct Conflict {
    topic: String,
    partition: i32,
    offset: i64,
    key: EventKey,
    relation: Relation,
    stored_hash: Option<Vec<u8>>,
    conflicting_hash: Vec<u8>,
}

/// Query parameters built from rows.
type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// The envelope columns shared by every raw table, in their SQL order.
fn envelope_columns(rows: &[Row<'_>]) -> Params {
    fn env<'r>(r: &'r Row<'_>) -> &'r Envelope {
        r.at.item.body.envelope()
    }
    vec![
        Box::new(rows.iter().map(|r| r.key.2).collect::<Vec<Uuid>>()),
        Box::new(rows.iter().map(|r| r.key.0.clone()).collect::<Vec<_>>()),
        Box::new(rows.iter().map(|r| r.key.1.clone()).collect::<Vec<_>>()),
        Box::new(
            rows.iter()
                .map(|r| from_micros(env(r).occurred_at))
                .collect::<Vec<DateTime<Utc>>>(),
        ),
        Box::new(
            rows.iter()
                .map(|r| from_micros(env(r).received_at))
                .collect::<Vec<DateTime<Utc>>>(),
        ),
        Box::new(
            rows.iter()
                .map(|r| env(r).source.clone())
                .collect::<Vec<_>>(),
        ),
    ]
}

fn column<'a, T, F>(rows: &[Row<'a>], f: F) -> Box<dyn ToSql + Sync + Send>
where
    T: ToSql + Sync + Send + 'static,
    Vec<T>: ToSql + Sync + Send,
    F: Fn(&'a RawBody) -> Option<T>,
{
    Box::new(
        rows.iter()
            .filter_map(|r| f(&r.at.item.body))
            .collect::<Vec<T>>(),
    )
}

fn sale(b: &RawBody) -> Option<&SaleTransaction> {
    match b {
        RawBody::Sale(s) => Some(s),
        _ => None,
    }
}
fn inv(b: &RawBody) -> Option<&InventoryChange> {
    match b {
        RawBody::Inventory(c) => Some(c),
        _ => None,
    }
}
fn hb(b: &RawBody) -> Option<&PosHeartbeat> {
    match b {
        RawBody::Heartbeat(h) => Some(h),
        _ => None,
    }
}
fn sr(b: &RawBody) -> Option<&SensorReading> {
    match b {
        RawBody::Sensor(r) => Some(r),
        _ => None,
    }
}
fn rj(b: &RawBody) -> Option<&RejectedRecord> {
    match b {
        RawBody::Rejected(r) => Some(r),
        _ => None,
    }
}
fn alert(b: &RawBody) -> Option<&AlertTransition> {
    match b {
        RawBody::Alert(a) => Some(a),
        _ => None,
    }
}
fn forecast(b: &RawBody) -> Option<&DemandForecast> {
    match b {
        RawBody::Forecast(f) => Some(f),
        _ => None,
    }
}
fn outcome(b: &RawBody) -> Option<&NotificationOutcome> {
    match b {
        RawBody::Notification(n) => Some(n),
        _ => None,
    }
}

/// The parameters of `relation`'s insert statement.
fn insert_params(relation: Relation, rows: &[Row<'_>]) -> Params {
    let mut p = envelope_columns(rows);
    match relation {
        Relation::Sales => {
            p.push(column(rows, |b| sale(b).map(|s| s.kind.as_str())));
            p.push(column(rows, |b| sale(b).map(|s| s.transaction_id.clone())));
            p.push(column(rows, |b| sale(b).map(|s| s.terminal_id.clone())));
            p.push(column(rows, |b| sale(b).map(|s| s.currency.clone())));
            p.push(column(rows, |b| sale(b).map(|s| s.total_minor)));
            p.push(column(rows, |b| {
                sale(b).map(|s| s.original_transaction_id.clone())
            }));
        }
        Relation::Inventory => {
            p.push(column(rows, |b| inv(b).map(|c| c.kind.as_str())));
            p.push(column(rows, |b| inv(b).map(|c| c.sku.clone())));
            p.push(column(rows, |b| inv(b).map(|c| c.quantity)));
            p.push(column(rows, |b| {
                inv(b).map(|c| c.reason.map(|r| r.as_str()))
            }));
        }
        Relation::Heartbeats => {
            p.push(column(rows, |b| hb(b).map(|h| h.terminal_id.clone())));
            p.push(column(rows, |b| hb(b).map(|h| h.app_up)));
            p.push(column(rows, |b| hb(b).map(|h| h.printer.as_str())));
            p.push(column(rows, |b| hb(b).map(|h| h.network.as_str())));
            p.push(column(rows, |b| hb(b).map(|h| h.software_version.clone())));
        }
        Relation::Sensor => {
            p.push(column(rows, |b| sr(b).map(|r| r.device_id.clone())));
            p.push(column(rows, |b| sr(b).map(|r| r.kind.as_str())));
            p.push(column(rows, |b| sr(b).map(|r| r.value)));
            p.push(column(rows, |b| sr(b).map(|r| r.unit.as_str())));
            p.push(column(rows, |b| sr(b).map(|r| r.appliance.clone())));
        }
        Relation::Rejected => {
            // Dead letters are diagnostics and must always be storable: NULs in
            // their texts become U+FFFD (the original bytes are kept as they were).
            let text = |s: &str| storable_text(s).into_owned();
            p.push(column(rows, |b| rj(b).map(|r| text(&r.reason))));
            p.push(column(rows, |b| {
                rj(b).map(|r| r.field.as_deref().map(text))
            }));
            p.push(column(rows, |b| rj(b).map(|r| r.original.0.clone())));
            p.push(column(rows, |b| {
                rj(b).map(|r| r.original_event_id.as_deref().map(text))
            }));
            p.push(column(rows, |b| {
                rj(b).map(|r| r.source_topic.as_deref().map(text))
            }));
            p.push(column(rows, |b| rj(b).map(|r| r.source_partition)));
            p.push(column(rows, |b| rj(b).map(|r| r.source_offset)));
            p.push(column(rows, |b| rj(b).map(|r| r.original_length)));
            p.push(column(rows, |b| {
                rj(b).map(|r| r.original_sha256.as_deref().map(text))
            }));
        }
        Relation::Alerts => {
            p.push(column(rows, |b| alert(b).map(|a| a.alert_id.clone())));
            p.push(column(rows, |b| alert(b).map(|a| a.rule_id.clone())));
            p.push(column(rows, |b| alert(b).map(|a| a.state.as_str())));
            p.push(column(rows, |b| alert(b).map(|a| a.severity.as_str())));
            p.push(column(rows, |b| alert(b).map(|a| a.subject.clone())));
            p.push(column(rows, |b| alert(b).map(|a| a.summary.clone())));
            p.push(column(rows, |b| alert(b).map(|a| a.value)));
            p.push(column(rows, |b| {
                alert(b).map(|a| from_micros(a.started_at))
            }));
            p.push(column(rows, |b| {
                alert(b).map(|a| serde_json::json!(a.labels))
            }));
            p.push(column(rows, |b| {
                alert(b).map(|a| a.ended_at.map(from_micros))
            }));
            p.push(column(rows, |b| alert(b).map(|a| a.rule_kind.clone())));
        }
        Relation::Forecasts => {
            p.push(column(rows, |b| forecast(b).map(|f| f.sku.clone())));
            p.push(column(rows, |b| forecast(b).map(|f| f.method.clone())));
            p.push(column(rows, |b| forecast(b).map(|f| f.interval_level)));
            p.push(column(rows, |b| forecast(b).map(|f| f.on_hand)));
            p.push(column(rows, |b| forecast(b).map(|f| f.days_of_cover)));
            p.push(column(rows, |b| {
                forecast(b).map(|f| f.stock_out_probability)
            }));
        }
        Relation::Notifications => {
            p.push(column(rows, |b| outcome(b).map(|n| n.alert_id.clone())));
            p.push(column(rows, |b| outcome(b).map(|n| n.alert_state.as_str())));
            p.push(column(rows, |b| outcome(b).map(|n| n.receiver.clone())));
            p.push(column(rows, |b| outcome(b).map(|n| n.channel.as_str())));
            p.push(column(rows, |b| outcome(b).map(|n| n.status.as_str())));
            p.push(column(rows, |b| outcome(b).map(|n| n.attempts)));
            p.push(column(rows, |b| outcome(b).map(|n| n.error.clone())));
        }
    }
    p.push(Box::new(
        rows.iter()
            .map(|r| r.at.item.content_hash.clone())
            .collect::<Vec<Vec<u8>>>(),
    ));
    p
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
    /// `storepulse_compactor_records_skipped_total{reason}`: already applied, or a
    /// repeat of an event in the same batch.
    skipped: IntCounterVec,
    /// `storepulse_compactor_event_id_conflicts_total{table}`.
    conflicts: IntCounterVec,
    /// `storepulse_compactor_write_path_total{table, path}`: a relation's rows of a batch
    /// went through `copy` (no key stored yet) or the `statement` path.
    write_path: IntCounterVec,
    /// What the read store is, learnt from it at the first batch.
    layout: Option<Layout>,
}

/// What the writer knows of the read store it writes to.
#[derive(Debug)]
struct Layout {
    statements: Statements,
    /// Plain flavour: the partition width of each raw table, in µs (TimescaleDB
    /// creates its chunks itself: empty).
    partition_width: HashMap<String, i64>,
    /// Partitions known to exist, by raw table and start (µs since the epoch).
    partitions: HashSet<(&'static str, i64)>,
}

impl Layout {
    async fn learn(client: &deadpool_postgres::Object) -> Result<Self, WriteError> {
        let flavour = db::flavour_of(client).await.map_err(WriteError::Layout)?;
        let partition_width = match flavour {
            Flavour::TimescaleDb => HashMap::new(),
            Flavour::Plain => client
                .query(
                    "SELECT relation, (extract(epoch FROM partition_interval) * 1000000)::bigint
                     FROM raw_relations",
                    &[],
                )
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        };
        tracing::info!(%flavour, "writing to the read store");
        Ok(Self {
            statements: Statements::new(flavour == Flavour::Plain),
            partition_width,
            partitions: HashSet::new(),
        })
    }

    /// Plain flavour: creates the partitions the batch's rows need that are not known
    /// to exist (in their own statement, before the batch's transaction).
    async fn ensure_partitions(
        &mut self,
        client: &deadpool_postgres::Object,
        batch: &Batch<RawEvent>,
    ) -> Result<(), WriteError> {
        if self.partition_width.is_empty() {
            return Ok(());
        }
        let mut missing: BTreeMap<&'static str, Vec<i64>> = BTreeMap::new();
        for p in &batch.items {
            let relation = p.item.body.relation();
            let at = p.item.body.envelope().occurred_at;
            // Lines are partitioned by their event's time (sale_lines.occurred_at,
            // demand_forecast_days.issued_at).
            let lines = match relation {
                Relation::Sales => Some("sale_lines"),
                Relation::Forecasts => Some("demand_forecast_days"),
                _ => None,
            };
            for table in [Some(relation.table()), lines].into_iter().flatten() {
                let Some(width) = self.partition_width.get(table).copied() else {
                    continue;
                };
                let start = at.div_euclid(width) * width;
                if !self.partitions.contains(&(table, start)) {
                    let starts = missing.entry(table).or_default();
                    if !starts.contains(&start) {
                        starts.push(start);
                    }
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let stmt = client
            .prepare_cached(include_str!("../sql/ensure_partitions.sql"))
            .await?;
        for (table, starts) in missing {
            let times: Vec<DateTime<Utc>> = starts.iter().map(|s| from_micros(*s)).collect();
            client.execute(&stmt, &[&table, &times]).await?;
            self.partitions
                .extend(starts.into_iter().map(|start| (table, start)));
        }
        Ok(())
    }
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
        let conflicts = IntCounterVec::new(
            Opts::new(
                "compactor_event_id_conflicts_total",
                "Records that reused a stored event id with a different payload (not applied; see event_id_conflicts)",
            ),
            &["table"],
        )?;
        let write_path = IntCounterVec::new(
            Opts::new(
                "compactor_write_path_total",
                "Relations of a batch written by binary COPY (no key stored yet) or by the insert statement",
            ),
            &["table", "path"],
        )?;
        registry.register(Box::new(rows_written.clone()))?;
        registry.register(Box::new(skipped.clone()))?;
        registry.register(Box::new(conflicts.clone()))?;
        registry.register(Box::new(write_path.clone()))?;
        Ok(Self {
            pool,
            codec,
            group_id,
            rows_written,
            skipped,
            conflicts,
            write_path,
            layout: None,
        })
    }

    /// Locks the stored offsets of the batch's partitions; returns them.
    async fn lock_offsets(
        &self,
        tx: &Transaction<'_>,
        batch: &Batch<RawEvent>,
    ) -> Result<BTreeMap<(String, i32), i64>, WriteError> {
        let keys: Vec<(&String, i32)> = batch.next_offsets.keys().map(|(t, p)| (t, *p)).collect();
        let topics: Vec<&str> = keys.iter().map(|(t, _)| t.as_str()).collect();
        let partitions: Vec<i32> = keys.iter().map(|(_, p)| *p).collect();
        let lock = tx
            .prepare_cached(include_str!("../sql/lock_offsets.sql"))
            .await?;
        let rows = tx
            .query(&lock, &[&self.group_id, &topics, &partitions])
            .await?;
        Ok(rows
            .iter()
            .map(|r| ((r.get::<_, String>(0), r.get::<_, i32>(1)), r.get(2)))
            .collect())
    }

    /// Locks the stores of `rows` for this transaction (`lock_stores.sql`): a
    /// statement that reads a store's stored rows to keep its current state must not
    /// race another writer of the same store.
    async fn lock_stores(&self, tx: &Transaction<'_>, rows: &[Row<'_>]) -> Result<(), WriteError> {
        let stores: std::collections::BTreeSet<(&str, &str)> = rows
            .iter()
            .map(|r| (r.key.0.as_str(), r.key.1.as_str()))
            .collect();
        let tenants: Vec<&str> = stores.iter().map(|(t, _)| *t).collect();
        let ids: Vec<&str> = stores.iter().map(|(_, s)| *s).collect();
        let stmt = tx
            .prepare_cached(include_str!("../sql/lock_stores.sql"))
            .await?;
        tx.query_one(&stmt, &[&tenants, &ids]).await?;
        Ok(())
    }

    /// Stores the batch's next offsets, all partitions in one statement.
    async fn store_offsets(
        &self,
        tx: &Transaction<'_>,
        batch: &Batch<RawEvent>,
    ) -> Result<(), WriteError> {
        let topics: Vec<&str> = batch.next_offsets.keys().map(|(t, _)| t.as_str()).collect();
        let partitions: Vec<i32> = batch.next_offsets.keys().map(|(_, p)| *p).collect();
        let next: Vec<i64> = batch.next_offsets.values().copied().collect();
        let store = tx
            .prepare_cached(include_str!("../sql/store_offsets.sql"))
            .await?;
        tx.execute(&store, &[&self.group_id, &topics, &partitions, &next])
            .await?;
        Ok(())
    }

    /// The bulk path ([`crate::bulk_copy`]): copies the keys of `rows` into the ledger
    /// and, if none was stored yet, the rows into their raw table, then runs what
    /// continues from the rows inserted over exactly those rows. Returns the keys
    /// inserted (all of them), or `None` if the statement path must write `rows`
    /// (a key is stored already, or the relation is not copied).
    async fn copy_relation(
        &self,
        tx: &Transaction<'_>,
        statements: &Statements,
        relation: Relation,
        rows: &[Row<'_>],
        standing: &mut HashMap<(Relation, EventKey), Option<Vec<u8>>>,
    ) -> Result<Option<HashSet<EventKey>>, WriteError> {
        use crate::bulk_copy::{self as bulk, Cell};
        // Inventory stays on the statement path: its continuation (stock_on_hand)
        // reads the store's stored changes, which must not include the batch's own
        // rows — true within the insert statement, not after a copy.
        let target = match relation {
            Relation::Sensor => bulk::SENSOR_READINGS,
            Relation::Heartbeats => bulk::POS_HEARTBEATS,
            Relation::Sales => bulk::SALES,
            _ => return Ok(None),
        };
        let keys: Vec<Vec<Cell<'_>>> = rows
            .iter()
            .map(|r| {
                vec![
                    Cell::Text(relation.table()),
                    Cell::Text(&r.key.0),
                    Cell::Text(&r.key.1),
                    Cell::Uuid(r.key.2),
                    Cell::Time(from_micros(r.at.item.body.envelope().occurred_at)),
                    Cell::Bytes(&r.at.item.content_hash),
                ]
            })
            .collect();
        match bulk::copy_keys(tx, &keys).await {
            Ok(_) => {}
            Err(bulk::CopyRefused::KeyStored) => return Ok(None),
            Err(bulk::CopyRefused::Postgres(e)) => return Err(e.into()),
        }
        let limits = match relation {
            Relation::Sensor => Some(bulk::SensorLimits::read(tx).await?),
            _ => None,
        };
        let mut out_of_range = Vec::new();
        let mut cells: Vec<Vec<Cell<'_>>> = Vec::with_capacity(rows.len());
        for r in rows {
            let mut row = bulk::envelope_cells(r.key.2, r.at.item.body.envelope()).to_vec();
            let hash = Cell::Bytes(&r.at.item.content_hash);
            match &r.at.item.body {
                RawBody::Sensor(s) => {
                    let oor = limits.as_ref().is_some_and(|l| {
                        l.out_of_range(s.kind.as_str(), s.appliance.as_deref(), s.value)
                    });
                    out_of_range.push(oor);
                    row.extend([
                        Cell::Text(&s.device_id),
                        Cell::Text(s.kind.as_str()),
                        Cell::F64(s.value),
                        Cell::Text(s.unit.as_str()),
                        Cell::OptText(s.appliance.as_deref()),
                        hash,
                        Cell::Bool(oor),
                    ]);
                }
                RawBody::Heartbeat(h) => row.extend([
                    Cell::Text(&h.terminal_id),
                    Cell::Bool(h.app_up),
                    Cell::Text(h.printer.as_str()),
                    Cell::Text(h.network.as_str()),
                    Cell::OptText(h.software_version.as_deref()),
                    hash,
                ]),
                RawBody::Sale(s) => row.extend([
                    Cell::Text(s.kind.as_str()),
                    Cell::Text(&s.transaction_id),
                    Cell::Text(&s.terminal_id),
                    Cell::Text(&s.currency),
                    Cell::I64(s.total_minor),
                    Cell::OptText(s.original_transaction_id.as_deref()),
                    hash,
                ]),
                _ => return Ok(None),
            }
            cells.push(row);
        }
        let copied = bulk::copy_rows(tx, &target, &cells).await?;
        if let Some(sql) = statements.continue_from_copied.get(&relation) {
            let stmt = tx.prepare_cached(sql).await?;
            let params = ins_params(relation, rows, &out_of_range);
            tx.execute(&stmt, &refs(&params)).await?;
        }
        self.rows_written
            .with_label_values(&[relation.table()])
            .inc_by(copied);
        self.write_path
            .with_label_values(&[relation.table(), "copy"])
            .inc();
        let mut inserted = HashSet::with_capacity(rows.len());
        for row in rows {
            standing.insert(
                (relation, row.key.clone()),
                Some(row.at.item.content_hash.clone()),
            );
            inserted.insert(row.key.clone());
        }
        Ok(Some(inserted))
    }

    /// Inserts `rows` into `relation`; returns the keys actually inserted and adds
    /// the rows whose key was stored with another payload to `conflicts`.
    #[allow(clippy::too_many_arguments)]
    async fn insert(
        &self,
        tx: &Transaction<'_>,
        statements: &Statements,
        relation: Relation,
        rows: &[Row<'_>],
        conflicts: &mut Vec<Conflict>,
        standing: &mut HashMap<(Relation, EventKey), Option<Vec<u8>>>,
    ) -> Result<HashSet<EventKey>, WriteError> {
        self.write_path
            .with_label_values(&[relation.table(), "statement"])
            .inc();
        let params = insert_params(relation, rows);
        let stmt = tx.prepare_cached(&statements.insert[&relation]).await?;
        let inserted: HashSet<EventKey> = tx
            .query(&stmt, &refs(&params))
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        self.rows_written
            .with_label_values(&[relation.table()])
            .inc_by(inserted.len() as u64);
        for row in rows.iter().filter(|r| inserted.contains(&r.key)) {
            standing.insert(
                (relation, row.key.clone()),
                Some(row.at.item.content_hash.clone()),
            );
        }

        let existing: Vec<&Row<'_>> = rows.iter().filter(|r| !inserted.contains(&r.key)).collect();
        if existing.is_empty() {
            return Ok(inserted);
        }
        let stmt = tx
            .prepare_cached(include_str!("../sql/stored_hashes.sql"))
            .await?;
        let tenants: Vec<&str> = existing.iter().map(|r| r.key.0.as_str()).collect();
        let stores: Vec<&str> = existing.iter().map(|r| r.key.1.as_str()).collect();
        let ids: Vec<Uuid> = existing.iter().map(|r| r.key.2).collect();
        let stored: HashMap<EventKey, Option<Vec<u8>>> = tx
            .query(&stmt, &[&relation.table(), &tenants, &stores, &ids])
            .await?
            .iter()
            .map(|r| ((r.get(0), r.get(1), r.get(2)), r.get(3)))
            .collect();
        let mut retries = 0u64;
        for row in existing {
            let stored_hash = stored.get(&row.key).cloned().flatten();
            standing.insert((relation, row.key.clone()), stored_hash.clone());
            // Rows stored before content hashes existed compare as equal.
            if stored_hash
                .as_ref()
                .is_none_or(|h| *h == row.at.item.content_hash)
            {
                retries += 1;
                continue;
            }
            conflicts.push(Conflict {
                topic: row.at.topic.clone(),
                partition: row.at.partition,
                offset: row.at.offset,
                key: row.key.clone(),
                relation,
                stored_hash,
                conflicting_hash: row.at.item.content_hash.clone(),
            });
        }
        if retries > 0 {
            self.skipped
                .with_label_values(&["event_already_stored"])
                .inc_by(retries);
        }
        Ok(inserted)
    }

    /// Copies the lines of the sales that were inserted (never of a conflicting one)
    /// and adds them to `sales_hourly` and `sales_daily` (plain PostgreSQL).
    async fn insert_lines(
        &self,
        tx: &Transaction<'_>,
        statements: &Statements,
        sales: &[Row<'_>],
        inserted: &HashSet<EventKey>,
    ) -> Result<(), WriteError> {
        let sales: Vec<(Uuid, &SaleTransaction)> = sales
            .iter()
            .filter(|r| inserted.contains(&r.key))
            .filter_map(|r| sale(&r.at.item.body).map(|s| (r.key.2, s)))
            .filter(|(_, s)| !s.lines.is_empty())
            .collect();
        if sales.is_empty() {
            return Ok(());
        }
        let rows: Vec<_> = sales
            .iter()
            .flat_map(|(id, s)| crate::bulk_copy::sale_line_rows(*id, s))
            .collect();
        let n = crate::bulk_copy::copy_rows(tx, &crate::bulk_copy::SALE_LINES, &rows).await?;
        if let Some(sql) = &statements.continue_from_copied_lines {
            let lines = || {
                sales
                    .iter()
                    .flat_map(|(id, s)| s.lines.iter().map(move |l| (*id, *s, l)))
            };
            let params: Params = vec![
                Box::new(lines().map(|(id, _, _)| id).collect::<Vec<Uuid>>()),
                Box::new(
                    lines()
                        .map(|(_, s, _)| s.envelope.tenant_id.clone())
                        .collect::<Vec<_>>(),
                ),
                Box::new(
                    lines()
                        .map(|(_, s, _)| s.envelope.store_id.clone())
                        .collect::<Vec<_>>(),
                ),
                Box::new(
                    lines()
                        .map(|(_, s, _)| from_micros(s.envelope.occurred_at))
                        .collect::<Vec<DateTime<Utc>>>(),
                ),
                Box::new(lines().map(|(_, _, l)| l.sku.clone()).collect::<Vec<_>>()),
                Box::new(lines().map(|(_, _, l)| l.quantity).collect::<Vec<f64>>()),
                Box::new(
                    lines()
                        .map(|(_, _, l)| l.unit_price_minor)
                        .collect::<Vec<i64>>(),
                ),
                Box::new(lines().map(|(_, s, _)| s.kind.as_str()).collect::<Vec<_>>()),
                Box::new(
                    lines()
                        .map(|(_, s, _)| s.currency.clone())
                        .collect::<Vec<_>>(),
                ),
            ];
            let stmt = tx.prepare_cached(sql).await?;
            tx.execute(&stmt, &refs(&params)).await?;
        }
        self.rows_written
            .with_label_values(&["sale_lines"])
            .inc_by(n);
        Ok(())
    }

    /// Inserts the daily points of the forecasts that were inserted (never of a
    /// conflicting one).
    async fn insert_forecast_days(
        &self,
        tx: &Transaction<'_>,
        statements: &Statements,
        forecasts: &[Row<'_>],
        inserted: &HashSet<EventKey>,
    ) -> Result<(), WriteError> {
        let mut tenants = Vec::new();
        let mut stores = Vec::new();
        let mut ids = Vec::new();
        let mut days = Vec::new();
        let mut skus = Vec::new();
        let mut issued = Vec::new();
        let (mut mean, mut lower, mut upper) = (Vec::new(), Vec::new(), Vec::new());
        let (mut methods, mut levels) = (Vec::new(), Vec::new());
        for row in forecasts.iter().filter(|r| inserted.contains(&r.key)) {
            let RawBody::Forecast(f) = &row.at.item.body else {
                continue;
            };
            for d in &f.days {
                // The contract admits only representable dates.
                let Some(day) = from_days(d.date) else {
                    continue;
                };
                tenants.push(row.key.0.as_str());
                stores.push(row.key.1.as_str());
                ids.push(row.key.2);
                days.push(day);
                skus.push(f.sku.as_str());
                issued.push(from_micros(f.envelope.occurred_at));
                mean.push(d.mean);
                lower.push(d.lower);
                upper.push(d.upper);
                methods.push(f.method.as_str());
                levels.push(f.interval_level);
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        let stmt = tx.prepare_cached(&statements.forecast_days).await?;
        let n: i64 = tx
            .query_one(
                &stmt,
                &[
                    &tenants, &stores, &ids, &days, &skus, &issued, &mean, &lower, &upper,
                    &methods, &levels,
                ],
            )
            .await?
            .get(0);
        self.rows_written
            .with_label_values(&["demand_forecast_days"])
            .inc_by(n.unsigned_abs());
        Ok(())
    }

    async fn record_conflicts(
        &self,
        tx: &Transaction<'_>,
        conflicts: &[Conflict],
    ) -> Result<(), WriteError> {
        if conflicts.is_empty() {
            return Ok(());
        }
        let stmt = tx
            .prepare_cached(include_str!("../sql/insert_conflicts.sql"))
            .await?;
        let topics: Vec<&str> = conflicts.iter().map(|c| c.topic.as_str()).collect();
        let partitions: Vec<i32> = conflicts.iter().map(|c| c.partition).collect();
        let offsets: Vec<i64> = conflicts.iter().map(|c| c.offset).collect();
        let tenants: Vec<&str> = conflicts.iter().map(|c| c.key.0.as_str()).collect();
        let stores: Vec<&str> = conflicts.iter().map(|c| c.key.1.as_str()).collect();
        let ids: Vec<Uuid> = conflicts.iter().map(|c| c.key.2).collect();
        let relations: Vec<&str> = conflicts.iter().map(|c| c.relation.table()).collect();
        let stored: Vec<Option<&[u8]>> =
            conflicts.iter().map(|c| c.stored_hash.as_deref()).collect();
        let conflicting: Vec<&[u8]> = conflicts
            .iter()
            .map(|c| c.conflicting_hash.as_slice())
            .collect();
        tx.execute(
            &stmt,
            &[
                &topics,
                &partitions,
                &offsets,
                &tenants,
                &stores,
                &ids,
                &relations,
                &stored,
                &conflicting,
            ],
        )
        .await?;
        for c in conflicts {
            tracing::warn!(
                table = c.relation.table(),
                tenant = %c.key.0, store = %c.key.1, event_id = %c.key.2,
                topic = %c.topic, partition = c.partition, offset = c.offset,
                "event id reused with a different payload; the first stands, this one is recorded in event_id_conflicts"
            );
            self.conflicts
                .with_label_values(&[c.relation.table()])
                .inc();
        }
        Ok(())
    }
}

/// Content hash of a record: SHA-256 of its encoding after `strip` took out what is
/// not content (`received_at`: a retry is received again, later, but is the same
/// event), followed by what `strip` returns (the canonical form of what has no
/// canonical encoding: an Avro map is written in the order of a `HashMap`).
fn content_hash<T: Record + Clone>(
    codec: &AvroCodec,
    record: &T,
    strip: impl FnOnce(&mut T) -> Vec<u8>,
) -> Result<Vec<u8>, Rejection> {
    let mut copy = record.clone();
    let canonical = strip(&mut copy);
    let bytes = codec
        .encode(&copy)
        .map_err(|e| Rejection::whole(format!("cannot re-encode {}: {e}", T::TOPIC)))?;
    let mut digest = Sha256::new();
    digest.update(&bytes);
    digest.update(&canonical);
    Ok(digest.finalize().to_vec())
}

/// What of a record is its content (see [`content_hash`]).
trait Content: Record + Clone + RecordContract {
    /// Clears what is not content, and what has no canonical encoding, returning the
    /// latter in a canonical form.
    fn strip(&mut self) -> Vec<u8>;
}

macro_rules! content_without_received_at {
    ($($ty:ty),+) => {$(
        impl Content for $ty {
            fn strip(&mut self) -> Vec<u8> {
                self.envelope.received_at = 0;
                Vec::new()
            }
        }
    )+};
}
content_without_received_at!(
    SaleTransaction,
    InventoryChange,
    PosHeartbeat,
    SensorReading,
    DemandForecast,
    NotificationOutcome
);

impl Content for AlertTransition {
    /// The labels, sorted by name, as JSON (a map's Avro encoding follows the
    /// `HashMap`'s iteration order, which differs between processes).
    fn strip(&mut self) -> Vec<u8> {
        self.envelope.received_at = 0;
        let labels: BTreeMap<String, String> =
            std::mem::take(&mut self.labels).into_iter().collect();
        serde_json::to_vec(&labels).unwrap_or_default()
    }
}

/// Decodes a record and checks it against the topic contract
/// ([`storepulse_runtime::contract`]): what breaks it is dead-lettered, never stored.
fn decode_as<T: Content>(
    codec: &AvroCodec,
    rec: &ConsumedRecord,
    wrap: fn(T) -> RawBody,
) -> Result<RawEvent, Rejection> {
    let value: T = decode_record(codec, rec)?;
    let id = contract::check_envelope(value.envelope(), rec.key.as_deref())?;
    value.check_body()?;
    let content_hash = content_hash(codec, &value, T::strip)?;
    Ok(RawEvent {
        id,
        content_hash,
        body: wrap(value),
    })
}

fn decode_record<T: Record>(codec: &AvroCodec, rec: &ConsumedRecord) -> Result<T, Rejection> {
    codec
        .decode(&rec.payload)
        .map_err(|e| Rejection::whole(format!("undecodable {}: {e}", T::TOPIC)))
}

/// Dead letters keep whatever key and texts their source had (sanitised when
/// stored); they need only an id and representable times.
fn decode_rejected(codec: &AvroCodec, rec: &ConsumedRecord) -> Result<RawEvent, Rejection> {
    let value: RejectedRecord = decode_record(codec, rec)?;
    let lenient = Envelope {
        tenant_id: "-".into(),
        store_id: "-".into(),
        source: "-".into(),
        ..value.envelope.clone()
    };
    let id = contract::check_envelope(&lenient, None)?;
    // A rejection's times are when it was rejected: the same rejection published
    // again (a consumer re-reading after a crash, a rebuild) has other times but is
    // the same dead letter.
    let content_hash = content_hash(codec, &value, |v| {
        v.envelope.received_at = 0;
        v.envelope.occurred_at = 0;
        Vec::new()
    })?;
    Ok(RawEvent {
        id,
        content_hash,
        body: RawBody::Rejected(value),
    })
}

impl BatchProcessor for ReadStoreWriter {
    type Item = RawEvent;
    type Error = WriteError;

    fn decode(&self, rec: &ConsumedRecord) -> Result<RawEvent, Rejection> {
        let c = &self.codec;
        match rec.topic.as_str() {
            topic::SALES => decode_as(c, rec, RawBody::Sale),
            topic::INVENTORY => decode_as(c, rec, RawBody::Inventory),
            topic::DEVICE => decode_as(c, rec, RawBody::Heartbeat),
            topic::SENSOR_READINGS => decode_as(c, rec, RawBody::Sensor),
            topic::REJECTED => decode_rejected(c, rec),
            topic::ALERTS => decode_as(c, rec, RawBody::Alert),
            topic::FORECASTS => decode_as(c, rec, RawBody::Forecast),
            topic::NOTIFICATIONS => decode_as(c, rec, RawBody::Notification),
            other => Err(Rejection::whole(format!(
                "compactor does not read topic {other}"
            ))),
        }
    }

    async fn apply(&mut self, batch: &Batch<RawEvent>) -> Result<(), WriteError> {
        let mut client = self.pool.get().await?;
        let mut layout = match self.layout.take() {
            Some(layout) => layout,
            None => Layout::learn(&client).await?,
        };
        let result = match layout.ensure_partitions(&client, batch).await {
            Ok(()) => self.apply_in_transaction(&mut client, &layout, batch).await,
            Err(e) => Err(e),
        };
        if result.as_ref().is_err_and(is_missing_partition) {
            // Retention dropped a partition this writer thought was there: learn
            // again; the retry creates it.
            layout.partitions.clear();
        }
        self.layout = Some(layout);
        result
    }

    fn classify(&self, error: &WriteError) -> Failure {
        let e = match error {
            WriteError::Pool(deadpool_postgres::PoolError::Backend(e)) => e,
            WriteError::Pool(_) => return Failure::Transient,
            WriteError::Postgres(e) => e,
            WriteError::Layout(storepulse_runtime::db::DbError::Postgres(e)) => e,
            WriteError::Layout(_) => return Failure::Fatal,
        };
        if is_missing_partition(error) {
            return Failure::Transient;
        }
        classify_postgres(e)
    }
}

/// Whether `error` is PostgreSQL finding no partition for a row (SQLSTATE 23514
/// without a constraint: a CHECK constraint's violation names it).
fn is_missing_partition(error: &WriteError) -> bool {
    let WriteError::Postgres(e) = error else {
        return false;
    };
    e.as_db_error()
        .is_some_and(|db| db.code().code() == "23514" && db.constraint().is_none())
}

impl ReadStoreWriter {
    /// The batch's rows, rollups (plain flavour) and offsets, in one transaction.
    async fn apply_in_transaction(
        &self,
        client: &mut deadpool_postgres::Object,
        layout: &Layout,
        batch: &Batch<RawEvent>,
    ) -> Result<(), WriteError> {
        let tx = client.transaction().await?;
        let stored = self.lock_offsets(&tx, batch).await?;
        let floors: HashMap<(&str, i32), i64> = stored
            .iter()
            .map(|((topic, partition), next)| ((topic.as_str(), *partition), *next))
            .collect();

        // Guard 1: records below the stored offset were applied before. Then within
        // the batch the first record of a key stands; a later one is a retry or a
        // conflict.
        let mut by_relation: BTreeMap<Relation, Vec<Row<'_>>> = BTreeMap::new();
        let mut first: HashSet<(Relation, EventKey)> = HashSet::new();
        // Later records of a key already in this batch: judged against whichever
        // payload stands after the insert (the stored one, or the batch's first).
        let mut later: Vec<(Relation, EventKey, &Positioned<RawEvent>)> = Vec::new();
        let mut conflicts = Vec::new();
        let (mut already, mut repeats) = (0u64, 0u64);
        for p in &batch.items {
            let floor = floors
                .get(&(p.topic.as_str(), p.partition))
                .copied()
                .unwrap_or(0);
            if p.offset < floor {
                already += 1;
                continue;
            }
            let env = p.item.body.envelope();
            let key = (env.tenant_id.clone(), env.store_id.clone(), p.item.id);
            let relation = p.item.body.relation();
            if !first.insert((relation, key.clone())) {
                later.push((relation, key, p));
                continue;
            }
            by_relation
                .entry(relation)
                .or_default()
                .push(Row { at: p, key });
        }

        // Guard 2: the scoped idempotency key.
        let mut standing = HashMap::new();
        for relation in Relation::ALL {
            let Some(rows) = by_relation.get(&relation) else {
                continue;
            };
            if relation == Relation::Inventory {
                // stock_on_hand reads the store's stored changes.
                self.lock_stores(&tx, rows).await?;
            }
            let copied = self
                .copy_relation(&tx, &layout.statements, relation, rows, &mut standing)
                .await?;
            let inserted = match copied {
                Some(inserted) => inserted,
                None => {
                    self.insert(
                        &tx,
                        &layout.statements,
                        relation,
                        rows,
                        &mut conflicts,
                        &mut standing,
                    )
                    .await?
                }
            };
            match relation {
                Relation::Sales => {
                    self.insert_lines(&tx, &layout.statements, rows, &inserted)
                        .await?
                }
                Relation::Forecasts => {
                    self.insert_forecast_days(&tx, &layout.statements, rows, &inserted)
                        .await?
                }
                _ => {}
            }
        }
        for (relation, key, p) in later {
            let stands = standing.get(&(relation, key.clone())).cloned().flatten();
            // Rows stored before content hashes existed compare as equal.
            if stands.as_ref().is_none_or(|h| *h == p.item.content_hash) {
                repeats += 1;
                continue;
            }
            conflicts.push(Conflict {
                topic: p.topic.clone(),
                partition: p.partition,
                offset: p.offset,
                key,
                relation,
                stored_hash: stands,
                conflicting_hash: p.item.content_hash.clone(),
            });
        }
        self.record_conflicts(&tx, &conflicts).await?;
        self.store_offsets(&tx, batch).await?;
        tx.commit().await?;
        if already > 0 {
            self.skipped
                .with_label_values(&["offset_already_applied"])
                .inc_by(already);
        }
        if repeats > 0 {
            self.skipped
                .with_label_values(&["repeated_in_batch"])
                .inc_by(repeats);
        }
        Ok(())
    }
}

pub use storepulse_runtime::db::classify_postgres;
