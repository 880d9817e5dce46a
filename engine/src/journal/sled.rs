//! The embedded journal on sled, in the engine's data dir.
//!
//! Trees: `runs` (run id → JSON), `steps` (run id, NUL, big-endian index → JSON), `meta` (what
//! the journal has checked about itself), and four indexes whose keys end in a run's list
//! position (big-endian creation millis, run id), so that each lists newest first by iterating
//! backwards:
//! - `runs_by_created`: position → run id; every run (listing, retention);
//! - `runs_by_workflow`: u32 length, workflow, position → ();
//! - `runs_by_status`: one status byte, position → ();
//! - `runs_by_key`: u32 length, key, position → ().
//!
//! A filtered list reads the index of each field it names, newest first from its cursor, keeps
//! the positions every one of them holds (a merge of sorted streams: nothing is decoded), and
//! decodes only the runs it answers; it stops at the limit. Writes are made durable by a group
//! commit: concurrent writers share one fsync.
//!
//! # Guarantees
//! A run's record and its four index entries are written in one sled transaction (a status
//! change moves its `runs_by_status` entry in it), and a purge removes a run, its index entries
//! and its steps in one transaction: after a crash a run is either listed and swept, or absent.
//!
//! Journals written before that held (or before the workflow, status and key indexes existed)
//! may hold a run without its index entries. Opening a journal without the `indexes-checked-v2`
//! mark repairs the indexes in one pass over the runs and one over each index (bounded: constant
//! memory, each run decoded once plus a partial decode per index entry; a few seconds per
//! 100,000 runs), then sets the mark, so every later open costs one read.
//! [`SledJournal::repair_index`] runs the same pass on demand.
//!
//! Scans (lists, a run's steps, the sweep, the repair) run on tokio's blocking pool; point reads
//! and writes of one record stay on the caller's task (one key, no scan: microseconds).

use std::sync::Arc;

use ::sled::Transactional;
use ::sled::transaction::{ConflictableTransactionError, TransactionError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

use super::retention::PurgePolicy;
use super::{
    Durability, Journal, JournalError, RunFilter, RunPage, RunRecord, RunStatus, StepRecord,
    cursor_position, list_position,
};

/// Set in `meta` once the indexes are known to match the runs.
const INDEXES_CHECKED: &[u8] = b"indexes-checked-v2";

/// What [`SledJournal::repair_index`] fixed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexRepair {
    /// Index entries that were missing and were added.
    pub indexed: usize,
    /// Index entries naming no run (or not the run's current fields) that were removed.
    pub removed: usize,
}

#[derive(Clone)]
pub struct SledJournal {
    db: ::sled::Db,
    runs: ::sled::Tree,
    steps: ::sled::Tree,
    by_created: ::sled::Tree,
    by_workflow: ::sled::Tree,
    by_status: ::sled::Tree,
    by_key: ::sled::Tree,
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

/// The fields of a run its index entries derive from: decoded alone where the whole record is
/// not needed (serde skips the rest).
#[derive(Deserialize)]
struct Indexed {
    id: String,
    workflow: String,
    key: String,
    status: RunStatus,
    created_at: DateTime<Utc>,
}

impl From<&RunRecord> for Indexed {
    fn from(run: &RunRecord) -> Self {
        Self {
            id: run.id.clone(),
            workflow: run.workflow.clone(),
            key: run.key.clone(),
            status: run.status,
            created_at: run.created_at,
        }
    }
}

/// The indexes, each keyed by a prefix naming the indexed value and the run's list position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Index {
    Created,
    Workflow,
    Status,
    Key,
}

impl Index {
    const ALL: [Self; 4] = [Self::Created, Self::Workflow, Self::Status, Self::Key];

    fn tree(self, journal: &SledJournal) -> &::sled::Tree {
        match self {
            Self::Created => &journal.by_created,
            Self::Workflow => &journal.by_workflow,
            Self::Status => &journal.by_status,
            Self::Key => &journal.by_key,
        }
    }

    /// The entry of `run` in this index.
    fn entry(self, run: &Indexed) -> Vec<u8> {
        let position = position(run);
        let mut key = match self {
            Self::Created => Vec::new(),
            Self::Workflow => text_prefix(&run.workflow),
            Self::Status => status_prefix(run.status),
            Self::Key => text_prefix(&run.key),
        };
        key.extend_from_slice(&position);
        key
    }

