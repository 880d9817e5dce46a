//! `engine agent`: the cluster agent of one environment in one cluster.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use connectors::cluster::KubeCluster;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The environment whose namespace records this agent applies [agent.environment].
    #[arg(long, value_name = "ENV")]
    pub environment: Option<String>,
    /// This cluster's name, as the environment lists it [agent.cluster].
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// Base URL of the engine's HTTP API [agent.api-url].
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// Address of the agent's /livez, /readyz and /metrics [agent.listen, 127.0.0.1:8081].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

/// Loads the Kubernetes client the standard way (`KUBECONFIG`, `~/.kube/config`, in-cluster
/// service account) and runs the agent until a signal.
pub async fn agent(
    mut config: Config,
    args: AgentArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let agent = &mut config.agent;
    agent.environment = args.environment.or(agent.environment.take());
    agent.cluster = args.cluster.or(agent.cluster.take());
    agent.api_url = args.api.or(agent.api_url.take());
    if let Some(listen) = args.listen {
        agent.listen = listen;
    }
    // Check the options before reaching for the cluster, so a missing flag is said first.
    crate::agent::AgentOptions::from_config(&config)?;
    let cluster = KubeCluster::from_environment().await?;
    crate::agent::run(config, Arc::new(cluster), shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
