//! `sync_team`: make one team's GitHub team, members and namespace records match the records
//! store, and tear them down when the team is deleted.
//!
//! Triggered by `muster.team.*` (created, updated, deleted, and `muster.team.sync` from the API,
//! `resync` and `sync_environment`); the key is the event subject, the team slug.
//!
//! # Level-triggered
//! The run reads the desired state from the records store in its first step and never from the
//! event body, so duplicates, reordering and missed events are harmless: any run converges the
//! team to what is stored *now*. Only a `muster.team.sync` event's data is read, for two per-run
//! options ([`SyncRequest`]).
//!
//! # Steps (each journaled; a replay returns their stored outputs)
//! Live team:
//! 1. `load`: the team, every environment (all pages), the start time.
//!    Team absent (purged) → the run finishes with `{"absent": true}`. A scheduled sync whose
//!    team already finished a sync that *started* after the tick → `{"coalesced": true}`.
//! 2. `github-team`: [`GitHub::ensure_team`] with the team's name, description and privacy
//!    (`closed` or `secret`, a field of the team) and the stored [`GitHubLink`] as `known`, then
//!    the link stored with [`Records::set_team_status`] (a rename keeps the id: the same team). A
//!    parent team is read here (not in `load`), so a retry waiting for the parent's own first
//!    sync sees its link once it exists. An existing GitHub team with the slug that is not
//!    linked is taken over only with the request's `adopt`, or when GitHub created it since the
//!    run started ([`CLOCK_SKEW`]; the run's own create whose answer was lost); otherwise the
//!    step says `unmanaged`, the members are left alone and the status reports it.
//! 3. `github-members`: observe, [`plan_members`] with the guards of [`SyncTeamSettings`],
//!    [`apply_plan`]; additions are held back for an expired invitation (unless the request
//!    says `reinvite`) and, when [`SyncTeamSettings::invite_non_members`] is off, for someone
//!    outside the organization; a login GitHub refuses alone (unknown, renamed) is listed as
//!    failed and the rest goes on. In plan-only mode the plan is the output and nothing is
//!    sent. The
//!    mass-removal guard (removing every member, a majority, or more than a fraction and a
//!    number of people) fails the run permanently, naming the people and the rule; a
//!    `muster.team.sync` event with `{"allow_mass_removal": true}` (`POST
//!    /v1/teams/{slug}/sync` with that body, an admin's) overrides it for that run.
//! 4. `namespaces`: one [`NamespaceRecord`] per environment, `<team>-<env>`, quota and limits
//!    from the environment's defaults overridden by the team's `quota_profile` (an environment
//!    without that profile keeps its defaults and is listed in the output), role bindings for
//!    the team's members and maintainers groups (see [`SyncTeamSettings::group_prefix`]), the
//!    team's labels, the environment's clusters, deletion flag and network policy flag;
//!    records of environments that no longer exist are set `deleting`.
//! 5. `announce`: `muster.namespace.changed` per namespace record (subject: its environment,
//!    data: the full record), id `<run id>-<environment>`, so a replayed step publishes the same
//!    ids and JetStream drops the copies. Every run announces every record, so the resync tick
//!    also repairs an announcement an agent missed.
//! 6. `record-sync`: the finished sync stored in the team's status (for coalescing), with what
//!    it left undone ([`SyncProblem`]s: an unmanaged GitHub team, held and refused logins).
//!
//! Deleted (tombstoned) team, same shape:
//! 2. `github-team`: the linked GitHub team deleted, by id, when
//!    [`GitHub::team_deletion_allowed`], otherwise retained (said in the output). A team never
//!    linked is not looked up by name: Muster deletes only a team it knows it manages. GitHub
//!    deletes child teams with their parent, so while a child team on GitHub is linked to a
//!    Muster team that is not deleted, nothing is deleted (`blocked`), the team is not purged
//!    and its status says why.
//! 3. `github-members`: nothing to do (the team is gone or retained as it is).
//! 4. `namespaces`: every namespace record of the team set `deleting`.
//! 5. `announce`: as above.
//! 6. `purge`: the team and its records are purged when the teardown is complete: for every
//!    namespace record, its environment has no clusters, or every cluster of the environment
//!    reported the namespace `deleted` or `retained` ([`ClusterOutcome`](crate::records::ClusterOutcome)). For a record whose
//!    environment was itself deleted, the clusters that reported are all that is known: every
//!    one of them must have reported `deleted` or `retained`. Otherwise the run finishes with
//!    the records left `deleting` and lists what it waits for; a later sync (after the agents'
//!    reports, or the next resync tick, which includes tombstoned teams) completes it.
//! 7. `record-sync` when not purged.
//!
//! A team deleted while its live sync runs makes `namespaces` stop (output `superseded`):
//! the run triggered by the deletion, serialised behind it on the same key, tears it down.
//!
//! # Known limits
//! - A namespace record of a deleted environment stays `deleting` (announced on every sync)
//!   until its team is purged; the clusters it waits for are those the environment had when
//!   the record was last synced ([`NamespaceSpec::target_clusters`]).
//! - A teardown keeps each record's spec as last synced: changing an environment's
//!   `allow_namespace_deletion` after a team was deleted does not reach that team's records.
//!
//! # Errors
//! GitHub failures map through `From<GitHubError> for RunError` (rate limits retry with
//! `after`; permissions and guards are permanent); records failures are retryable when
//! [`RecordsError::is_retryable`](crate::records::RecordsError::is_retryable), else permanent.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::github::{
    Adoption, AppliedPlan, DEFAULT_MAX_REMOVAL_FRACTION, DEFAULT_MAX_REMOVAL_MAJORITY,
    DEFAULT_MAX_REMOVALS_ABSOLUTE, DEFAULT_MIN_MAINTAINERS, DesiredTeam, GitHub, GitHubError,
    Guards, HoldReason, MemberPlan, TeamField, TeamRef, apply_plan, plan_members, slug_for,
};
use crate::publisher::Publisher;
use crate::records::{
    Environment, GitHubLink, MAX_PAGE_SIZE, NamespaceFilter, NamespaceRecord, NamespaceSpec,
    NamespaceState, Records, RecordsError, RoleBinding, SyncMark, SyncProblem, SyncProblemKind,
    Team,
};
use crate::workflow::{RunContext, RunError, Workflow};

