//! [`OctocrabGitHub`]: the [`GitHub`] port over GitHub's REST API with octocrab.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use lru::LruCache;
use octocrab::Octocrab;
use octocrab::models::teams::{FullTeam, Team, TeamInvitation, TeamPrivacy};
use octocrab::models::{AppId, Author, InstallationId};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tracing::{debug, instrument, warn};
use workflows::github::{
    Adoption, DesiredTeam, GitHub, GitHubError, GitHubTeam, Member, MembershipState, Privacy, Role,
    TeamField, TeamRef, slug_for,
};

use super::budget::{self, LocalBudget, Pacing, RequestBudget};
use super::config::{Credentials, GitHubConfig, GitHubConfigError, GitHubMode};
use super::limits::RateGate;

/// Items per page of every list (GitHub's maximum).
pub const PER_PAGE: u32 = 100;
/// A list longer than this many pages is refused rather than read forever.
pub const MAX_PAGES: usize = 200;
/// An installation token is renewed when it has less than this left (it lives one hour).
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// The GitHub adapter: a live client, or plan-only when no credentials are configured.
///
/// # Guarantees
/// - At most one mutating request at a time, each at least `write-interval` after the previous
///   one's answer.
/// - Every request, read or write, first takes GitHub's points for it (1 or 5) from the
///   organization's request budget (`points-per-minute`, shared by the engine replicas when the
///   engine passes a shared budget): a wait of up to [`budget::MAX_BUDGET_SLEEP`] is slept, a
///   longer one fails at once with [`GitHubError::RateLimited`] and nothing is sent.
/// - Every GET is conditional once its ETag is known (the last `cache-entries` answers, least
///   recently used dropped first), so an unchanged resource costs no primary quota (GitHub
///   answers 304 and the cached body is used).
/// - GitHub's rate limits are never slept through: the call fails at once with
///   [`GitHubError::RateLimited`] and its `after`, and nothing is sent until then.
/// - Every list is read to its last page (`per_page=100`, Link headers).
pub struct OctocrabGitHub {
    mode: Mode,
    allow_team_deletion: bool,
}

enum Mode {
    PlanOnly,
    Live(Box<Live>),
}

struct Live {
    crab: Octocrab,
    /// The App-authenticated client (JWT), for `GET /app`.
    app: Option<Octocrab>,
    installation: bool,
    org: String,
    /// `github.mode = "plan"`: reads go to GitHub, nothing is sent.
    dry: bool,
    /// The organization's numeric id, for `/organizations/{org_id}/team/{team_id}` paths.
    org_id: OnceCell<u64>,
    write_interval: Duration,
    request_timeout: Duration,
    gate: RateGate,
    /// The organization's request budget, taken from before every request.
    budget: Arc<dyn RequestBudget>,
    /// Conditional-GET answers by path; `None` when `cache-entries` is 0.
    cache: Option<Mutex<LruCache<String, Cached>>>,
    /// When the last mutating request was answered; the lock serialises writes.
    last_write: tokio::sync::Mutex<Option<Instant>>,
    acting: OnceCell<String>,
}

#[derive(Clone)]
struct Cached {
    etag: String,
    body: String,
    link: Option<String>,
}

/// An answer with a 2xx status (a 304 is turned back into the cached 200).
struct Reply {
    body: String,
    link: Option<String>,
}

/// A non-2xx answer that is not a rate limit.
struct Failure {
    status: StatusCode,
    message: String,
    headers: HeaderMap,
}

impl OctocrabGitHub {
    /// Builds the adapter from a validated configuration, with a request budget of this process
    /// (`points-per-minute`). Without credentials it is plan-only and never connects.
    ///
    /// # Errors
    /// An invalid configuration, an unreadable or invalid App private key, or an API URL
    /// octocrab rejects.
    pub fn new(config: &GitHubConfig) -> Result<Self, GitHubConfigError> {
        let budget = LocalBudget::new(Pacing::per_minute(config.points_per_minute));
        Self::with_budget(config, Arc::new(budget))
    }

