"""``ticketmesh roster|rules reload`` against real dispatcher replicas.

The replicas look at their files only every hour here (TM_CONFIG_RELOAD_SECONDS=3600), so a
change they use within the test was picked up because the command asked for it.
"""
import hashlib
import json
import shutil
import time

import structlog

from services.dispatcher.service import DispatcherService
from services.dispatcher.tests.service.test_dispatcher_reload import parcel_rules, replace_file, roster
from services.dispatcher.tests.service.test_dispatcher_service import (
    NOW,
    SLA_FILE,
    collect,
    go_online,
    of,
    received,
)
from shared import events as ev
from shared import heartbeat, status_cli
from shared.cli import main
from shared.config_reload import REPORT_PREFIX, REQUEST_KEY, ReloadStore, Responder
from shared.testing.plugin import poll_until


def start(service_container, replica, rules_file, roster_file):
    container = service_container(DispatcherService, TM_REPLICA_ID=replica, TM_ROSTER_FILE=str(roster_file),
                                  TM_ROUTING_RULES_FILE=str(rules_file), TM_SLA_POLICY_FILE=str(SLA_FILE),
                                  TM_CONFIG_RELOAD_SECONDS="3600")
    container.start()
    return container


def files(tmp_path, rules, agents):
    rules_file, roster_file = tmp_path / "routing.yaml", tmp_path / "roster.yaml"
    replace_file(rules_file, rules)
    replace_file(roster_file, agents)
    return rules_file, roster_file


def live(redis_client, *replicas):
    poll_until(lambda: {r["replica"] for r in heartbeat.replicas(redis_client)} >= set(replicas),
               what=f"heartbeats of {replicas}")


def run(capsys, monkeypatch, redis_url, *args):
    monkeypatch.setenv("TM_REDIS_URL", redis_url)
    capsys.readouterr()
    with structlog.testing.capture_logs():  # the replicas in this process would log to the same stdout
        code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_roster_reload_makes_a_new_agent_routable_at_once_and_shows_every_replica(
        service_container, tmp_path, publish, store, event_listener, redis_client, redis_url, capsys, monkeypatch):
    rules_file, roster_file = files(tmp_path, parcel_rules("shipping", "P2"), roster(("li.na", 1)))
    start(service_container, "dispatcher-a", rules_file, roster_file)
    start(service_container, "dispatcher-b", rules_file, roster_file)
    live(redis_client, "dispatcher-a", "dispatcher-b")
    listener = event_listener(ev.DISPATCHER)
    go_online(publish, store, "li.na", "sam.taylor")  # sam is not on the roster yet
    publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-1"))
    collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-1"))
    publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-2", received_at=NOW.replace(minute=1)))
    collect(listener, lambda seen: of(seen, ev.TICKET_QUEUED, "TM-2"))

    replace_file(roster_file, roster(("li.na", 1), ("sam.taylor", 1)))
    code, out, err = run(capsys, monkeypatch, redis_url, "roster", "reload", str(roster_file), "--json",
                         "--timeout", "20")
    assert code == 0, err
    data = json.loads(out)
    assert data["ok"] is True and data["sha256"] == sha256(roster_file) and data["config"] == "roster"
    assert [(r["replica"], r["status"], r["sha256"], r["version"]) for r in data["replicas"]] == [
        ("dispatcher-a", "loaded", sha256(roster_file), 2), ("dispatcher-b", "loaded", sha256(roster_file), 2)]
    assert all(r["path"] == str(roster_file) and r["loaded_at"] for r in data["replicas"])
    assert "valid (2 agents)" in err and "confirmed" in err  # progress on standard error
    # Confirmed means written to Redis: sam is routable already, and takes the waiting ticket.
    assert store.is_known_agent("sam.taylor")
    [assigned] = of(collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-2")), ev.TICKET_ASSIGNED)
    assert assigned["agent_id"] == "sam.taylor" and "(roster_changed)" in assigned["decision"]["reason"]

    # The same file again: nothing new to load, still confirmed (and the table for people).
    code, out, _ = run(capsys, monkeypatch, redis_url, "roster", "reload", str(roster_file))
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:5] == ["REPLICA", "STATUS", "SHA256", "VERSION", "LOADED_AT"]
    assert [row.split()[:4] for row in rows] == [["dispatcher-a", "loaded", sha256(roster_file)[:12], "2"],
                                                 ["dispatcher-b", "loaded", sha256(roster_file)[:12], "2"]]


def test_a_bad_file_is_refused_naming_the_field_and_nothing_is_asked_or_changed(
        service_container, tmp_path, store, redis_client, redis_url, capsys, monkeypatch):
    rules_file, roster_file = files(tmp_path, parcel_rules("shipping", "P2"), roster(("li.na", 1)))
    start(service_container, "dispatcher-a", rules_file, roster_file)
    live(redis_client, "dispatcher-a")
    poll_until(lambda: redis_client.exists(REPORT_PREFIX + "dispatcher-a"), what="the replica's first report")
    requested = redis_client.get(REQUEST_KEY)

    bad = roster(("li.na", 1), ("sam.taylor", 1))
    bad["agents"][1]["skills"] = {"general": 9}
    replace_file(roster_file, bad)
    code, out, err = run(capsys, monkeypatch, redis_url, "roster", "reload", str(roster_file))
    assert code == 2 and out == ""
    assert "agents.1.skills" in err and "proficiency of 'general' must be 1-5" in err and "nothing was reloaded" in err

    replace_file(rules_file, parcel_rules("returns", "P9"))
    code, out, err = run(capsys, monkeypatch, redis_url, "rules", "reload", str(rules_file))
    assert code == 2 and out == ""
    assert "rule 1 'parcel': then.priority" in err and str(rules_file) in err

    assert redis_client.get(REQUEST_KEY) == requested  # no replica was asked to look
    assert not store.is_known_agent("sam.taylor")


