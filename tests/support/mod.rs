//! Test harness: each test gets its own Postgres cluster and broker on free ports,
//! its own topic prefix, consumer groups and database, so tests run in parallel.
//! Children are stopped when the stack drops (and killed if the test thread dies).

#![allow(dead_code)]

pub mod feed;
pub mod recording_http;
pub mod recording_smtp;
pub mod recount;
pub mod rules;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use storepulse::dev_stack::wait_for_broker;
use storepulse::local_stack::{LocalBroker, LocalPostgres, PostgresOptions};
use storepulse_runtime::db::Flavour;
use storepulse_runtime::records::topic;
use storepulse_runtime::{KafkaConfig, PostgresConfig, db, kafka};

/// The read-store flavour tests get unless they ask for one: TimescaleDB when it is
/// installed, else plain PostgreSQL.
pub fn default_flavour() -> Flavour {
    PostgresOptions::preferred()
        .expect("postgres binaries")
        .flavour
}

/// Fails the test when `flavour` cannot run here: the suite runs both flavours, and
/// a TimescaleDB test must not pass by quietly running plain. Setting
/// `STOREPULSE_TEST_FLAVOURS=plain` (a machine without TimescaleDB) skips the
/// TimescaleDB runs instead; returns false then.
pub fn flavour_runs_here(flavour: Flavour) -> bool {
    if flavour == Flavour::Plain {
        return true;
    }
    if std::env::var("STOREPULSE_TEST_FLAVOURS").is_ok_and(|v| v.trim() == "plain") {
        eprintln!("STOREPULSE_TEST_FLAVOURS=plain: not running the TimescaleDB flavour");
        return false;
    }
    assert_eq!(
        default_flavour(),
        Flavour::TimescaleDb,
        "TimescaleDB is not installed: run scripts/install-deps.sh (or set STOREPULSE_TEST_FLAVOURS=plain)"
    );
    true
}

pub const PARTITIONS: i32 = 4;

pub struct TestStack {
    pub name: String,
    pub flavour: Flavour,
    pub pg: LocalPostgres,
    pub broker: LocalBroker,
    pub kafka: KafkaConfig,
    pub postgres: PostgresConfig,
    pub pool: deadpool_postgres::Pool,
    // Last: dropped after the processes stopped.
    pub dir: tempfile::TempDir,
}

impl TestStack {
    /// A fresh stack with migrated database and created topics.
    pub async fn start(name: &str) -> Self {
        Self::start_flavour(name, default_flavour()).await
    }

    /// [`TestStack::start`] with a read store of `flavour`.
    pub async fn start_flavour(name: &str, flavour: Flavour) -> Self {
        let TestDb {
            pg,
            postgres,
            pool,
            dir,
            ..
        } = TestDb::start_flavour(name, flavour).await;
        let broker =
            LocalBroker::start(dir.path(), "memory://nisshi/", None).expect("start broker");
        let prefix = format!(
            "{name}-{}.",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let kafka = broker.kafka_config(&prefix, PARTITIONS);
        wait_for_broker(&kafka).await.expect("broker ready");
        kafka::ensure_topics(&kafka, &topic::PROVISIONED, PARTITIONS)
            .await
            .expect("create topics");
        Self {
            name: name.into(),
            flavour,
            pg,
            broker,
            kafka,
            postgres,
            pool,
            dir,
        }
    }

    /// Environment for a service subprocess pointed at this stack.
    pub fn service_env(&self, group: &str) -> HashMap<String, String> {
        HashMap::from([
            (
                "STOREPULSE_KAFKA__BROKERS".into(),
                self.kafka.brokers.clone(),
            ),
            (
                "STOREPULSE_KAFKA__TOPIC_PREFIX".into(),
                self.kafka.topic_prefix.clone(),
            ),
            ("STOREPULSE_POSTGRES__URL".into(), self.postgres.url.clone()),
            (
                "STOREPULSE_COMPACTOR__GROUP_ID".into(),
                format!("{}{group}", self.kafka.topic_prefix),
            ),
            (
                "STOREPULSE_COMPACTOR__HTTP_LISTEN".into(),
                "127.0.0.1:0".into(),
            ),
            ("STOREPULSE_LOG__FORMAT".into(), "text".into()),
            ("STOREPULSE_LOG__FILTER".into(), "warn".into()),
        ])
    }

    pub async fn count(&self, sql: &str) -> i64 {
        count(&self.pool, sql).await
    }
}

/// Ingest running in this process against `stack`, without a rate limit; its URL.
pub async fn start_ingest(
    stack: &TestStack,
    shutdown: tokio_util::sync::CancellationToken,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let config = storepulse_ingest::IngestConfig {
        kafka: stack.kafka.clone(),
        postgres: stack.postgres.clone(),
        log: Default::default(),
        ingest: storepulse_ingest::IngestSettings {
            rate_limit_events_per_sec: 1e9,
            rate_limit_burst: 1e9,
            ..Default::default()
        },
    };
    tokio::spawn(storepulse_ingest::run_with_listener(
        config, listener, shutdown,
    ));
    url
}

/// A compactor running in this process against `stack` (its own group id), with the
/// given overrides; its ops URL and its task.
pub async fn start_compactor(
    stack: &TestStack,
    shutdown: &tokio_util::sync::CancellationToken,
    postgres: Option<PostgresConfig>,
    kafka: Option<KafkaConfig>,
) -> (String, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let settings = storepulse_compactor::CompactorSettings {
        group_id: format!("{}compactor", stack.kafka.topic_prefix),
        ..Default::default()
    };
    start_compactor_with(stack, shutdown, postgres, kafka, settings).await
}

/// [`start_compactor`] with its `[compactor]` settings given.
pub async fn start_compactor_with(
    stack: &TestStack,
    shutdown: &tokio_util::sync::CancellationToken,
    postgres: Option<PostgresConfig>,
    kafka: Option<KafkaConfig>,
    compactor: storepulse_compactor::CompactorSettings,
) -> (String, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let config = storepulse_compactor::CompactorConfig {
        kafka: kafka.unwrap_or_else(|| stack.kafka.clone()),
        postgres: postgres.unwrap_or_else(|| stack.postgres.clone()),
        log: Default::default(),
        compactor,
    };
    let handle = tokio::spawn(storepulse_compactor::run_with_listener(
        config,
        listener,
        shutdown.clone(),
    ));
    (url, handle)
}

/// A Postgres cluster with a migrated database and no broker, for tests that drive
/// the writer directly.
pub struct TestDb {
    pub pg: LocalPostgres,
    pub postgres: PostgresConfig,
    pub pool: deadpool_postgres::Pool,
    pub flavour: Flavour,
    // Last: dropped after the server stopped.
    pub dir: tempfile::TempDir,
}

impl TestDb {
    /// A migrated read store of the default flavour.
    pub async fn start(name: &str) -> Self {
        Self::start_flavour(name, default_flavour()).await
    }

