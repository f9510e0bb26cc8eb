"""Only this control plane's clients can run code: against the session's real dev server,
control worker and containers, payloads without the key's signature are refused and logged,
and nothing they carry runs.

Each attack carries a pickle that writes a marker file when it is unpickled (the code a
worker or a container would run); the same pickle sent by Apothic's own client does write it
(so the marker would show a pickle that ran).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.converter import DataConverter
from temporalio.exceptions import ActivityError
from temporalio.service import RPCError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from apothic import App, Job, JobStatus
from apothic._contracts import (
    APP_WORKFLOW,
    INVOCATION_WORKFLOW,
    AppState,
    ExecuteInput,
    InvocationInput,
    app_workflow_id,
    deployment_task_queue,
)
from apothic._control._config import load_settings
from apothic._control._loop import run_blocking
from apothic._data._serialization import CloudPickled
from apothic._data._signing import SIGNATURE, PayloadKey, SigningCodec, payload_key

from ..conftest import container_pids, wait_until

pytestmark = pytest.mark.usefixtures("control_worker")


class Marker:
    """Unpickling this writes ``path`` (a stand-in for any code a pickle can run)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({self.path!r}, 'w').write('ran')",))


def evil_args(marker: Path) -> CloudPickled:
    return CloudPickled.dump(((Marker(marker),), {}), kind="args", qualname="echo")


def forger(key_id: str) -> SigningCodec:
    """A codec that writes signatures naming ``key_id`` but made with a key of its own."""
    codec = SigningCodec(PayloadKey(os.urandom(32), "a forger"))
    codec._tag = f"v1:{key_id}:".encode()
    return codec


async def plain_client(address: str, codec: SigningCodec | None = None) -> Client:
    """A Temporal client of the kind anyone who reaches the port can make."""
    return await Client.connect(address, data_converter=DataConverter(payload_codec=codec))


async def event_types(client: Client, workflow_id: str) -> list[str]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return [EventType.Name(e.event_type) for e in history.events]


def failure_of(address: str, workflow_id: str) -> BaseException:
    """The cause of the workflow's failure (it must fail)."""

    async def wait() -> BaseException:
        with pytest.raises(WorkflowFailureError) as info:
            await (await plain_client(address)).get_workflow_handle(workflow_id).result()
        return info.value.cause

    return asyncio.run(wait())


def worker_log_refusals(state_dir: Path) -> int:
    return (state_dir / "worker.log").read_text(errors="replace").count("refused a payload")


@pytest.fixture
def deployed(app_name: str) -> tuple[App, Any]:
    app = App(app_name)

    @app.function(concurrent_requests=4)
    def echo(x: Any = None, fifo: str = "") -> Any:
        if fifo:
            with open(fifo) as f:  # blocks until the test opens the other end and closes it
                f.read()
        return x

    app.deploy()
    return app, echo


def attack_invocation(address: str, app: str, marker: Path, codec: SigningCodec | None = None) -> str:
    job_id = f"job-attack-{uuid.uuid4().hex[:12]}"

    async def start() -> None:
        client = await plain_client(address, codec)
        await client.start_workflow(
            INVOCATION_WORKFLOW,
            InvocationInput(job_id=job_id, app=app, function="echo", args=evil_args(marker)),
            id=job_id,
            task_queue=load_settings().worker.control_task_queue,
        )

    asyncio.run(start())
    return job_id


def test_a_client_without_the_key_runs_no_code(temporal: str, state_dir: Path, deployed, tmp_path: Path) -> None:
    app, echo = deployed
    assert echo.remote(41) == 41  # a container is warm: an input would reach it at once
    refusals = worker_log_refusals(state_dir)

    marker = tmp_path / "ran-unsigned"
    job_id = attack_invocation(temporal, app.name, marker)

    cause = failure_of(temporal, job_id)

    async def history() -> list[str]:
        return await event_types(await plain_client(temporal), job_id)

    events = asyncio.run(history())
    assert getattr(cause, "type", None) == "PayloadRefused" and getattr(cause, "non_retryable", None), cause
    assert "refused a payload: it is not signed" in str(cause), cause
    # The first workflow task failed the workflow: no activity, no timer, no child, no signal sent.
    assert events == ["EVENT_TYPE_WORKFLOW_EXECUTION_STARTED", "EVENT_TYPE_WORKFLOW_TASK_SCHEDULED",
                      "EVENT_TYPE_WORKFLOW_TASK_STARTED", "EVENT_TYPE_WORKFLOW_TASK_COMPLETED",
                      "EVENT_TYPE_WORKFLOW_EXECUTION_FAILED"], events
    assert Job.from_id(job_id).status() is JobStatus.FAILED
    assert worker_log_refusals(state_dir) > refusals  # logged by the worker
    assert not marker.exists()

    # The same pickle sent by Apothic's client (signed) does run: the marker shows a pickle that ran.
    signed = tmp_path / "ran-signed"
    assert echo.remote(Marker(signed)) is None
    assert signed.read_text() == "ran"


