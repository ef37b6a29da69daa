"""intake_email settings: the common ones, the watched mailboxes, flood and health limits.

Mailboxes come from a YAML file (``TM_EMAIL_MAILBOXES_FILE``, format in
``deploy/config/mailboxes.example.yaml``); without one, the single mailbox of the ``TM_IMAP_*``
variables is watched. Everything downstream — the watcher, the checkpoint and lease keys,
quarantine folders — is keyed by the mailbox's *name*.

Secrets never sit in the YAML file itself: an entry names an environment variable
(``password_env``) or a file (``password_file``, or ``xoauth2_token_file``, which is re-read at
every login so a token refresher can replace it).
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared import mail_tokens
from shared.config import CommonSettings, ConfigError, Variable, as_bool, read
from shared.intake_ledger import CONTACT_TTL_SECONDS
from shared.config_files import ConfigFileError, describe_validation_error, read_yaml, repeated_names

DEFAULT_MAIL_FROM = "support@ticketmesh.test"
DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024
VARIABLES = (
    Variable("TM_EMAIL_MAILBOXES_FILE", "", "YAML file listing the mailboxes to watch (see "
             "deploy/config/mailboxes.example.yaml); empty: the one TM_IMAP_* mailbox"),
    Variable("TM_IMAP_MAILBOX_NAME", "support", "name of the mailbox in keys, logs and quarantine paths "
             "([A-Za-z0-9_.-]); keep it when moving the account, change it for a different one"),
    Variable("TM_IMAP_HOST", "127.0.0.1", "IMAP server"),
    Variable("TM_IMAP_PORT", "1143", "IMAP port (993 with TM_IMAP_SSL=true)"),
    Variable("TM_IMAP_USER", "support", "IMAP login"),
    Variable("TM_IMAP_PASSWORD", "support-demo", "IMAP password"),
    Variable("TM_IMAP_FOLDER", "INBOX", "folder to watch"),
    Variable("TM_IMAP_SSL", "false", "connect with TLS (IMAPS)"),
    Variable("TM_IMAP_POLL_SECONDS", "30", "IDLE is re-issued this often; servers without IDLE are polled this often"),
    Variable("TM_IMAP_MAX_MESSAGE_BYTES", str(DEFAULT_MAX_MESSAGE_BYTES),
             "larger messages are quarantined with their headers only"),
    Variable("TM_IMAP_STALL_SECONDS", "120", "a mailbox not connected and idling or fetching successfully for "
             "longer than this is stalled (/readyz answers 503 naming it)"),
    Variable("TM_EMAIL_FLOOD_MAX", "20", "a sender with more messages than this within the flood window is "
             "throttled into quarantine"),
    Variable("TM_EMAIL_FLOOD_WINDOW_MINUTES", "10", "the flood window, in minutes"),
    Variable("TM_INTAKE_EMAIL_HEALTH_HOST", "127.0.0.1", "address /healthz and /readyz listen on (0.0.0.0 for "
             "probes from outside the host)"),
    Variable("TM_INTAKE_EMAIL_HEALTH_PORT", "8084", "HTTP port of /healthz (alive) and /readyz (Redis, RabbitMQ "
             "and every mailbox watched and not stalled)"),
    # The same variable the notifier sends from: mail From this address is our own coming back.
    Variable("TM_MAIL_FROM", DEFAULT_MAIL_FROM, "our support address (as the notifier's TM_MAIL_FROM); inbound "
             "mail From it is our own mail looping back and never becomes a ticket"),
    Variable("TM_EMAIL_ATTACHMENT_MAX_BYTES", str(10 * 1024 * 1024), "an attachment or inline image larger than "
             "this is listed on the ticket but not stored"),
    Variable("TM_EMAIL_ATTACHMENTS_MAX_TOTAL_BYTES", str(25 * 1024 * 1024), "attachments of one message are "
             "stored up to this many bytes in all; the rest are listed but not stored"),
    *mail_tokens.VARIABLES,
    Variable("TM_EMAIL_REOPEN_DAYS", "14", "a reply to a ticket resolved less than this many days ago (fractions "
             "allowed, at most 90: how long intake_email keeps a ticket's records) follows it up and agent_desk reopens it; "
             "later, it opens a new ticket linked to the old one"),
    Variable("TM_EMAIL_SENDER_FROM_REPLY_TO", "false", "the customer is the Reply-To address when the mail has one "
             "(web forms and shared mailboxes sending on behalf of someone)"),
    Variable("TM_ROSTER_FILE", "deploy/demo/roster.yaml", "agent roster: mail an agent's `email` forwards to us "
             "is filed for the original sender"),
)
_DEFAULTS = {v.name: v.default for v in VARIABLES}
ATTACHMENT_MAX_BYTES_CONFIG_KEY = "TM_EMAIL_ATTACHMENT_MAX_BYTES"
ATTACHMENTS_MAX_TOTAL_BYTES_CONFIG_KEY = "TM_EMAIL_ATTACHMENTS_MAX_TOTAL_BYTES"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_NAME = re.compile(_NAME_PATTERN)
AFTER_SEEN = "seen"
AFTER_ARCHIVE = "archive"
MAILBOXES_CONFIG_KEY = "INTAKE_EMAIL_MAILBOXES"
DATA_DIR_CONFIG_KEY = "TM_DATA_DIR"
REPLICA_CONFIG_KEY = "TM_REPLICA_ID"
MAIL_FROM_CONFIG_KEY = "TM_MAIL_FROM"
TOKEN_SECRET_CONFIG_KEY = mail_tokens.SECRET_VARIABLE
REOPEN_DAYS_CONFIG_KEY = "TM_EMAIL_REOPEN_DAYS"
SENDER_FROM_REPLY_TO_CONFIG_KEY = "TM_EMAIL_SENDER_FROM_REPLY_TO"
ROSTER_FILE_CONFIG_KEY = "TM_ROSTER_FILE"
DEFAULT_REOPEN_DAYS = 14.0


# How long intake_email keeps a ticket's records (participants, resolution, link: the store's
# REPLY_TTL_SECONDS). A reopen window longer than that would promise follow-ups to tickets whose
# resolution is already forgotten.
TICKET_RECORD_RETENTION_DAYS = CONTACT_TTL_SECONDS / 86400
# agent_desk keeps a ticket's view 30 days after its last change (its VIEW_TTL_SECONDS; a unit
# test keeps the two in step): a reopen must land while the desk still has the ticket.
REOPEN_DAYS_MAX = min(30.0, TICKET_RECORD_RETENTION_DAYS)


def parse_reopen_days(raw: str | float) -> float:
    days = float(raw)
    if not days >= 0:
        raise ValueError("expected a number of days >= 0")
    if days > REOPEN_DAYS_MAX:
        raise ValueError(f"the reopen window cannot be longer than {REOPEN_DAYS_MAX:g} days: agent_desk keeps a "
                         "resolved ticket that long, and a reply it could not reopen would be lost "
                         "(later replies open a new ticket linked to the old one)")
    return days


FLOOD_MAX_CONFIG_KEY = "TM_EMAIL_FLOOD_MAX"
FLOOD_WINDOW_CONFIG_KEY = "TM_EMAIL_FLOOD_WINDOW_MINUTES"
STALL_CONFIG_KEY = "TM_IMAP_STALL_SECONDS"
WEB_SERVER_CONFIG_KEY = "WEB_SERVER_ADDRESS"  # nameko's http entrypoint binds here


def _address(raw: str) -> str:
    raw = raw.strip()
    if raw.count("@") != 1 or any(c.isspace() for c in raw):
        raise ValueError("expected an email address")
    return raw.lower()


def _size(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("expected a number of bytes, 0 or more")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError("must be positive")
    return value


@dataclass(frozen=True)
class MailboxSettings:
    """One watched mailbox; ``password`` is resolved at load time, the XOAUTH2 token at each login."""

    name: str
    host: str
    port: int
    user: str
    password: str = ""
    folder: str = "INBOX"
    ssl: bool = False
    poll_seconds: float = 30.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    reconnect_max_seconds: float = 30.0
    xoauth2_token_file: str = ""
    after: str = AFTER_SEEN
    archive_folder: str = "Archive"
    reject_oversize: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"mailbox name {self.name!r} must match {_NAME_PATTERN}")
        if self.poll_seconds <= 0:
            raise ConfigError("TM_IMAP_POLL_SECONDS must be positive")
        if self.after not in (AFTER_SEEN, AFTER_ARCHIVE):
            raise ConfigError(f"mailbox {self.name!r}: after must be {AFTER_SEEN!r} or {AFTER_ARCHIVE!r}")

    @property
    def account(self) -> str:
        """Which account a checkpoint belongs to (a UID means nothing in another account)."""
        return f"{self.user}@{self.host}:{self.port}/{self.folder}"

    def __repr__(self) -> str:  # never print the password
        return f"MailboxSettings(name={self.name!r}, host={self.host!r}, port={self.port}, folder={self.folder!r})"

    def to_config(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> "MailboxSettings":
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


class _MailboxEntry(BaseModel):
    """One entry of the mailboxes file, as written (secrets still by reference)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_PATTERN)
    host: str = Field(min_length=1)
    port: int = Field(gt=0, lt=65536)
    ssl: bool = False
    user: str = Field(min_length=1)
    password_env: str | None = Field(default=None, min_length=1)
    password_file: str | None = Field(default=None, min_length=1)
    xoauth2_token_file: str | None = Field(default=None, min_length=1)
    folder: str = Field(default="INBOX", min_length=1)
    after: Literal["seen", "archive"] = AFTER_SEEN
    archive_folder: str = Field(default="Archive", min_length=1)
    poll_seconds: float = Field(default=30.0, gt=0)
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, gt=0)
    reject_oversize: bool = False

    @model_validator(mode="after")
    def _one_secret(self) -> "_MailboxEntry":
        given = [k for k in ("password_env", "password_file", "xoauth2_token_file") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of password_env, password_file, xoauth2_token_file"
                             + (f" (got {', '.join(given)})" if given else ""))
        if self.after == AFTER_ARCHIVE and self.archive_folder == self.folder:
            raise ValueError("archive_folder must differ from folder")
        return self


