//! The forecaster's state in Postgres (schema `forecaster`, its own migrations):
//! daily net demand per store/sku in the store's time zone, the latest stock, the
//! series' publication bookkeeping, an event-key ledger, and the consumed offsets.
//!
//! Guarantees:
//! - a batch's demand, stock, series notes, event keys and next offsets are written
//!   in one transaction, so a crash at any point loses or keeps them together;
//! - records below the stored next offset of their partition are skipped (the offset
//!   rows are locked for the batch, so two members never both apply a record), and an
//!   event id already applied for its store counts once (a retried event arriving at a
//!   new offset), for as long as the ledger keeps it (`dedup_days`);
//! - the state is the forecaster's own: it is rebuilt by replaying `pos.sales.v1` and
//!   `pos.inventory.v1` from the start with a new group (or an emptied schema).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Pool;
use storepulse_runtime::consumer::Batch;
use storepulse_runtime::db::{Migration, MigrationSet};
use storepulse_runtime::records::{
    InventoryChange, InventoryChangeKind, SaleKind, SaleTransaction,
};

use crate::zones::StoreZones;

/// The forecaster's migrations: schema `forecaster`, its own bookkeeping table and lock.
pub const MIGRATIONS: MigrationSet = MigrationSet {
    schema: Some("forecaster"),
    table: "schema_migrations",
    lock: 0x5354_5055_4c53_4601,
    migrations: &[Migration {
        version: 1,
        name: "state",
        sql: include_str!("../migrations/0001_state.sql"),
    }],
};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("postgres: {}", storepulse_runtime::db::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// A decoded input record.
#[derive(Debug, Clone)]
pub enum Input {
    Sale(SaleTransaction),
    Stock(InventoryChange),
}

impl Input {
    fn key(&self) -> (&str, &str, &str) {
        let e = match self {
            Input::Sale(s) => &s.envelope,
            Input::Stock(s) => &s.envelope,
        };
        (&e.tenant_id, &e.store_id, &e.event_id)
    }
}

/// What a batch changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub sale_lines: u64,
    pub stock_changes: u64,
    /// Records below the stored offset (applied before).
    pub replayed: u64,
    /// Records whose event id was applied before.
    pub duplicates: u64,
}

/// A store/sku key.
pub type SeriesKey = (String, String, String);

fn micros_to_utc(micros: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default()
}

