//! A token bucket: the bandwidth budget that every transfer drawing from it shares.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket shared by every transfer it applies to: `rate` bytes per second on average,
/// with bursts of a tenth of a second.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A limiter for `rate` bytes per second (at least 1).
    pub fn new(rate: u64) -> RateLimiter {
        // Precision loss only past 2^53 bytes per second.
        #[allow(clippy::cast_precision_loss)]
        let rate = rate.max(1) as f64;
        let burst = (rate / 10.0).max(1.0);
        RateLimiter {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes `bytes` from the bucket; returns how long the caller must wait to stay under the
    /// rate. Debts accumulate, so several transfers sharing the bucket share the rate.
    pub fn take(&self, bytes: u64) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        #[allow(clippy::cast_precision_loss)]
        {
            *tokens -= bytes as f64;
        }
        if *tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-*tokens / self.rate)
        }
    }

    /// A read size that keeps the pacing smooth: about a twentieth of a second of traffic.
    pub fn chunk(&self) -> usize {
        // Truncation is fine: this is a buffer size hint.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let chunk = (self.rate / 20.0) as usize;
        chunk.clamp(512, 256 * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_budget_paces_its_takers() {
        let bucket = RateLimiter::new(1000);
        assert_eq!(bucket.take(100), Duration::ZERO, "the burst is free");
        let wait = bucket.take(1000);
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_millis(1000),
            "{wait:?}"
        );
        let more = bucket.take(500);
        assert!(more > wait, "debts accumulate: {more:?} after {wait:?}");
        assert_eq!(RateLimiter::new(1_000_000).chunk(), 50_000);
        assert_eq!(RateLimiter::new(10).chunk(), 512);
    }
}
