"""Calendar files: what loads, and errors that name the file, the calendar and the field."""
from datetime import date

import pytest

from shared.business_calendar import CalendarError, load_calendars, parse_calendars

YEAR_FILE = """\
year: 2026
source: test
holidays: [2026-02-16..2026-02-18]
workdays: [2026-02-14]
"""


def _write(tmp_path, calendar_yaml: str, year_yaml: str = YEAR_FILE):
    (tmp_path / "years").mkdir(exist_ok=True)
    (tmp_path / "years" / "x-2026.yaml").write_text(year_yaml, encoding="utf-8")
    path = tmp_path / "calendars.yaml"
    path.write_text(calendar_yaml, encoding="utf-8")
    return path


def test_a_file_with_year_files_and_extra_dates_loads(tmp_path):
    path = _write(tmp_path, """\
calendars:
  team:
    zone: Asia/Shanghai
    hours: {mon-fri: ["09:00-18:00"]}
    years: [years/x-2026.yaml]
    holidays: [2026-06-01]
    workdays: ["2026-06-06"]
  other:
    zone: Europe/Berlin
    hours: {daily: "08:00-16:00"}
    years: [years/x-2026.yaml]
""")
    calendars = load_calendars(path)
    assert set(calendars) == {"always", "team", "other"}
    team = calendars["team"]
    assert team.holidays == {date(2026, 2, 16), date(2026, 2, 17), date(2026, 2, 18), date(2026, 6, 1)}
    assert team.workdays == {date(2026, 2, 14), date(2026, 6, 6)}
    assert calendars["other"].holiday_years == {2026}


def test_the_shipped_calendars_load():
    calendars = load_calendars("deploy/config/calendars.yaml")
    assert {"always", "cn-support", "us-east"} <= set(calendars)


CAL = "calendars:\n  team:\n    zone: Asia/Shanghai\n"
ERRORS = [
    ("bad time", CAL + '    hours: {mon-fri: ["09:00-25:00"]}\n',
     "calendar 'team': hours.mon-fri[0]: '09:00-25:00': 25:00 is not a time of day"),
    ("not a period", CAL + '    hours: {mon-fri: ["9-17"]}\n',
     "hours.mon-fri[0]: '9-17' is not a period like '09:00-18:00'"),
    ("24:00 only ends periods", CAL + '    hours: {mon: ["24:00-24:00"]}\n', "24:00 is not a time of day"),
    ("crossing midnight", CAL + '    hours: {fri: ["22:00-02:00"]}\n',
     "hours.fri[0]: '22:00-02:00' crosses midnight; write it as two periods, '22:00-24:00' and '00:00-02:00'"),
    ("overlap", CAL + '    hours: {mon-fri: ["09:00-12:00", "11:30-18:00"]}\n',
     "hours.mon-fri: periods 09:00-12:00 and 11:30-18:00 overlap"),
    ("day twice", CAL + '    hours: {mon-fri: ["09:00-18:00"], fri: ["09:00-12:00"]}\n',
     "hours: friday is given twice ('mon-fri' and 'fri')"),
    ("not a day", CAL + '    hours: {mon-fry: ["09:00-18:00"]}\n', "hours.mon-fry: 'fry' is not a day"),
    ("no open hours", CAL + "    hours: {mon-fri: [], sat: []}\n", "hours: no open time in the week"),
    ("workday hours of a closed day", CAL + '    hours: {mon-fri: ["09:00-18:00"]}\n    workday_hours: sunday\n',
     "workday_hours: adjusted working days would have no open time"),
    ("unknown key", CAL + '    hours: {mon-fri: ["09:00-18:00"]}\n    timezone: UTC\n',
     "calendar 'team': timezone: Extra inputs are not permitted"),
    ("bad date", CAL + '    hours: {mon-fri: ["09:00-18:00"]}\n    holidays: ["2026-02-30"]\n',
     "holidays[0]: '2026-02-30' is not a date"),
    ("bad unquoted date", CAL + '    hours: {mon-fri: ["09:00-18:00"]}\n    holidays: [2026-02-30]\n',
     "is not valid YAML: day is out of range for month"),
    ("holiday and workday", CAL + '    hours: {mon-fri: ["09:00-18:00"]}\n    holidays: [2026-03-07]\n'
     '    workdays: [2026-03-07]\n',
     "2026-03-07 is both a holiday (holidays[0]) and a workday (workdays[0])"),
    ("holiday here, workday in the year file", CAL + '    hours: {mon-fri: ["09:00-18:00"]}\n'
     "    years: [years/x-2026.yaml]\n    holidays: [2026-02-14]\n",
     "2026-02-14 is both a holiday (holidays[0]) and a workday (x-2026.yaml workdays[0])"),
    ("missing year file", CAL + '    hours: {mon-fri: ["09:00-18:00"]}\n    years: [years/x-2027.yaml]\n',
     "calendar 'team': cannot read calendar year file .*x-2027.yaml"),
    ("reserved name", 'calendars:\n  always: {zone: UTC, hours: {daily: "00:00-24:00"}}\n', "'always' is built in"),
    ("bad name", 'calendars:\n  "team one": {zone: UTC, hours: {daily: "00:00-24:00"}}\n',
     "calendar 'team one': names use letters"),
    ("not calendars", "policies: []\n", "unknown key 'policies'"),
]


