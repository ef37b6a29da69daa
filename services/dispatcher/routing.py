"""Who may take a ticket, and in which order to offer it (pure: snapshots in, ranking out).

Filters, in this order, each naming why an agent was left out:

1. presence — only ``online`` agents take work (offline agents are never auto-assigned);
2. skill — the agent has every required skill (any proficiency);
3. language — the agent speaks the ticket's language;
4. capacity — the agent has spare capacity *for this channel* (no capacity set = 0).

Eligible agents are ranked by the highest *share* of spare capacity on the ticket's channel
(an agent at 1/2 beats one at 8/10, so part-timers are not starved by big caps), then by
higher proficiency in the required skills, then by the longest time since their last
assignment, then by id so the order is total.

The ranking is advice: the store's atomic claim re-checks presence and capacity, and the
caller walks down the ranking until a claim succeeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

ONLINE = "online"


@dataclass(frozen=True)
class TicketNeeds:
    ticket_id: str
    channel: str
    required_skills: tuple[str, ...]
    language: str


@dataclass(frozen=True)
class AgentSnapshot:
    agent_id: str
    presence: str
    skills: Mapping[str, int]
    languages: tuple[str, ...]
    capacity: Mapping[str, int]
    load: Mapping[str, int] = field(default_factory=dict)
    last_assigned_at: float | None = None  # epoch seconds; None = never assigned

    def spare(self, channel: str) -> int:
        return max(0, self.capacity.get(channel, 0) - self.load.get(channel, 0))

    def has_spare_capacity(self) -> bool:
        return any(self.spare(ch) > 0 for ch in self.capacity)


@dataclass(frozen=True)
class Candidate:
    agent_id: str
    spare: int
    capacity: int
    proficiency: int  # sum over required skills
    idle_seconds: float  # inf when never assigned

    @property
    def spare_share(self) -> float:
        return self.spare / self.capacity if self.capacity else 0.0


@dataclass(frozen=True)
class Ranking:
    considered: int
    ranked: tuple[Candidate, ...]
    rejected: Mapping[str, str]  # agent_id -> why filtered


def rejection(ticket: TicketNeeds, agent: AgentSnapshot) -> str | None:
    """Why ``agent`` cannot take ``ticket`` now, or None when eligible."""
    if agent.presence != ONLINE:
        return f"presence: {agent.presence}"
    missing = [s for s in ticket.required_skills if agent.skills.get(s, 0) <= 0]
    if missing:
        return f"skill: lacks {', '.join(missing)}"
    if ticket.language not in agent.languages:
        return f"language: does not speak {ticket.language}"
    cap = agent.capacity.get(ticket.channel, 0)
    if cap <= 0:
        return f"capacity: takes no {ticket.channel}"
    load = agent.load.get(ticket.channel, 0)
    if load >= cap:
        return f"capacity: {ticket.channel} full ({load}/{cap})"
    return None


def _candidate(ticket: TicketNeeds, agent: AgentSnapshot, now: float) -> Candidate:
    idle = math.inf if agent.last_assigned_at is None else max(0.0, now - agent.last_assigned_at)
    return Candidate(
        agent_id=agent.agent_id,
        spare=agent.spare(ticket.channel),
        capacity=agent.capacity.get(ticket.channel, 0),
        proficiency=sum(agent.skills.get(s, 0) for s in ticket.required_skills),
        idle_seconds=idle,
    )


def _order(c: Candidate) -> tuple:
    return (-c.spare_share, -c.proficiency, -c.idle_seconds, c.agent_id)


def rank_agents(ticket: TicketNeeds, agents: Iterable[AgentSnapshot], now: float) -> Ranking:
    """Eligible agents best first, and the reason for every agent left out. ``now``: epoch s."""
    considered = 0
    eligible: list[Candidate] = []
    rejected: dict[str, str] = {}
    for agent in agents:
        considered += 1
        why = rejection(ticket, agent)
        if why is None:
            eligible.append(_candidate(ticket, agent, now))
        else:
            rejected[agent.agent_id] = why
    eligible.sort(key=_order)
    return Ranking(considered=considered, ranked=tuple(eligible), rejected=rejected)


def rejection_summary(rejected: Mapping[str, str]) -> str:
    """``"2 presence, 1 capacity"`` — counts by filter, most common first."""
    counts: dict[str, int] = {}
    for why in rejected.values():
        kind = why.split(":", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def assigned_reason(ticket: TicketNeeds, chosen: Candidate, eligible: int) -> str:
    idle = "never assigned" if math.isinf(chosen.idle_seconds) else f"idle {int(chosen.idle_seconds)}s"
    skills = "+".join(ticket.required_skills)
    return (f"most spare {ticket.channel} capacity ({chosen.spare}/{chosen.capacity} free), "
            f"{skills} proficiency {chosen.proficiency}, {idle}; {eligible} eligible")


def queued_reason(ranking: Ranking) -> str:
    if ranking.considered == 0:
        return "no agents in the roster"
    if ranking.ranked:
        return f"every eligible agent filled up before the claim ({len(ranking.ranked)} tried)"
    return f"no eligible agent: {rejection_summary(ranking.rejected)}"
