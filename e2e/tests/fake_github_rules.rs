//! The fake GitHub itself over real HTTP with reqwest: the rules of GitHub it models (slugs,
//! teams by id, child teams, organization owners, unknown and renamed logins, offboarding,
//! expired invitations, SAML SSO, Enterprise Managed Users' logins, ETags that ignore the Link
//! header), so tests of Muster against it rest on a fake that behaves like GitHub.

use e2e::fake_github::FakeGitHub;
use reqwest::{Method, Response, StatusCode, header};
use serde_json::{Value, json};

const ORG: &str = "acme";
/// A personal token: any token the fake did not mint for the App acts as its token login.
const PAT: &str = "ghp_personal";

async fn fake() -> FakeGitHub {
    let fake = FakeGitHub::start(ORG).await.expect("fake GitHub starts");
    fake.add_org_members(["alice", "bob", "carol", "dave", "erin"]);
    fake
}

/// Requests to the fake with one token.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(fake: &FakeGitHub, token: &str) -> Self {
        Api { http: reqwest::Client::new(), base: fake.url(), token: token.to_owned() }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let mut request =
            self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("the fake answers")
    }

    /// Status and JSON body (`Null` when empty).
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let response = self.send(method, path, body).await;
        let status = response.status();
        let text = response.text().await.expect("a body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn put_role(&self, team: &str, login: &str, role: &str) -> (StatusCode, Value) {
        let path = format!("{team}/memberships/{login}");
        self.call(Method::PUT, &path, Some(json!({ "role": role }))).await
    }

    /// The logins of a users list.
    async fn logins(&self, path: &str) -> Vec<String> {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        logins(&body)
    }
}

fn logins(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|u| u["login"].as_str().expect("a login").to_owned())
        .collect()
}

fn team_path(slug: &str) -> String {
    format!("/orgs/{ORG}/teams/{slug}")
}

