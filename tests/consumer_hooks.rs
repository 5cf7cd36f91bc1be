//! The batch consumer's hooks for stateful processors, against the real broker:
//! assignment is announced before the first batch of the assigned partitions,
//! revocations are announced, and idle partitions are reported on ticks (with an
//! empty batch applied when the processor asks).

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use storepulse_runtime::consumer::{
    Batch, BatchConsumer, BatchProcessor, ConsumedRecord, ConsumerSettings, Failure,
};
use storepulse_runtime::records::topic;
use storepulse_runtime::{
    AvroCodec, ConsumerMetrics, DeadLetters, EventProducer, ProducerMetrics, Rejection,
    schema_registry::SchemaRegistry,
};
use support::{PARTITIONS, TestStack, eventually};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
    Applied(Vec<(i32, i64)>),
    Idle(Vec<i32>),
    EmptyApply,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

struct Recorder {
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    fn push(&self, s: Seen) {
        self.log.lock().expect("log").push(s);
    }
}

impl BatchProcessor for Recorder {
    type Item = ();
    type Error = Never;

    fn decode(&self, _record: &ConsumedRecord) -> Result<(), Rejection> {
        Ok(())
    }

    async fn apply(&mut self, batch: &Batch<()>) -> Result<(), Never> {
        if batch.items.is_empty() && batch.next_offsets.is_empty() {
            self.push(Seen::EmptyApply);
        } else {
            self.push(Seen::Applied(
                batch
                    .items
                    .iter()
                    .map(|p| (p.partition, p.offset))
                    .collect(),
            ));
        }
        Ok(())
    }

    fn classify(&self, _error: &Never) -> Failure {
        Failure::Fatal
    }

    async fn assigned(&mut self, partitions: &[(String, i32)]) -> Result<(), Never> {
        self.push(Seen::Assigned(partitions.to_vec()));
        Ok(())
    }

    fn revoked(&mut self, partitions: &[(String, i32)]) {
        self.push(Seen::Revoked(partitions.to_vec()));
    }

    fn idle_tick(&self) -> Option<Duration> {
        Some(Duration::from_millis(300))
    }

    fn idle(&mut self, partitions: &[(String, i32)]) -> bool {
        self.push(Seen::Idle(partitions.iter().map(|(_, p)| *p).collect()));
        !partitions.is_empty()
    }
}

fn start(
    stack: &TestStack,
    group: &str,
    shutdown: &CancellationToken,
) -> (Arc<Mutex<Vec<Seen>>>, tokio::task::JoinHandle<()>) {
    let registry = prometheus::Registry::new();
    let codec = AvroCodec::new();
    let producer = EventProducer::new(
        &stack.kafka,
        "hooks",
        codec.clone(),
        ProducerMetrics::register(&registry).expect("metrics"),
    )
    .expect("producer");
    let log = Arc::new(Mutex::new(Vec::new()));
    let consumer = BatchConsumer::new(
        &stack.kafka,
        ConsumerSettings {
            group_id: group.into(),
            topics: vec![topic::SALES.into()],
            batch_max_records: 100,
            batch_max_wait: Duration::from_millis(20),
            unknown_schema_hold: Duration::from_secs(900),
        },
        Recorder { log: log.clone() },
        DeadLetters::new(producer, "hooks"),
        SchemaRegistry::new(codec, &stack.kafka),
        ConsumerMetrics::register(&registry).expect("metrics"),
    )
    .expect("consumer");
    let token = shutdown.clone();
    let handle = tokio::spawn(async move {
        consumer.run(token).await.expect("consumer runs");
    });
    (log, handle)
}

fn assigned(log: &[Seen]) -> BTreeSet<i32> {
    let mut held = BTreeSet::new();
    for s in log {
        match s {
            Seen::Assigned(ps) => held.extend(ps.iter().map(|(_, p)| *p)),
            Seen::Revoked(ps) => {
                for (_, p) in ps {
                    held.remove(p);
                }
            }
            _ => {}
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignment_comes_before_records_and_idle_partitions_tick() {
    let stack = TestStack::start("hooks").await;
    let group = format!("{}hooks", stack.kafka.topic_prefix);
    // Records on one store's partition before anyone consumes.
    let producer = EventProducer::new(
        &stack.kafka,
        "test",
        AvroCodec::new(),
        ProducerMetrics::register(&prometheus::Registry::new()).expect("metrics"),
    )
    .expect("producer");
    let mut busy = None;
    for _ in 0..3 {
        let d = producer
            .send_raw(topic::SALES, b"acme/s-1", b"payload")
            .await
            .expect("send");
        busy = Some(d.partition);
    }
    let busy = busy.expect("sent");
    let shutdown = CancellationToken::new();
    let (log, handle) = start(&stack, &group, &shutdown);

    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    eventually("every partition reported idle, then an empty apply", Duration::from_secs(60), || {
        let log = log.lock().expect("log").clone();
        let all = all.clone();
        async move {
            let idle_all = log.iter().any(|s| matches!(s, Seen::Idle(ps) if ps.iter().copied().collect::<BTreeSet<_>>() == all));
            (idle_all && log.contains(&Seen::EmptyApply)).then_some(())
        }
    })
    .await;
    let log = log.lock().expect("log").clone();
    let first_assign = log
        .iter()
        .position(|s| matches!(s, Seen::Assigned(_)))
        .expect("assigned");
    let first_apply = log
        .iter()
        .position(|s| matches!(s, Seen::Applied(_)))
        .expect("applied");
    assert!(first_assign < first_apply, "{log:?}");
    assert_eq!(assigned(&log), all);
    let applied: Vec<(i32, i64)> = log
        .iter()
        .filter_map(|s| match s {
            Seen::Applied(items) => Some(items.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(applied, vec![(busy, 0), (busy, 1), (busy, 2)]);
    // The busy partition is not idle in the tick right after it delivered.
    let after_apply = log[first_apply..]
        .iter()
        .find_map(|s| match s {
            Seen::Idle(ps) => Some(ps.clone()),
            _ => None,
        })
        .expect("a tick after the records");
    assert!(!after_apply.contains(&busy), "{log:?}");
    shutdown.cancel();
    handle.await.expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_member_takes_half_and_each_hears_of_it() {
    let stack = TestStack::start("hooks2").await;
    let group = format!("{}hooks2", stack.kafka.topic_prefix);
    let shutdown = CancellationToken::new();
    let (first, h1) = start(&stack, &group, &shutdown);
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    eventually(
        "the first member holds everything",
        Duration::from_secs(60),
        || {
            let held = assigned(&first.lock().expect("log"));
            let all = all.clone();
            async move { (held == all).then_some(()) }
        },
    )
    .await;
    let (second, h2) = start(&stack, &group, &shutdown);
    let (a, b) = eventually(
        "the partitions split between the two",
        Duration::from_secs(60),
        || {
            let a = assigned(&first.lock().expect("log"));
            let b = assigned(&second.lock().expect("log"));
            let all = all.clone();
            async move {
                let union: BTreeSet<i32> = a.union(&b).copied().collect();
                (!a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && union == all)
                    .then_some((a, b))
            }
        },
    )
    .await;
    assert_eq!(a.len() + b.len(), PARTITIONS as usize);
    assert!(
        first
            .lock()
            .expect("log")
            .iter()
            .any(|s| matches!(s, Seen::Revoked(_))),
        "the first member was told what it gave up"
    );
    shutdown.cancel();
    h1.await.expect("join");
    h2.await.expect("join");
}
