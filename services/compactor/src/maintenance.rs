//! The compactor's maintenance task: partitions ahead, retention, archiving, and the
//! key ledger's pruning, on a schedule (`compactor.maintenance_interval_secs`).
//!
//! Guarantees, per relation with a [`RetentionRule`] other than keep (times are the
//! relation's event time, `raw_relations.time_column`):
//! - raw relations lose their rows a whole partition (TimescaleDB: chunk) at a time,
//!   once the partition lies wholly before `now - after`; nothing newer is touched. On
//!   plain PostgreSQL this task drops the partitions; on TimescaleDB it sets the
//!   relation's retention policy (`add_retention_policy`), which drops the chunks.
//! - archived relations: the rows of such a partition are copied into
//!   `storepulse_archive.<relation>` (same columns) and the partition is dropped, in one
//!   transaction, by this task on both flavours (TimescaleDB has no archive policy).
//! - analyst relations: plain PostgreSQL, rows whose `bucket` is older than
//!   `now - after` are deleted; TimescaleDB, the continuous aggregate's retention policy
//!   drops its materialized chunks that lie wholly before `now - after`.
//! - the key ledger keeps every key whose row may still exist: keys are pruned only
//!   below the oldest partition left (decision 0009).
//!
//! Plain PostgreSQL also gets the partitions of the next 7 days created ahead, so the
//! writer rarely creates one. Several compactors may run: one run at a time holds an
//! advisory lock, the others skip.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use prometheus::{IntCounterVec, Opts, Registry};
use storepulse_runtime::db::{self, DbError, Flavour, describe};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::retention::{ANALYST_RELATIONS, RAW_RELATIONS, RetentionRule};

/// Partitions created ahead of time on plain PostgreSQL.
const AHEAD: Duration = Duration::from_secs(7 * 86_400);

/// Arbitrary constant naming the maintenance advisory lock.
const MAINTENANCE_LOCK: i64 = 0x5354_5055_4c53_4502;

#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("postgres: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("{0}")]
    Db(#[from] DbError),
}

/// What one maintenance run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// False when another compactor's run held the lock (nothing was done).
    pub ran: bool,
    pub partitions_created: i64,
    /// Raw partitions dropped (plain) or archived and dropped (both flavours), by
    /// relation.
    pub partitions_removed: BTreeMap<String, u64>,
    pub rows_archived: BTreeMap<String, u64>,
    /// Plain: rollup rows deleted, by relation.
    pub aggregate_rows_deleted: BTreeMap<String, u64>,
    pub keys_pruned: u64,
    /// TimescaleDB: retention policies added, changed or removed.
    pub policies_changed: u64,
}

/// Prometheus counters of the task.
#[derive(Debug, Clone)]
pub struct MaintenanceMetrics {
    /// `storepulse_compactor_maintenance_runs_total{outcome}`.
    runs: IntCounterVec,
    /// `storepulse_compactor_retention_partitions_removed_total{relation}`.
    partitions_removed: IntCounterVec,
    /// `storepulse_compactor_retention_rows_archived_total{relation}`.
    rows_archived: IntCounterVec,
}

impl MaintenanceMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let runs = IntCounterVec::new(
            Opts::new(
                "compactor_maintenance_runs_total",
                "Maintenance runs (partitions, retention, archiving, key pruning) by outcome",
            ),
            &["outcome"],
        )?;
        let partitions_removed = IntCounterVec::new(
            Opts::new(
                "compactor_retention_partitions_removed_total",
                "Raw partitions removed by retention or archiving",
            ),
            &["relation"],
        )?;
        let rows_archived = IntCounterVec::new(
            Opts::new(
                "compactor_retention_rows_archived_total",
                "Raw rows moved to storepulse_archive",
            ),
            &["relation"],
        )?;
        registry.register(Box::new(runs.clone()))?;
        registry.register(Box::new(partitions_removed.clone()))?;
        registry.register(Box::new(rows_archived.clone()))?;
        Ok(Self {
            runs,
            partitions_removed,
            rows_archived,
        })
    }
}

