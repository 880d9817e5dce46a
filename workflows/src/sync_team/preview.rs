//! Previews: what the next sync of a team would change, computed with the functions the run
//! uses and sending nothing; and the readable lines of a preview, of a finished run's steps and
//! of a finished run's output.
//!
//! [`SyncTeam::preview`] reads the records and GitHub (read-only; nothing at all without
//! credentials) and follows the run step by step, so the preview cannot drift from the sync:
//! - the GitHub team: [`SyncTeam::desired_team`] and [`GitHub::plan_team`], what `github-team`
//!   would send; an existing team that is not linked is shown as adopted only when the request
//!   says `adopt`, and otherwise as left alone, as the run leaves it;
//! - the members: [`SyncTeam::member_plan`], the run's own observation, guards and held-back
//!   logins. When the mass-removal guard refuses, the refusal is stated and the plan with the
//!   override is shown too, so an operator sees whom the override would remove;
//! - the namespace records: [`SyncTeam::namespace_spec`] for every environment against the
//!   stored records, judged by [`NamespaceRecord::upserted`] and [`NamespaceRecord::with_state`],
//!   the functions the records stores use to decide whether an upsert changes a record.
//!
//! A deleted team previews its teardown: the GitHub team deleted or retained, its namespace
//! records set `deleting`, and the clusters the purge waits for.
//!
//! # Guarantees
//! A preview sends nothing: it drives GitHub through a read-only view of the port whose writes
//! are refused, and it never writes the records or publishes.
//!
//! The rendering is pure: [`render`] (a preview), [`run_lines`] (a finished run's steps, for
//! `engine runs show`) and [`summary_line`] (one line per finished sync, for the log). Lines
//! start with `+` (created or added), `-` (deleted or removed), `~` (changed), `!` (refused or
//! blocked) or `note:`, under a heading per part.
//!
//! # Errors
//! [`SyncTeam::preview`] fails only where the run would retry: a rate limit, GitHub or the
//! records store unavailable (retryable [`RunError`]s). What would make the run fail for good
//! (a guard, a permission GitHub refuses) is part of the preview, as [`Blocked`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{EnsuredTeam, Members, Namespaces, SyncRequest, SyncTeam, Teardown, teardown_waiting};
use crate::github::{
    Adoption, DesiredTeam, GitHub, GitHubError, GitHubTeam, Member, MemberPlan, MembershipState,
    Privacy, Role, TeamField, TeamRef,
};
use crate::records::{Environment, NamespaceFilter, NamespaceRecord, NamespaceState, Team};
use crate::workflow::RunError;

/// What the next sync of one team would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamPreview {
    /// The team's slug.
    pub team: String,
    /// `sync` for a live team, `teardown` for a deleted one.
    pub path: PreviewPath,
    /// The sync sends nothing to GitHub (plan-only mode): it records this plan instead.
    pub plan_only: bool,
    /// GitHub was read. Without credentials it is not, and the plan starts from nothing.
    pub github_read: bool,
    /// The request's options the preview applied.
    pub adopt: bool,
    pub allow_mass_removal: bool,
    pub github: TeamChange,
    pub members: MembersPreview,
    pub namespaces: NamespacesPreview,
    /// Where the sync would stop for good, and why: the steps after it are not reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocked>,
    /// How many changes the sync would make: the team's, every member added, re-roled or
    /// removed, every namespace record created, updated or set `deleting`.
    pub changes: usize,
    /// The preview as readable lines ([`render`]).
    pub lines: Vec<String>,
}

/// Which path of `sync_team` a preview follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreviewPath {
    Sync,
    Teardown,
}

/// What would happen to the GitHub team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeamAction {
    /// No team found: it would be created.
    Create,
    /// An existing team that is not linked would be taken over (`adopt`).
    Adopt,
    /// An existing team that is not linked is left alone: without `adopt` the sync changes
    /// nothing on GitHub, members included.
    Unmanaged,
    /// The linked team would have the fields in `changes` updated.
    Update,
    Unchanged,
    /// Teardown: the linked team would be deleted.
    Delete,
    /// Teardown: the linked team is kept (`github.allow-team-deletion` is off).
    Retain,
    /// Teardown: no GitHub team is linked; nothing is looked up by name.
    NotLinked,
    /// Teardown: GitHub would delete child teams other Muster teams manage; the teardown waits.
    Blocked,
}

/// The GitHub team's part of a preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamChange {
    pub action: TeamAction,
    /// GitHub's id of the team, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub slug: String,
    /// The desired name, privacy and parent (slug of the parent GitHub team).
    pub name: String,
    pub privacy: Privacy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The fields an update changes, with the desired values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// The Muster teams managing child teams (`blocked`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
}

