//! [`StepJournal`] over the engine's [`Journal`]: how a run's steps reach the journal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use workflows::{RunError, StepJournal, StoredStep};

use crate::journal::{Durability, ErrorRecord, Journal, JournalError, StepRecord, StepStatus};

pub(crate) struct JournalSteps {
    journal: Arc<dyn Journal>,
    run_id: String,
    /// Steps this attempt started, to update without reading them back.
    current: Mutex<HashMap<u32, StepRecord>>,
}

impl JournalSteps {
    pub(crate) fn new(journal: Arc<dyn Journal>, run_id: String) -> Self {
        Self { journal, run_id, current: Mutex::new(HashMap::new()) }
    }

    fn take(&self, index: u32, name: &str) -> StepRecord {
        let started = self.current.lock().expect("step cache lock").remove(&index);
        started.unwrap_or_else(|| StepRecord {
            run_id: self.run_id.clone(),
            index,
            name: name.to_owned(),
            status: StepStatus::Running,
            attempts: 1,
            output: None,
            error: None,
            started_at: Utc::now(),
            finished_at: None,
            duration_ms: None,
        })
    }

    fn finish(step: &mut StepRecord) {
        let now = Utc::now();
        step.finished_at = Some(now);
        step.duration_ms = u64::try_from((now - step.started_at).num_milliseconds()).ok();
    }
}

fn journal_error(e: JournalError) -> RunError {
    RunError::retryable(format!("journal: {e}"))
}

#[async_trait]
impl StepJournal for JournalSteps {
    async fn finished(&self, index: u32) -> Result<Option<StoredStep>, RunError> {
        let step = self.journal.step(&self.run_id, index).await.map_err(journal_error)?;
        Ok(step.filter(|s| s.status == StepStatus::Succeeded).map(|s| StoredStep {
            name: s.name,
            output: s.output.unwrap_or(serde_json::Value::Null),
        }))
    }

    /// Not flushed: a start only informs (attempt counts, timings); the step's completion or
    /// the run's next flushed write makes it durable.
    async fn start(&self, index: u32, name: &str) -> Result<(), RunError> {
        let previous = self.journal.step(&self.run_id, index).await.map_err(journal_error)?;
        let step = StepRecord {
            run_id: self.run_id.clone(),
            index,
            name: name.to_owned(),
            status: StepStatus::Running,
            attempts: previous.map_or(1, |p| p.attempts + 1),
            output: None,
            error: None,
            started_at: Utc::now(),
            finished_at: None,
            duration_ms: None,
        };
        self.journal.put_step(&step, Durability::Lazy).await.map_err(journal_error)?;
        self.current.lock().expect("step cache lock").insert(index, step);
        Ok(())
    }

    async fn complete(
        &self,
        index: u32,
        name: &str,
        output: &serde_json::Value,
    ) -> Result<(), RunError> {
        let mut step = self.take(index, name);
        step.status = StepStatus::Succeeded;
        step.output = Some(output.clone());
        Self::finish(&mut step);
        self.journal.put_step(&step, Durability::Flush).await.map_err(journal_error)
    }

    async fn fail(&self, index: u32, name: &str, error: &RunError) -> Result<(), RunError> {
        let mut step = self.take(index, name);
        step.status = StepStatus::Failed;
        step.error =
            Some(ErrorRecord { kind: error.kind_name().into(), message: error.message.clone() });
        Self::finish(&mut step);
        self.journal.put_step(&step, Durability::Lazy).await.map_err(journal_error)
    }
}
