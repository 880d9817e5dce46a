//! The fake organization's state, and the rules GitHub keeps between its parts: who is a
//! member of what, with which role, and which logins name an account.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::names::is_login;
use super::server::{Budget, Fault, LoggedRequest, TeamView};

pub(super) const MEMBER: &str = "member";
pub(super) const MAINTAINER: &str = "maintainer";

/// The key of a login in every map: GitHub logins are case-insensitive.
pub(super) fn key(login: &str) -> String {
    login.to_ascii_lowercase()
}

#[derive(Debug, Clone)]
pub(super) struct TeamState {
    pub id: u64,
    pub name: String,
    pub slug: String,
    pub description: String,
    pub privacy: String,
    pub parent: Option<u64>,
    /// The team's own members, active and pending, by [`key`]. Members of child teams are not
    /// here: GitHub derives them (see [`State::members`]).
    pub members: BTreeMap<String, MemberState>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(super) struct MemberState {
    pub login: String,
    /// The role asked for; GitHub may report another (see [`State::reported_role`]).
    pub role: String,
    pub pending: bool,
    pub invitation_id: u64,
    pub invited_at: DateTime<Utc>,
    pub inviter: String,
}

#[derive(Debug, Clone)]
pub(super) struct OrgMember {
    pub login: String,
    /// An organization owner (role `admin`).
    pub owner: bool,
}

/// An organization invitation that failed, as "List failed organization invitations" shows it.
#[derive(Debug, Clone)]
pub(super) struct FailedInvitation {
    pub id: u64,
    pub login: String,
    pub created_at: DateTime<Utc>,
    pub failed_at: DateTime<Utc>,
    pub reason: String,
    pub inviter: String,
    pub team_count: usize,
}

/// A login's membership of a team as GitHub reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Membership {
    pub login: String,
    pub role: String,
    pub pending: bool,
    /// Held through a child team, not in the team itself.
    pub inherited: bool,
}

#[derive(Debug)]
pub(super) struct State {
    pub org: String,
    pub org_id: u64,
    pub org_created_at: DateTime<Utc>,
    /// The organization's members, by [`key`].
    pub org_members: BTreeMap<String, OrgMember>,
    /// The login a personal token acts as.
    pub token_login: String,
    pub app_slug: String,
    /// Tokens minted for the App's installation, and how long they live.
    pub installation_tokens: Vec<String>,
    pub installation_token_ttl: Duration,
    pub teams: BTreeMap<u64, TeamState>,
    pub next_id: u64,
    pub user_ids: HashMap<String, u64>,
    /// Logins, by [`key`], that name no account: deleted, or renamed away.
    pub unknown_users: BTreeSet<String>,
    /// Failed organization invitations, oldest first.
    pub failed_invitations: Vec<FailedInvitation>,
    /// SAML single sign-on is enforced for personal tokens.
    pub saml_sso: bool,
    pub budget: Budget,
    pub faults: VecDeque<Fault>,
    pub limited_fraction: f64,
    pub counted: u64,
    pub log: Vec<LoggedRequest>,
}

