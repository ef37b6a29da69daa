"""``python -m bench.sla_sweep``: what one SLA sweep tick costs with 1,000 and with 1,000,000
open clocks (the larger may cost at most twice the smaller), and how late items fire.

Real Redis, the real ``SlaStore`` and ``SlaEngine`` (the sweep the service's timer runs);
``emit`` builds and validates each event but publishes nothing (this is the cost of finding and
firing, not of the broker). Logging at WARNING.

Two setups, each in a Redis database of its own (``--redis-db`` and the next, flushed before
and after), loaded side by side and measured in alternating rounds, so a neighbour's load on a
shared machine falls on both alike. Each holds N open clocks written through the store's own
script (``put_clock``, pipelined): first-response and resolution clocks of the shipped
policies (deploy/config/sla.yaml: 24x7 and cn-support business hours), started up to a day
ago, each scheduled at its next unfired item (hours to days away).

- ``idle tick``: a tick when nothing is due (the claim finds nothing; the head is peeked);
- ``busy tick``: a tick that finds ``--due-per-tick`` clocks due (armed, untimed, just before):
  claim, read, compute, fire (warning, breach and the ladder's rung), commit;
- ``lateness``: the service's tick loop (``SlaEngine.tick`` every 0.25 s, sleeping until the next
  due item when it is sooner) runs for ``--lateness-seconds`` while ``--lateness-items`` clocks
  fall due spread over that time; lateness = when the breach event was built − its due time.

It ends by checking that every armed clock fired each item exactly once and nothing else fired.
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis

from bench.stats import percentile, summarize
from services.sla_watcher import clocks as c
from services.sla_watcher.engine import Loaded, SlaEngine
from services.sla_watcher.store import SlaStore, member
from shared import events as ev
from shared.logging import configure_logging
from shared.sla_policy import SlaConfig, load_sla_config

REPO = Path(__file__).resolve().parent.parent
POLICY_FILE = REPO / "deploy" / "config" / "sla.yaml"
PIPELINE_BATCH = 2000
ROUNDS = 10
MAX_RATIO = 2.0
INTERVAL = 0.25   # the service's SWEEP_INTERVAL_SECONDS
MAX_TICK = 5.0    # its SWEEP_MAX_SECONDS


class Recorder:
    """The engine's ``emit``: validates the body as the service would, keeps (type, ticket, due, at)."""

    def __init__(self) -> None:
        self.fired: list[tuple[str, str, float | None, float]] = []

    def __call__(self, event_type: str, /, *, now: Any, trace_id: str, **fields: Any) -> dict:
        body = ev.make_event(ev.SLA_WATCHER, event_type, now=now, trace_id=trace_id, **fields)
        due = fields.get("due_at")
        self.fired.append((event_type, fields["ticket_id"], due.timestamp() if due else None, time.time()))
        return body


class StaticConfig:
    def __init__(self, config: SlaConfig, gen: int):
        self.loaded = Loaded(config, gen)

    def current(self, now: float) -> Loaded:
        return self.loaded

    def refresh(self, now: float) -> Loaded:
        return self.loaded


