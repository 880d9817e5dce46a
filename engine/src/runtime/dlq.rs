//! The dead-letter queue: a JetStream stream of events whose run failed, or that could not be
//! decoded, each with headers that say which workflow, which run and why.
//!
//! Replay re-publishes the original event on the workflow's re-drive subject (which no other
//! workflow reads) with a `Muster-Redrive` header, then deletes the dead letter. The runner resets
//! a failed run it receives as a re-drive and runs it again from its first unfinished step.

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use bytes::Bytes;
use serde::Serialize;

use crate::bus::{BusError, Names, Published, publish_raw};

pub const H_WORKFLOW: &str = "Muster-Workflow";
pub const H_RUN_ID: &str = "Muster-Run-Id";
pub const H_KEY: &str = "Muster-Key";
pub const H_SUBJECT: &str = "Muster-Original-Subject";
pub const H_STREAM_SEQ: &str = "Muster-Stream-Seq";
pub const H_DELIVERED: &str = "Muster-Delivered";
pub const H_ATTEMPTS: &str = "Muster-Attempts";
pub const H_ERROR_KIND: &str = "Muster-Error-Kind";
pub const H_ERROR: &str = "Muster-Error";
pub const H_FAILED_AT: &str = "Muster-Failed-At";
/// Marks a re-drive: the run is reset and runs again even if it had failed.
pub const H_REDRIVE: &str = "Muster-Redrive";

/// Why and where a message is dead-lettered.
#[derive(Clone, Debug)]
pub struct DeadLetter<'a> {
    pub workflow: &'a str,
    pub run_id: Option<&'a str>,
    pub key: Option<&'a str>,
    pub subject: &'a str,
    pub stream_sequence: u64,
    pub delivered: i64,
    pub attempts: u32,
    pub error_kind: &'a str,
    pub error: &'a str,
}

/// Copies a message into the DLQ and waits for the PubAck. The message id is derived from the
/// original stream sequence and workflow, so doing it twice stores one entry.
///
/// # Errors
/// The DLQ stream did not acknowledge the publish.
pub async fn dead_letter(
    js: &Context,
    names: &Names,
    original: Option<&HeaderMap>,
    payload: Bytes,
    letter: &DeadLetter<'_>,
) -> Result<Published, BusError> {
    let mut headers = original.cloned().unwrap_or_default();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("{}:{}:{}", names.events_stream(), letter.stream_sequence, letter.workflow),
    );
    headers.insert(H_WORKFLOW, letter.workflow);
    if let Some(run_id) = letter.run_id {
        headers.insert(H_RUN_ID, run_id);
    }
    if let Some(key) = letter.key {
        headers.insert(H_KEY, key);
    }
    headers.insert(H_SUBJECT, letter.subject);
    headers.insert(H_STREAM_SEQ, letter.stream_sequence.to_string());
    headers.insert(H_DELIVERED, letter.delivered.to_string());
    headers.insert(H_ATTEMPTS, letter.attempts.to_string());
    headers.insert(H_ERROR_KIND, letter.error_kind);
    headers.insert(H_ERROR, one_line(letter.error));
    headers.insert(H_FAILED_AT, chrono::Utc::now().to_rfc3339());
    publish_raw(js, names.dlq_subject(letter.workflow), headers, payload).await
}

/// Header values are one line.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// A dead letter as listed.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct DlqEntry {
    pub seq: u64,
    pub workflow: String,
    pub run_id: Option<String>,
    pub key: Option<String>,
    pub kind: String,
    pub reason: String,
    pub original_subject: String,
    pub original_sequence: Option<u64>,
    pub attempts: Option<u32>,
    pub failed_at: Option<String>,
}

/// A dead letter with its message.
#[derive(Clone, Debug, Serialize)]
pub struct DlqMessage {
    #[serde(flatten)]
    pub entry: DlqEntry,
    pub headers: Vec<(String, String)>,
    /// The body as text when it is UTF-8.
    pub body: Option<String>,
    pub body_bytes: usize,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| v.as_str().to_owned())
}

fn entry(seq: u64, headers: &HeaderMap) -> DlqEntry {
    DlqEntry {
        seq,
        workflow: header(headers, H_WORKFLOW).unwrap_or_default(),
        run_id: header(headers, H_RUN_ID),
        key: header(headers, H_KEY),
        kind: header(headers, H_ERROR_KIND).unwrap_or_default(),
        reason: header(headers, H_ERROR).unwrap_or_default(),
        original_subject: header(headers, H_SUBJECT).unwrap_or_default(),
        original_sequence: header(headers, H_STREAM_SEQ).and_then(|s| s.parse().ok()),
        attempts: header(headers, H_ATTEMPTS).and_then(|s| s.parse().ok()),
        failed_at: header(headers, H_FAILED_AT),
    }
}

