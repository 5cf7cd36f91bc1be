//! Rule evaluation in event time, per store and source.
//!
//! Time: each store has one watermark per [`Source`] (its event time on that
//! input):
//!
//! `W(store, source) = max(W, M − allowed_lateness, A − idle_timeout)`
//!
//! where `M` is the latest event time the store sent on that source (capped at the
//! event's `received_at`) and `A` the arrival frontier of the source's partition:
//! the latest `received_at` read from it (capped at the wall clock), or the wall
//! clock itself once the partition is idle. So a store's time is driven by its own
//! events; a store gone silent, or a partition nothing arrives on, still moves on
//! (bounded by the wall clock) and its absence rules fire; and a backlog being read
//! keeps each store's time where its log is, so catching up decides what live
//! would have decided.
//!
//! Guarantees:
//! - observations are applied per store and source in event-time order once the
//!   watermark passes them; an observation older than the watermark on arrival is
//!   late: counted ([`Output::late`]) and not applied;
//! - a timer (a `for`, a timeout, an hour closing) fires once the watermark reaches
//!   its deadline, before any observation at or after that instant;
//! - everything decided depends only on each partition's log and the arrival
//!   frontiers, never on how records of different topics interleave, so a replay
//!   of the same topics decides the same transitions (`backtest` relies on it);
//! - the state ([`PartitionState`]) is plain data: serialised with the consumed
//!   offsets it reflects, and restored, it continues exactly.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// The engine's maps: keys are our own ids, so a fast hasher is safe enough.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use storepulse_runtime::records::{
    AlertSeverity, AlertState, AlertTransition, Envelope, SensorKind,
};

use storepulse_runtime::contract::MAX_TEXT_LEN;

use crate::calendar::Calendar;
use crate::machines::{
    AbsenceState, ColdState, DoorLog, HysteresisState, RateState, SalesState, Step, StockState,
};
use crate::observation::{Detail, Input, Observation, Source, StoreRef};
use crate::rule_file::{During, Rule, RuleSet, SalesMeasure, Spec, StockMeasure, TenantRules};

/// How event time moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeSettings {
    /// How far behind a store's latest event time an event may be and still count.
    pub allowed_lateness: i64,
    /// How long a store may send nothing on a source before its time on that source
    /// follows the partition's arrival frontier instead of its own events.
    pub idle_timeout: i64,
}

/// An alert lifecycle step of one rule for one entity of one store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub store: StoreRef,
    pub rule: String,
    pub rule_kind: String,
    pub entity: String,
    pub firing: bool,
    pub severity: AlertSeverity,
    /// Event time the condition began (the incident start; part of the alert id).
    pub started_at: i64,
    /// Resolved: event time the condition ended.
    pub ended_at: Option<i64>,
    /// Event time of the decision.
    pub at: i64,
    pub value: Option<f64>,
    pub labels: BTreeMap<String, String>,
    pub message: String,
}

/// Namespace of alert ids (UUIDv5).
const ALERT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6c1f_5e2a_9d0b_4c4e_8a57_7d3b_19e2_a001);

impl Transition {
    /// UUIDv5 of tenant, store, rule, subject and start: the incident's id.
    pub fn alert_id(&self) -> String {
        let name = format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
            self.store.tenant, self.store.store, self.rule, self.entity, self.started_at
        );
        uuid::Uuid::new_v5(&ALERT_NAMESPACE, name.as_bytes()).to_string()
    }

    /// UUIDv5 of the alert id and the state: one id per lifecycle step.
    pub fn event_id(&self) -> String {
        let name = format!(
            "{}\u{1f}{}",
            self.alert_id(),
            if self.firing { "firing" } else { "resolved" }
        );
        uuid::Uuid::new_v5(&ALERT_NAMESPACE, name.as_bytes()).to_string()
    }

    /// The `alerts.v1` record, emitted at `received_at`.
    pub fn to_record(&self, received_at: i64) -> AlertTransition {
        AlertTransition {
            envelope: Envelope {
                event_id: self.event_id(),
                tenant_id: self.store.tenant.clone(),
                store_id: self.store.store.clone(),
                occurred_at: self.at,
                received_at,
                source: "storepulse-rules".into(),
            },
            alert_id: self.alert_id(),
            rule_id: self.rule.clone(),
            state: if self.firing {
                AlertState::Firing
            } else {
                AlertState::Resolved
            },
            severity: self.severity,
            subject: self.entity.clone(),
            summary: self.message.clone(),
            value: self.value,
            started_at: self.started_at,
            labels: self.labels.clone().into_iter().collect(),
            ended_at: self.ended_at,
            rule_kind: Some(self.rule_kind.clone()),
        }
    }
}

/// One input stream of a store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stream {
    /// Latest event time seen (capped at `received_at`).
    pub max_seen: i64,
    pub watermark: i64,
    /// Observations not yet applied (event time above the watermark), in event-time
    /// order (equal times in arrival order).
    pub buffer: VecDeque<Observation>,
}

impl Default for Stream {
    fn default() -> Self {
        Self {
            max_seen: i64::MIN,
            watermark: i64::MIN,
            buffer: VecDeque::new(),
        }
    }
}

