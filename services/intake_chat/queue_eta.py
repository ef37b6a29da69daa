"""What a waiting chat customer is told: their place in the queue and the expected wait (pure).

Inputs come from the live routing state (read-only, :mod:`shared.dispatch_view`): the ticket's
place in its requirement's queue and the chat seats of the agents online now; and from the SLA
(:func:`shared.sla_policy.expected_first_response`): when the first response is due.

The estimate is ``place × handle time ÷ seats online``: with ``seats`` chats in progress and
each taking ``handle`` seconds on average, a seat frees every ``handle ÷ seats`` seconds, and
``place`` seats must free before this customer's turn. A free seat and first place means an
agent is being offered the chat now (wait 0). The SLA enters twice: before the dispatcher has
queued the ticket (no place yet) the wait shown is the time left to the first-response target,
and a queue estimate beyond that target is shown as it is but flagged ``at_risk`` — an honest
longer wait rather than a promise the queue cannot keep.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

WAITING, ASSIGNED, NO_AGENTS, PENDING = "waiting", "assigned", "no_agents", "pending"


@dataclass(frozen=True)
class Seats:
    agents_online: int  # online agents with chat capacity
    seats: int          # their chat capacity in total
    free: int           # of which unused


@dataclass(frozen=True)
class QueueStatus:
    state: str                       # waiting | assigned | no_agents | pending (not routed yet)
    position: int | None = None      # 1 = next
    expected_wait_seconds: int | None = None
    respond_by: datetime | None = None
    at_risk: bool = False
    agents_online: int = 0
    agent_id: str | None = None

    def frame(self, agent_name: str = "") -> dict:
        return {"type": "queue", "state": self.state, "position": self.position,
                "expected_wait_seconds": self.expected_wait_seconds,
                "respond_by": self.respond_by.isoformat() if self.respond_by else None,
                "at_risk": self.at_risk, "agents_online": self.agents_online,
                **({"agent_name": agent_name} if self.state == ASSIGNED else {})}


def round_up_minute(seconds: float) -> int:
    """Waits are told in whole minutes (``about 3 min``); 0 stays 0."""
    return 0 if seconds <= 0 else int(math.ceil(seconds / 60.0) * 60)


def queue_status(*, routing_state: str | None, position: int | None, agent_id: str | None, seats: Seats,
                 respond_by: datetime | None, now: datetime, handle_seconds: float) -> QueueStatus:
    """``routing_state``: the dispatcher's state of the ticket (new, queued, assigned, resolved or
    None when it has not seen it yet); ``position``: 1-based place in its queue while queued."""
    sla_left = (respond_by - now).total_seconds() if respond_by else None
    common = {"respond_by": respond_by, "agents_online": seats.agents_online}
    if routing_state == "assigned":
        return QueueStatus(ASSIGNED, agent_id=agent_id, expected_wait_seconds=0, **common)
    if seats.agents_online == 0:
        return QueueStatus(NO_AGENTS, position=position, **common)
    if routing_state != "queued" or position is None:
        wait = round_up_minute(sla_left) if sla_left is not None else None
        return QueueStatus(PENDING, expected_wait_seconds=wait, **common)
    if position == 1 and seats.free > 0:
        estimate = 0.0
    else:
        estimate = position * handle_seconds / max(seats.seats, 1)
    at_risk = sla_left is not None and estimate > max(sla_left, 0)
    return QueueStatus(WAITING, position=position, expected_wait_seconds=round_up_minute(estimate),
                       at_risk=at_risk, **common)
