//! The read-store relations of alerts.v1, forecasts.v1 and notifications.v1, written
//! by the compactor's writer against a real Postgres: raw rows keyed by the scoped
//! idempotency key, retries stored once, conflicting reuses recorded, the topic
//! contract enforced, the documented enum texts stored.

mod support;

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
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
            })
            .collect(),
        on_hand: Some(40.0),
        days_of_cover: Some(3.5),
        stock_out_probability: Some(0.25),
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_forecasts_and_outcomes_are_stored_once() {
    let db = TestDb::start("relraw").await;
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

/// What breaks the topic contract is refused with the field named, never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_of_the_new_topics_is_enforced() {
    let db = TestDb::start("relcontract").await;
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
