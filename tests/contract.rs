//! The read-store contract against a real broker and Postgres: a record Postgres
//! refuses is isolated, an unknown writer schema pauses (never skips) its partition,
//! idempotency is scoped to the store, each exactness guard holds on its own, the
//! enum vocabulary reaches Postgres as documented, and a transient failure is
//! retried without leaving the consumer group.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use serde_json::json;
use storepulse_compactor::writer::ReadStoreWriter;
use storepulse_runtime::consumer::{Batch, BatchProcessor, ConsumedRecord, Positioned};
use storepulse_runtime::records::*;
use storepulse_runtime::vocabulary::Vocabulary;
use storepulse_runtime::{AvroCodec, EventProducer, ProducerMetrics, schema_registry};
use support::{TestStack, eventually, start_compactor, start_compactor_with};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn envelope(tenant: &str, store: &str, id: Uuid) -> Envelope {
    let now = chrono::Utc::now().timestamp_micros();
    Envelope {
        event_id: id.to_string(),
        tenant_id: tenant.into(),
        store_id: store.into(),
        occurred_at: now,
        received_at: now,
        source: "connector-test".into(),
    }
}

fn reading(tenant: &str, store: &str, id: Uuid, value: f64) -> SensorReading {
    SensorReading {
        envelope: envelope(tenant, store, id),
        device_id: "freezer-1".into(),
        kind: SensorKind::Temperature,
        value,
        unit: SensorUnit::Celsius,
        appliance: Some("freezer".into()),
    }
}

fn sale(id: Uuid, sku: &str) -> SaleTransaction {
    SaleTransaction {
        envelope: envelope("acme", "s-1", id),
        kind: SaleKind::Sale,
        transaction_id: format!("t-{id}"),
        terminal_id: "pos-1".into(),
        currency: "EUR".into(),
        lines: vec![LineItem {
            sku: sku.into(),
            quantity: 1.0,
            unit_price_minor: 100,
        }],
        total_minor: 100,
        original_transaction_id: None,
    }
}

/// A connector's raw producer: writes whatever bytes it is given.
struct Connector {
    producer: FutureProducer,
    stack_prefix: String,
}

impl Connector {
    fn new(stack: &TestStack) -> Self {
        Self {
            producer: storepulse_runtime::kafka::client_config(&stack.kafka, "connector")
                .create()
                .expect("producer"),
            stack_prefix: stack.kafka.topic_prefix.clone(),
        }
    }

    async fn send(&self, topic: &str, partition: i32, key: &str, payload: &[u8]) {
        let full = format!("{}{topic}", self.stack_prefix);
        self.producer
            .send(
                FutureRecord::to(&full)
                    .partition(partition)
                    .key(key)
                    .payload(payload),
                Duration::from_secs(5),
            )
            .await
            .expect("produce");
    }
}

