"""A chat conversation in events and transcript entries (pure: no I/O, ``now`` passed in).

A visitor's first message with no open ticket opens a ticket (``ticket_received``); later
messages join it (``message_received``). Event ids are derived from the ticket and the
client's message id, so a message published again after an unconfirmed attempt is the same
event for every consumer. The transcript (what a reconnecting browser is shown) holds the
customer's messages and the agents' replies as small JSON-ready dicts; the store numbers them
(``seq``), and a reconnecting widget is sent what follows the last number it holds.

The two mails a chat can lead to are built here too: the transcript the customer asks for, and
the agent replies no widget received (``chat_reply_missed``: the customer's socket went away).
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


def customer(visitor_id: str, profile: Profile, external_user_id: str = "") -> dict[str, Any]:
    """The event's customer. The visitor id is the browser's own (or the verified user's) and the
    company's user id was checked by HMAC; the form's email and phone were typed by anyone."""
    found = {
        "name": profile.name,
        "email": profile.email or None,
        "phone": profile.phone or None,
        "chat_visitor_id": visitor_id,
        "language": profile.language or None,
        "verified": ["chat_visitor"],
    }
    if external_user_id:
        found.update(external_user_id=external_user_id, verified=["chat_visitor", "external_user"])
    return found


def subject_for(text: str, attachments: list[dict[str, Any]]) -> str:
    if text:
        return subject_from_text(text)
    return subject_from_text(", ".join(a["filename"] for a in attachments)) if attachments else ""


def opening_event(*, ticket_id: str, trace_id: str, visitor_id: str, client_message_id: str, text: str,
                  profile: Profile, now: datetime, attachments: list[dict[str, Any]] = (),
                  verified: bool = False, user_id: str = "") -> dict[str, Any]:
    """``ticket_received`` body for the message that opens a conversation."""
    source = {"visitor_id": visitor_id, "client_message_id": client_message_id}
    if verified:
        source["verified"] = "true"
    return ev.make_event(
        ev.INTAKE_CHAT, ev.TICKET_RECEIVED, now=now, trace_id=trace_id,
        event_id=stable_event_id(ev.TICKET_RECEIVED, ticket_id), ticket_id=ticket_id,
        channel="chat", customer=customer(visitor_id, profile, user_id if verified else ""),
        subject=subject_for(text, list(attachments)),
        text=text, received_at=now, source=source, attachments=list(attachments),
    )


def follow_up_event(*, ticket_id: str, trace_id: str, visitor_id: str, client_message_id: str, text: str,
                    profile: Profile, now: datetime, attachments: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """``message_received`` body for a later message of the open conversation."""
    return ev.make_event(
        ev.INTAKE_CHAT, ev.MESSAGE_RECEIVED, now=now, trace_id=trace_id,
        event_id=stable_event_id(ev.MESSAGE_RECEIVED, ticket_id, client_message_id), ticket_id=ticket_id,
        channel="chat", customer=customer(visitor_id, profile), text=text, message_id=client_message_id,
        received_at=now, attachments=list(attachments),
    )


def customer_entry(client_message_id: str, text: str, sent_at: str,
                   attachments: list[dict[str, Any]] = ()) -> dict[str, Any]:
    entry = {"from": "customer", "client_message_id": client_message_id, "message_id": client_message_id,
             "text": text, "sent_at": sent_at}
    if attachments:
        entry["files"] = [{k: a[k] for k in ("filename", "content_type", "size")} for a in attachments]
    return entry


def agent_entry(reply_id: str, agent_id: str, agent_name: str, text: str, sent_at: str) -> dict[str, Any]:
    return {"from": "agent", "reply_id": reply_id, "agent_id": agent_id, "agent_name": agent_name, "text": text,
            "sent_at": sent_at}


def agent_message_frame(entry: dict[str, Any], seq: int) -> dict[str, Any]:
    return {"type": "agent_message", "seq": seq,
            **{k: entry[k] for k in ("reply_id", "agent_name", "text", "sent_at")}}


def history_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A transcript entry as the widget is sent it (agent ids stay on our side)."""
    return {k: v for k, v in entry.items() if k != "agent_id"}


def chat_entries(entries: list[dict[str, Any]], customer_name: str) -> list[dict[str, Any]]:
    """Transcript entries as ``shared.events.ChatEntry`` fields."""
    lines = []
    for entry in entries:
        agent = entry.get("from") == "agent"
        lines.append({"author": "agent" if agent else "customer",
                      "name": entry.get("agent_name", "") if agent else customer_name,
                      "text": entry.get("text", ""), "sent_at": entry["sent_at"],
                      "files": [f["filename"] for f in entry.get("files", [])]})
    return lines


def has_agent_reply(entries: list[dict[str, Any]]) -> bool:
    return any(e.get("from") == "agent" for e in entries)


def transcript_event(*, ticket_id: str, trace_id: str, visitor_id: str, profile: Profile, to: str, subject: str,
                     entries: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """``chat_transcript_requested``: one mail per ticket, transcript length and address (a repeat
    of the same request is the same event, so the notifier sends it once)."""
    last = max(int(e.get("seq", 0)) for e in entries)
    return ev.make_event(
        ev.INTAKE_CHAT, ev.CHAT_TRANSCRIPT_REQUESTED, now=now, trace_id=trace_id,
        event_id=stable_event_id(ev.CHAT_TRANSCRIPT_REQUESTED, ticket_id, str(last), to.lower()),
        ticket_id=ticket_id, customer=customer(visitor_id, profile), to=to, subject=subject,
        entries=chat_entries(entries, profile.name),
    )


def unreceived_replies(entries: list[dict[str, Any]], *, after: int, up_to: int) -> list[dict[str, Any]]:
    """Agent replies with a position in ``(after, up_to]``: what no widget confirmed and no mail carried."""
    return [e for e in entries if e.get("from") == "agent" and after < int(e.get("seq", 0)) <= up_to]


def reply_missed_event(*, ticket_id: str, trace_id: str, visitor_id: str, profile: Profile, subject: str,
                       replies: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    up_to = max(int(e["seq"]) for e in replies)
    return ev.make_event(
        ev.INTAKE_CHAT, ev.CHAT_REPLY_MISSED, now=now, trace_id=trace_id,
        event_id=stable_event_id(ev.CHAT_REPLY_MISSED, ticket_id, str(up_to)), ticket_id=ticket_id,
        customer=customer(visitor_id, profile), to=profile.email, subject=subject,
        replies=chat_entries(replies, profile.name), up_to_seq=up_to,
    )