    /// As [`OctocrabGitHub::new`], taking every request's points from `budget`: one shared by
    /// the engine replicas, since GitHub's limits hold per organization, not per process.
    ///
    /// # Errors
    /// As [`OctocrabGitHub::new`].
    pub fn with_budget(
        config: &GitHubConfig,
        budget: Arc<dyn RequestBudget>,
    ) -> Result<Self, GitHubConfigError> {
        config.validate()?;
        let invalid = |key, message: String| GitHubConfigError { key, message };
        let builder = || {
            Octocrab::builder()
                .base_uri(config.api_url.as_str())
                .map(|b| {
                    b.set_connect_timeout(Some(config.request_timeout))
                        .set_read_timeout(Some(config.request_timeout))
                        .set_write_timeout(Some(config.request_timeout))
                })
                .map_err(|e| invalid("api-url", chain(&e)))
        };
        let (crab, app, installation) = match config.credentials() {
            Credentials::None => {
                return Ok(OctocrabGitHub {
                    mode: Mode::PlanOnly,
                    allow_team_deletion: config.allow_team_deletion,
                });
            }
            Credentials::Token(token) => {
                let crab = builder()?
                    .personal_token(token.expose().to_owned())
                    .build()
                    .map_err(|e| invalid("token", chain(&e)))?;
                (crab, None, false)
            }
            Credentials::App { app_id, private_key_path, installation_id } => {
                let pem = std::fs::read(&private_key_path).map_err(|e| {
                    invalid("private-key-path", format!("{}: {e}", private_key_path.display()))
                })?;
                let app = builder()?
                    .app_from_rsa_pem(AppId(app_id), &pem)
                    .map_err(|e| {
                        invalid("private-key-path", format!("not an RSA PEM key: {}", chain(&e)))
                    })?
                    .build()
                    .map_err(|e| invalid("app-id", chain(&e)))?;
                let crab = app
                    .installation(InstallationId(installation_id))
                    .map_err(|e| invalid("installation-id", chain(&e)))?;
                (crab, Some(app), true)
            }
        };
        Ok(OctocrabGitHub {
            mode: Mode::Live(Box::new(Live {
                crab,
                app,
                installation,
                org: config.org.clone(),
                dry: config.mode == GitHubMode::Plan,
                org_id: OnceCell::new(),
                write_interval: config.write_interval,
                request_timeout: config.request_timeout,
                gate: RateGate::default(),
                budget,
                cache: NonZeroUsize::new(config.cache_entries)
                    .map(|n| Mutex::new(LruCache::new(n))),
                last_write: tokio::sync::Mutex::new(None),
                acting: OnceCell::new(),
            })),
            allow_team_deletion: config.allow_team_deletion,
        })
    }

    /// The primary quota GitHub last reported, for metrics.
    pub fn remaining_quota(&self) -> Option<u64> {
        match &self.mode {
            Mode::Live(live) => live.gate.remaining(),
            Mode::PlanOnly => None,
        }
    }
}

#[async_trait]
impl GitHub for OctocrabGitHub {
    fn is_plan_only(&self) -> bool {
        match &self.mode {
            Mode::PlanOnly => true,
            Mode::Live(live) => live.dry,
        }
    }

    fn team_deletion_allowed(&self) -> bool {
        self.allow_team_deletion
    }

    async fn acting_login(&self) -> Result<Option<String>, GitHubError> {
        match &self.mode {
            Mode::PlanOnly => Ok(None),
            Mode::Live(live) => live.acting_login().await.map(Some),
        }
    }

    #[instrument(skip_all, fields(team = %team.name))]
    async fn ensure_team(&self, team: &DesiredTeam) -> Result<GitHubTeam, GitHubError> {
        match &self.mode {
            Mode::Live(live) if !live.dry => live.ensure_team(team).await,
            _ => self.plan_team(team).await,
        }
    }

    #[instrument(skip_all, fields(team = %team.name))]
    async fn plan_team(&self, team: &DesiredTeam) -> Result<GitHubTeam, GitHubError> {
        match &self.mode {
            Mode::PlanOnly => Ok(GitHubTeam {
                id: team.known.as_ref().and_then(|k| k.id).unwrap_or(0),
                slug: team.known.as_ref().map_or_else(|| slug_for(&team.name), |k| k.slug.clone()),
                created: team.known.is_none(),
                adopted: false,
                changed: Vec::new(),
                previous: BTreeMap::new(),
            }),
            Mode::Live(live) => {
                let parent_id = live.parent_id(team).await?;
                Ok(match live.find_team(team).await? {
                    None => GitHubTeam {
                        id: 0,
                        slug: slug_for(&team.name),
                        created: true,
                        adopted: false,
                        changed: Vec::new(),
                        previous: BTreeMap::new(),
                    },
                    Some((found, adopted)) => {
                        let (_, previous) = differences(&found, team, parent_id);
                        existing(found.id.0, found.slug, adopted, previous)
                    }
                })
            }
        }
    }

    async fn child_teams(&self, team: &TeamRef) -> Result<Vec<TeamRef>, GitHubError> {
        match &self.mode {
            Mode::PlanOnly => Ok(Vec::new()),
            Mode::Live(live) => live.child_teams(team).await,
        }
    }

    async fn is_org_member(&self, login: &str) -> Result<bool, GitHubError> {
        match &self.mode {
            // Nothing is known without credentials: assume the invitation would be needed.
            Mode::PlanOnly => Ok(false),
            Mode::Live(live) => live.is_org_member(login).await,
        }
    }

    async fn expired_invitations(&self) -> Result<Vec<String>, GitHubError> {
        match &self.mode {
            Mode::PlanOnly => Ok(Vec::new()),
            Mode::Live(live) => live.expired_invitations().await,
        }
    }

    #[instrument(skip_all, fields(team = %team.slug))]
    async fn delete_team(&self, team: &TeamRef) -> Result<bool, GitHubError> {
        if !self.allow_team_deletion {
            return Err(GitHubError::Config(format!(
                "team deletion is disabled (github.allow-team-deletion = false); team {:?} is \
                 retained",
                team.slug
            )));
        }
        match &self.mode {
            Mode::Live(live) if !live.dry => live.delete_team(team).await,
            _ => Ok(true),
        }
    }

