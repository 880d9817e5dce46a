//! No message loops for ever, and no poison message costs another event (issue 11, section 1,
//! and the attempt count of section 2): a real nats-server per test, the engine as a child process
//! or, for tests that need their own workflows, in process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::pull;
use async_trait::async_trait;
use bytes::Bytes;
use e2e::harness::{WAIT, World, event, wait_for};
use engine::config::{Config, NatsConfig, RuntimeConfig};
use engine::journal::{RunRecord, RunStatus};
use engine::metrics::{InfraLabels, infra_escalations, infra_retries};
use engine::runtime::dlq::{DlqEntry, DlqMessage};
use engine::runtime::{Engine, run_id};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use workflows::{AttributesReader, Event, RunContext, RunError, Workflow};

/// Dead letters, via `engine dlq list --json`, once there are at least `n`.
async fn dead_letters(world: &World, n: usize) -> anyhow::Result<Vec<DlqEntry>> {
    wait_for(&format!("{n} dead letters"), WAIT, || async {
        let entries: Vec<DlqEntry> = world.cli_json(&["dlq", "list", "--json"]).await.ok()?;
        (entries.len() >= n).then_some(entries)
    })
    .await
}

/// Waits until a workflow's consumer has nothing pending and nothing unanswered.
async fn consumer_drained(world: &mut World, workflow: &str) -> anyhow::Result<()> {
    let stream = world.jetstream().await?.get_stream("MUSTER_EVENTS").await?;
    wait_for(&format!("consumer {workflow} to answer everything"), WAIT, || {
        let stream = stream.clone();
        async move {
            let mut consumer = stream.get_consumer::<pull::Config>(workflow).await.ok()?;
            let info = consumer.info().await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        }
    })
    .await
}

#[tokio::test]
async fn an_event_on_the_subject_of_another_type_is_dead_lettered_not_run() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let mut engine = world.start_engine().await?;
    let js = world.jetstream().await?;
    // A `muster.team.created` event on the ping subject: ping's consumer receives it.
    let created = event("muster.team.created", "c-1", "payments", json!({"slug": "payments"}));
    let (headers, body) = engine::bus::codec::encode(&created);
    engine::bus::publish_raw(&js, "muster.events.muster.ping.payments".into(), headers, body)
        .await?;

    let entries = dead_letters(&world, 1).await?;
    let entry = &entries[0];
    assert_eq!((entry.workflow.as_str(), entry.kind.as_str()), ("ping", "type-mismatch"));
    assert!(
        entry.reason.contains("\"muster.team.created\"")
            && entry.reason.contains("muster.events.muster.ping.payments"),
        "{}",
        entry.reason
    );
    assert_eq!(entry.run_id, None, "no run was made");
    consumer_drained(&mut world, "ping").await?;
    assert!(world.runs("ping").await?.is_empty(), "ping did not run the team event");

    // Replaying it could only dead-letter it again: refused unless forced.
    let seq = entry.seq.to_string();
    let refused = world.cli(&["dlq", "replay", &seq]).await.expect_err("replay is refused");
    assert!(refused.to_string().contains("type-mismatch"), "{refused}");
    assert_eq!(world.cli_json::<Vec<DlqEntry>>(&["dlq", "list", "--json"]).await?.len(), 1);
    world.cli(&["dlq", "replay", &seq, "--force"]).await?;
    // Forced, the re-drive reaches ping again, whose triggers do not include the type.
    let entries = wait_for("the forced re-drive to be dead-lettered again", WAIT, || async {
        let entries: Vec<DlqEntry> = world.cli_json(&["dlq", "list", "--json"]).await.ok()?;
        entries.iter().any(|e| e.seq != entry.seq).then_some(entries)
    })
    .await?;
    assert_eq!(entries.len(), 1, "the replayed letter was removed: {entries:?}");
    assert_eq!(entries[0].kind, "type-mismatch");
    assert!(entries[0].reason.contains("does not trigger workflow ping"), "{}", entries[0].reason);
    assert!(world.runs("ping").await?.is_empty());
    engine.stop().await
}

