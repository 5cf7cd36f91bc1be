//! End to end: simulated stores → ingest HTTP → Kafka → compactor → Postgres, with
//! the compactor SIGKILLed mid-way and restarted — once with a scale-out and retries,
//! and several times at random points under a load.

mod support;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use storepulse::gateway::Gateway;
use storepulse::simulator::{SimConfig, Simulator};
use storepulse_runtime::AvroCodec;
use storepulse_runtime::records::{RejectedRecord, topic};
use support::{PARTITIONS, TestStack, eventually};
use tokio_util::sync::CancellationToken;

const RAW_COUNT: &str =
    "SELECT (SELECT count(*) FROM sales) + (SELECT count(*) FROM inventory_changes)
     + (SELECT count(*) FROM pos_heartbeats) + (SELECT count(*) FROM sensor_readings)";

/// A compactor process, killed if the test ends early (a panic must not orphan it).
struct CompactorProcess(Child);

impl Drop for CompactorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_compactor(stack: &TestStack) -> CompactorProcess {
    spawn_compactor_configured(stack, None)
}

/// A compactor process reading `config` (a TOML file) under the stack's environment.
fn spawn_compactor_configured(
    stack: &TestStack,
    config: Option<&std::path::Path>,
) -> CompactorProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_storepulse"));
    if let Some(file) = config {
        cmd.arg("--config").arg(file);
    }
    let child = cmd
        .args(["run", "compactor"])
        .envs(stack.service_env("compactor"))
        .env("STOREPULSE_COMPACTOR__BATCH_MAX_RECORDS", "250")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn compactor");
    CompactorProcess(child)
}

