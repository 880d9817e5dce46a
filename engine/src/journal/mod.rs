//! The run and step journal: what each run did, durably, so that a redelivered or replayed event
//! resumes from the first unfinished step instead of repeating side effects.
//!
//! [`Journal`] is the contract; [`sled::SledJournal`] the embedded implementation.
//!
//! # Guarantees
//! [`Journal::put`] with [`Durability::Flush`] returns only once the record and everything written
//! before it is on disk (fsync), so the runtime can rely on the ordering "step durable → next step
//! starts" and "run finished durable → ack".
//! A run and its steps are one record ([`JournaledRun`]); a run the journal holds is listed and
//! swept (see [`sled`]).
//!
//! [`retention`] decides what the sweep may delete; [`fail_run`] is an operator's end for a run
//! nothing will drive again ([`RunFilter::stuck_below`]).

pub(crate) mod record;
pub mod retention;
pub mod sled;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Whether a write must be on disk before the call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync before returning: the record survives a crash.
    Flush,
    /// Written, made durable by the next flushed write: for records that only inform.
    Lazy,
}

/// Lifecycle of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// An attempt is executing (or was when the engine stopped).
    Running,
    /// An attempt failed with a retryable error; the event is redelivered after a delay.
    Retrying,
    /// Finished with an output.
    Succeeded,
    /// Failed permanently or ran out of attempts; the event is in the DLQ.
    Failed,
}

impl RunStatus {
    pub const ALL: [Self; 4] = [Self::Running, Self::Retrying, Self::Succeeded, Self::Failed];

    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        })
    }
}

/// What `runs list --status` and `GET /v1/runs?status=` take: a status, or `stuck` (running or
/// retrying while its message is gone from the events stream, see [`RunFilter::stuck_below`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum StatusQuery {
    Running,
    Retrying,
    Succeeded,
    Failed,
    Stuck,
}

impl StatusQuery {
    /// The journaled status asked for; `None` for `stuck`, which needs the stream.
    pub fn status(self) -> Option<RunStatus> {
        match self {
            Self::Running => Some(RunStatus::Running),
            Self::Retrying => Some(RunStatus::Retrying),
            Self::Succeeded => Some(RunStatus::Succeeded),
            Self::Failed => Some(RunStatus::Failed),
            Self::Stuck => None,
        }
    }
}

/// An error as journaled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// `retryable`, `permanent`, `throttled`, or the code of an undecodable event.
    pub kind: String,
    pub message: String,
}

/// One attempt of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// How the attempt ended; `None` while it runs or if the engine died during it.
    pub outcome: Option<RunStatus>,
    pub error: Option<ErrorRecord>,
    /// Delay before the next attempt, when one was scheduled.
    pub retry_delay_ms: Option<u64>,
}

/// The event that triggered a run, as received.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerRecord {
    /// The CloudEvent in structured JSON form.
    pub event: serde_json::Value,
    pub nats_subject: String,
    pub stream_sequence: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub workflow: String,
    pub key: String,
    pub status: RunStatus,
    /// Attempts since the run was first driven or last re-driven from the DLQ. A throttled
    /// delivery (a rate limit said "later") is not an attempt.
    pub attempts: u32,
    /// Throttled deliveries since the run was first driven or last re-driven: JetStream counts
    /// them as deliveries, so `delivered - throttled` is the floor of `attempts`.
    #[serde(default)]
    pub throttled: u32,
    /// How often the run was re-driven after failing.
    pub redrives: u32,
    pub trigger: TriggerRecord,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub output: Option<serde_json::Value>,
    pub error: Option<ErrorRecord>,
    /// Sequence of the run's entry in the DLQ stream once it is stored there.
    pub dlq_sequence: Option<u64>,
    pub history: Vec<AttemptRecord>,
}

/// State of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Running,
    Succeeded,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub run_id: String,
    pub index: u32,
    pub name: String,
    pub status: StepStatus,
    pub attempts: u32,
    pub output: Option<serde_json::Value>,
    pub error: Option<ErrorRecord>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
}

/// A run with its steps: what the journal stores as one record.
#[derive(Clone, Debug, PartialEq)]
pub struct JournaledRun {
    pub run: RunRecord,
    /// In index order.
    pub steps: Vec<StepRecord>,
}

