//! `storepulse rebuild` against a real broker and Postgres: a read store rebuilt
//! from the topics equals the live one, relation by relation.

mod support;

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use storepulse_runtime::AvroCodec;
use storepulse_runtime::db::Flavour;
use storepulse_runtime::records::*;
use support::{TestStack, eventually, start_compactor};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Relations compared, with the columns that differ by construction left out.
const RELATIONS: [(&str, &str); 21] = [
    ("sales", "t"),
    ("sale_lines", "t"),
    ("inventory_changes", "t"),
    ("pos_heartbeats", "t"),
    ("sensor_readings", "t"),
    ("rejected_events", "t"),
    ("alert_transitions", "t"),
    ("demand_forecasts", "t"),
    ("demand_forecast_days", "t"),
    ("notification_outcomes", "t"),
    (
        "event_id_conflicts",
        "(t.topic, t.partition, t.\"offset\", t.event_id, t.conflicting_hash)",
    ),
    ("sales_hourly", "t"),
    ("sales_daily", "t"),
    ("sensor_stats_5m", "t"),
    ("sensor_stats_hourly", "t"),
    ("pos_uptime_daily", "t"),
    ("device_last_seen", "t"),
    ("stock_on_hand", "t"),
    ("alert_history", "t"),
    ("forecast_daily", "t"),
    (
        "forecast_vs_actual",
        "(t.tenant_id, t.store_id, t.sku, t.day, t.forecast_units, t.actual_units, t.error)",
    ),
];

async fn send<T: Record>(
    producer: &FutureProducer,
    stack: &TestStack,
    codec: &AvroCodec,
    record: &T,
) {
    producer
        .send(
            FutureRecord::to(&stack.kafka.topic(T::TOPIC))
                .key(&record.envelope().partition_key())
                .payload(&codec.encode(record).expect("encode")),
            Duration::from_secs(5),
        )
        .await
        .expect("produce");
}

/// Alert transitions (an incident firing then resolving, one still firing, a
/// conflicting reuse of an id), a forecast and notification outcomes of store `i`.
async fn alerts_forecasts_outcomes(
    producer: &FutureProducer,
    stack: &TestStack,
    codec: &AvroCodec,
    i: i64,
    now: i64,
) -> i64 {
    let envelope = |n: i64, occurred_at: i64| Envelope {
        event_id: Uuid::from_u128(1_000_000 + (i * 100 + n) as u128).to_string(),
        tenant_id: "acme".into(),
        store_id: format!("s-{i}"),
        occurred_at,
        received_at: now,
        source: "test".into(),
    };
    let started = now - 3_600_000_000;
    let alert = |n: i64, state: AlertState, occurred_at: i64, summary: &str| AlertTransition {
        envelope: envelope(n, occurred_at),
        alert_id: format!("freezer-warm/s-{i}/freezer-1"),
        rule_id: "freezer-warm".into(),
        state,
        severity: AlertSeverity::Critical,
        subject: "freezer-1".into(),
        summary: summary.into(),
        value: Some(-11.0),
        started_at: started,
        labels: [("appliance", "freezer"), ("zone", "back"), ("team", "ops")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ended_at: (state == AlertState::Resolved).then_some(occurred_at - 60_000_000),
        rule_kind: Some("threshold".into()),
    };
    send(
        producer,
        stack,
        codec,
        &alert(1, AlertState::Firing, started + 600_000_000, "warm"),
    )
    .await;
    send(
        producer,
        stack,
        codec,
        &alert(1, AlertState::Firing, started + 600_000_000, "other"),
    )
    .await;
    let mut sent = 2;
    if i % 2 == 0 {
        send(
            producer,
            stack,
            codec,
            &alert(2, AlertState::Resolved, now, "cool again"),
        )
        .await;
        sent += 1;
    }
    let today = (now / 86_400_000_000) as i32;
    send(
        producer,
        stack,
        codec,
        &DemandForecast {
            envelope: envelope(3, now),
            sku: "milk".into(),
            method: "croston-sba".into(),
            interval_level: 0.8,
            days: (1..=14)
                .map(|d| ForecastDay {
                    date: today + d,
                    mean: 2.0 + d as f64,
                    lower: 1.0,
                    upper: 9.0 + d as f64,
                    wide_lower: None,
                    wide_upper: None,
                })
                .collect(),
            on_hand: Some(12.0),
            days_of_cover: Some(2.5),
            stock_out_probability: Some(0.4),
            wide_interval_level: None,
            lead_time_days: None,
            backtest: None,
        },
    )
    .await;
    for (n, snapshot, quantity) in [(5, true, 30.0), (6, false, -4.5), (7, false, 12.0)] {
        send(
            producer,
            stack,
            codec,
            &InventoryChange {
                envelope: envelope(n, now - (8 - n) * 600_000_000),
                kind: if snapshot {
                    InventoryChangeKind::Snapshot
                } else {
                    InventoryChangeKind::Adjustment
                },
                sku: "milk".into(),
                quantity,
                reason: (!snapshot).then_some(AdjustmentReason::CountCorrection),
            },
        )
        .await;
    }
    send(
        producer,
        stack,
        codec,
        &PosHeartbeat {
            envelope: envelope(8, now),
            terminal_id: "pos-1".into(),
            app_up: true,
            printer: PrinterStatus::PaperLow,
            network: NetworkStatus::Online,
            software_version: None,
        },
    )
    .await;
    send(
        producer,
        stack,
        codec,
        &NotificationOutcome {
            envelope: envelope(4, now),
            alert_id: format!("freezer-warm/s-{i}/freezer-1"),
            alert_state: NotifiedState::Firing,
            receiver: "manager".into(),
            channel: Channel::WhatsApp,
            status: DeliveryStatus::Delivered,
            attempts: 1,
            error: None,
        },
    )
    .await;
    sent + 6
}

async fn fingerprint(
    pool: &deadpool_postgres::Pool,
    relation: &str,
    columns: &str,
) -> (i64, String) {
    let client = pool.get().await.expect("client");
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), coalesce(md5(string_agg({columns}::text, '|' ORDER BY {columns}::text)), '')
                 FROM {relation} t"
            ),
            &[],
        )
        .await
        .expect(relation);
    (row.get(0), row.get(1))
}

