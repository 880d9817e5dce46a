//! The fake Kubernetes API server against the real kube client over HTTP: server-side apply
//! ownership and conflicts, no-op applies, selectors and paging, namespace termination, the
//! `Status` errors kube parses, injected failures and the kubeconfig for child processes.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::fake_kube::{FakeKube, Kind};
use e2e::harness::wait_for;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::Status;
use serde_json::json;

const AGENT: &str = "muster-agent";
const HOUR: Duration = Duration::from_secs(3600);

async fn fake() -> FakeKube {
    FakeKube::start().await.expect("fake Kubernetes API starts")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn namespace(name: &str, pairs: &[(&str, &str)]) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(pairs)),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

fn quota(namespace: &str, name: &str, hard: &[(&str, &str)]) -> ResourceQuota {
    let hard = hard.iter().map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned()))).collect();
    ResourceQuota {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        spec: Some(ResourceQuotaSpec { hard: Some(hard), ..ResourceQuotaSpec::default() }),
        ..ResourceQuota::default()
    }
}

fn binding(namespace: &str, name: &str, groups: &[&str]) -> RoleBinding {
    RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "edit".into(),
        },
        subjects: Some(
            groups
                .iter()
                .map(|g| Subject {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Group".into(),
                    name: (*g).into(),
                    namespace: None,
                })
                .collect(),
        ),
    }
}

async fn apply_namespace(api: &Api<Namespace>, ns: &Namespace) -> kube::Result<Namespace> {
    let name = ns.metadata.name.as_deref().expect("named");
    api.patch(name, &PatchParams::apply(AGENT), &Patch::Apply(ns)).await
}

/// The `Status` of an API error, or a panic naming what came instead.
fn status<T: std::fmt::Debug>(result: kube::Result<T>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn apply_creates_a_namespace_owned_by_the_applier() {
    let fake = fake().await;
    let api: Api<Namespace> = Api::all(fake.client());

    let ns = apply_namespace(&api, &namespace("team-a", &[("muster.io/team", "a")]))
        .await
        .expect("apply creates");

    let meta = &ns.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36), "uid {:?}", meta.uid);
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(
        meta.labels.clone().unwrap_or_default(),
        labels(&[("muster.io/team", "a"), ("kubernetes.io/metadata.name", "team-a")])
    );
    let managed = meta.managed_fields.clone().unwrap_or_default();
    assert_eq!(managed.len(), 1, "{managed:?}");
    assert_eq!(managed[0].manager.as_deref(), Some(AGENT));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));
    assert_eq!(managed[0].api_version.as_deref(), Some("v1"));
    assert_eq!(managed[0].fields_type.as_deref(), Some("FieldsV1"));
    assert_eq!(
        managed[0].fields_v1.as_ref().map(|f| f.0.clone()),
        Some(json!({"f:metadata": {"f:labels": {"f:muster.io/team": {}}}}))
    );
    let status = ns.status.and_then(|s| s.phase);
    assert_eq!(status.as_deref(), Some("Active"));
    assert_eq!(ns.spec.and_then(|s| s.finalizers), Some(vec!["kubernetes".to_owned()]));
    assert_eq!(fake.namespace_names(), ["team-a"]);
    let stored = fake.get(Kind::Namespace, None, "team-a").expect("stored");
    assert_eq!(stored["metadata"]["resourceVersion"], json!(meta.resource_version));
}

#[tokio::test]
async fn a_repeated_identical_apply_changes_nothing() {
    let fake = fake().await;
    let api: Api<Namespace> = Api::all(fake.client());
    let desired = namespace("team-a", &[("muster.io/team", "a")]);

    let first = apply_namespace(&api, &desired).await.expect("apply");
    let second = apply_namespace(&api, &desired).await.expect("apply again");

    assert_eq!(second.metadata.resource_version, first.metadata.resource_version);
    assert_eq!(second.metadata.managed_fields, first.metadata.managed_fields, "times unchanged");
    assert_eq!((fake.mutating_requests(), fake.changes()), (2, 1));

    let changed = namespace("team-a", &[("muster.io/team", "b")]);
    let third = apply_namespace(&api, &changed).await.expect("apply a change");
    assert_ne!(third.metadata.resource_version, first.metadata.resource_version);
    assert_eq!((fake.mutating_requests(), fake.changes()), (3, 2));

    fake.reset_counters();
    assert_eq!((fake.mutating_requests(), fake.changes(), fake.requests().len()), (0, 0, 0));
}

