//! The [`Publisher`] port over JetStream, for workflows that announce events.

use std::sync::{Arc, OnceLock};

use async_nats::jetstream::Context;
use async_trait::async_trait;
use cloudevents::Event;
use workflows::RunError;
use workflows::publisher::{Published, Publisher};

use crate::bus::{self, BusError, Names};

/// Publishes with [`bus::publish_event`] (binary mode, `Nats-Msg-Id` from source and id).
///
/// It is created before the engine connects (workflows are built first) and bound to the
/// JetStream context once connected; the runtime starts runs only after that.
#[derive(Clone, Default)]
pub struct JetStreamPublisher {
    bound: Arc<OnceLock<(Context, Names)>>,
}

impl JetStreamPublisher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds the publisher to a connection; later calls are ignored.
    pub fn bind(&self, js: Context, names: Names) {
        let _ = self.bound.set((js, names));
    }
}

#[async_trait]
impl Publisher for JetStreamPublisher {
    async fn publish(&self, event: Event) -> Result<Published, RunError> {
        let (js, names) = self
            .bound
            .get()
            .ok_or_else(|| RunError::retryable("the publisher is not connected yet"))?;
        match bus::publish_event(js, names, &event).await {
            Ok(published) => {
                Ok(Published { sequence: published.sequence, duplicate: published.duplicate })
            }
            Err(e @ BusError::InvalidType(_)) => Err(RunError::permanent(e.to_string())),
            Err(e) => Err(RunError::retryable(format!("publishing {}: {e}", event_label(&event)))),
        }
    }
}

fn event_label(event: &Event) -> String {
    use cloudevents::AttributesReader;
    format!("{} {}", event.ty(), event.id())
}