    #[instrument(skip_all, fields(team = %team.slug))]
    async fn team_members(&self, team: &TeamRef) -> Result<Vec<Member>, GitHubError> {
        match &self.mode {
            Mode::PlanOnly => Ok(Vec::new()),
            Mode::Live(live) => live.team_members(team).await,
        }
    }

    #[instrument(skip_all, fields(team = %team.slug, login = %login, role = role.as_str()))]
    async fn set_membership(
        &self,
        team: &TeamRef,
        login: &str,
        role: Role,
    ) -> Result<MembershipState, GitHubError> {
        match &self.mode {
            Mode::Live(live) if !live.dry => live.set_membership(team, login, role).await,
            _ => Ok(MembershipState::Active),
        }
    }

    #[instrument(skip_all, fields(team = %team.slug, login = %login))]
    async fn remove_membership(&self, team: &TeamRef, login: &str) -> Result<bool, GitHubError> {
        match &self.mode {
            Mode::Live(live) if !live.dry => live.remove_membership(team, login).await,
            _ => Ok(true),
        }
    }
}

impl Live {
    async fn acting_login(&self) -> Result<String, GitHubError> {
        self.acting
            .get_or_try_init(|| async {
                if let Some(app) = &self.app {
                    // An installation acts as its App's bot user.
                    let reply = self.send(app, Method::GET, "/app", None, "read the App").await;
                    let app: Value = parse(&ok_or(self, reply, "read the App")?, "read the App")?;
                    let slug =
                        app["slug"].as_str().ok_or_else(|| GitHubError::InvalidResponse {
                            action: "read the App".into(),
                            message: "no slug".into(),
                        })?;
                    Ok(format!("{slug}[bot]"))
                } else {
                    let reply = self.get("/user", "read the user").await;
                    let user: Value =
                        parse(&ok_or(self, reply, "read the user")?, "read the user")?;
                    user["login"].as_str().map(str::to_owned).ok_or_else(|| {
                        GitHubError::InvalidResponse {
                            action: "read the user".into(),
                            message: "no login".into(),
                        }
                    })
                }
            })
            .await
            .cloned()
    }

    /// `/orgs/{org}/teams/{slug}`: only to find a team that is not linked yet.
    fn slug_path(&self, slug: &str) -> String {
        format!("/orgs/{}/teams/{slug}", self.org)
    }

    /// The organization's numeric id, read once.
    async fn org_id(&self) -> Result<u64, GitHubError> {
        self.org_id
            .get_or_try_init(|| async {
                let action = format!("read organization {:?}", self.org);
                let reply = self.get(&format!("/orgs/{}", self.org), &action).await;
                let org: Value = parse(&ok_or(self, reply, &action)?, &action)?;
                org["id"].as_u64().ok_or_else(|| GitHubError::InvalidResponse {
                    action,
                    message: "no numeric id".into(),
                })
            })
            .await
            .copied()
    }

    /// `/organizations/{org_id}/team/{team_id}`: a team by identity, whatever its slug now.
    ///
    /// # Errors
    /// [`GitHubError::Config`] for a team without an id: Muster never edits a team by name.
    async fn team_path(&self, team: &TeamRef) -> Result<String, GitHubError> {
        let Some(id) = team.id else {
            return Err(GitHubError::Config(format!(
                "team {:?} has no GitHub id; refusing to address it by its slug, which another \
                 team may have taken",
                team.slug
            )));
        };
        Ok(format!("/organizations/{}/team/{id}", self.org_id().await?))
    }

    /// The team by slug, `None` when GitHub has none.
    async fn get_team(&self, slug: &str) -> Result<Option<FullTeam>, GitHubError> {
        self.read_team(&self.slug_path(slug), &format!("read team {slug:?}")).await
    }

    /// The team by id, `None` when GitHub has none (deleted).
    async fn get_team_by_id(&self, id: u64) -> Result<Option<FullTeam>, GitHubError> {
        let path = format!("/organizations/{}/team/{id}", self.org_id().await?);
        self.read_team(&path, &format!("read team {id}")).await
    }

    async fn read_team(&self, path: &str, action: &str) -> Result<Option<FullTeam>, GitHubError> {
        match self.get(path, action).await {
            Ok(reply) => parse(&reply, action).map(Some),
            Err(SendError::Answer(f)) if f.status == StatusCode::NOT_FOUND => Ok(None),
            Err(other) => Err(self.fail(other, action)),
        }
    }

    /// The parent's id, when the desired team is nested.
    async fn parent_id(&self, desired: &DesiredTeam) -> Result<Option<u64>, GitHubError> {
        match &desired.parent {
            None => Ok(None),
            Some(parent) => match self.get_team(parent).await? {
                Some(team) => Ok(Some(team.id.0)),
                None => Err(GitHubError::NotFound { what: format!("parent team {parent:?}") }),
            },
        }
    }

