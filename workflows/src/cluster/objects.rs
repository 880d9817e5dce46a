//! The objects Muster owns for one namespace record, as server-side apply bodies.
//!
//! Each body carries only the fields Muster manages (apply makes the applier own every field it
//! sends, so a default sent along would be owned and fought over), plus `apiVersion`, `kind`
//! and `metadata.name` which apply requires.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{
    ANNOTATION_APPLIED, LABEL_ENVIRONMENT, LABEL_MANAGED_BY, LABEL_TEAM, MANAGED_BY_VALUE,
};
use crate::records::NamespaceRecord;

/// Name of the ResourceQuota Muster manages in a team namespace.
pub const QUOTA_NAME: &str = "muster-quota";
/// Name of the LimitRange.
pub const LIMITS_NAME: &str = "muster-limits";
/// Name of the default NetworkPolicy.
pub const NETWORK_POLICY_NAME: &str = "muster-same-namespace";
/// RoleBindings are named `muster-<cluster role>`: one per role, its subjects every group
/// bound to that role. A RoleBinding's `roleRef` cannot change, and with the role in the name
/// it never has to.
pub const ROLE_BINDING_PREFIX: &str = "muster-";

/// The kinds of object the agent manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Namespace,
    ResourceQuota,
    LimitRange,
    RoleBinding,
    NetworkPolicy,
}

impl ObjectKind {
    /// The kinds that live inside a namespace.
    pub const CHILDREN: [ObjectKind; 4] = [
        ObjectKind::ResourceQuota,
        ObjectKind::LimitRange,
        ObjectKind::RoleBinding,
        ObjectKind::NetworkPolicy,
    ];

    pub fn api_version(self) -> &'static str {
        match self {
            ObjectKind::Namespace | ObjectKind::ResourceQuota | ObjectKind::LimitRange => "v1",
            ObjectKind::RoleBinding => "rbac.authorization.k8s.io/v1",
            ObjectKind::NetworkPolicy => "networking.k8s.io/v1",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            ObjectKind::Namespace => "Namespace",
            ObjectKind::ResourceQuota => "ResourceQuota",
            ObjectKind::LimitRange => "LimitRange",
            ObjectKind::RoleBinding => "RoleBinding",
            ObjectKind::NetworkPolicy => "NetworkPolicy",
        }
    }

    /// The resource's plural, as in URLs and metrics.
    pub fn plural(self) -> &'static str {
        match self {
            ObjectKind::Namespace => "namespaces",
            ObjectKind::ResourceQuota => "resourcequotas",
            ObjectKind::LimitRange => "limitranges",
            ObjectKind::RoleBinding => "rolebindings",
            ObjectKind::NetworkPolicy => "networkpolicies",
        }
    }
}

/// What one agent adds to the records: its cluster's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// The environment whose records this agent applies.
    pub environment: String,
    /// This cluster's name, as listed in the environment (and in reports).
    pub cluster: String,
    /// Put in front of every group in RoleBinding subjects: clusters whose API server maps
    /// OIDC groups with `--oidc-groups-prefix` need it (e.g. `oidc:`).
    pub group_prefix: String,
}

/// One object as Muster wants it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredObject {
    pub kind: ObjectKind,
    /// `None` for the Namespace itself.
    pub namespace: Option<String>,
    pub name: String,
    /// The apply body, with [`ANNOTATION_APPLIED`] set to [`DesiredObject::hash`].
    pub body: Value,
    /// Hash of the body without the annotation.
    pub hash: String,
}

impl DesiredObject {
    fn new(kind: ObjectKind, namespace: Option<&str>, name: &str, mut body: Value) -> Self {
        let hash = hex::encode(&Sha256::digest(body.to_string().as_bytes())[..12]);
        body["metadata"]["annotations"] = json!({ ANNOTATION_APPLIED: hash });
        DesiredObject {
            kind,
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
            body,
            hash,
        }
    }

    /// `kind namespace/name`, for messages.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind.kind(), self.name),
            None => format!("{} {}", self.kind.kind(), self.name),
        }
    }
}

/// Muster's labels on every object of `record`'s namespace.
pub fn managed_labels(record: &NamespaceRecord) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (LABEL_TEAM.to_owned(), record.spec.team.clone()),
        (LABEL_ENVIRONMENT.to_owned(), record.spec.environment.clone()),
    ])
}

