"""intake_email against a real Dovecot, RabbitMQ vhost and Redis database."""
import json

import eventlet
import structlog

from shared.errors import TransientError
from shared.intake_ledger import stable_event_id
from shared.logging import redact
from services.intake_email.service import IntakeEmailService
from services.intake_email.watcher import watch_mailbox

from .conftest import make_mail, wait_until


class Recorder:
    """Collects every event of the listener, so a test can also assert what did *not* arrive."""

    def __init__(self, listener):
        self.listener = listener
        self.events = []

    def wait_for(self, predicate, timeout=15.0):
        def record(event_type, body):
            self.events.append((event_type, body))
            return predicate(event_type, body)

        return self.listener.wait_for(record, timeout=timeout)[1]

    def subjects(self, event_type="ticket_received"):
        return [b["subject"] for t, b in self.events if t == event_type]


def subject_is(subject):
    return lambda event_type, body: event_type == "ticket_received" and body["subject"] == subject


class GatedIntake(IntakeEmailService):
    """Holds each worker after it published, until the test opens the gate."""

    gate = None
    published = None

    @watch_mailbox
    def handle_mail(self, fetched):
        outcome = super().handle_mail(fetched)
        GatedIntake.published.send(fetched.uid)
        GatedIntake.gate.wait()
        return outcome


class FlakyIntake(IntakeEmailService):
    """Fails transiently (as if RabbitMQ were away) the first time it sees a message."""

    failed_uids = set()

    @watch_mailbox
    def handle_mail(self, fetched):
        if fetched.uid not in FlakyIntake.failed_uids:
            FlakyIntake.failed_uids.add(fetched.uid)
            raise TransientError("broker unavailable (test)")
        return super().handle_mail(fetched)


def test_new_mail_becomes_ticket_received_and_is_flagged_seen_only_after_publishing(
        start_intake, mailbox, event_listener):
    GatedIntake.gate, GatedIntake.published = eventlet.event.Event(), eventlet.event.Event()
    events = Recorder(event_listener("intake_email"))
    container = start_intake(GatedIntake)
    raw = make_mail("订单 12345 还没有发货", "你好，我的订单还没有发货，请帮我查一下。",
                    sender="=?utf-8?b?5byg5Lyf?= <Zhang.Wei@example.com>", message_id="<order-1@example.com>")
    uid = mailbox.append(raw)

    body = events.wait_for(subject_is("订单 12345 还没有发货"))
    assert GatedIntake.published.wait() == uid
    assert body["channel"] == "email"
    assert body["customer"] == {"name": "张伟", "email": "zhang.wei@example.com", "phone": None,
                                "chat_visitor_id": None, "language": "zh", "tier": None,
                                "external_user_id": None, "verified": ["email"]}
    assert body["text"] == "你好，我的订单还没有发货，请帮我查一下。"
    assert body["ticket_id"].startswith("TM-")
    assert body["event_id"] == stable_event_id("ticket_received", body["ticket_id"])
    assert body["source"] == {"mailbox": "support", "uid": str(uid), "message_id": "order-1@example.com",
                              "uidvalidity": body["source"]["uidvalidity"],
                              "raw_sha256": body["source"]["raw_sha256"]}  # see test_bounce_and_files_service
    # Published, but the worker has not returned: the mail is still unread and not checkpointed.
    assert not mailbox.is_seen(uid)
    assert mailbox.checkpoint_uid() != uid

    GatedIntake.gate.send(None)
    wait_until(lambda: mailbox.is_seen(uid), what="message flagged \\Seen")
    wait_until(lambda: mailbox.checkpoint_uid() == uid, what="checkpoint advanced")
    container.stop()


def test_restart_does_not_republish_and_backfills_mail_that_arrived_while_stopped(
        start_intake, mailbox, event_listener):
    events = Recorder(event_listener("intake_email"))
    first = start_intake()
    uid_a = mailbox.append(make_mail("before restart"))
    events.wait_for(subject_is("before restart"))
    wait_until(lambda: mailbox.checkpoint_uid() == uid_a, what="checkpoint at A")
    first.stop()

    # Arrives during the downtime and is even read by a person in webmail: still a customer's mail.
    mailbox.append(make_mail("during downtime"), flags=("\\Seen",))
    start_intake()
    events.wait_for(subject_is("during downtime"))
    assert events.subjects() == ["before restart", "during downtime"]


