//! Records stores behind [`workflows::records::Records`]: [`SledRecords`] (embedded, the
//! default, sharing the engine's sled database) and [`PgRecords`] (PostgreSQL, for several
//! engine replicas). Both pass the conformance suite in `connectors/tests/conformance`.

pub mod postgres;
pub mod sled;

pub use self::postgres::{MigrationError, PgRecords};
pub use self::sled::SledRecords;

/// A fresh outbox event id: a ULID (48-bit millisecond time, 80 random bits), unique for all
/// time, so a purged and re-created team never reuses an event id inside JetStream's
/// duplicate window.
pub(crate) fn new_event_id() -> String {
    ulid::Ulid::new().to_string()
}
