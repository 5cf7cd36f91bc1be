//! Which calendar day a sale belongs to: the day in the store's time zone.
//!
//! The store's time zone is not on the topics (the envelope carries UTC times only),
//! so the forecaster is told in its configuration: `forecaster.time_zone` for every
//! store, `forecaster.store_time_zones` (`"tenant/store" = "Europe/Paris"`) for the
//! exceptions. Names are IANA zones; daylight-saving changes are followed.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

/// Time zones of the stores.
#[derive(Debug, Clone)]
pub struct StoreZones {
    default: Tz,
    stores: BTreeMap<String, Tz>,
}

/// A time zone name that is not an IANA zone.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{name:?} is not an IANA time zone (e.g. Europe/Paris, America/New_York, UTC)")]
pub struct UnknownZone {
    pub name: String,
}

fn parse(name: &str) -> Result<Tz, UnknownZone> {
    name.parse::<Tz>().map_err(|_| UnknownZone {
        name: name.to_string(),
    })
}

impl StoreZones {
    /// `default` for every store, `stores` (`"tenant/store"` → zone) for the exceptions.
    pub fn new(default: &str, stores: &BTreeMap<String, String>) -> Result<Self, UnknownZone> {
        Ok(Self {
            default: parse(default)?,
            stores: stores
                .iter()
                .map(|(k, v)| Ok((k.clone(), parse(v)?)))
                .collect::<Result<_, UnknownZone>>()?,
        })
    }

    /// The store's time zone.
    pub fn zone(&self, tenant: &str, store: &str) -> Tz {
        self.stores
            .get(&format!("{tenant}/{store}"))
            .copied()
            .unwrap_or(self.default)
    }

    /// The store's calendar day at `micros` (µs since the epoch, UTC).
    pub fn day(&self, tenant: &str, store: &str, micros: i64) -> NaiveDate {
        let utc = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default();
        utc.with_timezone(&self.zone(tenant, store)).date_naive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_evening_sale_belongs_to_the_local_day() {
        let mut m = BTreeMap::new();
        m.insert("acme/ny-1".to_string(), "America/New_York".to_string());
        let z = StoreZones::new("Europe/Paris", &m).expect("zones");
        // 2026-01-15 23:30 UTC: 00:30 on the 16th in Paris, 18:30 on the 15th in New York.
        let t = DateTime::parse_from_rfc3339("2026-01-15T23:30:00Z")
            .expect("time")
            .timestamp_micros();
        assert_eq!(z.day("acme", "paris-1", t).to_string(), "2026-01-16");
        assert_eq!(z.day("acme", "ny-1", t).to_string(), "2026-01-15");
        assert!(StoreZones::new("Mars/Olympus", &BTreeMap::new()).is_err());
    }
}
