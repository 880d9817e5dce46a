//! The fake's routes: GitHub's REST endpoints for an organization, its members and its teams.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, Method, StatusCode};
use chrono::Utc;
use serde_json::{Value, json};

use super::model::{self, InvitationJson, TeamJson};
use super::names::team_slug;
use super::state::{MAINTAINER, MEMBER, Membership, State, TeamState, key};

/// Default page size of GitHub lists, and the largest allowed.
const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;

/// GitHub's answer to a personal token not authorized for an organization that enforces SAML
/// SSO, word for word as clients quote it from GitHub's answers; the example in GitHub's docs
/// words it "…grant your personal token access…".
const SAML_MESSAGE: &str = "Resource protected by organization SAML enforcement. You must grant \
                            your Personal Access token access to this organization.";

pub(super) struct Request {
    pub method: Method,
    pub path: String,
    pub params: BTreeMap<String, String>,
    pub headers: HeaderMap,
    pub body: Value,
    pub base: String,
}

pub(super) struct Answer {
    pub status: StatusCode,
    pub body: Option<Value>,
    pub headers: Vec<(String, String)>,
    pub link: Option<String>,
}

impl Answer {
    pub fn json(status: StatusCode, body: Value) -> Self {
        Answer { status, body: Some(body), headers: Vec::new(), link: None }
    }

    pub fn empty(status: StatusCode) -> Self {
        Answer { status, body: None, headers: Vec::new(), link: None }
    }

    pub fn not_found() -> Self {
        Answer::json(StatusCode::NOT_FOUND, model::error("Not Found"))
    }

    fn invalid(code: &str, field: &str, message: &str) -> Self {
        Answer::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            model::validation_failed(code, field, message),
        )
    }
}

