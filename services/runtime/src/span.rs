//! Durations as people write them everywhere in StorePulse — rule files, the notifier
//! policy, command-line flags: `30s`, `10m`, `1h30m`, `500ms`, `7d`, `2w`. One syntax,
//! one parser. Held as microseconds like every event time, or as a
//! [`std::time::Duration`].

/// Microseconds per unit.
pub const MS: i64 = 1_000;
pub const SECOND: i64 = 1_000_000;
pub const MINUTE: i64 = 60 * SECOND;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;

/// Parses `text` (one or more `<number><unit>` parts, units `ms`, `s`, `m`, `h`,
/// `d`, `w`) into microseconds. `0` alone is zero.
pub fn parse(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a duration (write e.g. 30s, 10m, 1h30m, 7d)");
    if t == "0" {
        return Ok(0);
    }
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: i64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (MS, 2)
        } else {
            match rest.chars().next() {
                Some('s') => (SECOND, 1),
                Some('m') => (MINUTE, 1),
                Some('h') => (HOUR, 1),
                Some('d') => (DAY, 1),
                Some('w') => (7 * DAY, 1),
                _ => return Err(bad()),
            }
        };
        rest = &rest[len..];
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// [`parse`] as a [`std::time::Duration`].
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let us = parse(text)?;
    Ok(std::time::Duration::from_micros(us.unsigned_abs()))
}

/// A duration for people: `10m`, `1h30m`, `45s`, `250ms`.
pub fn format(us: i64) -> String {
    if us == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = us.abs();
    if us < 0 {
        out.push('-');
    }
    for (unit, name) in [
        (DAY, "d"),
        (HOUR, "h"),
        (MINUTE, "m"),
        (SECOND, "s"),
        (MS, "ms"),
    ] {
        if rest >= unit {
            out.push_str(&format!("{}{name}", rest / unit));
            rest %= unit;
        }
    }
    if rest > 0 {
        out.push_str(&format!("{rest}us"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse("30s"), Ok(30 * SECOND));
        assert_eq!(parse("10m"), Ok(10 * MINUTE));
        assert_eq!(parse("1h30m"), Ok(90 * MINUTE));
        assert_eq!(parse("500ms"), Ok(500 * MS));
        assert_eq!(parse("7d"), Ok(7 * DAY));
        assert_eq!(parse("2w"), Ok(14 * DAY));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(
            parse_duration("1m30s"),
            Ok(std::time::Duration::from_secs(90))
        );
        for bad in ["", "10", "m", "10x", "-5m", "1.5h", "99999999999999999d"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format(90 * MINUTE), "1h30m");
        assert_eq!(format(45 * SECOND), "45s");
        assert_eq!(format(0), "0s");
        assert_eq!(format(250 * MS), "250ms");
    }
}