/// `"<seconds> seconds"`, an interval text.
fn interval(d: Duration) -> String {
    format!("{} seconds", d.as_secs())
}

/// `name` as a quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One maintenance run with `rules` (see the module docs).
pub async fn run_once(
    pool: &Pool,
    rules: &BTreeMap<String, RetentionRule>,
) -> Result<MaintenanceReport, MaintenanceError> {
    let client = pool.get().await?;
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&MAINTENANCE_LOCK])
        .await?
        .get(0);
    if !locked {
        return Ok(MaintenanceReport::default());
    }
    let result = run_locked(pool, rules).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MAINTENANCE_LOCK])
        .await?;
    result
}

async fn run_locked(
    pool: &Pool,
    rules: &BTreeMap<String, RetentionRule>,
) -> Result<MaintenanceReport, MaintenanceError> {
    let flavour = db::flavour(pool).await?;
    let mut report = MaintenanceReport {
        ran: true,
        ..Default::default()
    };
    let mut client = pool.get().await?;
    if flavour == Flavour::Plain {
        report.partitions_created = client
            .query_one(
                include_str!("../sql/maintenance_partitions_ahead.sql"),
                &[&interval(AHEAD)],
            )
            .await?
            .get(0);
    }

    for relation in RAW_RELATIONS {
        let rule = rules.get(relation).copied().unwrap_or(RetentionRule::Keep);
        match (flavour, rule) {
            (_, RetentionRule::Keep) => {}
            (Flavour::Plain, RetentionRule::DropAfter(after)) => {
                remove_partitions(&mut client, &mut report, relation, after, false, flavour)
                    .await?;
            }
            (_, RetentionRule::ArchiveAfter(after)) => {
                remove_partitions(&mut client, &mut report, relation, after, true, flavour).await?;
            }
            (Flavour::TimescaleDb, RetentionRule::DropAfter(_)) => {}
        }
        if flavour == Flavour::TimescaleDb {
            let policy = match rule {
                RetentionRule::DropAfter(after) => Some(after),
                _ => None,
            };
            report.policies_changed +=
                set_retention_policy(&client, "public", relation, policy).await?;
        }
        if let Some(after) = rule.after() {
            report.keys_pruned += client
                .execute(
                    include_str!("../sql/maintenance_prune_keys.sql"),
                    &[&relation, &interval(after)],
                )
                .await?;
        }
    }

    for relation in ANALYST_RELATIONS {
        let after = rules.get(relation).and_then(|r| r.after());
        match flavour {
            Flavour::Plain => {
                if let Some(after) = after {
                    let deleted = client
                        .execute(
                            &format!(
                                "DELETE FROM public.{} WHERE bucket < now() - $1::text::interval",
                                ident(relation)
                            ),
                            &[&interval(after)],
                        )
                        .await?;
                    if deleted > 0 {
                        report
                            .aggregate_rows_deleted
                            .insert(relation.to_string(), deleted);
                    }
                }
            }
            Flavour::TimescaleDb => {
                report.policies_changed +=
                    set_retention_policy(&client, "storepulse_aggregates", relation, after).await?;
            }
        }
    }
    Ok(report)
}

