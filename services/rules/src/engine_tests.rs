//! Engine tests with explicit clocks: every time is given, nothing sleeps.

use super::*;
use crate::rule_file::RuleSet;
use storepulse_runtime::records::{NetworkStatus, PrinterStatus};

const S: i64 = 1_000_000;
const M: i64 = 60 * S;
/// An arbitrary epoch for the tests (2026-11-23T10:00:00Z).
const T0: i64 = 1_795_428_000_000_000;

const RULES: &str = r#"
[[rules]]
name = "freezer-warm"
kind = "threshold"
match = { source = "sensor", kind = "temperature", labels = { appliance = "freezer" } }
above = -15
for = "10m"
clear = -17
clear_for = "5m"
severity = "critical"
message = "{entity} at {value} °C since {since}"

[[rules]]
name = "pos-offline"
kind = "absence"
match = { source = "heartbeat" }
timeout = "2m"

[[rules]]
name = "store-silent"
kind = "absence"
match = { source = "any" }
per = "store"
timeout = "15m"
"#;

fn store(s: &str) -> StoreRef {
    StoreRef {
        tenant: "acme".into(),
        store: s.into(),
    }
}

fn temp(s: &str, device: &str, at: i64, v: f64) -> Input {
    Input {
        store: store(s),
        observation: Observation {
            source: Source::Sensor,
            at,
            received: at,
            entity: device.into(),
            value: v,
            detail: Detail::Sensor {
                kind: SensorKind::Temperature,
                appliance: Some("freezer".into()),
            },
        },
    }
}

fn beat(s: &str, terminal: &str, at: i64) -> Input {
    Input {
        store: store(s),
        observation: Observation {
            source: Source::Heartbeat,
            at,
            received: at,
            entity: terminal.into(),
            value: 1.0,
            detail: Detail::Heartbeat {
                printer: PrinterStatus::Ok,
                network: NetworkStatus::Online,
            },
        },
    }
}

fn engine(rules: &str, lateness: i64, idle: i64) -> Engine {
    Engine::new(
        Arc::new(RuleSet::parse(rules).expect("rules")),
        Arc::new(Calendar::always_open()),
        TimeSettings {
            allowed_lateness: lateness,
            idle_timeout: idle,
        },
    )
}

/// (rule, entity, firing, start, at) of each transition.
fn summary(out: &Output) -> Vec<(String, String, bool, i64, i64)> {
    out.transitions
        .iter()
        .map(|(_, t)| {
            (
                t.rule.clone(),
                t.entity.clone(),
                t.firing,
                t.started_at - T0,
                t.at - T0,
            )
        })
        .collect()
}

fn feed(e: &mut Engine, inputs: Vec<Input>) -> Output {
    let mut out = Output::default();
    for i in inputs {
        let now = i.observation.received;
        e.observe(0, i, now, &mut out);
    }
    out
}

#[test]
fn threshold_fires_at_exactly_for_and_resolves_after_clear_for() {
    let mut e = engine(RULES, 0, 60 * M);
    let mut inputs = Vec::new();
    // -18 until 5m, -14.9 from 5m to 30m (held 25 min), then -17.5.
    for m in 0..=40 {
        let v = if m < 5 {
            -18.0
        } else if m < 30 {
            -14.9
        } else {
            -17.5
        };
        inputs.push(temp("s1", "freezer-1", T0 + m * M, v));
    }
    let out = feed(&mut e, inputs);
    let s = summary(&out);
    assert_eq!(
        s,
        vec![
            (
                "freezer-warm".into(),
                "freezer-1".into(),
                true,
                5 * M,
                15 * M
            ),
            (
                "freezer-warm".into(),
                "freezer-1".into(),
                false,
                5 * M,
                35 * M
            ),
        ]
    );
    let fire = &out.transitions[0].1;
    assert_eq!(fire.value, Some(-14.9));
    assert_eq!(
        fire.message,
        "freezer-1 at -14.9 °C since 2026-11-23T10:05:00Z"
    );
    assert_eq!(
        fire.labels.get("appliance").map(String::as_str),
        Some("freezer")
    );
    let resolve = &out.transitions[1].1;
    assert_eq!(resolve.ended_at, Some(T0 + 30 * M));
    assert_eq!(fire.alert_id(), resolve.alert_id());
    assert_ne!(fire.event_id(), resolve.event_id());
}

