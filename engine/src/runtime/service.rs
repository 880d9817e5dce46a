//! The engine's NATS service (`$SRV` discoverable as `muster-engine`): the journal, read while the
//! engine runs. sled allows one process per database, so operators' commands ask the engine
//! instead of opening its files.
//!
//! Endpoints under `<prefix>.api`: `runs.list` (body: a JSON [`RunFilter`]) answers a JSON array
//! of runs; `runs.show` (body: a run id) answers `{"run": .., "steps": [..]}` or a 404 error;
//! `runs.fail` (body: a JSON [`OperatorFailure`]) fails an unfinished run and answers it, or a 404
//! or 409 error.

use std::sync::Arc;

use async_nats::Client;
use async_nats::service::{Service, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::bus::Names;
use crate::journal::{FailRunError, Journal, OperatorFailure, RunFilter, RunRecord, StepRecord};

pub const SERVICE_NAME: &str = "muster-engine";

/// A run with its steps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunDetail {
    pub run: RunRecord,
    pub steps: Vec<StepRecord>,
}

pub(crate) struct Running {
    service: Service,
}

impl Running {
    pub(crate) async fn stop(self) {
        if let Err(e) = self.service.stop().await {
            tracing::debug!(error = %e, "stopping the NATS service");
        }
    }
}

/// Starts the service endpoints; they serve until `shutdown`.
pub(crate) async fn serve(
    client: &Client,
    names: &Names,
    journal: Arc<dyn Journal>,
    shutdown: CancellationToken,
) -> Result<Running, async_nats::Error> {
    let service = client
        .service_builder()
        .description("Muster engine: runs journal")
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await?;
    let group = service.group(names.api_group());
    let mut list = group.endpoint("runs.list").await?;
    let mut show = group.endpoint("runs.show").await?;
    let mut fail = group.endpoint("runs.fail").await?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(request) = list.next() => {
                    let response = match serde_json::from_slice::<RunFilter>(&request.message.payload) {
                        Err(e) => Err(error(400, format!("invalid filter: {e}"))),
                        Ok(filter) => journal.list_runs(&filter).await
                            .map(|runs| json(&runs))
                            .map_err(|e| error(500, e.to_string())),
                    };
                    let _ = request.respond(response).await;
                }
                Some(request) = show.next() => {
                    let id = String::from_utf8_lossy(&request.message.payload).trim().to_owned();
                    let response = show_run(journal.as_ref(), &id).await;
                    let _ = request.respond(response).await;
                }
                Some(request) = fail.next() => {
                    let response = match serde_json::from_slice::<OperatorFailure>(&request.message.payload) {
                        Err(e) => Err(error(400, format!("invalid failure: {e}"))),
                        Ok(failure) => fail_run(journal.as_ref(), &failure).await,
                    };
                    let _ = request.respond(response).await;
                }
                else => return,
            }
        }
    });
    Ok(Running { service })
}

async fn show_run(
    journal: &dyn Journal,
    id: &str,
) -> Result<Bytes, async_nats::service::error::Error> {
    let run = journal.run(id).await.map_err(|e| error(500, e.to_string()))?;
    let run = run.ok_or_else(|| error(404, format!("no run {id:?}")))?;
    let steps = journal.steps(id).await.map_err(|e| error(500, e.to_string()))?;
    Ok(json(&RunDetail { run, steps }))
}

async fn fail_run(
    journal: &dyn Journal,
    failure: &OperatorFailure,
) -> Result<Bytes, async_nats::service::error::Error> {
    match crate::journal::fail_run(journal, failure).await {
        Ok(run) => {
            tracing::warn!(run_id = %run.id, by = %failure.by, reason = %failure.reason, "run failed by an operator");
            Ok(json(&run))
        }
        Err(e @ FailRunError::NoSuchRun(_)) => Err(error(404, e.to_string())),
        Err(e @ FailRunError::Finished { .. }) => Err(error(409, e.to_string())),
        Err(e @ FailRunError::Journal(_)) => Err(error(500, e.to_string())),
    }
}

fn json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("journal records serialize"))
}

fn error(code: usize, status: String) -> async_nats::service::error::Error {
    async_nats::service::error::Error { code, status }
}

/// Why asking the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No engine answers on this NATS server and prefix.
    #[error("no engine is serving {0} on this NATS server")]
    NoEngine(String),
    #[error("the engine answered {code}: {status}")]
    Engine { code: usize, status: String },
    #[error("asking the engine: {0}")]
    Request(String),
    #[error("the engine's answer is not valid JSON: {0}")]
    Decode(#[from] serde_json::Error),
}

async fn ask(client: &Client, subject: String, body: Bytes) -> Result<Bytes, AskError> {
    use async_nats::RequestErrorKind;
    let message = client.request(subject.clone(), body).await.map_err(|e| match e.kind() {
        RequestErrorKind::NoResponders => AskError::NoEngine(subject.clone()),
        _ => AskError::Request(e.to_string()),
    })?;
    if let Some(headers) = &message.headers
        && let Some(status) = headers.get(async_nats::service::NATS_SERVICE_ERROR)
    {
        let code = headers
            .get(async_nats::service::NATS_SERVICE_ERROR_CODE)
            .and_then(|c| c.as_str().parse().ok())
            .unwrap_or(500);
        return Err(AskError::Engine { code, status: status.as_str().to_owned() });
    }
    Ok(message.payload)
}

/// Asks the running engine for runs matching `filter`.
///
/// # Errors
/// No engine answers, or it answered an error.
pub async fn ask_runs(
    client: &Client,
    names: &Names,
    filter: &RunFilter,
) -> Result<Vec<RunRecord>, AskError> {
    let body = Bytes::from(serde_json::to_vec(filter)?);
    let payload = ask(client, format!("{}.runs.list", names.api_group()), body).await?;
    Ok(serde_json::from_slice(&payload)?)
}

/// Asks the running engine to fail an unfinished run.
///
/// # Errors
/// No engine answers, no such run (404), a finished run (409), or another error.
pub async fn ask_fail(
    client: &Client,
    names: &Names,
    failure: &OperatorFailure,
) -> Result<RunRecord, AskError> {
    let body = Bytes::from(serde_json::to_vec(failure)?);
    let payload = ask(client, format!("{}.runs.fail", names.api_group()), body).await?;
    Ok(serde_json::from_slice(&payload)?)
}

/// Asks the running engine for one run and its steps.
///
/// # Errors
/// No engine answers, no such run (code 404), or another error.
pub async fn ask_run(client: &Client, names: &Names, id: &str) -> Result<RunDetail, AskError> {
    let payload =
        ask(client, format!("{}.runs.show", names.api_group()), Bytes::from(id.to_owned())).await?;
    Ok(serde_json::from_slice(&payload)?)
}
