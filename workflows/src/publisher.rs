//! The [`Publisher`] port: how a workflow puts an event on the bus.

use async_trait::async_trait;
use cloudevents::Event;
use serde::{Deserialize, Serialize};

use crate::workflow::RunError;

/// Where the bus stored a published event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The event's sequence in the events stream (for a duplicate: the original's).
    pub sequence: u64,
    /// True when the bus already held an event with the same source and id and dropped this one.
    pub duplicate: bool,
}

/// Publishes CloudEvents; the engine implements it over JetStream.
///
/// # Guarantees
/// - `Ok` means the event is stored durably (the PubAck was received).
/// - Deduplication is by CloudEvent `source` + `id` (JetStream's `Nats-Msg-Id` is their hash):
///   publishing the same source and id again inside the stream's duplicate window stores
///   nothing and answers `duplicate: true`. A workflow that derives the id from its run and
///   what it announces can therefore re-run a publishing step after a crash without
///   announcing twice: **the event id is the dedupe key**.
///
/// # Errors
/// Retryable when the bus cannot be reached or does not acknowledge in time (the event may or
/// may not be stored; publishing it again with the same id is safe), permanent when the event
/// cannot be encoded or is too large.
#[async_trait]
pub trait Publisher: Send + Sync {
    async fn publish(&self, event: Event) -> Result<Published, RunError>;
}
