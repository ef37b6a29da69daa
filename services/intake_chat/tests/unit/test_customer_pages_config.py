import pytest

from shared.config import ConfigError
from shared.customer_links import DEV_SECRET

from services.intake_chat.config import VARIABLES, Settings


def test_the_pages_sign_with_the_shared_customer_link_secret():
    settings = Settings.from_env({"TM_CUSTOMER_LINK_SECRET": "a-real-secret-for-production"})
    assert settings.link_secret == b"a-real-secret-for-production" and not settings.link_secret_is_dev_default
    assert "a-real-secret" not in repr(settings)
    assert {"TM_CUSTOMER_LINK_SECRET", "TM_CUSTOMER_BASE_URL"} <= {v.name for v in VARIABLES}


def test_without_a_secret_the_dev_default_is_used_and_flagged():
    settings = Settings.from_env({})
    assert settings.link_secret == DEV_SECRET.encode() and settings.link_secret_is_dev_default
    assert (settings.phone_region, settings.client_ip_header) == ("CN", "")


@pytest.mark.parametrize("environ", [{"TM_CUSTOMER_LINK_SECRET": "short"}, {"TM_CHAT_PHONE_REGION": "China"}])
def test_unusable_values_stop_the_service_with_a_message(environ):
    with pytest.raises(ConfigError):
        Settings.from_env(environ)


def test_the_lookup_settings_are_read():
    settings = Settings.from_env({"TM_CHAT_PHONE_REGION": "us", "TM_CHAT_CLIENT_IP_HEADER": " X-Forwarded-For "})
    assert (settings.phone_region, settings.client_ip_header) == ("US", "X-Forwarded-For")
