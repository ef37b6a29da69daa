"""Customer profiles in Redis (keys ``tm:customers:*``; this module is their only owner).

Shared like the intake ledger: the dispatcher resolves every received ticket to a profile and
keeps the customer's history here; agent_desk's supervisor API and ``ticketmesh customers``
read and edit profiles. The rules
themselves (what merges, what is only a maybe) are :mod:`shared.customer_identity`'s, pure;
this store reads what they need, applies their plan, and makes it atomic.

Keys (``<h>`` = hash of ``kind:value``, so no address or number is a key name):

- ``seq`` – counter behind ``CU-<n>`` (never expires);
- ``profile:<id>`` hash – created_at, updated_at, name, tier, language (the directory's, which
  override the intake's), external_user (the company's user id, at most one), directory_at,
  merged_into / merged_at / merged_by once merged into another profile (then an alias);
- ``ids:<id>`` / ``typed:<id>`` sets of ``kind:value`` – verified identifiers it owns, typed-in
  ones it carries; ``aliases:<id>`` – profiles merged into it (each points here directly);
- ``ident:<h>`` – the profile owning a verified identifier; ``typed_ident:<h>`` – set of the
  profiles that carry it typed;
- ``maybe:<id>`` hash other profile → JSON (identifier, reason, at), written on both sides;
  ``dismissed:<id>`` – profiles a person said are someone else (never linked or merged again);
- ``history:<id>`` hash (last agent), ``history:<id>:tickets`` / ``:complaints`` zsets ticket →
  received epoch, ``:open`` zset ticket → last activity, ``:channels`` hash ticket → channel
  (``HISTORY_TTL_SECONDS`` after the last write); a merged profile's history stays under its
  own id and is read together with the survivor's;
- ``contact:<ticket>`` – what the dispatcher decided for a received contact: its own ticket,
  attached to or linked with an open one (``CONTACT_TTL_SECONDS``).

Profiles, identifiers, aliases and links do not expire: they are the customer directory.

Atomicity: resolving a contact reads under WATCH (every identifier key, every involved profile's
keys), plans with the pure rules, and writes in one MULTI/EXEC; a concurrent change to anything
read makes EXEC fail and the resolution starts over on fresh reads. So two replicas resolving
one new verified identifier at once end with one profile, and a merge never loses an
identifier added meanwhile. A returning customer changes nothing and costs two read round
trips; a new one is created by one script that first checks its identifiers are still free
(else the WATCH path plans again).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

import redis
from redis.exceptions import WatchError

from shared.customer_identity import (
    NO_PROFILE,
    PROFILE_PREFIX,
    ContactIdentifiers,
    Identifier,
    IndexView,
    MaybeLink,
    MergeRefused,
    OpenTicket,
    Plan,
    ProfileFacts,
    is_profile_id,
    plan_merge,
    plan_resolution,
)
from shared.errors import TransientError
from shared.intake_ledger import natural_key_hash
from shared.redis_store import execute_with_scripts

PREFIX = "tm:customers:"
HISTORY_TTL_SECONDS = 90 * 24 * 3600     # a customer's history is forgotten this long after the last ticket
HISTORY_WINDOW_SECONDS = 30 * 24 * 3600  # "recent" tickets and complaints
CONTACT_TTL_SECONDS = 90 * 24 * 3600     # outlives any redelivery of the contact's ticket_received
MAX_WATCH_RETRIES = 20
MAX_ALIAS_HOPS = 8                       # merges point aliases at the survivor directly; this is a guard
ATTRIBUTES = ("name", "tier", "language")

OWN, ATTACHED, LINKED = "own", "attach", "link"


class UnknownProfile(LookupError):
    pass


# The commonest write, a new customer, in one round trip: create the profile with the contact's
# identifiers if they are all still unowned and nobody carries a verified one typed in (else the
# rules have links or merges to make, and the WATCH path runs). KEYS: seq, ident keys of the
# verified then typed identifiers, typed_ident keys of the verified. ARGV: now, name, number of
# verified, then the verified tokens, then the typed ones (``kind:value``) with their typed_ident keys.
_CREATE = """
local P = '""" + PREFIX + """'
local nv = tonumber(ARGV[3])
local idents = #KEYS - 1 - nv
for i = 2, 1 + idents do
  if redis.call('EXISTS', KEYS[i]) == 1 then return false end
end
for i = 2 + idents, #KEYS do
  if redis.call('SCARD', KEYS[i]) > 0 then return false end
end
local pid = 'CU-' .. redis.call('INCR', KEYS[1])
local profile = {'created_at', ARGV[1], 'updated_at', ARGV[1]}
if ARGV[2] ~= '' then table.insert(profile, 'name'); table.insert(profile, ARGV[2]) end
for i = 1, nv do
  local token = ARGV[3 + i]
  redis.call('SET', KEYS[1 + i], pid)
  redis.call('SADD', P .. 'ids:' .. pid, token)
  if string.sub(token, 1, 14) == 'external_user:' then
    table.insert(profile, 'external_user'); table.insert(profile, string.sub(token, 15))
  end
end
redis.call('HSET', P .. 'profile:' .. pid, unpack(profile))
local i = 4 + nv
while i < #ARGV do
  redis.call('SADD', P .. 'typed:' .. pid, ARGV[i])
  redis.call('SADD', ARGV[i + 1], pid)
  i = i + 2
