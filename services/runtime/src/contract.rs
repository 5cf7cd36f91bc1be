//! The contract every record on an event topic satisfies, whoever produced it.
//!
//! Ingest checks posted JSON field by field (with its own, stricter policy bounds);
//! a connector may produce Avro straight to the topics. Consumers that keep state
//! from the topics (the compactor first) check each decoded record against this
//! contract and dead-letter what breaks it, so a NaN temperature, an infinite stock
//! level, a sale whose total does not add up or a record filed under another store's
//! key never reaches the read store. The limits here are the ones ingest enforces
//! too (it uses the same constants and money arithmetic).

use chrono::{DateTime, Datelike};
use uuid::Uuid;

use crate::dead_letter::Rejection;
use crate::records::{
    AlertState, AlertTransition, DeliveryStatus, DemandForecast, Envelope, InventoryChange,
    InventoryChangeKind, NotificationOutcome, PosHeartbeat, SaleKind, SaleTransaction, SensorKind,
    SensorReading, store_key,
};

/// Longest identifier (ids, SKUs, names): bounds row and label sizes.
pub const MAX_ID_LEN: usize = 128;
/// Longest free text (an alert's summary, a delivery error): bounds row sizes.
pub const MAX_TEXT_LEN: usize = 4096;
/// Most labels on one alert (labels route notifications; a bounded set).
pub const MAX_LABELS: usize = 64;
/// Most days in one demand forecast (a year ahead).
pub const MAX_FORECAST_DAYS: usize = 366;
/// Most line items in one transaction.
pub const MAX_LINES: usize = 500;
/// Quantities carry at most three decimals (grams of a kilogram), so money is exact
/// in integers: milli-units × minor units.
pub const QUANTITY_SCALE: f64 = 1000.0;
/// Event times must lie in these years (inclusive).
pub const YEARS: std::ops::RangeInclusive<i32> = 1970..=9999;

/// The physical range of a sensor kind's value, and what it means.
pub fn sensor_range(kind: SensorKind) -> (std::ops::RangeInclusive<f64>, &'static str) {
    match kind {
        SensorKind::Temperature => (-60.0..=80.0, "outside the physical range -60..80 °C"),
        SensorKind::Humidity => (0.0..=100.0, "outside 0..100 %"),
        SensorKind::Door => (0.0..=1.0, "must be 1 (open) or 0 (closed)"),
        SensorKind::Power => (0.0..=1.0, "must be 1 (on) or 0 (off)"),
    }
}

/// Whether `value` is a valid reading of `kind`.
pub fn sensor_value_ok(kind: SensorKind, value: f64) -> bool {
    match kind {
        SensorKind::Door | SensorKind::Power => value == 0.0 || value == 1.0,
        _ => sensor_range(kind).0.contains(&value),
    }
}

/// `quantity` in thousandths, if it is finite with at most three decimals.
pub fn milli_units(quantity: f64) -> Option<i64> {
    if !quantity.is_finite() || quantity.abs() > 1e12 {
        return None;
    }
    let scaled = quantity * QUANTITY_SCALE;
    let rounded = scaled.round();
    ((scaled - rounded).abs() <= 1e-6 * rounded.abs().max(1.0)).then_some(rounded as i64)
}

/// Σ milli-units × unit price, in minor units, computed in integers and rounded half
/// up (away from zero for these non-negative amounts); `None` if it overflows i64.
pub fn total_minor(lines: &[(i64, i64)]) -> Option<i64> {
    let mut sum: i128 = 0;
    for &(milli, price) in lines {
        sum = sum.checked_add(i128::from(milli).checked_mul(i128::from(price))?)?;
    }
    let scale = QUANTITY_SCALE as i128;
    i64::try_from((sum + scale / 2).div_euclid(scale)).ok()
}

/// An identifier-like text: non-empty, bounded, no NUL.
pub fn check_text(field: &str, value: &str) -> Result<(), Rejection> {
    if value.trim().is_empty() {
        Err(Rejection::field(field, "must not be empty"))
    } else if value.len() > MAX_ID_LEN {
        Err(Rejection::field(
            field,
            format!("longer than {MAX_ID_LEN} bytes"),
        ))
    } else if value.contains('\0') {
        Err(Rejection::field(
            field,
            "contains a NUL character (\\u0000), which cannot be stored",
        ))
    } else {
        Ok(())
    }
}

