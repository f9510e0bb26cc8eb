"""Typed job events and generators, against a real dev server, control worker and containers."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path

import pytest

import apothic
from apothic import App, ControlPlaneClient, JobEvent, JobStatus, Retries

from ..conftest import free_port, start_dev_server, start_worker, stop, wait_until

pytestmark = pytest.mark.usefixtures("control_worker")


def kinds(events: list[JobEvent]) -> list[str]:
    return [e.event for e in events]


def log_lines(events: list[JobEvent]) -> list[str]:
    return [line for e in events if e.event == "log" for line in e.data["lines"]]


def same(a: list[JobEvent], b: list[JobEvent]) -> bool:
    """Equal events. Container-side steps are compared without their time: the fleet sends
    them without a time of their own (JobEventIn.at), and the job's workflow time at a signal
    can differ between the live run and a replay of its history."""
    from apothic._contracts import CONTAINER_EVENT_TYPES

    def key(e: JobEvent) -> JobEvent:
        return dataclasses.replace(e, timestamp=e.timestamp.min) if e.event in CONTAINER_EVENT_TYPES else e

    return [key(e) for e in a] == [key(e) for e in b]


def assert_gapless(events: list[JobEvent], start: int = 1) -> None:
    assert [e.seq for e in events] == list(range(start, start + len(events))), [(e.seq, e.event) for e in events]
    assert all(a.timestamp <= b.timestamp for a, b in zip(events, events[1:]))


def test_events_of_a_job_that_logs_retries_and_completes(app_name: str, tmp_path: Path) -> None:
    marker = tmp_path / "failed-once"
    app = App(app_name)

    @app.function(retries=Retries(max_retries=1, initial_delay=0.5))
    def flaky(n: int) -> int:
        for i in range(n):
            print(f"line {i}")
            time.sleep(0.3)
        if not marker.exists():
            marker.write_text("x")
            raise ConnectionError("upstream down")
        return n

    app.deploy()
    job = flaky.spawn(3)
    live = list(job.watch(snapshot=True))  # connected while the job runs
    assert job.wait() == 3

    assert_gapless(live)
    assert live[0].event == "queued" and live[0].data["function"] == "flaky"
    assert live[-1].event == "completed" and live[-1].data["attempt"] == 2
    assert all(e.job_id == job.job_id for e in live)
    types = kinds(live)
    assert types.count("started") == 2 and types.count("retry") == 1 and types.count("completed") == 1
    assert types.index("started") < types.index("log") < types.index("retry")
    retry = live[types.index("retry")]
    assert retry.data["kind"] == "user" and "ConnectionError: upstream down" in retry.data["reason"]
    assert retry.data["retry_in_s"] == 0.5
    # Each attempt's lines, in order, each once.
    assert log_lines(live) == [f"line {i}" for i in range(3)] * 2
    started = [e for e in live if e.event == "started"]
    assert [e.data["attempt"] for e in started] == [1, 2] and started[0].data["container_id"]

    # A watcher that connects after the end replays the same events; without snapshot it
    # gets the terminal event only.
    assert same(list(job.watch(snapshot=True)), live)
    assert same(list(job.watch()), [live[-1]])
    assert [e.event for e in job.watch(snapshot=True, event_types=["retry", "completed"])] == ["retry", "completed"]
    assert_replays(job.job_id)


def assert_replays(workflow_id: str) -> None:
    """The history (runtime signals, watchers' poll updates) replays on the current code."""
    from apothic.workflows import ALL_WORKFLOWS
    from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

    from apothic._control._client import get_client
    from apothic._control._loop import run_blocking

    async def replay() -> None:
        client = await get_client()
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        assert any(e.HasField("workflow_execution_update_completed_event_attributes") for e in history.events)
        replayer = Replayer(workflows=ALL_WORKFLOWS, workflow_runner=UnsandboxedWorkflowRunner())
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, result.replay_failure

    run_blocking(replay())


def test_a_watcher_reconnects_from_its_last_seq(app_name: str) -> None:
    app = App(app_name)

    @app.function()
    def chatty(n: int) -> str:
        for i in range(n):
            print(f"tick {i}", flush=True)
            time.sleep(0.25)
        return "done"

    app.deploy()
    job = chatty.spawn(12)
    first: list[JobEvent] = []
    watch = job.watch(snapshot=True)
    for event in watch:
        first.append(event)
        if event.event == "log":
            break
    watch.close()  # disconnect mid-job
    assert job.status() is not JobStatus.COMPLETED
    time.sleep(1.0)  # events go on while nobody watches

    async def resume() -> list[JobEvent]:
        return [e async for e in job.aio.watch(after_seq=first[-1].seq)]

    rest = asyncio.run(resume())
    everything = first + rest
    assert_gapless(everything)
    assert same(everything, list(job.watch(snapshot=True)))
    assert log_lines(everything) == [f"tick {i}" for i in range(12)]
    assert everything[-1].event == "completed"


def test_failed_and_cancelled_end_with_their_terminal_event(app_name: str) -> None:
    app = App(app_name)

    @app.function()
    def broken() -> None:
        print("about to fail")
        raise KeyError("missing")

    @app.function()
    def sleepy() -> None:
        print("sleeping", flush=True)
        time.sleep(60)

    app.deploy()
    events = list(broken.remote_events())
    assert_gapless(events)
    assert kinds(events)[0] == "queued" and kinds(events)[-1] == "failed"
    assert events[-1].data["type"] == "builtins.KeyError" and "missing" in events[-1].data["message"]
    assert "about to fail" in log_lines(events)
    with pytest.raises(KeyError):
        apothic.Job.from_id(events[-1].job_id).wait()

    job = sleepy.spawn()
    seen: list[JobEvent] = []
    for event in job.watch(snapshot=True):
        seen.append(event)
        if event.event == "log":
            job.cancel(wait_s=0)
    assert_gapless(seen)
    assert seen[-1].event == "cancelled" and kinds(seen).count("cancelled") == 1
    assert same(list(job.watch(snapshot=True)), seen)

    # Filters: only the types asked for (seq keeps its place in the whole log). Leaving
    # remote_events early leaves the job running.
    only: list[JobEvent] = []
    for event in sleepy.remote_events(event_types=["started", "cancelled"]):
        only.append(event)
        if event.event == "started":
            break
    filtered = apothic.Job.from_id(only[0].job_id)
    assert filtered.status() is JobStatus.RUNNING
    filtered.cancel()
    rest = list(filtered.watch(after_seq=only[-1].seq, event_types=["log", "cancelled"]))
    assert kinds(only + rest) == ["started", "log", "cancelled"]
    assert only[0].seq > 1 and rest[0].seq > only[0].seq
    with pytest.raises(apothic.InvalidError, match="allowed"):
        list(job.watch(event_types=["nope"]))
    missing = apothic.Job.from_id("job-00000000000000000000")
    for snapshot in (True, False):
        with pytest.raises(apothic.NotFoundError, match="no job"):
            list(missing.watch(snapshot=snapshot))


def test_remote_gen_yields_items_as_they_are_produced(app_name: str) -> None:
    app = App(app_name)

    @app.function()
    def slow_gen(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            print(f"yielding {i}")
            yield {"i": i}
            time.sleep(3)

    @app.function()
    def plain() -> int:
        return 1

    app.deploy()
    started = time.monotonic()
    stamps: list[float] = []
    items = []
    for item in slow_gen.remote_gen(2):
        stamps.append(time.monotonic())
        items.append(item)
    ended = time.monotonic()
    assert items == [{"i": 0}, {"i": 1}]
    # The first item arrives while the generator still runs (it sleeps 3 s after each yield).
    assert ended - stamps[0] > 5.0, (started, stamps, ended)
    assert stamps[1] - stamps[0] > 2.5

    # Outputs are events too, each after the lines printed before its yield.
    events = list(slow_gen.remote_events(1, event_types=["log", "output"]))
    assert kinds(events) == ["log", "output"] and events[1].data["value"] == {"i": 0}
    assert events[0].data["lines"] == ["yielding 0"]
    assert_replays(events[0].job_id)

    with pytest.raises(apothic.InvalidError, match="generator function"):
        slow_gen.remote(1)
    with pytest.raises(apothic.InvalidError, match="not a generator"):
        list(plain.remote_gen())


def test_async_generators_errors_and_aio_twins(app_name: str, tmp_path: Path) -> None:
    marker = tmp_path / "attempt-1"
    app = App(app_name)

    @app.function()
    async def countdown(n: int):  # type: ignore[no-untyped-def]
        for i in range(n, 0, -1):
            await asyncio.sleep(0.05)
            yield i

    @app.function()
    def breaks_after(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield i
        raise ValueError(f"stopped after {n}")

    @app.function(retries=1)
    def resumes():  # type: ignore[no-untyped-def]
        first = not marker.exists()
        marker.write_text("x")
        for i in range(5):
            if first and i == 3:
                raise ConnectionError("lost it")
            yield (i, "first" if first else "second")

    app.deploy()
    assert list(countdown.remote_gen(3)) == [3, 2, 1]

    async def run() -> tuple[list[int], list[str], list[str]]:
        items = [x async for x in countdown.aio.remote_gen(4)]
        remote = apothic.RemoteFunction.from_name(app_name, "countdown")
        types = [e.event async for e in remote.aio.remote_events(2, event_types=["output", "completed"])]
        job = await countdown.aio.spawn(1)
        watched = [e.event async for e in job.aio.watch(snapshot=True)]
        return items, types, watched

    items, types, watched = asyncio.run(run())
    assert items == [4, 3, 2, 1]
    assert types == ["output", "output", "completed"]
    assert watched[0] == "queued" and watched[-1] == "completed" and "output" in watched

    got = []
    with pytest.raises(ValueError, match="stopped after 2") as info:
        for x in breaks_after.remote_gen(2):
            got.append(x)
    assert got == [0, 1]
    assert any("Remote traceback" in note for note in info.value.__notes__)

    # A retried generator starts over; the positions already delivered are skipped.
    assert list(resumes.remote_gen()) == [(0, "first"), (1, "first"), (2, "first"), (3, "second"), (4, "second")]


def test_leaving_remote_gen_early_cancels_its_job(app_name: str) -> None:
    app = App(app_name)

    @app.function()
    def endless():  # type: ignore[no-untyped-def]
        i = 0
        while True:
            yield i
            i += 1
            time.sleep(0.2)

    app.deploy()
    gen = endless.remote_gen()
    assert next(gen) == 0
    gen.close()

    async def statuses() -> list[str]:
        from apothic._control._client import get_client

        client = await get_client()
        query = f"WorkflowType='InvocationWorkflow' AND ApothicApp='{app_name}'"
        return [wf.status.name async for wf in client.list_workflows(query)] if client else []

    from apothic._control._loop import run_blocking

    wait_until(lambda: run_blocking(statuses()) == ["CANCELED"], timeout=30, what="the job to be cancelled")


def test_more_watchers_than_temporal_admits_polls_all_see_every_event(app_name: str) -> None:
    """A job's workflow admits 10 blocked long-polls: more watchers wait their turn, and every
    watcher sees every event once."""
    app = App(app_name)

    @app.function()
    def ticker(n: int) -> int:
        for i in range(n):
            print(f"tick {i}", flush=True)
            time.sleep(0.3)
        return n

    app.deploy()
    job = ticker.spawn(10)

    async def watch_all() -> list[list[JobEvent]]:
        async def one() -> list[JobEvent]:
            return [e async for e in job.aio.watch(snapshot=True)]

        return await asyncio.gather(*(one() for _ in range(14)))

    results = asyncio.run(watch_all())
    reference = list(job.watch(snapshot=True))
    assert_gapless(reference)
    assert log_lines(reference) == [f"tick {i}" for i in range(10)]
    for events in results:
        assert same(events, reference)


def test_a_watcher_refused_by_the_update_limit_goes_on_by_query(app_name: str, tmp_path: Path) -> None:
    """Temporal admits a bounded number of updates per run (2,000 by default; 4 on this test's
    own server): once a job refuses the long-poll, its watcher reads the rest by query."""
    port = free_port()
    server = start_dev_server(tmp_path / "temporal.db", port, dynamic_config={"history.maxTotalUpdates": 4})
    env = dict(os.environ, APOTHIC_TEMPORAL_ADDRESS=f"127.0.0.1:{port}", APOTHIC_HOME=str(tmp_path))
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        app = App(app_name, client=ControlPlaneClient(f"127.0.0.1:{port}"))

        @app.function()
        def ticker(n: int) -> int:
            for i in range(n):
                print(f"tick {i}", flush=True)
                time.sleep(0.4)
            return n

        app.deploy()
        job = ticker.spawn(8)
        live = list(job.watch(snapshot=True))  # more than 4 long-polls: the later ones are refused
        assert_gapless(live)
        assert live[-1].event == "completed"
        assert log_lines(live) == [f"tick {i}" for i in range(8)]
        assert same(live, list(job.watch(snapshot=True)))  # a closed job is read by query alone
    finally:
        stop(worker)
        stop(server)