/// Routes an authenticated request.
pub(super) fn route(s: &mut State, r: &Request, token: &str) -> Answer {
    let segments: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let installation = s.installation_tokens.iter().any(|t| t == token);
    let acting = if installation { format!("{}[bot]", s.app_slug) } else { s.token_login.clone() };
    let org_id = s.org_id.to_string();
    match (&r.method, segments.as_slice()) {
        (&Method::GET, ["rate_limit"]) => {
            let b = s.budget;
            let core = json!({"limit": b.limit, "remaining": b.remaining, "used": b.limit - b.remaining, "reset": b.reset, "resource": "core"});
            Answer::json(StatusCode::OK, json!({"resources": {"core": core}, "rate": core}))
        }
        (&Method::GET, ["user"]) => {
            if installation {
                return Answer::json(
                    StatusCode::FORBIDDEN,
                    model::error("Resource not accessible by integration"),
                );
            }
            let id = s.user_id(&acting);
            Answer::json(StatusCode::OK, model::user(&r.base, &acting, id))
        }
        (&Method::GET, ["users", login]) => {
            if !s.user_exists(login) {
                return Answer::not_found();
            }
            let id = s.user_id(login);
            Answer::json(StatusCode::OK, model::user(&r.base, login, id))
        }
        (&Method::GET, ["app"]) => Answer::json(
            StatusCode::OK,
            json!({"id": 1, "slug": s.app_slug, "node_id": "A_1", "name": "Muster",
                   "owner": model::user(&r.base, &s.org, s.org_id), "description": "",
                   "external_url": r.base, "html_url": format!("{}/apps/{}", r.base, s.app_slug),
                   "created_at": Utc::now(), "updated_at": Utc::now(),
                   "permissions": {"members": "write"}, "events": []}),
        ),
        (&Method::POST, ["app", "installations", id, "access_tokens"]) => {
            let token = format!("ghs_fake_{id}_{}", s.installation_tokens.len() + 1);
            s.installation_tokens.push(token.clone());
            let ttl = chrono::Duration::from_std(s.installation_token_ttl).unwrap_or_default();
            let expires = Utc::now() + ttl;
            Answer::json(
                StatusCode::CREATED,
                json!({"token": token, "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                       "permissions": {"members": "write"}, "repository_selection": "all"}),
            )
        }
        (_, ["orgs", org, rest @ ..]) if org.eq_ignore_ascii_case(&s.org) => {
            if let Some(refused) = saml_enforced(s, r, installation) {
                return refused;
            }
            org_routes(s, r, rest, &acting, installation)
        }
        // "You can also specify a team by org_id and team_id using the route
        // /organizations/{org_id}/team/{team_id}" (every team endpoint's documentation).
        (_, ["organizations", id, "team", team, more @ ..]) if *id == org_id => {
            if let Some(refused) = saml_enforced(s, r, installation) {
                return refused;
            }
            match team.parse::<u64>().ok().filter(|team| s.teams.contains_key(team)) {
                Some(team) => team_routes(s, r, team, more),
                None => Answer::not_found(),
            }
        }
        _ => Answer::not_found(),
    }
}

/// The 403 of an organization that enforces SAML SSO, for a personal token.
///
/// "If you do not authorize your personal access token (classic) for SAML SSO before you try to
/// use it to access an organization that enforces SAML SSO, you may receive a 404 Not Found or
/// a 403 Forbidden error. If you receive a 403 Forbidden error, you can follow the URL in the
/// X-GitHub-SSO header to authorize your token", in the format `X-GitHub-SSO: required;
/// url=https://github.com/orgs/octodocs-test/sso?authorization_request=AZSC…` (GitHub docs,
/// "Authenticating to the REST API" / "Authenticating for SAML SSO"). "Integrations and OAuth
/// applications that generate tokens on behalf of others are automatically authorized", so an
/// App installation token passes. Only the organization's resources are protected: `GET /user`,
/// `GET /rate_limit` and the App's endpoints are not the organization's.
fn saml_enforced(s: &State, r: &Request, installation: bool) -> Option<Answer> {
    if !s.saml_sso || installation {
        return None;
    }
    let url = format!(
        "{}/orgs/{}/sso?authorization_request={}",
        r.base,
        s.org,
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    );
    let mut refused = Answer::json(StatusCode::FORBIDDEN, model::error(SAML_MESSAGE));
    refused.headers.push(("x-github-sso".into(), format!("required; url={url}")));
    Some(refused)
}

fn org_routes(
    s: &mut State,
    r: &Request,
    rest: &[&str],
    acting: &str,
    installation: bool,
) -> Answer {
    match (&r.method, rest) {
        (&Method::GET, []) => Answer::json(
            StatusCode::OK,
            model::organization(&r.base, &s.org, s.org_id, s.org_created_at),
        ),
        // "List organization members": `role` is `all`, `admin` (owners) or `member`.
        (&Method::GET, ["members"]) => {
            let role = r.params.get("role").map_or("all", String::as_str);
            let logins: Vec<String> = s
                .org_members
                .values()
                .filter(|m| match role {
                    "admin" => m.owner,
                    "member" => !m.owner,
                    _ => true,
                })
                .map(|m| m.login.clone())
                .collect();
            let items =
                logins.iter().map(|login| model::user(&r.base, login, s.user_id(login))).collect();
            paginate(r, items)
        }
        // "Check organization membership for a user": 204 if a member, 404 if not.
        (&Method::GET, ["members", login]) => {
            if s.is_org_member(login) {
                Answer::empty(StatusCode::NO_CONTENT)
            } else {
                Answer::not_found()
            }
        }
        (&Method::GET, ["failed_invitations"]) => {
            let failed = s.failed_invitations.clone();
            let items = failed
                .iter()
                .map(|f| {
                    let inviter = model::user(&r.base, &f.inviter, s.user_id(&f.inviter));
                    InvitationJson {
                        base: &r.base,
                        org_id: s.org_id,
                        id: f.id,
                        login: &f.login,
                        created_at: f.created_at,
                        inviter,
                        team_count: f.team_count,
                        failed: Some((f.failed_at, &f.reason)),
                    }
                    .render()
                })
                .collect();
            paginate(r, items)
        }
        (&Method::GET, ["teams"]) => {
            let items = s.teams.values().map(|t| listed_team(s, r, t)).collect();
            paginate(r, items)
        }
        (&Method::POST, ["teams"]) => create_team(s, r, acting, installation),
        (_, ["teams", slug, more @ ..]) => match s.team_by_slug(slug) {
            Some(id) => team_routes(s, r, id, more),
            None => Answer::not_found(),
        },
        _ => Answer::not_found(),
    }
}

fn create_team(s: &mut State, r: &Request, acting: &str, installation: bool) -> Answer {
    let Some(name) = r.body["name"].as_str().filter(|n| !n.trim().is_empty()) else {
        return Answer::invalid("missing_field", "name", "name is missing");
    };
    let slug = match unique_slug(s, name, None) {
        Ok(slug) => slug,
        Err(refused) => return refused,
    };
    let parent = match parent_of(s, &r.body, None) {
        Ok(p) => p.flatten(),
        Err(a) => return a,
    };
    let id = s.next_id();
    let now = Utc::now();
    let mut team = TeamState {
        id,
        name: name.to_owned(),
        slug,
        description: r.body["description"].as_str().unwrap_or("").to_owned(),
        privacy: r.body["privacy"]
            .as_str()
            .unwrap_or(if parent.is_some() { "closed" } else { "secret" })
            .to_owned(),
        parent,
        members: BTreeMap::new(),
        created_at: now,
        updated_at: now,
    };
    // "When you create a new team, you automatically become a team maintainer."
    if !installation {
        let creator = s.new_member(acting, MAINTAINER, false);
        team.members.insert(key(acting), creator);
    }
    s.teams.insert(id, team);
    Answer::json(StatusCode::CREATED, full_team(s, r, &s.teams[&id]))
}

/// The slug of `name`, unless another team than `this` has it, or the name gives none.
fn unique_slug(s: &State, name: &str, this: Option<u64>) -> Result<String, Answer> {
    let slug = team_slug(name);
    if slug.is_empty() {
        // GitHub does not document what it does with such a name; refusing it is the answer
        // least kind to a client that derives slugs itself.
        return Err(Answer::invalid("invalid", "name", "Name must contain a letter or a digit"));
    }
    match s.team_by_slug(&slug) {
        Some(other) if Some(other) != this => {
            Err(Answer::invalid("already_exists", "name", "Name must be unique for this org"))
        }
        _ => Ok(slug),
    }
}

/// Every team endpoint, by slug or by id.
fn team_routes(s: &mut State, r: &Request, id: u64, more: &[&str]) -> Answer {
    match (&r.method, more) {
        (&Method::GET, []) => Answer::json(StatusCode::OK, full_team(s, r, &s.teams[&id])),
        (&Method::PATCH, []) => update_team(s, r, id),
        (&Method::DELETE, []) => {
            // "If you are an organization owner, deleting a parent team will delete all of its
            // child teams as well."
            for team in std::iter::once(id).chain(s.descendants(id)).collect::<Vec<_>>() {
                s.teams.remove(&team);
            }
            Answer::empty(StatusCode::NO_CONTENT)
        }
        (&Method::GET, ["members"]) => {
            let role = r.params.get("role").map_or("all", String::as_str);
            let logins: Vec<String> = s
                .members(id)
                .into_iter()
                .filter(|m| role == "all" || m.role == role)
                .map(|m| m.login)
                .collect();
            let items =
                logins.iter().map(|login| model::user(&r.base, login, s.user_id(login))).collect();
            paginate(r, items)
        }
        (&Method::GET, ["invitations"]) => {
            let pending: Vec<_> =
                s.teams[&id].members.values().filter(|m| m.pending).cloned().collect();
            let items = pending
                .iter()
                .map(|m| {
                    let inviter = model::user(&r.base, &m.inviter, s.user_id(&m.inviter));
                    let team_count = s
                        .teams
                        .values()
                        .filter(|t| t.members.get(&key(&m.login)).is_some_and(|o| o.pending))
                        .count();
                    InvitationJson {
                        base: &r.base,
                        org_id: s.org_id,
                        id: m.invitation_id,
                        login: &m.login,
                        created_at: m.invited_at,
                        inviter,
                        team_count,
                        failed: None,
                    }
                    .render()
                })
                .collect();
            paginate(r, items)
        }
        // "List child teams".
        (&Method::GET, ["teams"]) => {
            let items = s.children(id).iter().map(|c| listed_team(s, r, &s.teams[c])).collect();
            paginate(r, items)
        }
        (&Method::GET, ["memberships", login]) => match s.membership(id, login) {
            Some(m) => Answer::json(StatusCode::OK, membership_json(s, r, id, login, &m)),
            None => Answer::not_found(),
        },
        (&Method::PUT, ["memberships", login]) => put_membership(s, r, id, login),
        (&Method::DELETE, ["memberships", login]) => {
            // Only the team's own members can be removed from it. Removing someone who is in
            // the team only through a child team is not documented; it changes nothing here,
            // and answers 404 like removing a stranger.
            let team = s.teams.get_mut(&id).expect("the route found the team");
            match team.members.remove(&key(login)) {
                Some(_) => Answer::empty(StatusCode::NO_CONTENT),
                None => Answer::not_found(),
            }
        }
        _ => Answer::not_found(),
    }
}

fn update_team(s: &mut State, r: &Request, id: u64) -> Answer {
    let parent = match parent_of(s, &r.body, Some(id)) {
        Ok(p) => p,
        Err(a) => return a,
    };
    if let Some(name) = r.body["name"].as_str() {
        let slug = match unique_slug(s, name, Some(id)) {
            Ok(slug) => slug,
            Err(refused) => return refused,
        };
        let team = s.teams.get_mut(&id).expect("the route found the team");
        team.name = name.to_owned();
        team.slug = slug;
    }
    let team = s.teams.get_mut(&id).expect("the route found the team");
    if let Some(d) = r.body["description"].as_str() {
        team.description = d.to_owned();
    }
    if let Some(p) = r.body["privacy"].as_str() {
        team.privacy = p.to_owned();
    }
    if let Some(p) = parent {
        team.parent = p;
    }
    team.updated_at = Utc::now();
    Answer::json(StatusCode::OK, full_team(s, r, &s.teams[&id]))
}

/// "Add or update team membership for a user".
///
/// - A login that names no account answers 404 `Not Found`. GitHub's documentation lists no
///   404 for this endpoint; it is what GitHub answers (mozilla-services/userplex#43: "PUT
///   https://api.github.com/teams/2105661/memberships/kghim: 404 Not Found … because kghim is
///   not a Github user").
/// - Adding the organization itself is a 422 ("Unprocessable Entity if you attempt to add an
///   organization to a team").
/// - Someone outside the organization is invited: the membership is `pending`.
/// - An organization owner is a maintainer whatever role is asked for ("The `role` for
///   organization owners is set to `maintainer`").
fn put_membership(s: &mut State, r: &Request, id: u64, login: &str) -> Answer {
    let asked = r.body["role"].as_str().unwrap_or(MEMBER);
    if asked != MEMBER && asked != MAINTAINER {
        return Answer::invalid("invalid", "role", "role must be member or maintainer");
    }
    if login.eq_ignore_ascii_case(&s.org) {
        return Answer::invalid("org", "user", "Cannot add an organization to a team");
    }
    if !s.user_exists(login) {
        return Answer::not_found();
    }
    let role = s.reported_role(login, asked);
    let k = key(login);
    if !s.teams[&id].members.contains_key(&k) {
        let pending = !s.is_org_member(login);
        let member = s.new_member(login, &role, pending);
        s.teams.get_mut(&id).expect("the route found the team").members.insert(k.clone(), member);
    }
    let team = s.teams.get_mut(&id).expect("the route found the team");
    let member = team.members.get_mut(&k).expect("inserted above");
    member.role = role;
    let m = s.membership(id, login).expect("inserted above");
    Answer::json(StatusCode::OK, membership_json(s, r, id, login, &m))
}

fn membership_json(s: &State, r: &Request, id: u64, login: &str, m: &Membership) -> Value {
    let url = format!("{}/organizations/{}/team/{id}/memberships/{login}", r.base, s.org_id);
    json!({"url": url, "role": m.role, "state": if m.pending { "pending" } else { "active" }})
}

/// `parent_team_id` of a body: `Ok(None)` absent, `Ok(Some(None))` null, else the team. A team
/// cannot be its own parent or its descendant's child.
fn parent_of(s: &State, body: &Value, this: Option<u64>) -> Result<Option<Option<u64>>, Answer> {
    let refused = || Answer::invalid("invalid", "parent_team_id", "Parent team does not exist");
    match body.get("parent_team_id") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => {
            let id = v.as_u64().filter(|id| s.teams.contains_key(id)).ok_or_else(refused)?;
            let cycle = this.is_some_and(|this| id == this || s.descendants(this).contains(&id));
            if cycle {
                return Err(Answer::invalid(
                    "invalid",
                    "parent_team_id",
                    "A team cannot be nested under itself or its child teams",
                ));
            }
            Ok(Some(Some(id)))
        }
    }
}

fn team_json<'a>(s: &'a State, r: &'a Request, t: &'a TeamState) -> TeamJson<'a> {
    TeamJson {
        base: &r.base,
        org: &s.org,
        org_id: s.org_id,
        id: t.id,
        name: &t.name,
        slug: &t.slug,
        description: &t.description,
        privacy: &t.privacy,
        members_count: t.members.values().filter(|m| !m.pending).count(),
        created_at: t.created_at,
        updated_at: t.updated_at,
    }
}

