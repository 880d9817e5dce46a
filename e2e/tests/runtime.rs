//! The durable runtime end to end: a real nats-server per test, the engine as a child process.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use e2e::harness::{WAIT, World, event, wait_for};
use e2e::workflows::{TWIN_BROKEN, effects, twin_effects};
use engine::journal::RunStatus;
use engine::runtime::dlq::DlqEntry;
use engine::runtime::run_id;
use nix::sys::signal::Signal;
use serde_json::json;

fn count(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| *l == line).count()
}

#[tokio::test]
async fn the_same_event_three_times_is_one_run() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let mut engine = world.start_engine().await?;
    let ping = event("muster.ping", "p-1", "smoke", json!({"n": 1}));
    let mut duplicates = Vec::new();
    for _ in 0..3 {
        duplicates.push(world.publish(&ping).await?.duplicate);
    }
    assert_eq!(duplicates, [false, true, true], "JetStream drops the re-publishes");

    // A duplicate that slips past the duplicate window (other Nats-Msg-Id) is stored again, and
    // the journal turns it into a no-op.
    let (mut headers, body) = engine::bus::codec::encode(&ping);
    headers.insert("Nats-Msg-Id", "after-the-window");
    let js = world.jetstream().await?;
    let late =
        engine::bus::publish_raw(&js, "muster.events.muster.ping.smoke".into(), headers, body)
            .await?;
    assert!(!late.duplicate);

    let id = run_id("ping", &ping);
    let detail = world.wait_run(&id, RunStatus::Succeeded).await?;
    assert_eq!(detail.run.attempts, 1);
    assert_eq!(detail.steps.len(), 3);
    assert_eq!(detail.run.output, Some(json!({"pong": "p-1", "echo": {"n": 1}})));
    // Both stored copies were consumed and acked.
    let consumer = js
        .get_stream("MUSTER_EVENTS")
        .await?
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("ping")
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    wait_for("the ping consumer to ack both copies", WAIT, || {
        let mut consumer = consumer.clone();
        async move {
            let info = consumer.info().await.ok()?;
            (info.num_pending == 0
                && info.num_ack_pending == 0
                && info.ack_floor.stream_sequence >= late.sequence)
                .then_some(())
        }
    })
    .await?;
    let runs = world.runs("ping").await?;
    assert_eq!(runs.len(), 1, "exactly one run: {runs:?}");
    engine.stop().await
}

#[tokio::test]
async fn kill_9_between_steps_resumes_without_repeating_finished_steps() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let dir = world.effects_dir();
    let mut engine = world.start_engine().await?;
    let slow = event("test.slow", "s-1", "k1", json!({"dir": dir}));
    world.publish(&slow).await?;
    // Step `two` starts only after step `one`'s result is durable.
    wait_for("step two to start", WAIT, || async {
        effects(&dir).contains(&"two-start".to_owned()).then_some(())
    })
    .await?;
    engine.kill9().await?;

    std::fs::write(dir.join("release"), "")?;
    let mut engine = world.start_engine().await?;
    let id = run_id("slow", &slow);
    let detail = world.wait_run(&id, RunStatus::Succeeded).await?;
    let lines = effects(&dir);
    assert_eq!(count(&lines, "one"), 1, "finished step one did not run again: {lines:?}");
    assert_eq!(count(&lines, "two-start"), 2, "interrupted step two ran again: {lines:?}");
    assert_eq!(count(&lines, "two-done"), 1, "{lines:?}");
    assert_eq!(count(&lines, "three"), 1, "{lines:?}");
    assert_eq!(detail.run.attempts, 2);
    assert_eq!(detail.run.history[0].outcome, None, "the killed attempt has no outcome");
    let steps: Vec<(&str, u32)> =
        detail.steps.iter().map(|s| (s.name.as_str(), s.attempts)).collect();
    // A step's start is journaled lazily, so the killed start of `two` may not be counted.
    assert_eq!(steps[0], ("one", 1));
    assert_eq!((steps[1].0, steps[2]), ("two", ("three", 1)));
    engine.stop().await
}

