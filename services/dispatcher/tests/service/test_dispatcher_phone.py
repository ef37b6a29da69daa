"""intake_phone's calls resolved on first contact: the dispatcher routes nothing, remembers the contact."""
from shared import events as ev
from shared.testing.plugin import poll_until

from services.dispatcher.customers import customer_key
from services.dispatcher.tests.service.test_dispatcher_service import (NOW, collect, go_online, of, start_dispatcher,
                                                                       write_roster)

CALLER = {"name": "", "phone": "+8613812345678"}


def call_ticket(ticket_id, **source):
    return ev.make_event(ev.INTAKE_PHONE, ev.TICKET_RECEIVED, now=NOW, trace_id=f"trace-{ticket_id}",
                         ticket_id=ticket_id, channel="phone", customer=CALLER, subject="来电记录 / Call",
                         text="客户询问发票抬头，已告知。", received_at=NOW,
                         source={"call_id": f"c-{ticket_id}", "category": "call", "callback": "false", **source})


def test_a_call_resolved_on_first_contact_is_not_routed_but_counts_in_the_customers_history(
        service_container, tmp_path, publish, store, event_listener):
    start_dispatcher(service_container, write_roster(tmp_path, [{"agent_id": "li.na", "skills": {"general": 3, "billing": 4}},
                                                           {"agent_id": "sam.taylor"}]))
    listener = event_listener(ev.DISPATCHER)
    go_online(publish, store, "li.na")
    key = customer_key(ev.Customer(**CALLER))

    publish(ev.INTAKE_PHONE, ev.TICKET_RECEIVED,
            call_ticket("TM-10001", resolved_on_first_contact="true", agent_id="sam.taylor"))
    history = poll_until(lambda: (h := store.customer_history(key, now=NOW.timestamp() + 1)).recent_tickets and h,
                         what="the resolved call in the customer's history")
    assert (history.recent_tickets, history.open_tickets, history.last_agent_id) == (1, 0, "sam.taylor")

    publish(ev.INTAKE_PHONE, ev.TICKET_RECEIVED, call_ticket("TM-10002", resolved_on_first_contact="false"))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-10002"))
    assert {b["ticket_id"] for _, b in events} == {"TM-10002"}  # the resolved call: no classification, no offer
    assert store.ticket("TM-10001") is None and store.open_tickets("li.na") == {"TM-10002"}
