//! Acting on plans: the full reconcile, one record at a time for the fast path, and reports.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::Mutex as AsyncMutex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use workflows::cluster::{
    Action, Cluster, ClusterError, ClusterReport, NamespacePlan, ObjectKind, plan_all, plan_one,
};
use workflows::records::{ClusterOutcome, ClusterStatus, NamespaceRecord};

use super::AgentOptions;
use super::health::AgentMetrics;
use super::source::RecordsSource;
use crate::bus::{self, Names};

/// First retry delay of a failed full reconcile; doubles up to the interval.
const RETRY_INITIAL: Duration = Duration::from_secs(1);
/// The window of the deletion guard.
const DELETION_WINDOW: Duration = Duration::from_secs(3600);

/// What one full reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub records: usize,
    /// Namespaces by outcome.
    pub outcomes: BTreeMap<String, usize>,
    /// Mutating requests sent (applies and deletes).
    pub writes: usize,
    /// Reports published.
    pub reports: usize,
    /// Reports that could not be published (NATS down): sent again next time.
    pub unreported: usize,
}

/// The outcome of carrying out one plan.
struct Done {
    outcome: ClusterOutcome,
    message: Option<String>,
    object_version: Option<String>,
    writes: usize,
}

/// What the agent knows of one namespace it acted on.
#[derive(Default)]
struct Tracked {
    /// Held while acting: the full reconcile and the event path never act on one namespace at
    /// once.
    lock: Arc<AsyncMutex<()>>,
    /// How many times it was acted on, so a full reconcile can tell that the event path acted
    /// after the full observation (and observe it again).
    acted: u64,
    /// The newest record version acted on, so an older record never replaces a newer one.
    version: Option<u64>,
}

/// The agent's state shared by its loops and its health endpoint.
pub struct Reconciler {
    pub options: AgentOptions,
    pub cluster: Arc<dyn Cluster>,
    names: Names,
    source: AsyncMutex<RecordsSource>,
    /// JetStream once the consumer connected; reports wait for it.
    js: RwLock<Option<Context>>,
    /// What the agent knows of each namespace it acted on.
    tracked: Mutex<HashMap<String, Tracked>>,
    /// When namespaces were deleted, for the deletion guard (the last hour's).
    deletions: Mutex<VecDeque<Instant>>,
    /// Orphans already reported by this process (they have no record to hold the report).
    orphans_reported: Mutex<HashSet<String>>,
    last_full: RwLock<Option<(Instant, chrono::DateTime<Utc>)>>,
    last_error: RwLock<Option<String>>,
    pub metrics: Arc<AgentMetrics>,
}

impl Reconciler {
    pub fn new(options: AgentOptions, cluster: Arc<dyn Cluster>, names: Names) -> Self {
        let source = RecordsSource::new(
            &options.api_url,
            &options.settings.environment,
            options.api_token.as_ref().map(|t| t.expose()),
        );
        Reconciler {
            options,
            cluster,
            names,
            source: AsyncMutex::new(source),
            js: RwLock::new(None),
            tracked: Mutex::new(HashMap::new()),
            deletions: Mutex::new(VecDeque::new()),
            orphans_reported: Mutex::new(HashSet::new()),
            last_full: RwLock::new(None),
            last_error: RwLock::new(None),
            metrics: AgentMetrics::new(),
        }
    }

    pub fn set_jetstream(&self, js: Option<Context>) {
        if let Ok(mut slot) = self.js.write() {
            *slot = js;
        }
    }

    pub fn jetstream(&self) -> Option<Context> {
        self.js.read().ok().and_then(|js| js.clone())
    }

    /// When the last full reconcile finished (monotonic and wall clock).
    pub fn last_full(&self) -> Option<(Instant, chrono::DateTime<Utc>)> {
        self.last_full.read().ok().and_then(|t| *t)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().ok().and_then(|e| e.clone())
    }