    /// The run id an entry of this index names, if it is well formed.
    fn run_id(self, entry: &[u8]) -> Option<&[u8]> {
        let prefix = match self {
            Self::Created => 0,
            Self::Status => 1,
            Self::Workflow | Self::Key => {
                let len = u32::from_be_bytes(entry.get(..4)?.try_into().ok()?);
                4 + usize::try_from(len).ok()?
            }
        };
        entry.get(prefix + 8..).filter(|id| !id.is_empty())
    }

    /// What the entry maps to: `runs_by_created` names the run (as journals before the other
    /// indexes did), the others carry it in their key.
    fn value(self, run_id: &[u8]) -> &[u8] {
        match self {
            Self::Created => run_id,
            _ => &[],
        }
    }
}

fn position(run: &Indexed) -> Vec<u8> {
    let millis = u64::try_from(run.created_at.timestamp_millis()).unwrap_or(0);
    let mut position = Vec::with_capacity(8 + run.id.len());
    position.extend_from_slice(&millis.to_be_bytes());
    position.extend_from_slice(run.id.as_bytes());
    position
}

/// Length-prefixed, so that no value is a prefix of another's entries.
fn text_prefix(value: &str) -> Vec<u8> {
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    let mut prefix = Vec::with_capacity(4 + value.len() + 8 + 40);
    prefix.extend_from_slice(&len.to_be_bytes());
    prefix.extend_from_slice(value.as_bytes());
    prefix
}

fn status_prefix(status: RunStatus) -> Vec<u8> {
    vec![match status {
        RunStatus::Running => 0,
        RunStatus::Retrying => 1,
        RunStatus::Succeeded => 2,
        RunStatus::Failed => 3,
    }]
}

/// List positions from one index, under one or more prefixes (their union), newest first.
struct Scan {
    parts: Vec<ScanPart>,
}

struct ScanPart {
    tree: ::sled::Tree,
    prefix: Vec<u8>,
    entries: std::iter::Rev<::sled::Iter>,
    head: Option<Vec<u8>>,
}

/// Entries stepped over one by one before a skip seeks instead (a new range read from the
/// target): a far skip costs one seek, a near one no new iterator.
const STEPS_BEFORE_SEEK: usize = 8;

impl ScanPart {
    /// Drops the positions newer than `target`.
    fn skip_to(&mut self, target: &[u8]) -> Result<(), JournalError> {
        for _ in 0..STEPS_BEFORE_SEEK {
            if self.head.as_deref().is_none_or(|head| head <= target) {
                return Ok(());
            }
            self.advance()?;
        }
        if self.head.as_deref().is_some_and(|head| head > target) {
            let end = [self.prefix.as_slice(), target].concat();
            self.entries = self.tree.range(self.prefix.clone()..=end).rev();
            self.advance()?;
        }
        Ok(())
    }

    fn advance(&mut self) -> Result<(), JournalError> {
        self.head = match self.entries.next().transpose()? {
            Some((key, _)) => Some(key[self.prefix.len()..].to_vec()),
            None => None,
        };
        Ok(())
    }
}

impl Scan {
    /// The positions below `after` under each of `prefixes` in `tree`.
    fn new(
        tree: &::sled::Tree,
        prefixes: Vec<Vec<u8>>,
        after: Option<&[u8]>,
    ) -> Result<Self, JournalError> {
        let mut parts = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            let entries = match after {
                Some(after) => tree.range(prefix.clone()..[prefix.as_slice(), after].concat()),
                None => tree.scan_prefix(&prefix),
            };
            let mut part =
                ScanPart { tree: tree.clone(), prefix, entries: entries.rev(), head: None };
            part.advance()?;
            parts.push(part);
        }
        Ok(Self { parts })
    }

    /// The newest position not yet taken.
    fn peek(&self) -> Option<&[u8]> {
        self.parts.iter().filter_map(|p| p.head.as_deref()).max()
    }

    /// Drops the positions newer than `target`.
    fn skip_to(&mut self, target: &[u8]) -> Result<(), JournalError> {
        for part in &mut self.parts {
            part.skip_to(target)?;
        }
        Ok(())
    }

    /// Takes the newest position.
    fn advance(&mut self) -> Result<(), JournalError> {
        let Some(newest) = self.peek().map(<[u8]>::to_vec) else { return Ok(()) };
        for part in &mut self.parts {
            if part.head.as_deref() == Some(newest.as_slice()) {
                part.advance()?;
            }
        }
        Ok(())
    }
}

