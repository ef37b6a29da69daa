pytest_plugins = ["shared.testing.plugin"]

import aiohttp
import pytest

from services.intake_phone.config import Settings
from services.intake_phone.service import make_service

CTI_TOKEN = "cti-token-for-tests-0123456789"
BLOCKED = "+8613900000000"


class PhoneApp:
    def __init__(self, service, http):
        self.service = service
        self.http = http

    async def cti(self, token=CTI_TOKEN, **kwargs):
        async with self.http.post(f"/api/v1/cti/{token}", **kwargs) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def phone_app(amqp_uri, redis_url):
    settings = Settings.from_env({
        "TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_CTI_TOKEN": CTI_TOKEN, "TM_PHONE_PORT": "0",
        "TM_PHONE_BLOCKED_NUMBERS": BLOCKED, "TM_REPLICA_ID": "phone-test",
    })
    service = make_service(settings)
    await service.start()
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{service.port}") as http:
        yield PhoneApp(service, http)
    await service.stop()
