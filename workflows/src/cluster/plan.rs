//! Planning: (desired records, observed objects) → actions, a pure function.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::objects::{AgentSettings, DesiredObject, ObjectKind, render};
use super::{
    ANNOTATION_APPLIED, LABEL_ENVIRONMENT, LABEL_MANAGED_BY, LABEL_TEAM, MANAGED_BY_VALUE,
};
use crate::records::{ClusterOutcome, NamespaceRecord, NamespaceState};

/// One object as the Kubernetes API returned it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedObject {
    pub kind: ObjectKind,
    /// `None` for a Namespace.
    pub namespace: Option<String>,
    pub name: String,
    /// The whole object as served (metadata, spec, status).
    pub body: Value,
}

impl ObservedObject {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.body["metadata"]["labels"].get(key).and_then(Value::as_str)
    }

    pub fn resource_version(&self) -> Option<&str> {
        self.body["metadata"]["resourceVersion"].as_str()
    }

    /// Being deleted: `deletionTimestamp` set, or (namespaces) phase `Terminating`.
    pub fn terminating(&self) -> bool {
        !self.body["metadata"]["deletionTimestamp"].is_null()
            || self.body["status"]["phase"] == "Terminating"
    }

    /// Carries `app.kubernetes.io/managed-by=muster`.
    pub fn is_managed(&self) -> bool {
        self.label(LABEL_MANAGED_BY) == Some(MANAGED_BY_VALUE)
    }

    fn applied_hash(&self) -> Option<&str> {
        self.body["metadata"]["annotations"].get(ANNOTATION_APPLIED).and_then(Value::as_str)
    }
}

/// What the agent saw in its cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Namespaces by name: every namespace of the cluster when `complete`, else the ones asked
    /// for (absent: it does not exist).
    pub namespaces: BTreeMap<String, ObservedObject>,
    /// Muster's objects (by its managed-by label) inside namespaces, by namespace.
    pub children: BTreeMap<String, Vec<ObservedObject>>,
    /// Every namespace of the cluster was listed, so a Muster namespace without a record can
    /// be told apart (orphans are only reported from a complete observation).
    pub complete: bool,
}

/// One change to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Server-side apply of the object (it is missing or not as desired).
    Apply {
        object: DesiredObject,
        /// The object's `resourceVersion` as observed (`None`: it does not exist), to tell
        /// an apply that changed nothing.
        current_version: Option<String>,
    },
    /// Delete a Muster object no longer wanted, or the namespace itself in a teardown.
    Delete { kind: ObjectKind, namespace: Option<String>, name: String },
}

impl Action {
    pub fn kind(&self) -> ObjectKind {
        match self {
            Action::Apply { object, .. } => object.kind,
            Action::Delete { kind, .. } => *kind,
        }
    }
}

/// What to do about one namespace, and what to report once it is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespacePlan {
    pub namespace: String,
    /// The team, from the record or (orphans) the namespace's label.
    pub team: Option<String>,
    /// The record's resource version; `None` for an orphan.
    pub record_version: Option<u64>,
    /// The namespace's `resourceVersion` as observed, if it exists.
    pub namespace_version: Option<String>,
    /// In order: the Namespace before its contents.
    pub actions: Vec<Action>,
    /// The outcome once every action succeeded.
    pub outcome: ClusterOutcome,
    pub message: Option<String>,
}

/// The plan for every record of the agent's environment, then one `orphaned` plan per Muster
/// namespace of this environment without a record (only from a complete observation).
pub fn plan_all(
    records: &[NamespaceRecord],
    observed: &Observed,
    settings: &AgentSettings,
) -> Vec<NamespacePlan> {
    let mine: Vec<&NamespaceRecord> =
        records.iter().filter(|r| r.spec.environment == settings.environment).collect();
    let mut plans: Vec<NamespacePlan> =
        mine.iter().map(|r| plan_one(r, observed, settings)).collect();
    if observed.complete {
        let named: BTreeSet<&str> = mine.iter().map(|r| r.name.as_str()).collect();
        for (name, ns) in &observed.namespaces {
            if ns.is_managed()
                && ns.label(LABEL_ENVIRONMENT) == Some(settings.environment.as_str())
                && !named.contains(name.as_str())
            {
                plans.push(NamespacePlan {
                    namespace: name.clone(),
                    team: ns.label(LABEL_TEAM).map(str::to_owned),
                    record_version: None,
                    namespace_version: ns.resource_version().map(str::to_owned),
                    actions: Vec::new(),
                    outcome: ClusterOutcome::Orphaned,
                    message: Some(
                        "Muster's namespace has no namespace record; it is left as it is".into(),
                    ),
                });
            }
        }
    }
    plans
}