/// One field of a GitHub team that would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// `name`, `description`, `privacy`, `parent` or `slug`.
    pub field: String,
    /// The value on GitHub, when known (the slug's; the port reports only which other fields
    /// differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The new value; none for a parent removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// The members' part of a preview.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersPreview {
    /// Why the members would not be synced (team left unmanaged, team deleted, sync blocked
    /// before them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The member plan; when `refused`, the plan with the guard overridden, naming everyone
    /// the override would remove.
    pub plan: MemberPlan,
    /// The mass-removal guard's refusal: the sync fails before sending any of the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// The namespace records' part of a preview.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacesPreview {
    pub create: Vec<NamespaceRef>,
    pub update: Vec<NamespaceUpdate>,
    /// Records that would be set `deleting` (environment gone, or team deleted).
    pub delete: Vec<NamespaceRef>,
    pub unchanged: Vec<String>,
    /// Records already `deleting` (among `unchanged`): waiting for their clusters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleting: Vec<String>,
    /// Environments that do not define the team's `quota_profile`: their defaults apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_profile: Vec<String>,
    /// Teardown: namespace → the clusters that have not reported it deleted or retained; the
    /// team is purged when this is empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub waiting: BTreeMap<String, Vec<String>>,
}

/// A namespace record by name and environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRef {
    pub name: String,
    pub environment: String,
}

/// A namespace record that would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceUpdate {
    pub name: String,
    pub environment: String,
    pub changes: Vec<SpecChange>,
}

/// One value of a namespace record that would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecChange {
    /// `quota`, `limits`, `labels`, `role_bindings`, `target_clusters`, `quota_profile`,
    /// `allow_deletion`, `network_policy` or `state`.
    pub field: String,
    /// The entry of a map or list field: a quota or limit name, a label, a group, a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The value now; none when the entry is added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The value after the sync; none when the entry is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Where a sync would fail for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    /// The step that fails: `github-team` or `github-members`.
    pub step: String,
    /// The error the run would fail with.
    pub reason: String,
}

impl SyncTeam {
    /// What the next sync of team `slug` with `request`'s options would do, sending nothing.
    ///
    /// # Errors
    /// Retryable: GitHub or the records store cannot answer now (rate limit, outage).
    /// Permanent: no team `slug`, or records that cannot be read.
    pub async fn preview(
        &self,
        slug: &str,
        request: &SyncRequest,
    ) -> Result<TeamPreview, RunError> {
        let view = self.read_only();
        view.preview_with(slug, request).await
    }

    /// This workflow with a GitHub port that refuses every write: a preview cannot send
    /// anything, whatever the functions it shares with the run do.
    fn read_only(&self) -> SyncTeam {
        SyncTeam {
            records: self.records.clone(),
            github: Arc::new(ReadOnly(self.github.clone())),
            publisher: self.publisher.clone(),
            settings: self.settings.clone(),
        }
    }

    async fn preview_with(
        &self,
        slug: &str,
        request: &SyncRequest,
    ) -> Result<TeamPreview, RunError> {
        let loaded = self.load(slug).await?;
        let Some(team) = loaded.team else {
            return Err(RunError::permanent(format!("team {slug:?} not found")));
        };
        let plan_only = self.github.is_plan_only();
        // Without credentials the adapter knows no identity and reads nothing. A permanent
        // failure to read it (bad credentials) shows in the plan of the GitHub team below.
        let github_read = !plan_only
            || match self.github.acting_login().await.map_err(RunError::from) {
                Ok(login) => login.is_some(),
                Err(e) if e.is_retryable() => return Err(e),
                Err(_) => true,
            };
        let mut preview = TeamPreview {
            team: slug.to_owned(),
            path: PreviewPath::Sync,
            plan_only,
            github_read,
            adopt: request.adopt,
            allow_mass_removal: request.allow_mass_removal,
            github: TeamChange {
                action: TeamAction::Unchanged,
                id: team.status.github.as_ref().map(|l| l.id),
                slug: team.status.github.as_ref().map_or_else(String::new, |l| l.slug.clone()),
                name: team.spec.name.clone(),
                privacy: team.spec.privacy,
                parent: None,
                changes: Vec::new(),
                children: Vec::new(),
            },
            members: MembersPreview::default(),
            namespaces: NamespacesPreview::default(),
            blocked: None,
            changes: 0,
            lines: Vec::new(),
        };
        if team.is_deleted() {
            preview.path = PreviewPath::Teardown;
            self.preview_teardown(&team, &mut preview).await?;
        } else {
            self.preview_sync(&team, request, &mut preview).await?;
            preview.namespaces = self.preview_namespaces(&team, &loaded.environments).await?;
        }
        preview.changes = count_changes(&preview);
        preview.lines = render(&preview);
        Ok(preview)
    }

