//! The operator's commands end to end: publish, ping, config check, bench.

use e2e::harness::World;
use futures::StreamExt;
use serde_json::Value;

#[tokio::test]
async fn publish_reports_sequence_and_duplicates() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let mut engine = world.start_engine().await?;
    let args = ["publish", "--type", "muster.ping", "--source", "/cli", "--id", "one", "--json"];
    let first: Value = world.cli_json(&args).await?;
    let second: Value = world.cli_json(&args).await?;
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["sequence"], second["sequence"]);
    assert_eq!(first["subject"], "muster.events.muster.ping._");
    let text =
        world.cli(&["publish", "--type", "muster.ping", "--source", "/cli", "--id", "one"]).await?;
    assert!(text.starts_with("duplicate: already stored in MUSTER_EVENTS as sequence 1"), "{text}");

    let bad = world.cli(&["publish", "--type", "bad type", "--source", "/cli"]).await.unwrap_err();
    assert!(bad.to_string().contains("cannot name a NATS subject"), "{bad}");
    let bad = world
        .cli(&["publish", "--type", "muster.ping", "--source", "/cli", "--data", "{nope"])
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("--data is not valid JSON"), "{bad}");
    engine.stop().await
}

#[tokio::test]
async fn ping_waits_for_its_run_and_prints_the_latency() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let mut engine = world.start_engine().await?;
    let out = world.cli(&["ping"]).await?;
    assert!(out.starts_with("pong: run ping-") && out.contains("succeeded (3 steps"), "{out}");
    assert!(out.trim_end().ends_with("ms end to end"), "{out}");
    engine.stop().await?;

    let err = world.cli(&["ping", "--timeout", "5s"]).await.unwrap_err().to_string();
    assert!(err.contains("no engine answers"), "{err}");
    Ok(())
}

#[tokio::test]
async fn config_check_prints_the_effective_configuration() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.set("MUSTER_RUNTIME__MAX_ATTEMPTS", "9");
    let out = world.cli(&["config", "check"]).await?;
    assert!(out.contains("max-attempts = 9"), "{out}");
    assert!(out.contains(&format!("url = \"{}\"", world.nats.url())), "{out}");
    world.set("MUSTER_RUNTIME__MAX_ATTEMPTS", "0");
    let err = world.cli(&["config", "check"]).await.unwrap_err().to_string();
    assert!(err.contains("runtime.max-attempts must be at least 1"), "{err}");
    Ok(())
}

#[tokio::test]
async fn bench_reports_both_halves_and_the_ratio() -> anyhow::Result<()> {
    let world = World::start().await?;
    let report: Value =
        world.cli_json(&["bench", "--events", "200", "--latency-samples", "5", "--json"]).await?;
    for key in ["raw_events_per_s", "muster_runs_per_s", "ratio", "p50_ms", "p99_ms", "rest_p50_ms"]
    {
        assert!(report[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {report}");
    }
    let ratio = report["muster_runs_per_s"].as_f64().unwrap()
        / report["raw_events_per_s"].as_f64().unwrap();
    assert!((ratio - report["ratio"].as_f64().unwrap()).abs() < 1e-9, "ratio = Muster/raw");
    assert_eq!(report["events"], 200);
    // The bench cleans up after itself on the server it was given.
    let names = async_nats::jetstream::new(async_nats::connect(world.nats.url()).await?)
        .stream_names()
        .collect::<Vec<_>>()
        .await;
    assert!(names.is_empty(), "bench streams left behind: {names:?}");
    Ok(())
}
