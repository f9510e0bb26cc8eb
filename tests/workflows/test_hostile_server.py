"""Containers whose Temporal server is gone for good exit by themselves, idle or stuck in native
code (``worker.server_unreachable_s``). Each test has its own dev server, to stop for good."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from apothic import App, ControlPlaneClient, JobStatus

from ..conftest import (
    container_pids,
    free_port,
    start_dev_server,
    start_worker,
    stop,
    wait_until,
)

GRACE_S = 4.0


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    monkeypatch.setenv("APOTHIC_HOME", str(tmp_path))  # this process is of the cluster too (one payload key)
    monkeypatch.delenv("APOTHIC_PAYLOAD_KEY_FILE", raising=False)
    monkeypatch.setenv("APOTHIC_CONTAINER_IDLE_S", "600")  # the client names the idle window: none drains
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = dict(os.environ, APOTHIC_TEMPORAL_ADDRESS=address, APOTHIC_HOME=str(tmp_path),
               APOTHIC_SERVER_UNREACHABLE_S=str(GRACE_S), APOTHIC_CONTAINER_IDLE_S="600")
    server = start_dev_server(tmp_path / "temporal.db", port)
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        yield {"server": server, "worker": worker, "client": ControlPlaneClient(address), "home": tmp_path}
    finally:
        stop(worker)
        stop(server)


def test_containers_exit_once_their_server_is_gone_for_good(cluster: dict, app_name: str, tmp_path: Path) -> None:
    started = tmp_path / "started"
    app = App(app_name, client=cluster["client"])

    @app.function(timeout_s=3600)
    def idle() -> int:
        return os.getpid()

    @app.function(timeout_s=3600)
    def stuck() -> None:
        import re

        started.write_text(str(os.getpid()))
        # Catastrophic backtracking: C code that spins at 100% CPU for ages and holds the GIL,
        # so the runtime itself cannot notice anything.
        re.match(r"(a|a)*b", "a" * 64)

    app.deploy()
    assert idle.remote() > 0
    job = stuck.spawn()
    wait_until(lambda: started.exists() and job.status() is JobStatus.RUNNING, timeout=60, what="the stuck input")
    time.sleep(3)  # the supervisor heartbeats for the stuck runtime by now
    assert len(container_pids(app_name, supervisors=True)) == 4  # two containers: supervisor and runtime each
    stop(cluster["worker"])  # the worker's containers outlive it, as they would a lost worker
    stop(cluster["server"], sig_kill=True)
    gone_at = time.monotonic()
    # Within the grace, plus a check or two (every 5 s, at most 10 s each), plus slack.
    wait_until(lambda: not container_pids(app_name, supervisors=True), timeout=GRACE_S + 30 + 30,
               what="both containers to exit")
    took = time.monotonic() - gone_at
    logs = "".join(p.read_text() for p in (cluster["home"] / "logs" / "containers").glob("*.log"))
    assert "has not answered for" in logs and "APOTHIC_SERVER_UNREACHABLE_S" in logs, logs[-3000:]
    assert "stopping the container" in logs  # the stuck one: its supervisor noticed
    assert took >= GRACE_S - 1, took
