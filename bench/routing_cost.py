"""``python -m bench.routing_cost``: what one routing decision costs with 10 and with 10,000
agents online and 100,000 tickets waiting (the larger may cost at most twice the smaller).

Real Redis, the real ``DispatchStore`` and ``Assigner``; ``emit`` only records (this is the cost
of deciding, not of publishing); classification and the customer-history reads of the
service's ``_route`` are not included (tickets arrive as ``TicketFacts``). Logging at WARNING.

Two setups, each in a Redis database of its own (``--redis-db`` and the next, flushed before and
after), loaded side by side and then measured in alternating rounds (a neighbour's load on a
shared machine falls on both alike). Each has:

- a roster of 10 or 10,000 agents: 30% generalists (``general`` only) with room, 70% specialists
  (``general`` plus one or two of billing/technical/logistics/complaints) loaded to full with
  chats they hold; 60% zh only, 30% zh+en, 10% en only; capacities {email 8-12, chat 2-4,
  phone 1} under the deployed routing policy (deploy/config/routing.yaml: shared capacity,
  offers on); all online;
- 100,000 tickets waiting for specialists (so they wait: every specialist is full): email 65%,
  chat 30%, phone 5%; 70% zh; one specialist skill (10% two); P1-P4.

Loading is bulk, through the store's own scripts: per ticket an HSET of its facts and the
store's enqueue script (the same one ``Assigner.receive`` runs), pipelined 1,000 at a time;
specialists are filled with the store's claim script the same way, presence with its presence
script. The measurements, each op timed alone (``time.perf_counter``), sequentially:

- ``decide→assigned``: ``Assigner.receive`` of a new ``general`` ticket (chat/email, zh/en),
  which a generalist with room takes; the ticket is then resolved (untimed) so room stays;
- ``decide→queued``: ``Assigner.receive`` of a new specialist ticket: nobody has room, so it
  is queued (rank, enqueue, rank again, record, announce); then resolved (untimed) so the
  backlog stays at its size;
- ``resolve+drain``: a specialist's held ticket resolved and their queue drain run (the
  service's ``handle_ticket_resolved`` minus the customer-history write): the freed room takes
  the oldest waiting tickets they serve.

Checks at the end (a failure raises): every new ticket assigned (or queued) exactly once, every
drained ticket assigned exactly once, no agent over capacity and every agent's load equal to
its open set, the backlog down by exactly what the drains took.
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import redis

from bench.stats import summarize
from services.dispatcher.assigner import Assigner
from services.dispatcher.policy import RoutingPolicy, load_policy
from services.dispatcher.store import CHANNELS, DispatchStore, TicketFacts, _facts_fields
from shared import events as ev
from shared.logging import configure_logging
from shared.roster import AgentProfile

REPO = Path(__file__).resolve().parent.parent
POLICY_FILE = REPO / "deploy" / "config" / "routing.yaml"
SPECIALTIES = ("billing", "technical", "logistics", "complaints")
# i % 10 → languages: 60% zh only, 30% zh+en, 10% en only (the first ten cover every kind).
LANGUAGES = (("zh",), ("zh", "en"), ("zh",), ("en", "zh"), ("zh",), ("zh",), ("zh", "en"), ("zh",), ("en",), ("zh",))
GENERALIST = {0, 1, 2}  # i % 10: 30% of the roster
PIPELINE_BATCH = 1000
MAX_RATIO = 2.0


@dataclass
class Recorder:
    """The Assigner's ``emit``: notes (event type, ticket id), publishes nothing."""

    events: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, event_type: str, /, **fields: Any) -> dict:
        self.events.append((event_type, fields["ticket_id"]))
        return fields

    def count(self, event_type: str) -> collections.Counter[str]:
        return collections.Counter(t for kind, t in self.events if kind == event_type)


def make_roster(agents: int, seed: int = 5) -> list[AgentProfile]:
    rng = random.Random(seed)
    roster = []
    for i in range(agents):
        skills = {"general": rng.randint(1, 5)}
        if i % 10 not in GENERALIST:
            for skill in rng.sample(SPECIALTIES, 2 if rng.random() < 0.3 else 1):
                skills[skill] = rng.randint(1, 5)
        roster.append(AgentProfile(
            agent_id=f"a{i:05d}", name=f"Agent {i}", password_hash="scrypt$bench", skills=skills,
            languages=list(LANGUAGES[i % 10]),
            capacity={"email": rng.randint(8, 12), "chat": rng.randint(2, 4), "phone": 1}))
    return roster


