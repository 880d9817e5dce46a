use std::sync::Arc;

use cloudevents::{EventBuilder, EventBuilderV10};
use serde_json::json;

use super::*;
use crate::Event;
use crate::github::{Assignment, Held, HoldReason, Member, RoleChange};
use crate::memory::{MemoryGitHub, MemoryJournal, MemoryPublisher, MemoryRecords};
use crate::records::{Actor, EnvironmentSpec, Records, TeamSpec};
use crate::sync_team::{SyncTeamSettings, TEAM_SYNC};
use crate::workflow::{RunContext, Workflow};

const BOT: &str = "muster-bot";

struct Fixture {
    records: MemoryRecords,
    github: MemoryGitHub,
    workflow: SyncTeam,
}

impl Fixture {
    async fn new(github: MemoryGitHub) -> Self {
        let records = MemoryRecords::new();
        let workflow = SyncTeam::new(
            Arc::new(records.clone()),
            Arc::new(github.clone()),
            Arc::new(MemoryPublisher::new()),
            SyncTeamSettings::default(),
        );
        let mut dev = EnvironmentSpec::named("dev");
        dev.default_quota.insert("requests.cpu".into(), "4".into());
        records.create_environment(dev, &Actor::system()).await.unwrap();
        records.create_environment(EnvironmentSpec::named("prod"), &Actor::system()).await.unwrap();
        Fixture { records, github, workflow }
    }

    async fn live() -> Self {
        Self::new(MemoryGitHub::new(Some(BOT))).await
    }

    async fn create_team(&self, members: &[&str], maintainers: &[&str]) {
        self.records.create_team(spec(members, maintainers), &Actor::system()).await.unwrap();
    }

    async fn set_members(&self, members: &[&str], maintainers: &[&str]) {
        self.records.update_team(spec(members, maintainers), None, &Actor::system()).await.unwrap();
    }

    async fn preview(&self, request: SyncRequest) -> TeamPreview {
        self.workflow.preview("payments", &request).await.unwrap()
    }

    /// Runs a sync with `request` on a fresh journal; its output and finished steps.
    async fn sync(&self, request: SyncRequest) -> (Result<Value, RunError>, MemoryJournal) {
        let journal = MemoryJournal::new();
        let mut ctx = RunContext::new("sync_team-1", 1, Box::new(journal.clone()));
        let data = serde_json::to_value(&request).unwrap();
        let output = self.workflow.run(&mut ctx, event(data)).await;
        (output, journal)
    }
}

fn spec(members: &[&str], maintainers: &[&str]) -> TeamSpec {
    TeamSpec {
        slug: "payments".into(),
        name: "Payments".into(),
        description: "Moves money".into(),
        members: members.iter().map(|s| (*s).to_owned()).collect(),
        maintainers: maintainers.iter().map(|s| (*s).to_owned()).collect(),
        parent: None,
        privacy: Default::default(),
        quota_profile: None,
        labels: Default::default(),
    }
}

fn event(data: Value) -> Event {
    EventBuilderV10::new()
        .id("e-sync")
        .source("/test")
        .ty(TEAM_SYNC)
        .subject("payments")
        .data("application/json", data)
        .build()
        .unwrap()
}

fn steps(journal: &MemoryJournal) -> Vec<(String, Value)> {
    journal.finished_steps().into_iter().map(|s| (s.name, s.output)).collect()
}

fn run_steps(steps: &[(String, Value)]) -> Vec<RunStep<'_>> {
    steps.iter().map(|(name, output)| RunStep { name, output: Some(output), error: None }).collect()
}

fn names(refs: &[NamespaceRef]) -> Vec<&str> {
    refs.iter().map(|n| n.name.as_str()).collect()
}

