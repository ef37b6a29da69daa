"""``ticketmesh phone import-cdr`` against real RabbitMQ and Redis: backfill, idempotent by uniqueid."""
import asyncio
import json

import pytest

from shared.cli import main
from shared.testing.plugin import AsyncEventListener

from services.intake_phone.tests.cdr_samples import MORNING, cdr_line, master_csv
from services.intake_phone.tests.conftest import SHIPPED_POLICY


@pytest.fixture
def cli_env(monkeypatch, amqp_uri, redis_url):
    for name, value in {"TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_PHONE_POLICY_FILE": str(SHIPPED_POLICY),
                        "TM_PHONE_DEFAULT_REGION": "CN", "TM_PHONE_BLOCKED_NUMBERS": ""}.items():
        monkeypatch.setenv(name, value)


async def ticketmesh(capsys, *argv):
    """Run the CLI as ops would (its own event loop, in a thread); (exit status, stdout, stderr)."""
    status = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


LATER = cdr_line(uniqueid="1700000001.1", start="2026-11-20 10:30:00", end="2026-11-20 10:30:30")  # 70 min on


async def test_importing_the_same_file_twice_makes_one_set_of_tickets(cli_env, capsys, tmp_path, amqp_uri, redis_client):
    path = write(tmp_path, "Master.csv", MORNING + LATER + "\n")
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        status, out, err = await ticketmesh(capsys, "phone", "import-cdr", path, "--json")
        assert status == 0, err
        first = json.loads(out)
        assert (first["rows"], first["calls"], first["tickets_opened"], first["folded"]) == (11, 8, 3, 2)
        assert first["skipped_rows"] == {"not_inbound": 2} and first["errors"] == []
        assert first["outcomes"] == {"folded": 2, "opened:callback": 2, "opened:voicemail": 1,
                                     "no_ticket:answered_without_wrap_up": 3}
        assert "progress: 8/8 calls" in err

        status, out, _ = await ticketmesh(capsys, "phone", "import-cdr", path, "--json")
        second = json.loads(out)
        assert status == 0 and (second["tickets_opened"], second["folded"], second["already_imported"]) == (0, 0, 5)

        sentinel = write(tmp_path, "sentinel.csv", master_csv(cdr_line(uniqueid="sentinel.1", src="13700000001")))
        assert (await ticketmesh(capsys, "phone", "import-cdr", sentinel))[0] == 0
        await bus.wait_for(lambda t, b: b["source"]["call_id"] == "sentinel.1")
    events = [(t, b) for t, b in bus.events if b["source"]["call_id"] != "sentinel.1"]
    assert [(t, b["source"]["call_id"]) for t, b in events] == [
        ("ticket_received", "1700000000.1"), ("message_received", "1700000000.2"),
        ("message_received", "1700000000.3"), ("ticket_received", "1700000000.5"),
        ("ticket_received", "1700000001.1")]
    callback, voicemail, later = (b for t, b in events if t == "ticket_received")
    assert all(b["ticket_id"] == callback["ticket_id"] for t, b in events if t == "message_received")
    assert callback["received_at"] == "2026-11-20T01:00:40Z"  # the call's end, Shanghai time → UTC
    assert callback["source"]["line"] == "hotline" and callback["source"]["category"] == "callback"
    assert voicemail["source"]["category"] == "voicemail" and voicemail["customer"]["phone"] == "+8615900002222"
    assert later["ticket_id"] not in (callback["ticket_id"], voicemail["ticket_id"])  # outside the 30-minute fold


async def test_a_call_the_webhook_already_ticketed_is_not_ticketed_again(cli_env, capsys, tmp_path, amqp_uri, phone_app):
    # A PBX whose CTI integration uses the Asterisk uniqueid as callId.
    hangup = {"event": "hangup", "callId": "1700000000.1", "from": "13812345678", "to": "4008001234",
              "direction": "in", "cause": "noAnswer"}
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        assert await phone_app.cti(json=hangup) == (200, {})
        _, live = await bus.wait_for(lambda t, b: True)
        path = write(tmp_path, "Master.csv", master_csv(cdr_line(uniqueid="1700000000.1")))
        status, out, _ = await ticketmesh(capsys, "phone", "import-cdr", path, "--json")
        assert status == 0 and json.loads(out)["already_imported"] == 1
    assert [b["ticket_id"] for _, b in bus.events] == [live["ticket_id"]]