#[tokio::test]
async fn undecodable_dead_letters_are_replayed_only_when_forced() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let mut engine = world.start_engine().await?;
    let js = world.jetstream().await?;
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", "garbage-1");
    engine::bus::publish_raw(
        &js,
        "muster.events.muster.ping._".into(),
        headers,
        Bytes::from_static(b"{not json"),
    )
    .await?;
    let entries = dead_letters(&world, 1).await?;
    assert_eq!(entries[0].kind, "invalid-json");
    let seq = entries[0].seq.to_string();

    let refused = world.cli(&["dlq", "replay", &seq]).await.expect_err("replay is refused");
    assert!(
        refused
            .to_string()
            .contains(&format!("dead letter {seq} (kind invalid-json) is not replayed")),
        "{refused}"
    );
    let refused = world.cli(&["dlq", "replay", "--all"]).await.expect_err("--all skips it");
    assert!(refused.to_string().contains("invalid-json"), "{refused}");
    let still: Vec<DlqEntry> = world.cli_json(&["dlq", "list", "--json"]).await?;
    assert_eq!(still, entries, "nothing was re-driven");

    let replayed = world.cli(&["dlq", "replay", &seq, "--force"]).await?;
    assert!(replayed.contains(&format!("replayed dead letter {seq}")), "{replayed}");
    let again = wait_for("the forced replay to be dead-lettered again", WAIT, || async {
        let entries: Vec<DlqEntry> = world.cli_json(&["dlq", "list", "--json"]).await.ok()?;
        entries.iter().any(|e| e.seq.to_string() != seq).then_some(entries)
    })
    .await?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].kind, "invalid-json");
    engine.stop().await
}

#[tokio::test]
async fn a_dead_letter_over_max_payload_is_truncated_instead_of_looping() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.set("MUSTER_STREAMS__MAX_EVENT_BYTES", "4096");
    let mut engine = world.start_engine().await?;
    let client = world.client().await?;
    let max_payload = client.server_info().max_payload;
    let js = world.jetstream().await?;
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", "huge-1");
    headers.insert("content-type", "application/cloudevents+json");
    // Fits the server by 200 bytes; its DLQ copy, with ten Muster-* headers more, would not.
    let body = Bytes::from(vec![b'x'; max_payload - 300]);
    let published =
        engine::bus::publish_raw(&js, "muster.events.muster.ping._".into(), headers, body.clone())
            .await?;

    let entries = dead_letters(&world, 1).await?;
    let entry = &entries[0];
    assert_eq!(entry.kind, "too-large");
    assert!(entry.reason.contains("exceeds the limit of 4096 bytes"), "{}", entry.reason);
    assert!(entry.reason.contains("did not fit the server's max_payload"), "{}", entry.reason);
    assert!(
        entry.reason.contains(&format!("MUSTER_EVENTS sequence {}", published.sequence)),
        "{}",
        entry.reason
    );
    let shown: DlqMessage =
        world.cli_json(&["dlq", "show", &entry.seq.to_string(), "--json"]).await?;
    let dropped: usize = shown
        .headers
        .iter()
        .find(|(name, _)| name == "Muster-Truncated")
        .map(|(_, value)| value.parse())
        .expect("a Muster-Truncated header")?;
    assert!(dropped > 0);
    assert_eq!(shown.body_bytes + dropped, body.len());
    assert!(entry.reason.contains(&format!("{dropped} of {} body bytes dropped", body.len())));
    consumer_drained(&mut world, "ping").await?;
    // A truncated copy is not the event: even a forced replay is refused.
    let refused = world
        .cli(&["dlq", "replay", &entry.seq.to_string(), "--force"])
        .await
        .expect_err("a truncated copy is never replayed");
    assert!(refused.to_string().contains("truncated"), "{refused}");
    engine.stop().await
}

