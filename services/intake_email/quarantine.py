"""Mail that cannot become a ticket, kept on disk with the reason, so nobody loses it.

``<TM_DATA_DIR>/quarantine/<mailbox>/<uidvalidity>-<uid>.eml`` holds the raw bytes as fetched
(only the header section for mail over the size limit) and ``….json`` says why, when, and
where it came from. Writing is idempotent (same message, same files) and atomic (a temporary
file renamed into place), so a crash mid-write never leaves half a message behind.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from services.intake_email.imap import FetchedMail


class Quarantine:
    def __init__(self, root: Path):
        self.root = Path(root)

    def put(self, mail: FetchedMail, reason: str, *, now: datetime) -> Path:
        folder = self.root / mail.mailbox
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{mail.uidvalidity}-{mail.uid}"
        _write_atomically(folder / f"{stem}.eml", mail.raw)
        note = {
            "reason": reason,
            "quarantined_at": now.astimezone(timezone.utc).isoformat(),
            "mailbox": mail.mailbox,
            "uidvalidity": mail.uidvalidity,
            "uid": mail.uid,
            "size": mail.size,
            "received_at": mail.internal_date.isoformat(),
            "header_only": mail.header_only,
        }
        _write_atomically(folder / f"{stem}.json", json.dumps(note, indent=2, ensure_ascii=False).encode())
        return folder / f"{stem}.eml"


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
