//! The in-process decision point: Rego compiled once by regorus, evaluated on a clone of the
//! compiled engine per decision; and a runner for the policies' `test_*` rules.

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use regorus::unstable::{Parser, Rule, RuleHead};
use regorus::{Engine, Value};
use serde::Serialize;

use super::{Authorizer, Decision, Input, PolicyData};

const ALLOW: &str = "data.muster.authz.allow";
const REASONS: &str = "data.muster.authz.reasons";

/// The shipped policy and its tests, as (name in messages, source).
const SHIPPED_POLICY: (&str, &str) =
    ("config/policies/authz.rego", include_str!("../../../config/policies/authz.rego"));
const SHIPPED_TESTS: (&str, &str) =
    ("config/policies/authz_test.rego", include_str!("../../../config/policies/authz_test.rego"));

/// Files named `*_test.rego` hold tests: loaded by [`run_tests`], never for decisions.
const TEST_SUFFIX: &str = "_test.rego";

/// Where the Rego comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// `config/policies/` as built into the binary.
    Shipped,
    /// The `*.rego` files directly in a directory (not its subdirectories).
    Dir(PathBuf),
}

impl From<Option<PathBuf>> for PolicySource {
    /// A directory if given, else the shipped policies.
    fn from(dir: Option<PathBuf>) -> Self {
        dir.map_or(Self::Shipped, Self::Dir)
    }
}

impl fmt::Display for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shipped => f.write_str("the shipped policies"),
            Self::Dir(dir) => write!(f, "{}", dir.display()),
        }
    }
}

impl PolicySource {
    /// The Rego files as (path, source), sorted by path; the tests too if `with_tests`.
    fn files(&self, with_tests: bool) -> Result<Vec<(String, String)>, PolicyError> {
        let dir = match self {
            Self::Shipped => {
                let mut files = vec![SHIPPED_POLICY];
                if with_tests {
                    files.push(SHIPPED_TESTS);
                }
                return Ok(files.into_iter().map(|(p, s)| (p.to_owned(), s.to_owned())).collect());
            }
            Self::Dir(dir) => dir,
        };
        let read_error = |source| PolicyError::Read { path: dir.clone(), source };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_error)? {
            let path = entry.map_err(read_error)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if path.is_file()
                && name.ends_with(".rego")
                && (with_tests || !name.ends_with(TEST_SUFFIX))
            {
                paths.push(path);
            }
        }
        paths.sort();
        if paths.iter().all(|p| p.to_string_lossy().ends_with(TEST_SUFFIX)) {
            return Err(PolicyError::NoPolicies(dir.clone()));
        }
        paths
            .into_iter()
            .map(|path| match std::fs::read_to_string(&path) {
                Ok(source) => Ok((path.display().to_string(), source)),
                Err(source) => Err(PolicyError::Read { path, source }),
            })
            .collect()
    }
}

/// Why policies cannot be loaded. All are startup errors.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policies from {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no *.rego policy files in {}", .0.display())]
    NoPolicies(PathBuf),
    /// `message` is regorus's: it names the file, line and column and shows the line.
    #[error("policy {file} does not parse:\n{message}")]
    Parse { file: String, message: String },
    /// The policies parse but cannot decide: no `allow`/`reasons` in `muster.authz`, or an error
    /// evaluating them on an empty request.
    #[error("policies from {origin} cannot decide:\n{message}")]
    Invalid { origin: String, message: String },
    #[error("policy data is not usable as data.config: {0}")]
    Data(String),
}

/// The in-process policy: `data.muster.authz` from Rego files, compiled at start.
///
/// Deciding is synchronous CPU work, done inline: clone the compiled engine, set the input,
/// evaluate `allow` and `reasons`.
#[derive(Clone)]
pub struct RegoPolicy {
    /// Policies and data loaded and prepared; cloned per decision so that decisions share
    /// nothing mutable.
    engine: Engine,
    origin: String,
}

impl fmt::Debug for RegoPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegoPolicy").field("origin", &self.origin).finish_non_exhaustive()
    }
}

impl RegoPolicy {
    /// The `*.rego` files directly in `dir`, except `*_test.rego`.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or does not parse (the error names the file and line), no
    /// policy files, or policies that cannot decide (see [`PolicyError::Invalid`]).
    pub fn from_dir(dir: &Path, data: &PolicyData) -> Result<Self, PolicyError> {
        Self::load(&PolicySource::Dir(dir.to_owned()), data)
    }

