"""Who may take a ticket, and in which order to offer it (pure: snapshots in, ranking out).

Filters, in this order, each naming why an agent was left out (the text before the colon is
the rejection *kind* counted in decision records):

1. presence — only ``online`` agents take work (away/offline agents are never auto-assigned);
2. tier — the agent's tier is one the ticket may go to (L1 by default; escalation raises it);
3. group — the agent is in the ticket's group, when it has one;
4. skill — the agent has every required skill (any proficiency);
5. language — the agent speaks the ticket's language;
6. declined — the agent declined (or let expire) this ticket recently;
7. capacity — the agent has room for one more ticket on this channel. With the ``shared``
   model a roster capacity ``{email: 10, chat: 3, phone: 1}`` is one budget: each open ticket
   uses 1/cap of it on its channel, and a new one fits while the shares sum to at most 1.
   ``per_channel`` makes each number an independent cap;
8. fairness — the agent already had the policy's maximum of assignments in its window.

Eligible agents are scored: spare capacity share (0..1), plus small weighted bonuses for
required-skill proficiency (normalised 0..1) and the share of preferred skills the agent has;
ties go to the longest idle, then by id so the order is total. A sticky agent (a reopened
ticket's owner, a returning customer's last agent) goes first when eligible.

The ranking is advice: the store's atomic claim re-checks presence, capacity and fairness,
and the caller walks down the ranking until a claim succeeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

ONLINE = "online"
TIERS = ("L1", "L2", "duty_manager")
MAX_PROFICIENCY = 5
SHARE_EPSILON = 1e-9
CANDIDATES_REPORTED = 10
SHARED, PER_CHANNEL = "shared", "per_channel"


@dataclass(frozen=True)
class TicketNeeds:
    ticket_id: str
    channel: str
    required_skills: tuple[str, ...]
    language: str
    preferred_skills: tuple[str, ...] = ()
    group: str | None = None
    tiers: tuple[str, ...] = ("L1",)
    declined_by: frozenset[str] = frozenset()
    sticky_agent_id: str | None = None


@dataclass(frozen=True)
class AgentSnapshot:
    agent_id: str
    presence: str
    skills: Mapping[str, int]
    languages: tuple[str, ...]
    capacity: Mapping[str, int]
    load: Mapping[str, int] = field(default_factory=dict)
    last_assigned_at: float | None = None  # epoch seconds; None = never assigned
    group: str | None = None
    tier: str = "L1"
    recent_assignments: int = 0  # within the fairness window

    def spare(self, channel: str) -> int:
        return max(0, self.capacity.get(channel, 0) - self.load.get(channel, 0))

    def used_share(self) -> float:
        """Share of the one shared budget in use (a channel without capacity but with load is full)."""
        used = 0.0
        for channel, load in self.load.items():
            if load <= 0:
                continue
            cap = self.capacity.get(channel, 0)
            if cap <= 0:
                return 1.0
            used += load / cap
        return used

    def spare_share(self, channel: str, model: str = SHARED) -> float:
        if model == PER_CHANNEL:
            cap = self.capacity.get(channel, 0)
            return self.spare(channel) / cap if cap else 0.0
        return max(0.0, 1.0 - self.used_share())

    def fits(self, channel: str, model: str = SHARED) -> bool:
        cap = self.capacity.get(channel, 0)
        if cap <= 0:
            return False
        if model == PER_CHANNEL:
            return self.load.get(channel, 0) < cap
        return self.used_share() + 1.0 / cap <= 1.0 + SHARE_EPSILON

    def room_for(self, channel: str, model: str = SHARED) -> int:
        """How many more tickets of ``channel`` fit now."""
        cap = self.capacity.get(channel, 0)
        if cap <= 0:
            return 0
        if model == PER_CHANNEL:
            return self.spare(channel)
        return int(math.floor(self.spare_share(channel, model) * cap + SHARE_EPSILON))

    def has_spare_capacity(self, model: str = SHARED) -> bool:
        return any(self.fits(ch, model) for ch in self.capacity)


@dataclass(frozen=True)
class Candidate:
    agent_id: str
    spare: int  # tickets of this channel that still fit
    capacity: int
    proficiency: int  # sum over required skills
    idle_seconds: float  # inf when never assigned
    share: float = 0.0  # spare capacity share 0..1 (per the capacity model)
    proficiency_norm: float = 0.0
    preferred: float = 0.0
    score: float = 0.0
    sticky: bool = False

    @property
    def spare_share(self) -> float:
        return self.share

    def as_score(self) -> dict:
        """The contract's CandidateScore as a dict."""
        return {"agent_id": self.agent_id, "score": round(self.score, 4), "spare_share": round(self.share, 4),
                "proficiency": round(self.proficiency_norm, 4), "preferred": round(self.preferred, 4),
                "idle_seconds": None if math.isinf(self.idle_seconds) else round(self.idle_seconds, 1)}


