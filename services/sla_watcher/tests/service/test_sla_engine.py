"""The SLA engine on a real Redis with a recording emitter: due order across sweep rounds, the
claim against handler writes, config generations."""
import time

import pytest

from services.sla_watcher import clocks as c
from services.sla_watcher.engine import ConfigBehind, SlaEngine
from services.sla_watcher.store import SlaStore
from services.sla_watcher.tests.service.support import (Recorder, StaticConfig, _meta, at, classified, received,
                                                        reopened, replied, resolved, status, tiny_policies,
                                                        write_policies)
from shared import events as ev
from shared.business_calendar import ALWAYS

FIRES = (ev.SLA_WARNING, ev.SLA_BREACHED, ev.TICKET_ESCALATED)


@pytest.fixture
def store(redis_client):
    return SlaStore(redis_client)


def engine(store, policy_file, **kwargs):
    recorder = Recorder()
    return SlaEngine(store, StaticConfig(policy_file, store), recorder, **kwargs), recorder


def fired(recorder):
    return [(t, b["ticket_id"], b.get("clock")) for t, b in recorder.events if t in FIRES]


def test_a_backlog_bigger_than_a_batch_still_fires_in_due_order(store, tmp_path):
    policy = tiny_policies(tmp_path, target=100, warn_at=(0.5,))
    sla, recorder = engine(store, policy, batch=2)
    now = time.time()
    # Five clocks whose items interleave; two per round.
    starts = {"TM-1": now - 300, "TM-2": now - 260, "TM-3": now - 240, "TM-4": now - 230, "TM-5": now - 120}
    for ticket_id, start in starts.items():
        sla.ticket_classified(ev.parse_event(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified(ticket_id, start)))
    expected = sorted((start + offset, index, ticket_id, kind)
                      for ticket_id, start in starts.items()
                      for index, (offset, kind) in enumerate([(50, ev.SLA_WARNING), (100, ev.SLA_BREACHED),
                                                              (100, ev.TICKET_ESCALATED)]))
    rounds = 0
    while sla.sweep_once(now) and rounds < 100:
        rounds += 1
    assert [(t, ticket_id) for t, ticket_id, _ in fired(recorder)] == [(k, t) for _, _, t, k in expected]
    assert store.due_members() == []