    /// The GitHub team of `desired`: by its known id, else by the slug its name derives
    /// (`true`: found unlinked, an adoption). A known team that is gone (deleted on GitHub)
    /// falls through to the slug, as a new team would.
    async fn find_team(
        &self,
        desired: &DesiredTeam,
    ) -> Result<Option<(FullTeam, bool)>, GitHubError> {
        if let Some(id) = desired.known.as_ref().and_then(|k| k.id)
            && let Some(team) = self.get_team_by_id(id).await?
        {
            return Ok(Some((team, false)));
        }
        Ok(self.get_team(&slug_for(&desired.name)).await?.map(|team| (team, true)))
    }

    async fn ensure_team(&self, desired: &DesiredTeam) -> Result<GitHubTeam, GitHubError> {
        let parent_id = self.parent_id(desired).await?;
        let Some((team, adopted)) = self.find_team(desired).await? else {
            return self.create_team(desired, parent_id).await;
        };
        if adopted && !may_adopt(&team, desired.adopt) {
            return Err(GitHubError::Unmanaged { id: team.id.0, slug: team.slug });
        }
        if adopted {
            warn!(slug = %team.slug, id = team.id.0, "adopting an existing GitHub team");
        }
        let (patch, previous) = differences(&team, desired, parent_id);
        if previous.is_empty() {
            return Ok(existing(team.id.0, team.slug, adopted, previous));
        }
        let action = format!("update team {:?}", team.slug);
        let path =
            self.team_path(&TeamRef { id: Some(team.id.0), slug: team.slug.clone() }).await?;
        let reply =
            self.send(&self.crab, Method::PATCH, &path, Some(Value::Object(patch)), &action).await;
        let updated: FullTeam = parse(&ok_or(self, reply, &action)?, &action)?;
        debug!(slug = %updated.slug, ?previous, "team updated");
        Ok(existing(updated.id.0, updated.slug, adopted, previous))
    }

    async fn create_team(
        &self,
        desired: &DesiredTeam,
        parent_id: Option<u64>,
    ) -> Result<GitHubTeam, GitHubError> {
        let mut body = json!({
            "name": desired.name,
            "description": desired.description,
            "privacy": desired.privacy.as_str(),
        });
        if let Some(parent) = parent_id {
            body["parent_team_id"] = json!(parent);
        }
        let action = format!("create team {:?}", desired.name);
        let path = format!("/orgs/{}/teams", self.org);
        match self.send(&self.crab, Method::POST, &path, Some(body), &action).await {
            Ok(reply) => {
                let team: FullTeam = parse(&reply, &action)?;
                debug!(id = team.id.0, slug = %team.slug, "team created");
                Ok(GitHubTeam {
                    id: team.id.0,
                    slug: team.slug,
                    created: true,
                    adopted: false,
                    changed: vec![],
                    previous: BTreeMap::new(),
                })
            }
            // Created meanwhile: by an earlier attempt whose answer was lost (adopted, as
            // `desired.adopt` allows a team created since the run started) or by someone else
            // (unmanaged, unless adoption was asked for).
            Err(SendError::Answer(f))
                if f.status == StatusCode::UNPROCESSABLE_ENTITY && exists(&f.message) =>
            {
                match self.get_team(&slug_for(&desired.name)).await? {
                    Some(team) if may_adopt(&team, desired.adopt) => {
                        warn!(name = %desired.name, "team already exists; adopting it");
                        Box::pin(self.ensure_team(&DesiredTeam {
                            known: Some(TeamRef { id: Some(team.id.0), slug: team.slug }),
                            ..desired.clone()
                        }))
                        .await
                        .map(|t| GitHubTeam {
                            created: false,
                            adopted: true,
                            ..t
                        })
                    }
                    Some(team) => Err(GitHubError::Unmanaged { id: team.id.0, slug: team.slug }),
                    None => Err(self.fail(SendError::Answer(f), &action)),
                }
            }
            Err(other) => Err(self.fail(other, &action)),
        }
    }

    async fn delete_team(&self, team: &TeamRef) -> Result<bool, GitHubError> {
        let action = format!("delete team {:?}", team.slug);
        let path = self.team_path(team).await?;
        match self.send(&self.crab, Method::DELETE, &path, None, &action).await {
            Ok(_) => Ok(true),
            Err(SendError::Answer(f)) if f.status == StatusCode::NOT_FOUND => Ok(false),
            Err(other) => Err(self.fail(other, &action)),
        }
    }