async fn get(url: &str) -> (u16, String) {
    let resp = reqwest::get(url).await.expect("http");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// Waits until the service at `url` answers `/readyz` with 200.
async fn until_ready(url: &str) {
    eventually("ready again", Duration::from_secs(30), || async move {
        (get(&format!("{url}/readyz")).await.0 == 200).then_some(())
    })
    .await;
}

async fn stop(shutdown: CancellationToken, handle: tokio::task::JoinHandle<anyhow::Result<()>>) {
    shutdown.cancel();
    handle
        .await
        .expect("join")
        .expect("compactor stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_postgres_refuses_is_isolated_and_the_rest_is_written() {
    let stack = TestStack::start("isolate").await;
    let connector = Connector::new(&stack);
    let codec = AvroCodec::new();
    // Postgres refuses what the topic contract allows (here: a constraint added for
    // the test, standing in for any row the database will not take).
    stack
        .pool
        .get()
        .await
        .expect("client")
        .batch_execute(
            "ALTER TABLE sales ADD CONSTRAINT test_refuses CHECK (transaction_id NOT LIKE 'refuse-%')",
        )
        .await
        .expect("constraint");
    // One partition: good, refused, good, good; then one breaking the contract (a NUL
    // in a SKU, which Postgres text cannot hold): dead-lettered before the database.
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    for (i, id) in ids.iter().enumerate() {
        let mut s = sale(*id, if i == 4 { "milk\u{0}x" } else { "milk" });
        if i == 1 {
            s.transaction_id = format!("refuse-{id}");
        }
        let bytes = codec.encode(&s).expect("encode");
        connector.send(topic::SALES, 0, "acme/s-1", &bytes).await;
    }
    // Filed under another store's key: dead-lettered (offset 5).
    let foreign = codec.encode(&sale(Uuid::new_v4(), "milk")).expect("encode");
    connector.send(topic::SALES, 0, "other/s-9", &foreign).await;
    // A dead letter whose texts carry NULs is still storable (sanitised).
    let dl = RejectedRecord {
        envelope: envelope("acme", "s-1", Uuid::new_v4()),
        reason: "bad\u{0}reason".into(),
        field: Some("x\u{0}y".into()),
        original: b"\0raw".to_vec().into(),
        original_event_id: None,
        source_topic: None,
        source_partition: None,
        source_offset: None,
        original_length: None,
        original_sha256: None,
    };
    connector
        .send(
            topic::REJECTED,
            0,
            "acme/s-1",
            &codec.encode(&dl).expect("encode"),
        )
        .await;

    let shutdown = CancellationToken::new();
    let (_, handle) = start_compactor(&stack, &shutdown, None, None).await;
    eventually("the three good sales", Duration::from_secs(60), || async {
        (stack.count("SELECT count(*) FROM sales").await == 3).then_some(())
    })
    .await;
    eventually(
        "both bad sales dead-lettered and stored",
        Duration::from_secs(60),
        || async {
            (stack
                .count("SELECT count(*) FROM rejected_events WHERE source_topic = 'pos.sales.v1'")
                .await
                == 3)
                .then_some(())
        },
    )
    .await;
    let client = stack.pool.get().await.expect("client");
    let stored: BTreeSet<Uuid> = client
        .query("SELECT event_id FROM sales", &[])
        .await
        .expect("q")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, BTreeSet::from([ids[0], ids[2], ids[3]]));
    // The refused record's transaction was rolled back with its rollup increments.
    support::recount::rollups_equal_recount(&stack.pool)
        .await
        .expect("rollups equal a recount");
    assert_eq!(
        stack
            .count("SELECT sum(transactions)::bigint FROM sales_daily")
            .await,
        3
    );
    let row = client
        .query_one(
            "SELECT source_offset, reason, original, original_length FROM rejected_events WHERE source_topic = 'pos.sales.v1' AND source_offset = 1",
            &[],
        )
        .await
        .expect("dead letter");
    assert_eq!(
        row.get::<_, Option<i64>>(0),
        Some(1),
        "the refused record's offset"
    );
    let reason: String = row.get(1);
    assert!(
        reason.contains("refused by the store") && reason.contains("test_refuses"),
        "the database's reason: {reason}"
    );
    let original: Vec<u8> = row.get(2);
    assert_eq!(
        codec
            .decode::<SaleTransaction>(&original)
            .expect("original bytes kept")
            .envelope
            .event_id,
        ids[1].to_string()
    );
    assert_eq!(row.get::<_, Option<i64>>(3), Some(original.len() as i64));
    let sanitised = client
        .query_one(
            "SELECT reason, field, original FROM rejected_events WHERE source = 'connector-test'",
            &[],
        )
        .await
        .expect("sanitised dead letter");
    assert_eq!(sanitised.get::<_, String>(0), "bad\u{FFFD}reason");
    assert_eq!(
        sanitised.get::<_, Option<String>>(1).as_deref(),
        Some("x\u{FFFD}y")
    );
    assert_eq!(sanitised.get::<_, Vec<u8>>(2), b"\0raw");
    let field: Option<String> = client
        .query_one(
            "SELECT field FROM rejected_events WHERE source_topic = 'pos.sales.v1' AND source_offset = 4",
            &[],
        )
        .await
        .expect("contract dead letter")
        .get(0);
    assert_eq!(field.as_deref(), Some("lines[0].sku"));
    let field: Option<String> = client
        .query_one(
            "SELECT field FROM rejected_events WHERE source_topic = 'pos.sales.v1' AND source_offset = 5",
            &[],
        )
        .await
        .expect("foreign key dead letter")
        .get(0);
    assert_eq!(field.as_deref(), Some("key"));
    // The partition moved on: the offsets cover all six records.
    assert_eq!(
        stack
            .count("SELECT next_offset FROM consumer_offsets WHERE topic = 'pos.sales.v1' AND partition = 0")
            .await,
        6
    );
    stop(shutdown, handle).await;
}

/// Version 2 of sensor readings, as an upgraded producer writes it.
const SENSOR_V2: &str = r#"{"type":"record","name":"SensorReading","namespace":"storepulse.v1","fields":[
  {"name":"envelope","type":{"type":"record","name":"Envelope","fields":[
    {"name":"event_id","type":"string"},{"name":"tenant_id","type":"string"},
    {"name":"store_id","type":"string"},
    {"name":"occurred_at","type":{"type":"long","logicalType":"timestamp-micros"}},
    {"name":"received_at","type":{"type":"long","logicalType":"timestamp-micros"}},
    {"name":"source","type":"string"}]}},
  {"name":"device_id","type":"string"},
  {"name":"kind","type":{"type":"enum","name":"SensorKind","symbols":["Temperature","Humidity","Door","Power"]}},
  {"name":"value","type":"double"},
  {"name":"unit","type":{"type":"enum","name":"SensorUnit","symbols":["Celsius","Percent","OpenClosed","OnOff"]}},
  {"name":"appliance","type":["null","string"],"default":null},
  {"name":"battery_percent","type":["null","double"],"default":null}]}"#;

