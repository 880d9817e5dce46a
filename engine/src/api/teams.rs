//! `/v1/teams`: create, list, read, replace, merge-patch and delete teams; their namespace
//! records and runs; trigger a sync; purge a deleted team.

use std::collections::BTreeMap;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use cloudevents::{EventBuilder, EventBuilderV10};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use workflows::records::{
    MAX_PAGE_SIZE, NamespaceFilter, RecordKind, RecordsError, Team, TeamSpec,
    validation::is_dns_label,
};
use workflows::sync_team::teardown_waiting;

use super::extract::{
    IfMatch, JsonBody, etag, from_json_value, media_type, parse_json, version_to_write,
};
use super::guard::{Access, Caller, changed_fields};
use super::problem::{FieldProblem, PROBLEM_JSON, Problem, ProblemKind};
use super::responses::{
    Denied, InvalidParameter, JsonBodyProblems, NatsOrStoreUnavailable, NoSuchTeam, StaleIfMatch,
    StoreUnavailable,
};
use super::{ApiState, AppState, DEFAULT_LIMIT, json_with};
use crate::bus;
use crate::journal::RunFilter;
use crate::policy::NamespaceRef;

/// CloudEvent type of a sync request.
pub const TEAM_SYNC: &str = "muster.team.sync";
/// CloudEvent source of events the API emits itself.
pub const API_SOURCE: &str = "/muster/api";

/// Cursor pagination of lists keyed by name.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> Result<usize, Problem> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=workflows::records::MAX_PAGE_SIZE).contains(&n) => Ok(n),
            Some(n) => Err(Problem::bad_request(format!("limit {n} is not between 1 and 1000"))),
        }
    }
}

#[derive(Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A slug from the path: a DNS-1123 label, else 404 (no such team can exist).
pub(crate) fn checked_key(kind: &str, key: &str) -> Result<(), Problem> {
    if is_dns_label(key) {
        Ok(())
    } else {
        Err(Problem::new(
            ProblemKind::NotFound,
            format!(
                "{kind} {key:?} not found ({kind} keys are DNS-1123 labels of at most 63 characters)"
            ),
        ))
    }
}

fn team_response(status: StatusCode, team: &Team, location: bool) -> Response {
    let mut headers = vec![(header::ETAG, etag(team.resource_version))];
    if location {
        headers.push((header::LOCATION, format!("/v1/teams/{}", team.spec.slug)));
    }
    json_with(status, &headers, team)
}

/// Create a team.
///
/// Stores the team at resource version 1 and announces `muster.team.created` (through the
/// outbox, so the event is published even if the engine stops right after). `members` and
/// `maintainers` may be omitted (a new team has nobody to remove), but the team must name at
/// least `github.min-maintainers` maintainers (default 1). Its namespace name in every
/// environment, `<slug>-<environment>`, must be at most 63 characters (else 422 on `slug`) and
/// no other team's in any environment (else 409 `conflict` naming that team and environment).
#[utoipa::path(post, path = "/v1/teams", tag = "teams",
    request_body = super::schema::TeamSpecDoc,
    responses(
        (status = 201, description = "Created", body = super::schema::TeamDoc,
         headers(("ETag" = String, description = "Resource version"), ("Location" = String))),
        (status = 409, description = "The slug is taken (also by a deleted team awaiting purge), or one of the team's namespace names is another team's", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "Invalid fields, fewer maintainers than github.min-maintainers, or a namespace name longer than 63 characters", body = Problem, content_type = PROBLEM_JSON),
        JsonBodyProblems, StoreUnavailable, Denied,
    ))]
pub async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(spec): JsonBody<TeamSpec>,
) -> Result<Response, Problem> {
    let access =
        Access::team("team.create", &spec.slug).changes(changed_fields(None::<&TeamSpec>, &spec));
    state.authorize(&caller, access).await?;
    validated(&state, &spec)?;
    super::namespace_names::check_new_team(&state, &spec.slug).await?;
    let team = state.records.create_team(spec, &caller.actor()).await?;
    state.record_written();
    Ok(team_response(StatusCode::CREATED, &team, true))
}

