//! CloudEvents 1.0 ⇄ NATS messages.
//!
//! Accepted on input:
//! - binary mode: `ce-specversion`, `ce-id`, `ce-source`, `ce-type` (required), `ce-subject`,
//!   `ce-time`, `ce-dataschema` and any other `ce-<extension>` header; `content-type` is the data's
//!   content type: JSON (`application/json`, `*/*+json`), text (`text/*`) or bytes
//!   (`application/octet-stream`); the body is the data, and an empty body is no data;
//! - structured mode: a JSON CloudEvent in the body, with `content-type:
//!   application/cloudevents+json` or no content type at all. Its data must have one of the
//!   content types above and is read as binary mode would carry it, so that a decoded event
//!   encodes and decodes back to itself.
//!
//! Every attribute travels in a NATS header, so [`decode`] refuses what a header cannot carry
//! unchanged: line breaks and other control characters (the NATS client panics on CR and LF),
//! whitespace at either end (the client trims it on receipt), and extension names that are not
//! lowercase letters and digits (the CloudEvents naming rule, which also makes them header names).
//!
//! Anything else is a [`DecodeError`] that names what is wrong; the runtime sends such messages to
//! the DLQ with that reason. Muster itself publishes binary mode.
//!
//! # Guarantees
//! - [`encode`] never panics: what a header cannot carry is percent-escaped, which only an event
//!   that [`validate`] refuses needs.
//! - Every event [`decode`] returns passes [`validate`], and `decode(encode(event))` gives it back
//!   (extension values as strings, since headers carry no types).

use std::borrow::Cow;
use std::fmt::Write as _;

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use cloudevents::event::{AttributeValue, Data, ExtensionValue, SpecVersion};
use cloudevents::{AttributesReader, AttributesWriter, Event, EventBuilder, EventBuilderV10};
use sha2::{Digest, Sha256};

const STRUCTURED_JSON: &str = "application/cloudevents+json";
const JSON: &str = "application/json";
const OCTET_STREAM: &str = "application/octet-stream";
const CE_PREFIX: &str = "ce-";
/// The spec's own attribute names (and the JSON format's `data`): no extension may take one.
const RESERVED_NAMES: [&str; 9] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
];

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
    /// The name is always a valid attribute name, never the offending text.
    #[error("attribute `{0}` contains a line break or control character")]
    ControlCharacter(String),
}