/// The event type that asks for one team's sync; `subject` is the slug.
pub const TEAM_SYNC: &str = "muster.team.sync";
/// The event type announcing a namespace record to the agents; `subject` is the environment.
pub const NAMESPACE_CHANGED: &str = "muster.namespace.changed";
/// The CloudEvent source of the events `sync_team` publishes.
pub const SYNC_TEAM_SOURCE: &str = "/muster/sync_team";

/// How `sync_team` syncs: the member guards and what every namespace gets.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncTeamSettings {
    /// Mass-removal guard: refuse removing more than this fraction of the current members…
    pub max_removal_fraction: f64,
    /// …and more than this many people.
    pub max_removals_absolute: usize,
    /// Mass-removal guard for every team size: refuse removing more than this fraction of the
    /// current members (1.0: off). Removing all of them is always refused.
    pub max_removal_majority: f64,
    /// The desired state must name at least this many maintainers.
    pub min_maintainers: usize,
    /// The team's group in the clusters is `<group_prefix><team slug>` (e.g. `github:` or an
    /// IdP's prefix). The Muster slug, not the GitHub slug, is used: it never changes, while
    /// the GitHub slug follows renames.
    pub group_prefix: String,
    /// The ClusterRole the team's members group (`<group_prefix><slug>`) gets in each of its
    /// namespaces.
    pub member_role: String,
    /// The ClusterRole the team's maintainers group (`<group_prefix><slug>-maintainers`) gets.
    pub maintainer_role: String,
    /// Whether a desired login outside the organization is invited (`github.invite-non-members`).
    /// Off, such a login is held back and reported: members must already belong to the
    /// organization, so an offboarded person is not invited back.
    pub invite_non_members: bool,
}

impl Default for SyncTeamSettings {
    fn default() -> Self {
        SyncTeamSettings {
            max_removal_fraction: DEFAULT_MAX_REMOVAL_FRACTION,
            max_removals_absolute: DEFAULT_MAX_REMOVALS_ABSOLUTE,
            max_removal_majority: DEFAULT_MAX_REMOVAL_MAJORITY,
            min_maintainers: DEFAULT_MIN_MAINTAINERS,
            group_prefix: String::new(),
            member_role: "edit".to_owned(),
            maintainer_role: "admin".to_owned(),
            invite_non_members: true,
        }
    }
}

/// The data of a `muster.team.sync` event (every field optional; other team events' data is
/// not read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// An operator's override of the mass-removal guard for this run.
    #[serde(default)]
    pub allow_mass_removal: bool,
    /// An operator's explicit adoption of an existing GitHub team that has the team's slug but
    /// is not linked to it (without it such a team is left alone and reported).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt: bool,
    /// Send again the invitations that expired (otherwise those logins are held back, so an
    /// expired invitation is not re-sent on every sync).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reinvite: bool,
    /// The schedule whose tick asked for this sync (set by `resync`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The tick that asked for this sync: the run is coalesced (does nothing) when the team
    /// already finished a sync that started at or after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<DateTime<Utc>>,
}