/// List teams in slug order, including deleted ones awaiting their teardown (`deleted_at` set).
#[utoipa::path(get, path = "/v1/teams", tag = "teams", params(PageQuery),
    responses(
        (status = 200, description = "One page", body = super::schema::TeamPageDoc),
        InvalidParameter, StoreUnavailable, Denied,
    ))]
pub async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<PageQuery>,
) -> Result<Response, Problem> {
    state.authorize(&caller, Access::on("team.read", "team", "*")).await?;
    let limit = query.limit()?;
    let page = state.records.list_teams(query.cursor.as_deref(), limit).await?;
    Ok(json_with(StatusCode::OK, &[], &Page { items: page.items, next_cursor: page.next }))
}

/// Read a team. The ETag is its resource version.
#[utoipa::path(get, path = "/v1/teams/{slug}", tag = "teams",
    params(("slug" = String, Path, description = "Team slug")),
    responses(
        (status = 200, description = "The team", body = super::schema::TeamDoc, headers(("ETag" = String))),
        NoSuchTeam, StoreUnavailable, Denied,
    ))]
pub async fn get(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(slug): Path<String>,
) -> Result<Response, Problem> {
    checked_key("team", &slug)?;
    state.authorize(&caller, Access::team("team.read", &slug)).await?;
    let team = state.records.get_team(&slug).await?;
    Ok(team_response(StatusCode::OK, &team, false))
}

/// Replace a team. With `If-Match`, only if it is still at that version (else 412).
///
/// `members` and `maintainers` are required: a replacement that left them out would remove
/// everyone from the team. Send `[]` to empty a list (the mass-removal guard still holds the
/// sync that would apply it).
#[utoipa::path(put, path = "/v1/teams/{slug}", tag = "teams",
    params(("slug" = String, Path, description = "Team slug"),
           ("If-Match" = Option<String>, Header, description = "ETag the update is based on")),
    request_body = super::schema::TeamReplacementDoc,
    responses(
        (status = 200, description = "Replaced", body = super::schema::TeamDoc, headers(("ETag" = String))),
        (status = 409, description = "The team is deleted", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "Invalid fields, members or maintainers omitted, fewer maintainers than github.min-maintainers, or a slug other than the path's", body = Problem, content_type = PROBLEM_JSON),
        JsonBodyProblems, NoSuchTeam, StaleIfMatch, StoreUnavailable, Denied,
    ))]
