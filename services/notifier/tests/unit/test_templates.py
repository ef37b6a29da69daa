"""Every mail kind exists in zh-CN and English and renders; what the new customer and staff
mails say and carry (links, expected time, survey, threading, internal headers)."""
from __future__ import annotations

from datetime import timedelta, timezone
from email import message_from_bytes
from zoneinfo import ZoneInfo

import pytest
from jinja2 import UndefinedError

from services.intake_email import automatic, thread_match
from services.notifier import messages as m
from services.notifier.template_check import render_every_template
from services.notifier.tests.factories import NOW, parse, ticket_received
from shared import customer_links, mail_tokens

TOKEN_SECRET = b"notifier-test-token-secret"
SENDER = m.Sender("support@ticketmesh.test", "TicketMesh 客服", TOKEN_SECRET)
STATUS = "https://help.example.com/status/TM-10001.status.abc.sig"
CSAT = "https://help.example.com/csat/TM-10001.csat.abc.sig"


@pytest.fixture(autouse=True)
def _shipped_templates():
    yield
    m.use_templates_from(None)  # a test that overrides templates must not leak into the next


def _contact(**kw) -> m.Contact:
    return m.Contact.from_ticket(parse("intake_email", "ticket_received", ticket_received(**kw)))


def test_every_kind_has_both_languages_and_no_stray_template_exists():
    names = {p.name for p in m.TEMPLATES_DIR.glob("*.j2")}
    for kind in (*m.MAIL_KINDS, *m.ROBOT_KINDS):
        for locale in m.LOCALES:
            assert f"{kind}.{locale}.txt.j2" in names, f"{kind} has no {locale} text template"
    for name in names:
        kind, locale, rest = name.split(".", 2)
        assert kind in (*m.MAIL_KINDS, *m.ROBOT_KINDS), f"{name}: not a kind the notifier sends"
        assert locale in m.LOCALES and rest in ("txt.j2", "html.j2"), name
        for other in m.LOCALES:  # an HTML part in one language only would be a half-translated mail
            assert f"{kind}.{other}.{rest}" in names, f"{name} has no {other} twin"


def test_every_template_renders_in_both_languages_through_the_real_builders():
    rendered = render_every_template()
    assert {kind for kind, _ in rendered} == {*m.MAIL_KINDS, *m.ROBOT_KINDS}
    for kind in m.MAIL_KINDS:
        zh, en = rendered[(kind, "zh-CN")], rendered[(kind, "en")]
        assert zh["Subject"] != en["Subject"], kind
        zh_text = zh.get_body(("plain",)).get_content()
        en_text = en.get_body(("plain",)).get_content()
        assert zh_text != en_text and "{{" not in zh_text + en_text and "{%" not in zh_text + en_text, kind
    for kind in m.ROBOT_KINDS:
        (zh_title, zh_body), (en_title, en_body) = rendered[(kind, "zh-CN")], rendered[(kind, "en")]
        assert "TM-10001" in zh_title and "TM-10001" in en_title and zh_body != en_body


def test_a_template_naming_an_unknown_value_fails_at_the_start_check(tmp_path):
    (tmp_path / "ticket_ack.en.txt.j2").write_text(
        "{% block subject %}Hi {{ ticket_number }}{% endblock %}{% block body %}x{% endblock %}")
    m.use_templates_from(tmp_path)
    with pytest.raises(UndefinedError, match="ticket_number"):
        render_every_template()


def test_an_override_directory_changes_wording_without_code(tmp_path):
    (tmp_path / "ticket_ack.en.txt.j2").write_text(
        "{% block subject %}[#{{ ticket_id }}] Thanks, {{ customer_name }}{% endblock %}"
        "{% block body %}Ticket {{ ticket_id }}: {{ status_url }}{% endblock %}")
    m.use_templates_from(tmp_path)
    mail = m.ticket_ack(_contact(language="en", name="Ann"), sender=SENDER, notification="n1", now=NOW,
                        status_url=STATUS)
    assert mail["Subject"] == "[#TM-10001] Thanks, Ann"
    assert mail.get_content() == f"Ticket TM-10001: {STATUS}\n"
    # the kinds not overridden still come from the shipped files
    assert "工单号为" in m.ticket_ack(_contact(), sender=SENDER, notification="n1", now=NOW).get_content()
    with pytest.raises(ValueError, match="does not exist"):
        m.use_templates_from(tmp_path / "missing")


def test_ack_promises_the_expected_time_in_the_mail_zone_and_links_the_status_page():
    mail = m.ticket_ack(_contact(), sender=SENDER, notification="n1", now=NOW, status_url=STATUS,
                        expected_by=NOW + timedelta(hours=1), zone=ZoneInfo("Asia/Shanghai"))
    body = mail.get_content()
    assert "工单号为 TM-10001" in body
    assert "我们预计最晚于 2026-03-02 17:30 (UTC+08:00) 前给您首次回复" in body  # 09:30 UTC in Shanghai
    assert STATUS in body and "尽快回复" not in body
    english = m.ticket_ack(_contact(language="en", name="Ann"), sender=SENDER, notification="n1", now=NOW,
                           status_url=STATUS, expected_by=NOW + timedelta(minutes=15), zone=timezone.utc)
    assert "first answer by 2026-03-02 08:45 (UTC+00:00) at the latest" in english.get_content()


