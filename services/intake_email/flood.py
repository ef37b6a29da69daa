"""Is a sender flooding us? Pure: the store counts, this module decides (no I/O, no clock).

A sender (by address) with more than ``max_messages`` distinct messages within the sliding
``window_seconds`` is throttled: each further message goes to quarantine with a ``flood: …``
reason instead of opening tickets (a script or a broken autoresponder that escaped
:mod:`~services.intake_email.automatic` would otherwise bury the agents).

Messages are counted by *identity* (:func:`message_member`), never by delivery: a message
fetched again after a crash, the same message in two of our mailboxes, or a redelivered copy
is one member of the window, so it cannot push a sender over the limit.
"""
from __future__ import annotations

from dataclasses import dataclass

from shared.intake_ledger import natural_key_hash


@dataclass(frozen=True)
class FloodPolicy:
    max_messages: int = 20
    window_seconds: float = 600.0

    @classmethod
    def from_minutes(cls, max_messages: int, window_minutes: float) -> "FloodPolicy":
        return cls(int(max_messages), float(window_minutes) * 60.0)


def sender_hash(address: str) -> str:
    """The sender's key in Redis: a hash, so no address is stored in clear."""
    return natural_key_hash(address.strip().lower())


def message_member(message_id: str | None, mailbox: str, uidvalidity: int, uid: int) -> str:
    """One message's identity in the window: its Message-ID, else where it sits in the mailbox."""
    if message_id and message_id.strip():
        return "msgid:" + natural_key_hash(message_id.strip())
    return "uid:" + natural_key_hash(f"{mailbox}\0{uidvalidity}\0{uid}")


def throttle_reason(policy: FloodPolicy, messages_in_window: int) -> str | None:
    """``None`` when the sender is within the limit, else the quarantine reason."""
    if messages_in_window <= policy.max_messages:
        return None
    minutes = policy.window_seconds / 60.0
    window = f"{minutes:g} minutes"
    return (f"flood: {messages_in_window} messages from this sender within {window} "
            f"(limit {policy.max_messages})")
