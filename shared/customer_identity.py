"""One customer across channels: identifiers, how they are normalised, and when two profiles
become one (pure: no Redis, no clock).

A customer profile (``CU-<n>``) is keyed by every *verified* identifier seen: an email address
(lowercased, domain in IDNA ASCII form), a phone number (E.164), a chat visitor id and the
company's own user id (``external_user``). A channel says which identifiers it proved
(``Customer.verified``: the mail's sender, the caller id, the chat visitor's own browser id, an
HMAC-verified login); anything else on the contact was typed in by whoever is on the other
end (the pre-chat form) and proves nothing.

The rules (:func:`plan_resolution`), chosen against the two complaints helpdesk users have
about contacts (duplicates nobody joins, and joins nobody asked for):

- verified identifiers owned by different profiles merge them: the oldest profile survives,
  the others become its aliases (their ids keep resolving);
- a typed identifier never joins anything: when it is a verified identifier of another profile
  (or the other way round), the two profiles are linked as *maybe*, for a person to confirm
  (an explicit merge) or dismiss (never suggested again);
- two profiles with different company user ids are two people, whatever else they share (a
  shared browser, a family phone): they are linked as maybe, never merged automatically, and a
  person cannot merge them either;
- two profiles a person said are different are never merged automatically.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import idna
import phonenumbers

from shared import events as ev
from shared.logging import mask_email, mask_phone

KINDS = ("external_user", "email", "phone", "chat_visitor")  # strongest first
PROFILE_PREFIX = "CU-"
EMAIL_MAX_CHARS = 320
EMAIL_LOCAL_MAX_CHARS = 64
OPAQUE_ID_MAX_CHARS = 128  # chat visitor ids and company user ids (Customer's field limits)
PHONE_RAW_MAX_CHARS = 64
NAME_MAX_CHARS = 200
TIER_MAX_CHARS = 32
LANGUAGE_MAX_CHARS = 16
DEFAULT_REGION = "CN"
STANDARD_TIER = "standard"

_TIER = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")
_PROFILE_ID = re.compile(r"^CU-[1-9][0-9]{0,15}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidIdentifier(ValueError):
    """A value that cannot be used as an identifier of its kind; the message says why."""


class InvalidAttribute(ValueError):
    """A directory attribute (tier, language, name) that cannot be stored; the message says why."""


class MergeRefused(ValueError):
    """Two profiles that must stay apart (e.g. two company user ids)."""


@dataclass(frozen=True, order=True)
class Identifier:
    kind: str
    value: str

    @property
    def token(self) -> str:
        return f"{self.kind}:{self.value}"

    @classmethod
    def from_token(cls, token: str) -> "Identifier":
        kind, _, value = token.partition(":")
        return cls(kind, value)

    def masked(self) -> str:
        """For logs: addresses and numbers masked, opaque ids shortened."""
        if self.kind == "email":
            return f"email:{mask_email(self.value)}"
        if self.kind == "phone":
            return f"phone:{mask_phone(self.value)}"
        return f"{self.kind}:{self.value[:4]}…"


# -- normalisation ---------------------------------------------------------------------------

def normalize_email(raw: str) -> str:
    """``" Zhang.Wei@Example.COM "`` → ``zhang.wei@example.com``; ``用户@例子.中国`` → ``用户@xn--fsqu00a.xn--fiqs8s``.

    The whole address is lowercased (every mail system we meet treats the local part without
    case), the domain is mapped to its IDNA ASCII form (UTS 46: full-width dots and letters, case),
    so one mailbox is one identifier whichever way it was written.
    """
    text = raw.strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    text = text.strip().strip("<>").strip().replace("＠", "@")
    if not text or len(text) > EMAIL_MAX_CHARS:
        raise InvalidIdentifier(f"an email address has 3 to {EMAIL_MAX_CHARS} characters")
    if text.count("@") != 1:
        raise InvalidIdentifier("an email address has exactly one @")
    local, _, domain = text.partition("@")
    if not local or len(local) > EMAIL_LOCAL_MAX_CHARS or any(c.isspace() for c in local) or _CONTROL.search(local):
        raise InvalidIdentifier("the part before @ is empty, too long or has spaces")
    domain = domain.strip().rstrip(".")
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidIdentifier(f"the domain {domain!r} is not a valid domain name ({exc})") from None
    if "." not in ascii_domain:
        raise InvalidIdentifier(f"the domain {domain!r} has no dot")
    return f"{local.lower()}@{ascii_domain.lower()}"


def normalize_phone(raw: str, default_region: str = DEFAULT_REGION) -> str:
    """Any way of writing a number → E.164 (``13812345678`` → ``+8613812345678`` with region CN)."""
    text = raw.strip()
    if not text or len(text) > PHONE_RAW_MAX_CHARS:
        raise InvalidIdentifier(f"a phone number has 1 to {PHONE_RAW_MAX_CHARS} characters")
    try:
        parsed = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidIdentifier(f"{text!r} is not a phone number ({exc})") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidIdentifier(f"{text!r} is not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalize_opaque(raw: str, kind: str) -> str:
    """Chat visitor ids and company user ids are compared exactly, only trimmed."""
    text = raw.strip()
    if not text or len(text) > OPAQUE_ID_MAX_CHARS or _CONTROL.search(text):
        raise InvalidIdentifier(f"a {kind} id has 1 to {OPAQUE_ID_MAX_CHARS} printable characters")
    return text


def identifier(kind: str, raw: str, default_region: str = DEFAULT_REGION) -> Identifier:
    if kind == "email":
        return Identifier(kind, normalize_email(raw))
    if kind == "phone":
        return Identifier(kind, normalize_phone(raw, default_region))
    if kind in ("chat_visitor", "external_user"):
        return Identifier(kind, normalize_opaque(raw, kind))
    raise InvalidIdentifier(f"unknown identifier kind {kind!r} (one of {', '.join(KINDS)})")


def parse_lookup(text: str, default_region: str = DEFAULT_REGION) -> str | Identifier:
    """What a person typed to find a customer: a profile id (``CU-12``), ``kind:value``, or a bare
    email address or phone number."""
    text = text.strip()
    if _PROFILE_ID.match(text.upper()):
        return text.upper()
    kind, sep, value = text.partition(":")
    if sep and kind in KINDS:
        return identifier(kind, value, default_region)
    if "@" in text:
        return Identifier("email", normalize_email(text))
    return Identifier("phone", normalize_phone(text, default_region))


@dataclass(frozen=True)
class ContactIdentifiers:
    """The identifiers one contact carries, split by what the channel proved."""

    verified: tuple[Identifier, ...] = ()
    typed: tuple[Identifier, ...] = ()
    problems: tuple[str, ...] = ()  # values dropped because they are not identifiers (never fails a ticket)

    @property
    def all(self) -> tuple[Identifier, ...]:
        return self.verified + self.typed


_FIELDS = (("external_user", "external_user_id"), ("email", "email"), ("phone", "phone"),
           ("chat_visitor", "chat_visitor_id"))


def contact_identifiers(customer: ev.Customer, default_region: str = DEFAULT_REGION) -> ContactIdentifiers:
    verified: list[Identifier] = []
    typed: list[Identifier] = []
    problems: list[str] = []
    for kind, name in _FIELDS:
        raw = getattr(customer, name)
        if not raw:
            continue
        try:
            found = identifier(kind, raw, default_region)
        except InvalidIdentifier as exc:
            problems.append(f"{kind}: {exc}")
            continue
        (verified if kind in customer.verified else typed).append(found)
    return ContactIdentifiers(tuple(verified), tuple(typed), tuple(problems))


# -- attributes the directory sets -----------------------------------------------------------

def normalize_tier(raw: str) -> str:
    """``" VIP "`` → ``vip`` (the SLA policies and classification compare tiers casefolded)."""
    value = raw.strip().casefold()
    if not _TIER.match(value):
        raise InvalidAttribute(f"tier {raw!r}: 1 to {TIER_MAX_CHARS} of a-z 0-9 _ . - (e.g. vip)")
    return value


def normalize_language(raw: str) -> str:
    """``zh-CN`` → ``zh-cn``; ``zh_Hans`` → ``zh-hans`` (a BCP 47 tag, lowercased)."""
    value = raw.strip().replace("_", "-").lower()
    if len(value) > LANGUAGE_MAX_CHARS or not _LANGUAGE.match(value):
        raise InvalidAttribute(f"language {raw!r}: a language tag such as zh, en or zh-CN")
    return value


def normalize_name(raw: str) -> str:
    value = " ".join(raw.split())
    if len(value) > NAME_MAX_CHARS or _CONTROL.search(value):
        raise InvalidAttribute(f"name: at most {NAME_MAX_CHARS} printable characters")
    return value


ATTRIBUTE_NORMALIZERS = {"tier": normalize_tier, "language": normalize_language, "name": normalize_name}


def profile_number(profile_id: str) -> int:
    return int(profile_id.removeprefix(PROFILE_PREFIX))


def is_profile_id(text: str) -> bool:
    return bool(_PROFILE_ID.match(text))


# -- merge rules -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ProfileFacts:
    """What the rules need to know about one existing (root) profile."""

    external_user: str | None = None
    typed: frozenset[Identifier] = frozenset()
    maybe: frozenset[str] = frozenset()       # profiles already linked as maybe
    dismissed: frozenset[str] = frozenset()   # profiles a person said are someone else


@dataclass(frozen=True)
class IndexView:
    """The index as read for one contact; every profile id is a root (aliases already followed)."""

    owner: Mapping[Identifier, str] = field(default_factory=dict)  # verified identifier → its profile
    typed_by: Mapping[Identifier, frozenset[str]] = field(default_factory=dict)  # → profiles that have it typed
    profiles: Mapping[str, ProfileFacts] = field(default_factory=dict)

    def facts(self, profile_id: str) -> ProfileFacts:
        return self.profiles.get(profile_id, ProfileFacts())


@dataclass(frozen=True)
class MaybeLink:
    other: str
    identifier: Identifier
    reason: str  # typed_matches_verified | verified_matches_typed | different_company_users | kept_apart


@dataclass(frozen=True)
class Plan:
    """What resolving one contact changes. ``profile_id`` None with ``create``: a new profile;
    None without: the contact names nobody we can recognise (no verified identifier)."""

    profile_id: str | None
    create: bool = False
    absorb: tuple[str, ...] = ()              # merged into profile_id (become its aliases)
    claim: tuple[Identifier, ...] = ()        # verified identifiers nobody owned yet
    add_typed: tuple[Identifier, ...] = ()    # typed identifiers the profile did not carry yet
    maybe: tuple[MaybeLink, ...] = ()         # new maybe-links from profile_id

    @property
    def changes(self) -> bool:
        return bool(self.create or self.absorb or self.claim or self.add_typed or self.maybe)


NO_PROFILE = Plan(profile_id=None)


def _dedupe(items: Iterable[Identifier]) -> list[Identifier]:
    seen: dict[Identifier, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def _apart(a: str, b: str, view: IndexView) -> bool:
    return b in view.facts(a).dismissed or a in view.facts(b).dismissed


def plan_resolution(verified: Sequence[Identifier], typed: Sequence[Identifier], view: IndexView) -> Plan:
    """Which profile a contact belongs to, and what changes (see the module docstring)."""
    verified = _dedupe(verified)
    typed = [t for t in _dedupe(typed) if t not in verified]
    if not verified:
        return NO_PROFILE
    owners = sorted({view.owner[i] for i in verified if i in view.owner}, key=profile_number)
    contact_user = next((i.value for i in verified if i.kind == "external_user"), None)
    # The company's user id is the strongest identity: its profile is the one to keep together.
    anchor = view.owner.get(Identifier("external_user", contact_user)) if contact_user else None
    ordered = ([anchor] if anchor else []) + [o for o in owners if o != anchor]
    group: list[str] = []
    group_user = contact_user
    kept_apart: dict[str, str] = {}
    for candidate in ordered:
        user = view.facts(candidate).external_user
        if user and group_user and user != group_user:
            kept_apart[candidate] = "different_company_users"
        elif any(_apart(candidate, member, view) for member in group):
            kept_apart[candidate] = "kept_apart"
        else:
            group.append(candidate)
            group_user = group_user or user
    survivor = min(group, key=profile_number) if group else None
    absorbed = tuple(sorted((g for g in group if g != survivor), key=profile_number))
    joined = set(group)
    claim = tuple(i for i in verified if i not in view.owner)
    facts = view.facts(survivor) if survivor else ProfileFacts()
    owned_by_group = {i for i, owner in view.owner.items() if owner in joined}
    add_typed = tuple(t for t in typed if t not in facts.typed and t not in owned_by_group)

    links: dict[str, MaybeLink] = {}

    def link(other: str, ident: Identifier, reason: str) -> None:
        if other in joined or other in links or other in facts.maybe or (survivor and _apart(survivor, other, view)):
            return
        links[other] = MaybeLink(other, ident, reason)

    for ident in verified:  # the profiles kept apart keep their identifiers, linked as maybe
        owner = view.owner.get(ident)
        if owner in kept_apart:
            link(owner, ident, kept_apart[owner])
    for ident in typed:
        owner = view.owner.get(ident)
        if owner is not None:
            link(owner, ident, "typed_matches_verified")
    for ident in verified:
        for other in sorted(view.typed_by.get(ident, frozenset()), key=profile_number):
            link(other, ident, "verified_matches_typed")
    return Plan(profile_id=survivor, create=survivor is None, absorb=absorbed, claim=claim, add_typed=add_typed,
                maybe=tuple(links.values()))


def plan_merge(a: str, b: str, view: IndexView) -> tuple[str, str]:
    """A person merging two profiles: (survivor, absorbed), the older one surviving.
    MergeRefused for one profile twice, or two different company user ids."""
    if a == b:
        raise MergeRefused(f"{a} is already that profile")
    user_a, user_b = view.facts(a).external_user, view.facts(b).external_user
    if user_a and user_b and user_a != user_b:
        raise MergeRefused(f"{a} and {b} are different company users ({user_a}, {user_b})")
    return (a, b) if profile_number(a) < profile_number(b) else (b, a)


# -- cross-channel attach --------------------------------------------------------------------

AttachMode = str  # "attach" | "link" | "off"
ATTACH_MODES = ("attach", "link", "off")


@dataclass(frozen=True)
class OpenTicket:
    ticket_id: str
    channel: str
    last_activity: float  # epoch seconds of its last contact (received, attached, reopened)


@dataclass(frozen=True)
class AttachDecision:
    mode: str                     # attach | link | none
    into_ticket_id: str | None = None
    why: str = ""


def attach_target(open_tickets: Iterable[OpenTicket], *, channel: str, ticket_id: str, mode: str,
                  within_seconds: float, now: float) -> AttachDecision:
    """The open ticket a new contact joins: the customer's most recently active one on *another*
    channel, active within the window. Same-channel contacts are the channel's own business (mail
    threading, the chat conversation) and never attach here."""
    if mode == "off":
        return AttachDecision("none", why="attach is off for this channel")
    candidates = [t for t in open_tickets
                  if t.ticket_id != ticket_id and t.channel != channel and now - t.last_activity <= within_seconds]
    if not candidates:
        return AttachDecision("none", why="no open ticket on another channel within the window")
    target = max(candidates, key=lambda t: (t.last_activity, t.ticket_id))
    return AttachDecision(mode, target.ticket_id, f"open {target.channel} ticket active "
                                                  f"{int(now - target.last_activity)}s ago")
