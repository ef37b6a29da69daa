"""The customer's ticket status page: the projection's consumers, the pages, the live stream.

- ``StatusProjection`` keeps ``status_view`` up to date from the mesh's events (one pooled,
  durable queue per event and source; the store's transaction makes redeliveries and
  reordering harmless).
- ``LiveStatus`` holds this replica's open streams (Server-Sent Events, one per open page) by
  ticket. Every view write of a ticket with an open page publishes the ticket id on a Redis
  channel *after* the write (a stream marks its ticket watched before its first read, and keeps
  the mark fresh); each replica listens and wakes the streams of that ticket, which re-read the
  view and send it whole. A lost notification is healed by the next one, and a reconnecting listener re-sends
  every stream's view.
- ``StatusPages``: ``GET /status`` (lookup form), ``POST /api/v1/status/lookup``,
  ``GET /status/{token}`` (page), ``…/view`` (JSON), ``…/events`` (stream), ``POST …/reply``.
  Nothing is reachable without a signed status link, and the lookup hands out a link only
  for the right ticket number *and* the customer's email or phone, answering a wrong number
  and a wrong contact alike, rate limited per client address and per ticket number.
- ``Outbox``: a reply or survey answer stored but not confirmed by the broker (a timeout, a
  broker restart) is published by a periodic sweep, so a customer's words are never dropped.

Tokens never reach the logs: the error middleware logs route patterns, and these handlers log
ticket ids only.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Mapping

import jinja2
from aiohttp import web

from shared import customer_links
from shared import events as ev
from shared.aio_service import ApiError, BrokerUnavailable, ServiceContext, json_response, publish_confirmed, read_json
from shared.customer_links import Link, LinkInvalid
from shared.errors import is_transient
from shared.intake_ledger import natural_key_hash
from shared.logging import bound_event_context, get_logger

from services.intake_chat import customer_events, customer_input, customer_texts, status_view, validation
from services.intake_chat.config import Settings
from services.intake_chat.status_store import CHANGES_CHANNEL, REPLY_RECORD_TTL_SECONDS, Limit, Pending, StatusStore
from services.intake_chat.status_view import StatusView

log = get_logger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
ASSETS = {"status.js": "application/javascript", "customer.css": "text/css"}
STREAM_HEARTBEAT_SECONDS = 25.0        # below common proxy idle timeouts (60 s)
STREAMS_PER_TICKET = 20                # open pages of one ticket on one replica
LISTENER_RETRY_SECONDS = 1.0
LISTENER_POLL_SECONDS = 5.0
OUTBOX_SWEEP_SECONDS = 10.0
OUTBOX_GRACE_SECONDS = 30.0            # leave a fresh record to the request still publishing it
REGISTERING_GRACE = timedelta(days=1)  # a link this young may name a ticket not projected yet
LOOKUP_LIMITS = (("lookup_ip", 20, 15 * 60), ("lookup_ticket", 5, 15 * 60))  # (what, attempts, window s)
REPLY_LIMIT = ("reply", 20, 10 * 60)
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",  # the path is the key to the ticket
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
    "Vary": "Accept-Language",
}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def wants_json(request: web.Request) -> bool:
    return request.content_type == "application/json"


async def read_fields(request: web.Request) -> Mapping[str, Any]:
    """A form post (the pages work without script) or a JSON object (the pages' script)."""
    if wants_json(request):
        return await read_json(request)
    return await request.post()


def templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(STATIC_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["utc"] = lambda iso: datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return env


class CustomerPage(Exception):
    """Answer with the message page (``text`` is a ``customer_texts`` key) and ``status``."""

    def __init__(self, status: int, text: str, *, lookup_link: bool = False):
        super().__init__(text)
        self.status = status
        self.text = text
        self.lookup_link = lookup_link


def api_error(refusal: CustomerPage) -> ApiError:
    """A refusal as the JSON API's error (the English text as message)."""
    return ApiError(refusal.status, refusal.text, customer_texts.TEXTS["en"][refusal.text])


def link_refusal(exc: LinkInvalid) -> CustomerPage:
    """Expired links say so (the customer can look the ticket up again); forged, malformed and
    wrong-purpose ones all get the same 404."""
    if str(exc) == "link expired":
        return CustomerPage(410, "link_expired", lookup_link=True)
    return CustomerPage(404, "link_invalid", lookup_link=True)


class Renderer:
    """The HTML pages, with the headers every customer page carries."""

    def __init__(self) -> None:
        self._env = templates()

    def page(self, name: str, lang: str, *, status: int = 200, headers: Mapping[str, str] | None = None,
             **context: Any) -> web.Response:
        text = customer_texts.TEXTS[lang]
        html = self._env.get_template(name).render(t=text, lang=lang, **context)
        return web.Response(text=html, status=status, content_type="text/html",
                            headers={**PAGE_HEADERS, **(headers or {})})

    def message(self, lang: str, refusal: CustomerPage, *, back: str | None = None,
                headers: Mapping[str, str] | None = None) -> web.Response:
        """The message page; ``back`` links to the page the customer came from (a path of ours)."""
        return self.page("customer_message.html", lang, status=refusal.status, headers=headers,
                         message=refusal.text, lookup_link=refusal.lookup_link, back=back)


# --- the projection -------------------------------------------------------------------------------

PROJECTED: tuple[tuple[str, str, str], ...] = (
    *((source, ev.TICKET_RECEIVED, f"status_ticket_received_{source.removeprefix('intake_')}")
      for source in ev.INTAKE_SERVICES),
    *((source, ev.MESSAGE_RECEIVED, f"status_message_received_{source.removeprefix('intake_')}")
      for source in ev.INTAKE_SERVICES),
    (ev.AGENT_DESK, ev.AGENT_REPLIED, "status_agent_replied"),
    (ev.DISPATCHER, ev.TICKET_ASSIGNED, "status_ticket_assigned"),
    (ev.DISPATCHER, ev.TICKET_UNASSIGNED, "status_ticket_unassigned"),
    (ev.AGENT_DESK, ev.TICKET_ACCEPTED, "status_ticket_accepted"),
    (ev.AGENT_DESK, ev.TICKET_STATUS_CHANGED, "status_ticket_status_changed"),
    (ev.AGENT_DESK, ev.TICKET_RESOLVED, "status_ticket_resolved"),
    (ev.AGENT_DESK, ev.TICKET_REOPENED, "status_ticket_reopened"),
    (ev.SLA_WATCHER, ev.SLA_CLOCK_CHANGED, "status_sla_clock_changed"),
    (ev.DISPATCHER, ev.TICKET_ATTACHED, "status_ticket_attached"),
)


class StatusProjection:
    """Consumed events → the customer's view of each ticket (handler names are queue names)."""

    def __init__(self, store: StatusStore, settings: Settings):
        self.store = store
        self.settings = settings

    def subscribe(self, ctx: ServiceContext) -> None:
        for source, event_type, handler_name in PROJECTED:
            ctx.consumer.subscribe(source, event_type, handler_name, self.apply)

    def contact_hashes(self, event: ev.Envelope) -> list[str]:
        customer = getattr(event, "customer", None)
        return customer_input.contact_hashes(self.settings.link_secret, customer, self.settings.phone_region)

    async def apply(self, event: ev.Envelope) -> None:
        assert event.ticket_id is not None
        if status_view.ignores(event):
            return
        hashes = self.contact_hashes(event)
        if isinstance(event, ev.TicketAttached):  # the open ticket first: the contact's link leads there
            await self.store.change(event.into_ticket_id,
                                    lambda view: status_view.apply_attachment(view, event, contact_hashes=hashes))
        before, after = await self.store.change(event.ticket_id,
                                                lambda view: status_view.apply(view, event, contact_hashes=hashes))
        if before != after:
            log.info("status_view_updated", event_type=type(event).__name__, status=status_view.customer_status(after))


# --- live updates ----------------------------------------------------------------------------------

@dataclass(eq=False)
class Stream:
    ticket_id: str
    lang: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False
    watched_at: float = 0.0  # loop time of the last mark of its ticket as watched


class LiveStatus:
    """This replica's open status streams, woken by the store's change notifications."""

    def __init__(self, store: StatusStore):
        self.store = store
        self._by_ticket: dict[str, set[Stream]] = {}

    def count(self, ticket_id: str) -> int:
        return len(self._by_ticket.get(ticket_id, ()))

    def add(self, stream: Stream) -> None:
        self._by_ticket.setdefault(stream.ticket_id, set()).add(stream)

    def discard(self, stream: Stream) -> None:
        streams = self._by_ticket.get(stream.ticket_id)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self._by_ticket[stream.ticket_id]

    def changed(self, ticket_id: str) -> None:
        for stream in self._by_ticket.get(ticket_id, ()):
            stream.wake.set()

    def _wake_all(self) -> None:
        for streams in self._by_ticket.values():
            for stream in streams:
                stream.wake.set()

    async def close_all(self, _app: web.Application | None = None) -> None:
        """Server shutting down: end every stream (browsers reconnect to another replica)."""
        for streams in list(self._by_ticket.values()):
            for stream in streams:
                stream.closing = True
                stream.wake.set()

    async def listen(self) -> None:
        """Follow the change channel for as long as the service runs, reconnecting on failure."""
        while True:
            try:
                async with self.store.client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANGES_CHANNEL)
                    self._wake_all()  # whatever changed while we were not listening
                    while True:
                        message = await pubsub.get_message(timeout=LISTENER_POLL_SECONDS)
                        if message is not None and message.get("type") == "message":
                            self.changed(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away: pages keep their last view meanwhile
                log.warning("status_listener_lost", error=repr(exc))
                await asyncio.sleep(LISTENER_RETRY_SECONDS)

    async def run(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: the listener lives as long as the app."""
        task = asyncio.create_task(self.listen(), name="status-listener")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- events owed to the broker -------------------------------------------------------------------

class Outbox:
    """Publishes stored replies and survey answers, at once and, if that failed, by a sweep."""

    def __init__(self, store: StatusStore, ctx: ServiceContext, clock: Callable[[], datetime] = utc_now):
        self.store = store
        self.ctx = ctx
        self.clock = clock

    async def deliver(self, pending: Pending) -> None:
        """Publish (confirmed) unless already done; BrokerUnavailable if the broker does not confirm."""
        if pending.published:
            return
        body = pending.body
        with bound_event_context(trace_id=body["trace_id"], ticket_id=body["ticket_id"], event_id=body["event_id"]):
            await publish_confirmed(self.ctx.publisher, pending.event_type, body)
            await self.store.mark_published(pending.key)
            log.info("customer_event_published", event_type=pending.event_type)

    async def sweep(self, now: datetime | None = None) -> int:
        """Publish what requests left unconfirmed (older than the grace); the number published."""
        done = 0
        cutoff = (now or self.clock()) - timedelta(seconds=OUTBOX_GRACE_SECONDS)
        for key in await self.store.overdue_pending(cutoff):
            pending = await self.store.pending(key)
            if pending is None or pending.published:
                await self.store.forget_pending(key)
                continue
            await self.deliver(pending)
            done += 1
        return done

    async def run(self, app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(OUTBOX_SWEEP_SECONDS)
                try:
                    await self.sweep()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                    log.warning("customer_outbox_sweep_failed", error=repr(exc))

        task = asyncio.create_task(loop(), name="customer-outbox")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- pages -------------------------------------------------------------------------------------------

class StatusPages:
    def __init__(self, settings: Settings, store: StatusStore, live: LiveStatus, outbox: Outbox, renderer: Renderer,
                 agent_names: dict[str, str], clock: Callable[[], datetime] = utc_now):
        self.settings = settings
        self.store = store
        self.live = live
        self.outbox = outbox
        self.renderer = renderer
        self.agent_names = agent_names
        self.clock = clock
        self._assets = {name: (STATIC_DIR / name).read_bytes() for name in ASSETS}

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/status", self.lookup_page)
        app.router.add_post("/api/v1/status/lookup", self.lookup)
        app.router.add_get("/status/{token}", self.page)
        app.router.add_get("/status/{token}/view", self.view_json)
        app.router.add_get("/status/{token}/events", self.events)
        app.router.add_post("/status/{token}/reply", self.reply)
        app.router.add_get("/customer/{asset}", self.asset)

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def lang(request: web.Request) -> str:
        return validation.pick_language(request.query.get("lang"), request.headers.get("Accept-Language"))

    def link(self, request: web.Request) -> Link:
        try:
            return customer_links.read_token(self.settings.link_secret, request.match_info["token"], "status",
                                             now=self.clock())
        except LinkInvalid as exc:
            raise link_refusal(exc) from None

    async def shown_view(self, link: Link) -> StatusView:
        """The ticket's view (the open ticket's, for a contact folded into it); a placeholder
        while a fresh link's ticket is still being projected."""
        view = await self.store.view(link.ticket_id)
        if view is not None and view.attached_to:
            view = await self.store.view(view.attached_to) or view
        if view is not None:
            return view
        issued_at = datetime.fromtimestamp(link.expires_at - customer_links.STATUS_TTL_SECONDS, timezone.utc)
        if self.clock() - issued_at <= REGISTERING_GRACE:
            return status_view.new_view(link.ticket_id)
        raise CustomerPage(404, "ticket_gone", lookup_link=True)

    def public(self, view: StatusView, lang: str) -> dict[str, Any]:
        return status_view.public(view, lang=lang, agent_names=self.agent_names, now=self.clock())

    def client_address(self, request: web.Request) -> str:
        header = self.settings.client_ip_header
        if header:
            # The proxy appends the address it saw: the last entry is the one nobody can forge.
            forwarded = [part.strip() for part in request.headers.get(header, "").split(",") if part.strip()]
            if forwarded:
                return forwarded[-1]
        return request.remote or "unknown"

    def api_link(self, request: web.Request) -> Link:
        """``link`` for the JSON endpoints: a refusal is the API's JSON error."""
        try:
            return self.link(request)
        except CustomerPage as refusal:
            raise api_error(refusal) from None

    # -- lookup -------------------------------------------------------------------------------

    async def lookup_page(self, request: web.Request) -> web.Response:
        return self.renderer.page("status_lookup.html", self.lang(request), error=None, ticket="")

    async def lookup(self, request: web.Request) -> web.Response:
        lang = self.lang(request)
        data = await read_fields(request)
        found = customer_input.lookup(data, secret=self.settings.link_secret, region=self.settings.phone_region)
        address = self.client_address(request)
        client = natural_key_hash(address)[:12]  # logs tell clients apart without naming them
        limits = [Limit("lookup_ip", address, *LOOKUP_LIMITS[0][1:])]
        if found.ticket_id:
            limits.append(Limit("lookup_ticket", found.ticket_id, *LOOKUP_LIMITS[1][1:]))
        wait = await self.store.count_attempt(*limits)
        if wait:
            log.warning("status_lookup_limited", client=client)
            return self._lookup_failed(request, lang, 429, "lookup_limited", data, {"Retry-After": str(wait)})
        view = await self.store.view(found.ticket_id) if found.ticket_id else None
        if not self._matches(view, found.contact_hash):
            log.info("status_lookup_refused", client=client)
            return self._lookup_failed(request, lang, 404, "lookup_failed", data)
        assert view is not None
        token = customer_links.make_token(self.settings.link_secret, view.ticket_id, "status", now=self.clock())
        with bound_event_context(trace_id=view.trace_id or "", ticket_id=view.ticket_id):
            log.info("status_lookup_matched", client=client)
        raise web.HTTPSeeOther(f"{customer_links.PATHS['status']}{token}?lang={lang}",
                               headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    @staticmethod
    def _matches(view: StatusView | None, contact_hash: str | None) -> bool:
        # Compare against every stored hash, found or not, so a hit takes as long as a miss.
        probe = contact_hash or "-"
        hits = [hmac.compare_digest(probe, known) for known in (view.contacts if view else ())]
        return bool(view and view.known and contact_hash and any(hits))

    def _lookup_failed(self, request: web.Request, lang: str, status: int, text: str, data: Mapping[str, Any],
                       headers: Mapping[str, str] | None = None) -> web.Response:
        if wants_json(request):
            return json_response({"error": {"code": text, "message": customer_texts.TEXTS["en"][text]}},
                                 status=status, headers=dict(headers or {}))
        ticket = data.get("ticket") if isinstance(data.get("ticket"), str) else ""
        return self.renderer.page("status_lookup.html", lang, status=status, headers=headers, error=text,
                                  ticket=ticket[:customer_input.TICKET_INPUT_MAX_CHARS])

    # -- the page -----------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        lang = self.lang(request)
        try:
            link = self.link(request)
            view = await self.shown_view(link)
        except CustomerPage as refusal:
            return self.renderer.message(lang, refusal)
        if view.ticket_id != link.ticket_id:  # folded into the open ticket: its own link, from here on
            token = customer_links.make_token(self.settings.link_secret, view.ticket_id, "status", now=self.clock())
            raise web.HTTPSeeOther(f"{customer_links.PATHS['status']}{token}?lang={lang}",
                                   headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
        return self.renderer.page("status.html", lang, view=self.public(view, lang), reply_path=f"{request.path}/reply",
                                  client_message_id=validation.client_message_id(ev.new_id()),
                                  notice=request.query.get("notice") if request.query.get("notice") in
                                  ("reply_sent",) else None)

    async def view_json(self, request: web.Request) -> web.Response:
        link = self.api_link(request)
        try:
            view = await self.shown_view(link)
        except CustomerPage as refusal:
            raise api_error(refusal) from None
        return json_response(self.public(view, self.lang(request)), headers={"Cache-Control": "no-store"})

    async def events(self, request: web.Request) -> web.StreamResponse:
        lang = self.lang(request)
        link = self.api_link(request)
        try:
            shown = await self.shown_view(link)
        except CustomerPage as refusal:
            raise api_error(refusal) from None
        if self.live.count(shown.ticket_id) >= STREAMS_PER_TICKET:
            raise ApiError(429, "too_many_streams", "too many open pages for this ticket")
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no", "Referrer-Policy": "no-referrer"})
        await response.prepare(request)
        stream = Stream(shown.ticket_id, lang)
        self.live.add(stream)
        try:
            await self._watch(stream)  # before the first read: no change after it goes untold
            await self._send(response, stream, link)
            while not stream.closing:
                try:
                    await asyncio.wait_for(stream.wake.wait(), STREAM_HEARTBEAT_SECONDS)
                except asyncio.TimeoutError:
                    await response.write(b": keep-alive\n\n")  # also finds browsers that left
                    await self._watch(stream, only_if_due=True)
                    continue
                stream.wake.clear()
                if not stream.closing:
                    await self._watch(stream, only_if_due=True)
                    await self._send(response, stream, link)
        except (ConnectionError, RuntimeError):
            pass  # the browser left; EventSource reconnects if it still wants to
        except CustomerPage:
            pass  # the view expired under an open page
        except Exception as exc:  # noqa: BLE001 - the response is under way: end it, the browser reconnects
            if not is_transient(exc):
                raise
            log.warning("status_stream_ended", error=repr(exc))
        finally:
            self.live.discard(stream)
        return response

    async def _watch(self, stream: Stream, *, only_if_due: bool = False) -> None:
        now = asyncio.get_running_loop().time()
        if only_if_due and now - stream.watched_at < STREAM_HEARTBEAT_SECONDS:
            return
        await self.store.watch(stream.ticket_id)
        stream.watched_at = now

    async def _send(self, response: web.StreamResponse, stream: Stream, link: Link) -> None:
        view = await self.shown_view(link)
        if view.ticket_id != stream.ticket_id:  # folded into the open ticket meanwhile: follow that one
            self.live.discard(stream)
            stream.ticket_id = view.ticket_id
            self.live.add(stream)
            await self._watch(stream)
            stream.wake.set()  # read again now that its changes are told: none missed in between
        data = json.dumps(self.public(view, stream.lang), ensure_ascii=False)
        await response.write(f"event: view\ndata: {data}\n\n".encode())

    # -- replies ------------------------------------------------------------------------------

    async def reply(self, request: web.Request) -> web.Response:
        lang = self.lang(request)
        as_json = wants_json(request)
        try:
            link = self.link(request)
            data = await read_fields(request)
            try:
                reply = customer_input.reply(data)
            except customer_input.InvalidInput as exc:
                raise self._invalid_reply(exc, as_json) from None
            message_id = await self._accept_reply(link, reply)
        except BrokerUnavailable:
            if as_json:
                raise  # the API's 503; the page's script says so and keeps the draft
            log.warning("status_page_reply_unconfirmed")  # stored: the outbox publishes it
            return self.renderer.message(lang, CustomerPage(503, "unavailable"), back=request.path.removesuffix("/reply"))
        except CustomerPage as refusal:
            if as_json:
                raise api_error(refusal) from None
            return self.renderer.message(lang, refusal, back=request.path.removesuffix("/reply"))
        if as_json:
            return json_response({"ticket_id": link.ticket_id, "message_id": message_id}, status=202)
        raise web.HTTPSeeOther(f"{customer_links.PATHS['status']}{request.match_info['token']}?lang={lang}"
                               f"&notice=reply_sent", headers={"Cache-Control": "no-store"})

    @staticmethod
    def _invalid_reply(exc: customer_input.InvalidInput, as_json: bool) -> Exception:
        if as_json:
            return ApiError(400, exc.code, exc.message)
        text = {"text_too_long": "reply_too_long", "empty_text": "reply_empty"}.get(exc.code, "reply_failed")
        return CustomerPage(400, text)

    async def _accept_reply(self, link: Link, reply: customer_input.Reply) -> str:
        view = await self.shown_view(link)
        refusal = status_view.reply_refusal(view, self.clock())
        if refusal:
            raise CustomerPage(409, refusal)
        key = self.store.reply_key(view.ticket_id, reply.client_message_id)
        pending = await self.store.pending(key)
        if pending is None:
            if await self.store.count_attempt(Limit("reply", view.ticket_id, *REPLY_LIMIT[1:])):
                raise CustomerPage(429, "reply_limited")
            body = customer_events.reply_event(view, reply, now=self.clock())
            pending, _ = await self.store.add_pending(key, ev.MESSAGE_RECEIVED, body, ttl=REPLY_RECORD_TTL_SECONDS,
                                                      now=self.clock())
        await self.outbox.deliver(pending)
        # Shown at once; consuming our own event later changes nothing (same message id).
        event = ev.parse_event(ev.INTAKE_CHAT, ev.MESSAGE_RECEIVED, pending.body)
        await self.store.change(view.ticket_id, lambda v: status_view.apply(v, event))
        with bound_event_context(trace_id=event.trace_id, ticket_id=view.ticket_id):
            log.info("status_page_reply_received", channel=view.channel)
        return pending.body["message_id"]

    # -- assets -------------------------------------------------------------------------------

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["asset"]
        if name not in self._assets:
            raise ApiError(404, "not_found", "no such file")
        return web.Response(body=self._assets[name], content_type=ASSETS[name], charset="utf-8",
                            headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"})