/// Runs one list answers when the filter names no `limit`.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Most runs one list answers: a larger `limit` is refused ([`JournalError::InvalidFilter`]), so
/// that one page is bounded in time and size; page on with [`RunPage::next_cursor`].
pub const MAX_LIST_LIMIT: usize = 500;

/// Which runs to list, newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFilter {
    pub workflow: Option<String>,
    pub status: Option<RunStatus>,
    pub key: Option<String>,
    /// At most this many, 1 to [`MAX_LIST_LIMIT`] (default [`DEFAULT_LIST_LIMIT`]).
    pub limit: Option<usize>,
    /// Only runs after this position in the list: the `next_cursor` of the previous page (see
    /// [`page_cursor`]). Opaque to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Only stuck runs: running or retrying, with a trigger whose stream sequence is below this
    /// one (the events stream's first sequence), so their message is gone and nothing will drive
    /// them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck_below: Option<u64>,
}

impl RunFilter {
    /// The page size asked for.
    ///
    /// # Errors
    /// [`JournalError::InvalidFilter`] for a limit of 0 or above [`MAX_LIST_LIMIT`].
    pub fn checked_limit(&self) -> Result<usize, JournalError> {
        match self.limit {
            None => Ok(DEFAULT_LIST_LIMIT),
            Some(n) if (1..=MAX_LIST_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(JournalError::InvalidFilter(format!(
                "limit {n} is not between 1 and {MAX_LIST_LIMIT}; page on with the cursor instead"
            ))),
        }
    }

    pub fn matches(&self, run: &RunRecord) -> bool {
        self.workflow.as_ref().is_none_or(|w| *w == run.workflow)
            && self.status.is_none_or(|s| s == run.status)
            && self.key.as_ref().is_none_or(|k| *k == run.key)
            && self.stuck_below.is_none_or(|first| run.is_stuck(first))
    }
}

/// One page of runs, newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunPage {
    pub items: Vec<RunRecord>,
    /// Pass as [`RunFilter::after`] for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The cursor that continues a list after `run`: its place in the newest-first order (creation
/// millis, then run id), hex-encoded. A page cut short (e.g. to fit a NATS reply) continues
/// after its last item with this.
pub fn page_cursor(run: &RunRecord) -> String {
    hex::encode(list_position(run))
}

/// A run's place in every list: big-endian creation millis, then its id.
pub(crate) fn list_position(run: &RunRecord) -> Vec<u8> {
    let millis = u64::try_from(run.created_at.timestamp_millis()).unwrap_or(0);
    let mut position = Vec::with_capacity(8 + run.id.len());
    position.extend_from_slice(&millis.to_be_bytes());
    position.extend_from_slice(run.id.as_bytes());
    position
}

/// The position a cursor names.
///
/// # Errors
/// [`JournalError::InvalidFilter`] when it is not one [`page_cursor`] made.
pub(crate) fn cursor_position(cursor: &str) -> Result<Vec<u8>, JournalError> {
    hex::decode(cursor)
        .ok()
        .filter(|position| position.len() > 8)
        .ok_or_else(|| JournalError::InvalidFilter(format!("invalid cursor {cursor:?}")))
}

impl RunRecord {
    /// A run about to make its first attempt: running, created and updated `at`, no attempt
    /// counted or recorded yet.
    pub fn new(
        id: impl Into<String>,
        workflow: impl Into<String>,
        key: impl Into<String>,
        trigger: TriggerRecord,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            id: id.into(),
            workflow: workflow.into(),
            key: key.into(),
            status: RunStatus::Running,
            attempts: 0,
            throttled: 0,
            redrives: 0,
            trigger,
            created_at: at,
            updated_at: at,
            finished_at: None,
            output: None,
            error: None,
            dlq_sequence: None,
            history: Vec::new(),
        }
    }

    /// Whether the run is unfinished while its trigger message is below the events stream's
    /// first sequence `first_sequence`: no delivery will ever drive it again.
    pub fn is_stuck(&self, first_sequence: u64) -> bool {
        !self.status.is_finished() && self.trigger.stream_sequence < first_sequence
    }
}

