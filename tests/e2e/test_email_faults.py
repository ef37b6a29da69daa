"""intake_email as its own OS process, killed with SIGKILL again and again while it works through a
burst: afterwards every mail is exactly one ticket, none is missing, every one is flagged \\Seen.

A kill can land anywhere: mid-fetch, after a ticket number was claimed, between the broker's
confirm and the \\Seen flag. After each kill the test looks at what the dead process left behind
(mail whose ticket_received is out but which is still unread: killed between publish and flag)
and prints how many kills landed mid-batch and how many in that window. A republished event must
be the same event (same ticket id, same event_id), which consumers drop as a duplicate.
"""
from __future__ import annotations

import asyncio
import random
import time
from email.message import EmailMessage


from devenv.mesh import Mesh, isolated_env
from shared.testing.plugin import AsyncEventListener

BURST = 150
KILLS = 5
KILL_JITTER_SECONDS = 0.03
USER = "support"


def mail(i: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {i} <customer{i}@example.com>"
    msg["To"] = "support@ticketmesh.test"
    msg["Subject"] = f"kill test {i:03d}"
    msg["Message-ID"] = f"<kill-{i}@example.com>"
    msg.set_content(f"mail number {i}")
    return msg.as_bytes()


def unseen_message_ids(dovecot) -> set[str]:
    with dovecot.client(USER) as conn:
        conn.select_folder("INBOX", readonly=True)
        uids = conn.search(["UNSEEN"])
        found = conn.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]) if uids else {}
    ids = set()
    for data in found.values():
        header = bytes(data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"]).decode().split(":", 1)[1]
        ids.add(header.strip().strip("<>"))
    return ids


def published_message_ids(listener: AsyncEventListener) -> set[str]:
    return {body["source"]["message_id"] for _type, body in listener.events}


async def test_kill_9_mid_batch_leaves_every_mail_one_ticket_and_flagged(tmp_path, dovecot, amqp_uri, redis_url):
    env = isolated_env(amqp_uri=amqp_uri, redis_url=redis_url, work_dir=tmp_path, imap_port=dovecot.port,
                       smtp_port=1, TM_LOG_LEVEL="INFO",
                       # Stable across restarts (a pod name in production): the restarted replica
                       # takes its mailbox lease back at once instead of waiting for it to expire.
                       TM_REPLICA_ID="intake-email-0")
    mesh = Mesh(env, tmp_path / "log")
    rng = random.Random()
    kills = []  # per kill: (events seen, unread mail left, published but not flagged)
    restart_seconds = []
    try:
        async with AsyncEventListener(amqp_uri, "intake_email", ["ticket_received"]) as received:
            await asyncio.to_thread(mesh.start, ["intake_email"])

            def append_burst() -> None:
                with dovecot.client(USER) as conn:
                    conn.multiappend("INBOX", [mail(i) for i in range(BURST)])

            await asyncio.to_thread(append_burst)
            for k in range(KILLS):
                # Spread over the burst, with jitter, so the kills land at different moments.
                target = int(BURST * (k + 1) / (KILLS + 1)) + rng.randint(-5, 5)
                await received.wait_for(lambda _t, _b: len(received.events) >= target, timeout=60)
                if k % 2:
                    # Fault injection, not synchronisation: land somewhere inside the next mail's
                    # handling (about 10 ms each). Even kills land right after a publish, which
                    # is where "published but not flagged" happens.
                    await asyncio.sleep(rng.uniform(0, KILL_JITTER_SECONDS))
                await asyncio.to_thread(mesh.kill, "intake_email")
                unread = await asyncio.to_thread(unseen_message_ids, dovecot)
                in_window = unread & published_message_ids(received)
                kills.append((len(received.events), len(unread), len(in_window)))
                restart_started = time.monotonic()
                await asyncio.to_thread(mesh.restart, "intake_email")
                restart_seconds.append(round(time.monotonic() - restart_started, 1))

            try:
                await received.wait_for(lambda _t, _b: len(published_message_ids(received)) >= BURST, timeout=30)
            except AssertionError:
                missing = {f"kill-{i}@example.com" for i in range(BURST)} - published_message_ids(received)
                raise AssertionError(f"{len(missing)} mails never became a ticket after {kills}: "
                                     f"{sorted(missing)[:5]}") from None
            # A last mail, handled after everything before it: all republications are in by then.
            await asyncio.to_thread(dovecot.append, USER, mail(BURST))
            await received.wait_for(lambda _t, b: b["source"]["message_id"] == f"kill-{BURST}@example.com",
                                    timeout=30)
            assert await asyncio.to_thread(unseen_message_ids, dovecot) == set()
            assert mesh.exited() == {}
            events = [body for _type, body in received.events]
    finally:
        await asyncio.to_thread(mesh.stop)

    by_message: dict[str, list[dict]] = {}
    for body in events:
        by_message.setdefault(body["source"]["message_id"], []).append(body)
    mid_batch = sum(1 for _seen, unread, _window in kills if unread)
    in_window = sum(1 for *_rest, window in kills if window)
    print(f"\n{KILLS} kills (events seen, unread left, published-not-flagged): {kills}; "
          f"{mid_batch} mid-batch, {in_window} between publish and flag; "
          f"{len(events)} ticket_received for {len(by_message)} mails "
          f"({len(events) - len(by_message)} republished); restarts took {restart_seconds} s")

    assert set(by_message) == {f"kill-{i}@example.com" for i in range(BURST + 1)}
    for message_id, copies in by_message.items():
        assert len({b["ticket_id"] for b in copies}) == 1, (message_id, copies)
        assert len({b["event_id"] for b in copies}) == 1, (message_id, copies)
    assert len({copies[0]["ticket_id"] for copies in by_message.values()}) == BURST + 1
    assert mid_batch >= KILLS - 1, f"the kills mostly missed the batch: {kills}"
