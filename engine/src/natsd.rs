//! Locating and supervising a local `nats-server` process.
//!
//! `engine dev`, the benchmark and every integration test run against a real JetStream server
//! that Muster starts itself (DESIGN.md, "Real components in tests"). This module finds a server
//! binary that is recent enough ([`locate`]), starts it on a port with its own store directory and
//! waits until JetStream answers ([`Natsd::start`]), and stops, kills or restarts it.
//!
//! # Guarantees
//!
//! - [`Natsd::start`] returns only once a NATS client can connect and JetStream answers an
//!   account-info request, or after [`READY_TIMEOUT`] with an error; it never sleeps blindly.
//! - The child process is killed when its [`Natsd`] is dropped, so a panicking test does not leak
//!   a server (a test process killed with SIGKILL still can; nothing here can prevent that).
//! - [`Natsd::restart`] reuses the port and store directory, so streams and their messages survive.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use semver::Version;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The oldest `nats-server` release Muster works with, as (major, minor).
pub const MIN_VERSION: (u64, u64) = (2, 10);

/// The environment variable naming the `nats-server` binary to use; `scripts/bootstrap-nats`
/// prints a suitable value.
pub const BIN_ENV: &str = "NATS_SERVER_BIN";

/// How long [`Natsd::start`] waits for the server to accept clients with JetStream enabled.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How long [`Natsd::stop`] waits after SIGTERM before it sends SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between two readiness probes while the server starts.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Upper bound for one readiness probe (connect plus JetStream account info).
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Attempts when the port was picked automatically and the server could not keep it: another
/// process may take a port between [`free_port`] returning it and the server binding it.
const AUTO_PORT_ATTEMPTS: usize = 3;

/// How much of the server's log an early-exit error quotes.
const LOG_TAIL_LINES: usize = 20;
const LOG_TAIL_BYTES: u64 = 8 * 1024;

/// Why a `nats-server` could not be found, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NatsdError {
    /// Neither `NATS_SERVER_BIN` nor `PATH` names a `nats-server`.
    #[error(
        "no nats-server found ({BIN_ENV} is unset and none is on PATH); Muster needs nats-server >= {}.{}: \
         run `scripts/bootstrap-nats` (e.g. `export {BIN_ENV}=$(scripts/bootstrap-nats)`) or set {BIN_ENV} \
         to a nats-server >= {}.{}",
        MIN_VERSION.0, MIN_VERSION.1, MIN_VERSION.0, MIN_VERSION.1
    )]
    NotFound,

    /// The server found first is older than [`MIN_VERSION`].
    #[error(
        "nats-server at {} is version {version}, but Muster needs nats-server >= {}.{}: \
         run `scripts/bootstrap-nats` (e.g. `export {BIN_ENV}=$(scripts/bootstrap-nats)`) or set {BIN_ENV} \
         to a nats-server >= {}.{}",
        path.display(), MIN_VERSION.0, MIN_VERSION.1, MIN_VERSION.0, MIN_VERSION.1
    )]
    TooOld {
        /// The binary that was asked for its version.
        path: PathBuf,
        /// The version it reported.
        version: Version,
    },

    /// The binary could not be run, or `--version` printed something unexpected.
    #[error(
        "cannot use {} as nats-server: {reason}; run `scripts/bootstrap-nats` or set {BIN_ENV} \
         to a nats-server >= {}.{}",
        path.display(), MIN_VERSION.0, MIN_VERSION.1
    )]
    Unusable {
        /// The binary that was tried.
        path: PathBuf,
        /// What went wrong, including the output of `--version` when there was one.
        reason: String,
    },

    /// No free local port could be reserved.
    #[error("cannot reserve a free TCP port on 127.0.0.1")]
    FreePort(#[source] io::Error),

    /// The store directory could not be created.
    #[error("cannot create the JetStream store directory {}", path.display())]
    StoreDir {
        /// The directory from [`NatsdConfig::store_dir`].
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The process could not be spawned.
    #[error("cannot spawn {}", path.display())]
    Spawn {
        /// The binary that was spawned.
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The server exited before it was ready.
    #[error("nats-server exited before it was ready ({status}){}", format_log_tail(log_tail))]
    ExitedEarly {
        /// How it exited.
        status: ExitStatus,
        /// The last lines of its log file, when it had one.
        log_tail: Option<String>,
    },

    /// The server kept running but did not answer with JetStream in time.
    #[error(
        "nats-server at {url} did not answer with JetStream within {waited:?}; last error: {last_error}{}",
        format_log_tail(log_tail)
    )]
    NotReady {
        /// The URL that was probed.
        url: String,
        /// How long [`Natsd::start`] waited.
        waited: Duration,
        /// The last probe's failure.
        last_error: String,
        /// The last lines of its log file, when it had one.
        log_tail: Option<String>,
    },

    /// Signalling or waiting for the process failed.
    #[error("cannot {action} nats-server (pid {})", format_pid(*pid))]
    Process {
        /// What was attempted: "signal", "wait for" or "kill".
        action: &'static str,
        /// The process id, if the process had not been reaped yet.
        pid: Option<u32>,
        #[source]
        source: io::Error,
    },
}

