"""intake_phone: the Generic CTI webhook. Calls become tickets by their line's policy.

``POST /api/v1/cti/{token}`` (JSON or form) → check the token → validate → blocked caller's
``newCall``? answer ``{"action":"reject","reason":"busy"}`` → merge the event into the call's
state and settle it (services.intake_phone.intake: missed → callback ticket, voicemail →
ticket with the transcript, answered + wrap-up → ticket resolved or open, repeated missed calls
folded) → 200 ``{}`` once the broker confirmed. A failed publish answers 503: the PBX retries
the same event, the state merge changes nothing, and the same ticket is published again with
the same ``event_id``.

Errors are JSON ``{"error": {"code", "message"}}``: 401 ``invalid_token``, 400
``invalid_json`` / ``invalid_event`` / ``missing_call_id`` / ``invalid_direction`` /
``invalid_number`` / ``invalid_field``, 413 ``request_too_large``, 415
``unsupported_media_type``; nothing is stored for any of them.
"""
from __future__ import annotations

import hmac
import time
from datetime import datetime, timezone
from typing import Any, Callable

from aiohttp import web

from shared.aio_service import AioService, ApiError, ServiceContext, json_response, read_json
from shared.intake_ledger import AsyncIntakeLedger
from shared.logging import get_logger
from shared.reloading import DEFAULT_CHECK_INTERVAL, ReloadingFile

from services.intake_phone.config import Settings
from services.intake_phone.cti import CtiError, parse_cti
from services.intake_phone.intake import SERVICE_NAME, CallIntake
from services.intake_phone.policy import PhonePolicy, parse_policy_text
from services.intake_phone.store import PhoneStore

log = get_logger(__name__)

# A CTI event is a handful of short fields; a voicemail transcript is the one long one.
CTI_MAX_BODY_BYTES = 256 * 1024
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def _read_fields(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        return await read_json(request)
    if request.content_type in _FORM_TYPES:
        try:
            form = await request.post()
        except ValueError:
            raise ApiError(400, "invalid_form", "the form body cannot be read") from None
        return {key: form.getall(key) for key in set(form.keys())}
    raise ApiError(415, "unsupported_media_type", "send application/json or a form")


class PhoneWebhook:
    def __init__(self, settings: Settings, intake: CallIntake):
        self.settings = settings
        self.intake = intake
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
        now = datetime.now(timezone.utc)
        settled = await self.intake.handle([(event, now)], now=now)
        log.info("cti_event", cti_event=event.kind, call_id=event.call_id, result=settled.result)
        return json_response(settled.answer)


def policy_source(settings: Settings, check_seconds: float) -> Callable[[], PhonePolicy]:
    """The policy file, re-read when it changes (a broken edit keeps the version in use)."""
    path, region = settings.calls.policy_file, settings.default_region
    reloading = ReloadingFile(path, lambda text: parse_policy_text(text, default_region=region,
                                                                   origin=f"phone policy {path}"),
                              now=time.monotonic(), interval=check_seconds, name="phone policy")
    return lambda: reloading.current(time.monotonic())


def build_app(settings: Settings, policy_check_seconds: float) -> Callable[[ServiceContext], web.Application]:
    def build(ctx: ServiceContext) -> web.Application:
        intake = CallIntake(PhoneStore(ctx.redis), AsyncIntakeLedger(ctx.redis, SERVICE_NAME), ctx.publisher,
                            policy_source(settings, policy_check_seconds), settings.blocked_numbers)
        webhook = PhoneWebhook(settings, intake)
        app = ctx.new_app(client_max_size=CTI_MAX_BODY_BYTES)
        app.router.add_post("/api/v1/cti/{token}", webhook.handle_cti)
        return app

    return build


def make_service(settings: Settings, *, policy_check_seconds: float = DEFAULT_CHECK_INTERVAL) -> AioService:
    """``policy_check_seconds``: how often the policy file is looked at (a stat; parsed only when changed)."""
    return AioService(SERVICE_NAME, settings.common, build_app(settings, policy_check_seconds),
                      host=settings.host, port=settings.port)
