//! Field validation shared by every record type.
//!
//! Validators never stop at the first problem: they push every [`FieldError`] into a
//! collector so that a caller (an API client, an operator at the CLI) sees the whole
//! list at once, each with the path of the offending field (`members[2]`, `default_quota["cpu"]`).

use std::collections::BTreeMap;
use std::fmt;

/// Longest DNS-1123 label (RFC 1123, as Kubernetes applies it to namespace names).
pub const MAX_DNS_LABEL_LEN: usize = 63;
/// Longest GitHub login GitHub accepts.
pub const MAX_GITHUB_LOGIN_LEN: usize = 39;
/// Longest team display name.
pub const MAX_NAME_LEN: usize = 255;
/// Longest team description.
pub const MAX_DESCRIPTION_LEN: usize = 2048;
/// Most members (or maintainers) one team may list.
pub const MAX_LOGINS: usize = 5000;
/// Most labels, quota entries or clusters one record may carry.
pub const MAX_MAP_ENTRIES: usize = 256;
/// Longest Kubernetes label value.
pub const MAX_LABEL_VALUE_LEN: usize = 63;
/// Longest Kubernetes label key prefix (a DNS-1123 subdomain).
pub const MAX_LABEL_PREFIX_LEN: usize = 253;
/// Longest free-text message stored on a record (cluster status messages).
pub const MAX_MESSAGE_LEN: usize = 4096;

/// One problem with one field of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `members[2]` or `default_quota["cpu"]`.
    pub path: String,
    /// What is wrong with it, in words meant for the person who sent it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one record; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    /// The problems, in the order the fields were checked.
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Collects [`FieldError`]s while a record is checked.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<FieldError>);

impl Problems {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { path: path.into(), message: message.into() });
    }

    pub(crate) fn finish(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(ValidationErrors(self.0)) }
    }

    /// `path` must be a DNS-1123 label: 1–63 lowercase alphanumerics or `-`, starting and
    /// ending with an alphanumeric.
    pub(crate) fn dns_label(&mut self, path: &str, value: &str) {
        if !is_dns_label(value) {
            self.push(
                path,
                format!(
                    "{value:?} is not a DNS-1123 label (1-{MAX_DNS_LABEL_LEN} lowercase letters, \
                     digits or '-', starting and ending with a letter or digit)"
                ),
            );
        }
    }

    /// `path` must be a non-blank string of at most `max` characters.
    pub(crate) fn text(&mut self, path: &str, value: &str, max: usize, required: bool) {
        if required && value.trim().is_empty() {
            self.push(path, "must not be empty");
        }
        let len = value.chars().count();
        if len > max {
            self.push(path, format!("is {len} characters long, at most {max} allowed"));
        }
    }

    /// A map from Kubernetes resource names to quantities (`cpu` → `500m`).
    pub(crate) fn quantities(&mut self, path: &str, map: &BTreeMap<String, String>) {
        if map.len() > MAX_MAP_ENTRIES {
            self.push(
                path,
                format!("has {} entries, at most {MAX_MAP_ENTRIES} allowed", map.len()),
            );
        }
        for (resource, quantity) in map {
            let entry = format!("{path}[{resource:?}]");
            if !is_resource_name(resource) {
                self.push(&entry, format!("{resource:?} is not a Kubernetes resource name"));
            }
            if !is_quantity(quantity) {
                self.push(
                    &entry,
                    format!(
                        "{quantity:?} is not a Kubernetes quantity (e.g. \"500m\", \"2Gi\", \"10\")"
                    ),
                );
            }
        }
    }

    /// Kubernetes labels: keys `[prefix/]name`, values of at most 63 characters.
    pub(crate) fn labels(&mut self, path: &str, map: &BTreeMap<String, String>) {
        if map.len() > MAX_MAP_ENTRIES {
            self.push(
                path,
                format!("has {} entries, at most {MAX_MAP_ENTRIES} allowed", map.len()),
            );
        }
        for (key, value) in map {
            let entry = format!("{path}[{key:?}]");
            if !is_label_key(key) {
                self.push(&entry, format!("{key:?} is not a Kubernetes label key ([prefix/]name)"));
            }
            if !is_label_value(value) {
                self.push(
                    &entry,
                    format!(
                        "{value:?} is not a Kubernetes label value (at most \
                         {MAX_LABEL_VALUE_LEN} alphanumerics, '-', '_' or '.', starting and \
                         ending with an alphanumeric)"
                    ),
                );
            }
        }
    }
}

/// Whether `s` is a DNS-1123 label of at most 63 characters.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_DNS_LABEL_LEN
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is a DNS-1123 subdomain: dot-separated labels, at most 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_LABEL_PREFIX_LEN && s.split('.').all(is_dns_label)
}

