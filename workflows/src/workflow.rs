//! The [`Workflow`] trait and the [`RunContext`] through which a run journals its steps.
//!
//! # Determinism
//! A run may execute more than once: after a crash, a retry or a DLQ replay the runtime runs the
//! workflow again from the top and [`RunContext::step`] returns the journaled result of every step
//! that had already finished, in order, without executing it again. Workflow code must therefore
//! take the same path given the same event and the same step results: anything that varies
//! (time, randomness, reads from the outside world) belongs inside a step. A step whose name at a
//! given position differs from the journal's is reported as a permanent error, since the journal
//! can no longer be trusted for that run.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use cloudevents::Event;
use serde::{Serialize, de::DeserializeOwned};

/// Named code triggered by CloudEvent types, run durably by the engine.
#[async_trait]
pub trait Workflow: Send + Sync + 'static {
    /// Stable name: it names the durable consumer, the run ids and the DLQ entries.
    fn name(&self) -> &'static str;

    /// CloudEvent type patterns that trigger the workflow, as NATS subject tokens (`*` matches one
    /// dot-separated part, `>` the rest). Patterns of one workflow must not overlap.
    fn triggers(&self) -> &'static [&'static str];

    /// Serialisation key: at most one run per key is in flight in one engine.
    fn key(&self, event: &Event) -> String {
        crate::event::default_key(event)
    }

    /// Runs the workflow for one event. The returned JSON is stored as the run's output.
    async fn run(&self, ctx: &mut RunContext, event: Event) -> Result<serde_json::Value, RunError>;
}

/// What the runtime should do with a failed run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Try again later: after `after` when given (e.g. GitHub's Retry-After), otherwise after the
    /// retry policy's backoff, until the attempts are exhausted.
    Retryable { after: Option<Duration> },
    /// Do not try again: the run fails and its event goes to the dead-letter queue.
    Permanent,
    /// Not a failure: a rate limit or request budget said "not before `after`". The runtime
    /// waits at least `after` (plus jitter, so runs limited together do not wake together) and
    /// does not count the attempt toward `max-attempts`.
    Throttled { after: Duration },
}

/// A workflow error: a kind the runtime branches on, and a message for operators.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RunError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RunError {
    /// An error worth retrying with the retry policy's backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Retryable { after: None }, message: message.into() }
    }

    /// An error worth retrying, not before `after`.
    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        Self { kind: ErrorKind::Retryable { after: Some(after) }, message: message.into() }
    }

    /// Not a failure: try again once `after` has passed (a rate limit), without using up one of
    /// the run's attempts.
    pub fn throttled(message: impl Into<String>, after: Duration) -> Self {
        Self { kind: ErrorKind::Throttled { after }, message: message.into() }
    }

    /// An error that no retry will fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Permanent, message: message.into() }
    }

    /// Whether the run is tried again: a retryable or a throttled error.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Retryable { .. } | ErrorKind::Throttled { .. })
    }

    /// A short name for the kind, as stored in the journal and DLQ headers.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ErrorKind::Retryable { .. } => "retryable",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Throttled { .. } => "throttled",
        }
    }
}

/// A step as the journal holds it once it has finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredStep {
    pub name: String,
    pub output: serde_json::Value,
}

/// Where a run's steps are journaled; the engine implements it over its journal.
///
/// # Guarantees
/// A step's output recorded by `complete` is durable before the next step's `start` returns (an
/// implementation may flush it in `complete` or write it behind, in the next `start` or with the
/// run's outcome), so the next step never starts before the previous one's result would survive
/// a crash.
#[async_trait]
pub trait StepJournal: Send + Sync {
    /// The finished step at `index`, if any.
    async fn finished(&self, index: u32) -> Result<Option<StoredStep>, RunError>;
    /// Records that the step at `index` starts (one more attempt of it).
    async fn start(&self, index: u32, name: &str) -> Result<(), RunError>;
    /// Records the step's output, durable at the latest when the next step starts.
    async fn complete(
        &self,
        index: u32,
        name: &str,
        output: &serde_json::Value,
    ) -> Result<(), RunError>;
    /// Records the step's failure for this attempt.
    async fn fail(&self, index: u32, name: &str, error: &RunError) -> Result<(), RunError>;
}