    /// A migrated read store of `flavour`. TimescaleDB's background jobs are off:
    /// tests run the policies they check themselves ([`TestDb::run_jobs`]).
    pub async fn start_flavour(name: &str, flavour: Flavour) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("storepulse-test-{name}-"))
            .tempdir()
            .expect("tempdir");
        let options = PostgresOptions {
            flavour,
            background_jobs: false,
        };
        let pg = LocalPostgres::start_with(&dir.path().join("pg"), None, options)
            .expect("start postgres");
        let url = pg.create_database(name).await.expect("create database");
        let postgres = PostgresConfig {
            url,
            ..PostgresConfig::default()
        };
        let pool = db::pool(&postgres).expect("pool");
        db::migrate(&pool).await.expect("migrate");
        assert_eq!(
            db::flavour(&pool).await.expect("flavour"),
            flavour,
            "read store flavour"
        );
        Self {
            pg,
            postgres,
            pool,
            flavour,
            dir,
        }
    }

    /// TimescaleDB: runs, now and in the foreground, every policy job whose procedure
    /// is `proc` (e.g. `policy_refresh_continuous_aggregate`, `policy_retention`), as
    /// the job scheduler would; returns how many ran. Plain: nothing, 0.
    pub async fn run_jobs(&self, proc: &str) -> usize {
        run_jobs(&self.pool, self.flavour, proc).await
    }

    /// Brings the analyst relations up to date with the raw rows: on TimescaleDB every
    /// continuous aggregate is refreshed over all time (the refresh policies do the
    /// last 30 days every minute; tests use fixed dates, so not the clock's window);
    /// on plain PostgreSQL they are always current.
    pub async fn refresh_aggregates(&self) {
        refresh_aggregates(&self.pool, self.flavour).await;
    }

    pub async fn count(&self, sql: &str) -> i64 {
        count(&self.pool, sql).await
    }
}

/// Another database on the cluster of a [`TestDb`], migrated up to `last` (all with
/// `None`).
pub struct OtherDb {
    pub postgres: PostgresConfig,
    pub pool: deadpool_postgres::Pool,
}

impl TestDb {
    pub async fn on_cluster(db: &TestDb, name: &str, last: Option<i32>) -> OtherDb {
        let url = db.pg.create_database(name).await.expect("create database");
        let postgres = PostgresConfig {
            url,
            ..PostgresConfig::default()
        };
        let pool = db::pool(&postgres).expect("pool");
        db::migrate_to(&pool, last).await.expect("migrate");
        OtherDb { postgres, pool }
    }
}

impl OtherDb {
    pub async fn count(&self, sql: &str) -> i64 {
        count(&self.pool, sql).await
    }
}

/// See [`TestDb::run_jobs`].
pub async fn run_jobs(pool: &deadpool_postgres::Pool, flavour: Flavour, proc: &str) -> usize {
    if flavour == Flavour::Plain {
        return 0;
    }
    let client = pool.get().await.expect("pg client");
    let jobs: Vec<i32> = client
        .query(
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = $1 ORDER BY job_id",
            &[&proc],
        )
        .await
        .expect("jobs")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for job in &jobs {
        client
            .batch_execute(&format!("CALL run_job({job})"))
            .await
            .unwrap_or_else(|e| panic!("run job {job} ({proc}): {e:?}"));
    }
    jobs.len()
}

/// See [`TestDb::refresh_aggregates`].
pub async fn refresh_aggregates(pool: &deadpool_postgres::Pool, flavour: Flavour) {
    let refreshed = db::materialize_aggregates(pool)
        .await
        .expect("refresh aggregates");
    if flavour == Flavour::TimescaleDb {
        assert!(
            refreshed >= 5,
            "continuous aggregates refreshed: {refreshed}"
        );
    }
}

/// Two tests of one async body taking a [`Flavour`]: `NAME::plain` and
/// `NAME::timescaledb` (see [`flavour_runs_here`]).
#[macro_export]
macro_rules! flavour_tests {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn plain() {
                $body(storepulse_runtime::db::Flavour::Plain).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn timescaledb() {
                let flavour = storepulse_runtime::db::Flavour::TimescaleDb;
                if $crate::support::flavour_runs_here(flavour) {
                    $body(flavour).await
                }
            }
        }
    };
}

/// The one number `sql` selects.
pub async fn count(pool: &deadpool_postgres::Pool, sql: &str) -> i64 {
    let client = pool.get().await.expect("pg client");
    client
        .query_one(sql, &[])
        .await
        .expect("count query")
        .get(0)
}

/// Polls `probe` until it yields `Some`, failing the test after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
