"""The satisfaction survey a resolution mail links to: ``GET /csat/{token}`` shows a 1–5 score
and a comment box, ``POST /csat/{token}`` records the answer.

One answer per ticket: the answer is stored with NX (atomic across replicas) before it is
published, and ``csat_submitted`` has one event id per ticket. A second answer, from another
tab at the same moment or days later, gets a 409 page showing the first. The stored answer is
the commitment: if the broker does not confirm, the customer is still thanked and the outbox
sweep publishes it. Only tickets resolved as ``solved`` are surveyed, so a reopened, spam,
merged or auto-closed ticket has no survey to answer.
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from aiohttp import web

from shared import customer_links
from shared import events as ev
from shared.aio_service import BrokerUnavailable
from shared.customer_links import Link, LinkInvalid
from shared.logging import bound_event_context, get_logger

from services.intake_chat import customer_events, customer_input, status_view
from services.intake_chat.config import Settings
from services.intake_chat.status import CustomerPage, Outbox, Renderer, link_refusal, read_fields, utc_now
from services.intake_chat.status_store import CSAT_RECORD_TTL_SECONDS, Pending, StatusStore
from services.intake_chat.validation import pick_language

log = get_logger(__name__)


class SurveyPages:
    def __init__(self, settings: Settings, store: StatusStore, outbox: Outbox, renderer: Renderer,
                 clock: Callable[[], datetime] = utc_now):
        self.settings = settings
        self.store = store
        self.outbox = outbox
        self.renderer = renderer
        self.clock = clock

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/csat/{token}", self.form)
        app.router.add_post("/csat/{token}", self.submit)

    @staticmethod
    def lang(request: web.Request) -> str:
        return pick_language(request.query.get("lang"), request.headers.get("Accept-Language"))

    def link(self, request: web.Request) -> Link:
        try:
            return customer_links.read_token(self.settings.link_secret, request.match_info["token"], "csat",
                                             now=self.clock())
        except LinkInvalid as exc:
            raise link_refusal(exc) from None

    async def _answered(self, ticket_id: str) -> Pending | None:
        return await self.store.pending(self.store.csat_key(ticket_id))

    def _thanks(self, lang: str, pending: Pending, *, status: int = 200, already: bool = False) -> web.Response:
        return self.renderer.page("csat.html", lang, status=status, state="already" if already else "thanks",
                                  ticket_id=pending.body["ticket_id"], score=pending.body["score"], error=None,
                                  comment="")

    async def form(self, request: web.Request) -> web.Response:
        lang = self.lang(request)
        try:
            link = self.link(request)
            answered = await self._answered(link.ticket_id)
            if answered is not None:
                return self._thanks(lang, answered)
            refusal = status_view.survey_refusal(await self.store.view(link.ticket_id))
            if refusal:
                raise CustomerPage(404, refusal)
        except CustomerPage as refusal:
            return self.renderer.message(lang, refusal)
        return self.renderer.page("csat.html", lang, state="form", ticket_id=link.ticket_id, score=None, error=None,
                                  comment="")

    async def submit(self, request: web.Request) -> web.Response:
        lang = self.lang(request)
        data = await read_fields(request)
        try:
            link = self.link(request)
            answered = await self._answered(link.ticket_id)
            if answered is not None:
                return self._thanks(lang, answered, status=409, already=True)
            view = await self.store.view(link.ticket_id)
            refusal = status_view.survey_refusal(view)
            if refusal:
                raise CustomerPage(404, refusal)
            assert view is not None
        except CustomerPage as refusal:
            return self.renderer.message(lang, refusal)
        try:
            answer = customer_input.survey_answer(data)
        except customer_input.InvalidInput as exc:
            comment = data.get("comment") if isinstance(data.get("comment"), str) else ""
            return self.renderer.page("csat.html", lang, status=400, state="form", ticket_id=link.ticket_id,
                                      score=None, error=exc.code, comment=comment[:customer_input.COMMENT_MAX_CHARS])
        body = customer_events.survey_event(view, answer, now=self.clock())
        answered, created = await self.store.add_pending(self.store.csat_key(view.ticket_id), ev.CSAT_SUBMITTED, body,
                                                         ttl=CSAT_RECORD_TTL_SECONDS, now=self.clock())
        if not created:  # another tab or replica answered a moment earlier
            return self._thanks(lang, answered, status=409, already=True)
        with bound_event_context(trace_id=body["trace_id"], ticket_id=view.ticket_id):
            try:
                await self.outbox.deliver(answered)
            except BrokerUnavailable:
                # Stored, so the answer counts: the outbox sweep publishes it. Only its creator
                # publishes at once, so two tabs never send it twice.
                log.warning("csat_unconfirmed")
            log.info("csat_recorded", score=answer.score, agent_id=view.resolved_by)
        raise web.HTTPSeeOther(f"{request.path}?lang={lang}", headers={"Cache-Control": "no-store"})
