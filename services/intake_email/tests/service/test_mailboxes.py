"""Several mailboxes, XOAUTH2, archive, oversize, flood and health, against real Dovecot, RabbitMQ and Redis."""
import json
import time
import urllib.error
import urllib.request
import uuid

import imapclient
import pytest
import structlog
from nameko.web.server import WebServer

from shared.testing.mesh_fixtures import running_dovecot
from devenv.dovecot import TokenIntrospection
from shared.intake_ledger import stable_event_id
from services.intake_email.config import (DATA_DIR_CONFIG_KEY, FLOOD_MAX_CONFIG_KEY, FLOOD_WINDOW_CONFIG_KEY,
                                          MAILBOXES_CONFIG_KEY, STALL_CONFIG_KEY,
                                          MailboxSettings)
from services.intake_email.service import IntakeEmailService

from .conftest import USER, TEST_FLOOD_MAX, make_mail, wait_until
from .test_intake_email_service import Recorder, subject_is

GOOD_TOKEN = "ya29.good-token-" + uuid.uuid4().hex
OAUTH_USER = "help"


@pytest.fixture
def start(service_container, tmp_path):
    """``start(mailbox_configs, **config)`` → a started container watching those mailboxes."""

    def run(mailboxes, **config):
        container = service_container(IntakeEmailService, **{
            # No WEB_SERVER_ADDRESS: the service then binds a free loopback port, not nameko's 8000.
            MAILBOXES_CONFIG_KEY: mailboxes, DATA_DIR_CONFIG_KEY: str(tmp_path),
            FLOOD_MAX_CONFIG_KEY: TEST_FLOOD_MAX, **config})
        container.start()
        return container

    return run


def other_folder(mailbox):
    folder = f"t-{uuid.uuid4().hex[:10]}"
    with mailbox.server.client(USER) as conn:
        conn.create_folder(folder)
    return folder


def readyz(container):
    server = next(e for e in container.extensions if isinstance(e, WebServer))
    host, port = server._sock.getsockname()[:2]
    assert (host, port != 8000) == ("127.0.0.1", True)
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def folder_uids(server, user, folder):
    with server.client(user) as conn:
        if not conn.folder_exists(folder):
            return None
        conn.select_folder(folder, readonly=True)
        return conn.search(["ALL"])


def test_each_mailbox_ingests_and_one_refusing_our_login_holds_up_no_other(start, mailbox, event_listener):
    events = Recorder(event_listener("intake_email"))
    sales_folder = other_folder(mailbox)
    with structlog.testing.capture_logs() as logs:
        container = start([mailbox.settings(name="support"),
                           mailbox.settings(name="sales", folder=sales_folder),
                           mailbox.settings(name="broken", password="not-the-password")])
        mailbox.append(make_mail("to support"))
        mailbox.server.append(USER, make_mail("to sales"), folder=sales_folder)
        try:
            support = events.wait_for(subject_is("to support"), timeout=30)
            sales = events.wait_for(subject_is("to sales"), timeout=30)
        except AssertionError as missing:
            seen = [(e["event"], e.get("mailbox"), str(e.get("error", ""))[:100]) for e in logs]
            raise AssertionError(f"{missing}; the watcher logged {seen}") from None
        wait_until(lambda: [e for e in logs if e["event"] == "mailbox_auth_failed"], what="broken mailbox refused")
    assert (support["source"]["mailbox"], sales["source"]["mailbox"]) == ("support", "sales")
    assert {e["mailbox"] for e in logs if e["event"] == "mailbox_auth_failed"} == {"broken"}
    status, body = readyz(container)
    states = {m["name"]: m["state"] for m in body["mailboxes"]}
    assert states == {"broken": "auth_failed", "sales": "watching", "support": "watching"}


