//! `/v1/runs` (list, show, retry) and `/v1/dlq` (list, replay).

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use cloudevents::Event;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::guard::{Access, Caller};
use super::problem::{PROBLEM_JSON, Problem, ProblemKind};
use super::responses::{Denied, InvalidParameter, NatsUnavailable, NoSuchRun};
use super::teams::{Page, PageQuery};
use super::{ApiState, json_with};
use crate::bus::{codec, publish_raw};
use crate::journal::{JournalError, RunFilter, RunStatus, StatusQuery, retention};
use crate::runtime::dlq::{self, Dlq, ReplayError};
use crate::runtime::service::RunDetail;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    pub workflow: Option<String>,
    /// A run status, or `stuck`: running or retrying while the run's trigger message is gone
    /// from the events stream (below its first sequence), so nothing will drive it again.
    #[param(inline, value_type = Option<RunStatusFilterDoc>)]
    pub status: Option<StatusQuery>,
    /// The run's key, e.g. a team slug.
    pub key: Option<String>,
    /// Page size, 1 to 500 (default 100); a larger one is refused with 422.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Cursor pagination of a list of runs.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunPageQuery {
    /// Page size, 1 to 500 (default 100); a larger one is refused with 422.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of `filter` (its limit checked, 422 if out of bounds), as `{items, next_cursor}`.
pub(crate) async fn run_page(state: &ApiState, filter: RunFilter) -> Result<Response, Problem> {
    filter.checked_limit().map_err(|e| Problem::new(ProblemKind::Validation, e.to_string()))?;
    let page = state.journal.list_runs(&filter).await.map_err(|e| match e {
        JournalError::InvalidFilter(_) => Problem::new(ProblemKind::Validation, e.to_string()),
        e => Problem::internal(&e),
    })?;
    Ok(json_with(StatusCode::OK, &[], &Page { items: page.items, next_cursor: page.next_cursor }))
}

/// A run status to list, or `stuck`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RunStatusFilter)]
pub enum RunStatusFilterDoc {
    Running,
    Retrying,
    Succeeded,
    Failed,
    Stuck,
}

/// Runs, newest first, a page at a time (`next_cursor`). `status=stuck` lists the runs that are running or retrying while their
/// trigger message is gone from the events stream: fail them with `engine runs fail`.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(RunsQuery),
    responses(
        (status = 200, description = "Runs", body = super::schema::RunListDoc),
        (status = 422, description = "A limit above 500, or a cursor no list made", body = Problem, content_type = PROBLEM_JSON),
        InvalidParameter, NatsUnavailable, Denied,
    ))]
pub async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<RunsQuery>,
) -> Result<Response, Problem> {
    let mut access = Access::on("run.read", "run", "*");
    access.resource.team.clone_from(&query.key);
    state.authorize(&caller, access).await?;
    let stuck_below = match query.status {
        Some(StatusQuery::Stuck) => Some(
            retention::first_sequence(&state.js, &state.names.events_stream())
                .await
                .map_err(|e| Problem::unavailable(e.to_string()))?,
        ),
        _ => None,
    };
    let filter = RunFilter {
        workflow: query.workflow,
        status: query.status.and_then(StatusQuery::status),
        key: query.key,
        limit: query.limit,
        after: query.cursor,
        stuck_below,
    };
    run_page(&state, filter).await
}

/// One run with its steps.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = super::schema::RunDetailDoc),
        NoSuchRun, Denied,
    ))]
pub async fn get(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    state.authorize(&caller, Access::on("run.read", "run", &id)).await?;
    let run = state.journal.run(&id).await.map_err(|e| Problem::internal(&e))?;
    let run = run.ok_or_else(|| Problem::not_found(format!("run {id:?}")))?;
    let steps = state.journal.steps(&id).await.map_err(|e| Problem::internal(&e))?;
    Ok(json_with(StatusCode::OK, &[], &RunDetail { run, steps }))
}

/// A re-drive that was published.
#[derive(Serialize, ToSchema)]
pub struct Redriven {
    pub run_id: String,
    /// Stream sequence of the re-drive message.
    pub sequence: u64,
    /// The same retry was already published (within the duplicate window).
    pub duplicate: bool,
}

/// Retry a failed run: its journaled trigger event is re-published on the workflow's re-drive
/// subject (no other workflow sees it), the run is reset and runs again from its first
/// unfinished step. Its dead letter, if any, is removed.
#[utoipa::path(post, path = "/v1/runs/{id}/retry", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 202, description = "Re-drive published", body = Redriven),
        (status = 409, description = "The run is not failed", body = Problem, content_type = PROBLEM_JSON),
        NoSuchRun, NatsUnavailable, Denied,
    ))]
