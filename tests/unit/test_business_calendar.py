"""Business-calendar arithmetic: table tests across lunch gaps, weekends, midnight, China's 2026
holidays and adjusted working days (调休), DST in New York and Berlin, plus inverse properties
against a day-by-day reference."""
import random
from datetime import date, datetime, time, timedelta, timezone

import pytest
from zoneinfo import ZoneInfo

from shared.business_calendar import (
    ALWAYS, BusinessCalendar, CalendarError, Period, load_calendars, make_calendar,
)

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
BER = ZoneInfo("Europe/Berlin")
UTC = timezone.utc
H = 3600

CALENDARS = load_calendars("deploy/config/calendars.yaml")
CN = CALENDARS["cn-support"]     # mon-fri 09:00-12:00 + 13:30-18:00, sat 10:00-16:00, China 2026
OFFICE = CALENDARS["cn-office"]  # mon-fri 09:00-18:00, China 2026
US = CALENDARS["us-east"]        # mon-fri 08:00-20:00 New York
EU = CALENDARS["eu-central"]     # mon-fri 08:00-17:00 Berlin
# Open every night across the DST changes (both fall on Sundays in 2026).
NY_NIGHT = make_calendar("ny-night", "America/New_York", {"daily": ["01:00-04:00"]})
BER_NIGHT = make_calendar("ber-night", "Europe/Berlin", {"daily": ["01:00-04:00"]})
# 24x7 in Shanghai with one holiday: not the ALWAYS fast path, so midnight goes through the tables.
SH_24 = make_calendar("sh-24", "Asia/Shanghai", {"daily": ["00:00-24:00"]}, holidays=["2026-07-01"])
NIGHT_SHIFT = make_calendar("night", "Asia/Shanghai", {"daily": ["00:00-06:00", "22:00-24:00"]})


def sh(*args):
    return datetime(*args, tzinfo=SH)


def ny(*args, fold=0):
    return datetime(*args, tzinfo=NY, fold=fold)


def ber(*args):
    return datetime(*args, tzinfo=BER)


