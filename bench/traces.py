"""``python -m bench.traces --contacts 30000 --agents 50 --out DIR``: a synthetic workload for
``ticketmesh simulate``.

Writes ``DIR/trace.csv`` and ``DIR/staffing.csv`` (formats in README, "Simulating routing
policies"). The mix is a Chinese shop with some English-speaking customers: about 80% zh,
chat-heavy with email and phone, general/billing/technical/logistics questions, mostly routine
priorities, a daily arrival curve from 08:00 to 22:00 (Asia/Shanghai) with morning and evening
peaks, exponential patience on chat and phone (email waits), lognormal handle times. Agents
work two overlapping shifts a day; a quarter are bilingual generalists, so every skill is
covered in both languages in every shift. Seeded: the same arguments
give the same files.
"""
from __future__ import annotations

import argparse
import csv
import math
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

CST = timezone(timedelta(hours=8))
FIRST_DAY = datetime(2026, 3, 2, tzinfo=CST)  # a Monday
OPEN_HOUR, CLOSE_HOUR = 8, 22
# Relative arrivals per hour from 08:00 to 21:00: a late-morning peak, a lunch dip, an evening peak.
HOURLY_WEIGHTS = [3, 6, 9, 10, 8, 6, 7, 8, 9, 8, 9, 10, 7, 4]
CONTACTS_PER_AGENT_DAY = 100  # under a shared capacity budget: queues at the peaks, some abandonment

CHANNELS = [("chat", 0.5), ("email", 0.3), ("phone", 0.2)]
SKILLS = [("general", 0.45), ("billing", 0.25), ("technical", 0.18), ("logistics", 0.12)]
PRIORITIES = [(1, 0.55), (2, 0.30), (3, 0.12), (4, 0.03)]
LANGUAGES = [("zh", 0.8), ("en", 0.2)]
TIERS = [("standard", 0.9), ("vip", 0.1)]
# Median handle time in seconds per channel (lognormal, sigma 0.6).
HANDLE_MEDIAN = {"chat": 420, "email": 600, "phone": 300}
# Mean patience in seconds (exponential); email customers do not hang up.
PATIENCE_MEAN = {"chat": 600, "phone": 240}
CAPACITY = "email=6;chat=3;phone=1"
SHIFTS = [(8, 16), (14, 22)]


def _pick(rng: random.Random, options: list[tuple]) -> object:
    values, weights = zip(*options)
    return rng.choices(values, weights)[0]


def contacts(count: int, days: int, rng: random.Random) -> list[dict]:
    rows = []
    hours = list(range(OPEN_HOUR, CLOSE_HOUR))
    for _ in range(count):
        day = rng.randrange(days)
        hour = rng.choices(hours, HOURLY_WEIGHTS)[0]
        arrival = FIRST_DAY + timedelta(days=day, hours=hour, seconds=rng.uniform(0, 3600))
        channel = _pick(rng, CHANNELS)
        patience = "" if channel == "email" else str(round(rng.expovariate(1 / PATIENCE_MEAN[channel])))
        rows.append({
            "arrival": arrival,
            "channel": channel,
            "skill": _pick(rng, SKILLS),
            "priority": _pick(rng, PRIORITIES),
            "handle_seconds": round(HANDLE_MEDIAN[channel] * math.exp(rng.gauss(0, 0.6))),
            "patience_seconds": patience,
            "customer_tier": _pick(rng, TIERS),
            "language": _pick(rng, LANGUAGES),
        })
    rows.sort(key=lambda r: r["arrival"])
    for i, row in enumerate(rows, 1):
        row["contact_id"] = f"C{i:06d}"
        row["arrival"] = row["arrival"].isoformat(timespec="seconds")
    return rows


def staffing(agents: int, days: int, rng: random.Random) -> list[dict]:
    people = []
    extra_skills = ("billing", "technical", "logistics")
    for n in range(agents):
        # Every quarter of the team is a bilingual generalist, in both shifts (n % 8 in 0, 1), so
        # even a small team covers every skill in both languages; the others have general plus
        # one speciality, sometimes two.
        bilingual = n % 8 in (0, 1)
        own = set(extra_skills) if bilingual else {extra_skills[(n // 2) % 3]}
        if not bilingual and rng.random() < 0.3:
            own.add(rng.choice(extra_skills))
        skills = [f"general:{rng.randint(2, 5)}"] + [f"{s}:{rng.randint(1, 5)}" for s in extra_skills if s in own]
        people.append((f"agent{n + 1:03d}", ";".join(skills), "zh;en" if bilingual else "zh", SHIFTS[n % len(SHIFTS)]))
    rows = []
    for day in range(days):
        for agent_id, skills, languages, (start, end) in people:
            base = FIRST_DAY + timedelta(days=day)
            rows.append({"start": (base + timedelta(hours=start)).isoformat(timespec="seconds"),
                         "end": (base + timedelta(hours=end)).isoformat(timespec="seconds"),
                         "agent_id": agent_id, "skills": skills, "capacity": CAPACITY, "languages": languages})
    return rows


def write(out: Path, count: int, agents: int, seed: int = 1, days: int | None = None) -> tuple[Path, Path]:
    rng = random.Random(seed)
    days = days or max(1, round(count / (agents * CONTACTS_PER_AGENT_DAY)))
    out.mkdir(parents=True, exist_ok=True)
    trace, staff = out / "trace.csv", out / "staffing.csv"
    with trace.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["contact_id", "arrival", "channel", "skill", "priority", "handle_seconds",
                                    "patience_seconds", "customer_tier", "language"])
        writer.writeheader()
        writer.writerows(contacts(count, days, rng))
    with staff.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["start", "end", "agent_id", "skills", "capacity", "languages"])
        writer.writeheader()
        writer.writerows(staffing(agents, days, rng))
    return trace, staff


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.traces", description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=30000)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--days", type=int, default=None,
                        help=f"default: contacts / (agents × {CONTACTS_PER_AGENT_DAY}), at least 1")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    trace, staff = write(args.out, args.contacts, args.agents, args.seed, args.days)
    print(f"wrote {trace} ({args.contacts} contacts) and {staff} ({args.agents} agents)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