    /// The policy shipped in `config/policies/authz.rego`, built into the binary.
    ///
    /// # Errors
    ///
    /// Only if `data` cannot be given to the policy; the shipped policy's own tests keep it
    /// loadable.
    pub fn shipped(data: &PolicyData) -> Result<Self, PolicyError> {
        Self::load(&PolicySource::Shipped, data)
    }

    /// The policies from `source`, with `data` as `data.config`.
    ///
    /// # Errors
    ///
    /// As [`RegoPolicy::from_dir`].
    pub fn load(source: &PolicySource, data: &PolicyData) -> Result<Self, PolicyError> {
        let origin = source.to_string();
        let mut engine = load_engine(&source.files(false)?, data)?;
        // Prepare (analyse) the engine once, so that clones start prepared, and refuse at start
        // policies that cannot answer the two questions asked for every request.
        let probe = to_rego(&Input::default())
            .map_err(|message| PolicyError::Invalid { origin: origin.clone(), message })?;
        engine.set_input(probe);
        for rule in [ALLOW, REASONS] {
            if let Err(e) = engine.eval_rule(rule.to_owned()) {
                let message = format!("{rule}: {}", e.to_string().trim());
                return Err(PolicyError::Invalid { origin, message });
            }
        }
        Ok(Self { engine, origin })
    }

    /// The decision for `input`, or why there is none.
    fn evaluate(&self, input: &Input) -> Result<Decision, String> {
        let mut engine = self.engine.clone();
        engine.set_input(to_rego(input)?);
        let allow = match engine.eval_rule(ALLOW.to_owned()) {
            Ok(Value::Bool(allow)) => allow,
            Ok(Value::Undefined) => {
                return Err("policy did not decide (data.muster.authz.allow is undefined)".into());
            }
            Ok(other) => return Err(format!("{ALLOW} is {}, not a boolean", display(&other))),
            Err(e) => return Err(format!("policy evaluation failed: {}", e.to_string().trim())),
        };
        let reasons = match engine.eval_rule(REASONS.to_owned()) {
            Ok(reasons) => strings(&reasons).ok_or_else(|| {
                format!("{REASONS} is {}, not a set of strings", display(&reasons))
            })?,
            Err(e) => return Err(format!("policy evaluation failed: {}", e.to_string().trim())),
        };
        Ok(Decision { allow, reasons })
    }
}

#[async_trait]
impl Authorizer for RegoPolicy {
    async fn decide(&self, input: &Input) -> Decision {
        self.evaluate(input).unwrap_or_else(|reason| {
            tracing::warn!(action = %input.action, subject = %input.subject.id, %reason,
                "authorization denied: the policy failed to decide");
            Decision::deny(reason)
        })
    }

    fn describe(&self) -> String {
        format!("rego policy from {}", self.origin)
    }
}

/// One `test_*` rule's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestOutcome {
    /// The test's package, e.g. `muster.authz_test`.
    pub package: String,
    /// The rule, e.g. `test_read_open`.
    pub name: String,
    /// Whether the rule evaluated to exactly `true`.
    pub passed: bool,
    /// Why it did not: its value or evaluation error, and what it printed.
    pub error: Option<String>,
}

impl fmt::Display for TestOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.package, self.name)
    }
}

/// Runs every rule named `test_*` of every package in `source`'s policies and `*_test.rego`
/// files, with `data` as `data.config` and no input (as `opa test` does). A test passes iff it
/// evaluates to exactly `true`.
///
/// # Errors
///
/// The policies cannot be read or do not parse.
pub fn run_tests(
    source: &PolicySource,
    data: &PolicyData,
) -> Result<Vec<TestOutcome>, PolicyError> {
    let mut engine = load_engine(&source.files(true)?, data)?;
    engine.set_gather_prints(true);
    let tests = test_rules(&mut engine)?;
    Ok(tests
        .into_iter()
        .map(|(package, name)| {
            let mut engine = engine.clone();
            let result = engine.eval_rule(format!("data.{package}.{name}"));
            let prints = engine.take_prints().unwrap_or_default();
            let error = match result {
                Ok(Value::Bool(true)) => None,
                Ok(Value::Undefined) => {
                    Some("undefined: a statement of the test did not hold".to_owned())
                }
                Ok(other) => Some(format!("evaluated to {}, not true", display(&other))),
                Err(e) => Some(e.to_string().trim().to_owned()),
            };
            let error = error
                .map(|e| if prints.is_empty() { e } else { format!("{e}\n{}", prints.join("\n")) });
            TestOutcome { package, name, passed: error.is_none(), error }
        })
        .collect())
}

