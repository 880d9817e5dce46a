//! Schemas of the OpenAPI document for types that live in other crates (`workflows` stays free
//! of HTTP concerns; the journal belongs to the runtime). Each mirrors the JSON its type
//! serialises to; the tests below fail when a field is added to one and not the other.

#![allow(dead_code)] // the fields exist for the schema derive

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A new team as a client sends it (`POST /v1/teams`). `members` and `maintainers` may be
/// left out (a new team has nobody to remove); `maintainers` must list at least
/// `github.min-maintainers` logins (default 1).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TeamSpec)]
pub struct TeamSpecDoc {
    /// DNS-1123 label of at most 63 characters; the team's key.
    #[schema(
        example = "payments",
        pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        max_length = 63
    )]
    slug: String,
    #[schema(example = "Payments")]
    name: String,
    #[serde(default)]
    description: String,
    /// GitHub logins with the member role.
    #[serde(default)]
    #[schema(value_type = Vec<GithubLogin>)]
    members: Vec<String>,
    /// GitHub logins with the maintainer role (disjoint from members); at least
    /// `github.min-maintainers` (default 1).
    #[serde(default)]
    #[schema(value_type = Vec<GithubLogin>)]
    maintainers: Vec<String>,
    /// Slug of the parent team.
    #[serde(default)]
    #[schema(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", max_length = 63)]
    parent: Option<String>,
    /// The GitHub team's visibility; `closed` when left out. A secret team cannot have a
    /// parent (GitHub nests closed teams only).
    #[serde(default)]
    privacy: TeamPrivacyDoc,
    #[serde(default)]
    #[schema(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", max_length = 63)]
    quota_profile: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// A team's full replacement (`PUT /v1/teams/{slug}`): as a new team, but `members` and
/// `maintainers` are required, since leaving them out would remove everyone. `[]` empties a
/// list.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TeamReplacement)]
pub struct TeamReplacementDoc {
    /// The path's slug: a team's slug cannot change.
    #[schema(
        example = "payments",
        pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        max_length = 63
    )]
    slug: String,
    #[schema(example = "Payments")]
    name: String,
    #[serde(default)]
    description: String,
    /// GitHub logins with the member role; required (`[]` for none).
    #[schema(value_type = Vec<GithubLogin>)]
    members: Vec<String>,
    /// GitHub logins with the maintainer role (disjoint from members); required, at least
    /// `github.min-maintainers` (default 1).
    #[schema(value_type = Vec<GithubLogin>)]
    maintainers: Vec<String>,
    /// Slug of the parent team.
    #[serde(default)]
    #[schema(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", max_length = 63)]
    parent: Option<String>,
    /// The GitHub team's visibility; `closed` when left out. A secret team cannot have a
    /// parent (GitHub nests closed teams only).
    #[serde(default)]
    privacy: TeamPrivacyDoc,
    #[serde(default)]
    #[schema(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", max_length = 63)]
    quota_profile: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// A GitHub team's visibility: `closed`, seen by the whole organization, or `secret`, seen by
/// its members and the organization's owners.
#[derive(Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = TeamPrivacy)]
pub enum TeamPrivacyDoc {
    #[default]
    Closed,
    Secret,
}

/// A GitHub login (at most 39 characters), or an Enterprise Managed User's
/// `<handle>_<shortcode>`.
#[derive(ToSchema)]
#[schema(pattern = r"^[A-Za-z0-9](-?[A-Za-z0-9]){0,38}(_[A-Za-z0-9]{1,8})?$", example = "octocat")]
pub struct GithubLogin(String);