    /// One full reconcile: records from the API, a complete observation, every plan carried
    /// out with at most `concurrency` namespaces at once, reports for what is news.
    ///
    /// # Errors
    /// The API or the cluster could not be read (nothing was changed then).
    pub async fn reconcile_all(&self) -> Result<Summary, String> {
        let started = Instant::now();
        let acted_before: HashMap<String, u64> = self
            .tracked
            .lock()
            .map(|t| t.iter().map(|(name, t)| (name.clone(), t.acted)).collect())
            .unwrap_or_default();
        let (records, _changed) =
            self.source.lock().await.fetch().await.map_err(|e| e.to_string())?;
        let observed = self.cluster.observe_all().await.map_err(|e| e.to_string())?;
        let plans = plan_all(&records, &observed, &self.options.settings);
        let by_name: BTreeMap<&str, &NamespaceRecord> =
            records.iter().map(|r| (r.name.as_str(), r)).collect();
        let mut summary = Summary { records: by_name.len(), ..Summary::default() };
        let by_name = &by_name;
        let acted_before = &acted_before;
        let results: Vec<Option<(NamespacePlan, Done)>> = futures::stream::iter(plans)
            .map(|plan| async move {
                let lock = self.lock(&plan.namespace);
                let _held = lock.lock().await;
                let record = by_name.get(plan.namespace.as_str()).copied();
                let plan = self.still_current(plan, record, acted_before).await?;
                let done = self.carry_out(&plan).await;
                self.acted(&plan.namespace, plan.record_version);
                Some((plan, done))
            })
            .buffer_unordered(self.options.concurrency)
            .collect()
            .await;
        for (plan, done) in results.into_iter().flatten() {
            summary.writes += done.writes;
            *summary.outcomes.entry(done.outcome.to_string()).or_default() += 1;
            match self.report(&plan, &done, by_name.get(plan.namespace.as_str()).copied()).await {
                Ok(true) => summary.reports += 1,
                Ok(false) => {}
                Err(()) => summary.unreported += 1,
            }
        }
        self.metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
        if let Ok(mut last) = self.last_full.write() {
            *last = Some((Instant::now(), Utc::now()));
        }
        self.metrics.last_full_reconcile.set(Utc::now().timestamp());
        if let Ok(mut e) = self.last_error.write() {
            *e = None;
        }
        Ok(summary)
    }

    /// The fast path: one record from an event, against its namespace as observed now.
    /// Returns `None` when the record is older than one already acted on.
    ///
    /// # Errors
    /// The namespace could not be observed, or acting on it failed (the message says why).
    pub async fn reconcile_one(
        &self,
        record: &NamespaceRecord,
    ) -> Result<Option<ClusterOutcome>, String> {
        if record.spec.environment != self.options.settings.environment {
            return Ok(None);
        }
        let lock = self.lock(&record.name);
        let _held = lock.lock().await;
        if self.known_version(&record.name).is_some_and(|v| v > record.resource_version) {
            return Ok(None);
        }
        let observed =
            self.cluster.observe_namespace(&record.name).await.map_err(|e| e.to_string())?;
        let plan = plan_one(record, &observed, &self.options.settings);
        let done = self.carry_out(&plan).await;
        self.acted(&record.name, Some(record.resource_version));
        let _ = self.report(&plan, &done, Some(record)).await;
        match done.outcome {
            ClusterOutcome::Failed => Err(done.message.unwrap_or_default()),
            outcome => Ok(Some(outcome)),
        }
    }

    fn lock(&self, namespace: &str) -> Arc<AsyncMutex<()>> {
        match self.tracked.lock() {
            Ok(mut tracked) => tracked.entry(namespace.to_owned()).or_default().lock.clone(),
            Err(_) => Arc::new(AsyncMutex::new(())),
        }
    }

    /// Counts an action on `namespace` for the record `version` (none for an orphan).
    fn acted(&self, namespace: &str, version: Option<u64>) {
        if let Ok(mut tracked) = self.tracked.lock() {
            let t = tracked.entry(namespace.to_owned()).or_default();
            t.acted += 1;
            t.version = t.version.max(version);
        }
    }

