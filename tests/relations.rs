//! The read-store relations of alerts.v1, forecasts.v1 and notifications.v1, written
//! by the compactor's writer against a real Postgres: raw rows keyed by the scoped
//! idempotency key, retries stored once, conflicting reuses recorded, the topic
//! contract enforced, the documented enum texts stored; and the current-state and
//! analyst relations kept from them, on hand-worked examples — on both flavours.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use storepulse_runtime::db::Flavour;
use storepulse_runtime::records::*;
use storepulse_runtime::vocabulary::Vocabulary;
use support::TestDb;
use support::feed::Feed;
use uuid::Uuid;

fn at(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
        .timestamp_micros()
}

fn envelope(tenant: &str, store: &str, id: u128, occurred_at: i64) -> Envelope {
    Envelope {
        event_id: Uuid::from_u128(id).to_string(),
        tenant_id: tenant.into(),
        store_id: store.into(),
        occurred_at,
        received_at: occurred_at + 2_000_000,
        source: "test".into(),
    }
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn transition(
    env: Envelope,
    alert_id: &str,
    state: AlertState,
    severity: AlertSeverity,
    started_at: i64,
) -> AlertTransition {
    AlertTransition {
        envelope: env,
        alert_id: alert_id.into(),
        rule_id: "freezer-warm".into(),
        state,
        severity,
        subject: "freezer-1".into(),
        summary: "freezer-1 above -15 °C for 10 min".into(),
        value: Some(-12.5),
        started_at,
        labels: labels(&[
            ("appliance", "freezer"),
            ("category", "cold-chain"),
            ("zone", "back"),
            ("aisle", "7"),
            ("team", "ops"),
        ]),
        ended_at: None,
        rule_kind: Some("threshold".into()),
    }
}

fn forecast(env: Envelope, sku: &str, first_day: &str, means: &[f64]) -> DemandForecast {
    let first = chrono::NaiveDate::parse_from_str(first_day, "%Y-%m-%d").expect("date");
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
    let first = (first - epoch).num_days() as i32;
    DemandForecast {
        envelope: env,
        sku: sku.into(),
        method: "holt-winters".into(),
        interval_level: 0.9,
        days: means
            .iter()
            .enumerate()
            .map(|(i, m)| ForecastDay {
                date: first + i as i32,
                mean: *m,
                lower: m * 0.5,
                upper: m * 1.5,
                wide_lower: None,
                wide_upper: None,
            })
            .collect(),
        on_hand: Some(40.0),
        days_of_cover: Some(3.5),
        stock_out_probability: Some(0.25),
        wide_interval_level: None,
        lead_time_days: None,
        backtest: None,
    }
}

fn outcome(
    env: Envelope,
    alert_id: &str,
    channel: Channel,
    status: DeliveryStatus,
) -> NotificationOutcome {
    NotificationOutcome {
        envelope: env,
        alert_id: alert_id.into(),
        alert_state: NotifiedState::Firing,
        receiver: "store-manager".into(),
        channel,
        status,
        attempts: 2,
        error: (status == DeliveryStatus::Failed).then(|| "HTTP 500 from receiver".into()),
    }
}

async fn texts(db: &TestDb, sql: &str) -> BTreeSet<String> {
    let client = db.pool.get().await.expect("client");
    client
        .query(sql, &[])
        .await
        .expect(sql)
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

fn vocabulary<T: Vocabulary>() -> BTreeSet<String> {
    T::ALL.iter().map(|v| v.as_str().to_string()).collect()
}

/// Each record is one row with its documented texts; a retry (received again, its
/// labels map built anew) is stored once; a reuse of a stored id with another payload
/// is recorded in event_id_conflicts and changes nothing.
async fn alerts_forecasts_and_outcomes_are_stored_once_on(flavour: Flavour) {
    let db = TestDb::start_flavour("relraw", flavour).await;
    let mut feed = Feed::new(&db.pool, "g");
    let t = at("2026-11-23T10:00:00Z");
    let started = at("2026-11-23T09:50:00Z");
    let severities = AlertSeverity::ALL;
    for (i, severity) in severities.iter().enumerate() {
        feed.push(&transition(
            envelope("acme", "s-1", 1 + i as u128, t),
            &format!("a-{i}"),
            AlertState::Firing,
            *severity,
            started,
        ));
    }
    feed.push(&transition(
        envelope("acme", "s-1", 10, t + 60_000_000),
        "a-0",
        AlertState::Resolved,
        AlertSeverity::Info,
        started,
    ));
    feed.push(&forecast(
        envelope("acme", "s-1", 20, t),
        "milk",
        "2026-11-24",
        &[10.0, 12.0, 9.5],
    ));
    let mut n = 30;
    for channel in Channel::ALL {
        for status in DeliveryStatus::ALL {
            n += 1;
            feed.push(&outcome(
                envelope("acme", "s-1", n, t),
                "a-0",
                *channel,
                *status,
            ));
        }
    }
    let resolved = NotificationOutcome {
        alert_state: NotifiedState::Resolved,
        ..outcome(
            envelope("acme", "s-1", 99, t),
            "a-0",
            Channel::Email,
            DeliveryStatus::Delivered,
        )
    };
    feed.push(&resolved);
    feed.flush().await.expect("apply");

    assert_eq!(db.count("SELECT count(*) FROM alert_transitions").await, 4);
    assert_eq!(db.count("SELECT count(*) FROM demand_forecasts").await, 1);
    assert_eq!(
        db.count("SELECT count(*) FROM demand_forecast_days").await,
        3
    );
    assert_eq!(
        db.count("SELECT count(*) FROM notification_outcomes").await,
        13
    );
    assert_eq!(
        texts(&db, "SELECT DISTINCT state FROM alert_transitions").await,
        vocabulary::<AlertState>()
    );
    assert_eq!(
        texts(&db, "SELECT DISTINCT severity FROM alert_transitions").await,
        vocabulary::<AlertSeverity>()
    );
    assert_eq!(
        texts(&db, "SELECT DISTINCT channel FROM notification_outcomes").await,
        vocabulary::<Channel>()
    );
    assert_eq!(
        texts(&db, "SELECT DISTINCT status FROM notification_outcomes").await,
        vocabulary::<DeliveryStatus>()
    );
    assert_eq!(
        texts(
            &db,
            "SELECT DISTINCT alert_state FROM notification_outcomes"
        )
        .await,
        vocabulary::<NotifiedState>()
    );
    assert_eq!(
        texts(
            &db,
            "SELECT labels::text FROM alert_transitions WHERE alert_id = 'a-1'"
        )
        .await,
        BTreeSet::from([
            r#"{"team": "ops", "zone": "back", "aisle": "7", "category": "cold-chain", "appliance": "freezer"}"#
                .to_string()
        ])
    );
    assert_eq!(
        texts(
            &db,
            "SELECT format('%s %s %s %s %s', day, sku, mean, lower, upper) FROM demand_forecast_days
             WHERE issued_at = '2026-11-23T10:00:00Z'"
        )
        .await,
        BTreeSet::from([
            "2026-11-24 milk 10 5 15".to_string(),
            "2026-11-25 milk 12 6 18".to_string(),
            "2026-11-26 milk 9.5 4.75 14.25".to_string(),
        ])
    );
    let before = texts(
        &db,
        "SELECT string_agg(t::text, '|' ORDER BY t::text) FROM (
             SELECT a::text AS t FROM alert_transitions a
             UNION ALL SELECT d::text FROM demand_forecasts d
             UNION ALL SELECT d::text FROM demand_forecast_days d
             UNION ALL SELECT n::text FROM notification_outcomes n) x",
    )
    .await;

    // Retries: received later, labels map built anew (another iteration order).
    let mut retry = transition(
        envelope("acme", "s-1", 2, t),
        "a-1",
        AlertState::Firing,
        AlertSeverity::Warning,
        started,
    );
    retry.envelope.received_at += 60_000_000;
    feed.push(&retry);
    let mut retry = forecast(
        envelope("acme", "s-1", 20, t),
        "milk",
        "2026-11-24",
        &[10.0, 12.0, 9.5],
    );
    retry.envelope.received_at += 60_000_000;
    feed.push(&retry);
    // Conflicts: the same ids with other payloads.
    let mut conflicting = transition(
        envelope("acme", "s-1", 2, t),
        "a-1",
        AlertState::Firing,
        AlertSeverity::Critical,
        started,
    );
    conflicting.summary = "something else".into();
    feed.push(&conflicting);
    feed.push(&forecast(
        envelope("acme", "s-1", 20, t),
        "milk",
        "2026-11-24",
        &[99.0],
    ));
    feed.push(&outcome(
        envelope("acme", "s-1", 31, t),
        "a-0",
        Channel::Slack,
        DeliveryStatus::Failed,
    ));
    // The same id in another store is another event.
    feed.push(&outcome(
        envelope("acme", "s-2", 31, t),
        "a-0",
        Channel::Slack,
        DeliveryStatus::Failed,
    ));
    feed.flush().await.expect("apply");

    let after = texts(
        &db,
        "SELECT string_agg(t::text, '|' ORDER BY t::text) FROM (
             SELECT a::text AS t FROM alert_transitions a
             UNION ALL SELECT d::text FROM demand_forecasts d
             UNION ALL SELECT d::text FROM demand_forecast_days d
             UNION ALL SELECT n::text FROM notification_outcomes n WHERE store_id = 's-1') x",
    )
    .await;
    assert_eq!(before, after, "retries and conflicts changed stored rows");
    assert_eq!(
        texts(
            &db,
            "SELECT relation || ' ' || count(*) FROM event_id_conflicts GROUP BY relation"
        )
        .await,
        BTreeSet::from([
            "alert_transitions 1".to_string(),
            "demand_forecasts 1".to_string(),
            "notification_outcomes 1".to_string(),
        ])
    );
    assert_eq!(
        db.count("SELECT count(*) FROM notification_outcomes WHERE store_id = 's-2'")
            .await,
        1
    );
}
flavour_tests!(
    alerts_forecasts_and_outcomes_are_stored_once,
    super::alerts_forecasts_and_outcomes_are_stored_once_on
);