@pytest.mark.parametrize("server_has_move", [True, False], ids=["MOVE", "COPY+EXPUNGE"])
def test_after_archive_moves_handled_mail_to_the_archive_folder_it_creates(
        start, mailbox, event_listener, monkeypatch, server_has_move):
    if not server_has_move:  # as if the server lacked RFC 6851 MOVE: the watcher must COPY, flag, UID EXPUNGE
        has_capability = imapclient.IMAPClient.has_capability
        monkeypatch.setattr(imapclient.IMAPClient, "has_capability",
                            lambda self, cap: cap.upper() != "MOVE" and has_capability(self, cap))
    events = Recorder(event_listener("intake_email"))
    archive = f"arch-{uuid.uuid4().hex[:8]}"
    start([mailbox.settings(after="archive", archive_folder=archive)])
    uid = mailbox.append(make_mail("please archive me"))
    events.wait_for(subject_is("please archive me"))
    wait_until(lambda: folder_uids(mailbox.server, USER, archive), what="mail in the archive folder")
    wait_until(lambda: folder_uids(mailbox.server, USER, mailbox.folder) == [], what="mail gone from the inbox")
    wait_until(lambda: mailbox.checkpoint_uid() == uid, what="checkpoint advanced")
    with mailbox.server.client(USER) as conn:
        conn.select_folder(archive, readonly=True)
        [archived] = conn.search(["ALL"])
        assert b"\\Seen" in conn.get_flags([archived])[archived]
    mailbox.append(make_mail("and me too"))
    events.wait_for(subject_is("and me too"))
    wait_until(lambda: len(folder_uids(mailbox.server, USER, archive)) == 2, what="second mail archived")
    assert events.subjects() == ["please archive me", "and me too"]


def big_mail(subject, sender, size):
    return make_mail(subject, "x" * size, sender=sender, message_id=f"<big-{uuid.uuid4().hex}@example.com>")


def test_oversize_mail_is_quarantined_by_its_headers_and_a_person_is_told(start, mailbox, event_listener, tmp_path):
    events = Recorder(event_listener("intake_email"))
    start([mailbox.settings(max_message_bytes=5000, reject_oversize=True)])
    big = big_mail("huge scan", "Zhang Wei <zhang.wei@example.com>", 8000)
    big_uid = mailbox.append(big)
    robot_uid = mailbox.append(big_mail("huge report", "noreply@shop.example", 8000))
    mailbox.append(make_mail("small one"))
    rejected = events.wait_for(lambda t, b: t == "mail_rejected")
    body = events.wait_for(subject_is("small one"))
    uidvalidity = body["source"]["uidvalidity"]
    assert (rejected["to"], rejected["name"], rejected["reason"], rejected["subject"], rejected["limit"]) == \
        ("zhang.wei@example.com", "Zhang Wei", "too_large", "huge scan", 5000)
    assert rejected["size"] > 5000
    assert rejected["event_id"] == stable_event_id("mail_rejected", "support", uidvalidity, str(big_uid))
    folder = tmp_path / "quarantine" / "support"
    for uid in (big_uid, robot_uid):
        note = json.loads((folder / f"{uidvalidity}-{uid}.json").read_text())
        assert note["header_only"] and "over the mailbox's size limit of 5000" in note["reason"]
        assert b"xxxxxxxx" not in (folder / f"{uidvalidity}-{uid}.eml").read_bytes()
    assert [t for t, _ in events.events].count("mail_rejected") == 1  # not to noreply@
    assert events.subjects() == ["small one"]


def test_a_flooding_sender_is_throttled_into_quarantine_and_duplicates_do_not_count(
        start, mailbox, event_listener, tmp_path):
    events = Recorder(event_listener("intake_email"))
    flooder = "Script <robot.user@example.com>"
    with structlog.testing.capture_logs() as logs:
        start([mailbox.settings()], **{FLOOD_MAX_CONFIG_KEY: 2, FLOOD_WINDOW_CONFIG_KEY: 10})
        first = make_mail("flood 1", sender=flooder, message_id="<f1@example.com>")
        mailbox.append(first)
        mailbox.append(first)  # the same message again: one message in the window
        mailbox.append(make_mail("flood 2", sender=flooder))
        events.wait_for(subject_is("flood 2"))
        third = mailbox.append(make_mail("flood 3", sender=flooder))
        mailbox.append(make_mail("someone else", sender="li.na@example.com"))
        body = events.wait_for(subject_is("someone else"))
    assert events.subjects() == ["flood 1", "flood 2", "someone else"]
    note = tmp_path / "quarantine" / "support" / f"{body['source']['uidvalidity']}-{third}.json"
    assert json.loads(note.read_text())["reason"] == "flood: 3 messages from this sender within 10 minutes (limit 2)"
    assert [e["from_email"] for e in logs if e["event"] == "mail_flood_throttled"] == ["robot.user@example.com"]
    assert mailbox.is_seen(third)