/// The objects of an `active` record, the Namespace first: the Namespace with the team's
/// labels and Muster's (Muster's win), a ResourceQuota when the record has a quota, a
/// LimitRange when it has limits, one RoleBinding per bound ClusterRole, and the default
/// NetworkPolicy when the record asks for it.
pub fn render(record: &NamespaceRecord, settings: &AgentSettings) -> Vec<DesiredObject> {
    let ns = record.name.as_str();
    let managed = managed_labels(record);
    let mut labels = record.spec.labels.clone();
    labels.extend(managed.clone());
    let meta = |name: &str, labels: &BTreeMap<String, String>| -> Value {
        json!({ "name": name, "namespace": ns, "labels": labels })
    };
    let mut out = vec![DesiredObject::new(
        ObjectKind::Namespace,
        None,
        ns,
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": ns, "labels": labels },
        }),
    )];
    if !record.spec.quota.is_empty() {
        out.push(DesiredObject::new(
            ObjectKind::ResourceQuota,
            Some(ns),
            QUOTA_NAME,
            json!({
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": meta(QUOTA_NAME, &managed),
                "spec": { "hard": record.spec.quota },
            }),
        ));
    }
    if !record.spec.limits.is_empty() {
        out.push(DesiredObject::new(
            ObjectKind::LimitRange,
            Some(ns),
            LIMITS_NAME,
            json!({
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": meta(LIMITS_NAME, &managed),
                "spec": { "limits": [{ "type": "Container", "default": record.spec.limits }] },
            }),
        ));
    }
    let mut by_role: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for binding in &record.spec.role_bindings {
        by_role.entry(binding.role.as_str()).or_default().push(json!({
            "kind": "Group",
            "apiGroup": "rbac.authorization.k8s.io",
            "name": format!("{}{}", settings.group_prefix, binding.group),
        }));
    }
    for (role, subjects) in by_role {
        let name = format!("{ROLE_BINDING_PREFIX}{role}");
        out.push(DesiredObject::new(
            ObjectKind::RoleBinding,
            Some(ns),
            &name,
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": meta(&name, &managed),
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": subjects,
            }),
        ));
    }
    if record.spec.network_policy {
        out.push(DesiredObject::new(
            ObjectKind::NetworkPolicy,
            Some(ns),
            NETWORK_POLICY_NAME,
            json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": meta(NETWORK_POLICY_NAME, &managed),
                "spec": {
                    "podSelector": {},
                    "policyTypes": ["Ingress"],
                    "ingress": [{ "from": [{ "podSelector": {} }] }],
                },
            }),
        ));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::records::{NamespaceSpec, RoleBinding};
    use chrono::Utc;

    pub(crate) fn settings() -> AgentSettings {
        AgentSettings {
            environment: "dev".into(),
            cluster: "dev-1".into(),
            group_prefix: "oidc:".into(),
        }
    }

    pub(crate) fn record(team: &str) -> NamespaceRecord {
        NamespaceRecord::new(
            NamespaceSpec {
                team: team.into(),
                environment: "dev".into(),
                quota: [("requests.cpu".to_owned(), "4".to_owned())].into(),
                limits: [("memory".to_owned(), "1Gi".to_owned())].into(),
                role_bindings: vec![
                    RoleBinding { group: team.into(), role: "edit".into() },
                    RoleBinding { group: format!("{team}-maintainers"), role: "admin".into() },
                ],
                quota_profile: None,
                labels: [("cost-center".to_owned(), "42".to_owned())].into(),
                target_clusters: vec!["dev-1".into()],
                allow_deletion: true,
                network_policy: true,
            },
            Utc::now(),
        )
    }

    #[test]
    fn an_active_record_renders_every_object_with_only_musters_fields() {
        let objects = render(&record("payments"), &settings());
        let names: Vec<_> = objects.iter().map(DesiredObject::describe).collect();
        assert_eq!(
            names,
            [
                "Namespace payments-dev",
                "ResourceQuota payments-dev/muster-quota",
                "LimitRange payments-dev/muster-limits",
                "RoleBinding payments-dev/muster-admin",
                "RoleBinding payments-dev/muster-edit",
                "NetworkPolicy payments-dev/muster-same-namespace",
            ]
        );
        let ns = &objects[0].body;
        assert_eq!(ns["metadata"]["labels"]["app.kubernetes.io/managed-by"], "muster");
        assert_eq!(ns["metadata"]["labels"]["muster.dev/team"], "payments");
        assert_eq!(ns["metadata"]["labels"]["cost-center"], "42");
        assert_eq!(ns["metadata"]["annotations"][ANNOTATION_APPLIED], objects[0].hash.as_str());
        assert!(ns.get("spec").is_none(), "no defaults sent along");
        assert_eq!(objects[1].body["spec"]["hard"]["requests.cpu"], "4");
        assert_eq!(objects[2].body["spec"]["limits"][0]["default"]["memory"], "1Gi");
        let edit = &objects[4].body;
        assert_eq!(edit["roleRef"]["name"], "edit");
        assert_eq!(edit["subjects"][0]["name"], "oidc:payments");
        assert_eq!(objects[3].body["subjects"][0]["name"], "oidc:payments-maintainers");
    }

    #[test]
    fn muster_labels_win_over_the_teams_and_empty_parts_are_left_out() {
        let mut r = record("payments");
        r.spec.labels.insert(LABEL_TEAM.into(), "someone-else".into());
        r.spec.quota.clear();
        r.spec.limits.clear();
        r.spec.network_policy = false;
        let objects = render(&r, &settings());
        assert_eq!(objects[0].body["metadata"]["labels"][LABEL_TEAM], "payments");
        let kinds: Vec<_> = objects.iter().map(|o| o.kind).collect();
        assert_eq!(
            kinds,
            [ObjectKind::Namespace, ObjectKind::RoleBinding, ObjectKind::RoleBinding]
        );
    }

    #[test]
    fn the_hash_changes_with_the_body_only() {
        let a = render(&record("payments"), &settings());
        let b = render(&record("payments"), &settings());
        assert_eq!(a[1].hash, b[1].hash);
        let mut r = record("payments");
        r.spec.quota.insert("requests.memory".into(), "8Gi".into());
        assert_ne!(render(&r, &settings())[1].hash, a[1].hash);
    }
}
