"""A contact folded into an open ticket (dispatcher ticket_attached, mode attach) is the customer
writing on that ticket: the SLA watcher in a nameko container, real RabbitMQ and Redis."""
import time

import pytest
from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_waiter

from services.sla_watcher.clocks import NEXT_RESPONSE, RESOLUTION
from services.sla_watcher.store import SlaStore
from services.sla_watcher.tests.service.support import (at, classified, replied, start_watcher, status,
                                                        write_policies)
from shared import events as ev


@pytest.fixture
def publish(amqp_uri):
    dispatch = event_dispatcher({"AMQP_URI": amqp_uri})
    return lambda source, event_type, body: dispatch(source, event_type, body)


def handled(container, publish, entrypoint, source, event_type, body):
    with entrypoint_waiter(container, entrypoint, timeout=10):
        publish(source, event_type, body)


def attached(contact_id, into, received_at, mode="attach"):
    return ev.make_event(ev.DISPATCHER, ev.TICKET_ATTACHED, now=at(received_at), trace_id=f"trace-{contact_id}",
                         ticket_id=contact_id, into_ticket_id=into, channel="phone",
                         customer={"phone": "+8613812345678", "verified": ["phone"]}, text="Missed call",
                         received_at=at(received_at), mode=mode)


def test_an_attached_contact_resumes_the_open_ticket_and_starts_its_next_response(service_container, tmp_path,
                                                                                 publish, redis_client):
    store = SlaStore(redis_client)
    policy = write_policies(tmp_path / "sla.yaml", {"name": "p", "first_response": 3600, "next_response": 3600,
                                                    "resolution": 7200, "warn_at": []})
    container = start_watcher(service_container, policy)
    t0 = time.time()
    handled(container, publish, "handle_ticket_classified", ev.DISPATCHER, ev.TICKET_CLASSIFIED,
            classified("TM-1", t0 - 60))
    handled(container, publish, "handle_agent_replied", ev.AGENT_DESK, ev.AGENT_REPLIED, replied("TM-1", t0 - 50))
    handled(container, publish, "handle_ticket_status_changed", ev.AGENT_DESK, ev.TICKET_STATUS_CHANGED,
            status("TM-1", "waiting_on_customer", t0 - 40))
    assert store.clock("TM-1", RESOLUTION).state == "paused" and store.clock("TM-1", NEXT_RESPONSE) is None

    # Linked: a ticket of its own; the open one is not touched.
    handled(container, publish, "handle_ticket_attached", ev.DISPATCHER, ev.TICKET_ATTACHED,
            attached("TM-2", "TM-1", t0 - 30, mode="link"))
    assert store.clock("TM-1", RESOLUTION).state == "paused" and store.clock("TM-1", NEXT_RESPONSE) is None
    # Attached: the customer wrote on TM-1 (by phone).
    handled(container, publish, "handle_ticket_attached", ev.DISPATCHER, ev.TICKET_ATTACHED,
            attached("TM-3", "TM-1", t0 - 20))
    assert store.clock("TM-1", RESOLUTION).state == "running"
    next_response = store.clock("TM-1", NEXT_RESPONSE)
    assert next_response.state == "running" and next_response.cycle == 1
    assert store.clock("TM-3", RESOLUTION) is None  # the contact itself has no clocks
