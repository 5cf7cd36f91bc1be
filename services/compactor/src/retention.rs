//! Retention rules per read-store relation: keep, drop after a time, or archive after
//! a time (`[compactor.retention]`).
//!
//! A rule's time is measured from the row's event time (`occurred_at`; `bucket` for the
//! analyst relations). Rows go a whole partition (TimescaleDB chunk) at a time: a row
//! is removed once its partition lies wholly before `now - after` (see the maintenance
//! task, [`crate::maintenance`]). The configured map is merged over
//! [`default_retention`], so a file names only what it changes; an unknown relation
//! name is an error naming it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use storepulse_runtime::Retention;

/// What happens to a relation's old rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionRule {
    /// Kept for good (`unlimited`).
    Keep,
    /// Removed once older than this (`30d`).
    DropAfter(Duration),
    /// Moved to `storepulse_archive.<relation>` once older than this (`archive after 365d`).
    ArchiveAfter(Duration),
}

impl RetentionRule {
    /// The time after which rows leave the relation, if they ever do.
    pub fn after(self) -> Option<Duration> {
        match self {
            RetentionRule::Keep => None,
            RetentionRule::DropAfter(d) | RetentionRule::ArchiveAfter(d) => Some(d),
        }
    }
}

impl std::fmt::Display for RetentionRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetentionRule::Keep => f.write_str("unlimited"),
            RetentionRule::DropAfter(d) => write!(f, "{}", Retention::Finite(*d)),
            RetentionRule::ArchiveAfter(d) => write!(f, "archive after {}", Retention::Finite(*d)),
        }
    }
}

impl std::str::FromStr for RetentionRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        let (archive, duration) = match t.strip_prefix("archive after ") {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let parsed: Retention = duration.parse().map_err(|e: String| {
            format!("{e}; or `archive after <duration>` to move old rows to storepulse_archive")
        })?;
        Ok(match (parsed, archive) {
            (Retention::Unlimited, false) => RetentionRule::Keep,
            (Retention::Unlimited, true) => {
                return Err(format!("{text:?}: archive after a duration, e.g. 365d"));
            }
            (Retention::Finite(d), false) => RetentionRule::DropAfter(d),
            (Retention::Finite(d), true) => RetentionRule::ArchiveAfter(d),
        })
    }
}

impl Serialize for RetentionRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RetentionRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Raw event relations: partitioned by event time (migration 0009).
pub const RAW_RELATIONS: [&str; 10] = [
    "sales",
    "sale_lines",
    "inventory_changes",
    "pos_heartbeats",
    "sensor_readings",
    "rejected_events",
    "alert_transitions",
    "demand_forecasts",
    "demand_forecast_days",
    "notification_outcomes",
];

/// Raw relations whose rows go with another's (lines with their event): their rules
/// must be equal.
pub const GO_TOGETHER: [(&str, &str); 2] = [
    ("sales", "sale_lines"),
    ("demand_forecasts", "demand_forecast_days"),
];

/// Analyst relations (rollup tables on plain PostgreSQL, continuous aggregates on
/// TimescaleDB), by `bucket`.
pub const ANALYST_RELATIONS: [&str; 5] = [
    "sales_hourly",
    "sales_daily",
    "sensor_stats_5m",
    "sensor_stats_hourly",
    "pos_uptime_daily",
];

/// Whether retention can be set for `relation`.
pub fn is_known(relation: &str) -> bool {
    RAW_RELATIONS.contains(&relation) || ANALYST_RELATIONS.contains(&relation)
}

/// Shortest raw retention: ingest accepts events up to 30 days old, and TimescaleDB's
/// refresh policies recompute the buckets of the last 30 days from the raw rows (a
/// partition is dropped only once it lies wholly before the cutoff, so every row of
/// the last 30 days is still there).
pub const MIN_RAW_RETENTION: Duration = Duration::from_secs(30 * 86_400);

const DAY: u64 = 86_400;