async fn rebuild_equals_live(flavour: Flavour) {
    let stack = TestStack::start_flavour("rebuild", flavour).await;
    let producer: FutureProducer = storepulse_runtime::kafka::client_config(&stack.kafka, "c")
        .create()
        .expect("producer");
    let codec = AvroCodec::new();
    let now = chrono::Utc::now().timestamp_micros();
    let mut sent = 0;
    for i in 0..400i64 {
        let store = format!("s-{}", i % 7);
        let reading = SensorReading {
            envelope: Envelope {
                // Every tenth reading reuses the id of the same store's reading
                // seven earlier, with another payload: a conflict.
                event_id: Uuid::from_u128(if i % 10 == 9 {
                    i as u128 - 6
                } else {
                    i as u128 + 1
                })
                .to_string(),
                tenant_id: "acme".into(),
                store_id: store.clone(),
                occurred_at: now - i * 60_000_000,
                received_at: now,
                source: "test".into(),
            },
            device_id: "freezer-1".into(),
            kind: SensorKind::Temperature,
            value: -18.0 + (i % 5) as f64,
            unit: SensorUnit::Celsius,
            appliance: Some("freezer".into()),
        };
        let key = reading.envelope.partition_key();
        let payload = if i % 50 == 0 {
            b"not avro".to_vec() // dead-lettered
        } else {
            codec.encode(&reading).expect("encode")
        };
        producer
            .send(
                FutureRecord::to(&stack.kafka.topic(topic::SENSOR_READINGS))
                    .key(&key)
                    .payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .expect("produce");
        sent += 1;
    }
    assert_eq!(sent, 400);
    let mut others = 0;
    for i in 0..7 {
        others += alerts_forecasts_outcomes(&producer, &stack, &codec, i, now).await;
    }

    // The live store.
    let shutdown = CancellationToken::new();
    let (_, live) = start_compactor(&stack, &shutdown, None, None).await;
    eventually("the live store caught up", Duration::from_secs(90), || async {
        (stack
            .count("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE topic = 'sensor.readings.v1'")
            .await
            == 400
            && stack
                .count("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE topic IN ('alerts.v1', 'forecasts.v1', 'notifications.v1', 'pos.inventory.v1', 'pos.device.v1')")
                .await
                == others
            && stack.count("SELECT count(*) FROM rejected_events").await == 8)
            .then_some(())
    })
    .await;
    shutdown.cancel();
    live.await.expect("join").expect("live compactor stops");

    // Rebuild into a new database, through the CLI.
    let url = stack.pg.create_database("rebuilt").await.expect("db");
    let out = tokio::task::spawn_blocking({
        let env = stack.service_env("unused");
        let url = url.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_storepulse"))
                .args(["rebuild", "--database-url", &url])
                .envs(env)
                .output()
                .expect("run rebuild")
        }
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("] "), "a progress bar: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rebuilt the read store from"), "{stdout}");

    let rebuilt = storepulse_runtime::db::pool(&storepulse_runtime::PostgresConfig {
        url: url.clone(),
        ..Default::default()
    })
    .expect("pool");
    for (relation, columns) in RELATIONS {
        let live = fingerprint(&stack.pool, relation, columns).await;
        let again = fingerprint(&rebuilt, relation, columns).await;
        assert_eq!(live, again, "{relation} differs after the rebuild");
    }
    assert!(fingerprint(&stack.pool, "sensor_readings", "t").await.0 > 300);
    assert!(fingerprint(&stack.pool, "event_id_conflicts", "t").await.0 > 0);
    assert_eq!(
        stack
            .count("SELECT count(*) FROM event_id_conflicts WHERE relation = 'alert_transitions'")
            .await,
        7
    );
    assert_eq!(
        fingerprint(&stack.pool, "alert_transitions", "t").await.0,
        11
    );
    assert_eq!(
        fingerprint(&stack.pool, "demand_forecast_days", "t")
            .await
            .0,
        7 * 14
    );
    assert_eq!(
        fingerprint(&stack.pool, "notification_outcomes", "t")
            .await
            .0,
        7
    );
    assert_eq!(fingerprint(&stack.pool, "alert_history", "t").await.0, 7);
    assert_eq!(stack.count("SELECT count(*) FROM open_alerts").await, 3);
    assert_eq!(
        stack
            .count("SELECT count(*) FROM stock_on_hand WHERE on_hand = 37.5")
            .await,
        7
    );
    assert_eq!(
        fingerprint(&stack.pool, "device_last_seen", "t").await.0,
        14
    );

    // A second rebuild into the same (now used) database is refused.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_storepulse"))
        .args(["rebuild", "--database-url", &url, "--quiet"])
        .envs(stack.service_env("unused"))
        .output()
        .expect("run rebuild");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
flavour_tests!(
    a_rebuilt_read_store_equals_the_live_one,
    super::rebuild_equals_live
);
