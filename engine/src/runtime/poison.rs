//! Messages the workflow consumers never get to answer: poison messages and their collateral.
//!
//! async-nats parses the header block of every delivered message before Muster sees it. A header
//! block it cannot read (not UTF-8, no `NATS/1.0` version line, a line without `:`, an invalid
//! header name) or a subject that is not UTF-8 makes it drop the whole connection: every puller
//! re-subscribes, acks in flight are lost, and the message comes back after the ack wait to do it
//! again. Messages delivered in the same pull (a valid event published right after) are lost with
//! the connection each time, so they come back alongside the poison one, for ever.
//!
//! What bounds it:
//! - every workflow consumer has a MaxDeliver ([`max_deliver`]): after that many deliveries
//!   JetStream stops delivering the message and publishes a max-deliveries advisory;
//! - the stream `<PREFIX>_ADVISORIES` stores those advisories (advisories are core NATS messages,
//!   lost when no engine listens), and the durable consumer [`ADVISORY_CONSUMER`] hands them to
//!   [`watch`];
//! - [`watch`] fetches the message by sequence through `$JS.API.STREAM.MSG.GET` (JSON with
//!   base64 `hdrs` and `data`, which reads every byte safely; async-nats' `get_raw_message` parses
//!   the headers and fails on such a message, and a direct get would deliver the bad header block
//!   itself and drop the connection again), then:
//!   - unreadable: dead-letters it with kind `unreadable-headers` or `unreadable-subject`, its
//!     header block kept base64 in [`H_RAW_HEADERS`];
//!   - readable (collateral of a poison neighbour, or a run that used its deliveries on retries,
//!     throttled waits or infrastructure Naks): re-queues a copy on the workflow's re-drive
//!     subject, so it runs (the journal decides what is left to do) with a fresh delivery count;
//!     after [`MAX_REQUEUES`] re-queues it is dead-lettered with kind `max-deliveries`.
//!
//! # Guarantees
//! - A poison message costs at most [`max_deliver`] connection drops per workflow consumer.
//! - No event exhausted by MaxDeliver is dropped silently: it is dead-lettered or re-queued
//!   (PubAck awaited) before its advisory is acknowledged; an advisory that fails is retried.
//! - Re-queue and dead letter carry message ids derived from the stream sequence and workflow, so
//!   handling one advisory twice within the duplicate window stores one copy.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{AckKind, Context, Message};
use async_nats::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::dlq::{self, DeadLetter};
use crate::bus::{BusError, Names, publish_raw};
use crate::config::StreamsConfig;

/// Deliveries of one message beyond `runtime.max-attempts` before JetStream gives up on it. An
/// attempt is one delivery; the slack covers Naks that are not attempts (infrastructure retries,
/// shutdown, the odd throttled wait). A poison message costs `max-attempts + MAX_DELIVER_SLACK`
/// connection drops (10 with the defaults), so this stays small: a readable message that runs out
/// of deliveries (a run throttled more often than that) is re-queued, not lost.
pub const MAX_DELIVER_SLACK: u32 = 5;

/// Re-queues of one readable event before it is dead-lettered with kind `max-deliveries`. Only
/// a run that never gets an answer out (an engine that dies on it every time) gets there: with
/// `max-attempts = 1`, 201 × 6 deliveries exceed the 1,000 throttled waits and one attempt a run
/// may have (`retry::MAX_THROTTLED`), after which the runner itself dead-letters it.
pub const MAX_REQUEUES: u32 = 200;

/// The durable consumer of `<PREFIX>_ADVISORIES`.
pub const ADVISORY_CONSUMER: &str = "max-deliveries";
/// Deliveries of one advisory (each failure Naks it for [`ADVISORY_RETRY`]): about ten minutes of
/// NATS or DLQ trouble before it is given up, with an error in the log.
const ADVISORY_MAX_DELIVER: i64 = 120;
const ADVISORY_RETRY: Duration = Duration::from_secs(5);
const ADVISORY_ACK_WAIT: Duration = Duration::from_secs(30);
/// Advisories fetched per pull.
const ADVISORY_BATCH: usize = 16;
/// The original header block of an unreadable message, base64, in its dead letter.
pub const H_RAW_HEADERS: &str = "Muster-Raw-Headers";
/// How many times an event was re-queued after running out of deliveries.
pub const H_REQUEUES: &str = "Muster-Requeues";