/// Defaults: raw sensor readings 30 days (the shortest allowed, see
/// [`MIN_RAW_RETENTION`]); the analyst relations 2 years (730 days); alert transitions
/// archived after a year (365 days); everything else for good.
pub fn default_retention() -> BTreeMap<String, RetentionRule> {
    let mut rules: BTreeMap<String, RetentionRule> = RAW_RELATIONS
        .iter()
        .map(|r| (r.to_string(), RetentionRule::Keep))
        .collect();
    rules.insert(
        "sensor_readings".into(),
        RetentionRule::DropAfter(MIN_RAW_RETENTION),
    );
    for r in ANALYST_RELATIONS {
        rules.insert(
            r.into(),
            RetentionRule::DropAfter(Duration::from_secs(730 * DAY)),
        );
    }
    rules
}

/// `[compactor.retention]`: the given rules merged over [`default_retention`].
pub fn retention_over_defaults<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, RetentionRule>, D::Error> {
    let given = BTreeMap::<String, RetentionRule>::deserialize(d)?;
    let mut rules = default_retention();
    rules.extend(given);
    Ok(rules)
}

/// Checks the rules: known relations only; raw relations kept at least
/// [`MIN_RAW_RETENTION`]; lines like their events ([`GO_TOGETHER`]).
pub fn validate(rules: &BTreeMap<String, RetentionRule>) -> Result<(), (String, String)> {
    for (relation, rule) in rules {
        let key = format!("retention.{relation}");
        if !is_known(relation) {
            return Err((
                key,
                format!(
                    "unknown relation; known: {}",
                    RAW_RELATIONS
                        .iter()
                        .chain(ANALYST_RELATIONS.iter())
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if RAW_RELATIONS.contains(&relation.as_str())
            && rule.after().is_some_and(|d| d < MIN_RAW_RETENTION)
        {
            return Err((
                key,
                format!(
                    "{rule} is shorter than {}: ingest accepts events up to 30 days old and the aggregates are refreshed from the last 30 days of raw rows",
                    Retention::Finite(MIN_RAW_RETENTION)
                ),
            ));
        }
        if ANALYST_RELATIONS.contains(&relation.as_str())
            && matches!(rule, RetentionRule::ArchiveAfter(_))
        {
            return Err((
                key,
                "analyst relations can be kept or dropped, not archived (they are recomputed from the raw rows)".into(),
            ));
        }
    }
    for (events, lines) in GO_TOGETHER {
        if rules.get(events) != rules.get(lines) {
            return Err((
                format!("retention.{lines}"),
                format!("must equal retention.{events} (an event and its lines go together)"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_print_back() {
        for (text, rule) in [
            ("unlimited", RetentionRule::Keep),
            (
                "30d",
                RetentionRule::DropAfter(Duration::from_secs(30 * DAY)),
            ),
            (
                "archive after 365d",
                RetentionRule::ArchiveAfter(Duration::from_secs(365 * DAY)),
            ),
        ] {
            assert_eq!(text.parse::<RetentionRule>(), Ok(rule));
            assert_eq!(rule.to_string(), text);
        }
        assert!("archive after unlimited".parse::<RetentionRule>().is_err());
        assert!("forever".parse::<RetentionRule>().is_err());
    }

    #[test]
    fn validation_names_the_relation() {
        let mut rules = default_retention();
        assert_eq!(validate(&rules), Ok(()));
        rules.insert("sensor_reading".into(), RetentionRule::Keep);
        assert_eq!(
            validate(&rules).expect_err("invalid").0,
            "retention.sensor_reading"
        );
        let mut rules = default_retention();
        rules.insert(
            "sensor_readings".into(),
            RetentionRule::DropAfter(Duration::from_secs(7 * DAY)),
        );
        assert!(
            validate(&rules)
                .expect_err("invalid")
                .1
                .contains("shorter than")
        );
        let mut rules = default_retention();
        rules.insert(
            "sales".into(),
            RetentionRule::DropAfter(Duration::from_secs(400 * DAY)),
        );
        assert_eq!(
            validate(&rules).expect_err("invalid").0,
            "retention.sale_lines"
        );
    }
}
