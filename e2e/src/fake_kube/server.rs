//! The fake's state, its HTTP handler and its test-facing handle.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::model::{self, ApiError, Kind};
use super::selector::{FieldSelector, LabelSelector, check_label};
use super::ssa::{self, ManagedEntry};

/// How long a deleted namespace stays `Terminating` unless the test says otherwise.
pub const DEFAULT_TERMINATION_DELAY: Duration = Duration::from_millis(200);

/// The label the control plane puts on every namespace (documented, immutable).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Why a second DELETE of a terminating namespace fails (the namespace registry's words).
const STILL_TERMINATING: &str = "The system is ensuring all content is removed from this \
    namespace.  Upon completion, this namespace will automatically be purged by the system.";

/// One request as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
    pub content_type: Option<String>,
}

/// `(namespace, name)`; the namespace is `""` for cluster-scoped objects.
type Key = (String, String);

#[derive(Debug, Clone)]
struct Stored {
    uid: String,
    created: String,
    resource_version: u64,
    /// A namespace's `deletionTimestamp`.
    deleted_at: Option<String>,
    /// Everything a manager can own: the object without apiVersion, kind, name, namespace,
    /// server-set metadata and status.
    content: Value,
    managed: Vec<ManagedEntry>,
}

/// What a write did.
#[derive(Debug)]
struct Written {
    code: u16,
    object: Value,
    changed: bool,
}

/// How a write is made.
#[derive(Debug, Clone, Copy)]
struct WriteOptions<'a> {
    manager: &'a str,
    force: bool,
    dry_run: bool,
}

#[derive(Debug)]
struct State {
    stores: [BTreeMap<Key, Stored>; Kind::ALL.len()],
    /// The last resourceVersion handed out.
    resource_version: u64,
    /// Terminating namespaces and when they disappear.
    terminating: BTreeMap<String, Instant>,
    termination_delay: Duration,
    /// Requests left to fail, and their status code.
    fail_next: (u32, u16),
    mutating_requests: u64,
    changes: u64,
    log: Vec<LoggedRequest>,
}

impl State {
    fn new() -> Self {
        State {
            stores: Default::default(),
            resource_version: 0,
            terminating: BTreeMap::new(),
            termination_delay: DEFAULT_TERMINATION_DELAY,
            fail_next: (0, 500),
            mutating_requests: 0,
            changes: 0,
            log: Vec::new(),
        }
    }

    fn store(&self, kind: Kind) -> &BTreeMap<Key, Stored> {
        &self.stores[kind.index()]
    }

