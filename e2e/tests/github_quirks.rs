//! The GitHub connector against GitHub's less obvious behaviour, as the fake GitHub models it
//! over real HTTP: teams addressed by id when another team took a renamed team's slug, owners
//! reported as maintainers, parent teams listing their child teams' members, logins that no
//! longer exist, expired invitations and offboarded members, SAML SSO, Enterprise Managed User
//! logins, a list that grows past a page behind a 304, and GitHub's own slugs.

use std::time::Duration;

use connectors::github::GitHubConfig;
use e2e::github_kit::{FAST, adapter, config, fake, pairs, roles, sync, team};
use workflows::github::{GitHub, GitHubError, MembershipState, Role, TeamRef, slug_for};

#[tokio::test]
async fn a_renamed_team_whose_old_slug_another_team_took_is_still_the_one_edited_and_deleted() {
    let fake = fake().await;
    let github = adapter(&GitHubConfig { allow_team_deletion: true, ..config(&fake, FAST) });
    let ours = github.ensure_team(&team("Payments", None)).await.unwrap();
    // Renamed on GitHub by someone, and a new team takes the old name and slug.
    github.ensure_team(&team("Payments Old", Some(ours.team_ref()))).await.unwrap();
    let other = fake.create_team("Payments");
    fake.put_member("payments", "frank", "maintainer", false);
    let stale = TeamRef { id: Some(ours.id), slug: "payments".into() };

    github.set_membership(&stale, "alice", Role::Member).await.unwrap();
    assert!(!github.remove_membership(&stale, "frank").await.unwrap(), "not ours");
    assert_eq!(roles(&fake, "payments"), pairs(&[("frank", "maintainer")]), "untouched");
    assert!(fake.team("payments-old").unwrap().members.contains_key("alice"));

    assert!(github.delete_team(&stale).await.unwrap());
    assert!(fake.team("payments-old").is_none(), "ours deleted");
    assert_eq!(fake.team("payments").map(|t| t.id), Some(other), "the other team kept");

    let unaddressable = TeamRef { id: None, slug: "payments".into() };
    let err = github.delete_team(&unaddressable).await.unwrap_err();
    assert!(matches!(err, GitHubError::Config(_)), "never by slug: {err}");
    assert!(fake.team("payments").is_some());
}

#[tokio::test]
async fn an_owner_wanted_as_member_converges_without_a_role_change_every_run() {
    let fake = fake().await;
    fake.add_org_owners(["olga"]);
    let config = config(&fake, FAST);
    let github = adapter(&config);
    let first = sync(&github, &config, &team("Infra", None), &["alice"], &["olga"]).await.unwrap();
    assert_eq!(roles(&fake, "infra").iter().find(|(l, _)| l == "olga").unwrap().1, "maintainer");

    fake.clear_log();
    let known = Some(first.team.team_ref());
    let again = sync(&github, &config, &team("Infra", known), &["alice"], &["olga"]).await.unwrap();
    assert!(again.plan.is_empty(), "{:?}", again.plan);
    assert_eq!(again.plan.owners, ["olga"]);
    assert!(fake.mutations().is_empty(), "{:?}", fake.mutations());
}

#[tokio::test]
async fn a_parent_team_sync_leaves_its_child_teams_members_alone() {
    let fake = fake().await;
    let config = config(&fake, FAST);
    let github = adapter(&config);
    let parent = sync(&github, &config, &team("Platform", None), &["alice"], &[]).await.unwrap();
    let mut child = team("Platform Data", None);
    child.parent = Some(parent.team.slug.clone());
    sync(&github, &config, &child, &["dave"], &["frank"]).await.unwrap();

    fake.clear_log();
    let known = Some(parent.team.team_ref());
    let again = sync(&github, &config, &team("Platform", known), &["alice"], &[]).await.unwrap();
    assert!(again.plan.remove.is_empty(), "{:?}", again.plan);
    let mut inherited = again.plan.inherited.clone();
    inherited.sort();
    assert_eq!(inherited, ["dave", "frank"]);
    assert!(fake.mutations().is_empty(), "{:?}", fake.mutations());
    assert!(fake.team("platform-data").unwrap().members.contains_key("dave"));
}