/// What breaks the topic contract is refused with the field named, never stored.
async fn the_contract_of_the_new_topics_is_enforced_on(flavour: Flavour) {
    let db = TestDb::start_flavour("relcontract", flavour).await;
    let mut feed = Feed::new(&db.pool, "g");
    let t = at("2026-11-23T10:00:00Z");
    let ok = transition(
        envelope("acme", "s-1", 1, t),
        "a-1",
        AlertState::Firing,
        AlertSeverity::Warning,
        t - 1,
    );
    assert!(feed.decode(&ok).is_ok());
    let field = |r: Result<_, storepulse_runtime::Rejection>| {
        r.err().and_then(|e| e.field).unwrap_or_default()
    };
    let mut x = ok.clone();
    x.started_at = t + 1;
    assert_eq!(field(feed.decode(&x)), "started_at");
    let mut x = ok.clone();
    x.value = Some(f64::NAN);
    assert_eq!(field(feed.decode(&x)), "value");
    let mut x = ok.clone();
    x.alert_id = String::new();
    assert_eq!(field(feed.decode(&x)), "alert_id");
    let mut x = ok.clone();
    x.summary = "x".repeat(5000);
    assert_eq!(field(feed.decode(&x)), "summary");

    let f = forecast(
        envelope("acme", "s-1", 2, t),
        "milk",
        "2026-11-24",
        &[3.0, 4.0],
    );
    assert!(feed.decode(&f).is_ok());
    let mut x = f.clone();
    x.days[1].date = x.days[0].date;
    assert_eq!(field(feed.decode(&x)), "days[1].date");
    let mut x = f.clone();
    x.days[0].lower = 3.5;
    assert_eq!(field(feed.decode(&x)), "days[0]");
    let mut x = f.clone();
    x.days[0].upper = f64::INFINITY;
    assert_eq!(field(feed.decode(&x)), "days[0].upper");
    let mut x = f.clone();
    x.days.clear();
    assert_eq!(field(feed.decode(&x)), "days");
    let mut x = f.clone();
    x.interval_level = 1.0;
    assert_eq!(field(feed.decode(&x)), "interval_level");
    let mut x = f.clone();
    x.stock_out_probability = Some(1.5);
    assert_eq!(field(feed.decode(&x)), "stock_out_probability");

    let o = outcome(
        envelope("acme", "s-1", 3, t),
        "a-1",
        Channel::Webhook,
        DeliveryStatus::Delivered,
    );
    assert!(feed.decode(&o).is_ok());
    let mut x = o.clone();
    x.attempts = 0;
    assert_eq!(field(feed.decode(&x)), "attempts");
    let mut x = o.clone();
    x.error = Some("bad\0byte".into());
    assert_eq!(field(feed.decode(&x)), "error");
    let mut x = o.clone();
    x.envelope.store_id = "s-2".into();
    // The key still names s-1's store: a record filed under another store.
    let rec = storepulse_runtime::consumer::ConsumedRecord {
        topic: topic::NOTIFICATIONS.into(),
        partition: 0,
        offset: 0,
        key: Some(b"acme/s-1".to_vec()),
        payload: feed.codec.encode(&x).expect("encode"),
    };
    use storepulse_runtime::consumer::BatchProcessor;
    assert_eq!(
        feed.writer
            .decode(&rec)
            .err()
            .and_then(|e| e.field)
            .as_deref(),
        Some("key")
    );
}
flavour_tests!(
    the_contract_of_the_new_topics_is_enforced,
    super::the_contract_of_the_new_topics_is_enforced_on
);

