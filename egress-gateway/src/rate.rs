//! Per-connection rate limits: one token bucket per connection id, shared by
//! every capability that may use the connection.

use std::collections::HashMap;
use std::time::Instant;

/// A token bucket holding up to `per_minute` tokens, refilled continuously
/// at `per_minute / 60` tokens a second; it starts full, so a burst of
/// `per_minute` requests passes and then one every `60 / per_minute` s.
#[derive(Debug, Clone)]
pub struct Bucket {
    per_minute: u32,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(per_minute: u32, now: Instant) -> Bucket {
        Bucket {
            per_minute,
            tokens: f64::from(per_minute),
            last: now,
        }
    }

    /// Takes one token if there is one. `per_minute == 0` never has one.
    pub fn take(&mut self, now: Instant) -> bool {
        let cap = f64::from(self.per_minute);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * cap / 60.0).min(cap);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The buckets of every connection. A connection whose limit changes gets a
/// fresh (full) bucket; one whose limit stays the same keeps its state across
/// configuration updates.
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: HashMap<String, Bucket>,
}

impl Limiter {
    pub fn take(&mut self, connection: &str, per_minute: u32, now: Instant) -> bool {
        let b = self
            .buckets
            .entry(connection.to_string())
            .or_insert_with(|| Bucket::new(per_minute, now));
        if b.per_minute != per_minute {
            *b = Bucket::new(per_minute, now);
        }
        b.take(now)
    }

    /// Forget connections that are no longer configured.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.buckets.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        for _ in 0..3 {
            assert!(l.take("c", 3, t0));
        }
        assert!(!l.take("c", 3, t0));
        // Another connection has its own bucket.
        assert!(l.take("d", 3, t0));
        // 3/min = one token per 20 s.
        assert!(!l.take("c", 3, t0 + Duration::from_secs(19)));
        assert!(l.take("c", 3, t0 + Duration::from_secs(21)));
        assert!(!l.take("c", 3, t0 + Duration::from_secs(21)));
    }

    #[test]
    fn zero_means_none() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        assert!(!l.take("c", 0, t0));
        assert!(!l.take("c", 0, t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn changed_limit_resets() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        assert!(l.take("c", 1, t0));
        assert!(!l.take("c", 1, t0));
        assert!(l.take("c", 2, t0));
    }
}
