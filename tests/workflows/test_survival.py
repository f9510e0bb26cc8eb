"""Chaos: kill real processes (control worker, containers, the Temporal server) mid-run.

Each test has its own dev server and control worker, so it can kill them freely.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import apothic
from apothic import App, JobStatus

from ..conftest import (
    container_pids,
    start_dev_server,
    stop,
    wait_until,
)
from ._cluster import Cluster


def runs(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def ran_twice(path: Path) -> list[int]:
    """The inputs that ran more than once (each run of an input appends it to ``path``)."""
    return sorted(int(n) for n, k in collections.Counter(runs(path)).items() if k > 1)


def in_background(call: Callable[[], Any]) -> Callable[[float], Any]:
    """Start ``call`` on a thread; the returned function waits for its value (or raises its error)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = call()
        except BaseException as e:  # noqa: BLE001 - handed to the waiter
            out["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def wait(timeout: float) -> Any:
        thread.join(timeout)
        assert not thread.is_alive(), f"no result within {timeout:g} s"
        if "error" in out:
            raise out["error"]
        return out["value"]

    return wait


def test_jobs_complete_after_the_control_worker_is_killed(cluster: Cluster, app_name: str, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    app = App(app_name, client=cluster.client)

    @app.function(max_containers=3, timeout_s=120)
    def step(n: int) -> int:
        with open(ran, "a") as f:
            f.write(f"{n}\n")
        time.sleep(15)
        return n * 10

    app.deploy()
    jobs = [step.spawn(n) for n in range(3)]
    wait_until(lambda: len(runs(ran)) == 3, timeout=90, what="three jobs to start")
    assert any(j.status() is JobStatus.RUNNING for j in jobs)
    stop(cluster.worker, sig_kill=True)
    time.sleep(2)
    cluster.worker = cluster.start_worker()
    assert [j.wait(timeout_s=120) for j in jobs] == [0, 10, 20]
    # The containers outlived the worker: no input had to run twice.
    assert sorted(runs(ran)) == ["0", "1", "2"]


def test_a_killed_container_mid_input_reruns_on_a_fresh_one(cluster: Cluster, app_name: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    app = App(app_name, client=cluster.client)

    @app.function(timeout_s=120)  # retries=0: infrastructure failures do not count
    def slow_pid() -> int:
        pid_file.write_text(str(os.getppid()))  # the container: its supervisor, which its runtime dies with
        time.sleep(4)
        return os.getppid()

    app.deploy()
    job = slow_pid.spawn()
    wait_until(lambda: job.status() is JobStatus.RUNNING and pid_file.exists(), timeout=60, what="the job to run")
    first = int(pid_file.read_text())
    os.kill(first, signal.SIGKILL)
    second = job.wait(timeout_s=120)
    assert second != first
    assert first not in container_pids(app_name, supervisors=True)


def test_jobs_and_deployments_survive_a_server_restart(cluster: Cluster, app_name: str) -> None:
    app = App(app_name, client=cluster.client)

    @app.function(timeout_s=120)
    def wait_then(value: str) -> str:
        time.sleep(8)
        return value

    app.deploy()
    job = wait_then.spawn("kept")
    wait_until(lambda: job.status() is JobStatus.RUNNING, timeout=60, what="the job to run")
    cluster.restart_server(down_s=3)
    assert job.wait(timeout_s=120) == "kept"
    fn = apothic.RemoteFunction.from_name(app_name, "wait_then", client=cluster.client)
    assert fn.spawn("again").wait(timeout_s=120) == "again"


def test_a_long_heartbeating_job_carries_on_across_a_worker_restart(
    cluster: Cluster, app_name: str, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    app = App(app_name, client=cluster.client)

    @app.function(timeout_s=300)
    def long_job(seconds: int) -> int:
        with open(ran, "a") as f:
            f.write("start\n")
        done = 0
        for _ in range(seconds):
            time.sleep(1)
            done += 1
            print(f"second {done}", flush=True)
        return done

    app.deploy()
    job = long_job.spawn(40)
    wait_until(lambda: job.status() is JobStatus.RUNNING, timeout=60, what="the job to run")
    time.sleep(5)
    stopping = time.monotonic()
    stop(cluster.worker)  # graceful: SIGTERM
    assert time.monotonic() - stopping < 20, "a worker restart must not wait for running jobs"
    assert job.status() is JobStatus.RUNNING
    cluster.worker = cluster.start_worker()
    assert job.wait(timeout_s=180) == 40
    assert runs(ran) == ["start"]
    assert "second 40" in job.logs()


def test_a_rented_machine_is_adopted_not_rented_again_after_the_worker_is_killed(
    tmp_path: Path, app_name: str, vast_sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APOTHIC_HOME", str(tmp_path))  # this process is of the cluster too (one payload key)
    c = Cluster(tmp_path, VAST_URL=vast_sim.url, VAST_API_KEY=vast_sim.api_key, APOTHIC_VAST_REGISTRY="127.0.0.1:5000")
    try:
        app = App(app_name, client=c.client)

        @app.function(gpu="RTX_3060", max_cost_per_hour_usd=1.5, timeout_s=120)
        def slow() -> str:
            time.sleep(12)
            return os.environ.get("VASTSIM_MARKER", "")

        app.deploy()
        state = vast_sim.state()
        before = {i["id"] for i in state["instances"] + state["destroyed"]}
        job = slow.spawn()
        wait_until(lambda: job.status() is JobStatus.RUNNING, timeout=180, what="the job to run")
        ours = [i for i in vast_sim.state()["instances"] if i["id"] not in before]
        assert len(ours) == 1 and not ours[0]["destroyed"]
        stop(c.worker, sig_kill=True)
        time.sleep(2)
        c.worker = c.start_worker()
        marker = job.wait(timeout_s=300)
        assert int(marker.rsplit(":", 1)[1]) == ours[0]["id"]  # the input finished where it ran
        created = [i for i in vast_sim.state()["instances"] + vast_sim.state()["destroyed"] if i["id"] not in before]
        assert [i["id"] for i in created] == [ours[0]["id"]]  # adopted, not rented twice
        wait_until(lambda: all(i["destroyed"] for i in vast_sim.state()["instances"] if i["id"] not in before),
                   timeout=120, what="the adopted instance to be destroyed after its idle window")
    finally:
        c.close()


def test_a_map_reruns_no_input_after_the_control_worker_is_killed(
    cluster: Cluster, app_name: str, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    app = App(app_name, client=cluster.client)

    @app.function(max_containers=2, timeout_s=60)
    def step(n: int) -> int:
        with open(ran, "a") as f:
            f.write(f"{n}\n")
        time.sleep(0.2)
        return n * 10

    app.deploy()
    result = in_background(lambda: step.map(range(120), timeout_s=600))
    wait_until(lambda: len(runs(ran)) >= 16, timeout=120, what="the map's first inputs")
    stop(cluster.worker, sig_kill=True)
    time.sleep(2)
    cluster.worker = cluster.start_worker()
    assert result(300) == [n * 10 for n in range(120)]
    again = ran_twice(ran)
    print(f"\ncontrol worker killed mid-map: {len(runs(ran))} runs of 120 inputs, {len(again)} ran twice {again}")
    assert again == []  # the containers and the server kept every batch: nothing was lost


def test_a_map_reruns_at_most_its_inputs_in_flight_after_a_server_outage(
    cluster: Cluster, app_name: str, tmp_path: Path
) -> None:
    """The server is killed mid-map and started again on its database 5 s later: longer than the
    batches' heartbeat timeout, so it times out both running batches as soon as it is back. Their
    containers report what they finished meanwhile; only the input each was running runs again."""
    ran = tmp_path / "ran"
    app = App(app_name, client=cluster.client)

    @app.function(max_containers=2, timeout_s=60)
    def step(n: int) -> int:
        with open(ran, "a") as f:
            f.write(f"{n}\n")
        time.sleep(0.4)
        return n * 10

    app.deploy()
    # 120 inputs in four batches of 30 (12 s each), two running at a time (one per container).
    result = in_background(lambda: step.map(range(120), timeout_s=600))
    wait_until(lambda: len(runs(ran)) >= 16, timeout=120, what="the map's first inputs")
    stop(cluster.server, sig_kill=True)
    time.sleep(5)
    cluster.server = start_dev_server(cluster.db, cluster.port)
    assert result(300) == [n * 10 for n in range(120)]
    again = ran_twice(ran)
    print(f"\nserver down 5 s mid-map: {len(runs(ran))} runs of 120 inputs, {len(again)} ran twice {again}")
    assert len(again) <= 2, again  # at most the input each running batch had in flight