# Frozen dataclasses set each field through object.__setattr__ in their generated __init__
# (about 3 µs an object on a small machine), and a decision on a large roster builds a page of
# snapshots and candidates: a few hundred objects. These build the same instances (frozen,
# equal, hashable alike) by filling the instance dict directly; every field must be given
# (test_dispatcher_routing checks they name every field).
_new = object.__new__


def new_snapshot(agent_id: str, presence: str, skills: Mapping[str, int], languages: tuple[str, ...],
                 capacity: Mapping[str, int], load: Mapping[str, int], last_assigned_at: float | None,
                 group: str | None, tier: str, recent_assignments: int) -> AgentSnapshot:
    snapshot = _new(AgentSnapshot)
    snapshot.__dict__.update(agent_id=agent_id, presence=presence, skills=skills, languages=languages,
                             capacity=capacity, load=load, last_assigned_at=last_assigned_at, group=group,
                             tier=tier, recent_assignments=recent_assignments)
    return snapshot


def new_candidate(agent_id: str, spare: int, capacity: int, proficiency: int, idle_seconds: float, share: float,
                  proficiency_norm: float, preferred: float, score: float, sticky: bool) -> Candidate:
    candidate = _new(Candidate)
    candidate.__dict__.update(agent_id=agent_id, spare=spare, capacity=capacity, proficiency=proficiency,
                              idle_seconds=idle_seconds, share=share, proficiency_norm=proficiency_norm,
                              preferred=preferred, score=score, sticky=sticky)
    return candidate


@dataclass(frozen=True)
class Ranking:
    considered: int
    ranked: tuple[Candidate, ...]
    rejected: Mapping[str, str]  # agent_id -> why filtered ("kind: detail")


def _used_text(agent: AgentSnapshot) -> str:
    return ", ".join(f"{agent.load[c]}/{agent.capacity.get(c, 0)} {c}" for c in sorted(agent.load) if agent.load[c] > 0)


def rejection(ticket: TicketNeeds, agent: AgentSnapshot, *, capacity_model: str = SHARED,
              fairness_max: int | None = None) -> str | None:
    """Why ``agent`` cannot take ``ticket`` now, or None when eligible."""
    if agent.presence != ONLINE:
        return f"presence: {agent.presence}"
    if agent.tier not in ticket.tiers:
        return f"tier: {agent.tier} not in {'/'.join(ticket.tiers)}"
    if ticket.group is not None and agent.group != ticket.group:
        return f"group: not in {ticket.group}"
    skills = agent.skills
    for skill in ticket.required_skills:  # a loop, not a list per agent: most agents have them all
        if skills.get(skill, 0) <= 0:
            return f"skill: lacks {', '.join(s for s in ticket.required_skills if skills.get(s, 0) <= 0)}"
    if ticket.language not in agent.languages:
        return f"language: does not speak {ticket.language}"
    if agent.agent_id in ticket.declined_by:
        return "declined: passed on this ticket recently"
    cap = agent.capacity.get(ticket.channel, 0)
    if cap <= 0:
        return f"capacity: takes no {ticket.channel}"
    if not agent.fits(ticket.channel, capacity_model):
        if capacity_model == PER_CHANNEL or set(k for k, v in agent.load.items() if v > 0) <= {ticket.channel}:
            return f"capacity: {ticket.channel} full ({agent.load.get(ticket.channel, 0)}/{cap})"
        return f"capacity: no room for a {ticket.channel} ({_used_text(agent)})"
    if fairness_max is not None and agent.recent_assignments >= fairness_max:
        return f"fairness: {agent.recent_assignments} recent assignments (max {fairness_max})"
    return None


def _candidate(ticket: TicketNeeds, agent: AgentSnapshot, now: float, capacity_model: str,
               proficiency_weight: float, preferred_weight: float) -> Candidate:
    idle = math.inf if agent.last_assigned_at is None else max(0.0, now - agent.last_assigned_at)
    skills = agent.skills
    required = ticket.required_skills
    # (one required skill is the common case: no generator for it)
    proficiency = skills.get(required[0], 0) if len(required) == 1 else sum(skills.get(s, 0) for s in required)
    norm = proficiency / (MAX_PROFICIENCY * len(ticket.required_skills)) if ticket.required_skills else 0.0
    preferred = (sum(1 for s in ticket.preferred_skills if skills.get(s, 0) > 0) / len(ticket.preferred_skills)
                 if ticket.preferred_skills else 0.0)
    # spare_share() and room_for() inlined: the used share is summed once per candidate (this
    # runs for every eligible agent of a page of up to INDEX_PAGE_SIZE per decision).
    cap = agent.capacity.get(ticket.channel, 0)
    if capacity_model == PER_CHANNEL:
        spare = agent.spare(ticket.channel)
        share = spare / cap if cap else 0.0
        room = spare if cap > 0 else 0
    else:
        share = max(0.0, 1.0 - agent.used_share())
        room = int(math.floor(share * cap + SHARE_EPSILON)) if cap > 0 else 0
    return new_candidate(agent.agent_id, room, cap, proficiency, idle, share, norm, preferred,
                         share + proficiency_weight * norm + preferred_weight * preferred,
                         agent.agent_id == ticket.sticky_agent_id)


