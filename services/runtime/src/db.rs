//! Postgres: the connection pool, versioned schema migrations and the read store's
//! flavour.
//!
//! Migrations are the `.sql` files in `services/runtime/migrations/`, embedded at
//! build time and applied in order, each in its own transaction, under an advisory
//! lock so several pods starting together apply each exactly once. An applied
//! migration whose file changed afterwards is an error, not a silent drift.
//!
//! The read store has a [`Flavour`]: TimescaleDB when the server has the extension
//! (created in the database, or available and preloaded through
//! `shared_preload_libraries`) at the migration that first records the flavour,
//! plain PostgreSQL otherwise. Some migrations have a TimescaleDB variant
//! (`NNNN_name.timescaledb.sql`); the flavour is recorded in `read_store` and never
//! changes afterwards, so a store is migrated in one flavour for good.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tracing::info;

use crate::config::PostgresConfig;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    /// The SQL applied (on the read store: on plain PostgreSQL, and on TimescaleDB
    /// unless [`TIMESCALEDB_VARIANTS`] has one for the version).
    pub sql: &'static str,
}

/// Read-store migrations whose SQL differs on the TimescaleDB flavour, by version.
pub const TIMESCALEDB_VARIANTS: &[(i32, &str)] = &[
    (
        9,
        include_str!("../migrations/0009_time_partitioning.timescaledb.sql"),
    ),
    (
        10,
        include_str!("../migrations/0010_continuous_aggregates.timescaledb.sql"),
    ),
];

impl Migration {
    /// The SQL this read-store migration applies on `flavour`.
    pub fn sql_for(&self, flavour: Flavour) -> &'static str {
        match flavour {
            Flavour::TimescaleDb => TIMESCALEDB_VARIANTS
                .iter()
                .find(|(v, _)| *v == self.version)
                .map_or(self.sql, |(_, sql)| sql),
            Flavour::Plain => self.sql,
        }
    }
}

/// What the read store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavour {
    /// Plain PostgreSQL: time-partitioned raw tables kept by the compactor's
    /// maintenance task; rollup tables maintained by the compactor in the rows'
    /// transaction.
    Plain,
    /// PostgreSQL with TimescaleDB: raw hypertables; continuous aggregates with
    /// real-time aggregation; refresh, compression and retention policies.
    TimescaleDb,
}

impl Flavour {
    /// The name recorded in `read_store.flavour`.
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::Plain => "plain",
            Flavour::TimescaleDb => "timescaledb",
        }
    }
}

impl std::fmt::Display for Flavour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flavour::Plain => "plain PostgreSQL",
            Flavour::TimescaleDb => "TimescaleDB",
        })
    }
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "raw_events",
        sql: include_str!("../migrations/0001_raw_events.sql"),
    },
    Migration {
        version: 2,
        name: "api_keys",
        sql: include_str!("../migrations/0002_api_keys.sql"),
    },
    Migration {
        version: 3,
        name: "scoped_idempotency",
        sql: include_str!("../migrations/0003_scoped_idempotency.sql"),
    },
    Migration {
        version: 4,
        name: "analyst_rollups",
        sql: include_str!("../migrations/0004_analyst_rollups.sql"),
    },
    Migration {
        version: 5,
        name: "pos_uptime",
        sql: include_str!("../migrations/0005_pos_uptime.sql"),
    },
    Migration {
        version: 6,
        name: "analyst_roles",
        sql: include_str!("../migrations/0006_analyst_roles.sql"),
    },
    Migration {
        version: 7,
        name: "alerts_forecasts_state",
        sql: include_str!("../migrations/0007_alerts_forecasts_state.sql"),
    },
    Migration {
        version: 8,
        name: "key_ledger",
        sql: include_str!("../migrations/0008_key_ledger.sql"),
    },
    Migration {
        version: 9,
        name: "time_partitioning",
        sql: include_str!("../migrations/0009_time_partitioning.sql"),
    },
    Migration {
        version: 10,
        name: "continuous_aggregates",
        sql: include_str!("../migrations/0010_continuous_aggregates.sql"),
    },
    Migration {
        version: 11,
        name: "ledger_key_order",
        sql: include_str!("../migrations/0011_ledger_key_order.sql"),
    },
];