#[tokio::test]
async fn a_foreign_label_survives_and_a_dropped_label_goes() {
    let fake = fake().await;
    let api: Api<Namespace> = Api::all(fake.client());
    apply_namespace(
        &api,
        &namespace("team-a", &[("muster.io/team", "a"), ("muster.io/env", "dev")]),
    )
    .await
    .expect("apply");
    fake.apply_as(
        "argocd",
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "team-a", "labels": {"argocd.argoproj.io/instance": "infra"}}}),
    )
    .expect("argocd applies its label");

    let ns = apply_namespace(&api, &namespace("team-a", &[("muster.io/team", "a")]))
        .await
        .expect("re-apply without env");

    assert_eq!(
        ns.metadata.labels.unwrap_or_default(),
        labels(&[
            ("muster.io/team", "a"),
            ("argocd.argoproj.io/instance", "infra"),
            ("kubernetes.io/metadata.name", "team-a"),
        ])
    );
    let managers: Vec<(String, serde_json::Value)> = ns
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.manager.unwrap_or_default(), e.fields_v1.map(|f| f.0).unwrap_or_default()))
        .collect();
    assert_eq!(
        managers,
        [
            (AGENT.to_owned(), json!({"f:metadata": {"f:labels": {"f:muster.io/team": {}}}})),
            (
                "argocd".to_owned(),
                json!({"f:metadata": {"f:labels": {"f:argocd.argoproj.io/instance": {}}}})
            ),
        ]
    );
}

#[tokio::test]
async fn a_conflicting_value_is_a_409_naming_the_owner_and_force_takes_it() {
    let fake = fake().await;
    fake.create_namespace("legacy", &[("muster.io/team", "ops"), ("owner", "sre")])
        .expect("kubectl creates");
    let api: Api<Namespace> = Api::all(fake.client());

    let conflict =
        status(apply_namespace(&api, &namespace("legacy", &[("muster.io/team", "a")])).await);

    assert_eq!(conflict.code, 409);
    assert!(conflict.is_conflict());
    assert_eq!(
        conflict.message,
        "Apply failed with 1 conflict: conflict with \"kubectl\" using v1: .metadata.labels.muster.io/team"
    );
    let causes = conflict.details.as_ref().map(|d| d.causes.clone()).unwrap_or_default();
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].reason, "FieldManagerConflict");
    assert_eq!(causes[0].message, "conflict with \"kubectl\" using v1");
    assert_eq!(causes[0].field, ".metadata.labels.muster.io/team");
    let unchanged = api.get("legacy").await.expect("get");
    assert_eq!(unchanged.metadata.labels.unwrap_or_default()["muster.io/team"], "ops");

    let forced = api
        .patch(
            "legacy",
            &PatchParams::apply(AGENT).force(),
            &Patch::Apply(namespace("legacy", &[("muster.io/team", "a")])),
        )
        .await
        .expect("force takes the field");
    assert_eq!(forced.metadata.labels.unwrap_or_default()["muster.io/team"], "a");
    let kubectl = forced
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.manager.as_deref() == Some("kubectl"))
        .expect("kubectl still owns owner");
    assert_eq!(kubectl.operation.as_deref(), Some("Update"));
    assert_eq!(
        kubectl.fields_v1.map(|f| f.0),
        Some(json!({"f:metadata": {"f:labels": {"f:owner": {}}}}))
    );
}

#[tokio::test]
async fn several_conflicts_with_an_applier_are_listed_together() {
    let fake = fake().await;
    let namespaces: Api<Namespace> = Api::all(fake.client());
    apply_namespace(&namespaces, &namespace("team-a", &[])).await.expect("namespace");
    fake.apply_as(
        "argocd",
        json!({"apiVersion": "v1", "kind": "ResourceQuota",
               "metadata": {"name": "compute", "namespace": "team-a"},
               "spec": {"hard": {"cpu": "1", "memory": "1Gi", "pods": "10"}}}),
    )
    .expect("argocd applies a quota");
    let api: Api<ResourceQuota> = Api::namespaced(fake.client(), "team-a");

    let desired = quota("team-a", "compute", &[("cpu", "2"), ("memory", "2Gi"), ("pods", "10")]);
    let conflict =
        status(api.patch("compute", &PatchParams::apply(AGENT), &Patch::Apply(&desired)).await);

    assert_eq!(
        conflict.message,
        "Apply failed with 2 conflicts: conflicts with \"argocd\":\n- .spec.hard.cpu\n- .spec.hard.memory"
    );
    let fields: Vec<String> = conflict
        .details
        .map(|d| d.causes.into_iter().map(|c| c.field).collect())
        .unwrap_or_default();
    assert_eq!(fields, [".spec.hard.cpu", ".spec.hard.memory"]);
}

