//! The rules' checkpoint in Postgres (schema `rules`): per partition of the consumer group, the
//! stores' evaluation state, the consumed offsets, the arrival frontiers and the
//! outbox of decided alert transitions — all written in one transaction per batch.
//!
//! Guarantees:
//! - state, offsets and decided transitions always agree: a crash before the
//!   commit loses the batch's effects and its offsets together (the records are
//!   read again and decide the same), after it keeps them all;
//! - a member that lost a partition (the group moved it while it was writing)
//!   cannot overwrite its new owner: taking a partition over raises its epoch, and
//!   a write carrying an older epoch is dropped for that partition ([`Committed::fenced`]);
//! - a decided transition stays in the outbox until the broker acknowledged it
//!   (see [`crate::processor`]).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

use storepulse_runtime::db::{Migration, MigrationSet};

use crate::engine::{PartitionState, StoreState};

/// The rules' migrations: their own schema `rules` and bookkeeping table.
pub const MIGRATIONS: MigrationSet = MigrationSet {
    schema: Some("rules"),
    table: "schema_migrations",
    lock: 0x5354_5055_4c53_5201,
    migrations: &[
        Migration {
            version: 1,
            name: "state",
            sql: include_str!("../migrations/0001_state.sql"),
        },
        Migration {
            version: 2,
            name: "state_lz4",
            sql: include_str!("../migrations/0002_state_lz4.sql"),
        },
    ],
};
use crate::observation::Source;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("postgres: {}", storepulse_runtime::db::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("stored state of partition {partition} does not read: {reason}")]
    Corrupt { partition: i32, reason: String },
}

/// A decided transition kept until the broker acknowledged it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub seq: i64,
    pub partition: i32,
    pub event_id: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

impl OutboxRow {
    fn from_row(r: &tokio_postgres::Row) -> Self {
        Self {
            seq: r.get("seq"),
            partition: r.get("partition"),
            event_id: r.get("event_id"),
            key: r.get("record_key"),
            payload: r.get("payload"),
            created_at: r.get("created_at"),
        }
    }
}

/// A partition taken over: its new epoch and everything stored for it.
#[derive(Debug)]
pub struct Claimed {
    pub epoch: i64,
    pub state: PartitionState,
    /// Next offset per base topic.
    pub offsets: Vec<(String, i64)>,
    pub outbox: Vec<OutboxRow>,
}

/// Takes `partition` over for `owner` and loads its checkpoint.
pub async fn claim(
    pool: &Pool,
    group: &str,
    partition: i32,
    owner: &str,
) -> Result<Claimed, CheckpointError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            &tx.prepare_cached(include_str!("../sql/claim_partition.sql"))
                .await?,
            &[&group, &partition, &owner],
        )
        .await?;
    let epoch: i64 = row.get(0);
    let arrival: Vec<i64> = row.get(1);
    let mut state = PartitionState::default();
    for (i, a) in arrival.into_iter().take(Source::ALL.len()).enumerate() {
        state.arrival[i] = a;
    }
    let rows = tx
        .query(
            &tx.prepare_cached(include_str!("../sql/load_stores.sql"))
                .await?,
            &[&group, &partition],
        )
        .await?;
    for r in rows {
        let text: String = r.get(0);
        let s: StoreState = serde_json::from_str(&text).map_err(|e| CheckpointError::Corrupt {
            partition,
            reason: e.to_string(),
        })?;
        state.stores.insert(s.store.clone(), s);
    }
    let offsets = tx
        .query(
            &tx.prepare_cached(include_str!("../sql/load_offsets.sql"))
                .await?,
            &[&group, &partition],
        )
        .await?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    let outbox = tx
        .query(
            &tx.prepare_cached(include_str!("../sql/load_outbox.sql"))
                .await?,
            &[&group, &partition],
        )
        .await?
        .iter()
        .map(OutboxRow::from_row)
        .collect();
    tx.commit().await?;
    Ok(Claimed {
        epoch,
        state,
        offsets,
        outbox,
    })
}

/// One batch's effects, serialised.
#[derive(Debug, Default)]
pub struct Write {
    /// (partition, tenant, store, state JSON).
    pub stores: Vec<(i32, String, String, String)>,
    /// Arrival frontiers per partition.
    pub arrival: BTreeMap<i32, [i64; 5]>,
    /// Next offset per (base topic, partition).
    pub offsets: BTreeMap<(String, i32), i64>,
    /// (partition, event id, key, payload), in decision order.
    pub outbox: Vec<(i32, String, String, Vec<u8>)>,
}

