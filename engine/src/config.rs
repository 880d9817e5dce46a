//! The engine's one typed configuration, loaded in layers: defaults → TOML file → `MUSTER_*`
//! environment → command-line flags, then validated.
//!
//! Environment variables name a key path with `__` between sections: `MUSTER_STREAMS__REPLICAS`,
//! `MUSTER_NATS__PREFIX`, `MUSTER_RUNTIME__MAX_ATTEMPTS`. Secrets (NATS password, nkey seed) come only
//! from the environment or files and are masked in `Debug` and in `engine config check`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Top-level keys that `MUSTER_*` variables may set. Other `MUSTER_*` variables are not
/// configuration keys (flags such as `MUSTER_NATS_URL`, secrets read by connectors, or variables
/// Kubernetes injects for a Service named `muster`) and are ignored; a typo inside a section
/// (`MUSTER_RUNTIME__MAX_ATEMPTS`) is still an error.
const SECTIONS: &[&str] = &[
    "data-dir",
    "log-format",
    "nats",
    "streams",
    "runtime",
    "schedules",
    "store",
    "database-url",
    "database-schema",
    "http",
    "outbox",
    "github",
    "sync",
    "agent",
    "auth",
    "authz",
];

/// A secret string: readable by code, printed as `***` (shared with the connectors' config).
pub use connectors::github::Secret;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Local state: the sled journal, and for `engine dev` the nats-server store.
    pub data_dir: PathBuf,
    pub nats: NatsConfig,
    pub streams: StreamsConfig,
    pub runtime: RuntimeConfig,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    /// Cron schedules; each tick publishes one event (see `engine::schedule`).
    pub schedules: Vec<ScheduleConfig>,
    /// Where records (teams, environments, namespace records) live: `sled` (in the data dir)
    /// or `postgres` (`database-url`).
    pub store: StoreKind,
    /// PostgreSQL URL for `store = "postgres"`; a secret: set it with `MUSTER_DATABASE_URL`.
    pub database_url: Option<Secret>,
    /// PostgreSQL schema of the records tables (default: the server's `search_path`).
    pub database_schema: Option<String>,
    pub http: HttpConfig,
    pub outbox: OutboxConfig,
    /// The GitHub organization Muster manages; without credentials, plan-only mode.
    pub github: connectors::github::GitHubConfig,
    pub sync: SyncConfig,
    /// `engine agent`: the cluster agent of one environment in one cluster.
    pub agent: AgentConfig,
    /// Who may call the HTTP API: bearer tokens and OIDC.
    pub auth: crate::auth::AuthConfig,
    /// What callers may do: the Rego policy and its data.
    pub authz: AuthzConfig,
}

/// `[authz]`: the policy that decides what an authenticated caller may do.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct AuthzConfig {
    /// Members of these groups may do everything (`data.config.admin_groups` in the policy).
    pub admin_groups: Vec<String>,
    /// A directory of `*.rego` files (package `muster.authz`) used instead of the shipped
    /// policy; `*_test.rego` files in it are tests (`engine policy test`).
    pub policies: Option<PathBuf>,
    /// Ask a remote OPA (`POST /v1/data/<path>`) instead of evaluating in process.
    pub opa: Option<crate::policy::OpaConfig>,
    /// Who may publish which CloudEvents on `POST /v1/events` (`data.config.publishers`).
    pub publishers: Vec<crate::policy::Publisher>,
}

impl Default for AuthzConfig {
    fn default() -> Self {
        Self {
            admin_groups: vec!["muster-admins".into()],
            policies: None,
            opa: None,
            publishers: Vec::new(),
        }
    }
}

impl AuthzConfig {
    /// The data the policy reads as `data.config`.
    pub fn policy_data(&self) -> crate::policy::PolicyData {
        crate::policy::PolicyData {
            admin_groups: self.admin_groups.clone(),
            publishers: self.publishers.clone(),
        }
    }
}