/// The plan for one record, from what was observed of its namespace.
pub fn plan_one(
    record: &NamespaceRecord,
    observed: &Observed,
    settings: &AgentSettings,
) -> NamespacePlan {
    let name = record.name.as_str();
    let mut plan = NamespacePlan {
        namespace: name.to_owned(),
        team: Some(record.spec.team.clone()),
        record_version: Some(record.resource_version),
        namespace_version: None,
        actions: Vec::new(),
        outcome: ClusterOutcome::Applied,
        message: None,
    };
    let existing = observed.namespaces.get(name);
    plan.namespace_version = existing.and_then(|ns| ns.resource_version()).map(str::to_owned);
    let foreign = existing.and_then(|ns| not_musters(ns, record));
    let verdict = match (record.state, existing) {
        (NamespaceState::Active, Some(_)) if foreign.is_some() => {
            let why = foreign.unwrap_or_default();
            Some((
                ClusterOutcome::Conflict,
                format!("namespace {name} {why}; Muster leaves it alone"),
            ))
        }
        (NamespaceState::Active, Some(ns)) if ns.terminating() => Some((
            ClusterOutcome::Failed,
            format!("namespace {name} is terminating; it is created again once it is gone"),
        )),
        (NamespaceState::Active, _) => {
            plan.actions = apply_actions(record, existing, observed, settings);
            None
        }
        (NamespaceState::Deleting, None) => {
            Some((ClusterOutcome::Deleted, format!("namespace {name} does not exist")))
        }
        (NamespaceState::Deleting, Some(_)) if foreign.is_some() => {
            let why = foreign.unwrap_or_default();
            Some((ClusterOutcome::Retained, format!("namespace {name} {why}; it is not deleted")))
        }
        (NamespaceState::Deleting, Some(ns)) if ns.terminating() => {
            Some((ClusterOutcome::Deleted, format!("namespace {name} is terminating")))
        }
        (NamespaceState::Deleting, Some(_)) if !record.spec.allow_deletion => Some((
            ClusterOutcome::Retained,
            format!(
                "environment {} does not allow namespace deletion; namespace {name} is kept",
                record.spec.environment
            ),
        )),
        (NamespaceState::Deleting, Some(_)) => {
            plan.actions.push(Action::Delete {
                kind: ObjectKind::Namespace,
                namespace: None,
                name: name.to_owned(),
            });
            Some((ClusterOutcome::Deleted, format!("namespace {name} deleted")))
        }
    };
    if let Some((outcome, message)) = verdict {
        plan.outcome = outcome;
        plan.message = Some(message);
    }
    plan
}

/// The applies and deletes that make an `active` record's namespace match it.
fn apply_actions(
    record: &NamespaceRecord,
    existing: Option<&ObservedObject>,
    observed: &Observed,
    settings: &AgentSettings,
) -> Vec<Action> {
    let name = record.name.as_str();
    let children = observed.children.get(name).map(Vec::as_slice).unwrap_or_default();
    let desired = render(record, settings);
    let mut actions = Vec::new();
    for object in &desired {
        let current = match object.kind {
            ObjectKind::Namespace => existing,
            kind => children.iter().find(|c| c.kind == kind && c.name == object.name),
        };
        if !current.is_some_and(|c| up_to_date(object, c)) {
            actions.push(Action::Apply {
                object: object.clone(),
                current_version: current
                    .and_then(ObservedObject::resource_version)
                    .map(str::to_owned),
            });
        }
    }
    for child in children {
        let wanted = desired.iter().any(|d| d.kind == child.kind && d.name == child.name);
        if child.is_managed() && !wanted && !child.terminating() {
            actions.push(Action::Delete {
                kind: child.kind,
                namespace: Some(name.to_owned()),
                name: child.name.clone(),
            });
        }
    }
    actions
}

/// Why `ns` is not the namespace of `record` (`None`: it is Muster's, for this record).
fn not_musters(ns: &ObservedObject, record: &NamespaceRecord) -> Option<String> {
    if !ns.is_managed() {
        return Some(format!("exists without the label {LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"));
    }
    let team = ns.label(LABEL_TEAM).unwrap_or("");
    let environment = ns.label(LABEL_ENVIRONMENT).unwrap_or("");
    if team != record.spec.team || environment != record.spec.environment {
        return Some(format!(
            "is labelled for team {team:?} in environment {environment:?}, not team {:?} in {:?}",
            record.spec.team, record.spec.environment
        ));
    }
    None
}

/// Whether `current` already is as `desired`: the body Muster last applied is the one it
/// would apply now (so no field Muster owned has to go), and every field Muster sets has its
/// value (so nobody changed one).
fn up_to_date(desired: &DesiredObject, current: &ObservedObject) -> bool {
    current.applied_hash() == Some(desired.hash.as_str()) && contains(&current.body, &desired.body)
}

