//! Problem answers that several routes document alike, as `utoipa::IntoResponses` types for
//! their `#[utoipa::path(responses(...))]` tables. The types only describe answers: handlers
//! still answer a [`Problem`]. Answers whose meaning belongs to one route (a conflict, the 422
//! of one body) stay in that route's table.

use utoipa::IntoResponses;

use super::problem::{PROBLEM_JSON, Problem};

/// The records store (PostgreSQL) did not answer.
#[derive(IntoResponses)]
#[response(status = 503, description = "Store unavailable", content_type = PROBLEM_JSON)]
pub struct StoreUnavailable(pub Problem);

/// JetStream did not take or give a message.
#[derive(IntoResponses)]
#[response(status = 503, description = "NATS unavailable", content_type = PROBLEM_JSON)]
pub struct NatsUnavailable(pub Problem);

/// Routes that read the store and then publish.
#[derive(IntoResponses)]
#[response(status = 503, description = "NATS or the store unavailable", content_type = PROBLEM_JSON)]
pub struct NatsOrStoreUnavailable(pub Problem);

/// A query or path parameter out of range.
#[derive(IntoResponses)]
#[response(status = 400, description = "Invalid parameter", content_type = PROBLEM_JSON)]
pub struct InvalidParameter(pub Problem);

/// What reading a JSON request body can answer before its fields are looked at.
#[derive(IntoResponses)]
pub enum JsonBodyProblems {
    #[response(status = 400, description = "Malformed JSON", content_type = PROBLEM_JSON)]
    Malformed(Problem),
    #[response(status = 413, description = "Body too large", content_type = PROBLEM_JSON)]
    TooLarge(Problem),
    #[response(status = 415, description = "Not JSON", content_type = PROBLEM_JSON)]
    NotJson(Problem),
}

/// `If-Match` named a version the resource is no longer at.
#[derive(IntoResponses)]
#[response(status = 412, description = "Stale If-Match", content_type = PROBLEM_JSON)]
pub struct StaleIfMatch(pub Problem);

#[derive(IntoResponses)]
#[response(status = 404, description = "No such team", content_type = PROBLEM_JSON)]
pub struct NoSuchTeam(pub Problem);

#[derive(IntoResponses)]
#[response(status = 404, description = "No such environment", content_type = PROBLEM_JSON)]
pub struct NoSuchEnvironment(pub Problem);

#[derive(IntoResponses)]
#[response(status = 404, description = "No such run", content_type = PROBLEM_JSON)]
pub struct NoSuchRun(pub Problem);

/// What the authentication middleware and the policy can answer on every `/v1` route.
#[derive(IntoResponses)]
pub enum Denied {
    #[response(status = 401, description = "No valid bearer token", content_type = PROBLEM_JSON)]
    Unauthenticated(Problem),
    #[response(status = 403, description = "The policy denied it; the detail gives its reasons", content_type = PROBLEM_JSON)]
    Forbidden(Problem),
}
