"""map, starmap, for_each and spawn_map against a real server, worker and containers."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from temporalio.client import Client

import apothic
from apothic import App, Retries
from apothic._contracts import MapProgress
from apothic._control._client import get_client
from apothic._control._loop import run_blocking

from ..conftest import free_port, wait_until

pytestmark = pytest.mark.usefixtures("control_worker")


class OddError(Exception):
    pass


def test_map_family_results_in_input_order(app_name: str, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    app = App(app_name)

    @app.function(max_containers=2)
    def square(x: int) -> int:
        return x * x

    @app.function()
    def add(a: int, b: int) -> int:
        return a + b

    @app.function()
    def record(x: int) -> None:
        with open(seen, "a") as f:
            f.write(f"{x}\n")

    app.deploy()
    assert square.map(range(300)) == [x * x for x in range(300)]
    assert square.map(iter([3, 1, 2])) == [9, 1, 4]  # any iterable, no len()
    assert add.starmap([(1, 2), (3, 4), (5, 6)]) == [3, 7, 11]
    assert record.for_each(range(5)) is None
    assert sorted(int(x) for x in seen.read_text().split()) == [0, 1, 2, 3, 4]
    assert square.map([]) == [] and add.starmap(iter(())) == []
    # An empty input returns at once, without asking the server: here nothing listens at all.
    nowhere = f"127.0.0.1:{free_port()}"
    assert apothic.RemoteFunction.from_name(app_name, "square", base_url=nowhere).map([]) == []
    assert apothic.RemoteFunction.from_name(app_name, "add", base_url=nowhere).starmap(iter(())) == []
    assert apothic.RemoteFunction.from_name(app_name, "record", base_url=nowhere).for_each([]) is None
    jobs = square.spawn_map([4, 5, 6])
    assert [j.wait() for j in jobs] == [16, 25, 36]
    with pytest.raises(apothic.InvalidError, match="starmap"):
        add.starmap([1, 2])


def test_failures_and_return_exceptions(app_name: str) -> None:
    app = App(app_name)

    @app.function()
    def check(x: int) -> int:
        if x % 2:
            raise OddError(f"odd {x}")
        return x

    app.deploy()
    with pytest.raises(OddError, match="odd 1"):
        check.map(range(10))
    out = check.map(range(6), return_exceptions=True)
    assert [v for v in out if not isinstance(v, Exception)] == [0, 2, 4]
    errors = [v for v in out if isinstance(v, Exception)]
    assert [type(e) for e in errors] == [OddError] * 3 and str(errors[1]) == "odd 3"

    def broken():
        yield 2
        yield 4
        raise KeyError("the input iterator broke")

    with pytest.raises(KeyError, match="the input iterator broke"):
        check.map(broken())


def test_inputs_retry_by_their_own_policy(app_name: str, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    app = App(app_name)

    @app.function(retries=Retries(max_retries=2, initial_delay=0.2), max_containers=2)
    def flaky(x: int) -> int:
        mark = marks / str(x)
        count = int(mark.read_text()) if mark.exists() else 0
        mark.write_text(str(count + 1))
        if x % 3 == 0 and count < 2:
            raise ConnectionError("try again")
        return x

    app.deploy()
    assert flaky.map(range(30)) == list(range(30))
    assert int((marks / "3").read_text()) == 3 and int((marks / "4").read_text()) == 1


async def test_async_map_and_progress(temporal: str, app_name: str) -> None:
    app = App(app_name)

    @app.function()
    def slow(x: int) -> int:
        time.sleep(0.05)
        return x

    await app.aio.deploy()

    async def results() -> list[int]:  # `fn.map.aio` (and `fn.aio.map`) yields the results in input order
        return [r async for r in slow.map.aio(range(60))]

    task = asyncio.ensure_future(results())
    client = await Client.connect(temporal)
    progress: MapProgress | None = None
    for _ in range(200):
        await asyncio.sleep(0.1)
        maps = [wf async for wf in client.list_workflows(f"WorkflowType='MapWorkflow' AND ApothicApp='{app_name}'")]
        if maps:
            try:
                progress = await client.get_workflow_handle(maps[0].id).query("progress", result_type=MapProgress)
            except Exception:  # noqa: BLE001 - not yet queryable
                continue
            if progress.done > 0:
                break
    assert await task == list(range(60))
    assert progress is not None and progress.fed == 60 and progress.final and 0 < progress.done <= 60


def test_caller_timeout_cancels_the_map(app_name: str) -> None:
    app = App(app_name)

    @app.function()
    def nap(x: int) -> int:
        time.sleep(30)
        return x

    app.deploy()
    with pytest.raises(apothic.CallTimeoutError):
        nap.map(range(4), timeout_s=3)

    async def statuses() -> list[str]:
        client = await get_client()
        query = f"WorkflowType='MapWorkflow' AND ApothicApp='{app_name}'"
        return [wf.status.name async for wf in client.list_workflows(query)]

    # The map itself was cancelled (its inputs sleep 30 s: it would otherwise still run).
    wait_until(lambda: run_blocking(statuses()) == ["CANCELED"], timeout=25, what="the map to be cancelled")


@pytest.mark.slow
def test_twenty_thousand_inputs_continue_as_new(temporal: str, app_name: str) -> None:
    app = App(app_name)

    @app.function(max_containers=2)
    def ident(x: int) -> int:
        return x

    app.deploy()
    assert ident.map(range(20_000)) == list(range(20_000))

    async def runs() -> int:
        client = await Client.connect(temporal)
        found = [wf async for wf in client.list_workflows(f"WorkflowType='MapWorkflow' AND ApothicApp='{app_name}'")]
        return len(found)

    # Several runs of one workflow id (continue-as-new), none near the history limits.
    assert asyncio.run(runs()) >= 2


def test_a_batch_of_failures_that_printed_a_lot_still_comes_back(app_name: str) -> None:
    """32 failing inputs with 300 KB of output each would make one batch's output about
    10 MB, over Temporal's payload limit: their details are cut to fit, the errors remain."""
    app = App(app_name)

    @app.function(timeout_s=120)
    def noisy(i: int) -> int:
        print("x" * 300_000)
        raise ValueError(f"input {i} failed")

    app.deploy()
    out = noisy.map(range(32), return_exceptions=True, timeout_s=600)
    assert len(out) == 32
    assert all(isinstance(e, ValueError) and str(e) == f"input {i} failed" for i, e in enumerate(out)), out[:2]


