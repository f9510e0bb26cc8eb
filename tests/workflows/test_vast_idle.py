"""No paying for a machine nobody needs: a rented Vast.ai instance still loading when its job
goes away is destroyed within the idle window (the session's ``APOTHIC_CONTAINER_IDLE_S``, 4 s)
plus one poll, not at the 600 s ready timeout; also when the control worker renting it is
killed meanwhile (the next attempt adopts the container and destroys the instance).

Real parts: a Temporal dev server, control worker processes, the Vast.ai simulator (its
``stick_loading`` fault keeps an instance loading as a slow image pull does).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

import apothic
from apothic import App
from apothic._contracts import fleet_workflow_id

from ..conftest import CONTAINER_IDLE_S, stop, wait_until
from ._cluster import Cluster

IDLE_S = float(CONTAINER_IDLE_S)
# The idle window, one poll of the fleet (2 s), the fleet's round and one destroy.
PROMPT_S = IDLE_S + 2.0 + 6.0


def ours(sim: Any, app: str) -> list[Any]:
    """The simulator's instances (rented or destroyed) of ``app``'s containers."""
    found = list(sim.instances.values()) + list(sim.destroyed.values())
    return sorted((i for i in found if i.env.get("APOTHIC_APP") == app), key=lambda i: i.id)


def fleet_ended(address: str, app: str) -> bool:
    """Whether the fleet of ``app.work`` v1 has ended (no container left, none to start)."""

    async def closed() -> bool:
        client = await Client.connect(address)
        desc = await client.get_workflow_handle(fleet_workflow_id(app, "work", 1)).describe()
        return desc.status != WorkflowExecutionStatus.RUNNING

    return asyncio.run(closed())


def loading(sim: Any, app: str) -> Any:
    rows = [i for i in ours(sim, app) if not i.destroyed and i.actual_status == "loading"]
    return rows[0] if rows else None


@pytest.mark.usefixtures("control_worker")
def test_a_cancelled_job_leaves_no_loading_instance_rented(app_name: str, vast_sim, capsys) -> None:
    app = App(app_name)

    @app.function(gpu="RTX_3060", max_cost_per_hour_usd=1.5, timeout_s=60)
    def work() -> int:
        return 1

    app.deploy()
    vast_sim.stick_loading(count=1)  # the next instance never finishes loading
    try:
        job = work.spawn()
        wait_until(lambda: loading(vast_sim, app_name) is not None, timeout=300, what="an instance loading")
        inst = loading(vast_sim, app_name)
        cancelled = time.monotonic()
        job.cancel()
        wait_until(lambda: inst.destroyed, timeout=120, what="the loading instance to be destroyed")
        took = time.monotonic() - cancelled
    finally:
        vast_sim.clear_faults()
    with capsys.disabled():
        print(f"\n[measure] cancel -> destroy of a loading instance: {took:.1f} s (idle window {IDLE_S:g} s)")
    assert took <= PROMPT_S, f"the loading instance stayed rented {took:.1f} s after the cancel"
    with pytest.raises(apothic.JobCancelledError):
        job.wait(timeout_s=30)
    assert [i.id for i in ours(vast_sim, app_name)] == [inst.id]  # nothing was rented again
    events = [e for e in job.watch(snapshot=True) if e.event == "provisioning"]
    assert any(e.data.get("step") == "created" and e.data.get("dph_total") for e in events)


def test_a_loading_instance_is_destroyed_when_its_worker_was_killed_and_its_job_cancelled(
    tmp_path: Path, app_name: str, vast_sim, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("APOTHIC_HOME", str(tmp_path))  # this process is of the cluster too (one payload key)
    c = Cluster(tmp_path, VAST_URL=vast_sim.url, VAST_API_KEY=vast_sim.api_key,
                APOTHIC_VAST_REGISTRY="127.0.0.1:5000", APOTHIC_CONTAINER_IDLE_S=CONTAINER_IDLE_S)
    vast_sim.stick_loading(count=1)
    try:
        app = App(app_name, client=c.client)

        @app.function(gpu="RTX_3060", max_cost_per_hour_usd=1.5, timeout_s=60)
        def work() -> int:
            return 1

        app.deploy()
        job = work.spawn()
        wait_until(lambda: loading(vast_sim, app_name) is not None, timeout=300, what="an instance loading")
        inst = loading(vast_sim, app_name)
        stop(c.worker, sig_kill=True)  # the worker renting it dies mid-rental
        killed = time.monotonic()
        c.worker = c.start_worker()
        job.cancel()
        wait_until(lambda: inst.destroyed, timeout=120, what="the orphaned loading instance to be destroyed")
        took = time.monotonic() - killed
        with capsys.disabled():
            print(f"\n[measure] worker killed + job cancelled -> destroy of its loading instance: {took:.1f} s")
        # The activity's heartbeat timeout (10 s) lets the next attempt take over, which destroys it.
        assert took <= 10 + PROMPT_S
        with pytest.raises(apothic.JobCancelledError):
            job.wait(timeout_s=60)
        wait_until(lambda: fleet_ended(c.address, app_name), timeout=120, what="the fleet to end")
        assert [i.id for i in ours(vast_sim, app_name)] == [inst.id]  # nothing rented again
        assert all(i.destroyed for i in ours(vast_sim, app_name))
    finally:
        vast_sim.clear_faults()
        c.close()
