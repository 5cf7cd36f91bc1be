//! The per-entity state machine of each rule kind, in event time.
//!
//! Each machine takes observations (in event-time order) and timer expiries (the
//! deadline it asked for, once the store's watermark passed it) and answers with at
//! most one [`Step`]: an incident starts firing, or it resolves. Guarantees, for
//! every kind: at most one `Fire` per incident and one `Resolve` after it; the
//! incident's start is an event time taken from the observations (so a replay
//! decides the same start, and so the same alert id); a value that flickers around
//! a threshold inside the hysteresis band changes nothing.
//!
//! Values are assumed to hold until the next observation (a `for` of 10 min is met
//! when no observation inside those 10 min contradicted it).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::rule_file::{ColdChainSpec, Hysteresis, Recurring, SalesAnomalySpec};

/// An alert lifecycle step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Starts firing at event time `at`; the condition began at `start`.
    Fire { start: i64, at: i64, value: f64 },
    /// Stops firing at event time `at`; the condition ended at `end`.
    Resolve {
        start: i64,
        end: i64,
        at: i64,
        value: f64,
    },
}

/// Phase of a hysteresis machine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Normal,
    /// Beyond the threshold since `since`, waiting for `for`.
    Pending { since: i64 },
    /// Firing; the incident began at `start`.
    Firing { start: i64 },
    /// Firing, back on the clear side since `since`, waiting for `clear_for`.
    Clearing { start: i64, since: i64 },
}

/// A threshold held for a duration, with a separate clear level and duration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct HysteresisState {
    pub phase: Phase,
    /// Last value seen (reported with the step).
    pub last: f64,
}

impl HysteresisState {
    /// The timer this machine waits for.
    pub fn deadline(&self, h: &Hysteresis) -> Option<i64> {
        match self.phase {
            Phase::Pending { since } => Some(since.saturating_add(h.hold)),
            Phase::Clearing { since, .. } => Some(since.saturating_add(h.clear_hold)),
            _ => None,
        }
    }

    pub fn is_firing(&self) -> bool {
        matches!(self.phase, Phase::Firing { .. } | Phase::Clearing { .. })
    }

    /// Drops a breach still waiting for its `for` (the store closed before it was
    /// held long enough); a firing incident is kept.
    pub fn interrupt_pending(&mut self) {
        if matches!(self.phase, Phase::Pending { .. }) {
            self.phase = Phase::Normal;
        }
    }

    /// The incident start while firing.
    pub fn firing_since(&self) -> Option<i64> {
        match self.phase {
            Phase::Firing { start } | Phase::Clearing { start, .. } => Some(start),
            _ => None,
        }
    }

    /// A value observed at `t`.
    pub fn observe(&mut self, h: &Hysteresis, t: i64, v: f64) -> Option<Step> {
        self.last = v;
        match self.phase {
            Phase::Normal if h.breached(v) => {
                self.phase = Phase::Pending { since: t };
                if h.hold == 0 {
                    return self.expire(h, t);
                }
                None
            }
            Phase::Normal => None,
            Phase::Pending { .. } if h.breached(v) => None,
            Phase::Pending { .. } => {
                self.phase = Phase::Normal;
                None
            }
            Phase::Firing { start } if h.cleared(v) => {
                self.phase = Phase::Clearing { start, since: t };
                if h.clear_hold == 0 {
                    return self.expire(h, t);
                }
                None
            }
            Phase::Firing { .. } => None,
            Phase::Clearing { .. } if h.cleared(v) => None,
            Phase::Clearing { start, .. } => {
                self.phase = Phase::Firing { start };
                None
            }
        }
    }

    /// The deadline `at` passed (no observation before it changed the phase).
    pub fn expire(&mut self, h: &Hysteresis, at: i64) -> Option<Step> {
        match self.phase {
            Phase::Pending { since } if at >= since.saturating_add(h.hold) => {
                self.phase = Phase::Firing { start: since };
                Some(Step::Fire {
                    start: since,
                    at,
                    value: self.last,
                })
            }
            Phase::Clearing { start, since } if at >= since.saturating_add(h.clear_hold) => {
                self.phase = Phase::Normal;
                Some(Step::Resolve {
                    start,
                    end: since,
                    at,
                    value: self.last,
                })
            }
            _ => None,
        }
    }

    /// Ends an open incident now (its rule was removed); returns the resolve step.
    pub fn abandon(&mut self, at: i64) -> Option<Step> {
        let start = self.firing_since();
        self.phase = Phase::Normal;
        start.map(|start| Step::Resolve {
            start,
            end: at,
            at,
            value: self.last,
        })
    }
}

