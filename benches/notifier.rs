//! Notifier routing and planning cost with many open alerts and a large routing tree.
//!
//! `cargo bench --bench notifier`
//!
//! - `route_10k_alerts_100_routes`: routing every one of 10,000 open alerts through a
//!   tree of 100 routes (equality and regex matchers, `continue` on some) into the
//!   ledger rows they make (receiver, route, group key, the alert as messages show
//!   it) — what the alerts.v1 consumer does per record before the ledger write.
//! - `plan_10k_pending`: one delivery worker round's grouping plan over 10,000
//!   pending deliveries (group by tenant and store, group_wait elapsed).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use storepulse_notifier::grouping::{GroupClock, Timings};
use storepulse_notifier::ledger::PendingDelivery;
use storepulse_notifier::policy::Policy;
use storepulse_notifier::router::deliveries;
use storepulse_runtime::records::AlertTransition;

const ALERTS: usize = 10_000;
const ROUTES: usize = 100;

fn policy() -> Policy {
    let mut text = String::from(
        "[route]\nreceiver = \"r0\"\ngroup_by = [\"tenant\", \"store\"]\ngroup_wait = \"30s\"\n",
    );
    for i in 0..ROUTES {
        let matchers = if i % 2 == 0 {
            format!(
                "['store =~ \"store-{:02}[0-9]\"', 'severity = \"critical\"']",
                i / 2 % 100
            )
        } else {
            format!("['rule = \"rule-{i}\"', 'team = \"t{}\"']", i % 7)
        };
        text.push_str(&format!(
            "[[route.routes]]\nreceiver = \"r{}\"\nmatchers = {matchers}\ncontinue = {}\n",
            i % 10,
            i % 10 == 0
        ));
    }
    for r in 0..10 {
        text.push_str(&format!(
            "[[receivers]]\nname = \"r{r}\"\n[[receivers.channels]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/r{r}\"\n"
        ));
    }
    Policy::parse(&text, &|_| None).expect("bench policy")
}

fn alerts() -> Vec<AlertTransition> {
    let severities = ["Info", "Warning", "Critical"];
    (0..ALERTS)
        .map(|i| {
            let labels: HashMap<String, String> =
                HashMap::from([("team".to_string(), format!("t{}", i % 7))]);
            serde_json::from_value(serde_json::json!({
                "envelope": {"event_id": format!("e-{i}"), "tenant_id": "acme",
                             "store_id": format!("store-{:03}", i % 1000),
                             "occurred_at": 1_800_000_000_000_000i64,
                             "received_at": 1_800_000_000_000_000i64, "source": "bench"},
                "alert_id": format!("a-{i}"), "rule_id": format!("rule-{}", i % ROUTES),
                "state": "Firing", "severity": severities[i % 3],
                "subject": format!("pos-{}", i % 3), "summary": "terminal silent",
                "value": null, "started_at": 1_800_000_000_000_000i64, "labels": labels,
            }))
            .expect("bench alert")
        })
        .collect()
}

struct Fixed;

impl Timings for Fixed {
    fn group_wait(&self, _: &str) -> Duration {
        Duration::from_secs(30)
    }
    fn group_interval(&self, _: &str) -> Duration {
        Duration::from_secs(300)
    }
}

fn routing(c: &mut Criterion) {
    let policy = policy();
    let alerts = alerts();
    let routed: usize = alerts.iter().map(|a| deliveries(&policy, a).len()).sum();
    assert!(routed >= ALERTS, "every alert reaches a receiver");
    let mut group = c.benchmark_group("notifier");
    group.throughput(Throughput::Elements(ALERTS as u64));
    group.bench_function("route_10k_alerts_100_routes", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for a in &alerts {
                n += deliveries(&policy, a).len();
            }
            n
        })
    });

    let received: DateTime<Utc> = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
    let pending: Vec<PendingDelivery> = alerts
        .iter()
        .flat_map(|a| deliveries(&policy, a))
        .take(ALERTS)
        .map(|d| PendingDelivery {
            transition_id: d.transition_id,
            alert_id: d.alert_id,
            alert_state: d.alert_state.to_string(),
            tenant_id: d.tenant_id,
            store_id: d.store_id,
            route: d.route,
            group_key: d.group_key,
            alert: d.alert,
            received_at: received,
            message_id: None,
        })
        .collect();
    let clock = GroupClock::default();
    let now = received + Duration::from_secs(60);
    group.bench_function("plan_10k_pending", |b| {
        b.iter_batched(
            || pending.clone(),
            |p| clock.plan(p, &Fixed, now).messages.len(),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
