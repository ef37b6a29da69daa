"""intake_email: every new message of the watched mailbox becomes exactly one ticket event.

The :mod:`~services.intake_email.watcher` entrypoint hands each fetched message to
``handle_mail``; when it returns, the message is flagged ``\\Seen`` and the checkpoint advances.
``handle_mail`` normalizes the mail and decides, by the message's identity (see
:mod:`~services.intake_email.intake`):

- already ticketed and published → nothing (a duplicate delivery or a re-fetch);
- already ticketed, publish unconfirmed (we crashed in between) → publish again, same event_id;
- it belongs to a ticket (:mod:`~services.intake_email.thread_match`: a signed Message-ID in its
  chain or signed plus address among its recipients, a stored Message-ID in its chain, or the
  subject tag from a participant) → ``message_received`` on that ticket, unless that ticket was
  resolved longer than ``TM_EMAIL_REOPEN_DAYS`` ago, or intake_email has no record of it any
  more (expired): then a new ticket linked to it;
- otherwise → a new ticket number and ``ticket_received``.

Before publishing a ticket event, the raw message (gzip) and its attachments are written
content-addressed under ``TM_DATA_DIR`` (see :mod:`~services.intake_email.files`); the event
names them: ``source["raw_sha256"]`` and ``attachments`` (``stored=False`` for files over the
limits).

Who the customer is: the sender; the Reply-To with ``TM_EMAIL_SENDER_FROM_REPLY_TO``; the
original sender when a roster agent forwards a customer's mail (:mod:`~services.intake_email.forwarding`).
``agent_desk.ticket_resolved`` is recorded per ticket (``record_ticket_resolved``) for the
reopen window.

Mail from a machine — an out-of-office reply, a bounce, our own acknowledgement coming back
(see :mod:`~services.intake_email.automatic`) — opens no ticket, or our acknowledgements and a
careless autoresponder would answer each other forever. It is kept in quarantine under
``automatic:<kind>:<signal>`` (nothing lost; ops can look), logged as ``mail_ignored_automatic``
and counts as handled, so the mailbox moves on. A bounce whose report names the failed
recipients (:mod:`~services.intake_email.bounces`) also publishes ``mail_bounced``, with the
ticket of the mail that bounced only when its Message-ID is one we signed (else none: a stored
customer Message-ID proves nothing, anyone can quote it in a forged report). Its event_id comes from the bounce's own identity, so a
re-fetch publishes the same event again (consumers dedupe).

A message that opens or follows up a ticket has its link (to the closed ticket it follows) and
its participants recorded right before its event is published, on the first attempt and on a
republish after a crash alike.

Unparseable mail is quarantined with its reason and counts as handled. So is new mail from a
sender over the flood limit (:mod:`~services.intake_email.flood`, logged ``mail_flood_throttled``;
checked after the identity lookups, so a message claimed before a crash is republished, never
throttled), and mail over its mailbox's size limit (headers only), whose sender is
told with ``mail_rejected`` when the mailbox has ``reject_oversize``
(:mod:`~services.intake_email.rejection`). A message ops reprocessed from quarantine
(``ticketmesh quarantine reprocess``) skips the automatic and flood checks once.

``/healthz`` answers while the container runs; ``/readyz`` checks Redis, RabbitMQ and that every
configured mailbox is watched by some replica and not stalled (:mod:`~services.intake_email.health`).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.message import Message
from pathlib import Path
from typing import Any, Mapping

import kombu
from nameko.extensions import DependencyProvider
from nameko.web.handlers import http

from shared import events as ev
from shared import mail_tokens
from shared.config import read
from shared.intake_ledger import natural_key_hash, stable_event_id
from shared.logging import bound_event_context, get_logger, mask
from shared.nameko_ext import Emitter, LogContext, StoreProvider, event_consumer
from shared.nameko_health import MetricsEndpoint
from shared.roster import RosterError, load_roster
from services.intake_email import automatic, bounces, flood, forwarding, health, intake, rejection, thread_match
from services.intake_email.config import (ATTACHMENT_MAX_BYTES_CONFIG_KEY, ATTACHMENTS_MAX_TOTAL_BYTES_CONFIG_KEY,
                                          DATA_DIR_CONFIG_KEY, DEFAULT_MAIL_FROM, DEFAULT_REOPEN_DAYS,
                                          MAIL_FROM_CONFIG_KEY, REOPEN_DAYS_CONFIG_KEY, ROSTER_FILE_CONFIG_KEY,
                                          SENDER_FROM_REPLY_TO_CONFIG_KEY, TOKEN_SECRET_CONFIG_KEY,
                                          FLOOD_MAX_CONFIG_KEY, FLOOD_WINDOW_CONFIG_KEY, MAILBOXES_CONFIG_KEY,
                                          STALL_CONFIG_KEY, WEB_SERVER_CONFIG_KEY, MailboxSettings,
                                          parse_reopen_days)
from services.intake_email.files import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_TOTAL_BYTES, MailFiles
from services.intake_email.imap import FetchedMail
from services.intake_email.normalize import MailRejected, NormalizedMail, message_id_of, normalize
from services.intake_email.quarantine import Quarantine
from services.intake_email.store import IntakeEmailStore
from services.intake_email.watcher import watch_mailbox

log = get_logger(__name__)

TICKETED = "ticketed"
FOLLOWED_UP = "followed_up"
DUPLICATE = "duplicate"
QUARANTINED = "quarantined"
IGNORED_AUTOMATIC = "ignored_automatic"
BOUNCED = "bounced"
THROTTLED = "throttled"
RABBITMQ_CHECK_TIMEOUT_SECONDS = 2.0


class QuarantineProvider(DependencyProvider):
    def setup(self) -> None:
        self.quarantine = Quarantine(Path(self.container.config.get(DATA_DIR_CONFIG_KEY, "var")) / "quarantine")

    def get_dependency(self, worker_ctx: Any) -> Quarantine:
        return self.quarantine


class MailFilesProvider(DependencyProvider):
    def setup(self) -> None:
        config = self.container.config
        self.files = MailFiles(
            Path(config.get(DATA_DIR_CONFIG_KEY, "var")),
            max_file_bytes=int(config.get(ATTACHMENT_MAX_BYTES_CONFIG_KEY, DEFAULT_MAX_FILE_BYTES)),
            max_total_bytes=int(config.get(ATTACHMENTS_MAX_TOTAL_BYTES_CONFIG_KEY, DEFAULT_MAX_TOTAL_BYTES)),
        )

    def get_dependency(self, worker_ctx: Any) -> MailFiles:
        return self.files


class OurAddressProvider(DependencyProvider):
    """Our support address (``TM_MAIL_FROM``): mail From it is our own mail looping back."""

    def setup(self) -> None:
        self.address = str(self.container.config.get(MAIL_FROM_CONFIG_KEY) or DEFAULT_MAIL_FROM).strip().lower()

    def get_dependency(self, worker_ctx: Any) -> str:
        return self.address


@dataclass(frozen=True)
class Threading:
    secret: bytes = field(repr=False)
    reopen_window: timedelta
    sender_from_reply_to: bool
    agents_by_email: Mapping[str, str]  # roster agent email (lowercased) → agent id


class ThreadingProvider(DependencyProvider):
    """The token secret, reopen window, sender options and agents' addresses, read at start."""

    def setup(self) -> None:
        config = self.container.config
        raw_secret = str(config.get(TOKEN_SECRET_CONFIG_KEY) or "")
        secret, dev_default = mail_tokens.secret_from_env({mail_tokens.SECRET_VARIABLE: raw_secret})
        if dev_default:
            log.warning("mail_token_secret_is_dev_default",
                        hint=f"set {mail_tokens.SECRET_VARIABLE}: anyone can forge ticket tokens with the default")
        try:
            agents = {a.email.strip().lower(): a.agent_id
                      for a in load_roster(config.get(ROSTER_FILE_CONFIG_KEY, "deploy/demo/roster.yaml")).agents
                      if a.email}
        except RosterError as exc:  # forwarding by agents is a nicety; mail keeps flowing without it
            log.warning("roster_unavailable", error=str(exc))
            agents = {}
        self.threading = Threading(
            secret=secret,
            reopen_window=timedelta(days=read(config, REOPEN_DAYS_CONFIG_KEY, DEFAULT_REOPEN_DAYS, parse_reopen_days)),
            sender_from_reply_to=bool(config.get(SENDER_FROM_REPLY_TO_CONFIG_KEY, False)),
            agents_by_email=agents,
        )

    def get_dependency(self, worker_ctx: Any) -> Threading:
        return self.threading