pub async fn replace(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, Problem> {
    checked_key("team", &slug)?;
    let expected = IfMatch::from_headers(&headers).expected()?;
    let omitted = omitted_lists(&body);
    let spec: TeamSpec = from_json_value(body)?;
    if !omitted.is_empty() {
        return Err(member_lists_problem(
            "a replacement must list members and maintainers: omitted, they would remove \
             everyone from the team",
            omitted,
        ));
    }
    if spec.slug != slug {
        return Err(slug_mismatch(&slug, &spec.slug));
    }
    let current = state.records.get_team(&slug).await?;
    let version = authorize_update(&state, &caller, &current, expected, &spec).await?;
    validated(&state, &spec)?;
    let team = state.records.update_team(spec, Some(version), &caller.actor()).await?;
    state.record_written();
    Ok(team_response(StatusCode::OK, &team, false))
}

/// The version a write of `current` must find (412 unless it is the one `If-Match` named).
fn checked_version(current: &Team, expected: Option<u64>) -> Result<u64, Problem> {
    version_to_write(&format!("team {:?}", current.spec.slug), current.resource_version, expected)
}

/// Asks the policy about an update of `current` to `spec`, and answers the version the write
/// must find: the one the policy judged, so a change in between is a 412, not a write the
/// policy never saw.
async fn authorize_update(
    state: &ApiState,
    caller: &Caller,
    current: &Team,
    expected: Option<u64>,
    spec: &TeamSpec,
) -> Result<u64, Problem> {
    let version = checked_version(current, expected)?;
    let access = Access::team("team.update", &current.spec.slug)
        .current(&current.spec)
        .changes(changed_fields(Some(&current.spec), spec));
    state.authorize(caller, access).await?;
    Ok(version)
}

/// The engine's rules for a team the API stores: its fields, and at least
/// `github.min-maintainers` maintainers (sync_team refuses a team with fewer).
fn validated(state: &AppState, spec: &TeamSpec) -> Result<(), Problem> {
    let check = spec.validate_with_min_maintainers(state.min_maintainers);
    Ok(RecordsError::validated(RecordKind::Team, check)?)
}

/// The member lists a replacement body leaves out: each would default to empty, removing
/// everyone it listed.
fn omitted_lists(body: &serde_json::Value) -> Vec<FieldProblem> {
    let Some(object) = body.as_object() else { return Vec::new() };
    [("members", "send [] to empty the team"), ("maintainers", "send [] for none")]
        .into_iter()
        .filter(|(field, _)| !object.contains_key(*field))
        .map(|(field, hint)| FieldProblem {
            path: field.into(),
            message: format!("required on replace; {hint}"),
        })
        .collect()
}

/// The member lists a merge patch sets to `null`, which would remove every one of them.
fn nulled_lists(patch: &serde_json::Value) -> Vec<FieldProblem> {
    [
        ("members", "member", "send [] to empty the team"),
        ("maintainers", "maintainer", "send [] for none"),
    ]
    .into_iter()
    .filter(|(field, _, _)| patch.get(*field).is_some_and(serde_json::Value::is_null))
    .map(|(field, one, hint)| FieldProblem {
        path: field.into(),
        message: format!("null would remove every {one}; {hint}"),
    })
    .collect()
}

fn member_lists_problem(detail: &str, errors: Vec<FieldProblem>) -> Problem {
    let fields: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    Problem::new(ProblemKind::Validation, format!("{detail} ({})", fields.join(", ")))
        .with_errors(errors)
}

fn slug_mismatch(path: &str, body: &str) -> Problem {
    Problem::new(
        ProblemKind::Validation,
        format!(
            "the body's slug {body:?} differs from the path's {path:?}; a team's slug cannot change"
        ),
    )
    .with_errors(vec![super::problem::FieldProblem {
        path: "slug".into(),
        message: format!("must be {path:?}"),
    }])
}

/// Change some fields of a team with a JSON Merge Patch (RFC 7396,
/// `application/merge-patch+json`; `application/json` is accepted too).
///
/// Without `If-Match` the patch applies to the version just read; if the team changes in
/// between, the answer is 412 and nothing is written. Fields left out stay as they are;
/// `members` or `maintainers` set to `null` is refused (422): send `[]` to empty a list.
#[utoipa::path(patch, path = "/v1/teams/{slug}", tag = "teams",
    params(("slug" = String, Path, description = "Team slug"),
           ("If-Match" = Option<String>, Header, description = "ETag the patch is based on")),
    request_body(content = super::schema::TeamPatchDoc, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "Patched", body = super::schema::TeamDoc, headers(("ETag" = String))),
        (status = 409, description = "The team is deleted", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "The patched team is invalid (fewer maintainers than github.min-maintainers included), or members or maintainers set to null", body = Problem, content_type = PROBLEM_JSON),
        JsonBodyProblems, NoSuchTeam, StaleIfMatch, StoreUnavailable, Denied,
    ))]
pub async fn patch(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    JsonBody(patch): JsonBody<serde_json::Value>,
) -> Result<Response, Problem> {
    checked_key("team", &slug)?;
    let if_match = IfMatch::from_headers(&headers).expected()?;
    if !patch.is_object() {
        return Err(Problem::new(
            ProblemKind::InvalidBody,
            "a merge patch of a team must be a JSON object",
        ));
    }
    let nulled = nulled_lists(&patch);
    if !nulled.is_empty() {
        return Err(member_lists_problem(
            "a merge patch may not set members or maintainers to null: that would remove \
             every one of them",
            nulled,
        ));
    }
    let current = state.records.get_team(&slug).await?;
    checked_version(&current, if_match)?;
    let mut document = serde_json::to_value(&current.spec).map_err(|e| Problem::internal(&e))?;
    json_patch::merge(&mut document, &patch);
    let spec: TeamSpec = from_json_value(document)?;
    if spec.slug != slug {
        return Err(slug_mismatch(&slug, &spec.slug));
    }
    let version = authorize_update(&state, &caller, &current, if_match, &spec).await?;
    validated(&state, &spec)?;
    let team = state.records.update_team(spec, Some(version), &caller.actor()).await?;
    state.record_written();
    Ok(team_response(StatusCode::OK, &team, false))
}

