//! The embedded journal on sled, in the engine's data dir.
//!
//! Trees: `runs` (run id → JSON), `steps` (run id, NUL, big-endian index → JSON),
//! `runs_by_created` (big-endian creation millis, run id → run id) for newest-first listing and
//! retention, and `meta` (what the journal has checked about itself). Writes are made durable by
//! a group commit: concurrent writers share one fsync.
//!
//! # Guarantees
//! A run's record and its `runs_by_created` entry are written in one sled transaction, and a
//! purge removes a run, its index entry and its steps in one transaction: after a crash a run is
//! either listed and swept, or absent.
//!
//! Journals written before that held may hold a run without its index entry (it could be shown
//! but was never listed nor swept). Opening a journal without the `index-checked` mark repairs
//! the index in one pass over the runs (bounded: each run decoded once, constant memory; about
//! a second per 100,000 runs), then sets the mark, so every later open costs one read.
//! [`SledJournal::repair_index`] runs the same pass on demand.

use std::sync::Arc;

use ::sled::Transactional;
use ::sled::transaction::{ConflictableTransactionError, TransactionError};
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicU64, Ordering};

use super::retention::PurgePolicy;
use super::{Durability, Journal, JournalError, RunFilter, RunRecord, StepRecord};

const DEFAULT_LIST_LIMIT: usize = 100;
/// Set in `meta` once the by-time index is known to match the runs.
const INDEX_CHECKED: &[u8] = b"index-checked";

/// What [`SledJournal::repair_index`] fixed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexRepair {
    /// Runs that had no index entry and got one.
    pub indexed: usize,
    /// Index entries naming no run (or the wrong time) that were removed.
    pub removed: usize,
}

#[derive(Clone)]
pub struct SledJournal {
    db: ::sled::Db,
    runs: ::sled::Tree,
    steps: ::sled::Tree,
    by_created: ::sled::Tree,
    meta: ::sled::Tree,
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

    /// A journal on an already open database (shared with other stores of the engine). A
    /// journal never checked is repaired first (see the module's guarantees).
    ///
    /// # Errors
    /// The trees cannot be opened, or a run record is corrupt.
    pub fn with_db(db: ::sled::Db) -> Result<Self, JournalError> {
        let journal = Self {
            runs: db.open_tree("journal_runs")?,
            steps: db.open_tree("journal_steps")?,
            by_created: db.open_tree("journal_runs_by_created")?,
            meta: db.open_tree("journal_meta")?,
            db,
            commit: Arc::default(),
        };
        if !journal.meta.contains_key(INDEX_CHECKED)? {
            let repair = journal.repair_index()?;
            if repair != IndexRepair::default() {
                tracing::warn!(
                    indexed = repair.indexed,
                    removed = repair.removed,
                    "repaired the journal's by-time index"
                );
            }
            journal.meta.insert(INDEX_CHECKED, &[1u8])?;
            journal.db.flush()?;
        }
        Ok(journal)
    }

