"""Asterisk call detail records (``Master.csv`` from cdr_csv) → calls, for backfill.

cdr_csv writes one line per CDR, no header, every text field quoted (``""`` inside), times as
``YYYY-MM-DD HH:MM:SS`` in the PBX's local time (UTC with ``usegmtime=yes``), an unanswered
call's answer time empty. The columns, in order (cdr_csv.c ``build_csv_record``)::

    accountcode, src, dst, dcontext, clid, channel, dstchannel, lastapp, lastdata,
    start, answer, end, duration, billsec, disposition, amaflags,
    [uniqueid]        with loguniqueid=yes   (required here: it is what makes the import idempotent)
    [userfield]       with loguserfield=yes
    [peeraccount, linkedid, sequence]        with newcdrcolumns=yes

so a usable file has 17, 18, 20 or 21 columns. A call can leave several rows with the same
``uniqueid`` (each agent a queue rang, a transfer); they are one call here.

What a row says about the call (CDRs have no direction: the policy's inbound contexts and line
numbers decide, see PhonePolicy.cdr_is_inbound):

- ``lastapp`` VoiceMail → the voicemail took it;
- ``ANSWERED`` with a ``dstchannel`` → an agent answered (no wrap-up in a CDR: no ticket);
- ``ANSWERED`` without one, in ``Queue`` → the caller gave up waiting in the queue (abandoned:
  missed); in anything else (an IVR, an announcement) the system served the call: no ticket;
- ``NO ANSWER`` / ``BUSY`` / ``FAILED`` / ``CONGESTION`` → missed.

Each usable call becomes the same CallEvents the webhook would have produced (newCall at start,
answer at answer, hangup at end), with ``uniqueid`` as the call id, so a PBX whose CTI webhook
uses the Asterisk uniqueid as ``callId`` never gets a call ticketed twice. Pure: the time zone
is passed in, nothing is written.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import Iterable, Iterator

from services.intake_phone.calls import VOICEMAIL, CallEvent
from services.intake_phone.phone_numbers import InvalidNumber, Number, normalize
from services.intake_phone.policy import PhonePolicy

BASE_COLUMNS = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
                "start", "answer", "end", "duration", "billsec", "disposition", "amaflags")
# Column count → the optional columns after amaflags (all with loguniqueid=yes).
LAYOUTS = {
    17: ("uniqueid",),
    18: ("uniqueid", "userfield"),
    20: ("uniqueid", "peeraccount", "linkedid", "sequence"),
    21: ("uniqueid", "userfield", "peeraccount", "linkedid", "sequence"),
}
DISPOSITIONS = ("ANSWERED", "NO ANSWER", "BUSY", "FAILED", "CONGESTION")
# Generic CTI hang-up causes for the unanswered dispositions.
_CAUSES = {"NO ANSWER": "noAnswer", "BUSY": "busy", "FAILED": "congestion", "CONGESTION": "congestion"}
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
FIELD_MAX_CHARS = 1024
UNIQUEID_MAX_CHARS = 150


class CdrFileError(ValueError):
    """The file as a whole cannot be imported (nothing is)."""


@dataclass(frozen=True)
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class CdrRow:
    line: int
    src: str
    dst: str
    dcontext: str
    clid: str
    dstchannel: str
    lastapp: str
    lastdata: str
    start: datetime
    answer: datetime | None
    end: datetime
    disposition: str
    uniqueid: str


@dataclass
class CdrCall:
    """One call: the rows sharing a ``uniqueid``, combined."""

    call_id: str
    lines: list[int]
    caller: Number
    dialled: Number | None
    context: str
    queue: str = ""
    start: datetime | None = None
    end: datetime | None = None
    agent: str = ""                       # who answered (an agent's channel), if anyone
    answered_at: datetime | None = None
    voicemail_at: datetime | None = None
    served_by_system: bool = False         # answered by an IVR/announcement, nobody needed
    causes: list[str] = field(default_factory=list)

    def events(self) -> list[tuple[CallEvent, datetime]]:
        """The webhook events this call would have produced, with their times."""
        assert self.start is not None and self.end is not None
        ident = dict(call_id=self.call_id, direction="in", from_number=self.caller, to_number=self.dialled,
                     queue=self.queue, context=self.context)
        out: list[tuple[CallEvent, datetime]] = [(CallEvent(kind="newCall", **ident), self.start)]  # type: ignore[arg-type]
        if self.agent and self.answered_at:
            out.append((CallEvent(kind="answer", users=(self.agent,), **ident), self.answered_at))  # type: ignore[arg-type]
            cause = "normalClearing"
        elif self.voicemail_at:
            out.append((CallEvent(kind="answer", users=(VOICEMAIL,), **ident), self.voicemail_at))  # type: ignore[arg-type]
            cause = "normalClearing"
        elif self.causes or not self.served_by_system:
            # Rung and not answered (or given up on in a queue), even if an IVR served it first.
            cause = self.causes[0] if self.causes else "noAnswer"
        else:
            out.append((CallEvent(kind="answer", users=("ivr",), **ident), self.start))  # type: ignore[arg-type]
            cause = "normalClearing"
        out.append((CallEvent(kind="hangup", cause=cause, **ident), self.end))  # type: ignore[arg-type]
        return out


@dataclass
class CdrBatch:
    calls: list[CdrCall]
    errors: list[RowError]
    rows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)   # why rows were left out (not errors)


def decode(raw: bytes) -> str:
    """UTF-8, or GB18030 for a PBX that writes Chinese caller names that way."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", "replace")