/// No observation from an entity for a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct AbsenceState {
    /// Event time of the latest observation.
    pub last_seen: i64,
    /// While firing: the silence began at `last_seen` (the incident start).
    pub firing: bool,
}

impl AbsenceState {
    pub fn new(t: i64) -> Self {
        Self {
            last_seen: t,
            firing: false,
        }
    }

    /// When the silence becomes an alert, given `deadline_of(last_seen)` (the timeout
    /// added, in open time for open-hours rules).
    pub fn deadline(&self, deadline_of: impl Fn(i64) -> i64) -> Option<i64> {
        (!self.firing).then(|| deadline_of(self.last_seen))
    }

    /// The entity spoke at `t`.
    pub fn observe(&mut self, t: i64) -> Option<Step> {
        let step = self.firing.then_some(Step::Resolve {
            start: self.last_seen,
            end: t.max(self.last_seen),
            at: t.max(self.last_seen),
            value: 0.0,
        });
        self.firing = false;
        self.last_seen = self.last_seen.max(t);
        step
    }

    /// The deadline `at` passed in silence.
    pub fn expire(&mut self, at: i64) -> Option<Step> {
        if self.firing {
            return None;
        }
        self.firing = true;
        Some(Step::Fire {
            start: self.last_seen,
            at,
            value: (at - self.last_seen) as f64 / 60_000_000.0,
        })
    }

    pub fn abandon(&mut self, at: i64) -> Option<Step> {
        let step = self.firing.then_some(Step::Resolve {
            start: self.last_seen,
            end: at,
            at,
            value: 0.0,
        });
        self.firing = false;
        step
    }
}

/// Rate of change: the change of the value over a window, fed to a hysteresis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RateState {
    /// (time, value) of the readings still needed: those in the window plus the last
    /// one before it.
    pub history: VecDeque<(i64, f64)>,
    pub hysteresis: HysteresisState,
}

impl RateState {
    pub fn observe(&mut self, window: i64, h: &Hysteresis, t: i64, v: f64) -> Option<Step> {
        self.history.push_back((t, v));
        let from = t - window;
        // Keep one reading at or before `from` (the value holding then).
        while self.history.len() >= 2 && self.history[1].0 <= from {
            self.history.pop_front();
        }
        let (t0, v0) = *self.history.front()?;
        if t0 > from {
            return None; // less than a window of history
        }
        self.hysteresis.observe(h, t, v - v0)
    }
}

/// Stock on hand of one SKU, from snapshots and adjustments.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct StockState {
    /// Unknown until the first snapshot.
    pub on_hand: Option<f64>,
    pub hysteresis: HysteresisState,
}

impl StockState {
    /// A snapshot (`snapshot`) or an adjustment of `q` at `t`; returns the on-hand
    /// level to judge, if known.
    pub fn apply(&mut self, snapshot: bool, q: f64) -> Option<f64> {
        self.on_hand = if snapshot {
            Some(q)
        } else {
            self.on_hand.map(|o| o + q)
        };
        self.on_hand
    }
}

/// Hourly sales of a store against what was expected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SalesState {
    /// Start of the open hour bucket (µs, aligned to the hour in UTC).
    pub bucket: i64,
    /// Sales so far in that hour.
    pub actual: f64,
    /// Usual level per hour of the week (168, Monday 00h first) and how many hours
    /// it was learnt from.
    pub usual: Vec<(f64, u32)>,
    /// Consecutive low hours and when the first of them began.
    pub low_hours: u32,
    pub low_since: i64,
    /// Start of the firing incident.
    pub firing: Option<i64>,
    /// Last ratio actual/expected judged.
    pub last_ratio: f64,
}

/// What one closed hour was expected to sell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    pub level: f64,
}

const HOUR: i64 = 3_600_000_000;

/// Hour of the week (0 = Monday 00:00–01:00 UTC) of the hour starting at `t`.
pub fn hour_of_week(t: i64) -> usize {
    // 1970-01-01 was a Thursday: shift so Monday is day 0.
    let hours = t.div_euclid(HOUR) + 3 * 24;
    hours.rem_euclid(168) as usize
}

impl SalesState {
    pub fn new(t: i64) -> Self {
        Self {
            bucket: t.div_euclid(HOUR) * HOUR,
            actual: 0.0,
            usual: vec![(0.0, 0); 168],
            low_hours: 0,
            low_since: 0,
            firing: None,
            last_ratio: 1.0,
        }
    }