def test_ack_before_classification_promises_no_time():
    body = m.ticket_ack(_contact(), sender=SENDER, notification="n1", now=NOW, status_url=STATUS).get_content()
    assert "客服人员会尽快回复您" in body and "预计" not in body and STATUS in body


def test_resolution_asks_for_the_survey_in_text_and_with_five_escaped_buttons_in_html():
    contact = _contact(name="<b>张伟</b>", source={"message_id": "<q@example.com>"})
    mail = m.ticket_resolved(contact, agent_name="李娜", thread=m.Thread(), status_url=STATUS, csat_url=CSAT,
                             sender=SENDER, notification="n5", now=NOW)
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert CSAT in text and STATUS in text and "<b>张伟</b>" in text  # text is text
    for score in range(1, 6):
        assert f'href="{CSAT}?score={score}"' in html
    assert "&lt;b&gt;张伟&lt;/b&gt;" in html and "<b>张伟</b>" not in html  # HTML escapes the customer's name
    assert mail["Subject"] == "[#TM-10001] 您的请求已解决：发票抬头错误"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["In-Reply-To"] == "<q@example.com>"  # threaded onto the customer's first mail


def test_resolution_without_survey_has_no_survey_link():
    mail = m.ticket_resolved(_contact(language="en"), agent_name="", thread=m.Thread(), status_url=STATUS,
                             csat_url=None, sender=SENDER, notification="n5", now=NOW)
    assert "csat" not in mail.as_string().lower() and "Rate us" not in mail.get_body(("plain",)).get_content()


def test_waiting_notice_threads_on_our_last_mail():
    thread = m.Thread(subject="发票抬头错误", customer_message_id="<c@example.com>",
                      ack_message_id="<tm.TM-10001.a@ticketmesh.test>", last_reply_message_id="<tm.TM-10001.r@ticketmesh.test>")
    mail = m.ticket_waiting(_contact(), agent_name="李娜", thread=thread, status_url=STATUS, sender=SENDER,
                            notification="n6", now=NOW)
    assert mail["Subject"] == "[#TM-10001] 等待您的回复：发票抬头错误"
    assert mail["In-Reply-To"] == "<tm.TM-10001.r@ticketmesh.test>"
    assert "李娜需要您提供更多信息" in mail.get_content()


@pytest.mark.parametrize("kind", [m.KIND_TICKET_WAITING, m.KIND_TICKET_RESOLVED])
def test_customer_updates_carry_the_signed_tokens_intake_threads_on(kind):
    contact = _contact(ticket_id="TM-10042")
    build = m.ticket_waiting if kind == m.KIND_TICKET_WAITING else m.ticket_resolved
    extra = {} if kind == m.KIND_TICKET_WAITING else {"csat_url": CSAT}
    mail = build(contact, agent_name="李娜", thread=m.Thread(), status_url=STATUS, sender=SENDER, notification="9f" * 16,
                 now=NOW, **extra)
    assert mail_tokens.ticket_from_message_id(TOKEN_SECRET, mail["Message-ID"]) == "TM-10042"
    reply_to = mail["Reply-To"].addresses[0].addr_spec
    assert mail_tokens.ticket_from_address(TOKEN_SECRET, reply_to) == "TM-10042"
    facts = thread_match.ThreadFacts(from_email="zhang.wei@example.com", subject=f"Re: {mail['Subject']}",
                                     message_id="answer@example.com", in_reply_to=(mail["Message-ID"].strip("<>"),),
                                     references=(), recipients=(reply_to,))
    assert thread_match.decide(facts, TOKEN_SECRET, thread_match.Lookups()).ticket_id == "TM-10042"


def test_staff_notices_never_thread_into_the_customers_ticket():
    rendered = render_every_template(("zh-CN",))
    for kind in (m.KIND_SLA_WARNING, m.KIND_ESCALATION, m.KIND_ASSIGNMENT):
        mail = rendered[(kind, "zh-CN")]
        assert mail["Reply-To"] is None, kind
        assert mail_tokens.ticket_from_message_id(mail_tokens.DEV_SECRET.encode(), mail["Message-ID"]) is None, kind
        assert mail["Auto-Submitted"] == "auto-generated" and "[#TM-10001]" in mail["Subject"], kind
        # a copy coming back is still recognised as our own mail
        assert automatic.classify(message_from_bytes(mail.as_bytes()), our_address="support@ticketmesh.test").kind == "loop"


def test_local_minute_is_unambiguous():
    assert m.local_minute(NOW, ZoneInfo("Asia/Shanghai")) == "2026-03-02 16:30 (UTC+08:00)"
    assert m.local_minute(NOW, ZoneInfo("America/New_York")) == "2026-03-02 03:30 (UTC-05:00)"


def test_agents_get_mail_in_their_first_language():
    assert m.locale_of_languages(["en"]) == "en"
    assert m.locale_of_languages(["zh", "en"]) == "zh-CN"
    assert m.locale_of_languages([]) == "zh-CN"


def test_customer_links_in_mail_open_only_their_page():
    url = customer_links.url("https://help.example.com", b"k" * 16, "TM-10001", "csat", now=NOW)
    token = url.rsplit("/", 1)[1]
    assert customer_links.read_token(b"k" * 16, token, "csat", now=NOW).ticket_id == "TM-10001"
    with pytest.raises(customer_links.LinkInvalid):
        customer_links.read_token(b"k" * 16, token, "status", now=NOW)