def facts(ticket_id: str, *, channel: str, skills: tuple[str, ...], language: str, priority: str,
          now: datetime, due_in: float) -> TicketFacts:
    return TicketFacts(ticket_id=ticket_id, trace_id=uuid.uuid4().hex, channel=channel, priority=priority,
                       required_skills=skills, language=language, tags=(), received_at=now,
                       sla_due_at=(now + timedelta(seconds=due_in)).timestamp())


def backlog_facts(i: int, rng: random.Random, now: datetime) -> TicketFacts:
    skills = tuple(sorted(rng.sample(SPECIALTIES, 2 if rng.random() < 0.1 else 1)))
    channel = rng.choices(CHANNELS, weights=(65, 30, 5))[0]  # CHANNELS = email, chat, phone
    return facts(f"Q{i:06d}", channel=channel, skills=skills, language="zh" if rng.random() < 0.7 else "en",
                 priority=rng.choices(("P1", "P2", "P3", "P4"), weights=(2, 18, 60, 20))[0], now=now,
                 due_in=rng.uniform(-3600, 8 * 3600))


class Setup:
    """One roster online, specialists full, ``queued`` tickets waiting."""

    def __init__(self, client: redis.Redis, policy: RoutingPolicy, agents: int, queued: int, seed: int):
        self.client = client
        self.policy = policy
        self.agents = make_roster(agents, seed)
        self.queued = queued
        self.rng = random.Random(seed)
        self.store = DispatchStore(client, policy)
        self.recorder = Recorder()
        self.assigner = Assigner(self.store, self.recorder, clock=lambda: datetime.now(timezone.utc), policy=policy)
        self.specialists = [a for i, a in enumerate(self.agents) if i % 10 not in GENERALIST]
        self.load_seconds: dict[str, float] = {}

    def load(self) -> None:
        client, store = self.client, self.store
        client.flushdb()
        t0 = time.perf_counter()
        store.load_roster(self.agents)
        now = time.time()
        self._pipelined(self.agents, lambda pipe, a: store._set_presence(
            keys=[store.presence_key, store.presence_at_key], args=[a.agent_id, "online", repr(now), self.policy.capacity_model],
            client=pipe))
        self.load_seconds["roster_online"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        fill = []  # (agent, facts): chats up to each specialist's chat capacity, which fills the shared budget
        stamp = datetime.now(timezone.utc)
        for agent in self.specialists:
            skill = next(s for s in agent.skills if s != "general")
            for n in range(agent.capacity["chat"]):
                fill.append((agent, facts(f"F{agent.agent_id}-{n}", channel="chat", skills=(skill,),
                                          language=agent.languages[0], priority="P3", now=stamp, due_in=600)))
        def claim(pipe: redis.client.Pipeline, item: tuple[AgentProfile, TicketFacts]) -> None:
            agent, f = item
            pipe.hset(store.ticket_key(f.ticket_id), mapping={**_facts_fields(f), "state": "new"})
            store._claim(keys=store._claim_keys(f.ticket_id, agent.agent_id),
                         args=store._claim_args(f.ticket_id, agent.agent_id, "chat", time.time(),
                                                {"reason": "bench fill"}, None, False), client=pipe)
        results = self._pipelined(fill, claim)
        refused = [r for r in results[1::2] if r[0] != "assigned"]
        if refused:
            raise RuntimeError(f"filling specialists: {len(refused)} claims refused, e.g. {refused[0]}")
        self.load_seconds["specialists_filled"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        backlog = [backlog_facts(i, self.rng, stamp) for i in range(self.queued)]

        shapes: dict[tuple, dict[str, str]] = {}  # the facts' hash fields per kind of ticket, serialized once

        def enqueue(pipe: redis.client.Pipeline, f: TicketFacts) -> None:
            shape = (f.channel, f.required_skills, f.language, f.priority)
            if shape not in shapes:
                shapes[shape] = {**_facts_fields(f), "state": "new"}
            fields = {**shapes[shape], "ticket_id": f.ticket_id, "trace_id": f.trace_id,
                      "sla_due_at": repr(f.sla_due_at)}
            pipe.hset(store.ticket_key(f.ticket_id), mapping=fields)
            store._enqueue(keys=[store.ticket_key(f.ticket_id), store.waiting_key, store.relax_key],
                           args=[f.ticket_id, repr(f.queue_score()), repr(now), "", f.requirement_key()], client=pipe)
        self._pipelined(backlog, enqueue)
        if store.waiting_count() != self.queued:
            raise RuntimeError(f"backlog: {store.waiting_count()} waiting, expected {self.queued}")
        self.load_seconds["backlog_queued"] = time.perf_counter() - t0
        self.requirements = len(store.requirements_waiting())

    def _pipelined(self, items: list, queue_one) -> list:
        results: list = []
        for start in range(0, len(items), PIPELINE_BATCH):
            pipe = self.client.pipeline(transaction=False)
            for item in items[start:start + PIPELINE_BATCH]:
                queue_one(pipe, item)
            results += pipe.execute()
        return results

    # --- the measured operations ---------------------------------------------------------------

    def new_ticket(self, kind: str, n: int) -> TicketFacts:
        rng, now = self.rng, datetime.now(timezone.utc)
        language = "zh" if rng.random() < 0.7 else "en"
        if kind == "assigned":
            return facts(f"N{kind[0]}{n:06d}-{uuid.uuid4().hex[:6]}", channel=rng.choice(("chat", "chat", "email")),
                         skills=("general",), language=language, priority=rng.choice(("P2", "P3", "P3", "P4")),
                         now=now, due_in=600)
        return facts(f"N{kind[0]}{n:06d}-{uuid.uuid4().hex[:6]}", channel=rng.choice(("email", "email", "chat")),
                     skills=(rng.choice(SPECIALTIES),), language=language, priority="P3", now=now, due_in=3600)

    def decide(self, kind: str, count: int) -> tuple[list[float], list[str]]:
        """``count`` new tickets through ``Assigner.receive``; each resolved afterwards, untimed."""
        timings, ids = [], []
        for n in range(count):
            f = self.new_ticket(kind, n)
            t0 = time.perf_counter()
            outcome = self.assigner.receive(f)
            timings.append(time.perf_counter() - t0)
            if outcome != kind:
                raise RuntimeError(f"new {kind} ticket {f.ticket_id}: outcome {outcome}")
            ids.append(f.ticket_id)
            self.store.resolve(f.ticket_id, now=time.time())
        return timings, ids

    def resolve_and_drain(self, count: int) -> tuple[list[float], list[int]]:
        """A random specialist's held ticket resolved, then their drain (timed together)."""
        timings, assigned = [], []
        for n in range(count):
            agent = self.rng.choice(self.specialists).agent_id
            held = self.client.srandmember(self.store.open_key(agent))
            if held is None:
                continue
            t0 = time.perf_counter()
            resolution = self.store.resolve(held, now=time.time())
            took = self.assigner.drain(resolution.agent_id or agent, trigger=f"resolved:{held}")
            timings.append(time.perf_counter() - t0)
            assigned.append(took)
        return timings, assigned

    # --- checks -------------------------------------------------------------------------------

    def check_capacity(self) -> int:
        """No agent over its shared budget; load per agent = its open set. Returns open tickets."""
        store, model = self.store, self.policy.capacity_model
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(store.load_key)
        for a in self.agents:
            pipe.scard(store.open_key(a.agent_id))
        load, *open_counts = pipe.execute()
        total = 0
        for agent, held in zip(self.agents, open_counts):
            loads = {c: int(load.get(f"{agent.agent_id}:{c}", 0)) for c in CHANNELS}
            if model == "per_channel":
                over = any(loads[c] > agent.capacity.get(c, 0) for c in CHANNELS)
            else:
                over = sum(n / agent.capacity[c] for c, n in loads.items() if n) > 1 + 1e-9
            if over:
                raise AssertionError(f"{agent.agent_id} over capacity: {loads} of {agent.capacity}")
            if sum(loads.values()) != held:
                raise AssertionError(f"{agent.agent_id}: load {loads} but {held} open tickets")
            total += held
        return total


OPS = ("decide_assigned", "decide_queued", "resolve_drain")
ROUNDS = 10


class Measured:
    """One setup's timings and what the checks need, over all rounds."""

    def __init__(self, setup: Setup):
        self.setup = setup
        self.timings: dict[str, list[float]] = {op: [] for op in OPS}
        self.assigned_ids: list[str] = []
        self.queued_ids: list[str] = []
        self.drained: list[int] = []

    def warm_up(self, count: int) -> None:
        """Roster cached, scripts loaded, index paged; then the record starts afresh."""
        self.setup.decide("assigned", count)
        self.setup.decide("queued", count)
        self.setup.resolve_and_drain(count)
        self.setup.recorder.events.clear()
        self.backlog_before = self.setup.store.waiting_count()

    def run(self, op: str, count: int) -> None:
        if op == "resolve_drain":
            timings, drained = self.setup.resolve_and_drain(count)
            self.drained += drained
        else:
            timings, ids = self.setup.decide(op.removeprefix("decide_"), count)
            (self.assigned_ids if op == "decide_assigned" else self.queued_ids).extend(ids)
        self.timings[op] += timings

    def check(self) -> dict:
        """Raises AssertionError on a wrong assignment; returns the counts checked."""
        setup = self.setup
        assigned_events = setup.recorder.count(ev.TICKET_ASSIGNED)
        queued_events = setup.recorder.count(ev.TICKET_QUEUED)
        if any(assigned_events[t] != 1 for t in self.assigned_ids):
            raise AssertionError("a new ticket was not assigned exactly once")
        if any(queued_events[t] != 1 or assigned_events[t] for t in self.queued_ids):
            raise AssertionError("a new specialist ticket was not queued exactly once (or was assigned)")
        duplicates = [t for t, n in assigned_events.items() if n != 1]
        if duplicates:
            raise AssertionError(f"tickets assigned more than once: {duplicates[:5]}")
        drained_ids = set(assigned_events) - set(self.assigned_ids)
        if len(drained_ids) != sum(self.drained):
            raise AssertionError(f"drains report {sum(self.drained)} assignments, {len(drained_ids)} announced")
        for record in setup.store.tickets(sorted(drained_ids)):
            if record is None or record.state not in ("assigned", "resolved") or record.attempt != 1:
                raise AssertionError(f"drained ticket in state {record and record.state}, "
                                     f"attempt {record and record.attempt}")
        backlog_after = setup.store.waiting_count()
        if self.backlog_before - backlog_after != sum(self.drained):
            raise AssertionError(f"backlog went {self.backlog_before} → {backlog_after}, drains took {sum(self.drained)}")
        return {"new_assigned_once": len(self.assigned_ids), "new_queued_once": len(self.queued_ids),
                "drained_assigned_once": len(drained_ids), "backlog_before": self.backlog_before,
                "backlog_after": backlog_after, "open_tickets_within_capacity": setup.check_capacity()}

    def result(self) -> dict:
        setup = self.setup
        label = f"{len(setup.agents):,} agents, {setup.queued:,} queued"
        names = {"decide_assigned": "decide→assigned", "decide_queued": "decide→queued",
                 "resolve_drain": "resolve+drain"}
        out = {"agents": len(setup.agents), "queued": setup.queued, "requirement_queues": setup.requirements,
               "load_seconds": {k: round(v, 2) for k, v in setup.load_seconds.items()}, "checks": self.check()}
        for op in OPS:
            t = self.timings[op]
            extra: dict[str, Any] = {"mean_ms": round(1000 * sum(t) / len(t), 3)}
            if op == "resolve_drain":
                extra["assigned_per_drain"] = round(sum(self.drained) / len(self.drained), 2)
            out[op] = summarize(f"routing {label}: {names[op]}", len(t), sum(t), t, **extra).as_dict()
        return out


def redis_urls(db: int) -> tuple[str, str]:
    return f"redis://127.0.0.1:6379/{db}", f"redis://127.0.0.1:6379/{db + 1}"


def measure_routing_cost(urls: tuple[str, str] = redis_urls(12), *, small: int = 10, large: int = 10_000,
                         queued: int = 100_000, decisions: int = 2000, drains: int = 2000,
                         policy_file: Path = POLICY_FILE, rounds: int = ROUNDS, warmup: int = 50) -> dict:
    """Both setups, and the ratios large/small (mean and p50 per decision).

    With two Redis databases (``urls``) both are loaded side by side and measured in alternating
    rounds, so a neighbour's load on a shared machine falls on both alike. Given the same
    database twice (the test), one setup is loaded, measured and flushed after the other.
    """
    policy = load_policy(policy_file)
    clients = [redis.Redis.from_url(url, decode_responses=True) for url in urls]
    together = urls[0] != urls[1]
    measured = {"small": Measured(Setup(clients[0], policy, small, queued, seed=5)),
                "large": Measured(Setup(clients[1], policy, large, queued, seed=5))}
    results: dict[str, dict] = {}

    def run_rounds(sizes: tuple[str, ...]) -> None:
        for r in range(rounds):
            order = sizes if r % 2 == 0 else tuple(reversed(sizes))
            for op in OPS:
                count = max(1, (drains if op == "resolve_drain" else decisions) // rounds)
                for size in order:
                    measured[size].run(op, count)

    try:
        groups = [("small", "large")] if together else [("small",), ("large",)]
        for sizes in groups:
            for size in sizes:
                measured[size].setup.load()
                measured[size].warm_up(warmup)
            run_rounds(sizes)
            for size in sizes:
                results[size] = measured[size].result()
                measured[size].setup.client.flushdb()
    finally:
        for client in clients:
            client.flushdb()
            client.close()
    ratios = {}
    for op in OPS:
        s, l = results["small"][op], results["large"][op]
        ratios[op] = {"mean": round(l["extra"]["mean_ms"] / s["extra"]["mean_ms"], 2),
                      "p50": round(l["p50_ms"] / s["p50_ms"], 2), "p99": round(l["p99_ms"] / s["p99_ms"], 2)}
    return {**results, "policy": policy.name, "capacity_model": policy.capacity_model, "offers": policy.offers,
            "rounds": rounds, "ratio_large_to_small": ratios,
            "within_limit": all(r["mean"] <= MAX_RATIO and r["p50"] <= MAX_RATIO for r in ratios.values()),
            "limit": MAX_RATIO}


def rows(result: dict) -> list[dict]:
    return [result[size][op] for size in ("small", "large") for op in ("decide_assigned", "decide_queued", "resolve_drain")]


def ratio_lines(result: dict) -> str:
    small, large = result["small"]["agents"], result["large"]["agents"]
    lines = [f"routing cost {large:,} / {small:,} agents (limit {result['limit']:g}x per decision):"]
    for op, r in result["ratio_large_to_small"].items():
        lines.append(f"  {op:16} mean {r['mean']:.2f}x   p50 {r['p50']:.2f}x   p99 {r['p99']:.2f}x")
    lines.append("  within limit" if result["within_limit"] else "  OVER THE LIMIT")
    return "\n".join(lines)


def main() -> None:
    from bench.__main__ import table

    parser = argparse.ArgumentParser(prog="python -m bench.routing_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-db", type=int, default=12,
                        help="scratch Redis databases: this one and the next (flushed)")
    parser.add_argument("--small", type=int, default=10, help="agents online in the small setup")
    parser.add_argument("--large", type=int, default=10_000, help="agents online in the large setup")
    parser.add_argument("--queued", type=int, default=100_000, help="tickets waiting in both setups")
    parser.add_argument("--decisions", type=int, default=2000, help="new tickets measured per kind")
    parser.add_argument("--drains", type=int, default=2000, help="resolve+drain events measured")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="alternating small/large rounds")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    configure_logging("bench", level="WARNING", fmt="console")
    result = measure_routing_cost(redis_urls(args.redis_db), small=args.small, large=args.large, queued=args.queued,
                                  decisions=args.decisions, drains=args.drains, rounds=args.rounds)
    print(table(rows(result), mean=True))
    print()
    print(ratio_lines(result))
    for size in ("small", "large"):
        r = result[size]
        print(f"{r['agents']:,} agents: loaded in {r['load_seconds']}; {r['requirement_queues']} requirement queues; "
              f"checks {r['checks']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
