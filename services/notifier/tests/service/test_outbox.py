"""The outbox against real Redis, on an injected clock: once per id, leases, caps, dead letters."""
from __future__ import annotations

from email.message import EmailMessage

import pytest

from services.notifier import loop_safety as ls
from services.notifier.outbox import DEAD, DUE_KEY, FAILED, QUEUED, SENDING, SENT, Letter, Outbox
from shared.redis_store import async_client

T0 = 1_800_000_000.0
LEASE = 30.0


@pytest.fixture
async def outbox(redis_url):
    client = async_client(redis_url)
    yield Outbox(client)
    await client.aclose()


def letter(nid: str = "n1", to: str = "zhang.wei@example.com", ticket: str | None = "TM-1") -> Letter:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "support@ticketmesh.test", to, "[#TM-1] 我们已收到您的请求"
    mail["Message-ID"] = f"<tm.{nid}@ticketmesh.test>"
    mail.set_content("您好，工单号为 TM-1。", charset="utf-8")
    return Letter.render(nid, "ticket_ack", ticket, "trace-1", mail, sender="support@ticketmesh.test", automatic=True)


async def test_a_letter_is_rendered_once_to_ascii_and_queued_once(outbox, redis_client):
    first = letter()
    assert first.raw.isascii() and b"Message-ID: <tm.n1@ticketmesh.test>" in first.raw
    assert (await outbox.enqueue(first, T0)).outcome == "queued"
    again = await outbox.enqueue(letter(), T0 + 5)
    assert (again.outcome, again.state) == ("existing", QUEUED)
    assert redis_client.zrange(DUE_KEY, 0, -1, withscores=True) == [("n1", T0)]
    stored = await outbox.get("n1")
    assert stored is not None and stored.raw == first.raw and stored.recipient == "zhang.wei@example.com"


async def test_a_claim_leases_the_mail_and_a_second_sender_gets_it_only_after_the_lease(outbox):
    await outbox.enqueue(letter(), T0)
    assert await outbox.claim(T0 - 1, LEASE, "early") is None  # not due yet
    claimed = await outbox.claim(T0, LEASE, "a")
    assert claimed is not None and claimed.attempts == 1 and not claimed.outcome_unknown
    assert await outbox.claim(T0 + LEASE - 1, LEASE, "b") is None
    assert await outbox.mark_sending("n1", "a", T0 + 1, LEASE)
    # Sender a stalls in DATA past its lease; b takes over and finds "sending": outcome unknown.
    taken = await outbox.claim(T0 + 1 + LEASE, LEASE, "b")
    assert taken is not None and taken.state == SENDING and taken.outcome_unknown and taken.attempts == 2
    assert not await outbox.mark_sending("n1", "a", T0 + 2 + LEASE, LEASE)  # a is fenced off
    assert not await outbox.reschedule("n1", "a", T0 + 100)
    assert await outbox.mark_sending("n1", "b", T0 + 2 + LEASE, LEASE)
    await outbox.mark_sent("n1", T0 + 3 + LEASE)
    assert (await outbox.get("n1")).state == SENT


async def test_sent_and_announced_keeps_a_bodyless_record_for_30_days(outbox, redis_client):
    await outbox.enqueue(letter(), T0)
    await outbox.claim(T0, LEASE, "a")
    await outbox.mark_sent("n1", T0 + 1)
    assert await outbox.mark_announced("n1", SENT)
    record = await outbox.get("n1")
    assert record.state == SENT and record.announced and record.raw is None
    assert 29 * 86400 < redis_client.ttl(Outbox.record_key("n1")) <= 30 * 86400
    assert redis_client.zcard(DUE_KEY) == 0
    assert (await outbox.enqueue(letter(), T0 + 60)).outcome == "existing"  # the event redelivered: nothing


async def test_a_deferred_mail_comes_back_when_its_retry_is_due(outbox):
    await outbox.enqueue(letter(), T0)
    await outbox.claim(T0, LEASE, "a")
    assert await outbox.reschedule("n1", "a", T0 + 7, error="rcpt: SMTP 451 later")
    assert await outbox.claim(T0 + 6, LEASE, "b") is None
    again = await outbox.claim(T0 + 7, LEASE, "b")
    assert again.attempts == 2 and again.last_error == "rcpt: SMTP 451 later" and again.state == QUEUED


async def test_dead_letters_are_listed_newest_first_and_replayed_from_attempt_one(outbox, redis_client):
    for n, state in ((1, DEAD), (2, FAILED)):
        nid = f"n{n}"
        await outbox.enqueue(letter(nid, to=f"c{n}@example.com"), T0)
        await outbox.claim(T0, LEASE, "a")
        assert await outbox.give_up(nid, "a", state, f"reason {n}", T0 + n)
        assert await outbox.mark_announced(nid, state)
    assert [(r.notification_id, r.state, r.reason) for r in await outbox.dead()] == [
        ("n2", FAILED, "reason 2"), ("n1", DEAD, "reason 1")]
    assert redis_client.ttl(Outbox.record_key("n1")) == -1  # a dead letter waits for ops, however long
    assert await outbox.replay("n1", T0 + 100) == DEAD
    assert await outbox.replay("n1", T0 + 100) == QUEUED  # already replayed: no change
    assert await outbox.replay("unknown", T0) == ""
    replayed = await outbox.claim(T0 + 100, LEASE, "b")
    assert (replayed.notification_id, replayed.attempts, replayed.announced) == ("n1", 1, False)
    assert [r.notification_id for r in await outbox.dead()] == ["n2"]


async def test_caps_count_per_ticket_and_per_recipient_and_slide(outbox, redis_client):
    caps = ls.Caps(ls.parse_windows("10:2"), ls.parse_windows("10:3,60:4"))
    minute = 60.0

    async def send(nid: str, ticket: str, at: float, to: str = "zhang.wei@example.com") -> str:
        queued = await outbox.enqueue(letter(nid, to=to, ticket=ticket), at, caps)
        return queued.outcome if queued.outcome != "capped" else f"capped {queued.scope} {queued.window.label()}"

    assert await send("a1", "TM-1", T0) == "queued"
    assert await send("a2", "TM-1", T0 + 1) == "queued"
    assert await send("a3", "TM-1", T0 + 2) == "capped per_ticket 2/10min"
    assert await send("b1", "TM-2", T0 + 3) == "queued"
    assert await send("c1", "TM-3", T0 + 4) == "capped per_recipient 3/10min"
    assert await send("x1", "TM-3", T0 + 4, to="someone.else@example.com") == "queued"
    # Ten minutes after the first two, the ticket's window and the short overall one have room.
    assert await send("a4", "TM-1", T0 + 10 * minute + 1) == "queued"
    assert await send("c2", "TM-3", T0 + 10 * minute + 2) == "capped per_recipient 4/60min"
    assert await send("c3", "TM-3", T0 + 60 * minute + 2) == "queued"
    # Only what was queued counts, trimmed to the longest window; the keys expire after it.
    overall = redis_client.zrange(Outbox.sent_to_key("zhang.wei@example.com"), 0, -1)
    assert overall == ["b1", "a4", "c3"]
    assert 0 < redis_client.ttl(Outbox.sent_to_key("zhang.wei@example.com")) <= 3600
    assert await outbox.get("a3") is None and await outbox.get("c1") is None


async def test_a_person_written_mail_is_not_capped(outbox):
    caps = ls.Caps(ls.parse_windows("10:1"), ())
    assert (await outbox.enqueue(letter("r1"), T0, caps)).outcome == "queued"
    for n in range(2, 5):  # agent replies: enqueue without caps
        assert (await outbox.enqueue(letter(f"r{n}"), T0 + n)).outcome == "queued"
    assert (await outbox.enqueue(letter("r9"), T0 + 9, caps)).outcome == "capped"
