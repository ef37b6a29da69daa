from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from services.intake_phone import calls
from services.intake_phone.cdr import CdrFileError, CdrRow, RowError, calls_from_rows, decode, read_rows
from services.intake_phone.policy import load_policy
from services.intake_phone.tests.cdr_samples import MORNING, cdr_line, master_csv
from services.intake_phone.tests.conftest import SHIPPED_POLICY

SHANGHAI = ZoneInfo("Asia/Shanghai")
POLICY = load_policy(SHIPPED_POLICY, default_region="CN")


def rows(text, zone=SHANGHAI):
    return list(read_rows(text, zone))


def batch(text):
    return calls_from_rows(read_rows(text, SHANGHAI), POLICY, "CN")


def settle(call):
    state = None
    for event, when in call.events():
        state = calls.apply(state, event, now=when, trace_id="t")
    return state


def test_a_row_as_cdr_csv_writes_it():
    [row] = rows(master_csv(cdr_line(clid='"张伟" <13812345678>', answer="", userfield="vip")))
    assert isinstance(row, CdrRow)
    assert (row.src, row.dst, row.dcontext, row.uniqueid, row.disposition) == (
        "13812345678", "4008001234", "from-trunk", "1700000000.1", "NO ANSWER")
    assert row.clid == '"张伟" <13812345678>' and row.answer is None
    assert row.start == datetime(2026, 11, 20, 1, 0, tzinfo=timezone.utc)  # 09:00 in Shanghai
    assert row.line == 1


@pytest.mark.parametrize("extra", [dict(), dict(userfield="x"), dict(new_columns=("", "1700000000.1", 3)),
                                   dict(userfield="x", new_columns=("", "1700000000.1", 3))])
def test_every_layout_with_uniqueid_reads(extra):
    [row] = rows(master_csv(cdr_line(**extra)))
    assert isinstance(row, CdrRow) and row.uniqueid == "1700000000.1"


def test_usegmtime_files_read_as_utc():
    [row] = rows(master_csv(cdr_line()), zone=timezone.utc)
    assert row.start == datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)


def test_without_uniqueid_the_whole_file_is_refused_saying_how_to_fix_it():
    without = cdr_line().rsplit(",", 1)[0]  # amaflags is the last column
    with pytest.raises(CdrFileError, match="16 columns, no uniqueid: set loguniqueid=yes"):
        rows(master_csv(without))
    with pytest.raises(CdrFileError, match="line 1: 3 columns; Asterisk Master.csv has 17, 18, 20 or 21"):
        rows("a,b,c\n")


def test_bad_rows_are_reported_with_their_line_numbers_and_the_rest_is_read():
    text = master_csv(
        cdr_line(uniqueid="ok.1"),
        cdr_line(uniqueid="bad.2", start="2026-11-31 09:00:00"),
        cdr_line(uniqueid="bad.3", disposition="MAYBE"),
        cdr_line(uniqueid=""),
        cdr_line(uniqueid="bad.5", end="2026-11-20 08:00:00"),
        cdr_line(uniqueid="bad.6", userfield="one column too many"),
        '"","138","4008001234","from-trunk","x"y"',
        cdr_line(uniqueid="bad.8").replace(",40,0,", ",forty,0,"),
        cdr_line(uniqueid="ok.9", src="not-a-number"),
        cdr_line(uniqueid="ok.10"),
    )
    result = batch(text)
    assert [c.call_id for c in result.calls] == ["ok.1", "ok.10"]
    assert [str(e) for e in result.errors[:7]] == [
        "line 2: start: '2026-11-31 09:00:00' is not a time (YYYY-MM-DD HH:MM:SS)",
        "line 3: disposition: 'MAYBE' is not one of ANSWERED, NO ANSWER, BUSY, FAILED, CONGESTION",
        "line 4: uniqueid is empty",
        "line 5: end '2026-11-20 08:00:00' is before start '2026-11-20 09:00:00'",
        "line 6: 18 columns, the file's first record has 17",
        "line 7: not a CSV record: ',' expected after '\"'",
        "line 8: duration: 'forty' is not a whole number",
    ]
    assert len(result.errors) == 8 and str(result.errors[7]).startswith("line 9: src: 'not-a-number': not a")
    assert result.rows == 3  # parsed rows (ok.1, ok.9 until its caller was checked, ok.10)


def test_the_morning_groups_into_calls_and_each_becomes_what_the_webhook_would_make():
    result = batch(MORNING)
    assert result.skipped == {"not_inbound": 2} and result.errors == []
    by_id = {c.call_id: c for c in result.calls}
    assert list(by_id) == [f"1700000000.{n}" for n in (1, 2, 3, 4, 5, 6, 9)]
    outcome = {}
    for call_id, call in by_id.items():
        state = settle(call)
        line = POLICY.line_for(queue=state.queue, to_number=state.to_number, context=state.context)
        outcome[call_id] = calls.ticket_kind(state, line)
    assert outcome == {
        "1700000000.1": ("callback", ""),                       # NO ANSWER
        "1700000000.2": ("callback", ""),                       # given up in the queue
        "1700000000.3": ("callback", ""),                       # BUSY
        "1700000000.4": (None, "answered_without_wrap_up"),    # an agent answered; no wrap-up in a CDR
        "1700000000.5": ("voicemail", ""),
        "1700000000.6": (None, "answered_without_wrap_up"),    # the IVR served it
        "1700000000.9": (None, "answered_without_wrap_up"),    # two rows, the second agent answered
    }
    abandoned = settle(by_id["1700000000.2"])
    assert abandoned.queue == "support" and abandoned.cause == "cancel"
    two_rows = by_id["1700000000.9"]
    assert two_rows.lines == [9, 10] and two_rows.agent == "SIP/8003"
    assert settle(two_rows).answered_by == ("SIP/8003",)
    first = settle(by_id["1700000000.1"])
    assert first.from_number == "+8613812345678" and first.to_number == "+864008001234"
    assert first.ended_at - first.rang_at == timedelta(seconds=40)


def test_rows_of_one_call_in_any_order_give_the_same_call():
    answered, missed = MORNING.strip().split("\n")[-1], MORNING.strip().split("\n")[-2]
    forward, backward = batch(master_csv(missed, answered)).calls[0], batch(master_csv(answered, missed)).calls[0]
    assert settle(forward).answered_by == settle(backward).answered_by == ("SIP/8003",)
    assert (forward.start, forward.end) == (backward.start, backward.end)


def test_chinese_caller_names_in_gb18030_decode():
    raw = master_csv(cdr_line(clid='"王芳" <13812345678>')).encode("gb18030")
    [row] = rows(decode(raw))
    assert row.clid == '"王芳" <13812345678>'
    assert decode("\ufeffa".encode("utf-8")) == "a"  # a BOM some exports add


def test_row_errors_say_where():
    assert str(RowError(7, "x")) == "line 7: x"
