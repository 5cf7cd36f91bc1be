//! The writer's bulk path: binary `COPY` of a batch's keys into the ledger and of its
//! rows into the raw tables.
//!
//! `INSERT ... SELECT` writes a row at a time and, with `ON CONFLICT`, by speculative
//! insertion; `COPY` writes in multi-row buffers. In the common case — none of a
//! batch's keys is stored yet — the writer therefore copies the keys into
//! `event_keys` inside a savepoint, then the rows into the raw table, then runs the
//! statement that continues from the rows inserted (the rollup increments on plain
//! PostgreSQL, decision 0008) over exactly those rows. If a key is already stored
//! (a retry, a replay, a conflicting reuse) the ledger's primary key refuses the copy
//! with a unique violation; the writer rolls back to the savepoint and takes the
//! statement path, which sorts retries from conflicts (see `writer`). Both paths
//! insert the same rows with the same values in the same transaction as the offsets,
//! so which one ran is invisible in the read store.
//!
//! What this module guarantees: a relation it encodes gets the columns, in the order
//! and with the values, of its insert statement (`sql/insert_<relation>.sql`):
//! `out_of_range` of a sensor reading from the limits read in the batch's
//! transaction, exactly as the statement's join computes it. What continues from the
//! rows copied must read only those rows (`ins`), never their raw table: there the
//! copied rows are already visible, where within the insert statement they are not.
//! So inventory changes (`stock_on_hand` reads the store's stored changes), dead
//! letters and the low-volume relations (alerts, forecasts, notifications) are left
//! to the statement path.

use std::collections::HashMap;
use std::error::Error;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type};
use uuid::Uuid;

use storepulse_runtime::records::{Envelope, SaleTransaction, from_micros};
use storepulse_runtime::vocabulary::Vocabulary;

/// One value of a copied row, borrowed from the decoded record where it can be.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    Uuid(Uuid),
    Text(&'a str),
    OptText(Option<&'a str>),
    Time(DateTime<Utc>),
    F64(f64),
    I64(i64),
    I32(i32),
    Bool(bool),
    Bytes(&'a [u8]),
}

impl ToSql for Cell<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes_mut::BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Cell::Uuid(v) => v.to_sql(ty, out),
            Cell::Text(v) => v.to_sql(ty, out),
            Cell::OptText(v) => v.to_sql(ty, out),
            Cell::Time(v) => v.to_sql(ty, out),
            Cell::F64(v) => v.to_sql(ty, out),
            Cell::I64(v) => v.to_sql(ty, out),
            Cell::I32(v) => v.to_sql(ty, out),
            Cell::Bool(v) => v.to_sql(ty, out),
            Cell::Bytes(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true // each value checks its column's type in to_sql_checked
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut bytes_mut::BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Cell::Uuid(v) => v.to_sql_checked(ty, out),
            Cell::Text(v) => v.to_sql_checked(ty, out),
            Cell::OptText(v) => v.to_sql_checked(ty, out),
            Cell::Time(v) => v.to_sql_checked(ty, out),
            Cell::F64(v) => v.to_sql_checked(ty, out),
            Cell::I64(v) => v.to_sql_checked(ty, out),
            Cell::I32(v) => v.to_sql_checked(ty, out),
            Cell::Bool(v) => v.to_sql_checked(ty, out),
            Cell::Bytes(v) => v.to_sql_checked(ty, out),
        }
    }
}

/// `BytesMut` as `ToSql` names it (tokio-postgres re-exports the `bytes` crate's).
mod bytes_mut {
    pub use tokio_postgres::types::private::BytesMut;
}

/// A table `COPY` writes: its columns in order, with their types.
#[derive(Debug, Clone, Copy)]
pub struct CopyTarget {
    pub table: &'static str,
    pub columns: &'static [(&'static str, Type)],
}

impl CopyTarget {
    fn sql(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(n, _)| *n).collect();
        format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            self.table,
            names.join(", ")
        )
    }

    fn types(&self) -> Vec<Type> {
        self.columns.iter().map(|(_, t)| t.clone()).collect()
    }
}

