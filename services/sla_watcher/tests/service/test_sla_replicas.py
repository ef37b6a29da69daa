"""Replicas racing on due clocks (two engines, their interleaving replayed step by step),
catch-up after downtime, and a config change recomputing open clocks (nameko containers on a
real RabbitMQ vhost and Redis database)."""
import time
from datetime import datetime

import pytest
from nameko.standalone.events import event_dispatcher

from services.sla_watcher import clocks as c
from services.sla_watcher.engine import SlaEngine
from services.sla_watcher.store import SlaStore
from services.sla_watcher.tests.service.support import (Recorder, StaticConfig, breached, classified, collect, of,
                                                        start_watcher, tiny_policies, write_policies)
from shared import events as ev
from shared.business_calendar import ALWAYS
from shared.sla_policy import load_sla_config
from shared.testing.plugin import poll_until

KINDS = (ev.SLA_WARNING, ev.SLA_BREACHED, ev.TICKET_ESCALATED)


@pytest.fixture
def store(redis_client):
    return SlaStore(redis_client)


def put_running(store, ticket_id, received_at, target, warn_at, *, gen, policy="tiny"):
    """A clock as a watcher would have left it when it started (what downtime leaves behind)."""
    plan = c.make_plan(target, warn_at, [(0, "reassign_next_tier", None)])
    clock = c.with_derived(c.activate(ticket_id=ticket_id, name=c.FIRST_RESPONSE, cycle=1, policy=policy,
                                      calendar="always", target=target, plan=plan, at=received_at, config_gen=gen),
                           ALWAYS)
    assert store.put_clock(clock, due=c.next_due(clock, ALWAYS), now=time.time()) == 1


def generation(store, policy_file):
    return store.register_config(load_sla_config(policy_file).digest)


def test_two_replicas_racing_on_the_same_due_clocks_fire_each_item_exactly_once(tmp_path, store, redis_client):
    """Replicas A and B sweep the same due set, interleaved at every step A takes (as the
    dispatcher's race tests replay theirs: no timer, no scheduling): after each item A fires, B
    sweeps. While A holds its claim B finds nothing of it; once the later clocks fall due B
    takes those, and only those. Each item fires once, by one replica."""
    policy_file = tiny_policies(tmp_path)
    gen = generation(store, policy_file)
    t0 = time.time() - 100
    early, late = [f"TM-{n}" for n in range(20)], [f"TM-{n}" for n in range(20, 40)]
    for ticket_id in early:
        put_running(store, ticket_id, t0, 1, [0.5], gen=gen)       # due from t0 + 0.5
    for ticket_id in late:
        put_running(store, ticket_id, t0 + 10, 1, [0.5], gen=gen)  # due from t0 + 10.5
    now = [t0 + 5]  # both replicas' clock: no lease runs out
    rec_a, rec_b = Recorder(), Recorder()
    replica_a = SlaEngine(SlaStore(redis_client), StaticConfig(policy_file, store), rec_a, clock=lambda: now[0])
    replica_b = SlaEngine(SlaStore(redis_client), StaticConfig(policy_file, store), rec_b, clock=lambda: now[0])
    b_claimed = []

    def a_emits(event_type, /, **fields):
        body = rec_a(event_type, **fields)
        # B's sweeps between A's items: first up to A's horizon, then a catch-up far past the
        # late clocks' items and past A's lease score (the claim itself must keep B off A's).
        b_claimed.append(replica_b.sweep_once(t0 + 5 if len(rec_a.events) < 30 else t0 + 100))
        return body

    replica_a.emit = a_emits
    assert replica_a.sweep_once(t0 + 5) == len(early)
    assert b_claimed[:29] == [0] * 29 and sum(b_claimed) == len(late)
    assert replica_a.sweep_once(t0 + 100) == 0 and replica_b.sweep_once(t0 + 100) == 0

    def fired(recorder):
        return [(b["ticket_id"], t) for t, b in recorder.events if t in KINDS]

    assert sorted(fired(rec_a)) == sorted((t, kind) for t in early for kind in KINDS)
    assert sorted(fired(rec_b)) == sorted((t, kind) for t in late for kind in KINDS)
    bodies = [b for _, b in rec_a.events + rec_b.events]
    assert len({b["event_id"] for b in bodies}) == len(bodies)
    assert store.due_members() == []