pub async fn retry(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    // Run ids are a workflow name and a hash: one with a control character names no run, and
    // must never reach the re-drive's headers.
    if id.chars().any(char::is_control) {
        return Err(Problem::not_found(format!("run {id:?}")));
    }
    let run = state.journal.run(&id).await.map_err(|e| Problem::internal(&e))?;
    let run = run.ok_or_else(|| Problem::not_found(format!("run {id:?}")))?;
    let mut access = Access::on("run.retry", "run", &id);
    access.resource.team = Some(run.key.clone());
    state.authorize(&caller, access).await?;
    if run.status != RunStatus::Failed {
        return Err(Problem::new(
            ProblemKind::Conflict,
            format!("run {id:?} is {}; only failed runs can be retried", run.status),
        ));
    }
    let event: Event = serde_json::from_value(run.trigger.event.clone())
        .map_err(|e| Problem::internal(&format!("run {id}'s journaled trigger: {e}")))?;
    // An event journaled before the codec checked every attribute may not survive NATS headers.
    if let Err(e) = codec::validate(&event) {
        tracing::error!(run_id = %run.id, error = %e, "journaled trigger cannot be re-published");
        return Err(Problem::new(
            ProblemKind::Internal,
            format!("run {id:?} cannot be retried: its journaled trigger event is invalid: {e}"),
        ));
    }
    let (mut headers, body) = codec::encode(&event);
    // One re-drive per failure: a double click within the duplicate window re-drives once.
    headers
        .insert(async_nats::header::NATS_MESSAGE_ID, format!("retry:{}:{}", run.id, run.redrives));
    headers.insert(dlq::H_REDRIVE, format!("retry:{}", run.id));
    let subject = state.names.redrive_subject(&run.workflow, &run.key);
    let published = publish_raw(&state.js, subject, headers, body)
        .await
        .map_err(|e| Problem::unavailable(format!("cannot publish the re-drive: {e}")))?;
    if let Some(seq) = run.dlq_sequence
        && let Err(e) = delete_dead_letter(&state, seq).await
    {
        tracing::warn!(run_id = %run.id, seq, error = %e, "re-driven, but its dead letter stays");
    }
    Ok(json_with(
        StatusCode::ACCEPTED,
        &[],
        &Redriven { run_id: run.id, sequence: published.sequence, duplicate: published.duplicate },
    ))
}

async fn delete_dead_letter(state: &ApiState, seq: u64) -> Result<(), async_nats::Error> {
    let stream = state.js.get_stream(state.names.dlq_stream()).await?;
    match stream.delete_message(seq).await {
        Ok(_) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Dead letters, oldest first.
#[utoipa::path(get, path = "/v1/dlq", tag = "runs",
    params(("limit" = Option<usize>, Query, description = "At most this many, 1 to 1000 (default 100)", minimum = 1, maximum = 1000)),
    responses(
        (status = 200, description = "Dead letters", body = super::schema::DlqListDoc),
        InvalidParameter, NatsUnavailable, Denied,
    ))]
pub async fn dlq_list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<super::teams::LimitQuery>,
) -> Result<Response, Problem> {
    state.authorize(&caller, Access::on("dlq.read", "dlq", "*")).await?;
    let limit = PageQuery { limit: query.limit, cursor: None }.limit()?;
    let items = Dlq::new(state.js.clone(), state.names.clone())
        .list(limit)
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    Ok(json_with(StatusCode::OK, &[], &serde_json::json!({ "items": items })))
}

#[derive(Debug, Deserialize)]
pub struct ReplayQuery {
    pub force: Option<bool>,
}

/// Re-drive one dead letter to its workflow and remove it from the DLQ.
#[utoipa::path(post, path = "/v1/dlq/{seq}/replay", tag = "runs",
    params(
        ("seq" = u64, Path, description = "DLQ stream sequence", minimum = 1),
        ("force" = Option<bool>, Query, description = "Replay a dead letter of a message that can never run (e.g. `invalid-json`) anyway"),
    ),
    responses(
        (status = 202, description = "Re-drive published", body = super::schema::PublishedDoc),
        (status = 400, description = "Invalid sequence", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such dead letter", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "The dead letter would only be dead-lettered again (or is a truncated copy)", body = Problem, content_type = PROBLEM_JSON),
        NatsUnavailable, Denied,
    ))]
pub async fn dlq_replay(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(seq): Path<u64>,
    Query(query): Query<ReplayQuery>,
) -> Result<Response, Problem> {
    state.authorize(&caller, Access::on("dlq.replay", "dlq", &seq.to_string())).await?;
    let not_found = || Problem::not_found(format!("dead letter {seq}"));
    if seq == 0 || seq > i64::MAX as u64 {
        return Err(not_found());
    }
    let stream = state
        .js
        .get_stream(state.names.dlq_stream())
        .await
        .map_err(|e| Problem::unavailable(format!("DLQ stream: {e}")))?;
    match stream.get_raw_message(seq).await {
        Ok(_) => {}
        Err(e) if dlq::is_not_found(&e) => return Err(not_found()),
        Err(e) => return Err(Problem::unavailable(format!("reading dead letter {seq}: {e}"))),
    }
    let published = Dlq::new(state.js.clone(), state.names.clone())
        .replay(seq, query.force.unwrap_or(false))
        .await
        .map_err(|e| match e {
            ReplayError::Refused { .. } => Problem::new(ProblemKind::Conflict, e.to_string()),
            ReplayError::Bus(e) => Problem::unavailable(e.to_string()),
        })?;
    Ok(json_with(StatusCode::ACCEPTED, &[], &published))
}
