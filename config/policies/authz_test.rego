# Tests of authz.rego: one or more per rule, allowed and denied. Run with `engine policy test`
# (or `opa test config/policies`). Each test sets its own input and data.config.
package muster.authz_test

import rego.v1

import data.muster.authz

config := {
	"admin_groups": ["muster-admins"],
	"publishers": [{
		"subject": "billing-bot",
		"sources": ["/billing/*"],
		"types": ["com.acme.billing.*", "muster.*"],
	}],
}

payments := {
	"slug": "payments",
	"name": "Payments",
	"description": "Card payments",
	"members": ["alice", "bob"],
	"maintainers": ["alice"],
	"parent": "platform",
	"quota_profile": "standard",
	"labels": {},
}

# An input for `action` on team payments by `who`, in `groups`, changing `changes`.
team_input(who, groups, action, changes) := {
	"subject": {"id": who, "groups": groups},
	"action": action,
	"resource": {"kind": "team", "name": "payments", "team": "payments", "current": payments, "namespaces": []},
	"changes": changes,
	"request": {"method": "PATCH", "path": "/v1/teams/payments"},
}

# A team.delete input by `who` for payments with namespaces in `namespaces`.
delete_input(who, groups, namespaces) := object.union(
	team_input(who, groups, "team.delete", []),
	{"resource": {"kind": "team", "name": "payments", "current": payments, "namespaces": namespaces}},
)

prod := {"environment": "prod", "allow_namespace_deletion": false}

dev := {"environment": "dev", "allow_namespace_deletion": true}

# An event.publish input by `who` for an event of `type` from `source`.
publish_input(who, type, source) := {
	"subject": {"id": who, "groups": []},
	"action": "event.publish",
	"resource": {"kind": "event", "name": type, "event": {"type": type, "source": source}},
	"changes": [],
	"request": {"method": "POST", "path": "/v1/events"},
}

# An input for `action` on environment prod by `who`.
environment_input(who, groups, action) := {
	"subject": {"id": who, "groups": groups},
	"action": action,
	"resource": {"kind": "environment", "name": "prod", "environment": "prod"},
	"changes": [],
	"request": {"method": "PUT", "path": "/v1/environments/prod"},
}

# --- admins

test_admin_may_delete_team if {
	authz.allow with input as delete_input("root", ["muster-admins"], [dev]) with data.config as config
	authz.reasons == {"root is in admin group muster-admins"} with input as delete_input("root", ["muster-admins"], [dev])
		with data.config as config
}

test_admin_may_delete_team_with_protected_namespace if {
	authz.allow with input as delete_input("root", ["muster-admins"], [prod]) with data.config as config
}

test_admin_groups_come_from_config if {
	not authz.allow with input as delete_input("root", ["muster-admins"], []) with data.config as {"admin_groups": ["ops"]}
	authz.allow with input as delete_input("root", ["ops"], []) with data.config as {"admin_groups": ["ops"]}
}

test_admin_may_change_parent if {
	authz.allow with input as team_input("root", ["muster-admins"], "team.update", ["parent"]) with data.config as config
}

test_unauthenticated_admin_group_is_not_admin if {
	not authz.allow with input as delete_input("", ["muster-admins"], []) with data.config as config
}

# --- reading

test_read_open if {
	authz.allow with input as team_input("carol", [], "team.read", []) with data.config as config
	authz.allow with input as environment_input("carol", [], "environment.read") with data.config as config
	authz.allow with input as team_input("carol", [], "run.read", []) with data.config as config
	authz.allow with input as team_input("carol", [], "dlq.read", []) with data.config as config
	authz.allow with input as team_input("carol", [], "namespace.read", []) with data.config as config
	authz.reasons == {"reading is open to authenticated callers"} with input as team_input("carol", [], "team.read", [])
		with data.config as config
}

test_read_needs_authentication if {
	not authz.allow with input as team_input("", [], "team.read", []) with data.config as config
	authz.reasons == {"the caller is not authenticated"} with input as team_input("", [], "team.read", [])
		with data.config as config
}

# --- maintainers

test_maintainer_may_update_members if {
	authz.allow with input as team_input("alice", [], "team.update", ["members"]) with data.config as config
	authz.reasons == {"alice maintains team payments"} with input as team_input("alice", [], "team.update", ["members"])
		with data.config as config
}

test_maintainer_may_update_maintainers_and_description if {
	authz.allow with input as team_input("alice", [], "team.update", ["maintainers", "description"])
		with data.config as config
}

test_maintainer_may_not_change_parent if {
	not authz.allow with input as team_input("alice", [], "team.update", ["members", "parent"]) with data.config as config
	authz.reasons == {"maintainers may change members, maintainers, description; not parent"}
		with input as team_input("alice", [], "team.update", ["members", "parent"])
		with data.config as config
}

