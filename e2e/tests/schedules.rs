//! Cron schedules end to end: on-time ticks, one event per tick across replicas, catch-up once.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use e2e::harness::{WAIT, World, wait_for};
use engine::schedule::Fired;
use engine::schedule::status::ScheduleStatus;
use workflows::event::data_json;

const SUBJECT: &str = "muster.events.muster.schedule.fired.tick";

/// A schedule firing every second.
const EVERY_SECOND: &str = r#"
[[schedules]]
name = "tick"
cron = "* * * * * *"
"#;

async fn fired(world: &mut World) -> anyhow::Result<Vec<(Fired, DateTime<Utc>)>> {
    let events = world.events_on(SUBJECT).await?;
    events
        .into_iter()
        .map(|(event, stored)| Ok((serde_json::from_value(data_json(&event)?)?, stored)))
        .collect()
}

async fn wait_fired(world: &mut World, n: usize) -> anyhow::Result<Vec<(Fired, DateTime<Utc>)>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ticks = fired(world).await?;
        if ticks.len() >= n {
            return Ok(ticks);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "only {} ticks fired", ticks.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn ticks_fire_on_time() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.use_config(EVERY_SECOND)?;
    let mut engine = world.start_engine().await?;
    let ticks = wait_fired(&mut world, 3).await?;
    for (fired, stored) in &ticks {
        assert_eq!(fired.schedule, "tick");
        assert!(!fired.catch_up);
        let late = (*stored - fired.tick).num_milliseconds();
        assert!((0..1000).contains(&late), "tick {} stored {late} ms after its time", fired.tick);
    }
    for pair in ticks.windows(2) {
        assert_eq!((pair[1].0.tick - pair[0].0.tick).num_seconds(), 1, "consecutive ticks");
    }
    let statuses: Vec<ScheduleStatus> =
        world.cli_json(&["schedules", "list", "--next", "2", "--json"]).await?;
    assert_eq!(statuses.len(), 1);
    let tick = &statuses[0];
    assert_eq!((tick.name.as_str(), tick.next.len(), tick.overdue), ("tick", 2, false));
    assert!(tick.last_tick.is_some_and(|t| t >= ticks[2].0.tick));
    engine.stop().await
}

#[tokio::test]
async fn two_engines_store_one_event_per_tick() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.use_config(EVERY_SECOND)?;
    let mut first = world.start_engine().await?;
    let second_dir = world.dir.path().join("replica-2");
    let mut second = world.start_engine_in(&second_dir).await?;
    let both_running = Utc::now();
    // Both replicas fire every tick: wait until each has fired (and the other deduplicated) a few.
    wait_for("both replicas to fire the same ticks", WAIT, || async {
        let duplicates = |log: String| log.matches("duplicate=true").count();
        (duplicates(first.log()) + duplicates(second.log()) >= 3).then_some(())
    })
    .await?;
    first.stop().await?;
    second.stop().await?;

    let ticks = fired(&mut world).await?;
    let mut per_tick: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
    for (fired, _) in &ticks {
        *per_tick.entry(fired.tick).or_default() += 1;
    }
    assert!(per_tick.range(both_running..).count() >= 3, "{per_tick:?}");
    assert!(per_tick.values().all(|n| *n == 1), "one stored event per tick: {per_tick:?}");
    Ok(())
}

#[tokio::test]
async fn an_engine_down_across_three_ticks_catches_up_once() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.use_config(EVERY_SECOND)?;
    let mut engine = world.start_engine().await?;
    wait_fired(&mut world, 1).await?;
    engine.stop().await?;
    let before = fired(&mut world).await?;
    let last = before.last().expect("fired").0.tick;

    // Let three ticks pass with no engine.
    wait_for("three ticks to pass", WAIT, || async {
        (Utc::now() >= last + chrono::TimeDelta::milliseconds(3500)).then_some(())
    })
    .await?;
    let restart = Utc::now();
    let mut engine = world.start_engine().await?;
    let after = wait_fired(&mut world, before.len() + 2).await?;
    engine.stop().await?;

    let new: Vec<&Fired> = after[before.len()..].iter().map(|(f, _)| f).collect();
    let catch_ups: Vec<&&Fired> = new.iter().filter(|f| f.catch_up).collect();
    assert_eq!(catch_ups.len(), 1, "exactly one catch-up: {new:?}");
    let catch_up = catch_ups[0];
    assert_eq!(new[0], *catch_up, "the catch-up fires first");
    assert!(
        catch_up.tick <= restart && catch_up.tick > last + chrono::TimeDelta::seconds(2),
        "the most recent missed tick: {catch_up:?}"
    );
    let skipped = new.iter().filter(|f| f.tick > last && f.tick < catch_up.tick).count();
    assert_eq!(skipped, 0, "older missed ticks are not fired: {new:?}");
    Ok(())
}

