"""Cron expressions as croniter reads them, and the times Temporal fires them.

Pure: no Temporal client, no I/O. ``apothic.Cron`` validates with :func:`cron_problems`;
deploy turns the expression into Temporal's dialect with :func:`temporal_cron`; ``apothic
schedules list`` shows :func:`next_cron_times`.

The two dialects differ, which is why an expression is never handed to Temporal as written
(each point below was measured against the dev server, Temporal 1.32):

- A sixth field is seconds to croniter and a year to Temporal: only five fields (or
  ``@hourly``, ``@daily``, ``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``, ``@annually``)
  are accepted.
- Day-of-month and day-of-week both restricted: croniter runs on either (OR), Temporal only
  when both match (AND). Such an expression becomes two Temporal cron strings, one per side;
  a Temporal spec fires on the union of its cron strings.
- Temporal refuses wrapping ranges (``FRI-MON``) and ``L``, reads ``#`` as the start of a
  comment (``1#2`` is every Monday), and has no ``W`` or hashed ``H``. Every field is
  therefore written out from croniter's own expansion (``mon-fri`` → ``1-5``, ``*/20`` →
  ``0,20,40``, ``7`` → ``0``), and ``L``, ``W``, ``#`` and ``H`` are refused.
- Daylight saving time: croniter runs a wall time that spring-forward skips at the first
  minute after the gap and runs a repeated wall time twice; Temporal skips a missing time,
  and in a repeated hour its result depends on the zone (New York: both copies; London: the
  first copy follows the previous hour's fields). :func:`next_cron_times` therefore steps
  through croniter's expanded fields the way Temporal's scheduler does (its calendar
  ``next`` and Go's ``time.Date``), so that the times shown are the times that run. Away
  from a transition this equals ``croniter.get_next``.
"""

from __future__ import annotations

import calendar
import dataclasses
import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

