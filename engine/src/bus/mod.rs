//! JetStream: connecting, naming, streams and consumers, and publishing CloudEvents.
//!
//! Subjects (prefix `muster` by default):
//! - `<prefix>.events.<type>.<key>`: every event; `key` is the CloudEvent subject as one token;
//! - `<prefix>.runs.<workflow>.<key>`: re-drives (DLQ replay, retry) that only one workflow reads;
//! - `<prefix>.dlq.<workflow>`: dead letters;
//! - `<prefix>.api.*`: the engine's NATS service endpoints (runs list/show).
//!
//! Streams: `<PREFIX>_EVENTS` holds events and re-drives (Limits retention: it is also the audit
//! log), `<PREFIX>_DLQ` holds dead letters, `<PREFIX>_ADVISORIES` keeps JetStream's
//! max-deliveries advisories until the engine handled them (`runtime::poison`). One durable pull
//! consumer per workflow.

pub mod codec;

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use async_nats::{Client, ConnectOptions, HeaderMap};
use bytes::Bytes;
use cloudevents::{AttributesReader, Event};
use workflows::event::subject_token;

use crate::config::{Config, NatsConfig, StreamsConfig};

/// Lowest nats-server Muster runs on: consumers with several filter subjects need 2.10.
pub const MIN_SERVER_VERSION: semver::Version = semver::Version::new(2, 10, 0);

/// Errors talking to NATS.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot read NATS credentials {path}: {source}")]
    Credentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "nats-server {found} at {url} is too old: Muster needs {MIN_SERVER_VERSION} or newer \
         (consumers with several filter subjects); upgrade the server"
    )]
    ServerTooOld { found: String, url: String },
    #[error("JetStream is not available on {url}: {reason} (start nats-server with -js)")]
    NoJetStream { url: String, reason: String },
    #[error(
        "event type {0:?} cannot name a NATS subject: it must be dot-separated tokens without spaces, `*` or `>`"
    )]
    InvalidType(String),
    #[error("{what}: {source}")]
    JetStream {
        what: String,
        #[source]
        source: async_nats::Error,
    },
}

impl BusError {
    pub fn jetstream(what: impl Into<String>, source: impl Into<async_nats::Error>) -> Self {
        Self::JetStream { what: what.into(), source: source.into() }
    }
}

pub use workflows::event::is_token_path;

/// Names of every subject and stream, derived from the prefix.
#[derive(Clone, Debug)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn stream_base(&self) -> String {
        self.prefix.to_ascii_uppercase().replace('-', "_")
    }

    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.stream_base())
    }

    pub fn dlq_stream(&self) -> String {
        format!("{}_DLQ", self.stream_base())
    }

    /// The stream that keeps JetStream's max-deliveries advisories of the workflow consumers.
    pub fn advisories_stream(&self) -> String {
        format!("{}_ADVISORIES", self.stream_base())
    }

    /// The subject an event is published on.
    pub fn event_subject(&self, event: &Event) -> String {
        format!("{}.events.{}.{}", self.prefix, event.ty(), subject_token(event.subject()))
    }

    /// The subject that re-drives one workflow's run for `key`.
    pub fn redrive_subject(&self, workflow: &str, key: &str) -> String {
        format!("{}.runs.{workflow}.{}", self.prefix, subject_token(Some(key)))
    }

    /// The key-value bucket remembering each schedule's last tick.
    pub fn schedules_bucket(&self) -> String {
        format!("{}_SCHEDULES", self.stream_base())
    }

    pub fn dlq_subject(&self, workflow: &str) -> String {
        format!("{}.dlq.{workflow}", self.prefix)
    }

    pub fn api_group(&self) -> String {
        format!("{}.api", self.prefix)
    }

    /// The filter subjects of a workflow's consumer: its trigger patterns and its re-drives.
    pub fn consumer_filters(&self, workflow: &str, triggers: &[&str]) -> Vec<String> {
        let mut filters: Vec<String> = triggers
            .iter()
            .map(|pattern| match pattern.ends_with('>') {
                true => format!("{}.events.{pattern}", self.prefix),
                false => format!("{}.events.{pattern}.*", self.prefix),
            })
            .collect();
        filters.push(format!("{}.runs.{workflow}.*", self.prefix));
        filters
    }
}

