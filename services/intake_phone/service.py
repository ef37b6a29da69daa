"""intake_phone: the Generic CTI webhook. Missed inbound calls become callback tickets.

``POST /api/v1/cti/{token}`` (JSON or form) → validate → blocked caller? answer ``reject`` →
merge the event into the call's state (Redis) → if the call is now missed and has a number,
claim a ticket for the call id and publish ``ticket_received`` → 200 ``{}`` once the broker
confirmed. A failed publish answers 503: the PBX retries the same event, the state merge
changes nothing, and the same ticket is published again with the same ``event_id``.
"""
from __future__ import annotations

import hmac
from datetime import datetime, timezone
from typing import Any, Callable

from aiohttp import web

from shared import events as ev
from shared.aio_service import (AioService, ApiError, ServiceContext, json_response, publish_confirmed,
                                read_json)
from shared.intake_ledger import AsyncIntakeLedger, stable_event_id
from shared.logging import bound_event_context, get_logger

from services.intake_phone import calls
from services.intake_phone.config import Settings
from services.intake_phone.cti import CtiError, parse_cti
from services.intake_phone.store import PhoneStore

log = get_logger(__name__)

SERVICE_NAME = ev.INTAKE_PHONE
CTI_MAX_BODY_BYTES = 16 * 1024  # a CTI event is a handful of short fields
LEDGER_KIND = "call"
REJECT_BUSY = {"action": "reject", "reason": "busy"}
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def _read_fields(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        return await read_json(request)
    if request.content_type in _FORM_TYPES:
        form = await request.post()
        return {key: form.getall(key) for key in set(form.keys())}
    raise ApiError(415, "unsupported_media_type", "send application/json or a form")


class PhoneIntake:
    def __init__(self, settings: Settings, store: PhoneStore, ledger: AsyncIntakeLedger, ctx: ServiceContext):
        self.settings = settings
        self.store = store
        self.ledger = ledger
        self.ctx = ctx
        self._token = settings.cti_token.encode()

    async def handle_cti(self, request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.match_info["token"].encode(), self._token):
            log.warning("cti_token_rejected", remote=request.remote)
            raise ApiError(401, "invalid_token", "the CTI token in the URL is not valid")
        fields = await _read_fields(request)
        try:
            event = parse_cti(fields, self.settings.default_region)
        except CtiError as exc:
            raise ApiError(400, exc.code, exc.message) from None
        if self._is_blocked(event):
            log.info("cti_caller_rejected", call_id=event.call_id, caller=event.from_number.value if event.from_number else "")
            return json_response(REJECT_BUSY)

        now = datetime.now(timezone.utc)
        state = await self.store.update_call(event.call_id, _transition(event, now))
        log.info("cti_event", cti_event=event.kind, call_id=event.call_id, direction=state.direction)
        if calls.needs_callback_ticket(state):
            await self._open_callback_ticket(state, now)
        elif calls.is_missed(state):
            log.info("missed_call_without_number", call_id=state.call_id, caller_kind=state.from_kind)
        return json_response({})

    def _is_blocked(self, event: calls.CallEvent) -> bool:
        number = event.from_number
        return (event.direction != "out" and number is not None and number.kind == "e164"
                and number.value in self.settings.blocked_numbers)

    async def _open_callback_ticket(self, state: calls.CallState, now: datetime) -> None:
        ticket_id, _created = await self.ledger.claim_ticket(LEDGER_KIND, state.call_id)
        with bound_event_context(trace_id=state.trace_id, ticket_id=ticket_id):
            if await self.ledger.is_published(ticket_id):
                return  # a repeated hangup (or a late event) of a call already ticketed
            body = ev.make_event(
                SERVICE_NAME, ev.TICKET_RECEIVED, now=now, trace_id=state.trace_id,
                event_id=stable_event_id(ev.TICKET_RECEIVED, ticket_id), ticket_id=ticket_id,
                **calls.callback_ticket_fields(state),
            )
            await publish_confirmed(self.ctx.publisher, ev.TICKET_RECEIVED, body)
            await self.ledger.mark_published(ticket_id)
            log.info("callback_ticket_opened", call_id=state.call_id, caller=state.from_number)


def _transition(event: calls.CallEvent, now: datetime) -> Callable[[calls.CallState | None], calls.CallState]:
    def transition(state: calls.CallState | None) -> calls.CallState:
        return calls.apply(state, event, now=now, trace_id=ev.new_id())

    return transition


def build_app(settings: Settings) -> Callable[[ServiceContext], web.Application]:
    def build(ctx: ServiceContext) -> web.Application:
        intake = PhoneIntake(settings, PhoneStore(ctx.redis), AsyncIntakeLedger(ctx.redis, SERVICE_NAME), ctx)
        app = ctx.new_app(client_max_size=CTI_MAX_BODY_BYTES)
        app.router.add_post("/api/v1/cti/{token}", intake.handle_cti)
        return app

    return build


def make_service(settings: Settings) -> AioService:
    return AioService(SERVICE_NAME, settings.common, build_app(settings), host=settings.host, port=settings.port)
