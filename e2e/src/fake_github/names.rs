//! GitHub's naming rules, as the fake applies them: the slug GitHub derives from a team name,
//! and which strings can be the login of an account.
//!
//! The fake keeps its own copy of these rules rather than Muster's, so a test of Muster's slug
//! or login handling is not checked against itself.

/// The slug GitHub derives from a team name.
///
/// GitHub documents only an outline ("Get a team by name", REST API description): "To create
/// the slug, GitHub replaces special characters in the name string, changes all words to
/// lowercase, and replaces spaces with a - separator. For example, "My TEam Näme" would become
/// my-team-name." The details below are what users have observed, and they match Rails'
/// `parameterize`:
///
/// - letters with diacritics become their base letters (`ä` → `a`, `ß` → `ss`), as the
///   documented example shows; any other character outside ASCII counts as special;
/// - a run of characters other than ASCII letters, digits, `_` and `-` becomes one `-`;
/// - underscores are kept, runs of them too (observed in
///   mineiros-io/terraform-github-repository#78: "If a GitHub team has an underscore in the
///   team name, that underscore is present in the slug"; ghclass' `is_slug` says "sequences of
///   underscores are allowed");
/// - runs of `-` shrink to one, and no `-` is left at either end ("without 2 or more dashes in a
///   row … a slug cannot start or end with a hyphen", ghclass);
/// - the result is lower case.
///
/// Whether GitHub transliterates beyond Latin-1 and Latin Extended-A, and what slug it gives a
/// name with no letter or digit it keeps (`"日本"`, `"!!!"`), is not documented: this gives the
/// empty string, and the fake refuses such a name.
pub(crate) fn team_slug(name: &str) -> String {
    let mut ascii = String::with_capacity(name.len());
    for c in name.chars() {
        match latin_base(c) {
            Some(base) => ascii.push_str(base),
            None if c.is_ascii() => ascii.push(c),
            None => ascii.push('?'),
        }
    }
    let mut dashed = String::with_capacity(ascii.len());
    for c in ascii.chars() {
        let kept = c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if kept {
            dashed.push(c);
        } else if !dashed.ends_with('-') {
            dashed.push('-');
        }
    }
    let mut slug = String::with_capacity(dashed.len());
    for c in dashed.chars() {
        if !(c == '-' && slug.ends_with('-')) {
            slug.push(c);
        }
    }
    slug.trim_matches('-').to_ascii_lowercase()
}

/// The base letters of a Latin letter with diacritics (Latin-1 Supplement and Latin
/// Extended-A), lower-cased because slugs are.
fn latin_base(c: char) -> Option<&'static str> {
    Some(match c {
        'À'..='Å' | 'à'..='å' | 'Ā'..='ą' => "a",
        'Æ' | 'æ' => "ae",
        'Ç' | 'ç' | 'Ć'..='č' => "c",
        'Ð' | 'ð' | 'Ď'..='đ' => "d",
        'È'..='Ë' | 'è'..='ë' | 'Ē'..='ě' => "e",
        'Ĝ'..='ģ' => "g",
        'Ĥ'..='ħ' => "h",
        'Ì'..='Ï' | 'ì'..='ï' | 'Ĩ'..='ı' => "i",
        'Ĳ' | 'ĳ' => "ij",
        'Ĵ' | 'ĵ' => "j",
        'Ķ'..='ĸ' => "k",
        'Ĺ'..='ł' => "l",
        'Ñ' | 'ñ' | 'Ń'..='ŉ' => "n",
        'Ŋ' | 'ŋ' => "ng",
        'Ò'..='Ö' | 'Ø' | 'ò'..='ö' | 'ø' | 'Ō'..='ő' => "o",
        'Œ' | 'œ' => "oe",
        'Ŕ'..='ř' => "r",
        'ß' => "ss",
        'Ś'..='š' | 'ſ' => "s",
        'Ţ'..='ŧ' => "t",
        'Þ' | 'þ' => "th",
        'Ù'..='Ü' | 'ù'..='ü' | 'Ũ'..='ų' => "u",
        'Ŵ' | 'ŵ' => "w",
        'Ý' | 'ý' | 'ÿ' | 'Ŷ'..='Ÿ' => "y",
        'Ź'..='ž' => "z",
        _ => return None,
    })
}

/// The longest login GitHub allows ("Usernames must not exceed 39 characters", "Username
/// considerations for external authentication").
const MAX_LOGIN_LEN: usize = 39;

/// Whether `login` can be the login of a GitHub account.
///
/// A login is letters, digits and `-`, not starting with `-` (GitHub: "Usernames … can only
/// contain alphanumeric characters and dashes"). An Enterprise Managed User's login also ends
/// in `_` and the enterprise's shortcode ("GitHub also adds an underscore and your enterprise's
/// shortcode to the end of each username"; a shortcode "is an alphanumeric string between three
/// and eight characters"), e.g. `alice_acme`, and the setup user's is `SHORTCODE_admin`.
/// App bots are `slug[bot]`. Old accounts may end in `-` or hold `--`, so those are accepted.
pub(crate) fn is_login(login: &str) -> bool {
    if let Some(app) = login.strip_suffix("[bot]") {
        return is_handle(app);
    }
    if login.len() > MAX_LOGIN_LEN {
        return false;
    }
    match login.rsplit_once('_') {
        Some((handle, shortcode)) => {
            is_handle(handle)
                && (3..=8).contains(&shortcode.len())
                && shortcode.chars().all(|c| c.is_ascii_alphanumeric())
        }
        None => is_handle(login),
    }
}

fn is_handle(handle: &str) -> bool {
    !handle.is_empty()
        && !handle.starts_with('-')
        && handle.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_githubs_rules() {
        for (name, slug) in [
            ("Platform", "platform"),
            ("Platform Team", "platform-team"),
            // GitHub's own example.
            ("My TEam Näme", "my-team-name"),
            ("  SRE / On-Call!! ", "sre-on-call"),
            ("a__b--c", "a__b-c"),
            ("snake_case_team", "snake_case_team"),
            ("_private_", "_private_"),
            ("v1.2 release", "v1-2-release"),
            ("a - b", "a-b"),
            ("a---b", "a-b"),
            ("Team 42", "team-42"),
            ("Straße", "strasse"),
            ("Łódź Œuvre", "lodz-oeuvre"),
            ("Ünïcødé", "unicode"),
            ("日本 Team", "team"),
            ("Team 日本 Ops", "team-ops"),
            ("C++ & C#", "c-c"),
            ("-leading and trailing-", "leading-and-trailing"),
            ("日本", ""),
            ("!!!", ""),
        ] {
            assert_eq!(team_slug(name), slug, "{name:?}");
        }
    }

    #[test]
    fn logins_follow_githubs_rules() {
        for login in
            ["alice", "Alice", "a", "muster-bot", "alice_acme", "acme_admin", "old-", "muster[bot]"]
        {
            assert!(is_login(login), "{login:?}");
        }
        for login in [
            "",
            "-alice",
            "al ice",
            "alice.b",
            "alice_",
            "alice_ab",
            "alice_toolongcode",
            "_acme",
            "a".repeat(40).as_str(),
            "caf\u{e9}",
        ] {
            assert!(!is_login(login), "{login:?}");
        }
    }
}
