//! What a caller may do: policy as code in Rego, evaluated in process by regorus
//! ([`RegoPolicy`]) or by a remote OPA ([`OpaPolicy`]).
//!
//! The HTTP API describes each request as an [`Input`] (who, which action on which resource,
//! which fields change) and asks an [`Authorizer`] for a [`Decision`]. Both authorizers read
//! `allow` and `reasons` from the package `muster.authz`; the shipped policy is
//! `config/policies/authz.rego`, its tests `config/policies/authz_test.rego`. The site's
//! [`PolicyData`] is the policy's `data.config`.
//!
//! Layout: this file holds the contract (types and trait); `rego.rs` the in-process evaluator
//! and the Rego test runner; `opa.rs` the OPA client with its decision cache.
//!
//! # Guarantees
//!
//! [`Authorizer::decide`] never fails: a policy error, an undefined `allow`, an OPA server that is
//! unreachable, slow or answers garbage — each is a deny whose reason says what went wrong
//! (fail closed), logged as a warning.

mod opa;
mod rego;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::AuthzConfig;

pub use opa::{OpaConfig, OpaError, OpaPolicy};
pub use rego::{PolicyError, PolicySource, RegoPolicy, TestOutcome, run_tests};

/// One API request, as the policy sees it (`input`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Input {
    /// Who calls.
    pub subject: Subject,
    /// `<kind>.<verb>`: `team.create`, `team.read`, `team.update`, `team.delete`, `team.sync`,
    /// `team.purge`, `environment.create`, `environment.read`, `environment.update`,
    /// `environment.delete`, `namespace.read`, `run.read`, `run.retry`, `dlq.read`,
    /// `dlq.replay`, `event.publish`.
    pub action: String,
    /// What the action is on.
    pub resource: Resource,
    /// The top-level spec fields the request changes: for an update those it modifies, for a
    /// create every field it sets.
    #[serde(default)]
    pub changes: Vec<String>,
    /// The HTTP request, for policies that want it.
    #[serde(default)]
    pub request: RequestInfo,
}

/// The authenticated caller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    /// The caller's id (for people, the GitHub login); empty when unauthenticated.
    pub id: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The resource an action is on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// `team`, `environment`, `namespace`, `run`, `dlq` or `event`.
    pub kind: String,
    /// The resource's name (a team's slug, an environment's name, a run id, …).
    #[serde(default)]
    pub name: String,
    /// The team the resource belongs to, if any.
    #[serde(default)]
    pub team: Option<String>,
    /// The environment the resource belongs to, if any.
    #[serde(default)]
    pub environment: Option<String>,
    /// The stored record's spec as JSON (for a team: slug, name, description, members,
    /// maintainers, parent, quota_profile, labels); `None` (null) when it does not exist yet.
    #[serde(default)]
    pub current: Option<serde_json::Value>,
    /// For `team.delete`: the environments where the team has a namespace.
    #[serde(default)]
    pub namespaces: Vec<NamespaceRef>,
    /// For `event.publish`: the event.
    #[serde(default)]
    pub event: Option<EventRef>,
}

/// An environment where a team has a namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamespaceRef {
    pub environment: String,
    /// Whether the environment lets Muster delete namespaces (when false, only admins may delete
    /// the team).
    #[serde(default)]
    pub allow_namespace_deletion: bool,
}

/// The CloudEvent a caller wants to publish.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventRef {
    #[serde(rename = "type")]
    pub type_: String,
    pub source: String,
    #[serde(default)]
    pub subject: Option<String>,
}

/// The HTTP request behind an [`Input`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestInfo {
    pub method: String,
    pub path: String,
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub allow: bool,
    /// Why: for an allow, the rules that granted it; for a deny, the rules that refused (or
    /// what failed).
    #[serde(default)]
    pub reasons: Vec<String>,
}

impl Decision {
    /// A deny for one reason: what a failure to decide becomes.
    pub fn deny(reason: impl Into<String>) -> Self {
        Self { allow: false, reasons: vec![reason.into()] }
    }
}

/// The site's configuration that the policy reads as `data.config`.
///
/// Field names are the policy's (snake_case), so a `--data` file is the same JSON the policy
/// sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyData {
    /// Members of any of these groups may do everything.
    pub admin_groups: Vec<String>,
    /// Who may publish which events through the API (admins may publish any).
    pub publishers: Vec<Publisher>,
}

impl Default for PolicyData {
    fn default() -> Self {
        Self { admin_groups: vec!["muster-admins".to_owned()], publishers: Vec::new() }
    }
}

/// A caller allowed to publish events whose source and type match its patterns.
///
/// Patterns are globs evaluated by Rego's `glob.match`:
/// - `sources` use `/` as the delimiter: `*` matches within one segment, so `/billing/*`
///   matches `/billing/invoices` (and `/billing/`) but not `/billing/eu/invoices`;
/// - `types` use `.` as the delimiter: `*` matches within one token, so `com.acme.billing.*`
///   matches `com.acme.billing.paid` but not `com.acme.billing.paid.v2`;
/// - in both, a whole segment `**` matches any number of segments (`/billing/**`,
///   `com.acme.**`), `?` one character, and `[abc]`/`{a,b}` the usual alternatives.
///
/// Types starting with `muster.` or `com.github.` stay reserved to admins whatever the
/// patterns say.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publisher {
    /// The caller's [`Subject::id`].
    pub subject: String,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub types: Vec<String>,
}

/// Decides whether a request may proceed.
#[async_trait]
pub trait Authorizer: Send + Sync {
    /// The decision for `input`. Never fails: a failure to decide is a deny saying why.
    async fn decide(&self, input: &Input) -> Decision;

    /// What decides, for logs and `engine config check`: e.g. "rego policy config/policies".
    fn describe(&self) -> String;
}

/// Why `[authz]` yields no authorizer (a startup error).
#[derive(Debug, thiserror::Error)]
pub enum AuthorizerError {
    #[error("set either authz.policies (Rego in process) or authz.opa (a remote OPA), not both")]
    PoliciesAndOpa,
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Opa(#[from] OpaError),
}

/// The authorizer `[authz]` configures: the OPA at `opa`, else the Rego in `policies`, else the
/// shipped policy; the last two with `admin_groups` and `publishers` as `data.config` (an OPA
/// server holds its own data).
///
/// # Errors
///
/// Both `opa` and `policies` set, policies that do not load (see [`RegoPolicy::from_dir`]) or an
/// invalid OPA config.
pub fn authorizer(config: &AuthzConfig) -> Result<Arc<dyn Authorizer>, AuthorizerError> {
    match (&config.opa, &config.policies) {
        (Some(_), Some(_)) => Err(AuthorizerError::PoliciesAndOpa),
        (Some(opa), None) => Ok(Arc::new(OpaPolicy::new(opa)?)),
        (None, dir) => {
            let source = PolicySource::from(dir.clone());
            Ok(Arc::new(RegoPolicy::load(&source, &config.policy_data())?))
        }
    }
}
