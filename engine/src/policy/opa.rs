//! The remote decision point: an OPA server asked over its REST data API, with a bounded cache
//! of recent decisions.
//!
//! `POST {url}/v1/data/{path}` with `{"input": <Input>}` answers `{"result": {"allow": …,
//! "reasons": […]}}`, or `{}` when the policy is undefined at that path.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Authorizer, Decision, Input};

/// How much of an error answer's body a denial quotes.
const MAX_QUOTED_BODY: usize = 200;

/// Where OPA is and how long to trust its answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct OpaConfig {
    /// OPA's base URL, e.g. `http://opa:8181`.
    pub url: String,
    /// The package to query, `/`- or `.`-separated.
    pub path: String,
    /// How long to wait for an answer before denying.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How many decisions to keep; 0 disables the cache.
    pub cache_size: usize,
    /// How long a decision stays valid: the longest a policy or data change in OPA takes to
    /// apply. Zero disables the cache.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
}

impl Default for OpaConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8181".to_owned(),
            path: "muster/authz".to_owned(),
            timeout: Duration::from_millis(500),
            cache_size: 10_000,
            cache_ttl: Duration::from_secs(5),
        }
    }
}

/// Why an [`OpaPolicy`] cannot be built (at start; deciding never fails).
#[derive(Debug, thiserror::Error)]
pub enum OpaError {
    #[error("opa url {url:?} is not an http(s) URL")]
    InvalidUrl { url: String },
    #[error("opa path is empty")]
    EmptyPath,
    #[error("opa timeout must be more than zero")]
    ZeroTimeout,
    #[error("cannot build the HTTP client for OPA")]
    Client(#[source] reqwest::Error),
}

/// Decisions from an OPA server.
///
/// The server holds the policy and its `data.config` (the engine sends only the input), e.g.
/// `opa run --server config/policies/authz.rego data.json` with `data.json` holding
/// `{"config": <PolicyData>}`. Equal inputs get the cached decision for
/// [`OpaConfig::cache_ttl`], so a policy or data change applies within that time.
#[derive(Debug)]
pub struct OpaPolicy {
    client: reqwest::Client,
    /// `{url}/v1/data/{path}`.
    endpoint: String,
    /// The path as configured, `/`-separated, for messages.
    path: String,
    timeout: Duration,
    cache: Mutex<DecisionCache>,
}

impl OpaPolicy {
    /// Checks `config` and builds the client; does not contact OPA.
    ///
    /// # Errors
    ///
    /// An invalid URL, an empty path or a zero timeout.
    pub fn new(config: &OpaConfig) -> Result<Self, OpaError> {
        let base = config.url.trim_end_matches('/');
        let valid_url = url::Url::parse(base)
            .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
        if !valid_url {
            return Err(OpaError::InvalidUrl { url: config.url.clone() });
        }
        let path = config.path.trim_matches('/').replace('.', "/");
        if path.is_empty() {
            return Err(OpaError::EmptyPath);
        }
        if config.timeout.is_zero() {
            return Err(OpaError::ZeroTimeout);
        }
        let client =
            reqwest::Client::builder().timeout(config.timeout).build().map_err(OpaError::Client)?;
        Ok(Self {
            client,
            endpoint: format!("{base}/v1/data/{path}"),
            path,
            timeout: config.timeout,
            cache: Mutex::new(DecisionCache::new(config.cache_size, config.cache_ttl)),
        })
    }

    /// Asks OPA; `Err` says why there is no decision.
    async fn ask(&self, input: &Input) -> Result<Decision, String> {
        #[derive(Serialize)]
        struct Query<'a> {
            input: &'a Input,
        }
        let response = self
            .client
            .post(&self.endpoint)
            .json(&Query { input })
            .send()
            .await
            .map_err(|e| self.request_failed(&e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(MAX_QUOTED_BODY).collect();
            return Err(format!("OPA answered {status} at {}: {}", self.endpoint, body.trim()));
        }
        let body = response.bytes().await.map_err(|e| self.request_failed(&e))?;
        let answer: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("OPA answered invalid JSON at {}: {e}", self.endpoint))?;
        let answer: Answer = serde_json::from_value(answer).map_err(|e| {
            format!("OPA's answer at {} is not a decision ({{allow, reasons}}): {e}", self.endpoint)
        })?;
        let Some(result) = answer.result else {
            return Err(format!("OPA: policy undefined at {}", self.path));
        };
        let allow = match result.allow {
            Some(allow) => allow,
            None => {
                return Err(format!(
                    "OPA: policy did not decide ({}/allow is undefined)",
                    self.path
                ));
            }
        };
        Ok(Decision { allow, reasons: result.reasons })
    }

