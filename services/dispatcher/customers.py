"""What the dispatcher knows about a customer across tickets (pure: no Redis, no clock).

A customer is a profile (``CU-<n>``, :mod:`shared.customer_identity`) found from the ticket's
verified identifiers; its history (recent tickets and complaints, open tickets, last agent) is
what classification (repeat contact, repeat complaint) and routing (sticky owner) read, and what
``ticket_classified`` carries on as the customer's summary.

Before profiles the dispatcher kept a history per key (chat visitor id, then e-mail address, then
phone): :func:`customer_key` still names those keys, which are read (not written) until they
expire, so a customer's last 90 days are not forgotten by the upgrade.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from shared import events as ev
from shared.customer_store import ProfileHistory

SUMMARY_OPEN_TICKETS = 50  # CustomerSummary.open_tickets' limit


@dataclass(frozen=True)
class CustomerHistory:
    recent_tickets: int = 0          # tickets received within the history window, this one excluded
    recent_complaints: int = 0       # of those, classified as complaints (complaint tag or signal)
    open_tickets: int = 0            # not yet resolved
    last_agent_id: str | None = None  # who last had one of their tickets
    last_agent_at: float | None = None  # epoch seconds of that assignment


NO_HISTORY = CustomerHistory()


def customer_key(customer: ev.Customer) -> str | None:
    """The legacy history key of a customer (before profiles), or None."""
    if customer.chat_visitor_id:
        return f"chat:{customer.chat_visitor_id}"
    if customer.email:
        return f"email:{customer.email.strip().lower()}"
    if customer.phone:
        return f"phone:{customer.phone}"
    return None


def combined_history(profile: ProfileHistory, legacy: CustomerHistory = NO_HISTORY) -> CustomerHistory:
    """The profile's history with what the legacy key still remembers (disjoint tickets: the
    legacy keys are no longer written)."""
    last_id, last_at = profile.last_agent_id, profile.last_agent_at
    if legacy.last_agent_id and legacy.last_agent_at is not None and (last_at is None or legacy.last_agent_at > last_at):
        last_id, last_at = legacy.last_agent_id, legacy.last_agent_at
    return CustomerHistory(recent_tickets=profile.recent_tickets + legacy.recent_tickets,
                           recent_complaints=profile.recent_complaints + legacy.recent_complaints,
                           open_tickets=len(profile.open) + legacy.open_tickets,
                           last_agent_id=last_id, last_agent_at=last_at)


def summary_json(profile: ProfileHistory, history: CustomerHistory) -> str:
    """``ticket_classified.history`` (events.CustomerSummary) as stored with the ticket."""
    summary = ev.CustomerSummary(open_tickets=[t.ticket_id for t in profile.open][:SUMMARY_OPEN_TICKETS],
                                 recent_tickets=history.recent_tickets, recent_complaints=history.recent_complaints,
                                 last_agent_id=history.last_agent_id)
    return summary.model_dump_json()


def summary_of(stored: str | None) -> dict | None:
    return json.loads(stored) if stored else None
