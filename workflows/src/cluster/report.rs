//! Agents' reports: the `muster.cluster.reported` event, when an agent sends one, and the
//! `record_cluster_report` workflow that stores it on the namespace record.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::publisher::Publisher;
use crate::records::{ClusterStatus, NamespaceRecord, NamespaceState, Records, RecordsError};
use crate::sync_team::TEAM_SYNC;
use crate::workflow::{RunContext, RunError, Workflow};

/// The event type of an agent's report; `subject` is the environment, so that a NATS account
/// can allow an agent to publish reports for its environment only.
pub const CLUSTER_REPORTED: &str = "muster.cluster.reported";

/// The data of `muster.cluster.reported`: what one agent found and did about one namespace,
/// and the status it asks the engine to store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterReport {
    pub cluster: String,
    pub environment: String,
    pub namespace: String,
    /// The record's team (for an orphan: the namespace's team label, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Outcome, message (why, for everything but a plain `applied`; the error for `failed`),
    /// the record's version acted on (`None` for an orphan), the namespace's Kubernetes
    /// `resourceVersion`, and the time.
    #[serde(flatten)]
    pub status: ClusterStatus,
}

impl ClusterReport {
    /// Whether the record does not yet show this report: no report from this cluster, or one
    /// with another outcome or message, or about an older version of the record. An agent
    /// publishes only those, so a converged cluster sends nothing.
    pub fn is_news_for(&self, record: &NamespaceRecord) -> bool {
        match record.clusters.get(&self.cluster) {
            None => true,
            Some(stored) => {
                stored.outcome != self.status.outcome
                    || stored.message != self.status.message
                    || stored.observed_version != self.status.observed_version
            }
        }
    }

    /// The CloudEvent, with `id` (unique per report) and source `/muster/agent/<cluster>`.
    ///
    /// # Errors
    /// The builder refused an attribute (an invalid id or source).
    pub fn to_event(&self, id: &str) -> Result<Event, String> {
        let data = serde_json::to_value(self).map_err(|e| e.to_string())?;
        EventBuilderV10::new()
            .id(id)
            .source(format!("/muster/agent/{}", self.cluster))
            .ty(CLUSTER_REPORTED)
            .subject(self.environment.clone())
            .time(self.status.reported_at)
            .data("application/json", data)
            .build()
            .map_err(|e| e.to_string())
    }
}

/// `record_cluster_report`: stores an agent's report on its namespace record (key: the
/// environment, so the reports of one environment are stored in order).
///
/// Steps:
/// 1. `record`: the report stored with [`Records::set_cluster_status`], unless the record is
///    gone (purged, or an orphan's report: nothing to store on), names another namespace, or
///    already holds a newer report from that cluster (reports can arrive out of order).
/// 2. `request-teardown`, only when the record is `deleting` and the report ends this
///    cluster's part of the teardown (`deleted` or `retained`): a `muster.team.sync` for the
///    team, so the teardown finishes now rather than at the next resync tick.
pub struct RecordClusterReport {
    records: Arc<dyn Records>,
    publisher: Arc<dyn Publisher>,
}

impl RecordClusterReport {
    pub fn new(records: Arc<dyn Records>, publisher: Arc<dyn Publisher>) -> Self {
        RecordClusterReport { records, publisher }
    }
}

/// Output of `record`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Recorded {
    /// Why nothing was stored, if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ignored: Option<String>,
    /// The record is `deleting` and this cluster is done with it.
    #[serde(default)]
    teardown_step: bool,
}

