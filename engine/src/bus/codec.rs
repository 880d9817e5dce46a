//! CloudEvents 1.0 ⇄ NATS messages.
//!
//! Accepted on input:
//! - binary mode: `ce-specversion`, `ce-id`, `ce-source`, `ce-type` (required), `ce-subject`,
//!   `ce-time`, `ce-dataschema` and any other `ce-<extension>` header; `content-type` is the data's
//!   content type: JSON (`application/json`, `*/*+json`), text (`text/*`) or bytes
//!   (`application/octet-stream`); the body is the data;
//! - structured mode: a JSON CloudEvent in the body, with `content-type:
//!   application/cloudevents+json` or no content type at all.
//!
//! Anything else is a [`DecodeError`] that names what is wrong; the runtime sends such messages to
//! the DLQ with that reason. Muster itself publishes binary mode.

use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use cloudevents::event::{AttributeValue, Data, ExtensionValue};
use cloudevents::{AttributesReader, AttributesWriter, Event, EventBuilder, EventBuilderV10};
use sha2::{Digest, Sha256};

const STRUCTURED_JSON: &str = "application/cloudevents+json";
const CE_PREFIX: &str = "ce-";

/// Why a message is not a CloudEvent Muster can run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("event of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("body is not valid UTF-8: {0}")]
    InvalidUtf8(String),
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("required attribute `{0}` is missing or empty")]
    MissingAttribute(&'static str),
    #[error("specversion {0:?} is not supported (Muster accepts CloudEvents 1.0)")]
    UnsupportedSpecVersion(String),
    #[error("content type {0:?} is not supported")]
    UnsupportedContentType(String),
    #[error("attribute `{name}` is invalid: {reason}")]
    InvalidAttribute { name: String, reason: String },
}

impl DecodeError {
    /// A stable short name, stored as the DLQ entry's error kind.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too-large",
            Self::InvalidUtf8(_) => "invalid-utf8",
            Self::InvalidJson(_) => "invalid-json",
            Self::MissingAttribute(_) => "missing-attribute",
            Self::UnsupportedSpecVersion(_) => "unsupported-specversion",
            Self::UnsupportedContentType(_) => "unsupported-content-type",
            Self::InvalidAttribute { .. } => "invalid-attribute",
        }
    }
}

/// The `Nats-Msg-Id` of an event: a hash of its source and id, so that the same event published
/// twice is stored once.
pub fn message_id(source: &str, id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(source.as_bytes());
    hash.update([0]);
    hash.update(id.as_bytes());
    hex::encode(&hash.finalize()[..16])
}

/// Size of a message as the limit counts it: body plus header names and values.
pub fn message_size(headers: Option<&HeaderMap>, payload: &[u8]) -> usize {
    let header_bytes: usize = headers
        .map(|h| {
            h.iter()
                .map(|(name, values)| {
                    values
                        .iter()
                        .map(|v| AsRef::<str>::as_ref(name).len() + v.as_str().len() + 4)
                        .sum::<usize>()
                })
                .sum()
        })
        .unwrap_or(0);
    payload.len() + header_bytes
}

/// Decodes a NATS message into a CloudEvent.
///
/// # Errors
/// A [`DecodeError`] naming the first problem found.
pub fn decode(
    headers: Option<&HeaderMap>,
    payload: &[u8],
    max_bytes: usize,
) -> Result<Event, DecodeError> {
    let size = message_size(headers, payload);
    if size > max_bytes {
        return Err(DecodeError::TooLarge { size, limit: max_bytes });
    }
    let header = |name: &str| header_value(headers, name);
    let content_type = header("content-type");
    if header("ce-specversion").is_some() {
        return decode_binary(headers, content_type.as_deref(), payload);
    }
    match content_type.as_deref() {
        None => decode_structured(payload),
        Some(ct) if media_type(ct) == STRUCTURED_JSON => decode_structured(payload),
        Some(other) => Err(DecodeError::UnsupportedContentType(other.to_owned())),
    }
}

