//! [`plan_members`]: the authoritative member sync as a pure function of (desired, observed).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::port::{Member, MembershipState, Role};
use crate::workflow::RunError;

/// Refuse a sync that removes more than this fraction of a team's current members…
pub const DEFAULT_MAX_REMOVAL_FRACTION: f64 = 0.25;
/// …and more than this many people.
pub const DEFAULT_MAX_REMOVALS_ABSOLUTE: usize = 3;
/// Refuse a sync that removes more than this fraction of a team, whatever its size.
pub const DEFAULT_MAX_REMOVAL_MAJORITY: f64 = 0.5;
/// A team keeps at least this many maintainers.
pub const DEFAULT_MIN_MAINTAINERS: usize = 1;

/// The safety rules a plan must pass.
///
/// The mass-removal guard counts the team's current members (active and pending) except the
/// acting identity, which is never removed: those are the people a plan can remove. Unless
/// [`Guards::allow_mass_removal`], a plan is refused ([`RemovalRule`]) when it removes
/// - every one of them (a team of any size emptied or replaced in one run);
/// - more than [`Guards::max_removal_majority`] of them;
/// - more than [`Guards::max_removal_fraction`] of them *and* more than
///   [`Guards::max_removals_absolute`] people.
#[derive(Debug, Clone, PartialEq)]
pub struct Guards {
    /// Together with [`Guards::max_removals_absolute`]: a plan removing more than this fraction
    /// of the current members *and* more than that many people is refused.
    pub max_removal_fraction: f64,
    pub max_removals_absolute: usize,
    /// For every team size: a plan removing more than this fraction of the current members is
    /// refused. 1.0 turns this rule off (emptying a team is still refused).
    pub max_removal_majority: f64,
    /// The desired state must name at least this many maintainers.
    pub min_maintainers: usize,
    /// The identity Muster acts as: never removed, never demoted.
    pub acting_login: Option<String>,
    /// An operator's per-run override of the mass-removal guard.
    pub allow_mass_removal: bool,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            max_removal_fraction: DEFAULT_MAX_REMOVAL_FRACTION,
            max_removals_absolute: DEFAULT_MAX_REMOVALS_ABSOLUTE,
            max_removal_majority: DEFAULT_MAX_REMOVAL_MAJORITY,
            min_maintainers: DEFAULT_MIN_MAINTAINERS,
            acting_login: None,
            allow_mass_removal: false,
        }
    }
}

/// A login to add with a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub login: String,
    pub role: Role,
}

/// An active member whose role changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleChange {
    pub login: String,
    pub from: Role,
    pub to: Role,
}

/// What a member sync will do. Logins keep the desired list's spelling where desired, GitHub's
/// otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberPlan {
    pub add: Vec<Assignment>,
    pub change_role: Vec<RoleChange>,
    /// Members to remove; for a pending login this cancels the invitation.
    pub remove: Vec<String>,
    /// Desired logins whose invitation is pending: in progress, not sent again.
    pub pending_untouched: Vec<String>,
    /// Observed logins the plan leaves alone although the desired state says otherwise: the
    /// acting identity.
    pub protected: Vec<String>,
    /// Organization owners wanted as members: GitHub reports every owner as a maintainer, so
    /// no role change is sent (it would never take).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    /// Listed only through a child team (GitHub lists child teams' members on the parent):
    /// not members of this team, never removed from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherited: Vec<String>,
    /// Desired logins not added, and why ([`MemberPlan::hold_back`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<Held>,
    /// Active members already as desired.
    pub unchanged: usize,
}

/// A desired login a plan does not add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub login: String,
    pub reason: HoldReason,
}

/// Why a desired login is not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// Not a member of the organization, and `github.invite-non-members` is off.
    NotOrgMember,
    /// Their invitation to the organization expired or failed: inviting again on every sync
    /// would loop; a sync with `reinvite` sends it again.
    InvitationExpired,
}

impl HoldReason {
    pub fn describe(self) -> &'static str {
        match self {
            HoldReason::NotOrgMember => {
                "not a member of the organization and github.invite-non-members is off"
            }
            HoldReason::InvitationExpired => {
                "their invitation to the organization expired; sync with reinvite to send it again"
            }
        }
    }
}