/// Delete a team: it becomes a tombstone (`deleted_at` set, still readable) and
/// `muster.team.deleted` is announced; `sync_team` tears down its GitHub team and namespaces
/// and purges the record when done. Deleting a tombstone again changes nothing.
#[utoipa::path(delete, path = "/v1/teams/{slug}", tag = "teams",
    params(("slug" = String, Path, description = "Team slug"),
           ("If-Match" = Option<String>, Header, description = "ETag the deletion is based on")),
    responses(
        (status = 202, description = "Tombstoned; teardown follows", body = super::schema::TeamDoc, headers(("ETag" = String))),
        (status = 409, description = "Other teams name this one as their parent: GitHub would delete their teams with it; the detail lists them", body = Problem, content_type = PROBLEM_JSON),
        NoSuchTeam, StaleIfMatch, StoreUnavailable, Denied,
    ))]
pub async fn delete(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    checked_key("team", &slug)?;
    let expected = IfMatch::from_headers(&headers).expected()?;
    let current = state.records.get_team(&slug).await?;
    let version = checked_version(&current, expected)?;
    let access = Access::team("team.delete", &slug)
        .current(&current.spec)
        .namespaces(namespace_refs(&state, &slug).await?);
    state.authorize(&caller, access).await?;
    let children = child_teams(&state, &slug).await?;
    if !children.is_empty() && !current.is_deleted() {
        return Err(Problem::new(
            ProblemKind::Conflict,
            format!(
                "team {slug:?} is the parent of {}: GitHub deletes child teams with their \
                 parent, so delete them or change their parent first",
                children.join(", ")
            ),
        ));
    }
    let team = state.records.delete_team(&slug, Some(version), &caller.actor()).await?;
    state.record_written();
    Ok(team_response(StatusCode::ACCEPTED, &team, false))
}

/// The teams, not deleted, whose `parent` is `slug`.
async fn child_teams(state: &ApiState, slug: &str) -> Result<Vec<String>, Problem> {
    let mut children = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = state.records.list_teams(after.as_deref(), MAX_PAGE_SIZE).await?;
        children.extend(
            page.items
                .iter()
                .filter(|t| !t.is_deleted() && t.spec.parent.as_deref() == Some(slug))
                .map(|t| t.slug().to_owned()),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(children),
        }
    }
}

/// The team's namespace records, one per environment.
#[utoipa::path(get, path = "/v1/teams/{slug}/namespaces", tag = "teams",
    params(("slug" = String, Path, description = "Team slug")),
    responses(
        (status = 200, description = "Namespace records", body = super::schema::NamespaceListDoc),
        NoSuchTeam, StoreUnavailable, Denied,
    ))]
pub async fn namespaces(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(slug): Path<String>,
) -> Result<Response, Problem> {
    checked_key("team", &slug)?;
    state.authorize(&caller, Access::team("namespace.read", &slug)).await?;
    state.records.get_team(&slug).await?;
    let filter = NamespaceFilter { team: Some(slug), ..NamespaceFilter::default() };
    let items = state.records.list_namespaces(&filter).await?;
    Ok(json_with(StatusCode::OK, &[], &super::environments::namespace_list(&items)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// At most this many, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// Runs keyed by this team (e.g. its syncs), newest first, a page at a time (`next_cursor`).
#[utoipa::path(get, path = "/v1/teams/{slug}/runs", tag = "teams",
    params(("slug" = String, Path, description = "Team slug"), super::runs::RunPageQuery),
    responses(
        (status = 200, description = "Runs", body = super::schema::RunListDoc),
        InvalidParameter, NoSuchTeam, Denied,
    ))]
pub async fn runs(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(slug): Path<String>,
    Query(query): Query<super::runs::RunPageQuery>,
) -> Result<Response, Problem> {
    checked_key("team", &slug)?;
    state.authorize(&caller, Access::team("run.read", &slug)).await?;
    state.records.get_team(&slug).await?;
    let filter = RunFilter {
        key: Some(slug),
        limit: query.limit,
        after: query.cursor,
        ..RunFilter::default()
    };
    super::runs::run_page(&state, filter).await
}

/// A sync request that was published.
#[derive(Serialize, ToSchema)]
pub struct SyncAccepted {
    /// The CloudEvent id of the `muster.team.sync` event.
    pub id: String,
    pub sequence: u64,
    pub duplicate: bool,
}

/// The body of a sync request; optional (no body means every option `false`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Override the mass-removal guard for this one sync: let it remove every member, a
    /// majority, or more than `github.max-removal-fraction` and `max-removals-absolute`.
    /// The shipped policy lets only admins ask for it.
    #[serde(default)]
    pub allow_mass_removal: bool,
    /// Adopt an existing GitHub team with the team's slug that is not linked to it: the sync
    /// takes it over (its name, description, privacy, parent and members) instead of leaving
    /// it alone. Review `GET /v1/teams/{slug}/plan?adopt=true` first. The shipped policy lets
    /// only admins ask for it.
    #[serde(default)]
    pub adopt: bool,
    /// Send again the organization invitations that expired or failed: without it such logins
    /// are held back (reported on the team) rather than re-invited on every sync.
    #[serde(default)]
    pub reinvite: bool,
}