fn format_pid(pid: Option<u32>) -> String {
    pid.map_or_else(|| "already reaped".to_owned(), |pid| pid.to_string())
}

fn format_log_tail(log_tail: &Option<String>) -> String {
    match log_tail {
        Some(tail) if !tail.trim().is_empty() => format!("; end of its log:\n{tail}"),
        _ => String::new(),
    }
}

/// A `nats-server` binary and the version it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsServerBin {
    /// Where the binary is.
    pub path: PathBuf,
    /// What `nats-server --version` reported.
    pub version: Version,
}

impl NatsServerBin {
    /// Asks the binary at `path` for its version and accepts it if it is at least
    /// [`MIN_VERSION`].
    ///
    /// # Errors
    ///
    /// [`NatsdError::Unusable`] if it cannot be run or prints no version,
    /// [`NatsdError::TooOld`] if it is older than [`MIN_VERSION`].
    pub fn inspect(path: impl Into<PathBuf>) -> Result<NatsServerBin, NatsdError> {
        let path = path.into();
        let output = std::process::Command::new(&path)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|err| NatsdError::Unusable {
                path: path.clone(),
                reason: format!("running `--version` failed: {err}"),
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let version = parse_version(&stdout).ok_or_else(|| NatsdError::Unusable {
            path: path.clone(),
            reason: format!(
                "`--version` exited with {} and printed {:?}, expected \"nats-server: vX.Y.Z\"",
                output.status,
                stdout.trim()
            ),
        })?;
        check_version(NatsServerBin { path, version })
    }
}

/// Finds a `nats-server` that is at least [`MIN_VERSION`]: `$NATS_SERVER_BIN` first, then the one
/// `scripts/bootstrap-nats` installed under the current directory, then each `nats-server` on
/// `PATH` in order. The first recent enough one wins.
///
/// # Errors
///
/// When none qualifies, the error for the first candidate tried (so a wrong `NATS_SERVER_BIN` is
/// reported rather than hidden behind an old server on `PATH`), or [`NatsdError::NotFound`] if
/// there was no candidate at all.
pub fn locate() -> Result<NatsServerBin, NatsdError> {
    let mut first_error = None;
    for candidate in candidates() {
        match NatsServerBin::inspect(&candidate) {
            Ok(bin) => return Ok(bin),
            Err(err) => {
                tracing::debug!(path = %candidate.display(), error = %err, "skipping nats-server");
                first_error.get_or_insert(err);
            }
        }
    }
    Err(first_error.unwrap_or(NatsdError::NotFound))
}

/// Where `scripts/bootstrap-nats` puts the server, relative to the repository root.
pub const BOOTSTRAPPED: &str = ".tools/bin/nats-server";

/// `$NATS_SERVER_BIN`, then [`BOOTSTRAPPED`] under the current directory, then every
/// `nats-server` file on `PATH`, without duplicates.
fn candidates() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    if let Some(bin) = std::env::var_os(BIN_ENV).filter(|bin| !bin.is_empty()) {
        found.push(PathBuf::from(bin));
    }
    let bootstrapped = PathBuf::from(BOOTSTRAPPED);
    if bootstrapped.is_file() {
        found.push(bootstrapped);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() && !found.contains(&candidate) {
                found.push(candidate);
            }
        }
    }
    found
}