class Setup:
    """One Redis database with ``open_clocks`` open clocks and an engine sweeping it."""

    def __init__(self, client: redis.Redis, config: SlaConfig, open_clocks: int, seed: int):
        self.client = client
        self.config = config
        self.open_clocks = open_clocks
        self.rng = random.Random(seed)
        self.store = SlaStore(client)
        self.recorder = Recorder()
        self.engine: SlaEngine | None = None
        self.armed: collections.Counter[str] = collections.Counter()
        self.serial = 0

    def load(self) -> None:
        self.client.flushdb()
        gen = self.store.register_config(self.config.digest)
        self.engine = SlaEngine(self.store, StaticConfig(self.config, gen), self.recorder)
        now = time.time()
        # One plan per (policy, clock), written once: what put_clock does, without rebuilding a
        # clock object per row (a million of them is minutes of Python on a busy machine).
        kinds = []
        for policy in (p for p in self.config.policies if p.resolution_seconds):
            for name in (c.FIRST_RESPONSE, c.RESOLUTION):
                target = policy.target(name)
                plan = c.make_plan(target, policy.warn_at, [(r.after_seconds, r.action, r.to) for r in policy.ladder])
                digest = c.plan_digest(plan)
                self.client.hsetnx(self.store.plans_key, digest, c.plan_json(plan))
                kinds.append((name, ["cycle", 1, "state", c.RUNNING, "policy", policy.name, "calendar", policy.calendar,
                                     "target", repr(float(target)), "plan", digest, "segments", "[]", "fired", "",
                                     "finished_at", "", "gen", gen, "used", "0.0", "breach_at", ""]))
        pipe = self.client.pipeline(transaction=False)
        put, keys = self.store._put, [None, self.store.due_key, self.store.open_key, None]
        uniform = self.rng.uniform
        # Started up to a day ago; the next item an hour to a month away (none fires while measured).
        for i in range(self.open_clocks):
            name, fields = kinds[i % len(kinds)]
            ticket_id = f"B-{i}"
            started = repr(now - uniform(0, 86400))
            keys[0], keys[3] = self.store.clock_key(ticket_id, name), self.store.ticket_key(ticket_id)
            put(keys=list(keys), args=[0, member(ticket_id, name), repr(now + 3600 + uniform(0, 30 * 86400)), "1",
                                       35 * 86400, repr(now), *fields, "since", started, "activated_at", started],
                client=pipe)
            if (i + 1) % PIPELINE_BATCH == 0:
                pipe.execute()
        pipe.execute()
        assert self.store.open_count() == self.open_clocks, self.store.open_count()

    def _clock(self, ticket_id: str, name: str, policy: str, calendar: str, target: float, source: Any, at: float,
               gen: int) -> c.Clock:
        plan = c.make_plan(target, source.warn_at, [(r.after_seconds, r.action, r.to) for r in source.ladder])
        return c.activate(ticket_id=ticket_id, name=name, cycle=1, policy=policy, calendar=calendar, target=target,
                          plan=plan, at=at, config_gen=gen)

    def _put(self, pipe: redis.client.Pipeline, put: Any, clock: c.Clock, due: float, now: float) -> None:
        digest = c.plan_digest(clock.plan)
        if digest not in self.store._plans:
            self.client.hsetnx(self.store.plans_key, digest, c.plan_json(clock.plan))
            self.store._plans[digest] = clock.plan
        fields = {"cycle": clock.cycle, "state": clock.state, "policy": clock.policy, "calendar": clock.calendar,
                  "target": repr(clock.target), "plan": digest, "segments": "[]", "since": repr(clock.since),
                  "fired": "", "activated_at": repr(clock.activated_at), "finished_at": "", "gen": clock.config_gen,
                  "used": "0.0", "breach_at": "" if clock.breach_at is None else repr(clock.breach_at)}
        args: list = [0, member(clock.ticket_id, clock.name), repr(due), "1", 35 * 86400, repr(now)]
        for key, value in fields.items():
            args += [key, value]
        put(keys=[self.store.clock_key(clock.ticket_id, clock.name), self.store.due_key, self.store.open_key,
                  self.store.ticket_key(clock.ticket_id)], args=args, client=pipe)

    def arm(self, count: int, *, spread: float = 0.0, ladder: bool = True) -> None:
        """``count`` more open clocks whose items fall due now (or spread over the next ``spread``
        seconds): a 24x7 policy, so business hours do not move them. Untimed."""
        now = time.time()
        policy = self.config.policies[0]
        gen = self.engine.configs.loaded.gen
        pipe = self.client.pipeline(transaction=False)
        for _ in range(count):
            self.serial += 1
            ticket_id = f"D-{self.serial}"
            target = 60.0
            due = now + (self.rng.uniform(0.5, spread) if spread else -0.001)
            source = policy if ladder else replace(policy, warn_at=(), escalation=())
            clock = c.with_derived(self._clock(ticket_id, c.FIRST_RESPONSE, policy.name, "always", target, source,
                                               due - target, gen), self.config.calendar("always"))
            self.armed[ticket_id] = len(clock.plan)
            self._put(pipe, self.store._put, clock, c.next_due(clock, self.config.calendar("always")), now)
        pipe.execute()

    def tick_cost(self) -> float:
        started = time.perf_counter()
        self.engine.tick(INTERVAL, MAX_TICK)
        return time.perf_counter() - started

    def check(self) -> dict:
        fired = collections.Counter(ticket for _, ticket, _, _ in self.recorder.fired
                                    if ticket.startswith("D-"))
        breaches = collections.Counter(ticket for event_type, ticket, _, _ in self.recorder.fired
                                       if event_type == ev.SLA_BREACHED)
        stray = [ticket for _, ticket, _, _ in self.recorder.fired if not ticket.startswith("D-")]
        problems = []
        if stray:
            problems.append(f"{len(stray)} events for clocks not due")
        twice = [t for t, n in breaches.items() if n != 1]
        if twice or set(breaches) != set(self.armed):
            problems.append(f"breaches: {len(breaches)} tickets, {len(twice)} not exactly once, "
                            f"{len(set(self.armed) - set(breaches))} never")
        # Each item one event, the breach two (sla_breached and sla_clock_changed).
        wrong = [t for t, n in self.armed.items() if fired[t] != n + 1]
        if wrong:
            problems.append(f"{len(wrong)} clocks did not fire each item exactly once")
        if problems:
            raise AssertionError(f"sla sweep with {self.open_clocks:,} open clocks: " + "; ".join(problems))
        return {"armed": len(self.armed), "events": sum(fired.values()), "open_clocks": self.store.open_count()}


