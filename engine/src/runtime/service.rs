//! The engine's NATS service (`$SRV` discoverable as `muster-engine`): the journal, read while the
//! engine runs. sled allows one process per database, so operators' commands ask the engine
//! instead of opening its files.
//!
//! Endpoints under `<prefix>.api`: `runs.list` (body: a JSON [`RunFilter`]) answers one JSON
//! [`RunPage`] (`{"items": [..], "next_cursor": ..}`) that never exceeds the server's
//! `max_payload`: items that would not fit are left to the next page, which `next_cursor`
//! continues from (a `limit` above [`MAX_LIST_LIMIT`](crate::journal::MAX_LIST_LIMIT) is a 400);
//! `runs.show` (body: a run id) answers `{"run": .., "steps": [..]}` or a 404 error;
//! `runs.fail` (body: a JSON [`OperatorFailure`]) fails an unfinished run and answers it, or a 404
//! or 409 error.
//!
//! Every request is answered: an answer that cannot be sent is replaced by an error answer, so a
//! client never waits for its timeout.

use std::sync::Arc;

use async_nats::Client;
use async_nats::service::{Request, Service, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::bus::Names;
use crate::journal::{
    FailRunError, Journal, JournalError, OperatorFailure, RunFilter, RunPage, RunRecord,
    StepRecord, page_cursor,
};

pub const SERVICE_NAME: &str = "muster-engine";

/// Bytes of a reply's `max_payload` kept for what the server adds besides the body (error
/// headers of a reply are far smaller).
const REPLY_HEADROOM: usize = 1024;

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
    let max_reply = client.max_payload().saturating_sub(REPLY_HEADROOM);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(request) = list.next() => {
                    let response = list_runs(journal.as_ref(), &request.message.payload, max_reply).await;
                    respond(&request, response).await;
                }
                Some(request) = show.next() => {
                    let id = String::from_utf8_lossy(&request.message.payload).trim().to_owned();
                    let response = show_run(journal.as_ref(), &id).await;
                    respond(&request, response).await;
                }
                Some(request) = fail.next() => {
                    let response = match serde_json::from_slice::<OperatorFailure>(&request.message.payload) {
                        Err(e) => Err(error(400, format!("invalid failure: {e}"))),
                        Ok(failure) => fail_run(journal.as_ref(), &failure).await,
                    };
                    respond(&request, response).await;
                }
                else => return,
            }
        }
    });
    Ok(Running { service })
}

/// Answers `request`; an answer that cannot be sent (e.g. too large) becomes an error answer.
async fn respond(request: &Request, response: Result<Bytes, async_nats::service::error::Error>) {
    let Err(e) = request.respond(response).await else { return };
    tracing::warn!(subject = %request.message.subject, error = %e, "cannot send a service answer");
    let status = format!("the engine could not send its answer: {e}");
    if let Err(e) = request.respond(Err(error(500, status))).await {
        tracing::warn!(subject = %request.message.subject, error = %e, "cannot send a service error");
    }
}

async fn list_runs(
    journal: &dyn Journal,
    body: &[u8],
    max_reply: usize,
) -> Result<Bytes, async_nats::service::error::Error> {
    let filter: RunFilter =
        serde_json::from_slice(body).map_err(|e| error(400, format!("invalid filter: {e}")))?;
    match journal.list_runs(&filter).await {
        Ok(page) => fitted_page(page, max_reply),
        Err(e @ JournalError::InvalidFilter(_)) => Err(error(400, e.to_string())),
        Err(e) => Err(error(500, e.to_string())),
    }
}

/// `page` as JSON in at most `max` bytes: the items that do not fit are left for the next page,
/// which continues after the last item sent.
fn fitted_page(page: RunPage, max: usize) -> Result<Bytes, async_nats::service::error::Error> {
    let whole = json(&page);
    if whole.len() <= max {
        return Ok(whole);
    }
    let mut items: Vec<Vec<u8>> = Vec::new();
    let mut used = 0;
    for run in &page.items {
        let item = serde_json::to_vec(run).expect("journal records serialize");
        let cursor = page_cursor(run);
        // `{"items":[` items with commas `],"next_cursor":"` cursor `"}`
        let framing = 10 + items.len() + 17 + cursor.len() + 2;
        if used + item.len() + framing > max {
            break;
        }
        used += item.len();
        items.push(item);
    }
    let Some(last) = items.len().checked_sub(1).map(|i| &page.items[i]) else {
        let id = page.items.first().map_or("", |r| r.id.as_str());
        return Err(error(
            500,
            format!("run {id:?} alone exceeds the NATS max_payload of {max} bytes"),
        ));
    };
    let mut body = Vec::with_capacity(max);
    body.extend_from_slice(b"{\"items\":[");
    body.extend_from_slice(&items.join(&b","[..]));
    body.extend_from_slice(b"],\"next_cursor\":\"");
    body.extend_from_slice(page_cursor(last).as_bytes());
    body.extend_from_slice(b"\"}");
    Ok(Bytes::from(body))
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

/// Asks the running engine for a page of runs matching `filter`. The page may hold fewer than
/// `limit` runs (a reply is bounded by `max_payload`) and still have a `next_cursor`.
///
/// # Errors
/// No engine answers, or it answered an error (400 for a limit above
/// [`MAX_LIST_LIMIT`](crate::journal::MAX_LIST_LIMIT)).
pub async fn ask_runs(
    client: &Client,
    names: &Names,
    filter: &RunFilter,
) -> Result<RunPage, AskError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{RunStatus, TriggerRecord};

    fn run(i: usize) -> RunRecord {
        let created = chrono::Utc::now() + chrono::Duration::milliseconds(i as i64);
        let trigger = TriggerRecord {
            event: serde_json::json!({}),
            nats_subject: "s".into(),
            stream_sequence: 1,
        };
        RunRecord {
            status: RunStatus::Succeeded,
            attempts: 1,
            finished_at: Some(created),
            output: Some(serde_json::json!("x".repeat(1000))),
            ..RunRecord::new(format!("run-{i}"), "ping", "k", trigger, created)
        }
    }

    #[test]
    fn a_page_is_cut_to_fit_and_continues_after_its_last_item() {
        let page = RunPage { items: (0..10).map(run).collect(), next_cursor: None };
        let whole = json(&page);
        assert_eq!(
            fitted_page(page.clone(), whole.len()).unwrap(),
            whole,
            "a page that fits is whole"
        );

        let max = whole.len() / 3;
        let body = fitted_page(page.clone(), max).unwrap();
        assert!(body.len() <= max, "{} > {max}", body.len());
        let cut: RunPage = serde_json::from_slice(&body).unwrap();
        let n = cut.items.len();
        assert!((1..10).contains(&n), "{n}");
        assert_eq!(cut.items, page.items[..n]);
        assert_eq!(cut.next_cursor, Some(page_cursor(&page.items[n - 1])));

        let refused = fitted_page(page, 100).unwrap_err();
        assert!(
            refused.status.contains("alone exceeds the NATS max_payload"),
            "{}",
            refused.status
        );
    }
}