def _kill_container(container_id: str) -> int:
    """SIGKILL every process of one function container (its supervisor first): the container is
    lost as when its host dies. Returns how many processes there were."""
    marker = f"APOTHIC_CONTAINER_ID={container_id}".encode()
    procs = []
    for entry in Path("/proc").iterdir():
        try:
            env = (entry / "environ").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:  # gone meanwhile, or not ours to read
            env = []
        if marker in env:
            procs.append((any(e.startswith(b"APOTHIC_TASK_INDEX=") for e in env), int(entry.name)))
    for _, pid in sorted(procs):  # the supervisor (no task index) before its runtimes
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(procs)


def test_a_container_lost_mid_map_reruns_only_what_its_heartbeats_had_not_told(app_name: str, tmp_path: Path) -> None:
    """Each heartbeat of a batch carries the results finished so far: a batch lost with its
    container reruns the input it was running and those finished since its last heartbeat
    reached the server (one a second), not the whole batch."""
    ran = tmp_path / "ran"
    app = App(app_name)

    @app.function(max_containers=2, timeout_s=60)
    def step(n: int) -> int:
        with open(ran, "a") as f:
            f.write(f"{n} {os.environ['APOTHIC_CONTAINER_ID']}\n")
        time.sleep(0.4)
        return n

    def lines() -> list[tuple[int, str]]:
        return [(int(n), c) for n, c in (line.split() for line in ran.read_text().splitlines())] if ran.exists() else []

    app.deploy()
    out: list[list[int]] = []
    mapping = threading.Thread(target=lambda: out.append(step.map(range(120), timeout_s=600)), daemon=True)
    mapping.start()
    wait_until(lambda: len({c for _, c in lines()}) == 2 and len(lines()) >= 24, timeout=120,
               what="both containers to run inputs of the map")
    victim = lines()[-1][1]
    assert _kill_container(victim) >= 1
    mapping.join(300)
    assert out == [list(range(120))]
    first: dict[int, str] = {}
    for n, c in lines():
        first.setdefault(n, c)
    again = sorted(n for n, k in collections.Counter(n for n, _ in lines()).items() if k > 1)
    print(f"\ncontainer lost mid-map: {len(lines())} runs of 120 inputs, {len(again)} ran twice {again}")
    assert all(first[n] == victim for n in again)
    # The input it was running and at most the three finished within its last second (0.4 s each).
    assert len(again) <= 4, again


def test_a_map_waiting_for_slow_results_long_polls_the_workflow(app_name: str, temporal: str) -> None:
    """While no result is in, the client waits in the map (update ``wait_results``) rather than
    polling: a result reaches it as the workflow stores it, and the waits it leaves in the
    history are few (about one per result that kept it waiting), not one per 200 ms."""
    app = App(app_name)

    @app.function(max_containers=1)
    def slow(x: int) -> int:
        time.sleep(1.5)
        return x

    app.deploy()
    assert slow.map(range(3)) == [0, 1, 2]

    async def waits() -> tuple[int, int]:
        client = await Client.connect(temporal)
        (wf,) = [wf async for wf in client.list_workflows(f"WorkflowType='MapWorkflow' AND ApothicApp='{app_name}'")]
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        accepted = [e for e in history.events if e.HasField("workflow_execution_update_accepted_event_attributes")]
        names = [e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name for e in accepted]
        return names.count("wait_results"), len(history.events)

    long_polls, events = run_blocking(waits())
    # Three results 1.5 s apart, and the cold start before the first: a few waits, each a
    # result (a poll every 20 to 200 ms would have asked ~25 times; queries leave no events).
    assert 1 <= long_polls <= 8, (long_polls, events)
