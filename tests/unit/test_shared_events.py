import json
from datetime import datetime, timedelta, timezone

import pytest

from shared import events as ev
from shared.intake_ledger import stable_event_id

NOW = datetime(2026, 11, 22, 16, 0, tzinfo=timezone(timedelta(hours=8)))


def test_make_event_stamps_envelope_in_utc():
    body = ev.make_event("agent_desk", "agent_presence_changed", now=NOW, trace_id="t", agent_id="li.na", presence="online")
    assert body["occurred_at"] == "2026-11-22T08:00:00Z"
    assert body["schema_version"] == ev.SCHEMA_VERSION and len(body["event_id"]) == 32
    assert body["ticket_id"] is None


def test_make_event_rejects_unknown_fields_and_bad_values():
    with pytest.raises(ev.InvalidEvent, match="unknown fields \\['agnet_id'\\]"):
        ev.make_event("agent_desk", "agent_presence_changed", now=NOW, trace_id="t", agnet_id="x", presence="online")
    with pytest.raises(ev.InvalidEvent, match="presence"):
        ev.make_event("agent_desk", "agent_presence_changed", now=NOW, trace_id="t", agent_id="x", presence="busy")


def test_unknown_source_or_type_is_invalid():
    with pytest.raises(ev.InvalidEvent, match="unknown event type"):
        ev.parse_event("intake_fax", "ticket_received", {})


def test_parse_event_is_a_tolerant_reader_but_checks_types_and_versions():
    body = ev.make_event("intake_phone", "ticket_received", now=NOW, trace_id="t", ticket_id="TM-1", channel="phone",
                         customer={"phone": "+8613800000000"}, subject="s", text="t", received_at=NOW)
    parsed = ev.parse_event("intake_phone", "ticket_received", {**body, "added_later": 1})
    assert parsed.customer.phone == "+8613800000000"
    with pytest.raises(ev.InvalidEvent, match="schema_version 9 is newer"):
        ev.parse_event("intake_phone", "ticket_received", {**body, "schema_version": 9})
    with pytest.raises(ev.InvalidEvent, match="not a JSON object"):
        ev.parse_event("intake_phone", "ticket_received", ["x"])
    with pytest.raises(ev.InvalidEvent, match="channel"):
        ev.parse_event("intake_phone", "ticket_received", {**body, "channel": "fax"})


def test_parse_event_json_accepts_and_refuses_exactly_what_parse_event_does():
    body = ev.make_event("intake_phone", "ticket_received", now=NOW, trace_id="t", ticket_id="TM-1", channel="phone",
                         customer={"phone": "+8613800000000"}, subject="s", text="t", received_at=NOW)

    def raw(value):
        return json.dumps(value, ensure_ascii=False).encode()

    parsed = ev.parse_event_json("intake_phone", "ticket_received", raw({**body, "added_later": 1}))
    assert parsed == ev.parse_event("intake_phone", "ticket_received", body)
    refused = [{**body, "schema_version": 9}, ["x"], {**body, "channel": "fax"}, {**body, "received_at": "now"}]
    for value in refused:
        with pytest.raises(ev.InvalidEvent) as slow:
            ev.parse_event("intake_phone", "ticket_received", value)
        with pytest.raises(ev.InvalidEvent) as fast:
            ev.parse_event_json("intake_phone", "ticket_received", raw(value))
        assert fast.value.reason == slow.value.reason
    with pytest.raises(ev.InvalidEvent, match="^intake_phone.ticket_received: body is not JSON: Expecting"):
        ev.parse_event_json("intake_phone", "ticket_received", b"{not json")
    with pytest.raises(ev.InvalidEvent, match="body is not JSON"):
        ev.parse_event_json("intake_phone", "ticket_received", b"\xff\xfe")

def test_every_schema_round_trips_through_json_fields():
    for (source, event_type), schema in ev.SCHEMAS.items():
        assert issubclass(schema, ev.Envelope), (source, event_type)


def test_stable_event_id_is_deterministic_per_input():
    assert stable_event_id("ticket_received", "TM-1") == stable_event_id("ticket_received", "TM-1")
    assert stable_event_id("ticket_received", "TM-1") != stable_event_id("ticket_received", "TM-2")


def test_a_payload_field_named_source_does_not_collide_with_the_producer_argument():
    body = ev.make_event("intake_phone", "ticket_received", now=NOW, trace_id="t", ticket_id="TM-1", channel="phone",
                         customer={}, subject="s", text="t", received_at=NOW, source={"call_id": "c-1"})
    assert body["source"] == {"call_id": "c-1"}


def test_a_broker_nack_is_transient_so_the_message_is_retried_not_dead_lettered():
    import amqp.exceptions

    from shared.errors import is_transient

    assert is_transient(amqp.exceptions.MessageNacked())
    assert not is_transient(ValueError("bad data"))
