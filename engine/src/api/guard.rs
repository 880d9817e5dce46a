//! Authentication and authorization of API requests.
//!
//! [`authenticate`] runs before every route: it finds the caller's [`Principal`] (or answers 401
//! with `WWW-Authenticate: Bearer`) and leaves a [`Caller`] in the request for the handler.
//! Handlers then ask [`AppState::authorize`] whether the caller may do what the request asks,
//! describing it as an [`Access`] with the state the policy needs (the stored record, the
//! fields changed); a denial is a 403 whose detail carries the policy's reasons. Every decision
//! is logged on the `muster::audit` target.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use workflows::records::Actor;

use super::problem::{Problem, ProblemKind};
use super::{ApiState, AppState};
use crate::auth::{AuthError, Principal};
use crate::policy::{self, Decision};

/// Routes that answer without credentials: probes, metrics, the API document, and GitHub's
/// webhook (which proves itself with its HMAC signature instead).
const PUBLIC: &[&str] = &["/livez", "/readyz", "/metrics", "/openapi.json", "/v1/webhooks/github"];

/// Who made a request, and what it was (for the policy's `request` input).
#[derive(Clone, Debug)]
pub struct Caller {
    /// `None` when authentication is off (no credentials configured, on loopback only, or
    /// `auth.mode = "none"`): every action is allowed.
    pub principal: Option<Principal>,
    pub method: String,
    pub path: String,
}

impl Caller {
    /// Who the events this request causes name, as the CloudEvents auth context extension
    /// does: `authtype` `user` and `authid` the subject, or `unauthenticated`/`anonymous` when
    /// authentication is off.
    pub fn actor(&self) -> Actor {
        match &self.principal {
            Some(principal) => Actor::new("user", principal.id.as_str()),
            None => Actor::new("unauthenticated", "anonymous"),
        }
    }
}

/// The authentication middleware.
pub async fn authenticate(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    if PUBLIC.contains(&path.as_str()) {
        return next.run(request).await;
    }
    let principal = match &state.authenticator {
        None => None,
        Some(authenticator) => {
            let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            match authenticator.authenticate(header).await {
                Ok(principal) => Some(principal),
                Err(AuthError::Unavailable(detail)) => {
                    return Problem::unavailable(format!("cannot check the token now: {detail}"))
                        .into_response();
                }
                Err(e) => return unauthenticated(&e.to_string()),
            }
        }
    };
    let method = request.method().as_str().to_owned();
    request.extensions_mut().insert(Caller { principal, method, path });
    next.run(request).await
}

/// 401 with the challenge RFC 6750 asks for.
fn unauthenticated(detail: &str) -> Response {
    let mut response = Problem::new(ProblemKind::Unauthorized, detail).into_response();
    let challenge = format!(
        "Bearer realm=\"muster\", error=\"invalid_token\", error_description=\"{}\"",
        detail.replace(['"', '\\'], "'")
    );
    let value = HeaderValue::from_str(&challenge)
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"muster\""));
    response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    response
}

/// What a request asks to do, described for the policy.
#[derive(Clone, Debug)]
pub struct Access {
    pub action: &'static str,
    pub resource: policy::Resource,
    pub changes: Vec<String>,
}

impl Access {
    /// An action on a team.
    pub fn team(action: &'static str, slug: &str) -> Self {
        let mut access = Self::on(action, "team", slug);
        access.resource.team = Some(slug.to_owned());
        access
    }

    /// An action on an environment.
    pub fn environment(action: &'static str, name: &str) -> Self {
        let mut access = Self::on(action, "environment", name);
        access.resource.environment = Some(name.to_owned());
        access
    }

    /// An action on any other kind of resource.
    pub fn on(action: &'static str, kind: &str, name: &str) -> Self {
        Self {
            action,
            resource: policy::Resource {
                kind: kind.to_owned(),
                name: name.to_owned(),
                ..policy::Resource::default()
            },
            changes: Vec::new(),
        }
    }

    /// The record as stored now (its spec).
    pub fn current(mut self, spec: &impl serde::Serialize) -> Self {
        self.resource.current = serde_json::to_value(spec).ok();
        self
    }

    /// For a team's deletion: where it has namespaces, and whether those environments allow
    /// deleting them.
    pub fn namespaces(mut self, namespaces: Vec<policy::NamespaceRef>) -> Self {
        self.resource.namespaces = namespaces;
        self
    }

    /// The top-level fields of the spec the request changes.
    pub fn changes(mut self, fields: Vec<String>) -> Self {
        self.changes = fields;
        self
    }
}

/// The top-level fields whose values differ between two specs (all of `after`'s fields when
/// there is no `before`).
pub fn changed_fields(
    before: Option<&impl serde::Serialize>,
    after: &impl serde::Serialize,
) -> Vec<String> {
    let after = serde_json::to_value(after).unwrap_or_default();
    let before = before.and_then(|b| serde_json::to_value(b).ok()).unwrap_or_default();
    let Some(after) = after.as_object() else { return Vec::new() };
    after
        .iter()
        .filter(|(field, value)| before.get(field.as_str()) != Some(*value))
        .map(|(field, _)| field.clone())
        .collect()
}

impl AppState {
    /// Asks the policy; `Err` is the 403 to answer. With authentication off, everything is
    /// allowed (and logged as such).
    pub async fn authorize(&self, caller: &Caller, access: Access) -> Result<(), Problem> {
        let Some(principal) = &caller.principal else {
            tracing::debug!(target: "muster::audit", action = access.action, kind = %access.resource.kind, name = %access.resource.name, outcome = "allow", "authentication is off");
            return Ok(());
        };
        let input = policy::Input {
            subject: policy::Subject { id: principal.id.clone(), groups: principal.groups.clone() },
            action: access.action.to_owned(),
            resource: access.resource,
            changes: access.changes,
            request: policy::RequestInfo {
                method: caller.method.clone(),
                path: caller.path.clone(),
            },
        };
        let Decision { allow, reasons } = self.authorizer.decide(&input).await;
        tracing::info!(
            target: "muster::audit",
            subject = %principal.id,
            action = %input.action,
            kind = %input.resource.kind,
            name = %input.resource.name,
            outcome = if allow { "allow" } else { "deny" },
            reasons = %reasons.join("; "),
            "authorization decision"
        );
        self.metrics.count_decision(&input.action, allow);
        if allow {
            return Ok(());
        }
        let detail = if reasons.is_empty() {
            format!("{} may not {}", principal.id, input.action)
        } else {
            format!("{} may not {}: {}", principal.id, input.action, reasons.join("; "))
        };
        Err(Problem::new(ProblemKind::Forbidden, detail))
    }
}
