"""The agent roster file: who the agents are, what they can do, how to sign them in.

One YAML file is read by two services, each for its own part: the dispatcher for skills,
languages and capacities (routing), agent_desk for logins and roles. Passwords are stored as
scrypt hashes (``ticketmesh roster hash-password`` makes one); a plain password in the file is
refused at load.

Example::

    agents:
      - agent_id: li.na
        name: 李娜
        role: agent            # or supervisor
        password_hash: scrypt$16384$8$1$<salt hex>$<hash hex>
        email: li.na@example.com
        skills: {billing: 4, technical: 2}
        languages: [zh, en]
        group: billing         # optional: the team a ticket can be routed or transferred to
        tier: L1               # L1 (default), L2 or duty_manager: escalation moves a ticket up
        capacity: {email: 10, chat: 3, phone: 1}

Capacity is one budget shared across channels (routing.yaml ``routing.capacity_model``,
default ``shared``): ``{email: 10, chat: 3, phone: 1}`` means a full load is 10 emails, or 3
chats, or 1 call, or any mix whose shares add up to at most 1 (e.g. 1 chat + 6 emails).
``per_channel`` makes each channel's number an independent cap instead.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SCRYPT_N, SCRYPT_R, SCRYPT_P = 16384, 8, 1


class RosterError(ValueError):
    pass


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt_hex, digest_hex = encoded.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest.hex(), digest_hex)


class AgentProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agent_id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    name: str
    role: Literal["agent", "supervisor"] = "agent"
    password_hash: str
    email: str | None = None
    skills: dict[str, int] = Field(default_factory=dict)
    languages: list[str] = Field(default_factory=lambda: ["zh"])
    capacity: dict[Literal["email", "chat", "phone"], int] = Field(default_factory=dict)
    group: str | None = Field(default=None, max_length=100)
    tier: Literal["L1", "L2", "duty_manager"] = "L1"

    @field_validator("password_hash")
    @classmethod
    def _hashed(cls, value: str) -> str:
        if not value.startswith("scrypt$"):
            raise ValueError("must be a scrypt hash (ticketmesh roster hash-password), not a plain password")
        return value

    @field_validator("skills")
    @classmethod
    def _proficiency(cls, value: dict[str, int]) -> dict[str, int]:
        for skill, level in value.items():
            if not 1 <= level <= 5:
                raise ValueError(f"proficiency of {skill!r} must be 1-5, got {level}")
        return value


class Roster(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agents: list[AgentProfile]

    def by_id(self) -> dict[str, AgentProfile]:
        return {a.agent_id: a for a in self.agents}


def load_roster(path: str | Path) -> Roster:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RosterError(f"cannot read roster {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise RosterError(f"roster {path} is not valid YAML: {exc}") from None
    try:
        roster = Roster.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RosterError(f"roster {path}: {where}: {first['msg']}") from None
    ids = [a.agent_id for a in roster.agents]
    if len(ids) != len(set(ids)):
        raise RosterError(f"roster {path}: duplicate agent_id")
    return roster


def display_names(path: str | Path) -> dict[str, str]:
    """agent_id → display name, for services that only show names (chat, mail).

    Names are a nicety there: an unreadable roster logs a warning and yields no names (callers
    fall back to ids or a generic label) instead of stopping the service.
    """
    try:
        return {agent.agent_id: agent.name for agent in load_roster(path).agents}
    except RosterError as exc:
        from shared.logging import get_logger

        get_logger(__name__).warning("roster_unavailable", error=str(exc))
        return {}
