"""Event bodies for the notifier's tests, valid against shared.events."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from shared import events as ev

NOW = datetime(2026, 3, 2, 8, 30, tzinfo=timezone.utc)


def ticket_received(ticket_id: str = "TM-10001", *, channel: str = "email", email: str | None = "zhang.wei@example.com",
                    name: str = "张伟", language: str | None = "zh-CN", subject: str = "发票抬头错误",
                    source: dict[str, str] | None = None, **extra: Any) -> dict:
    return ev.make_event(
        f"intake_{channel}", ev.TICKET_RECEIVED, now=NOW, trace_id="trace-" + ticket_id, ticket_id=ticket_id,
        channel=channel, customer={"name": name, "email": email, "language": language}, subject=subject,
        text="你好，我上个月的发票抬头写错了，请帮忙重开。", received_at=NOW.isoformat(), source=source or {}, **extra,
    )


def agent_replied(ticket_id: str = "TM-10001", *, channel: str = "email", email: str | None = "zhang.wei@example.com",
                  text: str = "您好，发票已重新开具，请查收。", language: str | None = "zh-CN", reply_id: str = "r1") -> dict:
    return ev.make_event(
        ev.AGENT_DESK, ev.AGENT_REPLIED, now=NOW, trace_id="trace-" + ticket_id, ticket_id=ticket_id,
        agent_id="li.na", channel=channel, text=text, reply_id=reply_id,
        customer={"name": "张伟", "email": email, "language": language},
    )


def sla_breached(ticket_id: str = "TM-10001", *, agent_id: str | None = "li.na") -> dict:
    return ev.make_event(
        ev.SLA_WATCHER, ev.SLA_BREACHED, now=NOW, trace_id="trace-" + ticket_id, ticket_id=ticket_id,
        clock="first_response", policy="P2-standard-email", target_seconds=3600,
        due_at=(NOW - timedelta(minutes=1)).isoformat(), agent_id=agent_id,
    )


def parse(source: str, event_type: str, body: dict) -> Any:
    return ev.parse_event(source, event_type, body)


def mail_bounced(*recipients: str, hard: bool = True, ticket_id: str | None = "TM-10001", event_id: str | None = None,
                 status: str | None = None, at: datetime = NOW) -> dict:
    return ev.make_event(
        ev.INTAKE_EMAIL, ev.MAIL_BOUNCED, now=at, trace_id="trace-bounce", ticket_id=ticket_id,
        recipients=list(recipients), status=status or ("5.1.1" if hard else "4.2.2"),
        reason="550 5.1.1 user unknown" if hard else "452 4.2.2 mailbox full", hard=hard,
        original_message_id="tm.TM-10001.n1.aaaaaaaaaaaa@ticketmesh.test", reporting_mta="mx.example.com",
        received_at=at.isoformat(), **({"event_id": event_id} if event_id else {}),
    )


def mail_rejected(to: str = "zhang.wei@example.com", *, language: str | None = "zh", subject: str = "合同扫描件",
                  size: int = 31_457_280, limit: int = 10_485_760, name: str = "张伟") -> dict:
    return ev.make_event(
        ev.INTAKE_EMAIL, ev.MAIL_REJECTED, now=NOW, trace_id="trace-rejected", to=to, name=name, reason="too_large",
        subject=subject, size=size, limit=limit, language=language,
        original_message_id="<big-1@example.com>", received_at=NOW.isoformat(),
    )