/// A JSON Merge Patch (RFC 7396) of a team: fields present replace, fields left out stay,
/// `null` removes an optional field. `slug` cannot change. `members` and `maintainers` cannot
/// be `null` (that would remove everyone): send `[]` to empty one.
#[derive(Deserialize, ToSchema)]
#[schema(as = TeamPatch)]
pub struct TeamPatchDoc {
    #[serde(default)]
    slug: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    /// Replaces the member list; not null.
    #[serde(default)]
    #[schema(value_type = Vec<GithubLogin>)]
    members: Vec<String>,
    /// Replaces the maintainer list (at least `github.min-maintainers`); not null.
    #[serde(default)]
    #[schema(value_type = Vec<GithubLogin>)]
    maintainers: Vec<String>,
    #[serde(default)]
    parent: Option<String>,
    /// `closed` or `secret`; `null` sets the default, `closed`.
    #[serde(default)]
    privacy: Option<TeamPrivacyDoc>,
    #[serde(default)]
    quota_profile: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// A stored team. `deleted_at` is set on a tombstone awaiting its teardown.
#[derive(Serialize, ToSchema)]
#[schema(as = Team)]
pub struct TeamDoc {
    slug: String,
    name: String,
    description: String,
    members: Vec<String>,
    maintainers: Vec<String>,
    #[serde(default)]
    parent: Option<String>,
    privacy: TeamPrivacyDoc,
    #[serde(default)]
    quota_profile: Option<String>,
    labels: BTreeMap<String, String>,
    /// Grows by one with every change; also the ETag.
    resource_version: u64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[serde(default)]
    deleted_at: Option<DateTime<Utc>>,
    /// What `sync_team` last observed and did; absent before the first sync.
    #[serde(default)]
    status: Option<TeamStatusDoc>,
}

/// What `sync_team` records on a team.
#[derive(Serialize, ToSchema)]
#[schema(as = TeamStatus)]
pub struct TeamStatusDoc {
    /// The GitHub team it manages, once a sync created or adopted it (the id survives renames).
    #[serde(default)]
    github: Option<GitHubLinkDoc>,
    /// The last sync that finished.
    #[serde(default)]
    last_sync: Option<SyncMarkDoc>,
    /// What the last sync left undone, and why; empty (absent) when it did everything.
    #[serde(default)]
    problems: Vec<SyncProblemDoc>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = GitHubLink)]
pub struct GitHubLinkDoc {
    id: u64,
    slug: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = SyncMark)]
pub struct SyncMarkDoc {
    run_id: String,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
}

/// Something a sync left undone.
#[derive(Serialize, ToSchema)]
#[schema(as = SyncProblem)]
pub struct SyncProblemDoc {
    kind: SyncProblemKindDoc,
    /// The login concerned, for `login_refused` and `login_held`.
    #[serde(default)]
    login: Option<String>,
    message: String,
}

/// `unmanaged_github_team`: a GitHub team with the slug exists and waits for an explicit
/// adoption; `login_refused`: GitHub refused that login (unknown, renamed); `login_held`: not
/// added (expired invitation, or not an organization member with invitations off);
/// `managed_child_teams`: the deletion waits for child teams Muster still manages.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = SyncProblemKind)]
pub enum SyncProblemKindDoc {
    UnmanagedGithubTeam,
    LoginRefused,
    LoginHeld,
    ManagedChildTeams,
}

/// One page of teams, in slug order.
#[derive(Serialize, ToSchema)]
#[schema(as = TeamPage)]
pub struct TeamPageDoc {
    items: Vec<TeamDoc>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default)]
    next_cursor: Option<String>,
}

/// An environment as a client sends it; only `name` is required.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EnvironmentSpec)]
pub struct EnvironmentSpecDoc {
    #[schema(example = "dev", pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", max_length = 63)]
    name: String,
    /// Cluster names (DNS-1123 labels).
    #[serde(default)]
    clusters: Vec<String>,
    /// ResourceQuota `hard`, e.g. `{"requests.cpu": "4"}`.
    #[serde(default)]
    default_quota: BTreeMap<String, String>,
    /// LimitRange default container limits, e.g. `{"memory": "512Mi"}`.
    #[serde(default)]
    default_limits: BTreeMap<String, String>,
    #[serde(default)]
    allow_namespace_deletion: bool,
    /// Named overrides of the defaults that a team picks with `quota_profile`.
    #[serde(default)]
    quota_profiles: BTreeMap<String, QuotaProfileDoc>,
    /// Every team namespace gets a NetworkPolicy admitting only same-namespace ingress.
    #[serde(default)]
    network_policy: bool,
}

