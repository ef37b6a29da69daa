"""Trace replay: the dispatcher's routing on a simulated clock (pure: dataclasses in, results out).

Each contact of a trace arrives, is offered to the agents online with room on its channel
through the real ``routing.rank_agents`` (the same filters: skill, language, capacity, judged by
the dispatcher's ``routing:`` capacity model, and the same score weights), and a *routing
policy* picks among the eligible agents:

- ``default``: the dispatcher's own order (``Ranking.ranked[0]``);
- ``least_loaded``: the eligible agent with the lowest load share: each contact in hand counts
  1/capacity of its channel (1 chat of 3 + 2 emails of 10 = 0.53), ties in the dispatcher's order;
- ``round_robin``: the next eligible agent in roster order after the one assigned last.

A contact nobody can take waits in the queue, ordered like the dispatcher's: priority level
first, then SLA due time (arrival + first-response target), then arrival. It abandons when its
patience runs out while still waiting (a contact is still answered at exactly its patience).
When an agent frees a slot or starts a shift, the waiting contacts they can take are offered in
queue order. An agent whose shift ends finishes the work in hand but takes no more.

Events at the same instant: shift ends, then completions, shift starts, arrivals, abandonments.

Time is float seconds on any epoch; nothing here sleeps or reads a clock.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from services.dispatcher.policy import DEFAULT_POLICY, RoutingPolicy
from services.dispatcher.routing import AgentSnapshot, Ranking, TicketNeeds, rank_agents
from shared.sla_policy import Policy, select_policy

POLICIES = ("default", "least_loaded", "round_robin")
CHANNELS = ("email", "chat", "phone")
LEVELS = ("P1", "P2", "P3", "P4")
LEVEL_RANK = {level: i for i, level in enumerate(LEVELS)}
DEFAULT_TIER = "standard"
# A contact without a language can be taken by anyone; an agent without languages speaks all.
ANY_LANGUAGE = "*"
PROGRESS_EVERY = 2000  # contacts between progress callbacks

# Event kinds; the number is the order of events at the same instant.
_SHIFT_END, _COMPLETE, _SHIFT_START, _ARRIVE, _ABANDON = range(5)
_WAITING, _ANSWERED, _ABANDONED = 0, 1, 2


def priority_level(priority: int) -> str:
    """Trace priority (higher = more urgent) → SLA level: 4 and above P1, 3 P2, 2 P3, 1 and below P4."""
    return LEVELS[4 - max(1, min(4, priority))]


@dataclass(frozen=True)
class Contact:
    contact_id: str
    arrival: float
    channel: str
    skills: tuple[str, ...]
    priority: int
    handle_seconds: float
    patience_seconds: float | None = None  # None: waits forever
    customer_tier: str = DEFAULT_TIER
    language: str = ANY_LANGUAGE


@dataclass(frozen=True)
class Shift:
    agent_id: str
    start: float
    end: float
    skills: Mapping[str, int]
    capacity: Mapping[str, int]  # channel → contacts at once
    languages: tuple[str, ...] = ()  # empty: speaks every language


@dataclass(frozen=True)
class Stats:
    contacts: int
    answered: int
    abandoned: int
    unanswered: int  # still waiting when no event was left (no agent could ever take them)
    with_target: int  # contacts an SLA policy gave a target
    within_target: int  # answered no later than the target
    sla_attainment: float | None  # within_target / with_target
    mean_wait: float | None  # over answered contacts, seconds
    p90_wait: float | None  # nearest rank
    abandonment_rate: float | None


@dataclass(frozen=True)
class AgentStats:
    agent_id: str
    staffed_seconds: float
    busy_seconds: float  # staffed time with at least one contact in hand
    occupancy: float | None
    handled: int


@dataclass(frozen=True)
class Outcome:
    contact_id: str
    status: str  # answered | abandoned | unanswered
    agent_id: str | None = None
    wait: float | None = None  # seconds from arrival to assignment, or to abandonment


@dataclass(frozen=True)
class Result:
    policy: str
    overall: Stats
    by_priority: Mapping[str, Stats]  # P1..P4, levels present in the trace only
    agents: tuple[AgentStats, ...]
    decisions: int  # rank_agents calls
    outcomes: tuple[Outcome, ...] = ()  # per contact, in trace order (not in to_dict: too long)

    def to_dict(self) -> dict:
        return {"policy": self.policy, "overall": _stats_dict(self.overall),
                "by_priority": {k: _stats_dict(v) for k, v in self.by_priority.items()},
                "agents": [vars(a).copy() for a in self.agents], "decisions": self.decisions}


def _stats_dict(stats: Stats) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(stats).items()}


class SimulationError(ValueError):
    """The inputs cannot be simulated (unknown policy, inconsistent shifts)."""


Progress = Callable[[int, int], None]  # (contacts arrived, contacts in trace)


def simulate(contacts: Sequence[Contact], shifts: Sequence[Shift], sla_policies: tuple[Policy, ...],
             policy: str = "default", progress: Progress | None = None,
             routing: RoutingPolicy = DEFAULT_POLICY) -> Result:
    """``routing``: the dispatcher's ``routing:`` section (capacity model and score weights)."""
    if policy not in POLICIES:
        raise SimulationError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    return _Run(contacts, shifts, sla_policies, policy, progress, routing).run()


