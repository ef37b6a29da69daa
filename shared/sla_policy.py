"""SLA policies: which targets a ticket gets (first matching policy wins), in business time.

File format (``deploy/config/sla.yaml`` by default; every key is documented there)::

    calendars_file: calendars.yaml             # optional, relative to this file; "always" is built in
    policies:
      - name: vip P1
        when: {customer_tier: [vip], priority: [P1]}   # optional: priority, channel, customer_tier, category
        calendar: cn-support                   # default "always" (24x7)
        first_response: 1h                     # seconds, or "90s" / "15m" / "4h" / "1h30m": business time
        next_response: 2h                      # optional: customer message after an agent reply → next reply
        resolution: 8h                         # optional: received → resolved
        warn_at: [0.5, 0.8]                    # fractions of each target; default [0.8]
        escalation:                            # the ladder a breach walks; offsets after the breach, business time
          - {after: 0, action: notify_supervisor}
          - {after: 30m, action: raise_priority, to: P1}
          - {after: 1h, action: reassign_next_tier}        # optional to: L2 | duty_manager
          - {after: 2h, action: notify_duty_manager}
        reopen_escalation_hours: 24            # a reopen or second contact this soon after resolution escalates
        reopen_escalation: [{action: notify_supervisor}]   # default: notify_supervisor
      - name: fallback                         # no conditions: matches everything
        first_response: 4h

Without ``escalation`` a breach keeps the earlier behaviour: ``reassign_next_tier`` at the
breach, unless ``escalate_on_breach: false``.

``load_policies`` resolves each policy's calendar, so :func:`expected_first_response` (the
dispatcher's queue order, the notifier's acknowledgement) and the SLA watcher's clocks come to
the same business-time due.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.business_calendar import ALWAYS, BusinessCalendar, CalendarError, parse_calendars
from shared.config_files import ConfigFileError, describe_validation_error, repeated_names

DEFAULT_WARN_AT = (0.8,)
FIRST_RESPONSE, NEXT_RESPONSE, RESOLUTION = "first_response", "next_response", "resolution"
CLOCK_NAMES = (FIRST_RESPONSE, NEXT_RESPONSE, RESOLUTION)
PRIORITIES = ("P1", "P2", "P3", "P4")
TIERS = ("L1", "L2", "duty_manager")
ACTIONS = ("notify_assignee", "notify_supervisor", "raise_priority", "reassign_next_tier", "notify_duty_manager")
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$")


class PolicyError(ConfigFileError):
    """The SLA policy file cannot be used; the message names the file and the policy."""


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``90s``, ``15m``, ``4h``, ``1h30m``."""
    if isinstance(value, bool):
        raise ValueError(f"expected seconds or a duration like '15m', got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and any(match.groups()) and value.strip():
            hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
            return hours * 3600 + minutes * 60 + seconds
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"expected seconds or a duration like '90s', '15m', '4h', '1h30m', got {value!r}")


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class _When(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    priority: list[Literal["P1", "P2", "P3", "P4"]] | None = None
    channel: list[Literal["email", "chat", "phone"]] | None = None
    customer_tier: list[str] | None = None
    category: list[str] | None = None

    @field_validator("priority", "channel", "customer_tier", "category", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _listify(value)


class _Rung(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    after: float = 0.0
    action: Literal["notify_assignee", "notify_supervisor", "raise_priority", "reassign_next_tier",
                    "notify_duty_manager"]
    to: str | None = None

    @field_validator("after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        seconds = parse_duration(value)
        if seconds < 0:
            raise ValueError("must not be negative")
        return seconds

    @model_validator(mode="after")
    def _target(self) -> "_Rung":
        if self.action == "raise_priority" and self.to not in PRIORITIES:
            raise ValueError(f"raise_priority needs to: one of {', '.join(PRIORITIES)}")
        if self.action == "reassign_next_tier" and self.to is not None and self.to not in TIERS:
            raise ValueError(f"reassign_next_tier to: is one of {', '.join(TIERS)} (or left out: the next tier)")
        if self.action.startswith("notify_") and self.to is not None:
            raise ValueError(f"{self.action} takes no to:")
        return self


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    when: _When = Field(default_factory=_When)
    calendar: str = Field(default="always", min_length=1, max_length=64)
    first_response: float = Field(gt=0, description="business seconds")
    next_response: float | None = Field(default=None, gt=0)
    resolution: float | None = Field(default=None, gt=0)
    warn_at: list[float] = Field(default_factory=lambda: list(DEFAULT_WARN_AT))
    escalation: list[_Rung] | None = None
    escalate_on_breach: bool = True
    reopen_escalation_hours: float | None = Field(default=None, gt=0)
    reopen_escalation: list[_Rung] | None = None

    @field_validator("first_response", "next_response", "resolution", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return value if value is None else parse_duration(value)

    @field_validator("warn_at")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        for fraction in value:
            if not 0 < fraction < 1:
                raise ValueError(f"warning points are fractions of the target between 0 and 1, got {fraction}")
        if len(set(value)) != len(value):
            raise ValueError("warning points must not repeat")
        return sorted(value)

    @field_validator("escalation")
    @classmethod
    def _ordered(cls, value: list[_Rung] | None) -> list[_Rung] | None:
        if value is not None:
            keys = [(r.after, r.action, r.to) for r in value]
            if len(set(keys)) != len(keys):
                raise ValueError("a rung (after, action, to) must not repeat")
            value = sorted(value, key=lambda r: r.after)  # stable: equal offsets keep file order
        return value

    @model_validator(mode="after")
    def _reopen(self) -> "_Policy":
        if self.reopen_escalation is not None:
            if self.reopen_escalation_hours is None:
                raise ValueError("reopen_escalation needs reopen_escalation_hours")
            if any(r.after for r in self.reopen_escalation):
                raise ValueError("reopen_escalation actions happen at once: no after:")
        return self


class _PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    calendars_file: str | None = None
    policies: list[_Policy] = Field(min_length=1)


@dataclass(frozen=True)
class Rung:
    """One escalation step: ``action`` (with ``to``: a priority or a tier) ``after_seconds`` of
    business time past the breach."""

    after_seconds: float
    action: str
    to: str | None = None


DEFAULT_LADDER = (Rung(0.0, "reassign_next_tier"),)
DEFAULT_REOPEN_ACTIONS = (Rung(0.0, "notify_supervisor"),)


@dataclass(frozen=True)
class Policy:
    name: str
    first_response_seconds: float
    warn_at: tuple[float, ...]
    priorities: frozenset[str] | None = None
    channels: frozenset[str] | None = None
    customer_tiers: frozenset[str] | None = None
    # Without a ladder of its own, a breach asks the dispatcher for the next tier (ticket_escalated).
    escalate_on_breach: bool = True
    categories: frozenset[str] | None = None
    calendar: str = "always"
    next_response_seconds: float | None = None
    resolution_seconds: float | None = None
    escalation: tuple[Rung, ...] | None = None
    reopen_escalation_seconds: float | None = None
    reopen_actions: tuple[Rung, ...] = ()
    # The calendar named above, resolved by load_policies (None: not resolved, see parse_policies).
    business_calendar: BusinessCalendar | None = field(default=None, compare=False, repr=False)

    def matches(self, *, priority: str, channel: str, customer_tier: str, category: str | None = None) -> bool:
        return ((self.priorities is None or priority in self.priorities)
                and (self.channels is None or channel in self.channels)
                and (self.customer_tiers is None or customer_tier in self.customer_tiers)
                and (self.categories is None or category in self.categories))

    def target(self, clock: str) -> float | None:
        """Business seconds of ``clock``'s target, None when this policy does not track it."""
        return {FIRST_RESPONSE: self.first_response_seconds, NEXT_RESPONSE: self.next_response_seconds,
                RESOLUTION: self.resolution_seconds}[clock]

    @property
    def ladder(self) -> tuple[Rung, ...]:
        if self.escalation is not None:
            return self.escalation
        return DEFAULT_LADDER if self.escalate_on_breach else ()


@dataclass(frozen=True)
class SlaConfig:
    """Policies with their calendars resolved, and a digest of the files they came from (the
    same files give the same digest on every replica)."""

    policies: tuple[Policy, ...]
    calendars: Mapping[str, BusinessCalendar]
    digest: str

    def calendar(self, name: str) -> BusinessCalendar | None:
        return self.calendars.get(name)


def _frozen(values: list[str] | None) -> frozenset[str] | None:
    return frozenset(values) if values is not None else None


def _rungs(rungs: list[_Rung] | None) -> tuple[Rung, ...] | None:
    return None if rungs is None else tuple(Rung(r.after, r.action, r.to) for r in rungs)


def parse_policies(data: Any, *, origin: str = "sla policies",
                   calendars: Mapping[str, BusinessCalendar] | None = None) -> tuple[Policy, ...]:
    """Validate the policies. With ``calendars`` every policy's calendar must be one of them and
    is resolved; without, the names are kept unresolved (wall-clock users: the simulator)."""
    if not isinstance(data, Mapping):
        raise PolicyError(f"{origin}: expected a mapping with a 'policies' list, got {type(data).__name__}")
    try:
        parsed = _PolicyFile.model_validate(data)
    except ValidationError as exc:
        message = describe_validation_error(data, exc, list_key="policies", entry_label="policy")
        raise PolicyError(f"{origin}: {message}") from None
    duplicates = repeated_names([p.name for p in parsed.policies])
    if duplicates:
        raise PolicyError(f"{origin}: policy names must be unique, repeated: {', '.join(duplicates)}")
    policies = []
    for index, p in enumerate(parsed.policies, start=1):
        resolved = None
        if calendars is not None:
            resolved = calendars.get(p.calendar)
            if resolved is None:
                known = ", ".join(sorted(calendars))
                raise PolicyError(f"{origin}: policy {index} {p.name!r}: calendar: {p.calendar!r} is not defined "
                                  f"(known: {known}; set calendars_file)")
        elif p.calendar == "always":
            resolved = ALWAYS
        reopen = None if p.reopen_escalation_hours is None else p.reopen_escalation_hours * 3600
        policies.append(Policy(
            name=p.name, first_response_seconds=p.first_response, warn_at=tuple(p.warn_at),
            priorities=_frozen(p.when.priority), channels=_frozen(p.when.channel),
            customer_tiers=_frozen(p.when.customer_tier), categories=_frozen(p.when.category),
            escalate_on_breach=p.escalate_on_breach, calendar=p.calendar, next_response_seconds=p.next_response,
            resolution_seconds=p.resolution, escalation=_rungs(p.escalation), reopen_escalation_seconds=reopen,
            reopen_actions=(_rungs(p.reopen_escalation) or DEFAULT_REOPEN_ACTIONS) if reopen else (),
            business_calendar=resolved,
        ))
    return tuple(policies)


def _read_text(path: Path, what: str, error: type[ConfigFileError]) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8: {exc}") from None


def _yaml(text: str, path: Path, what: str, error: type[ConfigFileError]) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from None


def calendars_path(path: str | Path, data: Any) -> Path | None:
    """The calendars file a policy file names (relative to it), or None."""
    name = data.get("calendars_file") if isinstance(data, Mapping) else None
    return (Path(path).parent / name) if isinstance(name, str) and name else None


def load_sla_config(path: str | Path) -> SlaConfig:
    """Read the policy file and the calendars file it names; raise naming the file and entry."""
    path = Path(path)
    text = _read_text(path, "sla policies", PolicyError)
    data = _yaml(text, path, "sla policies", PolicyError)
    digest = hashlib.sha256(text.encode())
    cal_path = calendars_path(path, data)
    calendars: dict[str, BusinessCalendar] = {"always": ALWAYS}
    if cal_path is not None:
        cal_text = _read_text(cal_path, "calendars", PolicyError)
        digest.update(b"\0" + cal_text.encode())
        try:
            calendars = parse_calendars(_yaml(cal_text, cal_path, "calendars", PolicyError) or {},
                                        origin=f"calendars {cal_path}", base_dir=cal_path.parent)
        except CalendarError as exc:
            raise PolicyError(str(exc)) from None
    policies = parse_policies(data, origin=f"sla policies {path}", calendars=calendars)
    return SlaConfig(policies=policies, calendars=calendars, digest=digest.hexdigest())


def load_policies(path: str | Path) -> tuple[Policy, ...]:
    """The policies of a file, each with its calendar resolved."""
    return load_sla_config(path).policies


def select_policy(policies: tuple[Policy, ...], *, priority: str, channel: str,
                  customer_tier: str = "standard", category: str | None = None) -> Policy | None:
    """The first policy whose conditions all hold, or None."""
    for policy in policies:
        if policy.matches(priority=priority, channel=channel, customer_tier=customer_tier, category=category):
            return policy
    return None


def expected_first_response(policies: tuple[Policy, ...], *, priority: str, channel: str, received_at: datetime,
                            customer_tier: str = "standard", category: str | None = None,
                            calendars: Mapping[str, BusinessCalendar] | None = None) -> datetime | None:
    """When the first response is due for a ticket classified so, or None without a policy.

    The one place the dispatcher (queue order) and the notifier (the acknowledgement's expected
    response time) ask; the SLA watcher's clock comes to the same time: ``received_at`` plus the
    target in the policy's business calendar (a P3 mailed on Friday evening is due on Monday).
    ``calendars`` overrides the calendars the policies were loaded with.
    """
    policy = select_policy(policies, priority=priority, channel=channel, customer_tier=customer_tier,
                           category=category)
    if policy is None:
        return None
    calendar = (calendars or {}).get(policy.calendar) or policy.business_calendar
    if calendar is None:
        raise PolicyError(f"sla policy {policy.name!r}: calendar {policy.calendar!r} was not loaded "
                          f"(use load_policies, or pass calendars=)")
    start = received_at.timestamp()
    return datetime.fromtimestamp(calendar.add_epoch(start, policy.first_response_seconds), tz=timezone.utc)