/// Applies `batch` and stores its next offsets, in one transaction.
pub async fn apply_batch(
    pool: &Pool,
    group: &str,
    batch: &Batch<Input>,
    zones: &StoreZones,
) -> Result<Applied, StateError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut applied = Applied::default();
    let (topics, parts): (Vec<String>, Vec<i32>) = batch.next_offsets.keys().cloned().unzip();
    tx.execute(
        &tx.prepare_cached(include_str!("../sql/init_offsets.sql"))
            .await?,
        &[&group, &topics, &parts],
    )
    .await?;
    let stored: HashMap<(String, i32), i64> = tx
        .query(
            &tx.prepare_cached(include_str!("../sql/lock_offsets.sql"))
                .await?,
            &[&group, &topics, &parts],
        )
        .await?
        .into_iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let fresh: Vec<&Input> = batch
        .items
        .iter()
        .filter(|p| {
            let below = stored
                .get(&(p.topic.clone(), p.partition))
                .is_some_and(|next| p.offset < *next);
            applied.replayed += u64::from(below);
            !below
        })
        .map(|p| &p.item)
        .collect();
    // The event-key ledger decides which records are new.
    let mut new: Vec<&Input> = Vec::with_capacity(fresh.len());
    if !fresh.is_empty() {
        let (mut t, mut s, mut e) = (Vec::new(), Vec::new(), Vec::new());
        for i in &fresh {
            let (a, b, c) = i.key();
            t.push(a);
            s.push(b);
            e.push(c);
        }
        let rows = tx
            .query(
                &tx.prepare_cached(include_str!("../sql/insert_event_keys.sql"))
                    .await?,
                &[&t, &s, &e],
            )
            .await?;
        let keep: HashSet<i64> = rows.iter().map(|r| r.get::<_, i64>(0)).collect();
        for (i, item) in fresh.iter().enumerate() {
            if keep.contains(&(i as i64 + 1)) {
                new.push(item);
            } else {
                applied.duplicates += 1;
            }
        }
    }
    // Net units per store/sku/local day; series notes.
    let mut demand: BTreeMap<(SeriesKey, NaiveDate), (f64, f64, i64)> = BTreeMap::new();
    let mut series: BTreeMap<SeriesKey, (Option<NaiveDate>, i64, bool)> = BTreeMap::new();
    let mut stock: Vec<&InventoryChange> = Vec::new();
    for item in new {
        match item {
            Input::Sale(s) => {
                let e = &s.envelope;
                let day = zones.day(&e.tenant_id, &e.store_id, e.occurred_at);
                let sign = match s.kind {
                    SaleKind::Sale => 1.0,
                    SaleKind::Refund | SaleKind::Void => -1.0,
                };
                for line in &s.lines {
                    let key = (e.tenant_id.clone(), e.store_id.clone(), line.sku.clone());
                    let d = demand.entry((key.clone(), day)).or_default();
                    d.0 += sign * line.quantity;
                    if s.kind == SaleKind::Sale {
                        d.1 += line.quantity;
                    }
                    d.2 += 1;
                    let n = series.entry(key).or_insert((Some(day), 0, false));
                    n.0 = n.0.min(Some(day)).or(Some(day));
                    n.1 += 1;
                    applied.sale_lines += 1;
                }
            }
            Input::Stock(c) => {
                let e = &c.envelope;
                let key = (e.tenant_id.clone(), e.store_id.clone(), c.sku.clone());
                series.entry(key).or_insert((None, 0, false)).2 = true;
                stock.push(c);
                applied.stock_changes += 1;
            }
        }
    }
    if !demand.is_empty() {
        let keys: Vec<&SeriesKey> = demand.keys().map(|(k, _)| k).collect();
        let (t, s, k) = key_columns(&keys);
        let days: Vec<NaiveDate> = demand.keys().map(|(_, d)| *d).collect();
        let units: Vec<f64> = demand.values().map(|v| v.0).collect();
        let sold: Vec<f64> = demand.values().map(|v| v.1).collect();
        let lines: Vec<i64> = demand.values().map(|v| v.2).collect();
        tx.execute(
            &tx.prepare_cached(include_str!("../sql/add_demand.sql"))
                .await?,
            &[&t, &s, &k, &days, &units, &sold, &lines],
        )
        .await?;
    }
    if !stock.is_empty() {
        let st = tx
            .prepare_cached(include_str!("../sql/apply_stock.sql"))
            .await?;
        for c in stock {
            let e = &c.envelope;
            let snapshot = c.kind == InventoryChangeKind::Snapshot;
            tx.execute(
                &st,
                &[
                    &e.tenant_id,
                    &e.store_id,
                    &c.sku,
                    &snapshot,
                    &c.quantity,
                    &micros_to_utc(e.occurred_at),
                ],
            )
            .await?;
        }
    }
    if !series.is_empty() {
        let keys: Vec<&SeriesKey> = series.keys().collect();
        let (t, s, k) = key_columns(&keys);
        let first: Vec<Option<NaiveDate>> = series.values().map(|v| v.0).collect();
        let lines: Vec<i64> = series.values().map(|v| v.1).collect();
        let stock_changed: Vec<bool> = series.values().map(|v| v.2).collect();
        tx.execute(
            &tx.prepare_cached(include_str!("../sql/touch_series.sql"))
                .await?,
            &[&t, &s, &k, &first, &lines, &stock_changed],
        )
        .await?;
    }
    let (mut t, mut p, mut o) = (Vec::new(), Vec::new(), Vec::new());
    for ((topic, partition), next) in &batch.next_offsets {
        t.push(topic.as_str());
        p.push(*partition);
        o.push(*next);
    }
    tx.execute(
        &tx.prepare_cached(include_str!("../sql/store_offsets.sql"))
            .await?,
        &[&group, &t, &p, &o],
    )
    .await?;
    tx.commit().await?;
    Ok(applied)
}