def test_rules_reload_applies_to_the_next_ticket(service_container, tmp_path, publish, store, event_listener,
                                                 redis_client, redis_url, capsys, monkeypatch):
    agents = roster(("li.na", 5))
    agents["agents"][0]["skills"] = {"general": 3, "shipping": 3, "logistics": 3}
    rules_file, roster_file = files(tmp_path, parcel_rules("shipping", "P2"), agents)
    start(service_container, "dispatcher-a", rules_file, roster_file)
    live(redis_client, "dispatcher-a")
    listener = event_listener(ev.DISPATCHER)

    replace_file(rules_file, parcel_rules("logistics", "P1"))
    code, out, err = run(capsys, monkeypatch, redis_url, "rules", "reload", str(rules_file), "--json")
    assert code == 0, err
    assert [(r["replica"], r["status"]) for r in json.loads(out)["replicas"]] == [("dispatcher-a", "loaded")]
    publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-1", text="where is my parcel"))
    [body] = of(collect(listener, lambda seen: of(seen, ev.TICKET_CLASSIFIED, "TM-1")), ev.TICKET_CLASSIFIED, "TM-1")
    assert (body["required_skills"], body["priority"]) == (["logistics"], "P1")


def test_replicas_that_do_not_confirm_or_use_another_file_are_named_with_a_non_zero_exit(
        service_container, tmp_path, redis_client, redis_url, capsys, monkeypatch):
    rules_file, roster_file = files(tmp_path, parcel_rules("shipping", "P2"), roster(("li.na", 1)))
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(roster_file, other / "roster.yaml")  # b's mounted copy, which the operator forgets to update
    start(service_container, "dispatcher-a", rules_file, roster_file)
    start(service_container, "dispatcher-b", rules_file, other / "roster.yaml")
    # A replica that heartbeats but whose reload timer never answers (wedged).
    heartbeat.Beat("dispatcher", "dispatcher-wedged", time.time()).write(redis_client, time.time())
    live(redis_client, "dispatcher-a", "dispatcher-b", "dispatcher-wedged")

    replace_file(roster_file, roster(("li.na", 1), ("sam.taylor", 1)))
    code, out, err = run(capsys, monkeypatch, redis_url, "roster", "reload", str(roster_file), "--json",
                         "--timeout", "3")
    assert code == 1
    by_replica = {r["replica"]: r for r in json.loads(out)["replicas"]}
    assert {name: r["status"] for name, r in by_replica.items()} == {
        "dispatcher-a": "loaded", "dispatcher-b": "different", "dispatcher-wedged": "waiting"}
    assert by_replica["dispatcher-b"]["sha256"] == sha256(other / "roster.yaml")
    assert by_replica["dispatcher-b"]["path"] == str(other / "roster.yaml")
    last = err.strip().splitlines()[-1]
    assert last.startswith("not confirmed within 3s:") and "dispatcher-a" not in last
    assert "dispatcher-b (uses " in last and "its file differs" in last
    assert "dispatcher-wedged (no answer)" in last

    # `ticketmesh status` names the split too, from the same reports.
    config = status_cli._dispatcher_config(redis_client, heartbeat_rows(redis_client))  # noqa: SLF001
    assert set(config["roster"]) == {"dispatcher-a", "dispatcher-b"}
    assert any(p.startswith("dispatcher replicas use different roster files: dispatcher-a ")
               for p in status_cli.config_problems(config))


def heartbeat_rows(redis_client):
    return [{"service": r.get("service", ""), "replica": r.get("replica", "")} for r in heartbeat.replicas(redis_client)]


def test_no_running_dispatcher_is_an_error(tmp_path, redis_client, redis_url, capsys, monkeypatch):
    _, roster_file = files(tmp_path, parcel_rules("shipping", "P2"), roster(("li.na", 1)))
    code, out, err = run(capsys, monkeypatch, redis_url, "roster", "reload", str(roster_file), "--timeout", "1")
    assert code == 1 and "no dispatcher replica is running" in err
    assert redis_client.get(REQUEST_KEY) is None


def test_a_replica_reports_on_a_request_and_when_what_it_uses_changes_and_otherwise_writes_nothing(redis_client):
    store = ReloadStore(redis_client)
    responder = Responder(store, "dispatcher-a")
    files = {"roster": ("/r.yaml", "aaa", 1, None)}
    assert responder.pending() is None  # nobody asked yet: the counter is absent
    responder.report(files, request=None, now=100.0)
    first = store.reports(["dispatcher-a"])["dispatcher-a"]
    assert first["handled"] == 0 and first["files"]["roster"]["loaded_at"] == 100.0

    responder.report(files, request=None, now=101.0)  # nothing changed: nothing written
    assert store.reports(["dispatcher-a"])["dispatcher-a"] == first

    assert store.request() == 1 and responder.pending() == 1
    responder.report(files, request=1, now=102.0)  # acted on: written even though the file is the same
    second = store.reports(["dispatcher-a"])["dispatcher-a"]
    assert second["handled"] == 1 and second["files"]["roster"]["loaded_at"] == 100.0
    assert responder.pending() is None

    responder.report({"roster": ("/r.yaml", "bbb", 2, None)}, request=None, now=103.0)  # the periodic look
    third = store.reports(["dispatcher-a"])["dispatcher-a"]
    assert third["handled"] == 1 and third["files"]["roster"]["sha256"] == "bbb"
    assert third["files"]["roster"]["loaded_at"] == 103.0
