//! The GitHub connector against the fake GitHub over real HTTP with the real octocrab client:
//! team creation, quiet re-runs on 304s, member diffs, pending invitations, the guards,
//! plan-only mode, error kinds, rate limits, write spacing, pagination and renames.

use std::time::Duration;

use connectors::github::{GitHubConfig, GitHubMode, OctocrabGitHub};
use e2e::fake_github::{Budget, FakeGitHub, Fault};
use e2e::github_kit::{FAST, adapter, config, fake, pairs, roles, sync, team};
use workflows::RunError;
use workflows::github::{
    Adoption, DesiredTeam, GitHub, GitHubError, MembershipState, RateLimitKind, Role, TeamField,
    TeamRef,
};

#[tokio::test]
async fn creates_the_team_then_a_rerun_sends_nothing_and_reads_304s() {
    let fake = fake().await;
    let config = config(&fake, FAST);
    let github = adapter(&config);
    let desired = team("Platform Team", None);

    let first = sync(&github, &config, &desired, &["alice"], &["bob", "carol"]).await.unwrap();
    assert!(first.team.created);
    assert_eq!(first.team.slug, "platform-team");
    let view = fake.team("platform-team").unwrap();
    assert_eq!(view.id, first.team.id);
    assert_eq!(view.description, "Platform Team (managed by Muster)");
    assert_eq!(view.privacy, "closed");
    // The token's user became maintainer by creating the team and is never removed.
    assert_eq!(
        roles(&fake, "platform-team"),
        pairs(&[
            ("alice", "maintainer"),
            ("bob", "member"),
            ("carol", "member"),
            ("muster-bot", "maintainer")
        ])
    );
    assert_eq!(first.plan.protected, ["muster-bot"]);
    let writes = fake.mutations();
    assert_eq!(writes.len(), 4, "POST team + 3 PUT memberships: {writes:#?}");
    for pair in writes.windows(2) {
        assert!(pair[1].instant - pair[0].instant >= FAST, "writes spaced by write-interval");
    }

    // Re-runs: nothing to change, so nothing is sent. The second run re-reads what the first
    // changed (and reads the team, which the first run created rather than read); from then on
    // every read is conditional and answered 304.
    let known = Some(first.team.team_ref());
    for run in [2, 3] {
        fake.clear_log();
        let again = sync(
            &github,
            &config,
            &team("Platform Team", known.clone()),
            &["alice"],
            &["bob", "carol"],
        )
        .await
        .unwrap();
        assert!(!again.team.created && again.team.changed.is_empty());
        assert!(again.plan.is_empty(), "{:?}", again.plan);
        let log = fake.requests();
        assert!(fake.mutations().is_empty(), "run {run}: {log:#?}");
        assert_eq!(
            log.len(),
            6,
            "team + owners + child teams + maintainers + members + invitations: {log:#?}"
        );
        let by_id = format!("/organizations/{}/team/{}", fake.org_id(), first.team.id);
        for request in &log {
            assert_eq!(request.method, "GET");
            if run == 3 {
                assert_eq!(request.status, 304, "run {run}: {request:?}");
                assert!(request.conditional);
            } else if request.path != by_id {
                assert!(request.conditional, "run {run}: {request:?}");
            }
        }
    }
}

#[tokio::test]
async fn a_member_update_sends_only_the_difference() {
    let fake = fake().await;
    let config = config(&fake, FAST);
    let github = adapter(&config);
    let first =
        sync(&github, &config, &team("Web", None), &["alice"], &["bob", "carol"]).await.unwrap();
    fake.clear_log();

    let desired = team("Web", Some(first.team.team_ref()));
    let second = sync(&github, &config, &desired, &["alice", "bob"], &["dave"]).await.unwrap();
    assert_eq!(second.applied.removed, ["carol"]);
    let mut writes: Vec<String> =
        fake.mutations().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    writes.sort();
    let team = format!("/organizations/{}/team/{}", fake.org_id(), first.team.id);
    assert_eq!(
        writes,
        [
            format!("DELETE {team}/memberships/carol"),
            format!("PUT {team}/memberships/bob"),
            format!("PUT {team}/memberships/dave"),
        ]
    );
    assert_eq!(
        roles(&fake, "web"),
        pairs(&[
            ("alice", "maintainer"),
            ("bob", "maintainer"),
            ("dave", "member"),
            ("muster-bot", "maintainer")
        ])
    );
}

