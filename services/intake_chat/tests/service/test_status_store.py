"""The status view store against real Redis: one round trip per change on the replica that saw
the view last, and still atomic and never stale across replicas."""
import asyncio
import uuid

from shared import events as ev
from shared.redis_store import async_client

from services.intake_chat import status_view
from services.intake_chat.config import Settings
from services.intake_chat.status import StatusProjection
from services.intake_chat.status_store import CHANGES_CHANNEL, StatusStore
from services.intake_chat.tests.conftest import chat_env
from services.intake_chat.tests.unit.test_status_view import (TICKET, assigned, at, customer_wrote, event, received,
                                                              replied)


def clock(minutes, name, change="activated", due_minutes=60):
    return event(ev.SLA_WATCHER, ev.SLA_CLOCK_CHANGED, minutes, clock=name, change=change, policy="standard",
                 target_seconds=3600, due_at=at(due_minutes))


class Counted:
    """Counts the commands a client sends (each one a round trip: the store pipelines nothing here)."""

    def __init__(self, client):
        self.commands: list[str] = []
        original = client.execute_command

        async def execute_command(*args, **options):
            self.commands.append(str(args[0]).upper())
            return await original(*args, **options)

        client.execute_command = execute_command


async def change(store, event_):
    return await store.change(event_.ticket_id, lambda view: status_view.apply(view, event_))


async def test_the_replica_that_wrote_a_view_changes_it_in_one_round_trip_and_reads_nothing_for_ignored_events(
        amqp_uri, redis_url, tmp_path):
    client = async_client(redis_url)
    try:
        store, counted = StatusStore(client), Counted(client)
        projection = StatusProjection(store, Settings.from_env(chat_env(amqp_uri, redis_url, tmp_path)))
        await projection.apply(clock(0, "resolution"))  # no promise to answer: never on the page
        assert counted.commands == []
        await change(store, received().model_copy(update={"ticket_id": "TM-1"}))  # the script loaded, if it was not
        counted.commands.clear()
        await change(store, received())  # a new ticket: no view to read first
        await change(store, assigned(1))
        await change(store, clock(2, "first_response"))
        assert counted.commands == ["EVALSHA"] * 3
        counted.commands.clear()
        await change(store, assigned(1))  # redelivered: nothing changes, Redis confirms the view seen
        assert counted.commands == ["GET"]
        assert status_view.ignores(clock(2, "resolution")) and not status_view.ignores(clock(2, "next_response"))
        expected = status_view.apply(status_view.apply(status_view.apply(None, received()), assigned(1)),
                                     clock(2, "first_response"))
        assert await StatusStore(client).view(TICKET) == expected
    finally:
        await client.aclose()


async def test_replicas_changing_one_view_in_turn_and_at_once_lose_nothing(redis_url):
    clients = [async_client(redis_url), async_client(redis_url)]
    try:
        one, other = (StatusStore(c) for c in clients)
        await change(one, received())
        await change(other, replied(1, reply_id="r-1"))  # ``other`` never saw the view: the script hands it over
        await change(one, replied(2, reply_id="r-2"))     # ``one`` remembers a view without r-1: stale, healed
        writes = [customer_wrote(3 + i, message_id=f"m-{i}") for i in range(12)]
        await asyncio.gather(*(change(one if i % 2 else other, w) for i, w in enumerate(writes)))
        view = await StatusStore(clients[0]).view(TICKET)
        ids = [m.id for m in view.messages]
        assert ids == ["opening", "r:r-1", "r:r-2", *(f"m:m-{i}" for i in range(12))]
    finally:
        for c in clients:
            await c.aclose()


async def test_a_view_gone_from_redis_is_written_again_though_the_replica_remembers_it(redis_url, redis_client):
    client = async_client(redis_url)
    try:
        store = StatusStore(client)
        await change(store, received())
        redis_client.delete(f"tm:intake_chat:status:view:{TICKET}")  # expired
        before, after = await change(store, received())  # redelivered: nothing new for the memory
        assert before is None and after.known
        assert (await StatusStore(client).view(TICKET)).known
    finally:
        await client.aclose()


async def test_every_write_of_a_watched_ticket_tells_the_pages_and_nothing_else_does(redis_url):
    # The channel is server-wide (not per database): tickets no one else uses tell ours apart.
    ticket = f"TM-{uuid.uuid4().int % 10**12}"
    unwatched, last = f"{ticket}1", f"{ticket}0"

    def on_ticket(e, ticket_id=ticket):
        return e.model_copy(update={"ticket_id": ticket_id})

    client = async_client(redis_url)
    try:
        store = StatusStore(client)
        async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(CHANGES_CHANNEL)
            await store.watch(ticket)
            await store.watch(last)
            for e in (received(), received(), assigned(1)):
                await change(store, on_ticket(e))
            await change(store, on_ticket(received(), unwatched))  # no page open: nobody to tell
            await change(store, on_ticket(received(), last))  # told after ours: the end of them
            told = []
            deadline = asyncio.get_running_loop().time() + 10
            while last not in told and asyncio.get_running_loop().time() < deadline:
                message = await pubsub.get_message(timeout=0.5)
                if message is not None and message["data"].startswith(ticket):
                    told.append(message["data"])
            assert told == [ticket, ticket, last]
    finally:
        await client.aclose()
