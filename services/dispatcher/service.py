"""The dispatcher: classify received tickets, assign them to agents atomically, queue the rest,
and carry out offers, declines, transfers, escalations and reopens.

Failure policy (every handler): Redis or RabbitMQ briefly away raises a transient error and the
event is retried; anything else dead-letters it. Every handler is idempotent, so a retry or a
redelivery changes nothing twice (see assigner.py and store.py for how). Timers run in every
replica; the store's scripts make each expiry, relaxation and announcement happen once.

Hot reload: the rules file (classification rules and its ``routing:`` policy) and the roster
file are looked at every ``TM_CONFIG_RELOAD_SECONDS`` (from any handler, and from a 1 s timer so
an idle dispatcher notices too); a changed file is used without a restart. A file that no
longer validates keeps the last good version in use and logs ``config_reload_failed`` once.
A bad file at start still stops the start. SLA policies are read once.

- A new policy applies to the next decision and claim at once; a new capacity model also
  rebuilds the availability index (by the timer).
- A new roster is written to Redis by the timer with ``DispatchStore.load_roster``: profiles
  and capacities are replaced in one transaction and the availability index is rebuilt from
  them, while presence, load, open tickets and fairness counts stay as they are (keyed by
  agent id). Then every online agent of the roster is drained, so raised capacity or a new
  skill takes waiting tickets at once. Every replica writes the same file the same way, so N
  replicas reloading it end with the same Redis state.
- An agent removed from the roster gets no new work from the moment the roster is written
  (routing ranks only roster agents; a claim finds no capacity for them), and every ticket
  they still hold, offered or accepted, goes back to routing as ``ticket_unassigned`` reason
  ``roster_removed`` (agent_desk no longer signs them in, so the work would wait for nobody).
  Their recorded presence is left alone: re-added, they are as online as their console says.

One customer across channels (issue 4): a received ticket's verified identifiers resolve to a
customer profile (``shared.customer_store``: found, created or merged, atomically). The
profile's directory tier and language override the intake's for classification (so the SLA
watcher gets them through ``ticket_classified.customer_tier``); its history (recent tickets and
complaints, open tickets, last agent) feeds classification and sticky routing and travels on
``ticket_classified.history``. A contact whose customer has an open ticket on another channel,
active within ``routing.identity.attach_within_hours``, is per ``routing.identity`` mode:
``attach``: published as ``ticket_attached`` into that ticket and never classified or routed;
``link``: announced the same way (mode link) and routed as its own ticket, sticky to that
ticket's agent. The decision is recorded per contact before it is acted on, so a redelivery
repeats it. Two contacts of one new customer arriving on two channels in the same instant may
both become tickets (neither sees the other open yet).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import yaml
from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.dispatcher.assigner import ANNOUNCE_GRACE_SECONDS, Assigner
from services.dispatcher.classify import RuleSet, RulesError, classify, parse_rules
from services.dispatcher.config import (
    CONFIG_RELOAD_KEY,
    DEFAULT_CONFIG_RELOAD_SECONDS,
    DEFAULT_REGION,
    DEFAULT_REGION_KEY,
    DEFAULT_ROSTER_FILE,
    DEFAULT_ROUTING_RULES_FILE,
    DEFAULT_SLA_POLICY_FILE,
    ROSTER_FILE_KEY,
    ROUTING_RULES_FILE_KEY,
    SLA_POLICY_FILE_KEY,
)
from services.dispatcher.customers import combined_history, customer_key, summary_json
from services.dispatcher.policy import RoutingPolicy, parse_policy
from services.dispatcher.routing import ONLINE
from services.dispatcher.store import ASSIGNED, NEW, QUEUED, DispatchStore, Received, TicketFacts
from services.dispatcher.health import DispatcherHealth
from services.dispatcher.reload_requests import ReloadRequests, report_files
from shared import events as ev
from shared.customer_identity import attach_target, contact_identifiers
from shared.config_reload import Responder
from shared.customer_store import ATTACHED, LINKED, OWN, ContactOutcome, ProfileHistory
from shared.intake_ledger import stable_event_id
from shared.logging import get_logger
from shared.nameko_ext import Emitter, LogContext, StoreProvider, event_consumer
from shared.reloading import ReloadingFile
from shared.roster import Roster, RosterError, load_roster
from shared.sla_policy import Policy, expected_first_response, load_policies

log = get_logger(__name__)

OFFER_SWEEP_SECONDS = 1.0
RELAX_SWEEP_SECONDS = 1.0
QUEUE_SWEEP_SECONDS = 5.0
RELOAD_SWEEP_SECONDS = 1.0  # the timer's tick; the files are looked at every TM_CONFIG_RELOAD_SECONDS
COMPLAINT_MARKERS = ("complaint", "complaint_risk")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_routing(text: str, path: str) -> tuple[RuleSet, RoutingPolicy]:
    """The rules file's text → (classification rules, routing policy); raises naming the entry."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"routing rules {path} is not valid YAML: {exc}") from None
    policy = parse_policy(data, origin=f"routing policy {path}")
    return parse_rules(data, origin=f"routing rules {path}"), policy  # classification skips ``routing:``