    /// The GitHub team and its members, as `github-team` and `github-members` would do them.
    async fn preview_sync(
        &self,
        team: &Team,
        request: &SyncRequest,
        preview: &mut TeamPreview,
    ) -> Result<(), RunError> {
        let adopt = if request.adopt { Adoption::Allowed } else { Adoption::Never };
        let desired = self.desired_team(team, adopt).await?;
        preview.github.parent = desired.parent.clone();
        let planned = match self.github.plan_team(&desired).await.map_err(RunError::from) {
            Ok(planned) => planned,
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => {
                preview.github.slug = crate::github::slug_for(&desired.name);
                preview.blocked = Some(Blocked { step: "github-team".into(), reason: e.message });
                preview.members.skipped = Some("the sync stops at the GitHub team".into());
                return Ok(());
            }
        };
        preview.github.slug = planned.slug.clone();
        preview.github.id = (planned.id != 0).then_some(planned.id);
        preview.github.action = if planned.created {
            TeamAction::Create
        } else if planned.adopted && !request.adopt {
            TeamAction::Unmanaged
        } else if planned.adopted {
            TeamAction::Adopt
        } else if planned.changed.is_empty() {
            TeamAction::Unchanged
        } else {
            TeamAction::Update
        };
        preview.github.changes = field_changes(&desired, &planned);
        if let Some(known) = &desired.known
            && !planned.created
            && !planned.adopted
            && known.slug != planned.slug
        {
            preview.github.changes.push(FieldChange {
                field: "slug".into(),
                from: Some(known.slug.clone()),
                to: Some(planned.slug.clone()),
            });
        }
        if preview.github.action == TeamAction::Unmanaged {
            preview.members.skipped = Some(
                "the GitHub team is not linked and not adopted: its members are left as they are"
                    .into(),
            );
            return Ok(());
        }
        let team_ref = planned.team_ref();
        match self.member_plan(team, &team_ref, request).await {
            Ok(plan) => preview.members.plan = plan,
            Err(e) if e.is_retryable() => return Err(e),
            Err(refusal) => {
                // Only the mass-removal guard depends on the override: if the plan passes with
                // it, the guard refused; otherwise the sync fails for another reason.
                let overridden = SyncRequest { allow_mass_removal: true, ..request.clone() };
                match self.member_plan(team, &team_ref, &overridden).await {
                    Ok(plan) if !request.allow_mass_removal => {
                        preview.members.plan = plan;
                        preview.members.refused = Some(refusal.message.clone());
                    }
                    Err(e) if e.is_retryable() => return Err(e),
                    _ => {}
                }
                preview.blocked =
                    Some(Blocked { step: "github-members".into(), reason: refusal.message });
            }
        }
        Ok(())
    }

    /// The namespace records, as `namespaces` would upsert them.
    async fn preview_namespaces(
        &self,
        team: &Team,
        environments: &[Environment],
    ) -> Result<NamespacesPreview, RunError> {
        let before = self.namespace_records(team).await?;
        let now = Utc::now();
        let mut out = NamespacesPreview::default();
        for environment in environments {
            let (spec, profile_known) = self.namespace_spec(team, environment);
            if !profile_known {
                out.unknown_profile.push(environment.name().to_owned());
            }
            match before.get(environment.name()) {
                None => out.create.push(NamespaceRef {
                    name: spec.namespace_name(),
                    environment: environment.name().to_owned(),
                }),
                Some(old) => match old.upserted(spec, now) {
                    None => out.unchanged.push(old.name.clone()),
                    Some(new) => out.update.push(NamespaceUpdate {
                        name: old.name.clone(),
                        environment: environment.name().to_owned(),
                        changes: spec_changes(old, &new),
                    }),
                },
            }
        }
        for (environment, old) in &before {
            if !environments.iter().any(|e| e.name() == environment) {
                mark_deleting(&mut out, old, now);
            }
        }
        Ok(out)
    }

