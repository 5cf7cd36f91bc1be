//! Rule evaluation throughput: observations per second through the rules engine
//! with 1,000 rules in force over 10,000 entities (100 tenants × 10 stores × 10
//! freezers; each tenant has its own 10 rules, so an event meets its tenant's
//! rules: threshold with hysteresis, absence, rate of change, cold-chain exposure,
//! and rules of other kinds and sources it must skip). The fleet and rule file are
//! [`storepulse::rules_bench`]'s, shared with the end-to-end benchmark
//! (`benches/rules_e2e.rs`).
//!
//! `cargo bench --bench rules`
//!
//! - `observe_sensor_readings`: one reading per freezer per minute, in arrival
//!   order, a minute of lateness allowed (every reading is buffered, then applied
//!   once its store's time passes it); some freezers warm up and cool down, so
//!   incidents fire and resolve along the way.
//!
//! Measured twice: `rules/…` in wall-clock time, `rules_cpu/…` in the CPU time of
//! the measuring thread (`/proc/thread-self/schedstat`), which is the figure per
//! core even on a machine shared with other work (wall time there counts the
//! time the thread waited for a core).

use std::sync::Arc;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use storepulse::rules_bench::{
    ENTITIES, FREEZERS, RULES, STORES, TENANTS, freezer_id, rule_file, store_id, tenant_id,
};
use storepulse_rules::calendar::Calendar;
use storepulse_rules::engine::{Engine, Output, TimeSettings};
use storepulse_rules::observation::{Detail, Input, Observation, Source, StoreRef};
use storepulse_rules::rule_file::RuleSet;
use storepulse_runtime::records::SensorKind;

const MINUTE: i64 = 60_000_000;
const T0: i64 = 1_795_428_000_000_000;

/// `minutes` of readings: every freezer once a minute; every 7th freezer warms up
/// for 20 minutes each hour.
fn readings(minutes: i64) -> Vec<Input> {
    let mut out = Vec::with_capacity(minutes as usize * ENTITIES);
    for m in 0..minutes {
        for t in 0..TENANTS {
            for s in 0..STORES {
                for d in 0..FREEZERS {
                    let warm = (t + s + d) % 7 == 0 && (m % 60) < 20;
                    let at = T0 + m * MINUTE + ((d * 5) as i64) * 1_000_000;
                    out.push(Input {
                        store: StoreRef {
                            tenant: tenant_id(t),
                            store: store_id(s),
                        },
                        observation: Observation {
                            source: Source::Sensor,
                            at,
                            received: at + 2_000_000,
                            entity: freezer_id(d),
                            value: if warm { -10.0 } else { -18.0 },
                            detail: Detail::Sensor {
                                kind: SensorKind::Temperature,
                                appliance: Some("freezer".into()),
                            },
                        },
                    });
                }
            }
        }
    }
    out
}

fn engine(rules: &Arc<RuleSet>) -> Engine {
    Engine::new(
        rules.clone(),
        Arc::new(Calendar::always_open()),
        TimeSettings {
            allowed_lateness: MINUTE,
            idle_timeout: 5 * MINUTE,
        },
    )
}

/// CPU time the current thread has run, ns (Linux `/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("/proc/thread-self/schedstat (Linux) gives the thread's CPU time");
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("schedstat starts with the CPU time in ns")
}

/// Criterion measurement: the CPU time of the measuring thread.
struct ThreadCpuTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }

    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }

    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds, like wall time.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

fn bench_wall(c: &mut Criterion) {
    bench(c, "rules");
}

fn bench_cpu(c: &mut Criterion<ThreadCpuTime>) {
    bench(c, "rules_cpu");
}

fn bench<M: Measurement>(c: &mut Criterion<M>, group_name: &str) {
    let rules = Arc::new(RuleSet::parse(&rule_file()).expect("bench rules are valid"));
    assert_eq!(rules.count(), RULES);
    // Warm state: an hour of readings already applied, so every entity has its
    // cells; then measure the next 10 minutes.
    let warmup = readings(60);
    let mut warm = engine(&rules);
    let mut out = Output::default();
    for i in warmup {
        let now = i.observation.received;
        warm.observe(0, i, now, &mut out);
    }
    assert!(
        out.transitions.iter().any(|(_, t)| !t.firing),
        "the warm-up hour fires and resolves incidents"
    );
    let measured: Vec<Input> = readings(70).split_off(60 * ENTITIES);
    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(measured.len() as u64));
    group.sample_size(10);
    group.bench_function("observe_sensor_readings", |b| {
        b.iter_batched(
            || {
                // A fresh copy of the warm engine per batch (its state moves on).
                let mut e = engine(&rules);
                for p in warm.partitions().collect::<Vec<_>>() {
                    if let Some(state) = warm.partition(p) {
                        e.insert_partition(p, state.clone());
                    }
                }
                (e, measured.clone())
            },
            |(mut e, inputs)| {
                let mut out = Output::default();
                for i in inputs {
                    let now = i.observation.received;
                    e.observe(0, i, now, &mut out);
                }
                // Dropped after the measurement.
                (e, out)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(wall, bench_wall);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench_cpu
}
criterion_main!(wall, cpu);