#[tokio::test]
async fn a_pending_invitation_is_not_sent_again() {
    let fake = fake().await;
    let config = config(&fake, FAST);
    let github = adapter(&config);
    // erin is not in the organization: GitHub invites her.
    let first = sync(&github, &config, &team("Data", None), &["alice"], &["erin"]).await.unwrap();
    assert_eq!(first.applied.invited, ["erin"]);
    let view = fake.team("data").unwrap();
    assert_eq!(view.pending.get("erin").map(String::as_str), Some("member"));
    assert!(!view.members.contains_key("erin"));

    fake.clear_log();
    let desired = team("Data", Some(first.team.team_ref()));
    let second = sync(&github, &config, &desired, &["alice"], &["erin"]).await.unwrap();
    assert_eq!(second.plan.pending_untouched, ["erin"]);
    assert!(fake.mutations().is_empty(), "{:#?}", fake.mutations());
    assert!(fake.team("data").unwrap().pending.contains_key("erin"), "not removed as a stranger");
}

#[tokio::test]
async fn the_mass_removal_guard_trips_and_nothing_is_removed() {
    let fake = fake().await;
    let config = config(&fake, FAST);
    let github = adapter(&config);
    fake.create_team("Ops");
    fake.put_member("ops", "alice", "maintainer", false);
    for login in ["bob", "carol", "dave", "frank", "gina", "hank", "ivan"] {
        fake.put_member("ops", login, "member", false);
    }
    let before = roles(&fake, "ops");

    let err = match sync(&github, &config, &team("Ops", None), &["alice"], &["bob", "carol"]).await
    {
        Ok(s) => panic!("the guard did not trip: {:?}", s.plan),
        Err(e) => e,
    };
    assert!(!err.is_retryable(), "{err}");
    assert!(err.message.contains("refusing to remove 5 of 8"), "{}", err.message);
    for login in ["dave", "frank", "gina", "hank", "ivan"] {
        assert!(err.message.contains(login), "{}", err.message);
    }
    // Only the team's description was updated; no membership was touched.
    let writes = fake.mutations();
    assert!(writes.iter().all(|r| !r.path.contains("/memberships/")), "{writes:#?}");
    assert_eq!(roles(&fake, "ops"), before);
}

#[tokio::test]
async fn plan_only_mode_sends_nothing() {
    let fake = fake().await;
    let config = GitHubConfig { token: None, ..config(&fake, FAST) };
    let github = adapter(&config);
    assert!(github.is_plan_only());
    let synced = sync(&github, &config, &team("Infra", None), &["alice"], &["bob"]).await.unwrap();
    assert!(synced.team.created);
    assert_eq!(synced.team.slug, "infra");
    assert_eq!(synced.plan.add.len(), 2, "the plan shows the whole desired state");
    assert!(fake.requests().is_empty(), "{:#?}", fake.requests());
    assert!(fake.teams().is_empty());
}

/// `mode = "plan"` with a token: GitHub is read, so the plan is what a live sync would send
/// (removals included), and nothing is sent.
#[tokio::test]
async fn plan_mode_reads_github_and_sends_nothing() {
    let fake = fake().await;
    let linked = fake.create_team("Infra");
    fake.put_member("infra", "alice", "maintainer", false);
    fake.put_member("infra", "carol", "member", false);
    fake.put_member("infra", "frank", "member", false);
    let config = GitHubConfig { mode: GitHubMode::Plan, ..config(&fake, FAST) };
    let github = adapter(&config);
    assert!(github.is_plan_only());
    let known = Some(TeamRef { id: Some(linked), slug: "infra".into() });
    let synced =
        sync(&github, &config, &team("Infra", known), &["alice"], &["bob", "carol"]).await.unwrap();
    assert_eq!((synced.team.id, synced.team.created), (linked, false));
    assert_eq!(synced.team.changed, [TeamField::Description], "read, compared, not sent");
    assert_eq!(synced.plan.remove, ["frank"], "{:?}", synced.plan);
    assert_eq!(synced.plan.add.len(), 1, "{:?}", synced.plan);
    assert!(fake.requests().iter().any(|r| r.path.ends_with("/members")), "GitHub was read");
    assert!(fake.mutations().is_empty(), "{:#?}", fake.mutations());
    assert_eq!(
        github.set_membership(&synced.team.team_ref(), "bob", Role::Member).await,
        Ok(MembershipState::Active)
    );
    assert!(github.remove_membership(&synced.team.team_ref(), "frank").await.unwrap());
    assert!(fake.mutations().is_empty(), "{:#?}", fake.mutations());

    let without_credentials = GitHubConfig { token: None, ..config };
    let err = OctocrabGitHub::new(&without_credentials).err().expect("refused");
    assert_eq!(err.key, "mode", "{err}");
}

