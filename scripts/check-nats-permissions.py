#!/usr/bin/env python3
"""Prove the agent and publisher permissions of config/nats/hub.conf and leaf.conf on real servers.

    python3 scripts/check-nats-permissions.py NATS_SERVER_BIN     (run by scripts/validate-deploy)

Starts the hub (config/nats/hub.conf) and a leaf node (config/nats/leaf.conf, environment `dev`,
cluster `eu-1`) on free ports in a temp dir, with throw-away passwords. As the engine it creates the
MUSTER_EVENTS stream, a workflow consumer and three events. Then, once as the agent behind the leaf
and once as the `agent-dev` user on the hub, it checks that an agent can do what `engine agent` does
(JetStream account and stream info, create its own filtered durable consumer, pull only its
environment's events, ack, publish a report) and nothing else (another filter, another environment's
or the engine's consumer, other event types, a raw subscription to the events, stream admin).
Then, as the example publisher `billing` (inbox prefix `_INBOX.billing`), it checks that a service
can publish its own event types with a JetStream publish (PubAck, stored in MUSTER_EVENTS) and
nothing else: no `muster.*` or `com.github.*` event, no other service's type, no re-drive (each a
permissions violation, no PubAck, nothing stored), no stream or consumer, no reading the stream, no
subscription to the events or to other clients' inboxes.
Needs the `nats-py` package. Exit status 0 when every check passes.
"""

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import unicodedata
import urllib.request
from pathlib import Path

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 1.0
STREAM = "MUSTER_EVENTS"
SECRETS = {
    "MUSTER_ENGINE_PASSWORD": "engine-pw",
    "MUSTER_AGENT_DEV_PASSWORD": "agent-dev-pw",
    "MUSTER_AGENT_PROD_PASSWORD": "agent-prod-pw",
    "MUSTER_LEAF_DEV_EU_1_PASSWORD": "leaf-dev-eu-1-pw",
    "MUSTER_LEAF_DEV_US_1_PASSWORD": "leaf-dev-us-1-pw",
    "MUSTER_LEAF_PROD_EU_1_PASSWORD": "leaf-prod-eu-1-pw",
    "NATS_SYS_PASSWORD": "sys-pw",
    "MUSTER_AGENT_PASSWORD": "agent-pw",
    "MUSTER_BILLING_PASSWORD": "billing-pw",
}
# The example publisher of hub.conf: its user, the inbox prefix it connects with, one of its types.
PUBLISHER = "billing"
PUBLISHER_INBOX = "_INBOX.billing"
PUBLISHER_TYPE = "com.acme.billing.invoiced"

