"""``@apothic.batched``: single inputs gathered into lists, against real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import apothic
from apothic import App, JobStatus, Retries

from ..conftest import ROOT, job_info, wait_until

pytestmark = pytest.mark.usefixtures("control_worker")


def calls(path: Path) -> list[dict[str, Any]]:
    """The calls the function recorded, one JSON line each: {"pid", "items", ...}."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def record(path: Path, **fields: Any) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(fields) + "\n")


SPAWNER = """
import json, os, sys, time
import apothic
fn = apothic.RemoteFunction.from_name({app!r}, "shout")
print("ready", flush=True)
while not os.path.exists({go!r}):
    time.sleep(0.01)
print(json.dumps([fn.spawn(f"{source}{{i}}").job_id for i in range(3)]), flush=True)
"""


def start_spawner(app: str, go: Path, source: str) -> subprocess.Popen:
    code = textwrap.dedent(SPAWNER.format(app=app, go=str(go), source=source))
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=dict(os.environ), cwd=str(ROOT)
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_inputs_from_several_callers_are_gathered_into_lists(app_name: str, tmp_path: Path) -> None:
    log = tmp_path / "calls"
    app = App(app_name)

    @app.function(timeout_s=60)
    @apothic.batched(max_batch_size=8, wait_ms=3000)
    def shout(items: list[str], suffix: list[str] | None = None) -> list[str]:
        record(log, pid=os.getpid(), items=items, suffix=suffix)
        print(f"batch of {len(items)}: {','.join(items)}")
        return [item.upper() + (s or "") for item, s in zip(items, suffix)]

    app.deploy()
    assert shout.remote("warm", suffix="!") == "WARM!"  # a batch of one, after 3 s
    go = tmp_path / "go"
    spawners = [start_spawner(app_name, go, source) for source in ("a", "b")]
    go.write_text("")
    mapped = shout.map(["m0", "m1"])  # a third caller, in this process
    job_ids = [jid for p in spawners for jid in json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1])]
    assert mapped == ["M0", "M1"]
    jobs = [apothic.Job.from_id(jid) for jid in job_ids]
    assert [j.wait(timeout_s=60) for j in jobs] == [f"{s}{i}".upper() for s in "ab" for i in range(3)]

    recorded = calls(log)
    assert recorded[0]["items"] == ["warm"] and recorded[0]["suffix"] == ["!"]
    batches = [c["items"] for c in recorded[1:]]
    inputs = sorted(x for b in batches for x in b)
    assert inputs == sorted(["a0", "a1", "a2", "b0", "b1", "b2", "m0", "m1"])  # each input ran once
    assert all(len(b) <= 8 for b in batches)
    # One call took inputs of all three callers (they arrived within wait_ms of each other).
    assert any({x[0] for x in b} == {"a", "b", "m"} for b in batches), batches
    assert all(c["suffix"] == [None] * len(c["items"]) for c in recorded[1:])  # defaults, one per input

    # Each job's started event names its batch: the inputs of one call share it; its logs are
    # that call's output.
    by_batch: dict[str, set[str]] = {}
    for job in jobs:
        item = job.wait().lower()
        batch = next(b for b in batches if item in b)
        (started,) = [e for e in job.watch(snapshot=True) if e.event == "started"]
        assert started.data["batch_size"] == len(batch)
        assert started.data["batch"].startswith(started.data["container_id"] + ".b")
        by_batch.setdefault(started.data["batch"], set()).add(item)
        assert f"batch of {len(batch)}: {','.join(batch)}" in job.logs()
    spawned = [{x for x in b if x[0] in "ab"} for b in batches]
    assert sorted(map(sorted, by_batch.values())) == sorted(sorted(b) for b in spawned if b)


def test_a_map_of_a_batched_function_returns_results_in_order(app_name: str, tmp_path: Path) -> None:
    log = tmp_path / "calls"
    app = App(app_name)

    @app.function(timeout_s=60)
    @apothic.batched(max_batch_size=4, wait_ms=200)
    async def square(values: list[int]) -> list[int]:
        record(log, pid=os.getpid(), items=values)
        await asyncio.sleep(0.05)
        return [v * v for v in values]

    app.deploy()
    assert square.map(range(30)) == [v * v for v in range(30)]
    sizes = [len(c["items"]) for c in calls(log)]
    assert sum(sizes) == 30 and max(sizes) == 4 and len(sizes) < 30, sizes


