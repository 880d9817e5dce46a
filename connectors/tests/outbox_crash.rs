//! The sled outbox under a crash between a mutation's write and its flush: whatever a reader
//! of the outbox (the engine's relay) sees before the crash must survive it, or the relay
//! would announce a change that never happened.
//!
//! The test runs itself again as a child process with `MUSTER_FAULT=before-record-flush`: the
//! child's relay stand-in polls `outbox_pending` and records (fsync'd) every event it would
//! publish, while a team is created; the fault point stalls that mutation before its flush and
//! aborts the process. The parent then reopens the database.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use connectors::records::SledRecords;
use connectors::records::sled::fault;
use workflows::records::{Actor, Records, TeamSpec};

/// Set in the child: the directory holding its database and its `published` file.
const CHILD_DIR: &str = "MUSTER_OUTBOX_CRASH_DIR";
const TEST: &str = "an_event_the_relay_can_read_survives_a_crash_before_the_flush";
/// How often the child's relay stand-in reads the outbox.
const POLL: Duration = Duration::from_millis(5);
/// The signal `std::process::abort` ends the child with.
const SIGABRT: i32 = 6;

#[test]
fn an_event_the_relay_can_read_survives_a_crash_before_the_flush() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        child(PathBuf::from(dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .env(fault::ENV, fault::BEFORE_RECORD_FLUSH)
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(SIGABRT), "the fault point aborts the child: {status}");

    let published = std::fs::read_to_string(dir.path().join("published")).unwrap_or_default();
    let db = sled::open(dir.path().join("db")).unwrap();
    let records = SledRecords::open(&db).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for slug in published.lines() {
        let found = runtime.block_on(records.get_team(slug));
        assert!(
            found.is_ok(),
            "the relay read the event of team {slug} before the crash, but the team is gone: \
             an event without its change ({found:?})"
        );
    }
}

/// The child: a relay stand-in reading the outbox while a team is created; never returns (the
/// fault point aborts the process).
fn child(dir: PathBuf) -> ! {
    // No background flusher: only `mutate`'s own flush makes a change durable, as it would be
    // if the crash came before sled's periodic flush.
    let db = sled::Config::new()
        .path(dir.join("db"))
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(None)
        .open()
        .unwrap();
    let records = SledRecords::open(&db).unwrap();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let relay = records.clone();
        let published = dir.join("published");
        tokio::spawn(async move { relay_stand_in(&relay, &published).await });
        tokio::time::sleep(POLL * 4).await;
        let created = records.create_team(team("payments"), &Actor::system()).await;
        eprintln!("the fault point did not abort the mutation: {created:?}");
        std::process::exit(3);
    })
}

/// Records the subject of every event `outbox_pending` returns, durably, as the relay's
/// PubAck would.
async fn relay_stand_in(records: &SledRecords, published: &Path) {
    let mut seen = Vec::new();
    loop {
        for event in records.outbox_pending(100).await.unwrap() {
            if !seen.contains(&event.id) {
                let mut file =
                    std::fs::OpenOptions::new().create(true).append(true).open(published).unwrap();
                writeln!(file, "{}", event.subject).unwrap();
                file.sync_all().unwrap();
                seen.push(event.id);
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

fn team(slug: &str) -> TeamSpec {
    TeamSpec {
        slug: slug.to_owned(),
        name: format!("Team {slug}"),
        description: String::new(),
        members: vec!["alice".into()],
        maintainers: vec!["carol".into()],
        parent: None,
        privacy: Default::default(),
        quota_profile: None,
        labels: BTreeMap::new(),
    }
}
