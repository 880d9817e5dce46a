//! `engine namespaces list`: namespace records and what each cluster's agent reported, from the
//! HTTP API.

use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use super::client::{ApiArgs, Client, encode, print_json};
use super::output;

/// OUTCOME of a target cluster whose agent has not reported on the namespace.
const NEVER_REPORTED: &str = "never reported";

#[derive(Debug, Subcommand)]
pub enum NamespacesCommand {
    /// List namespace records with one row per cluster: every target cluster (those that never
    /// reported say so) and any other cluster that reported.
    List {
        /// Only this environment's records.
        #[arg(long, value_name = "ENV")]
        environment: Option<String>,
        /// Only this team's records.
        #[arg(long, value_name = "SLUG")]
        team: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

pub async fn namespaces(
    config: &crate::config::Config,
    command: NamespacesCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        NamespacesCommand::List { environment, team, api } => {
            let client = Client::new(&api, config)?;
            let query: Vec<String> = [("environment", &environment), ("team", &team)]
                .into_iter()
                .filter_map(|(key, value)| value.as_ref().map(|v| format!("{key}={}", encode(v))))
                .collect();
            let path = if query.is_empty() {
                "/v1/namespaces".to_owned()
            } else {
                format!("/v1/namespaces?{}", query.join("&"))
            };
            let answer = client.call(Method::GET, &path, None, None).await?;
            let records = answer.body["items"].as_array().cloned().unwrap_or_default();
            if api.json {
                print_json(&Value::Array(records))?;
            } else {
                let rows: Vec<Vec<String>> = records.iter().flat_map(rows_of).collect();
                output::table(
                    &[
                        "NAMESPACE",
                        "TEAM",
                        "ENV",
                        "STATE",
                        "CLUSTER",
                        "OUTCOME",
                        "REPORTED",
                        "MESSAGE",
                    ],
                    &rows,
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The rows of one record: its target clusters in order, then the other clusters that
/// reported; one row with cluster `-` when there are neither.
fn rows_of(record: &Value) -> Vec<Vec<String>> {
    let text = |value: &Value| value.as_str().unwrap_or("-").to_owned();
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    let targets = strings(&record["target_clusters"]);
    let never_reported = strings(&record["never_reported"]);
    let reports = record["clusters"].as_object().cloned().unwrap_or_default();
    let row = |cluster: &str, outcome: String, reported: String, message: String| {
        vec![
            text(&record["name"]),
            text(&record["team"]),
            text(&record["environment"]),
            text(&record["state"]),
            cluster.to_owned(),
            outcome,
            reported,
            message,
        ]
    };
    let report_row = |cluster: &str, report: &Value| {
        row(
            cluster,
            text(&report["outcome"]),
            report["reported_at"].as_str().map_or_else(|| "-".to_owned(), short_time),
            report["message"].as_str().map_or_else(|| "-".to_owned(), one_line),
        )
    };
    let mut rows = Vec::new();
    for cluster in &targets {
        match reports.get(cluster) {
            Some(report) if !never_reported.contains(cluster) => {
                rows.push(report_row(cluster, report));
            }
            _ => rows.push(row(cluster, NEVER_REPORTED.to_owned(), "-".into(), "-".into())),
        }
    }
    for (cluster, report) in reports.iter().filter(|(c, _)| !targets.contains(c)) {
        rows.push(report_row(cluster, report));
    }
    if rows.is_empty() {
        rows.push(row("-", "-".into(), "-".into(), "-".into()));
    }
    rows
}

/// An RFC 3339 time to the second, in UTC; anything else as it is.
fn short_time(time: &str) -> String {
    DateTime::parse_from_rfc3339(time).map_or_else(
        |_| time.to_owned(),
        |t| t.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// A message on one table line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn one_row_per_target_and_per_other_reporting_cluster() {
        let record = json!({
            "name": "payments-prod", "team": "payments", "environment": "prod",
            "state": "active", "target_clusters": ["eu-1", "us-1"],
            "never_reported": ["us-1"],
            "clusters": {
                "eu-1": {"outcome": "applied", "reported_at": "2025-01-02T03:04:05.678Z"},
                "old-1": {"outcome": "orphaned", "message": "no\nrecord",
                          "reported_at": "2025-01-02T03:04:05Z"}
            }
        });
        let clusters: Vec<(String, String, String, String)> = rows_of(&record)
            .into_iter()
            .map(|r| (r[4].clone(), r[5].clone(), r[6].clone(), r[7].clone()))
            .collect();
        let cell = |a: &str, b: &str, c: &str, d: &str| (a.into(), b.into(), c.into(), d.into());
        assert_eq!(
            clusters,
            vec![
                cell("eu-1", "applied", "2025-01-02T03:04:05Z", "-"),
                cell("us-1", NEVER_REPORTED, "-", "-"),
                cell("old-1", "orphaned", "2025-01-02T03:04:05Z", "no record"),
            ]
        );
        let bare = json!({"name": "a-dev", "team": "a", "environment": "dev", "state": "active"});
        let rows = rows_of(&bare);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0][..5], ["a-dev", "a", "dev", "active", "-"]);
    }
}