/// The state of one rule for one entity (or for the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CellState {
    Threshold(HysteresisState),
    Absence(AbsenceState),
    /// Absence over every source: event times not yet integrated (beyond the
    /// slowest source's watermark).
    StoreSilence {
        absence: AbsenceState,
        pending: Vec<i64>,
    },
    Rate(RateState),
    Stock(StockState),
    Sales(SalesState),
    Cold(ColdState),
}

impl CellState {
    /// The hysteresis of a threshold-like cell (threshold, rate of change, stock).
    fn hysteresis_mut(&mut self) -> Option<&mut HysteresisState> {
        match self {
            CellState::Threshold(h) => Some(h),
            CellState::Rate(r) => Some(&mut r.hysteresis),
            CellState::Stock(s) => Some(&mut s.hysteresis),
            _ => None,
        }
    }

    fn kind_matches(&self, spec: &Spec) -> bool {
        matches!(
            (self, spec),
            (CellState::Threshold(_), Spec::Threshold(_))
                | (CellState::Absence(_), Spec::Absence { .. })
                | (CellState::StoreSilence { .. }, Spec::Absence { .. })
                | (CellState::Rate(_), Spec::RateOfChange { .. })
                | (CellState::Stock(_), Spec::Stock { .. })
                | (CellState::Threshold(_), Spec::Stock { .. })
                | (CellState::Sales(_), Spec::SalesAnomaly(_))
                | (CellState::Cold(_), Spec::ColdChain(_))
        )
    }

    /// Ends an open incident at `at`.
    fn abandon(&mut self, at: i64) -> Option<Step> {
        match self {
            CellState::Threshold(h) => h.abandon(at),
            CellState::Absence(a) | CellState::StoreSilence { absence: a, .. } => a.abandon(at),
            CellState::Rate(r) => r.hysteresis.abandon(at),
            CellState::Stock(s) => s.hysteresis.abandon(at),
            CellState::Sales(s) => s.abandon(at),
            CellState::Cold(c) => c.abandon(at),
        }
    }
}

/// A rule's state for one entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub rule: String,
    pub state: CellState,
}

/// An entity (device, terminal, SKU) of one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EntityState {
    /// Labels from its latest observation (`appliance`, `kind`).
    pub labels: Vec<(String, String)>,
    pub cells: Vec<Cell>,
}

/// Everything the rules keep for one store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreState {
    pub store: StoreRef,
    pub streams: [Stream; 5],
    /// Entities by source, then id.
    pub entities: [FastMap<String, EntityState>; 5],
    /// Rules about the store as a whole (per-store absence, sales anomaly).
    pub store_cells: Vec<Cell>,
    pub doors: DoorLog,
    /// Latest daily demand forecast per SKU (days since epoch, mean units).
    pub forecasts: BTreeMap<String, Vec<(i32, f64)>>,
    /// Earliest deadline of the entity cells per source; `None`: unknown, scan.
    #[serde(skip)]
    next_due: [Option<i64>; 5],
    /// Changed since last saved (listed in [`PartitionState::dirty`]).
    #[serde(skip)]
    dirty: bool,
}

impl StoreState {
    fn new(store: StoreRef) -> Self {
        Self {
            store,
            streams: Default::default(),
            entities: Default::default(),
            store_cells: Vec::new(),
            doors: DoorLog::default(),
            forecasts: BTreeMap::new(),
            next_due: [None; 5],
            dirty: false,
        }
    }

    /// The slowest source's watermark.
    fn min_watermark(&self) -> i64 {
        self.streams
            .iter()
            .map(|s| s.watermark)
            .min()
            .unwrap_or(i64::MIN)
    }
}

/// Evaluation state of one partition (its stores on every input topic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Arrival frontier per source.
    pub arrival: [i64; 5],
    #[serde(skip)]
    pub stores: FastMap<StoreRef, StoreState>,
    /// Stores changed since [`Engine::take_dirty`].
    #[serde(skip)]
    pub dirty: BTreeSet<StoreRef>,
}

impl Default for PartitionState {
    fn default() -> Self {
        Self {
            arrival: [i64::MIN; 5],
            stores: FastMap::default(),
            dirty: BTreeSet::new(),
        }
    }
}

/// What evaluation produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    /// Decided transitions with their partition, in decision order per store.
    pub transitions: Vec<(i32, Transition)>,
    /// Late observations per source (not applied).
    pub late: [u64; 5],
    /// Observations applied per source.
    pub applied: [u64; 5],
}

/// Everything evaluation reads besides the state.
struct Ctx<'a> {
    time: TimeSettings,
    calendar: &'a Calendar,
}

/// The rules engine: per-partition state and the rules in force.
#[derive(Debug)]
pub struct Engine {
    rules: Arc<RuleSet>,
    calendar: Arc<Calendar>,
    time: TimeSettings,
    partitions: HashMap<i32, PartitionState>,
}

impl Engine {
    pub fn new(rules: Arc<RuleSet>, calendar: Arc<Calendar>, time: TimeSettings) -> Self {
        Self {
            rules,
            calendar,
            time,
            partitions: HashMap::new(),
        }
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Partitions held.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.partitions.keys().copied()
    }