#[tokio::test]
async fn role_binding_subjects_are_owned_whole() {
    let fake = fake().await;
    apply_namespace(&Api::all(fake.client()), &namespace("team-a", &[])).await.expect("namespace");
    let api: Api<RoleBinding> = Api::namespaced(fake.client(), "team-a");
    let mine = binding("team-a", "team-edit", &["oidc:team-a"]);
    api.patch("team-edit", &PatchParams::apply(AGENT), &Patch::Apply(&mine)).await.expect("apply");

    let theirs = binding("team-a", "team-edit", &["oidc:team-a", "oidc:intruder"]);
    let conflict =
        status(api.patch("team-edit", &PatchParams::apply("argocd"), &Patch::Apply(&theirs)).await);

    let fields: Vec<String> = conflict
        .details
        .map(|d| d.causes.into_iter().map(|c| c.field).collect())
        .unwrap_or_default();
    assert_eq!(fields, [".subjects"], "roleRef has the same value: shared, not a conflict");
    let stored = api.get("team-edit").await.expect("get");
    assert_eq!(stored.subjects.map(|s| s.len()), Some(1));
}

#[tokio::test]
async fn lists_filter_by_label_and_page_with_continue_tokens() {
    let fake = fake().await;
    let api: Api<Namespace> = Api::all(fake.client());
    for i in 0..5 {
        let env = if i % 2 == 0 { "dev" } else { "prod" };
        let ns = namespace(&format!("team-{i}"), &[("muster.io/managed", "true"), ("env", env)]);
        apply_namespace(&api, &ns).await.expect("apply");
    }
    fake.create_namespace("kube-system", &[]).expect("unmanaged");
    fake.create_namespace("default", &[("env", "dev")]).expect("unmanaged");

    let mut names = Vec::new();
    let mut versions = Vec::new();
    let mut pages = 0;
    let mut params = ListParams::default().labels("muster.io/managed=true").limit(2);
    loop {
        let page = api.list(&params).await.expect("list");
        pages += 1;
        assert!(page.items.len() <= 2);
        names.extend(page.items.iter().filter_map(|n| n.metadata.name.clone()));
        versions.push(page.metadata.resource_version.clone());
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(names, ["team-0", "team-1", "team-2", "team-3", "team-4"]);
    assert_eq!(pages, 3);
    assert!(versions.windows(2).all(|w| w[0] == w[1]), "{versions:?}");

    let select = |selector: &str| {
        let api = api.clone();
        let params = ListParams::default().labels(selector);
        async move {
            let list = api.list(&params).await.expect("list");
            list.items.into_iter().filter_map(|n| n.metadata.name).collect::<Vec<_>>()
        }
    };
    assert_eq!(select("env=dev,muster.io/managed").await, ["team-0", "team-2", "team-4"]);
    assert_eq!(select("env notin (dev)").await, ["kube-system", "team-1", "team-3"]);
    assert_eq!(select("env in (dev),!muster.io/managed").await, ["default"]);
    assert_eq!(select("kubernetes.io/metadata.name=team-3").await, ["team-3"]);

    let bad = status(api.list(&ListParams::default().labels("env in dev")).await);
    assert_eq!((bad.code, bad.reason.as_str()), (400, "BadRequest"));
}

#[tokio::test]
async fn quotas_list_across_namespaces_with_field_selectors() {
    let fake = fake().await;
    let namespaces: Api<Namespace> = Api::all(fake.client());
    for ns in ["a", "b"] {
        apply_namespace(&namespaces, &namespace(ns, &[])).await.expect("namespace");
        let api: Api<ResourceQuota> = Api::namespaced(fake.client(), ns);
        for name in ["compute", "objects"] {
            let q = quota(ns, name, &[("pods", "10")]);
            api.patch(name, &PatchParams::apply(AGENT), &Patch::Apply(&q)).await.expect("quota");
        }
    }
    let all: Api<ResourceQuota> = Api::all(fake.client());

    let every = all.list(&ListParams::default()).await.expect("list");
    let keys: Vec<(String, String)> = every
        .items
        .iter()
        .map(|q| {
            (
                q.metadata.namespace.clone().unwrap_or_default(),
                q.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(keys.len(), 4);
    assert_eq!(keys[0], ("a".to_owned(), "compute".to_owned()));
    let in_b = all.list(&ListParams::default().fields("metadata.namespace=b")).await.expect("list");
    assert_eq!(in_b.items.len(), 2);
    let named =
        all.list(&ListParams::default().fields("metadata.name=objects")).await.expect("list");
    assert_eq!(named.items.len(), 2);
    assert_eq!(fake.list(Kind::ResourceQuota).len(), 4);
}

#[tokio::test]
async fn objects_in_a_missing_namespace_are_not_found() {
    let fake = fake().await;
    let api: Api<ResourceQuota> = Api::namespaced(fake.client(), "nowhere");

    let missing_ns = status(
        api.patch(
            "compute",
            &PatchParams::apply(AGENT),
            &Patch::Apply(quota("nowhere", "compute", &[("cpu", "1")])),
        )
        .await,
    );
    assert!(missing_ns.is_not_found());
    assert_eq!(missing_ns.message, "namespaces \"nowhere\" not found");
    let details = missing_ns.details.expect("details");
    assert_eq!((details.name.as_str(), details.kind.as_str()), ("nowhere", "namespaces"));

    assert!(api.get_opt("compute").await.expect("get_opt").is_none());
    let missing = status(api.get("compute").await);
    assert_eq!(missing.message, "resourcequotas \"compute\" not found");
    assert!(fake.list(Kind::ResourceQuota).is_empty());
}

#[tokio::test]
async fn a_deleted_namespace_terminates_then_goes_with_its_content() {
    let fake = fake().await;
    fake.set_termination_delay(HOUR);
    let namespaces: Api<Namespace> = Api::all(fake.client());
    let quotas: Api<ResourceQuota> = Api::namespaced(fake.client(), "team-a");
    apply_namespace(&namespaces, &namespace("team-a", &[])).await.expect("namespace");
    let compute = quota("team-a", "compute", &[("cpu", "1")]);
    quotas
        .patch("compute", &PatchParams::apply(AGENT), &Patch::Apply(&compute))
        .await
        .expect("quota");

    let deleted = namespaces.delete("team-a", &DeleteParams::default()).await.expect("delete");
    let terminating = deleted.left().expect("a namespace answers with the object");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.status.and_then(|s| s.phase).as_deref(), Some("Terminating"));
    assert_eq!(terminating.spec.and_then(|s| s.finalizers), Some(vec!["kubernetes".to_owned()]));

    let objects = quota("team-a", "objects", &[("pods", "1")]);
    let forbidden =
        status(quotas.patch("objects", &PatchParams::apply(AGENT), &Patch::Apply(&objects)).await);
    assert!(forbidden.is_forbidden());
    assert_eq!(
        forbidden.message,
        "resourcequotas \"objects\" is forbidden: unable to create new content in namespace team-a because it is being terminated"
    );
    let again = status(namespaces.delete("team-a", &DeleteParams::default()).await);
    assert!(again.is_conflict());
    assert!(
        again.message.starts_with(
            "Operation cannot be fulfilled on namespaces \"team-a\": The system is ensuring all content is removed"
        ),
        "{}",
        again.message
    );
    assert!(quotas.get_opt("compute").await.expect("get").is_some(), "content stays meanwhile");

    fake.finish_terminations();

    assert!(namespaces.get_opt("team-a").await.expect("get").is_none());
    assert!(quotas.get_opt("compute").await.expect("get").is_none());
    assert!(fake.list(Kind::ResourceQuota).is_empty());
    assert!(fake.namespace_names().is_empty());
}

#[tokio::test]
async fn a_terminating_namespace_goes_after_the_delay() {
    let fake = fake().await;
    fake.set_termination_delay(Duration::from_millis(50));
    let api: Api<Namespace> = Api::all(fake.client());
    apply_namespace(&api, &namespace("brief", &[])).await.expect("namespace");

    api.delete("brief", &DeleteParams::default()).await.expect("delete");

    let api = &api;
    wait_for("the namespace to go", Duration::from_secs(5), || async move {
        api.get_opt("brief").await.expect("get").is_none().then_some(())
    })
    .await
    .expect("gone");
}

#[tokio::test]
async fn errors_are_status_objects_kube_understands() {
    let fake = fake().await;
    let namespaces: Api<Namespace> = Api::all(fake.client());
    namespaces.create(&PostParams::default(), &namespace("team-a", &[])).await.expect("create");

    let exists = status(namespaces.create(&PostParams::default(), &namespace("team-a", &[])).await);
    assert!(exists.is_already_exists());
    assert_eq!(exists.message, "namespaces \"team-a\" already exists");

    let bindings: Api<RoleBinding> = Api::namespaced(fake.client(), "team-a");
    let missing = status(bindings.get("nobody").await);
    assert_eq!(missing.code, 404);
    assert_eq!(missing.message, "rolebindings.rbac.authorization.k8s.io \"nobody\" not found");
    let details = missing.details.expect("details");
    assert_eq!(details.group, "rbac.authorization.k8s.io");
    assert_eq!(details.kind, "rolebindings");

    let mut stale = namespaces.get("team-a").await.expect("get");
    stale.metadata.resource_version = Some("1".into());
    namespaces
        .patch(
            "team-a",
            &PatchParams::apply(AGENT),
            &Patch::Apply(namespace("team-a", &[("x", "1")])),
        )
        .await
        .expect("a change bumps the version");
    let conflict = status(namespaces.replace("team-a", &PostParams::default(), &stale).await);
    assert!(conflict.is_conflict());
    assert_eq!(
        conflict.message,
        "Operation cannot be fulfilled on namespaces \"team-a\": the object has been modified; please apply your changes to the latest version and try again"
    );

    let strategic = status(
        namespaces.patch("team-a", &PatchParams::default(), &Patch::Strategic(json!({}))).await,
    );
    assert_eq!((strategic.code, strategic.reason.as_str()), (415, "UnsupportedMediaType"));

    let untyped = json!({"metadata": {"name": "team-a"}});
    let bad = status(
        namespaces.patch("team-a", &PatchParams::apply(AGENT), &Patch::Apply(untyped)).await,
    );
    assert_eq!((bad.code, bad.reason.as_str()), (400, "BadRequest"));

    let invalid =
        status(namespaces.create(&PostParams::default(), &namespace("Not_Valid", &[])).await);
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
}

#[tokio::test]
async fn updates_record_their_manager_and_never_conflict() {
    let fake = fake().await;
    let api: Api<Namespace> = Api::all(fake.client());
    apply_namespace(&api, &namespace("team-a", &[("muster.io/team", "a")])).await.expect("apply");

    let edit = PatchParams { field_manager: Some("kubectl-edit".into()), ..PatchParams::default() };
    let merged = api
        .patch(
            "team-a",
            &edit,
            &Patch::Merge(json!({"metadata": {"labels": {"muster.io/team": "b"}}})),
        )
        .await
        .expect("a merge patch never conflicts");
    assert_eq!(merged.metadata.labels.unwrap_or_default()["muster.io/team"], "b");
    let managers: Vec<(Option<String>, Option<String>)> = merged
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.manager, e.operation))
        .collect();
    assert_eq!(managers, [(Some("kubectl-edit".into()), Some("Update".into()))], "the field moved");

    // kube's `Patch::Json` needs its `jsonpatch` feature; a raw request does the same.
    let patched: serde_json::Value = reqwest::Client::new()
        .patch(format!("{}/api/v1/namespaces/team-a", fake.url()))
        .header("content-type", "application/json-patch+json")
        .header("user-agent", "ops-script/1.0")
        .body(json!([{"op": "add", "path": "/metadata/labels/extra", "value": "1"}]).to_string())
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("an object");
    assert_eq!(patched["metadata"]["labels"]["extra"], "1");
    let script = patched["metadata"]["managedFields"]
        .as_array()
        .and_then(|m| m.iter().find(|e| e["manager"] == "ops-script"))
        .cloned();
    assert_eq!(
        script.map(|e| e["fieldsV1"].clone()),
        Some(json!({"f:metadata": {"f:labels": {"f:extra": {}}}})),
        "a write without fieldManager is owned by the User-Agent's product name"
    );
}

#[tokio::test]
async fn a_dry_run_answers_and_stores_nothing() {
    let fake = fake().await;
    let api: Api<Namespace> = Api::all(fake.client());

    let preview = api
        .patch(
            "team-a",
            &PatchParams::apply(AGENT).dry_run(),
            &Patch::Apply(namespace("team-a", &[("muster.io/team", "a")])),
        )
        .await
        .expect("dry run");

    assert_eq!(preview.metadata.labels.unwrap_or_default()["muster.io/team"], "a");
    assert!(api.get_opt("team-a").await.expect("get").is_none());
    assert_eq!((fake.mutating_requests(), fake.changes()), (1, 0));
}

#[tokio::test]
async fn injected_failures_answer_the_next_requests() {
    let fake = fake().await;
    let api: Api<Namespace> = Api::all(fake.client());
    fake.fail_next(2, 500);

    let first = status(api.list(&ListParams::default()).await);
    assert_eq!((first.code, first.reason.as_str()), (500, "InternalError"));
    let second = status(apply_namespace(&api, &namespace("team-a", &[])).await);
    assert_eq!(second.code, 500);
    apply_namespace(&api, &namespace("team-a", &[])).await.expect("the third goes through");

    assert_eq!((fake.mutating_requests(), fake.changes()), (2, 1));
    let log = fake.requests();
    let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 201]);
    assert_eq!(log[2].method, "PATCH");
    assert_eq!(log[2].path, "/api/v1/namespaces/team-a");
    assert_eq!(log[2].content_type.as_deref(), Some("application/apply-patch+yaml"));
    assert!(log[2].query.as_deref().is_some_and(|q| q.contains("fieldManager=muster-agent")));
}

