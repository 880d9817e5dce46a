//! The [`GitHub`] port and the values it exchanges.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::error::GitHubError;

/// A team member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Member,
    Maintainer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Maintainer => "maintainer",
        }
    }
}

/// Whether a membership is in effect or waits for the user to accept an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipState {
    Active,
    Pending,
}

/// One observed member of a team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub login: String,
    pub role: Role,
    pub state: MembershipState,
}

impl Member {
    pub fn active(login: impl Into<String>, role: Role) -> Self {
        Member { login: login.into(), role, state: MembershipState::Active }
    }
    pub fn pending(login: impl Into<String>, role: Role) -> Self {
        Member { login: login.into(), role, state: MembershipState::Pending }
    }
}

/// GitHub team visibility, a field of each team (`TeamSpec::privacy`). `Closed` (visible to the
/// organization) is the default: platform teams are meant to be found, and GitHub nests closed
/// teams only. `Secret` is seen by the team's members and the organization's owners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Privacy {
    Secret,
    #[default]
    Closed,
}

impl Privacy {
    pub fn as_str(self) -> &'static str {
        match self {
            Privacy::Secret => "secret",
            Privacy::Closed => "closed",
        }
    }
}

/// How Muster knows a GitHub team: the numeric id never changes, the slug changes on rename.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub slug: String,
}

impl TeamRef {
    pub fn slug(slug: impl Into<String>) -> Self {
        TeamRef { id: None, slug: slug.into() }
    }
}

/// The team as a sync wants it on GitHub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredTeam {
    /// The GitHub team name; GitHub derives the slug from it.
    pub name: String,
    pub description: String,
    pub privacy: Privacy,
    /// Slug of the parent GitHub team, if nested.
    pub parent: Option<String>,
    /// The id and slug stored from an earlier sync, so a rename updates the same team.
    pub known: Option<TeamRef>,
}

/// A field of a team that [`GitHub::ensure_team`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeamField {
    Name,
    Description,
    Privacy,
    Parent,
}

/// The team on GitHub after [`GitHub::ensure_team`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitHubTeam {
    /// GitHub's numeric team id; 0 when planned but not created (plan-only mode).
    pub id: u64,
    pub slug: String,
    pub created: bool,
    /// Fields updated on an existing team (empty when created or unchanged).
    pub changed: Vec<TeamField>,
}

impl GitHubTeam {
    pub fn team_ref(&self) -> TeamRef {
        TeamRef { id: (self.id != 0).then_some(self.id), slug: self.slug.clone() }
    }
}

/// GitHub as a sync workflow sees it, for one organization.
///
/// # Guarantees
/// Every method is idempotent: calling it again after a lost answer converges to the same state
/// (a team that already exists is adopted, a membership already gone is not an error).
/// Rate limits are never waited out inside a call; they surface as retryable errors with
/// [`GitHubError::retry_after`] so the run waits durably.
///
/// # Plan-only mode
/// When [`GitHub::is_plan_only`] is true (no credentials configured) nothing is read or sent:
/// reads return an empty observed state (no team, no members) and mutations report what they
/// would do. The workflow records the plan instead of applying it.
#[async_trait]
pub trait GitHub: Send + Sync {
    /// True when no credentials are configured and nothing is sent to GitHub.
    fn is_plan_only(&self) -> bool;

    /// The login Muster acts as (`<app-slug>[bot]` for a GitHub App); `None` in plan-only mode.
    async fn acting_login(&self) -> Result<Option<String>, GitHubError>;

    /// Creates the team or brings an existing one (found by known id, known slug, or the slug
    /// derived from the name) to the desired name, description, privacy and parent.
    async fn ensure_team(&self, team: &DesiredTeam) -> Result<GitHubTeam, GitHubError>;

    /// Whether [`GitHub::delete_team`] may delete (configuration); a teardown retains the
    /// team otherwise.
    fn team_deletion_allowed(&self) -> bool;

    /// Deletes the team; `Ok(false)` when it was already gone.
    ///
    /// # Errors
    /// [`GitHubError::Config`] when team deletion is not allowed.
    async fn delete_team(&self, team: &TeamRef) -> Result<bool, GitHubError>;

    /// Active members and maintainers, and pending invitations, every page of each.
    async fn team_members(&self, team: &TeamRef) -> Result<Vec<Member>, GitHubError>;

    /// Adds the user or changes their role; a user outside the organization is invited and the
    /// membership is pending until accepted.
    async fn set_membership(
        &self,
        team: &TeamRef,
        login: &str,
        role: Role,
    ) -> Result<MembershipState, GitHubError>;

    /// Removes the user (or cancels their pending invitation); `Ok(false)` when not a member.
    async fn remove_membership(&self, team: &TeamRef, login: &str) -> Result<bool, GitHubError>;
}

/// The slug GitHub derives from a team name: lower case, every run of characters other than
/// ASCII letters and digits becomes one `-`, no `-` at either end.
pub fn slug_for(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    while slug.ends_with('-') {
        slug.pop();
    }
    slug
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_github() {
        for (name, slug) in [
            ("Platform", "platform"),
            ("Platform Team", "platform-team"),
            ("  SRE / On-Call!! ", "sre-on-call"),
            ("a__b--c", "a-b-c"),
            ("Team 42", "team-42"),
        ] {
            assert_eq!(slug_for(name), slug, "{name:?}");
        }
    }
}
