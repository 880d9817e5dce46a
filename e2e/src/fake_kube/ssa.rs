//! Server-side apply: which fields each manager owns, and how an apply or an update merges into
//! the live object. Pure functions over JSON; the server wraps them with storage.
//!
//! The functions work on an object's *content*: the object without `apiVersion`, `kind`,
//! `metadata.name`, `metadata.namespace`, the server-set metadata and `status`, because
//! Kubernetes never puts those in a manager's field set.
//!
//! A field path is the list of keys from the root, e.g. `["spec", "hard", "cpu"]`. Maps are
//! granular: a manager owns each leaf it sets. Lists are atomic: a list is one leaf, owned whole
//! (the documented default for lists without `x-kubernetes-list-type`, and what RoleBinding's
//! `subjects` and NetworkPolicy's rules declare). An empty map is a leaf; `null` is not owned.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// Keys from the object's root to one field.
pub type FieldPath = Vec<String>;

/// The leaves a manager owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeSet<FieldPath>);

impl FieldSet {
    pub fn contains(&self, path: &[String]) -> bool {
        self.0.contains(path)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }

    pub fn paths(&self) -> impl Iterator<Item = &FieldPath> {
        self.0.iter()
    }

    /// This path, or a field below it, is in the set.
    fn covers(&self, path: &[String]) -> bool {
        self.0.range(path.to_vec()..).next().is_some_and(|p| p.starts_with(path))
    }

    /// The set in the `FieldsV1` wire form: `{"f:spec":{"f:hard":{"f:cpu":{}}}}`.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Map::new();
        for path in &self.0 {
            let mut node = &mut root;
            for key in path {
                let child = node.entry(format!("f:{key}")).or_insert_with(|| json!({}));
                node = child.as_object_mut().expect("fieldsV1 nodes are objects");
            }
        }
        Value::Object(root)
    }
}

impl FromIterator<FieldPath> for FieldSet {
    fn from_iter<I: IntoIterator<Item = FieldPath>>(iter: I) -> Self {
        FieldSet(iter.into_iter().collect())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedEntry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    /// RFC 3339, seconds.
    pub time: String,
    pub fields: FieldSet,
}

impl ManagedEntry {
    fn is(&self, manager: &str, operation: Operation) -> bool {
        self.manager == manager && self.operation == operation
    }

    /// How the API server names this manager in a conflict (apimachinery's `printManager`):
    /// an applier by name, an updater with the API version it wrote.
    pub fn identity(&self) -> String {
        match self.operation {
            Operation::Apply => format!("{:?}", self.manager),
            Operation::Update => format!("{:?} using {}", self.manager, self.api_version),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "manager": self.manager,
            "operation": self.operation.as_str(),
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.fields.to_fields_v1(),
        })
    }
}

/// Another manager owns a field the applier would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// [`ManagedEntry::identity`] of the owner.
    pub manager: String,
    pub path: FieldPath,
}

impl Conflict {
    /// The path as the API server prints it: `.spec.hard.cpu`.
    pub fn field(&self) -> String {
        self.path.iter().map(|k| format!(".{k}")).collect()
    }
}

/// The API server's message for a failed apply (apimachinery's `ConflictMessage`).
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager,
            only.field()
        );
    }
    let mut by_manager: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for c in conflicts {
        by_manager.entry(&c.manager).or_default().push(c.field());
    }
    let mut lines = Vec::new();
    for (manager, fields) in by_manager {
        lines.push(format!("conflicts with {manager}:"));
        lines.extend(fields.into_iter().map(|f| format!("- {f}")));
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}

/// The content and ownership after a write. The caller compares them with the live ones to
/// tell a change from a no-op.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub content: Value,
    pub managed: Vec<ManagedEntry>,
}

/// One server-side apply request.
#[derive(Debug, Clone, Copy)]
pub struct Apply<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    /// The applied configuration's content.
    pub config: &'a Value,
    pub force: bool,
    pub now: &'a str,
}

/// The fields a configuration sets: its leaves.
#[cfg(test)]
fn field_set(config: &Value) -> FieldSet {
    leaves(config).into_keys().collect()
}

