//! The embedded journal on sled, in the engine's data dir.
//!
//! Trees: `runs` (run id → JSON), `steps` (run id, NUL, big-endian index → JSON) and
//! `runs_by_created` (big-endian creation millis, run id → run id) for newest-first listing and
//! retention. Writes are made durable by a group commit: concurrent writers share one fsync.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Durability, Journal, JournalError, RunFilter, RunRecord, StepRecord};

const DEFAULT_LIST_LIMIT: usize = 100;

#[derive(Clone)]
pub struct SledJournal {
    db: ::sled::Db,
    runs: ::sled::Tree,
    steps: ::sled::Tree,
    by_created: ::sled::Tree,
    commit: Arc<GroupCommit>,
}

/// Group commit: a writer takes a ticket after its write; whoever holds the flush lock flushes
/// everything ticketed so far, so concurrent writers share one fsync.
#[derive(Default)]
struct GroupCommit {
    ticketed: AtomicU64,
    flushed: AtomicU64,
    lock: tokio::sync::Mutex<()>,
}

impl SledJournal {
    /// Opens (or creates) the journal in `dir`. sled allows one process per database: a second
    /// engine on the same data dir gets an error here.
    ///
    /// # Errors
    /// The directory cannot be opened or is locked by another process.
    pub fn open(dir: &std::path::Path) -> Result<Self, JournalError> {
        let db = ::sled::Config::new().path(dir).mode(::sled::Mode::HighThroughput).open()?;
        Self::with_db(db)
    }

    /// A journal on an already open database (shared with other stores of the engine).
    ///
    /// # Errors
    /// The trees cannot be opened.
    pub fn with_db(db: ::sled::Db) -> Result<Self, JournalError> {
        Ok(Self {
            runs: db.open_tree("journal_runs")?,
            steps: db.open_tree("journal_steps")?,
            by_created: db.open_tree("journal_runs_by_created")?,
            db,
            commit: Arc::default(),
        })
    }

    pub fn db(&self) -> &::sled::Db {
        &self.db
    }

    async fn finish_write(&self, durability: Durability) -> Result<(), JournalError> {
        match durability {
            Durability::Flush => self.durable().await,
            Durability::Lazy => Ok(()),
        }
    }

    /// Returns once everything this task wrote before calling is on disk.
    async fn durable(&self) -> Result<(), JournalError> {
        let ticket = self.commit.ticketed.fetch_add(1, Ordering::SeqCst) + 1;
        let _flushing = self.commit.lock.lock().await;
        if self.commit.flushed.load(Ordering::SeqCst) >= ticket {
            return Ok(()); // a flush that started after our write has finished
        }
        let covered = self.commit.ticketed.load(Ordering::SeqCst);
        self.db.flush_async().await?;
        self.commit.flushed.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }
}