/// Extracts the version from `nats-server --version` output such as `nats-server: v2.9.10`.
fn parse_version(output: &str) -> Option<Version> {
    output.split_whitespace().find_map(|word| {
        let word = word.strip_prefix('v').unwrap_or(word);
        word.starts_with(|c: char| c.is_ascii_digit()).then(|| Version::parse(word).ok()).flatten()
    })
}

fn check_version(bin: NatsServerBin) -> Result<NatsServerBin, NatsdError> {
    if (bin.version.major, bin.version.minor) >= MIN_VERSION {
        Ok(bin)
    } else {
        Err(NatsdError::TooOld { path: bin.path, version: bin.version })
    }
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago (the OS picks it; the listener is
/// closed again before returning, so another process can still take it).
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// How to run a `nats-server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsdConfig {
    /// The address to listen on (`-a`).
    pub host: String,
    /// The client port (`-p`); 0 picks a free port with [`free_port`].
    pub port: u16,
    /// The JetStream store directory (`-sd`); created if missing.
    pub store_dir: PathBuf,
    /// Where the server writes its log (`-l`); without one its output is discarded.
    pub log_file: Option<PathBuf>,
    /// More command-line arguments, passed after the ones above.
    pub extra_args: Vec<String>,
}

impl NatsdConfig {
    /// Listens on 127.0.0.1 on a free port with the given store directory, without a log file.
    pub fn new(store_dir: impl Into<PathBuf>) -> NatsdConfig {
        NatsdConfig {
            host: Ipv4Addr::LOCALHOST.to_string(),
            port: 0,
            store_dir: store_dir.into(),
            log_file: None,
            extra_args: Vec::new(),
        }
    }
}

/// A running `nats-server` with JetStream, owned by this process.
///
/// Dropping it kills the server (`kill_on_drop`); call [`Natsd::stop`] for a clean shutdown.
#[derive(Debug)]
pub struct Natsd {
    bin: NatsServerBin,
    /// The configuration with the port resolved, so that a restart reuses it.
    config: NatsdConfig,
    child: Child,
}

impl Natsd {
    /// Spawns `nats-server -a HOST -p PORT -js -sd STORE_DIR [-l LOG_FILE] EXTRA_ARGS...` and waits
    /// (at most [`READY_TIMEOUT`]) until a client can connect and JetStream answers.
    ///
    /// With `port: 0` a free port is picked; if the server exits early (typically because another
    /// process took that port in the meantime) it is retried on a new port a few times.
    ///
    /// # Errors
    ///
    /// [`NatsdError::ExitedEarly`] (with the tail of the log file, if configured) when the process
    /// exits before it is ready, [`NatsdError::NotReady`] on timeout, and the errors for creating
    /// the store directory, picking a port or spawning.
    pub async fn start(bin: &NatsServerBin, config: NatsdConfig) -> Result<Natsd, NatsdError> {
        std::fs::create_dir_all(&config.store_dir)
            .map_err(|source| NatsdError::StoreDir { path: config.store_dir.clone(), source })?;
        let auto_port = config.port == 0;
        let attempts = if auto_port { AUTO_PORT_ATTEMPTS } else { 1 };
        let mut attempt = 1;
        loop {
            let mut config = config.clone();
            if auto_port {
                config.port = free_port().map_err(NatsdError::FreePort)?;
            }
            let mut natsd = Natsd { bin: bin.clone(), child: spawn(bin, &config)?, config };
            match natsd.wait_ready().await {
                Ok(()) => return Ok(natsd),
                Err(err @ NatsdError::ExitedEarly { .. }) if attempt < attempts => {
                    tracing::debug!(port = natsd.config.port, error = %err, "nats-server exited early; retrying on another port");
                    attempt += 1;
                }
                Err(err) => {
                    natsd.kill().await;
                    return Err(err);
                }
            }
        }
    }

    /// The client URL, e.g. `nats://127.0.0.1:4222` (loopback when listening on all addresses).
    pub fn url(&self) -> String {
        client_url(&self.config.host, self.config.port)
    }

    /// The client port the server listens on.
    pub fn port(&self) -> u16 {
        self.config.port
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        &self.config.store_dir
    }

    /// Stops the server cleanly: SIGTERM, then SIGKILL if it has not exited within
    /// [`STOP_TIMEOUT`]. Stopping a server that has already exited succeeds.
    ///
    /// # Errors
    ///
    /// [`NatsdError::Process`] if the process cannot be signalled or waited for.
    pub async fn stop(&mut self) -> Result<(), NatsdError> {
        let pid = self.child.id();
        if self.has_exited()? {
            return Ok(());
        }
        if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
            match signal::kill(Pid::from_raw(pid), Signal::SIGTERM) {
                // ESRCH: it exited between the check above and the signal.
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(errno) => {
                    return Err(NatsdError::Process {
                        action: "signal",
                        pid: pid.try_into().ok(),
                        source: errno.into(),
                    });
                }
            }
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                let status = status.map_err(|source| NatsdError::Process {
                    action: "wait for",
                    pid,
                    source,
                })?;
                tracing::debug!(port = self.config.port, %status, "nats-server stopped");
                Ok(())
            }
            Err(_elapsed) => {
                tracing::warn!(port = self.config.port, timeout = ?STOP_TIMEOUT, "nats-server ignored SIGTERM; killing it");
                self.child.kill().await.map_err(|source| NatsdError::Process {
                    action: "kill",
                    pid,
                    source,
                })
            }
        }
    }

    /// Kills the server with SIGKILL (a crash, as far as JetStream is concerned) and waits until
    /// it has exited.
    pub async fn kill(&mut self) {
        if let Err(err) = self.child.kill().await {
            // Only fails if the process was already reaped, or waiting failed.
            tracing::debug!(error = %err, "killing nats-server");
        }
    }

    /// Stops the server and starts it again on the same port with the same store directory, then
    /// waits until it is ready like [`Natsd::start`].
    ///
    /// # Errors
    ///
    /// Those of [`Natsd::stop`] and [`Natsd::start`].
    pub async fn restart(&mut self) -> Result<(), NatsdError> {
        self.stop().await?;
        self.child = spawn(&self.bin, &self.config)?;
        if let Err(err) = self.wait_ready().await {
            self.kill().await;
            return Err(err);
        }
        Ok(())
    }

    /// Resolves when the server process exits, for supervisors; immediately if it already has.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    fn has_exited(&mut self) -> Result<bool, NatsdError> {
        let pid = self.child.id();
        self.child.try_wait().map(|status| status.is_some()).map_err(|source| NatsdError::Process {
            action: "wait for",
            pid,
            source,
        })
    }

    /// Polls until a client can connect and JetStream answers an account-info request. Each
    /// probe races the process's exit, so a server that dies is reported at once.
    async fn wait_ready(&mut self) -> Result<(), NatsdError> {
        let url = self.url();
        let started = Instant::now();
        let deadline = started + READY_TIMEOUT;
        let mut last_error = String::from("no probe finished");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(NatsdError::NotReady {
                    url,
                    waited: started.elapsed(),
                    last_error,
                    log_tail: self.log_tail(),
                });
            }
            let probe_then_pause = async {
                let outcome = tokio::time::timeout(remaining.min(READY_PROBE_TIMEOUT), probe(&url))
                    .await
                    .unwrap_or_else(|_elapsed| Err("probe timed out".to_owned()));
                if outcome.is_err() {
                    tokio::time::sleep(READY_POLL_INTERVAL).await;
                }
                outcome
            };
            let exited = tokio::select! {
                status = self.child.wait() => Some(status),
                outcome = probe_then_pause => match outcome {
                    Ok(()) => {
                        tracing::debug!(%url, elapsed = ?started.elapsed(), "nats-server ready");
                        return Ok(());
                    }
                    Err(err) => {
                        last_error = err;
                        None
                    }
                },
            };
            if let Some(status) = exited {
                let status = status.map_err(|source| NatsdError::Process {
                    action: "wait for",
                    pid: self.child.id(),
                    source,
                })?;
                return Err(NatsdError::ExitedEarly { status, log_tail: self.log_tail() });
            }
        }
    }

    /// The last lines of the log file, if there is one and it can be read.
    fn log_tail(&self) -> Option<String> {
        let path = self.config.log_file.as_ref()?;
        let log = read_tail(path, LOG_TAIL_BYTES).ok()?;
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(LOG_TAIL_LINES);
        Some(lines[from..].join("\n"))
    }
}