impl SyncRequest {
    /// The request in `event`: its data for `muster.team.sync`, the defaults otherwise.
    ///
    /// # Errors
    /// Permanent, when a `muster.team.sync` event's data is not a sync request.
    pub fn from_event(event: &Event) -> Result<Self, RunError> {
        if event.ty() != TEAM_SYNC {
            return Ok(SyncRequest::default());
        }
        match crate::event::data_json(event) {
            Ok(serde_json::Value::Null) => Ok(SyncRequest::default()),
            Ok(value) => serde_json::from_value(value).map_err(|e| {
                RunError::permanent(format!("{TEAM_SYNC} data is not a sync request: {e}"))
            }),
            Err(e) => Err(RunError::permanent(format!("{TEAM_SYNC} data is not JSON: {e}"))),
        }
    }
}

/// The `sync_team` workflow. See the [module documentation](self) for its steps and guarantees.
pub struct SyncTeam {
    records: Arc<dyn Records>,
    github: Arc<dyn GitHub>,
    publisher: Arc<dyn Publisher>,
    settings: SyncTeamSettings,
}

impl SyncTeam {
    pub fn new(
        records: Arc<dyn Records>,
        github: Arc<dyn GitHub>,
        publisher: Arc<dyn Publisher>,
        settings: SyncTeamSettings,
    ) -> Self {
        SyncTeam { records, github, publisher, settings }
    }
}

/// Output of `load`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Loaded {
    started_at: DateTime<Utc>,
    team: Option<Team>,
    environments: Vec<Environment>,
}

/// Output of `github-team` on a live team.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EnsuredTeam {
    /// 0 when only planned (plan-only mode, team not yet linked).
    id: u64,
    slug: String,
    /// `created`, `updated`, `adopted`, `unchanged`, `unmanaged` (an existing team waits for
    /// an explicit adoption: nothing was changed) or, in plan-only mode, `planned`.
    action: String,
    changed: Vec<TeamField>,
    /// Why the team was left alone (`unmanaged`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

impl EnsuredTeam {
    fn team_ref(&self) -> TeamRef {
        TeamRef { id: (self.id != 0).then_some(self.id), slug: self.slug.clone() }
    }

    fn link(&self) -> Option<GitHubLink> {
        (self.id != 0 && self.action != "unmanaged" && self.action != "planned")
            .then(|| GitHubLink { id: self.id, slug: self.slug.clone() })
    }
}

/// How far GitHub's clock may lag Muster's: a team with the run's slug that GitHub created
/// after `started_at - CLOCK_SKEW` is the run's own (a create whose answer was lost, retried),
/// one created earlier is someone else's and needs an explicit adoption. GitHub's `created_at`
/// has second precision; clocks kept by NTP agree far better than this. A team someone made
/// by hand within these seconds before the run started is taken for the run's own.
pub const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(10);

/// Output of `github-members`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Members {
    plan_only: bool,
    /// Why nothing was planned (teardown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    skipped: Option<String>,
    plan: MemberPlan,
    /// What was sent; `None` in plan-only mode.
    applied: Option<AppliedPlan>,
}

/// Output of `namespaces`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Namespaces {
    /// Every namespace record of the team after the step, to announce.
    records: Vec<NamespaceRecord>,
    created: Vec<String>,
    updated: Vec<String>,
    unchanged: Vec<String>,
    /// Records in state `deleting` after the step.
    deleting: Vec<String>,
    /// Environments that do not define the team's `quota_profile`: their defaults apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unknown_profile: Vec<String>,
    /// The team was deleted while this run synced it: nothing more is upserted or announced,
    /// the run triggered by the deletion tears it down.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    superseded: bool,
}

/// Output of `announce`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Announced {
    ids: Vec<String>,
    /// Publications the bus had already stored (a replayed step).
    duplicates: usize,
}

/// Output of `github-team` in a teardown.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Teardown {
    /// `deleted`, `already_gone`, `retained` (deletion not allowed), `not_linked` (no GitHub
    /// team known), `planned` (plan-only mode) or `blocked` (child teams Muster still manages
    /// would be deleted with it: the teardown waits).
    action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    team: Option<GitHubLink>,
    /// The Muster teams whose GitHub teams are children of this one (`blocked`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    children: Vec<String>,
}

/// Output of `purge`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Purge {
    purged: bool,
    /// Namespace name → clusters that have not yet reported it deleted or retained.
    waiting: BTreeMap<String, Vec<String>>,
}

