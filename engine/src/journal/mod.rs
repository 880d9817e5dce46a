//! The run and step journal: what each run did, durably, so that a redelivered or replayed event
//! resumes from the first unfinished step instead of repeating side effects.
//!
//! [`Journal`] is the contract; [`sled::SledJournal`] the embedded implementation.
//!
//! # Guarantees
//! `put_run` and `put_step` with [`Durability::Flush`] return only once the record and everything
//! written before it is on disk (fsync), so the runtime can
//! rely on the ordering "step durable → next step starts" and "run finished durable → ack".

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

/// Which runs to list, newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFilter {
    pub workflow: Option<String>,
    pub status: Option<RunStatus>,
    pub key: Option<String>,
    /// At most this many (default 100).
    pub limit: Option<usize>,
}

impl RunFilter {
    pub fn matches(&self, run: &RunRecord) -> bool {
        self.workflow.as_ref().is_none_or(|w| *w == run.workflow)
            && self.status.is_none_or(|s| s == run.status)
            && self.key.as_ref().is_none_or(|k| *k == run.key)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal storage: {0}")]
    Storage(#[from] ::sled::Error),
    #[error("journal record {key} is corrupt: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The run and step journal.
#[async_trait]
pub trait Journal: Send + Sync + 'static {
    async fn run(&self, id: &str) -> Result<Option<RunRecord>, JournalError>;
    /// Stores a run; durably when `durability` says so.
    async fn put_run(&self, run: &RunRecord, durability: Durability) -> Result<(), JournalError>;
    async fn step(&self, run_id: &str, index: u32) -> Result<Option<StepRecord>, JournalError>;
    /// Stores a step; durably when `durability` says so.
    async fn put_step(&self, step: &StepRecord, durability: Durability)
    -> Result<(), JournalError>;
    /// A run's steps in order.
    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, JournalError>;
    /// Runs matching the filter, most recently created first.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, JournalError>;
    /// Deletes finished runs (and their steps) that finished before `before`; returns how many.
    async fn purge_finished(&self, before: DateTime<Utc>) -> Result<usize, JournalError>;
}