def _order(c: Candidate) -> tuple:
    # Scores are rounded so float noise does not beat the idle tie-break.
    return (not c.sticky, -round(c.score, 6), -c.idle_seconds, c.agent_id)


def rank_agents(ticket: TicketNeeds, agents: Iterable[AgentSnapshot], now: float, *, capacity_model: str = SHARED,
                fairness_max: int | None = None, proficiency_weight: float = 0.1,
                preferred_weight: float = 0.1) -> Ranking:
    """Eligible agents best first, and the reason for every agent left out. ``now``: epoch s."""
    considered = 0
    eligible: list[Candidate] = []
    rejected: dict[str, str] = {}
    add = eligible.append  # (a page of a large roster is up to INDEX_PAGE_SIZE agents per decision)
    for agent in agents:
        considered += 1
        why = rejection(ticket, agent, capacity_model=capacity_model, fairness_max=fairness_max)
        if why is None:
            add(_candidate(ticket, agent, now, capacity_model, proficiency_weight, preferred_weight))
        else:
            rejected[agent.agent_id] = why
    eligible.sort(key=_order)
    return Ranking(considered=considered, ranked=tuple(eligible), rejected=rejected)


def rejection_counts(rejected: Mapping[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for why in rejected.values():
        kind = why.split(":", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def rejection_summary(rejected: Mapping[str, str]) -> str:
    """``"2 presence, 1 capacity"`` — counts by filter, most common first."""
    counts = rejection_counts(rejected)
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def assigned_reason(ticket: TicketNeeds, chosen: Candidate, eligible: int) -> str:
    idle = "never assigned" if math.isinf(chosen.idle_seconds) else f"idle {int(chosen.idle_seconds)}s"
    skills = "+".join(ticket.required_skills)
    sticky = "sticky owner; " if chosen.sticky else ""
    return (f"{sticky}most spare {ticket.channel} capacity ({chosen.spare}/{chosen.capacity} free), "
            f"{skills} proficiency {chosen.proficiency}, {idle}; {eligible} eligible")


def queued_reason(ranking: Ranking) -> str:
    if ranking.considered == 0:
        return "no agents in the roster"
    if ranking.ranked:
        return f"every eligible agent filled up before the claim ({len(ranking.ranked)} tried)"
    return f"no eligible agent: {rejection_summary(ranking.rejected)}"


def next_tier(tier: str) -> str | None:
    index = TIERS.index(tier) if tier in TIERS else 0
    return TIERS[index + 1] if index + 1 < len(TIERS) else None


def tier_rank(tier: str | None) -> int:
    return TIERS.index(tier) if tier in TIERS else 0


def requirement_key(channel: str, required_skills: Iterable[str], language: str, group: str | None,
                    tiers: Iterable[str]) -> str:
    """``email|billing,general|zh|vip|L1,L2``: the queue of tickets an agent must match alike."""
    return "|".join((channel, ",".join(sorted(set(required_skills))), language, group or "*",
                     ",".join(sorted(set(tiers), key=tier_rank))))


@dataclass(frozen=True)
class Requirement:
    channel: str
    skills: tuple[str, ...]
    language: str
    group: str | None
    tiers: tuple[str, ...]

    @classmethod
    def parse(cls, key: str) -> "Requirement":
        channel, skills, language, group, tiers = key.split("|")
        return cls(channel, tuple(s for s in skills.split(",") if s), language, None if group == "*" else group,
                   tuple(t for t in tiers.split(",") if t))

    def served_by(self, agent: AgentSnapshot, capacity_model: str = SHARED) -> bool:
        """Whether ``agent`` could take a ticket of this queue now (declines and fairness aside)."""
        return (agent.presence == ONLINE and agent.tier in self.tiers
                and (self.group is None or agent.group == self.group)
                and all(agent.skills.get(s, 0) > 0 for s in self.skills) and self.language in agent.languages
                and agent.fits(self.channel, capacity_model))
