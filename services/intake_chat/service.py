"""intake_chat: the customers' chat page, embeddable widget and WebSocket.

A message (WebSocket frame or ``POST /api/chat/messages``) is validated, deduplicated on the
client's message id, turned into ``ticket_received`` (first message of a conversation) or
``message_received`` (later ones), published with a broker confirm, and only then acknowledged.
Agents' replies come back as ``agent_desk`` ``agent_replied`` events and are pushed to the
visitor's open sockets.

Why two subscriptions to ``agent_replied``: every replica must see every reply, because the
visitor's socket may be on any of them, so the push uses a broadcast queue (one exclusive queue
per replica). Broadcast queues only exist while a replica runs, so the transcript, which a
reconnecting browser is shown, is kept by a second, pooled and durable subscription: one replica
appends each reply, even one sent while every chat replica was down, and a ``SET NX`` on the
reply id (in the same Lua script as the append) makes a redelivery append nothing.

Per-visitor ordering: one replica handles one visitor's messages one at a time (an asyncio lock
per visitor), so a conversation's first message opens exactly one ticket and the transcript is
in the order the visitor wrote. Two tabs of one visitor on two replicas at the same instant are
not serialised; the intake ledger still gives them the same ticket.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import jinja2
from aiohttp import WSMsgType, web

from shared import events as ev
from shared.aio_service import (AioService, ApiError, BrokerUnavailable, ServiceContext, json_response,
                                publish_confirmed, read_json)
from shared.errors import is_transient
from shared.intake_ledger import AsyncIntakeLedger
from shared.logging import bound_event_context, get_logger
from shared.roster import display_names

from services.intake_chat import conversation, customer_pages, validation
from services.intake_chat.config import Settings
from services.intake_chat.store import ChatStore, MessageRecord, Visitor
from services.intake_chat.validation import InvalidInput, Profile

log = get_logger(__name__)

SERVICE_NAME = ev.INTAKE_CHAT
STATIC_DIR = Path(__file__).parent / "static"
API_MAX_BODY_BYTES = 64 * 1024
WS_MAX_FRAME_BYTES = 64 * 1024  # 5,000 CJK characters are ~15 KB of UTF-8 JSON
WS_HEARTBEAT_SECONDS = 25.0  # below common proxy idle timeouts (60 s)
LEDGER_KIND = "visitor"
PAGE_TITLES = {"zh": "在线客服", "en": "Customer support chat"}
CORS_MAX_AGE_SECONDS = 600


@dataclass(frozen=True)
class Ack:
    ticket_id: str
    message_id: str
    client_message_id: str


class KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class ChatSocket:
    """One browser connection; sends are serialised (replies and acks come from different tasks)."""

    def __init__(self, ws: web.WebSocketResponse):
        self.ws = ws
        self.visitor_id: str | None = None
        self._send_lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> bool:
        if self.ws.closed:
            return False
        async with self._send_lock:
            try:
                await self.ws.send_str(json.dumps(frame, ensure_ascii=False))
                return True
            except (ConnectionError, RuntimeError):
                return False

    async def send_error(self, code: str, message: str, **extra: Any) -> None:
        await self.send({"type": "error", "code": code, "message": message, **extra})


class SocketRegistry:
    """This replica's open sockets by visitor id."""

    def __init__(self) -> None:
        self._by_visitor: dict[str, set[ChatSocket]] = {}

    def bind(self, sock: ChatSocket, visitor_id: str) -> None:
        self.discard(sock)
        sock.visitor_id = visitor_id
        self._by_visitor.setdefault(visitor_id, set()).add(sock)

    def discard(self, sock: ChatSocket) -> None:
        if sock.visitor_id is None:
            return
        sockets = self._by_visitor.get(sock.visitor_id)
        if sockets is not None:
            sockets.discard(sock)
            if not sockets:
                del self._by_visitor[sock.visitor_id]

    def of(self, visitor_id: str) -> list[ChatSocket]:
        return list(self._by_visitor.get(visitor_id, ()))


