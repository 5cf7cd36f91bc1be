//! The rules service against the real broker and Postgres: crafted event sequences
//! for every rule kind (boundaries and exact `for` durations), late and
//! out-of-order events, an idle partition firing an absence alert, a kill -9
//! mid-incident, a rebalance from one to two members. Each compares the alert
//! stream on `alerts.v1` with the expected one exactly.

mod support;

use std::time::Duration;

use support::rules::*;
use support::{TestStack, eventually};
use tokio_util::sync::CancellationToken;

const KINDS: &str = r#"
[[rules]]
name = "freezer-warm"
kind = "threshold"
match = { source = "sensor", kind = "temperature", stores = ["thr-*"] }
above = -15
for = "10m"
clear = -17
clear_for = "5m"

[[rules]]
name = "pos-offline"
kind = "absence"
match = { source = "heartbeat", stores = ["abs-*"] }
timeout = "2m"

[[rules]]
name = "rising"
kind = "rate_of_change"
match = { source = "sensor", kind = "temperature", stores = ["rate-*"] }
window = "10m"
rise = 3
clear = 1
clear_for = "10m"

[[rules]]
name = "low-stock"
kind = "stock"
match = { source = "inventory", stores = ["stock-*"] }
reorder_point = 5
clear = 6

[[rules]]
name = "cover"
kind = "stock"
match = { source = "forecast", stores = ["cover-*"] }
lead_time_days = 2

[[rules]]
name = "sales-drop"
kind = "sales_anomaly"
match = { source = "sales", stores = ["sales-*"] }
ratio = 0.3
hours = 2
clear_ratio = 0.6
min_expected = 5
min_history = 1
alpha = 0.5

[[rules]]
name = "exposure"
kind = "cold_chain"
match = { source = "sensor", kind = "temperature", stores = ["cold-*"] }
limit = -12
budget = 60
clear_for = "10m"
door_grace = "0m"
doors = ["door-*"]
"#;

