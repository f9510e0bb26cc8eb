"""Schedules without a server: Cron/Period validation, the croniter → Temporal translation,
and next-run computation across time zones and DST changes.

The DST expectations below are what the Temporal dev server (1.32) reported as
``next_action_times`` for the same schedules (see tests/workflows/test_schedules.py, which
checks the computation against the server itself).
"""

from __future__ import annotations

import inspect
import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from apothic import App, Cron, InvalidError, Period
from apothic._schedule._cron import next_cron_times, next_period_times, temporal_cron
from apothic._schedule._schedules import next_runs, schedule_config

NY = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")


def at(tz: ZoneInfo, text: str) -> datetime:
    """A wall time in ``tz``; ``fold=1`` picks the second copy of a repeated hour."""
    fold = text.endswith("!")
    return datetime.fromisoformat(text.rstrip("!")).replace(tzinfo=tz, fold=int(fold)).astimezone(timezone.utc)


def runs(expr: str, tz: str, after: str, n: int) -> list[datetime]:
    return next_cron_times(expr, tz, datetime.fromisoformat(after).replace(tzinfo=ZoneInfo(tz)), n)


def croniter_runs(expr: str, tz: str, after: datetime, n: int) -> list[datetime]:
    it = croniter(expr, after.astimezone(ZoneInfo(tz)))
    return [it.get_next(datetime).astimezone(timezone.utc) for _ in range(n)]


# --- validation, at construction -------------------------------------------------------------


@pytest.mark.parametrize(
    "expr", ["0 * * * *", "*/15 9-17 * * MON-FRI", "0 0 1 jan,jul *", "@hourly", "@daily", "@weekly", "@monthly",
             "@yearly", "0 0 ? * 1", "5/15 * * * *", "0 12 * * 7", "0 0 * * FRI-MON", "  30 6 * * 1-5  "],
)
def test_valid_expressions_are_accepted(expr: str) -> None:
    c = Cron(expr, timezone="Europe/London")
    assert c.expression == expr.strip() and c.timezone == "Europe/London" and c.overlap == "skip"


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("0 * * * * 30", "a sixth field is seconds to croniter but a year to Temporal"),
        ("0 0 * * * 2027", "has 6 fields"),
        ("0 0 0 * * * 2027", "has 7 fields"),
        ("* * * *", "has 4 fields"),
        ("0 0 L * *", "'L'"),
        ("0 0 15W * *", "'15W'"),
        ("0 0 * * 1#2", "'1#2'"),
        ("H * * * *", "'H'"),
        ("@every 5m", "use five fields"),
        ("@reboot", "use five fields"),
        ("61 * * * *", "not a valid cron expression"),
        ("0 0 31 2 zz", "not a valid cron expression"),
        ("", "not a cron expression"),
    ],
)
def test_what_croniter_and_temporal_read_differently_is_refused(expr: str, says: str) -> None:
    with pytest.raises(InvalidError) as info:
        Cron(expr)
    text = str(info.value)
    assert says in text and "Fix:" in text and f"expression = {expr!r}" in text


def test_every_problem_of_a_cron_is_reported_at_once() -> None:
    with pytest.raises(InvalidError) as info:
        Cron("0 0 L * *", timezone="Mars/Olympus", overlap="never")  # type: ignore[arg-type]
    text = str(info.value)
    assert "3 problem(s)" in text
    assert "unknown time zone 'Mars/Olympus'" in text
    assert "unknown overlap policy" in text and "'buffer_one'" in text


@pytest.mark.parametrize(
    "overlap", ["skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"]
)
def test_overlap_policies(overlap: str) -> None:
    assert Cron("0 * * * *", overlap=overlap).overlap == overlap  # type: ignore[arg-type]
    assert Period(minutes=5, overlap=overlap).overlap == overlap  # type: ignore[arg-type]


def test_period_is_whole_seconds_at_least_one() -> None:
    assert Period(seconds=2).total_seconds() == 2
    assert Period(days=1, hours=1, minutes=1, seconds=1).total_seconds() == 90061
    assert Period(minutes=0.5).total_seconds() == 30
    for kwargs in ({}, {"seconds": 0.5}, {"seconds": 1.5}):
        with pytest.raises(InvalidError, match="whole number of seconds, at least 1"):
            Period(**kwargs)
    with pytest.raises(InvalidError, match="minutes = -1"):
        Period(minutes=-1)
    with pytest.raises(InvalidError, match="unknown overlap policy"):
        Period(hours=1, overlap="sometimes")  # type: ignore[arg-type]


