//! The HTTP API end to end: a real nats-server per test, the engine as a child process serving
//! HTTP on a free port, requests over real HTTP, and the events checked on the stream.

use std::time::Duration;

use anyhow::Context as _;

use e2e::harness::{WAIT, World, wait_for};
use engine::journal::RunStatus;
use reqwest::{Client, Response, StatusCode, header};
use serde_json::{Value, json};

const PROBLEMS: &str = "https://muster.dev/problems/";

async fn body(
    response: Response,
) -> anyhow::Result<(StatusCode, reqwest::header::HeaderMap, Value)> {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await?;
    let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? };
    Ok((status, headers, value))
}

/// Asserts a problem answer of `kind` with `status`, and returns it.
async fn problem(response: Response, status: StatusCode, kind: &str) -> anyhow::Result<Value> {
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (got, _, value) = body(response).await?;
    assert_eq!(got, status, "{value}");
    assert_eq!(content_type, "application/problem+json", "{value}");
    assert_eq!(value["type"], format!("{PROBLEMS}{kind}"), "{value}");
    assert_eq!(value["status"], status.as_u16(), "{value}");
    assert!(value["title"].is_string() && value["detail"].is_string(), "{value}");
    Ok(value)
}

/// `(type, subject, ce-id)` of every record event on the events stream, in stream order.
async fn record_events(world: &mut World) -> anyhow::Result<Vec<(String, String, String)>> {
    let js = world.jetstream().await?;
    let mut stream = js.get_stream("MUSTER_EVENTS").await?;
    let state = stream.info().await?.state.clone();
    let mut events = Vec::new();
    if state.messages == 0 {
        return Ok(events);
    }
    for seq in state.first_sequence..=state.last_sequence {
        let Ok(message) = stream.get_raw_message(seq).await else { continue };
        let header = |name: &str| {
            message.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default()
        };
        let ty = header("ce-type");
        // The records' announcements; `muster.team.sync` requests (e.g. from sync_environment's
        // fan-out) are not record changes.
        if (ty.starts_with("muster.team.") || ty.starts_with("muster.environment."))
            && ty != "muster.team.sync"
        {
            events.push((ty, header("ce-subject"), header("ce-id")));
        }
    }
    Ok(events)
}

