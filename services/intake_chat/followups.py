"""Mail after the chat: agent replies the customer never received, and the transcript on request.

Missed replies. Appending an agent reply to the transcript also schedules, ``delay`` seconds
later, a look at the ticket (``missed`` zset, same Lua script). A widget confirms what it holds
(``received`` frames and ``hello.since``), raising the ticket's ``delivered`` position. When
the look is due, one replica claims it (the score moves a lease ahead, so a replica that dies
mid-way is covered by another), takes the agent replies after ``max(delivered, emailed)`` up to
the newest, and publishes one ``chat_reply_missed`` for all of them — only if the customer gave
an address — then raises ``emailed``. The event id is stable per (ticket, position): a look
repeated after a crash between publish and ``emailed`` is the same event, and the notifier
sends it once. A reply that arrives during the look gets a look of its own.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Callable

from shared import events as ev
from shared.aio_service import publish_confirmed
from shared.amqp import EventPublisher
from shared.logging import bound_event_context, get_logger

from services.intake_chat import conversation
from services.intake_chat.store import ChatStore
from services.intake_chat.tasks import stoppable_sleep

log = get_logger(__name__)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class MissedReplies:
    def __init__(self, store: ChatStore, publisher: EventPublisher, *, delay_seconds: float,
                 clock: Callable[[], datetime] = _utcnow):
        self.store = store
        self.publisher = publisher
        self.delay_seconds = delay_seconds
        self.clock = clock

    def look_at(self) -> float:
        """When a reply appended now is looked at."""
        return self.clock().timestamp() + self.delay_seconds

    async def sweep_once(self) -> int:
        """Look at every due ticket; returns how many mails were asked for."""
        now = self.clock()
        mailed = 0
        for ticket_id in await self.store.claim_missed(now.timestamp()):
            with bound_event_context(ticket_id=ticket_id):
                up_to = await self._look(ticket_id, now)
                mailed += up_to > 0
        return mailed

    async def _look(self, ticket_id: str, now: datetime) -> int:
        state = await self.store.ticket_state(ticket_id)
        visitor_id = await self.store.visitor_of_ticket(ticket_id)
        replies = conversation.unreceived_replies(await self.store.transcript(ticket_id),
                                                  after=max(state.delivered, state.emailed), up_to=state.last_agent)
        published = 0
        if replies and visitor_id:
            visitor = await self.store.visitor(visitor_id)
            if not visitor.profile.email:
                log.info("chat_reply_not_mailed", reason="no_address", replies=len(replies))
            else:
                trace_id = (visitor.trace_id if visitor.ticket_id == ticket_id else visitor.last_trace_id) or ev.new_id()
                body = conversation.reply_missed_event(
                    ticket_id=ticket_id, trace_id=trace_id, visitor_id=visitor_id, profile=visitor.profile,
                    subject=state.subject, replies=replies, now=now)
                await publish_confirmed(self.publisher, ev.CHAT_REPLY_MISSED, body)
                await self.store.mark_emailed(ticket_id, body["up_to_seq"])
                published = body["up_to_seq"]
                log.info("chat_reply_missed", replies=len(replies), visitor=conversation.visitor_ref(visitor_id))
        await self.store.finish_missed(ticket_id, state.last_agent, now.timestamp() + self.delay_seconds)
        return published

    async def run(self, interval: float) -> None:
        """Sweep until cancelled; a failed sweep (Redis or the broker away) is tried again next time."""
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - claimed looks come back after their lease
                log.warning("missed_reply_sweep_failed", error=repr(exc))
            await stoppable_sleep(interval)
