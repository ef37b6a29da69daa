"""Business calendars: when a team is open, and business-time arithmetic for SLA clocks.

A calendar has weekly opening periods in a time zone (several a day: lunch breaks, split
shifts), holidays, and adjusted working days (China's 调休: a Saturday or Sunday that is a
working day). Holidays and adjusted days come from one small file per year, so a new State
Council notice is one new file.

File format (``deploy/config/calendars.yaml``)::

    calendars:
      cn-support:
        zone: Asia/Shanghai
        hours: {mon-fri: ["09:00-12:00", "13:30-18:00"], sat: ["10:00-16:00"]}
        years: [calendars/cn-2026.yaml]   # relative to this file
        holidays: [2026-06-01]            # extra, company-specific (also "2026-06-01..2026-06-03")
        workdays: []                      # extra adjusted working days
        workday_hours: monday             # the hours of an adjusted working day: a day name or periods
      us-east: {zone: America/New_York, hours: {mon-fri: ["08:00-20:00"]}}

A year file (``deploy/config/calendars/cn-2026.yaml``)::

    year: 2026
    source: <where the dates come from>
    holidays: [2026-01-01..2026-01-03, ...]
    workdays: [2026-01-04, ...]

Periods are local wall-clock times ``HH:MM-HH:MM``; ``24:00`` may end a period, and a period
never crosses midnight (write ``22:00-24:00`` and ``00:00-06:00`` on the next day). A day's
periods are real instants in the zone, so a period spanning a DST change is an hour shorter or
longer. A local time the clock skips (spring forward) is taken as the instant of the jump; a
repeated local time (fall back) as its first occurrence.

The arithmetic works in epoch seconds. Per local year the calendar builds, once, a sorted table
of its open intervals with running business-second totals, so ``add`` and ``between`` are two
binary searches plus one step per year crossed, whatever the span. The ``*_epoch`` methods skip
the datetime conversions for callers computing many clocks.
"""
from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.config_files import ConfigFileError, read_yaml

__all__ = [
    "ALWAYS", "BusinessCalendar", "CalendarError", "Period", "load_calendars", "make_calendar",
    "parse_calendars", "parse_year_file",
]

DAY = 86400
# add()/next_open() give up after this many local years without one open second, instead of
# looping for ever over a calendar whose holidays cover everything.
MAX_CLOSED_YEARS = 3
# Year tables kept per calendar: clocks cluster around "now", so a few years is plenty.
_TABLE_CACHE_YEARS = 16

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_PERIOD = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_DATE_RANGE = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})\s*\.\.\s*(\d{4}-\d{2}-\d{2})\s*$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_UTC = timezone.utc


class CalendarError(ConfigFileError):
    """A calendar cannot be used; the message names the file, the calendar and the field."""


class _FieldError(Exception):
    """A problem in one field, before the file and calendar are known (parse_calendars adds them)."""

    def __init__(self, where: str, message: str):
        super().__init__(message)
        self.where = where
        self.message = message


class Period(NamedTuple):
    """An opening period of one day: local seconds after midnight, end exclusive (86400 = 24:00)."""

    start: int
    end: int

    def __str__(self) -> str:
        return f"{_clock(self.start)}-{_clock(self.end)}"


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


# --------------------------------------------------------------------------- parsing pieces

def _parse_period(text: Any, where: str) -> Period:
    if not isinstance(text, str):
        raise _FieldError(where, f"expected a period like '09:00-18:00', got {text!r}")
    match = _PERIOD.match(text)
    if not match:
        raise _FieldError(where, f"{text!r} is not a period like '09:00-18:00'")
    sh, sm, eh, em = (int(g) for g in match.groups())
    if sh > 23 or sm > 59:
        raise _FieldError(where, f"{text!r}: {sh:02d}:{sm:02d} is not a time of day")
    if eh > 24 or em > 59 or (eh == 24 and em):
        raise _FieldError(where, f"{text!r}: {eh:02d}:{em:02d} is not a time of day (24:00 may end a period)")
    start, end = sh * 3600 + sm * 60, eh * 3600 + em * 60
    if end == start:
        raise _FieldError(where, f"{text!r} is empty")
    if end < start:
        raise _FieldError(where, f"{text!r} crosses midnight; write it as two periods, "
                                 f"'{_clock(start)}-24:00' and '00:00-{_clock(end)}' on the next day")
    return Period(start, end)


