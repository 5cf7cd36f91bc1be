//! Service lifecycles and the poison-record path, against a real broker and Postgres.

mod support;

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use storepulse_runtime::records::*;
use storepulse_runtime::{AvroCodec, db};
use support::{TestStack, eventually};
use tokio_util::sync::CancellationToken;

fn envelope(id: &str) -> Envelope {
    Envelope {
        event_id: id.into(),
        tenant_id: "acme".into(),
        store_id: "s-9".into(),
        occurred_at: 1_763_000_000_000_000,
        received_at: 1_763_000_000_000_000,
        source: "test".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_is_dead_lettered_and_the_partition_moves_on() {
    let stack = TestStack::start("poison").await;
    let producer: FutureProducer = storepulse_runtime::kafka::client_config(&stack.kafka, "test")
        .create()
        .expect("producer");
    let sales = stack.kafka.topic(topic::SALES);
    let key = "acme/s-9";
    // Garbage, then a record whose event id is no UUID, then a good one: same partition.
    for payload in [
        b"definitely not avro".to_vec(),
        AvroCodec::new()
            .encode(&SensorReading {
                envelope: envelope("not-a-uuid"),
                device_id: "f".into(),
                kind: SensorKind::Temperature,
                value: 1.0,
                unit: SensorUnit::Celsius,
                appliance: None,
            })
            .expect("encode"),
    ] {
        let t = if payload.starts_with(b"def") {
            sales.clone()
        } else {
            stack.kafka.topic(topic::SENSOR_READINGS)
        };
        producer
            .send(
                FutureRecord::to(&t).key(key).payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .expect("produce");
    }
    let good = SaleTransaction {
        envelope: envelope("5b8f1f7e-2a8e-4a43-9d3c-6d3b2f1e0a77"),
        kind: SaleKind::Sale,
        transaction_id: "t-1".into(),
        terminal_id: "pos-1".into(),
        currency: "EUR".into(),
        lines: vec![LineItem {
            sku: "milk".into(),
            quantity: 1.0,
            unit_price_minor: 99,
        }],
        total_minor: 99,
        original_transaction_id: None,
    };
    let bytes = AvroCodec::new().encode(&good).expect("encode");
    producer
        .send(
            FutureRecord::to(&sales).key(key).payload(&bytes),
            Duration::from_secs(5),
        )
        .await
        .expect("produce");

    let shutdown = CancellationToken::new();
    let (_, handle) = support::start_compactor(&stack, &shutdown, None, None).await;

    eventually(
        "the good sale behind the poison",
        Duration::from_secs(60),
        || async { (stack.count("SELECT count(*) FROM sales").await == 1).then_some(()) },
    )
    .await;
    eventually(
        "both dead letters stored",
        Duration::from_secs(60),
        || async { (stack.count("SELECT count(*) FROM rejected_events").await == 2).then_some(()) },
    )
    .await;
    let client = stack.pool.get().await.expect("client");
    let rows = client
        .query("SELECT source_topic, source_offset, reason, field, original FROM rejected_events ORDER BY source_topic", &[])
        .await
        .expect("query");
    assert_eq!(
        rows[0].get::<_, Option<String>>(0).as_deref(),
        Some(topic::SALES)
    );
    assert_eq!(rows[0].get::<_, Option<i64>>(1), Some(0));
    assert!(
        rows[0].get::<_, String>(2).contains("single-object"),
        "{}",
        rows[0].get::<_, String>(2)
    );
    assert_eq!(rows[0].get::<_, Vec<u8>>(4), b"definitely not avro");
    assert_eq!(
        rows[1].get::<_, Option<String>>(3).as_deref(),
        Some("envelope.event_id")
    );

    shutdown.cancel();
    handle
        .await
        .expect("join")
        .expect("compactor stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forecaster_serves_ops_endpoints_and_stops_on_request() {
    let stack = TestStack::start("shells").await;
    let client = reqwest::Client::new();
    // Every service works now; the forecaster's processing is in tests/forecaster.rs.
    for service in ["forecaster"] {
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let src = storepulse_runtime::ConfigSource::from_toml(&format!(
            "[kafka]\nbrokers = \"{}\"\n[postgres]\nurl = \"{}\"\n[{service}]\nhttp_listen = \"127.0.0.1:0\"\n",
            stack.kafka.brokers, stack.postgres.url
        ))
        .expect("config");
        let cfg = storepulse_forecaster::config(&src).expect("config");
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            storepulse_forecaster::run_with_listener(cfg, listener, token).await
        });
        let ready = eventually("readyz", Duration::from_secs(30), || {
            let c = client.clone();
            let u = format!("{base}/readyz");
            async move { c.get(u).send().await.ok().filter(|r| r.status() == 200) }
        })
        .await;
        assert!(ready.text().await.expect("body").contains("kafka: ok"));
        let metrics = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(metrics.status(), 200);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("stops within 10s")
            .expect("join")
            .expect("clean exit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once() {
    let stack = TestStack::start("migrate").await;
    // TestStack::start migrated already.
    let again = db::migrate(&stack.pool).await.expect("migrate again");
    assert!(again.is_empty(), "nothing left to apply: {again:?}");
    assert_eq!(
        stack.count("SELECT count(*) FROM schema_migrations").await,
        db::MIGRATIONS.len() as i64
    );
}