/// Dead-letter kinds of this module.
pub const KIND_UNREADABLE_HEADERS: &str = "unreadable-headers";
pub const KIND_UNREADABLE_SUBJECT: &str = "unreadable-subject";
pub const KIND_MAX_DELIVERIES: &str = "max-deliveries";

/// The MaxDeliver of every workflow consumer.
pub fn max_deliver(max_attempts: u32) -> i64 {
    i64::from(max_attempts) + i64::from(MAX_DELIVER_SLACK)
}

/// The subject JetStream publishes the max-deliveries advisories of the workflow consumers on.
fn advisory_subject(names: &Names) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*", names.events_stream())
}

/// Creates or updates `<PREFIX>_ADVISORIES` and its durable consumer.
///
/// # Errors
/// The JetStream API refused the stream or the consumer.
pub async fn ensure(
    js: &Context,
    names: &Names,
    config: &StreamsConfig,
) -> Result<PullConsumer, BusError> {
    let name = names.advisories_stream();
    js.create_or_update_stream(stream::Config {
        name: name.clone(),
        description: Some("Muster: max-deliveries advisories of the workflow consumers".into()),
        subjects: vec![advisory_subject(names)],
        // Handled advisories go; one past the events' age points at nothing.
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        num_replicas: config.replicas,
        max_age: config.max_age,
        discard: DiscardPolicy::Old,
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::jetstream(format!("creating or updating stream {name}"), e))?;
    js.create_consumer_on_stream(
        pull::Config {
            durable_name: Some(ADVISORY_CONSUMER.to_owned()),
            description: Some("Muster: dead-letters or re-queues exhausted messages".into()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: ADVISORY_ACK_WAIT,
            max_deliver: ADVISORY_MAX_DELIVER,
            ..Default::default()
        },
        name.as_str(),
    )
    .await
    .map_err(|e| {
        BusError::jetstream(format!("creating or updating consumer {ADVISORY_CONSUMER}"), e)
    })
}

/// JetStream's `io.nats.jetstream.advisory.v1.max_deliver`.
#[derive(Debug, Deserialize)]
struct MaxDeliveries {
    stream: String,
    consumer: String,
    stream_seq: u64,
    deliveries: i64,
}

/// A `$JS.API.STREAM.MSG.GET` answer, bytes still base64.
#[derive(Debug, Deserialize)]
struct MsgGetResponse {
    message: Option<StoredMessage>,
    error: Option<ApiError>,
}

#[derive(Debug, Deserialize)]
struct StoredMessage {
    subject: String,
    #[serde(default)]
    hdrs: Option<String>,
    #[serde(default)]
    data: String,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    code: u16,
    #[serde(default)]
    description: String,
}

/// Handles max-deliveries advisories of `workflows`' consumers until `shutdown`.
pub(crate) async fn watch(
    consumer: PullConsumer,
    js: Context,
    names: Names,
    workflows: HashSet<String>,
    shutdown: CancellationToken,
) {
    let (js, names, workflows) = (&js, &names, &workflows);
    super::pull::pull(
        &consumer,
        ADVISORY_BATCH,
        "max-deliveries advisories",
        &shutdown,
        |message| handle(js, names, workflows, message),
    )
    .await;
    debug!("stopped watching max-deliveries advisories");
}

async fn handle(js: &Context, names: &Names, workflows: &HashSet<String>, message: Message) {
    let answer = match serde_json::from_slice::<MaxDeliveries>(&message.payload) {
        Ok(advisory) => match resolve(js, names, workflows, &advisory).await {
            Ok(()) => AckKind::Ack,
            Err(e) => {
                let delivered = message.info().map(|i| i.delivered).unwrap_or(0);
                let level_error = delivered >= ADVISORY_MAX_DELIVER;
                match level_error {
                    true => {
                        tracing::error!(stream_seq = advisory.stream_seq, workflow = %advisory.consumer, error = %e, "giving up on an exhausted message: neither dead-lettered nor re-queued")
                    }
                    false => {
                        warn!(stream_seq = advisory.stream_seq, workflow = %advisory.consumer, error = %e, "handling a max-deliveries advisory failed; retrying in {ADVISORY_RETRY:?}")
                    }
                }
                AckKind::Nak(Some(ADVISORY_RETRY))
            }
        },
        Err(e) => {
            warn!(error = %e, "ignoring an unreadable max-deliveries advisory");
            AckKind::Term
        }
    };
    if let Err(e) = message.ack_with(answer).await {
        // Redelivered after the ack wait; dead letter and re-queue are idempotent.
        warn!(error = %e, "could not answer a max-deliveries advisory");
    }
}

/// What becomes of a message JetStream gave up delivering.
#[derive(Debug, PartialEq)]
enum Fate {
    /// Readable: publish it again as a new message (its `Muster-Requeues`-th re-queue).
    Requeue { headers: HeaderMap, requeues: u32 },
    /// Dead-letter it with these headers (besides Muster's), kind and reason.
    DeadLetter { headers: HeaderMap, kind: &'static str, reason: String },
}

/// Decides a message's fate from its subject and raw header block, by async-nats' own rules.
fn judge(subject: &str, block: Option<&[u8]>, deliveries: i64) -> Fate {
    if subject.contains(char::REPLACEMENT_CHARACTER) {
        // The server's JSON carries a subject that was not UTF-8 with U+FFFD in its place.
        return Fate::DeadLetter {
            headers: HeaderMap::new(),
            kind: KIND_UNREADABLE_SUBJECT,
            reason: "the subject is not UTF-8: the NATS client cannot read this message".into(),
        };
    }
    let mut headers = match read_headers(block) {
        Ok(headers) => headers,
        Err(problem) => {
            let mut raw = HeaderMap::new();
            raw.insert(H_RAW_HEADERS, BASE64.encode(block.unwrap_or_default()));
            return Fate::DeadLetter {
                headers: raw,
                kind: KIND_UNREADABLE_HEADERS,
                reason: format!(
                    "{problem}: the NATS client cannot read this message's headers \
                     (the raw header block is in {H_RAW_HEADERS}, base64)"
                ),
            };
        }
    };
    let requeues =
        headers.get(H_REQUEUES).and_then(|v| v.as_str().parse::<u32>().ok()).unwrap_or(0);
    if requeues >= MAX_REQUEUES {
        return Fate::DeadLetter {
            headers,
            kind: KIND_MAX_DELIVERIES,
            reason: format!(
                "delivered {deliveries} times after {requeues} re-queues without an answer"
            ),
        };
    }
    headers.insert(H_REQUEUES, (requeues + 1).to_string());
    Fate::Requeue { headers, requeues: requeues + 1 }
}

/// Dead-letters or re-queues the message an advisory is about.
async fn resolve(
    js: &Context,
    names: &Names,
    workflows: &HashSet<String>,
    advisory: &MaxDeliveries,
) -> Result<(), BusError> {
    let workflow = advisory.consumer.as_str();
    if advisory.stream != names.events_stream() || !workflows.contains(workflow) {
        debug!(stream = %advisory.stream, consumer = workflow, "not a workflow consumer; ignoring");
        return Ok(());
    }
    let seq = advisory.stream_seq;
    let Some(stored) = fetch(js, &advisory.stream, seq).await? else {
        warn!(stream_seq = seq, workflow, "exhausted message is no longer in the stream");
        return Ok(());
    };
    let (block, payload) = stored
        .decode()
        .map_err(|e| BusError::jetstream(format!("decoding stream message {seq}"), e))?;
    match judge(&stored.subject, block.as_deref(), advisory.deliveries) {
        Fate::Requeue { mut headers, requeues } => {
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("requeue:{}:{seq}:{workflow}", names.events_stream()),
            );
            // Event and re-drive subjects both end with the key token.
            let key = stored.subject.rsplit('.').next().unwrap_or("_");
            let subject = names.redrive_subject(workflow, key);
            let published = publish_raw(js, subject, headers, payload).await?;
            info!(
                stream_seq = seq,
                workflow,
                requeues,
                new_seq = published.sequence,
                "re-queued a readable message JetStream gave up delivering"
            );
        }
        Fate::DeadLetter { headers, kind, reason } => {
            let letter = DeadLetter {
                workflow,
                run_id: None,
                key: None,
                subject: &stored.subject,
                stream_sequence: seq,
                delivered: advisory.deliveries,
                attempts: 0,
                error_kind: kind,
                error: &reason,
            };
            let published = dlq::dead_letter(js, names, Some(&headers), payload, &letter).await?;
            warn!(
                stream_seq = seq,
                workflow,
                kind,
                dlq_sequence = published.sequence,
                %reason,
                "dead-lettered a message JetStream gave up delivering"
            );
        }
    }
    Ok(())
}

/// Reads stream message `seq` without letting the client parse its header block. `None` when the
/// stream no longer has it.
async fn fetch(js: &Context, stream: &str, seq: u64) -> Result<Option<StoredMessage>, BusError> {
    let response: MsgGetResponse = js
        .request(format!("STREAM.MSG.GET.{stream}"), &serde_json::json!({ "seq": seq }))
        .await
        .map_err(|e| BusError::jetstream(format!("reading message {seq} of {stream}"), e))?;
    match (response.message, response.error) {
        (Some(message), _) => Ok(Some(message)),
        (None, Some(error)) if error.code == 404 => Ok(None),
        (None, error) => Err(BusError::jetstream(
            format!("reading message {seq} of {stream}"),
            std::io::Error::other(error.map_or_else(
                || "empty answer".into(),
                |e| format!("{} ({})", e.description, e.code),
            )),
        )),
    }
}

impl StoredMessage {
    /// The header block and the payload, as bytes.
    fn decode(&self) -> Result<(Option<Vec<u8>>, Bytes), base64::DecodeError> {
        let headers = self.hdrs.as_deref().map(|h| BASE64.decode(h)).transpose()?;
        Ok((headers, BASE64.decode(&self.data)?.into()))
    }
}

/// Parses a header block the way async-nats 0.51 does on delivery (`Connection::try_read_op`,
/// `HMSG`): an error here is a block that would make the client drop its connection.
fn read_headers(block: Option<&[u8]>) -> Result<HeaderMap, &'static str> {
    let mut headers = HeaderMap::new();
    let Some(block) = block.filter(|b| !b.is_empty()) else { return Ok(headers) };
    let text = std::str::from_utf8(block).map_err(|_| "the header block is not UTF-8")?;
    let mut lines = text.lines().peekable();
    let version = lines.next().ok_or("the header block has no version line")?;
    let suffix = version
        .strip_prefix("NATS/1.0")
        .ok_or("the header block does not begin with `NATS/1.0`")?
        .trim();
    let status = suffix.split_once(' ').map_or(suffix, |(status, _)| status.trim());
    if !status.is_empty() && StatusCode::from_str(status).is_err() {
        return Err("the header version line has an invalid status");
    }
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':').ok_or("a header line has no `:`")?;
        let name = HeaderName::from_str(name).map_err(|_| "a header name is invalid")?;
        let mut value = value.trim_start().to_owned();
        while let Some(more) = lines.next_if(|s| s.starts_with(char::is_whitespace)) {
            value.push_str(more);
        }
        value.truncate(value.trim_end().len());
        headers.append(name, HeaderValue::from(value.as_str()));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks_the_client_cannot_read_are_told_apart() {
        let ok = read_headers(Some(b"NATS/1.0\r\nNats-Msg-Id: a\r\nce-id: x\r\n\r\n")).unwrap();
        assert_eq!(ok.get("ce-id").map(|v| v.as_str()), Some("x"));
        assert!(read_headers(None).unwrap().is_empty());
        for (block, problem) in [
            (&b"NATS/1.0\r\nX: \xff\xfe\r\n\r\n"[..], "not UTF-8"),
            (b"X: y\r\n\r\n", "does not begin with `NATS/1.0`"),
            (b"NATS/1.0\r\nno colon\r\n\r\n", "no `:`"),
            (b"NATS/1.0 abc\r\n\r\n", "invalid status"),
        ] {
            let error = read_headers(Some(block)).unwrap_err();
            assert!(error.contains(problem), "{error}");
        }
    }

    #[test]
    fn readable_messages_are_requeued_until_the_bound_the_rest_dead_lettered() {
        let block = b"NATS/1.0\r\nce-id: a\r\n\r\n";
        let Fate::Requeue { headers, requeues } = judge("muster.events.t.k", Some(block), 10)
        else {
            panic!("a readable message is re-queued")
        };
        assert_eq!((requeues, headers.get("ce-id").map(|v| v.as_str())), (1, Some("a")));
        assert_eq!(headers.get(H_REQUEUES).map(|v| v.as_str()), Some("1"));

        let spent = format!("NATS/1.0\r\n{H_REQUEUES}: {MAX_REQUEUES}\r\n\r\n");
        let Fate::DeadLetter { kind, .. } = judge("s", Some(spent.as_bytes()), 10) else {
            panic!("re-queued too often")
        };
        assert_eq!(kind, KIND_MAX_DELIVERIES);

        let bad = b"NATS/1.0\r\nX: \xff\r\n\r\n";
        let Fate::DeadLetter { headers, kind, reason } = judge("s", Some(bad), 10) else {
            panic!("unreadable headers")
        };
        assert_eq!(kind, KIND_UNREADABLE_HEADERS);
        assert!(reason.starts_with("the header block is not UTF-8"), "{reason}");
        assert_eq!(
            headers.get(H_RAW_HEADERS).map(|v| v.as_str()),
            Some("TkFUUy8xLjANClg6IP8NCg0K")
        );

        let Fate::DeadLetter { kind, .. } = judge("a.\u{FFFD}", None, 10) else {
            panic!("unreadable subject")
        };
        assert_eq!(kind, KIND_UNREADABLE_SUBJECT);
    }

    #[test]
    fn requeues_outlast_every_throttled_wait() {
        let deliveries = u64::from(MAX_REQUEUES + 1) * max_deliver(1) as u64;
        assert!(deliveries > u64::from(1 + super::super::retry::MAX_THROTTLED));
        assert_eq!(max_deliver(5), 10);
    }

    #[test]
    fn the_raw_lookup_answer_decodes() {
        let answer: MsgGetResponse = serde_json::from_str(
            r#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{"subject":"a.b","seq":3,"hdrs":"TkFUUy8xLjANClg6IP8NCg0K","data":"aGk=","time":"2026-11-29T00:00:00Z"}}"#,
        )
        .unwrap();
        let (headers, payload) = answer.message.unwrap().decode().unwrap();
        assert_eq!(headers.as_deref(), Some(&b"NATS/1.0\r\nX: \xff\r\n\r\n"[..]));
        assert_eq!(&payload[..], b"hi");
        let missing: MsgGetResponse = serde_json::from_str(
            r#"{"error":{"code":404,"err_code":10037,"description":"no message found"}}"#,
        )
        .unwrap();
        assert_eq!(missing.error.unwrap().code, 404);
    }
}
