"""The mails the notifier sends, built from events (pure: no broker, no SMTP, no clock).

To customers:

- ``ticket_ack``: "we received your request, your ticket is TM-10001", with the signed status
  link and, once the ticket is classified, when to expect a first response; automatic
  (``Auto-Submitted: auto-replied``);
- ``agent_reply``: an agent's reply to an email customer; written by a person, so *not* marked
  automatic, and threaded (In-Reply-To/References) onto what we know of the conversation;
- ``ticket_waiting``: "we are waiting for your answer" when an agent sets the ticket to
  waiting on the customer; automatic (``auto-generated``), threaded;
- ``ticket_resolved``: "your request is resolved", with the CSAT survey link (1-5 and a
  comment) for a solved ticket whose customer has not answered one yet; automatic, threaded,
  with an HTML part (the survey's five buttons);
- ``mail_rejected``: "your message was too large, send it again with smaller attachments" to
  the sender of an inbound mail intake refused; automatic (``auto-replied``), about no ticket;
- ``chat_transcript``: a chat as the customer saw it, asked for in the widget; automatic
  (``auto-generated``);
- ``chat_reply_missed``: agent replies in a chat the customer had left; written by people, not
  automatic.

To agents and supervisors (internal: see :func:`internal_envelope`):

- ``sla_breached``: a notice to the supervisor; automatic (``Auto-Submitted: auto-generated``);
- ``sla_warning``: 催办, a reminder to an assignee who is offline that a clock runs out soon;
- ``ticket_escalated``: an escalation ladder's notify step, to the assignee, the supervisor or
  the duty managers;
- ``ticket_assigned``: a ticket handed to an agent who is offline (a transfer or reassignment
  that needs no acceptance).

Group chat robots get short texts of their own (``robot_*`` templates, :func:`robot_text`).

Who may get which mail (bounced, system and our own addresses), how much automatic mail one
recipient may get and how it is marked is decided in :mod:`loop_safety`; this module only
says, as it renders, which ``Auto-Submitted`` value a mail carries. The store keeps which
addresses are suppressed, and for how long. A bounce is believed only for an address
we mailed about the ticket it names (``trusted_bounce``): anyone can send us a delivery report,
and one naming a stranger's address must not stop our mail to that stranger.

Every subject carries the ticket tag ``[#TM-10001]``. Every Message-ID is ours and signed
(``<tm.TM-10001.<notification id>.<sig>@<our domain>>``, :mod:`shared.mail_tokens`), so intake
can tell our own mail from everything else and a reply carrying it finds its ticket; the
Reply-To is our signed plus address (``support+TM-10001.<sig>@<our domain>``) for mail clients
that drop the threading headers. The subject tag alone is trusted by intake only from a
ticket's participants. Automatic mail also carries ``X-Auto-Response-Suppress:
All``, ``Precedence: bulk`` and ``X-Loop`` (:func:`loop_safety.mark_automatic`) so
well-behaved auto-responders stay quiet.

Texts are Jinja2 templates under ``templates/``, one file per kind and locale (``zh-CN`` or
``en``): ``<kind>.<locale>.txt.j2`` with a ``subject`` and a ``body`` block, and for some kinds
``<kind>.<locale>.html.j2`` (a ``body`` block, autoescaped) that becomes the mail's HTML
alternative. Undefined names are errors (StrictUndefined), never blank text. A directory given
to :func:`use_templates_from` (``TM_NOTIFY_TEMPLATES_DIR``) is searched first, so wording is
changed by copying a file there and editing it, without touching the code.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape

from services.notifier import loop_safety
from shared import mail_tokens
from shared.events import (AgentReplied, ChatEntry, ChatReplyMissed, ChatTranscriptRequested, InboundMailRejected,
                           SlaBreached, SlaWarning, TicketAssigned, TicketEscalated, TicketReceived)

TEMPLATES_DIR = Path(__file__).parent / "templates"

KIND_TICKET_ACK = "ticket_ack"
KIND_AGENT_REPLY = "agent_reply"
KIND_SLA_BREACHED = "sla_breached"
KIND_MAIL_REJECTED = "mail_rejected"
KIND_TICKET_WAITING = "ticket_waiting"
KIND_TICKET_RESOLVED = "ticket_resolved"
KIND_SLA_WARNING = "sla_warning"
KIND_ESCALATION = "ticket_escalated"
KIND_ASSIGNMENT = "ticket_assigned"
KIND_CHAT_TRANSCRIPT = "chat_transcript"
KIND_CHAT_REPLY_MISSED = "chat_reply_missed"
# Every mail kind; each has a text template in both locales (a unit test holds that).
MAIL_KINDS = (KIND_TICKET_ACK, KIND_AGENT_REPLY, KIND_TICKET_WAITING, KIND_TICKET_RESOLVED, KIND_MAIL_REJECTED,
              KIND_SLA_BREACHED, KIND_SLA_WARNING, KIND_ESCALATION, KIND_ASSIGNMENT, KIND_CHAT_TRANSCRIPT,
              KIND_CHAT_REPLY_MISSED)
# Group chat robots' texts: robot_<event>.
ROBOT_KINDS = ("robot_sla_warning", "robot_sla_breached", "robot_ticket_escalated")
LOCALES = ("zh-CN", "en")

ZH_CN = "zh-CN"
EN = "en"

AUTO_REPLIED = loop_safety.AUTO_REPLIED      # an answer to the customer's own mail (RFC 3834)
AUTO_GENERATED = loop_safety.AUTO_GENERATED  # not caused by a mail from the recipient

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|回复|答复|转发)\s*[:：]\s*)+", re.IGNORECASE)
_TICKET_TAG = re.compile(r"\[#TM-\d+\]\s*")
MAX_REFERENCES = 10



def _environment(override_dir: Path | None = None) -> Environment:
    loaders = [FileSystemLoader(override_dir)] if override_dir is not None else []
    loaders.append(FileSystemLoader(TEMPLATES_DIR))
    return Environment(
        loader=ChoiceLoader(loaders), undefined=StrictUndefined,
        # HTML parts escape every value (a customer's name is not markup); text parts are text.
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False, default=False),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )


_templates = _environment()


def use_templates_from(directory: str | Path | None) -> None:
    """Look in ``directory`` first for each template (the shipped ones fill the gaps); None:
    the shipped templates only. Called once at start, before any mail is built."""
    global _templates
    if directory is not None and not Path(directory).is_dir():
        raise ValueError(f"template directory {directory} does not exist")
    _templates = _environment(Path(directory) if directory is not None else None)


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


def clean_subject(subject: str) -> str:
    """The customer's subject without reply prefixes or our tag, on one line."""
    one_line = " ".join(subject.split())
    return _TICKET_TAG.sub("", _REPLY_PREFIX.sub("", one_line)).strip()


