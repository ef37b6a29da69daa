"""describe(): every input gets an answer (never an exception), shaped the same way every time."""
from __future__ import annotations

import json
import random
from datetime import datetime, timezone
from pathlib import Path

import pytest

from services.intake_email.report import CANNOT_DESCRIBE, MAX_IDS_SHOWN, describe

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
OUR_ADDRESS = "support@ticketmesh.test"
RECEIVED_AT = datetime(2026, 11, 22, 1, 15, tzinfo=timezone.utc)
FIELDS = {"from_email", "from_name", "subject", "text", "reply_text", "html_sanitized", "attachments",
          "message_id", "in_reply_to", "references", "thread_candidates", "auto_reply", "bounce", "automatic",
          "charset_flags"}


def run(raw) -> dict:
    report = describe(raw, our_address=OUR_ADDRESS, received_at=RECEIVED_AT)
    assert isinstance(report, dict)
    json.dumps(report)  # plain data all the way down
    if "quarantined" in report:
        assert isinstance(report["quarantined"], str) and report["quarantined"]
        # describe() answers even when a step crashed; a crash is still a bug (intake would crash too).
        assert not report["quarantined"].startswith(CANNOT_DESCRIBE), report["quarantined"]
        assert set(report) <= FIELDS | {"quarantined"}
    else:
        assert set(report) == FIELDS
    return report


