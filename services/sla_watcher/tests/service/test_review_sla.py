"""Review findings (issue 6): each test states what the requirement asks and fails on main."""
import time

import pytest

from services.sla_watcher import clocks as c
from services.sla_watcher.engine import SlaEngine
from services.sla_watcher.store import SlaStore
from services.sla_watcher.tests.service.support import (Recorder, _meta, StaticConfig, classified, message, reopened,
                                                        replied, resolved, status, write_policies)
from shared import events as ev

FIRES = (ev.SLA_WARNING, ev.SLA_BREACHED, ev.TICKET_ESCALATED)


@pytest.fixture
def store(redis_client):
    return SlaStore(redis_client)


def engine(store, policy_file, **kwargs):
    recorder = Recorder()
    return SlaEngine(store, StaticConfig(policy_file, store), recorder, **kwargs), recorder


def policy(tmp_path, **extra):
    return write_policies(tmp_path / "sla.yaml", {"name": "p", "first_response": 3600, "resolution": 7200,
                                                  "warn_at": [0.5], **extra})


def parse(body, source, event_type):
    return ev.parse_event(source, event_type, body)


def test_a_redelivered_resolution_does_not_close_the_reopened_resolution_clock(store, tmp_path):
    """At-least-once delivery: ticket_resolved is redelivered after ticket_reopened (another
    queue) was handled. The ticket is open again; its resolution clock must keep running."""
    sla, _ = engine(store, policy(tmp_path))
    t0 = time.time()
    sla.ticket_classified(parse(classified("TM-1", t0 - 600), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    first = parse(resolved("TM-1", t0 - 300), ev.AGENT_DESK, ev.TICKET_RESOLVED)
    sla.ticket_resolved(first)
    sla.ticket_reopened(parse(reopened("TM-1", t0 - 100), ev.AGENT_DESK, ev.TICKET_REOPENED))
    assert store.clock("TM-1", c.RESOLUTION).state == c.RUNNING
    sla.ticket_resolved(first)  # the same event again (consumer died before its ack)
    assert store.clock("TM-1", c.RESOLUTION).state == c.RUNNING
    assert store.ticket("TM-1").resolved_at is None


def test_a_reopen_handled_late_but_before_its_resolution_is_not_lost(store, tmp_path):
    """Catch-up after downtime: both events are older than the 60 s grace and the reopen
    queue drains first. The ticket ends open, so the resolution clock must end running."""
    sla, _ = engine(store, policy(tmp_path))
    t0 = time.time()
    sla.ticket_classified(parse(classified("TM-2", t0 - 900), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    sla.ticket_reopened(parse(reopened("TM-2", t0 - 200), ev.AGENT_DESK, ev.TICKET_REOPENED))
    sla.ticket_resolved(parse(resolved("TM-2", t0 - 300), ev.AGENT_DESK, ev.TICKET_RESOLVED))
    assert store.clock("TM-2", c.RESOLUTION).state == c.RUNNING


def test_a_clock_started_while_the_ticket_waits_on_the_customer_starts_paused(store, tmp_path):
    """Event order: the agent's "waiting on customer" is handled before ticket_classified.
    The status pauses resolution, so the resolution clock must not run."""
    sla, _ = engine(store, policy(tmp_path))
    t0 = time.time()
    sla.ticket_status_changed(parse(status("TM-3", "waiting_on_customer", t0 - 50), ev.AGENT_DESK,
                                    ev.TICKET_STATUS_CHANGED))
    sla.ticket_classified(parse(classified("TM-3", t0 - 100), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    assert store.ticket("TM-3").paused
    assert store.clock("TM-3", c.RESOLUTION).state == c.PAUSED


def test_a_claim_whose_lease_ran_out_mid_batch_is_not_fired_by_a_second_replica(store, tmp_path):
    """Replica A claims, then stalls past the lease while publishing (a flow-controlled
    broker during catch-up); replica B claims the same member and fires the same items."""
    sla_a, rec_a = engine(store, write_policies(tmp_path / "sla.yaml", {"name": "t", "first_response": 10}))
    sla_b, rec_b = engine(store, str(tmp_path / "sla.yaml"))
    t0 = time.time()
    sla_a.ticket_classified(parse(classified("TM-4", t0 - 20), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    claimed_a = store.claim_due(t0, 10)
    assert [m.member for m in claimed_a] == ["TM-4:first_response"]
    # A is still firing 31 s later (lease 30 s): B's sweep runs.
    sla_b.sweep_once(t0 + 31)
    # A finishes its round from its read and commits.
    [(clock, _)] = store.claimed_state(claimed_a)
    store.commit(clock, ["breached"], None, t0 + 32)
    fired_b = [t for t, _ in rec_b.events if t in FIRES]
    assert fired_b == [], "B fired items A held (A still fires them): each item fires twice"


def test_open_set_forgets_a_clock_whose_record_expired_without_a_config_change(store, tmp_path, redis_client):
    """Unbounded growth: a clock whose hash expired (abandoned ticket, paused > TTL) stays in
    ``open`` until a config change starts a recompute walk."""
    sla, _ = engine(store, policy(tmp_path))
    t0 = time.time()
    sla.ticket_classified(parse(classified("TM-5", t0 - 100), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    sla.ticket_status_changed(parse(status("TM-5", "waiting_on_customer", t0 - 50), ev.AGENT_DESK,
                                    ev.TICKET_STATUS_CHANGED))
    sla.recompute_step("replica-1", now=t0)  # this generation's walk, done before the expiry
    redis_client.delete(store.clock_key("TM-5", c.RESOLUTION))  # its TTL ran out
    for _ in range(3):
        sla.sweep_once(t0 + 10)
        sla.recompute_step("replica-1", now=t0 + 10)
    assert "TM-5:resolution" not in redis_client.smembers(store.open_key)


def test_a_tightened_target_fires_on_time_not_when_the_walk_gets_there(store, tmp_path, monkeypatch):
    """A policy change shortens first response from 1 h to 60 s. The walk reaches a clock only
    after ~open/2000 s (500 s at 1,000,000 clocks); meanwhile its due score is the old breach
    time, so a breach now 40 s overdue does not fire (here: the walk has not reached it yet)."""
    from services.sla_watcher import engine as engine_module
    monkeypatch.setattr(engine_module, "RECOMPUTE_PAGE", 1)
    slow = write_policies(tmp_path / "slow.yaml", {"name": "slow", "first_response": 3600, "warn_at": [],
                                                   "escalate_on_breach": False})
    fast = write_policies(tmp_path / "fast.yaml", {"name": "fast", "first_response": 60, "warn_at": [],
                                                   "escalate_on_breach": False})
    before, _ = engine(store, slow)
    now = time.time()
    for n in range(1, 11):
        before.ticket_classified(parse(classified(f"TM-6{n}", now - 100), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    after, recorder = engine(store, fast)
    after.recompute_step("me", now=now, pages=1)  # one walk step (one page) before the sweep
    after.sweep_once(now)
    breached = {b["ticket_id"] for t, b in recorder.events if t == ev.SLA_BREACHED}
    assert len(breached) == 10, f"only {sorted(breached)} of 10 overdue breaches fired"


def test_warnings_name_the_latest_assignee_whatever_order_assignments_arrive_in(store, tmp_path):
    """Reassignment li.na → wang.fang; the two ticket_assigned events are handled in reverse
    (a retried delivery). Warnings must go to the assignee, wang.fang."""
    sla, _ = engine(store, policy(tmp_path))
    t0 = time.time()
    first = ev.make_event(ev.DISPATCHER, ev.TICKET_ASSIGNED, **_meta("TM-7", t0 - 60), agent_id="li.na",
                          channel="email", priority="P1", required_skills=["general"],
                          decision={"considered": 1, "eligible": 1, "reason": "only one", "rejected": {}})
    second = ev.make_event(ev.DISPATCHER, ev.TICKET_ASSIGNED, **_meta("TM-7", t0 - 10), agent_id="wang.fang",
                           channel="email", priority="P1", required_skills=["general"],
                           decision={"considered": 1, "eligible": 1, "reason": "only one", "rejected": {}})
    sla.ticket_assigned(parse(second, ev.DISPATCHER, ev.TICKET_ASSIGNED))
    sla.ticket_assigned(parse(first, ev.DISPATCHER, ev.TICKET_ASSIGNED))
    assert store.ticket("TM-7").agent_id == "wang.fang"


def test_a_clock_outlives_its_breach_time(store, tmp_path, redis_client):
    """Nothing bounds a target: 30 business days of 9 h in a Mon-Fri calendar are 6 weeks of
    wall time (here 40 days 24x7). The hash expires 35 days after its last write (a commit
    does not refresh it), so the sweep finds nothing at the breach: it never fires."""
    sla, _ = engine(store, write_policies(tmp_path / "sla.yaml", {"name": "long", "first_response": 3600,
                                                                  "resolution": 40 * 86400, "warn_at": []}))
    t0 = time.time()
    sla.ticket_classified(parse(classified("TM-8", t0), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    clock = store.clock("TM-8", c.RESOLUTION)
    assert redis_client.ttl(store.clock_key("TM-8", c.RESOLUTION)) >= clock.breach_at - t0
