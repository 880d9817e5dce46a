//! How a run is stored: one record per run holding its steps, in a compact binary encoding.
//!
//! A record is one format byte ([`FORMAT`]) followed by a [postcard] encoding of [`Stored`]:
//! varint integers, length-prefixed strings, timestamps as seconds and nanoseconds, JSON values
//! (the trigger event, outputs) as their JSON text. The fields the indexes derive from come
//! first, so that [`head`] decodes them alone. A finished ping (three steps) takes about 430 bytes
//! (1.4 KiB as the JSON records it replaced; `cli::bench::runs` checks both).
//!
//! Journals written before this format (one JSON record per run and one per step) are converted
//! when they are opened (see [`super::sled`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    AttemptRecord, ErrorRecord, JournalError, JournaledRun, RunRecord, RunStatus, StepRecord,
    StepStatus, TriggerRecord,
};

/// The first byte of every record in this format (a JSON record starts with `{`).
pub(crate) const FORMAT: u8 = 3;

/// A timestamp: seconds and nanoseconds since the epoch, exact.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct Time(i64, u32);

impl From<DateTime<Utc>> for Time {
    fn from(at: DateTime<Utc>) -> Self {
        Self(at.timestamp(), at.timestamp_subsec_nanos())
    }
}

impl Time {
    fn at(self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.0, self.1).unwrap_or_default()
    }
}

/// The fields a run's index entries derive from: the start of every record.
#[derive(Serialize, Deserialize)]
pub(crate) struct Head {
    pub id: String,
    pub workflow: String,
    pub key: String,
    pub status: RunStatus,
    created_at: Time,
}

impl Head {
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at.at()
    }

    pub fn of(run: &RunRecord) -> Self {
        Self {
            id: run.id.clone(),
            workflow: run.workflow.clone(),
            key: run.key.clone(),
            status: run.status,
            created_at: run.created_at.into(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    head: Head,
    attempts: u32,
    throttled: u32,
    redrives: u32,
    /// The trigger event's JSON text.
    event: String,
    nats_subject: String,
    stream_sequence: u64,
    updated_at: Time,
    finished_at: Option<Time>,
    output: Option<String>,
    error: Option<ErrorRecord>,
    dlq_sequence: Option<u64>,
    history: Vec<Attempt>,
    steps: Vec<Step>,
}

#[derive(Serialize, Deserialize)]
struct Attempt {
    attempt: u32,
    started_at: Time,
    finished_at: Option<Time>,
    outcome: Option<RunStatus>,
    error: Option<ErrorRecord>,
    retry_delay_ms: Option<u64>,
}

/// A step, without its run's id.
#[derive(Serialize, Deserialize)]
struct Step {
    index: u32,
    name: String,
    status: StepStatus,
    attempts: u32,
    output: Option<String>,
    error: Option<ErrorRecord>,
    started_at: Time,
    finished_at: Option<Time>,
    duration_ms: Option<u64>,
}

/// Straight into a buffer: `Value`'s `Display` goes through `fmt` and costs twice as much.
fn json_text(value: &serde_json::Value) -> String {
    serde_json::to_string(value).expect("a JSON value serializes")
}

fn json_value(key: &[u8], text: &str) -> Result<serde_json::Value, JournalError> {
    serde_json::from_str(text).map_err(|source| JournalError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: source.to_string(),
    })
}

/// The record of a run and its steps.
pub(crate) fn encode(journaled: &JournaledRun) -> Vec<u8> {
    let run = &journaled.run;
    let stored = Stored {
        head: Head::of(run),
        attempts: run.attempts,
        throttled: run.throttled,
        redrives: run.redrives,
        event: json_text(&run.trigger.event),
        nats_subject: run.trigger.nats_subject.clone(),
        stream_sequence: run.trigger.stream_sequence,
        updated_at: run.updated_at.into(),
        finished_at: run.finished_at.map(Time::from),
        output: run.output.as_ref().map(json_text),
        error: run.error.clone(),
        dlq_sequence: run.dlq_sequence,
        history: run
            .history
            .iter()
            .map(|a| Attempt {
                attempt: a.attempt,
                started_at: a.started_at.into(),
                finished_at: a.finished_at.map(Time::from),
                outcome: a.outcome,
                error: a.error.clone(),
                retry_delay_ms: a.retry_delay_ms,
            })
            .collect(),
        steps: journaled
            .steps
            .iter()
            .map(|s| Step {
                index: s.index,
                name: s.name.clone(),
                status: s.status,
                attempts: s.attempts,
                output: s.output.as_ref().map(json_text),
                error: s.error.clone(),
                started_at: s.started_at.into(),
                finished_at: s.finished_at.map(Time::from),
                duration_ms: s.duration_ms,
            })
            .collect(),
    };
    let mut record = vec![FORMAT];
    postcard::to_io(&stored, &mut record).expect("writing to a Vec cannot fail");
    record
}

fn body<'a>(key: &[u8], record: &'a [u8]) -> Result<&'a [u8], JournalError> {
    match record.split_first() {
        Some((&FORMAT, body)) => Ok(body),
        _ => Err(JournalError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: format!("unknown record format {:?}", record.first()),
        }),
    }
}

