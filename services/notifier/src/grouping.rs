//! When a receiver's pending deliveries go out, and together with which others.
//!
//! Pure logic over an explicit `now`, so its timing is tested without sleeping.
//! Guarantees:
//! - a delivery already assigned to a message (a send interrupted by a crash) is
//!   sent again as that same message, at once;
//! - other deliveries are grouped by their group key (route + `group_by` values); a
//!   group's first message waits `group_wait` after its oldest delivery arrived, later
//!   ones wait `group_interval` after the group's previous message;
//! - the returned wake-up time is the earliest moment another group becomes due.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::ledger::PendingDelivery;

/// Group timings looked up by route path.
pub trait Timings {
    fn group_wait(&self, route: &str) -> Duration;
    fn group_interval(&self, route: &str) -> Duration;
}

/// One message to send: its deliveries share a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Already fixed in the ledger (a resend), or `None` for a new message.
    pub message_id: Option<Uuid>,
    pub group_key: String,
    pub deliveries: Vec<PendingDelivery>,
}

/// What to send now and when to look again.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub messages: Vec<Planned>,
    pub next_due: Option<DateTime<Utc>>,
}

/// When each group of one receiver last had a message.
#[derive(Debug, Clone, Default)]
pub struct GroupClock {
    last_sent: HashMap<String, DateTime<Utc>>,
}

impl GroupClock {
    /// Notes that `group_key` had a message at `at`.
    pub fn sent(&mut self, group_key: &str, at: DateTime<Utc>) {
        self.last_sent.insert(group_key.to_string(), at);
    }

    /// Plans the messages due at `now` among `pending` (oldest first).
    pub fn plan(
        &self,
        pending: Vec<PendingDelivery>,
        timings: &dyn Timings,
        now: DateTime<Utc>,
    ) -> Plan {
        let mut resend: BTreeMap<Uuid, Vec<PendingDelivery>> = BTreeMap::new();
        let mut groups: BTreeMap<String, Vec<PendingDelivery>> = BTreeMap::new();
        for d in pending {
            match d.message_id {
                Some(id) => resend.entry(id).or_default().push(d),
                None => groups.entry(d.group_key.clone()).or_default().push(d),
            }
        }
        let mut messages: Vec<Planned> = resend
            .into_iter()
            .map(|(id, deliveries)| Planned {
                message_id: Some(id),
                group_key: deliveries[0].group_key.clone(),
                deliveries,
            })
            .collect();
        let mut next_due: Option<DateTime<Utc>> = None;
        for (key, deliveries) in groups {
            let route = &deliveries[0].route;
            let oldest = deliveries
                .iter()
                .map(|d| d.received_at)
                .min()
                .unwrap_or(now);
            let due = match self.last_sent.get(&key) {
                Some(last) => *last + timings.group_interval(route),
                None => oldest + timings.group_wait(route),
            };
            if due <= now {
                messages.push(Planned {
                    message_id: None,
                    group_key: key,
                    deliveries,
                });
            } else {
                next_due = Some(next_due.map_or(due, |n| n.min(due)));
            }
        }
        Plan { messages, next_due }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed {
        wait: Duration,
        interval: Duration,
    }

    impl Timings for Fixed {
        fn group_wait(&self, _: &str) -> Duration {
            self.wait
        }
        fn group_interval(&self, _: &str) -> Duration {
            self.interval
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    fn delivery(id: &str, group: &str, received: i64) -> PendingDelivery {
        PendingDelivery {
            transition_id: id.into(),
            alert_id: id.into(),
            alert_state: "firing".into(),
            tenant_id: "t".into(),
            store_id: "s".into(),
            route: "route".into(),
            group_key: group.into(),
            alert: serde_json::json!({}),
            received_at: at(received),
            message_id: None,
        }
    }

    fn ids(p: &Planned) -> Vec<&str> {
        p.deliveries
            .iter()
            .map(|d| d.transition_id.as_str())
            .collect()
    }

    const T: Fixed = Fixed {
        wait: Duration::from_secs(30),
        interval: Duration::from_secs(300),
    };

    #[test]
    fn a_group_waits_group_wait_after_its_first_alert_then_goes_out_whole() {
        let clock = GroupClock::default();
        let pending = vec![
            delivery("a1", "store-1", 0),
            delivery("a2", "store-1", 10),
            delivery("b1", "store-2", 20),
        ];
        let p = clock.plan(pending.clone(), &T, at(29));
        assert!(p.messages.is_empty());
        assert_eq!(p.next_due, Some(at(30)));
        let p = clock.plan(pending, &T, at(30));
        assert_eq!(p.messages.len(), 1);
        assert_eq!(ids(&p.messages[0]), ["a1", "a2"]);
        assert_eq!(p.next_due, Some(at(50)), "store-2 is due 30 s after b1");
    }

    #[test]
    fn later_alerts_of_a_sent_group_wait_group_interval() {
        let mut clock = GroupClock::default();
        clock.sent("store-1", at(30));
        let pending = vec![delivery("a3", "store-1", 40)];
        let p = clock.plan(pending.clone(), &T, at(329));
        assert!(p.messages.is_empty());
        assert_eq!(p.next_due, Some(at(330)));
        let p = clock.plan(pending, &T, at(330));
        assert_eq!(ids(&p.messages[0]), ["a3"]);
        assert_eq!(p.next_due, None);
    }

    #[test]
    fn an_assigned_message_is_resent_at_once_and_whole() {
        let clock = GroupClock::default();
        let id = Uuid::from_u128(7);
        let mut a = delivery("a1", "store-1", 0);
        a.message_id = Some(id);
        let mut b = delivery("a2", "store-1", 0);
        b.message_id = Some(id);
        let p = clock.plan(vec![a, b, delivery("a3", "store-1", 0)], &T, at(1));
        assert_eq!(p.messages.len(), 1);
        assert_eq!(p.messages[0].message_id, Some(id));
        assert_eq!(ids(&p.messages[0]), ["a1", "a2"]);
        assert_eq!(p.next_due, Some(at(30)));
    }

    #[test]
    fn zero_group_wait_sends_at_once() {
        let clock = GroupClock::default();
        let zero = Fixed {
            wait: Duration::ZERO,
            interval: Duration::from_secs(1),
        };
        let p = clock.plan(vec![delivery("a1", "g", 5)], &zero, at(5));
        assert_eq!(p.messages.len(), 1);
    }
}
