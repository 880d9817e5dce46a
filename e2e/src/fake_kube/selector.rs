//! Label and field selectors in the query-string syntax of `labelSelector=` and
//! `fieldSelector=`.
//!
//! Label selectors: requirements joined by commas (all must hold): `key=value`, `key==value`,
//! `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key`, `!key`, and `key>N` / `key<N` on
//! integer values. `!=` and `notin` also match objects without the key, as in Kubernetes.
//! Keys and values are checked against the label syntax (a name of at most 63 characters,
//! optionally prefixed by a DNS subdomain and `/`).
//!
//! Field selectors: `metadata.name` and `metadata.namespace` with `=`, `==` and `!=`.

use std::collections::BTreeSet;
use std::fmt;

/// A selector that could not be parsed; the message is the API server's 400 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError(pub String);

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SelectorError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Operator {
    Equals(String),
    NotEquals(String),
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
    GreaterThan(i64),
    LessThan(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
}

impl Requirement {
    fn matches<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        let value = label(&self.key);
        match &self.operator {
            Operator::Equals(v) => value == Some(v.as_str()),
            Operator::NotEquals(v) => value != Some(v.as_str()),
            Operator::In(vs) => value.is_some_and(|v| vs.contains(v)),
            Operator::NotIn(vs) => value.is_none_or(|v| !vs.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan(n) => {
                value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n)
            }
            Operator::LessThan(n) => {
                value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n)
            }
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses `labelSelector=` syntax.
    ///
    /// # Errors
    /// A requirement is malformed or a key or value is not valid label syntax.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(selector) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(requirement(part)?);
        }
        Ok(LabelSelector(requirements))
    }

    /// Whether an object whose labels are given by `label` (key → value) matches.
    pub fn matches<'a>(&self, label: impl Fn(&str) -> Option<&'a str> + Copy) -> bool {
        self.0.iter().all(|r| r.matches(label))
    }
}

/// Splits at commas outside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0_i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn requirement(part: &str) -> Result<Requirement, SelectorError> {
    let invalid =
        |why: &str| SelectorError(format!("unable to parse requirement: {part:?}: {why}"));
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        check_key(key).map_err(|e| invalid(&e))?;
        return Ok(Requirement { key: key.to_owned(), operator: Operator::DoesNotExist });
    }
    if let Some(open) = part.find('(') {
        let mut words = part[..open].split_whitespace();
        let (Some(key), Some(op), None) = (words.next(), words.next(), words.next()) else {
            return Err(invalid("expected `key in (...)` or `key notin (...)`"));
        };
        let Some(list) = part[open + 1..].strip_suffix(')') else {
            return Err(invalid("missing closing parenthesis"));
        };
        check_key(key).map_err(|e| invalid(&e))?;
        let values: BTreeSet<String> = list.split(',').map(|v| v.trim().to_owned()).collect();
        if list.trim().is_empty() {
            return Err(invalid("for 'in', 'notin' operators, values set can't be empty"));
        }
        for value in &values {
            check_value(value).map_err(|e| invalid(&e))?;
        }
        let operator = match op {
            "in" => Operator::In(values),
            "notin" => Operator::NotIn(values),
            _ => return Err(invalid(&format!("unknown operator {op:?}"))),
        };
        return Ok(Requirement { key: key.to_owned(), operator });
    }
    let split = ["==", "!=", "=", ">", "<"]
        .iter()
        .find_map(|op| part.split_once(op).map(|(k, v)| (k, *op, v)));
    let Some((key, op, value)) = split else {
        check_key(part).map_err(|e| invalid(&e))?;
        return Ok(Requirement { key: part.to_owned(), operator: Operator::Exists });
    };
    let (key, value) = (key.trim(), value.trim());
    check_key(key).map_err(|e| invalid(&e))?;
    let number = || {
        value
            .parse::<i64>()
            .map_err(|_| invalid("for 'Gt', 'Lt' operators, the value must be an integer"))
    };
    let operator = match op {
        ">" => Operator::GreaterThan(number()?),
        "<" => Operator::LessThan(number()?),
        _ => {
            check_value(value).map_err(|e| invalid(&e))?;
            if op == "!=" {
                Operator::NotEquals(value.to_owned())
            } else {
                Operator::Equals(value.to_owned())
            }
        }
    };
    Ok(Requirement { key: key.to_owned(), operator })
}