end
return pid
"""

# A received contact's first read and, when it names nobody yet, its creation, in one round
# trip (the dispatcher's commonest case is a new customer): the ident keys of the verified then
# typed identifiers are read (GET) and the typed_ident keys of the verified (SMEMBERS); all empty
# (what ``_CREATE`` checks) creates the profile as ``_CREATE`` does and returns {1, id}, else the
# reads come back as {0, owners ('' = none), carriers} for the rules to plan on. KEYS and ARGV
# as ``_CREATE``'s.
_CREATE_OR_READ = """
local nv = tonumber(ARGV[3])
local n_idents = #KEYS - 1 - nv
local owners, carriers, free = {}, {}, true
for i = 2, 1 + n_idents do
  local owner = redis.call('GET', KEYS[i])
  if owner then free = false; owners[#owners + 1] = owner else owners[#owners + 1] = '' end
end
for i = 2 + n_idents, #KEYS do
  local members = redis.call('SMEMBERS', KEYS[i])
  if #members > 0 then free = false end
  carriers[#carriers + 1] = members
end
if not free then return {0, owners, carriers} end
local function create()
""" + _CREATE + """
end
local pid = create()
if not pid then return {0, owners, carriers} end
return {1, pid}
"""


# ``CustomerStore.queue_ticket`` as one command (for a pipeline that reloads scripts on NOSCRIPT
# and may be sent twice: every write here is idempotent).
# KEYS: history:<id>:tickets, :complaints, :open, :channels
# ARGV: ticket_id, received, the window's start, complaint ('1'/'0'), channel, ttl
_NOTE_TICKET = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
end
redis.call('ZADD', KEYS[3], 'GT', ARGV[2], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[6]) end
return 1
"""


# -- keys ------------------------------------------------------------------------------------

def _h(ident: Identifier) -> str:
    return natural_key_hash(ident.token)


class Keys:
    seq = PREFIX + "seq"

    @staticmethod
    def profile(pid: str) -> str:
        return f"{PREFIX}profile:{pid}"

    @staticmethod
    def ids(pid: str) -> str:
        return f"{PREFIX}ids:{pid}"

    @staticmethod
    def typed(pid: str) -> str:
        return f"{PREFIX}typed:{pid}"

    @staticmethod
    def aliases(pid: str) -> str:
        return f"{PREFIX}aliases:{pid}"

    @staticmethod
    def maybe(pid: str) -> str:
        return f"{PREFIX}maybe:{pid}"

    @staticmethod
    def dismissed(pid: str) -> str:
        return f"{PREFIX}dismissed:{pid}"

    @staticmethod
    def ident(ident: Identifier) -> str:
        return f"{PREFIX}ident:{_h(ident)}"

    @staticmethod
    def typed_ident(ident: Identifier) -> str:
        return f"{PREFIX}typed_ident:{_h(ident)}"

    @staticmethod
    def history(pid: str) -> str:
        return f"{PREFIX}history:{pid}"

    @staticmethod
    def contact(ticket_id: str) -> str:
        return f"{PREFIX}contact:{ticket_id}"

    @classmethod
    def of_profile(cls, pid: str) -> tuple[str, ...]:
        return cls.profile(pid), cls.ids(pid), cls.typed(pid), cls.aliases(pid), cls.maybe(pid), cls.dismissed(pid)


# -- what callers get back -------------------------------------------------------------------

@dataclass(frozen=True)
class Profile:
    profile_id: str
    created_at: float | None = None
    updated_at: float | None = None
    name: str | None = None
    tier: str | None = None
    language: str | None = None
    external_user: str | None = None
    directory_at: float | None = None
    identifiers: tuple[Identifier, ...] = ()
    typed: tuple[Identifier, ...] = ()
    aliases: tuple[str, ...] = ()
    maybe: tuple[dict, ...] = ()   # {"other", "identifier", "reason", "at"}
    dismissed: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.profile_id, "name": self.name, "tier": self.tier, "language": self.language,
            "external_user_id": self.external_user, "created_at": self.created_at, "updated_at": self.updated_at,
            "directory_at": self.directory_at,
            "identifiers": [{"kind": i.kind, "value": i.value} for i in self.identifiers],
            "typed": [{"kind": i.kind, "value": i.value} for i in self.typed],
            "aliases": list(self.aliases), "maybe": list(self.maybe), "dismissed": list(self.dismissed),
        }


@dataclass(frozen=True)
class Resolution:
    profile_id: str | None
    created: bool = False
    merged: tuple[str, ...] = ()
    maybe: tuple[MaybeLink, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)  # name, tier, language as now stored
    changed: bool = False  # something was (or, dry run, would be) written
    aliases: tuple[str, ...] = ()  # profiles merged into this one (their history is this customer's too)

    @property
    def tier(self) -> str | None:
        return self.attributes.get("tier") or None

    @property
    def language(self) -> str | None:
        return self.attributes.get("language") or None


NO_RESOLUTION = Resolution(profile_id=None)


@dataclass(frozen=True)
class ProfileHistory:
    recent_tickets: int = 0
    recent_complaints: int = 0
    open: tuple[OpenTicket, ...] = ()
    last_agent_id: str | None = None
    last_agent_at: float | None = None


@dataclass(frozen=True)
class ContactOutcome:
    outcome: str  # own | attach | link
    customer_id: str | None = None
    into_ticket_id: str | None = None
    at: float | None = None


@dataclass(frozen=True)
class ContactContext:
    """A received contact, resolved (``CustomerStore.resolve_contact``)."""

    resolution: Resolution
    history: ProfileHistory          # the profile's and its aliases', the contact's own ticket left out
    decided: ContactOutcome | None   # recorded for this contact before (a redelivery); None without a profile
    reads: list                      # the replies of the caller's own queued reads


# -- reading a consistent picture --------------------------------------------------------------

@dataclass
class _Data:
    fields: dict[str, str]
    ids: set[str]
    typed: set[str]
    aliases: set[str]
    maybe: dict[str, str]
    dismissed: set[str]

    @property
    def merged_into(self) -> str | None:
        return self.fields.get("merged_into") or None


@dataclass
class _Snapshot:
    owner_raw: dict[Identifier, str]
    typed_raw: dict[Identifier, set[str]]
    data: dict[str, _Data]

    def root(self, pid: str) -> str:
        for _ in range(MAX_ALIAS_HOPS):
            data = self.data.get(pid)
            if data is None or not data.merged_into:
                return pid
            pid = data.merged_into
        return pid

    def missing(self, wanted: Iterable[str]) -> set[str]:
        """Profiles the picture names but has not read (aliases' targets among them)."""
        out = set()
        for pid in wanted:
            seen = 0
            while pid in self.data and self.data[pid].merged_into and seen < MAX_ALIAS_HOPS:
                pid = self.data[pid].merged_into
                seen += 1
            if pid not in self.data:
                out.add(pid)
        return out

    def mentioned(self) -> set[str]:
        return set(self.owner_raw.values()).union(*self.typed_raw.values()) if self.typed_raw else \
            set(self.owner_raw.values())

    def view(self) -> IndexView:
        owner = {ident: self.root(pid) for ident, pid in self.owner_raw.items()}
        typed_by = {ident: frozenset(self.root(p) for p in pids) for ident, pids in self.typed_raw.items()}
        roots = set(owner.values()).union(*typed_by.values()) if typed_by else set(owner.values())
        profiles = {}
        for pid in roots:
            data = self.data.get(pid)
            if data is None:
                continue
            profiles[pid] = ProfileFacts(
                external_user=data.fields.get("external_user") or None,
                typed=frozenset(Identifier.from_token(t) for t in data.typed),
                maybe=frozenset(self.root(o) for o in data.maybe), dismissed=frozenset(self.root(o) for o in data.dismissed))
        return IndexView(owner=owner, typed_by=typed_by, profiles=profiles)


def _decode_profile_reads(values: list) -> _Data:
    fields, ids, typed, aliases, maybe, dismissed = values
    return _Data(fields=fields, ids=set(ids), typed=set(typed), aliases=set(aliases), maybe=maybe,
                 dismissed=set(dismissed))


def _queue_profile_reads(pipe: Any, pid: str) -> None:
    pipe.hgetall(Keys.profile(pid))
    pipe.smembers(Keys.ids(pid))
    pipe.smembers(Keys.typed(pid))
    pipe.smembers(Keys.aliases(pid))
    pipe.hgetall(Keys.maybe(pid))
    pipe.smembers(Keys.dismissed(pid))


PROFILE_READS = 6
HISTORY_READS = 5  # per profile id, see queue_history_reads


class CustomerStore:
    """Blocking client (the dispatcher, the CLI; agent_desk calls it from a thread)."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self._create = client.register_script(_CREATE)
        self._create_or_read = client.register_script(_CREATE_OR_READ)
        self.note_ticket_script = client.register_script(_NOTE_TICKET)
        # Called between the reads and the write of a resolution: tests use it to run a second
        # resolver exactly there.
        self.after_read: Callable[[], None] | None = None

    # reading
    def _read(self, verified: Sequence[Identifier], typed: Sequence[Identifier],
              extra: Iterable[str] = (), watch: Callable[[set[str]], None] | None = None) -> _Snapshot:
        idents = [*verified, *typed]
        keys = {Keys.ident(i) for i in idents} | {Keys.typed_ident(v) for v in verified}
        if watch:
            watch(keys)
        pipe = self.client.pipeline(transaction=False)
        for ident in idents:
            pipe.get(Keys.ident(ident))
        for ident in verified:
            pipe.smembers(Keys.typed_ident(ident))
        raw = pipe.execute()
        owner_raw = {i: pid for i, pid in zip(idents, raw[:len(idents)]) if pid}
        typed_raw = {i: set(pids) for i, pids in zip(verified, raw[len(idents):]) if pids}
        return self._read_profiles(_Snapshot(owner_raw, typed_raw, {}), extra, watch)

    def _read_profiles(self, snap: _Snapshot, extra: Iterable[str] = (),
                       watch: Callable[[set[str]], None] | None = None,
                       history: tuple[dict[str, list], float] | None = None) -> _Snapshot:
        """Read the profiles the identifiers' reads name (and their merge targets) into ``snap``.
        ``history``: (dict to fill, now): each profile's history is read in the same round trips
        (a returning customer's, for the dispatcher, without one more)."""
        wanted = snap.mentioned() | set(extra)
        for _ in range(MAX_ALIAS_HOPS + 1):
            missing = snap.missing(wanted)
            if not missing:
                return snap
            if watch:
                watch({k for pid in missing for k in Keys.of_profile(pid)})
            pipe = self.client.pipeline(transaction=False)
            order = sorted(missing)
            for pid in order:
                _queue_profile_reads(pipe, pid)
            if history is not None:
                self.queue_history_reads(pipe, order, now=history[1])
            values = pipe.execute()
            for n, pid in enumerate(order):
                snap.data[pid] = _decode_profile_reads(values[n * PROFILE_READS:(n + 1) * PROFILE_READS])
            if history is not None:
                base = len(order) * PROFILE_READS
                for n, pid in enumerate(order):
                    history[0][pid] = values[base + n * HISTORY_READS:base + (n + 1) * HISTORY_READS]
        raise TransientError("customer profile aliases form a chain longer than expected")

    def _transaction(self, attempt: Callable[[Any, Callable[[set[str]], None]], Any]) -> Any:
        """Run ``attempt(pipe, watch)`` until its EXEC is not beaten by a concurrent change."""
        for _ in range(MAX_WATCH_RETRIES):
            with self.client.pipeline(transaction=True) as pipe:
                watched: set[str] = set()

                def watch(keys: set[str]) -> None:
                    new = keys - watched
                    if new:
                        pipe.watch(*sorted(new))
                        watched.update(new)

                try:
                    return attempt(pipe, watch)
                except WatchError:
                    continue
        raise TransientError("customer profiles kept changing under us")

    # resolving contacts
    def resolve(self, contact: ContactIdentifiers, *, now: float, name: str | None = None,
                attributes: Mapping[str, str | None] | None = None, directory: bool = False,
                dry_run: bool = False) -> Resolution:
        """The contact's profile: found, created or merged per the rules, atomically.

        ``attributes`` (name, tier, language; None clears one) are written as the directory's;
        ``name`` is the intake's and only fills an empty name. A contact without a verified
        identifier has no profile. ``dry_run``: what would happen, nothing written.
        """
        verified, typed = list(contact.verified), list(contact.typed)
        if not verified:
            return NO_RESOLUTION
        snap = self._read(verified, typed)
        plan = plan_resolution(verified, typed, snap.view())
        outcome = self._outcome(plan, snap, name, attributes)
        if dry_run or not outcome.changed:
            return outcome
        return self._apply(verified, typed, plan, outcome, now=now, name=name, attributes=attributes,
                           directory=directory)

    def _create_call(self, verified: Sequence[Identifier], add_typed: Sequence[Identifier], *, now: float,
                     name: str | None) -> tuple[list[str], list]:
        """KEYS and ARGV of ``_CREATE`` (and ``_CREATE_OR_READ``)."""
        return ([Keys.seq, *(Keys.ident(i) for i in [*verified, *add_typed]), *(Keys.typed_ident(v) for v in verified)],
                [repr(now), name or "", len(verified), *(i.token for i in verified),
                 *(x for t in add_typed for x in (t.token, Keys.typed_ident(t)))])

    def _apply(self, verified: list[Identifier], typed: list[Identifier], plan: Plan, outcome: Resolution, *,
               now: float, name: str | None, attributes: Mapping[str, str | None] | None,
               directory: bool) -> Resolution:
        """Write what ``plan`` (made on a first read) changes: a plain creation by script, else
        under WATCH on fresh reads."""
        if plan.create and not plan.maybe and not attributes:
            keys, args = self._create_call(verified, plan.add_typed, now=now, name=name)
            pid = self._create(keys=keys, args=args)
            if pid:
                return replace(outcome, profile_id=pid)
            # Someone claimed one of them meanwhile: plan again under WATCH.

        def attempt(pipe: Any, watch: Callable[[set[str]], None]) -> Resolution:
            snap = self._read(verified, typed, watch=watch)
            plan = plan_resolution(verified, typed, snap.view())
            result = self._outcome(plan, snap, name, attributes)
            if self.after_read is not None:
                self.after_read()
            if not result.changed:
                pipe.unwatch()
                return result
            pid = plan.profile_id or f"{PROFILE_PREFIX}{self.client.incr(Keys.seq)}"
            pipe.multi()
            self._write(pipe, plan, pid, snap, now=now, name=name, attributes=attributes, directory=directory)
            pipe.execute()
            return Resolution(profile_id=pid, created=plan.create, merged=plan.absorb, maybe=plan.maybe,
                              attributes=result.attributes, changed=True, aliases=result.aliases)

        return self._transaction(attempt)

    def resolve_contact(self, contact: ContactIdentifiers, ticket_id: str, *, now: float, name: str | None = None,
                        queue_reads: Callable[[Any], None] | None = None,
                        scripts: Sequence[Any] = ()) -> "ContactContext":
        """A received contact (the dispatcher): ``resolve`` (same rules, same atomicity), plus the
        profile's history (its aliases' too, ``ticket_id`` left out) and the decision recorded
        for ``ticket_id``, plus whatever ``queue_reads`` queues, in as few round trips as can be:
        a new customer's reads and creation are one script, with the rest in its round trip; a
        returning customer's history is read with their profile. A creation needs no history
        read: nothing is ever recorded under a new id before its creation. ``scripts``: those
        ``queue_reads`` calls by EVALSHA (loaded if Redis lost them; they must be safe to repeat).
        """
        verified, typed = list(contact.verified), list(contact.typed)
        create = plan_resolution(verified, typed, IndexView()) if verified else NO_PROFILE

        def first(pipe: Any) -> None:
            if verified:
                keys, args = self._create_call(verified, create.add_typed, now=now, name=name)
                pipe.evalsha(self._create_or_read.sha, len(keys), *keys, *args)
                pipe.get(Keys.contact(ticket_id))
            if queue_reads is not None:
                queue_reads(pipe)

        values = self._execute_with_scripts(first, scripts)
        if not verified:
            return ContactContext(NO_RESOLUTION, ProfileHistory(), None, values)
        reply, contact_raw, extra = values[0], values[1], values[2:]
        if reply[0] == 1 and len(reply) > 1:
            outcome = self._outcome(create, _Snapshot({}, {}, {}), name, None)
            return ContactContext(replace(outcome, profile_id=reply[1]), ProfileHistory(), None, extra)
        owners, carriers = reply[1], reply[2]
        idents = [*verified, *create.add_typed]
        owner_raw = {i: pid for i, pid in zip(idents, owners) if pid}
        typed_raw = {i: set(pids) for i, pids in zip(verified, carriers) if pids}
        read_history: dict[str, list] = {}
        snap = self._read_profiles(_Snapshot(owner_raw, typed_raw, {}), history=(read_history, now))
        plan = plan_resolution(verified, typed, snap.view())
        resolution = self._outcome(plan, snap, name, None)
        if resolution.changed:
            resolution = self._apply(verified, typed, plan, resolution, now=now, name=name, attributes=None,
                                     directory=False)
        pid = resolution.profile_id
        if not pid or resolution.created:
            history = ProfileHistory()
        else:
            ids = [pid, *resolution.aliases]
            if all(one in read_history for one in ids):  # a resolution never writes history keys
                history = self.history_from([v for one in ids for v in read_history[one]], ids, exclude=ticket_id)
            else:  # aliases (a merged customer), or a merge made just now
                pipe = self.client.pipeline(transaction=False)
                self.queue_history_reads(pipe, ids, now=now)
                history = self.history_from(pipe.execute(), ids, exclude=ticket_id)
        return ContactContext(resolution, history, _contact(contact_raw) if pid else None, extra)

    def _execute_with_scripts(self, queue_commands: Callable[[Any], None], scripts: Sequence[Any] = ()) -> list:
        """One round trip for a pipeline calling ``_CREATE_OR_READ`` (and ``scripts``) by EVALSHA,
        loading them again if Redis lost them. A script that met NOSCRIPT did not run;
        ``_CREATE_OR_READ`` run twice finds its own creation the second time (the customer
        resolves as found, not created)."""
        return execute_with_scripts(self.client, queue_commands, (self._create_or_read, *scripts))

    @staticmethod
    def _merged_attributes(plan: Plan, snap: _Snapshot) -> dict[str, str]:
        """The survivor's name, tier, language, each from the oldest profile of the group that has it."""
        merged: dict[str, str] = {}
        for pid in ([plan.profile_id] if plan.profile_id else []) + list(plan.absorb):
            fields = snap.data[pid].fields if pid in snap.data else {}
            for attr in (*ATTRIBUTES, "external_user"):
                if fields.get(attr) and attr not in merged:
                    merged[attr] = fields[attr]
        return merged

    def _outcome(self, plan: Plan, snap: _Snapshot, name: str | None,
                 attributes: Mapping[str, str | None] | None) -> Resolution:
        current = self._merged_attributes(plan, snap)
        after = dict(current)
        if name and not after.get("name"):
            after["name"] = name
        for attr, value in (attributes or {}).items():
            if value:
                after[attr] = value
            else:
                after.pop(attr, None)
        survivor_fields = snap.data[plan.profile_id].fields if plan.profile_id in snap.data else {}
        aliases: set[str] = set()
        for pid in ([plan.profile_id] if plan.profile_id else []) + list(plan.absorb):
            aliases |= snap.data[pid].aliases if pid in snap.data else set()
        aliases |= set(plan.absorb)
        changed = plan.changes or any((survivor_fields.get(a) or None) != (after.get(a) or None)
                                      for a in (*ATTRIBUTES, "external_user"))
        return Resolution(profile_id=plan.profile_id, created=plan.create, merged=plan.absorb, maybe=plan.maybe,
                          attributes={a: after[a] for a in ATTRIBUTES if after.get(a)}, changed=changed,
                          aliases=tuple(sorted(aliases, key=_number)))

    def _write(self, pipe: Any, plan: Plan, pid: str, snap: _Snapshot, *, now: float, name: str | None,
               attributes: Mapping[str, str | None] | None, directory: bool) -> None:
        profile = Keys.profile(pid)
        if plan.create:
            pipe.hset(profile, mapping={"created_at": repr(now)})
        for absorbed in plan.absorb:
            self._queue_absorb(pipe, pid, absorbed, snap, now=now, by=None, group={pid, *plan.absorb})
        for ident in plan.claim:
            pipe.set(Keys.ident(ident), pid)
            pipe.sadd(Keys.ids(pid), ident.token)
        for ident in plan.add_typed:
            pipe.sadd(Keys.typed(pid), ident.token)
            pipe.sadd(Keys.typed_ident(ident), pid)
        for link in plan.maybe:
            self._queue_link(pipe, pid, link.other, link.identifier.token, link.reason, now)
        values = self._merged_attributes(plan, snap)
        if name and not values.get("name"):
            values["name"] = name
        user = next((i.value for i in plan.claim if i.kind == "external_user"), None)
        if user and not values.get("external_user"):
            values["external_user"] = user
        cleared = []
        for attr, value in (attributes or {}).items():
            if value:
                values[attr] = value
            else:
                values.pop(attr, None)
                cleared.append(attr)
        if directory and attributes:
            values["directory_at"] = repr(now)
        pipe.hset(profile, mapping={**values, "updated_at": repr(now)})
        if cleared:
            pipe.hdel(profile, *cleared)

    @staticmethod
    def _queue_link(pipe: Any, a: str, b: str, token: str, reason: str, now: float) -> None:
        note = json.dumps({"identifier": token, "reason": reason, "at": now})
        pipe.hset(Keys.maybe(a), b, note)
        pipe.hset(Keys.maybe(b), a, note)

    def _queue_absorb(self, pipe: Any, survivor: str, absorbed: str, snap: _Snapshot, *, now: float,
                      by: str | None, group: set[str]) -> None:
        """``absorbed`` becomes an alias of ``survivor``: its identifiers, typed identifiers,
        aliases, links and dismissals move over (its history stays and is read with the survivor's).
        ``group``: every profile becoming this one in the same change (no links among them)."""
        data = snap.data[absorbed]
        for token in data.ids:
            pipe.set(Keys.ident(Identifier.from_token(token)), survivor)
        if data.ids:
            pipe.sadd(Keys.ids(survivor), *data.ids)
        for token in data.typed:
            ident = Identifier.from_token(token)
            pipe.srem(Keys.typed_ident(ident), absorbed)
            pipe.sadd(Keys.typed_ident(ident), survivor)
        if data.typed:
            pipe.sadd(Keys.typed(survivor), *data.typed)
        aliases = data.aliases | {absorbed}
        pipe.sadd(Keys.aliases(survivor), *aliases)
        for alias in aliases:
            pipe.hset(Keys.profile(alias), mapping={"merged_into": survivor, "merged_at": repr(now),
                                                    **({"merged_by": by} if by else {})})
        survivor_data = snap.data.get(survivor)
        known = set(survivor_data.maybe) if survivor_data else set()
        for other, note in data.maybe.items():
            pipe.hdel(Keys.maybe(other), absorbed)
            if other in group or snap.root(other) in group or other in known:
                continue
            pipe.hset(Keys.maybe(survivor), other, note)
            pipe.hset(Keys.maybe(other), survivor, note)
        pipe.hdel(Keys.maybe(survivor), absorbed)
        dismissed = {o for o in data.dismissed if o not in group and snap.root(o) not in group}
        for other in data.dismissed:
            pipe.srem(Keys.dismissed(other), absorbed)
        for other in dismissed:
            pipe.sadd(Keys.dismissed(other), survivor)
        if dismissed:
            pipe.sadd(Keys.dismissed(survivor), *dismissed)
        pipe.delete(Keys.ids(absorbed), Keys.typed(absorbed), Keys.aliases(absorbed), Keys.maybe(absorbed),
                    Keys.dismissed(absorbed))

    # a person's decisions
    def merge(self, a: str, b: str, *, now: float, by: str) -> tuple[str, str]:
        """Merge two profiles (a person confirmed they are one customer): (survivor, absorbed).
        UnknownProfile, or MergeRefused for two company users."""
        def attempt(pipe: Any, watch: Callable[[set[str]], None]) -> tuple[str, str]:
            snap = self._read([], [], extra=[a, b], watch=watch)
            roots = []
            for pid in (a, b):
                root = snap.root(pid)
                if not snap.data.get(root) or not snap.data[root].fields:
                    raise UnknownProfile(pid)
                roots.append(root)
            view = IndexView(profiles={r: ProfileFacts(external_user=snap.data[r].fields.get("external_user"))
                                       for r in roots})
            survivor, absorbed = plan_merge(roots[0], roots[1], view)
            pipe.multi()
            self._queue_absorb(pipe, survivor, absorbed, snap, now=now, by=by, group={survivor, absorbed})
            fields = snap.data[survivor].fields
            fill = {k: v for k, v in snap.data[absorbed].fields.items()
                    if k in (*ATTRIBUTES, "external_user") and v and not fields.get(k)}
            pipe.hset(Keys.profile(survivor), mapping={**fill, "updated_at": repr(now)})
            pipe.srem(Keys.dismissed(survivor), absorbed)
            pipe.execute()
            return survivor, absorbed

        return self._transaction(attempt)

    def dismiss(self, a: str, b: str, *, now: float, by: str) -> bool:
        """A person says the maybe-link between two profiles is wrong: it goes, and never comes
        back. False when there was no such link."""
        ra, rb = self.root(a), self.root(b)
        if ra is None or rb is None:
            raise UnknownProfile(a if ra is None else b)
        if ra == rb:
            raise MergeRefused(f"{a} and {b} are one profile")
        if not self.client.hexists(Keys.maybe(ra), rb):
            return False
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(Keys.maybe(ra), rb)
            pipe.hdel(Keys.maybe(rb), ra)
            pipe.sadd(Keys.dismissed(ra), rb)
            pipe.sadd(Keys.dismissed(rb), ra)
            pipe.hset(Keys.profile(ra), "updated_at", repr(now))
            pipe.execute()
        return True

    def update_attributes(self, pid: str, attributes: Mapping[str, str | None], *, now: float) -> Profile:
        """Set (or, with None, clear) the directory attributes of a profile (or of its survivor)."""
        root = self.root(pid)
        if root is None:
            raise UnknownProfile(pid)
        values = {k: v for k, v in attributes.items() if v}
        cleared = [k for k, v in attributes.items() if not v]
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(Keys.profile(root), mapping={**values, "directory_at": repr(now), "updated_at": repr(now)})
            if cleared:
                pipe.hdel(Keys.profile(root), *cleared)
            pipe.execute()
        return self.profile(root)  # type: ignore[return-value]

    # lookups
    def root(self, pid: str) -> str | None:
        """The profile an id stands for now (itself, or the survivor of its merge); None if unknown."""
        if not is_profile_id(pid):
            return None
        for _ in range(MAX_ALIAS_HOPS):
            fields = self.client.hmget(Keys.profile(pid), "created_at", "merged_into")
            if not fields[0]:
                return None
            if not fields[1]:
                return pid
            pid = fields[1]
        return pid

    def owner(self, ident: Identifier) -> str | None:
        pid = self.client.get(Keys.ident(ident))
        return self.root(pid) if pid else None

    def carriers(self, ident: Identifier) -> list[str]:
        """Profiles that carry the identifier typed in (not proved)."""
        roots = {self.root(p) for p in self.client.smembers(Keys.typed_ident(ident))}
        return sorted((r for r in roots if r), key=lambda p: int(p.removeprefix(PROFILE_PREFIX)))

    def profile(self, pid: str) -> Profile | None:
        root = self.root(pid)
        if root is None:
            return None
        pipe = self.client.pipeline(transaction=False)
        _queue_profile_reads(pipe, root)
        data = _decode_profile_reads(pipe.execute())
        f = data.fields
        maybe = []
        for other, note in sorted(data.maybe.items()):
            info = json.loads(note)
            maybe.append({"other": self.root(other) or other, "identifier": info.get("identifier"),
                          "reason": info.get("reason"), "at": info.get("at")})
        return Profile(
            profile_id=root, created_at=_float(f.get("created_at")), updated_at=_float(f.get("updated_at")),
            name=f.get("name") or None, tier=f.get("tier") or None, language=f.get("language") or None,
            external_user=f.get("external_user") or None, directory_at=_float(f.get("directory_at")),
            identifiers=tuple(sorted(Identifier.from_token(t) for t in data.ids)),
            typed=tuple(sorted(Identifier.from_token(t) for t in data.typed)),
            aliases=tuple(sorted(data.aliases, key=lambda p: int(p.removeprefix(PROFILE_PREFIX)))),
            maybe=tuple(maybe), dismissed=tuple(sorted(data.dismissed)),
        )

    # history (what routing reads: recent tickets and complaints, open tickets, last agent)
    def _history_ids(self, pid: str) -> list[str]:
        root = self.root(pid) or pid
        return [root, *sorted(self.client.smembers(Keys.aliases(root)))]

    def history(self, pid: str | None, *, now: float, exclude: str | None = None) -> ProfileHistory:
        if not pid:
            return ProfileHistory()
        ids = self._history_ids(pid)
        pipe = self.client.pipeline(transaction=False)
        self.queue_history_reads(pipe, ids, now=now)
        return self.history_from(pipe.execute(), ids, exclude=exclude)

    @staticmethod
    def queue_history_reads(pipe: Any, ids: Sequence[str], *, now: float) -> None:
        """Read the history of a profile and its aliases (``ids``) in a caller's pipeline."""
        since = f"({now - HISTORY_WINDOW_SECONDS!r}"
        for one in ids:
            base = Keys.history(one)
            pipe.zrangebyscore(base + ":tickets", since, "+inf")
            pipe.zrangebyscore(base + ":complaints", since, "+inf")
            pipe.zrange(base + ":open", 0, -1, withscores=True)
            pipe.hgetall(base + ":channels")
            pipe.hgetall(base)

    @staticmethod
    def history_from(values: Sequence[Any], ids: Sequence[str], *, exclude: str | None = None) -> ProfileHistory:
        tickets: set[str] = set()
        complaints: set[str] = set()
        open_: dict[str, OpenTicket] = {}
        last: tuple[float, str] | None = None
        n = HISTORY_READS
        for i in range(len(ids)):
            t, c, o, channels, info = values[i * n:(i + 1) * n]
            tickets.update(t)
            complaints.update(c)
            for ticket_id, score in o:
                if ticket_id != exclude and (ticket_id not in open_ or open_[ticket_id].last_activity < score):
                    open_[ticket_id] = OpenTicket(ticket_id, channels.get(ticket_id, ""), float(score))
            at = _float(info.get("last_agent_at"))
            if info.get("last_agent_id") and at is not None and (last is None or at > last[0]):
                last = (at, info["last_agent_id"])
        tickets.discard(exclude or "")
        complaints.discard(exclude or "")
        return ProfileHistory(recent_tickets=len(tickets), recent_complaints=len(complaints),
                              open=tuple(sorted(open_.values(), key=lambda t: (-t.last_activity, t.ticket_id))),
                              last_agent_id=last[1] if last else None, last_agent_at=last[0] if last else None)

    @staticmethod
    def queue_ticket(pipe: Any, pid: str | None, ticket_id: str, *, channel: str, received: float,
                     complaint: bool) -> None:
        """Note a ticket (received or reopened) in the customer's history, as open."""
        if not pid:
            return
        base = Keys.history(pid)
        pipe.zadd(base + ":tickets", {ticket_id: received})
        pipe.zremrangebyscore(base + ":tickets", "-inf", received - HISTORY_WINDOW_SECONDS)
        if complaint:
            pipe.zadd(base + ":complaints", {ticket_id: received})
            pipe.zremrangebyscore(base + ":complaints", "-inf", received - HISTORY_WINDOW_SECONDS)
        pipe.zadd(base + ":open", {ticket_id: received}, gt=True)  # GT still adds a new member
        pipe.hset(base + ":channels", ticket_id, channel)
        for suffix in (":tickets", ":complaints", ":open", ":channels"):
            pipe.expire(base + suffix, HISTORY_TTL_SECONDS)

    def queue_ticket_by_script(self, pipe: Any, pid: str | None, ticket_id: str, *, channel: str, received: float,
                               complaint: bool) -> None:
        """``queue_ticket`` as one EVALSHA (the caller's pipeline loads ``note_ticket_script`` on
        NOSCRIPT and sends again)."""
        if not pid:
            return
        base = Keys.history(pid)
        pipe.evalsha(self.note_ticket_script.sha, 4, base + ":tickets", base + ":complaints", base + ":open",
                     base + ":channels", ticket_id, repr(received), repr(received - HISTORY_WINDOW_SECONDS),
                     "1" if complaint else "0", channel, HISTORY_TTL_SECONDS)

    @staticmethod
    def queue_agent(pipe: Any, pid: str | None, agent_id: str, *, at: float) -> None:
        if pid:
            pipe.hset(Keys.history(pid), mapping={"last_agent_id": agent_id, "last_agent_at": repr(at)})
            pipe.expire(Keys.history(pid), HISTORY_TTL_SECONDS)

    def record_ticket(self, pid: str | None, ticket_id: str, *, channel: str, received: float,
                      complaint: bool = False) -> None:
        if pid:
            pipe = self.client.pipeline(transaction=True)
            self.queue_ticket(pipe, pid, ticket_id, channel=channel, received=received, complaint=complaint)
            pipe.execute()

    def ticket_closed(self, pid: str | None, ticket_id: str) -> None:
        if pid:
            pipe = self.client.pipeline(transaction=True)
            self.queue_ticket_closed(pipe, pid, ticket_id)
            pipe.execute()

    @staticmethod
    def queue_ticket_closed(pipe: Any, pid: str, ticket_id: str) -> None:
        base = Keys.history(pid)
        pipe.zrem(base + ":open", ticket_id)
        pipe.hdel(base + ":channels", ticket_id)

    def touch_ticket(self, pid: str | None, ticket_id: str, *, at: float) -> None:
        """A contact joined the open ticket: its last activity moves on (wherever it is recorded)."""
        if not pid:
            return
        pipe = self.client.pipeline(transaction=False)
        for one in self._history_ids(pid):
            pipe.zadd(Keys.history(one) + ":open", {ticket_id: at}, xx=True, gt=True)
        pipe.execute()

    # what became of a contact
    def decide_contact(self, ticket_id: str, outcome: ContactOutcome) -> ContactOutcome:
        """Record the decision for a received contact unless one was recorded; the recorded one
        comes back (a redelivery repeats the first decision, never makes a second one)."""
        body = json.dumps({"outcome": outcome.outcome, "customer_id": outcome.customer_id,
                           "into_ticket_id": outcome.into_ticket_id, "at": outcome.at})
        pipe = self.client.pipeline(transaction=True)
        pipe.set(Keys.contact(ticket_id), body, nx=True, ex=CONTACT_TTL_SECONDS)
        pipe.get(Keys.contact(ticket_id))
        _, stored = pipe.execute()
        return _contact(stored) or outcome

    def contact(self, ticket_id: str) -> ContactOutcome | None:
        return _contact(self.client.get(Keys.contact(ticket_id)))

    @staticmethod
    def queue_contact_read(pipe: Any, ticket_id: str) -> None:
        pipe.get(Keys.contact(ticket_id))

    @staticmethod
    def contact_from(raw: str | None) -> ContactOutcome | None:
        return _contact(raw)


def _contact(raw: str | None) -> ContactOutcome | None:
    if not raw:
        return None
    data = json.loads(raw)
    return ContactOutcome(data["outcome"], data.get("customer_id"), data.get("into_ticket_id"), data.get("at"))


def _number(pid: str) -> int:
    return int(pid.removeprefix(PROFILE_PREFIX))


def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None
