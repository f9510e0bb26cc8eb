"""Containers and deployments across failures: release, crash, restarts (real processes)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from temporalio.client import Client

import apothic
from apothic import App, ControlPlaneClient
from apothic._contracts import FleetStatus, fleet_workflow_id

from ..conftest import container_pids, free_port, start_dev_server, start_worker, stop, wait_until


def fleet_status(address: str, app: str, fn: str, version: int = 1) -> FleetStatus:
    async def query() -> FleetStatus:
        client = await Client.connect(address)
        return await client.get_workflow_handle(fleet_workflow_id(app, fn, version)).query(
            "status", result_type=FleetStatus
        )

    return asyncio.run(query())


@pytest.mark.usefixtures("control_worker")
def test_cancelling_a_container_workflow_releases_its_process(temporal: str, app_name: str) -> None:
    app = App(app_name)

    @app.function()
    def hello() -> str:
        return "hi"

    app.deploy()
    job = hello.spawn()
    assert job.wait() == "hi"
    pids = container_pids(app_name)
    assert len(pids) == 1
    # The fleet forgets a job once it is done.
    wait_until(lambda: not fleet_status(temporal, app_name, "hello").outstanding, what="the demand to be released")
    status = fleet_status(temporal, app_name, "hello")
    assert len(status.containers) == 1
    container_id = status.containers[0].container_id

    async def cancel() -> None:
        client = await Client.connect(temporal)
        handle = client.get_workflow_handle(f"apothic-container:{app_name}:hello:v1:{container_id}")
        await handle.cancel()

    asyncio.run(cancel())
    wait_until(lambda: not container_pids(app_name), timeout=30, what="the container process to exit")
    # The fleet is told, and the next call gets a fresh container.
    assert hello.remote() == "hi"


@pytest.mark.usefixtures("control_worker")
def test_a_killed_container_is_released_and_replaced(temporal: str, app_name: str) -> None:
    app = App(app_name)

    @app.function()
    def pid() -> int:
        return os.getpid()

    app.deploy()
    first = pid.remote()
    assert container_pids(app_name) == [first]
    os.kill(first, signal.SIGKILL)
    wait_until(
        lambda: not fleet_status(temporal, app_name, "pid").containers, timeout=30, what="the fleet to drop it"
    )
    second = pid.remote()
    assert second != first
    assert container_pids(app_name) == [second]


def test_deployments_survive_worker_kill_and_server_restart(tmp_path: Path, app_name: str) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    db = tmp_path / "restart.db"
    env = dict(os.environ, APOTHIC_TEMPORAL_ADDRESS=address, APOTHIC_HOME=str(tmp_path))
    server = start_dev_server(db, port)
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        cp = ControlPlaneClient(address)
        app = App(app_name, client=cp)

        @app.function()
        def add(a: int, b: int) -> int:
            return a + b

        assert app.deploy().version == 1
        assert add.remote(2, 3) == 5
        assert container_pids(app_name)

        # kill -9 the control worker (its container outlives it, then drains when idle).
        stop(worker, sig_kill=True)

        # Stop and restart the server on the same database file.
        stop(server)
        server = start_dev_server(db, port)
        worker = start_worker(env, tmp_path / "worker.log")

        again = apothic.RemoteFunction.from_name(app_name, "add", client=cp)
        assert again.remote(20, 22, timeout_s=120) == 42
        # The server kept the app's versions: the same code deploys as the same version.
        again_deployed = app.deploy()
        assert (again_deployed.version, again_deployed.created) == (1, False)
    finally:
        stop(worker)
        stop(server)
