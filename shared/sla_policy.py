"""SLA policies: which first-response target a ticket gets (first matching policy wins).

File format (``deploy/config/sla.yaml`` by default)::

    policies:
      - name: p1 chat
        when: {priority: [P1], channel: [chat]}   # optional; all given conditions must hold
        first_response: 300                        # seconds
        warn_at: [0.5, 0.8]                        # fractions of the target; default [0.8]
        escalate_on_breach: true                   # default: a breach routes the ticket to the next tier
      - name: fallback                             # no conditions: matches everything
        first_response: 14400

Targets are wall-clock seconds for now; business calendars (opening hours, holidays, time
zones) are issue 6.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.config_files import ConfigFileError, describe_validation_error, read_yaml, repeated_names

DEFAULT_WARN_AT = (0.8,)


class PolicyError(ConfigFileError):
    """The SLA policy file cannot be used; the message names the file and the policy."""


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class _When(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    priority: list[Literal["P1", "P2", "P3", "P4"]] | None = None
    channel: list[Literal["email", "chat", "phone"]] | None = None
    customer_tier: list[str] | None = None

    @field_validator("priority", "channel", "customer_tier", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _listify(value)


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    when: _When = Field(default_factory=_When)
    first_response: int = Field(gt=0, description="seconds")
    warn_at: list[float] = Field(default_factory=lambda: list(DEFAULT_WARN_AT))
    escalate_on_breach: bool = True

    @field_validator("warn_at")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        for fraction in value:
            if not 0 < fraction < 1:
                raise ValueError(f"warning points are fractions of the target between 0 and 1, got {fraction}")
        if len(set(value)) != len(value):
            raise ValueError("warning points must not repeat")
        return sorted(value)


class _PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policies: list[_Policy] = Field(min_length=1)


@dataclass(frozen=True)
class Policy:
    name: str
    first_response_seconds: int
    warn_at: tuple[float, ...]
    priorities: frozenset[str] | None = None
    channels: frozenset[str] | None = None
    customer_tiers: frozenset[str] | None = None
    # A breach also asks the dispatcher to route the ticket to the next tier (ticket_escalated).
    escalate_on_breach: bool = True

    def matches(self, *, priority: str, channel: str, customer_tier: str) -> bool:
        return ((self.priorities is None or priority in self.priorities)
                and (self.channels is None or channel in self.channels)
                and (self.customer_tiers is None or customer_tier in self.customer_tiers))


def _frozen(values: list[str] | None) -> frozenset[str] | None:
    return frozenset(values) if values is not None else None


def parse_policies(data: Any, *, origin: str = "sla policies") -> tuple[Policy, ...]:
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
    return tuple(
        Policy(name=p.name, first_response_seconds=p.first_response, warn_at=tuple(p.warn_at),
               priorities=_frozen(p.when.priority), channels=_frozen(p.when.channel),
               customer_tiers=_frozen(p.when.customer_tier), escalate_on_breach=p.escalate_on_breach)
        for p in parsed.policies
    )


def load_policies(path: str | Path) -> tuple[Policy, ...]:
    return parse_policies(read_yaml(path, "sla policies", PolicyError), origin=f"sla policies {path}")


def select_policy(policies: tuple[Policy, ...], *, priority: str, channel: str,
                  customer_tier: str = "standard") -> Policy | None:
    """The first policy whose conditions all hold, or None."""
    for policy in policies:
        if policy.matches(priority=priority, channel=channel, customer_tier=customer_tier):
            return policy
    return None


def expected_first_response(policies: tuple[Policy, ...], *, priority: str, channel: str, received_at: datetime,
                            customer_tier: str = "standard") -> datetime | None:
    """When the first response is due for a ticket classified so, or None without a policy.

    The one place the dispatcher (queue order) and the notifier (the acknowledgement's expected
    response time) ask; the SLA watcher's clock comes to the same time. Wall clock until
    business calendars arrive (issue 6).
    """
    policy = select_policy(policies, priority=priority, channel=channel, customer_tier=customer_tier)
    if policy is None:
        return None
    return received_at + timedelta(seconds=policy.first_response_seconds)
