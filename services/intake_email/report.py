"""What intake makes of one raw message, as plain data: ``ticketmesh email parse`` prints it.

Support teams ask "why did this email become that ticket?" (or no ticket at all). :func:`describe`
runs the same steps as the intake — :func:`automatic.classify`, :func:`normalize.normalize`,
and for bounces :func:`bounces.parse_bounce` — and returns their findings as one JSON-ready dict.
Pure: no I/O, the clock is passed in, and it never raises, whatever the bytes: a message intake
would quarantine comes back as ``{"quarantined": "<reason>", ...}`` with whatever could be read.
A step that *crashes* (where intake would crash too) is not hidden: the answer is then
``{"quarantined": "cannot describe this message (<error>)"}``, which tests treat as a bug.

Keys (always present unless quarantined, where only the readable ones are):

- ``from_email``, ``from_name``, ``subject``, ``text`` (the whole body as text), ``reply_text``
  (the new part only), ``html_sanitized`` (None without an HTML body);
- ``attachments``: ``[{filename, content_type, size, content_id}]``;
- ``message_id``, ``in_reply_to``, ``references`` (ids without angle brackets; each list at most
  ``MAX_IDS_SHOWN``, References keeping its newest, right-most ids);
- ``thread_candidates``: the ids threading tries, most specific first (at most ``MAX_IDS_SHOWN``);
- ``auto_reply``: False or its sort (``vacation``, ``auto-generated``, ``read-receipt``);
- ``bounce``: False or ``{recipients, status, reason, hard, original_message_id}``;
- ``automatic``: False or the quarantine label intake files machine mail under
  (``automatic:<kind>:<signal>``; ``automatic:loop:…`` is our own mail coming back);
- ``charset_flags``: how decoding had to guess (empty when every label was right).
"""
from __future__ import annotations

import email.utils
from datetime import datetime
from email.message import Message
from typing import Any

from services.intake_email import automatic
from services.intake_email.bounces import parse_bounce
from services.intake_email.normalize import (MAX_THREAD_IDS, MailRejected, decode_header_value, message_id_of,
                                             message_ids_in, normalize)

REASON_MAX_CHARS = 300
MAX_IDS_SHOWN = MAX_THREAD_IDS
CANNOT_DESCRIBE = "cannot describe this message"


def describe(raw: bytes, *, our_address: str, received_at: datetime) -> dict[str, Any]:
    """Everything intake reads from ``raw`` (see the module doc); never raises."""
    try:
        return _describe(raw, our_address=our_address, received_at=received_at)
    except Exception as exc:  # noqa: BLE001 - the contract: any input, an answer
        return {"quarantined": _short(f"{CANNOT_DESCRIBE} ({type(exc).__name__}: {exc})")}


def _describe(raw: bytes, *, our_address: str, received_at: datetime) -> dict[str, Any]:
    if not isinstance(raw, (bytes, bytearray)):
        return {"quarantined": f"message is {type(raw).__name__}, not bytes"}
    raw = bytes(raw)
    parsed = automatic.parse(raw)
    # As in intake: classify runs on every parsed message, and if it raised, intake would crash
    # on this mail too, so the crash is not swallowed here (describe() reports it).
    machine = automatic.classify(parsed, our_address=our_address) if parsed is not None else None
    try:
        mail = normalize(raw, received_at=received_at, parsed=parsed)
    except MailRejected as exc:
        out: dict[str, Any] = {"quarantined": _short(exc.reason)}
        if parsed is not None:
            out.update(_readable_headers(parsed))
            out.update(_machine_fields(parsed, machine))
        return out

    in_reply_to = list(mail.in_reply_to)
    references = list(mail.references)
    return {
        "from_email": mail.from_email,
        "from_name": mail.from_name,
        "subject": mail.subject,
        "text": mail.text,
        "reply_text": getattr(mail, "reply_text", mail.text),
        "html_sanitized": getattr(mail, "html_sanitized", None),
        "attachments": [_attachment(part) for part in mail.attachments],
        "message_id": mail.message_id,
        "in_reply_to": in_reply_to[:MAX_IDS_SHOWN],
        "references": references[-MAX_IDS_SHOWN:],
        "thread_candidates": list(mail.thread_candidates)[:MAX_IDS_SHOWN],
        **_machine_fields(parsed, machine),
        "charset_flags": [str(flag) for flag in getattr(mail, "charset_flags", ())],
    }


def _machine_fields(parsed: Message | None, machine: automatic.Automatic | None) -> dict[str, Any]:
    auto_reply: str | bool = False
    bounce: dict | bool = False
    if machine is not None and machine.kind == automatic.AUTO_REPLY:
        auto_reply = machine.reply_kind or automatic.AUTO_GENERATED
    elif machine is not None and machine.kind == automatic.BOUNCE and parsed is not None:
        bounce = _bounce(parsed)
    return {"auto_reply": auto_reply, "bounce": bounce, "automatic": machine.label if machine else False}


def _bounce(parsed: Message) -> dict[str, Any]:
    """The bounce report; a bounce whose details cannot be read is still a bounce, with empty fields."""
    report = parse_bounce(parsed)  # never raises (its contract), as intake relies on
    if report is None:
        return {"recipients": [], "status": None, "reason": None, "hard": None, "original_message_id": None}
    return {
        "recipients": [str(r) for r in report.recipients],
        "status": report.status or None,
        "reason": report.reason or None,
        "hard": bool(report.hard),
        "original_message_id": report.original_message_id,
    }


def _attachment(part: object) -> dict[str, Any]:
    if isinstance(part, str):  # NormalizedMail before attachments became MailPart: a name only
        return {"filename": part, "content_type": None, "size": None, "content_id": None}
    return {
        "filename": getattr(part, "filename", None),
        "content_type": getattr(part, "content_type", None),
        "size": getattr(part, "size", None),
        "content_id": getattr(part, "content_id", None),
    }


def _readable_headers(parsed: Message) -> dict[str, Any]:
    """From, Subject and the ids of a message normalize refused, each read on its own."""
    out: dict[str, Any] = {}
    readers = {
        "from_email": lambda: email.utils.parseaddr(_decoded(parsed, "From"))[1].lower() or None,
        "from_name": lambda: email.utils.parseaddr(_decoded(parsed, "From"))[0] or None,
        "subject": lambda: " ".join(_decoded(parsed, "Subject").split()) or None,
        "message_id": lambda: message_id_of(parsed.get("Message-ID")),
        "in_reply_to": lambda: list(message_ids_in(parsed.get("In-Reply-To")))[:MAX_IDS_SHOWN],
        "references": lambda: list(message_ids_in(parsed.get("References")))[-MAX_IDS_SHOWN:],
    }
    for key, read in readers.items():
        try:
            value = read()
        except Exception:  # noqa: BLE001 - one unreadable header must not hide the others
            continue
        if value:
            out[key] = value
    return out


def _decoded(parsed: Message, name: str) -> str:
    value = parsed.get(name)
    return decode_header_value(value if isinstance(value, str) else str(value)) if value is not None else ""


def _short(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= REASON_MAX_CHARS else line[:REASON_MAX_CHARS - 1] + "…"