impl Write {
    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
            && self.arrival.is_empty()
            && self.offsets.is_empty()
            && self.outbox.is_empty()
    }

    /// Every partition the write touches.
    fn partitions(&self) -> Vec<i32> {
        let mut ps: Vec<i32> = self
            .stores
            .iter()
            .map(|s| s.0)
            .chain(self.arrival.keys().copied())
            .chain(self.offsets.keys().map(|(_, p)| *p))
            .chain(self.outbox.iter().map(|o| o.0))
            .collect();
        ps.sort_unstable();
        ps.dedup();
        ps
    }
}

/// What a commit did.
#[derive(Debug, Default)]
pub struct Committed {
    /// Partitions whose epoch moved on: nothing was written for them.
    pub fenced: Vec<i32>,
    /// The outbox rows inserted, in decision order.
    pub outbox: Vec<OutboxRow>,
}

/// Writes `w` in one transaction, for the partitions still held at `epochs`.
pub async fn commit(
    pool: &Pool,
    group: &str,
    epochs: &HashMap<i32, i64>,
    w: &Write,
) -> Result<Committed, CheckpointError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let partitions = w.partitions();
    let locked = tx
        .query(
            &tx.prepare_cached(include_str!("../sql/lock_partitions.sql"))
                .await?,
            &[&group, &partitions],
        )
        .await?;
    let stored: HashMap<i32, i64> = locked
        .iter()
        .map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1)))
        .collect();
    let fenced: Vec<i32> = partitions
        .iter()
        .copied()
        .filter(|p| epochs.get(p).is_none() || stored.get(p) != epochs.get(p))
        .collect();
    let held = |p: &i32| !fenced.contains(p);

    let stores: Vec<&(i32, String, String, String)> =
        w.stores.iter().filter(|s| held(&s.0)).collect();
    if !stores.is_empty() {
        let ps: Vec<i32> = stores.iter().map(|s| s.0).collect();
        let tenants: Vec<&str> = stores.iter().map(|s| s.1.as_str()).collect();
        let ids: Vec<&str> = stores.iter().map(|s| s.2.as_str()).collect();
        let states: Vec<&str> = stores.iter().map(|s| s.3.as_str()).collect();
        let params: [&(dyn ToSql + Sync); 5] = [&group, &ps, &tenants, &ids, &states];
        tx.execute(
            &tx.prepare_cached(include_str!("../sql/save_stores.sql"))
                .await?,
            &params,
        )
        .await?;
    }
    for (p, arrival) in w.arrival.iter().filter(|(p, _)| held(p)) {
        let a: Vec<i64> = arrival.to_vec();
        tx.execute(
            &tx.prepare_cached(include_str!("../sql/save_arrival.sql"))
                .await?,
            &[&group, p, &a],
        )
        .await?;
    }
    let offsets: Vec<(&(String, i32), &i64)> =
        w.offsets.iter().filter(|((_, p), _)| held(p)).collect();
    if !offsets.is_empty() {
        let topics: Vec<&str> = offsets.iter().map(|((t, _), _)| t.as_str()).collect();
        let ps: Vec<i32> = offsets.iter().map(|((_, p), _)| *p).collect();
        let next: Vec<i64> = offsets.iter().map(|(_, n)| **n).collect();
        tx.execute(
            &tx.prepare_cached(include_str!("../sql/save_offsets.sql"))
                .await?,
            &[&group, &topics, &ps, &next],
        )
        .await?;
    }
    let outbox: Vec<&(i32, String, String, Vec<u8>)> =
        w.outbox.iter().filter(|o| held(&o.0)).collect();
    let mut inserted = Vec::new();
    if !outbox.is_empty() {
        let ps: Vec<i32> = outbox.iter().map(|o| o.0).collect();
        let ids: Vec<&str> = outbox.iter().map(|o| o.1.as_str()).collect();
        let keys: Vec<&str> = outbox.iter().map(|o| o.2.as_str()).collect();
        let payloads: Vec<&[u8]> = outbox.iter().map(|o| o.3.as_slice()).collect();
        let params: [&(dyn ToSql + Sync); 5] = [&group, &ps, &ids, &keys, &payloads];
        inserted = tx
            .query(
                &tx.prepare_cached(include_str!("../sql/insert_outbox.sql"))
                    .await?,
                &params,
            )
            .await?
            .iter()
            .map(OutboxRow::from_row)
            .collect();
        inserted.sort_by_key(|r: &OutboxRow| r.seq);
    }
    tx.commit().await?;
    Ok(Committed {
        fenced,
        outbox: inserted,
    })
}

/// Removes acknowledged transitions from the outbox.
pub async fn delete_outbox(pool: &Pool, group: &str, seqs: &[i64]) -> Result<(), CheckpointError> {
    if seqs.is_empty() {
        return Ok(());
    }
    let client = pool.get().await?;
    client
        .execute(
            &client
                .prepare_cached(include_str!("../sql/delete_outbox.sql"))
                .await?,
            &[&group, &seqs],
        )
        .await?;
    Ok(())
}