    /// A deleted team's teardown, as the run's teardown path would do it.
    async fn preview_teardown(
        &self,
        team: &Team,
        preview: &mut TeamPreview,
    ) -> Result<(), RunError> {
        let link = team.status.github.clone();
        preview.github.action = match &link {
            None => TeamAction::NotLinked,
            Some(_) if !self.github.team_deletion_allowed() => TeamAction::Retain,
            Some(link) => {
                let team_ref = TeamRef { id: Some(link.id), slug: link.slug.clone() };
                match self.managed_children(&team_ref).await {
                    Ok(children) if children.is_empty() => TeamAction::Delete,
                    Ok(children) => {
                        preview.github.children = children;
                        TeamAction::Blocked
                    }
                    Err(e) if e.is_retryable() => return Err(e),
                    Err(e) => {
                        preview.blocked =
                            Some(Blocked { step: "github-team".into(), reason: e.message });
                        TeamAction::Retain
                    }
                }
            }
        };
        preview.members.skipped =
            Some("the team is deleted: its GitHub members are left as they are".into());
        let filter = NamespaceFilter { team: Some(team.slug().to_owned()), ..Default::default() };
        let now = Utc::now();
        for old in self.records.list_namespaces(&filter).await? {
            mark_deleting(&mut preview.namespaces, &old, now);
        }
        preview.namespaces.waiting = teardown_waiting(self.records.as_ref(), team.slug()).await?;
        Ok(())
    }
}

/// `old` set `deleting`, or left as it is when it already is.
fn mark_deleting(out: &mut NamespacesPreview, old: &NamespaceRecord, now: chrono::DateTime<Utc>) {
    if old.with_state(NamespaceState::Deleting, now).is_some() {
        out.delete.push(NamespaceRef {
            name: old.name.clone(),
            environment: old.spec.environment.clone(),
        });
    } else {
        out.unchanged.push(old.name.clone());
        out.deleting.push(old.name.clone());
    }
}

/// The fields the port reports as differing: what GitHub holds and what the team wants.
fn field_changes(desired: &DesiredTeam, planned: &GitHubTeam) -> Vec<FieldChange> {
    planned
        .changed
        .iter()
        .map(|field| {
            let (name, to) = match field {
                TeamField::Name => ("name", Some(desired.name.clone())),
                TeamField::Description => ("description", Some(desired.description.clone())),
                TeamField::Privacy => ("privacy", Some(desired.privacy.as_str().to_owned())),
                TeamField::Parent => ("parent", desired.parent.clone()),
            };
            let from = planned.previous.get(field).cloned().flatten();
            FieldChange { field: name.into(), from, to }
        })
        .collect()
}

/// Every value of `old`'s record that `new` changes, entry by entry for maps and lists.
fn spec_changes(old: &NamespaceRecord, new: &NamespaceRecord) -> Vec<SpecChange> {
    let mut out = Vec::new();
    let (a, b) = (&old.spec, &new.spec);
    map_changes(&mut out, "quota", &a.quota, &b.quota);
    map_changes(&mut out, "limits", &a.limits, &b.limits);
    let bindings = |spec: &crate::records::NamespaceSpec| -> BTreeMap<String, String> {
        spec.role_bindings.iter().map(|r| (r.group.clone(), r.role.clone())).collect()
    };
    map_changes(&mut out, "role_bindings", &bindings(a), &bindings(b));
    map_changes(&mut out, "labels", &a.labels, &b.labels);
    let clusters = |spec: &crate::records::NamespaceSpec| -> BTreeMap<String, String> {
        spec.target_clusters.iter().map(|c| (c.clone(), c.clone())).collect()
    };
    map_changes(&mut out, "target_clusters", &clusters(a), &clusters(b));
    let mut value = |field: &str, from: Option<String>, to: Option<String>| {
        if from != to {
            out.push(SpecChange { field: field.into(), key: None, from, to });
        }
    };
    value("quota_profile", a.quota_profile.clone(), b.quota_profile.clone());
    value("allow_deletion", Some(a.allow_deletion.to_string()), Some(b.allow_deletion.to_string()));
    value("network_policy", Some(a.network_policy.to_string()), Some(b.network_policy.to_string()));
    value("state", Some(old.state.to_string()), Some(new.state.to_string()));
    out
}

fn map_changes(
    out: &mut Vec<SpecChange>,
    field: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let (from, to) = (old.get(key), new.get(key));
        if from != to {
            out.push(SpecChange {
                field: field.into(),
                key: Some(key.clone()),
                from: from.cloned(),
                to: to.cloned(),
            });
        }
    }
}

fn count_changes(preview: &TeamPreview) -> usize {
    let github = &preview.github;
    // A slug follows the name: it is shown, not counted.
    let fields = github.changes.iter().filter(|c| c.field != "slug").count();
    let team = match github.action {
        TeamAction::Create | TeamAction::Delete => 1,
        TeamAction::Adopt => 1 + fields,
        TeamAction::Update => fields,
        _ => 0,
    };
    let plan = &preview.members.plan;
    let members = plan.add.len() + plan.change_role.len() + plan.remove.len();
    let ns = &preview.namespaces;
    team + members + ns.create.len() + ns.update.len() + ns.delete.len()
}

