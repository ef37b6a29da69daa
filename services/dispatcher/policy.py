"""Routing policy: the ``routing:`` section of the rules file (TM_ROUTING_RULES_FILE).

The classification rules and the routing policy share one file so an operator tunes a
deployment in one place; classification ignores this key, and this module reads only it::

    routing:
      capacity_model: shared        # shared (default) | per_channel
      offer_timeout_seconds: 60     # 0 = no offers: an assignment needs no acceptance
      decline_cooldown_seconds: 900 # a decliner is not offered the same ticket again this long
      fairness: {window_minutes: 60, max_assignments: 20}   # absent = no cap
      sticky: {within_hours: 72}    # a customer's last agent gets their next ticket; absent = off
      relaxation:                   # applied in order to a ticket still waiting
        - {after_seconds: 120, step: drop_preferred}
        - {after_seconds: 300, step: widen_group}
        - {after_seconds: 600, step: next_tier}
      weights: {proficiency: 0.1, preferred: 0.1}
      identity:                     # one customer across channels (issue 4)
        attach_within_hours: 24     # a contact on another channel joins the customer's open ticket
        mode: attach                # attach (a message on that ticket) | link (own ticket, same agent) | off
        by_channel: {email: link, chat: link}   # per channel of the new contact, overriding mode

Pure: :func:`parse_policy` validates already-parsed YAML, :func:`load_policy` reads the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.config_files import ConfigFileError, read_yaml

SECTION = "routing"
RELAXATION_STEPS = ("drop_preferred", "widen_group", "next_tier")


class PolicyError(ConfigFileError):
    """The routing policy cannot be used; the message names the file and the field."""


class _Fairness(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    window_minutes: float = Field(gt=0)
    max_assignments: int = Field(ge=1)


class _Sticky(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    within_hours: float = Field(gt=0)


class _Relax(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    after_seconds: float = Field(gt=0)
    step: Literal["drop_preferred", "widen_group", "next_tier"]


class _Weights(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    proficiency: float = Field(default=0.1, ge=0, le=1)
    preferred: float = Field(default=0.1, ge=0, le=1)


AttachMode = Literal["attach", "link", "off"]


class _Identity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    attach_within_hours: float = Field(default=24, ge=0)
    mode: AttachMode = "attach"
    # A mail wants a mail back and a live chat an agent in the chat; folded into a ticket of
    # another channel, the agent's reply would go that ticket's way. So by default only a call
    # (a missed call: "please call back") becomes a message on the open ticket.
    by_channel: dict[Literal["email", "chat", "phone"], AttachMode] = Field(
        default_factory=lambda: {"email": "link", "chat": "link"})


class _Routing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="default", min_length=1, max_length=100)
    capacity_model: Literal["shared", "per_channel"] = "shared"
    offer_timeout_seconds: float = Field(default=60, ge=0)
    decline_cooldown_seconds: float = Field(default=900, ge=0)
    fairness: _Fairness | None = None
    sticky: _Sticky | None = None
    relaxation: list[_Relax] = Field(default_factory=list)
    weights: _Weights = Field(default_factory=_Weights)
    identity: _Identity = Field(default_factory=_Identity)

    @field_validator("relaxation")
    @classmethod
    def _increasing(cls, value: list[_Relax]) -> list[_Relax]:
        waits = [r.after_seconds for r in value]
        if waits != sorted(waits):
            raise ValueError("steps must be listed in order of after_seconds")
        return value


@dataclass(frozen=True)
class RelaxStep:
    after_seconds: float
    step: str


@dataclass(frozen=True)
class RoutingPolicy:
    name: str = "default"
    capacity_model: str = "shared"
    offer_timeout_seconds: float = 60.0
    decline_cooldown_seconds: float = 900.0
    fairness_window_seconds: float | None = None
    fairness_max: int | None = None
    sticky_within_seconds: float | None = None
    relaxation: tuple[RelaxStep, ...] = ()
    proficiency_weight: float = 0.1
    preferred_weight: float = 0.1
    attach_within_seconds: float = 24 * 3600.0
    attach_mode: str = "attach"
    attach_by_channel: tuple[tuple[str, str], ...] = (("chat", "link"), ("email", "link"))

    @property
    def offers(self) -> bool:
        return self.offer_timeout_seconds > 0

    def attach_mode_for(self, channel: str) -> str:
        """attach | link | off for a new contact arriving on ``channel``."""
        return dict(self.attach_by_channel).get(channel, self.attach_mode)


DEFAULT_POLICY = RoutingPolicy()


def parse_policy(data: Any, *, origin: str = "routing policy") -> RoutingPolicy:
    """The ``routing:`` section of a parsed rules file (absent = defaults)."""
    section = data.get(SECTION) if isinstance(data, Mapping) else None
    if section is None:
        return DEFAULT_POLICY
    if not isinstance(section, Mapping):
        raise PolicyError(f"{origin}: {SECTION}: expected a mapping, got {type(section).__name__}")
    try:
        parsed = _Routing.model_validate(section)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p if not isinstance(p, int) else p + 1) for p in (SECTION, *err["loc"]))
        raise PolicyError(f"{origin}: {where}: {err['msg']}") from None
    return RoutingPolicy(
        name=parsed.name,
        capacity_model=parsed.capacity_model,
        offer_timeout_seconds=parsed.offer_timeout_seconds,
        decline_cooldown_seconds=parsed.decline_cooldown_seconds,
        fairness_window_seconds=parsed.fairness.window_minutes * 60 if parsed.fairness else None,
        fairness_max=parsed.fairness.max_assignments if parsed.fairness else None,
        sticky_within_seconds=parsed.sticky.within_hours * 3600 if parsed.sticky else None,
        relaxation=tuple(RelaxStep(r.after_seconds, r.step) for r in parsed.relaxation),
        proficiency_weight=parsed.weights.proficiency,
        preferred_weight=parsed.weights.preferred,
        attach_within_seconds=parsed.identity.attach_within_hours * 3600,
        attach_mode=parsed.identity.mode,
        attach_by_channel=tuple(sorted(parsed.identity.by_channel.items())),
    )


def load_policy(path: str | Path) -> RoutingPolicy:
    return parse_policy(read_yaml(path, "routing policy", PolicyError), origin=f"routing policy {path}")
