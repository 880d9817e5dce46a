//! GitHub's rate-limit rules as state: when the next request may go, and what a limited answer
//! means.
//!
//! The rules (GitHub's "Rate limits for the REST API"): honour `retry-after`; with
//! `x-ratelimit-remaining: 0` wait until `x-ratelimit-reset`; a secondary limit without either
//! header waits at least 60 s, then exponentially longer. While limited the adapter sends
//! nothing and answers at once with the remaining wait, since continuing to send may get an
//! integration banned.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, StatusCode};
use workflows::github::{GitHubError, RateLimitKind};

/// A secondary limit without headers waits this long the first time…
pub const SECONDARY_MIN_WAIT: Duration = Duration::from_secs(60);
/// …doubling with every consecutive one, up to this.
pub const SECONDARY_MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// When GitHub may be asked again.
#[derive(Debug, Default)]
pub(crate) struct RateGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    blocked_until: Option<(Instant, RateLimitKind)>,
    /// Consecutive secondary limits without headers.
    secondary_strikes: u32,
    /// The primary quota as last reported.
    remaining: Option<u64>,
}

impl RateGate {
    /// `Err` with the remaining wait while a limit is in force.
    pub(crate) fn check(&self) -> Result<(), GitHubError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.blocked_until {
            Some((until, limit)) if until > Instant::now() => Err(GitHubError::RateLimited {
                limit,
                after: ceil_secs(until - Instant::now()),
                message: "an earlier answer asked to wait; nothing was sent".into(),
            }),
            _ => Ok(()),
        }
    }

    /// The primary quota left, as GitHub last reported it.
    pub(crate) fn remaining(&self) -> Option<u64> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).remaining
    }

    /// Notes a successful answer: the strike count resets; an exhausted quota blocks until reset.
    pub(crate) fn on_success(&self, headers: &HeaderMap) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.secondary_strikes = 0;
        state.remaining = header_u64(headers, "x-ratelimit-remaining").or(state.remaining);
        if state.remaining == Some(0)
            && let Some(wait) = until_reset(headers)
        {
            state.blocked_until = Some((Instant::now() + wait, RateLimitKind::Primary));
        }
    }

    /// If a failed answer is a rate limit: the wait, which also blocks further requests.
    pub(crate) fn on_failure(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        message: &str,
    ) -> Option<(RateLimitKind, Duration)> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.remaining = header_u64(headers, "x-ratelimit-remaining").or(state.remaining);
        let (limit, wait) = classify(status, headers, message, state.secondary_strikes)?;
        if limit == RateLimitKind::Secondary && headers.get("retry-after").is_none() {
            state.secondary_strikes = state.secondary_strikes.saturating_add(1);
        }
        state.blocked_until = Some((Instant::now() + wait, limit));
        Some((limit, wait))
    }
}

/// Whether an answer is a rate limit, and how long to wait. `strikes` counts the consecutive
/// secondary limits without headers before this one.
pub(crate) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    message: &str,
    strikes: u32,
) -> Option<(RateLimitKind, Duration)> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let lower = message.to_ascii_lowercase();
    let says_secondary = lower.contains("secondary rate limit") || lower.contains("abuse");
    if let Some(secs) = header_u64(headers, "retry-after") {
        let limit = if says_secondary || status == StatusCode::TOO_MANY_REQUESTS {
            RateLimitKind::Secondary
        } else if header_u64(headers, "x-ratelimit-remaining") == Some(0) {
            RateLimitKind::Primary
        } else {
            RateLimitKind::Secondary
        };
        return Some((limit, Duration::from_secs(secs.max(1))));
    }
    if header_u64(headers, "x-ratelimit-remaining") == Some(0) && !says_secondary {
        let wait = until_reset(headers).unwrap_or(SECONDARY_MIN_WAIT);
        return Some((RateLimitKind::Primary, wait));
    }
    if says_secondary || status == StatusCode::TOO_MANY_REQUESTS || lower.contains("rate limit") {
        let wait = SECONDARY_MIN_WAIT.saturating_mul(1u32 << strikes.min(8));
        return Some((RateLimitKind::Secondary, wait.min(SECONDARY_MAX_WAIT)));
    }
    None
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Time left until `x-ratelimit-reset` (UTC epoch seconds), at least one second.
fn until_reset(headers: &HeaderMap) -> Option<Duration> {
    let reset = header_u64(headers, "x-ratelimit-reset")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now).max(1)))
}

/// Whole seconds, rounded up: a Nak delay must not fire early.
pub(crate) fn ceil_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn epoch_in(secs: u64) -> String {
        (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + secs).to_string()
    }

    #[test]
    fn classification_follows_githubs_rules() {
        let forbidden = StatusCode::FORBIDDEN;
        let too_many = StatusCode::TOO_MANY_REQUESTS;
        let secondary = "You have exceeded a secondary rate limit.";
        let none = HeaderMap::new();

        let retry = headers(&[("retry-after", "7".into())]);
        assert_eq!(
            classify(too_many, &retry, "", 0),
            Some((RateLimitKind::Secondary, Duration::from_secs(7)))
        );

        let exhausted =
            headers(&[("x-ratelimit-remaining", "0".into()), ("x-ratelimit-reset", epoch_in(120))]);
        let (limit, wait) = classify(forbidden, &exhausted, "API rate limit exceeded", 0).unwrap();
        assert_eq!(limit, RateLimitKind::Primary);
        assert!((119..=120).contains(&wait.as_secs()), "{wait:?}");

        assert_eq!(
            classify(forbidden, &none, secondary, 0),
            Some((RateLimitKind::Secondary, Duration::from_secs(60)))
        );
        assert_eq!(
            classify(forbidden, &none, secondary, 2),
            Some((RateLimitKind::Secondary, Duration::from_secs(240)))
        );
        assert_eq!(
            classify(forbidden, &none, secondary, 30),
            Some((RateLimitKind::Secondary, SECONDARY_MAX_WAIT))
        );

        let plenty = headers(&[("x-ratelimit-remaining", "4000".into())]);
        assert_eq!(classify(forbidden, &plenty, "Must have admin rights", 0), None);
        assert_eq!(classify(StatusCode::BAD_GATEWAY, &retry, "", 0), None);
    }

    #[test]
    fn the_gate_blocks_until_the_wait_is_over_and_strikes_grow() {
        let gate = RateGate::default();
        gate.check().unwrap();
        let msg = "secondary rate limit";
        let first = gate.on_failure(StatusCode::FORBIDDEN, &HeaderMap::new(), msg).unwrap();
        assert_eq!(first.1, Duration::from_secs(60));
        let err = gate.check().unwrap_err();
        assert!(err.retry_after().unwrap() <= Duration::from_secs(60));
        assert!(err.retry_after().unwrap() >= Duration::from_secs(59));
        let second = gate.on_failure(StatusCode::FORBIDDEN, &HeaderMap::new(), msg).unwrap();
        assert_eq!(second.1, Duration::from_secs(120));
        gate.on_success(&HeaderMap::new());
        let third = gate.on_failure(StatusCode::FORBIDDEN, &HeaderMap::new(), msg).unwrap();
        assert_eq!(third.1, Duration::from_secs(60), "a success resets the strikes");
    }

    #[test]
    fn an_exhausted_quota_blocks_before_the_next_request() {
        let gate = RateGate::default();
        gate.on_success(&headers(&[
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", epoch_in(30)),
        ]));
        let err = gate.check().unwrap_err();
        assert!(matches!(err, GitHubError::RateLimited { limit: RateLimitKind::Primary, .. }));
        assert_eq!(gate.remaining(), Some(0));
    }
}
