//! Teams: the desired state that `sync_team` makes GitHub and the clusters match.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::github::Privacy;

use super::validation::{
    MAX_DESCRIPTION_LEN, MAX_LOGINS, MAX_NAME_LEN, Problems, ValidationErrors, is_github_login,
};

/// What a client says about a team: the body of a create or a full update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamSpec {
    /// The team's key, a DNS-1123 label; it prefixes the team's namespace names.
    pub slug: String,
    /// Display name (GitHub team name).
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// GitHub logins with the `member` role. Optional on create only: the API refuses a
    /// replacement without it (an omitted list would empty the team).
    #[serde(default)]
    pub members: Vec<String>,
    /// GitHub logins with the `maintainer` role; disjoint from `members`. Optional as
    /// `members` is; at least `github.min-maintainers` ([`TeamSpec::validate_with_min_maintainers`]).
    #[serde(default)]
    pub maintainers: Vec<String>,
    /// Slug of the parent team, if nested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The GitHub team's visibility: `closed` (seen by the whole organization, the default) or
    /// `secret` (seen by its members and the owners). GitHub nests closed teams only, so a
    /// secret team has no parent. Absent in documents written before it existed: closed, as
    /// every team was then.
    #[serde(default)]
    pub privacy: Privacy,
    /// Name of the quota profile applied to the team's namespaces; the environment's defaults
    /// apply when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_profile: Option<String>,
    /// Kubernetes labels carried onto the team's namespaces.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl TeamSpec {
    /// Checks every field and reports every problem at once.
    ///
    /// # Errors
    /// [`ValidationErrors`] listing each bad field with its path, e.g.
    /// `members[2]: "-bad" is not a valid GitHub login`.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        self.problems(0).finish()
    }

    /// [`TeamSpec::validate`], and at least `min_maintainers` maintainers: the engine's
    /// `github.min-maintainers`, below which `sync_team` refuses to sync the team. The API
    /// checks it so that such a team is refused when it is sent, not dead-lettered later.
    ///
    /// # Errors
    /// As [`TeamSpec::validate`], with a `maintainers` problem when there are too few.
    pub fn validate_with_min_maintainers(
        &self,
        min_maintainers: usize,
    ) -> Result<(), ValidationErrors> {
        self.problems(min_maintainers).finish()
    }

    fn problems(&self, min_maintainers: usize) -> Problems {
        let mut p = Problems::default();
        p.dns_label("slug", &self.slug);
        p.text("name", &self.name, MAX_NAME_LEN, true);
        p.text("description", &self.description, MAX_DESCRIPTION_LEN, false);
        check_logins(&mut p, "members", &self.members);
        check_logins(&mut p, "maintainers", &self.maintainers);
        if self.maintainers.len() < min_maintainers {
            p.push(
                "maintainers",
                format!(
                    "lists {} login(s), at least {min_maintainers} required \
                     (github.min-maintainers): a team needs someone to maintain it",
                    self.maintainers.len()
                ),
            );
        }
        for (i, login) in self.maintainers.iter().enumerate() {
            if self.members.iter().any(|m| m.eq_ignore_ascii_case(login)) {
                p.push(
                    format!("maintainers[{i}]"),
                    format!("{login:?} is also listed in members; list each login once"),
                );
            }
        }
        if let Some(parent) = &self.parent {
            p.dns_label("parent", parent);
            if *parent == self.slug {
                p.push("parent", "a team cannot be its own parent");
            }
            if self.privacy == Privacy::Secret {
                p.push("privacy", "a secret team cannot have a parent team on GitHub; use closed");
            }
        }
        if let Some(profile) = &self.quota_profile {
            p.dns_label("quota_profile", profile);
        }
        p.labels("labels", &self.labels);
        p
    }
}

/// GitHub logins are case-insensitive, so `Octocat` and `octocat` are duplicates.
fn check_logins(p: &mut Problems, path: &str, logins: &[String]) {
    if logins.len() > MAX_LOGINS {
        p.push(path, format!("lists {} logins, at most {MAX_LOGINS} allowed", logins.len()));
    }
    for (i, login) in logins.iter().enumerate() {
        if !is_github_login(login) {
            p.push(format!("{path}[{i}]"), format!("{login:?} is not a valid GitHub login"));
        } else if logins[..i].iter().any(|o| o.eq_ignore_ascii_case(login)) {
            p.push(format!("{path}[{i}]"), format!("{login:?} is listed twice"));
        }
    }
}

/// A stored team: its spec plus what the store maintains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    #[serde(flatten)]
    pub spec: TeamSpec,
    /// Starts at 1 and grows by one with every change; the HTTP ETag.
    pub resource_version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set when the team was deleted: the record stays (read-only) until the teardown has
    /// finished and the team is purged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    /// What `sync_team` last observed and did in the outside world; see [`TeamStatus`].
    /// Absent in documents written before it existed, hence the default.
    #[serde(default, skip_serializing_if = "TeamStatus::is_empty")]
    pub status: TeamStatus,
}

