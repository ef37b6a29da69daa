"""From call events to tickets: shared by the CTI webhook and the CDR import.

:meth:`CallIntake.handle` merges a call's events into its stored state (one transaction), then
settles the call: if its line's policy says it becomes a ticket, the call is linked to a
ticket and the ticket announced, each step idempotent so a retry (a PBX repeating a webhook,
an import run twice) finishes what a failure left and publishes nothing twice:

1. **link**: a missed call or voicemail from a number whose earlier missed call on the same
   line opened a callback ticket less than the line's fold window before folds into that
   ticket; anything else claims its own ticket number (shared.intake_ledger, keyed by call id).
2. **announce**: its own ticket → ``ticket_received`` (event id stable per ticket); a folded
   call → ``message_received`` on the earlier ticket (event id stable per call), which reopens
   it in the desk if it was resolved meanwhile. Only after the broker confirmed is the call
   marked announced and the fold pointed at the ticket.
3. a recording or transcript that arrives after the ticket went out → ``message_received``.

Two calls from one number settled at the same instant, before either ticket is published, may
each open a ticket (the fold is written only after a confirmed publish, so that nothing ever
folds into a ticket no consumer has seen): folding is what happens in the normal case, not a
lock.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Sequence

from shared import events as ev
from shared.aio_service import publish_confirmed
from shared.amqp import EventPublisher
from shared.intake_ledger import AsyncIntakeLedger, stable_event_id
from shared.logging import bound_event_context, get_logger

from services.intake_phone import calls
from services.intake_phone.calls import CallEvent, CallState
from services.intake_phone.policy import LinePolicy, PhonePolicy
from services.intake_phone.store import PhoneStore

log = get_logger(__name__)

SERVICE_NAME = ev.INTAKE_PHONE
LEDGER_KIND = "call"
REJECT_BUSY = {"action": "reject", "reason": "busy"}  # Zammad's answer to a blocked caller's newCall


@dataclass(frozen=True)
class Settled:
    """What handling the events did: ``result`` is one of ``opened``, ``folded``,
    ``voicemail_added``, ``already_ticketed``, ``no_ticket:<why>``, ``rejected``, ``blocked``."""

    result: str
    ticket_id: str | None = None
    response: dict | None = None  # the webhook's answer to the PBX
    kind: str | None = None       # callback / voicemail / call when the call has a ticket

    @property
    def answer(self) -> dict:
        return self.response if self.response is not None else {}


class CallIntake:
    def __init__(self, store: PhoneStore, ledger: AsyncIntakeLedger, publisher: EventPublisher,
                 policy: Callable[[], PhonePolicy], blocked_numbers: frozenset[str] = frozenset()):
        self.store = store
        self.ledger = ledger
        self.publisher = publisher
        self._policy = policy
        self.blocked_numbers = blocked_numbers

    def is_blocked(self, event: CallEvent) -> bool:
        number = event.from_number
        return (event.direction != "out" and number is not None and number.kind == "e164"
                and number.value in self.blocked_numbers)

    async def handle(self, events: Sequence[tuple[CallEvent, datetime]], *, now: datetime) -> Settled:
        """Merge ``(event, when)`` pairs of one call (in order) and settle it; ``now`` stamps
        the events' ``occurred_at``."""
        assert events and len({e.call_id for e, _ in events}) == 1, "events of exactly one call"
        first = events[0][0]
        if any(self.is_blocked(e) for e, _ in events):
            # Zammad answers a blocked caller's inbound newCall with reject; the PBX hangs up
            # ("busy"). Nothing is stored for a blocked caller, whatever the event.
            log.info("cti_caller_blocked", call_id=first.call_id, cti_event=first.kind,
                     caller=first.from_number.value if first.from_number else "")
            if first.kind == "newCall" and first.direction == "in":
                return Settled("rejected", response=dict(REJECT_BUSY))
            return Settled("blocked")
        trace_id = ev.new_id()

        def transition(state: CallState | None) -> CallState:
            for event, when in events:
                state = calls.apply(state, event, now=when, trace_id=trace_id)
            assert state is not None
            return state

        state = await self.store.update_call(first.call_id, transition)
        return await self.settle(state, now=now)

    async def settle(self, state: CallState, *, now: datetime) -> Settled:
        policy = self._policy()
        line = policy.line_for(queue=state.queue, to_number=state.to_number, context=state.context)
        kind, why = calls.ticket_kind(state, line)
        if kind is None:
            log.info("call_without_ticket", call_id=state.call_id, reason=why, line=line.name)
            return Settled(f"no_ticket:{why}", state.ticket_id or None)
        if not state.ticket_id:
            state = await self._link(state, kind, line)
        with bound_event_context(trace_id=state.ticket_trace_id, ticket_id=state.ticket_id):
            if calls.ANNOUNCED_TICKET not in state.announced:
                return await self._announce(state, kind, line, policy, now)
            if state.voicemail and state.has_voicemail_content and calls.ANNOUNCED_VOICEMAIL not in state.announced:
                fields = calls.voicemail_message_fields(state, line)
                await self._publish_message(state, fields, now)
                await self._mark(state, calls.ANNOUNCED_VOICEMAIL)
                log.info("voicemail_added_to_ticket", call_id=state.call_id, transcript=bool(state.transcript))
                return Settled("voicemail_added", state.ticket_id, kind=kind)
        return Settled("already_ticketed", state.ticket_id, kind=kind)

    def _fold_number(self, state: CallState, kind: str, line: LinePolicy) -> str | None:
        if kind in calls.FOLDABLE and line.fold_window_seconds > 0 and state.callable_back:
            return state.from_number
        return None

    async def _link(self, state: CallState, kind: str, line: LinePolicy) -> CallState:
        number = self._fold_number(state, kind, line)
        fold = await self.store.fold(line.name, number) if number else None
        at = calls.contact_time(state).timestamp()
        if fold is not None and abs(at - fold.last_at) <= line.fold_window_seconds:
            ticket_id, folded, trace_id = fold.ticket_id, True, fold.trace_id or state.trace_id
        else:
            ticket_id, _ = await self.ledger.claim_ticket(LEDGER_KIND, state.call_id)
            folded, trace_id = False, state.trace_id
        return await self.store.update_call(
            state.call_id, lambda s: calls.linked(s or state, ticket_id, folded=folded, ticket_trace_id=trace_id))

    async def _announce(self, state: CallState, kind: calls.TicketKind, line: LinePolicy, policy: PhonePolicy,
                        now: datetime) -> Settled:
        marks = [calls.ANNOUNCED_TICKET]
        if state.voicemail and state.has_voicemail_content:
            marks.append(calls.ANNOUNCED_VOICEMAIL)  # the ticket's own text carries it
        if state.folded:
            await self._publish_message(state, calls.folded_message_fields(state, kind, line), now)
            result = "folded"
        else:
            outcome, known = policy.wrap_up_outcome(state.wrap_up_code)
            if kind == "call" and not known:
                log.info("wrap_up_code_unknown", call_id=state.call_id, wrap_up_code=state.wrap_up_code[:64],
                         treated_as=outcome)
            body = ev.make_event(
                SERVICE_NAME, ev.TICKET_RECEIVED, now=now, trace_id=state.ticket_trace_id,
                event_id=stable_event_id(ev.TICKET_RECEIVED, state.ticket_id), ticket_id=state.ticket_id,
                **calls.ticket_fields(state, kind, line, outcome),
            )
            await publish_confirmed(self.publisher, ev.TICKET_RECEIVED, body)
            result = "opened"
        state = await self._mark(state, *marks)
        number = self._fold_number(state, kind, line)
        if number:
            await self.store.note_fold(line.name, number, ticket_id=state.ticket_id, trace_id=state.ticket_trace_id,
                                       at=calls.contact_time(state).timestamp(),
                                       window_seconds=line.fold_window_seconds, opened=not state.folded)
        log.info("call_ticketed", result=result, kind=kind, line=line.name, call_id=state.call_id,
                 caller=state.from_number)
        return Settled(result, state.ticket_id, kind=kind)

    async def _publish_message(self, state: CallState, fields: dict, now: datetime) -> None:
        body = ev.make_event(
            SERVICE_NAME, ev.MESSAGE_RECEIVED, now=now, trace_id=state.ticket_trace_id,
            event_id=stable_event_id(ev.MESSAGE_RECEIVED, state.ticket_id, fields["message_id"]),
            ticket_id=state.ticket_id, **fields,
        )
        await publish_confirmed(self.publisher, ev.MESSAGE_RECEIVED, body)

    async def _mark(self, state: CallState, *marks: str) -> CallState:
        return await self.store.update_call(state.call_id, lambda s: calls.with_announced(s or state, *marks))