class Config:
    """What one worker routes by: the versions in use when it started."""

    def __init__(self, rules: RuleSet, policy: RoutingPolicy, sla: tuple[Policy, ...], files: "ConfigFiles"):
        self.rules = rules
        self.policy = policy
        self.sla = sla
        self.files = files
        self.region = files.region


class ConfigFiles:
    """The rules and roster files of one container, re-read when they change (see the module
    docstring), and what of them this container has written to Redis."""

    def __init__(self, rules: ReloadingFile[tuple[RuleSet, RoutingPolicy]], roster: ReloadingFile[Roster],
                 sla: tuple[Policy, ...], region: str = DEFAULT_REGION):
        self.rules = rules
        self.roster = roster
        self.sla = sla
        self.region = region  # for customers' phone numbers written without a country code
        self.roster_written = 0  # version of the roster this container wrote to Redis (0: none yet)
        self.indexed_model: str | None = None  # capacity model the availability index was built for

    @classmethod
    def open(cls, rules_path: str, roster_path: str, sla: tuple[Policy, ...], *, now: float,
             interval: float, region: str = DEFAULT_REGION) -> "ConfigFiles":
        """Read both files; a missing or invalid one raises (the start fails with its message)."""
        def parse_rules_file(text: str) -> tuple[RuleSet, RoutingPolicy]:
            return parse_routing(text, rules_path)

        def parse_roster_file(_text: str) -> Roster:
            # load_roster reads the file itself; ReloadingFile decides when (a change) and keeps
            # the last good roster.
            return load_roster(roster_path)

        rules = _reloading(rules_path, parse_rules_file, "routing rules", RulesError, now, interval)
        roster = _reloading(roster_path, parse_roster_file, "roster", RosterError, now, interval)
        return cls(rules, roster, sla, region)

    def config(self, now: float) -> Config:
        rules, policy = self.rules.current(now)
        self.roster.current(now)
        return Config(rules, policy, self.sla, self)


def _reloading(path: str, parse: Any, what: str, error: type[Exception], now: float,
               interval: float) -> ReloadingFile:
    try:
        return ReloadingFile(path, parse, now=now, interval=interval, name=what)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8: {exc}") from None


class RoutingRulesProvider(DependencyProvider):
    """The rules (with the routing policy) and the roster, re-read when they change; a bad file
    stops the start. A worker gets the versions in use when it starts; a new policy also goes to
    the store at once (its claim script enforces the capacity model and fairness cap)."""

    def setup(self) -> None:
        config = self.container.config
        rules_path = str(config.get(ROUTING_RULES_FILE_KEY, DEFAULT_ROUTING_RULES_FILE))
        self.files = ConfigFiles.open(
            rules_path, str(config.get(ROSTER_FILE_KEY, DEFAULT_ROSTER_FILE)),
            load_policies(config.get(SLA_POLICY_FILE_KEY, DEFAULT_SLA_POLICY_FILE)), now=time.time(),
            interval=float(config.get(CONFIG_RELOAD_KEY, DEFAULT_CONFIG_RELOAD_SECONDS)),
            region=str(config.get(DEFAULT_REGION_KEY, DEFAULT_REGION)).upper())
        ruleset, policy = self.files.rules.value
        log.info("routing_rules_loaded", path=rules_path, rules=len(ruleset.rules), capacity_model=policy.capacity_model,
                 offer_timeout_seconds=policy.offer_timeout_seconds, relaxation_steps=len(policy.relaxation))

    def get_dependency(self, worker_ctx: Any) -> Config:
        config = self.files.config(time.time())
        store = self._store()
        if store is not None and store.policy != config.policy:
            store.policy = config.policy
        return config

    def _store(self) -> DispatchStore | None:
        for provider in self.container.dependencies:
            if isinstance(provider, DispatchStoreProvider):
                return provider.store
        return None