/// A free text (a message): bounded by [`MAX_TEXT_LEN`], no NUL; may be empty unless
/// `required`.
pub fn check_message(field: &str, value: &str, required: bool) -> Result<(), Rejection> {
    if required && value.trim().is_empty() {
        Err(Rejection::field(field, "must not be empty"))
    } else if value.len() > MAX_TEXT_LEN {
        Err(Rejection::field(
            field,
            format!("longer than {MAX_TEXT_LEN} bytes"),
        ))
    } else if value.contains('\0') {
        Err(Rejection::field(
            field,
            "contains a NUL character (\\u0000), which cannot be stored",
        ))
    } else {
        Ok(())
    }
}

fn check_opt_text(field: &str, value: Option<&str>) -> Result<(), Rejection> {
    value.map_or(Ok(()), |v| check_text(field, v))
}

fn check_time(field: &str, micros: i64) -> Result<(), Rejection> {
    match DateTime::from_timestamp_micros(micros) {
        Some(t) if YEARS.contains(&t.year()) => Ok(()),
        _ => Err(Rejection::field(
            field,
            format!(
                "{micros} µs since the epoch is outside the years {}..={}",
                YEARS.start(),
                YEARS.end()
            ),
        )),
    }
}

/// A `date` (days since the epoch) in [`YEARS`].
fn check_date(field: &str, days: i32) -> Result<(), Rejection> {
    match crate::records::from_days(days) {
        Some(d) if YEARS.contains(&d.year()) => Ok(()),
        _ => Err(Rejection::field(
            field,
            format!(
                "{days} days since the epoch is outside the years {}..={}",
                YEARS.start(),
                YEARS.end()
            ),
        )),
    }
}

fn finite(field: &str, value: f64) -> Result<(), Rejection> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(Rejection::field(field, "must be a finite number"))
    }
}

/// The envelope: a non-nil UUID id, texts, representable times, and — when the
/// record came with a Kafka key — the key naming the envelope's own store.
pub fn check_envelope(e: &Envelope, key: Option<&[u8]>) -> Result<Uuid, Rejection> {
    let id = Uuid::parse_str(&e.event_id).map_err(|_| {
        Rejection::field("envelope.event_id", format!("not a UUID: {:?}", e.event_id))
    })?;
    if id.is_nil() {
        return Err(Rejection::field(
            "envelope.event_id",
            "the nil UUID is not an event id",
        ));
    }
    check_text("envelope.tenant_id", &e.tenant_id)?;
    check_text("envelope.store_id", &e.store_id)?;
    check_text("envelope.source", &e.source)?;
    check_time("envelope.occurred_at", e.occurred_at)?;
    check_time("envelope.received_at", e.received_at)?;
    if let Some(key) = key {
        let expected = store_key(&e.tenant_id, &e.store_id);
        if key != expected.as_bytes() {
            return Err(Rejection::field(
                "key",
                format!(
                    "the record key {:?} is not its envelope's store {expected:?}; a store's events must share one key (and partition)",
                    String::from_utf8_lossy(key)
                ),
            ));
        }
    }
    Ok(id)
}

/// What a record type must satisfy beyond its envelope.
pub trait RecordContract {
    fn check_body(&self) -> Result<(), Rejection>;
}

