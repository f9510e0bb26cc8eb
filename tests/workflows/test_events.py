"""Typed job events and generators, against a real dev server, control worker and containers."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, Interceptor, OutboundInterceptor, QueryWorkflowInput, StartWorkflowUpdateInput
from temporalio.service import RPCError

import apothic
from apothic import App, ControlPlaneClient, JobEvent, JobStatus, Retries

from ..conftest import free_port, start_dev_server, start_worker, stop, wait_until

STREAM_POLL = "__temporal_workflow_stream_poll"  # the stream's long-poll update and its query

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


def stream_offset(job_id: str) -> int:
    """How many events the job's log holds now."""
    from apothic._control._client import get_client
    from apothic._control._loop import run_blocking

    async def query() -> int:
        client = await get_client()
        return await client.get_workflow_handle(job_id).query("__temporal_workflow_stream_offset", result_type=int)

    return run_blocking(query())


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
    # Events go on while nobody watches: wait for two more before reconnecting.
    wait_until(lambda: stream_offset(job.job_id) >= first[-1].seq + 2, timeout=30, what="more events")

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
    events = list(broken.remote_events(snapshot=True))
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
    events = list(slow_gen.remote_events(1, snapshot=True, event_types=["log", "output"]))
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
        types = [e.event async for e in remote.aio.remote_events(2, snapshot=True, event_types=["output", "completed"])]
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


WATCHER: contextvars.ContextVar[str] = contextvars.ContextVar("watcher", default="")


