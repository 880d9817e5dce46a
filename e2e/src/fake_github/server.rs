//! The fake's HTTP handler (faults, quota, authentication, ETags) and its test-facing handle.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::model;
use super::names::team_slug;
use super::routes::{Answer, Request, route};
use super::state::{OrgMember, State, TeamState, key};

/// The primary rate-limit budget the fake reports and enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit: u64,
    pub remaining: u64,
    /// UTC epoch seconds at which `remaining` returns to `limit`.
    pub reset: u64,
}

impl Budget {
    /// `remaining` of `limit` requests left, reset `reset_in` from now.
    pub fn new(limit: u64, remaining: u64, reset_in: Duration) -> Self {
        Budget { limit, remaining, reset: epoch_now() + reset_in.as_secs() }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(5000, 5000, Duration::from_secs(3600))
    }
}

/// One injected answer, taken by the next request (of the matching kind).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// The status to answer; `None` lets the request through after `latency`.
    pub status: Option<u16>,
    pub message: String,
    pub retry_after: Option<u64>,
    /// Extra headers, e.g. `x-accepted-github-permissions`.
    pub headers: Vec<(String, String)>,
    pub latency: Duration,
    /// Only a mutating request (POST, PATCH, PUT, DELETE) takes it.
    pub mutating_only: bool,
}

impl Fault {
    /// An answer with `status` and GitHub's message for it.
    pub fn status(status: u16) -> Self {
        let message = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .to_owned();
        Fault {
            status: Some(status),
            message,
            retry_after: None,
            headers: Vec::new(),
            latency: Duration::ZERO,
            mutating_only: false,
        }
    }

    /// `status` (403 or 429) with `Retry-After: secs`, GitHub's secondary-limit message.
    pub fn retry_after(status: u16, secs: u64) -> Self {
        Fault {
            retry_after: Some(secs),
            message: "You have exceeded a secondary rate limit. Please wait a few minutes before \
                      you try again."
                .into(),
            ..Fault::status(status)
        }
    }

    /// A 403 secondary limit without Retry-After (and remaining quota in the headers).
    pub fn secondary_limit() -> Self {
        Fault { retry_after: None, ..Fault::retry_after(403, 0) }
    }

    /// A 403 that is not a rate limit: the token lacks a permission.
    pub fn forbidden(permission: &str) -> Self {
        Fault {
            message: "Resource not accessible by integration".into(),
            headers: vec![("x-accepted-github-permissions".into(), permission.into())],
            ..Fault::status(403)
        }
    }

    /// Delay the next request, then answer it normally.
    pub fn latency(latency: Duration) -> Self {
        Fault { status: None, latency, ..Fault::status(200) }
    }

    /// Only the next mutating request takes this fault.
    pub fn on_mutation(self) -> Self {
        Fault { mutating_only: true, ..self }
    }
}

/// One request as the fake saw it.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub at: DateTime<Utc>,
    #[serde(skip)]
    pub instant: Instant,
    pub status: u16,
    /// POST, PATCH, PUT or DELETE.
    pub mutating: bool,
    /// The request carried `If-None-Match`.
    pub conditional: bool,
}

/// A team as the fake holds it, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamView {
    pub id: u64,
    pub name: String,
    pub slug: String,
    pub description: String,
    pub privacy: String,
    pub parent: Option<u64>,
    /// Active members: login → `member` or `maintainer`.
    pub members: BTreeMap<String, String>,
    /// Pending invitations: login → role.
    pub pending: BTreeMap<String, String>,
}

type Shared = Arc<Mutex<State>>;

