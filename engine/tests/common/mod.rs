//! What the engine's integration tests share: a real nats-server (>= 2.10, found via
//! `NATS_SERVER_BIN`; `scripts/test` bootstraps one) in a temp dir, and a configuration that
//! points at it with its data dir beside.

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
