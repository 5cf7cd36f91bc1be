//! Store calendars: each store's time zone, weekly opening hours and holidays, for
//! rules scoped to open hours (`during = "open_hours"`).
//!
//! A calendar file (TOML) has `[defaults]`, `[tenants.<tenant>]` and
//! `[stores."<tenant>/<store>"]` sections, each with optional `time_zone` (IANA
//! name), `hours` (per weekday `mon` … `sun`: `"08:00-20:00"`, several ranges
//! separated by commas, `"closed"`, or `"00:00-24:00"`) and `holidays` (dates,
//! closed all day). A store's calendar is the defaults, then its tenant's section,
//! then its own, field by field (weekdays one by one; holidays add up). A store
//! covered by no section is always open.
//!
//! Guarantees: a file either loads completely or is refused naming the section and
//! field; local times are judged in the store's zone with its daylight-saving
//! rules (a range over a skipped hour is shorter that day, over a repeated hour
//! longer); open time is counted in real elapsed time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use toml::{Table, Value};

use crate::observation::StoreRef;

/// A calendar file that cannot be used, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("[{section}] {field}: {reason}")]
pub struct CalendarError {
    pub section: String,
    pub field: String,
    pub reason: String,
}

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

/// Open ranges of one weekday, as seconds since local midnight `[from, to)`.
type DayHours = Vec<(i32, i32)>;

/// Opening hours of one store.
#[derive(Debug, Clone)]
pub struct StoreCalendar {
    pub time_zone: TimeZone,
    pub zone_name: String,
    /// Monday first; a weekday not given is open all day.
    pub hours: [DayHours; 7],
    pub holidays: BTreeSet<Date>,
}

impl PartialEq for StoreCalendar {
    fn eq(&self, other: &Self) -> bool {
        self.zone_name == other.zone_name
            && self.hours == other.hours
            && self.holidays == other.holidays
    }
}

const ALL_DAY: (i32, i32) = (0, 86_400);
/// The longest stretch searched for open time (a store closed for longer never
/// reaches an open-hours deadline).
const SEARCH_DAYS: i32 = 400;

fn weekday_index(w: Weekday) -> usize {
    w.to_monday_zero_offset() as usize
}

impl StoreCalendar {
    fn zoned(&self, t: i64) -> Option<Zoned> {
        Some(
            Timestamp::from_microsecond(t)
                .ok()?
                .to_zoned(self.time_zone.clone()),
        )
    }

    /// Open ranges of local `date`, as UTC µs `[from, to)`.
    fn open_ranges(&self, date: Date) -> Vec<(i64, i64)> {
        if self.holidays.contains(&date) {
            return Vec::new();
        }
        let instant = |secs: i32| -> Option<i64> {
            let (d, s) = if secs >= 86_400 {
                (date.tomorrow().ok()?, 0)
            } else {
                (date, secs)
            };
            let time =
                Time::new((s / 3600) as i8, ((s % 3600) / 60) as i8, (s % 60) as i8, 0).ok()?;
            let z = d.to_datetime(time).to_zoned(self.time_zone.clone()).ok()?;
            Some(z.timestamp().as_microsecond())
        };
        self.hours[weekday_index(date.weekday())]
            .iter()
            .filter_map(|(a, b)| Some((instant(*a)?, instant(*b)?)))
            .filter(|(a, b)| a < b)
            .collect()
    }

    pub fn is_open(&self, t: i64) -> bool {
        let Some(z) = self.zoned(t) else {
            return true;
        };
        // The ranges of the local day (and of the day before, for a range ending
        // at 24:00 on a day whose midnight moved).
        self.open_ranges(z.date())
            .iter()
            .any(|(a, b)| *a <= t && t < *b)
    }

    /// The instant `open` µs of open time after `from` (`i64::MAX` if the store
    /// does not open for that long within 400 days).
    pub fn add_open_time(&self, from: i64, open: i64) -> i64 {
        let Some(z) = self.zoned(from) else {
            return from.saturating_add(open);
        };
        let mut left = open;
        let mut date = z.date();
        for _ in 0..SEARCH_DAYS {
            for (a, b) in self.open_ranges(date) {
                let a = a.max(from);
                if b <= a {
                    continue;
                }
                if b - a >= left {
                    return a + left;
                }
                left -= b - a;
            }
            date = match date.tomorrow() {
                Ok(d) => d,
                Err(_) => return i64::MAX,
            };
        }
        i64::MAX
    }

