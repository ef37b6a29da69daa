"""The event history and reports: a scripted day published through a real RabbitMQ, recorded by
the desk in real Redis, read back through the API and the ``ticketmesh`` CLI."""
from __future__ import annotations

import asyncio
import io
import json
import re
from contextlib import redirect_stdout
from datetime import datetime, timedelta, timezone

import aio_pika
import aiohttp
import pytest

from services.agent_desk.tests import report_day
from services.agent_desk.tests.factories import now, ticket_assigned
from shared import cli
from shared.testing.plugin import dead_letters
from shared.topology import handler_queue_name

YESTERDAY = (datetime.now(timezone.utc) - timedelta(days=1)).date()
TM_20003_PATH = [
    ("intake_email", "ticket_received"), ("dispatcher", "ticket_classified"), ("sla_watcher", "sla_clock_changed"),
    ("dispatcher", "ticket_queued"), ("notifier", "notification_sent"), ("sla_watcher", "sla_warning"),
    ("sla_watcher", "sla_breached"), ("sla_watcher", "sla_clock_changed"), ("sla_watcher", "ticket_escalated"),
    ("dispatcher", "ticket_assigned"), ("agent_desk", "ticket_accepted"), ("agent_desk", "agent_replied"),
    ("agent_desk", "ticket_resolved"), ("intake_chat", "csat_submitted")]


async def publish_day(publish) -> list:
    return await report_day.publish_day(publish, YESTERDAY)


wait_recorded = report_day.wait_recorded


async def report(http: aiohttp.ClientSession, **params: str) -> dict:
    response = await http.get("/api/v1/reports", params={"from": YESTERDAY.isoformat(), "to": YESTERDAY.isoformat(),
                                                         **params})
    assert response.status == 200, await response.text()
    return await response.json()


def _without_age(backlog: list[dict]) -> list[dict]:
    for row in backlog:
        assert row.pop("oldest_seconds") > 0
    return backlog


async def test_a_scripted_day_gives_exact_figures_per_agent_group_channel_and_day(signed_in, publish):
    supervisor = await signed_in("wang.fang")
    events = await publish_day(publish)
    await wait_recorded(supervisor, events)

    by_agent = await report(supervisor, by="agent")
    assert by_agent["time_basis"] == "wall" and by_agent["period"]["by"] == "agent"
    assert by_agent["totals"] == report_day.TOTALS
    assert by_agent["rows"] == report_day.BY_AGENT
    assert [b["count"] for b in by_agent["response_time_distribution"]] == report_day.RESPONSE_COUNTS
    assert _without_age(by_agent["backlog_by_skill"]) == report_day.BACKLOG
    assert by_agent["sla_by_day"] == [{"day": YESTERDAY.isoformat(), "tickets": 5, "met": 3, "breached": 1,
                                       "attainment": 75.0}]

    by_group = {r["key"]: r for r in (await report(supervisor, by="group"))["rows"]}
    assert sorted(by_group) == ["billing", "technical"]
    assert (by_group["billing"]["tickets"], by_group["billing"]["sla"]["attainment"]) == (3, 100.0)
    assert (by_group["technical"]["tickets"], by_group["technical"]["breaches"]["total"],
            by_group["technical"]["escalations"], by_group["technical"]["csat"]["average"]) == (2, 1, 1, 2.0)

    by_channel = {r["key"]: r for r in (await report(supervisor, by="channel"))["rows"]}
    assert {k: r["tickets"] for k, r in by_channel.items()} == {"chat": 1, "email": 3, "phone": 1}
    assert by_channel["email"]["first_response"] == {"count": 3, "p50_seconds": 240.0, "p90_seconds": 1200.0,
                                                     "average_seconds": 520.0}
    assert by_channel["chat"]["resolution"]["p50_seconds"] == 1200.0

    # Days in Shanghai: the 09:00-14:00 UTC arrivals are 17:00-22:00 there, the same day.
    two_days = await report(supervisor, by="day", tz="Asia/Shanghai",
                            **{"from": (YESTERDAY - timedelta(days=1)).isoformat()})
    assert [(r["key"], r["tickets"]) for r in two_days["rows"]] == [
        ((YESTERDAY - timedelta(days=1)).isoformat(), 0), (YESTERDAY.isoformat(), 5)]
    assert [d["attainment"] for d in two_days["sla_by_day"]] == [None, 75.0]
    assert two_days["period"]["timezone"] == "Asia/Shanghai"
    # A period without the day has none of its tickets, but the backlog is now's.
    before = await report(supervisor, **{"from": (YESTERDAY - timedelta(days=3)).isoformat(),
                                         "to": (YESTERDAY - timedelta(days=2)).isoformat()})
    assert before["totals"]["tickets"] == 0 and len(before["backlog_by_skill"]) == 2