/// Arbitrary constant naming the migration advisory lock.
const MIGRATION_LOCK: i64 = 0x5354_5055_4c53_4501;

/// A list of migrations with its own bookkeeping table and lock: the read store's
/// ([`MIGRATIONS`]) or a service's own schema (the notifier's `notifier` schema).
#[derive(Debug, Clone, Copy)]
pub struct MigrationSet {
    /// Postgres schema created before anything else (`None`: the search path's).
    pub schema: Option<&'static str>,
    /// Table recording applied versions, e.g. `schema_migrations`.
    pub table: &'static str,
    /// Advisory lock serialising pods that start together.
    pub lock: i64,
    pub migrations: &'static [Migration],
}

/// The read store's migrations.
pub const READ_STORE: MigrationSet = MigrationSet {
    schema: None,
    table: "schema_migrations",
    lock: MIGRATION_LOCK,
    migrations: MIGRATIONS,
};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("postgres: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("postgres pool setup: {0}")]
    Build(String),
    #[error(
        "migration {version} ({name}) was changed after it was applied (checksum {applied} != {current})"
    )]
    MigrationDrift {
        version: i32,
        name: String,
        applied: String,
        current: String,
    },
    #[error("database is at migration {0}, newer than this build knows ({1}); upgrade the service")]
    TooNew(i32, i32),
    #[error(
        "this read store is a TimescaleDB one, but the server does not load the extension: start PostgreSQL with shared_preload_libraries = 'timescaledb' (TimescaleDB 2.28 for PostgreSQL 15; scripts/install-deps.sh builds it)"
    )]
    TimescaleDbMissing,
    #[error("read_store.flavour is {0:?}, which this build does not know")]
    UnknownFlavour(String),
}

/// What went wrong, in the server's words: tokio-postgres displays every server
/// error as just "db error", so error types show this instead.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// A pool of connections to the read store.
pub fn pool(cfg: &PostgresConfig) -> Result<Pool, DbError> {
    let mut pg: tokio_postgres::Config = cfg
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| DbError::Build(e.to_string()))?;
    pg.connect_timeout(Duration::from_millis(cfg.connect_timeout_ms));
    if pg.get_application_name().is_none() {
        pg.application_name("storepulse");
    }
    let mut options = pg.get_options().map(str::to_string).unwrap_or_default();
    options.push_str(&format!(
        " -c statement_timeout={} -c lock_timeout={}",
        cfg.statement_timeout_ms, cfg.lock_timeout_ms
    ));
    pg.options(options.trim());
    let mgr = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(cfg.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)))
        .create_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)))
        .build()
        .map_err(|e| DbError::Build(e.to_string()))
}