/// A GitHub port for previews: reads go through, writes are refused.
struct ReadOnly(Arc<dyn GitHub>);

impl ReadOnly {
    fn refused(what: &str) -> GitHubError {
        GitHubError::Config(format!("a preview sends nothing to GitHub ({what} refused)"))
    }
}

#[async_trait]
impl GitHub for ReadOnly {
    fn is_plan_only(&self) -> bool {
        self.0.is_plan_only()
    }

    async fn acting_login(&self) -> Result<Option<String>, GitHubError> {
        self.0.acting_login().await
    }

    async fn ensure_team(&self, _team: &DesiredTeam) -> Result<GitHubTeam, GitHubError> {
        Err(Self::refused("ensure_team"))
    }

    async fn plan_team(&self, team: &DesiredTeam) -> Result<GitHubTeam, GitHubError> {
        self.0.plan_team(team).await
    }

    async fn child_teams(&self, team: &TeamRef) -> Result<Vec<TeamRef>, GitHubError> {
        self.0.child_teams(team).await
    }

    async fn is_org_member(&self, login: &str) -> Result<bool, GitHubError> {
        self.0.is_org_member(login).await
    }

    async fn expired_invitations(&self) -> Result<Vec<String>, GitHubError> {
        self.0.expired_invitations().await
    }

    fn team_deletion_allowed(&self) -> bool {
        self.0.team_deletion_allowed()
    }

    async fn delete_team(&self, _team: &TeamRef) -> Result<bool, GitHubError> {
        Err(Self::refused("delete_team"))
    }

    async fn team_members(&self, team: &TeamRef) -> Result<Vec<Member>, GitHubError> {
        self.0.team_members(team).await
    }

    async fn set_membership(
        &self,
        _team: &TeamRef,
        _login: &str,
        _role: Role,
    ) -> Result<MembershipState, GitHubError> {
        Err(Self::refused("set_membership"))
    }

    async fn remove_membership(&self, _team: &TeamRef, _login: &str) -> Result<bool, GitHubError> {
        Err(Self::refused("remove_membership"))
    }
}

// ----- rendering -----

const NONE: &str = "(none)";

fn or_none(value: Option<&str>) -> &str {
    value.unwrap_or(NONE)
}

/// The preview as readable lines: a heading per part (`GitHub team`, `members`, `namespaces`),
/// one line per change under it, notes for what is left alone and why.
pub fn render(preview: &TeamPreview) -> Vec<String> {
    let mut lines = Vec::new();
    let verb = match preview.path {
        PreviewPath::Sync => "sync",
        PreviewPath::Teardown => "teardown",
    };
    let count = count_changes(preview);
    lines.push(match count {
        0 => format!("team {}: the next {verb} changes nothing", preview.team),
        1 => format!("team {}: the next {verb} makes 1 change", preview.team),
        n => format!("team {}: the next {verb} makes {n} changes", preview.team),
    });
    if !preview.github_read {
        lines.push(
            "note: GitHub is not read (no credentials): the plan starts from nothing".to_owned(),
        );
    }
    if preview.plan_only {
        lines.push(
            "note: plan-only mode: the sync records this plan and sends nothing to GitHub"
                .to_owned(),
        );
    }
    if let Some(blocked) = &preview.blocked {
        lines.push(format!("! the sync stops at {}: {}", blocked.step, blocked.reason));
    }
    lines.push("GitHub team:".to_owned());
    lines.extend(team_lines(preview).into_iter().map(indent));
    lines.push("members:".to_owned());
    let members = &preview.members;
    let mut member = Vec::new();
    if let Some(refused) = &members.refused {
        member.push(format!(
            "! refused by the mass-removal guard: {refused}. Nothing below is sent unless an \
             admin syncs with allow_mass_removal (engine teams sync {} --allow-mass-removal)",
            preview.team
        ));
    }
    match &members.skipped {
        Some(skipped) => member.push(format!("note: not synced: {skipped}")),
        None => member.extend(member_lines(&members.plan)),
    }
    if member.is_empty() {
        member.push("no change".to_owned());
    }
    lines.extend(member.into_iter().map(indent));
    lines.push("namespaces:".to_owned());
    let mut namespaces = namespace_lines(&preview.namespaces);
    if preview.blocked.is_some() && preview.path == PreviewPath::Sync {
        namespaces.insert(0, "note: not reached while the sync stops before them".to_owned());
    }
    if namespaces.is_empty() {
        namespaces.push("no change".to_owned());
    }
    lines.extend(namespaces.into_iter().map(indent));
    lines
}

fn indent(line: String) -> String {
    format!("  {line}")
}

