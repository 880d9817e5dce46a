//! `engine teams create|list|get|update|delete|plan|sync|purge`: the teams API from the command
//! line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::client::{ApiArgs, Client, encode, pairs, print_json, read_json_file};

#[derive(Debug, Subcommand)]
pub enum TeamsCommand {
    /// Create a team from --file or from flags.
    Create {
        #[command(flatten)]
        fields: TeamFields,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List every team (deleted ones awaiting teardown are marked).
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show one team.
    Get {
        slug: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Update a team: --file replaces it (PUT); flags change only those fields (merge patch).
    Update {
        #[arg(value_name = "SLUG")]
        team: String,
        #[command(flatten)]
        fields: TeamFields,
        /// Only if the team is still at this resource version (its ETag).
        #[arg(long, value_name = "VERSION")]
        if_version: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete a team: it becomes a tombstone and sync_team tears down its GitHub team and
    /// namespaces, then purges it.
    Delete {
        slug: String,
        #[arg(long, value_name = "VERSION")]
        if_version: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show what the next sync of the team would change, sending nothing: the GitHub team,
    /// its members and the namespace records, as a diff (`GET /v1/teams/{slug}/plan`). A plan
    /// the sync would refuse is shown with the refusal.
    Plan {
        slug: String,
        /// Preview a sync with --adopt.
        #[arg(long)]
        adopt: bool,
        /// Preview a sync with --allow-mass-removal.
        #[arg(long)]
        allow_mass_removal: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Ask for a sync of the team now (`muster.team.sync`).
    Sync {
        slug: String,
        /// Let this one sync remove what the mass-removal guard refuses (every member, a
        /// majority, or more than github.max-removal-fraction and max-removals-absolute);
        /// the shipped policy allows it to admins only.
        #[arg(long)]
        allow_mass_removal: bool,
        /// Adopt an existing GitHub team with the team's slug that Muster did not create: the
        /// sync takes it over, members included (review `engine teams plan SLUG --adopt`
        /// first); the shipped policy allows it to admins only.
        #[arg(long)]
        adopt: bool,
        /// Send again the organization invitations of desired members that expired or failed
        /// (otherwise they are held back and reported, not re-sent on every sync).
        #[arg(long)]
        reinvite: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Purge a deleted team now: its tombstone and namespace records go for good. Refused
    /// while clusters have not reported its namespaces deleted or retained, unless --force.
    Purge {
        slug: String,
        /// Purge even though the teardown still waits for clusters (their namespaces may
        /// remain there).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Args)]
pub struct TeamFields {
    /// The team as JSON (`-` for stdin); excludes the other field flags.
    #[arg(long, value_name = "FILE.json", conflicts_with_all = ["slug", "name", "description", "members", "maintainers", "parent", "privacy", "labels"])]
    pub file: Option<PathBuf>,
    /// DNS-1123 label (create only).
    #[arg(long)]
    pub slug: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// GitHub logins with the member role (repeat, or comma-separated).
    #[arg(long = "member", value_delimiter = ',')]
    pub members: Option<Vec<String>>,
    /// GitHub logins with the maintainer role (repeat, or comma-separated).
    #[arg(long = "maintainer", value_delimiter = ',')]
    pub maintainers: Option<Vec<String>>,
    #[arg(long)]
    pub parent: Option<String>,
    /// The GitHub team's visibility; a secret team cannot have a parent.
    #[arg(long, value_parser = ["closed", "secret"])]
    pub privacy: Option<String>,
    /// Namespace labels, KEY=VALUE (repeat).
    #[arg(long = "label")]
    pub labels: Option<Vec<String>>,
}

impl TeamFields {
    /// The flags as a JSON object with only the fields given.
    fn to_object(&self) -> anyhow::Result<Map<String, Value>> {
        let mut object = Map::new();
        let mut put = |key: &str, value: Value| {
            object.insert(key.to_owned(), value);
        };
        if let Some(v) = &self.slug {
            put("slug", json!(v));
        }
        if let Some(v) = &self.name {
            put("name", json!(v));
        }
        if let Some(v) = &self.description {
            put("description", json!(v));
        }
        if let Some(v) = &self.members {
            put("members", json!(v));
        }
        if let Some(v) = &self.maintainers {
            put("maintainers", json!(v));
        }
        if let Some(v) = &self.parent {
            put("parent", json!(v));
        }
        if let Some(v) = &self.privacy {
            put("privacy", json!(v));
        }
        if let Some(v) = &self.labels {
            put("labels", Value::Object(pairs(v)?));
        }
        Ok(object)
    }
}

fn print_team(team: &Value) {
    let list = |key: &str| {
        team[key]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    println!("slug         {}", team["slug"].as_str().unwrap_or_default());
    println!("name         {}", team["name"].as_str().unwrap_or_default());
    println!("description  {}", team["description"].as_str().unwrap_or_default());
    println!("members      {}", list("members"));
    println!("maintainers  {}", list("maintainers"));
    if let Some(parent) = team["parent"].as_str() {
        println!("parent       {parent}");
    }
    println!("privacy      {}", team["privacy"].as_str().unwrap_or("closed"));
    println!("version      {}", team["resource_version"]);
    println!("updated      {}", team["updated_at"].as_str().unwrap_or_default());
    if let Some(deleted) = team["deleted_at"].as_str() {
        println!("deleted      {deleted} (tombstone: teardown in progress)");
    }
}

fn print_purged(slug: &str, purged: &Value) {
    let waiting: Vec<String> = purged["waiting"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(namespace, clusters)| {
            let clusters: Vec<&str> =
                clusters.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            format!("{namespace} ({})", clusters.join(", "))
        })
        .collect();
    if purged["forced"] == true {
        println!(
            "team {slug} purged (forced): its tombstone and namespace records are gone; the \
             teardown was still waiting for {}, whose namespaces may remain in those clusters",
            waiting.join(", ")
        );
    } else {
        println!(
            "team {slug} purged: its tombstone and namespace records are gone (teardown complete)"
        );
    }
}

pub async fn teams(
    config: &crate::config::Config,
    command: TeamsCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        TeamsCommand::Create { fields, api } => {
            let client = Client::new(&api, config)?;
            let body = match &fields.file {
                Some(path) => read_json_file(path)?,
                None => Value::Object(fields.to_object()?),
            };
            let answer = client
                .call(Method::POST, "/v1/teams", Some(("application/json", &body)), None)
                .await?;
            if api.json {
                print_json(&answer.body)?;
            } else {
                println!(
                    "created team {} (version {}); muster.team.created is on its way",
                    answer.body["slug"].as_str().unwrap_or_default(),
                    answer.body["resource_version"]
                );
            }
        }
        TeamsCommand::List { api } => {
            let client = Client::new(&api, config)?;
            let teams = client.list_all("/v1/teams").await?;
            if api.json {
                print_json(&Value::Array(teams))?;
            } else {
                println!(
                    "{:<24} {:<28} {:>7} {:>11} {:>7}  STATE",
                    "SLUG", "NAME", "MEMBERS", "MAINTAINERS", "VERSION"
                );
                for team in &teams {
                    let count = |k: &str| team[k].as_array().map_or(0, Vec::len);
                    println!(
                        "{:<24} {:<28} {:>7} {:>11} {:>7}  {}",
                        team["slug"].as_str().unwrap_or_default(),
                        team["name"].as_str().unwrap_or_default(),
                        count("members"),
                        count("maintainers"),
                        team["resource_version"].to_string(),
                        if team["deleted_at"].is_string() { "deleted" } else { "active" }
                    );
                }
            }
        }
        TeamsCommand::Get { slug, api } => {
            let client = Client::new(&api, config)?;
            let answer = client
                .call(Method::GET, &format!("/v1/teams/{}", encode(&slug)), None, None)
                .await?;
            if api.json {
                print_json(&answer.body)?;
            } else {
                print_team(&answer.body);
            }
        }
        TeamsCommand::Update { team: slug, fields, if_version, api } => {
            let client = Client::new(&api, config)?;
            let path = format!("/v1/teams/{}", encode(&slug));
            let tag = if_version.map(|v| format!("\"{v}\""));
            let answer = match &fields.file {
                Some(file) => {
                    let body = read_json_file(file)?;
                    client
                        .call(Method::PUT, &path, Some(("application/json", &body)), tag.as_deref())
                        .await?
                }
                None => {
                    let patch = fields.to_object()?;
                    if patch.is_empty() {
                        anyhow::bail!("nothing to update: give --file or at least one field flag");
                    }
                    client
                        .call(
                            Method::PATCH,
                            &path,
                            Some(("application/merge-patch+json", &Value::Object(patch))),
                            tag.as_deref(),
                        )
                        .await?
                }
            };
            if api.json {
                print_json(&answer.body)?;
            } else {
                println!("updated team {slug} (version {})", answer.body["resource_version"]);
            }
        }
        TeamsCommand::Delete { slug, if_version, api } => {
            let client = Client::new(&api, config)?;
            let tag = if_version.map(|v| format!("\"{v}\""));
            let answer = client
                .call(Method::DELETE, &format!("/v1/teams/{}", encode(&slug)), None, tag.as_deref())
                .await?;
            if api.json {
                print_json(&answer.body)?;
            } else {
                println!(
                    "team {slug} deleted: it is now a tombstone (deleted_at {}); sync_team tears \
                     down its GitHub team and namespaces, then purges the record",
                    answer.body["deleted_at"].as_str().unwrap_or("-")
                );
            }
        }
        TeamsCommand::Plan { slug, adopt, allow_mass_removal, api } => {
            let client = Client::new(&api, config)?;
            let path = format!(
                "/v1/teams/{}/plan?adopt={adopt}&allow_mass_removal={allow_mass_removal}",
                encode(&slug)
            );
            let answer = client
                .call(Method::GET, &path, None, None)
                .await
                .with_context(|| format!("no plan for team {slug}"))?;
            if api.json {
                print_json(&answer.body)?;
            } else {
                for line in answer.body["lines"].as_array().into_iter().flatten() {
                    println!("{}", line.as_str().unwrap_or_default());
                }
            }
        }
        TeamsCommand::Sync { slug, allow_mass_removal, adopt, reinvite, api } => {
            let client = Client::new(&api, config)?;
            let body = json!({
                "allow_mass_removal": allow_mass_removal,
                "adopt": adopt,
                "reinvite": reinvite,
            });
            let answer = client
                .call(
                    Method::POST,
                    &format!("/v1/teams/{}/sync", encode(&slug)),
                    Some(("application/json", &body)),
                    None,
                )
                .await
                .with_context(|| format!("no sync of team {slug} requested"))?;
            if api.json {
                print_json(&answer.body)?;
            } else {
                let overrides = [
                    (allow_mass_removal, "; the mass-removal guard is overridden for this sync"),
                    (adopt, "; an existing GitHub team with its slug is adopted"),
                    (reinvite, "; expired invitations are sent again"),
                ];
                let notes: String =
                    overrides.iter().filter(|(set, _)| *set).map(|(_, note)| *note).collect();
                println!(
                    "sync of team {slug} requested: event {} (sequence {}){notes}",
                    answer.body["id"].as_str().unwrap_or_default(),
                    answer.body["sequence"],
                );
            }
        }
        TeamsCommand::Purge { slug, force, api } => {
            let client = Client::new(&api, config)?;
            let body = json!({ "force": force });
            let answer = client
                .call(
                    Method::POST,
                    &format!("/v1/teams/{}/purge", encode(&slug)),
                    Some(("application/json", &body)),
                    None,
                )
                .await
                .with_context(|| format!("team {slug} not purged"))?;
            if api.json {
                print_json(&answer.body)?;
            } else {
                print_purged(&slug, &answer.body);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