/// Every [`DecodeError::code`]: dead-letter kinds that are about the message's bytes, not about a
/// run, so re-driving the same bytes can only fail the same way.
pub const DECODE_ERROR_CODES: [&str; 7] = [
    "too-large",
    "invalid-utf8",
    "invalid-json",
    "missing-attribute",
    "unsupported-specversion",
    "unsupported-content-type",
    "invalid-attribute",
];

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
            Self::InvalidAttribute { .. } | Self::ControlCharacter(_) => "invalid-attribute",
        }
    }

    fn invalid(name: &str, reason: impl Into<String>) -> Self {
        // Extension names come from the sender: never put their control characters in a reason.
        Self::InvalidAttribute { name: name.escape_debug().to_string(), reason: reason.into() }
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

/// Checks that every attribute of `event` survives [`encode`] and [`decode`] unchanged: version
/// 1.0, `id`, `source` and `type` present, optional attributes not empty, no control characters
/// and no whitespace at either end of any string, extension names of lowercase letters and
/// digits, and a data content type that binary mode can carry.
///
/// # Errors
/// A [`DecodeError`] naming the first attribute that fails.
pub fn validate(event: &Event) -> Result<(), DecodeError> {
    if event.specversion() != SpecVersion::V10 {
        return Err(DecodeError::UnsupportedSpecVersion(event.specversion().to_string()));
    }
    for (name, value) in
        [("id", event.id()), ("source", event.source().as_str()), ("type", event.ty())]
    {
        if value.is_empty() {
            return Err(DecodeError::MissingAttribute(name));
        }
        check_value(name, value)?;
    }
    let optional = [
        ("subject", event.subject()),
        ("datacontenttype", event.datacontenttype()),
        ("dataschema", event.dataschema().map(url::Url::as_str)),
    ];
    for (name, value) in optional {
        match value {
            Some("") => return Err(DecodeError::invalid(name, "is empty; leave it out instead")),
            Some(value) => check_value(name, value)?,
            None => {}
        }
    }
    if let Some(content_type) = event.datacontenttype() {
        data_kind(content_type)?;
    }
    for (name, value) in event.iter_extensions() {
        check_extension_name(name)?;
        if let ExtensionValue::String(value) = value {
            check_value(name, value)?;
        }
    }
    Ok(())
}

/// Encodes an event in binary mode: attributes as `ce-*` headers, the data as the body, and the
/// event's [`message_id`] as `Nats-Msg-Id`.
///
/// Never panics: a name or value that a NATS header cannot carry is percent-escaped (see
/// [`validate`]; every decoded event passes it and needs no escaping).
pub fn encode(event: &Event) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    for (name, value) in event.iter() {
        match (name, value) {
            ("datacontenttype", _) => {} // the content-type header, below
            ("time", AttributeValue::Time(time)) => insert_header(
                &mut headers,
                "ce-time",
                &time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            ),
            (name, value) => {
                insert_header(&mut headers, &format!("{CE_PREFIX}{name}"), &value.to_string())
            }
        }
    }
    if let Some(content_type) = wire_content_type(event.datacontenttype(), event.data()) {
        insert_header(&mut headers, "content-type", content_type);
    }
    let body = event.data().map(data_body).unwrap_or_default();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id(event.source(), event.id()));
    (headers, body)
}

/// The content type binary mode sends: the event's, or JSON for JSON data without one.
fn wire_content_type<'a>(content_type: Option<&'a str>, data: Option<&Data>) -> Option<&'a str> {
    content_type.or(matches!(data, Some(Data::Json(_))).then_some(JSON))
}

fn data_body(data: &Data) -> Bytes {
    match data {
        Data::Json(value) => Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        Data::String(text) => Bytes::from(text.clone()),
        Data::Binary(bytes) => Bytes::from(bytes.clone()),
    }
}

/// Adds a header, percent-escaping what the NATS client would refuse (and panic on): in the
/// name anything but visible ASCII other than `:`, in the value control characters.
fn insert_header(headers: &mut HeaderMap, name: &str, value: &str) {
    let name = percent_escape(name, |c| c.is_ascii_graphic() && c != ':');
    let value = header_safe(value);
    // Both parse by construction; the fallible parse keeps the client's assertion out of reach.
    if let (Ok(name), Ok(value)) = (name.parse::<HeaderName>(), value.parse::<HeaderValue>()) {
        headers.insert(name, value);
    }
}

/// `text` as a header value the NATS client always accepts: control characters (CR and LF end a
/// header, and the client panics on them) percent-escaped as `%XX` per UTF-8 byte.
pub fn header_safe(text: &str) -> Cow<'_, str> {
    percent_escape(text, |c| !c.is_control())
}

/// `text` with every character that `keep` refuses written as `%XX` per UTF-8 byte.
fn percent_escape(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if text.chars().all(&keep) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if keep(c) {
            escaped.push(c);
        } else {
            for byte in c.encode_utf8(&mut [0; 4]).bytes() {
                let _ = write!(escaped, "%{byte:02X}");
            }
        }
    }
    Cow::Owned(escaped)
}

/// A value reaches the other side of a NATS header unchanged only without control characters
/// (CR and LF would end the header) and without whitespace at either end (trimmed on receipt).
fn check_value(name: &str, value: &str) -> Result<(), DecodeError> {
    if value.chars().any(char::is_control) {
        return Err(DecodeError::ControlCharacter(name.to_owned()));
    }
    if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        return Err(DecodeError::invalid(
            name,
            "starts or ends with whitespace, which a NATS header does not keep",
        ));
    }
    Ok(())
}