#[test]
fn a_breach_one_reading_short_of_for_does_not_fire() {
    let mut e = engine(RULES, 0, 60 * M);
    let mut inputs = Vec::new();
    for m in 0..=20 {
        // Beyond from 1m; back at 11m - 1µs: held 10 min minus 1 µs.
        inputs.push(temp(
            "s1",
            "freezer-1",
            T0 + m * M,
            if m >= 1 { -14.0 } else { -18.0 },
        ));
        if m == 10 {
            inputs.push(temp("s1", "freezer-1", T0 + 11 * M - 1, -18.0));
        }
    }
    let out = feed(
        &mut e,
        inputs
            .into_iter()
            .filter(|i| i.observation.at < T0 + 11 * M)
            .collect(),
    );
    assert!(summary(&out).is_empty(), "{:?}", summary(&out));
}

#[test]
fn out_of_order_within_lateness_decides_as_in_order() {
    let mut ordered = Vec::new();
    for m in 0..40 {
        let v = if (5..30).contains(&m) { -14.0 } else { -18.0 };
        ordered.push(temp("s1", "freezer-1", T0 + m * M, v));
    }
    let mut shuffled = ordered.clone();
    // Swap neighbours: each pair arrives reversed (1 minute out of order).
    for pair in shuffled.chunks_mut(2) {
        pair.reverse();
    }
    for i in &mut shuffled {
        // Received in the arrival order, a few seconds after the later of the pair.
        i.observation.received = i.observation.at + 2 * M;
    }
    let mut a = engine(RULES, 2 * M, 60 * M);
    let mut b = engine(RULES, 2 * M, 60 * M);
    let oa = feed(&mut a, ordered);
    let ob = feed(&mut b, shuffled);
    assert_eq!(summary(&oa), summary(&ob));
    assert_eq!(summary(&oa).len(), 2);
    assert_eq!(ob.late, [0; 5]);
}

#[test]
fn events_later_than_the_lateness_are_counted_not_applied() {
    let mut e = engine(RULES, M, 60 * M);
    let mut out = feed(
        &mut e,
        vec![
            temp("s1", "freezer-1", T0, -18.0),
            temp("s1", "freezer-1", T0 + 10 * M, -18.0),
        ],
    );
    // Watermark is now 9m: an event at 8m59 is late, one at 9m is not.
    e.observe(
        0,
        temp("s1", "freezer-1", T0 + 9 * M - 1, -5.0),
        T0 + 10 * M,
        &mut out,
    );
    assert_eq!(out.late[Source::Sensor.index()], 1);
    e.observe(
        0,
        temp("s1", "freezer-1", T0 + 9 * M, -18.0),
        T0 + 10 * M,
        &mut out,
    );
    assert_eq!(out.late[Source::Sensor.index()], 1);
    // Another store's time is its own: its old events are not late.
    e.observe(0, temp("s2", "freezer-1", T0, -18.0), T0 + 10 * M, &mut out);
    assert_eq!(out.late[Source::Sensor.index()], 1);
}

#[test]
fn a_store_uploading_an_hour_of_buffered_events_stalls_no_one() {
    let mut e = engine(RULES, 30 * S, M);
    let mut out = Output::default();
    // s1 is live; s2's gateway uploads an hour of buffered heartbeats at once.
    for m in 0..60 {
        e.observe(0, beat("s1", "pos-1", T0 + m * M), T0 + m * M, &mut out);
    }
    let now = T0 + 60 * M;
    for m in 0..60 {
        let mut b = beat("s2", "pos-1", T0 + m * M);
        b.observation.received = now;
        e.observe(0, b, now, &mut out);
    }
    // s2's events come from more than idle_timeout before the partition's arrival
    // frontier: late, not applied, and no absence alert for s2 or s1.
    assert_eq!(
        out.late[Source::Heartbeat.index()],
        59,
        "all but the last minute"
    );
    assert!(summary(&out).is_empty(), "{:?}", summary(&out));
    // s1 goes on in time.
    e.observe(0, beat("s1", "pos-1", now + M), now + M, &mut out);
    assert!(summary(&out).is_empty());
}