    pub fn holds(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// Installs a restored (or empty) partition.
    pub fn insert_partition(&mut self, partition: i32, state: PartitionState) {
        self.partitions.insert(partition, state);
    }

    /// Forgets a partition (revoked).
    pub fn remove_partition(&mut self, partition: i32) -> Option<PartitionState> {
        self.partitions.remove(&partition)
    }

    pub fn partition(&self, partition: i32) -> Option<&PartitionState> {
        self.partitions.get(&partition)
    }

    /// Stores of `partition` changed since [`Engine::clear_dirty`], with their state.
    pub fn dirty_stores(&self, partition: i32) -> Vec<&StoreState> {
        let Some(p) = self.partitions.get(&partition) else {
            return Vec::new();
        };
        p.dirty.iter().filter_map(|k| p.stores.get(k)).collect()
    }

    /// Marks `partition`'s stores as saved.
    pub fn clear_dirty(&mut self, partition: i32) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            for k in std::mem::take(&mut p.dirty) {
                if let Some(s) = p.stores.get_mut(&k) {
                    s.dirty = false;
                }
            }
        }
    }

    /// Open incidents (firing cells) across every held partition.
    pub fn firing(&self) -> usize {
        self.firing_by_rule().values().sum()
    }

    /// Incidents firing now, by rule name (for the `rule`-labelled gauge: rules are
    /// configured, so the label is bounded).
    pub fn firing_by_rule(&self) -> BTreeMap<&str, usize> {
        let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
        for p in self.partitions.values() {
            for s in p.stores.values() {
                let cells = s
                    .entities
                    .iter()
                    .flat_map(|m| m.values())
                    .flat_map(|e| e.cells.iter())
                    .chain(s.store_cells.iter());
                for c in cells.filter(|c| is_firing(&c.state)) {
                    *by_rule.entry(c.rule.as_str()).or_default() += 1;
                }
            }
        }
        by_rule
    }

    /// One input record of `partition`, read at wall-clock `now` (µs).
    pub fn observe(&mut self, partition: i32, input: Input, now: i64, out: &mut Output) {
        let Input { store, observation } = input;
        let observation_source = observation.source;
        let src = observation_source.index();
        let p = self.partitions.entry(partition).or_default();
        p.arrival[src] = p.arrival[src].max(observation.received.min(now));
        let arrival = p.arrival;
        let state = match p.stores.get_mut(&store) {
            Some(s) => s,
            None => p
                .stores
                .entry(store.clone())
                .or_insert_with(|| StoreState::new(store.clone())),
        };
        let stream = &mut state.streams[src];
        // The partition's arrival frontier may have moved the store's time on.
        stream.watermark = stream
            .watermark
            .max(arrival[src].saturating_sub(self.time.idle_timeout));
        if observation.at < stream.watermark {
            out.late[src] += 1;
            return;
        }
        stream.max_seen = stream
            .max_seen
            .max(observation.at.min(observation.received));
        let at = observation.at;
        let pos = if stream.buffer.back().is_none_or(|o| o.at <= at) {
            stream.buffer.len()
        } else {
            stream.buffer.partition_point(|o| o.at <= at)
        };
        stream.buffer.insert(pos, observation);
        if !state.dirty {
            state.dirty = true;
            p.dirty.insert(store.clone());
        }
        let tenant_rules = self.rules.for_tenant(&store.tenant);
        let cx = Ctx {
            time: self.time,
            calendar: &self.calendar,
        };
        // Only this source's time can have moved (and the store-wide silence).
        let s = &mut state.streams[src];
        s.watermark = s
            .watermark
            .max(s.max_seen.saturating_sub(self.time.allowed_lateness))
            .max(arrival[src].saturating_sub(self.time.idle_timeout));
        advance_stream(state, observation_source, tenant_rules, &cx, partition, out);
        advance_store_silence(state, tenant_rules, &cx, partition, out);
    }

    /// Moves time on in `partition`: the idle `sources` (their partition delivered
    /// nothing lately) have their arrival frontier set to `now`; every store's
    /// watermarks are recomputed and what they release is applied.
    pub fn tick(&mut self, partition: i32, idle: &[Source], now: i64, out: &mut Output) {
        let Some(p) = self.partitions.get_mut(&partition) else {
            return;
        };
        for s in idle {
            let a = &mut p.arrival[s.index()];
            *a = (*a).max(now);
        }
        let arrival = p.arrival;
        let cx = Ctx {
            time: self.time,
            calendar: &self.calendar,
        };
        for (key, state) in p.stores.iter_mut() {
            let before = out.transitions.len();
            let changed = advance_store(
                state,
                &arrival,
                self.rules.for_tenant(&key.tenant),
                &cx,
                partition,
                out,
            );
            if (changed || out.transitions.len() > before) && !state.dirty {
                state.dirty = true;
                p.dirty.insert(key.clone());
            }
        }
    }

    /// Puts `rules` in force. Incidents of rules that no longer exist, changed kind,
    /// or no longer match their entity are resolved (transitions in `out`) and their
    /// state dropped; every other state carries over unchanged.
    pub fn set_rules(&mut self, rules: Arc<RuleSet>, out: &mut Output) {
        self.rules = rules;
        for (partition, p) in self.partitions.iter_mut() {
            for (key, state) in p.stores.iter_mut() {
                let tenant_rules = self.rules.for_tenant(&key.tenant);
                let mut changed = false;
                let store = state.store.clone();
                for src in Source::ALL {
                    let at = state.streams[src.index()].watermark;
                    for (entity, e) in state.entities[src.index()].iter_mut() {
                        let labels = e.labels.clone();
                        e.cells.retain_mut(|c| {
                            let keep = tenant_rules.by_name.get(&c.rule).is_some_and(|r| {
                                c.state.kind_matches(&r.spec)
                                    && r.matcher.source == Some(src)
                                    && r.matcher.matches_store(&store.store)
                                    && entity_still_matches(r, entity, &labels)
                                    && !matches!(
                                        r.spec,
                                        Spec::Absence {
                                            per_store: true,
                                            ..
                                        }
                                    )
                            });
                            if !keep {
                                changed = true;
                                if let Some(step) = c.state.abandon(at)
                                    && let Some(rule) = rules_or_removed(tenant_rules, &c.rule)
                                {
                                    out.transitions.push((
                                        *partition,
                                        transition(&rule, &store, entity, &labels, step, true),
                                    ));
                                }
                            }
                            keep
                        });
                    }
                    state.entities[src.index()].retain(|_, e| !e.cells.is_empty());
                }
                let at = state.min_watermark();
                state.store_cells.retain_mut(|c| {
                    let keep = tenant_rules.by_name.get(&c.rule).is_some_and(|r| {
                        c.state.kind_matches(&r.spec) && r.matcher.matches_store(&store.store)
                    });
                    if !keep {
                        changed = true;
                        if let Some(step) = c.state.abandon(at)
                            && let Some(rule) = rules_or_removed(tenant_rules, &c.rule)
                        {
                            out.transitions
                                .push((*partition, transition(&rule, &store, "", &[], step, true)));
                        }
                    }
                    keep
                });
                state.next_due = [None; 5];
                if changed {
                    state.dirty = true;
                    p.dirty.insert(key.clone());
                }
            }
        }
    }
}

