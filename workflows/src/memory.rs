//! In-memory implementations of the ports, for tests of workflow logic: [`MemoryRecords`],
//! [`MemoryGitHub`], [`MemoryPublisher`] and [`MemoryJournal`].
//!
//! They are plain data behind a mutex (no I/O), so they are always compiled and other crates'
//! tests may use them too. They keep the ports' documented semantics (versions, tombstones,
//! idempotent GitHub calls, deduplication by source + id) and record what was sent, so tests
//! can count writes; they are not meant to run production traffic.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cloudevents::{AttributesReader, Event};

use crate::github::{
    Adoption, DesiredTeam, GitHub, GitHubError, GitHubTeam, Member, MembershipState, Privacy, Role,
    TeamField, TeamRef, slug_for,
};
use crate::publisher::{Published, Publisher};
use crate::records::{
    Actor, Change, ClusterStatus, Environment, EnvironmentSpec, NamespaceFilter, NamespaceRecord,
    NamespaceSpec, NamespaceState, OutboxEvent, Page, RecordKind, Records, RecordsError,
    RecordsResult, Team, TeamSpec, TeamStatus, page_size,
};
use crate::workflow::{RunError, StepJournal, StoredStep};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

// ----- records -----

/// A [`Records`] store in memory, with the conformance suite's semantics.
#[derive(Clone, Default)]
pub struct MemoryRecords {
    state: Arc<Mutex<RecordsState>>,
}

#[derive(Default)]
struct RecordsState {
    teams: BTreeMap<String, Team>,
    environments: BTreeMap<String, Environment>,
    /// (team, environment) → record: ordered by team, then environment.
    namespaces: BTreeMap<(String, String), NamespaceRecord>,
    outbox: Vec<OutboxEvent>,
    next_event: u64,
    /// Errors returned by the next calls, oldest first (fault injection).
    failures: VecDeque<RecordsError>,
}

impl RecordsState {
    fn announce(&mut self, event: impl FnOnce(String) -> OutboxEvent) {
        self.next_event += 1;
        let id = format!("memory-{:06}", self.next_event);
        self.outbox.push(event(id));
    }

    fn injected(&mut self) -> RecordsResult<()> {
        self.failures.pop_front().map_or(Ok(()), Err)
    }
}

fn page<T: Clone>(
    map: &BTreeMap<String, T>,
    after: Option<&str>,
    limit: usize,
) -> RecordsResult<Page<T>> {
    use std::ops::Bound::{Excluded, Unbounded};
    let limit = page_size(limit);
    let start = after.map_or(Unbounded, |a| Excluded(a.to_owned()));
    let mut entries = map.range((start, Unbounded));
    let items: Vec<(String, T)> =
        entries.by_ref().take(limit).map(|(k, v)| (k.clone(), v.clone())).collect();
    let next = if entries.next().is_some() { items.last().map(|(k, _)| k.clone()) } else { None };
    Ok(Page { items: items.into_iter().map(|(_, v)| v).collect(), next })
}

impl MemoryRecords {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next call (any method) fail with `error`.
    pub fn fail_next(&self, error: RecordsError) {
        lock(&self.state).failures.push_back(error);
    }

    /// Every outbox event written so far (the memory store never relays them).
    pub fn outbox(&self) -> Vec<OutboxEvent> {
        lock(&self.state).outbox.clone()
    }

    fn namespace_change(
        &self,
        team: &str,
        environment: &str,
        change: impl FnOnce(&NamespaceRecord) -> Option<NamespaceRecord>,
    ) -> RecordsResult<NamespaceRecord> {
        let mut s = lock(&self.state);
        s.injected()?;
        let key = (team.to_owned(), environment.to_owned());
        let current = s.namespaces.get(&key).ok_or_else(|| {
            RecordsError::not_found(RecordKind::Namespace, format!("{team}/{environment}"))
        })?;
        match change(current) {
            Some(next) => {
                s.namespaces.insert(key, next.clone());
                Ok(next)
            }
            None => Ok(current.clone()),
        }
    }
}

