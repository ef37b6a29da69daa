"""TM_EMAIL_MAILBOXES_FILE: the format, and errors that name the file, the entry and the field."""
import textwrap

import pytest

from shared.config import ConfigError
from services.intake_email.config import (MAILBOXES_CONFIG_KEY, WEB_SERVER_CONFIG_KEY, MailboxSettings, Settings,
                                          load_mailboxes)

SUPPORT = """
  - name: support
    host: 127.0.0.1
    port: 1143
    ssl: false
    user: support
    password_env: TM_IMAP_SUPPORT_PASSWORD
    folder: INBOX
    after: seen
    poll_seconds: 30
"""


def write(tmp_path, body):
    path = tmp_path / "mailboxes.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def test_two_mailboxes_with_every_kind_of_secret(tmp_path):
    (tmp_path / "sales.pw").write_text("sales-secret\n")
    (tmp_path / "token").write_text("tok")
    more = textwrap.dedent(f"""
          - name: sales.cn
            host: imap.example.com
            port: 993
            ssl: true
            user: sales
            password_file: {tmp_path / 'sales.pw'}
            after: archive
            archive_folder: Done
            max_message_bytes: 1000
            reject_oversize: true
          - name: o365
            host: outlook.office365.com
            port: 993
            ssl: true
            user: help@contoso.example
            xoauth2_token_file: {tmp_path / 'token'}
    """)
    path = write(tmp_path, "mailboxes:" + SUPPORT + textwrap.indent(more, "  "))
    support, sales, o365 = load_mailboxes(path, {"TM_IMAP_SUPPORT_PASSWORD": "pw1"})
    assert (support.name, support.password, support.after, support.max_message_bytes) == \
        ("support", "pw1", "seen", 10 * 1024 * 1024)
    assert (sales.password, sales.ssl, sales.after, sales.archive_folder, sales.max_message_bytes,
            sales.reject_oversize) == ("sales-secret", True, "archive", "Done", 1000, True)
    assert (o365.password, o365.xoauth2_token_file) == ("", str(tmp_path / "token"))
    assert "pw1" not in repr(support) and "sales-secret" not in repr(sales)
    assert MailboxSettings.from_config(sales.to_config()) == sales


def test_the_file_replaces_the_single_tm_imap_mailbox_and_reaches_the_service_config(tmp_path):
    path = write(tmp_path, "mailboxes:" + SUPPORT)
    settings = Settings.from_env({"TM_EMAIL_MAILBOXES_FILE": str(path), "TM_IMAP_SUPPORT_PASSWORD": "pw1",
                                  "TM_INTAKE_EMAIL_HEALTH_PORT": "9999"})
    extra = settings.nameko_extra()
    assert [m["name"] for m in extra[MAILBOXES_CONFIG_KEY]] == ["support"]
    assert extra[WEB_SERVER_CONFIG_KEY] == "127.0.0.1:9999"
    default = Settings.from_env({})
    assert [(m.name, m.password, m.max_message_bytes) for m in default.mailboxes] == \
        [("support", "support-demo", 10 * 1024 * 1024)]
    assert (default.flood_max, default.flood_window_minutes, default.stall_seconds, default.health_port) == \
        (20, 10.0, 120.0, 8084)


BAD_FILES = [
    ("not a list", "mailboxes: 3", "mailboxes: Input should be a valid list"),
    ("empty list", "mailboxes: []", "mailboxes: List should have at least 1 item"),
    ("unknown top-level key", "mailboxes:" + SUPPORT + "mailbox: []\n", "mailbox: Extra inputs are not permitted"),
    ("unknown key", "mailboxes:" + SUPPORT + "    pasword: x\n", "mailbox 1 'support': pasword: Extra inputs"),
    ("bad name", "mailboxes:" + SUPPORT.replace("name: support", "name: sup port"),
     "mailbox 1 'sup port': name: String should match pattern"),
    ("missing host", "mailboxes:" + SUPPORT.replace("    host: 127.0.0.1\n", ""), "mailbox 1 'support': host: Field required"),
    ("bad port", "mailboxes:" + SUPPORT.replace("1143", "70000"), "mailbox 1 'support': port: Input should be less"),
    ("bad after", "mailboxes:" + SUPPORT.replace("after: seen", "after: delete"), "mailbox 1 'support': after: Input should be 'seen' or 'archive'"),
    ("no secret", "mailboxes:" + SUPPORT.replace("    password_env: TM_IMAP_SUPPORT_PASSWORD\n", ""),
     "mailbox 1 'support': mailbox: Value error, give exactly one of password_env, password_file, xoauth2_token_file"),
    ("two secrets", "mailboxes:" + SUPPORT + "    password_file: /x\n", "(got password_env, password_file)"),
    ("archive into itself", "mailboxes:" + SUPPORT.replace("after: seen", "after: archive\n    archive_folder: INBOX"),
     "archive_folder must differ from folder"),
    ("duplicate names", "mailboxes:" + SUPPORT + SUPPORT, "mailbox names must be unique; repeated: support"),
    ("secret env var not set", "mailboxes:" + SUPPORT.replace("TM_IMAP_SUPPORT_PASSWORD", "TM_NOT_SET_PW"),
     "mailbox 1 'support': password_env: environment variable TM_NOT_SET_PW is not set"),
    ("password file missing", "mailboxes:" + SUPPORT.replace("password_env: TM_IMAP_SUPPORT_PASSWORD", "password_file: /nonexistent/pw"),
     "mailbox 1 'support': password_file: cannot read /nonexistent/pw"),
    ("token file missing", "mailboxes:" + SUPPORT.replace("password_env: TM_IMAP_SUPPORT_PASSWORD", "xoauth2_token_file: /nonexistent/t"),
     "mailbox 1 'support': xoauth2_token_file: /nonexistent/t does not exist"),
    ("not yaml", "mailboxes: [", "is not valid YAML"),
]


@pytest.mark.parametrize("body, expected", [(b, e) for _, b, e in BAD_FILES], ids=[n for n, _, _ in BAD_FILES])
def test_a_bad_file_is_refused_with_the_file_entry_and_field(tmp_path, body, expected):
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"TM_EMAIL_MAILBOXES_FILE": str(path), "TM_IMAP_SUPPORT_PASSWORD": "pw1"})
    message = str(refused.value)
    assert str(path) in message
    assert expected in message


def test_a_missing_file_names_it():
    with pytest.raises(ConfigError, match="cannot read mailboxes file /nonexistent/mailboxes.yaml"):
        Settings.from_env({"TM_EMAIL_MAILBOXES_FILE": "/nonexistent/mailboxes.yaml"})


@pytest.mark.parametrize("name, value", [("TM_EMAIL_FLOOD_MAX", "0"), ("TM_EMAIL_FLOOD_WINDOW_MINUTES", "-1"),
                                         ("TM_IMAP_STALL_SECONDS", "x"), ("TM_IMAP_MAX_MESSAGE_BYTES", "0")])
def test_limits_must_be_positive(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
