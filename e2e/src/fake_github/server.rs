//! The fake's state, its HTTP handler and its test-facing handle.

use std::collections::{BTreeMap, HashMap, VecDeque};
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
use workflows::github::slug_for;

use super::model::{self, TeamJson};

/// Default page size of GitHub lists, and the largest allowed.
const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;

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

#[derive(Debug, Clone)]
struct TeamState {
    id: u64,
    name: String,
    slug: String,
    description: String,
    privacy: String,
    parent: Option<u64>,
    /// Lower-cased login → membership.
    members: BTreeMap<String, MemberState>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct MemberState {
    login: String,
    role: String,
    pending: bool,
    invitation_id: u64,
    invited_at: DateTime<Utc>,
}

#[derive(Debug)]
struct State {
    org: String,
    org_id: u64,
    /// Lower-cased logins of the organization's members.
    org_members: BTreeMap<String, String>,
    /// The login a personal token acts as.
    token_login: String,
    app_slug: String,
    /// Tokens minted for the App's installation, and how long they live.
    installation_tokens: Vec<String>,
    installation_token_ttl: Duration,
    teams: BTreeMap<u64, TeamState>,
    next_id: u64,
    user_ids: HashMap<String, u64>,
    budget: Budget,
    faults: VecDeque<Fault>,
    limited_fraction: f64,
    counted: u64,
    log: Vec<LoggedRequest>,
}

impl State {
    fn new(org: &str) -> Self {
        State {
            org: org.to_owned(),
            org_id: 1,
            org_members: BTreeMap::new(),
            token_login: "muster-bot".into(),
            app_slug: "muster".into(),
            installation_tokens: Vec::new(),
            installation_token_ttl: Duration::from_secs(3600),
            teams: BTreeMap::new(),
            next_id: 100,
            user_ids: HashMap::new(),
            budget: Budget::default(),
            faults: VecDeque::new(),
            limited_fraction: 0.0,
            counted: 0,
            log: Vec::new(),
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn user_id(&mut self, login: &str) -> u64 {
        let key = login.to_ascii_lowercase();
        if let Some(id) = self.user_ids.get(&key) {
            return *id;
        }
        let id = 1000 + self.user_ids.len() as u64;
        self.user_ids.insert(key, id);
        id
    }

    fn team_by_slug(&self, slug: &str) -> Option<u64> {
        self.teams.values().find(|t| t.slug == slug.to_ascii_lowercase()).map(|t| t.id)
    }

    fn is_org_member(&self, login: &str) -> bool {
        self.org_members.contains_key(&login.to_ascii_lowercase())
    }

    fn view(&self, team: &TeamState) -> TeamView {
        let pick = |pending: bool| {
            team.members
                .values()
                .filter(|m| m.pending == pending)
                .map(|m| (m.login.clone(), m.role.clone()))
                .collect()
        };
        TeamView {
            id: team.id,
            name: team.name.clone(),
            slug: team.slug.clone(),
            description: team.description.clone(),
            privacy: team.privacy.clone(),
            parent: team.parent,
            members: pick(false),
            pending: pick(true),
        }
    }
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

    /// Makes these logins members of the organization (others are invited when added).
    pub fn add_org_members<'a>(&self, logins: impl IntoIterator<Item = &'a str>) {
        let mut s = self.state();
        for login in logins {
            s.org_members.insert(login.to_ascii_lowercase(), login.to_owned());
        }
    }

    /// The login every personal token acts as (default `muster-bot`). It is an org member.
    pub fn set_token_login(&self, login: &str) {
        let mut s = self.state();
        s.token_login = login.to_owned();
        s.org_members.insert(login.to_ascii_lowercase(), login.to_owned());
    }

    /// How long the installation tokens it mints live (GitHub: one hour).
    pub fn set_installation_token_ttl(&self, ttl: Duration) {
        self.state().installation_token_ttl = ttl;
    }

    /// Creates a team as if through GitHub's UI (no request logged); returns its id.
    pub fn create_team(&self, name: &str) -> u64 {
        let mut s = self.state();
        let id = s.next_id();
        let now = Utc::now();
        let team = TeamState {
            id,
            name: name.to_owned(),
            slug: slug_for(name),
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

    /// Adds or changes a membership directly (`pending` for an invitation).
    ///
    /// # Panics
    /// When the team does not exist.
    pub fn put_member(&self, slug: &str, login: &str, role: &str, pending: bool) {
        let mut s = self.state();
        let id = s.team_by_slug(slug).expect("team exists");
        let invitation_id = s.next_id();
        let team = s.teams.get_mut(&id).expect("team exists");
        team.members.insert(
            login.to_ascii_lowercase(),
            MemberState {
                login: login.to_owned(),
                role: role.to_owned(),
                pending,
                invitation_id,
                invited_at: Utc::now(),
            },
        );
    }

    /// Removes a membership directly, e.g. to simulate drift.
    pub fn remove_member(&self, slug: &str, login: &str) {
        let mut s = self.state();
        if let Some(id) = s.team_by_slug(slug)
            && let Some(team) = s.teams.get_mut(&id)
        {
            team.members.remove(&login.to_ascii_lowercase());
        }
    }

    /// The team with this slug.
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

struct Request {
    method: Method,
    path: String,
    params: BTreeMap<String, String>,
    headers: HeaderMap,
    body: Value,
    base: String,
}

struct Answer {
    status: StatusCode,
    body: Option<Value>,
    headers: Vec<(String, String)>,
    link: Option<String>,
}

impl Answer {
    fn json(status: StatusCode, body: Value) -> Self {
        Answer { status, body: Some(body), headers: Vec::new(), link: None }
    }
    fn empty(status: StatusCode) -> Self {
        Answer { status, body: None, headers: Vec::new(), link: None }
    }
    fn not_found() -> Self {
        Answer::json(StatusCode::NOT_FOUND, model::error("Not Found"))
    }
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

fn route(s: &mut State, r: &Request, token: &str) -> Answer {
    let segments: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let installation = s.installation_tokens.iter().any(|t| t == token);
    let acting = if installation { format!("{}[bot]", s.app_slug) } else { s.token_login.clone() };
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
            teams(s, r, rest, &acting, installation)
        }
        _ => Answer::not_found(),
    }
}

fn teams(s: &mut State, r: &Request, rest: &[&str], acting: &str, installation: bool) -> Answer {
    match (&r.method, rest) {
        (&Method::GET, ["teams"]) => {
            let items: Vec<Value> = s.teams.values().map(|t| team_json(s, r, t).simple()).collect();
            paginate(r, items)
        }
        (&Method::POST, ["teams"]) => {
            let Some(name) = r.body["name"].as_str().filter(|n| !n.trim().is_empty()) else {
                return Answer::json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    model::validation_failed("missing_field", "name", "name is missing"),
                );
            };
            let slug = slug_for(name);
            if s.team_by_slug(&slug).is_some() {
                return Answer::json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    model::validation_failed(
                        "already_exists",
                        "name",
                        "Name must be unique for this org",
                    ),
                );
            }
            let parent = match parent_of(s, &r.body) {
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
                let invitation_id = s.next_id();
                team.members.insert(
                    acting.to_ascii_lowercase(),
                    MemberState {
                        login: acting.to_owned(),
                        role: "maintainer".into(),
                        pending: false,
                        invitation_id,
                        invited_at: now,
                    },
                );
            }
            s.teams.insert(id, team);
            let t = &s.teams[&id];
            Answer::json(StatusCode::CREATED, full_team(s, r, t))
        }
        (_, ["teams", slug, more @ ..]) => {
            let Some(id) = s.team_by_slug(slug) else { return Answer::not_found() };
            team_routes(s, r, id, more, acting)
        }
        _ => Answer::not_found(),
    }
}

fn team_routes(s: &mut State, r: &Request, id: u64, more: &[&str], acting: &str) -> Answer {
    match (&r.method, more) {
        (&Method::GET, []) => Answer::json(StatusCode::OK, full_team(s, r, &s.teams[&id])),
        (&Method::PATCH, []) => {
            let parent = match parent_of(s, &r.body) {
                Ok(p) => p,
                Err(a) => return a,
            };
            if let Some(name) = r.body["name"].as_str() {
                let slug = slug_for(name);
                if s.team_by_slug(&slug).is_some_and(|other| other != id) {
                    return Answer::json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        model::validation_failed(
                            "already_exists",
                            "name",
                            "Name must be unique for this org",
                        ),
                    );
                }
                let team = s.teams.get_mut(&id).expect("team exists");
                team.name = name.to_owned();
                team.slug = slug;
            }
            let team = s.teams.get_mut(&id).expect("team exists");
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
        (&Method::DELETE, []) => {
            s.teams.remove(&id);
            let children: Vec<u64> =
                s.teams.values().filter(|t| t.parent == Some(id)).map(|t| t.id).collect();
            for child in children {
                s.teams.remove(&child);
            }
            Answer::empty(StatusCode::NO_CONTENT)
        }
        (&Method::GET, ["members"]) => {
            let role = r.params.get("role").map_or("all", String::as_str);
            let members: Vec<(String, String)> = s.teams[&id]
                .members
                .values()
                .filter(|m| !m.pending && (role == "all" || m.role == role))
                .map(|m| (m.login.clone(), m.role.clone()))
                .collect();
            let items = members
                .iter()
                .map(|(login, _)| model::user(&r.base, login, s.user_id(login)))
                .collect();
            paginate(r, items)
        }
        (&Method::GET, ["invitations"]) => {
            let pending: Vec<MemberState> =
                s.teams[&id].members.values().filter(|m| m.pending).cloned().collect();
            let inviter = model::user(&r.base, acting, s.user_id(acting));
            let items = pending
                .iter()
                .map(|m| {
                    json!({
                        "id": m.invitation_id,
                        "node_id": format!("OI_{}", m.invitation_id),
                        "login": m.login,
                        "email": null,
                        "role": "direct_member",
                        "created_at": m.invited_at,
                        "failed_at": null,
                        "failed_reason": null,
                        "inviter": inviter,
                        "team_count": 1,
                        "invitation_teams_url": format!("{}/organizations/{}/invitations/{}/teams", r.base, s.org_id, m.invitation_id),
                        "invitation_source": "member",
                    })
                })
                .collect();
            paginate(r, items)
        }
        (method, ["memberships", login]) => {
            let key = login.to_ascii_lowercase();
            let url =
                format!("{}/organizations/{}/team/{id}/memberships/{login}", r.base, s.org_id);
            match *method {
                Method::GET => match s.teams[&id].members.get(&key) {
                    Some(m) => Answer::json(StatusCode::OK, membership(&url, m)),
                    None => Answer::not_found(),
                },
                Method::PUT => {
                    let role = r.body["role"].as_str().unwrap_or("member");
                    if role != "member" && role != "maintainer" {
                        return Answer::json(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            model::validation_failed(
                                "invalid",
                                "role",
                                "role must be member or maintainer",
                            ),
                        );
                    }
                    let pending = !s.is_org_member(login);
                    let invitation_id = s.next_id();
                    let team = s.teams.get_mut(&id).expect("team exists");
                    let entry = team.members.entry(key).or_insert(MemberState {
                        login: (*login).to_owned(),
                        role: role.to_owned(),
                        pending,
                        invitation_id,
                        invited_at: Utc::now(),
                    });
                    entry.role = role.to_owned();
                    Answer::json(StatusCode::OK, membership(&url, entry))
                }
                Method::DELETE => {
                    let team = s.teams.get_mut(&id).expect("team exists");
                    match team.members.remove(&key) {
                        Some(_) => Answer::empty(StatusCode::NO_CONTENT),
                        None => Answer::not_found(),
                    }
                }
                _ => Answer::not_found(),
            }
        }
        _ => Answer::not_found(),
    }
}

fn membership(url: &str, m: &MemberState) -> Value {
    json!({"url": url, "role": m.role, "state": if m.pending { "pending" } else { "active" }})
}

/// `parent_team_id` of a body: `Ok(None)` absent, `Ok(Some(None))` null, else the team.
fn parent_of(s: &State, body: &Value) -> Result<Option<Option<u64>>, Answer> {
    match body.get("parent_team_id") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => match v.as_u64().filter(|id| s.teams.contains_key(id)) {
            Some(id) => Ok(Some(Some(id))),
            None => Err(Answer::json(
                StatusCode::UNPROCESSABLE_ENTITY,
                model::validation_failed("invalid", "parent_team_id", "Parent team does not exist"),
            )),
        },
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

fn full_team(s: &State, r: &Request, t: &TeamState) -> Value {
    let parent = t.parent.and_then(|p| s.teams.get(&p)).map(|p| team_json(s, r, p).simple());
    team_json(s, r, t).full(parent)
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

/// Adds ETag, 304 and rate-limit accounting, and builds the response.
fn render(s: &mut State, r: &Request, answer: Answer) -> (u16, Response<Body>) {
    let body = answer.body.map(|b| b.to_string());
    let is_get = r.method == Method::GET;
    let etag = match (&body, is_get && answer.status == StatusCode::OK) {
        (Some(b), true) => {
            let mut hasher = Sha256::new();
            hasher.update(b.as_bytes());
            hasher.update(answer.link.as_deref().unwrap_or("").as_bytes());
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
