//! The delivery ledger: the notifier's own tables in the `notifier` schema.
//!
//! Guarantees:
//! - one row per (alert transition, receiver), written `pending` before the
//!   transition's Kafka offset is committed, so a crash never loses a routed alert;
//! - a replayed transition hits its existing row and changes nothing, so what the
//!   ledger says was delivered (or failed, or was suppressed) is never sent again;
//! - the message carrying a delivery is fixed in the ledger before it is sent, so a
//!   resend after a crash is the same message with the same `Idempotency-Key`.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use storepulse_runtime::consumer::Failure;
use storepulse_runtime::db::{self, Migration, MigrationSet};
use uuid::Uuid;

/// The notifier's migrations (its own schema and bookkeeping table).
pub const MIGRATIONS: MigrationSet = MigrationSet {
    schema: Some("notifier"),
    table: "schema_migrations",
    lock: 0x5354_5055_4c53_4e01,
    migrations: &[
        Migration {
            version: 1,
            name: "delivery_ledger",
            sql: include_str!("../migrations/0001_delivery_ledger.sql"),
        },
        Migration {
            version: 2,
            name: "silences",
            sql: include_str!("../migrations/0002_silences.sql"),
        },
        Migration {
            version: 3,
            name: "repeats",
            sql: include_str!("../migrations/0003_repeats.sql"),
        },
        Migration {
            version: 4,
            name: "acks",
            sql: include_str!("../migrations/0004_acks.sql"),
        },
    ],
};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("delivery ledger: {}", db::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("delivery ledger pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

impl LedgerError {
    /// Whether retrying can help (the connection) or the data is at fault.
    pub fn failure(&self) -> Failure {
        match self {
            LedgerError::Pool(deadpool_postgres::PoolError::Backend(e)) => db::classify_postgres(e),
            LedgerError::Pool(_) => Failure::Transient,
            LedgerError::Postgres(e) => db::classify_postgres(e),
        }
    }
}

/// A routed transition to record.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub transition_id: String,
    pub receiver: String,
    pub alert_id: String,
    /// `firing` or `resolved`.
    pub alert_state: &'static str,
    pub tenant_id: String,
    pub store_id: String,
    pub route: String,
    pub group_key: String,
    pub alert: serde_json::Value,
    /// Recorded as `suppressed` at once (a resolved the receiver does not want).
    pub suppressed: bool,
}

/// An escalation receiver an alert reached: route and group of its first step there.
#[derive(Debug, Clone, PartialEq)]
pub struct EscalatedReceiver {
    pub alert_id: String,
    pub receiver: String,
    pub route: String,
    pub group_key: String,
}

/// A delivery waiting to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDelivery {
    pub transition_id: String,
    pub alert_id: String,
    pub alert_state: String,
    pub tenant_id: String,
    pub store_id: String,
    pub route: String,
    pub group_key: String,
    pub alert: serde_json::Value,
    pub received_at: DateTime<Utc>,
    pub message_id: Option<Uuid>,
}

/// A finished delivery whose outcome record is still to be published.
#[derive(Debug, Clone)]
pub struct FinishedDelivery {
    pub transition_id: String,
    pub alert_id: String,
    pub alert_state: String,
    pub tenant_id: String,
    pub store_id: String,
    pub status: String,
    pub channel: Option<String>,
    pub attempts: i32,
    pub error: Option<String>,
    /// When the ledger recorded the outcome: the outcome record's time, so a
    /// republish after a crash is the same record.
    pub finished_at: DateTime<Utc>,
}

/// An alert still firing whose last delivered notification to a receiver may be
/// old enough to repeat.
#[derive(Debug, Clone)]
pub struct RepeatCandidate {
    pub alert_id: String,
    pub tenant_id: String,
    pub store_id: String,
    pub route: String,
    pub group_key: String,
    pub alert: serde_json::Value,
    /// When its last notification was delivered.
    pub last_delivered_at: DateTime<Utc>,
    /// The receiver's rows for this alert so far (numbers the next repeat).
    pub rows_so_far: i64,
}

impl RepeatCandidate {
    /// The ledger row of the next repeat: transition `<alert>:firing:repeat-<n>`, the
    /// alert as before with `"repeat": n`. Recording it twice changes nothing.
    pub fn next_repeat(&self, receiver: &str) -> NewDelivery {
        let n = self.rows_so_far;
        let mut alert = self.alert.clone();
        alert["repeat"] = serde_json::Value::from(n);
        NewDelivery {
            transition_id: format!("{}:firing:repeat-{n}", self.alert_id),
            receiver: receiver.to_string(),
            alert_id: self.alert_id.clone(),
            alert_state: "firing",
            tenant_id: self.tenant_id.clone(),
            store_id: self.store_id.clone(),
            route: self.route.clone(),
            group_key: self.group_key.clone(),
            alert,
            suppressed: false,
        }
    }
}

