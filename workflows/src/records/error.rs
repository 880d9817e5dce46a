//! The one error type of the [`Records`](super::Records) port.

use std::fmt;

use super::validation::ValidationErrors;

/// Which kind of record an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Team,
    Environment,
    Namespace,
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordKind::Team => "team",
            RecordKind::Environment => "environment",
            RecordKind::Namespace => "namespace record",
        })
    }
}

/// A boxed error from a storage backend, kept as the `source` of [`RecordsError::Backend`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a records operation failed. Callers branch on the variant (the HTTP API maps them to
/// 404, 409, 412, 422 and 503) and on [`RecordsError::is_retryable`].
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// No record with that key.
    #[error("{kind} {key:?} not found")]
    NotFound { kind: RecordKind, key: String },

    /// A record with that key (or, for namespace records, that namespace name) already exists.
    /// A tombstoned team still holds its slug until it is purged.
    #[error("{kind} {key:?} already exists")]
    AlreadyExists { kind: RecordKind, key: String },

    /// The caller's expected resource version is not the stored one; nothing was written.
    #[error("{kind} {key:?} is at resource version {current}, not {expected}")]
    VersionConflict { kind: RecordKind, key: String, expected: u64, current: u64 },

    /// The team is tombstoned: it can be read, deleted again (a no-op) or purged, not changed.
    #[error("{kind} {key:?} is deleted and awaits its purge")]
    Tombstoned { kind: RecordKind, key: String },

    /// Purging needs a tombstoned team; this one is live.
    #[error("{kind} {key:?} is not deleted; delete it before purging")]
    NotTombstoned { kind: RecordKind, key: String },

    /// The record failed validation; nothing was written.
    #[error("invalid {kind}: {errors}")]
    Invalid { kind: RecordKind, errors: ValidationErrors },

    /// The storage backend failed. If the failure hit the commit itself (a lost connection),
    /// the change may or may not have been applied: re-read before retrying a mutation.
    #[error("records backend failed")]
    Backend {
        retryable: bool,
        #[source]
        source: BoxError,
    },
}

impl RecordsError {
    /// A backend failure that may succeed when tried again (connection lost, pool exhausted,
    /// serialization failure, I/O error).
    pub fn transient(source: impl Into<BoxError>) -> Self {
        RecordsError::Backend { retryable: true, source: source.into() }
    }

    /// A backend failure that will not go away by retrying (corrupt data, schema mismatch).
    pub fn permanent(source: impl Into<BoxError>) -> Self {
        RecordsError::Backend { retryable: false, source: source.into() }
    }

    /// Whether the same call may succeed later, unchanged. Only transient backend failures are;
    /// a version conflict needs a re-read and a new expected version first.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RecordsError::Backend { retryable: true, .. })
    }

    /// `NotFound` for `kind` `key`.
    pub fn not_found(kind: RecordKind, key: impl Into<String>) -> Self {
        RecordsError::NotFound { kind, key: key.into() }
    }

    /// `AlreadyExists` for `kind` `key`.
    pub fn already_exists(kind: RecordKind, key: impl Into<String>) -> Self {
        RecordsError::AlreadyExists { kind, key: key.into() }
    }

    /// `Ok` when no version is expected or it is `current`; `VersionConflict` otherwise.
    pub fn check_version(
        kind: RecordKind,
        key: &str,
        expected: Option<u64>,
        current: u64,
    ) -> RecordsResult<()> {
        match expected {
            Some(expected) if expected != current => {
                Err(RecordsError::VersionConflict { kind, key: key.to_owned(), expected, current })
            }
            _ => Ok(()),
        }
    }

    /// Validates with `check`, mapping its problems to `Invalid` for `kind`.
    pub fn validated(kind: RecordKind, check: Result<(), ValidationErrors>) -> RecordsResult<()> {
        check.map_err(|errors| RecordsError::Invalid { kind, errors })
    }
}

/// A records failure as a run outcome: retryable when [`RecordsError::is_retryable`] (a
/// transient backend failure), permanent otherwise (a conflict, a missing or invalid record:
/// retrying the same step unchanged would fail the same way).
impl From<RecordsError> for crate::workflow::RunError {
    fn from(e: RecordsError) -> Self {
        let retryable = e.is_retryable();
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        if retryable {
            crate::workflow::RunError::retryable(message)
        } else {
            crate::workflow::RunError::permanent(message)
        }
    }
}

/// Result of a records operation.
pub type RecordsResult<T> = Result<T, RecordsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_backend_errors_are_retryable() {
        let io = || std::io::Error::other("disk gone");
        assert!(RecordsError::transient(io()).is_retryable());
        assert!(!RecordsError::permanent(io()).is_retryable());
        let conflict = RecordsError::VersionConflict {
            kind: RecordKind::Team,
            key: "a".into(),
            expected: 1,
            current: 2,
        };
        assert!(!conflict.is_retryable());
        assert_eq!(conflict.to_string(), "team \"a\" is at resource version 2, not 1");
    }

    #[test]
    fn run_errors_keep_the_kind_and_the_cause() {
        let run: crate::workflow::RunError =
            RecordsError::transient(std::io::Error::other("disk gone")).into();
        assert!(run.is_retryable());
        assert_eq!(run.message, "records backend failed: disk gone");
        let run: crate::workflow::RunError = RecordsError::not_found(RecordKind::Team, "a").into();
        assert!(!run.is_retryable());
    }

    #[test]
    fn backend_keeps_its_source() {
        use std::error::Error as _;
        let err = RecordsError::transient(std::io::Error::other("disk gone"));
        assert_eq!(err.source().unwrap().to_string(), "disk gone");
    }
}