test_maintainer_may_not_change_other_fields if {
	not authz.allow with input as team_input("alice", [], "team.update", ["quota_profile", "labels"])
		with data.config as config
	authz.reasons == {"maintainers may change members, maintainers, description; not labels, quota_profile"}
		with input as team_input("alice", [], "team.update", ["quota_profile", "labels"])
		with data.config as config
}

test_maintainer_may_sync if {
	authz.allow with input as team_input("alice", [], "team.sync", []) with data.config as config
}

test_maintainer_may_not_override_the_mass_removal_guard if {
	not authz.allow with input as team_input("alice", [], "team.sync", ["allow_mass_removal"]) with data.config as config
	authz.reasons == {"only admins may override the mass-removal guard"}
		with input as team_input("alice", [], "team.sync", ["allow_mass_removal"])
		with data.config as config
}

test_admin_may_override_the_mass_removal_guard if {
	authz.allow with input as team_input("root", ["muster-admins"], "team.sync", ["allow_mass_removal"])
		with data.config as config
}

test_outsider_may_not_override_the_mass_removal_guard if {
	not authz.allow with input as team_input("mallory", [], "team.sync", ["allow_mass_removal"]) with data.config as config
	authz.reasons == {"mallory does not maintain team payments", "only admins may override the mass-removal guard"}
		with input as team_input("mallory", [], "team.sync", ["allow_mass_removal"])
		with data.config as config
}

test_maintainer_may_not_adopt_a_github_team if {
	not authz.allow with input as team_input("alice", [], "team.sync", ["adopt"]) with data.config as config
	authz.reasons == {"only admins may adopt an existing GitHub team"}
		with input as team_input("alice", [], "team.sync", ["adopt"])
		with data.config as config
}

test_admin_may_adopt_a_github_team if {
	authz.allow with input as team_input("root", ["muster-admins"], "team.sync", ["adopt", "allow_mass_removal"])
		with data.config as config
}

test_maintainer_may_not_adopt_and_override_at_once if {
	authz.reasons == {"only admins may adopt an existing GitHub team", "only admins may override the mass-removal guard"}
		with input as team_input("alice", [], "team.sync", ["allow_mass_removal", "adopt"])
		with data.config as config
}

# Re-sending expired invitations to the team's own desired members is a maintainer's call.
test_maintainer_may_reinvite if {
	authz.allow with input as team_input("alice", [], "team.sync", ["reinvite"]) with data.config as config
	not authz.allow with input as team_input("mallory", [], "team.sync", ["reinvite"]) with data.config as config
}

# A plan (GET /v1/teams/{slug}/plan) is read as the team is: with team.read, whatever options
# it previews.
test_anyone_authenticated_may_read_a_plan if {
	authz.allow with input as object.union(team_input("mallory", [], "team.read", []), {"request": {"method": "GET", "path": "/v1/teams/payments/plan"}})
		with data.config as config
	not authz.allow with input as object.union(team_input("", [], "team.read", []), {"request": {"method": "GET", "path": "/v1/teams/payments/plan"}})
		with data.config as config
}

test_maintainer_may_not_delete if {
	not authz.allow with input as delete_input("alice", [], []) with data.config as config
	authz.reasons == {"only admins may delete teams"} with input as delete_input("alice", [], []) with data.config as config
}

test_maintainer_may_not_purge if {
	not authz.allow with input as team_input("alice", [], "team.purge", []) with data.config as config
}

test_member_is_not_maintainer if {
	not authz.allow with input as team_input("bob", [], "team.update", ["members"]) with data.config as config
}

test_outsider_may_not_update if {
	not authz.allow with input as team_input("mallory", [], "team.update", ["description"]) with data.config as config
	authz.reasons == {"mallory does not maintain team payments"}
		with input as team_input("mallory", [], "team.update", ["description"])
		with data.config as config
}

test_outsider_may_not_sync if {
	not authz.allow with input as team_input("mallory", [], "team.sync", []) with data.config as config
}

test_nobody_maintains_a_team_that_does_not_exist if {
	not authz.allow with input as object.union(team_input("alice", [], "team.update", ["members"]), {"resource": {"current": null}})
		with data.config as config
}

# --- admin-only actions

test_only_admins_create_teams if {
	not authz.allow with input as team_input("alice", [], "team.create", ["name"]) with data.config as config
	authz.reasons == {"only admins may create teams"} with input as team_input("alice", [], "team.create", ["name"])
		with data.config as config
	authz.allow with input as team_input("root", ["muster-admins"], "team.create", ["name"]) with data.config as config
}

