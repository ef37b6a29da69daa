"""Every Redis key a ticket leaves behind is bounded: it has a TTL, or docs/architecture.md's key
table documents it as bounded another way (by the roster, until a state change, trimmed).

The real mesh (devenv.mesh: intake_chat, dispatcher, sla_watcher, notifier, agent_desk) takes a
few chat tickets through assignment, a supervisor's reply and resolution (bench.redis_memory's
flow, small). The database is checked with the tickets open and again resolved: a key of an
undocumented pattern without TTL, or a documented timed key without TTL, fails the test with the
key named, so a new key needs a TTL or a row in the table.
"""
from __future__ import annotations

from urllib.parse import unquote, urlsplit

import redis

from bench.mesh_throughput import MESH_SERVICES, put_agents_online, write_roster, write_rules
from bench.redis_memory import add_supervisor, census, check_key_bounds, documented_patterns, run_tickets, wait_quiet
from devenv.mesh import Mesh, isolated_env

TICKETS = 3
PER_TICKET = ("agent_desk:ticket:<ticket>", "dispatcher:ticket:<ticket>", "intake_chat:transcript:<ticket>",
              "history:events:<ticket>", "notifier:contact:<ticket>", "sla_watcher:ticket:<ticket>")


async def test_every_key_of_open_and_resolved_tickets_has_a_ttl_or_a_documented_bound(tmp_path, amqp_uri, redis_url):
    vhost = unquote(urlsplit(amqp_uri).path.lstrip("/"))
    roster, rules = tmp_path / "roster.yaml", tmp_path / "routing.yaml"
    write_roster(roster, TICKETS)
    add_supervisor(roster)
    write_rules(rules)
    env = isolated_env(amqp_uri=amqp_uri, redis_url=redis_url, work_dir=tmp_path, imap_port=1, smtp_port=1,
                       TM_ROSTER_FILE=str(roster), TM_ROUTING_RULES_FILE=str(rules))
    client = redis.Redis.from_url(redis_url)
    patterns = documented_patterns()
    counted = {}
    with Mesh(env, tmp_path / "log").start(MESH_SERVICES) as mesh:
        await put_agents_online(amqp_uri)

        async def count_open() -> None:
            counted["open"] = census(client, patterns)
        await run_tickets(mesh, amqp_uri, vhost, TICKETS, 4, on_open=count_open)
        counted["resolved"] = census(client, patterns)
        assert not mesh.exited()
    for when, found in counted.items():
        # the census saw the tickets (a broken grouping would pass the bound check vacuously)
        assert {p: found.patterns[p].keys for p in PER_TICKET} == {p: TICKETS for p in PER_TICKET}, when
        assert check_key_bounds(found, patterns) == [], when
    # resolving gives the dispatcher's record its 30 days
    assert counted["open"].patterns["dispatcher:ticket:<ticket>"].no_ttl == TICKETS
    assert counted["resolved"].patterns["dispatcher:ticket:<ticket>"].no_ttl == 0
