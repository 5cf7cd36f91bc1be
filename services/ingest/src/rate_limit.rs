//! Per-key token buckets, charged per event, so one noisy gateway cannot starve the
//! others. A refused request learns how long to wait (`Retry-After`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token-bucket limiter keyed by API key id.
#[derive(Debug)]
pub struct RateLimiter {
    /// Sustained events per second per key.
    rate: f64,
    /// Largest burst (events) a key may send at once.
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate_per_sec: f64, burst: f64) -> Self {
        Self {
            rate: rate_per_sec,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `cost` tokens from `key`'s bucket, or says how long until they are there.
    pub fn check(&self, key: &str, cost: usize) -> Result<(), Duration> {
        let cost = (cost as f64).min(self.burst);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.updated = now;
        if b.tokens >= cost {
            b.tokens -= cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((cost - b.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn refuses_beyond_burst_and_refills_over_time() {
        let rl = RateLimiter::new(10.0, 20.0);
        assert!(rl.check("k", 20).is_ok());
        let wait = rl.check("k", 5).expect_err("bucket empty");
        assert_eq!(wait, Duration::from_millis(500));
        assert!(rl.check("other", 20).is_ok(), "keys are independent");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(rl.check("k", 5).is_ok());
    }
}