test_only_admins_manage_environments if {
	every action in ["environment.create", "environment.update", "environment.delete"] {
		not authz.allow with input as environment_input("alice", [], action) with data.config as config
		authz.allow with input as environment_input("root", ["muster-admins"], action) with data.config as config
	}
}

test_only_admins_retry_runs if {
	not authz.allow with input as team_input("alice", [], "run.retry", []) with data.config as config
	authz.reasons == {"only admins may retry runs"} with input as team_input("alice", [], "run.retry", [])
		with data.config as config
}

test_only_admins_replay_dead_letters if {
	not authz.allow with input as team_input("alice", [], "dlq.replay", []) with data.config as config
	authz.allow with input as team_input("root", ["muster-admins"], "dlq.replay", []) with data.config as config
}

test_unknown_action_is_denied if {
	not authz.allow with input as team_input("alice", [], "team.explode", []) with data.config as config
	authz.reasons == {"no rule allows alice to team.explode"} with input as team_input("alice", [], "team.explode", [])
		with data.config as config
}

# --- protected namespaces

test_protected_namespace_gives_its_own_reason if {
	authz.reasons == {
		"only admins may delete teams",
		"payments has a namespace in prod, which forbids namespace deletion: only admins may delete it",
	} with input as delete_input("alice", [], [dev, prod]) with data.config as config
}

# A site that lets maintainers delete their teams (by editing the tables) still protects
# environments that forbid namespace deletion.
test_protected_namespace_blocks_delete_even_if_allowed_for_maintainers if {
	site_admin_only := object.remove(authz.admin_only_actions, ["team.delete"])
	site_maintainer_actions := authz.maintainer_actions | {"team.delete"}

	not authz.allow with input as delete_input("alice", [], [dev, prod]) with data.config as config
		with data.muster.authz.admin_only_actions as site_admin_only
		with data.muster.authz.maintainer_actions as site_maintainer_actions
	authz.reasons == {"payments has a namespace in prod, which forbids namespace deletion: only admins may delete it"}
		with input as delete_input("alice", [], [dev, prod])
		with data.config as config
		with data.muster.authz.admin_only_actions as site_admin_only
		with data.muster.authz.maintainer_actions as site_maintainer_actions

	authz.allow with input as delete_input("alice", [], [dev]) with data.config as config
		with data.muster.authz.admin_only_actions as site_admin_only
		with data.muster.authz.maintainer_actions as site_maintainer_actions
}

# --- publishing events

test_publisher_allowed_source if {
	authz.allow with input as publish_input("billing-bot", "com.acme.billing.paid", "/billing/invoices")
		with data.config as config
	authz.reasons == {"billing-bot may publish com.acme.billing.paid events from /billing/invoices"}
		with input as publish_input("billing-bot", "com.acme.billing.paid", "/billing/invoices")
		with data.config as config
}

test_publisher_wrong_source if {
	not authz.allow with input as publish_input("billing-bot", "com.acme.billing.paid", "/shipping/labels")
		with data.config as config
	authz.reasons == {"billing-bot may not publish com.acme.billing.paid events from /shipping/labels"}
		with input as publish_input("billing-bot", "com.acme.billing.paid", "/shipping/labels")
		with data.config as config
}

test_publisher_source_star_is_one_segment if {
	not authz.allow with input as publish_input("billing-bot", "com.acme.billing.paid", "/billing/eu/invoices")
		with data.config as config
}

test_publisher_wrong_type if {
	not authz.allow with input as publish_input("billing-bot", "com.acme.shipping.sent", "/billing/invoices")
		with data.config as config
}

test_publisher_type_star_is_one_token if {
	not authz.allow with input as publish_input("billing-bot", "com.acme.billing.paid.v2", "/billing/invoices")
		with data.config as config
}

test_publisher_entry_is_for_its_subject_only if {
	not authz.allow with input as publish_input("alice", "com.acme.billing.paid", "/billing/invoices")
		with data.config as config
}

test_muster_types_need_admin if {
	# billing-bot's entry lists muster.*, yet the prefix is reserved.
	not authz.allow with input as publish_input("billing-bot", "muster.ping", "/billing/invoices") with data.config as config
	authz.reasons == {"events of type muster.ping are reserved: only admins may publish muster.* or com.github.* events"}
		with input as publish_input("billing-bot", "muster.ping", "/billing/invoices")
		with data.config as config
	authz.allow with input as object.union(publish_input("root", "muster.ping", "/ops"), {"subject": {"groups": ["muster-admins"]}})
		with data.config as config
}

test_github_types_need_admin if {
	not authz.allow with input as publish_input("billing-bot", "com.github.push", "/billing/invoices")
		with data.config as config
}
