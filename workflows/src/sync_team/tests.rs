use std::time::Duration;

use chrono::Utc;
use cloudevents::{EventBuilder, EventBuilderV10};
use serde_json::Value;

use super::*;
use crate::ErrorKind;
use crate::github::{GitHubError, Member, Privacy, RateLimitKind, Role};
use crate::memory::{MemoryGitHub, MemoryJournal, MemoryPublisher, MemoryRecords};
use crate::records::{
    Actor, ClusterOutcome, ClusterStatus, EnvironmentSpec, QuotaProfile, TeamSpec,
};

const BOT: &str = "muster-bot";

struct Fixture {
    records: MemoryRecords,
    github: MemoryGitHub,
    publisher: MemoryPublisher,
    workflow: SyncTeam,
}

impl Fixture {
    async fn new(github: MemoryGitHub) -> Self {
        let records = MemoryRecords::new();
        let publisher = MemoryPublisher::new();
        let workflow = SyncTeam::new(
            Arc::new(records.clone()),
            Arc::new(github.clone()),
            Arc::new(publisher.clone()),
            SyncTeamSettings { group_prefix: "github:".into(), ..SyncTeamSettings::default() },
        );
        let fixture = Fixture { records, github, publisher, workflow };
        let mut dev = EnvironmentSpec::named("dev");
        dev.default_quota.insert("requests.cpu".into(), "4".into());
        dev.default_limits.insert("memory".into(), "1Gi".into());
        fixture.records.create_environment(dev, &Actor::system()).await.unwrap();
        fixture
            .records
            .create_environment(EnvironmentSpec::named("prod"), &Actor::system())
            .await
            .unwrap();
        fixture
    }

    async fn live() -> Self {
        Self::new(MemoryGitHub::new(Some(BOT))).await
    }

    async fn create_team(&self) -> Team {
        self.records.create_team(spec(), &Actor::system()).await.unwrap()
    }

    /// Runs the workflow as run `run_id` on `journal` (share a journal to replay).
    async fn run_on(
        &self,
        run_id: &str,
        journal: &MemoryJournal,
        event: Event,
    ) -> Result<Value, RunError> {
        let mut ctx = RunContext::new(run_id, 1, Box::new(journal.clone()));
        self.workflow.run(&mut ctx, event).await
    }

    async fn run(&self, run_id: &str, event: Event) -> Result<Value, RunError> {
        self.run_on(run_id, &MemoryJournal::new(), event).await
    }

    fn github_team(&self) -> crate::memory::MemoryTeam {
        let teams = self.github.teams();
        assert_eq!(teams.len(), 1, "one GitHub team: {teams:?}");
        teams.into_iter().next().unwrap()
    }

    async fn namespace(&self, environment: &str) -> NamespaceRecord {
        self.records.get_namespace("payments", environment).await.unwrap()
    }

    fn announced_ids(&self) -> Vec<String> {
        self.publisher.events().iter().map(|e| e.id().to_owned()).collect()
    }
}

fn spec() -> TeamSpec {
    TeamSpec {
        slug: "payments".into(),
        name: "Payments".into(),
        description: "Moves money".into(),
        members: vec!["bob".into(), "carol".into()],
        maintainers: vec!["alice".into()],
        parent: None,
        privacy: Default::default(),
        quota_profile: None,
        labels: Default::default(),
    }
}

fn event(ty: &str, id: &str, data: Option<Value>) -> Event {
    let builder = EventBuilderV10::new().id(id).source("/test").ty(ty).subject("payments");
    match data {
        Some(data) => builder.data("application/json", data).build().unwrap(),
        None => builder.build().unwrap(),
    }
}

fn created() -> Event {
    event("muster.team.created", "e-created", None)
}

fn sync(id: &str, data: Value) -> Event {
    event(TEAM_SYNC, id, Some(data))
}