/// The journaled error kind of a run an operator failed.
pub const FAILED_BY_OPERATOR: &str = "failed-by-operator";

/// An operator ending a run by hand (`engine runs fail`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorFailure {
    pub run_id: String,
    /// Why, in the operator's words.
    pub reason: String,
    /// Who did it.
    pub by: String,
    /// The run's dead letter, published before the run is failed, so that the failed run can be
    /// re-driven like any other (`engine dlq replay`, `POST /v1/runs/{id}/retry`).
    pub dlq_sequence: Option<u64>,
}

/// Why [`fail_run`] refused.
#[derive(Debug, thiserror::Error)]
pub enum FailRunError {
    #[error("no run {0:?}")]
    NoSuchRun(String),
    #[error("run {id:?} is {status}; only running or retrying runs can be failed")]
    Finished { id: String, status: RunStatus },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Fails an unfinished run on an operator's word: status `failed`, error of kind
/// [`FAILED_BY_OPERATOR`] naming the reason and who did it, the open attempt closed; durable
/// before it returns.
///
/// # Errors
/// No such run, a finished run, or the journal failed.
pub async fn fail_run(
    journal: &dyn Journal,
    failure: &OperatorFailure,
) -> Result<RunRecord, FailRunError> {
    let id = &failure.run_id;
    let mut journaled =
        journal.load(id).await?.ok_or_else(|| FailRunError::NoSuchRun(id.clone()))?;
    let run = &mut journaled.run;
    if run.status.is_finished() {
        return Err(FailRunError::Finished { id: id.clone(), status: run.status });
    }
    let now = Utc::now();
    let error = ErrorRecord {
        kind: FAILED_BY_OPERATOR.into(),
        message: format!("{} (failed by {})", failure.reason, failure.by),
    };
    if let Some(attempt) = run.history.last_mut().filter(|a| a.outcome.is_none()) {
        attempt.finished_at = Some(now);
        attempt.outcome = Some(RunStatus::Failed);
        attempt.error = Some(error.clone());
    }
    run.status = RunStatus::Failed;
    run.error = Some(error);
    run.updated_at = now;
    run.finished_at = Some(now);
    run.dlq_sequence = failure.dlq_sequence;
    journal.put(&journaled, Durability::Flush).await?;
    Ok(journaled.run)
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal storage: {0}")]
    Storage(#[from] ::sled::Error),
    #[error("journal record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    /// The filter cannot be answered: a limit out of bounds, a cursor no list made.
    #[error("{0}")]
    InvalidFilter(String),
    /// The journal's blocking work was cancelled (the runtime is shutting down).
    #[error("journal work interrupted: {0}")]
    Interrupted(String),
}

/// The run and step journal: one record per run, holding its steps.
#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// A run and its steps.
    async fn load(&self, id: &str) -> Result<Option<JournaledRun>, JournalError>;
    /// Stores a run and its steps, replacing what was stored; durably when `durability` says so
    /// (then everything written before is durable too).
    async fn put(&self, run: &JournaledRun, durability: Durability) -> Result<(), JournalError>;
    /// One page of the runs matching the filter, most recently created first, from
    /// [`RunFilter::after`] on.
    ///
    /// # Errors
    /// [`JournalError::InvalidFilter`] for a limit above [`MAX_LIST_LIMIT`] or a bad cursor; the
    /// storage failed.
    async fn list_runs(&self, filter: &RunFilter) -> Result<RunPage, JournalError>;
    /// Deletes the finished runs (and their steps) that `policy` lets go; returns how many.
    async fn purge_finished(&self, policy: &retention::PurgePolicy) -> Result<usize, JournalError>;

    async fn run(&self, id: &str) -> Result<Option<RunRecord>, JournalError> {
        Ok(self.load(id).await?.map(|journaled| journaled.run))
    }

    /// A run's steps in order.
    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, JournalError> {
        Ok(self.load(run_id).await?.map(|journaled| journaled.steps).unwrap_or_default())
    }

    /// Stores a run, keeping the steps journaled for it.
    async fn put_run(&self, run: &RunRecord, durability: Durability) -> Result<(), JournalError> {
        let steps = self.steps(&run.id).await?;
        self.put(&JournaledRun { run: run.clone(), steps }, durability).await
    }
}
