//! `engine run`: the daemon.

use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use workflows::Workflow;

use crate::config::Config;
use crate::runtime::Engine;

pub async fn run(
    config: Config,
    workflows: Vec<Arc<dyn Workflow>>,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let engine = Engine::start(config, workflows).await?;
    engine.run(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