class IntakePolicy(DependencyProvider):
    """The mailboxes' settings, the flood policy, and the one-shot quarantine releases.

    A release (``ticketmesh quarantine reprocess``) is cleared only when the worker that used it
    succeeded, so a transient failure does not spend it.
    """

    def setup(self) -> None:
        config = self.container.config
        # /healthz and /readyz: without an address (embedded, tests) a free loopback port, never
        # nameko's default 0.0.0.0:8000 that two containers on one host would fight over. Every
        # extension's setup runs before any starts, so the web server binds after this.
        config.setdefault(WEB_SERVER_CONFIG_KEY, "127.0.0.1:0")
        self.mailboxes = {raw["name"]: MailboxSettings.from_config(raw) for raw in config.get(MAILBOXES_CONFIG_KEY, [])}
        self.flood = flood.FloodPolicy.from_minutes(config.get(FLOOD_MAX_CONFIG_KEY, 20),
                                                    config.get(FLOOD_WINDOW_CONFIG_KEY, 10))
        self.stall_seconds = float(config.get(STALL_CONFIG_KEY, 120))
        self.amqp_uri = config["AMQP_URI"]

    def get_dependency(self, worker_ctx: Any) -> "_WorkerPolicy":
        return _WorkerPolicy(self, worker_ctx.data)

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        release = worker_ctx.data.pop("_tm_release", None)
        if release is not None and exc_info is None:
            store, digest = release
            store.clear_release(digest)