/// A placeholder rule to word the resolution of a removed rule's incident.
fn rules_or_removed(rules: &TenantRules, name: &str) -> Option<Arc<Rule>> {
    if let Some(r) = rules.by_name.get(name) {
        return Some(r.clone());
    }
    let message =
        crate::rule_file::Template::parse("{rule}: rule removed; incident closed").ok()?;
    Some(Arc::new(Rule {
        name: name.to_string(),
        spec: Spec::Absence {
            timeout: 1,
            per_store: false,
        },
        matcher: crate::rule_file::Matcher {
            source: None,
            sensor_kind: None,
            stores: Vec::new(),
            entities: Vec::new(),
            labels: Vec::new(),
        },
        severity: AlertSeverity::Info,
        labels: BTreeMap::new(),
        message,
        during: During::Always,
    }))
}

fn entity_still_matches(rule: &Rule, entity: &str, labels: &[(String, String)]) -> bool {
    let m = &rule.matcher;
    if !m.entities.is_empty() && !m.entities.iter().any(|p| p.matches(entity)) {
        return false;
    }
    m.labels.iter().all(|(k, p)| {
        match labels.iter().find(|(lk, _)| lk == k) {
            Some((_, v)) => p.matches(v),
            // Labels not kept per entity (printer, network) are judged per event.
            None => !["appliance", "kind"].contains(&k.as_str()),
        }
    })
}

fn is_firing(c: &CellState) -> bool {
    match c {
        CellState::Threshold(h) => h.is_firing(),
        CellState::Absence(a) | CellState::StoreSilence { absence: a, .. } => a.firing,
        CellState::Rate(r) => r.hysteresis.is_firing(),
        CellState::Stock(s) => s.hysteresis.is_firing(),
        CellState::Sales(s) => s.firing.is_some(),
        CellState::Cold(c) => c.firing,
    }
}

/// Recomputes a store's watermarks and applies what they release; true if any
/// state changed.
fn advance_store(
    state: &mut StoreState,
    arrival: &[i64; 5],
    rules: &TenantRules,
    cx: &Ctx<'_>,
    partition: i32,
    out: &mut Output,
) -> bool {
    let mut changed = false;
    for src in Source::ALL {
        let i = src.index();
        let s = &mut state.streams[i];
        let w = s
            .watermark
            .max(s.max_seen.saturating_sub(cx.time.allowed_lateness))
            .max(arrival[i].saturating_sub(cx.time.idle_timeout));
        s.watermark = w;
        changed |= advance_stream(state, src, rules, cx, partition, out);
    }
    changed |= advance_store_silence(state, rules, cx, partition, out);
    changed
}

/// Applies buffered observations of `src` up to its watermark, firing timers due
/// before each; true if anything was applied or fired.
fn advance_stream(
    state: &mut StoreState,
    src: Source,
    rules: &TenantRules,
    cx: &Ctx<'_>,
    partition: i32,
    out: &mut Output,
) -> bool {
    let i = src.index();
    let w = state.streams[i].watermark;
    let mut changed = false;
    loop {
        let next = state.streams[i]
            .buffer
            .front()
            .map(|o| o.at)
            .filter(|t| *t <= w);
        changed |= fire_due(state, src, next.unwrap_or(w), rules, cx, partition, out);
        if next.is_none() {
            break;
        }
        let Some(o) = state.streams[i].buffer.pop_front() else {
            break;
        };
        out.applied[i] += 1;
        changed = true;
        apply(state, o, rules, cx, partition, out);
    }
    changed
}

/// One due timer.
struct Due {
    deadline: i64,
    /// Entity id, or `None` for a store cell.
    entity: Option<String>,
    cell: usize,
}

