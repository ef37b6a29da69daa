"""What a bounce says: which recipients failed, why, how permanently, and for which message of ours.

:func:`parse_bounce` reads two shapes. Pure: no I/O, no clock, and it never raises (a bounce is
machine mail from strangers' servers; whatever it contains, the answer is a report or None).

1. A delivery status notification (RFC 3464): ``multipart/report; report-type=delivery-status``
   or any ``message/delivery-status`` part (Postfix, Exim, Exchange, Gmail, Sendmail, QQ's
   newer servers). Per recipient: ``Original-Recipient`` (the address *we* sent to) else
   ``Final-Recipient``, ``Action``, ``Status``, ``Diagnostic-Code``; ``Reporting-MTA`` once.
   Recipients whose ``Action`` is ``delivered``/``relayed``/``expanded`` did not fail and are
   left out.
2. A plain-text bounce from a mailer-daemon/postmaster (qmail, Exim without DSN, QQ/163's
   Chinese notices): best effort on the body: qmail's ``<addr>:`` lines, Exim's indented
   addresses after "address(es) failed", ``收件人：addr``, and the first SMTP reply line
   (``550 …``) as the reason; Exim's ``X-Failed-Recipients`` header when present.

Hard or soft: ``Status`` 5.x.x is permanent (hard), 4.x.x transient (soft); without a status the
failure is hard only when the diagnostic carries a 5xx SMTP reply code.

The bounced message's Message-ID (without angle brackets, like ``NormalizedMail.message_id``)
comes from the attached ``message/rfc822`` or ``text/rfc822-headers`` part, else an
``X-Original-Message-ID`` / ``Original-Message-ID`` header, else a ``Message-ID:`` line in the
body's copy of the original (text bounces quote it).
"""
from __future__ import annotations

import email
import email.policy
import email.utils
import re
from dataclasses import dataclass
from email.message import Message

from services.intake_email.automatic import BOUNCE_SENDERS
from services.intake_email.normalize import decode_bytes, decode_header_value, message_id_of, parse_message

REASON_MAX_CHARS = 500  # MailBounced.reason
MAX_RECIPIENTS = 50  # MailBounced.recipients
MAX_PARTS_WALKED = 200
MAX_TEXT_SCANNED = 64 * 1024  # the facts are at the top of a bounce; don't regex a whole attachment
NOT_FAILED_ACTIONS = {"delivered", "relayed", "expanded"}

_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered mail|delivery status notification|mail delivery (?:failed|failure|subsystem)"
    r"|failure notice|returned mail|delivery failure|could not be delivered|系统退信|退信|投递失败|未能送达",
    re.IGNORECASE)
_ADDRESS = r"[^\s@<>()\[\],;:\"']+@[^\s@<>()\[\],;:\"']+\.[A-Za-z0-9-]+"
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"(?<![\d.])([245])\d\d(?:[\s-]|$)")
_SMTP_LINE = re.compile(r"(?<![\d.])[45]\d\d(?:[\s-]|$)")
_MESSAGE_ID_LINE = re.compile(r"^message-id:\s*<([^<>\s]+)>", re.IGNORECASE | re.MULTILINE)
_QMAIL_RECIPIENT = re.compile(rf"^<({_ADDRESS})>:\s*$", re.MULTILINE)
_EXIM_FAILED = re.compile(r"address(?:\(es\)|es)?\s+failed:?\s*$", re.IGNORECASE | re.MULTILINE)
_INDENTED_ADDRESS = re.compile(rf"^[ \t]+<?({_ADDRESS})>?\s*$")
_LABELLED_RECIPIENT = re.compile(
    rf"(?:收件人|收信人|original-recipient|final-recipient|recipient(?:\s+address)?)\s*[:：]\s*"
    rf"(?:rfc822\s*;\s*)?<?({_ADDRESS})>?", re.IGNORECASE)
_ADDRESS_IN_SMTP_LINE = re.compile(rf"<({_ADDRESS})>")
_QUOTED_ORIGINAL = re.compile(
    r"^.*(?:this is a copy of the message|below this line is a copy|original message follows"
    r"|-{3,}\s*original message|原邮件|原始邮件).*$", re.IGNORECASE | re.MULTILINE)
_WS = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class BounceReport:
    """One bounce: failed ``recipients`` (lowercased), the DSN ``status`` ("" if none), the one-line
    ``reason``, ``hard`` (permanent), the bounced mail's ``original_message_id`` and who reported it."""

    recipients: tuple[str, ...]
    status: str
    reason: str
    hard: bool
    original_message_id: str | None
    reporting_mta: str


def parse_bounce(msg: Message | bytes) -> BounceReport | None:
    """The bounce's report, or None for mail that is not a bounce or names no failed recipient."""
    try:
        if isinstance(msg, (bytes, bytearray)):
            msg = parse_message(msg)
        if not isinstance(msg, Message):
            return None
        return _from_dsn(msg) or _from_text(msg)
    except Exception:  # noqa: BLE001 - the contract: any input, an answer, never an exception
        return None


