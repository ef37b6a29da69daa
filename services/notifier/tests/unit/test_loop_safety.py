"""Who automatic mail must never reach, how much of it one recipient may get, how it is marked."""
from email.message import EmailMessage

import pytest

from services.notifier import loop_safety as ls
from services.notifier import messages as m
from services.notifier.template_check import render_every_template

OURS = "support@ticketmesh.test"


@pytest.mark.parametrize("address", [
    "MAILER-DAEMON@mx.example.com", "postmaster@163.com", "abuse@example.com", "root@example.com",
    "noreply@shop.example", "no-reply@github.com", "no_reply@example.cn", "NoReply.Orders@taobao.com",
    "wx_noreply@tencent.com", "do-not-reply@bank.example", "donotreply@example.com", "DoNotReply@outlook.example",
    "bounce@mail.example", "bounces+12345-abcd=customer.example@sendgrid.net", "bounce-7f3a@esp.example",
    "support-list-bounces@lists.example.org", "owner-support-list@lists.example.org", "team-request@lists.example.org",
    "10000@qq.com", "10000@foxmail.com", "mailer-daemon+tag@example.com",
])
def test_automatic_mail_never_goes_to_a_machines_address(address):
    assert ls.is_system_address(address)
    assert ls.skip_reason(address, automatic=True) == ls.SYSTEM_ADDRESS
    # A person's reply may still go there (someone wrote to us from it and an agent answers).
    assert ls.skip_reason(address, automatic=False) is None


@pytest.mark.parametrize("address", [
    "zhang.wei@example.com", "rooty@example.com", "real.bounce@example.com", "bouncer.li@example.com",
    "reply@example.com", "requester@example.com", "ownership@example.com", "12345678@qq.com", "10000@163.com",
    "daemon.fan@example.com", "norepl@example.com",
])
def test_peoples_addresses_that_look_a_little_like_system_ones_still_get_mail(address):
    assert not ls.is_system_address(address)
    assert ls.skip_reason(address, automatic=True) is None


@pytest.mark.parametrize("address, reason", [
    (None, ls.NO_ADDRESS), ("", ls.NO_ADDRESS), ("   ", ls.NO_ADDRESS),
    ("not an address", ls.INVALID_ADDRESS), ("a@b", ls.INVALID_ADDRESS), ("张伟 <zw@example.com>", ls.INVALID_ADDRESS),
    ("a@example.com, b@example.com", ls.INVALID_ADDRESS), ("x@@example.com", ls.INVALID_ADDRESS),
])
def test_missing_or_malformed_addresses_get_nothing_at_all(address, reason):
    assert ls.skip_reason(address, automatic=True) == reason
    assert ls.skip_reason(address, automatic=False) == reason


def test_a_suppressed_address_gets_nothing_not_even_a_persons_reply():
    assert ls.skip_reason("gone@example.com", automatic=True, bounced=True) == ls.BOUNCED_ADDRESS
    assert ls.skip_reason("gone@example.com", automatic=False, bounced=True) == ls.BOUNCED_ADDRESS


@pytest.mark.parametrize("address", [OURS, "Support@TicketMesh.test", "support+TM-10001.a1b2c3@ticketmesh.test"])
def test_automatic_mail_never_goes_to_our_own_address(address):
    assert ls.skip_reason(address, automatic=True, own_address=OURS) == ls.OWN_ADDRESS


def test_our_domain_is_not_our_address():
    assert ls.skip_reason("li.na@ticketmesh.test", automatic=True, own_address=OURS) is None
    assert ls.skip_reason("support@other.test", automatic=True, own_address=OURS) is None


def test_every_kind_but_an_agents_reply_is_automatic():
    assert not ls.is_automatic("agent_reply")
    for kind in ("ticket_ack", "sla_breached", "mail_rejected", "csat_survey", "a_kind_added_later"):
        assert ls.is_automatic(kind)


def test_automatic_mail_is_marked_without_overriding_what_the_template_set():
    mail = EmailMessage()
    mail["Auto-Submitted"] = "auto-replied"
    ls.mark_automatic(mail, OURS)
    assert mail["Auto-Submitted"] == "auto-replied"
    assert mail["X-Auto-Response-Suppress"] == "All"
    assert mail["Precedence"] == "bulk"
    assert mail["X-Loop"] == OURS
    bare = EmailMessage()
    ls.mark_automatic(bare, OURS)
    ls.mark_automatic(bare, OURS)  # twice: still one of each
    assert bare.get_all("Auto-Submitted") == ["auto-generated"] and len(bare.get_all("X-Loop")) == 1