#[derive(Serialize)]
struct SensorReadingV2 {
    envelope: Envelope,
    device_id: String,
    kind: SensorKind,
    value: f64,
    unit: SensorUnit,
    appliance: Option<String>,
    battery_percent: Option<f64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_writer_schema_pauses_its_partition_until_the_registry_has_it() {
    let stack = TestStack::start("unknownschema").await;
    let connector = Connector::new(&stack);
    let codec = AvroCodec::new();
    let v2 = apache_avro::Schema::parse_str(SENSOR_V2).expect("v2");
    let newer = SensorReadingV2 {
        envelope: envelope("acme", "s-1", Uuid::new_v4()),
        device_id: "freezer-2".into(),
        kind: SensorKind::Temperature,
        value: -19.0,
        unit: SensorUnit::Celsius,
        appliance: None,
        battery_percent: Some(81.0),
    };
    let v2_bytes = AvroCodec::encode_with(&v2, &newer).expect("encode v2");
    let behind = reading("acme", "s-1", Uuid::new_v4(), -18.0);
    let elsewhere = reading("acme", "s-2", Uuid::new_v4(), -17.0);
    connector
        .send(topic::SENSOR_READINGS, 0, "acme/s-1", &v2_bytes)
        .await;
    connector
        .send(
            topic::SENSOR_READINGS,
            0,
            "acme/s-1",
            &codec.encode(&behind).expect("encode"),
        )
        .await;
    connector
        .send(
            topic::SENSOR_READINGS,
            1,
            "acme/s-2",
            &codec.encode(&elsewhere).expect("encode"),
        )
        .await;

    let shutdown = CancellationToken::new();
    let (url, handle) = start_compactor(&stack, &shutdown, None, None).await;
    let fp = schema_registry::fingerprint_hex(&storepulse_runtime::avro::fingerprint(&v2));
    let body = eventually(
        "not ready, naming the fingerprint",
        Duration::from_secs(60),
        || {
            let url = url.clone();
            let fp = fp.clone();
            async move {
                let (status, body) = get(&format!("{url}/readyz")).await;
                (status == 503 && body.contains(&fp)).then_some(body)
            }
        },
    )
    .await;
    assert!(body.contains("sensor.readings.v1/0"), "{body}");
    eventually(
        "the other partition flows",
        Duration::from_secs(60),
        || async { (stack.count("SELECT count(*) FROM sensor_readings").await == 1).then_some(()) },
    )
    .await;
    let client = stack.pool.get().await.expect("client");
    let device: String = client
        .query_one("SELECT device_id FROM sensor_readings", &[])
        .await
        .expect("row")
        .get(0);
    assert_eq!(device, "freezer-1", "only the record from partition 1");
    assert_eq!(
        stack.count("SELECT count(*) FROM rejected_events").await,
        0,
        "nothing dead-lettered"
    );

    // The upgraded producer publishes its schema: the partition resumes where it held.
    let producer = EventProducer::new(
        &stack.kafka,
        "upgraded-producer",
        AvroCodec::new(),
        ProducerMetrics::register(&prometheus::Registry::new()).expect("metrics"),
    )
    .expect("producer");
    schema_registry::publish(&producer, SENSOR_V2)
        .await
        .expect("publish schema");
    eventually(
        "the held records stored",
        Duration::from_secs(60),
        || async { (stack.count("SELECT count(*) FROM sensor_readings").await == 3).then_some(()) },
    )
    .await;
    until_ready(&url).await;
    assert_eq!(stack.count("SELECT count(*) FROM rejected_events").await, 0);
    stop(shutdown, handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_is_scoped_to_the_store_and_conflicts_are_recorded() {
    let stack = TestStack::start("scoped").await;
    let connector = Connector::new(&stack);
    let codec = AvroCodec::new();
    let shared = Uuid::new_v4();
    let first = reading("acme", "s-1", shared, -18.0);
    let mut retry = first.clone();
    retry.envelope.received_at += 5_000_000; // the same event, received again later
    let send = |r: SensorReading| {
        let bytes = codec.encode(&r).expect("encode");
        let key = r.envelope.partition_key();
        let connector = &connector;
        async move {
            connector
                .send(topic::SENSOR_READINGS, 0, &key, &bytes)
                .await
        }
    };
    send(first.clone()).await;
    send(reading("other", "s-1", shared, -18.0)).await; // another tenant
    send(reading("acme", "s-2", shared, -18.0)).await; // another store
    send(retry).await; // a retry: nothing new
    send(reading("acme", "s-1", shared, 4.0)).await; // same key, other payload

    let shutdown = CancellationToken::new();
    let (url, handle) = start_compactor(&stack, &shutdown, None, None).await;
    eventually(
        "three distinct events and one conflict",
        Duration::from_secs(60),
        || async {
            (stack.count("SELECT count(*) FROM sensor_readings").await == 3
                && stack.count("SELECT count(*) FROM event_id_conflicts").await == 1)
                .then_some(())
        },
    )
    .await;
    // A conflict arriving in a later batch is recognised against the stored row.
    send(reading("acme", "s-1", shared, 9.0)).await;
    eventually("the second conflict", Duration::from_secs(60), || async {
        (stack.count("SELECT count(*) FROM event_id_conflicts").await == 2).then_some(())
    })
    .await;
    let client = stack.pool.get().await.expect("client");
    let value: f64 = client
        .query_one(
            "SELECT value FROM sensor_readings WHERE tenant_id = 'acme' AND store_id = 's-1'",
            &[],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(value, -18.0, "the first event stands");
    let offsets: Vec<i64> = client
        .query(
            "SELECT \"offset\" FROM event_id_conflicts WHERE relation = 'sensor_readings' AND event_id = $1 ORDER BY 1",
            &[&shared],
        )
        .await
        .expect("conflicts")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(offsets, vec![4, 5], "recorded with their coordinates");
    let (_, metrics) = get(&format!("{url}/metrics")).await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("storepulse_compactor_event_id_conflicts_total{")
                && l.contains("table=\"sensor_readings\"")
                && l.ends_with(" 2")
        ),
        "{metrics}"
    );
    stop(shutdown, handle).await;
}

/// Builds a batch for the writer from records at the given offsets of partition 0.
fn batch_of(
    writer: &ReadStoreWriter,
    codec: &AvroCodec,
    records: &[(i64, &SensorReading)],
) -> Batch<storepulse_compactor::writer::RawEvent> {
    let mut batch = Batch {
        items: Vec::new(),
        next_offsets: BTreeMap::new(),
    };
    for (offset, r) in records {
        let consumed = ConsumedRecord {
            topic: topic::SENSOR_READINGS.into(),
            partition: 0,
            offset: *offset,
            key: None,
            payload: codec.encode(*r).expect("encode"),
        };
        batch.items.push(Positioned {
            topic: consumed.topic.clone(),
            partition: 0,
            offset: *offset,
            item: writer.decode(&consumed).expect("decodes"),
        });
        batch
            .next_offsets
            .insert((topic::SENSOR_READINGS.into(), 0), offset + 1);
    }
    batch
}

async fn writer(stack: &TestStack, group: &str) -> (ReadStoreWriter, AvroCodec) {
    let codec = AvroCodec::new();
    let w = ReadStoreWriter::new(
        stack.pool.clone(),
        codec.clone(),
        group.into(),
        &prometheus::Registry::new(),
    )
    .expect("writer");
    (w, codec)
}

/// Guard 1 alone: records below the stored offset are not applied again, even when
/// their ids are new (nothing else would stop them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_offset_guard_alone_stops_a_reapplied_batch() {
    let stack = TestStack::start("offsetguard").await;
    let (mut w, codec) = writer(&stack, "g-offsets").await;
    let a = reading("acme", "s-1", Uuid::new_v4(), 1.0);
    let b = reading("acme", "s-1", Uuid::new_v4(), 2.0);
    w.apply(&batch_of(&w, &codec, &[(0, &a), (1, &b)]))
        .await
        .expect("apply");
    // A stale view of offsets 0..1 (e.g. a revoked owner's batch) with other ids.
    let stale_a = reading("acme", "s-1", Uuid::new_v4(), 3.0);
    let stale_b = reading("acme", "s-1", Uuid::new_v4(), 4.0);
    w.apply(&batch_of(&w, &codec, &[(0, &stale_a), (1, &stale_b)]))
        .await
        .expect("apply stale");
    assert_eq!(stack.count("SELECT count(*) FROM sensor_readings").await, 2);
    assert_eq!(
        stack
            .count("SELECT next_offset FROM consumer_offsets WHERE consumer_group = 'g-offsets'")
            .await,
        2
    );
}

/// Guard 2 alone: the same event at a new offset (a client retry, received later)
/// is one row and no conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idempotency_key_guard_alone_stops_a_republished_event() {
    let stack = TestStack::start("keyguard").await;
    let (mut w, codec) = writer(&stack, "g-keys").await;
    let e = reading("acme", "s-1", Uuid::new_v4(), 1.0);
    w.apply(&batch_of(&w, &codec, &[(0, &e)]))
        .await
        .expect("apply");
    let mut again = e.clone();
    again.envelope.received_at += 1_000_000;
    w.apply(&batch_of(&w, &codec, &[(7, &again)]))
        .await
        .expect("apply retry");
    assert_eq!(stack.count("SELECT count(*) FROM sensor_readings").await, 1);
    assert_eq!(
        stack.count("SELECT count(*) FROM event_id_conflicts").await,
        0
    );
}