# --- 1. delivery status notifications -------------------------------------------------------


@dataclass
class _Recipient:
    address: str
    status: str
    diagnostic: str
    action: str


def _from_dsn(msg: Message) -> BounceReport | None:
    dsn = next((p for p in _parts(msg) if p.get_content_type() == "message/delivery-status"), None)
    if dsn is None:
        return None
    blocks = _field_blocks(dsn)
    if not blocks:
        return None
    reporting_mta = _after_type(_field(blocks[0], "reporting-mta"))
    failed: list[_Recipient] = []
    for block in blocks:
        address = _address_of(_field(block, "original-recipient")) or _address_of(_field(block, "final-recipient"))
        if not address:
            continue
        action = _field(block, "action").lower()
        if action in NOT_FAILED_ACTIONS:
            continue
        status = _status(_field(block, "status"))
        failed.append(_Recipient(address, status, _one_line(_after_type(_field(block, "diagnostic-code"))), action))
    if not failed:
        return None
    # One report per bounce: the first failure speaks for it (MTAs group recipients by cause).
    first = failed[0]
    reason = first.diagnostic or _one_line(first.action) or _text_reason(_body_text(msg))
    status = first.status or _status(first.diagnostic)
    return BounceReport(
        recipients=_unique(r.address for r in failed),
        status=status,
        reason=reason[:REASON_MAX_CHARS],
        hard=_is_hard(status, first.diagnostic or reason, delayed=first.action == "delayed"),
        original_message_id=_original_message_id(msg),
        reporting_mta=reporting_mta[:255],
    )


def _field_blocks(part: Message) -> list[dict[str, str]]:
    """The DSN's field groups (per-message first, then one per recipient), names lowercased."""
    payload = part.get_payload()
    if isinstance(payload, list):  # the stdlib parsed each group as a header block
        return [{k.lower(): _text(v) for k, v in block.items()} for block in payload if isinstance(block, Message)]
    raw = part.get_payload(decode=True)
    text = decode_bytes(raw, "utf-8") if isinstance(raw, (bytes, bytearray)) else str(payload or "")
    blocks = []
    for chunk in re.split(r"\r?\n\s*\r?\n", text[:MAX_TEXT_SCANNED]):
        fields = email.message_from_string(chunk.strip() + "\n", policy=email.policy.compat32)
        if fields.keys():
            blocks.append({k.lower(): _text(v) for k, v in fields.items()})
    return blocks


def _field(block: dict[str, str], name: str) -> str:
    return _one_line(block.get(name, ""))


def _after_type(value: str) -> str:
    """``rfc822; a@b`` → ``a@b``; ``smtp; 550 …`` → ``550 …``; ``dns; mx.example`` → ``mx.example``."""
    kind, sep, rest = value.partition(";")
    return rest.strip() if sep and " " not in kind.strip() else value.strip()


def _address_of(value: str) -> str:
    candidate = _after_type(value).strip().strip("<>").strip().lower()
    return candidate if re.fullmatch(_ADDRESS, candidate) and len(candidate) <= 320 else ""


def _status(value: str) -> str:
    found = _STATUS.search(value)
    return found.group(0) if found else ""


# --- 2. text bounces --------------------------------------------------------------------------


def _from_text(msg: Message) -> BounceReport | None:
    if not _looks_like_text_bounce(msg):
        return None
    text = _body_text(msg)
    head = text[:_QUOTED_ORIGINAL.search(text).start()] if _QUOTED_ORIGINAL.search(text) else text
    recipients = _failed_recipients_header(msg) or _text_recipients(head)
    if not recipients:
        return None
    reason = _text_reason(head)
    status = _status(reason) or _status(head)
    return BounceReport(
        recipients=recipients,
        status=status,
        reason=reason[:REASON_MAX_CHARS],
        hard=_is_hard(status, reason, delayed=False),
        original_message_id=_original_message_id(msg, body=text),
        reporting_mta=_sender_domain(msg)[:255],
    )


def _looks_like_text_bounce(msg: Message) -> bool:
    sender = _sender(msg)
    local = sender.rpartition("@")[0] if "@" in sender else sender
    return local in BOUNCE_SENDERS or msg.get("X-Failed-Recipients") is not None or bool(_BOUNCE_SUBJECT.search(decode_header_value(_text(msg.get("Subject", "")))))


def _failed_recipients_header(msg: Message) -> tuple[str, ...]:
    """Exim's ``X-Failed-Recipients: a@x, b@y`` (on every bounce it sends, DSN or not)."""
    values = [_text(v) for v in msg.get_all("X-Failed-Recipients") or []]
    return _unique(a.lower() for a in re.findall(_ADDRESS, " ".join(values).replace(",", " ")))