async fn rows(db: &TestDb, sql: &str) -> Vec<String> {
    let client = db.pool.get().await.expect("client");
    client
        .query(&format!("SELECT t::text FROM ({sql}) t ORDER BY 1"), &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn stock(env: Envelope, sku: &str, snapshot: bool, quantity: f64) -> InventoryChange {
    InventoryChange {
        envelope: env,
        kind: if snapshot {
            InventoryChangeKind::Snapshot
        } else {
            InventoryChangeKind::Adjustment
        },
        sku: sku.into(),
        quantity,
        reason: (!snapshot).then_some(AdjustmentReason::Delivery),
    }
}

/// Stock on hand on numbers worked out by hand: a snapshot resets, adjustments after
/// it add, one at the snapshot's very time is in it, a late older snapshot or
/// adjustment changes what it should, whatever the batches.
async fn stock_on_hand_is_the_standing_snapshot_plus_later_adjustments_on(flavour: Flavour) {
    let db = TestDb::start_flavour("relstock", flavour).await;
    let mut feed = Feed::new(&db.pool, "g");
    let t = |hh: u32| at(&format!("2026-11-23T{hh:02}:00:00Z"));
    let e = |n: u128, hh: u32| envelope("acme", "s-1", n, t(hh));
    let on_hand =
        "SELECT sku, on_hand, snapshot_quantity, adjustments_since, changes FROM stock_on_hand";
    // milk: adjustments only (no snapshot yet): 5 + 2.5.
    feed.push(&stock(e(1, 8), "milk", false, 5.0));
    feed.push(&stock(e(2, 9), "milk", false, 2.5));
    feed.flush().await.expect("apply");
    assert_eq!(rows(&db, on_hand).await, vec!["(milk,7.5,,7.5,2)"]);
    // A snapshot at 10:00 resets to 20; an adjustment at 10:00 is in it; one at 11:00 adds.
    feed.push(&stock(e(3, 11), "milk", false, -3.0));
    feed.push(&stock(e(4, 10), "milk", true, 20.0));
    feed.push(&stock(e(5, 10), "milk", false, 100.0));
    feed.flush().await.expect("apply");
    assert_eq!(rows(&db, on_hand).await, vec!["(milk,17,20,-3,5)"]);
    // Late: an older snapshot (09:00) changes nothing; an adjustment at 12:00 adds; an
    // adjustment at 09:30 is before the snapshot.
    feed.push(&stock(e(6, 9), "milk", true, 999.0));
    feed.push(&stock(e(7, 12), "milk", false, 1.25));
    feed.push(&stock(
        envelope("acme", "s-1", 8, t(9) + 1_800_000_000),
        "milk",
        false,
        7.0,
    ));
    feed.flush().await.expect("apply");
    assert_eq!(rows(&db, on_hand).await, vec!["(milk,18.25,20,-1.75,8)"]);
    // A newer snapshot (11:30) in a later batch: only adjustments after it count.
    feed.push(&stock(
        envelope("acme", "s-1", 9, t(11) + 1_800_000_000),
        "milk",
        true,
        4.0,
    ));
    feed.flush().await.expect("apply");
    assert_eq!(rows(&db, on_hand).await, vec!["(milk,5.25,4,1.25,9)"]);
    // Two snapshots at one time: the greater event id stands.
    feed.push(&stock(e(11, 13), "milk", true, 6.0));
    feed.push(&stock(e(10, 13), "milk", true, 60.0));
    feed.flush().await.expect("apply");
    assert_eq!(
        rows(&db, "SELECT on_hand, snapshot_event_id FROM stock_on_hand").await,
        vec![format!("(6,{})", Uuid::from_u128(11))]
    );
    support::recount::rollups_equal_recount(&db.pool)
        .await
        .expect("equal to a recount");
}
flavour_tests!(
    stock_on_hand_is_the_standing_snapshot_plus_later_adjustments,
    super::stock_on_hand_is_the_standing_snapshot_plus_later_adjustments_on
);

fn heartbeat(env: Envelope, terminal: &str, app_up: bool, network: NetworkStatus) -> PosHeartbeat {
    PosHeartbeat {
        envelope: env,
        terminal_id: terminal.into(),
        app_up,
        printer: PrinterStatus::Ok,
        network,
        software_version: Some("4.2".into()),
    }
}

/// Device status: the last event by event time stands; offline when silent longer
/// than the device type's setting, or when the last heartbeat said the app is down or
/// the network offline; a changed setting applies at once.
async fn device_status_says_offline_when_silent_or_down_on(flavour: Flavour) {
    let db = TestDb::start_flavour("reldevice", flavour).await;
    let mut feed = Feed::new(&db.pool, "g");
    let now = Utc::now().timestamp_micros();
    let min = 60_000_000;
    let e = |n: u128, ago_min: i64| envelope("acme", "s-1", n, now - ago_min * min);
    // pos-1: the newest heartbeat (1 min ago) arrives first, an older one later.
    feed.push(&heartbeat(e(1, 1), "pos-1", true, NetworkStatus::Online));
    feed.push(&heartbeat(e(2, 5), "pos-1", false, NetworkStatus::Offline));
    // pos-2: silent for 10 minutes; pos-3: app down; pos-4: network offline.
    feed.push(&heartbeat(e(3, 10), "pos-2", true, NetworkStatus::Online));
    feed.push(&heartbeat(e(4, 1), "pos-3", false, NetworkStatus::Online));
    feed.push(&heartbeat(e(5, 1), "pos-4", true, NetworkStatus::Offline));
    feed.flush().await.expect("apply");
    feed.push(&heartbeat(e(6, 3), "pos-1", false, NetworkStatus::Online));
    // Sensors: freezer-1 read 5 minutes ago, door-1 20 minutes ago.
    feed.push(&SensorReading {
        envelope: e(7, 5),
        device_id: "freezer-1".into(),
        kind: SensorKind::Temperature,
        value: -18.0,
        unit: SensorUnit::Celsius,
        appliance: Some("freezer".into()),
    });
    feed.push(&SensorReading {
        envelope: e(8, 20),
        device_id: "door-1".into(),
        kind: SensorKind::Door,
        value: 0.0,
        unit: SensorUnit::OpenClosed,
        appliance: None,
    });
    feed.flush().await.expect("apply");
    let status = "SELECT device_type, device_id, status, offline_reason FROM device_status";
    assert_eq!(
        rows(&db, status).await,
        vec![
            "(pos_terminal,pos-1,online,)",
            "(pos_terminal,pos-2,offline,silent)",
            "(pos_terminal,pos-3,offline,app_down)",
            "(pos_terminal,pos-4,offline,network_offline)",
            "(sensor,door-1,offline,silent)",
            "(sensor,freezer-1,online,)",
        ]
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM device_status WHERE device_id = 'pos-1'
               AND last_seen_at = to_timestamp({}) AND software_version = '4.2'",
            (now - min) as f64 / 1e6
        ))
        .await,
        1,
        "the newest heartbeat stands"
    );
    db.pool
        .get()
        .await
        .expect("client")
        .batch_execute(
            "UPDATE device_status_settings SET offline_after = interval '30 minutes'
             WHERE device_type = 'sensor';
             UPDATE device_status_settings SET offline_after = interval '15 seconds'
             WHERE device_type = 'pos_terminal'",
        )
        .await
        .expect("settings");
    assert_eq!(
        rows(&db, status).await,
        vec![
            "(pos_terminal,pos-1,offline,silent)",
            "(pos_terminal,pos-2,offline,silent)",
            "(pos_terminal,pos-3,offline,silent)",
            "(pos_terminal,pos-4,offline,silent)",
            "(sensor,door-1,online,)",
            "(sensor,freezer-1,online,)",
        ]
    );
    support::recount::rollups_equal_recount(&db.pool)
        .await
        .expect("equal to a recount");
}
flavour_tests!(
    device_status_says_offline_when_silent_or_down,
    super::device_status_says_offline_when_silent_or_down_on
);