/// An App installation token, minted as the App does it.
async fn installation_token(fake: &FakeGitHub) -> String {
    let app = Api::new(fake, "app-jwt");
    let (status, body) = app.call(Method::POST, "/app/installations/7/access_tokens", None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().expect("a token").to_owned()
}

#[tokio::test]
async fn slugs_follow_githubs_rules_not_musters() {
    let fake = fake().await;
    let api = Api::new(&fake, PAT);
    for (name, slug) in [
        ("Platform Team", "platform-team"),
        ("snake_case team", "snake_case-team"),
        ("a__b--c", "a__b-c"),
        ("v1.2 Release", "v1-2-release"),
        ("Ünïcødé Öps", "unicode-ops"),
        ("  SRE / On-Call!! ", "sre-on-call"),
    ] {
        let (status, team) = api
            .call(Method::POST, &format!("/orgs/{ORG}/teams"), Some(json!({"name": name})))
            .await;
        assert_eq!((status, team["slug"].as_str()), (StatusCode::CREATED, Some(slug)), "{name:?}");
        let (status, found) = api.get(&team_path(slug)).await;
        assert_eq!((status, found["name"].as_str()), (StatusCode::OK, Some(name)));
    }

    let (status, body) =
        api.call(Method::POST, &format!("/orgs/{ORG}/teams"), Some(json!({"name": "日本"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a name that gives no slug: {body}");
    let (status, _) = api
        .call(Method::POST, &format!("/orgs/{ORG}/teams"), Some(json!({"name": "A__B-C"})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "the slug a__b-c is taken");

    let (status, renamed) = api
        .call(Method::PATCH, &team_path("v1-2-release"), Some(json!({"name": "Release Ω"})))
        .await;
    assert_eq!((status, renamed["slug"].as_str()), (StatusCode::OK, Some("release")));
    assert_eq!(api.get(&team_path("v1-2-release")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_team_endpoint_answers_by_id_too() {
    let fake = fake().await;
    let api = Api::new(&fake, PAT);
    let (status, org) = api.get(&format!("/orgs/{ORG}")).await;
    assert_eq!(status, StatusCode::OK, "{org}");
    assert_eq!((org["login"].as_str(), org["type"].as_str()), (Some(ORG), Some("Organization")));
    assert!(org["node_id"].is_string() && org["url"].is_string(), "{org}");
    let org_id = org["id"].as_u64().expect("an id");
    assert_eq!(org_id, fake.org_id());

    let id = fake.create_team("Ops");
    fake.put_member("ops", "alice", "maintainer", false);
    let child = fake.create_team("Ops Child");
    fake.set_parent("ops-child", Some(id));
    let by_id = format!("/organizations/{org_id}/team/{id}");

    assert_eq!(api.get(&by_id).await, api.get(&team_path("ops")).await);
    assert_eq!(api.logins(&format!("{by_id}/members")).await, ["alice"]);
    let (status, children) = api.get(&format!("{by_id}/teams")).await;
    assert_eq!((status, children[0]["id"].as_u64()), (StatusCode::OK, Some(child)));

    let (status, m) = api.put_role(&by_id, "bob", "member").await;
    assert_eq!((status, m["state"].as_str()), (StatusCode::OK, Some("active")), "{m}");
    assert_eq!(api.get(&format!("{by_id}/memberships/bob")).await.1["role"], "member");
    assert_eq!(api.put_role(&by_id, "zed", "member").await.1["state"], "pending");
    assert_eq!(logins(&api.get(&format!("{by_id}/invitations")).await.1), ["zed"]);
    let removed = api.call(Method::DELETE, &format!("{by_id}/memberships/bob"), None).await;
    assert_eq!(removed.0, StatusCode::NO_CONTENT);
    assert!(!fake.team("ops").unwrap().members.contains_key("bob"));

    let (status, patched) =
        api.call(Method::PATCH, &by_id, Some(json!({"description": "by id"}))).await;
    assert_eq!((status, patched["description"].as_str()), (StatusCode::OK, Some("by id")));

    for missing in [
        format!("/organizations/{}/team/{id}", org_id + 1),
        format!("/organizations/{org_id}/team/999999"),
        format!("/organizations/{org_id}/team/999999/members"),
        format!("/organizations/{org_id}/team/not-a-number"),
    ] {
        assert_eq!(api.get(&missing).await.0, StatusCode::NOT_FOUND, "{missing}");
    }

    let deleted = api.call(Method::DELETE, &by_id, None).await;
    assert_eq!(deleted.0, StatusCode::NO_CONTENT);
    assert!(fake.teams().is_empty(), "the child team goes with its parent");
}

#[tokio::test]
async fn child_teams_are_listed_and_paginated() {
    let fake = fake().await;
    let api = Api::new(&fake, PAT);
    let parent = fake.create_team("Platform");
    for name in ["SRE", "Data", "Infra"] {
        fake.create_team(name);
        fake.set_parent(&name.to_ascii_lowercase(), Some(parent));
    }
    let grandchild = fake.create_team("On-Call");
    fake.set_parent("on-call", fake.team("sre").map(|t| t.id));

    let response = api.send(Method::GET, "/orgs/acme/teams/platform/teams?per_page=2", None).await;
    let link = response.headers()[header::LINK].to_str().unwrap().to_owned();
    assert!(link.contains("page=2") && link.contains("rel=\"next\""), "{link}");
    let first: Value = response.json().await.unwrap();
    let (_, second) = api.get("/orgs/acme/teams/platform/teams?per_page=2&page=2").await;
    let mut slugs: Vec<&str> = first
        .as_array()
        .unwrap()
        .iter()
        .chain(second.as_array().unwrap())
        .inspect(|t| assert_eq!(t["parent"]["id"].as_u64(), Some(parent), "{t}"))
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    slugs.sort_unstable();
    assert_eq!(slugs, ["data", "infra", "sre"], "children only, not the grandchild");
    let (_, nested) = api.get("/orgs/acme/teams/sre/teams").await;
    assert_eq!(nested[0]["id"].as_u64(), Some(grandchild));
    assert_eq!(api.get("/orgs/acme/teams/nope/teams").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn owners_are_maintainers_of_the_teams_they_are_on() {
    let fake = fake().await;
    fake.add_org_owners(["olga"]);
    let api = Api::new(&fake, PAT);
    fake.create_team("Ops");
    fake.put_member("ops", "alice", "member", false);
    let ops = team_path("ops");

    let (status, m) = api.put_role(&ops, "olga", "member").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((m["role"].as_str(), m["state"].as_str()), (Some("maintainer"), Some("active")));
    assert_eq!(api.get(&format!("{ops}/memberships/olga")).await.1["role"], "maintainer");
    assert_eq!(api.put_role(&ops, "olga", "member").await.1["role"], "maintainer", "still");
    assert_eq!(api.logins(&format!("{ops}/members?role=maintainer")).await, ["olga"]);
    assert_eq!(api.logins(&format!("{ops}/members?role=member")).await, ["alice"]);
    assert_eq!(fake.team("ops").unwrap().members["olga"], "maintainer");

    let members = format!("/orgs/{ORG}/members");
    assert_eq!(api.logins(&format!("{members}?role=admin")).await, ["olga"]);
    assert_eq!(
        api.logins(&format!("{members}?role=member")).await,
        ["alice", "bob", "carol", "dave", "erin"]
    );
    assert_eq!(api.logins(&format!("{members}?role=all&per_page=100")).await.len(), 6);
    let response = api.send(Method::GET, &format!("{members}?per_page=4"), None).await;
    assert!(response.headers()[header::LINK].to_str().unwrap().contains("rel=\"next\""));
    assert_eq!(api.get(&format!("{members}/olga")).await.0, StatusCode::NO_CONTENT);
    assert_eq!(api.get(&format!("{members}/alice")).await.0, StatusCode::NO_CONTENT);
    assert_eq!(api.get(&format!("{members}/stranger")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_parent_team_lists_the_members_of_its_child_teams() {
    let fake = fake().await;
    let api = Api::new(&fake, PAT);
    let platform = fake.create_team("Platform");
    let sre = fake.create_team("SRE");
    fake.create_team("On-Call");
    fake.set_parent("sre", Some(platform));
    fake.set_parent("on-call", Some(sre));
    fake.put_member("platform", "alice", "maintainer", false);
    fake.put_member("platform", "erin", "member", false);
    fake.put_member("sre", "bob", "member", false);
    fake.put_member("sre", "carol", "maintainer", false);
    fake.put_member("sre", "erin", "maintainer", false);
    fake.put_member("sre", "zed", "member", true);
    fake.put_member("on-call", "dave", "member", false);

    let members = format!("{}/members", team_path("platform"));
    assert_eq!(api.logins(&members).await, ["alice", "bob", "carol", "dave", "erin"]);
    assert_eq!(api.logins(&format!("{members}?role=maintainer")).await, ["alice", "carol"]);
    assert_eq!(
        api.logins(&format!("{members}?role=member")).await,
        ["bob", "dave", "erin"],
        "erin is a member of platform itself; a pending invitation is no member"
    );
    assert_eq!(api.logins(&format!("{}/members", team_path("sre"))).await.len(), 4);

    let dave = format!("{}/memberships/dave", team_path("platform"));
    let (status, m) = api.get(&dave).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((m["role"].as_str(), m["state"].as_str()), (Some("member"), Some("active")));
    assert_eq!(api.get(&format!("{}/memberships/zed", team_path("platform"))).await.0, 404);

    let (status, _) = api.call(Method::DELETE, &dave, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "dave is on platform only through on-call");
    assert!(api.logins(&members).await.contains(&"dave".to_owned()), "nothing changed");
    assert!(fake.team("on-call").unwrap().members.contains_key("dave"));

    let view = fake.team("platform").unwrap();
    assert_eq!(view.members.keys().collect::<Vec<_>>(), ["alice", "erin"], "own members only");
}

#[tokio::test]
async fn deleted_and_renamed_logins_name_no_one() {
    let fake = fake().await;
    let api = Api::new(&fake, PAT);
    fake.create_team("Ops");
    fake.put_member("ops", "bob", "maintainer", false);
    let ops = team_path("ops");
    let (_, bob) = api.get("/users/bob").await;

    fake.delete_user("ghost");
    let (status, body) = api.put_role(&ops, "ghost", "member").await;
    assert_eq!((status, body["message"].as_str()), (StatusCode::NOT_FOUND, Some("Not Found")));
    assert_eq!(api.get("/users/ghost").await.0, StatusCode::NOT_FOUND);
    for malformed in ["-nope", "no.dots", "x".repeat(40).as_str()] {
        assert_eq!(api.put_role(&ops, malformed, "member").await.0, 404, "{malformed}");
    }
    assert_eq!(api.put_role(&ops, ORG, "member").await.0, 422, "an organization is no member");

    fake.rename_user("bob", "robert");
    assert_eq!(api.put_role(&ops, "bob", "member").await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.get(&format!("{ops}/memberships/bob")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/users/bob").await.0, StatusCode::NOT_FOUND);
    let (_, robert) = api.get("/users/robert").await;
    assert_eq!(robert["id"], bob["id"], "a renamed account keeps its id");
    assert_eq!(fake.team("ops").unwrap().members["robert"], "maintainer");
    assert_eq!(api.logins(&format!("{ops}/members")).await, ["robert"]);
    assert_eq!(api.get(&format!("/orgs/{ORG}/members/robert")).await.0, 204);
    assert_eq!(api.get(&format!("/orgs/{ORG}/members/bob")).await.0, 404);
}

#[tokio::test]
async fn enterprise_managed_users_logins_are_logins() {
    let fake = fake().await;
    fake.add_org_members(["alice_acme"]);
    fake.add_org_owners(["acme_admin"]);
    let api = Api::new(&fake, PAT);
    fake.create_team("Ops");
    let ops = team_path("ops");

    let (status, m) = api.put_role(&ops, "alice_acme", "member").await;
    assert_eq!((status, m["state"].as_str()), (StatusCode::OK, Some("active")), "{m}");
    assert_eq!(api.put_role(&ops, "bob_acme", "member").await.1["state"], "pending");
    assert_eq!(api.logins(&format!("{ops}/members")).await, ["alice_acme"]);
    assert_eq!(api.get("/users/alice_acme").await.1["login"], "alice_acme");
    assert_eq!(api.get(&format!("/orgs/{ORG}/members/alice_acme")).await.0, 204);
    assert_eq!(api.put_role(&ops, "acme_admin", "member").await.1["role"], "maintainer");
}

#[tokio::test]
async fn removing_someone_from_the_organization_removes_them_from_every_team() {
    let fake = fake().await;
    let api = Api::new(&fake, PAT);
    for name in ["Ops", "Data"] {
        fake.create_team(name);
        fake.put_member(&name.to_ascii_lowercase(), "alice", "maintainer", false);
        fake.put_member(&name.to_ascii_lowercase(), "bob", "member", false);
    }
    assert_eq!(api.put_role(&team_path("ops"), "zed", "member").await.1["state"], "pending");

    fake.remove_org_member("alice");
    fake.remove_org_member("zed");
    for slug in ["ops", "data"] {
        assert_eq!(api.logins(&format!("{}/members", team_path(slug))).await, ["bob"], "{slug}");
        let (_, invitations) = api.get(&format!("{}/invitations", team_path(slug))).await;
        assert_eq!(invitations, json!([]), "{slug}");
    }
    assert_eq!(api.get(&format!("/orgs/{ORG}/members/alice")).await.0, 404);
    let (_, m) = api.put_role(&team_path("ops"), "alice", "member").await;
    assert_eq!(m["state"], "pending", "alice is invited back, not added");
}

#[tokio::test]
async fn an_expired_invitation_fails_until_the_person_is_invited_again() {
    let fake = fake().await;
    let api = Api::new(&fake, PAT);
    for name in ["Ops", "Data"] {
        fake.create_team(name);
    }
    let (ops, data) = (team_path("ops"), team_path("data"));
    assert_eq!(api.put_role(&ops, "zed", "maintainer").await.1["state"], "pending");
    assert_eq!(api.put_role(&data, "zed", "member").await.1["state"], "pending");
    let (_, invited) = api.get(&format!("{ops}/invitations")).await;
    let (_, invited_to_data) = api.get(&format!("{data}/invitations")).await;
    assert_eq!(invited[0]["id"], invited_to_data[0]["id"], "one invitation for both teams");
    assert_eq!(invited[0]["team_count"], 2);

    assert!(fake.expire_invitation("zed"));
    assert!(!fake.expire_invitation("zed"), "nothing left to expire");
    assert_eq!(api.get(&format!("{ops}/invitations")).await.1, json!([]));
    assert!(fake.team("ops").unwrap().pending.is_empty());
    assert_eq!(api.get(&format!("{ops}/memberships/zed")).await.0, StatusCode::NOT_FOUND);

    let failed_path = format!("/orgs/{ORG}/failed_invitations");
    let (status, failed) = api.get(&failed_path).await;
    assert_eq!(status, StatusCode::OK);
    let failure = &failed[0];
    assert_eq!(failed.as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(failure["login"], "zed");
    assert_eq!(failure["failed_reason"], "Invitation expired");
    assert_eq!(failure["id"], invited[0]["id"]);
    assert_eq!(failure["team_count"], 2);
    assert_eq!(failure["role"], "direct_member");
    assert_eq!(failure["inviter"]["login"], "muster-bot");
    assert!(failure["email"].is_null());
    for field in ["failed_at", "created_at", "node_id", "invitation_teams_url"] {
        assert!(failure[field].is_string(), "{field}: {failure}");
    }

    let (_, again) = api.put_role(&ops, "zed", "member").await;
    assert_eq!(again["state"], "pending");
    assert_eq!(api.get(&failed_path).await.1, json!([]));
    assert_eq!(logins(&api.get(&format!("{ops}/invitations")).await.1), ["zed"]);
}

#[tokio::test]
async fn saml_sso_refuses_personal_tokens_for_the_organization() {
    let fake = fake().await;
    let team_id = fake.create_team("Ops");
    fake.require_saml_sso(true);
    let pat = Api::new(&fake, PAT);
    let by_id = format!("/organizations/{}/team/{team_id}/members", fake.org_id());

    for path in [format!("/orgs/{ORG}/teams"), format!("{}/members", team_path("ops")), by_id] {
        let response = pat.send(Method::GET, &path, None).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        let sso = response.headers()["x-github-sso"].to_str().unwrap().to_owned();
        let url = format!("required; url={}/orgs/{ORG}/sso?authorization_request=", fake.url());
        assert!(sso.starts_with(&url) && sso.len() > url.len(), "{sso}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["message"],
            "Resource protected by organization SAML enforcement. You must grant your Personal \
             Access token access to this organization."
        );
    }
    let refused =
        pat.call(Method::PUT, &format!("{}/memberships/bob", team_path("ops")), None).await;
    assert_eq!(refused.0, StatusCode::FORBIDDEN);
    assert!(fake.team("ops").unwrap().members.is_empty());
    assert_eq!(pat.get("/user").await.0, StatusCode::OK, "the user is not the organization's");

    let app = Api::new(&fake, &installation_token(&fake).await);
    assert_eq!(app.get(&format!("/orgs/{ORG}/teams")).await.0, StatusCode::OK);

    fake.require_saml_sso(false);
    assert_eq!(pat.get(&format!("/orgs/{ORG}/teams")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn members_are_listed_in_login_order() {
    let fake = fake().await;
    let api = Api::new(&fake, PAT);
    fake.create_team("Ops");
    for login in ["zoe", "Adam", "mike", "bob"] {
        fake.put_member("ops", login, "member", false);
    }
    let path = format!("{}/members", team_path("ops"));
    assert_eq!(api.logins(&path).await, ["Adam", "bob", "mike", "zoe"]);
}

/// The ETag covers the body, not the Link header: page 1 of two members stays the same when a
/// third member lands on page 2, so its conditional GET answers 304 while the Link header now
/// has `rel="next"`. A client that keeps the Link header it cached with page 1 never reads
/// page 2.
#[tokio::test]
async fn a_304_does_not_mean_the_link_header_is_unchanged() {
    let fake = fake().await;
    let api = Api::new(&fake, PAT);
    fake.create_team("Ops");
    fake.put_member("ops", "alice", "member", false);
    fake.put_member("ops", "bob", "member", false);
    let page1 = format!("{}{}/members?per_page=2", fake.url(), team_path("ops"));

    let first = api.http.get(&page1).bearer_auth(PAT).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get(header::LINK).is_none(), "one page only");
    let etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert_eq!(logins(&first.json().await.unwrap()), ["alice", "bob"]);

    fake.put_member("ops", "carol", "member", false);
    let again = api
        .http
        .get(&page1)
        .bearer_auth(PAT)
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "page 1 did not change");
    assert_eq!(again.headers()[header::ETAG].to_str().unwrap(), etag);
    let link = again.headers()[header::LINK].to_str().unwrap();
    assert!(link.contains("rel=\"next\"") && link.contains("page=2"), "{link}");
    assert_eq!(
        api.logins(&format!("{}/members?per_page=2&page=2", team_path("ops"))).await,
        ["carol"]
    );
}