fn parent_json(s: &State, r: &Request, t: &TeamState) -> Option<Value> {
    t.parent.and_then(|p| s.teams.get(&p)).map(|p| team_json(s, r, p).simple())
}

/// The team as lists show it, with its parent.
fn listed_team(s: &State, r: &Request, t: &TeamState) -> Value {
    let mut v = team_json(s, r, t).simple();
    v["parent"] = parent_json(s, r, t).unwrap_or(Value::Null);
    v
}

fn full_team(s: &State, r: &Request, t: &TeamState) -> Value {
    team_json(s, r, t).full(parent_json(s, r, t))
}

/// One page of `items` with GitHub's Link header.
fn paginate(r: &Request, items: Vec<Value>) -> Answer {
    let per_page = r
        .params
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(DEFAULT_PER_PAGE)
        .clamp(1, MAX_PER_PAGE);
    let page: usize = r.params.get("page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let slice: Vec<Value> = items.into_iter().skip((page - 1) * per_page).take(per_page).collect();
    let link_to = |n: usize| {
        let mut params = r.params.clone();
        params.insert("per_page".into(), per_page.to_string());
        params.insert("page".into(), n.to_string());
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("<{}{}?{}>", r.base, r.path, query.join("&"))
    };
    let mut links = Vec::new();
    if page < last {
        links.push(format!("{}; rel=\"next\"", link_to(page + 1)));
        links.push(format!("{}; rel=\"last\"", link_to(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", link_to(1)));
        links.push(format!("{}; rel=\"prev\"", link_to(page - 1)));
    }
    let mut answer = Answer::json(StatusCode::OK, Value::Array(slice));
    answer.link = (!links.is_empty()).then(|| links.join(", "));
    answer
}