def test_default_caps_are_zammads_windows():
    per_ticket = ls.parse_windows(ls.DEFAULT_PER_TICKET)
    per_recipient = ls.parse_windows(ls.DEFAULT_PER_RECIPIENT)
    assert [(w.seconds // 60, w.limit) for w in per_ticket] == [(10, 10), (30, 15), (60, 25), (180, 50), (600, 100)]
    assert [(w.seconds // 60, w.limit) for w in per_recipient] == [(10, 30), (30, 60), (60, 120), (180, 240),
                                                                    (600, 360)]
    assert ls.Caps(per_ticket, per_recipient).horizon_seconds == 600 * 60


@pytest.mark.parametrize("raw", ["10", "10:x", "0:5", "10:0", "-5:3", "ten:10"])
def test_bad_cap_settings_are_refused(raw):
    with pytest.raises(ValueError):
        ls.parse_windows(raw)


@pytest.mark.parametrize("raw", ["", " ", "off", "none"])
def test_caps_can_be_switched_off(raw):
    assert ls.parse_windows(raw) == ()
    assert not ls.Caps(ls.parse_windows(raw), ()).applies_to("zhang.wei@example.com")


def test_exempt_addresses_are_never_capped():
    caps = ls.Caps(ls.parse_windows("10:1"), (), ls.parse_exempt(" Duty@Agents.example.com , ,x@example.com"))
    assert not caps.applies_to("duty@agents.example.com")
    assert caps.applies_to("zhang.wei@example.com")


def test_staff_notices_are_capped_per_ticket_only_and_a_persons_reply_not_at_all():
    caps = ls.Caps(ls.parse_windows("10:2"), ls.parse_windows("10:3"), ls.parse_exempt("list@agents.example.com"))
    assert ls.caps_for(m.KIND_AGENT_REPLY, caps) is None
    for kind in (m.KIND_SLA_WARNING, m.KIND_SLA_BREACHED, m.KIND_ESCALATION, m.KIND_ASSIGNMENT):
        assert ls.caps_for(kind, caps) == ls.Caps(caps.per_ticket, (), caps.exempt), kind
    for kind in (m.KIND_TICKET_ACK, m.KIND_TICKET_WAITING, m.KIND_TICKET_RESOLVED, m.KIND_MAIL_REJECTED, "new_kind"):
        assert ls.caps_for(kind, caps) == caps, kind


def test_loop_safetys_kinds_are_the_notifiers_kinds():
    assert ls.PERSONAL_KINDS <= set(m.MAIL_KINDS) and ls.STAFF_KINDS <= set(m.MAIL_KINDS)


def test_every_rendered_mail_is_marked_as_its_kind_says():
    """The builders mark as they render; what they mark must be what loop safety calls automatic,
    with RFC 3834's value: an answer to the customer's own mail is auto-replied, the rest
    (resolution with its CSAT survey, waiting-on-you, staff notices) auto-generated."""
    auto_replied = {m.KIND_TICKET_ACK, m.KIND_MAIL_REJECTED}
    for (kind, locale), mail in render_every_template().items():
        if kind not in m.MAIL_KINDS:
            continue  # a robot's text
        if not ls.is_automatic(kind):
            assert all(mail[h] is None for h in ("Auto-Submitted", "Precedence", "X-Loop")), kind
            continue
        expected = ls.AUTO_REPLIED if kind in auto_replied else ls.AUTO_GENERATED
        assert mail.get_all("Auto-Submitted") == [expected], (kind, locale)
        assert (mail["X-Auto-Response-Suppress"], mail["Precedence"], mail["X-Loop"]) == (
            "All", "bulk", "support@ticketmesh.test"), (kind, locale)


def test_a_window_is_full_at_its_limit_and_slides():
    windows = ls.parse_windows("10:3,60:5")
    minute = 60.0
    now = 100 * minute
    assert ls.exceeded(windows, [now - 1, now - 2], now) is None
    assert ls.exceeded(windows, [now - 1, now - 2, now - 3], now) == windows[0]
    # The oldest of three left the 10-minute window: room again.
    assert ls.exceeded(windows, [now - 10 * minute, now - 2, now - 3], now) is None
    # Five in the hour, spread so that no 10 minutes hold three: the hour is full.
    spread = [now - m * minute for m in (1, 11, 21, 31, 41)]
    assert ls.exceeded(windows, spread, now) == windows[1]
    assert ls.exceeded(windows, spread, now + 20 * minute) is None
