//! The kinds the fake serves and the API server's `Status` error bodies.

use serde_json::{Value, json};

use super::ssa::{Conflict, conflict_message};

/// A resource the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    ResourceQuota,
    LimitRange,
    RoleBinding,
    NetworkPolicy,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Namespace,
        Kind::ResourceQuota,
        Kind::LimitRange,
        Kind::RoleBinding,
        Kind::NetworkPolicy,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::ResourceQuota => "ResourceQuota",
            Kind::LimitRange => "LimitRange",
            Kind::RoleBinding => "RoleBinding",
            Kind::NetworkPolicy => "NetworkPolicy",
        }
    }

    /// The resource name in URLs, e.g. `resourcequotas`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::ResourceQuota => "resourcequotas",
            Kind::LimitRange => "limitranges",
            Kind::RoleBinding => "rolebindings",
            Kind::NetworkPolicy => "networkpolicies",
        }
    }

    /// The API group; `""` for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::ResourceQuota | Kind::LimitRange => "",
            Kind::RoleBinding => "rbac.authorization.k8s.io",
            Kind::NetworkPolicy => "networking.k8s.io",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::ResourceQuota | Kind::LimitRange => "v1",
            Kind::RoleBinding => "rbac.authorization.k8s.io/v1",
            Kind::NetworkPolicy => "networking.k8s.io/v1",
        }
    }

    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// The kind served at `plural` under `api_version` (`v1`, `networking.k8s.io/v1`).
    pub fn from_route(api_version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.api_version() == api_version && k.plural() == plural)
    }

    /// The kind an object declares with `apiVersion` and `kind`.
    pub fn from_object(object: &Value) -> Option<Kind> {
        let (api_version, kind) = (object["apiVersion"].as_str()?, object["kind"].as_str()?);
        Kind::ALL.into_iter().find(|k| k.api_version() == api_version && k.kind() == kind)
    }

    /// `resource.group` as the API server names it in messages: `namespaces`,
    /// `rolebindings.rbac.authorization.k8s.io`.
    pub fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_owned(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// An API error: the HTTP code and the `Status` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub status: Value,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.status["message"].as_str().unwrap_or(""))
    }
}

impl std::error::Error for ApiError {}

/// The `Status` object for a failure (metav1.Status; `details` omitted when `None`).
pub fn failure(code: u16, reason: &str, message: &str, details: Option<Value>) -> ApiError {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(details) = details {
        status["details"] = details;
    }
    ApiError { code, status }
}

fn details(kind: Kind, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": kind.plural()});
    if !kind.group().is_empty() {
        d["group"] = kind.group().into();
    }
    d
}

pub fn not_found(kind: Kind, name: &str) -> ApiError {
    let message = format!("{} {name:?} not found", kind.qualified());
    failure(404, "NotFound", &message, Some(details(kind, name)))
}

/// A path the server does not serve.
pub fn no_route() -> ApiError {
    failure(404, "NotFound", "the server could not find the requested resource", Some(json!({})))
}

pub fn already_exists(kind: Kind, name: &str) -> ApiError {
    let message = format!("{} {name:?} already exists", kind.qualified());
    failure(409, "AlreadyExists", &message, Some(details(kind, name)))
}

/// apimachinery's `NewConflict`: `Operation cannot be fulfilled on <resource> "<name>": <why>`.
pub fn conflict(kind: Kind, name: &str, why: &str) -> ApiError {
    let message = format!("Operation cannot be fulfilled on {} {name:?}: {why}", kind.qualified());
    failure(409, "Conflict", &message, Some(details(kind, name)))
}

pub fn stale_resource_version(kind: Kind, name: &str) -> ApiError {
    conflict(
        kind,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

/// The NamespaceLifecycle admission answer for new content in a terminating namespace.
pub fn terminating(kind: Kind, name: &str, namespace: &str) -> ApiError {
    let message = format!(
        "{} {name:?} is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
        kind.qualified()
    );
    failure(403, "Forbidden", &message, Some(details(kind, name)))
}

pub fn bad_request(message: &str) -> ApiError {
    failure(400, "BadRequest", message, None)
}

pub fn invalid(kind: Kind, name: &str, message: &str) -> ApiError {
    failure(422, "Invalid", message, Some(details(kind, name)))
}

pub fn method_not_allowed(message: &str) -> ApiError {
    failure(405, "MethodNotAllowed", message, None)
}

pub fn unsupported_media_type(content_type: &str) -> ApiError {
    let message = format!(
        "the body of the request was in an unknown format ({content_type:?}) - accepted media types include: \
         application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    );
    failure(415, "UnsupportedMediaType", &message, None)
}

/// apimachinery's `NewApplyConflict`: every conflict as a `FieldManagerConflict` cause.
pub fn apply_conflict(conflicts: &[Conflict]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {}", c.manager),
                "field": c.field(),
            })
        })
        .collect();
    failure(409, "Conflict", &conflict_message(conflicts), Some(json!({"causes": causes})))
}

/// An injected failure with the reason Kubernetes pairs with `code`.
pub fn injected(code: u16) -> ApiError {
    let reason = match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    failure(code, reason, &format!("injected fault: {reason}"), None)
}
