//! The organization's request budget: every request, read or write, takes GitHub's points for it
//! from a budget of `points-per-minute`, shared by every engine when the budget is a shared one.
//!
//! GitHub's secondary limit for REST is 900 points a minute (GET, HEAD, OPTIONS: 1 point; POST,
//! PATCH, PUT, DELETE: 5), and it holds per organization and identity, not per process. The
//! budget is a token bucket kept as one number, the *theoretical arrival time* (GCRA): a bucket
//! of `burst` points refilled at `points-per-minute - burst` points a minute, so that no
//! 60-second span holds more than `points-per-minute` points, however the requests fall (a
//! per-minute counter would allow twice the budget across a minute boundary).
//!
//! - [`RequestBudget`]: the contract; [`LocalBudget`] keeps the state in the process (the
//!   default, and all a single engine needs); the engine keeps it in a JetStream key-value
//!   bucket so that its replicas share one budget.
//! - [`Pacing::reserve`]: the arithmetic both share, a pure function of the state and the clock.
//! - A short wait (at most [`MAX_BUDGET_SLEEP`]) is slept inside the call; a longer one is
//!   refused with [`GitHubError::RateLimited`] ([`RateLimitKind::Budget`]) and its `after`, so
//!   the run waits durably and nothing is sent.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::Method;
use workflows::github::{GitHubError, RateLimitKind};

use super::limits::ceil_secs;

/// Points of a GET, HEAD or OPTIONS request.
pub const READ_POINTS: u32 = 1;
/// Points of a POST, PATCH, PUT or DELETE request.
pub const WRITE_POINTS: u32 = 5;
/// The longest budget wait slept inside a call; a longer one surfaces as a rate limit.
pub const MAX_BUDGET_SLEEP: Duration = Duration::from_secs(5);
/// The bucket holds this fraction of the per-minute budget (at least one write).
const BURST_FRACTION: u32 = 10;
/// A state further ahead of the clock than the burst plus this cannot come from reservations
/// (they never reach past `MAX_BUDGET_SLEEP`): the clock went back, or a replica's clock runs
/// ahead. The state is then reset rather than blocking requests for that long.
const MAX_CLOCK_LEAD: Duration = Duration::from_secs(5 * 60);
/// The wait asked for when a shared budget stayed contended through every compare-and-set.
pub const CONTENDED_WAIT: Duration = Duration::from_secs(1);

/// GitHub's points for a request with this method.
pub fn points(method: &Method) -> u32 {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => READ_POINTS,
        _ => WRITE_POINTS,
    }
}

/// The shape of a budget: how many points may go at once, and how fast they come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// Points that may be spent at once after a quiet spell.
    pub burst: u32,
    /// The time one point takes to come back.
    pub interval: Duration,
}

/// The answer of a budget to a request for points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// The points are taken: send after `wait` (zero: at once).
    Granted { wait: Duration },
    /// The points would come later than the caller would wait; nothing was taken. Ask again
    /// after `after`.
    Exhausted { after: Duration },
}

/// A budget that cannot answer (the shared store is unreachable or contended).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("the shared GitHub request budget is unavailable: {0}")]
    Unavailable(String),
    #[error("the shared GitHub request budget stayed contended through {0} updates")]
    Contended(u32),
}

/// Where the budget's state lives.
///
/// # Guarantees
/// Implementations apply [`Pacing::reserve`] atomically: two callers never both take the same
/// points, whichever process they run in.
#[async_trait]
pub trait RequestBudget: Send + Sync {
    /// Takes `points` if they can be had within `max_wait`.
    ///
    /// # Errors
    /// The budget's store cannot be read or written.
    async fn reserve(&self, points: u32, max_wait: Duration) -> Result<Reservation, BudgetError>;
}

impl Pacing {
    /// At most `points_per_minute` points in any 60 seconds: a burst of a tenth of them (at least
    /// one write), the rest coming back evenly over the minute.
    pub fn per_minute(points_per_minute: u32) -> Self {
        let points_per_minute = points_per_minute.max(2 * WRITE_POINTS);
        let burst = (points_per_minute / BURST_FRACTION).max(WRITE_POINTS);
        let interval = Duration::from_secs(60) / (points_per_minute - burst);
        Pacing { burst, interval }
    }