/// A running fake GitHub on 127.0.0.1.
pub struct FakeGitHub {
    addr: SocketAddr,
    state: Shared,
    task: JoinHandle<()>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGitHub {
    /// Starts the fake for organization `org` on a free loopback port.
    ///
    /// # Errors
    /// The port could not be bound.
    pub async fn start(org: &str) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), org).await
    }

    /// Starts the fake on `addr`.
    ///
    /// # Errors
    /// The address could not be bound.
    pub async fn start_on(addr: SocketAddr, org: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::new(org)));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake GitHub stopped: {e}");
            }
        });
        Ok(FakeGitHub { addr, state, task })
    }

    /// The API root to configure as `api-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes these logins members of the organization (others are invited when added). A login
    /// deleted or renamed away names a new account again.
    pub fn add_org_members<'a>(&self, logins: impl IntoIterator<Item = &'a str>) {
        let mut s = self.state();
        for login in logins {
            let owner = s.is_owner(login);
            s.org_members.insert(key(login), OrgMember { login: login.to_owned(), owner });
            s.unknown_users.remove(&key(login));
        }
    }

    /// Makes these logins owners of the organization: members with role `admin`. GitHub
    /// reports an owner as a maintainer of every team they are on.
    pub fn add_org_owners<'a>(&self, logins: impl IntoIterator<Item = &'a str>) {
        let mut s = self.state();
        for login in logins {
            s.org_members.insert(key(login), OrgMember { login: login.to_owned(), owner: true });
            s.unknown_users.remove(&key(login));
        }
    }

    /// Removes this login from the organization, as an owner's "Remove from organization"
    /// does: GitHub removes them from all its teams too, and their pending invitations go.
    pub fn remove_org_member(&self, login: &str) {
        self.state().remove_from_org(login);
    }

    /// Deletes the account: from now on its login names no user (a PUT membership for it is a
    /// 404), and it is in no team of the organization.
    pub fn delete_user(&self, login: &str) {
        self.state().delete_user(login);
    }

    /// Renames the account: `old` names no user from now on, and `new` holds the account's
    /// id, organization membership, team memberships and invitations.
    pub fn rename_user(&self, old: &str, new: &str) {
        self.state().rename_user(old, new);
    }

    /// Lets the pending invitation of `login` expire: it leaves the teams it was for and is
    /// listed by `GET /orgs/{org}/failed_invitations`. Whether there was one.
    pub fn expire_invitation(&self, login: &str) -> bool {
        self.state().expire_invitation(login)
    }

    /// While on, the organization enforces SAML SSO and no personal token is authorized for
    /// it: every request for the organization's resources made with a personal token answers
    /// 403 with an `X-GitHub-SSO` header. App installation tokens are not affected.
    pub fn require_saml_sso(&self, on: bool) {
        self.state().saml_sso = on;
    }

    /// The organization's id, for the `/organizations/{org_id}/team/{team_id}` routes.
    pub fn org_id(&self) -> u64 {
        self.state().org_id
    }

    /// The login every personal token acts as (default `muster-bot`). It is an org member.
    pub fn set_token_login(&self, login: &str) {
        let mut s = self.state();
        s.token_login = login.to_owned();
        let owner = s.is_owner(login);
        s.org_members.insert(key(login), OrgMember { login: login.to_owned(), owner });
    }

    /// How long the installation tokens it mints live (GitHub: one hour).
    pub fn set_installation_token_ttl(&self, ttl: Duration) {
        self.state().installation_token_ttl = ttl;
    }

    /// Creates a team as if through GitHub's UI (no request logged); returns its id.
    ///
    /// # Panics
    /// When GitHub would give the name no slug (no letter or digit in it).
    pub fn create_team(&self, name: &str) -> u64 {
        let slug = team_slug(name);
        assert!(!slug.is_empty(), "team name {name:?} gives no slug");
        let mut s = self.state();
        let id = s.next_id();
        let now = Utc::now();
        let team = TeamState {
            id,
            name: name.to_owned(),
            slug,
            description: String::new(),
            privacy: "closed".into(),
            parent: None,
            members: BTreeMap::new(),
            created_at: now,
            updated_at: now,
        };
        s.teams.insert(id, team);
        id
    }

    /// Backdates the team's `created_at`, as for a team someone made by hand long ago.
    ///
    /// # Panics
    /// When the team does not exist.
    pub fn set_created_at(&self, slug: &str, at: DateTime<Utc>) {
        let mut s = self.state();
        let id = s.team_by_slug(slug).expect("team exists");
        s.teams.get_mut(&id).expect("team exists").created_at = at;
    }

    /// Nests the team under the team with id `parent` (or makes it top-level), as if through
    /// GitHub's UI.
    ///
    /// # Panics
    /// When the team does not exist.
    pub fn set_parent(&self, slug: &str, parent: Option<u64>) {
        let mut s = self.state();
        let id = s.team_by_slug(slug).expect("team exists");
        s.teams.get_mut(&id).expect("team exists").parent = parent;
    }

    /// Adds or changes a membership of the team itself directly (`pending` for an invitation).
    ///
    /// # Panics
    /// When the team does not exist.
    pub fn put_member(&self, slug: &str, login: &str, role: &str, pending: bool) {
        let mut s = self.state();
        let id = s.team_by_slug(slug).expect("team exists");
        let member = s.new_member(login, role, pending);
        s.teams.get_mut(&id).expect("team exists").members.insert(key(login), member);
    }

    /// Removes a membership directly, e.g. to simulate drift.
    pub fn remove_member(&self, slug: &str, login: &str) {
        let mut s = self.state();
        if let Some(id) = s.team_by_slug(slug)
            && let Some(team) = s.teams.get_mut(&id)
        {
            team.members.remove(&key(login));
        }
    }

    /// The team with this slug, with its own members only (not those of its child teams).
    pub fn team(&self, slug: &str) -> Option<TeamView> {
        let s = self.state();
        let id = s.team_by_slug(slug)?;
        Some(s.view(&s.teams[&id]))
    }

    /// Every team.
    pub fn teams(&self) -> Vec<TeamView> {
        let s = self.state();
        s.teams.values().map(|t| s.view(t)).collect()
    }

    /// Queues an injected answer.
    pub fn inject(&self, fault: Fault) {
        self.state().faults.push_back(fault);
    }

    /// Answers this share of requests (0 to 1, spread evenly) with a 403 secondary limit
    /// without headers.
    pub fn rate_limit_fraction(&self, fraction: f64) {
        self.state().limited_fraction = fraction.clamp(0.0, 1.0);
    }

    /// Replaces the primary budget.
    pub fn set_budget(&self, budget: Budget) {
        self.state().budget = budget;
    }

    pub fn budget(&self) -> Budget {
        self.state().budget
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state().log.clone()
    }

    /// The mutating requests so far.
    pub fn mutations(&self) -> Vec<LoggedRequest> {
        self.state().log.iter().filter(|r| r.mutating).cloned().collect()
    }

    pub fn clear_log(&self) {
        self.state().log.clear();
    }
}

