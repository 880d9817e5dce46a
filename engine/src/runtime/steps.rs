//! [`StepJournal`] over the engine's [`Journal`]: how a run's steps reach the journal.
//!
//! The run and its steps are one journal record, shared with the runner for the attempt: a step's
//! start is kept in memory; its end rewrites the record, flushed when the step succeeded (the next
//! step must not start before), lazily when it failed (the run's retry or failure record that
//! follows is flushed).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::Mutex;
use workflows::{RunError, StepJournal, StoredStep};

use crate::journal::{
    Durability, ErrorRecord, Journal, JournalError, JournaledRun, StepRecord, StepStatus,
};

pub(crate) struct JournalSteps {
    journal: Arc<dyn Journal>,
    workflow: &'static str,
    /// The run and its steps as journaled, updated as this attempt goes.
    run: Arc<Mutex<JournaledRun>>,
}

impl JournalSteps {
    pub(crate) fn new(
        journal: Arc<dyn Journal>,
        workflow: &'static str,
        run: Arc<Mutex<JournaledRun>>,
    ) -> Self {
        Self { journal, workflow, run }
    }

    /// Ends the step at `index` with `status`, `output` and `error`, and writes the record.
    async fn end(
        &self,
        index: u32,
        name: &str,
        end: impl FnOnce(&mut StepRecord),
        durability: Durability,
    ) -> Result<(), JournalError> {
        let mut journaled = self.run.lock().await;
        let now = Utc::now();
        let step = step_mut(&mut journaled, index, name);
        step.finished_at = Some(now);
        step.duration_ms = u64::try_from((now - step.started_at).num_milliseconds()).ok();
        end(step);
        self.journal.put(&journaled, durability).await
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
        let journaled = self.run.lock().await;
        Ok(journaled
            .steps
            .iter()
            .find(|s| s.index == index && s.status == StepStatus::Succeeded)
            .map(|s| StoredStep {
                name: s.name.clone(),
                output: s.output.clone().unwrap_or_default(),
            }))
    }

    async fn start(&self, index: u32, name: &str) -> Result<(), RunError> {
        let mut journaled = self.run.lock().await;
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
        let succeeded = |step: &mut StepRecord| {
            step.status = StepStatus::Succeeded;
            step.output = Some(output.clone());
            step.error = None;
        };
        self.end(index, name, succeeded, Durability::Flush).await.map_err(journal_error)?;
        crate::fault::after_step(self.workflow, name);
        Ok(())
    }

    async fn fail(&self, index: u32, name: &str, error: &RunError) -> Result<(), RunError> {
        let failed = |step: &mut StepRecord| {
            step.status = StepStatus::Failed;
            step.error = Some(ErrorRecord {
                kind: error.kind_name().into(),
                message: error.message.clone(),
            });
        };
        self.end(index, name, failed, Durability::Lazy).await.map_err(journal_error)
    }
}
