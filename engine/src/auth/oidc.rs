//! OIDC JWTs: tokens signed by an identity provider, checked against the public keys it
//! publishes (its JWKS).
//!
//! A token is accepted only when all of these hold, each for a reason:
//!
//! - **The algorithm is pinned by config, never chosen by the token.** The header's `alg` must
//!   be one of `auth.oidc.algorithms`, which admits public-key algorithms only: a token cannot
//!   pick `none`, nor HS256 with the provider's public key as the HMAC secret (algorithm
//!   confusion). The key must fit as well: of the algorithm's family and, when its JWK names an
//!   `alg`, of that algorithm.
//! - **Issuer, audience and expiry are required.** `iss` must be `auth.oidc.issuer` and `aud`
//!   must contain `auth.oidc.audience`, so that a token the same provider minted for another
//!   application is refused. `exp`, and `nbf` when present, hold with `auth.oidc.leeway` of
//!   clock skew: small (30 s by default, whole seconds) so that an expired token does not live on.
//! - **Keys are cached by `kid` and re-read at a bounded rate.** A `kid` missing from the cache
//!   (the provider rotated its keys) re-reads the JWKS at most once per `refresh-interval`, so
//!   that tokens with made-up `kid`s cannot turn the engine against the provider; concurrent
//!   requests share that one read. The keys are also re-read when older than `cache-ttl`. A
//!   failed read keeps the keys already held.
//!
//! # Errors
//! A refused token is [`AuthError::Invalid`] with a short reason ("token expired", "wrong
//! audience", …) that never quotes the token. [`AuthError::Unavailable`] means no keys could be
//! read yet; [`AuthError::Config`] comes only from [`OidcVerifier::new`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{AuthError, Principal};

/// Bound on one read of the JWKS over HTTP.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the size of a JWKS: real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// Bound on how much of a token's `kid` an error message repeats.
const MAX_KID_IN_MESSAGE: usize = 64;
const NO_JWKS_SOURCE: &str = "auth.oidc needs jwks-file or jwks-url: neither is set";

/// `[auth.oidc]`: which provider's tokens to accept, and how to find its keys.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer, exactly as in its tokens' `iss` claim.
    pub issuer: String,
    /// This API's client id at the provider: a token's `aud` must contain it.
    pub audience: String,
    /// The signature algorithms accepted, as jsonwebtoken names them (RS256, PS256, ES256,
    /// EdDSA, …): public-key algorithms only.
    pub algorithms: Vec<String>,
    /// The JWKS in a local file (e.g. a mounted ConfigMap). Exactly one of `jwks-file` and
    /// `jwks-url` is set.
    pub jwks_file: Option<PathBuf>,
    /// The provider's `jwks_uri`.
    pub jwks_url: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// The claim that names the caller.
    pub subject_claim: String,
    /// The claim that lists the caller's groups: missing, one string, or an array of strings.
    pub groups_claim: String,
    /// Least time between two re-reads of the JWKS for a `kid` it did not have.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Keys older than this are re-read on the next request.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: String::new(),
            algorithms: vec!["RS256".into(), "ES256".into()],
            jwks_file: None,
            jwks_url: None,
            leeway: Duration::from_secs(30),
            subject_claim: "sub".into(),
            groups_claim: "groups".into(),
            refresh_interval: Duration::from_secs(60),
            cache_ttl: Duration::from_secs(3600),
        }
    }
}

impl OidcConfig {
    /// Checks what types alone cannot.
    ///
    /// # Errors
    /// The first invalid entry, named by its key.
    pub fn validate(&self) -> Result<(), String> {
        if self.issuer.is_empty() {
            return Err("auth.oidc.issuer is empty".into());
        }
        if self.audience.is_empty() {
            return Err("auth.oidc.audience is empty".into());
        }
        allowed_algorithms(&self.algorithms)?;
        match (&self.jwks_file, &self.jwks_url) {
            (Some(_), Some(_)) => {
                return Err(
                    "auth.oidc.jwks-file and auth.oidc.jwks-url are both set: keep one".into()
                );
            }
            (None, None) => return Err(NO_JWKS_SOURCE.into()),
            (Some(path), None) if path.as_os_str().is_empty() => {
                return Err("auth.oidc.jwks-file is empty".into());
            }
            (None, Some(url)) if !is_http_url(url) => {
                return Err(format!("auth.oidc.jwks-url {url:?} is not an http(s) URL"));
            }
            _ => {}
        }
        if self.subject_claim.is_empty() {
            return Err("auth.oidc.subject-claim is empty".into());
        }
        if self.groups_claim.is_empty() {
            return Err("auth.oidc.groups-claim is empty".into());
        }
        if self.refresh_interval.is_zero() {
            return Err("auth.oidc.refresh-interval is zero: every token with an unknown kid \
                        would re-read the JWKS"
                .into());
        }
        if self.cache_ttl.is_zero() {
            return Err("auth.oidc.cache-ttl is zero: every request would re-read the JWKS".into());
        }
        Ok(())
    }
}

