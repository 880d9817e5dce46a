//! Test harness: a real nats-server per test, the engine as a child process (so it can be killed
//! with SIGKILL), its CLI, and bounded waits.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use engine::bus::{self, Names, Published};
use engine::journal::{RunRecord, RunStatus};
use engine::natsd::{self, Natsd, NatsdConfig};
use engine::runtime::service::RunDetail;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::de::DeserializeOwned;
use tempfile::TempDir;
use tokio::process::{Child, Command};
use workflows::{Event, EventBuilder, EventBuilderV10};

/// Default bound of every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `check` every 20 ms until it returns `Some`, for at most `timeout`.
///
/// # Errors
/// The timeout, naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A documented route's path with its parameters filled: `{seq}` with 1, every other with `key`.
pub fn route_path(template: &str, key: &str) -> String {
    template
        .replace("{slug}", key)
        .replace("{name}", key)
        .replace("{id}", key)
        .replace("{seq}", "1")
}

/// A test's world: a temp dir, a nats-server in it, and engine settings.
pub struct World {
    pub dir: TempDir,
    pub nats: Natsd,
    /// `MUSTER_*` settings given to every engine and CLI process.
    pub env: Vec<(String, String)>,
    client: Option<async_nats::Client>,
}

impl World {
    /// Starts a nats-server on a free port with its store in a fresh temp dir.
    ///
    /// # Errors
    /// No nats-server >= 2.10 (run scripts/bootstrap-nats), or it did not start.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let bin = natsd::locate()?;
        let config = NatsdConfig {
            log_file: Some(dir.path().join("nats-server.log")),
            ..NatsdConfig::new(dir.path().join("nats"))
        };
        let nats = Natsd::start(&bin, config).await?;
        let env = vec![
            ("MUSTER_RUNTIME__ACK_WAIT".into(), "2s".into()),
            ("MUSTER_RUNTIME__BACKOFF_INITIAL".into(), "200ms".into()),
            ("MUSTER_RUNTIME__BACKOFF_MAX".into(), "2s".into()),
            ("MUSTER_RUNTIME__GRACE_PERIOD".into(), "10s".into()),
        ];
        Ok(Self { dir, nats, env, client: None })
    }

    /// Adds or replaces a `MUSTER_*` setting for processes started from now on.
    pub fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    /// Removes a setting for processes started from now on.
    pub fn unset(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    /// The directory the test workflows write their effects into.
    pub fn effects_dir(&self) -> PathBuf {
        let dir = self.dir.path().join("effects");
        std::fs::create_dir_all(&dir).expect("effects dir");
        dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Gives every process started from now on this configuration file.
    pub fn use_config(&mut self, toml: &str) -> anyhow::Result<()> {
        let path = self.dir.path().join("engine.toml");
        std::fs::write(&path, toml)?;
        self.set("MUSTER_CONFIG", &path.display().to_string());
        Ok(())
    }

    fn command(&self, args: &[&str]) -> Command {
        self.command_in(&self.data_dir(), args)
    }

    fn command_in(&self, data_dir: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(testbed());
        command
            .arg("--nats")
            .arg(self.nats.url())
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env_remove("MUSTER_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .kill_on_drop(true);
        command
    }

    /// Starts `engine run` (with the test workflows and its HTTP API on a free port) and waits
    /// until it serves: the NATS service answers (it starts after streams and consumers exist)
    /// and `/livez` answers.
    ///
    /// # Errors
    /// The engine exited or did not serve in time.
    pub async fn start_engine(&mut self) -> anyhow::Result<EngineProcess> {
        let data_dir = self.data_dir();
        self.start_engine_in(&data_dir).await
    }

    /// Starts another engine with its own data dir (a second replica) and waits until it serves.
    ///
    /// # Errors
    /// As [`World::start_engine`].
    pub async fn start_engine_in(&mut self, data_dir: &Path) -> anyhow::Result<EngineProcess> {
        let mut engine = self.spawn_engine_in(data_dir)?;
        let client = self.client().await?;
        let names = Names::new("muster");
        let http = reqwest::Client::new();
        let livez = format!("{}/livez", engine.api);
        let ready = wait_for("the engine to serve", WAIT, || {
            let client = client.clone();
            let names = names.clone();
            let request = http.get(&livez).send();
            async move {
                engine::runtime::service::ask_run(&client, &names, "-")
                    .await
                    .err()
                    .filter(|e| !matches!(e, engine::runtime::service::AskError::NoEngine(_)))?;
                request.await.ok().filter(|r| r.status().is_success()).map(|_| ())
            }
        });
        tokio::select! {
            ready = ready => ready.with_context(|| format!("engine log:\n{}", engine.log()))?,
            status = engine.child.wait() => bail!("engine exited at start ({:?}):\n{}", status?, engine.log()),
        }
        Ok(engine)
    }

    /// Spawns `engine run` with its HTTP API on a free port, without waiting for it to serve.
    ///
    /// # Errors
    /// It could not be spawned.
    pub fn spawn_engine(&mut self) -> anyhow::Result<EngineProcess> {
        let data_dir = self.data_dir();
        self.spawn_engine_in(&data_dir)
    }

    /// Spawns `engine run` with its own data dir, its HTTP API on a free port.
    ///
    /// # Errors
    /// It could not be spawned.
    pub fn spawn_engine_in(&mut self, data_dir: &Path) -> anyhow::Result<EngineProcess> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        self.spawn_engine_at(data_dir, &addr)
    }

    /// Spawns `engine run` with its HTTP API on `addr` (e.g. a port a client already uses).
    ///
    /// # Errors
    /// It could not be spawned.
    pub fn spawn_engine_at(
        &mut self,
        data_dir: &Path,
        addr: &str,
    ) -> anyhow::Result<EngineProcess> {
        let log = self.dir.path().join(format!("engine-{}.log", rand_suffix()));
        let child = self
            .command_in(data_dir, &["run", "--http", addr])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawning muster-testbed run")?;
        Ok(EngineProcess { child, log, api: format!("http://{addr}") })
    }

    /// Spawns any `engine` command with extra environment variables, its stderr in `log`, and
    /// returns without waiting (killed when dropped).
    ///
    /// # Errors
    /// It could not be spawned.
    pub fn spawn_command(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<Child> {
        self.command(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .with_context(|| format!("spawning `engine {}`", args.join(" ")))
    }

    /// Runs the CLI to completion and returns its stdout.
    ///
    /// # Errors
    /// It failed; the error carries its stderr.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = tokio::time::timeout(WAIT, self.command(args).output()).await??;
        if !output.status.success() {
            bail!(
                "`engine {}` failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// Runs the CLI with `--json` output and parses it.
    ///
    /// # Errors
    /// As [`World::cli`], or output that is not the expected JSON.
    pub async fn cli_json<T: DeserializeOwned>(&self, args: &[&str]) -> anyhow::Result<T> {
        let stdout = self.cli(args).await?;
        serde_json::from_str(&stdout).with_context(|| format!("parsing: {stdout}"))
    }

    /// A client of the test's nats-server.
    ///
    /// # Errors
    /// It cannot connect.
    pub async fn client(&mut self) -> anyhow::Result<async_nats::Client> {
        if self.client.is_none() {
            self.client = Some(async_nats::connect(self.nats.url()).await?);
        }
        Ok(self.client.clone().expect("just set"))
    }

    pub async fn jetstream(&mut self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(self.client().await?))
    }

    /// Publishes an event the way Muster does (binary mode, Nats-Msg-Id from source and id).
    ///
    /// # Errors
    /// JetStream did not acknowledge.
    pub async fn publish(&mut self, event: &Event) -> anyhow::Result<Published> {
        let js = self.jetstream().await?;
        Ok(bus::publish_event(&js, &Names::new("muster"), event).await?)
    }

    /// The events stored on `subject` (wildcards allowed), oldest first, with the time JetStream
    /// stored each.
    ///
    /// # Errors
    /// The stream is unreachable or holds something that is not a CloudEvent.
    pub async fn events_on(
        &mut self,
        subject: &str,
    ) -> anyhow::Result<Vec<(Event, DateTime<Utc>)>> {
        use async_nats::jetstream::consumer::{DeliverPolicy, pull};
        use futures::StreamExt;
        let stream = self.jetstream().await?.get_stream("MUSTER_EVENTS").await?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject.to_owned(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await?;
        let mut events = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(events);
        }
        let mut messages = consumer.messages().await?;
        while let Some(message) = tokio::time::timeout(WAIT, messages.next()).await?.transpose()? {
            let info = message.info().map_err(|e| anyhow::anyhow!(e))?;
            let stored = DateTime::<Utc>::from_timestamp(
                info.published.unix_timestamp(),
                info.published.nanosecond(),
            )
            .context("stored time")?;
            let pending = info.pending;
            let event =
                engine::bus::codec::decode(message.headers.as_ref(), &message.payload, usize::MAX)?;
            events.push((event, stored));
            if pending == 0 {
                break;
            }
        }
        Ok(events)
    }

    /// Runs of a workflow, via `engine runs list --json` (engine running or not).
    pub async fn runs(&self, workflow: &str) -> anyhow::Result<Vec<RunRecord>> {
        self.cli_json(&["runs", "list", "--workflow", workflow, "--json"]).await
    }

    /// One run with its steps, via `engine runs show --json`.
    pub async fn run_detail(&self, run_id: &str) -> anyhow::Result<RunDetail> {
        self.cli_json(&["runs", "show", run_id, "--json"]).await
    }

    /// Waits until the run reaches `status`.
    pub async fn wait_run(&self, run_id: &str, status: RunStatus) -> anyhow::Result<RunDetail> {
        wait_for(&format!("run {run_id} to be {status}"), WAIT, || async {
            self.run_detail(run_id).await.ok().filter(|d| d.run.status == status)
        })
        .await
    }
}

/// An event for the tests.
pub fn event(ty: &str, id: &str, subject: &str, data: serde_json::Value) -> Event {
    EventBuilderV10::new()
        .id(id)
        .source("/e2e")
        .ty(ty)
        .subject(subject)
        .data("application/json", data)
        .build()
        .expect("valid test event")
}

/// The `muster-testbed` binary: `MUSTER_TESTBED`, else beside the test binary's directory
/// (`target/<profile>/deps/<test>` → `target/<profile>/muster-testbed`).
fn testbed() -> PathBuf {
    if let Some(path) = std::env::var_os("MUSTER_TESTBED") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(Path::parent).expect("target dir").join("muster-testbed")
}

fn rand_suffix() -> String {
    format!(
        "{:06}",
        std::process::id() as u64 * 1000
            + u64::from(std::time::UNIX_EPOCH.elapsed().unwrap_or_default().subsec_millis())
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A free TCP port on loopback (bound, read, released).
///
/// # Errors
/// No port could be bound.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// An `engine run` child process.
pub struct EngineProcess {
    child: Child,
    log: PathBuf,
    /// Base URL of its HTTP API, e.g. `http://127.0.0.1:41234`.
    pub api: String,
}

impl EngineProcess {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id().expect("engine is running") as i32)
    }

    /// SIGKILL: no cleanup of any kind.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        kill(self.pid(), Signal::SIGKILL)?;
        self.child.wait().await?;
        Ok(())
    }

    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        Ok(kill(self.pid(), signal)?)
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        Ok(tokio::time::timeout(timeout, self.child.wait())
            .await
            .context("engine did not exit")??)
    }

    /// The engine's log so far.
    pub fn log(&self) -> String {
        read(&self.log)
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGTERM)?;
        let status = self.wait_exit(WAIT).await?;
        anyhow::ensure!(status.success(), "engine exited with {status}:\n{}", self.log());
        Ok(())
    }
}