impl MemberPlan {
    /// True when the plan sends nothing.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.change_role.is_empty() && self.remove.is_empty()
    }

    /// How many mutating requests applying the plan sends.
    pub fn mutations(&self) -> usize {
        self.add.len() + self.change_role.len() + self.remove.len()
    }

    /// Moves every addition for which `hold` gives a reason to [`MemberPlan::held`].
    pub fn hold_back(&mut self, mut hold: impl FnMut(&str) -> Option<HoldReason>) {
        let mut kept = Vec::with_capacity(self.add.len());
        for add in std::mem::take(&mut self.add) {
            match hold(&add.login) {
                Some(reason) => self.held.push(Held { login: add.login, reason }),
                None => kept.push(add),
            }
        }
        self.add = kept;
    }
}

/// Why no plan may be applied. Every variant is permanent: the desired state or the guards must
/// change first.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "refusing to remove {} of {current} team members ({}): {rule}; fix the desired members \
         or override the mass-removal guard for this run (allow_mass_removal)",
        logins.len(), logins.join(", ")
    )]
    MassRemoval {
        /// Everyone the plan would remove.
        logins: Vec<String>,
        /// The current members the guard counts (active and pending, not the acting identity).
        current: usize,
        rule: RemovalRule,
    },

    #[error("the team needs at least {minimum} maintainer(s), the desired state names {desired}")]
    TooFewMaintainers { desired: usize, minimum: usize },

    #[error("{login:?} is listed more than once among members and maintainers")]
    DuplicateLogin { login: String },
}

/// Which mass-removal rule refused a plan (see [`Guards`]), with its limits.
#[derive(Debug, Clone, PartialEq)]
pub enum RemovalRule {
    /// The plan removes every member: emptying a team always needs the override.
    Everyone,
    /// More than `limit` of the members (`github.max-removal-majority`).
    Majority { limit: f64 },
    /// More than `fraction` of the members (`github.max-removal-fraction`) and more than
    /// `absolute` people (`github.max-removals-absolute`).
    FractionAndAbsolute { fraction: f64, absolute: usize },
}

impl std::fmt::Display for RemovalRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemovalRule::Everyone => f.write_str("that is every member of the team"),
            RemovalRule::Majority { limit } => write!(
                f,
                "that is more than {}% of them (github.max-removal-majority)",
                percent(*limit)
            ),
            RemovalRule::FractionAndAbsolute { fraction, absolute } => write!(
                f,
                "that is more than {}% of them (github.max-removal-fraction) and more than \
                 {absolute} people (github.max-removals-absolute)",
                percent(*fraction)
            ),
        }
    }
}

/// 0.25 → `25`, 1/3 → `33.3`.
fn percent(fraction: f64) -> String {
    let rounded = (fraction * 1000.0).round() / 10.0;
    if rounded.fract() == 0.0 { format!("{rounded:.0}") } else { format!("{rounded:.1}") }
}

impl From<PlanError> for RunError {
    fn from(e: PlanError) -> Self {
        RunError::permanent(e.to_string())
    }
}

