//! The records store the engine serves: sled in the engine's own database, or PostgreSQL.
//!
//! [`open`] picks the backend from the configuration; [`Store`] carries the [`Records`] port for
//! the API and the outbox relay, plus a writability probe for `/readyz`.

use std::sync::Arc;
use std::time::Duration;

use connectors::records::{MigrationError, PgRecords, SledRecords};
use workflows::records::{Records, RecordsError};

use crate::config::{Config, StoreKind};

/// Why the records store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the sled records store: {0}")]
    Sled(#[source] RecordsError),
    #[error("cannot connect to the records database: {0}")]
    Connect(#[source] RecordsError),
    #[error("store = \"postgres\" needs database-url (MUSTER_DATABASE_URL)")]
    NoDatabaseUrl,
    /// The schema lacks migrations, or they differ from this engine's.
    #[error("the records database is not ready: {0}")]
    Migrations(#[source] MigrationError),
}

/// What backs the store, for the readiness probe.
#[derive(Clone)]
enum Backend {
    Sled(::sled::Db),
    Postgres(PgRecords),
}

/// An open records store.
#[derive(Clone)]
pub struct Store {
    records: Arc<dyn Records>,
    backend: Backend,
}

impl Store {
    /// The records port.
    pub fn records(&self) -> Arc<dyn Records> {
        self.records.clone()
    }

    pub fn kind(&self) -> StoreKind {
        match self.backend {
            Backend::Sled(_) => StoreKind::Sled,
            Backend::Postgres(_) => StoreKind::Postgres,
        }
    }

    /// Checks that the store accepts writes: sled writes and flushes a probe key; PostgreSQL
    /// answers from a primary (not a read-only replica).
    ///
    /// # Errors
    /// A description of what failed.
    pub async fn probe_writable(&self) -> Result<(), String> {
        match &self.backend {
            Backend::Sled(db) => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || {
                    let tree = db.open_tree("health").map_err(|e| e.to_string())?;
                    tree.insert("probe", chrono::Utc::now().to_rfc3339().as_bytes())
                        .map_err(|e| e.to_string())?;
                    db.flush().map(|_| ()).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())?
            }
            Backend::Postgres(pg) => {
                let read_only: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                    .fetch_one(pg.pool())
                    .await
                    .map_err(|e| e.to_string())?;
                if read_only { Err("the database is a read-only replica".into()) } else { Ok(()) }
            }
        }
    }
}

/// Opens the configured store. For sled it uses `db`, the engine's one database (journal and
/// records share it: sled allows one process per database). For PostgreSQL it connects and
/// checks that every migration built into this engine is applied.
///
/// # Errors
/// [`StoreError`]; a missing migration says to run `engine migrate`.
pub async fn open(config: &Config, db: &::sled::Db) -> Result<Store, StoreError> {
    match config.store {
        StoreKind::Sled => {
            let records = SledRecords::open(db).map_err(StoreError::Sled)?;
            Ok(Store { records: Arc::new(records), backend: Backend::Sled(db.clone()) })
        }
        StoreKind::Postgres => {
            let pg = connect_postgres(config).await?;
            pg.check_migrations().await.map_err(StoreError::Migrations)?;
            Ok(Store { records: Arc::new(pg.clone()), backend: Backend::Postgres(pg) })
        }
    }
}

/// Connects to the configured PostgreSQL database (no migration check).
///
/// # Errors
/// No `database-url`, or the server cannot be reached.
pub async fn connect_postgres(config: &Config) -> Result<PgRecords, StoreError> {
    let url = config.database_url.as_ref().ok_or(StoreError::NoDatabaseUrl)?;
    tokio::time::timeout(
        Duration::from_secs(15),
        PgRecords::connect(url.expose(), config.database_schema.as_deref()),
    )
    .await
    .map_err(|_| {
        StoreError::Connect(RecordsError::transient(std::io::Error::other(
            "timed out after 15s connecting to the database",
        )))
    })?
    .map_err(StoreError::Connect)
}
