"""Where a job ran: each attempt's provider, instance, host, image, container and price, in
``job.info()``, ``apothic jobs status``, the job's details in the Temporal UI and the search
attribute ``ApothicProvider``; the container workflow's result says the same (real server,
control worker and containers)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from apothic.activities._where import placement_of
from apothic.placement import Offer
from apothic.workflows import ALL_WORKFLOWS
from temporalio.client import Client
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from apothic import App, Image, Retries
from apothic._contracts import FunctionSpec, Placement, RunContainerOutput
from apothic._control._embedded import temporal_binary

from ..conftest import container_pids, wait_until
from ..e2e.cli import apothic

pytestmark = pytest.mark.usefixtures("control_worker")
PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def temporal_cli(address: str, *args: str) -> object:
    """``temporal ARGS --address ADDRESS -o json``, parsed (the CLI's own JSON)."""
    out = subprocess.run([temporal_binary(), *args, "--address", address, "-o", "json"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return json.loads(out) if out.strip().startswith(("{", "[")) else [json.loads(line) for line in out.splitlines() if line]


def current_details(address: str, workflow_id: str) -> str:
    """The workflow's current details, as the Temporal UI reads them (``__temporal_workflow_metadata``)."""
    (payload,) = temporal_cli(address, "workflow", "metadata", "-w", workflow_id)["queryResult"]["payloads"]
    return json.loads(base64.b64decode(payload["data"]))["currentDetails"]


def replays(address: str, workflow_id: str) -> None:
    """The workflow's history replays on the current code."""

    async def replay() -> None:
        client = await Client.connect(address)
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        result = await Replayer(workflows=ALL_WORKFLOWS, workflow_runner=UnsandboxedWorkflowRunner()).replay_workflow(
            history, raise_on_replay_failure=False)
        assert result.replay_failure is None, result.replay_failure

    asyncio.run(replay())


def container_result(address: str, workflow_id: str) -> RunContainerOutput:
    async def wait() -> RunContainerOutput:
        client = await Client.connect(address)
        return await client.get_workflow_handle(workflow_id, result_type=RunContainerOutput).result()

    return asyncio.run(wait())


def test_a_job_knows_where_each_call_ran_and_so_does_its_container(temporal: str, app_name: str) -> None:
    app = App(app_name)

    @app.function()
    def work(x: int, nap: float) -> int:
        import time

        time.sleep(nap)
        return 2 * x

    app.deploy()
    cold = work.spawn(21, 0.5)  # a cold start, long enough to report its start by signal
    assert cold.wait() == 42
    warm = work.spawn(1, 0.0)  # warm and quick: what it learned travels with its result
    assert warm.wait() == 2
    host = socket.gethostname()
    info = cold.info()
    p = info.placement
    pid = int(p.instance)
    assert pid in container_pids(app_name, supervisors=True)  # the process its provider started
    assert p == Placement(container_id=info.container_id, provider="process", offer_id=f"process:{host}",
                          instance=str(pid), host=host, image="", dph=0.0, started_at=p.started_at)
    (run,) = info.ran
    assert run.attempt == 1 and run.container_id == info.container_id and run.placement == p
    assert 0.5 <= run.rented_s < 60 and run.cost_usd == 0.0 and info.rented_s == run.rented_s
    again = warm.info()
    assert again.placement == p and again.ran[0].ended_at and again.ran[0].rented_s < 5

    # The job's details in the Temporal UI (what the CLI's `workflow metadata` and the UI read).
    text = current_details(temporal, cold.job_id)
    assert text.startswith("**ran on**") and f"attempt 1: container `{info.container_id}`: **process** on {host}, " \
        f"pid {pid}, offer process:{host}, $0.0000/h; {run.rented_s:g} s" in text, text

    # `apothic jobs status`, as text and as JSON.
    lines = apothic("jobs", "status", cold.job_id).stdout.splitlines()
    assert lines[0] == "completed"
    assert "provider  process" in lines and f"host      {host}" in lines and f"instance  pid {pid}" in lines
    assert f"container {info.container_id}" in lines and "price     $0.0000/h" in lines
    shown = json.loads(apothic("jobs", "status", "--json", warm.job_id).stdout)
    assert shown["status"] == "completed" and shown["placement"]["provider"] == "process"
    assert shown["placement"]["instance"] == str(pid) and shown["ran"][0]["attempt"] == 1

    # Listed by the provider it ran on (the search attribute; visibility lags a little).
    query = f"ApothicProvider = 'process' AND ApothicApp = '{app_name}'"
    wait_until(lambda: {w["execution"]["workflowId"] for w in temporal_cli(temporal, "workflow", "list", "-q", query)}
               == {cold.job_id, warm.job_id}, timeout=30, what="both jobs listed under ApothicProvider = 'process'")
    assert temporal_cli(temporal, "workflow", "list", "-q", f"ApothicProvider = 'vast' AND ApothicApp = '{app_name}'") == []

    # The container's own workflow returns the truth once it drained.
    container_wf = f"apothic-container:{app_name}:work:v1:{info.container_id}"
    out = container_result(temporal, container_wf)
    assert out.provider == "process" and out.placement == p and out.exit_code == 0
    assert out.where["pid"] == pid and out.where["host"] == host
    assert out.rented_s >= 0.5 and out.cost_usd == 0.0
    for workflow_id in (cold.job_id, warm.job_id, container_wf):
        replays(temporal, workflow_id)


def test_each_attempt_of_a_retried_job_has_its_placement(temporal: str, app_name: str, tmp_path: Path) -> None:
    marks = tmp_path / "tries"
    app = App(app_name)

    @app.function(retries=Retries(max_retries=1, initial_delay=0.1))
    def flaky() -> str:
        with open(marks, "a") as f:
            f.write("x")
        if len(marks.read_text()) == 1:
            raise ValueError("first try fails")
        return "ok"

    app.deploy()
    job = flaky.spawn()
    assert job.wait() == "ok"
    info = job.info()
    assert [r.attempt for r in info.ran] == [1, 2] and [a.attempt for a in info.attempts] == [1]
    assert all(r.placement is not None and r.placement.provider == "process" and r.ended_at for r in info.ran)
    assert info.placement == info.ran[-1].placement
    assert info.rented_s == pytest.approx(sum(r.rented_s for r in info.ran), abs=0.002)
    details = current_details(temporal, job.job_id)
    assert "- attempt 1: container" in details and "- attempt 2: container" in details
    assert "attempt 1 failed (user): " in details and "first try fails" in details  # the retry, as before
    replays(temporal, job.job_id)


def test_a_docker_container_is_recorded_with_its_engine_id_and_image(temporal: str, app_name: str) -> None:
    """A function whose image needs a container runs in Docker: the job names that container
    (the engine's id) and the image it runs (needs this host's engine, as the docker tests do)."""
    app = App(app_name)
    image = Image.debian_slim(python_version=PY).run_commands("echo where-it-ran > /etc/apothic-where")

    @app.function(image=image, timeout_s=120)
    def inside() -> str:
        with open("/etc/apothic-where") as f:
            return f.read().strip()

    app.deploy()
    job = inside.spawn()
    assert job.wait(timeout_s=600) == "where-it-ran"
    p = job.info().placement
    assert p.provider == "docker" and p.host == socket.gethostname() and p.offer_id == f"docker:{p.host}"
    inspected = json.loads(subprocess.run(
        ["docker", "inspect", f"apothic-{p.container_id}"], capture_output=True, text=True, check=True).stdout)[0]
    assert inspected["Id"].startswith(p.instance) and len(p.instance) == 12
    assert inspected["Config"]["Image"] == p.image
    lines = apothic("jobs", "status", job.job_id).stdout.splitlines()
    assert f"instance  docker container {p.instance}" in lines and f"image     {p.image}" in lines


def test_a_rented_machine_is_placed_with_its_offer_price_and_address() -> None:
    """What run_container records for a Vast.ai rental: the offer that was rented (a later one
    than the best when the best was gone), its machine, its price."""
    best = Offer(provider="vast", offer_id="101", dph_total=0.31, gpu_name="RTX 4090", num_gpus=1,
                 geolocation="Oslo, NO", extra={"machine_id": 7001, "public_ipaddr": "10.0.0.1"})
    rented = Offer(provider="vast", offer_id="102", dph_total=0.35, gpu_name="RTX 4090", num_gpus=1,
                   geolocation="Bergen, NO", extra={"machine_id": 7002, "public_ipaddr": "10.0.0.2"})
    where = {"instance_id": 5501, "offer_id": "102", "gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 0.35,
             "geolocation": "Bergen, NO", "image": "registry.example/apothic/image@sha256:ab"}
    p = placement_of("c-1", "vast", FunctionSpec(name="f"), best, where, [best, rented])
    assert (p.provider, p.offer_id, p.instance, p.host, p.dph, p.geolocation, p.image) == (
        "vast", "102", "5501", "machine 7002 (10.0.0.2)", 0.35, "Bergen, NO", "registry.example/apothic/image@sha256:ab")
    assert p.started_at