/// CloudEvents extension names are lowercase letters and digits (the spec suggests at most 20,
/// which is not enforced); such a name is also a valid NATS header name after `ce-`.
fn check_extension_name(name: &str) -> Result<(), DecodeError> {
    let reason = if name.is_empty() {
        "an extension name cannot be empty"
    } else if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        "extension names are lowercase letters a-z and digits 0-9"
    } else if RESERVED_NAMES.contains(&name) {
        "this name is a CloudEvents attribute, not an extension"
    } else {
        return Ok(());
    };
    Err(DecodeError::invalid(name, reason))
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

/// The kinds of data Muster reads, by content type.
enum DataKind {
    Json,
    Text,
    Bytes,
}

fn data_kind(content_type: &str) -> Result<DataKind, DecodeError> {
    let media = media_type(content_type);
    if media == JSON || media.ends_with("+json") {
        Ok(DataKind::Json)
    } else if media.starts_with("text/") {
        Ok(DataKind::Text)
    } else if media == OCTET_STREAM {
        Ok(DataKind::Bytes)
    } else {
        Err(DecodeError::UnsupportedContentType(content_type.to_owned()))
    }
}

/// The data content type and data of a binary-mode body: no content type means bytes, and an
/// empty body means no data.
fn data_from_body(
    content_type: Option<&str>,
    payload: &[u8],
) -> Result<(Option<String>, Option<Data>), DecodeError> {
    let Some(content_type) = content_type.or((!payload.is_empty()).then_some(OCTET_STREAM)) else {
        return Ok((None, None));
    };
    let kind = data_kind(content_type)?;
    let data = match kind {
        _ if payload.is_empty() => None,
        DataKind::Json => Some(Data::Json(
            serde_json::from_str(utf8(payload)?)
                .map_err(|e| DecodeError::InvalidJson(e.to_string()))?,
        )),
        DataKind::Text => Some(Data::String(utf8(payload)?.to_owned())),
        DataKind::Bytes => Some(Data::Binary(payload.to_vec())),
    };
    Ok((Some(content_type.to_owned()), data))
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
        if matches!(
            extension,
            "specversion" | "id" | "source" | "type" | "subject" | "time" | "dataschema"
        ) {
            continue; // dataschema is set after building: it must parse as a URL
        }
        check_extension_name(extension)?;
        let value = values.first().map(|v| v.as_str().to_owned()).unwrap_or_default();
        builder = builder.extension(extension, ExtensionValue::String(value));
    }
    let mut event = builder.build().map_err(|e| DecodeError::invalid("event", e.to_string()))?;
    if let Ok(schema) = attr("dataschema") {
        // Checked before parsing: the URL parser drops line breaks and trims silently.
        check_value("dataschema", &schema)?;
        let url = url::Url::parse(&schema)
            .map_err(|e| DecodeError::invalid("dataschema", e.to_string()))?;
        event.set_dataschema(Some(url));
    }
    if let Some(content_type) = content_type {
        check_value("datacontenttype", content_type)?;
    }
    let (datacontenttype, data) = data_from_body(content_type, payload)?;
    event.set_datacontenttype(datacontenttype);
    if let Some(data) = data {
        event.set_data_unchecked(data);
    }
    validate(&event)?;
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
    // Checked on the raw text, before the SDK reads it: the URL parser would drop line breaks
    // from dataschema silently, and the content type is looked at before `validate` runs.
    for (name, value) in object {
        if matches!(name.as_str(), "specversion" | "data" | "data_base64") {
            continue;
        }
        if !RESERVED_NAMES.contains(&name.as_str()) {
            check_extension_name(name)?;
        }
        if let Some(text) = value.as_str() {
            check_value(name, text)?;
        }
    }
    let mut event: Event =
        serde_json::from_value(value).map_err(|e| DecodeError::invalid("event", e.to_string()))?;
    if event.subject() == Some("") {
        event.set_subject(None::<String>); // as binary mode reads an empty `ce-subject`
    }
    as_binary_mode_carries_it(&mut event)?;
    validate(&event)?;
    Ok(event)
}