/// Whether `s` is a valid GitHub login, at most 39 characters: 1 or more ASCII alphanumerics
/// or single hyphens, neither starting nor ending with a hyphen; or an Enterprise Managed User's
/// `<handle>_<shortcode>`, such a handle, an underscore and the enterprise's alphanumeric short
/// code.
pub fn is_github_login(s: &str) -> bool {
    let plain = |part: &str| {
        let b = part.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
            && !part.contains("--")
    };
    let valid = match s.split_once('_') {
        None => plain(s),
        Some((handle, shortcode)) => {
            plain(handle)
                && !shortcode.is_empty()
                && shortcode.bytes().all(|c| c.is_ascii_alphanumeric())
        }
    };
    valid && s.len() <= MAX_GITHUB_LOGIN_LEN
}

/// Whether `s` is a Kubernetes quantity as a quota or limit takes it: an unsigned decimal
/// number with an optional binary-SI (`Ki`…`Ei`), decimal-SI (`n`, `u`, `m`, `k`, `M`…`E`) or
/// exponent (`e3`, `E-2`) suffix.
///
/// Negative quantities parse in Kubernetes but mean nothing for a quota, so they are refused.
pub fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix('+').unwrap_or(s);
    let number_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    if !is_decimal(number) {
        return false;
    }
    match suffix {
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => true,
        _ => match suffix.strip_prefix(['e', 'E']) {
            Some(exp) => {
                let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit())
            }
            None => false,
        },
    }
}

/// `<digits>`, `<digits>.<digits>`, `<digits>.` or `.<digits>`.
fn is_decimal(s: &str) -> bool {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |p: &str| p.bytes().all(|c| c.is_ascii_digit());
    match frac {
        None => !int.is_empty() && digits(int),
        Some(f) => (!int.is_empty() || !f.is_empty()) && digits(int) && digits(f),
    }
}

/// Whether `s` names a Kubernetes resource in a quota or limit range: `cpu`,
/// `requests.memory`, `count/deployments.apps`, `requests.nvidia.com/gpu`.
fn is_resource_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_PREFIX_LEN
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'/'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// alphanumerics, `-`, `_` or `.`, starting and ending with an alphanumeric.
fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

/// A label value: empty, or at most 63 alphanumerics, `-`, `_` or `.`, starting and ending
/// with an alphanumeric.
fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= MAX_LABEL_VALUE_LEN
            && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "payments", "team-1", "0abc", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "é", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn github_logins() {
        // Enterprise Managed Users: `<handle>_<shortcode>`.
        let emu = ["alice_acme", "mona-lisa_octo", "a_1"];
        for ok in ["a", "octocat", "Octo-Cat", "a1-b2-c3", &"a".repeat(39)].iter().chain(&emu) {
            assert!(is_github_login(ok), "{ok}");
        }
        let bad_emu = ["_acme", "alice_", "alice_ac-me", "a_b_c", "-alice_acme"];
        let long_emu = format!("{}_acme", "a".repeat(35));
        for bad in ["", "-bad", "bad-", "dou--ble", "dot.ted", &"a".repeat(40), &long_emu]
            .iter()
            .chain(&bad_emu)
        {
            assert!(!is_github_login(bad), "{bad}");
        }
    }

    #[test]
    fn quantities() {
        for ok in [
            "10", "500m", "2Gi", "1.5", ".5", "5.", "1e3", "1E-2", "+1", "100Ki", "3Ei", "0", "2k",
            "250n", "7u",
        ] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in
            ["", "-1", "Gi", "1 Gi", "1gi", "1.2.3", ".", "1e", "1e+", "1Ki2", "abc", "1KiB", "1mm"]
        {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn labels_and_resources() {
        assert!(is_label_key("app.kubernetes.io/name"));
        assert!(is_label_key("cost-center"));
        assert!(!is_label_key("/name"));
        assert!(!is_label_key("Bad_Prefix/name"));
        assert!(!is_label_key(""));
        assert!(is_label_value(""));
        assert!(is_label_value("v1.2_3"));
        assert!(!is_label_value("-x"));
        assert!(is_resource_name("requests.nvidia.com/gpu"));
        assert!(is_resource_name("count/deployments.apps"));
        assert!(!is_resource_name("cpu "));
    }

    #[test]
    fn display_lists_every_problem() {
        let mut p = Problems::default();
        p.dns_label("slug", "Bad");
        p.text("name", "", 10, true);
        let err = p.finish().unwrap_err();
        assert_eq!(err.errors().len(), 2);
        let text = err.to_string();
        assert!(text.starts_with("slug: \"Bad\" is not a DNS-1123 label"), "{text}");
        assert!(text.contains("; name: must not be empty"), "{text}");
    }
}
