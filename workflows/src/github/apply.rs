//! [`apply_plan`]: send a [`MemberPlan`] through the [`GitHub`] port.

use serde::{Deserialize, Serialize};

use super::error::GitHubError;
use super::plan::{Assignment, MemberPlan, RoleChange};
use super::port::{GitHub, MembershipState, TeamRef};

/// What applying a plan did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedPlan {
    pub added: Vec<Assignment>,
    /// Added logins that GitHub made pending (invited to the organization).
    pub invited: Vec<String>,
    pub role_changed: Vec<RoleChange>,
    /// Removed logins; a login that was already gone is not listed.
    pub removed: Vec<String>,
    /// Logins GitHub refused on their own (no such user, or a 422 for that login): everyone
    /// else is still synced, and the team's status reports these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedLogin>,
}

/// A login whose membership call GitHub refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedLogin {
    pub login: String,
    pub error: String,
}

/// Whether `error` concerns only the login it was sent for, so the rest of the plan goes on.
fn login_only(error: &GitHubError) -> bool {
    matches!(error, GitHubError::UnknownLogin { .. } | GitHubError::Rejected { status: 422, .. })
}

/// Applies `plan` to `team`: additions and role changes first, removals last, so the team never
/// passes through a state with fewer maintainers than both the old and the new one.
///
/// # Errors
/// The first failing call's error, except errors that concern one login only (an unknown or
/// renamed login, a 422 for it): those are listed in [`AppliedPlan::failed`] and the rest of
/// the plan is applied. Nothing is rolled back: the sync is level-triggered, so the next
/// attempt plans again from what GitHub then holds.
pub async fn apply_plan(
    github: &dyn GitHub,
    team: &TeamRef,
    plan: &MemberPlan,
) -> Result<AppliedPlan, GitHubError> {
    let mut applied = AppliedPlan::default();
    for add in &plan.add {
        match github.set_membership(team, &add.login, add.role).await {
            Ok(state) => {
                if state == MembershipState::Pending {
                    applied.invited.push(add.login.clone());
                }
                applied.added.push(add.clone());
            }
            Err(e) if login_only(&e) => {
                applied.failed.push(FailedLogin { login: add.login.clone(), error: e.to_string() })
            }
            Err(e) => return Err(e),
        }
    }
    for change in &plan.change_role {
        match github.set_membership(team, &change.login, change.to).await {
            Ok(_) => applied.role_changed.push(change.clone()),
            Err(e) if login_only(&e) => applied
                .failed
                .push(FailedLogin { login: change.login.clone(), error: e.to_string() }),
            Err(e) => return Err(e),
        }
    }
    for login in &plan.remove {
        if github.remove_membership(team, login).await? {
            applied.removed.push(login.clone());
        }
    }
    Ok(applied)
}