fn is_http_url(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|url| matches!(url.scheme(), "http" | "https"))
}

/// The configured algorithm names, parsed.
fn allowed_algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
    if names.is_empty() {
        return Err("auth.oidc.algorithms is empty".into());
    }
    names
        .iter()
        .map(|name| {
            let algorithm = Algorithm::from_str(name).map_err(|_| {
                format!(
                    "auth.oidc.algorithms: unknown algorithm {name:?} (known: RS256, RS384, \
                     RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
                )
            })?;
            if algorithm.family() == AlgorithmFamily::Hmac {
                return Err(format!(
                    "auth.oidc.algorithms: {name} is a shared-secret algorithm; only public-key \
                     algorithms can be checked against a JWKS"
                ));
            }
            Ok(algorithm)
        })
        .collect()
}

/// Checks OIDC JWTs against the provider's keys. Clones share the key cache.
#[derive(Clone)]
pub struct OidcVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: OidcConfig,
    /// One per allowed algorithm: a token is checked against its header's algorithm alone.
    validations: Vec<(Algorithm, Validation)>,
    source: JwksSource,
    cache: Mutex<KeyCache>,
    /// Held while the JWKS is read, so that requests finding the cache wanting share one read.
    refresh: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
}

enum JwksSource {
    File(PathBuf),
    Url { url: String, client: reqwest::Client },
}

impl fmt::Display for JwksSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => path.display().fmt(f),
            Self::Url { url, .. } => f.write_str(url),
        }
    }
}

#[derive(Default)]
struct KeyCache {
    keys: Vec<Arc<VerificationKey>>,
    /// When the keys were read; `None` until a read succeeds.
    loaded_at: Option<Instant>,
    /// When the JWKS was last re-read, successfully or not (the read at start does not count).
    refreshed_at: Option<Instant>,
    /// Why the last read failed, while no keys are held.
    last_error: Option<String>,
}

