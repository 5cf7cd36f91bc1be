//! Helpers for the rules tests: crafted records, an in-process or subprocess rules
//! service on a [`TestStack`], and the alert stream read back from `alerts.v1`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use storepulse_rules::topic_reader::read_to_end;
use storepulse_rules::{RulesConfig, RulesSettings};
use storepulse_runtime::records::*;
use storepulse_runtime::{AvroCodec, EventProducer, ProducerMetrics};
use tokio_util::sync::CancellationToken;

use super::TestStack;

pub const S: i64 = 1_000_000;
pub const M: i64 = 60 * S;
pub const H: i64 = 60 * M;
pub const D: i64 = 24 * H;

/// A time three hours ago, on the hour (µs).
pub fn hour_ago_base() -> i64 {
    let now = chrono::Utc::now().timestamp_micros();
    (now - 3 * H).div_euclid(H) * H
}

fn envelope(store: &str, at: i64) -> Envelope {
    Envelope {
        event_id: uuid::Uuid::new_v4().to_string(),
        tenant_id: "acme".into(),
        store_id: store.into(),
        occurred_at: at,
        received_at: at,
        source: "test".into(),
    }
}

/// A record for a topic, with its store key.
pub enum Rec {
    Sensor(SensorReading),
    Beat(PosHeartbeat),
    Sale(SaleTransaction),
    Stock(InventoryChange),
    Forecast(DemandForecast),
}

impl Rec {
    pub fn received(mut self, at: i64) -> Self {
        match &mut self {
            Rec::Sensor(r) => r.envelope.received_at = at,
            Rec::Beat(r) => r.envelope.received_at = at,
            Rec::Sale(r) => r.envelope.received_at = at,
            Rec::Stock(r) => r.envelope.received_at = at,
            Rec::Forecast(r) => r.envelope.received_at = at,
        }
        self
    }

    pub fn input(&self) -> storepulse_rules::observation::Input {
        use storepulse_rules::observation::Input;
        match self {
            Rec::Sensor(r) => Input::from(r),
            Rec::Beat(r) => Input::from(r),
            Rec::Sale(r) => Input::from(r),
            Rec::Stock(r) => Input::from(r),
            Rec::Forecast(r) => Input::from(r),
        }
    }
}

pub fn temp(store: &str, device: &str, at: i64, value: f64) -> Rec {
    Rec::Sensor(SensorReading {
        envelope: envelope(store, at),
        device_id: device.into(),
        kind: SensorKind::Temperature,
        value,
        unit: SensorUnit::Celsius,
        appliance: Some("freezer".into()),
    })
}

pub fn door(store: &str, device: &str, at: i64, open: bool) -> Rec {
    Rec::Sensor(SensorReading {
        envelope: envelope(store, at),
        device_id: device.into(),
        kind: SensorKind::Door,
        value: if open { 1.0 } else { 0.0 },
        unit: SensorUnit::OpenClosed,
        appliance: Some("freezer".into()),
    })
}

pub fn beat(store: &str, terminal: &str, at: i64) -> Rec {
    Rec::Beat(PosHeartbeat {
        envelope: envelope(store, at),
        terminal_id: terminal.into(),
        app_up: true,
        printer: PrinterStatus::Ok,
        network: NetworkStatus::Online,
        software_version: None,
    })
}

pub fn sale(store: &str, at: i64, units: f64) -> Rec {
    Rec::Sale(SaleTransaction {
        envelope: envelope(store, at),
        kind: SaleKind::Sale,
        transaction_id: uuid::Uuid::new_v4().to_string(),
        terminal_id: "pos-1".into(),
        currency: "EUR".into(),
        lines: vec![LineItem {
            sku: "milk-1l".into(),
            quantity: units,
            unit_price_minor: 100,
        }],
        total_minor: (units * 100.0).round() as i64,
        original_transaction_id: None,
    })
}

pub fn stock(store: &str, sku: &str, at: i64, snapshot: bool, quantity: f64) -> Rec {
    Rec::Stock(InventoryChange {
        envelope: envelope(store, at),
        kind: if snapshot {
            InventoryChangeKind::Snapshot
        } else {
            InventoryChangeKind::Adjustment
        },
        sku: sku.into(),
        quantity,
        reason: (!snapshot).then_some(if quantity > 0.0 {
            AdjustmentReason::Delivery
        } else {
            AdjustmentReason::Shrink
        }),
    })
}

