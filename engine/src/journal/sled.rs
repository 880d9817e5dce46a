//! The embedded journal on sled, in the engine's data dir.
//!
//! One tree, `journal`, holds every run and its index entries, each kind under its own first
//! byte:
//! - `r`, run id → the run and its steps, one record ([`super::record`]: compact binary);
//! - three indexes whose keys end in a run's list position (big-endian creation millis, run
//!   id), so that each lists newest first by iterating backwards: `w` + u32 length + workflow,
//!   `s` + one status byte, `k` + u32 length + key. Every run has one entry in each; the status
//!   index read under all four statuses at once (a merge) lists every run, so there is no index
//!   of all runs to write.
//!
//! A list reads the index of each field it names (the status index under every status when it
//! names none), newest first from its cursor, keeps the positions every one of them holds (a
//! merge of sorted streams: nothing is decoded), and decodes only the runs it answers; it stops
//! at the limit. Writes are made durable by a group
//! commit: concurrent writers share one fsync.
//!
//! # Guarantees
//! Every run is listed: a write inserts the run's new index entries before its record, and
//! removes the entries it replaces (a status change moves its status entry) only after it. A
//! crash in between leaves a stale entry, never a missing one; a list checks every run it
//! answers against its record, so it skips stale entries. A purge removes a run's workflow and
//! key entries, then its record, then its status entries (under every status); the sweep also
//! removes the entries it meets that name no run or not the run's status. Writers of one run id
//! are serialised (a striped lock held while the old record is read and the new one written).
//! Single writes, not sled batches or transactions: those take a lock over the whole database,
//! which cut the throughput of concurrent runs by half.
//!
//! Journals written before this layout (JSON records in `journal_runs`, steps in
//! `journal_steps`, indexes in `journal_runs_by_*`) are converted when opened: each run with its
//! steps is written in the new format with its index entries, then the old trees are dropped. A
//! crash during the conversion leaves the old trees, and the next open converts again.
//!
//! Scans (lists, the sweep) run on tokio's blocking pool; reads and writes of one record stay on
//! the caller's task (one key, no scan: microseconds). The conversion runs when the journal is
//! opened, before the engine starts its consumers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::record::{self, Head};
use super::retention::PurgePolicy;
use super::{
    Durability, Journal, JournalError, JournaledRun, RunFilter, RunPage, RunRecord, RunStatus,
    StepRecord, cursor_position, list_position,
};

/// The first byte of a run's record key.
const RUN: u8 = b'r';
/// The trees of the layout before this one, dropped once converted.
const LEGACY_RUNS: &str = "journal_runs";
const LEGACY_STEPS: &str = "journal_steps";
const LEGACY_TREES: [&str; 7] = [
    LEGACY_RUNS,
    "journal_meta",
    LEGACY_STEPS,
    "journal_runs_by_created",
    "journal_runs_by_workflow",
    "journal_runs_by_status",
    "journal_runs_by_key",
];
/// MiB of sled's page cache unless configured (`runtime.journal-cache-mib`); sled's own default
/// is 1 GiB.
pub const DEFAULT_CACHE_MIB: u64 = 16;

/// How the engine opens a sled database in `dir`: throughput mode, a page cache of `cache_mib`.
pub fn sled_config(dir: &std::path::Path, cache_mib: u64) -> ::sled::Config {
    ::sled::Config::new()
        .path(dir)
        .mode(::sled::Mode::HighThroughput)
        .cache_capacity(cache_mib.saturating_mul(1024 * 1024))
}

/// Locks serialising the writers of one run id (by hash).
const WRITER_STRIPES: usize = 64;

#[derive(Clone)]
pub struct SledJournal {
    db: ::sled::Db,
    tree: ::sled::Tree,
    commit: Arc<GroupCommit>,
    writers: Arc<[std::sync::Mutex<()>; WRITER_STRIPES]>,
}

/// Group commit: a writer takes a ticket after its write; whoever holds the flush lock flushes
/// everything ticketed so far, so concurrent writers share one fsync.
#[derive(Default)]
struct GroupCommit {
    ticketed: AtomicU64,
    flushed: AtomicU64,
    lock: tokio::sync::Mutex<()>,
}

