"""A chat conversation in events and transcript entries (pure: no I/O, ``now`` passed in).

A visitor's first message with no open ticket opens a ticket (``ticket_received``); later
messages join it (``message_received``). Event ids are derived from the ticket and the
client's message id, so a message published again after an unconfirmed attempt is the same
event for every consumer. The transcript (what a reconnecting browser is shown) holds the
customer's messages and the agents' replies as small JSON-ready dicts.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from shared import events as ev
from shared.intake_ledger import stable_event_id

from services.intake_chat.validation import Profile

SUBJECT_MAX_CHARS = 80
_SPACES = re.compile(r"\s+")


def visitor_ref(visitor_id: str) -> str:
    """How logs name a visitor: the id itself reads the transcript, so never log it; this
    short hash still lets one follow a visitor through the logs."""
    return hashlib.sha256(visitor_id.encode("utf-8")).hexdigest()[:12]


def subject_from_text(text: str) -> str:
    """The first ~80 characters of the message on one line (what an agent scans in a list)."""
    line = _SPACES.sub(" ", text).strip()
    return line if len(line) <= SUBJECT_MAX_CHARS else line[: SUBJECT_MAX_CHARS - 1].rstrip() + "…"


def customer(visitor_id: str, profile: Profile) -> dict[str, Any]:
    return {
        "name": profile.name,
        "email": profile.email or None,
        "phone": profile.phone or None,
        "chat_visitor_id": visitor_id,
        "language": profile.language or None,
        # The visitor id is the browser's own; the form's email and phone were typed by anyone.
        "verified": ["chat_visitor"],
    }


def opening_event(*, ticket_id: str, trace_id: str, visitor_id: str, client_message_id: str, text: str,
                  profile: Profile, now: datetime) -> dict[str, Any]:
    """``ticket_received`` body for the message that opens a conversation."""
    return ev.make_event(
        ev.INTAKE_CHAT, ev.TICKET_RECEIVED, now=now, trace_id=trace_id,
        event_id=stable_event_id(ev.TICKET_RECEIVED, ticket_id), ticket_id=ticket_id,
        channel="chat", customer=customer(visitor_id, profile), subject=subject_from_text(text), text=text,
        received_at=now, source={"visitor_id": visitor_id, "client_message_id": client_message_id},
    )


def follow_up_event(*, ticket_id: str, trace_id: str, visitor_id: str, client_message_id: str, text: str,
                    profile: Profile, now: datetime) -> dict[str, Any]:
    """``message_received`` body for a later message of the open conversation."""
    return ev.make_event(
        ev.INTAKE_CHAT, ev.MESSAGE_RECEIVED, now=now, trace_id=trace_id,
        event_id=stable_event_id(ev.MESSAGE_RECEIVED, ticket_id, client_message_id), ticket_id=ticket_id,
        channel="chat", customer=customer(visitor_id, profile), text=text, message_id=client_message_id,
        received_at=now,
    )


def customer_entry(client_message_id: str, text: str, sent_at: str) -> dict[str, Any]:
    return {"from": "customer", "client_message_id": client_message_id, "message_id": client_message_id,
            "text": text, "sent_at": sent_at}


def agent_entry(reply_id: str, agent_name: str, text: str, sent_at: str) -> dict[str, Any]:
    return {"from": "agent", "reply_id": reply_id, "agent_name": agent_name, "text": text, "sent_at": sent_at}


def agent_message_frame(entry: dict[str, Any]) -> dict[str, Any]:
    return {"type": "agent_message", **{k: entry[k] for k in ("reply_id", "agent_name", "text", "sent_at")}}
