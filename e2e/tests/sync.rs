//! SyncTeam end to end: the engine (a child process) with its HTTP API, a real nats-server, and
//! the fake GitHub driven through the real octocrab client.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::fake_github::{FakeGitHub, Fault};
use e2e::harness::{EngineProcess, WAIT, World, wait_for};
use engine::journal::{RunRecord, RunStatus};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const ORG: &str = "acme";

/// A world whose engines manage the fake GitHub's organization.
async fn world_with_github(fake: &FakeGitHub, extra_config: &str) -> anyhow::Result<World> {
    let mut world = World::start().await?;
    world.set("MUSTER_GITHUB_TOKEN", "test-token");
    world.use_config(&format!(
        "[github]\napi-url = \"{}\"\norg = \"{ORG}\"\nwrite-interval = \"10ms\"\n{extra_config}",
        fake.url()
    ))?;
    Ok(world)
}

/// Waits until the workflow's consumer has nothing pending or in flight.
async fn settle(world: &mut World, workflow: &str) -> anyhow::Result<()> {
    let stream = world.jetstream().await?.get_stream("MUSTER_EVENTS").await?;
    wait_for(&format!("{workflow} to settle"), WAIT, || {
        let stream = stream.clone();
        async move {
            let mut consumer = stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(workflow)
                .await
                .ok()?;
            let info = consumer.info().await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        }
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

async fn post(http: &Client, url: String, body: Value) -> anyhow::Result<()> {
    let response = http.post(&url).json(&body).send().await?;
    anyhow::ensure!(response.status().is_success(), "{url}: {}", response.text().await?);
    Ok(())
}

/// Waits until the fake's team `slug` has exactly these active members (login → role).
async fn wait_members(
    fake: &FakeGitHub,
    slug: &str,
    expected: &[(&str, &str)],
) -> anyhow::Result<()> {
    let expected: BTreeMap<String, String> =
        expected.iter().map(|(l, r)| (l.to_string(), r.to_string())).collect();
    wait_for(&format!("GitHub team {slug} to have {expected:?}"), WAIT, || async {
        fake.team(slug).filter(|t| t.members == expected && t.pending.is_empty()).map(|_| ())
    })
    .await
}

async fn sync_runs(world: &World, status: RunStatus) -> anyhow::Result<Vec<RunRecord>> {
    let runs = world.runs("sync_team").await?;
    Ok(runs.into_iter().filter(|r| r.status == status).collect())
}

/// Asks for a sync and waits for one more succeeded sync_team run; returns its output.
async fn sync_now(world: &World, engine: &EngineProcess, http: &Client) -> anyhow::Result<Value> {
    let before = sync_runs(world, RunStatus::Succeeded).await?.len();
    post(http, format!("{}/v1/teams/payments/sync", engine.api), json!(null)).await?;
    let runs = wait_for("one more succeeded sync", WAIT, || async {
        let runs = sync_runs(world, RunStatus::Succeeded).await.ok()?;
        (runs.len() > before).then_some(runs)
    })
    .await?;
    Ok(runs[0].output.clone().unwrap_or_default())
}

#[tokio::test]
async fn a_team_created_through_the_api_converges_on_github_and_in_namespace_records()
-> anyhow::Result<()> {
    let fake = FakeGitHub::start(ORG).await?;
    fake.add_org_members(["alice", "bob", "carol", "dave"]);
    let mut world = world_with_github(&fake, "").await?;
    let mut engine = world.start_engine().await?;
    let http = Client::new();
    let api = engine.api.clone();
    post(&http, format!("{api}/v1/environments"), json!({"name": "dev"})).await?;
    post(
        &http,
        format!("{api}/v1/environments"),
        json!({"name": "prod", "default_quota": {"requests.cpu": "8"}}),
    )
    .await?;
    post(&http, format!("{api}/v1/teams"), team_body(&["alice", "bob"], &["carol"])).await?;

    // GitHub: exactly the desired people (and the token's own login, which GitHub makes
    // maintainer of the teams it creates and Muster never removes).
    wait_members(
        &fake,
        "payments",
        &[
            ("alice", "member"),
            ("bob", "member"),
            ("carol", "maintainer"),
            ("muster-bot", "maintainer"),
        ],
    )
    .await?;
    let creates = fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/orgs/acme/teams")
        .count();
    assert_eq!(creates, 1, "one team created");

    // Namespace records for every environment, announced to the clusters.
    let namespaces = wait_for("payments' namespace records", WAIT, || async {
        let list: Value = http
            .get(format!("{api}/v1/teams/payments/namespaces"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        list["items"].as_array().filter(|items| items.len() == 2).cloned()
    })
    .await?;
    assert_eq!(namespaces[0]["name"], "payments-dev");
    assert_eq!(namespaces[1]["quota"], json!({"requests.cpu": "8"}));
    let deadline = tokio::time::Instant::now() + WAIT;
    let announced = loop {
        let events = world.events_on("muster.events.muster.namespace.changed.>").await?;
        if events.len() >= 2 {
            break events;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "namespace.changed not announced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut names: Vec<String> = announced
        .iter()
        .map(|(e, _)| workflows::event::data_json(e).unwrap()["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names, ["payments-dev", "payments-prod"]);

    // The run says what it did.
    let runs = sync_runs(&world, RunStatus::Succeeded).await?;
    let detail = world.run_detail(&runs.last().unwrap().id).await?;
    let steps: Vec<&str> = detail.steps.iter().map(|s| s.name.as_str()).collect();
    assert!(
        steps.starts_with(&["load", "github-team", "github-members", "namespaces", "announce"]),
        "{steps:?}"
    );

    // Change the members: only the difference is sent.
    wait_for("the syncs to settle", WAIT, || async {
        let running = sync_runs(&world, RunStatus::Running).await.ok()?.len()
            + sync_runs(&world, RunStatus::Retrying).await.ok()?.len();
        (running == 0).then_some(())
    })
    .await?;
    fake.clear_log();
    let response = http
        .patch(format!("{api}/v1/teams/payments"))
        .header("content-type", "application/merge-patch+json")
        .body(json!({"members": ["alice", "dave"]}).to_string())
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await?);
    wait_members(
        &fake,
        "payments",
        &[
            ("alice", "member"),
            ("dave", "member"),
            ("carol", "maintainer"),
            ("muster-bot", "maintainer"),
        ],
    )
    .await?;
    let mutations: Vec<(String, String)> =
        fake.mutations().into_iter().map(|r| (r.method, r.path)).collect();
    let team =
        format!("/organizations/{}/team/{}", fake.org_id(), fake.team("payments").unwrap().id);
    assert_eq!(
        mutations,
        [
            ("PUT".to_owned(), format!("{team}/memberships/dave")),
            ("DELETE".to_owned(), format!("{team}/memberships/bob")),
        ],
        "addressed by id"
    );

    // No change: no mutating request, and the reads are answered 304 from the second run on.
    sync_now(&world, &engine, &http).await?;
    fake.clear_log();
    sync_now(&world, &engine, &http).await?;
    let requests = fake.requests();
    assert!(requests.iter().all(|r| !r.mutating), "{requests:?}");
    let gets: Vec<_> = requests.iter().filter(|r| r.method == "GET").collect();
    assert!(!gets.is_empty() && gets.iter().all(|r| r.status == 304), "{gets:?}");
    engine.stop().await
}

#[tokio::test]
async fn without_credentials_the_sync_is_planned_and_nothing_is_sent() -> anyhow::Result<()> {
    let fake = FakeGitHub::start(ORG).await?;
    let mut world = world_with_github(&fake, "").await?;
    world.set("MUSTER_GITHUB_TOKEN", "");
    let mut engine = world.start_engine().await?;
    let http = Client::new();
    post(&http, format!("{}/v1/environments", engine.api), json!({"name": "dev"})).await?;
    post(&http, format!("{}/v1/teams", engine.api), team_body(&["alice"], &["carol"])).await?;
    let run = wait_for("a succeeded sync", WAIT, || async {
        sync_runs(&world, RunStatus::Succeeded).await.ok()?.into_iter().next()
    })
    .await?;
    let output = run.output.unwrap_or_default().to_string();
    assert!(
        output.contains("plan") && output.contains("alice") && output.contains("carol"),
        "{output}"
    );
    assert!(fake.requests().is_empty(), "plan-only mode sent {:?}", fake.requests());
    engine.stop().await
}

#[tokio::test]
async fn a_deleted_team_is_torn_down_and_purged() -> anyhow::Result<()> {
    let fake = FakeGitHub::start(ORG).await?;
    fake.add_org_members(["alice", "carol"]);
    let mut world = world_with_github(&fake, "allow-team-deletion = true\n").await?;
    let mut engine = world.start_engine().await?;
    let http = Client::new();
    let api = engine.api.clone();
    post(&http, format!("{api}/v1/environments"), json!({"name": "dev"})).await?;
    post(&http, format!("{api}/v1/teams"), team_body(&["alice"], &["carol"])).await?;
    wait_members(
        &fake,
        "payments",
        &[("alice", "member"), ("carol", "maintainer"), ("muster-bot", "maintainer")],
    )
    .await?;
    let response = http.delete(format!("{api}/v1/teams/payments")).send().await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    wait_for("the GitHub team to be deleted", WAIT, || async {
        fake.team("payments").is_none().then_some(())
    })
    .await?;
    wait_for("the team's records to be purged", WAIT, || async {
        let status = http.get(format!("{api}/v1/teams/payments")).send().await.ok()?.status();
        (status == StatusCode::NOT_FOUND).then_some(())
    })
    .await?;
    let list: Value =
        http.get(format!("{api}/v1/namespaces?team=payments")).send().await?.json().await?;
    assert_eq!(list["items"], json!([]));
    engine.stop().await
}

#[tokio::test]
async fn github_failures_are_retried_until_the_team_converges() -> anyhow::Result<()> {
    let fake = FakeGitHub::start(ORG).await?;
    fake.add_org_members(["alice", "bob", "carol"]);
    for fault in
        [Fault::status(500), Fault::status(502), Fault::retry_after(429, 1), Fault::status(502)]
    {
        fake.inject(fault);
    }
    let mut world = world_with_github(&fake, "").await?;
    world.set("MUSTER_RUNTIME__BACKOFF_INITIAL", "100ms");
    world.set("MUSTER_RUNTIME__MAX_ATTEMPTS", "10");
    let mut engine = world.start_engine().await?;
    let http = Client::new();
    post(&http, format!("{}/v1/environments", engine.api), json!({"name": "dev"})).await?;
    post(&http, format!("{}/v1/teams", engine.api), team_body(&["alice", "bob"], &["carol"]))
        .await?;
    wait_members(
        &fake,
        "payments",
        &[
            ("alice", "member"),
            ("bob", "member"),
            ("carol", "maintainer"),
            ("muster-bot", "maintainer"),
        ],
    )
    .await?;
    // The 429 asked for 1 s: the next request came no sooner.
    let requests = fake.requests();
    let limited = requests.iter().position(|r| r.status == 429).expect("the 429 was served");
    let gap = requests[limited + 1].instant - requests[limited].instant;
    assert!(gap >= Duration::from_millis(950), "retried {gap:?} after a Retry-After of 1 s");
    assert_eq!(
        requests.iter().filter(|r| r.method == "POST" && r.path == "/orgs/acme/teams").count(),
        1
    );
    engine.stop().await
}

#[tokio::test]
async fn kill_9_mid_member_sync_resumes_without_creating_the_team_twice() -> anyhow::Result<()> {
    let fake = FakeGitHub::start(ORG).await?;
    let people = ["m1", "m2", "m3", "m4", "m5", "m6"];
    fake.add_org_members(people.iter().copied().chain(["carol"]));
    let mut world = world_with_github(&fake, "").await?;
    let mut engine = world.start_engine().await?;
    let http = Client::new();
    post(&http, format!("{}/v1/environments", engine.api), json!({"name": "dev"})).await?;
    // Slow membership writes: the engine is killed while they are going on.
    for _ in 0..3 {
        fake.inject(Fault::latency(Duration::from_millis(300)).on_mutation());
    }
    post(&http, format!("{}/v1/teams", engine.api), team_body(&people, &["carol"])).await?;
    wait_for("the member sync to start", WAIT, || async {
        fake.mutations().iter().any(|r| r.path.contains("/memberships/")).then_some(())
    })
    .await?;
    engine.kill9().await?;
    let mut engine = world.start_engine().await?;
    let mut expected: Vec<(&str, &str)> = people.iter().map(|p| (*p, "member")).collect();
    expected.extend([("carol", "maintainer"), ("muster-bot", "maintainer")]);
    wait_members(&fake, "payments", &expected).await?;
    let creates = fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/orgs/acme/teams")
        .count();
    assert_eq!(creates, 1, "the team was created once");
    assert_eq!(fake.teams().len(), 1);
    engine.stop().await
}

#[tokio::test]
async fn drift_is_repaired_on_the_next_tick_without_any_event() -> anyhow::Result<()> {
    let fake = FakeGitHub::start(ORG).await?;
    fake.add_org_members(["alice", "carol"]);
    let mut world =
        world_with_github(&fake, "\n[[schedules]]\nname = \"resync\"\ncron = \"*/2 * * * * *\"\n")
            .await?;
    let mut engine = world.start_engine().await?;
    let http = Client::new();
    post(&http, format!("{}/v1/environments", engine.api), json!({"name": "dev"})).await?;
    post(&http, format!("{}/v1/teams", engine.api), team_body(&["alice"], &["carol"])).await?;
    let converged = [("alice", "member"), ("carol", "maintainer"), ("muster-bot", "maintainer")];
    wait_members(&fake, "payments", &converged).await?;

    // Once the syncs the creation asked for are done, someone removes alice on GitHub; no
    // webhook, no event: only the resync tick can repair it.
    settle(&mut world, "sync_team").await?;
    let drifted = chrono::Utc::now();
    fake.remove_member("payments", "alice");
    assert!(!fake.team("payments").unwrap().members.contains_key("alice"));
    wait_members(&fake, "payments", &converged).await?;
    let repairs: Vec<RunRecord> = world
        .runs("sync_team")
        .await?
        .into_iter()
        .filter(|r| r.created_at > drifted && r.trigger.event["source"] == "/muster/resync")
        .collect();
    assert!(!repairs.is_empty(), "a sync from the resync fan-out ran after the drift");
    engine.stop().await
}

fn signed(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(
    http: &Client,
    api: &str,
    delivery: &str,
    signature: Option<String>,
    body: &Value,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = http
        .post(format!("{api}/v1/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "membership")
        .header("x-github-delivery", delivery)
        .body(body.to_string());
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    let response = request.send().await?;
    Ok((response.status(), response.json().await?))
}

#[tokio::test]
async fn github_webhooks_are_verified_deduplicated_and_repair_drift() -> anyhow::Result<()> {
    const SECRET: &str = "webhook-s3cret";
    let fake = FakeGitHub::start(ORG).await?;
    fake.add_org_members(["alice", "carol"]);
    let mut world = world_with_github(&fake, "").await?;
    world.set("MUSTER_GITHUB_WEBHOOK_SECRET", SECRET);
    let mut engine = world.start_engine().await?;
    let http = Client::new();
    let api = engine.api.clone();
    post(&http, format!("{api}/v1/environments"), json!({"name": "dev"})).await?;
    post(&http, format!("{api}/v1/teams"), team_body(&["alice"], &["carol"])).await?;
    let converged = [("alice", "member"), ("carol", "maintainer"), ("muster-bot", "maintainer")];
    wait_members(&fake, "payments", &converged).await?;

    // Drift on GitHub once the creation's syncs are done, then its webhook.
    settle(&mut world, "sync_team").await?;
    fake.remove_member("payments", "alice");
    let team_id = fake.team("payments").unwrap().id;
    let payload = json!({
        "action": "removed",
        "scope": "team",
        "member": {"login": "alice"},
        "team": {"id": team_id, "slug": "payments", "name": "Payments"},
        "organization": {"login": ORG},
    });
    let body = payload.to_string();

    // A missing or wrong signature: 401, nothing published.
    let (status, problem) = deliver(&http, &api, "d-1", None, &payload).await?;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("https://muster.dev/problems/unauthorized"))
    );
    let (status, _) =
        deliver(&http, &api, "d-1", Some(signed("wrong", body.as_bytes())), &payload).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(world.events_on("muster.events.com.github.>").await?.is_empty());

    // Signed: enqueued, and the same delivery twice is one event.
    let (status, first) =
        deliver(&http, &api, "d-1", Some(signed(SECRET, body.as_bytes())), &payload).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(
        (first["event_type"].as_str(), first["duplicate"].as_bool()),
        (Some("com.github.membership.removed"), Some(false))
    );
    assert_eq!(first["syncs"], json!(["payments"]));
    let (_, second) =
        deliver(&http, &api, "d-1", Some(signed(SECRET, body.as_bytes())), &payload).await?;
    assert_eq!(second["duplicate"], true);
    assert_eq!(world.events_on("muster.events.com.github.>").await?.len(), 1);

    // The sync it asked for repairs the drift.
    wait_members(&fake, "payments", &converged).await?;

    // Noise is acknowledged and dropped.
    let push = http
        .post(format!("{api}/v1/webhooks/github"))
        .header("x-github-event", "push")
        .header("x-github-delivery", "d-2")
        .header("x-hub-signature-256", signed(SECRET, b"{}"))
        .body("{}")
        .send()
        .await?;
    assert_eq!(push.status(), StatusCode::ACCEPTED);
    assert_eq!(world.events_on("muster.events.com.github.>").await?.len(), 1);
    engine.stop().await
}

#[tokio::test]
async fn a_small_team_is_replaced_only_with_an_admins_override() -> anyhow::Result<()> {
    let fake = FakeGitHub::start(ORG).await?;
    fake.add_org_members(["alice", "bob", "carol", "dave"]);
    let mut world = world_with_github(&fake, "").await?;
    let mut engine = world.start_engine().await?;
    world.set("MUSTER_API_URL", &engine.api);
    let http = Client::new();
    let api = engine.api.clone();
    post(&http, format!("{api}/v1/environments"), json!({"name": "dev"})).await?;
    post(&http, format!("{api}/v1/teams"), team_body(&["alice"], &["carol"])).await?;
    let before = [("alice", "member"), ("carol", "maintainer"), ("muster-bot", "maintainer")];
    wait_members(&fake, "payments", &before).await?;
    settle(&mut world, "sync_team").await?;

    // Everyone replaced: two of two people (Muster's own login does not count), under both
    // of the old limits (25% and 3 people). The sync refuses and changes nothing.
    let response = http
        .put(format!("{api}/v1/teams/payments"))
        .json(&team_body(&["bob"], &["dave"]))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await?);
    let failed = wait_for("the replacing sync to fail", WAIT, || async {
        sync_runs(&world, RunStatus::Failed).await.ok()?.into_iter().next()
    })
    .await?;
    let error = failed.error.map(|e| e.message).unwrap_or_default();
    assert!(error.contains("refusing to remove 2 of 2 team members ("), "{error}");
    assert!(error.contains("alice") && error.contains("carol"), "{error}");
    assert!(error.contains("every member"), "{error}");
    assert_eq!(fake.team("payments").unwrap().members.len(), 3);
    assert!(fake.mutations().iter().all(|r| r.method != "DELETE"), "{:?}", fake.mutations());

    // An admin's sync with the override applies it.
    let out = world.cli(&["teams", "sync", "payments", "--allow-mass-removal"]).await?;
    assert!(out.contains("overridden"), "{out}");
    wait_members(
        &fake,
        "payments",
        &[("bob", "member"), ("dave", "maintainer"), ("muster-bot", "maintainer")],
    )
    .await?;
    engine.stop().await
}

/// Privacy is a field of the team: a secret team is created secret on GitHub and a merge patch
/// makes it closed; a secret team with a parent is refused at the API (GitHub nests closed teams
/// only), before anything is stored.
#[tokio::test]
async fn a_secret_team_is_secret_on_github() -> anyhow::Result<()> {
    let fake = FakeGitHub::start(ORG).await?;
    fake.add_org_members(["alice", "carol"]);
    let mut world = world_with_github(&fake, "").await?;
    let mut engine = world.start_engine().await?;
    let http = Client::new();
    let api = engine.api.clone();
    post(&http, format!("{api}/v1/environments"), json!({"name": "dev"})).await?;
    let mut body = team_body(&["alice"], &["carol"]);
    body["privacy"] = json!("secret");
    post(&http, format!("{api}/v1/teams"), body).await?;
    wait_members(
        &fake,
        "payments",
        &[("alice", "member"), ("carol", "maintainer"), ("muster-bot", "maintainer")],
    )
    .await?;
    assert_eq!(fake.team("payments").unwrap().privacy, "secret");
    let team: Value = http.get(format!("{api}/v1/teams/payments")).send().await?.json().await?;
    assert_eq!(team["privacy"], "secret");

    let response = http
        .patch(format!("{api}/v1/teams/payments"))
        .header("content-type", "application/merge-patch+json")
        .body(json!({"privacy": "closed"}).to_string())
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await?);
    wait_for("the GitHub team to be closed", WAIT, || async {
        fake.team("payments").filter(|t| t.privacy == "closed").map(|_| ())
    })
    .await?;

    let child = json!({
        "slug": "payments-cards",
        "name": "Payments Cards",
        "maintainers": ["carol"],
        "parent": "payments",
        "privacy": "secret",
    });
    let response = http.post(format!("{api}/v1/teams")).json(&child).send().await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await?;
    assert_eq!(problem["errors"][0]["path"], "privacy", "{problem}");
    assert!(
        problem["errors"][0]["message"].as_str().unwrap_or_default().contains("use closed"),
        "{problem}"
    );
    engine.stop().await
}

/// The team as `GET /v1/teams/payments` shows it, once its status lists a problem of `kind`.
async fn wait_problem(http: &Client, api: &str, kind: &str) -> anyhow::Result<Value> {
    wait_for(&format!("a {kind} problem on the team"), WAIT, || async {
        let team: Value =
            http.get(format!("{api}/v1/teams/payments")).send().await.ok()?.json().await.ok()?;
        let problems = team["status"]["problems"].as_array()?;
        problems.iter().any(|p| p["kind"] == kind).then_some(team)
    })
    .await
}

/// A login GitHub does not know (renamed) does not fail the sync: everyone else is synced, the
/// namespaces are recorded, and the team's status names the login.
#[tokio::test]
async fn a_renamed_login_is_reported_on_the_team_and_everyone_else_is_synced() -> anyhow::Result<()>
{
    let fake = FakeGitHub::start(ORG).await?;
    fake.add_org_members(["alice", "bob", "carol"]);
    fake.rename_user("bob", "robert");
    let mut world = world_with_github(&fake, "").await?;
    let mut engine = world.start_engine().await?;
    let http = Client::new();
    let api = engine.api.clone();
    post(&http, format!("{api}/v1/environments"), json!({"name": "dev"})).await?;
    post(&http, format!("{api}/v1/teams"), team_body(&["alice", "bob"], &["carol"])).await?;

    wait_members(
        &fake,
        "payments",
        &[("alice", "member"), ("carol", "maintainer"), ("muster-bot", "maintainer")],
    )
    .await?;
    let team = wait_problem(&http, &api, "login_refused").await?;
    let problem = &team["status"]["problems"][0];
    assert_eq!(problem["login"], "bob", "{team}");
    assert!(problem["message"].as_str().unwrap_or("").contains("renamed"), "{team}");
    settle(&mut world, "sync_team").await?;
    assert!(sync_runs(&world, RunStatus::Failed).await?.is_empty(), "no run failed");
    let namespaces: Value =
        http.get(format!("{api}/v1/teams/payments/namespaces")).send().await?.json().await?;
    assert_eq!(namespaces["items"][0]["name"], "payments-dev", "{namespaces}");
    engine.stop().await
}

/// A GitHub team that already has the team's slug is not taken over by an ordinary sync: it is
/// reported on the team, and adopted only when an admin asks.
#[tokio::test]
async fn an_existing_github_team_is_adopted_only_when_an_admin_asks() -> anyhow::Result<()> {
    let fake = FakeGitHub::start(ORG).await?;
    fake.add_org_members(["alice", "carol", "zed"]);
    let existing = fake.create_team("Payments");
    fake.set_created_at("payments", chrono::Utc::now() - chrono::Duration::days(30));
    fake.put_member("payments", "zed", "maintainer", false);
    let mut world = world_with_github(&fake, "").await?;
    let mut engine = world.start_engine().await?;
    world.set("MUSTER_API_URL", &engine.api);
    let http = Client::new();
    let api = engine.api.clone();
    post(&http, format!("{api}/v1/environments"), json!({"name": "dev"})).await?;
    post(&http, format!("{api}/v1/teams"), team_body(&["alice"], &["carol"])).await?;

    let team = wait_problem(&http, &api, "unmanaged_github_team").await?;
    assert!(team["status"]["github"].is_null(), "not linked: {team}");
    settle(&mut world, "sync_team").await?;
    assert!(fake.mutations().is_empty(), "nothing sent: {:?}", fake.mutations());
    assert_eq!(fake.team("payments").unwrap().members.len(), 1);

    world.cli(&["teams", "sync", "payments", "--adopt", "--allow-mass-removal"]).await?;
    wait_members(&fake, "payments", &[("alice", "member"), ("carol", "maintainer")]).await?;
    assert_eq!(fake.team("payments").unwrap().id, existing, "the same team, adopted");
    assert_eq!(fake.teams().len(), 1);
    engine.stop().await
}

/// GitHub deletes a team's child teams with it: a team that other teams name as their parent
/// cannot be deleted until they are deleted or moved.
#[tokio::test]
async fn a_parent_team_is_not_deleted_while_it_has_child_teams() -> anyhow::Result<()> {
    let fake = FakeGitHub::start(ORG).await?;
    fake.add_org_members(["alice", "carol"]);
    let mut world = world_with_github(&fake, "allow-team-deletion = true\n").await?;
    let mut engine = world.start_engine().await?;
    let http = Client::new();
    let api = engine.api.clone();
    post(&http, format!("{api}/v1/teams"), team_body(&["alice"], &["carol"])).await?;
    let child = json!({"slug": "payments-cards", "name": "Payments Cards",
                       "maintainers": ["carol"], "members": [], "parent": "payments"});
    post(&http, format!("{api}/v1/teams"), child).await?;

    let response = http.delete(format!("{api}/v1/teams/payments")).send().await?;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let problem: Value = response.json().await?;
    assert!(problem["detail"].as_str().unwrap_or("").contains("payments-cards"), "{problem}");

    let response = http.delete(format!("{api}/v1/teams/payments-cards")).send().await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{}", response.text().await?);
    let response = http.delete(format!("{api}/v1/teams/payments")).send().await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{}", response.text().await?);
    engine.stop().await
}

/// An offboarded person is not invited back when members must already belong to the
/// organization, and an expired invitation is not sent again on every sync: both are held back
/// and reported on the team.
#[tokio::test]
async fn offboarded_people_and_expired_invitations_are_held_back() -> anyhow::Result<()> {
    let fake = FakeGitHub::start(ORG).await?;
    fake.add_org_members(["alice", "bob", "carol"]);
    let mut world = world_with_github(&fake, "invite-non-members = false\n").await?;
    let mut engine = world.start_engine().await?;
    let http = Client::new();
    let api = engine.api.clone();
    post(&http, format!("{api}/v1/teams"), team_body(&["alice", "bob"], &["carol"])).await?;
    wait_members(
        &fake,
        "payments",
        &[
            ("alice", "member"),
            ("bob", "member"),
            ("carol", "maintainer"),
            ("muster-bot", "maintainer"),
        ],
    )
    .await?;
    settle(&mut world, "sync_team").await?;

    // Bob leaves the company: GitHub removes him from the organization and its teams. The
    // next sync (the organization webhook's, here the API's) does not invite him back.
    fake.remove_org_member("bob");
    fake.clear_log();
    sync_now(&world, &engine, &http).await?;
    assert!(fake.mutations().is_empty(), "nobody invited: {:?}", fake.mutations());
    let team = wait_problem(&http, &api, "login_held").await?;
    assert_eq!(team["status"]["problems"][0]["login"], "bob", "{team}");
    assert!(fake.team("payments").unwrap().pending.is_empty());
    engine.stop().await?;

    // Invitations allowed: dave is invited once; when his invitation expires it is not sent
    // again on the next sync.
    world.use_config(&format!(
        "[github]\napi-url = \"{}\"\norg = \"{ORG}\"\nwrite-interval = \"10ms\"\n",
        fake.url()
    ))?;
    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let patch = json!({"members": ["alice", "dave"]});
    let response = http
        .patch(format!("{api}/v1/teams/payments"))
        .header("content-type", "application/merge-patch+json")
        .body(patch.to_string())
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await?);
    wait_for("dave's invitation", WAIT, || async {
        fake.team("payments").filter(|t| t.pending.contains_key("dave")).map(|_| ())
    })
    .await?;
    settle(&mut world, "sync_team").await?;
    assert!(fake.expire_invitation("dave"));
    fake.clear_log();
    sync_now(&world, &engine, &http).await?;
    let invites: Vec<_> =
        fake.mutations().into_iter().filter(|r| r.path.ends_with("/dave")).collect();
    assert!(invites.is_empty(), "not re-sent: {invites:?}");
    let team = wait_problem(&http, &api, "login_held").await?;
    let message = team["status"]["problems"][0]["message"].as_str().unwrap_or("").to_owned();
    assert!(message.contains("expired"), "{team}");
    engine.stop().await
}
