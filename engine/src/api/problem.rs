//! RFC 9457 problem details: every error the API answers is `application/problem+json` with a
//! stable `type` URI per kind of error ([`ProblemKind`]).

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use workflows::records::RecordsError;

/// Media type of problem responses.
pub const PROBLEM_JSON: &str = "application/problem+json";
/// Base of every problem `type` URI.
pub const TYPE_BASE: &str = "https://muster.dev/problems/";
/// Largest error body of an inner layer that is quoted as a problem's detail.
const MAX_QUOTED_BODY: usize = 4096;

/// The kinds of error, each with its own `type` URI (`<TYPE_BASE><slug>`), title and status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// The body is not JSON at all (syntax error, truncated).
    MalformedJson,
    /// JSON of the wrong shape: unknown field, missing field, wrong type.
    InvalidBody,
    /// Well-formed but invalid values; `errors` lists each field.
    Validation,
    /// A query or path parameter or a header is invalid.
    BadRequest,
    /// No valid credentials: a missing or refused bearer token, or a webhook whose signature
    /// is missing or does not verify.
    Unauthorized,
    /// The policy denied the caller this action; the detail carries its reasons.
    Forbidden,
    /// The CloudEvent cannot be accepted (missing attribute, wrong specversion, bad type).
    InvalidEvent,
    UnsupportedMediaType,
    PayloadTooLarge,
    NotFound,
    /// No route for this path.
    RouteNotFound,
    MethodNotAllowed,
    /// The key is taken (409).
    AlreadyExists,
    /// The resource's state does not allow this (a run that is not failed, a deleted team).
    Conflict,
    /// `If-Match` does not match the current version (412).
    PreconditionFailed,
    /// A dependency (NATS, the database) is unreachable or slow; try again.
    Unavailable,
    /// The request took longer than `http.request-timeout`.
    Timeout,
    Internal,
}

impl ProblemKind {
    pub fn slug(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed-json",
            Self::InvalidBody => "invalid-body",
            Self::Validation => "validation",
            Self::BadRequest => "bad-request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::InvalidEvent => "invalid-event",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::PayloadTooLarge => "payload-too-large",
            Self::NotFound => "not-found",
            Self::RouteNotFound => "route-not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::AlreadyExists => "already-exists",
            Self::Conflict => "conflict",
            Self::PreconditionFailed => "precondition-failed",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::MalformedJson | Self::BadRequest | Self::InvalidEvent => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::InvalidBody | Self::Validation => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound | Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::AlreadyExists | Self::Conflict => StatusCode::CONFLICT,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::Unavailable | Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::MalformedJson => "Malformed JSON",
            Self::InvalidBody => "Request body has the wrong shape",
            Self::Validation => "Validation failed",
            Self::BadRequest => "Bad request",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::InvalidEvent => "Invalid CloudEvent",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::PayloadTooLarge => "Request body too large",
            Self::NotFound => "Not found",
            Self::RouteNotFound => "No such route",
            Self::MethodNotAllowed => "Method not allowed",
            Self::AlreadyExists => "Already exists",
            Self::Conflict => "Conflict",
            Self::PreconditionFailed => "Precondition failed",
            Self::Unavailable => "Service unavailable",
            Self::Timeout => "Request timed out",
            Self::Internal => "Internal error",
        }
    }

    /// Every kind, for the documentation test.
    pub const ALL: [ProblemKind; 18] = [
        Self::MalformedJson,
        Self::InvalidBody,
        Self::Validation,
        Self::BadRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::InvalidEvent,
        Self::UnsupportedMediaType,
        Self::PayloadTooLarge,
        Self::NotFound,
        Self::RouteNotFound,
        Self::MethodNotAllowed,
        Self::AlreadyExists,
        Self::Conflict,
        Self::PreconditionFailed,
        Self::Unavailable,
        Self::Timeout,
        Self::Internal,
    ];
}

/// One invalid field of a request.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct FieldProblem {
    /// Path of the field, e.g. `members[2]` or `default_quota["cpu"]`.
    pub path: String,
    pub message: String,
}

/// An RFC 9457 problem details object.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Problem {
    /// Stable URI naming the kind of error, e.g. `https://muster.dev/problems/validation`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    /// What is wrong with this request, for a person.
    pub detail: String,
    /// For validation errors: every invalid field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
}

