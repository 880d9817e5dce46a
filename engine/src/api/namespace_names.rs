//! The namespace names a new team or environment would bring: refused before it is stored.
//!
//! A namespace is named `<team>-<environment>`; only creating a team or an environment brings
//! new pairs (a slug or a name never changes: `PUT` and `PATCH` refuse it). An over-long name is
//! a 422 `validation` on the new record's key; a name another pair already derives is a 409
//! `conflict` naming that pair.
//!
//! # Not transactional
//! The check reads every team and environment, then the handler writes: two creations racing
//! (`a-b` and `a`, with `c` and `b-c` already there) can both pass. What follows is refused,
//! never clobbered: the records store keeps namespace names unique, so `sync_team`'s second
//! upsert of `a-b-c` fails (`AlreadyExists`, a permanent run error, a dead letter), and an
//! agent finding a namespace labelled for another team or environment reports `conflict` and
//! leaves it alone. Deleting one of the two teams ends it.

use workflows::records::validation::MAX_DNS_LABEL_LEN;
use workflows::records::{NamespaceNameProblem, NamespaceNames};

use super::AppState;
use super::problem::{FieldProblem, Problem, ProblemKind};

/// Most problems one answer lists (a new environment is checked against every team).
const MAX_LISTED: usize = 20;

/// `Ok` when the new team `slug` gets a distinct namespace name of at most 63 characters in
/// every environment.
pub(crate) async fn check_new_team(state: &AppState, slug: &str) -> Result<(), Problem> {
    let names = NamespaceNames::load(state.records.as_ref()).await?;
    answer(&format!("team {slug:?}"), "slug", names.problems_of_team(slug))
}

/// `Ok` when the new environment `name` gives every team a distinct namespace name of at most
/// 63 characters.
pub(crate) async fn check_new_environment(state: &AppState, name: &str) -> Result<(), Problem> {
    let names = NamespaceNames::load(state.records.as_ref()).await?;
    answer(&format!("environment {name:?}"), "name", names.problems_of_environment(name))
}

/// 422 with a field error on `field` for each over-long name; else 409 naming each clash.
fn answer(what: &str, field: &str, problems: Vec<NamespaceNameProblem>) -> Result<(), Problem> {
    let (too_long, taken): (Vec<_>, Vec<_>) =
        problems.into_iter().partition(|p| matches!(p, NamespaceNameProblem::TooLong { .. }));
    if !too_long.is_empty() {
        let errors: Vec<FieldProblem> = too_long
            .iter()
            .take(MAX_LISTED)
            .map(|p| FieldProblem {
                path: field.to_owned(),
                message: format!(
                    "the namespace {:?} would be {} characters, at most {MAX_DNS_LABEL_LEN} ({})",
                    p.name(),
                    p.name().len(),
                    pair(p)
                ),
            })
            .collect();
        let detail = format!(
            "{what} would give {} namespace name(s) longer than a Kubernetes namespace name \
             (a DNS-1123 label, at most {MAX_DNS_LABEL_LEN} characters): {}",
            too_long.len(),
            listed(&too_long)
        );
        return Err(Problem::new(ProblemKind::Validation, detail).with_errors(errors));
    }
    if !taken.is_empty() {
        let detail = format!(
            "{what} would give a namespace name another team and environment already have: {}",
            listed(&taken)
        );
        return Err(Problem::new(ProblemKind::Conflict, detail));
    }
    Ok(())
}

/// `team "a" in environment "b-c"`.
fn pair(problem: &NamespaceNameProblem) -> String {
    match problem {
        NamespaceNameProblem::TooLong { team, environment, .. }
        | NamespaceNameProblem::Taken { team, environment, .. } => {
            format!("team {team:?} in environment {environment:?}")
        }
    }
}

/// The first [`MAX_LISTED`] problems, `; `-separated, and how many more there are.
fn listed(problems: &[NamespaceNameProblem]) -> String {
    let mut text =
        problems.iter().take(MAX_LISTED).map(ToString::to_string).collect::<Vec<_>>().join("; ");
    if problems.len() > MAX_LISTED {
        text.push_str(&format!("; and {} more", problems.len() - MAX_LISTED));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_over_long_name_is_a_validation_problem_on_the_key() {
        let names = NamespaceNames::new(["a-b"], ["prod", "c", "b-c"]);
        let long = "t".repeat(59);
        let p = answer("team", "slug", names.problems_of_team(&long)).unwrap_err();
        assert_eq!(p.status, 422);
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].path, "slug");
        assert_eq!(
            p.errors[0].message,
            format!(
                "the namespace \"{long}-prod\" would be 64 characters, at most 63 \
                 (team \"{long}\" in environment \"prod\")"
            )
        );
        let p = answer("team \"a\"", "slug", names.problems_of_team("a")).unwrap_err();
        assert_eq!(p.status, 409);
        assert!(p.type_uri.ends_with("/conflict"), "{p:?}");
        assert!(p.detail.contains("\"a-b-c\""), "{}", p.detail);
        assert!(p.detail.contains("team \"a-b\" in environment \"c\""), "{}", p.detail);
        answer("team", "slug", names.problems_of_team("payments")).unwrap();
    }
}