class _WorkerPolicy:
    def __init__(self, provider: IntakePolicy, worker_data: dict):
        self.mailboxes = provider.mailboxes
        self.flood = provider.flood
        self.stall_seconds = provider.stall_seconds
        self.amqp_uri = provider.amqp_uri
        self._worker_data = worker_data

    def released(self, store: IntakeEmailStore, fetched: FetchedMail) -> bool:
        """Did ops reprocess exactly these bytes from quarantine (skip the checks, this once)?"""
        digest = hashlib.sha256(fetched.raw).hexdigest()
        if not store.is_released(digest):
            return False
        self._worker_data["_tm_release"] = (store, digest)
        return True


class IntakeEmailService(MetricsEndpoint):  # + /metrics, heartbeat (its own /healthz, /readyz below)
    name = ev.INTAKE_EMAIL

    emit = Emitter()
    store: IntakeEmailStore = StoreProvider(IntakeEmailStore)
    quarantine: Quarantine = QuarantineProvider()
    files: MailFiles = MailFilesProvider()
    our_address: str = OurAddressProvider()
    threading: Threading = ThreadingProvider()
    policy: Any = IntakePolicy()
    log_context = LogContext()

    @event_consumer(ev.AGENT_DESK, ev.TICKET_RESOLVED)
    def record_ticket_resolved(self, event: ev.TicketResolved) -> None:
        """When it was resolved decides whether a later reply reopens it or opens a new ticket."""
        self.store.mark_resolved(event.ticket_id, event.occurred_at)
        log.info("ticket_resolution_recorded")

    @watch_mailbox
    def handle_mail(self, fetched: FetchedMail) -> str:
        with bound_event_context(mailbox=fetched.mailbox, uid=fetched.uid):
            # Before anything else: a machine's mail must not even be judged as a ticket (a bounce
            # often has no usable sender), and over-size mail still has its headers to judge by.
            parsed = automatic.parse(fetched.raw)
            checks = not self.policy.released(self.store, fetched)
            if not checks:
                log.info("mail_released_from_quarantine")
            machine = automatic.classify(parsed, our_address=self.our_address) if parsed and checks else None
            if machine is not None:
                outcome = self._ignore_automatic(fetched, machine)
                if machine.kind == automatic.BOUNCE:
                    return self._report_bounce(fetched, parsed) or outcome
                return outcome
            if fetched.header_only:
                # Never claimed, so nothing to republish: the flood check may come first (a flood
                # of over-size mail must not make us send a flood of rejections).
                return self._throttled(fetched, parsed, checks) or self._too_large(fetched, parsed)
            try:
                # The size limit was applied at fetch time from RFC822.SIZE; parsed once, above.
                mail = normalize(fetched.raw, received_at=fetched.internal_date, max_bytes=len(fetched.raw),
                                 sender_from_reply_to=self.threading.sender_from_reply_to,
                                 our_address=self.our_address, parsed=parsed)
            except MailRejected as rejected:
                return self._quarantine(fetched, rejected.reason)
            key = intake.contact_key(mail, fetched)
            who = self._customer(mail)
            # A message already claimed (we crashed before its publish was confirmed) is finished,
            # whatever its sender sent since: the flood check is for new messages only.
            opened = self.store.ticket_opened_by(key.kind, key.key)
            if opened:
                return self._open_ticket(mail, fetched, key, opened, who)
            replied = self.store.ticket_replied_by(key.kind, key.key)
            if replied:
                return self._follow_up(mail, fetched, key, replied, who)
            return self._throttled(fetched, parsed, checks) or self._thread(mail, fetched, key, who)

    def _throttled(self, fetched: FetchedMail, parsed: Message | None, checks: bool) -> str | None:
        """Quarantine the mail when its sender is over the flood limit; None when it may go on."""
        reason = self._flood_reason(fetched, parsed) if parsed and checks else None
        if not reason:
            return None
        log.warning("mail_flood_throttled", from_email=rejection.sender(parsed)[1], reason=reason)
        return self._quarantine(fetched, reason, as_outcome=THROTTLED)

    def _customer(self, mail: NormalizedMail) -> forwarding.Customer:
        return forwarding.customer_of(from_email=mail.from_email, from_name=mail.from_name, text=mail.text,
                                      agents_by_email=self.threading.agents_by_email, our_address=self.our_address)

    def _flood_reason(self, fetched: FetchedMail, parsed: Any) -> str | None:
        address = rejection.sender(parsed)[1]
        if not address:
            return None
        member = flood.message_member(str(parsed.get("Message-ID", "") or ""), fetched.mailbox,
                                      fetched.uidvalidity, fetched.uid)
        count = self.store.record_sender_message(flood.sender_hash(address), member, now=time.time(),
                                                 window_seconds=self.policy.flood.window_seconds)
        return flood.throttle_reason(self.policy.flood, count)

    def _too_large(self, fetched: FetchedMail, parsed: Any) -> str:
        mailbox = self.policy.mailboxes.get(fetched.mailbox)
        limit = mailbox.max_message_bytes if mailbox else 0
        outcome = self._quarantine(fetched, f"message is {fetched.size} bytes, over the mailbox's size limit"
                                   + (f" of {limit}" if limit else ""))
        if not (mailbox and mailbox.reject_oversize and parsed):
            return outcome
        fields = rejection.too_large_fields(parsed, mailbox=fetched.mailbox, uidvalidity=fetched.uidvalidity,
                                            uid=fetched.uid, size=fetched.size, limit=limit,
                                            received_at=fetched.internal_date)
        if fields is None:
            log.info("mail_rejection_not_sent", reason="system or no-reply sender")
        elif not self.store.is_rejection_published(fetched.mailbox, fetched.uidvalidity, fetched.uid):
            _event_id, trace_id = rejection.event_ids(fetched.mailbox, fetched.uidvalidity, fetched.uid)
            self.emit(ev.MAIL_REJECTED, now=datetime.now(timezone.utc), trace_id=trace_id, **fields)
            self.store.mark_rejection_published(fetched.mailbox, fetched.uidvalidity, fetched.uid)
            log.info("mail_rejected", to=fields["to"], reason=fields["reason"], size=fetched.size, limit=limit)
        return outcome

    # -- health --------------------------------------------------------------------------------

    @http("GET", "/healthz")
    def healthz(self, request: Any) -> tuple[int, dict, str]:
        return 200, {"Content-Type": "application/json"}, json.dumps({"alive": True})

    @http("GET", "/readyz")
    def readyz(self, request: Any) -> tuple[int, dict, str]:
        names = sorted(self.policy.mailboxes)
        try:
            self.store.ping()
            states = self.store.mailbox_states(names)
            redis_ok = True
        except Exception:  # noqa: BLE001 - unreachable is the answer, not an error
            states, redis_ok = [({}, None) for _ in names], False
        now = time.time()
        judged = [health.judge_mailbox(name, record, holder, now=now, stall_seconds=self.policy.stall_seconds)
                  for name, (record, holder) in zip(names, states)]
        status, body = health.readiness(redis_ok=redis_ok, rabbitmq_ok=self._rabbitmq_reachable(),
                                        mailboxes=judged, now=now)
        return status, {"Content-Type": "application/json"}, json.dumps(body)

    def _rabbitmq_reachable(self) -> bool:
        try:
            with kombu.Connection(self.policy.amqp_uri, connect_timeout=RABBITMQ_CHECK_TIMEOUT_SECONDS) as conn:
                conn.connect()
            return True
        except Exception:  # noqa: BLE001
            return False


    def _thread(self, mail: NormalizedMail, fetched: FetchedMail, key: intake.ContactKey,
                who: forwarding.Customer) -> str:
        """A message seen for the first time: follow up the ticket it belongs to, or open one."""
        recipients = mail.to_addresses[:thread_match.MAX_ADDRESSES]
        facts = thread_match.ThreadFacts(from_email=mail.from_email, recipients=recipients,
                                         in_reply_to=mail.in_reply_to, references=mail.references,
                                         subject=mail.subject, message_id=mail.message_id)
        secret = self.threading.secret
        plan = thread_match.lookup_plan(facts, secret)
        lookups = self.store.thread_lookups(intake.KIND_MESSAGE_ID, [intake.message_id_key(m) for m in plan.chain],
                                            sender=mail.from_email, tickets=plan.tickets)
        decision = thread_match.decide(facts, secret, lookups)
        route = thread_match.route(decision, known=decision.ticket_id in lookups.known_tickets,
                                   resolved_at=lookups.resolved.get(decision.ticket_id or ""),
                                   received_at=mail.received_at, reopen_window=self.threading.reopen_window)
        self._log_decision(mail, decision, route)
        if route.ticket_id:
            ticket_id = self.store.claim_reply(key.kind, key.key, route.ticket_id)
            return self._follow_up(mail, fetched, key, ticket_id, who)
        # The link is stored before the number is claimed: a re-fetch after a crash in between
        # finds the claim, not this decision, and must still publish the ticket linked.
        self.store.plan_link(key.kind, key.key, route.linked_ticket_id)
        ticket_id, _new = self.store.claim_ticket(key.kind, key.key)
        return self._open_ticket(mail, fetched, key, ticket_id, who)

    @staticmethod
    def _log_decision(mail: NormalizedMail, decision: thread_match.Decision, route: thread_match.Route) -> None:
        if decision.ignored_tag:
            log.info("mail_subject_tag_ignored", tag=decision.ignored_tag, why=decision.ignored_why,
                     from_email=mail.from_email)
        if decision.ticket_id is None:
            return
        # Our signed ids and the tag say nothing about anyone; an address or a customer's
        # Message-ID (some clients put the address in it) is masked.
        ours = decision.by in (thread_match.BY_SIGNED_MESSAGE_ID, thread_match.BY_SUBJECT_TAG)
        evidence = decision.evidence if ours else mask(decision.evidence)
        log.info("mail_threaded", by=decision.by, to_ticket=decision.ticket_id, evidence=evidence)
        if route.linked_ticket_id:
            log.info("mail_opens_linked_ticket", linked_ticket_id=route.linked_ticket_id, why=route.why)

    def _open_ticket(self, mail: NormalizedMail, fetched: FetchedMail, key: intake.ContactKey, ticket_id: str,
                     who: forwarding.Customer) -> str:
        """Publish the ticket ``key`` claimed: first (again, after a crash: idempotent) its link
        and participants, so a republished ticket is the same ticket."""
        trace_id = intake.trace_id_for(ticket_id)
        with bound_event_context(ticket_id=ticket_id, trace_id=trace_id):
            if self.store.is_ticket_published(ticket_id):
                log.info("mail_duplicate", of="ticket_received")
                return DUPLICATE
            linked_ticket_id = self.store.prepare_ticket(key.kind, key.key, ticket_id, thread_match.participants(
                sender=mail.from_email, recipients=(who.email, *mail.to_addresses[:thread_match.MAX_ADDRESSES]),
                our_address=self.our_address))
            fields = intake.ticket_received_fields(mail, fetched, ticket_id, who=who, linked_ticket_id=linked_ticket_id)
            self._keep_files(fetched, mail, fields)
            self.emit(ev.TICKET_RECEIVED, now=datetime.now(timezone.utc), trace_id=trace_id, **fields)
            self.store.mark_ticket_published(ticket_id)
            log.info("mail_ticketed", from_email=who.email, language=mail.language,
                     attachments=len(mail.attachments), forwarded_by=who.forwarded_by,
                     linked_ticket_id=linked_ticket_id)
            return TICKETED

    def _follow_up(self, mail: NormalizedMail, fetched: FetchedMail, key: intake.ContactKey, ticket_id: str,
                   who: forwarding.Customer) -> str:
        trace_id = intake.trace_id_for(ticket_id)
        with bound_event_context(ticket_id=ticket_id, trace_id=trace_id):
            if self.store.is_reply_published(key.kind, key.key):
                log.info("mail_duplicate", of="message_received")
                return DUPLICATE
            # Whoever a token or the thread brought in may use the subject tag from now on (here,
            # not at the claim: a re-fetch after a crash in between must add them too).
            self.store.add_participants(ticket_id, {who.email, mail.from_email})
            now = datetime.now(timezone.utc)
            fields = intake.message_received_fields(mail, key, ticket_id, who=who)
            self._keep_files(fetched, mail, fields)
            # agent_desk reopens a resolved ticket on this message: its resolution no longer counts.
            self.store.mark_followed_up(ticket_id, now)
            self.emit(ev.MESSAGE_RECEIVED, now=now, trace_id=trace_id, **fields)
            self.store.mark_reply_published(key.kind, key.key)
            log.info("mail_followed_up", from_email=mail.from_email)
            return FOLLOWED_UP

    def _keep_files(self, fetched: FetchedMail, mail: NormalizedMail, fields: dict[str, Any]) -> None:
        """Write the raw mail and its attachments before the event that names them is published."""
        source = dict(fields.get("source") or {})
        source["raw_sha256"] = self.files.keep_raw(fetched.raw)
        fields["source"] = source
        fields["attachments"] = self.files.keep_attachments(mail.attachments)
        skipped = sum(1 for a in fields["attachments"] if not a["stored"])
        if skipped:
            log.info("mail_attachments_over_limit", not_stored=skipped, listed=len(fields["attachments"]))

    def _report_bounce(self, fetched: FetchedMail, parsed: Message) -> str | None:
        """Publish ``mail_bounced`` for a bounce that names its failed recipients; None when it does not."""
        report = bounces.parse_bounce(parsed)
        if report is None:
            log.info("bounce_without_report")
            return None
        # Only our signed Message-ID ties a bounce to a ticket: anyone can send a delivery report,
        # and the notifier believes one only when it names a ticket (and an address it mailed).
        original = report.original_message_id
        ticket_id = mail_tokens.ticket_from_message_id(self.threading.secret, original) if original else None
        own_id = message_id_of(parsed.get("Message-ID"))
        identity = intake.message_id_key(own_id) if own_id else natural_key_hash(
            f"{fetched.mailbox}\0{fetched.uidvalidity}\0{fetched.uid}")
        event_id = stable_event_id(ev.MAIL_BOUNCED, identity)
        trace_id = intake.trace_id_for(ticket_id) if ticket_id else stable_event_id("trace", event_id)
        with bound_event_context(ticket_id=ticket_id, trace_id=trace_id):
            self.emit(ev.MAIL_BOUNCED, now=datetime.now(timezone.utc), trace_id=trace_id, event_id=event_id,
                      ticket_id=ticket_id, recipients=list(report.recipients), status=report.status,
                      reason=report.reason, hard=report.hard, original_message_id=report.original_message_id,
                      reporting_mta=report.reporting_mta, received_at=fetched.internal_date)
            log.info("mail_bounced", recipient=report.recipients[0], recipients=len(report.recipients),
                     status=report.status, hard=report.hard, of_ticket=ticket_id is not None)
        return BOUNCED

    def _ignore_automatic(self, fetched: FetchedMail, machine: automatic.Automatic) -> str:
        path = self.quarantine.put(fetched, machine.label, now=datetime.now(timezone.utc))
        log.info("mail_ignored_automatic", kind=machine.kind, reason=machine.reason, from_email=machine.sender,
                 path=str(path))
        return IGNORED_AUTOMATIC

    def _quarantine(self, fetched: FetchedMail, reason: str, as_outcome: str = QUARANTINED) -> str:
        path = self.quarantine.put(fetched, reason, now=datetime.now(timezone.utc))
        log.warning("mail_quarantined", reason=reason, path=str(path))
        return as_outcome