    async fn child_teams(&self, team: &TeamRef) -> Result<Vec<TeamRef>, GitHubError> {
        let path = format!("{}/teams", self.team_path(team).await?);
        let action = format!("list the child teams of {:?}", team.slug);
        match self.list::<Team>(&path, &action).await {
            Ok(teams) => {
                Ok(teams.into_iter().map(|t| TeamRef { id: Some(t.id.0), slug: t.slug }).collect())
            }
            Err(GitHubError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Members and maintainers (owners and child teams' members marked), then invitations.
    async fn team_members(&self, team: &TeamRef) -> Result<Vec<Member>, GitHubError> {
        let base = self.team_path(team).await?;
        let owners: Vec<Author> = self
            .list(
                &format!("/orgs/{}/members?role=admin", self.org),
                "list the organization's owners",
            )
            .await?;
        let inherited = self.child_members(team).await?;
        let mut members = Vec::new();
        for role in [Role::Maintainer, Role::Member] {
            let path = format!("{base}/members?role={}", role.as_str());
            let users: Vec<Author> = self.list(&path, "list team members").await?;
            for user in users {
                let mut member = Member::active(user.login, role);
                if owners.iter().any(|o| o.login.eq_ignore_ascii_case(&member.login)) {
                    member = member.as_owner();
                }
                let key = member.login.to_ascii_lowercase();
                if let Some(child) = inherited.get(&key) {
                    member = member.via_child(child.clone());
                }
                members.push(member);
            }
        }
        let invitations: Vec<TeamInvitation> =
            self.list(&format!("{base}/invitations"), "list team invitations").await?;
        for invitation in invitations {
            let Some(login) = invitation.login else { continue };
            if members.iter().any(|m| m.login.eq_ignore_ascii_case(&login)) {
                continue;
            }
            let role = if invitation.role.contains("maintainer") {
                Role::Maintainer
            } else {
                Role::Member
            };
            members.push(Member::pending(login, role));
        }
        Ok(members)
    }

    /// Lower-cased login → child team slug, for everyone on a child team of `team` (any
    /// depth): GitHub lists them among the parent's members.
    async fn child_members(&self, team: &TeamRef) -> Result<HashMap<String, String>, GitHubError> {
        let mut found = HashMap::new();
        let mut queue = self.child_teams(team).await?;
        let mut visited = 0;
        while let Some(child) = queue.pop() {
            visited += 1;
            if visited > MAX_PAGES {
                break;
            }
            let path = format!("{}/members", self.team_path(&child).await?);
            let users: Vec<Author> = self.list(&path, "list child team members").await?;
            for user in users {
                found.entry(user.login.to_ascii_lowercase()).or_insert_with(|| child.slug.clone());
            }
            queue.extend(self.child_teams(&child).await?);
        }
        Ok(found)
    }

    async fn is_org_member(&self, login: &str) -> Result<bool, GitHubError> {
        let action = format!("check {login}'s organization membership");
        match self.get(&format!("/orgs/{}/members/{login}", self.org), &action).await {
            Ok(_) => Ok(true),
            Err(SendError::Answer(f))
                if f.status == StatusCode::NOT_FOUND || f.status == StatusCode::FOUND =>
            {
                Ok(false)
            }
            Err(other) => Err(self.fail(other, &action)),
        }
    }

    async fn expired_invitations(&self) -> Result<Vec<String>, GitHubError> {
        let path = format!("/orgs/{}/failed_invitations", self.org);
        let failed: Vec<Value> = self.list(&path, "list failed invitations").await?;
        Ok(failed.iter().filter_map(|i| i["login"].as_str().map(str::to_owned)).collect())
    }

    async fn set_membership(
        &self,
        team: &TeamRef,
        login: &str,
        role: Role,
    ) -> Result<MembershipState, GitHubError> {
        let action = format!("set {login} as {} of team {:?}", role.as_str(), team.slug);
        let path = format!("{}/memberships/{login}", self.team_path(team).await?);
        let body = json!({ "role": role.as_str() });
        let reply = self.send(&self.crab, Method::PUT, &path, Some(body), &action).await;
        let reply = match reply {
            // The team is addressed by id and was just read: a 404 is the user's.
            Err(SendError::Answer(f))
                if f.status == StatusCode::NOT_FOUND
                    && self.get_team_by_id(team.id.unwrap_or_default()).await?.is_some() =>
            {
                return Err(GitHubError::UnknownLogin {
                    login: login.to_owned(),
                    message: f.message,
                });
            }
            other => other,
        };
        let membership: Value = parse(&ok_or(self, reply, &action)?, &action)?;
        Ok(match membership["state"].as_str() {
            Some("pending") => MembershipState::Pending,
            _ => MembershipState::Active,
        })
    }

    async fn remove_membership(&self, team: &TeamRef, login: &str) -> Result<bool, GitHubError> {
        let action = format!("remove {login} from team {:?}", team.slug);
        let path = format!("{}/memberships/{login}", self.team_path(team).await?);
        match self.send(&self.crab, Method::DELETE, &path, None, &action).await {
            Ok(_) => Ok(true),
            Err(SendError::Answer(f)) if f.status == StatusCode::NOT_FOUND => Ok(false),
            Err(other) => Err(self.fail(other, &action)),
        }
    }

    /// Every page of a list, each page a conditional GET.
    async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        action: &str,
    ) -> Result<Vec<T>, GitHubError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut next = Some(format!("{path}{sep}per_page={PER_PAGE}"));
        let mut items = Vec::new();
        let mut pages = 0;
        while let Some(page) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(GitHubError::InvalidResponse {
                    action: action.into(),
                    message: format!("more than {MAX_PAGES} pages"),
                });
            }
            let reply = self.get(&page, action).await.map_err(|f| self.fail(f, action))?;
            let batch: Vec<T> = parse(&reply, action)?;
            let full = batch.len() >= PER_PAGE as usize;
            items.extend(batch);
            // A 304 brings back the Link header cached with the body, and GitHub's ETag covers
            // the body only: a list that grew past this page keeps the same page but gets a
            // new "next". So a full page without "next" is followed by asking for the next
            // page; an empty answer ends the list.
            next = reply
                .link
                .as_deref()
                .and_then(next_link)
                .or_else(|| full.then(|| following_page(&page)).flatten());
        }
        Ok(items)
    }