    fn request_failed(&self, error: &reqwest::Error) -> String {
        if error.is_timeout() {
            format!("OPA did not answer within {:?} at {}", self.timeout, self.endpoint)
        } else if error.is_connect() {
            format!("OPA is unreachable at {}: {}", self.endpoint, chain(error))
        } else {
            format!("asking OPA at {} failed: {}", self.endpoint, chain(error))
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, DecisionCache> {
        // The cache holds no invariant a panicking holder could break half-way: keep using it.
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Authorizer for OpaPolicy {
    async fn decide(&self, input: &Input) -> Decision {
        // The serialized input is the key: equal inputs, equal decisions (for `cache_ttl`).
        let key = serde_json::to_string(input).ok();
        if let Some(decision) = key.as_deref().and_then(|key| self.cache().get(key, Instant::now()))
        {
            return decision;
        }
        match self.ask(input).await {
            Ok(decision) => {
                if let Some(key) = key {
                    self.cache().insert(key, decision.clone(), Instant::now());
                }
                decision
            }
            Err(reason) => {
                tracing::warn!(action = %input.action, subject = %input.subject.id, %reason,
                    "authorization denied: OPA did not decide");
                Decision::deny(reason)
            }
        }
    }

    fn describe(&self) -> String {
        format!("OPA at {}", self.endpoint)
    }
}

/// OPA's answer; `result` is absent when the policy is undefined at the path.
#[derive(Deserialize)]
struct Answer {
    result: Option<AnswerResult>,
}

#[derive(Deserialize)]
struct AnswerResult {
    allow: Option<bool>,
    #[serde(default)]
    reasons: Vec<String>,
}

/// An error and its causes, `: `-separated (reqwest's own message is terse).
fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Recent decisions by serialized input: at most `capacity`, each for `ttl`; the oldest go
/// first.
#[derive(Debug)]
struct DecisionCache {
    capacity: usize,
    ttl: Duration,
    entries: HashMap<String, CachedDecision>,
    /// Keys in insertion order, each with the `generation` it was inserted at: an entry replaced
    /// since is found by its newer generation and its old place skipped.
    order: VecDeque<(u64, String)>,
    next_generation: u64,
}

#[derive(Debug)]
struct CachedDecision {
    decision: Decision,
    expires: Instant,
    generation: u64,
}

impl DecisionCache {
    fn new(capacity: usize, ttl: Duration) -> Self {
        Self { capacity, ttl, entries: HashMap::new(), order: VecDeque::new(), next_generation: 0 }
    }

    fn enabled(&self) -> bool {
        self.capacity > 0 && !self.ttl.is_zero()
    }

    fn get(&self, key: &str, now: Instant) -> Option<Decision> {
        self.entries
            .get(key)
            .filter(|entry| entry.expires > now)
            .map(|entry| entry.decision.clone())
    }

    fn insert(&mut self, key: String, decision: Decision, now: Instant) {
        if !self.enabled() {
            return;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.order.push_back((generation, key.clone()));
        self.entries.insert(key, CachedDecision { decision, expires: now + self.ttl, generation });
        // Entries expire in insertion order, so the front holds the stale, the expired and, past
        // capacity, the oldest.
        while let Some((generation, key)) = self.order.front() {
            let evict = match self.entries.get(key) {
                Some(entry) if entry.generation == *generation => {
                    entry.expires <= now || self.entries.len() > self.capacity
                }
                _ => {
                    self.order.pop_front();
                    continue;
                }
            };
            if !evict {
                break;
            }
            self.entries.remove(key);
            self.order.pop_front();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Json;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;

    use super::*;
    use crate::policy::{Resource, Subject};

    /// What the fake OPA answers.
    #[derive(Clone, Copy)]
    enum Behaviour {
        Allow,
        Deny,
        Undefined,
        Fail,
        Garbage,
        NotADecision,
        NoAllow,
        Slow(Duration),
    }

    #[derive(Clone)]
    struct Fake {
        behaviour: Behaviour,
        requests: Arc<AtomicUsize>,
        bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    }

    async fn answer(State(fake): State<Fake>, Json(body): Json<serde_json::Value>) -> Response {
        fake.requests.fetch_add(1, Ordering::SeqCst);
        fake.bodies.lock().unwrap().push(body);
        match fake.behaviour {
            Behaviour::Allow => {
                Json(serde_json::json!({"result": {"allow": true, "reasons": ["ok"]}}))
                    .into_response()
            }
            Behaviour::Deny => {
                Json(serde_json::json!({"result": {"allow": false, "reasons": ["no"]}}))
                    .into_response()
            }
            Behaviour::Undefined => Json(serde_json::json!({})).into_response(),
            Behaviour::Fail => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
            Behaviour::Garbage => "not json".into_response(),
            Behaviour::NoAllow => Json(serde_json::json!({"result": {}})).into_response(),
            Behaviour::NotADecision => {
                Json(serde_json::json!({"result": {"allow": "yes"}})).into_response()
            }
            Behaviour::Slow(delay) => {
                tokio::time::sleep(delay).await;
                Json(serde_json::json!({"result": {"allow": true}})).into_response()
            }
        }
    }

    /// A fake OPA on a free port, serving until the test's runtime ends.
    async fn fake_opa(behaviour: Behaviour) -> (OpaConfig, Fake) {
        let fake = Fake { behaviour, requests: Arc::default(), bodies: Arc::default() };
        let app = axum::Router::new()
            .route("/v1/data/muster/authz", post(answer))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = OpaConfig { url, timeout: Duration::from_millis(200), ..OpaConfig::default() };
        (config, fake)
    }

    fn input(action: &str) -> Input {
        Input {
            subject: Subject { id: "alice".into(), groups: vec![] },
            action: action.into(),
            resource: Resource {
                kind: "team".into(),
                name: "payments".into(),
                ..Resource::default()
            },
            ..Input::default()
        }
    }

    async fn decide(behaviour: Behaviour) -> Decision {
        let (config, _fake) = fake_opa(behaviour).await;
        OpaPolicy::new(&config).unwrap().decide(&input("team.read")).await
    }

    #[tokio::test]
    async fn allow_and_deny_come_from_the_result() {
        assert_eq!(
            decide(Behaviour::Allow).await,
            Decision { allow: true, reasons: vec!["ok".into()] }
        );
        assert_eq!(decide(Behaviour::Deny).await, Decision::deny("no"));
    }

    #[tokio::test]
    async fn the_body_wraps_the_input() {
        let (config, fake) = fake_opa(Behaviour::Allow).await;
        let policy = OpaPolicy::new(&config).unwrap();
        let input = input("team.update");
        policy.decide(&input).await;
        let bodies = fake.bodies.lock().unwrap();
        assert_eq!(bodies[..], [serde_json::json!({ "input": input })]);
        assert_eq!(bodies[0]["input"]["action"], "team.update");
    }

    #[tokio::test]
    async fn undefined_is_a_deny() {
        assert_eq!(
            decide(Behaviour::Undefined).await,
            Decision::deny("OPA: policy undefined at muster/authz")
        );
        assert_eq!(
            decide(Behaviour::NoAllow).await,
            Decision::deny("OPA: policy did not decide (muster/authz/allow is undefined)")
        );
    }

    #[tokio::test]
    async fn errors_and_garbage_are_denies() {
        let failed = decide(Behaviour::Fail).await;
        assert!(!failed.allow);
        assert!(
            failed.reasons[0].contains("500 Internal Server Error")
                && failed.reasons[0].contains("boom")
        );
        let garbage = decide(Behaviour::Garbage).await;
        assert!(!garbage.allow);
        assert!(garbage.reasons[0].contains("invalid JSON"), "{garbage:?}");
        let not_a_decision = decide(Behaviour::NotADecision).await;
        assert!(!not_a_decision.allow);
        assert!(not_a_decision.reasons[0].contains("is not a decision"), "{not_a_decision:?}");
    }

    #[tokio::test]
    async fn a_slow_opa_is_a_deny_within_the_timeout() {
        let started = Instant::now();
        let slow = decide(Behaviour::Slow(Duration::from_secs(5))).await;
        let elapsed = started.elapsed();
        assert!(!slow.allow);
        assert!(slow.reasons[0].contains("did not answer within 200ms"), "{slow:?}");
        assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    }

    #[tokio::test]
    async fn an_unreachable_opa_is_a_deny() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let config = OpaConfig { url, timeout: Duration::from_millis(200), ..OpaConfig::default() };
        let decision = OpaPolicy::new(&config).unwrap().decide(&input("team.read")).await;
        assert!(!decision.allow);
        assert!(decision.reasons[0].starts_with("OPA is unreachable"), "{decision:?}");
    }

    #[tokio::test]
    async fn answers_are_cached_and_failures_are_not() {
        let (config, fake) = fake_opa(Behaviour::Allow).await;
        let policy = OpaPolicy::new(&config).unwrap();
        assert!(policy.decide(&input("team.read")).await.allow);
        assert!(policy.decide(&input("team.read")).await.allow);
        assert_eq!(fake.requests.load(Ordering::SeqCst), 1);
        policy.decide(&input("run.read")).await;
        assert_eq!(fake.requests.load(Ordering::SeqCst), 2);

        let (config, fake) = fake_opa(Behaviour::Fail).await;
        let policy = OpaPolicy::new(&config).unwrap();
        policy.decide(&input("team.read")).await;
        policy.decide(&input("team.read")).await;
        assert_eq!(fake.requests.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_cache_is_bounded_and_expires() {
        let decision = Decision::deny("x");
        let now = Instant::now();
        let mut cache = DecisionCache::new(2, Duration::from_secs(5));
        cache.insert("a".into(), decision.clone(), now);
        cache.insert("b".into(), decision.clone(), now);
        cache.insert("c".into(), decision.clone(), now);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("a", now), None, "the oldest goes first");
        assert_eq!(cache.get("c", now), Some(decision.clone()));

        let later = now + Duration::from_secs(6);
        assert_eq!(cache.get("c", later), None, "expired");
        cache.insert("c".into(), decision.clone(), later);
        assert_eq!(cache.len(), 1, "the expired entries are dropped");
        assert_eq!(cache.get("c", later), Some(decision.clone()));
        assert!(cache.order.len() <= 2);

        let mut off = DecisionCache::new(0, Duration::from_secs(5));
        off.insert("a".into(), decision, now);
        assert_eq!(off.len(), 0);
    }

    #[test]
    fn config_is_checked_and_kebab_case() {
        let config: OpaConfig = serde_json::from_value(serde_json::json!({
            "url": "http://opa:8181/", "path": "muster.authz", "timeout": "1s", "cache-ttl": "10s"
        }))
        .unwrap();
        assert_eq!(config.timeout, Duration::from_secs(1));
        assert_eq!(config.cache_size, 10_000);
        let policy = OpaPolicy::new(&config).unwrap();
        assert_eq!(policy.describe(), "OPA at http://opa:8181/v1/data/muster/authz");
        let bad = |config: OpaConfig| OpaPolicy::new(&config).unwrap_err();
        assert!(matches!(
            bad(OpaConfig { url: "opa:8181".into(), ..OpaConfig::default() }),
            OpaError::InvalidUrl { .. }
        ));
        assert!(matches!(
            bad(OpaConfig { path: "/".into(), ..OpaConfig::default() }),
            OpaError::EmptyPath
        ));
        assert!(matches!(
            bad(OpaConfig { timeout: Duration::ZERO, ..OpaConfig::default() }),
            OpaError::ZeroTimeout
        ));
        assert!(serde_json::from_value::<OpaConfig>(serde_json::json!({"cache_size": 1})).is_err());
    }
}
