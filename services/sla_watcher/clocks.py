"""SLA clock arithmetic (pure): when a clock's warnings and breach fall due.

A clock starts at the ticket's ``received_at`` (not when the watcher heard of it, so a backlog
does not buy time) and has one due item per warning point plus one for the breach. Items are
named ``<ticket>:<clock>:<kind>`` with kind ``warning@<fraction>`` or ``breached``; times are
epoch seconds as floats, so due times keep sub-second precision.

Wall-clock only for now: business calendars are issue 6.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

FIRST_RESPONSE = "first_response"
BREACHED = "breached"
WARNING_PREFIX = "warning@"


@dataclass(frozen=True)
class DueItem:
    ticket_id: str
    clock: str
    kind: str  # "warning@0.8" or "breached"
    due_at: float  # epoch seconds

    @property
    def member(self) -> str:
        return f"{self.ticket_id}:{self.clock}:{self.kind}"

    @property
    def is_breach(self) -> bool:
        return self.kind == BREACHED

    @property
    def fraction(self) -> float:
        """The share of the target elapsed when this item falls due (1.0 for the breach)."""
        return 1.0 if self.is_breach else float(self.kind[len(WARNING_PREFIX):])


def warning_kind(fraction: float) -> str:
    return f"{WARNING_PREFIX}{fraction:g}"


def due_items(ticket_id: str, clock: str, *, received_at: float, target_seconds: float,
              warn_at: Sequence[float]) -> list[DueItem]:
    """Warnings (in increasing order) then the breach, each at ``received_at + fraction * target``."""
    items = [DueItem(ticket_id, clock, warning_kind(f), received_at + f * target_seconds)
             for f in sorted(set(warn_at)) if 0 < f < 1]
    items.append(DueItem(ticket_id, clock, BREACHED, received_at + target_seconds))
    return items


def parse_member(member: str) -> tuple[str, str, str]:
    """``"TM-1:first_response:breached"`` → ``("TM-1", "first_response", "breached")``."""
    ticket_id, clock, kind = member.rsplit(":", 2)
    return ticket_id, clock, kind


def item_from_member(member: str, *, received_at: float, target_seconds: float) -> DueItem:
    ticket_id, clock, kind = parse_member(member)
    fraction = 1.0 if kind == BREACHED else float(kind[len(WARNING_PREFIX):])
    return DueItem(ticket_id, clock, kind, received_at + fraction * target_seconds)


def breach_at(received_at: float, target_seconds: float) -> float:
    return received_at + target_seconds


def elapsed_fraction(received_at: float, target_seconds: float, now: float) -> float:
    return max(0.0, now - received_at) / target_seconds