class ChatIntake:
    """Messages in, events out, acknowledged only after the broker confirmed."""

    def __init__(self, store: ChatStore, ledger: AsyncIntakeLedger, ctx: ServiceContext):
        self.store = store
        self.ledger = ledger
        self.ctx = ctx
        self._locks = KeyedLocks()

    async def accept(self, visitor_id: str, client_message_id: str, text: str, profile: Profile | None = None) -> Ack:
        async with self._locks.hold(visitor_id):
            existing, visitor = await self.store.arrival(visitor_id, client_message_id, profile)
            if existing is not None:  # a resend: same ids, published at most once
                if not existing.published:
                    await self._publish(existing)
                return self._ack(existing)
            record = await self._new_record(visitor, client_message_id, text)
            await self._publish(record)
            return self._ack(record)

    @staticmethod
    def _ack(record: MessageRecord) -> Ack:
        return Ack(record.ticket_id, record.client_message_id, record.client_message_id)

    async def _new_record(self, visitor: Visitor, client_message_id: str, text: str) -> MessageRecord:
        visitor_id = visitor.visitor_id
        now = datetime.now(timezone.utc)
        if visitor.ticket_id and visitor.trace_id:
            opening = await self.store.message(visitor_id, visitor.opening_cmid or "")
            if opening is not None and not opening.published:
                await self._publish(opening)  # the ticket must exist before anything joins it
            body = conversation.follow_up_event(
                ticket_id=visitor.ticket_id, trace_id=visitor.trace_id, visitor_id=visitor_id,
                client_message_id=client_message_id, text=text, profile=visitor.profile, now=now)
            return await self.store.add_message(
                MessageRecord(visitor_id, client_message_id, ev.MESSAGE_RECEIVED, body, published=False))
        ticket_id, _ = await self.ledger.claim_ticket(LEDGER_KIND, f"{visitor_id}:{visitor.conversation}")
        trace_id = ev.new_id()
        body = conversation.opening_event(
            ticket_id=ticket_id, trace_id=trace_id, visitor_id=visitor_id, client_message_id=client_message_id,
            text=text, profile=visitor.profile, now=now)
        record = MessageRecord(visitor_id, client_message_id, ev.TICKET_RECEIVED, body, published=False)
        await self.store.open_conversation(record, trace_id)
        return record

    async def _publish(self, record: MessageRecord) -> None:
        body = record.body
        with bound_event_context(trace_id=body["trace_id"], ticket_id=body["ticket_id"], event_id=body["event_id"]):
            await publish_confirmed(self.ctx.publisher, record.event_type, body)
            entry = conversation.customer_entry(record.client_message_id, body["text"], body["received_at"])
            await self.store.mark_published(record, entry)
            if record.event_type == ev.TICKET_RECEIVED:
                await self.ledger.mark_published(record.ticket_id)
                log.info("chat_ticket_opened", visitor=conversation.visitor_ref(record.visitor_id))
            else:
                log.info("chat_message_received", visitor=conversation.visitor_ref(record.visitor_id))

    async def history(self, ticket_id: str | None) -> list[dict[str, Any]]:
        return await self.store.transcript(ticket_id) if ticket_id else []