/// A series claimed for a forecast.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub key: SeriesKey,
    pub first_day: NaiveDate,
    pub lines_seen: i64,
    pub stock_seen: bool,
}

/// What decides when a series is forecast again.
#[derive(Debug, Clone, Copy)]
pub struct DuePolicy {
    pub max_series: i64,
    pub claim_secs: f64,
    pub refresh_secs: f64,
    pub refresh_after_lines: i64,
    pub min_republish_secs: f64,
}

/// Claims the series due for a forecast (see `sql/claim_due.sql`).
pub async fn claim_due(pool: &Pool, policy: DuePolicy) -> Result<Vec<Due>, StateError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &client
                .prepare_cached(include_str!("../sql/claim_due.sql"))
                .await?,
            &[
                &policy.max_series,
                &policy.claim_secs,
                &policy.refresh_secs,
                &policy.refresh_after_lines,
                &policy.min_republish_secs,
            ],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| Due {
            key: (r.get(0), r.get(1), r.get(2)),
            first_day: r.get(3),
            lines_seen: r.get(4),
            stock_seen: r.get(5),
        })
        .collect())
}

fn key_columns<'a>(keys: &[&'a SeriesKey]) -> (Vec<&'a str>, Vec<&'a str>, Vec<&'a str>) {
    let mut cols: (Vec<&str>, Vec<&str>, Vec<&str>) = Default::default();
    for (t, s, k) in keys {
        cols.0.push(t);
        cols.1.push(s);
        cols.2.push(k);
    }
    cols
}

/// Daily net units of `keys` from `from` on, per series (days without sales absent).
pub async fn load_history(
    pool: &Pool,
    keys: &[&SeriesKey],
    from: NaiveDate,
) -> Result<HashMap<SeriesKey, Vec<(NaiveDate, f64)>>, StateError> {
    let client = pool.get().await?;
    let (t, s, k) = key_columns(keys);
    let rows = client
        .query(
            &client
                .prepare_cached(include_str!("../sql/load_history.sql"))
                .await?,
            &[&t, &s, &k, &from],
        )
        .await?;
    let mut out: HashMap<SeriesKey, Vec<(NaiveDate, f64)>> = HashMap::new();
    for r in rows {
        out.entry((r.get(0), r.get(1), r.get(2)))
            .or_default()
            .push((r.get(3), r.get(4)));
    }
    Ok(out)
}

/// On hand of `keys` (those with inventory changes).
pub async fn load_stock(
    pool: &Pool,
    keys: &[&SeriesKey],
) -> Result<HashMap<SeriesKey, f64>, StateError> {
    let client = pool.get().await?;
    let (t, s, k) = key_columns(keys);
    let rows = client
        .query(
            &client
                .prepare_cached(include_str!("../sql/load_stock.sql"))
                .await?,
            &[&t, &s, &k],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.get(0), r.get(1), r.get(2)), r.get(3)))
        .collect())
}

/// Marks published series (their method; the lines and stock change they saw).
pub async fn finish(pool: &Pool, done: &[(&Due, &str)]) -> Result<(), StateError> {
    if done.is_empty() {
        return Ok(());
    }
    let client = pool.get().await?;
    let keys: Vec<&SeriesKey> = done.iter().map(|(d, _)| &d.key).collect();
    let (t, s, k) = key_columns(&keys);
    let methods: Vec<&str> = done.iter().map(|(_, m)| *m).collect();
    let seen: Vec<i64> = done.iter().map(|(d, _)| d.lines_seen).collect();
    let stock: Vec<bool> = done.iter().map(|(d, _)| d.stock_seen).collect();
    client
        .execute(
            &client
                .prepare_cached(include_str!("../sql/finish_series.sql"))
                .await?,
            &[&t, &s, &k, &methods, &seen, &stock],
        )
        .await?;
    Ok(())
}

/// Forgets event keys older than `days`; returns how many.
pub async fn prune_event_keys(pool: &Pool, days: i32) -> Result<u64, StateError> {
    let client = pool.get().await?;
    Ok(client
        .execute(
            &client
                .prepare_cached(include_str!("../sql/prune_event_keys.sql"))
                .await?,
            &[&days],
        )
        .await?)
}