/// A preview with every kind of line, rendered.
#[test]
fn a_preview_renders_one_line_per_change_under_each_part() {
    let plan = MemberPlan {
        add: vec![Assignment { login: "carol".into(), role: Role::Member }],
        change_role: vec![RoleChange {
            login: "bob".into(),
            from: Role::Member,
            to: Role::Maintainer,
        }],
        remove: vec!["alice".into()],
        pending_untouched: vec!["dave".into()],
        protected: vec![BOT.into()],
        held: vec![Held { login: "erin".into(), reason: HoldReason::NotOrgMember }],
        ..MemberPlan::default()
    };
    let preview = TeamPreview {
        team: "payments".into(),
        path: PreviewPath::Sync,
        plan_only: false,
        github_read: true,
        adopt: false,
        allow_mass_removal: false,
        github: TeamChange {
            action: TeamAction::Update,
            id: Some(42),
            slug: "payments".into(),
            name: "Payments".into(),
            privacy: Privacy::Closed,
            parent: None,
            changes: vec![
                FieldChange {
                    field: "name".into(),
                    from: Some("Pay".into()),
                    to: Some("Payments".into()),
                },
                FieldChange { field: "privacy".into(), from: None, to: Some("closed".into()) },
                FieldChange {
                    field: "slug".into(),
                    from: Some("pay".into()),
                    to: Some("payments".into()),
                },
            ],
            children: Vec::new(),
        },
        members: MembersPreview { skipped: None, plan, refused: None },
        namespaces: NamespacesPreview {
            create: vec![NamespaceRef { name: "payments-dev".into(), environment: "dev".into() }],
            update: vec![NamespaceUpdate {
                name: "payments-prod".into(),
                environment: "prod".into(),
                changes: vec![
                    SpecChange {
                        field: "quota".into(),
                        key: Some("requests.cpu".into()),
                        from: Some("4".into()),
                        to: Some("8".into()),
                    },
                    SpecChange {
                        field: "target_clusters".into(),
                        key: Some("prod-2".into()),
                        from: None,
                        to: Some("prod-2".into()),
                    },
                ],
            }],
            delete: vec![NamespaceRef { name: "payments-old".into(), environment: "old".into() }],
            ..NamespacesPreview::default()
        },
        blocked: None,
        changes: 0,
        lines: Vec::new(),
    };
    assert_eq!(
        render(&preview),
        [
            "team payments: the next sync makes 8 changes",
            "GitHub team:",
            "  ~ name \"Pay\" → \"Payments\"",
            "  ~ privacy → \"closed\"",
            "  ~ slug \"pay\" → \"payments\"",
            "members:",
            "  + carol (member)",
            "  ~ bob member → maintainer",
            "  - alice",
            "  note: dave's invitation is pending: left as it is",
            "  note: muster-bot is the identity Muster acts as: never removed or demoted",
            "  note: erin held back: not a member of the organization and \
             github.invite-non-members is off",
            "namespaces:",
            "  + payments-dev",
            "  ~ payments-prod: quota requests.cpu 4 → 8",
            "  ~ payments-prod: cluster prod-2 added",
            "  - payments-old (deleting)",
        ]
    );
}

/// A new team in live mode: the preview lists what the sync then does, and sends nothing.
#[tokio::test]
async fn the_preview_of_a_new_team_is_what_the_sync_applies() {
    let f = Fixture::live().await;
    f.create_team(&["bob", "carol"], &["alice"]).await;
    let preview = f.preview(SyncRequest::default()).await;
    assert!(f.github.writes().is_empty(), "a preview sends nothing: {:?}", f.github.writes());
    assert_eq!(preview.path, PreviewPath::Sync);
    assert!(preview.github_read && !preview.plan_only);
    assert_eq!(preview.github.action, TeamAction::Create);
    assert_eq!(preview.github.slug, "payments");
    assert_eq!(preview.changes, 1 + 3 + 2);
    assert_eq!(
        &preview.lines[..8],
        [
            "team payments: the next sync makes 6 changes",
            "GitHub team:",
            "  + create team \"Payments\" (closed)",
            "members:",
            "  + alice (maintainer)",
            "  + bob (member)",
            "  + carol (member)",
            "namespaces:",
        ]
    );
    assert_eq!(names(&preview.namespaces.create), ["payments-dev", "payments-prod"]);

    let (output, journal) = f.sync(SyncRequest::default()).await;
    let output = output.unwrap();
    assert_eq!(
        f.github.writes(),
        ["create team payments", "set alice maintainer", "set bob member", "set carol member"]
    );
    assert_eq!(output["github"]["members"]["added"], json!(preview.members.plan.add));
    assert_eq!(output["namespaces"]["created"], json!(["payments-dev", "payments-prod"]));

    // The run's steps render in the same form.
    let steps = steps(&journal);
    let lines = run_lines(&run_steps(&steps));
    let id = f.github.teams()[0].id;
    assert_eq!(
        lines,
        [
            "changes:".to_owned(),
            "GitHub team:".to_owned(),
            format!("  + created team payments (id {id})"),
            "members:".to_owned(),
            "  + alice (maintainer)".to_owned(),
            "  + bob (member)".to_owned(),
            "  + carol (member)".to_owned(),
            "  note: muster-bot is the identity Muster acts as: never removed or demoted"
                .to_owned(),
            "namespaces:".to_owned(),
            "  + payments-dev".to_owned(),
            "  + payments-prod".to_owned(),
        ]
    );
    assert_eq!(
        summary_line(&output),
        format!("sync of payments: team created (id {id}); members +3 -0 ~0; namespaces +2 ~0 -0")
    );

    // Converged: nothing left to preview.
    let again = f.preview(SyncRequest::default()).await;
    assert_eq!(again.changes, 0, "{:#?}", again.lines);
    assert_eq!(again.github.action, TeamAction::Unchanged);
    assert_eq!(again.lines[0], "team payments: the next sync changes nothing");
    assert!(again.lines.contains(&format!("  no change (team payments (id {id}))")));
}

