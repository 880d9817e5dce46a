//! `engine run`: the daemon (runtime, records store, outbox relay, HTTP API).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;
use workflows::Workflow;

use crate::config::Config;
use crate::daemon::Daemon;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address of the HTTP API [default: http.listen, 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
}

pub async fn run(
    mut config: Config,
    workflows: Vec<Arc<dyn Workflow>>,
    args: RunArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    if let Some(addr) = args.http {
        config.http.listen = addr;
    }
    let daemon = Daemon::start(config, workflows).await?;
    daemon.run(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