/// Fires the timers of `src` whose deadline is at or before `bound`, in deadline
/// order; true if any fired.
fn fire_due(
    state: &mut StoreState,
    src: Source,
    bound: i64,
    rules: &TenantRules,
    cx: &Ctx<'_>,
    partition: i32,
    out: &mut Output,
) -> bool {
    let i = src.index();
    let mut fired = false;
    loop {
        let mut due: Vec<Due> = Vec::new();
        let scan = state.next_due[i].is_none_or(|d| d <= bound);
        if scan {
            let mut next: Option<i64> = None;
            for (entity, e) in &state.entities[i] {
                for (ci, c) in e.cells.iter().enumerate() {
                    let Some(rule) = rules.by_name.get(&c.rule) else {
                        continue;
                    };
                    let Some(d) = deadline(&c.state, rule, &state.store, cx) else {
                        continue;
                    };
                    if d <= bound {
                        due.push(Due {
                            deadline: d,
                            entity: Some(entity.clone()),
                            cell: ci,
                        });
                    } else {
                        next = Some(next.map_or(d, |n| n.min(d)));
                    }
                }
            }
            state.next_due[i] = Some(next.unwrap_or(i64::MAX));
        }
        for (ci, c) in state.store_cells.iter().enumerate() {
            // Store-wide silence is integrated apart (advance_store_silence).
            if matches!(c.state, CellState::StoreSilence { .. }) {
                continue;
            }
            let Some(rule) = rules.by_name.get(&c.rule) else {
                continue;
            };
            if rule.matcher.source != Some(src) {
                continue;
            }
            if let Some(d) = deadline(&c.state, rule, &state.store, cx)
                && d <= bound
            {
                due.push(Due {
                    deadline: d,
                    entity: None,
                    cell: ci,
                });
            }
        }
        if due.is_empty() {
            return fired;
        }
        due.sort_by(|a, b| (a.deadline, &a.entity, a.cell).cmp(&(b.deadline, &b.entity, b.cell)));
        for d in due {
            fired = true;
            let store = state.store.clone();
            let (cell, entity, labels) = match &d.entity {
                Some(id) => {
                    let Some(e) = state.entities[i].get_mut(id) else {
                        continue;
                    };
                    let labels = e.labels.clone();
                    (&mut e.cells[d.cell], id.as_str(), labels)
                }
                None => (&mut state.store_cells[d.cell], "", Vec::new()),
            };
            let Some(rule) = rules.by_name.get(&cell.rule) else {
                continue;
            };
            let step = expire(
                &mut cell.state,
                rule,
                &store,
                d.deadline,
                cx,
                &state.forecasts,
            );
            if let Some(step) = step {
                out.transitions.push((
                    partition,
                    transition(rule, &store, entity, &labels, step, false),
                ));
            }
        }
        // A fired entity timer sets no new earlier deadline; rescan only if unknown.
        state.next_due[i] = None;
    }
}

/// The deadline a cell waits for.
fn deadline(c: &CellState, rule: &Rule, store: &StoreRef, cx: &Ctx<'_>) -> Option<i64> {
    match (c, &rule.spec) {
        (CellState::Threshold(h), Spec::Threshold(spec)) => h.deadline(spec),
        (CellState::Threshold(h), Spec::Stock { hysteresis, .. }) => h.deadline(hysteresis),
        (CellState::Absence(a), Spec::Absence { timeout, .. }) => a.deadline(|t| {
            if rule.during == During::OpenHours {
                cx.calendar.add_open_time(store, t, *timeout)
            } else {
                t.saturating_add(*timeout)
            }
        }),
        (CellState::Rate(r), Spec::RateOfChange { hysteresis, .. }) => {
            r.hysteresis.deadline(hysteresis)
        }
        (CellState::Stock(s), Spec::Stock { hysteresis, .. }) => s.hysteresis.deadline(hysteresis),
        (CellState::Sales(s), Spec::SalesAnomaly(_)) => Some(s.deadline()),
        (CellState::Cold(c), Spec::ColdChain(spec)) => c.deadline(spec),
        _ => None,
    }
}

/// Fires a cell's timer at its deadline `at`.
fn expire(
    c: &mut CellState,
    rule: &Rule,
    store: &StoreRef,
    at: i64,
    cx: &Ctx<'_>,
    forecasts: &BTreeMap<String, Vec<(i32, f64)>>,
) -> Option<Step> {
    // An open-hours rule confirms a breach only while the store is open: one still
    // waiting for its `for` when the store closes is dropped, not fired at night
    // (what happens while closed is not heard; a breach after opening starts anew).
    if rule.during == During::OpenHours
        && !cx.calendar.is_open(store, at)
        && let Some(h) = c.hysteresis_mut()
        && !h.is_firing()
    {
        h.interrupt_pending();
        return None;
    }
    match (c, &rule.spec) {
        (CellState::Threshold(h), Spec::Threshold(spec)) => h.expire(spec, at),
        (CellState::Threshold(h), Spec::Stock { hysteresis, .. }) => h.expire(hysteresis, at),
        (CellState::Absence(a), Spec::Absence { .. }) => a.expire(at),
        (CellState::Rate(r), Spec::RateOfChange { hysteresis, .. }) => {
            r.hysteresis.expire(hysteresis, at)
        }
        (CellState::Stock(s), Spec::Stock { hysteresis, .. }) => {
            s.hysteresis.expire(hysteresis, at)
        }
        (CellState::Sales(s), Spec::SalesAnomaly(spec)) => {
            let bucket = s.bucket;
            if at - bucket > 8 * 24 * HOUR {
                // A long gap (days without any time passing for this store): jump
                // to the current hour rather than judging each hour in between.
                s.bucket = at.div_euclid(HOUR) * HOUR - HOUR;
                s.actual = 0.0;
            }
            let bucket = s.bucket;
            let judged = rule.during == During::Always || cx.calendar.is_open(store, bucket);
            let expected = forecast_for_hour(forecasts, s, spec, bucket, spec.measure)
                .or_else(|| s.usual_level(spec, bucket));
            s.close_hour(spec, expected, judged)
        }
        (CellState::Cold(cs), Spec::ColdChain(spec)) => cs.expire(spec, at),
        _ => None,
    }
}

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