/// Plans an authoritative sync of a team's members and maintainers.
///
/// - A desired login that is not observed is added with its role.
/// - An active member with another role changes role (never demoting the acting identity).
/// - A desired login with a pending invitation is left alone.
/// - An organization owner wanted as a member is left a maintainer (GitHub reports owners as
///   maintainers; a role change would be sent on every run and never take).
/// - Anyone observed and not desired is removed (a pending one has its invitation cancelled),
///   except the acting identity and those listed only through a child team.
///
/// # Errors
/// [`PlanError::DuplicateLogin`] for a login listed twice (case-insensitive),
/// [`PlanError::TooFewMaintainers`] when the desired maintainers are fewer than the minimum,
/// [`PlanError::MassRemoval`] when the removals break a rule of the mass-removal guard (see
/// [`Guards`]) and the run does not override it.
pub fn plan_members(
    members: &[String],
    maintainers: &[String],
    observed: &[Member],
    guards: &Guards,
) -> Result<MemberPlan, PlanError> {
    let mut desired: BTreeMap<String, (&str, Role)> = BTreeMap::new();
    let roles = maintainers
        .iter()
        .map(|l| (l, Role::Maintainer))
        .chain(members.iter().map(|l| (l, Role::Member)));
    for (login, role) in roles {
        if desired.insert(login.to_ascii_lowercase(), (login.as_str(), role)).is_some() {
            return Err(PlanError::DuplicateLogin { login: login.clone() });
        }
    }
    if maintainers.len() < guards.min_maintainers {
        return Err(PlanError::TooFewMaintainers {
            desired: maintainers.len(),
            minimum: guards.min_maintainers,
        });
    }
    let acting = guards.acting_login.as_deref().map(str::to_ascii_lowercase);

    let mut plan = MemberPlan::default();
    let mut seen = BTreeSet::new();
    for member in observed {
        let key = member.login.to_ascii_lowercase();
        if !seen.insert(key.clone()) {
            continue;
        }
        let is_acting = acting.as_deref() == Some(key.as_str());
        match desired.get(&key) {
            Some((login, _)) if member.state == MembershipState::Pending => {
                plan.pending_untouched.push((*login).to_owned());
            }
            Some((_, role)) if *role == member.role => plan.unchanged += 1,
            Some((login, Role::Member)) if member.owner => {
                plan.owners.push((*login).to_owned());
                plan.unchanged += 1;
            }
            Some((login, role)) => {
                if is_acting && member.role == Role::Maintainer {
                    plan.protected.push(member.login.clone());
                } else {
                    plan.change_role.push(RoleChange {
                        login: (*login).to_owned(),
                        from: member.role,
                        to: *role,
                    });
                }
            }
            None if is_acting => plan.protected.push(member.login.clone()),
            None if member.inherited_from.is_some() => plan.inherited.push(member.login.clone()),
            None => plan.remove.push(member.login.clone()),
        }
    }
    for (key, (login, role)) in &desired {
        if !seen.contains(key) {
            plan.add.push(Assignment { login: (*login).to_owned(), role: *role });
        }
    }

    if guards.allow_mass_removal {
        return Ok(plan);
    }
    // The acting identity is never removed, so it does not count: otherwise a team of one
    // person and Muster's own login could lose that person as "half" of the team. Nor do
    // members listed through a child team, who are never removed either.
    let acting_seen = acting.as_ref().is_some_and(|a| seen.contains(a));
    let current = seen.len() - usize::from(acting_seen) - plan.inherited.len();
    match removal_rule(plan.remove.len(), current, guards) {
        Some(rule) => Err(PlanError::MassRemoval { logins: plan.remove, current, rule }),
        None => Ok(plan),
    }
}