ADD_CASES = [
    # name, calendar, start, business seconds, expected due
    ("zero stays put even when closed", CN, sh(2026, 3, 7, 22, 0), 0, sh(2026, 3, 7, 22, 0)),
    ("inside one period", CN, sh(2026, 3, 2, 9, 0), 2 * H, sh(2026, 3, 2, 11, 0)),
    ("across the lunch gap", CN, sh(2026, 3, 2, 11, 30), H, sh(2026, 3, 2, 14, 0)),
    ("from inside the lunch gap", CN, sh(2026, 3, 2, 12, 45), 30 * 60, sh(2026, 3, 2, 14, 0)),
    ("used up at closing time is due at closing", CN, sh(2026, 3, 6, 17, 0), H, sh(2026, 3, 6, 18, 0)),
    ("friday evening to saturday hours", CN, sh(2026, 3, 6, 17, 0), 2 * H, sh(2026, 3, 7, 11, 0)),
    ("friday evening to monday", OFFICE, sh(2026, 3, 6, 17, 30), H, sh(2026, 3, 9, 9, 30)),
    ("weekend start waits for monday", OFFICE, sh(2026, 3, 8, 15, 0), 2 * H, sh(2026, 3, 9, 11, 0)),
    ("us friday 16:30 + 5h is monday (Chatwoot #13392)", US, ny(2026, 3, 13, 16, 30), 5 * H, ny(2026, 3, 16, 9, 30)),
    ("10 business days", OFFICE, sh(2026, 3, 2, 9, 0), 10 * 9 * H, sh(2026, 3, 13, 18, 0)),
    # China 2026: 元旦 Jan 1-3 off, Sunday Jan 4 works with Monday's hours.
    ("new year's eve into the new year holiday", OFFICE, sh(2025, 12, 31, 17, 0), 2 * H, sh(2026, 1, 4, 10, 0)),
    ("调休 sunday uses monday's periods", CN, sh(2026, 1, 4, 11, 0), 2 * H, sh(2026, 1, 4, 14, 30)),
    # Spring Festival: Sat Feb 14 works, Feb 15-23 off, Sat Feb 28 works.
    ("调休 saturday before spring festival", OFFICE, sh(2026, 2, 13, 17, 0), 2 * H, sh(2026, 2, 14, 10, 0)),
    ("调休 saturday uses monday's hours, not saturday's", CN, sh(2026, 2, 14, 9, 0), 3 * H, sh(2026, 2, 14, 12, 0)),
    ("over the spring festival week", OFFICE, sh(2026, 2, 14, 17, 0), 2 * H, sh(2026, 2, 24, 10, 0)),
    ("start inside the holiday", CN, sh(2026, 2, 18, 10, 0), 30 * 60, sh(2026, 2, 24, 9, 30)),
    ("调休 saturday after spring festival", OFFICE, sh(2026, 2, 27, 17, 0), 2 * H, sh(2026, 2, 28, 10, 0)),
    ("national day week and the 调休 saturday", OFFICE, sh(2026, 9, 30, 17, 0), 2 * H, sh(2026, 10, 8, 10, 0)),
    ("holiday saturday (清明) has no saturday hours", CN, sh(2026, 4, 3, 17, 30), H, sh(2026, 4, 7, 9, 30)),
    # Midnight: no closed minute at midnight (Zammad #3180), periods that end at 24:00.
    ("24x7 across midnight", SH_24, sh(2026, 3, 2, 23, 30), H, sh(2026, 3, 3, 0, 30)),
    ("24x7 skips its holiday", SH_24, sh(2026, 6, 30, 23, 0), 2 * H, sh(2026, 7, 2, 1, 0)),
    ("night shift across midnight", NIGHT_SHIFT, sh(2026, 3, 2, 23, 30), H, sh(2026, 3, 3, 0, 30)),
    ("night shift morning to evening", NIGHT_SHIFT, sh(2026, 3, 3, 5, 30), H, sh(2026, 3, 3, 22, 30)),
    # DST, America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.
    ("spring forward: 01:00-04:00 holds 2h", NY_NIGHT, ny(2026, 3, 8, 1, 0), 2 * H, ny(2026, 3, 8, 4, 0)),
    ("spring forward: 3h spill into the next night", NY_NIGHT, ny(2026, 3, 8, 1, 0), 3 * H, ny(2026, 3, 9, 2, 0)),
    ("fall back: 01:00-04:00 holds 4h", NY_NIGHT, ny(2026, 11, 1, 1, 0), 4 * H, ny(2026, 11, 1, 4, 0)),
    ("fall back: 1h ends in the repeated hour", NY_NIGHT, ny(2026, 11, 1, 1, 0), H, ny(2026, 11, 1, 1, 0, fold=1)),
    ("weekdays across spring forward", US, ny(2026, 3, 6, 19, 0), 2 * H, ny(2026, 3, 9, 9, 0)),
    ("weekdays across fall back", US, ny(2026, 10, 30, 19, 0), 2 * H, ny(2026, 11, 2, 9, 0)),
    # Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
    ("berlin spring forward night", BER_NIGHT, ber(2026, 3, 29, 1, 30), 2 * H, ber(2026, 3, 30, 1, 30)),
    ("berlin fall back night", BER_NIGHT, ber(2026, 10, 25, 1, 30), 3 * H, ber(2026, 10, 25, 3, 30)),
    ("berlin office across spring forward", EU, ber(2026, 3, 27, 16, 0), 2 * H, ber(2026, 3, 30, 9, 0)),
    ("always is plain addition", ALWAYS, ny(2026, 3, 7, 12, 0), 24 * H, ny(2026, 3, 8, 13, 0)),
]


@pytest.mark.parametrize("calendar, start, seconds, due",
                         [c[1:] for c in ADD_CASES], ids=[c[0] for c in ADD_CASES])
def test_add(calendar, start, seconds, due):
    result = calendar.add(start, seconds)
    # In UTC: an aware datetime in a repeated hour never compares equal across zones (PEP 495).
    assert result == due.astimezone(UTC)
    assert result.tzinfo == UTC
    if seconds:
        assert calendar.between(start, result) == pytest.approx(seconds, abs=1e-6)


