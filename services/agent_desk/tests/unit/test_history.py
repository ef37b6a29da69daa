"""history.py: what a recorded event keeps (and never keeps), its fact updates, and a ticket's path."""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

from services.agent_desk import history, reports
from services.agent_desk.tests import report_day
from shared import events as ev

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
SECRETS = (report_day.SECRET_TEXT, "发票抬头错误", "张伟", "zhang.wei@", "13812345678", "needs a bigger desk")


def _event(emitter: str, event_type: str, at: datetime = T0, ticket_id: str | None = "TM-1", **fields) -> ev.Envelope:
    body = ev.make_event(emitter, event_type, now=at, trace_id="trace-1", ticket_id=ticket_id, **fields)
    return ev.parse_event(emitter, event_type, body)


def test_every_event_that_names_a_ticket_is_recorded_and_has_its_key_fields():
    recorded = set(history.RECORDED)
    # No ticket: presence, rejected mail. Typing signals name a ticket but are not its history: one
    # every few seconds while someone types would trim the ticket's real events off its capped path.
    assert set(ev.SCHEMAS) - recorded == {(ev.AGENT_DESK, ev.AGENT_PRESENCE_CHANGED), (ev.INTAKE_EMAIL, ev.MAIL_REJECTED),
                                          (ev.INTAKE_CHAT, ev.CHAT_TYPING), (ev.AGENT_DESK, ev.AGENT_TYPING)}
    assert history.EPHEMERAL == {(ev.INTAKE_CHAT, ev.CHAT_TYPING), (ev.AGENT_DESK, ev.AGENT_TYPING)}
    assert {t for _, t in recorded} <= set(history._FIELDS)


def test_no_body_subject_name_address_or_typed_reason_reaches_a_record():
    events = [ev.parse_event(s, t, b) for s, t, b in report_day.scripted_day(date(2026, 3, 2))]
    events += [
        _event(ev.AGENT_DESK, ev.TICKET_TRANSFER_REQUESTED, requested_by="li.na", kind="transfer", to_group="technical",
               reason="needs a bigger desk 张伟"),
        _event(ev.AGENT_DESK, ev.TICKET_DECLINED, agent_id="li.na", reason="needs a bigger desk"),
        _event(ev.DISPATCHER, ev.TICKET_UNASSIGNED, agent_id="li.na", reason="reassigned", by="wang.fang",
               note="needs a bigger desk"),
        _event(ev.DISPATCHER, ev.TICKET_TRANSFERRED, requested_by="li.na", kind="transfer", to_group="technical",
               reason="needs a bigger desk", outcome="queued"),
        _event(ev.INTAKE_EMAIL, ev.MESSAGE_RECEIVED, channel="email", customer=report_day.CUSTOMER,
               text=report_day.SECRET_TEXT, message_id="m-1", received_at=T0.isoformat()),
        _event(ev.NOTIFIER, ev.NOTIFICATION_FAILED, notification_id="n-1", kind="agent_reply",
               recipient="zhang.wei@example.com", permanent=True, attempts=1,
               reason="550 5.1.1 <zhang.wei@example.com>: no such user"),
        _event(ev.INTAKE_EMAIL, ev.MAIL_BOUNCED, recipients=["zhang.wei@example.com"], hard=True,
               received_at=T0.isoformat()),
        _event(ev.AGENT_DESK, ev.TICKET_STATUS_CHANGED, status="waiting_on_customer", paused=True, agent_id="li.na"),
        _event(ev.INTAKE_CHAT, ev.CHAT_TRANSCRIPT_REQUESTED, customer=report_day.CUSTOMER, to="zhang.wei@example.com",
               subject="发票抬头错误", entries=[_chat_line("customer", "张伟", report_day.SECRET_TEXT)]),
        _event(ev.INTAKE_CHAT, ev.CHAT_REPLY_MISSED, customer=report_day.CUSTOMER, to="zhang.wei@example.com",
               subject="发票抬头错误", replies=[_chat_line("agent", "李娜", report_day.SECRET_TEXT)], up_to_seq=3),
    ]
    records = [history.entry_of(*_key_of(e), e) for e in events]
    for entry in records:
        assert entry is not None
        for secret in SECRETS:
            assert secret not in entry.record, (secret, entry.record)
    failed = json.loads(records[-5].record)
    assert failed["recipient"] == "z***@example.com" and "z***@example.com" in failed["reason"]
    assert json.loads(records[-4].record)["recipients"] == ["z***@example.com"]
    transcript, missed = json.loads(records[-2].record), json.loads(records[-1].record)
    assert transcript["to"] == "z***@example.com" and transcript["entries"] == 1
    assert missed["to"] == "z***@example.com" and missed["replies"] == 1 and missed["up_to_seq"] == 3


def _chat_line(author: str, name: str, text: str) -> dict:
    return {"author": author, "name": name, "text": text, "sent_at": T0.isoformat()}


def _key_of(event: ev.Envelope) -> tuple[str, str]:
    return next(key for key, schema in ev.SCHEMAS.items() if schema is type(event))


def test_a_received_ticket_keeps_its_channel_tier_and_arrival_and_names_its_trace():
    event = _event(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, channel="email",
                   customer={**report_day.CUSTOMER, "tier": "vip"}, subject="s", text="t",
                   received_at=(T0 - timedelta(seconds=30)).isoformat(),
                   attachments=[{"filename": "a.pdf", "size": 3}])
    entry = history.entry_of(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, event)
    assert entry.trace_id == "trace-1" and entry.received_at == T0.timestamp() - 30
    assert json.loads(entry.record) == {
        "at": T0.isoformat(), "type": "ticket_received", "source": "intake_email", "event_id": event.event_id,
        "trace_id": "trace-1", "channel": "email", "received_at": (T0 - timedelta(seconds=30)).isoformat(),
        "customer_tier": "vip", "language": "zh", "attachments": 1}
    assert {(u.op, u.field) for u in entry.updates} == {
        ("first", "channel"), ("min", "received_at"), ("first", "trace_id"), ("last", "customer_tier")}