/// The first mass-removal rule that removing `removals` of `current` members breaks.
fn removal_rule(removals: usize, current: usize, guards: &Guards) -> Option<RemovalRule> {
    let share = |limit: f64| removals as f64 > limit * current as f64;
    if removals == 0 {
        None
    } else if removals >= current {
        Some(RemovalRule::Everyone)
    } else if share(guards.max_removal_majority) {
        Some(RemovalRule::Majority { limit: guards.max_removal_majority })
    } else if removals > guards.max_removals_absolute && share(guards.max_removal_fraction) {
        Some(RemovalRule::FractionAndAbsolute {
            fraction: guards.max_removal_fraction,
            absolute: guards.max_removals_absolute,
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logins(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    /// `observed` as `login:role[:pending|:owner|:child]`, roles `m` (member) and `M`
    /// (maintainer); `owner` an organization owner, `child` listed through a child team.
    fn observed(s: &str) -> Vec<Member> {
        s.split_whitespace()
            .map(|item| {
                let mut parts = item.split(':');
                let login = parts.next().unwrap();
                let role = if parts.next() == Some("M") { Role::Maintainer } else { Role::Member };
                match parts.next() {
                    Some("pending") => Member::pending(login, role),
                    Some("owner") => Member::active(login, role).as_owner(),
                    Some("child") => Member::active(login, role).via_child("sub"),
                    _ => Member::active(login, role),
                }
            })
            .collect()
    }

    struct Case {
        name: &'static str,
        members: &'static str,
        maintainers: &'static str,
        observed: &'static str,
        acting: Option<&'static str>,
        allow_mass_removal: bool,
        /// `+login:role`, `~login:to`, `-login`, `?login` (pending untouched), `!login`
        /// (protected), `^login` (owner left maintainer), `<login` (through a child team), or
        /// `error:<variant>`.
        expect: &'static str,
    }

    fn render(plan: &MemberPlan) -> String {
        let role = |r: Role| if r == Role::Maintainer { "M" } else { "m" };
        let mut out = Vec::new();
        out.extend(plan.add.iter().map(|a| format!("+{}:{}", a.login, role(a.role))));
        out.extend(plan.change_role.iter().map(|c| format!("~{}:{}", c.login, role(c.to))));
        out.extend(plan.remove.iter().map(|l| format!("-{l}")));
        out.extend(plan.pending_untouched.iter().map(|l| format!("?{l}")));
        out.extend(plan.protected.iter().map(|l| format!("!{l}")));
        out.extend(plan.owners.iter().map(|l| format!("^{l}")));
        out.extend(plan.inherited.iter().map(|l| format!("<{l}")));
        out.join(" ")
    }

    #[test]
    fn held_back_additions_are_listed_not_sent() {
        let mut plan = plan_members(
            &logins("bob carol"),
            &logins("alice"),
            &observed("alice:M"),
            &Guards::default(),
        )
        .unwrap();
        plan.hold_back(|login| (login == "carol").then_some(HoldReason::InvitationExpired));
        assert_eq!(render(&plan), "+bob:m");
        assert_eq!(
            plan.held,
            vec![Held { login: "carol".into(), reason: HoldReason::InvitationExpired }]
        );
    }

    #[test]
    fn plans() {
        let cases = [
            Case {
                name: "new team: everyone added",
                members: "bob carol",
                maintainers: "alice",
                observed: "",
                acting: None,
                allow_mass_removal: false,
                expect: "+alice:M +bob:m +carol:m",
            },
            Case {
                name: "in sync: nothing to do",
                members: "bob",
                maintainers: "alice",
                observed: "alice:M bob:m",
                acting: None,
                allow_mass_removal: false,
                expect: "",
            },
            Case {
                name: "logins compare case-insensitively",
                members: "Bob",
                maintainers: "ALICE",
                observed: "alice:M bob:m",
                acting: None,
                allow_mass_removal: false,
                expect: "",
            },
            Case {
                name: "only the difference: add, promote, remove",
                members: "bob dave",
                maintainers: "alice carol",
                observed: "alice:M bob:m carol:m erin:m",
                acting: None,
                allow_mass_removal: false,
                expect: "+dave:m ~carol:M -erin",
            },
            Case {
                name: "pending desired login is in progress, whatever its role",
                members: "bob",
                maintainers: "alice",
                observed: "alice:M bob:M:pending",
                acting: None,
                allow_mass_removal: false,
                expect: "?bob",
            },
            Case {
                name: "pending undesired login has its invitation cancelled",
                members: "",
                maintainers: "alice",
                observed: "alice:M mallory:m:pending",
                acting: None,
                allow_mass_removal: false,
                expect: "-mallory",
            },
            Case {
                name: "acting identity is neither removed nor demoted",
                members: "muster-bot",
                maintainers: "alice",
                observed: "alice:M muster-bot:M",
                acting: Some("Muster-Bot"),
                allow_mass_removal: false,
                expect: "!muster-bot",
            },
            Case {
                name: "acting identity not desired stays",
                members: "",
                maintainers: "alice",
                observed: "alice:M muster-bot:M",
                acting: Some("muster-bot"),
                allow_mass_removal: false,
                expect: "!muster-bot",
            },
            Case {
                name: "three removals are fine even above 25%",
                members: "e f g",
                maintainers: "alice",
                observed: "alice:M b:m c:m d:m e:m f:m g:m",
                acting: None,
                allow_mass_removal: false,
                expect: "-b -c -d",
            },
            Case {
                name: "four removals of twenty is under 25%",
                members: "e f g h i j k l m n o p q r s",
                maintainers: "alice",
                observed: "alice:M b:m c:m d:m x:m e:m f:m g:m h:m i:m j:m k:m l:m m:m n:m o:m p:m q:m r:m s:m",
                acting: None,
                allow_mass_removal: false,
                expect: "-b -c -d -x",
            },
            Case {
                name: "four removals of eight trips the guard",
                members: "e f g",
                maintainers: "alice",
                observed: "alice:M b:m c:m d:m x:m e:m f:m g:m",
                acting: None,
                allow_mass_removal: false,
                expect: "error:MassRemoval",
            },
            Case {
                name: "the operator overrides the guard for one run",
                members: "e f g",
                maintainers: "alice",
                observed: "alice:M b:m c:m d:m x:m e:m f:m g:m",
                acting: None,
                allow_mass_removal: true,
                expect: "-b -c -d -x",
            },
            Case {
                name: "an owner wanted as member is left a maintainer, no role change",
                members: "olga bob",
                maintainers: "alice",
                observed: "alice:M olga:M:owner bob:m",
                acting: None,
                allow_mass_removal: false,
                expect: "^olga",
            },
            Case {
                name: "an owner who is not an owner gets the role change",
                members: "olga",
                maintainers: "alice",
                observed: "alice:M olga:M",
                acting: None,
                allow_mass_removal: false,
                expect: "~olga:m",
            },
            Case {
                name: "members of a child team are neither removed nor counted",
                members: "",
                maintainers: "alice",
                observed: "alice:M bob:m cid:m:child dan:m:child eve:m:child",
                acting: None,
                allow_mass_removal: false,
                expect: "-bob <cid <dan <eve",
            },
            Case {
                name: "no maintainer is refused",
                members: "bob",
                maintainers: "",
                observed: "",
                acting: None,
                allow_mass_removal: false,
                expect: "error:TooFewMaintainers",
            },
            Case {
                name: "a login in both lists is refused",
                members: "alice",
                maintainers: "Alice",
                observed: "",
                acting: None,
                allow_mass_removal: false,
                expect: "error:DuplicateLogin",
            },
        ];
        for case in cases {
            let guards = Guards {
                acting_login: case.acting.map(str::to_owned),
                allow_mass_removal: case.allow_mass_removal,
                ..Guards::default()
            };
            let result = plan_members(
                &logins(case.members),
                &logins(case.maintainers),
                &observed(case.observed),
                &guards,
            );
            let got = match result {
                Ok(plan) => render(&plan),
                Err(e) => format!("error:{}", format!("{e:?}").split([' ', '{']).next().unwrap()),
            };
            assert_eq!(got, case.expect, "{}", case.name);
        }
    }

    #[test]
    fn the_mass_removal_error_names_everyone_and_is_permanent() {
        let err = plan_members(
            &[],
            &logins("alice"),
            &observed("alice:M b:m c:m d:m x:m"),
            &Guards::default(),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("4 of 5"), "{message}");
        assert!(message.contains("b, c, d, x"), "{message}");
        let run: RunError = err.into();
        assert!(!run.is_retryable());
    }

    /// `ok, removes N`, or the mass-removal rule that refused the plan with its numbers.
    fn outcome(result: Result<MemberPlan, PlanError>) -> String {
        match result {
            Ok(plan) => format!("ok, removes {}", plan.remove.len()),
            Err(PlanError::MassRemoval { logins, current, rule }) => {
                let rule = format!("{rule:?}");
                let name = rule.split([' ', '{']).next().unwrap();
                format!("{name} {} of {current}", logins.len())
            }
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn the_guard_holds_for_small_teams() {
        // (observed, desired members, desired maintainers, expected)
        let cases = [
            ("alice:M", "", "alice", "ok, removes 0"),
            ("alice:M", "", "bob", "Everyone 1 of 1"),
            // Two: one is half, not more than half; both is everyone.
            ("alice:M b:m", "", "alice", "ok, removes 1"),
            ("alice:M b:m", "", "carol", "Everyone 2 of 2"),
            // Three: one is fine, two a majority, three everyone.
            ("alice:M b:m c:m", "c", "alice", "ok, removes 1"),
            ("alice:M b:m c:m", "", "alice", "Majority 2 of 3"),
            ("alice:M b:m c:m", "", "zed", "Everyone 3 of 3"),
            // Four: two is half, three a majority.
            ("alice:M b:m c:m d:m", "d", "alice", "ok, removes 2"),
            ("alice:M b:m c:m d:m", "", "alice", "Majority 3 of 4"),
            ("alice:M b:m c:m d:m", "", "zed", "Everyone 4 of 4"),
            // A pending invitation is a member too.
            ("alice:M b:m:pending", "", "zed", "Everyone 2 of 2"),
        ];
        for (observed_members, members, maintainers, expect) in cases {
            let result = plan_members(
                &logins(members),
                &logins(maintainers),
                &observed(observed_members),
                &Guards::default(),
            );
            assert_eq!(outcome(result), expect, "{observed_members} → {members} / {maintainers}");
        }
    }

    #[test]
    fn the_override_lets_a_small_team_be_emptied() {
        let guards = Guards { allow_mass_removal: true, ..Guards::default() };
        let plan =
            plan_members(&[], &logins("zed"), &observed("alice:M b:m c:m"), &guards).unwrap();
        assert_eq!(plan.remove, ["alice", "b", "c"]);
    }

    #[test]
    fn the_acting_identity_is_not_counted() {
        // A team of one person and Muster's own login (a token's user maintains the teams it
        // creates): replacing that person empties the team.
        let acting = Guards { acting_login: Some("muster-bot".into()), ..Guards::default() };
        let observed = observed("alice:M muster-bot:M");
        let result = plan_members(&[], &logins("zed"), &observed, &acting);
        assert_eq!(outcome(result), "Everyone 1 of 1");
        let overridden = Guards { allow_mass_removal: true, ..acting };
        let plan = plan_members(&[], &logins("zed"), &observed, &overridden).unwrap();
        assert_eq!(plan.remove, ["alice"]);
    }

    #[test]
    fn the_majority_rule_is_configurable_and_one_disables_it() {
        let at = |majority: f64| Guards { max_removal_majority: majority, ..Guards::default() };
        let observed = observed("alice:M b:m c:m");
        let remove = |members: &str, guards: &Guards| {
            outcome(plan_members(&logins(members), &logins("alice"), &observed, guards))
        };
        assert_eq!(remove("", &at(1.0)), "ok, removes 2", "1.0 disables the majority rule");
        assert_eq!(remove("c", &at(0.3)), "Majority 1 of 3");
        // Emptying the team still needs the override with the majority rule off.
        let all = plan_members(&[], &logins("zed"), &observed, &at(1.0));
        assert_eq!(outcome(all), "Everyone 3 of 3");
    }

    #[test]
    fn each_refusal_says_its_rule_and_numbers() {
        let message = |observed_members: &str, members: &str, maintainers: &str| {
            plan_members(
                &logins(members),
                &logins(maintainers),
                &observed(observed_members),
                &Guards::default(),
            )
            .unwrap_err()
            .to_string()
        };
        let majority = message("alice:M b:m c:m", "", "alice");
        assert!(
            majority.starts_with("refusing to remove 2 of 3 team members (b, c): "),
            "{majority}"
        );
        assert!(majority.contains("more than 50%"), "{majority}");
        assert!(majority.contains("github.max-removal-majority"), "{majority}");
        let fraction = message("alice:M b:m c:m d:m x:m e:m f:m g:m", "e f g", "alice");
        assert!(fraction.starts_with("refusing to remove 4 of 8 team members"), "{fraction}");
        assert!(fraction.contains("more than 25%"), "{fraction}");
        assert!(fraction.contains("more than 3 people"), "{fraction}");
        let everyone = message("alice:M", "", "zed");
        assert!(everyone.starts_with("refusing to remove 1 of 1 team members"), "{everyone}");
        assert!(everyone.contains("every member"), "{everyone}");
        for m in [majority, fraction, everyone] {
            assert!(m.contains("allow_mass_removal"), "{m}");
        }
    }

    #[test]
    fn min_maintainers_is_configurable() {
        let guards = Guards { min_maintainers: 0, ..Guards::default() };
        let plan = plan_members(&logins("bob"), &[], &[], &guards).unwrap();
        assert_eq!(plan.mutations(), 1);
    }
}