/// A label name: at most 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn is_label_name(s: &str) -> bool {
    let edges_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63 && edges_ok && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A label as it may be stored on an object.
pub(super) fn check_label(key: &str, value: &str) -> Result<(), String> {
    check_key(key)?;
    check_value(value)
}

fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let dns = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            });
        if !dns {
            return Err(format!("prefix part of {key:?} must be a DNS subdomain"));
        }
    }
    if is_label_name(name) {
        Ok(())
    } else {
        Err(format!("name part of {key:?} is not a valid label name"))
    }
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!("{value:?} is not a valid label value"))
    }
}

/// A parsed field selector on `metadata.name` / `metadata.namespace`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(Field, bool, String)>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

impl FieldSelector {
    /// Parses `fieldSelector=` syntax.
    ///
    /// # Errors
    /// A term is malformed or names a field other than `metadata.name` / `metadata.namespace`.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{selector}'; can't understand '{term}'"
                )));
            };
            let field = match field.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => return Err(SelectorError(format!("field label not supported: {other}"))),
            };
            terms.push((field, equal, value.trim().to_owned()));
        }
        Ok(FieldSelector(terms))
    }

    /// Whether an object with this namespace (`""` when cluster-scoped) and name matches.
    pub fn matches(&self, namespace: &str, name: &str) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let actual = match field {
                Field::Name => name,
                Field::Namespace => namespace,
            };
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn matches(selector: &str, pairs: &[(&str, &str)]) -> bool {
        let labels = labels(pairs);
        LabelSelector::parse(selector)
            .expect("parses")
            .matches(|k| labels.get(k).map(String::as_str))
    }

    #[test]
    fn equality_operators() {
        assert!(matches("team=a", &[("team", "a")]));
        assert!(matches("team==a", &[("team", "a")]));
        assert!(!matches("team=a", &[("team", "b")]));
        assert!(!matches("team=a", &[]));
        assert!(matches("team!=a", &[("team", "b")]));
        assert!(matches("team!=a", &[]), "!= matches objects without the key");
        assert!(!matches("team!=a", &[("team", "a")]));
    }

    #[test]
    fn set_operators() {
        assert!(matches("env in (dev, prod)", &[("env", "prod")]));
        assert!(!matches("env in (dev,prod)", &[("env", "qa")]));
        assert!(!matches("env in (dev)", &[]));
        assert!(matches("env notin (dev,prod)", &[("env", "qa")]));
        assert!(matches("env notin (dev)", &[]), "notin matches objects without the key");
        assert!(!matches("env notin (dev,prod)", &[("env", "dev")]));
    }

    #[test]
    fn existence_operators() {
        assert!(matches("muster.io/team", &[("muster.io/team", "")]));
        assert!(!matches("muster.io/team", &[]));
        assert!(matches("!muster.io/team", &[]));
        assert!(!matches("! muster.io/team", &[("muster.io/team", "x")]));
    }

    #[test]
    fn commas_join_requirements_and_the_empty_selector_matches_all() {
        let both = &[("muster.io/team", "a"), ("env", "dev")];
        assert!(matches("muster.io/team=a,env in (dev,qa),!legacy", both));
        assert!(!matches("muster.io/team=a,env=prod", both));
        assert!(matches("", &[]));
    }

    #[test]
    fn numeric_comparisons() {
        assert!(matches("tier>1", &[("tier", "2")]));
        assert!(!matches("tier<1", &[("tier", "2")]));
        assert!(!matches("tier>1", &[("tier", "x")]));
    }

    #[test]
    fn malformed_selectors_are_rejected() {
        for bad in [
            "env in dev",
            "env in ()",
            "a b",
            "team=a b",
            "-bad=1",
            "UPPER.io/x=1",
            "t>x",
            "env on (a)",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn field_selectors_on_name_and_namespace() {
        let s = FieldSelector::parse("metadata.name=q1,metadata.namespace!=kube-system")
            .expect("parses");
        assert!(s.matches("team-a", "q1"));
        assert!(!s.matches("kube-system", "q1"));
        assert!(!s.matches("team-a", "q2"));
        assert!(FieldSelector::parse("metadata.name==x").expect("parses").matches("", "x"));
        assert_eq!(
            FieldSelector::parse("spec.x=1"),
            Err(SelectorError("field label not supported: spec.x".into()))
        );
    }
}
