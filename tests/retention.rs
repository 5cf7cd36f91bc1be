//! Retention and archiving on both read-store flavours: the compactor's maintenance
//! task (plain: drops and archives partitions; TimescaleDB: sets the retention
//! policies, which the test runs as the job scheduler would, and archives) removes
//! exactly the rows of partitions lying wholly before the cutoff, archives what it
//! should, prunes the key ledger only where rows are gone, and touches nothing else.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use storepulse_compactor::maintenance;
use storepulse_compactor::retention::{RetentionRule, default_retention};
use storepulse_compactor::writer::{RawEvent, ReadStoreWriter};
use storepulse_runtime::AvroCodec;
use storepulse_runtime::consumer::{Batch, BatchProcessor, ConsumedRecord, Failure, Positioned};
use storepulse_runtime::db::Flavour;
use storepulse_runtime::records::*;
use support::{TestDb, eventually};
use uuid::Uuid;

const DAY: i64 = 86_400;

fn envelope(n: u128, at: DateTime<Utc>) -> Envelope {
    Envelope {
        event_id: Uuid::from_u128(n).to_string(),
        tenant_id: "acme".into(),
        store_id: "s-1".into(),
        occurred_at: at.timestamp_micros(),
        received_at: Utc::now().timestamp_micros(),
        source: "test".into(),
    }
}

enum Event {
    Reading(SensorReading),
    Heartbeat(PosHeartbeat),
    Inventory(InventoryChange),
    Sale(SaleTransaction),
}

fn reading(n: u128, at: DateTime<Utc>) -> Event {
    Event::Reading(SensorReading {
        envelope: envelope(n, at),
        device_id: "freezer-1".into(),
        kind: SensorKind::Temperature,
        value: -18.0,
        unit: SensorUnit::Celsius,
        appliance: Some("freezer".into()),
    })
}

fn heartbeat(n: u128, at: DateTime<Utc>) -> Event {
    Event::Heartbeat(PosHeartbeat {
        envelope: envelope(n, at),
        terminal_id: "pos-1".into(),
        app_up: true,
        printer: PrinterStatus::Ok,
        network: NetworkStatus::Online,
        software_version: None,
    })
}

fn inventory(n: u128, at: DateTime<Utc>) -> Event {
    Event::Inventory(InventoryChange {
        envelope: envelope(n, at),
        kind: InventoryChangeKind::Snapshot,
        sku: "milk".into(),
        quantity: 12.0,
        reason: None,
    })
}

fn sale(n: u128, at: DateTime<Utc>) -> Event {
    Event::Sale(SaleTransaction {
        envelope: envelope(n, at),
        kind: SaleKind::Sale,
        transaction_id: format!("t-{n}"),
        terminal_id: "pos-1".into(),
        currency: "EUR".into(),
        lines: vec![LineItem {
            sku: "milk".into(),
            quantity: 1.0,
            unit_price_minor: 129,
        }],
        total_minor: 129,
        original_transaction_id: None,
    })
}

/// The events as one batch, in log order on `partition` of their topics (from
/// offset 0: one batch per partition).
fn batch(
    writer: &ReadStoreWriter,
    codec: &AvroCodec,
    partition: i32,
    events: &[Event],
) -> Batch<RawEvent> {
    let mut b = Batch {
        items: Vec::new(),
        next_offsets: BTreeMap::new(),
    };
    for e in events {
        let (topic, payload) = match e {
            Event::Reading(r) => (topic::SENSOR_READINGS, codec.encode(r)),
            Event::Heartbeat(h) => (topic::DEVICE, codec.encode(h)),
            Event::Inventory(i) => (topic::INVENTORY, codec.encode(i)),
            Event::Sale(s) => (topic::SALES, codec.encode(s)),
        };
        let next = b
            .next_offsets
            .entry((topic.to_string(), partition))
            .or_insert(0);
        let offset = *next;
        *next += 1;
        let rec = ConsumedRecord {
            topic: topic.into(),
            partition,
            offset,
            key: None,
            payload: payload.expect("encode"),
        };
        b.items.push(Positioned {
            topic: topic.into(),
            partition,
            offset,
            item: writer.decode(&rec).expect("decode"),
        });
    }
    b
}

