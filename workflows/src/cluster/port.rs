//! The [`Cluster`] port: what the agent needs of a Kubernetes API. The kube adapter lives in
//! `connectors::cluster`.

use async_trait::async_trait;

use super::objects::{DesiredObject, ObjectKind};
use super::plan::Observed;

/// The result of an apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The object's `resourceVersion` after the apply.
    pub resource_version: Option<String>,
}

/// Why a call to the cluster failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// Another field manager owns a field Muster sets (409 with `FieldManagerConflict`
    /// causes); the message names the managers and fields.
    #[error("field conflict: {0}")]
    FieldConflict(String),
    /// The API refused the request (403): RBAC, or a terminating namespace.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Any other answer of the API server (`code` is its HTTP status).
    #[error("the Kubernetes API answered {code}: {message}")]
    Api { code: u16, message: String },
    /// The API could not be reached or did not answer in time.
    #[error("cannot reach the Kubernetes API: {0}")]
    Unreachable(String),
}

/// A Kubernetes cluster as the agent sees it.
///
/// # Errors
/// Every method returns a [`ClusterError`]; none of them retries by itself.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// Every namespace, and Muster's objects (by its managed-by label) in all namespaces:
    /// a complete observation.
    async fn observe_all(&self) -> Result<Observed, ClusterError>;

    /// One namespace (absent when it does not exist) and Muster's objects in it.
    async fn observe_namespace(&self, name: &str) -> Result<Observed, ClusterError>;

    /// Server-side apply with Muster's field manager; `force` takes fields other managers own.
    async fn apply(&self, object: &DesiredObject, force: bool) -> Result<Applied, ClusterError>;

    /// Deletes one object; `false` when it was already gone.
    async fn delete(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<bool, ClusterError>;

    /// A cheap round trip to the API server (readiness).
    async fn check(&self) -> Result<(), ClusterError>;
}