def test_a_pause_written_while_a_sweep_holds_the_clock_wins(store, tmp_path):
    policy = write_policies(tmp_path / "sla.yaml", {"name": "r", "first_response": 3600, "resolution": 10,
                                                    "warn_at": [0.5, 0.8]})
    sla, recorder = engine(store, policy)
    now = time.time()
    sla.ticket_classified(ev.parse_event(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-1", now - 6)))
    claimed = store.claim_due(now, 10)   # the resolution clock: its 50% warning is due
    assert [m.member for m in claimed] == ["TM-1:resolution"]
    [(clock, _ticket)] = store.claimed_state(claimed)
    # Meanwhile the agent sets "waiting on customer": the clock pauses, its due score stays leased.
    sla.ticket_status_changed(ev.parse_event(ev.AGENT_DESK, ev.TICKET_STATUS_CHANGED,
                                             status("TM-1", "waiting_on_customer", now - 0.5)))
    assert store.clock("TM-1", c.RESOLUTION).state == c.PAUSED
    assert store.claim_due(now + 1, 10) == []        # nobody else can take it meanwhile
    # The sweep, holding its older read, fires the warning that was due before the pause and
    # commits: the paused clock leaves the due set, the 80% warning does not fire.
    assert store.commit(clock, ["warning@0.5"], now + 2, now) == 2
    assert store.due_members() == ["TM-1:first_response"]
    assert store.clock("TM-1", c.RESOLUTION).fired == {"warning@0.5"}
    # Resumed later: the next item is the 80% warning (8 s used of 10 minus 5.5 s used = 2.5 s on).
    sla.ticket_status_changed(ev.parse_event(ev.AGENT_DESK, ev.TICKET_STATUS_CHANGED,
                                             status("TM-1", "open", now + 100)))
    resumed = store.clock("TM-1", c.RESOLUTION)
    assert c.next_due(resumed, ALWAYS) == pytest.approx(now + 100 + 2.5, abs=1e-3)


def test_a_replica_behind_the_newest_config_leaves_a_clock_to_the_others(store, tmp_path):
    old = write_policies(tmp_path / "old.yaml", {"name": "old", "first_response": 5, "warn_at": []})
    new = write_policies(tmp_path / "new.yaml", {"name": "new", "first_response": 5, "warn_at": [],
                                                 "resolution": 3600})
    behind, behind_recorder = engine(store, old)
    ahead, ahead_recorder = engine(store, new)   # loaded last: the newest generation
    now = time.time()
    ahead.ticket_classified(ev.parse_event(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-1", now - 10)))
    assert store.clock("TM-1", c.FIRST_RESPONSE).config_gen == ahead.configs.loaded.gen
    assert behind.sweep_once(now) == 1 and fired(behind_recorder) == []
    assert store.due_members() == ["TM-1:first_response", "TM-1:resolution"]
    with pytest.raises(ConfigBehind):   # a transient error: the event is retried, by any replica
        behind.ticket_status_changed(ev.parse_event(ev.AGENT_DESK, ev.TICKET_STATUS_CHANGED,
                                                    status("TM-1", "waiting_on_customer", now)))
    assert store.clock("TM-1", c.RESOLUTION).state == c.RUNNING
    ahead.sweep_once(now + 2)
    assert [t for t, _, _ in fired(ahead_recorder)] == [ev.SLA_BREACHED, ev.TICKET_ESCALATED]


def test_an_older_clock_is_recomputed_before_anything_fires(store, tmp_path):
    slow = write_policies(tmp_path / "slow.yaml", {"name": "slow", "first_response": 3600, "warn_at": []})
    fast = write_policies(tmp_path / "fast.yaml", {"name": "fast", "first_response": 4, "warn_at": [0.5],
                                                   "escalate_on_breach": False})
    before, _ = engine(store, slow)
    now = time.time()
    before.ticket_classified(ev.parse_event(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-1", now - 3)))
    after, recorder = engine(store, fast)
    assert after.recompute_step("me", now=now) == 1     # the one open clock (slow tracks no resolution)
    changed = [b for t, b in recorder.events if t == ev.SLA_CLOCK_CHANGED]
    assert [(b["clock"], b["change"], b["policy"], b["target_seconds"]) for b in changed] == [
        (c.FIRST_RESPONSE, "recomputed", "fast", 4)]
    assert after.recompute_step("me", now=now) == 0     # done for this generation
    after.sweep_once(now)
    assert [t for t, _, _ in fired(recorder)] == [ev.SLA_WARNING]   # 3 s used of 4: the breach is 1 s away


def _policy(tmp_path, **extra):
    return write_policies(tmp_path / "sla.yaml", {"name": "p", "first_response": 3600, "resolution": 7200,
                                                  "warn_at": [0.5], **extra})


def _parse(body, source, event_type):
    return ev.parse_event(source, event_type, body)


def _phone_call(ticket_id, received_at, *, resolved_on_first_contact):
    source = {"call_id": f"call-{ticket_id}", "agent_id": "li.na"}
    if resolved_on_first_contact:
        source["resolved_on_first_contact"] = "true"
    return ev.make_event(ev.INTAKE_PHONE, ev.TICKET_RECEIVED, **_meta(ticket_id), channel="phone",
                         customer={"name": "张伟", "phone": "+8613812345678"}, subject="来电记录", text="已告知。",
                         received_at=at(received_at), source=source)


def test_a_call_resolved_on_first_contact_starts_no_clock_and_counts_for_a_second_contact(store, tmp_path):
    """intake_phone marks a call resolved while the customer was on the line: no
    ticket_resolved follows. The same caller back an hour later is a second contact."""
    sla, recorder = engine(store, _policy(tmp_path, reopen_escalation_hours=2))
    t0 = time.time()
    sla.ticket_received(_parse(_phone_call("TM-10", t0 - 3600, resolved_on_first_contact=True), ev.INTAKE_PHONE,
                               ev.TICKET_RECEIVED))
    sla.ticket_classified(_parse(classified("TM-10", t0 - 3600, channel="phone"), ev.DISPATCHER,
                                 ev.TICKET_CLASSIFIED))  # were it classified, it still starts nothing
    assert store.clock("TM-10", c.FIRST_RESPONSE).is_open is False
    assert store.clock("TM-10", c.RESOLUTION).is_open is False
    sla.ticket_received(_parse(_phone_call("TM-11", t0, resolved_on_first_contact=False), ev.INTAKE_PHONE,
                               ev.TICKET_RECEIVED))
    sla.ticket_classified(_parse(classified("TM-11", t0, channel="phone"), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    escalations = [b for t, b in recorder.events if t == ev.TICKET_ESCALATED]
    assert [(b["ticket_id"], b["trigger"]) for b in escalations] == [("TM-11", "second_contact")]
    assert "TM-10" in escalations[0]["reason"]


def test_a_sweep_that_lost_its_claim_stops_firing_that_clock(store, redis_client, tmp_path):
    """Replica A stalls past its lease after publishing a warning; replica B takes the clock
    over and fires the rest. A fires nothing more of it, B does not repeat A's warning, and A's
    commit leaves B's claim alone."""
    policy_file = write_policies(tmp_path / "sla.yaml", {"name": "t", "first_response": 10, "warn_at": [0.5]})
    now = [time.time()]
    store_a = SlaStore(redis_client)
    sla_a, rec_a = engine(store_a, policy_file, clock=lambda: now[0])
    sla_b, rec_b = engine(store, policy_file, clock=lambda: now[0])
    sla_a.ticket_classified(_parse(classified("TM-12", now[0] - 20), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    renew = store_a.extend

    def stalling_extend(claimed, at, fired=(), **kwargs):
        held = renew(claimed, at, fired, **kwargs)
        if "warning@0.5" in fired and not rec_b.events:  # A stalls right after its warning: B sweeps
            now[0] += 31
            sla_b.sweep_once()
        return held

    store_a.extend = stalling_extend
    sla_a.sweep_once()
    assert [t for t, _ in rec_a.events if t in FIRES] == [ev.SLA_WARNING]
    assert [t for t, _ in rec_b.events if t in FIRES] == [ev.SLA_BREACHED, ev.TICKET_ESCALATED]
    assert store.clock("TM-12", c.FIRST_RESPONSE).fired == {"warning@0.5", "breached", "esc@0:reassign_next_tier"}
    assert store.due_members() == []


def test_a_redelivered_resolution_does_not_close_the_reopened_resolution_clock(store, tmp_path):
    """At-least-once delivery: ticket_resolved is redelivered after ticket_reopened (another
    queue) was handled. The ticket is open again; its resolution clock must keep running."""
    sla, _ = engine(store, _policy(tmp_path))
    t0 = time.time()
    sla.ticket_classified(_parse(classified("TM-1", t0 - 600), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    first = _parse(resolved("TM-1", t0 - 300), ev.AGENT_DESK, ev.TICKET_RESOLVED)
    sla.ticket_resolved(first)
    sla.ticket_reopened(_parse(reopened("TM-1", t0 - 100), ev.AGENT_DESK, ev.TICKET_REOPENED))
    assert store.clock("TM-1", c.RESOLUTION).state == c.RUNNING
    sla.ticket_resolved(first)  # the same event again (consumer died before its ack)
    assert store.clock("TM-1", c.RESOLUTION).state == c.RUNNING
    assert store.ticket("TM-1").resolved_at is None


def test_a_reopen_handled_late_but_before_its_resolution_is_not_lost(store, tmp_path):
    """Catch-up after downtime: both events are older than the 60 s grace and the reopen
    queue drains first. The ticket ends open, so the resolution clock must end running."""
    sla, _ = engine(store, _policy(tmp_path))
    t0 = time.time()
    sla.ticket_classified(_parse(classified("TM-2", t0 - 900), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    sla.ticket_reopened(_parse(reopened("TM-2", t0 - 200), ev.AGENT_DESK, ev.TICKET_REOPENED))
    sla.ticket_resolved(_parse(resolved("TM-2", t0 - 300), ev.AGENT_DESK, ev.TICKET_RESOLVED))
    assert store.clock("TM-2", c.RESOLUTION).state == c.RUNNING


def test_a_clock_started_while_the_ticket_waits_on_the_customer_starts_paused(store, tmp_path):
    """Event order: the agent's "waiting on customer" is handled before ticket_classified.
    The status pauses resolution, so the resolution clock must not run."""
    sla, _ = engine(store, _policy(tmp_path))
    t0 = time.time()
    sla.ticket_status_changed(_parse(status("TM-3", "waiting_on_customer", t0 - 50), ev.AGENT_DESK,
                                    ev.TICKET_STATUS_CHANGED))
    sla.ticket_classified(_parse(classified("TM-3", t0 - 100), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    assert store.ticket("TM-3").paused
    assert store.clock("TM-3", c.RESOLUTION).state == c.PAUSED


def test_a_claim_whose_lease_ran_out_mid_batch_is_not_fired_by_a_second_replica(store, tmp_path):
    """Replica A claims, then stalls past the lease while publishing (a flow-controlled
    broker during catch-up); replica B claims the same member and fires the same items."""
    sla_a, rec_a = engine(store, write_policies(tmp_path / "sla.yaml", {"name": "t", "first_response": 10}))
    sla_b, rec_b = engine(store, str(tmp_path / "sla.yaml"))
    t0 = time.time()
    sla_a.ticket_classified(_parse(classified("TM-4", t0 - 20), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    claimed_a = store.claim_due(t0, 10)
    assert [m.member for m in claimed_a] == ["TM-4:first_response"]
    # A is still firing 31 s later (lease 30 s): B's sweep runs.
    sla_b.sweep_once(t0 + 31)
    # A finishes its round from its read and commits.
    [(clock, _)] = store.claimed_state(claimed_a)
    store.commit(clock, ["breached"], None, t0 + 32)
    fired_b = [t for t, _ in rec_b.events if t in FIRES]
    assert fired_b == [], "B fired items A held (A still fires them): each item fires twice"
    assert store.due_members() == []  # A's commit: nothing left to fire


def test_the_open_set_forgets_a_clock_whose_record_expired_without_a_config_change(store, tmp_path, redis_client):
    """A clock whose hash expired (abandoned ticket, paused > TTL) leaves ``open`` without a
    config change (no recompute walk): the set does not grow without bound."""
    sla, _ = engine(store, _policy(tmp_path))
    t0 = time.time()
    sla.ticket_classified(_parse(classified("TM-5", t0 - 100), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    sla.ticket_status_changed(_parse(status("TM-5", "waiting_on_customer", t0 - 50), ev.AGENT_DESK,
                                    ev.TICKET_STATUS_CHANGED))
    sla.recompute_step("replica-1", now=t0)  # this generation's walk, done before the expiry
    redis_client.delete(store.clock_key("TM-5", c.RESOLUTION))  # its TTL ran out
    for _ in range(3):
        sla.sweep_once(t0 + 10)
        sla.recompute_step("replica-1", now=t0 + 10)
    assert "TM-5:resolution" not in redis_client.smembers(store.open_key)


def test_a_tightened_target_fires_on_time_not_when_the_walk_gets_there(store, tmp_path, monkeypatch):
    """A policy change shortens first response from 1 h to 60 s. The walk reaches a clock only
    after ~open/2000 s (500 s at 1,000,000 clocks): the sweep must not wait for it (here one walk
    step of one clock, then a sweep: all ten breaches, 40 s overdue, fire)."""
    from services.sla_watcher import engine as engine_module
    monkeypatch.setattr(engine_module, "RECOMPUTE_PAGE", 1)
    slow = write_policies(tmp_path / "slow.yaml", {"name": "slow", "first_response": 3600, "warn_at": [],
                                                   "escalate_on_breach": False})
    fast = write_policies(tmp_path / "fast.yaml", {"name": "fast", "first_response": 60, "warn_at": [],
                                                   "escalate_on_breach": False})
    before, _ = engine(store, slow)
    now = time.time()
    for n in range(1, 11):
        before.ticket_classified(_parse(classified(f"TM-6{n}", now - 100), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    after, recorder = engine(store, fast)
    after.recompute_step("me", now=now, pages=1)  # one walk step (one page) before the sweep
    after.sweep_once(now)
    breached = {b["ticket_id"] for t, b in recorder.events if t == ev.SLA_BREACHED}
    assert len(breached) == 10, f"only {sorted(breached)} of 10 overdue breaches fired"


def test_warnings_name_the_latest_assignee_whatever_order_assignments_arrive_in(store, tmp_path):
    """Reassignment li.na → wang.fang; the two ticket_assigned events are handled in reverse
    (a retried delivery). Warnings must go to the assignee, wang.fang."""
    sla, _ = engine(store, _policy(tmp_path))
    t0 = time.time()
    first = ev.make_event(ev.DISPATCHER, ev.TICKET_ASSIGNED, **_meta("TM-7", t0 - 60), agent_id="li.na",
                          channel="email", priority="P1", required_skills=["general"],
                          decision={"considered": 1, "eligible": 1, "reason": "only one", "rejected": {}})
    second = ev.make_event(ev.DISPATCHER, ev.TICKET_ASSIGNED, **_meta("TM-7", t0 - 10), agent_id="wang.fang",
                           channel="email", priority="P1", required_skills=["general"],
                           decision={"considered": 1, "eligible": 1, "reason": "only one", "rejected": {}})
    sla.ticket_assigned(_parse(second, ev.DISPATCHER, ev.TICKET_ASSIGNED))
    sla.ticket_assigned(_parse(first, ev.DISPATCHER, ev.TICKET_ASSIGNED))
    assert store.ticket("TM-7").agent_id == "wang.fang"


def test_a_clock_outlives_its_breach_time(store, tmp_path, redis_client):
    """Nothing bounds a target: 30 business days of 9 h in a Mon-Fri calendar are 6 weeks of
    wall time (here 40 days 24x7). The clock must still be there at its breach."""
    sla, _ = engine(store, write_policies(tmp_path / "sla.yaml", {"name": "long", "first_response": 3600,
                                                                  "resolution": 40 * 86400, "warn_at": []}))
    t0 = time.time()
    sla.ticket_classified(_parse(classified("TM-8", t0), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    clock = store.clock("TM-8", c.RESOLUTION)
    assert redis_client.ttl(store.clock_key("TM-8", c.RESOLUTION)) >= clock.breach_at - t0


def _second_contacts(recorder):
    return [(b["ticket_id"], b["reason"]) for t, b in recorder.events
            if t == ev.TICKET_ESCALATED and b["trigger"] == "second_contact"]


def test_a_contact_linked_to_a_ticket_resolved_soon_before_is_a_second_contact(store, tmp_path):
    """The intake links the new contact to the resolved ticket (another address: only the link
    tells). The note completing the new ticket reads the linked one in the same script."""
    sla, recorder = engine(store, _policy(tmp_path, reopen_escalation_hours=2))
    t0 = time.time()
    sla.ticket_received(_parse(received("TM-20", t0 - 3600, email="a@example.com"), ev.INTAKE_EMAIL,
                               ev.TICKET_RECEIVED))
    sla.ticket_classified(_parse(classified("TM-20", t0 - 3600), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    sla.ticket_resolved(_parse(resolved("TM-20", t0 - 1800), ev.AGENT_DESK, ev.TICKET_RESOLVED))
    # Classified first this time: the received note completes the ticket.
    sla.ticket_classified(_parse(classified("TM-21", t0), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    sla.ticket_received(_parse(received("TM-21", t0, email="b@example.com", linked="TM-20"), ev.INTAKE_EMAIL,
                               ev.TICKET_RECEIVED))
    assert [(ticket_id, "TM-20" in reason) for ticket_id, reason in _second_contacts(recorder)] == [("TM-21", True)]


def test_a_ticket_noted_before_customer_ref_existed_still_finds_the_customers_last_resolution(store, tmp_path,
                                                                                           redis_client):
    """A ticket record written by the previous version (no ``customer_ref``): the check reads
    the customer's last resolution itself."""
    sla, recorder = engine(store, _policy(tmp_path, reopen_escalation_hours=2))
    t0 = time.time()
    for ticket_id, received_at in (("TM-30", t0 - 3600), ("TM-31", t0)):
        sla.ticket_received(_parse(received(ticket_id, received_at), ev.INTAKE_EMAIL, ev.TICKET_RECEIVED))
        if ticket_id == "TM-30":
            sla.ticket_classified(_parse(classified(ticket_id, received_at), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
            sla.ticket_resolved(_parse(resolved(ticket_id, t0 - 1800), ev.AGENT_DESK, ev.TICKET_RESOLVED))
    redis_client.hdel(store.ticket_key("TM-31"), "customer_ref")
    sla.ticket_classified(_parse(classified("TM-31", t0), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    assert [(ticket_id, "TM-30" in reason) for ticket_id, reason in _second_contacts(recorder)] == [("TM-31", True)]


def test_a_clock_written_between_the_read_and_the_write_is_decided_again_alone(store, redis_client, tmp_path):
    """Replica A starts both clocks in one write; replica B handles the agent's reply between
    A's read and A's write (first response becomes a tombstone). A's write keeps resolution
    and loses first response, which A then reads again: the tombstone stays."""
    policy = _policy(tmp_path)
    store_a = SlaStore(redis_client)
    sla_a, rec_a = engine(store_a, policy)
    sla_b, _ = engine(store, policy)
    t0 = time.time()
    put, writes = store_a.put_clocks, []

    def racing_put(clocks, *, now):
        if not writes:
            sla_b.agent_replied(_parse(replied("TM-40", t0 - 5), ev.AGENT_DESK, ev.AGENT_REPLIED))
        writes.append([clock.name for clock, _ in clocks])
        return put(clocks, now=now)

    store_a.put_clocks = racing_put
    sla_a.ticket_classified(_parse(classified("TM-40", t0 - 10), ev.DISPATCHER, ev.TICKET_CLASSIFIED))
    assert writes == [[c.FIRST_RESPONSE, c.RESOLUTION]]   # the tombstone read again: nothing left to write
    assert store.clock("TM-40", c.FIRST_RESPONSE).state == c.FULFILLED
    resolution = store.clock("TM-40", c.RESOLUTION)
    assert (resolution.state, resolution.rev) == (c.RUNNING, 1)
    assert [(b["clock"], b["change"]) for t, b in rec_a.events if t == ev.SLA_CLOCK_CHANGED] == [
        (c.FIRST_RESPONSE, "activated"), (c.RESOLUTION, "activated")]
