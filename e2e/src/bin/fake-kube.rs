//! `fake-kube`: the fake Kubernetes API server as a dev aid.
//!
//! `cargo run -p e2e --bin fake-kube -- --port 8001 --kubeconfig /tmp/fake-kube.json` prints
//! the URL and writes a kubeconfig (JSON, valid YAML) for `KUBECONFIG=/tmp/fake-kube.json`.
//! It serves namespaces, resource quotas, limit ranges, role bindings and network policies
//! with server-side apply; see `e2e::fake_kube` for what it does and does not do.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use e2e::fake_kube::FakeKube;

#[derive(Parser)]
#[command(about = "A stateful fake of the Kubernetes API server (dev aid)")]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8001)]
    port: u16,
    /// Where to write a kubeconfig pointing at the fake.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// How long a deleted namespace stays Terminating, in milliseconds.
    #[arg(long, default_value_t = 200)]
    termination_delay_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fake = FakeKube::start_on(SocketAddr::from(([127, 0, 0, 1], args.port))).await?;
    fake.set_termination_delay(Duration::from_millis(args.termination_delay_ms));
    println!("fake Kubernetes API at {}", fake.url());
    if let Some(path) = &args.kubeconfig {
        fake.write_kubeconfig(path)?;
        println!("  kubeconfig: KUBECONFIG={}", path.display());
    }
    println!("  try: curl {}/api/v1/namespaces", fake.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
