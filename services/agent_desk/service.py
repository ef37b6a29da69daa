"""agent_desk: the agents' console. HTTP API + WebSocket push (aiohttp) and event handlers.

HTTP (every /api route but login, and /ws, needs a signed-in session or an API token sent as
``Authorization: Bearer <token>``; else 401 JSON). Agents see and act on their own tickets only
(403 ``not_assignee``); supervisors on every ticket, plus the supervisor routes (else 403
``not_supervisor``)::

    GET  /                               the console page (static/)
    POST /api/login {agent_id,password}  → sets the session cookie (HttpOnly, SameSite=Lax)
    POST /api/logout                     → session ended everywhere, then presence offline (best-effort)
    GET  /api/me                         → {agent_id, name, role, group, presence}
    POST /api/presence {presence}        → emits agent_presence_changed when it changes
    GET  /api/directory                  → agents (id, name, group) and groups, for transfer targets
    POST /api/tokens {label}             → a new API token, shown once (session only; stored hashed)
    GET  /api/tokens                     → the caller's tokens (no secrets)
    DELETE /api/tokens/{token_id}        → revoke one
    GET  /api/tickets                    → the agent's work list (supervisors: ?agent_id=)
    GET  /api/tickets/{id}               → {ticket, history}: one ticket view and the customer's other tickets
    GET  /api/tickets/{id}/decisions     → the routing decision of every attempt
    POST /api/tickets/{id}/accept        → emits ticket_accepted (once; 409 when the offer ran out)
    POST /api/tickets/{id}/decline {reason?}  → emits ticket_declined (the offered agent only)
    POST /api/tickets/{id}/reply {text, client_reply_id}
                                         → emits agent_replied (once per client_reply_id)
    POST /api/tickets/{id}/notes {text, client_note_id?}  → internal note (no event: stays in the desk)
    POST /api/tickets/{id}/transfer {to_agent_id|to_group, reason}
                                         → emits ticket_transfer_requested kind=transfer
    POST /api/tickets/{id}/reassign {to_agent_id|to_group, reason}  (supervisors)
                                         → emits ticket_transfer_requested kind=reassign
    POST /api/tickets/{id}/status {status}  → emits ticket_status_changed with the status's SLA pause flag
                                         (open | waiting_on_customer | on_hold; shared/ticket_status.py)
    POST /api/tickets/{id}/resolve       → emits ticket_resolved (once)
    POST /api/tickets/{id}/reopen        → emits ticket_reopened by=agent
    GET  /api/supervisor/overview        → queues by skill, agents' presence and load, SLA risk, decisions
    GET  /api/v1/reports?from=&to=&by=&tz=  (supervisors) → first response / resolution times, SLA
                                         attainment, breaches, escalations, CSAT per agent|group|channel|day;
                                         SLA per day, response-time distribution, backlog by skill (reports.py)
    GET  /api/v1/tickets/{id}/history    → the ticket's recorded path (events in order, gaps) and its facts
    /api/v1/customers...                 customer profiles (supervisors): see customers_api.py
    GET  /ws                             → WebSocket: work list on connect, then pushes

An action publishes its event (confirmed by the broker) before the view records it: if the
publish fails the agent gets a 503 and can retry, and every action event carries a stable
event_id so a retry is the same event (a reply's comes from the console's client_reply_id).

Consumed events (handler name = queue name, wire contract): ``store_*`` handlers share one
queue across replicas and keep the ticket views; ``push_*`` handlers are broadcast (one queue
per replica) and deliver frames to the sockets this replica holds (``board_*`` ones only tell
supervisors' consoles to refresh their boards). ``ticket_assigned`` is pushed as an offer
(with ``offer_expires_at``); ``ticket_unassigned`` takes the ticket off that agent's console;
``ticket_classified`` fills tags/category/signals; ``ticket_assigned``/``ticket_queued`` keep
their decision records; ``ticket_transferred`` and ``sla_watcher.ticket_escalated`` add system
notes; ``sla_warning``/``sla_breached`` keep the due time. A customer message on a resolved
ticket reopens it and the desk emits ``ticket_reopened`` by=customer (the dispatcher routes it,
preferring the last agent). A view missing because events overtook each other raises
TransientError (retried after a pause) for ``tickets.OUT_OF_ORDER_GRACE_SECONDS``, then
dead-letters. ``intake_email.mail_bounced`` with a ticket adds a system note to it.
``dispatcher.ticket_attached``: a contact from another channel joined the customer's open ticket
(a customer message with its channel and a "Continued from" note, pushed to the holder; the
contact itself is marked attached and its later messages go to that ticket), or was linked to it
(a note on both).

History: ``record_history`` (one shared queue per source and event type, every ticket event of
every exchange, ``history.RECORDED``) keeps each ticket's path and report facts
(``history_store``; off on a replica with ``TM_HISTORY_RECORD=false``).

Presence: every replica marks the agents whose console sockets it holds as seen every
``grace/4`` seconds; an agent online/away but not seen on any replica for
``TM_DESK_PRESENCE_GRACE_SECONDS`` is announced offline by exactly one replica (a Redis claim).

Roster: ``TM_ROSTER_FILE`` is looked at every ``TM_CONFIG_RELOAD_SECONDS`` when a request needs
it; a changed file is used without a restart (a new agent can sign in, a removed one's sessions
and tokens answer 401, a role or group change applies to the next request), and a version that
does not validate keeps the last good one (``config_reload_failed``).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import re
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from services.agent_desk import history, reports, supervisor, tickets
from services.agent_desk.config import Settings
from services.agent_desk.customers_api import CustomersApi
from services.agent_desk.history_store import HistoryStore
from services.agent_desk.push import ConsoleSocket, SocketHub
from services.agent_desk.sessions import COOKIE_NAME, Session, sign_session, verify_session
from services.agent_desk.store import DeskStore, ScriptCall
from services.agent_desk.tickets import ActionRefused, TicketNotStored, TicketView
from shared import events as ev
from shared.aio_service import (AioService, ApiError, BrokerUnavailable, ServiceContext, json_response,
                                publish_confirmed, read_json)
from shared.amqp import EventConsumer, EventPublisher, Handler
from shared.customer_store import CustomerStore
from shared.errors import TRANSIENT_ERRORS, TransientError
from shared.intake_ledger import stable_event_id
from shared.logging import bound_event_context, get_logger
from shared.redis_store import sync_client
from shared.reloading import ReloadingFile
from shared.roster import AgentProfile, RosterError, hash_password, load_roster, verify_password

log = get_logger(__name__)

SERVICE_NAME = ev.AGENT_DESK
STATIC_DIR = Path(__file__).parent / "static"
PRESENCES = ("online", "away", "offline")
WS_HEARTBEAT_SECONDS = 25.0
MAX_CREDENTIAL_CHARS = 1024
CONSOLE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
_INTAKES = ((ev.INTAKE_EMAIL, "email"), (ev.INTAKE_CHAT, "chat"), (ev.INTAKE_PHONE, "phone"))
_MESSAGE_INTAKES = ((ev.INTAKE_EMAIL, "email"), (ev.INTAKE_CHAT, "chat"), (ev.INTAKE_PHONE, "phone"))
_RECORDED = frozenset(history.RECORDED)
_UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
CLIENT_REPLY_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
TOKEN_PREFIX = "tmd_"
BEARER = re.compile(r"Bearer\s+(\S{1,200})", re.IGNORECASE)
TOKEN_SOCKET_PREFIX = "token:"  # a console socket opened with an API token: its credential is the token's hash
MAX_TOKENS_PER_AGENT = 20
MIN_PRESENCE_TICK_SECONDS = 0.05


AGENT = web.RequestKey("agent", AgentProfile)
SESSION = web.RequestKey("session", Session)
VIA_TOKEN = web.RequestKey("via_token", bool)
TOKEN_HASH = web.RequestKey("token_hash", str)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def roster_file(path: str, *, now: float, interval: float) -> ReloadingFile[dict[str, AgentProfile]]:
    """The roster, re-read when the file changes (a bad new version keeps the last good one and
    logs ``config_reload_failed``); a bad file at start raises :class:`RosterError`."""
    try:
        # load_roster reads the file itself; ReloadingFile decides when (a change).
        return ReloadingFile(path, lambda _text: load_roster(path).by_id(), now=now, interval=interval, name="roster")
    except OSError as exc:
        raise RosterError(f"cannot read roster {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise RosterError(f"roster {path} is not UTF-8: {exc}") from None


class AgentDesk:
    """``roster``: fixed, or a :func:`roster_file` looked at (at most every few seconds) whenever
    someone signs in or is checked: an agent added can sign in, a removed one's sessions and
    tokens stop working, a changed role or group applies to their next request."""

    def __init__(self, settings: Settings, roster: dict[str, AgentProfile] | ReloadingFile[dict[str, AgentProfile]],
                 store: DeskStore, publisher: EventPublisher, hub: SocketHub, open_sockets: set[web.WebSocketResponse],
                 clock: Callable[[], datetime] = _utcnow, history_store: HistoryStore | None = None):
        self.settings = settings
        self.history = history_store
        self._roster = roster
        self.store = store
        self.publisher = publisher
        self.hub = hub
        self.open_sockets = open_sockets
        self.clock = clock
        # Unknown agent ids are checked against this, so a miss costs as long as a wrong password.
        self._decoy_hash = hash_password("decoy password")
        self._groups: tuple[dict[str, AgentProfile], list[str]] | None = None  # (roster, its groups)
        self.presence_ticks = 0  # sweeps done by this replica (tests wait on it)

    @property
    def roster(self) -> dict[str, AgentProfile]:
        if isinstance(self._roster, ReloadingFile):
            return self._roster.current(time.monotonic())  # not self.clock: tests may stop that one
        return self._roster

    @property
    def groups(self) -> list[str]:
        roster = self.roster
        if self._groups is None or self._groups[0] is not roster:
            self._groups = (roster, sorted({a.group for a in roster.values() if a.group}))
        return self._groups[1]

    # -- wiring ---------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.console_page)
        app.router.add_static("/static/", STATIC_DIR)
        app.router.add_post("/api/login", self.login)
        app.router.add_post("/api/logout", self.logout)
        app.router.add_get("/api/me", self.me)
        app.router.add_post("/api/presence", self.set_presence)
        app.router.add_get("/api/directory", self.directory)
        app.router.add_post("/api/tokens", self.create_token)
        app.router.add_get("/api/tokens", self.list_tokens)
        app.router.add_delete("/api/tokens/{token_id}", self.revoke_token)
        app.router.add_get("/api/tickets", self.list_tickets)
        app.router.add_get("/api/tickets/{ticket_id}", self.get_ticket)
        app.router.add_get("/api/tickets/{ticket_id}/decisions", self.decisions)
        app.router.add_post("/api/tickets/{ticket_id}/accept", self.accept)
        app.router.add_post("/api/tickets/{ticket_id}/decline", self.decline)
        app.router.add_post("/api/tickets/{ticket_id}/reply", self.reply)
        app.router.add_post("/api/tickets/{ticket_id}/notes", self.add_note)
        app.router.add_post("/api/tickets/{ticket_id}/transfer", self.transfer)
        app.router.add_post("/api/tickets/{ticket_id}/reassign", self.reassign)
        app.router.add_post("/api/tickets/{ticket_id}/status", self.set_status)
        app.router.add_post("/api/tickets/{ticket_id}/resolve", self.resolve)
        app.router.add_post("/api/tickets/{ticket_id}/reopen", self.reopen)
        app.router.add_get("/api/supervisor/overview", self.overview)
        app.router.add_get("/api/v1/reports", self.report)
        app.router.add_get("/api/v1/tickets/{ticket_id}/history", self.ticket_history)
        app.router.add_get("/ws", self.websocket)
        app.cleanup_ctx.append(self._presence_keeper)

    def subscribe(self, consumer: EventConsumer) -> None:
        recording = self.history is not None and self.settings.history_record
        recorded_on_store: set[tuple[str, str]] = set()

        def store_queue(source: str, event_type: str, handler_name: str, handler: Handler) -> None:
            """A pooled ``store_*`` queue. An event recorded in the history is recorded from this
            delivery too: a queue of its own costs the broker and the desk a delivery per event."""
            if recording and (source, event_type) in _RECORDED:
                handler = self._recording(source, event_type, handler)
                recorded_on_store.add((source, event_type))
            consumer.subscribe(source, event_type, handler_name, handler)

        for source, channel in _INTAKES:
            store_queue(source, ev.TICKET_RECEIVED, f"store_ticket_received_{channel}", self.store_ticket_received)
        for source, channel in _MESSAGE_INTAKES:
            store_queue(source, ev.MESSAGE_RECEIVED, f"store_message_received_{channel}", self.store_message_received)
            consumer.subscribe(source, ev.MESSAGE_RECEIVED, f"push_customer_message_{channel}", self.push_customer_message,
                               broadcast=True)
        # (source, event, store handler, push handler or None): ``store_<event>`` shares one queue
        # across replicas, ``push_<event>`` is broadcast; the names are queue names (wire contract).
        for source, event_type, store, push in (
                (ev.DISPATCHER, ev.TICKET_ASSIGNED, self.store_ticket_assigned, self.push_ticket_assigned),
                (ev.DISPATCHER, ev.TICKET_QUEUED, self.store_ticket_queued, self.push_ticket_queued),
                (ev.DISPATCHER, ev.TICKET_CLASSIFIED, self.store_ticket_classified, None),
                (ev.DISPATCHER, ev.TICKET_UNASSIGNED, self.store_ticket_unassigned, self.push_ticket_unassigned),
                (ev.DISPATCHER, ev.TICKET_TRANSFERRED, self.store_ticket_transferred, self.push_system_note),
                (ev.SLA_WATCHER, ev.TICKET_ESCALATED, self.store_ticket_escalated, self.push_system_note),
                (ev.DISPATCHER, ev.TICKET_ATTACHED, self.store_ticket_attached, self.push_ticket_attached)):
            store_queue(source, event_type, f"store_{event_type}", store)
            if push is not None:
                consumer.subscribe(source, event_type, f"push_{event_type}", push, broadcast=True)
        store_queue(ev.SLA_WATCHER, ev.SLA_WARNING, "store_sla_warning", self.store_sla_event)
        store_queue(ev.SLA_WATCHER, ev.SLA_BREACHED, "store_sla_breached", self.store_sla_event)
        # The desk's own facts, as seen by every replica: supervisors' boards refresh on them.
        for event_type in (ev.AGENT_PRESENCE_CHANGED, ev.TICKET_ACCEPTED, ev.TICKET_RESOLVED, ev.TICKET_DECLINED,
                           ev.TICKET_REOPENED):
            consumer.subscribe(ev.AGENT_DESK, event_type, f"board_{event_type}", self.board_hint, broadcast=True)
        store_queue(ev.INTAKE_EMAIL, ev.MAIL_BOUNCED, "store_mail_bounced", self.store_mail_bounced)
        consumer.subscribe(ev.INTAKE_EMAIL, ev.MAIL_BOUNCED, "push_mail_bounced", self.push_mail_bounced,
                           broadcast=True)
        consumer.subscribe(ev.SLA_WATCHER, ev.SLA_WARNING, "push_sla_warning", self.push_sla_event, broadcast=True)
        consumer.subscribe(ev.SLA_WATCHER, ev.SLA_BREACHED, "push_sla_breached", self.push_sla_event, broadcast=True)
        if recording:
            for source, event_type in history.RECORDED:
                if (source, event_type) not in recorded_on_store:
                    consumer.subscribe(source, event_type, "record_history",
                                       functools.partial(self.record_history, source, event_type))

    def _recording(self, source: str, event_type: str, store: Handler) -> Handler:
        folds = store in self._folding_stores()

        async def record_then_store(event: ev.Envelope) -> None:
            # Recorded first, as its own queue did whatever became of the view: a view change
            # that fails for good (dead letter) still leaves the event in the history. Both are
            # idempotent, so a redelivery after either failed does each once.
            entry = self._history_entry(source, event_type, event)
            if entry is None or not folds:
                if entry is not None:
                    await self._record_entry(event_type, entry)
                await store(event)
                return
            # Same order in one round trip: the record's script runs just before the view's.
            assert self.history is not None
            if not await store(event, first=self.history.script_call(entry)):
                log.debug("history_event_seen_before", event_type=event_type)

        return record_then_store

    def _folding_stores(self) -> set[Handler]:
        """Store handlers that take ``first``: the history's record goes in their first round trip."""
        return {self.store_ticket_received, self.store_ticket_assigned, self.store_ticket_queued,
                self.store_ticket_classified, self.store_ticket_unassigned, self.store_ticket_transferred,
                self.store_ticket_escalated, self.store_sla_event}

    @web.middleware
    async def guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Same-origin check for state changes and sockets, then who is asking for /api and /ws:
        an API token (``Authorization: Bearer``) or the session cookie."""
        needs_agent = request.path == "/ws" or (request.path.startswith("/api/") and request.path != "/api/login")
        if request.method in _UNSAFE_METHODS or request.path == "/ws":
            origin = request.headers.get("Origin")
            if origin and urlsplit(origin).netloc != request.host:
                raise ApiError(403, "cross_origin", "requests from other sites are not accepted")
        if needs_agent:
            authorization = request.headers.get("Authorization")
            if authorization is not None:
                agent = await self._token_agent(authorization)
                if agent is None:
                    raise ApiError(401, "invalid_token", "the API token is unknown, revoked or expired")
                request[AGENT], request[VIA_TOKEN] = agent, True
                request[TOKEN_HASH] = token_hash(BEARER.fullmatch(authorization.strip()).group(1))
            else:
                session, agent = await self._signed_in(request)
                if agent is None:
                    raise ApiError(401, "not_signed_in", "sign in first")
                request[SESSION], request[AGENT], request[VIA_TOKEN] = session, agent, False
        try:
            return await handler(request)
        except ActionRefused as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None

    async def _signed_in(self, request: web.Request) -> tuple[Session | None, AgentProfile | None]:
        session = verify_session(request.cookies.get(COOKIE_NAME), self.settings.secret, now=self.clock(),
                                 max_age_seconds=self.settings.session_seconds)
        if session is None or await self.store.session_agent(session.session_id) != session.agent_id:
            return None, None
        return session, self.roster.get(session.agent_id)

    async def _token_agent(self, authorization: str) -> AgentProfile | None:
        found = BEARER.fullmatch(authorization.strip())
        if not found or not found.group(1).startswith(TOKEN_PREFIX):
            return None
        agent_id = await self.store.token_agent(token_hash(found.group(1)))
        return self.roster.get(agent_id) if agent_id else None  # gone from the roster: the token is dead too

    @staticmethod
    def _require_supervisor(agent: AgentProfile) -> None:
        if agent.role != "supervisor":
            raise ApiError(403, "not_supervisor", "only supervisors may do this")

    # -- pages and sign-in ----------------------------------------------------------------

    async def console_page(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={
            "Content-Security-Policy": CONSOLE_CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
        })

    async def login(self, request: web.Request) -> web.Response:
        data = await read_json(request)
        agent_id, password = data.get("agent_id"), data.get("password")
        if not isinstance(agent_id, str) or not isinstance(password, str) or not agent_id or not password \
                or len(agent_id) > 64 or len(password) > MAX_CREDENTIAL_CHARS:
            raise ApiError(400, "invalid_request", "agent_id and password are required")
        agent = self.roster.get(agent_id)
        if agent is not None and await self.store.login_locked(agent_id):
            raise ApiError(429, "too_many_attempts", "too many failed sign-ins, try again later")
        encoded = agent.password_hash if agent else self._decoy_hash
        if not await asyncio.to_thread(verify_password, password, encoded) or agent is None:
            if agent is not None:
                await self.store.record_login_failure(agent_id)
            log.info("login_failed", agent_id=agent_id[:64], known_agent=agent is not None)
            raise ApiError(401, "invalid_credentials", "wrong agent id or password")
        await self.store.clear_login_failures(agent_id)
        session = Session(agent_id=agent_id, session_id=ev.new_id(), issued_at=self.clock())
        await self.store.open_session(session.session_id, agent_id, self.settings.session_seconds)
        response = json_response(await self._me(agent))
        response.set_cookie(COOKIE_NAME, sign_session(session, self.settings.secret), max_age=self.settings.session_seconds,
                            path="/", httponly=True, samesite="Lax", secure=self.settings.secure_cookie)
        log.info("agent_signed_in", agent_id=agent_id)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        agent: AgentProfile = request[AGENT]
        if request[VIA_TOKEN]:
            raise ApiError(400, "no_session", "API tokens are revoked with DELETE /api/tokens/{token_id}")
        session: Session = request[SESSION]
        # End the session first: signing out must work while the broker is away. Going
        # offline is announced best-effort afterwards.
        await self.store.close_session(session.session_id)
        await self.hub.close_session(session.session_id)
        response = json_response({"signed_out": True})
        response.del_cookie(COOKIE_NAME, path="/")
        log.info("agent_signed_out", agent_id=agent.agent_id)
        try:
            await self._change_presence(agent, "offline")
        except (BrokerUnavailable, *TRANSIENT_ERRORS) as exc:
            # The store keeps the old presence, so the next presence change publishes again.
            log.warning("presence_publish_failed", agent_id=agent.agent_id, presence="offline", error=repr(exc))
        return response

    async def me(self, request: web.Request) -> web.Response:
        return json_response(await self._me(request[AGENT]))

    async def _me(self, agent: AgentProfile) -> dict[str, Any]:
        return {"agent_id": agent.agent_id, "name": agent.name, "role": agent.role, "group": agent.group,
                "presence": await self.store.presence(agent.agent_id),
                "statuses": self.settings.status_table.rows()}

    async def set_presence(self, request: web.Request) -> web.Response:
        presence = (await read_json(request)).get("presence")
        if presence not in PRESENCES:
            raise ApiError(400, "invalid_presence", "presence is one of online, away, offline")
        await self._change_presence(request[AGENT], presence)
        return json_response({"presence": presence})

    async def _change_presence(self, agent: AgentProfile, presence: str) -> None:
        # Always publish, even when the desk already shows this value: two tabs toggling at once
        # may have left the desk and the dispatcher apart (the dispatcher keeps the newest
        # change by its time), and a repeated click is how an agent puts them right again.
        # Publish first: if the broker is away the store keeps the old value.
        await self._publish(ev.AGENT_PRESENCE_CHANGED, trace_id=ev.new_id(), agent_id=agent.agent_id, presence=presence)
        await self.store.set_presence(agent.agent_id, presence, self.clock())
        await self.hub.send_to_agents({agent.agent_id}, {"type": "presence", "presence": presence})
        log.info("agent_presence_changed", agent_id=agent.agent_id, presence=presence)

    # -- directory and API tokens ---------------------------------------------------------

    async def directory(self, _request: web.Request) -> web.Response:
        agents = [{"agent_id": a.agent_id, "name": a.name, "group": a.group, "role": a.role}
                  for a in sorted(self.roster.values(), key=lambda a: a.agent_id)]
        return json_response({"agents": agents, "groups": self.groups})

    async def create_token(self, request: web.Request) -> web.Response:
        agent: AgentProfile = request[AGENT]
        if request[VIA_TOKEN]:
            raise ApiError(403, "session_required", "tokens are created from a signed-in console, not with a token")
        label = (await read_json(request)).get("label", "")
        if not isinstance(label, str) or len(label.strip()) > 100:
            raise ApiError(400, "invalid_label", "label is a string of at most 100 characters")
        now = self.clock()
        if len(await self.store.tokens(agent.agent_id, now)) >= MAX_TOKENS_PER_AGENT:
            raise ApiError(409, "too_many_tokens", f"at most {MAX_TOKENS_PER_AGENT} tokens; revoke one first")
        token, token_id = TOKEN_PREFIX + secrets.token_urlsafe(32), secrets.token_hex(8)
        await self.store.add_token(agent.agent_id, token_id, token_hash(token), label.strip(), now,
                                   self.settings.token_seconds)
        log.info("api_token_created", agent_id=agent.agent_id, token_id=token_id)
        expires_at = datetime.fromtimestamp(now.timestamp() + self.settings.token_seconds, timezone.utc)
        return json_response({"token": token, "token_id": token_id, "label": label.strip(),
                              "expires_at": expires_at.isoformat()}, status=201)

    async def list_tokens(self, request: web.Request) -> web.Response:
        return json_response({"tokens": await self.store.tokens(request[AGENT].agent_id, self.clock())})

    async def revoke_token(self, request: web.Request) -> web.Response:
        agent: AgentProfile = request[AGENT]
        if not await self.store.revoke_token(agent.agent_id, request.match_info["token_id"]):
            raise ApiError(404, "unknown_token", "no such token")
        log.info("api_token_revoked", agent_id=agent.agent_id, token_id=request.match_info["token_id"])
        return json_response({"revoked": True})

    # -- tickets --------------------------------------------------------------------------

    async def list_tickets(self, request: web.Request) -> web.Response:
        agent: AgentProfile = request[AGENT]
        whose = request.query.get("agent_id", agent.agent_id)
        if whose != agent.agent_id and agent.role != "supervisor":
            raise ApiError(403, "not_supervisor", "only supervisors see other agents' work lists")
        return json_response({"tickets": [v.for_console() for v in await self.store.worklist(whose)]})

    async def get_ticket(self, request: web.Request) -> web.Response:
        agent: AgentProfile = request[AGENT]
        view = await self._ticket_for(request)
        history = await self.store.customer_history(view)
        return json_response({"ticket": self._shown(view, agent), "history": [h.summary() for h in history]})

    @staticmethod
    def _shown(view: TicketView, agent: AgentProfile) -> dict[str, Any]:
        return view.for_console(full_contact=agent.role == "supervisor" or view.agent_id == agent.agent_id)

    async def decisions(self, request: web.Request) -> web.Response:
        view = await self._ticket_for(request)
        return json_response({"ticket_id": view.ticket_id,
                              "decisions": [r.model_dump(mode="json") for r in reversed(view.decisions)]})

    async def _ticket_for(self, request: web.Request) -> TicketView:
        agent: AgentProfile = request[AGENT]
        view = await self.store.ticket(request.match_info["ticket_id"])
        if view is None:
            raise ApiError(404, "unknown_ticket", "no such ticket at the desk")
        if not tickets.may_act(view, agent.agent_id, agent.role):
            raise ApiError(403, "not_assignee", "only the assigned agent or a supervisor may see this ticket")
        return view

    async def accept(self, request: web.Request) -> web.Response:
        agent: AgentProfile = request[AGENT]
        view, now = await self._ticket_for(request), self.clock()
        if tickets.accept(view, agent.agent_id, agent.role, now) != view:
            with bound_event_context(trace_id=view.trace_id, ticket_id=view.ticket_id):
                await self._publish(
                    ev.TICKET_ACCEPTED, trace_id=view.trace_id, ticket_id=view.ticket_id, agent_id=view.agent_id,
                    attempt=view.attempt,  # the offer it answers: the dispatcher ignores it for any other
                    event_id=stable_event_id(ev.TICKET_ACCEPTED, view.ticket_id, str(view.agent_id),
                                             str(view.assigned_at), str(view.attempt or 1)),
                )
                view = await self._record(view.ticket_id, lambda v: tickets.accept(v, agent.agent_id, agent.role, now))
                log.info("ticket_accepted", agent_id=view.agent_id, by=agent.agent_id)
        return json_response({"ticket": self._shown(view, agent)})

    async def decline(self, request: web.Request) -> web.Response:
        agent: AgentProfile = request[AGENT]
        data = await read_json(request)
        view, now = await self.store.ticket(request.match_info["ticket_id"]), self.clock()
        if view is None:
            raise ApiError(404, "unknown_ticket", "no such ticket at the desk")
        if tickets.already_declined(view, agent.agent_id):
            return json_response({"declined": True, "ticket_id": view.ticket_id})  # a retry: published before
        _, reason = tickets.decline(view, agent.agent_id, data.get("reason"), now)
        offered_at = view.assigned_at
        with bound_event_context(trace_id=view.trace_id, ticket_id=view.ticket_id):
            await self._publish(
                ev.TICKET_DECLINED, trace_id=view.trace_id, ticket_id=view.ticket_id, agent_id=agent.agent_id,
                reason=reason, attempt=view.attempt,
                event_id=stable_event_id(ev.TICKET_DECLINED, view.ticket_id, agent.agent_id, str(offered_at),
                                         str(view.attempt or 1)),
            )
            await self._record(view.ticket_id, lambda v: v if tickets.already_declined(v, agent.agent_id)
                               else tickets.decline(v, agent.agent_id, reason, now)[0])
            await self.hub.send_to_agents({agent.agent_id}, {"type": "ticket_removed", "ticket_id": view.ticket_id,
                                                             "reason": "declined"})
            log.info("ticket_declined", agent_id=agent.agent_id)
        return json_response({"declined": True, "ticket_id": view.ticket_id})

    async def set_status(self, request: web.Request) -> web.Response:
        agent: AgentProfile = request[AGENT]
        data = await read_json(request)
        view = await self._ticket_for(request)
        status = data.get("status")
        if tickets.set_work_status(view, agent.agent_id, agent.role, status) != view:
            with bound_event_context(trace_id=view.trace_id, ticket_id=view.ticket_id):
                # The n-th change of this ticket to this status: a retried click is the same event.
                await self._publish(
                    ev.TICKET_STATUS_CHANGED, trace_id=view.trace_id, ticket_id=view.ticket_id, status=status,
                    paused=self.settings.status_table.paused(status), agent_id=agent.agent_id,
                    previous=view.work_status,
                    event_id=stable_event_id(ev.TICKET_STATUS_CHANGED, view.ticket_id, str(view.status_changes + 1),
                                             status),
                )
                view = await self._record(view.ticket_id,
                                          lambda v: tickets.set_work_status(v, agent.agent_id, agent.role, status))
                log.info("ticket_status_set", status=status, by=agent.agent_id)
        return json_response({"ticket": self._shown(view, agent)})

    async def resolve(self, request: web.Request) -> web.Response:
        agent: AgentProfile = request[AGENT]
        view, now = await self._ticket_for(request), self.clock()
        if tickets.resolve(view, agent.agent_id, agent.role, now) != view:
            with bound_event_context(trace_id=view.trace_id, ticket_id=view.ticket_id):
                await self._publish(
                    ev.TICKET_RESOLVED, trace_id=view.trace_id, ticket_id=view.ticket_id, agent_id=view.agent_id,
                    channel=view.channel, event_id=stable_event_id(ev.TICKET_RESOLVED, view.ticket_id,
                                                                   str(view.assigned_at)),
                )
                view = await self._record(view.ticket_id, lambda v: tickets.resolve(v, agent.agent_id, agent.role, now))
                log.info("ticket_resolved", agent_id=view.agent_id, by=agent.agent_id)
        return json_response({"ticket": self._shown(view, agent)})

    async def reopen(self, request: web.Request) -> web.Response:
        agent: AgentProfile = request[AGENT]
        view = await self.store.ticket(request.match_info["ticket_id"])
        if view is None:
            raise ApiError(404, "unknown_ticket", "no such ticket at the desk")
        if tickets.reopen(view, agent.agent_id, agent.role) != view:
            with bound_event_context(trace_id=view.trace_id, ticket_id=view.ticket_id):
                await self._publish(
                    ev.TICKET_REOPENED, trace_id=view.trace_id, ticket_id=view.ticket_id, by="agent",
                    agent_id=agent.agent_id, channel=view.channel,
                    event_id=stable_event_id(ev.TICKET_REOPENED, view.ticket_id, str(view.resolved_at)),
                )
                view = await self._record(view.ticket_id, lambda v: tickets.reopen(v, agent.agent_id, agent.role))
                log.info("ticket_reopened", by="agent", agent_id=agent.agent_id)
        return json_response({"ticket": self._shown(view, agent)})

    async def add_note(self, request: web.Request) -> web.Response:
        agent: AgentProfile = request[AGENT]
        data = await read_json(request)
        view, now = await self._ticket_for(request), self.clock()
        client_note_id = data.get("client_note_id")
        if client_note_id is not None and (not isinstance(client_note_id, str)
                                           or not CLIENT_REPLY_ID.fullmatch(client_note_id)):
            raise ApiError(400, "invalid_client_note_id", "client_note_id is 8 to 64 characters of A-Z a-z 0-9 _ -")
        text = tickets.note_text(view, agent.agent_id, agent.role, data.get("text"))
        note_id = stable_event_id("agent_note", view.ticket_id, client_note_id) if client_note_id else ev.new_id()
        note = tickets.internal_note(note_id, agent.agent_id, text, now)
        view = await self._record(view.ticket_id, lambda v: tickets.with_message(v, note))
        log.info("internal_note_added", agent_id=agent.agent_id, note_id=note_id)
        return json_response({"note_id": note_id, "ticket": self._shown(view, agent)}, status=201)

    async def transfer(self, request: web.Request) -> web.Response:
        return await self._request_transfer(request, "transfer")

    async def reassign(self, request: web.Request) -> web.Response:
        self._require_supervisor(request[AGENT])
        return await self._request_transfer(request, "reassign")

    async def _request_transfer(self, request: web.Request, kind: str) -> web.Response:
        agent: AgentProfile = request[AGENT]
        data = await read_json(request)
        view, now = await self._ticket_for(request), self.clock()
        to_agent, to_group, reason = tickets.transfer_target(data, agents=set(self.roster), groups=set(self.groups))
        if kind == "transfer":
            tickets.may_transfer(view, agent.agent_id, agent.role, to_agent)
        else:
            tickets.may_reassign(view, agent.role, to_agent)
        # Same request for the same holding of the ticket = same event (a retried click).
        event_id = stable_event_id(ev.TICKET_TRANSFER_REQUESTED, kind, view.ticket_id, agent.agent_id,
                                   str(view.assigned_at), to_agent or "", to_group or "", reason)
        with bound_event_context(trace_id=view.trace_id, ticket_id=view.ticket_id):
            await self._publish(
                ev.TICKET_TRANSFER_REQUESTED, trace_id=view.trace_id, ticket_id=view.ticket_id,
                requested_by=agent.agent_id, kind=kind, to_agent_id=to_agent, to_group=to_group, reason=reason,
                event_id=event_id,
            )
            note = tickets.request_note(kind, event_id, agent.agent_id, to_agent, to_group, reason, now)
            view = await self._record(view.ticket_id, lambda v: tickets.with_message(v, note))
            log.info("ticket_transfer_requested", kind=kind, by=agent.agent_id, to_agent_id=to_agent, to_group=to_group)
        return json_response({"requested": True, "event_id": event_id, "ticket": self._shown(view, agent)},
                             status=202)

    async def overview(self, request: web.Request) -> web.Response:
        self._require_supervisor(request[AGENT])
        now = self.clock()
        agent_ids = sorted(self.roster)
        presences = await self.store.presences(agent_ids)
        worklists = await self.store.worklists(agent_ids)
        return json_response({
            "generated_at": now.isoformat(),
            "queues": supervisor.queues(await self.store.queued(), now),
            "agents": supervisor.agents(self.roster.values(), presences, worklists),
            "sla_risk": supervisor.at_risk(await self.store.at_risk(), now),
            "decisions": await self.store.recent_decisions(),
        })

    async def reply(self, request: web.Request) -> web.Response:
        agent: AgentProfile = request[AGENT]
        data = await read_json(request)
        view, now = await self._ticket_for(request), self.clock()
        client_reply_id = data.get("client_reply_id")
        if not isinstance(client_reply_id, str) or not CLIENT_REPLY_ID.fullmatch(client_reply_id):
            raise ApiError(400, "invalid_client_reply_id", "client_reply_id is 8 to 64 characters of A-Z a-z 0-9 _ -")
        # The console keeps one client_reply_id per draft, so a retry after a lost answer (or a
        # publish confirmed but not recorded) is the same reply and the same event, not a second one.
        reply_id = stable_event_id("agent_reply", view.ticket_id, client_reply_id)
        if tickets.has_message(view, tickets.agent_message_id(reply_id)):
            # Recorded, so its publish was confirmed before: answer as the first time did.
            return json_response({"reply_id": reply_id, "ticket": self._shown(view, agent)}, status=201)
        text = tickets.reply_text(view, agent.agent_id, agent.role, data.get("text"))
        with bound_event_context(trace_id=view.trace_id, ticket_id=view.ticket_id):
            await self._publish(
                ev.AGENT_REPLIED, trace_id=view.trace_id, ticket_id=view.ticket_id, agent_id=agent.agent_id,
                channel=view.channel, text=text, reply_id=reply_id, customer=view.customer.model_dump(),
                event_id=stable_event_id(ev.AGENT_REPLIED, view.ticket_id, client_reply_id),
            )
            message = tickets.agent_message(reply_id, agent.agent_id, text, now)
            view = await self._record(view.ticket_id, lambda v: tickets.with_message(v, message))
            log.info("agent_replied", agent_id=agent.agent_id, reply_id=reply_id, channel=view.channel)
        return json_response({"reply_id": reply_id, "ticket": self._shown(view, agent)}, status=201)

    async def _record(self, ticket_id: str, change: Callable[[TicketView], TicketView]) -> TicketView:
        """Apply an agent action to the stored view and show the result on the agent's other tabs."""
        try:
            _, after = await self.store.change_ticket(ticket_id, change)
        except TicketNotStored:
            raise ApiError(404, "unknown_ticket", "no such ticket at the desk") from None
        await self.hub.send_to_agents({after.agent_id} if after.agent_id else set(),
                                      {"type": "ticket_updated", "ticket": after.for_console()})
        return after

    async def _publish(self, event_type: str, **fields: Any) -> dict:
        body = ev.make_event(SERVICE_NAME, event_type, now=self.clock(), **fields)
        await publish_confirmed(self.publisher, event_type, body)
        return body

    # -- WebSocket ------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        agent: AgentProfile = request[AGENT]
        ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_SECONDS, max_msg_size=64 * 1024)
        await ws.prepare(request)
        session = request.get(SESSION)
        credential = session.session_id if session else TOKEN_SOCKET_PREFIX + request[TOKEN_HASH]
        socket = ConsoleSocket(agent.agent_id, agent.role, credential, ws)
        # Join the hub before reading the work list, so an assignment in between is not missed
        # (the console merges by ticket id, a duplicate is harmless).
        self.hub.add(socket)
        self.open_sockets.add(ws)
        try:
            await self.store.seen({agent.agent_id}, self.clock())
            await ws.send_json({"type": "hello", "agent": await self._me(agent)})
            worklist = await self.store.worklist(agent.agent_id)
            await ws.send_json({"type": "worklist", "tickets": [v.for_console() for v in worklist]})
            async for message in ws:
                if message.type == WSMsgType.TEXT and _frame_type(message.data) == "ping":
                    await ws.send_json({"type": "pong"})
        finally:
            self.hub.discard(socket)
            self.open_sockets.discard(ws)
        return ws

    # -- presence: heartbeat loss -----------------------------------------------------------

    async def _presence_keeper(self, _app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self._keep_presence())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _keep_presence(self) -> None:
        tick = max(MIN_PRESENCE_TICK_SECONDS, self.settings.presence_grace_seconds / 4)
        while True:
            try:
                await self.presence_tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis or the broker away: the next tick tries again
                log.warning("presence_sweep_failed", error=repr(exc))
            self.presence_ticks += 1
            await asyncio.sleep(tick)

    async def close_revoked_sockets(self) -> int:
        """Close consoles whose session ended or token was revoked on any replica, or whose
        agent left the roster: pushes (customer messages among them) stop within a tick."""
        closed = 0
        for socket in self.hub.sockets():
            if socket.session_id.startswith(TOKEN_SOCKET_PREFIX):
                holder = await self.store.token_agent(socket.session_id.removeprefix(TOKEN_SOCKET_PREFIX))
            else:
                holder = await self.store.session_agent(socket.session_id)
            if holder != socket.agent_id or socket.agent_id not in self.roster:
                await socket.ws.close(code=4401, message=b"signed out")
                closed += 1
                log.info("console_socket_closed", agent_id=socket.agent_id, reason="credential_gone")
        return closed

    async def presence_tick(self) -> None:
        """Close consoles whose credential is gone; mark this replica's console agents as seen;
        announce the agents nobody has seen."""
        await self.close_revoked_sockets()
        now = self.clock()
        await self.store.seen(self.hub.agent_ids(), now)
        cutoff = datetime.fromtimestamp(now.timestamp() - self.settings.presence_grace_seconds, timezone.utc)
        for agent_id in await self.store.lost_agents(cutoff):
            if self.hub.has_agent(agent_id):
                continue
            seen = await self.store.claim_offline(agent_id, cutoff, self.settings.common.replica_id)
            if seen is None:
                continue  # another replica has it, or the agent came back
            try:
                await self._publish(ev.AGENT_PRESENCE_CHANGED, trace_id=ev.new_id(), agent_id=agent_id,
                                    presence="offline",
                                    event_id=stable_event_id("presence_lost", agent_id, repr(seen)))
            except BaseException:
                await self.store.release_offline_claim(agent_id)  # the next sweep (any replica) retries
                raise
            await self.store.set_presence(agent_id, "offline", now)
            await self.hub.send_to_agents({agent_id}, {"type": "presence", "presence": "offline"})
            log.info("agent_presence_lost", agent_id=agent_id, grace_seconds=self.settings.presence_grace_seconds)

    # -- consumed events ------------------------------------------------------------------

    # A store handler that takes ``first`` runs it (the history's record of the event) in its
    # first round trip to Redis and returns its result (see _recording).

    async def store_ticket_received(self, event: ev.TicketReceived, *, first: ScriptCall | None = None) -> Any:
        recorded, added = await self.store.add_ticket_after(first, tickets.view_from_received(event))
        if added:
            log.info("ticket_view_stored", channel=event.channel)
        return recorded

    async def store_message_received(self, event: ev.MessageReceived) -> None:
        message = tickets.customer_message(event)
        target = await self._message_target(event.ticket_id)
        after = await self._change_or_retry(event, lambda v: tickets.with_customer_message(v, message),
                                            ticket_id=target)
        await self._reopened_by(after, message.message_id, event.channel)

    async def _message_target(self, ticket_id: str) -> str:
        """Where a customer's message belongs: a contact attached to an open ticket continues there."""
        view = await self.store.ticket(ticket_id)
        return view.attached_to if view is not None and view.attached_to else ticket_id

    async def _reopened_by(self, after: TicketView, message_id: str, channel: str) -> None:
        if after.status == "reopened" and after.reopened_by_message == message_id:
            # The dispatcher routes a reopened ticket (preferring the last agent); a redelivery
            # publishes the same event again, which consumers dedupe on its id.
            try:
                await self._publish(ev.TICKET_REOPENED, trace_id=after.trace_id, ticket_id=after.ticket_id,
                                    by="customer", agent_id=after.agent_id or after.last_agent_id,
                                    channel=channel,
                                    event_id=stable_event_id(ev.TICKET_REOPENED, after.ticket_id, message_id))
            except BrokerUnavailable as exc:
                raise TransientError(str(exc)) from exc  # redelivered: the view is kept, the publish retried
            log.info("ticket_reopened", by="customer", agent_id=after.agent_id)

    async def store_ticket_attached(self, event: ev.TicketAttached) -> None:
        """The open ticket gets the contact (or the link) first, then the contact's own view is
        marked; both changes are idempotent, so a retry (the contact's view not stored yet) is safe."""
        after = await self._change_or_retry(event, lambda v: tickets.with_attached(v, event),
                                            ticket_id=event.into_ticket_id)
        if event.mode == "attach":
            await self._reopened_by(after, tickets.attached_message_id(event), event.channel)
        await self._change_or_retry(event, lambda v: tickets.as_attached(v, event))
        log.info("ticket_attached_stored", into_ticket_id=event.into_ticket_id, mode=event.mode,
                 channel=event.channel)

    async def store_ticket_assigned(self, event: ev.TicketAssigned, *, first: ScriptCall | None = None) -> Any:
        # The decision record is kept in the view change's script (alone when the view has it already).
        return (await self._change_or_wait(event, lambda v: tickets.with_assignment(v, event), first=first,
                                           decision=tickets.decision_record(event)))[0]

    async def store_ticket_queued(self, event: ev.TicketQueued, *, first: ScriptCall | None = None) -> Any:
        return (await self._change_or_wait(event, lambda v: tickets.with_queued(v, event), first=first,
                                           decision=tickets.decision_record(event)))[0]

    async def store_ticket_classified(self, event: ev.TicketClassified, *, first: ScriptCall | None = None) -> Any:
        return (await self._change_or_wait(event, lambda v: tickets.with_classification(v, event), first=first))[0]

    async def store_ticket_unassigned(self, event: ev.TicketUnassigned, *, first: ScriptCall | None = None) -> Any:
        return (await self._change_or_wait(event, lambda v: tickets.with_unassigned(v, event), first=first))[0]

    async def store_ticket_transferred(self, event: ev.TicketTransferred, *, first: ScriptCall | None = None) -> Any:
        note = tickets.transfer_note(event)
        return (await self._change_or_wait(event, lambda v: tickets.with_message(v, note), first=first))[0]

    async def store_ticket_escalated(self, event: ev.TicketEscalated, *, first: ScriptCall | None = None) -> Any:
        return (await self._change_or_wait(event, lambda v: tickets.with_escalation(v, event), first=first))[0]

    async def store_sla_event(self, event: ev.SlaEvent, *, first: ScriptCall | None = None) -> Any:
        return (await self._change_or_wait(event, lambda v: tickets.with_sla(v, event), first=first))[0]

    async def _change_or_retry(self, event: ev.TicketEvent, change: Callable[[TicketView], TicketView], *,
                               ticket_id: str | None = None) -> TicketView:
        return (await self._change_or_wait(event, change, ticket_id=ticket_id))[1]

    async def _change_or_wait(self, event: ev.TicketEvent, change: Callable[[TicketView], TicketView], *,
                              ticket_id: str | None = None, first: ScriptCall | None = None,
                              decision: tickets.DecisionRecord | None = None) -> tuple[Any, TicketView]:
        """Change the view (TransientError while it may still come): (``first``'s result, the view)."""
        ticket_id = ticket_id or event.ticket_id
        try:
            first_result, before, after = await self.store.change_ticket_after(first, ticket_id, change,
                                                                               decision=decision)
        except TicketNotStored:
            if tickets.retry_or_give_up(event, self.clock()):
                raise TransientError(f"view of {ticket_id} not stored yet") from None
            raise
        if before != after:
            log.info("ticket_view_updated", status=after.status, agent_id=after.agent_id)
        return first_result, after

    async def store_mail_bounced(self, event: ev.MailBounced) -> None:
        if event.ticket_id is None:
            return  # not about one of our tickets: the notifier still stops mailing the address
        note = tickets.bounce_note(event)
        try:
            before, after = await self.store.change_ticket(event.ticket_id, lambda v: tickets.with_message(v, note))
        except TicketNotStored:
            # Bounces come minutes to days after our mail, long after the ticket's view was
            # stored: a missing view is an expired (or foreign) ticket, not one still on its way.
            log.info("bounce_for_unknown_ticket", ticket_id=event.ticket_id)
            return
        if before != after:
            log.info("ticket_bounce_noted", ticket_id=event.ticket_id, hard=event.hard)

    async def push_mail_bounced(self, event: ev.MailBounced) -> None:
        if event.ticket_id is None:
            return
        view = await self.store.ticket(event.ticket_id)
        if view is None or not view.agent_id or view.status == "resolved" or not self.hub.has_agent(view.agent_id):
            return
        # Add the note here too (idempotent), so the pushed view has it whichever handler ran first.
        note = tickets.bounce_note(event)
        _, view = await self.store.change_ticket(event.ticket_id, lambda v: tickets.with_message(v, note))
        await self.hub.send_to_agents({view.agent_id}, {"type": "ticket_updated", "ticket": view.for_console()})

    async def _apply_for_push(self, event: ev.TicketEvent, change: Callable[[TicketView], TicketView]) -> TicketView | None:
        """Apply a change here too (it is idempotent), so a pushed view already shows it,
        whichever of the store and push handlers ran first."""
        try:
            _, view = await self.store.change_ticket(event.ticket_id, change)
        except TicketNotStored:
            if tickets.retry_or_give_up(event, self.clock()):
                raise TransientError(f"view of {event.ticket_id} not stored yet") from None
            return None
        return view

    async def push_ticket_assigned(self, event: ev.TicketAssigned) -> None:
        await self.hub.send_to_agents(set(), {"type": "board_changed", "event": ev.TICKET_ASSIGNED}, supervisors=True)
        if not self.hub.has_agent(event.agent_id):
            return  # that agent's console is on another replica, or closed
        view = await self._apply_for_push(event, lambda v: tickets.with_assignment(v, event))
        if view is not None and view.agent_id == event.agent_id and view.status != "resolved":
            # An offer: the console shows it with its countdown (offer_expires_at) and chimes.
            await self.hub.send_to_agents({event.agent_id}, {"type": "ticket_assigned", "ticket": view.for_console()})

    async def push_ticket_unassigned(self, event: ev.TicketUnassigned) -> None:
        await self.hub.send_to_agents(set(), {"type": "board_changed", "event": ev.TICKET_UNASSIGNED}, supervisors=True)
        if not self.hub.has_agent(event.agent_id):
            return
        view = await self._apply_for_push(event, lambda v: tickets.with_unassigned(v, event))
        if view is not None and view.agent_id != event.agent_id:  # not handed back to them since
            await self.hub.send_to_agents({event.agent_id}, {"type": "ticket_removed", "ticket_id": event.ticket_id,
                                                             "reason": event.reason})

    async def push_ticket_queued(self, event: ev.TicketQueued) -> None:
        await self.hub.send_to_agents(set(), {"type": "board_changed", "event": ev.TICKET_QUEUED}, supervisors=True)

    async def push_system_note(self, event: ev.TicketTransferred | ev.TicketEscalated) -> None:
        note = tickets.transfer_note(event) if isinstance(event, ev.TicketTransferred) else None
        kind = ev.TICKET_TRANSFERRED if isinstance(event, ev.TicketTransferred) else ev.TICKET_ESCALATED
        await self.hub.send_to_agents(set(), {"type": "board_changed", "event": kind}, supervisors=True)
        if await self.store.ticket(event.ticket_id) is None:
            return  # the store handler waits for the view
        # Add the note here too (idempotent) even when nobody holds the ticket yet: a transfer's
        # ticket_assigned may be pushed before the store handler has run, and must carry it.
        change = (lambda v: tickets.with_message(v, note)) if isinstance(event, ev.TicketTransferred) else \
            (lambda v: tickets.with_escalation(v, event))
        view = await self._apply_for_push(event, change)
        if view is not None and view.agent_id and self.hub.has_agent(view.agent_id):
            await self.hub.send_to_agents({view.agent_id}, {"type": "ticket_updated", "ticket": view.for_console()})

    async def board_hint(self, event: ev.Envelope) -> None:
        kind = type(event).__name__
        await self.hub.send_to_agents(set(), {"type": "board_changed", "event": kind}, supervisors=True)

    async def push_ticket_attached(self, event: ev.TicketAttached) -> None:
        await self.hub.send_to_agents(set(), {"type": "board_changed", "event": ev.TICKET_ATTACHED}, supervisors=True)
        view = await self.store.ticket(event.into_ticket_id)
        if view is None or not view.agent_id or not self.hub.has_agent(view.agent_id):
            return  # nobody holds it, or the holder's console is on another replica
        # Apply here too (idempotent), so the pushed view has the message whichever handler ran first.
        _, view = await self.store.change_ticket(event.into_ticket_id, lambda v: tickets.with_attached(v, event))
        if not view.agent_id:
            return
        reopened = event.mode == "attach" and view.reopened_by_message == tickets.attached_message_id(event)
        await self.hub.send_to_agents({view.agent_id}, {"type": "ticket_reopened" if reopened else "ticket_updated",
                                                        "ticket": view.for_console()})

    async def push_customer_message(self, event: ev.MessageReceived) -> None:
        target = await self._message_target(event.ticket_id)
        view = await self.store.ticket(target)
        if view is None or not view.agent_id or not self.hub.has_agent(view.agent_id):
            return
        if view.status == "resolved":
            # Reopen here too (idempotent), so the console gets the ticket back whichever of
            # this and store_message_received runs first.
            message = tickets.customer_message(event)
            _, view = await self.store.change_ticket(target, lambda v: tickets.with_customer_message(v, message))
        if view.reopened_by_message == event.message_id and view.status == "reopened" and view.agent_id:
            # The console dropped the ticket when it was resolved: send it whole, back in the list.
            await self.hub.send_to_agents({view.agent_id}, {"type": "ticket_reopened", "ticket": view.for_console()})
            return
        await self.hub.send_to_agents({view.agent_id}, {
            "type": "customer_message", "ticket_id": view.ticket_id, "message_id": event.message_id,
            "channel": event.channel, "text": event.text, "received_at": event.received_at.isoformat(),
        })

    async def push_sla_event(self, event: ev.SlaEvent) -> None:
        kind = ev.SLA_BREACHED if isinstance(event, ev.SlaBreached) else ev.SLA_WARNING
        agent_id = event.agent_id
        if agent_id is None:
            view = await self.store.ticket(event.ticket_id)
            agent_id = view.agent_id if view else None
        frame = {"type": kind, "ticket_id": event.ticket_id, "clock": event.clock, "policy": event.policy,
                 "due_at": event.due_at.isoformat(), "agent_id": agent_id}
        if isinstance(event, ev.SlaWarning):
            frame["elapsed_fraction"] = event.elapsed_fraction
        # Supervisors see every breach; warnings are for the agent who can still act.
        await self.hub.send_to_agents({agent_id} if agent_id else set(), frame, supervisors=kind == ev.SLA_BREACHED)
        await self.hub.send_to_agents(set(), {"type": "board_changed", "event": kind}, supervisors=True)

    # -- history and reports ----------------------------------------------------------------

    async def record_history(self, source: str, event_type: str, event: ev.Envelope) -> None:
        entry = self._history_entry(source, event_type, event)
        if entry is not None:
            await self._record_entry(event_type, entry)

    def _history_entry(self, source: str, event_type: str, event: ev.Envelope) -> history.Entry | None:
        """What recording the event writes; None when it names no ticket or is too old."""
        assert self.history is not None
        entry = history.entry_of(source, event_type, event)
        if entry is None:
            return None
        if self.history.too_old(entry, self.clock()):
            log.info("history_event_too_old", event_type=event_type, occurred_at=event.occurred_at.isoformat())
            return None
        return entry

    async def _record_entry(self, event_type: str, entry: history.Entry) -> None:
        assert self.history is not None
        if not await self.history.record(entry):
            log.debug("history_event_seen_before", event_type=event_type)

    async def report(self, request: web.Request) -> web.Response:
        self._require_supervisor(request[AGENT])
        assert self.history is not None
        now, query = self.clock(), request.query
        try:
            tz = reports.zone(query.get("tz") or self.settings.report_timezone)
            start, end = reports.period(query.get("from"), query.get("to"), tz, now)
            by = query.get("by", "day")
            if by not in reports.GROUPINGS:
                raise reports.ReportError("invalid_grouping", f"by is one of {', '.join(reports.GROUPINGS)}")
        except reports.ReportError as exc:
            raise ApiError(400, exc.code, str(exc)) from None
        received = await self.history.received_between(start, end)
        open_now = await self.history.open_tickets(now)
        # A long period is many tickets: compute off the event loop (consoles and pushes go on).
        body = await asyncio.to_thread(reports.report, received, open_now, start=start, end=end, by=by, tz=tz, now=now)
        return json_response(body)

    async def ticket_history(self, request: web.Request) -> web.Response:
        agent: AgentProfile = request[AGENT]
        ticket_id = request.match_info["ticket_id"]
        assert self.history is not None
        if agent.role != "supervisor":
            await self._ticket_for(request)  # agents see the path of the tickets they hold
        records, facts = await self.history.ticket(ticket_id)
        if not records and not facts:
            raise ApiError(404, "no_history", "nothing is recorded for this ticket")
        found = history.path(ticket_id, records, trace_id=facts.get("trace_id"), trimmed=int(facts.get("trimmed", 0)))
        return json_response({**found.as_dict(),
                              "facts": reports.summary(reports.facts_from_hash(facts)) if facts else None})