    /// The deletion guard: whether another namespace may be deleted now (and if so, counts it).
    fn may_delete_namespace(&self) -> bool {
        let Ok(mut deletions) = self.deletions.lock() else {
            return false;
        };
        let now = Instant::now();
        while deletions.front().is_some_and(|t| now.duration_since(*t) > DELETION_WINDOW) {
            deletions.pop_front();
        }
        if deletions.len() >= self.options.max_deletions_per_hour {
            return false;
        }
        deletions.push_back(now);
        true
    }

    fn known_version(&self, namespace: &str) -> Option<u64> {
        self.tracked.lock().ok().and_then(|t| t.get(namespace).and_then(|t| t.version))
    }

    /// `plan` as a full reconcile made it, checked under the namespace's lock: `None` when the
    /// event path already applied a newer record; planned again from a fresh observation when
    /// the event path acted on the namespace since the full observation.
    async fn still_current(
        &self,
        plan: NamespacePlan,
        record: Option<&NamespaceRecord>,
        acted_before: &HashMap<String, u64>,
    ) -> Option<NamespacePlan> {
        let Some(record) = record else {
            return Some(plan);
        };
        if self.known_version(&record.name).is_some_and(|v| v > record.resource_version) {
            return None;
        }
        let acted_now = self.tracked.lock().ok().and_then(|t| t.get(&record.name).map(|t| t.acted));
        if acted_now == acted_before.get(&record.name).copied() {
            return Some(plan);
        }
        match self.cluster.observe_namespace(&record.name).await {
            Ok(observed) => Some(plan_one(record, &observed, &self.options.settings)),
            Err(_) => Some(plan),
        }
    }

    async fn carry_out(&self, plan: &NamespacePlan) -> Done {
        let mut done = Done {
            outcome: plan.outcome,
            message: plan.message.clone(),
            object_version: plan.namespace_version.clone(),
            writes: 0,
        };
        for action in &plan.actions {
            let (kind, result) = match action {
                Action::Apply { object, current_version } => {
                    let result = self.cluster.apply(object, self.options.force_conflicts).await;
                    let label = match &result {
                        Ok(_) if current_version.is_none() => "created",
                        Ok(applied) if applied.resource_version == *current_version => "unchanged",
                        Ok(_) => "updated",
                        Err(e) => error_label(e),
                    };
                    self.metrics.action(object.kind, label);
                    if let Ok(applied) = &result
                        && object.kind == ObjectKind::Namespace
                    {
                        done.object_version = applied.resource_version.clone();
                    }
                    (object.describe(), result.map(|_| ()))
                }
                Action::Delete { kind: ObjectKind::Namespace, name, .. }
                    if !self.may_delete_namespace() =>
                {
                    self.metrics.action(ObjectKind::Namespace, "held");
                    done.outcome = ClusterOutcome::Failed;
                    done.message = Some(format!(
                        "deletion guard: {} namespaces were deleted in the last hour \
                         (agent.max-namespace-deletions-per-hour); namespace {name} is kept \
                         for now and deleted when the hour allows, or raise the limit",
                        self.options.max_deletions_per_hour
                    ));
                    warn!(namespace = %name, "namespace deletion held by the deletion guard");
                    break;
                }
                Action::Delete { kind, namespace, name } => {
                    let result = self.cluster.delete(*kind, namespace.as_deref(), name).await;
                    self.metrics.action(
                        *kind,
                        match &result {
                            Ok(true) => "deleted",
                            Ok(false) => "already_gone",
                            Err(e) => error_label(e),
                        },
                    );
                    let what = match namespace {
                        Some(ns) => format!("{} {ns}/{name}", kind.kind()),
                        None => format!("{} {name}", kind.kind()),
                    };
                    (what, result.map(|_| ()))
                }
            };
            done.writes += 1;
            if let Err(e) = result {
                done.outcome = match e {
                    ClusterError::FieldConflict(_) => ClusterOutcome::Conflict,
                    _ => ClusterOutcome::Failed,
                };
                done.message = Some(format!("{kind}: {e}"));
                self.metrics.errors.inc();
                warn!(namespace = %plan.namespace, error = %e, "{kind} failed");
                break;
            }
        }
        done
    }

