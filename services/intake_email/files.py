"""Raw messages and attachments on disk, content-addressed, so the same bytes are stored once.

Layout under ``<TM_DATA_DIR>``:

- ``raw/<sha[:2]>/<sha256>.eml.gz`` – the message exactly as fetched, gzip-compressed, for audit
  and reprocessing (``sha256`` is of the *uncompressed* bytes: ``source["raw_sha256"]`` on
  the events names it);
- ``attachments/<sha[:2]>/<sha256>`` – one file per distinct attachment or inline image. The
  filename and content type live in the event (``Attachment``), not in the path: two customers
  sending the same PDF under different names share one file.

Writes are atomic (temporary file, fsync, rename) and idempotent (an existing file is the same
content by construction and is left alone), so a crash or a re-fetch never leaves half a file.

Limits (``TM_EMAIL_ATTACHMENT_MAX_BYTES`` per file, ``TM_EMAIL_ATTACHMENTS_MAX_TOTAL_BYTES`` per
message): a file over the per-file limit, or one that would take the message's total over its
limit, is not stored but still listed with ``stored=False`` — the agent knows it existed and
can ask for a link. Which files fit is decided by :func:`plan_attachments` (pure).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol

FILENAME_MAX_CHARS = 255  # shared.events.Attachment
CONTENT_TYPE_MAX_CHARS = 255
CONTENT_ID_MAX_CHARS = 255
MAX_LISTED = 200  # shared.events TicketReceived.attachments: a hostile mail's 10 000 parts stop here
DEFAULT_MAX_FILE_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_TOTAL_BYTES = 25 * 1024 * 1024


class MailPartLike(Protocol):
    """What normalize's ``MailPart`` offers (filename, content_type, size, content_id, inline, data)."""

    filename: str
    content_type: str
    content_id: str | None
    data: bytes


@dataclass(frozen=True)
class PlannedFile:
    part: Any
    sha256: str
    size: int
    store: bool


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plan_attachments(parts: Iterable[MailPartLike], *, max_file_bytes: int, max_total_bytes: int) -> list[PlannedFile]:
    """Which parts are stored: in order, each within the per-file limit while the total allows it."""
    planned, total = [], 0
    for part in list(parts)[:MAX_LISTED]:
        data = bytes(part.data or b"")
        size = len(data)
        store = size <= max_file_bytes and total + size <= max_total_bytes
        if store:
            total += size
        planned.append(PlannedFile(part=part, sha256=sha256_hex(data), size=size, store=store))
    return planned


def attachment_fields(planned: PlannedFile) -> dict[str, Any]:
    """The ``shared.events.Attachment`` fields for one planned file."""
    part = planned.part
    return {
        "filename": (part.filename or "")[:FILENAME_MAX_CHARS],
        "content_type": (part.content_type or "application/octet-stream")[:CONTENT_TYPE_MAX_CHARS],
        "size": planned.size,
        "sha256": planned.sha256,
        "content_id": (part.content_id or None) and part.content_id[:CONTENT_ID_MAX_CHARS],
        "stored": planned.store,
    }


class MailFiles:
    def __init__(self, root: Path, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                 max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES):
        self.root = Path(root)
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes

    def raw_path(self, sha256: str) -> Path:
        return self.root / "raw" / sha256[:2] / f"{sha256}.eml.gz"

    def attachment_path(self, sha256: str) -> Path:
        return self.root / "attachments" / sha256[:2] / sha256

    def keep_raw(self, raw: bytes) -> str:
        """Store the message compressed; returns the sha256 of the raw bytes."""
        sha = sha256_hex(raw)
        path = self.raw_path(sha)
        if not path.exists():
            # mtime=0: the same message compresses to the same bytes whenever it is written.
            write_atomically(path, gzip.compress(bytes(raw), compresslevel=6, mtime=0))
        return sha

    def read_raw(self, sha256: str) -> bytes:
        return gzip.decompress(self.raw_path(sha256).read_bytes())

    def keep_attachments(self, parts: Iterable[MailPartLike]) -> list[dict[str, Any]]:
        """Store what fits the limits; every part is listed (``stored`` says which made it)."""
        listed = []
        for planned in plan_attachments(parts, max_file_bytes=self.max_file_bytes,
                                        max_total_bytes=self.max_total_bytes):
            if planned.store:
                path = self.attachment_path(planned.sha256)
                if not path.exists():
                    write_atomically(path, bytes(planned.part.data or b""))
            listed.append(attachment_fields(planned))
        return listed


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all or nothing (temporary file, fsync, rename), creating folders;
    the quarantine writes its files the same way."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # two workers, one file
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