/// Drift in members, a changed environment quota and a deleted environment.
#[tokio::test]
async fn the_preview_shows_member_role_and_namespace_changes() {
    let f = Fixture::live().await;
    f.create_team(&["bob", "carol"], &["alice"]).await;
    f.sync(SyncRequest::default()).await.0.unwrap();
    f.set_members(&["carol", "dave"], &["alice", "bob"]).await;
    let mut dev = f.records.get_environment("dev").await.unwrap().spec;
    dev.default_quota.insert("requests.cpu".into(), "8".into());
    f.records.update_environment(dev, None, &Actor::system()).await.unwrap();
    f.records.delete_environment("prod", None, &Actor::system()).await.unwrap();

    let preview = f.preview(SyncRequest::default()).await;
    assert!(f.github.writes().len() == 4, "nothing more sent: {:?}", f.github.writes());
    let members: Vec<&str> = preview.lines.iter().map(String::as_str).collect();
    for line in [
        "  + dave (member)",
        "  ~ bob member → maintainer",
        "  ~ payments-dev: quota requests.cpu 4 → 8",
        "  - payments-prod (deleting)",
        "  note: muster-bot is the identity Muster acts as: never removed or demoted",
    ] {
        assert!(members.contains(&line), "{line:?} missing from {members:#?}");
    }
    assert_eq!(preview.namespaces.update[0].changes.len(), 1);
    assert_eq!(names(&preview.namespaces.delete), ["payments-prod"]);
    assert_eq!(preview.changes, 2 + 2);

    let (output, _) = f.sync(SyncRequest::default()).await;
    let output = output.unwrap();
    assert_eq!(output["github"]["members"]["added"], json!(preview.members.plan.add));
    assert_eq!(
        output["github"]["members"]["role_changed"],
        json!(preview.members.plan.change_role)
    );
    assert_eq!(output["namespaces"]["updated"], json!(["payments-dev", "payments-prod"]));
    assert_eq!(output["namespaces"]["deleting"], json!(["payments-prod"]));
    assert!(summary_line(&output).ends_with("members +1 -0 ~1; namespaces +0 ~1 -1"));
}

/// The mass-removal guard's refusal is part of the preview, with whom the override removes.
#[tokio::test]
async fn a_guarded_plan_is_shown_with_its_refusal() {
    let f = Fixture::live().await;
    f.create_team(&["bob", "carol"], &["alice"]).await;
    f.sync(SyncRequest::default()).await.0.unwrap();
    f.set_members(&[], &["zed"]).await;

    let preview = f.preview(SyncRequest::default()).await;
    let refused = preview.members.refused.clone().expect("refused");
    assert!(refused.contains("refusing to remove 3 of 3 team members"), "{refused}");
    assert_eq!(preview.members.plan.remove, ["alice", "bob", "carol"]);
    assert_eq!(preview.blocked.as_ref().unwrap().step, "github-members");
    assert!(preview.lines[1].starts_with("! the sync stops at github-members: refusing"));
    assert!(preview.lines.contains(&"  - bob".to_owned()), "{:#?}", preview.lines);
    assert!(preview.lines.contains(&"  note: not reached while the sync stops before them".into()));

    // The sync refuses with the same words.
    let (output, _) = f.sync(SyncRequest::default()).await;
    assert_eq!(output.unwrap_err().message, refused);

    // With the override, the same removals and no refusal.
    let request = SyncRequest { allow_mass_removal: true, ..SyncRequest::default() };
    let overridden = f.preview(request.clone()).await;
    assert_eq!(overridden.members.refused, None);
    assert_eq!(overridden.blocked, None);
    assert_eq!(overridden.members.plan, preview.members.plan);
    let (output, _) = f.sync(request).await;
    assert_eq!(output.unwrap()["github"]["members"]["removed"], json!(["alice", "bob", "carol"]));
}

/// An existing GitHub team with the team's slug is left alone unless adopted.
#[tokio::test]
async fn an_unlinked_team_is_adopted_only_on_request() {
    let f = Fixture::live().await;
    let id = f.github.insert_team("Payments", vec![Member::active("alice", Role::Maintainer)]);
    f.create_team(&["bob"], &["alice"]).await;

    let preview = f.preview(SyncRequest::default()).await;
    assert_eq!(preview.github.action, TeamAction::Unmanaged);
    assert_eq!(preview.github.id, Some(id));
    assert!(preview.members.skipped.is_some());
    assert!(preview.lines[2].starts_with(&format!("  ! team payments (id {id}) exists on GitHub")));

    let adopt = SyncRequest { adopt: true, ..SyncRequest::default() };
    let adopted = f.preview(adopt.clone()).await;
    assert_eq!(adopted.github.action, TeamAction::Adopt);
    assert!(adopted.lines.contains(&format!("  adopt existing team payments (id {id})")));
    assert!(adopted.lines.contains(&"  ~ description \"\" → \"Moves money\"".to_owned()));
    assert!(adopted.lines.contains(&"  + bob (member)".to_owned()));
    assert_eq!(adopted.changes, 5, "adopt, description, bob, two namespace records");
    assert!(f.github.writes().is_empty());

    let (output, _) = f.sync(adopt).await;
    assert_eq!(output.unwrap()["github"]["team"]["action"], "adopted");
    assert_eq!(f.github.writes(), ["update team payments", "set bob member"]);
}