    /// When the open hour closes.
    pub fn deadline(&self) -> i64 {
        self.bucket + HOUR
    }

    /// A sale of `amount` at `t` (in the open hour or later: hours between close
    /// first, through [`SalesState::close_hour`] by the caller's timer).
    pub fn add(&mut self, amount: f64) {
        self.actual += amount;
    }

    /// The usual level of the hour starting at `bucket`, once learnt.
    pub fn usual_level(&self, spec: &SalesAnomalySpec, bucket: i64) -> Option<f64> {
        let (level, n) = self.usual.get(hour_of_week(bucket)).copied()?;
        (n >= spec.min_history).then_some(level)
    }

    /// Closes the open hour (its end passed): judges it against `expected` (when
    /// there is one and it is not too small to tell; `judged` false for hours the
    /// rule does not look at, e.g. closed hours), learns its level, opens the next.
    pub fn close_hour(
        &mut self,
        spec: &SalesAnomalySpec,
        expected: Option<f64>,
        judged: bool,
    ) -> Option<Step> {
        let start = self.bucket;
        let end = start + HOUR;
        let actual = self.actual;
        let mut step = None;
        if let Some(expected) = expected.filter(|e| judged && *e >= spec.min_expected) {
            let ratio = actual / expected;
            self.last_ratio = ratio;
            if ratio < spec.ratio {
                if self.low_hours == 0 {
                    self.low_since = start;
                }
                self.low_hours += 1;
                if self.firing.is_none() && self.low_hours >= spec.hours {
                    self.firing = Some(self.low_since);
                    step = Some(Step::Fire {
                        start: self.low_since,
                        at: end,
                        value: ratio,
                    });
                }
            } else {
                self.low_hours = 0;
                if ratio >= spec.clear_ratio
                    && let Some(s) = self.firing.take()
                {
                    step = Some(Step::Resolve {
                        start: s,
                        end: start,
                        at: end,
                        value: ratio,
                    });
                }
            }
        }
        let slot = &mut self.usual[hour_of_week(start)];
        slot.0 = if slot.1 == 0 {
            actual
        } else {
            spec.alpha * actual + (1.0 - spec.alpha) * slot.0
        };
        slot.1 = slot.1.saturating_add(1);
        self.bucket = end;
        self.actual = 0.0;
        step
    }

    pub fn abandon(&mut self, at: i64) -> Option<Step> {
        self.firing.take().map(|start| Step::Resolve {
            start,
            end: at,
            at,
            value: self.last_ratio,
        })
    }
}

/// Door open periods of a store, for cold-chain masks: the doors open now and the
/// recent closed intervals (two days of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DoorLog {
    /// Doors open now: (door, since).
    pub open: Vec<(String, i64)>,
    /// Closed intervals (door, from, to), oldest first.
    pub intervals: VecDeque<(String, i64, i64)>,
}

impl DoorLog {
    /// A door reading: `open` at `t`.
    pub fn observe(&mut self, door: &str, t: i64, open: bool) {
        let idx = self.open.iter().position(|(d, _)| d == door);
        match (idx, open) {
            (None, true) => self.open.push((door.to_string(), t)),
            (Some(i), false) => {
                let (door, since) = self.open.swap_remove(i);
                self.intervals.push_back((door, since, t));
            }
            _ => {}
        }
        while self
            .intervals
            .front()
            .is_some_and(|(_, _, to)| *to < t - 48 * HOUR)
        {
            self.intervals.pop_front();
        }
    }

    /// µs of `[from, to)` masked by the doors `counts` accepts being open (and
    /// `grace` after each close).
    pub fn masked(&self, from: i64, to: i64, grace: i64, counts: impl Fn(&str) -> bool) -> i64 {
        if to <= from {
            return 0;
        }
        let mut spans: Vec<(i64, i64)> = self
            .intervals
            .iter()
            .filter(|(d, _, _)| counts(d))
            .map(|(_, a, b)| (*a, b.saturating_add(grace)))
            .chain(
                self.open
                    .iter()
                    .filter(|(d, _)| counts(d))
                    .map(|(_, s)| (*s, i64::MAX)),
            )
            .filter_map(|(a, b)| {
                let (a, b) = (a.max(from), b.min(to));
                (a < b).then_some((a, b))
            })
            .collect();
        spans.sort_unstable();
        let mut total = 0;
        let mut cur: Option<(i64, i64)> = None;
        for (a, b) in spans {
            match cur {
                Some((ca, cb)) if a <= cb => cur = Some((ca, cb.max(b))),
                Some((ca, cb)) => {
                    total += cb - ca;
                    cur = Some((a, b));
                }
                None => cur = Some((a, b)),
            }
        }
        if let Some((a, b)) = cur {
            total += b - a;
        }
        total
    }
}

