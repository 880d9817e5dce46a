//! One workflow's consumer loop and the life of one message:
//! consume → decode → journal → steps → Ack / Nak(delay) / Term, with dead letters.
//!
//! # Guarantees
//! - A run's completion is durable in the journal before its message is acked, so a redelivery of
//!   a finished run is acked at once and runs nothing.
//! - A failed run's event is in the DLQ (PubAck received) before its message is terminated.
//! - While a message is held (waiting for its key or running), a heartbeat sends `+WPI` every
//!   third of the ack wait, so long steps are not redelivered under the run's feet.
//! - At most `concurrency` runs of the workflow, and one run per key, are in flight in one engine.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Context, Message};
use chrono::Utc;
use cloudevents::{AttributesReader, Event};
use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};
use workflows::{RunContext, RunError, Workflow};

use super::RunFinished;
use super::dlq::{self, DeadLetter};
use super::retry::{RetryPolicy, Verdict};
use super::steps::{Attempt, JournalSteps};
use crate::bus::{Names, codec};
use crate::journal::{
    AttemptRecord, Durability, ErrorRecord, Journal, JournaledRun, RunRecord, RunStatus,
    TriggerRecord,
};
use crate::metrics::{self, InfraLabels};

/// Messages requested per pull.
const MAX_BATCH: usize = 256;
/// Delay before a message that met an infrastructure error (journal, DLQ publish) comes back.
const INFRA_RETRY: Duration = Duration::from_secs(2);
/// Infrastructure retries of one message (counted by this engine) before it is escalated:
/// dead-lettered with kind `infrastructure`, or, when the DLQ itself fails, terminated with an
/// error log. With [`INFRA_RETRY`] that is about 8 s of failures. Below the consumers'
/// MaxDeliver slack ([`super::poison::MAX_DELIVER_SLACK`]), so that the runner escalates before
/// JetStream retires the message.
pub(crate) const MAX_INFRA_RETRIES: u32 = 4;
/// Messages whose infrastructure retries are tracked at once; past it the counts start over
/// (which only postpones an escalation). Entries leave when their message is answered otherwise.
const MAX_TRACKED_INFRA: usize = 10_000;
/// The journaled kind of a throttled attempt ([`workflows::RunError::kind_name`]).
const THROTTLED_KIND: &str = "throttled";

/// The run id of `workflow` for an event: the workflow name and a hash of source and id.
pub fn run_id(workflow: &str, event: &Event) -> String {
    format!("{workflow}-{}", codec::message_id(event.source(), event.id()))
}

/// Whether a message re-drives a failed run: it has the `Muster-Redrive` header *and* came on
/// this workflow's re-drive subject (`<prefix>.runs.<workflow>.<key>`, see
/// [`Names::redrive_subject`]). The header alone is not enough: whoever may publish events on
/// `<prefix>.events.>` could set it and reset a failed run's attempts; the re-drive subjects are
/// the ones only retry and DLQ replay publish on.
fn is_redrive(names: &Names, workflow: &str, subject: &str, headers: Option<&HeaderMap>) -> bool {
    let Some(header) = headers.and_then(|h| h.get(dlq::H_REDRIVE)) else { return false };
    let on_redrive_subject = subject
        .strip_prefix(names.prefix())
        .and_then(|rest| rest.strip_prefix(".runs."))
        .and_then(|rest| rest.strip_prefix(workflow))
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|key| !key.is_empty() && !key.contains('.'));
    if !on_redrive_subject {
        debug!(
            subject,
            redrive = header.as_str(),
            "ignoring a re-drive header outside a re-drive subject"
        );
    }
    on_redrive_subject
}