/// Without credentials nothing is read: the plan is the whole desired state.
#[tokio::test]
async fn without_credentials_the_preview_starts_from_nothing() {
    let f = Fixture::new(MemoryGitHub::plan_only()).await;
    f.create_team(&["bob"], &["alice"]).await;
    let preview = f.preview(SyncRequest::default()).await;
    assert!(preview.plan_only && !preview.github_read);
    assert_eq!(preview.github.action, TeamAction::Create);
    assert_eq!(
        &preview.lines[..6],
        [
            "team payments: the next sync makes 5 changes",
            "note: GitHub is not read (no credentials): the plan starts from nothing",
            "note: plan-only mode: the sync records this plan and sends nothing to GitHub",
            "GitHub team:",
            "  + create team \"Payments\" (closed)",
            "members:",
        ]
    );
    let (output, journal) = f.sync(SyncRequest::default()).await;
    assert_eq!(output.unwrap()["github"]["members"]["plan"], json!(preview.members.plan));
    let steps = steps(&journal);
    let lines = run_lines(&run_steps(&steps));
    assert_eq!(lines[0], "plan (plan-only mode: nothing was sent to GitHub):");
    assert_eq!(lines[2], "  + create team payments");
    assert!(lines.contains(&"  + alice (maintainer)".to_owned()), "{lines:#?}");
}

/// A deleted team previews its teardown.
#[tokio::test]
async fn a_deleted_team_previews_its_teardown() {
    let f = Fixture::new(MemoryGitHub::new(Some(BOT)).allowing_deletion()).await;
    f.create_team(&["bob"], &["alice"]).await;
    f.sync(SyncRequest::default()).await.0.unwrap();
    f.records.delete_team("payments", None, &Actor::system()).await.unwrap();
    let id = f.github.teams()[0].id;

    let preview = f.preview(SyncRequest::default()).await;
    assert_eq!(preview.path, PreviewPath::Teardown);
    assert_eq!(preview.github.action, TeamAction::Delete);
    assert_eq!(names(&preview.namespaces.delete), ["payments-dev", "payments-prod"]);
    assert_eq!(preview.changes, 3);
    for line in [
        "team payments: the next teardown makes 3 changes".to_owned(),
        format!("  - delete team payments (id {id})"),
        "  note: not synced: the team is deleted: its GitHub members are left as they are".into(),
        "  - payments-dev (deleting)".into(),
    ] {
        assert!(preview.lines.contains(&line), "{line:?} missing from {:#?}", preview.lines);
    }
    assert_eq!(f.github.teams().len(), 1, "nothing deleted by the preview");
}

#[test]
fn the_summary_of_a_teardown_and_of_a_coalesced_run() {
    let teardown = json!({
        "team": "payments", "path": "teardown", "plan_only": false,
        "github": {"team": {"action": "retained", "team": {"id": 7, "slug": "payments"}},
                   "members": {"skipped": "deleted"}},
        "namespaces": {"created": [], "updated": ["payments-dev"], "unchanged": [],
                       "deleting": ["payments-dev"]},
        "purged": false,
    });
    assert_eq!(
        summary_line(&teardown),
        "teardown of payments: team retained (id 7); members +0 -0 ~0; namespaces +0 ~0 -1; \
         not purged yet"
    );
    let coalesced = json!({"team": "payments", "coalesced": true, "covered_by": "sync_team-9"});
    assert_eq!(summary_line(&coalesced), "sync of payments: coalesced, covered by run sync_team-9");
}

#[test]
fn a_failed_step_is_rendered_with_its_error() {
    let team = json!({"id": 7, "slug": "payments", "action": "unchanged", "changed": []});
    let steps = [
        RunStep { name: "github-team", output: Some(&team), error: None },
        RunStep { name: "github-members", output: None, error: Some("refusing to remove 2 of 2") },
    ];
    assert_eq!(
        run_lines(&steps),
        [
            "changes:",
            "GitHub team:",
            "  no change (team payments (id 7))",
            "members:",
            "  ! failed: refusing to remove 2 of 2",
            "namespaces:",
            "  note: not reached",
        ]
    );
    assert!(run_lines(&[RunStep { name: "echo", output: None, error: None }]).is_empty());
}
