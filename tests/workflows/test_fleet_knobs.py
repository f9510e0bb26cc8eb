"""The fleet's knobs against a real server, worker and container processes: ``max_containers``
under a burst, ``tasks_per_container`` processes (and their GPUs), ``max_pending_tasks``."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

import apothic
from apothic import App
from apothic._contracts import (
    FLEET_PENDING_MEMO_KEY,
    FleetPending,
    FleetStatus,
    deployment_task_queue,
    fleet_workflow_id,
)

from ..conftest import wait_until


def processes_of(app: str) -> dict[str, list[dict[str, str]]]:
    """Container id -> the environment of each live process of that container of ``app``
    (the runtime, or a supervisor and its runtimes), read from /proc."""
    marker = f"APOTHIC_APP={app}".encode()
    found: dict[str, list[dict[str, str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if marker not in raw.split(b"\0") or ") Z" in stat:
            continue
        env = dict(item.decode("utf-8", "replace").partition("=")[::2] for item in raw.split(b"\0") if b"=" in item)
        env["pid"] = entry.name
        if env.get("APOTHIC_CONTAINER_ID"):
            found.setdefault(env["APOTHIC_CONTAINER_ID"], []).append(env)
    return found


async def _client(address: str) -> Client:
    return await Client.connect(address)


def fleet_status(address: str, app: str, fn: str) -> FleetStatus:
    async def query() -> FleetStatus:
        handle = (await _client(address)).get_workflow_handle(fleet_workflow_id(app, fn, 1))
        return await handle.query("status", result_type=FleetStatus)

    return asyncio.run(query())


def fleet_memo(address: str, app: str, fn: str) -> FleetPending:
    async def read() -> FleetPending:
        try:
            desc = await (await _client(address)).get_workflow_handle(fleet_workflow_id(app, fn, 1)).describe()
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:  # not started yet
                return FleetPending()
            raise
        return await desc.memo_value(FLEET_PENDING_MEMO_KEY, FleetPending(), type_hint=FleetPending)

    return asyncio.run(read())


def fleet_run_status(address: str, app: str, fn: str) -> WorkflowExecutionStatus | None:
    async def read() -> WorkflowExecutionStatus | None:
        return (await (await _client(address)).get_workflow_handle(fleet_workflow_id(app, fn, 1)).describe()).status

    return asyncio.run(read())


class Sampler:
    """Calls ``probe`` every 0.1 s in a thread until stopped; keeps what it returned."""

    def __init__(self, probe: Callable[[], object]) -> None:
        self.probe = probe
        self.samples: list[object] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.probe())
            except Exception as e:  # noqa: BLE001 - a probe may race a workflow's end; kept for the assert
                self.errors.append(e)
            self._stop.wait(0.1)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_the_knobs_are_accepted_and_checked_at_decoration() -> None:
    app = App("knobs-checked")

    @app.function(tasks_per_container=8, max_pending_tasks=5, max_containers=4)
    def ok(x: int) -> int:
        return x

    spec = app._spec(ok)  # what the deploy sends
    assert (spec.tasks_per_container, spec.max_pending_tasks, spec.max_containers) == (8, 5, 4)
    for bad, allowed in (({"tasks_per_container": 65}, "<= 64"), ({"tasks_per_container": 0}, ">= 1"),
                         ({"max_pending_tasks": 0}, ">= 1")):
        with pytest.raises(apothic.InvalidError) as info:

            @app.function(**bad)
            def f(x: int) -> int:
                return x

        assert not isinstance(info.value, apothic.NotSupportedError)
        text = str(info.value)
        name, value = next(iter(bad.items()))
        assert f"{name} = {value}" in text and allowed in text and "Fix:" in text, text


@pytest.mark.usefixtures("control_worker")
def test_a_burst_never_exceeds_max_containers_scales_out_and_drains_to_zero(temporal: str, app_name: str) -> None:
    app = App(app_name)

    @app.function(max_containers=3)
    def work(x: int) -> str:
        time.sleep(1.0)
        return os.environ["APOTHIC_CONTAINER_ID"]

    app.deploy()
    with Sampler(lambda: len(processes_of(app_name))) as alive:
        jobs = [work.spawn(i) for i in range(12)]
        served = [job.wait(timeout_s=120) for job in jobs]
    assert alive.samples and not alive.errors
    # Never more than max_containers container processes at once, and the burst used them all.
    assert max(alive.samples) == 3, alive.samples
    assert len(set(served)) == 3
    # After the idle window (4 s in tests) every container drains and the fleet ends.
    wait_until(lambda: not processes_of(app_name), timeout=60, what="the containers to drain")
    wait_until(
        lambda: fleet_run_status(temporal, app_name, "work") == WorkflowExecutionStatus.COMPLETED,
        timeout=30, what="the fleet to end",
    )


@pytest.mark.usefixtures("control_worker")
def test_tasks_per_container_runs_that_many_runtimes_and_the_fleet_counts_them(temporal: str, app_name: str) -> None:
    app = App(app_name)

    @app.function(tasks_per_container=2, max_containers=2)
    def where(x: int) -> tuple[str, int, str, float, float]:
        start = time.time()
        time.sleep(2.0)
        return os.environ["APOTHIC_CONTAINER_ID"], os.getpid(), os.environ.get("APOTHIC_TASK_INDEX", ""), start, time.time()

    app.deploy()
    with Sampler(lambda: processes_of(app_name)) as seen:
        jobs = [where.spawn(i) for i in range(2)]
        out = [job.wait(timeout_s=120) for job in jobs]
    # One container (2 inputs fill its 2 task slots: the fleet starts no second one) ran both
    # inputs side by side, in two different runtime processes.
    assert {o[0] for o in out} == {out[0][0]}
    assert out[0][1] != out[1][1] and {out[0][2], out[1][2]} == {"0", "1"}
    assert max(out[0][3], out[1][3]) < min(out[0][4], out[1][4]), "the two inputs did not overlap"
    assert all(set(sample) <= {out[0][0]} for sample in seen.samples)
    procs = processes_of(app_name)[out[0][0]]
    tasks = sorted(p.get("APOTHIC_TASK_INDEX", "supervisor") for p in procs)
    assert tasks == ["0", "1", "supervisor"]
    status = fleet_status(temporal, app_name, "where")
    assert status.slots_per_container == 2 and len(status.containers) == 1


def _container_env(temporal: str, app: str, fn: str, container_id: str) -> dict[str, str]:
    """What run_container gives a container of ``app.fn`` v1, without a ContainerWorkflow."""
    from apothic._control._config import load_settings

    env = load_settings().connection_env()
    env.update(
        APOTHIC_APP=app, APOTHIC_FUNCTION=fn, APOTHIC_VERSION="1", APOTHIC_TASK_QUEUE=deployment_task_queue(app, fn, 1),
        APOTHIC_CONCURRENCY="1", APOTHIC_IDLE_S="120", APOTHIC_TEMPORAL_ADDRESS=temporal,
        APOTHIC_CONTAINER_ID=container_id,
    )
    return env


@pytest.mark.usefixtures("control_worker")
@pytest.mark.parametrize(
    ("gpus", "expected"),
    [({"CUDA_VISIBLE_DEVICES": "2,5"}, ["2", "5"]), ({"APOTHIC_GPUS": "4"}, ["0,1", "2,3"]), ({}, [None, None])],
    ids=["visible-devices", "gpu-count", "no-gpus"],
)
def test_each_task_of_a_container_gets_its_own_gpus(
    temporal: str, app_name: str, tmp_path: Path, gpus: dict[str, str], expected: list[str | None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 2-task container on the process provider with a multi-GPU environment (this host may
    have no GPU: the split is checked in the environment of each runtime process)."""
    from apothic.placement.providers import ProcessProvider

    app = App(app_name)

    @app.function(tasks_per_container=2)
    def f() -> str:
        return os.environ.get("CUDA_VISIBLE_DEVICES", "")

    app.deploy()
    container_id = f"c-{uuid.uuid4().hex[:12]}"
    provider = ProcessProvider(tmp_path)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # a process container inherits this one's
    env = {**_container_env(temporal, app_name, "f", container_id), "APOTHIC_TASKS_PER_CONTAINER": "2", **gpus}
    started = asyncio.run(provider.start(container_id, env))
    handle = provider.adopt(container_id, started.pid)  # watched by pid from here (a new event loop each step)
    assert handle is not None
    try:
        log = tmp_path / f"{container_id}.log"
        wait_until(lambda: log.read_text().count("serving") == 2, timeout=60, what="both runtimes to serve")
        procs = processes_of(app_name)[container_id]
        tasks = {p["APOTHIC_TASK_INDEX"]: p for p in procs if "APOTHIC_TASK_INDEX" in p}
        assert sorted(tasks) == ["0", "1"] and len(procs) == 3
        assert [tasks[i].get("CUDA_VISIBLE_DEVICES") for i in ("0", "1")] == expected
        # A task that dies fails its container: the other drains, the supervisor exits with
        # the task's code (128 + SIGKILL) and leaves it in its status file.
        os.kill(int(tasks["0"]["pid"]), signal.SIGKILL)
        code = asyncio.run(provider.wait(handle, 60))
        assert code == 128 + signal.SIGKILL
        assert provider.exit_status(container_id) == 128 + signal.SIGKILL
        wait_until(lambda: container_id not in processes_of(app_name), timeout=30, what="the other task to end")
    finally:
        provider.release(container_id)


