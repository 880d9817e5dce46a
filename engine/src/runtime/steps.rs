//! [`StepJournal`] over the engine's [`Journal`]: how a run's steps reach the journal.
//!
//! The run's journaled steps are read once per attempt; a step is written when it ends: flushed
//! when it succeeds (the next step must not start before), lazily when it fails (the run's retry
//! or failure record that follows is flushed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use workflows::{RunError, StepJournal, StoredStep};

use crate::journal::{Durability, ErrorRecord, Journal, JournalError, StepRecord, StepStatus};

pub(crate) struct JournalSteps {
    journal: Arc<dyn Journal>,
    run_id: String,
    workflow: &'static str,
    /// The run's steps as journaled, updated as this attempt goes.
    steps: Mutex<HashMap<u32, StepRecord>>,
}

impl JournalSteps {
    /// `journaled`: the run's steps from earlier attempts (empty for a new run).
    pub(crate) fn new(
        journal: Arc<dyn Journal>,
        run_id: String,
        workflow: &'static str,
        journaled: Vec<StepRecord>,
    ) -> Self {
        let steps = journaled.into_iter().map(|step| (step.index, step)).collect();
        Self { journal, run_id, workflow, steps: Mutex::new(steps) }
    }

    fn steps(&self) -> std::sync::MutexGuard<'_, HashMap<u32, StepRecord>> {
        self.steps.lock().expect("step map lock")
    }

    /// Ends the step at `index` with `status` and returns the record to write.
    fn end(&self, index: u32, name: &str, status: StepStatus) -> StepRecord {
        let mut steps = self.steps();
        let step = steps.entry(index).or_insert_with(|| new_step(&self.run_id, index, name, 1));
        let now = Utc::now();
        step.status = status;
        step.finished_at = Some(now);
        step.duration_ms = u64::try_from((now - step.started_at).num_milliseconds()).ok();
        step.clone()
    }
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
        Ok(self.steps().get(&index).filter(|s| s.status == StepStatus::Succeeded).map(|s| {
            StoredStep { name: s.name.clone(), output: s.output.clone().unwrap_or_default() }
        }))
    }

    async fn start(&self, index: u32, name: &str) -> Result<(), RunError> {
        let mut steps = self.steps();
        let attempts = steps.get(&index).map_or(1, |previous| previous.attempts + 1);
        steps.insert(index, new_step(&self.run_id, index, name, attempts));
        Ok(())
    }

    async fn complete(
        &self,
        index: u32,
        name: &str,
        output: &serde_json::Value,
    ) -> Result<(), RunError> {
        let mut step = self.end(index, name, StepStatus::Succeeded);
        step.output = Some(output.clone());
        self.steps().insert(index, step.clone());
        self.journal.put_step(&step, Durability::Flush).await.map_err(journal_error)?;
        crate::fault::after_step(self.workflow, name);
        Ok(())
    }

    async fn fail(&self, index: u32, name: &str, error: &RunError) -> Result<(), RunError> {
        let mut step = self.end(index, name, StepStatus::Failed);
        step.error =
            Some(ErrorRecord { kind: error.kind_name().into(), message: error.message.clone() });
        self.steps().insert(index, step.clone());
        self.journal.put_step(&step, Durability::Lazy).await.map_err(journal_error)
    }
}
