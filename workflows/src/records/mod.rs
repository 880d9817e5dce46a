//! Records: the desired state Muster reconciles, and the port that stores it.
//!
//! - [`Team`], [`Environment`] and [`NamespaceRecord`] with their client-facing specs and
//!   validation ([`TeamSpec::validate`], …), which lists every problem with its field path.
//! - [`Records`]: the store port with optimistic concurrency (`resource_version`), team
//!   tombstones, and a transactional outbox of [`OutboxEvent`]s. Backends live in
//!   `connectors::records` (sled and PostgreSQL) and pass one conformance suite.

mod environment;
mod error;
mod namespace;
mod outbox;
mod port;
mod team;
pub mod validation;

pub use environment::{Environment, EnvironmentSpec, Quantities};
pub use error::{BoxError, RecordKind, RecordsError, RecordsResult};
pub use namespace::{
    ClusterOutcome, ClusterStatus, NamespaceFilter, NamespaceRecord, NamespaceSpec, NamespaceState,
    RoleBinding,
};
pub use outbox::{
    Change, ENVIRONMENT_CREATED, ENVIRONMENT_DELETED, ENVIRONMENT_UPDATED, OutboxEvent,
    TEAM_CREATED, TEAM_DELETED, TEAM_UPDATED,
};
pub use port::{MAX_PAGE_SIZE, Page, Records, page_size};
pub use team::{Team, TeamSpec};
pub use validation::{FieldError, ValidationErrors};
