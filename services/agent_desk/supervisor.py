"""The supervisor's boards, computed from the desk's own views (pure: no aiohttp, no Redis).

- queues by skill: tickets waiting for an agent (``ticket_queued``, not assigned since), grouped
  by their required skills, with how many, the oldest wait and the count per priority;
- agents: every rostered agent's presence and load (open tickets per channel);
- SLA risk: unresolved tickets with a warning or breach, soonest due first.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, Iterable

from services.agent_desk.tickets import TicketView, sla_state
from shared.roster import AgentProfile

NO_SKILL = "general"


def skill_key(view: TicketView) -> str:
    return "+".join(sorted(view.required_skills)) or NO_SKILL


def queues(queued: Iterable[TicketView], now: datetime) -> list[dict[str, Any]]:
    groups: dict[str, list[TicketView]] = {}
    for view in queued:
        groups.setdefault(skill_key(view), []).append(view)
    board = []
    for skill, views in groups.items():
        oldest = min(v.queued_at or v.received_at for v in views)
        board.append({
            "skill": skill,
            "count": len(views),
            "oldest_wait_seconds": max(0, int((now - oldest).total_seconds())),
            "by_priority": dict(sorted(Counter(v.priority or "none" for v in views).items())),
            "tickets": [v.summary() for v in sorted(views, key=lambda v: v.queued_at or v.received_at)[:20]],
        })
    return sorted(board, key=lambda q: (-q["oldest_wait_seconds"], q["skill"]))


def agents(roster: Iterable[AgentProfile], presences: dict[str, str],
           worklists: dict[str, list[TicketView]]) -> list[dict[str, Any]]:
    board = []
    for agent in roster:
        open_tickets = worklists.get(agent.agent_id, [])
        board.append({
            "agent_id": agent.agent_id, "name": agent.name, "role": agent.role, "group": agent.group,
            "tier": agent.tier, "presence": presences.get(agent.agent_id, "offline"),
            "load": dict(sorted(Counter(v.channel for v in open_tickets).items())),
            "capacity": dict(agent.capacity),
            "open": len(open_tickets),
            "offers": sum(1 for v in open_tickets if v.status == "assigned"),
        })
    return sorted(board, key=lambda a: a["agent_id"])


def at_risk(views: Iterable[TicketView], now: datetime) -> list[dict[str, Any]]:
    risky = [v for v in views if v.status != "resolved" and sla_state(v)]
    rows = []
    for view in sorted(risky, key=lambda v: min(c.due_at for c in v.sla.values())):
        due = min(c.due_at for c in view.sla.values())
        rows.append({**view.summary(), "seconds_left": int((due - now).total_seconds())})
    return rows