    /// One reservation against the state `tat` (the theoretical arrival time, µs on the
    /// budget's clock; `None` for a budget never used) at `now`: the answer, and the new state
    /// to store when points were taken.
    ///
    /// A request of `points` may go once the bucket has room for them: at
    /// `max(now, tat - (burst - points) · interval)`; taking them moves `tat` on by
    /// `points · interval`.
    pub fn reserve(
        &self,
        tat: Option<u64>,
        now: u64,
        points: u32,
        max_wait: Duration,
    ) -> (Reservation, Option<u64>) {
        let interval = micros(self.interval);
        let points = points.min(self.burst);
        let lead_limit = interval * u64::from(self.burst) + micros(MAX_CLOCK_LEAD);
        let tat = match tat {
            Some(tat) if tat > now.saturating_add(lead_limit) => {
                tracing::warn!(
                    ahead_secs = (tat - now) / 1_000_000,
                    "GitHub request budget is ahead of this clock; resetting it"
                );
                now
            }
            Some(tat) => tat.max(now),
            None => now,
        };
        let room_at = tat.saturating_sub(interval * u64::from(self.burst - points));
        let wait = Duration::from_micros(room_at.saturating_sub(now));
        if wait > max_wait {
            return (Reservation::Exhausted { after: wait }, None);
        }
        (Reservation::Granted { wait }, Some(tat + interval * u64::from(points)))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A budget kept in this process: enough for one engine, and the adapter's default.
#[derive(Debug)]
pub struct LocalBudget {
    pacing: Pacing,
    /// The monotonic clock's origin: the state is in µs since then.
    origin: Instant,
    tat: Mutex<Option<u64>>,
}

impl LocalBudget {
    pub fn new(pacing: Pacing) -> Self {
        LocalBudget { pacing, origin: Instant::now(), tat: Mutex::new(None) }
    }
}

#[async_trait]
impl RequestBudget for LocalBudget {
    async fn reserve(&self, points: u32, max_wait: Duration) -> Result<Reservation, BudgetError> {
        let now = micros(self.origin.elapsed());
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let (reservation, next) = self.pacing.reserve(*tat, now, points, max_wait);
        if next.is_some() {
            *tat = next;
        }
        Ok(reservation)
    }
}

/// Takes the points of one request: sleeps a wait of up to [`MAX_BUDGET_SLEEP`], refuses a
/// longer one with [`GitHubError::RateLimited`] (nothing is sent).
///
/// # Errors
/// The budget is spent for longer than [`MAX_BUDGET_SLEEP`] or contended (rate limited), or its
/// store is unreachable (a transport error, retried with the runtime's backoff).
pub(crate) async fn pace(
    budget: &dyn RequestBudget,
    method: &Method,
    action: &str,
) -> Result<(), GitHubError> {
    let spent = |after: Duration, why: &str| GitHubError::RateLimited {
        limit: RateLimitKind::Budget,
        after: ceil_secs(after),
        message: format!("{action}: {why}; nothing was sent"),
    };
    match budget.reserve(points(method), MAX_BUDGET_SLEEP).await {
        Ok(Reservation::Granted { wait }) => {
            if !wait.is_zero() {
                tracing::debug!(wait_ms = wait.as_millis() as u64, "pacing a GitHub request");
                tokio::time::sleep(wait).await;
            }
            Ok(())
        }
        Ok(Reservation::Exhausted { after }) => Err(spent(
            after,
            "the organization's request budget (github.points-per-minute) is spent",
        )),
        Err(e @ BudgetError::Contended(_)) => Err(spent(CONTENDED_WAIT, &e.to_string())),
        Err(e @ BudgetError::Unavailable(_)) => {
            Err(GitHubError::Transport { message: format!("{action}: {e}") })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;

    fn pacing() -> Pacing {
        // 10 points at once, one more every 100 ms.
        Pacing { burst: 10, interval: Duration::from_millis(100) }
    }

    #[test]
    fn reads_cost_one_point_and_writes_five() {
        assert_eq!(points(&Method::GET), 1);
        assert_eq!(points(&Method::HEAD), 1);
        for method in [Method::POST, Method::PATCH, Method::PUT, Method::DELETE] {
            assert_eq!(points(&method), 5, "{method}");
        }
    }

    #[test]
    fn the_default_budget_never_exceeds_its_points_in_a_minute() {
        let pacing = Pacing::per_minute(600);
        assert_eq!(pacing.burst, 60);
        // Simulate a greedy caller for five minutes; check every 60 s span.
        let mut tat = None;
        let mut sent = Vec::new();
        let mut now = 0;
        while now < 300_000 * MS {
            let (reservation, next) = pacing.reserve(tat, now, 1, Duration::ZERO);
            if let Reservation::Granted { .. } = reservation {
                sent.push(now);
                tat = next;
            }
            now += MS;
        }
        for (i, start) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|t| **t < start + 60_000 * MS).count();
            assert!(in_window <= 600, "{in_window} points in the minute from {start}");
        }
        assert!(sent.len() >= 5 * 540, "the budget is used: {}", sent.len());
        // A tiny budget still lets a write through.
        assert!(Pacing::per_minute(10).burst >= WRITE_POINTS);
    }

    #[test]
    fn the_burst_goes_at_once_then_requests_wait_their_turn() {
        let p = pacing();
        let mut tat = None;
        for _ in 0..10 {
            let (r, next) = p.reserve(tat, 0, 1, Duration::ZERO);
            assert_eq!(r, Reservation::Granted { wait: Duration::ZERO });
            tat = next;
        }
        let (r, _) = p.reserve(tat, 0, 1, Duration::ZERO);
        assert_eq!(r, Reservation::Exhausted { after: Duration::from_millis(100) });
        // Willing to wait: queued behind each other, 100 ms apart.
        let (r, tat) = p.reserve(tat, 0, 1, Duration::from_secs(1));
        assert_eq!(r, Reservation::Granted { wait: Duration::from_millis(100) });
        let (r, tat) = p.reserve(tat, 0, 1, Duration::from_secs(1));
        assert_eq!(r, Reservation::Granted { wait: Duration::from_millis(200) });
        // A write needs five points of room.
        let (r, _) = p.reserve(tat, 0, 5, Duration::from_secs(1));
        assert_eq!(r, Reservation::Granted { wait: Duration::from_millis(700) });
        // After a quiet spell the bucket is full again, and no fuller.
        let (r, _) = p.reserve(tat, 10_000 * MS, 5, Duration::ZERO);
        assert_eq!(r, Reservation::Granted { wait: Duration::ZERO });
    }

    #[test]
    fn a_state_far_ahead_of_the_clock_is_reset() {
        let p = pacing();
        let (r, next) = p.reserve(Some(3_600_000 * MS), 0, 1, Duration::ZERO);
        assert_eq!(r, Reservation::Granted { wait: Duration::ZERO });
        assert_eq!(next, Some(100 * MS));
    }

    #[tokio::test]
    async fn a_long_wait_surfaces_as_a_rate_limit_and_a_short_one_is_slept() {
        let budget = LocalBudget::new(Pacing { burst: 5, interval: Duration::from_secs(3600) });
        pace(&budget, &Method::PUT, "write").await.unwrap();
        let err = pace(&budget, &Method::GET, "read team").await.unwrap_err();
        let GitHubError::RateLimited { limit, after, message } = &err else { panic!("{err}") };
        assert_eq!(*limit, RateLimitKind::Budget);
        assert!(*after > MAX_BUDGET_SLEEP, "{after:?}");
        assert!(message.starts_with("read team:"), "{message}");
        assert_eq!(workflows::RunError::from(err).kind_name(), "throttled");

        let budget = LocalBudget::new(Pacing { burst: 5, interval: Duration::from_millis(50) });
        pace(&budget, &Method::PUT, "write").await.unwrap();
        let started = Instant::now();
        pace(&budget, &Method::GET, "read").await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(40), "the read waited its turn");
    }
}
