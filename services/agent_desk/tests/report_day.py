"""A small scripted day of events for the report and history tests, and the figures it must give.

Five tickets received on ``day`` (UTC):

| ticket   | channel | group     | agent      | first response | resolved        | SLA (first response)   | CSAT |
|----------|---------|-----------|------------|----------------|-----------------|------------------------|------|
| TM-20001 | email   | billing   | li.na      | 4m             | after 30m       | met                    | 5    |
| TM-20002 | chat    | billing   | li.na      | 1m             | after 20m       | met                    | 4    |
| TM-20003 | email   | technical | sam.taylor | 20m            | after 2h        | breached, escalated    | 2    |
| TM-20004 | phone   | technical | -          | -              | open (queued)   | running                | -    |
| TM-20005 | email   | billing   | li.na      | 2m             | reopened: open  | met                    | -    |

TM-20001's first reply is delivered twice (same event id) and followed by a second reply: the
first response stays 4 minutes. TM-20003's breach is announced both as ``sla_breached`` and as
a ``breached`` clock change: one breach.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from shared import events as ev
from shared.testing.asyncio_helpers import wait_until

DECISION = {"considered": 2, "eligible": 1, "reason": "scripted", "winner": None}
CUSTOMER = {"name": "张伟", "email": "zhang.wei@example.com", "phone": "+8613812345678", "language": "zh"}
SECRET_TEXT = "我的密码是 hunter2，请勿外传"   # must never reach the history


def _at(day: date, hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm, ss), timezone.utc)


def scripted_day(day: date) -> list[tuple[str, str, dict[str, Any]]]:
    """(source, event type, body) in the order a mesh might publish them."""
    out: list[tuple[str, str, dict[str, Any]]] = []

    def emit(source: str, event_type: str, ticket_id: str, at: datetime, **fields: Any) -> dict[str, Any]:
        body = ev.make_event(source, event_type, now=at, trace_id="trace-" + ticket_id, ticket_id=ticket_id, **fields)
        out.append((source, event_type, body))
        return body

    def ticket(ticket_id: str, channel: str, group: str, skill: str, hh: int) -> datetime:
        received = _at(day, hh, 0)
        emit(f"intake_{channel}", ev.TICKET_RECEIVED, ticket_id, received, channel=channel, customer=CUSTOMER,
             subject="发票抬头错误", text=SECRET_TEXT, received_at=received.isoformat())
        emit(ev.DISPATCHER, ev.TICKET_CLASSIFIED, ticket_id, received + timedelta(seconds=2), channel=channel,
             priority="P2", required_skills=[skill], language="zh", received_at=received.isoformat(), group=group)
        emit(ev.SLA_WATCHER, ev.SLA_CLOCK_CHANGED, ticket_id, received + timedelta(seconds=3), clock="first_response",
             change="activated", policy="p2", target_seconds=600,
             due_at=(received + timedelta(seconds=600)).isoformat())
        emit(ev.NOTIFIER, ev.NOTIFICATION_SENT, ticket_id, received + timedelta(seconds=5), notification_id="n-" + ticket_id,
             kind="acknowledgement", recipient=CUSTOMER["email"])
        return received

    def assign(ticket_id: str, channel: str, agent: str, at: datetime, group: str, skill: str) -> None:
        emit(ev.DISPATCHER, ev.TICKET_ASSIGNED, ticket_id, at, agent_id=agent, channel=channel, priority="P2",
             required_skills=[skill], decision={**DECISION, "winner": agent}, group=group)
        emit(ev.AGENT_DESK, ev.TICKET_ACCEPTED, ticket_id, at + timedelta(seconds=5), agent_id=agent)

    def reply(ticket_id: str, channel: str, agent: str, at: datetime, n: int = 1, fulfil: bool = True) -> None:
        emit(ev.AGENT_DESK, ev.AGENT_REPLIED, ticket_id, at, agent_id=agent, channel=channel, text=SECRET_TEXT,
             reply_id=f"r{n}-{ticket_id}", customer=CUSTOMER)
        if fulfil:
            emit(ev.SLA_WATCHER, ev.SLA_CLOCK_CHANGED, ticket_id, at, clock="first_response", change="fulfilled",
                 policy="p2", target_seconds=600, agent_id=agent)

    def resolve(ticket_id: str, channel: str, agent: str, at: datetime) -> None:
        emit(ev.AGENT_DESK, ev.TICKET_RESOLVED, ticket_id, at, agent_id=agent, channel=channel)

    def csat(ticket_id: str, channel: str, agent: str, at: datetime, score: int) -> None:
        emit(ev.INTAKE_CHAT, ev.CSAT_SUBMITTED, ticket_id, at, score=score, comment=SECRET_TEXT, channel=channel,
             agent_id=agent)

    t1 = ticket("TM-20001", "email", "billing", "billing", 9)
    assign("TM-20001", "email", "li.na", t1 + timedelta(seconds=30), "billing", "billing")
    reply("TM-20001", "email", "li.na", t1 + timedelta(minutes=4))
    out.append(out[-2])  # the broker delivers the first reply twice
    reply("TM-20001", "email", "li.na", t1 + timedelta(minutes=9), n=2, fulfil=False)
    resolve("TM-20001", "email", "li.na", t1 + timedelta(minutes=30))
    csat("TM-20001", "email", "li.na", t1 + timedelta(hours=1), 5)

    t2 = ticket("TM-20002", "chat", "billing", "billing", 10)
    assign("TM-20002", "chat", "li.na", t2 + timedelta(seconds=10), "billing", "billing")
    reply("TM-20002", "chat", "li.na", t2 + timedelta(minutes=1))
    resolve("TM-20002", "chat", "li.na", t2 + timedelta(minutes=20))
    csat("TM-20002", "chat", "li.na", t2 + timedelta(minutes=25), 4)

    t3 = ticket("TM-20003", "email", "technical", "technical", 11)
    emit(ev.DISPATCHER, ev.TICKET_QUEUED, "TM-20003", t3 + timedelta(seconds=4), channel="email", priority="P2",
         required_skills=["technical"], reason="no eligible agent", group="technical",
         received_at=t3.isoformat())
    breach = t3 + timedelta(minutes=10)
    emit(ev.SLA_WATCHER, ev.SLA_WARNING, "TM-20003", t3 + timedelta(minutes=8), clock="first_response", policy="p2",
         target_seconds=600, due_at=breach.isoformat(), elapsed_fraction=0.8)
    emit(ev.SLA_WATCHER, ev.SLA_BREACHED, "TM-20003", breach, clock="first_response", policy="p2", target_seconds=600,
         due_at=breach.isoformat())
    emit(ev.SLA_WATCHER, ev.SLA_CLOCK_CHANGED, "TM-20003", breach, clock="first_response", change="breached",
         policy="p2", target_seconds=600)
    emit(ev.SLA_WATCHER, ev.TICKET_ESCALATED, "TM-20003", breach + timedelta(seconds=1), clock="first_response",
         policy="p2", level=1, to_tier="L2", reason="first response breached")
    assign("TM-20003", "email", "sam.taylor", t3 + timedelta(minutes=15), "technical", "technical")
    reply("TM-20003", "email", "sam.taylor", t3 + timedelta(minutes=20), fulfil=False)
    resolve("TM-20003", "email", "sam.taylor", t3 + timedelta(hours=2))
    csat("TM-20003", "email", "sam.taylor", t3 + timedelta(hours=3), 2)

    t4 = ticket("TM-20004", "phone", "technical", "technical", 12)
    emit(ev.DISPATCHER, ev.TICKET_QUEUED, "TM-20004", t4 + timedelta(seconds=4), channel="phone", priority="P2",
         required_skills=["technical"], reason="no eligible agent", group="technical")

    t5 = ticket("TM-20005", "email", "billing", "billing", 14)
    assign("TM-20005", "email", "li.na", t5 + timedelta(seconds=20), "billing", "billing")
    reply("TM-20005", "email", "li.na", t5 + timedelta(minutes=2))
    resolve("TM-20005", "email", "li.na", t5 + timedelta(minutes=10))
    emit(ev.AGENT_DESK, ev.TICKET_REOPENED, "TM-20005", t5 + timedelta(hours=1), by="agent", agent_id="li.na",
         channel="email")
    return out


def distinct_events(events: list[tuple[str, str, dict[str, Any]]], ticket_id: str) -> int:
    return len({b["event_id"] for _, _, b in events if b["ticket_id"] == ticket_id})


def _times(count: int, p50: float | None, p90: float | None, average: float | None) -> dict[str, Any]:
    return {"count": count, "p50_seconds": p50, "p90_seconds": p90, "average_seconds": average}


def _csat(scores: list[int]) -> dict[str, Any]:
    return {"count": len(scores), "average": round(sum(scores) / len(scores), 2) if scores else None,
            "distribution": {str(s): scores.count(s) for s in range(1, 6)}}


def _sla(met: int, breached: int) -> dict[str, Any]:
    attainment = round(100 * met / (met + breached), 1) if met + breached else None
    clocks = {"first_response": {"met": met, "breached": breached, "attainment": attainment}} if met + breached else {}
    return {"met": met, "breached": breached, "attainment": attainment, "clocks": clocks}


LI_NA = {"tickets": 3, "resolved": 2, "open": 1, "first_response": _times(3, 120.0, 240.0, 140.0),
         "resolution": _times(2, 1200.0, 1800.0, 1500.0), "sla": _sla(3, 0), "breaches": {"total": 0},
         "escalations": 0, "escalated_tickets": 0, "csat": _csat([5, 4])}
SAM = {"tickets": 1, "resolved": 1, "open": 0, "first_response": _times(1, 1200.0, 1200.0, 1200.0),
       "resolution": _times(1, 7200.0, 7200.0, 7200.0), "sla": _sla(0, 1),
       "breaches": {"first_response": 1, "total": 1}, "escalations": 1, "escalated_tickets": 1, "csat": _csat([2])}
UNASSIGNED = {"tickets": 1, "resolved": 0, "open": 1, "first_response": _times(0, None, None, None),
              "resolution": _times(0, None, None, None), "sla": _sla(0, 0), "breaches": {"total": 0},
              "escalations": 0, "escalated_tickets": 0, "csat": _csat([])}
TOTALS = {"tickets": 5, "resolved": 3, "open": 2, "first_response": _times(4, 120.0, 1200.0, 405.0),
          "resolution": _times(3, 1800.0, 7200.0, 3400.0), "sla": _sla(3, 1),
          "breaches": {"first_response": 1, "total": 1}, "escalations": 1, "escalated_tickets": 1,
          "csat": _csat([5, 4, 2])}
BY_AGENT = [{"key": "li.na", **LI_NA}, {"key": "sam.taylor", **SAM}, {"key": None, **UNASSIGNED}]
# First responses of 60, 120, 240 and 1200 seconds.
RESPONSE_COUNTS = [0, 3, 0, 1, 0, 0, 0]
BACKLOG = [{"skill": "billing", "open": 1, "by_channel": {"email": 1}},
           {"skill": "technical", "open": 1, "by_channel": {"phone": 1}}]


async def publish_day(publish: Any, day: date) -> list[tuple[str, str, dict[str, Any]]]:
    """Publish the scripted day through RabbitMQ (as each source would)."""
    events = scripted_day(day)
    for source, event_type, body in events:
        await publish(source, event_type, body)
    return events


async def wait_recorded(http: Any, events: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Until every ticket's history (read by a supervisor's session) holds each of its distinct
    events: they arrive on about twenty queues, in no particular order."""
    for ticket_id in sorted({b["ticket_id"] for _, _, b in events}):
        expected = distinct_events(events, ticket_id)

        async def recorded(ticket_id: str = ticket_id, expected: int = expected) -> bool:
            response = await http.get(f"/api/v1/tickets/{ticket_id}/history")
            return response.status == 200 and len((await response.json())["events"]) == expected

        await wait_until(recorded, timeout=20, message=f"{expected} events of {ticket_id} recorded")
