//! The durable workflow runtime: one durable pull consumer per workflow, a journal of runs and
//! steps, retries by Nak with delay, and a dead-letter queue.
//!
//! [`Engine::start`] connects, creates or updates the streams and consumers, and returns once
//! everything is ready; [`Engine::run`] then drives the workflows until shutdown.
//!
//! # Durability
//! - A step's result is durable (sled fsync) before the next step starts.
//! - A run's completion is durable before its message is acked; a failed run's event is in the
//!   DLQ before its message is terminated.
//! - Delivery is at least once: a step that was executing when the engine died runs again, a
//!   step that had finished does not. Workflow code must be deterministic given its event and its
//!   step results (see `workflows::workflow`).
//! - JetStream drops a re-published event (same source and id) within the duplicate window; after
//!   it, the journal turns the duplicate of a finished run into a no-op until the run is purged by
//!   the journal's retention.
//! - A message is delivered at most [`poison::max_deliver`] times; one that runs out (a poison
//!   message the client cannot read, or its collateral) is dead-lettered or re-queued by
//!   [`poison`], never dropped silently.

pub mod dlq;
pub mod poison;
mod pull;
pub mod retry;
mod runner;
pub mod service;
mod steps;

use std::sync::Arc;

use async_nats::Client;
use async_nats::jetstream::Context;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use workflows::Workflow;

pub use runner::run_id;

use crate::bus::{self, BusError, ConsumerSpec, Names};
use crate::config::Config;
use crate::journal::sled::SledJournal;
use crate::journal::{Journal, JournalError, RunStatus};
use retry::RetryPolicy;

/// Capacity of the run-finished notification channel.
const FINISHED_CHANNEL: usize = 65_536;

/// A run that reached a final state, for in-process observers (benchmark, tests).
#[derive(Clone, Debug)]
pub struct RunFinished {
    pub run_id: String,
    pub workflow: String,
    pub status: RunStatus,
    pub at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("cannot open the journal in {dir}: {source} (is another engine using this data dir?)")]
    Journal {
        dir: String,
        #[source]
        source: JournalError,
    },
    #[error("two workflows are named {0:?}")]
    DuplicateWorkflow(String),
    #[error("workflow name {0:?} must be letters, digits, - or _ (it names a durable consumer)")]
    InvalidWorkflowName(String),
    #[error("cannot start the NATS service endpoints: {0}")]
    Service(String),
    #[error("{0}")]
    Schedule(String),
}

/// Opens the data dir's sled database. One per data dir, shared by the journal and the sled
/// records store: sled allows one process (and one open handle) per database.
///
/// # Errors
/// The directory cannot be opened or another process holds it.
pub fn open_db(config: &Config) -> Result<::sled::Db, EngineError> {
    let dir = config.journal_dir();
    crate::journal::sled::sled_config(&dir, config.runtime.journal_cache_mib)
        .open()
        .map_err(|e| EngineError::Journal { dir: dir.display().to_string(), source: e.into() })
}

/// The workflows an engine runs: the built-in ones plus those a binary adds.
pub fn builtin_workflows() -> Vec<Arc<dyn Workflow>> {
    vec![Arc::new(workflows::ping::Ping)]
}

/// A started engine: connected, streams and consumers in place.
pub struct Engine {
    config: Config,
    client: Client,
    js: Context,
    names: Names,
    journal: Arc<SledJournal>,
    workflows: Vec<Arc<dyn Workflow>>,
    consumers: Vec<async_nats::jetstream::consumer::PullConsumer>,
    /// The consumer of the workflow consumers' max-deliveries advisories.
    advisories: async_nats::jetstream::consumer::PullConsumer,
    schedules: Vec<crate::schedule::Schedule>,
    /// The schedules' memory; absent when no schedule is enabled.
    schedule_store: Option<async_nats::jetstream::kv::Store>,
    finished: broadcast::Sender<RunFinished>,
}

impl Engine {
    /// Connects to NATS, checks the server, creates or updates streams and one consumer per
    /// workflow, and opens the journal.
    ///
    /// # Errors
    /// NATS unreachable or too old, a stream or consumer refused, the journal locked by another
    /// process, or two workflows with one name.
    pub async fn start(
        config: Config,
        workflows: Vec<Arc<dyn Workflow>>,
    ) -> Result<Self, EngineError> {
        let db = open_db(&config)?;
        Self::start_with_db(config, workflows, db).await
    }