/// `[agent]`: what one `engine agent` reconciles and how.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct AgentConfig {
    /// The environment whose namespace records this agent applies (`--environment`).
    pub environment: Option<String>,
    /// This cluster's name as the environment lists it (`--cluster`).
    pub cluster: Option<String>,
    /// Base URL of the engine's HTTP API, read for the full reconcile (`--api`).
    pub api_url: Option<String>,
    /// File holding the bearer token for the API (e.g. a mounted Secret); unset:
    /// `MUSTER_TOKEN`, else none.
    pub api_token_file: Option<PathBuf>,
    /// Period of the full reconcile (besides the one at start).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Address of the agent's own `/livez`, `/readyz` and `/metrics`.
    pub listen: SocketAddr,
    /// Put in front of every group in RoleBinding subjects (e.g. `oidc:` on clusters whose API
    /// server prefixes OIDC groups).
    pub group_prefix: String,
    /// Take fields another field manager owns instead of reporting a conflict.
    pub force_conflicts: bool,
    /// Namespaces reconciled at once.
    pub concurrency: usize,
    /// `/readyz` fails when the last full reconcile finished longer ago than this.
    #[serde(with = "humantime_serde")]
    pub max_reconcile_age: Duration,
    /// Deletion guard: at most this many namespaces deleted in any hour; a deletion past it is
    /// held (reported `failed`, retried later) so that deleting an environment or many teams
    /// at once cannot empty a cluster by surprise. 0 holds every deletion.
    pub max_namespace_deletions_per_hour: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            environment: None,
            cluster: None,
            api_url: None,
            api_token_file: None,
            interval: Duration::from_secs(300),
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            group_prefix: String::new(),
            force_conflicts: false,
            concurrency: 16,
            max_reconcile_age: Duration::from_secs(900),
            max_namespace_deletions_per_hour: 10,
        }
    }
}

/// How `sync_team` shapes namespace records.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct SyncConfig {
    /// A team's members group in the clusters is `<group-prefix><team slug>`, its
    /// maintainers group `<group-prefix><team slug>-maintainers`.
    pub group_prefix: String,
    /// The ClusterRole the members group gets in each of the team's namespaces.
    #[serde(alias = "namespace-role")]
    pub member_role: String,
    /// The ClusterRole the maintainers group gets.
    pub maintainer_role: String,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            group_prefix: String::new(),
            member_role: "edit".into(),
            maintainer_role: "admin".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("muster-data"),
            nats: NatsConfig::default(),
            streams: StreamsConfig::default(),
            runtime: RuntimeConfig::default(),
            log_format: LogFormat::Text,
            store: StoreKind::Sled,
            database_url: None,
            database_schema: None,
            http: HttpConfig::default(),
            outbox: OutboxConfig::default(),
            github: connectors::github::GitHubConfig::default(),
            sync: SyncConfig::default(),
            agent: AgentConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            authz: AuthzConfig::default(),
            schedules: vec![ScheduleConfig::default()],
        }
    }
}

/// One `[[schedules]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Names the schedule, its events and its memory; letters, digits, - or _.
    pub name: String,
    /// Cron expression with seconds: `sec min hour day-of-month month day-of-week [year]`.
    pub cron: String,
    /// IANA time zone the expression is read in.
    pub timezone: String,
    /// Type of the event each tick publishes.
    pub event_type: String,
    pub enabled: bool,
    /// At start, skip the catch-up of a missed tick older than this (unset: always catch up).
    #[serde(with = "humantime_serde")]
    pub starting_deadline: Option<Duration>,
}

impl Default for ScheduleConfig {
    /// `resync`: every 10 minutes, UTC.
    fn default() -> Self {
        Self {
            name: "resync".into(),
            cron: "0 */10 * * * *".into(),
            timezone: "UTC".into(),
            event_type: FIRED_TYPE.into(),
            enabled: true,
            starting_deadline: None,
        }
    }
}

/// The event type schedules emit unless configured otherwise.
pub const FIRED_TYPE: &str = "muster.schedule.fired";

/// A `[[schedules]]` entry that cannot be scheduled.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule {name:?}: invalid cron expression {cron:?}: {reason}")]
    Cron { name: String, cron: String, reason: String },
    #[error(
        "schedule {name:?}: unknown time zone {timezone:?} (use an IANA name such as Europe/Paris)"
    )]
    TimeZone { name: String, timezone: String },
    #[error("schedule {name:?}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("schedule {name:?}: cron expression {cron:?} never fires")]
    NeverFires { name: String, cron: String },
}

/// What a valid `[[schedules]]` entry means: its cron expression, read in its time zone.
#[derive(Clone, Debug)]
pub struct ScheduleSpec {
    pub cron: cron::Schedule,
    pub timezone: Tz,
}

impl ScheduleSpec {
    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.after(&t.with_timezone(&self.timezone)).next().map(|t| t.with_timezone(&Utc))
    }
}

