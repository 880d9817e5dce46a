//! The engine daemon (`engine run`, `engine dev`): the workflow runtime, the records store, the
//! outbox relay and the HTTP API in one process, stopped together by one shutdown token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use workflows::Workflow;

use connectors::github::{Credentials, GitHubConfig, GitHubMode, OctocrabGitHub, Pacing};
use workflows::cluster::RecordClusterReport;
use workflows::publisher::Publisher;
use workflows::resync::{Resync, SyncEnvironment};
use workflows::sync_team::{SyncTeam, SyncTeamSettings};

use crate::api::{self, AppState};
use crate::auth::{AuthMode, Authenticator};
use crate::config::{Config, StoreKind};
use crate::github_budget::{self, JetStreamBudget};
use crate::metrics::Metrics;
use crate::policy::Authorizer;
use crate::publisher::JetStreamPublisher;
use crate::relay::Relay;
use crate::runtime::{Engine, EngineError};
use crate::store::{self, Store, StoreError};

/// The platform workflows over the real adapters: `sync_team` (records, GitHub with the
/// replicas' shared request `budget`, JetStream), `resync`, `sync_environment` and
/// `record_cluster_report` (records, JetStream).
///
/// # Errors
/// The GitHub configuration cannot build a client.
pub fn domain_workflows(
    config: &Config,
    store: &Store,
    publisher: &JetStreamPublisher,
    budget: &Arc<JetStreamBudget>,
) -> Result<DomainWorkflows, DaemonError> {
    let github = OctocrabGitHub::with_budget(&config.github, budget.clone())
        .map_err(|e| DaemonError::GitHub(e.to_string()))?;
    log_github(&config.github);
    let settings = SyncTeamSettings {
        max_removal_fraction: config.github.max_removal_fraction,
        max_removals_absolute: config.github.max_removals_absolute,
        max_removal_majority: config.github.max_removal_majority,
        min_maintainers: config.github.min_maintainers,
        group_prefix: config.sync.group_prefix.clone(),
        member_role: config.sync.member_role.clone(),
        maintainer_role: config.sync.maintainer_role.clone(),
        invite_non_members: config.github.invite_non_members,
    };
    let records = store.records();
    let publisher: Arc<dyn Publisher> = Arc::new(publisher.clone());
    let sync_team =
        Arc::new(SyncTeam::new(records.clone(), Arc::new(github), publisher.clone(), settings));
    Ok(DomainWorkflows {
        workflows: vec![
            sync_team.clone(),
            Arc::new(Resync::new(records.clone(), publisher.clone())),
            Arc::new(SyncEnvironment::new(records.clone(), publisher.clone())),
            Arc::new(RecordClusterReport::new(records, publisher)),
        ],
        sync_team,
    })
}

/// The platform workflows, and `sync_team` itself for the API's previews of its next run.
pub struct DomainWorkflows {
    pub workflows: Vec<Arc<dyn Workflow>>,
    pub sync_team: Arc<SyncTeam>,
}

/// Says at start how Muster reaches GitHub: with credentials, one line with the organization,
/// the API URL, the authentication (a token, or an App and its installation) and the mode
/// (`live` sends changes, `plan` reads and sends nothing); without, that it plans from nothing.
fn log_github(github: &GitHubConfig) {
    let mode = if github.mode == GitHubMode::Plan { "plan" } else { "live" };
    match github.credentials() {
        Credentials::None => info!(
            "GitHub: no credentials configured, plan-only mode (plans are recorded, nothing is sent)"
        ),
        Credentials::Token(_) => info!(
            org = %github.org,
            api_url = %github.api_url,
            auth = "token",
            mode,
            "GitHub: managing the organization with a token"
        ),
        Credentials::App { app_id, installation_id, .. } => info!(
            org = %github.org,
            api_url = %github.api_url,
            auth = "app",
            app_id,
            installation_id,
            mode,
            "GitHub: managing the organization as a GitHub App"
        ),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot set up the GitHub client: {0}")]
    GitHub(String),
    #[error(
        "refusing to serve the API on {addr} without authentication: configure [[auth.tokens]], \
         auth.tokens-file or [auth.oidc]; or listen on a loopback address; or set \
         auth.mode = \"none\" if anyone who can reach {addr} may do anything"
    )]
    Unauthenticated { addr: SocketAddr },
    #[error("cannot load the HTTPS certificate and key {0}")]
    Tls(String),
    #[error("authentication: {0}")]
    Auth(String),
    #[error("authorization policy: {0}")]
    Policy(String),
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// A started daemon: listening, connected, store open.
pub struct Daemon {
    engine: Engine,
    store: Store,
    listener: TcpListener,
    metrics: Arc<Metrics>,
    started: Instant,
    authenticator: Option<Arc<Authenticator>>,
    authorizer: Arc<dyn Authorizer>,
    /// HTTPS, when `http.tls-cert-file` is set.
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    /// `sync_team`, for the API's previews.
    sync_team: Arc<SyncTeam>,
}