#[tokio::test]
async fn retryable_failures_back_off_then_succeed() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.set("MUSTER_RUNTIME__BACKOFF_INITIAL", "400ms");
    world.set("MUSTER_RUNTIME__BACKOFF_MAX", "10s");
    let dir = world.effects_dir();
    let mut engine = world.start_engine().await?;
    let flaky = event("test.flaky", "f-1", "k", json!({"dir": dir, "fail_times": 2}));
    world.publish(&flaky).await?;
    let detail = world.wait_run(&run_id("flaky", &flaky), RunStatus::Succeeded).await?;
    let run = &detail.run;
    assert_eq!(run.attempts, 3);
    assert_eq!(effects(&dir), ["call-1", "call-2", "call-3"]);
    let outcomes: Vec<_> = run.history.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [Some(RunStatus::Retrying), Some(RunStatus::Retrying), Some(RunStatus::Succeeded)]
    );
    assert_eq!(run.output, Some(json!({"succeeded_on_attempt": 3})));
    // Delays: exponential with equal jitter, so attempt n waits within [b/2, b], b = 400ms·2^(n-1);
    // the next attempt starts no earlier than the delay chosen.
    for (n, pair) in run.history.windows(2).enumerate() {
        let base = 400u64 << n;
        let delay = pair[0].retry_delay_ms.expect("a retry delay was recorded");
        assert!(
            (base / 2..=base).contains(&delay),
            "attempt {}: delay {delay} ms outside [{}, {base}]",
            n + 1,
            base / 2
        );
        let gap = (pair[1].started_at - pair[0].finished_at.expect("finished")).num_milliseconds();
        assert!(
            gap >= delay as i64 - 5,
            "attempt {} started {gap} ms after the failure, before its {delay} ms delay",
            n + 2
        );
    }
    let step = &detail.steps[0];
    assert_eq!((step.attempts, step.error.is_none()), (3, true));
    engine.stop().await
}

