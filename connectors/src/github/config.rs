//! `[github]` configuration: where GitHub is, how Muster authenticates, and the guards.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use workflows::github::{
    DEFAULT_MAX_REMOVAL_FRACTION, DEFAULT_MAX_REMOVAL_MAJORITY, DEFAULT_MAX_REMOVALS_ABSOLUTE,
    DEFAULT_MIN_MAINTAINERS, Guards,
};

/// The token's environment variable, read when the file sets none.
pub const TOKEN_ENV: &str = "MUSTER_GITHUB_TOKEN";
/// The webhook secret's environment variable, read when the file sets none.
pub const WEBHOOK_SECRET_ENV: &str = "MUSTER_GITHUB_WEBHOOK_SECRET";
/// GitHub's best practice: at least one second between mutating requests.
pub const DEFAULT_WRITE_INTERVAL: Duration = Duration::from_secs(1);
/// The public GitHub REST API.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// Request points per minute for the organization, shared by every engine: two thirds of
/// GitHub's documented secondary limit for REST (900), leaving headroom for other clients.
pub const DEFAULT_POINTS_PER_MINUTE: u32 = 600;
/// The smallest budget: a write costs 5 points, and the budget must allow at least one.
pub const MIN_POINTS_PER_MINUTE: u32 = 10;
/// Conditional-GET answers (ETag and body) kept, least recently used dropped first.
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;
/// Upper bound of `cache-entries`: each entry holds a page of up to 100 items.
pub const MAX_CACHE_ENTRIES: usize = 100_000;

/// A secret string: readable by code, printed and serialized as `***`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

/// Whether Muster sends changes to GitHub (`github.mode`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GitHubMode {
    /// Live with credentials, plan-only (reading nothing) without.
    #[default]
    Auto,
    /// Read GitHub with the credentials (read-only ones suffice) and record what a live sync
    /// would send; send nothing.
    Plan,
    /// Send changes; credentials are required.
    Live,
}

/// The `[github]` section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct GitHubConfig {
    /// REST API root: `https://api.github.com`, `https://ghes.example.com/api/v3`, or a fake.
    pub api_url: String,
    /// The organization whose teams Muster manages.
    pub org: String,
    /// `auto` (live with credentials), `plan` (read GitHub, send nothing) or `live`.
    pub mode: GitHubMode,
    /// Whether a desired login outside the organization is invited. Off, members must already
    /// belong to the organization: such a login is held back and reported on the team.
    pub invite_non_members: bool,
    /// A personal access token (classic or fine-grained); also `MUSTER_GITHUB_TOKEN`.
    pub token: Option<Secret>,
    /// GitHub App authentication: all three or none.
    pub app_id: Option<u64>,
    pub private_key_path: Option<PathBuf>,
    pub installation_id: Option<u64>,
    /// Key of `X-Hub-Signature-256`; also `MUSTER_GITHUB_WEBHOOK_SECRET`.
    pub webhook_secret: Option<Secret>,
    /// Whether a deleted Muster team deletes its GitHub team (otherwise it is retained).
    pub allow_team_deletion: bool,
    /// A team must name at least this many maintainers (checked by the API and by sync_team).
    pub min_maintainers: usize,
    /// Mass-removal guard: refuse removing more than this fraction of a team's members…
    pub max_removal_fraction: f64,
    /// …and more than this many people.
    pub max_removals_absolute: usize,
    /// Mass-removal guard for every team size: refuse removing more than this fraction of a
    /// team's members (1.0: off). Removing all of them is always refused.
    pub max_removal_majority: f64,
    /// Pause between two mutating requests. GitHub asks for at least 1 s; lower it only for a
    /// fake server.
    #[serde(with = "humantime_serde")]
    pub write_interval: Duration,
    /// Bound on one request, connection included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Request points (GET 1, POST/PATCH/PUT/DELETE 5, as GitHub counts them for its secondary
    /// limit) the engines may spend on the organization in any minute, together.
    pub points_per_minute: u32,
    /// Conditional-GET answers kept for `If-None-Match`; 0 turns the cache off.
    pub cache_entries: usize,
}