def test_readyz_names_the_stalled_mailbox_while_dovecot_is_down_and_recovers(start, mailbox, dovecot):
    # IDLE is re-issued every 60 s, far longer than the 2 s stall limit: a healthy mailbox idling
    # quietly must still read as ready, all along.
    container = start([mailbox.settings(reconnect_max_seconds=1, poll_seconds=60)], **{STALL_CONFIG_KEY: 2})
    wait_until(lambda: (lambda r: r[0] == 200 and r[1]["mailboxes"][0]["state"] == "watching")(readyz(container)),
               timeout=15, what="ready and watching")
    idle_until = time.monotonic() + 3 * 2
    while time.monotonic() < idle_until:
        status, body = readyz(container)
        assert (status, body["mailboxes"][0]["state"]) == (200, "watching"), body
        time.sleep(0.25)  # paces the observation window; nothing to wait for
    stopped_at = time.monotonic()
    dovecot.stop()
    try:
        status, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(readyz(container)), timeout=40,
                                  what="stalled")
        noticed_after = time.monotonic() - stopped_at
    finally:
        dovecot.start()
    # The closed connection ends the IDLE as soon as Dovecot's processes are gone (that alone took
    # up to ~11 s on a loaded 2-core machine), long before the 60 s IDLE would have.
    assert noticed_after < 30
    assert body["stalled"] == ["support"]
    [support] = body["mailboxes"]
    assert (support["state"], support["problem"]) == ("reconnecting", "stalled")
    assert support["stalled_since"] and support["stalled_seconds"] >= 2
    assert support["last_error"]
    assert (body["redis"], body["rabbitmq"]) == ("ok", "ok")
    wait_until(lambda: readyz(container)[0] == 200, timeout=20, what="ready again")
    assert readyz(container)[1]["mailboxes"][0]["state"] == "watching"


@pytest.fixture(scope="module")
def oauth_dovecot():
    with TokenIntrospection({GOOD_TOKEN: OAUTH_USER}) as idp:
        for server in running_dovecot("tm-dovecot-oauth-", users={"support": "support-demo"},
                                      oauth2_introspection_url=idp.url):
            yield server, idp


def test_xoauth2_mailbox_logs_in_with_its_token_and_a_wrong_token_fails_alone(
        start, oauth_dovecot, event_listener, tmp_path):
    server, idp = oauth_dovecot
    events = Recorder(event_listener("intake_email"))
    good, bad = tmp_path / "good.token", tmp_path / "bad.token"
    good.write_text(GOOD_TOKEN + "\n")
    wrong_token = "ya29.wrong-" + uuid.uuid4().hex
    bad.write_text(wrong_token)
    common = dict(host=server.host, port=server.port, user=OAUTH_USER, reconnect_max_seconds=2)
    with structlog.testing.capture_logs() as logs:
        start([MailboxSettings(name="o365", xoauth2_token_file=str(good), **common).to_config(),
               MailboxSettings(name="o365-bad", xoauth2_token_file=str(bad), **common).to_config()])
        # Mail for the token's user, delivered with a password-less client login over XOAUTH2.
        conn = imapclient.IMAPClient(server.host, port=server.port, ssl=False, timeout=10)
        conn.oauth2_login(OAUTH_USER, GOOD_TOKEN)
        conn.append("INBOX", make_mail("sent to an OAuth mailbox"))
        conn.logout()
        body = events.wait_for(subject_is("sent to an OAuth mailbox"))
        failures = wait_until(lambda: (lambda f: f if len(f) >= 2 else None)(
            [e for e in logs if e["event"] == "mailbox_auth_failed"]), timeout=15, what="two refused logins")
    assert body["source"]["mailbox"] == "o365"
    assert {e["mailbox"] for e in failures} == {"o365-bad"}
    assert failures[0]["xoauth2"] is True and "AUTHENTICATIONFAILED" in failures[0]["error"]
    assert failures[1]["attempt"] == 2 and failures[1]["retry_in"] > 0
    assert not any(GOOD_TOKEN in repr(e) or wrong_token in repr(e) for e in logs)
    assert idp.requests >= 3