/// A public key of the JWKS, usable for signatures.
struct VerificationKey {
    kid: Option<String>,
    /// The JWK's own `alg`, which then is the only one the key verifies.
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

/// What a `kid` (or its absence) finds among the cached keys.
enum Lookup {
    Found(Arc<VerificationKey>),
    Unknown,
    /// No `kid`, and not exactly one key to fall back on.
    Ambiguous,
}

/// Why the JWKS is to be re-read.
#[derive(Clone, Copy)]
enum Refresh {
    /// Never read, or older than `cache-ttl`.
    Stale,
    /// A token names a `kid` the cache does not hold.
    UnknownKid,
}

impl OidcVerifier {
    /// Validates the config and reads the JWKS once.
    ///
    /// # Errors
    /// `Config` for an invalid config or a JWKS file that cannot be read or parsed. A JWKS URL
    /// that cannot be read now is not an error: it is logged and read again on first use.
    pub async fn new(config: OidcConfig) -> Result<Self, AuthError> {
        config.validate().map_err(AuthError::Config)?;
        if CryptoProvider::try_get_default().is_none() {
            return Err(AuthError::Config(
                "jsonwebtoken has no crypto provider: build it with one crypto feature".into(),
            ));
        }
        let validations = allowed_algorithms(&config.algorithms)
            .map_err(AuthError::Config)?
            .into_iter()
            .map(|algorithm| (algorithm, validation(&config, algorithm)))
            .collect();
        let source = match (&config.jwks_file, &config.jwks_url) {
            (Some(path), _) => JwksSource::File(path.clone()),
            (None, Some(url)) => {
                let client = reqwest::Client::builder()
                    .timeout(JWKS_TIMEOUT)
                    .build()
                    .map_err(|e| AuthError::Config(format!("auth.oidc: HTTP client: {e}")))?;
                JwksSource::Url { url: url.clone(), client }
            }
            (None, None) => return Err(AuthError::Config(NO_JWKS_SOURCE.into())),
        };
        let inner = Inner {
            config,
            validations,
            source,
            cache: Mutex::default(),
            refresh: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        };
        match (inner.read_jwks().await, &inner.source) {
            (Ok(keys), _) => inner.store(keys),
            (Err(reason), JwksSource::File(path)) => {
                return Err(AuthError::Config(format!(
                    "auth.oidc.jwks-file {}: {reason}",
                    path.display()
                )));
            }
            (Err(reason), JwksSource::Url { .. }) => {
                tracing::warn!(
                    source = %inner.source,
                    %reason,
                    "OIDC keys not read at start; trying again on first use"
                );
                inner.cache().last_error = Some(reason);
            }
        }
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The caller a JWT names, once its signature and claims are checked.
    ///
    /// # Errors
    /// `Invalid` with the reason the token is refused; `Unavailable` when no keys could be read.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        // jsonwebtoken cannot parse `none` or unknown algorithms, so they end up here too.
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            invalid("token header unreadable, or its algorithm is not one this API knows")
        })?;
        let algorithm = header.alg;
        let Some(validation) = self.inner.validation_for(algorithm) else {
            return Err(invalid(format!("algorithm {algorithm:?} not allowed")));
        };
        let kid = header.kid.as_deref();
        let key = self.inner.key(kid).await?;
        if key.key.family() != algorithm.family() {
            return Err(invalid(format!(
                "key {} does not fit algorithm {algorithm:?}",
                quote(kid)
            )));
        }
        if let Some(key_algorithm) = key.algorithm
            && key_algorithm != algorithm
        {
            return Err(invalid(format!(
                "key {} is for {key_algorithm:?}, not {algorithm:?}",
                quote(kid)
            )));
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation)
            .map_err(refusal)?;
        principal(&data.claims, &self.inner.config)
    }

    /// How many times the JWKS was read (file or URL), successfully or not.
    pub fn fetches(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuer", &self.inner.config.issuer)
            .field("audience", &self.inner.config.audience)
            .field("keys", &self.inner.cache().keys.len())
            .field("fetches", &self.fetches())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn cache(&self) -> MutexGuard<'_, KeyCache> {
        // The cache is replaced whole under the lock, so a panic elsewhere cannot leave it torn.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn validation_for(&self, algorithm: Algorithm) -> Option<&Validation> {
        self.validations.iter().find(|(allowed, _)| *allowed == algorithm).map(|(_, v)| v)
    }

    /// The key a token's `kid` names, re-reading the JWKS when it is stale or lacks the `kid`.
    async fn key(&self, kid: Option<&str>) -> Result<Arc<VerificationKey>, AuthError> {
        if self.cache().is_stale(self.config.cache_ttl) {
            self.refresh(Refresh::Stale).await?;
        }
        match self.lookup(kid) {
            Lookup::Found(key) => return Ok(key),
            Lookup::Ambiguous => {
                return Err(invalid("token has no key id (kid) and the JWKS has several keys"));
            }
            Lookup::Unknown => {}
        }
        self.refresh(Refresh::UnknownKid).await?;
        match self.lookup(kid) {
            Lookup::Found(key) => Ok(key),
            _ => Err(invalid(format!("unknown key id {}", quote(kid)))),
        }
    }

    fn lookup(&self, kid: Option<&str>) -> Lookup {
        let cache = self.cache();
        let found = match kid {
            Some(kid) => cache.keys.iter().find(|key| key.kid.as_deref() == Some(kid)),
            None if cache.keys.len() == 1 => cache.keys.first(),
            None => return Lookup::Ambiguous,
        };
        found.map_or(Lookup::Unknown, |key| Lookup::Found(Arc::clone(key)))
    }

    /// Re-reads the JWKS, unless another request did while this one waited or the last re-read
    /// is less than `refresh-interval` ago.
    ///
    /// # Errors
    /// `Unavailable` when no keys are held after it; a failed re-read otherwise keeps the keys.
    async fn refresh(&self, reason: Refresh) -> Result<(), AuthError> {
        let _one_read_at_a_time = self.refresh.lock().await;
        let due = {
            let cache = self.cache();
            let wanted = match reason {
                Refresh::Stale => cache.is_stale(self.config.cache_ttl),
                Refresh::UnknownKid => true,
            };
            let allowed =
                cache.refreshed_at.is_none_or(|at| at.elapsed() >= self.config.refresh_interval);
            wanted && allowed
        };
        if due {
            let read = self.read_jwks().await;
            self.cache().refreshed_at = Some(Instant::now());
            match read {
                Ok(keys) => self.store(keys),
                Err(reason) => {
                    tracing::warn!(source = %self.source, %reason, "OIDC keys not re-read");
                    let mut cache = self.cache();
                    if cache.loaded_at.is_none() {
                        cache.last_error = Some(reason);
                    }
                }
            }
        }
        let cache = self.cache();
        match (&cache.loaded_at, &cache.last_error) {
            (Some(_), _) => Ok(()),
            (None, reason) => Err(AuthError::Unavailable(format!(
                "the identity provider's keys cannot be read: {}",
                reason.as_deref().unwrap_or("not read yet")
            ))),
        }
    }

    fn store(&self, keys: Vec<VerificationKey>) {
        tracing::info!(source = %self.source, keys = keys.len(), "OIDC keys read");
        let mut cache = self.cache();
        cache.keys = keys.into_iter().map(Arc::new).collect();
        cache.loaded_at = Some(Instant::now());
        cache.last_error = None;
    }

    /// Reads and parses the JWKS, counting the attempt.
    async fn read_jwks(&self) -> Result<Vec<VerificationKey>, String> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let body = match &self.source {
            JwksSource::File(path) => tokio::fs::read(path).await.map_err(|e| e.to_string())?,
            JwksSource::Url { url, client } => fetch(client, url).await?,
        };
        parse_jwks(&body)
    }
}

impl KeyCache {
    fn is_stale(&self, ttl: Duration) -> bool {
        self.loaded_at.is_none_or(|at| at.elapsed() >= ttl)
    }
}