def test_first_start_ingests_waiting_unread_mail_but_not_mail_already_read(start_intake, mailbox, event_listener):
    events = Recorder(event_listener("intake_email"))
    mailbox.append(make_mail("handled long ago"), flags=("\\Seen",))
    waiting = mailbox.append(make_mail("waiting for us"))
    start_intake()
    events.wait_for(subject_is("waiting for us"))
    wait_until(lambda: mailbox.is_seen(waiting), what="backfilled mail flagged")
    mailbox.append(make_mail("live"))
    events.wait_for(subject_is("live"))
    assert events.subjects() == ["waiting for us", "live"]


def test_same_message_id_twice_is_one_ticket(start_intake, mailbox, event_listener):
    events = Recorder(event_listener("intake_email"))
    start_intake()
    raw = make_mail("sent twice", message_id="<dup-1@example.com>")
    mailbox.append(raw)
    events.wait_for(subject_is("sent twice"))
    second_copy = mailbox.append(raw)
    mailbox.append(make_mail("next one"))
    events.wait_for(subject_is("next one"))
    assert events.subjects() == ["sent twice", "next one"]
    assert mailbox.is_seen(second_copy)


def test_reply_to_a_ticketed_mail_becomes_message_received_on_that_ticket(start_intake, mailbox, event_listener):
    events = Recorder(event_listener("intake_email"))
    start_intake()
    mailbox.append(make_mail("printer broken", message_id="<first@example.com>"))
    ticket = events.wait_for(subject_is("printer broken"))
    mailbox.append(make_mail("Re: printer broken", "still broken", message_id="<second@example.com>",
                             in_reply_to="<first@example.com>"))
    reply = events.wait_for(lambda t, b: t == "message_received")
    assert reply["ticket_id"] == ticket["ticket_id"]
    assert reply["trace_id"] == ticket["trace_id"]
    assert reply["text"] == "still broken"
    assert events.subjects() == ["printer broken"]


def test_broken_mail_is_quarantined_with_reason_and_the_next_mail_still_arrives(
        start_intake, mailbox, event_listener, tmp_path):
    events = Recorder(event_listener("intake_email"))
    start_intake()
    broken = mailbox.append(b"Subject: nobody sent this\r\nContent-Type: text/plain\r\n\r\nbody\r\n")
    mailbox.append(make_mail("good one"))
    body = events.wait_for(subject_is("good one"))
    uidvalidity = body["source"]["uidvalidity"]
    note = json.loads((tmp_path / "quarantine" / "support" / f"{uidvalidity}-{broken}.json").read_text())
    assert "no sender address" in note["reason"]
    assert (tmp_path / "quarantine" / "support" / f"{uidvalidity}-{broken}.eml").read_bytes().startswith(
        b"Subject: nobody sent this")
    assert mailbox.is_seen(broken)
    assert events.subjects() == ["good one"]


def test_transient_failure_leaves_mail_unread_and_it_is_retried(start_intake, mailbox, event_listener):
    FlakyIntake.failed_uids = set()
    events = Recorder(event_listener("intake_email"))
    start_intake(FlakyIntake)
    uid = mailbox.append(make_mail("flaky broker"))
    wait_until(lambda: uid in FlakyIntake.failed_uids, what="first attempt")
    assert not mailbox.is_seen(uid)
    events.wait_for(subject_is("flaky broker"))
    wait_until(lambda: mailbox.is_seen(uid), what="flagged after the retry")
    assert events.subjects() == ["flaky broker"]


def test_service_reconnects_after_dovecot_restarts(start_intake, mailbox, dovecot, event_listener):
    events = Recorder(event_listener("intake_email"))
    start_intake()
    mailbox.append(make_mail("before the outage"))
    events.wait_for(subject_is("before the outage"))
    dovecot.restart()
    mailbox.append(make_mail("after the outage"))
    events.wait_for(subject_is("after the outage"), timeout=20)
    assert events.subjects() == ["before the outage", "after the outage"]