fn epoch_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn handle(
    AxumState(state): AxumState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if uri.path() == "/_fake/log" {
        // The dev aid's own endpoint: no faults, no quota, no authentication, not logged.
        let log = json!(state.lock().unwrap_or_else(|e| e.into_inner()).log).to_string();
        let mut response = Response::new(Body::from(log));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return response;
    }
    let mutating = matches!(method, Method::POST | Method::PATCH | Method::PUT | Method::DELETE);
    let latency = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let position = s.faults.iter().position(|f| !f.mutating_only || mutating);
        match position.map(|i| s.faults[i].clone()) {
            Some(f) if f.status.is_none() => {
                s.faults.remove(position.unwrap_or_default());
                f.latency
            }
            Some(f) => f.latency,
            None => Duration::ZERO,
        }
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let host =
        headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1").to_owned();
    let query = uri.query().map(str::to_owned);
    let params = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let request = Request {
        method: method.clone(),
        path: uri.path().trim_end_matches('/').to_owned(),
        params,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers,
        base: format!("http://{host}"),
    };

    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    let now = epoch_now();
    if s.budget.reset <= now {
        s.budget.remaining = s.budget.limit;
        s.budget.reset = now + 3600;
    }
    let conditional = request.headers.contains_key(header::IF_NONE_MATCH);

    let answer = answer(&mut s, &request, mutating);
    let (status, response) = render(&mut s, &request, answer);
    s.log.push(LoggedRequest {
        method: method.to_string(),
        path: request.path.clone(),
        query,
        at: Utc::now(),
        instant: Instant::now(),
        status,
        mutating,
        conditional,
    });
    response
}

