//! `GET /v1/teams/{slug}/plan`: what the next sync of a team would change, computed by
//! `sync_team` itself ([`SyncTeam::preview`](workflows::sync_team::SyncTeam::preview)) and
//! sending nothing, with the schemas of its answer.
//!
//! A preview reads GitHub (read-only, conditional GETs) when credentials are configured, so
//! at most [`MAX_CONCURRENT_PLANS`] are computed at once; the others wait their turn within
//! `http.request-timeout`.

#![allow(dead_code)] // the schema types' fields exist for the schema derive

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, IntoResponses, ToSchema};
use workflows::ErrorKind;
use workflows::sync_team::SyncRequest;

use super::guard::{Access, Caller};
use super::problem::{PROBLEM_JSON, Problem};
use super::responses::{Denied, InvalidParameter, NoSuchTeam};
use super::teams::checked_key;
use super::{ApiState, json_with, no_store};

/// Previews computed at once; each may read GitHub.
pub const MAX_CONCURRENT_PLANS: usize = 4;

/// The sync options to preview.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PlanQuery {
    /// Preview a sync that adopts an existing GitHub team with the team's slug that is not
    /// linked to it (`engine teams sync SLUG --adopt`).
    #[serde(default)]
    pub adopt: bool,
    /// Preview a sync that overrides the mass-removal guard
    /// (`engine teams sync SLUG --allow-mass-removal`).
    #[serde(default)]
    pub allow_mass_removal: bool,
}

/// GitHub or the records store cannot answer now.
#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "GitHub (a rate limit, an outage) or the store cannot answer now; `Retry-After` says when to ask again",
    content_type = PROBLEM_JSON
)]
pub struct PlanUnavailable(pub Problem);

/// What the next sync of the team would change, sending nothing.
///
/// The plan is the one `sync_team` would apply: the GitHub team (created, adopted, updated;
/// read from GitHub when credentials are configured, planned from nothing otherwise), its
/// members (added, re-roled, removed, with notes for pending invitations, the identity Muster
/// acts as, organization owners, members of child teams and logins held back), and the
/// namespace records (created, updated field by field, set `deleting`). `lines` is the same
/// plan as readable text (`engine teams plan SLUG` prints it).
///
/// `adopt=true` and `allow_mass_removal=true` preview a sync with those options. A plan the
/// sync would refuse (the mass-removal guard, a permission GitHub refuses) is still answered,
/// 200, with `blocked` saying where the sync would stop and why; when the guard refuses,
/// `members.refused` states it and `members.plan` shows whom the override would remove. A
/// deleted team answers its teardown plan (`path: "teardown"`).
#[utoipa::path(get, path = "/v1/teams/{slug}/plan", tag = "teams",
    params(("slug" = String, Path, description = "Team slug"), PlanQuery),
    responses(
        (status = 200, description = "The plan of the next sync", body = TeamPlanDoc),
        InvalidParameter, NoSuchTeam, PlanUnavailable, Denied,
    ))]
