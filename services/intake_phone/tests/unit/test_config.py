import pytest

from shared.config import ConfigError

from services.intake_phone.config import Settings

TOKEN = "0123456789abcdef0123"


def test_defaults_and_blocked_numbers_in_e164():
    settings = Settings.from_env({"TM_CTI_TOKEN": TOKEN, "TM_PHONE_BLOCKED_NUMBERS": "138 1234 5678, +86 10 1234 5678,"})
    assert (settings.host, settings.port, settings.default_region) == ("127.0.0.1", 8082, "CN")
    assert settings.blocked_numbers == {"+8613812345678", "+861012345678"}


@pytest.mark.parametrize("env, fragment", [
    ({}, "TM_CTI_TOKEN is required"),
    ({"TM_CTI_TOKEN": "short"}, "at least 16"),
    ({"TM_CTI_TOKEN": TOKEN, "TM_PHONE_BLOCKED_NUMBERS": "nonsense"}, "TM_PHONE_BLOCKED_NUMBERS"),
    ({"TM_CTI_TOKEN": TOKEN, "TM_PHONE_PORT": "eighty"}, "TM_PHONE_PORT"),
])
def test_unusable_settings_name_the_variable(env, fragment):
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert fragment in str(info.value)
