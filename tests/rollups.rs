//! The analyst rollups on plain PostgreSQL, maintained by the compactor's writer in the
//! rows' transaction: their documented semantics on a hand-computed example, a
//! conflicting payload under a stored id changes nothing, and a property test over
//! random workloads (several tenants and stores, sales/refunds/voids, retries,
//! conflicting reuse of ids, out-of-order event times, random batch splits, batches
//! re-read after a rewind) checks that every rollup equals a recount of the raw tables.

mod support;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use storepulse_compactor::writer::{RawEvent, ReadStoreWriter};
use storepulse_runtime::AvroCodec;
use storepulse_runtime::consumer::{Batch, BatchProcessor, ConsumedRecord, Positioned};
use storepulse_runtime::db::Flavour;
use storepulse_runtime::records::*;
use storepulse_runtime::vocabulary::Vocabulary;
use support::recount::{SALES_VALUES, SENSOR_VALUES, UPTIME_VALUES, rollups_equal_recount};
use support::{TestDb, flavour_runs_here};
use uuid::Uuid;

fn at(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
        .timestamp_micros()
}

fn envelope(tenant: &str, store: &str, id: Uuid, occurred_at: i64) -> Envelope {
    Envelope {
        event_id: id.to_string(),
        tenant_id: tenant.into(),
        store_id: store.into(),
        occurred_at,
        received_at: occurred_at + 1_000_000,
        source: "connector-test".into(),
    }
}

fn sale_tx(env: Envelope, kind: SaleKind, currency: &str, spec: &[(&str, i64, i64)]) -> Published {
    let lines: Vec<LineItem> = spec
        .iter()
        .map(|(sku, milli, price)| LineItem {
            sku: (*sku).into(),
            quantity: *milli as f64 / 1000.0,
            unit_price_minor: *price,
        })
        .collect();
    // As ingest computes it (the topic contract checks it): in integers, rounded once.
    let amounts: Vec<(i64, i64)> = spec.iter().map(|(_, m, p)| (*m, *p)).collect();
    let total_minor = storepulse_runtime::contract::total_minor(&amounts).expect("fits");
    Published::Sale(SaleTransaction {
        transaction_id: format!("t-{}", env.event_id),
        envelope: env,
        kind,
        terminal_id: "pos-1".into(),
        currency: currency.into(),
        lines,
        total_minor,
        original_transaction_id: None,
    })
}

/// A reading of `DEVICES[device]`; `value` is taken into the kind's valid range (door
/// and power: 1 above 0.5, else 0), as the topic contract requires.
fn reading_of(env: Envelope, device: usize, value: f64) -> Published {
    let (id, kind, unit, appliance) = DEVICES[device];
    let value = match kind {
        SensorKind::Door | SensorKind::Power => f64::from(u8::from(value > 0.5)),
        SensorKind::Humidity => value.clamp(0.0, 100.0),
        SensorKind::Temperature => value,
    };
    Published::Reading(SensorReading {
        envelope: env,
        device_id: id.into(),
        kind,
        value,
        unit,
        appliance: appliance.map(str::to_string),
    })
}

const DEVICES: [(&str, SensorKind, SensorUnit, Option<&str>); 5] = [
    (
        "fridge-1",
        SensorKind::Temperature,
        SensorUnit::Celsius,
        Some("fridge"),
    ),
    (
        "freezer-1",
        SensorKind::Temperature,
        SensorUnit::Celsius,
        Some("freezer"),
    ),
    (
        "door-1",
        SensorKind::Door,
        SensorUnit::OpenClosed,
        Some("entrance"),
    ),
    ("power-1", SensorKind::Power, SensorUnit::OnOff, None),
    ("hum-1", SensorKind::Humidity, SensorUnit::Percent, None),
];

fn heartbeat_of(
    env: Envelope,
    terminal: &str,
    app_up: bool,
    printer: PrinterStatus,
    network: NetworkStatus,
) -> Published {
    Published::Heartbeat(PosHeartbeat {
        envelope: env,
        terminal_id: terminal.into(),
        app_up,
        printer,
        network,
        software_version: None,
    })
}

/// A record as published to the log.
#[derive(Debug, Clone)]
enum Published {
    Sale(SaleTransaction),
    Reading(SensorReading),
    Heartbeat(PosHeartbeat),
    Inventory(InventoryChange),
    Alert(AlertTransition),
    Forecast(DemandForecast),
    Outcome(NotificationOutcome),
}

impl Published {
    fn envelope(&self) -> &Envelope {
        match self {
            Published::Sale(s) => &s.envelope,
            Published::Reading(r) => &r.envelope,
            Published::Heartbeat(h) => &h.envelope,
            Published::Inventory(c) => &c.envelope,
            Published::Alert(a) => &a.envelope,
            Published::Forecast(f) => &f.envelope,
            Published::Outcome(o) => &o.envelope,
        }
    }
    fn envelope_mut(&mut self) -> &mut Envelope {
        match self {
            Published::Sale(s) => &mut s.envelope,
            Published::Reading(r) => &mut r.envelope,
            Published::Heartbeat(h) => &mut h.envelope,
            Published::Inventory(c) => &mut c.envelope,
            Published::Alert(a) => &mut a.envelope,
            Published::Forecast(f) => &mut f.envelope,
            Published::Outcome(o) => &mut o.envelope,
        }
    }
    fn topic(&self) -> &'static str {
        match self {
            Published::Sale(_) => topic::SALES,
            Published::Reading(_) => topic::SENSOR_READINGS,
            Published::Heartbeat(_) => topic::DEVICE,
            Published::Inventory(_) => topic::INVENTORY,
            Published::Alert(_) => topic::ALERTS,
            Published::Forecast(_) => topic::FORECASTS,
            Published::Outcome(_) => topic::NOTIFICATIONS,
        }
    }
    fn encode(&self, codec: &AvroCodec) -> Vec<u8> {
        match self {
            Published::Sale(s) => codec.encode(s),
            Published::Reading(r) => codec.encode(r),
            Published::Heartbeat(h) => codec.encode(h),
            Published::Inventory(c) => codec.encode(c),
            Published::Alert(a) => codec.encode(a),
            Published::Forecast(f) => codec.encode(f),
            Published::Outcome(o) => codec.encode(o),
        }
        .expect("encode")
    }
}

