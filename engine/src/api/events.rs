//! `POST /v1/events`: CloudEvents over HTTP (binary, structured and batch mode) into JetStream.

use async_nats::HeaderMap as NatsHeaders;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use cloudevents::{AttributesReader, Event};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::media_type;
use super::problem::{FieldProblem, PROBLEM_JSON, Problem, ProblemKind};
use super::responses::NatsUnavailable;
use super::{ApiState, json_with};
use crate::bus::{self, Names, codec};

const STRUCTURED: &str = "application/cloudevents+json";
/// Longest NATS subject an event may map to (type and subject): NATS refuses protocol lines over
/// 4 KiB, and a long subject is no use as a filter.
const MAX_SUBJECT_BYTES: usize = 1024;
const BATCH: &str = "application/cloudevents-batch+json";

/// One stored event.
#[derive(Serialize, ToSchema)]
pub struct AcceptedEvent {
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// Stream sequence (of the first copy, for a duplicate).
    pub sequence: u64,
    /// JetStream already had an event with this source and id (inside its duplicate window).
    pub duplicate: bool,
}

#[derive(Serialize, ToSchema)]
pub struct AcceptedEvents {
    /// In the order of the request.
    pub events: Vec<AcceptedEvent>,
}

/// Ingest CloudEvents (HTTP protocol binding 1.0).
///
/// - **Binary mode**: `ce-specversion`, `ce-id`, `ce-source`, `ce-type` (and optional
///   `ce-subject`, `ce-time`, extensions) as headers; the body is the data, with its
///   `Content-Type`.
/// - **Structured mode**: `Content-Type: application/cloudevents+json`, the event as JSON.
/// - **Batch mode**: `Content-Type: application/cloudevents-batch+json`, a JSON array of events.
///
/// Every event is checked before any is published, so a bad event in a batch stores none.
/// Events are deduplicated by source and id: a re-sent event is answered with
/// `duplicate: true`.
#[utoipa::path(post, path = "/v1/events", tag = "events",
    request_body(content(
        (super::schema::CloudEventDoc = "application/cloudevents+json"),
        (Vec<super::schema::CloudEventDoc> = "application/cloudevents-batch+json"),
    )),
    responses(
        (status = 202, description = "Stored in JetStream", body = AcceptedEvents),
        (status = 400, description = "Not a valid CloudEvent, or malformed JSON", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "Body too large", body = Problem, content_type = PROBLEM_JSON),
        (status = 415, description = "Unsupported content type", body = Problem, content_type = PROBLEM_JSON),
        NatsUnavailable,
    ))]
pub async fn ingest(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let max = state.max_event_bytes;
    let names = &state.names;
    let media = media_type(&headers);
    let events = if headers.contains_key("ce-specversion") {
        vec![decode_binary(names, &headers, &body, max)?]
    } else {
        match media.as_deref() {
            Some(STRUCTURED) => {
                vec![decode(names, None, &body, max).map_err(|e| invalid(e, None))?]
            }
            Some(BATCH) => decode_batch(names, &body, max)?,
            other => {
                return Err(Problem::new(
                    ProblemKind::UnsupportedMediaType,
                    format!(
                        "content type {:?} is not a CloudEvents mode: send {STRUCTURED}, \
                         {BATCH}, or ce-* headers (binary mode)",
                        other.unwrap_or("")
                    ),
                ));
            }
        }
    };
    let mut accepted = Vec::with_capacity(events.len());
    for event in &events {
        let published = bus::publish_event(&state.js, &state.names, event).await.map_err(|e| {
            Problem::unavailable(format!("cannot store event {:?}: {e}", event.id()))
        })?;
        accepted.push(AcceptedEvent {
            id: event.id().to_owned(),
            source: event.source().to_string(),
            ty: event.ty().to_owned(),
            sequence: published.sequence,
            duplicate: published.duplicate,
        });
    }
    Ok(json_with(StatusCode::ACCEPTED, &[], &AcceptedEvents { events: accepted }))
}

/// Decodes with the runtime's codec, then checks that the type and subject can name a NATS
/// subject.
fn decode(
    names: &Names,
    headers: Option<&NatsHeaders>,
    body: &[u8],
    max: usize,
) -> Result<Event, String> {
    let event = codec::decode(headers, body, max).map_err(|e| e.to_string())?;
    if !bus::is_token_path(event.ty()) {
        return Err(format!(
            "type {:?} must be dot-separated tokens without spaces, `*` or `>`",
            event.ty()
        ));
    }
    let subject = names.event_subject(&event);
    if subject.len() > MAX_SUBJECT_BYTES {
        return Err(format!(
            "type and subject make a NATS subject of {} bytes; at most {MAX_SUBJECT_BYTES} allowed",
            subject.len()
        ));
    }
    Ok(event)
}

fn invalid(reason: String, index: Option<usize>) -> Problem {
    let problem = Problem::new(ProblemKind::InvalidEvent, reason.clone());
    match index {
        Some(i) => Problem::new(ProblemKind::InvalidEvent, format!("event [{i}]: {reason}"))
            .with_errors(vec![FieldProblem { path: format!("[{i}]"), message: reason }]),
        None => problem,
    }
}

fn decode_binary(
    names: &Names,
    headers: &HeaderMap,
    body: &[u8],
    max: usize,
) -> Result<Event, Problem> {
    let mut nats = NatsHeaders::new();
    for (name, value) in headers {
        let name = name.as_str();
        if !(name.starts_with("ce-") || name == "content-type") {
            continue;
        }
        let value = value.to_str().map_err(|_| {
            Problem::new(ProblemKind::InvalidEvent, format!("header {name} is not visible ASCII"))
        })?;
        nats.insert(name, value);
    }
    decode(names, Some(&nats), body, max).map_err(|e| invalid(e, None))
}

fn decode_batch(names: &Names, body: &[u8], max: usize) -> Result<Vec<Event>, Problem> {
    let items: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            ProblemKind::MalformedJson,
            format!("a batch is a JSON array of CloudEvents: {e}"),
        )
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if !item.is_object() {
                return Err(invalid("a CloudEvent is a JSON object".into(), Some(i)));
            }
            let bytes = serde_json::to_vec(item).map_err(|e| Problem::internal(&e))?;
            decode(names, None, &bytes, max).map_err(|e| invalid(e, Some(i)))
        })
        .collect()
}
