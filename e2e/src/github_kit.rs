//! What the GitHub connector tests share: the fake GitHub with a few organization members, an
//! adapter configured for it, and `sync`, which drives the port as `sync_team` does.

use std::time::Duration;

use connectors::github::{GitHubConfig, OctocrabGitHub, Secret};
use workflows::RunError;
use workflows::github::{
    Adoption, AppliedPlan, DesiredTeam, GitHub, GitHubTeam, MemberPlan, Privacy, TeamRef,
    apply_plan, plan_members,
};

use crate::fake_github::FakeGitHub;

pub const ORG: &str = "acme";
pub const FAST: Duration = Duration::from_millis(20);

pub async fn fake() -> FakeGitHub {
    let fake = FakeGitHub::start(ORG).await.expect("fake GitHub starts");
    fake.add_org_members(["alice", "bob", "carol", "dave", "frank"]);
    fake
}

pub fn config(fake: &FakeGitHub, write_interval: Duration) -> GitHubConfig {
    GitHubConfig {
        api_url: fake.url(),
        org: ORG.into(),
        token: Some(Secret::new("ghp_test")),
        write_interval,
        request_timeout: Duration::from_secs(10),
        ..GitHubConfig::default()
    }
}

pub fn adapter(config: &GitHubConfig) -> OctocrabGitHub {
    OctocrabGitHub::new(config).expect("valid config")
}

/// The team as `sync_team` asks for it: an unlinked team is taken over only when created since
/// the run started (its own create whose answer was lost).
pub fn team(name: &str, known: Option<TeamRef>) -> DesiredTeam {
    DesiredTeam {
        name: name.into(),
        description: format!("{name} (managed by Muster)"),
        privacy: Privacy::Closed,
        parent: None,
        known,
        adopt: Adoption::CreatedSince(chrono::Utc::now() - chrono::Duration::seconds(10)),
    }
}

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

pub struct Synced {
    pub team: GitHubTeam,
    pub plan: MemberPlan,
    pub applied: AppliedPlan,
}

/// What `sync_team` does for GitHub: ensure the team, read, plan with the guards, apply.
pub async fn sync(
    github: &dyn GitHub,
    config: &GitHubConfig,
    desired: &DesiredTeam,
    maintainers: &[&str],
    members: &[&str],
) -> Result<Synced, RunError> {
    let team = github.ensure_team(desired).await?;
    let acting = github.acting_login().await?;
    let observed = if team.created && github.is_plan_only() {
        Vec::new()
    } else {
        github.team_members(&team.team_ref()).await?
    };
    let plan =
        plan_members(&strings(members), &strings(maintainers), &observed, &config.guards(acting))?;
    let applied = if github.is_plan_only() {
        AppliedPlan::default()
    } else {
        apply_plan(github, &team.team_ref(), &plan).await?
    };
    Ok(Synced { team, plan, applied })
}

pub fn roles(fake: &FakeGitHub, slug: &str) -> Vec<(String, String)> {
    fake.team(slug).expect("team exists").members.into_iter().collect()
}

pub fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}