/// Ask for a reconcile of the team now: publishes `muster.team.sync` (subject = slug) with
/// data `{"slug", "reason": "api", "allow_mass_removal", "adopt", "reinvite"}`.
///
/// With `{"allow_mass_removal": true}` the sync may remove what the mass-removal guard would
/// refuse; with `{"adopt": true}` it takes over an existing GitHub team with the team's slug
/// that is not linked to it; with `{"reinvite": true}` it sends expired organization
/// invitations again. The policy sees each as a change of that name (the shipped policy:
/// `allow_mass_removal` and `adopt` for admins only).
#[utoipa::path(post, path = "/v1/teams/{slug}/sync", tag = "teams",
    params(("slug" = String, Path, description = "Team slug")),
    request_body(content = Option<SyncRequest>, content_type = "application/json",
                 description = "Optional; no body is every option `false`"),
    responses(
        (status = 202, description = "Sync requested", body = SyncAccepted),
        (status = 422, description = "A body of the wrong shape", body = Problem, content_type = PROBLEM_JSON),
        JsonBodyProblems, NoSuchTeam, NatsOrStoreUnavailable, Denied,
    ))]
pub async fn sync(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    checked_key("team", &slug)?;
    let request: SyncRequest = optional_body("sync", &headers, &body)?;
    let team = state.records.get_team(&slug).await?;
    let options = [
        ("allow_mass_removal", request.allow_mass_removal),
        ("adopt", request.adopt),
        ("reinvite", request.reinvite),
    ];
    let changes = options.iter().filter(|(_, set)| *set).map(|(name, _)| (*name).to_owned());
    let access = Access::team("team.sync", &slug).current(&team.spec).changes(changes.collect());
    state.authorize(&caller, access).await?;
    let actor = caller.actor();
    let id = ulid::Ulid::new().to_string();
    let event = EventBuilderV10::new()
        .id(id.clone())
        .source(API_SOURCE)
        .ty(TEAM_SYNC)
        .subject(slug.clone())
        .time(chrono::Utc::now())
        .extension("authtype", actor.kind)
        .extension("authid", actor.id)
        .data(
            "application/json",
            serde_json::json!({
                "slug": slug,
                "reason": "api",
                "allow_mass_removal": request.allow_mass_removal,
                "adopt": request.adopt,
                "reinvite": request.reinvite,
            }),
        )
        .build()
        .map_err(|e| Problem::internal(&e))?;
    let published = bus::publish_event(&state.js, &state.names, &event)
        .await
        .map_err(|e| Problem::unavailable(format!("cannot publish the sync request: {e}")))?;
    Ok(json_with(
        StatusCode::ACCEPTED,
        &[],
        &SyncAccepted { id, sequence: published.sequence, duplicate: published.duplicate },
    ))
}

/// The body of a purge request; optional (no body means `force: false`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// Purge even though clusters have not reported the team's namespaces `deleted` or
    /// `retained`: the records go, the namespaces may remain in those clusters.
    #[serde(default)]
    pub force: bool,
}

