//! GitHub's JSON shapes, as the fake renders them.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

pub(crate) fn user(base: &str, login: &str, id: u64) -> Value {
    let u = format!("{base}/users/{login}");
    json!({
        "login": login,
        "id": id,
        "node_id": format!("U_{id}"),
        "avatar_url": format!("{base}/avatars/u/{id}"),
        "gravatar_id": "",
        "url": u,
        "html_url": format!("{base}/{login}"),
        "followers_url": format!("{u}/followers"),
        "following_url": format!("{u}/following{{/other_user}}"),
        "gists_url": format!("{u}/gists{{/gist_id}}"),
        "starred_url": format!("{u}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{u}/subscriptions"),
        "organizations_url": format!("{u}/orgs"),
        "repos_url": format!("{u}/repos"),
        "events_url": format!("{u}/events{{/privacy}}"),
        "received_events_url": format!("{u}/received_events"),
        "type": if login.ends_with("[bot]") { "Bot" } else { "User" },
        "site_admin": false,
    })
}

pub(crate) struct TeamJson<'a> {
    pub base: &'a str,
    pub org: &'a str,
    pub org_id: u64,
    pub id: u64,
    pub name: &'a str,
    pub slug: &'a str,
    pub description: &'a str,
    pub privacy: &'a str,
    pub members_count: usize,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TeamJson<'_> {
    /// The team as lists show it (no parent details).
    pub(crate) fn simple(&self) -> Value {
        let t = format!("{}/organizations/{}/team/{}", self.base, self.org_id, self.id);
        json!({
            "id": self.id,
            "node_id": format!("T_{}", self.id),
            "url": t,
            "html_url": format!("{}/orgs/{}/teams/{}", self.base, self.org, self.slug),
            "name": self.name,
            "slug": self.slug,
            "description": self.description,
            "privacy": self.privacy,
            "notification_setting": "notifications_enabled",
            "permission": "pull",
            "members_url": format!("{t}/members{{/member}}"),
            "repositories_url": format!("{t}/repos"),
            "parent": null,
        })
    }

    /// The full team, with its parent and counts.
    pub(crate) fn full(&self, parent: Option<Value>) -> Value {
        let mut v = self.simple();
        v["parent"] = parent.unwrap_or(Value::Null);
        v["members_count"] = json!(self.members_count);
        v["repos_count"] = json!(0);
        v["created_at"] = json!(self.created_at);
        v["updated_at"] = json!(self.updated_at);
        v
    }
}

/// "Get an organization": the fields a client reads to learn the organization and its id.
pub(crate) fn organization(base: &str, login: &str, id: u64, created_at: DateTime<Utc>) -> Value {
    let o = format!("{base}/orgs/{login}");
    json!({
        "login": login,
        "id": id,
        "node_id": format!("O_{id}"),
        "url": o,
        "repos_url": format!("{o}/repos"),
        "events_url": format!("{o}/events"),
        "hooks_url": format!("{o}/hooks"),
        "issues_url": format!("{o}/issues"),
        "members_url": format!("{o}/members{{/member}}"),
        "public_members_url": format!("{o}/public_members{{/member}}"),
        "avatar_url": format!("{base}/avatars/o/{id}"),
        "description": null,
        "name": login,
        "company": null,
        "blog": null,
        "location": null,
        "email": null,
        "twitter_username": null,
        "is_verified": false,
        "has_organization_projects": true,
        "has_repository_projects": true,
        "public_repos": 0,
        "public_gists": 0,
        "followers": 0,
        "following": 0,
        "html_url": format!("{base}/{login}"),
        "created_at": created_at,
        "updated_at": created_at,
        "archived_at": null,
        "type": "Organization",
    })
}

/// An organization invitation ("List pending team invitations", "List failed organization
/// invitations"); `failed` is when and why it failed.
pub(crate) struct InvitationJson<'a> {
    pub base: &'a str,
    pub org_id: u64,
    pub id: u64,
    pub login: &'a str,
    pub created_at: DateTime<Utc>,
    pub inviter: Value,
    pub team_count: usize,
    pub failed: Option<(DateTime<Utc>, &'a str)>,
}

impl InvitationJson<'_> {
    pub(crate) fn render(&self) -> Value {
        let (failed_at, failed_reason) = self.failed.unzip();
        json!({
            "id": self.id,
            "node_id": format!("OI_{}", self.id),
            "login": self.login,
            "email": null,
            "role": "direct_member",
            "created_at": self.created_at,
            "failed_at": failed_at,
            "failed_reason": failed_reason,
            "inviter": self.inviter,
            "team_count": self.team_count,
            "invitation_teams_url": format!(
                "{}/organizations/{}/invitations/{}/teams",
                self.base, self.org_id, self.id
            ),
            "invitation_source": "member",
        })
    }
}

pub(crate) fn error(message: &str) -> Value {
    json!({
        "message": message,
        "documentation_url": "https://docs.github.com/rest",
        "status": "",
    })
}

pub(crate) fn validation_failed(code: &str, field: &str, message: &str) -> Value {
    json!({
        "message": "Validation Failed",
        "errors": [{ "resource": "Team", "code": code, "field": field, "message": message }],
        "documentation_url": "https://docs.github.com/rest/teams/teams",
    })
}
