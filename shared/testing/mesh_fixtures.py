"""Fixtures for tests that run the whole mesh as processes (``tests/devenv``, ``tests/e2e``).

- ``dovecot``: a private Dovecot on a free port (under /tmp: its mail processes run as the
  ``mail`` user and cannot enter pytest's private tmp_path).
- ``sink_settings``: the development SMTP sink, started through the same code path as
  ``./dev up``, on free SMTP and web ports.
- ``sink_messages(settings)``: what the sink has received (its JSON API).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from devenv.config import DevSettings
from devenv.dovecot import DovecotServer
from devenv.servers import ServerSet, http_get, smtp_sink
from shared.testing.asyncio_helpers import free_port


def running_dovecot(prefix: str = "tm-mesh-dovecot-", **options: Any) -> Iterator[DovecotServer]:
    """A started DovecotServer in a fresh /tmp folder (Dovecot's mail user must reach it),
    with ``options`` for DovecotServer (users, oauth2_introspection_url); stopped and removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    server = DovecotServer(workdir, **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def dovecot() -> Any:
    yield from running_dovecot()


@pytest.fixture
def sink_settings(tmp_path: Path) -> Any:
    settings = DevSettings.from_env({"TM_VAR_DIR": str(tmp_path / "var"), "TM_SMTP_PORT": str(free_port()),
                                     "TM_SINK_WEB_PORT": str(free_port())})
    with ServerSet() as servers:
        servers.ensure(smtp_sink(settings))
        assert [o.name for o in servers.owned] == ["SMTP sink"]
        yield settings


def sink_messages(settings: DevSettings) -> list[dict]:
    raw = http_get(f"http://127.0.0.1:{settings.sink_web_port}/api/messages")
    return json.loads(raw) if raw else []
