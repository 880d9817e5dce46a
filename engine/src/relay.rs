//! The outbox relay: publishes the record events that the records store wrote in the same
//! transaction as each change, then removes them from the outbox.
//!
//! Each event becomes a CloudEvent in binary mode: `id` = the outbox id (a ULID), `source` =
//! [`SOURCE`], `type` = the outbox event type (`muster.team.created`, …), `subject` = the team
//! slug or environment name, `time` = when the change was stored, `data` = the record, and
//! the auth context extensions `authtype` and `authid` naming who made the change (absent on
//! events stored before the outbox recorded it).
//!
//! # Guarantees
//! - Only durable events are published: the store's `outbox_pending` returns an event only once
//!   its change is on disk (sled: read under the writer lock a mutation holds through its
//!   flush; PostgreSQL: committed rows only), so a crash cannot lose a change already announced.
//! - An event is removed from the outbox only after JetStream acknowledged it (PubAck), so a
//!   crash at any point loses no event: the next relay (after a restart) publishes it.
//! - A crash between the PubAck and the removal publishes the event again; its `Nats-Msg-Id`
//!   (hash of source and id) makes JetStream drop the copy within the duplicate window, so the
//!   stream holds each event once.
//! - Events are published in outbox order; a failed publish stops the pass, so a record's later
//!   change is never announced before an earlier one.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Context;
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use workflows::records::{OutboxEvent, Records};

use crate::bus::{self, BusError, Names};
use crate::config::OutboxConfig;
use crate::metrics::Metrics;

/// The CloudEvent `source` of record events.
pub const SOURCE: &str = "/muster/records";
/// Events read from the outbox per pass.
const BATCH: usize = 100;
/// First delay between publish attempts of one event; doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How many pending events the depth gauge counts at most.
const DEPTH_CAP: usize = 1000;

/// Why a relay pass stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("reading or clearing the outbox: {0}")]
    Records(#[from] workflows::records::RecordsError),
    #[error("publishing outbox event {id}: {source}")]
    Publish {
        id: String,
        #[source]
        source: BusError,
    },
    #[error("outbox event {id} cannot be encoded: {reason}")]
    Encode { id: String, reason: String },
    #[error("stopped")]
    Shutdown,
}

/// The CloudEvent announcing an outbox event.
///
/// # Errors
/// The event type is not a valid CloudEvent (the store only writes known types).
pub fn cloud_event(event: &OutboxEvent) -> Result<Event, RelayError> {
    let mut builder = EventBuilderV10::new()
        .id(event.id.clone())
        .source(SOURCE)
        .ty(event.event_type.clone())
        .subject(event.subject.clone())
        .time(event.created_at)
        .data("application/json", event.data.clone());
    if let Some(actor) = &event.actor {
        builder = builder
            .extension("authtype", actor.kind.as_str())
            .extension("authid", actor.id.as_str());
    }
    builder.build().map_err(|e| RelayError::Encode { id: event.id.clone(), reason: e.to_string() })
}

/// Publishes the outbox to JetStream.
pub struct Relay {
    records: Arc<dyn Records>,
    js: Context,
    names: Names,
    wake: Arc<Notify>,
    config: OutboxConfig,
    metrics: Arc<Metrics>,
}

impl Relay {
    pub fn new(
        records: Arc<dyn Records>,
        js: Context,
        names: Names,
        wake: Arc<Notify>,
        config: OutboxConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { records, js, names, wake, config, metrics }
    }

    /// Runs passes until `shutdown`: one at start (events left by a crash), one whenever a
    /// write notifies `wake`, and one every `poll-interval`.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(poll = ?self.config.poll_interval, "outbox relay started");
        loop {
            match self.pass(&shutdown).await {
                Ok(0) => {}
                Ok(published) => debug!(published, "outbox relay pass"),
                Err(RelayError::Shutdown) => break,
                Err(e) => warn!(error = %e, "outbox relay pass stopped; retrying at the next pass"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        info!("outbox relay stopped");
    }

    /// Publishes every pending event, oldest first; returns how many were published.
    ///
    /// # Errors
    /// The outbox could not be read or cleared, or an event could not be published within
    /// `max-attempts` (the events before it are published and removed).
    pub async fn pass(&self, shutdown: &CancellationToken) -> Result<usize, RelayError> {
        let mut published = 0;
        loop {
            let pending = self.records.outbox_pending(DEPTH_CAP).await?;
            self.metrics.outbox_depth.set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
            if pending.is_empty() {
                return Ok(published);
            }
            let mut done = Vec::with_capacity(BATCH);
            let mut failure = None;
            for event in pending.iter().take(BATCH) {
                match self.publish(event, shutdown).await {
                    Ok(()) => done.push(event.id.clone()),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if !done.is_empty() {
                self.records.outbox_remove(&done).await?;
                published += done.len();
                self.metrics
                    .outbox_depth
                    .set(i64::try_from(pending.len() - done.len()).unwrap_or(i64::MAX));
            }
            if let Some(e) = failure {
                return Err(e);
            }
        }
    }

    /// Publishes one event, retrying NATS failures with backoff up to `max-attempts`.
    async fn publish(
        &self,
        event: &OutboxEvent,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        let cloud = cloud_event(event)?;
        let mut delay = INITIAL_BACKOFF;
        let mut attempt = 1;
        loop {
            match bus::publish_event(&self.js, &self.names, &cloud).await {
                Ok(ack) => {
                    self.metrics.outbox_published.inc();
                    debug!(id = %event.id, ty = %event.event_type, seq = ack.sequence, duplicate = ack.duplicate, "published record event");
                    return Ok(());
                }
                Err(source) => {
                    self.metrics.outbox_errors.inc();
                    if attempt >= self.config.max_attempts {
                        return Err(RelayError::Publish { id: event.id.clone(), source });
                    }
                    warn!(id = %event.id, attempt, error = %source, "publishing a record event failed; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Err(RelayError::Shutdown),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::AttributesReader;
    use workflows::records::Actor;

    fn team_created(actor: Option<Actor>) -> OutboxEvent {
        OutboxEvent {
            id: "01JABCDEF".into(),
            event_type: "muster.team.created".into(),
            subject: "payments".into(),
            data: serde_json::json!({"slug": "payments"}),
            created_at: chrono::Utc::now(),
            actor,
        }
    }

    #[test]
    fn outbox_events_become_cloud_events_with_their_id() {
        let cloud = cloud_event(&team_created(None)).unwrap();
        assert_eq!(cloud.id(), "01JABCDEF");
        assert_eq!(cloud.source().as_str(), SOURCE);
        assert_eq!(cloud.ty(), "muster.team.created");
        assert_eq!(cloud.subject(), Some("payments"));
        let names = Names::new("muster");
        assert_eq!(names.event_subject(&cloud), "muster.events.muster.team.created.payments");
        assert!(cloud.extension("authid").is_none(), "no actor, no auth context");
    }

    #[test]
    fn the_actor_becomes_the_auth_context() {
        let cloud = cloud_event(&team_created(Some(Actor::new("user", "bob")))).unwrap();
        assert_eq!(cloud.extension("authtype").map(ToString::to_string).as_deref(), Some("user"));
        assert_eq!(cloud.extension("authid").map(ToString::to_string).as_deref(), Some("bob"));
    }
}