fn step_key(run_id: &str, index: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(run_id.len() + 5);
    key.extend_from_slice(run_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn step_prefix(run_id: &str) -> Vec<u8> {
    let mut key = run_id.as_bytes().to_vec();
    key.push(0);
    key
}

fn created_key(run: &RunRecord) -> Vec<u8> {
    let millis = u64::try_from(run.created_at.timestamp_millis()).unwrap_or(0);
    let mut key = millis.to_be_bytes().to_vec();
    key.extend_from_slice(run.id.as_bytes());
    key
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("journal records serialize to JSON")
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, JournalError> {
    serde_json::from_slice(bytes).map_err(|source| JournalError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

#[async_trait]
impl Journal for SledJournal {
    async fn run(&self, id: &str) -> Result<Option<RunRecord>, JournalError> {
        self.runs.get(id)?.map(|bytes| decode(id.as_bytes(), &bytes)).transpose()
    }

    async fn put_run(&self, run: &RunRecord, durability: Durability) -> Result<(), JournalError> {
        let previous = self.runs.insert(run.id.as_bytes(), encode(run))?;
        if previous.is_none() {
            self.by_created.insert(created_key(run), run.id.as_bytes())?;
        }
        self.finish_write(durability).await
    }

    async fn step(&self, run_id: &str, index: u32) -> Result<Option<StepRecord>, JournalError> {
        let key = step_key(run_id, index);
        self.steps.get(&key)?.map(|bytes| decode(&key, &bytes)).transpose()
    }

    async fn put_step(
        &self,
        step: &StepRecord,
        durability: Durability,
    ) -> Result<(), JournalError> {
        self.steps.insert(step_key(&step.run_id, step.index), encode(step))?;
        self.finish_write(durability).await
    }

    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, JournalError> {
        self.steps
            .scan_prefix(step_prefix(run_id))
            .map(|entry| {
                let (key, bytes) = entry?;
                decode(&key, &bytes)
            })
            .collect()
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, JournalError> {
        let limit = filter.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        let mut runs = Vec::new();
        for entry in self.by_created.iter().rev() {
            if runs.len() >= limit {
                break;
            }
            let (_, id) = entry?;
            let Some(bytes) = self.runs.get(&id)? else { continue };
            let run: RunRecord = decode(&id, &bytes)?;
            if filter.matches(&run) {
                runs.push(run);
            }
        }
        Ok(runs)
    }

    async fn purge_finished(&self, before: DateTime<Utc>) -> Result<usize, JournalError> {
        let mut purged = 0;
        for entry in self.by_created.iter() {
            let (index_key, id) = entry?;
            let Some(bytes) = self.runs.get(&id)? else {
                self.by_created.remove(index_key)?;
                continue;
            };
            let run: RunRecord = decode(&id, &bytes)?;
            if run.created_at >= before {
                break;
            }
            if run.finished_at.is_some_and(|t| t < before) && run.status.is_finished() {
                for step in self.steps.scan_prefix(step_prefix(&run.id)).keys() {
                    self.steps.remove(step?)?;
                }
                self.runs.remove(&id)?;
                self.by_created.remove(index_key)?;
                purged += 1;
            }
        }
        self.durable().await?;
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{RunStatus, StepStatus, TriggerRecord};

    fn run(id: &str, workflow: &str, created: DateTime<Utc>, status: RunStatus) -> RunRecord {
        RunRecord {
            id: id.into(),
            workflow: workflow.into(),
            key: format!("k-{id}"),
            status,
            attempts: 1,
            throttled: 0,
            redrives: 0,
            trigger: TriggerRecord {
                event: serde_json::json!({}),
                nats_subject: "s".into(),
                stream_sequence: 1,
            },
            created_at: created,
            updated_at: created,
            finished_at: status.is_finished().then_some(created),
            output: None,
            error: None,
            dlq_sequence: None,
            history: vec![],
        }
    }

    #[tokio::test]
    async fn runs_and_steps_survive_reopen_and_list_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Utc::now() - chrono::Duration::hours(2);
        {
            let journal = SledJournal::open(dir.path()).unwrap();
            journal
                .put_run(&run("a", "ping", t0, RunStatus::Succeeded), Durability::Flush)
                .await
                .unwrap();
            let b = run("b", "sync", t0 + chrono::Duration::minutes(1), RunStatus::Running);
            journal.put_run(&b, Durability::Flush).await.unwrap();
            journal.put_run(&b, Durability::Flush).await.unwrap(); // an update does not duplicate the index
            for index in [1, 0] {
                journal
                    .put_step(
                        &StepRecord {
                            run_id: "b".into(),
                            index,
                            name: format!("s{index}"),
                            status: StepStatus::Succeeded,
                            attempts: 1,
                            output: Some(serde_json::json!(index)),
                            error: None,
                            started_at: t0,
                            finished_at: Some(t0),
                            duration_ms: Some(0),
                        },
                        Durability::Flush,
                    )
                    .await
                    .unwrap();
            }
        }
        let journal = SledJournal::open(dir.path()).unwrap();
        let all = journal.list_runs(&RunFilter::default()).await.unwrap();
        assert_eq!(all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        let filter = RunFilter { status: Some(RunStatus::Succeeded), ..Default::default() };
        assert_eq!(journal.list_runs(&filter).await.unwrap()[0].id, "a");
        let steps = journal.steps("b").await.unwrap();
        assert_eq!(steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["s0", "s1"]);

        let purged = journal.purge_finished(Utc::now()).await.unwrap();
        assert_eq!(purged, 1, "only the finished run is purged");
        assert!(journal.run("a").await.unwrap().is_none());
        assert_eq!(journal.steps("b").await.unwrap().len(), 2);
    }
}