/// Puts the data of a structured event in the form binary mode carries it (the content type
/// decides the kind of data; no data for an empty body), so that encoding and decoding gives it
/// back, and refuses data that binary mode could not carry.
fn as_binary_mode_carries_it(event: &mut Event) -> Result<(), DecodeError> {
    let (content_type, schema, data) = event.take_data();
    let wire_type = wire_content_type(content_type.as_deref(), data.as_ref());
    let body = data.as_ref().map(data_body).unwrap_or_default();
    let (content_type, data) = data_from_body(wire_type, &body).map_err(|e| match e {
        DecodeError::InvalidUtf8(reason) | DecodeError::InvalidJson(reason) => {
            DecodeError::invalid("data", format!("{reason} (content type {wire_type:?})"))
        }
        other => other,
    })?;
    event.set_datacontenttype(content_type);
    event.set_dataschema(schema);
    if let Some(data) = data {
        event.set_data_unchecked(data);
    }
    Ok(())
}

fn parse_time(time: &str) -> Result<DateTime<Utc>, DecodeError> {
    DateTime::parse_from_rfc3339(time)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| DecodeError::invalid("time", format!("{time:?}: {e}")))
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

    /// Control characters a sender might put in an attribute; CR and LF panic the NATS client.
    const CONTROLS: [&str; 6] = ["a\r\nb", "a\nb", "a\0b", "a\tb", "a\u{7f}b", "a\u{85}b"];

    fn structured_with(name: &str, value: &str) -> Result<Event, DecodeError> {
        let mut event = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
        event[name] = json!(value);
        decode(None, event.to_string().as_bytes(), LIMIT)
    }

    #[test]
    fn control_characters_are_refused_in_every_structured_attribute() {
        for name in ["id", "source", "type", "subject", "datacontenttype", "traceparent"] {
            for bad in CONTROLS {
                assert_eq!(
                    structured_with(name, bad),
                    Err(DecodeError::ControlCharacter(name.into())),
                    "{name} = {bad:?}"
                );
            }
        }
        // The URL parser would drop the line break silently: the raw text is checked.
        assert_eq!(
            structured_with("dataschema", "https://example.com/a\r\nb"),
            Err(DecodeError::ControlCharacter("dataschema".into()))
        );
        assert_eq!(
            structured_with("id", "a\r\nb").unwrap_err().to_string(),
            "attribute `id` contains a line break or control character"
        );
    }

    #[test]
    fn control_characters_are_refused_in_every_binary_attribute() {
        // NATS headers cannot carry CR or LF at all; every other control character can.
        for name in ["id", "source", "type", "subject", "dataschema", "traceparent"] {
            for bad in ["a\0b", "a\tb", "a\u{7f}b", "a\u{85}b", "https://example.com/\u{1}"] {
                let (mut headers, body) = encode(&sample());
                headers.insert(format!("ce-{name}").as_str(), bad);
                assert_eq!(
                    decode(Some(&headers), &body, LIMIT),
                    Err(DecodeError::ControlCharacter(name.into())),
                    "{name} = {bad:?}"
                );
            }
        }
        let (mut headers, body) = encode(&sample());
        for bad in ["application/json;\tcharset=utf-8", "application/\u{1}json"] {
            headers.insert("content-type", bad);
            assert_eq!(
                decode(Some(&headers), &body, LIMIT),
                Err(DecodeError::ControlCharacter("datacontenttype".into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn whitespace_at_either_end_is_refused() {
        for bad in [" a", "a ", "\u{a0}a", "a\u{3000}"] {
            let refused = structured_with("id", bad).unwrap_err();
            assert!(
                matches!(&refused, DecodeError::InvalidAttribute { name, .. } if name == "id"),
                "{bad:?}: {refused}"
            );
        }
        assert!(structured_with("id", "a b").is_ok(), "inner spaces are fine");
    }

    #[test]
    fn extension_names_are_lowercase_letters_and_digits() {
        let long = "a".repeat(64); // longer than the spec's advice of 20, still accepted
        assert!(structured_with(&long, "v").unwrap().extension(&long).is_some());
        assert!(structured_with("ext2", "v").is_ok());
        for bad in ["Trace", "trace-parent", "trace_parent", "a:b", "a b", "é", "a\r\nb", ""] {
            let refused = structured_with(bad, "v").unwrap_err();
            assert_eq!(refused.code(), "invalid-attribute", "{bad:?}");
            assert!(!refused.to_string().contains(['\r', '\n']), "{refused}");
        }
        // Binary mode: header names are case-insensitive, but reserved and empty names are not
        // extensions.
        for (header, name) in [("ce-datacontenttype", "datacontenttype"), ("ce-data", "data")] {
            let (mut headers, body) = encode(&sample());
            headers.insert(header, "x");
            assert!(
                matches!(decode(Some(&headers), &body, LIMIT),
                    Err(DecodeError::InvalidAttribute { name: n, .. }) if n == name),
                "{header}"
            );
        }
        let (mut headers, body) = encode(&sample());
        headers.insert("ce-", "x");
        assert_eq!(decode(Some(&headers), &body, LIMIT).unwrap_err().code(), "invalid-attribute");
        let mut event = sample();
        event.remove_extension("traceparent");
        let (mut headers, body) = encode(&event);
        headers.insert("CE-TraceParent", "00-abc-def-01");
        assert_eq!(decode(Some(&headers), &body, LIMIT).unwrap(), sample());
    }

    #[test]
    fn structured_data_is_read_as_binary_mode_carries_it() {
        let base = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
        let structured = |extra: serde_json::Value| {
            let mut event = base.clone();
            event.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            decode(None, event.to_string().as_bytes(), LIMIT)
        };
        // JSON data without a content type is JSON, as binary mode says it.
        let event = structured(json!({"data": {"a": 1}})).unwrap();
        assert_eq!(event.datacontenttype(), Some(JSON));
        // A content type binary mode cannot carry is refused here rather than after publishing.
        assert_eq!(
            structured(json!({"datacontenttype": "application/xml", "data": "<a/>"})),
            Err(DecodeError::UnsupportedContentType("application/xml".into()))
        );
        // Bytes under a JSON content type must be JSON.
        assert!(matches!(
            structured(json!({"datacontenttype": JSON, "data_base64": "/w=="})),
            Err(DecodeError::InvalidAttribute { name, .. }) if name == "data"
        ));
        // No data, or empty data, is no data; an empty subject is no subject.
        let event = structured(json!({"datacontenttype": JSON, "subject": ""})).unwrap();
        assert_eq!(
            (event.datacontenttype(), event.data(), event.subject()),
            (Some(JSON), None, None)
        );
        let event = structured(json!({"datacontenttype": "text/plain", "data": ""})).unwrap();
        assert_eq!(event.data(), None);
        let mut headers = HeaderMap::new();
        headers.insert("ce-specversion", "1.0");
        headers.insert("ce-id", "1");
        headers.insert("ce-source", "/s");
        headers.insert("ce-type", "t");
        headers.insert("content-type", JSON);
        assert_eq!(decode(Some(&headers), b"", LIMIT).unwrap().data(), None);
    }

    #[test]
    fn encode_escapes_what_a_header_cannot_carry_instead_of_panicking() {
        let mut event = sample();
        event.set_id("a\r\nb");
        event.set_extension("Bad:Name\n", "x\ny");
        assert_eq!(validate(&event), Err(DecodeError::ControlCharacter("id".into())));
        let (headers, _) = encode(&event);
        assert_eq!(headers.get("ce-id").unwrap().as_str(), "a%0D%0Ab");
        assert_eq!(headers.get("ce-Bad%3AName%0A").unwrap().as_str(), "x%0Ay");
        // The message id is still the event's own.
        assert_eq!(
            headers.get(async_nats::header::NATS_MESSAGE_ID).unwrap().as_str(),
            message_id("/teams-api", "a\r\nb")
        );
    }

    #[test]
    fn header_safe_values_always_parse() {
        assert!(matches!(header_safe("team-a"), Cow::Borrowed("team-a")));
        assert_eq!(header_safe("a\r\nb\0c\u{85}"), "a%0D%0Ab%00c%C2%85");
        assert!(header_safe("x\ny").parse::<HeaderValue>().is_ok());
    }

    #[test]
    fn every_decode_error_code_is_listed() {
        let errors = [
            DecodeError::TooLarge { size: 2, limit: 1 },
            DecodeError::InvalidUtf8(String::new()),
            DecodeError::InvalidJson(String::new()),
            DecodeError::MissingAttribute("id"),
            DecodeError::UnsupportedSpecVersion(String::new()),
            DecodeError::UnsupportedContentType(String::new()),
            DecodeError::invalid("x", "y"),
            DecodeError::ControlCharacter("id".into()),
        ];
        for error in errors {
            assert!(DECODE_ERROR_CODES.contains(&error.code()), "{error:?}");
        }
    }

    #[test]
    fn validate_refuses_what_would_not_come_back() {
        assert_eq!(validate(&sample()), Ok(()));
        let mut event = sample();
        event.set_subject(Some(""));
        assert!(matches!(validate(&event), Err(DecodeError::InvalidAttribute { .. })));
        let mut event = sample();
        event.set_extension("id", "other");
        assert!(matches!(validate(&event), Err(DecodeError::InvalidAttribute { .. })));
        let mut event = sample();
        event.set_datacontenttype(Some("application/xml"));
        assert!(matches!(validate(&event), Err(DecodeError::UnsupportedContentType(_))));
    }

    /// Arbitrary input never panics the decoder; whatever it accepts, `encode` carries over NATS
    /// and `decode` gives back.
    mod properties {
        use proptest::prelude::*;
        use proptest::test_runner::TestCaseError;

        use super::super::*;
        use super::LIMIT;

        fn config() -> ProptestConfig {
            // No regression files: they would land beside the source.
            ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
        }

        /// Text a well-behaved sender writes: inner spaces, `:`, `%` and non-ASCII are fine.
        fn clean() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9/._:%é😀-]([a-zA-Z0-9/._:% é😀-]{0,22}[a-zA-Z0-9/._:%é😀-])?"
        }

        /// Text as a careless or hostile sender writes it: line breaks, NUL, other controls,
        /// Unicode whitespace, non-ASCII, empty, long. Mostly clean, so that whole events often
        /// are and the round trip is exercised.
        fn text() -> impl Strategy<Value = String> {
            let nasty = prop::collection::vec(
                prop_oneof![
                    Just('\r'),
                    Just('\n'),
                    Just('\0'),
                    Just('\t'),
                    Just(' '),
                    Just('\u{7f}'),
                    Just('\u{85}'),
                    Just('\u{a0}'),
                    Just('\u{2028}'),
                    Just(':'),
                    Just('%'),
                    Just('é'),
                    Just('😀'),
                    any::<char>(),
                    proptest::char::range('a', 'z'),
                ],
                0..24,
            )
            .prop_map(String::from_iter);
            prop_oneof![
                12 => clean(),
                1 => nasty,
                1 => any::<String>(),
                1 => "[a-z]{300,2000}",
            ]
        }

        fn extension_name() -> impl Strategy<Value = String> {
            prop_oneof![
                8 => "[a-z0-9]{1,30}",
                1 => text(),
                1 => "[A-Za-z0-9_-]{1,12}",
                1 => prop::sample::select(RESERVED_NAMES.to_vec()).prop_map(String::from),
            ]
        }

        fn time() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("2026-11-27T10:00:00Z".to_owned()),
                Just("2026-11-27T10:00:00.123456789+02:00".to_owned()),
                Just("1970-01-01T00:00:00-23:59".to_owned()),
                text(),
            ]
        }

        fn dataschema() -> impl Strategy<Value = String> {
            prop_oneof![4 => "https://example\\.com/[a-zA-Z0-9/%]{0,12}", 1 => text()]
        }

        fn content_type() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(JSON.to_owned()),
                Just("text/plain; charset=utf-8".to_owned()),
                Just(OCTET_STREAM.to_owned()),
                Just("application/vnd.muster+json".to_owned()),
                Just("Text/CSV".to_owned()),
                text(),
            ]
        }

        /// `bytes` as the SDK writes them in a structured event.
        fn base64(bytes: Vec<u8>) -> serde_json::Value {
            let mut event = Event::default();
            event.set_data_unchecked(bytes);
            serde_json::to_value(&event).expect("JSON")["data_base64"].take()
        }

        /// The data members of a structured event.
        fn structured_data() -> impl Strategy<Value = Option<(&'static str, serde_json::Value)>> {
            prop_oneof![
                Just(None),
                text().prop_map(|t| Some(("data", serde_json::json!(t)))),
                (text(), any::<i64>())
                    .prop_map(|(t, n)| Some(("data", serde_json::json!({"t": t, "n": n})))),
                prop::collection::vec(any::<u8>(), 0..48)
                    .prop_map(|bytes| Some(("data_base64", base64(bytes)))),
                "[A-Za-z0-9+/=]{0,12}".prop_map(|t| Some(("data_base64", serde_json::json!(t)))),
            ]
        }

        prop_compose! {
            fn structured()(
                (id, source, ty) in (text(), text(), text()),
                subject in proptest::option::of(text()),
                time in proptest::option::of(time()),
                datacontenttype in proptest::option::of(content_type()),
                dataschema in proptest::option::of(dataschema()),
                data in structured_data(),
                extensions in prop::collection::vec((extension_name(), text()), 0..4),
            ) -> serde_json::Value {
                let mut event = serde_json::json!({"specversion": "1.0", "id": id, "source": source, "type": ty});
                let object = event.as_object_mut().expect("an object");
                for (name, value) in [("subject", subject), ("time", time), ("datacontenttype", datacontenttype), ("dataschema", dataschema)] {
                    if let Some(value) = value {
                        object.insert(name.into(), value.into());
                    }
                }
                if let Some((name, value)) = data {
                    object.insert(name.into(), value);
                }
                for (name, value) in extensions {
                    object.entry(name).or_insert(value.into());
                }
                event
            }
        }

        prop_compose! {
            /// A binary-mode message as NATS could deliver it: headers it cannot carry are left
            /// out, as the sender's client would have refused them.
            fn binary()(
                (id, source, ty) in (text(), text(), text()),
                subject in proptest::option::of(text()),
                time in proptest::option::of(time()),
                datacontenttype in proptest::option::of(content_type()),
                dataschema in proptest::option::of(dataschema()),
                extensions in prop::collection::vec((extension_name(), text()), 0..4),
                body in prop_oneof![
                    Just(Vec::new()),
                    text().prop_map(String::into_bytes),
                    Just(br#"{"a": [1, "b"]}"#.to_vec()),
                    prop::collection::vec(any::<u8>(), 0..48),
                ],
            ) -> (HeaderMap, Vec<u8>) {
                let mut headers = HeaderMap::new();
                let mut put = |name: &str, value: &str| {
                    if let (Ok(name), Ok(value)) = (name.parse::<HeaderName>(), value.parse::<HeaderValue>()) {
                        headers.insert(name, value);
                    }
                };
                put("ce-specversion", "1.0");
                put("ce-id", &id);
                put("ce-source", &source);
                put("ce-type", &ty);
                for (name, value) in [("ce-subject", subject), ("ce-time", time), ("content-type", datacontenttype), ("ce-dataschema", dataschema)] {
                    if let Some(value) = value {
                        put(name, &value);
                    }
                }
                for (name, value) in extensions {
                    put(&format!("ce-{name}"), &value);
                }
                (headers, body)
            }
        }

        prop_compose! {
            /// An event built without the decoder, as a workflow or the journal might hold one.
            fn any_event()(
                (id, source, ty) in (text(), text(), text()),
                subject in proptest::option::of(text()),
                datacontenttype in proptest::option::of(content_type()),
                extensions in prop::collection::vec((extension_name(), text()), 0..4),
            ) -> Event {
                let mut event = Event::default();
                event.set_id(id);
                event.set_source(source);
                event.set_type(ty);
                event.set_subject(subject);
                event.set_datacontenttype(datacontenttype);
                for (name, value) in extensions {
                    event.set_extension(&name, value);
                }
                event
            }
        }

        /// The headers as the NATS client writes them (`HeaderMap::to_bytes`) and reads them
        /// back (`connection.rs` in async-nats 0.51): `name: value` lines, values trimmed.
        fn over_the_wire(headers: &HeaderMap) -> Result<HeaderMap, TestCaseError> {
            let mut wire = String::from("NATS/1.0\r\n");
            for (name, values) in headers.iter() {
                for value in values {
                    wire.push_str(&format!("{name}: {}\r\n", value.as_str()));
                }
            }
            wire.push_str("\r\n");
            let mut received = HeaderMap::new();
            let mut lines = wire.lines().skip(1).peekable();
            while let Some(line) = lines.next() {
                if line.is_empty() {
                    continue;
                }
                let (name, value) = line
                    .split_once(':')
                    .ok_or_else(|| TestCaseError::fail(format!("no `:` in {line:?}")))?;
                let name: HeaderName = name
                    .parse()
                    .map_err(|_| TestCaseError::fail(format!("bad header name {name:?}")))?;
                let mut value = value.trim_start().to_owned();
                while let Some(more) = lines.next_if(|s| s.starts_with(char::is_whitespace)) {
                    value.push_str(more);
                }
                value.truncate(value.trim_end().len());
                let value: HeaderValue = value
                    .parse()
                    .map_err(|_| TestCaseError::fail(format!("bad header value {value:?}")))?;
                received.append(name, value);
            }
            Ok(received)
        }

        /// Headers carry no types: an integer or boolean extension comes back as its text.
        fn untyped(event: &Event) -> Event {
            let mut event = event.clone();
            let extensions: Vec<(String, String)> =
                event.iter_extensions().map(|(k, v)| (k.to_owned(), v.to_string())).collect();
            for (name, value) in extensions {
                event.set_extension(&name, value);
            }
            event
        }

        fn assert_round_trip(event: &Event) -> Result<(), TestCaseError> {
            prop_assert_eq!(validate(event), Ok(()));
            let (headers, body) = encode(event);
            let received = over_the_wire(&headers)?;
            let back = decode(Some(&received), &body, usize::MAX);
            prop_assert_eq!(back.map(|e| untyped(&e)), Ok(untyped(event)));
            Ok(())
        }

        fn assert_one_line(error: &DecodeError) -> Result<(), TestCaseError> {
            let message = error.to_string();
            prop_assert!(!message.contains(['\r', '\n', '\0']), "{:?}", message);
            Ok(())
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn structured_events_decode_or_are_refused_and_round_trip(event in structured()) {
                let body = serde_json::to_vec(&event).expect("JSON");
                match decode(None, &body, LIMIT) {
                    Ok(decoded) => assert_round_trip(&decoded)?,
                    Err(error) => assert_one_line(&error)?,
                }
            }

            #[test]
            fn binary_events_decode_or_are_refused_and_round_trip((headers, body) in binary()) {
                match decode(Some(&headers), &body, LIMIT) {
                    Ok(decoded) => assert_round_trip(&decoded)?,
                    Err(error) => assert_one_line(&error)?,
                }
            }

            #[test]
            fn any_event_encodes_without_panic_and_valid_ones_round_trip(event in any_event()) {
                let (headers, _) = encode(&event);
                over_the_wire(&headers)?;
                if validate(&event).is_ok() {
                    assert_round_trip(&event)?;
                }
            }
        }
    }
}