/// Whether `have` holds every field of `want` with an equal value (quantities by amount;
/// lists element by element, so fields the server defaults inside items are allowed).
fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => {
            w.iter().all(|(k, v)| h.get(k).is_some_and(|hv| contains(hv, v)))
        }
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(hv, wv)| contains(hv, wv))
        }
        (Value::String(h), Value::String(w)) => super::quantity::same(h, w),
        (h, w) => h == w,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cluster::objects::tests::{record, settings};

    /// What a cluster holds after applying `objects` as Muster (the server adds its fields).
    fn served(objects: &[DesiredObject]) -> Observed {
        let mut observed = Observed { complete: true, ..Observed::default() };
        for o in objects {
            let mut body = o.body.clone();
            body["metadata"]["resourceVersion"] = json!("7");
            body["metadata"]["uid"] = json!("u-1");
            let object = ObservedObject {
                kind: o.kind,
                namespace: o.namespace.clone(),
                name: o.name.clone(),
                body,
            };
            match &o.namespace {
                None => {
                    object_status(&mut observed, object);
                }
                Some(ns) => observed.children.entry(ns.clone()).or_default().push(object),
            }
        }
        observed
    }

    fn object_status(observed: &mut Observed, mut ns: ObservedObject) {
        ns.body["status"] = json!({ "phase": "Active" });
        ns.body["spec"] = json!({ "finalizers": ["kubernetes"] });
        observed.namespaces.insert(ns.name.clone(), ns);
    }

    fn foreign_namespace(name: &str, labels: Value) -> ObservedObject {
        ObservedObject {
            kind: ObjectKind::Namespace,
            namespace: None,
            name: name.into(),
            body: json!({ "metadata": { "name": name, "labels": labels } }),
        }
    }

    fn applied_names(plan: &NamespacePlan) -> Vec<String> {
        plan.actions
            .iter()
            .map(|a| match a {
                Action::Apply { object, .. } => format!("apply {}", object.describe()),
                Action::Delete { kind, name, .. } => format!("delete {} {name}", kind.kind()),
            })
            .collect()
    }

    #[test]
    fn an_empty_cluster_gets_every_object_namespace_first() {
        let plans = plan_all(&[record("payments")], &Observed::default(), &settings());
        assert_eq!(plans.len(), 1);
        let names = applied_names(&plans[0]);
        assert_eq!(names.len(), 6);
        assert_eq!(names[0], "apply Namespace payments-dev");
        assert_eq!(plans[0].outcome, ClusterOutcome::Applied);
    }

    #[test]
    fn a_converged_cluster_needs_nothing_even_with_server_fields_and_canonical_quantities() {
        let r = record("payments");
        let desired = render(&r, &settings());
        let mut observed = served(&desired);
        // The server wrote the quantity back in canonical form and defaulted a field.
        let quota = &mut observed.children.get_mut("payments-dev").unwrap()[0];
        quota.body["spec"]["hard"]["requests.cpu"] = json!("4000m");
        quota.body["status"] = json!({ "hard": { "requests.cpu": "4" } });
        let plan = plan_one(&r, &observed, &settings());
        assert!(plan.actions.is_empty(), "{:?}", applied_names(&plan));
        assert_eq!(plan.outcome, ClusterOutcome::Applied);
    }

    #[test]
    fn drift_and_changed_records_are_applied_again_in_place() {
        let r = record("payments");
        let mut observed = served(&render(&r, &settings()));
        // Someone edited the quota.
        observed.children.get_mut("payments-dev").unwrap()[0].body["spec"]["hard"]["requests.cpu"] =
            json!("64");
        let plan = plan_one(&r, &observed, &settings());
        assert_eq!(applied_names(&plan), ["apply ResourceQuota payments-dev/muster-quota"]);

        // A profile change: only the quota is re-applied, no delete and re-create.
        let mut bigger = record("payments");
        bigger.spec.quota.insert("requests.cpu".into(), "16".into());
        let plan = plan_one(&bigger, &served(&render(&r, &settings())), &settings());
        assert_eq!(applied_names(&plan), ["apply ResourceQuota payments-dev/muster-quota"]);

        // A label dropped from the team: the namespace's hash differs, so it is applied.
        let mut fewer = record("payments");
        fewer.spec.labels.clear();
        let plan = plan_one(&fewer, &served(&render(&r, &settings())), &settings());
        assert_eq!(applied_names(&plan), ["apply Namespace payments-dev"]);
    }

    #[test]
    fn foreign_labels_do_not_count_as_drift() {
        let r = record("payments");
        let mut observed = served(&render(&r, &settings()));
        let ns = observed.namespaces.get_mut("payments-dev").unwrap();
        ns.body["metadata"]["labels"]["argocd.argoproj.io/instance"] = json!("payments");
        ns.body["metadata"]["annotations"]["owner"] = json!("someone");
        assert!(plan_one(&r, &observed, &settings()).actions.is_empty());
    }

    #[test]
    fn objects_no_longer_wanted_are_deleted_and_others_left_alone() {
        let r = record("payments");
        let mut observed = served(&render(&r, &settings()));
        let mut stranger = observed.children["payments-dev"][0].clone();
        stranger.name = "team-quota".into();
        stranger.body["metadata"]["labels"] = json!({ "owner": "team" });
        observed.children.get_mut("payments-dev").unwrap().push(stranger);
        let mut less = record("payments");
        less.spec.network_policy = false;
        less.spec.quota.clear();
        let plan = plan_one(&less, &observed, &settings());
        assert_eq!(
            applied_names(&plan),
            ["delete ResourceQuota muster-quota", "delete NetworkPolicy muster-same-namespace"]
        );
    }

    #[test]
    fn an_unmanaged_namespace_of_the_same_name_is_a_conflict_and_untouched() {
        let mut observed = Observed::default();
        object_status(&mut observed, foreign_namespace("payments-dev", json!({ "owner": "x" })));
        let plan = plan_one(&record("payments"), &observed, &settings());
        assert_eq!(plan.outcome, ClusterOutcome::Conflict);
        assert!(plan.actions.is_empty());
        assert!(plan.message.unwrap().contains("without the label"));

        let mut deleting = record("payments");
        deleting.state = NamespaceState::Deleting;
        let plan = plan_one(&deleting, &observed, &settings());
        assert_eq!(plan.outcome, ClusterOutcome::Retained);
        assert!(plan.actions.is_empty(), "never deleted");
    }

    #[test]
    fn another_teams_namespace_is_not_ours_either() {
        let mut observed = Observed::default();
        let labels = json!({
            LABEL_MANAGED_BY: "muster", LABEL_TEAM: "payments", LABEL_ENVIRONMENT: "prod"
        });
        object_status(&mut observed, foreign_namespace("payments-dev", labels));
        let plan = plan_one(&record("payments"), &observed, &settings());
        assert_eq!(plan.outcome, ClusterOutcome::Conflict);
    }

    #[test]
    fn deletion_needs_the_label_the_state_and_the_permission() {
        let live = record("payments");
        let observed = served(&render(&live, &settings()));
        let mut deleting = live.clone();
        deleting.state = NamespaceState::Deleting;

        let plan = plan_one(&deleting, &observed, &settings());
        assert_eq!(applied_names(&plan), ["delete Namespace payments-dev"]);
        assert_eq!(plan.outcome, ClusterOutcome::Deleted);

        deleting.spec.allow_deletion = false;
        let plan = plan_one(&deleting, &observed, &settings());
        assert!(plan.actions.is_empty());
        assert_eq!(plan.outcome, ClusterOutcome::Retained);
        assert!(plan.message.unwrap().contains("does not allow"));

        let plan = plan_one(&deleting, &Observed::default(), &settings());
        assert_eq!(plan.outcome, ClusterOutcome::Deleted, "already gone");
        assert!(plan.actions.is_empty());

        let mut terminating = observed.clone();
        terminating.namespaces.get_mut("payments-dev").unwrap().body["status"]["phase"] =
            json!("Terminating");
        deleting.spec.allow_deletion = true;
        let plan = plan_one(&deleting, &terminating, &settings());
        assert!(plan.actions.is_empty(), "no second delete");
        assert_eq!(plan.outcome, ClusterOutcome::Deleted);
        let plan = plan_one(&live, &terminating, &settings());
        assert_eq!(plan.outcome, ClusterOutcome::Failed, "not applied into a terminating one");
        assert!(plan.actions.is_empty());
    }

    #[test]
    fn orphans_are_reported_only_from_a_complete_observation_and_never_deleted() {
        let mut observed = served(&render(&record("gone"), &settings()));
        let plans = plan_all(&[record("payments")], &observed, &settings());
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[1].namespace, "gone-dev");
        assert_eq!(plans[1].outcome, ClusterOutcome::Orphaned);
        assert_eq!(plans[1].team.as_deref(), Some("gone"));
        assert!(plans[1].actions.is_empty());
        observed.complete = false;
        assert_eq!(plan_all(&[record("payments")], &observed, &settings()).len(), 1);
    }

    #[test]
    fn records_of_other_environments_are_not_this_agents() {
        let mut other = record("payments");
        other.spec.environment = "prod".into();
        other.name = "payments-prod".into();
        assert!(plan_all(&[other], &Observed::default(), &settings()).is_empty());
    }
}
