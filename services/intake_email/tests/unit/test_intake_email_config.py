"""TM_MAIL_FROM: intake_email reads the notifier's sender address to recognise its own mail."""
import pytest

from shared.config import ConfigError
from services.intake_email.config import MAIL_FROM_CONFIG_KEY, Settings


def test_our_address_defaults_to_the_notifiers_default_and_reaches_the_service_config():
    assert Settings.from_env({}).mail_from == "support@ticketmesh.test"
    settings = Settings.from_env({"TM_MAIL_FROM": " Help@Acme.example "})
    assert settings.nameko_extra()[MAIL_FROM_CONFIG_KEY] == "help@acme.example"


def test_an_unusable_address_is_refused_at_start():
    with pytest.raises(ConfigError, match="TM_MAIL_FROM"):
        Settings.from_env({"TM_MAIL_FROM": "support"})
