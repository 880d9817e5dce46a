//! Journal retention: which finished runs the hourly sweep deletes.
//!
//! # Guarantees
//! A run stays in the journal at least as long as anything that can drive it again:
//! - a message in the events stream: `runtime.journal-retention` ≥ `streams.max-age` and
//!   `runtime.failed-run-retention` ≥ `streams.max-age`, checked when the configuration loads;
//! - its dead letter: `runtime.failed-run-retention` ≥ `streams.dlq-max-age`, checked likewise,
//!   and a failed run with a DLQ sequence is kept until that letter is gone (its sequence is
//!   below the DLQ stream's first sequence), whatever its age, so a DLQ stream configured by
//!   hand to keep letters longer still finds its runs.
//!
//! Unfinished runs are never swept: stuck ones (their message aged out) are listed by
//! `engine runs list --status stuck` and ended by `engine runs fail`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Context;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Journal, JournalError, RunRecord, RunStatus};
use crate::bus::{BusError, Names};
use crate::config::RuntimeConfig;

/// How often the sweep runs.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// What the sweep may delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PurgePolicy {
    /// Succeeded runs that finished before this go.
    pub succeeded_before: DateTime<Utc>,
    /// Failed runs that finished before this go, unless their dead letter may still exist.
    pub failed_before: DateTime<Utc>,
    /// The DLQ stream's first sequence: a letter below it is gone. `None` (the stream could not
    /// be asked): every failed run with a DLQ sequence is kept.
    pub dlq_first_sequence: Option<u64>,
}

impl PurgePolicy {
    /// The policy of `runtime` at `now`, given the DLQ stream's first sequence.
    pub fn at(
        now: DateTime<Utc>,
        runtime: &RuntimeConfig,
        dlq_first_sequence: Option<u64>,
    ) -> Self {
        let ago =
            |d: Duration| now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        Self {
            succeeded_before: ago(runtime.journal_retention),
            failed_before: ago(runtime.failed_run_retention),
            dlq_first_sequence,
        }
    }

    /// The oldest creation time a purgeable run can have: runs are indexed by creation and
    /// finish after it, so the sweep stops at the first run created after this.
    pub fn created_before(&self) -> DateTime<Utc> {
        self.succeeded_before.max(self.failed_before)
    }

    /// Whether `run` may be deleted.
    pub fn may_purge(&self, run: &RunRecord) -> bool {
        let Some(finished) = run.finished_at else { return false };
        match run.status {
            RunStatus::Succeeded => finished < self.succeeded_before,
            RunStatus::Failed => {
                let letter_gone = match run.dlq_sequence {
                    None => true,
                    Some(seq) => self.dlq_first_sequence.is_some_and(|first| seq < first),
                };
                finished < self.failed_before && letter_gone
            }
            RunStatus::Running | RunStatus::Retrying => false,
        }
    }
}

/// The first sequence a stream still holds; every sequence below it is gone (for an empty
/// stream, the sequence its next message will get).
///
/// # Errors
/// The stream cannot be asked.
pub async fn first_sequence(js: &Context, stream: &str) -> Result<u64, BusError> {
    let mut stream = js
        .get_stream(stream)
        .await
        .map_err(|e| BusError::jetstream(format!("looking up stream {stream}"), e))?;
    let state = &stream.info().await.map_err(|e| BusError::jetstream("stream info", e))?.state;
    Ok(match state.messages {
        0 => state.last_sequence + 1,
        _ => state.first_sequence,
    })
}

/// Sweeps the journal every [`SWEEP_INTERVAL`] until `shutdown`.
pub async fn sweep(
    journal: Arc<dyn Journal>,
    js: Context,
    names: Names,
    runtime: RuntimeConfig,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match sweep_once(journal.as_ref(), &js, &names, &runtime).await {
            Ok(0) => {}
            Ok(purged) => info!(purged, "purged finished runs past the journal retention"),
            Err(e) => warn!(error = %e, "journal retention sweep failed"),
        }
    }
}

/// One sweep: asks the DLQ stream where its letters start, then purges.
///
/// # Errors
/// The journal failed (an unreachable DLQ stream only keeps failed runs with a letter).
pub async fn sweep_once(
    journal: &dyn Journal,
    js: &Context,
    names: &Names,
    runtime: &RuntimeConfig,
) -> Result<usize, JournalError> {
    let dlq_first = match first_sequence(js, &names.dlq_stream()).await {
        Ok(first) => Some(first),
        Err(e) => {
            warn!(error = %e, "cannot read the DLQ stream: keeping every failed run with a letter");
            None
        }
    };
    journal.purge_finished(&PurgePolicy::at(Utc::now(), runtime, dlq_first)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_runs_wait_for_their_letter() {
        let now = Utc::now();
        let runtime = RuntimeConfig::default();
        let policy = PurgePolicy::at(now, &runtime, Some(10));
        assert!(policy.failed_before < policy.succeeded_before, "failed runs are kept longer");
        assert_eq!(policy.created_before(), policy.succeeded_before);
    }
}
