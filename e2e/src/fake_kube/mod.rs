//! A stateful fake of the Kubernetes API server, a TEST server for the cluster agent, served
//! over real HTTP to the real kube client.
//!
//! It serves, in the shapes the Kubernetes API documents ("API Concepts", "Server-Side
//! Apply"):
//!
//! - `v1` `namespaces` (`/api/v1/namespaces[/{name}]`), `resourcequotas` and `limitranges`
//!   (`/api/v1/namespaces/{ns}/{resource}[/{name}]`, and `/api/v1/{resource}` across
//!   namespaces), `rbac.authorization.k8s.io/v1` `rolebindings` and `networking.k8s.io/v1`
//!   `networkpolicies` (`/apis/{group}/v1/...`, same pattern), and `GET /version`.
//! - GET; LIST with `labelSelector` (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`, `>`, `<`),
//!   `fieldSelector` (`metadata.name`, `metadata.namespace`), `limit` and an opaque
//!   `continue` token (the list's `resourceVersion` stays the same across pages, the last page
//!   has no `continue`); POST (409 `AlreadyExists`); PUT (a stale
//!   `metadata.resourceVersion` is a 409 `Conflict`); PATCH as server-side apply
//!   (`application/apply-patch+yaml`), JSON merge patch (RFC 7386) and JSON patch (RFC 6902),
//!   anything else 415; DELETE; `dryRun=All` on every write.
//! - Server-side apply (the rules are in `ssa.rs`, pure and unit-tested): per-manager
//!   `metadata.managedFields` in the `FieldsV1` form, removal of fields a manager stops
//!   applying unless someone else owns them, shared ownership of equal values, 409
//!   `FieldManagerConflict` answers worded as apimachinery words them, `force=true`. Non-apply
//!   writes record an `Update` entry for the `fieldManager` parameter, else the User-Agent's
//!   product name (empty without one), and never conflict. A write that changes nothing keeps
//!   `resourceVersion` and `managedFields` and is not counted as a change.
//! - Namespace deletion: DELETE answers the namespace `Terminating` with
//!   `metadata.deletionTimestamp` and `spec.finalizers: ["kubernetes"]`; new content in it is
//!   403 `Forbidden` (NamespaceLifecycle's message); a second DELETE is 409 `Conflict` "The
//!   system is ensuring all content is removed from this namespace..." as the namespace
//!   registry answers it; after [`FakeKube::set_termination_delay`] (default 200 ms) or
//!   [`FakeKube::finish_terminations`] the namespace and its content are gone. New objects in
//!   a missing namespace are 404 `namespaces "<ns>" not found`.
//! - Every error is a `Status` object (`kube::Error::Api`), with `details.kind` the resource's
//!   plural and messages naming `resource[.group] "name"` as the API server does.
//!
//! The test-facing [`FakeKube`] handle seeds and inspects state (`apply_as` another manager,
//! `create_namespace` as `kubectl`), counts mutating requests and real changes, logs every
//! request and injects failures ([`FakeKube::fail_next`]).
//!
//! # Simplifications
//!
//! - Lists inside objects are atomic: owned whole, as one field, which is the documented
//!   default for lists without `x-kubernetes-list-type` and what RoleBinding `subjects`,
//!   NetworkPolicy rules and LimitRange `limits` declare. Real `listType=set`/`map` lists
//!   (`metadata.finalizers`, `metadata.ownerReferences`) would be granular. No `k:`/`v:`/`.`
//!   entries appear in `fieldsV1`; an empty map is owned as a leaf.
//! - No schema: apart from names and labels (422 when invalid) bodies are not validated and
//!   nothing is defaulted (NetworkPolicy `policyTypes`, port protocols). Apply bodies must be
//!   JSON (what kube sends), not YAML. Strategic merge patch is 415.
//! - Server-set fields: `uid`, `creationTimestamp`, `resourceVersion` (one global counter),
//!   namespaces' `kubernetes.io/metadata.name` label, `spec.finalizers` and `status.phase`.
//!   Clients' `status` is ignored; nothing fills ResourceQuota `status`. No `generation`.
//! - Continue tokens read the live store after the last key, not a snapshot; they never
//!   expire (no 410). `resourceVersion` parameters on GET and LIST are ignored; watch is 405.
//!   PUT never creates. No `/finalize` or `/status` subresources, no deletecollection, no
//!   discovery (`/api`, `/apis`), no authentication (any token is accepted).

mod model;
mod selector;
mod server;
mod ssa;

pub use model::{ApiError, Kind};
pub use server::{DEFAULT_TERMINATION_DELAY, FakeKube, LoggedRequest};