/// Applies `b` as the consumer loop does: a transient failure is retried.
async fn apply(writer: &mut ReadStoreWriter, b: &Batch<RawEvent>) {
    let mut attempts = 0;
    loop {
        match writer.apply(b).await {
            Ok(()) => return,
            Err(e) if attempts < 3 && writer.classify(&e) == Failure::Transient => attempts += 1,
            Err(e) => panic!("apply: {e}"),
        }
    }
}

/// Ids (the u128 of the test) in `sql`'s first column.
async fn ids(db: &TestDb, sql: &str) -> BTreeSet<u128> {
    db.pool
        .get()
        .await
        .expect("client")
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| r.get::<_, Uuid>(0).as_u128())
        .collect()
}

async fn days_ago(db: &TestDb, sql: &str, now: DateTime<Utc>) -> BTreeSet<i64> {
    db.pool
        .get()
        .await
        .expect("client")
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| (now - r.get::<_, DateTime<Utc>>(0)).num_days())
        .collect()
}

async fn retention(flavour: Flavour) {
    // The cutoff of the 30-day sensor retention must not cross a UTC midnight while
    // the test runs (its partitions are days): wait out the last minutes before one.
    eventually(
        "the 30-day cutoff to be clear of a day boundary",
        Duration::from_secs(300),
        || async {
            let cutoff = Utc::now() - TimeDelta::days(30);
            let into_day = cutoff - cutoff.duration_trunc(TimeDelta::days(1)).expect("trunc");
            (into_day < TimeDelta::days(1) - TimeDelta::minutes(3)).then_some(())
        },
    )
    .await;
    let now = Utc::now();
    let day0 = (now - TimeDelta::days(30))
        .duration_trunc(TimeDelta::days(1))
        .expect("trunc");
    let hour = TimeDelta::hours(1);

    let db = TestDb::start_flavour("retention", flavour).await;
    let codec = AvroCodec::new();
    let mut writer = ReadStoreWriter::new(
        db.pool.clone(),
        codec.clone(),
        "g".into(),
        &prometheus::Registry::new(),
    )
    .expect("writer");
    let events = vec![
        // Sensor readings (30 days): the day wholly before the cutoff's goes; the
        // cutoff's own day stays whole, though part of it is older than 30 days.
        reading(1, day0 - TimeDelta::days(1) + hour),
        reading(2, day0 - TimeDelta::seconds(1)),
        reading(3, day0 + hour),
        reading(4, now - TimeDelta::days(1)),
        // Heartbeats are kept for good, however old.
        heartbeat(10, day0 - TimeDelta::days(1) + hour),
        // Inventory (archived after 60 days, in this test): a 7-day partition.
        inventory(20, now - TimeDelta::days(100)),
        inventory(21, now - TimeDelta::days(10)),
        // Sales are kept; their daily and hourly buckets for 2 years.
        sale(30, now - TimeDelta::days(900)),
        sale(31, now - TimeDelta::days(600)),
        sale(32, now - TimeDelta::days(1)),
    ];
    let b = batch(&writer, &codec, 0, &events);
    apply(&mut writer, &b).await;
    db.refresh_aggregates().await;

    let mut rules = default_retention();
    rules.insert(
        "inventory_changes".into(),
        RetentionRule::ArchiveAfter(Duration::from_secs(60 * DAY as u64)),
    );
    let first = maintenance::run_once(&db.pool, &rules)
        .await
        .expect("maintenance");
    assert!(first.ran);
    match flavour {
        Flavour::Plain => {
            assert_eq!(first.partitions_removed.get("sensor_readings"), Some(&1));
            // Partitions for the coming week exist.
            assert_eq!(
                db.count(
                    "SELECT count(*) FROM raw_partitions WHERE relation = 'sensor_readings'
                       AND range_start > now() + interval '5 days'"
                )
                .await,
                2
            );
        }
        Flavour::TimescaleDb => {
            // The policies are set: raw sensor readings after 30 days, the five
            // aggregates after 730; nothing else.
            let policies = db
                .pool
                .get()
                .await
                .expect("client")
                .query(
                    "SELECT hypertable_name,
                            extract(epoch FROM (config->>'drop_after')::interval)::bigint / 86400
                     FROM timescaledb_information.jobs
                     WHERE proc_name = 'policy_retention' ORDER BY 1",
                    &[],
                )
                .await
                .expect("jobs")
                .iter()
                .map(|r| format!("{} {}d", r.get::<_, String>(0), r.get::<_, i64>(1)))
                .collect::<Vec<_>>();
            assert_eq!(
                policies,
                [
                    "pos_uptime_daily",
                    "sales_daily",
                    "sales_hourly",
                    "sensor_readings",
                    "sensor_stats_5m",
                    "sensor_stats_hourly",
                ]
                .iter()
                .map(|r| {
                    let after = if *r == "sensor_readings" {
                        "30d"
                    } else {
                        "730d"
                    };
                    format!("{r} {after}")
                })
                .collect::<Vec<_>>()
            );
            // What the scheduler does with them.
            assert_eq!(db.run_jobs("policy_retention").await, 6);
        }
    }
    assert_eq!(first.partitions_removed.get("inventory_changes"), Some(&1));
    assert_eq!(first.rows_archived.get("inventory_changes"), Some(&1));
    // The next run prunes the keys of rows the policies removed and changes nothing
    // else.
    let second = maintenance::run_once(&db.pool, &rules)
        .await
        .expect("maintenance");
    assert_eq!(second.policies_changed, 0);
    assert!(second.partitions_removed.is_empty(), "{second:?}");

    let expect = |ids: &[u128]| ids.iter().copied().collect::<BTreeSet<u128>>();
    assert_eq!(
        ids(&db, "SELECT event_id FROM sensor_readings").await,
        expect(&[3, 4])
    );
    assert_eq!(
        ids(
            &db,
            "SELECT event_id FROM event_keys WHERE relation = 'sensor_readings'"
        )
        .await,
        expect(&[3, 4])
    );
    assert_eq!(
        ids(&db, "SELECT event_id FROM pos_heartbeats").await,
        expect(&[10])
    );
    assert_eq!(
        ids(&db, "SELECT event_id FROM inventory_changes").await,
        expect(&[21])
    );
    assert_eq!(
        ids(
            &db,
            "SELECT event_id FROM storepulse_archive.inventory_changes"
        )
        .await,
        expect(&[20])
    );
    assert_eq!(
        ids(
            &db,
            "SELECT event_id FROM event_keys WHERE relation = 'inventory_changes'"
        )
        .await,
        expect(&[21])
    );
    assert_eq!(
        ids(&db, "SELECT event_id FROM sales").await,
        expect(&[30, 31, 32])
    );
    assert_eq!(
        ids(&db, "SELECT event_id FROM sale_lines").await,
        expect(&[30, 31, 32])
    );
    assert_eq!(
        ids(
            &db,
            "SELECT event_id FROM event_keys WHERE relation = 'sales'"
        )
        .await,
        expect(&[30, 31, 32])
    );
    // Aggregates: the 900-day-old buckets are gone, the 600-day-old ones stay; the
    // sensor buckets outlive their raw rows.
    for agg in ["sales_daily", "sales_hourly"] {
        let ages = days_ago(&db, &format!("SELECT bucket FROM {agg}"), now).await;
        assert_eq!(ages.len(), 2, "{agg}: {ages:?}");
        assert!(ages.iter().all(|a| *a < 730), "{agg}: {ages:?}");
    }
    assert_eq!(
        db.count("SELECT sum(readings)::bigint FROM sensor_stats_hourly")
            .await,
        4
    );

    // A late reading for the removed day is stored again (its partition comes back)
    // and removed by the next retention run, key and all.
    let late = batch(
        &writer,
        &codec,
        1,
        &[reading(5, day0 - TimeDelta::days(1) + hour * 2)],
    );
    apply(&mut writer, &late).await;
    assert_eq!(
        ids(&db, "SELECT event_id FROM sensor_readings").await,
        expect(&[3, 4, 5])
    );
    maintenance::run_once(&db.pool, &rules)
        .await
        .expect("maintenance");
    db.run_jobs("policy_retention").await;
    maintenance::run_once(&db.pool, &rules)
        .await
        .expect("maintenance");
    assert_eq!(
        ids(&db, "SELECT event_id FROM sensor_readings").await,
        expect(&[3, 4])
    );
    assert_eq!(
        ids(
            &db,
            "SELECT event_id FROM event_keys WHERE relation = 'sensor_readings'"
        )
        .await,
        expect(&[3, 4])
    );
}
flavour_tests!(retention_removes_exactly_what_it_should, super::retention);
