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

use crate::bus::{BusError, Names, Published, codec, publish_raw};

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
/// On a dead letter whose copy did not fit the server's `max_payload`: how many bytes of the
/// original body were dropped (the original stays in the events stream at `Muster-Stream-Seq`
/// until its retention removes it).
pub const H_TRUNCATED: &str = "Muster-Truncated";

/// Kind of a dead letter whose event arrived on a subject its type does not match.
pub const KIND_TYPE_MISMATCH: &str = "type-mismatch";
/// Kind of a dead letter whose handling kept failing on infrastructure (journal, DLQ publish).
pub const KIND_INFRASTRUCTURE: &str = "infrastructure";

/// Whether a dead letter of `kind` is about the message itself (its bytes, or a type that does not
/// match its subject) rather than a run's failure: re-driving the same message can only be
/// dead-lettered again, so replay refuses it unless forced.
pub fn never_replays(kind: &str) -> bool {
    kind == KIND_TYPE_MISMATCH || crate::bus::codec::DECODE_ERROR_CODES.contains(&kind)
}

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
/// Every value Muster adds is made header-safe ([`codec::header_safe`]), so a key or an error
/// with line breaks cannot make the client refuse the copy. A copy that would exceed the server's
/// `max_payload` is still stored: its body is cut to fit, and `Muster-Truncated` and the reason
/// say how many bytes were dropped (the original headers too, if even they do not fit).
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
    let max_payload = js.client().max_payload();
    let (headers, payload) = letter_message(names, original, payload, letter, max_payload);
    publish_raw(js, names.dlq_subject(letter.workflow), headers, payload).await
}

/// The DLQ copy of a message: its headers plus Muster's, its body cut to fit `max_payload`.
fn letter_message(
    names: &Names,
    original: Option<&HeaderMap>,
    payload: Bytes,
    letter: &DeadLetter<'_>,
    max_payload: usize,
) -> (HeaderMap, Bytes) {
    let build = |original: Option<&HeaderMap>, error: &str| {
        let mut headers = original.cloned().unwrap_or_default();
        let id =
            format!("{}:{}:{}", names.events_stream(), letter.stream_sequence, letter.workflow);
        headers.insert(async_nats::header::NATS_MESSAGE_ID, codec::header_safe(&id).as_ref());
        let mut set = |name: &str, value: &str| {
            headers.insert(name, codec::header_safe(value).as_ref());
        };
        set(H_WORKFLOW, letter.workflow);
        if let Some(run_id) = letter.run_id {
            set(H_RUN_ID, run_id);
        }
        if let Some(key) = letter.key {
            set(H_KEY, key);
        }
        set(H_SUBJECT, letter.subject);
        set(H_STREAM_SEQ, &letter.stream_sequence.to_string());
        set(H_DELIVERED, &letter.delivered.to_string());
        set(H_ATTEMPTS, &letter.attempts.to_string());
        set(H_ERROR_KIND, letter.error_kind);
        set(H_ERROR, error);
        set(H_FAILED_AT, &chrono::Utc::now().to_rfc3339());
        headers
    };
    let headers = build(original, letter.error);
    if wire_len(&headers) + payload.len() <= max_payload {
        return (headers, payload);
    }
    // Room for the longer reason and the truncation header (generous: a few numbers).
    const NOTE_ROOM: usize = 512;
    let mut keep_original = original;
    let mut room = max_payload.saturating_sub(wire_len(&headers) + NOTE_ROOM);
    if room == 0 {
        keep_original = None;
        room = max_payload.saturating_sub(wire_len(&build(None, letter.error)) + NOTE_ROOM);
    }
    let dropped = payload.len().saturating_sub(room);
    let error = format!(
        "{}; the DLQ copy did not fit the server's max_payload of {max_payload} bytes: {dropped} \
         of {} body bytes dropped{}, the original is {} sequence {}",
        letter.error,
        payload.len(),
        if keep_original.is_none() { " and the original headers too" } else { "" },
        names.events_stream(),
        letter.stream_sequence,
    );
    let mut headers = build(keep_original, &error);
    headers.insert(H_TRUNCATED, dropped.to_string());
    (headers, payload.slice(..payload.len() - dropped))
}

