//! Agents in tests: `engine agent`'s loops in this process, against a cluster reached with the
//! real kube client (the fake Kubernetes API, or a real cluster), with the real engine API and
//! NATS.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use connectors::cluster::KubeCluster;
use engine::agent::{AgentOptions, Reconciler};
use engine::bus::Names;
use engine::config::Config;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::harness::{WAIT, wait_for};

/// A running agent.
pub struct Agent {
    pub reconciler: Arc<Reconciler>,
    /// Base URL of its `/livez`, `/readyz` and `/metrics`.
    pub health: String,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

/// What an agent is started with.
pub struct AgentSpec<'a> {
    pub nats_url: &'a str,
    pub api_url: &'a str,
    pub environment: &'a str,
    pub cluster: &'a str,
    /// Full reconcile period (tests use a long one so that only the event path is quick).
    pub interval: Duration,
    pub group_prefix: &'a str,
}

impl AgentSpec<'_> {
    fn config(&self) -> Config {
        let mut config = Config::default();
        config.nats.url = Some(self.nats_url.to_owned());
        config.agent.environment = Some(self.environment.to_owned());
        config.agent.cluster = Some(self.cluster.to_owned());
        config.agent.api_url = Some(self.api_url.to_owned());
        config.agent.interval = self.interval;
        config.agent.group_prefix = self.group_prefix.to_owned();
        config
    }
}

impl Agent {
    /// Starts the agent's loops against `client` and returns once its health routes listen.
    ///
    /// # Errors
    /// Invalid options or no port to listen on.
    pub async fn start(spec: AgentSpec<'_>, client: kube::Client) -> anyhow::Result<Agent> {
        Agent::start_with(spec.config(), client).await
    }

    /// Starts an agent with a whole configuration (`[agent]` and `[nats]` set).
    ///
    /// # Errors
    /// Invalid options or no port to listen on.
    pub async fn start_with(config: Config, client: kube::Client) -> anyhow::Result<Agent> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let health = format!("http://{}", listener.local_addr()?);
        let options = AgentOptions::from_config(&config)?;
        let reconciler = Arc::new(Reconciler::new(
            options,
            Arc::new(KubeCluster::new(client)),
            Names::new("muster"),
        ));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(engine::agent::serve(
            config,
            reconciler.clone(),
            listener,
            shutdown.clone(),
        ));
        Ok(Agent { reconciler, health, shutdown, task })
    }

    /// The configuration `spec` gives, to adjust before [`Agent::start_with`].
    pub fn config(spec: &AgentSpec<'_>) -> Config {
        spec.config()
    }

    /// Waits until `/readyz` answers 200 (a full reconcile done, NATS bound).
    ///
    /// # Errors
    /// Not ready within the bound.
    pub async fn ready(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let url = format!("{}/readyz", self.health);
        wait_for("the agent to be ready", WAIT, || async {
            let response = http.get(&url).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await
    }

    /// `/readyz` as status and JSON.
    ///
    /// # Errors
    /// No answer.
    pub async fn readyz(&self) -> anyhow::Result<(u16, Value)> {
        let response = reqwest::get(format!("{}/readyz", self.health)).await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    /// Stops the loops and waits for them.
    ///
    /// # Errors
    /// The agent did not stop in time.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task).await.context("agent did not stop")??;
        Ok(())
    }
}

/// The namespace records of `environment` from the API.
///
/// # Errors
/// The API did not answer a list.
pub async fn namespace_records(api: &str, query: &str) -> anyhow::Result<Vec<Value>> {
    namespace_records_with(&reqwest::Client::new(), api, query).await
}

/// [`namespace_records`] with a given client (e.g. one that sends a bearer token). An error
/// answer (a 401) is an error, not an empty list.
///
/// # Errors
/// The API is unreachable, answers an error, or not JSON.
pub async fn namespace_records_with(
    http: &reqwest::Client,
    api: &str,
    query: &str,
) -> anyhow::Result<Vec<Value>> {
    let response = http.get(format!("{api}/v1/namespaces?{query}")).send().await?;
    let body: Value = response.error_for_status()?.json().await?;
    Ok(body["items"].as_array().cloned().unwrap_or_default())
}

/// Waits until the record named `namespace` shows `cluster`'s report with `outcome`.
///
/// # Errors
/// Not within the bound.
pub async fn wait_report(
    api: &str,
    namespace: &str,
    cluster: &str,
    outcome: &str,
) -> anyhow::Result<Value> {
    wait_report_with(&reqwest::Client::new(), api, namespace, cluster, outcome).await
}

/// [`wait_report`] with a given client.
///
/// # Errors
/// Not within the bound.
pub async fn wait_report_with(
    http: &reqwest::Client,
    api: &str,
    namespace: &str,
    cluster: &str,
    outcome: &str,
) -> anyhow::Result<Value> {
    wait_for(&format!("{cluster} to report {namespace} {outcome}"), WAIT, || async {
        let records = namespace_records_with(http, api, "").await.ok()?;
        let record = records.into_iter().find(|r| r["name"] == namespace)?;
        (record["clusters"][cluster]["outcome"] == outcome).then_some(record)
    })
    .await
}