/// One record at its place in the log.
#[derive(Debug, Clone)]
struct Logged {
    topic: &'static str,
    partition: i32,
    offset: i64,
    record: Published,
}

/// Appends records to per-partition logs (partition = the store's, as the
/// `tenant/store` key does), giving each its next offset.
fn log_of(records: Vec<Published>) -> Vec<Logged> {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    records
        .into_iter()
        .map(|record| {
            let e = record.envelope();
            let partition = i32::from(e.store_id.ends_with('2') || e.tenant_id == "beta");
            let topic = record.topic();
            let n = next.entry((topic, partition)).or_insert(0);
            let offset = *n;
            *n += 1;
            Logged {
                topic,
                partition,
                offset,
                record,
            }
        })
        .collect()
}

/// The batch the consumer would hand the writer for `records`.
fn batch(writer: &ReadStoreWriter, codec: &AvroCodec, records: &[Logged]) -> Batch<RawEvent> {
    let mut b = Batch {
        items: Vec::new(),
        next_offsets: BTreeMap::new(),
    };
    for l in records {
        let consumed = ConsumedRecord {
            topic: l.topic.into(),
            partition: l.partition,
            offset: l.offset,
            key: None,
            payload: l.record.encode(codec),
        };
        b.items.push(Positioned {
            topic: l.topic.into(),
            partition: l.partition,
            offset: l.offset,
            item: writer.decode(&consumed).expect("decodes"),
        });
        let next = b
            .next_offsets
            .entry((l.topic.to_string(), l.partition))
            .or_insert(0);
        *next = (*next).max(l.offset + 1);
    }
    b
}

fn writer(db: &TestDb, group: &str) -> (ReadStoreWriter, AvroCodec) {
    writer_on(&db.pool, group)
}

fn writer_on(pool: &deadpool_postgres::Pool, group: &str) -> (ReadStoreWriter, AvroCodec) {
    let codec = AvroCodec::new();
    let w = ReadStoreWriter::new(
        pool.clone(),
        codec.clone(),
        group.into(),
        &prometheus::Registry::new(),
    )
    .expect("writer");
    (w, codec)
}

