//! `engine agent`: makes one environment's namespace records real in one Kubernetes cluster.
//!
//! Two paths, either of which alone converges the cluster:
//! - **Full reconcile** ([`reconcile`]), at start and every `agent.interval`: the
//!   environment's records from the engine's API (`GET /v1/namespaces?environment=ENV`, with
//!   `If-None-Match`), a complete observation of the cluster, the pure planner of
//!   `workflows::cluster`, the actions, and reports for what changed. It also finds orphans.
//! - **Fast path** ([`consumer`]): a durable JetStream consumer `agent-<env>-<cluster>` on the
//!   environment's `muster.namespace.changed` subject. Each event carries the whole record; the
//!   agent observes that one namespace, plans and acts, then acks (a failure is Nak'd with a
//!   delay and the reconcile repairs it anyway).
//!
//! Reports (`muster.cluster.reported`, subject = the environment) are published only when
//! the record does not already show them, so a converged cluster costs no writes and no
//! events. The agent needs no records store and no GitHub credentials: the API, NATS and its
//! cluster are all it talks to.
//!
//! # Health
//! [`health`] serves `/livez`, `/readyz` (checks: Kubernetes API, NATS, age of the last full
//! reconcile) and `/metrics` on `agent.listen`.

pub mod consumer;
pub mod health;
pub mod reconcile;
pub mod source;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use workflows::cluster::{AgentSettings, Cluster};

use crate::bus::Names;
use crate::config::Config;

pub use reconcile::{Reconciler, Summary};

/// Errors that stop the agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent.{0} is required (flag --{1} or [agent] {0} in the config)")]
    Missing(&'static str, &'static str),
    #[error("agent.{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the agent runs with, checked.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub settings: AgentSettings,
    pub api_url: String,
    /// Bearer token for the API: `agent.api-token-file`, else `MUSTER_TOKEN`.
    pub api_token: Option<crate::config::Secret>,
    pub interval: Duration,
    pub force_conflicts: bool,
    pub concurrency: usize,
    pub max_reconcile_age: Duration,
    /// See `[agent] max-namespace-deletions-per-hour`.
    pub max_deletions_per_hour: usize,
}

impl AgentOptions {
    /// The `[agent]` section, checked: environment and cluster are DNS-1123 labels, the API
    /// URL is http(s), the interval at least a second.
    ///
    /// # Errors
    /// A missing or invalid key, named.
    pub fn from_config(config: &Config) -> Result<Self, AgentError> {
        use workflows::records::validation::is_dns_label;
        let agent = &config.agent;
        let environment =
            agent.environment.clone().ok_or(AgentError::Missing("environment", "environment"))?;
        let cluster = agent.cluster.clone().ok_or(AgentError::Missing("cluster", "cluster"))?;
        let api_url = agent.api_url.clone().ok_or(AgentError::Missing("api-url", "api"))?;
        let invalid = |key, message: String| Err(AgentError::Invalid { key, message });
        if !is_dns_label(&environment) {
            return invalid("environment", format!("{environment:?} is not a DNS-1123 label"));
        }
        if !is_dns_label(&cluster) {
            return invalid("cluster", format!("{cluster:?} is not a DNS-1123 label"));
        }
        match url::Url::parse(&api_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => return invalid("api-url", format!("{api_url:?} is not an http(s) URL")),
        }
        if agent.interval < Duration::from_secs(1) {
            return invalid("interval", "must be at least 1s".into());
        }
        if agent.concurrency == 0 {
            return invalid("concurrency", "must be at least 1".into());
        }
        let api_token = match &agent.api_token_file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(token) if !token.trim().is_empty() => Some(token.trim().to_owned()),
                Ok(_) => return invalid("api-token-file", format!("{} is empty", path.display())),
                Err(e) => return invalid("api-token-file", format!("{}: {e}", path.display())),
            },
            None => std::env::var("MUSTER_TOKEN").ok().filter(|t| !t.trim().is_empty()),
        };
        Ok(AgentOptions {
            settings: AgentSettings {
                environment,
                cluster,
                group_prefix: agent.group_prefix.clone(),
            },
            api_url: api_url.trim_end_matches('/').to_owned(),
            api_token: api_token.map(crate::config::Secret::new),
            interval: agent.interval,
            force_conflicts: agent.force_conflicts,
            concurrency: agent.concurrency,
            max_reconcile_age: agent.max_reconcile_age,
            max_deletions_per_hour: agent.max_namespace_deletions_per_hour,
        })
    }

    /// The durable consumer's name: `agent-<environment>-<cluster>`.
    pub fn consumer_name(&self) -> String {
        format!("agent-{}-{}", self.settings.environment, self.settings.cluster)
    }
}

/// Runs the agent until `shutdown`: the health listener, the full reconcile loop and the
/// consumer. A NATS server or API that is down at start is retried; the agent becomes ready
/// once a full reconcile has finished.
///
/// # Errors
/// The options are invalid or the listener cannot bind.
pub async fn run(
    config: Config,
    cluster: Arc<dyn Cluster>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let options = AgentOptions::from_config(&config)?;
    let addr = config.agent.listen;
    let listener =
        TcpListener::bind(addr).await.map_err(|source| AgentError::Listen { addr, source })?;
    let names = Names::new(config.nats.prefix.clone());
    let reconciler = Arc::new(Reconciler::new(options, cluster, names));
    serve(config, reconciler, listener, shutdown).await;
    Ok(())
}

/// Runs an agent around `reconciler` (tests hold it to drive and inspect reconciles) with its
/// health routes on `listener`, until `shutdown`.
pub async fn serve(
    config: Config,
    reconciler: Arc<Reconciler>,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    let options = &reconciler.options;
    info!(
        environment = %options.settings.environment,
        cluster = %options.settings.cluster,
        api = %options.api_url,
        listen = ?listener.local_addr().ok(),
        "agent starting"
    );
    let health = tokio::spawn(health::serve(listener, reconciler.clone(), shutdown.clone()));
    let nats = tokio::spawn(consumer::run(config, reconciler.clone(), shutdown.clone()));
    let full = tokio::spawn(reconcile::run_loop(reconciler, shutdown.clone()));
    let _ = full.await;
    shutdown.cancel();
    if nats.await.is_err() {
        warn!("the consumer task failed");
    }
    let _ = health.await;
    info!("agent stopped");
}