def test_after_downtime_everything_due_fires_once_in_due_order(service_container, tmp_path, store, event_listener):
    policy_file = tiny_policies(tmp_path)
    gen = generation(store, policy_file)
    now = time.time()
    # Clocks' items interleave: A's warning, B's warning, B's breach, then A's breach.
    for ticket_id, received_ago, target, warn_at in [
        ("TM-A", 200, 180, [0.5]),   # warning -110, breach -20
        ("TM-B", 100, 60, [0.5]),    # warning -70, breach -40
        ("TM-C", 171, 20, [0.5]),    # warning -161, breach -151
    ]:
        put_running(store, ticket_id, now - received_ago, target, warn_at, gen=gen)
    listener = event_listener(ev.SLA_WATCHER, list(KINDS))
    start_watcher(service_container, policy_file)

    seen = collect(listener, lambda s: len(s) == 9)
    assert [(t, b["ticket_id"]) for t, b, _ in seen] == [
        (ev.SLA_WARNING, "TM-C"), (ev.SLA_BREACHED, "TM-C"), (ev.TICKET_ESCALATED, "TM-C"),
        (ev.SLA_WARNING, "TM-A"),
        (ev.SLA_WARNING, "TM-B"), (ev.SLA_BREACHED, "TM-B"), (ev.TICKET_ESCALATED, "TM-B"),
        (ev.SLA_BREACHED, "TM-A"), (ev.TICKET_ESCALATED, "TM-A"),
    ]
    breach_a = next(b for t, b, _ in seen if t == ev.SLA_BREACHED and b["ticket_id"] == "TM-A")
    assert datetime.fromisoformat(breach_a["due_at"]).timestamp() == pytest.approx(now - 20, abs=1e-3)
    poll_until(lambda: store.due_members() == [], what="nothing left to fire")
    assert store.clock("TM-A", c.FIRST_RESPONSE).fired == {"warning@0.5", c.BREACHED, "esc@0:reassign_next_tier"}


def test_a_policy_change_recomputes_open_clocks_once_across_replicas(service_container, tmp_path, amqp_uri, store,
                                                                      event_listener):
    path = tmp_path / "sla.yaml"
    write_policies(path, {"name": "slow", "first_response": 3600, "warn_at": [0.5], "escalate_on_breach": False})
    for _ in range(2):
        start_watcher(service_container, str(path), TM_CONFIG_RELOAD_SECONDS="0.2")
    listener = event_listener(ev.SLA_WATCHER)
    publish = event_dispatcher({"AMQP_URI": amqp_uri})
    received_at = time.time() - 5
    for ticket_id in ("TM-1", "TM-2"):  # either replica may take each
        publish(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified(ticket_id, received_at))
    poll_until(lambda: all(store.clock(t, c.FIRST_RESPONSE) for t in ("TM-1", "TM-2")), what="clocks started")
    old_gen = store.clock("TM-1", c.FIRST_RESPONSE).config_gen
    assert store.clock("TM-1", c.FIRST_RESPONSE).breach_at == pytest.approx(received_at + 3600, abs=1e-3)

    # Targets cut to 2 s, already used up: both clocks are recomputed (by the walk, or by the
    # first replica to touch them) and their warning and breach fire at once, once.
    write_policies(path, {"name": "fast", "first_response": 2, "warn_at": [0.5], "escalate_on_breach": False})

    seen = collect(listener, lambda s: breached("TM-1")(s) and breached("TM-2")(s), timeout=15)
    for ticket_id in ("TM-1", "TM-2"):
        recomputed = [b for t, b in of(seen, ticket_id, ev.SLA_CLOCK_CHANGED) if b["change"] == "recomputed"]
        assert recomputed and len({b["event_id"] for b in recomputed}) == 1   # one change, whoever announced it
        assert (recomputed[0]["policy"], recomputed[0]["target_seconds"]) == ("fast", 2)
        assert datetime.fromisoformat(recomputed[0]["due_at"]).timestamp() == pytest.approx(received_at + 2, abs=1e-3)
        assert [t for t, _ in of(seen, ticket_id, ev.SLA_WARNING, ev.SLA_BREACHED)] == [ev.SLA_WARNING,
                                                                                         ev.SLA_BREACHED]
        clock = store.clock(ticket_id, c.FIRST_RESPONSE)
        assert clock.policy == "fast" and clock.config_gen > old_gen
    poll_until(lambda: store.recompute_done(store.current_gen()), what="the walk finished")