class _MailboxesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mailboxes: list[_MailboxEntry] = Field(min_length=1)


def load_mailboxes(path: str | Path, environ: Mapping[str, str] = os.environ) -> tuple[MailboxSettings, ...]:
    """Read and check the mailboxes file; a ConfigError names the file, the entry and the field."""
    what = "mailboxes file"
    try:
        data = read_yaml(path, what)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None
    try:
        parsed = _MailboxesFile.model_validate(data if data is not None else {})
    except ValidationError as exc:
        detail = describe_validation_error(data, exc, list_key="mailboxes", entry_label="mailbox")
        raise ConfigError(f"{what} {path}: {detail}") from None
    repeated = repeated_names([m.name for m in parsed.mailboxes])
    if repeated:
        raise ConfigError(f"{what} {path}: mailbox names must be unique; repeated: {', '.join(repeated)}")
    mailboxes = []
    for index, entry in enumerate(parsed.mailboxes, start=1):
        where = f"{what} {path}: mailbox {index} {entry.name!r}"
        mailboxes.append(MailboxSettings(
            name=entry.name, host=entry.host, port=entry.port, ssl=entry.ssl, user=entry.user,
            password=_password(entry, environ, where), xoauth2_token_file=entry.xoauth2_token_file or "",
            folder=entry.folder, after=entry.after, archive_folder=entry.archive_folder,
            poll_seconds=entry.poll_seconds, max_message_bytes=entry.max_message_bytes,
            reject_oversize=entry.reject_oversize,
        ))
    return tuple(mailboxes)


