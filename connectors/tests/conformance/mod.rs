//! The records conformance suite: every `Records` backend must pass each case.
//!
//! Each case takes a fresh, empty store. A backend's test file provides a fixture and expands
//! [`conformance_suite!`] with it, which makes one `#[tokio::test]` per case.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use workflows::records::{
    Actor, ClusterOutcome, ClusterStatus, EnvironmentSpec, GitHubLink, NamespaceFilter,
    NamespaceSpec, NamespaceState, RecordKind, Records, RecordsError, RoleBinding, SyncMark,
    SyncProblem, SyncProblemKind, TeamSpec, TeamStatus,
};

pub type Store = Arc<dyn Records>;

/// One `#[tokio::test]` per case, each given a fresh store by `$fixture::run(case)`.
#[macro_export]
macro_rules! conformance_suite {
    ($fixture:ident) => {
        $crate::conformance_suite!(@cases $fixture,
            teams_create_get_and_paginate,
            duplicate_create_is_already_exists,
            stale_update_is_a_conflict_and_writes_nothing,
            update_bumps_resource_version,
            missing_records_are_not_found,
            tombstone_delete_then_purge,
            environment_crud,
            namespace_records_upsert_list_and_state,
            namespace_name_collisions_are_refused,
            outbox_follows_every_change_in_order,
            outbox_events_name_who_made_each_change,
            invalid_records_write_nothing,
            concurrent_writers_are_serialised,
            team_status_is_not_a_change
        );
    };
    (@cases $fixture:ident, $($case:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $fixture::run(conformance::$case).await;
            }
        )+
    };
}

pub fn team(slug: &str) -> TeamSpec {
    TeamSpec {
        slug: slug.to_owned(),
        name: format!("Team {slug}"),
        description: String::new(),
        members: vec!["alice".into(), "bob".into()],
        maintainers: vec!["carol".into()],
        parent: None,
        privacy: Default::default(),
        quota_profile: None,
        labels: BTreeMap::new(),
    }
}

pub fn namespace(team: &str, environment: &str) -> NamespaceSpec {
    NamespaceSpec {
        team: team.to_owned(),
        environment: environment.to_owned(),
        quota: BTreeMap::from([("requests.cpu".to_owned(), "2".to_owned())]),
        limits: BTreeMap::from([("memory".to_owned(), "512Mi".to_owned())]),
        role_bindings: vec![RoleBinding { group: team.to_owned(), role: "edit".into() }],
        quota_profile: None,
        labels: BTreeMap::from([("cost-center".to_owned(), "42".to_owned())]),
        target_clusters: vec![format!("{environment}-1")],
        allow_deletion: environment != "prod",
        network_policy: true,
    }
}

/// The outbox as `(type, subject, resource_version in data)`, oldest first.
async fn outbox(store: &Store) -> Vec<(String, String, u64)> {
    store
        .outbox_pending(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            let version = e.data["resource_version"].as_u64().unwrap();
            (e.event_type, e.subject, version)
        })
        .collect()
}

fn ev(event_type: &str, subject: &str, version: u64) -> (String, String, u64) {
    (event_type.to_owned(), subject.to_owned(), version)
}

pub async fn teams_create_get_and_paginate(store: Store) {
    let slugs = ["golf", "alpha", "echo", "charlie", "bravo", "foxtrot", "delta"];
    for slug in slugs {
        let created = store.create_team(team(slug), &Actor::system()).await.unwrap();
        assert_eq!(created.resource_version, 1);
        assert_eq!(created.created_at, created.updated_at);
        assert!(created.deleted_at.is_none());
        assert_eq!(store.get_team(slug).await.unwrap(), created);
    }

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store.list_teams(after.as_deref(), 3).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|t| t.spec.slug.clone()));
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), seen.last(), "cursor is the last key of the page");
                after = Some(next);
            }
            None => break,
        }
    }
    let mut sorted: Vec<String> = slugs.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    assert_eq!(seen, sorted);
    assert_eq!(pages, 3);

    let all = store.list_teams(None, 100).await.unwrap();
    assert_eq!(all.items.len(), 7);
    assert!(all.next.is_none());
    // A limit of 0 is clamped to one item, never an empty page with a cursor.
    let one = store.list_teams(None, 0).await.unwrap();
    assert_eq!(one.items.len(), 1);
    assert_eq!(one.next.as_deref(), Some("alpha"));
    let tail = store.list_teams(Some("foxtrot"), 10).await.unwrap();
    assert_eq!(tail.items.len(), 1);
    assert_eq!(tail.items[0].spec.slug, "golf");
    assert!(store.list_teams(Some("zulu"), 10).await.unwrap().items.is_empty());
}