class AgentReplies:
    """agent_desk's replies on chat tickets: pushed live, and kept in the transcript."""

    def __init__(self, store: ChatStore, sockets: SocketRegistry, agent_names: dict[str, str]):
        self.store = store
        self.sockets = sockets
        self.agent_names = agent_names

    def subscribe(self, ctx: ServiceContext) -> None:
        ctx.consumer.subscribe(ev.AGENT_DESK, ev.AGENT_REPLIED, "relay_agent_reply", self.relay, broadcast=True)
        ctx.consumer.subscribe(ev.AGENT_DESK, ev.AGENT_REPLIED, "record_agent_reply", self.record)
        ctx.consumer.subscribe(ev.AGENT_DESK, ev.TICKET_RESOLVED, "close_resolved_conversation", self.close)

    def _entry(self, event: ev.AgentReplied) -> dict[str, Any]:
        return conversation.agent_entry(event.reply_id, self.agent_names.get(event.agent_id, ""), event.text,
                                        event.occurred_at.isoformat())

    async def relay(self, event: ev.Envelope) -> None:
        assert isinstance(event, ev.AgentReplied)
        if event.channel != "chat":
            return
        # The event names the visitor (agent_desk copies it from ticket_received): every replica
        # gets every reply, so the store is asked only for an event that lacks it.
        visitor_id = event.customer.chat_visitor_id or await self.store.visitor_of_ticket(event.ticket_id)
        if not visitor_id:
            return
        frame = conversation.agent_message_frame(self._entry(event))
        delivered = await asyncio.gather(*(s.send(frame) for s in self.sockets.of(visitor_id)))
        log.info("agent_reply_relayed", reply_id=event.reply_id, sockets=sum(delivered))

    async def record(self, event: ev.Envelope) -> None:
        assert isinstance(event, ev.AgentReplied)
        if event.channel == "chat":
            await self.store.add_agent_reply(event.ticket_id, event.reply_id, self._entry(event))

    async def close(self, event: ev.Envelope) -> None:
        assert isinstance(event, ev.TicketResolved)
        if event.channel == "chat" and await self.store.close_conversation(event.ticket_id):
            log.info("chat_conversation_closed")


