import eventlet

eventlet.monkey_patch()  # nameko containers in this folder; asyncio tests run in another process

pytest_plugins = ["shared.testing.plugin"]

import uuid  # noqa: E402
from email.message import EmailMessage  # noqa: E402
from email.utils import make_msgid  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from devenv.dovecot import DovecotServer  # noqa: E402
from shared.testing.mesh_fixtures import running_dovecot  # noqa: E402
from shared.testing.plugin import poll_until as wait_until  # noqa: E402,F401 - the tests import it from here
from services.intake_email.config import (DATA_DIR_CONFIG_KEY, FLOOD_MAX_CONFIG_KEY,  # noqa: E402
                                          MAILBOXES_CONFIG_KEY, WEB_SERVER_CONFIG_KEY, MailboxSettings)
from services.intake_email.service import IntakeEmailService  # noqa: E402
from services.intake_email.store import IntakeEmailStore  # noqa: E402

USER = "support"
MAILBOX = "support"
TEST_FLOOD_MAX = 100_000


def make_mail(subject: str, body: str = "hello", *, sender: str = "Zhang Wei <zhang.wei@example.com>",
              message_id: str | None = "auto", in_reply_to: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    if message_id:
        msg["Message-ID"] = make_msgid(domain="example.com") if message_id == "auto" else message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body)
    return msg.as_bytes()


class Mailbox:
    """The test's own folder on the shared Dovecot, and what the service stored about it."""

    def __init__(self, server: DovecotServer, folder: str, redis_client: Any):
        self.server = server
        self.folder = folder
        self.store = IntakeEmailStore(redis_client)

    def append(self, raw: bytes, flags: tuple[str, ...] = ()) -> int:
        uid = self.server.append(USER, raw, folder=self.folder, flags=flags)
        assert uid is not None, "Dovecot did not report APPENDUID"
        return uid

    def flags(self, uid: int) -> set[bytes]:
        with self.server.client(USER) as conn:
            conn.select_folder(self.folder, readonly=True)
            return set(conn.get_flags([uid]).get(uid, ()))

    def is_seen(self, uid: int) -> bool:
        return b"\\Seen" in self.flags(uid)

    def checkpoint_uid(self) -> int | None:
        checkpoint = self.store.checkpoint(MAILBOX)
        return checkpoint.last_uid if checkpoint else None

    def settings(self, **overrides: Any) -> dict:
        fields = dict(name=MAILBOX, host=self.server.host, port=self.server.port, user=USER,
                      password=self.server.users[USER], folder=self.folder, poll_seconds=30,
                      reconnect_max_seconds=2)
        fields.update(overrides)
        return MailboxSettings(**fields).to_config()


@pytest.fixture(scope="session")
def dovecot():
    # One Dovecot for the session (each test gets its own folder); under /tmp because Dovecot's
    # mail processes run as the `mail` user and cannot enter pytest's private tmp_path.
    yield from running_dovecot("tm-dovecot-test-")


@pytest.fixture
def mailbox(dovecot, redis_client):
    if not dovecot.running:  # a test that restarted it and failed half-way
        dovecot.start()
    folder = f"t-{uuid.uuid4().hex[:10]}"
    with dovecot.client(USER) as conn:
        conn.create_folder(folder)
    return Mailbox(dovecot, folder, redis_client)


@pytest.fixture
def start_intake(service_container, mailbox, tmp_path):
    """``start_intake(ServiceCls=IntakeEmailService, **mailbox_overrides)`` → a started container."""

    def start(service_cls: type = IntakeEmailService, **overrides: Any) -> Any:
        container = service_container(service_cls, **{
            MAILBOXES_CONFIG_KEY: [mailbox.settings(**overrides)],
            DATA_DIR_CONFIG_KEY: str(tmp_path),
            WEB_SERVER_CONFIG_KEY: "127.0.0.1:0",  # /healthz, /readyz: a free port per container
            # Bursts from one test sender are not floods here; test_mailboxes.py tests the limit.
            FLOOD_MAX_CONFIG_KEY: TEST_FLOOD_MAX,
        })
        container.start()
        return container

    return start
