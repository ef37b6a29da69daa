"""Content-addressed raw mail and attachments: layout, idempotence, limits."""
from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field

import pytest

from services.intake_email.files import MailFiles, plan_attachments
from shared.events import Attachment


@dataclass(frozen=True)
class Part:  # the shape of normalize's MailPart
    filename: str
    content_type: str
    data: bytes = field(repr=False)
    content_id: str | None = None
    inline: bool = False

    @property
    def size(self) -> int:
        return len(self.data)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_raw_mail_is_kept_gzipped_under_its_sha256_once(tmp_path):
    files = MailFiles(tmp_path)
    raw = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n" * 50
    digest = files.keep_raw(raw)
    path = tmp_path / "raw" / digest[:2] / f"{digest}.eml.gz"
    assert digest == sha(raw)
    assert gzip.decompress(path.read_bytes()) == raw and path.stat().st_size < len(raw)
    before = path.stat().st_mtime_ns
    assert files.keep_raw(raw) == digest  # a re-fetch: same file, not rewritten
    assert path.stat().st_mtime_ns == before
    assert files.read_raw(digest) == raw
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [path.name]  # no temporary leftovers


def test_attachments_are_stored_by_content_and_listed_with_their_names(tmp_path):
    files = MailFiles(tmp_path)
    pdf, logo = b"%PDF-1.4 invoice", b"\x89PNG logo"
    listed = files.keep_attachments([
        Part("发票.pdf", "application/pdf", pdf),
        Part("", "image/png", logo, content_id="logo@x", inline=True),
        Part("copy of 发票.pdf", "application/pdf", pdf),
    ])
    assert [Attachment(**a) for a in listed] == [
        Attachment(filename="发票.pdf", content_type="application/pdf", size=len(pdf), sha256=sha(pdf)),
        Attachment(filename="", content_type="image/png", size=len(logo), sha256=sha(logo), content_id="logo@x"),
        Attachment(filename="copy of 发票.pdf", content_type="application/pdf", size=len(pdf), sha256=sha(pdf)),
    ]
    assert (tmp_path / "attachments" / sha(pdf)[:2] / sha(pdf)).read_bytes() == pdf
    assert (tmp_path / "attachments" / sha(logo)[:2] / sha(logo)).read_bytes() == logo
    assert len([p for p in (tmp_path / "attachments").rglob("*") if p.is_file()]) == 2


@pytest.mark.parametrize("sizes, max_file, max_total, stored", [
    ([5, 5, 5], 10, 100, [True, True, True]),
    ([5, 11, 5], 10, 100, [True, False, True]),   # one too big: the rest still fit
    ([6, 6, 3], 10, 12, [True, True, False]),     # the total is reached
    ([6, 8, 4], 10, 12, [True, False, True]),     # a later small one still fits the total
    ([10], 10, 10, [True]),                       # limits are inclusive
])
def test_limits_per_file_and_per_message(sizes, max_file, max_total, stored):
    parts = [Part(f"f{i}", "application/octet-stream", bytes([i]) * n) for i, n in enumerate(sizes)]
    assert [p.store for p in plan_attachments(parts, max_file_bytes=max_file, max_total_bytes=max_total)] == stored


def test_a_file_over_the_limit_is_listed_but_not_written(tmp_path):
    files = MailFiles(tmp_path, max_file_bytes=4, max_total_bytes=100)
    listed = files.keep_attachments([Part("big.zip", "application/zip", b"12345")])
    assert listed[0]["stored"] is False and listed[0]["size"] == 5 and listed[0]["sha256"] == sha(b"12345")
    assert not (tmp_path / "attachments").exists()


def test_at_most_200_parts_are_listed_and_stored():
    parts = [Part(f"f{i}", "text/plain", str(i).encode()) for i in range(250)]
    assert len(plan_attachments(parts, max_file_bytes=10, max_total_bytes=10_000)) == 200
