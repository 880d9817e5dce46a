//! Namespace records: one per team × environment, read by the cluster agents.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::environment::Quantities;
use super::validation::{MAX_MAP_ENTRIES, MAX_MESSAGE_LEN, Problems, ValidationErrors};

/// The Kubernetes namespace name of `team` in `environment`: `<team>-<environment>`. The one
/// place the rule lives; [`NamespaceNames`](super::NamespaceNames) checks that a new pair's
/// name fits in a DNS-1123 label and is not another pair's.
pub fn namespace_name(team: &str, environment: &str) -> String {
    format!("{team}-{environment}")
}

/// A RoleBinding in the namespace: the team's group gets a (cluster) role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBinding {
    /// The group subject, e.g. the team's IdP group `payments` or `payments-maintainers`.
    pub group: String,
    /// The ClusterRole bound, e.g. `edit` or `admin`.
    pub role: String,
}

/// What `sync_team` wants for one team in one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    pub team: String,
    pub environment: String,
    /// ResourceQuota `hard`.
    #[serde(default)]
    pub quota: Quantities,
    /// LimitRange default container limits.
    #[serde(default)]
    pub limits: Quantities,
    #[serde(default)]
    pub role_bindings: Vec<RoleBinding>,
    /// The team's quota profile the quota and limits were taken from (`None`: the
    /// environment's defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_profile: Option<String>,
    /// The team's labels, carried onto the namespace (Muster's own labels win on a clash).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The environment's clusters when the record was last synced: the agents expected to
    /// report on it.
    #[serde(default)]
    pub target_clusters: Vec<String>,
    /// The environment's `allow_namespace_deletion` when the record was last synced.
    #[serde(default)]
    pub allow_deletion: bool,
    /// The environment's `network_policy`: the namespace gets Muster's default NetworkPolicy.
    #[serde(default)]
    pub network_policy: bool,
}

impl NamespaceSpec {
    /// The Kubernetes namespace name: [`namespace_name`], `<team>-<env>`.
    pub fn namespace_name(&self) -> String {
        namespace_name(&self.team, &self.environment)
    }

    /// Checks every field, including that the derived namespace name is itself a DNS-1123
    /// label of at most 63 characters.
    ///
    /// # Errors
    /// [`ValidationErrors`] listing each bad field with its path.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut p = Problems::default();
        p.dns_label("team", &self.team);
        p.dns_label("environment", &self.environment);
        p.dns_label("name", &self.namespace_name());
        p.quantities("quota", &self.quota);
        p.quantities("limits", &self.limits);
        p.labels("labels", &self.labels);
        if let Some(profile) = &self.quota_profile {
            p.dns_label("quota_profile", profile);
        }
        if self.target_clusters.len() > MAX_MAP_ENTRIES {
            p.push("target_clusters", format!("at most {MAX_MAP_ENTRIES} clusters allowed"));
        }
        for (i, cluster) in self.target_clusters.iter().enumerate() {
            p.dns_label(&format!("target_clusters[{i}]"), cluster);
        }
        if self.role_bindings.len() > MAX_MAP_ENTRIES {
            p.push("role_bindings", format!("at most {MAX_MAP_ENTRIES} role bindings allowed"));
        }
        for (i, binding) in self.role_bindings.iter().enumerate() {
            // Group names come from identity providers and are free-form; roles are RBAC
            // object names, which may not contain `/` or `%`.
            p.text(&format!("role_bindings[{i}].group"), &binding.group, 253, true);
            p.text(&format!("role_bindings[{i}].role"), &binding.role, 253, true);
            if binding.role.contains(['/', '%']) {
                p.push(
                    format!("role_bindings[{i}].role"),
                    format!("{:?} is not a valid role name", binding.role),
                );
            }
        }
        p.finish()
    }
}