pub async fn duplicate_create_is_already_exists(store: Store) {
    store.create_team(team("payments"), &Actor::system()).await.unwrap();
    let mut other = team("payments");
    other.name = "Someone else".into();
    match store.create_team(other, &Actor::system()).await {
        Err(RecordsError::AlreadyExists { kind: RecordKind::Team, key }) => {
            assert_eq!(key, "payments")
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(store.get_team("payments").await.unwrap().spec.name, "Team payments");

    store.create_environment(EnvironmentSpec::named("dev"), &Actor::system()).await.unwrap();
    let again = store.create_environment(EnvironmentSpec::named("dev"), &Actor::system()).await;
    assert!(
        matches!(again, Err(RecordsError::AlreadyExists { kind: RecordKind::Environment, .. })),
        "{again:?}"
    );
    assert_eq!(
        outbox(&store).await,
        [ev("muster.team.created", "payments", 1), ev("muster.environment.created", "dev", 1)]
    );
}

pub async fn stale_update_is_a_conflict_and_writes_nothing(store: Store) {
    store.create_team(team("payments"), &Actor::system()).await.unwrap();
    let mut first = team("payments");
    first.description = "first".into();
    assert_eq!(
        store.update_team(first, Some(1), &Actor::system()).await.unwrap().resource_version,
        2
    );

    let mut stale = team("payments");
    stale.description = "stale".into();
    match store.update_team(stale, Some(1), &Actor::system()).await {
        Err(RecordsError::VersionConflict { expected, current, .. }) => {
            assert_eq!((expected, current), (1, 2))
        }
        other => panic!("expected VersionConflict, got {other:?}"),
    }
    let stored = store.get_team("payments").await.unwrap();
    assert_eq!(stored.spec.description, "first");
    assert_eq!(stored.resource_version, 2);

    let delete = store.delete_team("payments", Some(1), &Actor::system()).await;
    assert!(matches!(delete, Err(RecordsError::VersionConflict { current: 2, .. })), "{delete:?}");
    assert!(!store.get_team("payments").await.unwrap().is_deleted());

    assert_eq!(
        outbox(&store).await,
        [ev("muster.team.created", "payments", 1), ev("muster.team.updated", "payments", 2)]
    );
}

pub async fn update_bumps_resource_version(store: Store) {
    let created = store.create_team(team("payments"), &Actor::system()).await.unwrap();
    let mut spec = team("payments");
    spec.members.push("dave".into());
    spec.labels.insert("cost-center".into(), "cc-42".into());
    let updated = store.update_team(spec.clone(), None, &Actor::system()).await.unwrap();
    assert_eq!(updated.resource_version, 2);
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at >= created.updated_at);
    assert_eq!(updated.spec, spec);
    // An unchanged spec is still a change: the version moves on and it is announced.
    let again = store.update_team(spec, Some(2), &Actor::system()).await.unwrap();
    assert_eq!(again.resource_version, 3);
    assert_eq!(store.get_team("payments").await.unwrap(), again);
    assert_eq!(outbox(&store).await.len(), 3);
}

pub async fn missing_records_are_not_found(store: Store) {
    let not_found = |r: &Result<_, RecordsError>| matches!(r, Err(RecordsError::NotFound { .. }));
    assert!(not_found(&store.get_team("ghost").await.map(drop)));
    assert!(not_found(&store.update_team(team("ghost"), None, &Actor::system()).await.map(drop)));
    assert!(not_found(&store.delete_team("ghost", None, &Actor::system()).await.map(drop)));
    assert!(!store.purge_team("ghost").await.unwrap());
    assert!(not_found(&store.get_environment("ghost").await.map(drop)));
    assert!(not_found(
        &store
            .update_environment(EnvironmentSpec::named("ghost"), None, &Actor::system())
            .await
            .map(drop)
    ));
    assert!(not_found(&store.delete_environment("ghost", None, &Actor::system()).await.map(drop)));
    assert!(not_found(&store.get_namespace("ghost", "dev").await.map(drop)));
    assert!(not_found(
        &store.set_namespace_state("ghost", "dev", NamespaceState::Deleting).await.map(drop)
    ));
    assert!(!store.delete_namespace("ghost", "dev").await.unwrap());
    // Namespace records need a live team.
    match store.upsert_namespace(namespace("ghost", "dev")).await {
        Err(RecordsError::NotFound { kind: RecordKind::Team, key }) => assert_eq!(key, "ghost"),
        other => panic!("expected NotFound team, got {other:?}"),
    }
    assert!(outbox(&store).await.is_empty());
}

pub async fn tombstone_delete_then_purge(store: Store) {
    store.create_team(team("payments"), &Actor::system()).await.unwrap();
    store.upsert_namespace(namespace("payments", "dev")).await.unwrap();
    store.upsert_namespace(namespace("payments", "prod")).await.unwrap();
    store.create_team(team("search"), &Actor::system()).await.unwrap();
    store.upsert_namespace(namespace("search", "dev")).await.unwrap();

    let purge_live = store.purge_team("payments").await;
    assert!(matches!(purge_live, Err(RecordsError::NotTombstoned { .. })), "{purge_live:?}");

    let tombstone = store.delete_team("payments", Some(1), &Actor::system()).await.unwrap();
    assert_eq!(tombstone.resource_version, 2);
    let deleted_at = tombstone.deleted_at.expect("tombstone has a deletion time");
    assert!(deleted_at <= Utc::now());
    assert_eq!(store.get_team("payments").await.unwrap(), tombstone);
    // Deleting again is a no-op: same record, no second event.
    assert_eq!(store.delete_team("payments", None, &Actor::system()).await.unwrap(), tombstone);

    // A tombstone is read-only and still holds its slug.
    let update = store.update_team(team("payments"), None, &Actor::system()).await;
    assert!(matches!(update, Err(RecordsError::Tombstoned { .. })), "{update:?}");
    let create = store.create_team(team("payments"), &Actor::system()).await;
    assert!(matches!(create, Err(RecordsError::AlreadyExists { .. })), "{create:?}");
    let upsert = store.upsert_namespace(namespace("payments", "test")).await;
    assert!(matches!(upsert, Err(RecordsError::Tombstoned { .. })), "{upsert:?}");
    // The teardown can still walk its namespace records.
    let set = store.set_namespace_state("payments", "dev", NamespaceState::Deleting).await.unwrap();
    assert_eq!(set.state, NamespaceState::Deleting);

    let listed = store.list_teams(None, 10).await.unwrap();
    assert_eq!(listed.items.len(), 2, "tombstones are listed");
    assert!(listed.items[0].is_deleted());

    assert!(store.purge_team("payments").await.unwrap());
    assert!(matches!(store.get_team("payments").await, Err(RecordsError::NotFound { .. })));
    let left = store.list_namespaces(&NamespaceFilter::default()).await.unwrap();
    assert_eq!(
        left.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["search-dev"],
        "purge removes the team's namespace records"
    );
    assert!(!store.purge_team("payments").await.unwrap(), "purge is idempotent");

    // The slug is free again and starts over.
    let reborn = store.create_team(team("payments"), &Actor::system()).await.unwrap();
    assert_eq!(reborn.resource_version, 1);
    assert!(!reborn.is_deleted());
    // The namespace name is free again too.
    store.upsert_namespace(namespace("payments", "dev")).await.unwrap();

    assert_eq!(
        outbox(&store).await,
        [
            ev("muster.team.created", "payments", 1),
            ev("muster.team.created", "search", 1),
            ev("muster.team.deleted", "payments", 2),
            ev("muster.team.created", "payments", 1),
        ]
    );
}

pub async fn environment_crud(store: Store) {
    let dev =
        store.create_environment(EnvironmentSpec::named("dev"), &Actor::system()).await.unwrap();
    assert_eq!(dev.resource_version, 1);
    assert!(dev.spec.clusters.is_empty() && !dev.spec.allow_namespace_deletion);
    for name in ["prod", "test", "staging"] {
        store.create_environment(EnvironmentSpec::named(name), &Actor::system()).await.unwrap();
    }
    assert_eq!(store.get_environment("dev").await.unwrap(), dev);

    let first = store.list_environments(None, 2).await.unwrap();
    let names = |p: &workflows::records::Page<workflows::records::Environment>| {
        p.items.iter().map(|e| e.spec.name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(&first), ["dev", "prod"]);
    let second = store.list_environments(first.next.as_deref(), 2).await.unwrap();
    assert_eq!(names(&second), ["staging", "test"]);
    assert!(second.next.is_none());

    let mut spec = EnvironmentSpec::named("dev");
    spec.clusters = vec!["dev-eu-1".into(), "dev-us-1".into()];
    spec.default_quota.insert("requests.cpu".into(), "4".into());
    spec.default_limits.insert("memory".into(), "1Gi".into());
    spec.allow_namespace_deletion = true;
    let updated = store.update_environment(spec.clone(), Some(1), &Actor::system()).await.unwrap();
    assert_eq!(updated.resource_version, 2);
    assert_eq!(updated.spec, spec);
    assert_eq!(updated.created_at, dev.created_at);

    let stale =
        store.update_environment(EnvironmentSpec::named("dev"), Some(1), &Actor::system()).await;
    assert!(matches!(stale, Err(RecordsError::VersionConflict { current: 2, .. })), "{stale:?}");
    let stale_delete = store.delete_environment("dev", Some(1), &Actor::system()).await;
    assert!(matches!(stale_delete, Err(RecordsError::VersionConflict { .. })), "{stale_delete:?}");
    assert_eq!(store.get_environment("dev").await.unwrap(), updated);

    // Deletion is final (no tombstone) and announces the last state.
    let gone = store.delete_environment("dev", Some(2), &Actor::system()).await.unwrap();
    assert_eq!(gone, updated);
    assert!(matches!(store.get_environment("dev").await, Err(RecordsError::NotFound { .. })));
    let again =
        store.create_environment(EnvironmentSpec::named("dev"), &Actor::system()).await.unwrap();
    assert_eq!(again.resource_version, 1);

    let events = store.outbox_pending(100).await.unwrap();
    let deleted = events.iter().find(|e| e.event_type == "muster.environment.deleted").unwrap();
    assert_eq!(deleted.data["allow_namespace_deletion"], true);
    assert_eq!(
        outbox(&store).await,
        [
            ev("muster.environment.created", "dev", 1),
            ev("muster.environment.created", "prod", 1),
            ev("muster.environment.created", "test", 1),
            ev("muster.environment.created", "staging", 1),
            ev("muster.environment.updated", "dev", 2),
            ev("muster.environment.deleted", "dev", 2),
            ev("muster.environment.created", "dev", 1),
        ]
    );
}

pub async fn namespace_records_upsert_list_and_state(store: Store) {
    for slug in ["alpha", "beta"] {
        store.create_team(team(slug), &Actor::system()).await.unwrap();
    }
    let events_before = outbox(&store).await.len();

    let created = store.upsert_namespace(namespace("alpha", "dev")).await.unwrap();
    assert_eq!(created.name, "alpha-dev");
    assert_eq!(created.state, NamespaceState::Active);
    assert_eq!(created.resource_version, 1);
    store.upsert_namespace(namespace("alpha", "prod")).await.unwrap();
    store.upsert_namespace(namespace("beta", "dev")).await.unwrap();

    // An upsert that changes nothing keeps the version.
    let same = store.upsert_namespace(namespace("alpha", "dev")).await.unwrap();
    assert_eq!(same, created);
    let mut bigger = namespace("alpha", "dev");
    bigger.quota.insert("requests.cpu".into(), "8".into());
    let changed = store.upsert_namespace(bigger.clone()).await.unwrap();
    assert_eq!(changed.resource_version, 2);
    assert_eq!(changed.spec, bigger);
    assert_eq!(store.get_namespace("alpha", "dev").await.unwrap(), changed);

    let names = |records: Vec<workflows::records::NamespaceRecord>| {
        records.into_iter().map(|r| r.name).collect::<Vec<_>>()
    };
    let by_env = NamespaceFilter { environment: Some("dev".into()), ..Default::default() };
    assert_eq!(names(store.list_namespaces(&by_env).await.unwrap()), ["alpha-dev", "beta-dev"]);
    let by_team = NamespaceFilter { team: Some("alpha".into()), ..Default::default() };
    assert_eq!(names(store.list_namespaces(&by_team).await.unwrap()), ["alpha-dev", "alpha-prod"]);
    let both =
        NamespaceFilter { team: Some("beta".into()), environment: Some("dev".into()), state: None };
    assert_eq!(names(store.list_namespaces(&both).await.unwrap()), ["beta-dev"]);

    let deleting =
        store.set_namespace_state("alpha", "prod", NamespaceState::Deleting).await.unwrap();
    assert_eq!((deleting.state, deleting.resource_version), (NamespaceState::Deleting, 2));
    let unchanged =
        store.set_namespace_state("alpha", "prod", NamespaceState::Deleting).await.unwrap();
    assert_eq!(unchanged, deleting, "setting the same state is a no-op");
    let by_state = NamespaceFilter { state: Some(NamespaceState::Deleting), ..Default::default() };
    assert_eq!(names(store.list_namespaces(&by_state).await.unwrap()), ["alpha-prod"]);
    let active_dev = NamespaceFilter {
        environment: Some("dev".into()),
        state: Some(NamespaceState::Active),
        team: None,
    };
    assert_eq!(names(store.list_namespaces(&active_dev).await.unwrap()).len(), 2);

    let report = ClusterStatus {
        outcome: ClusterOutcome::Retained,
        message: Some("environment does not allow deletion".into()),
        observed_version: Some(2),
        object_version: Some("4711".into()),
        reported_at: Utc::now(),
    };
    let reported =
        store.set_cluster_status("alpha", "prod", "prod-eu-1", report.clone()).await.unwrap();
    // A report is status: the version and `updated_at` stay.
    assert_eq!(reported.resource_version, 2);
    let before = store.get_namespace("alpha", "prod").await.unwrap();
    assert_eq!(reported.updated_at, before.updated_at);
    assert_eq!(reported.clusters["prod-eu-1"], report);
    let applied = ClusterStatus {
        outcome: ClusterOutcome::Applied,
        message: None,
        observed_version: Some(2),
        object_version: None,
        reported_at: Utc::now(),
    };
    let two = store.set_cluster_status("alpha", "prod", "prod-us-1", applied).await.unwrap();
    assert_eq!(two.clusters.len(), 2);

    // Upserting again revives the record and keeps the cluster reports.
    let revived = store.upsert_namespace(namespace("alpha", "prod")).await.unwrap();
    assert_eq!(revived.state, NamespaceState::Active);
    assert_eq!(revived.resource_version, 3);
    assert_eq!(revived.clusters, two.clusters);
    assert_eq!(revived.created_at, store.get_namespace("alpha", "prod").await.unwrap().created_at);

    assert!(store.delete_namespace("alpha", "prod").await.unwrap());
    assert!(!store.delete_namespace("alpha", "prod").await.unwrap());
    assert_eq!(names(store.list_namespaces(&by_team).await.unwrap()), ["alpha-dev"]);

    assert_eq!(
        outbox(&store).await.len(),
        events_before,
        "namespace records are not announced through the outbox"
    );
}

pub async fn namespace_name_collisions_are_refused(store: Store) {
    store.create_team(team("a-b"), &Actor::system()).await.unwrap();
    store.create_team(team("a"), &Actor::system()).await.unwrap();
    store.upsert_namespace(namespace("a-b", "c")).await.unwrap();
    match store.upsert_namespace(namespace("a", "b-c")).await {
        Err(RecordsError::AlreadyExists { kind: RecordKind::Namespace, key }) => {
            assert_eq!(key, "a-b-c")
        }
        other => panic!("expected AlreadyExists namespace, got {other:?}"),
    }
    assert!(matches!(store.get_namespace("a", "b-c").await, Err(RecordsError::NotFound { .. })));
    // Once the first record is gone, the name is free.
    assert!(store.delete_namespace("a-b", "c").await.unwrap());
    let second = store.upsert_namespace(namespace("a", "b-c")).await.unwrap();
    assert_eq!(second.name, "a-b-c");
    // Ordered by team, then environment: `a` before `a-b`.
    store.upsert_namespace(namespace("a-b", "dev")).await.unwrap();
    let all = store.list_namespaces(&NamespaceFilter::default()).await.unwrap();
    let keys: Vec<_> =
        all.iter().map(|r| (r.spec.team.as_str(), r.spec.environment.as_str())).collect();
    assert_eq!(keys, [("a", "b-c"), ("a-b", "dev")]);
}

pub async fn outbox_follows_every_change_in_order(store: Store) {
    assert!(store.outbox_pending(10).await.unwrap().is_empty());
    store.create_team(team("alpha"), &Actor::system()).await.unwrap();
    assert_eq!(outbox(&store).await.len(), 1, "the event is there as soon as the change");
    store.create_environment(EnvironmentSpec::named("dev"), &Actor::system()).await.unwrap();
    store.update_team(team("alpha"), Some(1), &Actor::system()).await.unwrap();
    store.create_team(team("beta"), &Actor::system()).await.unwrap();
    store.delete_team("alpha", None, &Actor::system()).await.unwrap();

    let events = store.outbox_pending(100).await.unwrap();
    let expected = [
        ev("muster.team.created", "alpha", 1),
        ev("muster.environment.created", "dev", 1),
        ev("muster.team.updated", "alpha", 2),
        ev("muster.team.created", "beta", 1),
        ev("muster.team.deleted", "alpha", 3),
    ];
    assert_eq!(outbox(&store).await, expected);
    let mut ids: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "event ids are unique");
    // The data is the record as stored by that change.
    assert_eq!(events[2].data["slug"], "alpha");
    assert!(events[4].data["deleted_at"].is_string());
    assert_eq!(events[1].data["name"], "dev");

    // A bounded read returns the oldest.
    let first_two = store.outbox_pending(2).await.unwrap();
    assert_eq!(first_two, events[..2]);

    let remove: Vec<String> = first_two.iter().map(|e| e.id.clone()).collect();
    store.outbox_remove(&remove).await.unwrap();
    assert_eq!(outbox(&store).await, expected[2..]);
    // Removing again, or unknown ids, is harmless.
    store.outbox_remove(&[remove[0].clone(), "no-such-id".into()]).await.unwrap();
    store.outbox_remove(&[]).await.unwrap();
    assert_eq!(outbox(&store).await, expected[2..]);
    // Removal by id, not by position.
    store.outbox_remove(&[events[3].id.clone()]).await.unwrap();
    assert_eq!(outbox(&store).await, [expected[2].clone(), expected[4].clone()]);
    // New changes queue behind what is pending.
    store.create_team(team("gamma"), &Actor::system()).await.unwrap();
    assert_eq!(outbox(&store).await.last().unwrap(), &ev("muster.team.created", "gamma", 1));
}

pub async fn outbox_events_name_who_made_each_change(store: Store) {
    let root = Actor::new("user", "root");
    let bob = Actor::new("user", "bob");
    let anonymous = Actor::new("unauthenticated", "anonymous");
    store.create_environment(EnvironmentSpec::named("dev"), &root).await.unwrap();
    store.update_environment(EnvironmentSpec::named("dev"), Some(1), &anonymous).await.unwrap();
    store.create_team(team("payments"), &root).await.unwrap();
    store.update_team(team("payments"), Some(1), &bob).await.unwrap();
    store.delete_team("payments", None, &Actor::system()).await.unwrap();
    store.delete_environment("dev", None, &bob).await.unwrap();

    let actors: Vec<_> = store
        .outbox_pending(100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event_type, e.actor))
        .collect();
    let by = |event_type: &str, actor: &Actor| (event_type.to_owned(), Some(actor.clone()));
    assert_eq!(
        actors,
        [
            by("muster.environment.created", &root),
            by("muster.environment.updated", &anonymous),
            by("muster.team.created", &root),
            by("muster.team.updated", &bob),
            by("muster.team.deleted", &Actor::system()),
            by("muster.environment.deleted", &bob),
        ]
    );
}