#[async_trait]
impl Workflow for RecordClusterReport {
    fn name(&self) -> &'static str {
        "record_cluster_report"
    }

    fn triggers(&self) -> &'static [&'static str] {
        &[CLUSTER_REPORTED]
    }

    fn key(&self, event: &Event) -> String {
        crate::event::default_key(event)
    }

    async fn run(&self, ctx: &mut RunContext, event: Event) -> Result<serde_json::Value, RunError> {
        let data = crate::event::data_json(&event).map_err(|e| {
            RunError::permanent(format!("{CLUSTER_REPORTED} data is not JSON: {e}"))
        })?;
        let report: ClusterReport = serde_json::from_value(data).map_err(|e| {
            RunError::permanent(format!("{CLUSTER_REPORTED} data is not a report: {e}"))
        })?;
        if event.subject() != Some(report.environment.as_str()) {
            return Err(RunError::permanent(format!(
                "{CLUSTER_REPORTED} subject {:?} is not the report's environment {:?}",
                event.subject(),
                report.environment
            )));
        }
        let recorded: Recorded = ctx.step("record", || self.record(&report)).await?;
        let mut output = json!({
            "cluster": report.cluster,
            "namespace": report.namespace,
            "outcome": report.status.outcome,
        });
        if let Some(why) = &recorded.ignored {
            output["ignored"] = json!(why);
        }
        if recorded.teardown_step
            && let Some(team) = &report.team
        {
            let id = format!("{}-teardown", ctx.run_id());
            let published = ctx
                .step("request-teardown", || async {
                    let event = EventBuilderV10::new()
                        .id(id.clone())
                        .source("/muster/record_cluster_report")
                        .ty(TEAM_SYNC)
                        .subject(team.clone())
                        .time(Utc::now())
                        .build()
                        .map_err(|e| RunError::permanent(format!("building {TEAM_SYNC}: {e}")))?;
                    self.publisher.publish(event).await
                })
                .await?;
            output["requested_sync"] = json!({ "id": id, "sequence": published.sequence });
        }
        Ok(output)
    }
}

