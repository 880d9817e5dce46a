//! The records conformance suite against PostgreSQL, plus its migrations.
//!
//! Needs `TEST_DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`); each test works
//! in its own fresh schema and drops it afterwards.

mod conformance;

use std::future::Future;
use std::sync::Arc;

use connectors::records::{MigrationError, PgRecords};

fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "TEST_DATABASE_URL is not set: the PostgreSQL records tests need a server, e.g. \
             TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test"
        )
    })
}

/// A store in a schema of its own, not yet migrated.
async fn fresh_store() -> (PgRecords, String) {
    let schema = format!("muster_test_{}", ulid::Ulid::new().to_string().to_lowercase());
    let store = PgRecords::connect(&database_url(), Some(&schema))
        .await
        .expect("connect to TEST_DATABASE_URL");
    (store, schema)
}

async fn drop_schema(store: &PgRecords, schema: &str) {
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(store.pool())
        .await
        .unwrap();
    store.pool().close().await;
}

struct Postgres;

impl Postgres {
    /// Runs `case` on a freshly migrated schema, dropped afterwards even if the case fails.
    async fn run<F, Fut>(case: F)
    where
        F: FnOnce(conformance::Store) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (store, schema) = fresh_store().await;
        store.migrate().await.unwrap();
        let outcome = tokio::spawn(case(Arc::new(store.clone()))).await;
        drop_schema(&store, &schema).await;
        if let Err(failure) = outcome {
            std::panic::resume_unwind(failure.into_panic());
        }
    }
}

conformance_suite!(Postgres);

#[tokio::test]
async fn check_migrations_names_what_is_missing_until_migrated() {
    let (store, schema) = fresh_store().await;
    let check = store.check_migrations().await;
    let migrating = store.clone();
    let result = async move {
        let store = migrating;
        match check {
            Err(MigrationError::Missing { missing }) => {
                assert_eq!(missing, ["20261127000001 records", "20261128215522 outbox actor"]);
            }
            other => panic!("expected Missing, got {other:?}"),
        }
        store.migrate().await.unwrap();
        store.check_migrations().await.unwrap();
        // Migrating again applies nothing and changes nothing.
        store.migrate().await.unwrap();
        store.check_migrations().await.unwrap();
    };
    let outcome = tokio::spawn(result).await;
    drop_schema(&store, &schema).await;
    if let Err(failure) = outcome {
        std::panic::resume_unwind(failure.into_panic());
    }
}

#[test]
fn error_message_of_missing_migrations_says_what_to_run() {
    let err = MigrationError::Missing { missing: vec!["20261127000001 records".into()] };
    assert_eq!(
        err.to_string(),
        "the records database lacks migrations 20261127000001 records; run `engine migrate`"
    );
}

#[tokio::test]
async fn schema_names_must_be_plain_identifiers() {
    let result = PgRecords::connect(&database_url(), Some("bad; DROP TABLE x")).await;
    assert!(result.is_err());
}