/// Whether an event may be run by `workflow` from `subject`. Events are routed by subject
/// ([`Names::event_subject`]: `<prefix>.events.<type>.<subject token>`), so the type in the
/// subject must be the event's own: otherwise a publisher could run a workflow with an event of
/// another type. A re-drive (`<prefix>.runs.<workflow>.<key>`) carries the type of the event it
/// re-drives, which must be one of the workflow's triggers.
///
/// # Errors
/// The reason the event does not belong on this subject.
fn check_routing(
    names: &Names,
    workflow: &dyn Workflow,
    subject: &str,
    ty: &str,
) -> Result<(), String> {
    let rest = subject.strip_prefix(names.prefix()).unwrap_or_default();
    if let Some(rest) = rest.strip_prefix(".events.") {
        let typed = rest
            .strip_prefix(ty)
            .and_then(|token| token.strip_prefix('.'))
            .is_some_and(|token| !token.is_empty() && !token.contains('.'));
        return match typed {
            true => Ok(()),
            false => Err(format!(
                "event type {ty:?} does not match the subject {subject:?} it arrived on \
                 (an event of this type is published on {}.events.{ty}.<subject>)",
                names.prefix()
            )),
        };
    }
    if rest.starts_with(".runs.") {
        return match workflow.triggers().iter().any(|pattern| matches_pattern(pattern, ty)) {
            true => Ok(()),
            false => Err(format!(
                "re-drive of an event of type {ty:?}, which does not trigger workflow {}",
                workflow.name()
            )),
        };
    }
    Err(format!("subject {subject:?} is not an event or re-drive subject"))
}

/// Whether a dot-separated `name` matches a NATS-style `pattern` (`*` one token, `>` the rest).
fn matches_pattern(pattern: &str, name: &str) -> bool {
    let mut names = name.split('.');
    for token in pattern.split('.') {
        match (token, names.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (token, Some(name)) if token == name => {}
            _ => return false,
        }
    }
    names.next().is_none()
}

/// What to answer JetStream.
#[derive(Debug, PartialEq)]
enum Answer {
    Ack,
    Nak(Duration),
    Term,
    /// The journal or the DLQ failed: Nak([`INFRA_RETRY`]) until [`MAX_INFRA_RETRIES`], then
    /// escalate (see [`Runner::retry_or_escalate`]).
    Infra(InfraFailure),
}

/// An infrastructure failure met while handling a message.
#[derive(Debug, PartialEq)]
struct InfraFailure {
    /// What was being done, e.g. "reading the journal".
    what: &'static str,
    error: String,
    /// Whether the DLQ publish is what failed (then escalation cannot dead-letter).
    dlq: bool,
    /// The run, once known: its id, key and attempts.
    run: Option<(String, String, u32)>,
}

/// Infrastructure retries per stream sequence, counted by this engine.
#[derive(Default)]
pub(crate) struct InfraRetries {
    counts: Mutex<HashMap<u64, u32>>,
}

impl InfraRetries {
    /// Counts one more retry of the message at `sequence` and returns the count.
    fn bump(&self, sequence: u64) -> u32 {
        let mut counts = self.counts.lock().expect("infra retries lock");
        if counts.len() >= MAX_TRACKED_INFRA && !counts.contains_key(&sequence) {
            counts.clear();
        }
        let count = counts.entry(sequence).or_default();
        *count += 1;
        *count
    }

    fn forget(&self, sequence: u64) {
        self.counts.lock().expect("infra retries lock").remove(&sequence);
    }
}

pub(crate) struct Runner {
    pub workflow: Arc<dyn Workflow>,
    pub js: Context,
    pub names: Names,
    pub journal: Arc<dyn Journal>,
    pub retry: RetryPolicy,
    pub ack_wait: Duration,
    pub max_event_bytes: usize,
    pub concurrency: usize,
    pub finished: broadcast::Sender<RunFinished>,
    pub keys: KeyLocks,
    pub infra_retries: InfraRetries,
}

impl Runner {
    /// Pulls messages until `shutdown`, spawning one task per message on `tracker`.
    pub(crate) async fn consume(
        self: Arc<Self>,
        consumer: PullConsumer,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let name = self.workflow.name();
        let batch = self.concurrency.min(MAX_BATCH);
        let (runner, permits, tracker, stop) = (&self, &permits, &tracker, &shutdown);
        super::pull::pull(&consumer, batch, name, &shutdown, |message| async move {
            let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
            let (runner, stop) = (runner.clone(), stop.clone());
            tracker.spawn(async move { runner.handle(message, permit, stop).await });
        })
        .await;
        debug!(workflow = name, "stopped pulling");
    }

