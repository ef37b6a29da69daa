"""Mail that cannot become a ticket, kept on disk with the reason, so nobody loses it.

``<TM_DATA_DIR>/quarantine/<mailbox>/<uidvalidity>-<uid>.eml`` holds the raw bytes as fetched
(only the header section for mail over the size limit) and ``….json`` says why, when, and
where it came from. Writing is idempotent (same message, same files) and atomic (a temporary
file renamed into place), so a crash mid-write never leaves half a message behind.

An entry's id is ``<mailbox>/<uidvalidity>-<uid>``. ``ticketmesh quarantine list/show/reprocess``
read entries here; a reprocessed entry's files move to ``<mailbox>/reprocessed/``.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from services.intake_email.files import write_atomically
from services.intake_email.imap import FetchedMail


REPROCESSED = "reprocessed"
_ID = re.compile(r"^(?P<mailbox>[A-Za-z0-9_.-]{1,64})/(?P<stem>\d+-\d+)$")


class UnknownEntry(LookupError):
    """No quarantined message has this id."""


@dataclass(frozen=True)
class Entry:
    id: str
    mailbox: str
    note: dict[str, Any]
    eml: Path
    json: Path

    @property
    def header_only(self) -> bool:
        return bool(self.note.get("header_only"))

    @property
    def reason(self) -> str:
        return str(self.note.get("reason", ""))

    def raw(self) -> bytes:
        return self.eml.read_bytes()


class Quarantine:
    def __init__(self, root: Path):
        self.root = Path(root)

    # -- reading (ops) -------------------------------------------------------------------------

    def entries(self, mailbox: str | None = None) -> list[Entry]:
        """Quarantined messages (not the reprocessed ones), oldest first."""
        if not self.root.is_dir():
            return []
        folders = [self.root / mailbox] if mailbox else sorted(p for p in self.root.iterdir() if p.is_dir())
        found = []
        for folder in folders:
            for note in folder.glob("*.json") if folder.is_dir() else ():
                entry = self._entry(folder.name, note.stem)
                if entry is not None:
                    found.append(entry)
        return sorted(found, key=lambda e: (str(e.note.get("quarantined_at", "")), e.id))

    def get(self, entry_id: str) -> Entry:
        match = _ID.match(entry_id.strip())
        entry = self._entry(match["mailbox"], match["stem"]) if match else None
        if entry is None:
            raise UnknownEntry(f"no quarantined message {entry_id!r} under {self.root} "
                               "(ids look like <mailbox>/<uidvalidity>-<uid>; see `ticketmesh quarantine list`)")
        return entry

    def mark_reprocessed(self, entry: Entry) -> Path:
        """Move the entry's files aside (``<mailbox>/reprocessed/``): it is no longer waiting."""
        target = entry.eml.parent / REPROCESSED
        target.mkdir(exist_ok=True)
        os.replace(entry.eml, target / entry.eml.name)
        os.replace(entry.json, target / entry.json.name)
        return target / entry.eml.name

    def _entry(self, mailbox: str, stem: str) -> Entry | None:
        folder = self.root / mailbox
        eml, note = folder / f"{stem}.eml", folder / f"{stem}.json"
        if not (eml.is_file() and note.is_file()):
            return None
        try:
            data = json.loads(note.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {"reason": "(note unreadable)"}
        return Entry(f"{mailbox}/{stem}", mailbox, data, eml, note)

    # -- writing (the service) -----------------------------------------------------------------

    def put(self, mail: FetchedMail, reason: str, *, now: datetime) -> Path:
        folder = self.root / mail.mailbox
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{mail.uidvalidity}-{mail.uid}"
        write_atomically(folder / f"{stem}.eml", mail.raw)
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
        write_atomically(folder / f"{stem}.json", json.dumps(note, indent=2, ensure_ascii=False).encode())
        return folder / f"{stem}.eml"

