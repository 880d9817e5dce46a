//! The HTTP API (axum): teams, environments, namespace records, runs, the DLQ, CloudEvents
//! ingest, health, metrics and the OpenAPI 3.1 document generated from these handlers.
//!
//! Every route is registered through `utoipa_axum`'s `routes!`, which adds it to the router
//! and to the document together, so the document lists exactly the routes served.
//!
//! Errors are RFC 9457 problems ([`problem`]). Request bodies are limited to
//! `http.max-body-bytes`; each request gets an `x-request-id` (kept when the client sends one)
//! and a tracing span. Every `/v1` route but GitHub's webhook needs a bearer token (a static
//! token or an OIDC JWT, [`guard::authenticate`]) once credentials are configured, and each
//! handler asks the policy whether the caller may do what it asks ([`AppState::authorize`]).
//! A panic in a handler is answered as a 500 problem; the engine keeps serving.

pub mod environments;
pub mod events;
pub mod extract;
pub mod guard;
pub mod health;
mod namespace_names;
pub mod plan;
pub mod problem;
pub mod responses;
pub mod runs;
pub mod schema;
pub mod teams;
pub mod webhooks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use async_nats::jetstream::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use workflows::records::Records;
use workflows::sync_team::SyncTeam;

use crate::auth::Authenticator;
use crate::bus::Names;
use crate::config::HttpConfig;
use crate::journal::Journal;
use crate::metrics::{LatencyLabels, Metrics, RequestLabels};
use crate::policy::Authorizer;
use crate::store::Store;

/// Header carrying the request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the handlers share.
pub struct AppState {
    pub store: Store,
    pub records: Arc<dyn Records>,
    pub journal: Arc<dyn Journal>,
    pub client: Client,
    pub js: Context,
    pub names: Names,
    /// Wakes the outbox relay after a records write.
    pub relay_wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    pub max_event_bytes: usize,
    /// The OpenAPI document, rendered once.
    pub openapi_json: String,
    /// Schedules and their shared memory, for readiness (absent when none is enabled).
    pub schedules: Vec<crate::schedule::Schedule>,
    pub schedule_store: Option<async_nats::jetstream::kv::Store>,
    /// Key of GitHub webhook signatures; without one, webhooks are refused.
    pub github_webhook_secret: Option<String>,
    /// Checks credentials; `None` when authentication is off.
    pub authenticator: Option<Arc<Authenticator>>,
    /// Decides what an authenticated caller may do.
    pub authorizer: Arc<dyn Authorizer>,
    /// `github.min-maintainers`: a team with fewer maintainers is refused (422), since
    /// `sync_team` would refuse to sync it.
    pub min_maintainers: usize,
    /// `sync_team` itself, whose previews `GET /v1/teams/{slug}/plan` answers.
    pub sync_team: Arc<SyncTeam>,
    /// Previews computed at once ([`plan::MAX_CONCURRENT_PLANS`]).
    pub plans: tokio::sync::Semaphore,
}

pub type ApiState = Arc<AppState>;

impl AppState {
    /// After a records write: the fault hook for the crash test, then wake the relay.
    pub fn record_written(&self) {
        crate::fault::after_record_write();
        self.relay_wake.notify_one();
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Muster API",
        description = "Teams, environments and namespace records; runs, dead letters and \
                       CloudEvents ingest of the Muster workflow engine. Errors are RFC 9457 \
                       problems (application/problem+json). Every /v1 route but GitHub's \
                       webhook takes a bearer token (a static token or an OIDC JWT) when the \
                       engine has credentials configured; a policy decides what each caller \
                       may do.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "teams", description = "Teams: the desired state sync_team reconciles"),
        (name = "environments", description = "Environments (master records)"),
        (name = "namespaces", description = "Namespace records, read by cluster agents"),
        (name = "runs", description = "Workflow runs and the dead-letter queue"),
        (name = "events", description = "CloudEvents ingest"),
        (name = "operations", description = "Health, metrics and this document"),
    ),
    components(schemas(problem::Problem, problem::FieldProblem)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

/// Declares the bearer scheme every `/v1` route takes.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `[[auth.tokens]]` (or the one `engine dev` prints), or an \
                         OIDC JWT",
                    ))
                    .build(),
            ),
        );
    }
}

