"""Event bodies for the notifier's update tests (classification, status, resolution, survey,
presence, SLA warnings, escalations, assignments), valid against shared.events."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.notifier.tests.factories import NOW
from shared import events as ev


def _trace(ticket_id: str | None) -> str:
    return f"trace-{ticket_id or 'none'}"


def ticket_classified(ticket_id: str, *, priority: str = "P1", channel: str = "email", received_at: datetime = NOW,
                      customer_tier: str = "standard") -> dict:
    return ev.make_event(ev.DISPATCHER, ev.TICKET_CLASSIFIED, now=received_at, trace_id=_trace(ticket_id),
                         ticket_id=ticket_id, channel=channel, priority=priority, required_skills=["billing"],
                         language="zh", received_at=received_at.isoformat(), customer_tier=customer_tier)


def chat_message(ticket_id: str, *, at: datetime, email: str = "chat.visitor@example.com") -> dict:
    return ev.make_event(ev.INTAKE_CHAT, ev.MESSAGE_RECEIVED, now=at, trace_id=_trace(ticket_id), ticket_id=ticket_id,
                         channel="chat", customer={"name": "访客", "email": email, "language": "zh-CN"},
                         text="还在吗？", message_id=f"m-{at.timestamp()}", received_at=at.isoformat())


def chat_reply_missed(ticket_id: str, *, to: str, text: str, up_to_seq: int) -> dict:
    return ev.make_event(ev.INTAKE_CHAT, ev.CHAT_REPLY_MISSED, now=NOW, trace_id=_trace(ticket_id), ticket_id=ticket_id,
                         event_id=f"missed-{ticket_id}-{up_to_seq}", customer={"name": "访客", "language": "zh-CN"},
                         to=to, subject="在线咨询：退款", up_to_seq=up_to_seq,
                         replies=[{"author": "agent", "name": "李娜", "text": text, "sent_at": NOW.isoformat()}])


def status_changed(ticket_id: str, status: str, *, previous: str | None = "open", agent_id: str = "li.na") -> dict:
    return ev.make_event(ev.AGENT_DESK, ev.TICKET_STATUS_CHANGED, now=NOW, trace_id=_trace(ticket_id),
                         ticket_id=ticket_id, status=status, paused=status != "open", agent_id=agent_id,
                         previous=previous)


def ticket_resolved(ticket_id: str, *, resolution: str = "solved", channel: str = "email",
                    event_id: str | None = None) -> dict:
    return ev.make_event(ev.AGENT_DESK, ev.TICKET_RESOLVED, now=NOW, trace_id=_trace(ticket_id), ticket_id=ticket_id,
                         agent_id="li.na", channel=channel, resolution=resolution,
                         **({"event_id": event_id} if event_id else {}))


def csat_submitted(ticket_id: str, score: int = 5) -> dict:
    return ev.make_event(ev.INTAKE_CHAT, ev.CSAT_SUBMITTED, now=NOW, trace_id=_trace(ticket_id), ticket_id=ticket_id,
                         score=score, comment="很满意", channel="email", agent_id="li.na")


def presence(agent_id: str, value: str, *, at: datetime = NOW) -> dict:
    return ev.make_event(ev.AGENT_DESK, ev.AGENT_PRESENCE_CHANGED, now=at, trace_id="trace-presence",
                         agent_id=agent_id, presence=value)


def sla_warning(ticket_id: str, *, agent_id: str | None = "li.na", due_in: timedelta = timedelta(minutes=12),
                at: datetime = NOW) -> dict:
    return ev.make_event(ev.SLA_WATCHER, ev.SLA_WARNING, now=at, trace_id=_trace(ticket_id), ticket_id=ticket_id,
                         clock="first_response", policy="P2", target_seconds=3600, due_at=(at + due_in).isoformat(),
                         agent_id=agent_id, elapsed_fraction=0.8)


def ticket_escalated(ticket_id: str, action: str, *, agent_id: str | None = "li.na", level: int = 1,
                     event_id: str | None = None) -> dict:
    return ev.make_event(ev.SLA_WATCHER, ev.TICKET_ESCALATED, now=NOW, trace_id=_trace(ticket_id), ticket_id=ticket_id,
                         clock="first_response", policy="P2", level=level, reason="首次响应已超时",
                         action=action, trigger="breach", agent_id=agent_id,
                         **({"event_id": event_id} if event_id else {}))


def ticket_assigned(ticket_id: str, agent_id: str, *, offer_expires_at: datetime | None = None, **extra: Any) -> dict:
    return ev.make_event(ev.DISPATCHER, ev.TICKET_ASSIGNED, now=NOW, trace_id=_trace(ticket_id), ticket_id=ticket_id,
                         agent_id=agent_id, channel="email", priority="P2", required_skills=["billing"],
                         decision={"considered": 3, "eligible": 1, "reason": "reassigned", "step": "reassign"},
                         offer_expires_at=offer_expires_at.isoformat() if offer_expires_at else None, **extra)