/// A team's status: facts about the outside world that `sync_team` records on the team.
///
/// Status is not spec. It is written only by [`Records::set_team_status`](super::Records::set_team_status),
/// which neither bumps `resource_version` nor appends an outbox event: a sync records the GitHub
/// team it manages, and if that write announced `muster.team.updated`, every sync would trigger
/// the next one. It also leaves the HTTP ETag (the resource version) alone, so a client's
/// `If-Match` update is never refused because a sync ran in between.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamStatus {
    /// The GitHub team this team is linked to, once a sync created or adopted it. Its id never
    /// changes, so a rename updates the same GitHub team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GitHubLink>,
    /// The last sync that finished; `sync_team` coalesces a scheduled sync for a tick older
    /// than its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<SyncMark>,
    /// What the last sync could not do and why, for operators (empty when it did everything).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<SyncProblem>,
}

impl TeamStatus {
    pub fn is_empty(&self) -> bool {
        self.github.is_none() && self.last_sync.is_none() && self.problems.is_empty()
    }
}

/// Something a sync left undone, with the reason: the rest of the team was synced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncProblem {
    pub kind: SyncProblemKind,
    /// The login concerned, for member problems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    pub message: String,
}

/// The kinds of [`SyncProblem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncProblemKind {
    /// A GitHub team with the team's slug exists and is not linked: it waits for an explicit
    /// adoption.
    #[serde(rename = "unmanaged_github_team")]
    UnmanagedGitHubTeam,
    /// GitHub refused one login (no such user, renamed, or a 422 for it).
    LoginRefused,
    /// A desired login was not added (see [`HoldReason`](crate::github::HoldReason)).
    LoginHeld,
    /// The deleted team's GitHub team has child teams Muster still manages: deleting it would
    /// delete them, so the teardown waits.
    ManagedChildTeams,
}

/// The GitHub team a Muster team is synced to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitHubLink {
    /// GitHub's numeric team id: stable across renames.
    pub id: u64,
    /// GitHub's slug as of the last sync (it follows the name).
    pub slug: String,
}

/// A finished `sync_team` run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMark {
    pub run_id: String,
    /// When the run read the desired state: every change stored before this was synced.
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

impl Team {
    /// A new record at resource version 1.
    pub fn new(spec: TeamSpec, now: DateTime<Utc>) -> Self {
        Team {
            spec,
            resource_version: 1,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            status: TeamStatus::default(),
        }
    }

    /// The record after a full update with `spec`: next resource version.
    pub fn updated(&self, spec: TeamSpec, now: DateTime<Utc>) -> Self {
        Team {
            spec,
            resource_version: self.resource_version + 1,
            created_at: self.created_at,
            updated_at: now,
            deleted_at: self.deleted_at,
            status: self.status.clone(),
        }
    }

    /// The record after deletion: a tombstone at the next resource version.
    pub fn tombstoned(&self, now: DateTime<Utc>) -> Self {
        Team {
            spec: self.spec.clone(),
            resource_version: self.resource_version + 1,
            created_at: self.created_at,
            updated_at: now,
            deleted_at: Some(now),
            status: self.status.clone(),
        }
    }