def _time(value: str, name: str, zone: tzinfo, *, optional: bool = False) -> datetime | None:
    if not value and optional:
        return None
    try:
        return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=zone).astimezone(timezone.utc)
    except ValueError:
        raise ValueError(f"{name}: {value[:40]!r} is not a time (YYYY-MM-DD HH:MM:SS)") from None


def _int(value: str, name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name}: {value[:40]!r} is not a whole number") from None
    if number < 0:
        raise ValueError(f"{name}: {number} is negative")
    return number


def _row(line: int, values: list[str], columns: tuple[str, ...], zone: tzinfo) -> CdrRow:
    data = dict(zip(columns, values))
    for name, value in data.items():
        if len(value) > FIELD_MAX_CHARS:
            raise ValueError(f"{name} is longer than {FIELD_MAX_CHARS} characters")
        if "\x00" in value:
            raise ValueError(f"{name} contains a NUL character")
    uniqueid = data["uniqueid"].strip()
    if not uniqueid:
        raise ValueError("uniqueid is empty")
    if len(uniqueid) > UNIQUEID_MAX_CHARS:
        raise ValueError(f"uniqueid is longer than {UNIQUEID_MAX_CHARS} characters")
    disposition = data["disposition"].strip().upper()
    if disposition not in DISPOSITIONS:
        raise ValueError(f"disposition: {data['disposition'][:40]!r} is not one of {', '.join(DISPOSITIONS)}")
    start = _time(data["start"].strip(), "start", zone)
    end = _time(data["end"].strip(), "end", zone)
    answer = _time(data["answer"].strip(), "answer", zone, optional=True)
    assert start is not None and end is not None
    if end < start:
        raise ValueError(f"end {data['end']!r} is before start {data['start']!r}")
    _int(data["duration"].strip(), "duration")
    _int(data["billsec"].strip(), "billsec")
    return CdrRow(line=line, src=data["src"].strip(), dst=data["dst"].strip(), dcontext=data["dcontext"].strip(),
                  clid=data["clid"], dstchannel=data["dstchannel"].strip(), lastapp=data["lastapp"].strip(),
                  lastdata=data["lastdata"].strip(), start=start, answer=answer, end=end,
                  disposition=disposition, uniqueid=uniqueid)