def test_a_wrong_result_or_an_exception_fails_each_input_of_the_batch(app_name: str, tmp_path: Path) -> None:
    failed_once = tmp_path / "failed-once"
    app = App(app_name)

    @app.function(timeout_s=60, retries=Retries(max_retries=1, initial_delay=0.2))
    @apothic.batched(max_batch_size=2, wait_ms=5000)
    def wrong(items: list[str]) -> list[str]:
        if "short" in items:
            return items[:-1]
        return "not a list"  # type: ignore[return-value]

    @app.function(timeout_s=60, retries=Retries(max_retries=1, initial_delay=0.2))
    @apothic.batched(max_batch_size=2, wait_ms=5000)
    def flaky(items: list[str]) -> list[str]:
        if not failed_once.exists():
            failed_once.write_text(",".join(items))
            raise ConnectionError(f"upstream down for {len(items)} inputs")
        return [i.upper() for i in items]

    app.deploy()
    short = [wrong.spawn(x) for x in ("short", "x")]
    for job in short:
        with pytest.raises(apothic.RemoteError, match=r"returned a list of 1 result\(s\) for a batch of 2 input\(s\)"):
            job.wait(timeout_s=60)
        assert job_info(os.environ["APOTHIC_TEMPORAL_ADDRESS"], job.job_id).attempts[0].kind == "final"
    other = [wrong.spawn(x) for x in ("y", "z")]
    for job in other:
        with pytest.raises(apothic.RemoteError, match=r"returned str for a batch of 2 input\(s\); it must return a list"):
            job.wait(timeout_s=60)

    jobs = [flaky.spawn(x) for x in ("p", "q")]
    assert [j.wait(timeout_s=60) for j in jobs] == ["P", "Q"]
    assert sorted(failed_once.read_text().split(",")) == ["p", "q"]  # one call, both inputs
    for job in jobs:  # each failed with the call's exception and was retried by its own policy
        attempts = job_info(os.environ["APOTHIC_TEMPORAL_ADDRESS"], job.job_id).attempts
        assert [(a.kind, a.reason) for a in attempts] == [
            ("user", "ConnectionError: upstream down for 2 inputs")
        ]


def test_cancelling_one_input_of_a_running_batch_leaves_the_others(app_name: str, tmp_path: Path) -> None:
    log = tmp_path / "calls"
    app = App(app_name)

    @app.function(timeout_s=60)
    @apothic.batched(max_batch_size=3, wait_ms=5000)
    def slow(items: list[str]) -> list[str]:
        record(log, pid=os.getpid(), items=items, start=time.time())
        time.sleep(4)
        record(log, pid=os.getpid(), items=items, end=time.time())
        return [i.upper() for i in items]

    app.deploy()
    jobs = {x: slow.spawn(x) for x in ("victim", "first", "second")}
    wait_until(lambda: len(calls(log)) == 1, timeout=90, what="the batch to start")
    assert sorted(calls(log)[0]["items"]) == ["first", "second", "victim"]
    jobs["victim"].cancel()
    cancelled_at = time.time()
    assert jobs["victim"].status() is JobStatus.CANCELLED
    assert jobs["first"].wait(timeout_s=60) == "FIRST" and jobs["second"].wait(timeout_s=60) == "SECOND"
    start, end = calls(log)
    assert start["start"] < cancelled_at < end["end"]  # the call went on after the cancel


def test_a_container_lost_mid_batch_reruns_each_input_once(temporal: str, app_name: str, tmp_path: Path) -> None:
    log = tmp_path / "calls"
    app = App(app_name)

    @app.function(timeout_s=60)  # retries=0: a lost container does not count
    @apothic.batched(max_batch_size=3, wait_ms=5000)
    def fragile(items: list[str]) -> list[str]:
        first = not log.exists()
        record(log, pid=os.getpid(), container=os.getppid(), items=items)  # container: its supervisor
        if first:
            time.sleep(60)  # killed here
        return [f"{i} in {os.getpid()}" for i in items]

    app.deploy()
    jobs = [fragile.spawn(x) for x in ("a", "b", "c")]
    wait_until(lambda: len(calls(log)) == 1, timeout=90, what="the batch to start")
    victim = calls(log)[0]
    assert sorted(victim["items"]) == ["a", "b", "c"]
    os.kill(victim["container"], signal.SIGKILL)  # the container: its runtime dies with it
    results = [j.wait(timeout_s=120) for j in jobs]
    assert [r.split(" in ")[0] for r in results] == ["a", "b", "c"]
    assert all(int(r.split(" in ")[1]) != victim["pid"] for r in results)
    reruns = [x for c in calls(log)[1:] for x in c["items"]]
    assert sorted(reruns) == ["a", "b", "c"]  # each rerun once
    for job in jobs:
        attempts = job_info(temporal, job.job_id).attempts
        assert [a.kind for a in attempts] == ["infrastructure"], attempts


def test_a_batch_that_ignores_its_timeout_retires_the_container_and_the_waiting_inputs_rerun(
    temporal: str, app_name: str, tmp_path: Path
) -> None:
    log = tmp_path / "calls"
    app = App(app_name)

    @app.function(timeout_s=2)  # retries=0
    @apothic.batched(max_batch_size=2, wait_ms=0)
    def work(items: list[str]) -> list[int]:
        record(log, pid=os.getpid(), items=items)
        if "stubborn" in items:
            while True:
                try:
                    time.sleep(60)
                except BaseException:  # noqa: BLE001 - deliberately ignores the interruption
                    pass
        return [os.getpid() for _ in items]

    app.deploy()
    stuck = work.spawn("stubborn")
    wait_until(lambda: len(calls(log)) == 1, timeout=90, what="the stubborn batch to start")
    waiting = work.spawn("patient")  # taken by the same container, waits for the batch ahead
    with pytest.raises(apothic.FunctionTimeoutError):
        stuck.wait(timeout_s=60)
    first = calls(log)[0]["pid"]
    assert waiting.wait(timeout_s=120) != first  # rerun on a fresh container
    attempts = job_info(temporal, waiting.job_id).attempts
    assert [a.kind for a in attempts] == ["infrastructure"], attempts
    assert "retired before running the input" in attempts[0].reason
    assert [c["items"] for c in calls(log)] == [["stubborn"], ["patient"]]  # it ran once, on the new one