/// The crafted sequences of every kind, and the alerts they must give.
fn every_kind(t0: i64) -> (Vec<Rec>, Vec<Seen>) {
    let mut recs = Vec::new();
    // Sales a week ago: the usual level of hours 0..3 (the sales stream must see
    // them before this week's).
    for (h, units) in [(0, 12.0), (1, 10.0), (2, 10.0), (3, 10.0)] {
        recs.push(sale("sales-1", t0 - 7 * D + h * H + 30 * M, units));
    }
    for m in 0..=40 {
        let t = t0 + m * M;
        // Threshold: freezer-1 at -15.0 (not beyond) at 5m, beyond from 6m to 16m:
        // exactly `for`, fires at 16m; clear from 16m, resolved at 21m.
        let v1 = match m {
            0..=4 => -18.0,
            5 => -15.0,
            6..=15 => -14.9,
            _ => -18.0,
        };
        recs.push(temp("thr-1", "freezer-1", t, v1));
        // freezer-2: beyond from 6m, back at 16m minus 1 µs: never fires.
        if (6..=15).contains(&m) {
            recs.push(temp("thr-1", "freezer-2", t, -14.9));
        } else if m != 16 {
            recs.push(temp("thr-1", "freezer-2", t, -18.0));
        }
        if m == 15 {
            recs.push(temp("thr-1", "freezer-2", t0 + 16 * M - 1, -18.0));
        }
        // Rate of change: flat, rising 0.5 °C/min from 10m to 20m, flat again.
        let v = if m < 10 {
            -18.0
        } else if m <= 20 {
            -18.0 + 0.5 * (m - 10) as f64
        } else {
            -13.0
        };
        recs.push(temp("rate-1", "freezer-1", t, v));
        // Cold chain: 10 °C over the limit from 10m to 19m, door open 12m..14m.
        let c = if (10..19).contains(&m) {
            -2.0
        } else if m >= 19 {
            -20.0
        } else {
            -18.0
        };
        recs.push(temp("cold-1", "freezer-1", t, c));
        if m == 12 {
            recs.push(door("cold-1", "door-1", t, true));
        }
        if m == 14 {
            recs.push(door("cold-1", "door-1", t, false));
        }
    }
    // Absence: heartbeats every 30 s to 40m; pos-1 silent 10m..20m; pos-3 has a
    // gap 1 µs short of the timeout; pos-4 a gap of exactly the timeout.
    for half in 0..=80 {
        let t = t0 + half * 30 * S;
        let m = half as f64 / 2.0;
        if !(m > 10.0 && m < 20.0) {
            recs.push(beat("abs-1", "pos-1", t));
        }
        recs.push(beat("abs-1", "pos-2", t));
        if half == 0 || half >= 4 {
            recs.push(beat("abs-1", "pos-3", t));
            recs.push(beat("abs-1", "pos-4", t));
        }
        if half == 1 {
            recs.push(beat("abs-1", "pos-3", t0 + 2 * M - 1));
        }
    }
    // Stock on hand: 10, 7, 4 (below 5: fires), 5 (not above the clear level 6),
    // 25 (resolved).
    for (m, snap, q) in [
        (0, true, 10.0),
        (1, false, -3.0),
        (2, false, -3.0),
        (3, false, 1.0),
        (4, false, 20.0),
        (10, true, 25.0),
    ] {
        recs.push(stock("stock-1", "milk-1l", t0 + m * M, snap, q));
    }
    // Days of cover from forecasts: below 2 days from 10m to 30m.
    for (m, d) in [(0, 5.0), (10, 1.5), (20, 1.8), (30, 5.0), (40, 5.0)] {
        recs.push(cover("cover-1", "milk-1l", t0 + m * M, d));
    }
    // Sales this week: hour 0 as usual, hours 1 and 2 far below (fires at the
    // end of hour 2), hour 3 back (resolved at its end).
    for (at, units) in [
        (30 * M, 12.0),
        (H + 30 * M, 1.0),
        (3 * H + 30 * M, 9.0),
        (4 * H + 30 * M, 10.0),
        (5 * H + 2 * M, 1.0),
    ] {
        recs.push(sale("sales-1", t0 + at, units));
    }

    let expected = vec![
        fire("abs-1", "pos-offline", "pos-1", 10 * M, 12 * M, 2.0),
        resolve("abs-1", "pos-offline", "pos-1", 10 * M, 20 * M, 20 * M, 0.0),
        fire("abs-1", "pos-offline", "pos-4", 0, 2 * M, 2.0),
        resolve("abs-1", "pos-offline", "pos-4", 0, 2 * M, 2 * M, 0.0),
        // 10 °C over for 6 unmasked minutes = 60 degree-minutes at 18m.
        fire("cold-1", "exposure", "freezer-1", 10 * M, 18 * M, 60.0),
        resolve(
            "cold-1",
            "exposure",
            "freezer-1",
            10 * M,
            19 * M,
            29 * M,
            70.0,
        ),
        fire("cover-1", "cover", "milk-1l", 10 * M, 10 * M, 1.5),
        resolve("cover-1", "cover", "milk-1l", 10 * M, 30 * M, 30 * M, 5.0),
        fire("rate-1", "rising", "freezer-1", 17 * M, 17 * M, 3.5),
        resolve("rate-1", "rising", "freezer-1", 17 * M, 29 * M, 39 * M, 0.0),
        fire("sales-1", "sales-drop", "sales-1", H, 3 * H, 0.0),
        resolve("sales-1", "sales-drop", "sales-1", H, 3 * H, 4 * H, 0.9),
        fire("stock-1", "low-stock", "milk-1l", 2 * M, 2 * M, 4.0),
        resolve("stock-1", "low-stock", "milk-1l", 2 * M, 4 * M, 4 * M, 25.0),
        fire("thr-1", "freezer-warm", "freezer-1", 6 * M, 16 * M, -14.9),
        resolve(
            "thr-1",
            "freezer-warm",
            "freezer-1",
            6 * M,
            16 * M,
            21 * M,
            -18.0,
        ),
    ];
    (recs, expected)
}