def test_the_decorator_takes_schedules_and_refuses_functions_that_need_arguments() -> None:
    app = App("schedules-validation")

    @app.function(schedule=Cron("0 * * * *", timezone="Asia/Kolkata"))
    def hourly() -> str:
        return "ok"

    @app.function(schedule=Period(seconds=2, overlap="buffer_one"))
    def often(greeting: str = "hi") -> str:
        return greeting

    assert app._spec(hourly).schedule == schedule_config(hourly.options.schedule)
    assert app._spec(hourly).schedule.temporal_cron == ["0 * * * *"]  # type: ignore[union-attr]
    assert app._spec(often).schedule.every_s == 2  # type: ignore[union-attr]
    assert app._spec(often).schedule.overlap == "buffer_one"  # type: ignore[union-attr]
    with pytest.raises(InvalidError, match=r"calls needs\(\) with no arguments, but it requires a, b"):

        @app.function(schedule=Period(minutes=1))
        def needs(a: int, b: int, c: int = 0) -> None: ...

    with pytest.raises(InvalidError, match="schedule = '0 .*a str is not accepted.*Fix: give apothic.Cron"):

        @app.function(schedule="0 * * * *")  # type: ignore[arg-type]
        def text() -> None: ...


def test_a_schedule_change_is_a_new_version() -> None:
    def request(schedule: Cron | Period) -> str:
        app = App("schedules-hash")

        @app.function(schedule=schedule)
        def job() -> None: ...

        return app._deploy_request().code_hash

    assert request(Cron("0 * * * *")) == request(Cron("0 * * * *"))
    assert request(Cron("0 * * * *")) != request(Cron("0 * * * *", timezone="Europe/London"))
    assert request(Period(hours=1)) != request(Period(hours=1, overlap="allow_all"))


# --- the translation to Temporal's dialect ----------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "temporal"),
    [
        ("0 * * * *", ["0 * * * *"]),
        ("*/20 9-17 * * MON-FRI", ["0,20,40 9-17 * * 1-5"]),
        ("0 0 * * FRI-MON", ["0 0 * * 0,1,5,6"]),  # Temporal refuses a wrapping range
        ("0 12 * * 7", ["0 12 * * 0"]),
        ("0 0 1 jan,jul *", ["0 0 1 1,7 *"]),
        ("5/15 * * * *", ["5,20,35,50 * * * *"]),
        ("@weekly", ["0 0 * * 0"]),
        ("0 0 ? * 1", ["0 0 * * 1"]),
        # Day-of-month and day-of-week: croniter ORs them, Temporal ANDs them → one string each.
        ("0 9 13 * 5", ["0 9 13 * *", "0 9 * * 5"]),
        ("0 0 */10 * sun", ["0 0 1,11,21,31 * *", "0 0 * * 0"]),
    ],
)
def test_expressions_are_written_out_for_temporal(expr: str, temporal: list[str]) -> None:
    assert temporal_cron(expr) == temporal
    assert Cron(expr).temporal_expressions() == temporal


def test_day_of_month_or_day_of_week_fires_as_croniter_says() -> None:
    # Friday the 13th in croniter (and cron) means every 13th and every Friday.
    got = runs("0 0 13 * 5", "UTC", "2026-11-26T12:00", 5)
    assert got == croniter_runs("0 0 13 * 5", "UTC", datetime(2026, 11, 26, 12, tzinfo=timezone.utc), 5)
    assert [t.day for t in got] == [27, 4, 11, 13, 18]


def random_expression(rnd: random.Random) -> str:
    def field(lo: int, hi: int, star: float) -> str:
        r = rnd.random()
        if r < star:
            return "*"
        if r < star + 0.15:
            return f"*/{rnd.randint(2, max(2, (hi - lo) // 2))}"
        if r < star + 0.3:
            a = rnd.randint(lo, hi)
            return f"{a}-{rnd.randint(a, hi)}"
        return ",".join(str(v) for v in sorted({rnd.randint(lo, hi) for _ in range(rnd.randint(1, 3))}))

    return " ".join([field(0, 59, 0.2), field(0, 23, 0.4), field(1, 31, 0.7), field(1, 12, 0.8), field(0, 6, 0.7)])


@pytest.mark.parametrize("seed", range(6))
def test_away_from_dst_changes_next_runs_are_croniters(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(25):
        expr = random_expression(rnd)
        tz = rnd.choice(["UTC", "Asia/Kolkata", "Asia/Tokyo", "America/Phoenix"])  # no DST in these
        after = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=rnd.randint(0, 2_000_000))
        assert next_cron_times(expr, tz, after, 8) == croniter_runs(expr, tz, after, 8), (expr, tz, after)


# --- time zones and DST ---------------------------------------------------------------------


def test_next_runs_are_in_the_schedules_time_zone() -> None:
    utc = timezone.utc
    got = runs("0 9 * * *", "Asia/Kolkata", "2026-11-26T10:00", 2)
    assert got == [datetime(2026, 11, 27, 3, 30, tzinfo=utc), datetime(2026, 11, 28, 3, 30, tzinfo=utc)]
    assert runs("0 9 * * *", "America/New_York", "2026-11-26T10:00", 1) == [datetime(2026, 11, 27, 14, tzinfo=utc)]
    assert runs("0 9 * * *", "America/New_York", "2027-06-01T10:00", 1) == [datetime(2027, 6, 2, 13, tzinfo=utc)]


