"""Wires the customer pages (ticket status, lookup, survey) into intake_chat's app.

``install`` is the one call ``service.build_app`` makes: routes, the projection's consumers,
the live-update listener and the outbox sweep. The chat itself (page, widget, socket) is
``service.py``'s; the two share only the process, the brokers and the roster's names.
"""
from __future__ import annotations

from aiohttp import web

from shared.aio_service import ServiceContext
from shared.logging import get_logger

from services.intake_chat.config import Settings
from services.intake_chat.csat import SurveyPages
from services.intake_chat.status import LiveStatus, Outbox, Renderer, StatusPages, StatusProjection
from services.intake_chat.status_store import StatusStore

log = get_logger(__name__)

PAGES_KEY = web.AppKey("customer_pages", StatusPages)  # tests reach the outbox through it


def install(app: web.Application, ctx: ServiceContext, settings: Settings, agent_names: dict[str, str]) -> StatusPages:
    if settings.link_secret_is_dev_default:  # here: logging is configured by now
        log.warning("customer_link_secret_is_dev_default",
                    hint="set TM_CUSTOMER_LINK_SECRET (the notifier's value): anyone can forge status links")
    store = StatusStore(ctx.redis)
    live = LiveStatus(store)
    outbox = Outbox(store, ctx)
    renderer = Renderer()
    StatusProjection(store, settings).subscribe(ctx)
    pages = StatusPages(settings, store, live, outbox, renderer, agent_names)
    pages.routes(app)
    SurveyPages(settings, store, outbox, renderer).routes(app)
    app.cleanup_ctx.append(live.run)
    app.cleanup_ctx.append(outbox.run)
    app.on_shutdown.append(live.close_all)
    app[PAGES_KEY] = pages
    return pages