impl Default for GitHubConfig {
    fn default() -> Self {
        GitHubConfig {
            api_url: DEFAULT_API_URL.to_owned(),
            org: String::new(),
            mode: GitHubMode::Auto,
            invite_non_members: true,
            token: None,
            app_id: None,
            private_key_path: None,
            installation_id: None,
            webhook_secret: None,
            allow_team_deletion: false,
            min_maintainers: DEFAULT_MIN_MAINTAINERS,
            max_removal_fraction: DEFAULT_MAX_REMOVAL_FRACTION,
            max_removals_absolute: DEFAULT_MAX_REMOVALS_ABSOLUTE,
            max_removal_majority: DEFAULT_MAX_REMOVAL_MAJORITY,
            write_interval: DEFAULT_WRITE_INTERVAL,
            request_timeout: Duration::from_secs(30),
            points_per_minute: DEFAULT_POINTS_PER_MINUTE,
            cache_entries: DEFAULT_CACHE_ENTRIES,
        }
    }
}

/// How the adapter authenticates, derived from [`GitHubConfig`].
#[derive(Clone, Debug, PartialEq)]
pub enum Credentials {
    /// Nothing configured: plan-only mode.
    None,
    Token(Secret),
    App {
        app_id: u64,
        private_key_path: PathBuf,
        installation_id: u64,
    },
}

/// A `[github]` section that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: github.{key}: {message}")]
pub struct GitHubConfigError {
    pub key: &'static str,
    pub message: String,
}

