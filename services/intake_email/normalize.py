"""Raw RFC 5322 bytes → :class:`NormalizedMail`, the fields a ticket needs. Pure: no I/O, no clock.

Real mail is messy, so this module is lenient where a reader would be and strict only where a
ticket cannot exist without it:

- headers are decoded by hand (RFC 2047 encoded words in any charset, adjacent words of one
  charset joined *before* decoding because senders split multi-byte characters across words,
  raw 8-bit headers tried as UTF-8 then GB18030);
- charset labels are mapped to the codec real senders mean: gb2312/gbk → gb18030 (Chinese
  mail labelled gb2312 routinely contains GBK-only characters), big5 → big5hkscs, ...;
  whenever the label had to be overruled or guessed, a ``charset_flags`` entry says so
  (``body-mislabelled:gb2312->utf-8``, ``header-8bit-guessed:gb18030``,
  ``charset-unknown:x-foo``, ``body-undecodable:utf-8``) so "why is this text garbled?" has
  an answer;
- the body is the text/plain parts when they say anything, else the HTML parts as text; the
  HTML is also kept, sanitized (``htmltext.sanitize_html``); ``reply_text`` is the new part of
  the body without quoted history and signature (``quoting.split_reply``);
- attachments (and everything under them, e.g. an attached message) are listed with their
  bytes as :class:`MailPart`, not read as body;
- the message is parsed once (the caller may hand in the message :func:`parse_message` already
  made, so intake parses each mail once); every part is visited once;
- before the stdlib parser runs, :func:`check_shape` refuses shapes whose parsing cost grows
  without bound (hundreds of nested multiparts, hundreds of thousands of parts, megabyte
  headers): the parser is synchronous and would block the service's event loop for seconds;
- anything that cannot become a ticket (no sender address, no header section, a multipart
  without a usable boundary, too large, a hostile shape, not bytes) raises :class:`MailRejected`
  with a one-line reason. No other exception leaves :func:`normalize`: the caller quarantines
  and moves on.
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
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from functools import lru_cache

from services.intake_email.htmltext import html_to_text, sanitize_html
from services.intake_email.quoting import split_reply

DEFAULT_MAX_BYTES = 25 * 1024 * 1024
SUBJECT_MAX_CHARS = 1000  # TicketReceived.subject
TEXT_MAX_CHARS = 200_000  # TicketReceived.text
NAME_MAX_CHARS = 200  # Customer.name
EMAIL_MAX_CHARS = 320  # Customer.email
MESSAGE_ID_MAX_CHARS = 998  # one RFC 5322 line
MAX_MIME_DEPTH = 20
NO_SUBJECT = ""
FILENAME_MAX_CHARS = 255  # Attachment.filename
MAX_ADDRESSES = 200
MAX_THREAD_IDS = 500  # like thread_match.MAX_CHAIN: a hostile References header can hold thousands
# Pre-parse limits (check_shape). The feedparser tests every line against every open boundary,
# so its cost is lines x nesting; these bound it far above anything a mail client sends.
MAX_BOUNDARIES = 64  # "boundary=" declarations in the whole message (nesting past 20 is not read anyway)
MAX_BOUNDARY_LINE_WORK = 4_000_000  # declarations x lines (~1 s of parsing): a 25 MB base64 mail with 12 multiparts fits
MAX_PART_DELIMITERS = 5_000  # lines opening a part ("--<boundary>"); files.MAX_LISTED lists 200
MAX_HEADER_SECTION_BYTES = 512 * 1024  # top-level header section (long Received/ARC chains are ~50 KB)
MAX_HEADER_FIELD_BYTES = 128 * 1024  # one header field with its folded lines (500 References ~ 30 KB)

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
_CHARSET_LABEL = re.compile(r"[A-Za-z0-9._:+-]{1,40}")
_NOT_CHARSETS = {"idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined", "mbcs", "oem"}
_UNKNOWN_CHARSETS = {"unknown-8bit", "x-unknown", "unknown", "default", "charset", ""}

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_WS = re.compile(r"\s+")
_ANGLE_ID = re.compile(r"<([^<>\s]+)>")
_BOUNDARY_DECLARATION = re.compile(rb"boundary\s*(?:\*\d*\*?)?\s*=")
_BOUNDARY_PARAM = re.compile(rb"boundary\s*(?:\*\d*\*?)?\s*=\s*\"?([^\"\s;]{1,200})")
# "Name" <a@b>, Name <a@b>, <a@b> or a@b: one mailbox, no comments, no groups.
_SIMPLE_MAILBOX = re.compile(
    r'\s*(?:"([^"\\]*)"|([^",<>;:\\()@]*?))\s*<([^<>\s",;:\\()]+@[^<>\s",;:\\()]+)>\s*'
    r'|\s*([^<>\s",;:\\()]+@[^<>\s",;:\\()]+)\s*')
_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BLANK_RUNS = re.compile(r"\n{3,}")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")
_LATIN_LETTER = re.compile(r"[A-Za-z\u00c0-\u024f]")
_EIGHT_BIT = re.compile(rb"[\x80-\xff]")
_GB_PAIR = re.compile(rb"[\x81-\xfe][\x80-\xfe]")
# Codecs whose ASCII-only input still needs decoding (escape sequences), so no ASCII shortcut.
_STATEFUL_CODECS = {"iso2022_jp", "iso2022_jp_1", "iso2022_jp_2", "iso2022_jp_2004", "iso2022_jp_3",
                    "iso2022_jp_ext", "iso2022_kr", "utf-7", "hz", "utf-16", "utf-32", "utf-16-be",
                    "utf-16-le", "utf-32-be", "utf-32-le"}
# Non-MIME leaves that are reports or attached mail, never the customer's words.
_MESSAGE_ATTACHMENT_TYPES = {"message/delivery-status", "message/disposition-notification",
                             "message/feedback-report", "message/global-delivery-status",
                             "message/global-headers", "text/rfc822-headers"}
# One Han character carries about as much as a short English word (~4 letters).
_HAN_WEIGHT = 4


class MailRejected(Exception):
    """This message cannot become a ticket; ``reason`` says why in one line (kept with the raw mail)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class MailPart:
    """An attachment or inline image as sent. ``data`` is the decoded content (not in repr/eq)."""

    filename: str  # decoded; "" when the sender gave none
    content_type: str  # lowercased maintype/subtype
    size: int  # len(data)
    content_id: str | None  # without angle brackets; set for inline images (cid: in the HTML)
    inline: bool  # Content-Disposition inline, or a Content-ID without a disposition
    data: bytes = field(default=b"", repr=False, compare=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class NormalizedMail:
    from_email: str
    from_name: str
    subject: str
    text: str  # the whole body as text (quotes included)
    message_id: str | None  # without angle brackets
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    received_at: datetime
    language: str  # "zh" or "en"
    attachments: tuple[MailPart, ...]
    fingerprint: str  # hash of Date/From/Subject as sent: part of the key of mail without a Message-ID
    to_addresses: tuple[str, ...] = ()  # lowercased: To, Cc, Delivered-To, X-Original-To (deduped, in order)
    reply_to: tuple[str, ...] = ()  # lowercased Reply-To addresses
    reply_text: str = ""  # the new part only: quoted history and signature removed; == text when none
    html_sanitized: str | None = None  # None when the mail had no HTML body
    charset_flags: tuple[str, ...] = ()  # where a charset label was overruled or guessed

    @property
    def thread_candidates(self) -> tuple[str, ...]:
        """Message-IDs this mail answers, most specific first (In-Reply-To, then References right to
        left), at most :data:`MAX_THREAD_IDS`."""
        seen: dict[str, None] = {}
        for mid in (*self.in_reply_to, *reversed(self.references)):
            if mid != self.message_id:
                seen.setdefault(mid, None)
                if len(seen) >= MAX_THREAD_IDS:
                    break
        return tuple(seen)


class _RawHeaders(email.policy.Compat32):
    """compat32 parsing, but header values come back exactly as sent (we decode them ourselves)."""

    def header_fetch_parse(self, name: str, value: str) -> str:  # type: ignore[override]
        return value


_POLICY = _RawHeaders()


class _Flags(list):
    """charset_flags being collected: each flag once, in the order first seen."""

    def add(self, flag: str) -> None:
        if flag not in self:
            self.append(flag)


def check_shape(raw: bytes) -> None:
    """Raise :class:`MailRejected` for a message whose *parsing* alone would take seconds.

    Cheap byte counts only (a few passes of ``bytes.count``/``find`` over the raw mail): too many
    ``boundary=`` declarations, too many declarations times lines (the feedparser checks each
    line against every open boundary), too many part delimiter lines, an over-long header
    section or header field. Every limit is far above what mail clients send.
    """
    lowered = raw.lower()
    boundaries = sum(1 for _ in _BOUNDARY_DECLARATION.finditer(lowered))
    if boundaries > MAX_BOUNDARIES:
        raise MailRejected(f"hostile MIME shape: {boundaries} boundary declarations; the limit is {MAX_BOUNDARIES}")
    lines = raw.count(b"\n") + 1
    if boundaries * lines > MAX_BOUNDARY_LINE_WORK:
        raise MailRejected(f"hostile MIME shape: {boundaries} boundary declarations over {lines} lines")
    delimiters = raw.count(b"\n--")
    if delimiters > MAX_PART_DELIMITERS:
        # Lines starting "--" are also signatures, SQL comments and rules: count real delimiters.
        declared = {m.group(1).strip() for m in _BOUNDARY_PARAM.finditer(lowered)}
        delimiters = sum(lowered.count(b"\n--" + b) for b in declared if b)
        if delimiters > MAX_PART_DELIMITERS:
            raise MailRejected(f"hostile MIME shape: {delimiters} part delimiters; the limit is {MAX_PART_DELIMITERS}")
    _check_header_section(raw[:MAX_HEADER_SECTION_BYTES + 4])


def _check_header_section(head: bytes) -> None:
    ends = [i for i in (head.find(b"\n\n"), head.find(b"\n\r\n")) if i >= 0]
    if ends:
        head = head[:min(ends) + 1]
    elif len(head) > MAX_HEADER_SECTION_BYTES:
        raise MailRejected(f"header section over {MAX_HEADER_SECTION_BYTES} bytes")
    field_bytes = 0
    for line in head.split(b"\n"):
        field_bytes = field_bytes + len(line) + 1 if line[:1] in (b" ", b"\t") else len(line) + 1
        if field_bytes > MAX_HEADER_FIELD_BYTES:
            name = line.split(b":", 1)[0][:40].decode("ascii", "replace") if line[:1] not in (b" ", b"\t") else ""
            raise MailRejected(f"header field {name or '(folded)'} over {MAX_HEADER_FIELD_BYTES} bytes")


def parse_message(raw: bytes) -> Message:
    """:func:`check_shape`, then the stdlib parser with header values kept exactly as sent.

    The one parse intake does: :func:`automatic.parse` calls this and hands the result on to
    :func:`normalize` (``parsed=``). Raises :class:`MailRejected` for a hostile shape.
    """
    raw = bytes(raw)
    check_shape(raw)
    return email.message_from_bytes(raw, policy=_POLICY)


def normalize(raw: bytes, *, received_at: datetime, max_bytes: int = DEFAULT_MAX_BYTES,
              allow_remote_images: bool = False, sender_from_reply_to: bool = False,
              our_address: str = "", parsed: Message | None = None) -> NormalizedMail:
    """Parse ``raw`` into a :class:`NormalizedMail` or raise :class:`MailRejected`; nothing else.

    ``parsed`` is ``raw`` already parsed by :func:`parse_message` (e.g. :func:`automatic.parse`'s
    result): it is used as is instead of parsing again. ``allow_remote_images`` keeps http(s)
    images in ``html_sanitized``; ``sender_from_reply_to`` takes the sender from a Reply-To naming
    exactly one valid address other than the sender and ``our_address`` (mail sent by a form or a
    shared system on a person's behalf).
    """
    try:
        return _normalize(raw, received_at=received_at, max_bytes=max_bytes, parsed=parsed,
                          allow_remote_images=allow_remote_images, sender_from_reply_to=sender_from_reply_to,
                          our_address=our_address.strip().lower())
    except MailRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - the contract: bad input is a rejection, never a crash
        raise MailRejected(f"unparseable message ({type(exc).__name__}: {str(exc)[:200]})") from exc


def _normalize(raw: bytes, *, received_at: datetime, max_bytes: int, allow_remote_images: bool,
               sender_from_reply_to: bool, our_address: str, parsed: Message | None) -> NormalizedMail:
    if not isinstance(raw, (bytes, bytearray)):
        raise MailRejected(f"message is {type(raw).__name__}, not bytes")
    if not raw.strip():
        raise MailRejected("empty message")
    if len(raw) > max_bytes:
        raise MailRejected(f"message is {len(raw)} bytes; the limit is {max_bytes}")
    msg = parsed if isinstance(parsed, Message) else parse_message(raw)
    if not msg.keys():
        raise MailRejected("no header section")
    for defect in msg.defects:
        if isinstance(defect, email.errors.NoBoundaryInMultipartDefect):
            raise MailRejected("multipart message without a boundary parameter")
        if isinstance(defect, email.errors.StartBoundaryNotFoundDefect):
            raise MailRejected("multipart body where the declared boundary never appears")

    flags = _Flags()
    from_name, from_email = _sender(msg, flags)
    reply_to = _addresses(msg, ("Reply-To",), flags)
    if sender_from_reply_to and len(reply_to) == 1 and reply_to[0][1] not in (from_email, our_address):
        from_name, from_email = reply_to[0]
    subject = _clean_line(decode_header_value(_header(msg, "Subject"), flags))[:SUBJECT_MAX_CHARS]
    body = _Body(flags)
    body.read(msg)
    text = body.text()[:TEXT_MAX_CHARS]
    html = body.html()
    language = guess_language(subject, text)
    return NormalizedMail(
        from_email=from_email,
        from_name=from_name[:NAME_MAX_CHARS],
        subject=subject,
        text=text,
        message_id=message_id_of(_header(msg, "Message-ID")),
        in_reply_to=message_ids_in(_header(msg, "In-Reply-To")),
        references=message_ids_in(_header(msg, "References")),
        received_at=received_at,
        language=language,
        attachments=tuple(body.attachments),
        fingerprint=hashlib.sha256("\0".join(
            _unfold(_header(msg, name)) for name in ("Date", "From", "Subject")).encode("utf-8", "surrogateescape")
        ).hexdigest()[:32],
        to_addresses=tuple(address for _name, address in _addresses(
            msg, ("To", "Cc", "Delivered-To", "X-Original-To"), flags)),
        reply_to=tuple(address for _name, address in reply_to),
        reply_text=split_reply(text)[0] if text else "",
        html_sanitized=sanitize_html(html, allow_remote_images=allow_remote_images) if html is not None else None,
        charset_flags=tuple(flags),
    )


# --- charsets and headers -----------------------------------------------------------------------

@lru_cache(maxsize=256)
def codec_for(charset: str | None) -> str | None:
    """The Python codec for a MIME charset label, or None when the label is missing or unknown."""
    if not charset:
        return None
    label = _label(charset)
    if label in _UNKNOWN_CHARSETS or not _CHARSET_LABEL.fullmatch(label):
        return None  # "\x00" or a 10 kB label: codecs.lookup would raise ValueError or be the wrong tool
    label = _CHARSET_ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    # A label naming a bytes transform (base64, zlib) or a Python-only codec is not a charset.
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None
    return info.name


def _label(charset: str) -> str:
    return charset.strip().strip("\"'").lower().split("*", 1)[0]  # RFC 2231 "utf-8*zh-cn"


def _flag_label(charset: str) -> str:
    """The label as it may appear in a flag: printable, short."""
    return re.sub(r"[^a-z0-9._:+-]", "?", _label(charset))[:40]


def decode_bytes(data: bytes, charset: str | None, flags: _Flags | None = None, where: str = "body") -> str:
    """Decode by the declared charset, overruling it where the bytes prove it wrong.

    Valid UTF-8 with 8-bit bytes is taken as UTF-8 whatever the label says: legacy text is almost
    never valid UTF-8 by accident, while UTF-8 labelled gb2312 or iso-8859-1 is common (and would
    decode "successfully" into mojibake). Every overrule or guess is added to ``flags``.
    """
    codec = codec_for(charset)
    if codec is None and charset and _label(charset) not in _UNKNOWN_CHARSETS and flags is not None:
        flags.add(f"charset-unknown:{_flag_label(charset)}")
    if codec not in _STATEFUL_CODECS and data.isascii():
        return data.decode("ascii")
    if codec in _STATEFUL_CODECS:
        try:
            return data.decode(codec)
        except (UnicodeError, LookupError):
            pass
    elif codec:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            if codec != "utf-8" and flags is not None:
                flags.add(f"{where}-mislabelled:{_flag_label(charset)}->utf-8")
            return text
        try:
            return data.decode(codec)
        except (UnicodeError, LookupError):
            pass
    # Chinese legacy text is the usual mislabelled 8-bit mail here, then Western (cp1252 decodes
    # almost anything, so it comes last).
    if codec and codec not in _STATEFUL_CODECS:
        guesses: tuple[str, ...] = ("gb18030", "cp1252") if codec == "utf-8" else ()
    else:
        guesses = ("utf-8", "gb18030", "cp1252")
    for guess in guesses:
        if guess == "gb18030" and not _looks_like_gb(data):
            continue
        try:
            text = data.decode(guess)
        except UnicodeError:
            continue
        if flags is not None:
            if codec:
                flags.add(f"{where}-mislabelled:{_flag_label(charset)}->{guess}")
            else:
                flags.add(f"{where}-8bit-guessed:{guess}")
        return text
    fallback = codec if codec and codec not in _STATEFUL_CODECS else "cp1252"
    if flags is not None:
        flags.add(f"{where}-undecodable:{fallback}")
    return data.decode(fallback, errors="replace")


def _looks_like_gb(data: bytes) -> bool:
    # Chinese text is runs of two-byte characters (both bytes high in GB2312's range); Western
    # 8-bit text has lone accented letters between ASCII ones, which gb18030 would also "decode".
    high = len(_EIGHT_BIT.findall(data))
    pairs = len(_GB_PAIR.findall(data))
    return pairs * 2 * 10 >= high * 7


def _unfold(value: str) -> str:
    return _FOLD.sub("", value) if "\n" in value else value


def _raw_8bit_to_text(value: str, flags: _Flags | None = None) -> str:
    # The parser smuggles undeclared 8-bit header bytes through as surrogates; decode them for real.
    if value.isascii() or not any("\udc80" <= ch <= "\udcff" for ch in value):
        return value
    return decode_bytes(value.encode("ascii", "surrogateescape"), None, flags, "header")


def _decode_word(kind: str, payload: str) -> bytes:
    if kind in "bB":
        payload = payload.rstrip("=")
        try:
            return base64.b64decode(payload + "=" * (-len(payload) % 4))
        except (binascii.Error, ValueError):
            return payload.encode("ascii", "replace")
    return quopri.decodestring(payload.replace("_", " ").encode("ascii", "replace"), header=True)


def decode_header_value(value: str | None, flags: _Flags | None = None) -> str:
    """Unfold and decode a header: RFC 2047 words (adjacent same-charset words joined as bytes)."""
    if not value:
        return ""
    text = _raw_8bit_to_text(_unfold(value), flags)
    if "=?" not in text:
        return text
    out: list[str] = []
    pending: tuple[str | None, bytearray] = (None, bytearray())
    pos = 0

    def flush() -> None:
        nonlocal pending
        charset, buf = pending
        if buf:
            out.append(decode_bytes(bytes(buf), charset, flags, "header"))
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


def _addresses(msg: Message, names: tuple[str, ...], flags: _Flags) -> list[tuple[str, str]]:
    """(decoded display name, lowercased address) of every valid address in these headers, deduped."""
    found: dict[str, str] = {}
    for name in names:
        for value in msg.get_all(name) or ():
            if not isinstance(value, str):
                continue
            # Parse the structure before decoding words: a decoded name may contain commas and brackets.
            value = _raw_8bit_to_text(_unfold(value), flags)
            # The common case without the full RFC 5322 parser (short values only: bounded regex work).
            simple = _SIMPLE_MAILBOX.fullmatch(value) if len(value) <= 300 else None
            pairs = ([(simple.group(1) or simple.group(2) or "", simple.group(3) or simple.group(4))] if simple
                     else email.utils.getaddresses([value]))
            for display, address in pairs:
                address = address.strip().strip("<>").lower()
                if address not in found and _ADDRESS.match(address) and len(address) <= EMAIL_MAX_CHARS:
                    found[address] = _clean_line(decode_header_value(display, flags)).strip("\"' ")
                    if len(found) >= MAX_ADDRESSES:
                        return [(n, a) for a, n in found.items()]
    return [(n, a) for a, n in found.items()]


def _sender(msg: Message, flags: _Flags) -> tuple[str, str]:
    for header in ("From", "Sender", "Reply-To", "Return-Path"):
        found = _addresses(msg, (header,), flags)
        if found:
            return found[0]
    raise MailRejected("no sender address (From, Sender, Reply-To and Return-Path are missing or invalid)")


def message_id_of(value: object) -> str | None:
    """The Message-ID in a header value, without angle brackets: the first ``<id>``, else the value
    itself when it is one bare token; None when there is none or it is longer than a line."""
    text = _WS.sub(" ", _CONTROL.sub(" ", value if isinstance(value, str) else str(value or ""))).strip()
    found = _ANGLE_ID.search(text)
    mid = found.group(1) if found else (text if text and " " not in text else None)
    return mid if mid and len(mid) <= MESSAGE_ID_MAX_CHARS else None


def message_ids_in(value: object) -> tuple[str, ...]:
    """Every ``<id>`` in a header value (In-Reply-To, References), in order, without angle brackets."""
    text = _CONTROL.sub(" ", _unfold(value if isinstance(value, str) else str(value or "")))
    return tuple(i for i in _ANGLE_ID.findall(text) if len(i) <= MESSAGE_ID_MAX_CHARS)


# --- body ---------------------------------------------------------------------------------------

def _disposition(part: Message) -> str:
    return _header(part, "Content-Disposition").split(";", 1)[0].strip().lower()


def _raw_filename(part: Message) -> str | tuple | None:
    for param, header in (("filename", "content-disposition"), ("name", "content-type")):
        value = part.get_param(param, header=header)
        if value:
            return value
    return None


def _filename(part: Message, flags: _Flags) -> str:
    """The decoded filename: RFC 2231 ``filename*=`` (any charset), RFC 2047 words, raw 8-bit bytes."""
    value = _raw_filename(part)
    if not value:
        return ""
    if isinstance(value, tuple):  # RFC 2231: (charset, language, %-decoded text as latin-1)
        charset, _language, text = value
        data = text.encode("latin-1", "surrogateescape") if isinstance(text, str) else b""
        name = decode_bytes(data, charset or None, flags, "header")
    else:
        name = decode_header_value(email.utils.unquote(value), flags)
    # A path is not a name: keep the last component only.
    name = _clean_line(name).replace("\\", "/").rsplit("/", 1)[-1]
    return name[:FILENAME_MAX_CHARS]


def _content_id(part: Message) -> str | None:
    value = _unfold(_header(part, "Content-ID")).strip()
    if not value:
        return None
    found = _ANGLE_ID.search(value)
    return (found.group(1) if found else value)[:255] or None


def _charset(part: Message) -> str | None:
    charset = part.get_param("charset")
    if isinstance(charset, tuple):  # RFC 2231 form: (charset, language, value)
        charset = email.utils.collapse_rfc2231_value(charset)
    return charset if isinstance(charset, str) else None


class _Body:
    """One walk over the MIME tree: text/plain and text/html body parts, and the attachments."""

    def __init__(self, flags: _Flags):
        self.flags = flags
        self.plain: list[str] = []
        self.html_parts: list[str] = []
        self.attachments: list[MailPart] = []

    def read(self, msg: Message) -> None:
        self._visit(msg, 0)

    def text(self) -> str:
        text = "\n\n".join(p for p in self.plain if p.strip())
        if not text.strip() and self.html_parts:
            text = html_to_text("\n".join(self.html_parts))
        return _tidy(text)

    def html(self) -> str | None:
        return "\n".join(self.html_parts) if self.html_parts else None

    def _visit(self, part: Message, depth: int) -> None:
        if depth > MAX_MIME_DEPTH:
            return
        ctype = part.get_content_type()
        disposition = _disposition(part)
        if depth and (disposition == "attachment" or ctype in _MESSAGE_ATTACHMENT_TYPES):
            self._attach(part, ctype, disposition)
            return
        if part.is_multipart():
            payload = part.get_payload()
            for child in payload if isinstance(payload, list) else ():
                if isinstance(child, Message):
                    self._visit(child, depth + 1)
            return
        if ctype in ("text/plain", "text/html") and not (depth and _raw_filename(part)):
            (self.plain if ctype == "text/plain" else self.html_parts).append(self._decode_text(part))
        else:  # any other leaf, even a bare top-level PDF, is a file the customer sent
            self._attach(part, ctype, disposition)

    def _decode_text(self, part: Message) -> str:
        data = part.get_payload(decode=True)
        if not isinstance(data, (bytes, bytearray)):
            payload = part.get_payload()
            return payload if isinstance(payload, str) else ""
        return decode_bytes(bytes(data), _charset(part), self.flags, "body")

    def _attach(self, part: Message, ctype: str, disposition: str) -> None:
        data = _part_bytes(part)
        content_id = _content_id(part)
        self.attachments.append(MailPart(
            filename=_filename(part, self.flags),
            content_type=ctype[:255],
            size=len(data),
            content_id=content_id,
            inline=disposition == "inline" or (not disposition and content_id is not None),
            data=data,
        ))


def _part_bytes(part: Message) -> bytes:
    """The decoded content of a leaf, or the re-serialized message for an attached mail."""
    try:
        if part.is_multipart():
            payload = part.get_payload()
            if part.get_content_maintype() == "message" and isinstance(payload, list) and len(payload) == 1:
                return payload[0].as_bytes()
            return part.as_bytes()
        data = part.get_payload(decode=True)
        return bytes(data) if isinstance(data, (bytes, bytearray)) else b""
    except Exception:  # noqa: BLE001 - an unserializable attached part is listed with no content
        return b""


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