/// Removes the partitions of raw `relation` lying wholly before `now - after`, oldest
/// first, each in its own transaction; with `archive`, their rows are copied into
/// `storepulse_archive.<relation>` in that transaction first.
async fn remove_partitions(
    client: &mut deadpool_postgres::Object,
    report: &mut MaintenanceReport,
    relation: &str,
    after: Duration,
    archive: bool,
    flavour: Flavour,
) -> Result<(), MaintenanceError> {
    let expired: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = client
        .query(
            include_str!("../sql/maintenance_expired_partitions.sql"),
            &[&relation, &interval(after)],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let table = format!("public.{}", ident(relation));
    let archive_table = format!("storepulse_archive.{}", ident(relation));
    let time_column: String = client
        .query_one(
            "SELECT time_column FROM raw_relations WHERE relation = $1",
            &[&relation],
        )
        .await?
        .get(0);
    let time_column = ident(&time_column);
    for (partition, lo, hi) in expired {
        let tx = client.transaction().await?;
        // Dropping a partition waits for queries on the relation; do not hold the
        // compactor's writes behind a long analyst query for more than this.
        tx.batch_execute("SET LOCAL lock_timeout = '5s'").await?;
        if archive {
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS storepulse_archive;
                 CREATE TABLE IF NOT EXISTS {archive_table} (LIKE {table})"
            ))
            .await?;
            let moved = tx
                .execute(
                    &format!(
                        "INSERT INTO {archive_table} SELECT * FROM {table}
                         WHERE {time_column} >= $1 AND {time_column} < $2"
                    ),
                    &[&lo, &hi],
                )
                .await?;
            *report
                .rows_archived
                .entry(relation.to_string())
                .or_default() += moved;
        }
        match flavour {
            Flavour::Plain => {
                tx.batch_execute(&format!("DROP TABLE public.{}", ident(&partition)))
                    .await?;
            }
            Flavour::TimescaleDb => {
                tx.query(
                    "SELECT drop_chunks($1::text::regclass, older_than => $3::timestamptz,
                                        newer_than => $2::timestamptz)",
                    &[&table, &lo, &hi],
                )
                .await?;
            }
        }
        tx.commit().await?;
        *report
            .partitions_removed
            .entry(relation.to_string())
            .or_default() += 1;
        info!(relation, %partition, %lo, %hi, archive, "retention removed a partition");
    }
    Ok(())
}

/// TimescaleDB: makes `schema.relation`'s retention policy drop chunks after `after`
/// (none: no policy); returns 1 if it changed anything.
async fn set_retention_policy(
    client: &deadpool_postgres::Object,
    schema: &str,
    relation: &str,
    after: Option<Duration>,
) -> Result<u64, MaintenanceError> {
    let wanted = after.map(interval);
    let existing = client
        .query_opt(
            include_str!("../sql/maintenance_retention_policy.sql"),
            &[&schema, &relation, &wanted.clone().unwrap_or_default()],
        )
        .await?
        .map(|r| r.get::<_, Option<bool>>(1).unwrap_or(false));
    let name = format!("{}.{}", ident(schema), ident(relation));
    match (existing, wanted) {
        (Some(true), Some(_)) | (None, None) => Ok(0),
        (existing, wanted) => {
            if existing.is_some() {
                client
                    .execute(
                        "SELECT remove_retention_policy($1::text::regclass)",
                        &[&name],
                    )
                    .await?;
            }
            if let Some(after) = wanted {
                client
                    .execute(
                        "SELECT add_retention_policy($1::text::regclass, drop_after => $2::text::interval)",
                        &[&name, &after],
                    )
                    .await?;
            }
            info!(relation = %name, drop_after = ?after.map(|d| d.as_secs()), "set the retention policy");
            Ok(1)
        }
    }
}

/// Runs maintenance now and every `every` until `shutdown`; a failed run is logged
/// and retried at the next.
pub async fn run_periodically(
    pool: Pool,
    rules: BTreeMap<String, RetentionRule>,
    every: Duration,
    metrics: MaintenanceMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        match run_once(&pool, &rules).await {
            Ok(report) => {
                metrics.runs.with_label_values(&["ok"]).inc();
                for (relation, n) in &report.partitions_removed {
                    metrics
                        .partitions_removed
                        .with_label_values(&[relation])
                        .inc_by(*n);
                }
                for (relation, n) in &report.rows_archived {
                    metrics
                        .rows_archived
                        .with_label_values(&[relation])
                        .inc_by(*n);
                }
                if report.ran {
                    info!(?report, "maintenance done");
                }
            }
            Err(e) => {
                metrics.runs.with_label_values(&["error"]).inc();
                warn!(error = %e, "maintenance failed; retrying at the next run");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
    }
}