@pytest.mark.parametrize("text, message", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_name_the_file_calendar_and_field(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(CalendarError) as caught:
        load_calendars(path)
    text = str(caught.value)
    assert text.startswith(f"calendars {path}")
    # ".*" separates pieces that must appear in order (a path in between varies).
    position = 0
    for piece in message.split(".*"):
        position = text.index(piece, position) + len(piece)


def test_unknown_zone(tmp_path):
    path = _write(tmp_path, CAL.replace("Asia/Shanghai", "Asia/Shangai") + '    hours: {mon: ["09:00-18:00"]}\n')
    with pytest.raises(CalendarError, match=r"calendar 'team': zone: unknown time zone 'Asia/Shangai'"):
        load_calendars(path)


YEAR_ERRORS = [
    ("date outside the year", "year: 2026\nsource: t\nholidays: [2025-12-31]\n",
     "x-2026.yaml: holidays[0]: 2025-12-31 is not in the file's year 2026"),
    ("range outside the year", "year: 2026\nsource: t\nholidays: [2026-12-30..2027-01-01]\n",
     "holidays[0]: 2027-01-01 is not in the file's year 2026"),
    ("backwards range", "year: 2026\nsource: t\nholidays: [2026-02-18..2026-02-16]\n", "ends before it starts"),
    ("no source", "year: 2026\nholidays: []\n", "x-2026.yaml: source: Field required"),
    ("both in one file", "year: 2026\nsource: t\nholidays: [2026-02-14]\nworkdays: [2026-02-14]\n",
     "2026-02-14 is both a holiday (x-2026.yaml holidays[0]) and a workday (x-2026.yaml workdays[0])"),
    ("not a mapping", "- 2026-01-01\n", "expected a mapping with year, source"),
]


@pytest.mark.parametrize("year_text, message", [e[1:] for e in YEAR_ERRORS], ids=[e[0] for e in YEAR_ERRORS])
def test_year_file_errors_name_both_files(tmp_path, year_text, message):
    path = _write(tmp_path, CAL + '    hours: {mon-fri: ["09:00-18:00"]}\n    years: [years/x-2026.yaml]\n', year_text)
    with pytest.raises(CalendarError) as caught:
        load_calendars(path)
    assert str(caught.value).startswith(f"calendars {path}: calendar 'team': ")
    assert message in str(caught.value)


def test_relative_year_files_need_a_folder():
    data = {"calendars": {"team": {"zone": "UTC", "hours": {"mon": "09:00-10:00"}, "years": ["x-2026.yaml"]}}}
    with pytest.raises(CalendarError, match="years\\[0\\]: relative path 'x-2026.yaml' needs the calendar file's folder"):
        parse_calendars(data, origin="calendars test")


def test_an_empty_or_missing_file_is_refused(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(CalendarError, match="expected a mapping with a 'calendars' mapping"):
        load_calendars(empty)
    with pytest.raises(CalendarError, match="cannot read calendars"):
        load_calendars(tmp_path / "missing.yaml")
