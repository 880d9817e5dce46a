//! What a namespace record becomes in a Kubernetes cluster, decided without I/O.
//!
//! The cluster agent (`engine agent`) reads its environment's namespace records and observes
//! its cluster through the [`Cluster`] port; everything in between is pure and tested here:
//! - [`objects`]: the objects Muster owns for one record, as server-side apply bodies that
//!   carry only Muster's fields ([`render`]);
//! - [`plan`]: (desired records, observed objects) → per-namespace actions and the outcome to
//!   report ([`plan_all`], [`plan_one`]);
//! - [`quantity`]: comparing Kubernetes quantities by value (`1000m` is `1`);
//! - [`port`]: the [`Cluster`] port and its error kinds;
//! - [`report`]: the `muster.cluster.reported` event and the `record_cluster_report` workflow
//!   that stores it on the record.
//!
//! # Rules (each one tested in [`plan`])
//! - A namespace is Muster's when it carries `app.kubernetes.io/managed-by=muster` and the
//!   record's team and environment labels. A namespace of the record's name that is not is a
//!   `conflict`: reported, never adopted or changed.
//! - An up-to-date object (Muster's fields present with equal values, and the hash of what was
//!   last applied unchanged) is not applied again: a steady-state reconcile writes nothing.
//! - Deletion only when the record is `deleting`, the namespace is Muster's and the record
//!   allows it; otherwise the namespace is `retained`. A Muster namespace of this environment
//!   without a record is `orphaned`, and never deleted.
//! - Muster's child objects that a record no longer wants (quota emptied, network policy
//!   turned off, a role no longer bound) are deleted; other objects are never touched.

pub mod objects;
pub mod plan;
pub mod port;
pub mod quantity;
pub mod report;

pub use objects::{AgentSettings, DesiredObject, ObjectKind, render};
pub use plan::{Action, NamespacePlan, Observed, ObservedObject, plan_all, plan_one};
pub use port::{Applied, Cluster, ClusterError};
pub use report::{CLUSTER_REPORTED, ClusterReport, RecordClusterReport};

/// The field manager of every write the agent makes.
pub const FIELD_MANAGER: &str = "muster-agent";
/// The label every object Muster creates carries, with value [`MANAGED_BY_VALUE`].
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "muster";
/// The team (slug) an object belongs to.
pub const LABEL_TEAM: &str = "muster.dev/team";
/// The environment an object belongs to.
pub const LABEL_ENVIRONMENT: &str = "muster.dev/environment";
/// Hash of the apply body Muster last applied (without this annotation): a changed hash means
/// a field Muster owned may have to be dropped.
pub const ANNOTATION_APPLIED: &str = "muster.dev/applied";
/// The label selector of every object Muster manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=muster";