/// A quota profile: entries overriding the environment's defaults key by key.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = QuotaProfile)]
pub struct QuotaProfileDoc {
    #[serde(default)]
    quota: BTreeMap<String, String>,
    #[serde(default)]
    limits: BTreeMap<String, String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Environment)]
pub struct EnvironmentDoc {
    name: String,
    clusters: Vec<String>,
    default_quota: BTreeMap<String, String>,
    default_limits: BTreeMap<String, String>,
    allow_namespace_deletion: bool,
    quota_profiles: BTreeMap<String, QuotaProfileDoc>,
    network_policy: bool,
    resource_version: u64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = EnvironmentPage)]
pub struct EnvironmentPageDoc {
    items: Vec<EnvironmentDoc>,
    #[serde(default)]
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = RoleBinding)]
pub struct RoleBindingDoc {
    group: String,
    role: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = NamespaceState)]
pub enum NamespaceStateDoc {
    Active,
    Deleting,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ClusterOutcome)]
pub enum ClusterOutcomeDoc {
    Applied,
    Deleted,
    Retained,
    Orphaned,
    Conflict,
    Failed,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ClusterStatus)]
pub struct ClusterStatusDoc {
    outcome: ClusterOutcomeDoc,
    #[serde(default)]
    message: Option<String>,
    /// The record's resource version the agent acted on.
    #[serde(default)]
    observed_version: Option<u64>,
    /// The namespace's Kubernetes `resourceVersion` after the agent acted.
    #[serde(default)]
    object_version: Option<String>,
    reported_at: DateTime<Utc>,
}

/// A team's namespace in one environment, as the agents read it.
#[derive(Serialize, ToSchema)]
#[schema(as = NamespaceRecord)]
pub struct NamespaceDoc {
    team: String,
    environment: String,
    quota: BTreeMap<String, String>,
    limits: BTreeMap<String, String>,
    role_bindings: Vec<RoleBindingDoc>,
    /// The team's quota profile, when it picked one.
    #[serde(default)]
    quota_profile: Option<String>,
    /// The team's labels, carried onto the namespace.
    labels: BTreeMap<String, String>,
    /// The clusters expected to report on this namespace.
    target_clusters: Vec<String>,
    /// Whether the agents may delete the namespace once the record is `deleting`.
    allow_deletion: bool,
    /// Whether the namespace gets Muster's default NetworkPolicy.
    network_policy: bool,
    /// `<team>-<environment>`.
    name: String,
    state: NamespaceStateDoc,
    /// Cluster name → its agent's last report.
    clusters: BTreeMap<String, ClusterStatusDoc>,
    /// Clusters in `target_clusters` that have not reported yet.
    never_reported: Vec<String>,
    resource_version: u64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = NamespaceList)]
pub struct NamespaceListDoc {
    items: Vec<NamespaceDoc>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RunStatus)]
pub enum RunStatusDoc {
    Running,
    Retrying,
    Succeeded,
    Failed,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ErrorRecord)]
pub struct ErrorRecordDoc {
    kind: String,
    message: String,
}

/// The event that triggered a run.
#[derive(Serialize, ToSchema)]
#[schema(as = TriggerRecord)]
pub struct TriggerDoc {
    /// The CloudEvent in structured JSON form.
    event: serde_json::Value,
    nats_subject: String,
    stream_sequence: u64,
}

#[derive(Serialize, ToSchema)]
#[schema(as = AttemptRecord)]
pub struct AttemptDoc {
    attempt: u32,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    outcome: Option<RunStatusDoc>,
    error: Option<ErrorRecordDoc>,
    retry_delay_ms: Option<u64>,
}

/// A run as journaled.
#[derive(Serialize, ToSchema)]
#[schema(as = Run)]
pub struct RunDoc {
    id: String,
    workflow: String,
    key: String,
    status: RunStatusDoc,
    attempts: u32,
    /// Throttled deliveries (rate limits), not counted as attempts.
    throttled: u32,
    redrives: u32,
    trigger: TriggerDoc,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    output: Option<serde_json::Value>,
    error: Option<ErrorRecordDoc>,
    dlq_sequence: Option<u64>,
    history: Vec<AttemptDoc>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = StepStatus)]