/// Lifecycle of a namespace record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceState {
    /// The namespace should exist as specified.
    Active,
    /// The namespace should go (team deleted or environment removed); agents delete it only
    /// where the environment allows it, and report it retained otherwise.
    Deleting,
}

impl NamespaceState {
    pub fn as_str(self) -> &'static str {
        match self {
            NamespaceState::Active => "active",
            NamespaceState::Deleting => "deleting",
        }
    }
}

impl fmt::Display for NamespaceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an agent did with the namespace in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterOutcome {
    /// The namespace and its objects match the record.
    Applied,
    /// The record is `deleting` and the namespace is gone (or going: Terminating).
    Deleted,
    /// Marked `deleting` but kept (deletion not allowed, or the namespace is not Muster's).
    Retained,
    /// A namespace with Muster's label and no record: reported, never deleted.
    Orphaned,
    /// A namespace of that name that Muster does not manage, or a field another manager owns:
    /// reported, never adopted or forced.
    Conflict,
    /// The agent could not act; the message says why. Retried on the next reconcile.
    Failed,
}

impl ClusterOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterOutcome::Applied => "applied",
            ClusterOutcome::Deleted => "deleted",
            ClusterOutcome::Retained => "retained",
            ClusterOutcome::Orphaned => "orphaned",
            ClusterOutcome::Conflict => "conflict",
            ClusterOutcome::Failed => "failed",
        }
    }

    /// Whether a teardown may count this cluster as done with the namespace.
    pub fn ends_teardown(self) -> bool {
        matches!(self, ClusterOutcome::Deleted | ClusterOutcome::Retained)
    }
}

impl fmt::Display for ClusterOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last report of one cluster's agent about one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterStatus {
    pub outcome: ClusterOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The record's resource version the agent acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_version: Option<u64>,
    /// The Kubernetes `resourceVersion` of the namespace the agent observed after acting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_version: Option<String>,
    pub reported_at: DateTime<Utc>,
}

impl ClusterStatus {
    /// # Errors
    /// [`ValidationErrors`] when the cluster name is not a DNS-1123 label or the message is
    /// too long.
    pub fn validate(&self, cluster: &str) -> Result<(), ValidationErrors> {
        let mut p = Problems::default();
        p.dns_label("cluster", cluster);
        if let Some(message) = &self.message {
            p.text("message", message, MAX_MESSAGE_LEN, false);
        }
        p.finish()
    }
}

/// A stored namespace record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    #[serde(flatten)]
    pub spec: NamespaceSpec,
    /// `<team>-<env>`, unique across all records.
    pub name: String,
    pub state: NamespaceState,
    /// Cluster name → its agent's last report.
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterStatus>,
    /// Starts at 1 and grows by one with every change.
    pub resource_version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl NamespaceRecord {
    /// A new `active` record at resource version 1.
    pub fn new(spec: NamespaceSpec, now: DateTime<Utc>) -> Self {
        NamespaceRecord {
            name: spec.namespace_name(),
            spec,
            state: NamespaceState::Active,
            clusters: BTreeMap::new(),
            resource_version: 1,
            created_at: now,
            updated_at: now,
        }
    }

    /// The record after an upsert with `spec`: `active` again, cluster reports kept. `None`
    /// when nothing would change, so that an idempotent upsert does not bump the version and
    /// agents polling with an ETag see no change.
    pub fn upserted(&self, spec: NamespaceSpec, now: DateTime<Utc>) -> Option<Self> {
        if spec == self.spec && self.state == NamespaceState::Active {
            return None;
        }
        Some(NamespaceRecord { spec, state: NamespaceState::Active, ..self.bumped(now) })
    }

    /// The record in `state`; `None` when it already is.
    pub fn with_state(&self, state: NamespaceState, now: DateTime<Utc>) -> Option<Self> {
        (self.state != state).then(|| NamespaceRecord { state, ..self.bumped(now) })
    }

    /// The record with `cluster`'s report replaced by `status`. A report is status, not spec:
    /// the resource version and `updated_at` stay.
    pub fn with_cluster_status(&self, cluster: &str, status: ClusterStatus) -> Self {
        let mut next = self.clone();
        next.clusters.insert(cluster.to_owned(), status);
        next
    }

    /// The clusters expected to report ([`NamespaceSpec::target_clusters`]) that have not.
    pub fn never_reported(&self) -> Vec<String> {
        self.spec
            .target_clusters
            .iter()
            .filter(|c| !self.clusters.contains_key(*c))
            .cloned()
            .collect()
    }

    fn bumped(&self, now: DateTime<Utc>) -> Self {
        NamespaceRecord {
            resource_version: self.resource_version + 1,
            updated_at: now,
            ..self.clone()
        }
    }
}