/// The body of a 200 answer, at most `MAX_JWKS_BYTES`.
async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let describe = |e: reqwest::Error| {
        if e.is_timeout() {
            format!("no answer within {JWKS_TIMEOUT:?}")
        } else if e.is_connect() {
            "cannot connect".to_owned()
        } else {
            e.without_url().to_string()
        }
    };
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(describe)?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn parse_jwks(body: &[u8]) -> Result<Vec<VerificationKey>, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let keys: Vec<_> = set.keys.iter().filter_map(VerificationKey::from_jwk).collect();
    if keys.is_empty() {
        return Err(format!("no signature key among the JWKS's {} keys", set.keys.len()));
    }
    Ok(keys)
}

impl VerificationKey {
    /// The key, unless it is not meant for signatures or is not a public key.
    fn from_jwk(jwk: &Jwk) -> Option<Self> {
        let kid = jwk.common.key_id.clone();
        let skip = |why: &str| {
            tracing::debug!(kid = kid.as_deref().unwrap_or(""), why, "JWKS key skipped");
            None
        };
        if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
            return skip("not for signatures");
        }
        let algorithm = match jwk.common.key_algorithm.map(Algorithm::try_from) {
            None => None,
            Some(Ok(algorithm)) => Some(algorithm),
            Some(Err(_)) => return skip("alg is not a signature algorithm"),
        };
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            return skip("unsupported key type or malformed key");
        };
        // A shared secret has no business in a published key set: never verify with one.
        if key.family() == AlgorithmFamily::Hmac {
            return skip("symmetric key");
        }
        if algorithm.is_some_and(|algorithm| algorithm.family() != key.family()) {
            return skip("alg does not fit the key type");
        }
        Some(Self { kid, algorithm, key })
    }
}

