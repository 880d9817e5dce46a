//! Who is calling: bearer tokens from config and OIDC JWTs, checked on every `/v1` route.
//!
//! The entry point is [`Authenticator`]: the API's middleware asks it for the [`Principal`] of
//! each request and answers 401 when there is none. What the principal may then do is for the
//! policy ([`crate::policy`]) to decide.

pub mod oidc;
pub mod tokens;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use oidc::{OidcConfig, OidcVerifier};
pub use tokens::{TokenConfig, Tokens};

/// An authenticated caller: a subject (used as the caller's GitHub login in policy) and groups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub id: String,
    pub groups: Vec<String>,
}

/// Why a credential was refused. The message is safe to show the caller: it never contains the
/// credential.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Invalid(String),
    /// The verifier cannot check right now (JWKS unreachable).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Config(String),
}

/// `[auth]`: how callers of the HTTP API prove who they are.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct AuthConfig {
    /// `auto`: every `/v1` route needs a token or JWT from below; with none configured the API
    /// serves without authentication, and only on a loopback address. `none`: no
    /// authentication on any address (for a trusted network or an authenticating proxy).
    pub mode: AuthMode,
    /// Static bearer tokens, by SHA-256.
    pub tokens: Vec<TokenConfig>,
    /// More `[[tokens]]` entries in a TOML file (e.g. a mounted Kubernetes Secret).
    pub tokens_file: Option<PathBuf>,
    /// OIDC JWTs (e.g. from the cluster's or the company's identity provider).
    pub oidc: Option<OidcConfig>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    #[default]
    Auto,
    None,
}

impl AuthConfig {
    /// Whether any credential is configured.
    pub fn has_credentials(&self) -> bool {
        !self.tokens.is_empty() || self.tokens_file.is_some() || self.oidc.is_some()
    }

    /// Checks what types alone cannot.
    ///
    /// # Errors
    /// A contradiction or an invalid entry, named by its key.
    pub fn validate(&self) -> Result<(), String> {
        if self.mode == AuthMode::None && self.has_credentials() {
            return Err("auth.mode = \"none\" turns authentication off, yet tokens or OIDC are \
                        configured: remove one or the other"
                .into());
        }
        Tokens::new(&self.tokens).map_err(|e| e.to_string())?;
        if let Some(oidc) = &self.oidc {
            oidc.validate()?;
        }
        Ok(())
    }
}

/// Finds the principal of a request's credentials.
pub struct Authenticator {
    tokens: Tokens,
    oidc: Option<OidcVerifier>,
}

impl Authenticator {
    /// Reads the tokens (and the tokens file) and sets up the OIDC verifier; `None` when
    /// authentication is off (no credentials configured, or `mode = "none"`).
    ///
    /// # Errors
    /// An invalid entry, an unreadable tokens file, or an unusable JWKS file.
    pub async fn from_config(config: &AuthConfig) -> Result<Option<Self>, AuthError> {
        if config.mode == AuthMode::None || !config.has_credentials() {
            return Ok(None);
        }
        let mut entries = config.tokens.clone();
        if let Some(path) = &config.tokens_file {
            entries.extend(Tokens::read_file(path)?);
        }
        let tokens = Tokens::new(&entries)?;
        let oidc = match &config.oidc {
            Some(oidc) => Some(OidcVerifier::new(oidc.clone()).await?),
            None => None,
        };
        Ok(Some(Self { tokens, oidc }))
    }

    /// The principal of an `Authorization` header value.
    ///
    /// # Errors
    /// No bearer token, an unknown token, or a JWT that does not verify; `Unavailable` when
    /// the JWKS cannot be read.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let Some(value) = authorization else {
            return Err(AuthError::Invalid("this route needs a bearer token".into()));
        };
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(AuthError::Invalid("the Authorization header is not Bearer".into())),
        };
        if token.is_empty() {
            return Err(AuthError::Invalid("the bearer token is empty".into()));
        }
        if let Some(principal) = self.tokens.find(token) {
            return Ok(principal);
        }
        match &self.oidc {
            Some(oidc) if looks_like_jwt(token) => oidc.verify(token).await,
            _ => Err(AuthError::Invalid("unknown token".into())),
        }
    }
}

/// Three base64url segments separated by dots.
fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// Where `engine dev` writes the token it generated, for the CLI to find.
pub fn dev_token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("dev-token")
}

/// A new random token: 32 bytes, hex.
pub fn generate_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_are_checked_and_the_header_must_be_bearer() {
        let config = AuthConfig {
            tokens: vec![TokenConfig {
                subject: "alice".into(),
                groups: vec!["admins".into()],
                sha256: tokens::hash("t0ken"),
            }],
            ..AuthConfig::default()
        };
        let auth = Authenticator::from_config(&config).await.unwrap().expect("enabled");
        assert_eq!(auth.authenticate(Some("Bearer t0ken")).await.unwrap().id, "alice");
        assert_eq!(auth.authenticate(Some("bearer t0ken")).await.unwrap().id, "alice");
        for bad in
            [None, Some("Bearer nope"), Some("Basic dDBrZW4="), Some("Bearer "), Some("t0ken")]
        {
            assert!(auth.authenticate(bad).await.is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn without_credentials_or_with_mode_none_authentication_is_off() {
        assert!(Authenticator::from_config(&AuthConfig::default()).await.unwrap().is_none());
        let none = AuthConfig { mode: AuthMode::None, ..AuthConfig::default() };
        assert!(Authenticator::from_config(&none).await.unwrap().is_none());
        let contradiction = AuthConfig {
            mode: AuthMode::None,
            tokens_file: Some("/etc/muster/tokens.toml".into()),
            ..AuthConfig::default()
        };
        assert!(contradiction.validate().unwrap_err().contains("auth.mode"));
    }
}
