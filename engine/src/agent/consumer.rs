//! The fast path: a durable JetStream consumer on the environment's `muster.namespace.changed`
//! subject, one record per event.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use workflows::records::NamespaceRecord;
use workflows::sync_team::NAMESPACE_CHANGED;

use super::Reconciler;
use crate::bus::{self, codec};
use crate::config::Config;

/// Wait before re-delivering an event whose namespace could not be handled.
const NAK_DELAY: Duration = Duration::from_secs(5);
/// Deliveries of one event before the agent leaves it to the full reconcile (which retries
/// failed namespaces with backoff), so a namespace that keeps failing does not cost a request
/// every few seconds forever.
const MAX_DELIVERIES: i64 = 5;
/// How long the agent may hold an event before JetStream delivers it again.
const ACK_WAIT: Duration = Duration::from_secs(60);
/// Reconnect delays after NATS or the consumer failed: 1 s doubling to 30 s.
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Connects, creates or updates the durable consumer, and handles events until `shutdown`;
/// reconnects (with backoff) whenever NATS goes away.
pub async fn run(config: Config, reconciler: Arc<Reconciler>, shutdown: CancellationToken) {
    let mut delay = Duration::from_secs(1);
    loop {
        match consume(&config, &reconciler, &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                reconciler.set_jetstream(None);
                warn!(error = %e, retry_in = ?delay, "agent consumer stopped; reconnecting");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

async fn consume(
    config: &Config,
    reconciler: &Arc<Reconciler>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let (_client, js) = bus::connect(config).await?;
    let names = bus::Names::new(config.nats.prefix.clone());
    let environment = &reconciler.options.settings.environment;
    let subject = format!("{}.events.{NAMESPACE_CHANGED}.{environment}", names.prefix());
    let name = reconciler.options.consumer_name();
    let consumer = js
        .create_consumer_on_stream(
            pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!(
                    "Muster agent of cluster {} in environment {environment}",
                    reconciler.options.settings.cluster
                )),
                deliver_policy: DeliverPolicy::New,
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: 256,
                filter_subject: subject.clone(),
                ..Default::default()
            },
            names.events_stream(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("creating or updating consumer {name}: {e}"))?;
    reconciler.set_jetstream(Some(js));
    info!(consumer = %name, %subject, "consuming namespace changes");
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("pulling from consumer {name}: {e}"))?;
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            message = messages.next() => message,
        };
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(anyhow::anyhow!("consumer {name}: {e}")),
            None => return Err(anyhow::anyhow!("consumer {name} ended")),
        };
        let ack = match record_of(&message, config.streams.max_event_bytes) {
            Err(why) => {
                // Nothing an agent can do with it; the engine's DLQ is for workflows.
                warn!(subject = %message.subject, reason = %why, "skipping an undecodable event");
                AckKind::Term
            }
            Ok(record) => match reconciler.reconcile_one(&record).await {
                Ok(outcome) => {
                    debug!(namespace = %record.name, ?outcome, "event handled");
                    AckKind::Ack
                }
                Err(e) => {
                    let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
                    if delivered >= MAX_DELIVERIES {
                        warn!(
                            namespace = %record.name, error = %e, delivered,
                            "event not handled; left to the full reconcile"
                        );
                        AckKind::Ack
                    } else {
                        warn!(namespace = %record.name, error = %e, "event not handled; retrying");
                        AckKind::Nak(Some(NAK_DELAY))
                    }
                }
            },
        };
        if let Err(e) = message.ack_with(ack).await {
            warn!(error = %e, "acknowledging an event failed");
        }
    }
}

fn record_of(
    message: &async_nats::jetstream::Message,
    max: usize,
) -> Result<NamespaceRecord, String> {
    let event = codec::decode(message.headers.as_ref(), &message.payload, max)
        .map_err(|e| e.to_string())?;
    let data = workflows::event::data_json(&event).map_err(|e| e.to_string())?;
    serde_json::from_value(data).map_err(|e| format!("not a namespace record: {e}"))
}
