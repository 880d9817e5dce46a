//! `/livez`, `/readyz`, `/metrics` and `/openapi.json`.

use std::future::Future;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiState, CHECK_TIMEOUT, json_with, no_store};

/// Outcome of one readiness check.
#[derive(Serialize, ToSchema)]
pub struct Check {
    /// `nats`, `streams` or `store`.
    pub name: String,
    /// `ok` or `fail`.
    pub status: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub duration_ms: u64,
}

/// The last tick of one schedule.
#[derive(Serialize, ToSchema)]
pub struct ScheduleTick {
    pub name: String,
    /// The last tick fired by any replica (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tick: Option<String>,
    /// A due tick has not fired (also a failing `schedules` check).
    pub overdue: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `fail` when a readiness check failed.
    pub status: String,
    /// Now, RFC 3339 in UTC.
    pub time: String,
    pub version: String,
    pub uptime_seconds: u64,
    /// Readiness only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    /// Readiness only: the last tick of every enabled schedule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleTick>,
}

fn health(state: &ApiState, status: &str, checks: Vec<Check>) -> Health {
    Health {
        status: status.to_owned(),
        time: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: state.started.elapsed().as_secs(),
        checks,
        schedules: Vec::new(),
    }
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/livez", tag = "operations", security(()),
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn livez(State(state): State<ApiState>) -> Response {
    json_with(StatusCode::OK, &[no_store()], &health(&state, "ok", Vec::new()))
}

async fn check<F>(name: &str, probe: F) -> Check
where
    F: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, probe)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")));
    Check {
        name: name.to_owned(),
        status: if outcome.is_ok() { "ok" } else { "fail" }.to_owned(),
        detail: outcome.err(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// Readiness: NATS answers a round trip, the events and DLQ streams are reachable, the records
/// store accepts writes, and no enabled schedule has missed a due tick. 503 when a check fails.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready; see checks", body = Health),
    ))]
pub async fn readyz(State(state): State<ApiState>) -> Response {
    let nats = check("nats", async {
        state.client.flush().await.map_err(|e| e.to_string())?;
        match state.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            other => Err(format!("connection is {other}")),
        }
    });
    let streams = check("streams", async {
        for name in [state.names.events_stream(), state.names.dlq_stream()] {
            state.js.get_stream(&name).await.map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    });
    let store = check("store", state.store.probe_writable());
    let mut ticks = Vec::new();
    let schedules = check("schedules", async {
        let Some(memory) = &state.schedule_store else { return Ok(()) };
        let enabled: Vec<_> =
            state.schedules.iter().filter(|s| s.config.enabled).cloned().collect();
        let statuses = crate::schedule::status::statuses(memory, &enabled, 0)
            .await
            .map_err(|e| e.to_string())?;
        let overdue: Vec<String> =
            statuses.iter().filter(|s| s.overdue).map(|s| s.name.clone()).collect();
        ticks = statuses
            .into_iter()
            .map(|s| ScheduleTick {
                name: s.name,
                last_tick: s.last_tick.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
                overdue: s.overdue,
            })
            .collect();
        match overdue.is_empty() {
            true => Ok(()),
            false => Err(format!("due ticks not fired: {}", overdue.join(", "))),
        }
    });
    let (nats, streams, store, schedules) = tokio::join!(nats, streams, store, schedules);
    let checks = vec![nats, streams, store, schedules];
    let ready = checks.iter().all(|c| c.status == "ok");
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut answer = health(&state, if ready { "ok" } else { "fail" }, checks);
    answer.schedules = ticks;
    json_with(status, &[no_store()], &answer)
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Metrics", body = String,
               content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
pub async fn metrics(State(state): State<ApiState>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub async fn openapi(State(state): State<ApiState>) -> Response {
    let mut response = state.openapi_json.clone().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