pub fn cover(store: &str, sku: &str, at: i64, days: f64) -> Rec {
    Rec::Forecast(DemandForecast {
        envelope: envelope(store, at),
        sku: sku.into(),
        method: "test".into(),
        interval_level: 0.9,
        days: vec![ForecastDay {
            date: at.div_euclid(D) as i32,
            mean: 1.0,
            lower: 0.5,
            upper: 1.5,
            wide_lower: None,
            wide_upper: None,
        }],
        on_hand: None,
        days_of_cover: Some(days),
        stock_out_probability: None,
        wide_interval_level: None,
        lead_time_days: None,
        backtest: None,
    })
}

/// A producer of typed records on the stack.
pub fn producer(stack: &TestStack) -> EventProducer {
    EventProducer::new(
        &stack.kafka,
        "rules-test",
        AvroCodec::new(),
        ProducerMetrics::register(&prometheus::Registry::new()).expect("metrics"),
    )
    .expect("producer")
}

/// Sends every record, in order, each acknowledged before the next.
pub async fn send_all(p: &EventProducer, recs: &[Rec]) {
    for r in recs {
        match r {
            Rec::Sensor(x) => p.send(x).await,
            Rec::Beat(x) => p.send(x).await,
            Rec::Sale(x) => p.send(x).await,
            Rec::Stock(x) => p.send(x).await,
            Rec::Forecast(x) => p.send(x).await,
        }
        .expect("send");
    }
}

/// Writes `text` as the stack's rule file.
pub fn rule_file(stack: &TestStack, text: &str) -> PathBuf {
    let path = stack.dir.path().join("rules.toml");
    std::fs::write(&path, text).expect("write rules");
    path
}

/// Rules settings for `stack`: its own group, the rule file, fast ticks.
pub fn settings(stack: &TestStack, rules: &Path, group: &str) -> RulesSettings {
    RulesSettings {
        group_id: format!("{}{group}", stack.kafka.topic_prefix),
        http_listen: "127.0.0.1:0".into(),
        rules_file: rules.display().to_string(),
        allowed_lateness_ms: 60_000,
        idle_timeout_ms: 30 * 24 * 3_600_000,
        idle_tick_ms: 200,
        reload_interval_ms: 200,
        batch_max_wait_ms: 20,
        ..RulesSettings::default()
    }
}

/// A rules service in this process; its ops URL and task.
pub async fn start_rules(
    stack: &TestStack,
    settings: RulesSettings,
    shutdown: &CancellationToken,
) -> (String, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let config = RulesConfig {
        kafka: stack.kafka.clone(),
        postgres: stack.postgres.clone(),
        log: Default::default(),
        rules: settings,
    };
    let handle = tokio::spawn(storepulse_rules::run_with_listener(
        config,
        listener,
        shutdown.clone(),
    ));
    (url, handle)
}

/// A rules process (`storepulse run rules`), killed if the test ends early.
pub struct RulesProcess(pub Child);

