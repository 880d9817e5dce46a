//! The cluster agent end to end: the engine (a child process) with its API, a real
//! nats-server, agents in this process with the real kube client over HTTP against the fake
//! Kubernetes API ([`e2e::fake_kube`]), and (whole loop) the fake GitHub.

use std::time::Duration;

use e2e::agents::{Agent, AgentSpec, namespace_records, wait_report};
use e2e::fake_github::FakeGitHub;
use e2e::fake_kube::{FakeKube, Kind};
use e2e::harness::{EngineProcess, WAIT, World, free_port, wait_for};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const HOUR: Duration = Duration::from_secs(3600);

struct Setup {
    world: World,
    engine: EngineProcess,
    http: Client,
}

async fn setup() -> anyhow::Result<Setup> {
    let mut world = World::start().await?;
    let engine = world.start_engine().await?;
    Ok(Setup { world, engine, http: Client::new() })
}

impl Setup {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.engine.api);
        let response = self.http.post(&url).json(&body).send().await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "POST {path}: {status} {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn patch_team(&self, slug: &str, patch: Value) -> anyhow::Result<()> {
        let url = format!("{}/v1/teams/{slug}", self.engine.api);
        let response = self
            .http
            .patch(&url)
            .header("content-type", "application/merge-patch+json")
            .json(&patch)
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "PATCH: {}", response.text().await?);
        Ok(())
    }

    async fn delete(&self, path: &str) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.engine.api);
        let response = self.http.delete(&url).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "DELETE {path}: {}",
            response.text().await?
        );
        Ok(())
    }

    /// An agent with group prefix `oidc:`, once it is ready.
    async fn agent(
        &self,
        kube: &FakeKube,
        environment: &str,
        cluster: &str,
    ) -> anyhow::Result<Agent> {
        let url = self.world.nats.url();
        let agent =
            start_agent(&url, &self.engine.api, kube, environment, cluster, "oidc:").await?;
        agent.ready().await?;
        Ok(agent)
    }
}

/// Starts an agent whose full reconcile runs at start and then hourly, so that only the event
/// path is quick.
async fn start_agent(
    nats_url: &str,
    api_url: &str,
    kube: &FakeKube,
    environment: &str,
    cluster: &str,
    group_prefix: &str,
) -> anyhow::Result<Agent> {
    let spec = AgentSpec { nats_url, api_url, environment, cluster, interval: HOUR, group_prefix };
    Agent::start(spec, kube.client()).await
}

fn dev_environment(clusters: &[&str]) -> Value {
    json!({
        "name": "dev",
        "clusters": clusters,
        "default_quota": {"requests.cpu": "4", "limits.memory": "8Gi"},
        "default_limits": {"memory": "512Mi"},
        "quota_profiles": {"large": {"quota": {"requests.cpu": "16"}}},
        "allow_namespace_deletion": true,
        "network_policy": true,
    })
}

fn team(slug: &str) -> Value {
    json!({
        "slug": slug, "name": slug, "members": ["bob"], "maintainers": ["alice"],
        "labels": {"cost-center": "42"},
    })
}

async fn wait_object(
    kube: &FakeKube,
    kind: Kind,
    ns: Option<&str>,
    name: &str,
) -> anyhow::Result<Value> {
    wait_for(&format!("{kind:?} {ns:?}/{name}"), WAIT, || async { kube.get(kind, ns, name) }).await
}