fn corrupt(key: &[u8], e: &postcard::Error) -> JournalError {
    JournalError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: e.to_string() }
}

/// The indexed fields of the record stored at `key`, without decoding the rest.
pub(crate) fn head(key: &[u8], record: &[u8]) -> Result<Head, JournalError> {
    postcard::take_from_bytes::<Head>(body(key, record)?)
        .map(|(head, _)| head)
        .map_err(|e| corrupt(key, &e))
}

/// The run of the record stored at `key`, with its steps when `steps` says so (a list needs only
/// the runs: their steps' outputs are not parsed).
pub(crate) fn decode(key: &[u8], record: &[u8], steps: bool) -> Result<JournaledRun, JournalError> {
    let stored: Stored = postcard::from_bytes(body(key, record)?).map_err(|e| corrupt(key, &e))?;
    let run = RunRecord {
        id: stored.head.id,
        workflow: stored.head.workflow,
        key: stored.head.key,
        status: stored.head.status,
        attempts: stored.attempts,
        throttled: stored.throttled,
        redrives: stored.redrives,
        trigger: TriggerRecord {
            event: json_value(key, &stored.event)?,
            nats_subject: stored.nats_subject,
            stream_sequence: stored.stream_sequence,
        },
        created_at: stored.head.created_at.at(),
        updated_at: stored.updated_at.at(),
        finished_at: stored.finished_at.map(Time::at),
        output: stored.output.map(|text| json_value(key, &text)).transpose()?,
        error: stored.error,
        dlq_sequence: stored.dlq_sequence,
        history: stored
            .history
            .into_iter()
            .map(|a| AttemptRecord {
                attempt: a.attempt,
                started_at: a.started_at.at(),
                finished_at: a.finished_at.map(Time::at),
                outcome: a.outcome,
                error: a.error,
                retry_delay_ms: a.retry_delay_ms,
            })
            .collect(),
    };
    if !steps {
        return Ok(JournaledRun { run, steps: Vec::new() });
    }
    let steps = stored
        .steps
        .into_iter()
        .map(|s| {
            Ok(StepRecord {
                run_id: run.id.clone(),
                index: s.index,
                name: s.name,
                status: s.status,
                attempts: s.attempts,
                output: s.output.map(|text| json_value(key, &text)).transpose()?,
                error: s.error,
                started_at: s.started_at.at(),
                finished_at: s.finished_at.map(Time::at),
                duration_ms: s.duration_ms,
            })
        })
        .collect::<Result<_, JournalError>>()?;
    Ok(JournaledRun { run, steps })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(nanos: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(nanos)
    }

    fn sample() -> JournaledRun {
        let error = ErrorRecord { kind: "retryable".into(), message: "try again".into() };
        let run = RunRecord {
            id: "ping-0123456789abcdef".into(),
            workflow: "ping".into(),
            key: "team-a".into(),
            status: RunStatus::Succeeded,
            attempts: 2,
            throttled: 1,
            redrives: 3,
            trigger: TriggerRecord {
                event: serde_json::json!({"specversion": "1.0", "id": "e1", "data": {"i": [1, 2.5, null]}}),
                nats_subject: "muster.events.muster.ping.x".into(),
                stream_sequence: 42,
            },
            created_at: at(1_764_000_000_123_456_789),
            updated_at: at(1_764_000_001_000_000_001),
            finished_at: Some(at(1_764_000_002_999_999_999)),
            output: Some(serde_json::json!({"pong": true})),
            error: Some(error.clone()),
            dlq_sequence: Some(7),
            history: vec![AttemptRecord {
                attempt: 1,
                started_at: at(1_764_000_000_200_000_000),
                finished_at: None,
                outcome: Some(RunStatus::Retrying),
                error: Some(error.clone()),
                retry_delay_ms: Some(1500),
            }],
        };
        let steps = vec![StepRecord {
            run_id: run.id.clone(),
            index: 0,
            name: "échange".into(),
            status: StepStatus::Failed,
            attempts: 2,
            output: None,
            error: Some(error),
            started_at: at(-5),
            finished_at: Some(at(0)),
            duration_ms: Some(0),
        }];
        JournaledRun { run, steps }
    }

    #[test]
    fn a_record_decodes_to_what_was_encoded_to_the_nanosecond() {
        let journaled = sample();
        let record = encode(&journaled);
        assert_eq!(record[0], FORMAT);
        assert_eq!(decode(b"k", &record, true).unwrap(), journaled);
        assert!(decode(b"k", &record, false).unwrap().steps.is_empty());
        let head = head(b"k", &record).unwrap();
        assert_eq!(
            (head.id.as_str(), head.status),
            ("ping-0123456789abcdef", RunStatus::Succeeded)
        );
        assert_eq!(head.created_at(), journaled.run.created_at);
    }

    #[test]
    fn a_foreign_or_truncated_record_is_corrupt_not_a_panic() {
        let record = encode(&sample());
        for bad in [&b"{\"id\":\"x\"}"[..], &[], &record[..record.len() / 2], &[FORMAT, 0xff]] {
            assert!(
                matches!(decode(b"k", bad, true), Err(JournalError::Corrupt { .. })),
                "{bad:?}"
            );
        }
    }
}