@pytest.mark.usefixtures("control_worker")
def test_a_spawn_past_max_pending_tasks_fails_at_once_while_maps_wait_for_room(temporal: str, app_name: str) -> None:
    app = App(app_name)

    @app.function(max_containers=1, max_pending_tasks=2)
    def nap(s: float) -> float:
        time.sleep(s)
        return s

    app.deploy()
    keyed = nap.spawn(60, idempotency_key="first")
    held = [keyed, nap.spawn(60), nap.spawn(60)]  # one runs, two wait: the limit
    wait_until(lambda: fleet_memo(temporal, app_name, "nap").full, timeout=60, what="the fleet to count 2 waiting")
    started = time.monotonic()
    with pytest.raises(apothic.PendingLimitError) as info:
        nap.spawn(0)
    assert time.monotonic() - started < 2.0
    text = str(info.value)
    assert "max_pending_tasks=2" in text and "max_containers=1" in text and "map" in text and "Fix:" in text
    assert (info.value.limit, info.value.waiting) == (2, 2)
    with pytest.raises(apothic.PendingLimitError):
        nap.remote(0)
    # The same idempotency key still finds its job.
    assert nap.spawn(60, idempotency_key="first").job_id == keyed.job_id
    for job in held:
        job.cancel(wait_s=30)
    wait_until(lambda: not fleet_memo(temporal, app_name, "nap").full, timeout=30, what="the queue to reopen")

    # Many more inputs than the limit: a map and a spawn_map wait for room, never fail, and
    # never have more than max_pending_tasks waiting beyond the one slot.
    with Sampler(lambda: fleet_status(temporal, app_name, "nap")) as fleet:
        assert nap.map([0.05] * 40) == [0.05] * 40
        jobs = nap.spawn_map([0.2] * 10)
        assert [job.wait(timeout_s=120) for job in jobs] == [0.2] * 10
    statuses = [s for s in fleet.samples if isinstance(s, FleetStatus)]
    assert statuses
    assert max(s.waiting for s in statuses) <= 2
    assert max(s.demand for s in statuses) <= 3