/// The rules named `test_*` as (package without `data.`, rule), in source order, once each.
///
/// regorus has no stable API to list rules; its parsed modules are public (if hidden) and this
/// module's tests catch a change.
fn test_rules(engine: &mut Engine) -> Result<Vec<(String, String)>, PolicyError> {
    let invalid = |e: anyhow::Error| PolicyError::Invalid {
        origin: "the test files".to_owned(),
        message: e.to_string(),
    };
    let packages = engine.get_packages().map_err(invalid)?;
    let mut tests = Vec::new();
    for (module, package) in engine.get_modules().iter().zip(packages) {
        let package = package.strip_prefix("data.").unwrap_or(&package).to_owned();
        for rule in &module.policy {
            let Rule::Spec { head: RuleHead::Compr { refr, .. }, .. } = rule.as_ref() else {
                continue;
            };
            let path = Parser::get_path_ref_components(refr).map_err(invalid)?;
            if let [name] = path.as_slice()
                && name.text().starts_with("test_")
            {
                let test = (package.clone(), name.text().to_owned());
                if !tests.contains(&test) {
                    tests.push(test);
                }
            }
        }
    }
    Ok(tests)
}

/// An engine with `files` parsed and `data` as `data.config`.
fn load_engine(files: &[(String, String)], data: &PolicyData) -> Result<Engine, PolicyError> {
    let mut engine = Engine::new();
    for (path, rego) in files {
        engine.add_policy(path.clone(), rego.clone()).map_err(|e| PolicyError::Parse {
            file: path.clone(),
            message: e.to_string().trim().to_owned(),
        })?;
    }
    let data = serde_json::to_value(data).map_err(|e| PolicyError::Data(e.to_string()))?;
    engine
        .add_data(Value::from(serde_json::json!({ "config": data })))
        .map_err(|e| PolicyError::Data(e.to_string()))?;
    Ok(engine)
}

fn to_rego(input: &Input) -> Result<Value, String> {
    serde_json::to_value(input)
        .map(Value::from)
        .map_err(|e| format!("cannot give the request to the policy: {e}"))
}

/// The strings of a set or array of strings (an undefined value has none).
fn strings(value: &Value) -> Option<Vec<String>> {
    let items: Vec<&Value> = match value {
        Value::Undefined => return Some(Vec::new()),
        Value::Set(set) => set.iter().collect(),
        Value::Array(array) => array.iter().collect(),
        _ => return None,
    };
    items.into_iter().map(|item| item.as_string().ok().map(|s| s.to_string())).collect()
}