#[async_trait]
impl Workflow for SyncTeam {
    fn name(&self) -> &'static str {
        "sync_team"
    }

    /// Covers created, updated, deleted and sync; one pattern, so nothing overlaps.
    fn triggers(&self) -> &'static [&'static str] {
        &["muster.team.*"]
    }

    /// The team slug (the event subject).
    fn key(&self, event: &Event) -> String {
        crate::event::default_key(event)
    }

    /// Also logs one `info` line saying what the sync changed ([`preview::summary_line`]).
    async fn run(&self, ctx: &mut RunContext, event: Event) -> Result<serde_json::Value, RunError> {
        let output = self.sync(ctx, event).await?;
        tracing::info!(run_id = ctx.run_id(), "{}", preview::summary_line(&output));
        Ok(output)
    }
}

impl SyncTeam {
    async fn sync(
        &self,
        ctx: &mut RunContext,
        event: Event,
    ) -> Result<serde_json::Value, RunError> {
        let slug = match event.subject() {
            Some(slug) if !slug.is_empty() => slug.to_owned(),
            _ => {
                return Err(RunError::permanent(format!(
                    "{} event {} has no subject (the team slug)",
                    event.ty(),
                    event.id()
                )));
            }
        };
        let request = SyncRequest::from_event(&event)?;
        let run_id = ctx.run_id().to_owned();

        let loaded: Loaded = ctx.step("load", || self.load(&slug)).await?;
        let Some(team) = loaded.team.clone() else {
            return Ok(json!({ "team": slug, "absent": true }));
        };
        if let (Some(tick), Some(last)) = (request.tick, team.status.last_sync.as_ref())
            && last.started_at >= tick
        {
            return Ok(json!({
                "team": slug,
                "coalesced": true,
                "tick": tick,
                "covered_by": last.run_id,
            }));
        }

        if team.is_deleted() {
            return self.teardown(ctx, &run_id, &team, loaded).await;
        }

        let ensured: EnsuredTeam = ctx
            .step("github-team", || self.ensure_github_team(&team, loaded.started_at, &request))
            .await?;
        let members: Members =
            ctx.step("github-members", || self.sync_members(&team, &ensured, &request)).await?;
        let namespaces: Namespaces =
            ctx.step("namespaces", || self.upsert_namespaces(&team, &loaded.environments)).await?;
        let announced: Announced =
            ctx.step("announce", || self.announce(&run_id, &namespaces.records)).await?;
        let link = ensured.link().or_else(|| team.status.github.clone());
        let problems = sync_problems(&ensured, &members);
        ctx.step("record-sync", || {
            self.record_sync(&slug, &run_id, loaded.started_at, link, problems)
        })
        .await?;

        Ok(json!({
            "team": slug,
            "path": "sync",
            "plan_only": members.plan_only,
            "github": {
                "team": ensured,
                "members": members_summary(&members),
            },
            "namespaces": namespaces_summary(&namespaces),
            "announced": announced,
        }))
    }

    async fn load(&self, slug: &str) -> Result<Loaded, RunError> {
        let started_at = Utc::now();
        let team = match self.records.get_team(slug).await {
            Ok(team) => team,
            Err(RecordsError::NotFound { .. }) => {
                return Ok(Loaded { started_at, team: None, environments: Vec::new() });
            }
            Err(e) => return Err(e.into()),
        };
        let mut environments = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.records.list_environments(after.as_deref(), MAX_PAGE_SIZE).await?;
            environments.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        Ok(Loaded { started_at, team: Some(team), environments })
    }

    /// The team as the GitHub port takes it: the stored link as `known`, and whether an
    /// unlinked GitHub team with its slug may be taken over.
    pub(crate) async fn desired_team(
        &self,
        team: &Team,
        adopt: Adoption,
    ) -> Result<DesiredTeam, RunError> {
        let known =
            team.status.github.as_ref().map(|l| TeamRef { id: Some(l.id), slug: l.slug.clone() });
        Ok(DesiredTeam {
            name: team.spec.name.clone(),
            description: team.spec.description.clone(),
            privacy: team.spec.privacy,
            parent: self.parent_slug(team).await?,
            known,
            adopt,
        })
    }

