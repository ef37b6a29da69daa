"""The dispatcher: classify received tickets, assign them to agents atomically, queue the rest,
and carry out offers, declines, transfers, escalations and reopens.

Failure policy (every handler): Redis or RabbitMQ briefly away raises a transient error and the
event is retried; anything else dead-letters it. Every handler is idempotent, so a retry or a
redelivery changes nothing twice (see assigner.py and store.py for how). Timers run in every
replica; the store's scripts make each expiry, relaxation and announcement happen once.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.dispatcher.assigner import ANNOUNCE_GRACE_SECONDS, Assigner
from services.dispatcher.classify import RuleSet, classify, parse_rules
from services.dispatcher.config import (
    DEFAULT_ROSTER_FILE,
    DEFAULT_ROUTING_RULES_FILE,
    DEFAULT_SLA_POLICY_FILE,
    ROSTER_FILE_KEY,
    ROUTING_RULES_FILE_KEY,
    SLA_POLICY_FILE_KEY,
)
from services.dispatcher.customers import customer_key
from services.dispatcher.policy import SECTION, RoutingPolicy, load_policy, parse_policy
from services.dispatcher.store import DispatchStore, TicketFacts
from shared import events as ev
from shared.config_files import read_yaml
from shared.logging import get_logger
from shared.nameko_ext import Emitter, LogContext, StoreProvider, event_consumer
from shared.roster import load_roster
from shared.sla_policy import Policy, load_policies, select_policy

log = get_logger(__name__)

OFFER_SWEEP_SECONDS = 1.0
RELAX_SWEEP_SECONDS = 1.0
QUEUE_SWEEP_SECONDS = 5.0
COMPLAINT_MARKERS = ("complaint", "complaint_risk")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Config:
    """What the dispatcher routes by, read once per container (a bad file stops the start)."""

    def __init__(self, rules: RuleSet, policy: RoutingPolicy, sla: tuple[Policy, ...]):
        self.rules = rules
        self.policy = policy
        self.sla = sla


class RoutingRulesProvider(DependencyProvider):
    """Loads the classification rules, the routing policy and the SLA policies once per container."""

    def setup(self) -> None:
        path = self.container.config.get(ROUTING_RULES_FILE_KEY, DEFAULT_ROUTING_RULES_FILE)
        data = read_yaml(path, "routing rules")
        policy = parse_policy(data, origin=f"routing policy {path}")
        # Classification reads the file without the routing policy section.
        rules_data = {k: v for k, v in data.items() if k != SECTION} if isinstance(data, dict) else data
        rules = parse_rules(rules_data, origin=f"routing rules {path}")
        sla_path = self.container.config.get(SLA_POLICY_FILE_KEY, DEFAULT_SLA_POLICY_FILE)
        self.config = Config(rules, policy, load_policies(sla_path))
        log.info("routing_rules_loaded", path=str(path), rules=len(rules.rules), capacity_model=policy.capacity_model,
                 offer_timeout_seconds=policy.offer_timeout_seconds, relaxation_steps=len(policy.relaxation))

    def get_dependency(self, worker_ctx: Any) -> Config:
        return self.config


class DispatchStoreProvider(StoreProvider):
    """The dispatch store, with the roster file written into Redis when the container starts."""

    def __init__(self, **kwargs: Any):
        super().__init__(DispatchStore, **kwargs)

    def setup(self) -> None:
        path = self.container.config.get(ROSTER_FILE_KEY, DEFAULT_ROSTER_FILE)
        self.roster = load_roster(path)  # before connecting: a bad roster fails the start at once
        policy = load_policy(self.container.config.get(ROUTING_RULES_FILE_KEY, DEFAULT_ROUTING_RULES_FILE))
        super().setup()
        self.store.policy = policy  # the claim script enforces its capacity model and fairness cap

    def start(self) -> None:
        count = self.store.load_roster(self.roster.agents)
        log.info("roster_loaded", agents=count)


class DispatcherService:
    name = ev.DISPATCHER

    store: DispatchStore = DispatchStoreProvider()
    config: Config = RoutingRulesProvider()
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
        """Record presence (an older change arriving late is ignored); online → drain the queue,
        away/offline → that agent's unaccepted offers go back to routing."""
        applied = self.store.set_presence(event.agent_id, event.presence, event.occurred_at.timestamp())
        if not self.store.is_known_agent(event.agent_id):
            log.warning("presence_of_unknown_agent", agent_id=event.agent_id)
        log.info("agent_presence_recorded", agent_id=event.agent_id, presence=event.presence, applied=applied)
        if applied:
            self._assigner().presence_changed(event.agent_id, event.presence)

    @event_consumer(ev.AGENT_DESK, ev.TICKET_ACCEPTED)
    def handle_ticket_accepted(self, event: ev.TicketAccepted) -> None:
        self._assigner().accept(event.ticket_id, event.agent_id, attempt=event.attempt)

    @event_consumer(ev.AGENT_DESK, ev.TICKET_DECLINED)
    def handle_ticket_declined(self, event: ev.TicketDeclined) -> None:
        status = self._assigner().decline(event.ticket_id, event.agent_id, event.reason, attempt=event.attempt)
        log.info("ticket_decline_handled", agent_id=event.agent_id, status=status)

    @event_consumer(ev.AGENT_DESK, ev.TICKET_TRANSFER_REQUESTED)
    def handle_ticket_transfer_requested(self, event: ev.TicketTransferRequested) -> None:
        self._assigner().transfer(event)

    @event_consumer(ev.AGENT_DESK, ev.TICKET_REOPENED)
    def handle_ticket_reopened(self, event: ev.TicketReopened) -> None:
        status = self._assigner().reopen(event)
        log.info("ticket_reopen_handled", by=event.by, status=status)

    @event_consumer(ev.SLA_WATCHER, ev.TICKET_ESCALATED)
    def handle_ticket_escalated(self, event: ev.TicketEscalated) -> None:
        status = self._assigner().escalate(event)
        log.info("ticket_escalation_handled", level=event.level, to_tier=event.to_tier, status=status)

    @event_consumer(ev.AGENT_DESK, ev.TICKET_RESOLVED)
    def handle_ticket_resolved(self, event: ev.TicketResolved) -> None:
        """Free the assignee's capacity once, then drain.

        A redelivery finds the ticket resolved and frees nothing, but still drains: the first
        delivery may have died between freeing and draining.
        """
        resolution = self.store.resolve(event.ticket_id, now=utcnow().timestamp())
        log.info("ticket_resolution_recorded", status=resolution.status, agent_id=resolution.agent_id)
        record = self.store.ticket(event.ticket_id)
        if record is not None:
            self.store.customer_ticket_closed(record.facts.customer_key, event.ticket_id)
        if resolution.status != "closed":
            self._assigner().drain(resolution.agent_id or event.agent_id, trigger=f"resolved:{event.ticket_id}")

    @timer(interval=ANNOUNCE_GRACE_SECONDS)
    def announce_orphaned_claims(self) -> None:
        """Announce claims/unassignments whose event publish failed or whose worker died.

        Drains also do this, but they run only on presence/resolve events; without this
        timer such an assignment could stay unknown to agent_desk and sla_watcher for good.
        """
        announced = self._assigner().announce_orphaned_claims()
        if announced:
            log.info("orphaned_claims_announced", count=announced)

    @timer(interval=QUEUE_SWEEP_SECONDS)
    def sweep_queues(self) -> None:
        """Offer each requirement queue's head again (fairness windows and decline cooldowns end
        without an event)."""
        assigned = self._assigner().sweep_queues()
        if assigned:
            log.info("queue_heads_assigned", count=assigned)

    @timer(interval=OFFER_SWEEP_SECONDS)
    def expire_offers(self) -> None:
        if self.config.policy.offers:
            self._assigner().expire_offers()

    @timer(interval=RELAX_SWEEP_SECONDS)
    def relax_waiting(self) -> None:
        if self.config.policy.relaxation:
            self._assigner().relax_waiting()

    def _route(self, event: ev.TicketReceived) -> None:
        now = utcnow().timestamp()
        key = customer_key(event.customer)
        history = self.store.customer_history(key, now=now, exclude=event.ticket_id)
        sender = event.customer.email or event.customer.phone or event.customer.chat_visitor_id
        result = classify(self.config.rules, channel=event.channel, subject=event.subject, text=event.text,
                          customer_language=event.customer.language, source=event.source,
                          customer_tier=event.customer.tier, sender=sender, history=history)
        customer_tier = event.customer.tier or "standard"
        sla = select_policy(self.config.sla, priority=result.priority, channel=event.channel, customer_tier=customer_tier)
        due = (event.received_at + timedelta(seconds=sla.first_response_seconds)).timestamp() if sla else None
        policy = self.config.policy
        sticky = None
        if event.linked_ticket_id:
            sticky = self.store.last_agent_of(event.linked_ticket_id)
        elif (policy.sticky_within_seconds and history.last_agent_id and history.last_agent_at is not None
              and now - history.last_agent_at <= policy.sticky_within_seconds):
            sticky = history.last_agent_id
        facts = TicketFacts(
            ticket_id=event.ticket_id, trace_id=event.trace_id, channel=event.channel, priority=result.priority,
            required_skills=result.required_skills, language=result.language, tags=result.tags,
            received_at=event.received_at, preferred_skills=result.preferred_skills, group=result.group,
            customer_key=key, customer_tier=customer_tier, sla_due_at=due, sticky_agent_id=sticky,
            category=result.category, signals=result.signals, matched_rules=result.matched_rules,
        )
        complaint = any(m in result.tags or m in result.signals for m in COMPLAINT_MARKERS)
        self.store.record_customer_ticket(key, event.ticket_id, received=event.received_at.timestamp(),
                                          complaint=complaint)
        outcome = self._assigner().receive(facts)
        log.info("ticket_routed", outcome=outcome, channel=event.channel, priority=result.priority,
                 skills=list(result.required_skills), language=result.language, rules=list(result.matched_rules),
                 sticky=sticky)

    def _assigner(self) -> Assigner:
        return Assigner(self.store, self.emit, clock=utcnow, policy=self.config.policy)
