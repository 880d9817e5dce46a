//! Stuck runs against a real nats-server (>= 2.10, found via `NATS_SERVER_BIN`; run the tests
//! with `scripts/test`, which bootstraps one): a run left running whose message is gone from the
//! events stream is listed by `engine runs list --status stuck`, failed by `engine runs fail`
//! (through the running engine), and re-driven from its dead letter.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use engine::bus::{self, Names};
use engine::config::{Config, RuntimeConfig};
use engine::journal::sled::SledJournal;
use engine::journal::{
    AttemptRecord, Durability, FAILED_BY_OPERATOR, Journal, RunRecord, RunStatus, TriggerRecord,
};
use engine::runtime::dlq::Dlq;
use engine::runtime::{Engine, run_id};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use workflows::{Event, EventBuilder, EventBuilderV10, RunContext, RunError, Workflow};

/// Upper bound for the test's body.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// `echo` (`test.echo`): one step, then succeeds.
struct Echo;

#[async_trait]
impl Workflow for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn triggers(&self) -> &'static [&'static str] {
        &["test.echo"]
    }
    async fn run(&self, ctx: &mut RunContext, _: Event) -> Result<serde_json::Value, RunError> {
        let said: String = ctx.step("say", || async { Ok::<_, RunError>("hello".into()) }).await?;
        Ok(json!({ "said": said }))
    }
}

fn echo_event(id: &str) -> Event {
    EventBuilderV10::new().id(id).source("/test").ty("test.echo").subject("team-a").build().unwrap()
}

/// A run as the engine leaves it when it dies mid-attempt: running, its attempt open.
fn running(event: &Event, subject: &str, sequence: u64) -> RunRecord {
    let now = Utc::now();
    let trigger = TriggerRecord {
        event: serde_json::to_value(event).unwrap(),
        nats_subject: subject.into(),
        stream_sequence: sequence,
    };
    RunRecord {
        attempts: 1,
        history: vec![AttemptRecord {
            attempt: 1,
            started_at: now,
            finished_at: None,
            outcome: None,
            error: None,
            retry_delay_ms: None,
        }],
        ..RunRecord::new(run_id("echo", event), "echo", "team-a", trigger, now)
    }
}

async fn finished(journal: &dyn Journal, id: &str, redrives: u32) -> RunRecord {
    loop {
        if let Some(run) = journal.run(id).await.unwrap()
            && run.redrives == redrives
            && run.status.is_finished()
        {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_api_documents_the_stuck_filter() {
    let spec: serde_json::Value = serde_json::from_str(&engine::api::openapi_json()).unwrap();
    let params = spec["paths"]["/v1/runs"]["get"]["parameters"].as_array().unwrap();
    let status = params.iter().find(|p| p["name"] == "status").unwrap();
    let values = status["schema"]["enum"].as_array().expect("the statuses, inline");
    assert!(values.contains(&json!("stuck")) && values.contains(&json!("failed")), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_message_is_gone_is_listed_failed_and_redriven() {
    tokio::time::timeout(TEST_TIMEOUT, scenario()).await.expect("the test finishes in time");
}

async fn scenario() {
    let server = common::server().await;
    let mut natsd = server.natsd;
    let config = Config {
        runtime: RuntimeConfig {
            ack_wait: Duration::from_secs(5),
            grace_period: Duration::from_secs(5),
            ..RuntimeConfig::default()
        },
        schedules: Vec::new(),
        ..server.config
    };
    let names = Names::new(config.nats.prefix.clone());

    // The event was delivered, the engine died mid-run, and the message aged out (here: purged).
    let (_, js) = bus::connect(&config).await.unwrap();
    bus::ensure_streams(&js, &names, &config.streams).await.unwrap();
    let lost = echo_event("lost-1");
    let published = bus::publish_event(&js, &names, &lost).await.unwrap();
    js.get_stream(names.events_stream()).await.unwrap().purge().await.unwrap();
    let stuck = running(&lost, &published.subject, published.sequence);
    // A run whose message is still ahead in the stream is not stuck.
    let alive = running(&echo_event("alive-1"), &published.subject, published.sequence + 1000);
    {
        let journal = SledJournal::open(&config.journal_dir()).unwrap();
        journal.put_run(&stuck, Durability::Flush).await.unwrap();
        journal.put_run(&alive, Durability::Flush).await.unwrap();
    }

    let engine = Engine::start(config.clone(), vec![Arc::new(Echo)]).await.unwrap();
    let journal = engine.journal();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(engine.run(shutdown.clone()));

    let out = common::cli(&config, &["runs", "list", "--status", "stuck", "--json"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<RunRecord> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [stuck.id.as_str()]);

    let out = common::cli(&config, &["runs", "fail", &alive.id, "--reason", "tidy up"]).await;
    assert!(!out.status.success(), "a run whose message is still there is not failed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not stuck"));
    let fail = ["runs", "fail", &stuck.id, "--reason", "message aged out", "--by", "alice"];
    let out = common::cli(&config, &[&fail[..], &["--json"]].concat()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let failed = journal.run(&stuck.id).await.unwrap().unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    let error = failed.error.clone().unwrap();
    assert_eq!(error.kind, FAILED_BY_OPERATOR);
    assert_eq!(error.message, "message aged out (failed by alice)");
    assert!(failed.finished_at.is_some());
    assert_eq!(failed.history[0].outcome, Some(RunStatus::Failed), "the open attempt is closed");
    let seq = failed.dlq_sequence.expect("the run's event is in the DLQ");
    let out = common::cli(&config, &["runs", "list", "--status", "stuck", "--json"]).await;
    assert_eq!(serde_json::from_slice::<Vec<RunRecord>>(&out.stdout).unwrap(), []);

    // Re-driven like any failed run: from its dead letter, running its steps.
    let dlq = Dlq::new(js.clone(), names.clone());
    let letter = dlq.show(seq).await.unwrap();
    assert_eq!(letter.entry.kind, FAILED_BY_OPERATOR);
    assert_eq!(letter.entry.run_id.as_deref(), Some(stuck.id.as_str()));
    dlq.replay(seq, false).await.unwrap();
    let redriven = finished(journal.as_ref(), &stuck.id, 1).await;
    assert_eq!(redriven.status, RunStatus::Succeeded, "{redriven:#?}");
    assert_eq!(redriven.output, Some(json!({ "said": "hello" })));

    shutdown.cancel();
    running.await.unwrap().unwrap();
    natsd.stop().await.unwrap();
}