impl Problem {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("{TYPE_BASE}{}", kind.slug()),
            title: kind.title().to_owned(),
            status: kind.status().as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldProblem>) -> Self {
        self.errors = errors;
        self
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(ProblemKind::NotFound, format!("{what} not found"))
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::BadRequest, detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::Unavailable, detail)
    }

    /// An internal error: logged in full, answered without its details.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error answering a request");
        Self::new(ProblemKind::Internal, "an internal error occurred; see the engine's log")
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<RecordsError> for Problem {
    fn from(error: RecordsError) -> Self {
        match &error {
            RecordsError::NotFound { .. } => Problem::new(ProblemKind::NotFound, error.to_string()),
            RecordsError::AlreadyExists { .. } => {
                Problem::new(ProblemKind::AlreadyExists, error.to_string())
            }
            RecordsError::VersionConflict { .. } => Problem::new(
                ProblemKind::PreconditionFailed,
                format!("{error}; read it again and retry with its current ETag"),
            ),
            RecordsError::Tombstoned { .. } | RecordsError::NotTombstoned { .. } => {
                Problem::new(ProblemKind::Conflict, error.to_string())
            }
            RecordsError::Invalid { errors, .. } => {
                let fields = errors
                    .errors()
                    .iter()
                    .map(|e| FieldProblem { path: e.path.clone(), message: e.message.clone() })
                    .collect();
                Problem::new(ProblemKind::Validation, error.to_string()).with_errors(fields)
            }
            RecordsError::Backend { retryable: true, .. } => {
                tracing::warn!(error = %error, source = ?std::error::Error::source(&error), "records backend unavailable");
                Problem::unavailable("the records store is unavailable; try again")
            }
            RecordsError::Backend { retryable: false, .. } => Problem::internal(&format!(
                "{error}: {}",
                std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default()
            )),
        }
    }
}

/// Turns an error answer of an inner layer or extractor that is not JSON (axum's plain-text
/// rejections of path and query parameters, 404/405, tower-http's 413 and timeouts) into a
/// problem, quoting its text as the detail.
pub async fn problem_for_plain_errors(response: Response) -> Response {
    let status = response.status();
    // Answers that are JSON already (problems, and the health answers of `/readyz`) are ours.
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON) || v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let kind = match status {
        StatusCode::NOT_FOUND => ProblemKind::RouteNotFound,
        StatusCode::METHOD_NOT_ALLOWED => ProblemKind::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ProblemKind::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemKind::UnsupportedMediaType,
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => ProblemKind::Timeout,
        StatusCode::UNPROCESSABLE_ENTITY => ProblemKind::InvalidBody,
        s if s.is_client_error() => ProblemKind::BadRequest,
        _ => ProblemKind::Internal,
    };
    let allow = response.headers().get(header::ALLOW).cloned();
    let text = axum::body::to_bytes(response.into_body(), MAX_QUOTED_BODY)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let detail = match (kind, text.is_empty()) {
        (ProblemKind::RouteNotFound, _) => "no route for this path; see /openapi.json".to_owned(),
        (ProblemKind::MethodNotAllowed, _) => {
            "this route does not take that method; see /openapi.json".to_owned()
        }
        (ProblemKind::PayloadTooLarge, _) => {
            "the request body exceeds the limit (http.max-body-bytes)".to_owned()
        }
        (ProblemKind::Timeout, _) => "the request took too long; try again".to_owned(),
        (_, true) => kind.title().to_owned(),
        (_, false) => text,
    };
    let mut problem = Problem::new(kind, detail);
    problem.status = status.as_u16();
    let mut response = problem.into_response();
    if let Some(allow) = allow {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

/// The answer when a handler panicked: a 500 problem; the panic is logged and the engine
/// keeps serving.
pub fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = %message, "a request handler panicked");
    Problem::new(ProblemKind::Internal, "an internal error occurred; see the engine's log")
        .into_response()
}

/// The answer for paths no route matches.
pub async fn route_not_found() -> Problem {
    Problem::new(ProblemKind::RouteNotFound, "no route for this path; see /openapi.json")
}

/// Empty body helper for 304 and similar.
pub fn empty(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;
    use tower_http::catch_panic::CatchPanicLayer;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_is_a_500_problem_and_the_router_keeps_serving() {
        async fn boom() -> &'static str {
            panic!("boom")
        }
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" }))
            .layer(CatchPanicLayer::custom(panicked));
        let request = |path: &str| Request::get(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request("/boom")).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        let problem: Problem = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem.type_uri, format!("{TYPE_BASE}internal"));
        assert!(!problem.detail.contains("boom"), "the panic message stays in the log");
        let response = app.oneshot(request("/fine")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