/// Which namespace records to list; `None` matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceFilter {
    pub environment: Option<String>,
    pub team: Option<String>,
    pub state: Option<NamespaceState>,
}

impl NamespaceFilter {
    pub fn matches(&self, record: &NamespaceRecord) -> bool {
        self.environment.as_deref().is_none_or(|e| e == record.spec.environment)
            && self.team.as_deref().is_none_or(|t| t == record.spec.team)
            && self.state.is_none_or(|s| s == record.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(team: &str, env: &str) -> NamespaceSpec {
        NamespaceSpec {
            team: team.into(),
            environment: env.into(),
            quota: Quantities::from([("requests.cpu".into(), "2".into())]),
            limits: Quantities::new(),
            role_bindings: vec![RoleBinding { group: team.into(), role: "edit".into() }],
            quota_profile: None,
            labels: BTreeMap::new(),
            target_clusters: vec!["dev-1".into()],
            allow_deletion: false,
            network_policy: false,
        }
    }

    #[test]
    fn name_is_team_dash_environment() {
        let s = spec("payments", "dev");
        assert_eq!(s.namespace_name(), "payments-dev");
        s.validate().unwrap();
    }

    #[test]
    fn a_derived_name_longer_than_a_label_is_refused() {
        let s = spec(&"t".repeat(60), "prod");
        let err = s.validate().unwrap_err();
        assert_eq!(err.errors().len(), 1);
        assert_eq!(err.errors()[0].path, "name");
    }

    #[test]
    fn bad_quantities_and_role_bindings_are_listed() {
        let mut s = spec("payments", "dev");
        s.limits.insert("memory".into(), "1GB".into());
        s.role_bindings.push(RoleBinding { group: "".into(), role: "a/b".into() });
        let err = s.validate().unwrap_err();
        let paths: Vec<_> = err.errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["limits[\"memory\"]", "role_bindings[1].group", "role_bindings[1].role"]
        );
    }

    #[test]
    fn idempotent_upserts_and_state_changes_do_not_bump() {
        let now = Utc::now();
        let record = NamespaceRecord::new(spec("a", "dev"), now);
        assert!(record.upserted(spec("a", "dev"), now).is_none());
        let deleting = record.with_state(NamespaceState::Deleting, now).unwrap();
        assert_eq!(deleting.resource_version, 2);
        assert!(deleting.with_state(NamespaceState::Deleting, now).is_none());
        let revived = deleting.upserted(spec("a", "dev"), now).unwrap();
        assert_eq!(revived.state, NamespaceState::Active);
        assert_eq!(revived.resource_version, 3);
    }

    #[test]
    fn filter_matches_each_field() {
        let record = NamespaceRecord::new(spec("a", "dev"), Utc::now());
        assert!(NamespaceFilter::default().matches(&record));
        let f = NamespaceFilter {
            environment: Some("dev".into()),
            team: Some("a".into()),
            state: Some(NamespaceState::Active),
        };
        assert!(f.matches(&record));
        assert!(!NamespaceFilter { state: Some(NamespaceState::Deleting), ..f }.matches(&record));
    }
}