/// An alert delivered to a receiver, unacknowledged and still firing: it may be
/// due the next step of its route's escalation ladder.
#[derive(Debug, Clone)]
pub struct EscalationCandidate {
    pub alert_id: String,
    pub tenant_id: String,
    pub store_id: String,
    pub route: String,
    pub group_key: String,
    pub alert: serde_json::Value,
    /// When its first firing notification was delivered (the ladder's clock).
    pub first_delivered_at: DateTime<Utc>,
    /// Escalation steps recorded so far.
    pub steps_so_far: i64,
}

impl EscalationCandidate {
    /// The ledger row of escalation step `step` (1-based) to `receiver`: transition
    /// `<alert>:firing:escalation-<step>`, the alert marked `"escalation": step`.
    pub fn step(&self, step: usize, receiver: &str) -> NewDelivery {
        let mut alert = self.alert.clone();
        alert["escalation"] = serde_json::Value::from(step);
        NewDelivery {
            transition_id: format!("{}:firing:escalation-{step}", self.alert_id),
            receiver: receiver.to_string(),
            alert_id: self.alert_id.clone(),
            alert_state: "firing",
            tenant_id: self.tenant_id.clone(),
            store_id: self.store_id.clone(),
            route: self.route.clone(),
            group_key: format!("{}|escalation={step}", self.group_key),
            alert,
            suppressed: false,
        }
    }
}

/// Final outcome of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    Delivered,
    Failed,
}

impl Final {
    fn as_str(self) -> &'static str {
        match self {
            Final::Delivered => "delivered",
            Final::Failed => "failed",
        }
    }
}

/// Access to the ledger tables.
#[derive(Clone)]
pub struct Ledger {
    pool: Pool,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl Ledger {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Applies the notifier's migrations.
    pub async fn migrate(&self) -> Result<Vec<i32>, db::DbError> {
        db::migrate_set(&self.pool, &MIGRATIONS).await
    }

    /// Records routed transitions; rows that exist already are left as they are.
    pub async fn enqueue(&self, rows: &[NewDelivery]) -> Result<u64, LedgerError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let col = |f: fn(&NewDelivery) -> String| rows.iter().map(f).collect::<Vec<String>>();
        let t = col(|r| r.transition_id.clone());
        let rc = col(|r| r.receiver.clone());
        let a = col(|r| r.alert_id.clone());
        let s = col(|r| r.alert_state.to_string());
        let tn = col(|r| r.tenant_id.clone());
        let st = col(|r| r.store_id.clone());
        let ro = col(|r| r.route.clone());
        let g = col(|r| r.group_key.clone());
        let j: Vec<serde_json::Value> = rows.iter().map(|r| r.alert.clone()).collect();
        let sup: Vec<bool> = rows.iter().map(|r| r.suppressed).collect();
        let client = self.pool.get().await?;
        let n = client
            .execute(
                include_str!("../sql/enqueue.sql"),
                &[&t, &rc, &a, &s, &tn, &st, &ro, &g, &j, &sup],
            )
            .await?;
        Ok(n)
    }

