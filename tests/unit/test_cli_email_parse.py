"""``ticketmesh email parse``: what intake makes of one message, for a person asking why."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.cli import EMAIL_TEXT_LINES, main

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "services" / "intake_email" / "tests" / "corpus"


def parse(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["email", "parse", *args])
    out, err = capsys.readouterr()
    return code, out, err


def fields(out: str) -> dict[str, str]:
    """The ``key: value`` lines of the human view (continuation lines are left out)."""
    found = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep and key and not key.startswith(" ") and " " not in key:
            found.setdefault(key, value.strip())
    return found


def test_json_has_every_field_of_a_reply(capsys):
    code, out, _ = parse(capsys, str(CORPUS / "reply-gmail.eml"), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["from_email"] == "chen.jie@gmail.com"
    assert report["in_reply_to"] == ["tm.TM-10003.n1.siourjxmiivw@ticketmesh.test"]
    assert report["auto_reply"] is False and report["bounce"] is False
    assert {"text", "reply_text", "html_sanitized", "attachments", "charset_flags", "references"} <= set(report)


def test_human_view_says_what_intake_does_and_which_ids_it_threads_on(capsys):
    code, out, _ = parse(capsys, str(CORPUS / "reply-outlook-en.eml"))
    assert code == 0
    shown = fields(out)
    assert shown["verdict"].startswith("a follow-up if a thread candidate")
    assert shown["from_email"] == "wang.fang@contoso.com"
    assert shown["thread_candidates"] == "<tm.TM-10001.n1.a4t5puxfatgk@ticketmesh.test>  (tried in this order)"
    assert shown["auto_reply"] == "false" and shown["bounce"] == "false"
    # aligned: every value starts in the same column
    columns = {line.index(":") for line in out.splitlines() if line and not line.startswith(" ")}
    value_columns = {len(line) - len(line[line.index(":") + 1:].lstrip()) for line in out.splitlines()
                     if line and not line.startswith(" ") and line[line.index(":") + 1:].strip()}
    assert len(value_columns) == 1 and max(columns) < min(value_columns)


@pytest.mark.parametrize("name, key, value", [
    ("oof-exchange-zh.eml", "auto_reply", '"vacation"'),
    ("read-receipt-outlook.eml", "auto_reply", '"read-receipt"'),
    ("newsletter-precedence-bulk.eml", "verdict", "no ticket, kept in quarantine as automatic:auto_reply:precedence=bulk"),
    ("our-own-mail-looping-back.eml", "verdict", "no ticket, kept in quarantine as automatic:loop:from-our-address"),
    ("broken-multipart-without-boundary.eml", "verdict", "quarantined: multipart message without a boundary parameter"),
    ("plain-new-request-en.eml", "thread_candidates", "none"),
])
def test_human_view_of_machines_mail_and_refused_mail(capsys, name, key, value):
    code, out, _ = parse(capsys, str(CORPUS / name))
    assert code == 0  # a quarantined message is an answer, not an error
    assert fields(out)[key] == value


def test_bounce_line_names_recipient_status_and_our_message(capsys):
    _, out, _ = parse(capsys, str(CORPUS / "bounce-exim-soft-4.2.2.eml"))
    bounce = fields(out)["bounce"]
    assert bounce.startswith("full.box@example.net; status 4.2.2 (soft); "
                             "original message <tm.TM-10002.n1.h53ah37nj7no@ticketmesh.test>")


def test_whole_text_is_shown_only_when_it_differs_from_the_reply(capsys):
    _, out, _ = parse(capsys, str(CORPUS / "reply-foxmail.eml"))
    assert fields(out)["reply_text"] == "好的，我明天上午在家，可以上门取件。"
    assert "原始邮件" in fields(out)["text"] or "原始邮件" in out.split("\ntext:", 1)[1]
    _, out, _ = parse(capsys, str(CORPUS / "zh-gbk-order.eml"))
    assert fields(out)["text"] == "same as reply_text (nothing quoted)"


def test_attachments_are_listed_one_per_line(capsys):
    _, out, _ = parse(capsys, str(CORPUS / "inline-cid-image.eml"))
    assert fields(out)["attachments"] == "1"
    assert "- error.png (image/png, 70 bytes, cid:err-shot-01@example.com)" in out


def test_long_text_is_cut_in_the_human_view_and_whole_in_json(tmp_path, capsys):
    body = "\r\n".join(f"line {i}" for i in range(100))
    mail = tmp_path / "long.eml"
    mail.write_bytes(f"From: a@example.com\r\nSubject: long\r\n\r\n{body}\r\n".encode())
    _, out, _ = parse(capsys, str(mail))
    assert f"line {EMAIL_TEXT_LINES - 1}" in out and f"line {EMAIL_TEXT_LINES}\n" not in out
    assert f"{100 - EMAIL_TEXT_LINES} more lines" in out
    _, out, _ = parse(capsys, str(mail), "--json")
    assert json.loads(out)["text"].endswith("line 99")


def test_no_terminal_escapes_reach_the_screen(tmp_path, capsys):
    mail = tmp_path / "escape.eml"
    mail.write_bytes(b"From: a@example.com\r\nSubject: x\r\n\r\nred \x1b[31mtext\x07 here\r\n")
    _, out, _ = parse(capsys, str(mail))
    assert "\x1b" not in out and "\x07" not in out and "red" in out


@pytest.mark.parametrize("make_path", [lambda tmp: tmp / "missing.eml", lambda tmp: tmp])
def test_an_unreadable_file_exits_2_with_a_message(tmp_path, capsys, make_path):
    code, out, err = parse(capsys, str(make_path(tmp_path)))
    assert code == 2 and out == ""
    assert err.startswith("cannot read ")


def test_dash_reads_standard_input_in_a_real_process():
    raw = (CORPUS / "zh-gbk-order.eml").read_bytes()
    done = subprocess.run([sys.executable, "-m", "shared.cli", "email", "parse", "-", "--json"], input=raw,
                          capture_output=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["subject"] == "订单迟迟未发货，请帮忙查询"


def test_garbage_on_stdin_is_an_answer_not_a_crash():
    done = subprocess.run([sys.executable, "-m", "shared.cli", "email", "parse", "-"], input=os.urandom(5000),
                          capture_output=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "verdict:" in done.stdout.decode() and "quarantined" in done.stdout.decode()


def test_our_address_comes_from_the_option_or_tm_mail_from(capsys, monkeypatch):
    path = str(CORPUS / "plain-new-request-en.eml")
    monkeypatch.setenv("TM_MAIL_FROM", "Olivia.Park@example.com")
    assert fields(parse(capsys, path)[1])["verdict"].endswith("automatic:loop:from-our-address")
    monkeypatch.delenv("TM_MAIL_FROM")
    assert "automatic:loop" not in parse(capsys, path)[1]
    assert "automatic:loop" in parse(capsys, path, "--our-address", "olivia.park@example.com")[1]
