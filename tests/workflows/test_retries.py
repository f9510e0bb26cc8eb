"""Retries by kind, timeouts, cancellation and checkpoints, against real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

import apothic
from apothic import App, JobStatus, Retries
from apothic._control._embedded import temporal_binary
from apothic._data._serialization import CloudPickled

from ..conftest import ROOT, container_pids, job_info, wait_until

pytestmark = pytest.mark.usefixtures("control_worker")


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_user_errors_retry_with_the_stated_backoff(temporal: str, app_name: str, tmp_path: Path) -> None:
    marks = tmp_path / "attempts"
    app = App(app_name)

    @app.function(retries=Retries(max_retries=3, initial_delay=1.0, backoff_coefficient=2.0, max_delay=10.0))
    def flaky() -> int:
        with open(marks, "a") as f:
            f.write(f"{time.time()}\n")
        if len(lines(marks)) < 3:
            raise ConnectionError("upstream timed out")
        return len(lines(marks))

    app.deploy()
    job = flaky.spawn()
    assert job.wait() == 3
    stamps = [float(x) for x in lines(marks)]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    # Retry 1 waits 1 s, retry 2 waits 2 s, plus the scheduling overhead (bounded generously:
    # a busy machine adds seconds; the exact delays are the workflow's own, checked below).
    assert 1.0 <= gaps[0] < 1.0 + 5, gaps
    assert 2.0 <= gaps[1] < 2.0 + 5, gaps
    info = job_info(temporal, job.job_id)
    assert [(a.kind, a.retry_in_s) for a in info.attempts] == [("user", 1.0), ("user", 2.0)]
    assert "ConnectionError: upstream timed out" in info.attempts[0].reason


def test_errors_that_never_retry(app_name: str, tmp_path: Path) -> None:
    marks = tmp_path / "attempts"
    app = App(app_name)

    @app.function(retries=Retries(max_retries=3, initial_delay=0.1, non_retryable=[KeyError]))
    def lookup(kind: str) -> None:
        with open(marks, "a") as f:
            f.write(kind + "\n")
        if kind == "key":
            raise KeyError("missing")
        raise apothic.InvalidError("bad input")

    @app.function()  # retries=0: a user error is not run again
    def once() -> None:
        with open(marks, "a") as f:
            f.write("once\n")
        raise RuntimeError("no")

    app.deploy()
    with pytest.raises(KeyError):
        lookup.remote("key")
    with pytest.raises(apothic.InvalidError, match="bad input"):
        lookup.remote("invalid")
    with pytest.raises(RuntimeError):
        once.remote()
    assert lines(marks) == ["key", "invalid", "once"]


def test_a_lost_container_is_retried_without_using_the_users_retries(
    temporal: str, app_name: str, tmp_path: Path
) -> None:
    marker = tmp_path / "died-once"
    app = App(app_name)

    @app.function()  # retries=0
    def fragile() -> str:
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getppid(), signal.SIGKILL)  # the container (its supervisor, the runtime with it) dies mid-input
            time.sleep(60)  # the runtime dies with its supervisor: never return before that
        return f"survived in {os.getpid()}"

    app.deploy()
    job = fragile.spawn()
    result = job.wait(timeout_s=120)
    assert result.startswith("survived") and result != f"survived in {marker.read_text()}"
    info = job_info(temporal, job.job_id)
    assert [a.kind for a in info.attempts] == ["infrastructure"]
    assert "stopped responding" in info.attempts[0].reason


def heartbeat_checkpoint(address: str, job_id: str) -> Any:
    """The checkpoint in the last heartbeat the server holds for the job's running attempt."""

    async def read() -> Any:
        client = await Client.connect(address)
        desc = await client.get_workflow_handle(job_id).describe()
        for pending in desc.raw_description.pending_activities:
            if pending.activity_type.name == "apothic.execute" and pending.heartbeat_details.payloads:
                (details,) = await client.data_converter.decode(pending.heartbeat_details.payloads)
                return CloudPickled(**details["checkpoint"]).load() if details.get("checkpoint") else None
        return None

    return asyncio.run(read())


