//! `storepulse rules backtest`: replays the store topics through the same
//! evaluation code as the live service ([`crate::engine`]) and reports what the
//! rules would have decided.
//!
//! Guarantee: on the same records, the backtest decides the same transitions as
//! the live service (same alert ids, states, times, values and messages): each
//! partition's log is read in offset order and the engine's decisions depend only
//! on each partition's log and arrival times, not on how topics interleave. At the
//! end every partition is treated as idle at the wall clock, as a live service
//! whose partitions went quiet would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use storepulse_runtime::{AvroCodec, KafkaConfig};

use crate::calendar::Calendar;
use crate::engine::{Engine, Output, TimeSettings, Transition};
use crate::observation::{Source, input_topics};
use crate::processor::{decode, now_micros};
use crate::rule_file::RuleSet;
use crate::span;

/// What a backtest read and decided.
#[derive(Debug, Default)]
pub struct Backtest {
    /// Records read, and of them the ones the rules could not read.
    pub records: u64,
    pub unreadable: u64,
    /// Observations applied and late, per source.
    pub applied: [u64; 5],
    pub late: [u64; 5],
    /// Every transition, in decision order per store.
    pub transitions: Vec<Transition>,
}

/// Replays the rules' input topics from `since_ms` (broker timestamps; `None`: the
/// beginning) to their current end through `rules`.
pub fn run(
    kafka: &KafkaConfig,
    rules: Arc<RuleSet>,
    calendar: Arc<Calendar>,
    time: TimeSettings,
    since_ms: Option<i64>,
) -> Result<Backtest, crate::topic_reader::ReadError> {
    let codec = AvroCodec::new();
    let mut engine = Engine::new(rules, calendar, time);
    let mut out = Output::default();
    let mut report = Backtest::default();
    let topics = input_topics();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let now = now_micros();
    crate::topic_reader::read_to_end(kafka, &refs, since_ms, Duration::from_secs(3_600), |rec| {
        report.records += 1;
        match decode(&codec, rec) {
            Ok(input) => engine.observe(rec.partition, input, now, &mut out),
            Err(_) => report.unreadable += 1,
        }
    })?;
    let partitions: Vec<i32> = engine.partitions().collect();
    let end = now_micros();
    for p in partitions {
        engine.tick(p, &Source::ALL, end, &mut out);
    }
    report.applied = out.applied;
    report.late = out.late;
    report.transitions = out.transitions.into_iter().map(|(_, t)| t).collect();
    Ok(report)
}

fn time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

impl Backtest {
    /// The report for people: totals, firings per rule and per store, then every
    /// incident with its times.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let applied: u64 = self.applied.iter().sum();
        let late: u64 = self.late.iter().sum();
        let firing = self.transitions.iter().filter(|t| t.firing).count();
        s.push_str(&format!(
            "read {} records: {applied} applied, {late} late (not applied), {} unreadable\n",
            self.records, self.unreadable
        ));
        s.push_str(&format!(
            "{firing} alerts fired, {} resolved\n",
            self.transitions.len() - firing
        ));
        let mut per_rule: BTreeMap<&str, usize> = BTreeMap::new();
        let mut per_store: BTreeMap<String, usize> = BTreeMap::new();
        for t in self.transitions.iter().filter(|t| t.firing) {
            *per_rule.entry(&t.rule).or_default() += 1;
            *per_store.entry(t.store.key()).or_default() += 1;
        }
        if !per_rule.is_empty() {
            s.push_str("\nfired per rule:\n");
            for (rule, n) in &per_rule {
                s.push_str(&format!("  {rule:<32} {n}\n"));
            }
            s.push_str("\nfired per store:\n");
            for (store, n) in &per_store {
                s.push_str(&format!("  {store:<32} {n}\n"));
            }
            s.push_str("\nincidents (UTC):\n");
            let mut incidents: Vec<(&Transition, Option<&Transition>)> = Vec::new();
            for t in self.transitions.iter().filter(|t| t.firing) {
                let id = t.alert_id();
                let end = self
                    .transitions
                    .iter()
                    .find(|r| !r.firing && r.alert_id() == id);
                incidents.push((t, end));
            }
            incidents.sort_by_key(|(t, _)| (t.started_at, t.store.key(), t.rule.clone()));
            for (t, end) in incidents {
                let until = match end {
                    Some(r) => format!(
                        "resolved {} ({})",
                        time(r.at),
                        span::format(r.ended_at.unwrap_or(r.at) - t.started_at)
                    ),
                    None => "still firing".into(),
                };
                s.push_str(&format!(
                    "  {} fired {} {:<20} {:<28} {}  {}\n    {}\n",
                    time(t.started_at),
                    time(t.at),
                    t.rule,
                    format!("{}/{}", t.store.key(), t.entity),
                    match t.severity {
                        storepulse_runtime::records::AlertSeverity::Info => "info",
                        storepulse_runtime::records::AlertSeverity::Warning => "warning",
                        storepulse_runtime::records::AlertSeverity::Critical => "critical",
                    },
                    until,
                    t.message
                ));
            }
        }
        s
    }
}

/// Parses `--since` (`7d`, `12h`, ...) into a broker timestamp (ms) that long ago.
pub fn since_ms(text: &str) -> Result<i64, String> {
    let us = span::parse(text)?;
    Ok((now_micros() - us) / 1_000)
}