impl Drop for RulesProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `storepulse run rules` with `settings`.
pub fn spawn_rules(stack: &TestStack, s: &RulesSettings) -> RulesProcess {
    let env: HashMap<String, String> = HashMap::from([
        (
            "STOREPULSE_KAFKA__BROKERS".into(),
            stack.kafka.brokers.clone(),
        ),
        (
            "STOREPULSE_KAFKA__TOPIC_PREFIX".into(),
            stack.kafka.topic_prefix.clone(),
        ),
        (
            "STOREPULSE_POSTGRES__URL".into(),
            stack.postgres.url.clone(),
        ),
        ("STOREPULSE_RULES__GROUP_ID".into(), s.group_id.clone()),
        (
            "STOREPULSE_RULES__HTTP_LISTEN".into(),
            s.http_listen.clone(),
        ),
        ("STOREPULSE_RULES__RULES_FILE".into(), s.rules_file.clone()),
        (
            "STOREPULSE_RULES__ALLOWED_LATENESS_MS".into(),
            s.allowed_lateness_ms.to_string(),
        ),
        (
            "STOREPULSE_RULES__IDLE_TIMEOUT_MS".into(),
            s.idle_timeout_ms.to_string(),
        ),
        (
            "STOREPULSE_RULES__IDLE_TICK_MS".into(),
            s.idle_tick_ms.to_string(),
        ),
        (
            "STOREPULSE_RULES__BATCH_MAX_RECORDS".into(),
            s.batch_max_records.to_string(),
        ),
        (
            "STOREPULSE_RULES__BATCH_MAX_WAIT_MS".into(),
            s.batch_max_wait_ms.to_string(),
        ),
        ("STOREPULSE_LOG__FORMAT".into(), "text".into()),
        ("STOREPULSE_LOG__FILTER".into(), "warn".into()),
    ]);
    let child = Command::new(env!("CARGO_BIN_EXE_storepulse"))
        .args(["run", "rules"])
        .envs(env)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn rules");
    RulesProcess(child)
}

/// Every record on `alerts.v1`, per partition in offset order.
pub async fn alerts(stack: &TestStack) -> Vec<AlertTransition> {
    let kafka = stack.kafka.clone();
    tokio::task::spawn_blocking(move || {
        let codec = AvroCodec::new();
        let mut out = Vec::new();
        read_to_end(
            &kafka,
            &[topic::ALERTS],
            None,
            Duration::from_secs(60),
            |r| {
                use storepulse_runtime::contract::RecordContract;
                let a = codec
                    .decode::<AlertTransition>(&r.payload)
                    .expect("alert decodes");
                // What the rules write meets the topic contract the compactor checks.
                storepulse_runtime::contract::check_envelope(&a.envelope, r.key.as_deref())
                    .and_then(|_| a.check_body())
                    .unwrap_or_else(|e| panic!("{a:?} breaks the alerts.v1 contract: {e}"));
                out.push(a);
            },
        )
        .expect("read alerts");
        out
    })
    .await
    .expect("join")
}

/// An alert as compared in the tests: times relative to `t0`.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub struct Seen {
    pub store: String,
    pub rule: String,
    pub subject: String,
    pub firing: bool,
    pub start: i64,
    pub end: Option<i64>,
    pub at: i64,
    pub value: Option<f64>,
}

pub fn seen(alerts: &[AlertTransition], t0: i64) -> Vec<Seen> {
    let mut v: Vec<Seen> = alerts
        .iter()
        .map(|a| Seen {
            store: a.envelope.store_id.clone(),
            rule: a.rule_id.clone(),
            subject: a.subject.clone(),
            firing: a.state == AlertState::Firing,
            start: a.started_at - t0,
            end: a.ended_at.map(|e| e - t0),
            at: a.envelope.occurred_at - t0,
            value: a.value,
        })
        .collect();
    sort(&mut v);
    v
}

/// The order [`seen`] lists alerts in: by store, rule, subject, decision time.
pub fn sort(v: &mut [Seen]) {
    v.sort_by(|a, b| {
        (&a.store, &a.rule, &a.subject, a.at, !a.firing)
            .partial_cmp(&(&b.store, &b.rule, &b.subject, b.at, !b.firing))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
}

#[allow(clippy::too_many_arguments)]
pub fn fire(store: &str, rule: &str, subject: &str, start: i64, at: i64, value: f64) -> Seen {
    Seen {
        store: store.into(),
        rule: rule.into(),
        subject: subject.into(),
        firing: true,
        start,
        end: None,
        at,
        value: Some(value),
    }
}

pub fn resolve(
    store: &str,
    rule: &str,
    subject: &str,
    start: i64,
    end: i64,
    at: i64,
    value: f64,
) -> Seen {
    Seen {
        store: store.into(),
        rule: rule.into(),
        subject: subject.into(),
        firing: false,
        start,
        end: Some(end),
        at,
        value: Some(value),
    }
}

/// The value of a metric sample (name and label text) on `/metrics`.
pub async fn metric(url: &str, name: &str, labels: &str) -> Option<f64> {
    let body = reqwest::get(format!("{url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .next()
}