def simulate_all(contacts: Sequence[Contact], shifts: Sequence[Shift], sla_policies: tuple[Policy, ...],
                 policies: Iterable[str] = POLICIES, progress: Callable[[str, int, int], None] | None = None,
                 routing: RoutingPolicy = DEFAULT_POLICY) -> list[Result]:
    results = []
    for name in policies:
        report = (lambda done, total, name=name: progress(name, done, total)) if progress else None
        results.append(simulate(contacts, shifts, sla_policies, name, report, routing))
    return results


# --- the run -------------------------------------------------------------------------------------

class _Agent:
    __slots__ = ("agent_id", "order", "shifts", "online", "skills", "languages", "capacity", "load",
                 "in_hand", "last_assigned_at", "snapshot", "busy_since", "busy_segments", "handled", "serves")

    def __init__(self, agent_id: str, order: int):
        self.agent_id = agent_id
        self.order = order
        self.shifts: list[tuple[float, float]] = []
        self.online = False
        self.skills: Mapping[str, int] = {}
        self.languages: tuple[str, ...] = ()
        self.capacity: Mapping[str, int] = {}
        self.load: dict[str, int] = {}
        self.in_hand = 0
        self.last_assigned_at: float | None = None
        self.snapshot: AgentSnapshot | None = None
        self.busy_since = 0.0
        self.busy_segments: list[tuple[float, float]] = []
        self.handled = 0
        self.serves: dict[tuple, bool] = {}  # queue class → skills, language and channel fit

    def room(self, channel: str) -> bool:
        return self.capacity.get(channel, 0) > self.load.get(channel, 0)

    def refresh(self) -> None:
        self.snapshot = AgentSnapshot(agent_id=self.agent_id, presence="online", skills=self.skills,
                                      languages=self.languages, capacity=self.capacity, load=dict(self.load),
                                      last_assigned_at=self.last_assigned_at)

    def load_share(self) -> float:
        """Contacts in hand as shares of each channel's capacity, summed (the roster's one budget)."""
        return sum(n / self.capacity[ch] if self.capacity.get(ch) else math.inf
                   for ch, n in self.load.items() if n)


