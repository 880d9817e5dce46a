//! When to try a failed run again.

use std::time::Duration;

use rand::Rng;

/// Exponential, capped, jittered backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// Whether a run that failed its `attempt`-th attempt may try again.
    pub fn may_retry(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The delay after the `attempt`-th failed attempt (1-based): `initial · 2^(attempt-1)`,
    /// capped at `max`, with "equal jitter" (half fixed, half random) so that runs failing
    /// together do not retry together. An explicit `after` (e.g. a Retry-After header) wins.
    pub fn delay(&self, attempt: u32, after: Option<Duration>) -> Duration {
        if let Some(after) = after {
            return after;
        }
        let exponent = attempt.saturating_sub(1).min(30);
        let base = self.initial.saturating_mul(1 << exponent).min(self.max);
        let half = base / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter).min(half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_jittered_within_bounds() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        for attempt in 1..=8 {
            let base = (100u64 << (attempt - 1)).min(1000);
            for _ in 0..50 {
                let d = policy.delay(attempt, None).as_millis() as u64;
                assert!(
                    d >= base / 2 && d <= base,
                    "attempt {attempt}: {d} not in [{}, {base}]",
                    base / 2
                );
            }
        }
        assert_eq!(policy.delay(3, Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert!(policy.may_retry(4));
        assert!(!policy.may_retry(5));
    }
}