async def test_a_tickets_history_is_its_path_in_order_without_bodies_and_deduplicated(signed_in, publish):
    supervisor = await signed_in("wang.fang")
    events = await publish_day(publish)
    await wait_recorded(supervisor, events)

    response = await supervisor.get("/api/v1/tickets/TM-20003/history")
    body = await response.json()
    assert body["trace_id"] == "trace-TM-20003" and body["other_traces"] == [] and body["trimmed"] == 0
    assert [(e["source"], e["type"]) for e in body["events"]] == TM_20003_PATH
    assert [e["gap_seconds"] for e in body["events"]][:4] == [None, 2.0, 1.0, 1.0]
    assert body["longest_gap"] == {"seconds": 6000.0, "after": "agent_replied", "before": "ticket_resolved"}
    assert body["events"][-1]["score"] == 2 and body["events"][9]["agent_id"] == "sam.taylor"
    assert body["events"][4]["recipient"] == "z***@example.com"
    raw = json.dumps(body, ensure_ascii=False)
    for secret in (report_day.SECRET_TEXT, "发票抬头错误", "张伟", "zhang.wei@", "13812345678"):
        assert secret not in raw
    assert body["facts"]["first_response_seconds"] == 1200.0 and body["facts"]["breaches"] == {"first_response": 1}
    assert body["facts"]["agent"] == "sam.taylor" and body["facts"]["resolved"] is True

    # TM-20001's first reply came twice: one record, and the first response is the first reply.
    first = await (await supervisor.get("/api/v1/tickets/TM-20001/history")).json()
    assert [e["type"] for e in first["events"]].count("agent_replied") == 2
    assert first["facts"]["first_response_seconds"] == 240.0
    assert (await supervisor.get("/api/v1/tickets/TM-99999/history")).status == 404


async def test_reports_are_for_supervisors_and_a_history_for_whoever_may_see_the_ticket(signed_in, publish):
    supervisor, li_na, sam = await signed_in("wang.fang"), await signed_in("li.na"), await signed_in("sam.taylor")
    events = await publish_day(publish)
    await wait_recorded(supervisor, events)
    forbidden = await li_na.get("/api/v1/reports")
    assert forbidden.status == 403 and (await forbidden.json())["error"]["code"] == "not_supervisor"
    # TM-20005 is li.na's (reopened, still hers); sam may not read it.
    assert (await li_na.get("/api/v1/tickets/TM-20005/history")).status == 200
    assert (await sam.get("/api/v1/tickets/TM-20005/history")).status == 403
    for params, code in [({"by": "weekday"}, "invalid_grouping"), ({"from": "yesterday"}, "invalid_period"),
                         ({"from": "2026-03-10", "to": "2026-03-01"}, "invalid_period"),
                         ({"from": "2024-01-01", "to": "2026-01-01"}, "invalid_period"),
                         ({"tz": "Mars/Olympus"}, "invalid_timezone")]:
        response = await supervisor.get("/api/v1/reports", params=params)
        assert response.status == 400, params
        assert (await response.json())["error"]["code"] == code