pub async fn plan(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(slug): Path<String>,
    Query(query): Query<PlanQuery>,
) -> Result<Response, Problem> {
    checked_key("team", &slug)?;
    state.authorize(&caller, Access::team("team.read", &slug)).await?;
    state.records.get_team(&slug).await?;
    let request = SyncRequest {
        adopt: query.adopt,
        allow_mass_removal: query.allow_mass_removal,
        ..SyncRequest::default()
    };
    let _permit = state.plans.acquire().await.map_err(|e| Problem::internal(&e))?;
    match state.sync_team.preview(&slug, &request).await {
        Ok(preview) => Ok(json_with(StatusCode::OK, &[no_store()], &preview)),
        Err(e) => {
            let after = match e.kind {
                ErrorKind::Permanent => return Err(Problem::internal(&e)),
                ErrorKind::Retryable { after } => after,
                ErrorKind::Throttled { after } => Some(after),
            };
            let mut response =
                Problem::unavailable(format!("cannot compute the plan now: {e}")).into_response();
            if let Some(value) = after.and_then(|a| HeaderValue::from_str(&retry_after(a)).ok()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            Ok(response)
        }
    }
}

/// Whole seconds, rounded up, at least 1.
fn retry_after(after: std::time::Duration) -> String {
    after.as_secs().saturating_add(u64::from(after.subsec_nanos() > 0)).max(1).to_string()
}

// ----- schemas of the answer (workflows::sync_team::preview) -----

/// What the next sync of a team would do.
#[derive(Serialize, ToSchema)]
#[schema(as = TeamPlan)]
pub struct TeamPlanDoc {
    #[schema(example = "payments")]
    team: String,
    path: PlanPathDoc,
    /// The sync sends nothing to GitHub (plan-only mode): it records its plan instead.
    plan_only: bool,
    /// GitHub was read; without credentials it is not and the plan starts from nothing.
    github_read: bool,
    /// The options previewed.
    adopt: bool,
    allow_mass_removal: bool,
    github: TeamChangeDoc,
    members: MembersPlanDoc,
    namespaces: NamespacesPlanDoc,
    /// Where the sync would stop for good, and why; the steps after it are not reached.
    #[serde(default)]
    blocked: Option<BlockedDoc>,
    /// Changes the sync would make (team, members, namespace records).
    changes: usize,
    /// The plan as readable lines: a heading per part, then `+` created or added, `-` deleted
    /// or removed, `~` changed, `!` refused or blocked, `note:` left alone and why.
    #[schema(example = json!(["team payments: the next sync makes 2 changes", "GitHub team:", "  + create team \"Payments\" (closed)", "members:", "  + alice (maintainer)", "namespaces:", "  no change"]))]
    lines: Vec<String>,
}

/// `sync` for a live team, `teardown` for a deleted one.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = PlanPath)]
pub enum PlanPathDoc {
    Sync,
    Teardown,
}

/// What would happen to the GitHub team: `create`, `adopt` (an existing team that is not
/// linked, taken over with `adopt`), `unmanaged` (such a team left alone: nothing on GitHub
/// changes, members included), `update`, `unchanged`; in a teardown `delete`, `retain`
/// (`github.allow-team-deletion` is off), `not_linked`, `blocked` (child teams other Muster
/// teams manage would be deleted with it).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = PlanTeamAction)]
pub enum TeamActionDoc {
    Create,
    Adopt,
    Unmanaged,
    Update,
    Unchanged,
    Delete,
    Retain,
    NotLinked,
    Blocked,
}

/// The GitHub team's part of a plan.
#[derive(Serialize, ToSchema)]
#[schema(as = PlanTeamChange)]
pub struct TeamChangeDoc {
    action: TeamActionDoc,
    /// GitHub's id of the team, when there is one.
    #[serde(default)]
    id: Option<u64>,
    slug: String,
    name: String,
    privacy: super::schema::TeamPrivacyDoc,
    /// Slug of the parent GitHub team.
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    changes: Vec<FieldChangeDoc>,
    /// The Muster teams managing child teams (`blocked`).
    #[serde(default)]
    children: Vec<String>,
}

/// A field of the GitHub team that would change.
#[derive(Serialize, ToSchema)]
#[schema(as = PlanFieldChange)]
pub struct FieldChangeDoc {
    /// `name`, `description`, `privacy`, `parent` or `slug`.
    field: String,
    /// The value on GitHub, when known (the slug's).
    #[serde(default)]
    from: Option<String>,
    /// The new value; absent for a parent removed.
    #[serde(default)]
    to: Option<String>,
}

/// The members' part of a plan.
#[derive(Serialize, ToSchema)]
#[schema(as = PlanMembers)]
pub struct MembersPlanDoc {
    /// Why the members would not be synced.
    #[serde(default)]
    skipped: Option<String>,
    plan: MemberPlanDoc,
    /// The mass-removal guard's refusal; `plan` is then the plan with the override.
    #[serde(default)]
    refused: Option<String>,
}

/// A member plan (also a sync_team run's `github.members.plan`).
#[derive(Serialize, ToSchema)]
#[schema(as = MemberPlan)]
pub struct MemberPlanDoc {
    add: Vec<AssignmentDoc>,
    change_role: Vec<RoleChangeDoc>,
    /// Removed; for a pending login, its invitation cancelled.
    remove: Vec<String>,
    /// Desired logins whose invitation is pending: left as they are.
    pending_untouched: Vec<String>,
    /// The identity Muster acts as: never removed or demoted.
    protected: Vec<String>,
    /// Organization owners wanted as members: GitHub keeps owners maintainers.
    #[serde(default)]
    owners: Vec<String>,
    /// Listed only through a child team: never removed.
    #[serde(default)]
    inherited: Vec<String>,
    /// Desired logins not added, and why.
    #[serde(default)]
    held: Vec<HeldDoc>,
    /// Active members already as desired.
    unchanged: usize,
}

#[derive(Serialize, ToSchema)]
#[schema(as = MemberAssignment)]
pub struct AssignmentDoc {
    login: String,
    role: MemberRoleDoc,
}

#[derive(Serialize, ToSchema)]
#[schema(as = MemberRoleChange)]
pub struct RoleChangeDoc {
    login: String,
    from: MemberRoleDoc,
    to: MemberRoleDoc,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = MemberRole)]
