//! The HTTP API's client for `engine teams` and `engine envs`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use reqwest::{Method, StatusCode, header};
use serde_json::Value;

use crate::config::Config;

/// How long one API call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Base URL of the engine's HTTP API.
    #[arg(
        long,
        env = "MUSTER_API_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub api: String,
    /// Bearer token for the API [default: the token a running `engine dev` wrote to
    /// <data-dir>/dev-token].
    #[arg(long, env = "MUSTER_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// A JSON answer and its ETag.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub etag: Option<String>,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of `--api`, sending `--token` (or `MUSTER_TOKEN`, or the dev token in the data
    /// dir) when there is one.
    pub fn new(args: &ApiArgs, config: &Config) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("muster-engine-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let token = args.token.clone().filter(|t| !t.trim().is_empty()).or_else(|| {
            std::fs::read_to_string(crate::auth::dev_token_file(&config.data_dir))
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
        });
        Ok(Self { http, base: args.api.trim_end_matches('/').to_owned(), token })
    }

    /// Sends a request and returns the JSON answer, or fails with the problem's words.
    ///
    /// # Errors
    /// The API is unreachable or answered an error (its problem detail and field errors are in
    /// the message).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, &Value)>,
        if_match: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, body)) = body {
            request =
                request.header(header::CONTENT_TYPE, content_type).body(serde_json::to_vec(body)?);
        }
        if let Some(tag) = if_match {
            request = request.header(header::IF_MATCH, tag);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the Muster API at {url} (is the engine running? --api / MUSTER_API_URL)"))?;
        let status = response.status();
        let etag =
            response.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = response.bytes().await?;
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if !status.is_success() {
            let mut text = describe_problem(status, &body);
            if status == StatusCode::UNAUTHORIZED {
                text.push_str(
                    "\n  (pass --token or set MUSTER_TOKEN; `engine dev` writes its token to \
                     <data-dir>/dev-token)",
                );
            }
            bail!("{text}");
        }
        Ok(Answer { status, body, etag })
    }

    /// Every item of a cursor-paginated list.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn list_all(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                None => format!("{path}?limit=1000"),
                Some(c) => format!("{path}?limit=1000&cursor={}", encode(c)),
            };
            let answer = self.call(Method::GET, &url, None, None).await?;
            if let Some(page) = answer.body["items"].as_array() {
                items.extend(page.iter().cloned());
            }
            match answer.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(items),
            }
        }
    }
}

/// Percent-encodes a path segment or query value.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn describe_problem(status: StatusCode, body: &Value) -> String {
    let mut text = match (body["title"].as_str(), body["detail"].as_str()) {
        (Some(title), Some(detail)) => format!("{} {title}: {detail}", status.as_u16()),
        _ => format!("{status}: {body}"),
    };
    for error in body["errors"].as_array().into_iter().flatten() {
        let path = error["path"].as_str().unwrap_or_default();
        let message = error["message"].as_str().unwrap_or_default();
        text.push_str(&format!("\n  {path}: {message}"));
    }
    text
}

/// Reads a JSON file (`-` for stdin).
///
/// # Errors
/// Unreadable file or invalid JSON.
pub fn read_json_file(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// `key=value` pairs into a JSON object.
///
/// # Errors
/// A pair without `=`.
pub fn pairs(items: &[String]) -> anyhow::Result<serde_json::Map<String, Value>> {
    items
        .iter()
        .map(|item| {
            let (k, v) =
                item.split_once('=').with_context(|| format!("{item:?} is not KEY=VALUE"))?;
            Ok((k.to_owned(), Value::String(v.to_owned())))
        })
        .collect()
}

/// Prints JSON, pretty.
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
