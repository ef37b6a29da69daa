"""What a chat client may send, checked before anything is written.

The same rules serve the WebSocket frames and ``POST /api/chat/messages``. Identifiers are
client-made (the widget keeps them in localStorage), so they are restricted to a safe
alphabet and length: the session secret is what lets a browser see its own transcript (the
visitor id is derived from it, :mod:`~services.intake_chat.identity`), hence the 16-character
minimum (the widget uses 34 random characters).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

TEXT_MAX_CHARS = 5000
NAME_MAX_CHARS = 200
EMAIL_MAX_CHARS = 320
PHONE_MAX_CHARS = 32
LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"

_VISITOR_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_SITE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_USER_HASH = re.compile(r"^[0-9a-fA-F]{64}$")
USER_ID_MAX_CHARS = 128
MAX_FILES_PER_MESSAGE = 5
_CLIENT_MESSAGE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()\-]{4,30}$")
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$")
# C0/C1 controls other than tab and newline: invisible, and trouble in subjects and logs.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class InvalidInput(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Profile:
    """What the visitor told us about themselves; empty strings mean "not given"."""

    name: str = ""
    email: str = ""
    phone: str = ""
    language: str = ""


@dataclass(frozen=True)
class IncomingMessage:
    client_message_id: str
    text: str
    profile: Profile
    files: tuple[str, ...] = ()


def _optional_str(data: Mapping[str, Any], key: str, max_chars: int) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"invalid_{key}", f"{key} must be a string")
    value = _CONTROLS.sub("", value).strip()
    if len(value) > max_chars:
        raise InvalidInput(f"invalid_{key}", f"{key} must be at most {max_chars} characters")
    return value


def session(value: Any) -> str:
    if not isinstance(value, str) or not _VISITOR_ID.match(value):
        raise InvalidInput("invalid_session", "session must be 16-64 letters, digits, '-' or '_'")
    return value


@dataclass(frozen=True)
class ClaimedIdentity:
    site: str
    user_id: str
    user_hash: str


def claimed_identity(data: Mapping[str, Any]) -> ClaimedIdentity | None:
    """``site``, ``user_id`` and ``user_hash`` of a logged-in visitor, or None if none is claimed."""
    if not any(data.get(k) not in (None, "") for k in ("user_id", "user_hash")):
        return None
    site_value, user_value, hash_value = data.get("site"), data.get("user_id"), data.get("user_hash")
    if not isinstance(site_value, str) or not _SITE.match(site_value):
        raise InvalidInput("invalid_site", "site must be 1-64 letters, digits, '.', '-' or '_'")
    if (not isinstance(user_value, str) or not user_value.strip() or len(user_value) > USER_ID_MAX_CHARS
            or _CONTROLS.search(user_value)):
        raise InvalidInput("invalid_user_id", f"user_id must be 1-{USER_ID_MAX_CHARS} printable characters")
    if not isinstance(hash_value, str) or not _USER_HASH.match(hash_value):
        raise InvalidInput("invalid_user_hash", "user_hash must be 64 hex characters (HMAC-SHA256)")
    return ClaimedIdentity(site_value, user_value, hash_value)


def since(value: Any) -> int:
    """The last transcript position a reconnecting widget holds (0 or absent: none)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**31:
        raise InvalidInput("invalid_since", "since must be a transcript position (an integer >= 0)")
    return value


