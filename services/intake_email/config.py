"""intake_email settings: the common ones plus the watched mailbox.

One mailbox for now (``TM_IMAP_*``). Everything downstream — the watcher, the checkpoint and
lease keys, quarantine folders — is keyed by the mailbox's *name*, and the nameko config holds
a list of mailboxes, so watching several is a matter of reading more of them here.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from shared import mail_tokens
from shared.config import CommonSettings, ConfigError, Variable, as_bool, read

DEFAULT_MAIL_FROM = "support@ticketmesh.test"
VARIABLES = (
    Variable("TM_IMAP_MAILBOX_NAME", "support", "name of the mailbox in keys, logs and quarantine paths "
             "([A-Za-z0-9_.-]); keep it when moving the account, change it for a different one"),
    Variable("TM_IMAP_HOST", "127.0.0.1", "IMAP server"),
    Variable("TM_IMAP_PORT", "1143", "IMAP port (993 with TM_IMAP_SSL=true)"),
    Variable("TM_IMAP_USER", "support", "IMAP login"),
    Variable("TM_IMAP_PASSWORD", "support-demo", "IMAP password"),
    Variable("TM_IMAP_FOLDER", "INBOX", "folder to watch"),
    Variable("TM_IMAP_SSL", "false", "connect with TLS (IMAPS)"),
    Variable("TM_IMAP_POLL_SECONDS", "30", "IDLE is re-issued this often; servers without IDLE are polled this often"),
    Variable("TM_IMAP_MAX_MESSAGE_BYTES", str(25 * 1024 * 1024), "larger messages are quarantined unread"),
    # The same variable the notifier sends from: mail From this address is our own coming back.
    Variable("TM_MAIL_FROM", DEFAULT_MAIL_FROM, "our support address (as the notifier's TM_MAIL_FROM); inbound "
             "mail From it is our own mail looping back and never becomes a ticket"),
    Variable("TM_EMAIL_ATTACHMENT_MAX_BYTES", str(10 * 1024 * 1024), "an attachment or inline image larger than "
             "this is listed on the ticket but not stored"),
    Variable("TM_EMAIL_ATTACHMENTS_MAX_TOTAL_BYTES", str(25 * 1024 * 1024), "attachments of one message are "
             "stored up to this many bytes in all; the rest are listed but not stored"),
    *mail_tokens.VARIABLES,
    Variable("TM_EMAIL_REOPEN_DAYS", "14", "a reply to a ticket resolved less than this many days ago (fractions "
             "allowed) follows it up and agent_desk reopens it; later, it opens a new ticket linked to the old one"),
    Variable("TM_EMAIL_SENDER_FROM_REPLY_TO", "false", "the customer is the Reply-To address when the mail has one "
             "(web forms and shared mailboxes sending on behalf of someone)"),
    Variable("TM_ROSTER_FILE", "deploy/demo/roster.yaml", "agent roster: mail an agent's `email` forwards to us "
             "is filed for the original sender"),
)
_DEFAULTS = {v.name: v.default for v in VARIABLES}
ATTACHMENT_MAX_BYTES_CONFIG_KEY = "TM_EMAIL_ATTACHMENT_MAX_BYTES"
ATTACHMENTS_MAX_TOTAL_BYTES_CONFIG_KEY = "TM_EMAIL_ATTACHMENTS_MAX_TOTAL_BYTES"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAILBOXES_CONFIG_KEY = "INTAKE_EMAIL_MAILBOXES"
DATA_DIR_CONFIG_KEY = "TM_DATA_DIR"
REPLICA_CONFIG_KEY = "TM_REPLICA_ID"
MAIL_FROM_CONFIG_KEY = "TM_MAIL_FROM"
TOKEN_SECRET_CONFIG_KEY = mail_tokens.SECRET_VARIABLE
REOPEN_DAYS_CONFIG_KEY = "TM_EMAIL_REOPEN_DAYS"
SENDER_FROM_REPLY_TO_CONFIG_KEY = "TM_EMAIL_SENDER_FROM_REPLY_TO"
ROSTER_FILE_CONFIG_KEY = "TM_ROSTER_FILE"
DEFAULT_REOPEN_DAYS = 14.0


def _days(raw: str) -> float:
    days = float(raw)
    if not days >= 0:
        raise ValueError("expected a number of days >= 0")
    return days


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


@dataclass(frozen=True)
class MailboxSettings:
    name: str
    host: str
    port: int
    user: str
    password: str
    folder: str = "INBOX"
    ssl: bool = False
    poll_seconds: float = 30.0
    max_message_bytes: int = 25 * 1024 * 1024
    reconnect_max_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"mailbox name {self.name!r} must match {_NAME.pattern}")
        if self.poll_seconds <= 0:
            raise ConfigError("TM_IMAP_POLL_SECONDS must be positive")

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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        def get(name: str, cast: Any = str) -> Any:
            return read(environ, name, _DEFAULTS[name], cast)

        mailbox = MailboxSettings(
            name=get("TM_IMAP_MAILBOX_NAME"),
            host=get("TM_IMAP_HOST"),
            port=get("TM_IMAP_PORT", int),
            user=get("TM_IMAP_USER"),
            password=get("TM_IMAP_PASSWORD"),
            folder=get("TM_IMAP_FOLDER"),
            ssl=get("TM_IMAP_SSL", as_bool),
            poll_seconds=get("TM_IMAP_POLL_SECONDS", float),
            max_message_bytes=get("TM_IMAP_MAX_MESSAGE_BYTES", int),
        )
        secret, _dev_default = mail_tokens.secret_from_env(environ)
        return cls(common=CommonSettings.from_env(environ), mailboxes=(mailbox,),
                   mail_from=get("TM_MAIL_FROM", _address), token_secret=secret,
                   reopen_days=get("TM_EMAIL_REOPEN_DAYS", _days),
                   sender_from_reply_to=get("TM_EMAIL_SENDER_FROM_REPLY_TO", as_bool),
                   roster_file=get("TM_ROSTER_FILE"),
                   attachment_max_bytes=get("TM_EMAIL_ATTACHMENT_MAX_BYTES", _size),
                   attachments_max_total_bytes=get("TM_EMAIL_ATTACHMENTS_MAX_TOTAL_BYTES", _size))

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
        }
