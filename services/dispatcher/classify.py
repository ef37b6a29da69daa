"""Ticket classification: ordered keyword rules → required skills, priority, tags, language.

Rules come from a YAML file (``deploy/config/routing.yaml`` by default)::

    defaults:
      skills: [general]              # when no rule names a skill
      priority: P3                   # when no rule sets a priority
      phone_callback_priority: P2    # missed calls / voicemails wanting a call back
    rules:
      - name: complaint
        when:
          channel: [email, chat]     # optional; any of
          keywords: [投诉, lawyer]    # optional; any of, case-insensitive
          fields: [subject, text]    # optional; where keywords are looked for
        then:
          skills: [complaints]
          priority: P1
          tags: [complaint]
        stop: false                  # true: later rules are not evaluated

Every matching rule contributes: skills and tags accumulate in rule order, and the most urgent
priority among the matches wins (so a billing complaint is both ``billing`` and P1). A rule
without conditions matches every ticket.

Keywords match case-insensitively. A keyword with CJK characters matches as a substring
(Chinese has no spaces between words); a Latin keyword must start at a word boundary, so
``error`` matches "errors" but ``charge`` does not match "discharge".

Nothing here touches the network or the clock; :func:`load_rules` reads one file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.dispatcher.customers import CustomerHistory
from shared.config_files import ConfigFileError, describe_validation_error, read_yaml, repeated_names

Priority = Literal["P1", "P2", "P3", "P4"]
PRIORITIES = ("P1", "P2", "P3", "P4")  # most urgent first
CHANNELS = ("email", "chat", "phone")
TEXT_FIELDS = ("subject", "text")

# Only the head of a long body is scanned: the customer's own words come first, quoted history
# and signatures later; a 200 kB body should not cost a regex pass per keyword.
TEXT_SCAN_LIMIT = 20_000
LANGUAGE_SAMPLE_LIMIT = 5_000

CALLBACK_TAG = "callback"

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


class RulesError(ConfigFileError):
    """The routing rules file cannot be used; the message names the file and the rule."""


class _When(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: list[Literal["email", "chat", "phone"]] | None = None
    keywords: list[str] | None = None
    fields: list[Literal["subject", "text"]] = Field(default_factory=lambda: list(TEXT_FIELDS))

    @field_validator("channel", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("keywords", mode="before")
    @classmethod
    def _numbers_are_words(cls, value: Any) -> Any:
        # `12315` (the consumer-complaint hotline) is an int to YAML; it is a keyword here.
        if isinstance(value, list):
            return [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator("keywords")
    @classmethod
    def _non_blank(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("keywords must not be empty (leave it out to match every ticket)")
            for word in value:
                if not str(word).strip():
                    raise ValueError("keywords must not contain blank entries")
        return value


class _Then(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    skills: list[str] = Field(default_factory=list)
    priority: Priority | None = None
    tags: list[str] = Field(default_factory=list)


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    when: _When = Field(default_factory=_When)
    then: _Then
    stop: bool = False


class _Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    skills: list[str] = Field(default_factory=lambda: ["general"], min_length=1)
    priority: Priority = "P3"
    phone_callback_priority: Priority = "P2"


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: _Defaults = Field(default_factory=_Defaults)
    rules: list[_Rule] = Field(default_factory=list)


@dataclass(frozen=True)
class Rule:
    name: str
    channels: frozenset[str] | None
    keyword_pattern: re.Pattern[str] | None
    fields: tuple[str, ...]
    skills: tuple[str, ...]
    priority: str | None
    tags: tuple[str, ...]
    stop: bool


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    default_skills: tuple[str, ...] = ("general",)
    default_priority: str = "P3"
    phone_callback_priority: str = "P2"


@dataclass(frozen=True)
class Classification:
    priority: str
    required_skills: tuple[str, ...]
    tags: tuple[str, ...]
    language: str
    matched_rules: tuple[str, ...]
    preferred_skills: tuple[str, ...] = ()
    category: str | None = None
    group: str | None = None
    signals: tuple[str, ...] = ()  # built-in: complaint_risk, repeat_contact, repeat_complaint


def _keyword_regex(word: str) -> str:
    word = word.strip().casefold()
    escaped = r"\s+".join(re.escape(part) for part in word.split())
    if _CJK.search(word) or not word[0].isalnum():
        return escaped
    # Word start only: "errors" and "crashed" match "error"/"crash", "discharge" not "charge".
    return rf"(?<![a-z0-9]){escaped}"


def _compile(rule: _Rule) -> Rule:
    pattern = None
    if rule.when.keywords:
        pattern = re.compile("|".join(_keyword_regex(w) for w in rule.when.keywords))
    return Rule(
        name=rule.name,
        channels=frozenset(rule.when.channel) if rule.when.channel else None,
        keyword_pattern=pattern,
        fields=tuple(dict.fromkeys(rule.when.fields)),
        skills=tuple(rule.then.skills),
        priority=rule.then.priority,
        tags=tuple(rule.then.tags),
        stop=rule.stop,
    )


def parse_rules(data: Any, *, origin: str = "routing rules") -> RuleSet:
    """Validate already-parsed YAML; raise :class:`RulesError` naming the offending rule."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RulesError(f"{origin}: expected a mapping with 'defaults' and 'rules', got {type(data).__name__}")
    try:
        parsed = _RulesFile.model_validate(data)
    except ValidationError as exc:
        raise RulesError(f"{origin}: {describe_validation_error(data, exc, list_key='rules', entry_label='rule')}") from None
    duplicates = repeated_names([r.name for r in parsed.rules])
    if duplicates:
        raise RulesError(f"{origin}: rule names must be unique, repeated: {', '.join(duplicates)}")
    return RuleSet(
        rules=tuple(_compile(r) for r in parsed.rules),
        default_skills=tuple(parsed.defaults.skills),
        default_priority=parsed.defaults.priority,
        phone_callback_priority=parsed.defaults.phone_callback_priority,
    )