/// Reads every record of the rejected topic until `n` arrived.
async fn read_rejected(stack: &TestStack, n: usize) -> Vec<RejectedRecord> {
    let consumer: StreamConsumer =
        storepulse_runtime::kafka::client_config(&stack.kafka, "test-reader")
            .set("group.id", format!("{}reader", stack.kafka.topic_prefix))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(&stack.kafka.topic(topic::REJECTED), p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let codec = AvroCodec::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < n {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} rejections arrived", out.len()))
            .expect("consume");
        out.push(
            codec
                .decode::<RejectedRecord>(msg.payload().expect("payload"))
                .expect("decode rejection"),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_events_exactly_once_through_a_compactor_crash() {
    let stack = TestStack::start("e2e").await;
    let shutdown = CancellationToken::new();
    let ingest_url = support::start_ingest(&stack, shutdown.clone()).await;

    let mut sim = Simulator::new(SimConfig {
        tenant_id: "acme".into(),
        stores: 30,
        seed: 2026,
        start: Utc::now() - chrono::Duration::days(2),
        invalid_ratio: 0.01,
    });
    let mut keys = HashMap::new();
    for store in sim.store_ids() {
        let k = storepulse_ingest::api_keys::create(&stack.pool, "acme", &store, "e2e")
            .await
            .expect("key");
        keys.insert(store, k.token);
    }
    let events = sim.take(10_000);
    let invalid: Vec<_> = events
        .iter()
        .filter(|e| e.invalid_field.is_some())
        .collect();
    let valid: HashSet<&str> = events
        .iter()
        .filter(|e| e.invalid_field.is_none())
        .map(|e| e.event_id.as_str())
        .collect();
    assert!(
        invalid.len() >= 50,
        "about 1% invalid, got {}",
        invalid.len()
    );

    // Every write of sensor rows takes 0.2 s longer (a test-only trigger), so the
    // compactor is surely still writing when the test kills it, however fast the
    // machine and however late the group join.
    stack
        .pool
        .get()
        .await
        .expect("client")
        .batch_execute(
            "CREATE FUNCTION test_slow_write() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep(0.2); RETURN NULL; END $$;
             CREATE TRIGGER test_slow_write AFTER INSERT ON sensor_readings
               FOR EACH STATEMENT EXECUTE FUNCTION test_slow_write();",
        )
        .await
        .expect("slow-write trigger");
    let mut compactor = spawn_compactor(&stack);
    let gateway = Gateway::new(&ingest_url, keys);
    let posting = gateway.post_all(&events, 100, 4);
    // Kill the compactor hard while it is writing, then start a new one.
    let crash = async {
        eventually("compactor progress", Duration::from_secs(120), || async {
            (stack.count(RAW_COUNT).await >= 1_500).then_some(())
        })
        .await;
        compactor.0.kill().expect("SIGKILL compactor");
        compactor.0.wait().expect("reap");
        let mid = stack.count(RAW_COUNT).await;
        assert!(
            mid < valid.len() as i64,
            "the kill happened mid-stream ({mid} rows)"
        );
        spawn_compactor(&stack)
    };
    let (answers, mut compactor) = tokio::join!(posting, crash);
    // Scale out while records still flow: a second member joins the group (a
    // rebalance mid-stream), and the store must still be exact.
    let mut second = spawn_compactor(&stack);
    let answers = answers.expect("all batches answered");
    assert_eq!(answers.len(), events.len(), "an answer per event");
    for e in &events {
        let a = &answers[&e.event_id];
        match e.invalid_field {
            None => assert_eq!(a.status, "accepted", "{a:?} for {}", e.json),
            Some(field) => {
                assert_eq!(a.status, "rejected", "{a:?}");
                assert_eq!(a.field.as_deref(), Some(field), "{a:?}");
                assert!(a.reason.as_deref().is_some_and(|r| !r.is_empty()));
            }
        }
    }

    let expected = valid.len() as i64;
    eventually(
        "every valid event in Postgres",
        Duration::from_secs(120),
        || async { (stack.count(RAW_COUNT).await >= expected).then_some(()) },
    )
    .await;
    eventually(
        "every rejection in Postgres",
        Duration::from_secs(60),
        || async {
            (stack.count("SELECT count(*) FROM rejected_events").await >= invalid.len() as i64)
                .then_some(())
        },
    )
    .await;

    // Exactly once: the stored ids are the valid ids, each once.
    let client = stack.pool.get().await.expect("client");
    let rows = client
        .query(
            "SELECT event_id::text FROM sales UNION ALL SELECT event_id::text FROM inventory_changes
             UNION ALL SELECT event_id::text FROM pos_heartbeats UNION ALL SELECT event_id::text FROM sensor_readings",
            &[],
        )
        .await
        .expect("ids");
    let stored: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let stored_set: HashSet<&str> = stored.iter().map(String::as_str).collect();
    assert_eq!(stored.len(), stored_set.len(), "no duplicates");
    assert_eq!(stored_set, valid, "exactly the valid events");
    let lines_expected: usize = events
        .iter()
        .filter(|e| e.invalid_field.is_none())
        .filter_map(|e| e.json.get("lines").and_then(|l| l.as_array()).map(Vec::len))
        .sum();
    assert_eq!(
        stack.count("SELECT count(*) FROM sale_lines").await,
        lines_expected as i64
    );
    assert_eq!(
        stack.count("SELECT count(*) FROM rejected_events").await,
        invalid.len() as i64
    );

    // The restarted compactor resumed from the stored offsets: offsets cover everything.
    let stored_next: i64 = stack
        .count("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets")
        .await;
    // Input topics start empty: the offsets sum to the records on them, i.e. the valid
    // events plus their rejection copies.
    assert_eq!(stored_next, (valid.len() + invalid.len()) as i64);

    // Retrying batches (same event ids) is harmless: nothing changes in the read store.
    let again = gateway
        .post_all(&events[..1_000], 100, 4)
        .await
        .expect("retry answered");
    assert_eq!(again.len(), 1_000);
    // Each retried event is on a topic again: valid ones on theirs, invalid ones as a
    // new rejection copy. Wait until the compactor has read all 1,000 of them.
    eventually(
        "the retried batches consumed",
        Duration::from_secs(60),
        || async {
            let now: i64 = stack
                .count("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets")
                .await;
            (now >= stored_next + 1_000).then_some(())
        },
    )
    .await;
    assert_eq!(
        stack.count(RAW_COUNT).await,
        expected,
        "retries add no rows"
    );
    // Through the crash and the retries, every analyst rollup equals a recount.
    support::recount::rollups_equal_recount(&stack.pool)
        .await
        .expect("rollups equal a recount of the raw tables");
    for rollup in ["sales_daily", "sensor_stats_5m", "pos_uptime_daily"] {
        assert!(
            stack.count(&format!("SELECT count(*) FROM {rollup}")).await > 0,
            "{rollup} has rows"
        );
    }
    assert_eq!(
        stack.count("SELECT count(*) FROM rejected_events").await,
        invalid.len() as i64
    );

    // Every invalid event is on the dead-letter topic, with its reason and field.
    // The topic holds one copy per rejection, plus the copies the retried batches made.
    let retried_invalid = events[..1_000]
        .iter()
        .filter(|e| e.invalid_field.is_some())
        .count();
    let rejected = read_rejected(&stack, invalid.len() + retried_invalid).await;
    for e in &invalid {
        let r = rejected
            .iter()
            .find(|r| {
                serde_json::from_slice::<serde_json::Value>(&r.original.0)
                    .ok()
                    .as_ref()
                    == Some(&e.json)
            })
            .unwrap_or_else(|| panic!("no rejection for {}", e.json));
        assert_eq!(r.field.as_deref(), e.invalid_field);
        assert!(!r.reason.is_empty());
        assert_eq!(r.envelope.store_id, e.store_id);
    }

    // A graceful stop (SIGTERM) of both compactors finishes cleanly.
    for process in [&mut compactor, &mut second] {
        let pid = process.0.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let status = process.0.wait().expect("wait");
        assert!(status.success(), "compactor exits 0 on SIGTERM: {status}");
    }
    shutdown.cancel();
}

/// The raw events stored, by id, with how often each is stored.
async fn stored_ids(stack: &TestStack) -> HashMap<String, i64> {
    let client = stack.pool.get().await.expect("client");
    client
        .query(
            "SELECT event_id::text, count(*) FROM (
                 SELECT event_id FROM sales UNION ALL SELECT event_id FROM inventory_changes
                 UNION ALL SELECT event_id FROM pos_heartbeats
                 UNION ALL SELECT event_id FROM sensor_readings) e
             GROUP BY 1",
            &[],
        )
        .await
        .expect("ids")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Several SIGKILLs of the compactor at random points while stores keep posting (and
/// re-posting some batches, as gateways retry), each followed by a restart: the read
/// store ends exact — every valid event stored once, every line, offsets covering
/// every record, every rollup equal to a recount.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_sigkills_at_random_points_under_load_leave_the_store_exact() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("kill points from seed {seed} (rerun with KILL_SEED={seed})");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);

    let stack = TestStack::start("kills").await;
    let shutdown = CancellationToken::new();
    let ingest_url = support::start_ingest(&stack, shutdown.clone()).await;
    // A killed member's partitions go to its successor once its session expires:
    // 6 s, the broker's least, so each restart resumes within seconds.
    let config = stack.dir.path().join("compactor.toml");
    std::fs::write(
        &config,
        "[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n",
    )
    .expect("config");
    // Every write of sensor rows takes 50 ms longer (a test-only trigger): the
    // compactor spends most of its time inside transactions, where a kill is likeliest
    // to leave a half-done batch behind.
    stack
        .pool
        .get()
        .await
        .expect("client")
        .batch_execute(
            "CREATE FUNCTION test_slow_write() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep(0.05); RETURN NULL; END $$;
             CREATE TRIGGER test_slow_write AFTER INSERT ON sensor_readings
               FOR EACH STATEMENT EXECUTE FUNCTION test_slow_write();",
        )
        .await
        .expect("slow-write trigger");

    let mut sim = Simulator::new(SimConfig {
        tenant_id: "kills".into(),
        stores: 40,
        seed,
        start: Utc::now() - chrono::Duration::days(1),
        invalid_ratio: 0.0,
    });
    let mut keys = HashMap::new();
    for store in sim.store_ids() {
        let k = storepulse_ingest::api_keys::create(&stack.pool, "kills", &store, "kills")
            .await
            .expect("key");
        keys.insert(store, k.token);
    }
    let events = sim.take(24_000);
    let valid: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let lines_expected: usize = events
        .iter()
        .filter_map(|e| e.json.get("lines").and_then(|l| l.as_array()).map(Vec::len))
        .sum();
    let gateway = Gateway::new(&ingest_url, keys);

    // Stores post in chunks; every fourth chunk is posted twice (a gateway retry).
    let posting = async {
        for (n, chunk) in events.chunks(2_000).enumerate() {
            gateway.post_all(chunk, 50, 4).await.expect("posted");
            if n % 4 == 0 {
                gateway.post_all(chunk, 50, 4).await.expect("re-posted");
            }
        }
    };
    const KILLS: usize = 5;
    let killing = async {
        let mut compactor = spawn_compactor_configured(&stack, Some(&config));
        let mut mid_stream = 0;
        for kill in 0..KILLS {
            // Once this incarnation has written something, a random moment later.
            let before = stack.count(RAW_COUNT).await;
            eventually(
                &format!("progress before kill {kill}"),
                Duration::from_secs(120),
                || async { (stack.count(RAW_COUNT).await > before).then_some(()) },
            )
            .await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
            compactor.0.kill().expect("SIGKILL compactor");
            compactor.0.wait().expect("reap");
            if stack.count(RAW_COUNT).await < valid.len() as i64 {
                mid_stream += 1;
            }
            compactor = spawn_compactor_configured(&stack, Some(&config));
        }
        (compactor, mid_stream)
    };
    let ((), (mut compactor, mid_stream)) = tokio::join!(posting, killing);
    assert!(
        mid_stream >= KILLS - 1,
        "kills landed before the end of the stream ({mid_stream} of {KILLS})"
    );

    let expected = valid.len() as i64;
    eventually(
        "every event in Postgres after the kills",
        Duration::from_secs(180),
        || async { (stack.count(RAW_COUNT).await >= expected).then_some(()) },
    )
    .await;
    // Offsets cover every record published: the events, plus the re-posted chunks.
    let reposted: usize = events
        .chunks(2_000)
        .enumerate()
        .filter(|(n, _)| n % 4 == 0)
        .map(|(_, c)| c.len())
        .sum();
    let published = (valid.len() + reposted) as i64;
    eventually(
        "offsets covering every published record",
        Duration::from_secs(120),
        || async {
            let next = stack
                .count("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets")
                .await;
            (next >= published).then_some(())
        },
    )
    .await;
    assert_eq!(
        stack
            .count("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets")
            .await,
        published,
        "offsets neither short nor past the topics"
    );

    let stored = stored_ids(&stack).await;
    let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let stored_set: HashSet<&str> = stored.keys().map(String::as_str).collect();
    assert_eq!(stored_set, valid, "exactly the posted events");
    assert_eq!(
        stack.count("SELECT count(*) FROM sale_lines").await,
        lines_expected as i64,
        "every line once"
    );
    assert_eq!(
        stack.count("SELECT count(*) FROM event_keys").await,
        expected,
        "one ledger key per stored event"
    );
    assert_eq!(
        stack.count("SELECT count(*) FROM event_id_conflicts").await,
        0,
        "a retry is not a conflict"
    );
    support::recount::rollups_equal_recount(&stack.pool)
        .await
        .expect("rollups equal a recount of the raw tables after the kills");

    let pid = compactor.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    assert!(compactor.0.wait().expect("wait").success());
    shutdown.cancel();
}
