"""Files a chat visitor sends: judged by their bytes, limited in size, stored content-addressed.

The type is sniffed from the content (``filetype`` reads the magic numbers); the browser's
``Content-Type`` and the file's extension are not trusted, so a script renamed ``photo.png`` is
refused. Files land where intake_email puts attachments (``<TM_DATA_DIR>/attachments/<sha[:2]>/
<sha256>``, written atomically), so whatever shows an email's attachments to an agent shows a
chat's the same way; the event lists them as ``shared.events.Attachment``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import filetype

from services.intake_email.files import sha256_hex, write_atomically

FILENAME_MAX_CHARS = 255
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")
_PATH_SEPARATORS = re.compile(r"[/\\]")


class UploadRefused(ValueError):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SniffedFile:
    sha256: str
    content_type: str
    size: int
    filename: str


def clean_filename(name: str, extension: str) -> str:
    """The visitor's file name without paths or control characters; ``upload.<ext>`` if nothing is left."""
    base = _CONTROLS.sub("", _PATH_SEPARATORS.split(name or "")[-1]).strip(" .")
    if not base:
        base = f"upload.{extension}"
    return base[-FILENAME_MAX_CHARS:]


def sniff(data: bytes, filename: str, *, allowed_types: tuple[str, ...], max_bytes: int) -> SniffedFile:
    """Check one upload; UploadRefused says why it cannot be taken."""
    if not data:
        raise UploadRefused(400, "empty_file", "the file is empty")
    if len(data) > max_bytes:
        raise UploadRefused(413, "file_too_large", f"files may be at most {max_bytes} bytes")
    kind = filetype.guess(data[:8192])
    if kind is None or kind.mime.lower() not in allowed_types:
        raise UploadRefused(415, "file_type_not_allowed",
                            f"allowed file types: {', '.join(allowed_types)} (judged from the content)")
    return SniffedFile(sha256_hex(data), kind.mime.lower(), len(data), clean_filename(filename, kind.extension))


class UploadFiles:
    def __init__(self, data_dir: str | Path):
        self.root = Path(data_dir)

    def path(self, sha256: str) -> Path:
        return self.root / "attachments" / sha256[:2] / sha256

    def keep(self, sha256: str, data: bytes) -> Path:
        path = self.path(sha256)
        if not path.exists():  # same bytes, same name: already there
            write_atomically(path, data)
        return path