/// Faults, the budget and authentication first, then the route.
fn answer(s: &mut State, r: &Request, mutating: bool) -> Answer {
    if let Some(i) = s.faults.iter().position(|f| !f.mutating_only || mutating) {
        let fault = s.faults.remove(i).unwrap_or_else(|| Fault::status(500));
        if let Some(status) = fault.status {
            let mut a = Answer::json(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                model::error(&fault.message),
            );
            a.headers = fault.headers;
            if let Some(secs) = fault.retry_after {
                a.headers.push(("retry-after".into(), secs.to_string()));
            }
            return a;
        }
    }
    s.counted += 1;
    let f = s.limited_fraction;
    if f > 0.0 && ((s.counted as f64) * f).floor() > (((s.counted - 1) as f64) * f).floor() {
        return Answer::json(
            StatusCode::FORBIDDEN,
            model::error("You have exceeded a secondary rate limit. Please wait a few minutes."),
        );
    }
    let is_rate_limit_endpoint = r.path == "/rate_limit";
    if s.budget.remaining == 0 && !is_rate_limit_endpoint {
        return Answer::json(
            StatusCode::FORBIDDEN,
            model::error("API rate limit exceeded for user ID 1000."),
        );
    }
    let auth = r.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let token = auth.split_once(' ').map_or("", |(_, t)| t.trim());
    if token.is_empty() {
        return Answer::json(StatusCode::UNAUTHORIZED, model::error("Requires authentication"));
    }
    route(s, r, token)
}

/// Adds ETag, 304 and rate-limit accounting, and builds the response.
///
/// The ETag is a hash of the body alone, not of the Link header: a page whose items did not
/// change keeps its ETag when items are added to later pages, so its conditional GET answers
/// 304 while the Link header (sent with the 304 too) gained `rel="next"`. GitHub documents no
/// more than "If the data has not changed, you will receive a 304 Not Modified response" ("Best
/// practices for using the REST API"); users observed that "the pagination data set in the Link
/// header can change (e.g. Adding a new last page) without modifying the page content. The Link
/// header does not affect the ETAG value" (app-sre/github-mirror#113).
fn render(s: &mut State, r: &Request, answer: Answer) -> (u16, Response<Body>) {
    let body = answer.body.map(|b| b.to_string());
    let is_get = r.method == Method::GET;
    let etag = match (&body, is_get && answer.status == StatusCode::OK) {
        (Some(b), true) => {
            let mut hasher = Sha256::new();
            hasher.update(b.as_bytes());
            Some(format!("W/\"{}\"", hex::encode(&hasher.finalize()[..16])))
        }
        _ => None,
    };
    let not_modified = etag.as_deref().is_some_and(|etag| {
        r.headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|inm| inm.split(',').any(|t| t.trim() == etag))
    });
    // A 304 and GET /rate_limit cost no primary quota; a limited answer costs none either.
    let rate_limited = (answer.status == StatusCode::FORBIDDEN && s.budget.remaining == 0)
        || answer.headers.iter().any(|(k, _)| k == "retry-after");
    if !not_modified && r.path != "/rate_limit" && !rate_limited && s.budget.remaining > 0 {
        s.budget.remaining -= 1;
    }
    let status = if not_modified { StatusCode::NOT_MODIFIED } else { answer.status };
    let mut builder = Response::builder().status(status);
    let b = s.budget;
    let rate_headers = [
        ("x-ratelimit-limit", b.limit.to_string()),
        ("x-ratelimit-remaining", b.remaining.to_string()),
        ("x-ratelimit-used", (b.limit - b.remaining).to_string()),
        ("x-ratelimit-reset", b.reset.to_string()),
        ("x-ratelimit-resource", "core".to_owned()),
        ("x-github-api-version-selected", "2022-11-28".to_owned()),
    ];
    for (k, v) in rate_headers {
        builder = builder.header(k, v);
    }
    for (k, v) in &answer.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    if let Some(etag) = &etag {
        builder = builder.header(header::ETAG, etag.as_str());
    }
    if let Some(link) = &answer.link {
        builder = builder.header(header::LINK, link.as_str());
    }
    let response = match body {
        Some(b) if !not_modified => builder
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            )
            .body(Body::from(b)),
        _ => builder.body(Body::empty()),
    };
    let response = response.unwrap_or_else(|_| {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    });
    (status.as_u16(), response)
}
