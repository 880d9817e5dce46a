//! The operator's commands end to end: publish, ping, config check, bench, namespaces.

use e2e::harness::{WAIT, World, wait_for};
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
    for key in [
        "raw_events_per_s",
        "raw_publish_only_per_s",
        "raw_consume_only_per_s",
        "muster_runs_per_s",
        "ratio",
        "p50_ms",
        "p99_ms",
        "rest_p50_ms",
        "journal_bytes_per_run",
    ] {
        assert!(report[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {report}");
    }
    let ratio = report["muster_runs_per_s"].as_f64().unwrap()
        / report["raw_events_per_s"].as_f64().unwrap();
    assert!((ratio - report["ratio"].as_f64().unwrap()).abs() < 1e-9, "ratio = Muster/raw");
    assert_eq!(report["events"], 200);
    assert!(report["raw_settings"]["consumer_batch"].as_u64().is_some(), "{report}");
    // The bench cleans up after itself on the server it was given.
    let names = async_nats::jetstream::new(async_nats::connect(world.nats.url()).await?)
        .stream_names()
        .collect::<Vec<_>>()
        .await;
    assert!(names.is_empty(), "bench streams left behind: {names:?}");
    Ok(())
}

#[tokio::test]
async fn namespaces_list_shows_a_row_per_cluster_and_the_ones_never_reported() -> anyhow::Result<()>
{
    let mut world = World::start().await?;
    let mut engine = world.start_engine().await?;
    world.set("MUSTER_API_URL", &engine.api);
    world.cli(&["envs", "create", "--name", "prod", "--cluster", "eu-1,us-1"]).await?;
    world.cli(&["envs", "create", "--name", "dev"]).await?;
    world
        .cli(&[
            "teams",
            "create",
            "--slug",
            "payments",
            "--name",
            "Payments",
            "--member",
            "alice",
            "--maintainer",
            "carol",
        ])
        .await?;
    let records = wait_for("payments' namespace records", WAIT, || async {
        let records: Vec<Value> =
            world.cli_json(&["namespaces", "list", "--team", "payments", "--json"]).await.ok()?;
        (records.len() == 2).then_some(records)
    })
    .await?;
    assert_eq!(records[1]["never_reported"], serde_json::json!(["eu-1", "us-1"]));

    // No agent runs: prod's two clusters never reported; dev has no cluster, one row with `-`.
    let out = world.cli(&["namespaces", "list", "--team", "payments"]).await?;
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|line| line.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["NAMESPACE", "TEAM", "ENV", "STATE", "CLUSTER", "OUTCOME", "REPORTED", "MESSAGE"],
            vec!["payments-dev", "payments", "dev", "active", "-", "-", "-", "-"],
            vec!["payments-prod", "payments", "prod", "active", "eu-1", "never reported", "-", "-"],
            vec!["payments-prod", "payments", "prod", "active", "us-1", "never reported", "-", "-"],
        ],
        "{out}"
    );
    let out = world.cli(&["namespaces", "list", "--environment", "dev"]).await?;
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(!out.contains("payments-prod"), "{out}");
    engine.stop().await
}