impl RecordContract for SaleTransaction {
    fn check_body(&self) -> Result<(), Rejection> {
        check_text("transaction_id", &self.transaction_id)?;
        check_text("terminal_id", &self.terminal_id)?;
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(Rejection::field(
                "currency",
                "must be an ISO 4217 code like EUR",
            ));
        }
        if self.lines.is_empty() {
            return Err(Rejection::field("lines", "must have at least one line"));
        }
        if self.lines.len() > MAX_LINES {
            return Err(Rejection::field(
                "lines",
                format!("more than {MAX_LINES} lines"),
            ));
        }
        let mut amounts = Vec::with_capacity(self.lines.len());
        for (i, line) in self.lines.iter().enumerate() {
            check_text(&format!("lines[{i}].sku"), &line.sku)?;
            let milli = milli_units(line.quantity)
                .filter(|m| *m > 0)
                .ok_or_else(|| {
                    Rejection::field(
                        format!("lines[{i}].quantity"),
                        "must be > 0, finite, with at most 3 decimals",
                    )
                })?;
            if line.unit_price_minor < 0 {
                return Err(Rejection::field(
                    format!("lines[{i}].unit_price_minor"),
                    "must be >= 0",
                ));
            }
            amounts.push((milli, line.unit_price_minor));
        }
        let expected = total_minor(&amounts)
            .ok_or_else(|| Rejection::field("total_minor", "the lines' total overflows"))?;
        if self.total_minor != expected {
            return Err(Rejection::field(
                "total_minor",
                format!(
                    "is {}, but the lines add up to {expected}",
                    self.total_minor
                ),
            ));
        }
        match (self.kind, &self.original_transaction_id) {
            (SaleKind::Sale, Some(_)) => Err(Rejection::field(
                "original_transaction_id",
                "only refunds and voids reverse a transaction",
            )),
            (_, id) => check_opt_text("original_transaction_id", id.as_deref()),
        }
    }
}

impl RecordContract for InventoryChange {
    fn check_body(&self) -> Result<(), Rejection> {
        check_text("sku", &self.sku)?;
        finite("quantity", self.quantity)?;
        match self.kind {
            InventoryChangeKind::Snapshot if self.quantity < 0.0 => {
                Err(Rejection::field("quantity", "on-hand stock must be >= 0"))
            }
            InventoryChangeKind::Snapshot if self.reason.is_some() => Err(Rejection::field(
                "reason",
                "a snapshot has no adjustment reason",
            )),
            InventoryChangeKind::Adjustment if self.quantity == 0.0 => Err(Rejection::field(
                "quantity",
                "an adjustment must change the stock (non-zero delta)",
            )),
            InventoryChangeKind::Adjustment if self.reason.is_none() => {
                Err(Rejection::field("reason", "an adjustment needs a reason"))
            }
            _ => Ok(()),
        }
    }
}

impl RecordContract for PosHeartbeat {
    fn check_body(&self) -> Result<(), Rejection> {
        check_text("terminal_id", &self.terminal_id)?;
        check_opt_text("software_version", self.software_version.as_deref())
    }
}

impl RecordContract for SensorReading {
    fn check_body(&self) -> Result<(), Rejection> {
        check_text("device_id", &self.device_id)?;
        check_opt_text("appliance", self.appliance.as_deref())?;
        if self.unit != self.kind.unit() {
            return Err(Rejection::field(
                "unit",
                format!(
                    "{} does not match kind {}; expected {}",
                    self.unit,
                    self.kind,
                    self.kind.unit()
                ),
            ));
        }
        if !sensor_value_ok(self.kind, self.value) {
            return Err(Rejection::field("value", sensor_range(self.kind).1));
        }
        Ok(())
    }
}

impl RecordContract for AlertTransition {
    /// Ids, the subject and the rule kind are identifiers; the summary a bounded
    /// message; the value, when given, finite; the condition began (`started_at`) no
    /// later than this transition (`envelope.occurred_at`); `ended_at` only on a
    /// resolved transition, between `started_at` and the transition; at most
    /// [`MAX_LABELS`] labels with identifier names and bounded values.
    fn check_body(&self) -> Result<(), Rejection> {
        check_text("alert_id", &self.alert_id)?;
        check_text("rule_id", &self.rule_id)?;
        check_text("subject", &self.subject)?;
        check_message("summary", &self.summary, false)?;
        if let Some(v) = self.value {
            finite("value", v)?;
        }
        check_opt_text("rule_kind", self.rule_kind.as_deref())?;
        check_time("started_at", self.started_at)?;
        if self.started_at > self.envelope.occurred_at {
            return Err(Rejection::field(
                "started_at",
                "is after the transition (envelope.occurred_at); a condition begins before it fires or resolves",
            ));
        }
        if let Some(ended) = self.ended_at {
            check_time("ended_at", ended)?;
            if self.state != AlertState::Resolved {
                return Err(Rejection::field(
                    "ended_at",
                    "only a resolved transition says when the condition ended",
                ));
            }
            if ended < self.started_at || ended > self.envelope.occurred_at {
                return Err(Rejection::field(
                    "ended_at",
                    "must lie between started_at and the transition (envelope.occurred_at)",
                ));
            }
        }
        if self.labels.len() > MAX_LABELS {
            return Err(Rejection::field(
                "labels",
                format!("more than {MAX_LABELS} labels"),
            ));
        }
        for (name, value) in &self.labels {
            check_text("labels", name)?;
            if value.len() > MAX_ID_LEN || value.contains('\0') {
                return Err(Rejection::field(
                    format!("labels.{name}"),
                    format!("must be at most {MAX_ID_LEN} bytes without NUL"),
                ));
            }
        }
        Ok(())
    }
}