    async fn handle(
        &self,
        message: Message,
        _permit: OwnedSemaphorePermit,
        shutdown: CancellationToken,
    ) {
        let answer = {
            // The heartbeat shares the task with the run: no task per message.
            let every = (self.ack_wait / 3).max(Duration::from_millis(100));
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            let work = self.process(&message, &shutdown);
            tokio::pin!(work);
            loop {
                tokio::select! {
                    answer = &mut work => break answer,
                    _ = ticks.tick() => {
                        if let Err(e) = message.ack_with(AckKind::Progress).await {
                            debug!(error = %e, "progress heartbeat failed");
                        }
                    }
                }
            }
        };
        let sequence = message.info().map(|info| info.stream_sequence).ok();
        let answer = match answer {
            Answer::Infra(failure) => self.retry_or_escalate(&message, failure).await,
            answer => {
                if let Some(sequence) = sequence {
                    self.infra_retries.forget(sequence);
                }
                answer
            }
        };
        let sent = match answer {
            Answer::Infra(_) => unreachable!("infrastructure failures were answered above"),
            Answer::Ack => message.ack().await,
            Answer::Nak(delay) => message.ack_with(AckKind::Nak(Some(delay))).await,
            Answer::Term => message.ack_with(AckKind::Term).await,
        };
        if let Err(e) = sent {
            // The message comes back after the ack wait; the journal makes that harmless.
            warn!(workflow = self.workflow.name(), error = %e, ?answer, "could not answer JetStream");
        }
    }