results: list[tuple[str, bool]] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    results.append((name, ok))
    print(f"  {'ok  ' if ok else 'FAIL'} {name}{(': ' + detail) if detail and not ok else ''}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rewrite(text: str, replacements: dict[str, str]) -> str:
    for pattern, value in replacements.items():
        text, n = re.subn(pattern, value, text, flags=re.MULTILINE)
        if n != 1:
            raise SystemExit(f"check-nats-permissions: pattern {pattern!r} matched {n} times")
    return text


async def attempt(coro, timeout: float = TIMEOUT * 2):
    try:
        return True, await asyncio.wait_for(coro, timeout)
    except Exception as e:  # denied operations surface as timeouts or API errors
        return False, e


async def api(nc, subject: str, body: dict | None = None):
    """A raw JetStream API request; (True, answer) only for an answer without an error."""
    ok, msg = await attempt(nc.request(subject, json.dumps(body or {}).encode(), timeout=TIMEOUT))
    if not ok:
        return False, msg
    answer = json.loads(msg.data or b"{}")
    return "error" not in answer, answer


def consumer_body(name: str, filter_subject: str) -> dict:
    return {
        "stream_name": STREAM,
        "config": {"durable_name": name, "name": name, "filter_subject": filter_subject,
                   "ack_policy": "explicit", "deliver_policy": "all"},
    }


def subject_token(subject: str | None) -> str:
    """The CloudEvent subject as one NATS token, as `workflows::event::subject_token` makes it."""
    if not subject:
        return "_"
    return "".join("_" if c in ".*>" or c.isspace() or unicodedata.category(c) == "Cc" else c
                   for c in subject)


def event_subject(event_type: str, subject: str | None) -> str:
    """Where the engine publishes an event, as `Names::event_subject` builds it (prefix `muster`)."""
    return f"muster.events.{event_type}.{subject_token(subject)}"


def cloudevent(event_type: str, subject: str, event_id: str) -> dict[str, str]:
    """Binary-mode CloudEvent headers, as a service would send them."""
    return {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": "/billing/invoices",
            "ce-type": event_type, "ce-subject": subject, "content-type": "application/json"}


async def stored(ejs, subject: str) -> int:
    """How many messages MUSTER_EVENTS holds on exactly `subject` (read as the engine)."""
    info = await ejs.stream_info(STREAM, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def publisher(hub_url: str, ejs) -> None:
    """The example publisher `billing`: its own event types, nothing else."""
    print(f"as the publisher {PUBLISHER} on the hub (types com.acme.billing.**, inbox {PUBLISHER_INBOX})")
    errors: list[str] = []

    async def collect_error(e):
        errors.append(str(e).lower())

    def violation(kind: str, subject: str) -> bool:
        return any(f'permissions violation for {kind} to "{subject.lower()}"' in e for e in errors)

    nc = await nats.connect(hub_url, user=PUBLISHER, password=SECRETS["MUSTER_BILLING_PASSWORD"],
                            inbox_prefix=PUBLISHER_INBOX, error_cb=collect_error)
    js = nc.jetstream()

    # Its own type; a CloudEvent subject with dots is one token (`inv.2024.1` -> `inv_2024_1`).
    own = event_subject(PUBLISHER_TYPE, "inv.2024.1")
    ok, ack = await attempt(js.publish(own, b'{"amount": 42}', timeout=TIMEOUT,
                                       headers=cloudevent(PUBLISHER_TYPE, "inv.2024.1", "inv-1")))
    count = await stored(ejs, own)
    check(f"publish {PUBLISHER_TYPE} on {own} (PubAck from {STREAM}, stored)",
          ok and ack.stream == STREAM and count == 1, f"{ack!r}, stored {count}")

    denied = [
        ("muster.team.sync (Muster's own type)", event_subject("muster.team.sync", "payments"),
         "muster.team.sync", b'{"allow_mass_removal": true}'),
        ("com.github.push (GitHub's type)", event_subject("com.github.push", "acme/payments"),
         "com.github.push", b"{}"),
        ("another service's type com.acme.payments.refunded",
         event_subject("com.acme.payments.refunded", "r-1"), "com.acme.payments.refunded", b"{}"),
        ("a type sharing its prefix but not its token, com.acme.billingops.paid",
         event_subject("com.acme.billingops.paid", "p-1"), "com.acme.billingops.paid", b"{}"),
        ("a re-drive muster.runs.sync_team.x", "muster.runs.sync_team.x", "muster.team.sync", b"{}"),
    ]
    for label, subject, event_type, body in denied:
        ok, _ = await attempt(js.publish(subject, body, timeout=TIMEOUT,
                                         headers=cloudevent(event_type, "x", f"forged-{subject}")))
        count = await stored(ejs, subject)
        check(f"denied: {label} on {subject} (permissions violation, no PubAck, nothing stored)",
              not ok and violation("publish", subject) and count == 0,
              f"PubAck {ok}, violation reported {violation('publish', subject)}, stored {count}")

    # No JetStream API at all: no stream or consumer admin, no reading the stream.
    ok, _ = await api(nc, "$JS.API.STREAM.CREATE.BILLING", {"name": "BILLING", "subjects": ["billing.>"]})
    streams = [s.config.name for s in await ejs.streams_info()]
    check("denied: creating a stream", not ok and "BILLING" not in streams, f"streams {streams}")
    before = sorted(c.name for c in await ejs.consumers_info(STREAM))
    for label, subject, body in [
        ("a durable consumer", f"$JS.API.CONSUMER.CREATE.{STREAM}.{PUBLISHER}.{own}",
         consumer_body(PUBLISHER, own)),
        ("a consumer in the legacy form", f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.{PUBLISHER}",
         consumer_body(PUBLISHER, own)),
        ("an ephemeral consumer", f"$JS.API.CONSUMER.CREATE.{STREAM}",
         {"stream_name": STREAM, "config": {"filter_subject": own, "ack_policy": "none"}}),
    ]:
        ok, _ = await api(nc, subject, body)
        after = sorted(c.name for c in await ejs.consumers_info(STREAM))
        check(f"denied: creating {label}", not ok and after == before, f"consumers {after}")
    ok, _ = await api(nc, f"$JS.API.STREAM.MSG.GET.{STREAM}", {"seq": 1})
    check("denied: reading the stream (STREAM.MSG.GET)", not ok)
    ok, _ = await api(nc, f"$JS.API.STREAM.INFO.{STREAM}")
    check("denied: stream info", not ok)

    # No subscriptions beyond its inbox: not the events (not even its own), not other inboxes.
    seen = []

    async def collect(m):
        seen.append(m.subject)

    subjects = ("muster.events.>", "muster.events.com.acme.billing.>", "_INBOX.>")
    for subject in subjects:
        try:
            await nc.subscribe(subject, cb=collect)
            await nc.flush(timeout=TIMEOUT)
        except Exception:
            pass
    await ejs.publish(event_subject(PUBLISHER_TYPE, "inv-2"), b"{}")  # a PubAck to the engine's inbox
    await ejs.publish("muster.events.muster.team.sync.payments", b"{}")
    await asyncio.sleep(0.3)
    check("denied: subscribing to muster.events.>, its own events or other clients' _INBOX.>",
          seen == [] and all(violation("subscription", s) for s in subjects), f"saw {seen}")
    await nc.close()

    # The inbox prefix matters: with the default `_INBOX.` the reply subscription is refused, so
    # the event is stored but its publisher never learns it.
    errors.clear()
    nc = await nats.connect(hub_url, user=PUBLISHER, password=SECRETS["MUSTER_BILLING_PASSWORD"],
                            error_cb=collect_error)
    default = event_subject(PUBLISHER_TYPE, "inv-3")
    ok, _ = await attempt(nc.jetstream().publish(default, b"{}", timeout=TIMEOUT,
                                                 headers=cloudevent(PUBLISHER_TYPE, "inv-3", "inv-3")))
    count = await stored(ejs, default)
    refused = any("permissions violation for subscription to \"_inbox." in e for e in errors)
    check("without its inbox prefix: stored, but no PubAck (the _INBOX.* reply subscription is refused)",
          not ok and refused and count == 1, f"PubAck {ok}, refused {refused}, stored {count}")
    await nc.close()


async def scenario(hub_url: str, leaf_url: str) -> None:
    async def quiet(_e):
        pass

    engine = await nats.connect(hub_url, user="engine", password=SECRETS["MUSTER_ENGINE_PASSWORD"],
                                error_cb=quiet)
    ejs = engine.jetstream()
    await ejs.add_stream(StreamConfig(name=STREAM, subjects=["muster.events.>", "muster.runs.>"]))
    await ejs.add_consumer(STREAM, ConsumerConfig(durable_name="sync_team", filter_subject="muster.events.>",
                                                  ack_policy=AckPolicy.EXPLICIT))
    await ejs.publish("muster.events.muster.namespace.changed.dev", b"dev-1")
    await ejs.publish("muster.events.muster.namespace.changed.prod", b"prod-1")
    await ejs.publish("muster.events.muster.team.created.payments", b"team-1")

    dev = "muster.events.muster.namespace.changed.dev"
    prod = "muster.events.muster.namespace.changed.prod"
    for via, url, user, password, own, other in [
        ("leaf dev/eu-1", leaf_url, "agent", SECRETS["MUSTER_AGENT_PASSWORD"], "agent-dev-eu-1", "agent-dev-us-1"),
        ("hub agent-dev", hub_url, "agent-dev", SECRETS["MUSTER_AGENT_DEV_PASSWORD"], "agent-dev-us-1", "agent-prod-eu-1"),
    ]:
        print(f"as the agent via {via} (consumer {own})")
        nc = await nats.connect(url, user=user, password=password, error_cb=quiet)
        js = nc.jetstream()
        ok, e = await api(nc, "$JS.API.INFO")
        check("JetStream account info", ok, str(e))
        ok, e = await api(nc, f"$JS.API.STREAM.INFO.{STREAM}")
        check("stream info", ok, str(e))
        ok, e = await api(nc, f"$JS.API.CONSUMER.CREATE.{STREAM}.{own}.{dev}", consumer_body(own, dev))
        check("create its own consumer, filtered on its environment", ok, str(e))
        ok, e = await api(nc, f"$JS.API.CONSUMER.INFO.{STREAM}.{own}")
        check("consumer info", ok, str(e))
        sub = await js.pull_subscribe_bind(own, STREAM)
        ok, msgs = await attempt(sub.fetch(5, timeout=TIMEOUT), TIMEOUT * 3)
        got = [m.data for m in msgs] if ok else []
        check("pull gets its environment's events only", bool(got) and all(d.startswith(b"dev-") for d in got),
              f"{got or msgs}")
        if ok and msgs:
            ok, e = await attempt(msgs[0].ack_sync(timeout=TIMEOUT))
            check("ack", ok, str(e))
        ok, e = await attempt(js.publish("muster.events.muster.cluster.reported.dev", b"report", timeout=TIMEOUT))
        check("publish a report (stored, PubAck)", ok, str(e))

        ok, _ = await api(nc, f"$JS.API.CONSUMER.CREATE.{STREAM}.{own}.{prod}", consumer_body(own, prod))
        check("denied: its consumer on another environment's subject", not ok)
        env = other.split("-")[1]
        other_filter = f"muster.events.muster.namespace.changed.{env}"
        ok, _ = await api(nc, f"$JS.API.CONSUMER.CREATE.{STREAM}.{other}.{other_filter}",
                          consumer_body(other, other_filter))
        check(f"denied: another cluster's consumer {other}", not ok)
        ok, _ = await api(nc, f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.{own}", consumer_body(own, "muster.events.>"))
        check("denied: the legacy DURABLE.CREATE form", not ok)
        ok, _ = await api(nc, f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.sync_team", {"batch": 1, "expires": 500_000_000})
        check("denied: pulling the engine's workflow consumer", not ok)
        ok, _ = await api(nc, f"$JS.API.STREAM.DELETE.{STREAM}")
        check("denied: deleting the stream", not ok)
        ok, _ = await api(nc, f"$JS.API.CONSUMER.DELETE.{STREAM}.sync_team")
        check("denied: deleting a consumer", not ok)
        ok, _ = await attempt(js.publish("muster.events.muster.team.created.forged", b"x", timeout=TIMEOUT))
        check("denied: publishing another event type", not ok)
        ok, _ = await attempt(js.publish("muster.events.muster.cluster.reported.prod", b"x", timeout=TIMEOUT))
        check("denied: reporting for another environment", not ok)
        seen = []

        async def collect(m):
            seen.append(m.subject)

        try:
            await nc.subscribe("muster.events.>", cb=collect)
            await nc.flush(timeout=TIMEOUT)
        except Exception:
            pass
        await ejs.publish("muster.events.muster.namespace.changed.dev", b"dev-2")
        await asyncio.sleep(0.3)
        check("denied: a raw subscription to muster.events.>", seen == [], f"{seen}")
        await nc.close()
    await publisher(hub_url, ejs)
    await engine.close()


def wait_http(url: str, accept, deadline: float) -> bool:
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if accept(json.loads(r.read() or b"{}")):
                    return True
        except Exception:
            pass
        time.sleep(0.1)
    return False


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    server = sys.argv[1]
    hub_src = (ROOT / "config/nats/hub.conf").read_text()
    leaf_src = (ROOT / "config/nats/leaf.conf").read_text()
    ports = {name: free_port() for name in ("hub", "hub_http", "hub_leaf", "leaf", "leaf_http")}
    procs = []
    with tempfile.TemporaryDirectory(prefix="nats-perms-") as tmp:
        hub = rewrite(hub_src, {
            r"^port: 4222$": f"port: {ports['hub']}",
            r"^http_port: 8222$": f"http_port: {ports['hub_http']}",
            r"^  port: 7422$": f"  port: {ports['hub_leaf']}",
            r'^  store_dir: ".*"$': f'  store_dir: "{tmp}/js"',
        })
        leaf = rewrite(leaf_src, {
            r"^port: 4222$": f"port: {ports['leaf']}",
            r"^http_port: 8222$": f"http_port: {ports['leaf_http']}",
        })
        Path(tmp, "hub.conf").write_text(hub)
        Path(tmp, "leaf.conf").write_text(leaf)
        env = dict(os.environ, **SECRETS,
                   MUSTER_HUB_LEAF_URL=f"nats-leaf://leaf-dev-eu-1:{SECRETS['MUSTER_LEAF_DEV_EU_1_PASSWORD']}"
                                       f"@127.0.0.1:{ports['hub_leaf']}")
        try:
            for name in ("hub", "leaf"):
                log = open(Path(tmp, f"{name}.log"), "w")
                procs.append((name, log, subprocess.Popen([server, "-c", str(Path(tmp, f"{name}.conf"))],
                                                           env=env, stdout=log, stderr=subprocess.STDOUT)))
                if name == "hub" and not wait_http(f"http://127.0.0.1:{ports['hub_http']}/healthz?js-enabled-only=true",
                                                   lambda _: True, time.time() + 20):
                    raise RuntimeError("the hub did not become healthy")
            if not wait_http(f"http://127.0.0.1:{ports['hub_http']}/leafz",
                             lambda j: j.get("leafnodes", 0) >= 1, time.time() + 20):
                raise RuntimeError("the leaf node did not connect to the hub")
            print(f"hub on {ports['hub']} (leafnodes {ports['hub_leaf']}), leaf on {ports['leaf']}: connected")
            asyncio.run(scenario(f"nats://127.0.0.1:{ports['hub']}", f"nats://127.0.0.1:{ports['leaf']}"))
        except Exception as e:
            check("setting up hub and leaf", False, repr(e))
            for name, _, _ in procs:
                print(f"--- {name}.log", file=sys.stderr)
                print(Path(tmp, f"{name}.log").read_text()[-3000:], file=sys.stderr)
        finally:
            for _, log, p in procs:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                log.close()
    failed = [n for n, ok in results if not ok]
    print(f"check-nats-permissions: {len(results) - len(failed)} of {len(results)} checks ok"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