#[tokio::test]
async fn exhausted_attempts_dead_letter_and_replay_succeeds_after_the_fix() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.set("MUSTER_RUNTIME__MAX_ATTEMPTS", "2");
    let dir = world.effects_dir();
    std::fs::write(dir.join("broken"), "")?;
    // `flaky-twin` runs the same events and fails alike, so both runs are dead-lettered: a
    // replay that reached every workflow of the type would re-run the twin too.
    std::fs::write(dir.join(TWIN_BROKEN), "")?;
    let mut engine = world.start_engine().await?;
    let flaky = event("test.flaky", "f-2", "team-a", json!({"dir": dir}));
    world.publish(&flaky).await?;
    let id = run_id("flaky", &flaky);
    let twin_id = run_id("flaky-twin", &flaky);
    let failed = world.wait_run(&id, RunStatus::Failed).await?;
    assert_eq!(failed.run.attempts, 2);
    let dlq_seq = wait_for("the run's DLQ entry to be recorded", WAIT, || async {
        world.run_detail(&id).await.ok()?.run.dlq_sequence
    })
    .await?;
    world.wait_run(&twin_id, RunStatus::Failed).await?;
    let twin_seq = wait_for("the twin run's DLQ entry to be recorded", WAIT, || async {
        world.run_detail(&twin_id).await.ok()?.run.dlq_sequence
    })
    .await?;

    let entries: Vec<DlqEntry> = world.cli_json(&["dlq", "list", "--json"]).await?;
    assert_eq!(entries.len(), 2, "{entries:?}");
    let entry = entries.iter().find(|e| e.workflow == "flaky").expect("flaky's dead letter");
    assert_eq!(
        (entry.seq, entry.workflow.as_str(), entry.run_id.as_deref()),
        (dlq_seq, "flaky", Some(id.as_str()))
    );
    assert_eq!(entry.kind, "retryable");
    assert!(entry.reason.contains("downstream is broken"), "{}", entry.reason);
    assert_eq!(entry.attempts, Some(2));
    let shown = world.cli(&["dlq", "show", &dlq_seq.to_string()]).await?;
    assert!(
        shown.contains("Muster-Error: downstream is broken")
            && shown.contains(&dir.display().to_string()),
        "{shown}"
    );

    // Fix both, replay only flaky's letter.
    std::fs::remove_file(dir.join("broken"))?;
    std::fs::remove_file(dir.join(TWIN_BROKEN))?;
    let replayed = world.cli(&["dlq", "replay", &dlq_seq.to_string()]).await?;
    assert!(replayed.contains(&format!("replayed dead letter {dlq_seq}")), "{replayed}");
    let detail = world.wait_run(&id, RunStatus::Succeeded).await?;
    assert_eq!((detail.run.redrives, detail.run.attempts), (1, 1));
    assert_eq!(effects(&dir), ["call-1", "call-2", "call-1"]);

    // A later event on the same key: the twin handles a key's messages in stream order, so once
    // it has run this one it has seen anything the replay sent it.
    let later = event("test.flaky", "f-3", "team-a", json!({"dir": dir}));
    world.publish(&later).await?;
    world.wait_run(&run_id("flaky-twin", &later), RunStatus::Succeeded).await?;
    world.wait_run(&run_id("flaky", &later), RunStatus::Succeeded).await?;

    // Re-driving addressed only the flaky workflow: the twin, failed on the same event and just
    // as fixed, was not re-run, and its dead letter waits for its own replay.
    assert_eq!(twin_effects(&dir), ["f-2 call-1", "f-2 call-2", "f-3 call-1"]);
    let twin = world.run_detail(&twin_id).await?;
    assert_eq!(
        (twin.run.status, twin.run.redrives, twin.run.dlq_sequence),
        (RunStatus::Failed, 0, Some(twin_seq))
    );
    let entries: Vec<DlqEntry> = world.cli_json(&["dlq", "list", "--json"]).await?;
    assert_eq!(
        entries.iter().map(|e| (e.seq, e.workflow.as_str())).collect::<Vec<_>>(),
        [(twin_seq, "flaky-twin")],
        "a replayed dead letter is removed, the other stays"
    );
    // Nor did the ping consumer see any of it.
    assert!(world.runs("ping").await?.is_empty());
    engine.stop().await
}