/// Bytes a header block takes on the wire, as the client counts them against `max_payload`:
/// `NATS/1.0\r\n`, one `name: value\r\n` per value, and a blank line.
fn wire_len(headers: &HeaderMap) -> usize {
    let lines: usize = headers
        .iter()
        .map(|(name, values)| {
            values
                .iter()
                .map(|v| AsRef::<str>::as_ref(name).len() + v.as_str().len() + 4)
                .sum::<usize>()
        })
        .sum();
    "NATS/1.0\r\n\r\n".len() + lines
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
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
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

/// Why a dead letter was not replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("dead letter {seq} (kind {kind}) is not replayed: {reason}")]
    Refused { seq: u64, kind: String, reason: String },
    #[error(transparent)]
    Bus(#[from] BusError),
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
        self.list_from(1, limit).await
    }

    /// Dead letters from sequence `from` on, oldest first, at most `limit`: one request per
    /// letter (the stream's "next message at or after this sequence"), however many letters were
    /// deleted (replayed) between them, so a page costs at most `limit` + 1 requests.
    ///
    /// # Errors
    /// The DLQ stream is unreachable.
    pub async fn list_from(&self, from: u64, limit: usize) -> Result<Vec<DlqEntry>, BusError> {
        let stream = self.stream().await?;
        let mut entries = Vec::with_capacity(limit.min(1024));
        let mut next = from.max(1);
        while entries.len() < limit {
            let found = stream.raw_message_builder().sequence(next).next_by_subject(">").send();
            match found.await {
                Ok(message) => {
                    entries.push(entry(message.sequence, &message.headers));
                    next = message.sequence + 1;
                }
                Err(e) if is_not_found(&e) => break,
                Err(e) => {
                    return Err(BusError::jetstream(
                        format!("reading DLQ from sequence {next}"),
                        e,
                    ));
                }
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
    /// A dead letter that can never run ([`never_replays`]: it would only be dead-lettered again
    /// under a new sequence) is refused unless `force`; a truncated copy is refused even then,
    /// since it is not the original event.
    ///
    /// # Errors
    /// [`ReplayError::Refused`] as above; no such dead letter, or JetStream did not acknowledge.
    pub async fn replay(&self, seq: u64, force: bool) -> Result<Published, ReplayError> {
        let stream = self.stream().await?;
        let message = stream
            .get_raw_message(seq)
            .await
            .map_err(|e| BusError::jetstream(format!("no dead letter {seq}"), e))?;
        let kind = header(&message.headers, H_ERROR_KIND).unwrap_or_default();
        if let Some(dropped) = header(&message.headers, H_TRUNCATED) {
            let reason = format!(
                "its copy is truncated ({dropped} bytes dropped), so it is not the original event; \
                 re-publish the original from {} sequence {}",
                self.names.events_stream(),
                header(&message.headers, H_STREAM_SEQ).unwrap_or_else(|| "?".into()),
            );
            return Err(ReplayError::Refused { seq, kind, reason });
        }
        if never_replays(&kind) && !force {
            let reason = "the message itself is at fault, not a run, so a replay would only be \
                          dead-lettered again; fix and re-publish the event, or force the replay"
                .to_owned();
            return Err(ReplayError::Refused { seq, kind, reason });
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn letter<'a>(key: &'a str, error: &'a str) -> DeadLetter<'a> {
        DeadLetter {
            workflow: "ping",
            run_id: Some("ping-abc"),
            key: Some(key),
            subject: "muster.events.muster.ping.x",
            stream_sequence: 7,
            delivered: 1,
            attempts: 1,
            error_kind: "permanent",
            error,
        }
    }

    #[test]
    fn values_with_line_breaks_become_safe_headers() {
        let names = Names::new("muster");
        let (headers, _) =
            letter_message(&names, None, Bytes::new(), &letter("a\r\nb", "x\ny\tz"), 1 << 20);
        assert_eq!(headers.get(H_KEY).unwrap().as_str(), "a%0D%0Ab");
        assert_eq!(headers.get(H_ERROR).unwrap().as_str(), "x%0Ay%09z");
    }

    #[test]
    fn a_copy_over_max_payload_is_truncated_to_fit_and_says_so() {
        let names = Names::new("muster");
        let max = 4096;
        let mut original = HeaderMap::new();
        original.insert("ce-id", "big");
        let payload = Bytes::from(vec![b'x'; max - 100]);
        let fits = letter_message(
            &names,
            Some(&original),
            Bytes::from_static(b"{}"),
            &letter("k", "e"),
            max,
        );
        assert!(fits.0.get(H_TRUNCATED).is_none());
        assert_eq!(fits.1, Bytes::from_static(b"{}"));

        let (headers, body) =
            letter_message(&names, Some(&original), payload.clone(), &letter("k", "too big"), max);
        assert!(wire_len(&headers) + body.len() <= max);
        let dropped: usize = headers.get(H_TRUNCATED).unwrap().as_str().parse().unwrap();
        assert_eq!(body.len() + dropped, payload.len());
        assert_eq!(headers.get("ce-id").unwrap().as_str(), "big", "original headers kept");
        let reason = headers.get(H_ERROR).unwrap().as_str();
        assert!(reason.starts_with("too big; the DLQ copy did not fit"), "{reason}");
        assert!(reason.contains(&format!("{dropped} of {} body bytes dropped", payload.len())));
        assert!(reason.contains("MUSTER_EVENTS sequence 7"), "{reason}");

        // Original headers that alone exceed the limit are dropped as well.
        let mut huge = HeaderMap::new();
        huge.insert("x-huge", "h".repeat(max));
        let (headers, body) = letter_message(&names, Some(&huge), payload, &letter("k", "e"), max);
        assert!(wire_len(&headers) + body.len() <= max);
        assert!(headers.get("x-huge").is_none());
        assert!(headers.get(H_ERROR).unwrap().as_str().contains("and the original headers too"));
    }

    #[test]
    fn only_message_faults_are_never_replayed() {
        for kind in ["invalid-json", "too-large", "missing-attribute", KIND_TYPE_MISMATCH] {
            assert!(never_replays(kind), "{kind}");
        }
        for kind in ["permanent", "retryable", "throttled", KIND_INFRASTRUCTURE] {
            assert!(!never_replays(kind), "{kind}");
        }
    }
}
