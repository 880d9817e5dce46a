//! The [`GitHub`] port and the values it exchanges.

use async_trait::async_trait;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
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
    /// An organization owner: GitHub reports owners as maintainers of every team they are on,
    /// whatever role they were given.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub owner: bool,
    /// Listed because they belong to this child team: GitHub's member list of a parent team
    /// includes its child teams' members, who are not members of the parent itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited_from: Option<String>,
}

impl Member {
    pub fn active(login: impl Into<String>, role: Role) -> Self {
        Member {
            login: login.into(),
            role,
            state: MembershipState::Active,
            owner: false,
            inherited_from: None,
        }
    }
    pub fn pending(login: impl Into<String>, role: Role) -> Self {
        Member { state: MembershipState::Pending, ..Member::active(login, role) }
    }
    /// The same member, reported as an organization owner.
    pub fn as_owner(self) -> Self {
        Member { owner: true, ..self }
    }
    /// The same member, listed through the child team `slug`.
    pub fn via_child(self, slug: impl Into<String>) -> Self {
        Member { inherited_from: Some(slug.into()), ..self }
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

/// Whether [`GitHub::ensure_team`] may take over a GitHub team that exists but is not linked to
/// the Muster team (found by the slug derived from the name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "since")]
pub enum Adoption {
    /// Never: such a team is [`GitHubError::Unmanaged`], left as it is.
    #[default]
    Never,
    /// Only a team GitHub created at or after this time: the run's own create whose answer was
    /// lost (GitHub's `created_at` has second precision and its own clock, so callers pass a
    /// time a little before their first attempt).
    CreatedSince(DateTime<Utc>),
    /// Any: an operator asked for this team to be adopted.
    Allowed,
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
    /// Whether an existing team that is not `known` may be taken over.
    #[serde(default)]
    pub adopt: Adoption,
}

/// A field of a team that [`GitHub::ensure_team`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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
    /// An existing team that was not `known` was taken over (or, from
    /// [`GitHub::plan_team`], would be).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
    /// Fields updated on an existing team (empty when created or unchanged).
    pub changed: Vec<TeamField>,
    /// What each changed field held on GitHub before (the parent as its slug).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub previous: BTreeMap<TeamField, Option<String>>,
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
/// # Identity
/// Every call on an existing team addresses it by its numeric id
/// (`/organizations/{org_id}/team/{team_id}/…`), never by a slug another team may have taken
/// since: a [`TeamRef`] without an id is refused with [`GitHubError::Config`].
///
/// # Plan modes
/// When [`GitHub::is_plan_only`] is true nothing is sent. Without credentials nothing is read
/// either: reads return an empty observed state (no team, no members). With credentials and
/// `github.mode = "plan"` reads go to GitHub, so a plan shows exactly what a live sync would
/// send. Mutations report what they would do; the workflow records the plan instead of
/// applying it.
#[async_trait]
pub trait GitHub: Send + Sync {
    /// True when no credentials are configured and nothing is sent to GitHub.
    fn is_plan_only(&self) -> bool;

    /// The login Muster acts as (`<app-slug>[bot]` for a GitHub App); `None` in plan-only mode.
    async fn acting_login(&self) -> Result<Option<String>, GitHubError>;

    /// Creates the team or brings an existing one (found by known id, or by the slug derived
    /// from the name when [`DesiredTeam::adopt`] allows taking it over) to the desired name,
    /// description, privacy and parent.
    ///
    /// # Errors
    /// [`GitHubError::Unmanaged`] when a team with the derived slug exists, is not `known`,
    /// and may not be adopted.
    async fn ensure_team(&self, team: &DesiredTeam) -> Result<GitHubTeam, GitHubError>;

    /// What [`GitHub::ensure_team`] would do, sending nothing: `created` with id 0 when no
    /// team would be found, `adopted` when an unlinked team would be taken over (whatever
    /// [`DesiredTeam::adopt`] says), and the fields that differ.
    async fn plan_team(&self, team: &DesiredTeam) -> Result<GitHubTeam, GitHubError>;

    /// The team's child teams on GitHub (empty when it has none or is gone).
    async fn child_teams(&self, team: &TeamRef) -> Result<Vec<TeamRef>, GitHubError>;

    /// Whether `login` is a member of the organization (owners included).
    async fn is_org_member(&self, login: &str) -> Result<bool, GitHubError>;

    /// Logins whose invitation to the organization failed or expired and was not renewed.
    async fn expired_invitations(&self) -> Result<Vec<String>, GitHubError>;

    /// Whether [`GitHub::delete_team`] may delete (configuration); a teardown retains the
    /// team otherwise.
    fn team_deletion_allowed(&self) -> bool;

    /// Deletes the team; `Ok(false)` when it was already gone.
    ///
    /// # Errors
    /// [`GitHubError::Config`] when team deletion is not allowed.
    async fn delete_team(&self, team: &TeamRef) -> Result<bool, GitHubError>;

    /// Active members and maintainers, and pending invitations, every page of each; owners and
    /// members of child teams are marked ([`Member::owner`], [`Member::inherited_from`]).
    async fn team_members(&self, team: &TeamRef) -> Result<Vec<Member>, GitHubError>;

    /// Adds the user or changes their role; a user outside the organization is invited and the
    /// membership is pending until accepted.
    ///
    /// # Errors
    /// [`GitHubError::UnknownLogin`] when GitHub has no such user (deleted or renamed).
    async fn set_membership(
        &self,
        team: &TeamRef,
        login: &str,
        role: Role,
    ) -> Result<MembershipState, GitHubError>;

    /// Removes the user (or cancels their pending invitation); `Ok(false)` when not a member.
    async fn remove_membership(&self, team: &TeamRef, login: &str) -> Result<bool, GitHubError>;
}

/// The slug GitHub derives from a team name. GitHub documents an outline: "GitHub replaces
/// special characters in the name string, changes all words to lowercase, and replaces spaces
/// with a - separator. For example, "My TEam Näme" would become my-team-name". In detail, as
/// observed (the Rails `parameterize` rules): a letter with diacritics becomes its base letter
/// (`ä` → `a`, `ß` → `ss`, `ø` → `o`); ASCII letters, digits, `_` and `-` are kept; every run of
/// other characters becomes one `-`; runs of `-` shrink to one; no `-` at either end; lower
/// case. Characters GitHub's transliteration may keep beyond Latin (`日本`) are treated as
/// special, which GitHub does not document.
pub fn slug_for(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let mut slug = String::with_capacity(name.len());
    let push = |c: char, slug: &mut String| {
        if c.is_ascii_alphanumeric() || c == '_' {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    };
    for c in name.nfd() {
        if unicode_normalization::char::is_combining_mark(c) {
            continue;
        }
        match latin_letter(c) {
            Some(base) => base.chars().for_each(|b| push(b, &mut slug)),
            None => push(c, &mut slug),
        }
    }
    while slug.ends_with('-') {
        slug.pop();
    }
    slug
}

/// Latin letters that do not decompose into a base letter and a mark.
fn latin_letter(c: char) -> Option<&'static str> {
    Some(match c.to_lowercase().next()? {
        'ß' => "ss",
        'æ' => "ae",
        'œ' => "oe",
        'ø' => "o",
        'ł' => "l",
        'đ' | 'ð' => "d",
        'þ' => "th",
        'ħ' => "h",
        'ı' => "i",
        'ŀ' => "l",
        'ŋ' => "ng",
        'ĳ' => "ij",
        _ => return None,
    })
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
            ("a__b--c", "a__b-c"),
            ("snake_case", "snake_case"),
            ("Team 42", "team-42"),
            ("My TEam Näme", "my-team-name"),
            ("Straße Œuvre Łódź", "strasse-oeuvre-lodz"),
            ("Data.Eng", "data-eng"),
        ] {
            assert_eq!(slug_for(name), slug, "{name:?}");
        }
    }
}