/// Every enum value posted through the API is stored as its documented text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_enum_value_reads_back_from_postgres_as_documented() {
    let stack = TestStack::start("vocab").await;
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let ingest = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(storepulse_ingest::run_with_listener(
        storepulse_ingest::IngestConfig {
            kafka: stack.kafka.clone(),
            postgres: stack.postgres.clone(),
            log: Default::default(),
            ingest: Default::default(),
        },
        listener,
        shutdown.clone(),
    ));
    let (_, handle) = start_compactor(&stack, &shutdown, None, None).await;
    let key = storepulse_ingest::api_keys::create(&stack.pool, "acme", "s-1", "t")
        .await
        .expect("key");
    let now = chrono::Utc::now().to_rfc3339();
    let id = || Uuid::new_v4().to_string();
    let mut events = Vec::new();
    for kind in SaleKind::ALL {
        events.push(
            json!({"type": kind.as_str(), "event_id": id(), "store_id": "s-1", "occurred_at": now,
            "transaction_id": "t", "terminal_id": "pos-1", "currency": "EUR",
            "lines": [{"sku": "a", "quantity": 1, "unit_price_minor": 1}]}),
        );
    }
    for reason in AdjustmentReason::ALL {
        events.push(json!({"type": "stock_adjustment", "event_id": id(), "store_id": "s-1", "occurred_at": now,
            "sku": "a", "quantity": -1, "reason": reason.as_str()}));
    }
    events.push(
        json!({"type": "stock_snapshot", "event_id": id(), "store_id": "s-1", "occurred_at": now,
        "sku": "a", "quantity": 5}),
    );
    for (i, printer) in PrinterStatus::ALL.iter().enumerate() {
        let network = NetworkStatus::ALL[i % NetworkStatus::ALL.len()];
        events.push(json!({"type": "pos_heartbeat", "event_id": id(), "store_id": "s-1", "occurred_at": now,
            "terminal_id": "pos-1", "app_up": true, "printer": printer.as_str(), "network": network.as_str()}));
    }
    for kind in SensorKind::ALL {
        let value = if *kind == SensorKind::Temperature {
            4.0
        } else {
            1.0
        };
        events.push(json!({"type": "sensor_reading", "event_id": id(), "store_id": "s-1", "occurred_at": now,
            "device_id": "d", "kind": kind.as_str(), "unit": kind.unit().as_str(), "value": value}));
    }
    let client = reqwest::Client::new();
    let resp = eventually("ingest answers", Duration::from_secs(30), || {
        let c = client.clone();
        let body = serde_json::to_vec(&events).expect("json");
        let url = format!("{ingest}/v1/events");
        let token = key.token.clone();
        async move {
            c.post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .ok()
        }
    })
    .await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let total = events.len() as i64;
    eventually("every event stored", Duration::from_secs(60), || async {
        (stack
            .count("SELECT (SELECT count(*) FROM sales) + (SELECT count(*) FROM inventory_changes) + (SELECT count(*) FROM pos_heartbeats) + (SELECT count(*) FROM sensor_readings)")
            .await
            == total)
            .then_some(())
    })
    .await;
    let pg = stack.pool.get().await.expect("client");
    let distinct = |sql: &'static str| {
        let pg = &pg;
        async move {
            pg.query(sql, &[])
                .await
                .expect(sql)
                .iter()
                .filter_map(|r| r.get::<_, Option<String>>(0))
                .collect::<BTreeSet<String>>()
        }
    };
    fn texts<T: Vocabulary>() -> BTreeSet<String> {
        T::ALL.iter().map(|v| v.as_str().to_string()).collect()
    }
    assert_eq!(
        distinct("SELECT DISTINCT kind FROM sales").await,
        texts::<SaleKind>()
    );
    assert_eq!(
        distinct("SELECT DISTINCT reason FROM inventory_changes").await,
        texts::<AdjustmentReason>()
    );
    assert_eq!(
        distinct("SELECT DISTINCT kind FROM inventory_changes").await,
        texts::<InventoryChangeKind>()
    );
    assert_eq!(
        distinct("SELECT DISTINCT printer FROM pos_heartbeats").await,
        texts::<PrinterStatus>()
    );
    assert_eq!(
        distinct("SELECT DISTINCT network FROM pos_heartbeats").await,
        texts::<NetworkStatus>()
    );
    assert_eq!(
        distinct("SELECT DISTINCT kind FROM sensor_readings").await,
        texts::<SensorKind>()
    );
    assert_eq!(
        distinct("SELECT DISTINCT unit FROM sensor_readings").await,
        texts::<SensorUnit>()
    );
    stop(shutdown, handle).await;
}