@dataclass(frozen=True)
class Contact:
    """What the notifier keeps of a ticket's customer from ``ticket_received``, to write to them
    when later events (classified, status changed, resolved) no longer carry the customer."""

    ticket_id: str
    channel: str
    email: str | None
    name: str
    locale: str
    subject: str
    customer_message_id: str | None = None

    @classmethod
    def from_ticket(cls, ticket: TicketReceived) -> "Contact":
        return cls(
            ticket_id=ticket.ticket_id, channel=ticket.channel, email=ticket.customer.email,
            name=_one_line(ticket.customer.name),
            locale=choose_locale(ticket.customer.language, f"{ticket.subject} {ticket.text[:500]}"),
            subject=clean_subject(ticket.subject),
            customer_message_id=normalize_message_id(ticket.source.get("message_id")),
        )


def ticket_ack(ticket: TicketReceived | Contact, *, sender: Sender, notification: str, now: datetime,
               status_url: str | None = None, expected_by: datetime | None = None,
               zone: tzinfo = timezone.utc) -> EmailMessage:
    """``expected_by``: when the first response is due (the SLA policy's time for the ticket's
    priority); None when the ticket is not classified yet, and then the mail promises no time."""
    contact = ticket if isinstance(ticket, Contact) else Contact.from_ticket(ticket)
    subject, body = _render(KIND_TICKET_ACK, contact.locale, ticket_id=contact.ticket_id, channel=contact.channel,
                            customer_name=contact.name, subject=contact.subject, status_url=status_url,
                            expected_by=local_minute(expected_by, zone) if expected_by else None)
    msg = _envelope(sender, _required_recipient(contact.name, contact.email), subject, body,
                    contact.ticket_id, notification, now)
    _mark_automatic(msg, sender, AUTO_REPLIED)
    if contact.customer_message_id:
        msg["In-Reply-To"] = contact.customer_message_id
        msg["References"] = contact.customer_message_id
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
    _mark_automatic(msg, sender, AUTO_GENERATED)
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
    _mark_automatic(msg, sender, AUTO_REPLIED)
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
    _mark_automatic(msg, sender, AUTO_GENERATED)
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


