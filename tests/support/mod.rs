//! Test harness: each test gets its own Postgres cluster and broker on free ports,
//! its own topic prefix, consumer groups and database, so tests run in parallel.
//! Children are stopped when the stack drops (and killed if the test thread dies).

#![allow(dead_code)]

pub mod feed;
pub mod recording_http;
pub mod recount;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use storepulse::dev_stack::wait_for_broker;
use storepulse::local_stack::{LocalBroker, LocalPostgres};
use storepulse_runtime::records::topic;
use storepulse_runtime::{KafkaConfig, PostgresConfig, db, kafka};

pub const PARTITIONS: i32 = 4;

pub struct TestStack {
    pub name: String,
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
        let TestDb {
            pg,
            postgres,
            pool,
            dir,
        } = TestDb::start(name).await;
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
    // Last: dropped after the server stopped.
    pub dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn start(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("storepulse-test-{name}-"))
            .tempdir()
            .expect("tempdir");
        let pg = LocalPostgres::start(&dir.path().join("pg"), None).expect("start postgres");
        let url = pg.create_database(name).await.expect("create database");
        let postgres = PostgresConfig {
            url,
            ..PostgresConfig::default()
        };
        let pool = db::pool(&postgres).expect("pool");
        db::migrate(&pool).await.expect("migrate");
        Self {
            pg,
            postgres,
            pool,
            dir,
        }
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
