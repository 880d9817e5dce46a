//! The pull loop every durable consumer of the runtime shares: pull messages until shutdown,
//! re-subscribing with a capped, doubling pause when the pull or its stream fails.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Bounds of the pause before re-subscribing after the message stream failed.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);

/// Pulls `consumer`'s messages, `batch` per request, and awaits `handle` on each in turn until
/// `shutdown` (which also cancels a `handle` in progress: the message comes back after its ack
/// wait). `what` names the messages in logs.
pub(crate) async fn pull<F, Fut>(
    consumer: &PullConsumer,
    batch: usize,
    what: &str,
    shutdown: &CancellationToken,
    mut handle: F,
) where
    F: FnMut(Message) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut pause = RESUBSCRIBE_MIN;
    'subscribe: while !shutdown.is_cancelled() {
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages();
        let subscribed = tokio::select! {
            _ = shutdown.cancelled() => break,
            result = messages => result,
        };
        match subscribed {
            Ok(mut messages) => loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => break 'subscribe,
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        pause = RESUBSCRIBE_MIN;
                        tokio::select! {
                            _ = shutdown.cancelled() => break 'subscribe,
                            () = handle(message) => {}
                        }
                    }
                    Some(Err(e)) => {
                        warn!(what, error = %e, "message stream error; re-subscribing");
                        break;
                    }
                    None => break,
                }
            },
            Err(e) => warn!(what, error = %e, "cannot pull messages; retrying"),
        }
        tokio::select! { _ = shutdown.cancelled() => break, _ = tokio::time::sleep(pause) => {} }
        pause = (pause * 2).min(RESUBSCRIBE_MAX);
    }
}