async fn rows(db: &TestDb, sql: &str) -> Vec<String> {
    let client = db.pool.get().await.expect("client");
    client
        .query(&format!("SELECT t::text FROM ({sql}) t ORDER BY 1"), &[])
        .await
        .expect("query")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The documented semantics on numbers worked out by hand, on both flavours; on
/// TimescaleDB computed in real time from the raw rows, then again materialized by a
/// refresh.
async fn semantics(flavour: Flavour) {
    let db = TestDb::start_flavour("rollsem", flavour).await;
    let (mut w, codec) = writer(&db, "g");
    let id = |n: u128| Uuid::from_u128(n);
    let env = |n: u128, t: &str| envelope("acme", "s-1", id(n), at(t));
    let records = vec![
        // 2 × milk at 1.29 and 1 × bread at 2.50 in one sale; milk again in another.
        sale_tx(
            env(1, "2026-11-23T10:05:00Z"),
            SaleKind::Sale,
            "EUR",
            &[
                ("milk", 2000, 129),
                ("bread", 1000, 250),
                ("milk", 1000, 129),
            ],
        ),
        sale_tx(
            env(2, "2026-11-23T10:59:59.999Z"),
            SaleKind::Sale,
            "EUR",
            &[("milk", 1500, 129)], // 193.5 → 194 (half away from zero)
        ),
        // Refund of half a milk (64.5 → 65) and a void of one milk, the next hour.
        sale_tx(
            env(3, "2026-11-23T11:00:00Z"),
            SaleKind::Refund,
            "EUR",
            &[("milk", 500, 129)],
        ),
        sale_tx(
            env(4, "2026-11-23T11:30:00Z"),
            SaleKind::Void,
            "EUR",
            &[("milk", 1000, 129)],
        ),
        // Freezer limits are [-30, -15]: -10 is out of range.
        reading_of(env(5, "2026-11-23T10:01:00Z"), 1, -18.0),
        reading_of(env(6, "2026-11-23T10:04:59Z"), 1, -10.0),
        reading_of(env(7, "2026-11-23T10:05:00Z"), 1, -20.5),
        // Power has limits [1, 1]: off is out of range; humidity has none.
        reading_of(env(8, "2026-11-23T10:06:00Z"), 3, 0.0),
        reading_of(env(9, "2026-11-23T10:07:00Z"), 4, 99.0),
        // pos-1: up in minute 0 (twice), down in minute 1, up at 23:59:59.5; the next
        // day's first heartbeat is in its own day.
        heartbeat_of(
            env(10, "2026-11-23T00:00:00Z"),
            "pos-1",
            true,
            PrinterStatus::Ok,
            NetworkStatus::Online,
        ),
        heartbeat_of(
            env(11, "2026-11-23T00:00:30Z"),
            "pos-1",
            true,
            PrinterStatus::PaperLow,
            NetworkStatus::Online,
        ),
        heartbeat_of(
            env(12, "2026-11-23T00:01:00Z"),
            "pos-1",
            false,
            PrinterStatus::Ok,
            NetworkStatus::Offline,
        ),
        heartbeat_of(
            env(13, "2026-11-23T23:59:59.5Z"),
            "pos-1",
            true,
            PrinterStatus::Ok,
            NetworkStatus::Degraded,
        ),
        heartbeat_of(
            env(14, "2026-11-24T00:00:00Z"),
            "pos-1",
            false,
            PrinterStatus::Error,
            NetworkStatus::Online,
        ),
    ];
    let log = log_of(records);
    w.apply(&batch(&w, &codec, &log[..5])).await.expect("apply");
    w.apply(&batch(&w, &codec, &log[5..])).await.expect("apply");
    for refresh in [false, true] {
        if refresh {
            db.refresh_aggregates().await;
        }

        assert_eq!(
            rows(
                &db,
                &format!("SELECT sku, bucket AT TIME ZONE 'UTC', {SALES_VALUES} FROM sales_hourly")
            )
            .await,
            vec![
                "(bread,\"2026-11-23 10:00:00\",1,0,0,250,0,0,1,0,0,1,250)",
                "(milk,\"2026-11-23 10:00:00\",4.5,0,0,581,0,0,2,0,0,4.5,581)",
                "(milk,\"2026-11-23 11:00:00\",0,0.5,1,0,65,129,0,1,1,-1.5,-194)",
            ]
        );
        assert_eq!(
            rows(
                &db,
                &format!("SELECT sku, bucket AT TIME ZONE 'UTC', {SALES_VALUES} FROM sales_daily")
            )
            .await,
            vec![
                "(bread,\"2026-11-23 00:00:00\",1,0,0,250,0,0,1,0,0,1,250)",
                "(milk,\"2026-11-23 00:00:00\",4.5,0.5,1,581,65,129,2,1,1,3.0,387)",
            ]
        );
        assert_eq!(
            rows(
                &db,
                &format!(
                    "SELECT device_id, bucket AT TIME ZONE 'UTC', {SENSOR_VALUES} FROM sensor_stats_5m"
                )
            )
            .await,
            vec![
                "(freezer-1,\"2026-11-23 10:00:00\",2,-18,-10,-28,1,-14)",
                "(freezer-1,\"2026-11-23 10:05:00\",1,-20.5,-20.5,-20.5,0,-20.5)",
                "(hum-1,\"2026-11-23 10:05:00\",1,99,99,99,0,99)",
                "(power-1,\"2026-11-23 10:05:00\",1,0,0,0,1,0)",
            ]
        );
        assert_eq!(
            rows(
                &db,
                &format!(
                    "SELECT device_id, bucket AT TIME ZONE 'UTC', {SENSOR_VALUES} FROM sensor_stats_hourly"
                )
            )
            .await,
            vec![
                "(freezer-1,\"2026-11-23 10:00:00\",3,-20.5,-10,-48.5,1,-16.166666666666668)",
                "(hum-1,\"2026-11-23 10:00:00\",1,99,99,99,0,99)",
                "(power-1,\"2026-11-23 10:00:00\",1,0,0,0,1,0)",
            ]
        );
        assert_eq!(
            rows(
                &db,
                &format!(
                    "SELECT terminal_id, bucket AT TIME ZONE 'UTC', {UPTIME_VALUES},
                            substring(seen_minutes::text FROM 1 FOR 3),
                            substring(up_minutes::text FROM 1 FOR 3),
                            substring(up_minutes::text FROM 1439 FOR 2)
                     FROM pos_uptime_daily"
                )
            )
            .await,
            vec![
                "(pos-1,\"2026-11-23 00:00:00\",4,3,3,2,3,2,0.001388888888888889,110,100,01)",
                "(pos-1,\"2026-11-24 00:00:00\",1,0,0,1,1,0,0,100,000,00)",
            ]
        );
        rollups_equal_recount(&db.pool)
            .await
            .expect("equal to a recount");
    }
}
flavour_tests!(rollups_follow_their_documented_semantics, super::semantics);

/// A record reusing a stored id with another payload is recorded, not applied: the
/// rollups do not move, in a later batch or in the same batch as the original.
async fn conflicting_payload(flavour: Flavour) {
    let db = TestDb::start_flavour("rollconflict", flavour).await;
    let (mut w, codec) = writer(&db, "g");
    let t = at("2026-11-23T10:00:00Z");
    let sale = sale_tx(
        envelope("acme", "s-1", Uuid::from_u128(1), t),
        SaleKind::Sale,
        "EUR",
        &[("milk", 1000, 129)],
    );
    let reading = reading_of(envelope("acme", "s-1", Uuid::from_u128(1), t), 1, -18.0);
    let conflicting_sale = sale_tx(
        envelope("acme", "s-1", Uuid::from_u128(1), t),
        SaleKind::Sale,
        "EUR",
        &[("milk", 5000, 129)],
    );
    let conflicting_reading = reading_of(envelope("acme", "s-1", Uuid::from_u128(1), t), 1, 30.0);
    let mut retried = reading.clone();
    retried.envelope_mut().received_at += 5_000_000;
    let log = log_of(vec![
        sale,
        reading,
        conflicting_sale.clone(),    // same batch as the original
        conflicting_reading.clone(), // same batch as the original
        retried,                     // a later batch: a retry, no conflict
        conflicting_sale,            // a later batch
        conflicting_reading,         // a later batch
    ]);
    w.apply(&batch(&w, &codec, &log[..4])).await.expect("apply");
    db.refresh_aggregates().await;
    let all = "SELECT * FROM sales_hourly UNION ALL SELECT * FROM sales_daily";
    let sensors = "SELECT * FROM sensor_stats_5m UNION ALL SELECT * FROM sensor_stats_hourly";
    let (sales_before, sensors_before) = (rows(&db, all).await, rows(&db, sensors).await);
    assert_eq!(sales_before.len(), 2);
    assert!(
        sales_before.iter().all(|r| r.contains(",1,0,0,129,")),
        "{sales_before:?}"
    );
    assert_eq!(sensors_before.len(), 2);
    assert!(
        sensors_before
            .iter()
            .all(|r| r.contains(",1,-18,-18,-18,0,")),
        "{sensors_before:?}"
    );

    w.apply(&batch(&w, &codec, &log[4..])).await.expect("apply");
    db.refresh_aggregates().await;
    assert_eq!(rows(&db, all).await, sales_before);
    assert_eq!(rows(&db, sensors).await, sensors_before);
    assert_eq!(db.count("SELECT count(*) FROM event_id_conflicts").await, 4);
    rollups_equal_recount(&db.pool)
        .await
        .expect("equal to a recount");
}
flavour_tests!(
    a_conflicting_payload_under_a_stored_id_does_not_change_the_rollups,
    super::conflicting_payload
);

// ---- the property test -------------------------------------------------------------

const STORES: [(&str, &str); 4] = [
    ("acme", "s-1"),
    ("acme", "s-2"),
    ("beta", "s-1"),
    ("beta", "s-9"),
];
const SKUS: [&str; 4] = ["milk", "bread", "eggs", "cheese"];

/// An event of the workload before it is given an id.
#[derive(Debug, Clone)]
enum Spec {
    Sale {
        store: usize,
        kind: SaleKind,
        usd: bool,
        lines: Vec<(usize, i64, i64)>,
        secs: i64,
    },
    Reading {
        store: usize,
        device: usize,
        value: f64,
        secs: i64,
    },
    Heartbeat {
        store: usize,
        terminal: usize,
        app_up: bool,
        printer: PrinterStatus,
        network: NetworkStatus,
        secs: i64,
    },
    /// A snapshot (`quantity` >= 0) or a signed adjustment (`quantity` != 0), at one of
    /// a few times, so snapshots and adjustments often share one.
    Inventory {
        store: usize,
        sku: usize,
        snapshot: bool,
        milli: i64,
        slot: i64,
    },
    /// A transition of incident (alert `incident`, start `start`): at `delay` slots
    /// after its start, with one of two subjects (the first transition's stands).
    Alert {
        store: usize,
        incident: usize,
        start: i64,
        resolved: bool,
        severity: AlertSeverity,
        subject: usize,
        delay: i64,
        ended: bool,
    },
    /// A forecast issued at slot `issued` (6 h apart) for `means.len()` days from
    /// `first_day` days after the workload's first day.
    Forecast {
        store: usize,
        sku: usize,
        issued: i64,
        first_day: i32,
        means: Vec<u16>,
    },
    Outcome {
        store: usize,
        channel: usize,
        status: usize,
        attempts: i32,
    },
}

/// Something re-sent later: a retry (same payload) or a conflicting reuse of the id.
#[derive(Debug, Clone)]
struct Resend {
    of: usize,
    conflicting: bool,
    position: usize,
}

#[derive(Debug, Clone)]
struct Workload {
    events: Vec<Spec>,
    resends: Vec<Resend>,
    /// Batch sizes, how far the consumer rewinds after each (a crash before the
    /// Kafka commit, a rebalance): 0 mostly, sometimes the whole batch or more; and
    /// whether the aggregates are refreshed after it (TimescaleDB's refresh policy
    /// running between batches: later rows then land in materialized buckets).
    plan: Vec<(usize, usize, bool)>,
}

fn spec() -> impl Strategy<Value = Spec> {
    // Event times over ~50 hours from 22:00 UTC, so hours and days are crossed; the
    // log order is unrelated to them (out of order).
    let secs = 0i64..180_000;
    let kind = prop_oneof![
        6 => Just(SaleKind::Sale),
        2 => Just(SaleKind::Refund),
        1 => Just(SaleKind::Void),
    ];
    let line = (0..SKUS.len(), 1i64..5_000, 0i64..1_000);
    let sale = (
        0..STORES.len(),
        kind,
        proptest::bool::weighted(0.15),
        proptest::collection::vec(line, 1..4),
        secs.clone(),
    )
        .prop_map(|(store, kind, usd, lines, secs)| Spec::Sale {
            store,
            kind,
            usd,
            lines,
            secs,
        });
    let reading = (0..STORES.len(), 0..DEVICES.len(), -40.0f64..15.0, secs).prop_map(
        |(store, device, value, secs)| {
            let value = match DEVICES[device].1 {
                SensorKind::Door | SensorKind::Power => f64::from(u8::from(value > -12.0)),
                SensorKind::Humidity => value.abs() * 2.0,
                SensorKind::Temperature => value,
            };
            Spec::Reading {
                store,
                device,
                value,
                secs,
            }
        },
    );
    // Heartbeats around two midnights (23:45–00:15), so minutes repeat and days split.
    let hb_secs = (0i64..2, 0i64..1_800).prop_map(|(day, s)| 6_300 + day * 86_400 + s);
    let printer = prop_oneof![
        4 => Just(PrinterStatus::Ok),
        1 => Just(PrinterStatus::PaperLow),
        1 => Just(PrinterStatus::Offline),
    ];
    let network = prop_oneof![
        4 => Just(NetworkStatus::Online),
        1 => Just(NetworkStatus::Degraded),
        1 => Just(NetworkStatus::Offline),
    ];
    let heartbeat = (
        0..STORES.len(),
        0usize..3,
        proptest::bool::weighted(0.7),
        printer,
        network,
        hb_secs,
    )
        .prop_map(
            |(store, terminal, app_up, printer, network, secs)| Spec::Heartbeat {
                store,
                terminal,
                app_up,
                printer,
                network,
                secs,
            },
        );
    let inventory = (
        0..STORES.len(),
        0usize..2,
        proptest::bool::weighted(0.35),
        1i64..20_000,
        proptest::bool::ANY,
        0i64..10,
    )
        .prop_map(
            |(store, sku, snapshot, milli, negative, slot)| Spec::Inventory {
                store,
                sku,
                snapshot,
                milli: if !snapshot && negative { -milli } else { milli },
                slot,
            },
        );
    let severity = prop_oneof![
        Just(AlertSeverity::Info),
        Just(AlertSeverity::Warning),
        Just(AlertSeverity::Critical),
    ];
    let alert = (
        0..STORES.len(),
        0usize..3,
        0i64..2,
        proptest::bool::weighted(0.4),
        severity,
        0usize..2,
        0i64..5,
        proptest::bool::ANY,
    )
        .prop_map(
            |(store, incident, start, resolved, severity, subject, delay, ended)| Spec::Alert {
                store,
                incident,
                start,
                resolved,
                severity,
                subject,
                delay,
                ended,
            },
        );
    let forecast = (
        0..STORES.len(),
        0usize..2,
        0i64..5,
        0i32..4,
        proptest::collection::vec(0u16..500, 1..4),
    )
        .prop_map(|(store, sku, issued, first_day, means)| Spec::Forecast {
            store,
            sku,
            issued,
            first_day,
            means,
        });
    let outcome = (0..STORES.len(), 0usize..4, 0usize..3, 1i32..4).prop_map(
        |(store, channel, status, attempts)| Spec::Outcome {
            store,
            channel,
            status,
            attempts,
        },
    );
    prop_oneof![
        3 => sale,
        3 => reading,
        3 => heartbeat,
        2 => inventory,
        2 => alert,
        2 => forecast,
        1 => outcome,
    ]
}

fn workload() -> impl Strategy<Value = Workload> {
    let resend = (
        any::<usize>(),
        proptest::bool::weighted(0.4),
        any::<usize>(),
    )
        .prop_map(|(of, conflicting, position)| Resend {
            of,
            conflicting,
            position,
        });
    let rewind = prop_oneof![6 => Just(0usize), 1 => 1usize..6, 1 => Just(usize::MAX)];
    (
        proptest::collection::vec(spec(), 1..60),
        proptest::collection::vec(resend, 0..15),
        proptest::collection::vec((1usize..16, rewind, proptest::bool::weighted(0.3)), 1..12),
    )
        .prop_map(|(events, resends, plan)| Workload {
            events,
            resends,
            plan,
        })
}

/// The log a workload publishes: each event once (ids shared by pairs of events,
/// so the same id occurs in other stores and relations, and as conflicts in the same
/// store), plus the re-sends at their positions.
fn publish(w: &Workload) -> Vec<Logged> {
    let base = at("2026-11-22T22:00:00Z");
    let record = |i: usize, spec: &Spec| {
        let id = Uuid::from_u128((i / 2 + 1) as u128);
        match spec {
            Spec::Sale {
                store,
                kind,
                usd,
                lines,
                secs,
            } => {
                let (tenant, s) = STORES[*store];
                let lines: Vec<(&str, i64, i64)> = lines
                    .iter()
                    .map(|(sku, milli, price)| (SKUS[*sku], *milli, *price))
                    .collect();
                let currency = if *usd { "USD" } else { "EUR" };
                let env = envelope(tenant, s, id, base + secs * 1_000_000 + 123);
                sale_tx(env, *kind, currency, &lines)
            }
            Spec::Reading {
                store,
                device,
                value,
                secs,
            } => {
                let (tenant, s) = STORES[*store];
                reading_of(
                    envelope(tenant, s, id, base + secs * 1_000_000),
                    *device,
                    *value,
                )
            }
            Spec::Heartbeat {
                store,
                terminal,
                app_up,
                printer,
                network,
                secs,
            } => {
                let (tenant, s) = STORES[*store];
                heartbeat_of(
                    envelope(tenant, s, id, base + secs * 1_000_000 + 456),
                    ["pos-1", "pos-2", "pos-3"][*terminal],
                    *app_up,
                    *printer,
                    *network,
                )
            }
            Spec::Inventory {
                store,
                sku,
                snapshot,
                milli,
                slot,
            } => {
                let (tenant, s) = STORES[*store];
                Published::Inventory(InventoryChange {
                    envelope: envelope(tenant, s, id, base + slot * 900_000_000),
                    kind: if *snapshot {
                        InventoryChangeKind::Snapshot
                    } else {
                        InventoryChangeKind::Adjustment
                    },
                    sku: SKUS[*sku].into(),
                    quantity: *milli as f64 / 1000.0,
                    reason: (!snapshot).then_some(if *milli > 0 {
                        AdjustmentReason::Delivery
                    } else {
                        AdjustmentReason::Shrink
                    }),
                })
            }
            Spec::Alert {
                store,
                incident,
                start,
                resolved,
                severity,
                subject,
                delay,
                ended,
            } => {
                let (tenant, s) = STORES[*store];
                let started_at = base + start * 3_600_000_000;
                let occurred_at = started_at + delay * 600_000_000;
                Published::Alert(AlertTransition {
                    envelope: envelope(tenant, s, id, occurred_at),
                    alert_id: format!("alert-{incident}"),
                    rule_id: format!("rule-{incident}"),
                    state: if *resolved {
                        AlertState::Resolved
                    } else {
                        AlertState::Firing
                    },
                    severity: *severity,
                    subject: format!("device-{subject}"),
                    summary: format!("summary {i}"),
                    value: Some(*delay as f64),
                    started_at,
                    labels: [("zone".to_string(), format!("z{subject}"))].into(),
                    ended_at: (*resolved && *ended).then_some(started_at + delay * 300_000_000),
                    rule_kind: Some("threshold".into()),
                })
            }
            Spec::Forecast {
                store,
                sku,
                issued,
                first_day,
                means,
            } => {
                let (tenant, s) = STORES[*store];
                // Days from 2026-11-22 (the workload's first day).
                let first = (base / 86_400_000_000) as i32 + first_day;
                Published::Forecast(DemandForecast {
                    envelope: envelope(tenant, s, id, base + issued * 21_600_000_000),
                    sku: SKUS[*sku].into(),
                    method: format!("method-{issued}"),
                    interval_level: 0.8,
                    days: means
                        .iter()
                        .enumerate()
                        .map(|(d, m)| ForecastDay {
                            date: first + d as i32,
                            mean: f64::from(*m) / 10.0,
                            lower: f64::from(*m) / 20.0,
                            upper: f64::from(*m) / 5.0,
                            wide_lower: None,
                            wide_upper: None,
                        })
                        .collect(),
                    on_hand: None,
                    days_of_cover: None,
                    stock_out_probability: None,
                    wide_interval_level: None,
                    lead_time_days: None,
                    backtest: None,
                })
            }
            Spec::Outcome {
                store,
                channel,
                status,
                attempts,
            } => {
                let (tenant, s) = STORES[*store];
                Published::Outcome(NotificationOutcome {
                    envelope: envelope(tenant, s, id, base),
                    alert_id: "alert-0".into(),
                    alert_state: NotifiedState::Firing,
                    receiver: "manager".into(),
                    channel: Channel::ALL[*channel],
                    status: DeliveryStatus::ALL[*status],
                    attempts: *attempts,
                    error: None,
                })
            }
        }
    };
    let mut records: Vec<Published> = w
        .events
        .iter()
        .enumerate()
        .map(|(i, s)| record(i, s))
        .collect();
    for r in &w.resends {
        let mut again = records[r.of % w.events.len()].clone();
        again.envelope_mut().received_at += 7_000_000;
        if r.conflicting {
            match &mut again {
                Published::Sale(s) => {
                    s.lines[0].unit_price_minor += 1;
                    let amounts: Vec<(i64, i64)> = s
                        .lines
                        .iter()
                        .map(|l| ((l.quantity * 1000.0).round() as i64, l.unit_price_minor))
                        .collect();
                    s.total_minor =
                        storepulse_runtime::contract::total_minor(&amounts).expect("fits");
                }
                // Another valid value of the same kind.
                Published::Reading(r) => match r.kind {
                    SensorKind::Door | SensorKind::Power => r.value = 1.0 - r.value,
                    SensorKind::Humidity => r.value = 100.0 - r.value,
                    SensorKind::Temperature => r.value += 1.0,
                },
                Published::Heartbeat(h) => h.app_up = !h.app_up,
                Published::Inventory(c) => match c.kind {
                    InventoryChangeKind::Snapshot => c.quantity += 1.0,
                    InventoryChangeKind::Adjustment => c.quantity *= 2.0,
                },
                Published::Alert(a) => a.summary.push_str(" (again)"),
                Published::Forecast(f) => {
                    f.days[0].mean += 1.0;
                    f.days[0].upper = f.days[0].upper.max(f.days[0].mean);
                }
                Published::Outcome(o) => o.attempts += 1,
            }
        }
        let at = r.position % (records.len() + 1);
        records.insert(at, again);
    }
    log_of(records)
}

async fn run_case(db: &TestDb, w: &Workload) -> Result<(), TestCaseError> {
    let rollups = match db.flavour {
        Flavour::Plain => {
            ", sales_hourly, sales_daily, sensor_stats_5m, sensor_stats_hourly, pos_uptime_daily"
        }
        Flavour::TimescaleDb => "",
    };
    db.pool
        .get()
        .await
        .expect("client")
        .batch_execute(&format!(
            "TRUNCATE event_keys, sales, sale_lines, sensor_readings, pos_heartbeats,
                      event_id_conflicts, consumer_offsets, inventory_changes,
                      alert_transitions, demand_forecasts, demand_forecast_days,
                      notification_outcomes, device_last_seen, stock_on_hand, alert_history,
                      forecast_daily{rollups}"
        ))
        .await
        .expect("truncate");
    // TimescaleDB: the truncation invalidated the materialized buckets; empty them.
    db.refresh_aggregates().await;
    let (mut writer, codec) = writer(db, "g");
    let log = publish(w);
    let (mut cursor, mut rewinds, mut step) = (0usize, 0, 0usize);
    while cursor < log.len() {
        let (len, rewind, refresh) = w.plan[step % w.plan.len()];
        step += 1;
        let end = (cursor + len).min(log.len());
        writer
            .apply(&batch(&writer, &codec, &log[cursor..end]))
            .await
            .map_err(|e| TestCaseError::fail(format!("apply: {e}")))?;
        if refresh {
            db.refresh_aggregates().await;
        }
        // Re-read from an earlier position: the same batch again (usize::MAX), or
        // from a few records back, overlapping what was applied.
        let back = if rewind == usize::MAX {
            end - cursor
        } else {
            rewind
        };
        cursor = end;
        if back > 0 && rewinds < 4 {
            rewinds += 1;
            cursor = cursor.saturating_sub(back);
        }
    }
    // TimescaleDB: what the refresh policy does within a minute.
    db.refresh_aggregates().await;
    rollups_equal_recount(&db.pool)
        .await
        .map_err(TestCaseError::fail)?;
    // The workload did reach the rollups.
    let counted = db
        .count(
            "SELECT (SELECT coalesce(sum(readings), 0) FROM sensor_stats_hourly)::bigint
                  + (SELECT coalesce(sum(heartbeats), 0) FROM pos_uptime_daily)::bigint
                  + (SELECT count(*) FROM sale_lines)
                  + (SELECT coalesce(sum(changes), 0) FROM stock_on_hand)::bigint
                  + (SELECT coalesce(sum(transitions), 0) FROM alert_history)::bigint",
        )
        .await;
    let stored = db
        .count(
            "SELECT (SELECT count(*) FROM sensor_readings) + (SELECT count(*) FROM pos_heartbeats)
                  + (SELECT count(*) FROM sale_lines) + (SELECT count(*) FROM inventory_changes)
                  + (SELECT count(*) FROM alert_transitions)",
        )
        .await;
    prop_assert_eq!(counted, stored);
    // Forecasts and notification outcomes have no raw table counted here: a workload
    // of only those stores none of these rows.
    let countable = w
        .events
        .iter()
        .any(|e| !matches!(e, Spec::Forecast { .. } | Spec::Outcome { .. }));
    prop_assert_eq!(stored > 0, countable);
    Ok(())
}

/// Random workloads: every rollup and current-state relation equals a recount from the
/// raw tables, on both flavours.
mod every_rollup_equals_a_recount_of_the_raw_tables {
    use super::*;

    #[test]
    fn plain() {
        recount_property(Flavour::Plain);
    }

    #[test]
    fn timescaledb() {
        if flavour_runs_here(Flavour::TimescaleDb) {
            recount_property(Flavour::TimescaleDb);
        }
    }
}

fn recount_property(flavour: Flavour) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let db = rt.block_on(TestDb::start_flavour("rollprop", flavour));
    let cases: u32 = std::env::var("ROLLUP_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let started = std::time::Instant::now();
    let result = runner.run(&workload(), |w| rt.block_on(run_case(&db, &w)));
    eprintln!("{flavour}: {cases} workloads in {:?}", started.elapsed());
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// `n` events like the simulator's (60% sensor readings, 25% heartbeats, 15% two-line
/// sales, refunds and voids; 30 stores; over 2 hours).
fn mixed(n: usize) -> Vec<Published> {
    let base = at("2026-11-23T08:00:00Z");
    (0..n)
        .map(|i| {
            let store = format!("store-{:03}", i % 30);
            let env = envelope(
                "acme",
                &store,
                Uuid::from_u128(i as u128 + 1),
                base + (i as i64 * 7_200_000_000 / n as i64),
            );
            let lines = [(SKUS[i % 4], 1000, 129), (SKUS[(i + 1) % 4], 2500, 99)];
            match i % 20 {
                0..12 => reading_of(env, i % 4, -18.0 + (i % 7) as f64 * 0.37),
                12..17 => heartbeat_of(
                    env,
                    ["pos-1", "pos-2", "pos-3"][i % 3],
                    i % 11 != 0,
                    PrinterStatus::Ok,
                    NetworkStatus::Online,
                ),
                17 => sale_tx(env, SaleKind::Sale, "EUR", &lines),
                18 => sale_tx(env, SaleKind::Refund, "EUR", &lines[..1]),
                _ => sale_tx(env, SaleKind::Void, "EUR", &lines[1..]),
            }
        })
        .collect()
}

/// Upgrading a read store that holds raw rows, as the release before the rollups
/// (migration 3) left it: the migrations backfill the rollups (equal to a recount) and
/// the key ledger, and the compactor carries on, a re-delivered event still stored once.
async fn upgrade(flavour: Flavour) {
    let db = TestDb::start_flavour("rollupgrade", flavour).await;
    let (mut w, codec) = writer(&db, "g");
    let log = log_of(mixed(1_200));
    w.apply(&batch(&w, &codec, &log[..1_000]))
        .await
        .expect("apply");
    // The same raw rows in a read store at migration 3 (before rollups and ledger).
    let old = TestDb::on_cluster(&db, "rollupgrade_old", Some(3)).await;
    let raw = [
        "sales",
        "sale_lines",
        "sensor_readings",
        "pos_heartbeats",
        "inventory_changes",
    ];
    for table in raw {
        copy_rows(&db.pool, &old.pool, table).await;
    }
    assert_eq!(
        old.count("SELECT count(*) FROM sensor_readings").await,
        db.count("SELECT count(*) FROM sensor_readings").await
    );
    let applied = storepulse_runtime::db::migrate(&old.pool)
        .await
        .expect("upgrade");
    assert_eq!(
        applied,
        storepulse_runtime::db::MIGRATIONS
            .iter()
            .map(|m| m.version)
            .filter(|v| *v > 3)
            .collect::<Vec<_>>()
    );
    for rollup in ["sales_daily", "sensor_stats_hourly", "pos_uptime_daily"] {
        assert!(old.count(&format!("SELECT count(*) FROM {rollup}")).await > 0);
    }
    rollups_equal_recount(&old.pool)
        .await
        .expect("backfilled rollups equal a recount");
    assert_eq!(
        old.count("SELECT count(*) FROM event_keys").await,
        old.count(
            "SELECT (SELECT count(*) FROM sales) + (SELECT count(*) FROM sensor_readings)
                  + (SELECT count(*) FROM pos_heartbeats)"
        )
        .await
    );
    // A writer carries on; the first 100 records are delivered again (no stored
    // offsets here): the key ledger keeps them out.
    let (mut w, codec) = writer_on(&old.pool, "g");
    w.apply(&batch(&w, &codec, &log[900..]))
        .await
        .expect("apply");
    support::refresh_aggregates(&old.pool, flavour).await;
    assert_eq!(
        old.count("SELECT count(*) FROM sensor_readings").await,
        db.count("SELECT count(*) FROM sensor_readings").await
            + log[1_000..]
                .iter()
                .filter(|l| l.topic == topic::SENSOR_READINGS)
                .count() as i64
    );
    assert_eq!(
        old.count("SELECT sum(readings)::bigint FROM sensor_stats_5m")
            .await,
        old.count("SELECT count(*) FROM sensor_readings").await
    );
    rollups_equal_recount(&old.pool)
        .await
        .expect("rollups equal a recount");
}
flavour_tests!(
    upgrading_backfills_the_rollups_from_stored_rows,
    super::upgrade
);

/// Copies `table`'s rows from one read store to another, by column name (columns the
/// target lacks are left out).
async fn copy_rows(from: &deadpool_postgres::Pool, to: &deadpool_postgres::Pool, table: &str) {
    let rows: serde_json::Value = from
        .get()
        .await
        .expect("client")
        .query_one(
            &format!("SELECT coalesce(json_agg(t), '[]') FROM {table} t"),
            &[],
        )
        .await
        .expect("read rows")
        .get(0);
    to.get()
        .await
        .expect("client")
        .execute(
            &format!(
                "INSERT INTO {table} SELECT * FROM json_populate_recordset(NULL::{table}, $1)"
            ),
            &[&rows],
        )
        .await
        .expect("copy rows");
}

/// Views over relations the flavour migrations replace (raw tables become partitioned
/// tables or hypertables, rollup tables become continuous aggregates on TimescaleDB)
/// are put back over the new relations, with their options and comments, and read them.
async fn views_survive(flavour: Flavour) {
    let db = TestDb::start_flavour("rollviews", flavour).await;
    let old = TestDb::on_cluster(&db, "rollviews_old", Some(8)).await;
    old.pool
        .get()
        .await
        .expect("client")
        .batch_execute(
            "CREATE VIEW units_by_day WITH (security_invoker = true) AS
                 SELECT tenant_id, store_id, bucket, sum(units) AS units
                 FROM sales_daily GROUP BY 1, 2, 3;
             COMMENT ON VIEW units_by_day IS 'net units per store and day';
             CREATE VIEW all_units AS SELECT sum(units) AS units FROM units_by_day;
             CREATE VIEW readings_per_tenant AS
                 SELECT tenant_id, count(*) AS readings FROM sensor_readings GROUP BY 1;",
        )
        .await
        .expect("views");
    storepulse_runtime::db::migrate(&old.pool)
        .await
        .expect("upgrade");
    assert_eq!(
        old.count(
            "SELECT count(*) FROM pg_class
             WHERE relname = 'units_by_day' AND 'security_invoker=true' = ANY (reloptions)
               AND obj_description(oid, 'pg_class') = 'net units per store and day'"
        )
        .await,
        1
    );
    let (mut w, codec) = writer_on(&old.pool, "g");
    let log = log_of(mixed(400));
    w.apply(&batch(&w, &codec, &log)).await.expect("apply");
    support::refresh_aggregates(&old.pool, flavour).await;
    assert_eq!(
        old.count("SELECT (sum(units) * 1000)::bigint FROM units_by_day")
            .await,
        old.count(
            "SELECT (sum(CASE s.kind WHEN 'sale' THEN l.quantity ELSE -l.quantity END)::numeric * 1000)::bigint
             FROM sale_lines l JOIN sales s USING (tenant_id, store_id, event_id)"
        )
        .await
    );
    assert_eq!(
        old.count("SELECT (units * 1000)::bigint FROM all_units")
            .await,
        old.count("SELECT (sum(units) * 1000)::bigint FROM sales_daily")
            .await
    );
    assert_eq!(
        old.count("SELECT sum(readings)::bigint FROM readings_per_tenant")
            .await,
        old.count("SELECT count(*) FROM sensor_readings").await
    );
}
flavour_tests!(
    views_over_replaced_relations_survive_the_migrations,
    super::views_survive
);

/// TimescaleDB's refresh policy (run as its scheduler would) materializes closed
/// buckets; a late reading in a materialized bucket shows once the policy ran again,
/// while a reading in a bucket above the watermark shows at once (real-time
/// aggregation). On plain PostgreSQL every step is exact at once.
async fn refresh_policy(flavour: Flavour) {
    let db = TestDb::start_flavour("rollpolicy", flavour).await;
    let (mut w, codec) = writer(&db, "g");
    let now = Utc::now().timestamp_micros();
    let hour = 3_600_000_000i64;
    let env = |n: u128, at: i64| envelope("acme", "s-1", Uuid::from_u128(n), at);
    let first = log_of(vec![
        reading_of(env(1, now - 3 * hour), 1, -18.0),
        reading_of(env(2, now - 3 * hour + 1), 1, -17.0),
    ]);
    w.apply(&batch(&w, &codec, &first)).await.expect("apply");
    let materialized = || async {
        if flavour == Flavour::Plain {
            return 0;
        }
        let (schema, table): (String, String) = {
            let client = db.pool.get().await.expect("client");
            let row = client
                .query_one(
                    "SELECT materialization_hypertable_schema, materialization_hypertable_name
                     FROM timescaledb_information.continuous_aggregates
                     WHERE view_name = 'sensor_stats_hourly'",
                    &[],
                )
                .await
                .expect("cagg");
            (row.get(0), row.get(1))
        };
        db.count(&format!("SELECT count(*) FROM \"{schema}\".\"{table}\""))
            .await
    };
    assert_eq!(materialized().await, 0, "nothing materialized yet");
    rollups_equal_recount(&db.pool)
        .await
        .expect("real time: equal to a recount");
    let ran = db.run_jobs("policy_refresh_continuous_aggregate").await;
    if flavour == Flavour::TimescaleDb {
        assert_eq!(ran, 5);
        assert_eq!(materialized().await, 1, "the closed hour is materialized");
    }
    rollups_equal_recount(&db.pool)
        .await
        .expect("materialized: equal to a recount");

    // A late reading in the materialized hour, and one in the current hour.
    let later = log_of(vec![
        reading_of(env(3, now - 3 * hour + 2), 1, -10.0),
        reading_of(env(4, now), 1, -16.0),
    ]);
    let mut later = batch(&w, &codec, &later);
    for item in &mut later.items {
        item.offset += 2;
    }
    later.next_offsets.values_mut().for_each(|n| *n += 2);
    w.apply(&later).await.expect("apply");
    let readings_of = |hours_ago: i64| {
        let db = &db;
        async move {
            db.count(&format!(
                "SELECT coalesce(sum(readings), 0)::bigint FROM sensor_stats_hourly
                 WHERE bucket = date_trunc('hour', to_timestamp({}::float8 / 1e6), 'UTC')",
                now - hours_ago * hour
            ))
            .await
        }
    };
    assert_eq!(readings_of(0).await, 1, "the current hour is real-time");
    let stale = match flavour {
        Flavour::TimescaleDb => 2,
        Flavour::Plain => 3,
    };
    assert_eq!(
        readings_of(3).await,
        stale,
        "a materialized bucket waits for the refresh policy"
    );
    db.run_jobs("policy_refresh_continuous_aggregate").await;
    assert_eq!(readings_of(3).await, 3);
    rollups_equal_recount(&db.pool)
        .await
        .expect("after the policy: equal to a recount");
}
flavour_tests!(
    the_refresh_policy_brings_late_rows_into_materialized_buckets,
    super::refresh_policy
);