    /// The escalation receivers a step of each alert was delivered to (who must also
    /// hear that it resolved).
    pub async fn escalated_receivers(
        &self,
        alert_ids: &[String],
    ) -> Result<Vec<EscalatedReceiver>, LedgerError> {
        if alert_ids.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.pool.get().await?;
        let rows = client
            .query(
                include_str!("../sql/escalated_receivers.sql"),
                &[&alert_ids],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| EscalatedReceiver {
                alert_id: r.get(0),
                receiver: r.get(1),
                route: r.get(2),
                group_key: r.get(3),
            })
            .collect())
    }

    /// A receiver's pending deliveries, oldest first, at most `limit`.
    pub async fn pending(
        &self,
        receiver: &str,
        limit: i64,
    ) -> Result<Vec<PendingDelivery>, LedgerError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(include_str!("../sql/pending.sql"), &[&receiver, &limit])
            .await?;
        Ok(rows
            .iter()
            .map(|r| PendingDelivery {
                transition_id: r.get(0),
                alert_id: r.get(1),
                alert_state: r.get(2),
                tenant_id: r.get(3),
                store_id: r.get(4),
                route: r.get(5),
                group_key: r.get(6),
                alert: r.get(7),
                received_at: r.get(8),
                message_id: r.get(9),
            })
            .collect())
    }

    /// Fixes `message_id` as the message carrying these deliveries.
    pub async fn assign(
        &self,
        receiver: &str,
        transitions: &[String],
        message_id: Uuid,
    ) -> Result<(), LedgerError> {
        let client = self.pool.get().await?;
        client
            .execute(
                include_str!("../sql/assign_message.sql"),
                &[&receiver, &transitions, &message_id],
            )
            .await?;
        Ok(())
    }

    /// Records a message's final outcome for every delivery it carried.
    pub async fn finish(
        &self,
        receiver: &str,
        message_id: Uuid,
        outcome: Final,
        channel: &str,
        attempts: i32,
        error: Option<&str>,
    ) -> Result<(), LedgerError> {
        let client = self.pool.get().await?;
        client
            .execute(
                include_str!("../sql/finish_message.sql"),
                &[
                    &receiver,
                    &message_id,
                    &outcome.as_str(),
                    &channel,
                    &attempts,
                    &error,
                ],
            )
            .await?;
        Ok(())
    }

    /// The pool (silences share it).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Alerts firing now (their resolve not recorded), as messages show them.
    pub async fn firing_alerts(&self) -> Result<Vec<serde_json::Value>, LedgerError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(include_str!("../sql/firing_alerts.sql"), &[])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Marks held deliveries (and a resolve's held firing transition) suppressed.
    pub async fn suppress(
        &self,
        receiver: &str,
        transitions: &[String],
        reason: &str,
    ) -> Result<(), LedgerError> {
        if transitions.is_empty() {
            return Ok(());
        }
        let client = self.pool.get().await?;
        client
            .execute(
                include_str!("../sql/suppress.sql"),
                &[&receiver, &transitions, &reason],
            )
            .await?;
        Ok(())
    }

    /// Keeps a message that failed on every channel.
    pub async fn dead_letter(
        &self,
        receiver: &str,
        message_id: Uuid,
        transitions: &[String],
        body: &serde_json::Value,
        attempts: i32,
        error: &str,
    ) -> Result<(), LedgerError> {
        let client = self.pool.get().await?;
        client
            .execute(
                include_str!("../sql/insert_dead_letter.sql"),
                &[
                    &message_id,
                    &receiver,
                    &transitions,
                    body,
                    &attempts,
                    &error,
                ],
            )
            .await?;
        Ok(())
    }

    /// Finished deliveries of `receiver` whose outcome is not yet published.
    pub async fn unpublished(
        &self,
        receiver: &str,
        limit: i64,
    ) -> Result<Vec<FinishedDelivery>, LedgerError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(include_str!("../sql/unpublished.sql"), &[&receiver, &limit])
            .await?;
        Ok(rows
            .iter()
            .map(|r| FinishedDelivery {
                transition_id: r.get(0),
                alert_id: r.get(1),
                alert_state: r.get(2),
                tenant_id: r.get(3),
                store_id: r.get(4),
                status: r.get(5),
                channel: r.get(6),
                attempts: r.get(7),
                error: r.get(8),
                finished_at: r.get(9),
            })
            .collect())
    }

    /// A receiver's alerts still firing, last delivered, with nothing pending: the
    /// candidates for a repeat (at most `limit`).
    pub async fn repeat_candidates(
        &self,
        receiver: &str,
        limit: i64,
    ) -> Result<Vec<RepeatCandidate>, LedgerError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                include_str!("../sql/repeat_candidates.sql"),
                &[&receiver, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| RepeatCandidate {
                alert_id: r.get(0),
                tenant_id: r.get(1),
                store_id: r.get(2),
                route: r.get(3),
                group_key: r.get(4),
                alert: r.get(5),
                last_delivered_at: r.get(6),
                rows_so_far: r.get(7),
            })
            .collect())
    }

    /// A receiver's first firing notifications delivered for alerts neither
    /// acknowledged nor resolved (at most `limit`).
    pub async fn escalation_candidates(
        &self,
        receiver: &str,
        limit: i64,
    ) -> Result<Vec<EscalationCandidate>, LedgerError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                include_str!("../sql/escalation_candidates.sql"),
                &[&receiver, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| EscalationCandidate {
                alert_id: r.get(0),
                tenant_id: r.get(1),
                store_id: r.get(2),
                route: r.get(3),
                group_key: r.get(4),
                alert: r.get(5),
                first_delivered_at: r.get(6),
                steps_so_far: r.get(7),
            })
            .collect())
    }

    /// Notes that these deliveries' outcomes are on notifications.v1.
    pub async fn mark_published(
        &self,
        receiver: &str,
        transitions: &[String],
    ) -> Result<(), LedgerError> {
        let client = self.pool.get().await?;
        client
            .execute(
                include_str!("../sql/mark_published.sql"),
                &[&receiver, &transitions],
            )
            .await?;
        Ok(())
    }
}