fn validation(config: &OidcConfig, algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.set_issuer(&[config.issuer.as_str()]);
    validation.set_audience(&[config.audience.as_str()]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.leeway = config.leeway.as_secs();
    validation.validate_nbf = true;
    validation
}

/// The short reason jsonwebtoken refused a token for.
fn refusal(error: JwtError) -> AuthError {
    let reason = match error.kind() {
        ErrorKind::ExpiredSignature => "token expired".to_owned(),
        ErrorKind::ImmatureSignature => "token not yet valid".to_owned(),
        ErrorKind::InvalidIssuer => "wrong issuer".to_owned(),
        ErrorKind::InvalidAudience => "wrong audience".to_owned(),
        ErrorKind::InvalidSignature => "bad signature".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("token has no {claim} claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("malformed {claim} claim"),
        ErrorKind::InvalidAlgorithm => "algorithm does not fit the key".to_owned(),
        ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => "the token's key is unusable".to_owned(),
        _ => "malformed token".to_owned(),
    };
    invalid(reason)
}

fn principal(claims: &Map<String, Value>, config: &OidcConfig) -> Result<Principal, AuthError> {
    let id = match claims.get(&config.subject_claim) {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => {
            return Err(invalid(format!(
                "claim {:?} is missing or not a non-empty string",
                config.subject_claim
            )));
        }
    };
    let not_groups = || {
        invalid(format!("claim {:?} is not a string or an array of strings", config.groups_claim))
    };
    let groups = match claims.get(&config.groups_claim) {
        None => Vec::new(),
        Some(Value::String(group)) => vec![group.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(not_groups)?,
        Some(_) => return Err(not_groups()),
    };
    Ok(Principal { id, groups })
}

fn invalid(reason: impl Into<String>) -> AuthError {
    AuthError::Invalid(reason.into())
}

/// A token's `kid` for a message: quoted, and cut short since the token chose it.
fn quote(kid: Option<&str>) -> String {
    match kid {
        None => "(no kid)".to_owned(),
        Some(kid) if kid.chars().count() > MAX_KID_IN_MESSAGE => {
            let cut: String = kid.chars().take(MAX_KID_IN_MESSAGE).collect();
            format!("{cut:?}…")
        }
        Some(kid) => format!("{kid:?}"),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::get;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const ISSUER: &str = "https://issuer.test";
    const AUDIENCE: &str = "muster";
    const RSA_PEM: &str = include_str!("../../tests/fixtures/oidc/rsa.pem");
    const RSA_PUBLIC_PEM: &str = include_str!("../../tests/fixtures/oidc/rsa.pub.pem");
    const RSA2_PEM: &str = include_str!("../../tests/fixtures/oidc/rsa2.pem");
    const EC_PEM: &str = include_str!("../../tests/fixtures/oidc/ec.pem");
    const JWKS: &str = include_str!("../../tests/fixtures/oidc/jwks.json");
    const JWKS_ROTATED: &str = include_str!("../../tests/fixtures/oidc/jwks-rotated.json");

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oidc").join(name)
    }

    fn file_config(jwks: PathBuf) -> OidcConfig {
        OidcConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            jwks_file: Some(jwks),
            ..OidcConfig::default()
        }
    }

    async fn file_verifier() -> OidcVerifier {
        OidcVerifier::new(file_config(fixture("jwks.json"))).await.unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    /// Claims that pass, for `alice` in `admins` and `dev`.
    fn claims() -> Value {
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice",
            "groups": ["admins", "dev"],
            "exp": now() + 300,
        })
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn without(mut claims: Value, key: &str) -> Value {
        claims.as_object_mut().unwrap().remove(key);
        claims
    }

    fn sign(algorithm: Algorithm, kid: Option<&str>, pem: &str, claims: &Value) -> String {
        let mut header = Header::new(algorithm);
        header.kid = kid.map(str::to_owned);
        let key = match algorithm.family() {
            AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(pem.as_bytes()),
            AlgorithmFamily::Ec => EncodingKey::from_ec_pem(pem.as_bytes()),
            _ => EncodingKey::from_secret(pem.as_bytes()),
        };
        jsonwebtoken::encode(&header, claims, &key.unwrap()).unwrap()
    }

    fn rs256(claims: &Value) -> String {
        sign(Algorithm::RS256, Some("rsa-1"), RSA_PEM, claims)
    }

    /// Base64url of JSON, borrowed from jsonwebtoken's JWS encoder (the payload part).
    fn base64url_json(value: &Value) -> String {
        let key = EncodingKey::from_secret(b"unused").unwrap();
        jsonwebtoken::jws::encode(&Header::new(Algorithm::HS256), Some(value), &key)
            .unwrap()
            .payload
    }

    async fn refused(verifier: &OidcVerifier, token: &str) -> String {
        match verifier.verify(token).await {
            Err(AuthError::Invalid(reason)) => {
                assert!(!reason.contains(token), "the reason quotes the token: {reason}");
                reason
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn rs256_and_es256_tokens_give_the_subject_and_groups() {
        let verifier = file_verifier().await;
        let principal = verifier.verify(&rs256(&claims())).await.unwrap();
        assert_eq!(
            principal,
            Principal { id: "alice".into(), groups: vec!["admins".into(), "dev".into()] }
        );

        let one_group = with(claims(), "groups", json!("ops"));
        let token = sign(Algorithm::ES256, Some("ec-1"), EC_PEM, &one_group);
        let principal = verifier.verify(&token).await.unwrap();
        assert_eq!(principal, Principal { id: "alice".into(), groups: vec!["ops".into()] });

        let no_groups = without(claims(), "groups");
        assert!(verifier.verify(&rs256(&no_groups)).await.unwrap().groups.is_empty());
        assert_eq!(verifier.fetches(), 1);
    }

    #[tokio::test]
    async fn the_subject_and_groups_claims_are_configurable_and_checked() {
        let config = OidcConfig {
            subject_claim: "preferred_username".into(),
            groups_claim: "roles".into(),
            ..file_config(fixture("jwks.json"))
        };
        let verifier = OidcVerifier::new(config).await.unwrap();
        let custom = json!({
            "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 300,
            "sub": "0c1d", "preferred_username": "bob", "roles": ["ops"],
        });
        let principal = verifier.verify(&rs256(&custom)).await.unwrap();
        assert_eq!(principal, Principal { id: "bob".into(), groups: vec!["ops".into()] });

        let verifier = file_verifier().await;
        for no_subject in [
            without(claims(), "sub"),
            with(claims(), "sub", json!("")),
            with(claims(), "sub", json!(7)),
        ] {
            assert!(refused(&verifier, &rs256(&no_subject)).await.contains("\"sub\""));
        }
        for bad_groups in [json!(7), json!({"a": 1}), json!(["ok", 1]), json!(null)] {
            let token = rs256(&with(claims(), "groups", bad_groups));
            assert!(refused(&verifier, &token).await.contains("\"groups\""));
        }
    }

    #[tokio::test]
    async fn expiry_is_checked_with_the_configured_leeway() {
        let verifier = file_verifier().await;
        let long_expired = with(claims(), "exp", json!(now() - 120));
        assert_eq!(refused(&verifier, &rs256(&long_expired)).await, "token expired");
        let just_expired = with(claims(), "exp", json!(now() - 10));
        assert_eq!(verifier.verify(&rs256(&just_expired)).await.unwrap().id, "alice");

        let strict = OidcConfig { leeway: Duration::ZERO, ..file_config(fixture("jwks.json")) };
        let strict = OidcVerifier::new(strict).await.unwrap();
        assert_eq!(refused(&strict, &rs256(&just_expired)).await, "token expired");

        let not_yet = with(claims(), "nbf", json!(now() + 120));
        assert_eq!(refused(&verifier, &rs256(&not_yet)).await, "token not yet valid");
        let almost = with(claims(), "nbf", json!(now() + 10));
        assert!(verifier.verify(&rs256(&almost)).await.is_ok());
        assert_eq!(
            refused(&verifier, &rs256(&without(claims(), "exp"))).await,
            "token has no exp claim"
        );
    }

    #[tokio::test]
    async fn issuer_and_audience_must_match_and_be_present() {
        let verifier = file_verifier().await;
        let other_issuer = with(claims(), "iss", json!("https://evil.test"));
        assert_eq!(refused(&verifier, &rs256(&other_issuer)).await, "wrong issuer");
        let other_audience = with(claims(), "aud", json!("another-app"));
        assert_eq!(refused(&verifier, &rs256(&other_audience)).await, "wrong audience");
        let among_audiences = with(claims(), "aud", json!(["another-app", AUDIENCE]));
        assert!(verifier.verify(&rs256(&among_audiences)).await.is_ok());
        assert_eq!(
            refused(&verifier, &rs256(&without(claims(), "iss"))).await,
            "token has no iss claim"
        );
        assert_eq!(
            refused(&verifier, &rs256(&without(claims(), "aud"))).await,
            "token has no aud claim"
        );
    }

    #[tokio::test]
    async fn an_unsigned_alg_none_token_is_refused() {
        let verifier = file_verifier().await;
        let signed = rs256(&claims());
        let payload = signed.split('.').nth(1).unwrap();
        for header in [json!({"alg": "none", "typ": "JWT"}), json!({"alg": "none", "kid": "rsa-1"})]
        {
            let unsigned = format!("{}.{payload}.", base64url_json(&header));
            let reason = refused(&verifier, &unsigned).await;
            assert!(reason.contains("algorithm"), "{reason}");
        }
    }

    #[tokio::test]
    async fn hs256_with_the_public_key_as_secret_is_refused() {
        let verifier = file_verifier().await;
        let confused = sign(Algorithm::HS256, Some("rsa-1"), RSA_PUBLIC_PEM, &claims());
        assert_eq!(refused(&verifier, &confused).await, "algorithm HS256 not allowed");
    }

    #[tokio::test]
    async fn an_altered_payload_breaks_the_signature() {
        let verifier = file_verifier().await;
        let genuine = rs256(&claims());
        let promoted = rs256(&with(claims(), "groups", json!(["admins", "root"])));
        let genuine: Vec<&str> = genuine.split('.').collect();
        let promoted: Vec<&str> = promoted.split('.').collect();
        let forged = format!("{}.{}.{}", genuine[0], promoted[1], genuine[2]);
        assert_eq!(refused(&verifier, &forged).await, "bad signature");

        let other_key = sign(Algorithm::RS256, Some("rsa-1"), RSA2_PEM, &claims());
        assert_eq!(refused(&verifier, &other_key).await, "bad signature");
    }

    #[tokio::test]
    async fn the_algorithm_must_be_configured_and_fit_the_key() {
        let verifier = file_verifier().await;
        let rs512 = sign(Algorithm::RS512, Some("rsa-1"), RSA_PEM, &claims());
        assert_eq!(refused(&verifier, &rs512).await, "algorithm RS512 not allowed");

        let config = OidcConfig {
            algorithms: vec!["RS256".into(), "RS384".into(), "ES256".into()],
            ..file_config(fixture("jwks.json"))
        };
        let verifier = OidcVerifier::new(config).await.unwrap();
        // rsa-1's JWK says RS256: the token cannot switch it to RS384.
        let rs384 = sign(Algorithm::RS384, Some("rsa-1"), RSA_PEM, &claims());
        assert_eq!(refused(&verifier, &rs384).await, "key \"rsa-1\" is for RS256, not RS384");
        let crossed = sign(Algorithm::ES256, Some("rsa-1"), EC_PEM, &claims());
        assert_eq!(
            refused(&verifier, &crossed).await,
            "key \"rsa-1\" does not fit algorithm ES256"
        );
    }

    #[tokio::test]
    async fn a_token_without_kid_needs_a_single_key_jwks() {
        let verifier = file_verifier().await;
        let kidless = sign(Algorithm::RS256, None, RSA_PEM, &claims());
        assert!(refused(&verifier, &kidless).await.contains("no key id"));

        let dir = tempfile::tempdir().unwrap();
        let mut single: Value = serde_json::from_str(JWKS).unwrap();
        single["keys"].as_array_mut().unwrap().truncate(1);
        let path = dir.path().join("single.json");
        std::fs::write(&path, single.to_string()).unwrap();
        let verifier = OidcVerifier::new(file_config(path)).await.unwrap();
        assert_eq!(verifier.verify(&kidless).await.unwrap().id, "alice");
    }

    #[tokio::test]
    async fn an_unreadable_or_invalid_jwks_file_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, "{\"keys\": 7}").unwrap();
        let symmetric = dir.path().join("symmetric.json");
        std::fs::write(&symmetric, r#"{"keys":[{"kty":"oct","kid":"s","k":"c2VjcmV0"}]}"#).unwrap();
        for path in [missing, garbage, symmetric] {
            match OidcVerifier::new(file_config(path.clone())).await {
                Err(AuthError::Config(message)) => {
                    assert!(message.contains("jwks-file"), "{message}")
                }
                other => panic!("{}: expected Config, got {other:?}", path.display()),
            }
        }
    }

    #[test]
    fn config_is_validated() {
        let good = file_config(fixture("jwks.json"));
        assert_eq!(good.validate(), Ok(()));
        let cases = [
            (OidcConfig { issuer: String::new(), ..good.clone() }, "auth.oidc.issuer is empty"),
            (OidcConfig { audience: String::new(), ..good.clone() }, "auth.oidc.audience"),
            (
                OidcConfig { algorithms: vec!["RS256".into(), "HS256".into()], ..good.clone() },
                "HS256 is a shared-secret",
            ),
            (
                OidcConfig { algorithms: vec!["none".into()], ..good.clone() },
                "unknown algorithm \"none\"",
            ),
            (
                OidcConfig { algorithms: Vec::new(), ..good.clone() },
                "auth.oidc.algorithms is empty",
            ),
            (
                OidcConfig { jwks_url: Some("https://idp.test/jwks".into()), ..good.clone() },
                "both set",
            ),
            (OidcConfig { jwks_file: None, ..good.clone() }, "neither is set"),
            (
                OidcConfig {
                    jwks_file: None,
                    jwks_url: Some("idp.test/jwks".into()),
                    ..good.clone()
                },
                "not an http(s) URL",
            ),
            (
                OidcConfig { refresh_interval: Duration::ZERO, ..good.clone() },
                "refresh-interval is zero",
            ),
            (OidcConfig { cache_ttl: Duration::ZERO, ..good.clone() }, "cache-ttl is zero"),
            (OidcConfig { subject_claim: String::new(), ..good.clone() }, "subject-claim"),
        ];
        for (config, expected) in cases {
            let message = config.validate().unwrap_err();
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn the_verifier_and_its_future_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>(_: T) {}
        send_sync::<OidcVerifier>();
        // Type-checked, never run: the API's middleware awaits `verify` on any worker thread.
        let _ = |verifier: &OidcVerifier| send(verifier.verify("a.b.c"));
    }

    #[tokio::test]
    async fn an_invalid_config_is_refused_by_new() {
        let hmac =
            OidcConfig { algorithms: vec!["HS256".into()], ..file_config(fixture("jwks.json")) };
        assert!(matches!(OidcVerifier::new(hmac).await, Err(AuthError::Config(_))));
    }

    #[test]
    fn config_reads_from_kebab_case_toml_with_defaults() {
        let config: OidcConfig = toml::from_str(
            r#"
            issuer = "https://idp.test"
            audience = "muster"
            jwks-url = "https://idp.test/jwks"
            refresh-interval = "5m"
            "#,
        )
        .unwrap();
        assert_eq!(config.refresh_interval, Duration::from_secs(300));
        assert_eq!(config.leeway, Duration::from_secs(30));
        assert_eq!(config.cache_ttl, Duration::from_secs(3600));
        assert_eq!(config.algorithms, ["RS256", "ES256"]);
        assert_eq!(
            (config.subject_claim.as_str(), config.groups_claim.as_str()),
            ("sub", "groups")
        );
        assert!(
            toml::from_str::<OidcConfig>("jwks-uri = \"x\"").is_err(),
            "unknown keys are refused"
        );
    }

    /// A JWKS endpoint on 127.0.0.1 whose answer the test changes, counting requests.
    #[derive(Clone)]
    struct JwksServer {
        url: String,
        reply: Arc<Mutex<(StatusCode, String)>>,
        /// How long each answer takes.
        delay: Duration,
        requests: Arc<AtomicU64>,
    }

    impl JwksServer {
        async fn start(body: &str, delay: Duration) -> Self {
            let listener =
                tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
            let server = Self {
                url: format!("http://{}/jwks", listener.local_addr().unwrap()),
                reply: Arc::new(Mutex::new((StatusCode::OK, body.to_owned()))),
                delay,
                requests: Arc::new(AtomicU64::new(0)),
            };
            let router =
                axum::Router::new().route("/jwks", get(Self::serve)).with_state(server.clone());
            tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
            server
        }

        async fn serve(State(server): State<Self>) -> (StatusCode, String) {
            server.requests.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(server.delay).await;
            server.reply.lock().unwrap().clone()
        }

        fn answer(&self, status: StatusCode, body: &str) {
            *self.reply.lock().unwrap() = (status, body.to_owned());
        }

        fn requests(&self) -> u64 {
            self.requests.load(Ordering::SeqCst)
        }

        fn config(&self) -> OidcConfig {
            OidcConfig {
                issuer: ISSUER.into(),
                audience: AUDIENCE.into(),
                jwks_url: Some(self.url.clone()),
                ..OidcConfig::default()
            }
        }
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_once_per_refresh_interval() {
        let server = JwksServer::start(JWKS, Duration::ZERO).await;
        let verifier = OidcVerifier::new(server.config()).await.unwrap();
        assert_eq!((verifier.fetches(), server.requests()), (1, 1));

        let k9 = sign(Algorithm::RS256, Some("k9"), RSA_PEM, &claims());
        assert_eq!(refused(&verifier, &k9).await, "unknown key id \"k9\"");
        assert_eq!((verifier.fetches(), server.requests()), (2, 2));

        let k10 = sign(Algorithm::RS256, Some("k10"), RSA_PEM, &claims());
        assert_eq!(refused(&verifier, &k10).await, "unknown key id \"k10\"");
        assert_eq!((verifier.fetches(), server.requests()), (2, 2), "within refresh-interval");
        assert!(verifier.verify(&rs256(&claims())).await.is_ok());
        assert_eq!(server.requests(), 2, "known keys are served from the cache");

        let long_kid = "k".repeat(500);
        let long = sign(Algorithm::RS256, Some(&long_kid), RSA_PEM, &claims());
        assert!(refused(&verifier, &long).await.len() < 100, "the kid is cut short");
    }

    #[tokio::test]
    async fn the_refresh_interval_passes() {
        let server = JwksServer::start(JWKS, Duration::ZERO).await;
        let config = OidcConfig { refresh_interval: Duration::from_millis(200), ..server.config() };
        let verifier = OidcVerifier::new(config).await.unwrap();
        let k9 = sign(Algorithm::RS256, Some("k9"), RSA_PEM, &claims());
        refused(&verifier, &k9).await;
        refused(&verifier, &k9).await;
        assert_eq!(server.requests(), 2);
        tokio::time::sleep(Duration::from_millis(250)).await;
        refused(&verifier, &k9).await;
        assert_eq!((verifier.fetches(), server.requests()), (3, 3));
    }

    #[tokio::test]
    async fn concurrent_requests_with_an_unknown_kid_share_one_fetch() {
        let server = JwksServer::start(JWKS, Duration::from_millis(200)).await;
        let verifier = OidcVerifier::new(server.config()).await.unwrap();
        let k9 = sign(Algorithm::RS256, Some("k9"), RSA_PEM, &claims());
        let attempts = (0..8).map(|_| verifier.verify(&k9));
        let results =
            tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(attempts))
                .await
                .expect("bounded");
        assert!(results.iter().all(|r| matches!(r, Err(AuthError::Invalid(_)))));
        assert_eq!((verifier.fetches(), server.requests()), (2, 2));
    }

    #[tokio::test]
    async fn a_rotated_key_is_accepted_after_the_refresh() {
        let server = JwksServer::start(JWKS, Duration::ZERO).await;
        let verifier = OidcVerifier::new(server.config()).await.unwrap();
        let rotated = sign(Algorithm::RS256, Some("rsa-2"), RSA2_PEM, &claims());

        server.answer(StatusCode::OK, JWKS_ROTATED);
        assert_eq!(verifier.verify(&rotated).await.unwrap().id, "alice");
        assert_eq!((verifier.fetches(), server.requests()), (2, 2));
        assert!(verifier.verify(&rs256(&claims())).await.is_ok(), "the old key is still published");
        assert_eq!(server.requests(), 2);
    }

    #[tokio::test]
    async fn stale_keys_are_reread_and_a_failed_read_keeps_them() {
        let server = JwksServer::start(JWKS, Duration::ZERO).await;
        let config = OidcConfig {
            cache_ttl: Duration::from_millis(100),
            refresh_interval: Duration::from_millis(100),
            ..server.config()
        };
        let verifier = OidcVerifier::new(config).await.unwrap();
        let token = rs256(&claims());
        for (status, body) in [
            (StatusCode::INTERNAL_SERVER_ERROR, JWKS),
            (StatusCode::OK, "{\"keys\": \"no\"}"),
            (StatusCode::OK, JWKS),
        ] {
            server.answer(status, body);
            tokio::time::sleep(Duration::from_millis(150)).await;
            let before = server.requests();
            assert_eq!(verifier.verify(&token).await.unwrap().id, "alice", "after {status} {body}");
            assert_eq!(server.requests(), before + 1);
        }
    }

    #[tokio::test]
    async fn an_unreachable_jwks_url_at_start_is_read_on_first_use() {
        let server = JwksServer::start(JWKS, Duration::ZERO).await;
        server.answer(StatusCode::SERVICE_UNAVAILABLE, "");
        let config = OidcConfig { refresh_interval: Duration::from_millis(200), ..server.config() };
        let verifier = OidcVerifier::new(config).await.expect("not fatal at start");
        let token = rs256(&claims());
        match verifier.verify(&token).await {
            Err(AuthError::Unavailable(reason)) => assert!(reason.contains("HTTP 503"), "{reason}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(matches!(verifier.verify(&token).await, Err(AuthError::Unavailable(_))));
        assert_eq!(server.requests(), 2, "the second failure is within refresh-interval");

        server.answer(StatusCode::OK, JWKS);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(verifier.verify(&token).await.unwrap().id, "alice");
        assert_eq!(verifier.fetches(), 3);
    }
}
