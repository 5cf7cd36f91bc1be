//! Store calendars: when a store is open, for rules scoped to open hours.
//!
//! A store without a calendar is always open.

use std::collections::HashMap;

use crate::observation::StoreRef;

/// Opening hours of one store.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoreCalendar {}

impl StoreCalendar {
    pub fn is_open(&self, _t: i64) -> bool {
        true
    }

    /// The instant `open` µs of open time after `from`.
    pub fn add_open_time(&self, from: i64, open: i64) -> i64 {
        from.saturating_add(open)
    }
}

/// Calendars of every store, with a default for stores not listed.
#[derive(Debug, Clone, Default)]
pub struct Calendar {
    stores: HashMap<StoreRef, StoreCalendar>,
    default: Option<StoreCalendar>,
}

impl Calendar {
    /// Reads a calendar file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        Err(format!(
            "{}: store calendars are not supported by this build yet",
            path.display()
        ))
    }

    /// Every store always open.
    pub fn always_open() -> Self {
        Self::default()
    }

    fn of(&self, store: &StoreRef) -> Option<&StoreCalendar> {
        self.stores.get(store).or(self.default.as_ref())
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