class _Run:
    def __init__(self, contacts: Sequence[Contact], shifts: Sequence[Shift], sla_policies: tuple[Policy, ...],
                 policy: str, progress: Progress | None, routing: RoutingPolicy = DEFAULT_POLICY):
        self.contacts = contacts
        self.policy = policy
        self.routing = routing
        self.progress = progress
        self.events: list[tuple] = []
        self.seq = 0
        self.agents: dict[str, _Agent] = {}
        self.rr_last = -1  # roster order of the agent round robin assigned last
        self.decisions = 0
        n = len(contacts)
        self.status = [_WAITING] * n
        self.waits: list[float | None] = [None] * n
        self.assigned_to: list[str | None] = [None] * n
        self.targets: list[float | None] = [None] * n
        self.needs: list[TicketNeeds] = [None] * n  # type: ignore[list-item]
        self.queues: dict[tuple, list[tuple]] = {}  # class (channel, skills, language) → heap
        self.classes = [(c.channel, c.skills, c.language) for c in contacts]
        self.with_room: dict[str, dict[str, _Agent]] = {ch: {} for ch in {c.channel for c in contacts}}
        languages = sorted({c.language for c in contacts} | {ANY_LANGUAGE})
        self.all_languages = tuple(languages)
        target_cache: dict[tuple, float | None] = {}
        for i, c in enumerate(contacts):
            key = (priority_level(c.priority), c.channel, c.customer_tier)
            if key not in target_cache:
                chosen = select_policy(sla_policies, priority=key[0], channel=key[1], customer_tier=key[2])
                target_cache[key] = float(chosen.first_response_seconds) if chosen else None
            self.targets[i] = target_cache[key]
            self.needs[i] = TicketNeeds(ticket_id=c.contact_id, channel=c.channel,
                                        required_skills=c.skills, language=c.language)
            self._push(c.arrival, _ARRIVE, i)
        for s in sorted(shifts, key=lambda s: (s.start, s.agent_id)):
            agent = self.agents.get(s.agent_id)
            if agent is None:
                agent = self.agents[s.agent_id] = _Agent(s.agent_id, len(self.agents))
            if s.end <= s.start:
                raise SimulationError(f"shift of {s.agent_id} ends before it starts")
            if agent.shifts and agent.shifts[-1][1] > s.start:
                raise SimulationError(f"shifts of {s.agent_id} overlap")
            agent.shifts.append((s.start, s.end))
            self._push(s.start, _SHIFT_START, s)
            self._push(s.end, _SHIFT_END, s)
        # Roster order (round robin's rotation) is the staffing's order of first appearance.
        first_seen = {}
        for s in shifts:
            first_seen.setdefault(s.agent_id, len(first_seen))
        for agent in self.agents.values():
            agent.order = first_seen[agent.agent_id]

    def _push(self, at: float, kind: int, payload) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, kind, self.seq, payload))

    def run(self) -> Result:
        total, arrived = len(self.contacts), 0
        events = self.events
        while events:
            now, kind, _, payload = heapq.heappop(events)
            if kind == _ARRIVE:
                self._arrive(payload, now)
                arrived += 1
                if self.progress and arrived % PROGRESS_EVERY == 0:
                    self.progress(arrived, total)
            elif kind == _COMPLETE:
                self._complete(payload[0], payload[1], now)
            elif kind == _ABANDON:
                if self.status[payload] == _WAITING:
                    self.status[payload] = _ABANDONED
                    self.waits[payload] = now - self.contacts[payload].arrival
            elif kind == _SHIFT_START:
                self._shift_start(payload, now)
            else:
                self._shift_end(payload, now)
        if self.progress and arrived % PROGRESS_EVERY:
            self.progress(total, total)
        return self._result()

    def _update_room(self, agent: _Agent) -> None:
        """Channels where ``agent`` may have room: below its cap there (routing may still find
        them full under a shared budget, see _offer)."""
        for channel, agents in self.with_room.items():
            if agent.online and agent.room(channel):
                agents[agent.agent_id] = agent
            else:
                agents.pop(agent.agent_id, None)

    # events
    def _arrive(self, i: int, now: float) -> None:
        c = self.contacts[i]
        if self._offer(i, now):
            return
        target = self.targets[i]
        due = c.arrival + target if target is not None else math.inf
        cls = self.classes[i]
        heap = self.queues.get(cls)
        if heap is None:
            heap = self.queues[cls] = []
        heapq.heappush(heap, (LEVEL_RANK[priority_level(c.priority)], due, c.arrival, i))
        if c.patience_seconds is not None:
            self._push(now + c.patience_seconds, _ABANDON, i)

    def _complete(self, agent: _Agent, channel: str, now: float) -> None:
        agent.load[channel] -= 1
        agent.in_hand -= 1
        if agent.in_hand == 0:
            agent.busy_segments.append((agent.busy_since, now))
        if agent.online:
            agent.refresh()
            self._update_room(agent)
            self._drain_for(agent, now)

    def _shift_start(self, shift: Shift, now: float) -> None:
        agent = self.agents[shift.agent_id]
        agent.skills = dict(shift.skills)
        agent.languages = tuple(shift.languages) + (ANY_LANGUAGE,) if shift.languages else self.all_languages
        agent.capacity = dict(shift.capacity)
        agent.serves = {}
        agent.online = True
        agent.refresh()
        self._update_room(agent)
        self._drain_for(agent, now)

    def _shift_end(self, shift: Shift, now: float) -> None:
        agent = self.agents[shift.agent_id]
        agent.online = False
        self._update_room(agent)

    # routing
    def _offer(self, i: int, now: float) -> bool:
        """Rank the agents with room on the contact's channel; assign per policy. False: none eligible."""
        needs = self.needs[i]
        cls = self.classes[i]
        # Agents that cannot take this kind of contact at all are left out before ranking (the
        # dispatcher's drain does the same with agents without room): it only saves time.
        candidates = [a.snapshot for a in self.with_room[needs.channel].values() if self._fits(a, cls)]
        if not candidates:
            return False
        routing = self.routing
        ranking = rank_agents(needs, candidates, now, capacity_model=routing.capacity_model,
                              proficiency_weight=routing.proficiency_weight, preferred_weight=routing.preferred_weight)
        self.decisions += 1
        for agent_id, why in ranking.rejected.items():
            # Routing knows the capacity model (per channel or one shared budget): an agent it
            # finds full for this channel is left out of it until their own load changes.
            if why.startswith("capacity"):
                self.with_room[needs.channel].pop(agent_id, None)
        if not ranking.ranked:
            return False
        self._assign(i, self.agents[self._choose(ranking)], now)
        return True

    def _choose(self, ranking: Ranking) -> str:
        ranked = ranking.ranked
        if self.policy == "default" or len(ranked) == 1:
            return ranked[0].agent_id
        agents = self.agents
        if self.policy == "least_loaded":
            return min(ranked, key=lambda c: agents[c.agent_id].load_share()).agent_id  # min is stable
        size = len(agents)
        last = self.rr_last
        return min(ranked, key=lambda c: (agents[c.agent_id].order - last - 1) % size).agent_id

    def _assign(self, i: int, agent: _Agent, now: float) -> None:
        c = self.contacts[i]
        self.status[i] = _ANSWERED
        self.waits[i] = now - c.arrival
        self.assigned_to[i] = agent.agent_id
        if agent.in_hand == 0:
            agent.busy_since = now
        agent.in_hand += 1
        agent.load[c.channel] = agent.load.get(c.channel, 0) + 1
        agent.last_assigned_at = now
        agent.handled += 1
        agent.refresh()
        self._update_room(agent)
        self.rr_last = agent.order
        self._push(now + c.handle_seconds, _COMPLETE, (agent, c.channel))

    def _fits(self, agent: _Agent, cls: tuple) -> bool:
        """Could ``agent`` ever take contacts of this queue class (ignoring load)? Only prunes the
        drain; rank_agents decides."""
        fits = agent.serves.get(cls)
        if fits is None:
            channel, skills, language = cls
            fits = (agent.capacity.get(channel, 0) > 0 and language in agent.languages
                    and all(agent.skills.get(s, 0) > 0 for s in skills))
            agent.serves[cls] = fits
        return fits

    def _drain_for(self, agent: _Agent, now: float) -> None:
        """``agent`` has new room: offer the waiting contacts they could take, in queue order.

        Before this event no waiting contact fitted any agent with room (every event ends with a
        drain), so only the classes this agent fits can move.
        """
        classes = [cls for cls, heap in self.queues.items() if heap and self._fits(agent, cls)]
        status = self.status
        while classes:
            best_cls, best = None, None
            for cls in list(classes):
                heap = self.queues[cls]
                while heap and status[heap[0][3]] != _WAITING:
                    heapq.heappop(heap)
                if not heap or agent.agent_id not in self.with_room[cls[0]]:
                    classes.remove(cls)
                elif best is None or heap[0] < best:
                    best_cls, best = cls, heap[0]
            if best_cls is None:
                return
            if self._offer(best[3], now):
                heapq.heappop(self.queues[best_cls])
            else:
                classes.remove(best_cls)

    # results
    def _result(self) -> Result:
        by_level: dict[str, list[int]] = {}
        for i, c in enumerate(self.contacts):
            by_level.setdefault(priority_level(c.priority), []).append(i)
        overall = self._stats(range(len(self.contacts)))
        by_priority = {level: self._stats(by_level[level]) for level in LEVELS if level in by_level}
        agents = []
        for agent in sorted(self.agents.values(), key=lambda a: a.order):
            staffed = sum(end - start for start, end in agent.shifts)
            busy = sum(_overlap(seg, agent.shifts) for seg in agent.busy_segments)
            agents.append(AgentStats(agent_id=agent.agent_id, staffed_seconds=staffed, busy_seconds=busy,
                                     occupancy=busy / staffed if staffed else None, handled=agent.handled))
        names = {_WAITING: "unanswered", _ANSWERED: "answered", _ABANDONED: "abandoned"}
        outcomes = tuple(Outcome(c.contact_id, names[self.status[i]], self.assigned_to[i], self.waits[i])
                         for i, c in enumerate(self.contacts))
        return Result(policy=self.policy, overall=overall, by_priority=by_priority, agents=tuple(agents),
                      decisions=self.decisions, outcomes=outcomes)

    def _stats(self, indexes: Iterable[int]) -> Stats:
        contacts = answered = abandoned = with_target = within = 0
        waits = []
        for i in indexes:
            contacts += 1
            st = self.status[i]
            target = self.targets[i]
            if target is not None:
                with_target += 1
            if st == _ANSWERED:
                answered += 1
                wait = self.waits[i]
                waits.append(wait)
                if target is not None and wait <= target:
                    within += 1
            elif st == _ABANDONED:
                abandoned += 1
        waits.sort()
        return Stats(
            contacts=contacts, answered=answered, abandoned=abandoned,
            unanswered=contacts - answered - abandoned, with_target=with_target, within_target=within,
            sla_attainment=within / with_target if with_target else None,
            mean_wait=sum(waits) / len(waits) if waits else None,
            p90_wait=waits[max(0, math.ceil(0.9 * len(waits)) - 1)] if waits else None,
            abandonment_rate=abandoned / contacts if contacts else None,
        )


def _overlap(segment: tuple[float, float], shifts: list[tuple[float, float]]) -> float:
    start, end = segment
    return sum(max(0.0, min(end, s_end) - max(start, s_start)) for s_start, s_end in shifts)
