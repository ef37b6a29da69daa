"""intake_chat: the customers' chat page, embeddable widget and WebSocket.

A message (WebSocket frame or ``POST /api/chat/messages``) is validated, deduplicated on the
client's message id, turned into ``ticket_received`` (first message of a conversation) or
``message_received`` (later ones), published with a broker confirm, and only then acknowledged.
Agents' replies come back as ``agent_desk`` ``agent_replied`` events and are pushed to the
visitor's open sockets.

Nothing lost, nothing twice, across reconnects. Every transcript entry (customer message once
confirmed, agent reply once recorded) gets the next position ``seq`` of its ticket. Frames that
carry an entry carry its ``seq``; the widget keeps the highest position up to which it holds
every entry, confirms it (``received``), says it again in ``hello.since`` after a reconnect and
is sent only what follows; a position it skipped (a frame lost with a dying socket) makes it
ask (``sync``). Customer messages wait in the widget's outbox until their ``ack`` and are resent
with the same client message id, which the server recognises. An agent reply no widget
confirmed within ``TM_CHAT_REPLY_EMAIL_DELAY_SECONDS`` is mailed (:mod:`.followups`).

Why two subscriptions to ``agent_replied``: every replica must see every reply, because the
visitor's socket may be on any of them, so the push uses a broadcast queue (one exclusive queue
per replica). Broadcast queues only exist while a replica runs, so the transcript is kept by a
second, pooled and durable subscription: one replica appends each reply, even one sent while
every chat replica was down. Both append through the same Lua script (``SET NX`` on the reply
id): whichever comes first gives the reply its position, the other reads it, so the pushed
frame and the transcript agree.

Per-visitor ordering: one replica handles one visitor's messages one at a time (an asyncio lock
per visitor), so a conversation's first message opens exactly one ticket and the transcript is
in the order the visitor wrote. Two tabs of one visitor on two replicas at the same instant are
not serialised; the intake ledger still gives them the same ticket.

Who is who (:mod:`.identity`): anonymous visitors are a hash of a session secret their browser
keeps; logged-in users of the company's site are verified by an HMAC of their user id with the
site's secret. Abuse controls (:mod:`.abuse`): blocked addresses, allowed origins, rate limits
per address and per visitor, frame and upload size caps. Waiting customers are told their place
and expected wait (:mod:`.waiting`).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import jinja2
from aiohttp import WSMsgType, web

from shared import events as ev
from shared.aio_service import (AioService, ApiError, BrokerUnavailable, ServiceContext, json_response,
                                publish_confirmed, read_json)
from shared.config import ConfigError
from shared.config_files import ConfigFileError
from shared.errors import is_transient
from shared.intake_ledger import AsyncIntakeLedger
from shared.logging import bound_event_context, get_logger, mask
from shared.roster import display_names
from shared.sla_policy import load_policies

from services.intake_chat import abuse, conversation, customer_pages, identity, uploads, validation
from services.intake_chat.abuse import Limiter, RateLimited
from services.intake_chat.config import Settings
from services.intake_chat.followups import MissedReplies
from services.intake_chat.identity import Identity, IdentityRefused
from services.intake_chat.store import ChatStore, MessageRecord, Upload, Visitor
from services.intake_chat.tasks import run_in_background
from services.intake_chat.uploads import UploadFiles, UploadRefused
from services.intake_chat.validation import InvalidInput, Profile
from services.intake_chat.waiting import QueueWatch

log = get_logger(__name__)

SERVICE_NAME = ev.INTAKE_CHAT
STATIC_DIR = Path(__file__).parent / "static"
API_MAX_BODY_BYTES = 64 * 1024
WS_MAX_FRAME_BYTES = 64 * 1024  # 5,000 CJK characters are ~15 KB of UTF-8 JSON
WS_HEARTBEAT_SECONDS = 25.0  # below common proxy idle timeouts (60 s)
UPLOAD_FORM_OVERHEAD_BYTES = 16 * 1024  # multipart boundaries and the identity fields
LEDGER_KIND = "visitor"
PAGE_TITLES = {"zh": "在线客服", "en": "Customer support chat"}
CORS_MAX_AGE_SECONDS = 600
UNAVAILABLE = "temporarily unavailable, the message will be sent again"
# Frames handled at once across all sockets: each holds at most one Redis connection at a time,
# and the client's pool (100) must also serve the consumers (prefetch 32) and background loops.
# Past this, frames wait their turn instead of failing with "too many connections".
FRAMES_IN_FLIGHT = 48


@dataclass(frozen=True)
class Ack:
    ticket_id: str
    message_id: str
    client_message_id: str
    seq: int = 0
    opened: bool = False  # this message opened the ticket


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

    def __init__(self, ws: web.WebSocketResponse, address: str):
        self.ws = ws
        self.address = address
        self.visitor_id: str | None = None
        self.verified = False
        self.user_id = ""  # the company's user id of a verified visitor
        self.ticket_id: str | None = None
        self.answered = False  # an agent replied on its ticket: it waits in no queue
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

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_visitor.values())


class ChatIntake:
    """Messages in, events out, acknowledged only after the broker confirmed."""

    def __init__(self, store: ChatStore, ledger: AsyncIntakeLedger, ctx: ServiceContext):
        self.store = store
        self.ledger = ledger
        self.ctx = ctx
        self._locks = KeyedLocks()

    async def accept(self, visitor_id: str, client_message_id: str, text: str, profile: Profile | None = None, *,
                     upload_ids: tuple[str, ...] = (), verified: bool = False, user_id: str = "") -> Ack:
        async with self._locks.hold(visitor_id):
            visitor, existing = await self.store.arrival(visitor_id, client_message_id, profile)
            if existing is not None:  # a resend: same ids, published at most once
                seq = existing.seq
                if not existing.published:
                    seq = await self._publish(existing)
                return self._ack(existing, seq)
            attachments = await self._attachments(visitor_id, upload_ids)
            record = await self._new_record(visitor, client_message_id, text, attachments, verified, user_id)
            seq = await self._publish(record)
            return self._ack(record, seq)

    async def _attachments(self, visitor_id: str, upload_ids: tuple[str, ...]) -> list[dict[str, Any]]:
        found: list[Upload] = []
        for upload_id in upload_ids:
            upload = await self.store.upload(visitor_id, upload_id)
            if upload is None:
                raise InvalidInput("unknown_upload", f"no upload {upload_id} of this visitor (expired or never made)")
            found.append(upload)
        return [u.attachment() for u in found]

    @staticmethod
    def _ack(record: MessageRecord, seq: int) -> Ack:
        return Ack(record.ticket_id, record.client_message_id, record.client_message_id, seq,
                   record.event_type == ev.TICKET_RECEIVED)

    async def _new_record(self, visitor: Visitor, client_message_id: str, text: str,
                          attachments: list[dict[str, Any]], verified: bool, user_id: str = "") -> MessageRecord:
        visitor_id = visitor.visitor_id
        now = datetime.now(timezone.utc)
        if visitor.ticket_id and visitor.trace_id:
            opening = await self.store.message(visitor_id, visitor.opening_cmid or "")
            if opening is not None and not opening.published:
                await self._publish(opening)  # the ticket must exist before anything joins it
            body = conversation.follow_up_event(
                ticket_id=visitor.ticket_id, trace_id=visitor.trace_id, visitor_id=visitor_id,
                client_message_id=client_message_id, text=text, profile=visitor.profile, now=now,
                attachments=attachments)
            return await self.store.add_message(
                MessageRecord(visitor_id, client_message_id, ev.MESSAGE_RECEIVED, body, published=False))
        ticket_id, _ = await self.ledger.claim_ticket(LEDGER_KIND, f"{visitor_id}:{visitor.conversation}")
        trace_id = ev.new_id()
        body = conversation.opening_event(
            ticket_id=ticket_id, trace_id=trace_id, visitor_id=visitor_id, client_message_id=client_message_id,
            text=text, profile=visitor.profile, now=now, attachments=attachments, verified=verified,
            user_id=user_id)
        record = MessageRecord(visitor_id, client_message_id, ev.TICKET_RECEIVED, body, published=False)
        await self.store.open_conversation(record, trace_id)
        return record

    async def _publish(self, record: MessageRecord) -> int:
        body = record.body
        with bound_event_context(trace_id=body["trace_id"], ticket_id=body["ticket_id"], event_id=body["event_id"]):
            await publish_confirmed(self.ctx.publisher, record.event_type, body)
            entry = conversation.customer_entry(record.client_message_id, body["text"], body["received_at"],
                                                body.get("attachments", []))
            opened = record.event_type == ev.TICKET_RECEIVED
            # The ledger's mark rides along on the store's round trip (its own verb, on the pipeline).
            _, seq = await self.store.mark_published(
                record, entry,
                along=(lambda pipe: AsyncIntakeLedger(pipe, SERVICE_NAME).mark_published(record.ticket_id)) if opened
                else None)
            if opened:
                log.info("chat_ticket_opened", visitor=conversation.visitor_ref(record.visitor_id))
            else:
                log.info("chat_message_received", visitor=conversation.visitor_ref(record.visitor_id))
            return seq

    async def history(self, ticket_id: str | None, since: int = 0) -> list[dict[str, Any]]:
        if not ticket_id:
            return []
        return [conversation.history_entry(e) for e in await self.store.transcript(ticket_id, since)]


class AgentReplies:
    """agent_desk's replies on chat tickets: pushed live, and kept in the transcript."""

    def __init__(self, store: ChatStore, sockets: SocketRegistry, agent_names: dict[str, str],
                 missed: MissedReplies, waiting: QueueWatch):
        self.store = store
        self.sockets = sockets
        self.agent_names = agent_names
        self.missed = missed
        self.waiting = waiting

    def subscribe(self, ctx: ServiceContext) -> None:
        ctx.consumer.subscribe(ev.AGENT_DESK, ev.AGENT_REPLIED, "relay_agent_reply", self.relay, broadcast=True)
        ctx.consumer.subscribe(ev.AGENT_DESK, ev.AGENT_REPLIED, "record_agent_reply", self.record)
        ctx.consumer.subscribe(ev.AGENT_DESK, ev.TICKET_RESOLVED, "close_resolved_conversation", self.close)
        ctx.consumer.subscribe(ev.AGENT_DESK, ev.TICKET_RESOLVED, "relay_conversation_closed", self.relay_closed,
                               broadcast=True)
        ctx.consumer.subscribe(ev.AGENT_DESK, ev.AGENT_TYPING, "relay_agent_typing", self.relay_typing,
                               broadcast=True)

    def _entry(self, event: ev.AgentReplied) -> dict[str, Any]:
        return conversation.agent_entry(event.reply_id, event.agent_id, self.agent_names.get(event.agent_id, ""),
                                        event.text, event.occurred_at.isoformat())

    async def _visitor(self, ticket_id: str, named: str | None) -> str | None:
        return named or await self.store.visitor_of_ticket(ticket_id)

    async def relay(self, event: ev.Envelope) -> None:
        assert isinstance(event, ev.AgentReplied)
        if event.channel != "chat":
            return
        self.waiting.answered(event.ticket_id)
        # The event names the visitor (agent_desk copies it from ticket_received): every replica
        # gets every reply, so Redis is asked only by the replica that holds the visitor's socket.
        visitor_id = await self._visitor(event.ticket_id, event.customer.chat_visitor_id)
        sockets = self.sockets.of(visitor_id) if visitor_id else []
        if not sockets:
            return
        entry = self._entry(event)
        _, seq = await self.store.add_agent_reply(event.ticket_id, event.reply_id, entry, look_at=self.missed.look_at())
        frame = conversation.agent_message_frame(entry, seq)
        for sock in sockets:
            sock.answered = True
        delivered = await asyncio.gather(*(s.send(frame) for s in sockets))
        log.info("agent_reply_relayed", reply_id=event.reply_id, sockets=sum(delivered))

    async def record(self, event: ev.Envelope) -> None:
        assert isinstance(event, ev.AgentReplied)
        if event.channel == "chat":
            await self.store.add_agent_reply(event.ticket_id, event.reply_id, self._entry(event),
                                             look_at=self.missed.look_at())

    async def close(self, event: ev.Envelope) -> None:
        assert isinstance(event, ev.TicketResolved)
        if event.channel == "chat" and await self.store.close_conversation(event.ticket_id):
            log.info("chat_conversation_closed")

    async def relay_closed(self, event: ev.Envelope) -> None:
        assert isinstance(event, ev.TicketResolved)
        if event.channel != "chat":
            return
        self.waiting.answered(event.ticket_id)
        visitor_id = await self.store.visitor_of_ticket(event.ticket_id)
        for sock in self.sockets.of(visitor_id) if visitor_id else []:
            if sock.ticket_id == event.ticket_id:
                sock.ticket_id = None
                sock.answered = False
            await sock.send({"type": "closed", "ticket_id": event.ticket_id})

    async def relay_typing(self, event: ev.Envelope) -> None:
        assert isinstance(event, ev.AgentTyping)
        visitor_id = await self.store.visitor_of_ticket(event.ticket_id) if self.sockets else None
        frame = {"type": "agent_typing", "typing": event.typing, "agent_name": self.agent_names.get(event.agent_id, "")}
        for sock in self.sockets.of(visitor_id) if visitor_id else []:
            await sock.send(frame)