    async fn process(&self, message: &Message, shutdown: &CancellationToken) -> Answer {
        let (stream_sequence, delivered) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered),
            Err(e) => {
                warn!(error = %e, "message without JetStream metadata; terminating it");
                return Answer::Term;
            }
        };
        let event = match codec::decode(
            message.headers.as_ref(),
            &message.payload,
            self.max_event_bytes,
        ) {
            Ok(event) => event,
            Err(reason) => {
                warn!(workflow = self.workflow.name(), subject = %message.subject, stream_sequence, %reason, "undecodable event");
                let letter = DeadLetter {
                    workflow: self.workflow.name(),
                    run_id: None,
                    key: None,
                    subject: &message.subject,
                    stream_sequence,
                    delivered,
                    attempts: 0,
                    error_kind: reason.code(),
                    error: &reason.to_string(),
                };
                return self
                    .dead_letter(message, &letter)
                    .await
                    .map_or_else(|a| a, |_| Answer::Term);
            }
        };
        let run_id = run_id(self.workflow.name(), &event);
        // The workflow's `key` is its code: a panic in it must not kill the task (the message
        // would come back every ack wait, for ever).
        let key = check_routing(&self.names, self.workflow.as_ref(), &message.subject, event.ty())
            .map_err(|reason| (dlq::KIND_TYPE_MISMATCH, reason))
            .and_then(|()| {
                std::panic::catch_unwind(AssertUnwindSafe(|| self.workflow.key(&event))).map_err(
                    |panic| {
                        let panic = panic_message(&*panic);
                        ("permanent", format!("the workflow's key() panicked: {panic}"))
                    },
                )
            });
        let key = match key {
            Ok(key) => key,
            Err((kind, reason)) => {
                warn!(workflow = self.workflow.name(), subject = %message.subject, stream_sequence, %reason, "event refused");
                let letter = DeadLetter {
                    workflow: self.workflow.name(),
                    run_id: (kind != dlq::KIND_TYPE_MISMATCH).then_some(run_id.as_str()),
                    key: None,
                    subject: &message.subject,
                    stream_sequence,
                    delivered,
                    attempts: 0,
                    error_kind: kind,
                    error: &reason,
                };
                return self
                    .dead_letter(message, &letter)
                    .await
                    .map_or_else(|a| a, |_| Answer::Term);
            }
        };
        let _key_guard = tokio::select! {
            guard = self.keys.lock(&key) => guard,
            _ = shutdown.cancelled() => return Answer::Nak(Duration::ZERO),
        };
        let span = info_span!("run", run_id = %run_id, workflow = self.workflow.name(), key = %key, attempt = tracing::field::Empty);
        let trigger = TriggerRecord {
            event: serde_json::to_value(&event).unwrap_or_default(),
            nats_subject: message.subject.to_string(),
            stream_sequence,
        };
        let redrive = is_redrive(
            &self.names,
            self.workflow.name(),
            &message.subject,
            message.headers.as_ref(),
        );
        let context = MessageContext { message, stream_sequence, delivered, redrive };
        self.drive(event, key, run_id, trigger, context).instrument(span).await
    }

    async fn drive(
        &self,
        event: Event,
        key: String,
        run_id: String,
        trigger: TriggerRecord,
        context: MessageContext<'_>,
    ) -> Answer {
        let now = Utc::now();
        let existing = match self.journal.load(&run_id).await {
            Ok(existing) => existing,
            Err(e) => return infra("reading the journal", &e, None),
        };
        let mut journaled = match existing {
            Some(journaled) if journaled.run.status == RunStatus::Succeeded => {
                debug!("run already succeeded; acknowledging the duplicate");
                return Answer::Ack;
            }
            Some(journaled)
                if journaled.run.status == RunStatus::Failed
                    && journaled.run.dlq_sequence.is_none() =>
            {
                return self.fail_into_dlq(journaled, &context, || {}).await;
            }
            Some(mut journaled) if journaled.run.status == RunStatus::Failed => {
                if !context.redrive {
                    debug!("run already failed and dead-lettered; terminating the duplicate");
                    return Answer::Term;
                }
                let run = &mut journaled.run;
                info!(redrives = run.redrives + 1, "re-driving failed run");
                run.attempts = 0;
                run.throttled = 0;
                run.redrives += 1;
                run.error = None;
                run.dlq_sequence = None;
                run.finished_at = None;
                run.trigger = trigger;
                journaled
            }
            Some(journaled) => {
                if let Some(wait) = not_yet_due(&journaled.run, now) {
                    debug!(
                        wait_ms = wait.as_millis() as u64,
                        "delivered before its retry is due; waiting"
                    );
                    return Answer::Nak(wait);
                }
                journaled
            }
            None => JournaledRun {
                run: RunRecord::new(run_id.clone(), self.workflow.name(), key, trigger, now),
                steps: Vec::new(),
            },
        };
        // Only attempts that run count: the start is durable before the workflow code runs, so a
        // crash mid-attempt still counts it, and a delivery that never got here (waiting for its
        // key at shutdown, an infrastructure failure) does not.
        let run = &mut journaled.run;
        run.attempts += 1;
        run.status = RunStatus::Running;
        run.updated_at = now;
        run.history.push(AttemptRecord {
            attempt: run.attempts,
            started_at: now,
            finished_at: None,
            outcome: None,
            error: None,
            retry_delay_ms: None,
        });
        let attempts = run.attempts;
        tracing::Span::current().record("attempt", attempts);
        if let Err(e) = self.journal.put(&journaled, Durability::Flush).await {
            journaled.run.attempts -= 1;
            return infra("journaling the run's start", &e, Some(&journaled.run));
        }

        // The run's record is the steps' for the attempt, and comes back when it ends.
        let shared = Arc::new(tokio::sync::Mutex::new(Attempt::new(journaled)));
        let steps = JournalSteps::new(self.journal.clone(), self.workflow.name(), shared.clone());
        let mut ctx = RunContext::new(run_id, attempts, Box::new(steps));
        let result = AssertUnwindSafe(self.workflow.run(&mut ctx, event))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Err(RunError::permanent(format!("workflow panicked: {}", panic_message(&*panic))))
            });
        drop(ctx);
        let (mut journaled, unflushed) = match Arc::try_unwrap(shared) {
            Ok(attempt) => attempt.into_inner(),
            Err(shared) => shared.lock().await.clone(),
        }
        .into_parts();
        // A step whose success is written behind is durable with the outcome's flushed write.
        let flushed = || {
            if let Some(step) = &unflushed {
                crate::fault::after_step(self.workflow.name(), step);
            }
        };

        let now = Utc::now();
        let run = &mut journaled.run;
        run.updated_at = now;
        let attempt = run.history.last_mut().expect("the attempt was just pushed");
        attempt.finished_at = Some(now);
        match result {
            Ok(output) => {
                attempt.outcome = Some(RunStatus::Succeeded);
                run.status = RunStatus::Succeeded;
                run.output = Some(output);
                run.error = None;
                run.finished_at = Some(now);
                if let Err(e) = self.journal.put(&journaled, Durability::Flush).await {
                    return infra("journaling the run's success", &e, Some(&journaled.run));
                }
                flushed();
                debug!(attempts = journaled.run.attempts, "run succeeded");
                self.announce(&journaled.run);
                Answer::Ack
            }
            Err(error) => {
                let record =
                    ErrorRecord { kind: error.kind_name().into(), message: error.message.clone() };
                attempt.error = Some(record.clone());
                run.error = Some(record);
                let verdict = self.retry.verdict(error.kind, run.attempts, run.throttled);
                let (delay, throttled) = match verdict {
                    Verdict::Retry(delay) => (delay, false),
                    Verdict::Wait(delay) => (delay, true),
                    Verdict::Fail => {
                        attempt.outcome = Some(RunStatus::Failed);
                        run.status = RunStatus::Failed;
                        run.finished_at = Some(now);
                        warn!(attempts = run.attempts, throttled = run.throttled, error = %error, kind = error.kind_name(), "run failed");
                        return self.fail_into_dlq(journaled, &context, flushed).await;
                    }
                };
                attempt.outcome = Some(RunStatus::Retrying);
                attempt.retry_delay_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
                run.status = RunStatus::Retrying;
                if throttled {
                    not_an_attempt(run);
                }
                if let Err(e) = self.journal.put(&journaled, Durability::Flush).await {
                    return infra("journaling the run's retry", &e, Some(&journaled.run));
                }
                flushed();
                let run = &journaled.run;
                info!(attempts = run.attempts, throttled = run.throttled, error = %error, delay_ms = delay.as_millis() as u64, "run will retry");
                Answer::Nak(delay)
            }
        }
    }

    /// Journals the failure (then calls `flushed`), copies the event to the DLQ, records where,
    /// then terminates.
    async fn fail_into_dlq(
        &self,
        mut journaled: JournaledRun,
        context: &MessageContext<'_>,
        flushed: impl FnOnce(),
    ) -> Answer {
        if let Err(e) = self.journal.put(&journaled, Durability::Flush).await {
            return infra("journaling the run's failure", &e, Some(&journaled.run));
        }
        flushed();
        let run = &journaled.run;
        let error = run
            .error
            .clone()
            .unwrap_or(ErrorRecord { kind: "permanent".into(), message: String::new() });
        let letter = DeadLetter {
            workflow: self.workflow.name(),
            run_id: Some(&run.id),
            key: Some(&run.key),
            subject: &context.message.subject,
            stream_sequence: context.stream_sequence,
            delivered: context.delivered,
            attempts: run.attempts,
            error_kind: &error.kind,
            error: &error.message,
        };
        let sequence = match self.dead_letter(context.message, &letter).await {
            Ok(sequence) => sequence,
            Err(Answer::Infra(mut failure)) => {
                failure.run = Some((run.id.clone(), run.key.clone(), run.attempts));
                return Answer::Infra(failure);
            }
            Err(answer) => return answer,
        };
        journaled.run.dlq_sequence = Some(sequence);
        if let Err(e) = self.journal.put(&journaled, Durability::Flush).await {
            return infra("journaling the DLQ entry", &e, Some(&journaled.run));
        }
        self.announce(&journaled.run);
        Answer::Term
    }

    async fn dead_letter(&self, message: &Message, letter: &DeadLetter<'_>) -> Result<u64, Answer> {
        match dlq::dead_letter(
            &self.js,
            &self.names,
            message.headers.as_ref(),
            message.payload.clone(),
            letter,
        )
        .await
        {
            Ok(published) => {
                info!(dlq_sequence = published.sequence, reason = letter.error, "dead-lettered");
                Ok(published.sequence)
            }
            Err(e) => Err(Answer::Infra(InfraFailure {
                what: "publishing to the DLQ",
                error: e.to_string(),
                dlq: true,
                run: None,
            })),
        }
    }

    /// Answers an infrastructure failure: Nak([`INFRA_RETRY`]) while this engine has retried the
    /// message fewer than [`MAX_INFRA_RETRIES`] times; then dead-letters it with kind
    /// `infrastructure` and terminates it, or, when the DLQ is what fails (or fails now too),
    /// terminates it with an error log naming its sequence. Every retry and escalation is logged
    /// and counted in the runtime's infrastructure metrics.
    async fn retry_or_escalate(&self, message: &Message, failure: InfraFailure) -> Answer {
        let workflow = self.workflow.name();
        let labels = InfraLabels {
            workflow: workflow.to_owned(),
            what: if failure.dlq { "dlq" } else { "journal" }.to_owned(),
        };
        let Ok(info) = message.info() else { return Answer::Nak(INFRA_RETRY) };
        let sequence = info.stream_sequence;
        let retries = self.infra_retries.bump(sequence);
        let (what, error) = (failure.what, &failure.error);
        if retries <= MAX_INFRA_RETRIES {
            metrics::infra_retries().get_or_create(&labels).inc();
            warn!(workflow, stream_sequence = sequence, retries, error = %error, "{what} failed; the message comes back in {INFRA_RETRY:?}");
            return Answer::Nak(INFRA_RETRY);
        }
        self.infra_retries.forget(sequence);
        metrics::infra_escalations().get_or_create(&labels).inc();
        let reason = format!("{what} failed {MAX_INFRA_RETRIES} times: {error}");
        if !failure.dlq {
            let (run_id, key, attempts) = match &failure.run {
                Some((run_id, key, attempts)) => {
                    (Some(run_id.as_str()), Some(key.as_str()), *attempts)
                }
                None => (None, None, 0),
            };
            let letter = DeadLetter {
                workflow,
                run_id,
                key,
                subject: &message.subject,
                stream_sequence: sequence,
                delivered: info.delivered,
                attempts,
                error_kind: dlq::KIND_INFRASTRUCTURE,
                error: &reason,
            };
            match dlq::dead_letter(
                &self.js,
                &self.names,
                message.headers.as_ref(),
                message.payload.clone(),
                &letter,
            )
            .await
            {
                Ok(published) => {
                    error!(workflow, stream_sequence = sequence, dlq_sequence = published.sequence, %reason, "giving up on infrastructure retries: dead-lettered");
                    return Answer::Term;
                }
                Err(e) => {
                    error!(workflow, stream_sequence = sequence, error = %e, "dead-lettering after infrastructure retries failed too");
                }
            }
        }
        error!(
            workflow,
            stream_sequence = sequence,
            run_id = failure.run.as_ref().map(|run| run.0.as_str()),
            %reason,
            "giving up on infrastructure retries: terminating the message without a dead letter; \
             it stays in the events stream at this sequence"
        );
        Answer::Term
    }

    fn announce(&self, run: &RunRecord) {
        let _ = self.finished.send(RunFinished {
            run_id: run.id.clone(),
            workflow: run.workflow.clone(),
            status: run.status,
            at: Utc::now(),
        });
    }
}