pub async fn invalid_records_write_nothing(store: Store) {
    let mut bad = team("Bad Slug");
    bad.members = vec!["ok".into(), "-bad".into()];
    match store.create_team(bad, &Actor::system()).await {
        Err(RecordsError::Invalid { kind: RecordKind::Team, errors }) => {
            let text = errors.to_string();
            assert!(text.contains("slug: \"Bad Slug\" is not a DNS-1123 label"), "{text}");
            assert!(text.contains("members[1]: \"-bad\" is not a valid GitHub login"), "{text}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }

    store.create_team(team("payments"), &Actor::system()).await.unwrap();
    store.create_environment(EnvironmentSpec::named("dev"), &Actor::system()).await.unwrap();
    let before = outbox(&store).await;

    let mut bad_update = team("payments");
    bad_update.maintainers.push("alice".into()); // also a member
    let update = store.update_team(bad_update, Some(1), &Actor::system()).await;
    assert!(matches!(update, Err(RecordsError::Invalid { .. })), "{update:?}");
    assert_eq!(store.get_team("payments").await.unwrap().resource_version, 1);

    let mut bad_env = EnvironmentSpec::named("dev");
    bad_env.default_quota.insert("cpu".into(), "lots".into());
    let env = store.update_environment(bad_env.clone(), None, &Actor::system()).await;
    assert!(matches!(env, Err(RecordsError::Invalid { .. })), "{env:?}");
    bad_env.name = "qa".into();
    assert!(matches!(
        store.create_environment(bad_env, &Actor::system()).await,
        Err(RecordsError::Invalid { .. })
    ));
    assert!(matches!(store.get_environment("qa").await, Err(RecordsError::NotFound { .. })));

    // `payments-` + a 55-character environment name is longer than a namespace name may be.
    let long_env = "e".repeat(55);
    let long = store.upsert_namespace(namespace("payments", &long_env)).await;
    match long {
        Err(RecordsError::Invalid { errors, .. }) => {
            assert_eq!(errors.errors()[0].path, "name")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    store.upsert_namespace(namespace("payments", "dev")).await.unwrap();
    let bad_status = ClusterStatus {
        outcome: ClusterOutcome::Failed,
        message: None,
        observed_version: None,
        object_version: None,
        reported_at: Utc::now(),
    };
    let status = store.set_cluster_status("payments", "dev", "Not A Cluster", bad_status).await;
    assert!(matches!(status, Err(RecordsError::Invalid { .. })), "{status:?}");
    let record = store.get_namespace("payments", "dev").await.unwrap();
    assert_eq!(record.resource_version, 1);
    assert!(record.clusters.is_empty());

    assert_eq!(store.list_teams(None, 10).await.unwrap().items.len(), 1);
    assert_eq!(store.list_environments(None, 10).await.unwrap().items.len(), 1);
    assert_eq!(outbox(&store).await, before);
}

pub async fn concurrent_writers_are_serialised(store: Store) {
    const WRITERS: u64 = 8;
    // Racing creates of one slug: exactly one wins.
    let mut creates = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let store = Arc::clone(&store);
        creates.spawn(async move {
            store.create_team(team("payments"), &Actor::system()).await.is_ok()
        });
    }
    let won = creates.join_all().await.into_iter().filter(|ok| *ok).count();
    assert_eq!(won, 1);

    // Racing updates without expected versions: each gets its own version and event.
    let mut updates = tokio::task::JoinSet::new();
    for i in 0..WRITERS {
        let store = Arc::clone(&store);
        updates.spawn(async move {
            let mut spec = team("payments");
            spec.description = format!("writer {i}");
            store.update_team(spec, None, &Actor::system()).await.unwrap().resource_version
        });
    }
    let mut versions = updates.join_all().await;
    versions.sort_unstable();
    assert_eq!(versions, (2..=WRITERS + 1).collect::<Vec<_>>());
    let seen: Vec<u64> = outbox(&store).await.into_iter().map(|(_, _, v)| v).collect();
    assert_eq!(seen, (1..=WRITERS + 1).collect::<Vec<_>>(), "events in version order");

    // Racing upserts of one new namespace record, each a different quota: all apply in turn.
    let mut upserts = tokio::task::JoinSet::new();
    for i in 0..WRITERS {
        let store = Arc::clone(&store);
        upserts.spawn(async move {
            let mut spec = namespace("payments", "dev");
            spec.quota.insert("requests.cpu".into(), (i + 1).to_string());
            store.upsert_namespace(spec).await.unwrap().resource_version
        });
    }
    let mut versions = upserts.join_all().await;
    versions.sort_unstable();
    assert_eq!(versions, (1..=WRITERS).collect::<Vec<_>>());
}

pub async fn team_status_is_not_a_change(store: Store) {
    let created = store.create_team(team("payments"), &Actor::system()).await.unwrap();
    assert!(created.status.is_empty());
    let events = outbox(&store).await;

    let linked = TeamStatus {
        github: Some(GitHubLink { id: 42, slug: "team-payments".into() }),
        last_sync: None,
        problems: vec![SyncProblem {
            kind: SyncProblemKind::LoginRefused,
            login: Some("ghost".into()),
            message: "GitHub has no user \"ghost\"".into(),
        }],
    };
    let stored = store.set_team_status("payments", linked.clone()).await.unwrap();
    assert_eq!(stored.status, linked);
    assert_eq!(stored.resource_version, 1, "status does not bump the version");
    assert_eq!(stored.updated_at, created.updated_at);
    assert_eq!(store.get_team("payments").await.unwrap(), stored);
    assert_eq!(outbox(&store).await, events, "status is not announced");

    // A spec update keeps the status; an expected version still matches after a status write.
    let mut spec = team("payments");
    spec.description = "renamed".into();
    let updated = store.update_team(spec, Some(1), &Actor::system()).await.unwrap();
    assert_eq!(updated.status, linked);

    // Replaced whole, also on a tombstone (a teardown records its progress).
    store.delete_team("payments", None, &Actor::system()).await.unwrap();
    let synced = TeamStatus {
        github: None,
        last_sync: Some(SyncMark {
            run_id: "sync_team-1".into(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
        }),
        problems: Vec::new(),
    };
    let tombstone = store.set_team_status("payments", synced.clone()).await.unwrap();
    assert!(tombstone.is_deleted());
    assert_eq!(tombstone.status, synced);
    assert_eq!(tombstone.resource_version, 3);
    assert_eq!(outbox(&store).await.len(), events.len() + 2, "update and delete only");

    let missing = store.set_team_status("ghost", TeamStatus::default()).await;
    assert!(matches!(missing, Err(RecordsError::NotFound { .. })), "{missing:?}");
}