pub enum StepStatusDoc {
    Running,
    Succeeded,
    Failed,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Step)]
pub struct StepDoc {
    run_id: String,
    index: u32,
    name: String,
    status: StepStatusDoc,
    attempts: u32,
    output: Option<serde_json::Value>,
    error: Option<ErrorRecordDoc>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    duration_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = RunList)]
pub struct RunListDoc {
    items: Vec<RunDoc>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default)]
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = RunDetail)]
pub struct RunDetailDoc {
    run: RunDoc,
    steps: Vec<StepDoc>,
}

/// A dead letter.
#[derive(Serialize, ToSchema)]
#[schema(as = DlqEntry)]
pub struct DlqEntryDoc {
    seq: u64,
    workflow: String,
    run_id: Option<String>,
    key: Option<String>,
    kind: String,
    reason: String,
    original_subject: String,
    original_sequence: Option<u64>,
    attempts: Option<u32>,
    failed_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = DlqList)]
pub struct DlqListDoc {
    items: Vec<DlqEntryDoc>,
}

/// What JetStream answered to a publish.
#[derive(Serialize, ToSchema)]
#[schema(as = Published)]
pub struct PublishedDoc {
    stream: String,
    sequence: u64,
    /// JetStream already had this message (same `Nats-Msg-Id` inside the duplicate window).
    duplicate: bool,
    subject: String,
}

/// A CloudEvent in structured mode (`application/cloudevents+json`). Extension attributes are
/// further top-level members.
#[derive(Deserialize, ToSchema)]
#[schema(as = CloudEvent)]
pub struct CloudEventDoc {
    #[schema(example = "1.0")]
    specversion: String,
    id: String,
    source: String,
    /// Dot-separated tokens, e.g. `muster.ping`.
    #[serde(rename = "type")]
    #[schema(example = "muster.ping")]
    ty: String,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    time: Option<DateTime<Utc>>,
    #[serde(default)]
    datacontenttype: Option<String>,
    #[serde(default)]
    dataschema: Option<String>,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    data_base64: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use utoipa::PartialSchema;

    fn properties<T: PartialSchema>() -> BTreeSet<String> {
        let schema = serde_json::to_value(T::schema()).unwrap();
        schema["properties"].as_object().unwrap().keys().cloned().collect()
    }

    fn keys(value: &impl Serialize) -> BTreeSet<String> {
        serde_json::to_value(value).unwrap().as_object().unwrap().keys().cloned().collect()
    }

    fn required<T: PartialSchema>() -> BTreeSet<String> {
        let schema = serde_json::to_value(T::schema()).unwrap();
        let list = schema["required"].as_array().cloned().unwrap_or_default();
        list.iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    }

    /// Leaving the member lists out of a replacement would empty the team, so the document
    /// says they are required there, and not nullable in a merge patch.
    #[test]
    fn member_lists_are_required_on_replace_and_not_null_in_a_patch() {
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        assert_eq!(required::<TeamSpecDoc>(), set(&["slug", "name"]));
        assert_eq!(
            required::<TeamReplacementDoc>(),
            set(&["slug", "name", "members", "maintainers"])
        );
        assert_eq!(required::<TeamPatchDoc>(), set(&[]));
        let patch = serde_json::to_value(TeamPatchDoc::schema()).unwrap();
        for list in ["members", "maintainers"] {
            let property = &patch["properties"][list];
            assert_eq!(property["type"], "array", "{list}: {property}");
        }
    }