/// One execution of a workflow for one event: gives the run its id and attempt, and journals its
/// steps.
pub struct RunContext {
    run_id: String,
    attempt: u32,
    next_index: u32,
    journal: Box<dyn StepJournal>,
}

impl RunContext {
    pub fn new(run_id: impl Into<String>, attempt: u32, journal: Box<dyn StepJournal>) -> Self {
        Self { run_id: run_id.into(), attempt, next_index: 0, journal }
    }

    /// The run id: the workflow name and a hash of the triggering event's source and id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The attempt of this run, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Runs `f` as the next step named `name`, or returns its journaled result if the step
    /// already finished in an earlier attempt.
    ///
    /// # Errors
    /// The step's own error; a permanent error when the journal holds a different step at this
    /// position (the workflow is not deterministic) or an output that no longer deserializes; a
    /// retryable error when the journal cannot be read or written.
    pub async fn step<T, E, F, Fut>(&mut self, name: &str, f: F) -> Result<T, RunError>
    where
        T: Serialize + DeserializeOwned,
        E: Into<RunError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let index = self.next_index;
        self.next_index += 1;
        if let Some(stored) = self.journal.finished(index).await? {
            if stored.name != name {
                return Err(RunError::permanent(format!(
                    "run {} is not deterministic: step {index} was journaled as {:?} but the \
                     workflow now runs {name:?}",
                    self.run_id, stored.name
                )));
            }
            return serde_json::from_value(stored.output).map_err(|e| {
                RunError::permanent(format!(
                    "journaled output of step {name:?} no longer fits: {e}"
                ))
            });
        }
        self.journal.start(index, name).await?;
        match f().await.map_err(Into::into) {
            Ok(value) => {
                let output = serde_json::to_value(&value).map_err(|e| {
                    RunError::permanent(format!("output of step {name:?} is not JSON: {e}"))
                })?;
                self.journal.complete(index, name, &output).await?;
                Ok(value)
            }
            Err(error) => {
                self.journal.fail(index, name, &error).await?;
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryJournal;

    #[tokio::test]
    async fn finished_steps_are_replayed_not_rerun() {
        let journal = MemoryJournal::default();
        let mut ctx = RunContext::new("r", 1, Box::new(journal.clone()));
        let a: u32 = ctx.step("a", || async { Ok::<_, RunError>(1) }).await.unwrap();
        let b: Result<u32, _> =
            ctx.step("b", || async { Err::<u32, _>(RunError::retryable("flaky")) }).await;
        assert_eq!(a, 1);
        assert!(b.unwrap_err().is_retryable());

        let mut ctx = RunContext::new("r", 2, Box::new(journal.clone()));
        let a: u32 = ctx.step("a", || async { Ok::<_, RunError>(99) }).await.unwrap();
        let b: u32 = ctx.step("b", || async { Ok::<_, RunError>(2) }).await.unwrap();
        assert_eq!((a, b), (1, 2), "step a returns its journaled output");
        assert_eq!(journal.starts(), ["a", "b", "b"]);
    }

    #[tokio::test]
    async fn a_renamed_step_is_a_permanent_error() {
        let journal = MemoryJournal::default();
        let mut ctx = RunContext::new("r", 1, Box::new(journal.clone()));
        let _: u32 = ctx.step("a", || async { Ok::<_, RunError>(1) }).await.unwrap();
        let mut ctx = RunContext::new("r", 2, Box::new(journal));
        let err = ctx.step("renamed", || async { Ok::<u32, RunError>(1) }).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent);
        assert!(err.message.contains("not deterministic"), "{}", err.message);
    }

    #[test]
    fn kinds_have_stable_names() {
        let after = Duration::from_secs(30);
        let throttled = RunError::throttled("budget spent", after);
        assert_eq!(throttled.kind, ErrorKind::Throttled { after });
        assert!(throttled.is_retryable(), "a throttled run is tried again");
        let names: Vec<_> = [
            RunError::retryable("x"),
            RunError::retry_after("x", after),
            RunError::permanent("x"),
            throttled,
        ]
        .iter()
        .map(RunError::kind_name)
        .collect();
        assert_eq!(names, ["retryable", "retryable", "permanent", "throttled"]);
    }
}