/// Encodes an event in binary mode: attributes as `ce-*` headers, the data as the body, and the
/// event's [`message_id`] as `Nats-Msg-Id`.
pub fn encode(event: &Event) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    for (name, value) in event.iter() {
        match (name, value) {
            ("datacontenttype", value) => headers.insert("content-type", value.to_string()),
            ("time", AttributeValue::Time(time)) => {
                headers.insert("ce-time", time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            }
            (name, value) => {
                headers.insert(format!("{CE_PREFIX}{name}").as_str(), value.to_string())
            }
        }
    }
    let body = match event.data() {
        None => Bytes::new(),
        Some(Data::Json(value)) => {
            if event.datacontenttype().is_none() {
                headers.insert("content-type", "application/json");
            }
            Bytes::from(serde_json::to_vec(value).unwrap_or_default())
        }
        Some(Data::String(text)) => Bytes::from(text.clone()),
        Some(Data::Binary(bytes)) => Bytes::from(bytes.clone()),
    };
    headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id(event.source(), event.id()));
    (headers, body)
}

fn header_value(headers: Option<&HeaderMap>, name: &str) -> Option<String> {
    headers?
        .iter()
        .find(|(key, _)| AsRef::<str>::as_ref(key).eq_ignore_ascii_case(name))
        .and_then(|(_, values)| values.first())
        .map(|v| v.as_str().to_owned())
}

/// `Application/JSON; charset=utf-8` → `application/json`.
fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

fn utf8(payload: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(payload).map_err(|e| DecodeError::InvalidUtf8(e.to_string()))
}

fn decode_binary(
    headers: Option<&HeaderMap>,
    content_type: Option<&str>,
    payload: &[u8],
) -> Result<Event, DecodeError> {
    let attr = |name: &'static str| {
        header_value(headers, &format!("{CE_PREFIX}{name}"))
            .filter(|v| !v.is_empty())
            .ok_or(DecodeError::MissingAttribute(name))
    };
    let specversion = attr("specversion")?;
    if specversion != "1.0" {
        return Err(DecodeError::UnsupportedSpecVersion(specversion));
    }
    let mut builder =
        EventBuilderV10::new().id(attr("id")?).source(attr("source")?).ty(attr("type")?);
    if let Ok(subject) = attr("subject") {
        builder = builder.subject(subject);
    }
    if let Ok(time) = attr("time") {
        builder = builder.time(parse_time(&time)?);
    }
    for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
        let name = AsRef::<str>::as_ref(name).to_ascii_lowercase();
        let Some(extension) = name.strip_prefix(CE_PREFIX) else { continue };
        if matches!(extension, "specversion" | "id" | "source" | "type" | "subject" | "time") {
            continue;
        }
        let value = values.first().map(|v| v.as_str().to_owned()).unwrap_or_default();
        if extension == "dataschema" {
            continue; // set after building: it must parse as a URL
        }
        if !extension.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return Err(DecodeError::InvalidAttribute {
                name: extension.to_owned(),
                reason: "extension names are lowercase letters and digits".into(),
            });
        }
        builder = builder.extension(extension, ExtensionValue::String(value));
    }
    let mut event = builder.build().map_err(|e| DecodeError::InvalidAttribute {
        name: "event".into(),
        reason: e.to_string(),
    })?;
    if let Ok(schema) = attr("dataschema") {
        let url = url::Url::parse(&schema).map_err(|e| DecodeError::InvalidAttribute {
            name: "dataschema".into(),
            reason: e.to_string(),
        })?;
        event.set_dataschema(Some(url));
    }
    if payload.is_empty() && content_type.is_none() {
        return Ok(event);
    }
    let content_type = content_type.unwrap_or("application/octet-stream");
    let media = media_type(content_type);
    let data = if media == "application/json" || media.ends_with("+json") {
        let text = utf8(payload)?;
        Data::Json(serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))?)
    } else if media.starts_with("text/") {
        Data::String(utf8(payload)?.to_owned())
    } else if media == "application/octet-stream" {
        Data::Binary(payload.to_vec())
    } else {
        return Err(DecodeError::UnsupportedContentType(content_type.to_owned()));
    };
    event.set_datacontenttype(Some(content_type.to_owned()));
    event.set_data_unchecked(data);
    Ok(event)
}

fn decode_structured(payload: &[u8]) -> Result<Event, DecodeError> {
    let text = utf8(payload)?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    let object = value.as_object().ok_or_else(|| {
        DecodeError::InvalidJson("a structured CloudEvent is a JSON object".into())
    })?;
    let string_attr = |name: &'static str| {
        object
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .ok_or(DecodeError::MissingAttribute(name))
    };
    let specversion = match object.get("specversion") {
        None => return Err(DecodeError::MissingAttribute("specversion")),
        Some(v) => v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()),
    };
    if specversion != "1.0" {
        return Err(DecodeError::UnsupportedSpecVersion(specversion));
    }
    for required in ["id", "source", "type"] {
        string_attr(required)?;
    }
    if let Some(time) = object.get("time") {
        parse_time(time.as_str().unwrap_or_default())?;
    }
    serde_json::from_value(value)
        .map_err(|e| DecodeError::InvalidAttribute { name: "event".into(), reason: e.to_string() })
}

