"""Events the customer pages publish (pure: no I/O, ``now`` passed in).

- A reply typed on the status page is the customer writing on that ticket: ``message_received``
  on ``intake_chat.events`` with the *ticket's* channel, so agent_desk files it under the
  ticket like any other customer message (and reopens a resolved one), and an agent's answer
  goes back the ticket's own way (mail for an email ticket). ``source.via = status_page`` says
  where it was typed. Its ids derive from the page's client message id: a resend is the same
  event for every consumer.
- A survey answer is ``csat_submitted`` with one event id per ticket, whatever the answer, so
  a ticket is rated once however often the broker or the customer repeats it.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from shared import events as ev
from shared.intake_ledger import stable_event_id

from services.intake_chat.customer_input import Reply, SurveyAnswer
from services.intake_chat.status_view import StatusView
from services.intake_chat.validation import STATUS_PAGE_MESSAGE_PREFIX

REPLY_MESSAGE_PREFIX = STATUS_PAGE_MESSAGE_PREFIX  # chat messages may not use it
VIA_STATUS_PAGE = "status_page"


def reply_message_id(client_message_id: str) -> str:
    return f"{REPLY_MESSAGE_PREFIX}{client_message_id}"


def _customer(view: StatusView) -> dict[str, Any]:
    return {"name": view.customer_name, "language": view.language}


def reply_event(view: StatusView, reply: Reply, *, now: datetime) -> dict[str, Any]:
    assert view.known and view.channel is not None, "a reply needs the ticket's ticket_received"
    message_id = reply_message_id(reply.client_message_id)
    return ev.make_event(
        ev.INTAKE_CHAT, ev.MESSAGE_RECEIVED, now=now, trace_id=view.trace_id or ev.new_id(),
        event_id=stable_event_id(ev.MESSAGE_RECEIVED, view.ticket_id, message_id), ticket_id=view.ticket_id,
        channel=view.channel, customer=_customer(view), text=reply.text, message_id=message_id, received_at=now,
        source={"via": VIA_STATUS_PAGE},
    )


def survey_event(view: StatusView, answer: SurveyAnswer, *, now: datetime) -> dict[str, Any]:
    assert view.channel is not None
    return ev.make_event(
        ev.INTAKE_CHAT, ev.CSAT_SUBMITTED, now=now, trace_id=view.trace_id or ev.new_id(),
        event_id=stable_event_id(ev.CSAT_SUBMITTED, view.ticket_id), ticket_id=view.ticket_id,
        score=answer.score, comment=answer.comment, channel=view.channel, agent_id=view.resolved_by,
    )
