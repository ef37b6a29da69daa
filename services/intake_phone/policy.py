"""What becomes of a call, per line or queue: the phone policy file (``deploy/config/phone.yaml``).

A *line* is a hotline (the numbers customers dial), a PBX queue, or the Asterisk dialplan
contexts its calls arrive in. For each line the file says what a missed or abandoned call, a
voicemail and an answered call (with the agent's wrap-up) turn into, and for how long repeated
missed calls from one number fold into one callback ticket. Wrap-up codes say whether an
answered call was resolved while the customer was on the line.

The file is read whole and checked before use; an error names the file, the line entry (by
position and name) and the field: ``phone policy deploy/config/phone.yaml: line 2 'vip':
numbers: '12-34' is not a phone number``. Pure: no Redis, no clock.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.config_files import ConfigFileError, describe_validation_error, read_yaml, repeated_names

from services.intake_phone.phone_numbers import InvalidNumber, normalize

MissedAction = Literal["callback", "ignore"]
VoicemailAction = Literal["ticket", "ignore"]
AnsweredAction = Literal["wrap_up", "ignore"]
WrapUpOutcome = Literal["resolved", "open"]
DEFAULT_LINE_NAME = "default"
FOLD_WINDOW_MAX_MINUTES = 7 * 24 * 60
DEFAULT_INBOUND_CONTEXTS = ("from-trunk", "from-pstn", "from-did-direct", "from-external")


class PhonePolicyError(ConfigFileError):
    """The phone policy file cannot be used; the message names the file, the line and the field."""


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, (str, int)) else value


class _Actions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    missed: MissedAction | None = None
    voicemail: VoicemailAction | None = None
    answered: AnsweredAction | None = None
    fold_window_minutes: int | None = Field(default=None, ge=0, le=FOLD_WINDOW_MAX_MINUTES)


class _Line(_Actions):
    name: str = Field(min_length=1, max_length=100)
    numbers: list[str | int] = Field(default_factory=list)
    queues: list[str] = Field(default_factory=list)
    cdr_contexts: list[str] = Field(default_factory=list)

    @field_validator("numbers", "queues", "cdr_contexts", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _listify(value)


class _WrapUpCodes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    resolved: list[str] = Field(default_factory=list)
    open: list[str] = Field(default_factory=list)
    unknown: WrapUpOutcome = "open"

    @field_validator("resolved", "open", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _listify(value)


class _Cdr(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "Asia/Shanghai"
    inbound_contexts: list[str] = Field(default_factory=lambda: list(DEFAULT_INBOUND_CONTEXTS))

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone name (e.g. Asia/Shanghai, UTC)") from None
        return value

    @field_validator("inbound_contexts", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _listify(value)


class _Defaults(_Actions):
    missed: MissedAction = "callback"
    voicemail: VoicemailAction = "ticket"
    answered: AnsweredAction = "wrap_up"
    fold_window_minutes: int = Field(default=30, ge=0, le=FOLD_WINDOW_MAX_MINUTES)


class _PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: _Defaults = Field(default_factory=_Defaults)
    lines: list[_Line] = Field(default_factory=list)
    wrap_up_codes: _WrapUpCodes = Field(default_factory=_WrapUpCodes)
    cdr: _Cdr = Field(default_factory=_Cdr)


@dataclass(frozen=True)
class LinePolicy:
    """What calls on one line become. ``fold_window_seconds`` 0 = every missed call its own ticket."""

    name: str
    missed: MissedAction = "callback"
    voicemail: VoicemailAction = "ticket"
    answered: AnsweredAction = "wrap_up"
    fold_window_seconds: int = 30 * 60
    numbers: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()      # casefolded
    cdr_contexts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PhonePolicy:
    default: LinePolicy = field(default_factory=lambda: LinePolicy(DEFAULT_LINE_NAME))
    lines: tuple[LinePolicy, ...] = ()
    resolved_codes: frozenset[str] = frozenset()   # casefolded
    open_codes: frozenset[str] = frozenset()
    unknown_code: WrapUpOutcome = "open"
    cdr_timezone: str = "Asia/Shanghai"
    inbound_contexts: frozenset[str] = frozenset(DEFAULT_INBOUND_CONTEXTS)

    def line_for(self, *, queue: str = "", to_number: str = "", context: str = "") -> LinePolicy:
        """The line a call belongs to: by queue (most specific), then dialled number, then the
        CDR's dialplan context; calls no line claims follow ``defaults``."""
        wanted = queue.strip().casefold()
        for matches in (lambda line: bool(wanted) and wanted in line.queues,
                        lambda line: bool(to_number) and to_number in line.numbers,
                        lambda line: bool(context) and context in line.cdr_contexts):
            for line in self.lines:
                if matches(line):
                    return line
        return self.default

    def wrap_up_outcome(self, code: str) -> tuple[WrapUpOutcome, bool]:
        """``(outcome, known)`` for a wrap-up code: resolved on first contact, or left open. An
        empty or unknown code gets ``wrap_up_codes.unknown`` (default open: a person looks)."""
        key = code.strip().casefold()
        if key in self.resolved_codes:
            return "resolved", True
        if key in self.open_codes:
            return "open", True
        return self.unknown_code, False

    def cdr_is_inbound(self, *, context: str, to_number: str) -> bool:
        """A CDR row is a call from outside when it arrived in an inbound dialplan context or
        dialled one of our lines' numbers (CDRs have no direction field)."""
        if context and (context in self.inbound_contexts or any(context in l.cdr_contexts for l in self.lines)):
            return True
        return bool(to_number) and any(to_number in line.numbers for line in self.lines)