/// A purge that happened.
#[derive(Debug, Serialize, ToSchema)]
pub struct Purged {
    /// Always true: a purge that does not happen is an error answer.
    pub purged: bool,
    /// Whether `force` overrode a teardown still waiting for clusters (false when the teardown
    /// was complete, even if `force` was given).
    pub forced: bool,
    /// Namespace → the clusters the teardown was still waiting for (empty unless forced).
    pub waiting: BTreeMap<String, Vec<String>>,
}

/// Purge a deleted team now: remove the tombstone and its namespace records for good.
///
/// `sync_team` purges a deleted team by itself once every target cluster reported each of its
/// namespaces `deleted` or `retained`; this is the operator's way to finish a teardown that
/// cannot complete (a cluster gone for good, an agent that will never report). Without
/// `force` it purges only a complete teardown (so it is safe to retry); with `force` it purges
/// regardless and answers what was still awaited. A purge announces nothing: the deletion was
/// announced when the team was deleted.
#[utoipa::path(post, path = "/v1/teams/{slug}/purge", tag = "teams",
    params(("slug" = String, Path, description = "Team slug")),
    request_body(content = Option<PurgeRequest>, content_type = "application/json",
                 description = "Optional; no body is `{\"force\": false}`"),
    responses(
        (status = 200, description = "Purged", body = Purged),
        (status = 404, description = "No such team (or already purged)", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "The team is not deleted, or (without force) its teardown still waits for clusters; the detail lists them", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "A body of the wrong shape", body = Problem, content_type = PROBLEM_JSON),
        JsonBodyProblems, StoreUnavailable, Denied,
    ))]
pub async fn purge(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    checked_key("team", &slug)?;
    let request: PurgeRequest = optional_body("purge", &headers, &body)?;
    let team = state.records.get_team(&slug).await?;
    state.authorize(&caller, Access::team("team.purge", &slug).current(&team.spec)).await?;
    if !team.is_deleted() {
        return Err(RecordsError::NotTombstoned { kind: RecordKind::Team, key: slug }.into());
    }
    let waiting = teardown_waiting(state.records.as_ref(), &slug).await?;
    let forced = !waiting.is_empty();
    if forced && !request.force {
        return Err(Problem::new(
            ProblemKind::Conflict,
            format!(
                "team {slug:?}'s teardown is not complete: waiting for {}; purge with force to \
                 remove its records anyway (the namespaces may remain in those clusters)",
                describe_waiting(&waiting)
            ),
        ));
    }
    if forced {
        tracing::warn!(team = %slug, waiting = ?waiting, "forced purge of a team whose teardown is not complete");
    }
    if !state.records.purge_team(&slug).await? {
        // sync_team purged it between the read and now.
        return Err(Problem::not_found(format!("team {slug:?}")));
    }
    Ok(json_with(StatusCode::OK, &[], &Purged { purged: true, forced, waiting }))
}

/// The environments where the team has a namespace record, and whether each lets namespaces
/// be deleted (an environment deleted meanwhile counts as protected).
async fn namespace_refs(state: &ApiState, slug: &str) -> Result<Vec<NamespaceRef>, Problem> {
    let filter = NamespaceFilter { team: Some(slug.to_owned()), ..NamespaceFilter::default() };
    let mut refs = Vec::new();
    for record in state.records.list_namespaces(&filter).await? {
        let environment = record.spec.environment.clone();
        let allow_namespace_deletion = match state.records.get_environment(&environment).await {
            Ok(env) => env.spec.allow_namespace_deletion,
            Err(RecordsError::NotFound { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        refs.push(NamespaceRef { environment, allow_namespace_deletion });
    }
    Ok(refs)
}

/// The optional JSON body of a `what` request: none (or `null`) is the default.
fn optional_body<T: Default + DeserializeOwned>(
    what: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    match media_type(headers) {
        Some(media) if media == "application/json" || media.ends_with("+json") => {
            Ok(parse_json::<Option<T>>(body)?.unwrap_or_default())
        }
        _ => Err(Problem::new(
            ProblemKind::UnsupportedMediaType,
            format!("a {what} body must be application/json (or send no body)"),
        )),
    }
}

/// `payments-prod (eu-1, us-1), payments-dev (dev-1)`.
fn describe_waiting(waiting: &BTreeMap<String, Vec<String>>) -> String {
    waiting
        .iter()
        .map(|(namespace, clusters)| format!("{namespace} ({})", clusters.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}
