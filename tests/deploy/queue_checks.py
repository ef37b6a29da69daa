"""What both runtimes' quorum tests read back from the real broker (management API, dead letters)."""
from __future__ import annotations

import base64
import json
import time
import urllib.request
from urllib.parse import quote, unquote, urlsplit

from shared.dead_letter_ops import DeadLetter, list_dead_letters
from shared.testing.plugin import MGMT_URL


def queue_info(amqp_uri: str, queue: str) -> dict:
    vhost = unquote(urlsplit(amqp_uri).path.lstrip("/"))
    parts = urlsplit(MGMT_URL)
    url = f"{parts.scheme}://{parts.hostname}:{parts.port}/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}"
    request = urllib.request.Request(url)
    token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def wait_for_dead_letters(amqp_uri: str, count: int, timeout: float = 20.0) -> list[DeadLetter]:
    deadline = time.monotonic() + timeout
    while True:
        letters = list_dead_letters(amqp_uri)
        if len(letters) >= count or time.monotonic() > deadline:
            return letters
        time.sleep(0.1)
