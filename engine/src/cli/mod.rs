//! The `engine` command line: one module per subcommand.
//!
//! [`main`] is the whole program; binaries that add workflows (tests, custom builds) call it with
//! their own list.

mod agent;
mod bench;
pub mod client;
mod dev;
mod dlq;
mod envs;
mod events;
mod migrate;
mod namespaces;
mod output;
mod ping;
mod policy;
mod publish;
mod run;
mod runs;
mod schedules;
mod teams;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use figment::Figment;
use figment::providers::Serialized;
use tokio_util::sync::CancellationToken;
use workflows::Workflow;

use crate::config::{Config, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "engine",
    version,
    about = "Muster: durable workflows on NATS JetStream for platform teams",
    long_about = "Muster runs durable workflows triggered by CloudEvents on NATS JetStream.\n\n\
                  Configuration layers: defaults < --config FILE (TOML) < MUSTER_* environment \
                  (e.g. MUSTER_RUNTIME__MAX_ATTEMPTS=3) < flags."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "MUSTER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// NATS server URL(s), comma-separated [default: the running `engine dev`'s, else
    /// nats://127.0.0.1:4222].
    #[arg(long, global = true, env = "MUSTER_NATS_URL", value_name = "URL")]
    pub nats: Option<String>,
    /// Directory for local state: journal, and the nats-server store of `engine dev`
    /// [default: muster-data].
    #[arg(long, global = true, env = "MUSTER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine: connect to NATS, create or update streams and consumers, run workflows,
    /// serve the HTTP API, until SIGTERM/SIGINT (a second signal exits at once). Without [auth]
    /// credentials the API serves only on a loopback address (or set auth.mode = "none").
    Run(run::RunArgs),
    /// Run the cluster agent: apply one environment's namespace records to the Kubernetes
    /// cluster of the current kubeconfig (or the in-cluster service account), and report.
    Agent(agent::AgentArgs),
    /// Run the engine on embedded defaults: a supervised local nats-server with JetStream and
    /// the journal, both in the data dir, and a fresh admin API token (printed, and written to
    /// <data-dir>/dev-token, where the CLI finds it).
    Dev(dev::DevArgs),
    /// Read the events stream (the audit log).
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Publish a CloudEvent (binary mode) and print its stream sequence.
    Publish(publish::PublishArgs),
    /// Publish a ping and wait for its run to finish: an end-to-end smoke test.
    Ping(ping::PingArgs),
    /// Inspect runs, or fail stuck ones (asks the running engine; uses the journal directly when
    /// none runs).
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Cron schedules: next ticks and the last fired one.
    #[command(subcommand)]
    Schedules(schedules::SchedulesCommand),
    /// Inspect, replay or purge the dead-letter queue.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Teams, over the HTTP API.
    #[command(subcommand)]
    Teams(teams::TeamsCommand),
    /// Environments, over the HTTP API.
    #[command(subcommand)]
    Envs(envs::EnvsCommand),
    /// Namespace records and the clusters' reports, over the HTTP API.
    #[command(subcommand)]
    Namespaces(namespaces::NamespacesCommand),
    /// Apply the records database's migrations (store = "postgres").
    Migrate,
    /// The authorization policy, offline: decide one request (`eval`: exit 0 allowed, 3
    /// denied) or run the policy's tests (`test`: exit 1 if any fails).
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Measure raw JetStream and Muster side by side against one nats-server.
    Bench(bench::BenchArgs),
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective values (secrets masked).
    Check,
}

impl GlobalArgs {
    /// The configuration with this command line's flags as the top layer.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        let mut flags = Figment::new();
        if let Some(url) = &self.nats {
            flags = flags.merge(Serialized::default("nats.url", url));
        }
        if let Some(dir) = &self.data_dir {
            flags = flags.merge(Serialized::default("data-dir", dir));
        }
        Ok(Config::load(self.config.as_deref(), flags)?)
    }
}

/// Parses the command line and runs it with the built-in workflows plus `extra`.
pub fn main(extra: Vec<Arc<dyn Workflow>>) -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.global.load_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let daemon = matches!(
        cli.command,
        Command::Run(_) | Command::Dev(_) | Command::Bench(_) | Command::Agent(_)
    );
    init_tracing(config.log_format, if daemon { "info" } else { "warn" });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, config, extra)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(
    command: Command,
    config: Config,
    extra: Vec<Arc<dyn Workflow>>,
) -> anyhow::Result<ExitCode> {
    let mut workflows = crate::runtime::builtin_workflows();
    workflows.extend(extra);
    match command {
        Command::Run(args) => run::run(config, workflows, args, shutdown_on_signals()).await,
        Command::Agent(args) => agent::agent(config, args, shutdown_on_signals()).await,
        Command::Teams(command) => teams::teams(&config, command).await,
        Command::Events(command) => events::events(config, command).await,
        Command::Envs(command) => envs::envs(&config, command).await,
        Command::Namespaces(command) => namespaces::namespaces(&config, command).await,
        Command::Migrate => migrate::migrate(config).await,
        Command::Dev(args) => dev::dev(config, workflows, args, shutdown_on_signals()).await,
        Command::Publish(args) => publish::publish(config, args).await,
        Command::Ping(args) => ping::ping(config, args).await,
        Command::Runs(command) => runs::runs(config, command).await,
        Command::Dlq(command) => dlq::dlq(config, command).await,
        Command::Schedules(command) => schedules::schedules(config, command).await,
        Command::Bench(args) => bench::bench(config, args).await,
        Command::Policy(command) => policy::policy(&config, command).await,
        Command::Config(ConfigCommand::Check) => {
            print!("{}", toml::to_string_pretty(&config)?);
            eprintln!("configuration is valid");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `MUSTER_LOG` (or `RUST_LOG`) filters logs; the default is `default_level`.
fn init_tracing(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("MUSTER_LOG")
        .ok()
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(default_level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Files removed even when a second signal exits at once (e.g. `engine dev`'s URL file).
static HARD_EXIT_CLEANUP: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn remove_on_hard_exit(path: PathBuf) {
    if let Ok(mut paths) = HARD_EXIT_CLEANUP.lock() {
        paths.push(path);
    }
}

/// A token cancelled by the first SIGTERM or SIGINT; a second one exits the process at once.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("signal received: draining (send it again to exit at once)");
        cancel.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second signal: exiting now");
        for path in HARD_EXIT_CLEANUP.lock().map(|paths| paths.clone()).unwrap_or_default() {
            let _ = std::fs::remove_file(path);
        }
        std::process::exit(130);
    });
    token
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