pub enum MemberRoleDoc {
    Member,
    Maintainer,
}

#[derive(Serialize, ToSchema)]
#[schema(as = HeldLogin)]
pub struct HeldDoc {
    login: String,
    /// `not_org_member` (and `github.invite-non-members` is off) or `invitation_expired`.
    reason: HoldReasonDoc,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = HoldReason)]
pub enum HoldReasonDoc {
    NotOrgMember,
    InvitationExpired,
}

/// The namespace records' part of a plan.
#[derive(Serialize, ToSchema)]
#[schema(as = PlanNamespaces)]
pub struct NamespacesPlanDoc {
    create: Vec<PlanNamespaceRefDoc>,
    update: Vec<NamespaceUpdateDoc>,
    /// Records that would be set `deleting`.
    delete: Vec<PlanNamespaceRefDoc>,
    unchanged: Vec<String>,
    /// Records already `deleting`.
    #[serde(default)]
    deleting: Vec<String>,
    /// Environments without the team's quota profile: their defaults apply.
    #[serde(default)]
    unknown_profile: Vec<String>,
    /// Teardown: namespace → the clusters the purge waits for.
    #[serde(default)]
    waiting: BTreeMap<String, Vec<String>>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = PlanNamespaceRef)]
pub struct PlanNamespaceRefDoc {
    #[schema(example = "payments-dev")]
    name: String,
    environment: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = PlanNamespaceUpdate)]
pub struct NamespaceUpdateDoc {
    name: String,
    environment: String,
    changes: Vec<SpecChangeDoc>,
}

/// One value of a namespace record that would change.
#[derive(Serialize, ToSchema)]
#[schema(as = PlanSpecChange)]
pub struct SpecChangeDoc {
    /// `quota`, `limits`, `labels`, `role_bindings`, `target_clusters`, `quota_profile`,
    /// `allow_deletion`, `network_policy` or `state`.
    field: String,
    /// The entry of a map or list: a quota name, a label, a group, a cluster.
    #[serde(default)]
    key: Option<String>,
    /// Absent when the entry is added.
    #[serde(default)]
    from: Option<String>,
    /// Absent when the entry is removed.
    #[serde(default)]
    to: Option<String>,
}

/// Where a sync would stop for good.
#[derive(Serialize, ToSchema)]
#[schema(as = PlanBlocked)]
pub struct BlockedDoc {
    /// `github-team` or `github-members`.
    step: String,
    reason: String,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;
    use utoipa::PartialSchema;
    use workflows::github::{Assignment, Held, HoldReason, MemberPlan, Privacy, Role, RoleChange};
    use workflows::sync_team::preview::*;

    use super::*;

    fn properties<T: PartialSchema>() -> BTreeSet<String> {
        let schema = serde_json::to_value(T::schema()).unwrap();
        schema["properties"].as_object().unwrap().keys().cloned().collect()
    }

    fn keys(value: &impl Serialize) -> BTreeSet<String> {
        let value = serde_json::to_value(value).unwrap();
        value.as_object().unwrap().keys().cloned().collect()
    }