#[tokio::test]
async fn malformed_messages_are_dead_lettered_with_their_reason() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.set("MUSTER_STREAMS__MAX_EVENT_BYTES", "4096");
    let mut engine = world.start_engine().await?;
    let js = world.jetstream().await?;
    let subject = "muster.events.muster.ping._";
    let structured = |v: serde_json::Value| (HeaderMap::new(), Bytes::from(v.to_string()));
    let base = json!({"specversion": "1.0", "id": "m", "source": "/e2e", "type": "muster.ping"});
    let without = |field: &str| {
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove(field);
        v
    };
    let mut xml = HeaderMap::new();
    xml.insert("content-type", "application/xml");
    let cases: Vec<(&str, (HeaderMap, Bytes))> = vec![
        ("invalid-json", (HeaderMap::new(), Bytes::from_static(b"{not json"))),
        ("missing-attribute", structured(without("id"))),
        ("missing-attribute", structured(without("source"))),
        ("missing-attribute", structured(without("type"))),
        ("missing-attribute", structured(without("specversion"))),
        (
            "unsupported-specversion",
            structured(
                json!({"specversion": "0.3", "id": "m", "source": "/e2e", "type": "muster.ping"}),
            ),
        ),
        (
            "too-large",
            structured(
                json!({"specversion": "1.0", "id": "big", "source": "/e2e", "type": "muster.ping", "data": "x".repeat(5000)}),
            ),
        ),
        ("invalid-utf8", (HeaderMap::new(), Bytes::from_static(b"{\"id\": \"\xff\xfe\"}"))),
        ("unsupported-content-type", (xml, Bytes::from_static(b"<event/>"))),
    ];
    for (i, (_, (mut headers, body))) in cases.clone().into_iter().enumerate() {
        headers.insert("Nats-Msg-Id", format!("malformed-{i}"));
        engine::bus::publish_raw(&js, subject.into(), headers, body).await?;
    }
    let entries: Vec<DlqEntry> = wait_for("every malformed message in the DLQ", WAIT, || async {
        let entries: Vec<DlqEntry> = world.cli_json(&["dlq", "list", "--json"]).await.ok()?;
        (entries.len() >= cases.len()).then_some(entries)
    })
    .await?;
    // Messages run concurrently, so entries come in any order: compare them sorted, by kind.
    let mut kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    let mut expected: Vec<&str> = cases.iter().map(|(kind, _)| *kind).collect();
    kinds.sort_unstable();
    expected.sort_unstable();
    assert_eq!(kinds, expected);
    for entry in &entries {
        assert_eq!(entry.workflow, "ping");
        assert!(entry.run_id.is_none());
        assert!(!entry.reason.is_empty());
    }
    let reasons = |kind: &str| -> Vec<&str> {
        entries.iter().filter(|e| e.kind == kind).map(|e| e.reason.as_str()).collect()
    };
    let mut missing = reasons("missing-attribute");
    missing.sort_unstable();
    assert_eq!(
        missing,
        [
            "required attribute `id` is missing or empty",
            "required attribute `source` is missing or empty",
            "required attribute `specversion` is missing or empty",
            "required attribute `type` is missing or empty"
        ]
    );
    assert!(reasons("unsupported-specversion")[0].contains("\"0.3\""));
    assert!(reasons("too-large")[0].contains("exceeds the limit of 4096 bytes"));
    assert!(reasons("unsupported-content-type")[0].contains("application/xml"));
    assert!(reasons("invalid-utf8")[0].contains("not valid UTF-8"));

    // The engine kept running.
    let ping = event("muster.ping", "after-garbage", "x", json!(null));
    world.publish(&ping).await?;
    world.wait_run(&run_id("ping", &ping), RunStatus::Succeeded).await?;
    engine.stop().await
}

#[tokio::test]
async fn nats_restart_mid_run_every_run_finishes() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let dir = world.effects_dir();
    let mut engine = world.start_engine().await?;
    let events: Vec<_> = (0..10)
        .map(|i| {
            event(
                "test.sleep",
                &format!("n-{i}"),
                &format!("k{i}"),
                json!({"dir": dir, "sleep_ms": 700}),
            )
        })
        .collect();
    for e in &events {
        world.publish(e).await?;
    }
    wait_for("runs to be in flight", WAIT, || async {
        effects(&dir).iter().any(|l| l.starts_with("nap-start")).then_some(())
    })
    .await?;
    world.nats.restart().await?;
    for e in &events {
        let detail = world.wait_run(&run_id("sleepy", e), RunStatus::Succeeded).await?;
        assert_eq!(detail.run.status, RunStatus::Succeeded);
    }
    let runs = world.runs("sleepy").await?;
    assert_eq!(runs.len(), 10);
    assert!(engine.log().contains("disconnected from NATS"), "the engine saw the restart");
    engine.stop().await
}

