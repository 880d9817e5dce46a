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
    /// Named alternatives to the defaults that a team picks with its `quota_profile`: each
    /// key of the profile's `quota` and `limits` overrides the default of the same key.
    #[serde(default)]
    pub quota_profiles: BTreeMap<String, QuotaProfile>,
    /// Whether every team namespace here gets Muster's default NetworkPolicy, which admits
    /// ingress only from pods of the same namespace.
    #[serde(default)]
    pub network_policy: bool,
}

/// A named quota profile of an environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaProfile {
    /// ResourceQuota `hard` entries overriding the environment's `default_quota`.
    #[serde(default)]
    pub quota: Quantities,
    /// LimitRange default container limits overriding the environment's `default_limits`.
    #[serde(default)]
    pub limits: Quantities,
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
            quota_profiles: BTreeMap::new(),
            network_policy: false,
        }
    }

    /// The ResourceQuota `hard` and LimitRange defaults for a team that picks `profile`: the
    /// defaults with the profile's entries on top. The second value is `false` when the
    /// profile is named but not defined here (the defaults apply alone).
    pub fn quotas_for(&self, profile: Option<&str>) -> (Quantities, Quantities, bool) {
        let mut quota = self.default_quota.clone();
        let mut limits = self.default_limits.clone();
        let Some(name) = profile else {
            return (quota, limits, true);
        };
        match self.quota_profiles.get(name) {
            Some(p) => {
                quota.extend(p.quota.clone());
                limits.extend(p.limits.clone());
                (quota, limits, true)
            }
            None => (quota, limits, false),
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
        if self.quota_profiles.len() > MAX_MAP_ENTRIES {
            p.push("quota_profiles", format!("at most {MAX_MAP_ENTRIES} profiles allowed"));
        }
        for (name, profile) in &self.quota_profiles {
            let path = format!("quota_profiles[{name:?}]");
            p.dns_label(&path, name);
            p.quantities(&format!("{path}.quota"), &profile.quota);
            p.quantities(&format!("{path}.limits"), &profile.limits);
        }
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
    fn a_profile_overrides_the_defaults_key_by_key() {
        let mut spec = EnvironmentSpec::named("dev");
        spec.default_quota.insert("requests.cpu".into(), "4".into());
        spec.default_quota.insert("limits.memory".into(), "8Gi".into());
        spec.default_limits.insert("cpu".into(), "500m".into());
        let large = QuotaProfile {
            quota: Quantities::from([("requests.cpu".into(), "16".into())]),
            limits: Quantities::new(),
        };
        spec.quota_profiles.insert("large".into(), large);
        spec.validate().unwrap();
        let (quota, limits, known) = spec.quotas_for(Some("large"));
        assert!(known);
        assert_eq!(quota["requests.cpu"], "16");
        assert_eq!(quota["limits.memory"], "8Gi");
        assert_eq!(limits, spec.default_limits);
        let (quota, _, known) = spec.quotas_for(Some("huge"));
        assert!(!known);
        assert_eq!(quota, spec.default_quota);
        assert_eq!(spec.quotas_for(None).0, spec.default_quota);
    }

    #[test]
    fn profiles_are_validated() {
        let mut spec = EnvironmentSpec::named("dev");
        let bad = QuotaProfile {
            quota: Quantities::from([("requests.cpu".into(), "lots".into())]),
            limits: Quantities::new(),
        };
        spec.quota_profiles.insert("Big".into(), bad);
        let err = spec.validate().unwrap_err();
        let paths: Vec<_> = err.errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["quota_profiles[\"Big\"]", "quota_profiles[\"Big\"].quota[\"requests.cpu\"]"]
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<EnvironmentSpec>(r#"{"name":"dev","quota":{}}"#).is_err());
    }
}