fn team_lines(preview: &TeamPreview) -> Vec<String> {
    let github = &preview.github;
    let id = github.id.map(|id| format!(" (id {id})")).unwrap_or_default();
    let mut lines = Vec::new();
    match github.action {
        TeamAction::Create => {
            let parent =
                github.parent.as_ref().map(|p| format!(", parent {p}")).unwrap_or_default();
            lines.push(format!(
                "+ create team {:?} ({}{parent})",
                github.name,
                github.privacy.as_str()
            ));
        }
        TeamAction::Adopt => lines.push(format!("adopt existing team {}{id}", github.slug)),
        TeamAction::Unmanaged => lines.push(format!(
            "! team {}{id} exists on GitHub and is not linked to this team: the sync leaves it \
             alone; preview with adopt=true, and adopt it with engine teams sync {} --adopt",
            github.slug, preview.team
        )),
        TeamAction::Update | TeamAction::Unchanged => {}
        TeamAction::Delete => lines.push(format!("- delete team {}{id}", github.slug)),
        TeamAction::Retain => lines.push(format!(
            "note: team {}{id} is retained (github.allow-team-deletion is off)",
            github.slug
        )),
        TeamAction::NotLinked => {
            lines.push("note: no GitHub team is linked: nothing is deleted".to_owned())
        }
        TeamAction::Blocked => lines.push(format!(
            "! team {}{id} is not deleted: GitHub would delete its child teams, which these \
             Muster teams manage: {}",
            github.slug,
            github.children.join(", ")
        )),
    }
    if github.action != TeamAction::Unmanaged {
        for change in &github.changes {
            lines.push(match &change.from {
                Some(from) => {
                    format!("~ {} {from:?} → {:?}", change.field, or_none(change.to.as_deref()))
                }
                None => match &change.to {
                    Some(to) => format!("~ {} → {to:?}", change.field),
                    None => format!("~ {} → {NONE}", change.field),
                },
            });
        }
    }
    if lines.is_empty() {
        let slug = if github.slug.is_empty() { &preview.team } else { &github.slug };
        lines.push(format!("no change (team {slug}{id})"));
    }
    lines
}

/// A member plan as lines: additions, role changes and removals, then notes for those left
/// alone.
pub fn member_lines(plan: &MemberPlan) -> Vec<String> {
    let mut lines: Vec<String> =
        plan.add.iter().map(|a| format!("+ {} ({})", a.login, a.role.as_str())).collect();
    lines.extend(
        plan.change_role
            .iter()
            .map(|c| format!("~ {} {} → {}", c.login, c.from.as_str(), c.to.as_str())),
    );
    lines.extend(plan.remove.iter().map(|l| format!("- {l}")));
    lines.extend(member_notes(plan));
    lines
}

fn member_notes(plan: &MemberPlan) -> Vec<String> {
    let mut lines = Vec::new();
    for login in &plan.pending_untouched {
        lines.push(format!("note: {login}'s invitation is pending: left as it is"));
    }
    for login in &plan.protected {
        lines.push(format!(
            "note: {login} is the identity Muster acts as: never removed or demoted"
        ));
    }
    for login in &plan.owners {
        lines.push(format!(
            "note: {login} is an organization owner: GitHub keeps owners maintainers"
        ));
    }
    for login in &plan.inherited {
        lines.push(format!("note: {login} is listed through a child team: left as it is"));
    }
    for held in &plan.held {
        lines.push(format!("note: {} held back: {}", held.login, held.reason.describe()));
    }
    lines
}

fn namespace_lines(namespaces: &NamespacesPreview) -> Vec<String> {
    let mut lines: Vec<String> =
        namespaces.create.iter().map(|n| format!("+ {}", n.name)).collect();
    for update in &namespaces.update {
        if update.changes.is_empty() {
            lines.push(format!("~ {}", update.name));
        }
        for change in &update.changes {
            lines.push(format!("~ {}: {}", update.name, describe_spec_change(change)));
        }
    }
    lines.extend(namespaces.delete.iter().map(|n| format!("- {} (deleting)", n.name)));
    for name in &namespaces.deleting {
        lines.push(format!("note: {name} is already deleting"));
    }
    for environment in &namespaces.unknown_profile {
        lines.push(format!(
            "note: {environment} does not define the team's quota profile: its defaults apply"
        ));
    }
    for (name, clusters) in &namespaces.waiting {
        lines.push(format!(
            "note: the team is purged once {} report {name} deleted or retained",
            clusters.join(", ")
        ));
    }
    lines
}