    /// Removes the namespaces whose termination delay has passed, with their content.
    fn purge_terminated(&mut self, now: Instant) {
        let done: Vec<String> = self
            .terminating
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(ns, _)| ns.clone())
            .collect();
        for namespace in done {
            self.purge(&namespace);
        }
    }

    fn purge(&mut self, namespace: &str) {
        self.terminating.remove(namespace);
        for kind in Kind::ALL {
            let store = &mut self.stores[kind.index()];
            if kind.namespaced() {
                let keys: Vec<Key> = store
                    .range((namespace.to_owned(), String::new())..)
                    .take_while(|(k, _)| k.0 == namespace)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    store.remove(&key);
                }
            } else {
                store.remove(&(String::new(), namespace.to_owned()));
            }
        }
        self.resource_version += 1;
    }

    /// NamespaceLifecycle admission for a new object in `namespace`.
    fn admit_new(&self, kind: Kind, namespace: &str, name: &str) -> Result<(), ApiError> {
        if !kind.namespaced() {
            return Ok(());
        }
        match self.store(Kind::Namespace).get(&(String::new(), namespace.to_owned())) {
            None => Err(model::not_found(Kind::Namespace, namespace)),
            Some(ns) if ns.deleted_at.is_some() => Err(model::terminating(kind, name, namespace)),
            Some(_) => Ok(()),
        }
    }

    fn get(&self, kind: Kind, key: &Key) -> Result<Value, ApiError> {
        self.store(kind)
            .get(key)
            .map(|stored| render(kind, key, stored, true))
            .ok_or_else(|| model::not_found(kind, &key.1))
    }

    /// POST to a collection.
    fn create(
        &mut self,
        kind: Kind,
        namespace: &str,
        body: Value,
        options: WriteOptions<'_>,
    ) -> Result<Written, ApiError> {
        let incoming = Incoming::split(kind, body, false)?;
        let name = incoming.name.clone().unwrap_or_default();
        incoming.check_namespace(namespace)?;
        validate(kind, &name, &incoming.content)?;
        let key = (namespace.to_owned(), name);
        if self.store(kind).contains_key(&key) {
            return Err(model::already_exists(kind, &key.1));
        }
        self.admit_new(kind, namespace, &key.1)?;
        let outcome = ssa::update(
            &json!({}),
            &[],
            options.manager,
            kind.api_version(),
            &incoming.content,
            &timestamp(),
        );
        Ok(self.commit(kind, key, outcome, options.dry_run))
    }

    /// PUT, and the object a merge or JSON patch produced.
    fn replace(
        &mut self,
        kind: Kind,
        key: Key,
        body: Value,
        options: WriteOptions<'_>,
    ) -> Result<Written, ApiError> {
        let incoming = Incoming::split(kind, body, false)?;
        incoming.check_name(&key.1)?;
        incoming.check_namespace(&key.0)?;
        validate(kind, &key.1, &incoming.content)?;
        let live = self.store(kind).get(&key).ok_or_else(|| model::not_found(kind, &key.1))?;
        if incoming
            .resource_version
            .as_ref()
            .is_some_and(|rv| *rv != live.resource_version.to_string())
        {
            return Err(model::stale_resource_version(kind, &key.1));
        }
        let outcome = ssa::update(
            &live.content,
            &live.managed,
            options.manager,
            kind.api_version(),
            &incoming.content,
            &timestamp(),
        );
        Ok(self.commit(kind, key, outcome, options.dry_run))
    }

    /// Server-side apply (`application/apply-patch+yaml`).
    fn apply(
        &mut self,
        kind: Kind,
        key: Key,
        body: Value,
        options: WriteOptions<'_>,
    ) -> Result<Written, ApiError> {
        let incoming = Incoming::split(kind, body, true)?;
        incoming.check_name(&key.1)?;
        incoming.check_namespace(&key.0)?;
        validate(kind, &key.1, &incoming.content)?;
        let live = self.store(kind).get(&key);
        if let Some(rv) = &incoming.resource_version
            && live.is_none_or(|l| *rv != l.resource_version.to_string())
        {
            return Err(model::stale_resource_version(kind, &key.1));
        }
        if live.is_none() {
            self.admit_new(kind, &key.0, &key.1)?;
        }
        let empty = json!({});
        let (content, managed) = live.map_or((&empty, &[][..]), |l| (&l.content, &l.managed[..]));
        let now = timestamp();
        let request = ssa::Apply {
            manager: options.manager,
            api_version: kind.api_version(),
            config: &incoming.content,
            force: options.force,
            now: &now,
        };
        let outcome =
            ssa::apply(content, managed, &request).map_err(|c| model::apply_conflict(&c))?;
        Ok(self.commit(kind, key, outcome, options.dry_run))
    }

    /// Stores an outcome unless it changes nothing; bumps the resourceVersion on a change.
    fn commit(&mut self, kind: Kind, key: Key, outcome: ssa::Outcome, dry_run: bool) -> Written {
        let ssa::Outcome { mut content, managed } = outcome;
        settle(kind, &key.1, &mut content);
        let next_version = self.resource_version + 1;
        let store = &mut self.stores[kind.index()];
        match store.get_mut(&key) {
            Some(live)
                if live.content == content && ssa::same_ownership(&live.managed, &managed) =>
            {
                Written { code: 200, object: render(kind, &key, live, true), changed: false }
            }
            Some(live) if dry_run => {
                let preview = Stored { content, managed, ..live.clone() };
                Written { code: 200, object: render(kind, &key, &preview, true), changed: false }
            }
            Some(live) => {
                live.content = content;
                live.managed = managed;
                live.resource_version = next_version;
                self.resource_version = next_version;
                Written { code: 200, object: render(kind, &key, live, true), changed: true }
            }
            None => {
                let stored = Stored {
                    uid: new_uid(),
                    created: timestamp(),
                    resource_version: if dry_run { 0 } else { next_version },
                    deleted_at: None,
                    content,
                    managed,
                };
                let object = render(kind, &key, &stored, true);
                if !dry_run {
                    store.insert(key, stored);
                    self.resource_version = next_version;
                }
                Written { code: 201, object, changed: !dry_run }
            }
        }
    }

    /// DELETE of one object. A namespace turns `Terminating` and goes later, with its content.
    fn delete(
        &mut self,
        kind: Kind,
        key: Key,
        body: &Value,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        let live = self.store(kind).get(&key).ok_or_else(|| model::not_found(kind, &key.1))?;
        let preconditions = &body["preconditions"];
        if let Some(uid) = preconditions["uid"].as_str().filter(|uid| *uid != live.uid) {
            let why = format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                live.uid
            );
            return Err(model::conflict(kind, &key.1, &why));
        }
        if let Some(rv) = preconditions["resourceVersion"]
            .as_str()
            .filter(|rv| *rv != live.resource_version.to_string())
        {
            let why = format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                live.resource_version
            );
            return Err(model::conflict(kind, &key.1, &why));
        }
        if kind == Kind::Namespace {
            if live.deleted_at.is_some() {
                return Err(model::conflict(kind, &key.1, STILL_TERMINATING));
            }
            let mut terminating = live.clone();
            terminating.deleted_at = Some(timestamp());
            if !dry_run {
                self.resource_version += 1;
                terminating.resource_version = self.resource_version;
                self.terminating.insert(key.1.clone(), Instant::now() + self.termination_delay);
                self.stores[kind.index()].insert(key.clone(), terminating.clone());
            }
            let object = render(kind, &key, &terminating, true);
            return Ok(Written { code: 200, object, changed: !dry_run });
        }
        let mut details = json!({"name": key.1, "kind": kind.plural(), "uid": live.uid});
        if !kind.group().is_empty() {
            details["group"] = kind.group().into();
        }
        if !dry_run {
            self.stores[kind.index()].remove(&key);
            self.resource_version += 1;
        }
        let object = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        });
        Ok(Written { code: 200, object, changed: !dry_run })
    }

    /// LIST with selectors and `limit`/`continue` paging. `namespace` `None` lists every
    /// namespace of a namespaced kind.
    fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        params: &BTreeMap<String, String>,
    ) -> Result<Value, ApiError> {
        let param = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
        let labels = LabelSelector::parse(param("labelSelector"))
            .map_err(|e| model::bad_request(&e.to_string()))?;
        let fields = FieldSelector::parse(param("fieldSelector"))
            .map_err(|e| model::bad_request(&e.to_string()))?;
        let limit = match param("limit") {
            "" | "0" => usize::MAX,
            n => n.parse().map_err(|_| model::bad_request(&format!("invalid limit {n:?}")))?,
        };
        let (list_version, after) = match param("continue") {
            "" => (self.resource_version, None),
            token => {
                let (rv, key) = decode_continue(token)?;
                (rv, Some(key))
            }
        };
        let lower = match (&after, namespace) {
            (Some(key), _) => Bound::Excluded(key.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_owned(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let mut matching = self
            .store(kind)
            .range((lower, Bound::Unbounded))
            .take_while(|(key, _)| namespace.is_none_or(|ns| key.0 == ns))
            .filter(|(key, stored)| {
                let labels_of = stored.content.pointer("/metadata/labels");
                fields.matches(&key.0, &key.1)
                    && labels.matches(|k| labels_of.and_then(|l| l.get(k)).and_then(Value::as_str))
            });
        let mut items = Vec::new();
        let mut last = None;
        for (key, stored) in matching.by_ref().take(limit) {
            items.push(render(kind, key, stored, false));
            last = Some(key);
        }
        let mut metadata = json!({"resourceVersion": list_version.to_string()});
        if let Some(last) = last
            && matching.next().is_some()
        {
            metadata["continue"] = encode_continue(list_version, last).into();
        }
        Ok(json!({
            "kind": format!("{}List", kind.kind()),
            "apiVersion": kind.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }
}

/// What an incoming object says besides its content.
#[derive(Debug)]
struct Incoming {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    content: Value,
}

impl Incoming {
    /// Checks `apiVersion`/`kind` (required for `apply`) and splits off the fields no manager
    /// owns: identity, server-set metadata, `status`, and a namespace's `spec.finalizers`.
    fn split(kind: Kind, body: Value, apply: bool) -> Result<Self, ApiError> {
        let Value::Object(mut object) = body else {
            return Err(model::bad_request("the request body must be a JSON object"));
        };
        let api_version = object.remove("apiVersion");
        let declared_kind = object.remove("kind");
        match (
            api_version.as_ref().and_then(Value::as_str),
            declared_kind.as_ref().and_then(Value::as_str),
        ) {
            (Some(v), _) if v != kind.api_version() => {
                return Err(model::bad_request(&format!(
                    "the API version in the data ({v}) does not match the expected API version ({})",
                    kind.api_version()
                )));
            }
            (_, Some(k)) if k != kind.kind() => {
                return Err(model::bad_request(&format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    kind.kind()
                )));
            }
            (None, _) | (_, None) if apply => {
                return Err(model::bad_request(
                    "apiVersion and kind must be set in the body of an apply request",
                ));
            }
            _ => {}
        }
        object.remove("status");
        let mut metadata = match object.remove("metadata") {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err(model::bad_request("metadata must be an object")),
        };
        let take = |m: &mut Map<String, Value>, k: &str| match m.remove(k) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let name = take(&mut metadata, "name");
        let namespace = take(&mut metadata, "namespace").filter(|ns| !ns.is_empty());
        let resource_version = take(&mut metadata, "resourceVersion").filter(|rv| !rv.is_empty());
        let managed_fields = metadata.remove("managedFields").is_some_and(|m| !m.is_null());
        if apply && managed_fields {
            return Err(model::bad_request("metadata.managedFields must be nil"));
        }
        for server_set in [
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            metadata.remove(server_set);
        }
        if !metadata.is_empty() {
            object.insert("metadata".into(), Value::Object(metadata));
        }
        if kind == Kind::Namespace
            && let Some(Value::Object(spec)) = object.get_mut("spec")
            && spec.remove("finalizers").is_some()
            && spec.is_empty()
        {
            object.remove("spec");
        }
        Ok(Incoming { name, namespace, resource_version, content: Value::Object(object) })
    }

    fn check_name(&self, url_name: &str) -> Result<(), ApiError> {
        match self.name.as_deref() {
            Some(name) if name == url_name => Ok(()),
            name => Err(model::bad_request(&format!(
                "the name of the object ({}) does not match the name on the URL ({url_name})",
                name.unwrap_or("")
            ))),
        }
    }

    fn check_namespace(&self, url_namespace: &str) -> Result<(), ApiError> {
        match self.namespace.as_deref() {
            Some(ns) if ns != url_namespace => Err(model::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            _ => Ok(()),
        }
    }
}

/// Name and label validation, as the API server's validation answers it (422).
fn validate(kind: Kind, name: &str, content: &Value) -> Result<(), ApiError> {
    let invalid = |field: &str, value: &str, why: &str| {
        let message = format!(
            "{} {name:?} is invalid: {field}: Invalid value: {value:?}: {why}",
            kind.kind()
        );
        model::invalid(kind, name, &message)
    };
    if name.is_empty() {
        let message = format!(
            "{} {name:?} is invalid: metadata.name: Required value: name or generateName is required",
            kind.kind()
        );
        return Err(model::invalid(kind, name, &message));
    }
    let name_ok = match kind {
        Kind::Namespace => is_dns_label(name),
        Kind::RoleBinding => !matches!(name, "." | "..") && !name.contains(['/', '%']),
        _ => name.len() <= 253 && name.split('.').all(is_dns_label),
    };
    if !name_ok {
        return Err(invalid(
            "metadata.name",
            name,
            "a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.'",
        ));
    }
    if let Some(labels) = content.pointer("/metadata/labels") {
        let Some(labels) = labels.as_object() else {
            return Err(invalid(
                "metadata.labels",
                &labels.to_string(),
                "must be a map of strings",
            ));
        };
        for (key, value) in labels {
            let Some(value) = value.as_str() else {
                return Err(invalid(
                    "metadata.labels",
                    &value.to_string(),
                    "label values must be strings",
                ));
            };
            check_label(key, value).map_err(|why| invalid("metadata.labels", value, &why))?;
        }
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    let edges = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    s.len() <= 63
        && edges(s.chars().next())
        && edges(s.chars().last())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Puts back what the control plane sets: a namespace's name label and `kubernetes` finalizer.
fn settle(kind: Kind, name: &str, content: &mut Value) {
    if kind != Kind::Namespace {
        return;
    }
    let object = content.as_object_mut().expect("content is an object");
    let metadata = object.entry("metadata").or_insert_with(|| json!({}));
    let labels = metadata.as_object_mut().map(|m| m.entry("labels").or_insert_with(|| json!({})));
    if let Some(Value::Object(labels)) = labels {
        labels.insert(NAMESPACE_NAME_LABEL.into(), name.into());
    }
    let spec = object.entry("spec").or_insert_with(|| json!({}));
    if let Some(spec) = spec.as_object_mut() {
        spec.insert("finalizers".into(), json!(["kubernetes"]));
    }
}

/// The object as the API returns it; list items (`typed` false) carry no apiVersion/kind.
fn render(kind: Kind, key: &Key, stored: &Stored, typed: bool) -> Value {
    let mut object = Map::new();
    if typed {
        object.insert("apiVersion".into(), kind.api_version().into());
        object.insert("kind".into(), kind.kind().into());
    }
    let mut metadata = Map::new();
    metadata.insert("name".into(), key.1.clone().into());
    if kind.namespaced() {
        metadata.insert("namespace".into(), key.0.clone().into());
    }
    metadata.insert("uid".into(), stored.uid.clone().into());
    if stored.resource_version > 0 {
        metadata.insert("resourceVersion".into(), stored.resource_version.to_string().into());
    }
    metadata.insert("creationTimestamp".into(), stored.created.clone().into());
    if let Some(deleted_at) = &stored.deleted_at {
        metadata.insert("deletionTimestamp".into(), deleted_at.clone().into());
        metadata.insert("deletionGracePeriodSeconds".into(), 0.into());
    }
    if let Some(Value::Object(owned)) = stored.content.get("metadata") {
        metadata.extend(owned.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if !stored.managed.is_empty() {
        let entries = stored.managed.iter().map(ManagedEntry::to_json).collect();
        metadata.insert("managedFields".into(), Value::Array(entries));
    }
    object.insert("metadata".into(), Value::Object(metadata));
    if let Some(content) = stored.content.as_object() {
        object.extend(
            content.iter().filter(|(k, _)| *k != "metadata").map(|(k, v)| (k.clone(), v.clone())),
        );
    }
    if kind == Kind::Namespace {
        let phase = if stored.deleted_at.is_some() { "Terminating" } else { "Active" };
        object.insert("status".into(), json!({"phase": phase}));
    }
    Value::Object(object)
}

fn timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A random UUID-shaped uid.
fn new_uid() -> String {
    let n: u128 = ulid::Ulid::new().into();
    let hex = format!("{n:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// An opaque token: the list's resourceVersion and the last key returned.
fn encode_continue(resource_version: u64, last: &Key) -> String {
    hex::encode(json!([resource_version, last.0, last.1]).to_string())
}

fn decode_continue(token: &str) -> Result<(u64, Key), ApiError> {
    let invalid = || model::bad_request(&format!("continue key is not valid: {token:?}"));
    let bytes = hex::decode(token).map_err(|_| invalid())?;
    let (rv, ns, name): (u64, String, String) =
        serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    Ok((rv, (ns, name)))
}

type Shared = Arc<Mutex<State>>;

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
    if !state.terminating.is_empty() {
        state.purge_terminated(Instant::now());
    }
    state
}

/// A running fake Kubernetes API server on 127.0.0.1.
pub struct FakeKube {
    addr: SocketAddr,
    state: Shared,
    task: JoinHandle<()>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeKube {
    /// Starts the fake on a free loopback port.
    ///
    /// # Errors
    /// The port could not be bound.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts the fake on `addr`.
    ///
    /// # Errors
    /// The address could not be bound.
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::new()));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake Kubernetes API stopped: {e}");
            }
        });
        Ok(FakeKube { addr, state, task })
    }

    /// The API server URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kube client for this server. kube's rustls connector is built `https_or_http`, so an
    /// `http://` cluster URL is spoken to in plain HTTP/1.1; no token is sent.
    ///
    /// # Panics
    /// kube cannot build a client (its TLS setup failed), which would be a bug in the setup.
    pub fn client(&self) -> kube::Client {
        let url = self.url().parse().expect("the fake's URL is a valid URI");
        kube::Client::try_from(kube::Config::new(url)).expect("kube builds a client for http")
    }

    /// Writes a kubeconfig (JSON, which is YAML) pointing at this server, with one context
    /// `fake` and a user with a dummy token, for child processes that read `KUBECONFIG`.
    ///
    /// # Errors
    /// The file could not be written.
    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url()}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
            "current-context": "fake",
            "preferences": {},
        });
        std::fs::write(path, serde_json::to_vec_pretty(&config)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Server-side applies `object` (with apiVersion, kind, metadata.name and, if namespaced,
    /// metadata.namespace) as `manager`, without force: e.g. ArgoCD setting its own label.
    /// Not logged and not counted.
    ///
    /// # Errors
    /// The API's answer: a conflict, a missing namespace, an invalid object.
    pub fn apply_as(&self, manager: &str, object: Value) -> Result<Value, ApiError> {
        let kind = Kind::from_object(&object)
            .ok_or_else(|| model::bad_request("apiVersion and kind name no served kind"))?;
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
        let key = (namespace.to_owned(), name.to_owned());
        let options = WriteOptions { manager, force: false, dry_run: false };
        self.state().apply(kind, key, object, options).map(|w| w.object)
    }

    /// Creates a namespace as `kubectl create` would (manager `kubectl`, operation Update): one
    /// Muster does not manage. Not logged and not counted.
    ///
    /// # Errors
    /// The namespace exists or the name or labels are invalid.
    pub fn create_namespace(&self, name: &str, labels: &[(&str, &str)]) -> Result<Value, ApiError> {
        let labels: Map<String, Value> =
            labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())).collect();
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}});
        let options = WriteOptions { manager: "kubectl", force: false, dry_run: false };
        self.state().create(Kind::Namespace, "", body, options).map(|w| w.object)
    }

    /// The object as a GET would return it; `namespace` is `None` for a namespace.
    pub fn get(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Option<Value> {
        let key = (namespace.unwrap_or("").to_owned(), name.to_owned());
        self.state().get(kind, &key).ok()
    }

    /// Every object of `kind`, in every namespace, ordered by namespace and name.
    pub fn list(&self, kind: Kind) -> Vec<Value> {
        let state = self.state();
        state.store(kind).iter().map(|(key, stored)| render(kind, key, stored, true)).collect()
    }

    /// The names of all namespaces, terminating ones included.
    pub fn namespace_names(&self) -> Vec<String> {
        self.state().store(Kind::Namespace).keys().map(|(_, name)| name.clone()).collect()
    }

    /// POST, PUT, PATCH and DELETE requests received, whatever their answer.
    pub fn mutating_requests(&self) -> u64 {
        self.state().mutating_requests
    }

    /// Requests that changed stored state (no-op applies, dry runs and failures do not).
    pub fn changes(&self) -> u64 {
        self.state().changes
    }

    /// Zeroes both counters and clears the request log.
    pub fn reset_counters(&self) {
        let mut state = self.state();
        state.mutating_requests = 0;
        state.changes = 0;
        state.log.clear();
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state().log.clone()
    }

    /// Answers the next `n` requests, whatever they are, with `status` as a `Status` object.
    /// kube's default client retries 429, 503 and 504 by itself, so those are seen only as
    /// latency unless `n` exceeds its retries.
    pub fn fail_next(&self, n: u32, status: u16) {
        self.state().fail_next = (n, status);
    }

    /// How long namespaces deleted from now on stay `Terminating` (default
    /// [`DEFAULT_TERMINATION_DELAY`]).
    pub fn set_termination_delay(&self, delay: Duration) {
        self.state().termination_delay = delay;
    }

    /// Removes every terminating namespace and its content now.
    pub fn finish_terminations(&self) {
        let mut state = self.state();
        let namespaces: Vec<String> = state.terminating.keys().cloned().collect();
        for namespace in namespaces {
            state.purge(&namespace);
        }
    }
}

