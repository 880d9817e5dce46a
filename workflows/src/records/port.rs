//! The `Records` port: the desired-state store that workflows, the HTTP API and the relay use.

use async_trait::async_trait;

use super::environment::{Environment, EnvironmentSpec};
use super::error::RecordsResult;
use super::namespace::{
    ClusterStatus, NamespaceFilter, NamespaceRecord, NamespaceSpec, NamespaceState,
};
use super::outbox::{Actor, OutboxEvent};
use super::team::{Team, TeamSpec, TeamStatus};

/// Largest page a list returns; larger limits are clamped to it.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The page size to use for a requested `limit`: at least 1, at most [`MAX_PAGE_SIZE`].
pub fn page_size(limit: usize) -> usize {
    limit.clamp(1, MAX_PAGE_SIZE)
}

/// One page of a keyed list, in ascending key order (bytewise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The cursor for the next page (pass it as `after`); `None` on the last page.
    pub next: Option<String>,
}

/// The records store.
///
/// # Guarantees (every implementation; the conformance suite in `connectors/tests` checks them)
/// - A mutation either happens completely or not at all, and is durable when it returns `Ok`.
/// - Every mutation of a team or an environment appends exactly one [`OutboxEvent`] in the
///   same transaction, naming the [`Actor`] passed in; a failed mutation (validation,
///   conflict, not found) writes neither.
///   The one exception is [`Records::set_team_status`]: status is not a change of the team.
/// - `resource_version` starts at 1 and grows by exactly one with each change of a record.
/// - Validation runs before any write: an invalid record is never stored.
/// - Events of one record are in the outbox in the order of its changes.
///
/// # Errors
/// Every method returns [`RecordsError`](super::RecordsError): `NotFound`, `AlreadyExists`,
/// `VersionConflict`, `Tombstoned`, `NotTombstoned`, `Invalid`, or `Backend` (retryable when
/// transient).
#[async_trait]
pub trait Records: Send + Sync {
    // ----- teams -----

    /// The team, tombstoned or not. `NotFound` when absent (or purged).
    async fn get_team(&self, slug: &str) -> RecordsResult<Team>;

    /// Teams with a slug greater than `after`, at most `limit` (see [`page_size`]).
    /// Tombstoned teams are included so that teardowns are driven to the end; filter on
    /// [`Team::is_deleted`] to hide them.
    async fn list_teams(&self, after: Option<&str>, limit: usize) -> RecordsResult<Page<Team>>;

    /// Stores a new team at resource version 1 and announces `muster.team.created`.
    ///
    /// # Errors
    /// `Invalid`; `AlreadyExists` when the slug is taken, also by a tombstone awaiting purge.
    async fn create_team(&self, spec: TeamSpec, actor: &Actor) -> RecordsResult<Team>;

    /// Replaces the team `spec.slug` and announces `muster.team.updated`.
    ///
    /// # Errors
    /// `Invalid`; `NotFound`; `Tombstoned`; `VersionConflict` when `expected_version` is given
    /// and is not the stored version (nothing is written).
    async fn update_team(
        &self,
        spec: TeamSpec,
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> RecordsResult<Team>;

    /// Tombstones the team (sets `deleted_at`) and announces `muster.team.deleted`.
    /// Deleting a tombstone again returns it unchanged and announces nothing.
    ///
    /// # Errors
    /// `NotFound`; `VersionConflict` as for updates.
    async fn delete_team(
        &self,
        slug: &str,
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> RecordsResult<Team>;

    /// Replaces the team's [`TeamStatus`] and returns the team. Status is not spec: the
    /// `resource_version` and `updated_at` stay, and nothing is appended to the outbox, so a
    /// sync that records its GitHub link does not announce `muster.team.updated` and trigger
    /// itself again. Allowed on a tombstone (a teardown records its progress too).
    ///
    /// # Errors
    /// `NotFound` when the team is absent (or purged).
    async fn set_team_status(&self, slug: &str, status: TeamStatus) -> RecordsResult<Team>;

    /// Removes a tombstoned team and all its namespace records for good; announces nothing
    /// (the deletion was announced by [`Records::delete_team`]). Returns `false` when there
    /// was nothing to purge, so a retried purge is harmless.
    ///
    /// # Errors
    /// `NotTombstoned` for a live team.
    async fn purge_team(&self, slug: &str) -> RecordsResult<bool>;

    // ----- environments -----

    async fn get_environment(&self, name: &str) -> RecordsResult<Environment>;

    /// Environments with a name greater than `after`, at most `limit` (see [`page_size`]).
    async fn list_environments(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> RecordsResult<Page<Environment>>;

    /// Stores a new environment and announces `muster.environment.created`.
    ///
    /// # Errors
    /// `Invalid`; `AlreadyExists`.
    async fn create_environment(
        &self,
        spec: EnvironmentSpec,
        actor: &Actor,
    ) -> RecordsResult<Environment>;

    /// Replaces the environment `spec.name` and announces `muster.environment.updated`.
    ///
    /// # Errors
    /// `Invalid`; `NotFound`; `VersionConflict`.
    async fn update_environment(
        &self,
        spec: EnvironmentSpec,
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> RecordsResult<Environment>;

    /// Removes the environment (no tombstone) and announces `muster.environment.deleted` with
    /// its last state. Its namespace records stay: `sync_team` marks them `deleting` and
    /// removes them once the agents are done.
    ///
    /// # Errors
    /// `NotFound`; `VersionConflict`.
    async fn delete_environment(
        &self,
        name: &str,
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> RecordsResult<Environment>;

    // ----- namespace records (not announced through the outbox: `sync_team` publishes
    // `muster.namespace.changed` as a step) -----

    /// Creates or replaces the record of `spec.team` × `spec.environment`, `active`, keeping
    /// cluster reports. An upsert that changes nothing keeps the resource version.
    ///
    /// # Errors
    /// `Invalid`; `NotFound` / `Tombstoned` when the team is absent / deleted;
    /// `AlreadyExists` when another team × environment already derives the same name
    /// (`a-b` × `c` and `a` × `b-c` both give `a-b-c`).
    async fn upsert_namespace(&self, spec: NamespaceSpec) -> RecordsResult<NamespaceRecord>;

    async fn get_namespace(&self, team: &str, environment: &str) -> RecordsResult<NamespaceRecord>;

    /// Records matching `filter`, ordered by team, then environment.
    async fn list_namespaces(
        &self,
        filter: &NamespaceFilter,
    ) -> RecordsResult<Vec<NamespaceRecord>>;

    /// Sets the lifecycle state; a no-op (same version) when it already is `state`.
    async fn set_namespace_state(
        &self,
        team: &str,
        environment: &str,
        state: NamespaceState,
    ) -> RecordsResult<NamespaceRecord>;

    /// Stores `cluster`'s latest report, replacing its previous one.
    async fn set_cluster_status(
        &self,
        team: &str,
        environment: &str,
        cluster: &str,
        status: ClusterStatus,
    ) -> RecordsResult<NamespaceRecord>;

    /// Removes the record; `false` when there was none.
    async fn delete_namespace(&self, team: &str, environment: &str) -> RecordsResult<bool>;

    // ----- outbox -----

    /// Up to `limit` events not yet removed, oldest first. Only durable events: one whose
    /// record change a crash could still lose is never returned (the relay publishes what it
    /// gets).
    async fn outbox_pending(&self, limit: usize) -> RecordsResult<Vec<OutboxEvent>>;

    /// Removes the events with these ids (after they were published). Unknown ids are
    /// ignored, so a repeated removal is harmless.
    async fn outbox_remove(&self, ids: &[String]) -> RecordsResult<()>;
}
