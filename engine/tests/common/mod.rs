//! What the engine's integration tests share: a real nats-server (>= 2.10, found via
//! `NATS_SERVER_BIN`; `scripts/test` bootstraps one) in a temp dir, and a configuration that
//! points at it with its data dir beside.

use std::time::Duration;

use engine::config::{Config, NatsConfig};
use engine::natsd::{self, Natsd, NatsdConfig};
use tempfile::TempDir;

/// A running nats-server, its temp dir, and the engine configuration for both.
pub struct Server {
    pub natsd: Natsd,
    pub config: Config,
    /// Kept so the directory lives as long as the test.
    pub _dir: TempDir,
}

/// Starts nats-server with its store in a new temp dir; `config` has the server's URL and the
/// data dir `<temp>/data`, every other key at its default.
pub async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let bin = natsd::locate().unwrap_or_else(|err| panic!("{err}"));
    let natsd = Natsd::start(&bin, NatsdConfig::new(dir.path().join("nats"))).await.unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        nats: NatsConfig { url: Some(natsd.url()), ..NatsConfig::default() },
        ..Config::default()
    };
    Server { natsd, config, _dir: dir }
}

/// Runs the `engine` binary with `config`'s NATS URL and data dir (and no configuration file);
/// at most 60 s.
#[allow(dead_code)] // not every test binary runs the CLI
pub async fn cli(config: &Config, args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(args)
        .env("MUSTER_NATS_URL", config.nats.url.as_deref().unwrap())
        .env("MUSTER_DATA_DIR", &config.data_dir)
        .env_remove("MUSTER_CONFIG")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run).await.expect("the CLI answers").unwrap()
}