def _line_error(data: Any, index: int, message: str) -> str:
    lines = data.get("lines") if isinstance(data, Mapping) else None
    name = lines[index].get("name") if isinstance(lines, list) and isinstance(lines[index], Mapping) else None
    return f"line {index + 1}" + (f" {name!r}" if name else "") + f": {message}"


def parse_policy(data: Any, *, default_region: str, origin: str = "phone policy") -> PhonePolicy:
    """Check and build the policy; numbers are normalized to E.164 with ``default_region``."""
    if data is None:
        data = {}  # an empty file: every default
    if not isinstance(data, Mapping):
        raise PhonePolicyError(f"{origin}: expected a mapping (defaults, lines, wrap_up_codes, cdr), "
                               f"got {type(data).__name__}")
    try:
        parsed = _PolicyFile.model_validate(data)
    except ValidationError as exc:
        message = describe_validation_error(data, exc, list_key="lines", entry_label="line")
        raise PhonePolicyError(f"{origin}: {message}") from None
    duplicates = repeated_names([line.name for line in parsed.lines] + [DEFAULT_LINE_NAME])
    if duplicates:
        raise PhonePolicyError(f"{origin}: line names must be unique (and not {DEFAULT_LINE_NAME!r}), "
                               f"repeated: {', '.join(duplicates)}")
    d = parsed.defaults
    claimed: dict[tuple[str, str], str] = {}
    lines = []
    for index, line in enumerate(parsed.lines):
        numbers = set()
        for raw in line.numbers:
            try:
                number = normalize(str(raw), default_region)
            except InvalidNumber as exc:
                raise PhonePolicyError(f"{origin}: " + _line_error(data, index, f"numbers: {exc}")) from None
            if number.kind == "hidden":
                raise PhonePolicyError(f"{origin}: " + _line_error(data, index, f"numbers: {raw!r} is not a number"))
            numbers.add(number.value)
        queues = {q.strip().casefold() for q in line.queues if q.strip()}
        contexts = {c.strip() for c in line.cdr_contexts if c.strip()}
        for kind, values in (("number", numbers), ("queue", queues), ("cdr context", contexts)):
            for value in values:
                other = claimed.setdefault((kind, value), line.name)
                if other != line.name:
                    raise PhonePolicyError(f"{origin}: " + _line_error(
                        data, index, f"{kind} {value!r} already belongs to line {other!r}"))
        lines.append(LinePolicy(
            name=line.name,
            missed=line.missed or d.missed, voicemail=line.voicemail or d.voicemail,
            answered=line.answered or d.answered,
            fold_window_seconds=60 * (line.fold_window_minutes if line.fold_window_minutes is not None
                                      else d.fold_window_minutes),
            numbers=frozenset(numbers), queues=frozenset(queues), cdr_contexts=frozenset(contexts),
        ))
    codes = parsed.wrap_up_codes
    resolved = {c.strip().casefold() for c in codes.resolved if c.strip()}
    open_ = {c.strip().casefold() for c in codes.open if c.strip()}
    both = sorted(resolved & open_)
    if both:
        raise PhonePolicyError(f"{origin}: wrap_up_codes: {', '.join(both)} cannot be both resolved and open")
    return PhonePolicy(
        default=LinePolicy(DEFAULT_LINE_NAME, missed=d.missed, voicemail=d.voicemail, answered=d.answered,
                           fold_window_seconds=60 * d.fold_window_minutes),
        lines=tuple(lines), resolved_codes=frozenset(resolved), open_codes=frozenset(open_),
        unknown_code=codes.unknown, cdr_timezone=parsed.cdr.timezone,
        inbound_contexts=frozenset(c.strip() for c in parsed.cdr.inbound_contexts if c.strip()),
    )


def parse_policy_text(text: str, *, default_region: str, origin: str) -> PhonePolicy:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PhonePolicyError(f"{origin} is not valid YAML: {exc}") from None
    return parse_policy(data, default_region=default_region, origin=origin)


def load_policy(path: str | Path, *, default_region: str) -> PhonePolicy:
    return parse_policy(read_yaml(path, "phone policy", PhonePolicyError), default_region=default_region,
                        origin=f"phone policy {path}")
