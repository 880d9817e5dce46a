//! `engine dev`: the engine on embedded defaults, with a supervised local nats-server.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;
use workflows::Workflow;

use crate::config::Config;
use crate::daemon::Daemon;
use crate::natsd::{self, Natsd, NatsdConfig};

/// Times the local nats-server is restarted after exiting on its own before `engine dev` gives up.
const MAX_NATS_RESTARTS: u32 = 5;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Port of the local nats-server (0 picks a free one).
    #[arg(long, default_value_t = 4223)]
    pub nats_port: u16,
    /// Address of the HTTP API [default: http.listen, 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
}

pub async fn dev(
    mut config: Config,
    workflows: Vec<Arc<dyn Workflow>>,
    args: DevArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    if let Some(addr) = args.http {
        config.http.listen = addr;
    }
    let bin = natsd::locate()?;
    std::fs::create_dir_all(&config.data_dir)?;
    let data_dir = std::path::absolute(&config.data_dir)?;
    let store_dir = data_dir.join("nats");
    let log_file = data_dir.join("nats-server.log");
    let mut server = Natsd::start(
        &bin,
        NatsdConfig {
            port: args.nats_port,
            log_file: Some(log_file.clone()),
            ..NatsdConfig::new(&store_dir)
        },
    )
    .await?;
    config.nats.url = Some(server.url());
    std::fs::write(config.dev_url_file(), server.url())?;
    super::remove_on_hard_exit(config.dev_url_file());
    let token = dev_token(&mut config)?;
    super::remove_on_hard_exit(crate::auth::dev_token_file(&config.data_dir));

    let token_file = crate::auth::dev_token_file(&data_dir);
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "engine".into());
    let journal = data_dir.join("journal");
    let daemon = match Daemon::start(config.clone(), workflows).await {
        Ok(daemon) => daemon,
        Err(e) => {
            server.stop().await?;
            let _ = std::fs::remove_file(config.dev_url_file());
            return Err(e.into());
        }
    };
    let names = daemon.workflow_names();
    println!(
        "Muster dev is running.\n\
         \x20 NATS       {url} (nats-server {version}, {bin_path})\n\
         \x20 JetStream  {store}  (log: {log})\n\
         \x20 journal    {journal}\n\
         \x20 records    {records}\n\
         \x20 HTTP API   {api}  (OpenAPI: {api}/openapi.json)\n\
         \x20 API token  {token}\n\
         \x20 workflows  {names}\n\n\
         In another terminal, from this directory:\n\
         \x20 {exe} ping\n\
         \x20 {exe} publish --type muster.ping --source /me --data '{{\"hello\":\"world\"}}'\n\
         \x20 {exe} runs list\n\
         \x20 curl -X POST {api}/v1/environments -H \"authorization: Bearer $(cat {token_file})\" \\\n\
         \x20      -H 'content-type: application/json' -d '{{\"name\":\"dev\"}}'\n\
         \x20 {exe} teams list --api {api}\n\n\
         Ctrl-C drains in-flight runs and stops; a second Ctrl-C exits at once.",
        url = server.url(),
        version = bin.version,
        bin_path = bin.path.display(),
        store = store_dir.display(),
        log = log_file.display(),
        journal = journal.display(),
        records = match config.store {
            crate::config::StoreKind::Sled => format!("sled, in {}", journal.display()),
            crate::config::StoreKind::Postgres => "PostgreSQL (database-url)".to_owned(),
        },
        api = format!("http://{}", daemon.http_addr()),
        names = names.join(", "),
        token = token.as_deref().map_or_else(
            || "none: authentication is off (auth.mode = \"none\")".to_owned(),
            |token| format!(
                "{token}\n\x20            (subject \"dev\", an admin; in {}, where the CLI finds it)",
                token_file.display()
            ),
        ),
        token_file = token_file.display(),
    );
    let mut engine_task = tokio::spawn(daemon.run(shutdown.clone()));
    let mut restarts = 0;
    let outcome = loop {
        tokio::select! {
            result = &mut engine_task => break result.map_err(anyhow::Error::from).and_then(|r| r.map_err(Into::into)),
            status = server.wait() => {
                if shutdown.is_cancelled() {
                    break (&mut engine_task).await.map_err(anyhow::Error::from).and_then(|r| r.map_err(Into::into));
                }
                restarts += 1;
                tracing::warn!(?status, restarts, "local nats-server exited; restarting it");
                if restarts > MAX_NATS_RESTARTS {
                    shutdown.cancel();
                    let _ = (&mut engine_task).await;
                    break Err(anyhow::anyhow!("nats-server keeps exiting; see {}", log_file.display()));
                }
                if let Err(e) = server.restart().await {
                    tracing::error!(error = %e, "cannot restart nats-server");
                }
            }
        }
    };
    server.stop().await?;
    let _ = std::fs::remove_file(config.dev_url_file());
    let _ = std::fs::remove_file(crate::auth::dev_token_file(&config.data_dir));
    outcome.map(|()| ExitCode::SUCCESS)
}

/// Generates this run's admin token, adds it to the configured ones and writes it to the data
/// dir (owner-only) for the CLI. `None` when the configuration turns authentication off.
fn dev_token(config: &mut Config) -> anyhow::Result<Option<String>> {
    use crate::auth::{AuthMode, TokenConfig, dev_token_file, generate_token, tokens};
    let file = dev_token_file(&config.data_dir);
    if config.auth.mode == AuthMode::None {
        let _ = std::fs::remove_file(&file);
        return Ok(None);
    }
    let token = generate_token();
    config.auth.tokens.push(TokenConfig {
        subject: "dev".into(),
        groups: config.authz.admin_groups.clone(),
        sha256: tokens::hash(&token),
    });
    write_private(&file, &token)?;
    Ok(Some(token))
}

/// Writes a file only its owner can read.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}