def test_code_deployed_by_a_client_without_the_key_is_never_stored_or_run(temporal: str, app_name: str,
                                                                          tmp_path: Path) -> None:
    """The app's code travels in a deploy update: a plain client's deploy of a new app fails the
    app's workflow at its start; a call of it runs nothing either."""
    marker = tmp_path / "ran-code"
    template = App(app_name)

    @template.function()
    def echo(x: Any = None) -> Any:
        return x

    req = template._deploy_request()
    req = dataclasses.replace(req, functions=[dataclasses.replace(f, code=CloudPickled.dump(
        Marker(marker), kind="code", qualname="echo")) for f in req.functions])

    async def deploy() -> list[str]:
        client = await plain_client(temporal)
        handle = await client.start_workflow(APP_WORKFLOW, AppState(app=app_name), id=app_workflow_id(app_name),
                                             task_queue=load_settings().worker.control_task_queue)
        with pytest.raises(RPCError, match="aborted by closing workflow"):
            await handle.execute_update("deploy", req)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        assert getattr(failed.value.cause, "type", None) == "PayloadRefused", failed.value.cause
        return await event_types(client, app_workflow_id(app_name))

    events = asyncio.run(deploy())
    assert events[-1] == "EVENT_TYPE_WORKFLOW_EXECUTION_FAILED", events
    assert not any("UPDATE_ACCEPTED" in e or "ACTIVITY" in e for e in events), events
    # A call of the app finds no deployment to run (whatever its arguments would do).
    cause = failure_of(temporal, attack_invocation(temporal, app_name, tmp_path / "ran-args"))
    assert getattr(cause, "type", None) == "PayloadRefused", cause
    assert not container_pids(app_name)
    assert not marker.exists() and not (tmp_path / "ran-args").exists()


def test_a_forged_signature_is_refused_and_another_key_is_retried_never_run(
    temporal: str, deployed, tmp_path: Path
) -> None:
    app, echo = deployed
    assert echo.remote(1) == 1
    key_id = payload_key(load_settings()).key_id

    # A signature naming this control plane's key but not made with it: refused for good.
    forged = tmp_path / "ran-forged"
    job_id = attack_invocation(temporal, app.name, forged, forger(key_id))

    cause = failure_of(temporal, job_id)
    assert getattr(cause, "type", None) == "PayloadRefused", cause
    assert "does not match its content" in str(cause), cause

    # Signed with another key (another control plane's, or a process given the wrong one): the
    # workflow task fails and is retried, so that a process with the right key could go on; it
    # never runs anything meanwhile.
    other = tmp_path / "ran-other-key"
    other_job = attack_invocation(temporal, app.name, other, SigningCodec(PayloadKey(os.urandom(32), "another")))

    async def task_failures() -> list[str]:
        client = await plain_client(temporal)
        history = await client.get_workflow_handle(other_job).fetch_history()
        return [e.workflow_task_failed_event_attributes.failure.message for e in history.events
                if e.HasField("workflow_task_failed_event_attributes")]

    wait_until(lambda: bool(asyncio.run(task_failures())), timeout=30, what="the workflow task to fail")
    assert "it is signed with another key" in asyncio.run(task_failures())[0]

    async def end() -> list[str]:
        client = await plain_client(temporal)
        handle = client.get_workflow_handle(other_job)
        assert (await handle.describe()).status.name == "RUNNING"
        await handle.terminate("test over")
        return await event_types(client, other_job)

    events = asyncio.run(end())
    assert not any("ACTIVITY" in e or "TIMER" in e or "CHILD" in e for e in events), events
    assert not forged.exists() and not other.exists()