/// `event_keys`: one row per stored raw event.
pub const KEYS: CopyTarget = CopyTarget {
    table: "event_keys",
    columns: &[
        ("relation", Type::TEXT),
        ("tenant_id", Type::TEXT),
        ("store_id", Type::TEXT),
        ("event_id", Type::UUID),
        ("occurred_at", Type::TIMESTAMPTZ),
        ("content_hash", Type::BYTEA),
    ],
};

/// The columns of a raw table: the envelope's (as [`envelope_cells`] gives them),
/// then the relation's own.
macro_rules! envelope_and {
    ($($name:literal => $ty:expr),* $(,)?) => {
        &[
            ("event_id", Type::UUID),
            ("tenant_id", Type::TEXT),
            ("store_id", Type::TEXT),
            ("occurred_at", Type::TIMESTAMPTZ),
            ("received_at", Type::TIMESTAMPTZ),
            ("source", Type::TEXT),
            $(($name, $ty)),*
        ]
    };
}

pub const SENSOR_READINGS: CopyTarget = CopyTarget {
    table: "sensor_readings",
    columns: envelope_and![
        "device_id" => Type::TEXT,
        "kind" => Type::TEXT,
        "value" => Type::FLOAT8,
        "unit" => Type::TEXT,
        "appliance" => Type::TEXT,
        "content_hash" => Type::BYTEA,
        "out_of_range" => Type::BOOL,
    ],
};

pub const POS_HEARTBEATS: CopyTarget = CopyTarget {
    table: "pos_heartbeats",
    columns: envelope_and![
        "terminal_id" => Type::TEXT,
        "app_up" => Type::BOOL,
        "printer" => Type::TEXT,
        "network" => Type::TEXT,
        "software_version" => Type::TEXT,
        "content_hash" => Type::BYTEA,
    ],
};

pub const SALES: CopyTarget = CopyTarget {
    table: "sales",
    columns: envelope_and![
        "kind" => Type::TEXT,
        "transaction_id" => Type::TEXT,
        "terminal_id" => Type::TEXT,
        "currency" => Type::TEXT,
        "total_minor" => Type::INT8,
        "original_transaction_id" => Type::TEXT,
        "content_hash" => Type::BYTEA,
    ],
};

/// `sale_lines`, each with its sale's kind and currency.
pub const SALE_LINES: CopyTarget = CopyTarget {
    table: "sale_lines",
    columns: &[
        ("event_id", Type::UUID),
        ("line_no", Type::INT4),
        ("tenant_id", Type::TEXT),
        ("store_id", Type::TEXT),
        ("occurred_at", Type::TIMESTAMPTZ),
        ("sku", Type::TEXT),
        ("quantity", Type::FLOAT8),
        ("unit_price_minor", Type::INT8),
        ("kind", Type::TEXT),
        ("currency", Type::TEXT),
    ],
};

/// The envelope cells of a raw row, in the order of the tables' first columns.
pub fn envelope_cells<'a>(id: Uuid, e: &'a Envelope) -> [Cell<'a>; 6] {
    [
        Cell::Uuid(id),
        Cell::Text(&e.tenant_id),
        Cell::Text(&e.store_id),
        Cell::Time(from_micros(e.occurred_at)),
        Cell::Time(from_micros(e.received_at)),
        Cell::Text(&e.source),
    ]
}

/// The `sale_lines` rows of a sale, in [`SALE_LINES`] order.
pub fn sale_line_rows(id: Uuid, s: &SaleTransaction) -> Vec<Vec<Cell<'_>>> {
    s.lines
        .iter()
        .enumerate()
        .map(|(n, l)| {
            vec![
                Cell::Uuid(id),
                Cell::I32(n as i32),
                Cell::Text(&s.envelope.tenant_id),
                Cell::Text(&s.envelope.store_id),
                Cell::Time(from_micros(s.envelope.occurred_at)),
                Cell::Text(&l.sku),
                Cell::F64(l.quantity),
                Cell::I64(l.unit_price_minor),
                Cell::Text(s.kind.as_str()),
                Cell::Text(&s.currency),
            ]
        })
        .collect()
}