class ChatHttp:
    def __init__(self, settings: Settings, intake: ChatIntake, sockets: SocketRegistry, ctx: ServiceContext):
        self.settings = settings
        self.intake = intake
        self.sockets = sockets
        self.ctx = ctx
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(STATIC_DIR), autoescape=True)
        self._page = env.get_template("page.html")
        self._widget_js = (STATIC_DIR / "widget.js").read_bytes()

    # --- pages -------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        lang = validation.pick_language(request.query.get("lang"), request.headers.get("Accept-Language"))
        html = self._page.render(lang=lang, html_lang="zh-CN" if lang == "zh" else "en", title=PAGE_TITLES[lang])
        return web.Response(text=html, content_type="text/html", headers={
            "Content-Security-Policy": "default-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; "
                                      "img-src 'self' data:; frame-ancestors 'self'",
            "Vary": "Accept-Language", "Cache-Control": "no-cache",
        })

    async def widget_js(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._widget_js, content_type="application/javascript", charset="utf-8",
                            headers={"Cache-Control": "public, max-age=300"})

    # --- origins -----------------------------------------------------------------------------

    def _check_origin(self, request: web.Request) -> str | None:
        origin = request.headers.get("Origin")
        if not validation.origin_allowed(origin, request.host, self.settings.allowed_origins):
            log.warning("origin_rejected", origin=origin)
            raise ApiError(403, "origin_not_allowed", "this site may not use the chat")
        return origin

    @staticmethod
    def _cors_headers(origin: str | None) -> dict[str, str]:
        if not origin:
            return {}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    # --- HTTP API ----------------------------------------------------------------------------

    async def post_message(self, request: web.Request) -> web.Response:
        origin = self._check_origin(request)
        data = await read_json(request)
        try:
            message = validation.api_message(data)
        except InvalidInput as exc:
            raise ApiError(400, exc.code, exc.message) from None
        ack = await self.intake.accept(message.visitor_id, message.client_message_id, message.text, message.profile)
        return json_response({"ticket_id": ack.ticket_id, "message_id": ack.message_id}, status=202,
                             headers=self._cors_headers(origin))

    async def preflight(self, request: web.Request) -> web.Response:
        origin = self._check_origin(request)
        return web.Response(status=204, headers={
            **self._cors_headers(origin), "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": str(CORS_MAX_AGE_SECONDS),
        })

    # --- WebSocket ---------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        self._check_origin(request)
        ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_SECONDS, max_msg_size=WS_MAX_FRAME_BYTES)
        await ws.prepare(request)
        sock = ChatSocket(ws)
        self.ctx.websockets.add(ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_frame(sock, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await sock.send_error("invalid_frame", "send JSON text frames")
        finally:
            self.sockets.discard(sock)
            self.ctx.websockets.discard(ws)
        return ws

    async def _on_frame(self, sock: ChatSocket, raw: str) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            await sock.send_error("invalid_json", "the frame is not valid JSON")
            return
        if not isinstance(frame, dict):
            await sock.send_error("invalid_frame", "a frame is a JSON object")
            return
        kind = frame.get("type")
        if kind == "hello":
            await self._guarded(sock, frame, self._on_hello)
        elif kind == "message":
            await self._guarded(sock, frame, self._on_message)
        elif kind == "typing":
            return  # accepted; not relayed to agents yet
        else:
            await sock.send_error("unknown_type", "type must be hello, message or typing")

    async def _guarded(self, sock: ChatSocket, frame: dict, handler: Callable) -> None:
        """Run a frame handler; every failure becomes an error frame and the socket stays open."""
        cmid = frame.get("client_message_id")
        extra = {"client_message_id": cmid} if isinstance(cmid, str) else {}
        try:
            await handler(sock, frame)
        except InvalidInput as exc:
            await sock.send_error(exc.code, exc.message, **extra)
        except BrokerUnavailable as exc:
            log.warning("broker_unavailable", error=str(exc))
            await sock.send_error("unavailable", "temporarily unavailable, the message will be sent again", **extra)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad frame must not close the conversation
            if is_transient(exc):
                log.warning("dependency_unavailable", error=repr(exc))
                await sock.send_error("unavailable", "temporarily unavailable, the message will be sent again", **extra)
            else:
                log.exception("frame_failed", frame_type=frame.get("type"))
                await sock.send_error("internal_error", "internal error", **extra)

    async def _on_hello(self, sock: ChatSocket, frame: dict) -> None:
        given = frame.get("visitor_id")
        visitor_id = validation.visitor_id(given) if given else "v_" + secrets.token_hex(16)
        profile = validation.profile(frame)
        await self.intake.store.remember_profile(visitor_id, profile)
        visitor = await self.intake.store.visitor(visitor_id)
        self.sockets.bind(sock, visitor_id)
        await sock.send({"type": "welcome", "visitor_id": visitor_id, "ticket_id": visitor.ticket_id,
                         "history": await self.intake.history(visitor.ticket_id)})

    async def _on_message(self, sock: ChatSocket, frame: dict) -> None:
        if sock.visitor_id is None:
            raise InvalidInput("hello_required", "send hello before messages")
        cmid = validation.client_message_id(frame.get("client_message_id"))
        text = validation.message_text(frame.get("text"))
        ack = await self.intake.accept(sock.visitor_id, cmid, text)
        await sock.send({"type": "ack", "client_message_id": ack.client_message_id, "ticket_id": ack.ticket_id,
                         "message_id": ack.message_id})


def build_app(settings: Settings) -> Callable[[ServiceContext], web.Application]:
    def build(ctx: ServiceContext) -> web.Application:
        store = ChatStore(ctx.redis)
        sockets = SocketRegistry()
        intake = ChatIntake(store, AsyncIntakeLedger(ctx.redis, SERVICE_NAME), ctx)
        AgentReplies(store, sockets, display_names(settings.roster_file)).subscribe(ctx)
        http = ChatHttp(settings, intake, sockets, ctx)
        app = ctx.new_app(client_max_size=API_MAX_BODY_BYTES)
        customer_pages.install(app, ctx, settings, display_names(settings.roster_file))  # status + survey pages
        app.router.add_get("/", http.page)
        app.router.add_get("/widget.js", http.widget_js)
        app.router.add_get("/ws", http.websocket)
        app.router.add_post("/api/chat/messages", http.post_message)
        app.router.add_route("OPTIONS", "/api/chat/messages", http.preflight)
        return app

    return build


def make_service(settings: Settings) -> AioService:
    return AioService(SERVICE_NAME, settings.common, build_app(settings), host=settings.host, port=settings.port)
