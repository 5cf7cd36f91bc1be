//! End to end: simulated stores → ingest HTTP → Kafka → compactor → Postgres, with
//! the compactor SIGKILLed mid-way and restarted.

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
    let child = Command::new(env!("CARGO_BIN_EXE_storepulse"))
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