#[tokio::test]
async fn server_errors_are_retryable_without_a_delay() {
    let fake = fake().await;
    let github = adapter(&config(&fake, FAST));
    for status in [500, 502] {
        fake.inject(Fault::status(status));
        let err = github.ensure_team(&team("Flaky", None)).await.unwrap_err();
        assert!(matches!(err, GitHubError::Unavailable { status: s, .. } if s == status), "{err}");
        assert!(err.is_retryable());
        assert_eq!(err.retry_after(), None);
    }
    // The next attempt succeeds.
    assert!(github.ensure_team(&team("Flaky", None)).await.unwrap().created);
}

#[tokio::test]
async fn too_many_requests_is_retried_after_retry_after_and_nothing_is_sent_meanwhile() {
    let fake = fake().await;
    let github = adapter(&config(&fake, FAST));
    fake.inject(Fault::retry_after(429, 7));
    let err = github.ensure_team(&team("Busy", None)).await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)), "{err}");
    let run: RunError = err.into();
    assert_eq!(run.kind, workflows::ErrorKind::Throttled { after: Duration::from_secs(7) });

    let sent = fake.requests().len();
    let err =
        github.team_members(&TeamRef { id: Some(999), slug: "busy".into() }).await.unwrap_err();
    let after = err.retry_after().expect("still limited");
    assert!(after <= Duration::from_secs(7) && after >= Duration::from_secs(6), "{after:?}");
    assert_eq!(fake.requests().len(), sent, "nothing sent while rate limited");
}

#[tokio::test]
async fn a_secondary_limit_without_headers_waits_at_least_a_minute() {
    let fake = fake().await;
    let github = adapter(&config(&fake, FAST));
    fake.inject(Fault::secondary_limit());
    let err = github.ensure_team(&team("Busy", None)).await.unwrap_err();
    assert!(
        matches!(err, GitHubError::RateLimited { limit: RateLimitKind::Secondary, .. }),
        "{err}"
    );
    assert!(err.retry_after().unwrap() >= Duration::from_secs(60), "{err}");
    assert_eq!(fake.requests().last().unwrap().status, 403);
}

#[tokio::test]
async fn an_exhausted_primary_quota_waits_until_reset() {
    let fake = fake().await;
    let github = adapter(&config(&fake, FAST));
    fake.set_budget(Budget::new(5000, 0, Duration::from_secs(90)));
    let err = github.ensure_team(&team("Quota", None)).await.unwrap_err();
    assert!(matches!(err, GitHubError::RateLimited { limit: RateLimitKind::Primary, .. }), "{err}");
    let after = err.retry_after().unwrap();
    assert!(after >= Duration::from_secs(88) && after <= Duration::from_secs(90), "{after:?}");
}

#[tokio::test]
async fn the_last_request_of_the_quota_blocks_the_next_one_without_sending_it() {
    let fake = fake().await;
    let github = adapter(&config(&fake, FAST));
    fake.set_budget(Budget::new(5000, 1, Duration::from_secs(120)));
    github.acting_login().await.unwrap();
    let sent = fake.requests().len();
    let err = github.ensure_team(&team("Quota", None)).await.unwrap_err();
    assert!(matches!(err, GitHubError::RateLimited { limit: RateLimitKind::Primary, .. }), "{err}");
    assert_eq!(fake.requests().len(), sent);
}

