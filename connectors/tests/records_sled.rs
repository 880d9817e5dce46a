//! The records conformance suite against sled, plus what only sled has to show.

mod conformance;

use std::future::Future;
use std::sync::Arc;

use connectors::records::SledRecords;
use workflows::records::{Actor, EnvironmentSpec, Records};

struct Sled;

impl Sled {
    /// Runs `case` on a store in a fresh temporary database.
    async fn run<F, Fut>(case: F)
    where
        F: FnOnce(conformance::Store) -> Fut,
        Fut: Future<Output = ()>,
    {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = SledRecords::open(&db).unwrap();
        case(Arc::new(store)).await;
    }
}

conformance_suite!(Sled);

/// A change is on disk when the call returns: a reopened database has it, outbox included.
#[tokio::test]
async fn changes_survive_reopening_the_database() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        let store = SledRecords::open(&db).unwrap();
        store.create_team(conformance::team("payments"), &Actor::system()).await.unwrap();
        store.create_environment(EnvironmentSpec::named("dev"), &Actor::system()).await.unwrap();
        store.upsert_namespace(conformance::namespace("payments", "dev")).await.unwrap();
    }
    let db = reopen(dir.path()).await;
    let store = SledRecords::open(&db).unwrap();
    assert_eq!(store.get_team("payments").await.unwrap().resource_version, 1);
    assert_eq!(store.get_namespace("payments", "dev").await.unwrap().name, "payments-dev");
    assert_eq!(store.outbox_pending(10).await.unwrap().len(), 2);
}

/// The store keeps to its own `records_*` trees in the shared database.
#[tokio::test]
async fn uses_only_records_trees() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let journal = db.open_tree("journal").unwrap();
    journal.insert("run-1", "x").unwrap();
    let store = SledRecords::open(&db).unwrap();
    store.create_team(conformance::team("payments"), &Actor::system()).await.unwrap();
    for name in db.tree_names() {
        let name = String::from_utf8(name.to_vec()).unwrap();
        assert!(
            name.starts_with("records_") || name == "journal" || name == "__sled__default",
            "unexpected tree {name}"
        );
    }
    assert_eq!(journal.len(), 1);
}

/// sled releases its file lock when its background flusher thread lets go of the dropped
/// database, a moment after the last handle is dropped.
async fn reopen(path: &std::path::Path) -> sled::Db {
    let mut attempts = 0;
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(_) if attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("reopening the database: {e}"),
        }
    }
}