/// A URL a local client can connect to for a server listening on `host`:`port`.
fn client_url(host: &str, port: u16) -> String {
    match host {
        "" | "0.0.0.0" => format!("nats://127.0.0.1:{port}"),
        "::" | "[::]" => format!("nats://[::1]:{port}"),
        host if host.contains(':') && !host.starts_with('[') => format!("nats://[{host}]:{port}"),
        host => format!("nats://{host}:{port}"),
    }
}

fn spawn(bin: &NatsServerBin, config: &NatsdConfig) -> Result<Child, NatsdError> {
    let mut command = Command::new(&bin.path);
    command
        .arg("-a")
        .arg(&config.host)
        .arg("-p")
        .arg(config.port.to_string())
        .arg("-js")
        .arg("-sd")
        .arg(&config.store_dir);
    if let Some(log_file) = &config.log_file {
        command.arg("-l").arg(log_file);
    }
    command
        .args(&config.extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a terminal's Ctrl-C reaches the engine, which drains its runs
        // and then stops the server, instead of killing the server mid-drain.
        .process_group(0)
        .kill_on_drop(true);
    let child =
        command.spawn().map_err(|source| NatsdError::Spawn { path: bin.path.clone(), source })?;
    tracing::debug!(path = %bin.path.display(), version = %bin.version, port = config.port, pid = ?child.id(), "spawned nats-server");
    Ok(child)
}

/// One readiness probe: connect, then ask JetStream for the account's info.
async fn probe(url: &str) -> Result<(), String> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(READY_PROBE_TIMEOUT)
        .connect(url)
        .await
        .map_err(|err| format!("connect: {err}"))?;
    async_nats::jetstream::new(client)
        .query_account()
        .await
        .map(drop)
        .map_err(|err| format!("JetStream account info: {err}"))
}

