//! Static bearer tokens: SHA-256 hashes in config or in a file, each naming a subject and groups.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthError, Principal};

/// One `[[auth.tokens]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TokenConfig {
    /// Who the token's bearer is: used as the caller's GitHub login in policy.
    pub subject: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Lowercase hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
}

/// The shape of `auth.tokens-file`: the same entries as `[[auth.tokens]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenConfig>,
}

/// The hashes to check presented tokens against.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
struct Entry {
    hash: [u8; 32],
    principal: Principal,
}

impl Tokens {
    /// Checks and indexes the entries.
    ///
    /// # Errors
    /// An entry without a subject or with a hash that is not 64 hex digits, named by its
    /// position and subject.
    pub fn new(configs: &[TokenConfig]) -> Result<Self, AuthError> {
        let entries = configs
            .iter()
            .enumerate()
            .map(|(i, config)| {
                let at = format!("auth.tokens[{i}] (subject {:?})", config.subject);
                if config.subject.trim().is_empty() {
                    return Err(AuthError::Config(format!("{at}: subject is empty")));
                }
                let mut hash = [0u8; 32];
                hex::decode_to_slice(config.sha256.trim(), &mut hash).map_err(|_| {
                    AuthError::Config(format!(
                        "{at}: sha256 must be the 64 hex digits of the token's SHA-256"
                    ))
                })?;
                let principal =
                    Principal { id: config.subject.clone(), groups: config.groups.clone() };
                Ok(Entry { hash, principal })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// Reads the entries of a tokens file (TOML, `[[tokens]]` tables).
    ///
    /// # Errors
    /// The file cannot be read or parsed.
    pub fn read_file(path: &Path) -> Result<Vec<TokenConfig>, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::Config(format!("auth.tokens-file {}: {e}", path.display())))?;
        let file: TokensFile = toml::from_str(&text)
            .map_err(|e| AuthError::Config(format!("auth.tokens-file {}: {e}", path.display())))?;
        Ok(file.tokens)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal whose hash matches `token`. Every entry is compared, in constant time, so
    /// the answer's timing says nothing about which hashes exist.
    pub fn find(&self, token: &str) -> Option<Principal> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&presented)) && found.is_none() {
                found = Some(entry.principal.clone());
            }
        }
        found
    }
}

/// Lowercase hex SHA-256 of a token, as `sha256` entries hold it.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(subject: &str, token: &str) -> TokenConfig {
        TokenConfig { subject: subject.into(), groups: vec!["g".into()], sha256: hash(token) }
    }

    #[test]
    fn a_token_is_found_by_its_hash_only() {
        let tokens = Tokens::new(&[entry("alice", "s3cret"), entry("bob", "other")]).unwrap();
        assert_eq!(tokens.find("s3cret").unwrap().id, "alice");
        assert_eq!(tokens.find("other").unwrap().id, "bob");
        assert!(tokens.find("s3cre").is_none());
        assert!(tokens.find("").is_none());
    }

    #[test]
    fn bad_entries_are_named() {
        let mut bad = entry("alice", "x");
        bad.sha256 = "abc".into();
        let err = Tokens::new(&[bad]).unwrap_err().to_string();
        assert!(err.contains("auth.tokens[0]") && err.contains("64 hex digits"), "{err}");
        let err = Tokens::new(&[entry(" ", "x")]).unwrap_err().to_string();
        assert!(err.contains("subject is empty"), "{err}");
    }

    #[test]
    fn a_tokens_file_holds_the_same_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(
            &path,
            format!(
                "[[tokens]]\nsubject = \"ci\"\ngroups = [\"deployers\"]\nsha256 = \"{}\"\n",
                hash("t")
            ),
        )
        .unwrap();
        let tokens = Tokens::new(&Tokens::read_file(&path).unwrap()).unwrap();
        assert_eq!(tokens.find("t").unwrap().groups, vec!["deployers".to_owned()]);
        std::fs::write(&path, "[[tokens]]\nsubject = \"ci\"\n").unwrap();
        assert!(Tokens::read_file(&path).unwrap_err().to_string().contains("sha256"));
    }
}