    /// Publishes the report of `plan` when it is news for `record` (or, for an orphan, the
    /// first time this process sees it). `Ok(true)` when published; `Err` when it could not
    /// be (no NATS yet): it is news again next time.
    async fn report(
        &self,
        plan: &NamespacePlan,
        done: &Done,
        record: Option<&NamespaceRecord>,
    ) -> Result<bool, ()> {
        let report = ClusterReport {
            cluster: self.options.settings.cluster.clone(),
            environment: self.options.settings.environment.clone(),
            namespace: plan.namespace.clone(),
            team: plan.team.clone(),
            status: ClusterStatus {
                outcome: done.outcome,
                message: done.message.clone(),
                observed_version: plan.record_version,
                object_version: done.object_version.clone(),
                reported_at: Utc::now(),
            },
        };
        let news = match record {
            Some(record) => report.is_news_for(record),
            None => self
                .orphans_reported
                .lock()
                .map(|seen| !seen.contains(&plan.namespace))
                .unwrap_or(true),
        };
        if !news {
            return Ok(false);
        }
        let Some(js) = self.jetstream() else {
            return Err(());
        };
        let id = format!("{}-{}", self.options.settings.cluster, ulid::Ulid::new());
        let event = report.to_event(&id).map_err(|e| warn!(error = %e, "report not built"))?;
        match bus::publish_event(&js, &self.names, &event).await {
            Ok(_) => {
                self.metrics.reports.inc();
                if record.is_none()
                    && let Ok(mut seen) = self.orphans_reported.lock()
                {
                    seen.insert(plan.namespace.clone());
                }
                info!(
                    namespace = %plan.namespace,
                    outcome = %report.status.outcome,
                    message = report.status.message.as_deref().unwrap_or(""),
                    "reported"
                );
                Ok(true)
            }
            Err(e) => {
                warn!(namespace = %plan.namespace, error = %e, "report not published");
                Err(())
            }
        }
    }

    fn failed(&self, error: &str) {
        if let Ok(mut e) = self.last_error.write() {
            *e = Some(error.to_owned());
        }
    }
}

fn error_label(e: &ClusterError) -> &'static str {
    match e {
        ClusterError::FieldConflict(_) => "conflict",
        ClusterError::Forbidden(_) => "forbidden",
        ClusterError::Api { .. } => "error",
        ClusterError::Unreachable(_) => "unreachable",
    }
}

/// Full reconciles at start and every `interval` until `shutdown`. A failed reconcile, or one
/// that left reports unpublished or namespaces failed, is followed by another after 1 s,
/// doubling up to the interval.
pub async fn run_loop(reconciler: Arc<Reconciler>, shutdown: CancellationToken) {
    let interval = reconciler.options.interval;
    let mut retry = RETRY_INITIAL;
    loop {
        let wait = match reconciler.reconcile_all().await {
            Ok(summary) => {
                info!(
                    records = summary.records,
                    writes = summary.writes,
                    reports = summary.reports,
                    unreported = summary.unreported,
                    outcomes = ?summary.outcomes,
                    "full reconcile finished"
                );
                // Reports that could not be published (NATS not there yet) and namespaces that
                // failed are tried again soon, not at the next interval.
                if summary.unreported > 0 || summary.outcomes.contains_key("failed") {
                    let wait = retry;
                    retry = (retry * 2).min(interval);
                    wait
                } else {
                    retry = RETRY_INITIAL;
                    interval
                }
            }
            Err(e) => {
                reconciler.failed(&e);
                reconciler.metrics.errors.inc();
                warn!(error = %e, retry_in = ?retry, "full reconcile failed");
                let wait = retry;
                retry = (retry * 2).min(interval);
                wait
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