/// Cold-chain exposure of one appliance: degree-minutes above the limit over an
/// incident, outside masked time (defrost, open doors).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct ColdState {
    /// Previous reading.
    pub last: Option<(i64, f64)>,
    /// The incident: first reading above the limit.
    pub incident: Option<i64>,
    /// Degree-minutes of the incident so far.
    pub exposure: f64,
    pub firing: bool,
    /// At or below the limit since (while in an incident).
    pub below_since: Option<i64>,
}

impl ColdState {
    pub fn deadline(&self, spec: &ColdChainSpec) -> Option<i64> {
        self.below_since.map(|s| s.saturating_add(spec.clear_for))
    }

    /// A temperature reading `v` at `t`; `masked(from, to)` is the masked µs of a span.
    pub fn observe(
        &mut self,
        spec: &ColdChainSpec,
        t: i64,
        v: f64,
        masked: impl Fn(i64, i64) -> i64,
    ) -> Option<Step> {
        let mut step = None;
        if let (Some((t0, v0)), Some(_)) = (self.last, self.incident)
            && v0 > spec.limit
            && t > t0
        {
            let mask = masked(t0, t)
                + spec
                    .defrost
                    .iter()
                    .map(|d: &Recurring| d.overlap(t0, t))
                    .sum::<i64>();
            let minutes = ((t - t0) - mask).max(0) as f64 / 60_000_000.0;
            self.exposure += (v0 - spec.limit) * minutes;
        }
        if v > spec.limit {
            self.below_since = None;
            if self.incident.is_none() {
                self.incident = Some(t);
                self.exposure = 0.0;
            }
        } else if self.incident.is_some() && self.below_since.is_none() {
            self.below_since = Some(t);
        }
        if let Some(start) = self.incident
            && !self.firing
            && self.exposure >= spec.budget
        {
            self.firing = true;
            step = Some(Step::Fire {
                start,
                at: t,
                value: round2(self.exposure),
            });
        }
        self.last = Some((t, v));
        step
    }

    /// `clear_for` at or below the limit passed: the incident ends.
    pub fn expire(&mut self, spec: &ColdChainSpec, at: i64) -> Option<Step> {
        let since = self.below_since?;
        if at < since.saturating_add(spec.clear_for) {
            return None;
        }
        let start = self.incident.take()?;
        self.below_since = None;
        let exposure = std::mem::take(&mut self.exposure);
        if std::mem::take(&mut self.firing) {
            return Some(Step::Resolve {
                start,
                end: since,
                at,
                value: round2(exposure),
            });
        }
        None
    }

