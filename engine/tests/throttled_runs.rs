//! Throttled runs against a real nats-server (>= 2.10, found via `NATS_SERVER_BIN`; run the
//! tests with `scripts/test`, which bootstraps one): a rate-limit wait is not a failed attempt.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use engine::bus::{self, Names};
use engine::config::{Config, RuntimeConfig};
use engine::journal::{RunRecord, RunStatus};
use engine::runtime::{Engine, run_id};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use workflows::{Event, EventBuilder, EventBuilderV10, RunContext, RunError, Workflow};

/// Upper bound for the test's body.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// What the limited workflow's rate limit asks for.
const AFTER: Duration = Duration::from_millis(200);

/// `limited` (`test.limited`): throttled on its first `throttles` calls, then fails once with a
/// retryable error, then succeeds.
struct Limited {
    throttles: u32,
    calls: Arc<AtomicU32>,
}

#[async_trait]
impl Workflow for Limited {
    fn name(&self) -> &'static str {
        "limited"
    }
    fn triggers(&self) -> &'static [&'static str] {
        &["test.limited"]
    }
    async fn run(&self, ctx: &mut RunContext, _: Event) -> Result<serde_json::Value, RunError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call <= self.throttles {
            return Err(RunError::throttled(format!("rate limited (call {call})"), AFTER));
        }
        if call == self.throttles + 1 {
            return Err(RunError::retryable("a real failure"));
        }
        Ok(json!({ "attempt": ctx.attempt(), "calls": call }))
    }
}

async fn finished(journal: &dyn engine::journal::Journal, id: &str) -> RunRecord {
    loop {
        if let Some(run) = journal.run(id).await.unwrap()
            && run.status.is_finished()
        {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn throttled_deliveries_do_not_use_up_attempts() {
    let server = common::server().await;
    let mut natsd = server.natsd;
    let config = Config {
        runtime: RuntimeConfig {
            max_attempts: 2,
            backoff_initial: Duration::from_millis(100),
            ack_wait: Duration::from_secs(5),
            grace_period: Duration::from_secs(5),
            ..RuntimeConfig::default()
        },
        ..server.config
    };
    let calls = Arc::new(AtomicU32::new(0));
    // Four throttles with only two attempts: each would have been a failed attempt before.
    let limited = Limited { throttles: 4, calls: calls.clone() };

    let engine = Engine::start(config.clone(), vec![Arc::new(limited)]).await.unwrap();
    let journal = engine.journal();
    let js = engine.jetstream().clone();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(engine.run(shutdown.clone()));
    let event = EventBuilderV10::new()
        .id("l-1")
        .source("/test")
        .ty("test.limited")
        .subject("team-a")
        .build()
        .unwrap();
    bus::publish_event(&js, &Names::new(config.nats.prefix.clone()), &event).await.unwrap();

    let id = run_id("limited", &event);
    let run = tokio::time::timeout(TEST_TIMEOUT, finished(journal.as_ref(), &id))
        .await
        .expect("the run finishes in time");
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    assert_eq!(run.dlq_sequence, None);
    assert_eq!((run.attempts, run.throttled), (2, 4), "four throttles, two attempts");
    assert_eq!(run.output, Some(json!({ "attempt": 2, "calls": 6 })));
    // One entry for the throttled waits of attempt 1 (the last one), then the two attempts.
    let history: Vec<_> = run
        .history
        .iter()
        .map(|a| (a.attempt, a.error.as_ref().map(|e| e.kind.as_str()), a.outcome))
        .collect();
    assert_eq!(
        history,
        [
            (1, Some("throttled"), Some(RunStatus::Retrying)),
            (1, Some("retryable"), Some(RunStatus::Retrying)),
            (2, None, Some(RunStatus::Succeeded)),
        ]
    );
    let throttled_delay = Duration::from_millis(run.history[0].retry_delay_ms.unwrap());
    assert!(throttled_delay >= AFTER, "never sooner than the limit asked: {throttled_delay:?}");

    shutdown.cancel();
    running.await.unwrap().unwrap();
    natsd.stop().await.unwrap();
}