def ticket_waiting(contact: Contact, *, agent_name: str, thread: Thread, status_url: str, sender: Sender,
                   notification: str, now: datetime) -> EmailMessage:
    """An agent set the ticket to waiting on the customer: tell them we need their answer."""
    subject, body = _render(KIND_TICKET_WAITING, contact.locale, ticket_id=contact.ticket_id,
                            customer_name=contact.name, subject=contact.subject or clean_subject(thread.subject),
                            agent_name=_one_line(agent_name), status_url=status_url)
    msg = _envelope(sender, _required_recipient(contact.name, contact.email), subject, body,
                    contact.ticket_id, notification, now)
    _mark_automatic(msg, sender, AUTO_GENERATED)
    _thread_onto(msg, _with_customer_message(thread, contact))
    return msg


def ticket_resolved(contact: Contact, *, agent_name: str, thread: Thread, status_url: str, csat_url: str | None,
                    sender: Sender, notification: str, now: datetime) -> EmailMessage:
    """The ticket is resolved; ``csat_url`` (None: no survey) asks for a 1-5 score and a comment.

    The HTML part's five buttons link to the survey with ``?score=N`` to preselect an answer;
    opening a link records nothing (mail scanners open links), the page's form does.
    """
    values = dict(ticket_id=contact.ticket_id, customer_name=contact.name,
                  subject=contact.subject or clean_subject(thread.subject), agent_name=_one_line(agent_name),
                  status_url=status_url, csat_url=csat_url, scores=[1, 2, 3, 4, 5])
    subject, body = _render(KIND_TICKET_RESOLVED, contact.locale, **values)
    msg = _envelope(sender, _required_recipient(contact.name, contact.email), subject, body,
                    contact.ticket_id, notification, now)
    html = _render_html(KIND_TICKET_RESOLVED, contact.locale, **values)
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8")
    _mark_automatic(msg, sender, AUTO_GENERATED)
    _thread_onto(msg, _with_customer_message(thread, contact))
    return msg


@dataclass(frozen=True)
class Colleague:
    """An agent or supervisor a notice goes to: their address, name and language."""

    address: str
    name: str = ""
    locale: str = ZH_CN
    agent_id: str | None = None


def sla_warning_notice(warning: SlaWarning, *, to: Colleague, subject: str, sender: Sender, notification: str,
                       now: datetime, zone: tzinfo) -> EmailMessage:
    """催办: the assignee is offline and a clock on their ticket runs out soon."""
    mail_subject, body = _render(
        KIND_SLA_WARNING, to.locale, ticket_id=warning.ticket_id, subject=clean_subject(subject), clock=warning.clock,
        policy=warning.policy, due_at=local_minute(warning.due_at, zone), name=to.name,
        percent=f"{warning.elapsed_fraction * 100:.0f}", minutes_left=_minutes_between(now, warning.due_at),
    )
    return internal_envelope(sender, to, mail_subject, body, warning.ticket_id, notification, now)


def escalation_notice(escalated: TicketEscalated, *, to: Colleague, audience: str, assignee_name: str | None,
                      subject: str, sender: Sender, notification: str, now: datetime) -> EmailMessage:
    """One notify step of an escalation ladder; ``audience`` is ``assignee``, ``supervisor`` or
    ``duty_manager`` (the text differs: the assignee is asked to act, the others to look)."""
    mail_subject, body = _render(
        KIND_ESCALATION, to.locale, ticket_id=escalated.ticket_id, subject=clean_subject(subject), audience=audience,
        name=to.name, level=escalated.level, trigger=escalated.trigger, clock=escalated.clock,
        policy=escalated.policy, reason=_one_line(escalated.reason), agent_id=escalated.agent_id,
        assignee_name=_one_line(assignee_name or ""),
    )
    return internal_envelope(sender, to, mail_subject, body, escalated.ticket_id, notification, now)