def _summary(name: str, costs: list[float], **extra: Any) -> dict:
    m = summarize(name, len(costs), sum(costs), costs, mean_ms=round(statistics.fmean(costs) * 1000, 3), **extra)
    return m.as_dict()


def measure_sla_sweep(urls: tuple[str, str] = ("redis://127.0.0.1:6379/10", "redis://127.0.0.1:6379/11"), *,
                      small: int = 1000, large: int = 1_000_000, rounds: int = ROUNDS, ticks: int = 200,
                      due_per_tick: int = 100, lateness_items: int = 2000, lateness_seconds: float = 10.0,
                      policy_file: Path = POLICY_FILE) -> dict:
    config = load_sla_config(policy_file)
    clients = [redis.Redis.from_url(url, decode_responses=True) for url in urls]
    together = urls[0] != urls[1]
    sizes = {"small": small, "large": large}
    setups: dict[str, Setup] = {}
    results: dict[str, dict] = {}
    loaded_in: dict[str, float] = {}

    def load(size: str, client: redis.Redis) -> None:
        started = time.perf_counter()
        setups[size] = Setup(client, config, sizes[size], seed=11)
        setups[size].load()
        loaded_in[size] = round(time.perf_counter() - started, 1)

    def measure(order: tuple[str, ...]) -> None:
        idle: dict[str, list[float]] = {s: [] for s in order}
        busy: dict[str, list[float]] = {s: [] for s in order}
        for r in range(rounds):
            for size in (order if r % 2 == 0 else tuple(reversed(order))):
                setup = setups[size]
                for _ in range(max(1, ticks // rounds)):
                    idle[size].append(setup.tick_cost())
                for _ in range(max(1, ticks // rounds // 4)):
                    setup.arm(due_per_tick)
                    busy[size].append(setup.tick_cost())
        for size in order:
            setup = setups[size]
            late_from = len(setup.recorder.fired)
            setup.arm(lateness_items, spread=lateness_seconds, ladder=False)
            deadline = time.time() + lateness_seconds + 1.0
            while time.time() < deadline:   # the nameko timer: a tick every INTERVAL
                started = time.time()
                setup.engine.tick(INTERVAL, MAX_TICK)
                time.sleep(max(0.0, INTERVAL - (time.time() - started)))
            late = sorted(at - due for event_type, _, due, at in setup.recorder.fired[late_from:]
                          if event_type == ev.SLA_BREACHED)
            results[size] = {
                "open_clocks": setup.open_clocks, "loaded_seconds": loaded_in[size],
                "idle_tick": _summary(f"sla sweep idle tick, {setup.open_clocks:,} open clocks", idle[size]),
                "busy_tick": _summary(f"sla sweep tick firing {due_per_tick}, {setup.open_clocks:,} open", busy[size]),
                "lateness": {"items": len(late), "p50_ms": round(percentile(late, 0.5) * 1000, 1),
                             "p99_ms": round(percentile(late, 0.99) * 1000, 1),
                             "max_ms": round(late[-1] * 1000, 1) if late else None},
                "check": setup.check(),
            }

    try:
        if together:
            load("small", clients[0])
            load("large", clients[1])
            measure(("small", "large"))
        else:  # one database (the test): one setup after the other
            for size in ("small", "large"):
                load(size, clients[0])
                measure((size,))
                clients[0].flushdb()
    finally:
        for client in clients:
            client.flushdb()
            client.close()

    def ratio(kind: str, stat: str) -> float:
        small_v = results["small"][kind]["extra"]["mean_ms"] if stat == "mean" else results["small"][kind][f"{stat}_ms"]
        large_v = results["large"][kind]["extra"]["mean_ms"] if stat == "mean" else results["large"][kind][f"{stat}_ms"]
        return round(large_v / small_v, 2) if small_v else float("inf")

    ratios = {kind: {stat: ratio(kind, stat) for stat in ("mean", "p50", "p99")} for kind in ("idle_tick", "busy_tick")}
    return {"small": results["small"], "large": results["large"], "ratio_large_to_small": ratios,
            "limit": MAX_RATIO, "within_limit": all(r["mean"] <= MAX_RATIO for r in ratios.values()),
            "due_per_tick": due_per_tick}


def rows(result: dict) -> list[dict]:
    return [result[size][kind] for size in ("small", "large") for kind in ("idle_tick", "busy_tick")]


def ratio_lines(result: dict) -> str:
    small, large = result["small"]["open_clocks"], result["large"]["open_clocks"]
    lines = [f"sla sweep cost {large:,} / {small:,} open clocks (limit {result['limit']:g}x per tick):"]
    for kind, r in result["ratio_large_to_small"].items():
        lines.append(f"  {kind:10} mean {r['mean']:.2f}x   p50 {r['p50']:.2f}x   p99 {r['p99']:.2f}x")
    lines.append("  within limit" if result["within_limit"] else "  OVER THE LIMIT")
    for size in ("small", "large"):
        late = result[size]["lateness"]
        lines.append(f"  firing lateness, {result[size]['open_clocks']:,} open clocks: {late['items']} items, "
                     f"p50 {late['p50_ms']} ms, p99 {late['p99_ms']} ms, max {late['max_ms']} ms")
    return "\n".join(lines)


def redis_urls(db: int) -> tuple[str, str]:
    return f"redis://127.0.0.1:6379/{db}", f"redis://127.0.0.1:6379/{db + 1}"


def main() -> None:
    from bench.__main__ import table

    parser = argparse.ArgumentParser(prog="python -m bench.sla_sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-db", type=int, default=10, help="scratch Redis databases: this one and the next (flushed)")
    parser.add_argument("--small", type=int, default=1000, help="open clocks in the small setup")
    parser.add_argument("--large", type=int, default=1_000_000, help="open clocks in the large setup")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="alternating small/large rounds")
    parser.add_argument("--ticks", type=int, default=200, help="idle ticks measured per setup")
    parser.add_argument("--due-per-tick", type=int, default=100, help="clocks due in each busy tick")
    parser.add_argument("--lateness-items", type=int, default=2000, help="clocks falling due in the lateness run")
    parser.add_argument("--lateness-seconds", type=float, default=10.0, help="how long the lateness run lasts")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    configure_logging("bench", level="WARNING", fmt="console")
    result = measure_sla_sweep(redis_urls(args.redis_db), small=args.small, large=args.large, rounds=args.rounds,
                               ticks=args.ticks, due_per_tick=args.due_per_tick, lateness_items=args.lateness_items,
                               lateness_seconds=args.lateness_seconds)
    print(table(rows(result), mean=True))
    print()
    print(ratio_lines(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