impl RecordContract for DemandForecast {
    /// Identifier texts; `interval_level` in (0, 1); 1 to [`MAX_FORECAST_DAYS`] days,
    /// each date once and in [`YEARS`], with finite `0 <= lower <= mean <= upper`
    /// (demand is never negative); `on_hand` finite, `days_of_cover` finite and
    /// `>= 0`, `stock_out_probability` in [0, 1], when given; the wide interval,
    /// when given, on every day, around the narrow one, at a level above it;
    /// `lead_time_days` in 1..=366; backtest errors finite and non-negative, sMAPE
    /// at most 200.
    fn check_body(&self) -> Result<(), Rejection> {
        check_text("sku", &self.sku)?;
        check_text("method", &self.method)?;
        if !(self.interval_level > 0.0 && self.interval_level < 1.0) {
            return Err(Rejection::field(
                "interval_level",
                "must be a coverage strictly between 0 and 1, e.g. 0.9",
            ));
        }
        if self.days.is_empty() {
            return Err(Rejection::field("days", "must have at least one day"));
        }
        if self.days.len() > MAX_FORECAST_DAYS {
            return Err(Rejection::field(
                "days",
                format!("more than {MAX_FORECAST_DAYS} days"),
            ));
        }
        let mut seen = std::collections::HashSet::with_capacity(self.days.len());
        for (i, d) in self.days.iter().enumerate() {
            check_date(&format!("days[{i}].date"), d.date)?;
            if !seen.insert(d.date) {
                return Err(Rejection::field(
                    format!("days[{i}].date"),
                    "repeats a date of this forecast; each day is forecast once",
                ));
            }
            for (name, v) in [("lower", d.lower), ("mean", d.mean), ("upper", d.upper)] {
                finite(&format!("days[{i}].{name}"), v)?;
            }
            if !(0.0 <= d.lower && d.lower <= d.mean && d.mean <= d.upper) {
                return Err(Rejection::field(
                    format!("days[{i}]"),
                    format!(
                        "must satisfy 0 <= lower <= mean <= upper, got {} / {} / {}",
                        d.lower, d.mean, d.upper
                    ),
                ));
            }
            match (d.wide_lower, d.wide_upper) {
                (None, None) => {}
                (Some(wl), Some(wu)) => {
                    finite(&format!("days[{i}].wide_lower"), wl)?;
                    finite(&format!("days[{i}].wide_upper"), wu)?;
                    if !(0.0 <= wl && wl <= d.lower && d.upper <= wu) {
                        return Err(Rejection::field(
                            format!("days[{i}]"),
                            format!(
                                "must satisfy 0 <= wide_lower <= lower and upper <= wide_upper, got {wl} / {} / {} / {wu}",
                                d.lower, d.upper
                            ),
                        ));
                    }
                }
                _ => {
                    return Err(Rejection::field(
                        format!("days[{i}]"),
                        "wide_lower and wide_upper come together",
                    ));
                }
            }
        }
        if let Some(v) = self.on_hand {
            finite("on_hand", v)?;
        }
        if let Some(v) = self.days_of_cover {
            finite("days_of_cover", v)?;
            if v < 0.0 {
                return Err(Rejection::field("days_of_cover", "must be >= 0"));
            }
        }
        if let Some(p) = self.stock_out_probability
            && !(0.0..=1.0).contains(&p)
        {
            return Err(Rejection::field(
                "stock_out_probability",
                "must be a probability in 0..1",
            ));
        }
        if let Some(w) = self.wide_interval_level
            && !(w > self.interval_level && w < 1.0)
        {
            return Err(Rejection::field(
                "wide_interval_level",
                "must be a coverage above interval_level and below 1",
            ));
        }
        let wide_days = self.days.iter().filter(|d| d.wide_lower.is_some()).count();
        let expected = if self.wide_interval_level.is_some() {
            self.days.len()
        } else {
            0
        };
        if wide_days != expected {
            return Err(Rejection::field(
                "wide_interval_level",
                "is given exactly when days carry wide_lower/wide_upper",
            ));
        }
        if let Some(l) = self.lead_time_days
            && !(1..=MAX_FORECAST_DAYS as i32).contains(&l)
        {
            return Err(Rejection::field(
                "lead_time_days",
                format!("must be 1..={MAX_FORECAST_DAYS}"),
            ));
        }
        if let Some(b) = &self.backtest {
            finite("backtest.mase", b.mase)?;
            finite("backtest.smape", b.smape)?;
            if b.mase < 0.0 {
                return Err(Rejection::field("backtest.mase", "must be >= 0"));
            }
            if !(0.0..=200.0).contains(&b.smape) {
                return Err(Rejection::field(
                    "backtest.smape",
                    "must be a percentage in 0..200",
                ));
            }
            if let Some(m) = b.baseline_mase {
                finite("backtest.baseline_mase", m)?;
                if m < 0.0 {
                    return Err(Rejection::field("backtest.baseline_mase", "must be >= 0"));
                }
            }
            if b.origins < 1 || b.history_days < 1 {
                return Err(Rejection::field(
                    "backtest",
                    "origins and history_days must be >= 1",
                ));
            }
        }
        Ok(())
    }
}