def load_rules(path: str | Path) -> RuleSet:
    data = read_yaml(path, "routing rules", RulesError)
    return parse_rules(data, origin=f"routing rules {path}")


def detect_language(text: str) -> str:
    """``zh`` when CJK characters dominate, else ``en``.

    One Chinese character carries about as much as one English word, so characters are weighed
    against Latin words: "Re: 退款" is zh, an English mail signed "李娜" stays en.
    """
    sample = text[:LANGUAGE_SAMPLE_LIMIT]
    cjk = len(_CJK.findall(sample))
    words = len(_LATIN_WORD.findall(sample))
    return "zh" if cjk and cjk >= words else "en"


def normalize_language(tag: str | None) -> str | None:
    """``zh-CN`` / ``zh_Hans`` / ``ZH`` → ``zh``; blank → None."""
    if not tag or not tag.strip():
        return None
    return re.split(r"[-_]", tag.strip(), maxsplit=1)[0].lower() or None


def is_phone_callback(channel: str, source: Mapping[str, str]) -> bool:
    """A phone ticket asks for a call back: intake_phone opens one only for a missed call or a
    voicemail. A producer may say otherwise with ``source["callback"] = "false"``."""
    return channel == "phone" and str(source.get("callback", "")).lower() not in ("0", "false", "no")


def _most_urgent(priorities: list[str]) -> str:
    return min(priorities, key=PRIORITIES.index)


def classify(rules: RuleSet, *, channel: str, subject: str, text: str, customer_language: str | None = None,
             source: Mapping[str, str] | None = None, customer_tier: str | None = None,
             sender: str | None = None, history: CustomerHistory | None = None) -> Classification:
    haystacks = {"subject": subject.casefold(), "text": text[:TEXT_SCAN_LIMIT].casefold()}
    skills: list[str] = []
    tags: list[str] = []
    priorities: list[str] = []
    matched: list[str] = []
    for rule in rules.rules:
        if rule.channels is not None and channel not in rule.channels:
            continue
        if rule.keyword_pattern is not None and not any(rule.keyword_pattern.search(haystacks[f]) for f in rule.fields):
            continue
        matched.append(rule.name)
        skills.extend(rule.skills)
        tags.extend(rule.tags)
        if rule.priority:
            priorities.append(rule.priority)
        if rule.stop:
            break
    if is_phone_callback(channel, source or {}):
        priorities.append(rules.phone_callback_priority)
        tags.append(CALLBACK_TAG)
    language = normalize_language(customer_language) or detect_language(f"{subject}\n{text}")
    return Classification(
        priority=_most_urgent(priorities) if priorities else rules.default_priority,
        required_skills=tuple(dict.fromkeys(skills)) or rules.default_skills,
        tags=tuple(dict.fromkeys(tags)),
        language=language,
        matched_rules=tuple(matched),
    )