fn describe_spec_change(change: &SpecChange) -> String {
    let key = change.key.as_deref().map(|k| format!(" {k}")).unwrap_or_default();
    match change.field.as_str() {
        "target_clusters" => match (&change.from, &change.to) {
            (None, Some(_)) => format!("cluster{key} added"),
            _ => format!("cluster{key} removed"),
        },
        field => format!(
            "{field}{key} {} → {}",
            or_none(change.from.as_deref()),
            or_none(change.to.as_deref())
        ),
    }
}

// ----- finished runs -----

/// One journaled step of a run, as [`run_lines`] reads it.
#[derive(Debug, Clone, Copy)]
pub struct RunStep<'a> {
    pub name: &'a str,
    pub output: Option<&'a Value>,
    pub error: Option<&'a str>,
}

/// A `sync_team` run's changes (or, in plan-only mode, its plan) as lines in the form of
/// [`render`]: the `github-team` step's action, the `github-members` step's plan (plan-only) or
/// what it applied, and the `namespaces` step's records. Empty when the run has none of these
/// steps.
pub fn run_lines(steps: &[RunStep<'_>]) -> Vec<String> {
    let step = |name: &str| steps.iter().find(|s| s.name == name);
    let (team, members, namespaces) =
        (step("github-team"), step("github-members"), step("namespaces"));
    if team.is_none() && members.is_none() && namespaces.is_none() {
        return Vec::new();
    }
    let parsed_members: Option<Members> =
        members.and_then(|s| s.output).and_then(|o| serde_json::from_value(o.clone()).ok());
    let plan_only = parsed_members.as_ref().is_some_and(|m| m.plan_only);
    let mut lines = vec![if plan_only {
        "plan (plan-only mode: nothing was sent to GitHub):".to_owned()
    } else {
        "changes:".to_owned()
    }];
    lines.push("GitHub team:".to_owned());
    lines.extend(run_team_lines(team).into_iter().map(indent));
    lines.push("members:".to_owned());
    let member = match (members, &parsed_members) {
        (None, _) => vec!["note: not reached".to_owned()],
        (Some(RunStep { error: Some(error), .. }), _) => vec![format!("! failed: {error}")],
        (Some(_), None) => vec!["note: no readable output".to_owned()],
        (Some(_), Some(m)) => run_member_lines(m),
    };
    lines.extend(member.into_iter().map(indent));
    lines.push("namespaces:".to_owned());
    let parsed: Option<Namespaces> =
        namespaces.and_then(|s| s.output).and_then(|o| serde_json::from_value(o.clone()).ok());
    let namespace = match (namespaces, parsed) {
        (None, _) => vec!["note: not reached".to_owned()],
        (Some(RunStep { error: Some(error), .. }), _) => vec![format!("! failed: {error}")],
        (Some(_), None) => vec!["note: no readable output".to_owned()],
        (Some(_), Some(n)) => run_namespace_lines(&n),
    };
    lines.extend(namespace.into_iter().map(indent));
    lines
}

fn run_team_lines(step: Option<&RunStep<'_>>) -> Vec<String> {
    let Some(step) = step else { return vec!["note: not reached".to_owned()] };
    if let Some(error) = step.error {
        return vec![format!("! failed: {error}")];
    }
    let Some(output) = step.output else { return vec!["note: not finished".to_owned()] };
    if let Ok(ensured) = serde_json::from_value::<EnsuredTeam>(output.clone()) {
        let id = if ensured.id == 0 { String::new() } else { format!(" (id {})", ensured.id) };
        let changed: Vec<&str> = ensured.changed.iter().map(|f| field_name(*f)).collect();
        return vec![match ensured.action.as_str() {
            "created" => format!("+ created team {}{id}", ensured.slug),
            "planned" if ensured.id == 0 => format!("+ create team {}", ensured.slug),
            "adopted" => format!("adopted existing team {}{id}", ensured.slug),
            "updated" => format!("~ updated team {}{id}: {}", ensured.slug, changed.join(", ")),
            "unmanaged" => format!(
                "! {}",
                ensured.problem.unwrap_or_else(|| format!("team {} is not managed", ensured.slug))
            ),
            _ => format!("no change (team {}{id})", ensured.slug),
        }];
    }
    if let Ok(teardown) = serde_json::from_value::<Teardown>(output.clone()) {
        let team = teardown.team.map(|l| format!(" {} (id {})", l.slug, l.id)).unwrap_or_default();
        return vec![match teardown.action.as_str() {
            "deleted" => format!("- deleted team{team}"),
            "already_gone" => format!("note: team{team} was already gone"),
            "retained" => format!("note: team{team} retained (github.allow-team-deletion is off)"),
            "not_linked" => "note: no GitHub team is linked: nothing deleted".to_owned(),
            "blocked" => format!(
                "! team{team} not deleted: child teams managed by {}",
                teardown.children.join(", ")
            ),
            other => format!("note: team{team} {other}"),
        }];
    }
    vec!["note: no readable output".to_owned()]
}

fn field_name(field: TeamField) -> &'static str {
    match field {
        TeamField::Name => "name",
        TeamField::Description => "description",
        TeamField::Privacy => "privacy",
        TeamField::Parent => "parent",
    }
}