def _frame_type(data: str) -> str | None:
    try:
        frame = json.loads(data)
    except ValueError:
        return None
    return frame.get("type") if isinstance(frame, dict) else None


DESK_KEY = web.AppKey("agent_desk", AgentDesk)


async def _refresh_ticket_gauges(client: Any) -> None:
    from shared import mesh_facts, metrics

    metrics.set_tickets(await mesh_facts.ticket_gauges(client))


def create_service(settings: Settings) -> AioService:
    roster = roster_file(settings.roster_file, now=time.monotonic(), interval=settings.config_reload_seconds)

    def build_app(ctx: ServiceContext) -> web.Application:
        if settings.secret_is_dev_default:  # here, not above: logging is configured by now
            log.warning("desk_secret_is_dev_default", hint="set TM_DESK_SECRET: anyone can forge sessions with the default")
        history_store = HistoryStore(ctx.redis, event_ttl=int(settings.history_event_days * 86400),
                                     fact_ttl=int(settings.history_fact_days * 86400),
                                     max_events=settings.history_max_events)
        desk = AgentDesk(settings, roster, DeskStore(ctx.redis), ctx.publisher, SocketHub(), ctx.websockets,
                         history_store=history_store)
        app = ctx.new_app(client_max_size=64 * 1024, middlewares=[desk.guard])
        desk.add_routes(app)
        # Customer profiles are a blocking store shared with the dispatcher and the CLI.
        customers_client = sync_client(settings.common.redis_url)
        CustomersApi(CustomerStore(customers_client), agent_key=AGENT, clock=desk.clock,
                     region=settings.default_region).add_routes(app)

        async def close_customers_client(_app: web.Application) -> None:
            customers_client.close()

        app.on_cleanup.append(close_customers_client)
        desk.subscribe(ctx.consumer)
        ctx.metrics_hooks.append(lambda: _refresh_ticket_gauges(ctx.redis))
        app[DESK_KEY] = desk
        return app

    return AioService(SERVICE_NAME, settings.common, build_app, host=settings.host, port=settings.port)
