"""intake_email's threading settings reach the service config; the token secret stays out of logs."""
import pytest

from shared import mail_tokens
from shared.config import ConfigError
from services.intake_email.config import (REOPEN_DAYS_CONFIG_KEY, SENDER_FROM_REPLY_TO_CONFIG_KEY,
                                          TOKEN_SECRET_CONFIG_KEY, Settings)


def test_defaults():
    settings = Settings.from_env({})
    extra = settings.nameko_extra()
    assert extra[REOPEN_DAYS_CONFIG_KEY] == 14.0
    assert extra[SENDER_FROM_REPLY_TO_CONFIG_KEY] is False
    assert extra[TOKEN_SECRET_CONFIG_KEY] == ""  # unset: the service warns and uses the dev default
    assert settings.token_secret == mail_tokens.DEV_SECRET.encode()


def test_configured_values():
    secret = "a-production-secret-value"
    settings = Settings.from_env({"TM_MAIL_TOKEN_SECRET": secret, "TM_EMAIL_REOPEN_DAYS": "0.25",
                                  "TM_EMAIL_SENDER_FROM_REPLY_TO": "yes"})
    extra = settings.nameko_extra()
    assert (extra[REOPEN_DAYS_CONFIG_KEY], extra[SENDER_FROM_REPLY_TO_CONFIG_KEY]) == (0.25, True)
    assert extra[TOKEN_SECRET_CONFIG_KEY] == secret
    assert secret not in repr(settings)


@pytest.mark.parametrize("env,names", [
    ({"TM_EMAIL_REOPEN_DAYS": "-1"}, "TM_EMAIL_REOPEN_DAYS"),
    ({"TM_EMAIL_REOPEN_DAYS": "soon"}, "TM_EMAIL_REOPEN_DAYS"),
    ({"TM_EMAIL_REOPEN_DAYS": "31"}, "TM_EMAIL_REOPEN_DAYS=.*cannot be longer than 30 days"),
    ({"TM_EMAIL_SENDER_FROM_REPLY_TO": "maybe"}, "TM_EMAIL_SENDER_FROM_REPLY_TO"),
    ({"TM_MAIL_TOKEN_SECRET": "short"}, "TM_MAIL_TOKEN_SECRET"),
])
def test_bad_values_are_refused_at_start(env, names):
    with pytest.raises(ConfigError, match=names):
        Settings.from_env(env)


def test_the_reopen_window_may_be_as_long_as_ticket_records_are_kept():
    assert Settings.from_env({"TM_EMAIL_REOPEN_DAYS": "30"}).reopen_days == 30.0


def test_reopen_window_fits_in_what_agent_desk_keeps_of_a_resolved_ticket():
    from services.agent_desk.store import VIEW_TTL_SECONDS
    from services.intake_email.config import REOPEN_DAYS_MAX

    assert REOPEN_DAYS_MAX * 86400 <= VIEW_TTL_SECONDS