/// A lock held on a table makes every write time out (a transient failure): the
/// compactor reports not-ready, keeps polling with its partitions paused for longer
/// than `max.poll.interval.ms` without being expelled from its group, and writes
/// the batch once the lock goes; it never dead-letters it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_in_the_group_and_not_ready_meanwhile() {
    let stack = TestStack::start("transient").await;
    let mut kafka = stack.kafka.clone();
    kafka
        .properties
        .insert("session.timeout.ms".into(), "6000".into());
    kafka
        .properties
        .insert("max.poll.interval.ms".into(), "7000".into());
    let postgres = storepulse_runtime::PostgresConfig {
        lock_timeout_ms: 200,
        ..stack.postgres.clone()
    };
    let mut locker = stack.pool.get().await.expect("client");
    let tx = locker.transaction().await.expect("tx");
    tx.batch_execute("LOCK TABLE sensor_readings IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");

    let connector = Connector::new(&stack);
    let r = reading("acme", "s-1", Uuid::new_v4(), -18.0);
    connector
        .send(
            topic::SENSOR_READINGS,
            0,
            "acme/s-1",
            &AvroCodec::new().encode(&r).expect("encode"),
        )
        .await;
    let shutdown = CancellationToken::new();
    let (url, handle) = start_compactor(&stack, &shutdown, Some(postgres), Some(kafka)).await;
    let since = eventually("not ready while retrying", Duration::from_secs(60), || {
        let url = url.clone();
        async move {
            let (status, body) = get(&format!("{url}/readyz")).await;
            (status == 503 && body.contains("retrying a batch") && body.contains("lock"))
                .then(std::time::Instant::now)
        }
    })
    .await;
    // Stay locked past max.poll.interval.ms: a consumer that stopped polling would be
    // expelled from its group now (and its assignment gauge drop to 0).
    eventually(
        "retrying past max.poll.interval.ms",
        Duration::from_secs(30),
        || async { (since.elapsed() > Duration::from_secs(9)).then_some(()) },
    )
    .await;
    let (_, metrics) = get(&format!("{url}/metrics")).await;
    let assigned: i64 = metrics
        .lines()
        .filter(|l| l.starts_with("storepulse_assigned_partitions{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum();
    assert!(assigned > 0, "still in the group: {metrics}");
    tx.rollback().await.expect("unlock");
    eventually(
        "the batch written once the lock is gone",
        Duration::from_secs(60),
        || async { (stack.count("SELECT count(*) FROM sensor_readings").await == 1).then_some(()) },
    )
    .await;
    until_ready(&url).await;
    assert_eq!(stack.count("SELECT count(*) FROM rejected_events").await, 0);
    stop(shutdown, handle).await;
}

/// Every session has the configured statement and lock timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_carry_statement_and_lock_timeouts() {
    let stack = TestStack::start("timeouts").await;
    let client = stack.pool.get().await.expect("client");
    let show = |name: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .expect(name)
                .get::<_, String>(0)
        }
    };
    assert_eq!(show("statement_timeout").await, "30s");
    assert_eq!(show("lock_timeout").await, "10s");
}