    /// A conditional GET through the ETag cache.
    async fn get(&self, path: &str, action: &str) -> Result<Reply, SendError> {
        self.send(&self.crab, Method::GET, path, None, action).await
    }

    /// Sends one request: waits for its turn if it mutates, refuses while a rate limit is in
    /// force, makes a GET conditional, and maps rate limits, 5xx and transport failures to
    /// their [`GitHubError`]. Other non-2xx answers are left to the caller (404, 422).
    async fn send(
        &self,
        crab: &Octocrab,
        method: Method,
        path: &str,
        body: Option<Value>,
        action: &str,
    ) -> Result<Reply, SendError> {
        let mutating = method != Method::GET;
        let mut write_slot = None;
        if mutating {
            let last = self.last_write.lock().await;
            if let Some(at) = *last {
                let wait = (at + self.write_interval).saturating_duration_since(Instant::now());
                tokio::time::sleep(wait).await;
            }
            write_slot = Some(last);
        }
        self.gate.check().map_err(SendError::Mapped)?;
        budget::pace(self.budget.as_ref(), &method, action).await.map_err(SendError::Mapped)?;
        if self.installation && std::ptr::eq(crab, &self.crab) {
            // Renew well before the one-hour expiry rather than 30 s before, as octocrab would.
            let margin = chrono::Duration::from_std(TOKEN_REFRESH_MARGIN).unwrap_or_default();
            crab.installation_token_with_buffer(margin)
                .await
                .map_err(|e| SendError::Mapped(octocrab_error(e, action)))?;
        }

        let cached = if mutating { None } else { self.cached(path) };
        let mut headers = HeaderMap::new();
        if let Some(c) = &cached
            && let Ok(v) = HeaderValue::from_str(&c.etag)
        {
            headers.insert(header::IF_NONE_MATCH, v);
        }
        let request = async {
            match method {
                Method::GET => crab._get_with_headers(path, Some(headers)).await,
                Method::POST => crab._post(path, body.as_ref()).await,
                Method::PATCH => crab._patch(path, body.as_ref()).await,
                Method::PUT => crab._put(path, body.as_ref()).await,
                _ => crab._delete(path, body.as_ref()).await,
            }
        };
        let response = tokio::time::timeout(self.request_timeout, request).await;
        if let Some(mut slot) = write_slot {
            *slot = Some(Instant::now());
        }
        let response = match response {
            Err(_) => {
                return Err(SendError::Mapped(GitHubError::Transport {
                    message: format!("{action}: no answer within {:?}", self.request_timeout),
                }));
            }
            Ok(Err(e)) => return Err(SendError::Mapped(octocrab_error(e, action))),
            Ok(Ok(response)) => response,
        };
        let (parts, body) = response.into_parts();
        let text = crab
            .body_to_string(http::Response::new(body))
            .await
            .map_err(|e| SendError::Mapped(octocrab_error(e, action)))?;
        let link = parts.headers.get(header::LINK).and_then(|v| v.to_str().ok()).map(str::to_owned);

        if parts.status == StatusCode::NOT_MODIFIED
            && let Some(c) = cached
        {
            self.gate.on_success(&parts.headers);
            return Ok(Reply { body: c.body, link: c.link });
        }
        if parts.status.is_success() {
            self.gate.on_success(&parts.headers);
            if !mutating
                && let Some(etag) = parts.headers.get(header::ETAG).and_then(|v| v.to_str().ok())
            {
                self.store(
                    path,
                    Cached { etag: etag.to_owned(), body: text.clone(), link: link.clone() },
                );
            }
            return Ok(Reply { body: text, link });
        }
        let message = error_message(&text, parts.status);
        if let Some((limit, after)) = self.gate.on_failure(parts.status, &parts.headers, &message) {
            warn!(%limit, after_secs = after.as_secs(), status = parts.status.as_u16(), "GitHub rate limit");
            return Err(SendError::Mapped(GitHubError::RateLimited {
                limit,
                after,
                message: format!("{action}: {message}"),
            }));
        }
        if parts.status.is_server_error() {
            return Err(SendError::Mapped(GitHubError::Unavailable {
                status: parts.status.as_u16(),
                message: format!("{action}: {message}"),
            }));
        }
        Err(SendError::Answer(Failure { status: parts.status, message, headers: parts.headers }))
    }

    /// The cached answer for `path`, which becomes the most recently used.
    fn cached(&self, path: &str) -> Option<Cached> {
        let cache = self.cache.as_ref()?;
        cache.lock().unwrap_or_else(|e| e.into_inner()).get(path).cloned()
    }

