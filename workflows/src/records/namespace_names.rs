//! Namespace names that cannot clash: checking a new team × environment pair against the
//! names every existing pair derives, before a record makes the pair exist.
//!
//! A namespace is named [`namespace_name`]`(team, environment)`, `<team>-<environment>`. Two
//! pairs can derive the same name (`a-b` × `c` and `a` × `b-c` both give `a-b-c`), and a name
//! can be longer than a DNS-1123 label (63 characters, the Kubernetes limit for a namespace).
//! `sync_team` cannot give such a pair a namespace, so the API refuses the team or environment
//! that would create it: [`NamespaceNames::problems`].
//!
//! # Assumptions
//! - Every team counts, tombstones included: a deleted team's namespaces exist until its
//!   teardown is done and [`Records::purge_team`] removes it.
//! - A team's slug and an environment's name never change (the API refuses it), so only the
//!   creation of a team or an environment brings new pairs.

use std::collections::BTreeMap;
use std::fmt;

use super::error::{RecordsError, RecordsResult};
use super::namespace::NamespaceFilter;
use super::namespace::namespace_name;
use super::port::{MAX_PAGE_SIZE, Records};
use super::validation::MAX_DNS_LABEL_LEN;

/// Most pages [`NamespaceNames::load`] reads of each list (a million teams at the largest
/// page size): a store whose cursor never ends is an error, not an endless loop.
pub const MAX_LIST_PAGES: usize = 1000;

/// Why a team × environment pair cannot have its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceNameProblem {
    /// The name is longer than a DNS-1123 label ([`MAX_DNS_LABEL_LEN`] characters).
    TooLong { name: String, team: String, environment: String },
    /// Another pair already derives the same name.
    Taken {
        name: String,
        team: String,
        environment: String,
        other_team: String,
        other_environment: String,
    },
}

impl NamespaceNameProblem {
    /// The namespace name the pair would get.
    pub fn name(&self) -> &str {
        match self {
            NamespaceNameProblem::TooLong { name, .. }
            | NamespaceNameProblem::Taken { name, .. } => name,
        }
    }
}

impl fmt::Display for NamespaceNameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamespaceNameProblem::TooLong { name, team, environment } => write!(
                f,
                "the namespace of team {team:?} in environment {environment:?}, {name:?}, \
                 would be {} characters, at most {MAX_DNS_LABEL_LEN}",
                name.len()
            ),
            NamespaceNameProblem::Taken {
                name,
                team,
                environment,
                other_team,
                other_environment,
            } => {
                write!(
                    f,
                    "the namespace of team {team:?} in environment {environment:?} would be \
                     {name:?}, already the namespace of team {other_team:?} in environment \
                     {other_environment:?}"
                )
            }
        }
    }
}

/// The namespace names of every existing team × environment pair, to check new pairs against.
#[derive(Debug, Clone, Default)]
pub struct NamespaceNames {
    teams: Vec<String>,
    environments: Vec<String>,
    /// Name → the pairs deriving it (more than one only in data stored before the check).
    pairs: BTreeMap<String, Vec<(String, String)>>,
}

impl NamespaceNames {
    /// The names that `teams` (slugs, tombstones included) × `environments` derive.
    pub fn new<T, E>(teams: T, environments: E) -> Self
    where
        T: IntoIterator,
        T::Item: Into<String>,
        E: IntoIterator,
        E::Item: Into<String>,
    {
        let teams: Vec<String> = teams.into_iter().map(Into::into).collect();
        let environments: Vec<String> = environments.into_iter().map(Into::into).collect();
        let mut pairs: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for team in &teams {
            for environment in &environments {
                pairs
                    .entry(namespace_name(team, environment))
                    .or_default()
                    .push((team.clone(), environment.clone()));
            }
        }
        NamespaceNames { teams, environments, pairs }
    }

    /// Adds the name of a stored namespace record whose pair the teams and environments no
    /// longer give: a record of a deleted environment, `deleting` until its team's teardown or
    /// the agents remove it, keeps its name in the clusters meanwhile.
    fn add_record(&mut self, team: &str, environment: &str) {
        let holders = self.pairs.entry(namespace_name(team, environment)).or_default();
        if !holders.iter().any(|(t, e)| t == team && e == environment) {
            holders.push((team.to_owned(), environment.to_owned()));
        }
    }

    /// Every team's slug (tombstones included) and every environment's name in `records`,
    /// read page by page, and the names of the namespace records (those of deleted
    /// environments included).
    ///
    /// # Errors
    /// What the store answers; a permanent `Backend` error when a list has more than
    /// [`MAX_LIST_PAGES`] pages or its cursor does not advance.
    pub async fn load(records: &dyn Records) -> RecordsResult<Self> {
        Self::load_paged(records, MAX_PAGE_SIZE).await
    }