/// The dead-letter broker is away: the consumer keeps retrying the rejection (it does
/// not exit, it commits nothing past it, `/readyz` says why), and publishes it once
/// a broker answers there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_publish_is_retried_until_the_broker_answers() {
    use storepulse_runtime::consumer::{BatchConsumer, ConsumerSettings};
    use storepulse_runtime::{ConsumerMetrics, DeadLetters};

    let stack = TestStack::start("dlqretry").await;
    let connector = Connector::new(&stack);
    connector
        .send(topic::SALES, 0, "acme/s-1", b"not avro at all")
        .await;

    // Dead letters go to a broker that is not there yet.
    let dlq_port = storepulse::local_stack::free_port().expect("port");
    let dlq_kafka = storepulse_runtime::KafkaConfig {
        brokers: format!("127.0.0.1:{dlq_port}"),
        produce_timeout_ms: 1_000,
        ..stack.kafka.clone()
    };
    let registry = prometheus::Registry::new();
    let codec = AvroCodec::new();
    let dlq_producer = EventProducer::new(
        &dlq_kafka,
        "dlq",
        codec.clone(),
        ProducerMetrics::register(&registry).expect("metrics"),
    )
    .expect("producer");
    let group = format!("{}dlq-group", stack.kafka.topic_prefix);
    let writer = ReadStoreWriter::new(stack.pool.clone(), codec.clone(), group.clone(), &registry)
        .expect("writer");
    let consumer = BatchConsumer::new(
        &stack.kafka,
        ConsumerSettings {
            group_id: group.clone(),
            topics: vec![topic::SALES.into()],
            batch_max_records: 100,
            batch_max_wait: Duration::from_millis(50),
            unknown_schema_hold: Duration::from_secs(900),
        },
        writer,
        DeadLetters::new(dlq_producer, "test"),
        schema_registry::SchemaRegistry::new(codec.clone(), &stack.kafka),
        ConsumerMetrics::register(&registry).expect("metrics"),
    )
    .expect("consumer");
    let health = consumer.health();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(consumer.run(shutdown.clone()));

    eventually(
        "not ready: dead letters unavailable",
        Duration::from_secs(60),
        || {
            let status = health.status();
            async move {
                status
                    .err()
                    .filter(|e| e.contains("dead-letter topic unavailable"))
            }
        },
    )
    .await;
    assert!(
        !run.is_finished(),
        "the consumer keeps retrying, it does not exit"
    );
    assert_eq!(
        stack
            .count(&format!(
                "SELECT count(*) FROM consumer_offsets WHERE consumer_group = '{group}'"
            ))
            .await,
        0,
        "nothing committed past the unpublished rejection"
    );

    // The broker comes up: the rejection is published, the partition moves on.
    let dlq_dir = tempfile::tempdir().expect("dir");
    let _dlq_broker = storepulse::local_stack::LocalBroker::start(
        dlq_dir.path(),
        "memory://nisshi/",
        Some(dlq_port),
    )
    .expect("start the dead-letter broker");
    let dlq_admin = storepulse_runtime::KafkaConfig {
        topics: storepulse_runtime::TopicSettings::single_broker(),
        ..dlq_kafka.clone()
    };
    storepulse_runtime::kafka::ensure_topics(&dlq_admin, &[topic::REJECTED], 1)
        .await
        .expect("create the dead-letter topic");
    eventually("the offsets stored past the rejection", Duration::from_secs(90), || async {
        (stack
            .count(&format!(
                "SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE consumer_group = '{group}'"
            ))
            .await
            == 1)
            .then_some(())
    })
    .await;
    assert!(health.status().is_ok(), "{:?}", health.status());
    shutdown.cancel();
    run.await.expect("join").expect("clean stop");
}