#[tokio::test]
async fn a_team_becomes_a_namespace_with_every_object_and_a_converged_cluster_costs_nothing()
-> anyhow::Result<()> {
    let s = setup().await?;
    let kube = FakeKube::start().await?;
    s.post("/v1/environments", dev_environment(&["dev-1"])).await?;
    let agent = s.agent(&kube, "dev", "dev-1").await?;

    // The start reconcile is done; the team arrives through the event path (interval: 1 h).
    s.post("/v1/teams", team("payments")).await?;
    let ns = wait_object(&kube, Kind::Namespace, None, "payments-dev").await?;
    let labels = &ns["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "muster");
    assert_eq!(labels["muster.dev/team"], "payments");
    assert_eq!(labels["muster.dev/environment"], "dev");
    assert_eq!(labels["cost-center"], "42", "the team's labels reach the namespace");
    let managers: Vec<&str> = ns["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, ["muster-agent"]);
    let quota =
        wait_object(&kube, Kind::ResourceQuota, Some("payments-dev"), "muster-quota").await?;
    assert_eq!(quota["spec"]["hard"], json!({"requests.cpu": "4", "limits.memory": "8Gi"}));
    let limits =
        wait_object(&kube, Kind::LimitRange, Some("payments-dev"), "muster-limits").await?;
    assert_eq!(limits["spec"]["limits"][0]["default"]["memory"], "512Mi");
    let edit = wait_object(&kube, Kind::RoleBinding, Some("payments-dev"), "muster-edit").await?;
    assert_eq!(edit["roleRef"]["name"], "edit");
    assert_eq!(edit["subjects"][0]["name"], "oidc:payments", "the cluster's group prefix");
    let admin = wait_object(&kube, Kind::RoleBinding, Some("payments-dev"), "muster-admin").await?;
    assert_eq!(admin["subjects"][0]["name"], "oidc:payments-maintainers");
    let policy =
        wait_object(&kube, Kind::NetworkPolicy, Some("payments-dev"), "muster-same-namespace")
            .await?;
    assert_eq!(policy["spec"]["ingress"][0]["from"][0]["podSelector"], json!({}));

    let record = wait_report(&s.engine.api, "payments-dev", "dev-1", "applied").await?;
    assert_eq!(record["never_reported"], json!([]));
    assert_eq!(record["clusters"]["dev-1"]["observed_version"], record["resource_version"]);

    // Steady state: full reconciles of the converged cluster send no write and no report.
    kube.reset_counters();
    for _ in 0..3 {
        let summary = agent.reconciler.reconcile_all().await.map_err(anyhow::Error::msg)?;
        assert_eq!((summary.writes, summary.reports), (0, 0), "{summary:?}");
        assert_eq!(summary.outcomes.get("applied"), Some(&1));
    }
    assert_eq!(kube.mutating_requests(), 0);

    // A profile change updates the quota in place (same object, new values).
    let uid = quota["metadata"]["uid"].clone();
    s.patch_team("payments", json!({"quota_profile": "large"})).await?;
    let bigger = wait_for("the quota to follow the profile", WAIT, || async {
        kube.get(Kind::ResourceQuota, Some("payments-dev"), "muster-quota")
            .filter(|q| q["spec"]["hard"]["requests.cpu"] == "16")
    })
    .await?;
    assert_eq!(bigger["metadata"]["uid"], uid, "updated in place, not re-created");
    assert_eq!(bigger["spec"]["hard"]["limits.memory"], "8Gi");
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn foreign_metadata_survives_and_a_field_conflict_is_reported_not_forced()
-> anyhow::Result<()> {
    let s = setup().await?;
    let kube = FakeKube::start().await?;
    s.post("/v1/environments", dev_environment(&["dev-1"])).await?;
    s.post("/v1/teams", team("payments")).await?;
    let agent = s.agent(&kube, "dev", "dev-1").await?;
    wait_report(&s.engine.api, "payments-dev", "dev-1", "applied").await?;

    // Argo CD labels the namespace; the team drops its own label: Argo's stays, Muster's goes.
    kube.apply_as(
        "argocd",
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "payments-dev", "labels": {"argocd.argoproj.io/instance": "payments"}}}),
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    s.patch_team("payments", json!({"labels": {"cost-center": null}})).await?;
    let ns = wait_for("cost-center to go", WAIT, || async {
        kube.get(Kind::Namespace, None, "payments-dev")
            .filter(|ns| ns["metadata"]["labels"].get("cost-center").is_none())
    })
    .await?;
    assert_eq!(ns["metadata"]["labels"]["argocd.argoproj.io/instance"], "payments");
    assert_eq!(ns["metadata"]["labels"]["muster.dev/team"], "payments");

    // Someone edits the quota's cpu (`kubectl edit`: an update that takes the field): the
    // agent's next apply conflicts, which is reported, not forced.
    let quotas: Api<DynamicObject> = Api::namespaced_with(
        kube.client(),
        "payments-dev",
        &ApiResource::erase::<k8s_openapi::api::core::v1::ResourceQuota>(&()),
    );
    quotas
        .patch(
            "muster-quota",
            &PatchParams { field_manager: Some("kubectl-edit".into()), ..PatchParams::default() },
            &Patch::Merge(json!({"spec": {"hard": {"requests.cpu": "64"}}})),
        )
        .await?;
    let summary = agent.reconciler.reconcile_all().await.map_err(anyhow::Error::msg)?;
    assert_eq!(summary.outcomes.get("conflict"), Some(&1), "{summary:?}");
    let record = wait_report(&s.engine.api, "payments-dev", "dev-1", "conflict").await?;
    let message = record["clusters"]["dev-1"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("kubectl-edit"), "{message}");
    let quota = kube.get(Kind::ResourceQuota, Some("payments-dev"), "muster-quota").unwrap();
    assert_eq!(quota["spec"]["hard"]["requests.cpu"], "64", "not forced");
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn an_unmanaged_namespace_is_a_conflict_and_an_orphan_is_reported_never_deleted()
-> anyhow::Result<()> {
    let s = setup().await?;
    let kube = FakeKube::start().await?;
    kube.create_namespace("payments-dev", &[("owner", "someone")])
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    kube.apply_as(
        "muster-agent",
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "ghost-dev", "labels": {
                   "app.kubernetes.io/managed-by": "muster",
                   "muster.dev/team": "ghost", "muster.dev/environment": "dev"}}}),
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    s.post("/v1/environments", dev_environment(&["dev-1"])).await?;
    s.post("/v1/teams", team("payments")).await?;
    wait_for("the namespace record", WAIT, || async {
        let records = namespace_records(&s.engine.api, "environment=dev").await.ok()?;
        (!records.is_empty()).then_some(())
    })
    .await?;
    let agent = s.agent(&kube, "dev", "dev-1").await?;
    let record = wait_report(&s.engine.api, "payments-dev", "dev-1", "conflict").await?;
    assert!(record["clusters"]["dev-1"]["message"].as_str().unwrap().contains("without the label"));
    let ns = kube.get(Kind::Namespace, None, "payments-dev").unwrap();
    assert!(ns["metadata"]["labels"].get("app.kubernetes.io/managed-by").is_none(), "untouched");
    assert!(kube.get(Kind::ResourceQuota, Some("payments-dev"), "muster-quota").is_none());

    let summary = agent.reconciler.reconcile_all().await.map_err(anyhow::Error::msg)?;
    assert_eq!(summary.outcomes.get("orphaned"), Some(&1), "{summary:?}");
    assert!(kube.get(Kind::Namespace, None, "ghost-dev").is_some(), "an orphan is never deleted");
    // Its report is on the stream (the engine has no record to store it on).
    let mut world = s.world;
    let js = world.jetstream().await?;
    let stream = js.get_stream("MUSTER_EVENTS").await?;
    let last =
        stream.get_last_raw_message_by_subject("muster.events.muster.cluster.reported.dev").await;
    assert!(last.is_ok(), "a report was published");
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn an_agent_that_was_down_is_repaired_by_its_start_reconcile_and_waits_for_the_api()
-> anyhow::Result<()> {
    let mut world = World::start().await?;
    let kube = FakeKube::start().await?;
    // The API is not there yet: the agent starts, is not ready, and says why.
    let addr = format!("127.0.0.1:{}", free_port()?);
    let api = format!("http://{addr}");
    let agent = start_agent(&world.nats.url(), &api, &kube, "dev", "dev-1", "").await?;
    let (status, body) = wait_for("a failed readiness", WAIT, || async {
        agent.readyz().await.ok().filter(|(_, b)| {
            b["checks"][2]["detail"].as_str().is_some_and(|d| d.contains("cannot reach"))
        })
    })
    .await?;
    assert_eq!(status, 503, "{body}");

    // The engine comes up and a team is created while the agent cannot act on events yet.
    let data_dir = world.data_dir();
    let engine = world.spawn_engine_at(&data_dir, &addr)?;
    let http = Client::new();
    wait_for("the engine API", WAIT, || async {
        http.get(format!("{api}/livez")).send().await.ok().filter(|r| r.status().is_success())
    })
    .await?;
    for (path, body) in
        [("/v1/environments", dev_environment(&["dev-1"])), ("/v1/teams", team("payments"))]
    {
        let response = http.post(format!("{}{path}", engine.api)).json(&body).send().await?;
        anyhow::ensure!(response.status().is_success(), "{}", response.text().await?);
    }
    agent.ready().await?;
    wait_object(&kube, Kind::Namespace, None, "payments-dev").await?;
    agent.stop().await?;

    // Agent down: the team changes. Back up, its start reconcile repairs the cluster.
    let response = http
        .patch(format!("{api}/v1/teams/payments"))
        .header("content-type", "application/merge-patch+json")
        .json(&json!({"quota_profile": "large"}))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    wait_for("the record to follow", WAIT, || async {
        let records = namespace_records(&api, "environment=dev").await.ok()?;
        (records.first()?["quota"]["requests.cpu"] == "16").then_some(())
    })
    .await?;
    assert_eq!(
        kube.get(Kind::ResourceQuota, Some("payments-dev"), "muster-quota").unwrap()["spec"]["hard"]
            ["requests.cpu"],
        "4"
    );
    let agent = start_agent(&world.nats.url(), &api, &kube, "dev", "dev-1", "").await?;
    agent.ready().await?;
    let quota = kube.get(Kind::ResourceQuota, Some("payments-dev"), "muster-quota").unwrap();
    assert_eq!(quota["spec"]["hard"]["requests.cpu"], "16");
    agent.stop().await?;
    Ok(())
}

/// The whole loop: fake GitHub, engine, two environments with an agent each against its own
/// cluster. Deleting the team deletes dev's namespace, keeps prod's, and purges the team.
#[tokio::test]
async fn two_clusters_in_two_environments_tear_down_and_purge() -> anyhow::Result<()> {
    let fake = FakeGitHub::start("acme").await?;
    fake.add_org_members(["alice", "bob"]);
    let mut world = World::start().await?;
    world.set("MUSTER_GITHUB_TOKEN", "test-token");
    world.use_config(&format!(
        "[github]\napi-url = \"{}\"\norg = \"acme\"\nwrite-interval = \"10ms\"\n",
        fake.url()
    ))?;
    let engine = world.start_engine().await?;
    let s = Setup { world, engine, http: Client::new() };
    let (dev_kube, prod_kube) = (FakeKube::start().await?, FakeKube::start().await?);
    s.post("/v1/environments", dev_environment(&["dev-1"])).await?;
    s.post(
        "/v1/environments",
        json!({"name": "prod", "clusters": ["prod-1"], "default_quota": {"requests.cpu": "32"}}),
    )
    .await?;
    let dev = s.agent(&dev_kube, "dev", "dev-1").await?;
    let prod = s.agent(&prod_kube, "prod", "prod-1").await?;
    s.post("/v1/teams", team("payments")).await?;
    wait_for("the GitHub team", WAIT, || async { fake.team("payments") }).await?;
    wait_report(&s.engine.api, "payments-dev", "dev-1", "applied").await?;
    wait_report(&s.engine.api, "payments-prod", "prod-1", "applied").await?;
    assert!(dev_kube.get(Kind::Namespace, None, "payments-prod").is_none(), "each its own env");
    assert!(
        prod_kube
            .get(Kind::NetworkPolicy, Some("payments-prod"), "muster-same-namespace")
            .is_none()
    );

    s.delete("/v1/teams/payments").await?;
    wait_for("dev's namespace to go", WAIT, || async {
        dev_kube.get(Kind::Namespace, None, "payments-dev").is_none().then_some(())
    })
    .await?;
    wait_for("the team to be purged", WAIT, || async {
        let r = s.http.get(format!("{}/v1/teams/payments", s.engine.api)).send().await.ok()?;
        (r.status() == StatusCode::NOT_FOUND).then_some(())
    })
    .await?;
    let kept = prod_kube.get(Kind::Namespace, None, "payments-prod").expect("prod keeps it");
    assert!(kept["metadata"]["deletionTimestamp"].is_null());
    // prod's agent said so: its last report is `retained`, with the reason.
    let mut world = s.world;
    let stream = world.jetstream().await?.get_stream("MUSTER_EVENTS").await?;
    let last = stream
        .get_last_raw_message_by_subject("muster.events.muster.cluster.reported.prod")
        .await?;
    let report: Value = serde_json::from_slice(&last.payload)?;
    assert_eq!(report["outcome"], "retained", "{report}");
    assert!(report["message"].as_str().unwrap_or_default().contains("does not allow"));
    dev.stop().await?;
    prod.stop().await?;
    Ok(())
}

/// `engine agent` as users run it: a process that finds its cluster through `KUBECONFIG`,
/// says which flag is missing, and stops cleanly on SIGTERM.
#[tokio::test]
async fn the_agent_command_loads_its_kubeconfig_and_stops_on_sigterm() -> anyhow::Result<()> {
    let s = setup().await?;
    let kube = FakeKube::start().await?;
    let kubeconfig = s.world.dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig)?;
    let kubeconfig = kubeconfig.display().to_string();
    let env = [("KUBECONFIG", kubeconfig.as_str())];

    let missing = s.world.cli(&["agent", "--cluster", "dev-1", "--api", &s.engine.api]).await;
    let message = format!("{:#}", missing.unwrap_err());
    assert!(message.contains("agent.environment is required"), "{message}");

    s.post("/v1/environments", dev_environment(&["dev-1"])).await?;
    s.post("/v1/teams", team("payments")).await?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let log = s.world.dir.path().join("agent.log");
    let mut child = s.world.spawn_command(
        &[
            "agent",
            "--environment",
            "dev",
            "--cluster",
            "dev-1",
            "--api",
            &s.engine.api,
            "--listen",
            &listen,
        ],
        &env,
        &log,
    )?;
    let http = Client::new();
    let ready = wait_for("the agent process to be ready", WAIT, || async {
        let r = http.get(format!("http://{listen}/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    ready.map_err(|e| anyhow::anyhow!("{e}\nagent log:\n{}", log_text()))?;
    wait_report(&s.engine.api, "payments-dev", "dev-1", "applied").await?;
    assert!(kube.get(Kind::Namespace, None, "payments-dev").is_some());
    let metrics = http.get(format!("http://{listen}/metrics")).send().await?.text().await?;
    assert!(
        metrics.contains(r#"muster_agent_actions_total{kind="namespaces",outcome="created"} 1"#),
        "{metrics}"
    );

    let pid = nix::unistd::Pid::from_raw(child.id().expect("running") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    let status = tokio::time::timeout(WAIT, child.wait()).await??;
    assert!(status.success(), "exit {status}:\n{}", log_text());
    assert!(log_text().contains("agent stopped"));
    Ok(())
}

/// Deleting many teams (or an environment) at once cannot empty a cluster: past the guard's
/// hourly limit a deletion is held, reported `failed` with the reason, and the team waits.
#[tokio::test]
async fn the_deletion_guard_holds_namespace_deletions_past_its_limit() -> anyhow::Result<()> {
    let s = setup().await?;
    let kube = FakeKube::start().await?;
    s.post("/v1/environments", dev_environment(&["dev-1"])).await?;
    let url = s.world.nats.url();
    let spec = AgentSpec {
        nats_url: &url,
        api_url: &s.engine.api,
        environment: "dev",
        cluster: "dev-1",
        interval: HOUR,
        group_prefix: "",
    };
    let mut config = Agent::config(&spec);
    config.agent.max_namespace_deletions_per_hour = 1;
    let agent = Agent::start_with(config, kube.client()).await?;
    agent.ready().await?;
    for slug in ["alpha", "beta"] {
        s.post("/v1/teams", team(slug)).await?;
        wait_report(&s.engine.api, &format!("{slug}-dev"), "dev-1", "applied").await?;
    }
    s.delete("/v1/teams/alpha").await?;
    wait_for("alpha's namespace to go", WAIT, || async {
        kube.get(Kind::Namespace, None, "alpha-dev").is_none().then_some(())
    })
    .await?;
    s.delete("/v1/teams/beta").await?;
    let record = wait_report(&s.engine.api, "beta-dev", "dev-1", "failed").await?;
    let message = record["clusters"]["dev-1"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("deletion guard"), "{message}");
    let kept = kube.get(Kind::Namespace, None, "beta-dev").expect("held, not deleted");
    assert!(kept["metadata"]["deletionTimestamp"].is_null());
    let beta = s.http.get(format!("{}/v1/teams/beta", s.engine.api)).send().await?;
    assert_eq!(beta.status(), StatusCode::OK, "the teardown waits");
    agent.stop().await?;
    Ok(())
}