    /// Keeps an answer, dropping the least recently used one when the cache is full.
    fn store(&self, path: &str, entry: Cached) {
        if let Some(cache) = &self.cache {
            cache.lock().unwrap_or_else(|e| e.into_inner()).put(path.to_owned(), entry);
        }
    }

    /// The error for a failed [`Live::send`]: the mapped one, or the kind of a plain answer.
    fn fail(&self, failure: SendError, action: &str) -> GitHubError {
        let f = match failure {
            SendError::Mapped(e) => return e,
            SendError::Answer(f) => f,
        };
        let status = f.status.as_u16();
        match f.status {
            StatusCode::UNAUTHORIZED => GitHubError::Forbidden {
                status,
                action: action.into(),
                message: f.message,
                needed: "the token or App credentials are invalid, expired or revoked".into(),
            },
            StatusCode::FORBIDDEN => GitHubError::Forbidden {
                status,
                action: action.into(),
                message: f.message,
                needed: saml_sso(&f.headers).unwrap_or_else(|| needed_permission(&f.headers)),
            },
            StatusCode::NOT_FOUND => GitHubError::NotFound {
                what: format!("team or user for: {action} ({})", f.message),
            },
            _ => GitHubError::Rejected { status, action: action.into(), message: f.message },
        }
    }
}

enum SendError {
    Answer(Failure),
    Mapped(GitHubError),
}

fn ok_or(live: &Live, reply: Result<Reply, SendError>, action: &str) -> Result<Reply, GitHubError> {
    reply.map_err(|f| live.fail(f, action))
}

fn parse<T: DeserializeOwned>(reply: &Reply, action: &str) -> Result<T, GitHubError> {
    serde_json::from_str(&reply.body)
        .map_err(|e| GitHubError::InvalidResponse { action: action.into(), message: e.to_string() })
}

/// Whether an unlinked team may be taken over under `adopt`.
fn may_adopt(team: &FullTeam, adopt: Adoption) -> bool {
    match adopt {
        Adoption::Never => false,
        Adoption::Allowed => true,
        Adoption::CreatedSince(since) => team.created_at.is_some_and(|at| at >= since),
    }
}

/// The PATCH body bringing `team` to `desired`, and what each field it changes held.
fn differences(
    team: &FullTeam,
    desired: &DesiredTeam,
    parent_id: Option<u64>,
) -> (serde_json::Map<String, Value>, BTreeMap<TeamField, Option<String>>) {
    let mut patch = serde_json::Map::new();
    let mut previous = BTreeMap::new();
    if team.name != desired.name {
        patch.insert("name".into(), json!(desired.name));
        previous.insert(TeamField::Name, Some(team.name.clone()));
    }
    if team.description.as_deref().unwrap_or("") != desired.description {
        patch.insert("description".into(), json!(desired.description));
        previous.insert(TeamField::Description, team.description.clone());
    }
    if privacy_of(&team.privacy) != Some(desired.privacy) {
        patch.insert("privacy".into(), json!(desired.privacy.as_str()));
        let was =
            serde_json::to_value(&team.privacy).ok().and_then(|v| v.as_str().map(str::to_owned));
        previous.insert(TeamField::Privacy, was);
    }
    if team.parent.as_ref().map(|p| p.id.0) != parent_id {
        patch.insert("parent_team_id".into(), json!(parent_id));
        previous.insert(TeamField::Parent, team.parent.as_ref().map(|p| p.slug.clone()));
    }
    (patch, previous)
}

/// An existing team as found: `changed` from what `previous` lists.
fn existing(
    id: u64,
    slug: String,
    adopted: bool,
    previous: BTreeMap<TeamField, Option<String>>,
) -> GitHubTeam {
    GitHubTeam {
        id,
        slug,
        created: false,
        adopted,
        changed: previous.keys().copied().collect(),
        previous,
    }
}

fn privacy_of(privacy: &TeamPrivacy) -> Option<Privacy> {
    match privacy {
        TeamPrivacy::Secret => Some(Privacy::Secret),
        TeamPrivacy::Closed => Some(Privacy::Closed),
        _ => None,
    }
}

/// GitHub's 422 for a team name that is taken.
fn exists(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("already exists") || m.contains("must be unique")
}

/// The `message` of GitHub's error body, with the `errors` details when present.
fn error_message(body: &str, status: StatusCode) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => {
            let mut message = v["message"].as_str().unwrap_or("").to_owned();
            if let Some(errors) = v["errors"].as_array() {
                for e in errors {
                    let detail = e["message"].as_str().or_else(|| e["code"].as_str());
                    if let Some(detail) = detail {
                        message.push_str(&format!(" ({detail})"));
                    }
                }
            }
            if message.is_empty() { status.to_string() } else { message }
        }
        Err(_) if body.trim().is_empty() => status.to_string(),
        Err(_) => body.chars().take(300).collect(),
    }
}

