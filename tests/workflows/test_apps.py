"""``apothic.App.objects``: list, stop and remove deployed apps, against a real dev server,
control worker and container processes."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from temporalio.client import Client

from apothic import (
    App,
    AppInfo,
    InvalidError,
    JobStatus,
    NotFoundError,
    Period,
    RemoteFunction,
)

from ..conftest import container_pids, wait_until
from ..e2e.test_examples import left_behind

pytestmark = pytest.mark.usefixtures("control_worker")


def info_of(name: str) -> AppInfo | None:
    return next((i for i in App.objects.list() if i.name == name), None)


def containers_of(name: str) -> int:
    info = info_of(name)
    return info.containers if info is not None else -1


async def container_workflows(app: str) -> list[str]:
    """Every ContainerWorkflow of ``app`` the server knows (running or ended)."""
    client = await Client.connect(os.environ["APOTHIC_TEMPORAL_ADDRESS"])
    query = f"WorkflowType = 'ContainerWorkflow' AND WorkflowId STARTS_WITH 'apothic-container:{app}:'"
    return sorted([wf.id async for wf in client.list_workflows(query)])


def test_stop_drains_containers_lets_inputs_finish_and_keeps_the_app(app_name: str) -> None:
    app = App(app_name)

    # Two containers allowed: the drained one's running job must not start a second one.
    @app.function(max_containers=2)
    def slow(seconds: float) -> str:
        time.sleep(seconds)
        return f"slept {seconds}"

    app.deploy()
    assert slow.remote(0) == "slept 0"
    wait_until(lambda: containers_of(app_name) == 1, what="the warm container listed")
    info = info_of(app_name)
    assert info is not None and info.version == 1 and info.functions == ("slow",) and info.schedules == {}
    assert not info.ephemeral and info.deployed_at is not None
    assert len(container_pids(app_name)) == 1

    job = slow.spawn(4)
    wait_until(lambda: job.status() == JobStatus.RUNNING, timeout=30, what="the slow job to run")
    time.sleep(1.5)  # past the moment the job tells the fleet it holds capacity
    App.objects.stop(app_name)
    # It returned once the container was released, after the input it ran had finished there.
    assert job.status() == JobStatus.COMPLETED and job.wait() == "slept 4"
    assert container_pids(app_name) == []
    assert len(asyncio.run(container_workflows(app_name))) == 1, "the held job started a second container"
    assert containers_of(app_name) == 0

    # Still deployed: the next call starts a container again.
    assert RemoteFunction.from_name(app_name, "slow").remote(0) == "slept 0"
    assert len(asyncio.run(container_workflows(app_name))) == 2
    # Stopping an app without containers does nothing (and the async twin works the same).
    App.objects.stop(app_name)
    asyncio.run(App.objects.stop.aio(app_name, wait_s=0))
    App.objects.remove(app_name)


def test_remove_cancels_jobs_deletes_schedules_and_lookups_fail_clearly(app_name: str) -> None:
    app = App(app_name)

    @app.function(schedule=Period(hours=1))
    def hourly() -> str:
        return "tick"

    @app.function()
    def forever() -> None:
        time.sleep(600)

    app.deploy()
    assert info_of(app_name).schedules == {"hourly": "every 1h"}  # type: ignore[union-attr]
    job = forever.spawn()
    wait_until(lambda: job.status() == JobStatus.RUNNING, timeout=30, what="the job to run")
    assert container_pids(app_name)

    App.objects.remove(app_name)
    assert job.status() == JobStatus.CANCELLED
    assert container_pids(app_name) == []
    assert asyncio.run(left_behind(app_name)) == []  # no job, fleet, container, registry or schedule
    assert info_of(app_name) is None

    with pytest.raises(NotFoundError, match=rf"app '{app_name}' is not deployed on .*: it was removed at 20\d\d-.*"
                                            r"Fix: deploy it again"):
        RemoteFunction.from_name(app_name, "hourly").remote()
    with pytest.raises(NotFoundError, match="it was removed at"):
        App.objects.remove(app_name)
    with pytest.raises(NotFoundError, match="it was removed at"):
        App.objects.stop(app_name)
    App.objects.remove(app_name, allow_missing=True)

    # Deployed again: a new version, callable.
    assert app.deploy().version == 2
    assert RemoteFunction.from_name(app_name, "hourly").remote() == "tick"
    asyncio.run(App.objects.remove.aio(app_name))
    assert asyncio.run(left_behind(app_name)) == []


def test_a_run_is_listed_as_ephemeral_and_names_are_checked(app_name: str) -> None:
    app = App(app_name)

    @app.function()
    def hello() -> str:
        return "hi"

    with app.run():
        infos = asyncio.run(App.objects.list.aio())
        (mine,) = [i for i in infos if i.name == app_name]
        assert mine.ephemeral and mine.functions == ("hello",)
    assert info_of(app_name) is None

    with pytest.raises(NotFoundError, match=f"app 'never-{app_name}' is not deployed on .*apothic apps list"):
        App.objects.stop(f"never-{app_name}")
    with pytest.raises(NotFoundError, match="is not deployed"):
        App.objects.remove(f"never-{app_name}")
    App.objects.remove(f"never-{app_name}", allow_missing=True)
    with pytest.raises(InvalidError, match="app name 'no spaces' is invalid"):
        App.objects.remove("no spaces")
