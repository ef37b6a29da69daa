"""The mails the notifier sends, built from events (pure: no broker, no SMTP, no clock).

Six kinds:

- ``ticket_ack``: "we received your request, your ticket is TM-10001" to the customer;
  automatic (``Auto-Submitted: auto-replied``);
- ``agent_reply``: an agent's reply to an email customer; written by a person, so *not* marked
  automatic, and threaded (In-Reply-To/References) onto what we know of the conversation;
- ``sla_breached``: a notice to the supervisor; automatic (``Auto-Submitted: auto-generated``);
- ``mail_rejected``: "your message was too large, send it again with smaller attachments" to
  the sender of an inbound mail intake refused; automatic (``auto-replied``), about no ticket;
- ``chat_transcript``: a chat as the customer saw it, asked for in the widget; automatic
  (``auto-generated``);
- ``chat_reply_missed``: agent replies in a chat the customer had left; written by people, not
  automatic.

No mail goes to an address that bounced (``skip_reason`` → ``bounced_address``): the store
keeps which addresses are suppressed, and for how long. A bounce is believed only for an address
we mailed about the ticket it names (``trusted_bounce``): anyone can send us a delivery report,
and one naming a stranger's address must not stop our mail to that stranger.

Every subject carries the ticket tag ``[#TM-10001]``. Every Message-ID is ours and signed
(``<tm.TM-10001.<notification id>.<sig>@<our domain>>``, :mod:`shared.mail_tokens`), so intake
can tell our own mail from everything else and a reply carrying it finds its ticket; the
Reply-To is our signed plus address (``support+TM-10001.<sig>@<our domain>``) for mail clients
that drop the threading headers. The subject tag alone is trusted by intake only from a
ticket's participants. Automatic mail also carries ``X-Auto-Response-Suppress:
All`` and ``Precedence: bulk`` so well-behaved auto-responders stay quiet, and is never sent to
system addresses (mailer-daemon, postmaster, noreply, …): that is how mail loops start.

Texts are Jinja2 templates under ``templates/``, one file per kind and locale (``zh-CN`` or
``en``), each with a ``subject`` and a ``body`` block.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from shared import mail_tokens
from shared.events import (AgentReplied, ChatEntry, ChatReplyMissed, ChatTranscriptRequested, InboundMailRejected,
                           SlaBreached, TicketReceived)

TEMPLATES_DIR = Path(__file__).parent / "templates"

KIND_TICKET_ACK = "ticket_ack"
KIND_AGENT_REPLY = "agent_reply"
KIND_SLA_BREACHED = "sla_breached"
KIND_MAIL_REJECTED = "mail_rejected"
KIND_CHAT_TRANSCRIPT = "chat_transcript"
KIND_CHAT_REPLY_MISSED = "chat_reply_missed"

ZH_CN = "zh-CN"
EN = "en"

AUTO_REPLIED = "auto-replied"      # an answer to the customer's own mail (RFC 3834)
AUTO_GENERATED = "auto-generated"  # not caused by a mail from the recipient

# Zammad's send_no_auto_response_reg_exp default: automatic mail to these goes nowhere good.
NO_AUTOMATIC_MAIL_TO = re.compile(
    r"(mailer-daemon|postmaster|abuse|root|noreply|noreply.+?|no-reply|no-reply.+?)@.+?", re.IGNORECASE
)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|回复|答复|转发)\s*[:：]\s*)+", re.IGNORECASE)
_TICKET_TAG = re.compile(r"\[#TM-\d+\]\s*")
MAX_REFERENCES = 10

_templates = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR), undefined=StrictUndefined, autoescape=False,
    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Sender:
    """Who our mail is from; ``address``'s domain names our Message-IDs; ``token_secret`` signs
    them and the Reply-To (``TM_MAIL_TOKEN_SECRET``, shared with intake_email)."""

    address: str
    name: str = ""
    token_secret: bytes = field(default=mail_tokens.DEV_SECRET.encode(), repr=False)

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1]


@dataclass(frozen=True)
class Thread:
    """What we know of one ticket's mail conversation, to thread what we send next."""

    subject: str = ""
    customer_message_id: str | None = None
    ack_message_id: str | None = None
    last_reply_message_id: str | None = None

    def references(self) -> list[str]:
        ids = [self.customer_message_id, self.ack_message_id, self.last_reply_message_id]
        return [i for i in ids if i][-MAX_REFERENCES:]

    def parent(self) -> str | None:
        """The mail ours answers: our last reply, else the ack, else the customer's mail."""
        return self.last_reply_message_id or self.ack_message_id or self.customer_message_id


