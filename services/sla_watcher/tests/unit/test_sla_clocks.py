"""SLA clocks: pause/resume sequences, due times in business time, the ladder, recompute."""
from datetime import datetime, timezone

import pytest

from services.sla_watcher import clocks as c
from shared.business_calendar import ALWAYS, make_calendar

T0 = 1_800_000_000.25  # sub-second starts must survive
# Mon-Fri 09:00-18:00 UTC; 2026-01-02 is a Friday.
OFFICE = make_calendar("office", "UTC", {"mon-fri": ["09:00-18:00"]})


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def clock(target=100.0, warn_at=(0.5,), ladder=(), start=T0, name=c.RESOLUTION, calendar="always"):
    return c.activate(ticket_id="TM-1", name=name, cycle=1, policy="p", calendar=calendar, target=target,
                      plan=c.make_plan(target, warn_at, ladder), at=start, config_gen=1)


def dues(k, calendar=ALWAYS):
    return [(item.kind, due) for due, _, item in c.pending(k, calendar)]


def test_plan_is_warnings_then_breach_then_rungs_each_at_a_business_offset():
    plan = c.make_plan(3600, [0.8, 0.5, 1.5], [(0, "notify_supervisor", None), (1800, "raise_priority", "P1")])
    assert [(i.kind, i.offset, i.role) for i in plan] == [
        ("warning@0.5", 1800, c.WARNING), ("warning@0.8", 2880, c.WARNING), (c.BREACHED, 3600, c.BREACH),
        ("esc@0:notify_supervisor", 3600, c.RUNG), ("esc@1800:raise_priority:P1", 5400, c.RUNG),
    ]
    assert [i.level for i in plan if i.role == c.RUNG] == [1, 2]
    assert plan[-1].to == "P1" and plan[0].fraction == 0.5
    assert c.plan_from_json(c.plan_json(plan)) == plan


def test_a_running_clock_is_due_at_start_plus_offset_with_sub_second_precision():
    k = clock(target=1, warn_at=(0.25,))
    assert dues(k) == [("warning@0.25", pytest.approx(T0 + 0.25, abs=1e-6)), (c.BREACHED, pytest.approx(T0 + 1))]


def test_pause_and_resume_move_every_due_time_by_the_paused_span():
    k = clock(target=100)
    k, change = c.pause(k, T0 + 30)
    assert change == "paused" and dues(k) == [] and c.next_due(k, ALWAYS) is None
    assert c.pause(k, T0 + 40) == (k, None)          # paused twice: nothing new
    k, change = c.resume(k, T0 + 50)
    assert change == "resumed"
    assert dues(k) == [("warning@0.5", T0 + 70), (c.BREACHED, T0 + 120)]
    assert c.resume(k, T0 + 55) == (k, None)         # resumed twice: nothing new
    k, _ = c.pause(k, T0 + 60)
    k, _ = c.resume(k, T0 + 100)
    assert c.used_seconds(k, ALWAYS) == pytest.approx(40)
    assert dues(k) == [("warning@0.5", T0 + 110), (c.BREACHED, T0 + 160)]
    assert k.segments == ((T0, T0 + 30), (T0 + 50, T0 + 60))


def test_a_pause_older_than_the_running_segment_closes_it_empty():
    k, _ = c.pause(clock(), T0 - 5)
    assert k.segments == ((T0, T0),) and c.used_seconds(k, ALWAYS) == 0


def test_an_item_already_used_up_when_the_clock_resumes_is_due_at_once():
    k = c.mark_fired(clock(target=100, warn_at=(0.5,)), [])
    k, _ = c.pause(k, T0 + 60)          # 60 used: past the warning at 50
    k, _ = c.resume(k, T0 + 500)
    assert dues(k) == [("warning@0.5", T0 + 500), (c.BREACHED, T0 + 540)]


def test_fired_items_are_not_pending_and_the_next_due_is_the_first_unfired():
    k = c.mark_fired(clock(target=100, warn_at=(0.5, 0.8)), ["warning@0.5"])
    assert c.next_due(k, ALWAYS) == T0 + 80
    k = c.mark_fired(k, ["warning@0.8", c.BREACHED])
    assert dues(k) == []


def test_finish_closes_the_open_segment_once():
    k, _ = c.pause(clock(), T0 + 10)
    k, _ = c.resume(k, T0 + 20)
    done, change = c.finish(k, c.FULFILLED, T0 + 25)
    assert change == "fulfilled" and done.state == c.FULFILLED and done.since is None
    assert c.used_seconds(done, ALWAYS) == 15 and done.finished_at == T0 + 25
    assert c.finish(done, c.STOPPED, T0 + 30) == (done, None)
    stopped, change = c.finish(c.pause(clock(), T0 + 10)[0], c.STOPPED, T0 + 99)
    assert change == "stopped" and c.used_seconds(stopped, ALWAYS) == 10


