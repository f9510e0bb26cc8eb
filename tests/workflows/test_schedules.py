"""Schedules against a real dev server, control worker and containers: scheduled runs are
ordinary jobs; deploy creates, updates and deletes the Temporal Schedules; pause, resume,
trigger and backfill; Apothic's next runs are the server's ``next_action_times``; a schedule
survives a server restart.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
    ScheduleSpec,
    ScheduleState,
)

from apothic import (
    App,
    ControlPlaneClient,
    Cron,
    Job,
    JobStatus,
    NotFoundError,
    Period,
    Retries,
)
from apothic._cli._jobs import list_jobs as _list_jobs
from apothic._contracts import JobInfo, app_workflow_id, schedule_id
from apothic._schedule._cron import next_cron_times, temporal_cron
from apothic._control._loop import run_blocking
from apothic._schedule._schedules import ScheduleInfo, Schedules

from ..conftest import free_port, start_dev_server, start_worker, stop, wait_until

NEVER = Cron("0 0 1 1 *")  # yearly: never due while a test runs (it is triggered instead)


@pytest.fixture
def schedules(app_name: str, control_worker: object) -> Iterator[Schedules]:
    s = Schedules()
    try:
        yield s
    finally:
        s.delete(app_name)  # stop firing on the shared server


def jobs_of(app: str) -> dict[str, str]:
    """Job id -> status of the app's jobs, as `apothic jobs list` finds them."""
    return {r["job_id"]: r["status"] for r in run_blocking(_list_jobs(app, 200))}