/// Alert history: one row per incident, whatever the order and repeats of its
/// transitions; open alerts are the incidents not resolved.
async fn alert_history_has_one_row_per_incident_with_its_time_to_resolve_on(flavour: Flavour) {
    let db = TestDb::start_flavour("relalerts", flavour).await;
    let mut feed = Feed::new(&db.pool, "g");
    let started = at("2026-11-23T09:50:00Z");
    let tr = |n: u128, alert: &str, state: AlertState, severity: AlertSeverity, when: &str| {
        transition(
            envelope("acme", "s-1", n, at(when)),
            alert,
            state,
            severity,
            started,
        )
    };
    // a-1: resolved arrives before firing (another partition's lag, a replay).
    let mut resolved = tr(
        1,
        "a-1",
        AlertState::Resolved,
        AlertSeverity::Warning,
        "2026-11-23T10:30:00Z",
    );
    resolved.ended_at = Some(at("2026-11-23T10:25:00Z"));
    resolved.summary = "back below -17 °C".into();
    feed.push(&resolved);
    feed.flush().await.expect("apply");
    feed.push(&tr(
        2,
        "a-1",
        AlertState::Firing,
        AlertSeverity::Warning,
        "2026-11-23T10:00:00Z",
    ));
    // a-2: fired, escalated to critical by a second firing, still open; the same
    // firing again with another event id (a producer that re-emits).
    feed.push(&tr(
        3,
        "a-2",
        AlertState::Firing,
        AlertSeverity::Warning,
        "2026-11-23T10:05:00Z",
    ));
    feed.push(&tr(
        4,
        "a-2",
        AlertState::Firing,
        AlertSeverity::Critical,
        "2026-11-23T10:20:00Z",
    ));
    feed.push(&tr(
        5,
        "a-2",
        AlertState::Firing,
        AlertSeverity::Warning,
        "2026-11-23T10:05:00Z",
    ));
    feed.flush().await.expect("apply");
    assert_eq!(
        rows(
            &db,
            "SELECT alert_id, severity, fired_at AT TIME ZONE 'UTC', resolved_at AT TIME ZONE 'UTC',
                    ended_at AT TIME ZONE 'UTC', time_to_resolve, transitions, summary
             FROM alert_history"
        )
        .await,
        vec![
            "(a-1,warning,\"2026-11-23 10:00:00\",\"2026-11-23 10:30:00\",\"2026-11-23 10:25:00\",00:40:00,2,\"freezer-1 above -15 °C for 10 min\")",
            "(a-2,critical,\"2026-11-23 10:05:00\",,,,3,\"freezer-1 above -15 °C for 10 min\")",
        ]
    );
    assert_eq!(
        rows(
            &db,
            "SELECT alert_id, severity, rule_id, subject FROM open_alerts"
        )
        .await,
        vec!["(a-2,critical,freezer-warm,freezer-1)"]
    );
    support::recount::rollups_equal_recount(&db.pool)
        .await
        .expect("equal to a recount");
}
flavour_tests!(
    alert_history_has_one_row_per_incident_with_its_time_to_resolve,
    super::alert_history_has_one_row_per_incident_with_its_time_to_resolve_on
);