#[tokio::test]
async fn a_dlq_that_refuses_is_retried_a_bounded_number_of_times() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.set("MUSTER_RUNTIME__MAX_ATTEMPTS", "1");
    let dir = world.effects_dir();
    std::fs::write(dir.join("broken"), "")?;
    let mut engine = world.start_engine().await?;
    // The DLQ stream is gone: every dead-lettering fails.
    world.jetstream().await?.delete_stream("MUSTER_DLQ").await?;
    let flaky = event("test.flaky", "d-1", "k", json!({"dir": dir}));
    let published = world.publish(&flaky).await?;
    let id = run_id("flaky", &flaky);
    world.wait_run(&id, RunStatus::Failed).await?;

    // Four retries two seconds apart, then the message is terminated: not Nak'd for ever.
    consumer_drained(&mut world, "flaky").await.with_context(|| engine.log())?;
    let log = engine.log();
    let giving_up = log
        .lines()
        .find(|l| l.contains("giving up on infrastructure retries"))
        .unwrap_or_else(|| panic!("no escalation in the log:\n{log}"));
    assert!(giving_up.contains(&format!("stream_sequence={}", published.sequence)), "{giving_up}");
    assert!(giving_up.contains("publishing to the DLQ failed 4 times"), "{giving_up}");
    let retries = log.lines().filter(|l| l.contains("the message comes back in 2s")).count();
    assert_eq!(retries, 4, "{log}");
    let detail = world.run_detail(&id).await?;
    assert_eq!((detail.run.status, detail.run.dlq_sequence), (RunStatus::Failed, None));
    assert_eq!(effects_calls(&dir), 1, "the run itself ran once");
    engine.stop().await
}

fn effects_calls(dir: &std::path::Path) -> usize {
    e2e::workflows::effects(dir).iter().filter(|l| l.starts_with("call-")).count()
}

/// `keyed` (`test.keyed`): its key panics for the event subject `panic` and otherwise holds a
/// line break; every run fails permanently, so each event is dead-lettered with its key.
struct Keyed;

#[async_trait]
impl Workflow for Keyed {
    fn name(&self) -> &'static str {
        "keyed"
    }
    fn triggers(&self) -> &'static [&'static str] {
        &["test.keyed"]
    }
    fn key(&self, event: &Event) -> String {
        match event.subject() {
            Some("panic") => panic!("no key for this event"),
            subject => format!("line\r\nbreak {}", subject.unwrap_or_default()),
        }
    }
    async fn run(&self, _: &mut RunContext, _: Event) -> Result<serde_json::Value, RunError> {
        Err(RunError::permanent("failed\r\non two lines"))
    }
}

/// `failing` (`test.failing`): fails with a retryable error until its `succeed_at`-th call.
struct Failing {
    succeed_at: u32,
    calls: Arc<AtomicU32>,
}

#[async_trait]
impl Workflow for Failing {
    fn name(&self) -> &'static str {
        "failing"
    }
    fn triggers(&self) -> &'static [&'static str] {
        &["test.failing"]
    }
    async fn run(&self, ctx: &mut RunContext, _: Event) -> Result<serde_json::Value, RunError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call < self.succeed_at {
            return Err(RunError::retryable(format!("call {call} failed")));
        }
        Ok(json!({ "attempt": ctx.attempt(), "calls": call }))
    }
}

fn in_process_config(world: &World, max_attempts: u32) -> Config {
    Config {
        data_dir: world.data_dir(),
        nats: NatsConfig { url: Some(world.nats.url()), ..NatsConfig::default() },
        runtime: RuntimeConfig {
            max_attempts,
            backoff_initial: Duration::from_millis(100),
            ack_wait: Duration::from_secs(5),
            grace_period: Duration::from_secs(5),
            ..RuntimeConfig::default()
        },
        ..Config::default()
    }
}

#[tokio::test]
async fn a_key_that_panics_or_breaks_lines_is_dead_lettered() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let engine = Engine::start(in_process_config(&world, 1), vec![Arc::new(Keyed)]).await?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(engine.run(shutdown.clone()));
    let panics = event("test.keyed", "k-1", "panic", json!(null));
    let breaks = event("test.keyed", "k-2", "team", json!(null));
    world.publish(&panics).await?;
    world.publish(&breaks).await?;

    let entries = dead_letters(&world, 2).await?;
    let of = |id: &str| entries.iter().find(|e| e.run_id.as_deref() == Some(id)).cloned();
    let panicked = of(&run_id("keyed", &panics)).expect("the panicking key's letter");
    assert_eq!(panicked.kind, "permanent");
    assert!(
        panicked.reason.contains("key() panicked: no key for this event"),
        "{}",
        panicked.reason
    );
    let broken = of(&run_id("keyed", &breaks)).expect("the line-breaking key's letter");
    assert_eq!(broken.key.as_deref(), Some("line%0D%0Abreak team"));
    assert_eq!(broken.reason, "failed%0D%0Aon two lines");
    consumer_drained(&mut world, "keyed").await?;
    shutdown.cancel();
    running.await??;
    Ok(())
}