fn read_tail(path: &Path, max_bytes: u64) -> io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_and_prerelease_versions() {
        assert_eq!(parse_version("nats-server: v2.9.10\n"), Some(Version::new(2, 9, 10)));
        assert_eq!(parse_version("nats-server: v2.12.8"), Some(Version::new(2, 12, 8)));
        assert_eq!(
            parse_version("nats-server: v2.11.0-RC.1").map(|v| v.to_string()),
            Some("2.11.0-RC.1".to_owned())
        );
        assert_eq!(parse_version("usage: nats-server [options]"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn accepts_2_10_and_newer_only() {
        let bin = |major, minor| NatsServerBin {
            path: PathBuf::from("/opt/nats-server"),
            version: Version::new(major, minor, 0),
        };
        assert!(check_version(bin(2, 10)).is_ok());
        assert!(check_version(bin(2, 12)).is_ok());
        assert!(check_version(bin(3, 0)).is_ok());
        assert!(check_version(bin(2, 9)).is_err());
        assert!(check_version(bin(1, 20)).is_err());
    }

    #[test]
    fn too_old_error_says_what_was_found_and_how_to_fix_it() {
        let err = check_version(NatsServerBin {
            path: PathBuf::from("/usr/sbin/nats-server"),
            version: Version::new(2, 9, 10),
        })
        .unwrap_err();
        let message = err.to_string();
        for expected in [
            "/usr/sbin/nats-server",
            "2.9.10",
            ">= 2.10",
            "scripts/bootstrap-nats",
            "NATS_SERVER_BIN",
        ] {
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn url_names_a_connectable_host() {
        assert_eq!(client_url("127.0.0.1", 4222), "nats://127.0.0.1:4222");
        assert_eq!(client_url("0.0.0.0", 4222), "nats://127.0.0.1:4222");
        assert_eq!(client_url("::", 4222), "nats://[::1]:4222");
        assert_eq!(client_url("::1", 4222), "nats://[::1]:4222");
        assert_eq!(client_url("localhost", 4222), "nats://localhost:4222");
    }
}
