import pytest

from shared.config import ConfigError

from services.intake_phone.config import CallSettings, Settings
from services.intake_phone.tests.conftest import SHIPPED_POLICY

TOKEN = "0123456789abcdef0123"
SHIPPED = str(SHIPPED_POLICY)


def test_defaults_and_blocked_numbers_in_e164():
    settings = Settings.from_env({"TM_CTI_TOKEN": TOKEN, "TM_PHONE_POLICY_FILE": SHIPPED,
                                  "TM_PHONE_BLOCKED_NUMBERS": "138 1234 5678, +86 10 1234 5678,"})
    assert (settings.host, settings.port, settings.default_region) == ("127.0.0.1", 8082, "CN")
    assert settings.blocked_numbers == {"+8613812345678", "+861012345678"}
    assert settings.calls.policy.line_for(to_number="+864008001234").name == "hotline"


def test_the_import_needs_no_token():
    settings = CallSettings.from_env({"TM_PHONE_POLICY_FILE": SHIPPED, "TM_PHONE_DEFAULT_REGION": "cn"})
    assert settings.default_region == "CN" and settings.policy_file == SHIPPED


@pytest.mark.parametrize("env, fragment", [
    ({}, "TM_CTI_TOKEN is required"),
    ({"TM_CTI_TOKEN": "short"}, "at least 16"),
    ({"TM_CTI_TOKEN": TOKEN, "TM_PHONE_BLOCKED_NUMBERS": "nonsense"}, "TM_PHONE_BLOCKED_NUMBERS"),
    ({"TM_CTI_TOKEN": TOKEN, "TM_PHONE_PORT": "eighty"}, "TM_PHONE_PORT"),
    ({"TM_CTI_TOKEN": TOKEN, "TM_PHONE_POLICY_FILE": "/nonexistent/phone.yaml"},
     "TM_PHONE_POLICY_FILE: cannot read phone policy /nonexistent/phone.yaml"),
])
def test_unusable_settings_name_the_variable(env, fragment):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"TM_PHONE_POLICY_FILE": SHIPPED, **env})
    assert fragment in str(info.value)


def test_a_bad_policy_file_stops_the_start_naming_file_line_and_field(tmp_path):
    bad = tmp_path / "phone.yaml"
    bad.write_text("lines:\n  - name: vip\n    answered: maybe\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"TM_CTI_TOKEN": TOKEN, "TM_PHONE_POLICY_FILE": str(bad)})
    assert str(info.value) == (f"TM_PHONE_POLICY_FILE: phone policy {bad}: line 1 'vip': answered: "
                               "Input should be 'wrap_up' or 'ignore'")