/// An in-process engine running `failing` (succeeding at call `succeed_at`), with an unreadable
/// journal record in place of the run of `event`'s: every delivery of it meets a journal failure.
struct BrokenJournal {
    db: sled::Db,
    journal: Arc<dyn engine::journal::Journal>,
    calls: Arc<AtomicU32>,
    /// The broken record's key (the journal's layout: tree `journal`, a run under `r` + its id).
    record_key: Vec<u8>,
    id: String,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<Result<(), engine::runtime::EngineError>>,
}

impl BrokenJournal {
    async fn start(world: &World, succeed_at: u32, event: &Event) -> anyhow::Result<Self> {
        let config = in_process_config(world, 2);
        let calls = Arc::new(AtomicU32::new(0));
        let failing = Failing { succeed_at, calls: calls.clone() };
        let db = engine::runtime::open_db(&config)?;
        let engine = Engine::start_with_db(config, vec![Arc::new(failing)], db.clone()).await?;
        let journal = engine.journal();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(engine.run(shutdown.clone()));
        let id = run_id("failing", event);
        let record_key = [b"r", id.as_bytes()].concat();
        db.open_tree("journal")?.insert(record_key.as_slice(), b"not a run record".as_slice())?;
        Ok(Self { db, journal, calls, record_key, id, shutdown, running })
    }

    fn repair(&self) -> anyhow::Result<()> {
        self.db.open_tree("journal")?.remove(&self.record_key)?;
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.running.await??;
        Ok(())
    }
}

#[tokio::test]
async fn infrastructure_naks_do_not_use_up_attempts() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    // Every delivery meets a journal failure and is Nak'd without running.
    let event = event("test.failing", "i-1", "k", json!(null));
    let broken = BrokenJournal::start(&world, 2, &event).await?;
    world.publish(&event).await?;
    let labels = InfraLabels { workflow: "failing".into(), what: "journal".into() };
    wait_for("three infrastructure Naks", WAIT, || async {
        (infra_retries().get_or_create(&labels).get() >= 3).then_some(())
    })
    .await?;
    assert_eq!(broken.calls.load(Ordering::SeqCst), 0, "nothing ran yet");
    broken.repair()?;

    // Delivered four times or more, but only two attempts ran: the first failure is retried.
    let run: RunRecord = wait_for("the run to finish", WAIT, || async {
        let run = broken.journal.run(&broken.id).await.ok().flatten();
        run.filter(|run| run.status.is_finished())
    })
    .await?;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    assert_eq!(run.attempts, 2);
    assert_eq!(run.output, Some(json!({ "attempt": 2, "calls": 2 })));
    broken.stop().await
}

/// A journal that keeps failing: the message is retried four times, two seconds apart, then
/// dead-lettered with kind `infrastructure` and terminated (not Nak'd for ever); once the journal
/// is healthy, a replay of the letter runs the event.
#[tokio::test]
async fn a_journal_that_keeps_failing_is_escalated_to_the_dlq() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let event = event("test.failing", "i-2", "k", json!(null));
    let broken = BrokenJournal::start(&world, 1, &event).await?;
    let published = world.publish(&event).await?;

    let letters = dead_letters(&world, 1).await?;
    let letter = &letters[0];
    assert_eq!(letter.kind, "infrastructure", "{letter:?}");
    assert!(letter.reason.contains("reading the journal failed 4 times"), "{letter:?}");
    assert_eq!(letter.original_sequence, Some(published.sequence));
    assert_eq!(letter.workflow, "failing");
    consumer_drained(&mut world, "failing").await?;
    let labels = InfraLabels { workflow: "failing".into(), what: "journal".into() };
    assert_eq!(infra_retries().get_or_create(&labels).get(), 4);
    assert_eq!(infra_escalations().get_or_create(&labels).get(), 1);
    assert_eq!(broken.calls.load(Ordering::SeqCst), 0, "the workflow never ran");

    // The journal is repaired; the replayed letter runs.
    broken.repair()?;
    world.cli(&["dlq", "replay", &letter.seq.to_string()]).await?;
    let run: RunRecord = wait_for("the replayed run to succeed", WAIT, || async {
        let run = broken.journal.run(&broken.id).await.ok().flatten();
        run.filter(|run| run.status == RunStatus::Succeeded)
    })
    .await?;
    assert_eq!(run.attempts, 1);
    assert_eq!(broken.calls.load(Ordering::SeqCst), 1);
    broken.stop().await
}