    pub fn slug(&self) -> &str {
        &self.spec.slug
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    /// The record with `status`: same resource version and `updated_at` (status is not a
    /// change of the team).
    pub fn with_status(&self, status: TeamStatus) -> Self {
        Team { status, ..self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TeamSpec {
        TeamSpec {
            slug: "payments".into(),
            name: "Payments".into(),
            description: "Moves money".into(),
            members: vec!["alice".into(), "bob".into()],
            maintainers: vec!["carol".into()],
            parent: None,
            privacy: Privacy::Closed,
            quota_profile: None,
            labels: BTreeMap::new(),
        }
    }

    fn paths(spec: &TeamSpec) -> Vec<String> {
        spec.validate().unwrap_err().errors().iter().map(|e| e.path.clone()).collect()
    }

    #[test]
    fn a_plain_team_is_valid() {
        spec().validate().unwrap();
    }

    #[test]
    fn every_problem_is_listed_with_its_path() {
        let mut s = spec();
        s.slug = "Payments!".into();
        s.name = " ".into();
        s.members = vec!["alice".into(), "ALICE".into(), "-bad".into()];
        s.maintainers = vec!["alice".into()];
        s.parent = Some("Payments!".into());
        s.labels.insert("team/".into(), "x".into());
        let err = s.validate().unwrap_err();
        let text = err.to_string();
        assert!(text.contains(r#"members[2]: "-bad" is not a valid GitHub login"#), "{text}");
        assert_eq!(
            paths(&s),
            [
                "slug",
                "name",
                "members[1]",
                "members[2]",
                "maintainers[0]",
                "parent",
                "parent",
                "labels[\"team/\"]"
            ]
        );
    }

    #[test]
    fn too_few_maintainers_are_refused_when_a_minimum_is_asked_for() {
        let mut s = spec();
        s.maintainers.clear();
        s.validate().unwrap();
        s.validate_with_min_maintainers(0).unwrap();
        let err = s.validate_with_min_maintainers(1).unwrap_err();
        assert_eq!(err.errors().len(), 1, "{err}");
        assert_eq!(err.errors()[0].path, "maintainers");
        assert!(err.to_string().contains("at least 1 required (github.min-maintainers)"), "{err}");
        s.maintainers = vec!["carol".into(), "dave".into()];
        s.validate_with_min_maintainers(2).unwrap();
        s.slug = "Bad!".into();
        s.maintainers.clear();
        let err = s.validate_with_min_maintainers(1).unwrap_err();
        let paths: Vec<&str> = err.errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["slug", "maintainers"], "every problem at once");
    }

    /// GitHub nests closed teams only: a secret team with a parent would fail at every sync.
    #[test]
    fn a_secret_team_cannot_have_a_parent() {
        let mut s = spec();
        s.privacy = Privacy::Secret;
        s.validate().unwrap();
        s.parent = Some("platform".into());
        let err = s.validate().unwrap_err();
        assert_eq!(paths(&s), ["privacy"]);
        assert!(
            err.to_string()
                .contains("privacy: a secret team cannot have a parent team on GitHub; use closed"),
            "{err}"
        );
        s.privacy = Privacy::Closed;
        s.validate().unwrap();
    }

    #[test]
    fn privacy_is_lowercase_and_closed_when_absent() {
        let old: TeamSpec = serde_json::from_str(r#"{"slug":"a","name":"A"}"#).unwrap();
        assert_eq!(old.privacy, Privacy::Closed, "documents and clients without privacy");
        let secret: TeamSpec =
            serde_json::from_str(r#"{"slug":"a","name":"A","privacy":"secret"}"#).unwrap();
        assert_eq!(secret.privacy, Privacy::Secret);
        assert_eq!(serde_json::to_value(&secret).unwrap()["privacy"], "secret");
        let err = serde_json::from_str::<TeamSpec>(r#"{"slug":"a","name":"A","privacy":"open"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown variant `open`"), "{err}");
    }

    #[test]
    fn long_slugs_and_logins_are_refused() {
        let mut s = spec();
        s.slug = "a".repeat(64);
        s.maintainers = vec!["m".repeat(40)];
        assert_eq!(paths(&s), ["slug", "maintainers[0]"]);
    }

    #[test]
    fn quota_profile_and_labels_are_checked() {
        let mut s = spec();
        s.quota_profile = Some("Large".into());
        s.labels.insert("cost-center".into(), "-x".into());
        assert_eq!(paths(&s), ["quota_profile", "labels[\"cost-center\"]"]);
    }

    #[test]
    fn unknown_fields_are_refused_and_defaults_fill_the_rest() {
        let minimal: TeamSpec = serde_json::from_str(r#"{"slug":"a","name":"A"}"#).unwrap();
        assert!(minimal.members.is_empty() && minimal.labels.is_empty());
        let err =
            serde_json::from_str::<TeamSpec>(r#"{"slug":"a","name":"A","owner":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `owner`"), "{err}");
    }

    #[test]
    fn stored_team_round_trips_flat() {
        let now = Utc::now();
        let team = Team::new(spec(), now).tombstoned(now);
        let json = serde_json::to_value(&team).unwrap();
        assert_eq!(json["slug"], "payments");
        assert_eq!(json["resource_version"], 2);
        assert!(json["deleted_at"].is_string());
        let back: Team = serde_json::from_value(json).unwrap();
        assert_eq!(back, team);
    }

    #[test]
    fn documents_without_status_load_and_status_keeps_the_version() {
        let now = Utc::now();
        let mut json = serde_json::to_value(Team::new(spec(), now)).unwrap();
        assert!(json.get("status").is_none(), "an empty status is not written");
        json.as_object_mut().unwrap().remove("status");
        let team: Team = serde_json::from_value(json).unwrap();
        assert!(team.status.is_empty());
        let linked = team.with_status(TeamStatus {
            github: Some(GitHubLink { id: 7, slug: "payments".into() }),
            last_sync: None,
            problems: Vec::new(),
        });
        assert_eq!(linked.resource_version, 1);
        assert_eq!(linked.updated_at, team.updated_at);
        let json = serde_json::to_value(&linked).unwrap();
        assert_eq!(json["status"]["github"]["id"], 7);
        assert_eq!(linked.updated(spec(), now).status, linked.status, "updates keep the status");
    }
}
