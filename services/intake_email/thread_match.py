"""Which ticket an inbound mail belongs to, or none (a new ticket). Pure: no I/O, no clock.

Rules, strongest first; the first that names a ticket decides (Zammad, FreeScout and Chatwoot
do the same in spirit, but stop at the first References id or trust a typed number):

1. ``signed_message_id`` — a Message-ID we signed (:mod:`shared.mail_tokens`) anywhere in the
   chain: In-Reply-To, then References from newest to oldest, *every* entry. Outlook often
   drops In-Reply-To and keeps only References; a thread that began elsewhere may carry our id
   deep inside. A forged or edited signature names nothing.
2. ``plus_address`` — our signed plus address (``support+TM-n.<sig>@…``) among the recipients
   (To, Cc, Delivered-To, X-Original-To): clients that drop every threading header still send
   to the Reply-To we set.
3. ``references`` — a Message-ID in the chain that intake_email stored (a mail that opened or
   followed up a ticket), newest first: e.g. a colleague answering the customer's first mail.
4. ``subject_tag`` — ``[#TM-n]`` in the subject, but only when the sender already takes part
   in that ticket (Zammad #5064: quoting a number must not let a stranger into a ticket).
   Otherwise it is ignored (``mail_subject_tag_ignored`` with the reason).
5. else a new ticket.

The service gathers what rules 3 and 4 need in one Redis round trip (:class:`Lookups`), after
:func:`lookup_plan` said what to fetch; the decision itself is :func:`decide`.

Closed and forgotten tickets (:func:`route`): a follow-up to a ticket resolved less than the
reopen window ago is a follow-up (agent_desk reopens it); later, it opens a new ticket linked to
the old one. So does mail naming a ticket intake_email has no record of any more (its records
expired, see the store): filed as a follow-up, it would reach a ticket nobody holds.
Merges do not exist in the mesh yet; when they do, a merged ticket's survivor would be looked
up in the same round trip and substituted in :func:`route`, before the resolved check.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Mapping

from shared import mail_tokens

MAX_ADDRESSES = 200  # per header set; a hostile Cc list is not worth more
MAX_CHAIN = 500  # ids of the thread we look at; a hostile References header can be megabytes

BY_SIGNED_MESSAGE_ID = "signed_message_id"
BY_PLUS_ADDRESS = "plus_address"
BY_REFERENCES = "references"
BY_SUBJECT_TAG = "subject_tag"
NEW_TICKET = "new_ticket"

TAG_UNKNOWN_TICKET = "unknown_ticket"
TAG_SENDER_NOT_PARTICIPANT = "sender_not_participant"


@dataclass(frozen=True)
class ThreadFacts:
    """What an inbound mail says about its place in a conversation."""

    from_email: str
    recipients: tuple[str, ...]  # To, Cc, Delivered-To, X-Original-To (lowercased)
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    message_id: str | None = None

    @property
    def chain(self) -> tuple[str, ...]:
        """Message-IDs this mail answers, nearest first: In-Reply-To, then References right to
        left; without our own id, duplicates, or anything past :data:`MAX_CHAIN`."""
        seen: dict[str, None] = {}
        for mid in (*self.in_reply_to, *reversed(self.references)):
            mid = mid.strip().strip("<>").strip()
            if mid and mid != self.message_id:
                seen.setdefault(mid, None)
                if len(seen) >= MAX_CHAIN:
                    break
        return tuple(seen)


@dataclass(frozen=True)
class Lookups:
    """What intake_email's store knows, fetched in one round trip.

    - ``chain_ticket``: the ticket of the nearest chain id we stored, and that id's index in
      :attr:`ThreadFacts.chain`;
    - ``participant_of``: tickets (among those asked for) the sender takes part in;
    - ``known_tickets``: tickets (among those asked for) this intake still has a record of
      (participants, or a resolution / link);
    - ``resolved``: per ticket asked for, when it was resolved and not followed up since.
    """

    chain_ticket: str | None = None
    chain_index: int | None = None
    participant_of: frozenset[str] = frozenset()
    known_tickets: frozenset[str] = frozenset()
    resolved: Mapping[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class LookupPlan:
    """What to fetch: the chain ids to resolve (empty when a signed token already decided) and
    the tickets whose participants and resolution matter."""

    chain: tuple[str, ...]
    tickets: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    ticket_id: str | None  # None: a new ticket
    by: str
    evidence: str = ""  # the id, address or tag that decided (for the log; an address is masked there)
    ignored_tag: str | None = None  # a subject tag that was not trusted ...
    ignored_why: str | None = None  # ... and why


@dataclass(frozen=True)
class Route:
    """What the service does: follow up ``ticket_id``, or open a new ticket (``ticket_id`` None)
    linked to ``linked_ticket_id`` when it answers a ticket closed too long ago."""

    ticket_id: str | None
    linked_ticket_id: str | None = None
    why: str = ""  # why a new linked ticket: LINK_REOPEN_WINDOW_PASSED or LINK_UNKNOWN_TICKET


LINK_REOPEN_WINDOW_PASSED = "reopen_window_passed"
LINK_UNKNOWN_TICKET = "unknown_ticket"


def signed_match(facts: ThreadFacts, secret: bytes) -> Decision | None:
    """Rules 1 and 2: signed tokens decide without any lookup."""
    for mid in facts.chain:
        ticket = mail_tokens.ticket_from_message_id(secret, mid)
        if ticket:
            return Decision(ticket, BY_SIGNED_MESSAGE_ID, evidence=mid)
    for address in facts.recipients:
        ticket = mail_tokens.ticket_from_address(secret, address)
        if ticket:
            return Decision(ticket, BY_PLUS_ADDRESS, evidence=address)
    return None


def lookup_plan(facts: ThreadFacts, secret: bytes) -> LookupPlan:
    signed = signed_match(facts, secret)
    if signed is not None:
        return LookupPlan(chain=(), tickets=(signed.ticket_id,))  # type: ignore[arg-type]
    tag = mail_tokens.ticket_from_subject(facts.subject)
    return LookupPlan(chain=facts.chain, tickets=(tag,) if tag else ())


def decide(facts: ThreadFacts, secret: bytes, lookups: Lookups) -> Decision:
    """The ticket this mail follows up, by the first rule that names one (see module doc)."""
    signed = signed_match(facts, secret)
    if signed is not None:
        return signed
    if lookups.chain_ticket:
        chain = facts.chain
        index = lookups.chain_index
        evidence = chain[index] if index is not None and 0 <= index < len(chain) else ""
        return Decision(lookups.chain_ticket, BY_REFERENCES, evidence=evidence)
    tag = mail_tokens.ticket_from_subject(facts.subject)
    if tag is None:
        return Decision(None, NEW_TICKET)
    if tag in lookups.participant_of:
        return Decision(tag, BY_SUBJECT_TAG, evidence=f"[#{tag}]")
    why = TAG_SENDER_NOT_PARTICIPANT if tag in lookups.known_tickets else TAG_UNKNOWN_TICKET
    return Decision(None, NEW_TICKET, ignored_tag=tag, ignored_why=why)


def route(decision: Decision, *, known: bool, resolved_at: datetime | None, received_at: datetime,
          reopen_window: timedelta) -> Route:
    """Follow up the decided ticket unless intake_email no longer ``known``s it or it was resolved
    longer than ``reopen_window`` before the mail arrived; then a new ticket linked to it."""
    if decision.ticket_id is None:
        return Route(None)
    if not known:
        return Route(None, linked_ticket_id=decision.ticket_id, why=LINK_UNKNOWN_TICKET)
    if resolved_at is not None and received_at - resolved_at > reopen_window:
        return Route(None, linked_ticket_id=decision.ticket_id, why=LINK_REOPEN_WINDOW_PASSED)
    return Route(decision.ticket_id)


def participants(*, sender: str, recipients: tuple[str, ...], our_address: str) -> frozenset[str]:
    """The people a mail involves, without us: the sender and every recipient that is not our
    support address or one of its plus addresses."""
    ours = _base(our_address)
    return frozenset(a.strip().lower() for a in (sender, *recipients) if a and "@" in a and _base(a) != ours)


def _base(address: str) -> str:
    local, _, domain = address.strip().lower().rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