BETWEEN_CASES = [
    ("end before start", CN, sh(2026, 3, 2, 10, 0), sh(2026, 3, 2, 9, 0), 0),
    ("one day with lunch", CN, sh(2026, 3, 2, 0, 0), sh(2026, 3, 3, 0, 0), 7.5 * H),
    ("half-open: the end instant is not counted", CN, sh(2026, 3, 2, 9, 0), sh(2026, 3, 2, 9, 0, 1), 1),
    ("an ordinary week", CN, sh(2026, 3, 2), sh(2026, 3, 9), 5 * 7.5 * H + 6 * H),
    ("spring festival week is empty", CN, sh(2026, 2, 15), sh(2026, 2, 24), 0),
    ("调休 saturday counts monday's hours", CN, sh(2026, 2, 14), sh(2026, 2, 15), 7.5 * H),
    ("january 2026: 22 weekdays - 2 holidays + 1 调休 sunday", OFFICE, sh(2026, 1, 1), sh(2026, 2, 1), 21 * 9 * H),
    ("spring forward day is an hour shorter", NY_NIGHT, ny(2026, 3, 8), ny(2026, 3, 9), 2 * H),
    ("fall back day is an hour longer", NY_NIGHT, ny(2026, 11, 1), ny(2026, 11, 2), 4 * H),
    ("berlin spring forward day", BER_NIGHT, ber(2026, 3, 29), ber(2026, 3, 30), 2 * H),
    ("berlin fall back day", BER_NIGHT, ber(2026, 10, 25), ber(2026, 10, 26), 4 * H),
    ("24x7 around midnight", SH_24, sh(2026, 3, 2, 23, 0), sh(2026, 3, 3, 1, 0), 2 * H),
    ("24x7 over its holiday", SH_24, sh(2026, 6, 30), sh(2026, 7, 3), 2 * 24 * H),
    # 2027's holidays are not published: Friday 2027-01-01 has weekly hours.
    ("across a year end", OFFICE, sh(2026, 12, 31, 17, 0), sh(2027, 1, 4, 10, 0), 11 * H),
    ("several years", US, ny(2026, 1, 1), ny(2029, 1, 1), US.between(ny(2026, 1, 1), ny(2027, 1, 1))
     + US.between(ny(2027, 1, 1), ny(2028, 1, 1)) + US.between(ny(2028, 1, 1), ny(2029, 1, 1))),
    ("always over a DST change", ALWAYS, ny(2026, 3, 8), ny(2026, 3, 9), 23 * H),
]


@pytest.mark.parametrize("calendar, start, end, seconds",
                         [c[1:] for c in BETWEEN_CASES], ids=[c[0] for c in BETWEEN_CASES])
def test_between(calendar, start, end, seconds):
    assert calendar.between(start, end) == pytest.approx(seconds, abs=1e-6)


OPEN_CASES = [
    (CN, sh(2026, 3, 2, 9, 0), True),              # opening instant is open
    (CN, sh(2026, 3, 2, 12, 0), False),            # closing instant is closed
    (CN, sh(2026, 3, 2, 13, 30), True),
    (CN, sh(2026, 3, 7, 10, 30), True),             # ordinary saturday hours
    (CN, sh(2026, 3, 7, 9, 30), False),
    (CN, sh(2026, 2, 14, 9, 30), True),             # 调休 saturday: monday's hours
    (CN, sh(2026, 2, 21, 11, 0), False),            # holiday saturday
    (CN, sh(2026, 9, 20, 17, 59), True),            # 调休 sunday
    (CN, sh(2026, 10, 1, 10, 0), False),            # national day
    (SH_24, sh(2026, 3, 3, 0, 0), True),            # midnight of a 24x7 calendar
    (SH_24, sh(2026, 7, 1, 12, 0), False),
    (NY_NIGHT, ny(2026, 11, 1, 1, 30, fold=1), True),  # the repeated hour is open both times
    (NY_NIGHT, ny(2026, 3, 8, 3, 30), True),
    (US, datetime(2026, 3, 9, 12, 30, tzinfo=UTC), True),   # 08:30 EDT
    (US, datetime(2026, 3, 9, 11, 30, tzinfo=UTC), False),  # 07:30 EDT, though 06:30 in EST
]


@pytest.mark.parametrize("calendar, at, expected", OPEN_CASES)
def test_is_open(calendar, at, expected):
    assert calendar.is_open(at) is expected


