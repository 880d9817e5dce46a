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
}

/// Applies `plan` to `team`: additions and role changes first, removals last, so the team never
/// passes through a state with fewer maintainers than both the old and the new one.
///
/// # Errors
/// The first failing call's error. Nothing is rolled back: the sync is level-triggered, so the
/// next attempt plans again from what GitHub then holds.
pub async fn apply_plan(
    github: &dyn GitHub,
    team: &TeamRef,
    plan: &MemberPlan,
) -> Result<AppliedPlan, GitHubError> {
    let mut applied = AppliedPlan::default();
    for add in &plan.add {
        let state = github.set_membership(team, &add.login, add.role).await?;
        if state == MembershipState::Pending {
            applied.invited.push(add.login.clone());
        }
        applied.added.push(add.clone());
    }
    for change in &plan.change_role {
        github.set_membership(team, &change.login, change.to).await?;
        applied.role_changed.push(change.clone());
    }
    for login in &plan.remove {
        if github.remove_membership(team, login).await? {
            applied.removed.push(login.clone());
        }
    }
    Ok(applied)
}
