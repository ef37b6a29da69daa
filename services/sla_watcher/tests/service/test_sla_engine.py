"""The SLA engine on a real Redis with a recording emitter: due order across sweep rounds, the
claim against handler writes, config generations."""
import time

import pytest

from services.sla_watcher import clocks as c
from services.sla_watcher.engine import ConfigBehind, SlaEngine
from services.sla_watcher.store import SlaStore
from services.sla_watcher.tests.service.support import (Recorder, StaticConfig, classified, status, tiny_policies,
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
