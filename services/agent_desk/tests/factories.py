"""Event bodies and a roster for agent_desk's tests."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from shared import events as ev
from shared.roster import hash_password

PASSWORDS = {"li.na": "li-na-pass-1", "sam.taylor": "sam-pass-22", "wang.fang": "wang-fang-pass-3"}


DECISION = {"considered": 3, "eligible": 1, "reason": "billing 5/5, zh, load 0/10", "rejected": {},
            "candidates": [{"agent_id": "li.na", "score": 0.9, "spare_share": 1.0}], "winner": "li.na"}


def write_roster(path: Path) -> Path:
    agents = [
        {"agent_id": "li.na", "name": "李娜", "role": "agent", "skills": {"billing": 5}, "languages": ["zh", "en"],
         "group": "billing", "capacity": {"email": 10, "chat": 3}},
        {"agent_id": "sam.taylor", "name": "Sam Taylor", "role": "agent", "skills": {"technical": 3}, "languages": ["en"],
         "group": "technical"},
        {"agent_id": "wang.fang", "name": "王芳", "role": "supervisor", "skills": {"billing": 5}, "languages": ["zh"]},
    ]
    for agent in agents:
        agent["password_hash"] = hash_password(PASSWORDS[agent["agent_id"]])
    path.write_text(yaml.safe_dump({"agents": agents}, allow_unicode=True), encoding="utf-8")
    return path


def now() -> datetime:
    return datetime.now(timezone.utc)


def ticket_received(ticket_id: str = "TM-10001", *, channel: str = "email", **extra: Any) -> dict:
    return ev.make_event(
        f"intake_{channel}", ev.TICKET_RECEIVED, now=now(), trace_id="trace-" + ticket_id, ticket_id=ticket_id,
        channel=channel, customer={"name": "张伟", "email": "zhang.wei@example.com", "language": "zh-CN"},
        subject="发票抬头错误", text="你好，我上个月的发票抬头写错了，请帮忙重开。<b>谢谢</b>",
        received_at=now().isoformat(), **extra,
    )


def ticket_assigned(ticket_id: str = "TM-10001", agent_id: str = "li.na", *, at: datetime | None = None,
                    **extra: Any) -> dict:
    return ev.make_event(
        ev.DISPATCHER, ev.TICKET_ASSIGNED, now=at or now(), trace_id="trace-" + ticket_id, ticket_id=ticket_id,
        agent_id=agent_id, channel="email", priority="P2", required_skills=["billing"],
        decision=DECISION, **extra,
    )


def message_received(ticket_id: str = "TM-10001", message_id: str = "m-2", text: str = "补充：税号是 123。",
                     *, channel: str = "email") -> dict:
    return ev.make_event(
        f"intake_{channel}", ev.MESSAGE_RECEIVED, now=now(), trace_id="trace-" + ticket_id, ticket_id=ticket_id,
        channel=channel, customer={"name": "张伟", "email": "zhang.wei@example.com"}, text=text, message_id=message_id,
        received_at=now().isoformat(),
    )


def mail_bounced(ticket_id: str | None = "TM-10001", *, recipients: tuple[str, ...] = ("cheng.li@example.com",),
                 hard: bool = True, status: str = "5.1.1",
                 reason: str = "550 5.1.1 <cheng.li@example.com>: Recipient address rejected: User unknown",
                 event_id: str = "bounce-1") -> dict:
    return ev.make_event(
        ev.INTAKE_EMAIL, ev.MAIL_BOUNCED, now=now(), trace_id="trace-" + str(ticket_id), ticket_id=ticket_id,
        event_id=event_id, recipients=list(recipients), status=status, reason=reason, hard=hard,
        original_message_id="tm.TM-10001.n1.aaaaaaaaaaaa@ticketmesh.test", reporting_mta="mail.example.com",
        received_at=now().isoformat(),
    )



def _dispatcher(event_type: str, ticket_id: str, at: datetime | None = None, **fields: Any) -> dict:
    return ev.make_event(ev.DISPATCHER, event_type, now=at or now(), trace_id="trace-" + ticket_id,
                         ticket_id=ticket_id, **fields)


def offer(ticket_id: str = "TM-10001", agent_id: str = "li.na", *, seconds: float = 60, attempt: int = 1,
          at: datetime | None = None) -> dict:
    """``ticket_assigned`` that needs accepting within ``seconds``."""
    at = at or now()
    return ticket_assigned(ticket_id, agent_id, at=at, attempt=attempt,
                           offer_expires_at=(at + timedelta(seconds=seconds)).isoformat())


def ticket_unassigned(ticket_id: str = "TM-10001", agent_id: str = "li.na", reason: str = "offer_expired",
                      at: datetime | None = None) -> dict:
    return _dispatcher(ev.TICKET_UNASSIGNED, ticket_id, at, agent_id=agent_id, reason=reason)


def ticket_queued(ticket_id: str = "TM-10001", *, skills: tuple[str, ...] = ("billing",), priority: str = "P2",
                  reason: str = "no eligible agent", at: datetime | None = None) -> dict:
    return _dispatcher(ev.TICKET_QUEUED, ticket_id, at, channel="email", priority=priority,
                       required_skills=list(skills), reason=reason,
                       decision={"considered": 3, "eligible": 0, "reason": reason,
                                 "rejected": {"li.na": "presence: offline"}, "rejected_counts": {"presence": 3}})


def ticket_classified(ticket_id: str = "TM-10001") -> dict:
    return _dispatcher(ev.TICKET_CLASSIFIED, ticket_id, channel="email", priority="P1", required_skills=["billing"],
                       language="zh", tags=["invoice", "refund"], received_at=now().isoformat(),
                       category="billing", signals=["complaint_risk"], customer_tier="vip")


def ticket_transferred(ticket_id: str = "TM-10001", **extra: Any) -> dict:
    fields = {"requested_by": "li.na", "kind": "transfer", "from_agent_id": "li.na", "to_agent_id": "sam.taylor",
              "reason": "needs technical", "outcome": "assigned", **extra}
    return _dispatcher(ev.TICKET_TRANSFERRED, ticket_id, **fields)


def ticket_escalated(ticket_id: str = "TM-10001") -> dict:
    return ev.make_event(ev.SLA_WATCHER, ev.TICKET_ESCALATED, now=now(), trace_id="trace-" + ticket_id,
                         ticket_id=ticket_id, clock="first_response", policy="P2-email", level=1, to_tier="L2",
                         reason="first response breached")


def sla_event(ticket_id: str = "TM-10001", *, breached: bool = False, due_in: float = 300) -> dict:
    fields: dict[str, Any] = {"clock": "first_response", "policy": "P2-email", "target_seconds": 3600,
                              "due_at": (now() + timedelta(seconds=due_in)).isoformat(), "agent_id": None}
    if not breached:
        fields["elapsed_fraction"] = 0.8
    return ev.make_event(ev.SLA_WATCHER, ev.SLA_BREACHED if breached else ev.SLA_WARNING, now=now(),
                         trace_id="trace-" + ticket_id, ticket_id=ticket_id, **fields)