fn parse_time(time: &str) -> Result<DateTime<Utc>, DecodeError> {
    DateTime::parse_from_rfc3339(time).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        DecodeError::InvalidAttribute { name: "time".into(), reason: format!("{time:?}: {e}") }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMIT: usize = 64 * 1024;

    fn sample() -> Event {
        EventBuilderV10::new()
            .id("e-1")
            .source("/teams-api")
            .ty("muster.team.created")
            .subject("payments")
            .time("2026-11-27T10:00:00Z")
            .extension("traceparent", "00-abc-def-01")
            .data("application/json", json!({"slug": "payments"}))
            .build()
            .unwrap()
    }

    #[test]
    fn binary_mode_round_trips() {
        let event = sample();
        let (headers, body) = encode(&event);
        assert_eq!(headers.get("ce-type").unwrap().as_str(), "muster.team.created");
        assert_eq!(headers.get("content-type").unwrap().as_str(), "application/json");
        assert_eq!(
            headers.get(async_nats::header::NATS_MESSAGE_ID).unwrap().as_str(),
            message_id("/teams-api", "e-1")
        );
        assert_eq!(decode(Some(&headers), &body, LIMIT).unwrap(), event);
    }

    #[test]
    fn structured_mode_is_accepted_with_or_without_content_type() {
        let event = sample();
        let body = serde_json::to_vec(&event).unwrap();
        assert_eq!(decode(None, &body, LIMIT).unwrap(), event);
        let mut headers = HeaderMap::new();
        headers.insert("Content-Type", "Application/CloudEvents+JSON; charset=utf-8");
        assert_eq!(decode(Some(&headers), &body, LIMIT).unwrap(), event);
    }

    #[test]
    fn malformed_input_is_named() {
        let structured = |v: serde_json::Value| decode(None, v.to_string().as_bytes(), LIMIT);
        assert!(matches!(decode(None, b"{nope", LIMIT), Err(DecodeError::InvalidJson(_))));
        assert!(matches!(decode(None, b"[1]", LIMIT), Err(DecodeError::InvalidJson(_))));
        assert_eq!(
            decode(None, b"\xff\xfe{}", LIMIT),
            Err(DecodeError::InvalidUtf8("invalid utf-8 sequence of 1 bytes from index 0".into()))
        );
        let base = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
        for missing in ["id", "source", "type", "specversion"] {
            let mut v = base.clone();
            v.as_object_mut().unwrap().remove(missing);
            assert_eq!(
                structured(v),
                Err(DecodeError::MissingAttribute(match missing {
                    "id" => "id",
                    "source" => "source",
                    "type" => "type",
                    _ => "specversion",
                }))
            );
        }
        let mut v = base.clone();
        v["specversion"] = json!("0.3");
        assert_eq!(structured(v), Err(DecodeError::UnsupportedSpecVersion("0.3".into())));
        let mut v = base.clone();
        v["time"] = json!("yesterday");
        assert!(matches!(structured(v), Err(DecodeError::InvalidAttribute { .. })));

        let big = vec![b' '; LIMIT + 1];
        assert!(matches!(decode(None, &big, LIMIT), Err(DecodeError::TooLarge { .. })));

        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/xml");
        assert_eq!(
            decode(Some(&headers), b"<a/>", LIMIT),
            Err(DecodeError::UnsupportedContentType("application/xml".into()))
        );
        let (mut headers, _) = encode(&sample());
        headers.insert("content-type", "application/json");
        assert!(matches!(decode(Some(&headers), b"{", LIMIT), Err(DecodeError::InvalidJson(_))));
        headers.insert("ce-specversion", "0.3");
        assert!(matches!(
            decode(Some(&headers), b"{}", LIMIT),
            Err(DecodeError::UnsupportedSpecVersion(_))
        ));
    }

    #[test]
    fn message_ids_depend_on_source_and_id_only() {
        assert_eq!(message_id("/a", "1"), message_id("/a", "1"));
        assert_ne!(message_id("/a", "1"), message_id("/a", "2"));
        assert_ne!(message_id("/a1", ""), message_id("/a", "1"));
    }
}