fn checksum(sql: &str) -> String {
    // FNV-1a 64: stable across builds and platforms; detects edits, not attacks.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Applies pending read-store migrations; returns the versions applied now.
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>, DbError> {
    migrate_to(pool, None).await
}

/// Applies pending migrations up to version `last` (all with `None`); returns the
/// versions applied now. Tests use a bound to build a read store as an older release
/// left it.
pub async fn migrate_to(pool: &Pool, last: Option<i32>) -> Result<Vec<i32>, DbError> {
    migrate_set_to(pool, &READ_STORE, last).await
}

/// Applies the pending migrations of `set`; returns the versions applied now.
pub async fn migrate_set(pool: &Pool, set: &MigrationSet) -> Result<Vec<i32>, DbError> {
    migrate_set_to(pool, set, None).await
}

/// Applies the pending migrations of `set` up to version `last` (all with `None`).
pub async fn migrate_set_to(
    pool: &Pool,
    set: &MigrationSet,
    last: Option<i32>,
) -> Result<Vec<i32>, DbError> {
    let mut client = pool.get().await?;
    // Migrations may wait for another pod's lock and run long DDL: no session timeouts
    // here (RESET afterwards restores the pool's).
    client
        .batch_execute("SET statement_timeout = 0; SET lock_timeout = 0")
        .await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&set.lock])
        .await?;
    let result = apply_pending(&mut client, set, last).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&set.lock])
        .await;
    client
        .batch_execute("RESET statement_timeout; RESET lock_timeout")
        .await?;
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn apply_pending(
    client: &mut deadpool_postgres::Object,
    set: &MigrationSet,
    last: Option<i32>,
) -> Result<Vec<i32>, DbError> {
    let table = match set.schema {
        Some(schema) => {
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .await?;
            format!("{schema}.{}", set.table)
        }
        None => set.table.to_string(),
    };
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())"
        ))
        .await?;
    let rows = client
        .query(
            &format!("SELECT version, name, checksum FROM {table} ORDER BY version"),
            &[],
        )
        .await?;
    // The read store has a flavour; a service's own schema is plain SQL.
    let read_store = set.lock == READ_STORE.lock;
    let flavour = if read_store {
        flavour_of(client).await?
    } else {
        Flavour::Plain
    };
    if flavour == Flavour::TimescaleDb {
        let loaded: bool = client.query_one(TIMESCALEDB_LOADED, &[]).await?.get(0);
        if !loaded {
            return Err(DbError::TimescaleDbMissing);
        }
    }
    let latest_known = set.migrations.last().map_or(0, |m| m.version);
    for row in &rows {
        let version: i32 = row.get(0);
        let applied_sum: String = row.get(2);
        match set.migrations.iter().find(|m| m.version == version) {
            Some(m) if checksum(m.sql_for(flavour)) != applied_sum => {
                return Err(DbError::MigrationDrift {
                    version,
                    name: row.get(1),
                    applied: applied_sum,
                    current: checksum(m.sql_for(flavour)),
                });
            }
            Some(_) => {}
            None => return Err(DbError::TooNew(version, latest_known)),
        }
    }
    let mut applied = Vec::new();
    for m in set
        .migrations
        .iter()
        .filter(|m| last.is_none_or(|last| m.version <= last))
    {
        if rows.iter().any(|r| r.get::<_, i32>(0) == m.version) {
            continue;
        }
        let sql = m.sql_for(flavour);
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            &format!("INSERT INTO {table} (version, name, checksum) VALUES ($1, $2, $3)"),
            &[&m.version, &m.name, &checksum(sql)],
        )
        .await?;
        tx.commit().await?;
        info!(version = m.version, name = m.name, %flavour, "applied migration");
        applied.push(m.version);
    }
    if flavour == Flavour::TimescaleDb {
        backfill_aggregates(client).await?;
    }
    Ok(applied)
}

/// TimescaleDB: refreshes every continuous aggregate over all time, one at a time
/// outside a transaction, so every bucket is materialized from the raw rows there are
/// now (the refresh policies cover only the last 30 days). `storepulse rebuild` ends
/// with it. Plain PostgreSQL: nothing to do (the rollups are always current).
/// Returns how many aggregates were refreshed.
pub async fn materialize_aggregates(pool: &Pool) -> Result<usize, DbError> {
    let client = pool.get().await?;
    if flavour_of(&client).await? == Flavour::Plain {
        return Ok(0);
    }
    client
        .batch_execute("SET statement_timeout = 0; SET lock_timeout = 0")
        .await?;
    let calls: Vec<String> = client
        .query(
            "SELECT format('CALL refresh_continuous_aggregate(%L, NULL, NULL)',
                           format('%I.%I', view_schema, view_name))
             FROM timescaledb_information.continuous_aggregates
             ORDER BY view_schema, view_name",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for call in &calls {
        client.batch_execute(call).await?;
    }
    client
        .batch_execute("RESET statement_timeout; RESET lock_timeout")
        .await?;
    Ok(calls.len())
}

