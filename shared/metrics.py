"""Prometheus metrics of every service, labelled ``service`` and ``replica``.

One process runs one service, so the families live in the default registry and
:func:`configure` sets the process's identity once at start-up (before that, ``service`` is
``unknown``). The message layers call :func:`event_in`, :func:`handler_done`,
:func:`event_failed` and :func:`event_out` for every message (shared/amqp.py and
shared/nameko_ext.py); services add their domain facts with :func:`assignment_latency` and
with scrape-time gauges (:func:`set_tickets`, :func:`set_agents`, :func:`set_sla_due`) that
their ``/metrics`` handler refreshes from Redis just before rendering.

Per-event cost matters (thousands of events per second through one replica): label children
are cached in plain dicts keyed by the variable labels, so a hook is a dict lookup plus
prometheus_client's locked increment.

The Grafana dashboard in deploy/grafana/ uses exactly the names in :data:`METRIC_NAMES`
(a unit test checks it).
"""
from __future__ import annotations

from datetime import datetime
from typing import Mapping

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from shared import events as ev

_ID = ("service", "replica")
# Handler work is milliseconds; lag and assignment can be minutes when a queue backs up.
_FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SLOW_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

EVENTS_IN = Counter("ticketmesh_events_in", "events taken from a queue (valid or not)",
                    [*_ID, "source", "event_type"])
EVENTS_OUT = Counter("ticketmesh_events_out", "events published (confirmed by the broker)", [*_ID, "event_type"])
EVENTS_FAILED = Counter("ticketmesh_events_failed", "events not handled: rejected (invalid), dead_lettered "
                        "(handler failed) or retried (transient failure, back to the queue)",
                        [*_ID, "source", "event_type", "outcome"])
HANDLER_SECONDS = Histogram("ticketmesh_handler_seconds", "time a handler took for one event",
                            [*_ID, "event_type"], buckets=_FAST_BUCKETS)
QUEUE_LAG_SECONDS = Histogram("ticketmesh_queue_lag_seconds", "occurred_at of an event to the moment a consumer took it",
                              [*_ID, "event_type"], buckets=_SLOW_BUCKETS)
TICKETS = Gauge("ticketmesh_tickets", "unresolved tickets by status (agent_desk, read from Redis at scrape)",
                [*_ID, "status"])
AGENTS = Gauge("ticketmesh_agents", "agents by presence (dispatcher, read from Redis at scrape)", [*_ID, "presence"])
ASSIGNMENT_SECONDS = Histogram("ticketmesh_assignment_latency_seconds",
                               "ticket received_at to its first assignment", [*_ID, "channel"], buckets=_SLOW_BUCKETS)
SLA_DUE = Gauge("ticketmesh_sla_clocks_due", "SLA warnings and breaches due now and not yet fired "
                "(sla_watcher, read from Redis at scrape)", list(_ID))
SLA_FIRED = Counter("ticketmesh_sla_clocks_fired", "SLA warnings and breaches announced", [*_ID, "kind"])
NOTIFICATIONS = Counter("ticketmesh_notifications", "notifications finished, by outcome (sent or failed)",
                        [*_ID, "outcome"])

# What the dashboard may query (counters are exposed with _total, histograms with _bucket/_sum/_count).
METRIC_NAMES = frozenset({
    "ticketmesh_events_in_total", "ticketmesh_events_out_total", "ticketmesh_events_failed_total",
    *(f"ticketmesh_handler_seconds{s}" for s in ("_bucket", "_sum", "_count")),
    *(f"ticketmesh_queue_lag_seconds{s}" for s in ("_bucket", "_sum", "_count")),
    *(f"ticketmesh_assignment_latency_seconds{s}" for s in ("_bucket", "_sum", "_count")),
    "ticketmesh_tickets", "ticketmesh_agents", "ticketmesh_sla_clocks_due", "ticketmesh_sla_clocks_fired_total",
    "ticketmesh_notifications_total",
})

_SLA_KINDS = {ev.SLA_WARNING: "warning", ev.SLA_BREACHED: "breached"}
_NOTIFICATION_OUTCOMES = {ev.NOTIFICATION_SENT: "sent", ev.NOTIFICATION_FAILED: "failed"}

_identity: tuple[str, str] = ("unknown", "")
_children: dict[tuple, object] = {}


def configure(service: str, replica: str) -> None:
    """Name this process's series (call once, at start-up, before any event)."""
    global _identity
    _identity = (service, replica)
    _children.clear()


def identity() -> tuple[str, str]:
    return _identity


def _child(metric, *labels: str):
    key = (id(metric), *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*_identity, *labels)
    return child


def _lag_seconds(occurred_at: object, now: float) -> float | None:
    if isinstance(occurred_at, datetime):
        return now - occurred_at.timestamp()
    if isinstance(occurred_at, str):
        try:
            return now - datetime.fromisoformat(occurred_at).timestamp()
        except ValueError:
            return None
    return None


def event_in(source: str, event_type: str, occurred_at: object, now: float) -> None:
    """A consumer took an event (``now``: epoch seconds); lag from its ``occurred_at`` if known."""
    _child(EVENTS_IN, source, event_type).inc()
    lag = _lag_seconds(occurred_at, now)
    if lag is not None:
        _child(QUEUE_LAG_SECONDS, event_type).observe(max(lag, 0.0))


def handler_done(event_type: str, seconds: float) -> None:
    _child(HANDLER_SECONDS, event_type).observe(seconds)


def event_failed(source: str, event_type: str, outcome: str) -> None:
    """``outcome``: rejected, dead_lettered or retried."""
    _child(EVENTS_FAILED, source, event_type, outcome).inc()


def event_out(event_type: str) -> None:
    """An event was published; some types are also domain facts counted on their own."""
    _child(EVENTS_OUT, event_type).inc()
    kind = _SLA_KINDS.get(event_type)
    if kind is not None:
        _child(SLA_FIRED, kind).inc()
        return
    outcome = _NOTIFICATION_OUTCOMES.get(event_type)
    if outcome is not None:
        _child(NOTIFICATIONS, outcome).inc()


def assignment_latency(channel: str, received_at: datetime, assigned_at: datetime) -> None:
    _child(ASSIGNMENT_SECONDS, channel).observe(max((assigned_at - received_at).total_seconds(), 0.0))


def _set_all(metric, values: Mapping[str, float]) -> None:
    # Labels that vanished (no agent away any more) must read 0, not their last value.
    service, replica = _identity
    for labels in list(metric._metrics):  # noqa: SLF001 - prometheus_client has no public "list children"
        if labels[:2] == (service, replica) and labels[2] not in values:
            metric.labels(*labels).set(0)
    for name, value in values.items():
        metric.labels(service, replica, name).set(value)


def set_tickets(by_status: Mapping[str, float]) -> None:
    _set_all(TICKETS, by_status)


def set_agents(by_presence: Mapping[str, float]) -> None:
    _set_all(AGENTS, by_presence)


def set_sla_due(count: int) -> None:
    SLA_DUE.labels(*_identity).set(count)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST

