"""The satisfaction survey against real RabbitMQ and Redis: one answer per ticket, only for solved tickets."""
import asyncio
from datetime import timedelta

import aio_pika

from shared import events as ev
from shared.aio_service import BrokerUnavailable
from shared.intake_ledger import stable_event_id
from shared.testing.asyncio_helpers import wait_until
from shared.testing.plugin import AsyncEventListener

from services.intake_chat.tests.customer_fixtures import now, pages_app  # noqa: F401 - pages_app is a fixture

TICKET = "TM-10001"


async def get(app, path, **kwargs):
    async with app.http.get(path, allow_redirects=False, **kwargs) as resp:
        return resp.status, await resp.text(), resp.headers


async def answer(app, path, score, comment=""):
    async with app.http.post(path + "?lang=en", data={"score": str(score), "comment": comment},
                             allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp.headers


async def solved_ticket(app, ticket_id=TICKET, resolution="solved"):
    await app.stored_ticket(ticket_id)
    await app.resolved(ticket_id, resolution)
    await app.wait_view(ticket_id, lambda v: v["status"] == "resolved")


async def test_one_answer_per_ticket_published_with_the_resolver(pages_app, amqp_uri):
    await solved_ticket(pages_app)
    path = pages_app.csat_path(TICKET)
    status, html, _ = await get(pages_app, path, headers={"Accept-Language": "zh-CN"})
    assert status == 200 and "满意度调查" in html and html.count('type="radio" name="score"') == 5
    async with AsyncEventListener(amqp_uri, ev.INTAKE_CHAT, [ev.CSAT_SUBMITTED]) as bus:
        status, _, headers = await answer(pages_app, path, 4, "Quick <b>and</b> kind")
        assert status == 303 and headers["Location"] == f"{path}?lang=en"
        _, body = await bus.wait_for(lambda t, b: True)
        assert (body["ticket_id"], body["score"], body["comment"]) == (TICKET, 4, "Quick <b>and</b> kind")
        assert body["agent_id"] == "li.na" and body["channel"] == "email" and body["trace_id"] == "trace-customer-pages"
        assert body["event_id"] == stable_event_id(ev.CSAT_SUBMITTED, TICKET)

        status, html, _ = await answer(pages_app, path, 1, "changed my mind")
        assert status == 409 and "already answered" in html
        status, html, _ = await get(pages_app, f"{path}?lang=en")
        assert status == 200 and "Thank you" in html and '<span class="tm-csat-score">4</span>' in html

        await solved_ticket(pages_app, "TM-10002")  # sentinel: its answer follows any stray second one
        await answer(pages_app, pages_app.csat_path("TM-10002"), 5)
        await bus.wait_for(lambda t, b: b["ticket_id"] == "TM-10002")
        assert [b["ticket_id"] for _, b in bus.events] == [TICKET, "TM-10002"]


async def test_two_answers_at_the_same_moment_record_one(pages_app, amqp_uri):
    await solved_ticket(pages_app)
    path = pages_app.csat_path(TICKET)
    async with AsyncEventListener(amqp_uri, ev.INTAKE_CHAT, [ev.CSAT_SUBMITTED]) as bus:
        results = await asyncio.gather(*(answer(pages_app, path, score) for score in (1, 2, 3, 4, 5)))
        assert sorted(status for status, _, _ in results) == [303, 409, 409, 409, 409]
        await solved_ticket(pages_app, "TM-10002")
        await answer(pages_app, pages_app.csat_path("TM-10002"), 5)
        await bus.wait_for(lambda t, b: b["ticket_id"] == "TM-10002")
        assert len([b for _, b in bus.events if b["ticket_id"] == TICKET]) == 1


async def test_no_survey_for_open_spam_merged_or_auto_closed_tickets(pages_app, amqp_uri, redis_client):
    await pages_app.stored_ticket(TICKET)
    status, html, _ = await get(pages_app, pages_app.csat_path(TICKET) + "?lang=en")
    assert status == 404 and "not resolved yet" in html and 'name="score"' not in html
    for n, resolution in enumerate(("spam", "merged", "auto_closed"), start=2):
        ticket = f"TM-1000{n}"
        await solved_ticket(pages_app, ticket, resolution)
        status, html, _ = await get(pages_app, pages_app.csat_path(ticket) + "?lang=en")
        assert status == 404 and "takes no survey" in html
        status, _, _ = await answer(pages_app, pages_app.csat_path(ticket), 5)
        assert status == 404
    status, _, _ = await get(pages_app, pages_app.csat_path("TM-99999"))
    assert status == 404
    assert list(redis_client.scan_iter("tm:intake_chat:csat:*")) == []


async def test_an_invalid_answer_is_shown_again_with_the_reason(pages_app, redis_client):
    await solved_ticket(pages_app)
    path = pages_app.csat_path(TICKET)
    status, html, _ = await answer(pages_app, path, 9, "keep <this>")
    assert status == 400 and "choose a score from 1 to 5" in html and "keep &lt;this&gt;" in html
    status, html, _ = await answer(pages_app, path, 3, "字" * 2001)
    assert status == 400 and "at most 2000 characters" in html
    assert list(redis_client.scan_iter("tm:intake_chat:csat:*")) == []


async def test_an_answer_the_broker_did_not_confirm_counts_and_the_sweep_publishes_it(pages_app, amqp_uri):
    await solved_ticket(pages_app)
    path = pages_app.csat_path(TICKET)
    async with await aio_pika.connect(amqp_uri) as admin:  # the broker refuses our publishes
        channel = await admin.channel()
        await channel.exchange_delete("intake_chat.events")
        await channel.declare_exchange("intake_chat.events", aio_pika.ExchangeType.TOPIC, durable=True, internal=True)
    status, _, _ = await answer(pages_app, path, 2, "slow")
    assert status == 303  # stored: the customer is thanked, the outbox owes the broker
    status, html, _ = await get(pages_app, f"{path}?lang=en")
    assert status == 200 and "Thank you" in html and '<span class="tm-csat-score">2</span>' in html
    async with await aio_pika.connect(amqp_uri) as admin:
        channel = await admin.channel()
        await channel.exchange_delete("intake_chat.events")
    outbox = pages_app.pages.outbox
    later = now() + timedelta(minutes=1)

    async def swept():
        try:
            return await outbox.sweep(now=later)
        except BrokerUnavailable:  # the publisher replaces the channel the refusal closed
            return 0

    async with AsyncEventListener(amqp_uri, ev.INTAKE_CHAT, [ev.CSAT_SUBMITTED]) as bus:
        assert await outbox.sweep() == 0  # too fresh: the request may still be publishing it
        assert await wait_until(swept, 10, "the stored answer published") == 1
        _, body = await bus.wait_for(lambda t, b: True)
        assert (body["score"], body["comment"]) == (2, "slow")
        assert await outbox.sweep(now=later) == 0
    status, _, _ = await answer(pages_app, path, 5)
    assert status == 409