/// The newest position every scan holds, taken from each; `None` once one is exhausted. Each
/// step drops the heads newer than the oldest head, which no other scan can still hold (a seek
/// when they are far: a rare value among common ones costs a seek per match, not a walk).
fn next_common(scans: &mut [Scan]) -> Result<Option<Vec<u8>>, JournalError> {
    loop {
        let mut oldest: Option<&[u8]> = None;
        for scan in scans.iter() {
            match scan.peek() {
                None => return Ok(None),
                Some(head) => {
                    if oldest.is_none_or(|o| head < o) {
                        oldest = Some(head);
                    }
                }
            }
        }
        let Some(oldest) = oldest.map(<[u8]>::to_vec) else { return Ok(None) };
        let mut common = true;
        for scan in scans.iter_mut() {
            if scan.peek() != Some(oldest.as_slice()) {
                common = false;
                scan.skip_to(&oldest)?;
            }
        }
        if common {
            for scan in scans.iter_mut() {
                scan.advance()?;
            }
            return Ok(Some(oldest));
        }
    }
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
            by_workflow: db.open_tree("journal_runs_by_workflow")?,
            by_status: db.open_tree("journal_runs_by_status")?,
            by_key: db.open_tree("journal_runs_by_key")?,
            meta: db.open_tree("journal_meta")?,
            db,
            commit: Arc::default(),
        };
        if !journal.meta.contains_key(INDEXES_CHECKED)? {
            let repair = journal.repair_index()?;
            if repair != IndexRepair::default() {
                tracing::warn!(
                    indexed = repair.indexed,
                    removed = repair.removed,
                    "repaired the journal's indexes"
                );
            }
            journal.meta.insert(INDEXES_CHECKED, &[1u8])?;
            journal.db.flush()?;
        }
        Ok(journal)
    }

    /// Makes the indexes match the runs: adds every missing entry of a run and removes entries
    /// that name no run or not its current fields. One pass over the runs (each decoded once)
    /// and one over each index.
    ///
    /// # Errors
    /// The storage failed or a run record is corrupt.
    pub fn repair_index(&self) -> Result<IndexRepair, JournalError> {
        let mut repair = IndexRepair::default();
        for entry in self.runs.iter() {
            let (id, bytes) = entry?;
            let run: Indexed = decode(&id, &bytes)?;
            for index in Index::ALL {
                let key = index.entry(&run);
                if !index.tree(self).contains_key(&key)? {
                    index.tree(self).insert(key, index.value(&id))?;
                    repair.indexed += 1;
                }
            }
        }
        for index in Index::ALL {
            for entry in index.tree(self).iter() {
                let (key, _) = entry?;
                let matches = match index.run_id(&key) {
                    Some(id) => match self.runs.get(id)? {
                        Some(bytes) => index.entry(&decode::<Indexed>(id, &bytes)?) == *key,
                        None => false,
                    },
                    None => false,
                };
                if !matches {
                    index.tree(self).remove(key)?;
                    repair.removed += 1;
                }
            }
        }
        Ok(repair)
    }

    pub fn db(&self) -> &::sled::Db {
        &self.db
    }

    /// The list as it was before the indexes: every run newest first, each decoded and matched
    /// against the filter, until `limit` match. The baseline `engine bench runs` compares the
    /// indexed list with; ignores the cursor.
    ///
    /// # Errors
    /// The storage failed or a run record is corrupt.
    pub fn list_runs_by_scan(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, JournalError> {
        let limit = filter.checked_limit()?;
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

    /// One page through the indexes (see the module's doc).
    ///
    /// # Errors
    /// An invalid limit or cursor; the storage failed or a run record is corrupt.
    pub fn list_page(&self, filter: &RunFilter) -> Result<RunPage, JournalError> {
        let limit = filter.checked_limit()?;
        let after = filter.after.as_deref().map(cursor_position).transpose()?;
        let after = after.as_deref();
        let mut scans = Vec::with_capacity(3);
        if let Some(workflow) = &filter.workflow {
            scans.push(Scan::new(&self.by_workflow, vec![text_prefix(workflow)], after)?);
        }
        match filter.status {
            Some(status) => {
                scans.push(Scan::new(&self.by_status, vec![status_prefix(status)], after)?);
            }
            // Only unfinished runs can be stuck.
            None if filter.stuck_below.is_some() => scans.push(Scan::new(
                &self.by_status,
                vec![status_prefix(RunStatus::Running), status_prefix(RunStatus::Retrying)],
                after,
            )?),
            None => {}
        }
        if let Some(key) = &filter.key {
            scans.push(Scan::new(&self.by_key, vec![text_prefix(key)], after)?);
        }
        if scans.is_empty() {
            scans.push(Scan::new(&self.by_created, vec![Vec::new()], after)?);
        }
        let mut page = RunPage::default();
        while let Some(position) = next_common(&mut scans)? {
            if page.items.len() == limit {
                page.next_cursor = page.items.last().map(super::page_cursor);
                break;
            }
            let Some(id) = position.get(8..) else { continue };
            let Some(bytes) = self.runs.get(id)? else { continue };
            let run: RunRecord = decode(id, &bytes)?;
            // The index names the run's current fields (one transaction); `stuck_below` needs
            // the record.
            if filter.matches(&run) && list_position(&run) == position {
                page.items.push(run);
            }
        }
        Ok(page)
    }

    fn purge_blocking(&self, policy: &PurgePolicy) -> Result<usize, JournalError> {
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
            let indexed = Indexed::from(&run);
            let entries = Index::ALL.map(|index| index.entry(&indexed));
            (
                &self.runs,
                &self.by_created,
                &self.by_workflow,
                &self.by_status,
                &self.by_key,
                &self.steps,
            )
                .transaction(|(runs, by_created, by_workflow, by_status, by_key, step_tree)| {
                    runs.remove(&id)?;
                    by_created.remove(index_key.as_ref())?;
                    for (tree, entry) in
                        [by_created, by_workflow, by_status, by_key].iter().zip(&entries)
                    {
                        tree.remove(entry.as_slice())?;
                    }
                    for step in &steps {
                        step_tree.remove(step)?;
                    }
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .map_err(storage_error)?;
            purged += 1;
        }
        Ok(purged)
    }

    /// Runs `work` on tokio's blocking pool: scans must not hold an async worker.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Self) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let journal = self.clone();
        match tokio::task::spawn_blocking(move || work(&journal)).await {
            Ok(result) => result,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => Err(JournalError::Interrupted(e.to_string())),
            },
        }
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
        let entries = Index::ALL.map(|index| index.entry(&Indexed::from(run)));
        let trees =
            (&self.runs, &self.by_created, &self.by_workflow, &self.by_status, &self.by_key);
        trees
            .transaction(|(runs, by_created, by_workflow, by_status, by_key)| {
                let old = runs.insert(run.id.as_bytes(), record.as_slice())?;
                // The entries of the run as it was: a status change moves its status entry. A
                // previous record that does not decode keeps its entries; the list skips them
                // and the repair removes them.
                let old = old
                    .and_then(|bytes| serde_json::from_slice::<Indexed>(&bytes).ok())
                    .map(|old| Index::ALL.map(|index| index.entry(&old)));
                let indexes = [
                    (Index::Created, by_created),
                    (Index::Workflow, by_workflow),
                    (Index::Status, by_status),
                    (Index::Key, by_key),
                ];
                for (i, (index, tree)) in indexes.into_iter().enumerate() {
                    let old_entry = old.as_ref().map(|old| &old[i]);
                    if old_entry == Some(&entries[i]) {
                        continue;
                    }
                    if let Some(old_entry) = old_entry {
                        tree.remove(old_entry.as_slice())?;
                    }
                    tree.insert(entries[i].as_slice(), index.value(run.id.as_bytes()))?;
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
        let prefix = step_prefix(run_id);
        self.blocking(move |journal| {
            journal
                .steps
                .scan_prefix(prefix)
                .map(|entry| {
                    let (key, bytes) = entry?;
                    decode(&key, &bytes)
                })
                .collect()
        })
        .await
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<RunPage, JournalError> {
        let filter = filter.clone();
        self.blocking(move |journal| journal.list_page(&filter)).await
    }

    async fn purge_finished(&self, policy: &PurgePolicy) -> Result<usize, JournalError> {
        let policy = *policy;
        let purged = self.blocking(move |journal| journal.purge_blocking(&policy)).await?;
        self.durable().await?;
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{StepStatus, TriggerRecord};
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
        let all = journal.list_runs(&RunFilter::default()).await.unwrap().items;
        assert_eq!(all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        let filter = RunFilter { status: Some(RunStatus::Succeeded), ..Default::default() };
        assert_eq!(journal.list_runs(&filter).await.unwrap().items[0].id, "a");
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
            by_created.insert(list_position(&listed), "listed").unwrap();
            by_created
                .insert(list_position(&run("gone", "ping", t0, RunStatus::Failed)), "gone")
                .unwrap();
            db.flush().unwrap();
        }
        let journal = SledJournal::open(dir.path()).unwrap();
        assert!(journal.meta.contains_key(INDEXES_CHECKED).unwrap());
        let all = journal.list_runs(&RunFilter::default()).await.unwrap().items;
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
            let left = ids(journal.list_runs(&RunFilter::default()).await.unwrap().items);
            assert_eq!(left, ["lettered", "new-success", "old-running", "young-failure"]);
        }
        // Letter 7 aged out of the DLQ: its run goes too.
        let purged = journal.purge_finished(&PurgePolicy::at(now, &runtime, Some(8))).await;
        assert_eq!(purged.unwrap(), 1);
        let left = ids(journal.list_runs(&RunFilter::default()).await.unwrap().items);
        assert_eq!(left, ["new-success", "old-running", "young-failure"]);
    }

    fn ids_of(runs: &[RunRecord]) -> Vec<&str> {
        runs.iter().map(|r| r.id.as_str()).collect()
    }

    /// Every index entry, per index, for checking what a write or a sweep left.
    fn entries(journal: &SledJournal) -> [usize; 4] {
        Index::ALL.map(|index| index.tree(journal).len())
    }

    async fn listed(journal: &SledJournal, filter: RunFilter) -> Vec<String> {
        journal.list_runs(&filter).await.unwrap().items.into_iter().map(|r| r.id).collect()
    }

    #[tokio::test]
    async fn indexes_follow_writes_status_changes_and_the_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let journal = SledJournal::open(dir.path()).unwrap();
        let t0 = Utc::now() - chrono::Duration::days(40);
        let at = |m| t0 + chrono::Duration::minutes(m);
        let mut sync = run("sync-1", "sync", at(0), RunStatus::Running);
        sync.key = "team-a".into();
        let mut ping = run("ping-1", "ping", at(1), RunStatus::Failed);
        ping.key = "team-a".into();
        let other = run("ping-2", "ping", at(2), RunStatus::Succeeded);
        for r in [&sync, &ping, &other] {
            journal.put_run(r, Durability::Lazy).await.unwrap();
        }
        assert_eq!(entries(&journal), [3, 3, 3, 3]);
        let by = |workflow: Option<&str>, status: Option<RunStatus>, key: Option<&str>| RunFilter {
            workflow: workflow.map(Into::into),
            status,
            key: key.map(Into::into),
            ..RunFilter::default()
        };
        assert_eq!(listed(&journal, by(Some("ping"), None, None)).await, ["ping-2", "ping-1"]);
        assert_eq!(listed(&journal, by(None, Some(RunStatus::Running), None)).await, ["sync-1"]);
        assert_eq!(listed(&journal, by(None, None, Some("team-a"))).await, ["ping-1", "sync-1"]);
        let both = by(Some("ping"), Some(RunStatus::Failed), Some("team-a"));
        assert_eq!(listed(&journal, both).await, ["ping-1"]);
        assert!(listed(&journal, by(Some("nope"), None, None)).await.is_empty());

        // A status change moves the run's status entry, in the same write.
        sync.status = RunStatus::Succeeded;
        sync.finished_at = Some(at(5));
        journal.put_run(&sync, Durability::Lazy).await.unwrap();
        assert_eq!(entries(&journal), [3, 3, 3, 3], "an update adds no entry");
        assert!(listed(&journal, by(None, Some(RunStatus::Running), None)).await.is_empty());
        let succeeded = by(None, Some(RunStatus::Succeeded), None);
        assert_eq!(listed(&journal, succeeded.clone()).await, ["ping-2", "sync-1"]);

        // The sweep removes every entry of the runs it deletes.
        let purged = journal.purge_finished(&purge_all_finished(at(3))).await.unwrap();
        assert_eq!(purged, 2, "ping-1 and ping-2 finished before; sync-1 after");
        assert_eq!(entries(&journal), [1, 1, 1, 1]);
        assert_eq!(listed(&journal, by(None, None, Some("team-a"))).await, ["sync-1"]);
        assert_eq!(journal.repair_index().unwrap(), IndexRepair::default());
    }

    #[tokio::test]
    async fn pages_list_every_run_once_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let journal = SledJournal::open(dir.path()).unwrap();
        let t0 = Utc::now() - chrono::Duration::hours(1);
        let statuses = [RunStatus::Succeeded, RunStatus::Failed, RunStatus::Running];
        let mut all = Vec::new();
        for i in 0..60_i64 {
            // Runs created in the same millisecond are ordered by id.
            let created = t0 + chrono::Duration::milliseconds(i / 3);
            let workflow = if i % 2 == 0 { "ping" } else { "sync" };
            let mut r = run(&format!("r{i:02}"), workflow, created, statuses[i as usize % 3]);
            r.key = format!("team-{}", i % 4);
            journal.put_run(&r, Durability::Lazy).await.unwrap();
            all.push(r);
        }
        all.reverse(); // newest first
        let filters = [
            RunFilter::default(),
            RunFilter { workflow: Some("ping".into()), ..RunFilter::default() },
            RunFilter { status: Some(RunStatus::Failed), ..RunFilter::default() },
            RunFilter { key: Some("team-1".into()), ..RunFilter::default() },
            RunFilter {
                workflow: Some("sync".into()),
                key: Some("team-3".into()),
                ..RunFilter::default()
            },
        ];
        for filter in filters {
            let expected: Vec<_> =
                all.iter().filter(|r| filter.matches(r)).map(|r| r.id.clone()).collect();
            let mut seen = Vec::new();
            let mut page_filter = RunFilter { limit: Some(4), ..filter.clone() };
            loop {
                let page = journal.list_runs(&page_filter).await.unwrap();
                assert!(page.items.len() <= 4);
                seen.extend(page.items.iter().map(|r| r.id.clone()));
                match page.next_cursor {
                    Some(cursor) => page_filter.after = Some(cursor),
                    None => break,
                }
            }
            assert_eq!(seen, expected, "{filter:?}");
            let scanned = journal.list_runs_by_scan(&RunFilter { limit: Some(500), ..filter });
            assert_eq!(ids_of(&scanned.unwrap()), expected, "the same as the unindexed scan");
        }
    }

    #[tokio::test]
    async fn a_limit_above_the_bound_or_a_foreign_cursor_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let journal = SledJournal::open(dir.path()).unwrap();
        for filter in [
            RunFilter { limit: Some(super::super::MAX_LIST_LIMIT + 1), ..RunFilter::default() },
            RunFilter { limit: Some(0), ..RunFilter::default() },
            RunFilter { after: Some("not-a-cursor".into()), ..RunFilter::default() },
        ] {
            let refused = journal.list_runs(&filter).await;
            assert!(matches!(refused, Err(JournalError::InvalidFilter(_))), "{filter:?}");
        }
        let max = RunFilter { limit: Some(super::super::MAX_LIST_LIMIT), ..RunFilter::default() };
        assert!(journal.list_runs(&max).await.is_ok());
    }

    /// A journal from before the workflow, status and key indexes (or with entries lost or
    /// stale): the pass on open rebuilds them, once.
    #[tokio::test]
    async fn the_indexes_are_rebuilt_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Utc::now() - chrono::Duration::days(1);
        let old = run("old", "ping", t0, RunStatus::Failed);
        {
            let journal = SledJournal::open(dir.path()).unwrap();
            journal.put_run(&old, Durability::Flush).await.unwrap();
            journal
                .put_run(&run("new", "sync", t0, RunStatus::Running), Durability::Flush)
                .await
                .unwrap();
            // As a journal written before these indexes: no entries, no mark; plus an entry
            // with a status the run no longer has.
            for index in [Index::Workflow, Index::Status, Index::Key] {
                index.tree(&journal).clear().unwrap();
            }
            let stale = Indexed { status: RunStatus::Running, ..Indexed::from(&old) };
            journal.by_status.insert(Index::Status.entry(&stale), &[]).unwrap();
            journal.meta.remove(INDEXES_CHECKED).unwrap();
            journal.db.flush().unwrap();
        }
        let journal = SledJournal::open(dir.path()).unwrap();
        assert_eq!(entries(&journal), [2, 2, 2, 2]);
        let failed = RunFilter { status: Some(RunStatus::Failed), ..RunFilter::default() };
        assert_eq!(listed(&journal, failed).await, ["old"]);
        let running = RunFilter { status: Some(RunStatus::Running), ..RunFilter::default() };
        assert_eq!(listed(&journal, running).await, ["new"]);
        let ping = RunFilter { workflow: Some("ping".into()), ..RunFilter::default() };
        assert_eq!(listed(&journal, ping).await, ["old"]);
        let key = RunFilter { key: Some("k-new".into()), ..RunFilter::default() };
        assert_eq!(listed(&journal, key).await, ["new"]);
        assert_eq!(journal.repair_index().unwrap(), IndexRepair::default());
    }
}