#[test]
fn absence_fires_on_idle_ticks_and_resolves_when_heard_again() {
    let mut e = engine(RULES, 30 * S, M);
    let mut out = feed(
        &mut e,
        vec![beat("s1", "pos-1", T0), beat("s1", "pos-2", T0 + M)],
    );
    // Nothing arrives; the partition is idle. At T0+2m+1m (idle timeout) the
    // watermark reaches pos-1's deadline.
    e.tick(0, &[Source::Heartbeat], T0 + 3 * M - 1, &mut out);
    assert!(summary(&out).is_empty());
    e.tick(0, &[Source::Heartbeat], T0 + 3 * M, &mut out);
    assert_eq!(
        summary(&out),
        vec![("pos-offline".into(), "pos-1".into(), true, 0, 2 * M)]
    );
    e.tick(0, &[Source::Heartbeat], T0 + 4 * M, &mut out);
    assert_eq!(summary(&out).len(), 2);
    assert_eq!(
        summary(&out)[1],
        ("pos-offline".into(), "pos-2".into(), true, M, 3 * M)
    );
    // Ticks never fire twice.
    e.tick(0, &Source::ALL, T0 + 10 * M, &mut out);
    assert_eq!(summary(&out).len(), 2);
    // pos-1 speaks again.
    e.observe(0, beat("s1", "pos-1", T0 + 11 * M), T0 + 11 * M, &mut out);
    e.observe(0, beat("s1", "pos-1", T0 + 12 * M), T0 + 12 * M, &mut out);
    assert_eq!(
        summary(&out)[2],
        ("pos-offline".into(), "pos-1".into(), false, 0, 11 * M)
    );
}

#[test]
fn a_whole_store_silent_fires_once_over_every_source() {
    let mut e = engine(RULES, 0, M);
    let mut out = feed(
        &mut e,
        vec![
            beat("s1", "pos-1", T0),
            temp("s1", "freezer-1", T0 + 5 * M, -18.0),
        ],
    );
    e.tick(0, &Source::ALL, T0 + 5 * M + 15 * M + M, &mut out);
    let s: Vec<_> = summary(&out)
        .into_iter()
        .filter(|t| t.0 == "store-silent")
        .collect();
    assert_eq!(
        s,
        vec![("store-silent".into(), "s1".into(), true, 5 * M, 20 * M)]
    );
    // What the `rule`-labelled firing gauge shows (StorePulseStoresSilent alerts on it).
    assert_eq!(
        e.firing_by_rule(),
        BTreeMap::from([("pos-offline", 1), ("store-silent", 1)])
    );
    let mut out2 = Output::default();
    e.observe(
        0,
        temp("s1", "freezer-1", T0 + 30 * M, -18.0),
        T0 + 30 * M,
        &mut out2,
    );
    e.tick(0, &Source::ALL, T0 + 32 * M, &mut out2);
    let s: Vec<_> = summary(&out2)
        .into_iter()
        .filter(|t| t.0 == "store-silent")
        .collect();
    assert_eq!(
        s,
        vec![("store-silent".into(), "s1".into(), false, 5 * M, 30 * M)]
    );
    assert_eq!(e.firing_by_rule(), BTreeMap::from([("pos-offline", 1)]));
}