/// Why a copy into the ledger did not go through.
#[derive(Debug)]
pub enum CopyRefused {
    /// A key of the batch is stored already: take the statement path.
    KeyStored,
    Postgres(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for CopyRefused {
    fn from(e: tokio_postgres::Error) -> Self {
        CopyRefused::Postgres(e)
    }
}

/// Copies `rows` into `target` within `tx`; returns how many.
pub async fn copy_rows(
    tx: &Transaction<'_>,
    target: &CopyTarget,
    rows: &[Vec<Cell<'_>>],
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx.copy_in(&target.sql()).await?;
    let writer = BinaryCopyInWriter::new(sink, &target.types());
    let mut writer = std::pin::pin!(writer);
    for row in rows {
        writer.as_mut().write_raw(row.iter()).await?;
    }
    writer.finish().await
}

/// Copies the keys of a relation's rows into `event_keys`, all or none: a key stored
/// already (the ledger's primary key) rolls the copy back and says so.
pub async fn copy_keys(tx: &Transaction<'_>, keys: &[Vec<Cell<'_>>]) -> Result<u64, CopyRefused> {
    tx.batch_execute("SAVEPOINT bulk_keys").await?;
    match copy_rows(tx, &KEYS, keys).await {
        Ok(n) => {
            tx.batch_execute("RELEASE SAVEPOINT bulk_keys").await?;
            Ok(n)
        }
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT bulk_keys").await?;
            Err(CopyRefused::KeyStored)
        }
        Err(e) => Err(CopyRefused::Postgres(e)),
    }
}

/// `sensor_limits` as read in a batch's transaction: `[low, high]` by (kind,
/// appliance), `'*'` standing for any other appliance.
#[derive(Debug, Default)]
pub struct SensorLimits {
    limits: HashMap<(String, String), (f64, f64)>,
}

impl SensorLimits {
    pub async fn read(tx: &Transaction<'_>) -> Result<Self, tokio_postgres::Error> {
        let rows = tx
            .query("SELECT kind, appliance, low, high FROM sensor_limits", &[])
            .await?;
        Ok(Self {
            limits: rows
                .iter()
                .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
                .collect(),
        })
    }

    /// Whether `value` of `kind` on `appliance` is out of range: outside the limits of
    /// (kind, appliance), else of (kind, '*'); no limits: false. The rule of
    /// `insert_sensor_readings.sql`.
    pub fn out_of_range(&self, kind: &str, appliance: Option<&str>, value: f64) -> bool {
        let own = appliance.and_then(|a| self.limits.get(&(kind.to_string(), a.to_string())));
        let any = || self.limits.get(&(kind.to_string(), "*".to_string()));
        own.or_else(any)
            .is_some_and(|(low, high)| value < *low || value > *high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_prefers_the_appliance_then_any_appliance() {
        let mut l = SensorLimits::default();
        l.limits
            .insert(("temperature".into(), "fridge".into()), (0.0, 8.0));
        l.limits
            .insert(("temperature".into(), "*".into()), (-60.0, 30.0));
        assert!(l.out_of_range("temperature", Some("fridge"), 9.0));
        assert!(
            !l.out_of_range("temperature", Some("fridge"), 8.0),
            "bounds are in range"
        );
        assert!(
            !l.out_of_range("temperature", Some("cellar"), 9.0),
            "falls back to '*'"
        );
        assert!(
            l.out_of_range("temperature", None, 31.0),
            "no appliance: '*'"
        );
        assert!(
            !l.out_of_range("humidity", Some("fridge"), 1e9),
            "no limits: never"
        );
    }

    #[test]
    fn copy_statements_name_every_column_in_order() {
        assert_eq!(
            SENSOR_READINGS.sql(),
            "COPY sensor_readings (event_id, tenant_id, store_id, occurred_at, received_at, source, device_id, kind, value, unit, appliance, content_hash, out_of_range) FROM STDIN (FORMAT binary)"
        );
        assert_eq!(SALE_LINES.types().len(), 10);
        assert_eq!(KEYS.types()[3], Type::UUID);
    }
}