#[async_trait]
impl Records for MemoryRecords {
    async fn get_team(&self, slug: &str) -> RecordsResult<Team> {
        let mut s = lock(&self.state);
        s.injected()?;
        s.teams.get(slug).cloned().ok_or_else(|| RecordsError::not_found(RecordKind::Team, slug))
    }

    async fn list_teams(&self, after: Option<&str>, limit: usize) -> RecordsResult<Page<Team>> {
        let mut s = lock(&self.state);
        s.injected()?;
        page(&s.teams, after, limit)
    }

    async fn create_team(&self, spec: TeamSpec, actor: &Actor) -> RecordsResult<Team> {
        RecordsError::validated(RecordKind::Team, spec.validate())?;
        let mut s = lock(&self.state);
        s.injected()?;
        if s.teams.contains_key(&spec.slug) {
            return Err(RecordsError::already_exists(RecordKind::Team, spec.slug));
        }
        let now = Utc::now();
        let team = Team::new(spec, now);
        s.teams.insert(team.slug().to_owned(), team.clone());
        s.announce(|id| OutboxEvent::team(id, Change::Created, &team, actor, now));
        Ok(team)
    }

    async fn update_team(
        &self,
        spec: TeamSpec,
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> RecordsResult<Team> {
        RecordsError::validated(RecordKind::Team, spec.validate())?;
        let mut s = lock(&self.state);
        s.injected()?;
        let current = s
            .teams
            .get(&spec.slug)
            .ok_or_else(|| RecordsError::not_found(RecordKind::Team, &spec.slug))?;
        if current.is_deleted() {
            return Err(RecordsError::Tombstoned { kind: RecordKind::Team, key: spec.slug });
        }
        RecordsError::check_version(
            RecordKind::Team,
            &spec.slug,
            expected_version,
            current.resource_version,
        )?;
        let now = Utc::now();
        let next = current.updated(spec, now);
        s.teams.insert(next.slug().to_owned(), next.clone());
        s.announce(|id| OutboxEvent::team(id, Change::Updated, &next, actor, now));
        Ok(next)
    }

    async fn delete_team(
        &self,
        slug: &str,
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> RecordsResult<Team> {
        let mut s = lock(&self.state);
        s.injected()?;
        let current =
            s.teams.get(slug).ok_or_else(|| RecordsError::not_found(RecordKind::Team, slug))?;
        RecordsError::check_version(
            RecordKind::Team,
            slug,
            expected_version,
            current.resource_version,
        )?;
        if current.is_deleted() {
            return Ok(current.clone());
        }
        let now = Utc::now();
        let next = current.tombstoned(now);
        s.teams.insert(slug.to_owned(), next.clone());
        s.announce(|id| OutboxEvent::team(id, Change::Deleted, &next, actor, now));
        Ok(next)
    }

    async fn set_team_status(&self, slug: &str, status: TeamStatus) -> RecordsResult<Team> {
        let mut s = lock(&self.state);
        s.injected()?;
        let current =
            s.teams.get(slug).ok_or_else(|| RecordsError::not_found(RecordKind::Team, slug))?;
        let next = current.with_status(status);
        s.teams.insert(slug.to_owned(), next.clone());
        Ok(next)
    }

    async fn purge_team(&self, slug: &str) -> RecordsResult<bool> {
        let mut s = lock(&self.state);
        s.injected()?;
        match s.teams.get(slug) {
            None => Ok(false),
            Some(team) if !team.is_deleted() => {
                Err(RecordsError::NotTombstoned { kind: RecordKind::Team, key: slug.to_owned() })
            }
            Some(_) => {
                s.teams.remove(slug);
                s.namespaces.retain(|(team, _), _| team != slug);
                Ok(true)
            }
        }
    }

    async fn get_environment(&self, name: &str) -> RecordsResult<Environment> {
        let mut s = lock(&self.state);
        s.injected()?;
        s.environments
            .get(name)
            .cloned()
            .ok_or_else(|| RecordsError::not_found(RecordKind::Environment, name))
    }

    async fn list_environments(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> RecordsResult<Page<Environment>> {
        let mut s = lock(&self.state);
        s.injected()?;
        page(&s.environments, after, limit)
    }

    async fn create_environment(
        &self,
        spec: EnvironmentSpec,
        actor: &Actor,
    ) -> RecordsResult<Environment> {
        RecordsError::validated(RecordKind::Environment, spec.validate())?;
        let mut s = lock(&self.state);
        s.injected()?;
        if s.environments.contains_key(&spec.name) {
            return Err(RecordsError::already_exists(RecordKind::Environment, spec.name));
        }
        let now = Utc::now();
        let env = Environment::new(spec, now);
        s.environments.insert(env.name().to_owned(), env.clone());
        s.announce(|id| OutboxEvent::environment(id, Change::Created, &env, actor, now));
        Ok(env)
    }

    async fn update_environment(
        &self,
        spec: EnvironmentSpec,
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> RecordsResult<Environment> {
        RecordsError::validated(RecordKind::Environment, spec.validate())?;
        let mut s = lock(&self.state);
        s.injected()?;
        let current = s
            .environments
            .get(&spec.name)
            .ok_or_else(|| RecordsError::not_found(RecordKind::Environment, &spec.name))?;
        RecordsError::check_version(
            RecordKind::Environment,
            &spec.name,
            expected_version,
            current.resource_version,
        )?;
        let now = Utc::now();
        let next = current.updated(spec, now);
        s.environments.insert(next.name().to_owned(), next.clone());
        s.announce(|id| OutboxEvent::environment(id, Change::Updated, &next, actor, now));
        Ok(next)
    }

    async fn delete_environment(
        &self,
        name: &str,
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> RecordsResult<Environment> {
        let mut s = lock(&self.state);
        s.injected()?;
        let current = s
            .environments
            .get(name)
            .cloned()
            .ok_or_else(|| RecordsError::not_found(RecordKind::Environment, name))?;
        RecordsError::check_version(
            RecordKind::Environment,
            name,
            expected_version,
            current.resource_version,
        )?;
        s.environments.remove(name);
        let now = Utc::now();
        s.announce(|id| OutboxEvent::environment(id, Change::Deleted, &current, actor, now));
        Ok(current)
    }

    async fn upsert_namespace(&self, spec: NamespaceSpec) -> RecordsResult<NamespaceRecord> {
        RecordsError::validated(RecordKind::Namespace, spec.validate())?;
        let mut s = lock(&self.state);
        s.injected()?;
        match s.teams.get(&spec.team) {
            None => return Err(RecordsError::not_found(RecordKind::Team, &spec.team)),
            Some(team) if team.is_deleted() => {
                return Err(RecordsError::Tombstoned { kind: RecordKind::Team, key: spec.team });
            }
            Some(_) => {}
        }
        let key = (spec.team.clone(), spec.environment.clone());
        let name = spec.namespace_name();
        if s.namespaces.iter().any(|(k, r)| *k != key && r.name == name) {
            return Err(RecordsError::already_exists(RecordKind::Namespace, name));
        }
        let now = Utc::now();
        let next = match s.namespaces.get(&key) {
            None => NamespaceRecord::new(spec, now),
            Some(current) => match current.upserted(spec, now) {
                Some(next) => next,
                None => return Ok(current.clone()),
            },
        };
        s.namespaces.insert(key, next.clone());
        Ok(next)
    }

    async fn get_namespace(&self, team: &str, environment: &str) -> RecordsResult<NamespaceRecord> {
        let mut s = lock(&self.state);
        s.injected()?;
        s.namespaces.get(&(team.to_owned(), environment.to_owned())).cloned().ok_or_else(|| {
            RecordsError::not_found(RecordKind::Namespace, format!("{team}/{environment}"))
        })
    }

    async fn list_namespaces(
        &self,
        filter: &NamespaceFilter,
    ) -> RecordsResult<Vec<NamespaceRecord>> {
        let mut s = lock(&self.state);
        s.injected()?;
        Ok(s.namespaces.values().filter(|r| filter.matches(r)).cloned().collect())
    }

    async fn set_namespace_state(
        &self,
        team: &str,
        environment: &str,
        state: NamespaceState,
    ) -> RecordsResult<NamespaceRecord> {
        self.namespace_change(team, environment, |r| r.with_state(state, Utc::now()))
    }

    async fn set_cluster_status(
        &self,
        team: &str,
        environment: &str,
        cluster: &str,
        status: ClusterStatus,
    ) -> RecordsResult<NamespaceRecord> {
        RecordsError::validated(RecordKind::Namespace, status.validate(cluster))?;
        self.namespace_change(team, environment, |r| Some(r.with_cluster_status(cluster, status)))
    }

    async fn delete_namespace(&self, team: &str, environment: &str) -> RecordsResult<bool> {
        let mut s = lock(&self.state);
        s.injected()?;
        Ok(s.namespaces.remove(&(team.to_owned(), environment.to_owned())).is_some())
    }

    async fn outbox_pending(&self, limit: usize) -> RecordsResult<Vec<OutboxEvent>> {
        let mut s = lock(&self.state);
        s.injected()?;
        Ok(s.outbox.iter().take(page_size(limit)).cloned().collect())
    }

    async fn outbox_remove(&self, ids: &[String]) -> RecordsResult<()> {
        let mut s = lock(&self.state);
        s.injected()?;
        s.outbox.retain(|e| !ids.contains(&e.id));
        Ok(())
    }
}

// ----- GitHub -----

/// A team as [`MemoryGitHub`] holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryTeam {
    pub id: u64,
    pub name: String,
    pub slug: String,
    pub description: String,
    pub privacy: Privacy,
    pub parent: Option<String>,
    pub members: Vec<Member>,
    /// When the team was created: teams inserted by hand are a day old, so only a team the
    /// port created during a run counts as the run's own ([`Adoption::CreatedSince`]).
    pub created_at: DateTime<Utc>,
}

/// A stateful GitHub organization in memory, behaving as the port documents: teams found by
/// known id, then by the slug derived from the name, taken over only as [`Adoption`] allows;
/// idempotent membership calls; logins listed with [`MemoryGitHub::outside_org`] become pending
/// invitations, those listed with [`MemoryGitHub::expire_invitations`] are reported expired.
///
/// Every mutating call is logged ([`MemoryGitHub::writes`]), so tests can assert that a sync
/// with nothing to do sends nothing.
#[derive(Clone)]
pub struct MemoryGitHub {
    state: Arc<Mutex<GitHubState>>,
    plan_only: bool,
    deletion_allowed: bool,
    acting: Option<String>,
}

#[derive(Default)]
struct GitHubState {
    teams: BTreeMap<u64, MemoryTeam>,
    next_id: u64,
    writes: Vec<String>,
    outside_org: BTreeSet<String>,
    expired: Vec<String>,
    /// Lower-cased logins GitHub has no user for.
    unknown: BTreeSet<String>,
    /// The next create is applied and its answer lost.
    lose_next_answer: bool,
    failures: VecDeque<GitHubError>,
}

/// The fields of `existing` that differ from `desired`, with what they hold.
fn differences(
    existing: &MemoryTeam,
    desired: &DesiredTeam,
) -> BTreeMap<TeamField, Option<String>> {
    let mut previous = BTreeMap::new();
    if existing.name != desired.name {
        previous.insert(TeamField::Name, Some(existing.name.clone()));
    }
    if existing.description != desired.description {
        previous.insert(TeamField::Description, Some(existing.description.clone()));
    }
    if existing.privacy != desired.privacy {
        previous.insert(TeamField::Privacy, Some(existing.privacy.as_str().to_owned()));
    }
    if existing.parent != desired.parent {
        previous.insert(TeamField::Parent, existing.parent.clone());
    }
    previous
}

impl GitHubState {
    /// The team of `desired`: by known id, else by the slug of its name (`true`: unlinked).
    fn locate(&self, desired: &DesiredTeam) -> Option<(u64, bool)> {
        let known =
            desired.known.as_ref().and_then(|k| k.id).filter(|id| self.teams.contains_key(id));
        if let Some(id) = known {
            return Some((id, false));
        }
        let slug = slug_for(&desired.name);
        self.teams.values().find(|t| t.slug == slug).map(|t| (t.id, true))
    }

    /// A linked team, by id only: never by a slug another team may have taken.
    fn find(&self, team: &TeamRef) -> Option<u64> {
        team.id.filter(|id| self.teams.contains_key(id))
    }

    fn team_mut(&mut self, team: &TeamRef) -> Result<&mut MemoryTeam, GitHubError> {
        let id = self
            .find(team)
            .ok_or_else(|| GitHubError::NotFound { what: format!("team {:?}", team.slug) })?;
        Ok(self.teams.get_mut(&id).expect("found above"))
    }

    fn injected(&mut self) -> Result<(), GitHubError> {
        self.failures.pop_front().map_or(Ok(()), Err)
    }
}

impl MemoryGitHub {
    /// An organization with credentials, acting as `acting` (a maintainer of nothing yet).
    pub fn new(acting: Option<&str>) -> Self {
        MemoryGitHub {
            state: Arc::new(Mutex::new(GitHubState { next_id: 1000, ..Default::default() })),
            plan_only: false,
            deletion_allowed: false,
            acting: acting.map(str::to_owned),
        }
    }

    /// No credentials: reads observe nothing and mutations are refused (the workflow must not
    /// send them in plan-only mode, so a test sees it if it does).
    pub fn plan_only() -> Self {
        MemoryGitHub { plan_only: true, acting: None, ..Self::new(None) }
    }

    /// Team deletion enabled in configuration.
    pub fn allowing_deletion(mut self) -> Self {
        self.deletion_allowed = true;
        self
    }

    /// GitHub has no user for these logins (deleted or renamed); replaces the earlier list.
    pub fn unknown_logins(&self, logins: &[&str]) {
        lock(&self.state).unknown = logins.iter().map(|l| l.to_ascii_lowercase()).collect();
    }

    /// The next team create is applied on "GitHub" but its answer is lost (a transport error).
    pub fn lose_next_answer(&self) {
        lock(&self.state).lose_next_answer = true;
    }

    /// These logins' invitations to the organization expired.
    pub fn expire_invitations(&self, logins: &[&str]) {
        lock(&self.state).expired.extend(logins.iter().map(|l| (*l).to_owned()));
    }

    /// These logins are not organization members: adding them makes a pending invitation.
    pub fn outside_org(&self, logins: &[&str]) {
        lock(&self.state).outside_org.extend(logins.iter().map(|l| l.to_ascii_lowercase()));
    }

    /// Makes the next call (any method but the two configuration reads) fail with `error`.
    pub fn fail_next(&self, error: GitHubError) {
        lock(&self.state).failures.push_back(error);
    }

    /// Adds a team directly, as someone editing GitHub by hand would.
    pub fn insert_team(&self, name: &str, members: Vec<Member>) -> u64 {
        let mut s = lock(&self.state);
        s.next_id += 1;
        let id = s.next_id;
        let team = MemoryTeam {
            id,
            name: name.to_owned(),
            slug: slug_for(name),
            description: String::new(),
            privacy: Privacy::Closed,
            parent: None,
            members,
            created_at: Utc::now() - chrono::Duration::days(1),
        };
        s.teams.insert(id, team);
        id
    }

    /// Replaces a team's members directly (drift).
    pub fn set_members(&self, id: u64, members: Vec<Member>) {
        if let Some(team) = lock(&self.state).teams.get_mut(&id) {
            team.members = members;
        }
    }

    /// The teams, by id.
    pub fn teams(&self) -> Vec<MemoryTeam> {
        lock(&self.state).teams.values().cloned().collect()
    }

    /// Every mutating call so far, e.g. `create team payments`, `set alice maintainer`.
    pub fn writes(&self) -> Vec<String> {
        lock(&self.state).writes.clone()
    }

    fn refuse_in_plan_only(&self, what: &str) -> Result<(), GitHubError> {
        if self.plan_only {
            return Err(GitHubError::Config(format!("plan-only: {what} must not be sent")));
        }
        Ok(())
    }
}

#[async_trait]
impl GitHub for MemoryGitHub {
    fn is_plan_only(&self) -> bool {
        self.plan_only
    }

    async fn acting_login(&self) -> Result<Option<String>, GitHubError> {
        lock(&self.state).injected()?;
        Ok(self.acting.clone())
    }

    async fn ensure_team(&self, team: &DesiredTeam) -> Result<GitHubTeam, GitHubError> {
        if self.plan_only {
            return self.plan_team(team).await;
        }
        let mut s = lock(&self.state);
        s.injected()?;
        let Some((id, adopted)) = s.locate(team) else {
            s.next_id += 1;
            let id = s.next_id;
            let created = MemoryTeam {
                id,
                name: team.name.clone(),
                slug: slug_for(&team.name),
                description: team.description.clone(),
                privacy: team.privacy,
                parent: team.parent.clone(),
                // GitHub makes a PAT user who creates a team its maintainer.
                members: self.acting.iter().map(|l| Member::active(l, Role::Maintainer)).collect(),
                created_at: Utc::now(),
            };
            s.writes.push(format!("create team {}", created.slug));
            let slug = created.slug.clone();
            s.teams.insert(id, created);
            if std::mem::take(&mut s.lose_next_answer) {
                return Err(GitHubError::Transport { message: "the answer was lost".into() });
            }
            return Ok(GitHubTeam {
                id,
                slug,
                created: true,
                adopted: false,
                changed: Vec::new(),
                previous: BTreeMap::new(),
            });
        };
        let existing = s.teams.get_mut(&id).expect("found above");
        let may_adopt = match team.adopt {
            Adoption::Never => false,
            Adoption::Allowed => true,
            Adoption::CreatedSince(since) => existing.created_at >= since,
        };
        if adopted && !may_adopt {
            return Err(GitHubError::Unmanaged { id, slug: existing.slug.clone() });
        }
        let previous = differences(existing, team);
        let changed: Vec<TeamField> = previous.keys().copied().collect();
        if changed.contains(&TeamField::Name) {
            existing.name = team.name.clone();
            existing.slug = slug_for(&team.name);
        }
        existing.description = team.description.clone();
        existing.privacy = team.privacy;
        existing.parent = team.parent.clone();
        let slug = existing.slug.clone();
        if !changed.is_empty() {
            s.writes.push(format!("update team {slug}"));
        }
        Ok(GitHubTeam { id, slug, created: false, adopted, changed, previous })
    }

    async fn plan_team(&self, team: &DesiredTeam) -> Result<GitHubTeam, GitHubError> {
        if self.plan_only {
            return Ok(GitHubTeam {
                id: team.known.as_ref().and_then(|k| k.id).unwrap_or(0),
                slug: team.known.as_ref().map_or_else(|| slug_for(&team.name), |k| k.slug.clone()),
                created: team.known.is_none(),
                adopted: false,
                changed: Vec::new(),
                previous: BTreeMap::new(),
            });
        }
        let mut s = lock(&self.state);
        s.injected()?;
        Ok(match s.locate(team) {
            None => GitHubTeam {
                id: 0,
                slug: slug_for(&team.name),
                created: true,
                adopted: false,
                changed: Vec::new(),
                previous: BTreeMap::new(),
            },
            Some((id, adopted)) => {
                let existing = &s.teams[&id];
                let previous = differences(existing, team);
                let changed = previous.keys().copied().collect();
                GitHubTeam {
                    id,
                    slug: existing.slug.clone(),
                    created: false,
                    adopted,
                    changed,
                    previous,
                }
            }
        })
    }

    async fn child_teams(&self, team: &TeamRef) -> Result<Vec<TeamRef>, GitHubError> {
        let mut s = lock(&self.state);
        s.injected()?;
        let Some(parent) = s.find(team).map(|id| s.teams[&id].slug.clone()) else {
            return Ok(Vec::new());
        };
        Ok(s.teams
            .values()
            .filter(|t| t.parent.as_deref() == Some(parent.as_str()))
            .map(|t| TeamRef { id: Some(t.id), slug: t.slug.clone() })
            .collect())
    }

    async fn is_org_member(&self, login: &str) -> Result<bool, GitHubError> {
        let mut s = lock(&self.state);
        s.injected()?;
        Ok(!s.outside_org.contains(&login.to_ascii_lowercase()))
    }

    async fn expired_invitations(&self) -> Result<Vec<String>, GitHubError> {
        let mut s = lock(&self.state);
        s.injected()?;
        Ok(s.expired.clone())
    }

    fn team_deletion_allowed(&self) -> bool {
        self.deletion_allowed
    }

    async fn delete_team(&self, team: &TeamRef) -> Result<bool, GitHubError> {
        if !self.deletion_allowed {
            return Err(GitHubError::Config("team deletion is not enabled".into()));
        }
        self.refuse_in_plan_only("delete team")?;
        let mut s = lock(&self.state);
        s.injected()?;
        s.writes.push(format!("delete team {}", team.slug));
        Ok(match s.find(team) {
            Some(id) => s.teams.remove(&id).is_some(),
            None => false,
        })
    }

    async fn team_members(&self, team: &TeamRef) -> Result<Vec<Member>, GitHubError> {
        if self.plan_only {
            return Ok(Vec::new());
        }
        let mut s = lock(&self.state);
        s.injected()?;
        Ok(s.team_mut(team)?.members.clone())
    }

    async fn set_membership(
        &self,
        team: &TeamRef,
        login: &str,
        role: Role,
    ) -> Result<MembershipState, GitHubError> {
        self.refuse_in_plan_only("set membership")?;
        let mut s = lock(&self.state);
        s.injected()?;
        s.writes.push(format!("set {login} {}", role.as_str()));
        if s.unknown.contains(&login.to_ascii_lowercase()) {
            return Err(GitHubError::UnknownLogin {
                login: login.to_owned(),
                message: "Not Found".into(),
            });
        }
        let outside = s.outside_org.contains(&login.to_ascii_lowercase());
        let members = &mut s.team_mut(team)?.members;
        let state = match members.iter_mut().find(|m| m.login.eq_ignore_ascii_case(login)) {
            Some(member) => {
                member.role = role;
                member.state
            }
            None => {
                let state =
                    if outside { MembershipState::Pending } else { MembershipState::Active };
                members.push(Member { state, ..Member::active(login, role) });
                state
            }
        };
        Ok(state)
    }

    async fn remove_membership(&self, team: &TeamRef, login: &str) -> Result<bool, GitHubError> {
        self.refuse_in_plan_only("remove membership")?;
        let mut s = lock(&self.state);
        s.injected()?;
        s.writes.push(format!("remove {login}"));
        let members = &mut s.team_mut(team)?.members;
        let before = members.len();
        members.retain(|m| !m.login.eq_ignore_ascii_case(login));
        Ok(members.len() < before)
    }
}

// ----- publisher -----

/// A [`Publisher`] that keeps what it stored and deduplicates by source + id, like JetStream
/// inside its duplicate window.
#[derive(Clone, Default)]
pub struct MemoryPublisher {
    state: Arc<Mutex<PublisherState>>,
}

#[derive(Default)]
struct PublisherState {
    stored: Vec<Event>,
    calls: usize,
    /// Calls left before every call fails (a crash mid-way); `None`: never.
    fail_after: Option<usize>,
}

impl MemoryPublisher {
    pub fn new() -> Self {
        Self::default()
    }

    /// After `calls` more successful calls, every call fails with a retryable error, as when
    /// the engine loses NATS (or dies) part-way through a step.
    pub fn fail_after(&self, calls: usize) {
        lock(&self.state).fail_after = Some(calls);
    }

    /// Lets calls succeed again.
    pub fn recover(&self) {
        lock(&self.state).fail_after = None;
    }

    /// The events stored, in order (duplicates dropped).
    pub fn events(&self) -> Vec<Event> {
        lock(&self.state).stored.clone()
    }

    /// Every call to [`Publisher::publish`], including duplicates and failures.
    pub fn calls(&self) -> usize {
        lock(&self.state).calls
    }
}

#[async_trait]
impl Publisher for MemoryPublisher {
    async fn publish(&self, event: Event) -> Result<Published, RunError> {
        let mut s = lock(&self.state);
        s.calls += 1;
        match s.fail_after {
            Some(0) => return Err(RunError::retryable("publisher: bus unreachable")),
            Some(n) => s.fail_after = Some(n - 1),
            None => {}
        }
        let same = |e: &Event| e.source() == event.source() && e.id() == event.id();
        if let Some(index) = s.stored.iter().position(same) {
            return Ok(Published { sequence: index as u64 + 1, duplicate: true });
        }
        s.stored.push(event);
        Ok(Published { sequence: s.stored.len() as u64, duplicate: false })
    }
}

// ----- step journal -----

/// An in-memory [`StepJournal`]: share one (it is `Clone`) between two [`RunContext`]s to
/// replay a run, as the engine does after a crash.
///
/// [`RunContext`]: crate::RunContext
#[derive(Clone, Default)]
pub struct MemoryJournal {
    steps: Arc<Mutex<BTreeMap<u32, StoredStep>>>,
    starts: Arc<Mutex<Vec<String>>>,
}

impl MemoryJournal {
    pub fn new() -> Self {
        Self::default()
    }

    /// The names of the steps started (executed, not replayed), in order, across runs.
    pub fn starts(&self) -> Vec<String> {
        lock(&self.starts).clone()
    }

    /// Forgets the finished steps from `index` on, as if the engine had crashed before
    /// journaling them (their side effects, if any, stay done).
    pub fn forget_from(&self, index: u32) {
        lock(&self.steps).retain(|i, _| *i < index);
    }

    /// The finished steps' names and outputs, in order.
    pub fn finished_steps(&self) -> Vec<StoredStep> {
        lock(&self.steps).values().cloned().collect()
    }
}

#[async_trait]
impl StepJournal for MemoryJournal {
    async fn finished(&self, index: u32) -> Result<Option<StoredStep>, RunError> {
        Ok(lock(&self.steps).get(&index).cloned())
    }
    async fn start(&self, _index: u32, name: &str) -> Result<(), RunError> {
        lock(&self.starts).push(name.to_owned());
        Ok(())
    }
    async fn complete(
        &self,
        index: u32,
        name: &str,
        output: &serde_json::Value,
    ) -> Result<(), RunError> {
        let step = StoredStep { name: name.to_owned(), output: output.clone() };
        lock(&self.steps).insert(index, step);
        Ok(())
    }
    async fn fail(&self, _: u32, _: &str, _: &RunError) -> Result<(), RunError> {
        Ok(())
    }
}