def _garbage(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _headerish_garbage(seed: int) -> bytes:
    """Random bytes dressed as mail: header names, colons, CRLF, boundaries, encoded words."""
    rng = random.Random(seed)
    pieces = [b"From: ", b"Subject: ", b"Content-Type: multipart/mixed; boundary=", b"\r\n", b"\r\n\r\n", b"--",
              b"=?utf-8?B?", b"?=", b"=?gb2312?Q?=B0", b"Content-Transfer-Encoding: base64\r\n", b"<", b">", b"@",
              b"message/rfc822", b"multipart/report; report-type=delivery-status", b"filename*0*=", b"\x00", b"\xff"]
    return b"".join(rng.choice(pieces) if rng.random() < 0.6 else rng.randbytes(rng.randint(1, 20))
                    for _ in range(rng.randint(1, 300)))


ODD_INPUTS = {
    "empty": b"",
    "whitespace": b" \r\n\t\r\n",
    "nul bytes": b"\x00" * 64,
    "one header, no body": b"From: a@example.com",
    "body only": b"\r\n\r\nhello",
    "1 MB of random bytes": _garbage(1, 1 << 20),
    "1 MB of one header line": b"Subject: " + b"A" * (1 << 20) + b"\r\nFrom: a@example.com\r\n\r\nx",
    "str instead of bytes": "From: a@example.com\r\n\r\nhi",
    "None": None,
    "bytearray": bytearray(b"From: a@example.com\r\nSubject: hi\r\n\r\nbody"),
    "deeply nested multiparts": b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n" + b"".join(
        f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n".encode() for i in range(300)),
    "2000 empty parts": b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
                        + b"--x\r\n\r\n" * 2000 + b"--x--\r\n",
    "report type in a broken RFC 2231 parameter": b"From: a@example.com\r\nContent-Type: multipart/report; "
                                                  b"report-type*=''%ZZ; boundary=z\r\n\r\n--z--\r\n",
    "NUL charset label in the Subject, with References": b"From: a@example.com\r\nSubject: =?\x00?B?5L2g5aW9?=\r\n"
                                                         b"References: <r@example.com>\r\n\r\nhi\r\n",
    "NUL charset label without an address": b"Subject: =?\x00?Q?x?=\r\nIn-Reply-To: <r@x>\r\n\r\nhi\r\n",
    "900 nested multiparts": b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n" + b"".join(
        f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n".encode() for i in range(900)),
}


@pytest.mark.parametrize("raw", ODD_INPUTS.values(), ids=ODD_INPUTS.keys())
def test_odd_input_gets_an_answer(raw):
    run(raw)


@pytest.mark.parametrize("seed", range(200))
def test_random_bytes_and_mail_shaped_garbage_get_an_answer(seed):
    run(_garbage(seed, random.Random(seed).randint(0, 4000)))
    run(_headerish_garbage(seed))


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.eml")), ids=lambda p: p.name)
def test_every_corpus_message_cut_anywhere_gets_an_answer(path):
    raw = path.read_bytes()
    for cut in sorted({*range(0, len(raw), max(1, len(raw) // 25)), len(raw) - 1}):
        run(raw[:cut])


def test_nothing_to_read_is_quarantined_with_the_reason():
    assert run(b"")["quarantined"] == "empty message"
    assert run(_garbage(7, 5000))["quarantined"]
    assert "not bytes" in run("From: a@example.com\r\n\r\nhi")["quarantined"]


def test_a_quarantined_message_still_shows_what_could_be_read():
    raw = (b"Subject: =?UTF-8?B?5rKh5pyJ5Y+R5Lu25Lq6?=\r\nMessage-ID: <x1@example.com>\r\n"
           b"In-Reply-To: <tm.TM-10001.n1.a4t5puxfatgk@ticketmesh.test>\r\nX-Autoreply: yes\r\n\r\nbody\r\n")
    report = run(raw)
    assert report["quarantined"].startswith("no sender address")
    assert report["subject"] == "没有发件人"
    assert report["message_id"] == "x1@example.com"
    assert report["in_reply_to"] == ["tm.TM-10001.n1.a4t5puxfatgk@ticketmesh.test"]
    assert report["auto_reply"] == "vacation"


def test_a_person_s_mail_has_every_field_and_no_machine_verdict():
    report = run(b"From: =?UTF-8?B?5p2O5aic?= <Li.Na@Example.com>\r\nSubject: help\r\nMessage-ID: <m1@example.com>\r\n"
                 b"In-Reply-To: <a@example.com>\r\nReferences: <r1@example.com> <a@example.com>\r\n\r\nPlease help.\r\n")
    assert report["from_email"] == "li.na@example.com" and report["from_name"] == "李娜"
    assert report["in_reply_to"] == ["a@example.com"]
    assert report["references"] == ["r1@example.com", "a@example.com"]
    assert report["thread_candidates"] == ["a@example.com", "r1@example.com"]
    assert (report["auto_reply"], report["bounce"], report["automatic"]) == (False, False, False)


def test_a_nul_charset_label_is_described_not_crashed_on():
    report = run(ODD_INPUTS["NUL charset label in the Subject, with References"])
    assert report["from_email"] == "a@example.com" and report["subject"] == "你好"


def test_hostile_shapes_are_quarantined_with_the_reason():
    assert run(ODD_INPUTS["900 nested multiparts"])["quarantined"].startswith("hostile MIME shape: 901 boundary")


@pytest.mark.parametrize("parses", [True, False], ids=["normalized", "quarantined"])
def test_id_lists_are_capped(parses):
    references = "".join(f" <r{i}@example.com>" for i in range(MAX_IDS_SHOWN + 50))
    in_reply_to = "".join(f" <i{i}@example.com>" for i in range(MAX_IDS_SHOWN + 50))
    sender = "From: a@example.com\r\n" if parses else ""
    report = run(f"{sender}References:{references}\r\nIn-Reply-To:{in_reply_to}\r\n\r\nhi\r\n".encode())
    assert len(report["in_reply_to"]) == MAX_IDS_SHOWN and report["in_reply_to"][0] == "i0@example.com"
    assert len(report["references"]) == MAX_IDS_SHOWN
    assert report["references"][-1] == f"r{MAX_IDS_SHOWN + 49}@example.com"
    if parses:
        assert len(report["thread_candidates"]) == MAX_IDS_SHOWN


def test_a_bounce_without_readable_details_is_still_a_bounce():
    report = run(b"From: postmaster@mx.example.net\r\nSubject: notice\r\nMessage-ID: <p1@mx.example.net>\r\n\r\n"
                 b"Something happened.\r\n")
    assert report["automatic"] == "automatic:bounce:from-postmaster"
    assert report["bounce"] == {"recipients": [], "status": None, "reason": None, "hard": None,
                                "original_message_id": None}
    assert report["auto_reply"] is False


def test_our_own_mail_is_named_as_a_loop_not_an_auto_reply():
    report = run(b"From: Support <SUPPORT@ticketmesh.test>\r\nSubject: x\r\nAuto-Submitted: auto-replied\r\n\r\nhi\r\n")
    assert report["automatic"] == "automatic:loop:from-our-address"
    assert report["auto_reply"] is False and report["bounce"] is False