/// Waits until the stream holds `expected` (type, subject) record events, in that order.
async fn wait_record_events(world: &mut World, expected: &[(&str, &str)]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let events = record_events(world).await?;
        let got: Vec<(&str, &str)> =
            events.iter().map(|(t, s, _)| (t.as_str(), s.as_str())).collect();
        if got == expected {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("record events on the stream: {got:?}, expected {expected:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `/metrics` shows every line of `expected`.
async fn metrics_show(http: &Client, api: &str, expected: &[&str]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = http.get(format!("{api}/metrics")).send().await?.text().await?;
        if expected.iter().all(|line| text.lines().any(|l| l == *line)) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("/metrics lacks some of {expected:?}:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn team(slug: &str) -> Value {
    json!({
        "slug": slug,
        "name": "Payments",
        "description": "Moves money",
        "members": ["alice", "bob"],
        "maintainers": ["carol"]
    })
}

#[tokio::test]
async fn teams_and_environments_over_http() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let http = Client::new();

    // Environments: a body with only a name is enough.
    let response =
        http.post(format!("{api}/v1/environments")).json(&json!({"name": "dev"})).send().await?;
    let (status, headers, dev) = body(response).await?;
    assert_eq!(status, StatusCode::CREATED, "{dev}");
    assert_eq!(headers[header::LOCATION], "/v1/environments/dev");
    assert_eq!(headers[header::ETAG], "\"1\"");
    assert_eq!(dev["allow_namespace_deletion"], false);
    let prod = json!({"name": "prod", "clusters": ["prod-eu-1"], "default_quota": {"requests.cpu": "8", "limits.memory": "16Gi"}});
    let response = http.post(format!("{api}/v1/environments")).json(&prod).send().await?;
    assert_eq!(response.status(), StatusCode::CREATED);
    let prod_put = json!({"name": "prod", "clusters": ["prod-eu-1", "prod-us-1"]});
    let response = http
        .put(format!("{api}/v1/environments/prod"))
        .header(header::IF_MATCH, "\"1\"")
        .json(&prod_put)
        .send()
        .await?;
    let (status, headers, updated) = body(response).await?;
    assert_eq!((status, &headers[header::ETAG]), (StatusCode::OK, &"\"2\"".parse()?), "{updated}");
    let (_, _, envs) = body(http.get(format!("{api}/v1/environments")).send().await?).await?;
    assert_eq!(envs["items"].as_array().map(Vec::len), Some(2));

    // Teams: create, read with its ETag, duplicate.
    let response = http.post(format!("{api}/v1/teams")).json(&team("payments")).send().await?;
    let (status, headers, created) = body(response).await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(headers[header::LOCATION], "/v1/teams/payments");
    assert_eq!(headers[header::ETAG], "\"1\"");
    assert_eq!(created["members"], json!(["alice", "bob"]));
    assert_eq!(created["resource_version"], 1);
    let response = http.get(format!("{api}/v1/teams/payments")).send().await?;
    let (status, headers, got) = body(response).await?;
    assert_eq!((status, got["name"].as_str()), (StatusCode::OK, Some("Payments")));
    assert_eq!(headers[header::ETAG], "\"1\"");
    let response = http.post(format!("{api}/v1/teams")).json(&team("payments")).send().await?;
    problem(response, StatusCode::CONFLICT, "already-exists").await?;

    // PUT with a stale If-Match: 412 and nothing written; with the current one: 200.
    let mut replaced = team("payments");
    replaced["description"] = json!("Moves more money");
    let response = http
        .put(format!("{api}/v1/teams/payments"))
        .header(header::IF_MATCH, "\"7\"")
        .json(&replaced)
        .send()
        .await?;
    problem(response, StatusCode::PRECONDITION_FAILED, "precondition-failed").await?;
    let response = http
        .put(format!("{api}/v1/teams/payments"))
        .header(header::IF_MATCH, "\"1\"")
        .json(&replaced)
        .send()
        .await?;
    let (status, headers, put) = body(response).await?;
    assert_eq!((status, put["description"].as_str()), (StatusCode::OK, Some("Moves more money")));
    assert_eq!(headers[header::ETAG], "\"2\"");

    // PATCH: a JSON Merge Patch changes only what it names.
    let response = http
        .patch(format!("{api}/v1/teams/payments"))
        .header(header::CONTENT_TYPE, "application/merge-patch+json")
        .header(header::IF_MATCH, "\"2\"")
        .body(r#"{"members": ["alice", "dave"], "labels": {"cost-center": "cc-42"}}"#)
        .send()
        .await?;
    let (status, headers, patched) = body(response).await?;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(headers[header::ETAG], "\"3\"");
    assert_eq!(patched["members"], json!(["alice", "dave"]));
    assert_eq!(patched["maintainers"], json!(["carol"]));
    assert_eq!(patched["description"], "Moves more money");
    assert_eq!(patched["labels"]["cost-center"], "cc-42");
    let response = http
        .patch(format!("{api}/v1/teams/payments"))
        .header(header::CONTENT_TYPE, "application/merge-patch+json")
        .header(header::IF_MATCH, "\"2\"")
        .body(r#"{"name": "Stale"}"#)
        .send()
        .await?;
    problem(response, StatusCode::PRECONDITION_FAILED, "precondition-failed").await?;

    // Cursor pagination.
    for slug in ["billing", "search"] {
        let response = http.post(format!("{api}/v1/teams")).json(&team(slug)).send().await?;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let mut slugs = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let url = match &cursor {
            None => format!("{api}/v1/teams?limit=2"),
            Some(c) => format!("{api}/v1/teams?limit=2&cursor={c}"),
        };
        let (_, _, page) = body(http.get(url).send().await?).await?;
        slugs.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["slug"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(slugs, ["billing", "payments", "search"]);

    // Namespace records: sync_team writes one per team and environment; the ETag makes polls
    // cheap.
    let namespaces = |path: String| {
        let http = http.clone();
        async move {
            let (_, _, list) = body(http.get(path).send().await.ok()?).await.ok()?;
            list["items"].as_array().cloned()
        }
    };
    // Every team's records, and payments' at its latest labels: a team's labels are carried
    // onto its records, so the sync of the PATCH above changes them once more.
    for slug in ["billing", "payments", "search"] {
        let path = format!("{api}/v1/teams/{slug}/namespaces");
        wait_for(&format!("{slug}'s namespace records"), WAIT, || {
            let path = path.clone();
            async move {
                namespaces(path).await.filter(|items| {
                    items.len() == 2
                        && (slug != "payments"
                            || items.iter().all(|n| n["labels"]["cost-center"] == "cc-42"))
                })
            }
        })
        .await?;
    }
    let response = http.get(format!("{api}/v1/namespaces?environment=dev")).send().await?;
    let (status, headers, list) = body(response).await?;
    let names: Vec<&str> =
        list["items"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(
        (status, names),
        (StatusCode::OK, vec!["billing-dev", "payments-dev", "search-dev"])
    );
    let tag = headers[header::ETAG].to_str()?.to_owned();
    let response = http
        .get(format!("{api}/v1/namespaces?environment=dev"))
        .header(header::IF_NONE_MATCH, &tag)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    let (status, _, list) =
        body(http.get(format!("{api}/v1/teams/payments/namespaces")).send().await?).await?;
    let payments_prod = &list["items"][1];
    assert_eq!((status, payments_prod["name"].as_str()), (StatusCode::OK, Some("payments-prod")));
    // prod's PUT above replaced its default quota with none.
    assert_eq!(payments_prod["quota"], json!({}));
    assert_eq!(
        payments_prod["role_bindings"],
        json!([
            {"group": "payments", "role": "edit"},
            {"group": "payments-maintainers", "role": "admin"}
        ])
    );
    // No agent runs here: both of prod's clusters are targets that never reported.
    assert_eq!(payments_prod["target_clusters"], json!(["prod-eu-1", "prod-us-1"]));
    assert_eq!(payments_prod["never_reported"], json!(["prod-eu-1", "prod-us-1"]));
    assert_eq!(payments_prod["clusters"], json!({}));

    // Sync request: 202, a muster.team.sync event on the stream.
    let response = http.post(format!("{api}/v1/teams/payments/sync")).send().await?;
    let (status, _, sync) = body(response).await?;
    assert_eq!(
        (status, sync["duplicate"].as_bool()),
        (StatusCode::ACCEPTED, Some(false)),
        "{sync}"
    );
    let response = http.post(format!("{api}/v1/teams/nobody/sync")).send().await?;
    problem(response, StatusCode::NOT_FOUND, "not-found").await?;

    // Delete: a tombstone, still readable, announced; deleting again changes nothing.
    let response = http.delete(format!("{api}/v1/teams/search")).send().await?;
    let (status, _, tombstone) = body(response).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{tombstone}");
    assert!(tombstone["deleted_at"].is_string());
    let (_, _, again) = body(http.delete(format!("{api}/v1/teams/search")).send().await?).await?;
    assert_eq!(again["resource_version"], tombstone["resource_version"]);
    let response = http.put(format!("{api}/v1/teams/search")).json(&team("search")).send().await?;
    problem(response, StatusCode::CONFLICT, "conflict").await?;
    let response = http.delete(format!("{api}/v1/environments/dev")).send().await?;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = http.get(format!("{api}/v1/environments/dev")).send().await?;
    problem(response, StatusCode::NOT_FOUND, "not-found").await?;

    // Every change reached the stream, once, in order.
    wait_record_events(
        &mut world,
        &[
            ("muster.environment.created", "dev"),
            ("muster.environment.created", "prod"),
            ("muster.environment.updated", "prod"),
            ("muster.team.created", "payments"),
            ("muster.team.updated", "payments"),
            ("muster.team.updated", "payments"),
            ("muster.team.created", "billing"),
            ("muster.team.created", "search"),
            ("muster.team.deleted", "search"),
            ("muster.environment.deleted", "dev"),
        ],
    )
    .await?;

    // Health and metrics.
    let (status, _, live) = body(http.get(format!("{api}/livez")).send().await?).await?;
    assert_eq!((status, live["status"].as_str()), (StatusCode::OK, Some("ok")));
    assert!(live["time"].as_str().unwrap().ends_with('Z'), "{live}");
    assert!(live["version"].is_string() && live["uptime_seconds"].is_u64());
    let (status, _, ready) = body(http.get(format!("{api}/readyz")).send().await?).await?;
    assert_eq!(status, StatusCode::OK, "{ready}");
    let checks: Vec<&str> =
        ready["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(checks, ["nats", "streams", "store", "schedules"]);
    assert_eq!(ready["schedules"][0]["name"], "resync", "{ready}");
    metrics_show(
        &http,
        &api,
        &[
            "muster_http_requests_total{method=\"POST\",route=\"/v1/teams\",status=\"201\"} 3",
            "muster_outbox_published_total 10",
            "muster_outbox_depth 0",
        ],
    )
    .await?;
    engine.stop().await
}

#[tokio::test]
async fn runs_events_retry_and_dlq_over_http() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.set("MUSTER_RUNTIME__MAX_ATTEMPTS", "2");
    let dir = world.effects_dir();
    std::fs::write(dir.join("broken"), "")?;
    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let http = Client::new();

    // Structured mode, then the same event again: stored once, the second flagged.
    let ping = json!({"specversion": "1.0", "id": "http-1", "source": "/e2e/http", "type": "muster.ping", "subject": "s", "data": {"n": 1}});
    let mut duplicates = Vec::new();
    for _ in 0..2 {
        let response = http
            .post(format!("{api}/v1/events"))
            .header(header::CONTENT_TYPE, "application/cloudevents+json")
            .body(ping.to_string())
            .send()
            .await?;
        let (status, _, accepted) = body(response).await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        assert_eq!(accepted["events"][0]["id"], "http-1");
        duplicates.push(accepted["events"][0]["duplicate"].as_bool().unwrap());
    }
    assert_eq!(duplicates, [false, true]);
    // Binary mode and a batch.
    let response = http
        .post(format!("{api}/v1/events"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "http-2")
        .header("ce-source", "/e2e/http")
        .header("ce-type", "muster.ping")
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"n": 2}"#)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let flaky = json!({"specversion": "1.0", "id": "http-f", "source": "/e2e/http", "type": "test.flaky", "subject": "team-a", "data": {"dir": dir}});
    let batch = json!([{"specversion": "1.0", "id": "http-3", "source": "/e2e/http", "type": "muster.ping"}, flaky]);
    let response = http
        .post(format!("{api}/v1/events"))
        .header(header::CONTENT_TYPE, "application/cloudevents-batch+json")
        .body(batch.to_string())
        .send()
        .await?;
    let (status, _, accepted) = body(response).await?;
    assert_eq!(
        (status, accepted["events"].as_array().map(Vec::len)),
        (StatusCode::ACCEPTED, Some(2))
    );

    // Runs: three pings succeed, the flaky run fails into the DLQ.
    let pings = wait_for("three ping runs to succeed", WAIT, || async {
        let (_, _, runs) = body(
            http.get(format!("{api}/v1/runs?workflow=ping&status=succeeded")).send().await.ok()?,
        )
        .await
        .ok()?;
        let items = runs["items"].as_array()?.clone();
        (items.len() == 3).then_some(items)
    })
    .await?;
    let ping_id = pings[0]["id"].as_str().unwrap().to_owned();
    let (status, _, detail) =
        body(http.get(format!("{api}/v1/runs/{ping_id}")).send().await?).await?;
    assert_eq!((status, detail["steps"].as_array().map(Vec::len)), (StatusCode::OK, Some(3)));
    let response = http.post(format!("{api}/v1/runs/{ping_id}/retry")).send().await?;
    problem(response, StatusCode::CONFLICT, "conflict").await?;
    let response = http.get(format!("{api}/v1/runs/no-such-run")).send().await?;
    problem(response, StatusCode::NOT_FOUND, "not-found").await?;

    let flaky_id = engine::runtime::run_id("flaky", &serde_json::from_value(flaky.clone())?);
    let failed = world.wait_run(&flaky_id, RunStatus::Failed).await?;
    let dlq_seq = wait_for("the flaky run's dead letter", WAIT, || async {
        world.run_detail(&flaky_id).await.ok()?.run.dlq_sequence
    })
    .await?;
    assert_eq!(failed.run.attempts, 2);
    let (_, _, dlq) = body(http.get(format!("{api}/v1/dlq")).send().await?).await?;
    assert_eq!(dlq["items"][0]["seq"], dlq_seq, "{dlq}");
    assert_eq!(dlq["items"][0]["workflow"], "flaky");

    // A publisher on the events subjects cannot re-drive it: the `Muster-Redrive` header counts
    // only on the workflow's re-drive subject. The forged copy is consumed and changes nothing.
    let mut forged = async_nats::HeaderMap::new();
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "http-f"),
        ("ce-source", "/e2e/http"),
        ("ce-type", "test.flaky"),
        ("ce-subject", "team-a"),
        ("content-type", "application/json"),
        ("Muster-Redrive", "forged"),
        ("Nats-Msg-Id", "forged-redrive-1"),
    ] {
        forged.insert(name, value);
    }
    let js = world.jetstream().await?;
    let data = serde_json::to_vec(&json!({"dir": dir}))?;
    js.publish_with_headers("muster.events.test.flaky.team-a", forged, data.into()).await?.await?;
    wait_for("the forged re-drive to be consumed", WAIT, || {
        let js = js.clone();
        async move {
            let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                js.get_consumer_from_stream("flaky", "MUSTER_EVENTS").await.ok()?;
            let info = consumer.info().await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        }
    })
    .await?;
    let after = world.run_detail(&flaky_id).await?;
    assert_eq!(
        (after.run.status, after.run.attempts, after.run.redrives),
        (RunStatus::Failed, 2, 0),
        "a forged Muster-Redrive on muster.events.> must not reset the run"
    );

    // Retry after the fix: the run is re-driven and succeeds; its dead letter is gone.
    std::fs::remove_file(dir.join("broken"))?;
    let response = http.post(format!("{api}/v1/runs/{flaky_id}/retry")).send().await?;
    let (status, _, redriven) = body(response).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{redriven}");
    let detail = world.wait_run(&flaky_id, RunStatus::Succeeded).await?;
    assert_eq!(detail.run.redrives, 1);
    let (_, _, dlq) = body(http.get(format!("{api}/v1/dlq")).send().await?).await?;
    assert_eq!(dlq["items"], json!([]));
    let response = http.post(format!("{api}/v1/dlq/{dlq_seq}/replay")).send().await?;
    problem(response, StatusCode::NOT_FOUND, "not-found").await?;

    // A second failure, replayed from the DLQ this time.
    std::fs::write(dir.join("broken"), "")?;
    let flaky2 = json!({"specversion": "1.0", "id": "http-f2", "source": "/e2e/http", "type": "test.flaky", "subject": "team-b", "data": {"dir": dir}});
    let response = http
        .post(format!("{api}/v1/events"))
        .header(header::CONTENT_TYPE, "application/cloudevents+json")
        .body(flaky2.to_string())
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let flaky2_id = engine::runtime::run_id("flaky", &serde_json::from_value(flaky2)?);
    let seq = wait_for("the second dead letter", WAIT, || async {
        world.run_detail(&flaky2_id).await.ok()?.run.dlq_sequence
    })
    .await?;
    std::fs::remove_file(dir.join("broken"))?;
    let response = http.post(format!("{api}/v1/dlq/{seq}/replay")).send().await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    world.wait_run(&flaky2_id, RunStatus::Succeeded).await?;

    metrics_show(
        &http,
        &api,
        &[
            "muster_runs_finished_total{workflow=\"ping\",outcome=\"succeeded\"} 3",
            "muster_runs_finished_total{workflow=\"flaky\",outcome=\"failed\"} 2",
            "muster_runs_finished_total{workflow=\"flaky\",outcome=\"succeeded\"} 2",
        ],
    )
    .await?;
    engine.stop().await
}

#[tokio::test]
async fn bad_input_is_a_4xx_problem_and_writes_nothing() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.set("MUSTER_HTTP__MAX_BODY_BYTES", "4096");
    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let http = Client::new();
    let post = |path: &str, content_type: &str, body: String| {
        http.post(format!("{api}{path}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
    };

    problem(
        post("/v1/teams", "application/json", "{\"slug\": \"a\",".into()).await?,
        StatusCode::BAD_REQUEST,
        "malformed-json",
    )
    .await?;
    let unknown = json!({"slug": "a", "name": "A", "owner": "x"}).to_string();
    let p = problem(
        post("/v1/teams", "application/json", unknown).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-body",
    )
    .await?;
    assert!(p["detail"].as_str().unwrap().contains("unknown field `owner`"), "{p}");
    assert_eq!(p["errors"][0]["path"], "owner");
    let wrong_type = json!({"slug": "a", "name": 5}).to_string();
    problem(
        post("/v1/teams", "application/json", wrong_type).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-body",
    )
    .await?;
    let bad_slug =
        json!({"slug": "Bad_Slug!", "name": "A", "members": ["-nope"], "maintainers": ["carol"]})
            .to_string();
    let p = problem(
        post("/v1/teams", "application/json", bad_slug).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await?;
    let paths: Vec<&str> =
        p["errors"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["slug", "members[0]"], "{p}");
    let long_slug = json!({"slug": "a".repeat(64), "name": "A"}).to_string();
    problem(
        post("/v1/teams", "application/json", long_slug).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await?;
    let bad_quantity =
        json!({"name": "dev", "default_quota": {"requests.cpu": "lots"}}).to_string();
    let p = problem(
        post("/v1/environments", "application/json", bad_quantity).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await?;
    assert_eq!(p["errors"][0]["path"], "default_quota[\"requests.cpu\"]", "{p}");
    let too_big = json!({"slug": "big", "name": "A", "description": "x".repeat(8000)}).to_string();
    problem(
        post("/v1/teams", "application/json", too_big).await?,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
    )
    .await?;
    problem(
        post("/v1/teams", "text/plain", team("plain").to_string()).await?,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await?;
    let response =
        http.post(format!("{api}/v1/teams")).body(team("none").to_string()).send().await?;
    problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type").await?;
    // A slug that would not fit a namespace name for a long environment is still refused by
    // the namespace record, not here; a parent that is the team itself is refused here.
    let own_parent = json!({"slug": "loop", "name": "L", "parent": "loop"}).to_string();
    problem(
        post("/v1/teams", "application/json", own_parent).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await?;

    // Preconditions and conflicts.
    assert_eq!(
        post("/v1/teams", "application/json", team("ok").to_string()).await?.status(),
        StatusCode::CREATED
    );
    problem(
        post("/v1/teams", "application/json", team("ok").to_string()).await?,
        StatusCode::CONFLICT,
        "already-exists",
    )
    .await?;
    let response = http
        .put(format!("{api}/v1/teams/ok"))
        .header(header::IF_MATCH, "\"9\"")
        .json(&team("ok"))
        .send()
        .await?;
    problem(response, StatusCode::PRECONDITION_FAILED, "precondition-failed").await?;
    let response = http
        .put(format!("{api}/v1/teams/ok"))
        .header(header::IF_MATCH, "nonsense")
        .json(&team("ok"))
        .send()
        .await?;
    problem(response, StatusCode::PRECONDITION_FAILED, "precondition-failed").await?;
    let response = http.put(format!("{api}/v1/teams/ok")).json(&team("other")).send().await?;
    problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation").await?;
    let response =
        http.delete(format!("{api}/v1/teams/ok")).header(header::IF_MATCH, "\"2\"").send().await?;
    problem(response, StatusCode::PRECONDITION_FAILED, "precondition-failed").await?;
    let response = http
        .patch(format!("{api}/v1/teams/ok"))
        .header(header::CONTENT_TYPE, "application/merge-patch+json")
        .body(r#"{"members": ["ok", "-bad-"], "slug": "renamed"}"#)
        .send()
        .await?;
    problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation").await?;
    let response = http
        .patch(format!("{api}/v1/teams/ok"))
        .header(header::CONTENT_TYPE, "application/merge-patch+json")
        .body(r#"{"unknown": 1}"#)
        .send()
        .await?;
    problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid-body").await?;
    let response = http
        .patch(format!("{api}/v1/teams/ok"))
        .header(header::CONTENT_TYPE, "application/merge-patch+json")
        .body("[1,2]")
        .send()
        .await?;
    problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid-body").await?;

    // Parameters, routes, methods.
    problem(
        http.get(format!("{api}/v1/teams?limit=abc")).send().await?,
        StatusCode::BAD_REQUEST,
        "bad-request",
    )
    .await?;
    problem(
        http.get(format!("{api}/v1/teams?limit=0")).send().await?,
        StatusCode::BAD_REQUEST,
        "bad-request",
    )
    .await?;
    problem(
        http.get(format!("{api}/v1/runs?status=sleeping")).send().await?,
        StatusCode::BAD_REQUEST,
        "bad-request",
    )
    .await?;
    // A page of runs is bounded (500), not clamped; a cursor no list made is refused too.
    for query in ["limit=501", "limit=0", "cursor=not-a-cursor"] {
        problem(
            http.get(format!("{api}/v1/runs?{query}")).send().await?,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        )
        .await?;
    }
    problem(
        http.get(format!("{api}/v1/teams/Not_A_Slug")).send().await?,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await?;
    problem(
        http.post(format!("{api}/v1/dlq/abc/replay")).send().await?,
        StatusCode::BAD_REQUEST,
        "bad-request",
    )
    .await?;
    problem(
        http.get(format!("{api}/v2/nothing")).send().await?,
        StatusCode::NOT_FOUND,
        "route-not-found",
    )
    .await?;
    problem(
        http.delete(format!("{api}/v1/teams")).send().await?,
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
    )
    .await?;

    // CloudEvents that are not.
    let missing_type = json!({"specversion": "1.0", "id": "1", "source": "/x"}).to_string();
    problem(
        post("/v1/events", "application/cloudevents+json", missing_type).await?,
        StatusCode::BAD_REQUEST,
        "invalid-event",
    )
    .await?;
    let old = json!({"specversion": "0.3", "id": "1", "source": "/x", "type": "a.b"}).to_string();
    problem(
        post("/v1/events", "application/cloudevents+json", old).await?,
        StatusCode::BAD_REQUEST,
        "invalid-event",
    )
    .await?;
    let wild = json!({"specversion": "1.0", "id": "1", "source": "/x", "type": "a.*"}).to_string();
    problem(
        post("/v1/events", "application/cloudevents+json", wild).await?,
        StatusCode::BAD_REQUEST,
        "invalid-event",
    )
    .await?;
    let long = json!({"specversion": "1.0", "id": "1", "source": "/x", "type": "a.b", "subject": "s".repeat(1500)}).to_string();
    problem(
        post("/v1/events", "application/cloudevents+json", long).await?,
        StatusCode::BAD_REQUEST,
        "invalid-event",
    )
    .await?;
    problem(
        post("/v1/events", "application/cloudevents+json", "{".into()).await?,
        StatusCode::BAD_REQUEST,
        "invalid-event",
    )
    .await?;
    problem(
        post("/v1/events", "text/plain", "hi".into()).await?,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await?;
    let half_bad = json!([{"specversion": "1.0", "id": "good", "source": "/x", "type": "muster.ping"}, {"id": "bad"}]).to_string();
    let p = problem(
        post("/v1/events", "application/cloudevents-batch+json", half_bad).await?,
        StatusCode::BAD_REQUEST,
        "invalid-event",
    )
    .await?;
    assert_eq!(p["errors"][0]["path"], "[1]");
    problem(
        post("/v1/events", "application/cloudevents-batch+json", "{}".into()).await?,
        StatusCode::BAD_REQUEST,
        "malformed-json",
    )
    .await?;
    // Line breaks in any attribute would reach the NATS header encoder, which panics on them:
    // they are refused at the boundary, naming the attribute, and the engine keeps serving.
    for (attribute, event) in [
        (
            "id",
            json!({"specversion": "1.0", "id": "a\r\nb", "source": "/x", "type": "muster.ping"}),
        ),
        (
            "source",
            json!({"specversion": "1.0", "id": "1", "source": "/x\n", "type": "muster.ping"}),
        ),
        (
            "subject",
            json!({"specversion": "1.0", "id": "1", "source": "/x", "type": "muster.ping", "subject": "a\rb"}),
        ),
        (
            "traceparent",
            json!({"specversion": "1.0", "id": "1", "source": "/x", "type": "muster.ping", "traceparent": "00\r\nx: y"}),
        ),
    ] {
        let p = problem(
            post("/v1/events", "application/cloudevents+json", event.to_string()).await?,
            StatusCode::BAD_REQUEST,
            "invalid-event",
        )
        .await?;
        assert!(p["detail"].as_str().unwrap().contains(attribute), "{p}");
    }
    let bad_extension = json!({"specversion": "1.0", "id": "1", "source": "/x", "type": "muster.ping", "Bad\nName": "v"});
    problem(
        post("/v1/events", "application/cloudevents+json", bad_extension.to_string()).await?,
        StatusCode::BAD_REQUEST,
        "invalid-event",
    )
    .await?;
    problem(
        http.post(format!("{api}/v1/runs/a%0D%0Ab/retry")).send().await?,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await?;
    let live = http.get(format!("{api}/livez")).send().await?;
    assert_eq!(live.status(), StatusCode::OK, "the engine still serves");

    // Nothing of the above was written: one team, no environment, one event on the stream.
    let (_, _, teams) = body(http.get(format!("{api}/v1/teams")).send().await?).await?;
    let slugs: Vec<&str> =
        teams["items"].as_array().unwrap().iter().map(|t| t["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs, ["ok"]);
    let (_, _, envs) = body(http.get(format!("{api}/v1/environments")).send().await?).await?;
    assert_eq!(envs["items"], json!([]));
    wait_record_events(&mut world, &[("muster.team.created", "ok")]).await?;
    let js = world.jetstream().await?;
    let info = js.get_stream("MUSTER_EVENTS").await?.info().await?.state.clone();
    assert_eq!(info.messages, 1, "the half-bad batch stored nothing");
    let log = engine.log();
    engine.stop().await?;
    assert!(!log.contains("internal error"), "{log}");
    Ok(())
}

#[tokio::test]
async fn every_documented_route_is_served() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let http = Client::new();
    let (status, _, doc) = body(http.get(format!("{api}/openapi.json")).send().await?).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut routes = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = format!("{api}{}", e2e::harness::route_path(path, "doc-check"));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())?;
            let response = http
                .request(method.clone(), &url)
                .header(header::CONTENT_TYPE, "application/json")
                .body("{}")
                .send()
                .await?;
            let status = response.status();
            let (_, _, answer) =
                body(response).await.unwrap_or((status, Default::default(), Value::Null));
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {answer}");
            assert_ne!(answer["type"], format!("{PROBLEMS}route-not-found"), "{method} {path}");
            assert!(!status.is_server_error(), "{method} {path}: {status} {answer}");
            routes += 1;
        }
    }
    assert_eq!(routes, 28);
    engine.stop().await
}

/// Publishes an agent's report through the ingest endpoint, as an agent would on NATS.
async fn report(
    http: &Client,
    api: &str,
    cluster: &str,
    environment: &str,
    namespace: &str,
    outcome: &str,
) -> anyhow::Result<()> {
    let event = json!({
        "specversion": "1.0",
        "id": format!("{cluster}-{namespace}-{outcome}"),
        "source": format!("/muster/agent/{cluster}"),
        "type": "muster.cluster.reported",
        "subject": environment,
        "data": {
            "cluster": cluster,
            "environment": environment,
            "namespace": namespace,
            "team": namespace.rsplit_once('-').map(|(team, _)| team),
            "outcome": outcome,
            "reported_at": chrono::Utc::now(),
        },
    });
    let response = http
        .post(format!("{api}/v1/events"))
        .header(header::CONTENT_TYPE, "application/cloudevents+json")
        .body(event.to_string())
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    Ok(())
}

#[tokio::test]
async fn purge_refuses_live_teams_and_incomplete_teardowns_unless_forced() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let http = Client::new();
    let purge = |slug: &str, body: Option<Value>| {
        let request = http.post(format!("{api}/v1/teams/{slug}/purge"));
        match body {
            Some(body) => request.json(&body).send(),
            None => request.send(),
        }
    };
    let env = json!({"name": "prod", "clusters": ["eu-1", "us-1"]});
    let response = http.post(format!("{api}/v1/environments")).json(&env).send().await?;
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = http.post(format!("{api}/v1/teams")).json(&team("payments")).send().await?;
    assert_eq!(response.status(), StatusCode::CREATED);
    let records = format!("{api}/v1/teams/payments/namespaces");
    let record = |state: &'static str| {
        let http = http.clone();
        let records = records.clone();
        async move {
            let (_, _, list) = body(http.get(&records).send().await.ok()?).await.ok()?;
            list["items"].as_array()?.first().filter(|r| r["state"] == state).cloned()
        }
    };
    wait_for("payments-prod", WAIT, || record("active")).await?;

    // Unknown team: 404; live team: 409, force or not.
    problem(purge("nobody", None).await?, StatusCode::NOT_FOUND, "not-found").await?;
    for options in [None, Some(json!({"force": true}))] {
        let response = purge("payments", options).await?;
        let p = problem(response, StatusCode::CONFLICT, "conflict").await?;
        assert!(p["detail"].as_str().unwrap().contains("not deleted"), "{p}");
    }

    // Deleted, no cluster has reported: refused, naming the namespace and both clusters.
    let response = http.delete(format!("{api}/v1/teams/payments")).send().await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    wait_for("payments-prod deleting", WAIT, || record("deleting")).await?;
    let p = problem(purge("payments", None).await?, StatusCode::CONFLICT, "conflict").await?;
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("payments-prod (eu-1, us-1)") && detail.contains("force"), "{p}");

    // eu-1 deleted it: still refused, now waiting for us-1 only.
    report(&http, &api, "eu-1", "prod", "payments-prod", "deleted").await?;
    wait_for("eu-1's report", WAIT, || async {
        let record = record("deleting").await?;
        (record["clusters"]["eu-1"]["outcome"] == "deleted").then_some(())
    })
    .await?;
    let response = purge("payments", Some(json!({"force": false}))).await?;
    let p = problem(response, StatusCode::CONFLICT, "conflict").await?;
    assert!(p["detail"].as_str().unwrap().contains("payments-prod (us-1);"), "{p}");
    let response = http
        .post(format!("{api}/v1/teams/payments/purge"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"force": "yes"}"#)
        .send()
        .await?;
    problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid-body").await?;
    let response = http.get(format!("{api}/v1/teams/payments")).send().await?;
    let (status, _, tombstone) = body(response).await?;
    assert!(status == StatusCode::OK && tombstone["deleted_at"].is_string(), "{tombstone}");

    // Forced: purged, saying what was still awaited; the team and its records are gone.
    let (status, _, purged) = body(purge("payments", Some(json!({"force": true}))).await?).await?;
    assert_eq!(status, StatusCode::OK, "{purged}");
    assert_eq!(
        purged,
        json!({"purged": true, "forced": true, "waiting": {"payments-prod": ["us-1"]}})
    );
    let response = http.get(format!("{api}/v1/teams/payments")).send().await?;
    problem(response, StatusCode::NOT_FOUND, "not-found").await?;
    let (_, _, all) = body(http.get(format!("{api}/v1/namespaces")).send().await?).await?;
    assert_eq!(all["items"], json!([]));
    problem(purge("payments", None).await?, StatusCode::NOT_FOUND, "not-found").await?;
    engine.stop().await
}

#[tokio::test]
async fn an_event_written_before_a_crash_is_published_once_after_restart() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    // Only a write wakes the relay, and the fault aborts before that.
    world.set("MUSTER_OUTBOX__POLL_INTERVAL", "1h");
    world.set("MUSTER_FAULT", "after-record-write");
    let mut engine = world.start_engine().await?;
    let response =
        Client::new().post(format!("{}/v1/teams", engine.api)).json(&team("crash")).send().await;
    assert!(response.is_err(), "the engine aborted before answering: {response:?}");
    let status = engine.wait_exit(WAIT).await?;
    assert!(!status.success(), "aborted: {status}");
    assert!(engine.log().contains("aborting after the records write"), "{}", engine.log());
    assert_eq!(record_events(&mut world).await?, [], "nothing published before the crash");

    world.unset("MUSTER_FAULT");
    let mut engine = world.start_engine().await?;
    wait_record_events(&mut world, &[("muster.team.created", "crash")]).await?;
    let (status, _, stored) =
        body(Client::new().get(format!("{}/v1/teams/crash", engine.api)).send().await?).await?;
    assert_eq!((status, stored["resource_version"].as_u64()), (StatusCode::OK, Some(1)));
    // Restart once more: the outbox is empty, nothing is published twice.
    engine.stop().await?;
    let mut engine = world.start_engine().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = record_events(&mut world).await?;
    assert_eq!(events.len(), 1, "{events:?}");
    let id = &events[0].2;
    assert_eq!(events.iter().filter(|(_, _, i)| i == id).count(), 1);
    engine.stop().await
}

#[tokio::test]
async fn cli_manages_teams_and_environments_through_the_api() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let mut engine = world.start_engine().await?;
    world.set("MUSTER_API_URL", &engine.api);
    let out = world
        .cli(&[
            "envs",
            "create",
            "--name",
            "dev",
            "--quota",
            "requests.cpu=2",
            "--cluster",
            "dev-1",
        ])
        .await?;
    assert!(out.contains("created environment dev"), "{out}");
    world.cli(&["envs", "update", "dev", "--allow-namespace-deletion", "true"]).await?;
    let env: Value = world.cli_json(&["envs", "get", "dev", "--json"]).await?;
    assert_eq!(
        (env["allow_namespace_deletion"].as_bool(), env["resource_version"].as_u64()),
        (Some(true), Some(2))
    );
    assert_eq!(env["default_quota"]["requests.cpu"], "2");
    let file = world.dir.path().join("team.json");
    std::fs::write(&file, team("payments").to_string())?;
    world.cli(&["teams", "create", "--file", file.to_str().unwrap()]).await?;
    world
        .cli(&[
            "teams",
            "create",
            "--slug",
            "search",
            "--name",
            "Search",
            "--member",
            "alice,bob",
            "--maintainer",
            "carol",
        ])
        .await?;
    world
        .cli(&["teams", "update", "search", "--description", "Finds things", "--if-version", "1"])
        .await?;
    let teams: Vec<Value> = world.cli_json(&["teams", "list", "--json"]).await?;
    assert_eq!(teams.len(), 2);
    let search: Value = world.cli_json(&["teams", "get", "search", "--json"]).await?;
    assert_eq!(search["description"], "Finds things");
    assert_eq!(search["members"], json!(["alice", "bob"]));
    let err = world
        .cli(&["teams", "update", "search", "--name", "X", "--if-version", "1"])
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("412"), "{err:#}");
    let err = world.cli(&["teams", "create", "--slug", "Bad!", "--name", "B"]).await.unwrap_err();
    assert!(format!("{err:#}").contains("slug:"), "{err:#}");
    // Wait for sync_team to give search its namespace record before deleting it.
    let http = reqwest::Client::new();
    let path = format!("{}/v1/teams/search/namespaces", engine.api);
    wait_for("search's namespace record", WAIT, || async {
        let list: Value = http.get(&path).send().await.ok()?.json().await.ok()?;
        list["items"].as_array().filter(|items| !items.is_empty()).map(|_| ())
    })
    .await?;
    let out = world.cli(&["teams", "delete", "search"]).await?;
    assert!(out.contains("tombstone"), "{out}");
    // Its namespace record in dev (cluster dev-1) awaits the agent's report: no purge yet,
    // unless forced.
    let out = world.cli(&["teams", "list"]).await?;
    assert!(out.contains("deleted"), "{out}");
    let err = world.cli(&["teams", "purge", "search"]).await.unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("not purged") && err.contains("search-dev (dev-1)"), "{err}");
    let out = world.cli(&["teams", "purge", "search", "--force"]).await?;
    assert!(out.contains("purged (forced)") && out.contains("search-dev (dev-1)"), "{out}");
    let err = world.cli(&["teams", "get", "search"]).await.unwrap_err();
    assert!(format!("{err:#}").contains("404"), "{err:#}");
    world.cli(&["envs", "delete", "dev"]).await?;
    let envs: Vec<Value> = world.cli_json(&["envs", "list", "--json"]).await?;
    assert!(envs.is_empty());
    let types = wait_for("the team events on the stream", WAIT, || async {
        let events: Vec<Value> =
            world.cli_json(&["events", "list", "--type", "muster.team.", "--json"]).await.ok()?;
        let types: Vec<String> = events
            .iter()
            // Record changes only: sync_environment's fan-out adds muster.team.sync requests.
            .filter(|e| e["type"] != "muster.team.sync")
            .map(|e| {
                format!(
                    "{} {}",
                    e["type"].as_str().unwrap_or_default(),
                    e["subject"].as_str().unwrap_or_default()
                )
            })
            .collect();
        (types.len() == 4).then_some(types)
    })
    .await?;
    assert_eq!(
        types,
        [
            "muster.team.created payments",
            "muster.team.created search",
            "muster.team.updated search",
            "muster.team.deleted search"
        ]
    );
    engine.stop().await
}

#[tokio::test]
async fn a_postgres_backed_engine_serves_the_same_api() -> anyhow::Result<()> {
    let url = std::env::var("TEST_DATABASE_URL").map_err(|_| {
        anyhow::anyhow!(
            "TEST_DATABASE_URL is not set, e.g. postgres://postgres@127.0.0.1:5432/test"
        )
    })?;
    let schema = format!("muster_api_{}", ulid::Ulid::new().to_string().to_lowercase());
    let outcome = postgres_smoke(&url, &schema).await;
    let pool = sqlx::PgPool::connect(&url).await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&pool).await?;
    pool.close().await;
    outcome
}

async fn postgres_smoke(url: &str, schema: &str) -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.set("MUSTER_STORE", "postgres");
    world.set("MUSTER_DATABASE_URL", url);
    world.set("MUSTER_DATABASE_SCHEMA", schema);
    // Not migrated yet: the engine refuses to start and says what to run.
    let mut engine = world.spawn_engine()?;
    let status = engine.wait_exit(WAIT).await?;
    assert!(!status.success());
    assert!(engine.log().contains("run `engine migrate`"), "{}", engine.log());
    let out = world.cli(&["migrate"]).await?;
    assert!(out.contains("migrations applied"), "{out}");

    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let http = Client::new();
    let response =
        http.post(format!("{api}/v1/environments")).json(&json!({"name": "dev"})).send().await?;
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = http.post(format!("{api}/v1/teams")).json(&team("payments")).send().await?;
    let (status, headers, _) = body(response).await?;
    assert_eq!((status, &headers[header::ETAG]), (StatusCode::CREATED, &"\"1\"".parse()?));
    problem(
        http.post(format!("{api}/v1/teams")).json(&team("payments")).send().await?,
        StatusCode::CONFLICT,
        "already-exists",
    )
    .await?;
    let response = http
        .patch(format!("{api}/v1/teams/payments"))
        .header(header::CONTENT_TYPE, "application/merge-patch+json")
        .header(header::IF_MATCH, "\"1\"")
        .body(r#"{"description": "in PostgreSQL"}"#)
        .send()
        .await?;
    let (status, _, patched) = body(response).await?;
    assert_eq!((status, patched["description"].as_str()), (StatusCode::OK, Some("in PostgreSQL")));
    let response = http
        .put(format!("{api}/v1/teams/payments"))
        .header(header::IF_MATCH, "\"1\"")
        .json(&team("payments"))
        .send()
        .await?;
    problem(response, StatusCode::PRECONDITION_FAILED, "precondition-failed").await?;
    assert_eq!(
        http.delete(format!("{api}/v1/teams/payments")).send().await?.status(),
        StatusCode::ACCEPTED
    );
    wait_record_events(
        &mut world,
        &[
            ("muster.environment.created", "dev"),
            ("muster.team.created", "payments"),
            ("muster.team.updated", "payments"),
            ("muster.team.deleted", "payments"),
        ],
    )
    .await?;
    let (status, _, ready) = body(http.get(format!("{api}/readyz")).send().await?).await?;
    assert_eq!(status, StatusCode::OK, "{ready}");
    engine.stop().await
}

#[tokio::test]
async fn without_nats_the_api_is_not_ready_but_writes_reach_the_stream_later() -> anyhow::Result<()>
{
    let mut world = World::start().await?;
    world.set("MUSTER_OUTBOX__POLL_INTERVAL", "300ms");
    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let http = Client::new();
    let response =
        http.post(format!("{api}/v1/environments")).json(&json!({"name": "dev"})).send().await?;
    assert_eq!(response.status(), StatusCode::CREATED);
    wait_record_events(&mut world, &[("muster.environment.created", "dev")]).await?;

    world.nats.stop().await?;
    let not_ready = wait_for("/readyz to say 503", WAIT, || async {
        let (status, _, ready) =
            body(http.get(format!("{api}/readyz")).send().await.ok()?).await.ok()?;
        (status == StatusCode::SERVICE_UNAVAILABLE).then_some(ready)
    })
    .await?;
    assert_eq!(not_ready["status"], "fail");
    assert_eq!(not_ready["checks"][2]["name"], "store");
    assert_eq!(not_ready["checks"][2]["status"], "ok", "{not_ready}");
    // The records store does not need NATS: the change waits in the outbox.
    let response = http.post(format!("{api}/v1/teams")).json(&team("offline")).send().await?;
    assert_eq!(response.status(), StatusCode::CREATED);

    world.nats.restart().await?;
    wait_record_events(
        &mut world,
        &[("muster.environment.created", "dev"), ("muster.team.created", "offline")],
    )
    .await?;
    wait_for("/readyz to say 200 again", WAIT, || async {
        let response = http.get(format!("{api}/readyz")).send().await.ok()?;
        (response.status() == StatusCode::OK).then_some(())
    })
    .await?;
    engine.stop().await
}

#[tokio::test]
async fn the_api_serves_https_with_the_configured_certificate() -> anyhow::Result<()> {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tls");
    let mut world = World::start().await?;
    world.set("MUSTER_HTTP__TLS_CERT_FILE", &format!("{fixtures}/cert.pem"));
    world.set("MUSTER_HTTP__TLS_KEY_FILE", &format!("{fixtures}/key.pem"));
    let mut engine = world.spawn_engine()?;
    let api = engine.api.replace("http://", "https://");
    let cert = reqwest::Certificate::from_pem(&std::fs::read(format!("{fixtures}/ca.pem"))?)?;
    let https = Client::builder().add_root_certificate(cert).build()?;
    wait_for("the engine to serve HTTPS", WAIT, || {
        let request = https.get(format!("{api}/livez")).send();
        async move { request.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
    })
    .await
    .with_context(|| engine.log())?;
    let response =
        https.post(format!("{api}/v1/environments")).json(&json!({"name": "dev"})).send().await?;
    assert_eq!(response.status(), StatusCode::CREATED);
    // Plain HTTP is not answered as HTTP.
    let plain = Client::new().get(format!("{}/livez", engine.api)).send().await;
    assert!(plain.is_err() || !plain?.status().is_success());
    engine.stop().await
}

#[tokio::test]
async fn member_lists_are_never_emptied_by_omission_and_teams_need_a_maintainer()
-> anyhow::Result<()> {
    let mut world = World::start().await?;
    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let http = Client::new();
    let paths = |p: &Value| -> Vec<String> {
        p["errors"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap().into()).collect()
    };

    // Creating: the lists may be left out (nobody to remove), but a maintainer is needed.
    let lonely = json!({"slug": "lonely", "name": "Lonely", "members": ["alice"]});
    let response = http.post(format!("{api}/v1/teams")).json(&lonely).send().await?;
    let p = problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation").await?;
    assert_eq!(paths(&p), ["maintainers"], "{p}");
    assert!(p["errors"][0]["message"].as_str().unwrap().contains("min-maintainers"), "{p}");
    let response = http.get(format!("{api}/v1/teams/lonely")).send().await?;
    problem(response, StatusCode::NOT_FOUND, "not-found").await?;
    let no_members = json!({"slug": "payments", "name": "Payments", "maintainers": ["carol"]});
    let response = http.post(format!("{api}/v1/teams")).json(&no_members).send().await?;
    assert_eq!(response.status(), StatusCode::CREATED, "{}", response.text().await?);
    let response =
        http.put(format!("{api}/v1/teams/payments")).json(&team("payments")).send().await?;
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await?);

    // Replacing without the lists would remove everyone: 422 naming each, nothing written.
    let put = |body: Value| http.put(format!("{api}/v1/teams/payments")).json(&body).send();
    let response = put(json!({"slug": "payments", "name": "P", "maintainers": ["carol"]})).await?;
    let p = problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation").await?;
    assert_eq!(paths(&p), ["members"], "{p}");
    assert_eq!(p["errors"][0]["message"], "required on replace; send [] to empty the team");
    let p = problem(
        put(json!({"slug": "payments", "name": "P"})).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await?;
    assert_eq!(paths(&p), ["members", "maintainers"], "{p}");
    // A replacement with too few maintainers.
    let p = problem(
        put(json!({"slug": "payments", "name": "P", "members": ["alice"], "maintainers": []}))
            .await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await?;
    assert_eq!(paths(&p), ["maintainers"], "{p}");

    // A merge patch setting a list to null: 422; fewer maintainers than the minimum: 422.
    let patch = |body: &'static str| {
        http.patch(format!("{api}/v1/teams/payments"))
            .header(header::CONTENT_TYPE, "application/merge-patch+json")
            .body(body)
            .send()
    };
    let p = problem(
        patch(r#"{"members": null}"#).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await?;
    assert_eq!(paths(&p), ["members"], "{p}");
    assert_eq!(
        p["errors"][0]["message"],
        "null would remove every member; send [] to empty the team"
    );
    let p = problem(
        patch(r#"{"maintainers": null, "description": "x"}"#).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await?;
    assert_eq!(paths(&p), ["maintainers"], "{p}");
    let p = problem(
        patch(r#"{"maintainers": []}"#).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await?;
    assert_eq!(paths(&p), ["maintainers"], "{p}");
    let (status, _, stored) =
        body(http.get(format!("{api}/v1/teams/payments")).send().await?).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&stored["members"], &stored["maintainers"], stored["resource_version"].as_u64()),
        (&json!(["alice", "bob"]), &json!(["carol"]), Some(2)),
        "nothing was written"
    );

    // Emptying is explicit: `[]` (the sync then needs the mass-removal override).
    let (status, _, emptied) = body(patch(r#"{"members": []}"#).await?).await?;
    assert_eq!((status, &emptied["members"]), (StatusCode::OK, &json!([])), "{emptied}");
    engine.stop().await
}

#[tokio::test]
async fn a_sync_request_carries_the_mass_removal_override() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let http = Client::new();
    let response = http.post(format!("{api}/v1/teams")).json(&team("payments")).send().await?;
    assert_eq!(response.status(), StatusCode::CREATED);
    let sync = format!("{api}/v1/teams/payments/sync");

    let response = http.post(&sync).json(&json!({"allow_mass_removal": true})).send().await?;
    let (status, _, overridden) = body(response).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{overridden}");
    let (status, _, plain) = body(http.post(&sync).send().await?).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{plain}");
    let (status, _, null) = body(http.post(&sync).json(&Value::Null).send().await?).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{null}");
    let response = http.post(&sync).json(&json!({"allow_mass_removal": true, "force": 1})).send();
    let p = problem(response.await?, StatusCode::UNPROCESSABLE_ENTITY, "invalid-body").await?;
    assert_eq!(p["errors"][0]["path"], "force", "{p}");
    let response = http.post(&sync).json(&json!({"allow_mass_removal": "yes"})).send().await?;
    problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid-body").await?;

    // The events on the stream, read as sync_team reads them.
    let events = world.events_on("muster.events.muster.team.sync.payments").await?;
    let requests: Vec<(String, bool)> = events
        .iter()
        .map(|(event, _)| {
            let request = workflows::sync_team::SyncRequest::from_event(event).unwrap();
            (workflows::AttributesReader::id(event).to_owned(), request.allow_mass_removal)
        })
        .collect();
    let id = |answer: &Value| answer["id"].as_str().unwrap().to_owned();
    assert_eq!(requests, [(id(&overridden), true), (id(&plain), false), (id(&null), false)]);
    engine.stop().await
}

#[tokio::test]
async fn namespace_names_that_would_clash_or_be_too_long_are_refused() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let http = Client::new();
    let create = |what: &str, body: Value| http.post(format!("{api}/v1/{what}")).json(&body).send();
    let new_team = |slug: &str| json!({"slug": slug, "name": "A", "maintainers": ["carol"]});
    let keys = |list: &Value, key: &str| -> Vec<String> {
        list["items"].as_array().unwrap().iter().map(|i| i[key].as_str().unwrap().into()).collect()
    };
    for env in ["c", "b-c", "z"] {
        let response = create("environments", json!({"name": env})).await?;
        assert_eq!(response.status(), StatusCode::CREATED, "{}", response.text().await?);
    }
    for slug in ["a-b", "x", "x-y"] {
        let response = create("teams", new_team(slug)).await?;
        assert_eq!(response.status(), StatusCode::CREATED, "{}", response.text().await?);
    }

    // A team created after the environments: `a` in `b-c` would be `a-b`'s `a-b-c` in `c`.
    let p =
        problem(create("teams", new_team("a")).await?, StatusCode::CONFLICT, "conflict").await?;
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("\"a-b-c\""), "{detail}");
    assert!(detail.contains("team \"a-b\" in environment \"c\""), "{detail}");
    problem(
        http.get(format!("{api}/v1/teams/a")).send().await?,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await?;

    // An environment created after the teams: `y-z` would give `x` the `x-y-z` of `x-y` in `z`.
    let p = problem(
        create("environments", json!({"name": "y-z"})).await?,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await?;
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("\"x-y-z\""), "{detail}");
    assert!(detail.contains("team \"x-y\" in environment \"z\""), "{detail}");
    let response = http.get(format!("{api}/v1/environments/y-z")).send().await?;
    problem(response, StatusCode::NOT_FOUND, "not-found").await?;

    // A team whose only clash is with itself is just a duplicate slug.
    problem(create("teams", new_team("a-b")).await?, StatusCode::CONFLICT, "already-exists")
        .await?;

    // Over-long: `<60 t>-b-c` is 64 characters (`-c` and `-z` fit): 422 on the slug.
    let long = "t".repeat(60);
    let response = create("teams", new_team(&long)).await?;
    let p = problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation").await?;
    assert_eq!(p["errors"].as_array().map(Vec::len), Some(1), "{p}");
    assert_eq!(p["errors"][0]["path"], "slug", "{p}");
    let message = p["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "the namespace \"{long}-b-c\" would be 64 characters, at most 63"
        )),
        "{message}"
    );
    let response = http.get(format!("{api}/v1/teams/{long}")).send().await?;
    problem(response, StatusCode::NOT_FOUND, "not-found").await?;
    // An environment name of 60 characters fits no team (`x-` makes 62, `a-b-` 64): 422 on
    // the name, one error per team whose namespace would be too long.
    let long_env = "e".repeat(60);
    let response = create("environments", json!({"name": long_env})).await?;
    let p = problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation").await?;
    let errors = p["errors"].as_array().unwrap();
    let teams: Vec<&str> = errors
        .iter()
        .map(|e| {
            assert_eq!(e["path"], "name", "{p}");
            e["message"].as_str().unwrap()
        })
        .collect();
    assert_eq!(teams.len(), 2, "{p}");
    assert!(teams[0].contains(&format!("\"a-b-{long_env}\" would be 64 characters")), "{p}");
    assert!(teams[1].contains(&format!("\"x-y-{long_env}\" would be 64 characters")), "{p}");

    // Nothing was written: the lists are as they were, and only the six creations announced.
    let (_, _, teams) = body(http.get(format!("{api}/v1/teams")).send().await?).await?;
    assert_eq!(keys(&teams, "slug"), ["a-b", "x", "x-y"]);
    let (_, _, envs) = body(http.get(format!("{api}/v1/environments")).send().await?).await?;
    assert_eq!(keys(&envs, "name"), ["b-c", "c", "z"]);
    wait_record_events(
        &mut world,
        &[
            ("muster.environment.created", "c"),
            ("muster.environment.created", "b-c"),
            ("muster.environment.created", "z"),
            ("muster.team.created", "a-b"),
            ("muster.team.created", "x"),
            ("muster.team.created", "x-y"),
        ],
    )
    .await?;
    engine.stop().await
}
