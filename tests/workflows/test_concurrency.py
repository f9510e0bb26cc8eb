"""Several inputs at once in one container (``@apothic.concurrent``), against real processes.

Overlap is measured from the times each input records itself (start and end, with its pid),
never from how long the test took.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

import apothic
from apothic import App, JobStatus

from ..conftest import container_pids, wait_until

pytestmark = pytest.mark.usefixtures("control_worker")


def records(folder: Path) -> dict[str, dict[str, Any]]:
    """What each input wrote about itself: {name: {"pid", "start", "end", ...}}."""
    out: dict[str, dict[str, Any]] = {}
    for path in folder.glob("*.json"):
        try:
            out[path.stem] = json.loads(path.read_text())
        except ValueError:
            continue  # being written
    return out


def note(folder: Path, name: str, **fields: Any) -> None:
    """Merge ``fields`` into the input's record (written whole, then renamed: never half-read)."""
    path = folder / f"{name}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(fields)
    tmp = folder / f"{name}.tmp"
    tmp.write_text(json.dumps(data))
    tmp.rename(path)


def overlap(recs: list[dict[str, Any]]) -> float:
    """Seconds during which all of them ran at once (negative: they did not)."""
    return min(r["end"] for r in recs) - max(r["start"] for r in recs)


def test_sync_inputs_run_on_threads_and_async_inputs_as_tasks_at_once(app_name: str, tmp_path: Path) -> None:
    threads, tasks = tmp_path / "threads", tmp_path / "tasks"
    threads.mkdir()
    tasks.mkdir()
    app = App(app_name)

    @app.function(timeout_s=120)
    @apothic.concurrent(max_inputs=4)
    def blocking(name: str) -> str:
        import threading

        note(threads, name, pid=os.getpid(), thread=threading.get_ident(), start=time.time())
        time.sleep(2)
        note(threads, name, end=time.time())
        return name.upper()

    @app.function(timeout_s=120)
    @apothic.concurrent(max_inputs=4, target_inputs=4)
    async def awaiting(name: str) -> str:
        import threading

        note(tasks, name, pid=os.getpid(), thread=threading.get_ident(), start=time.time())
        await asyncio.sleep(2)
        note(tasks, name, end=time.time())
        return name.upper()

    app.deploy()
    names = [f"in{i}" for i in range(4)]
    jobs = [fn.spawn(n) for fn in (blocking, awaiting) for n in names]
    assert [j.wait(timeout_s=120) for j in jobs] == [n.upper() for n in names] * 2

    sync, aio = records(threads), records(tasks)
    assert sorted(sync) == sorted(aio) == names
    for recs, one_thread in ((list(sync.values()), False), (list(aio.values()), True)):
        assert len({r["pid"] for r in recs}) == 1  # one container took all four
        assert overlap(recs) > 0.5, recs  # and ran them at the same time
        assert (len({r["thread"] for r in recs}) == 1) is one_thread  # threads; tasks of one loop


def test_output_stays_with_its_input(app_name: str) -> None:
    app = App(app_name)

    @app.function(timeout_s=120)
    @apothic.concurrent(max_inputs=3)
    def chatty(marker: str) -> int:
        import logging
        import sys

        log = logging.getLogger(f"chatty.{marker}")
        log.addHandler(logging.StreamHandler(sys.stderr))  # made during the input: its own stderr
        for i in range(150):
            print(f"{marker} out {i}")
            if i % 10 == 0:
                print(f"{marker} err {i}", file=sys.stderr)
                log.warning(f"{marker} logged {i}")
            time.sleep(0.01)
        return os.getpid()

    @app.function(timeout_s=120)
    @apothic.concurrent(max_inputs=3)
    async def chatty_async(marker: str) -> int:
        async def helper(i: int) -> None:  # a task it starts prints as the input too
            print(f"{marker} helper {i}")

        for i in range(150):
            print(f"{marker} out {i}")
            if i % 25 == 0:
                await asyncio.create_task(helper(i))
            await asyncio.sleep(0.01)
        return os.getpid()

    app.deploy()
    markers = ["alpha", "bravo", "charlie"]
    for fn, expected in ((chatty, 150 + 15 + 15), (chatty_async, 150 + 6)):
        jobs = [fn.spawn(m) for m in markers]
        assert len({j.wait(timeout_s=120) for j in jobs}) == 1  # one container ran the three at once
        for marker, job in zip(markers, jobs):
            lines = [line for line in job.logs().splitlines() if line.strip()]
            assert len(lines) == expected, (marker, lines[:5])
            assert all(line.startswith(f"{marker} ") for line in lines), (marker, lines)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_cancelling_one_input_leaves_the_others_running(app_name: str, tmp_path: Path, kind: str) -> None:
    app = App(app_name)

    if kind == "sync":

        @app.function(timeout_s=120)
        @apothic.concurrent(max_inputs=3)
        def work(name: str) -> int:
            note(tmp_path, name, pid=os.getpid(), start=time.time())
            try:
                time.sleep(6 if name == "victim" else 4)
            except BaseException as e:  # noqa: BLE001 - recorded, then passed on
                note(tmp_path, name, stopped=type(e).__name__, stopped_at=time.time())
                raise
            note(tmp_path, name, end=time.time())
            return os.getpid()

    else:

        @app.function(timeout_s=120)
        @apothic.concurrent(max_inputs=3)
        async def work(name: str) -> int:
            note(tmp_path, name, pid=os.getpid(), start=time.time())
            try:
                await asyncio.sleep(6 if name == "victim" else 4)
            except BaseException as e:  # noqa: BLE001 - recorded, then passed on
                note(tmp_path, name, stopped=type(e).__name__, stopped_at=time.time())
                raise
            note(tmp_path, name, end=time.time())
            return os.getpid()

    app.deploy()
    names = ["victim", "first", "second"]
    jobs = dict(zip(names, (work.spawn(n) for n in names)))
    wait_until(lambda: len(records(tmp_path)) == 3, timeout=90, what="the three inputs to start")
    jobs["victim"].cancel()
    assert jobs["victim"].status() is JobStatus.CANCELLED
    pids = {jobs[n].wait(timeout_s=60) for n in ("first", "second")}
    recs = records(tmp_path)
    assert pids == {recs["victim"]["pid"]}  # the same container ran all three
    assert recs["victim"]["stopped"] == ("Interrupted" if kind == "sync" else "CancelledError")
    assert "end" not in recs["victim"]
    for n in ("first", "second"):  # still running when the victim stopped, and finished
        assert recs[n]["start"] < recs["victim"]["stopped_at"] < recs[n]["end"], recs
        assert "stopped" not in recs[n]


