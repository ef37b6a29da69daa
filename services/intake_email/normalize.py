"""Raw RFC 5322 bytes → :class:`NormalizedMail`, the fields a ticket needs. Pure: no I/O, no clock.

Real mail is messy, so this module is lenient where a reader would be and strict only where a
ticket cannot exist without it:

- headers are decoded by hand (RFC 2047 encoded words in any charset, adjacent words of one
  charset joined *before* decoding because senders split multi-byte characters across words,
  raw 8-bit headers tried as UTF-8 then GB18030);
- charset labels are mapped to the codec real senders mean: gb2312/gbk → gb18030 (Chinese
  mail labelled gb2312 routinely contains GBK-only characters), big5 → big5hkscs, ...;
- the body is the text/plain parts when they say anything, else the HTML parts as text;
  attachments (and everything under them, e.g. an attached message) are listed, not read;
- anything that cannot become a ticket (no sender address, no header section, a multipart
  without a usable boundary, too large, not bytes) raises :class:`MailRejected` with a one-line
  reason. No other exception leaves :func:`normalize`: the caller quarantines and moves on.
"""
from __future__ import annotations

import base64
import binascii
import codecs
import email
import email.errors
import email.policy
import email.utils
import hashlib
import quopri
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import Message

from services.intake_email.htmltext import html_to_text

DEFAULT_MAX_BYTES = 25 * 1024 * 1024
SUBJECT_MAX_CHARS = 1000  # TicketReceived.subject
TEXT_MAX_CHARS = 200_000  # TicketReceived.text
NAME_MAX_CHARS = 200  # Customer.name
EMAIL_MAX_CHARS = 320  # Customer.email
MESSAGE_ID_MAX_CHARS = 998  # one RFC 5322 line
MAX_MIME_DEPTH = 20
NO_SUBJECT = ""

# Labels seen in the wild → the codec that decodes what those senders actually send.
_CHARSET_ALIASES = {
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "cp936": "gb18030", "ms936": "gb18030",
    "euc-cn": "gb18030", "gb_2312-80": "gb18030", "csgb2312": "gb18030", "chinese": "gb18030",
    "x-euc-cn": "gb18030", "gb2312-80": "gb18030", "hz-gb-2312": "hz",
    "big5": "big5hkscs", "x-big5": "big5hkscs", "cn-big5": "big5hkscs", "big-5": "big5hkscs", "cp950": "cp950",
    "ks_c_5601-1987": "cp949", "euc-kr": "cp949",
    "shift_jis": "cp932", "x-sjis": "cp932", "sjis": "cp932",
    "iso-8859-1": "cp1252", "latin1": "cp1252", "us-ascii": "utf-8", "ascii": "utf-8", "ansi_x3.4-1968": "utf-8",
    "utf8": "utf-8", "unicode-1-1-utf-7": "utf-7",
}
_UNKNOWN_CHARSETS = {"unknown-8bit", "x-unknown", "unknown", "default", "charset", ""}

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_WS = re.compile(r"\s+")
_ANGLE_ID = re.compile(r"<([^<>\s]+)>")
_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BLANK_RUNS = re.compile(r"\n{3,}")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")
_LATIN_LETTER = re.compile(r"[A-Za-z\u00c0-\u024f]")
# One Han character carries about as much as a short English word (~4 letters).
_HAN_WEIGHT = 4