def _parse_periods(value: Any, where: str) -> tuple[Period, ...]:
    if isinstance(value, str):
        value = [value]
    if value is None:
        value = []
    if not isinstance(value, (list, tuple)):
        raise _FieldError(where, f"expected a list of periods like ['09:00-18:00'], got {value!r}")
    periods = sorted(_parse_period(item, f"{where}[{i}]") for i, item in enumerate(value))
    for before, after in zip(periods, periods[1:]):
        if after.start < before.end:
            raise _FieldError(where, f"periods {before} and {after} overlap")
    # Touching periods ("09:00-12:00", "12:00-13:00") are one period.
    merged: list[Period] = []
    for period in periods:
        if merged and merged[-1].end == period.start:
            merged[-1] = Period(merged[-1].start, period.end)
        else:
            merged.append(period)
    return tuple(merged)


def _day_index(name: str, where: str) -> int:
    key = name.strip().lower()
    if key in _DAY_NAMES:
        return _DAY_NAMES.index(key)
    if key in _FULL_DAY_NAMES:
        return _FULL_DAY_NAMES.index(key)
    raise _FieldError(where, f"{name!r} is not a day (mon, tue, ..., sun)")


def _parse_days(spec: Any, where: str) -> list[int]:
    """``mon-fri``, ``sat``, ``mon,wed,fri``, ``daily`` → weekday numbers (Monday 0)."""
    if not isinstance(spec, str):
        raise _FieldError(where, f"expected days like 'mon-fri', got {spec!r}")
    if spec.strip().lower() in ("daily", "every day", "all"):
        return list(range(7))
    days: list[int] = []
    for part in spec.split(","):
        if "-" in part:
            first, _, last = part.partition("-")
            a, b = _day_index(first, where), _day_index(last, where)
            days.extend((a + k) % 7 for k in range((b - a) % 7 + 1))
        else:
            days.append(_day_index(part, where))
    return days


def _parse_weekly(hours: Any, where: str) -> tuple[tuple[Period, ...], ...]:
    if not isinstance(hours, Mapping) or not hours:
        raise _FieldError(where, "expected days with periods, e.g. {mon-fri: ['09:00-18:00']}")
    weekly: list[tuple[Period, ...] | None] = [None] * 7
    given_by: dict[int, str] = {}
    for spec, periods in hours.items():
        key_where = f"{where}.{spec}"
        parsed = _parse_periods(periods, key_where)
        for day in _parse_days(spec, key_where):
            if day in given_by:
                raise _FieldError(where, f"{_FULL_DAY_NAMES[day]} is given twice ({given_by[day]!r} and {spec!r})")
            given_by[day] = str(spec)
            weekly[day] = parsed
    return tuple(day or () for day in weekly)


def _parse_date(value: Any, where: str) -> list[date]:
    """A date, or an inclusive range ``2026-02-15..2026-02-23``."""
    if isinstance(value, datetime):
        raise _FieldError(where, f"expected a date, got the date and time {value}")
    if isinstance(value, date):
        return [value]
    if isinstance(value, str):
        match = _DATE_RANGE.match(value)
        try:
            if not match:
                return [date.fromisoformat(value.strip())]
            first, last = date.fromisoformat(match.group(1)), date.fromisoformat(match.group(2))
        except ValueError:
            raise _FieldError(where, f"{value!r} is not a date (YYYY-MM-DD) or range (YYYY-MM-DD..YYYY-MM-DD)") from None
        if last < first:
            raise _FieldError(where, f"range {value!r} ends before it starts")
        return [first + timedelta(days=k) for k in range((last - first).days + 1)]
    raise _FieldError(where, f"expected a date (YYYY-MM-DD), got {value!r}")


def _parse_dates(values: Any, where: str) -> dict[date, str]:
    """Dates → the field each came from (for conflict messages)."""
    if values is None:
        return {}
    if not isinstance(values, (list, tuple)):
        raise _FieldError(where, f"expected a list of dates, got {values!r}")
    found: dict[date, str] = {}
    for i, value in enumerate(values):
        for day in _parse_date(value, f"{where}[{i}]"):
            found.setdefault(day, f"{where}[{i}]")
    return found


