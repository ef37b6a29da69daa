pytest_plugins = ["shared.testing.plugin"]

from pathlib import Path

import aiohttp
import pytest
import yaml

from services.intake_phone.config import Settings
from services.intake_phone.service import make_service

CTI_TOKEN = "cti-token-for-tests-0123456789"
BLOCKED = "+8613900000000"
REPO = Path(__file__).resolve().parents[3]
SHIPPED_POLICY = REPO / "deploy" / "config" / "phone.yaml"

# The tests' lines: "sales" folds repeated missed calls for 30 minutes, "support" never folds,
# "ignored" makes no tickets at all.
TEST_POLICY = {
    "defaults": {"missed": "callback", "voicemail": "ticket", "answered": "wrap_up", "fold_window_minutes": 0},
    "lines": [
        {"name": "sales-line", "queues": ["sales"], "fold_window_minutes": 30},
        {"name": "hotline", "numbers": ["400 800 1234"], "cdr_contexts": ["from-hotline"]},
        {"name": "quiet", "queues": ["after-hours"], "missed": "ignore", "voicemail": "ignore", "answered": "ignore"},
    ],
    "wrap_up_codes": {"resolved": ["resolved", "已解决"], "open": ["follow_up"], "unknown": "open"},
    "cdr": {"timezone": "Asia/Shanghai", "inbound_contexts": ["from-trunk"]},
}


def write_policy(path: Path, policy: dict = TEST_POLICY) -> Path:
    path.write_text(yaml.safe_dump(policy, allow_unicode=True), encoding="utf-8")
    return path


class PhoneApp:
    def __init__(self, service, http):
        self.service = service
        self.http = http

    async def cti(self, token=CTI_TOKEN, **kwargs):
        async with self.http.post(f"/api/v1/cti/{token}", **kwargs) as resp:
            return resp.status, await resp.json()


@pytest.fixture
def policy_file(tmp_path):
    return write_policy(tmp_path / "phone.yaml")


@pytest.fixture
def phone_env(amqp_uri, redis_url, policy_file):
    return {
        "TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_CTI_TOKEN": CTI_TOKEN, "TM_PHONE_PORT": "0",
        "TM_PHONE_BLOCKED_NUMBERS": BLOCKED, "TM_REPLICA_ID": "phone-test", "TM_PHONE_POLICY_FILE": str(policy_file),
    }


@pytest.fixture
async def phone_app(phone_env):
    service = make_service(Settings.from_env(phone_env), policy_check_seconds=0.0)  # tests edit the file
    await service.start()
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{service.port}") as http:
        yield PhoneApp(service, http)
    await service.stop()