def _password(entry: _MailboxEntry, environ: Mapping[str, str], where: str) -> str:
    if entry.password_env:
        value = environ.get(entry.password_env)
        if not value:
            raise ConfigError(f"{where}: password_env: environment variable {entry.password_env} is not set")
        return value
    if entry.password_file:
        try:
            value = Path(entry.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{where}: password_file: cannot read {entry.password_file}: "
                              f"{exc.strerror or exc}") from None
        if not value:
            raise ConfigError(f"{where}: password_file: {entry.password_file} is empty")
        return value
    token_file = Path(entry.xoauth2_token_file or "")
    if not token_file.is_file():  # read at each login; but a typo should stop the start, not loop forever
        raise ConfigError(f"{where}: xoauth2_token_file: {token_file} does not exist")
    return ""


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    mailboxes: tuple[MailboxSettings, ...]
    mail_from: str = DEFAULT_MAIL_FROM
    attachment_max_bytes: int = 10 * 1024 * 1024
    attachments_max_total_bytes: int = 25 * 1024 * 1024
    token_secret: bytes = field(default=mail_tokens.DEV_SECRET.encode(), repr=False)
    reopen_days: float = DEFAULT_REOPEN_DAYS
    sender_from_reply_to: bool = False
    roster_file: str = "deploy/demo/roster.yaml"
    flood_max: int = 20
    flood_window_minutes: float = 10.0
    stall_seconds: float = 120.0
    health_port: int = 8084
    health_host: str = "127.0.0.1"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        def get(name: str, cast: Any = str) -> Any:
            return read(environ, name, _DEFAULTS[name], cast)

        mailboxes_file = get("TM_EMAIL_MAILBOXES_FILE").strip()
        if mailboxes_file:
            mailboxes = load_mailboxes(mailboxes_file, environ)
        else:
            mailboxes = (MailboxSettings(
                name=get("TM_IMAP_MAILBOX_NAME"),
                host=get("TM_IMAP_HOST"),
                port=get("TM_IMAP_PORT", int),
                user=get("TM_IMAP_USER"),
                password=get("TM_IMAP_PASSWORD"),
                folder=get("TM_IMAP_FOLDER"),
                ssl=get("TM_IMAP_SSL", as_bool),
                poll_seconds=get("TM_IMAP_POLL_SECONDS", float),
                max_message_bytes=get("TM_IMAP_MAX_MESSAGE_BYTES", _positive_int),
            ),)
        secret, _dev_default = mail_tokens.secret_from_env(environ)
        return cls(common=CommonSettings.from_env(environ), mailboxes=mailboxes,
                   mail_from=get("TM_MAIL_FROM", _address), token_secret=secret,
                   reopen_days=get("TM_EMAIL_REOPEN_DAYS", parse_reopen_days),
                   sender_from_reply_to=get("TM_EMAIL_SENDER_FROM_REPLY_TO", as_bool),
                   roster_file=get("TM_ROSTER_FILE"),
                   attachment_max_bytes=get("TM_EMAIL_ATTACHMENT_MAX_BYTES", _size),
                   attachments_max_total_bytes=get("TM_EMAIL_ATTACHMENTS_MAX_TOTAL_BYTES", _size),
                   flood_max=get("TM_EMAIL_FLOOD_MAX", _positive_int),
                   flood_window_minutes=get("TM_EMAIL_FLOOD_WINDOW_MINUTES", _positive_float),
                   stall_seconds=get("TM_IMAP_STALL_SECONDS", _positive_float),
                   health_port=get("TM_INTAKE_EMAIL_HEALTH_PORT", int),
                   health_host=get("TM_INTAKE_EMAIL_HEALTH_HOST"))

    def nameko_extra(self) -> dict[str, Any]:
        """What the service reads from its nameko config besides AMQP_URI and TM_REDIS_URL."""
        return {
            MAILBOXES_CONFIG_KEY: [m.to_config() for m in self.mailboxes],
            DATA_DIR_CONFIG_KEY: self.common.data_dir,
            REPLICA_CONFIG_KEY: self.common.replica_id,
            MAIL_FROM_CONFIG_KEY: self.mail_from,
            ATTACHMENT_MAX_BYTES_CONFIG_KEY: self.attachment_max_bytes,
            ATTACHMENTS_MAX_TOTAL_BYTES_CONFIG_KEY: self.attachments_max_total_bytes,
            # Unset when it is the dev default, so the service warns about it at start.
            TOKEN_SECRET_CONFIG_KEY: ("" if self.token_secret == mail_tokens.DEV_SECRET.encode()
                                      else self.token_secret.decode()),
            REOPEN_DAYS_CONFIG_KEY: self.reopen_days,
            SENDER_FROM_REPLY_TO_CONFIG_KEY: self.sender_from_reply_to,
            ROSTER_FILE_CONFIG_KEY: self.roster_file,
            FLOOD_MAX_CONFIG_KEY: self.flood_max,
            FLOOD_WINDOW_CONFIG_KEY: self.flood_window_minutes,
            STALL_CONFIG_KEY: self.stall_seconds,
            WEB_SERVER_CONFIG_KEY: f"{self.health_host}:{self.health_port}",
        }