    /// Every field of a preview, each optional one set, is in its schema, and nothing else.
    #[test]
    fn the_schemas_list_exactly_the_serialised_fields() {
        let plan = MemberPlan {
            add: vec![Assignment { login: "a".into(), role: Role::Member }],
            change_role: vec![RoleChange {
                login: "b".into(),
                from: Role::Member,
                to: Role::Maintainer,
            }],
            remove: vec!["c".into()],
            pending_untouched: vec!["d".into()],
            protected: vec!["e".into()],
            owners: vec!["f".into()],
            inherited: vec!["g".into()],
            held: vec![Held { login: "h".into(), reason: HoldReason::NotOrgMember }],
            unchanged: 1,
        };
        let change =
            FieldChange { field: "slug".into(), from: Some("a".into()), to: Some("b".into()) };
        let spec_change = SpecChange {
            field: "quota".into(),
            key: Some("cpu".into()),
            from: Some("1".into()),
            to: Some("2".into()),
        };
        let reference = NamespaceRef { name: "p-dev".into(), environment: "dev".into() };
        let update = NamespaceUpdate {
            name: "p-dev".into(),
            environment: "dev".into(),
            changes: vec![spec_change.clone()],
        };
        let preview = TeamPreview {
            team: "p".into(),
            path: PreviewPath::Sync,
            plan_only: false,
            github_read: true,
            adopt: false,
            allow_mass_removal: false,
            github: TeamChange {
                action: TeamAction::Update,
                id: Some(1),
                slug: "p".into(),
                name: "P".into(),
                privacy: Privacy::Closed,
                parent: Some("q".into()),
                changes: vec![change.clone()],
                children: vec!["c".into()],
            },
            members: MembersPreview {
                skipped: Some("s".into()),
                plan: plan.clone(),
                refused: Some("r".into()),
            },
            namespaces: NamespacesPreview {
                create: vec![reference.clone()],
                update: vec![update.clone()],
                delete: vec![reference.clone()],
                unchanged: vec!["p-prod".into()],
                deleting: vec!["p-prod".into()],
                unknown_profile: vec!["prod".into()],
                waiting: BTreeMap::from([("p-prod".into(), vec!["c1".into()])]),
            },
            blocked: Some(Blocked { step: "github-members".into(), reason: "r".into() }),
            changes: 1,
            lines: vec!["l".into()],
        };
        assert_eq!(properties::<TeamPlanDoc>(), keys(&preview));
        assert_eq!(properties::<TeamChangeDoc>(), keys(&preview.github));
        assert_eq!(properties::<FieldChangeDoc>(), keys(&change));
        assert_eq!(properties::<MembersPlanDoc>(), keys(&preview.members));
        assert_eq!(properties::<MemberPlanDoc>(), keys(&plan));
        assert_eq!(properties::<AssignmentDoc>(), keys(&plan.add[0]));
        assert_eq!(properties::<RoleChangeDoc>(), keys(&plan.change_role[0]));
        assert_eq!(properties::<HeldDoc>(), keys(&plan.held[0]));
        assert_eq!(properties::<NamespacesPlanDoc>(), keys(&preview.namespaces));
        assert_eq!(properties::<PlanNamespaceRefDoc>(), keys(&reference));
        assert_eq!(properties::<NamespaceUpdateDoc>(), keys(&update));
        assert_eq!(properties::<SpecChangeDoc>(), keys(&spec_change));
        assert_eq!(properties::<BlockedDoc>(), keys(preview.blocked.as_ref().unwrap()));
        let actions = serde_json::to_value(TeamActionDoc::schema()).unwrap();
        let documented: Vec<Value> = actions["enum"].as_array().unwrap().clone();
        for action in [
            TeamAction::Create,
            TeamAction::Adopt,
            TeamAction::Unmanaged,
            TeamAction::Update,
            TeamAction::Unchanged,
            TeamAction::Delete,
            TeamAction::Retain,
            TeamAction::NotLinked,
            TeamAction::Blocked,
        ] {
            assert!(documented.contains(&serde_json::to_value(action).unwrap()), "{action:?}");
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        use std::time::Duration;
        assert_eq!(retry_after(Duration::from_millis(10)), "1");
        assert_eq!(retry_after(Duration::from_millis(2500)), "3");
        assert_eq!(retry_after(Duration::from_secs(60)), "60");
    }
}