    /// Creates or updates the GitHub team. An existing GitHub team with the team's slug that
    /// is not linked is taken over only when the request says `adopt`, or when GitHub created
    /// it after this run started (the run's own create, whose answer was lost); otherwise it
    /// is left alone, the step says `unmanaged` and the members are not touched.
    async fn ensure_github_team(
        &self,
        team: &Team,
        started_at: DateTime<Utc>,
        request: &SyncRequest,
    ) -> Result<EnsuredTeam, RunError> {
        let adopt = if request.adopt {
            Adoption::Allowed
        } else {
            let skew = chrono::Duration::from_std(CLOCK_SKEW).unwrap_or_default();
            Adoption::CreatedSince(started_at - skew)
        };
        let desired = self.desired_team(team, adopt).await?;
        let got = match self.github.ensure_team(&desired).await {
            Ok(got) => got,
            Err(GitHubError::Unmanaged { id, slug }) => {
                let problem = GitHubError::Unmanaged { id, slug: slug.clone() }.to_string();
                return Ok(EnsuredTeam {
                    id,
                    slug,
                    action: "unmanaged".to_owned(),
                    changed: Vec::new(),
                    problem: Some(problem),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let action = if self.github.is_plan_only() {
            "planned"
        } else if got.created {
            "created"
        } else if got.adopted {
            "adopted"
        } else if got.changed.is_empty() {
            "unchanged"
        } else {
            "updated"
        };
        let ensured = EnsuredTeam {
            id: got.id,
            slug: got.slug,
            action: action.to_owned(),
            changed: got.changed,
            problem: None,
        };
        if let Some(link) = ensured.link()
            && team.status.github.as_ref() != Some(&link)
        {
            let mut status = team.status.clone();
            status.github = Some(link);
            self.records.set_team_status(team.slug(), status).await?;
        }
        Ok(ensured)
    }

    /// The parent's GitHub slug. A parent that exists in the records but has no GitHub team yet
    /// (its own sync has not run) is a retryable error: nesting under a team GitHub does not
    /// have fails, and unnesting would be wrong. In plan-only mode nothing is sent, so the slug
    /// GitHub would derive from the parent's name stands in.
    /// A parent missing from the records is left out (it may be created later).
    async fn parent_slug(&self, team: &Team) -> Result<Option<String>, RunError> {
        let Some(slug) = &team.spec.parent else {
            return Ok(None);
        };
        let parent = match self.records.get_team(slug).await {
            Ok(parent) => parent,
            Err(RecordsError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match parent.status.github {
            Some(link) => Ok(Some(link.slug)),
            None if self.github.is_plan_only() => Ok(Some(slug_for(&parent.spec.name))),
            None => Err(RunError::retryable(format!(
                "parent team {slug:?} has no GitHub team yet; retrying after its sync"
            ))),
        }
    }

    async fn sync_members(
        &self,
        team: &Team,
        ensured: &EnsuredTeam,
        request: &SyncRequest,
    ) -> Result<Members, RunError> {
        let plan_only = self.github.is_plan_only();
        if let Some(problem) = &ensured.problem {
            return Ok(Members {
                plan_only,
                skipped: Some(problem.clone()),
                plan: MemberPlan::default(),
                applied: None,
            });
        }
        let team_ref = ensured.team_ref();
        let plan = self.member_plan(team, &team_ref, request).await?;
        let applied = if plan_only {
            None
        } else {
            Some(apply_plan(self.github.as_ref(), &team_ref, &plan).await?)
        };
        Ok(Members { plan_only, skipped: None, plan, applied })
    }

    /// The member plan for `team` against its GitHub team as it is now: observed members,
    /// the guards of [`SyncTeamSettings`] with the request's override, and additions held back
    /// (an expired invitation unless `reinvite`; someone outside the organization when
    /// invitations are off).
    ///
    /// # Errors
    /// Permanent when a guard refuses the plan; GitHub's and the records' errors.
    pub(crate) async fn member_plan(
        &self,
        team: &Team,
        team_ref: &TeamRef,
        request: &SyncRequest,
    ) -> Result<MemberPlan, RunError> {
        // A team not on GitHub yet (planned, or to be created) has no members to read.
        let observed = match team_ref.id {
            None => Vec::new(),
            Some(_) => self.github.team_members(team_ref).await?,
        };
        let guards = Guards {
            max_removal_fraction: self.settings.max_removal_fraction,
            max_removals_absolute: self.settings.max_removals_absolute,
            max_removal_majority: self.settings.max_removal_majority,
            min_maintainers: self.settings.min_maintainers,
            acting_login: self.github.acting_login().await?,
            allow_mass_removal: request.allow_mass_removal,
        };
        let mut plan =
            plan_members(&team.spec.members, &team.spec.maintainers, &observed, &guards)?;
        if plan.add.is_empty() {
            return Ok(plan);
        }
        let expired: Vec<String> =
            if request.reinvite { Vec::new() } else { self.github.expired_invitations().await? };
        let mut held = BTreeMap::new();
        for add in &plan.add {
            if expired.iter().any(|l| l.eq_ignore_ascii_case(&add.login)) {
                held.insert(add.login.clone(), HoldReason::InvitationExpired);
            } else if !self.settings.invite_non_members
                && !self.github.is_org_member(&add.login).await?
            {
                held.insert(add.login.clone(), HoldReason::NotOrgMember);
            }
        }
        plan.hold_back(|login| held.get(login).copied());
        Ok(plan)
    }

    /// The record of `team` in `environment`: quota and limits from the environment's
    /// defaults with the team's profile on top, the members and maintainers groups bound to
    /// their roles, the team's labels, and what the agents need to know of the environment.
    /// The second value is `false` when the team's profile is not defined there.
    fn namespace_spec(&self, team: &Team, environment: &Environment) -> (NamespaceSpec, bool) {
        let profile = team.spec.quota_profile.as_deref();
        let (quota, limits, known) = environment.spec.quotas_for(profile);
        let group = format!("{}{}", self.settings.group_prefix, team.slug());
        let spec = NamespaceSpec {
            team: team.slug().to_owned(),
            environment: environment.name().to_owned(),
            quota,
            limits,
            role_bindings: vec![
                RoleBinding { group: group.clone(), role: self.settings.member_role.clone() },
                RoleBinding {
                    group: format!("{group}-maintainers"),
                    role: self.settings.maintainer_role.clone(),
                },
            ],
            quota_profile: profile.filter(|_| known).map(str::to_owned),
            labels: team.spec.labels.clone(),
            target_clusters: environment.spec.clusters.clone(),
            allow_deletion: environment.spec.allow_namespace_deletion,
            network_policy: environment.spec.network_policy,
        };
        (spec, known)
    }

    /// The team's namespace records, by environment.
    pub(crate) async fn namespace_records(
        &self,
        team: &Team,
    ) -> Result<BTreeMap<String, NamespaceRecord>, RunError> {
        let filter = NamespaceFilter { team: Some(team.slug().to_owned()), ..Default::default() };
        let records = self.records.list_namespaces(&filter).await?;
        Ok(records.into_iter().map(|r| (r.spec.environment.clone(), r)).collect())
    }

    async fn upsert_namespaces(
        &self,
        team: &Team,
        environments: &[Environment],
    ) -> Result<Namespaces, RunError> {
        let before = self.namespace_records(team).await?;
        let mut out = Namespaces::default();
        for environment in environments {
            let (spec, profile_known) = self.namespace_spec(team, environment);
            if !profile_known {
                out.unknown_profile.push(environment.name().to_owned());
            }
            let record = match self.records.upsert_namespace(spec).await {
                Ok(record) => record,
                Err(RecordsError::Tombstoned { .. }) => {
                    return Ok(Namespaces { superseded: true, ..Namespaces::default() });
                }
                Err(e) => return Err(e.into()),
            };
            match before.get(environment.name()) {
                None => out.created.push(record.name.clone()),
                Some(old) if old.resource_version != record.resource_version => {
                    out.updated.push(record.name.clone())
                }
                Some(_) => out.unchanged.push(record.name.clone()),
            }
            out.records.push(record);
        }
        for (environment, old) in &before {
            if environments.iter().any(|e| e.name() == environment) {
                continue;
            }
            let record = self
                .records
                .set_namespace_state(&team.spec.slug, environment, NamespaceState::Deleting)
                .await?;
            if record.resource_version == old.resource_version {
                out.unchanged.push(record.name.clone());
            } else {
                out.updated.push(record.name.clone());
            }
            out.records.push(record);
        }
        out.records.sort_by(|a, b| a.spec.environment.cmp(&b.spec.environment));
        out.deleting = deleting_names(&out.records);
        Ok(out)
    }

    async fn mark_all_deleting(&self, team: &Team) -> Result<Namespaces, RunError> {
        let filter = NamespaceFilter { team: Some(team.slug().to_owned()), ..Default::default() };
        let mut out = Namespaces::default();
        for old in self.records.list_namespaces(&filter).await? {
            let record = self
                .records
                .set_namespace_state(
                    &team.spec.slug,
                    &old.spec.environment,
                    NamespaceState::Deleting,
                )
                .await?;
            if record.resource_version == old.resource_version {
                out.unchanged.push(record.name.clone());
            } else {
                out.updated.push(record.name.clone());
            }
            out.records.push(record);
        }
        out.deleting = deleting_names(&out.records);
        Ok(out)
    }

    async fn announce(
        &self,
        run_id: &str,
        records: &[NamespaceRecord],
    ) -> Result<Announced, RunError> {
        let mut out = Announced::default();
        for record in records {
            let id = announce_id(run_id, &record.spec.environment);
            let data = serde_json::to_value(record).map_err(|e| {
                RunError::permanent(format!("namespace record {} is not JSON: {e}", record.name))
            })?;
            let event = EventBuilderV10::new()
                .id(id.clone())
                .source(SYNC_TEAM_SOURCE)
                .ty(NAMESPACE_CHANGED)
                .subject(record.spec.environment.clone())
                .time(Utc::now())
                .data("application/json", data)
                .build()
                .map_err(|e| RunError::permanent(format!("building {NAMESPACE_CHANGED}: {e}")))?;
            if self.publisher.publish(event).await?.duplicate {
                out.duplicates += 1;
            }
            out.ids.push(id);
        }
        Ok(out)
    }

    async fn record_sync(
        &self,
        slug: &str,
        run_id: &str,
        started_at: DateTime<Utc>,
        github: Option<GitHubLink>,
        problems: Vec<SyncProblem>,
    ) -> Result<SyncMark, RunError> {
        let mark = SyncMark { run_id: run_id.to_owned(), started_at, finished_at: Utc::now() };
        // Read again: the status may have changed since `load` (this run's own link).
        let mut status = self.records.get_team(slug).await?.status;
        if github.is_some() {
            status.github = github;
        }
        status.last_sync = Some(mark.clone());
        status.problems = problems;
        self.records.set_team_status(slug, status).await?;
        Ok(mark)
    }

    async fn teardown(
        &self,
        ctx: &mut RunContext,
        run_id: &str,
        team: &Team,
        loaded: Loaded,
    ) -> Result<serde_json::Value, RunError> {
        let slug = team.slug().to_owned();
        let github: Teardown = ctx.step("github-team", || self.teardown_github(team)).await?;
        let members: Members = ctx
            .step("github-members", || async {
                Ok::<_, RunError>(Members {
                    plan_only: self.github.is_plan_only(),
                    skipped: Some(
                        "the team is deleted: its GitHub members are left as they are".into(),
                    ),
                    plan: MemberPlan::default(),
                    applied: None,
                })
            })
            .await?;
        let namespaces: Namespaces =
            ctx.step("namespaces", || self.mark_all_deleting(team)).await?;
        let announced: Announced =
            ctx.step("announce", || self.announce(run_id, &namespaces.records)).await?;
        let blocked = github.action == "blocked";
        let purge: Purge = ctx
            .step("purge", || async {
                if blocked {
                    // The GitHub team is still there: purging would orphan it.
                    return Ok(Purge { purged: false, waiting: BTreeMap::new() });
                }
                self.purge_if_complete(&slug).await
            })
            .await?;
        if !purge.purged {
            let link = team.status.github.clone();
            let problems = teardown_problems(&github);
            ctx.step("record-sync", || {
                self.record_sync(&slug, run_id, loaded.started_at, link, problems)
            })
            .await?;
        }
        Ok(json!({
            "team": slug,
            "path": "teardown",
            "plan_only": members.plan_only,
            "github": { "team": github, "members": members_summary(&members) },
            "namespaces": namespaces_summary(&namespaces),
            "announced": announced,
            "purged": purge.purged,
            "waiting": purge.waiting,
        }))
    }

    /// Deletes the linked GitHub team when allowed, by its id. GitHub deletes a team's child
    /// teams with it, so a team whose GitHub children are linked to Muster teams that are not
    /// deleted is not deleted: the teardown waits (`blocked`) until they are deleted or moved.
    async fn teardown_github(&self, team: &Team) -> Result<Teardown, RunError> {
        let link = team.status.github.clone();
        let mut children = Vec::new();
        let action = match &link {
            _ if self.github.is_plan_only() => "planned",
            None => "not_linked",
            Some(_) if !self.github.team_deletion_allowed() => "retained",
            Some(link) => {
                let team_ref = TeamRef { id: Some(link.id), slug: link.slug.clone() };
                children = self.managed_children(&team_ref).await?;
                if !children.is_empty() {
                    "blocked"
                } else if self.github.delete_team(&team_ref).await? {
                    "deleted"
                } else {
                    "already_gone"
                }
            }
        };
        Ok(Teardown { action: action.to_owned(), team: link, children })
    }

    /// The live (not deleted) Muster teams linked to a child team of `team` on GitHub.
    async fn managed_children(&self, team: &TeamRef) -> Result<Vec<String>, RunError> {
        let children = self.github.child_teams(team).await?;
        if children.is_empty() {
            return Ok(Vec::new());
        }
        let mut managed = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.records.list_teams(after.as_deref(), MAX_PAGE_SIZE).await?;
            for candidate in &page.items {
                let linked = candidate
                    .status
                    .github
                    .as_ref()
                    .is_some_and(|l| children.iter().any(|c| c.id == Some(l.id)));
                if linked && !candidate.is_deleted() {
                    managed.push(candidate.slug().to_owned());
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        Ok(managed)
    }

    async fn purge_if_complete(&self, slug: &str) -> Result<Purge, RunError> {
        let waiting = teardown_waiting(self.records.as_ref(), slug).await?;
        if !waiting.is_empty() {
            return Ok(Purge { purged: false, waiting });
        }
        self.records.purge_team(slug).await?;
        Ok(Purge { purged: true, waiting })
    }
}

/// What the teardown of team `slug` still waits for: namespace name → the clusters that have
/// not reported it `deleted` or `retained`. Empty when the team may be purged (also when it has
/// no namespace records, or is unknown).
///
/// A record's clusters are its environment's current clusters; for a record whose environment
/// was deleted, the clusters it had at the last sync ([`NamespaceSpec::target_clusters`]).
///
/// # Errors
/// The records store's, when listing the records or reading an environment fails.
pub async fn teardown_waiting(
    records: &dyn Records,
    slug: &str,
) -> Result<BTreeMap<String, Vec<String>>, RecordsError> {
    let filter = NamespaceFilter { team: Some(slug.to_owned()), ..Default::default() };
    let mut waiting = BTreeMap::new();
    for record in records.list_namespaces(&filter).await? {
        let done =
            |cluster: &str| record.clusters.get(cluster).is_some_and(|s| s.outcome.ends_teardown());
        let clusters: Vec<String> = match records.get_environment(&record.spec.environment).await {
            Ok(environment) => environment.spec.clusters,
            // The environment is gone: the clusters it had at the last sync.
            Err(RecordsError::NotFound { .. }) => record.spec.target_clusters.clone(),
            Err(e) => return Err(e),
        };
        let pending: Vec<String> = clusters.into_iter().filter(|c| !done(c)).collect();
        if !pending.is_empty() {
            waiting.insert(record.name.clone(), pending);
        }
    }
    Ok(waiting)
}

/// The id of the announcement of `environment`'s namespace record by run `run_id`: the same on
/// every replay of the run, different for every run.
pub fn announce_id(run_id: &str, environment: &str) -> String {
    format!("{run_id}-{environment}")
}

fn deleting_names(records: &[NamespaceRecord]) -> Vec<String> {
    records.iter().filter(|r| r.state == NamespaceState::Deleting).map(|r| r.name.clone()).collect()
}

/// What a live sync leaves undone, for the team's status.
fn sync_problems(ensured: &EnsuredTeam, members: &Members) -> Vec<SyncProblem> {
    let mut problems = Vec::new();
    if let Some(message) = &ensured.problem {
        problems.push(SyncProblem {
            kind: SyncProblemKind::UnmanagedGitHubTeam,
            login: None,
            message: message.clone(),
        });
    }
    for held in &members.plan.held {
        problems.push(SyncProblem {
            kind: SyncProblemKind::LoginHeld,
            login: Some(held.login.clone()),
            message: format!("{} was not added: {}", held.login, held.reason.describe()),
        });
    }
    for failed in members.applied.iter().flat_map(|a| &a.failed) {
        problems.push(SyncProblem {
            kind: SyncProblemKind::LoginRefused,
            login: Some(failed.login.clone()),
            message: failed.error.clone(),
        });
    }
    problems
}

/// What a teardown waits for on GitHub, for the team's status.
fn teardown_problems(github: &Teardown) -> Vec<SyncProblem> {
    if github.action != "blocked" {
        return Vec::new();
    }
    let slug = github.team.as_ref().map_or("", |l| l.slug.as_str());
    vec![SyncProblem {
        kind: SyncProblemKind::ManagedChildTeams,
        login: None,
        message: format!(
            "GitHub team {slug:?} is not deleted: GitHub would delete its child teams with it, \
             and these Muster teams still manage them: {}; delete them or change their parent \
             first",
            github.children.join(", ")
        ),
    }]
}

fn members_summary(members: &Members) -> serde_json::Value {
    let mut out = json!({
        "plan_only": members.plan_only,
        "pending": members.plan.pending_untouched,
        "protected": members.plan.protected,
        "unchanged": members.plan.unchanged,
    });
    for (key, logins) in [("owners", &members.plan.owners), ("inherited", &members.plan.inherited)]
    {
        if !logins.is_empty() {
            out[key] = json!(logins);
        }
    }
    if !members.plan.held.is_empty() {
        out["held"] = json!(members.plan.held);
    }
    if let Some(skipped) = &members.skipped {
        out["skipped"] = json!(skipped);
    }
    match &members.applied {
        Some(applied) => {
            out["added"] = json!(applied.added);
            out["invited"] = json!(applied.invited);
            out["role_changed"] = json!(applied.role_changed);
            out["removed"] = json!(applied.removed);
            if !applied.failed.is_empty() {
                out["failed"] = json!(applied.failed);
            }
        }
        None if members.skipped.is_none() => out["plan"] = json!(members.plan),
        None => {}
    }
    out
}

fn namespaces_summary(namespaces: &Namespaces) -> serde_json::Value {
    json!({
        "created": namespaces.created,
        "updated": namespaces.updated,
        "unchanged": namespaces.unchanged,
        "deleting": namespaces.deleting,
        "unknown_profile": namespaces.unknown_profile,
        "superseded": namespaces.superseded,
    })
}

pub mod preview;

#[cfg(test)]
mod tests;