class PollLog(Interceptor):
    """Records how each watcher read a job's stream through this client: every long-poll (an
    update of the job's workflow) and how its start ended (``ok`` or the RPC status the server
    refused it with), and every read by query of the running job (the fallback; a read of a
    closed job names its run, the fallback does not)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, float]] = []  # (watcher, "poll" | "query", outcome, time)

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        log = self

        class Recording(OutboundInterceptor):
            async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> Any:
                if input.update != STREAM_POLL:
                    return await super().start_workflow_update(input)
                try:
                    handle = await super().start_workflow_update(input)
                except RPCError as e:
                    log.calls.append((WATCHER.get(), "poll", e.status.name if e.status else "?", time.time()))
                    raise
                log.calls.append((WATCHER.get(), "poll", "ok", time.time()))
                return handle

            async def query_workflow(self, input: QueryWorkflowInput) -> Any:
                if input.query == STREAM_POLL and not input.run_id:
                    log.calls.append((WATCHER.get(), "query", "ok", time.time()))
                return await super().query_workflow(input)

        return Recording(next)

    def failed_polls(self) -> list[tuple[str, str, float]]:
        return [(who, outcome, at) for who, kind, outcome, at in self.calls if kind == "poll" and outcome != "ok"]

    def refused(self) -> dict[str, str]:
        """Watcher -> the status the server refused its long-poll with for good (a limit;
        after the client's own retries). A poll of a job that has ended fails with NOT_FOUND,
        which is no refusal."""
        out: dict[str, str] = {}
        for who, outcome, _ in self.failed_polls():
            if outcome != "NOT_FOUND":
                out.setdefault(who, outcome)
        return out

    def queried(self, who: str) -> list[float]:
        return [at for w, kind, _, at in self.calls if w == who and kind == "query"]

    def fell_back(self) -> set[str]:
        """Watchers that were refused a long-poll and then read by query."""
        return {w for w in self.refused() if self.queried(w)}


@contextlib.contextmanager
def own_server(tmp_path: Path, dynamic_config: dict[str, Any]) -> Iterator[ControlPlaneClient]:
    """A dev server of this test's own with the given limits, and a control worker for it."""
    port = free_port()
    server = start_dev_server(tmp_path / "temporal.db", port, dynamic_config=dynamic_config)
    env = dict(os.environ, APOTHIC_TEMPORAL_ADDRESS=f"127.0.0.1:{port}", APOTHIC_HOME=str(tmp_path))
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        yield ControlPlaneClient(f"127.0.0.1:{port}")
    finally:
        stop(worker)
        stop(server)


async def watch_with_log(cp: ControlPlaneClient, job_id: str, count: int, log: PollLog,
                         until_fallback: Path | None = None) -> list[list[JobEvent]]:
    """``count`` watchers of the job from its first event, as ``job.aio.watch(snapshot=True)``
    reads it (the same ``stream_events``), through a client that records their reads. With
    ``until_fallback``, that file is created once a watcher has gone over to reading by query."""
    from apothic._control._client import get_client
    from apothic._invoke._watch import stream_events

    base = await get_client(cp.settings)
    client = Client(**{**base.config(), "interceptors": [log]})

    async def one(i: int) -> list[JobEvent]:
        WATCHER.set(f"watcher-{i}")
        return [e async for e in stream_events(client, cp.settings, job_id, 0, None)]

    watchers = [asyncio.ensure_future(one(i)) for i in range(count)]
    if until_fallback is not None:
        deadline = time.monotonic() + 120
        while not log.fell_back() and not any(w.done() for w in watchers) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        until_fallback.write_text("go")
    return list(await asyncio.gather(*watchers))


def closed_at(cp: ControlPlaneClient, job_id: str) -> float:
    from apothic._control._client import get_client
    from apothic._control._loop import run_blocking

    async def describe() -> float:
        client = await get_client(cp.settings)
        desc = await client.get_workflow_handle(job_id).describe()
        assert desc.close_time is not None
        return desc.close_time.timestamp()

    return run_blocking(describe())


def test_more_watchers_than_temporal_admits_polls_all_see_every_event(app_name: str, tmp_path: Path) -> None:
    """Temporal admits a bounded number of blocked long-polls per run (10 by default; 2 on
    this test's own server). A watcher refused for longer than the client's own retries
    (about 10 s) reads by query instead, and every watcher sees every event once."""
    go = tmp_path / "go"
    with own_server(tmp_path, {"history.maxInFlightUpdates": 2}) as cp:
        app = App(app_name, client=cp)

        @app.function(timeout_s=300)
        def ticker(n: int, go_file: str) -> int:
            for i in range(n):
                print(f"tick {i}", flush=True)
                time.sleep(0.3)
                if i == n // 2:  # quiet until the test says: two long-polls stay blocked
                    deadline = time.monotonic() + 150
                    while not os.path.exists(go_file) and time.monotonic() < deadline:
                        time.sleep(0.1)
            return n

        app.deploy()
        job = ticker.spawn(8, str(go))
        log = PollLog()
        results = asyncio.run(watch_with_log(cp, job.job_id, 5, log, until_fallback=go))
        assert job.wait() == 8
        reference = list(job.watch(snapshot=True))
        ended = closed_at(cp, job.job_id)
    assert_gapless(reference)
    assert log_lines(reference) == [f"tick {i}" for i in range(8)]
    for events in results:
        assert same(events, reference)
    # The limit was reached: the server refused a long-poll for good, and that watcher read by
    # query while the job still ran. (Other polls failed only once the job had ended.)
    refused = log.refused()
    assert refused and set(refused.values()) == {"RESOURCE_EXHAUSTED"}, log.calls  # in-flight limit
    assert log.fell_back() == set(refused), log.calls
    assert all(min(log.queried(w)) < ended for w in refused), log.calls
    assert all(outcome == "RESOURCE_EXHAUSTED" or (outcome == "NOT_FOUND" and at >= ended)
               for _, outcome, at in log.failed_polls()), log.calls


def test_a_watcher_refused_by_the_update_limit_goes_on_by_query(app_name: str, tmp_path: Path) -> None:
    """Temporal admits a bounded number of updates per run (2,000 by default; 4 on this test's
    own server): once a job refuses the long-poll, its watcher reads the rest by query."""
    with own_server(tmp_path, {"history.maxTotalUpdates": 4}) as cp:
        app = App(app_name, client=cp)

        @app.function(timeout_s=300)
        def ticker(go_file: str) -> int:
            i = 0
            while not os.path.exists(go_file) and i < 300:  # new lines (new polls) until the test says
                print(f"tick {i}", flush=True)
                time.sleep(0.4)
                i += 1
            print(f"tick {i}", flush=True)  # and one more after the watcher fell back
            return i + 1

        app.deploy()
        go = tmp_path / "go"
        job = ticker.spawn(str(go))
        log = PollLog()
        (live,) = asyncio.run(watch_with_log(cp, job.job_id, 1, log, until_fallback=go))
        n = job.wait()
        assert_gapless(live)
        assert live[-1].event == "completed"
        assert log_lines(live) == [f"tick {i}" for i in range(n)]
        assert same(live, list(job.watch(snapshot=True)))  # a closed job is read by query alone
        ended = closed_at(cp, job.job_id)
    polls = [outcome for _, kind, outcome, _ in log.calls if kind == "poll"]
    # Four long-polls were admitted, the fifth refused (the total limit); the rest came by
    # query, the first of them while the job still ran.
    assert polls == ["ok"] * 4 + ["FAILED_PRECONDITION"], log.calls
    assert log.fell_back() == {"watcher-0"} and min(log.queried("watcher-0")) < ended, log.calls


def test_remote_events_snapshot_says_where_the_events_start(app_name: str) -> None:
    """snapshot=True: every event from `queued` (seq 1); snapshot=False: from where the watch
    attaches to the new job, which is always after `queued`, to the terminal event."""
    app = App(app_name)

    @app.function()
    def greet(name: str) -> str:
        print(f"hello {name}", flush=True)
        time.sleep(0.6)
        return name

    app.deploy()
    for attempt in range(2):  # the first call starts a container; the second finds it warm
        full = list(greet.remote_events(f"full-{attempt}", snapshot=True))
        assert full[0].event == "queued" and full[0].seq == 1, kinds(full)
        assert_gapless(full)
        assert full[-1].event == "completed" and f"hello full-{attempt}" in log_lines(full)

        live = list(greet.remote_events(f"live-{attempt}"))
        assert "queued" not in kinds(live) and live[0].seq > 1, kinds(live)
        assert live[-1].event == "completed"
        assert_gapless(live, start=live[0].seq)
        # What it yielded is the tail of the job's log, from where it attached.
        everything = list(apothic.Job.from_id(live[0].job_id).watch(snapshot=True))
        assert same(everything[live[0].seq - 1:], live)
    with pytest.raises(apothic.InvalidError, match=r"remote_events\(snapshot=1\): allowed: True"):
        list(greet.remote_events("x", snapshot=1))  # type: ignore[arg-type]
