//! Posts simulated events to the ingest API the way store gateways do: per store,
//! in batches, in order, with that store's API key; retrying 429 and 503 answers
//! after `Retry-After` (safe: event ids make retries idempotent).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;

use crate::simulator::SimEvent;

/// The ingest answer for one event.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct EventAnswer {
    pub index: usize,
    pub event_id: Option<String>,
    pub status: String,
    pub field: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct BatchAnswer {
    results: Vec<EventAnswer>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("no API key for store {0}")]
    NoKey(String),
    #[error("ingest answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("gave up after {0} attempts (ingest kept answering 429/503)")]
    GaveUp(u32),
}

/// Running totals, readable while posting (the dev stack shows them live).
#[derive(Debug, Default)]
pub struct GatewayStats {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub retries: AtomicU64,
}

/// A poster for many stores.
#[derive(Debug, Clone)]
pub struct Gateway {
    client: reqwest::Client,
    url: String,
    /// API key (bearer token) per store id.
    keys: Arc<HashMap<String, String>>,
    pub stats: Arc<GatewayStats>,
}

impl Gateway {
    pub fn new(ingest_base_url: &str, keys: HashMap<String, String>) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            url: format!("{}/v1/events", ingest_base_url.trim_end_matches('/')),
            keys: Arc::new(keys),
            stats: Arc::default(),
        }
    }

    /// Posts one store's batch; returns the per-event answers in batch order.
    pub async fn post_batch(
        &self,
        store_id: &str,
        events: &[SimEvent],
    ) -> Result<Vec<EventAnswer>, GatewayError> {
        let key = self
            .keys
            .get(store_id)
            .ok_or_else(|| GatewayError::NoKey(store_id.into()))?;
        let body: Vec<&serde_json::Value> = events.iter().map(|e| &e.json).collect();
        let body = serde_json::to_vec(&body).unwrap_or_default();
        const ATTEMPTS: u32 = 20;
        for _ in 0..ATTEMPTS {
            let resp = self
                .client
                .post(&self.url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await?;
            let status = resp.status().as_u16();
            match status {
                200 | 207 | 422 => {
                    let answer: BatchAnswer = resp.json().await?;
                    for a in &answer.results {
                        let counter = if a.status == "accepted" {
                            &self.stats.accepted
                        } else {
                            &self.stats.rejected
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(answer.results);
                }
                429 | 503 => {
                    let wait = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(1)
                        .min(10);
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                _ => {
                    let body = resp.text().await.unwrap_or_default();
                    return Err(GatewayError::Refused { status, body });
                }
            }
        }
        Err(GatewayError::GaveUp(ATTEMPTS))
    }

    /// Posts all `events`, grouped per store in batches of `batch_size`, stores in
    /// parallel (`concurrency` at a time), each store's batches in order.
    pub async fn post_all(
        &self,
        events: &[SimEvent],
        batch_size: usize,
        concurrency: usize,
    ) -> Result<HashMap<String, EventAnswer>, GatewayError> {
        use futures::StreamExt;
        let mut by_store: HashMap<&str, Vec<SimEvent>> = HashMap::new();
        for e in events {
            by_store
                .entry(e.store_id.as_str())
                .or_default()
                .push(e.clone());
        }
        let results = futures::stream::iter(by_store.into_iter().map(|(store, evs)| async move {
            let mut out = Vec::new();
            for chunk in evs.chunks(batch_size.max(1)) {
                let answers = self.post_batch(store, chunk).await?;
                for (ev, a) in chunk.iter().zip(answers) {
                    out.push((ev.event_id.clone(), a));
                }
            }
            Ok::<_, GatewayError>(out)
        }))
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
        let mut map = HashMap::new();
        for r in results {
            map.extend(r?);
        }
        Ok(map)
    }
}