#[tokio::test]
async fn mutating_requests_are_a_second_apart_by_default() {
    let fake = fake().await;
    let config = config(&fake, connectors::github::DEFAULT_WRITE_INTERVAL);
    assert_eq!(config.write_interval, Duration::from_secs(1));
    let github = adapter(&config);
    fake.create_team("Slow");
    let synced = sync(&github, &config, &team("Slow", None), &["alice"], &["bob"]).await.unwrap();
    assert!(!synced.team.created);
    let writes = fake.mutations();
    // PATCH (description), PUT alice, PUT bob.
    assert_eq!(writes.len(), 3, "{writes:#?}");
    for pair in writes.windows(2) {
        let gap = pair[1].instant - pair[0].instant;
        assert!(gap >= Duration::from_secs(1), "{gap:?} between {:?} and {:?}", pair[0], pair[1]);
    }
}

#[tokio::test]
async fn every_page_of_a_large_team_is_read() {
    let fake = fake().await;
    let config = config(&fake, FAST);
    let github = adapter(&config);
    fake.create_team("Everyone");
    let logins: Vec<String> = (0..250).map(|i| format!("user{i:03}")).collect();
    fake.add_org_members(logins.iter().map(String::as_str));
    fake.put_member("everyone", "muster-bot", "maintainer", false);
    fake.put_member("everyone", &logins[0], "maintainer", false);
    for login in &logins[1..] {
        fake.put_member("everyone", login, "member", false);
    }
    let members: Vec<&str> = logins[1..].iter().map(String::as_str).collect();

    let observed = github
        .team_members(&TeamRef { id: fake.team("everyone").map(|t| t.id), slug: "everyone".into() })
        .await
        .unwrap();
    assert_eq!(observed.len(), 251);
    let synced =
        sync(&github, &config, &team("Everyone", None), &[&logins[0]], &members).await.unwrap();
    assert!(synced.plan.add.is_empty() && synced.plan.remove.is_empty(), "{:?}", synced.plan);
    assert_eq!(synced.plan.unchanged, 250);
    let pages: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/members") && r.status == 200)
        .filter_map(|r| r.query.clone())
        .filter(|q| q.contains("role=member"))
        .collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert!(pages.iter().all(|q| q.contains("per_page=100")), "{pages:?}");
}

#[tokio::test]
async fn a_rename_updates_the_same_team() {
    let fake = fake().await;
    let github = adapter(&config(&fake, FAST));
    let created = github.ensure_team(&team("Platform", None)).await.unwrap();

    let renamed =
        github.ensure_team(&team("Platform Engineering", Some(created.team_ref()))).await.unwrap();
    assert_eq!(renamed.id, created.id);
    assert_eq!(renamed.slug, "platform-engineering");
    assert_eq!(renamed.changed, [TeamField::Name, TeamField::Description]);
    assert_eq!(fake.teams().len(), 1);
    assert_eq!(fake.team("platform-engineering").unwrap().id, created.id);

    // Renamed again on GitHub by someone else: the stored id still finds it.
    let stale = TeamRef { id: Some(created.id), slug: "platform".into() };
    let found = github.ensure_team(&team("Platform Engineering", Some(stale))).await.unwrap();
    assert_eq!((found.id, found.created), (created.id, false));
    assert_eq!(fake.teams().len(), 1);
}

#[tokio::test]
async fn an_existing_team_is_adopted_only_when_asked_never_duplicated() {
    let fake = fake().await;
    let github = adapter(&config(&fake, FAST));
    let id = fake.create_team("Security");
    fake.put_member("security", "alice", "maintainer", false);
    // Made by hand before the run started: left alone, not renamed, privacy untouched.
    let started = chrono::Utc::now() + chrono::Duration::seconds(1);
    let desired = DesiredTeam { adopt: Adoption::CreatedSince(started), ..team("Security", None) };
    let err = github.ensure_team(&DesiredTeam { adopt: Adoption::Never, ..desired.clone() }).await;
    assert_eq!(err, Err(GitHubError::Unmanaged { id, slug: "security".into() }));
    let err = github.ensure_team(&desired).await.unwrap_err();
    assert!(matches!(err, GitHubError::Unmanaged { .. }), "created before the run: {err}");
    assert!(fake.mutations().is_empty(), "{:?}", fake.mutations());

    let planned = github.plan_team(&desired).await.unwrap();
    assert_eq!((planned.id, planned.adopted, planned.created), (id, true, false));
    assert!(fake.mutations().is_empty(), "a plan sends nothing");

    let adopted =
        github.ensure_team(&DesiredTeam { adopt: Adoption::Allowed, ..desired }).await.unwrap();
    assert_eq!((adopted.id, adopted.created, adopted.adopted), (id, false, true));
    assert!(fake.mutations().iter().all(|r| r.method != "POST"));
}