def test_a_call_resolved_on_first_contact_is_resolved_in_the_facts():
    """No ticket_resolved follows such a call: counted open it would stay in totals.open and
    backlog_by_skill until its facts expire."""
    event = _event(ev.INTAKE_PHONE, ev.TICKET_RECEIVED, ticket_id="TM-30001", channel="phone",
                   customer={"name": "张伟", "phone": "+8613812345678"}, subject="来电记录 / Call", text="已告知。",
                   received_at=T0.isoformat(),
                   source={"call_id": "c-1", "resolved_on_first_contact": "true", "agent_id": "li.na"})
    entry = history.entry_of(ev.INTAKE_PHONE, ev.TICKET_RECEIVED, event)
    facts = reports.facts_from_hash({"ticket_id": entry.ticket_id, **{u.field: u.value for u in entry.updates}})
    assert facts.resolved and facts.resolved_at == T0.timestamp() and facts.agent == "li.na"
    unresolved = history.entry_of(ev.INTAKE_PHONE, ev.TICKET_RECEIVED, _event(
        ev.INTAKE_PHONE, ev.TICKET_RECEIVED, channel="phone", customer={"name": "张伟", "phone": "+8613812345678"},
        subject="s", text="t", received_at=T0.isoformat(), source={"call_id": "c-2"}))
    assert "resolved_at" not in {u.field for u in unresolved.updates}


def test_fact_updates_say_how_they_combine():
    reply = history.entry_of(ev.AGENT_DESK, ev.AGENT_REPLIED, _event(
        ev.AGENT_DESK, ev.AGENT_REPLIED, agent_id="li.na", channel="chat", text="x", reply_id="r1",
        customer={"name": "n"}))
    assert [(u.op, u.field, u.value) for u in reply.updates] == [
        ("first", "channel", "chat"), ("min", "first_response_at", repr(T0.timestamp())),
        ("first", "first_responder", "li.na"), ("last", "agent", "li.na"), ("incr", "replies", "1")]
    assert reply.trace_id is None and reply.received_at is None
    breach = history.entry_of(ev.SLA_WATCHER, ev.SLA_CLOCK_CHANGED, _event(
        ev.SLA_WATCHER, ev.SLA_CLOCK_CHANGED, clock="next_response", change="breached", policy="p", target_seconds=60))
    assert [(u.op, u.field) for u in breach.updates] == [("incr", "clock_breached:next_response")]
    paused = history.entry_of(ev.SLA_WATCHER, ev.SLA_CLOCK_CHANGED, _event(
        ev.SLA_WATCHER, ev.SLA_CLOCK_CHANGED, clock="resolution", change="paused", policy="p", target_seconds=60))
    assert paused.updates == ()
    def assigned(**offer) -> set[tuple[str, str]]:
        event = _event(ev.DISPATCHER, ev.TICKET_ASSIGNED, agent_id="li.na", channel="email", priority="P2",
                       required_skills=[], decision={"considered": 1, "eligible": 1, "reason": "r"}, **offer)
        return {(u.op, u.field) for u in history.entry_of(ev.DISPATCHER, ev.TICKET_ASSIGNED, event).updates}
    # An offer makes the ticket the agent's in the reports only once accepted (ticket_accepted).
    assert ("last", "agent") in assigned() and ("first", "first_agent") in assigned()
    assert ("last", "agent") not in assigned(offer_expires_at=(T0 + timedelta(minutes=1)).isoformat())
    rejected = history.entry_of(ev.DISPATCHER, ev.TICKET_TRANSFERRED, _event(
        ev.DISPATCHER, ev.TICKET_TRANSFERRED, requested_by="li.na", kind="transfer", to_group="vip", reason="r",
        outcome="rejected"))
    assert rejected.updates == ()  # a refused transfer moved nothing


def test_an_event_without_a_ticket_is_not_recorded():
    bounce = _event(ev.INTAKE_EMAIL, ev.MAIL_BOUNCED, ticket_id=None, recipients=["a@example.com"], hard=False,
                    received_at=T0.isoformat())
    assert history.entry_of(ev.INTAKE_EMAIL, ev.MAIL_BOUNCED, bounce) is None


def test_a_path_is_in_time_order_with_gaps_the_longest_gap_and_foreign_traces():
    def record(minutes: float, event_type: str, trace: str = "trace-1") -> str:
        at = (T0 + timedelta(minutes=minutes)).isoformat()
        return json.dumps({"at": at, "type": event_type, "source": "s", "event_id": f"e{minutes}", "trace_id": trace})

    found = history.path("TM-1", [record(30, "ticket_resolved"), record(0, "ticket_received"),
                                  record(2, "ticket_assigned", "trace-other"), record(1, "ticket_classified")],
                         trimmed=2)
    assert [e["type"] for e in found.events] == ["ticket_received", "ticket_classified", "ticket_assigned",
                                                 "ticket_resolved"]
    assert [e["gap_seconds"] for e in found.events] == [None, 60.0, 60.0, 1680.0]
    assert found.longest_gap == {"seconds": 1680.0, "after": "ticket_assigned", "before": "ticket_resolved"}
    assert found.trace_id == "trace-1" and found.other_traces == ["trace-other"] and found.trimmed == 2
    assert history.path("TM-2", []).as_dict() == {"ticket_id": "TM-2", "trace_id": None, "events": [],
                                                  "longest_gap": None, "other_traces": [], "trimmed": 0}
