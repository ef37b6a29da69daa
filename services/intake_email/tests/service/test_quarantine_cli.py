"""``ticketmesh quarantine list/show/reprocess`` end to end: a quarantined mail reprocessed becomes a ticket."""
import hashlib
import json

import structlog

from shared.cli import main
from services.intake_email.store import release_key

from .conftest import MAILBOX, USER, make_mail, wait_until
from .test_intake_email_service import Recorder, subject_is

OOO = (b"From: Wang Fang <wang.fang@contoso.com>\r\n"
       b"To: support@ticketmesh.test\r\n"
       b"Subject: Automatic reply: my printer\r\n"
       b"Message-ID: <oof-cli@contoso.com>\r\n"
       b"In-Reply-To: <tm.TM-10001.n-1@ticketmesh.test>\r\n"
       b"Auto-Submitted: auto-replied\r\n"
       b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
       b"Actually I am back, and the printer is still broken.\r\n")


def run_cli(capsys, *args):
    capsys.readouterr()
    with structlog.testing.capture_logs():  # the running service's log lines stay out of the CLI's output
        code = main(["quarantine", *args])
        out, err = capsys.readouterr()
    return code, out, err


def test_list_show_and_reprocess_put_quarantined_mail_back_through_intake(
        start_intake, mailbox, event_listener, tmp_path, monkeypatch, capsys, redis_url, redis_client):
    events = Recorder(event_listener("intake_email"))
    start_intake(max_message_bytes=5000)
    ooo_uid = mailbox.append(OOO)
    big_uid = mailbox.append(make_mail("a huge scan", "x" * 8000))
    wait_until(lambda: mailbox.checkpoint_uid() == big_uid, what="both mails handled")
    assert events.subjects() == []

    for name, value in {"TM_DATA_DIR": str(tmp_path), "TM_REDIS_URL": redis_url, "TM_IMAP_MAILBOX_NAME": MAILBOX,
                        "TM_IMAP_HOST": mailbox.server.host, "TM_IMAP_PORT": str(mailbox.server.port),
                        "TM_IMAP_USER": USER, "TM_IMAP_PASSWORD": mailbox.server.users[USER],
                        "TM_IMAP_FOLDER": mailbox.folder}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TM_EMAIL_MAILBOXES_FILE", raising=False)

    code, out, _ = run_cli(capsys, "list", "--json")
    listed = json.loads(out)
    assert code == 0
    by_uid = {int(row["id"].rsplit("-", 1)[1]): row for row in listed}
    assert by_uid[ooo_uid]["reason"] == "automatic:auto_reply:auto-submitted=auto-replied"
    assert by_uid[big_uid]["headers_only"] == "yes"
    ooo_id, big_id = by_uid[ooo_uid]["id"], by_uid[big_uid]["id"]
    assert ooo_id.startswith(f"{MAILBOX}/")
    assert run_cli(capsys, "list", "--mailbox", "nosuchbox", "--json")[1].strip() == "[]"
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and ooo_id in out and "automatic:auto_reply" in out

    code, out, _ = run_cli(capsys, "show", ooo_id)
    shown = json.loads(out)
    assert code == 0
    assert shown["headers"]["Subject"] == "Automatic reply: my printer"
    assert shown["reason"] == "automatic:auto_reply:auto-submitted=auto-replied"
    assert run_cli(capsys, "show", f"{MAILBOX}/1-999999")[0] == 2

    code, out, err = run_cli(capsys, "reprocess", ooo_id, big_id)
    assert code == 2
    assert f"{ooo_id}: back in {MAILBOX}/{mailbox.folder}" in out
    assert "1 reprocessed, 1 failed" in out
    assert f"{big_id}: only its headers were kept" in err

    ticket = events.wait_for(subject_is("Automatic reply: my printer"))
    assert ticket["text"].startswith("Actually I am back")
    folder = tmp_path / "quarantine" / MAILBOX
    stem = ooo_id.split("/")[1]
    assert (folder / "reprocessed" / f"{stem}.eml").read_bytes() == OOO
    assert not (folder / f"{stem}.eml").exists()
    wait_until(lambda: not redis_client.exists(release_key(hashlib.sha256(OOO).hexdigest())),
               what="the one-shot release used up")
    assert [row["id"] for row in json.loads(run_cli(capsys, "list", "--json")[1])] == [big_id]
