//! Prometheus metrics served on `GET /metrics` (OpenMetrics text).
//!
//! - `muster_runs_finished_total{workflow,outcome}`: runs that reached `succeeded` or `failed`;
//! - `muster_http_requests_total{method,route,status}` and
//!   `muster_http_request_duration_seconds{method,route}`;
//! - `muster_outbox_depth`: record events waiting for the relay (as of its last pass, counted
//!   up to 1000), `muster_outbox_published_total`, `muster_outbox_publish_errors_total`;
//! - `muster_authz_decisions_total{action,outcome}`: the policy's answers (`allow`, `deny`);
//! - `muster_runtime_infra_retries_total{workflow,what}`: messages sent back because the journal
//!   or the DLQ failed, and `muster_runtime_infra_escalations_total{workflow,what}`: messages
//!   dead-lettered or terminated after too many such retries (see docs/runtime.md).

use std::sync::atomic::AtomicI64;
use std::sync::{Arc, LazyLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::runtime::RunFinished;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub workflow: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub action: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfraLabels {
    pub workflow: String,
    /// What failed: `journal` or `dlq`.
    pub what: String,
}

static INFRA_RETRIES: LazyLock<Family<InfraLabels, Counter>> = LazyLock::new(Family::default);
static INFRA_ESCALATIONS: LazyLock<Family<InfraLabels, Counter>> = LazyLock::new(Family::default);

/// Infrastructure retries of the runtime. Process-wide, so that every runner counts into it
/// without holding the [`Metrics`]; [`Metrics::new`] registers it.
pub fn infra_retries() -> &'static Family<InfraLabels, Counter> {
    &INFRA_RETRIES
}

/// Messages the runtime gave up retrying on infrastructure failures. Process-wide like
/// [`infra_retries`].
pub fn infra_escalations() -> &'static Family<InfraLabels, Counter> {
    &INFRA_ESCALATIONS
}

/// Every metric the engine exports, registered once.
pub struct Metrics {
    registry: Registry,
    pub runs_finished: Family<RunLabels, Counter>,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_latency: Family<LatencyLabels, Histogram>,
    pub outbox_depth: Gauge<i64, AtomicI64>,
    pub outbox_published: Counter,
    pub outbox_errors: Counter,
    pub authz_decisions: Family<DecisionLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("muster");
        let runs_finished = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs_finished",
            "Runs that reached a final state, by workflow and outcome",
            runs_finished.clone(),
        );
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            http_requests.clone(),
        );
        let http_latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.5, 12))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route",
            http_latency.clone(),
        );
        let outbox_depth = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "outbox_depth",
            "Record events waiting in the outbox at the relay's last pass (counted up to 1000)",
            outbox_depth.clone(),
        );
        let outbox_published = Counter::default();
        registry.register(
            "outbox_published",
            "Record events the relay published to JetStream",
            outbox_published.clone(),
        );
        let outbox_errors = Counter::default();
        registry.register(
            "outbox_publish_errors",
            "Failed attempts to publish a record event",
            outbox_errors.clone(),
        );
        let authz_decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "authz_decisions",
            "Authorization decisions of the policy, by action and outcome",
            authz_decisions.clone(),
        );
        registry.register(
            "runtime_infra_retries",
            "Messages sent back (Nak) because the journal or the DLQ failed, by workflow and what",
            infra_retries().clone(),
        );
        registry.register(
            "runtime_infra_escalations",
            "Messages dead-lettered or terminated after too many infrastructure retries",
            infra_escalations().clone(),
        );
        Arc::new(Self {
            registry,
            authz_decisions,
            runs_finished,
            http_requests,
            http_latency,
            outbox_depth,
            outbox_published,
            outbox_errors,
        })
    }

    /// Counts one authorization decision.
    pub fn count_decision(&self, action: &str, allow: bool) {
        let outcome = if allow { "allow" } else { "deny" };
        self.authz_decisions
            .get_or_create(&DecisionLabels {
                action: action.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts finished runs from the engine's notifications until `shutdown`.
    pub async fn count_runs(
        self: Arc<Self>,
        mut finished: broadcast::Receiver<RunFinished>,
        shutdown: CancellationToken,
    ) {
        loop {
            let run = tokio::select! {
                _ = shutdown.cancelled() => return,
                run = finished.recv() => run,
            };
            match run {
                Ok(run) => {
                    self.runs_finished
                        .get_or_create(&RunLabels {
                            workflow: run.workflow,
                            outcome: run.status.to_string(),
                        })
                        .inc();
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "metrics missed run notifications");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