def runs_file(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def describe(address: str, sid: str):
    client = await Client.connect(address)
    return await client.get_schedule_handle(sid).describe()


def test_a_period_schedule_fires_repeatedly_and_each_run_is_an_ordinary_job(
    schedules: Schedules, app_name: str, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    app = App(app_name)

    @app.function(schedule=Period(seconds=2))
    def tick() -> str:
        with open(ran, "a") as f:
            f.write(f"{time.time()}\n")
        print("tick", flush=True)
        return "tock"

    app.deploy()
    # One Temporal Schedule, visible by its id, firing InvocationWorkflows.
    info = schedules.get(app_name, "tick")
    assert info.config is not None and info.config.every_s == 2 and not info.paused
    prefix = f"job-sched-{app_name}.tick-"

    def completed() -> list[str]:
        return sorted(j for j, status in jobs_of(app_name).items() if status == "completed")

    wait_until(lambda: len(completed()) >= 3, timeout=120, what="three completed scheduled runs")
    done = completed()
    assert all(j.startswith(prefix) and j.endswith("Z") for j in done)
    for job_id in done[:3]:
        job = Job.from_id(job_id)
        assert job.wait(timeout_s=30) == "tock"
        assert job.status() is JobStatus.COMPLETED
        assert "tick" in job.logs()
    # Scheduled two seconds apart (on the epoch-aligned grid), each run once.
    stamps = [datetime.fromisoformat(j[len(prefix):].replace("Z", "+00:00")) for j in done]
    assert all(t.second % 2 == 0 for t in stamps)
    assert len(runs_file(ran)) >= len(done)
    info = schedules.get(app_name, "tick")
    assert info.num_runs >= 3 and info.last_job_id.startswith(prefix) and info.last_run_at is not None


def test_a_scheduled_run_has_events_retries_and_cancellation(
    schedules: Schedules, app_name: str, tmp_path: Path, temporal: str
) -> None:
    marker = tmp_path / "failed-once"
    app = App(app_name)

    @app.function(schedule=NEVER, retries=Retries(max_retries=1, initial_delay=0.2))
    def flaky() -> str:
        print("attempting", flush=True)
        if not marker.exists():
            marker.write_text("x")
            raise ConnectionError("upstream down")
        return "second attempt"

    @app.function(schedule=NEVER, timeout_s=300)
    def slow() -> None:
        print("sleeping", flush=True)
        time.sleep(300)

    app.deploy()
    schedules.trigger(app_name, "flaky")
    wait_until(lambda: schedules.get(app_name, "flaky").last_job_id, what="the triggered run to start")
    job = Job.from_id(schedules.get(app_name, "flaky").last_job_id)
    assert job.wait(timeout_s=120) == "second attempt"
    events = list(job.watch(snapshot=True))
    kinds = [e.event for e in events]
    assert kinds[0] == "queued" and kinds[-1] == "completed" and kinds.count("retry") == 1
    assert all(e.job_id == job.job_id for e in events)

    async def info() -> JobInfo:
        client = await Client.connect(temporal)
        return await client.get_workflow_handle(job.job_id).query("info", result_type=JobInfo)

    attempts = asyncio.run(info()).attempts
    assert [(a.kind, a.retried) for a in attempts] == [("user", True)]

    schedules.trigger(app_name, "slow")
    wait_until(lambda: schedules.get(app_name, "slow").last_job_id, what="the slow run to start")
    slow_job = Job.from_id(schedules.get(app_name, "slow").last_job_id)
    wait_until(lambda: slow_job.status() is JobStatus.RUNNING, timeout=90, what="the slow run to run")
    wait_until(lambda: "sleeping" in slow_job.logs(), timeout=30, what="its logs")
    slow_job.cancel()
    assert slow_job.status() is JobStatus.CANCELLED
    wait_until(lambda: schedules.get(app_name, "slow").running_job_ids == [], what="the schedule to see it end")


def test_redeploy_updates_and_removes_schedules_and_removing_the_app_deletes_them(
    schedules: Schedules, app_name: str, temporal: str
) -> None:
    def deploy_v1() -> int:
        app = App(app_name)

        @app.function(schedule=Cron("0 6 * * *", timezone="Europe/London"))
        def report() -> str:
            return "report"

        @app.function(schedule=Period(days=1))
        def cleanup() -> str:
            return "cleanup"

        @app.function(schedule=Period(hours=6))
        def archive() -> str:
            return "archive"

        return app.deploy().version

    def deploy_v2() -> tuple[int, bool]:
        app = App(app_name)

        @app.function(schedule=Cron("30 7 * * 1-5", timezone="America/New_York", overlap="buffer_one"))
        def report() -> str:
            return "report v2"

        @app.function()  # no schedule any more; archive is gone
        def cleanup() -> str:
            return "cleanup v2"

        d = app.deploy()
        return d.version, d.created

    assert deploy_v1() == 1
    for name in ("report", "cleanup", "archive"):
        assert schedules.get(app_name, name).config is not None
    schedules.pause(app_name, "report", note="quiet week")

    assert deploy_v2() == (2, True)
    info = schedules.get(app_name, "report")
    assert info.config is not None
    config = info.config
    assert (config.cron, config.timezone, config.overlap) == ("30 7 * * 1-5", "America/New_York", "buffer_one")
    assert info.spec_text() == "cron '30 7 * * 1-5' America/New_York, overlap=buffer_one"
    assert info.paused and info.note == "quiet week"  # the state survives an update
    desc = asyncio.run(describe(temporal, schedule_id(app_name, "report")))
    assert desc.schedule.policy.overlap is ScheduleOverlapPolicy.BUFFER_ONE
    assert desc.schedule.spec.time_zone_name == "America/New_York"
    for gone in ("cleanup", "archive"):  # no schedule= / no function
        with pytest.raises(NotFoundError, match="has no schedule"):
            schedules.get(app_name, gone)
    wait_until(lambda: [i.function for i in schedules.list(app_name)] == ["report"], what="the list to settle")

    # Unchanged code: same version, schedules as they were.
    assert deploy_v2() == (2, False)
    assert schedules.get(app_name, "report").paused

    # The app's `remove` update (the AppWorkflow's removal path) deletes its schedules.
    async def remove() -> int:
        client = await Client.connect(temporal)
        return await client.get_workflow_handle(app_workflow_id(app_name)).execute_update("remove", result_type=int)

    assert asyncio.run(remove()) == 2
    with pytest.raises(NotFoundError):
        schedules.get(app_name, "report")


def test_pause_resume_trigger_and_backfill(schedules: Schedules, app_name: str, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    app = App(app_name)

    @app.function(schedule=NEVER)
    def yearly() -> str:
        with open(ran, "a") as f:
            f.write("run\n")
        return "done"

    app.deploy()
    prefix = f"job-sched-{app_name}.yearly-"
    assert schedules.get(app_name, "yearly").num_runs == 0

    schedules.pause(app_name, "yearly", note="maintenance")
    info = schedules.get(app_name, "yearly")
    assert info.paused and info.note == "maintenance"
    # A trigger runs now even while paused.
    schedules.trigger(app_name, "yearly")
    wait_until(lambda: schedules.get(app_name, "yearly").num_runs == 1, what="the triggered run")
    assert Job.from_id(schedules.get(app_name, "yearly").last_job_id).wait(timeout_s=120) == "done"
    schedules.resume(app_name, "yearly")
    assert not schedules.get(app_name, "yearly").paused

    # Backfill: the yearly times from 2024-01-01 to 2026-01-01, both included, one after another.
    schedules.backfill(app_name, "yearly", datetime(2024, 1, 1), datetime(2026, 1, 1))
    wait_until(lambda: schedules.get(app_name, "yearly").num_runs == 4, what="three backfilled runs")
    backfilled = [f"{prefix}{y}-01-01T00:00:00Z" for y in (2024, 2025, 2026)]
    for job_id in backfilled:
        assert Job.from_id(job_id).wait(timeout_s=120) == "done"
    wait_until(lambda: set(backfilled) <= set(jobs_of(app_name)), what="the backfilled jobs in the job list")
    assert len(runs_file(ran)) == 4


def test_next_runs_shown_are_the_servers_next_action_times(schedules: Schedules, app_name: str) -> None:
    app = App(app_name)
    cases = {
        "steps": Cron("*/7 */5 * 2 *"),
        "friday13": Cron("0 9 13 * 5", timezone="Europe/Berlin"),  # croniter's OR: two Temporal strings
        "early": Cron("30 2 * * *", timezone="America/New_York"),
        "wrap": Cron("0 0 * * FRI-MON", timezone="Australia/Lord_Howe"),
        "weekly": Cron("@weekly", timezone="Asia/Kolkata"),
        "leap": Cron("15 3 29 2 *", timezone="Pacific/Chatham"),
        "every7m": Period(minutes=7),
    }
    for name, schedule in cases.items():
        app.function(schedule=schedule)(_named(name))
    app.deploy()

    def listed() -> list[ScheduleInfo]:
        return schedules.list(app_name, count=10)

    wait_until(lambda: len(listed()) == len(cases), what="every schedule to be listed")

    def all_equal() -> bool:
        infos = listed()
        return all(len(i.next_runs) == 10 and i.next_runs == i.temporal_next_runs for i in infos)

    # Retried only for a run falling due between the server's computation and ours.
    wait_until(all_equal, timeout=20, what="Apothic's next runs to equal next_action_times")
    friday13 = schedules.get(app_name, "friday13", count=10).next_runs
    berlin = [t.astimezone(ZoneInfo("Europe/Berlin")) for t in friday13]
    assert all(t.hour == 9 and (t.day == 13 or t.weekday() == 4) for t in berlin)


def _named(name: str):
    def fn() -> str:
        return name

    fn.__name__ = fn.__qualname__ = name
    return fn


async def _server_next_times(address: str, cases: list[tuple[str, str, datetime]]) -> list[list[datetime]]:
    """Temporal's own next_action_times of paused schedules starting at each case's time."""
    client = await Client.connect(address)
    result = []
    for i, (expr, tz, start) in enumerate(cases):
        handle = await client.create_schedule(
            f"dst-check-{os.getpid()}-{i}",
            Schedule(
                action=ScheduleActionStartWorkflow("Nothing", id=f"dst-check-{i}", task_queue="dst-check-nowhere"),
                spec=ScheduleSpec(cron_expressions=temporal_cron(expr), time_zone_name=tz, start_at=start),
                state=ScheduleState(paused=True),
            ),
        )
        result.append(list((await handle.describe()).info.next_action_times))
        await handle.delete()
    return result


def dst_transitions(tz: str, year: int) -> list[datetime]:
    zone, t = ZoneInfo(tz), datetime(year, 1, 1, tzinfo=timezone.utc)
    found, offset = [], t.astimezone(zone).utcoffset()
    while t.year == year:
        t += timedelta(minutes=30)
        if t.astimezone(zone).utcoffset() != offset:
            found.append(t)
            offset = t.astimezone(zone).utcoffset()
    return found


def test_next_runs_across_dst_changes_match_the_server(temporal: str) -> None:
    cases = [
        ("30 2 * * *", "America/New_York", datetime(2027, 3, 12, tzinfo=timezone.utc)),  # spring forward
        ("30 1 * * *", "America/New_York", datetime(2027, 11, 5, tzinfo=timezone.utc)),  # fall back
        ("0 * * * *", "America/New_York", datetime(2027, 11, 7, 3, tzinfo=timezone.utc)),
        ("30 1 * * *", "Europe/London", datetime(2027, 3, 26, tzinfo=timezone.utc)),
        ("30 1 * * *", "Europe/London", datetime(2027, 10, 29, tzinfo=timezone.utc)),
        ("0 * * * *", "Europe/London", datetime(2027, 10, 31, tzinfo=timezone.utc)),
        ("*/20 0-3 * * *", "Europe/London", datetime(2027, 10, 30, 22, tzinfo=timezone.utc)),
    ]
    rnd = random.Random(20271107)
    zones = ["America/New_York", "Europe/London", "Australia/Lord_Howe", "America/Santiago", "Europe/Berlin",
             "Pacific/Chatham", "America/Havana"]
    for _ in range(30):
        tz = rnd.choice(zones)
        at = rnd.choice(dst_transitions(tz, 2027)) - timedelta(hours=rnd.randint(0, 30), minutes=rnd.randint(0, 59))
        minute = rnd.choice(["0", "30", "*/15", "5,50", "*/20"])
        hour = rnd.choice(["*", "0-3", "1", "2", "*/2", "23,0,1"])
        cases.append((f"{minute} {hour} * * *", tz, at.replace(second=0)))
    theirs = asyncio.run(_server_next_times(temporal, cases))
    for (expr, tz, start), server in zip(cases, theirs, strict=True):
        assert len(server) == 10
        assert next_cron_times(expr, tz, start - timedelta(seconds=1), 10) == server, (expr, tz, start)


def test_a_schedule_survives_a_server_restart(tmp_path: Path, app_name: str) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    db = tmp_path / "temporal.db"
    env = dict(os.environ, APOTHIC_TEMPORAL_ADDRESS=address, APOTHIC_HOME=str(tmp_path))
    server = start_dev_server(db, port)
    worker = start_worker(env, tmp_path / "worker.log")
    cp = ControlPlaneClient(address)
    schedules = Schedules(client=cp)
    try:
        app = App(app_name, client=cp)

        @app.function(schedule=Period(seconds=2))
        def beat() -> float:
            return time.time()

        app.deploy()
        wait_until(lambda: schedules.get(app_name, "beat").num_runs >= 2, timeout=120, what="runs before the restart")

        stop(server)
        time.sleep(2)
        server = start_dev_server(db, port)

        before = schedules.get(app_name, "beat")
        assert before.config is not None and before.config.every_s == 2 and not before.paused
        wait_until(
            lambda: schedules.get(app_name, "beat").num_runs >= before.num_runs + 2,
            timeout=120,
            what="runs after the restart",
        )
        after = schedules.get(app_name, "beat")
        assert after.last_job_id != before.last_job_id
        assert isinstance(Job.from_id(after.last_job_id, client=cp).wait(timeout_s=120), float)
    finally:
        try:
            schedules.delete(app_name)
        finally:
            stop(worker)
            stop(server)
