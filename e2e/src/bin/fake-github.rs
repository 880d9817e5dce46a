//! `fake-github`: the fake GitHub REST server as a dev aid.
//!
//! `cargo run -p e2e --bin fake-github -- --port 9000 --org acme --member alice --member bob`
//! prints the URL to configure as `[github] api-url` (any token is accepted and acts as
//! `--login`). Logins not given with `--member` are invited when added to a team and stay
//! pending. `GET /_fake/log` shows every request.

use std::net::SocketAddr;

use clap::Parser;
use e2e::fake_github::FakeGitHub;

#[derive(Parser)]
#[command(about = "A stateful fake of GitHub's REST API for teams (dev aid)")]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// The organization it serves.
    #[arg(long, default_value = "acme")]
    org: String,
    /// Organization members (repeatable); others are invited.
    #[arg(long = "member")]
    members: Vec<String>,
    /// The login every token acts as.
    #[arg(long, default_value = "muster-bot")]
    login: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fake =
        FakeGitHub::start_on(SocketAddr::from(([127, 0, 0, 1], args.port)), &args.org).await?;
    fake.set_token_login(&args.login);
    fake.add_org_members(args.members.iter().map(String::as_str));
    println!("fake GitHub for org {:?} at {}", args.org, fake.url());
    println!("  engine config: [github] api-url = \"{}\", org = \"{}\"", fake.url(), args.org);
    println!("  and any token: MUSTER_GITHUB_TOKEN=dev");
    println!("  request log:   curl {}/_fake/log", fake.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