/// The indexes, each keyed by its first byte, a prefix naming the indexed value, and the run's
/// list position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Index {
    Workflow,
    Status,
    Key,
}

impl Index {
    const ALL: [Self; 3] = [Self::Workflow, Self::Status, Self::Key];

    /// The first byte of this index's entries.
    fn tag(self) -> u8 {
        match self {
            Self::Workflow => b'w',
            Self::Status => b's',
            Self::Key => b'k',
        }
    }

    /// The entry of `run` in this index.
    fn entry(self, run: &Head) -> Vec<u8> {
        let mut key = match self {
            Self::Workflow => self.text_prefix(&run.workflow),
            Self::Status => status_prefix(run.status),
            Self::Key => self.text_prefix(&run.key),
        };
        let millis = u64::try_from(run.created_at().timestamp_millis()).unwrap_or(0);
        key.extend_from_slice(&millis.to_be_bytes());
        key.extend_from_slice(run.id.as_bytes());
        key
    }

    /// Length-prefixed, so that no value is a prefix of another's entries.
    fn text_prefix(self, value: &str) -> Vec<u8> {
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        let mut prefix = Vec::with_capacity(5 + value.len() + 8 + 40);
        prefix.push(self.tag());
        prefix.extend_from_slice(&len.to_be_bytes());
        prefix.extend_from_slice(value.as_bytes());
        prefix
    }
}

fn status_prefix(status: RunStatus) -> Vec<u8> {
    vec![
        Index::Status.tag(),
        match status {
            RunStatus::Running => 0,
            RunStatus::Retrying => 1,
            RunStatus::Succeeded => 2,
            RunStatus::Failed => 3,
        },
    ]
}