fn run_member_lines(members: &Members) -> Vec<String> {
    if let Some(skipped) = &members.skipped {
        return vec![format!("note: not synced: {skipped}")];
    }
    let mut lines = match &members.applied {
        None => member_lines(&members.plan),
        Some(applied) => {
            let mut lines: Vec<String> = applied
                .added
                .iter()
                .map(|a| {
                    let invited = if applied.invited.contains(&a.login) { ", invited" } else { "" };
                    format!("+ {} ({}{invited})", a.login, a.role.as_str())
                })
                .collect();
            lines.extend(
                applied
                    .role_changed
                    .iter()
                    .map(|c| format!("~ {} {} → {}", c.login, c.from.as_str(), c.to.as_str())),
            );
            lines.extend(applied.removed.iter().map(|l| format!("- {l}")));
            lines.extend(
                applied
                    .failed
                    .iter()
                    .map(|f| format!("! {} refused by GitHub: {}", f.login, f.error)),
            );
            lines.extend(member_notes(&members.plan));
            lines
        }
    };
    if lines.is_empty() {
        lines.push("no change".to_owned());
    }
    lines
}

fn run_namespace_lines(namespaces: &Namespaces) -> Vec<String> {
    if namespaces.superseded {
        return vec!["note: superseded: the team was deleted meanwhile".to_owned()];
    }
    let mut lines: Vec<String> = namespaces.created.iter().map(|n| format!("+ {n}")).collect();
    lines.extend(
        namespaces
            .updated
            .iter()
            .filter(|n| !namespaces.deleting.contains(n))
            .map(|n| format!("~ {n}")),
    );
    for name in &namespaces.deleting {
        if namespaces.unchanged.contains(name) {
            lines.push(format!("note: {name} is already deleting"));
        } else {
            lines.push(format!("- {name} (deleting)"));
        }
    }
    if lines.is_empty() {
        lines.push("no change".to_owned());
    }
    lines
}

/// One line saying what a finished `sync_team` run changed, from its output: the GitHub
/// team's action, members `+added -removed ~role changes`, namespace records `+created
/// ~updated -set deleting`, e.g. `sync of payments: team created (id 42); members +3 -0 ~0;
/// namespaces +2 ~0 -0`. Plan-only runs count what they planned, and say so.
pub fn summary_line(output: &Value) -> String {
    let team = output["team"].as_str().unwrap_or("?");
    if output["absent"] == true {
        return format!("sync of {team}: the team is gone, nothing to do");
    }
    if output["coalesced"] == true {
        return format!(
            "sync of {team}: coalesced, covered by run {}",
            output["covered_by"].as_str().unwrap_or("?")
        );
    }
    let teardown = output["path"] == "teardown";
    let github_team = &output["github"]["team"];
    let action = github_team["action"].as_str().unwrap_or("?");
    let id = github_team["id"]
        .as_u64()
        .or_else(|| github_team["team"]["id"].as_u64())
        .filter(|id| *id != 0)
        .map(|id| format!(" (id {id})"))
        .unwrap_or_default();
    let members = &output["github"]["members"];
    let count = |value: &Value| value.as_array().map_or(0, Vec::len);
    let (added, removed, changed) = if members["plan"].is_object() {
        let plan = &members["plan"];
        (count(&plan["add"]), count(&plan["remove"]), count(&plan["change_role"]))
    } else {
        (count(&members["added"]), count(&members["removed"]), count(&members["role_changed"]))
    };
    let namespaces = &output["namespaces"];
    let deleting: BTreeSet<&str> =
        namespaces["deleting"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let updated: Vec<&str> =
        namespaces["updated"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let set_deleting = updated.iter().filter(|n| deleting.contains(*n)).count();
    let mut line = format!(
        "{} of {team}: team {action}{id}; members +{added} -{removed} ~{changed}; namespaces \
         +{} ~{} -{set_deleting}",
        if teardown { "teardown" } else { "sync" },
        count(&namespaces["created"]),
        updated.len() - set_deleting,
    );
    if output["plan_only"] == true {
        line.push_str(" (plan-only: nothing sent to GitHub)");
    }
    if teardown {
        line.push_str(if output["purged"] == true { "; purged" } else { "; not purged yet" });
    }
    line
}

#[cfg(test)]
mod tests;