    /// Makes the by-time index match the runs: indexes every run without an entry and removes
    /// entries that name no run. One pass over each tree; each run is decoded once.
    ///
    /// # Errors
    /// The storage failed or a run record is corrupt.
    pub fn repair_index(&self) -> Result<IndexRepair, JournalError> {
        let mut repair = IndexRepair::default();
        for entry in self.runs.iter() {
            let (id, bytes) = entry?;
            let run: RunRecord = decode(&id, &bytes)?;
            if !self.by_created.contains_key(created_key(&run))? {
                self.by_created.insert(created_key(&run), id)?;
                repair.indexed += 1;
            }
        }
        for entry in self.by_created.iter() {
            let (key, id) = entry?;
            let matches = match self.runs.get(&id)? {
                Some(bytes) => created_key(&decode::<RunRecord>(&id, &bytes)?) == *key,
                None => false,
            };
            if !matches {
                self.by_created.remove(key)?;
                repair.removed += 1;
            }
        }
        Ok(repair)
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

fn storage_error(e: TransactionError<()>) -> JournalError {
    match e {
        TransactionError::Storage(e) => JournalError::Storage(e),
        TransactionError::Abort(()) => unreachable!("journal transactions never abort"),
    }
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
        let record = encode(run);
        let index_key = created_key(run);
        (&self.runs, &self.by_created)
            .transaction(|(runs, by_created)| {
                if runs.insert(run.id.as_bytes(), record.as_slice())?.is_none() {
                    by_created.insert(index_key.as_slice(), run.id.as_bytes())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(storage_error)?;
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

    async fn purge_finished(&self, policy: &PurgePolicy) -> Result<usize, JournalError> {
        let created_before = policy.created_before();
        let mut purged = 0;
        for entry in self.by_created.iter() {
            let (index_key, id) = entry?;
            let Some(bytes) = self.runs.get(&id)? else {
                self.by_created.remove(index_key)?;
                continue;
            };
            let run: RunRecord = decode(&id, &bytes)?;
            if run.created_at >= created_before {
                break;
            }
            if !policy.may_purge(&run) {
                continue;
            }
            let steps: Vec<_> =
                self.steps.scan_prefix(step_prefix(&run.id)).keys().collect::<Result<_, _>>()?;
            (&self.runs, &self.by_created, &self.steps)
                .transaction(|(runs, by_created, step_tree)| {
                    runs.remove(&id)?;
                    by_created.remove(&index_key)?;
                    for step in &steps {
                        step_tree.remove(step)?;
                    }
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .map_err(storage_error)?;
            purged += 1;
        }
        self.durable().await?;
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{RunStatus, StepStatus, TriggerRecord};
    use chrono::{DateTime, Utc};

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

        let purged = journal.purge_finished(&purge_all_finished(Utc::now())).await.unwrap();
        assert_eq!(purged, 1, "only the finished run is purged");
        assert!(journal.run("a").await.unwrap().is_none());
        assert_eq!(journal.steps("b").await.unwrap().len(), 2);
    }

    fn purge_all_finished(before: DateTime<Utc>) -> PurgePolicy {
        PurgePolicy {
            succeeded_before: before,
            failed_before: before,
            dlq_first_sequence: Some(u64::MAX),
        }
    }

    /// A journal written before runs and their index entries were written atomically, with a
    /// crash between the two: the run is repaired into the index when the journal opens.
    #[tokio::test]
    async fn a_run_missing_from_the_index_is_repaired_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Utc::now() - chrono::Duration::days(60);
        {
            let db = ::sled::open(dir.path()).unwrap();
            let runs = db.open_tree("journal_runs").unwrap();
            let by_created = db.open_tree("journal_runs_by_created").unwrap();
            let lost = run("lost", "ping", t0, RunStatus::Succeeded);
            runs.insert("lost", encode(&lost)).unwrap(); // the crash came before its index entry
            let listed = run("listed", "ping", t0, RunStatus::Running);
            runs.insert("listed", encode(&listed)).unwrap();
            by_created.insert(created_key(&listed), "listed").unwrap();
            by_created
                .insert(created_key(&run("gone", "ping", t0, RunStatus::Failed)), "gone")
                .unwrap();
            db.flush().unwrap();
        }
        let journal = SledJournal::open(dir.path()).unwrap();
        assert!(journal.meta.contains_key(INDEX_CHECKED).unwrap());
        let all = journal.list_runs(&RunFilter::default()).await.unwrap();
        let mut ids: Vec<_> = all.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["listed", "lost"], "the lost run is listed again");
        assert_eq!(journal.by_created.len(), 2, "the entry naming no run is gone");
        let purged = journal.purge_finished(&purge_all_finished(Utc::now())).await.unwrap();
        assert_eq!(purged, 1, "and swept");
        assert!(journal.run("lost").await.unwrap().is_none());
        assert_eq!(journal.repair_index().unwrap(), IndexRepair::default());
    }

    #[tokio::test]
    async fn failed_runs_stay_while_their_dead_letter_lives() {
        let dir = tempfile::tempdir().unwrap();
        let journal = SledJournal::open(dir.path()).unwrap();
        let now = Utc::now();
        let days = |n| now - chrono::Duration::days(n);
        let mut lettered = run("lettered", "ping", days(40), RunStatus::Failed);
        lettered.dlq_sequence = Some(7);
        let mut young_failure = run("young-failure", "ping", days(10), RunStatus::Failed);
        young_failure.dlq_sequence = Some(3);
        for r in [
            lettered,
            young_failure,
            run("old-failure", "ping", days(40), RunStatus::Failed),
            run("old-success", "ping", days(10), RunStatus::Succeeded),
            run("new-success", "ping", days(1), RunStatus::Succeeded),
            run("old-running", "ping", days(40), RunStatus::Running),
        ] {
            journal.put_run(&r, Durability::Flush).await.unwrap();
        }
        let runtime = crate::config::RuntimeConfig::default(); // 7 days, failed runs 30
        let ids = |runs: Vec<RunRecord>| {
            let mut ids: Vec<_> = runs.into_iter().map(|r| r.id).collect();
            ids.sort_unstable();
            ids
        };

        // The DLQ still holds sequence 7 (its first is 5), or the DLQ cannot be asked.
        for first in [Some(5), None] {
            let policy = PurgePolicy::at(now, &runtime, first);
            journal.purge_finished(&policy).await.unwrap();
            let left = ids(journal.list_runs(&RunFilter::default()).await.unwrap());
            assert_eq!(left, ["lettered", "new-success", "old-running", "young-failure"]);
        }
        // Letter 7 aged out of the DLQ: its run goes too.
        let purged = journal.purge_finished(&PurgePolicy::at(now, &runtime, Some(8))).await;
        assert_eq!(purged.unwrap(), 1);
        let left = ids(journal.list_runs(&RunFilter::default()).await.unwrap());
        assert_eq!(left, ["new-success", "old-running", "young-failure"]);
    }
}