/// An infrastructure failure while `what`, for the run if known.
fn infra(what: &'static str, error: &dyn std::error::Error, run: Option<&RunRecord>) -> Answer {
    Answer::Infra(InfraFailure {
        what,
        error: error.to_string(),
        dlq: false,
        run: run.map(|run| (run.id.clone(), run.key.clone(), run.attempts)),
    })
}

/// How long a retrying run still has to wait when its message comes back before its retry is
/// due: a copy re-queued after `max_deliver` (see `poison`) arrives at once. Running it early
/// would cut short a wait a rate limit asked for (sending to GitHub during a limit may get the
/// integration banned), so it is Nak'd for the rest, neither run nor counted. `None` when due.
fn not_yet_due(run: &RunRecord, now: chrono::DateTime<Utc>) -> Option<Duration> {
    if run.status != RunStatus::Retrying {
        return None;
    }
    let last = run.history.last()?;
    let delay = chrono::Duration::milliseconds(i64::try_from(last.retry_delay_ms?).ok()?);
    let due = last.finished_at? + delay;
    (due - now).to_std().ok().filter(|wait| *wait > NOT_DUE_SLACK)
}

/// A delivery this close to its run's retry time is taken as due (clocks and timers are not
/// exact; JetStream redelivers a Nak'd message when its delay ends, give or take).
const NOT_DUE_SLACK: Duration = Duration::from_millis(250);