class DispatchStoreProvider(StoreProvider):
    """The dispatch store, with the routing policy and roster of the rules provider written to it
    when the container starts (later versions: ``DispatcherService.reload_config``)."""

    def __init__(self, **kwargs: Any):
        super().__init__(DispatchStore, **kwargs)

    def start(self) -> None:
        # Written here so the first tickets already see it; the reload timer's first tick writes
        # it once more and returns the tickets of agents removed while the service was down.
        files = self._files()
        self.store.policy = files.rules.value[1]
        count = self.store.load_roster(files.roster.value.agents)
        files.indexed_model = self.store.policy.capacity_model
        log.info("roster_loaded", agents=count, version=files.roster.version)

    def _files(self) -> ConfigFiles:
        for provider in self.container.dependencies:
            if isinstance(provider, RoutingRulesProvider):
                return provider.files
        raise RuntimeError("DispatchStoreProvider needs a RoutingRulesProvider in the same service")


class DispatcherService(DispatcherHealth):  # + /healthz, /readyz, /metrics, heartbeat
    name = ev.DISPATCHER

    store: DispatchStore = DispatchStoreProvider()
    config: Config = RoutingRulesProvider()
    reload_requests: Responder = ReloadRequests()
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
        if ev.resolved_at_intake(event.source):
            self._note_resolved_at_intake(event)
            return
        self._route(event)

    def _note_resolved_at_intake(self, event: ev.TicketReceived) -> None:
        """A call the agent resolved while the customer was on the line: nothing to route, but
        the customer's history counts the contact (repeat signals) and who helped (sticky)."""
        agent_id = event.source.get("agent_id") or None
        contact = contact_identifiers(event.customer, self.config.region)
        profile = self.store.customers.resolve(contact, now=utcnow().timestamp(), name=event.customer.name or None)
        self.store.record_resolved_contact(profile.profile_id, None if profile.profile_id else customer_key(event.customer),
                                           event.ticket_id, channel=event.channel,
                                           received=event.received_at.timestamp(), agent_id=agent_id)
        log.info("ticket_routing_skipped", reason="resolved_on_first_contact", agent_id=agent_id,
                 customer_id=profile.profile_id)

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
        log.info("ticket_escalation_handled", level=event.level, action=event.action, trigger=event.trigger,
                 to_tier=event.to_tier, to_priority=event.to_priority, status=status)

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
            self.store.customer_ticket_closed(record.facts, event.ticket_id)
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

    @timer(interval=RELOAD_SWEEP_SECONDS)
    def reload_config(self) -> None:
        """Carry a changed rules or roster file into Redis (providing ``self.config`` looked at them).

        ``ticketmesh roster|rules reload`` asks for a look now; the replica reports what it uses
        once that is in Redis (shared/config_reload.py)."""
        files, model = self.config.files, self.config.policy.capacity_model
        request = self.reload_requests.pending()
        if request is not None:
            files.rules.check()
            files.roster.check()
            self.store.policy = files.rules.value[1]
            model = self.store.policy.capacity_model
        if files.roster.version != files.roster_written:
            self._apply_roster(files)
        elif files.indexed_model != model:
            count = self.store.reindex()
            files.indexed_model = model
            log.info("availability_reindexed", capacity_model=model, agents=count)
        if files.roster.version == files.roster_written:  # else a newer roster came in meanwhile: next tick
            report_files(self.reload_requests, files.rules, files.roster, request=request, now=time.time())

    @timer(interval=OFFER_SWEEP_SECONDS)
    def expire_offers(self) -> None:
        # Runs even with offers off: offers made before a reload turned them off must still end.
        self._assigner().expire_offers()

    @timer(interval=RELAX_SWEEP_SECONDS)
    def relax_waiting(self) -> None:
        if self.config.policy.relaxation:
            self._assigner().relax_waiting()

    def _route(self, event: ev.TicketReceived) -> None:
        now = utcnow().timestamp()
        contact = contact_identifiers(event.customer, self.config.region)
        if contact.problems:  # the values themselves are personal data: only their kinds are logged
            log.info("customer_identifier_dropped", kinds=[p.split(":", 1)[0] for p in contact.problems])
        legacy_key = customer_key(event.customer)  # the history kept per key before profiles
        # The customer's reads, the routing lease and the agents' state: one round trip.
        received = self.store.receive(contact, legacy_key, event.ticket_id, now=now, name=event.customer.name or None)
        try:
            self._route_received(event, received, legacy_key, now)
        finally:
            self.store.release(received)  # unless routing took it over (and released it)

    def _route_received(self, event: ev.TicketReceived, received: Received, legacy_key: str | None,
                        now: float) -> None:
        profile, profile_history, legacy, decided = (received.resolution, received.history, received.legacy,
                                                     received.decided)
        if profile.changed:
            log.info("customer_resolved", customer_id=profile.profile_id, created=profile.created,
                     merged=list(profile.merged), maybe=[link.other for link in profile.maybe])
        customer_id = profile.profile_id
        decided = self._contact_decision(event, customer_id, profile_history, decided, now, received)
        if decided.outcome == ATTACHED:
            return
        history = combined_history(profile_history, legacy)
        sender = event.customer.email or event.customer.phone or event.customer.chat_visitor_id
        # The directory's tier and language are the company's word on the customer: they win.
        customer_tier = profile.tier or event.customer.tier
        language = profile.language or event.customer.language
        result = classify(self.config.rules, channel=event.channel, subject=event.subject, text=event.text,
                          customer_language=language, source=event.source,
                          customer_tier=customer_tier, sender=sender, history=history)
        customer_tier = customer_tier or "standard"
        due_at = expected_first_response(self.config.sla, priority=result.priority, channel=event.channel,
                                         received_at=event.received_at, customer_tier=customer_tier,
                                         category=result.category)
        due = due_at.timestamp() if due_at else None
        policy = self.config.policy
        sticky = None
        linked = decided.into_ticket_id if decided.outcome == LINKED else event.linked_ticket_id
        if linked:
            sticky = self.store.last_agent_of(linked)
        elif (policy.sticky_within_seconds and history.last_agent_id and history.last_agent_at is not None
              and now - history.last_agent_at <= policy.sticky_within_seconds):
            sticky = history.last_agent_id
        facts = TicketFacts(
            ticket_id=event.ticket_id, trace_id=event.trace_id, channel=event.channel, priority=result.priority,
            required_skills=result.required_skills, language=result.language, tags=result.tags,
            received_at=event.received_at, preferred_skills=result.preferred_skills, group=result.group,
            # Customers without a profile (nothing the channel proved) keep the per-key history.
            customer_key=None if customer_id else legacy_key, customer_tier=customer_tier, sla_due_at=due,
            sticky_agent_id=sticky, category=result.category, signals=result.signals,
            matched_rules=result.matched_rules, customer_id=customer_id,
            customer_summary=summary_json(profile_history, history),
        )
        complaint = any(m in result.tags or m in result.signals for m in COMPLAINT_MARKERS)
        # A linked contact gave the lease up before its announcement: routing takes it again.
        outcome = self._assigner().receive(facts, complaint=complaint,
                                           received=None if received.handed_over else received)
        log.info("ticket_routed", outcome=outcome, channel=event.channel, priority=result.priority,
                 skills=list(result.required_skills), language=result.language, rules=list(result.matched_rules),
                 sticky=sticky, customer_id=customer_id)

    def _contact_decision(self, event: ev.TicketReceived, customer_id: str | None, history: ProfileHistory,
                          decided: ContactOutcome | None, now: float,
                          received: Received | None = None) -> ContactOutcome:
        """Own ticket, or attached to / linked with the customer's open ticket on another channel.

        Decided when the customer has an open ticket, recorded before it is acted on (a join is
        announced as ``ticket_attached``, stable event id), and a redelivery repeats the recorded
        decision, whatever has changed since. A customer with nothing open gets its own ticket
        without a record: its redelivery finds the ticket already routed (read together with the
        open tickets' states) and keeps it its own.
        """
        if decided is None:
            if not customer_id or not history.open:  # nothing proved, or nothing open: its own ticket
                return ContactOutcome(OWN)
            open_ids = [t.ticket_id for t in history.open]
            records = self.store.tickets([*open_ids, event.ticket_id])
            routed = {r.facts.ticket_id: r.state for r in records if r is not None}
            if event.ticket_id in routed:
                return ContactOutcome(OWN)  # routed as its own ticket by an earlier delivery
            still_open = [t for t in history.open if routed.get(t.ticket_id) in (NEW, QUEUED, ASSIGNED)]
            policy = self.config.policy
            target = attach_target(still_open, channel=event.channel, ticket_id=event.ticket_id,
                                   mode=policy.attach_mode_for(event.channel),
                                   within_seconds=policy.attach_within_seconds, now=now)
            outcome = {"attach": ATTACHED, "link": LINKED}.get(target.mode, OWN)
            decided = self.store.customers.decide_contact(event.ticket_id, ContactOutcome(
                outcome, customer_id, target.into_ticket_id, now))
            log.info("contact_decided", outcome=decided.outcome, into_ticket_id=decided.into_ticket_id,
                     customer_id=customer_id, why=target.why)
        if decided.outcome == OWN or not decided.into_ticket_id:
            return decided
        if received is not None:
            # Joined or linked: the routing lease (taken with the customer's reads) goes before the
            # announcement, so a redelivery is not held up by it (as before the lease came first).
            self.store.release(received)
        if decided.outcome == ATTACHED:
            # The customer is active on that ticket again: a later contact's window counts from
            # here (written before the announcement, so whoever reacts to it already sees it).
            self.store.customers.touch_ticket(decided.customer_id, decided.into_ticket_id, at=now)
        self.emit(ev.TICKET_ATTACHED, now=utcnow(), trace_id=event.trace_id, ticket_id=event.ticket_id,
                  event_id=stable_event_id(ev.DISPATCHER, ev.TICKET_ATTACHED, event.ticket_id),
                  into_ticket_id=decided.into_ticket_id, channel=event.channel, customer=event.customer.model_dump(),
                  customer_id=decided.customer_id, subject=event.subject, text=event.text,
                  received_at=event.received_at, attachments=[a.model_dump() for a in event.attachments],
                  mode=decided.outcome)
        if decided.outcome == ATTACHED:
            log.info("ticket_attached", into_ticket_id=decided.into_ticket_id, channel=event.channel)
        return decided

    def _apply_roster(self, files: ConfigFiles) -> None:
        """Write the roster in use, return removed agents' tickets, drain the online agents.

        Marked written only once all of it is done, so a failure half-way is redone by the next
        tick (each step is idempotent).
        """
        version, roster = files.roster.version, files.roster.value
        count = self.store.load_roster(roster.agents)
        files.indexed_model = self.store.policy.capacity_model
        log.info("roster_loaded", agents=count, version=version)
        assigner = self._assigner()
        for agent_id in sorted(self.store.loaded_agents() - {a.agent_id for a in roster.agents}):
            returned = assigner.roster_removed(agent_id)
            log.info("removed_agent_tickets_returned", agent_id=agent_id, returned=returned)
        for agent in roster.agents:
            if self.store.presence(agent.agent_id) == ONLINE:
                assigner.drain(agent.agent_id, trigger="roster_changed")
        files.roster_written = version

    def _assigner(self) -> Assigner:
        return Assigner(self.store, self.emit, clock=utcnow, policy=self.config.policy)