def read_rows(text: str, zone: tzinfo) -> Iterator[CdrRow | RowError]:
    """Every record of the file, parsed, or the reason it cannot be (with its line number).

    The layout is taken from the first record; a first record with a column count cdr_csv
    does not write (or without uniqueid: 16 columns) makes the whole file unusable.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    columns: tuple[str, ...] | None = None
    while True:
        start_line = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield RowError(start_line, f"not a CSV record: {exc}")
            continue
        if not values or values == [""]:
            continue
        if columns is None:
            if len(values) == len(BASE_COLUMNS):
                raise CdrFileError(f"line {start_line}: 16 columns, no uniqueid: set loguniqueid=yes in the [csv] "
                                   "section of cdr.conf (the import needs each call's uniqueid to be idempotent)")
            if len(values) not in LAYOUTS:
                raise CdrFileError(f"line {start_line}: {len(values)} columns; Asterisk Master.csv has 17, 18, 20 "
                                   "or 21 (accountcode, src, dst, dcontext, clid, channel, dstchannel, lastapp, "
                                   "lastdata, start, answer, end, duration, billsec, disposition, amaflags, "
                                   "uniqueid[, userfield][, peeraccount, linkedid, sequence])")
            columns = BASE_COLUMNS + LAYOUTS[len(values)]
        if len(values) != len(columns):
            yield RowError(start_line, f"{len(values)} columns, the file's first record has {len(columns)}")
            continue
        try:
            yield _row(start_line, values, columns, zone)
        except ValueError as exc:
            yield RowError(start_line, str(exc))


def _dialled(dst: str, region: str) -> Number | None:
    """``dst`` is the dialplan extension: a DID, a queue or ``s``; only a number is a number."""
    try:
        number = normalize(dst, region)
    except InvalidNumber:
        return None
    return number if number.kind == "e164" else None


def _queue(row: CdrRow) -> str:
    if row.lastapp.casefold() != "queue":
        return ""
    return row.lastdata.replace("|", ",").split(",")[0].strip()


def _agent(dstchannel: str) -> str:
    """``SIP/8001-0000001a`` → ``SIP/8001`` (the channel's unique suffix says nothing to a person)."""
    head, _, tail = dstchannel.rpartition("-")
    return head if head and tail and all(c in "0123456789abcdefABCDEF;" for c in tail) else dstchannel


def calls_from_rows(items: Iterable[CdrRow | RowError], policy: PhonePolicy, region: str) -> CdrBatch:
    """Group the inbound rows into calls by uniqueid; outbound/internal rows are counted as skipped."""
    by_id: dict[str, CdrCall] = {}
    batch = CdrBatch(calls=[], errors=[])
    for item in items:
        if isinstance(item, RowError):
            batch.errors.append(item)
            continue
        batch.rows += 1
        row = item
        dialled = _dialled(row.dst, region)
        if not policy.cdr_is_inbound(context=row.dcontext, to_number=dialled.value if dialled else ""):
            batch.skipped["not_inbound"] = batch.skipped.get("not_inbound", 0) + 1
            continue
        try:
            caller = normalize(row.src, region)
        except InvalidNumber as exc:
            batch.errors.append(RowError(row.line, f"src: {exc}"))
            continue
        call = by_id.get(row.uniqueid)
        if call is None:
            call = by_id[row.uniqueid] = CdrCall(call_id=row.uniqueid, lines=[], caller=caller, dialled=dialled,
                                                  context=row.dcontext)
            batch.calls.append(call)
        _merge(call, row, dialled)
    return batch


def _merge(call: CdrCall, row: CdrRow, dialled: Number | None) -> None:
    call.lines.append(row.line)
    call.start = min(call.start, row.start) if call.start else row.start
    call.end = max(call.end, row.end) if call.end else row.end
    call.queue = call.queue or _queue(row)
    call.dialled = call.dialled or dialled
    answered_at = row.answer or row.start
    if row.lastapp.casefold() == VOICEMAIL:
        call.voicemail_at = min(call.voicemail_at, answered_at) if call.voicemail_at else answered_at
    elif row.disposition == "ANSWERED" and row.dstchannel:
        if call.answered_at is None or answered_at < call.answered_at:
            call.agent, call.answered_at = _agent(row.dstchannel), answered_at
    elif row.disposition == "ANSWERED" and row.lastapp.casefold() == "queue":
        call.causes.append("cancel")   # answered by the queue (music on hold), then the caller gave up
    elif row.disposition == "ANSWERED":
        call.served_by_system = True
    else:
        call.causes.append(_CAUSES[row.disposition])