def notification_id(event_id: str, kind: str) -> str:
    """Same event, same kind → same id: a redelivered event is recognisably the same mail."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"ticketmesh:notification:{kind}:{event_id}").hex


MESSAGE_ID_NOTIFICATION_CHARS = 16


def make_message_id(sender: Sender, ticket_id: str, notification: str) -> str:
    """Signed and unique per mail. Only 16 characters (64 bits) of the notification id: unique
    enough next to the ticket id, and the header stays on one line (a folded Message-ID is legal
    but some clients and tools mishandle it)."""
    return mail_tokens.message_id(sender.token_secret, ticket_id, notification[:MESSAGE_ID_NOTIFICATION_CHARS],
                                  sender.domain)


def make_reply_to(sender: Sender, ticket_id: str) -> str:
    """Replies to this address name the ticket, even from clients that drop In-Reply-To."""
    return mail_tokens.reply_address(sender.token_secret, ticket_id, sender.address)


def normalize_message_id(raw: str | None) -> str | None:
    """``abc@x`` or ``<abc@x>`` → ``<abc@x>``; anything with spaces or no ``@`` → None."""
    if not raw:
        return None
    value = raw.strip().strip("<>")
    if "@" not in value or any(c.isspace() or c in "<>" for c in value):
        return None
    return f"<{value}>"


def choose_locale(language: str | None, sample: str = "") -> str:
    """zh-CN for Chinese speakers, English for the rest; unknown → guess from the text."""
    if language:
        return ZH_CN if language.lower().startswith("zh") else EN
    return ZH_CN if _CJK.search(sample) else EN


def trusted_bounce(ticket_id: str | None, recipients: list[str],
                   mailed: set[str]) -> tuple[list[str], list[str]]:
    """``(suppress, ignore)``: the bounced recipients we mailed about ``ticket_id`` (``mailed``,
    lowercased), and the rest. A bounce naming no ticket of ours (intake_email sets it only for
    our signed Message-ID) proves nothing, so then every recipient is ignored."""
    suppress: list[str] = []
    ignore: list[str] = []
    for address in recipients:
        trusted = ticket_id is not None and address.strip().lower() in mailed
        (suppress if trusted else ignore).append(address)
    return suppress, ignore


def skip_reason(address: str | None, *, automatic: bool, bounced: bool = False) -> str | None:
    """Why this address must not get this mail, or None if it may (``bounced``: it is suppressed)."""
    if not address:
        return "no_address"
    if _recipient("", address) is None:
        return "invalid_address"
    if bounced:
        return "bounced_address"
    if automatic and NO_AUTOMATIC_MAIL_TO.fullmatch(address.strip()):
        return "system_address"
    return None


def clean_subject(subject: str) -> str:
    """The customer's subject without reply prefixes or our tag, on one line."""
    one_line = " ".join(subject.split())
    return _TICKET_TAG.sub("", _REPLY_PREFIX.sub("", one_line)).strip()


def ticket_ack(ticket: TicketReceived, *, sender: Sender, notification: str, now: datetime) -> EmailMessage:
    locale = choose_locale(ticket.customer.language, f"{ticket.subject} {ticket.text[:500]}")
    subject, body = _render(KIND_TICKET_ACK, locale, ticket_id=ticket.ticket_id, channel=ticket.channel,
                            customer_name=_one_line(ticket.customer.name), subject=clean_subject(ticket.subject))
    msg = _envelope(sender, _required_recipient(ticket.customer.name, ticket.customer.email), subject, body,
                    ticket.ticket_id, notification, now)
    _mark_automatic(msg, AUTO_REPLIED)
    customer_message_id = normalize_message_id(ticket.source.get("message_id"))
    if customer_message_id:
        msg["In-Reply-To"] = customer_message_id
        msg["References"] = customer_message_id
    return msg


def agent_reply(reply: AgentReplied, *, agent_name: str, thread: Thread, sender: Sender, notification: str,
                now: datetime) -> EmailMessage:
    locale = choose_locale(reply.customer.language, f"{thread.subject} {reply.text[:500]}")
    subject, body = _render(KIND_AGENT_REPLY, locale, ticket_id=reply.ticket_id, subject=clean_subject(thread.subject),
                            text=reply.text, agent_name=_one_line(agent_name))
    msg = _envelope(sender, _required_recipient(reply.customer.name, reply.customer.email), subject, body,
                    reply.ticket_id, notification, now)
    parent = thread.parent()
    if parent:
        msg["In-Reply-To"] = parent
        msg["References"] = " ".join(thread.references())
    return msg


def sla_breach_notice(breach: SlaBreached, *, to: str, locale: str, assignee_name: str | None, sender: Sender,
                      notification: str, now: datetime, zone: tzinfo) -> EmailMessage:
    subject, body = _render(
        KIND_SLA_BREACHED, locale, ticket_id=breach.ticket_id, policy=breach.policy, clock=breach.clock,
        target_minutes=f"{breach.target_seconds / 60:g}", due_at=_local_time(breach.due_at, zone),
        breached_at=_local_time(breach.occurred_at, zone), agent_id=breach.agent_id,
        assignee_name=_one_line(assignee_name or ""),
    )
    msg = _envelope(sender, _required_recipient("", to), subject, body, breach.ticket_id, notification, now)
    _mark_automatic(msg, AUTO_GENERATED)
    return msg