@pytest.mark.parametrize("calendar, at, expected", [
    (CN, sh(2026, 3, 2, 10, 0), sh(2026, 3, 2, 10, 0)),
    (CN, sh(2026, 3, 2, 12, 0), sh(2026, 3, 2, 13, 30)),
    (CN, sh(2026, 2, 13, 18, 0), sh(2026, 2, 14, 9, 0)),     # 调休 saturday at monday's opening
    (CN, sh(2026, 2, 14, 18, 0), sh(2026, 2, 24, 9, 0)),     # over spring festival
    (CN, sh(2026, 12, 31, 18, 0), sh(2027, 1, 1, 9, 0)),     # 2027 has no holiday file: weekly hours
    (US, ny(2026, 3, 7, 12, 0), ny(2026, 3, 9, 8, 0)),
    (ALWAYS, ny(2026, 3, 7, 12, 0), ny(2026, 3, 7, 12, 0)),
])
def test_next_open(calendar, at, expected):
    result = calendar.next_open(at)
    assert result == expected.astimezone(UTC) and result.tzinfo == UTC


def test_skipped_local_times_start_at_the_jump_and_empty_periods_vanish():
    cal = make_calendar("gap", "America/New_York", {"daily": ["02:00-02:45", "02:50-04:00"]})
    # On 2026-03-08 02:00-02:45 does not exist and 02:50-04:00 starts at the jump (03:00 EDT).
    assert cal.between(ny(2026, 3, 8), ny(2026, 3, 9)) == H
    assert cal.next_open(ny(2026, 3, 8, 1, 0)) == ny(2026, 3, 8, 3, 0)
    assert cal.between(ny(2026, 3, 9), ny(2026, 3, 10)) == 45 * 60 + 70 * 60


def _reference_between(calendar: BusinessCalendar, start: datetime, end: datetime) -> float:
    """Day by day with plain datetimes: independent of the year tables (gap-free calendars only)."""
    total = 0.0
    day = start.astimezone(calendar.zone).date() - timedelta(days=1)
    while day <= end.astimezone(calendar.zone).date():
        for period in calendar.periods_on(day):
            opens = datetime.combine(day, time()) + timedelta(seconds=period.start)
            closes = datetime.combine(day, time()) + timedelta(seconds=period.end)
            lo = max(opens.replace(tzinfo=calendar.zone).timestamp(), start.timestamp())
            hi = min(closes.replace(tzinfo=calendar.zone).timestamp(), end.timestamp())
            total += max(0.0, hi - lo)
        day += timedelta(days=1)
    return total


@pytest.mark.parametrize("calendar", [CN, OFFICE, US, EU, NY_NIGHT, BER_NIGHT, SH_24, NIGHT_SHIFT],
                         ids=lambda c: c.name)
def test_add_and_between_are_inverse_and_match_a_day_by_day_reference(calendar):
    rng = random.Random(f"calendar-{calendar.name}")
    base = datetime(2025, 12, 1, tzinfo=UTC).timestamp()
    span = datetime(2027, 3, 1, tzinfo=UTC).timestamp() - base
    for _ in range(300):
        a = datetime.fromtimestamp(base + rng.random() * span, UTC).replace(microsecond=0)
        b = a + timedelta(seconds=rng.randrange(0, 40 * 86400))
        elapsed = calendar.between(a, b)
        assert elapsed == pytest.approx(_reference_between(calendar, a, b), abs=1e-6)
        due = calendar.add(a, elapsed)
        # Going forward by the business time between a and b lands on b, or, when b is closed,
        # on the last closing before it (nothing is open between the two).
        assert due <= b
        assert calendar.between(due, b) == pytest.approx(0, abs=1e-6)
        if elapsed and calendar.is_open(b):
            assert due == b
        seconds = rng.choice([1, 59, 3600, 8 * 3600, 5 * 86400]) * rng.random()
        due = calendar.add(a, seconds)
        assert calendar.between(a, due) == pytest.approx(seconds, abs=2e-6)
        assert calendar.is_open(due - timedelta(microseconds=2))
        mid = a + (b - a) / 2
        assert calendar.between(a, b) == pytest.approx(calendar.between(a, mid) + calendar.between(mid, b), abs=1e-6)


def test_epoch_methods_agree_with_the_datetime_ones():
    start = sh(2026, 2, 13, 17, 0)
    assert CN.add_epoch(start.timestamp(), 3 * H) == CN.add(start, 3 * H).timestamp()
    assert CN.between_epoch(start.timestamp(), sh(2026, 2, 25).timestamp()) == 16 * H
    assert CN.is_open_epoch(sh(2026, 2, 14, 9, 0).timestamp())
    assert CN.next_open_epoch(start.replace(hour=19).timestamp()) == sh(2026, 2, 14, 9, 0).timestamp()