def test_a_reopen_continues_the_resolution_clock_and_keeps_what_fired():
    k = c.mark_fired(clock(target=100, warn_at=(0.5,)), ["warning@0.5"])
    k, _ = c.finish(k, c.FULFILLED, T0 + 60)
    again, change = c.reopen(k, T0 + 1000, paused=False)
    assert change == "resumed" and again.state == c.RUNNING and again.finished_at is None
    assert dues(again) == [(c.BREACHED, T0 + 1040)]            # 60 used before, 40 to go
    paused, _ = c.reopen(k, T0 + 1000, paused=True)
    assert paused.state == c.PAUSED and dues(paused) == []
    assert c.reopen(again, T0 + 2000, paused=False) == (again, None)


def test_business_time_skips_nights_and_weekends():
    # Friday 17:00: one hour left on Friday, the rest on Monday from 09:00.
    k = clock(target=2 * 3600, warn_at=(0.25,), start=at("2026-01-02T17:00:00"), calendar="office")
    assert dues(k, OFFICE) == [("warning@0.25", at("2026-01-02T17:30:00")), (c.BREACHED, at("2026-01-05T10:00:00"))]
    # Waiting on the customer from Friday 17:30 to Monday 11:00: 30 min used, 90 to go.
    k, _ = c.pause(k, at("2026-01-02T17:30:00"))
    k, _ = c.resume(k, at("2026-01-05T11:00:00"))
    assert c.used_seconds(k, OFFICE) == 1800
    assert c.breach_due(k, OFFICE) == at("2026-01-05T12:30:00")
    # Resumed in the night: due counted from the next opening.
    night, _ = c.pause(clock(target=3600, start=at("2026-01-05T09:00:00"), calendar="office"), at("2026-01-05T09:20:00"))
    night, _ = c.resume(night, at("2026-01-05T23:00:00"))
    assert c.breach_due(night, OFFICE) == at("2026-01-06T09:40:00")


def test_ladder_rungs_fall_due_after_the_breach_in_business_time():
    ladder = [(0, "notify_supervisor", None), (3600, "reassign_next_tier", None)]
    k = clock(target=3600, warn_at=(), ladder=ladder, start=at("2026-01-02T16:00:00"), calendar="office")
    assert dues(k, OFFICE) == [(c.BREACHED, at("2026-01-02T17:00:00")),
                               ("esc@0:notify_supervisor", at("2026-01-02T17:00:00")),
                               ("esc@3600:reassign_next_tier", at("2026-01-02T18:00:00"))]


def test_a_recompute_replays_the_same_history_under_the_new_rules():
    k, _ = c.pause(clock(target=3600, start=at("2026-01-02T16:00:00")), at("2026-01-02T17:00:00"))
    k, _ = c.resume(k, at("2026-01-03T10:00:00"))    # Saturday
    k = c.with_derived(k, ALWAYS)
    assert k.used == 3600 and k.breach_at == at("2026-01-03T10:00:00")
    # The same history in office hours: Friday 16-17 counted, Saturday is closed.
    plan = c.make_plan(7200, (0.5,), ())
    new, change = c.rebase(k, policy="p2", calendar_name="office", target=7200, plan=plan, config_gen=2,
                           calendar=OFFICE)
    assert change == "recomputed" and new.config_gen == 2 and new.segments == k.segments
    assert new.used == 3600 and new.breach_at == at("2026-01-05T10:00:00")
    again, change = c.rebase(new, policy="p2", calendar_name="office", target=7200, plan=plan, config_gen=3,
                             calendar=OFFICE)
    assert change is None and again.config_gen == 3 and (again.breach_at, again.used) == (new.breach_at, new.used)


def test_a_recompute_never_unfires_and_a_now_earlier_item_is_due_at_once():
    k = c.with_derived(c.mark_fired(clock(target=100, warn_at=(0.5,)), ["warning@0.5"]), ALWAYS)
    k, _ = c.pause(k, T0 + 60)
    k, _ = c.resume(k, T0 + 70)
    shorter, _ = c.rebase(k, policy="p", calendar_name="always", target=50, plan=c.make_plan(50, (0.5,), ()),
                          config_gen=2, calendar=ALWAYS)
    assert dues(shorter) == [(c.BREACHED, T0 + 70)]   # 60 used of 50: breached, fires at once


def test_stable_order_for_items_due_at_the_same_instant():
    ladder = [(0, "notify_supervisor", None), (0, "reassign_next_tier", None)]
    k = clock(target=10, warn_at=(), ladder=ladder)
    assert [kind for kind, _ in dues(k)] == [c.BREACHED, "esc@0:notify_supervisor", "esc@0:reassign_next_tier"]