    async fn load_paged(records: &dyn Records, page_size: usize) -> RecordsResult<Self> {
        let mut teams = Vec::new();
        let mut after: Option<String> = None;
        for pages in 1.. {
            let page = records.list_teams(after.as_deref(), page_size).await?;
            teams.extend(page.items.into_iter().map(|t| t.spec.slug));
            match advanced("teams", after.as_deref(), page.next, pages)? {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let mut environments = Vec::new();
        let mut after: Option<String> = None;
        for pages in 1.. {
            let page = records.list_environments(after.as_deref(), page_size).await?;
            environments.extend(page.items.into_iter().map(|e| e.spec.name));
            match advanced("environments", after.as_deref(), page.next, pages)? {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let mut names = Self::new(teams, environments);
        for record in records.list_namespaces(&NamespaceFilter::default()).await? {
            names.add_record(&record.spec.team, &record.spec.environment);
        }
        Ok(names)
    }

    /// Why `team` × `environment` cannot have its namespace: its name is too long, or another
    /// pair derives it. The pair itself is not "another": a team checked against its own
    /// namespaces is fine.
    pub fn problems(&self, team: &str, environment: &str) -> Vec<NamespaceNameProblem> {
        let name = namespace_name(team, environment);
        let mut problems = Vec::new();
        if name.len() > MAX_DNS_LABEL_LEN {
            problems.push(NamespaceNameProblem::TooLong {
                name: name.clone(),
                team: team.to_owned(),
                environment: environment.to_owned(),
            });
        }
        let others = self.pairs.get(&name).into_iter().flatten();
        for (other_team, other_environment) in others {
            if other_team != team || other_environment != environment {
                problems.push(NamespaceNameProblem::Taken {
                    name: name.clone(),
                    team: team.to_owned(),
                    environment: environment.to_owned(),
                    other_team: other_team.clone(),
                    other_environment: other_environment.clone(),
                });
            }
        }
        problems
    }

    /// The problems of a new team `slug` in every existing environment.
    pub fn problems_of_team(&self, slug: &str) -> Vec<NamespaceNameProblem> {
        self.environments.iter().flat_map(|env| self.problems(slug, env)).collect()
    }

    /// The problems of a new environment `name` for every existing team.
    pub fn problems_of_environment(&self, name: &str) -> Vec<NamespaceNameProblem> {
        self.teams.iter().flat_map(|team| self.problems(team, name)).collect()
    }
}

/// The cursor to read `what` on with, after `pages` pages: `None` when done. A cursor that
/// does not move past `after`, or a list longer than [`MAX_LIST_PAGES`], is an error rather
/// than an endless loop.
fn advanced(
    what: &str,
    after: Option<&str>,
    next: Option<String>,
    pages: usize,
) -> RecordsResult<Option<String>> {
    let Some(next) = next else { return Ok(None) };
    if after.is_some_and(|after| next.as_str() <= after) {
        return Err(RecordsError::permanent(format!(
            "listing {what}: the cursor {next:?} does not advance past {after:?}"
        )));
    }
    if pages >= MAX_LIST_PAGES {
        return Err(RecordsError::permanent(format!(
            "listing {what}: more than {MAX_LIST_PAGES} pages; namespace names cannot be checked"
        )));
    }
    Ok(Some(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryRecords;
    use crate::records::{Actor, EnvironmentSpec, NamespaceSpec, TeamSpec};

    fn taken(name: &str, team: &str, env: &str, other: (&str, &str)) -> NamespaceNameProblem {
        NamespaceNameProblem::Taken {
            name: name.into(),
            team: team.into(),
            environment: env.into(),
            other_team: other.0.into(),
            other_environment: other.1.into(),
        }
    }

    #[test]
    fn a_new_team_clashing_with_an_existing_pair_is_refused() {
        // `a-b` × `c` exists; a new team `a` would get `a-b-c` in `b-c`.
        let names = NamespaceNames::new(["a-b"], ["c", "b-c"]);
        assert_eq!(names.problems("a", "b-c"), [taken("a-b-c", "a", "b-c", ("a-b", "c"))]);
        assert_eq!(names.problems_of_team("a"), [taken("a-b-c", "a", "b-c", ("a-b", "c"))]);
        let text = names.problems_of_team("a")[0].to_string();
        assert_eq!(
            text,
            "the namespace of team \"a\" in environment \"b-c\" would be \"a-b-c\", already \
             the namespace of team \"a-b\" in environment \"c\""
        );
        assert!(names.problems_of_team("x").is_empty());
    }

    #[test]
    fn the_other_way_round_too() {
        // `a` × `b-c` exists; a new team `a-b` would get `a-b-c` in `c`.
        let names = NamespaceNames::new(["a"], ["b-c", "c"]);
        assert_eq!(names.problems_of_team("a-b"), [taken("a-b-c", "a-b", "c", ("a", "b-c"))]);
        // And a new environment: teams `a` and `a-b` exist with `c`; `b-c` would clash.
        let names = NamespaceNames::new(["a", "a-b"], ["c"]);
        assert_eq!(
            names.problems_of_environment("b-c"),
            [taken("a-b-c", "a", "b-c", ("a-b", "c"))]
        );
        // With `b-c` there, a new environment `c` clashes the other way.
        let names = NamespaceNames::new(["a", "a-b"], ["b-c"]);
        assert_eq!(names.problems_of_environment("c"), [taken("a-b-c", "a-b", "c", ("a", "b-c"))]);
    }

    #[test]
    fn sixty_three_characters_fit_and_sixty_four_do_not() {
        let names = NamespaceNames::new(Vec::<String>::new(), ["prod"]);
        let fits = "t".repeat(58);
        assert_eq!(namespace_name(&fits, "prod").len(), 63);
        assert!(names.problems_of_team(&fits).is_empty());
        let long = "t".repeat(59);
        let problems = names.problems_of_team(&long);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            matches!(&problems[0], NamespaceNameProblem::TooLong { name, .. } if name.len() == 64)
        );
        let text = problems[0].to_string();
        assert!(text.ends_with("would be 64 characters, at most 63"), "{text}");
        assert!(text.contains(&format!("team {long:?} in environment \"prod\"")), "{text}");
        // The same limit from the environment's side.
        let names = NamespaceNames::new([long.as_str(), "a"], Vec::<String>::new());
        let problems = names.problems_of_environment("prod");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].name(), format!("{long}-prod"));
    }

    #[test]
    fn a_team_only_clashing_with_itself_is_fine() {
        let names = NamespaceNames::new(["a-b", "payments"], ["c", "dev"]);
        assert!(names.problems("a-b", "c").is_empty());
        assert!(names.problems_of_team("a-b").is_empty());
        assert!(names.problems_of_environment("c").is_empty());
    }

    #[test]
    fn pairs_that_already_clash_are_all_named() {
        let names = NamespaceNames::new(["a", "a-b"], ["b-c", "c"]);
        assert_eq!(names.problems("a", "b-c"), [taken("a-b-c", "a", "b-c", ("a-b", "c"))]);
    }

    #[tokio::test]
    async fn tombstoned_teams_keep_their_names_until_purged() {
        let records = MemoryRecords::new();
        let actor = Actor::system();
        let spec = |slug: &str| TeamSpec {
            slug: slug.into(),
            name: "T".into(),
            description: String::new(),
            members: Vec::new(),
            maintainers: vec!["carol".into()],
            parent: None,
            privacy: Default::default(),
            quota_profile: None,
            labels: Default::default(),
        };
        records.create_environment(EnvironmentSpec::named("c"), &actor).await.unwrap();
        records.create_environment(EnvironmentSpec::named("b-c"), &actor).await.unwrap();
        for slug in ["a-b", "x", "y", "z"] {
            records.create_team(spec(slug), &actor).await.unwrap();
        }
        records.delete_team("a-b", None, &actor).await.unwrap();

        // Pages of two: every page is read.
        let names = NamespaceNames::load_paged(&records, 2).await.unwrap();
        assert_eq!(names.teams, ["a-b", "x", "y", "z"]);
        assert_eq!(names.problems_of_team("a"), [taken("a-b-c", "a", "b-c", ("a-b", "c"))]);

        assert!(records.purge_team("a-b").await.unwrap());
        let names = NamespaceNames::load(&records).await.unwrap();
        assert!(names.problems_of_team("a").is_empty());
    }

    #[tokio::test]
    async fn records_of_deleted_environments_keep_their_names_until_removed() {
        let records = MemoryRecords::new();
        let actor = Actor::system();
        records.create_environment(EnvironmentSpec::named("c"), &actor).await.unwrap();
        let team = TeamSpec {
            slug: "a-b".into(),
            name: "A B".into(),
            description: String::new(),
            members: Vec::new(),
            maintainers: vec!["carol".into()],
            parent: None,
            privacy: Default::default(),
            quota_profile: None,
            labels: Default::default(),
        };
        records.create_team(team, &actor).await.unwrap();
        // Team `a-b`'s record in environment `c`, which is then deleted: the namespace
        // `a-b-c` is still being torn down in the clusters.
        let spec = NamespaceSpec {
            team: "a-b".into(),
            environment: "c".into(),
            quota: Default::default(),
            limits: Default::default(),
            role_bindings: Vec::new(),
            quota_profile: None,
            labels: Default::default(),
            target_clusters: vec!["dev-1".into()],
            allow_deletion: true,
            network_policy: false,
        };
        records.upsert_namespace(spec).await.unwrap();
        records.delete_environment("c", None, &actor).await.unwrap();

        let names = NamespaceNames::load(&records).await.unwrap();
        assert_eq!(names.problems("a", "b-c"), [taken("a-b-c", "a", "b-c", ("a-b", "c"))]);
        assert_eq!(names.problems_of_team("a"), [], "no environment `b-c` yet");
        assert!(names.problems("a-b", "c").is_empty(), "its own record");

        assert!(records.delete_namespace("a-b", "c").await.unwrap());
        let names = NamespaceNames::load(&records).await.unwrap();
        assert!(names.problems("a", "b-c").is_empty());
    }
}