def test_login_failure_is_logged_without_the_password_and_retried(start_intake, mailbox):
    with structlog.testing.capture_logs() as logs:
        start_intake(password="wrong-secret-pw")
        failures = wait_until(lambda: (lambda found: found if len(found) >= 2 else None)(
            [e for e in logs if e["event"] == "mailbox_auth_failed"]), timeout=10, what="two failed attempts")
    assert "AUTHENTICATIONFAILED" in failures[0]["error"] or "Authentication failed" in failures[0]["error"]
    assert failures[1]["attempt"] == 2
    assert not any("wrong-secret-pw" in repr(entry) for entry in logs)


def test_two_replicas_share_a_mailbox_one_watching_and_the_other_taking_over(
        start_intake, mailbox, event_listener):
    events = Recorder(event_listener("intake_email"))
    with structlog.testing.capture_logs() as logs:
        first = start_intake(poll_seconds=1)
        mailbox.append(make_mail("to the first replica"))
        events.wait_for(subject_is("to the first replica"))
        second = start_intake(poll_seconds=1)  # stands by: the first holds the mailbox lease
        wait_until(lambda: any(e["event"] == "mailbox_standby" for e in logs), what="second replica standing by")
        mailbox.append(make_mail("still the first"))
        events.wait_for(subject_is("still the first"))
        assert [e["event"] for e in logs].count("mailbox_connected") == 1
        first.stop()
        mailbox.append(make_mail("to the second replica"))
        events.wait_for(subject_is("to the second replica"))
        assert [e["event"] for e in logs].count("mailbox_connected") == 2
    assert events.subjects() == ["to the first replica", "still the first", "to the second replica"]
    second.stop()


def test_out_of_office_reply_is_kept_aside_not_ticketed_and_the_next_mail_is(
        start_intake, mailbox, event_listener, tmp_path):
    events = Recorder(event_listener("intake_email"))
    with structlog.testing.capture_logs() as logs:
        start_intake()
        ooo = (b"From: Wang Fang <wang.fang@contoso.com>\r\n"
               b"To: support@ticketmesh.test\r\n"
               b"Subject: Automatic reply: [TM-10001] We received your request\r\n"
               b"Message-ID: <oof-1@contoso.com>\r\n"
               b"In-Reply-To: <tm.TM-10001.n-1@ticketmesh.test>\r\n"
               b"Auto-Submitted: auto-replied\r\n"
               b"X-Auto-Response-Suppress: All\r\n"
               b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
               b"I am out of the office until Monday.\r\n")
        ooo_uid = mailbox.append(ooo)
        normal_uid = mailbox.append(make_mail("after the out-of-office", sender="wang.fang@contoso.com"))
        body = events.wait_for(subject_is("after the out-of-office"))
        wait_until(lambda: mailbox.checkpoint_uid() == normal_uid, what="checkpoint past both mails")

    assert events.subjects() == ["after the out-of-office"]
    assert not [b for t, b in events.events if t == "message_received"]
    assert mailbox.is_seen(ooo_uid)
    folder = tmp_path / "quarantine" / "support"
    stem = f"{body['source']['uidvalidity']}-{ooo_uid}"
    assert json.loads((folder / f"{stem}.json").read_text())["reason"] == \
        "automatic:auto_reply:auto-submitted=auto-replied"
    assert (folder / f"{stem}.eml").read_bytes() == ooo
    ignored = [e for e in logs if e["event"] == "mail_ignored_automatic"]
    assert [(e["kind"], e["reason"]) for e in ignored] == [("auto_reply", "auto-submitted=auto-replied")]
    # capture_logs skips the processors; the production chain masks the sender and logs no body.
    assert redact(None, "info", dict(ignored[0]))["from_email"] == "w***@contoso.com"
    assert "out of the office" not in repr(ignored)


def test_our_own_acknowledgement_coming_back_opens_no_ticket(start_intake, mailbox, event_listener, tmp_path):
    events = Recorder(event_listener("intake_email"))
    start_intake()
    ack = make_mail("[TM-10002] We received your request", sender="TicketMesh Support <support@ticketmesh.test>",
                    message_id="<tm.TM-10002.n-5@ticketmesh.test>")
    ack_uid = mailbox.append(ack)
    mailbox.append(make_mail("a real question"))
    body = events.wait_for(subject_is("a real question"))
    note = tmp_path / "quarantine" / "support" / f"{body['source']['uidvalidity']}-{ack_uid}.json"
    assert json.loads(note.read_text())["reason"] == "automatic:loop:from-our-address"
    assert events.subjects() == ["a real question"]
