"""A running desk follows its roster file: new agents sign in, removed ones are signed out,
roles change, and a broken file keeps the last good roster."""
import os

import aiohttp
import structlog
import yaml

from services.agent_desk.tests.factories import PASSWORDS
from shared.roster import hash_password

HASHES = {agent_id: hash_password(password) for agent_id, password in PASSWORDS.items()}


def write(path, *agents):
    """``agents``: (agent_id, role, group); moved into place like a deploy would."""
    entries = [{"agent_id": a, "name": a, "role": role, "password_hash": HASHES[a], "group": group}
               for a, role, group in agents]
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        yaml.safe_dump({"agents": entries}, out, allow_unicode=True)
    os.replace(tmp, path)


async def test_roster_changes_apply_without_a_restart(start_desk, tmp_path):
    roster = tmp_path / "roster.yaml"
    write(roster, ("li.na", "agent", "billing"), ("sam.taylor", "agent", "technical"))
    desk = await start_desk(TM_ROSTER_FILE=str(roster), TM_CONFIG_RELOAD_SECONDS="0")
    base = f"http://127.0.0.1:{desk.port}"
    sessions = []

    async def login(agent_id, password=None):
        http = aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True))
        sessions.append(http)
        response = await http.post("/api/login", json={"agent_id": agent_id, "password": password or PASSWORDS[agent_id]})
        return http, response.status

    try:
        lina, status = await login("li.na")
        assert status == 200
        sam, status = await login("sam.taylor")
        assert status == 200
        assert (await login("wang.fang"))[1] == 401
        assert (await lina.get("/api/supervisor/overview")).status == 403
        assert (await (await lina.get("/api/directory")).json())["groups"] == ["billing", "technical"]

        write(roster, ("li.na", "supervisor", "billing"), ("wang.fang", "supervisor", "escalations"))
        assert (await login("wang.fang"))[1] == 200  # added
        assert (await sam.get("/api/me")).status == 401  # removed: the session no longer works
        assert (await lina.get("/api/supervisor/overview")).status == 200  # promoted, same session
        assert (await (await lina.get("/api/directory")).json())["groups"] == ["billing", "escalations"]

        with structlog.testing.capture_logs() as logs:
            roster.write_text("agents:\n  - agent_id: li.na\n    name: li.na\n    password_hash: plain-text\n",
                              encoding="utf-8")
            assert (await login("wang.fang"))[1] == 200  # the last good roster stays
        [failed] = [entry for entry in logs if entry["event"] == "config_reload_failed"]
        assert failed["config"] == "roster" and "password_hash" in failed["error"] and str(roster) in failed["error"]
    finally:
        for http in sessions:
            await http.close()