    /// When the store next opens (`true`) or closes (`false`) after `t`, within
    /// 400 days.
    pub fn next_change(&self, t: i64) -> Option<(bool, i64)> {
        let open = self.is_open(t);
        let mut date = self.zoned(t)?.date().yesterday().ok()?;
        for _ in 0..SEARCH_DAYS {
            for (a, b) in self.open_ranges(date) {
                if !open && a > t {
                    return Some((true, a));
                }
                if open && a <= t && t < b {
                    return Some((false, b));
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The hours of each weekday for people: `mon 08:00-20:00`, ….
    pub fn describe_hours(&self) -> Vec<String> {
        DAYS.iter()
            .map(|(name, w)| {
                let ranges = &self.hours[weekday_index(*w)];
                let text = if ranges.is_empty() {
                    "closed".to_string()
                } else {
                    ranges
                        .iter()
                        .map(|(a, b)| format!("{}-{}", hhmm(*a), hhmm(*b)))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                format!("{name} {text}")
            })
            .collect()
    }
}

fn hhmm(secs: i32) -> String {
    format!("{:02}:{:02}", secs / 3600, (secs % 3600) / 60)
}

/// One section of the file, as given (fields unset stay `None`).
#[derive(Debug, Clone, Default)]
struct Section {
    time_zone: Option<(String, TimeZone)>,
    hours: BTreeMap<usize, DayHours>,
    holidays: BTreeSet<Date>,
}

/// Calendars of every store, with defaults for stores not listed.
#[derive(Debug, Clone, Default)]
pub struct Calendar {
    defaults: Option<Section>,
    tenants: HashMap<String, Section>,
    stores: HashMap<StoreRef, Section>,
    /// Resolved calendars, computed once.
    resolved: HashMap<StoreRef, StoreCalendar>,
    resolved_defaults: HashMap<String, StoreCalendar>,
}

impl Calendar {
    /// Every store always open.
    pub fn always_open() -> Self {
        Self::default()
    }

    /// Reads a calendar file.
    pub fn load(path: &Path) -> Result<Self, CalendarError> {
        let text = std::fs::read_to_string(path).map_err(|e| CalendarError {
            section: "file".into(),
            field: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text)
    }

    /// Validates calendar text.
    pub fn parse(text: &str) -> Result<Self, CalendarError> {
        let err = |section: &str, field: &str, reason: String| CalendarError {
            section: section.into(),
            field: field.into(),
            reason,
        };
        let doc: Table = text
            .parse()
            .map_err(|e: toml::de::Error| err("file", "toml", e.to_string().trim().to_string()))?;
        let mut cal = Calendar::default();
        for (key, value) in &doc {
            let Value::Table(t) = value else {
                return Err(err(key, key, "must be a table".into()));
            };
            match key.as_str() {
                "defaults" => cal.defaults = Some(section("defaults", t)?),
                "tenants" => {
                    for (tenant, v) in t {
                        let Value::Table(s) = v else {
                            return Err(err(
                                &format!("tenants.{tenant}"),
                                tenant,
                                "must be a table".into(),
                            ));
                        };
                        cal.tenants
                            .insert(tenant.clone(), section(&format!("tenants.{tenant}"), s)?);
                    }
                }
                "stores" => {
                    for (name, v) in t {
                        let name_s = format!("stores.\"{name}\"");
                        let Some((tenant, store)) = name.split_once('/') else {
                            return Err(err(
                                &name_s,
                                name,
                                "name stores as \"tenant/store\"".into(),
                            ));
                        };
                        let Value::Table(s) = v else {
                            return Err(err(&name_s, name, "must be a table".into()));
                        };
                        cal.stores.insert(
                            StoreRef {
                                tenant: tenant.into(),
                                store: store.into(),
                            },
                            section(&name_s, s)?,
                        );
                    }
                }
                other => {
                    return Err(err(
                        other,
                        other,
                        "unknown section (known: defaults, tenants, stores)".into(),
                    ));
                }
            }
        }
        let stores: Vec<StoreRef> = cal.stores.keys().cloned().collect();
        for s in stores {
            if let Some(c) = cal.compose(&s) {
                cal.resolved.insert(s, c);
            }
        }
        let tenants: Vec<String> = cal.tenants.keys().cloned().collect();
        for t in tenants {
            let probe = StoreRef {
                tenant: t.clone(),
                store: String::new(),
            };
            if let Some(c) = cal.compose(&probe) {
                cal.resolved_defaults.insert(t, c);
            }
        }
        if let Some(c) = cal.compose(&StoreRef {
            tenant: String::new(),
            store: String::new(),
        }) {
            cal.resolved_defaults.insert(String::new(), c);
        }
        Ok(cal)
    }

    /// The defaults, the tenant's section and the store's, merged.
    fn compose(&self, store: &StoreRef) -> Option<StoreCalendar> {
        let layers: Vec<&Section> = [
            self.defaults.as_ref(),
            self.tenants.get(&store.tenant),
            self.stores.get(store),
        ]
        .into_iter()
        .flatten()
        .collect();
        if layers.is_empty() {
            return None;
        }
        let mut zone = ("UTC".to_string(), TimeZone::UTC);
        let mut hours: [DayHours; 7] = std::array::from_fn(|_| vec![ALL_DAY]);
        let mut holidays = BTreeSet::new();
        for l in layers {
            if let Some(z) = &l.time_zone {
                zone = z.clone();
            }
            for (d, h) in &l.hours {
                hours[*d] = h.clone();
            }
            holidays.extend(l.holidays.iter().copied());
        }
        Some(StoreCalendar {
            time_zone: zone.1,
            zone_name: zone.0,
            hours,
            holidays,
        })
    }

    /// The calendar of `store`, if any section covers it.
    pub fn of(&self, store: &StoreRef) -> Option<&StoreCalendar> {
        self.resolved
            .get(store)
            .or_else(|| self.resolved_defaults.get(&store.tenant))
            .or_else(|| self.resolved_defaults.get(""))
    }

    /// Stores with a section of their own.
    pub fn stores(&self) -> Vec<&StoreRef> {
        let mut v: Vec<&StoreRef> = self.stores.keys().collect();
        v.sort();
        v
    }

    pub fn is_open(&self, store: &StoreRef, t: i64) -> bool {
        self.of(store).is_none_or(|c| c.is_open(t))
    }

    pub fn add_open_time(&self, store: &StoreRef, from: i64, open: i64) -> i64 {
        match self.of(store) {
            Some(c) => c.add_open_time(from, open),
            None => from.saturating_add(open),
        }
    }
}

/// `2026-11-28 13:30 UTC`.
fn utc_minute(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

impl Calendar {
    /// `storepulse stores list`: the stores with a section of their own, their
    /// zone, and whether each is open at `at`.
    pub fn render_list(&self, at: i64) -> String {
        let mut s = format!(
            "{:<32} {:<24} at {}\n",
            "store",
            "time zone",
            utc_minute(at)
        );
        for store in self.stores() {
            if let Some(c) = self.of(store) {
                let state = if c.is_open(at) { "open" } else { "closed" };
                s.push_str(&format!(
                    "{:<32} {:<24} {state}\n",
                    store.key(),
                    c.zone_name
                ));
            }
        }
        s
    }

    /// `storepulse stores show`: a store's calendar (its section over its
    /// tenant's and the defaults): zone, weekly hours, holidays, whether it is open
    /// at `at` and when that changes next.
    pub fn render_store(&self, store: &StoreRef, at: i64) -> String {
        let Some(c) = self.of(store) else {
            return format!(
                "{}: no calendar section covers it: always open\n",
                store.key()
            );
        };
        let mut s = format!("{}  ({})\n", store.key(), c.zone_name);
        for line in c.describe_hours() {
            s.push_str(&format!("  {line}\n"));
        }
        let holidays: Vec<String> = c.holidays.iter().map(|d| d.to_string()).collect();
        s.push_str(&format!(
            "  holidays: {}\n",
            if holidays.is_empty() {
                "none".into()
            } else {
                holidays.join(", ")
            }
        ));
        let state = if c.is_open(at) { "open" } else { "closed" };
        let next = match c.next_change(at) {
            Some((true, t)) => format!("; opens {}", utc_minute(t)),
            Some((false, t)) => format!("; closes {}", utc_minute(t)),
            None => String::new(),
        };
        s.push_str(&format!("  at {}: {state}{next}\n", utc_minute(at)));
        s
    }
}

fn section(name: &str, t: &Table) -> Result<Section, CalendarError> {
    let err = |field: &str, reason: String| CalendarError {
        section: name.into(),
        field: field.into(),
        reason,
    };
    let mut s = Section::default();
    for (key, value) in t {
        match key.as_str() {
            "time_zone" => {
                let Value::String(z) = value else {
                    return Err(err(key, "must be a string, e.g. \"Europe/Berlin\"".into()));
                };
                let tz = TimeZone::get(z)
                    .map_err(|e| err(key, format!("{z:?} is not a known time zone: {e}")))?;
                s.time_zone = Some((z.clone(), tz));
            }
            "hours" => {
                let Value::Table(days) = value else {
                    return Err(err(
                        key,
                        "must be a table of weekdays, e.g. { mon = \"08:00-20:00\" }".into(),
                    ));
                };
                for (day, v) in days {
                    let field = format!("hours.{day}");
                    let Some(idx) = DAYS.iter().position(|(n, _)| n == day) else {
                        return Err(err(
                            &field,
                            "not a weekday (mon, tue, wed, thu, fri, sat, sun)".into(),
                        ));
                    };
                    let Value::String(text) = v else {
                        return Err(err(
                            &field,
                            "must be a string like \"08:00-20:00\" or \"closed\"".into(),
                        ));
                    };
                    s.hours
                        .insert(idx, parse_hours(text).map_err(|e| err(&field, e))?);
                }
            }
            "holidays" => {
                let Value::Array(days) = value else {
                    return Err(err(
                        key,
                        "must be a list of dates, e.g. [\"2026-12-25\"]".into(),
                    ));
                };
                for d in days {
                    let date = match d {
                        Value::String(text) => text.parse::<Date>().map_err(|e| {
                            err(key, format!("{text:?} is not a date (YYYY-MM-DD): {e}"))
                        })?,
                        Value::Datetime(dt) => dt.to_string().parse::<Date>().map_err(|e| {
                            err(key, format!("{dt} is not a date (YYYY-MM-DD): {e}"))
                        })?,
                        _ => return Err(err(key, "dates are strings like \"2026-12-25\"".into())),
                    };
                    s.holidays.insert(date);
                }
            }
            other => {
                return Err(err(
                    other,
                    "unknown field (known: time_zone, hours, holidays)".into(),
                ));
            }
        }
    }
    Ok(s)
}

/// `"08:00-12:00, 14:00-19:00"`, `"closed"`, `"00:00-24:00"`.
fn parse_hours(text: &str) -> Result<DayHours, String> {
    let t = text.trim();
    if t == "closed" {
        return Ok(Vec::new());
    }
    let clock = |s: &str| -> Result<i32, String> {
        let s = s.trim();
        let (h, m) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not a time (HH:MM)"))?;
        let h: i32 = h
            .parse()
            .map_err(|_| format!("{s:?} is not a time (HH:MM)"))?;
        let m: i32 = m
            .parse()
            .map_err(|_| format!("{s:?} is not a time (HH:MM)"))?;
        if !(0..=24).contains(&h) || !(0..60).contains(&m) || (h == 24 && m != 0) {
            return Err(format!("{s:?} is not a time of day (00:00 to 24:00)"));
        }
        Ok(h * 3600 + m * 60)
    };
    let mut ranges = Vec::new();
    for part in t.split(',') {
        let (a, b) = part
            .split_once('-')
            .ok_or_else(|| format!("{part:?} is not a range like 08:00-20:00"))?;
        let (a, b) = (clock(a)?, clock(b)?);
        if a >= b {
            return Err(format!(
                "{part:?}: the range must end after it starts (split a range past midnight into two days)"
            ));
        }
        ranges.push((a, b));
    }
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(format!("{t:?}: ranges overlap"));
        }
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000;
    const M: i64 = 60_000_000;

    fn at(text: &str) -> i64 {
        text.parse::<Timestamp>()
            .expect("timestamp")
            .as_microsecond()
    }

    const FILE: &str = r#"
[defaults]
time_zone = "Europe/Berlin"
hours = { mon = "08:00-20:00", tue = "08:00-20:00", wed = "08:00-20:00", thu = "08:00-20:00", fri = "08:00-20:00", sat = "09:00-13:00, 14:00-18:00", sun = "closed" }
holidays = ["2026-12-25"]

[tenants.acme]
hours = { sun = "10:00-14:00" }

[stores."acme/s-2"]
time_zone = "America/New_York"
holidays = ["2026-11-26"]
"#;

    fn store(t: &str, s: &str) -> StoreRef {
        StoreRef {
            tenant: t.into(),
            store: s.into(),
        }
    }

    #[test]
    fn opening_hours_in_the_store_zone() {
        let c = Calendar::parse(FILE).expect("valid");
        let other = store("other", "s-1");
        // Monday 2026-11-23: Berlin is UTC+1, so 08:00 local is 07:00Z.
        assert!(!c.is_open(&other, at("2026-11-23T06:59:59Z")));
        assert!(c.is_open(&other, at("2026-11-23T07:00:00Z")));
        assert!(c.is_open(&other, at("2026-11-23T18:59:59Z")));
        assert!(!c.is_open(&other, at("2026-11-23T19:00:00Z")));
        // Saturday lunch break; Sunday closed by default, open for acme.
        assert!(!c.is_open(&other, at("2026-11-28T12:30:00Z")));
        assert!(!c.is_open(&other, at("2026-11-29T10:00:00Z")));
        assert!(c.is_open(&store("acme", "s-1"), at("2026-11-29T10:00:00Z")));
        // Holidays add up: s-2 has Thanksgiving and Christmas, in New York time.
        let s2 = store("acme", "s-2");
        assert!(!c.is_open(&s2, at("2026-11-26T15:00:00Z")));
        assert!(c.is_open(&s2, at("2026-11-27T15:00:00Z")));
        assert!(!c.is_open(&s2, at("2026-12-25T15:00:00Z")));
        // No section at all: always open.
        assert!(Calendar::always_open().is_open(&other, 0));
    }

    #[test]
    fn open_time_skips_closed_hours_and_days() {
        let c = Calendar::parse(FILE).expect("valid");
        let other = store("other", "s-1");
        // Friday 19:50 local + 30 open minutes: 10 on Friday, then Saturday 09:20.
        let from = at("2026-11-27T18:50:00Z");
        assert_eq!(
            c.add_open_time(&other, from, 30 * M),
            at("2026-11-28T08:20:00Z")
        );
        // Saturday 12:50 + 20 min: 10 before the break, 10 after it.
        assert_eq!(
            c.add_open_time(&other, at("2026-11-28T11:50:00Z"), 20 * M),
            at("2026-11-28T13:10:00Z")
        );
        // Saturday 17:30 + 1 h: Sunday closed, Monday 08:30.
        assert_eq!(
            c.add_open_time(&other, at("2026-11-28T16:30:00Z"), H),
            at("2026-11-30T07:30:00Z")
        );
    }

    #[test]
    fn daylight_saving_days_are_as_long_as_they_are() {
        let c = Calendar::parse(
            "[defaults]\ntime_zone = \"Europe/Berlin\"\nhours = { sun = \"00:00-24:00\" }\n",
        )
        .expect("valid");
        let s = store("a", "b");
        // 2026-03-29: clocks go 02:00 -> 03:00; the day has 23 hours.
        let midnight = at("2026-03-28T23:00:00Z");
        assert_eq!(
            c.add_open_time(&s, midnight, 23 * H),
            at("2026-03-29T22:00:00Z")
        );
        assert!(c.is_open(&s, at("2026-03-29T21:59:59Z")));
        assert!(c.is_open(&s, at("2026-03-29T01:30:00Z")), "03:30 local");
    }

    #[test]
    fn the_example_file_loads() {
        let c = Calendar::parse(include_str!("../../../config/stores.example.toml"))
            .expect("config/stores.example.toml is valid");
        let s = store("acme", "store-017");
        assert_eq!(
            c.of(&s).map(|c| c.zone_name.as_str()),
            Some("Europe/Lisbon")
        );
        // Saturday 2026-11-28 13:30 in Lisbon (UTC+0): the lunch break.
        assert!(!c.is_open(&s, at("2026-11-28T13:30:00Z")));
        assert!(c.is_open(&s, at("2026-11-28T14:30:00Z")));
        // Sundays: acme opens, others do not.
        assert!(c.is_open(&store("acme", "x"), at("2026-11-29T10:30:00Z")));
        assert!(!c.is_open(&store("other", "x"), at("2026-11-29T10:30:00Z")));
    }

    #[test]
    fn errors_name_the_section_and_field() {
        let e = Calendar::parse("[defaults]\ntime_zone = \"Mars/Olympus\"\n").expect_err("bad");
        assert_eq!(
            (e.section.as_str(), e.field.as_str()),
            ("defaults", "time_zone")
        );
        let e = Calendar::parse("[stores.\"a/b\"]\nhours = { mun = \"08:00-20:00\" }\n")
            .expect_err("bad");
        assert_eq!(e.field, "hours.mun");
        let e =
            Calendar::parse("[defaults]\nhours = { mon = \"20:00-08:00\" }\n").expect_err("bad");
        assert!(e.reason.contains("past midnight"), "{e}");
        let e = Calendar::parse("[defaults]\nholidays = [\"2026-13-01\"]\n").expect_err("bad");
        assert_eq!(e.field, "holidays");
        let e = Calendar::parse("[stores.nostore]\n").expect_err("bad");
        assert!(e.reason.contains("tenant/store"), "{e}");
        let e = Calendar::parse("[defaults]\nopen = true\n").expect_err("bad");
        assert_eq!(e.field, "open");
    }
}