def _zone(name: Any, where: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise _FieldError(where, f"expected an IANA time zone like 'Asia/Shanghai', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _FieldError(where, f"unknown time zone {name!r} (use an IANA name like 'Asia/Shanghai')") from None


# --------------------------------------------------------------------------- local time → instants

def _local_epoch(zone: ZoneInfo, day: date, seconds: int) -> float:
    """The instant of local ``day`` + ``seconds`` (86400 = next midnight), monotone in local time.

    A skipped local time maps to the instant the clock jumps; a repeated one to its first
    occurrence. Both keep a day's periods in order and never overlapping in real time.
    """
    if seconds >= DAY:
        day, seconds = day + timedelta(days=seconds // DAY), seconds % DAY
    local = datetime.combine(day, time(seconds // 3600, seconds % 3600 // 60, seconds % 60), tzinfo=zone)
    before, after = local.utcoffset(), local.replace(fold=1).utcoffset()
    if before is None or after is None or before >= after:
        return local.timestamp()  # unambiguous, or repeated: fold=0 is the first occurrence
    # In a gap: fold=1 gives an instant before the jump, fold=0 one after; find the jump.
    lo, hi = int(local.replace(fold=1).timestamp()), int(local.timestamp()) + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return float(hi)


@dataclass(frozen=True)
class _YearTable:
    """The open intervals of one local year, with running business seconds."""

    year: int
    lo: float                 # the year's first instant (local Jan 1 00:00)
    hi: float                 # the next year's first instant
    starts: list[float]
    ends: list[float]
    cum_start: list[float]    # business seconds from lo to starts[i]
    cum_end: list[float]      # business seconds from lo to ends[i]

    @property
    def total(self) -> float:
        return self.cum_end[-1] if self.cum_end else 0.0

    def position(self, t: float) -> float:
        """Business seconds from the year's start to ``t`` (lo <= t < hi)."""
        i = bisect_right(self.starts, t) - 1
        if i < 0:
            return 0.0
        return self.cum_start[i] + (min(t, self.ends[i]) - self.starts[i])

    def instant(self, target: float) -> float:
        """The first instant at which ``target`` (0 < target <= total) business seconds have passed."""
        j = bisect_left(self.cum_end, target)
        return self.starts[j] + (target - self.cum_start[j])


class _Caches:
    """Mutable per-calendar caches kept off the frozen dataclass's identity."""

    __slots__ = ("tables", "last")

    def __init__(self) -> None:
        self.tables: dict[int, _YearTable] = {}
        self.last: _YearTable | None = None


# --------------------------------------------------------------------------- the calendar

@dataclass(frozen=True)
class BusinessCalendar:
    """Opening hours in a zone, minus holidays, plus adjusted working days.

    ``weekly[d]`` are the periods of weekday ``d`` (Monday 0). A date in ``workdays`` is open
    with ``workday_hours`` (by default Monday's) whatever its weekday; a date in ``holidays``
    is closed. Build one with ``make_calendar`` or ``parse_calendars`` (they validate).
    """

    name: str
    zone: ZoneInfo
    weekly: tuple[tuple[Period, ...], ...]
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()
    workday_hours: tuple[Period, ...] | None = None   # None: Monday's periods
    # Years whose holiday file was imported: a clock running into another year gets weekly
    # hours only, which the SLA engine may want to warn about.
    holiday_years: frozenset[int] = frozenset()
    _caches: _Caches = field(default_factory=_Caches, init=False, repr=False, compare=False, hash=False)
    _always_open: bool = field(default=False, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(self.weekly) != 7:
            raise CalendarError(f"calendar {self.name!r}: weekly needs 7 days (Monday first), got {len(self.weekly)}")
        if not any(self.weekly):
            raise CalendarError(f"calendar {self.name!r}: hours: no open time in the week")
        both = sorted(self.holidays & self.workdays)
        if both:
            raise CalendarError(f"calendar {self.name!r}: {both[0]} is both a holiday and a workday")
        if self.workday_hours is None:
            object.__setattr__(self, "workday_hours", self.weekly[0])
        full_day = (Period(0, DAY),)
        object.__setattr__(self, "_always_open",
                           not self.holidays and all(day == full_day for day in self.weekly))

    # ---- public, datetime in / UTC datetime out

    def is_open(self, at: datetime) -> bool:
        return self.is_open_epoch(_epoch(at))

    def add(self, start: datetime, seconds: float) -> datetime:
        """The instant at which ``seconds`` business seconds have passed since ``start`` (UTC).

        ``seconds == 0`` gives ``start`` itself, even when closed. A target that is used up
        exactly at a closing time is due at that closing time, not at the next opening.
        """
        if self._always_open:
            if seconds < 0:
                raise ValueError(f"business seconds must not be negative, got {seconds}")
            _epoch(start)
            # In UTC: aware arithmetic in a DST zone would add wall-clock time.
            return start.astimezone(_UTC) + timedelta(seconds=seconds)
        return datetime.fromtimestamp(self.add_epoch(_epoch(start), seconds), _UTC)

    def between(self, start: datetime, end: datetime) -> float:
        """Business seconds in [start, end); 0 when end <= start."""
        if self._always_open:
            _epoch(start), _epoch(end)
            return max(0.0, (end.astimezone(_UTC) - start.astimezone(_UTC)).total_seconds())
        return self.between_epoch(_epoch(start), _epoch(end))

    def next_open(self, at: datetime) -> datetime:
        """``at`` itself (in UTC) when open, else the next opening."""
        t = _epoch(at)
        opening = self.next_open_epoch(t)
        return at.astimezone(_UTC) if opening == t else datetime.fromtimestamp(opening, _UTC)

    def periods_on(self, day: date) -> tuple[Period, ...]:
        """The local opening periods of ``day`` (holidays and adjusted working days applied)."""
        if day in self.holidays:
            return ()
        if day in self.workdays:
            return self.workday_hours or ()
        return self.weekly[day.weekday()]

    @property
    def weekly_seconds(self) -> int:
        """Open seconds in an ordinary week (no holidays, no DST change)."""
        return sum(p.end - p.start for day in self.weekly for p in day)

    # ---- public, epoch seconds (for many clocks at once)

    def is_open_epoch(self, t: float) -> bool:
        if self._always_open:
            return True
        table = self._table_at(t)
        i = bisect_right(table.starts, t) - 1
        return i >= 0 and t < table.ends[i]

    def add_epoch(self, t: float, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"business seconds must not be negative, got {seconds}")
        if seconds == 0 or self._always_open:
            return t + seconds
        table = self._table_at(t)
        target = table.position(t) + seconds
        closed_years = 0
        while target > table.total:
            target -= table.total
            closed_years = closed_years + 1 if table.total == 0 else 0
            if closed_years > MAX_CLOSED_YEARS:
                raise self._closed_too_long(t)
            table = self._table(table.year + 1)
        return table.instant(target)

    def between_epoch(self, start: float, end: float) -> float:
        if end <= start:
            return 0.0
        if self._always_open:
            return end - start
        first, last = self._table_at(start), self._table_at(end)
        if first.year == last.year:
            return last.position(end) - first.position(start)
        total = first.total - first.position(start)
        for year in range(first.year + 1, last.year):
            total += self._table(year).total
        return total + last.position(end)

    def next_open_epoch(self, t: float) -> float:
        if self._always_open:
            return t
        table = self._table_at(t)
        i = bisect_right(table.starts, t) - 1
        if i >= 0 and t < table.ends[i]:
            return t
        for _ in range(MAX_CLOSED_YEARS + 1):
            if i + 1 < len(table.starts):
                return table.starts[i + 1]
            table, i = self._table(table.year + 1), -1
        raise self._closed_too_long(t)

    # ---- year tables

    def _closed_too_long(self, t: float) -> CalendarError:
        since = datetime.fromtimestamp(t, self.zone).date()
        return CalendarError(f"calendar {self.name!r} has no open time in the {MAX_CLOSED_YEARS} years after "
                             f"{since}; check its holidays")

    def _table_at(self, t: float) -> _YearTable:
        last = self._caches.last
        if last is not None and last.lo <= t < last.hi:
            return last
        try:
            year = datetime.fromtimestamp(t, self.zone).year
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"calendar {self.name!r}: instant {t} is out of range") from None
        table = self._table(year)
        # fromtimestamp's local year and the table bounds agree except around odd midnights.
        while t < table.lo:
            table = self._table(table.year - 1)
        while t >= table.hi:
            table = self._table(table.year + 1)
        self._caches.last = table
        return table

    def _table(self, year: int) -> _YearTable:
        tables = self._caches.tables
        table = tables.get(year)
        if table is None:
            if not 1 < year < 9999:
                raise ValueError(f"calendar {self.name!r}: business time beyond the year {year} is out of range")
            table = self._build(year)
            if len(tables) >= _TABLE_CACHE_YEARS:
                tables.pop(next(iter(tables)))
            tables[year] = table
        return table

    def _build(self, year: int) -> _YearTable:
        zone = self.zone
        starts: list[float] = []
        ends: list[float] = []
        day = date(year, 1, 1)
        one = timedelta(days=1)
        while day.year == year:
            for period in self.periods_on(day):
                start, end = _local_epoch(zone, day, period.start), _local_epoch(zone, day, period.end)
                if end <= start:
                    continue  # the whole period was skipped by a DST jump
                if ends and ends[-1] == start:
                    ends[-1] = end  # contiguous with the previous period (e.g. across midnight)
                else:
                    starts.append(start)
                    ends.append(end)
            day += one
        cum_start: list[float] = []
        cum_end: list[float] = []
        running = 0.0
        for start, end in zip(starts, ends):
            cum_start.append(running)
            running += end - start
            cum_end.append(running)
        return _YearTable(year=year, lo=_local_epoch(zone, date(year, 1, 1), 0),
                          hi=_local_epoch(zone, date(year + 1, 1, 1), 0),
                          starts=starts, ends=ends, cum_start=cum_start, cum_end=cum_end)


def _epoch(at: datetime) -> float:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"business calendar arithmetic needs an aware datetime, got naive {at.isoformat()}")
    return at.timestamp()


ALWAYS = BusinessCalendar(name="always", zone=ZoneInfo("UTC"), weekly=((Period(0, DAY),),) * 7)


# --------------------------------------------------------------------------- files

class _YearFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    year: int = Field(ge=1900, le=2200)
    source: str = Field(min_length=1)
    holidays: list[Any] = Field(default_factory=list)
    workdays: list[Any] = Field(default_factory=list)
    notes: str | None = None


class _CalendarEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    zone: Any
    hours: Any
    years: list[str] = Field(default_factory=list)
    holidays: list[Any] = Field(default_factory=list)
    workdays: list[Any] = Field(default_factory=list)
    workday_hours: Any = "monday"


def _pydantic_problem(exc: ValidationError) -> _FieldError:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "file"
    return _FieldError(where, err["msg"])


def parse_year_file(data: Any, *, origin: str) -> tuple[int, dict[date, str], dict[date, str]]:
    """(year, holidays, workdays) of one year file; dates map to the field they came from."""
    if not isinstance(data, Mapping):
        raise CalendarError(f"{origin}: expected a mapping with year, source, holidays and workdays")
    try:
        parsed = _YearFile.model_validate(data)
        holidays = _parse_dates(parsed.holidays, "holidays")
        workdays = _parse_dates(parsed.workdays, "workdays")
        for days in (holidays, workdays):
            for day, where in days.items():
                if day.year != parsed.year:
                    raise _FieldError(where, f"{day} is not in the file's year {parsed.year}")
    except ValidationError as exc:
        problem = _pydantic_problem(exc)
        raise CalendarError(f"{origin}: {problem.where}: {problem.message}") from None
    except _FieldError as exc:
        raise CalendarError(f"{origin}: {exc.where}: {exc.message}") from None
    return parsed.year, holidays, workdays


def _build_calendar(name: str, raw: Any, *, base_dir: Path | None,
                    year_files: dict[Path, tuple[int, dict[date, str], dict[date, str]]]) -> BusinessCalendar:
    """One calendar entry → a calendar; _FieldError/CalendarError name the field."""
    if not isinstance(raw, Mapping):
        raise _FieldError("calendar", f"expected a mapping with zone and hours, got {raw!r}")
    try:
        entry = _CalendarEntry.model_validate(raw)
    except ValidationError as exc:
        raise _pydantic_problem(exc) from None
    zone = _zone(entry.zone, "zone")
    weekly = _parse_weekly(entry.hours, "hours")
    if not any(weekly):
        raise _FieldError("hours", "no open time in the week (a calendar must open some time)")
    if isinstance(entry.workday_hours, str) and not _PERIOD.match(entry.workday_hours):
        workday_hours = weekly[_day_index(entry.workday_hours, "workday_hours")]
    else:
        workday_hours = _parse_periods(entry.workday_hours, "workday_hours")
    if not workday_hours:
        raise _FieldError("workday_hours", "adjusted working days would have no open time")

    holidays: dict[date, str] = {}
    workdays: dict[date, str] = {}
    years: set[int] = set()
    for i, relative in enumerate(entry.years):
        path = Path(relative)
        if not path.is_absolute():
            if base_dir is None:
                raise _FieldError(f"years[{i}]", f"relative path {relative!r} needs the calendar file's folder")
            path = base_dir / path
        if path not in year_files:
            data = _read(path, "calendar year file")
            year_files[path] = parse_year_file(data, origin=f"calendar year file {path}")
        year, year_holidays, year_workdays = year_files[path]
        years.add(year)
        for day, where in year_holidays.items():
            holidays.setdefault(day, f"{path.name} {where}")
        for day, where in year_workdays.items():
            workdays.setdefault(day, f"{path.name} {where}")
    for day, where in _parse_dates(entry.holidays, "holidays").items():
        holidays.setdefault(day, where)
    for day, where in _parse_dates(entry.workdays, "workdays").items():
        workdays.setdefault(day, where)
    for day in sorted(holidays.keys() & workdays.keys()):
        raise _FieldError("holidays", f"{day} is both a holiday ({holidays[day]}) and a workday ({workdays[day]})")
    return BusinessCalendar(name=name, zone=zone, weekly=weekly, holidays=frozenset(holidays),
                            workdays=frozenset(workdays), workday_hours=workday_hours,
                            holiday_years=frozenset(years))


def parse_calendars(data: Mapping, *, origin: str, base_dir: Path | None = None) -> dict[str, BusinessCalendar]:
    """The ``calendars:`` mapping of a file (year files relative to ``base_dir``), plus "always"."""
    if not isinstance(data, Mapping) or not isinstance(data.get("calendars", {}), Mapping):
        raise CalendarError(f"{origin}: expected a mapping with a 'calendars' mapping (name: calendar)")
    unknown = sorted(set(data) - {"calendars"})
    if unknown:
        raise CalendarError(f"{origin}: unknown key {unknown[0]!r} (only 'calendars')")
    calendars: dict[str, BusinessCalendar] = {"always": ALWAYS}
    year_files: dict[Path, tuple[int, dict[date, str], dict[date, str]]] = {}
    for name, raw in (data.get("calendars") or {}).items():
        label = f"{origin}: calendar {name!r}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise CalendarError(f"{label}: names use letters, digits, '_', '.', '-' (at most 64)")
        if name == "always":
            raise CalendarError(f"{label}: 'always' is built in (24x7, UTC); choose another name")
        try:
            calendars[name] = _build_calendar(name, raw, base_dir=base_dir, year_files=year_files)
        except _FieldError as exc:
            raise CalendarError(f"{label}: {exc.where}: {exc.message}") from None
        except CalendarError as exc:
            raise CalendarError(f"{label}: {exc}") from None
    return calendars


def _read(path: Path, what: str) -> Any:
    try:
        return read_yaml(path, what, CalendarError)
    except CalendarError:
        raise
    except ValueError as exc:
        # PyYAML raises a bare ValueError for an impossible unquoted date (2026-02-30).
        raise CalendarError(f"{what} {path} is not valid YAML: {exc}") from None


def load_calendars(path: str | Path | None) -> dict[str, BusinessCalendar]:
    """The calendars of a file (always including "always"); ``None``: only "always"."""
    if path is None:
        return {"always": ALWAYS}
    path = Path(path)
    data = _read(path, "calendars")
    return parse_calendars(data, origin=f"calendars {path}", base_dir=path.parent)


def make_calendar(name: str, zone: str, hours: Mapping[str, Any], *, holidays: Iterable[Any] = (),
                  workdays: Iterable[Any] = (), workday_hours: Any = "monday") -> BusinessCalendar:
    """A calendar from the same values a file takes (for code and tests)."""
    raw = {"zone": zone, "hours": dict(hours), "holidays": list(holidays), "workdays": list(workdays),
           "workday_hours": workday_hours}
    return parse_calendars({"calendars": {name: raw}}, origin="make_calendar")[name]
