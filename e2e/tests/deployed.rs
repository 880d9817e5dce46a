//! A release deployed end to end: create an environment and a team through the API, see the
//! namespace with its quota and role bindings in the cluster, delete the team, see the
//! namespace go and the team purged.
//!
//! Against a deployment (what CircleCI's `e2e-kind` job runs, `scripts/e2e-kind`):
//! `MUSTER_E2E_API_URL` (the engine's API), `MUSTER_E2E_KUBECONFIG` (the cluster),
//! `MUSTER_E2E_ENVIRONMENT` (default `dev`) and `MUSTER_E2E_CLUSTER` (default `kind`), with the
//! agent running in the cluster, and `MUSTER_E2E_TOKEN`, an admin's bearer token, sent on every
//! API request when set (a deployed engine authenticates its API). Without them the same test runs
//! here: a nats-server, the engine (on loopback, without credentials), the fake Kubernetes API and
//! an agent in this process.

use std::time::Duration;

use e2e::agents::{Agent, AgentSpec, wait_report_with};
use e2e::fake_kube::FakeKube;
use e2e::harness::{EngineProcess, WAIT, World, wait_for};
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Client, StatusCode};
use serde_json::json;

/// What the test runs against; the local parts are kept alive until it ends.
struct Target {
    api: String,
    /// Sends the API's bearer token, if there is one, on every request.
    http: Client,
    kube: kube::Client,
    environment: String,
    cluster: String,
    _local: Option<(World, EngineProcess, FakeKube, Agent)>,
}

async fn target() -> anyhow::Result<Target> {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    if let (Ok(api), Ok(path)) =
        (std::env::var("MUSTER_E2E_API_URL"), std::env::var("MUSTER_E2E_KUBECONFIG"))
    {
        let kubeconfig = Kubeconfig::read_from(path)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        return Ok(Target {
            api,
            http: api_client(std::env::var("MUSTER_E2E_TOKEN").ok())?,
            kube: kube::Client::try_from(config)?,
            environment: var("MUSTER_E2E_ENVIRONMENT", "dev"),
            cluster: var("MUSTER_E2E_CLUSTER", "kind"),
            _local: None,
        });
    }
    let mut world = World::start().await?;
    let engine = world.start_engine().await?;
    let fake = FakeKube::start().await?;
    let agent = Agent::start(
        AgentSpec {
            nats_url: &world.nats.url(),
            api_url: &engine.api,
            environment: "dev",
            cluster: "kind",
            interval: Duration::from_secs(3600),
            group_prefix: "",
        },
        fake.client(),
    )
    .await?;
    agent.ready().await?;
    Ok(Target {
        api: engine.api.clone(),
        http: api_client(None)?,
        kube: fake.client(),
        environment: "dev".into(),
        cluster: "kind".into(),
        _local: Some((world, engine, fake, agent)),
    })
}

/// A client of the API that sends `Authorization: Bearer <token>` on every request when a token
/// is given (never printed: the header value is marked sensitive).
fn api_client(token: Option<String>) -> anyhow::Result<Client> {
    let mut headers = HeaderMap::new();
    if let Some(token) = token.filter(|t| !t.trim().is_empty()) {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(Client::builder().default_headers(headers).build()?)
}

#[tokio::test]
async fn a_team_gets_its_namespace_and_its_deletion_removes_it() -> anyhow::Result<()> {
    let t = target().await?;
    let http = &t.http;
    let (env, cluster) = (t.environment.as_str(), t.cluster.as_str());
    // A fresh slug per run, so the test can run again against the same deployment.
    let slug = format!("e2e-{}", &ulid::Ulid::new().to_string().to_lowercase()[20..]);
    let environment = json!({
        "name": env, "clusters": [cluster], "allow_namespace_deletion": true,
        "default_quota": {"requests.cpu": "2"},
    });
    let response =
        http.post(format!("{}/v1/environments", t.api)).json(&environment).send().await?;
    let status = response.status();
    anyhow::ensure!(
        status.is_success() || status == StatusCode::CONFLICT,
        "creating {env}: {}",
        response.text().await?
    );
    let team = json!({"slug": slug, "name": slug, "members": ["bob"], "maintainers": ["alice"]});
    let response = http.post(format!("{}/v1/teams", t.api)).json(&team).send().await?;
    anyhow::ensure!(response.status().is_success(), "{}", response.text().await?);

    let name = format!("{slug}-{env}");
    let namespaces: Api<Namespace> = Api::all(t.kube.clone());
    let ns = wait_for(&format!("namespace {name}"), WAIT, || async {
        namespaces.get_opt(&name).await.ok().flatten()
    })
    .await?;
    let labels = ns.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("muster"));
    assert_eq!(labels.get("muster.dev/team"), Some(&slug));
    let quotas: Api<ResourceQuota> = Api::namespaced(t.kube.clone(), &name);
    let quota = wait_for("the quota", WAIT, || async {
        quotas.get_opt("muster-quota").await.ok().flatten()
    })
    .await?;
    let hard = quota.spec.and_then(|s| s.hard).unwrap_or_default();
    assert_eq!(hard.get("requests.cpu").map(|q| q.0.as_str()), Some("2"));
    let bindings: Api<RoleBinding> = Api::namespaced(t.kube.clone(), &name);
    let edit = wait_for("the members' binding", WAIT, || async {
        bindings.get_opt("muster-edit").await.ok().flatten()
    })
    .await?;
    assert_eq!(edit.role_ref.name, "edit");
    wait_report_with(http, &t.api, &name, cluster, "applied").await?;

    let response = http.delete(format!("{}/v1/teams/{slug}", t.api)).send().await?;
    anyhow::ensure!(response.status().is_success(), "{}", response.text().await?);
    wait_for(&format!("namespace {name} to terminate"), WAIT, || async {
        match namespaces.get_opt(&name).await.ok()? {
            None => Some(()),
            Some(ns) => ns.metadata.deletion_timestamp.map(|_| ()),
        }
    })
    .await?;
    wait_for("the team to be purged", WAIT, || async {
        let r = http.get(format!("{}/v1/teams/{slug}", t.api)).send().await.ok()?;
        (r.status() == StatusCode::NOT_FOUND).then_some(())
    })
    .await?;
    Ok(())
}