impl ScheduleConfig {
    /// Checks the entry and parses its cron expression and time zone.
    ///
    /// # Errors
    /// An invalid name, event type, cron expression or time zone, or an expression that never
    /// fires, named by the schedule.
    pub fn parse(&self) -> Result<ScheduleSpec, ScheduleError> {
        let name = self.name.clone();
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ScheduleError::Invalid {
                name,
                reason: "the name must be letters, digits, - or _".into(),
            });
        }
        if !workflows::event::is_token_path(&self.event_type) {
            return Err(ScheduleError::Invalid {
                name,
                reason: format!("event type {:?} cannot name a NATS subject", self.event_type),
            });
        }
        let cron = cron::Schedule::from_str(&self.cron).map_err(|e| ScheduleError::Cron {
            name: name.clone(),
            cron: self.cron.clone(),
            reason: e.to_string(),
        })?;
        let timezone = Tz::from_str(&self.timezone).map_err(|_| ScheduleError::TimeZone {
            name: name.clone(),
            timezone: self.timezone.clone(),
        })?;
        let spec = ScheduleSpec { cron, timezone };
        if spec.next_after(Utc::now()).is_none() {
            return Err(ScheduleError::NeverFires { name, cron: self.cron.clone() });
        }
        Ok(spec)
    }

    /// Parses every entry, in order.
    ///
    /// # Errors
    /// The first invalid entry, or two entries with one name.
    pub fn parse_all(configs: &[ScheduleConfig]) -> Result<Vec<ScheduleSpec>, ScheduleError> {
        let mut seen = std::collections::HashSet::new();
        configs
            .iter()
            .map(|config| {
                if !seen.insert(config.name.as_str()) {
                    return Err(ScheduleError::Invalid {
                        name: config.name.clone(),
                        reason: "two schedules have this name".into(),
                    });
                }
                config.parse()
            })
            .collect()
    }
}

