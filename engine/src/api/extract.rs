//! Request extractors whose rejections are problems: JSON bodies, `If-Match`, `If-None-Match`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::problem::{FieldProblem, Problem, ProblemKind};

/// A JSON request body: `application/json` or any `application/*+json` (such as
/// `application/merge-patch+json`). Syntax errors are 400 `malformed-json`; a body of the wrong
/// shape (unknown or missing field, wrong type) is 422 `invalid-body` naming the field; a body
/// over the limit is 413; another content type is 415.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        require_json(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(
                    ProblemKind::PayloadTooLarge,
                    "the request body exceeds the limit (http.max-body-bytes)",
                )
            } else {
                Problem::bad_request(rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// `application/json; charset=utf-8` → `application/json`.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
}

fn require_json(headers: &HeaderMap) -> Result<(), Problem> {
    match media_type(headers) {
        Some(media) if media == "application/json" || media.ends_with("+json") => Ok(()),
        Some(media) => Err(Problem::new(
            ProblemKind::UnsupportedMediaType,
            format!("content type {media:?} is not accepted; send application/json"),
        )),
        None => Err(Problem::new(
            ProblemKind::UnsupportedMediaType,
            "the request has no content type; send application/json",
        )),
    }
}

/// Parses JSON, telling malformed JSON (400) from JSON of the wrong shape (422).
///
/// # Errors
/// A problem naming the position or the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    use serde_json::error::Category;
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        Category::Data => wrong_shape(&e),
        Category::Syntax | Category::Eof | Category::Io => {
            Problem::new(ProblemKind::MalformedJson, format!("the body is not valid JSON: {e}"))
        }
    })
}

/// [`parse_json`] for a body already read as JSON (to look at it before typing it).
///
/// # Errors
/// 422 `invalid-body` naming the field, as [`parse_json`].
pub fn from_json_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Problem> {
    serde_json::from_value(value).map_err(|e| wrong_shape(&e))
}

/// A body of the wrong shape: 422 naming the field.
fn wrong_shape(e: &serde_json::Error) -> Problem {
    let message = strip_position(&e.to_string());
    Problem::new(ProblemKind::InvalidBody, format!("the body has the wrong shape: {message}"))
        .with_errors(vec![FieldProblem { path: field_of(&message), message }])
}

/// `unknown field `owner`, expected one of … at line 1 column 9` → without the position.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// The field a serde message names (`unknown field `x``, `missing field `x``), else `""`
/// (the body as a whole).
fn field_of(message: &str) -> String {
    for prefix in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some(end) = rest.find('`')
        {
            return rest[..end].to_owned();
        }
    }
    String::new()
}

/// What `If-Match` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfMatch {
    /// No `If-Match`: unconditional.
    Absent,
    /// `If-Match: *`: the resource must exist.
    Any,
    /// `If-Match: "<version>"`.
    Version(u64),
    /// An ETag this API never issues: it cannot match, so the answer is 412.
    Never,
}

impl IfMatch {
    /// Reads `If-Match`. Several ETags are allowed; the first that is one of ours counts.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let Some(value) = headers.get(header::IF_MATCH) else { return Self::Absent };
        let Ok(value) = value.to_str() else { return Self::Never };
        if value.trim() == "*" {
            return Self::Any;
        }
        value.split(',').find_map(|tag| parse_etag(tag.trim())).map_or(Self::Never, Self::Version)
    }

    /// The expected version to pass to the store.
    ///
    /// # Errors
    /// 412 when the header cannot match any version.
    pub fn expected(self) -> Result<Option<u64>, Problem> {
        match self {
            Self::Absent | Self::Any => Ok(None),
            Self::Version(v) => Ok(Some(v)),
            Self::Never => Err(Problem::new(
                ProblemKind::PreconditionFailed,
                "If-Match names no version of this resource (ETags look like \"3\")",
            )),
        }
    }
}

/// The version a write must find: the one `If-Match` named (412 when `what` has moved on), else
/// the one just read, so that the state the policy judged is the state that is changed.
///
/// # Errors
/// 412 when `expected` is not `current`.
pub fn version_to_write(what: &str, current: u64, expected: Option<u64>) -> Result<u64, Problem> {
    match expected {
        Some(expected) if expected != current => Err(Problem::new(
            ProblemKind::PreconditionFailed,
            format!("{what} is at resource version {current}, not {expected}"),
        )),
        _ => Ok(current),
    }
}

/// `"3"` → 3. Weak ETags (`W/"3"`) never match `If-Match` (strong comparison).
fn parse_etag(tag: &str) -> Option<u64> {
    tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// The ETag of a resource version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// Whether `If-None-Match` matches `current` (an ETag with quotes), so the answer is 304.
pub fn if_none_match(headers: &HeaderMap, current: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn if_match_forms() {
        assert_eq!(IfMatch::from_headers(&HeaderMap::new()), IfMatch::Absent);
        assert_eq!(IfMatch::from_headers(&with(header::IF_MATCH, "*")), IfMatch::Any);
        assert_eq!(IfMatch::from_headers(&with(header::IF_MATCH, "\"7\"")), IfMatch::Version(7));
        assert_eq!(IfMatch::from_headers(&with(header::IF_MATCH, "W/\"7\"")), IfMatch::Never);
        assert_eq!(
            IfMatch::from_headers(&with(header::IF_MATCH, "\"x\", \"2\"")),
            IfMatch::Version(2)
        );
        assert!(IfMatch::Never.expected().is_err());
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(if_none_match(&with(header::IF_NONE_MATCH, "W/\"ab\""), "\"ab\""));
        assert!(if_none_match(&with(header::IF_NONE_MATCH, "\"x\", \"ab\""), "\"ab\""));
        assert!(!if_none_match(&with(header::IF_NONE_MATCH, "\"x\""), "\"ab\""));
    }

    #[test]
    fn json_errors_are_classified() {
        let e = parse_json::<workflows::records::TeamSpec>(b"{\"slug\":").unwrap_err();
        assert_eq!(e.status, 400);
        let e = parse_json::<workflows::records::TeamSpec>(br#"{"slug":"a","name":"A","x":1}"#)
            .unwrap_err();
        assert_eq!(e.status, 422);
        assert_eq!(e.errors[0].path, "x");
        assert!(e.detail.contains("unknown field `x`"), "{}", e.detail);
    }
}
