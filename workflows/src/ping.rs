//! `ping`: three journaled steps and no side effects, triggered by `muster.ping`.
//!
//! It exercises the whole durable path (consume, journal, ack) without touching the outside
//! world, which makes it the operator's smoke test (`engine ping`) and the benchmark's workload.

use async_trait::async_trait;
use cloudevents::{AttributesReader, Event};
use serde_json::json;

use crate::workflow::{RunContext, RunError, Workflow};

/// The CloudEvent type that triggers [`Ping`].
pub const PING_TYPE: &str = "muster.ping";

pub struct Ping;

#[async_trait]
impl Workflow for Ping {
    fn name(&self) -> &'static str {
        "ping"
    }

    fn triggers(&self) -> &'static [&'static str] {
        &[PING_TYPE]
    }

    /// Pings are independent of each other: each is its own key, so they run in parallel.
    fn key(&self, event: &Event) -> String {
        crate::event::subject_token(Some(event.id()))
    }

    async fn run(&self, ctx: &mut RunContext, event: Event) -> Result<serde_json::Value, RunError> {
        let id = event.id().to_owned();
        let received: String = ctx.step("receive", || async { Ok::<_, RunError>(id) }).await?;
        let data = crate::event::data_json(&event).unwrap_or(serde_json::Value::Null);
        let echoed: serde_json::Value =
            ctx.step("echo", || async { Ok::<_, RunError>(data) }).await?;
        let reply = json!({ "pong": received, "echo": echoed });
        ctx.step("reply", || async { Ok::<_, RunError>(reply) }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryJournal;
    use cloudevents::{EventBuilder, EventBuilderV10};

    #[tokio::test]
    async fn ping_runs_three_steps_and_echoes_its_data() {
        let event = EventBuilderV10::new()
            .id("p-1")
            .source("/cli")
            .ty(PING_TYPE)
            .data("application/json", json!({"n": 7}))
            .build()
            .unwrap();
        let journal = MemoryJournal::default();
        let mut ctx = RunContext::new("ping-x", 1, Box::new(journal.clone()));
        let output = Ping.run(&mut ctx, event).await.unwrap();
        assert_eq!(output, json!({"pong": "p-1", "echo": {"n": 7}}));
        assert_eq!(journal.starts(), ["receive", "echo", "reply"]);
    }
}
