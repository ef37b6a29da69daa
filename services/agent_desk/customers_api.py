"""The supervisors' API for customer profiles (``shared.customer_store``)::

    GET    /api/v1/customers?identifier=X          → the profile owning X (an email, a phone number,
                                                      ``kind:value``, or a profile id ``CU-12``)
    GET    /api/v1/customers/{id}                  → {customer, history}: the profile (a merged id
                                                      answers with its survivor) and its history
    PUT    /api/v1/customers/{id} {tier?, language?, name?}
                                                   → the directory attributes (null or "" clears one);
                                                      the dispatcher routes the next ticket by them
    POST   /api/v1/customers/{id}/merge {other}    → a person confirms two profiles are one customer
                                                      (the older survives); 409 for two company users
    DELETE /api/v1/customers/{id}/maybe/{other}    → a maybe-link is wrong: removed, never suggested again

Every route needs a supervisor (403 ``not_supervisor``). The store is blocking (it is the
dispatcher's and the CLI's too); requests call it from a worker thread.
"""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Callable

from aiohttp import web

from shared.aio_service import ApiError, json_response, read_json
from shared.customer_identity import (
    ATTRIBUTE_NORMALIZERS,
    Identifier,
    InvalidAttribute,
    InvalidIdentifier,
    MergeRefused,
    parse_lookup,
)
from shared.customer_store import CustomerStore, UnknownProfile
from shared.logging import get_logger

log = get_logger(__name__)


class CustomersApi:
    def __init__(self, store: CustomerStore, *, agent_key: Any, clock: Callable[[], datetime], region: str):
        self.store = store
        self._agent_key = agent_key
        self.clock = clock
        self.region = region

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/customers", self.find)
        app.router.add_get("/api/v1/customers/{customer_id}", self.get)
        app.router.add_put("/api/v1/customers/{customer_id}", self.update)
        app.router.add_post("/api/v1/customers/{customer_id}/merge", self.merge)
        app.router.add_delete("/api/v1/customers/{customer_id}/maybe/{other_id}", self.dismiss)

    def _supervisor(self, request: web.Request) -> str:
        agent = request[self._agent_key]
        if agent.role != "supervisor":
            raise ApiError(403, "not_supervisor", "only supervisors see and edit customer profiles")
        return agent.agent_id

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except UnknownProfile as exc:
            raise ApiError(404, "unknown_customer", f"no customer profile {exc.args[0]}") from None
        except MergeRefused as exc:
            raise ApiError(409, "merge_refused", str(exc)) from None

    async def _body(self, customer_id: str) -> dict[str, Any]:
        profile = await self._call(self.store.profile, customer_id)
        if profile is None:
            raise ApiError(404, "unknown_customer", f"no customer profile {customer_id}")
        history = await self._call(self.store.history, profile.profile_id, now=self.clock().timestamp())
        return {"customer": profile.as_dict(), "history": {
            "open_tickets": [{"ticket_id": t.ticket_id, "channel": t.channel, "last_activity": t.last_activity}
                             for t in history.open],
            "recent_tickets": history.recent_tickets, "recent_complaints": history.recent_complaints,
            "last_agent_id": history.last_agent_id}}

    async def find(self, request: web.Request) -> web.Response:
        self._supervisor(request)
        raw = request.query.get("identifier", "")
        if not raw.strip():
            raise ApiError(400, "invalid_identifier", "give ?identifier= (an email, a phone number, kind:value or CU-n)")
        try:
            found = parse_lookup(raw, self.region)
        except InvalidIdentifier as exc:
            raise ApiError(400, "invalid_identifier", str(exc)) from None
        if isinstance(found, Identifier):
            owner = await self._call(self.store.owner, found)
            if owner is None:
                carriers = await self._call(self.store.carriers, found)
                hint = f" (typed in by {', '.join(carriers)})" if carriers else ""
                raise ApiError(404, "unknown_customer", f"no profile has this {found.kind} verified{hint}")
            found = owner
        return json_response(await self._body(found))

    async def get(self, request: web.Request) -> web.Response:
        self._supervisor(request)
        return json_response(await self._body(request.match_info["customer_id"]))

    async def update(self, request: web.Request) -> web.Response:
        by = self._supervisor(request)
        data = await read_json(request)
        unknown = sorted(set(data) - set(ATTRIBUTE_NORMALIZERS))
        if unknown or not data:
            raise ApiError(400, "invalid_attributes", "give any of tier, language, name (null clears one)"
                           + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
        values: dict[str, str | None] = {}
        for name, value in data.items():
            if value is None or value == "":
                values[name] = None
                continue
            if not isinstance(value, str):
                raise ApiError(400, "invalid_attributes", f"{name} must be a string or null")
            try:
                values[name] = ATTRIBUTE_NORMALIZERS[name](value)
            except InvalidAttribute as exc:
                raise ApiError(400, "invalid_attributes", str(exc)) from None
        customer_id = request.match_info["customer_id"]
        profile = await self._call(self.store.update_attributes, customer_id, values, now=self.clock().timestamp())
        log.info("customer_attributes_set", customer_id=profile.profile_id, by=by, attributes=sorted(values))
        return json_response(await self._body(profile.profile_id))

    async def merge(self, request: web.Request) -> web.Response:
        by = self._supervisor(request)
        other = (await read_json(request)).get("other")
        if not isinstance(other, str) or not other.strip():
            raise ApiError(400, "invalid_other", "give {\"other\": \"CU-n\"}: the profile to merge with")
        survivor, absorbed = await self._call(self.store.merge, request.match_info["customer_id"], other.strip(),
                                              now=self.clock().timestamp(), by=by)
        log.info("customers_merged", customer_id=survivor, absorbed=absorbed, by=by)
        return json_response({"merged": absorbed, **await self._body(survivor)})

    async def dismiss(self, request: web.Request) -> web.Response:
        by = self._supervisor(request)
        customer_id, other = request.match_info["customer_id"], request.match_info["other_id"]
        if not await self._call(self.store.dismiss, customer_id, other, now=self.clock().timestamp(), by=by):
            raise ApiError(404, "no_maybe_link", f"{customer_id} and {other} are not linked as maybe")
        log.info("customer_maybe_dismissed", customer_id=customer_id, other=other, by=by)
        return json_response({"dismissed": True, "customer_id": customer_id, "other": other})
