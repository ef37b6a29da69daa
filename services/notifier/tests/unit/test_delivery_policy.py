"""After a failed SMTP attempt: retry, or stop, and whether to blame the address; backoff."""
import pytest

from services.notifier import delivery_policy as dp
from services.notifier.config import STARTTLS, TLS, DeliverySettings, Settings
from shared.config import ConfigError


@pytest.mark.parametrize("stage, code, reply, expected", [
    (dp.CONNECT, None, "ConnectionRefusedError", dp.RETRY),
    (dp.DATA, None, "SMTPReadTimeoutError: timed out", dp.RETRY),
    (dp.RCPT, 450, "4.2.1 Mailbox busy", dp.RETRY),
    (dp.RCPT, 451, "4.7.1 Greylisted, try again later", dp.RETRY),
    (dp.MAIL, 421, "4.3.2 Service shutting down", dp.RETRY),
    (dp.RCPT, 550, "5.1.1 <x@example.com>: Recipient address rejected: User unknown", dp.REFUSED_ADDRESS),
    (dp.RCPT, 550, "5.2.1 Mailbox disabled", dp.REFUSED_ADDRESS),
    (dp.RCPT, 552, "5.2.2 Mailbox full", dp.REFUSED_ADDRESS),
    (dp.RCPT, 550, "Mailbox unavailable", dp.REFUSED_ADDRESS),           # no enhanced status: the code decides
    (dp.RCPT, 553, "Requested action not taken: mailbox name not allowed", dp.REFUSED_ADDRESS),
    # The relay's policy, not the mailbox: the address must not be suppressed for 60 days.
    (dp.RCPT, 554, "5.7.1 <x@example.com>: Relay access denied", dp.REFUSED),
    (dp.RCPT, 550, "5.7.1 Client host rejected", dp.REFUSED),
    (dp.RCPT, 554, "Transaction failed", dp.REFUSED),
    (dp.AUTH, 535, "5.7.8 Authentication credentials invalid", dp.REFUSED),
    (dp.MAIL, 553, "5.1.8 Sender address rejected", dp.REFUSED),       # 5.1.x, but about our sender
    (dp.DATA, 554, "5.6.0 Message content rejected", dp.REFUSED),
])
def test_verdict(stage, code, reply, expected):
    assert dp.verdict(dp.SmtpFailure(stage, code, reply)) == expected


def test_failure_text_says_stage_and_answer_in_at_most_500_characters():
    assert str(dp.SmtpFailure(dp.RCPT, 451, "4.7.1 later")) == "rcpt: SMTP 451 4.7.1 later"
    assert str(dp.SmtpFailure(dp.CONNECT, None, "")) == "connect: no answer"
    assert len(str(dp.SmtpFailure(dp.DATA, 554, "x" * 2000))) == 500


def test_backoff_doubles_up_to_the_cap_with_full_jitter():
    ceilings = [dp.retry_delay(n, base=30, cap=3600, random=lambda: 1.0) for n in range(1, 10)]
    assert ceilings == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert dp.retry_delay(3, base=30, cap=3600, random=lambda: 0.0) == 0
    assert dp.retry_delay(3, base=30, cap=3600, random=lambda: 0.25) == 30


def test_delivery_settings_defaults_and_tls_modes():
    assert Settings.from_env({}).delivery == DeliverySettings()
    assert Settings.from_env({"TM_SMTP_STARTTLS": "true"}).delivery.tls == STARTTLS
    assert Settings.from_env({"TM_SMTP_TLS": "yes"}).delivery.tls == TLS
    custom = Settings.from_env({"TM_NOTIFIER_MAX_ATTEMPTS": "3", "TM_NOTIFIER_CAPS_PER_TICKET": "5:2",
                                "TM_NOTIFIER_CAPS_PER_RECIPIENT": "off", "TM_NOTIFIER_SENDERS": "2"}).delivery
    assert custom.max_attempts == 3 and custom.senders == 2
    assert [(w.seconds, w.limit) for w in custom.caps.per_ticket] == [(300, 2)] and custom.caps.per_recipient == ()


@pytest.mark.parametrize("environ, complaint", [
    ({"TM_SMTP_STARTTLS": "true", "TM_SMTP_TLS": "true"}, "exclusive"),
    ({"TM_SMTP_CA_FILE": "/nonexistent/ca.pem"}, "not a file"),
    ({"TM_NOTIFIER_RETRY_BASE_SECONDS": "60", "TM_NOTIFIER_RETRY_CAP_SECONDS": "30"}, "below"),
    ({"TM_SMTP_TIMEOUT": "10", "TM_NOTIFIER_LEASE_SECONDS": "15"}, "at least 2 x TM_SMTP_TIMEOUT"),
    ({"TM_NOTIFIER_MAX_ATTEMPTS": "0"}, "TM_NOTIFIER_MAX_ATTEMPTS"),
    ({"TM_NOTIFIER_CAPS_PER_TICKET": "10"}, "TM_NOTIFIER_CAPS_PER_TICKET"),
])
def test_bad_delivery_settings_stop_the_start(environ, complaint):
    with pytest.raises(ConfigError, match=complaint):
        Settings.from_env(environ)
