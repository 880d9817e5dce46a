# Muster's authorization policy: may this caller do this to that?
#
# The engine asks for `allow` and `reasons` in this package for every API request, in process
# (regorus) or from an OPA server (POST /v1/data/muster/authz). The tests are in
# authz_test.rego; run them with `engine policy test` (or `opa test config/policies`).
#
# input (engine/src/policy/mod.rs, `Input`):
#   subject    {id, groups}                 who calls, from the verified token
#   action     "<kind>.<verb>"              e.g. "team.update", "event.publish"
#   resource   {kind, name, team, environment,
#               current,                    the stored record's spec; null if it does not exist yet
#               namespaces,                 team.delete: [{environment, allow_namespace_deletion}]
#               event}                      event.publish: {type, source, subject}
#   changes    the top-level spec fields the request sets; for team.sync, the options it
#              sets ("allow_mass_removal", "adopt", "reinvite")
#   request    {method, path}
#
# data.config (`PolicyData`):
#   admin_groups  groups whose members may do everything
#   publishers    [{subject, sources, types}]: who may publish which events. Patterns are globs:
#                 in sources `*` matches within one `/`-separated segment ("/billing/*" matches
#                 "/billing/invoices", not "/billing/eu/invoices"); in types `*` matches within
#                 one `.`-separated token ("com.acme.billing.*" matches "com.acme.billing.paid",
#                 not "com.acme.billing.paid.v2"). A whole segment `**` matches any number of
#                 segments ("/billing/**", "com.acme.**").
#
# The decision: admins may do everything. Anyone else is allowed when at least one `grants`
# rule applies and no `denials` rule does. `reasons` explains the decision: the grants when
# allowed, the denials when not.
#
# To adapt the policy to a site, change the tables below (`admin_only_actions`,
# `admin_only_changes`, `maintainer_actions`, `maintainer_fields`, `reserved_type_prefixes`)
# before the rules.
package muster.authz

import rego.v1

default allow := false

allow if is_admin

allow if {
	count(grants) > 0
	count(denials) == 0
}

reasons contains reason if {
	allow
	some reason in grants
}

reasons contains reason if {
	not allow
	some reason in denials
}

reasons contains sprintf("no rule allows %s to %s", [caller, input.action]) if {
	not allow
	count(denials) == 0
}

# ---------------------------------------------------------------------------------------------
# Tables

# What only admins may do, with the words a denial uses.
admin_only_actions := {
	"team.create": "create teams",
	"team.delete": "delete teams",
	"team.purge": "purge teams",
	"environment.create": "create environments",
	"environment.update": "update environments",
	"environment.delete": "delete environments",
	"run.retry": "retry runs",
	"dlq.replay": "replay dead letters",
}

# What only admins may ask for, whatever the action, with the words a denial uses: entries
# of `changes`. `allow_mass_removal` is a team.sync that may remove every member of a team, a
# majority of them, or more than the configured share and number (GitHub's mass-removal guard).
# `adopt` is a team.sync that takes over an existing GitHub team Muster did not create, with
# its members.
admin_only_changes := {
	"allow_mass_removal": "override the mass-removal guard",
	"adopt": "adopt an existing GitHub team",
}

# What a team's maintainers may do to their own team.
maintainer_actions := {"team.update", "team.sync"}

# The spec fields a maintainer may change; any other field needs an admin.
maintainer_fields := ["members", "maintainers", "description"]

# Event types the engine and its GitHub integration publish: nobody else may forge them.
reserved_type_prefixes := ["muster.", "com.github."]

# ---------------------------------------------------------------------------------------------
# Facts about the caller and the resource

authenticated if {
	is_string(input.subject.id)
	input.subject.id != ""
}

# The caller's name in reasons.
caller := input.subject.id if authenticated

else := "an unauthenticated caller"

# The configured admin groups the caller is in.
caller_admin_groups contains group if {
	authenticated
	some group in input.subject.groups
	group in data.config.admin_groups
}

is_admin if count(caller_admin_groups) > 0

is_read if endswith(input.action, ".read")

# The team a team action is about.
team := input.resource.name

# The caller is one of the stored team's maintainers (a team that does not exist yet has none).
maintains_team if {
	authenticated
	input.resource.kind == "team"
	input.subject.id in input.resource.current.maintainers
}

# The fields this request changes that a maintainer may not change.
fields_beyond_maintainers contains field if {
	some field in input.changes
	not field in maintainer_fields
}

event := input.resource.event

reserved_event_type if {
	some prefix in reserved_type_prefixes
	startswith(event.type, prefix)
}

# Some publishers entry for the caller covers this event's source and type.
is_publisher_of_event if {
	authenticated
	some publisher in data.config.publishers
	publisher.subject == input.subject.id
	some source_pattern in publisher.sources
	glob.match(source_pattern, ["/"], event.source)
	some type_pattern in publisher.types
	glob.match(type_pattern, ["."], event.type)
}

# ---------------------------------------------------------------------------------------------
# Grants: reasons to allow

grants contains sprintf("%s is in admin group %s", [caller, group]) if {
	is_admin
	some group in caller_admin_groups
}

grants contains "reading is open to authenticated callers" if {
	authenticated
	is_read
}

grants contains sprintf("%s maintains team %s", [caller, team]) if {
	input.action in maintainer_actions
	maintains_team
}

grants contains sprintf("%s may publish %s events from %s", [caller, event.type, event.source]) if {
	input.action == "event.publish"
	is_publisher_of_event
}

# ---------------------------------------------------------------------------------------------
# Denials: reasons to refuse anyone but an admin

denials contains "the caller is not authenticated" if not authenticated

denials contains sprintf("only admins may %s", [admin_only_actions[input.action]])

denials contains sprintf("only admins may %s", [admin_only_changes[change]]) if {
	some change in input.changes
}

# Separate from `admin_only_actions`: a site that lets maintainers delete their teams still
# protects the environments that forbid namespace deletion.
denials contains msg if {
	input.action == "team.delete"
	some namespace in input.resource.namespaces
	namespace.allow_namespace_deletion == false
	msg := sprintf(
		"%s has a namespace in %s, which forbids namespace deletion: only admins may delete it",
		[team, namespace.environment],
	)
}

denials contains sprintf("%s does not maintain team %s", [caller, team]) if {
	authenticated
	input.action in maintainer_actions
	not maintains_team
}

denials contains msg if {
	input.action == "team.update"
	count(fields_beyond_maintainers) > 0
	msg := sprintf(
		"maintainers may change %s; not %s",
		[concat(", ", maintainer_fields), concat(", ", sort(fields_beyond_maintainers))],
	)
}

denials contains msg if {
	input.action == "event.publish"
	reserved_event_type
	msg := sprintf(
		"events of type %s are reserved: only admins may publish %s events",
		[event.type, concat(" or ", [sprintf("%s*", [p]) | some p in reserved_type_prefixes])],
	)
}

denials contains sprintf("%s may not publish %s events from %s", [caller, event.type, event.source]) if {
	input.action == "event.publish"
	not is_publisher_of_event
}