impl GitHubConfig {
    /// Fills the token and the webhook secret from `MUSTER_GITHUB_TOKEN` and
    /// `MUSTER_GITHUB_WEBHOOK_SECRET` when the configuration sets none (`lookup` is
    /// `std::env::var(..).ok()` outside tests).
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        let non_empty = |name| lookup(name).filter(|v: &String| !v.trim().is_empty());
        if self.token.is_none() {
            self.token = non_empty(TOKEN_ENV).map(Secret::new);
        }
        if self.webhook_secret.is_none() {
            self.webhook_secret = non_empty(WEBHOOK_SECRET_ENV).map(Secret::new);
        }
    }

    /// Checks what types alone cannot.
    ///
    /// # Errors
    /// The first invalid key, named.
    pub fn validate(&self) -> Result<(), GitHubConfigError> {
        let err = |key, message: &str| Err(GitHubConfigError { key, message: message.to_owned() });
        let url = self.api_url.parse::<http::Uri>();
        match url {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            _ => return err("api-url", "must be an http(s) URL such as https://api.github.com"),
        }
        if !(0.0..=1.0).contains(&self.max_removal_fraction) {
            return err("max-removal-fraction", "must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&self.max_removal_majority) {
            return err("max-removal-majority", "must be between 0 and 1 (1 turns the rule off)");
        }
        if self.write_interval > Duration::from_secs(60) {
            return err("write-interval", "must be at most 60s");
        }
        if self.request_timeout < Duration::from_secs(1) {
            return err("request-timeout", "must be at least 1s");
        }
        if self.points_per_minute < MIN_POINTS_PER_MINUTE {
            return err(
                "points-per-minute",
                "must be at least 10 (a write costs 5 points; GitHub allows 900 a minute)",
            );
        }
        if self.cache_entries > MAX_CACHE_ENTRIES {
            return err("cache-entries", "must be at most 100000 (0 turns the cache off)");
        }
        let app_keys = [
            self.app_id.is_some(),
            self.private_key_path.is_some(),
            self.installation_id.is_some(),
        ];
        if app_keys.iter().any(|k| *k) && !app_keys.iter().all(|k| *k) {
            return err(
                "app-id",
                "a GitHub App needs app-id, private-key-path and installation-id together",
            );
        }
        if self.token.is_some() && self.app_id.is_some() {
            return err("token", "configure a token or a GitHub App, not both");
        }
        if self.token.as_ref().is_some_and(|t| t.expose().trim().is_empty()) {
            return err("token", "is empty");
        }
        if self.webhook_secret.as_ref().is_some_and(|s| s.expose().trim().is_empty()) {
            return err(
                "webhook-secret",
                "is empty: anyone could sign webhooks with it; set a random secret or none",
            );
        }
        if self.mode != GitHubMode::Auto && self.credentials() == Credentials::None {
            return err(
                "mode",
                "plan and live read GitHub and need credentials (a token or a GitHub App); \
                 without them Muster plans from nothing (mode = \"auto\")",
            );
        }
        if self.credentials() != Credentials::None {
            let org_ok = !self.org.is_empty()
                && self.org.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !org_ok {
                return err("org", "must name the GitHub organization when credentials are set");
            }
        }
        Ok(())
    }

    /// The configured credentials, [`Credentials::None`] meaning plan-only mode.
    pub fn credentials(&self) -> Credentials {
        if let Some(token) = &self.token {
            return Credentials::Token(token.clone());
        }
        match (self.app_id, &self.private_key_path, self.installation_id) {
            (Some(app_id), Some(path), Some(installation_id)) => {
                Credentials::App { app_id, private_key_path: path.clone(), installation_id }
            }
            _ => Credentials::None,
        }
    }

    /// The planner's guards from this configuration, for a run acting as `acting_login`.
    pub fn guards(&self, acting_login: Option<String>) -> Guards {
        Guards {
            max_removal_fraction: self.max_removal_fraction,
            max_removals_absolute: self.max_removals_absolute,
            max_removal_majority: self.max_removal_majority,
            min_maintainers: self.min_maintainers,
            acting_login,
            allow_mass_removal: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut GitHubConfig)) -> GitHubConfig {
        let mut c = GitHubConfig { org: "acme".into(), ..GitHubConfig::default() };
        f(&mut c);
        c
    }

    #[test]
    fn defaults_are_plan_only_and_valid() {
        let c = GitHubConfig::default();
        assert_eq!(c.credentials(), Credentials::None);
        assert_eq!(c.write_interval, Duration::from_secs(1));
        assert_eq!((c.points_per_minute, c.cache_entries), (600, 10_000));
        assert!(!c.allow_team_deletion);
        c.validate().unwrap();
    }

    #[test]
    fn invalid_settings_are_named() {
        let cases: [(GitHubConfig, &str); 11] = [
            (with(|c| c.api_url = "ftp://x".into()), "api-url"),
            (with(|c| c.max_removal_fraction = 1.5), "max-removal-fraction"),
            (with(|c| c.max_removal_majority = 1.5), "max-removal-majority"),
            (with(|c| c.max_removal_majority = -0.1), "max-removal-majority"),
            (with(|c| c.app_id = Some(1)), "app-id"),
            (
                with(|c| {
                    c.token = Some(Secret::new("t"));
                    c.app_id = Some(1);
                    c.private_key_path = Some("k.pem".into());
                    c.installation_id = Some(2);
                }),
                "token",
            ),
            (
                with(|c| {
                    c.token = Some(Secret::new("t"));
                    c.org = String::new();
                }),
                "org",
            ),
            (with(|c| c.write_interval = Duration::from_secs(61)), "write-interval"),
            (with(|c| c.webhook_secret = Some(Secret::new(""))), "webhook-secret"),
            (with(|c| c.points_per_minute = 9), "points-per-minute"),
            (with(|c| c.cache_entries = 100_001), "cache-entries"),
        ];
        for (config, key) in cases {
            assert_eq!(config.validate().unwrap_err().key, key, "{config:?}");
        }
    }

    #[test]
    fn secrets_come_from_the_environment_and_stay_masked() {
        let mut c = with(|_| {});
        c.apply_env(|name| match name {
            TOKEN_ENV => Some("ghp_secret".into()),
            WEBHOOK_SECRET_ENV => Some("s3cr3t-value".into()),
            _ => None,
        });
        assert_eq!(c.credentials(), Credentials::Token(Secret::new("ghp_secret")));
        assert_eq!(c.webhook_secret.as_ref().unwrap().expose(), "s3cr3t-value");
        let shown = format!("{c:?}");
        assert!(!shown.contains("ghp_secret") && !shown.contains("s3cr3t-value"), "{shown}");
    }

    #[test]
    fn parses_kebab_case_toml_shape() {
        let c: GitHubConfig = serde_json::from_value(serde_json::json!({
            "api-url": "http://127.0.0.1:9000", "org": "acme", "write-interval": "250ms",
            "allow-team-deletion": true, "points-per-minute": 300, "cache-entries": 0
        }))
        .unwrap();
        assert_eq!(c.write_interval, Duration::from_millis(250));
        assert_eq!((c.points_per_minute, c.cache_entries), (300, 0));
        c.validate().unwrap();
        assert!(c.allow_team_deletion);
    }
}