impl RecordContract for NotificationOutcome {
    /// Identifier texts; `attempts` >= 0, and >= 1 for a delivered notification; the
    /// error, when given, a bounded message.
    fn check_body(&self) -> Result<(), Rejection> {
        check_text("alert_id", &self.alert_id)?;
        check_text("receiver", &self.receiver)?;
        if self.attempts < 0 {
            return Err(Rejection::field("attempts", "must be >= 0"));
        }
        if self.status == DeliveryStatus::Delivered && self.attempts == 0 {
            return Err(Rejection::field(
                "attempts",
                "a delivered notification took at least one attempt",
            ));
        }
        if let Some(e) = &self.error {
            check_message("error", e, false)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{AdjustmentReason, LineItem, SensorUnit};

    fn envelope() -> Envelope {
        Envelope {
            event_id: "0b7f8c1e-3c59-4d8e-9d43-8f1c7f0a2a11".into(),
            tenant_id: "acme".into(),
            store_id: "s-1".into(),
            occurred_at: 1_763_000_000_000_000,
            received_at: 1_763_000_000_000_000,
            source: "connector".into(),
        }
    }

    fn field(r: Result<(), Rejection>) -> String {
        r.expect_err("breaks the contract")
            .field
            .unwrap_or_default()
    }

    #[test]
    fn the_envelope_names_its_store_and_a_real_time() {
        assert!(check_envelope(&envelope(), Some(b"acme/s-1")).is_ok());
        assert!(check_envelope(&envelope(), None).is_ok());
        let err = check_envelope(&envelope(), Some(b"other/s-1")).expect_err("foreign key");
        assert_eq!(err.field.as_deref(), Some("key"));
        let mut e = envelope();
        e.occurred_at = -62_135_596_800_000_000; // 0001-01-01
        assert_eq!(
            check_envelope(&e, None)
                .expect_err("year 1")
                .field
                .as_deref(),
            Some("envelope.occurred_at")
        );
        let mut e = envelope();
        e.event_id = String::new();
        assert!(check_envelope(&e, None).is_err());
        let mut e = envelope();
        e.store_id = "s\0".into();
        assert!(check_envelope(&e, None).is_err());
    }

    #[test]
    fn readings_are_finite_in_range_and_in_their_unit() {
        let r = SensorReading {
            envelope: envelope(),
            device_id: "f".into(),
            kind: SensorKind::Temperature,
            value: -18.0,
            unit: SensorUnit::Celsius,
            appliance: None,
        };
        assert!(r.check_body().is_ok());
        for bad in [f64::NAN, f64::INFINITY, 1e300, -61.0] {
            let mut x = r.clone();
            x.value = bad;
            assert_eq!(field(x.check_body()), "value", "{bad}");
        }
        let mut x = r.clone();
        x.unit = SensorUnit::Percent;
        assert_eq!(field(x.check_body()), "unit");
    }

    #[test]
    fn stock_and_sales_add_up() {
        let inv = InventoryChange {
            envelope: envelope(),
            kind: InventoryChangeKind::Adjustment,
            sku: "milk".into(),
            quantity: f64::INFINITY,
            reason: Some(AdjustmentReason::Delivery),
        };
        assert_eq!(field(inv.check_body()), "quantity");
        let mut snap = inv.clone();
        snap.kind = InventoryChangeKind::Snapshot;
        snap.quantity = -5.0;
        assert_eq!(field(snap.check_body()), "quantity");
        let mut no_reason = inv.clone();
        no_reason.quantity = 3.0;
        no_reason.reason = None;
        assert_eq!(field(no_reason.check_body()), "reason");

        let sale = SaleTransaction {
            envelope: envelope(),
            kind: SaleKind::Sale,
            transaction_id: "t".into(),
            terminal_id: "p".into(),
            currency: "EUR".into(),
            lines: vec![LineItem {
                sku: "a".into(),
                quantity: 2.0,
                unit_price_minor: 150,
            }],
            total_minor: 300,
            original_transaction_id: None,
        };
        assert!(sale.check_body().is_ok());
        let mut wrong_total = sale.clone();
        wrong_total.total_minor = 999_999;
        assert_eq!(field(wrong_total.check_body()), "total_minor");
        let mut negative = sale.clone();
        negative.lines[0].unit_price_minor = -5;
        assert_eq!(field(negative.check_body()), "lines[0].unit_price_minor");
        let mut empty = sale.clone();
        empty.lines.clear();
        assert_eq!(field(empty.check_body()), "lines");
    }

    #[test]
    fn money_is_summed_exactly_in_integers() {
        assert_eq!(milli_units(0.333), Some(333));
        assert_eq!(milli_units(0.0001), None);
        assert_eq!(milli_units(f64::NAN), None);
        assert_eq!(total_minor(&[(333, 199); 3]), Some(199)); // 198.801 -> 199
        assert_eq!(total_minor(&[(1500, 3)]), Some(5)); // 4.5 -> 5
        assert_eq!(total_minor(&[(1_000_000_000, i64::MAX)]), None);
    }
    #[test]
    fn a_forecast_carries_nested_intervals_and_sane_backtest_errors() {
        let day = |date: i32| crate::records::ForecastDay {
            date,
            mean: 5.0,
            lower: 3.0,
            upper: 7.0,
            wide_lower: Some(2.0),
            wide_upper: Some(9.0),
        };
        let f = DemandForecast {
            envelope: envelope(),
            sku: "milk".into(),
            method: "holt-winters".into(),
            interval_level: 0.8,
            days: vec![day(20_000), day(20_001)],
            on_hand: Some(12.0),
            days_of_cover: Some(2.4),
            stock_out_probability: Some(0.3),
            wide_interval_level: Some(0.95),
            lead_time_days: Some(7),
            backtest: Some(crate::records::ForecastBacktest {
                mase: 0.8,
                smape: 40.0,
                baseline_mase: Some(1.0),
                origins: 3,
                history_days: 120,
            }),
        };
        assert!(f.check_body().is_ok());
        let mut x = f.clone();
        x.days[1].wide_lower = Some(3.5);
        assert_eq!(field(x.check_body()), "days[1]");
        let mut x = f.clone();
        x.days[0].wide_upper = None;
        assert_eq!(field(x.check_body()), "days[0]");
        let mut x = f.clone();
        x.wide_interval_level = Some(0.7);
        assert_eq!(field(x.check_body()), "wide_interval_level");
        let mut x = f.clone();
        x.wide_interval_level = None;
        assert_eq!(field(x.check_body()), "wide_interval_level");
        let mut x = f.clone();
        x.lead_time_days = Some(0);
        assert_eq!(field(x.check_body()), "lead_time_days");
        let mut x = f.clone();
        if let Some(b) = x.backtest.as_mut() {
            b.mase = f64::NAN;
        }
        assert_eq!(field(x.check_body()), "backtest.mase");
        let mut x = f;
        if let Some(b) = x.backtest.as_mut() {
            b.smape = 250.0;
        }
        assert_eq!(field(x.check_body()), "backtest.smape");
    }
}
