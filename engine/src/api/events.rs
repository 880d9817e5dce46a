//! `POST /v1/events`: CloudEvents over HTTP (binary, structured and batch mode) into JetStream.

use async_nats::HeaderMap as NatsHeaders;
use async_nats::header::{HeaderName as NatsHeaderName, HeaderValue as NatsHeaderValue};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use cloudevents::{AttributesReader, Event};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::media_type;
use super::guard::{Access, Caller};
use super::problem::{FieldProblem, PROBLEM_JSON, Problem, ProblemKind};
use super::responses::{Denied, NatsUnavailable};
use super::{ApiState, json_with};
use crate::bus::{self, Names, codec};
use crate::policy::EventRef;

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
        NatsUnavailable, Denied,
    ))]
pub async fn ingest(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
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
    // Every event is allowed before any is published, and each names who sent it.
    let actor = caller.actor();
    let mut events = events;
    for event in &mut events {
        let mut access = Access::on("event.publish", "event", event.ty());
        access.resource.event = Some(EventRef {
            type_: event.ty().to_owned(),
            source: event.source().to_string(),
            subject: event.subject().map(str::to_owned),
        });
        state.authorize(&caller, access).await?;
        event.set_extension("authtype", actor.kind.as_str());
        event.set_extension("authid", actor.id.as_str());
    }
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
        // HTTP already refuses what NATS refuses (CR, LF); parsing rather than inserting keeps the
        // NATS client's panic out of reach. The codec refuses the other control characters.
        let (Ok(name), Ok(value)) =
            (name.parse::<NatsHeaderName>(), value.parse::<NatsHeaderValue>())
        else {
            return Err(Problem::new(
                ProblemKind::InvalidEvent,
                format!("header {name} cannot be carried in a NATS header"),
            ));
        };
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

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    const MAX: usize = 64 * 1024;

    fn names() -> Names {
        Names::new("muster")
    }

    fn binary_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "e-1"),
            ("ce-source", "/s"),
            ("ce-type", "muster.ping"),
            ("content-type", "application/json"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        headers
    }

    fn assert_invalid_event(problem: &Problem, attribute: &str) {
        assert_eq!(problem.status, 400);
        assert_eq!(problem.type_uri, format!("{}invalid-event", super::super::problem::TYPE_BASE));
        assert!(
            problem.detail.contains(&format!("attribute `{attribute}`")),
            "the detail names {attribute}: {}",
            problem.detail
        );
    }

    #[test]
    fn binary_mode_refuses_control_characters_naming_the_attribute() {
        assert!(decode_binary(&names(), &binary_headers(), b"{}", MAX).is_ok());
        // HTTP header values may carry a tab (and no CR, LF or NUL): the codec refuses it.
        for name in ["ce-id", "ce-source", "ce-type", "ce-subject", "ce-traceparent"] {
            let mut headers = binary_headers();
            headers.insert(name, HeaderValue::from_bytes(b"a\tb").unwrap());
            let problem = decode_binary(&names(), &headers, b"{}", MAX).unwrap_err();
            assert_invalid_event(&problem, name.trim_start_matches("ce-"));
            assert!(
                problem.detail.contains("line break or control character"),
                "{}",
                problem.detail
            );
        }
        let mut headers = binary_headers();
        headers.insert("ce-Trace_Parent", HeaderValue::from_static("x"));
        assert_invalid_event(
            &decode_binary(&names(), &headers, b"{}", MAX).unwrap_err(),
            "trace_parent",
        );
    }

    #[test]
    fn structured_mode_refuses_line_breaks_naming_the_attribute() {
        let base =
            json!({"specversion": "1.0", "id": "e-1", "source": "/s", "type": "muster.ping"});
        assert!(decode(&names(), None, base.to_string().as_bytes(), MAX).is_ok());
        for name in ["id", "source", "type", "subject", "datacontenttype", "dataschema", "ext"] {
            let mut event = base.clone();
            event[name] = json!("https://a/\r\nb");
            let problem = invalid(
                decode(&names(), None, event.to_string().as_bytes(), MAX).unwrap_err(),
                None,
            );
            assert_invalid_event(&problem, name);
        }
    }

    #[test]
    fn one_bad_event_refuses_the_whole_batch() {
        let good =
            json!({"specversion": "1.0", "id": "e-1", "source": "/s", "type": "muster.ping"});
        let mut bad = good.clone();
        bad["id"] = json!("e-2\r\nMuster-Redrive: x");
        let body = json!([good, bad]).to_string();
        let problem = decode_batch(&names(), body.as_bytes(), MAX).unwrap_err();
        assert_invalid_event(&problem, "id");
        assert_eq!(problem.errors[0].path, "[1]");
        assert!(decode_batch(&names(), json!([good]).to_string().as_bytes(), MAX).is_ok());
    }
}