fn sale(env: Envelope, kind: SaleKind, sku: &str, milli: i64) -> SaleTransaction {
    let total_minor = storepulse_runtime::contract::total_minor(&[(milli, 100)]).expect("fits");
    SaleTransaction {
        transaction_id: format!("t-{}", env.event_id),
        envelope: env,
        kind,
        terminal_id: "pos-1".into(),
        currency: "EUR".into(),
        lines: vec![LineItem {
            sku: sku.into(),
            quantity: milli as f64 / 1000.0,
            unit_price_minor: 100,
        }],
        total_minor,
        original_transaction_id: None,
    }
}

/// Forecast vs actual: the latest forecast issued before the day stands; actual units
/// are net of refunds and voids; the error measures follow.
async fn forecast_vs_actual_compares_the_day_ahead_forecast_with_net_sales_on(flavour: Flavour) {
    let db = TestDb::start_flavour("relforecast", flavour).await;
    let mut feed = Feed::new(&db.pool, "g");
    let e = |n: u128, when: &str| envelope("acme", "s-1", n, at(when));
    // (A year back, so both days are complete.) Issued on the 22nd for the 23rd and 24th; a later forecast on the 22nd for the
    // 23rd (stands); one issued during the 23rd (too late for the 23rd, stands for the
    // 24th), arriving first.
    feed.push(&forecast(
        e(3, "2025-11-23T06:00:00Z"),
        "milk",
        "2025-11-23",
        &[50.0, 8.0],
    ));
    feed.flush().await.expect("apply");
    feed.push(&forecast(
        e(1, "2025-11-22T06:00:00Z"),
        "milk",
        "2025-11-23",
        &[9.0, 7.0],
    ));
    feed.push(&forecast(
        e(2, "2025-11-22T18:00:00Z"),
        "milk",
        "2025-11-23",
        &[10.0],
    ));
    // The 23rd: 12 sold, 1 refunded, 1 voided → 10 net; the 24th: nothing.
    feed.push(&sale(
        e(10, "2025-11-23T09:00:00Z"),
        SaleKind::Sale,
        "milk",
        12_000,
    ));
    feed.push(&sale(
        e(11, "2025-11-23T10:00:00Z"),
        SaleKind::Refund,
        "milk",
        1_000,
    ));
    feed.push(&sale(
        e(12, "2025-11-23T23:59:59Z"),
        SaleKind::Void,
        "milk",
        1_000,
    ));
    feed.push(&sale(
        e(13, "2025-11-24T00:00:00Z"),
        SaleKind::Sale,
        "bread",
        4_000,
    ));
    feed.flush().await.expect("apply");
    assert_eq!(
        rows(
            &db,
            "SELECT day, forecast_units, actual_units, error, abs_error, pct_error,
                    within_interval, day_complete, method, forecast_event_id
             FROM forecast_vs_actual"
        )
        .await,
        vec![
            format!(
                "(2025-11-23,10,10,0,0,0,t,t,holt-winters,{})",
                Uuid::from_u128(2)
            ),
            format!(
                "(2025-11-24,8,0,-8,8,,f,t,holt-winters,{})",
                Uuid::from_u128(3)
            ),
        ]
    );
    support::recount::rollups_equal_recount(&db.pool)
        .await
        .expect("equal to a recount");
}
flavour_tests!(
    forecast_vs_actual_compares_the_day_ahead_forecast_with_net_sales,
    super::forecast_vs_actual_compares_the_day_ahead_forecast_with_net_sales_on
);