impl Daemon {
    /// Sets up authentication and the policy, binds the HTTP listener, opens the store
    /// (PostgreSQL: connects and checks migrations first), then starts the engine.
    ///
    /// # Errors
    /// No credentials for a non-loopback address, an unusable tokens file, JWKS or policy, the
    /// address is taken, the store is unreachable or not migrated, or the engine cannot start.
    pub async fn start(
        config: Config,
        workflows: Vec<Arc<dyn Workflow>>,
    ) -> Result<Self, DaemonError> {
        let addr = config.http.listen;
        let authenticator = Authenticator::from_config(&config.auth)
            .await
            .map_err(|e| DaemonError::Auth(e.to_string()))?
            .map(Arc::new);
        match (&authenticator, config.auth.mode) {
            (None, AuthMode::Auto) if !addr.ip().is_loopback() => {
                return Err(DaemonError::Unauthenticated { addr });
            }
            (None, _) => {
                warn!(%addr, "authentication is off: every caller of the API may do anything")
            }
            (Some(_), _) => {}
        }
        let authorizer = crate::policy::authorizer(&config.authz)
            .map_err(|e| DaemonError::Policy(e.to_string()))?;
        if authenticator.is_some() {
            info!(policy = %authorizer.describe(), "API callers are authenticated and authorized");
        }
        let tls = match (&config.http.tls_cert_file, &config.http.tls_key_file) {
            (Some(cert), Some(key)) => Some(
                axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await.map_err(
                    |e| DaemonError::Tls(format!("{} / {}: {e}", cert.display(), key.display())),
                )?,
            ),
            _ => None,
        };
        let listener =
            TcpListener::bind(addr).await.map_err(|source| DaemonError::Listen { addr, source })?;
        // Fail on a stale database before touching NATS.
        if config.store == StoreKind::Postgres {
            store::connect_postgres(&config)
                .await?
                .check_migrations()
                .await
                .map_err(StoreError::Migrations)?;
        }
        let db = crate::runtime::open_db(&config)?;
        let store = store::open(&config, &db).await?;
        let publisher = JetStreamPublisher::new();
        let budget = Arc::new(JetStreamBudget::new(
            &config.github.org,
            Pacing::per_minute(config.github.points_per_minute),
        ));
        let mut workflows = workflows;
        let domain = domain_workflows(&config, &store, &publisher, &budget)?;
        workflows.extend(domain.workflows);
        let engine = Engine::start_with_db(config.clone(), workflows, db).await?;
        publisher.bind(engine.jetstream().clone(), engine.names().clone());
        if config.github.credentials() != Credentials::None {
            let (js, names) = (engine.jetstream(), engine.names());
            let bucket = github_budget::bucket(js, names, config.streams.replicas)
                .await
                .map_err(EngineError::from)?;
            budget.bind(bucket);
        }
        Ok(Self {
            engine,
            store,
            listener,
            metrics: Metrics::new(),
            started: Instant::now(),
            authenticator,
            authorizer,
            tls,
            sync_team: domain.sync_team,
        })
    }

    /// The names of the workflows the daemon runs (the platform ones included).
    pub fn workflow_names(&self) -> Vec<&'static str> {
        self.engine.workflow_names()
    }

    /// The address the HTTP API listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| self.engine.config().http.listen)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown`: the runtime drains in-flight runs within its grace period, the
    /// HTTP server finishes requests in flight, the relay stops between publishes.
    ///
    /// # Errors
    /// The engine or the HTTP server failed.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DaemonError> {
        let config = self.engine.config().clone();
        let wake = Arc::new(Notify::new());
        let records = self.store.records();
        let openapi_json = api::openapi_json();
        let (schedules, schedule_store) = self.engine.schedules();
        let (schedules, schedule_store) = (schedules.to_vec(), schedule_store.cloned());
        let state = Arc::new(AppState {
            store: self.store.clone(),
            records: records.clone(),
            journal: self.engine.journal(),
            client: self.engine.client().clone(),
            js: self.engine.jetstream().clone(),
            names: self.engine.names().clone(),
            relay_wake: wake.clone(),
            metrics: self.metrics.clone(),
            started: self.started,
            max_event_bytes: config.streams.max_event_bytes,
            openapi_json,
            schedules,
            schedule_store,
            github_webhook_secret: config
                .github
                .webhook_secret
                .as_ref()
                .map(|s| s.expose().to_owned()),
            authenticator: self.authenticator.clone(),
            authorizer: self.authorizer.clone(),
            min_maintainers: config.github.min_maintainers,
            sync_team: self.sync_team.clone(),
            plans: tokio::sync::Semaphore::new(api::plan::MAX_CONCURRENT_PLANS),
        });
        let relay = Relay::new(
            records,
            self.engine.jetstream().clone(),
            self.engine.names().clone(),
            wake,
            config.outbox.clone(),
            self.metrics.clone(),
        );
        let relay = tokio::spawn(relay.run(shutdown.clone()));
        let counter = tokio::spawn(
            self.metrics.clone().count_runs(self.engine.subscribe_finished(), shutdown.clone()),
        );
        let addr = self.http_addr();
        let app = api::router(state, &config.http);
        let http_shutdown = shutdown.clone();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let http = match self.tls {
            None => tokio::spawn(async move {
                axum::serve(self.listener, app)
                    .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
                    .await
            }),
            Some(tls) => {
                let listener = self.listener.into_std().map_err(DaemonError::Serve)?;
                let server =
                    axum_server::from_tcp_rustls(listener, tls).map_err(DaemonError::Serve)?;
                let handle = axum_server::Handle::new();
                let stopper = handle.clone();
                let grace = config.runtime.grace_period;
                tokio::spawn(async move {
                    http_shutdown.cancelled().await;
                    stopper.graceful_shutdown(Some(grace));
                });
                tokio::spawn(server.handle(handle).serve(app.into_make_service()))
            }
        };
        info!(%addr, scheme, store = ?self.store.kind(), "HTTP API listening");
        let outcome = self.engine.run(shutdown.clone()).await;
        shutdown.cancel();
        match http.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(DaemonError::Serve(e)),
            Err(e) => warn!(error = %e, "HTTP server task failed"),
        }
        let _ = relay.await;
        counter.abort();
        outcome.map_err(Into::into)
    }
}