/// Waits until `alerts.v1` holds `n` records, stops the service, and returns them.
async fn settle(
    stack: &TestStack,
    n: usize,
    shutdown: CancellationToken,
    handles: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
) -> Vec<storepulse_runtime::records::AlertTransition> {
    eventually(
        &format!("{n} alert transitions"),
        Duration::from_secs(120),
        || async { (alerts(stack).await.len() >= n).then_some(()) },
    )
    .await;
    shutdown.cancel();
    for h in handles {
        h.await.expect("join").expect("rules stops cleanly");
    }
    alerts(stack).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_kind_gives_exactly_the_expected_alerts() {
    let stack = TestStack::start("rules-kinds").await;
    let t0 = hour_ago_base();
    let (recs, expected) = every_kind(t0);
    send_all(&producer(&stack), &recs).await;
    let file = rule_file(&stack, KINDS);
    let shutdown = CancellationToken::new();
    let (_url, handle) = start_rules(&stack, settings(&stack, &file, "rules"), &shutdown).await;
    let got = settle(&stack, expected.len(), shutdown.clone(), vec![handle]).await;
    assert_eq!(seen(&got, t0), expected);
    // One id per incident, one per step; firing before resolved on the topic.
    assert!(got.iter().all(|a| a.rule_kind.is_some()));
    let mut ids = std::collections::HashSet::new();
    for a in &got {
        assert!(ids.insert(a.envelope.event_id.clone()), "duplicate {a:?}");
    }
    for a in got
        .iter()
        .filter(|a| a.state == storepulse_runtime::records::AlertState::Resolved)
    {
        let first = got
            .iter()
            .position(|b| b.alert_id == a.alert_id)
            .expect("its firing");
        assert_eq!(
            got[first].state,
            storepulse_runtime::records::AlertState::Firing
        );
    }
}

/// The threshold sequence of `thr-1` for one store and device.
fn incident(
    store: &str,
    device: &str,
    t0: i64,
    minutes: std::ops::RangeInclusive<i64>,
) -> Vec<Rec> {
    minutes
        .map(|m| {
            let v = if (6..=15).contains(&m) { -14.9 } else { -18.0 };
            temp(store, device, t0 + m * M, v)
        })
        .collect()
}

fn incident_alerts(store: &str) -> Vec<Seen> {
    vec![
        fire(store, "freezer-warm", "freezer-1", 6 * M, 16 * M, -14.9),
        resolve(
            store,
            "freezer-warm",
            "freezer-1",
            6 * M,
            16 * M,
            21 * M,
            -18.0,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_events_decide_as_in_order_and_late_ones_are_counted_not_applied() {
    let stack = TestStack::start("rules-late").await;
    let t0 = hour_ago_base();
    let mut recs = incident("thr-2", "freezer-1", t0, 0..=40);
    // Each pair arrives reversed: one minute out of order, within the lateness.
    for pair in recs.chunks_mut(2) {
        pair.reverse();
    }
    let mut recs: Vec<Rec> = recs
        .into_iter()
        .map(|r| {
            let at = r.input().observation.at;
            r.received(at + M)
        })
        .collect();
    // Then three readings far behind the store's time: late. Applied, they would
    // open a second incident.
    for m in [3, 4, 5] {
        recs.push(temp("thr-2", "freezer-1", t0 + m * M, 0.0).received(t0 + 41 * M));
    }
    // And a last one to be sure the late ones were read before we look.
    recs.push(temp("thr-2", "freezer-1", t0 + 41 * M, -18.0).received(t0 + 42 * M));
    send_all(&producer(&stack), &recs).await;
    let file = rule_file(&stack, KINDS);
    let shutdown = CancellationToken::new();
    let (url, handle) = start_rules(&stack, settings(&stack, &file, "rules"), &shutdown).await;
    eventually(
        "the late readings counted",
        Duration::from_secs(120),
        || {
            let url = url.clone();
            async move {
                metric(
                    &url,
                    "storepulse_rules_late_events_total",
                    "source=\"sensor\"",
                )
                .await
                .filter(|n| *n >= 3.0)
            }
        },
    )
    .await;
    assert_eq!(
        metric(
            &url,
            "storepulse_rules_late_events_total",
            "source=\"sensor\""
        )
        .await,
        Some(3.0)
    );
    let got = settle(&stack, 2, shutdown.clone(), vec![handle]).await;
    assert_eq!(seen(&got, t0), incident_alerts("thr-2"));
}

const IDLE: &str = r#"
[[rules]]
name = "pos-offline"
kind = "absence"
match = { source = "heartbeat" }
timeout = "5s"

[[rules]]
name = "store-silent"
kind = "absence"
match = { source = "any" }
per = "store"
timeout = "5s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partition_still_fires_absence_alerts() {
    let stack = TestStack::start("rules-idle").await;
    let file = rule_file(&stack, IDLE);
    let shutdown = CancellationToken::new();
    let mut s = settings(&stack, &file, "rules");
    s.allowed_lateness_ms = 1_000;
    s.idle_timeout_ms = 2_000;
    let (_url, handle) = start_rules(&stack, s, &shutdown).await;
    // Live heartbeats, then nothing at all arrives on any partition.
    let now = chrono::Utc::now().timestamp_micros();
    let last = now - S;
    let recs: Vec<Rec> = (0..5)
        .map(|i| beat("idle-1", "pos-1", last - (4 - i) * S))
        .collect();
    send_all(&producer(&stack), &recs).await;
    let got = settle(&stack, 2, shutdown.clone(), vec![handle]).await;
    assert_eq!(
        seen(&got, last),
        vec![
            fire("idle-1", "pos-offline", "pos-1", 0, 5 * S, 5.0 / 60.0),
            fire("idle-1", "store-silent", "idle-1", 0, 5 * S, 5.0 / 60.0),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_incident_neither_loses_nor_repeats_an_alert() {
    let stack = TestStack::start("rules-kill").await;
    let t0 = hour_ago_base();
    let stores: Vec<String> = (0..20).map(|i| format!("thr-k{i:02}")).collect();
    let mut recs = Vec::new();
    for m in 0..=40 {
        for s in &stores {
            recs.extend(incident(s, "freezer-1", t0, m..=m));
        }
    }
    send_all(&producer(&stack), &recs).await;
    // Every checkpoint takes a while, so the kill lands mid-stream.
    storepulse_runtime::db::migrate_set(&stack.pool, &storepulse_rules::checkpoint::MIGRATIONS)
        .await
        .expect("rules schema");
    stack
        .pool
        .get()
        .await
        .expect("client")
        .batch_execute(
            "CREATE FUNCTION test_slow_checkpoint() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep(0.15); RETURN NULL; END $$;
             CREATE TRIGGER test_slow_checkpoint AFTER INSERT OR UPDATE ON rules.store_state
               FOR EACH STATEMENT EXECUTE FUNCTION test_slow_checkpoint();",
        )
        .await
        .expect("slow trigger");
    let file = rule_file(&stack, KINDS);
    let mut s = settings(&stack, &file, "rules");
    s.batch_max_records = 40;
    let mut process = spawn_rules(&stack, &s);
    let at_kill = eventually("the first alerts", Duration::from_secs(120), || async {
        let n = alerts(&stack).await.len();
        (n > 0).then_some(n)
    })
    .await;
    process.0.kill().expect("SIGKILL rules");
    process.0.wait().expect("reaped");
    assert!(
        at_kill < 2 * stores.len(),
        "the kill happened mid-stream ({at_kill})"
    );
    let mut again = spawn_rules(&stack, &s);
    eventually("every alert", Duration::from_secs(180), || async {
        (alerts(&stack).await.len() >= 2 * stores.len()).then_some(())
    })
    .await;
    // Stop it gracefully (SIGTERM), so anything it still had would be out.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &again.0.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = again.0.wait().expect("wait");
    assert!(exit.success(), "rules exits cleanly on SIGTERM: {exit:?}");
    let got = alerts(&stack).await;
    let mut expected: Vec<Seen> = stores.iter().flat_map(|s| incident_alerts(s)).collect();
    sort(&mut expected);
    assert_eq!(seen(&got, t0), expected, "no alert lost, none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_the_stores_and_give_the_same_alerts_as_one() {
    let stack = TestStack::start("rules-scale").await;
    let t0 = hour_ago_base();
    let stores: Vec<String> = (0..16).map(|i| format!("thr-r{i:02}")).collect();
    let phase = |minutes: std::ops::RangeInclusive<i64>| {
        let mut recs = Vec::new();
        for m in minutes {
            for s in &stores {
                recs.extend(incident(s, "freezer-1", t0, m..=m));
            }
        }
        recs
    };
    let p = producer(&stack);
    send_all(&p, &phase(0..=18)).await;
    let file = rule_file(&stack, KINDS);
    let shutdown = CancellationToken::new();
    let (_a, first) = start_rules(&stack, settings(&stack, &file, "rules"), &shutdown).await;
    eventually("every store firing", Duration::from_secs(120), || async {
        (alerts(&stack).await.len() >= stores.len()).then_some(())
    })
    .await;
    let (b, second) = start_rules(&stack, settings(&stack, &file, "rules"), &shutdown).await;
    eventually(
        "the second member holds partitions",
        Duration::from_secs(120),
        || {
            let b = b.clone();
            async move {
                metric(
                    &b,
                    "storepulse_assigned_partitions",
                    "topic=\"sensor.readings.v1\"",
                )
                .await
                .filter(|n| *n > 0.0)
            }
        },
    )
    .await;
    send_all(&p, &phase(19..=40)).await;
    let got = settle(
        &stack,
        2 * stores.len(),
        shutdown.clone(),
        vec![first, second],
    )
    .await;
    let mut expected: Vec<Seen> = stores.iter().flat_map(|s| incident_alerts(s)).collect();
    sort(&mut expected);
    assert_eq!(seen(&got, t0), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_outbox_publishes_only_what_is_not_on_the_topic_yet() {
    use storepulse_runtime::records::{AlertState, AlertTransition};
    let stack = TestStack::start("rules-outbox").await;
    let t0 = hour_ago_base();
    send_all(
        &producer(&stack),
        &incident("thr-o", "freezer-1", t0, 0..=18),
    )
    .await;
    let file = rule_file(&stack, KINDS);
    let group = "rules";
    let shutdown = CancellationToken::new();
    let (_u, handle) = start_rules(&stack, settings(&stack, &file, group), &shutdown).await;
    let published = settle(&stack, 1, shutdown.clone(), vec![handle]).await;
    assert_eq!(published.len(), 1);
    // A crash after the broker acknowledged a transition but before its outbox row
    // was deleted leaves the row behind; so does one before it was sent at all.
    let firing = &published[0];
    let mut unsent: AlertTransition = firing.clone();
    unsent.state = AlertState::Resolved;
    unsent.envelope.event_id = uuid::Uuid::new_v4().to_string();
    unsent.ended_at = Some(firing.started_at + 10 * M);
    let codec = storepulse_runtime::AvroCodec::new();
    let full_group = format!("{}{group}", stack.kafka.topic_prefix);
    let client = stack.pool.get().await.expect("client");
    let partition: i32 = client
        .query_one(
            "SELECT partition FROM rules.store_state WHERE consumer_group = $1 AND store_id = 'thr-o'",
            &[&full_group],
        )
        .await
        .expect("store state")
        .get(0);
    for a in [firing, &unsent] {
        client
            .execute(
                "INSERT INTO rules.outbox (consumer_group, partition, event_id, record_key, payload)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &full_group,
                    &partition,
                    &a.envelope.event_id,
                    &"acme/thr-o",
                    &codec.encode(a).expect("encode"),
                ],
            )
            .await
            .expect("outbox row");
    }
    let shutdown = CancellationToken::new();
    let (url, handle) = start_rules(&stack, settings(&stack, &file, group), &shutdown).await;
    eventually("the outbox settled", Duration::from_secs(120), || {
        let url = url.clone();
        async move {
            metric(
                &url,
                "storepulse_rules_outbox_restored_total",
                "outcome=\"already_on_topic\"",
            )
            .await
            .filter(|n| *n >= 1.0)
        }
    })
    .await;
    let got = settle(&stack, 2, shutdown.clone(), vec![handle]).await;
    let ids: Vec<&str> = got.iter().map(|a| a.envelope.event_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            firing.envelope.event_id.as_str(),
            unsent.envelope.event_id.as_str()
        ]
    );
    assert_eq!(
        stack.count("SELECT count(*) FROM rules.outbox").await,
        0,
        "the outbox is empty once everything is on the topic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtest_decides_exactly_what_the_live_service_did() {
    let stack = TestStack::start("rules-backtest").await;
    let t0 = hour_ago_base();
    let (recs, expected) = every_kind(t0);
    send_all(&producer(&stack), &recs).await;
    let file = rule_file(&stack, KINDS);
    let s = settings(&stack, &file, "rules");
    let time = s.time();
    let shutdown = CancellationToken::new();
    let (_url, handle) = start_rules(&stack, s, &shutdown).await;
    let live = settle(&stack, expected.len(), shutdown.clone(), vec![handle]).await;
    assert_eq!(seen(&live, t0), expected);

    let kafka = stack.kafka.clone();
    let rules =
        std::sync::Arc::new(storepulse_rules::rule_file::RuleSet::load(&file).expect("rules"));
    let backtest = tokio::task::spawn_blocking(move || {
        storepulse_rules::backtest::run(
            &kafka,
            rules,
            std::sync::Arc::new(storepulse_rules::calendar::Calendar::always_open()),
            time,
            None,
        )
    })
    .await
    .expect("join")
    .expect("backtest");
    // Every field but the emission time (received_at).
    let key = |a: &storepulse_runtime::records::AlertTransition| {
        let mut a = a.clone();
        a.envelope.received_at = 0;
        let mut labels: Vec<(String, String)> = a.labels.drain().collect();
        labels.sort();
        (a.envelope.event_id.clone(), format!("{a:?}"), labels)
    };
    let mut from_live: Vec<_> = live.iter().map(key).collect();
    let mut from_backtest: Vec<_> = backtest
        .transitions
        .iter()
        .map(|t| key(&t.to_record(0)))
        .collect();
    from_live.sort();
    from_backtest.sort();
    assert_eq!(from_backtest, from_live);
    let report = backtest.render();
    assert!(report.contains("8 alerts fired, 8 resolved"), "{report}");
    assert!(report.contains("freezer-warm"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rule_file_reloads_live_keeping_state_and_refusing_invalid_versions() {
    let stack = TestStack::start("rules-reload").await;
    let t0 = hour_ago_base();
    let file = rule_file(&stack, KINDS);
    let shutdown = CancellationToken::new();
    let (url, handle) = start_rules(&stack, settings(&stack, &file, "rules"), &shutdown).await;
    let p = producer(&stack);
    // Beyond the threshold from 6m; the service has seen it up to 9m.
    let first: Vec<Rec> = (0..=9)
        .map(|m| {
            temp(
                "thr-h",
                "freezer-1",
                t0 + m * M,
                if m >= 6 { -14.9 } else { -18.0 },
            )
        })
        .collect();
    send_all(&p, &first).await;
    let loaded = |n: f64| {
        let url = url.clone();
        async move {
            metric(&url, "storepulse_rules_rules_loaded", "")
                .await
                .filter(|v| *v == n)
        }
    };
    eventually("the rules in force", Duration::from_secs(60), || {
        loaded(7.0)
    })
    .await;
    // An invalid version is refused; the rules in force stay.
    std::fs::write(&file, KINDS.replace("above = -15", "above = \"warm\"")).expect("write");
    eventually(
        "the invalid version refused",
        Duration::from_secs(60),
        || {
            let url = url.clone();
            async move {
                metric(
                    &url,
                    "storepulse_rules_reloads_total",
                    "outcome=\"invalid\"",
                )
                .await
                .filter(|v| *v >= 1.0)
            }
        },
    )
    .await;
    assert_eq!(
        metric(&url, "storepulse_rules_rules_loaded", "").await,
        Some(7.0)
    );
    // A valid one: `for` shortened to 5 minutes, and one more rule.
    let changed = KINDS.replace("for = \"10m\"", "for = \"5m\"")
        + "\n[[rules]]\nname = \"extra\"\nkind = \"absence\"\nmatch = { source = \"heartbeat\", stores = [\"none\"] }\ntimeout = \"1h\"\n";
    std::fs::write(&file, changed).expect("write");
    eventually("the new version in force", Duration::from_secs(60), || {
        loaded(8.0)
    })
    .await;
    let second: Vec<Rec> = (10..=23)
        .map(|m| {
            temp(
                "thr-h",
                "freezer-1",
                t0 + m * M,
                if m <= 15 { -14.9 } else { -18.0 },
            )
        })
        .collect();
    send_all(&p, &second).await;
    let got = settle(&stack, 2, shutdown.clone(), vec![handle]).await;
    // The breach that began before the reload fires 5 minutes after it began.
    assert_eq!(
        seen(&got, t0),
        vec![
            fire("thr-h", "freezer-warm", "freezer-1", 6 * M, 11 * M, -14.9),
            resolve(
                "thr-h",
                "freezer-warm",
                "freezer-1",
                6 * M,
                16 * M,
                21 * M,
                -18.0
            ),
        ]
    );
}

const OPEN_HOURS: &str = r#"
[[rules]]
name = "pos-offline"
kind = "absence"
match = { source = "heartbeat", stores = ["cal-*"] }
timeout = "5m"

[[rules]]
name = "pos-offline-open"
kind = "absence"
match = { source = "heartbeat", stores = ["cal-*"] }
timeout = "5m"
during = "open_hours"

[[rules]]
name = "freezer-warm-open"
kind = "threshold"
match = { source = "sensor", kind = "temperature", stores = ["cal-*"] }
above = -15
for = "2m"
during = "open_hours"
"#;

/// A calendar in Asia/Kolkata (UTC+05:30) under which the store is closed from
/// `t0` + 10m to `t0` + 30m and open otherwise, every day.
fn closed_from_10_to_30_minutes(t0: i64) -> String {
    let hour = (t0.div_euclid(H)).rem_euclid(24);
    // t0 is local x:30; closed x:40 .. (x+1):00.
    let x = (hour * 60 + 330).div_euclid(60) % 24;
    let hours = if x == 23 {
        "00:00-23:40".to_string()
    } else {
        format!("00:00-{x:02}:40, {:02}:00-24:00", x + 1)
    };
    let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .map(|d| format!("{d} = \"{hours}\""))
        .join(", ");
    format!("[defaults]\ntime_zone = \"Asia/Kolkata\"\nhours = {{ {days} }}\n")
}

/// The store calendar decides whether silence is suspicious: an open-hours absence
/// counts only open time (a terminal silent over the closed hours does not fire,
/// one silent since before closing fires after `timeout` of open time), and an
/// open-hours threshold ignores readings while the store is closed. The same
/// sequence under the always-on rule fires as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_calendar_decides_whether_silence_is_suspicious() {
    let stack = TestStack::start("rules-calendar").await;
    let t0 = hour_ago_base();
    let mut recs = Vec::new();
    for half in 0..=80 {
        let t = t0 + half * 30 * S;
        let m = half as f64 / 2.0;
        if m <= 8.0 || m >= 32.0 {
            recs.push(beat("cal-1", "pos-1", t));
        }
        if m <= 2.0 || m >= 9.0 {
            recs.push(beat("cal-1", "pos-2", t));
        }
        if m <= 25.0 {
            recs.push(beat("cal-1", "pos-3", t));
        }
        recs.push(beat("cal-1", "pos-4", t));
    }
    for m in 0..=40 {
        let warm = (12..=20).contains(&m) || m >= 34;
        recs.push(temp(
            "cal-1",
            "freezer-1",
            t0 + m * M,
            if warm { -10.0 } else { -18.0 },
        ));
    }
    send_all(&producer(&stack), &recs).await;
    let file = rule_file(&stack, OPEN_HOURS);
    let calendar = stack.dir.path().join("stores.toml");
    std::fs::write(&calendar, closed_from_10_to_30_minutes(t0)).expect("write calendar");
    let mut s = settings(&stack, &file, "rules");
    s.calendar_file = calendar.display().to_string();
    let mut expected = vec![
        // Always on: every silence of 5 minutes.
        fire("cal-1", "pos-offline", "pos-1", 8 * M, 13 * M, 5.0),
        resolve("cal-1", "pos-offline", "pos-1", 8 * M, 32 * M, 32 * M, 0.0),
        fire("cal-1", "pos-offline", "pos-2", 2 * M, 7 * M, 5.0),
        resolve("cal-1", "pos-offline", "pos-2", 2 * M, 9 * M, 9 * M, 0.0),
        fire("cal-1", "pos-offline", "pos-3", 25 * M, 30 * M, 5.0),
        // Open hours: pos-1 was silent 2 open minutes before closing and 2 after
        // opening (no alert); pos-2 in open hours as above; pos-3 fell silent
        // while closed: 5 open minutes after opening.
        fire("cal-1", "pos-offline-open", "pos-2", 2 * M, 7 * M, 5.0),
        resolve(
            "cal-1",
            "pos-offline-open",
            "pos-2",
            2 * M,
            9 * M,
            9 * M,
            0.0,
        ),
        fire("cal-1", "pos-offline-open", "pos-3", 25 * M, 35 * M, 10.0),
        // Warm while closed: ignored; warm from 34m while open: fires 2m later.
        fire(
            "cal-1",
            "freezer-warm-open",
            "freezer-1",
            34 * M,
            36 * M,
            -10.0,
        ),
    ];
    sort(&mut expected);
    let shutdown = CancellationToken::new();
    let (_url, handle) = start_rules(&stack, s, &shutdown).await;
    let got = settle(&stack, expected.len(), shutdown.clone(), vec![handle]).await;
    assert_eq!(seen(&got, t0), expected);
}