def rejection_notice(rejected: InboundMailRejected, *, sender: Sender, notification: str,
                     now: datetime) -> EmailMessage:
    """Tell the sender of a refused inbound mail why, and what to do instead. It names no ticket
    (none was opened), so its Message-ID carries no ticket token."""
    locale = choose_locale(rejected.language, rejected.subject)
    subject, body = _render(KIND_MAIL_REJECTED, locale, subject=_one_line(rejected.subject),
                            customer_name=_one_line(rejected.name), size=megabytes(rejected.size),
                            limit=megabytes(rejected.limit))
    msg = EmailMessage()
    msg["From"] = Address(display_name=sender.name, addr_spec=sender.address)
    msg["To"] = _required_recipient(rejected.name, rejected.to)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = f"<tm.rejected.{notification}@{sender.domain}>"
    original = normalize_message_id(rejected.original_message_id)
    if original:
        msg["In-Reply-To"] = original
        msg["References"] = original
    msg.set_content(body, charset="utf-8")
    _mark_automatic(msg, AUTO_REPLIED)
    return msg


def _chat_lines(entries: list[ChatEntry], zone: tzinfo, agent_label: str, customer_label: str) -> list[dict]:
    return [{"time": _local_time(e.sent_at, zone), "text": e.text, "files": list(e.files),
             "name": _one_line(e.name) or (agent_label if e.author == "agent" else customer_label)} for e in entries]


_CHAT_LABELS = {ZH_CN: ("客服", "我"), EN: ("Support", "You")}


def chat_transcript(request: ChatTranscriptRequested, *, sender: Sender, notification: str, now: datetime,
                    zone: tzinfo) -> EmailMessage:
    """The chat as the customer saw it, to the address they gave in the widget. Machine-made at
    their request: marked ``auto-generated`` so auto-responders stay quiet; replies reach the ticket."""
    locale = choose_locale(request.customer.language, " ".join(e.text for e in request.entries[:5])[:500])
    subject, body = _render(KIND_CHAT_TRANSCRIPT, locale, ticket_id=request.ticket_id,
                            subject=clean_subject(request.subject), customer_name=_one_line(request.customer.name),
                            lines=_chat_lines(request.entries, zone, *_CHAT_LABELS[locale]))
    msg = _envelope(sender, _required_recipient(request.customer.name, request.to), subject, body,
                    request.ticket_id, notification, now)
    _mark_automatic(msg, AUTO_GENERATED)
    return msg


def missed_chat_replies(missed: ChatReplyMissed, *, sender: Sender, notification: str, now: datetime,
                        zone: tzinfo) -> EmailMessage:
    """Agent replies a chat customer left before receiving: written by people, so not automatic."""
    locale = choose_locale(missed.customer.language, " ".join(e.text for e in missed.replies[:3])[:500])
    subject, body = _render(KIND_CHAT_REPLY_MISSED, locale, ticket_id=missed.ticket_id,
                            subject=clean_subject(missed.subject), customer_name=_one_line(missed.customer.name),
                            lines=_chat_lines(missed.replies, zone, *_CHAT_LABELS[locale]))
    return _envelope(sender, _required_recipient(missed.customer.name, missed.to), subject, body,
                     missed.ticket_id, notification, now)


def megabytes(size: int) -> str:
    """Bytes as MB for people: ``31457280`` → ``30``, ``12900000`` → ``12.3``."""
    return f"{size / (1024 * 1024):.1f}".removesuffix(".0")


# -- building blocks -------------------------------------------------------------------------

def _render(kind: str, locale: str, **values: Any) -> tuple[str, str]:
    template = _templates.get_template(f"{kind}.{locale}.txt.j2")
    context = template.new_context(values)
    subject = "".join(template.blocks["subject"](context))
    body = "".join(template.blocks["body"](context))
    return _one_line(subject), body.strip() + "\n"


def _envelope(sender: Sender, to: Address, subject: str, body: str, ticket_id: str, notification: str,
              now: datetime) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = Address(display_name=sender.name, addr_spec=sender.address)
    msg["To"] = to
    msg["Reply-To"] = Address(display_name=sender.name, addr_spec=make_reply_to(sender, ticket_id))
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_message_id(sender, ticket_id, notification)
    msg.set_content(body, charset="utf-8")
    return msg


def _mark_automatic(msg: EmailMessage, auto_submitted: str) -> None:
    msg["Auto-Submitted"] = auto_submitted
    msg["X-Auto-Response-Suppress"] = "All"
    msg["Precedence"] = "bulk"


def _recipient(name: str, address: str) -> Address | None:
    try:
        return Address(display_name=_one_line(name), addr_spec=address.strip())
    except (ValueError, IndexError, MessageError):  # what the stdlib raises for a malformed address
        return None


def _required_recipient(name: str, address: str | None) -> Address:
    recipient = _recipient(name, address or "")
    if recipient is None:
        raise ValueError("recipient address is missing or malformed (check skip_reason first)")
    return recipient


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _local_time(moment: datetime, zone: tzinfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")