#[tokio::test]
async fn sigterm_lets_the_run_in_flight_finish_within_the_grace_period() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let dir = world.effects_dir();
    let mut engine = world.start_engine().await?;
    let nap = event("test.sleep", "t-1", "k", json!({"dir": dir, "sleep_ms": 1500}));
    world.publish(&nap).await?;
    wait_for("the nap to start", WAIT, || async { (!effects(&dir).is_empty()).then_some(()) })
        .await?;
    engine.signal(Signal::SIGTERM)?;
    let status = engine.wait_exit(WAIT).await?;
    assert!(status.success(), "{status}: {}", engine.log());
    // The engine is gone: `runs show` reads the journal directly.
    let detail = world.run_detail(&run_id("sleepy", &nap)).await?;
    assert_eq!(detail.run.status, RunStatus::Succeeded);
    assert_eq!(effects(&dir), ["nap-start t-1", "nap-end t-1"]);
    Ok(())
}

#[tokio::test]
async fn sigterm_past_the_grace_period_leaves_the_run_to_be_redelivered() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.set("MUSTER_RUNTIME__GRACE_PERIOD", "300ms");
    let dir = world.effects_dir();
    let mut engine = world.start_engine().await?;
    let nap = event("test.sleep", "t-2", "k", json!({"dir": dir, "sleep_ms": 3000}));
    world.publish(&nap).await?;
    wait_for("the nap to start", WAIT, || async { (!effects(&dir).is_empty()).then_some(()) })
        .await?;
    engine.signal(Signal::SIGTERM)?;
    let status = engine.wait_exit(Duration::from_secs(5)).await?;
    assert!(status.success(), "{status}");
    assert!(engine.log().contains("grace period over"), "{}", engine.log());
    assert_eq!(effects(&dir), ["nap-start t-2"], "the run was abandoned mid-step");

    let mut engine = world.start_engine().await?;
    let detail = world.wait_run(&run_id("sleepy", &nap), RunStatus::Succeeded).await?;
    assert_eq!(detail.run.attempts, 2);
    assert_eq!(effects(&dir), ["nap-start t-2", "nap-start t-2", "nap-end t-2"]);
    engine.stop().await
}

#[tokio::test]
async fn a_second_signal_exits_at_once() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let dir = world.effects_dir();
    let mut engine = world.start_engine().await?;
    let nap = event("test.sleep", "t-3", "k", json!({"dir": dir, "sleep_ms": 30000}));
    world.publish(&nap).await?;
    wait_for("the nap to start", WAIT, || async { (!effects(&dir).is_empty()).then_some(()) })
        .await?;
    engine.signal(Signal::SIGTERM)?;
    wait_for("the engine to start draining", WAIT, || async {
        engine.log().contains("draining").then_some(())
    })
    .await?;
    engine.signal(Signal::SIGINT)?;
    let status = engine.wait_exit(Duration::from_secs(5)).await?;
    assert_eq!(status.code(), Some(130));
    Ok(())
}

#[tokio::test]
async fn a_step_longer_than_the_ack_wait_is_kept_alive_by_heartbeats() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.set("MUSTER_RUNTIME__ACK_WAIT", "1s");
    let dir = world.effects_dir();
    let mut engine = world.start_engine().await?;
    // Three ack waits long: without progress heartbeats JetStream would redeliver it twice.
    let nap = event("test.sleep", "h-1", "k", json!({"dir": dir, "sleep_ms": 3500}));
    world.publish(&nap).await?;
    let detail = world.wait_run(&run_id("sleepy", &nap), RunStatus::Succeeded).await?;
    assert_eq!(detail.run.attempts, 1);
    assert_eq!(effects(&dir), ["nap-start h-1", "nap-end h-1"], "the step ran once");
    let consumer = world
        .jetstream()
        .await?
        .get_stream("MUSTER_EVENTS")
        .await?
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("sleepy")
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    // Every delivery, redeliveries included, takes the next consumer sequence, and unlike
    // `num_redelivered` (which counts only messages still unacknowledged) the count outlives the
    // ack: one message delivered once is consumer sequence 1.
    let info = consumer.cached_info();
    assert_eq!(
        (info.delivered.consumer_sequence, info.num_ack_pending),
        (1, 0),
        "delivered once, never redelivered: {info:?}"
    );
    engine.stop().await
}
