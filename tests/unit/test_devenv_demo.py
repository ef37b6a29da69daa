"""The demo's customer mail looks like a real Chinese mail program's, and its logins are real."""
from datetime import datetime, timezone
from email import message_from_bytes, policy

from devenv.config import DevSettings
from devenv.demo import DEMO_PASSWORDS, EMAILS, banner, build_email, demo_logins

NOW = datetime(2026, 11, 22, 16, 0, tzinfo=timezone.utc)


def test_chinese_demo_mail_is_gb18030_encoded_and_decodes_back():
    mail = EMAILS[0]
    raw = build_email(mail, to="support@ticketmesh.test", now=NOW)
    assert b"=?gb18030?" in raw.lower()
    assert mail.subject.encode("utf-8") not in raw  # encoded, not raw UTF-8
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["Subject"] == mail.subject
    assert parsed["From"].addresses[0].display_name == mail.from_name
    assert parsed.get_content_charset() == "gb18030"
    assert parsed.get_content().strip() == mail.body.strip()


def test_every_demo_mail_has_a_unique_message_id():
    ids = {message_from_bytes(build_email(m, to="s@t.test", now=NOW))["Message-ID"] for m in EMAILS * 2}
    assert len(ids) == len(EMAILS) * 2


def test_demo_logins_match_the_roster_hashes():
    settings = DevSettings.from_env({})
    lines = demo_logins(settings.roster_file)
    assert len(lines) == 4
    for agent_id, password in DEMO_PASSWORDS.items():
        assert any(line.startswith(agent_id) and password in line for line in lines), agent_id
    assert any("wang.fang" in line and "supervisor" in line for line in lines)


def test_banner_names_the_urls_and_what_to_do():
    text = banner(DevSettings.from_env({}))
    for needle in ("http://127.0.0.1:8080/", "http://127.0.0.1:8081/", "http://127.0.0.1:8025/",
                   "sign in as li.na and click online", "offered", "accept", "decline", "supervisor tab"):
        assert needle.lower() in text.lower()