def test_new_york_spring_forward_skips_the_missing_time() -> None:
    # 2027-03-14 02:00 EST → 03:00 EDT: 02:30 does not exist that day. croniter would run at
    # 03:00; Temporal does not run that day, so neither does Apothic's next-run list.
    got = runs("30 2 * * *", "America/New_York", "2027-03-12T12:00", 3)
    assert got == [at(NY, "2027-03-13T02:30"), at(NY, "2027-03-15T02:30"), at(NY, "2027-03-16T02:30")]
    assert at(NY, "2027-03-14T03:00") in croniter_runs("30 2 * * *", "America/New_York", got[0] - timedelta(1), 3)
    # Hourly: nothing between 01:00 EST and 03:00 EDT, one real hour apart.
    assert runs("0 * * * *", "America/New_York", "2027-03-14T00:30", 3) == [
        at(NY, "2027-03-14T01:00"), at(NY, "2027-03-14T03:00"), at(NY, "2027-03-14T04:00")
    ]


def test_new_york_fall_back_runs_both_copies_of_the_repeated_hour() -> None:
    # 2027-11-07 02:00 EDT → 01:00 EST: 01:30 happens twice and runs twice.
    got = runs("30 1 * * *", "America/New_York", "2027-11-06T12:00", 4)
    assert got == [at(NY, "2027-11-07T01:30"), at(NY, "2027-11-07T01:30!"), at(NY, "2027-11-08T01:30"),
                   at(NY, "2027-11-09T01:30")]
    assert got[1] - got[0] == timedelta(hours=1)
    assert runs("0 * * * *", "America/New_York", "2027-11-07T00:30", 3) == [
        at(NY, "2027-11-07T01:00"), at(NY, "2027-11-07T01:00!"), at(NY, "2027-11-07T02:00")
    ]


def test_london_spring_forward_and_fall_back() -> None:
    # 2027-03-28 01:00 GMT → 02:00 BST: 01:30 does not exist that day.
    assert runs("30 1 * * *", "Europe/London", "2027-03-27T12:00", 2) == [
        at(LONDON, "2027-03-29T01:30"), at(LONDON, "2027-03-30T01:30")
    ]
    # 2027-10-31 02:00 BST → 01:00 GMT. Temporal (as Go resolves the repeated hour east of
    # Greenwich) runs 01:30 once, in GMT, where croniter would run it twice...
    got = runs("30 1 * * *", "Europe/London", "2027-10-30T12:00", 2)
    assert got == [at(LONDON, "2027-10-31T01:30!"), at(LONDON, "2027-11-01T01:30")]
    assert croniter_runs("30 1 * * *", "Europe/London", got[0] - timedelta(hours=2), 3) == [
        at(LONDON, "2027-10-31T01:30"), at(LONDON, "2027-10-31T01:30!"), at(LONDON, "2027-11-01T01:30")
    ]
    # ... and hourly runs 01:00 BST, then 02:00 GMT: the GMT copy of 01:00 does not run.
    assert runs("0 * * * *", "Europe/London", "2027-10-31T00:30", 3) == [
        at(LONDON, "2027-10-31T01:00"), at(LONDON, "2027-10-31T02:00"), at(LONDON, "2027-10-31T03:00")
    ]
    assert at(LONDON, "2027-10-31T02:00") - at(LONDON, "2027-10-31T01:00") == timedelta(hours=2)


def test_period_runs_are_aligned_to_the_epoch() -> None:
    after = datetime(2026, 11, 26, 22, 47, 13, tzinfo=timezone.utc)
    assert next_period_times(2, after, 2) == [after.replace(second=14), after.replace(second=16)]
    assert next_period_times(3600, after, 1) == [datetime(2026, 11, 26, 23, tzinfo=timezone.utc)]
    assert next_period_times(86400, after, 1) == [datetime(2026, 11, 27, tzinfo=timezone.utc)]
    config = schedule_config(Period(hours=1))
    assert config is not None and next_runs(config, after, 1) == next_period_times(3600, after, 1)


def test_schedules_manager_has_async_twins() -> None:
    from apothic._schedule._schedules import Schedules

    s = Schedules()
    names = ["backfill", "delete", "get", "list", "pause", "resume", "trigger"]
    assert sorted(dir(s.aio)) == names
    for name in names:
        blocking, twin = getattr(s, name), getattr(s.aio, name)
        assert inspect.iscoroutinefunction(twin) and not inspect.iscoroutinefunction(blocking), name
        assert inspect.signature(blocking) == inspect.signature(twin), name  # the same parameters on both faces