#[tokio::test]
async fn a_missing_permission_is_permanent_and_named() {
    let fake = fake().await;
    let github = adapter(&config(&fake, FAST));
    let team_ref = github.ensure_team(&team("Locked", None)).await.unwrap().team_ref();
    fake.inject(Fault::forbidden("members=write").on_mutation());
    let err = github
        .set_membership(&team_ref, "alice", workflows::github::Role::Member)
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("members=write"), "{err}");
}

#[tokio::test]
async fn gone_is_not_an_error_and_deletion_needs_the_config() {
    let fake = fake().await;
    let config = config(&fake, FAST);
    let github = adapter(&config);
    let team_ref = github.ensure_team(&team("Temp", None)).await.unwrap().team_ref();
    assert!(!github.remove_membership(&team_ref, "nobody").await.unwrap());
    assert!(matches!(github.delete_team(&team_ref).await, Err(GitHubError::Config(_))));
    assert!(fake.team("temp").is_some());

    let github = adapter(&GitHubConfig { allow_team_deletion: true, ..config });
    assert!(github.delete_team(&team_ref).await.unwrap());
    assert!(fake.team("temp").is_none());
    assert!(!github.delete_team(&team_ref).await.unwrap(), "already gone");
}

fn app_key(dir: &std::path::Path) -> std::path::PathBuf {
    let key = dir.join("app.pem");
    let generated = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .output();
    match generated {
        Ok(out) if out.status.success() => key,
        other => panic!("openssl genrsa is needed to make a test App key: {other:?}"),
    }
}

fn app_config(fake: &FakeGitHub, key: std::path::PathBuf) -> GitHubConfig {
    GitHubConfig {
        token: None,
        app_id: Some(1),
        private_key_path: Some(key),
        installation_id: Some(42),
        ..config(fake, FAST)
    }
}

fn tokens_minted(fake: &FakeGitHub) -> usize {
    fake.requests().iter().filter(|r| r.path == "/app/installations/42/access_tokens").count()
}

#[tokio::test]
async fn a_github_app_authenticates_with_an_installation_token() {
    let dir = tempfile::tempdir().unwrap();
    let fake = fake().await;
    let config = app_config(&fake, app_key(dir.path()));
    let github = adapter(&config);
    assert!(!github.is_plan_only());
    let synced = sync(&github, &config, &team("Apps", None), &["alice"], &[]).await.unwrap();
    assert!(synced.team.created);
    assert_eq!(github.acting_login().await.unwrap().as_deref(), Some("muster[bot]"));
    // An App is not made maintainer by creating the team.
    assert_eq!(roles(&fake, "apps"), pairs(&[("alice", "maintainer")]));
    assert_eq!(tokens_minted(&fake), 1, "one installation token, reused until it nears expiry");
}

#[tokio::test]
async fn an_installation_token_is_renewed_well_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let fake = fake().await;
    // Tokens that live 4 minutes are inside the 5-minute margin from the start.
    fake.set_installation_token_ttl(Duration::from_secs(240));
    let github = adapter(&app_config(&fake, app_key(dir.path())));
    github.ensure_team(&team("Apps", None)).await.unwrap();
    let after_first = tokens_minted(&fake);
    github
        .team_members(&TeamRef { id: fake.team("apps").map(|t| t.id), slug: "apps".into() })
        .await
        .unwrap();
    assert!(tokens_minted(&fake) > after_first, "renewed with less than 5 minutes left");
}

