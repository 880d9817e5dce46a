//! `engine policy eval|test`: the authorization policy, offline, in process (regorus).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::policy::{Authorizer, Input, PolicyData, PolicySource, RegoPolicy, run_tests};

/// `engine policy eval`'s exit status when the policy denies.
pub const EXIT_DENIED: u8 = 3;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Decide one request and print the decision as JSON.
    ///
    /// Exit status: 0 if allowed, 3 if denied, 1 on an error (unreadable input or data,
    /// policies that do not load). A policy that fails while deciding denies, as the engine
    /// does.
    Eval {
        /// The request as JSON: {"subject": {"id", "groups"}, "action", "resource": {"kind",
        /// "name", "team", "environment", "current", "namespaces", "event"}, "changes",
        /// "request": {"method", "path"}}. Only subject.id, action and resource.kind are
        /// required.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Run the policies' tests: every rule named test_* in the *.rego and *_test.rego files,
    /// with no input; a test passes when it is exactly true.
    ///
    /// Prints PASS or FAIL per test and a summary. Exit status: 0 if all pass, 1 if any fails,
    /// none is found or the policies do not load.
    Test {
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

/// Which policies, with which data.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Directory of *.rego policies (package muster.authz) and *_test.rego tests
    /// [default: authz.policies, else the shipped policies, config/policies].
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// The policy's data.config as JSON: {"admin_groups": [..], "publishers": [{"subject",
    /// "sources", "types"}]} [default: authz.admin-groups and authz.publishers].
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// The configuration's `[authz]` data, used without `--data`.
    #[arg(skip)]
    pub config_data: Option<PolicyData>,
}

impl PolicyArgs {
    fn source(&self) -> PolicySource {
        self.policies.clone().into()
    }

    fn data(&self) -> anyhow::Result<PolicyData> {
        match &self.data {
            Some(path) => read_json(path, "policy data"),
            None => Ok(self.config_data.clone().unwrap_or_default()),
        }
    }
}

pub async fn policy(config: &Config, mut command: PolicyCommand) -> anyhow::Result<ExitCode> {
    let (PolicyCommand::Eval { policy: args, .. } | PolicyCommand::Test { policy: args }) =
        &mut command;
    if args.policies.is_none() {
        args.policies.clone_from(&config.authz.policies);
    }
    args.config_data = Some(config.authz.policy_data());
    let mut stdout = std::io::stdout().lock();
    match command {
        PolicyCommand::Eval { input, policy } => {
            let allowed = eval(&input, &policy, &mut stdout).await?;
            Ok(if allowed { ExitCode::SUCCESS } else { ExitCode::from(EXIT_DENIED) })
        }
        PolicyCommand::Test { policy } => {
            let passed = test(&policy, &mut stdout)?;
            Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// Prints the decision for the input in `input_file`; whether it allows.
async fn eval(input_file: &Path, args: &PolicyArgs, out: &mut impl Write) -> anyhow::Result<bool> {
    let input: Input = read_json(input_file, "input")?;
    let policy = RegoPolicy::load(&args.source(), &args.data()?)?;
    let decision = policy.decide(&input).await;
    writeln!(out, "{}", serde_json::to_string_pretty(&decision)?)?;
    Ok(decision.allow)
}

/// Runs and prints the tests; whether there are some and all pass.
fn test(args: &PolicyArgs, out: &mut impl Write) -> anyhow::Result<bool> {
    let source = args.source();
    let outcomes = run_tests(&source, &args.data()?)?;
    anyhow::ensure!(!outcomes.is_empty(), "no test_* rules in {source}");
    for outcome in &outcomes {
        match &outcome.error {
            None => writeln!(out, "PASS {outcome}")?,
            Some(error) => writeln!(out, "FAIL {outcome}: {}", error.replace('\n', "\n    "))?,
        }
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    writeln!(out, "{} tests: {} passed, {failed} failed", outcomes.len(), outcomes.len() - failed)?;
    Ok(failed == 0)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid {what}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: PolicyCommand,
    }

    #[test]
    fn the_command_line_parses() {
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["policy", "eval", "--input", "in.json", "--data", "d.json"]);
        let PolicyCommand::Eval { input, policy } = cli.unwrap().command else {
            panic!("not eval")
        };
        assert_eq!(
            (input, policy.policies, policy.data),
            ("in.json".into(), None, Some("d.json".into()))
        );
        let cli = Cli::try_parse_from(["policy", "test", "--policies", "config/policies"]).unwrap();
        assert!(matches!(cli.command, PolicyCommand::Test { policy } if policy.policies.is_some()));
        assert!(Cli::try_parse_from(["policy", "eval"]).is_err(), "--input is required");
        let help =
            Cli::command().find_subcommand_mut("eval").unwrap().render_long_help().to_string();
        assert!(help.contains("0 if allowed, 3 if denied"), "{help}");
    }

    fn args(policies: Option<&Path>, data: Option<&Path>) -> PolicyArgs {
        PolicyArgs {
            policies: policies.map(Into::into),
            data: data.map(Into::into),
            config_data: None,
        }
    }

    async fn eval_json(
        input: serde_json::Value,
        data: Option<serde_json::Value>,
    ) -> (bool, String) {
        let dir = tempfile::tempdir().unwrap();
        let input_file = dir.path().join("input.json");
        std::fs::write(&input_file, input.to_string()).unwrap();
        let data_file = data.map(|data| {
            let path = dir.path().join("data.json");
            std::fs::write(&path, data.to_string()).unwrap();
            path
        });
        let mut out = Vec::new();
        let allowed = eval(&input_file, &args(None, data_file.as_deref()), &mut out).await.unwrap();
        (allowed, String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn eval_prints_the_decision() {
        let input = serde_json::json!({
            "subject": {"id": "alice"}, "action": "team.read", "resource": {"kind": "team"}
        });
        let (allowed, out) = eval_json(input.clone(), None).await;
        assert!(allowed);
        let decision: crate::policy::Decision = serde_json::from_str(&out).unwrap();
        assert_eq!(decision.reasons, ["reading is open to authenticated callers"]);

        let delete = serde_json::json!({
            "subject": {"id": "alice", "groups": ["ops"]}, "action": "team.delete",
            "resource": {"kind": "team", "name": "payments"}
        });
        let (allowed, out) = eval_json(delete.clone(), None).await;
        assert!(!allowed, "{out}");
        let (allowed, _) =
            eval_json(delete, Some(serde_json::json!({"admin_groups": ["ops"]}))).await;
        assert!(allowed, "--data sets the admin groups");
    }

    #[tokio::test]
    async fn eval_reports_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let input_file = dir.path().join("input.json");
        std::fs::write(&input_file, r#"{"action": "team.read"}"#).unwrap();
        let error = eval(&input_file, &args(None, None), &mut Vec::new()).await.unwrap_err();
        assert!(format!("{error:#}").contains("is not valid input"), "{error:#}");
        let missing = dir.path().join("missing.json");
        let error = eval(&missing, &args(None, None), &mut Vec::new()).await.unwrap_err();
        assert!(format!("{error:#}").contains("cannot read the input file"), "{error:#}");
    }

    #[test]
    fn test_prints_pass_and_fail_and_a_summary() {
        let mut out = Vec::new();
        assert!(test(&args(None, None), &mut out).unwrap());
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("PASS muster.authz_test.test_read_open\n"), "{out}");
        assert!(out.lines().last().unwrap().ends_with("passed, 0 failed"), "{out}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("authz.rego"),
            "package muster.authz\nallow := false\nreasons := set()\ntest_allows if allow\n",
        )
        .unwrap();
        let mut out = Vec::new();
        assert!(!test(&args(Some(dir.path()), None), &mut out).unwrap());
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("FAIL muster.authz.test_allows: undefined"), "{out}");
        assert!(out.ends_with("1 tests: 0 passed, 1 failed\n"), "{out}");
    }
}
