//! `storepulse rebuild`: recreate the read store from the topics.
//!
//! The topics are the source of truth; this replays them into an empty database with
//! the compactor's own code (so the rebuilt rows and rollups follow exactly the rules
//! of the live ones): it notes every input partition's end offset at the start, runs
//! a compactor under a fresh consumer group from the beginning, shows progress, and
//! stops once the stored offsets reach those ends. Records appended meanwhile are
//! left to the live compactor of the rebuilt store, which resumes from the stored
//! offsets. On TimescaleDB it ends by materializing every continuous aggregate over
//! all time.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use storepulse_compactor::{CompactorConfig, CompactorSettings, INPUT_TOPICS};
use storepulse_runtime::{KafkaConfig, PostgresConfig, db, kafka};
use tokio_util::sync::CancellationToken;

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// Records replayed (the sum of the partitions' end offsets at the start).
    pub records: i64,
    pub elapsed: Duration,
    /// The consumer group the rebuild consumed with (left behind, with no members).
    pub group_id: String,
}

/// End offset of every partition of the compactor's input topics, by (base topic,
/// partition).
async fn end_offsets(kafka: &KafkaConfig) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let cfg = kafka.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = kafka::client_config(&cfg, "storepulse-rebuild")
            .create()
            .context("kafka client")?;
        let timeout = Duration::from_secs(10);
        let mut ends = BTreeMap::new();
        for base in INPUT_TOPICS {
            let topic = cfg.topic(base);
            let meta = consumer
                .fetch_metadata(Some(&topic), timeout)
                .with_context(|| format!("metadata of {topic}"))?;
            for t in meta.topics() {
                for p in t.partitions() {
                    let (_, high) = consumer
                        .fetch_watermarks(&topic, p.id(), timeout)
                        .with_context(|| format!("end offset of {topic}/{}", p.id()))?;
                    ends.insert((base.to_string(), p.id()), high);
                }
            }
        }
        Ok(ends)
    })
    .await?
}

/// How far the rebuild is: records stored up to the wanted end, per partition.
async fn progress(
    pool: &deadpool_postgres::Pool,
    group: &str,
    ends: &BTreeMap<(String, i32), i64>,
) -> anyhow::Result<i64> {
    let client = pool.get().await?;
    let stored: BTreeMap<(String, i32), i64> = client
        .query(
            "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = $1",
            &[&group],
        )
        .await?
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    Ok(ends
        .iter()
        .map(|(k, end)| stored.get(k).copied().unwrap_or(0).min(*end))
        .sum())
}

fn draw(done: i64, total: i64, started: Instant) {
    let width = 40usize;
    let filled = if total == 0 {
        width
    } else {
        (done as f64 / total as f64 * width as f64) as usize
    };
    let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
    eprint!(
        "\r[{}{}] {done}/{total} records  {rate:.0}/s ",
        "#".repeat(filled),
        " ".repeat(width - filled.min(width))
    );
    let _ = std::io::stderr().flush();
}

/// Replays the topics into the empty read store `postgres`; `show_progress` draws a
/// progress bar on stderr.
pub async fn rebuild(
    kafka: &KafkaConfig,
    postgres: &PostgresConfig,
    show_progress: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<RebuildReport> {
    let pool = db::pool(postgres)?;
    db::migrate(&pool).await?;
    let client = pool.get().await?;
    let used: i64 = client
        .query_one("SELECT count(*) FROM consumer_offsets", &[])
        .await?
        .get(0);
    anyhow::ensure!(
        used == 0,
        "the target read store is not empty (it holds consumer offsets): rebuild into a new, empty database"
    );
    drop(client);

    let ends = end_offsets(kafka).await?;
    let total: i64 = ends.values().sum();
    let group_id = format!(
        "storepulse-rebuild-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let token = shutdown.child_token();
    let compactor = tokio::spawn(storepulse_compactor::run_with_listener(
        CompactorConfig {
            kafka: kafka.clone(),
            postgres: postgres.clone(),
            log: Default::default(),
            compactor: CompactorSettings {
                group_id: group_id.clone(),
                ..Default::default()
            },
        },
        listener,
        token.clone(),
    ));
    let started = Instant::now();
    loop {
        let done = progress(&pool, &group_id, &ends).await?;
        if show_progress {
            draw(done, total, started);
        }
        if done >= total {
            break;
        }
        if compactor.is_finished() {
            break; // its error is returned below
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    if show_progress {
        eprintln!();
    }
    token.cancel();
    compactor.await?.context("the rebuild's compactor failed")?;
    anyhow::ensure!(
        !shutdown.is_cancelled() && progress(&pool, &group_id, &ends).await? >= total,
        "rebuild interrupted; the target holds a partial read store: drop it and start again"
    );
    // TimescaleDB: materialize every aggregate over all time (the refresh policies
    // only look at the last 30 days; replayed history is older).
    db::materialize_aggregates(&pool).await?;
    Ok(RebuildReport {
        records: total,
        elapsed: started.elapsed(),
        group_id,
    })
}