/// TimescaleDB: materializes the continuous aggregates a migration listed in
/// `aggregate_backfill` (a store upgraded with raw rows), one at a time outside a
/// transaction (a refresh cannot run in one), and takes each off the list.
async fn backfill_aggregates(client: &deadpool_postgres::Object) -> Result<(), DbError> {
    let listed: bool = client
        .query_one(
            "SELECT to_regclass('public.aggregate_backfill') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !listed {
        return Ok(());
    }
    let pending = client
        .query(
            "SELECT aggregate,
                    format('CALL refresh_continuous_aggregate(%L, NULL, %L)',
                           'storepulse_aggregates.' || quote_ident(aggregate), now() - end_offset)
             FROM aggregate_backfill ORDER BY aggregate",
            &[],
        )
        .await?;
    for row in pending {
        let (aggregate, call): (String, String) = (row.get(0), row.get(1));
        client.batch_execute(&call).await?;
        client
            .execute(
                "DELETE FROM aggregate_backfill WHERE aggregate = $1",
                &[&aggregate],
            )
            .await?;
        info!(%aggregate, "materialized the continuous aggregate from the stored rows");
    }
    Ok(())
}

/// Whether the server can run TimescaleDB in this database: the extension is
/// created here, or it is available and preloaded.
const TIMESCALEDB_USABLE: &str =
    "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
    OR (EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
        AND current_setting('shared_preload_libraries') ~ '(^|[\\s,])\"?timescaledb\"?($|[\\s,])')";

/// Whether the TimescaleDB library is loaded in this session's server.
const TIMESCALEDB_LOADED: &str =
    "SELECT current_setting('shared_preload_libraries') ~ '(^|[\\s,])\"?timescaledb\"?($|[\\s,])'";

/// The flavour recorded at migration, if any.
async fn recorded_flavour(client: &tokio_postgres::Client) -> Result<Option<Flavour>, DbError> {
    let has_table: bool = client
        .query_one("SELECT to_regclass('public.read_store') IS NOT NULL", &[])
        .await?
        .get(0);
    if !has_table {
        return Ok(None);
    }
    let name: Option<String> = client
        .query_opt("SELECT flavour FROM read_store", &[])
        .await?
        .map(|r| r.get(0));
    match name.as_deref() {
        None => Ok(None),
        Some("plain") => Ok(Some(Flavour::Plain)),
        Some("timescaledb") => Ok(Some(Flavour::TimescaleDb)),
        Some(other) => Err(DbError::UnknownFlavour(other.to_string())),
    }
}

/// The flavour of the read store behind `client`: as recorded at migration, else
/// the one a migration would choose now (TimescaleDB when the server can run it).
pub async fn flavour_of(client: &tokio_postgres::Client) -> Result<Flavour, DbError> {
    if let Some(recorded) = recorded_flavour(client).await? {
        return Ok(recorded);
    }
    let usable: bool = client.query_one(TIMESCALEDB_USABLE, &[]).await?.get(0);
    Ok(if usable {
        Flavour::TimescaleDb
    } else {
        Flavour::Plain
    })
}

/// The flavour of the read store at `pool` (see [`flavour_of`]).
pub async fn flavour(pool: &Pool) -> Result<Flavour, DbError> {
    let client = pool.get().await?;
    flavour_of(&client).await
}

/// How a Postgres error bears on a batch: the connection (retry), the data (isolate
/// the record), or the deployment (stop).
pub fn classify_postgres(e: &tokio_postgres::Error) -> crate::consumer::Failure {
    use crate::consumer::Failure;
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection broke or could not be made.
        return Failure::Transient;
    };
    let c = code.code();
    match c {
        _ if c.starts_with("08") => Failure::Transient,
        "57P01" | "57P02" | "57P03" => Failure::Transient,
        "40001" | "40P01" | "57014" | "55P03" => Failure::Transient,
        _ if c.starts_with("22") || c.starts_with("23") || c.starts_with("54") => Failure::Poison,
        _ => Failure::Fatal,
    }
}

/// A `/readyz` check that Postgres answers.
pub fn readiness(pool: Pool) -> crate::ops_http::ReadinessCheck {
    crate::ops_http::ReadinessCheck::new("postgres", move || {
        let pool = pool.clone();
        Box::pin(async move {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            client
                .simple_query("SELECT 1")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    })
}
