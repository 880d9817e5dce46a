//! `engine envs create|list|get|update|delete`: the environments API from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::client::{ApiArgs, Client, encode, pairs, print_json, read_json_file};

#[derive(Debug, Subcommand)]
pub enum EnvsCommand {
    /// Create an environment from --file or from flags (only --name is required).
    Create {
        #[command(flatten)]
        fields: EnvFields,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List every environment.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show one environment.
    Get {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Update an environment: --file replaces it; flags change only those fields (read,
    /// change, write back with If-Match, so a concurrent change is refused, not lost).
    Update {
        #[arg(value_name = "NAME")]
        environment: String,
        #[command(flatten)]
        fields: EnvFields,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete an environment (its namespace records are torn down by sync_team).
    Delete {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Args)]
pub struct EnvFields {
    /// The environment as JSON (`-` for stdin); excludes the other field flags.
    #[arg(long, value_name = "FILE.json", conflicts_with_all = ["name", "clusters", "quota", "limits", "allow_namespace_deletion"])]
    pub file: Option<PathBuf>,
    /// DNS-1123 label (create only).
    #[arg(long)]
    pub name: Option<String>,
    /// Cluster names (repeat, or comma-separated).
    #[arg(long = "cluster", value_delimiter = ',')]
    pub clusters: Option<Vec<String>>,
    /// Default ResourceQuota, KEY=QUANTITY, e.g. requests.cpu=4 (repeat).
    #[arg(long = "quota")]
    pub quota: Option<Vec<String>>,
    /// Default container limits, KEY=QUANTITY, e.g. memory=512Mi (repeat).
    #[arg(long = "limit")]
    pub limits: Option<Vec<String>>,
    /// Whether agents may delete namespaces of removed teams here.
    #[arg(long)]
    pub allow_namespace_deletion: Option<bool>,
}

impl EnvFields {
    fn apply(&self, object: &mut Map<String, Value>) -> anyhow::Result<()> {
        if let Some(v) = &self.name {
            object.insert("name".into(), json!(v));
        }
        if let Some(v) = &self.clusters {
            object.insert("clusters".into(), json!(v));
        }
        if let Some(v) = &self.quota {
            object.insert("default_quota".into(), Value::Object(pairs(v)?));
        }
        if let Some(v) = &self.limits {
            object.insert("default_limits".into(), Value::Object(pairs(v)?));
        }
        if let Some(v) = self.allow_namespace_deletion {
            object.insert("allow_namespace_deletion".into(), json!(v));
        }
        Ok(())
    }
}

/// The spec fields of a stored environment (what PUT takes).
fn spec_of(env: &Value) -> Map<String, Value> {
    ["name", "clusters", "default_quota", "default_limits", "allow_namespace_deletion"]
        .iter()
        .filter_map(|k| env.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect()
}

fn print_env(env: &Value) {
    let map = |key: &str| {
        env[key]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let clusters = env["clusters"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    println!("name                      {}", env["name"].as_str().unwrap_or_default());
    println!("clusters                  {clusters}");
    println!("default quota             {}", map("default_quota"));
    println!("default limits            {}", map("default_limits"));
    println!("allow namespace deletion  {}", env["allow_namespace_deletion"]);
    println!("version                   {}", env["resource_version"]);
}

pub async fn envs(
    config: &crate::config::Config,
    command: EnvsCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        EnvsCommand::Create { fields, api } => {
            let client = Client::new(&api, config)?;
            let body = match &fields.file {
                Some(path) => read_json_file(path)?,
                None => {
                    let mut object = Map::new();
                    fields.apply(&mut object)?;
                    Value::Object(object)
                }
            };
            let answer = client
                .call(Method::POST, "/v1/environments", Some(("application/json", &body)), None)
                .await?;
            if api.json {
                print_json(&answer.body)?;
            } else {
                println!(
                    "created environment {}; muster.environment.created is on its way",
                    answer.body["name"].as_str().unwrap_or_default()
                );
            }
        }
        EnvsCommand::List { api } => {
            let client = Client::new(&api, config)?;
            let envs = client.list_all("/v1/environments").await?;
            if api.json {
                print_json(&Value::Array(envs))?;
            } else {
                println!("{:<20} {:>8} {:>9} {:>7}", "NAME", "CLUSTERS", "DELETION", "VERSION");
                for env in &envs {
                    println!(
                        "{:<20} {:>8} {:>9} {:>7}",
                        env["name"].as_str().unwrap_or_default(),
                        env["clusters"].as_array().map_or(0, Vec::len),
                        if env["allow_namespace_deletion"] == json!(true) {
                            "allowed"
                        } else {
                            "no"
                        },
                        env["resource_version"].to_string()
                    );
                }
            }
        }
        EnvsCommand::Get { name, api } => {
            let client = Client::new(&api, config)?;
            let path = format!("/v1/environments/{}", encode(&name));
            let answer = client.call(Method::GET, &path, None, None).await?;
            if api.json {
                print_json(&answer.body)?;
            } else {
                print_env(&answer.body);
            }
        }
        EnvsCommand::Update { environment: name, fields, api } => {
            let client = Client::new(&api, config)?;
            let path = format!("/v1/environments/{}", encode(&name));
            let (body, tag) = match &fields.file {
                Some(file) => (read_json_file(file)?, None),
                None => {
                    let current = client.call(Method::GET, &path, None, None).await?;
                    let mut spec = spec_of(&current.body);
                    fields.apply(&mut spec)?;
                    (Value::Object(spec), current.etag)
                }
            };
            let answer = client
                .call(Method::PUT, &path, Some(("application/json", &body)), tag.as_deref())
                .await?;
            if api.json {
                print_json(&answer.body)?;
            } else {
                println!(
                    "updated environment {name} (version {})",
                    answer.body["resource_version"]
                );
            }
        }
        EnvsCommand::Delete { name, api } => {
            let client = Client::new(&api, config)?;
            let path = format!("/v1/environments/{}", encode(&name));
            client.call(Method::DELETE, &path, None, None).await?;
            if api.json {
                print_json(&json!({ "deleted": name }))?;
            } else {
                println!("environment {name} deleted; muster.environment.deleted is on its way");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