/// Two writers of one store's inventory (records produced without their store's key
/// land in two partitions) take turns: each waits for the store's lock, so the second
/// sees the first's rows and stock_on_hand is the snapshot plus both adjustments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_of_one_store_take_turns_on_its_stock() {
    let db = TestDb::start_flavour("relstocklock", Flavour::Plain).await;
    let t = |hh: u32| at(&format!("2026-11-23T{hh:02}:00:00Z"));
    let mut first = Feed::new(&db.pool, "g1");
    first.push(&stock(
        envelope("acme", "s-1", 1, t(11)),
        "milk",
        false,
        5.0,
    ));
    let mut second = Feed::new(&db.pool, "g2");
    second.push(&stock(
        envelope("acme", "s-1", 2, t(10)),
        "milk",
        true,
        20.0,
    ));
    second.push(&stock(
        envelope("acme", "s-1", 3, t(12)),
        "milk",
        false,
        1.0,
    ));

    // Hold the store's lock, as a third writer would.
    let holder = db.pool.get().await.expect("client");
    let key = "hashtextextended('storepulse.store/' || 'acme' || '/' || 's-1', 0)";
    holder
        .batch_execute(&format!("SELECT pg_advisory_lock({key})"))
        .await
        .expect("lock");
    let a = tokio::spawn(async move { first.flush().await });
    let b = tokio::spawn(async move { second.flush().await });
    support::eventually(
        "both writers wait for the store",
        Duration::from_secs(30),
        || async {
            (db.count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                .await
                == 2)
                .then_some(())
        },
    )
    .await;
    assert!(!a.is_finished() && !b.is_finished());
    assert_eq!(db.count("SELECT count(*) FROM stock_on_hand").await, 0);
    holder
        .batch_execute(&format!("SELECT pg_advisory_unlock({key})"))
        .await
        .expect("unlock");
    a.await.expect("join").expect("apply");
    b.await.expect("join").expect("apply");
    assert_eq!(
        rows(
            &db,
            "SELECT on_hand, snapshot_quantity, adjustments_since, changes FROM stock_on_hand"
        )
        .await,
        vec!["(26,20,6,3)"]
    );
    support::recount::rollups_equal_recount(&db.pool)
        .await
        .expect("equal to a recount");
}