/// A header naming a schema nobody will ever publish (here: a zeroed fingerprint)
/// holds its partition only for `unknown_schema_hold_secs`: then the record is
/// dead-lettered with the reason and the partition moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_that_never_appears_is_dead_lettered_after_the_hold() {
    let stack = TestStack::start("schemahold").await;
    let connector = Connector::new(&stack);
    let mut corrupt = vec![0xC3, 0x01];
    corrupt.extend_from_slice(&[0; 8]);
    corrupt.extend_from_slice(b"xx");
    connector
        .send(topic::SENSOR_READINGS, 0, "acme/s-1", &corrupt)
        .await;
    let behind = reading("acme", "s-1", Uuid::new_v4(), -18.0);
    connector
        .send(
            topic::SENSOR_READINGS,
            0,
            "acme/s-1",
            &AvroCodec::new().encode(&behind).expect("encode"),
        )
        .await;
    let shutdown = CancellationToken::new();
    let settings = storepulse_compactor::CompactorSettings {
        group_id: format!("{}compactor", stack.kafka.topic_prefix),
        unknown_schema_hold_secs: 2,
        ..Default::default()
    };
    let (url, handle) = start_compactor_with(&stack, &shutdown, None, None, settings).await;
    eventually(
        "held, naming the fingerprint",
        Duration::from_secs(60),
        || {
            let url = url.clone();
            async move {
                let (status, body) = get(&format!("{url}/readyz")).await;
                (status == 503 && body.contains("0000000000000000")).then_some(())
            }
        },
    )
    .await;
    eventually(
        "the record behind it and the dead letter stored",
        Duration::from_secs(60),
        || async {
            (stack.count("SELECT count(*) FROM sensor_readings").await == 1
                && stack
                    .count("SELECT count(*) FROM rejected_events WHERE source_topic = 'sensor.readings.v1'")
                    .await
                    == 1)
                .then_some(())
        },
    )
    .await;
    let client = stack.pool.get().await.expect("client");
    let row = client
        .query_one(
            "SELECT reason, source_offset FROM rejected_events WHERE source_topic = 'sensor.readings.v1'",
            &[],
        )
        .await
        .expect("dead letter");
    let reason: String = row.get(0);
    assert!(
        reason.contains("0000000000000000")
            && reason.contains("not in the schema registry after 2 s"),
        "{reason}"
    );
    assert_eq!(row.get::<_, Option<i64>>(1), Some(0));
    until_ready(&url).await;
    stop(shutdown, handle).await;
}

/// A conflicting payload and a genuine retry of a stored event in one batch: only
/// the conflicting one is a conflict, whatever their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_behind_a_conflict_in_one_batch_is_a_retry() {
    let stack = TestStack::start("conflictorder").await;
    let (mut w, codec) = writer(&stack, "g-order").await;
    let e = reading("acme", "s-1", Uuid::new_v4(), 1.0);
    w.apply(&batch_of(&w, &codec, &[(0, &e)]))
        .await
        .expect("apply");
    let mut other = e.clone();
    other.value = 5.0;
    let mut retry = e.clone();
    retry.envelope.received_at += 1_000_000;
    w.apply(&batch_of(&w, &codec, &[(1, &other), (2, &retry)]))
        .await
        .expect("apply");
    let client = stack.pool.get().await.expect("client");
    let offsets: Vec<i64> = client
        .query("SELECT \"offset\" FROM event_id_conflicts ORDER BY 1", &[])
        .await
        .expect("conflicts")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(offsets, vec![1], "only the other payload conflicts");
    assert_eq!(stack.count("SELECT count(*) FROM sensor_readings").await, 1);
}
