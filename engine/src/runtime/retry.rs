//! When to try a failed run again.

use std::time::Duration;

use rand::Rng;
use workflows::ErrorKind;

/// Throttled deliveries a run may have (since it was created or last re-driven) before it fails
/// into the DLQ. A throttled wait is not an attempt, so this is the only bound on how long a run
/// can wait behind rate limits: generous, since the waits are GitHub's or the request budget's
/// (seconds to an hour each), but finite, so a run behind a limit that never lifts (a banned
/// integration, a budget too small for the work) ends up visible in the DLQ.
pub const MAX_THROTTLED: u32 = 1_000;

/// A throttled run waits `after` plus a random share of it up to this fraction…
const THROTTLE_JITTER_FRACTION: u32 = 5;
/// …and at least this much spread, so short waits are spread too.
const THROTTLE_JITTER_MIN: Duration = Duration::from_secs(1);

/// Exponential, capped, jittered backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
    /// Throttled deliveries before the run fails ([`MAX_THROTTLED`] in the engine).
    pub max_throttled: u32,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A failed attempt with attempts left: try again after the delay.
    Retry(Duration),
    /// Throttled, not a failure: try again after the delay without counting the attempt.
    Wait(Duration),
    /// Permanent, out of attempts, or throttled too often: the run fails.
    Fail,
}

impl RetryPolicy {
    /// Whether a run that failed its `attempt`-th attempt may try again.
    pub fn may_retry(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The fate of a run whose `attempts`-th attempt ended with an error of `kind`, after
    /// `throttled` earlier throttled deliveries.
    pub fn verdict(&self, kind: ErrorKind, attempts: u32, throttled: u32) -> Verdict {
        match kind {
            ErrorKind::Retryable { after } if self.may_retry(attempts) => {
                Verdict::Retry(self.delay(attempts, after))
            }
            ErrorKind::Throttled { after } if throttled < self.max_throttled => {
                Verdict::Wait(throttle_delay(after))
            }
            _ => Verdict::Fail,
        }
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

/// The wait of a throttled run: never sooner than `after` (sending before a limit lifts may get
/// an integration banned), plus a random amount up to a fifth of it (at least a second), so runs
/// limited together wake spread out instead of all at once.
pub fn throttle_delay(after: Duration) -> Duration {
    let spread = (after / THROTTLE_JITTER_FRACTION).max(THROTTLE_JITTER_MIN);
    let jitter = rand::rng().random_range(0..=spread.as_millis() as u64);
    after + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            max_throttled: 3,
        }
    }

    #[test]
    fn delays_grow_are_capped_and_jittered_within_bounds() {
        let policy = policy();
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

    #[test]
    fn throttled_waits_never_come_early_and_are_spread() {
        for (after, spread) in [(Duration::from_secs(60), 12_000), (Duration::from_secs(2), 1_000)]
        {
            let delays: Vec<Duration> = (0..200).map(|_| throttle_delay(after)).collect();
            for d in &delays {
                assert!(
                    *d >= after && *d <= after + Duration::from_millis(spread),
                    "{d:?} for {after:?}"
                );
            }
            let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
            assert!(distinct.len() > 10, "runs limited together wake apart: {distinct:?}");
        }
    }

    #[test]
    fn a_throttled_attempt_is_not_a_failure_until_the_throttle_cap() {
        let policy = policy();
        let after = Duration::from_secs(30);
        let throttled = ErrorKind::Throttled { after };
        // Even with every attempt used up, a throttled run waits…
        assert!(matches!(policy.verdict(throttled, 5, 0), Verdict::Wait(d) if d >= after));
        assert!(matches!(policy.verdict(throttled, 5, 2), Verdict::Wait(_)));
        // …until it was throttled max_throttled times.
        assert_eq!(policy.verdict(throttled, 1, 3), Verdict::Fail);

        let retryable = ErrorKind::Retryable { after: None };
        assert!(matches!(policy.verdict(retryable, 4, 0), Verdict::Retry(_)));
        assert_eq!(policy.verdict(retryable, 5, 0), Verdict::Fail);
        assert_eq!(policy.verdict(ErrorKind::Permanent, 1, 0), Verdict::Fail);
    }
}
