"""Loop safety for the mail we send: who automatic mail must never go to, how much of it one
recipient may get, and how it is marked (pure: no I/O, no clock; time is passed in).

A mail loop needs two machines answering each other: our acknowledgement reaches an
autoresponder, its answer reaches our intake, which acknowledges again, forever (FreeScout
#3670 made 11 conversations that way, Chatwoot #5131 looped on no-reply mailboxes). Intake stops
most of it (auto-replies and bounces never open a ticket); this module is the notifier's half,
in three layers, after Zammad (anchors §2.2):

1. **Who** (:func:`skip_reason`): no mail to a suppressed address (a bounce or an SMTP refusal,
   60 days), and no *automatic* mail to a machine's address: ``mailer-daemon``, ``postmaster``,
   ``abuse``, ``root``, anything with ``noreply`` / ``no-reply`` / ``donotreply`` in it,
   bounce and list-robot addresses (``bounce*``, ``*-bounces``, ``owner-*``, ``*-request``,
   VERP forms such as ``bounces+123@``), Chinese providers' system senders (QQ Mail's
   ``10000@qq.com``), and our own support address (``support+…`` included): mail to ourselves
   would come straight back into intake. An agent's reply is a person writing to a person: it
   goes to any valid, unsuppressed address.
2. **How much** (:class:`Caps`): sliding windows per recipient per ticket and per recipient over
   all tickets, for automatic mail only (defaults: Zammad's ``…_articles_per_ticket`` and
   ``…_articles_total``). The store counts; :func:`exceeded` decides. Notices to staff
   (:data:`STAFF_KINDS`: 催办, escalations, assignments, breaches) count per ticket only
   (:func:`caps_for`): they are raised by clocks and routing, never by a mail from their
   recipient, so they cannot feed a loop, and an all-tickets window would drop a supervisor's
   breach notices exactly during an incident; the per-ticket window still stops a runaway
   ladder on one ticket. ``TM_NOTIFIER_CAP_EXEMPT`` lifts every cap for named addresses.
3. **Marking** (:func:`mark_automatic`): ``Auto-Submitted`` (RFC 3834), ``X-Auto-Response-
   Suppress: All`` (Exchange), ``Precedence: bulk`` and ``X-Loop`` on every automatic mail, so
   well-behaved responders stay quiet. Which mail is automatic is decided by its kind: every
   kind except an agent's reply, by mail or as chat replies the customer missed
   (:data:`PERSONAL_KINDS`), so a new kind of notice is capped and marked unless someone
   decides otherwise. A chat transcript is automatic although the customer asked for it: it is
   machine-assembled, and the address is typed into the widget unverified, so the caps are what
   keeps a visitor from using it to mail a stranger over and over (intake_chat also sends it
   only once an agent took part, at most ``session_transcripts`` an hour). The mail builders (messages.py) mark as they
   render, saying only which RFC 3834 value fits (``auto-replied`` for an answer to the
   recipient's own mail: the acknowledgement, the "too large" reply; ``auto-generated`` for
   everything else, the resolution and CSAT mail included); the notifier marks every automatic
   kind again before queueing, so nothing unmarked slips through.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from email.message import EmailMessage
from typing import Iterable

from shared.mail_addresses import is_system_address, is_valid_address, normalize_address

# Written by a person for a person: never capped, never marked automatic. ``chat_reply_missed``
# is agents' chat replies that reached no widget (intake_chat's signal): the same words an
# ``agent_reply`` mail carries, so the same treatment.
PERSONAL_KINDS = frozenset({"agent_reply", "chat_reply_missed"})
# Notices to colleagues, raised by SLA clocks and routing: capped per ticket only (module doc).
STAFF_KINDS = frozenset({"sla_warning", "sla_breached", "ticket_escalated", "ticket_assigned"})

AUTO_GENERATED = "auto-generated"  # not caused by a mail from the recipient
AUTO_REPLIED = "auto-replied"      # an automatic answer to the recipient's own mail

NO_ADDRESS = "no_address"
INVALID_ADDRESS = "invalid_address"
BOUNCED_ADDRESS = "bounced_address"
SYSTEM_ADDRESS = "system_address"
OWN_ADDRESS = "own_address"
LOOP_CAP = "loop_cap"

# Which addresses are machines' is shared with intake_email (shared/mail_addresses.py).
__all__ = ["is_system_address", "is_valid_address", "normalize_address"]


def is_own_address(address: str, own: str) -> bool:
    """``own`` itself or one of its plus addresses (our signed Reply-To)."""
    normalized, ours = normalize_address(address), normalize_address(own)
    if "@" not in normalized or "@" not in ours:
        return False
    local, domain = normalized.rsplit("@", 1)
    own_local, own_domain = ours.rsplit("@", 1)
    return domain == own_domain and local.split("+", 1)[0] == own_local


def skip_reason(address: str | None, *, automatic: bool, bounced: bool = False, own_address: str = "") -> str | None:
    """Why ``address`` must not get this mail, or None. ``bounced``: the store has it suppressed."""
    if not address or not address.strip():
        return NO_ADDRESS
    if not is_valid_address(address):
        return INVALID_ADDRESS
    if bounced:
        return BOUNCED_ADDRESS
    if automatic and own_address and is_own_address(address, own_address):
        return OWN_ADDRESS
    if automatic and is_system_address(address):
        return SYSTEM_ADDRESS
    return None


def is_automatic(kind: str) -> bool:
    return kind not in PERSONAL_KINDS


def mark_automatic(msg: EmailMessage, our_address: str, auto_submitted: str = AUTO_GENERATED) -> None:
    """Make sure an automatic mail says so (headers already set are kept: marking twice is one mark)."""
    if msg["Auto-Submitted"] is None:
        msg["Auto-Submitted"] = auto_submitted
    if msg["X-Auto-Response-Suppress"] is None:
        msg["X-Auto-Response-Suppress"] = "All"
    if msg["Precedence"] is None:
        msg["Precedence"] = "bulk"
    if msg["X-Loop"] is None:
        msg["X-Loop"] = our_address


# -- caps ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    seconds: int
    limit: int

    def label(self) -> str:
        return f"{self.limit}/{self.seconds // 60}min"


@dataclass(frozen=True)
class Caps:
    """Sliding windows for automatic mail to one recipient: about one ticket, and in all."""

    per_ticket: tuple[Window, ...] = ()
    per_recipient: tuple[Window, ...] = ()
    exempt: frozenset[str] = frozenset()

    @property
    def horizon_seconds(self) -> int:
        """How long a sent mail must be remembered to judge every window."""
        return max((w.seconds for w in (*self.per_ticket, *self.per_recipient)), default=0)

    def applies_to(self, address: str) -> bool:
        return bool(self.per_ticket or self.per_recipient) and normalize_address(address) not in self.exempt


def caps_for(kind: str, caps: Caps) -> Caps | None:
    """The caps a mail of ``kind`` counts against: none for a person's mail, the per-ticket
    windows only for a staff notice, all of them for the rest."""
    if not is_automatic(kind):
        return None
    if kind in STAFF_KINDS:
        return replace(caps, per_recipient=())
    return caps


# Zammad's ticket_trigger_loop_protection_articles_per_ticket / _total (db/seeds/settings.rb).
DEFAULT_PER_TICKET = "10:10,30:15,60:25,180:50,600:100"
DEFAULT_PER_RECIPIENT = "10:30,30:60,60:120,180:240,600:360"


def parse_windows(raw: str) -> tuple[Window, ...]:
    """``"10:10,30:15"`` (minutes:max) → windows, shortest first; ``""`` or ``"off"`` → none."""
    text = raw.strip()
    if text.lower() in ("", "off", "none"):
        return ()
    windows = []
    for part in text.split(","):
        minutes, sep, limit = part.strip().partition(":")
        if not sep:
            raise ValueError(f"{part.strip()!r} is not minutes:max")
        try:
            window = Window(int(float(minutes) * 60), int(limit))
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not minutes:max") from None
        if window.seconds <= 0 or window.limit < 1:
            raise ValueError(f"{part.strip()!r}: minutes and max must be positive")
        windows.append(window)
    return tuple(sorted(windows, key=lambda w: w.seconds))


def parse_exempt(raw: str) -> frozenset[str]:
    return frozenset(normalize_address(a) for a in raw.split(",") if a.strip())


def exceeded(windows: Iterable[Window], sent_at: Iterable[float], now: float) -> Window | None:
    """The first window that one more mail now would overflow, given when earlier ones went out."""
    times = list(sent_at)
    for window in windows:
        if sum(1 for t in times if now - window.seconds < t <= now) >= window.limit:
            return window
    return None