def test_always_adds_exactly_and_is_built_in():
    start = datetime(2026, 3, 8, 1, 59, 59, 999999, tzinfo=NY)
    # Real seconds, not wall clock: one microsecond after 01:59:59.999999 EST is 03:00 EDT.
    assert ALWAYS.add(start, 0.000001) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    assert ALWAYS.add(start, 12345.678901) == start.astimezone(UTC) + timedelta(seconds=12345.678901)
    assert ALWAYS.name == "always" and ALWAYS.zone == ZoneInfo("UTC")
    assert load_calendars(None) == {"always": ALWAYS}
    assert CALENDARS["always"] is ALWAYS


def test_china_2026_file_is_the_state_council_arrangement():
    holidays = {
        "元旦": ("2026-01-01", 3), "春节": ("2026-02-15", 9), "清明节": ("2026-04-04", 3),
        "劳动节": ("2026-05-01", 5), "端午节": ("2026-06-19", 3), "中秋节": ("2026-09-25", 3),
        "国庆节": ("2026-10-01", 7),
    }
    expected = {date.fromisoformat(first) + timedelta(days=k)
                for first, days in holidays.values() for k in range(days)}
    workdays = {date(2026, 1, 4), date(2026, 2, 14), date(2026, 2, 28), date(2026, 5, 9),
                date(2026, 9, 20), date(2026, 10, 10)}
    assert OFFICE.holidays == expected and len(expected) == 33
    assert OFFICE.workdays == workdays
    assert all(day.weekday() >= 5 for day in workdays)
    assert OFFICE.holiday_years == frozenset({2026})
    assert US.holidays == frozenset() and US.holiday_years == frozenset()


def test_workday_hours_can_name_a_day_or_give_periods():
    hours = {"mon": ["08:00-12:00"], "tue-fri": ["09:00-17:00"]}
    by_day = make_calendar("d", "Asia/Shanghai", hours, workdays=["2026-03-07"], workday_hours="friday")
    by_periods = make_calendar("p", "Asia/Shanghai", hours, workdays=["2026-03-07"], workday_hours="10:00-11:00")
    default = make_calendar("m", "Asia/Shanghai", hours, workdays=["2026-03-07"])
    day = date(2026, 3, 7)
    assert by_day.periods_on(day) == (Period(9 * H, 17 * H),)
    assert by_periods.periods_on(day) == (Period(10 * H, 11 * H),)
    assert default.periods_on(day) == (Period(8 * H, 12 * H),)


def test_touching_periods_merge_and_days_accept_lists_and_ranges():
    cal = make_calendar("t", "UTC", {"mon,wed": ["09:00-12:00", "12:00-13:00"], "fri-sun": "10:00-11:00"})
    assert cal.weekly[0] == cal.weekly[2] == (Period(9 * H, 13 * H),)
    assert cal.weekly[1] == cal.weekly[3] == ()
    assert cal.weekly[4] == cal.weekly[5] == cal.weekly[6] == (Period(10 * H, 11 * H),)
    assert cal.weekly_seconds == 2 * 4 * H + 3 * H


def test_years_of_holidays_end_in_a_clear_error_not_a_loop():
    three = make_calendar("h3", "UTC", {"mon-fri": ["09:00-17:00"]}, holidays=["2026-01-01..2028-12-31"])
    assert three.add(datetime(2026, 1, 5, tzinfo=UTC), H) == datetime(2029, 1, 1, 10, 0, tzinfo=UTC)
    four = make_calendar("h4", "UTC", {"mon-fri": ["09:00-17:00"]}, holidays=["2026-01-01..2029-12-31"])
    with pytest.raises(CalendarError, match="'h4' has no open time in the 3 years after 2026-01-05"):
        four.add(datetime(2026, 1, 5, tzinfo=UTC), H)
    with pytest.raises(CalendarError, match="no open time in the 3 years"):
        four.next_open(datetime(2026, 1, 5, tzinfo=UTC))
    assert four.between(datetime(2026, 1, 5, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)) == 0


def test_naive_datetimes_and_negative_targets_are_refused():
    with pytest.raises(ValueError, match="aware datetime"):
        CN.add(datetime(2026, 3, 2, 9, 0), H)
    with pytest.raises(ValueError, match="aware datetime"):
        ALWAYS.between(datetime(2026, 3, 2), datetime(2026, 3, 3, tzinfo=UTC))
    with pytest.raises(ValueError, match="must not be negative"):
        CN.add(sh(2026, 3, 2, 9, 0), -1)