async def test_bad_rows_are_listed_by_line_and_the_good_ones_imported(cli_env, capsys, tmp_path, amqp_uri):
    text = master_csv(cdr_line(uniqueid="good.1"), cdr_line(uniqueid="bad.2", disposition="SOMETIMES"),
                      cdr_line(uniqueid="good.3", src="13812340003"))
    path = write(tmp_path, "Master.csv", text)
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        status, out, err = await ticketmesh(capsys, "phone", "import-cdr", path)
        assert status == 2
        assert "line 2: disposition: 'SOMETIMES' is not one of" in err and "1 rows refused; the others were imported" in err
        assert "opened 2 tickets" in out
        await bus.wait_for(lambda t, b: b["source"]["call_id"] == "good.3")
        await bus.wait_for(lambda t, b: b["source"]["call_id"] == "good.1")


async def test_dry_run_writes_nothing_and_needs_no_server(cli_env, capsys, tmp_path, monkeypatch, redis_client):
    monkeypatch.setenv("TM_AMQP_URI", "amqp://guest:guest@127.0.0.1:1/")  # nothing listens there
    monkeypatch.setenv("TM_REDIS_URL", "redis://127.0.0.1:1/0")
    path = write(tmp_path, "Master.csv", MORNING)
    status, out, err = await ticketmesh(capsys, "phone", "import-cdr", path, "--dry-run", "--json")
    summary = json.loads(out)
    assert status == 0 and summary["dry_run"] is True
    assert (summary["tickets_opened"], summary["folded"]) == (2, 2)
    assert list(redis_client.scan_iter("tm:*")) == []


async def test_dry_run_of_a_long_file_reports_progress(cli_env, capsys, tmp_path):
    lines = [cdr_line(uniqueid=f"1700001000.{n}", src=f"1381234{n:04d}", start="2026-11-20 09:00:00",
                      end="2026-11-20 09:00:30") for n in range(1200)]
    status, out, err = await ticketmesh(capsys, "phone", "import-cdr", write(tmp_path, "big.csv", master_csv(*lines)),
                                        "--dry-run")
    assert status == 0 and "would open 1200 tickets" in out
    assert [l for l in err.splitlines() if l.startswith("progress:")] == [
        "progress: 500/1200 calls", "progress: 1000/1200 calls", "progress: 1200/1200 calls"]


async def test_unreachable_broker_exits_3_and_a_second_run_finishes(cli_env, capsys, tmp_path, monkeypatch, amqp_uri):
    path = write(tmp_path, "Master.csv", MORNING)
    monkeypatch.setenv("TM_AMQP_URI", "amqp://guest:guest@127.0.0.1:1/")
    status, _, err = await ticketmesh(capsys, "phone", "import-cdr", path)
    assert status == 3 and "cannot reach a server" in err and "run it again" in err
    monkeypatch.setenv("TM_AMQP_URI", amqp_uri)
    status, out, _ = await ticketmesh(capsys, "phone", "import-cdr", path, "--json")
    assert status == 0 and json.loads(out)["tickets_opened"] == 2


@pytest.mark.parametrize("content, message", [
    (master_csv(cdr_line().rsplit(",", 1)[0]), "16 columns, no uniqueid: set loguniqueid=yes"),
    ("", None),
])
async def test_whole_file_problems(cli_env, capsys, tmp_path, content, message):
    status, out, err = await ticketmesh(capsys, "phone", "import-cdr", write(tmp_path, "Master.csv", content))
    if message:
        assert status == 2 and message in err
    else:
        assert status == 0 and "0 rows, 0 inbound calls" in out


async def test_missing_file_and_bad_timezone_are_refused(cli_env, capsys, tmp_path):
    status, _, err = await ticketmesh(capsys, "phone", "import-cdr", str(tmp_path / "nope.csv"))
    assert status == 2 and "cannot read" in err and "nope.csv" in err
    path = write(tmp_path, "Master.csv", MORNING)
    status, _, err = await ticketmesh(capsys, "phone", "import-cdr", path, "--timezone", "Mars/Olympus")
    assert status == 2 and "not a time zone name" in err


async def test_validate_names_file_line_and_field(capsys, tmp_path):
    assert (await ticketmesh(capsys, "phone", "validate", str(SHIPPED_POLICY)))[0] == 0
    bad = write(tmp_path, "phone.yaml", "lines:\n  - name: vip\n    numbers: ['12-34']\n")
    status, _, err = await ticketmesh(capsys, "phone", "validate", bad)
    assert status == 2 and err.strip() == f"invalid: phone policy {bad}: line 1 'vip': numbers: '12-34': not a valid phone number"

