"""Due-time arithmetic for SLA clocks."""
import pytest

from services.sla_watcher.clocks import (
    BREACHED,
    due_items,
    elapsed_fraction,
    item_from_member,
    parse_member,
)

RECEIVED = 1_800_000_000.25  # sub-second received_at must survive


def test_warnings_in_order_then_breach_at_received_plus_target():
    items = due_items("TM-1", "first_response", received_at=RECEIVED, target_seconds=900, warn_at=[0.8, 0.5])
    assert [(i.kind, i.due_at) for i in items] == [
        ("warning@0.5", RECEIVED + 450),
        ("warning@0.8", RECEIVED + 720),
        (BREACHED, RECEIVED + 900),
    ]
    assert [i.member for i in items][-1] == "TM-1:first_response:breached"
    assert [i.fraction for i in items] == [0.5, 0.8, 1.0]


def test_no_warnings_means_breach_only_and_bad_fractions_are_ignored():
    assert [i.kind for i in due_items("TM-1", "first_response", received_at=0, target_seconds=60, warn_at=[])] \
        == [BREACHED]
    kinds = [i.kind for i in due_items("TM-1", "first_response", received_at=0, target_seconds=60,
                                       warn_at=[0, 1, 1.5, 0.8, 0.8])]
    assert kinds == ["warning@0.8", BREACHED]


def test_sub_second_targets_keep_precision():
    [warn, breach] = due_items("TM-1", "first_response", received_at=RECEIVED, target_seconds=1, warn_at=[0.25])
    assert warn.due_at == pytest.approx(RECEIVED + 0.25, abs=1e-6)
    assert breach.due_at == pytest.approx(RECEIVED + 1, abs=1e-6)


def test_member_round_trip_even_with_colons_in_the_ticket_id():
    assert parse_member("TM:odd:first_response:warning@0.8") == ("TM:odd", "first_response", "warning@0.8")
    item = item_from_member("TM-9:first_response:warning@0.8", received_at=100.0, target_seconds=50)
    assert (item.ticket_id, item.kind, item.due_at, item.is_breach) == ("TM-9", "warning@0.8", 140.0, False)
    assert item_from_member("TM-9:first_response:breached", received_at=100.0, target_seconds=50).due_at == 150.0


def test_elapsed_fraction():
    assert elapsed_fraction(100.0, 50, 125.0) == 0.5
    assert elapsed_fraction(100.0, 50, 90.0) == 0.0