fn logins(members: &[Member]) -> Vec<String> {
    let mut out: Vec<String> = members
        .iter()
        .map(|m| format!("{}:{}", m.login, if m.role == Role::Maintainer { "M" } else { "m" }))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_new_team_gets_its_github_team_members_and_namespaces_announced() {
    let f = Fixture::live().await;
    f.create_team().await;
    let journal = MemoryJournal::new();
    let output = f.run_on("sync_team-1", &journal, created()).await.unwrap();

    assert_eq!(
        journal.starts(),
        ["load", "github-team", "github-members", "namespaces", "announce", "record-sync"]
    );
    let gh = f.github_team();
    assert_eq!((gh.name.as_str(), gh.slug.as_str()), ("Payments", "payments"));
    assert_eq!(gh.description, "Moves money");
    assert_eq!(logins(&gh.members), ["alice:M", "bob:m", "carol:m", "muster-bot:M"]);
    assert_eq!(
        f.github.writes(),
        ["create team payments", "set alice maintainer", "set bob member", "set carol member"]
    );

    let team = f.records.get_team("payments").await.unwrap();
    assert_eq!(team.status.github, Some(GitHubLink { id: gh.id, slug: "payments".into() }));
    assert_eq!(team.resource_version, 1, "the link is status, not a change");
    assert_eq!(team.status.last_sync.as_ref().unwrap().run_id, "sync_team-1");
    assert_eq!(f.records.outbox().len(), 3, "two environments and the team: nothing from the sync");

    let dev = f.namespace("dev").await;
    assert_eq!(dev.name, "payments-dev");
    assert_eq!(dev.state, NamespaceState::Active);
    assert_eq!(dev.spec.quota["requests.cpu"], "4");
    assert_eq!(dev.spec.limits["memory"], "1Gi");
    assert_eq!(
        dev.spec.role_bindings,
        [
            RoleBinding { group: "github:payments".into(), role: "edit".into() },
            RoleBinding { group: "github:payments-maintainers".into(), role: "admin".into() },
        ]
    );
    assert_eq!(dev.spec.labels, f.records.get_team("payments").await.unwrap().spec.labels);
    assert!(f.namespace("prod").await.spec.quota.is_empty());

    assert_eq!(f.announced_ids(), ["sync_team-1-dev", "sync_team-1-prod"]);
    let events = f.publisher.events();
    assert_eq!(events[0].ty(), NAMESPACE_CHANGED);
    assert_eq!(events[0].source().to_string(), SYNC_TEAM_SOURCE);
    assert_eq!(events[0].subject(), Some("dev"));
    let data = crate::event::data_json(&events[0]).unwrap();
    assert_eq!(serde_json::from_value::<NamespaceRecord>(data).unwrap(), dev);

    assert_eq!(output["path"], "sync");
    assert_eq!(output["plan_only"], false);
    assert_eq!(output["github"]["team"]["action"], "created");
    assert_eq!(output["github"]["members"]["added"].as_array().unwrap().len(), 3);
    assert_eq!(output["github"]["members"]["protected"], json!([BOT]), "the acting identity stays");
    assert_eq!(output["namespaces"]["created"], json!(["payments-dev", "payments-prod"]));
    assert_eq!(output["announced"]["ids"], json!(["sync_team-1-dev", "sync_team-1-prod"]));
}

#[tokio::test]
async fn a_rerun_with_nothing_changed_writes_nothing() {
    let f = Fixture::live().await;
    f.create_team().await;
    f.run("sync_team-1", created()).await.unwrap();
    let writes = f.github.writes();
    let (dev, prod) = (f.namespace("dev").await, f.namespace("prod").await);

    let output = f.run("sync_team-2", sync("e-sync", json!({}))).await.unwrap();
    assert_eq!(f.github.writes(), writes, "no GitHub write");
    assert_eq!(f.namespace("dev").await, dev, "no record version bump");
    assert_eq!(f.namespace("prod").await, prod);
    assert_eq!(f.records.get_team("payments").await.unwrap().resource_version, 1);
    assert_eq!(output["github"]["team"]["action"], "unchanged");
    assert_eq!(output["github"]["members"]["added"], json!([]));
    assert_eq!(output["github"]["members"]["removed"], json!([]));
    assert_eq!(output["github"]["members"]["unchanged"], 3);
    assert_eq!(output["namespaces"]["unchanged"], json!(["payments-dev", "payments-prod"]));
    // Announcements are level-triggered too: each run announces every record, with its own ids.
    assert_eq!(output["announced"]["ids"], json!(["sync_team-2-dev", "sync_team-2-prod"]));
}

#[tokio::test]
async fn a_replay_after_a_crash_does_not_repeat_finished_steps_or_announcements() {
    let f = Fixture::live().await;
    f.create_team().await;
    let journal = MemoryJournal::new();

    // The bus fails after the first announcement.
    f.publisher.fail_after(1);
    let err = f.run_on("sync_team-1", &journal, created()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let writes = f.github.writes();
    let dev_version = f.namespace("dev").await.resource_version;

    f.publisher.recover();
    f.run_on("sync_team-1", &journal, created()).await.unwrap();
    assert_eq!(
        journal.starts(),
        [
            "load",
            "github-team",
            "github-members",
            "namespaces",
            "announce",
            "announce",
            "record-sync"
        ],
        "only the unfinished step runs again"
    );
    assert_eq!(f.github.writes(), writes, "GitHub is not called again");
    assert_eq!(f.namespace("dev").await.resource_version, dev_version);
    assert_eq!(f.publisher.calls(), 4, "1 + 1 failed, then 2 with the same ids");
    assert_eq!(f.announced_ids(), ["sync_team-1-dev", "sync_team-1-prod"], "no duplicate");

    // Once finished, replaying the whole run executes nothing.
    let output = f.run_on("sync_team-1", &journal, created()).await.unwrap();
    assert_eq!(journal.starts().len(), 7);
    assert_eq!(output["announced"]["duplicates"], 1, "the journaled output of the retry");
}

#[tokio::test]
async fn a_crash_before_the_last_steps_were_journaled_resumes_after_the_journaled_ones() {
    let f = Fixture::live().await;
    f.create_team().await;
    let journal = MemoryJournal::new();
    f.run_on("sync_team-1", &journal, created()).await.unwrap();
    let writes = f.github.writes();
    let dev = f.namespace("dev").await;
    // The engine died after `announce` had published but before its completion was journaled.
    journal.forget_from(4);

    let output = f.run_on("sync_team-1", &journal, created()).await.unwrap();
    assert_eq!(&journal.starts()[6..], ["announce", "record-sync"]);
    assert_eq!(f.github.writes(), writes, "GitHub steps replayed, not re-run");
    assert_eq!(f.namespace("dev").await, dev);
    assert_eq!(output["announced"]["duplicates"], 2, "same ids, dropped by the bus");
    assert_eq!(f.announced_ids(), ["sync_team-1-dev", "sync_team-1-prod"]);
}

#[tokio::test]
async fn a_team_deleted_during_its_sync_leaves_the_rest_to_the_teardown() {
    let f = Fixture::live().await;
    f.create_team().await;
    let journal = MemoryJournal::new();
    // The first attempt gets as far as GitHub, then fails; the team is deleted before the retry.
    f.publisher.fail_after(0);
    f.run_on("sync_team-1", &journal, created()).await.unwrap_err();
    f.records.delete_namespace("payments", "prod").await.unwrap();
    f.records.delete_team("payments", None, &Actor::system()).await.unwrap();
    journal.forget_from(3);
    f.publisher.recover();
    let output = f.run_on("sync_team-1", &journal, created()).await.unwrap();
    assert_eq!(output["namespaces"]["superseded"], true);
    assert_eq!(output["announced"]["ids"], json!([]));
    assert!(matches!(
        f.records.get_namespace("payments", "prod").await,
        Err(RecordsError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_nested_team_names_its_parents_github_team() {
    let f = Fixture::live().await;
    let mut platform = spec();
    platform.slug = "platform".into();
    platform.name = "Platform Engineering".into();
    f.records.create_team(platform, &Actor::system()).await.unwrap();
    let mut child = spec();
    child.parent = Some("platform".into());
    f.records.create_team(child, &Actor::system()).await.unwrap();
    let journal = MemoryJournal::new();
    // The parent's own sync has not run yet: wait for it rather than create the team unnested.
    let err = f.run_on("sync_team-1", &journal, created()).await.unwrap_err();
    assert!(err.is_retryable() && err.message.contains("\"platform\""), "{err}");
    assert!(f.github.teams().is_empty());

    let parent_sync = EventBuilderV10::new()
        .id("e-platform")
        .source("/test")
        .ty("muster.team.created")
        .subject("platform")
        .build()
        .unwrap();
    f.run("sync_team-p", parent_sync).await.unwrap();
    // The retry reads the parent again in `github-team` and nests the team under it.
    f.run_on("sync_team-1", &journal, created()).await.unwrap();
    let payments = f.github.teams().into_iter().find(|t| t.name == "Payments").unwrap();
    assert_eq!(payments.parent.as_deref(), Some("platform-engineering"));
}

#[tokio::test]
async fn a_rate_limit_throttles_the_run_and_the_retry_converges() {
    let f = Fixture::live().await;
    f.create_team().await;
    let journal = MemoryJournal::new();
    f.github.fail_next(GitHubError::RateLimited {
        limit: RateLimitKind::Secondary,
        after: Duration::from_secs(61),
        message: "slow down".into(),
    });
    let err = f.run_on("sync_team-1", &journal, created()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Throttled { after: Duration::from_secs(61) });
    assert!(f.github.teams().is_empty());
    f.run_on("sync_team-1", &journal, created()).await.unwrap();
    assert_eq!(logins(&f.github_team().members).len(), 4);
}

#[tokio::test]
async fn records_errors_keep_their_kind() {
    let f = Fixture::live().await;
    f.create_team().await;
    f.records.fail_next(RecordsError::transient(std::io::Error::other("disk gone")));
    let err = f.run("sync_team-1", created()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.message.contains("disk gone"), "{err}");
}

#[tokio::test]
async fn plan_only_records_the_plan_and_sends_nothing() {
    let f = Fixture::new(MemoryGitHub::plan_only()).await;
    f.create_team().await;
    let output = f.run("sync_team-1", created()).await.unwrap();
    assert!(f.github.writes().is_empty());
    assert!(f.github.teams().is_empty());
    assert_eq!(output["plan_only"], true);
    assert_eq!(output["github"]["team"]["action"], "planned");
    let plan = &output["github"]["members"]["plan"];
    assert_eq!(
        plan["add"],
        json!([
            {"login": "alice", "role": "maintainer"},
            {"login": "bob", "role": "member"},
            {"login": "carol", "role": "member"},
        ])
    );
    let team = f.records.get_team("payments").await.unwrap();
    assert!(team.status.github.is_none(), "nothing to link");
    // The records side does not depend on GitHub.
    assert_eq!(f.announced_ids(), ["sync_team-1-dev", "sync_team-1-prod"]);
}

#[tokio::test]
async fn an_existing_github_team_is_left_alone_until_an_operator_adopts_it() {
    let f = Fixture::live().await;
    let secret = vec![
        Member::active("zed", Role::Maintainer),
        Member::active("yan", Role::Member),
        Member::active("xu", Role::Member),
    ];
    let id = f.github.insert_team("Payments", secret.clone());
    f.create_team().await;

    let output = f.run("sync_team-1", created()).await.unwrap();
    assert_eq!(output["github"]["team"]["action"], "unmanaged");
    assert_eq!(f.github.writes(), Vec::<String>::new(), "nothing sent to the unmanaged team");
    assert_eq!(f.github_team().members, secret);
    assert_eq!(output["namespaces"]["created"], json!(["payments-dev", "payments-prod"]));
    let status = f.records.get_team("payments").await.unwrap().status;
    assert_eq!(status.github, None, "not linked");
    assert_eq!(status.problems.len(), 1, "{status:?}");
    assert_eq!(status.problems[0].kind, SyncProblemKind::UnmanagedGitHubTeam);
    assert!(status.problems[0].message.contains("--adopt"), "{:?}", status.problems[0]);

    // Adopting replaces all three people: the mass-removal guard still holds.
    let err = f.run("sync_team-2", sync("e-adopt", json!({"adopt": true}))).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("zed, yan, xu"), "{err}");
    assert!(!f.github.writes().iter().any(|w| w.starts_with("remove")), "nothing removed");
    let status = f.records.get_team("payments").await.unwrap().status;
    assert_eq!(status.github.map(|l| l.id), Some(id), "adopted: linked, members not yet synced");

    let output =
        f.run("sync_team-3", sync("e-both", json!({"allow_mass_removal": true}))).await.unwrap();
    assert_eq!(output["github"]["members"]["removed"], json!(["zed", "yan", "xu"]));
    assert_eq!(logins(&f.github_team().members), ["alice:M", "bob:m", "carol:m"]);
    let status = f.records.get_team("payments").await.unwrap().status;
    assert_eq!(status.github.map(|l| l.id), Some(id), "linked to the adopted team");
    assert!(status.problems.is_empty(), "{:?}", status.problems);
}

#[tokio::test]
async fn a_team_created_by_the_run_whose_answer_was_lost_is_its_own() {
    let f = Fixture::live().await;
    f.create_team().await;
    f.github.lose_next_answer();
    let journal = MemoryJournal::new();
    let err = f.run_on("sync_team-1", &journal, created()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(f.github.teams().len(), 1, "GitHub created the team");

    let output = f.run_on("sync_team-1", &journal, created()).await.unwrap();
    assert_eq!(output["github"]["team"]["action"], "adopted");
    assert_eq!(logins(&f.github_team().members), ["alice:M", "bob:m", "carol:m", "muster-bot:M"]);
}

#[tokio::test]
async fn the_mass_removal_guard_names_the_people_and_can_be_overridden() {
    let f = Fixture::live().await;
    f.create_team().await;
    f.run("sync_team-1", created()).await.unwrap();
    let strangers = ["x1", "x2", "x3", "x4"];
    let mut members = f.github_team().members;
    members.extend(strangers.iter().map(|l| Member::active(*l, Role::Member)));
    f.github.set_members(f.github_team().id, members);

    let err = f.run("sync_team-2", created()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("x1, x2, x3, x4"), "{err}");
    assert!(!f.github.writes().iter().any(|w| w.starts_with("remove")), "nothing removed");

    let output = f
        .run("sync_team-3", sync("e-override", json!({"allow_mass_removal": true})))
        .await
        .unwrap();
    assert_eq!(output["github"]["members"]["removed"], json!(strangers));
    assert_eq!(logins(&f.github_team().members), ["alice:M", "bob:m", "carol:m", "muster-bot:M"]);
}

#[tokio::test]
async fn a_login_github_refuses_is_reported_and_the_rest_is_synced() {
    let f = Fixture::live().await;
    f.create_team().await;
    f.github.unknown_logins(&["bob"]);
    let output = f.run("sync_team-1", created()).await.unwrap();
    assert_eq!(logins(&f.github_team().members), ["alice:M", "carol:m", "muster-bot:M"]);
    assert_eq!(output["github"]["members"]["failed"][0]["login"], "bob");
    assert_eq!(output["namespaces"]["created"], json!(["payments-dev", "payments-prod"]));
    let problems = f.records.get_team("payments").await.unwrap().status.problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].kind, SyncProblemKind::LoginRefused);
    assert_eq!(problems[0].login.as_deref(), Some("bob"));

    // Fixed (bob renamed back, say): the next sync adds him and clears the problem.
    f.github.unknown_logins(&[]);
    f.run("sync_team-2", created()).await.unwrap();
    assert_eq!(logins(&f.github_team().members), ["alice:M", "bob:m", "carol:m", "muster-bot:M"]);
    assert!(f.records.get_team("payments").await.unwrap().status.problems.is_empty());
}

#[tokio::test]
async fn expired_invitations_and_outsiders_are_held_back_when_asked() {
    let records = MemoryRecords::new();
    let github = MemoryGitHub::new(Some(BOT));
    let workflow = SyncTeam::new(
        Arc::new(records.clone()),
        Arc::new(github.clone()),
        Arc::new(MemoryPublisher::new()),
        SyncTeamSettings { invite_non_members: false, ..SyncTeamSettings::default() },
    );
    records.create_team(spec(), &Actor::system()).await.unwrap();
    github.outside_org(&["carol"]);
    github.expire_invitations(&["bob"]);
    let mut ctx = RunContext::new("sync_team-1", 1, Box::new(MemoryJournal::new()));
    let output = workflow.run(&mut ctx, created()).await.unwrap();
    let held = &output["github"]["members"]["held"];
    assert_eq!(held[0], json!({"login": "bob", "reason": "invitation_expired"}), "{output}");
    assert_eq!(held[1], json!({"login": "carol", "reason": "not_org_member"}), "{output}");
    assert!(
        !github.writes().iter().any(|w| w.starts_with("set bob") || w.starts_with("set carol")),
        "{:?}",
        github.writes()
    );
    let problems = records.get_team("payments").await.unwrap().status.problems;
    assert_eq!(problems.iter().filter(|p| p.kind == SyncProblemKind::LoginHeld).count(), 2);

    // An operator's reinvite sends the expired one again.
    let mut ctx = RunContext::new("sync_team-2", 1, Box::new(MemoryJournal::new()));
    workflow.run(&mut ctx, sync("e-re", json!({"reinvite": true}))).await.unwrap();
    assert!(github.writes().iter().any(|w| w == "set bob member"), "{:?}", github.writes());
}

#[tokio::test]
async fn pending_invitations_are_in_progress() {
    let f = Fixture::live().await;
    f.github.outside_org(&["carol"]);
    f.create_team().await;
    let output = f.run("sync_team-1", created()).await.unwrap();
    assert_eq!(output["github"]["members"]["invited"], json!(["carol"]));
    let writes = f.github.writes().len();
    let output = f.run("sync_team-2", created()).await.unwrap();
    assert_eq!(f.github.writes().len(), writes, "not invited again");
    assert_eq!(output["github"]["members"]["pending"], json!(["carol"]));
}

#[tokio::test]
async fn a_rename_updates_the_same_github_team() {
    let f = Fixture::live().await;
    f.create_team().await;
    f.run("sync_team-1", created()).await.unwrap();
    let id = f.github_team().id;

    let mut renamed = spec();
    renamed.name = "Payments Platform".into();
    f.records.update_team(renamed, Some(1), &Actor::system()).await.unwrap();
    let output = f.run("sync_team-2", event("muster.team.updated", "e-2", None)).await.unwrap();

    let gh = f.github_team();
    assert_eq!((gh.id, gh.slug.as_str()), (id, "payments-platform"));
    assert_eq!(output["github"]["team"]["action"], "updated");
    assert_eq!(output["github"]["team"]["changed"], json!(["name"]));
    let link = f.records.get_team("payments").await.unwrap().status.github.unwrap();
    assert_eq!(link, GitHubLink { id, slug: "payments-platform".into() });
}

/// Privacy is the team's, not a setting: a secret team is created secret, and a change of the
/// field reaches the same GitHub team.
#[tokio::test]
async fn the_teams_privacy_is_applied_on_create_and_on_change() {
    let f = Fixture::live().await;
    let mut secret = spec();
    secret.privacy = Privacy::Secret;
    f.records.create_team(secret, &Actor::system()).await.unwrap();
    f.run("sync_team-1", created()).await.unwrap();
    assert_eq!(f.github_team().privacy, Privacy::Secret);

    let mut closed = spec();
    closed.privacy = Privacy::Closed;
    f.records.update_team(closed, Some(1), &Actor::system()).await.unwrap();
    let output = f.run("sync_team-2", event("muster.team.updated", "e-2", None)).await.unwrap();
    assert_eq!(f.github_team().privacy, Privacy::Closed);
    assert_eq!(output["github"]["team"]["changed"], json!(["privacy"]));

    let mut secret = spec();
    secret.privacy = Privacy::Secret;
    f.records.update_team(secret, Some(2), &Actor::system()).await.unwrap();
    let id = f.github_team().id;
    let output = f.run("sync_team-3", event("muster.team.updated", "e-3", None)).await.unwrap();
    let gh = f.github_team();
    assert_eq!((gh.id, gh.privacy), (id, Privacy::Secret), "closed → secret on the same team");
    assert_eq!(output["github"]["team"]["action"], "updated");
    assert_eq!(output["github"]["team"]["changed"], json!(["privacy"]));
}

#[tokio::test]
async fn a_removed_environment_leaves_its_namespace_deleting() {
    let f = Fixture::live().await;
    f.create_team().await;
    f.run("sync_team-1", created()).await.unwrap();
    f.records.delete_environment("prod", None, &Actor::system()).await.unwrap();

    let output = f.run("sync_team-2", sync("e-2", json!({}))).await.unwrap();
    let prod = f.namespace("prod").await;
    assert_eq!(prod.state, NamespaceState::Deleting);
    assert_eq!(f.namespace("dev").await.state, NamespaceState::Active);
    assert_eq!(output["namespaces"]["deleting"], json!(["payments-prod"]));
    assert_eq!(output["namespaces"]["updated"], json!(["payments-prod"]));
    let last = f.publisher.events().pop().unwrap();
    assert_eq!(last.id(), "sync_team-2-prod");
    assert_eq!(crate::event::data_json(&last).unwrap()["state"], "deleting");
}

fn report(outcome: ClusterOutcome) -> ClusterStatus {
    ClusterStatus {
        outcome,
        message: None,
        observed_version: None,
        object_version: None,
        reported_at: Utc::now(),
    }
}

#[tokio::test]
async fn teardown_retains_the_github_team_and_purges_once_the_agents_reported() {
    let f = Fixture::live().await;
    let mut dev = EnvironmentSpec::named("dev");
    dev.clusters = vec!["dev-1".into(), "dev-2".into()];
    f.records.update_environment(dev, None, &Actor::system()).await.unwrap();
    f.create_team().await;
    f.run("sync_team-1", created()).await.unwrap();
    f.records.delete_team("payments", None, &Actor::system()).await.unwrap();

    let deleted = || event("muster.team.deleted", "e-deleted", None);
    let journal = MemoryJournal::new();
    let output = f.run_on("sync_team-2", &journal, deleted()).await.unwrap();
    assert_eq!(
        journal.starts(),
        ["load", "github-team", "github-members", "namespaces", "announce", "purge", "record-sync"]
    );
    assert_eq!(output["path"], "teardown");
    assert_eq!(output["github"]["team"]["action"], "retained");
    assert_eq!(f.github.teams().len(), 1, "deletion is not allowed");
    assert!(!f.github.writes().iter().any(|w| w.starts_with("delete")));
    assert_eq!(output["namespaces"]["deleting"], json!(["payments-dev", "payments-prod"]));
    assert_eq!(output["purged"], false);
    assert_eq!(output["waiting"], json!({"payments-dev": ["dev-1", "dev-2"]}));
    assert_eq!(f.namespace("dev").await.state, NamespaceState::Deleting);
    let announced: Vec<String> = f.announced_ids().into_iter().skip(2).collect();
    assert_eq!(announced, ["sync_team-2-dev", "sync_team-2-prod"]);

    // One cluster reported: still waiting for the other.
    f.records
        .set_cluster_status("payments", "dev", "dev-1", report(ClusterOutcome::Deleted))
        .await
        .unwrap();
    let output = f.run("sync_team-3", deleted()).await.unwrap();
    assert_eq!(output["waiting"], json!({"payments-dev": ["dev-2"]}));
    f.records
        .set_cluster_status("payments", "dev", "dev-2", report(ClusterOutcome::Failed))
        .await
        .unwrap();
    let output = f.run("sync_team-4", deleted()).await.unwrap();
    assert_eq!(output["purged"], false, "failed is not done");

    f.records
        .set_cluster_status("payments", "dev", "dev-2", report(ClusterOutcome::Retained))
        .await
        .unwrap();
    let journal = MemoryJournal::new();
    let output = f.run_on("sync_team-5", &journal, deleted()).await.unwrap();
    assert_eq!(output["purged"], true);
    assert_eq!(journal.starts().last().map(String::as_str), Some("purge"), "nothing after a purge");
    assert!(matches!(f.records.get_team("payments").await, Err(RecordsError::NotFound { .. })));

    let output = f.run("sync_team-6", deleted()).await.unwrap();
    assert_eq!(output, json!({"team": "payments", "absent": true}));
}

#[tokio::test]
async fn teardown_deletes_the_github_team_when_allowed() {
    let f = Fixture::new(MemoryGitHub::new(Some(BOT)).allowing_deletion()).await;
    f.create_team().await;
    f.run("sync_team-1", created()).await.unwrap();
    f.records.delete_team("payments", None, &Actor::system()).await.unwrap();

    let output = f.run("sync_team-2", event("muster.team.deleted", "e-d", None)).await.unwrap();
    assert_eq!(output["github"]["team"]["action"], "deleted");
    assert!(f.github.teams().is_empty());
    assert_eq!(output["purged"], true, "no environment has clusters");
    assert_eq!(f.announced_ids().len(), 4, "the deleting records were announced first");
    assert!(matches!(f.records.get_team("payments").await, Err(RecordsError::NotFound { .. })));
}

#[tokio::test]
async fn teardown_waits_while_muster_manages_child_teams_of_the_github_team() {
    let f = Fixture::new(MemoryGitHub::new(Some(BOT)).allowing_deletion()).await;
    f.create_team().await;
    f.run("sync_team-1", created()).await.unwrap();
    let child = TeamSpec {
        slug: "payments-eu".into(),
        name: "Payments EU".into(),
        parent: Some("payments".into()),
        ..spec()
    };
    f.records.create_team(child, &Actor::system()).await.unwrap();
    let for_child = |ty: &str, id: &str| {
        EventBuilderV10::new().id(id).source("/test").ty(ty).subject("payments-eu").build().unwrap()
    };
    f.run("sync_team-2", for_child("muster.team.created", "e-c")).await.unwrap();
    assert_eq!(f.github.teams().len(), 2);

    f.records.delete_team("payments", None, &Actor::system()).await.unwrap();
    let output = f.run("sync_team-3", event("muster.team.deleted", "e-d", None)).await.unwrap();
    assert_eq!(output["github"]["team"]["action"], "blocked");
    assert_eq!(output["github"]["team"]["children"], json!(["payments-eu"]));
    assert_eq!(output["purged"], false);
    assert_eq!(f.github.teams().len(), 2, "neither team deleted");
    let problems = f.records.get_team("payments").await.unwrap().status.problems;
    assert_eq!(problems[0].kind, SyncProblemKind::ManagedChildTeams, "{problems:?}");

    // Once the child is deleted too, the parent goes.
    f.records.delete_team("payments-eu", None, &Actor::system()).await.unwrap();
    f.run("sync_team-4", for_child("muster.team.deleted", "e-cd")).await.unwrap();
    let output = f.run("sync_team-5", event("muster.team.deleted", "e-d2", None)).await.unwrap();
    assert_eq!(output["github"]["team"]["action"], "deleted");
    assert_eq!(output["purged"], true);
    assert!(f.github.teams().is_empty());
}

#[tokio::test]
async fn teardown_of_a_team_never_linked_deletes_nothing() {
    let f = Fixture::new(MemoryGitHub::new(Some(BOT)).allowing_deletion()).await;
    f.github.insert_team("Payments", Vec::new());
    f.create_team().await;
    f.records.delete_team("payments", None, &Actor::system()).await.unwrap();
    let output = f.run("sync_team-1", event("muster.team.deleted", "e-d", None)).await.unwrap();
    assert_eq!(output["github"]["team"]["action"], "not_linked");
    assert_eq!(f.github.teams().len(), 1, "a team Muster never linked is not deleted");
    assert_eq!(output["purged"], true);
}

#[tokio::test]
async fn a_scheduled_sync_older_than_the_last_sync_is_coalesced() {
    let f = Fixture::live().await;
    f.create_team().await;
    let before = Utc::now() - chrono::Duration::seconds(10);
    f.run("sync_team-1", created()).await.unwrap();
    let writes = f.github.writes();
    let calls = f.publisher.calls();

    let old_tick = sync("resync-old", json!({"schedule": "resync", "tick": before}));
    let journal = MemoryJournal::new();
    let output = f.run_on("sync_team-2", &journal, old_tick).await.unwrap();
    assert_eq!(output["coalesced"], true);
    assert_eq!(output["covered_by"], "sync_team-1");
    assert_eq!(journal.starts(), ["load"], "nothing but the read");
    assert_eq!(f.github.writes(), writes);
    assert_eq!(f.publisher.calls(), calls);

    // A tick after the last sync started is not covered by it.
    let new_tick = sync("resync-new", json!({"schedule": "resync", "tick": Utc::now()}));
    let output = f.run("sync_team-3", new_tick).await.unwrap();
    assert!(output.get("coalesced").is_none(), "{output}");
    // Syncs without a tick (API, team events) are never coalesced.
    let output = f.run("sync_team-4", sync("manual", json!({}))).await.unwrap();
    assert!(output.get("coalesced").is_none(), "{output}");
}

#[tokio::test]
async fn absent_teams_and_bad_events() {
    let f = Fixture::live().await;
    let output = f.run("sync_team-1", created()).await.unwrap();
    assert_eq!(output, json!({"team": "payments", "absent": true}));

    let no_subject =
        EventBuilderV10::new().id("x").source("/t").ty("muster.team.created").build().unwrap();
    let err = f.run("sync_team-2", no_subject).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);

    let bad = sync("bad", json!({"allow_mass_removal": "yes"}));
    let err = f.run("sync_team-3", bad).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("not a sync request"), "{err}");
}

#[test]
fn name_triggers_and_key() {
    let workflow = SyncTeam::new(
        Arc::new(MemoryRecords::new()),
        Arc::new(MemoryGitHub::plan_only()),
        Arc::new(MemoryPublisher::new()),
        SyncTeamSettings::default(),
    );
    assert_eq!(workflow.name(), "sync_team");
    assert_eq!(workflow.triggers(), ["muster.team.*"]);
    assert_eq!(workflow.key(&created()), "payments");
}

#[tokio::test]
async fn records_carry_the_profile_labels_and_the_environment_flags() {
    let f = Fixture::live().await;
    let mut dev = f.records.get_environment("dev").await.unwrap().spec;
    dev.clusters = vec!["dev-1".into(), "dev-2".into()];
    dev.allow_namespace_deletion = true;
    dev.network_policy = true;
    dev.quota_profiles.insert(
        "large".into(),
        QuotaProfile {
            quota: [("requests.cpu".to_owned(), "16".to_owned())].into(),
            limits: Default::default(),
        },
    );
    f.records.update_environment(dev, None, &Actor::system()).await.unwrap();
    let mut team = spec();
    team.quota_profile = Some("large".into());
    team.labels.insert("cost-center".into(), "42".into());
    f.records.create_team(team, &Actor::system()).await.unwrap();

    let output = f.run("sync_team-1", created()).await.unwrap();
    let dev = f.namespace("dev").await;
    assert_eq!(dev.spec.quota["requests.cpu"], "16", "the profile overrides the default");
    assert_eq!(dev.spec.limits["memory"], "1Gi", "defaults the profile leaves alone stay");
    assert_eq!(dev.spec.quota_profile.as_deref(), Some("large"));
    assert_eq!(dev.spec.labels["cost-center"], "42");
    assert_eq!(dev.spec.target_clusters, ["dev-1", "dev-2"]);
    assert!(dev.spec.allow_deletion && dev.spec.network_policy);
    assert_eq!(dev.never_reported(), ["dev-1", "dev-2"]);
    let prod = f.namespace("prod").await;
    assert_eq!(prod.spec.quota_profile, None, "prod has no profile `large`");
    assert!(!prod.spec.allow_deletion);
    assert_eq!(output["namespaces"]["unknown_profile"], json!(["prod"]));

    // Switching the team to the defaults updates the record in place.
    let mut team = f.records.get_team("payments").await.unwrap().spec;
    team.quota_profile = None;
    f.records.update_team(team, None, &Actor::system()).await.unwrap();
    f.run("sync_team-2", event("muster.team.updated", "u-1", None)).await.unwrap();
    let after = f.namespace("dev").await;
    assert_eq!(after.spec.quota["requests.cpu"], "4");
    assert_eq!(after.resource_version, dev.resource_version + 1);
}