/// The forecast units of the hour starting at `bucket`: the day's forecast summed
/// over SKUs, times the hour's usual share of its day (or 1/24 before any history).
fn forecast_for_hour(
    forecasts: &BTreeMap<String, Vec<(i32, f64)>>,
    s: &SalesState,
    spec: &crate::rule_file::SalesAnomalySpec,
    bucket: i64,
    measure: SalesMeasure,
) -> Option<f64> {
    if measure != SalesMeasure::Units || forecasts.is_empty() {
        return None;
    }
    let day = bucket.div_euclid(DAY) as i32;
    let mut total = 0.0;
    let mut any = false;
    for days in forecasts.values() {
        if let Some((_, mean)) = days.iter().find(|(d, _)| *d == day) {
            total += mean;
            any = true;
        }
    }
    if !any {
        return None;
    }
    let day_start = bucket.div_euclid(DAY) * DAY;
    let hours: Vec<Option<f64>> = (0..24)
        .map(|h| s.usual_level(spec, day_start + h * HOUR))
        .collect();
    let share = if hours.iter().all(Option::is_some) {
        let sum: f64 = hours.iter().flatten().sum();
        let this = s.usual_level(spec, bucket).unwrap_or(0.0);
        if sum > 0.0 { this / sum } else { 1.0 / 24.0 }
    } else {
        1.0 / 24.0
    };
    Some(total * share)
}

/// Integrates store-wide silence rules up to the slowest source's watermark.
fn advance_store_silence(
    state: &mut StoreState,
    rules: &TenantRules,
    cx: &Ctx<'_>,
    partition: i32,
    out: &mut Output,
) -> bool {
    if rules.any_source.is_empty() {
        return false;
    }
    let bound = state.min_watermark();
    let store = &state.store;
    let mut changed = false;
    for c in state.store_cells.iter_mut() {
        if !matches!(c.state, CellState::StoreSilence { .. }) {
            continue;
        }
        // Few store-wide rules: a scan beats hashing the name per observation.
        let Some(rule) = rules.any_source.iter().find(|r| r.name == c.rule) else {
            continue;
        };
        let (CellState::StoreSilence { absence, pending }, Spec::Absence { timeout, .. }) =
            (&mut c.state, &rule.spec)
        else {
            continue;
        };
        let deadline_of = |t: i64| {
            if rule.during == During::OpenHours {
                cx.calendar.add_open_time(store, t, *timeout)
            } else {
                t.saturating_add(*timeout)
            }
        };
        let first_due = absence.deadline(deadline_of).is_some_and(|d| d <= bound);
        if !first_due && pending.first().is_none_or(|t| *t > bound) {
            continue;
        }
        let ready = pending.partition_point(|t| *t <= bound);
        let times: Vec<i64> = pending.drain(..ready).collect();
        for t in times.into_iter().chain(std::iter::once(i64::MAX)) {
            let upto = t.min(bound);
            if let Some(d) = absence.deadline(deadline_of)
                && d <= upto
                && let Some(step) = absence.expire(d)
            {
                changed = true;
                out.transitions
                    .push((partition, transition(rule, store, "", &[], step, false)));
            }
            if t == i64::MAX {
                break;
            }
            changed = true;
            if let Some(step) = absence.observe(t) {
                out.transitions
                    .push((partition, transition(rule, store, "", &[], step, false)));
            }
        }
    }
    changed
}

