//! `bench-agent`: one agent converging N namespaces from empty against the fake Kubernetes API,
//! side by side with its baseline (the same objects applied straight with kube, at the same
//! concurrency, with no observation, planning or reports), and the requests of a steady-state
//! reconcile.
//!
//! `cargo run --release -p e2e --bin bench-agent -- --namespaces 1000 [--json]`
//!
//! The records come from a stub of `GET /v1/namespaces` (with ETag), so the figures are the
//! agent's and the API server's, not the engine's. Figures and method: docs/benchmarks.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use clap::Parser;
use connectors::cluster::KubeCluster;
use e2e::fake_kube::FakeKube;
use engine::agent::{AgentOptions, Reconciler};
use engine::bus::Names;
use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use serde_json::json;
use workflows::cluster::{AgentSettings, FIELD_MANAGER, ObjectKind, render};
use workflows::records::{NamespaceRecord, NamespaceSpec, RoleBinding};

#[derive(Parser)]
#[command(about = "Measure one agent converging namespaces against the fake Kubernetes API")]
struct Args {
    /// Namespaces (team records) to converge.
    #[arg(long, default_value_t = 1000)]
    namespaces: usize,
    /// Namespaces reconciled at once (the agent's `concurrency`; also the baseline's).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn records(n: usize) -> Vec<NamespaceRecord> {
    (0..n)
        .map(|i| {
            let team = format!("team-{i:05}");
            NamespaceRecord::new(
                NamespaceSpec {
                    team: team.clone(),
                    environment: "bench".into(),
                    quota: [("requests.cpu".to_owned(), "4".to_owned())].into(),
                    limits: [("memory".to_owned(), "512Mi".to_owned())].into(),
                    role_bindings: vec![
                        RoleBinding { group: team.clone(), role: "edit".into() },
                        RoleBinding { group: format!("{team}-maintainers"), role: "admin".into() },
                    ],
                    quota_profile: None,
                    labels: [("cost-center".to_owned(), "42".to_owned())].into(),
                    target_clusters: vec!["bench-1".into()],
                    allow_deletion: false,
                    network_policy: true,
                },
                Utc::now(),
            )
        })
        .collect()
}

/// A stub of the engine's `GET /v1/namespaces` with an ETag.
async fn serve_records(records: Vec<NamespaceRecord>) -> anyhow::Result<String> {
    let body = Arc::new(serde_json::to_vec(&json!({ "items": records }))?);
    async fn list(State(body): State<Arc<Vec<u8>>>, headers: HeaderMap) -> Response {
        let etag = "\"bench\"";
        if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v == etag) {
            return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
        }
        ([(header::ETAG, etag), (header::CONTENT_TYPE, "application/json")], body.to_vec())
            .into_response()
    }
    let app = Router::new().route("/v1/namespaces", get(list)).with_state(body);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

fn settings() -> AgentSettings {
    AgentSettings {
        environment: "bench".into(),
        cluster: "bench-1".into(),
        group_prefix: String::new(),
    }
}

/// The baseline: every object of every record applied with kube, namespace first, the
/// namespaces `concurrency` at a time.
async fn baseline(
    kube: &FakeKube,
    records: &[NamespaceRecord],
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let client = kube.client();
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(records)
        .map(|record| {
            let client = client.clone();
            async move {
                for object in render(record, &settings()) {
                    let resource = match object.kind {
                        ObjectKind::Namespace => {
                            ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&())
                        }
                        ObjectKind::ResourceQuota => {
                            ApiResource::erase::<k8s_openapi::api::core::v1::ResourceQuota>(&())
                        }
                        ObjectKind::LimitRange => {
                            ApiResource::erase::<k8s_openapi::api::core::v1::LimitRange>(&())
                        }
                        ObjectKind::RoleBinding => {
                            ApiResource::erase::<k8s_openapi::api::rbac::v1::RoleBinding>(&())
                        }
                        ObjectKind::NetworkPolicy => ApiResource::erase::<
                            k8s_openapi::api::networking::v1::NetworkPolicy,
                        >(&()),
                    };
                    let api: Api<DynamicObject> = match &object.namespace {
                        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                        None => Api::all_with(client.clone(), &resource),
                    };
                    api.patch(
                        &object.name,
                        &PatchParams::apply(FIELD_MANAGER),
                        &Patch::Apply(&object.body),
                    )
                    .await?;
                }
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for result in results {
        result?;
    }
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let records = records(args.namespaces);

    let raw_kube = FakeKube::start().await?;
    let raw = baseline(&raw_kube, &records, args.concurrency).await?;
    let raw_writes = raw_kube.mutating_requests();

    let kube = FakeKube::start().await?;
    let api = serve_records(records.clone()).await?;
    let options = AgentOptions {
        settings: settings(),
        api_url: api,
        api_token: None,
        interval: Duration::from_secs(3600),
        force_conflicts: false,
        concurrency: args.concurrency,
        max_reconcile_age: Duration::from_secs(3600),
        max_deletions_per_hour: 10,
    };
    let reconciler =
        Reconciler::new(options, Arc::new(KubeCluster::new(kube.client())), Names::new("muster"));
    let started = Instant::now();
    let first = reconciler.reconcile_all().await.map_err(anyhow::Error::msg)?;
    let converge = started.elapsed();
    anyhow::ensure!(
        first.outcomes.get("applied") == Some(&args.namespaces),
        "not every namespace was applied: {first:?}"
    );
    let converge_writes = kube.mutating_requests();

    kube.reset_counters();
    let started = Instant::now();
    let steady = reconciler.reconcile_all().await.map_err(anyhow::Error::msg)?;
    let steady_time = started.elapsed();
    let steady_requests = kube.requests().len();
    let steady_writes = kube.mutating_requests();

    let ratio = raw.as_secs_f64() / converge.as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({
                "namespaces": args.namespaces,
                "concurrency": args.concurrency,
                "baseline_seconds": raw.as_secs_f64(),
                "baseline_writes": raw_writes,
                "agent_converge_seconds": converge.as_secs_f64(),
                "agent_converge_writes": converge_writes,
                "ratio": ratio,
                "steady_seconds": steady_time.as_secs_f64(),
                "steady_requests": steady_requests,
                "steady_writes": steady_writes,
                "steady_summary": steady,
            })
        );
    } else {
        println!("{} namespaces, concurrency {}", args.namespaces, args.concurrency);
        println!(
            "baseline (kube applies only):   {:>8.2} s  {raw_writes} writes",
            raw.as_secs_f64()
        );
        println!(
            "agent, from empty:              {:>8.2} s  {converge_writes} writes  ({:.0} namespaces/s)",
            converge.as_secs_f64(),
            args.namespaces as f64 / converge.as_secs_f64()
        );
        println!("ratio baseline/agent:           {ratio:>8.2}");
        println!(
            "agent, steady state:            {:>8.2} s  {steady_requests} requests, {steady_writes} writes",
            steady_time.as_secs_f64()
        );
    }
    Ok(())
}
