"""The SLA watcher: start first-response clocks, stop them, and fire warnings and breaches on time.

Failure policy: Redis or RabbitMQ briefly away raises a transient error and the event is
retried; anything else dead-letters it. Handlers are idempotent: a clock starts once, finishing
a finished clock changes nothing.

Every replica runs the sweep; the store's claim gives each due item to exactly one of them.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.sla_watcher.clocks import FIRST_RESPONSE, due_items, item_from_member, parse_member
from services.sla_watcher.config import DEFAULT_SLA_POLICY_FILE, SLA_POLICY_FILE_KEY
from shared.sla_policy import Policy, load_policies, select_policy
from services.sla_watcher.store import FULFILLED, RUNNING, STOPPED, ClaimedItem, Clock, SlaStore
from services.sla_watcher.health import SlaWatcherHealth
from shared import events as ev
from shared.intake_ledger import stable_event_id
from shared.logging import get_logger
from shared.nameko_ext import Emitter, LogContext, StoreProvider, event_consumer

log = get_logger(__name__)

SWEEP_INTERVAL_SECONDS = 0.25
SWEEP_BATCH = 500  # items claimed per round; a tick keeps claiming while rounds come back full


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class SlaPoliciesProvider(DependencyProvider):
    """Loads the policy file once per container; a bad file stops the start."""

    def setup(self) -> None:
        path = self.container.config.get(SLA_POLICY_FILE_KEY, DEFAULT_SLA_POLICY_FILE)
        self.policies = load_policies(path)
        log.info("sla_policies_loaded", path=str(path), policies=len(self.policies))

    def get_dependency(self, worker_ctx: Any) -> tuple[Policy, ...]:
        return self.policies


class SlaWatcherService(SlaWatcherHealth):  # + /healthz, /readyz, /metrics, heartbeat
    name = ev.SLA_WATCHER

    store: SlaStore = StoreProvider(SlaStore)
    policies: tuple[Policy, ...] = SlaPoliciesProvider()
    emit = Emitter()
    log_context = LogContext()

    @event_consumer(ev.DISPATCHER, ev.TICKET_CLASSIFIED)
    def handle_ticket_classified(self, event: ev.TicketClassified) -> None:
        """Start the first-response clock at the ticket's received_at under the matching policy."""
        policy = select_policy(self.policies, priority=event.priority, channel=event.channel,
                               customer_tier=event.customer_tier)
        if policy is None:
            log.info("sla_no_policy", priority=event.priority, channel=event.channel)
            return
        received_at = event.received_at.timestamp()
        items = due_items(event.ticket_id, FIRST_RESPONSE, received_at=received_at,
                          target_seconds=policy.first_response_seconds, warn_at=policy.warn_at)
        started = self.store.start_clock(ticket_id=event.ticket_id, clock=FIRST_RESPONSE, policy=policy.name,
                                         target_seconds=policy.first_response_seconds, received_at=received_at,
                                         trace_id=event.trace_id, items=items)
        log.info("sla_clock_started" if started else "sla_clock_already_known", clock=FIRST_RESPONSE,
                 policy=policy.name, target_seconds=policy.first_response_seconds)

    @event_consumer(ev.DISPATCHER, ev.TICKET_ASSIGNED)
    def handle_ticket_assigned(self, event: ev.TicketAssigned) -> None:
        self.store.set_assignee(event.ticket_id, FIRST_RESPONSE, event.agent_id)

    @event_consumer(ev.DISPATCHER, ev.TICKET_UNASSIGNED)
    def handle_ticket_unassigned(self, event: ev.TicketUnassigned) -> None:
        """Warnings must not name an agent who no longer holds the ticket (it waits, or a
        ``ticket_assigned`` names the next holder)."""
        cleared = self.store.clear_assignee(event.ticket_id, FIRST_RESPONSE, event.agent_id)
        log.info("sla_assignee_cleared" if cleared else "sla_assignee_unchanged", agent_id=event.agent_id,
                 reason=event.reason)

    @event_consumer(ev.AGENT_DESK, ev.AGENT_REPLIED)
    def handle_agent_replied(self, event: ev.AgentReplied) -> None:
        """The first reply fulfils first_response: its pending warnings and breach are dropped."""
        was = self.store.finish_clock(event.ticket_id, FIRST_RESPONSE, FULFILLED, at=utcnow().timestamp())
        log.info("sla_clock_fulfilled" if was in (RUNNING, "unknown") else "sla_clock_already_finished",
                 clock=FIRST_RESPONSE, previous=was)

    @event_consumer(ev.AGENT_DESK, ev.TICKET_RESOLVED)
    def handle_ticket_resolved(self, event: ev.TicketResolved) -> None:
        was = self.store.finish_clock(event.ticket_id, FIRST_RESPONSE, STOPPED, at=utcnow().timestamp())
        log.info("sla_clock_stopped", clock=FIRST_RESPONSE, previous=was)

    @timer(interval=SWEEP_INTERVAL_SECONDS)
    def sweep(self) -> None:
        """Fire every item due by now, earliest first, in rounds of SWEEP_BATCH."""
        while True:
            batch = self.store.claim_due(time.time(), SWEEP_BATCH)
            if not batch:
                return
            clocks = self.store.clocks([parse_member(item.member)[:2] for item in batch])
            for item, clock in zip(batch, clocks):
                self._fire(item, clock)
            if len(batch) < SWEEP_BATCH:
                return

    def _escalates(self, policy_name: str) -> bool:
        """A policy renamed or removed since the clock started keeps the default (escalate)."""
        for policy in self.policies:
            if policy.name == policy_name:
                return policy.escalate_on_breach
        return True

    def _fire(self, claimed: ClaimedItem, clock: Clock | None) -> None:
        if clock is None or clock.state != RUNNING:
            # Finished between the claim and now (or its record expired): nothing to say.
            self.store.release(claimed.member)
            return
        item = item_from_member(claimed.member, received_at=clock.received_at, target_seconds=clock.target_seconds)
        now = utcnow()
        event_type = ev.SLA_BREACHED if item.is_breach else ev.SLA_WARNING
        fields: dict[str, Any] = dict(
            ticket_id=clock.ticket_id, clock=clock.clock, policy=clock.policy, target_seconds=clock.target_seconds,
            due_at=datetime.fromtimestamp(clock.received_at + clock.target_seconds, tz=timezone.utc),
            agent_id=clock.agent_id,
            event_id=stable_event_id(ev.SLA_WATCHER, event_type, clock.ticket_id, clock.clock, item.kind),
        )
        if not item.is_breach:
            fields["elapsed_fraction"] = item.fraction
        self.emit(event_type, now=now, trace_id=clock.trace_id, **fields)
        if item.is_breach and self._escalates(clock.policy):
            # Published before the release: a worker dying here re-fires both, with the same ids.
            self.emit(ev.TICKET_ESCALATED, now=now, trace_id=clock.trace_id, ticket_id=clock.ticket_id,
                      event_id=stable_event_id(ev.SLA_WATCHER, ev.TICKET_ESCALATED, clock.ticket_id, clock.clock, "1"),
                      clock=clock.clock, policy=clock.policy, level=1,
                      reason=f"{clock.clock} target of {clock.target_seconds}s missed")
        self.store.release(claimed.member)
        log.info(event_type, ticket_id=clock.ticket_id, trace_id=clock.trace_id, clock=clock.clock,
                 kind=item.kind, agent_id=clock.agent_id, late_seconds=round(now.timestamp() - item.due_at, 3))