def _text_recipients(text: str) -> tuple[str, ...]:
    found = [m.lower() for m in _QMAIL_RECIPIENT.findall(text)]
    exim = _EXIM_FAILED.search(text)
    if exim:
        for line in text[exim.end():].splitlines()[1:]:
            if not line.strip():
                if found:
                    break
                continue
            address = _INDENTED_ADDRESS.match(line)
            if address:
                found.append(address.group(1).lower())
            elif not line[:1].isspace():
                break
    found += [m.lower() for m in _LABELLED_RECIPIENT.findall(text)]
    if not found:  # last resort: the address inside the SMTP server's refusal
        for line in text.splitlines():
            if _SMTP_LINE.search(line):
                found += [m.lower() for m in _ADDRESS_IN_SMTP_LINE.findall(line)]
    return _unique(found)


def _text_reason(text: str) -> str:
    """The first SMTP reply line (``550 5.1.1 …``), else the line after a "reason" label."""
    lines = text[:MAX_TEXT_SCANNED].splitlines()
    for line in lines:
        stripped = line.strip()
        cut = re.search(r"(?<![\d.])[45]\d\d(?:[\s-]|$)", stripped)
        if cut and (cut.start() == 0 or re.search(r"said:|error|response|reply|:$|:\s", stripped[:cut.start()],
                                                  re.IGNORECASE)):
            return _one_line(stripped[cut.start():])
    for i, line in enumerate(lines):
        label = re.match(r"\s*(?:退信原因|失败原因|reason)\s*[:：]?\s*(.*)$", line, re.IGNORECASE)
        if label:
            rest = label.group(1).strip() or next((n.strip() for n in lines[i + 1:i + 4] if n.strip()), "")
            return _one_line(rest)
    return ""


# --- shared pieces -----------------------------------------------------------------------------


def _is_hard(status: str, diagnostic: str, *, delayed: bool) -> bool:
    if status:
        return status.startswith("5")
    if delayed:
        return False
    code = _SMTP_CODE.search(diagnostic)
    return bool(code and code.group(1) == "5")


def _original_message_id(msg: Message, body: str = "") -> str | None:
    for part in _parts(msg, into_messages=False):
        ctype = part.get_content_type()
        headers: Message | None = None
        if ctype == "message/rfc822":
            inner = part.get_payload()
            headers = inner[0] if isinstance(inner, list) and inner and isinstance(inner[0], Message) else None
        elif ctype == "text/rfc822-headers":
            raw = part.get_payload(decode=True)
            text = decode_bytes(raw, None) if isinstance(raw, (bytes, bytearray)) else str(part.get_payload())
            headers = email.message_from_string(text[:MAX_TEXT_SCANNED], policy=email.policy.compat32)
        if headers is not None:
            found = message_id_of(headers.get("Message-ID"))
            if found:
                return found
    for name in ("X-Original-Message-ID", "Original-Message-ID"):
        found = message_id_of(msg.get(name))
        if found:
            return found
    line = _MESSAGE_ID_LINE.search(body[:MAX_TEXT_SCANNED]) if body else None
    return line.group(1) if line and len(line.group(1)) <= 998 else None


def _parts(msg: Message, *, into_messages: bool = False):
    """The message's parts, breadth first; attached messages are entered only when asked (a
    bounce's copy of the original is not part of the report)."""
    pending, seen = [msg], 0
    while pending and seen < MAX_PARTS_WALKED:
        part = pending.pop(0)
        seen += 1
        yield part
        if part.get_content_maintype() == "multipart" or (into_messages and part.get_content_type() == "message/rfc822"):
            children = part.get_payload()
            if isinstance(children, list):
                pending.extend(c for c in children if isinstance(c, Message))


def _body_text(msg: Message) -> str:
    """The bounce's own text parts (not the attached original), decoded and joined."""
    texts = []
    for part in _parts(msg):
        if part.get_content_type() == "text/plain":
            raw = part.get_payload(decode=True)
            if isinstance(raw, (bytes, bytearray)):
                charset = part.get_param("charset")
                texts.append(decode_bytes(bytes(raw[:MAX_TEXT_SCANNED]), charset if isinstance(charset, str) else None))
    return "\n".join(texts).replace("\r\n", "\n")


def _sender(msg: Message) -> str:
    _name, address = email.utils.parseaddr(_text(msg.get("From", "")))
    return address.strip().lower()


def _sender_domain(msg: Message) -> str:
    return _sender(msg).rpartition("@")[2]


def _unique(addresses) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for address in addresses:
        seen.setdefault(address, None)
    return tuple(seen)[:MAX_RECIPIENTS]


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def _one_line(value: str) -> str:
    return _WS.sub(" ", _CONTROL.sub(" ", value)).strip()