def test_a_timeout_stops_that_input_only(app_name: str, tmp_path: Path) -> None:
    app = App(app_name)

    @app.function(timeout_s=3)
    @apothic.concurrent(max_inputs=4)
    def work(name: str, seconds: float) -> int:
        note(tmp_path, name, pid=os.getpid(), start=time.time())
        try:
            if name == "spinner":  # pure Python: stopped between bytecodes
                end, n = time.monotonic() + seconds, 0
                while time.monotonic() < end:
                    n += 1
            else:  # in time.sleep: woken
                time.sleep(seconds)
        except BaseException as e:  # noqa: BLE001 - recorded, then passed on
            note(tmp_path, name, stopped=type(e).__name__, stopped_at=time.time())
            raise
        note(tmp_path, name, end=time.time())
        return os.getpid()

    app.deploy()
    slow = {n: work.spawn(n, 60) for n in ("sleeper", "spinner")}
    wait_until(lambda: len(records(tmp_path)) == 2, timeout=90, what="the slow inputs to start")
    time.sleep(1)  # started after them: still running when they time out (3 s after their start)
    quick = {n: work.spawn(n, 2.5) for n in ("q1", "q2")}
    for job in slow.values():
        with pytest.raises(apothic.FunctionTimeoutError, match="timeout_s=3"):
            job.wait(timeout_s=60)
    pids = {job.wait(timeout_s=60) for job in quick.values()}
    recs = records(tmp_path)
    assert pids == {recs["sleeper"]["pid"]} == {recs["spinner"]["pid"]}
    for n in slow:
        assert recs[n]["stopped"] == "Interrupted" and "end" not in recs[n]
        assert 2.5 < recs[n]["stopped_at"] - recs[n]["start"] < 10, recs[n]
    for n in quick:
        assert "stopped" not in recs[n]
        assert recs[n]["start"] < min(recs[s]["stopped_at"] for s in slow) < recs[n]["end"], recs


def test_an_input_that_ignores_its_timeout_retires_the_container_after_its_other_inputs(
    app_name: str, tmp_path: Path
) -> None:
    app = App(app_name)

    @app.function(timeout_s=8)
    @apothic.concurrent(max_inputs=2)
    def work(name: str) -> int:
        note(tmp_path, name, pid=os.getpid(), start=time.time())
        if name == "stubborn":
            while True:
                try:
                    time.sleep(60)
                except BaseException:  # noqa: BLE001 - deliberately ignores the interruption
                    note(tmp_path, name, ignored=time.time())
        time.sleep(6.5)
        note(tmp_path, name, end=time.time())
        return os.getpid()

    app.deploy()
    stuck = work.spawn("stubborn")
    wait_until(lambda: "ignored" in records(tmp_path).get("stubborn", {}), timeout=90,
               what="the stubborn input to ignore its timeout")
    # Started during the grace period (5 s): it runs past the moment the container gives up on
    # the stubborn input, and still completes there.
    steady = work.spawn("steady")
    with pytest.raises(apothic.FunctionTimeoutError, match="ignored the interruption"):
        stuck.wait(timeout_s=60)
    given_up = time.time()
    first = records(tmp_path)["stubborn"]["pid"]
    assert steady.wait(timeout_s=60) == first
    rec = records(tmp_path)["steady"]
    assert rec["start"] < given_up < rec["end"], (rec, given_up)
    # Then the container retires (EXIT_REPLACE) and a fresh one takes the next input.
    wait_until(lambda: first not in container_pids(app_name), timeout=30, what="the stuck container to go")
    again = work.spawn("after")
    assert again.wait(timeout_s=120) != first