#[tokio::test]
async fn a_slow_answer_is_a_retryable_timeout_not_a_hang() {
    let fake = fake().await;
    let config = GitHubConfig { request_timeout: Duration::from_secs(1), ..config(&fake, FAST) };
    let github = adapter(&config);
    fake.inject(Fault::latency(Duration::from_millis(2500)));
    let started = std::time::Instant::now();
    let err = github.ensure_team(&team("Slowpoke", None)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(matches!(err, GitHubError::Transport { .. }), "{err}");
    assert!(err.is_retryable() && err.retry_after().is_none());
}

#[tokio::test]
async fn a_share_of_requests_hitting_a_secondary_limit_is_retryable_after_a_minute() {
    let fake = fake().await;
    let github = adapter(&config(&fake, FAST));
    // Every second request is limited: the first passes, the second is refused.
    fake.rate_limit_fraction(0.5);
    github.acting_login().await.unwrap();
    let err = github.ensure_team(&team("Crowded", None)).await.unwrap_err();
    assert!(
        matches!(err, GitHubError::RateLimited { limit: RateLimitKind::Secondary, .. }),
        "{err}"
    );
    assert!(err.retry_after().unwrap() >= Duration::from_secs(60));
    assert_eq!(fake.requests().iter().filter(|r| r.status == 403).count(), 1);
}

#[tokio::test]
async fn a_nested_team_gets_and_loses_its_parent() {
    let fake = fake().await;
    let github = adapter(&config(&fake, FAST));
    let parent = github.ensure_team(&team("Platform", None)).await.unwrap();
    let nested = DesiredTeam { parent: Some("platform".into()), ..team("SRE", None) };
    let child = github.ensure_team(&nested).await.unwrap();
    assert_eq!(fake.team("sre").unwrap().parent, Some(parent.id));

    let again = github
        .ensure_team(&DesiredTeam { known: Some(child.team_ref()), ..nested.clone() })
        .await
        .unwrap();
    assert!(again.changed.is_empty(), "{:?}", again.changed);

    let top_level = DesiredTeam { parent: None, known: Some(child.team_ref()), ..nested.clone() };
    let moved = github.ensure_team(&top_level).await.unwrap();
    assert_eq!(moved.changed, [TeamField::Parent]);
    assert_eq!(fake.team("sre").unwrap().parent, None);

    let orphan = DesiredTeam { parent: Some("nope".into()), ..nested };
    let err = github.ensure_team(&orphan).await.unwrap_err();
    assert!(matches!(err, GitHubError::NotFound { .. }) && !err.is_retryable(), "{err}");
}

/// The organization's request budget (`points-per-minute`: reads are paced too, a long wait is a
/// rate limit, engine replicas share one budget through NATS) and the ETag cache's size
/// (`cache-entries`).
mod request_budget {
    use std::sync::Arc;

    use connectors::github::{MAX_BUDGET_SLEEP, OctocrabGitHub, Pacing, RequestBudget};
    use e2e::fake_github::LoggedRequest;
    use e2e::github_kit::ORG;
    use e2e::harness::World;
    use engine::bus::Names;
    use engine::github_budget::{self, JetStreamBudget};

    use super::*;

    /// GitHub's points for what the fake received: GET 1, a write 5.
    fn points(requests: &[LoggedRequest]) -> u32 {
        requests.iter().map(|r| if r.mutating { 5 } else { 1 }).sum()
    }

    fn team_ref(fake: &FakeGitHub, name: &str) -> TeamRef {
        let id = fake.create_team(name);
        TeamRef { id: Some(id), slug: workflows::github::slug_for(name) }
    }

    /// Reads the team's members until the budget refuses; the refusal.
    async fn read_until_refused(github: &OctocrabGitHub, team: &TeamRef) -> GitHubError {
        for _ in 0..20 {
            if let Err(err) = github.team_members(team).await {
                return err;
            }
        }
        panic!("the budget never ran out");
    }

    fn assert_budget_limit(err: &GitHubError) {
        match err {
            GitHubError::RateLimited { limit: RateLimitKind::Budget, after, .. } => {
                assert!(*after > MAX_BUDGET_SLEEP, "a long wait is not slept: {after:?}")
            }
            other => panic!("expected the request budget's limit, got {other}"),
        }
        let run: RunError = err.clone().into();
        assert!(matches!(run.kind, workflows::ErrorKind::Throttled { .. }), "{run:?}");
    }

    #[tokio::test]
    async fn reads_are_paced_not_only_writes() {
        let fake = fake().await;
        let team = team_ref(&fake, "Payments");
        let github = adapter(&GitHubConfig { points_per_minute: 120, ..config(&fake, FAST) });
        for _ in 0..4 {
            github.team_members(&team).await.unwrap();
        }
        let requests = fake.requests();
        assert!(requests.iter().all(|r| !r.mutating), "{requests:#?}");
        // 12 points at once, then one every 60 s / 108: the last read waited its turn.
        let pacing = Pacing::per_minute(120);
        let n = u32::try_from(requests.len()).unwrap();
        assert!(n > pacing.burst + 2, "{n} reads");
        let span = requests.last().unwrap().instant - requests[0].instant;
        let at_least = pacing.interval * (n - pacing.burst - 1);
        assert!(span >= at_least, "{n} reads in {span:?}, expected at least {at_least:?}");
    }

    #[tokio::test]
    async fn a_spent_budget_is_a_rate_limit_and_nothing_more_is_sent() {
        let fake = fake().await;
        let team = team_ref(&fake, "Payments");
        // Five points at once, then one every 12 s.
        let github = adapter(&GitHubConfig { points_per_minute: 10, ..config(&fake, FAST) });
        let err = read_until_refused(&github, &team).await;
        assert_budget_limit(&err);
        let sent = fake.requests();
        assert_eq!(points(&sent), 5, "{sent:#?}");
        let again = github.team_members(&team).await.unwrap_err();
        assert_budget_limit(&again);
        assert_eq!(fake.requests().len(), sent.len(), "nothing sent while the budget is spent");
    }

    #[tokio::test]
    async fn a_write_costs_five_points() {
        let fake = fake().await;
        let github = adapter(&GitHubConfig { points_per_minute: 10, ..config(&fake, FAST) });
        // The lookup reads take some of the five points; the create would need all five.
        let err = github.ensure_team(&team("Payments", None)).await.unwrap_err();
        assert_budget_limit(&err);
        let sent = fake.requests();
        assert!(fake.mutations().is_empty(), "the create was not sent: {sent:#?}");
        assert!(points(&sent) < 5, "refused for the write's weight, not spent by reads");
    }

    #[tokio::test]
    async fn engine_replicas_share_one_budget_through_nats() {
        let mut world = World::start().await.unwrap();
        let js = world.jetstream().await.unwrap();
        let bucket = github_budget::bucket(&js, &Names::new("muster"), 1).await.unwrap();
        let fake = fake().await;
        let team = team_ref(&fake, "Payments");
        // Five points at once, then one an hour: nothing comes back during the test.
        let pacing = Pacing { burst: 5, interval: Duration::from_secs(3600) };
        let replica = || {
            let budget = JetStreamBudget::new(ORG, pacing);
            budget.bind(bucket.clone());
            let budget: Arc<dyn RequestBudget> = Arc::new(budget);
            OctocrabGitHub::with_budget(&config(&fake, FAST), budget).unwrap()
        };
        let (first, second) = (replica(), replica());
        assert_budget_limit(&read_until_refused(&first, &team).await);
        let sent = fake.requests();
        assert_eq!(points(&sent), 5, "{sent:#?}");
        // The second replica has sent nothing yet, and the budget is spent for it too.
        assert_budget_limit(&second.team_members(&team).await.unwrap_err());
        assert_eq!(fake.requests().len(), sent.len());
    }

    #[tokio::test]
    async fn cache_entries_zero_sends_every_read_unconditionally() {
        let fake = fake().await;
        let team = team_ref(&fake, "Payments");
        let uncached = adapter(&GitHubConfig { cache_entries: 0, ..config(&fake, FAST) });
        uncached.team_members(&team).await.unwrap();
        uncached.team_members(&team).await.unwrap();
        assert!(fake.requests().iter().all(|r| !r.conditional), "{:#?}", fake.requests());

        fake.clear_log();
        let cached = adapter(&config(&fake, FAST));
        cached.team_members(&team).await.unwrap();
        let first = fake.requests().len();
        cached.team_members(&team).await.unwrap();
        let again = &fake.requests()[first..];
        assert!(!again.is_empty() && again.iter().all(|r| r.conditional), "{again:#?}");
    }
}