def test_a_checkpoint_comes_back_after_the_container_is_killed(temporal: str, app_name: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    app = App(app_name)

    @app.function(timeout_s=120)
    def count_to(n: int) -> dict:
        state = apothic.last_checkpoint() or {"next": 0, "started_at": []}
        state["started_at"].append(state["next"])
        pid_file.write_text(str(os.getppid()))  # the container: its supervisor
        for i in range(state["next"], n):
            time.sleep(0.4)
            state["next"] = i + 1
            apothic.checkpoint(state)
        return state

    app.deploy()
    assert count_to.local(2) == {"next": 2, "started_at": [0]}  # outside a container: no-ops
    job = count_to.spawn(15)
    wait_until(lambda: job.status() is JobStatus.RUNNING and pid_file.exists(), timeout=60, what="the job to run")
    # The server holds a checkpoint of step 3 or later: the retry resumes from it (or a later one).
    wait_until(lambda: (heartbeat_checkpoint(temporal, job.job_id) or {"next": 0})["next"] >= 3, timeout=60,
               what="a heartbeat with the checkpoint of step 3")
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    result = job.wait(timeout_s=120)
    assert result["next"] == 15
    first, resumed = result["started_at"]
    assert first == 0 and resumed >= 3, result  # it resumed where it was, not from zero


def test_timeout_of_a_function_that_ignores_interruption_replaces_its_container(app_name: str) -> None:
    app = App(app_name)

    @app.function(timeout_s=2)
    def stubborn() -> None:
        while True:
            try:
                time.sleep(60)
            except BaseException:  # noqa: BLE001 - deliberately ignores the interruption
                pass

    @app.function()
    def pid() -> int:
        return os.getpid()

    app.deploy()
    with pytest.raises(apothic.FunctionTimeoutError, match="ignored the interruption"):
        stubborn.remote()
    wait_until(lambda: len(container_pids(app_name)) <= 1, timeout=30, what="the stuck container to go")
    assert isinstance(pid.remote(), int)


def started_activities(address: str, workflow_id: str) -> int:
    async def count() -> int:
        client = await Client.connect(address)
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        return sum(e.HasField("activity_task_started_event_attributes") for e in history.events)

    return asyncio.run(count())


def test_a_job_cancelled_while_queued_never_runs(temporal: str, app_name: str, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    app = App(app_name)

    @app.function(max_containers=1)
    def work(name: str, seconds: float) -> str:
        with open(ran, "a") as f:
            f.write(name + "\n")
        time.sleep(seconds)
        return name

    app.deploy()
    first = work.spawn("first", 4)
    wait_until(lambda: first.status() is JobStatus.RUNNING, timeout=60, what="the first job to run")
    second = work.spawn("second", 0)
    assert second.status() is JobStatus.QUEUED
    second.cancel()
    assert second.status() is JobStatus.CANCELLED
    # Its history is complete (the job has ended): no attempt of it was ever started.
    assert started_activities(temporal, second.job_id) == 0
    assert first.wait() == "first"
    assert started_activities(temporal, first.job_id) == 1  # (the count sees an attempt that ran)
    assert lines(ran) == ["first"]


def test_cancel_from_the_temporal_cli(temporal: str, app_name: str) -> None:
    app = App(app_name)

    @app.function(timeout_s=600)
    def nap() -> None:
        time.sleep(300)

    app.deploy()
    job = nap.spawn()
    wait_until(lambda: job.status() is JobStatus.RUNNING, timeout=60, what="the job to run")
    subprocess.run(
        [temporal_binary(), "workflow", "cancel", "--workflow-id", job.job_id, "--address", temporal],
        check=True, capture_output=True, timeout=30,
    )
    with pytest.raises(apothic.JobCancelledError):  # it sleeps 300 s: only the cancel ends it this soon
        job.wait(timeout_s=60)
    assert job.status() is JobStatus.CANCELLED


def test_idempotent_submission_from_two_processes(app_name: str, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    app = App(app_name)

    @app.function()
    def charge(invoice: str) -> str:
        with open(ran, "a") as f:
            f.write(invoice + "\n")
        time.sleep(1)
        return f"charged {invoice}"

    app.deploy()
    first = charge.spawn("inv-1", idempotency_key="invoice-1")
    again = charge.spawn("inv-1", idempotency_key="invoice-1")
    assert again.job_id == first.job_id
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import apothic
            fn = apothic.RemoteFunction.from_name("{app_name}", "charge")
            print(fn.spawn("inv-1", idempotency_key="invoice-1").job_id)
        """)],
        capture_output=True, text=True, env=dict(os.environ), cwd=str(ROOT), timeout=120, check=True,
    ).stdout.strip()
    assert out == first.job_id
    assert first.wait() == "charged inv-1"
    # Still the same job after it finished; another key is another job.
    assert charge.spawn("inv-1", idempotency_key="invoice-1").job_id == first.job_id
    other = charge.spawn("inv-2", idempotency_key="invoice-2")
    assert other.job_id != first.job_id and other.wait() == "charged inv-2"
    assert lines(ran) == ["inv-1", "inv-2"]
    with pytest.raises(apothic.InvalidError, match="idempotency_key"):
        charge.spawn("x", idempotency_key="")