@workflow.defn(name="Attack", sandboxed=False)
class Attack:
    """An attacker's own workflow, on its own worker: it sends an input straight to a function
    container's queue, as if a control worker had scheduled it."""

    @workflow.run
    async def run(self, queue: str, inp: ExecuteInput) -> str:
        try:
            await workflow.execute_activity(
                "apothic.execute", inp, task_queue=queue, start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ActivityError as e:
            causes, err = [], e.cause
            while err is not None:
                causes.append(f"{type(err).__name__}: {err}")
                err = err.__cause__
            return " <- ".join(causes)
        return "ran"


def test_a_container_refuses_an_input_it_did_not_get_from_a_control_worker(
    temporal: str, app_name: str, deployed, tmp_path: Path, state_dir: Path
) -> None:
    app, echo = deployed
    fifo = tmp_path / "hold"
    os.mkfifo(fifo)
    held = echo.spawn(fifo=str(fifo))  # keeps one container running (and polling: 4 inputs at once)
    wait_until(lambda: held.status() is JobStatus.RUNNING, timeout=60, what="the container to run the held input")
    marker = tmp_path / "ran-in-container"
    inp = ExecuteInput(job_id="job-attack", function="echo", version=1, args=evil_args(marker), timeout_s=30)

    async def attack() -> str:
        client = await plain_client(temporal)
        queue = f"attack-{uuid.uuid4().hex[:8]}"
        async with Worker(client, task_queue=queue, workflows=[Attack], workflow_runner=UnsandboxedWorkflowRunner()):
            return await client.execute_workflow(
                Attack.run, args=[deployment_task_queue(app.name, "echo", 1), inp], id=queue, task_queue=queue,
            )

    outcome = asyncio.run(attack())
    assert outcome.startswith("ApplicationError: Failed decoding arguments"), outcome
    assert "refused a payload: it is not signed" in outcome, outcome
    with open(fifo, "w"):
        pass  # release the held input
    assert held.wait(timeout_s=60) is None
    assert not marker.exists()
    logs = list((state_dir / "logs" / "containers").glob("*.log"))
    assert any("refused a payload: it is not signed" in p.read_text(errors="replace") for p in logs), logs


def test_what_apothic_sends_is_signed_and_still_readable_json(temporal: str, deployed) -> None:
    _, echo = deployed
    job = echo.spawn(7)
    assert job.wait(timeout_s=60) == 7
    key = payload_key(load_settings())

    async def read() -> list[Any]:
        client = await plain_client(temporal)
        history = await client.get_workflow_handle(job.job_id).fetch_history()
        payloads = [p for e in history.events for p in
                    e.workflow_execution_started_event_attributes.input.payloads]
        payloads += [p for e in history.events for p in
                     e.activity_task_scheduled_event_attributes.input.payloads]
        payloads += [p for e in history.events for p in e.activity_task_completed_event_attributes.result.payloads]
        assert len(payloads) >= 3
        for p in payloads:
            assert p.metadata["encoding"] == b"json/plain" and p.data.startswith(b"{")
            assert p.metadata[SIGNATURE].startswith(f"v1:{key.key_id}:".encode())
        SigningCodec(key).verify(payloads[0])
        return await DataConverter.default.decode(payloads[:1])  # a reader without the key still reads it

    (started,) = asyncio.run(read())
    assert started["job_id"] == job.job_id and started["function"] == "echo"


def test_a_schedules_action_is_signed_when_made_and_verified_when_it_fires(app_name: str) -> None:
    from apothic import Cron
    from apothic._contracts import schedule_id
    from apothic._control._client import get_client
    from apothic._schedule._schedules import Schedules

    app = App(app_name)

    @app.function(schedule=Cron("0 0 1 1 *"))  # never due during the test: triggered instead
    def yearly() -> str:
        return "fired"

    app.deploy()
    schedules = Schedules()
    try:
        async def action() -> Any:
            desc = await (await get_client()).get_schedule_handle(schedule_id(app_name, "yearly")).describe()
            return desc.raw_description.schedule.action.start_workflow.input.payloads[0]

        payload = run_blocking(action())
        SigningCodec(payload_key(load_settings())).verify(payload)  # signed by the client's codec at deploy
        schedules.trigger(app_name, "yearly")
        wait_until(lambda: schedules.get(app_name, "yearly").last_job_id, timeout=30, what="the triggered run")
        assert Job.from_id(schedules.get(app_name, "yearly").last_job_id).wait(timeout_s=120) == "fired"
    finally:
        schedules.delete(app_name)
