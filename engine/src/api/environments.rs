//! `/v1/environments` and `/v1/namespaces`.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::IntoParams;
use workflows::records::{
    Environment, EnvironmentSpec, NamespaceFilter, NamespaceRecord, NamespaceState, RecordKind,
    RecordsError,
};

use super::extract::{IfMatch, JsonBody, etag, if_none_match, version_to_write};
use super::guard::{Access, Caller, changed_fields};
use super::problem::{PROBLEM_JSON, Problem, ProblemKind, empty};
use super::responses::{
    Denied, InvalidParameter, JsonBodyProblems, NoSuchEnvironment, StaleIfMatch, StoreUnavailable,
};
use super::teams::{Page, PageQuery, checked_key};
use super::{ApiState, json_with};

fn environment_response(status: StatusCode, env: &Environment, location: bool) -> Response {
    let mut headers = vec![(header::ETAG, etag(env.resource_version))];
    if location {
        headers.push((header::LOCATION, format!("/v1/environments/{}", env.spec.name)));
    }
    json_with(status, &headers, env)
}

/// Create an environment. Only `name` is required; `allow_namespace_deletion` defaults to
/// false. Announces `muster.environment.created`. Every team's namespace name here,
/// `<team>-<name>`, must be at most 63 characters (else 422 on `name`) and no other team's in
/// another environment (else 409 `conflict` naming that team and environment).
#[utoipa::path(post, path = "/v1/environments", tag = "environments",
    request_body = super::schema::EnvironmentSpecDoc,
    responses(
        (status = 201, description = "Created", body = super::schema::EnvironmentDoc,
         headers(("ETag" = String), ("Location" = String))),
        (status = 409, description = "The name is taken, or a team's namespace name here is another team's", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "Invalid fields, or a namespace name longer than 63 characters", body = Problem, content_type = PROBLEM_JSON),
        JsonBodyProblems, StoreUnavailable, Denied,
    ))]
pub async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(spec): JsonBody<EnvironmentSpec>,
) -> Result<Response, Problem> {
    let access = Access::environment("environment.create", &spec.name)
        .changes(changed_fields(None::<&EnvironmentSpec>, &spec));
    state.authorize(&caller, access).await?;
    // Invalid fields first: a name that is not a DNS-1123 label has no namespace names to check.
    RecordsError::validated(RecordKind::Environment, spec.validate())?;
    super::namespace_names::check_new_environment(&state, &spec.name).await?;
    let env = state.records.create_environment(spec, &caller.actor()).await?;
    state.record_written();
    Ok(environment_response(StatusCode::CREATED, &env, true))
}

/// List environments in name order.
#[utoipa::path(get, path = "/v1/environments", tag = "environments", params(PageQuery),
    responses(
        (status = 200, description = "One page", body = super::schema::EnvironmentPageDoc),
        InvalidParameter, StoreUnavailable, Denied,
    ))]
pub async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<PageQuery>,
) -> Result<Response, Problem> {
    state.authorize(&caller, Access::on("environment.read", "environment", "*")).await?;
    let limit = query.limit()?;
    let page = state.records.list_environments(query.cursor.as_deref(), limit).await?;
    Ok(json_with(StatusCode::OK, &[], &Page { items: page.items, next_cursor: page.next }))
}

/// Read an environment.
#[utoipa::path(get, path = "/v1/environments/{name}", tag = "environments",
    params(("name" = String, Path, description = "Environment name")),
    responses(
        (status = 200, description = "The environment", body = super::schema::EnvironmentDoc, headers(("ETag" = String))),
        NoSuchEnvironment, StoreUnavailable, Denied,
    ))]
pub async fn get(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    checked_key("environment", &name)?;
    state.authorize(&caller, Access::environment("environment.read", &name)).await?;
    let env = state.records.get_environment(&name).await?;
    Ok(environment_response(StatusCode::OK, &env, false))
}

/// Replace an environment; announces `muster.environment.updated`.
#[utoipa::path(put, path = "/v1/environments/{name}", tag = "environments",
    params(("name" = String, Path, description = "Environment name"),
           ("If-Match" = Option<String>, Header, description = "ETag the update is based on")),
    request_body = super::schema::EnvironmentSpecDoc,
    responses(
        (status = 200, description = "Replaced", body = super::schema::EnvironmentDoc, headers(("ETag" = String))),
        (status = 422, description = "Invalid fields, or a name other than the path's", body = Problem, content_type = PROBLEM_JSON),
        JsonBodyProblems, NoSuchEnvironment, StaleIfMatch, StoreUnavailable, Denied,
    ))]