fn run_key(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(RUN);
    key.extend_from_slice(id.as_bytes());
    key
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
    /// Opens (or creates) the journal in `dir` with the default page cache. sled allows one
    /// process per database: a second engine on the same data dir gets an error here.
    ///
    /// # Errors
    /// The directory cannot be opened or is locked by another process.
    pub fn open(dir: &std::path::Path) -> Result<Self, JournalError> {
        Self::with_db(sled_config(dir, DEFAULT_CACHE_MIB).open()?)
    }

    /// A journal on an already open database (shared with other stores of the engine). A
    /// journal in the layout before this one is converted first (see the module's doc).
    ///
    /// # Errors
    /// The trees cannot be opened, or a record to convert is corrupt.
    pub fn with_db(db: ::sled::Db) -> Result<Self, JournalError> {
        let journal = Self {
            tree: db.open_tree("journal")?,
            db,
            commit: Arc::default(),
            writers: Arc::new(std::array::from_fn(|_| std::sync::Mutex::new(()))),
        };
        let converted = journal.convert_legacy()?;
        if converted > 0 {
            tracing::info!(runs = converted, "converted the journal to one binary record per run");
        }
        Ok(journal)
    }

    /// Converts a journal in the JSON layout (see the module's doc); returns how many runs.
    fn convert_legacy(&self) -> Result<usize, JournalError> {
        if !self.db.tree_names().iter().any(|name| name == LEGACY_RUNS.as_bytes()) {
            return Ok(0);
        }
        let runs = self.db.open_tree(LEGACY_RUNS)?;
        let steps = self.db.open_tree(LEGACY_STEPS)?;
        let mut converted = 0;
        for entry in runs.iter() {
            let (id, bytes) = entry?;
            let run: RunRecord = legacy_json(&id, &bytes)?;
            let mut prefix = id.to_vec();
            prefix.push(0);
            let steps = steps
                .scan_prefix(prefix)
                .map(|entry| {
                    let (key, bytes) = entry?;
                    legacy_json::<StepRecord>(&key, &bytes)
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.write(&JournaledRun { run, steps })?;
            converted += 1;
        }
        self.db.flush()?;
        for name in LEGACY_TREES {
            self.db.drop_tree(name)?;
        }
        self.db.flush()?;
        Ok(converted)
    }

    pub fn db(&self) -> &::sled::Db {
        &self.db
    }

    /// Writes a run's record and moves its index entries: the new entries first, then the
    /// record, then the old entries go (see the module's guarantees).
    fn write(&self, journaled: &JournaledRun) -> Result<(), JournalError> {
        let record = record::encode(journaled);
        let head = Head::of(&journaled.run);
        let key = run_key(&head.id);
        let _writer = self.writer(&head.id);
        // The entries of the run as it was: a status change moves its status entry. A previous
        // record that does not decode keeps its entries; the list skips them.
        let old = self.tree.get(&key)?.and_then(|bytes| record::head(&key, &bytes).ok());
        let mut stale = Vec::new();
        for index in Index::ALL {
            let entry = index.entry(&head);
            let old_entry = old.as_ref().map(|old| index.entry(old));
            if old_entry.as_ref() == Some(&entry) {
                continue;
            }
            stale.extend(old_entry);
            self.tree.insert(entry, &[])?;
        }
        self.tree.insert(key, record)?;
        for entry in stale {
            self.tree.remove(entry)?;
        }
        Ok(())
    }

    fn writer(&self, id: &str) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(id);
        let stripe = usize::try_from(hash % WRITER_STRIPES as u64).unwrap_or(0);
        self.writers[stripe].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The run stored under `id`, with its steps when `steps` says so.
    fn read(&self, id: &[u8], steps: bool) -> Result<Option<JournaledRun>, JournalError> {
        let mut key = Vec::with_capacity(1 + id.len());
        key.push(RUN);
        key.extend_from_slice(id);
        self.tree.get(&key)?.map(|bytes| record::decode(&key, &bytes, steps)).transpose()
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
        let mut all = self.all_runs(None)?;
        while let Some(position) = all.peek().map(<[u8]>::to_vec) {
            all.advance()?;
            if runs.len() >= limit {
                break;
            }
            let Some(id) = position.get(8..) else { continue };
            let Some(journaled) = self.read(id, false)? else { continue };
            if filter.matches(&journaled.run) && list_position(&journaled.run) == position {
                runs.push(journaled.run);
            }
        }
        Ok(runs)
    }

    /// Every run's position, newest first, below `after`: the status index under every status.
    fn all_runs(&self, after: Option<&[u8]>) -> Result<Scan, JournalError> {
        Scan::new(&self.tree, RunStatus::ALL.map(status_prefix).to_vec(), after)
    }

    /// One page through the indexes (see the module's doc).
    ///
    /// # Errors
    /// An invalid limit or cursor; the storage failed or a run record is corrupt.
    pub fn list_page(&self, filter: &RunFilter) -> Result<RunPage, JournalError> {
        let limit = filter.checked_limit()?;
        let after = filter.after.as_deref().map(cursor_position).transpose()?;
        let after = after.as_deref();
        let tree = &self.tree;
        let mut scans = Vec::with_capacity(3);
        if let Some(workflow) = &filter.workflow {
            scans.push(Scan::new(tree, vec![Index::Workflow.text_prefix(workflow)], after)?);
        }
        match filter.status {
            Some(status) => scans.push(Scan::new(tree, vec![status_prefix(status)], after)?),
            // Only unfinished runs can be stuck.
            None if filter.stuck_below.is_some() => scans.push(Scan::new(
                tree,
                vec![status_prefix(RunStatus::Running), status_prefix(RunStatus::Retrying)],
                after,
            )?),
            None => {}
        }
        if let Some(key) = &filter.key {
            scans.push(Scan::new(tree, vec![Index::Key.text_prefix(key)], after)?);
        }
        if scans.is_empty() {
            scans.push(self.all_runs(after)?);
        }
        let mut page = RunPage::default();
        while let Some(position) = next_common(&mut scans)? {
            if page.items.len() == limit {
                page.next_cursor = page.items.last().map(super::page_cursor);
                break;
            }
            let Some(id) = position.get(8..) else { continue };
            let Some(JournaledRun { run, .. }) = self.read(id, false)? else { continue };
            // The index names the run's current fields (one batch); `stuck_below` needs the
            // record.
            if filter.matches(&run) && list_position(&run) == position {
                page.items.push(run);
            }
        }
        Ok(page)
    }

    /// Walks the finished runs oldest first, under each finished status, and deletes those
    /// `policy` lets go: the run's workflow and key entries, then its record, then its status
    /// entries (under every status: a crash between a write and its removal of the old status
    /// entry leaves one). A crash in between leaves a record that is still swept, or entries
    /// naming no run, which the walk removes when it meets them.
    fn purge_blocking(&self, policy: &PurgePolicy) -> Result<usize, JournalError> {
        let created_before = policy.created_before();
        let mut purged = 0;
        for status in [RunStatus::Succeeded, RunStatus::Failed] {
            let prefix = status_prefix(status);
            for entry in self.tree.scan_prefix(&prefix).keys() {
                let entry = entry?;
                let Some(id) = entry.get(prefix.len() + 8..) else { continue };
                let Ok(id) = std::str::from_utf8(id) else { continue };
                let key = run_key(id);
                let _writer = self.writer(id);
                let Some(bytes) = self.tree.get(&key)? else {
                    self.tree.remove(&entry)?;
                    continue;
                };
                let run = record::decode(&key, &bytes, false)?.run;
                if run.created_at >= created_before {
                    break;
                }
                if run.status != status {
                    // A stale entry: the run's own is written before its record.
                    self.tree.remove(&entry)?;
                    continue;
                }
                if !policy.may_purge(&run) {
                    continue;
                }
                let mut head = Head::of(&run);
                self.tree.remove(Index::Workflow.entry(&head))?;
                self.tree.remove(Index::Key.entry(&head))?;
                self.tree.remove(key)?;
                for status in RunStatus::ALL {
                    head.status = status;
                    self.tree.remove(Index::Status.entry(&head))?;
                }
                purged += 1;
            }
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

/// A record of the JSON layout.
fn legacy_json<T: serde::de::DeserializeOwned>(
    key: &[u8],
    bytes: &[u8],
) -> Result<T, JournalError> {
    serde_json::from_slice(bytes).map_err(|e| JournalError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

#[async_trait]
impl Journal for SledJournal {
    async fn load(&self, id: &str) -> Result<Option<JournaledRun>, JournalError> {
        self.read(id.as_bytes(), true)
    }

    async fn run(&self, id: &str) -> Result<Option<RunRecord>, JournalError> {
        Ok(self.read(id.as_bytes(), false)?.map(|journaled| journaled.run))
    }

    async fn put(&self, run: &JournaledRun, durability: Durability) -> Result<(), JournalError> {
        self.write(run)?;
        match durability {
            Durability::Flush => self.durable().await,
            Durability::Lazy => Ok(()),
        }
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
        let trigger = TriggerRecord {
            event: serde_json::json!({}),
            nats_subject: "s".into(),
            stream_sequence: 1,
        };
        RunRecord {
            status,
            attempts: 1,
            finished_at: status.is_finished().then_some(created),
            ..RunRecord::new(id, workflow, format!("k-{id}"), trigger, created)
        }
    }

    fn step(run_id: &str, index: u32, at: DateTime<Utc>) -> StepRecord {
        StepRecord {
            run_id: run_id.into(),
            index,
            name: format!("s{index}"),
            status: StepStatus::Succeeded,
            attempts: 1,
            output: Some(serde_json::json!(index)),
            error: None,
            started_at: at,
            finished_at: Some(at),
            duration_ms: Some(0),
        }
    }

    #[tokio::test]
    async fn runs_and_steps_survive_reopen_and_list_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Utc::now() - chrono::Duration::hours(2);
        let b = JournaledRun {
            run: run("b", "sync", t0 + chrono::Duration::minutes(1), RunStatus::Running),
            steps: vec![step("b", 0, t0), step("b", 1, t0)],
        };
        {
            let journal = SledJournal::open(dir.path()).unwrap();
            journal
                .put_run(&run("a", "ping", t0, RunStatus::Succeeded), Durability::Flush)
                .await
                .unwrap();
            journal.put(&b, Durability::Flush).await.unwrap();
            // An update does not duplicate the index; `put_run` keeps the steps.
            journal.put_run(&b.run, Durability::Flush).await.unwrap();
        }
        let journal = SledJournal::open(dir.path()).unwrap();
        let all = journal.list_runs(&RunFilter::default()).await.unwrap().items;
        assert_eq!(all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        let filter = RunFilter { status: Some(RunStatus::Succeeded), ..Default::default() };
        assert_eq!(journal.list_runs(&filter).await.unwrap().items[0].id, "a");
        assert_eq!(journal.load("b").await.unwrap().unwrap(), b);
        assert_eq!(entries(&journal), [2, 2, 2]);

        let purged = journal.purge_finished(&purge_all_finished(Utc::now())).await.unwrap();
        assert_eq!(purged, 1, "only the finished run is purged");
        assert!(journal.run("a").await.unwrap().is_none());
        assert_eq!(journal.steps("b").await.unwrap().len(), 2);
        assert_indexes_match(&journal);
    }

    fn purge_all_finished(before: DateTime<Utc>) -> PurgePolicy {
        PurgePolicy {
            succeeded_before: before,
            failed_before: before,
            dlq_first_sequence: Some(u64::MAX),
        }
    }

    /// A journal in the JSON layout (a run record per run, a step record per step, the runs by
    /// creation; here one run lost its index entry in a crash, and one entry names no run): it is
    /// converted when opened, runs and steps as they were, every index complete, the old trees
    /// gone.
    #[tokio::test]
    async fn a_journal_in_the_json_layout_is_converted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Utc::now() - chrono::Duration::days(60);
        let mut lost = run("lost", "ping", t0, RunStatus::Succeeded);
        lost.output = Some(serde_json::json!({"pong": 1}));
        let listed = JournaledRun {
            run: run("listed", "sync", t0 + chrono::Duration::seconds(1), RunStatus::Running),
            steps: vec![step("listed", 0, t0), step("listed", 1, t0)],
        };
        {
            let db = ::sled::open(dir.path()).unwrap();
            let runs = db.open_tree(LEGACY_RUNS).unwrap();
            let steps = db.open_tree(LEGACY_STEPS).unwrap();
            let by_created = db.open_tree("journal_runs_by_created").unwrap();
            runs.insert("lost", serde_json::to_vec(&lost).unwrap()).unwrap();
            runs.insert("listed", serde_json::to_vec(&listed.run).unwrap()).unwrap();
            by_created.insert(list_position(&listed.run), "listed").unwrap();
            by_created
                .insert(list_position(&run("gone", "ping", t0, RunStatus::Failed)), "gone")
                .unwrap();
            for s in &listed.steps {
                let mut key = b"listed\0".to_vec();
                key.extend_from_slice(&s.index.to_be_bytes());
                steps.insert(key, serde_json::to_vec(s).unwrap()).unwrap();
            }
            db.open_tree("journal_meta").unwrap().insert("indexes-checked-v2", &[1]).unwrap();
            db.flush().unwrap();
        }
        for _ in 0..2 {
            let journal = SledJournal::open(dir.path()).unwrap();
            for name in LEGACY_TREES {
                let names = journal.db.tree_names();
                assert!(!names.iter().any(|n| n == name.as_bytes()), "{name} is dropped");
            }
            assert_eq!(journal.load("listed").await.unwrap().unwrap(), listed);
            assert_eq!(journal.run("lost").await.unwrap().unwrap(), lost);
            assert_eq!(listed_ids(&journal, RunFilter::default()).await, ["listed", "lost"]);
            let running = RunFilter { status: Some(RunStatus::Running), ..RunFilter::default() };
            assert_eq!(listed_ids(&journal, running).await, ["listed"]);
            assert_indexes_match(&journal);
        }
        let journal = SledJournal::open(dir.path()).unwrap();
        let purged = journal.purge_finished(&purge_all_finished(Utc::now())).await.unwrap();
        assert_eq!(purged, 1, "the converted run is swept like any other");
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
        assert_indexes_match(&journal);
    }

    fn ids_of(runs: &[RunRecord]) -> Vec<&str> {
        runs.iter().map(|r| r.id.as_str()).collect()
    }

    /// Every index entry, per index, for checking what a write or a sweep left.
    fn entries(journal: &SledJournal) -> [usize; 3] {
        Index::ALL.map(|index| journal.tree.scan_prefix([index.tag()]).count())
    }

    /// The index entries are exactly those of the runs stored.
    fn assert_indexes_match(journal: &SledJournal) {
        let mut expected = std::collections::BTreeSet::new();
        for entry in journal.tree.scan_prefix([RUN]) {
            let (key, bytes) = entry.unwrap();
            let head = record::head(&key, &bytes).unwrap();
            expected.extend(Index::ALL.map(|index| index.entry(&head)));
        }
        let actual: std::collections::BTreeSet<_> = Index::ALL
            .iter()
            .flat_map(|index| journal.tree.scan_prefix([index.tag()]).keys())
            .map(|key| key.unwrap().to_vec())
            .collect();
        assert_eq!(actual, expected);
    }

    async fn listed_ids(journal: &SledJournal, filter: RunFilter) -> Vec<String> {
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
        assert_eq!(entries(&journal), [3, 3, 3]);
        let by = |workflow: Option<&str>, status: Option<RunStatus>, key: Option<&str>| RunFilter {
            workflow: workflow.map(Into::into),
            status,
            key: key.map(Into::into),
            ..RunFilter::default()
        };
        assert_eq!(listed_ids(&journal, by(Some("ping"), None, None)).await, ["ping-2", "ping-1"]);
        assert_eq!(
            listed_ids(&journal, by(None, Some(RunStatus::Running), None)).await,
            ["sync-1"]
        );
        assert_eq!(
            listed_ids(&journal, by(None, None, Some("team-a"))).await,
            ["ping-1", "sync-1"]
        );
        let both = by(Some("ping"), Some(RunStatus::Failed), Some("team-a"));
        assert_eq!(listed_ids(&journal, both).await, ["ping-1"]);
        assert!(listed_ids(&journal, by(Some("nope"), None, None)).await.is_empty());

        // A status change moves the run's status entry, in the same write.
        sync.status = RunStatus::Succeeded;
        sync.finished_at = Some(at(5));
        journal.put_run(&sync, Durability::Lazy).await.unwrap();
        assert_eq!(entries(&journal), [3, 3, 3], "an update adds no entry");
        assert!(listed_ids(&journal, by(None, Some(RunStatus::Running), None)).await.is_empty());
        let succeeded = by(None, Some(RunStatus::Succeeded), None);
        assert_eq!(listed_ids(&journal, succeeded.clone()).await, ["ping-2", "sync-1"]);
        assert_indexes_match(&journal);

        // The sweep removes every entry of the runs it deletes.
        let purged = journal.purge_finished(&purge_all_finished(at(3))).await.unwrap();
        assert_eq!(purged, 2, "ping-1 and ping-2 finished before; sync-1 after");
        assert_eq!(entries(&journal), [1, 1, 1]);
        assert_eq!(listed_ids(&journal, by(None, None, Some("team-a"))).await, ["sync-1"]);
        assert_indexes_match(&journal);
    }

    /// What a crash between a write's steps leaves (a status entry the run no longer has, an
    /// entry naming no run) is skipped by lists and removed by the sweep.
    #[tokio::test]
    async fn entries_a_crash_leaves_behind_are_skipped_and_swept() {
        let dir = tempfile::tempdir().unwrap();
        let journal = SledJournal::open(dir.path()).unwrap();
        let t0 = Utc::now() - chrono::Duration::days(40);
        let done = run("done", "ping", t0, RunStatus::Succeeded);
        journal.put_run(&done, Durability::Lazy).await.unwrap();
        let mut stale = Head::of(&done);
        stale.status = RunStatus::Running;
        journal.tree.insert(Index::Status.entry(&stale), &[]).unwrap();
        let ghost = Head::of(&run("ghost", "ping", t0, RunStatus::Failed));
        journal.tree.insert(Index::Status.entry(&ghost), &[]).unwrap();
        assert_eq!(entries(&journal), [1, 3, 1]);

        assert_eq!(listed_ids(&journal, RunFilter::default()).await, ["done"], "listed once");
        let running = RunFilter { status: Some(RunStatus::Running), ..RunFilter::default() };
        assert!(listed_ids(&journal, running).await.is_empty());
        let failed = RunFilter { status: Some(RunStatus::Failed), ..RunFilter::default() };
        assert!(listed_ids(&journal, failed).await.is_empty());
        let scanned = journal.list_runs_by_scan(&RunFilter::default()).unwrap();
        assert_eq!(ids_of(&scanned), ["done"]);

        let purged = journal.purge_finished(&purge_all_finished(Utc::now())).await.unwrap();
        assert_eq!(purged, 1);
        assert_eq!(entries(&journal), [0, 0, 0], "the run's entries and the leftovers are gone");
        assert_eq!(journal.tree.len(), 0);
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
}