/// Applies one observation to every rule of its source that matches it.
fn apply(
    state: &mut StoreState,
    o: Observation,
    rules: &TenantRules,
    cx: &Ctx<'_>,
    partition: i32,
    out: &mut Output,
) {
    let src = o.source;
    let i = src.index();
    let store = &state.store;
    // Context every rule of the store may read.
    match &o.detail {
        Detail::Sensor {
            kind: SensorKind::Door,
            ..
        } => state.doors.observe(&o.entity, o.at, o.value >= 0.5),
        Detail::Forecast { daily, .. } => {
            state.forecasts.insert(o.entity.clone(), daily.clone());
        }
        _ => {}
    }
    // Store-wide silence: every observation counts.
    for rule in &rules.any_source {
        let Spec::Absence { timeout, .. } = rule.spec else {
            continue;
        };
        if !rule.matcher.matches_store(&store.store) {
            continue;
        }
        match state.store_cells.iter_mut().find(|c| c.rule == rule.name) {
            Some(Cell {
                state: CellState::StoreSilence { pending, .. },
                ..
            }) => push_silence(pending, o.at, timeout),
            Some(_) => {}
            None => state.store_cells.push(Cell {
                rule: rule.name.clone(),
                state: CellState::StoreSilence {
                    absence: AbsenceState::new(o.at),
                    pending: Vec::new(),
                },
            }),
        }
    }
    let open = std::cell::OnceCell::new();
    // Open-hours scoping: an absence rule always hears its entity (the calendar moves
    // its deadline); other rules ignore what happens while closed.
    let counts = |rule: &Rule| {
        rule.during == During::Always
            || matches!(rule.spec, Spec::Absence { .. })
            || *open.get_or_init(|| cx.calendar.is_open(store, o.at))
    };
    // Entity rules that take this observation, by position in `by_source[i]`
    // (matched once; positions past 64 are matched again below).
    let mut entity_rules: u64 = 0;
    let mut entity_rules_beyond = false;
    for (ri, rule) in rules.by_source[i].iter().enumerate() {
        if !rule.matcher.matches_store(&store.store) || !rule.matcher.matches(&o) {
            continue;
        }
        match &rule.spec {
            Spec::Absence {
                per_store: true, ..
            } => {
                let step = match state.store_cells.iter_mut().find(|c| c.rule == rule.name) {
                    Some(Cell {
                        state: CellState::Absence(a),
                        ..
                    }) => a.observe(o.at),
                    Some(_) => None,
                    None => {
                        state.store_cells.push(Cell {
                            rule: rule.name.clone(),
                            state: CellState::Absence(AbsenceState::new(o.at)),
                        });
                        None
                    }
                };
                if let Some(step) = step {
                    out.transitions
                        .push((partition, transition(rule, store, "", &[], step, false)));
                }
            }
            Spec::SalesAnomaly(spec) => {
                let amount = match (spec.measure, &o.detail) {
                    (SalesMeasure::Units, _) => o.value,
                    (SalesMeasure::Revenue, Detail::Sale { revenue_minor }) => {
                        *revenue_minor as f64
                    }
                    _ => 0.0,
                };
                match state.store_cells.iter_mut().find(|c| c.rule == rule.name) {
                    Some(Cell {
                        state: CellState::Sales(s),
                        ..
                    }) => s.add(amount),
                    Some(_) => {}
                    None => {
                        let mut s = SalesState::new(o.at);
                        s.add(amount);
                        state.store_cells.push(Cell {
                            rule: rule.name.clone(),
                            state: CellState::Sales(s),
                        });
                    }
                }
            }
            _ => {
                if counts(rule) {
                    if ri < 64 {
                        entity_rules |= 1 << ri;
                    } else {
                        entity_rules_beyond = true;
                    }
                }
            }
        }
    }
    if entity_rules == 0 && !entity_rules_beyond {
        return;
    }
    // The entity, looked up once (created on its first observation).
    let map = &mut state.entities[i];
    let e = match map.get_mut(&o.entity) {
        Some(e) => e,
        None => map.entry(o.entity.clone()).or_default(),
    };
    if let Detail::Sensor { kind, appliance } = &o.detail {
        refresh_labels(e, *kind, appliance.as_deref());
    }
    for (ri, rule) in rules.by_source[i].iter().enumerate() {
        let takes = if ri < 64 {
            entity_rules & (1 << ri) != 0
        } else {
            entity_rules_beyond
                && !matches!(
                    rule.spec,
                    Spec::Absence {
                        per_store: true,
                        ..
                    } | Spec::SalesAnomaly(_)
                )
                && rule.matcher.matches_store(&store.store)
                && rule.matcher.matches(&o)
                && counts(rule)
        };
        if !takes {
            continue;
        }
        let idx = match e.cells.iter().position(|c| c.rule == rule.name) {
            Some(idx) => idx,
            None => {
                let Some(fresh) = new_cell(rule, &o) else {
                    continue;
                };
                e.cells.push(Cell {
                    rule: rule.name.clone(),
                    state: fresh,
                });
                e.cells.len() - 1
            }
        };
        let cell = &mut e.cells[idx];
        let step = match (&mut cell.state, &rule.spec) {
            (CellState::Threshold(h), Spec::Threshold(spec)) => h.observe(spec, o.at, o.value),
            (CellState::Absence(a), Spec::Absence { .. }) => a.observe(o.at),
            (CellState::Rate(r), Spec::RateOfChange { window, hysteresis }) => {
                r.observe(*window, hysteresis, o.at, o.value)
            }
            (
                CellState::Stock(s),
                Spec::Stock {
                    hysteresis,
                    per_sku,
                    ..
                },
            ) => {
                let snapshot = matches!(o.detail, Detail::Stock { snapshot: true });
                match s.apply(snapshot, o.value) {
                    Some(level) => {
                        let h = for_sku(hysteresis, per_sku, &o.entity);
                        s.hysteresis.observe(&h, o.at, level)
                    }
                    None => None,
                }
            }
            (
                CellState::Threshold(h),
                Spec::Stock {
                    hysteresis,
                    per_sku,
                    ..
                },
            ) => {
                let spec = for_sku(hysteresis, per_sku, &o.entity);
                h.observe(&spec, o.at, o.value)
            }
            (CellState::Cold(c), Spec::ColdChain(spec)) => {
                let doors = &state.doors;
                c.observe(spec, o.at, o.value, |a, b| {
                    if doors.open.is_empty() && doors.intervals.is_empty() {
                        return 0;
                    }
                    doors.masked(a, b, spec.door_grace, |d| {
                        spec.doors.is_empty() || spec.doors.iter().any(|p| p.matches(d))
                    })
                })
            }
            _ => None,
        };
        // The cell's deadline may now be earlier than the cached one.
        if let Some(d) = deadline(&cell.state, rule, store, cx) {
            let n = &mut state.next_due[i];
            *n = Some(n.map_or(d, |x| x.min(d)));
        }
        if let Some(step) = step {
            out.transitions.push((
                partition,
                transition(rule, store, &o.entity, &e.labels, step, false),
            ));
        }
    }
}

