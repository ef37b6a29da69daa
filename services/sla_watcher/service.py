"""The SLA watcher: keep every ticket's clocks, fire warnings, breaches and escalation rungs on
time, exactly once per replica set.

Clocks (engine.py, clocks.py): ``first_response`` from received to the first agent reply;
``next_response`` from a customer message after an agent reply to the next reply;
``resolution`` from received to resolved (a reopen continues it). A status with the pause flag
(``ticket_status_changed``) pauses next response and resolution; a customer message (or a
contact on another channel the dispatcher folded into the ticket, ``ticket_attached`` mode
attach) or a status without it resumes them. Every change is announced as ``sla_clock_changed``.

Failure policy: Redis or RabbitMQ briefly away raises a transient error and the event is
retried; anything else dead-letters it. Handlers are idempotent (each change is a
compare-and-set on the clock; announcements carry ids derived from their cause).

Every replica runs the sweep; the store's claim gives each due clock to exactly one of them.
The sweep wakes every ``SWEEP_INTERVAL_SECONDS`` and, when the next item falls due sooner,
sleeps until exactly then, so items fire within milliseconds of their due time. After
downtime, everything overdue fires once, in due order.

Hot reload: the policy file and its calendars file are looked at every
``TM_CONFIG_RELOAD_SECONDS``; a changed version recomputes open clocks (a 1 s timer walks them,
one replica at a time; a clock touched first is recomputed on the spot).
"""
from __future__ import annotations

import time
from typing import Any

from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.sla_watcher.config import (CONFIG_RELOAD_KEY, DEFAULT_CONFIG_RELOAD_SECONDS, DEFAULT_SLA_POLICY_FILE,
                                         SLA_POLICY_FILE_KEY)
from services.sla_watcher.config_source import SlaConfigFiles
from services.sla_watcher.engine import SlaEngine
from services.sla_watcher.store import SlaStore
from services.sla_watcher.health import SlaWatcherHealth
from shared import events as ev
from shared.logging import get_logger
from shared.nameko_ext import REDIS_URL_KEY, Emitter, LogContext, StoreProvider, event_consumer
from shared.redis_store import sync_client

log = get_logger(__name__)

SWEEP_INTERVAL_SECONDS = 0.25
SWEEP_MAX_SECONDS = 5.0     # one tick's share of the worker before it yields to the timer
RECOMPUTE_INTERVAL_SECONDS = 1.0


class SlaConfigProvider(DependencyProvider):
    """The policy and calendar files of this container, re-read when they change; a bad file
    stops the start."""

    def setup(self) -> None:
        config = self.container.config
        self.client = sync_client(config[REDIS_URL_KEY])
        self.files = SlaConfigFiles(config.get(SLA_POLICY_FILE_KEY, DEFAULT_SLA_POLICY_FILE), SlaStore(self.client),
                                    now=time.time(),
                                    interval=float(config.get(CONFIG_RELOAD_KEY, DEFAULT_CONFIG_RELOAD_SECONDS)))

    def stop(self) -> None:
        self.client.close()

    def get_dependency(self, worker_ctx: Any) -> SlaConfigFiles:
        return self.files


class SlaWatcherService(SlaWatcherHealth):  # + /healthz, /readyz, /metrics, heartbeat
    name = ev.SLA_WATCHER

    store: SlaStore = StoreProvider(SlaStore)
    configs: SlaConfigFiles = SlaConfigProvider()
    emit = Emitter()
    log_context = LogContext()

    def _engine(self) -> SlaEngine:
        return SlaEngine(self.store, self.configs, self.emit)

    @event_consumer(ev.DISPATCHER, ev.TICKET_CLASSIFIED)
    def handle_ticket_classified(self, event: ev.TicketClassified) -> None:
        self._engine().ticket_classified(event)

    @event_consumer(ev.DISPATCHER, ev.TICKET_ASSIGNED)
    def handle_ticket_assigned(self, event: ev.TicketAssigned) -> None:
        self._engine().ticket_assigned(event)

    @event_consumer(ev.DISPATCHER, ev.TICKET_UNASSIGNED)
    def handle_ticket_unassigned(self, event: ev.TicketUnassigned) -> None:
        """Warnings must not name an agent who no longer holds the ticket."""
        cleared = self._engine().ticket_unassigned(event)
        log.info("sla_assignee_cleared" if cleared else "sla_assignee_unchanged", agent_id=event.agent_id,
                 reason=event.reason)

    @event_consumer(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED)
    def handle_email_ticket_received(self, event: ev.TicketReceived) -> None:
        self._engine().ticket_received(event)

    @event_consumer(ev.INTAKE_CHAT, ev.TICKET_RECEIVED)
    def handle_chat_ticket_received(self, event: ev.TicketReceived) -> None:
        self._engine().ticket_received(event)

    @event_consumer(ev.INTAKE_PHONE, ev.TICKET_RECEIVED)
    def handle_phone_ticket_received(self, event: ev.TicketReceived) -> None:
        self._engine().ticket_received(event)

    @event_consumer(ev.INTAKE_EMAIL, ev.MESSAGE_RECEIVED)
    def handle_email_message_received(self, event: ev.MessageReceived) -> None:
        self._engine().message_received(event)

    @event_consumer(ev.INTAKE_CHAT, ev.MESSAGE_RECEIVED)
    def handle_chat_message_received(self, event: ev.MessageReceived) -> None:
        self._engine().message_received(event)

    @event_consumer(ev.DISPATCHER, ev.TICKET_ATTACHED)
    def handle_ticket_attached(self, event: ev.TicketAttached) -> None:
        self._engine().ticket_attached(event)

    @event_consumer(ev.AGENT_DESK, ev.AGENT_REPLIED)
    def handle_agent_replied(self, event: ev.AgentReplied) -> None:
        self._engine().agent_replied(event)

    @event_consumer(ev.AGENT_DESK, ev.TICKET_STATUS_CHANGED)
    def handle_ticket_status_changed(self, event: ev.TicketStatusChanged) -> None:
        self._engine().ticket_status_changed(event)

    @event_consumer(ev.AGENT_DESK, ev.TICKET_RESOLVED)
    def handle_ticket_resolved(self, event: ev.TicketResolved) -> None:
        self._engine().ticket_resolved(event)

    @event_consumer(ev.AGENT_DESK, ev.TICKET_REOPENED)
    def handle_ticket_reopened(self, event: ev.TicketReopened) -> None:
        self._engine().ticket_reopened(event)

    @timer(interval=SWEEP_INTERVAL_SECONDS)
    def sweep(self) -> None:
        """Fire everything due, then sleep until the next item when it is due before the next tick."""
        self._engine().tick(SWEEP_INTERVAL_SECONDS, SWEEP_MAX_SECONDS, sleep=time.sleep)  # cooperative under eventlet

    @timer(interval=RECOMPUTE_INTERVAL_SECONDS)
    def recompute(self) -> None:
        """Look at the config files; carry open clocks to a new version (one replica walks)."""
        seen = self._engine().recompute_step(self.configs.owner)
        if seen:
            log.info("sla_recompute_progress", clocks=seen)
