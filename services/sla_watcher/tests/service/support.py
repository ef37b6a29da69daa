"""Events, policy files and a listener helper for the SLA watcher's service tests."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import yaml

from services.sla_watcher.engine import Loaded
from services.sla_watcher.service import SlaWatcherService
from shared import events as ev
from shared.sla_policy import load_sla_config


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def _meta(ticket_id: str, when: float | None = None) -> dict:
    return {"now": at(time.time() if when is None else when), "trace_id": f"trace-{ticket_id}", "ticket_id": ticket_id}


def classified(ticket_id, received_at, priority="P1", channel="email", customer_tier="standard", category=None):
    return ev.make_event(ev.DISPATCHER, ev.TICKET_CLASSIFIED, **_meta(ticket_id), channel=channel, priority=priority,
                         required_skills=["general"], language="zh", received_at=at(received_at),
                         customer_tier=customer_tier, category=category)


def received(ticket_id, received_at, email="zhang.wei@example.com", linked=None, channel="email"):
    return ev.make_event(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, **_meta(ticket_id), channel=channel,
                         customer={"name": "张伟", "email": email}, subject="订单", text="你好",
                         received_at=at(received_at), linked_ticket_id=linked)


def assigned(ticket_id, agent_id):
    return ev.make_event(ev.DISPATCHER, ev.TICKET_ASSIGNED, **_meta(ticket_id), agent_id=agent_id, channel="email",
                         priority="P1", required_skills=["general"],
                         decision={"considered": 1, "eligible": 1, "reason": "only one", "rejected": {}})


def unassigned(ticket_id, agent_id):
    return ev.make_event(ev.DISPATCHER, ev.TICKET_UNASSIGNED, **_meta(ticket_id), agent_id=agent_id, reason="declined",
                         by=agent_id)


def replied(ticket_id, when=None, reply="r1"):
    return ev.make_event(ev.AGENT_DESK, ev.AGENT_REPLIED, **_meta(ticket_id, when), agent_id="li.na", channel="email",
                         text="您好，已处理", reply_id=f"{reply}-{ticket_id}", customer={"name": "张伟"})


def message(ticket_id, received_at, message_id="m1"):
    return ev.make_event(ev.INTAKE_EMAIL, ev.MESSAGE_RECEIVED, **_meta(ticket_id), channel="email",
                         customer={"name": "张伟", "email": "zhang.wei@example.com"}, text="还没好",
                         message_id=message_id, received_at=at(received_at))


def status(ticket_id, value, when, paused=None):
    return ev.make_event(ev.AGENT_DESK, ev.TICKET_STATUS_CHANGED, **_meta(ticket_id, when), status=value,
                         paused=(value != "open") if paused is None else paused, agent_id="li.na")


def resolved(ticket_id, when=None, resolution="solved"):
    return ev.make_event(ev.AGENT_DESK, ev.TICKET_RESOLVED, **_meta(ticket_id, when), agent_id="li.na",
                         channel="email", resolution=resolution)


def reopened(ticket_id, when=None):
    return ev.make_event(ev.AGENT_DESK, ev.TICKET_REOPENED, **_meta(ticket_id, when), by="customer",
                         agent_id="li.na", channel="email")


def write_policies(path, *policies, calendars_file=None):
    data: dict = {"policies": list(policies)}
    if calendars_file:
        data["calendars_file"] = calendars_file
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return str(path)


def tiny_policies(tmp_path, target=1, warn_at=(0.5,), **extra):
    return write_policies(tmp_path / "sla.yaml", {"name": "tiny", "first_response": target, "warn_at": list(warn_at),
                                                  **extra})


def start_watcher(service_container, policy_file, **config):
    container = service_container(SlaWatcherService, TM_SLA_POLICY_FILE=policy_file, **config)
    container.start()
    return container


def collect(listener, done, timeout=10.0):
    """Every (event_type, body, observed_at) the listener sees until ``done(seen)`` holds."""
    seen = []

    def predicate(event_type, body):
        seen.append((event_type, body, time.time()))
        return done(seen)

    listener.wait_for(predicate, timeout=timeout)
    return seen


def breached(ticket_id):
    return lambda seen: any(t == ev.SLA_BREACHED and b["ticket_id"] == ticket_id for t, b, _ in seen)


def of(seen, ticket_id, *types):
    return [(t, b) for t, b, _ in seen if b["ticket_id"] == ticket_id and (not types or t in types)]


def changes(seen, ticket_id, clock=None):
    return [(b["clock"], b["change"]) for t, b, _ in seen
            if t == ev.SLA_CLOCK_CHANGED and b["ticket_id"] == ticket_id and (clock is None or b["clock"] == clock)]


class StaticConfig:
    """A config source for engine tests: one file, registered as a generation."""

    def __init__(self, path, store):
        config = load_sla_config(path)
        self.loaded = Loaded(config, store.register_config(config.digest))

    def current(self, now):
        return self.loaded

    def refresh(self, now):
        return self.loaded


class Recorder:
    """An engine's ``emit``: keeps (event_type, fields) in order, publishes nothing."""

    def __init__(self):
        self.events: list[tuple[str, dict]] = []

    def __call__(self, event_type, /, *, now, trace_id, **fields):
        body = ev.make_event(ev.SLA_WATCHER, event_type, now=now, trace_id=trace_id, **fields)
        self.events.append((event_type, body))
        return body