/// Connects with the configured credentials and TLS, logs connection events, and checks that
/// the server is recent enough and has JetStream.
///
/// # Errors
/// Unreachable server, unreadable credentials, a server older than [`MIN_SERVER_VERSION`], or no
/// JetStream.
pub async fn connect(config: &Config) -> Result<(Client, Context), BusError> {
    let url = config.nats_url();
    let nats = &config.nats;
    let options = connect_options(nats).await?;
    let client = options
        .connect(url.as_str())
        .await
        .map_err(|source| BusError::Connect { url: url.clone(), source })?;
    check_server_version(&client, &url)?;
    let js = jetstream::ContextBuilder::new().timeout(nats.request_timeout).build(client.clone());
    js.query_account()
        .await
        .map_err(|e| BusError::NoJetStream { url: url.clone(), reason: e.to_string() })?;
    Ok((client, js))
}

async fn connect_options(nats: &NatsConfig) -> Result<ConnectOptions, BusError> {
    let mut options = ConnectOptions::new()
        .name(&nats.name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(nats.request_timeout))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                other => tracing::info!(event = %other, "NATS connection event"),
            }
        });
    if let Some(path) = &nats.creds_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|source| BusError::Credentials { path: path.display().to_string(), source })?;
    }
    if let Some(path) = &nats.nkey_file {
        let seed = std::fs::read_to_string(path)
            .map_err(|source| BusError::Credentials { path: path.display().to_string(), source })?;
        options = options.nkey(seed.trim().to_owned());
    }
    if let (Some(user), Some(password)) = (&nats.user, &nats.password) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    if nats.tls_required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &nats.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&nats.tls_cert_file, &nats.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}

fn check_server_version(client: &Client, url: &str) -> Result<(), BusError> {
    let found = client.server_info().version;
    let parsed = semver::Version::parse(found.trim_start_matches('v'))
        .map(|v| semver::Version::new(v.major, v.minor, v.patch));
    match parsed {
        Ok(version) if version >= MIN_SERVER_VERSION => Ok(()),
        _ => Err(BusError::ServerTooOld { found, url: url.to_owned() }),
    }
}

/// Creates or updates the events and DLQ streams to match the configuration.
///
/// # Errors
/// The JetStream API refused a stream (e.g. a replica count the cluster cannot hold).
pub async fn ensure_streams(
    js: &Context,
    names: &Names,
    config: &StreamsConfig,
) -> Result<(), BusError> {
    let events = stream::Config {
        name: names.events_stream(),
        description: Some("Muster events and re-drives".into()),
        subjects: vec![
            format!("{}.events.>", names.prefix()),
            format!("{}.runs.>", names.prefix()),
        ],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        num_replicas: config.replicas,
        max_age: config.max_age,
        duplicate_window: config.duplicate_window,
        discard: DiscardPolicy::Old,
        ..Default::default()
    };
    let dlq = stream::Config {
        name: names.dlq_stream(),
        description: Some("Muster dead letters: failed runs and undecodable events".into()),
        subjects: vec![format!("{}.dlq.>", names.prefix())],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        num_replicas: config.replicas,
        max_age: config.dlq_max_age,
        duplicate_window: config.duplicate_window,
        ..Default::default()
    };
    for stream in [events, dlq] {
        let name = stream.name.clone();
        js.create_or_update_stream(stream)
            .await
            .map_err(|e| BusError::jetstream(format!("creating or updating stream {name}"), e))?;
    }
    Ok(())
}