/// Applies `request` to `live` (`{}` for a missing object) owned as `managed`.
///
/// The applier's values win where it sets them; fields it applied before and omits now are
/// removed unless another manager owns them; fields it never applied are left alone. Equal
/// values are shared. After a successful apply the applier owns exactly its configuration.
///
/// # Errors
/// The configuration changes fields other managers own and `force` is off. With `force`, the
/// applier takes those fields and they leave the other managers' sets.
pub fn apply(
    live: &Value,
    managed: &[ManagedEntry],
    request: &Apply<'_>,
) -> Result<Outcome, Vec<Conflict>> {
    let config = leaves(request.config);
    let applied: FieldSet = config.keys().cloned().collect();
    let mut others: Vec<ManagedEntry> =
        managed.iter().filter(|e| !e.is(request.manager, Operation::Apply)).cloned().collect();

    let mut conflicts = Vec::new();
    for (path, value) in &config {
        if get(live, path) == Some(*value) {
            continue;
        }
        for entry in others.iter().filter(|e| e.fields.contains(path)) {
            conflicts.push(Conflict { manager: entry.identity(), path: path.clone() });
        }
    }
    if !conflicts.is_empty() {
        if !request.force {
            conflicts.sort_by(|a, b| (&a.manager, &a.path).cmp(&(&b.manager, &b.path)));
            return Err(conflicts);
        }
        for entry in &mut others {
            entry.fields.0.retain(|p| !conflicts.iter().any(|c| &c.path == p));
        }
    }

    let mut content = live.clone();
    let previous = managed.iter().find(|e| e.is(request.manager, Operation::Apply));
    if let Some(previous) = previous {
        for path in previous.fields.paths().filter(|p| !applied.contains(p)) {
            let owned_elsewhere =
                applied.covers(path) || others.iter().any(|e| e.fields.covers(path));
            if !owned_elsewhere {
                remove(&mut content, path);
            }
        }
    }
    merge(&mut content, request.config);

    let mine = ManagedEntry {
        manager: request.manager.to_owned(),
        operation: Operation::Apply,
        api_version: request.api_version.to_owned(),
        time: request.now.to_owned(),
        fields: applied,
    };
    let mut entries: Vec<ManagedEntry> = Vec::with_capacity(managed.len() + 1);
    let mut placed = false;
    for entry in managed {
        if entry.is(request.manager, Operation::Apply) {
            entries.push(mine.clone());
            placed = true;
        } else if let Some(other) = others.iter().find(|o| o.is(&entry.manager, entry.operation)) {
            entries.push(other.clone());
        }
    }
    if !placed {
        entries.push(mine);
    }
    entries.retain(|e| !e.fields.is_empty());
    Ok(Outcome { content, managed: entries })
}

/// A non-apply write (create, replace, merge patch) by `manager` that turns `live` into `new`.
///
/// Updates never conflict. The writer takes every field whose value it set or changed; those
/// fields leave the other managers' sets, and fields the write removed leave every set.
pub fn update(
    live: &Value,
    managed: &[ManagedEntry],
    manager: &str,
    api_version: &str,
    new: &Value,
    now: &str,
) -> Outcome {
    let before = leaves(live);
    let after = leaves(new);
    let changed: BTreeSet<FieldPath> = after
        .iter()
        .filter(|(path, value)| before.get(*path) != Some(*value))
        .map(|(path, _)| path.clone())
        .collect();

    let mut entries: Vec<ManagedEntry> = Vec::with_capacity(managed.len() + 1);
    let mut placed = false;
    for entry in managed {
        let mut entry = entry.clone();
        entry.fields.0.retain(|p| after.contains_key(p));
        if entry.is(manager, Operation::Update) {
            entry.fields.0.extend(changed.iter().cloned());
            entry.api_version = api_version.to_owned();
            placed = true;
        } else {
            entry.fields.0.retain(|p| !changed.contains(p));
        }
        entries.push(entry);
    }
    if !placed {
        entries.push(ManagedEntry {
            manager: manager.to_owned(),
            operation: Operation::Update,
            api_version: api_version.to_owned(),
            time: now.to_owned(),
            fields: FieldSet(changed.clone()),
        });
    }
    if !changed.is_empty() {
        for entry in entries.iter_mut().filter(|e| e.is(manager, Operation::Update)) {
            entry.time = now.to_owned();
        }
    }
    entries.retain(|e| !e.fields.is_empty());
    Outcome { content: new.clone(), managed: entries }
}