#[test]
fn restored_state_continues_exactly() {
    let inputs: Vec<Input> = (0..40)
        .map(|m| {
            temp(
                "s1",
                "freezer-1",
                T0 + m * M,
                if (5..30).contains(&m) { -14.0 } else { -18.0 },
            )
        })
        .collect();
    let mut whole = engine(RULES, 2 * M, 60 * M);
    let expected = summary(&feed(&mut whole, inputs.clone()));
    for cut in [1, 7, 16, 20, 33] {
        let mut first = engine(RULES, 2 * M, 60 * M);
        let mut out = feed(&mut first, inputs[..cut].to_vec());
        // Checkpoint: partition metadata and each store, as JSON.
        let meta = serde_json::to_string(first.partition(0).expect("held")).expect("ser");
        let stores: Vec<String> = first
            .dirty_stores(0)
            .iter()
            .map(|s| serde_json::to_string(s).expect("ser"))
            .collect();
        let mut second = engine(RULES, 2 * M, 60 * M);
        let mut p: PartitionState = serde_json::from_str(&meta).expect("de");
        for s in stores {
            let s: StoreState = serde_json::from_str(&s).expect("de");
            p.stores.insert(s.store.clone(), s);
        }
        second.insert_partition(0, p);
        for i in inputs[cut..].iter().cloned() {
            let now = i.observation.received;
            second.observe(0, i, now, &mut out);
        }
        assert_eq!(summary(&out), expected, "cut at {cut}");
    }
}

#[test]
fn reloading_keeps_state_and_resolves_what_was_removed() {
    let mut e = engine(RULES, 0, 60 * M);
    let mut out = feed(
        &mut e,
        (0..12)
            .map(|m| temp("s1", "freezer-1", T0 + m * M, -14.0))
            .collect(),
    );
    assert_eq!(summary(&out).len(), 1, "firing after 10 min");
    // A changed threshold keeps the incident (no new firing, no resolve).
    let changed = RULES.replace("above = -15", "above = -16");
    e.set_rules(Arc::new(RuleSet::parse(&changed).expect("rules")), &mut out);
    assert_eq!(summary(&out).len(), 1);
    let more = feed(&mut e, vec![temp("s1", "freezer-1", T0 + 13 * M, -14.0)]);
    assert!(summary(&more).is_empty());
    // Removing the rule resolves its incident, with the same alert id.
    let removed = RULES.replace(
        "name = \"freezer-warm\"",
        "name = \"freezer-warm\"\nenabled = false",
    );
    e.set_rules(Arc::new(RuleSet::parse(&removed).expect("rules")), &mut out);
    assert_eq!(summary(&out).len(), 2);
    let (fire, resolve) = (&out.transitions[0].1, &out.transitions[1].1);
    assert!(!resolve.firing);
    assert_eq!(fire.alert_id(), resolve.alert_id());
    assert_eq!(resolve.rule_kind, "removed");
}

#[test]
fn each_store_has_its_own_time() {
    let mut e = engine(RULES, 0, 60 * M);
    let mut out = Output::default();
    // s1 is an hour ahead; s2's events are on time for s2.
    e.observe(
        0,
        temp("s1", "freezer-1", T0 + 60 * M, -18.0),
        T0 + 60 * M,
        &mut out,
    );
    for m in 0..15 {
        e.observe(
            0,
            temp("s2", "freezer-1", T0 + m * M, -14.0),
            T0 + 60 * M,
            &mut out,
        );
    }
    assert_eq!(out.late, [0; 5]);
    assert_eq!(summary(&out).len(), 1, "{:?}", summary(&out));
}