/// Settings of a workflow's durable consumer.
pub struct ConsumerSpec<'a> {
    pub workflow: &'a str,
    pub triggers: &'a [&'a str],
    pub ack_wait: Duration,
    pub max_ack_pending: usize,
    /// Deliveries of one message before JetStream gives up on it and publishes a max-deliveries
    /// advisory (`runtime::poison::max_deliver`).
    pub max_deliver: i64,
}

/// Creates or updates a workflow's durable pull consumer (create-or-update: a changed
/// configuration, `max_deliver` included, is applied to an existing consumer). Redeliveries are
/// paced by the runtime (Nak with delay); MaxDeliver only bounds a message that never gets an
/// answer (see `runtime::poison`).
///
/// # Errors
/// The JetStream API refused the consumer, e.g. overlapping trigger patterns.
pub async fn ensure_consumer(
    js: &Context,
    names: &Names,
    spec: &ConsumerSpec<'_>,
) -> Result<PullConsumer, BusError> {
    let stream_name = names.events_stream();
    let stream = js
        .get_stream(&stream_name)
        .await
        .map_err(|e| BusError::jetstream(format!("looking up stream {stream_name}"), e))?;
    let config = pull::Config {
        durable_name: Some(spec.workflow.to_owned()),
        description: Some(format!("Muster workflow {}", spec.workflow)),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: spec.ack_wait,
        max_ack_pending: i64::try_from(spec.max_ack_pending).unwrap_or(i64::MAX),
        max_deliver: spec.max_deliver,
        filter_subjects: names.consumer_filters(spec.workflow, spec.triggers),
        ..Default::default()
    };
    stream.create_consumer(config).await.map_err(|e| {
        BusError::jetstream(format!("creating or updating consumer {}", spec.workflow), e)
    })
}

/// What JetStream answered to a publish.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Published {
    pub stream: String,
    pub sequence: u64,
    pub duplicate: bool,
    pub subject: String,
}

/// Publishes an event in binary mode on its subject and waits for the PubAck.
///
/// # Errors
/// A type that cannot name a subject, no stream takes the subject, or the server did not
/// acknowledge in time.
pub async fn publish_event(
    js: &Context,
    names: &Names,
    event: &Event,
) -> Result<Published, BusError> {
    if !is_token_path(event.ty()) {
        return Err(BusError::InvalidType(event.ty().to_owned()));
    }
    let subject = names.event_subject(event);
    let (headers, body) = codec::encode(event);
    publish_raw(js, subject, headers, body).await
}

/// Publishes a prepared message and waits for the PubAck.
///
/// # Errors
/// As [`publish_event`].
pub async fn publish_raw(
    js: &Context,
    subject: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Published, BusError> {
    let ack = js
        .send_publish(subject.clone(), PublishMessage::build().headers(headers).payload(body))
        .await
        .map_err(|e| BusError::jetstream(format!("publishing to {subject}"), e))?
        .await
        .map_err(|e| BusError::jetstream(format!("waiting for the PubAck of {subject}"), e))?;
    Ok(Published { stream: ack.stream, sequence: ack.sequence, duplicate: ack.duplicate, subject })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let names = Names::new("muster");
        assert_eq!(names.events_stream(), "MUSTER_EVENTS");
        assert_eq!(Names::new("my-app").dlq_stream(), "MY_APP_DLQ");
        assert_eq!(
            names.consumer_filters("sync_team", &["muster.team.*", "com.github.>"]),
            [
                "muster.events.muster.team.*.*",
                "muster.events.com.github.>",
                "muster.runs.sync_team.*"
            ]
        );
        assert_eq!(names.redrive_subject("ping", "a.b"), "muster.runs.ping.a_b");
        assert!(is_token_path("muster.team.created"));
        for bad in ["", "a..b", "a b", "a.*", "a.>", ".a"] {
            assert!(!is_token_path(bad), "{bad:?}");
        }
    }
}