class MailRejected(Exception):
    """This message cannot become a ticket; ``reason`` says why in one line (kept with the raw mail)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class NormalizedMail:
    from_email: str
    from_name: str
    subject: str
    text: str
    message_id: str | None  # without angle brackets
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    received_at: datetime
    language: str  # "zh" or "en"
    attachments: tuple[str, ...]
    fingerprint: str  # hash of Date/From/Subject as sent: part of the key of mail without a Message-ID

    @property
    def thread_candidates(self) -> tuple[str, ...]:
        """Message-IDs this mail answers, most specific first (In-Reply-To, then References right to left)."""
        seen: dict[str, None] = {}
        for mid in (*self.in_reply_to, *reversed(self.references)):
            if mid != self.message_id:
                seen.setdefault(mid, None)
        return tuple(seen)


class _RawHeaders(email.policy.Compat32):
    """compat32 parsing, but header values come back exactly as sent (we decode them ourselves)."""

    def header_fetch_parse(self, name: str, value: str) -> str:  # type: ignore[override]
        return value


_POLICY = _RawHeaders()


def normalize(raw: bytes, *, received_at: datetime, max_bytes: int = DEFAULT_MAX_BYTES) -> NormalizedMail:
    """Parse ``raw`` into a :class:`NormalizedMail` or raise :class:`MailRejected`; nothing else."""
    try:
        return _normalize(raw, received_at=received_at, max_bytes=max_bytes)
    except MailRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - the contract: bad input is a rejection, never a crash
        raise MailRejected(f"unparseable message ({type(exc).__name__}: {str(exc)[:200]})") from exc


def _normalize(raw: bytes, *, received_at: datetime, max_bytes: int) -> NormalizedMail:
    if not isinstance(raw, (bytes, bytearray)):
        raise MailRejected(f"message is {type(raw).__name__}, not bytes")
    if not raw.strip():
        raise MailRejected("empty message")
    if len(raw) > max_bytes:
        raise MailRejected(f"message is {len(raw)} bytes; the limit is {max_bytes}")
    msg = email.message_from_bytes(bytes(raw), policy=_POLICY)
    if not msg.keys():
        raise MailRejected("no header section")
    for defect in msg.defects:
        if isinstance(defect, email.errors.NoBoundaryInMultipartDefect):
            raise MailRejected("multipart message without a boundary parameter")
        if isinstance(defect, email.errors.StartBoundaryNotFoundDefect):
            raise MailRejected("multipart body where the declared boundary never appears")

    from_name, from_email = _sender(msg)
    subject = _clean_line(decode_header_value(_header(msg, "Subject")))[:SUBJECT_MAX_CHARS]
    text = _body_text(msg)
    language = guess_language(subject, text)
    ids = _ANGLE_ID.findall
    return NormalizedMail(
        from_email=from_email,
        from_name=from_name[:NAME_MAX_CHARS],
        subject=subject,
        text=text[:TEXT_MAX_CHARS],
        message_id=_message_id(_header(msg, "Message-ID")),
        in_reply_to=tuple(i for i in ids(_unfold(_header(msg, "In-Reply-To"))) if len(i) <= MESSAGE_ID_MAX_CHARS),
        references=tuple(i for i in ids(_unfold(_header(msg, "References"))) if len(i) <= MESSAGE_ID_MAX_CHARS),
        received_at=received_at,
        language=language,
        attachments=tuple(_attachments(msg)),
        fingerprint=hashlib.sha256("\0".join(
            _unfold(_header(msg, name)) for name in ("Date", "From", "Subject")).encode("utf-8", "surrogateescape")
        ).hexdigest()[:32],
    )


# --- charsets and headers -----------------------------------------------------------------------

def codec_for(charset: str | None) -> str | None:
    """The Python codec for a MIME charset label, or None when the label is missing or unknown."""
    if not charset:
        return None
    label = charset.strip().strip("\"'").lower().split("*", 1)[0]  # RFC 2231 "utf-8*zh-cn"
    if label in _UNKNOWN_CHARSETS:
        return None
    label = _CHARSET_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset; mislabelled UTF-8 is common, so try it when that fails."""
    codec = codec_for(charset)
    if codec:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            pass
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode(codec, errors="replace")
    for guess in ("utf-8", "gb18030"):
        try:
            return data.decode(guess)
        except UnicodeDecodeError:
            continue
    return data.decode("cp1252", errors="replace")


def _unfold(value: str) -> str:
    return _FOLD.sub("", value)


def _raw_8bit_to_text(value: str) -> str:
    # The parser smuggles undeclared 8-bit header bytes through as surrogates; decode them for real.
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        return decode_bytes(value.encode("ascii", "surrogateescape"), None)
    return value


def _decode_word(kind: str, payload: str) -> bytes:
    if kind in "bB":
        payload = payload.rstrip("=")
        try:
            return base64.b64decode(payload + "=" * (-len(payload) % 4))
        except (binascii.Error, ValueError):
            return payload.encode("ascii", "replace")
    return quopri.decodestring(payload.replace("_", " ").encode("ascii", "replace"), header=True)