# Temporal's calendar gives up after this year.
MAX_YEAR = 2100
MACROS = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_REFUSED = re.compile(r"[LW#H]", re.IGNORECASE)
_NAMES = re.compile(r"jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|sun|mon|tue|wed|thu|fri|sat", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Calendar:
    """One Temporal cron string as sets of allowed values (None: any value)."""

    minute: frozenset[int]
    hour: frozenset[int] | None
    day: frozenset[int] | None
    month: frozenset[int] | None
    weekday: frozenset[int] | None  # 0 = Sunday

    def expression(self) -> str:
        parts = [self.minute, self.hour, self.day, self.month, self.weekday]
        return " ".join(_render(values, lo, hi) for values, (lo, hi) in zip(parts, _RANGES, strict=True))


def _render(values: frozenset[int] | None, lo: int, hi: int) -> str:
    """``*`` or a comma list of values and ranges (``0,20,40``, ``1-5``)."""
    if values is None or set(values) >= set(range(lo, hi + 1)):
        return "*"
    ordered = sorted(values)
    parts: list[str] = []
    start = prev = ordered[0]
    for v in ordered[1:] + [None]:  # type: ignore[list-item]
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(str(start) if start == prev else f"{start},{prev}" if prev == start + 1 else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ",".join(parts)


def cron_problems(expression: object) -> list[str]:
    """What is wrong with ``expression`` for Apothic (empty when it is usable), with the fix."""
    if not isinstance(expression, str) or not expression.strip():
        return [f"{expression!r} is not a cron expression; give five fields, e.g. '0 * * * *' (every hour)"]
    expr = expression.strip()
    fields = expr.split()
    if expr.startswith("@"):
        if expr.lower() not in MACROS:
            return [(f"{expr!r} is not supported; use five fields, one of {', '.join(MACROS)}, or "
                     "apothic.Period(...) for a fixed interval")]
    elif len(fields) != 5:
        extra = (" (a sixth field is seconds to croniter but a year to Temporal, so it is refused)"
                 if len(fields) > 5 else "")
        return [(f"{expr!r} has {len(fields)} fields; give exactly five: minute hour day-of-month month "
                 f"day-of-week{extra}")]
    else:
        bad = [f for f in fields if _REFUSED.search(_NAMES.sub("", f))]
        if bad:
            return [(f"{expr!r} uses {', '.join(repr(b) for b in bad)}: L, W, # and H are not supported "
                     "(Temporal has no last-day, nearest-weekday, nth-weekday or hashed fields); list the days "
                     "instead")]
    try:
        parsed = croniter(expr)
    except (CroniterError, ValueError, KeyError) as e:
        return [f"{expr!r} is not a valid cron expression: {e}"]
    if parsed.nth_weekday_of_month or getattr(parsed, "nearest_weekday", None) or any(
        "l" in field for field in parsed.expanded
    ):
        return [f"{expr!r} uses L, W or #, which Temporal does not support; list the days instead"]
    return []


def timezone_problems(name: object) -> list[str]:
    if not isinstance(name, str) or not name:
        return [f"{name!r} is not a time zone name; give an IANA name such as 'UTC' or 'Europe/London'"]
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return [f"unknown time zone {name!r}; give an IANA name such as 'UTC', 'America/New_York' or 'Europe/London'"]
    return []


def calendars(expression: str) -> list[Calendar]:
    """The Temporal calendars that fire exactly when croniter says ``expression`` runs.

    Raises:
        ValueError: the expression is not usable (see :func:`cron_problems`).
    """
    problems = cron_problems(expression)
    if problems:
        raise ValueError(problems[0])
    expanded = croniter(expression.strip()).expanded

    def values(i: int) -> frozenset[int] | None:
        field = expanded[i]
        return None if field[0] == "*" else frozenset(int(v) for v in field)

    minute = values(0)
    base = Calendar(
        minute=minute if minute is not None else frozenset(range(60)),
        hour=values(1),
        day=values(2),
        month=values(3),
        weekday=values(4),
    )
    if base.day is not None and base.weekday is not None:
        # croniter: day-of-month OR day-of-week; Temporal: AND. One calendar per side.
        return [dataclasses.replace(base, weekday=None), dataclasses.replace(base, day=None)]
    return [base]


def temporal_cron(expression: str) -> list[str]:
    """``expression`` (croniter's dialect) as Temporal cron strings, fired as their union."""
    return [c.expression() for c in calendars(expression)]


# --- next times, stepped the way Temporal's scheduler steps ---------------------------------


def _offset(tz: ZoneInfo, ts: float) -> int:
    off = datetime.fromtimestamp(ts, tz).utcoffset()
    return int(off.total_seconds()) if off is not None else 0


def _go_date(tz: ZoneInfo, y: int, mo: int, d: int, h: int, m: int, s: int) -> int:
    """Unix seconds of a wall time as Go's ``time.Date`` picks it (what Temporal uses).

    Out-of-range parts carry over. A wall time in a gap or in a repeated hour has no single
    answer; Go takes the offset in force at ``wall - offset(wall read as UTC)``, which this
    reproduces: the first copy of a repeated hour west of Greenwich, the second east of it.
    """
    local = datetime(y, mo, 1, tzinfo=timezone.utc) + timedelta(days=d - 1, hours=h, minutes=m, seconds=s)
    wall = int(local.timestamp())
    return wall - _offset(tz, wall - _offset(tz, wall))


def _local(tz: ZoneInfo, ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz)


def _weekday(tz: ZoneInfo, y: int, mo: int, d: int, h: int, m: int, s: int) -> int:
    """Day of week (0 = Sunday) of a wall time, read as Go's ``time.Date`` reads it."""
    return (_local(tz, _go_date(tz, y, mo, d, h, m, s)).weekday() + 1) % 7


def _days_in_month(y: int, mo: int) -> int:
    return calendar.monthrange(y, mo)[1] if mo <= 12 else 31  # month 13 carries into the next year


def _next_in_calendar(cal: Calendar, tz: ZoneInfo, after: int) -> int | None:
    """The first time after ``after`` (unix seconds) that ``cal`` fires, by Temporal's rules.

    Temporal's calendar steps through wall-clock fields from the outside in. Two DST rules
    come with it: a matched wall time that does not exist (spring-forward) is skipped; and
    when leaving an hour by its last minute lands two hours later in real time (the next
    hour is a repeated one, as Go resolves it), the hour is stepped through again one hour
    later, so times in the repeated hour run once per copy.
    """

    def ok(values: frozenset[int] | None, v: int) -> bool:
        return values is None or v in values

    now = _local(tz, after)
    y, mo, d, h, m, s = now.year, now.month, now.day, now.hour, now.minute, now.second
    # Starting inside the second copy of a repeated hour.
    dst = 3600 if _local(tz, after - 3600).hour == h else 0
    s += 1
    while True:
        if s >= 60:
            m, s = m + 1, 0
        if m >= 60:
            prev = _go_date(tz, y, mo, d, h, 0, 0)
            h, m = h + 1, 0
            if dst == 0 and _go_date(tz, y, mo, d, h, 0, 0) - prev > 3600:
                h, dst = h - 1, 3600
            else:
                dst = 0
        if h >= 24:
            d, h = d + 1, 0
        if d > _days_in_month(y, mo):
            mo, d = mo + 1, 1
        if mo > 12:
            y, mo = y + 1, 1
        if y > MAX_YEAR:
            return None
        # From the outside in: a field that does not match moves on and the scan starts over
        # at the top (where values that ran out carry into the next larger field).
        if not ok(cal.month, mo):
            mo, d, h, m, s, dst = mo + 1, 1, 0, 0, 0, 0
            continue
        if not ok(cal.day, d) or (cal.weekday is not None and _weekday(tz, y, mo, d, h, m, s) not in cal.weekday):
            d, h, m, s, dst = d + 1, 0, 0, 0, 0
            continue
        if not ok(cal.hour, h):
            h, m, s, dst = h + 1, 0, 0, 0
            continue
        if m not in cal.minute:
            m, s = m + 1, 0
            continue
        if s != 0:  # five-field expressions fire at second 0
            s = 60
            continue
        ts = _go_date(tz, y, mo, d, h, m, s)
        if _local(tz, ts).hour != h:  # skipped by spring-forward
            h, m, s = h + 1, 0, 0
            continue
        return ts + dst


def next_cron_times(expression: str, tz_name: str, after: datetime, count: int = 10) -> list[datetime]:
    """The next ``count`` times (UTC) the schedule ``expression`` in ``tz_name`` fires after ``after``."""
    tz = ZoneInfo(tz_name)
    cals = calendars(expression)
    times: list[datetime] = []
    ts = int(after.timestamp())
    for _ in range(count):
        found = [t for t in (_next_in_calendar(c, tz, ts) for c in cals) if t is not None]
        if not found:
            break
        ts = min(found)
        times.append(datetime.fromtimestamp(ts, timezone.utc))
    return times


def next_period_times(every_s: int, after: datetime, count: int = 10) -> list[datetime]:
    """The next ``count`` times (UTC) a ``Period`` of ``every_s`` fires after ``after``.

    Temporal aligns intervals to the Unix epoch: ``Period(hours=1)`` runs on the hour (UTC),
    ``Period(days=1)`` at 00:00 UTC, whatever the time of deploy.
    """
    ts = int(after.timestamp())
    first = (ts // every_s + 1) * every_s
    return [datetime.fromtimestamp(first + i * every_s, timezone.utc) for i in range(count)]