/// Undoes the count of a throttled delivery: it waited for a rate limit and is not one of the
/// run's attempts. Its history entry stays, replacing the previous one when that was a throttled
/// delivery of the same attempt too, so waiting many times does not grow the record.
fn not_an_attempt(run: &mut RunRecord) {
    run.attempts -= 1;
    run.throttled += 1;
    let n = run.history.len();
    if n >= 2 {
        let (previous, current) = (&run.history[n - 2], &run.history[n - 1]);
        let previous_throttled = previous.error.as_ref().is_some_and(|e| e.kind == THROTTLED_KIND);
        if previous_throttled && previous.attempt == current.attempt {
            run.history.remove(n - 2);
        }
    }
}

struct MessageContext<'a> {
    message: &'a Message,
    stream_sequence: u64,
    delivered: i64,
    redrive: bool,
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// One async mutex per key in use; entries are removed when the last holder or waiter leaves.
#[derive(Default)]
pub(crate) struct KeyLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub(crate) struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyLocks {
    pub(crate) async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let lock =
            self.locks.lock().expect("key map lock").entry(key.to_owned()).or_default().clone();
        let mut guard = KeyGuard { locks: self, key: key.to_owned(), guard: None };
        guard.guard = Some(lock.lock_owned().await);
        guard
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().expect("key map lock").len()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self.locks.locks.lock().expect("key map lock");
        if locks.get(&self.key).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redrive_header_counts_only_on_the_workflows_redrive_subject() {
        let names = Names::new("muster");
        let mut marked = HeaderMap::new();
        marked.insert(dlq::H_REDRIVE, "retry:ping-abc");
        let redrive = names.redrive_subject("ping", "payments");
        assert!(is_redrive(&names, "ping", &redrive, Some(&marked)));
        assert!(!is_redrive(&names, "ping", &redrive, None), "no header, no re-drive");
        assert!(!is_redrive(&names, "ping", &redrive, Some(&HeaderMap::new())));
        for subject in [
            "muster.events.muster.ping.payments", // a publisher setting the header
            "muster.runs.pong.payments",          // another workflow's re-drive
            "muster.runs.pingpong.payments",
            "muster.runs.ping",
            "muster.runs.ping.",
            "muster.runs.ping.a.b",
            "other.runs.ping.payments",
            "musterx.runs.ping.payments",
        ] {
            assert!(!is_redrive(&names, "ping", subject, Some(&marked)), "{subject}");
        }
    }

