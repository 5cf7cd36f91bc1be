//! A receiver's rate limit: a token bucket over an explicit clock.
//!
//! Guarantees: at most `messages` messages in any burst, `messages` per `per` on
//! average; a message over the limit is delayed (the caller is told when a token is
//! next available), never dropped.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Token bucket of one receiver.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_token: Duration,
    tokens: f64,
    at: Option<DateTime<Utc>>,
}

impl TokenBucket {
    /// `messages` per `per`, bursts of at most `messages`.
    pub fn new(messages: u32, per: Duration) -> Self {
        let messages = messages.max(1);
        Self {
            capacity: f64::from(messages),
            per_token: per / messages,
            tokens: f64::from(messages),
            at: None,
        }
    }

    fn refill(&mut self, now: DateTime<Utc>) {
        if let Some(at) = self.at {
            let elapsed = (now - at).to_std().unwrap_or(Duration::ZERO);
            if !self.per_token.is_zero() {
                self.tokens = (self.tokens + elapsed.as_secs_f64() / self.per_token.as_secs_f64())
                    .min(self.capacity);
            } else {
                self.tokens = self.capacity;
            }
        }
        self.at = Some(now);
    }

    /// Takes a token at `now`, or says when one will be available.
    pub fn take(&mut self, now: DateTime<Utc>) -> Result<(), DateTime<Utc>> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let missing = 1.0 - self.tokens;
        let wait = self.per_token.mul_f64(missing);
        Err(now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).expect("time")
    }

    #[test]
    fn bursts_up_to_capacity_then_paces_and_never_drops() {
        let mut b = TokenBucket::new(3, Duration::from_secs(60));
        assert!(b.take(at(0)).is_ok());
        assert!(b.take(at(0)).is_ok());
        assert!(b.take(at(0)).is_ok());
        assert_eq!(b.take(at(0)), Err(at(20_000)), "one token per 20 s");
        assert_eq!(b.take(at(10_000)), Err(at(20_000)));
        assert!(b.take(at(20_000)).is_ok());
        assert_eq!(b.take(at(20_000)), Err(at(40_000)));
        // A long quiet spell refills up to the burst, not beyond.
        for _ in 0..3 {
            assert!(b.take(at(3_600_000)).is_ok());
        }
        assert!(b.take(at(3_600_000)).is_err());
    }
}
