"""reports.py: periods, percentiles, SLA outcomes, grouping, time zones, buckets and the backlog."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from services.agent_desk import reports
from services.agent_desk.reports import ReportError, TicketFacts

UTC = timezone.utc
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp()


def test_percentiles_are_nearest_rank():
    assert reports.percentile([4, 1, 3, 2], 50) == 2 and reports.percentile([4, 1, 3, 2], 90) == 4
    assert reports.percentile([7], 50) == 7 and reports.percentile([7], 90) == 7
    assert reports.percentile(list(range(1, 11)), 90) == 9 and reports.percentile([], 50) is None


def test_a_period_is_whole_days_in_its_zone_with_the_end_day_included():
    assert reports.period("2026-03-01", "2026-03-02", UTC, NOW) == (
        datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    start, end = reports.period("2026-03-01", "2026-03-01", SHANGHAI, NOW)
    assert (start.astimezone(UTC), end.astimezone(UTC)) == (datetime(2026, 2, 28, 16, tzinfo=UTC),
                                                            datetime(2026, 3, 1, 16, tzinfo=UTC))
    assert reports.period(None, None, UTC, NOW) == (datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC))
    assert reports.period("2026-03-01T08:00:00Z", "2026-03-01T09:30", UTC, NOW) == (
        datetime(2026, 3, 1, 8, tzinfo=UTC), datetime(2026, 3, 1, 9, 30, tzinfo=UTC))
    for start, end in [("2026-03-05", "2026-03-01"), ("2025-01-01", "2026-03-01"), ("last week", None),
                       ("2026-02-30", None)]:
        with pytest.raises(ReportError) as caught:
            reports.period(start, end, UTC, NOW)
        assert caught.value.code == "invalid_period"
    with pytest.raises(ReportError) as caught:
        reports.zone("Mars/Olympus")
    assert caught.value.code == "invalid_timezone"
    assert reports.zone("utc") is UTC and str(reports.zone("Asia/Shanghai")) == "Asia/Shanghai"


def test_facts_hash_takes_the_larger_breach_count_and_ignores_a_bad_score():
    facts = reports.facts_from_hash({
        "ticket_id": "TM-1", "received_at": "100.5", "breached:first_response": "1",
        "clock_breached:first_response": "1", "clock_breached:next_response": "2", "met:resolution": "1",
        "csat": "9", "resolved_at": "200", "reopened_at": "300", "escalations": "2"})
    assert facts.breaches == {"first_response": 1, "next_response": 2} and facts.met == {"resolution": 1}
    assert facts.csat is None and facts.escalations == 2
    assert not facts.resolved and facts.resolution_seconds is None  # reopened after its resolution
    assert reports.facts_from_hash({"ticket_id": "TM-2"}).skills == "general"


def test_sla_outcomes_count_only_clocks_that_finished():
    running = TicketFacts("a", received_at=T0)
    met = TicketFacts("b", received_at=T0, met={"first_response": 1})
    met_then_breached = TicketFacts("c", received_at=T0, met={"first_response": 1, "next_response": 3},
                                    breaches={"next_response": 1})
    assert [t.sla_outcome for t in (running, met, met_then_breached)] == [None, "met", "breached"]
    figures = reports.figures([running, met, met_then_breached])
    assert figures["sla"] == {"met": 1, "breached": 1, "attainment": 50.0, "clocks": {
        "first_response": {"met": 2, "breached": 0, "attainment": 100.0},
        "next_response": {"met": 0, "breached": 1, "attainment": 0.0}}}
    assert figures["breaches"] == {"next_response": 1, "total": 1}


def _ticket(ticket_id: str, hours: float, **kw) -> TicketFacts:
    return TicketFacts(ticket_id, received_at=T0 + hours * 3600, **kw)


def test_rows_per_agent_group_channel_and_day():
    tickets = [
        _ticket("a", 0, agent="li.na", group="billing", channel="email", first_response_at=T0 + 60, resolved_at=T0 + 600,
                csat=5),
        _ticket("b", 1, agent="li.na", group="billing", channel="chat", first_response_at=T0 + 3600 + 30),
        _ticket("c", 7.5, channel="phone"),    # 16:30 UTC: 00:30 the next day in Shanghai
        _ticket("d", -48, agent="sam"),        # before the period
    ]
    start, end = reports.period("2026-03-02", "2026-03-03", UTC, NOW)
    by_agent = reports.build(tickets, start=start, end=end, by="agent", tz=UTC, open_tickets=[], now=NOW)
    assert [(r["key"], r["tickets"]) for r in by_agent["rows"]] == [("li.na", 2), (None, 1)]
    li_na = by_agent["rows"][0]
    assert li_na["first_response"] == {"count": 2, "p50_seconds": 30.0, "p90_seconds": 60.0, "average_seconds": 45.0}
    assert li_na["resolution"]["p50_seconds"] == 600.0 and li_na["resolved"] == 1 and li_na["open"] == 1
    assert li_na["csat"] == {"count": 1, "average": 5.0, "distribution": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 1}}
    assert [b["count"] for b in by_agent["response_time_distribution"]] == [1, 1, 0, 0, 0, 0, 0]
    by_group = reports.build(tickets, start=start, end=end, by="group", tz=UTC, open_tickets=[], now=NOW)
    assert [(r["key"], r["tickets"]) for r in by_group["rows"]] == [("billing", 2), (None, 1)]
    by_channel = reports.build(tickets, start=start, end=end, by="channel", tz=UTC, open_tickets=[], now=NOW)
    assert [r["key"] for r in by_channel["rows"]] == ["chat", "email", "phone"]
    utc_days = reports.build(tickets, start=start, end=end, by="day", tz=UTC, open_tickets=[], now=NOW)
    assert [(r["key"], r["tickets"]) for r in utc_days["rows"]] == [("2026-03-02", 3), ("2026-03-03", 0)]
    start, end = reports.period("2026-03-02", "2026-03-03", SHANGHAI, NOW)
    shanghai = reports.build(tickets, start=start, end=end, by="day", tz=SHANGHAI, open_tickets=[], now=NOW)
    assert [(r["key"], r["tickets"]) for r in shanghai["rows"]] == [("2026-03-02", 2), ("2026-03-03", 1)]
    assert [d["day"] for d in shanghai["sla_by_day"]] == ["2026-03-02", "2026-03-03"]
    with pytest.raises(ReportError):
        reports.build(tickets, start=start, end=end, by="weekday", tz=UTC, open_tickets=[], now=NOW)


def test_response_buckets_put_each_bound_in_the_bucket_it_starts():
    tickets = [TicketFacts(str(s), received_at=0, first_response_at=s) for s in (0, 59.9, 60, 899, 86399, 86400, 10**6)]
    assert [b["count"] for b in reports.response_buckets(tickets)] == [2, 1, 1, 0, 0, 1, 2]
    assert reports.response_buckets([])[-1] == {"from_seconds": 86400, "to_seconds": None, "count": 0}


def test_the_backlog_counts_open_tickets_by_skill_oldest_first_in_age():
    now = datetime.fromtimestamp(T0 + 7200, UTC)
    open_now = [_ticket("a", 0, skills="billing", channel="email"), _ticket("b", 1, skills="billing", channel="chat"),
                _ticket("c", 1.5, skills="technical", channel="email"),
                _ticket("d", 0, skills="technical", resolved_at=T0 + 10)]   # resolved meanwhile
    assert reports.backlog(open_now, now) == [
        {"skill": "billing", "open": 2, "oldest_seconds": 7200.0, "by_channel": {"chat": 1, "email": 1}},
        {"skill": "technical", "open": 1, "oldest_seconds": 1800.0, "by_channel": {"email": 1}}]


def test_a_summary_says_resolved_only_while_it_is():
    reopened = TicketFacts("a", received_at=T0, resolved_at=T0 + 60, reopened_at=T0 + 120, first_response_at=T0 + 5)
    summary = reports.summary(reopened)
    assert summary["resolved"] is False and summary["resolved_at"] is None and summary["first_response_seconds"] == 5
    assert summary["received_at"] == datetime.fromtimestamp(T0, UTC).isoformat()
    again = reports.summary(TicketFacts("a", received_at=T0, resolved_at=T0 + 180, reopened_at=T0 + 120))
    assert again["resolved"] is True and again["resolution_seconds"] == 180
    assert timedelta(seconds=again["resolution_seconds"]) == timedelta(minutes=3)


def test_history_and_report_settings_are_checked_at_start():
    from services.agent_desk.config import Settings
    from shared.config import ConfigError

    settings = Settings.from_env({"TM_REPORT_TIMEZONE": "Asia/Shanghai", "TM_HISTORY_EVENT_DAYS": "7"})
    assert (settings.report_timezone, settings.history_event_days, settings.history_fact_days) == (
        "Asia/Shanghai", 7.0, 180.0)
    assert settings.history_record is True and settings.history_max_events == 500
    for name, value in [("TM_REPORT_TIMEZONE", "Mars/Olympus"), ("TM_HISTORY_EVENT_DAYS", "0"),
                        ("TM_HISTORY_MAX_EVENTS", "0"), ("TM_HISTORY_RECORD", "maybe")]:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})
