//! Records: the desired state Muster reconciles, and the port that stores it.
//!
//! - [`Team`], [`Environment`] and [`NamespaceRecord`] with their client-facing specs and
//!   validation ([`TeamSpec::validate`], …), which lists every problem with its field path.
//! - [`Records`]: the store port with optimistic concurrency (`resource_version`), team
//!   tombstones, and a transactional outbox of [`OutboxEvent`]s. Backends live in
//!   `connectors::records` (sled and PostgreSQL) and pass one conformance suite.
//!
//! # Decisions
//! - **Specs apart from records.** Clients send a `*Spec` (`deny_unknown_fields`, defaults for
//!   optional fields); the store returns the record, which flattens the spec and adds
//!   `resource_version`, timestamps and state. The HTTP layer can take a spec as its body and
//!   apply a JSON Merge Patch to a serialised spec.
//! - **Teams are tombstoned, environments are removed.** A deleted team keeps its record
//!   (read-only, `deleted_at` set, slug still taken) so that `sync_team` can run the teardown
//!   from it; [`Records::purge_team`] removes it and its namespace records afterwards. An
//!   environment has no teardown of its own: deletion removes it and announces its last state;
//!   its namespace records stay until `sync_team` has marked and removed them.
//! - **`allow_namespace_deletion` defaults to `false` everywhere.** Not only for `prod`:
//!   deleting a namespace destroys data, so an environment opts in explicitly, and no rule
//!   depends on an environment's name.
//! - **Namespace names are `<team>-<env>` and unique.** `a-b` × `c` and `a` × `b-c` both derive
//!   `a-b-c`; the second upsert fails with `AlreadyExists` instead of sharing a namespace. The
//!   API refuses the team or environment that would bring such a pair, or a name longer than
//!   63 characters, before it is stored ([`NamespaceNames`]).
//! - **Namespace records need a live team** and are not announced through the outbox:
//!   `sync_team` publishes `muster.namespace.changed` itself. An upsert that changes nothing
//!   keeps the resource version, so agents polling with an ETag see no change.
//! - **Every team or environment write is a change.** An update with an identical spec still
//!   bumps the version and is announced; the workflows are level-triggered, so a spare event
//!   costs one no-op sync.
//! - **Outbox ids are ULIDs**, not `<kind>-<slug>-<version>`: after a purge and re-creation
//!   the version starts again at 1, and such an id would be dropped by JetStream's duplicate
//!   window.
//! - **Team status apart from spec.** [`TeamStatus`] (the linked GitHub team, the last sync) is
//!   written by [`Records::set_team_status`] without a version bump or an outbox event, so a
//!   sync recording what it did does not announce a team change and trigger itself.
//! - **Cluster reports are status.** [`Records::set_cluster_status`] stores an agent's report
//!   without bumping the record's version: `observed_version` then says whether an agent acted
//!   on the current spec, and a report never makes the agents see a "new" record.
//! - **Parents are checked for form, not existence**, so teams can be created in any order.

mod environment;
mod error;
mod namespace;
mod namespace_names;
mod outbox;
mod port;
mod team;
pub mod validation;

pub use environment::{Environment, EnvironmentSpec, Quantities, QuotaProfile};
pub use error::{BoxError, RecordKind, RecordsError, RecordsResult};
pub use namespace::{
    ClusterOutcome, ClusterStatus, NamespaceFilter, NamespaceRecord, NamespaceSpec, NamespaceState,
    RoleBinding, namespace_name,
};
pub use namespace_names::{MAX_LIST_PAGES, NamespaceNameProblem, NamespaceNames};
pub use outbox::{
    Actor, Change, ENVIRONMENT_CREATED, ENVIRONMENT_DELETED, ENVIRONMENT_UPDATED, OutboxEvent,
    TEAM_CREATED, TEAM_DELETED, TEAM_UPDATED,
};
pub use port::{MAX_PAGE_SIZE, Page, Records, page_size};
pub use team::{GitHubLink, SyncMark, SyncProblem, SyncProblemKind, Team, TeamSpec, TeamStatus};
pub use validation::{FieldError, ValidationErrors};