/// Records an observation time for a store-wide silence rule. Kept sorted
/// (observations mostly arrive in order), and thinned: a time whose neighbours are
/// less than `timeout` apart can never start or end a silence, so it is dropped.
fn push_silence(pending: &mut Vec<i64>, t: i64, timeout: i64) {
    if pending.last().is_none_or(|last| *last <= t) {
        let n = pending.len();
        if n >= 2 && t - pending[n - 2] < timeout {
            pending[n - 1] = t;
        } else {
            pending.push(t);
        }
    } else {
        let pos = pending.partition_point(|x| *x <= t);
        pending.insert(pos, t);
    }
}

/// Keeps an entity's labels (`kind`, `appliance`) as its latest reading says.
fn refresh_labels(e: &mut EntityState, kind: SensorKind, appliance: Option<&str>) {
    let kind = crate::observation::sensor_kind_name(kind);
    let same = e
        .labels
        .first()
        .is_some_and(|(k, v)| k == "kind" && v == kind)
        && e.labels.get(1).map(|(_, v)| v.as_str()) == appliance
        && e.labels.len() == 1 + usize::from(appliance.is_some());
    if !same {
        e.labels = vec![("kind".to_string(), kind.to_string())];
        if let Some(a) = appliance {
            e.labels.push(("appliance".to_string(), a.to_string()));
        }
    }
}

/// The hysteresis of a stock rule for one SKU.
fn for_sku(
    h: &crate::rule_file::Hysteresis,
    per_sku: &HashMap<String, f64>,
    sku: &str,
) -> crate::rule_file::Hysteresis {
    match per_sku.get(sku) {
        Some(level) => crate::rule_file::Hysteresis {
            fire: *level,
            clear: level + (h.clear - h.fire),
            ..*h
        },
        None => *h,
    }
}

fn new_cell(rule: &Rule, o: &Observation) -> Option<CellState> {
    Some(match &rule.spec {
        Spec::Threshold(_) => CellState::Threshold(HysteresisState::default()),
        Spec::Absence { .. } => CellState::Absence(AbsenceState::new(o.at)),
        Spec::RateOfChange { .. } => CellState::Rate(RateState::default()),
        Spec::Stock {
            measure: StockMeasure::OnHand,
            ..
        } => CellState::Stock(StockState::default()),
        Spec::Stock {
            measure: StockMeasure::DaysOfCover,
            ..
        } => CellState::Threshold(HysteresisState::default()),
        Spec::ColdChain(_) => CellState::Cold(ColdState::default()),
        Spec::SalesAnomaly(_) => return None,
    })
}

/// Formats a value for a message: at most two decimals, no trailing zeros.
fn number(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The transition of `step` of `rule` for `entity`.
fn transition(
    rule: &Rule,
    store: &StoreRef,
    entity: &str,
    entity_labels: &[(String, String)],
    step: Step,
    abandoned: bool,
) -> Transition {
    let (firing, started_at, ended_at, at, value) = match step {
        Step::Fire { start, at, value } => (true, start, None, at, value),
        Step::Resolve {
            start,
            end,
            at,
            value,
        } => (false, start, Some(end), at, value),
    };
    let mut labels = rule.labels.clone();
    for (k, v) in entity_labels {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let shown_value = if matches!(rule.spec, Spec::SalesAnomaly(_)) {
        format!("{}%", number(value * 100.0))
    } else {
        number(value)
    };
    let message = rule.message.render(|k| match k {
        "rule" => Some(rule.name.clone()),
        "tenant" => Some(store.tenant.clone()),
        "store" => Some(store.store.clone()),
        "entity" => Some(if entity.is_empty() {
            store.store.clone()
        } else {
            entity.to_string()
        }),
        "value" => Some(shown_value.clone()),
        "threshold" => rule.spec.threshold().map(number),
        "since" => Some(rfc3339(started_at)),
        "severity" => Some(
            match rule.severity {
                AlertSeverity::Info => "info",
                AlertSeverity::Warning => "warning",
                AlertSeverity::Critical => "critical",
            }
            .into(),
        ),
        "duration" => Some(crate::span::format(at - started_at)),
        other => other
            .strip_prefix("label.")
            .and_then(|l| labels.get(l).cloned()),
    });
    let mut message = message;
    if message.len() > MAX_TEXT_LEN {
        let mut cut = MAX_TEXT_LEN;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    Transition {
        store: store.clone(),
        rule: rule.name.clone(),
        rule_kind: if abandoned {
            "removed".into()
        } else {
            rule.spec.kind_name().into()
        },
        // Store-wide alerts are about the store.
        entity: if entity.is_empty() {
            store.store.clone()
        } else {
            entity.to_string()
        },
        firing,
        severity: rule.severity,
        started_at,
        ended_at,
        at,
        value: Some(value),
        labels,
        message,
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