@pytest.mark.usefixtures("control_worker")
def test_a_docker_container_runs_its_tasks_side_by_side(app_name: str) -> None:
    """The container's entrypoint (``python -m apothic.runtime``) starts the tasks: an image
    with a shell step runs on the docker provider (needs the engine; fails, never skips)."""
    import sys

    image = apothic.Image.debian_slim(python_version=f"{sys.version_info.major}.{sys.version_info.minor}").run_commands(
        "echo tasks > /etc/apothic-tasks-marker"
    )
    app = App(app_name)

    @app.function(image=image, tasks_per_container=2, timeout_s=120)
    def where(x: int) -> tuple[str, int, str, bool, float, float]:
        start = time.time()
        time.sleep(2.0)
        return (os.environ["APOTHIC_CONTAINER_ID"], os.getpid(), os.environ.get("APOTHIC_TASK_INDEX", ""),
                os.path.exists("/.dockerenv"), start, time.time())

    app.deploy()
    jobs = [where.spawn(i) for i in range(2)]
    out = [job.wait(timeout_s=600) for job in jobs]
    assert all(o[3] for o in out), "not in a Docker container"
    assert out[0][0] == out[1][0] and out[0][1] != out[1][1] and {out[0][2], out[1][2]} == {"0", "1"}
    assert max(out[0][4], out[1][4]) < min(out[0][5], out[1][5]), "the two inputs did not overlap"
    procs = processes_of(app_name)[out[0][0]]
    # Under the engine's init process: the supervisor and its two runtimes.
    pythons = [p for p in procs if "python" in _program(p["pid"])]
    assert sorted(p.get("APOTHIC_TASK_INDEX", "supervisor") for p in pythons) == ["0", "1", "supervisor"]


def _program(pid: str) -> str:
    """The file name of the program a process runs (its argv[0])."""
    try:
        return os.path.basename(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode("utf-8", "replace"))
    except OSError:
        return ""