    #[test]
    fn events_are_run_only_from_the_subject_of_their_type() {
        let names = Names::new("muster");
        let ping = workflows::ping::Ping;
        let ok = |subject: &str, ty: &str| check_routing(&names, &ping, subject, ty);
        assert_eq!(ok("muster.events.muster.ping.k", "muster.ping"), Ok(()));
        assert_eq!(ok("muster.events.muster.ping._", "muster.ping"), Ok(()));
        for (subject, ty) in [
            ("muster.events.muster.ping.k", "muster.team.created"),
            ("muster.events.muster.ping.k", "muster"),
            ("muster.events.muster.ping.k", "muster.pin"),
            ("muster.events.muster.ping.a.b", "muster.ping"),
            ("muster.events.muster.ping", "muster.ping"),
            ("muster.runs.ping.k", "muster.team.created"),
            ("other.events.muster.ping.k", "muster.ping"),
        ] {
            let refused = ok(subject, ty).expect_err(subject);
            assert!(refused.contains(ty) || refused.contains(subject), "{refused}");
        }
        // A re-drive carries the type of the event it re-drives: one of the workflow's triggers.
        assert_eq!(ok("muster.runs.ping.k", "muster.ping"), Ok(()));
    }

    #[test]
    fn trigger_patterns_match_like_nats_subjects() {
        assert!(matches_pattern("muster.team.*", "muster.team.created"));
        assert!(!matches_pattern("muster.team.*", "muster.team.created.x"));
        assert!(!matches_pattern("muster.team.*", "muster.team"));
        assert!(matches_pattern("com.github.>", "com.github.push"));
        assert!(matches_pattern("com.github.>", "com.github.a.b"));
        assert!(!matches_pattern("com.github.>", "com.github"));
        assert!(matches_pattern("muster.ping", "muster.ping"));
        assert!(!matches_pattern("muster.ping", "muster.pings"));
    }

