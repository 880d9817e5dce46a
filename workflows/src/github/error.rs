//! [`GitHubError`]: the kinds of GitHub failure a workflow branches on.

use std::time::Duration;

use crate::workflow::RunError;

/// Why a GitHub call failed.
///
/// # Errors as run outcomes
/// [`GitHubError::is_retryable`] and [`GitHubError::retry_after`] decide the run's fate:
/// rate limits throttle the run until `after` (the time GitHub or the request budget asked for;
/// not a failed attempt), server errors and transport failures are retryable with the runtime's
/// backoff, and authorization or validation failures permanent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitHubError {
    /// A primary or secondary rate limit: nothing more may be sent before `after`.
    #[error("GitHub rate limit ({limit}): retry in {}s: {message}", after.as_secs())]
    RateLimited { limit: RateLimitKind, after: Duration, message: String },

    /// GitHub failed (5xx) or timed out.
    #[error("GitHub answered {status}: {message}")]
    Unavailable { status: u16, message: String },

    /// The request did not reach GitHub or its answer was lost.
    #[error("could not reach GitHub: {message}")]
    Transport { message: String },

    /// 401 or a 403 that is not a rate limit: the credentials lack a permission.
    #[error("GitHub refused {action} ({status}): {message}; {needed}")]
    Forbidden { status: u16, action: String, message: String, needed: String },

    /// The team (or user) does not exist, where it must.
    #[error("GitHub has no {what}")]
    NotFound { what: String },

    /// GitHub rejected the request as invalid (422 and other 4xx), e.g. an unknown login or a
    /// team managed by IdP team synchronization.
    #[error("GitHub rejected {action} ({status}): {message}")]
    Rejected { status: u16, action: String, message: String },

    /// GitHub has no user with this login (never existed, deleted, or renamed).
    #[error("GitHub has no user {login:?} (deleted or renamed?): {message}")]
    UnknownLogin { login: String, message: String },

    /// A GitHub team with the slug the name derives exists and Muster did not create it or
    /// link it: it is left alone unless an operator asks to adopt it.
    #[error(
        "GitHub team {slug:?} (id {id}) already exists and is not managed by Muster; review \
         `engine teams plan <team>` and adopt it with `engine teams sync <team> --adopt`"
    )]
    Unmanaged { id: u64, slug: String },

    /// GitHub's answer did not have the documented shape.
    #[error("unexpected answer from GitHub to {action}: {message}")]
    InvalidResponse { action: String, message: String },

    /// The adapter is configured in a way that cannot work (bad key file, deletion disabled).
    #[error("GitHub connector: {0}")]
    Config(String),
}

/// Which limit a [`GitHubError::RateLimited`] hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitKind {
    /// The hourly quota (`x-ratelimit-remaining: 0`): wait until `x-ratelimit-reset`.
    Primary,
    /// A secondary (abuse) limit: Retry-After, or at least 60 s growing exponentially.
    Secondary,
    /// Muster's own request budget for the organization (`github.points-per-minute`, shared by
    /// the engine replicas) is spent: nothing was sent.
    Budget,
}

impl std::fmt::Display for RateLimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RateLimitKind::Primary => "primary",
            RateLimitKind::Secondary => "secondary",
            RateLimitKind::Budget => "request budget",
        })
    }
}

impl GitHubError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GitHubError::RateLimited { .. }
                | GitHubError::Unavailable { .. }
                | GitHubError::Transport { .. }
                | GitHubError::InvalidResponse { .. }
        )
    }

    /// The earliest time to try again, when GitHub said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GitHubError::RateLimited { after, .. } => Some(*after),
            _ => None,
        }
    }
}

impl From<GitHubError> for RunError {
    /// A rate limit throttles the run (a wait, not a failed attempt); other retryable errors
    /// are retried with the runtime's backoff; the rest are permanent.
    fn from(e: GitHubError) -> Self {
        let message = e.to_string();
        match (&e, e.is_retryable()) {
            (GitHubError::RateLimited { after, .. }, _) => RunError::throttled(message, *after),
            (_, true) => RunError::retryable(message),
            (_, false) => RunError::permanent(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::ErrorKind;

    #[test]
    fn kinds_map_onto_run_errors() {
        let after = Duration::from_secs(61);
        let cases = [
            (
                GitHubError::RateLimited {
                    limit: RateLimitKind::Secondary,
                    after,
                    message: "slow down".into(),
                },
                ErrorKind::Throttled { after },
            ),
            (
                GitHubError::RateLimited {
                    limit: RateLimitKind::Budget,
                    after,
                    message: "budget spent".into(),
                },
                ErrorKind::Throttled { after },
            ),
            (
                GitHubError::Unavailable { status: 502, message: "bad gateway".into() },
                ErrorKind::Retryable { after: None },
            ),
            (
                GitHubError::Transport { message: "reset".into() },
                ErrorKind::Retryable { after: None },
            ),
            (
                GitHubError::Forbidden {
                    status: 403,
                    action: "PUT membership".into(),
                    message: "Must have admin rights".into(),
                    needed: "needs Members: write".into(),
                },
                ErrorKind::Permanent,
            ),
            (
                GitHubError::Rejected { status: 422, action: "x".into(), message: "y".into() },
                ErrorKind::Permanent,
            ),
            (GitHubError::NotFound { what: "team a".into() }, ErrorKind::Permanent),
        ];
        for (error, kind) in cases {
            let run: RunError = error.clone().into();
            assert_eq!(run.kind, kind, "{error}");
            assert_eq!(run.message, error.to_string());
        }
    }
}