/// Same managers with the same field sets (times aside).
pub fn same_ownership(a: &[ManagedEntry], b: &[ManagedEntry]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.manager == y.manager
                && x.operation == y.operation
                && x.api_version == y.api_version
                && x.fields == y.fields
        })
}

/// Every leaf of `value` and its value. Lists, scalars and empty maps are leaves; nulls are
/// skipped.
fn leaves(value: &Value) -> BTreeMap<FieldPath, &Value> {
    fn walk<'a>(v: &'a Value, path: &mut FieldPath, out: &mut BTreeMap<FieldPath, &'a Value>) {
        match v {
            Value::Null => {}
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    path.push(key.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ if path.is_empty() => {}
            _ => {
                out.insert(path.clone(), v);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

fn get<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// Removes the field at `path`, then the maps it leaves empty below the top level (a map
/// emptied this way is omitted, as Go's `omitempty` maps are; `spec: {}` itself stays).
fn remove(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let Some(Value::Object(parent)) = get_mut(value, parents) else { return };
    parent.remove(last);
    for depth in (2..=parents.len()).rev() {
        let (ancestor, key) = (&parents[..depth - 1], &parents[depth - 1]);
        let Some(Value::Object(map)) = get_mut(value, ancestor) else { return };
        if map.get(key).and_then(Value::as_object).is_some_and(Map::is_empty) {
            map.remove(key);
        } else {
            return;
        }
    }
}

fn get_mut<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, key| v.get_mut(key))
}

/// Deep-merges an applied configuration: maps merge key by key, anything else replaces, and
/// `null` removes the field.
fn merge(target: &mut Value, config: &Value) {
    let Value::Object(config) = config else {
        *target = config.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in config {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(_) => merge(target.entry(key.clone()).or_insert(Value::Null), value),
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:00:00Z";
    const LATER: &str = "2026-01-01T00:01:00Z";

    fn path(p: &str) -> FieldPath {
        p.split('.').map(str::to_owned).collect()
    }

    fn apply_as(
        live: &Value,
        managed: &[ManagedEntry],
        manager: &str,
        config: Value,
        force: bool,
    ) -> Result<Outcome, Vec<Conflict>> {
        let request = Apply { manager, api_version: "v1", config: &config, force, now: LATER };
        apply(live, managed, &request)
    }

    fn fields_of<'a>(outcome: &'a Outcome, manager: &str) -> Option<&'a FieldSet> {
        outcome.managed.iter().find(|e| e.manager == manager).map(|e| &e.fields)
    }

    #[test]
    fn maps_are_granular_and_lists_and_empty_maps_are_leaves() {
        let config = json!({
            "metadata": {"labels": {"team": "a", "env": "dev"}},
            "spec": {"hard": {"cpu": "2"}, "scopes": ["BestEffort"], "extra": {}},
            "gone": null,
        });
        let set = field_set(&config);
        let expected: FieldSet = [
            "metadata.labels.env",
            "metadata.labels.team",
            "spec.extra",
            "spec.hard.cpu",
            "spec.scopes",
        ]
        .into_iter()
        .map(path)
        .collect();
        assert_eq!(set, expected);
    }

    #[test]
    fn fields_v1_uses_the_f_prefixed_tree() {
        let set = field_set(
            &json!({"metadata": {"labels": {"team": "a"}}, "spec": {"hard": {"cpu": "1"}}}),
        );
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:metadata": {"f:labels": {"f:team": {}}}, "f:spec": {"f:hard": {"f:cpu": {}}}})
        );
    }

    #[test]
    fn first_apply_creates_the_content_and_one_apply_entry() {
        let config = json!({"metadata": {"labels": {"team": "a"}}});
        let out = apply_as(&json!({}), &[], "muster", config.clone(), false).expect("no conflict");
        assert_eq!(out.content, config);
        assert_eq!(out.managed.len(), 1);
        let entry = &out.managed[0];
        assert_eq!((entry.manager.as_str(), entry.operation), ("muster", Operation::Apply));
        assert_eq!(entry.time, LATER);
        assert_eq!(entry.fields, field_set(&config));
    }

    #[test]
    fn omitted_fields_are_removed_unless_another_manager_owns_them() {
        let first = apply_as(
            &json!({}),
            &[],
            "muster",
            json!({"metadata": {"labels": {"team": "a", "old": "x"}}}),
            false,
        )
        .expect("no conflict");
        let argo = apply_as(
            &first.content,
            &first.managed,
            "argocd",
            json!({"metadata": {"labels": {"synced": "yes"}}}),
            false,
        )
        .expect("no conflict");
        let again = apply_as(
            &argo.content,
            &argo.managed,
            "muster",
            json!({"metadata": {"labels": {"team": "a"}}}),
            false,
        )
        .expect("no conflict");
        assert_eq!(again.content, json!({"metadata": {"labels": {"team": "a", "synced": "yes"}}}));
        assert_eq!(
            fields_of(&again, "muster"),
            Some(&field_set(&json!({"metadata": {"labels": {"team": "a"}}})))
        );
        assert_eq!(fields_of(&again, "argocd").map(FieldSet::len), Some(1));
    }

    #[test]
    fn a_shared_field_survives_when_one_owner_drops_it() {
        let both = json!({"spec": {"hard": {"cpu": "2"}}});
        let a = apply_as(&json!({}), &[], "muster", both.clone(), false).expect("no conflict");
        let b = apply_as(&a.content, &a.managed, "argocd", both.clone(), false)
            .expect("same value is shared, not a conflict");
        assert!(fields_of(&b, "muster").is_some_and(|f| f.contains(&path("spec.hard.cpu"))));
        assert!(fields_of(&b, "argocd").is_some_and(|f| f.contains(&path("spec.hard.cpu"))));

        let dropped = apply_as(&b.content, &b.managed, "muster", json!({"spec": {}}), false)
            .expect("no conflict");
        assert_eq!(dropped.content, both, "argocd still owns it");
        assert_eq!(fields_of(&dropped, "muster"), Some(&field_set(&json!({"spec": {}}))));
    }

    #[test]
    fn removing_the_last_key_drops_the_emptied_map_but_keeps_top_level_fields() {
        let a = apply_as(&json!({}), &[], "muster", json!({"spec": {"hard": {"cpu": "2"}}}), false)
            .expect("no conflict");
        let b =
            apply_as(&a.content, &a.managed, "muster", json!({"spec": {"scopes": ["x"]}}), false)
                .expect("no conflict");
        assert_eq!(b.content, json!({"spec": {"scopes": ["x"]}}));
        let c = apply_as(&b.content, &b.managed, "muster", json!({}), false).expect("no conflict");
        assert_eq!(c.content, json!({"spec": {}}), "a top-level field stays, emptied");
        assert!(c.managed.is_empty(), "an empty set leaves managedFields");
    }

    #[test]
    fn a_different_value_for_a_foreign_field_conflicts() {
        let kubectl = update(
            &json!({}),
            &[],
            "kubectl",
            "v1",
            &json!({"spec": {"hard": {"cpu": "1", "memory": "1Gi"}}}),
            NOW,
        );
        let err = apply_as(
            &kubectl.content,
            &kubectl.managed,
            "muster",
            json!({"spec": {"hard": {"cpu": "2", "memory": "2Gi"}}}),
            false,
        )
        .expect_err("conflicts");
        assert_eq!(
            err,
            vec![
                Conflict { manager: "\"kubectl\" using v1".into(), path: path("spec.hard.cpu") },
                Conflict { manager: "\"kubectl\" using v1".into(), path: path("spec.hard.memory") },
            ]
        );
        assert_eq!(
            conflict_message(&err[..1]),
            "Apply failed with 1 conflict: conflict with \"kubectl\" using v1: .spec.hard.cpu"
        );
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 2 conflicts: conflicts with \"kubectl\" using v1:\n- .spec.hard.cpu\n- .spec.hard.memory"
        );
    }

    #[test]
    fn an_appliers_identity_has_no_version() {
        let argo = apply_as(&json!({}), &[], "argocd", json!({"data": {"k": "a"}}), false)
            .expect("no conflict");
        let err =
            apply_as(&argo.content, &argo.managed, "muster", json!({"data": {"k": "b"}}), false)
                .expect_err("conflicts");
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"argocd\": .data.k"
        );
    }

    #[test]
    fn force_takes_the_field_from_the_other_manager() {
        let kubectl = update(
            &json!({}),
            &[],
            "kubectl",
            "v1",
            &json!({"spec": {"hard": {"cpu": "1", "pods": "5"}}}),
            NOW,
        );
        let forced = apply_as(
            &kubectl.content,
            &kubectl.managed,
            "muster",
            json!({"spec": {"hard": {"cpu": "2"}}}),
            true,
        )
        .expect("force wins");
        assert_eq!(forced.content, json!({"spec": {"hard": {"cpu": "2", "pods": "5"}}}));
        assert_eq!(
            fields_of(&forced, "kubectl"),
            Some(&field_set(&json!({"spec": {"hard": {"pods": "5"}}})))
        );
        assert!(fields_of(&forced, "muster").is_some_and(|f| f.contains(&path("spec.hard.cpu"))));
    }

    #[test]
    fn lists_are_owned_whole() {
        let subjects = json!({"subjects": [{"kind": "Group", "name": "a"}]});
        let a = apply_as(&json!({}), &[], "muster", subjects, false).expect("no conflict");
        let err = apply_as(
            &a.content,
            &a.managed,
            "argocd",
            json!({"subjects": [{"kind": "Group", "name": "a"}, {"kind": "Group", "name": "b"}]}),
            false,
        )
        .expect_err("appending to an atomic list changes the whole list");
        assert_eq!(err[0].field(), ".subjects");
    }

    #[test]
    fn a_repeated_apply_changes_nothing_but_the_time() {
        let config = json!({"metadata": {"labels": {"team": "a"}}});
        let a = apply_as(&json!({}), &[], "muster", config.clone(), false).expect("no conflict");
        let b = apply_as(&a.content, &a.managed, "muster", config, false).expect("no conflict");
        assert_eq!(a.content, b.content);
        assert!(same_ownership(&a.managed, &b.managed));
    }

    #[test]
    fn updates_take_what_they_change_and_never_conflict() {
        let applied = apply_as(
            &json!({}),
            &[],
            "muster",
            json!({"metadata": {"labels": {"team": "a", "env": "dev"}}}),
            false,
        )
        .expect("no conflict");
        let edited = update(
            &applied.content,
            &applied.managed,
            "kubectl",
            "v1",
            &json!({"metadata": {"labels": {"team": "b", "extra": "1"}}}),
            NOW,
        );
        assert_eq!(
            fields_of(&edited, "kubectl"),
            Some(&field_set(&json!({"metadata": {"labels": {"team": "b", "extra": "1"}}})))
        );
        assert_eq!(fields_of(&edited, "muster"), None, "team moved, env was removed");
    }

    #[test]
    fn an_unchanged_update_keeps_the_entries() {
        let created = update(&json!({}), &[], "kubectl", "v1", &json!({"spec": {"a": 1}}), NOW);
        let again = update(
            &created.content,
            &created.managed,
            "kubectl",
            "v1",
            &json!({"spec": {"a": 1}}),
            LATER,
        );
        assert_eq!(again.managed, created.managed, "time unchanged too");
        let other = update(
            &created.content,
            &created.managed,
            "helm",
            "v1",
            &json!({"spec": {"a": 1}}),
            LATER,
        );
        assert_eq!(other.managed, created.managed, "a writer that changes nothing owns nothing");
    }

    #[test]
    fn null_in_an_applied_configuration_removes_the_field() {
        let a = apply_as(
            &json!({}),
            &[],
            "muster",
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            false,
        )
        .expect("no conflict");
        let b = apply_as(
            &a.content,
            &a.managed,
            "muster",
            json!({"metadata": {"labels": {"a": "1", "b": null}}}),
            false,
        )
        .expect("no conflict");
        assert_eq!(b.content, json!({"metadata": {"labels": {"a": "1"}}}));
    }
}