/// A 403 for SAML single sign-on: GitHub's `X-GitHub-SSO: required; url=<url>` says the
/// credentials are valid but not authorized for the organization's SSO, which no permission
/// fixes.
fn saml_sso(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("x-github-sso")?.to_str().ok()?;
    let url = value.split(';').find_map(|p| p.trim().strip_prefix("url="));
    Some(match url {
        Some(url) => format!(
            "the organization enforces SAML single sign-on and the token is not authorized for \
             it: an organization member must authorize it at {url} (a GitHub App needs no SSO \
             authorization)"
        ),
        None => "the organization enforces SAML single sign-on and the token is not authorized \
                 for it: authorize it for the organization in the token's settings"
            .to_owned(),
    })
}

/// What a 403 says is missing, from the headers GitHub sends with it.
fn needed_permission(headers: &HeaderMap) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(p) = header("x-accepted-github-permissions").filter(|p| !p.is_empty()) {
        return format!("the App or fine-grained token needs the permission(s) {p}");
    }
    if let Some(s) = header("x-accepted-oauth-scopes").filter(|s| !s.is_empty()) {
        return format!("the classic token needs one of the scopes {s}");
    }
    "the credentials need the organization permission \"Members: read and write\" (App or \
     fine-grained token) or the admin:org scope (classic token), and the identity must be an \
     organization owner or a maintainer of the team"
        .into()
}

/// The `rel="next"` URL of a Link header, as a path and query (octocrab adds its base URI and
/// only authenticates relative requests).
pub(crate) fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        if !params.split(';').any(|p| p.trim() == "rel=\"next\"") {
            return None;
        }
        let url = url.trim().trim_start_matches('<').trim_end_matches('>');
        let uri: http::Uri = url.parse().ok()?;
        uri.path_and_query().map(|pq| pq.as_str().to_owned())
    })
}

/// `path` with its `page` query parameter one higher (page 1 when absent).
fn following_page(path: &str) -> Option<String> {
    let (base, query) = path.split_once('?').unwrap_or((path, ""));
    let mut page = 1;
    let mut params: Vec<String> = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.strip_prefix("page=") {
            Some(n) => page = n.parse::<usize>().ok()?,
            None => params.push(kv.to_owned()),
        }
    }
    params.push(format!("page={}", page + 1));
    Some(format!("{base}?{}", params.join("&")))
}

fn octocrab_error(e: octocrab::Error, action: &str) -> GitHubError {
    GitHubError::Transport { message: format!("{action}: {}", chain(&e)) }
}

/// An error with its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live_with_cache(entries: usize) -> OctocrabGitHub {
        let config = GitHubConfig {
            org: "acme".into(),
            token: Some(super::super::config::Secret::new("t")),
            cache_entries: entries,
            ..GitHubConfig::default()
        };
        OctocrabGitHub::new(&config).unwrap()
    }

    fn entry(etag: &str) -> Cached {
        Cached { etag: etag.into(), body: String::new(), link: None }
    }

    #[tokio::test]
    async fn the_etag_cache_drops_the_least_recently_used_answer() {
        let github = live_with_cache(2);
        let Mode::Live(live) = &github.mode else { panic!("live") };
        live.store("/a", entry("a"));
        live.store("/b", entry("b"));
        assert_eq!(live.cached("/a").unwrap().etag, "a", "reading /a makes it recent");
        live.store("/c", entry("c"));
        assert!(live.cached("/b").is_none(), "/b was the least recently used");
        assert_eq!(live.cached("/a").map(|c| c.etag).as_deref(), Some("a"));
        assert_eq!(live.cached("/c").map(|c| c.etag).as_deref(), Some("c"));

        let github = live_with_cache(0);
        let Mode::Live(live) = &github.mode else { panic!("live") };
        live.store("/a", entry("a"));
        assert!(live.cached("/a").is_none(), "cache-entries = 0 keeps nothing");
    }

    #[test]
    fn next_links_become_relative() {
        let link = "<http://127.0.0.1:9000/orgs/acme/teams/a/members?per_page=100&page=2>; \
                    rel=\"next\", <http://127.0.0.1:9000/orgs/acme/teams/a/members?per_page=100&page=3>; rel=\"last\"";
        assert_eq!(
            next_link(link).as_deref(),
            Some("/orgs/acme/teams/a/members?per_page=100&page=2")
        );
        assert_eq!(next_link("<https://x/y?page=1>; rel=\"prev\""), None);
    }

    #[test]
    fn the_page_after_a_full_one_is_asked_for() {
        assert_eq!(
            following_page("/orgs/a/teams/b/members?role=member&per_page=100").as_deref(),
            Some("/orgs/a/teams/b/members?role=member&per_page=100&page=2")
        );
        assert_eq!(
            following_page("/x?per_page=100&page=7").as_deref(),
            Some("/x?per_page=100&page=8")
        );
        assert_eq!(following_page("/x?page=nope"), None);
    }

    #[test]
    fn error_bodies_are_summarised() {
        let body = r#"{"message":"Validation Failed","errors":[{"code":"custom","message":"Name must be unique for this org"}]}"#;
        let m = error_message(body, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(exists(&m), "{m}");
        assert_eq!(error_message("", StatusCode::BAD_GATEWAY), "502 Bad Gateway");
    }
}
