//! [`StepJournal`] over the engine's [`Journal`]: how a run's steps reach the journal.
//!
//! The run and its steps are one journal record, shared with the runner for the attempt. A step's
//! start is kept in memory. A step's success is written behind: the record is written and flushed
//! when the next step starts, or with the run's outcome, whichever comes first, so each step is
//! durable before the next one starts (the contract) and a run of n steps makes n + 1 durable
//! writes, not n + 2. A step's failure is written at once, lazily (the run's retry or failure
//! record that follows is flushed).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::Mutex;
use workflows::{RunError, StepJournal, StoredStep};

use crate::journal::{
    Durability, ErrorRecord, Journal, JournalError, JournaledRun, StepRecord, StepStatus,
};

/// An attempt's run and steps, as the steps and then the runner update them.
#[derive(Clone)]
pub(crate) struct Attempt {
    pub journaled: JournaledRun,
    /// A step that succeeded and is not durable yet: written with the next write.
    unflushed: Option<String>,
}

impl Attempt {
    pub(crate) fn new(journaled: JournaledRun) -> Self {
        Self { journaled, unflushed: None }
    }

    /// Called once a flushed write of the record returned: what was unflushed is durable.
    pub(crate) fn flushed(&mut self, workflow: &str) {
        if let Some(step) = self.unflushed.take() {
            crate::fault::after_step(workflow, &step);
        }
    }

    /// The run and steps, and the name of a step whose success the next flushed write makes
    /// durable (for [`crate::fault::after_step`]).
    pub(crate) fn into_parts(self) -> (JournaledRun, Option<String>) {
        (self.journaled, self.unflushed)
    }
}

pub(crate) struct JournalSteps {
    journal: Arc<dyn Journal>,
    workflow: &'static str,
    /// The run and its steps as journaled, updated as this attempt goes.
    attempt: Arc<Mutex<Attempt>>,
}

impl JournalSteps {
    pub(crate) fn new(
        journal: Arc<dyn Journal>,
        workflow: &'static str,
        attempt: Arc<Mutex<Attempt>>,
    ) -> Self {
        Self { journal, workflow, attempt }
    }

    /// Ends the step at `index`: sets its end time, then `end` sets the rest.
    fn end(attempt: &mut Attempt, index: u32, name: &str, end: impl FnOnce(&mut StepRecord)) {
        let now = Utc::now();
        let step = step_mut(&mut attempt.journaled, index, name);
        step.finished_at = Some(now);
        step.duration_ms = u64::try_from((now - step.started_at).num_milliseconds()).ok();
        end(step);
    }
}

/// The step at `index`, added (started now) if the attempt has not started it.
fn step_mut<'a>(journaled: &'a mut JournaledRun, index: u32, name: &str) -> &'a mut StepRecord {
    let at = match journaled.steps.binary_search_by_key(&index, |s| s.index) {
        Ok(at) => at,
        Err(at) => {
            let step = new_step(&journaled.run.id, index, name, 1);
            journaled.steps.insert(at, step);
            at
        }
    };
    &mut journaled.steps[at]
}

fn new_step(run_id: &str, index: u32, name: &str, attempts: u32) -> StepRecord {
    StepRecord {
        run_id: run_id.to_owned(),
        index,
        name: name.to_owned(),
        status: StepStatus::Running,
        attempts,
        output: None,
        error: None,
        started_at: Utc::now(),
        finished_at: None,
        duration_ms: None,
    }
}

fn journal_error(e: JournalError) -> RunError {
    RunError::retryable(format!("journal: {e}"))
}

#[async_trait]
impl StepJournal for JournalSteps {
    async fn finished(&self, index: u32) -> Result<Option<StoredStep>, RunError> {
        let attempt = self.attempt.lock().await;
        Ok(attempt
            .journaled
            .steps
            .iter()
            .find(|s| s.index == index && s.status == StepStatus::Succeeded)
            .map(|s| StoredStep {
                name: s.name.clone(),
                output: s.output.clone().unwrap_or_default(),
            }))
    }

    async fn start(&self, index: u32, name: &str) -> Result<(), RunError> {
        let mut attempt = self.attempt.lock().await;
        if attempt.unflushed.is_some() {
            // The previous step's success, durable before this step starts.
            self.journal.put(&attempt.journaled, Durability::Flush).await.map_err(journal_error)?;
            attempt.flushed(self.workflow);
        }
        let journaled = &mut attempt.journaled;
        let run_id = journaled.run.id.clone();
        match journaled.steps.binary_search_by_key(&index, |s| s.index) {
            Ok(at) => {
                let attempts = journaled.steps[at].attempts + 1;
                journaled.steps[at] = new_step(&run_id, index, name, attempts);
            }
            Err(at) => journaled.steps.insert(at, new_step(&run_id, index, name, 1)),
        }
        Ok(())
    }

    async fn complete(
        &self,
        index: u32,
        name: &str,
        output: &serde_json::Value,
    ) -> Result<(), RunError> {
        let mut attempt = self.attempt.lock().await;
        Self::end(&mut attempt, index, name, |step| {
            step.status = StepStatus::Succeeded;
            step.output = Some(output.clone());
            step.error = None;
        });
        attempt.unflushed = Some(name.to_owned());
        Ok(())
    }

    async fn fail(&self, index: u32, name: &str, error: &RunError) -> Result<(), RunError> {
        let mut attempt = self.attempt.lock().await;
        Self::end(&mut attempt, index, name, |step| {
            step.status = StepStatus::Failed;
            step.error = Some(ErrorRecord {
                kind: error.kind_name().into(),
                message: error.message.clone(),
            });
        });
        self.journal.put(&attempt.journaled, Durability::Lazy).await.map_err(journal_error)
    }
}