#[tokio::test]
async fn a_kubeconfig_lets_another_client_in() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&path).expect("written");

    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("kube reads it");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("a config");
    let client = kube::Client::try_from(config).expect("a client");

    let version = client.apiserver_version().await.expect("version");
    assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "33"));
    assert_eq!(version.git_version, "v1.33.0-fake");
    let api: Api<Namespace> = Api::all(client);
    apply_namespace(&api, &namespace("via-kubeconfig", &[])).await.expect("apply");
    assert_eq!(fake.namespace_names(), ["via-kubeconfig"]);
}

#[tokio::test]
async fn unknown_paths_are_404_status_objects() {
    let fake = fake().await;
    let http = reqwest::Client::new();

    let answer = http.get(format!("{}/api/v1/configmaps", fake.url())).send().await.expect("sent");
    assert_eq!(answer.status(), 404);
    let body: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "NotFound");
    assert_eq!(body["message"], "the server could not find the requested resource");

    let version = http.get(format!("{}/version", fake.url())).send().await.expect("sent");
    assert_eq!(version.status(), 200);
}

/// The load the agent benchmark puts on the fake: 1,000 namespaces with five objects each,
/// applied one after another, twice (the second pass is all no-ops), then labelled lists.
/// `cargo nextest run -p e2e --test fake_kube --run-ignored only` prints the timings.
#[tokio::test]
#[ignore = "a timing aid, not a check"]
async fn thousand_namespaces_converge_quickly() {
    let fake = fake().await;
    let client = fake.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let started = std::time::Instant::now();
    for pass in 0..2 {
        for i in 0..1000 {
            let ns = format!("team-{i:04}");
            apply_namespace(&namespaces, &namespace(&ns, &[("muster.io/managed", "true")]))
                .await
                .expect("namespace");
            let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
            for name in ["compute", "objects"] {
                let q = quota(&ns, name, &[("cpu", "2"), ("pods", "10")]);
                quotas
                    .patch(name, &PatchParams::apply(AGENT), &Patch::Apply(&q))
                    .await
                    .expect("quota");
            }
            let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
            for name in ["team-edit", "team-view"] {
                let b = binding(&ns, name, &["oidc:team"]);
                bindings
                    .patch(name, &PatchParams::apply(AGENT), &Patch::Apply(&b))
                    .await
                    .expect("binding");
            }
        }
        println!("pass {pass}: {:?}", started.elapsed());
    }
    assert_eq!(fake.changes(), 5000, "the second pass changes nothing");
    let lists = std::time::Instant::now();
    let all: Api<RoleBinding> = Api::all(client);
    let listed = all.list(&ListParams::default().labels("!muster.io/other")).await.expect("list");
    assert_eq!(listed.items.len(), 2000);
    let managed = namespaces
        .list(&ListParams::default().labels("muster.io/managed=true"))
        .await
        .expect("list");
    assert_eq!(managed.items.len(), 1000);
    println!("lists: {:?}", lists.elapsed());
}
