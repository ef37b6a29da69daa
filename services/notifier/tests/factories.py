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