pub async fn replace(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    JsonBody(spec): JsonBody<EnvironmentSpec>,
) -> Result<Response, Problem> {
    checked_key("environment", &name)?;
    let expected = IfMatch::from_headers(&headers).expected()?;
    if spec.name != name {
        return Err(Problem::new(
            ProblemKind::Validation,
            format!("the body's name {:?} differs from the path's {name:?}", spec.name),
        )
        .with_errors(vec![super::problem::FieldProblem {
            path: "name".into(),
            message: format!("must be {name:?}"),
        }]));
    }
    let current = state.records.get_environment(&name).await?;
    let version = checked_version(&current, expected)?;
    let access = Access::environment("environment.update", &name)
        .current(&current.spec)
        .changes(changed_fields(Some(&current.spec), &spec));
    state.authorize(&caller, access).await?;
    let env = state.records.update_environment(spec, Some(version), &caller.actor()).await?;
    state.record_written();
    Ok(environment_response(StatusCode::OK, &env, false))
}

/// Delete an environment; announces `muster.environment.deleted` with its last state. Its
/// namespace records stay until `sync_team` has marked and removed them.
#[utoipa::path(delete, path = "/v1/environments/{name}", tag = "environments",
    params(("name" = String, Path, description = "Environment name"),
           ("If-Match" = Option<String>, Header, description = "ETag the deletion is based on")),
    responses(
        (status = 204, description = "Deleted"),
        NoSuchEnvironment, StaleIfMatch, StoreUnavailable, Denied,
    ))]
pub async fn delete(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    checked_key("environment", &name)?;
    let expected = IfMatch::from_headers(&headers).expected()?;
    let current = state.records.get_environment(&name).await?;
    let version = checked_version(&current, expected)?;
    let access = Access::environment("environment.delete", &name).current(&current.spec);
    state.authorize(&caller, access).await?;
    state.records.delete_environment(&name, Some(version), &caller.actor()).await?;
    state.record_written();
    Ok(empty(StatusCode::NO_CONTENT))
}

/// The version a write of `current` must find (412 unless it is the one `If-Match` named).
fn checked_version(current: &Environment, expected: Option<u64>) -> Result<u64, Problem> {
    let what = format!("environment {:?}", current.spec.name);
    version_to_write(&what, current.resource_version, expected)
}

/// A namespace record as the API serves it: the record and the clusters expected to report on
/// it that never did, so "no report yet" is visible without comparing two lists.
#[derive(Serialize)]
pub struct NamespaceView<'a> {
    #[serde(flatten)]
    pub record: &'a NamespaceRecord,
    pub never_reported: Vec<String>,
}

impl<'a> NamespaceView<'a> {
    pub fn new(record: &'a NamespaceRecord) -> Self {
        NamespaceView { record, never_reported: record.never_reported() }
    }
}

/// `{"items": [...]}` of namespace views.
pub(crate) fn namespace_list(items: &[NamespaceRecord]) -> serde_json::Value {
    let views: Vec<NamespaceView<'_>> = items.iter().map(NamespaceView::new).collect();
    serde_json::json!({ "items": views })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NamespaceQuery {
    /// Only this environment's records.
    pub environment: Option<String>,
    /// Only this team's records.
    pub team: Option<String>,
    /// Only records in this state.
    #[param(value_type = Option<super::schema::NamespaceStateDoc>)]
    pub state: Option<NamespaceState>,
}

/// Namespace records, ordered by team then environment. The ETag covers the whole answer, so
/// an agent polling with `If-None-Match` gets 304 until something changes.
#[utoipa::path(get, path = "/v1/namespaces", tag = "namespaces",
    params(NamespaceQuery,
           ("If-None-Match" = Option<String>, Header, description = "ETag of the answer the client has")),
    responses(
        (status = 200, description = "Namespace records", body = super::schema::NamespaceListDoc, headers(("ETag" = String))),
        (status = 304, description = "Unchanged since the ETag in If-None-Match"),
        InvalidParameter, StoreUnavailable, Denied,
    ))]
pub async fn namespaces(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<NamespaceQuery>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let mut access = Access::on("namespace.read", "namespace", "*");
    access.resource.team.clone_from(&query.team);
    access.resource.environment.clone_from(&query.environment);
    state.authorize(&caller, access).await?;
    let filter =
        NamespaceFilter { environment: query.environment, team: query.team, state: query.state };
    let items = state.records.list_namespaces(&filter).await?;
    let body = serde_json::to_vec(&namespace_list(&items)).map_err(|e| Problem::internal(&e))?;
    let tag = format!("\"{}\"", hex::encode(&Sha256::digest(&body)[..16]));
    if if_none_match(&headers, &tag) {
        let mut response = empty(StatusCode::NOT_MODIFIED);
        if let Ok(value) = tag.parse() {
            response.headers_mut().insert(header::ETAG, value);
        }
        return Ok(response);
    }
    let mut response = Response::new(axum::body::Body::from(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().expect("static"));
    if let Ok(value) = tag.parse() {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}