#[test]
fn open_hours_rules_count_only_open_time() {
    let rules = r#"
[[rules]]
name = "pos-offline"
kind = "absence"
match = { source = "heartbeat" }
timeout = "30m"
during = "open_hours"

[[rules]]
name = "freezer-warm"
kind = "threshold"
match = { source = "sensor", kind = "temperature" }
above = -15
during = "open_hours"
"#;
    let every_day = "\"08:00-20:00\"";
    let calendar = Calendar::parse(&format!(
        "[defaults]\ntime_zone = \"UTC\"\nhours = {{ mon = {every_day}, tue = {every_day}, wed = {every_day}, thu = {every_day}, fri = {every_day}, sat = {every_day}, sun = {every_day} }}\n"
    ))
    .expect("calendar");
    let mut e = Engine::new(
        Arc::new(RuleSet::parse(rules).expect("rules")),
        Arc::new(calendar),
        TimeSettings {
            allowed_lateness: 0,
            idle_timeout: 60 * M,
        },
    );
    // T0 is 10:00Z. pos-1 beats until 19:50, then at 08:10 the next day (20 open
    // minutes of silence: no alert). pos-2 stops at 19:50 and comes back at 09:00:
    // 30 open minutes are up at 08:20. pos-3 keeps time moving all night.
    let day = 24 * 60 * M;
    let mut inputs = Vec::new();
    for m in (0..=(9 * 60 + 50)).step_by(10) {
        inputs.push(beat("s1", "pos-1", T0 + m * M));
        inputs.push(beat("s1", "pos-2", T0 + m * M));
    }
    for m in (0..=(23 * 60)).step_by(10) {
        inputs.push(beat("s1", "pos-3", T0 + m * M));
    }
    inputs.push(beat("s1", "pos-1", T0 + day - 110 * M));
    inputs.push(beat("s1", "pos-2", T0 + day - 60 * M));
    // A warm reading at night does not count; one in the morning does.
    inputs.push(temp("s1", "freezer-1", T0 + 12 * 60 * M, -10.0));
    inputs.push(temp("s1", "freezer-1", T0 + day - 60 * M, -10.0));
    inputs.sort_by_key(|i| i.observation.at);
    let out = feed(&mut e, inputs);
    assert_eq!(
        summary(&out),
        vec![
            (
                "pos-offline".into(),
                "pos-2".into(),
                true,
                9 * 60 * M + 50 * M,
                day - 100 * M
            ),
            // pos-1 is silent after 08:10: 30 open minutes later.
            (
                "pos-offline".into(),
                "pos-1".into(),
                true,
                day - 110 * M,
                day - 80 * M
            ),
            (
                "pos-offline".into(),
                "pos-2".into(),
                false,
                9 * 60 * M + 50 * M,
                day - 60 * M
            ),
            (
                "freezer-warm".into(),
                "freezer-1".into(),
                true,
                day - 60 * M,
                day - 60 * M
            ),
        ]
    );
}

#[test]
fn an_open_hours_breach_not_held_by_closing_time_does_not_fire_at_night() {
    let rules = r#"
[[rules]]
name = "freezer-warm"
kind = "threshold"
match = { source = "sensor", kind = "temperature" }
above = -15
for = "10m"
during = "open_hours"
"#;
    let every_day = "\"08:00-20:00\"";
    let calendar = Calendar::parse(&format!(
        "[defaults]\ntime_zone = \"UTC\"\nhours = {{ mon = {every_day}, tue = {every_day}, wed = {every_day}, thu = {every_day}, fri = {every_day}, sat = {every_day}, sun = {every_day} }}\n"
    ))
    .expect("calendar");
    let mut e = Engine::new(
        Arc::new(RuleSet::parse(rules).expect("rules")),
        Arc::new(calendar),
        TimeSettings {
            allowed_lateness: 0,
            idle_timeout: 60 * M,
        },
    );
    // T0 is 10:00Z; the store closes at 20:00. freezer-1 turns warm at 19:55 and
    // stays warm all night: 5 open minutes, not 10. Next morning it is warm from
    // 10:00: 10 open minutes at 10:10. freezer-2 (cold) keeps time moving.
    let day = 24 * 60 * M;
    let mut inputs = Vec::new();
    for m in (0..=(day / M + 15)).step_by(5) {
        inputs.push(temp("s1", "freezer-2", T0 + m * M, -18.0));
    }
    for m in ((9 * 60 + 55)..(day / M + 15)).step_by(5) {
        inputs.push(temp("s1", "freezer-1", T0 + m * M, -10.0));
    }
    inputs.sort_by_key(|i| i.observation.at);
    let out = feed(&mut e, inputs);
    let warm: Vec<_> = summary(&out)
        .into_iter()
        .filter(|t| t.1 == "freezer-1")
        .collect();
    // The morning's breach restarts at the first warm reading heard after opening
    // (08:00), and fires 10 open minutes later.
    assert_eq!(
        warm,
        vec![(
            "freezer-warm".into(),
            "freezer-1".into(),
            true,
            day - 2 * 60 * M,
            day - 2 * 60 * M + 10 * M
        )]
    );
}