fn display(value: &Value) -> String {
    value.to_json_str().unwrap_or_else(|_| format!("{value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{EventRef, NamespaceRef, Publisher, Resource, Subject};

    fn team_spec() -> serde_json::Value {
        serde_json::json!({
            "slug": "payments", "name": "Payments", "description": "Card payments",
            "members": ["alice", "bob"], "maintainers": ["alice"], "parent": "platform",
            "quota_profile": "standard", "labels": {}
        })
    }

    fn input(who: &str, groups: &[&str], action: &str) -> Input {
        Input {
            subject: Subject {
                id: who.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
            },
            action: action.into(),
            resource: Resource {
                kind: "team".into(),
                name: "payments".into(),
                team: Some("payments".into()),
                current: Some(team_spec()),
                ..Resource::default()
            },
            ..Input::default()
        }
    }

    fn update(who: &str, changes: &[&str]) -> Input {
        Input {
            changes: changes.iter().map(|c| c.to_string()).collect(),
            ..input(who, &[], "team.update")
        }
    }

    fn publish(who: &str, type_: &str, source: &str) -> Input {
        let mut input = input(who, &[], "event.publish");
        input.resource = Resource {
            kind: "event".into(),
            name: type_.into(),
            event: Some(EventRef { type_: type_.into(), source: source.into(), subject: None }),
            ..Resource::default()
        };
        input
    }

    fn data() -> PolicyData {
        PolicyData {
            publishers: vec![Publisher {
                subject: "billing-bot".into(),
                sources: vec!["/billing/*".into()],
                types: vec!["com.acme.billing.*".into()],
            }],
            ..PolicyData::default()
        }
    }

    fn decide(input: &Input) -> Decision {
        let policy = RegoPolicy::shipped(&data()).expect("the shipped policy loads");
        policy.evaluate(input).expect("the shipped policy decides")
    }

    fn write(dir: &Path, name: &str, rego: &str) {
        std::fs::write(dir.join(name), rego).expect("write policy");
    }

    #[test]
    fn shipped_tests_all_pass() {
        let outcomes = run_tests(&PolicySource::Shipped, &PolicyData::default()).unwrap();
        assert!(outcomes.len() >= 30, "found only {} tests", outcomes.len());
        let failed: Vec<_> = outcomes.iter().filter(|o| !o.passed).collect();
        assert!(failed.is_empty(), "failed: {failed:#?}");
        assert!(outcomes.iter().any(|o| o.to_string() == "muster.authz_test.test_read_open"));
    }

    #[test]
    fn test_runner_reports_false_undefined_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "authz.rego", "package muster.authz\nallow := true\nreasons := set()\n");
        write(
            dir.path(),
            "authz_test.rego",
            "package muster.authz_test\n\
             test_ok if data.muster.authz.allow\n\
             test_undefined if { print(\"looked at\", 1); 1 == 2 }\n\
             test_number := 5\n\
             test_error if { x := 1 / 0; x }\n",
        );
        let outcomes =
            run_tests(&PolicySource::Dir(dir.path().into()), &PolicyData::default()).unwrap();
        let by_name = |name: &str| outcomes.iter().find(|o| o.name == name).unwrap();
        assert_eq!(outcomes.len(), 4);
        assert!(by_name("test_ok").passed);
        let undefined = by_name("test_undefined").error.clone().unwrap();
        assert!(
            undefined.starts_with("undefined") && undefined.contains("looked at 1"),
            "{undefined}"
        );
        assert_eq!(by_name("test_number").error.as_deref(), Some("evaluated to 5, not true"));
        assert!(by_name("test_error").error.as_ref().unwrap().contains("divide by zero"));
    }

    #[test]
    fn decisions_ignore_test_files() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "authz.rego", SHIPPED_POLICY.1);
        write(dir.path(), "broken_test.rego", "package x\nthis is not rego");
        let policy = RegoPolicy::from_dir(dir.path(), &PolicyData::default()).unwrap();
        assert!(policy.evaluate(&input("alice", &[], "team.read")).unwrap().allow);
        assert!(policy.describe().contains(&dir.path().display().to_string()));
    }

    #[test]
    fn a_syntax_error_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "authz.rego", SHIPPED_POLICY.1);
        write(dir.path(), "extra.rego", "package muster.extra\n\nallow if input.x === 1\n");
        let error =
            RegoPolicy::from_dir(dir.path(), &PolicyData::default()).unwrap_err().to_string();
        assert!(error.contains("extra.rego does not parse"), "{error}");
        assert!(error.contains("extra.rego:3:"), "{error}");
    }

    #[test]
    fn a_policy_without_allow_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "other.rego", "package other\nallow := true\n");
        let error = RegoPolicy::from_dir(dir.path(), &PolicyData::default()).unwrap_err();
        assert!(matches!(error, PolicyError::Invalid { .. }), "{error}");
        let empty = tempfile::tempdir().unwrap();
        let error = RegoPolicy::from_dir(empty.path(), &PolicyData::default()).unwrap_err();
        assert!(matches!(error, PolicyError::NoPolicies(_)), "{error}");
    }

    #[tokio::test]
    async fn undefined_allow_and_runtime_errors_deny() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "authz.rego",
            "package muster.authz\n\
             allow if input.action == \"team.read\"\n\
             allow if { input.action == \"boom\"; 1 / 0 }\n\
             reasons := set()\n",
        );
        let policy = RegoPolicy::from_dir(dir.path(), &PolicyData::default()).unwrap();
        let undefined = policy.decide(&input("alice", &[], "team.update")).await;
        assert_eq!(
            undefined,
            Decision::deny("policy did not decide (data.muster.authz.allow is undefined)")
        );
        let failed = policy.decide(&input("alice", &[], "boom")).await;
        assert!(!failed.allow);
        assert!(failed.reasons[0].starts_with("policy evaluation failed"), "{failed:?}");
        assert!(policy.decide(&input("alice", &[], "team.read")).await.allow);
    }

    // Decisions through the Rust types: the input's serialization must be what the policy reads.

    #[test]
    fn admin_may_delete_a_team_even_with_a_protected_namespace() {
        let mut delete = input("root", &["muster-admins"], "team.delete");
        delete.resource.namespaces =
            vec![NamespaceRef { environment: "prod".into(), allow_namespace_deletion: false }];
        let decision = decide(&delete);
        assert!(decision.allow, "{decision:?}");
        assert_eq!(decision.reasons, ["root is in admin group muster-admins"]);
    }

    #[test]
    fn reading_is_open_to_authenticated_callers() {
        assert!(decide(&input("carol", &[], "run.read")).allow);
        let anonymous = decide(&input("", &[], "team.read"));
        assert_eq!(anonymous, Decision::deny("the caller is not authenticated"));
    }

    #[test]
    fn maintainer_may_update_members_not_parent() {
        let members = decide(&update("alice", &["members"]));
        assert!(members.allow, "{members:?}");
        assert_eq!(members.reasons, ["alice maintains team payments"]);

        let parent = decide(&update("alice", &["parent"]));
        assert_eq!(
            parent,
            Decision::deny("maintainers may change members, maintainers, description; not parent")
        );
    }

    #[test]
    fn maintainer_may_sync_but_not_delete() {
        assert!(decide(&input("alice", &[], "team.sync")).allow);
        let mut delete = input("alice", &[], "team.delete");
        delete.resource.namespaces = vec![
            NamespaceRef { environment: "dev".into(), allow_namespace_deletion: true },
            NamespaceRef { environment: "prod".into(), allow_namespace_deletion: false },
        ];
        let decision = decide(&delete);
        assert!(!decision.allow);
        assert_eq!(
            decision.reasons,
            [
                "only admins may delete teams",
                "payments has a namespace in prod, which forbids namespace deletion: only admins \
                 may delete it",
            ]
        );
    }

    #[test]
    fn outsiders_and_new_teams_have_no_maintainers() {
        assert_eq!(
            decide(&update("mallory", &["description"])),
            Decision::deny("mallory does not maintain team payments")
        );
        let mut new_team = update("alice", &["members"]);
        new_team.resource.current = None;
        assert!(!decide(&new_team).allow);
    }

    #[test]
    fn only_admins_create_teams_and_replay_dead_letters() {
        assert_eq!(
            decide(&input("alice", &[], "team.create")),
            Decision::deny("only admins may create teams")
        );
        assert!(!decide(&input("alice", &[], "dlq.replay")).allow);
        assert!(decide(&input("root", &["muster-admins"], "dlq.replay")).allow);
    }

    #[test]
    fn publishers_match_source_segments_and_type_tokens() {
        let allowed = decide(&publish("billing-bot", "com.acme.billing.paid", "/billing/invoices"));
        assert!(allowed.allow, "{allowed:?}");
        assert!(!decide(&publish("billing-bot", "com.acme.billing.paid", "/billing/eu/x")).allow);
        assert!(!decide(&publish("billing-bot", "com.acme.billing.paid.v2", "/billing/x")).allow);
        assert!(!decide(&publish("alice", "com.acme.billing.paid", "/billing/invoices")).allow);
        let reserved = decide(&publish("billing-bot", "muster.ping", "/billing/invoices"));
        assert!(!reserved.allow);
        assert!(reserved.reasons.iter().any(|r| r.contains("reserved")), "{reserved:?}");
    }

    #[test]
    fn a_hand_written_input_may_omit_optional_fields() {
        let input: Input = serde_json::from_str(
            r#"{"subject": {"id": "alice"}, "action": "team.read", "resource": {"kind": "team"}}"#,
        )
        .unwrap();
        assert!(decide(&input).allow);
    }
}