class ChatHttp:
    def __init__(self, settings: Settings, intake: ChatIntake, sockets: SocketRegistry, ctx: ServiceContext,
                 limiter: Limiter, files: UploadFiles, waiting: QueueWatch):
        self.settings = settings
        self.intake = intake
        self.store = intake.store
        self.sockets = sockets
        self.ctx = ctx
        self.limiter = limiter
        self.files = files
        self.waiting = waiting
        self._in_flight = asyncio.Semaphore(FRAMES_IN_FLIGHT)
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(STATIC_DIR), autoescape=True)
        self._page = env.get_template("page.html")
        self._widget_js = (STATIC_DIR / "widget.js").read_bytes()

    # --- pages -------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        self._check_address(request)
        lang = validation.pick_language(request.query.get("lang"), request.headers.get("Accept-Language"))
        html = self._page.render(lang=lang, html_lang="zh-CN" if lang == "zh" else "en", title=PAGE_TITLES[lang])
        return web.Response(text=html, content_type="text/html", headers={
            "Content-Security-Policy": "default-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; "
                                      "img-src 'self' data: blob:; frame-ancestors 'self'",
            "Vary": "Accept-Language", "Cache-Control": "no-cache",
        })

    async def widget_js(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._widget_js, content_type="application/javascript", charset="utf-8",
                            headers={"Cache-Control": "public, max-age=300"})

    # --- origins, addresses, limits ----------------------------------------------------------

    def _check_origin(self, request: web.Request) -> str | None:
        origin = request.headers.get("Origin")
        if not validation.origin_allowed(origin, request.host, self.settings.allowed_origins):
            log.warning("origin_rejected", origin=origin)
            raise ApiError(403, "origin_not_allowed", "this site may not use the chat")
        return origin

    def _check_address(self, request: web.Request) -> str:
        address = abuse.client_address(request.remote, request.headers.get("X-Forwarded-For"),
                                       self.settings.trusted_proxies)
        if abuse.is_blocked(address, self.settings.blocked_networks):
            log.warning("address_blocked", address=address)
            raise ApiError(403, "address_blocked", "the chat is not available from this address")
        return address

    async def _limit(self, limit_name: str, subject: str) -> None:
        await self.limiter.check(limit_name, subject, time.time())

    @staticmethod
    def _cors_headers(origin: str | None) -> dict[str, str]:
        if not origin:
            return {}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    def _identify(self, data: dict) -> Identity:
        """The visitor a hello, message or upload speaks for (verified user or session secret)."""
        claimed = validation.claimed_identity(data)
        if claimed is not None:
            return identity.verify(self.settings.identity_secrets, claimed.site, claimed.user_id, claimed.user_hash)
        given = data["session"] if "session" in data else data.get("visitor_id")
        return identity.anonymous(validation.session(given))

    # --- HTTP API ----------------------------------------------------------------------------

    async def post_message(self, request: web.Request) -> web.Response:
        origin = self._check_origin(request)
        address = self._check_address(request)
        data = await read_json(request)
        try:
            who = self._identify(data)
            message = validation.api_message(data)
        except (InvalidInput, IdentityRefused) as exc:
            raise ApiError(400 if isinstance(exc, InvalidInput) else 403, exc.code, exc.message) from None
        await self._limit_message(who.visitor_id, address)
        try:
            ack = await self.intake.accept(who.visitor_id, message.client_message_id, message.text, message.profile,
                                           upload_ids=message.files, verified=who.verified, user_id=who.user_id)
        except InvalidInput as exc:
            raise ApiError(400, exc.code, exc.message) from None
        return json_response({"ticket_id": ack.ticket_id, "message_id": ack.message_id, "seq": ack.seq}, status=202,
                             headers=self._cors_headers(origin))

    async def _limit_message(self, visitor_id: str, address: str) -> None:
        try:
            await self._limit("ip_messages", address)
            await self._limit("session_messages", visitor_id)
            # Only a limit in force is worth reading the visitor for.
            if self.limiter.applies("ip_conversations") and not (await self.store.visitor(visitor_id)).ticket_id:
                await self._limit("ip_conversations", address)
        except RateLimited as exc:
            log.warning("rate_limited", limit=exc.limit_name, visitor=conversation.visitor_ref(visitor_id))
            raise ApiError(429, "rate_limited", f"too many requests, retry in {exc.retry_after} s",
                           retry_after=exc.retry_after) from None

    async def upload(self, request: web.Request) -> web.Response:
        """``POST /api/chat/uploads``: multipart ``file`` plus the identity fields of the hello."""
        origin = self._check_origin(request)
        self._check_address(request)
        limit = self.settings.upload_max_bytes
        if request.content_length is not None and request.content_length > limit + UPLOAD_FORM_OVERHEAD_BYTES:
            raise ApiError(413, "file_too_large", f"files may be at most {limit} bytes")
        if not request.content_type.startswith("multipart/"):
            raise ApiError(415, "multipart_required", "send the file as multipart/form-data")
        fields: dict[str, str] = {}
        data = b""
        filename = ""
        reader = await request.multipart()
        async for part in reader:
            if part.name == "file":
                filename = part.filename or ""
                data = await self._read_capped(part, limit)
            elif part.name in ("session", "visitor_id", "site", "user_id", "user_hash"):
                fields[part.name] = (await self._read_capped(part, 1024)).decode("utf-8", "replace")
        try:
            who = self._identify(fields)
            sniffed = uploads.sniff(data, filename, allowed_types=self.settings.upload_types, max_bytes=limit)
        except InvalidInput as exc:
            raise ApiError(400, exc.code, exc.message) from None
        except IdentityRefused as exc:
            raise ApiError(403, exc.code, exc.message) from None
        except UploadRefused as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
        try:
            await self._limit("session_uploads", who.visitor_id)
        except RateLimited as exc:
            raise ApiError(429, "rate_limited", f"too many uploads, retry in {exc.retry_after} s",
                           retry_after=exc.retry_after) from None
        await asyncio.to_thread(self.files.keep, sniffed.sha256, data)
        upload = Upload("f_" + secrets.token_hex(12), sniffed.sha256, sniffed.filename, sniffed.content_type,
                        sniffed.size)
        await self.store.add_upload(who.visitor_id, upload)
        log.info("chat_file_uploaded", visitor=conversation.visitor_ref(who.visitor_id),
                 content_type=upload.content_type, size=upload.size)
        return json_response({"upload_id": upload.upload_id, "filename": upload.filename,
                              "content_type": upload.content_type, "size": upload.size}, status=201,
                             headers=self._cors_headers(origin))

    @staticmethod
    async def _read_capped(part, limit: int) -> bytes:
        chunks, size = [], 0
        while chunk := await part.read_chunk(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "file_too_large", f"files may be at most {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def preflight(self, request: web.Request) -> web.Response:
        origin = self._check_origin(request)
        return web.Response(status=204, headers={
            **self._cors_headers(origin), "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": str(CORS_MAX_AGE_SECONDS),
        })

    # --- WebSocket ---------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        self._check_origin(request)
        address = self._check_address(request)
        try:
            await self._limit("ip_connects", address)
        except RateLimited as exc:
            raise ApiError(429, "rate_limited", f"too many connections, retry in {exc.retry_after} s",
                           retry_after=exc.retry_after) from None
        ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_SECONDS, max_msg_size=WS_MAX_FRAME_BYTES)
        await ws.prepare(request)
        sock = ChatSocket(ws, address)
        self.ctx.websockets.add(ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_frame(sock, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await sock.send_error("invalid_frame", "send JSON text frames")
        finally:
            self.sockets.discard(sock)
            self.waiting.unwatch(sock)
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
        handler = self._handlers.get(frame.get("type"))
        if handler is None:
            await sock.send_error("unknown_type", f"type must be one of {', '.join(self._handlers)}")
            return
        if handler is not ChatHttp._on_hello and sock.visitor_id is None:
            cmid = frame.get("client_message_id")
            await sock.send_error("hello_required", "send hello before anything else",
                                  **({"client_message_id": cmid} if isinstance(cmid, str) else {}))
            return
        async with self._in_flight:
            await self._guarded(sock, frame, handler)

    async def _guarded(self, sock: ChatSocket, frame: dict, handler: Callable) -> None:
        """Run a frame handler; every failure becomes an error frame and the socket stays open."""
        cmid = frame.get("client_message_id")
        extra = {"client_message_id": cmid} if isinstance(cmid, str) else {}
        try:
            await handler(self, sock, frame)
        except (InvalidInput, IdentityRefused) as exc:
            await sock.send_error(exc.code, exc.message, **extra)
        except RateLimited as exc:
            log.warning("rate_limited", limit=exc.limit_name, visitor=conversation.visitor_ref(sock.visitor_id or ""))
            await sock.send_error("rate_limited", f"too many messages, retry in {exc.retry_after} s",
                                  retry_after=exc.retry_after, **extra)
        except BrokerUnavailable as exc:
            log.warning("broker_unavailable", error=str(exc))
            await sock.send_error("unavailable", UNAVAILABLE, **extra)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad frame must not close the conversation
            if is_transient(exc):
                log.warning("dependency_unavailable", error=repr(exc))
                await sock.send_error("unavailable", UNAVAILABLE, **extra)
            else:
                log.exception("frame_failed", frame_type=frame.get("type"))
                await sock.send_error("internal_error", "internal error", **extra)

    async def _on_hello(self, sock: ChatSocket, frame: dict) -> None:
        who = self._identify(frame)
        profile = validation.profile(frame)
        since = validation.since(frame.get("since"))
        await self.store.remember_profile(who.visitor_id, profile)
        visitor = await self.store.visitor(who.visitor_id)
        self.sockets.bind(sock, who.visitor_id)
        sock.verified = who.verified
        sock.user_id = who.user_id
        sock.ticket_id = visitor.ticket_id
        # The widget's ``since`` counts in its own ticket's positions; another ticket means start over.
        resumed = bool(since) and frame.get("ticket_id") == visitor.ticket_id and visitor.ticket_id is not None
        history = await self.intake.history(visitor.ticket_id, since if resumed else 0)
        if resumed:
            await self.store.mark_delivered(visitor.ticket_id, since)
        seats = await self.waiting.seats()
        await sock.send({"type": "welcome", "visitor_id": who.visitor_id, "verified": who.verified,
                         "ticket_id": visitor.ticket_id, "resumed": resumed, "history": history,
                         "agents_online": seats.agents_online, "email_known": bool(visitor.profile.email)})
        sock.answered = conversation.has_agent_reply(history if not resumed
                                                     else await self.store.transcript(visitor.ticket_id or ""))
        if visitor.ticket_id and not sock.answered:
            await self._watch_queue(sock, visitor.ticket_id)

    async def _watch_queue(self, sock: ChatSocket, ticket_id: str) -> None:
        self.waiting.watch(ticket_id, sock, sock.send)
        self.waiting.forget_last(ticket_id)
        await self.waiting.refresh(only=ticket_id)

    async def _on_message(self, sock: ChatSocket, frame: dict) -> None:
        assert sock.visitor_id is not None
        cmid = validation.chat_message_id(frame.get("client_message_id"))
        files = validation.upload_ids(frame.get("files"))
        text = validation.message_text(frame.get("text"), allow_empty=bool(files))
        await self._limit("ip_messages", sock.address)
        await self._limit("session_messages", sock.visitor_id)
        if sock.ticket_id is None:
            await self._limit("ip_conversations", sock.address)
        ack = await self.intake.accept(sock.visitor_id, cmid, text, upload_ids=files, verified=sock.verified,
                                       user_id=sock.user_id)
        sock.ticket_id = ack.ticket_id
        await sock.send({"type": "ack", "client_message_id": ack.client_message_id, "ticket_id": ack.ticket_id,
                         "message_id": ack.message_id, "seq": ack.seq})
        # The visitor's other tabs on this replica see it at once (others find it by ``sync``).
        entry = {"type": "customer_message", "seq": ack.seq, "client_message_id": cmid, "text": text}
        for other in self.sockets.of(sock.visitor_id):
            if other is not sock:
                other.ticket_id = ack.ticket_id
                await other.send(entry)
        if ack.opened:
            sock.answered = False
        if not sock.answered and not self.waiting.is_watching(ack.ticket_id, sock):
            await self._watch_queue(sock, ack.ticket_id)

    async def _on_typing(self, sock: ChatSocket, frame: dict) -> None:
        ticket_id = sock.ticket_id
        if ticket_id is None or frame.get("typing") is False:
            return
        if not await self.store.typing_window_open(ticket_id):
            return
        body = ev.make_event(SERVICE_NAME, ev.CHAT_TYPING, now=datetime.now(timezone.utc), trace_id=ev.new_id(),
                             ticket_id=ticket_id, typing=True)
        try:
            await publish_confirmed(self.ctx.publisher, ev.CHAT_TYPING, body)
        except BrokerUnavailable:
            return  # a typing hint is worth nothing later: not retried, and the widget is not bothered

    async def _on_received(self, sock: ChatSocket, frame: dict) -> None:
        seq = validation.since(frame.get("seq"))
        if sock.ticket_id and seq:
            await self.store.mark_delivered(sock.ticket_id, seq)

    async def _on_sync(self, sock: ChatSocket, frame: dict) -> None:
        since = validation.since(frame.get("since"))
        await self._limit("session_messages", sock.visitor_id or "")
        await sock.send({"type": "history", "ticket_id": sock.ticket_id,
                         "entries": await self.intake.history(sock.ticket_id, since)})

    async def _on_transcript(self, sock: ChatSocket, frame: dict) -> None:
        assert sock.visitor_id is not None
        given = frame.get("email")
        address = validation.email(given) if given not in (None, "") else ""
        visitor = await self.store.visitor(sock.visitor_id)
        ticket_id = visitor.ticket_id or visitor.last_ticket_id
        entries = await self.store.transcript(ticket_id) if ticket_id else []
        if not ticket_id or not conversation.has_agent_reply(entries):
            raise InvalidInput("transcript_unavailable", "the transcript can be mailed once an agent has answered")
        to = address or visitor.profile.email
        if not to:
            raise InvalidInput("email_required", "tell us the address to send the transcript to")
        await self._limit("session_transcripts", sock.visitor_id)
        if address:
            await self.store.remember_profile(sock.visitor_id, Profile(email=address))
        profile = Profile(name=visitor.profile.name, email=to, phone=visitor.profile.phone,
                          language=visitor.profile.language)
        trace_id = (visitor.trace_id if visitor.ticket_id else visitor.last_trace_id) or ev.new_id()
        state = await self.store.ticket_state(ticket_id)
        body = conversation.transcript_event(ticket_id=ticket_id, trace_id=trace_id, visitor_id=sock.visitor_id,
                                             profile=profile, to=to, subject=state.subject, entries=entries,
                                             now=datetime.now(timezone.utc))
        with bound_event_context(trace_id=trace_id, ticket_id=ticket_id):
            await publish_confirmed(self.ctx.publisher, ev.CHAT_TRANSCRIPT_REQUESTED, body)
            log.info("chat_transcript_requested", to=mask(to), entries=len(entries))
        await sock.send({"type": "transcript_queued", "ticket_id": ticket_id, "to": to})

    async def _on_profile(self, sock: ChatSocket, frame: dict) -> None:
        """Details given after the pre-chat form (an address to be answered at when no agent is online)."""
        assert sock.visitor_id is not None
        profile = validation.profile(frame)
        await self.store.remember_profile(sock.visitor_id, profile)
        visitor = await self.store.visitor(sock.visitor_id)
        await sock.send({"type": "profile_saved", "email_known": bool(visitor.profile.email)})

    _handlers: dict[str, Callable] = {
        "hello": _on_hello, "message": _on_message, "typing": _on_typing, "received": _on_received,
        "sync": _on_sync, "transcript": _on_transcript, "profile": _on_profile,
    }


MISSED_KEY = web.AppKey("missed_replies", MissedReplies)
WAITING_KEY = web.AppKey("queue_watch", QueueWatch)


def build_app(settings: Settings) -> Callable[[ServiceContext], web.Application]:
    try:
        policies = load_policies(settings.sla_policy_file)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None
    names = display_names(settings.roster_file)

    def build(ctx: ServiceContext) -> web.Application:
        store = ChatStore(ctx.redis)
        sockets = SocketRegistry()
        intake = ChatIntake(store, AsyncIntakeLedger(ctx.redis, SERVICE_NAME), ctx)
        missed = MissedReplies(store, ctx.publisher, delay_seconds=settings.reply_email_delay_seconds)
        waiting = QueueWatch(ctx.redis, policies, handle_seconds=settings.handle_seconds,
                             refresh_seconds=settings.queue_refresh_seconds, agent_names=names)
        AgentReplies(store, sockets, names, missed, waiting).subscribe(ctx)
        http = ChatHttp(settings, intake, sockets, ctx, Limiter(store, settings.rate_limits),
                        UploadFiles(settings.common.data_dir), waiting)
        app = ctx.new_app(client_max_size=API_MAX_BODY_BYTES)
        customer_pages.install(app, ctx, settings, names)  # status + survey pages
        app[MISSED_KEY] = missed
        app[WAITING_KEY] = waiting
        app.router.add_get("/", http.page)
        app.router.add_get("/widget.js", http.widget_js)
        app.router.add_get("/ws", http.websocket)
        app.router.add_post("/api/chat/messages", http.post_message)
        app.router.add_route("OPTIONS", "/api/chat/messages", http.preflight)
        app.router.add_post("/api/chat/uploads", http.upload)
        app.router.add_route("OPTIONS", "/api/chat/uploads", http.preflight)
        run_in_background(app, "missed_reply_sweep", lambda: missed.run(settings.sweep_seconds))
        run_in_background(app, "queue_refresh", waiting.run)
        return app

    return build


def make_service(settings: Settings) -> AioService:
    return AioService(SERVICE_NAME, settings.common, build_app(settings), host=settings.host, port=settings.port)
