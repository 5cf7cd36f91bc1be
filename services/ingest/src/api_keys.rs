//! Per-store API keys.
//!
//! A key reads `sp_<key_id>_<secret>`. Only the SHA-256 of the secret is stored; the
//! secret is shown once, at creation. A key is bound to one tenant and store and can
//! only write that store's events. Lookups are cached for `ttl`, so a revocation takes
//! effect within that time without a database round trip per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::validate::StoreIdentity;

const PREFIX: &str = "sp_";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("postgres: {}", storepulse_runtime::db::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("no API key with id {0}")]
    NotFound(String),
}

/// A freshly created key; `token` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub key_id: String,
    pub token: String,
    pub identity: StoreIdentity,
}

/// A key as listed by `storepulse keys list` (no secret).
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub key_id: String,
    pub tenant_id: String,
    pub store_id: String,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn check_id(what: &'static str, v: &str) -> Result<(), KeyError> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(KeyError::Invalid {
            what,
            reason: format!("{v:?} must be 1-128 characters of [A-Za-z0-9-_.:]"),
        })
    }
}

/// Splits a presented token into key id and secret.
fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

/// Creates a key for a store.
pub async fn create(
    pool: &Pool,
    tenant_id: &str,
    store_id: &str,
    label: &str,
) -> Result<CreatedKey, KeyError> {
    check_id("tenant id", tenant_id)?;
    check_id("store id", store_id)?;
    let mut rng = rand::rng();
    let mut id = [0u8; 6];
    let mut secret = [0u8; 24];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let key_id = hex::encode(id);
    let secret = hex::encode(secret);
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO api_keys (key_id, tenant_id, store_id, secret_hash, label) VALUES ($1, $2, $3, $4, $5)",
            &[&key_id, &tenant_id, &store_id, &hash(&secret), &label],
        )
        .await?;
    Ok(CreatedKey {
        token: format!("{PREFIX}{key_id}_{secret}"),
        key_id,
        identity: StoreIdentity {
            tenant_id: tenant_id.into(),
            store_id: store_id.into(),
        },
    })
}

/// Lists keys, optionally of one tenant.
pub async fn list(pool: &Pool, tenant_id: Option<&str>) -> Result<Vec<KeyInfo>, KeyError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT key_id, tenant_id, store_id, label, created_at, revoked_at FROM api_keys
             WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY tenant_id, store_id, created_at",
            &[&tenant_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| KeyInfo {
            key_id: r.get(0),
            tenant_id: r.get(1),
            store_id: r.get(2),
            label: r.get(3),
            created_at: r.get(4),
            revoked_at: r.get(5),
        })
        .collect())
}

/// Revokes a key; idempotent.
pub async fn revoke(pool: &Pool, key_id: &str) -> Result<(), KeyError> {
    let client = pool.get().await?;
    let n = client
        .execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = $1",
            &[&key_id],
        )
        .await?;
    if n == 0 {
        return Err(KeyError::NotFound(key_id.into()));
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct CachedKey {
    /// None: no usable key with this id (unknown or revoked).
    entry: Option<(Vec<u8>, StoreIdentity)>,
    fetched: Instant,
}

/// Authenticates presented tokens against the `api_keys` table, with a TTL cache.
#[derive(Debug)]
pub struct KeyStore {
    pool: Pool,
    ttl: Duration,
    cache: Mutex<HashMap<String, CachedKey>>,
}

/// Outcome of authenticating a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authn {
    Store(StoreIdentity, String),
    Unknown,
}

impl KeyStore {
    pub fn new(pool: Pool, ttl: Duration) -> Self {
        Self {
            pool,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Resolves a bearer token to the store it is bound to. Errors are database
    /// failures (the caller answers 503), not bad keys.
    pub async fn authenticate(&self, token: &str) -> Result<Authn, KeyError> {
        let Some((key_id, secret)) = parse_token(token) else {
            return Ok(Authn::Unknown);
        };
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .get(key_id)
                .filter(|c| c.fetched.elapsed() < self.ttl)
                .cloned()
        };
        let cached = match cached {
            Some(c) => c,
            None => {
                let client = self.pool.get().await?;
                let row = client
                    .query_opt(
                        "SELECT secret_hash, tenant_id, store_id FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL",
                        &[&key_id],
                    )
                    .await?;
                let c = CachedKey {
                    entry: row.map(|r| {
                        (
                            r.get::<_, Vec<u8>>(0),
                            StoreIdentity {
                                tenant_id: r.get(1),
                                store_id: r.get(2),
                            },
                        )
                    }),
                    fetched: Instant::now(),
                };
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() > 100_000 {
                    cache.clear();
                }
                cache.insert(key_id.to_string(), c.clone());
                c
            }
        };
        match cached.entry {
            Some((stored, who)) if constant_time_eq(&stored, &hash(secret)) => {
                Ok(Authn::Store(who, key_id.to_string()))
            }
            _ => Ok(Authn::Unknown),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse() {
        assert_eq!(parse_token("sp_abc_def"), Some(("abc", "def")));
        assert_eq!(parse_token("sp_abc_"), None);
        assert_eq!(parse_token("abc_def"), None);
        assert!(check_id("store id", "s-001").is_ok());
        assert!(check_id("store id", "s 001").is_err());
    }
}
