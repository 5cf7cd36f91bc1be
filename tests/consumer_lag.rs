//! `storepulse_consumer_lag_records{topic}` (the dashboards' and alerts' consumer
//! lag) against the real broker: while a consumer cannot apply its batches it
//! reports the records it is behind on the topic, and once it catches up, none.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use storepulse_runtime::consumer::{
    Batch, BatchConsumer, BatchProcessor, ConsumedRecord, ConsumerSettings, Failure,
};
use storepulse_runtime::records::topic;
use storepulse_runtime::schema_registry::SchemaRegistry;
use storepulse_runtime::{
    AvroCodec, ConsumerMetrics, DeadLetters, EventProducer, ProducerMetrics, Rejection, telemetry,
};
use support::{TestStack, eventually};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
#[error("the store is away")]
struct Away;

/// Applies nothing (a transient failure, retried) until `open`.
struct Gate {
    open: Arc<AtomicBool>,
}

impl BatchProcessor for Gate {
    type Item = ();
    type Error = Away;

    fn decode(&self, _record: &ConsumedRecord) -> Result<(), Rejection> {
        Ok(())
    }

    async fn apply(&mut self, _batch: &Batch<()>) -> Result<(), Away> {
        if self.open.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Away)
        }
    }

    fn classify(&self, _error: &Away) -> Failure {
        Failure::Transient
    }
}

/// The lag gauge of `topic` as the service's /metrics would show it.
fn lag(registry: &prometheus::Registry, base_topic: &str) -> Option<i64> {
    registry
        .gather()
        .iter()
        .find(|f| f.name() == "storepulse_consumer_lag_records")?
        .get_metric()
        .iter()
        .find(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "topic" && l.value() == base_topic)
        })
        .map(|m| m.get_gauge().get_value() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_reported_while_behind_and_zero_once_caught_up() {
    let stack = TestStack::start("lag").await;
    let codec = AvroCodec::new();
    let producer = EventProducer::new(
        &stack.kafka,
        "lag-test",
        codec.clone(),
        ProducerMetrics::register(&prometheus::Registry::new()).expect("metrics"),
    )
    .expect("producer");
    const RECORDS: i64 = 200;
    for i in 0..RECORDS {
        producer
            .send_raw(topic::SALES, format!("acme/s-{}", i % 16).as_bytes(), b"x")
            .await
            .expect("send");
    }

    let registry = telemetry::service_registry("lag-test");
    let open = Arc::new(AtomicBool::new(false));
    let consumer = BatchConsumer::new(
        &stack.kafka,
        ConsumerSettings {
            group_id: format!("{}lag", stack.kafka.topic_prefix),
            topics: vec![topic::SALES.into()],
            batch_max_records: 10,
            batch_max_wait: Duration::from_millis(20),
            unknown_schema_hold: Duration::from_secs(900),
        },
        Gate { open: open.clone() },
        DeadLetters::new(producer, "lag-test"),
        SchemaRegistry::new(codec, &stack.kafka),
        ConsumerMetrics::register(&registry).expect("metrics"),
    )
    .expect("consumer");
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let handle = tokio::spawn(async move { consumer.run(token).await });

    let behind = eventually(
        "a lag while nothing can be applied",
        Duration::from_secs(60),
        || {
            let v = lag(&registry, topic::SALES).filter(|v| *v > 0);
            async move { v }
        },
    )
    .await;
    assert!(
        behind <= RECORDS,
        "lag {behind} is more than the {RECORDS} records there are"
    );

    open.store(true, Ordering::SeqCst);
    eventually("no lag once caught up", Duration::from_secs(60), || {
        let v = lag(&registry, topic::SALES).filter(|v| *v == 0);
        async move { v }
    })
    .await;
    shutdown.cancel();
    handle.await.expect("join").expect("consumer stops cleanly");
}