    #[test]
    fn infrastructure_retries_escalate_before_maxdeliver_retires_the_message() {
        const { assert!(MAX_INFRA_RETRIES < super::super::poison::MAX_DELIVER_SLACK) };
    }

    #[test]
    fn infra_retries_are_counted_per_message_and_forgotten() {
        let retries = InfraRetries::default();
        assert_eq!((retries.bump(7), retries.bump(7), retries.bump(8)), (1, 2, 1));
        retries.forget(7);
        assert_eq!(retries.bump(7), 1);
    }

    #[test]
    fn a_throttled_delivery_is_uncounted_and_keeps_one_history_entry_per_attempt() {
        let now = Utc::now();
        let entry = |attempt, kind: &str| AttemptRecord {
            attempt,
            started_at: now,
            finished_at: Some(now),
            outcome: Some(RunStatus::Retrying),
            error: Some(ErrorRecord { kind: kind.into(), message: String::new() }),
            retry_delay_ms: Some(1000),
        };
        let trigger = TriggerRecord {
            event: serde_json::json!({}),
            nats_subject: "s".into(),
            stream_sequence: 1,
        };
        let mut run = RunRecord {
            status: RunStatus::Retrying,
            attempts: 2,
            history: vec![entry(1, "retryable"), entry(2, THROTTLED_KIND)],
            ..RunRecord::new("r", "w", "k", trigger, now)
        };
        not_an_attempt(&mut run);
        assert_eq!((run.attempts, run.throttled, run.history.len()), (1, 1, 2));
        for _ in 0..3 {
            run.attempts += 1;
            run.history.push(entry(run.attempts, THROTTLED_KIND));
            not_an_attempt(&mut run);
        }
        assert_eq!((run.attempts, run.throttled), (1, 4));
        let kinds: Vec<_> =
            run.history.iter().map(|a| (a.attempt, a.error.clone().unwrap().kind)).collect();
        assert_eq!(kinds, [(1, "retryable".to_owned()), (2, THROTTLED_KIND.to_owned())]);
    }

    #[tokio::test]
    async fn one_holder_per_key_and_entries_are_cleaned_up() {
        let locks = Arc::new(KeyLocks::default());
        let first = locks.lock("a").await;
        let _other_key = locks.lock("b").await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _second = locks.lock("a").await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a second holder of key a waits");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        drop(_other_key);
        assert_eq!(locks.len(), 0);
    }
}
