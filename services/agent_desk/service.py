"""agent_desk: the agents' console. HTTP API + WebSocket push (aiohttp) and event handlers.

HTTP (every /api route but login, and /ws, needs a signed-in session; else 401 JSON)::

    GET  /                               the console page (static/)
    POST /api/login {agent_id,password}  → sets the session cookie (HttpOnly, SameSite=Lax)
    POST /api/logout                     → session ended everywhere, then presence offline (best-effort)
    GET  /api/me                         → {agent_id, name, role, presence}
    POST /api/presence {presence}        → emits agent_presence_changed when it changes
    GET  /api/tickets                    → the agent's work list (supervisors: ?agent_id=)
    GET  /api/tickets/{id}               → one ticket view
    POST /api/tickets/{id}/accept        → emits ticket_accepted (once)
    POST /api/tickets/{id}/reply {text, client_reply_id}
                                         → emits agent_replied (once per client_reply_id)
    POST /api/tickets/{id}/resolve       → emits ticket_resolved (once)
    GET  /ws                             → WebSocket: work list on connect, then pushes

Only the assignee or a supervisor may act on a ticket (403). An action publishes its event
(confirmed by the broker) before the view records it: if the publish fails the agent gets a
503 and can retry, and accept/resolve/reply carry a stable event_id so a retry is the same
event (a reply's comes from the console's client_reply_id, one per draft).

Consumed events (handler name = queue name, wire contract): ``store_*`` handlers share one
queue across replicas and keep the ticket views; ``push_*`` handlers are broadcast (one queue
per replica) and deliver frames to the sockets this replica holds. A customer message on a
resolved ticket reopens it for its last assignee and is pushed as ``ticket_assigned``. A view
missing because events overtook each other raises TransientError (retried after a pause) for
``tickets.OUT_OF_ORDER_GRACE_SECONDS``, then dead-letters. ``intake_email.mail_bounced`` with a
ticket adds a system note to it ("Delivery to c***@… failed: …") and pushes the ticket to its
assignee as ``ticket_updated``; a bounce about a ticket the desk does not hold is logged and dropped.
"""
from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from services.agent_desk import tickets
from services.agent_desk.config import Settings
from services.agent_desk.push import ConsoleSocket, SocketHub
from services.agent_desk.sessions import COOKIE_NAME, Session, sign_session, verify_session
from services.agent_desk.store import DeskStore
from services.agent_desk.tickets import ActionRefused, TicketNotStored, TicketView
from shared import events as ev
from shared.aio_service import (AioService, ApiError, BrokerUnavailable, ServiceContext, json_response,
                                publish_confirmed, read_json)
from shared.amqp import EventConsumer, EventPublisher
from shared.errors import TRANSIENT_ERRORS, TransientError
from shared.intake_ledger import stable_event_id
from shared.logging import bound_event_context, get_logger
from shared.roster import AgentProfile, hash_password, load_roster, verify_password

log = get_logger(__name__)

SERVICE_NAME = ev.AGENT_DESK
STATIC_DIR = Path(__file__).parent / "static"
PRESENCES = ("online", "away", "offline")
WS_HEARTBEAT_SECONDS = 25.0
MAX_CREDENTIAL_CHARS = 1024
CONSOLE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
_INTAKES = ((ev.INTAKE_EMAIL, "email"), (ev.INTAKE_CHAT, "chat"), (ev.INTAKE_PHONE, "phone"))
_MESSAGE_INTAKES = ((ev.INTAKE_EMAIL, "email"), (ev.INTAKE_CHAT, "chat"))
_UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
CLIENT_REPLY_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


