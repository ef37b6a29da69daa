"""Working statuses of an open ticket and their SLA pause flag (one switch per status, as
Freshdesk's "SLA timer" toggle: the same flag everywhere that asks "is the clock running?").

agent_desk lets an agent set one (``ticket_status_changed`` carries the flag from this table);
the SLA watcher pauses next-response and resolution clocks while the flag is set, and a
customer message resumes them. Which statuses pause is configuration
(``TM_PAUSING_STATUSES``); ``open`` never does. By default only ``waiting_on_customer``
pauses: while a ticket is on hold (waiting on a third party) the customer is still waiting.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from shared.config import ConfigError, Variable

STATUSES: tuple[str, ...] = ("open", "waiting_on_customer", "on_hold")
PAUSING_VARIABLE = "TM_PAUSING_STATUSES"
DEFAULT_PAUSING = "waiting_on_customer"
LABELS: dict[str, tuple[str, str]] = {  # status → (zh, en)
    "open": ("处理中", "Open"),
    "waiting_on_customer": ("等待客户回复", "Waiting on customer"),
    "on_hold": ("挂起", "On hold"),
}
VARIABLES = (
    Variable(PAUSING_VARIABLE, DEFAULT_PAUSING, "ticket statuses that pause SLA next-response and resolution "
             "clocks (comma-separated: waiting_on_customer, on_hold)"),
)


@dataclass(frozen=True)
class StatusTable:
    pausing: frozenset[str] = frozenset({DEFAULT_PAUSING})

    def paused(self, status: str) -> bool:
        return status in self.pausing

    def rows(self) -> list[dict]:
        """For the console: every status, its labels and whether it pauses the clocks."""
        return [{"status": s, "label_zh": LABELS[s][0], "label_en": LABELS[s][1], "pauses_sla": self.paused(s)}
                for s in STATUSES]


def parse_pausing(text: str) -> StatusTable:
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if name not in STATUSES:
            raise ConfigError(f"{PAUSING_VARIABLE}: {name!r} is not a status ({', '.join(STATUSES)})")
        if name == "open":
            raise ConfigError(f"{PAUSING_VARIABLE}: 'open' cannot pause the SLA clocks")
    return StatusTable(frozenset(names))


def from_env(environ: Mapping[str, str]) -> StatusTable:
    return parse_pausing(environ.get(PAUSING_VARIABLE, DEFAULT_PAUSING))