#[tokio::test]
async fn a_renamed_login_is_reported_and_everyone_else_is_synced() {
    let fake = fake().await;
    fake.rename_user("bob", "robert");
    let config = config(&fake, FAST);
    let github = adapter(&config);
    let synced =
        sync(&github, &config, &team("Web", None), &["alice"], &["bob", "carol"]).await.unwrap();
    assert_eq!(synced.applied.failed.len(), 1, "{:?}", synced.applied);
    assert_eq!(synced.applied.failed[0].login, "bob");
    assert!(synced.applied.failed[0].error.contains("renamed"), "{:?}", synced.applied.failed);
    let logins: Vec<String> = roles(&fake, "web").into_iter().map(|(l, _)| l).collect();
    assert!(logins.contains(&"alice".to_owned()) && logins.contains(&"carol".to_owned()));
    assert!(!logins.contains(&"bob".to_owned()));
}

#[tokio::test]
async fn expired_invitations_and_offboarded_members_are_visible_to_the_planner() {
    let fake = fake().await;
    let config = config(&fake, FAST);
    let github = adapter(&config);
    let team_ref = github.ensure_team(&team("Ops", None)).await.unwrap().team_ref();
    let state = github.set_membership(&team_ref, "zoe", Role::Member).await.unwrap();
    assert_eq!(state, MembershipState::Pending, "zoe is invited to the organization");
    assert!(github.expired_invitations().await.unwrap().is_empty());
    assert!(fake.expire_invitation("zoe"));
    assert_eq!(github.expired_invitations().await.unwrap(), ["zoe"]);
    assert!(!github.is_org_member("zoe").await.unwrap());

    assert!(github.is_org_member("carol").await.unwrap());
    fake.remove_org_member("carol");
    assert!(!github.is_org_member("carol").await.unwrap(), "offboarded");
}

#[tokio::test]
async fn saml_sso_is_named_with_the_url_to_authorize_the_token() {
    let fake = fake().await;
    fake.require_saml_sso(true);
    let github = adapter(&config(&fake, FAST));
    let err = github.ensure_team(&team("Sso", None)).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let message = err.to_string();
    assert!(message.contains("SAML single sign-on"), "{message}");
    assert!(message.contains(&format!("{}/orgs/acme/sso", fake.url())), "{message}");
}

#[tokio::test]
async fn enterprise_managed_user_logins_are_synced() {
    let fake = fake().await;
    fake.add_org_members(["alice_acme", "bob_acme"]);
    let config = config(&fake, FAST);
    let github = adapter(&config);
    sync(&github, &config, &team("Emu", None), &["alice_acme"], &["bob_acme"]).await.unwrap();
    let roles = roles(&fake, "emu");
    assert!(roles.contains(&("alice_acme".into(), "maintainer".into())), "{roles:?}");
    assert!(roles.contains(&("bob_acme".into(), "member".into())), "{roles:?}");
}

#[tokio::test]
async fn a_team_that_grows_past_a_page_behind_a_304_is_read_whole() {
    let fake = fake().await;
    let config = config(&fake, FAST);
    let github = adapter(&config);
    let team_ref = github.ensure_team(&team("Big", None)).await.unwrap().team_ref();
    for i in 0..100 {
        fake.put_member("big", &format!("user{i:03}"), "member", false);
    }
    // Exactly one full page of members (and Muster's own login, the creator, as maintainer).
    let members = github.team_members(&team_ref).await.unwrap();
    assert_eq!(members.len(), 101);

    fake.put_member("big", "zz-late", "member", false);
    let members = github.team_members(&team_ref).await.unwrap();
    assert_eq!(members.len(), 102, "the 101st member, on page 2");
    assert!(members.iter().any(|m| m.login == "zz-late"));
}

#[tokio::test]
async fn slugs_are_the_ones_github_makes() {
    let fake = fake().await;
    let github = adapter(&config(&fake, Duration::ZERO));
    for name in
        ["Platform Team", "  SRE / On-Call!! ", "Team 42", "a__b--c", "Data.Eng", "Ünïcode Crew"]
    {
        let made = github.ensure_team(&team(name, None)).await.unwrap();
        assert_eq!(made.slug, slug_for(name), "{name:?}: GitHub's slug and Muster's differ");
    }
}