def upload_ids(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_FILES_PER_MESSAGE:
        raise InvalidInput("invalid_files", f"files must be a list of at most {MAX_FILES_PER_MESSAGE} upload ids")
    ids = []
    for item in value:
        if not isinstance(item, str) or not _CLIENT_MESSAGE_ID.match(item):
            raise InvalidInput("invalid_files", "an upload id is 1-64 letters, digits, '-' or '_'")
        if item not in ids:
            ids.append(item)
    return tuple(ids)


def email(value: Any) -> str:
    address = _optional_str({"email": value}, "email", EMAIL_MAX_CHARS)
    if not address or not _EMAIL.match(address):
        raise InvalidInput("invalid_email", "email is not an email address")
    return address


# Message ids of replies typed on the status page (customer_events); they share the ticket's
# message ids (and so event ids) with the chat's own messages, which therefore never start so.
STATUS_PAGE_MESSAGE_PREFIX = "sp-"


def client_message_id(value: Any) -> str:
    if not isinstance(value, str) or not _CLIENT_MESSAGE_ID.match(value):
        raise InvalidInput("invalid_client_message_id", "client_message_id must be 1-64 letters, digits, '-' or '_'")
    return value


def chat_message_id(value: Any) -> str:
    """A chat message's client id: as :func:`client_message_id`, but never one a status-page reply
    could have (``sp-…``), so the two never collapse into one message of the ticket."""
    cmid = client_message_id(value)
    if cmid.startswith(STATUS_PAGE_MESSAGE_PREFIX):
        raise InvalidInput("invalid_client_message_id",
                           f"client_message_id must not start with {STATUS_PAGE_MESSAGE_PREFIX!r}")
    return cmid


def message_text(value: Any, *, allow_empty: bool = False) -> str:
    """``allow_empty``: a message that carries files may have no words."""
    if allow_empty and value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput("invalid_text", "text must be a string")
    text = _CONTROLS.sub("", value.replace("\r\n", "\n").replace("\r", "\n")).strip()
    if not text and not allow_empty:
        raise InvalidInput("empty_text", "text must not be empty")
    if len(text) > TEXT_MAX_CHARS:
        raise InvalidInput("text_too_long", f"text must be at most {TEXT_MAX_CHARS} characters")
    return text


def profile(data: Mapping[str, Any]) -> Profile:
    email = _optional_str(data, "email", EMAIL_MAX_CHARS)
    if email and not _EMAIL.match(email):
        raise InvalidInput("invalid_email", "email is not an email address")
    phone = _optional_str(data, "phone", PHONE_MAX_CHARS)
    if phone and not _PHONE.match(phone):
        raise InvalidInput("invalid_phone", "phone is not a phone number")
    language = _optional_str(data, "language", 16)
    if language and not _LANGUAGE_TAG.match(language):
        raise InvalidInput("invalid_language", "language must be a language tag such as zh or en")
    return Profile(name=_optional_str(data, "name", NAME_MAX_CHARS), email=email, phone=phone, language=language)


def api_message(data: Mapping[str, Any]) -> IncomingMessage:
    """The body of ``POST /api/chat/messages`` but who sends it (``session``, or ``visitor_id`` —
    its older name —, or a verified identity: the service checks that first)."""
    files = upload_ids(data.get("files"))
    return IncomingMessage(
        client_message_id=chat_message_id(data.get("client_message_id")),
        text=message_text(data.get("text"), allow_empty=bool(files)),
        profile=profile(data),
        files=files,
    )


def origin_allowed(origin: str | None, own_host: str, patterns: tuple[str, ...]) -> bool:
    """May a browser page at ``origin`` talk to us?

    No Origin header (a server-side client) is allowed; the chat page's own host always is;
    otherwise an exact origin or a pattern ending in ``:*`` (any port), or ``*`` for anyone.
    """
    if not origin:
        return True
    origin = origin.strip().rstrip("/").lower()
    scheme_sep = origin.find("://")
    if scheme_sep > 0 and origin[scheme_sep + 3:] == own_host.lower():
        return True
    for pattern in patterns:
        pattern = pattern.strip().rstrip("/").lower()
        if pattern == "*" or pattern == origin:
            return True
        if pattern.endswith(":*"):
            prefix = pattern[:-2]
            port = origin[len(prefix) + 1:] if origin.startswith(prefix + ":") else ""
            if origin == prefix or port.isdigit():
                return True
    return False


def pick_language(requested: str | None, accept_language: str | None) -> str:
    """``?lang=`` if it is one we speak, else the first of Accept-Language we speak, else zh."""
    if requested in LANGUAGES:
        return requested
    candidates: list[tuple[float, int, str]] = []
    for index, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGUAGES:
            continue
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if quality > 0:
            candidates.append((-quality, index, primary))
    return min(candidates)[2] if candidates else DEFAULT_LANGUAGE