async def test_the_cli_prints_the_same_report_and_the_trace(signed_in, publish, redis_url, monkeypatch):
    supervisor = await signed_in("wang.fang")
    events = await publish_day(publish)
    await wait_recorded(supervisor, events)
    monkeypatch.setenv("TM_REDIS_URL", redis_url)
    day = YESTERDAY.isoformat()

    async def run(*argv: str) -> tuple[int, str]:
        def main() -> tuple[int, str]:
            out = io.StringIO()
            with redirect_stdout(out):
                code = cli.main(list(argv))
            return code, out.getvalue()
        return await asyncio.to_thread(main)  # the CLI runs its own event loop

    code, text = await run("report", "--from", day, "--to", day, "--by", "agent", "--json")
    assert code == 0
    body = json.loads(text)
    assert body["totals"] == report_day.TOTALS and body["rows"] == report_day.BY_AGENT

    code, text = await run("report", "--from", day, "--to", day, "--by", "agent")
    lines = text.splitlines()
    assert lines[0].startswith(f"tickets received {day} to {day} (UTC), by agent; times are wall-clock")
    assert lines[2].split() == ["AGENT", "TICKETS", "RESOLVED", "FIRST", "RESP", "P50", "P90", "RESOLUTION", "P50",
                                "P90", "SLA", "MET", "BREACHES", "ESCALATIONS", "CSAT"]
    table = {line.split("  ")[0].strip(): " ".join(line.split()) for line in lines[3:7]}
    assert table == {
        "li.na": "li.na 3 2 2m 00s 4m 00s 20m 00s 30m 00s 100.0% 0 0 4.50 (2)",
        "sam.taylor": "sam.taylor 1 1 20m 00s 20m 00s 2h 00m 2h 00m 0.0% 1 1 2.00 (1)",
        "(unassigned)": "(unassigned) 1 0 - - - - - 0 0 -",
        "all": "all 5 3 2m 00s 20m 00s 30m 00s 2h 00m 75.0% 1 1 3.67 (3)",
    }
    assert f"SLA met per day: {day[5:]} 75.0%" in text
    assert "first responses: <1m 0, 1m-5m 3, 5m-15m 0, 15m-1h 1, 1h-4h 0, 4h-24h 0, >=24h 0" in text
    assert "CSAT: average 3.67 of 3; 1★ 0, 2★ 1, 3★ 0, 4★ 1, 5★ 1" in text
    assert "backlog now (open tickets by skill): billing 1 (oldest" in text and "technical 1 (oldest" in text

    code, text = await run("trace", "TM-20003")
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == "ticket TM-20003  trace trace-TM-20003"
    assert "first response 20m 00s by sam.taylor; resolved after 2h 00m; breaches first_response 1; " \
           "escalations 1; CSAT 2" in lines[1]
    rows = [line.split() for line in lines[4:] if line.startswith("  ")]
    assert rows[0][:4] == [YESTERDAY.isoformat(), "11:00:00", "intake_email", "ticket_received"]
    assert rows[1][:4] == ["11:00:02", "+2s", "dispatcher", "ticket_classified"]
    path = [re.search(r" (\w+) +(\w+) +\w+=", line).groups() for line in lines[4:18]]
    assert path == TM_20003_PATH
    assert "longest gap: 1h 40m between agent_replied and ticket_resolved" in text
    assert report_day.SECRET_TEXT not in text
    # A trace id finds its ticket too; an unknown one is exit 2.
    code, by_trace = await run("trace", "trace-TM-20003", "--json")
    assert code == 0 and json.loads(by_trace)["ticket_id"] == "TM-20003"
    assert (await run("trace", "TM-99999"))[0] == 2



async def test_an_event_the_desk_stores_is_recorded_from_that_delivery_even_when_its_view_change_fails(
        signed_in, publish, amqp_uri):
    supervisor = await signed_in("wang.fang")
    # The view of TM-404 never comes: the change fails for good and the event is dead-lettered
    # from the store queue, but it was recorded first (as its own queue used to).
    await publish("dispatcher", "ticket_assigned", ticket_assigned("TM-404", at=now() - timedelta(hours=1)))
    headers, _ = (await asyncio.to_thread(dead_letters, amqp_uri, 10.0, 1))[0]
    assert headers["x-tm-failed-queue"] == "evt-dispatcher-ticket_assigned--agent_desk.store_ticket_assigned"
    body = await (await supervisor.get("/api/v1/tickets/TM-404/history")).json()
    assert [(e["source"], e["type"]) for e in body["events"]] == [("dispatcher", "ticket_assigned")]

    # One delivery per event: no record_history queue for what a store queue takes; one of its
    # own for an event the desk does not store (its own ticket_accepted).
    async with await aio_pika.connect(amqp_uri) as conn:
        accepted = handler_queue_name("agent_desk", "ticket_accepted", "agent_desk", "record_history")
        await (await conn.channel()).declare_queue(accepted, passive=True)
        for source, event_type in (("dispatcher", "ticket_assigned"), ("intake_chat", "ticket_received"),
                                   ("dispatcher", "ticket_classified"), ("sla_watcher", "sla_breached")):
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await (await conn.channel()).declare_queue(
                    handler_queue_name(source, event_type, "agent_desk", "record_history"), passive=True)
