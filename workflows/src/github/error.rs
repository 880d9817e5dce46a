//! [`GitHubError`]: the kinds of GitHub failure a workflow branches on.

use std::time::Duration;

use crate::workflow::RunError;

/// Why a GitHub call failed.
///
/// # Errors as run outcomes
/// [`GitHubError::is_retryable`] and [`GitHubError::retry_after`] decide the run's fate:
/// rate limits are retryable *with* `after` (the time GitHub asked for), server errors and
/// transport failures retryable with the runtime's backoff, and authorization or validation
/// failures permanent.
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
}

impl std::fmt::Display for RateLimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RateLimitKind::Primary => "primary",
            RateLimitKind::Secondary => "secondary",
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
    fn from(e: GitHubError) -> Self {
        let message = e.to_string();
        match (e.is_retryable(), e.retry_after()) {
            (true, Some(after)) => RunError::retry_after(message, after),
            (true, None) => RunError::retryable(message),
            (false, _) => RunError::permanent(message),
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
                ErrorKind::Retryable { after: Some(after) },
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
