//! The environment's namespace records from the engine's HTTP API, with `If-None-Match`.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_NONE_MATCH};
use serde::Deserialize;
use workflows::records::NamespaceRecord;

/// How long one request to the API may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot reach the Muster API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the Muster API answered {status} for {url}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("the Muster API's answer for {url} is not a namespace list: {reason}")]
    Body { url: String, reason: String },
}

#[derive(Deserialize)]
struct NamespaceList {
    items: Vec<NamespaceRecord>,
}

/// Reads `GET /v1/namespaces?environment=ENV`, keeping the last answer and its ETag: an
/// unchanged list costs a 304 and no parsing.
pub struct RecordsSource {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    etag: Option<String>,
    records: Vec<NamespaceRecord>,
}

impl RecordsSource {
    pub fn new(api_url: &str, environment: &str, token: Option<&str>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("muster-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        RecordsSource {
            http,
            url: format!("{api_url}/v1/namespaces?environment={environment}"),
            token: token.map(str::to_owned),
            etag: None,
            records: Vec::new(),
        }
    }

    /// The records now; `true` with them when they changed since the last call.
    ///
    /// # Errors
    /// The API is unreachable, answers an error, or not a namespace list.
    pub async fn fetch(&mut self) -> Result<(Vec<NamespaceRecord>, bool), SourceError> {
        let mut request = self.http.get(&self.url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(etag) = &self.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let url = self.url.clone();
        let response = request
            .send()
            .await
            .map_err(|e| SourceError::Unreachable { url: url.clone(), reason: e.to_string() })?;
        if response.status() == StatusCode::NOT_MODIFIED {
            return Ok((self.records.clone(), false));
        }
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            return Err(SourceError::Status { url, status, body });
        }
        let etag = response.headers().get(ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let list: NamespaceList = response
            .json()
            .await
            .map_err(|e| SourceError::Body { url: url.clone(), reason: e.to_string() })?;
        self.etag = etag;
        self.records = list.items;
        Ok((self.records.clone(), true))
    }
}