def assignment_notice(assigned: TicketAssigned, *, to: Colleague, subject: str, sender: Sender, notification: str,
                      now: datetime) -> EmailMessage:
    """A ticket was handed to an agent who is offline (it needs no acceptance, so it waits for them)."""
    mail_subject, body = _render(
        KIND_ASSIGNMENT, to.locale, ticket_id=assigned.ticket_id, subject=clean_subject(subject), name=to.name,
        channel=assigned.channel, priority=assigned.priority, step=assigned.decision.step,
    )
    return internal_envelope(sender, to, mail_subject, body, assigned.ticket_id, notification, now)


def robot_text(kind: str, locale: str, **values: Any) -> tuple[str, str]:
    """``(title, body)`` of a group chat robot's message; ``kind`` is one of ROBOT_KINDS."""
    if kind not in ROBOT_KINDS:
        raise ValueError(f"unknown robot message kind {kind!r}")
    title, body = _render(kind, locale, **values)
    return title, body.rstrip("\n")


def internal_envelope(sender: Sender, to: Colleague, subject: str, body: str, ticket_id: str, notification: str,
                      now: datetime) -> EmailMessage:
    """A notice for staff. Its Message-ID carries no ticket token and it has no ticket Reply-To:
    a colleague answering it must not add their answer to the customer's ticket (the mail says
    to act in the console). The From is still our address, so intake knows it as ours."""
    msg = EmailMessage()
    msg["From"] = Address(display_name=sender.name, addr_spec=sender.address)
    msg["To"] = _required_recipient(to.name, to.address)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = f"<tm.notice.{notification[:MESSAGE_ID_NOTIFICATION_CHARS]}.{ticket_id}@{sender.domain}>"
    msg.set_content(body, charset="utf-8")
    _mark_automatic(msg, sender, AUTO_GENERATED)
    return msg


def locale_of_languages(languages: list[str] | tuple[str, ...]) -> str:
    """A roster entry's language list → the locale of mail to that person (their first one)."""
    return choose_locale(languages[0]) if languages else ZH_CN


def local_minute(moment: datetime, zone: tzinfo) -> str:
    """``2026-03-02 17:30 (UTC+08:00)``: to the minute, with an offset no reader can misread."""
    local = moment.astimezone(zone)
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M} (UTC{offset[:3]}:{offset[3:]})"


def _minutes_between(now: datetime, later: datetime) -> int:
    return max(0, round((later - now).total_seconds() / 60))


# -- building blocks -------------------------------------------------------------------------

def _render(kind: str, locale: str, **values: Any) -> tuple[str, str]:
    template = _templates.get_template(f"{kind}.{locale}.txt.j2")
    context = template.new_context(values)
    subject = "".join(template.blocks["subject"](context))
    body = "".join(template.blocks["body"](context))
    return _one_line(subject), body.strip() + "\n"


def _render_html(kind: str, locale: str, **values: Any) -> str | None:
    """The HTML alternative of a mail, or None for a kind without one."""
    try:
        template = _templates.get_template(f"{kind}.{locale}.html.j2")
    except TemplateNotFound:
        return None
    return "".join(template.blocks["body"](template.new_context(values))).strip() + "\n"


def _with_customer_message(thread: Thread, contact: Contact) -> Thread:
    if thread.customer_message_id or not contact.customer_message_id:
        return thread
    return Thread(subject=thread.subject, customer_message_id=contact.customer_message_id,
                  ack_message_id=thread.ack_message_id, last_reply_message_id=thread.last_reply_message_id)


def _thread_onto(msg: EmailMessage, thread: Thread) -> None:
    parent = thread.parent()
    if parent:
        msg["In-Reply-To"] = parent
        msg["References"] = " ".join(thread.references())


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


def _mark_automatic(msg: EmailMessage, sender: Sender, auto_submitted: str) -> None:
    loop_safety.mark_automatic(msg, sender.address, auto_submitted)


def _recipient(name: str, address: str) -> Address | None:
    try:
        return Address(display_name=_one_line(name), addr_spec=address.strip())
    except (ValueError, IndexError, MessageError):  # what the stdlib raises for a malformed address
        return None


def _required_recipient(name: str, address: str | None) -> Address:
    recipient = _recipient(name, address or "")
    if recipient is None:
        raise ValueError("recipient address is missing or malformed (check loop_safety.skip_reason first)")
    return recipient


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _local_time(moment: datetime, zone: tzinfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")
