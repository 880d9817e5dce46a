//! Previews end to end: `GET /v1/teams/{slug}/plan` and `engine teams plan` against the engine
//! (a child process) with a real nats-server and the fake GitHub over HTTP with a token. Each
//! test compares the plan with what the next sync then sends (the fake's mutation log) and
//! with what `engine runs show` prints for that sync.

use std::collections::BTreeSet;

use e2e::fake_github::FakeGitHub;
use e2e::harness::{EngineProcess, WAIT, World, wait_for};
use engine::journal::{RunRecord, RunStatus};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const ORG: &str = "acme";

/// A world whose engines manage the fake GitHub's organization with a token. No schedule: a
/// resync tick would start syncs the tests do not expect.
async fn world_with_github(fake: &FakeGitHub) -> anyhow::Result<World> {
    let mut world = World::start().await?;
    world.set("MUSTER_GITHUB_TOKEN", "test-token");
    world.use_config(&format!(
        "schedules = []\n[github]\napi-url = \"{}\"\norg = \"{ORG}\"\nwrite-interval = \"10ms\"\n",
        fake.url()
    ))?;
    Ok(world)
}

async fn post(http: &Client, url: String, body: Value) -> anyhow::Result<()> {
    let response = http.post(&url).json(&body).send().await?;
    anyhow::ensure!(response.status().is_success(), "{url}: {}", response.text().await?);
    Ok(())
}