/// The DLQ stream's client side: list, show, replay, purge.
pub struct Dlq {
    js: Context,
    names: Names,
}

impl Dlq {
    pub fn new(js: Context, names: Names) -> Self {
        Self { js, names }
    }

    async fn stream(&self) -> Result<async_nats::jetstream::stream::Stream, BusError> {
        let name = self.names.dlq_stream();
        self.js.get_stream(&name).await.map_err(|e| {
            BusError::jetstream(format!("looking up stream {name} (has an engine run?)"), e)
        })
    }

    /// Dead letters, oldest first, at most `limit`.
    ///
    /// # Errors
    /// The DLQ stream is unreachable.
    pub async fn list(&self, limit: usize) -> Result<Vec<DlqEntry>, BusError> {
        let mut stream = self.stream().await?;
        let state = stream
            .info()
            .await
            .map_err(|e| BusError::jetstream("DLQ stream info", e))?
            .state
            .clone();
        let mut entries = Vec::new();
        if state.messages == 0 {
            return Ok(entries);
        }
        for seq in state.first_sequence..=state.last_sequence {
            if entries.len() >= limit {
                break;
            }
            match stream.get_raw_message(seq).await {
                Ok(message) => entries.push(entry(seq, &message.headers)),
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(BusError::jetstream(format!("reading DLQ message {seq}"), e)),
            }
        }
        Ok(entries)
    }

    /// One dead letter with its headers and body.
    ///
    /// # Errors
    /// No such sequence in the DLQ, or the stream is unreachable.
    pub async fn show(&self, seq: u64) -> Result<DlqMessage, BusError> {
        let message = self
            .stream()
            .await?
            .get_raw_message(seq)
            .await
            .map_err(|e| BusError::jetstream(format!("no dead letter {seq}"), e))?;
        let mut headers: Vec<(String, String)> = message
            .headers
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.as_str().to_owned())))
            .collect();
        headers.sort();
        Ok(DlqMessage {
            entry: entry(seq, &message.headers),
            headers,
            body: std::str::from_utf8(&message.payload).ok().map(str::to_owned),
            body_bytes: message.payload.len(),
        })
    }

    /// Re-drives one dead letter to its workflow and removes it from the DLQ.
    ///
    /// # Guarantees
    /// The dead letter is deleted only after the re-drive is stored (PubAck); the re-drive's
    /// message id is derived from the DLQ sequence, so replaying twice within the duplicate
    /// window re-drives once.
    ///
    /// # Errors
    /// No such dead letter, or JetStream did not acknowledge.
    pub async fn replay(&self, seq: u64) -> Result<Published, BusError> {
        let stream = self.stream().await?;
        let message = stream
            .get_raw_message(seq)
            .await
            .map_err(|e| BusError::jetstream(format!("no dead letter {seq}"), e))?;
        let workflow = header(&message.headers, H_WORKFLOW).unwrap_or_default();
        let key = header(&message.headers, H_KEY).unwrap_or_else(|| "_".into());
        let mut headers = HeaderMap::new();
        for (name, values) in message.headers.iter() {
            let name: &str = name.as_ref();
            if name.starts_with("Muster-") || name.eq_ignore_ascii_case("Nats-Msg-Id") {
                continue;
            }
            for value in values {
                headers.append(name, value.as_str());
            }
        }
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("redrive:{}:{seq}", self.names.dlq_stream()),
        );
        headers.insert(H_REDRIVE, format!("dlq:{seq}"));
        let subject = self.names.redrive_subject(&workflow, &key);
        let published = publish_raw(&self.js, subject, headers, message.payload).await?;
        stream.delete_message(seq).await.map_err(|e| {
            BusError::jetstream(format!("deleting dead letter {seq} after replay"), e)
        })?;
        Ok(published)
    }

    /// Removes every dead letter; returns how many.
    ///
    /// # Errors
    /// The DLQ stream is unreachable.
    pub async fn purge(&self) -> Result<u64, BusError> {
        let response = self
            .stream()
            .await?
            .purge()
            .await
            .map_err(|e| BusError::jetstream("purging the DLQ", e))?;
        Ok(response.purged)
    }
}

/// Whether a raw-message lookup failed because there is no such message.
pub(crate) fn is_not_found(e: &async_nats::jetstream::stream::RawMessageError) -> bool {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    match e.kind() {
        RawMessageErrorKind::NoMessageFound => true,
        RawMessageErrorKind::JetStream(e) => e.code() == 404,
        _ => false,
    }
}
