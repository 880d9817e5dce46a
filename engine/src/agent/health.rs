//! The agent's `/livez`, `/readyz` and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{SecondsFormat, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use workflows::cluster::ObjectKind;

use super::Reconciler;

/// Bound of each readiness check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub kind: String,
    pub outcome: String,
}

/// The agent's metrics (prefix `muster_agent`).
pub struct AgentMetrics {
    registry: Registry,
    pub reconcile_seconds: Histogram,
    pub actions: Family<ActionLabels, Counter>,
    pub errors: Counter,
    pub reports: Counter,
    pub last_full_reconcile: Gauge<i64, AtomicI64>,
}

impl AgentMetrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("muster_agent");
        let reconcile_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a full reconcile",
            reconcile_seconds.clone(),
        );
        let actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "actions",
            "Applies and deletes sent, by object kind and outcome (created, updated, unchanged, \
             deleted, already_gone, conflict, forbidden, error, unreachable)",
            actions.clone(),
        );
        let errors = Counter::default();
        registry.register("errors", "Failed reconciles and failed actions", errors.clone());
        let reports = Counter::default();
        registry.register("reports", "Reports published", reports.clone());
        let last_full_reconcile = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "last_full_reconcile_timestamp_seconds",
            "When the last full reconcile finished (Unix time)",
            last_full_reconcile.clone(),
        );
        Arc::new(AgentMetrics {
            registry,
            reconcile_seconds,
            actions,
            errors,
            reports,
            last_full_reconcile,
        })
    }

    pub fn action(&self, kind: ObjectKind, outcome: &str) {
        self.actions
            .get_or_create(&ActionLabels {
                kind: kind.plural().to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves the health routes until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    reconciler: Arc<Reconciler>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(reconciler);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "agent health server failed");
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn livez() -> Response {
    let body = json!({ "status": "ok", "time": now(), "version": env!("CARGO_PKG_VERSION") });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// Ready when the Kubernetes API answers, NATS is connected (the consumer is bound) and a
/// full reconcile finished within `agent.max-reconcile-age`.
async fn readyz(State(r): State<Arc<Reconciler>>) -> Response {
    let mut checks = Vec::new();
    let kube = tokio::time::timeout(CHECK_TIMEOUT, r.cluster.check()).await;
    checks.push(match kube {
        Ok(Ok(())) => json!({ "name": "kubernetes", "status": "ok" }),
        Ok(Err(e)) => json!({ "name": "kubernetes", "status": "fail", "detail": e.to_string() }),
        Err(_) => json!({ "name": "kubernetes", "status": "fail", "detail": "timed out" }),
    });
    checks.push(match r.jetstream() {
        Some(_) => json!({ "name": "nats", "status": "ok" }),
        None => json!({ "name": "nats", "status": "fail", "detail": "not connected" }),
    });
    let max_age = r.options.max_reconcile_age;
    checks.push(match r.last_full() {
        Some((at, wall)) if at.elapsed() <= max_age => json!({
            "name": "reconcile", "status": "ok",
            "detail": format!("last full reconcile {}", wall.to_rfc3339_opts(SecondsFormat::Millis, true)),
        }),
        Some((_, wall)) => json!({
            "name": "reconcile", "status": "fail",
            "detail": format!(
                "last full reconcile {} is older than {}{}",
                wall.to_rfc3339_opts(SecondsFormat::Millis, true),
                humantime::format_duration(max_age),
                r.last_error().map(|e| format!("; last error: {e}")).unwrap_or_default()
            ),
        }),
        None => json!({
            "name": "reconcile", "status": "fail",
            "detail": match r.last_error() {
                Some(e) => format!("no full reconcile yet; last error: {e}"),
                None => "no full reconcile yet".to_owned(),
            },
        }),
    });
    let ready = checks.iter().all(|c| c["status"] == "ok");
    let body = json!({
        "status": if ready { "ok" } else { "fail" },
        "time": now(),
        "version": env!("CARGO_PKG_VERSION"),
        "environment": r.options.settings.environment,
        "cluster": r.options.settings.cluster,
        "checks": checks,
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(r): State<Arc<Reconciler>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        r.metrics.render(),
    )
        .into_response()
}