async fn plan(http: &Client, engine: &EngineProcess, query: &str) -> anyhow::Result<Value> {
    let url = format!("{}/v1/teams/payments/plan{query}", engine.api);
    let response = http.get(&url).send().await?;
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(status == StatusCode::OK, "{url}: {status} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// Creates the environments and waits for their `sync_environment` runs, so that no sync of a
/// team created afterwards comes from them.
async fn create_environments(world: &World, api: &str, bodies: &[Value]) -> anyhow::Result<()> {
    let http = Client::new();
    for body in bodies {
        post(&http, format!("{api}/v1/environments"), body.clone()).await?;
    }
    wait_for("the environments' syncs", WAIT, || async {
        let runs = world.runs("sync_environment").await.ok()?;
        let done = runs.iter().filter(|r| r.status == RunStatus::Succeeded).count();
        (done == bodies.len()).then_some(())
    })
    .await
}

fn team_body(members: &[&str], maintainers: &[&str]) -> Value {
    json!({
        "slug": "payments",
        "name": "Payments",
        "description": "Moves money",
        "members": members,
        "maintainers": maintainers,
    })
}

async fn sync_runs(world: &World, status: RunStatus) -> anyhow::Result<Vec<RunRecord>> {
    let runs = world.runs("sync_team").await?;
    Ok(runs.into_iter().filter(|r| r.status == status).collect())
}

/// Waits until there are more than `before` sync_team runs in `status`; the newest.
async fn next_run(world: &World, status: RunStatus, before: usize) -> anyhow::Result<RunRecord> {
    wait_for(&format!("sync_team run number {} to be {status}", before + 1), WAIT, || async {
        let runs = sync_runs(world, status).await.ok()?;
        (runs.len() > before).then(|| runs[0].clone())
    })
    .await
}

/// The fake's mutations as `METHOD what`: `POST team`, `PATCH team`, `PUT <login>`,
/// `DELETE <login>`.
fn mutations(fake: &FakeGitHub) -> BTreeSet<String> {
    fake.mutations()
        .iter()
        .map(|r| {
            let segments: Vec<&str> = r.path.trim_matches('/').split('/').collect();
            match (r.method.as_str(), segments.as_slice()) {
                (method, [.., "memberships", login]) => format!("{method} {login}"),
                (method, _) => format!("{method} team"),
            }
        })
        .collect()
}

/// What a plan says the sync sends, in the form of [`mutations`].
fn planned_mutations(plan: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    match plan["github"]["action"].as_str() {
        Some("create") => {
            out.insert("POST team".to_owned());
        }
        Some("update" | "adopt") if !plan["github"]["changes"].as_array().unwrap().is_empty() => {
            out.insert("PATCH team".to_owned());
        }
        _ => {}
    }
    let members = &plan["members"]["plan"];
    for change in ["add", "change_role"] {
        for item in members[change].as_array().unwrap() {
            out.insert(format!("PUT {}", item["login"].as_str().unwrap()));
        }
    }
    for login in members["remove"].as_array().unwrap() {
        out.insert(format!("DELETE {}", login.as_str().unwrap()));
    }
    out
}

fn lines(plan: &Value) -> Vec<String> {
    plan["lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_owned()).collect()
}

/// A new team's plan, while its first sync could not reach GitHub: it lists the team, every
/// member and every namespace record; the sync then sends exactly that, `engine runs show`
/// prints it, and the next plan is empty. The engine said at start how it reaches GitHub, and
/// logs one line summarising the sync.
#[tokio::test]
async fn the_plan_lists_exactly_what_the_sync_then_applies() -> anyhow::Result<()> {
    let fake = FakeGitHub::start(ORG).await?;
    fake.add_org_members(["alice", "bob", "carol"]);
    let mut world = world_with_github(&fake).await?;
    let mut engine = world.start_engine().await?;
    world.set("MUSTER_API_URL", &engine.api);
    let http = Client::new();
    let api = engine.api.clone();

    let log = engine.log();
    let started =
        log.lines().find(|l| l.contains("GitHub: managing the organization with a token"));
    let started = started.unwrap_or_else(|| panic!("no GitHub start line in:\n{log}"));
    for field in ["org=acme", &format!("api_url={}", fake.url()), "auth=\"token\"", "mode=\"live\""]
    {
        assert!(started.contains(field), "{field} missing from {started}");
    }

    let prod = json!({"name": "prod", "default_quota": {"requests.cpu": "8"}});
    create_environments(&world, &api, &[json!({"name": "dev"}), prod]).await?;
    // The token is not authorized for the organization's SAML SSO: the first sync fails for
    // good before sending anything, and so does the plan, which says so.
    fake.require_saml_sso(true);
    post(&http, format!("{api}/v1/teams"), team_body(&["alice", "bob"], &["carol"])).await?;
    next_run(&world, RunStatus::Failed, 0).await?;
    let blocked = plan(&http, &engine, "").await?;
    assert_eq!(blocked["blocked"]["step"], "github-team", "{blocked:#}");
    assert!(lines(&blocked)[1].starts_with("! the sync stops at github-team: "), "{blocked:#}");
    assert!(fake.mutations().is_empty(), "{:?}", fake.mutations());
    fake.require_saml_sso(false);

    let plan_json = plan(&http, &engine, "").await?;
    assert_eq!(plan_json["path"], "sync");
    assert_eq!(plan_json["plan_only"], false);
    assert_eq!(plan_json["github_read"], true);
    assert_eq!(plan_json["changes"], 6);
    assert_eq!(
        lines(&plan_json),
        [
            "team payments: the next sync makes 6 changes",
            "GitHub team:",
            "  + create team \"Payments\" (closed)",
            "members:",
            "  + alice (member)",
            "  + bob (member)",
            "  + carol (maintainer)",
            "namespaces:",
            "  + payments-dev",
            "  + payments-prod",
        ]
    );
    assert!(fake.mutations().is_empty(), "a plan sends nothing: {:?}", fake.mutations());

    // The CLI prints the same lines.
    let printed = world.cli(&["teams", "plan", "payments"]).await?;
    assert_eq!(printed, format!("{}\n", lines(&plan_json).join("\n")));

    // The sync sends exactly what the plan said, and creates the records it listed.
    fake.clear_log();
    let out = world.cli(&["teams", "sync", "payments"]).await?;
    assert!(out.starts_with("sync of team payments requested"), "{out}");
    let run = next_run(&world, RunStatus::Succeeded, 0).await?;
    assert_eq!(mutations(&fake), planned_mutations(&plan_json));
    assert_eq!(
        mutations(&fake),
        ["POST team", "PUT alice", "PUT bob", "PUT carol"].map(String::from).into()
    );
    let records: Value =
        http.get(format!("{api}/v1/teams/payments/namespaces")).send().await?.json().await?;
    let names: Vec<&str> =
        records["items"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["payments-dev", "payments-prod"]);

    // `engine runs show` prints the run's changes in the same form.
    let id = fake.team("payments").unwrap().id;
    let shown = world.cli(&["runs", "show", &run.id]).await?;
    let expected = format!(
        "changes:\nGitHub team:\n  + created team payments (id {id})\nmembers:\n  + alice \
         (member)\n  + bob (member)\n  + carol (maintainer)\n  note: muster-bot is the \
         identity Muster acts as: never removed or demoted\nnamespaces:\n  + payments-dev\n  + \
         payments-prod\n"
    );
    assert!(shown.ends_with(&expected), "{shown}");

    // One log line says what the sync changed.
    let summary =
        format!("sync of payments: team created (id {id}); members +3 -0 ~0; namespaces +2 ~0 -0");
    wait_for("the sync's summary line", WAIT, || async {
        engine.log().contains(&summary).then_some(())
    })
    .await?;

    // Converged: nothing left to do.
    let after = plan(&http, &engine, "").await?;
    assert_eq!(after["changes"], 0, "{after:#}");
    assert_eq!(lines(&after)[0], "team payments: the next sync changes nothing");
    engine.stop().await
}

/// Members added on GitHub by hand: removing them all trips the mass-removal guard. The plan
/// still answers, stating the refusal and whom the override would remove; the override's plan
/// is what an admin's `--allow-mass-removal` sync then sends.
#[tokio::test]
async fn a_guarded_plan_states_the_refusal() -> anyhow::Result<()> {
    let fake = FakeGitHub::start(ORG).await?;
    fake.add_org_members(["alice", "bob", "carol"]);
    let mut world = world_with_github(&fake).await?;
    let mut engine = world.start_engine().await?;
    world.set("MUSTER_API_URL", &engine.api);
    let http = Client::new();
    let api = engine.api.clone();
    create_environments(&world, &api, &[json!({"name": "dev"})]).await?;
    post(&http, format!("{api}/v1/teams"), team_body(&["alice", "bob"], &["carol"])).await?;
    next_run(&world, RunStatus::Succeeded, 0).await?;

    // Drift on GitHub, without any event: four strangers, four of seven people to remove.
    for login in ["x1", "x2", "x3", "x4"] {
        fake.put_member("payments", login, "member", false);
    }
    let guarded = plan(&http, &engine, "").await?;
    let refusal = guarded["members"]["refused"].as_str().unwrap_or_default().to_owned();
    assert!(refusal.starts_with("refusing to remove 4 of 7 team members (x1, x2, x3, x4)"));
    assert_eq!(guarded["blocked"]["step"], "github-members");
    assert_eq!(guarded["members"]["plan"]["remove"], json!(["x1", "x2", "x3", "x4"]));
    let printed = world.cli(&["teams", "plan", "payments"]).await?;
    assert!(printed.contains(&format!("  ! refused by the mass-removal guard: {refusal}")));
    for line in ["  - x1", "  - x4", "  note: not reached while the sync stops before them"] {
        assert!(printed.contains(line), "{line:?} missing from\n{printed}");
    }

    // The override's plan: the same removals, not refused.
    let overridden = plan(&http, &engine, "?allow_mass_removal=true").await?;
    assert_eq!(overridden["members"]["refused"], Value::Null);
    assert_eq!(overridden["blocked"], Value::Null);
    assert_eq!(overridden["members"]["plan"], guarded["members"]["plan"]);
    assert_eq!(overridden["changes"], 4);

    fake.clear_log();
    world.cli(&["teams", "sync", "payments", "--allow-mass-removal"]).await?;
    let run = next_run(&world, RunStatus::Succeeded, 1).await?;
    assert_eq!(mutations(&fake), planned_mutations(&overridden));
    let shown = world.cli(&["runs", "show", &run.id]).await?;
    for login in ["x1", "x2", "x3", "x4"] {
        assert!(shown.contains(&format!("\n  - {login}\n")), "{shown}");
    }
    engine.stop().await
}

/// A GitHub team with the team's slug that someone made by hand is left alone, and the plan
/// says so; the plan with `adopt=true` lists what adopting it changes, which is what an
/// admin's `engine teams sync --adopt` (an `adopt` sync request) then sends.
#[tokio::test]
async fn an_unlinked_github_team_is_adopted_as_planned() -> anyhow::Result<()> {
    let fake = FakeGitHub::start(ORG).await?;
    fake.add_org_members(["alice", "bob", "carol", "olive"]);
    let id = fake.create_team("Payments");
    fake.set_created_at("payments", chrono::Utc::now() - chrono::Duration::hours(1));
    fake.put_member("payments", "alice", "maintainer", false);
    fake.put_member("payments", "olive", "member", false);
    let mut world = world_with_github(&fake).await?;
    let mut engine = world.start_engine().await?;
    world.set("MUSTER_API_URL", &engine.api);
    let http = Client::new();
    let api = engine.api.clone();
    create_environments(&world, &api, &[json!({"name": "dev"})]).await?;
    post(&http, format!("{api}/v1/teams"), team_body(&["alice", "bob"], &["carol"])).await?;
    next_run(&world, RunStatus::Succeeded, 0).await?;
    assert!(fake.mutations().is_empty(), "left alone: {:?}", fake.mutations());

    let unmanaged = plan(&http, &engine, "").await?;
    assert_eq!(unmanaged["github"]["action"], "unmanaged", "{unmanaged:#}");
    assert_eq!(unmanaged["github"]["id"], id);
    let text = lines(&unmanaged);
    let warning = format!("  ! team payments (id {id}) exists on GitHub and is not linked");
    assert!(text[2].starts_with(&warning), "{text:#?}");
    assert!(text.contains(&"  note: not synced: the GitHub team is not linked and not adopted: its members are left as they are".to_owned()), "{text:#?}");

    let adopting = plan(&http, &engine, "?adopt=true").await?;
    assert_eq!(adopting["github"]["action"], "adopt");
    assert_eq!((adopting["adopt"].clone(), adopting["changes"].clone()), (json!(true), json!(6)));
    let text = lines(&adopting);
    for line in [
        format!("  adopt existing team payments (id {id})"),
        "  ~ description \"\" → \"Moves money\"".to_owned(),
        "  + bob (member)".to_owned(),
        "  + carol (maintainer)".to_owned(),
        "  ~ alice maintainer → member".to_owned(),
        "  - olive".to_owned(),
    ] {
        assert!(text.contains(&line), "{line:?} missing from {text:#?}");
    }
    let printed = world.cli(&["teams", "plan", "payments", "--adopt"]).await?;
    assert_eq!(printed, format!("{}\n", text.join("\n")));

    fake.clear_log();
    let out = world.cli(&["teams", "sync", "payments", "--adopt"]).await?;
    assert!(out.contains("; an existing GitHub team with its slug is adopted"), "{out}");
    let events = world.events_on("muster.events.muster.team.sync.>").await?;
    let (event, _) = events.last().expect("the sync request");
    assert_eq!(workflows::event::data_json(event)?["adopt"], true);
    next_run(&world, RunStatus::Succeeded, 1).await?;
    assert_eq!(mutations(&fake), planned_mutations(&adopting));
    assert_eq!(fake.team("payments").unwrap().id, id, "the same team, adopted");
    let after = plan(&http, &engine, "").await?;
    assert_eq!(after["changes"], 0, "{after:#}");
    engine.stop().await
}