#[tokio::test]
async fn invalid_schedules_are_refused_at_start_by_name() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.use_config("[[schedules]]\nname = \"nightly\"\ncron = \"0 0 25 * * *\"\n")?;
    let err = world.cli(&["run"]).await.unwrap_err().to_string();
    assert!(
        err.contains("schedule \"nightly\": invalid cron expression \"0 0 25 * * *\""),
        "{err}"
    );
    world.use_config("[[schedules]]\nname = \"nightly\"\ncron = \"0 0 3 * * *\"\ntimezone = \"Europe/Atlantis\"\n")?;
    let err = world.cli(&["config", "check"]).await.unwrap_err().to_string();
    assert!(err.contains("schedule \"nightly\": unknown time zone \"Europe/Atlantis\""), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_crash_mid_fan_out_resumes_and_every_team_gets_one_sync_for_the_tick()
-> anyhow::Result<()> {
    use engine::journal::RunRecord;
    const TEAMS: usize = 150; // two batches of at most 100
    let mut world = World::start().await?;
    world.use_config("schedules = []\n")?;
    let mut engine = world.start_engine().await?;
    let http = reqwest::Client::new();
    for i in 0..TEAMS {
        let team = serde_json::json!({"slug": format!("team-{i:03}"), "name": format!("Team {i}"), "maintainers": ["carol"]});
        let response = http.post(format!("{}/v1/teams", engine.api)).json(&team).send().await?;
        anyhow::ensure!(response.status().is_success(), "{}", response.text().await?);
    }
    engine.stop().await?;

    // The resync schedule, and a crash right after the fan-out's first batch is journaled.
    world.use_config(EVERY_SECOND_RESYNC)?;
    world.set("MUSTER_FAULT", "after-step:resync:batch-0");
    let mut engine = world.start_engine().await?;
    let status = engine.wait_exit(WAIT).await?;
    assert!(!status.success(), "the fault point aborted the engine");
    world.set("MUSTER_FAULT", "");
    let mut engine = world.start_engine().await?;

    // The crashed tick: the first one whose syncs reached the stream.
    let syncs_of = |events: &[(workflows::Event, DateTime<Utc>)]| -> BTreeMap<String, Vec<String>> {
        let mut by_tick: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (event, _) in events {
            let data = data_json(event).unwrap_or_default();
            if let (Some(tick), Some(slug)) =
                (data["tick"].as_str(), workflows::AttributesReader::subject(event))
            {
                by_tick.entry(tick.to_owned()).or_default().push(slug.to_owned());
            }
        }
        by_tick
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let (tick, slugs) = loop {
        let events = world.events_on("muster.events.muster.team.sync.*").await?;
        let by_tick = syncs_of(&events);
        if let Some((tick, slugs)) = by_tick.into_iter().next().filter(|(_, s)| s.len() >= TEAMS) {
            break (tick, slugs);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the crashed tick's fan-out did not complete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut unique = slugs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((slugs.len(), unique.len()), (TEAMS, TEAMS), "one sync per team for tick {tick}");

    // The run resumed: batch-0 ran once (before the crash), the rest after the restart.
    // Its last sync event is published before its outcome is journaled: wait for the outcome.
    let crashed: RunRecord = wait_for("the crashed tick's resync run to succeed", WAIT, || async {
        let runs: Vec<RunRecord> = world.runs("resync").await.ok()?;
        runs.into_iter().find(|r| {
            r.status == engine::journal::RunStatus::Succeeded
                && r.trigger.event["data"]["tick"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(&tick[..19]))
        })
    })
    .await?;
    let detail = world.run_detail(&crashed.id).await?;
    let steps: Vec<(&str, u32)> =
        detail.steps.iter().map(|s| (s.name.as_str(), s.attempts)).collect();
    assert_eq!(steps, [("batch-0", 1), ("batch-1", 1)], "{steps:?}");
    assert_eq!(detail.run.attempts, 2);
    engine.stop().await
}

const EVERY_SECOND_RESYNC: &str = r#"
[[schedules]]
name = "resync"
cron = "* * * * * *"
"#;