impl RecordClusterReport {
    async fn record(&self, report: &ClusterReport) -> Result<Recorded, RunError> {
        let ignored = |why: String| Ok(Recorded { ignored: Some(why), teardown_step: false });
        let Some(team) = &report.team else {
            return ignored(format!(
                "namespace {} has no team: nothing to record",
                report.namespace
            ));
        };
        let record = match self.records.get_namespace(team, &report.environment).await {
            Ok(record) => record,
            Err(RecordsError::NotFound { .. }) => {
                return ignored(format!("no namespace record {}", report.namespace));
            }
            Err(e) => return Err(e.into()),
        };
        if record.name != report.namespace {
            return ignored(format!(
                "the record of team {team} in {} is {}, not {}",
                report.environment, record.name, report.namespace
            ));
        }
        if let Some(stored) = record.clusters.get(&report.cluster)
            && stored.reported_at > report.status.reported_at
        {
            return ignored(format!(
                "cluster {} already reported at {} (this report: {})",
                report.cluster, stored.reported_at, report.status.reported_at
            ));
        }
        self.records
            .set_cluster_status(team, &report.environment, &report.cluster, report.status.clone())
            .await?;
        Ok(Recorded {
            ignored: None,
            teardown_step: record.state == NamespaceState::Deleting
                && report.status.outcome.ends_teardown(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryJournal, MemoryPublisher, MemoryRecords};
    use crate::records::ClusterOutcome;
    use crate::records::{Actor, EnvironmentSpec, NamespaceSpec, TeamSpec};
    use chrono::DateTime;

    async fn fixture() -> (MemoryRecords, MemoryPublisher, RecordClusterReport) {
        let records = MemoryRecords::new();
        let publisher = MemoryPublisher::new();
        records.create_environment(EnvironmentSpec::named("dev"), &Actor::system()).await.unwrap();
        let team: TeamSpec = serde_json::from_str(r#"{"slug":"payments","name":"P"}"#).unwrap();
        records.create_team(team, &Actor::system()).await.unwrap();
        let spec = NamespaceSpec {
            target_clusters: vec!["dev-1".into()],
            ..crate::cluster::objects::tests::record("payments").spec
        };
        records.upsert_namespace(spec).await.unwrap();
        let workflow =
            RecordClusterReport::new(Arc::new(records.clone()), Arc::new(publisher.clone()));
        (records, publisher, workflow)
    }

    fn report(outcome: ClusterOutcome, at: DateTime<Utc>) -> ClusterReport {
        ClusterReport {
            cluster: "dev-1".into(),
            environment: "dev".into(),
            namespace: "payments-dev".into(),
            team: Some("payments".into()),
            status: ClusterStatus {
                outcome,
                message: None,
                observed_version: Some(1),
                object_version: Some("12".into()),
                reported_at: at,
            },
        }
    }

    async fn run(w: &RecordClusterReport, id: &str, r: &ClusterReport) -> serde_json::Value {
        let mut ctx = RunContext::new(id, 1, Box::new(MemoryJournal::new()));
        w.run(&mut ctx, r.to_event(id).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn a_report_is_stored_as_status_and_a_finished_teardown_asks_for_a_sync() {
        let (records, publisher, w) = fixture().await;
        let now = Utc::now();
        run(&w, "r-1", &report(ClusterOutcome::Applied, now)).await;
        let record = records.get_namespace("payments", "dev").await.unwrap();
        assert_eq!(record.clusters["dev-1"].outcome, ClusterOutcome::Applied);
        assert_eq!(record.clusters["dev-1"].object_version.as_deref(), Some("12"));
        assert_eq!(record.resource_version, 1, "status, not spec");
        assert!(record.never_reported().is_empty());
        assert!(!report(ClusterOutcome::Applied, now).is_news_for(&record));
        assert!(report(ClusterOutcome::Failed, now).is_news_for(&record));
        assert!(publisher.events().is_empty(), "a live record needs no sync");

        records.set_namespace_state("payments", "dev", NamespaceState::Deleting).await.unwrap();
        let later = now + chrono::Duration::seconds(1);
        let output = run(&w, "r-2", &report(ClusterOutcome::Deleted, later)).await;
        assert_eq!(publisher.events().len(), 1);
        assert_eq!(publisher.events()[0].ty(), TEAM_SYNC);
        assert_eq!(publisher.events()[0].subject(), Some("payments"));
        assert_eq!(output["requested_sync"]["id"], "r-2-teardown");
    }

    #[tokio::test]
    async fn stale_orphan_and_unknown_reports_are_ignored() {
        let (records, _, w) = fixture().await;
        let now = Utc::now();
        run(&w, "r-1", &report(ClusterOutcome::Applied, now)).await;
        let older = report(ClusterOutcome::Failed, now - chrono::Duration::seconds(5));
        let output = run(&w, "r-2", &older).await;
        assert!(output["ignored"].as_str().unwrap().contains("already reported"));
        let record = records.get_namespace("payments", "dev").await.unwrap();
        assert_eq!(record.clusters["dev-1"].outcome, ClusterOutcome::Applied);

        let orphan = ClusterReport { team: None, ..report(ClusterOutcome::Orphaned, now) };
        assert!(run(&w, "r-3", &orphan).await["ignored"].is_string());
        let unknown =
            ClusterReport { team: Some("nobody".into()), ..report(ClusterOutcome::Applied, now) };
        assert!(run(&w, "r-4", &unknown).await["ignored"].is_string());
    }

    #[tokio::test]
    async fn a_report_on_the_wrong_subject_fails_permanently() {
        let (_, _, w) = fixture().await;
        let r = report(ClusterOutcome::Applied, Utc::now());
        let mut event = r.to_event("x").unwrap();
        cloudevents::AttributesWriter::set_subject(&mut event, Some("prod"));
        let mut ctx = RunContext::new("x", 1, Box::new(MemoryJournal::new()));
        let err = w.run(&mut ctx, event).await.unwrap_err();
        assert!(!err.is_retryable());
    }
}