    #[test]
    fn schemas_list_exactly_the_serialised_fields() {
        use workflows::records::*;
        let now = Utc::now();
        let mut spec: TeamSpec = serde_json::from_str(r#"{"slug":"a","name":"A"}"#).unwrap();
        spec.parent = Some("p".into());
        spec.quota_profile = Some("q".into());
        let status = TeamStatus {
            github: Some(GitHubLink { id: 1, slug: "a".into() }),
            last_sync: Some(SyncMark { run_id: "r".into(), started_at: now, finished_at: now }),
            problems: vec![SyncProblem {
                kind: SyncProblemKind::LoginHeld,
                login: Some("x".into()),
                message: "m".into(),
            }],
        };
        let team = Team::new(spec.clone(), now).tombstoned(now).with_status(status.clone());
        assert_eq!(properties::<TeamDoc>(), keys(&team));
        assert_eq!(properties::<TeamStatusDoc>(), keys(&status));
        assert_eq!(properties::<SyncProblemDoc>(), keys(&status.problems[0]));
        for kind in [
            SyncProblemKind::UnmanagedGitHubTeam,
            SyncProblemKind::LoginRefused,
            SyncProblemKind::LoginHeld,
            SyncProblemKind::ManagedChildTeams,
        ] {
            let doc = serde_json::to_value(SyncProblemKindDoc::schema()).unwrap();
            assert!(
                doc.to_string().contains(&format!(
                    "\"{}\"",
                    serde_json::to_value(kind).unwrap().as_str().unwrap()
                )),
                "{kind:?}"
            );
        }
        assert_eq!(properties::<TeamSpecDoc>(), keys(&spec));
        assert_eq!(properties::<TeamReplacementDoc>(), keys(&spec));
        assert_eq!(properties::<TeamPatchDoc>(), keys(&spec));
        let env = Environment::new(EnvironmentSpec::named("dev"), now);
        assert_eq!(properties::<EnvironmentDoc>(), keys(&env));
        assert_eq!(properties::<EnvironmentSpecDoc>(), keys(&env.spec));
        let ns = NamespaceRecord::new(
            NamespaceSpec {
                team: "a".into(),
                environment: "dev".into(),
                quota: Quantities::new(),
                limits: Quantities::new(),
                role_bindings: Vec::new(),
                quota_profile: Some("large".into()),
                labels: BTreeMap::new(),
                target_clusters: vec!["dev-1".into()],
                allow_deletion: false,
                network_policy: false,
            },
            now,
        );
        assert_eq!(
            properties::<NamespaceDoc>(),
            keys(&crate::api::environments::NamespaceView::new(&ns))
        );
        let status = ClusterStatus {
            outcome: ClusterOutcome::Applied,
            message: Some("m".into()),
            observed_version: Some(1),
            object_version: Some("7".into()),
            reported_at: now,
        };
        assert_eq!(properties::<ClusterStatusDoc>(), keys(&status));

        use crate::journal::*;
        let trigger = TriggerRecord {
            event: serde_json::json!({}),
            nats_subject: "s".into(),
            stream_sequence: 1,
        };
        let run = RunRecord {
            status: RunStatus::Failed,
            attempts: 1,
            history: vec![AttemptRecord {
                attempt: 1,
                started_at: now,
                finished_at: None,
                outcome: None,
                error: None,
                retry_delay_ms: None,
            }],
            ..RunRecord::new("r", "w", "k", trigger, now)
        };
        assert_eq!(properties::<RunDoc>(), keys(&run));
        assert_eq!(properties::<TriggerDoc>(), keys(&run.trigger));
        assert_eq!(properties::<AttemptDoc>(), keys(&run.history[0]));
        let step = StepRecord {
            run_id: "r".into(),
            index: 0,
            name: "n".into(),
            status: StepStatus::Running,
            attempts: 1,
            output: None,
            error: None,
            started_at: now,
            finished_at: None,
            duration_ms: None,
        };
        assert_eq!(properties::<StepDoc>(), keys(&step));
        let dlq = crate::runtime::dlq::DlqEntry {
            seq: 1,
            workflow: "w".into(),
            run_id: None,
            key: None,
            kind: "k".into(),
            reason: "r".into(),
            original_subject: "s".into(),
            original_sequence: None,
            attempts: None,
            failed_at: None,
        };
        assert_eq!(properties::<DlqEntryDoc>(), keys(&dlq));
        let published = crate::bus::Published {
            stream: "S".into(),
            sequence: 1,
            duplicate: false,
            subject: "s".into(),
        };
        assert_eq!(properties::<PublishedDoc>(), keys(&published));
    }
}