def decode_header_value(value: str | None) -> str:
    """Unfold and decode a header: RFC 2047 words (adjacent same-charset words joined as bytes)."""
    if not value:
        return ""
    text = _raw_8bit_to_text(_unfold(value))
    out: list[str] = []
    pending: tuple[str | None, bytearray] = (None, bytearray())
    pos = 0

    def flush() -> None:
        nonlocal pending
        charset, buf = pending
        if buf:
            out.append(decode_bytes(bytes(buf), charset))
        pending = (None, bytearray())

    for match in _ENCODED_WORD.finditer(text):
        between = text[pos:match.start()]
        charset, kind, payload = match.groups()
        data = _decode_word(kind, payload)
        # Whitespace between two encoded words is not part of the text (RFC 2047 §6.2).
        if between and not (between.isspace() and pending[1]):
            flush()
            out.append(between)
        if pending[1] and codec_for(pending[0]) != codec_for(charset):
            flush()
        if not pending[1]:
            pending = (charset, bytearray())
        pending[1].extend(data)
        pos = match.end()
    flush()
    out.append(text[pos:])
    return "".join(out)


def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    return value if isinstance(value, str) else ""


def _clean_line(value: str) -> str:
    return _WS.sub(" ", _CONTROL.sub("", value)).strip()


def _sender(msg: Message) -> tuple[str, str]:
    for header in ("From", "Sender", "Reply-To", "Return-Path"):
        raw = _raw_8bit_to_text(_unfold(_header(msg, header)))
        if not raw:
            continue
        # Parse the structure before decoding words: a decoded name may contain commas and brackets.
        for name, address in email.utils.getaddresses([raw]):
            address = address.strip().strip("<>").lower()
            if _ADDRESS.match(address) and len(address) <= EMAIL_MAX_CHARS:
                return _clean_line(decode_header_value(name)).strip("\"' "), address
    raise MailRejected("no sender address (From, Sender, Reply-To and Return-Path are missing or invalid)")


def _message_id(value: str) -> str | None:
    value = _unfold(value).strip()
    found = _ANGLE_ID.search(value)
    mid = found.group(1) if found else (value if value and " " not in value else None)
    return mid if mid and len(mid) <= MESSAGE_ID_MAX_CHARS else None


# --- body ---------------------------------------------------------------------------------------

def _is_attachment(part: Message) -> bool:
    disposition = (_header(part, "Content-Disposition").split(";", 1)[0]).strip().lower()
    return disposition == "attachment" or (bool(part.get_filename()) and disposition != "inline" and
                                           part.get_content_maintype() != "text")


def _leaves(msg: Message, depth: int = 0):
    """Body parts in order, not descending into attachments (an attached mail is not the body)."""
    if depth > MAX_MIME_DEPTH:
        return
    if depth and _is_attachment(msg):
        yield msg, True
        return
    if msg.is_multipart():
        payload = msg.get_payload()
        for child in payload if isinstance(payload, list) else ():
            if isinstance(child, Message):
                yield from _leaves(child, depth + 1)
        return
    yield msg, False


def _part_text(part: Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, (bytes, bytearray)):
        payload = part.get_payload()
        return payload if isinstance(payload, str) else ""
    charset = part.get_param("charset")
    if isinstance(charset, tuple):  # RFC 2231 form: (charset, language, value)
        charset = email.utils.collapse_rfc2231_value(charset)
    return decode_bytes(bytes(data), charset if isinstance(charset, str) else None)


def _body_text(msg: Message) -> str:
    plain: list[str] = []
    html: list[str] = []
    for part, is_attachment in _leaves(msg):
        if is_attachment:
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain" and not part.get_filename():
            plain.append(_part_text(part))
        elif ctype == "text/html":
            html.append(_part_text(part))
    text = "\n\n".join(p for p in plain if p.strip())
    if not text.strip() and html:
        text = html_to_text("\n".join(html))
    return _tidy(text)


def _attachments(msg: Message) -> list[str]:
    names = []
    for part, is_attachment in _leaves(msg):
        ctype = part.get_content_type()
        if is_attachment or ctype not in ("text/plain", "text/html") or (ctype == "text/plain" and part.get_filename()):
            filename = part.get_filename()
            names.append(_clean_line(decode_header_value(filename)) if filename else ctype)
    return names


def _tidy(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    lines = [line.rstrip() for line in text.split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def guess_language(*texts: str) -> str:
    """``zh`` when Han characters carry at least as much of the text as Latin words do, else ``en``."""
    sample = " ".join(texts)[:20_000]
    han = len(_HAN.findall(sample))
    latin = len(_LATIN_LETTER.findall(sample))
    return "zh" if han and han * _HAN_WEIGHT >= latin else "en"
