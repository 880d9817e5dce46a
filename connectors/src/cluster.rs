//! The [`Cluster`] port over the Kubernetes API with kube.
//!
//! Objects are handled as `DynamicObject`s of the five kinds Muster manages, so the apply
//! bodies rendered by `workflows::cluster::objects` go out exactly as rendered (only Muster's
//! fields) and observed objects come back whole for the planner.
//!
//! # Requests
//! - A complete observation is one paged LIST of namespaces and one paged, label-selected LIST
//!   of each child kind across all namespaces (`app.kubernetes.io/managed-by=muster`): five
//!   requests per [`LIST_PAGE`] objects, however many namespaces there are.
//! - Writes are server-side applies with field manager `muster-agent` (`force` only when
//!   configured) and plain DELETEs.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::ApiResource;
use kube::{Client, Config};
use workflows::cluster::{
    Applied, Cluster, ClusterError, DesiredObject, FIELD_MANAGER, MANAGED_SELECTOR, ObjectKind,
    Observed, ObservedObject,
};

/// Objects per LIST page.
pub const LIST_PAGE: u32 = 500;
/// A LIST stops after this many pages (a runaway `continue` loop is an error, not a hang).
const MAX_PAGES: usize = 10_000;

/// A Kubernetes cluster reached with kube.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
}

impl KubeCluster {
    pub fn new(client: Client) -> Self {
        KubeCluster { client }
    }

    /// A client from kube's standard loading: `KUBECONFIG`, `~/.kube/config`, or the
    /// in-cluster service account.
    ///
    /// # Errors
    /// No configuration was found, or it cannot build a client.
    pub async fn from_environment() -> Result<Self, ClusterError> {
        let config = Config::infer()
            .await
            .map_err(|e| ClusterError::Unreachable(format!("no Kubernetes configuration: {e}")))?;
        let client = Client::try_from(config)
            .map_err(|e| ClusterError::Unreachable(format!("cannot build the client: {e}")))?;
        Ok(KubeCluster { client })
    }

    fn api(&self, kind: ObjectKind, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = resource(kind);
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    async fn list(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> Result<Vec<ObservedObject>, ClusterError> {
        let api = self.api(kind, namespace);
        let mut params = ListParams::default().limit(LIST_PAGE);
        if let Some(selector) = selector {
            params = params.labels(selector);
        }
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = api.list(&params).await.map_err(error)?;
            out.extend(page.items.into_iter().map(|o| observed_object(kind, o)));
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => return Ok(out),
            }
        }
        Err(ClusterError::Api {
            code: 0,
            message: format!("listing {} did not end after {MAX_PAGES} pages", kind.plural()),
        })
    }

    async fn children(
        &self,
        namespace: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<ObservedObject>>, ClusterError> {
        let [quota, limits, bindings, policies] = ObjectKind::CHILDREN;
        let selector = Some(MANAGED_SELECTOR);
        let (a, b, c, d) = tokio::try_join!(
            self.list(quota, namespace, selector),
            self.list(limits, namespace, selector),
            self.list(bindings, namespace, selector),
            self.list(policies, namespace, selector),
        )?;
        let mut out: BTreeMap<String, Vec<ObservedObject>> = BTreeMap::new();
        for object in a.into_iter().chain(b).chain(c).chain(d) {
            if let Some(ns) = object.namespace.clone() {
                out.entry(ns).or_default().push(object);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Cluster for KubeCluster {
    async fn observe_all(&self) -> Result<Observed, ClusterError> {
        let (namespaces, children) =
            tokio::try_join!(self.list(ObjectKind::Namespace, None, None), self.children(None))?;
        Ok(Observed {
            namespaces: namespaces.into_iter().map(|ns| (ns.name.clone(), ns)).collect(),
            children,
            complete: true,
        })
    }

    async fn observe_namespace(&self, name: &str) -> Result<Observed, ClusterError> {
        let namespace = self.api(ObjectKind::Namespace, None).get_opt(name).await.map_err(error)?;
        let mut observed = Observed::default();
        if let Some(ns) = namespace {
            observed.namespaces.insert(name.to_owned(), observed_object(ObjectKind::Namespace, ns));
            observed.children = self.children(Some(name)).await?;
        }
        Ok(observed)
    }

    async fn apply(&self, object: &DesiredObject, force: bool) -> Result<Applied, ClusterError> {
        let mut params = PatchParams::apply(FIELD_MANAGER);
        if force {
            params = params.force();
        }
        let api = self.api(object.kind, object.namespace.as_deref());
        let applied =
            api.patch(&object.name, &params, &Patch::Apply(&object.body)).await.map_err(error)?;
        Ok(Applied { resource_version: applied.metadata.resource_version })
    }

    async fn delete(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<bool, ClusterError> {
        match self.api(kind, namespace).delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
            Err(e) => Err(error(e)),
        }
    }

    async fn check(&self) -> Result<(), ClusterError> {
        self.client.apiserver_version().await.map(|_| ()).map_err(error)
    }
}

fn resource(kind: ObjectKind) -> ApiResource {
    match kind {
        ObjectKind::Namespace => ApiResource::erase::<Namespace>(&()),
        ObjectKind::ResourceQuota => ApiResource::erase::<ResourceQuota>(&()),
        ObjectKind::LimitRange => ApiResource::erase::<LimitRange>(&()),
        ObjectKind::RoleBinding => ApiResource::erase::<RoleBinding>(&()),
        ObjectKind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
    }
}

fn observed_object(kind: ObjectKind, object: DynamicObject) -> ObservedObject {
    let namespace = object.metadata.namespace.clone().filter(|_| kind != ObjectKind::Namespace);
    let name = object.metadata.name.clone().unwrap_or_default();
    let mut body = serde_json::to_value(&object).unwrap_or_default();
    // Items of a LIST carry no apiVersion and kind of their own.
    body["apiVersion"] = kind.api_version().into();
    body["kind"] = kind.kind().into();
    ObservedObject { kind, namespace, name, body }
}

/// kube's error as the port's kinds: 409 with `FieldManagerConflict` causes is a field
/// conflict (the message names the other managers and fields), 403 forbidden, other API
/// answers keep their code, and everything else means the API was not reached.
fn error(e: kube::Error) -> ClusterError {
    match e {
        kube::Error::Api(status) => {
            let conflict = status.code == 409
                && status
                    .details
                    .as_ref()
                    .is_some_and(|d| d.causes.iter().any(|c| c.reason == "FieldManagerConflict"));
            if conflict {
                ClusterError::FieldConflict(status.message)
            } else if status.code == 403 {
                ClusterError::Forbidden(status.message)
            } else {
                ClusterError::Api { code: status.code, message: status.message }
            }
        }
        other => ClusterError::Unreachable(other.to_string()),
    }
}
