"""Event bodies and a roster for agent_desk's tests."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from shared import events as ev
from shared.roster import hash_password

PASSWORDS = {"li.na": "li-na-pass-1", "sam.taylor": "sam-pass-22", "wang.fang": "wang-fang-pass-3"}


def write_roster(path: Path) -> Path:
    agents = [
        {"agent_id": "li.na", "name": "李娜", "role": "agent", "skills": {"billing": 5}, "languages": ["zh", "en"]},
        {"agent_id": "sam.taylor", "name": "Sam Taylor", "role": "agent", "skills": {"technical": 3}, "languages": ["en"]},
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
        decision={"considered": 3, "eligible": 1, "reason": "billing 5/5, zh, load 0/10", "rejected": {}}, **extra,
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