/// The routes with their document. The router still needs its state.
pub fn routes() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(teams::create, teams::list))
        .routes(routes!(teams::get, teams::replace, teams::patch, teams::delete))
        .routes(routes!(teams::namespaces))
        .routes(routes!(teams::runs))
        .routes(routes!(teams::sync))
        .routes(routes!(plan::plan))
        .routes(routes!(teams::purge))
        .routes(routes!(environments::create, environments::list))
        .routes(routes!(environments::get, environments::replace, environments::delete))
        .routes(routes!(environments::namespaces))
        .routes(routes!(runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::retry))
        .routes(routes!(runs::dlq_list))
        .routes(routes!(runs::dlq_replay))
        .routes(routes!(events::ingest))
        .routes(routes!(webhooks::github))
        .routes(routes!(health::livez))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(health::openapi))
        .split_for_parts()
}

/// The OpenAPI document as served on `/openapi.json`.
pub fn openapi_json() -> String {
    routes().1.to_pretty_json().unwrap_or_default()
}

/// The complete service: routes, state and layers.
pub fn router(state: ApiState, http: &HttpConfig) -> Router {
    let (routes, _) = routes();
    routes
        .fallback(problem::route_not_found)
        .with_state(state.clone())
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(problem::panicked))
        .layer(middleware::from_fn_with_state(state.clone(), guard::authenticate))
        .layer(DefaultBodyLimit::disable())
        .layer(tower_http::limit::RequestBodyLimitLayer::new(http.max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            http.request_timeout,
        ))
        .layer(middleware::map_response(problem::problem_for_plain_errors))
        .layer(middleware::from_fn_with_state(state, count_requests))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Counts requests and their latency by route template (never by raw path, which would let
/// clients create unbounded label values).
async fn count_requests(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .http_requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    state
        .metrics
        .http_latency
        .get_or_create(&LatencyLabels { method, route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// A JSON response with extra headers.
pub(crate) fn json_with(
    status: axum::http::StatusCode,
    headers: &[(HeaderName, String)],
    body: &impl serde::Serialize,
) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(name.clone(), value);
        }
    }
    response
}

/// `Cache-Control: no-store` for answers that must not be cached by intermediaries.
pub(crate) fn no_store() -> (HeaderName, String) {
    (header::CACHE_CONTROL, "no-store".to_owned())
}

/// Page sizes of list endpoints.
pub(crate) const DEFAULT_LIMIT: usize = 100;

/// Bound on one readiness check.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The routes the issue asks for, every one in the document (and so in the router).
    #[test]
    fn the_document_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let mut served = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                    served.insert(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        let expected: BTreeSet<String> = [
            "POST /v1/teams",
            "GET /v1/teams",
            "GET /v1/teams/{slug}",
            "PUT /v1/teams/{slug}",
            "PATCH /v1/teams/{slug}",
            "DELETE /v1/teams/{slug}",
            "GET /v1/teams/{slug}/namespaces",
            "GET /v1/teams/{slug}/runs",
            "POST /v1/teams/{slug}/sync",
            "GET /v1/teams/{slug}/plan",
            "POST /v1/teams/{slug}/purge",
            "POST /v1/environments",
            "GET /v1/environments",
            "GET /v1/environments/{name}",
            "PUT /v1/environments/{name}",
            "DELETE /v1/environments/{name}",
            "GET /v1/namespaces",
            "GET /v1/runs",
            "GET /v1/runs/{id}",
            "POST /v1/runs/{id}/retry",
            "GET /v1/dlq",
            "POST /v1/dlq/{seq}/replay",
            "POST /v1/events",
            "POST /v1/webhooks/github",
            "GET /livez",
            "GET /readyz",
            "GET /metrics",
            "GET /openapi.json",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(served, expected);
    }
}