    pub fn abandon(&mut self, at: i64) -> Option<Step> {
        let start = self.incident.take();
        self.below_since = None;
        let exposure = std::mem::take(&mut self.exposure);
        if std::mem::take(&mut self.firing) {
            return start.map(|start| Step::Resolve {
                start,
                end: at,
                at,
                value: round2(exposure),
            });
        }
        None
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000_000;

    fn h(fire: f64, clear: f64, hold: i64, clear_hold: i64) -> Hysteresis {
        Hysteresis {
            above: true,
            fire,
            clear,
            hold,
            clear_hold,
        }
    }

    #[test]
    fn threshold_fires_after_exactly_for_and_resolves_after_clear_for() {
        let spec = h(-15.0, -17.0, 10 * M, 5 * M);
        let mut s = HysteresisState::default();
        assert_eq!(
            s.observe(&spec, 0, -15.0),
            None,
            "at the threshold is not beyond"
        );
        assert_eq!(s.observe(&spec, M, -14.9), None);
        assert_eq!(s.deadline(&spec), Some(11 * M));
        assert_eq!(s.expire(&spec, 11 * M - 1), None, "one µs short");
        assert_eq!(
            s.expire(&spec, 11 * M),
            Some(Step::Fire {
                start: M,
                at: 11 * M,
                value: -14.9
            })
        );
        // Inside the band: still firing, no step.
        assert_eq!(s.observe(&spec, 12 * M, -16.0), None);
        assert_eq!(
            s.observe(&spec, 13 * M, -17.0),
            None,
            "at the clear level is not clear"
        );
        assert_eq!(s.observe(&spec, 14 * M, -17.5), None);
        assert_eq!(s.deadline(&spec), Some(19 * M));
        assert_eq!(
            s.expire(&spec, 19 * M),
            Some(Step::Resolve {
                start: M,
                end: 14 * M,
                at: 19 * M,
                value: -17.5
            })
        );
        assert!(!s.is_firing());
    }

    #[test]
    fn flicker_around_the_threshold_never_fires_or_flaps() {
        let spec = h(-15.0, -17.0, 10 * M, 5 * M);
        let mut s = HysteresisState::default();
        for i in 0..100 {
            let v = if i % 2 == 0 { -14.0 } else { -15.5 };
            assert_eq!(s.observe(&spec, i * M, v), None);
            if let Some(d) = s.deadline(&spec) {
                assert!(d > i * M + M, "never held for 10 min");
            }
        }
        // Firing, then flickering inside the band: one firing, no resolve.
        let mut s = HysteresisState::default();
        s.observe(&spec, 0, -10.0);
        assert!(matches!(s.expire(&spec, 10 * M), Some(Step::Fire { .. })));
        for i in 11..60 {
            let v = if i % 2 == 0 { -14.0 } else { -16.5 };
            assert_eq!(s.observe(&spec, i * M, v), None);
        }
        assert!(s.is_firing());
        // Dipping below clear briefly and back resets clear_for.
        s.observe(&spec, 60 * M, -18.0);
        s.observe(&spec, 63 * M, -16.0);
        assert_eq!(s.expire(&spec, 65 * M), None);
        assert!(s.is_firing());
    }

    #[test]
    fn zero_for_fires_on_the_reading() {
        let spec = h(5.0, 5.0, 0, 0);
        let mut s = HysteresisState::default();
        assert_eq!(
            s.observe(&spec, 7, 6.0),
            Some(Step::Fire {
                start: 7,
                at: 7,
                value: 6.0
            })
        );
        assert_eq!(
            s.observe(&spec, 9, 4.0),
            Some(Step::Resolve {
                start: 7,
                end: 9,
                at: 9,
                value: 4.0
            })
        );
    }

    #[test]
    fn below_rules_mirror_above_rules() {
        let spec = Hysteresis {
            above: false,
            fire: 10.0,
            clear: 15.0,
            hold: 0,
            clear_hold: 0,
        };
        let mut s = HysteresisState::default();
        assert_eq!(s.observe(&spec, 0, 10.0), None);
        assert!(matches!(s.observe(&spec, 1, 9.0), Some(Step::Fire { .. })));
        assert_eq!(s.observe(&spec, 2, 15.0), None, "band edge");
        assert!(matches!(
            s.observe(&spec, 3, 15.5),
            Some(Step::Resolve { .. })
        ));
    }

    #[test]
    fn absence_fires_once_and_resolves_when_heard_again() {
        let mut a = AbsenceState::new(0);
        assert_eq!(a.deadline(|t| t + 2 * M), Some(2 * M));
        assert_eq!(a.observe(M), None);
        assert_eq!(a.deadline(|t| t + 2 * M), Some(3 * M));
        assert_eq!(
            a.expire(3 * M),
            Some(Step::Fire {
                start: M,
                at: 3 * M,
                value: 2.0
            })
        );
        assert_eq!(a.deadline(|t| t + 2 * M), None);
        assert_eq!(a.expire(4 * M), None, "no second firing");
        assert_eq!(
            a.observe(10 * M),
            Some(Step::Resolve {
                start: M,
                end: 10 * M,
                at: 10 * M,
                value: 0.0
            })
        );
    }

    #[test]
    fn rate_of_change_needs_a_window_of_history() {
        let spec = h(3.0, 3.0, 0, 10 * M);
        let mut r = RateState::default();
        assert_eq!(r.observe(10 * M, &spec, 0, -18.0), None);
        assert_eq!(
            r.observe(10 * M, &spec, 5 * M, -16.0),
            None,
            "half a window"
        );
        // +3.0 over exactly 10 min is not more than 3.0.
        assert_eq!(r.observe(10 * M, &spec, 10 * M, -15.0), None);
        // Value at 11m - 10m = 1m is the one from 0 (held): -18 -> -14.9 = 3.1.
        assert!(matches!(
            r.observe(10 * M, &spec, 11 * M, -14.9),
            Some(Step::Fire { start, .. }) if start == 11 * M
        ));
        assert!(r.history.len() <= 4);
    }

    #[test]
    fn stock_tracks_snapshots_and_adjustments() {
        let mut s = StockState::default();
        assert_eq!(s.apply(false, -3.0), None, "unknown before a snapshot");
        assert_eq!(s.apply(true, 10.0), Some(10.0));
        assert_eq!(s.apply(false, -4.0), Some(6.0));
    }

    fn sales_spec() -> SalesAnomalySpec {
        SalesAnomalySpec {
            measure: crate::rule_file::SalesMeasure::Units,
            ratio: 0.3,
            clear_ratio: 0.6,
            min_expected: 5.0,
            hours: 1,
            alpha: 0.5,
            min_history: 1,
        }
    }

    #[test]
    fn sales_hours_fire_when_far_below_expected_and_resolve_when_back() {
        let spec = sales_spec();
        let mut s = SalesState::new(0);
        s.add(20.0);
        assert_eq!(
            s.close_hour(&spec, None, true),
            None,
            "nothing expected yet"
        );
        assert_eq!(s.usual[hour_of_week(0)], (20.0, 1));
        s.add(2.0);
        let fired = s.close_hour(&spec, Some(20.0), true);
        assert_eq!(
            fired,
            Some(Step::Fire {
                start: HOUR,
                at: 2 * HOUR,
                value: 0.1
            })
        );
        s.add(8.0);
        assert_eq!(
            s.close_hour(&spec, Some(20.0), true),
            None,
            "0.4: not yet clear"
        );
        s.add(15.0);
        assert_eq!(
            s.close_hour(&spec, Some(20.0), true),
            Some(Step::Resolve {
                start: HOUR,
                end: 3 * HOUR,
                at: 4 * HOUR,
                value: 0.75
            })
        );
        // Too little expected to tell: never judged.
        assert_eq!(s.close_hour(&spec, Some(4.0), true), None);
        assert_eq!(hour_of_week(0), 72, "1970-01-01 00:00 was a Thursday");
    }

    #[test]
    fn door_masks_merge_overlaps_and_grace() {
        let mut d = DoorLog::default();
        d.observe("door-1", 10 * M, true);
        d.observe("door-2", 12 * M, true);
        d.observe("door-1", 14 * M, false);
        d.observe("door-2", 15 * M, false);
        // Open 10..15, grace 2 min -> masked 10..17.
        let all = |_: &str| true;
        assert_eq!(d.masked(0, 20 * M, 2 * M, all), 7 * M);
        assert_eq!(d.masked(16 * M, 20 * M, 2 * M, all), M);
        assert_eq!(d.masked(0, 20 * M, 0, |d| d == "door-1"), 4 * M);
        d.observe("door-1", 30 * M, true);
        assert_eq!(d.masked(29 * M, 40 * M, 0, all), 10 * M, "still open");
    }

    #[test]
    fn cold_chain_accrues_outside_masks_and_fires_at_the_budget() {
        let spec = ColdChainSpec {
            limit: 5.0,
            budget: 30.0,
            clear_for: 10 * M,
            doors: Vec::new(),
            door_grace: 0,
            defrost: vec![Recurring {
                every: 6 * HOUR,
                duration: 30 * M,
                offset: 0,
            }],
        };
        let mut c = ColdState::default();
        let none = |_, _| 0;
        // Inside the defrost window 0..30m: 10 °C over the limit accrues nothing.
        assert_eq!(c.observe(&spec, 0, 15.0, none), None);
        assert_eq!(c.observe(&spec, 30 * M, 8.0, none), None);
        assert_eq!(c.exposure, 0.0);
        // 3 °C over for 10 min = 30 degree-minutes: fires.
        assert_eq!(
            c.observe(&spec, 40 * M, 6.0, none),
            Some(Step::Fire {
                start: 0,
                at: 40 * M,
                value: 30.0
            })
        );
        assert_eq!(c.observe(&spec, 50 * M, 4.0, none), None);
        assert_eq!(c.deadline(&spec), Some(60 * M));
        assert_eq!(
            c.expire(&spec, 60 * M),
            Some(Step::Resolve {
                start: 0,
                end: 50 * M,
                at: 60 * M,
                value: 40.0
            })
        );
        // A masked door-open hour accrues nothing either.
        let mut c = ColdState::default();
        let door = |a: i64, b: i64| b - a;
        c.observe(&spec, HOUR, 20.0, door);
        assert_eq!(c.observe(&spec, 2 * HOUR, 20.0, door), None);
        assert_eq!(c.exposure, 0.0);
    }
}
