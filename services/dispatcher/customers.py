"""What the dispatcher remembers about a customer across tickets (pure: no Redis, no clock).

A customer is keyed by the best identifier a ticket carries (chat visitor id, then e-mail
address, then E.164 phone) until issue 4's shared customer identity replaces this. The
history is what classification (repeat contact, repeat complaint) and routing (sticky owner)
read; the dispatcher's store keeps it under its own keys.
"""
from __future__ import annotations

from dataclasses import dataclass

from shared import events as ev


@dataclass(frozen=True)
class CustomerHistory:
    recent_tickets: int = 0          # tickets received within the history window, this one excluded
    recent_complaints: int = 0       # of those, classified as complaints (complaint tag or signal)
    open_tickets: int = 0            # not yet resolved
    last_agent_id: str | None = None  # who last had one of their tickets
    last_agent_at: float | None = None  # epoch seconds of that assignment


NO_HISTORY = CustomerHistory()


def customer_key(customer: ev.Customer) -> str | None:
    """A stable key for the customer, or None when the ticket names nobody we can recognise."""
    if customer.chat_visitor_id:
        return f"chat:{customer.chat_visitor_id}"
    if customer.email:
        return f"email:{customer.email.strip().lower()}"
    if customer.phone:
        return f"phone:{customer.phone}"
    return None
