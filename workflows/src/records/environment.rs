//! Environments (the "master records"): dev, test, prod… and what every team gets in them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::validation::{MAX_MAP_ENTRIES, Problems, ValidationErrors};

/// Kubernetes resource name → quantity, e.g. `requests.cpu` → `"4"`, `limits.memory` → `"8Gi"`.
pub type Quantities = BTreeMap<String, String>;

/// What a client says about an environment. Only `name` is required: an environment without
/// clusters, quota or limits is valid (namespaces get no quota until one is set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSpec {
    /// The environment's key, a DNS-1123 label; it suffixes namespace names (`<team>-<env>`).
    pub name: String,
    /// Names of the clusters (DNS-1123 labels) whose agents reconcile this environment.
    #[serde(default)]
    pub clusters: Vec<String>,
    /// ResourceQuota `hard` for every team namespace here.
    #[serde(default)]
    pub default_quota: Quantities,
    /// LimitRange default container limits for every team namespace here.
    #[serde(default)]
    pub default_limits: Quantities,
    /// Whether agents may delete a namespace whose record is `deleting`. Defaults to `false`
    /// for every environment, prod or not: deleting a namespace destroys workloads and data,
    /// so it is opted into per environment, never inferred from a name.
    #[serde(default)]
    pub allow_namespace_deletion: bool,
}

impl EnvironmentSpec {
    /// An environment with only a name and every default.
    pub fn named(name: impl Into<String>) -> Self {
        EnvironmentSpec {
            name: name.into(),
            clusters: Vec::new(),
            default_quota: Quantities::new(),
            default_limits: Quantities::new(),
            allow_namespace_deletion: false,
        }
    }

    /// Checks every field and reports every problem at once.
    ///
    /// # Errors
    /// [`ValidationErrors`] listing each bad field with its path, e.g.
    /// `default_quota["cpu"]: "lots" is not a Kubernetes quantity`.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut p = Problems::default();
        p.dns_label("name", &self.name);
        if self.clusters.len() > MAX_MAP_ENTRIES {
            p.push(
                "clusters",
                format!(
                    "lists {} clusters, at most {MAX_MAP_ENTRIES} allowed",
                    self.clusters.len()
                ),
            );
        }
        for (i, cluster) in self.clusters.iter().enumerate() {
            let path = format!("clusters[{i}]");
            p.dns_label(&path, cluster);
            if self.clusters[..i].contains(cluster) {
                p.push(path, format!("{cluster:?} is listed twice"));
            }
        }
        p.quantities("default_quota", &self.default_quota);
        p.quantities("default_limits", &self.default_limits);
        p.finish()
    }
}

/// A stored environment: its spec plus what the store maintains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    #[serde(flatten)]
    pub spec: EnvironmentSpec,
    /// Starts at 1 and grows by one with every change; the HTTP ETag.
    pub resource_version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Environment {
    /// A new record at resource version 1.
    pub fn new(spec: EnvironmentSpec, now: DateTime<Utc>) -> Self {
        Environment { spec, resource_version: 1, created_at: now, updated_at: now }
    }

    /// The record after a full update with `spec`: next resource version.
    pub fn updated(&self, spec: EnvironmentSpec, now: DateTime<Utc>) -> Self {
        Environment {
            spec,
            resource_version: self.resource_version + 1,
            created_at: self.created_at,
            updated_at: now,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_with_only_a_name_is_valid_and_never_deletes() {
        let spec: EnvironmentSpec = serde_json::from_str(r#"{"name":"prod"}"#).unwrap();
        assert_eq!(spec, EnvironmentSpec::named("prod"));
        assert!(!spec.allow_namespace_deletion);
        spec.validate().unwrap();
    }

    #[test]
    fn quantities_clusters_and_name_are_checked() {
        let mut spec = EnvironmentSpec::named("Prod");
        spec.clusters = vec!["eu-1".into(), "eu-1".into(), "EU_2".into()];
        spec.default_quota.insert("requests.cpu".into(), "4".into());
        spec.default_quota.insert("limits.memory".into(), "lots".into());
        spec.default_limits.insert("memory".into(), "-1Gi".into());
        spec.default_limits.insert("cpu".into(), "500m".into());
        let err = spec.validate().unwrap_err();
        let paths: Vec<_> = err.errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "name",
                "clusters[1]",
                "clusters[2]",
                "default_quota[\"limits.memory\"]",
                "default_limits[\"memory\"]"
            ]
        );
        assert!(err.to_string().contains("\"lots\" is not a Kubernetes quantity"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<EnvironmentSpec>(r#"{"name":"dev","quota":{}}"#).is_err());
    }
}