    /// As [`Engine::start`], on a sled database the caller opened with [`open_db`] (to share it
    /// with other stores before the engine starts).
    ///
    /// # Errors
    /// As [`Engine::start`].
    pub async fn start_with_db(
        config: Config,
        workflows: Vec<Arc<dyn Workflow>>,
        db: ::sled::Db,
    ) -> Result<Self, EngineError> {
        let mut names_seen = std::collections::HashSet::new();
        for workflow in &workflows {
            let name = workflow.name();
            if name.is_empty()
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(EngineError::InvalidWorkflowName(name.to_owned()));
            }
            if !names_seen.insert(workflow.name()) {
                return Err(EngineError::DuplicateWorkflow(workflow.name().to_owned()));
            }
        }
        let dir = config.journal_dir();
        let journal = SledJournal::with_db(db)
            .map_err(|source| EngineError::Journal { dir: dir.display().to_string(), source })?;
        let (client, js) = bus::connect(&config).await?;
        let names = Names::new(config.nats.prefix.clone());
        bus::ensure_streams(&js, &names, &config.streams).await?;
        // Before the workflow consumers: no advisory of theirs may go unrecorded.
        let advisories = poison::ensure(&js, &names, &config.streams).await?;
        let mut consumers = Vec::with_capacity(workflows.len());
        for workflow in &workflows {
            let spec = ConsumerSpec {
                workflow: workflow.name(),
                triggers: workflow.triggers(),
                ack_wait: config.runtime.ack_wait,
                max_ack_pending: config.runtime.concurrency,
                max_deliver: poison::max_deliver(config.runtime.max_attempts),
            };
            consumers.push(bus::ensure_consumer(&js, &names, &spec).await?);
        }
        let schedules = crate::schedule::parse_all(&config.schedules)
            .map_err(|e| EngineError::Schedule(e.to_string()))?;
        let schedule_store = match schedules.iter().any(|s| s.config.enabled) {
            true => Some(crate::schedule::bucket(&js, &names, config.streams.replicas).await?),
            false => None,
        };
        let (finished, _) = broadcast::channel(FINISHED_CHANNEL);
        info!(
            nats = %config.nats_url(),
            journal = %dir.display(),
            workflows = ?workflows.iter().map(|w| w.name()).collect::<Vec<_>>(),
            "engine started"
        );
        Ok(Self {
            config,
            client,
            js,
            names,
            journal: Arc::new(journal),
            workflows,
            consumers,
            advisories,
            schedules,
            schedule_store,
            finished,
        })
    }

    /// The names of the workflows this engine runs.
    pub fn workflow_names(&self) -> Vec<&'static str> {
        self.workflows.iter().map(|w| w.name()).collect()
    }

    /// Notifications of runs reaching a final state.
    pub fn subscribe_finished(&self) -> broadcast::Receiver<RunFinished> {
        self.finished.subscribe()
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    pub fn jetstream(&self) -> &Context {
        &self.js
    }

    pub fn journal(&self) -> Arc<dyn Journal> {
        self.journal.clone()
    }

    /// The engine's sled database (journal trees; the sled records store opens its own trees
    /// in it).
    pub fn db(&self) -> &::sled::Db {
        self.journal.db()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The parsed schedules and their shared memory (absent when none is enabled), for status
    /// reports such as `/readyz`.
    pub fn schedules(
        &self,
    ) -> (&[crate::schedule::Schedule], Option<&async_nats::jetstream::kv::Store>) {
        (&self.schedules, self.schedule_store.as_ref())
    }

    /// Drives the workflows until `shutdown` is cancelled, then stops pulling and lets in-flight
    /// runs finish within the grace period. Runs still in flight after it are abandoned unacked:
    /// JetStream redelivers them after the ack wait and they resume from their journal.
    ///
    /// # Errors
    /// The NATS service endpoints could not be started.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), EngineError> {
        let tracker = TaskTracker::new();
        let runtime = &self.config.runtime;
        let retry = RetryPolicy {
            max_attempts: runtime.max_attempts,
            initial: runtime.backoff_initial,
            max: runtime.backoff_max,
            max_throttled: retry::MAX_THROTTLED,
        };
        let service =
            service::serve(&self.client, &self.names, self.journal.clone(), shutdown.clone())
                .await
                .map_err(|e| EngineError::Service(e.to_string()))?;
        let mut pullers = tokio::task::JoinSet::new();
        pullers.spawn(poison::watch(
            self.advisories,
            self.js.clone(),
            self.names.clone(),
            self.workflows.iter().map(|w| w.name().to_owned()).collect(),
            shutdown.clone(),
        ));
        for (workflow, consumer) in self.workflows.iter().zip(self.consumers) {
            let runner = Arc::new(runner::Runner {
                workflow: workflow.clone(),
                js: self.js.clone(),
                names: self.names.clone(),
                journal: self.journal.clone(),
                retry,
                ack_wait: runtime.ack_wait,
                max_event_bytes: self.config.streams.max_event_bytes,
                concurrency: runtime.concurrency,
                finished: self.finished.clone(),
                keys: runner::KeyLocks::default(),
                infra_retries: runner::InfraRetries::default(),
            });
            pullers.spawn(runner.consume(consumer, shutdown.clone(), tracker.clone()));
        }
        let scheduler = self.schedule_store.clone().map(|store| {
            tokio::spawn(crate::schedule::run(
                self.js.clone(),
                self.names.clone(),
                store,
                self.schedules.clone(),
                shutdown.clone(),
            ))
        });
        let sweeper = tokio::spawn(crate::journal::retention::sweep(
            self.journal.clone(),
            self.js.clone(),
            self.names.clone(),
            runtime.clone(),
            shutdown.clone(),
        ));

        shutdown.cancelled().await;
        info!(in_flight = tracker.len(), grace = ?runtime.grace_period, "shutting down: no new runs");
        while pullers.join_next().await.is_some() {}
        tracker.close();
        if tokio::time::timeout(runtime.grace_period, tracker.wait()).await.is_err() {
            warn!(
                abandoned = tracker.len(),
                "grace period over: abandoning in-flight runs; they are redelivered after the ack wait"
            );
        }
        sweeper.abort();
        if let Some(scheduler) = scheduler {
            let _ = scheduler.await;
        }
        service.stop().await;
        if let Err(e) = self.client.flush().await {
            warn!(error = %e, "could not flush the NATS connection");
        }
        info!("engine stopped");
        Ok(())
    }
}