/// The records store backend.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// Embedded, in the engine's sled database in the data dir.
    Sled,
    /// PostgreSQL at `database-url`; apply migrations with `engine migrate` first.
    Postgres,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the HTTP API listens on (`--http` on `engine run` / `engine dev`).
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones are refused with 413.
    pub max_body_bytes: usize,
    /// How long one request may take before it is answered 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Serve HTTPS with this certificate chain (PEM); with `tls-key-file`.
    pub tls_cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key_file: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct OutboxConfig {
    /// How often the relay looks for unpublished record events when no write woke it.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Attempts to publish one event before the relay waits for its next pass.
    pub max_attempts: u32,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { poll_interval: Duration::from_secs(5), max_attempts: 5 }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated. Unset: the URL that a running `engine dev` wrote into the
    /// data dir, else `nats://127.0.0.1:4222`.
    pub url: Option<String>,
    /// Prefix of every subject and stream Muster uses (`<prefix>.events.>`, `<PREFIX>_EVENTS`).
    pub prefix: String,
    /// Connection name shown in the server's monitoring.
    pub name: String,
    pub creds_file: Option<PathBuf>,
    /// File holding an nkey seed (`SU...`).
    pub nkey_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub tls_required: bool,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Timeout of one JetStream API request or publish acknowledgement.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: None,
            prefix: "muster".into(),
            name: "muster-engine".into(),
            creds_file: None,
            nkey_file: None,
            user: None,
            password: None,
            tls_required: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            request_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct StreamsConfig {
    /// Stream replicas: 1 on one server, 3 on a production cluster.
    pub replicas: usize,
    /// How long events stay in the events stream (also the audit log of what happened).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// How long dead letters stay in the DLQ stream.
    #[serde(with = "humantime_serde")]
    pub dlq_max_age: Duration,
    /// JetStream's window for dropping a re-published event with the same source and id.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// Largest event (headers and body) the runtime accepts; larger ones go to the DLQ.
    pub max_event_bytes: usize,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            replicas: 1,
            max_age: Duration::from_secs(7 * 24 * 3600),
            dlq_max_age: Duration::from_secs(30 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            max_event_bytes: 256 * 1024,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Runs of one workflow in flight at once in this engine (also the consumer's MaxAckPending).
    pub concurrency: usize,
    /// How long JetStream waits for an answer before redelivering; runs send progress
    /// heartbeats at a third of it.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Attempts of a run before it fails into the DLQ.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt up to `backoff-max`, with jitter.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// On SIGTERM/SIGINT, how long in-flight runs may take to finish.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// How long succeeded runs stay in the journal; at least `streams.max-age`, so that a
    /// redelivered or re-published message finds its run.
    #[serde(with = "humantime_serde")]
    pub journal_retention: Duration,
    /// How long failed runs stay in the journal; at least `streams.dlq-max-age` and
    /// `streams.max-age`, so that a replayed dead letter finds its run. A failed run whose dead
    /// letter is still in the DLQ stays past it, until the letter is gone.
    #[serde(with = "humantime_serde")]
    pub failed_run_retention: Duration,
    /// MiB of sled's page cache for the data dir's database (the journal, and the records when
    /// `store = "sled"`): what the engine keeps of it in memory, whatever the journal's size.
    pub journal_cache_mib: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            ack_wait: Duration::from_secs(30),
            max_attempts: 5,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            grace_period: Duration::from_secs(30),
            journal_retention: Duration::from_secs(7 * 24 * 3600),
            failed_run_retention: Duration::from_secs(30 * 24 * 3600),
            journal_cache_mib: crate::journal::sled::DEFAULT_CACHE_MIB,
        }
    }
}

/// A configuration that failed to load or validate.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} does not exist")]
    MissingFile { path: PathBuf },
    #[error("invalid configuration")]
    Parse(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads defaults, then `file` (when given), then `MUSTER_*` variables, then `overrides`
    /// (the command line's values, as a partial TOML-shaped tree), and validates the result.
    ///
    /// # Errors
    /// A missing file, a value of the wrong type, an unknown key, or a failed validation.
    pub fn load(file: Option<&Path>, overrides: Figment) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile { path: path.to_owned() });
            }
            figment = figment.merge(Toml::file(path));
        }
        let env = Env::prefixed("MUSTER_").filter_map(|key| {
            let key = key.as_str().to_ascii_lowercase().replace("__", ".").replace('_', "-");
            let section = key.split('.').next().unwrap_or_default();
            SECTIONS.contains(&section).then(|| key.into())
        });
        let mut config: Config = figment
            .merge(env)
            .merge(overrides)
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        config.github.apply_env(|name| std::env::var(name).ok());
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    ///
    /// # Errors
    /// The first invalid setting, named by its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: &str| Err(ConfigError::Invalid(msg.to_owned()));
        self.github
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("github.{}: {}", e.key, e.message)))?;
        let prefix = &self.nats.prefix;
        if prefix.is_empty()
            || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return invalid("nats.prefix must be one NATS token of letters, digits, - or _");
        }
        if self.runtime.concurrency == 0 {
            return invalid("runtime.concurrency must be at least 1");
        }
        if !(1..=1 << 20).contains(&self.runtime.journal_cache_mib) {
            return invalid("runtime.journal-cache-mib must be between 1 and 1048576 (1 TiB)");
        }
        if self.runtime.max_attempts == 0 {
            return invalid("runtime.max-attempts must be at least 1");
        }
        if self.runtime.ack_wait < Duration::from_secs(1) {
            return invalid("runtime.ack-wait must be at least 1s");
        }
        if self.runtime.backoff_initial > self.runtime.backoff_max {
            return invalid("runtime.backoff-initial must not exceed runtime.backoff-max");
        }
        self.validate_retention()?;
        if self.streams.replicas == 0 || self.streams.replicas > 5 {
            return invalid("streams.replicas must be between 1 and 5");
        }
        if self.streams.max_event_bytes < 1024 {
            return invalid("streams.max-event-bytes must be at least 1024");
        }
        if self.nats.user.is_some() != self.nats.password.is_some() {
            return invalid("nats.user and nats.password go together");
        }
        if self.nats.tls_cert_file.is_some() != self.nats.tls_key_file.is_some() {
            return invalid("nats.tls-cert-file and nats.tls-key-file go together");
        }
        if self.store == StoreKind::Postgres
            && self.database_url.as_ref().is_none_or(|url| url.expose().trim().is_empty())
        {
            return invalid(
                "store = \"postgres\" needs database-url (set MUSTER_DATABASE_URL, e.g. \
                 postgres://user@host:5432/muster)",
            );
        }
        if let Some(schema) = &self.database_schema {
            let mut chars = schema.chars();
            let plain = schema.len() <= 63
                && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !plain {
                return invalid(
                    "database-schema must be a plain lowercase identifier ([a-z_][a-z0-9_]*)",
                );
            }
        }
        if self.http.max_body_bytes < 1024 {
            return invalid("http.max-body-bytes must be at least 1024");
        }
        if self.http.request_timeout < Duration::from_millis(100) {
            return invalid("http.request-timeout must be at least 100ms");
        }
        if self.outbox.poll_interval < Duration::from_millis(10) {
            return invalid("outbox.poll-interval must be at least 10ms");
        }
        if self.outbox.max_attempts == 0 {
            return invalid("outbox.max-attempts must be at least 1");
        }
        ScheduleConfig::parse_all(&self.schedules)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.auth.validate().map_err(ConfigError::Invalid)?;
        if self.http.tls_cert_file.is_some() != self.http.tls_key_file.is_some() {
            return invalid("http.tls-cert-file and http.tls-key-file go together");
        }
        Ok(())
    }

    /// The journal keeps a run as long as a message can drive it again (see
    /// `journal::retention`).
    fn validate_retention(&self) -> Result<(), ConfigError> {
        let (runtime, streams) = (&self.runtime, &self.streams);
        let too_short =
            |key: &str, value: Duration, other: &str, other_value: Duration, why: &str| {
                Err(ConfigError::Invalid(format!(
                    "runtime.{key} ({}) must be at least streams.{other} ({}): {why}",
                    humantime::format_duration(value),
                    humantime::format_duration(other_value),
                )))
            };
        if runtime.journal_retention < streams.max_age {
            return too_short(
                "journal-retention",
                runtime.journal_retention,
                "max-age",
                streams.max_age,
                "a redelivered or re-published event would run again after its run is purged",
            );
        }
        if runtime.failed_run_retention < streams.max_age {
            return too_short(
                "failed-run-retention",
                runtime.failed_run_retention,
                "max-age",
                streams.max_age,
                "a redelivered event would run again after its failed run is purged",
            );
        }
        if runtime.failed_run_retention < streams.dlq_max_age {
            return too_short(
                "failed-run-retention",
                runtime.failed_run_retention,
                "dlq-max-age",
                streams.dlq_max_age,
                "a replayed dead letter would find no run and re-execute every step",
            );
        }
        Ok(())
    }

    /// The NATS URL to use: configured, else the one a running `engine dev` recorded in the
    /// data dir, else the NATS default.
    pub fn nats_url(&self) -> String {
        if let Some(url) = &self.nats.url {
            return url.clone();
        }
        std::fs::read_to_string(self.dev_url_file())
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned())
    }

    /// Where `engine dev` records the URL of the nats-server it supervises.
    pub fn dev_url_file(&self) -> PathBuf {
        self.data_dir.join("dev-nats.url")
    }

    /// The engine's sled database: the journal and, with `store = "sled"`, the records.
    pub fn journal_dir(&self) -> PathBuf {
        self.data_dir.join("journal")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_and_validate() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("engine.toml");
        std::fs::write(
            &file,
            "data-dir = \"/var/lib/muster\"\n[runtime]\nmax-attempts = 9\nack-wait = \"45s\"\n",
        )
        .unwrap();
        let flags = Figment::new().merge(Serialized::default("runtime.max-attempts", 3));
        let config = Config::load(Some(&file), flags).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/muster"));
        assert_eq!(config.runtime.ack_wait, Duration::from_secs(45));
        assert_eq!(config.runtime.max_attempts, 3, "flags win over the file");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("engine.toml");
        std::fs::write(&file, "[runtime]\nmax-atempts = 9\n").unwrap();
        let err = Config::load(Some(&file), Figment::new()).unwrap_err();
        let err = format!("{:#}", anyhow::Error::from(err));
        assert!(err.contains("max-atempts"), "{err}");

        std::fs::write(&file, "[runtime]\nconcurrency = 0\n").unwrap();
        let err = Config::load(Some(&file), Figment::new()).unwrap_err().to_string();
        assert!(err.contains("runtime.concurrency"), "{err}");

        std::fs::write(&file, "[runtime]\njournal-cache-mib = 0\n").unwrap();
        let err = Config::load(Some(&file), Figment::new()).unwrap_err().to_string();
        assert!(err.contains("runtime.journal-cache-mib must be between 1"), "{err}");

        let err = Config::load(Some(&dir.path().join("nope.toml")), Figment::new()).unwrap_err();
        assert!(matches!(err, ConfigError::MissingFile { .. }));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature
    fn environment_sets_keys_of_known_sections_only() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MUSTER_RUNTIME__MAX_ATTEMPTS", "7");
            jail.set_env("MUSTER_DATA_DIR", "/srv/muster");
            jail.set_env("MUSTER_SERVICE_HOST", "10.0.0.1");
            jail.set_env("MUSTER_NATS_URL", "nats://flag-handled-by-clap:4222");
            let config = Config::load(None, Figment::new()).expect("loads");
            assert_eq!(config.runtime.max_attempts, 7);
            assert_eq!(config.data_dir, PathBuf::from("/srv/muster"));
            assert_eq!(config.nats.url, None);
            jail.set_env("MUSTER_RUNTIME__MAX_ATEMPTS", "7");
            let err = Config::load(None, Figment::new()).unwrap_err();
            let err = format!("{:#}", anyhow::Error::from(err));
            assert!(err.contains("max-atempts"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature
    fn postgres_needs_a_database_url_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MUSTER_STORE", "postgres");
            let err = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(err.contains("database-url"), "{err}");
            jail.set_env("MUSTER_DATABASE_URL", "postgres://u:pw@db/muster");
            jail.set_env("MUSTER_HTTP__LISTEN", "0.0.0.0:9000");
            let config = Config::load(None, Figment::new()).expect("loads");
            assert_eq!(config.store, StoreKind::Postgres);
            assert_eq!(
                config.database_url.as_ref().map(Secret::expose),
                Some("postgres://u:pw@db/muster")
            );
            assert_eq!(config.http.listen.port(), 9000);
            assert!(!toml::to_string(&config).unwrap().contains("pw@"));
            jail.set_env("MUSTER_DATABASE_SCHEMA", "Bad-Schema");
            assert!(Config::load(None, Figment::new()).is_err());
            Ok(())
        });
    }

    #[test]
    fn the_example_file_lists_every_key_at_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/engine.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let from_file: Config = toml::from_str(&text).unwrap();
        assert_eq!(from_file, Config::default());
    }

    #[test]
    fn invalid_schedules_are_named() {
        let schedule = |cron: &str, timezone: &str| ScheduleConfig {
            name: "resync".into(),
            cron: cron.into(),
            timezone: timezone.into(),
            ..ScheduleConfig::default()
        };
        let err = schedule("every tuesday", "UTC").parse().unwrap_err().to_string();
        assert!(
            err.starts_with("schedule \"resync\": invalid cron expression \"every tuesday\""),
            "{err}"
        );
        let err = schedule("0 */10 * * * *", "Mars/Olympus").parse().unwrap_err().to_string();
        assert!(err.contains("schedule \"resync\": unknown time zone \"Mars/Olympus\""), "{err}");
        let twice = vec![ScheduleConfig::default(), ScheduleConfig::default()];
        let err = ScheduleConfig::parse_all(&twice).unwrap_err().to_string();
        assert!(err.contains("two schedules"), "{err}");
        let config = Config { schedules: twice, ..Config::default() };
        assert!(config.validate().unwrap_err().to_string().contains("two schedules"));
    }

    #[test]
    fn the_deployment_configs_are_valid_configurations() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for file in ["config/agent.toml", "kind/manifests/engine.toml", "kind/manifests/agent.toml"]
        {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let config: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            config.validate().unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }

    #[test]
    fn the_journal_keeps_runs_as_long_as_a_message_can_drive_them() {
        let days = |n: u64| Duration::from_secs(n * 24 * 3600);
        Config::default().validate().expect("the defaults agree");
        let mut config = Config::default();
        config.runtime.failed_run_retention = days(7); // the old default, shorter than the DLQ's 30
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("runtime.failed-run-retention (7days)")
                && err.contains("streams.dlq-max-age (30days)"),
            "{err}"
        );
        let mut config = Config::default();
        config.streams.max_age = days(14);
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("runtime.journal-retention (7days)")
                && err.contains("streams.max-age (14days)"),
            "{err}"
        );
        config.runtime.journal_retention = days(14);
        config.validate().expect("a journal retention as long as the stream's");
        config.streams.max_age = days(40);
        config.runtime.journal_retention = days(40);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("runtime.failed-run-retention") && err.contains("streams.max-age"));
    }

    #[test]
    fn secrets_are_masked() {
        let mut config = Config::default();
        config.nats.password = Some(Secret::new("hunter2"));
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!toml::to_string(&config).unwrap().contains("hunter2"));
    }
}
