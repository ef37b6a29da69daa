"""The dispatcher: classify received tickets, assign them to agents atomically, queue the rest.

Failure policy (every handler): Redis or RabbitMQ briefly away raises a transient error and the
event is retried; anything else dead-letters it. Every handler is idempotent, so a retry or a
redelivery changes nothing twice (see assigner.py and store.py for how).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.dispatcher.assigner import ANNOUNCE_GRACE_SECONDS, Assigner
from services.dispatcher.classify import RuleSet, classify, load_rules
from services.dispatcher.config import (
    DEFAULT_ROSTER_FILE,
    DEFAULT_ROUTING_RULES_FILE,
    ROSTER_FILE_KEY,
    ROUTING_RULES_FILE_KEY,
)
from services.dispatcher.store import DispatchStore, TicketFacts
from shared import events as ev
from shared.logging import get_logger
from shared.nameko_ext import Emitter, LogContext, StoreProvider, event_consumer
from shared.roster import load_roster

log = get_logger(__name__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class RoutingRulesProvider(DependencyProvider):
    """Loads the classification rules once per container; a bad file stops the start."""

    def setup(self) -> None:
        path = self.container.config.get(ROUTING_RULES_FILE_KEY, DEFAULT_ROUTING_RULES_FILE)
        self.rules = load_rules(path)
        log.info("routing_rules_loaded", path=str(path), rules=len(self.rules.rules))

    def get_dependency(self, worker_ctx: Any) -> RuleSet:
        return self.rules


class DispatchStoreProvider(StoreProvider):
    """The dispatch store, with the roster file written into Redis when the container starts."""

    def __init__(self, **kwargs: Any):
        super().__init__(DispatchStore, **kwargs)

    def setup(self) -> None:
        path = self.container.config.get(ROSTER_FILE_KEY, DEFAULT_ROSTER_FILE)
        self.roster = load_roster(path)  # before connecting: a bad roster fails the start at once
        super().setup()

    def start(self) -> None:
        count = self.store.load_roster(self.roster.agents)
        log.info("roster_loaded", agents=count)


class DispatcherService:
    name = ev.DISPATCHER

    store: DispatchStore = DispatchStoreProvider()
    rules: RuleSet = RoutingRulesProvider()
    emit = Emitter()
    log_context = LogContext()

    @event_consumer(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED)
    def handle_email_ticket_received(self, event: ev.TicketReceived) -> None:
        self._route(event)

    @event_consumer(ev.INTAKE_CHAT, ev.TICKET_RECEIVED)
    def handle_chat_ticket_received(self, event: ev.TicketReceived) -> None:
        self._route(event)

    @event_consumer(ev.INTAKE_PHONE, ev.TICKET_RECEIVED)
    def handle_phone_ticket_received(self, event: ev.TicketReceived) -> None:
        self._route(event)

    @event_consumer(ev.AGENT_DESK, ev.AGENT_PRESENCE_CHANGED)
    def handle_agent_presence_changed(self, event: ev.AgentPresenceChanged) -> None:
        """Record presence (an older change arriving late is ignored); online → drain the queue."""
        applied = self.store.set_presence(event.agent_id, event.presence, event.occurred_at.timestamp())
        if not self.store.is_known_agent(event.agent_id):
            log.warning("presence_of_unknown_agent", agent_id=event.agent_id)
        log.info("agent_presence_recorded", agent_id=event.agent_id, presence=event.presence, applied=applied)
        if applied and event.presence == "online":
            self._assigner().drain(trigger=f"online:{event.agent_id}")

    @event_consumer(ev.AGENT_DESK, ev.TICKET_ACCEPTED)
    def handle_ticket_accepted(self, event: ev.TicketAccepted) -> None:
        assignee = self.store.record_acceptance(event.ticket_id, event.agent_id, now=utcnow().timestamp())
        if assignee != event.agent_id:
            log.warning("ticket_accepted_by_other_agent", agent_id=event.agent_id, assignee=assignee)

    @event_consumer(ev.AGENT_DESK, ev.TICKET_RESOLVED)
    def handle_ticket_resolved(self, event: ev.TicketResolved) -> None:
        """Free the assignee's capacity once, then drain.

        A redelivery finds the ticket resolved and frees nothing, but still drains: the first
        delivery may have died between freeing and draining.
        """
        resolution = self.store.resolve(event.ticket_id, now=utcnow().timestamp())
        log.info("ticket_resolution_recorded", status=resolution.status, agent_id=resolution.agent_id)
        if resolution.status != "closed":
            self._assigner().drain(trigger=f"resolved:{event.ticket_id}")

    @timer(interval=ANNOUNCE_GRACE_SECONDS)
    def announce_orphaned_claims(self) -> None:
        """Announce claims whose ``ticket_assigned`` publish failed or whose worker died.

        Drains also do this, but they run only on presence/resolve events; without this
        timer such an assignment could stay unknown to agent_desk and sla_watcher for good.
        """
        announced = self._assigner().announce_orphaned_claims()
        if announced:
            log.info("orphaned_claims_announced", count=announced)

    def _route(self, event: ev.TicketReceived) -> None:
        result = classify(self.rules, channel=event.channel, subject=event.subject, text=event.text,
                          customer_language=event.customer.language, source=event.source)
        facts = TicketFacts(
            ticket_id=event.ticket_id, trace_id=event.trace_id, channel=event.channel, priority=result.priority,
            required_skills=result.required_skills, language=result.language, tags=result.tags,
            received_at=event.received_at,
        )
        outcome = self._assigner().receive(facts)
        log.info("ticket_routed", outcome=outcome, channel=event.channel, priority=result.priority,
                 skills=list(result.required_skills), language=result.language, rules=list(result.matched_rules))

    def _assigner(self) -> Assigner:
        return Assigner(self.store, self.emit, clock=utcnow)