AGENT = web.RequestKey("agent", AgentProfile)
SESSION = web.RequestKey("session", Session)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class AgentDesk:
    def __init__(self, settings: Settings, roster: dict[str, AgentProfile], store: DeskStore, publisher: EventPublisher,
                 hub: SocketHub, open_sockets: set[web.WebSocketResponse], clock: Callable[[], datetime] = _utcnow):
        self.settings = settings
        self.roster = roster
        self.store = store
        self.publisher = publisher
        self.hub = hub
        self.open_sockets = open_sockets
        self.clock = clock
        # Unknown agent ids are checked against this, so a miss costs as long as a wrong password.
        self._decoy_hash = hash_password("decoy password")

    # -- wiring ---------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.console_page)
        app.router.add_static("/static/", STATIC_DIR)
        app.router.add_post("/api/login", self.login)
        app.router.add_post("/api/logout", self.logout)
        app.router.add_get("/api/me", self.me)
        app.router.add_post("/api/presence", self.set_presence)
        app.router.add_get("/api/tickets", self.list_tickets)
        app.router.add_get("/api/tickets/{ticket_id}", self.get_ticket)
        app.router.add_post("/api/tickets/{ticket_id}/accept", self.accept)
        app.router.add_post("/api/tickets/{ticket_id}/reply", self.reply)
        app.router.add_post("/api/tickets/{ticket_id}/resolve", self.resolve)
        app.router.add_get("/ws", self.websocket)

    def subscribe(self, consumer: EventConsumer) -> None:
        for source, channel in _INTAKES:
            consumer.subscribe(source, ev.TICKET_RECEIVED, f"store_ticket_received_{channel}", self.store_ticket_received)
        for source, channel in _MESSAGE_INTAKES:
            consumer.subscribe(source, ev.MESSAGE_RECEIVED, f"store_message_received_{channel}", self.store_message_received)
            consumer.subscribe(source, ev.MESSAGE_RECEIVED, f"push_customer_message_{channel}", self.push_customer_message,
                               broadcast=True)
        consumer.subscribe(ev.DISPATCHER, ev.TICKET_ASSIGNED, "store_ticket_assigned", self.store_ticket_assigned)
        consumer.subscribe(ev.DISPATCHER, ev.TICKET_ASSIGNED, "push_ticket_assigned", self.push_ticket_assigned,
                           broadcast=True)
        consumer.subscribe(ev.DISPATCHER, ev.TICKET_QUEUED, "store_ticket_queued", self.store_ticket_queued)
        consumer.subscribe(ev.INTAKE_EMAIL, ev.MAIL_BOUNCED, "store_mail_bounced", self.store_mail_bounced)
        consumer.subscribe(ev.INTAKE_EMAIL, ev.MAIL_BOUNCED, "push_mail_bounced", self.push_mail_bounced,
                           broadcast=True)
        consumer.subscribe(ev.SLA_WATCHER, ev.SLA_WARNING, "push_sla_warning", self.push_sla_event, broadcast=True)
        consumer.subscribe(ev.SLA_WATCHER, ev.SLA_BREACHED, "push_sla_breached", self.push_sla_event, broadcast=True)

    @web.middleware
    async def guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Same-origin check for state changes and sockets, then the session for /api and /ws."""
        needs_session = request.path == "/ws" or (request.path.startswith("/api/") and request.path != "/api/login")
        if request.method in _UNSAFE_METHODS or request.path == "/ws":
            origin = request.headers.get("Origin")
            if origin and urlsplit(origin).netloc != request.host:
                raise ApiError(403, "cross_origin", "requests from other sites are not accepted")
        if needs_session:
            session, agent = await self._signed_in(request)
            if agent is None:
                raise ApiError(401, "not_signed_in", "sign in first")
            request[SESSION], request[AGENT] = session, agent
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
        return {"agent_id": agent.agent_id, "name": agent.name, "role": agent.role,
                "presence": await self.store.presence(agent.agent_id)}

    async def set_presence(self, request: web.Request) -> web.Response:
        presence = (await read_json(request)).get("presence")
        if presence not in PRESENCES:
            raise ApiError(400, "invalid_presence", "presence is one of online, away, offline")
        await self._change_presence(request[AGENT], presence)
        return json_response({"presence": presence})

    async def _change_presence(self, agent: AgentProfile, presence: str) -> None:
        # Publish first: if the broker is away the agent retries and the store still shows the
        # old value, so the retry publishes again instead of being swallowed as "no change".
        if await self.store.presence(agent.agent_id) == presence:
            return
        await self._publish(ev.AGENT_PRESENCE_CHANGED, trace_id=ev.new_id(), agent_id=agent.agent_id, presence=presence)
        await self.store.set_presence(agent.agent_id, presence)
        await self.hub.send_to_agents({agent.agent_id}, {"type": "presence", "presence": presence})
        log.info("agent_presence_changed", agent_id=agent.agent_id, presence=presence)

    # -- tickets --------------------------------------------------------------------------

    async def list_tickets(self, request: web.Request) -> web.Response:
        agent: AgentProfile = request[AGENT]
        whose = request.query.get("agent_id", agent.agent_id)
        if whose != agent.agent_id and agent.role != "supervisor":
            raise ApiError(403, "not_supervisor", "only supervisors see other agents' work lists")
        return json_response({"tickets": [v.for_console() for v in await self.store.worklist(whose)]})

    async def get_ticket(self, request: web.Request) -> web.Response:
        view = await self._ticket_for(request)
        return json_response({"ticket": view.for_console()})

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
                    event_id=stable_event_id(ev.TICKET_ACCEPTED, view.ticket_id, str(view.agent_id), str(view.assigned_at)),
                )
                view = await self._record(view.ticket_id, lambda v: tickets.accept(v, agent.agent_id, agent.role, now))
                log.info("ticket_accepted", agent_id=view.agent_id, by=agent.agent_id)
        return json_response({"ticket": view.for_console()})

    async def resolve(self, request: web.Request) -> web.Response:
        agent: AgentProfile = request[AGENT]
        view, now = await self._ticket_for(request), self.clock()
        if tickets.resolve(view, agent.agent_id, agent.role, now) != view:
            with bound_event_context(trace_id=view.trace_id, ticket_id=view.ticket_id):
                await self._publish(
                    ev.TICKET_RESOLVED, trace_id=view.trace_id, ticket_id=view.ticket_id, agent_id=view.agent_id,
                    channel=view.channel, event_id=stable_event_id(ev.TICKET_RESOLVED, view.ticket_id),
                )
                view = await self._record(view.ticket_id, lambda v: tickets.resolve(v, agent.agent_id, agent.role, now))
                log.info("ticket_resolved", agent_id=view.agent_id, by=agent.agent_id)
        return json_response({"ticket": view.for_console()})

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
            return json_response({"reply_id": reply_id, "ticket": view.for_console()}, status=201)
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
        return json_response({"reply_id": reply_id, "ticket": view.for_console()}, status=201)

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
        socket = ConsoleSocket(agent.agent_id, agent.role, request[SESSION].session_id, ws)
        # Join the hub before reading the work list, so an assignment in between is not missed
        # (the console merges by ticket id, a duplicate is harmless).
        self.hub.add(socket)
        self.open_sockets.add(ws)
        try:
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

    # -- consumed events ------------------------------------------------------------------

    async def store_ticket_received(self, event: ev.TicketReceived) -> None:
        if await self.store.add_ticket(tickets.view_from_received(event)):
            log.info("ticket_view_stored", channel=event.channel)

    async def store_message_received(self, event: ev.MessageReceived) -> None:
        message = tickets.customer_message(event)
        await self._change_or_retry(event, lambda v: tickets.with_customer_message(v, message))

    async def store_ticket_assigned(self, event: ev.TicketAssigned) -> None:
        await self._change_or_retry(event, lambda v: tickets.with_assignment(v, event))

    async def store_ticket_queued(self, event: ev.TicketQueued) -> None:
        await self._change_or_retry(event, lambda v: tickets.with_queued(v, event))

    async def _change_or_retry(self, event: ev.TicketEvent, change: Callable[[TicketView], TicketView]) -> None:
        try:
            before, after = await self.store.change_ticket(event.ticket_id, change)
        except TicketNotStored:
            if tickets.retry_or_give_up(event, self.clock()):
                raise TransientError(f"view of {event.ticket_id} not stored yet") from None
            raise
        if before != after:
            log.info("ticket_view_updated", status=after.status, agent_id=after.agent_id)

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

    async def push_ticket_assigned(self, event: ev.TicketAssigned) -> None:
        if not self.hub.has_agent(event.agent_id):
            return  # that agent's console is on another replica, or closed
        # Record the assignment here too (it is idempotent), so by the time the console shows
        # the ticket the view says whose it is and Accept works, whichever handler ran first.
        try:
            _, view = await self.store.change_ticket(event.ticket_id, lambda v: tickets.with_assignment(v, event))
        except TicketNotStored:
            if tickets.retry_or_give_up(event, self.clock()):
                raise TransientError(f"view of {event.ticket_id} not stored yet") from None
            return
        if view.agent_id == event.agent_id and view.status != "resolved":
            await self.hub.send_to_agents({event.agent_id}, {"type": "ticket_assigned", "ticket": view.for_console()})

    async def push_customer_message(self, event: ev.MessageReceived) -> None:
        view = await self.store.ticket(event.ticket_id)
        if view is None or not view.agent_id or not self.hub.has_agent(view.agent_id):
            return
        if view.status == "resolved":
            # Reopen here too (idempotent, like push_ticket_assigned), so the console gets the
            # ticket back whichever of this and store_message_received runs first.
            message = tickets.customer_message(event)
            _, view = await self.store.change_ticket(event.ticket_id,
                                                     lambda v: tickets.with_customer_message(v, message))
        if view.reopened_by_message == event.message_id and view.status != "resolved":
            # The console dropped the ticket when it was resolved: send it whole, as new work.
            await self.hub.send_to_agents({view.agent_id}, {"type": "ticket_assigned", "ticket": view.for_console()})
            return
        await self.hub.send_to_agents({view.agent_id}, {
            "type": "customer_message", "ticket_id": event.ticket_id, "message_id": event.message_id,
            "text": event.text, "received_at": event.received_at.isoformat(),
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


def _frame_type(data: str) -> str | None:
    try:
        frame = json.loads(data)
    except ValueError:
        return None
    return frame.get("type") if isinstance(frame, dict) else None


DESK_KEY = web.AppKey("agent_desk", AgentDesk)


def create_service(settings: Settings) -> AioService:
    roster = load_roster(settings.roster_file).by_id()

    def build_app(ctx: ServiceContext) -> web.Application:
        if settings.secret_is_dev_default:  # here, not above: logging is configured by now
            log.warning("desk_secret_is_dev_default", hint="set TM_DESK_SECRET: anyone can forge sessions with the default")
        desk = AgentDesk(settings, roster, DeskStore(ctx.redis), ctx.publisher, SocketHub(), ctx.websockets)
        app = ctx.new_app(client_max_size=64 * 1024, middlewares=[desk.guard])
        desk.add_routes(app)
        desk.subscribe(ctx.consumer)
        app[DESK_KEY] = desk
        return app

    return AioService(SERVICE_NAME, settings.common, build_app, host=settings.host, port=settings.port)