impl State {
    pub fn new(org: &str) -> Self {
        State {
            org: org.to_owned(),
            org_id: 1,
            org_created_at: Utc::now(),
            org_members: BTreeMap::new(),
            token_login: "muster-bot".into(),
            app_slug: "muster".into(),
            installation_tokens: Vec::new(),
            installation_token_ttl: Duration::from_secs(3600),
            teams: BTreeMap::new(),
            next_id: 100,
            user_ids: HashMap::new(),
            unknown_users: BTreeSet::new(),
            failed_invitations: Vec::new(),
            saml_sso: false,
            budget: Budget::default(),
            faults: VecDeque::new(),
            limited_fraction: 0.0,
            counted: 0,
            log: Vec::new(),
        }
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The account id of `login`; a renamed account keeps its id.
    pub fn user_id(&mut self, login: &str) -> u64 {
        let next = 1000 + self.user_ids.len() as u64;
        *self.user_ids.entry(key(login)).or_insert(next)
    }

    pub fn team_by_slug(&self, slug: &str) -> Option<u64> {
        self.teams.values().find(|t| t.slug == slug.to_ascii_lowercase()).map(|t| t.id)
    }

    pub fn is_org_member(&self, login: &str) -> bool {
        self.org_members.contains_key(&key(login))
    }

    pub fn is_owner(&self, login: &str) -> bool {
        self.org_members.get(&key(login)).is_some_and(|m| m.owner)
    }

    /// Whether an account has this login. Any well-formed login does, unless it was deleted or
    /// renamed away.
    pub fn user_exists(&self, login: &str) -> bool {
        is_login(login) && !self.unknown_users.contains(&key(login))
    }

    /// The role GitHub reports for a membership with role `asked`: "The `role` for organization
    /// owners is set to `maintainer`" ("Get team membership for a user").
    pub fn reported_role(&self, login: &str, asked: &str) -> String {
        if self.is_owner(login) { MAINTAINER.to_owned() } else { asked.to_owned() }
    }

    /// The team's direct child teams.
    pub fn children(&self, id: u64) -> Vec<u64> {
        self.teams.values().filter(|t| t.parent == Some(id)).map(|t| t.id).collect()
    }

    /// The team's child teams, theirs, and so on, nearest first.
    pub fn descendants(&self, id: u64) -> Vec<u64> {
        let mut found = Vec::new();
        let mut next: VecDeque<u64> = self.children(id).into();
        while let Some(child) = next.pop_front() {
            if child != id && !found.contains(&child) {
                found.push(child);
                next.extend(self.children(child));
            }
        }
        found
    }

    /// The active members of the team as "List team members" reports them, ordered by login:
    /// "Team members will include the members of child teams", so members of child teams (and
    /// of theirs) are included, once each.
    ///
    /// GitHub does not document the role of someone who is in a child team only: a direct
    /// member has their role in this team; someone only in child teams is a maintainer if
    /// they maintain any of them, else a member.
    pub fn members(&self, id: u64) -> Vec<Membership> {
        let mut found: BTreeMap<String, Membership> = BTreeMap::new();
        let teams = std::iter::once(id).chain(self.descendants(id));
        for (depth, team) in teams.enumerate() {
            let Some(team) = self.teams.get(&team) else { continue };
            for m in team.members.values().filter(|m| !m.pending) {
                let role = self.reported_role(&m.login, &m.role);
                match found.entry(key(&m.login)) {
                    Entry::Vacant(e) => {
                        e.insert(Membership {
                            login: m.login.clone(),
                            role,
                            pending: false,
                            inherited: depth > 0,
                        });
                    }
                    Entry::Occupied(mut e) if e.get().inherited && role == MAINTAINER => {
                        e.get_mut().role = role;
                    }
                    Entry::Occupied(_) => {}
                }
            }
        }
        found.into_values().collect()
    }

    /// `login`'s membership of the team: its own (active or pending), else one held through a
    /// child team ("Get team membership for a user": "Team members will include the members of
    /// child teams").
    pub fn membership(&self, id: u64, login: &str) -> Option<Membership> {
        let k = key(login);
        if let Some(m) = self.teams.get(&id)?.members.get(&k) {
            return Some(Membership {
                login: m.login.clone(),
                role: self.reported_role(&m.login, &m.role),
                pending: m.pending,
                inherited: false,
            });
        }
        self.members(id).into_iter().find(|m| key(&m.login) == k)
    }

    /// A new membership of `login`; a pending one joins the login's open invitation, if any
    /// (GitHub invites a person to the organization once, for all the teams they are added to).
    pub fn new_member(&mut self, login: &str, role: &str, pending: bool) -> MemberState {
        let open = self
            .teams
            .values()
            .filter_map(|t| t.members.get(&key(login)))
            .find(|m| m.pending)
            .map(|m| (m.invitation_id, m.invited_at));
        let (invitation_id, invited_at) = match open {
            Some(open) if pending => open,
            _ => (self.next_id(), Utc::now()),
        };
        if pending {
            // Inviting again replaces a failed invitation.
            self.failed_invitations.retain(|f| key(&f.login) != key(login));
        }
        MemberState {
            login: login.to_owned(),
            role: role.to_owned(),
            pending,
            invitation_id,
            invited_at,
            inviter: self.token_login.clone(),
        }
    }

    /// Removes `login` from the organization: "Removing a user from this list will remove them
    /// from all teams" ("Remove an organization member"), and their pending invitations go with
    /// their team memberships.
    pub fn remove_from_org(&mut self, login: &str) {
        let k = key(login);
        self.org_members.remove(&k);
        for team in self.teams.values_mut() {
            team.members.remove(&k);
        }
    }

    /// Lets `login`'s pending invitation expire: it leaves every team it was for and is listed
    /// among the failed invitations. Whether anything was pending.
    pub fn expire_invitation(&mut self, login: &str) -> bool {
        let k = key(login);
        let mut expired: Option<MemberState> = None;
        let mut team_count = 0;
        for team in self.teams.values_mut() {
            if team.members.get(&k).is_some_and(|m| m.pending) {
                team_count += 1;
                let m = team.members.remove(&k);
                expired = expired.or(m);
            }
        }
        let Some(m) = expired else { return false };
        self.failed_invitations.retain(|f| key(&f.login) != k);
        self.failed_invitations.push(FailedInvitation {
            id: m.invitation_id,
            login: m.login,
            created_at: m.invited_at,
            failed_at: Utc::now(),
            reason: "Invitation expired".into(),
            inviter: m.inviter,
            team_count,
        });
        true
    }

    /// Deletes the account: its login names no one, and it is in no organization or team.
    pub fn delete_user(&mut self, login: &str) {
        self.remove_from_org(login);
        self.unknown_users.insert(key(login));
    }

    /// Renames the account: the old login names no one, and the account keeps its id, its
    /// organization membership, its team memberships and its invitations under the new one.
    pub fn rename_user(&mut self, old: &str, new: &str) {
        let (from, to) = (key(old), key(new));
        self.unknown_users.insert(from.clone());
        self.unknown_users.remove(&to);
        if let Some(mut member) = self.org_members.remove(&from) {
            member.login = new.to_owned();
            self.org_members.insert(to.clone(), member);
        }
        for team in self.teams.values_mut() {
            if let Some(mut member) = team.members.remove(&from) {
                member.login = new.to_owned();
                team.members.insert(to.clone(), member);
            }
        }
        if let Some(id) = self.user_ids.remove(&from) {
            self.user_ids.insert(to, id);
        }
        if key(&self.token_login) == from {
            self.token_login = new.to_owned();
        }
    }

    /// The team as tests see it: its own members only, with the roles GitHub reports.
    pub fn view(&self, team: &TeamState) -> TeamView {
        let pick = |pending: bool| {
            team.members
                .values()
                .filter(|m| m.pending == pending)
                .map(|m| (m.login.clone(), self.reported_role(&m.login, &m.role)))
                .collect()
        };
        TeamView {
            id: team.id,
            name: team.name.clone(),
            slug: team.slug.clone(),
            description: team.description.clone(),
            privacy: team.privacy.clone(),
            parent: team.parent,
            members: pick(false),
            pending: pick(true),
        }
    }
}