/// The parts of a request the routes read.
struct Request {
    method: Method,
    path: String,
    params: BTreeMap<String, String>,
    content_type: Option<String>,
    user_agent: Option<String>,
    body: Bytes,
}

impl Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    fn dry_run(&self) -> Result<bool, ApiError> {
        match self.param("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(model::bad_request(&format!("unsupported dry run value {other:?}"))),
        }
    }

    /// `fieldManager`, else the User-Agent's product name (as the API server derives it).
    fn update_manager(&self) -> String {
        match self.param("fieldManager") {
            Some(manager) => manager.to_owned(),
            None => {
                self.user_agent.as_deref().unwrap_or("").split('/').next().unwrap_or("").to_owned()
            }
        }
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| model::bad_request(&format!("the request body is not valid JSON: {e}")))
    }
}

/// Where a request goes.
enum Target {
    /// A collection: `namespace` is `Some("")` for namespaces, `None` for every namespace.
    Collection {
        kind: Kind,
        namespace: Option<String>,
    },
    Object {
        kind: Kind,
        key: Key,
    },
}

async fn handle(
    AxumState(shared): AxumState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let header = |name: header::HeaderName| {
        headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    };
    let params = Query::<BTreeMap<String, String>>::try_from_uri(&uri).map(|q| q.0);
    let request = Request {
        method: method.clone(),
        path: uri.path().to_owned(),
        params: params.as_ref().cloned().unwrap_or_default(),
        content_type: header(header::CONTENT_TYPE),
        user_agent: header(header::USER_AGENT),
        body,
    };
    let mutating = matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);

    let mut state = lock(&shared);
    if mutating {
        state.mutating_requests += 1;
    }
    let answer = if state.fail_next.0 > 0 {
        state.fail_next.0 -= 1;
        Err(model::injected(state.fail_next.1))
    } else if params.is_err() {
        Err(model::bad_request("the query string is malformed"))
    } else {
        serve(&mut state, &request)
    };
    let (code, body) = match answer {
        Ok(written) => {
            if written.changed {
                state.changes += 1;
            }
            (written.code, written.object)
        }
        Err(error) => (error.code, error.status),
    };
    state.log.push(LoggedRequest {
        method: method.to_string(),
        path: request.path,
        query: uri.query().map(str::to_owned),
        status: code,
        content_type: request.content_type,
    });
    drop(state);

    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn serve(state: &mut State, r: &Request) -> Result<Written, ApiError> {
    let segments: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    let target = match segments.as_slice() {
        ["version"] if r.method == Method::GET => {
            return Ok(Written { code: 200, object: version(), changed: false });
        }
        ["api", "v1", rest @ ..] => target("v1", rest),
        ["apis", group, version, rest @ ..] => target(&format!("{group}/{version}"), rest),
        _ => None,
    };
    let ok = |object| Ok(Written { code: 200, object, changed: false });
    match (target.ok_or_else(model::no_route)?, &r.method) {
        (Target::Collection { kind, namespace }, &Method::GET) => {
            if r.param("watch").is_some_and(|w| w == "1" || w == "true") {
                return Err(model::method_not_allowed(
                    "watch is not served by this fake API server",
                ));
            }
            ok(state.list(kind, namespace.as_deref(), &r.params)?)
        }
        (Target::Collection { kind, namespace: Some(namespace) }, &Method::POST) => {
            let manager = r.update_manager();
            let options = WriteOptions { manager: &manager, force: false, dry_run: r.dry_run()? };
            state.create(kind, &namespace, r.json_body()?, options)
        }
        (Target::Collection { .. }, _) => Err(model::method_not_allowed(&format!(
            "{} is not served on this collection",
            r.method
        ))),
        (Target::Object { kind, key }, &Method::GET) => ok(state.get(kind, &key)?),
        (Target::Object { kind, key }, &Method::PUT) => {
            let manager = r.update_manager();
            let options = WriteOptions { manager: &manager, force: false, dry_run: r.dry_run()? };
            state.replace(kind, key, r.json_body()?, options)
        }
        (Target::Object { kind, key }, &Method::PATCH) => patch(state, r, kind, key),
        (Target::Object { kind, key }, &Method::DELETE) => {
            state.delete(kind, key, &r.json_body()?, r.dry_run()?)
        }
        (Target::Object { .. }, _) => {
            Err(model::method_not_allowed(&format!("{} is not served on this object", r.method)))
        }
    }
}

