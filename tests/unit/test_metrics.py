"""shared/metrics.py: what each hook counts, under which labels; the dashboard uses only these names."""
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from shared import events as ev
from shared import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "ticketmesh.json"


@pytest.fixture(autouse=True)
def identity():
    metrics.configure("unit_svc", "unit-1")
    yield
    metrics.configure("unknown", "")


def value(name, **labels):
    return REGISTRY.get_sample_value(name, {"service": "unit_svc", "replica": "unit-1", **labels}) or 0.0


def test_events_in_count_per_source_and_type_and_observe_the_queue_lag():
    before = value("ticketmesh_events_in_total", source="src", event_type="t1")
    lag_sum = value("ticketmesh_queue_lag_seconds_sum", event_type="t1")
    occurred = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    metrics.event_in("src", "t1", occurred, (occurred + timedelta(seconds=7)).timestamp())
    metrics.event_in("src", "t1", occurred.isoformat(), (occurred + timedelta(seconds=3)).timestamp())
    assert value("ticketmesh_events_in_total", source="src", event_type="t1") == before + 2
    assert value("ticketmesh_queue_lag_seconds_sum", event_type="t1") == pytest.approx(lag_sum + 10)


def test_an_invalid_event_counts_in_without_a_lag():
    count = value("ticketmesh_queue_lag_seconds_count", event_type="bad")
    metrics.event_in("src", "bad", None, 0.0)
    metrics.event_failed("src", "bad", "rejected")
    assert value("ticketmesh_queue_lag_seconds_count", event_type="bad") == count
    assert value("ticketmesh_events_failed_total", source="src", event_type="bad", outcome="rejected") >= 1


def test_published_sla_and_notification_events_are_domain_counters_too():
    fired = value("ticketmesh_sla_clocks_fired_total", kind="breached")
    failed = value("ticketmesh_notifications_total", outcome="failed")
    sent = value("ticketmesh_notifications_total", outcome="sent")
    out = value("ticketmesh_events_out_total", event_type=ev.SLA_BREACHED)
    metrics.event_out(ev.SLA_BREACHED)
    metrics.event_out(ev.NOTIFICATION_FAILED)
    metrics.event_out(ev.TICKET_ASSIGNED)
    assert value("ticketmesh_sla_clocks_fired_total", kind="breached") == fired + 1
    assert value("ticketmesh_notifications_total", outcome="failed") == failed + 1
    assert value("ticketmesh_notifications_total", outcome="sent") == sent
    assert value("ticketmesh_events_out_total", event_type=ev.SLA_BREACHED) == out + 1


def test_assignment_latency_is_received_to_assigned():
    total = value("ticketmesh_assignment_latency_seconds_sum", channel="email")
    received = datetime(2026, 1, 1, tzinfo=timezone.utc)
    metrics.assignment_latency("email", received, received + timedelta(seconds=42))
    assert value("ticketmesh_assignment_latency_seconds_sum", channel="email") == pytest.approx(total + 42)


def test_scrape_time_gauges_drop_labels_that_vanished_to_zero():
    metrics.set_agents({"online": 3, "away": 1})
    metrics.set_agents({"online": 2})
    assert value("ticketmesh_agents", presence="online") == 2
    assert value("ticketmesh_agents", presence="away") == 0


def test_configure_relabels_the_series():
    metrics.configure("other_svc", "r9")
    metrics.event_out("x_evt")
    assert REGISTRY.get_sample_value("ticketmesh_events_out_total",
                                     {"service": "other_svc", "replica": "r9", "event_type": "x_evt"}) >= 1


def exported_names():
    return {s.name for fam in REGISTRY.collect() if fam.name.startswith("ticketmesh_") for s in fam.samples} | {
        f"{fam.name}{suffix}" for fam in REGISTRY.collect() if fam.name.startswith("ticketmesh_")
        for suffix in (("_total",) if fam.type == "counter" else ("_bucket", "_sum", "_count") if fam.type == "histogram" else ("",))}


def dashboard_exprs():
    data = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in data["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in data["templating"]["list"] if v.get("type") == "query"]
    return exprs


def test_every_metric_name_in_the_dashboard_is_exported():
    used = {name for expr in dashboard_exprs() for name in re.findall(r"\bticketmesh_\w+", expr)}
    assert used, "the dashboard queries nothing"
    assert used <= metrics.METRIC_NAMES, used - metrics.METRIC_NAMES
    assert metrics.METRIC_NAMES <= exported_names(), metrics.METRIC_NAMES - exported_names()


def test_every_metric_family_has_a_panel():
    used = " ".join(dashboard_exprs())
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in metrics.METRIC_NAMES}
    assert {f for f in families if f not in used} == set()
