//! Silences: matchers plus a time range. Those from the CLI live in
//! `notifier.silences`; those from the policy file live in the policy.
//!
//! Guarantees: a silence is validated (every matcher parses, the range is not empty)
//! before it is stored; a delivery matched by an active silence is held, not dropped,
//! so an alert still firing when its silence ends is notified then; expiring a
//! silence ends it now.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::ledger::{self, LedgerError};
use crate::policy::{Matcher, Policy};

#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    #[error("silence matcher {index}: {reason}")]
    Matcher { index: usize, reason: String },
    #[error("a silence needs at least one matcher")]
    NoMatcher,
    #[error("the silence ends ({ends_at}) before it starts ({starts_at})")]
    EmptyRange {
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
    },
    #[error("no silence {0}")]
    Unknown(Uuid),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<tokio_postgres::Error> for SilenceError {
    fn from(e: tokio_postgres::Error) -> Self {
        SilenceError::Ledger(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for SilenceError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        SilenceError::Ledger(e.into())
    }
}

/// A stored silence.
#[derive(Debug, Clone)]
pub struct Silence {
    pub id: Uuid,
    pub matchers: Vec<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub created_by: String,
    pub comment: String,
}

/// An active silence, ready to match.
#[derive(Debug, Clone)]
pub struct ActiveSilence {
    pub matchers: Vec<Matcher>,
    pub ends_at: DateTime<Utc>,
}

impl ActiveSilence {
    pub fn silences(&self, view: &serde_json::Value) -> bool {
        self.matchers.iter().all(|m| m.matches_view(view))
    }
}

fn parse_all(matchers: &[String]) -> Result<Vec<Matcher>, SilenceError> {
    if matchers.is_empty() {
        return Err(SilenceError::NoMatcher);
    }
    matchers
        .iter()
        .enumerate()
        .map(|(index, m)| {
            Matcher::parse(m).map_err(|reason| SilenceError::Matcher { index, reason })
        })
        .collect()
}

/// Stores a new silence (migrating the notifier schema first if needed).
pub async fn add(
    pool: &Pool,
    matchers: &[String],
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    created_by: &str,
    comment: &str,
) -> Result<Silence, SilenceError> {
    parse_all(matchers)?;
    if ends_at <= starts_at {
        return Err(SilenceError::EmptyRange { starts_at, ends_at });
    }
    let id = Uuid::new_v4();
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO notifier.silences (id, matchers, starts_at, ends_at, created_by, comment)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&id, &matchers, &starts_at, &ends_at, &created_by, &comment],
        )
        .await?;
    Ok(Silence {
        id,
        matchers: matchers.to_vec(),
        starts_at,
        ends_at,
        created_by: created_by.into(),
        comment: comment.into(),
    })
}

/// Silences not yet ended (all with `include_expired`), newest first.
pub async fn list(pool: &Pool, include_expired: bool) -> Result<Vec<Silence>, SilenceError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id, matchers, starts_at, ends_at, created_by, comment FROM notifier.silences
              WHERE $1 OR ends_at > now() ORDER BY created_at DESC",
            &[&include_expired],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Silence {
            id: r.get(0),
            matchers: r.get(1),
            starts_at: r.get(2),
            ends_at: r.get(3),
            created_by: r.get(4),
            comment: r.get(5),
        })
        .collect())
}

/// Ends a silence now.
pub async fn expire(pool: &Pool, id: Uuid) -> Result<(), SilenceError> {
    let client = pool.get().await?;
    let n = client
        .execute(
            "UPDATE notifier.silences SET ends_at = greatest(starts_at + interval '1 microsecond', least(ends_at, now()))
              WHERE id = $1",
            &[&id],
        )
        .await?;
    if n == 0 {
        return Err(SilenceError::Unknown(id));
    }
    Ok(())
}

/// Silences active at `now`: the stored ones and the policy file's.
pub async fn active(
    pool: &Pool,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<Vec<ActiveSilence>, LedgerError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT matchers, ends_at FROM notifier.silences WHERE starts_at <= $1 AND ends_at > $1",
            &[&now],
        )
        .await?;
    let mut out: Vec<ActiveSilence> = rows
        .iter()
        .filter_map(|r| {
            let texts: Vec<String> = r.get(0);
            // Stored silences were validated when added; one that no longer parses
            // (a later, stricter build) silences nothing rather than everything.
            parse_all(&texts).ok().map(|matchers| ActiveSilence {
                matchers,
                ends_at: r.get(1),
            })
        })
        .collect();
    out.extend(
        policy
            .silences
            .iter()
            .filter(|s| s.starts_at <= now && s.ends_at > now)
            .map(|s| ActiveSilence {
                matchers: s.matchers.clone(),
                ends_at: s.ends_at,
            }),
    );
    Ok(out)
}

/// Migrates the notifier schema (for the CLI, which may run before the notifier).
pub async fn ensure_schema(pool: &Pool) -> Result<(), storepulse_runtime::db::DbError> {
    storepulse_runtime::db::migrate_set(pool, &ledger::MIGRATIONS).await?;
    Ok(())
}