/// The target of the path after `/api/v1` or `/apis/{group}/{version}`.
fn target(api_version: &str, rest: &[&str]) -> Option<Target> {
    let namespaced = |plural| Kind::from_route(api_version, plural).filter(|k| k.namespaced());
    let owned = |ns: &str, name: &str| (ns.to_owned(), name.to_owned());
    match rest {
        [plural] => {
            let kind = Kind::from_route(api_version, plural)?;
            let namespace = (!kind.namespaced()).then(String::new);
            Some(Target::Collection { kind, namespace })
        }
        ["namespaces", name] if api_version == "v1" => {
            Some(Target::Object { kind: Kind::Namespace, key: owned("", name) })
        }
        ["namespaces", ns, plural] => Some(Target::Collection {
            kind: namespaced(plural)?,
            namespace: Some((*ns).to_owned()),
        }),
        ["namespaces", ns, plural, name] => {
            Some(Target::Object { kind: namespaced(plural)?, key: owned(ns, name) })
        }
        _ => None,
    }
}

fn patch(state: &mut State, r: &Request, kind: Kind, key: Key) -> Result<Written, ApiError> {
    let content_type = r.content_type.as_deref().unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    let dry_run = r.dry_run()?;
    let force = match r.param("force") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(model::bad_request(&format!("invalid force value {other:?}"))),
    };
    if force && media_type != "application/apply-patch+yaml" {
        return Err(model::bad_request("force is only allowed for apply patches"));
    }
    let manager = r.update_manager();
    let update = WriteOptions { manager: &manager, force: false, dry_run };
    match media_type {
        "application/apply-patch+yaml" => {
            let Some(manager) = r.param("fieldManager").filter(|m| !m.is_empty()) else {
                return Err(model::bad_request("fieldManager is required for apply requests"));
            };
            let body = serde_json::from_slice(&r.body).map_err(|e| {
                model::bad_request(&format!("this fake reads apply bodies as JSON only: {e}"))
            })?;
            state.apply(kind, key, body, WriteOptions { manager, force, dry_run })
        }
        "application/merge-patch+json" => {
            let patch = r.json_body()?;
            let mut object = state.get(kind, &key)?;
            json_patch::merge(&mut object, &patch);
            state.replace(kind, key, object, update)
        }
        "application/json-patch+json" => {
            let patch: json_patch::Patch = serde_json::from_slice(&r.body)
                .map_err(|e| model::bad_request(&format!("invalid JSON patch: {e}")))?;
            let mut object = state.get(kind, &key)?;
            json_patch::patch(&mut object, &patch).map_err(|e| {
                model::invalid(kind, &key.1, &format!("the JSON patch failed: {e}"))
            })?;
            state.replace(kind, key, object, update)
        }
        _ => Err(model::unsupported_media_type(content_type)),
    }
}

/// `/version` as the API server answers it, for the Kubernetes version k8s-openapi targets.
fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}
