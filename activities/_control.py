"""Control-plane activities: deployment lookup, fleets, and running containers."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from apothic._config import Settings, apothic_home
from apothic._contracts import (
    CLOSED_JOBS_ACTIVITY,
    ENSURE_FLEET_ACTIVITY,
    EXIT_OK,
    EXIT_REPLACE,
    FLEET_WORKFLOW,
    RELEASE_CONTAINER_ACTIVITY,
    RESOLVE_ACTIVITY,
    RUN_CONTAINER_ACTIVITY,
    ClosedJobsRequest,
    ClosedJobsResult,
    Deployment,
    EnsureFleetRequest,
    FleetInput,
    ReleaseInput,
    ResolveRequest,
    RunContainerInput,
    RunContainerOutput,
    app_workflow_id,
)
from apothic._image import Image
from apothic.placement.providers import ProcessProvider, ensure_venv
from apothic.placement.providers.venv_images import VenvImage, read_venv_image

HEARTBEAT_EVERY_S = 2.0
# How long a draining container may take to finish its in-flight inputs, beyond the function's
# own timeout_s (the activity heartbeats meanwhile).
DRAIN_GRACE_S = 30.0


class ControlActivities:
    """The control worker's activities, bound to its settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = ProcessProvider(apothic_home() / "logs" / "containers")

    def all(self) -> list[Any]:
        return [self.resolve_deployment, self.ensure_fleet, self.closed_jobs, self.run_container, self.release_container]

    @activity.defn(name=RESOLVE_ACTIVITY)
    async def resolve_deployment(self, req: ResolveRequest) -> Deployment:
        """The deployment a job runs on (run as a local activity by InvocationWorkflow)."""
        handle = activity.client().get_workflow_handle(app_workflow_id(req.app))
        try:
            dep: Deployment = await handle.query("resolve", req, result_type=Deployment)
        except WorkflowQueryFailedError as e:
            raise ApplicationError(str(e), type="NotFound", non_retryable=True) from None
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                raise ApplicationError(
                    f"app {req.app!r} is not deployed. Fix: deploy it first (`app.deploy()` or "
                    f"`apothic deploy path/to/app.py`).",
                    type="NotFound",
                    non_retryable=True,
                ) from None
            raise
        worker = self.settings.worker
        return dataclasses.replace(dep, startup_timeout_s=worker.startup_timeout_s, idle_s=worker.container_idle_s)

    @activity.defn(name=ENSURE_FLEET_ACTIVITY)
    async def ensure_fleet(self, req: EnsureFleetRequest) -> None:
        """Signal-with-start the deployment's FleetWorkflow."""
        dep = req.deployment
        await activity.client().start_workflow(
            FLEET_WORKFLOW,
            FleetInput(deployment=dep),
            id=dep.fleet_id,
            task_queue=self.settings.worker.control_task_queue,
            start_signal="demand",
            start_signal_args=[req.demand],
            static_summary=f"fleet of {dep.app}.{dep.function} v{dep.version}",
        )

    @activity.defn(name=CLOSED_JOBS_ACTIVITY)
    async def closed_jobs(self, req: ClosedJobsRequest) -> ClosedJobsResult:
        client: Client = activity.client()

        async def closed(job_id: str) -> bool:
            try:
                desc = await client.get_workflow_handle(job_id).describe()
            except RPCError as e:
                if e.status == RPCStatusCode.NOT_FOUND:
                    return True
                raise
            return desc.status != WorkflowExecutionStatus.RUNNING

        flags = await asyncio.gather(*(closed(j) for j in req.job_ids))
        return ClosedJobsResult(closed=[j for j, c in zip(req.job_ids, flags) if c])

    @activity.defn(name=RUN_CONTAINER_ACTIVITY)
    async def run_container(self, inp: RunContainerInput) -> RunContainerOutput:
        """Start (or adopt) a container, heartbeat while it lives, stop it gracefully on cancel.

        The heartbeat carries the container's pid: when this worker dies or shuts down, the
        container keeps running and the next attempt of this activity, on any worker of the
        same host, adopts it instead of starting another.
        """
        dep = inp.deployment
        if dep.spec.provider != "process":
            raise ApplicationError(
                f"provider {dep.spec.provider!r} is not available on this worker", type="ContainerStartFailed"
            )
        handle = None
        details = activity.info().heartbeat_details
        if details:
            handle = self.process.adopt(inp.container_id, int(details[0]))
            if handle is None:  # it ended while no worker watched it
                return self._ended(inp, self.process.exit_status(inp.container_id))
            activity.logger.info("adopted container %s (pid %s)", inp.container_id, handle.pid)
        if handle is None:
            env = self._container_env(inp)
            python = cwd = None
            if dep.spec.image:
                venv = await self._image_venv(dep.spec.image)
                env.update(venv.env)
                python = str(venv.python)
                cwd = str(venv.workdir) if venv.workdir and venv.workdir.is_dir() else None
            handle = await self.process.start(inp.container_id, env, python=python, cwd=cwd)
        activity.heartbeat(handle.pid)
        try:
            while True:
                code = await self.process.wait(handle, HEARTBEAT_EVERY_S)
                if code is not None:
                    return self._ended(inp, code)
                activity.heartbeat(handle.pid)
        except asyncio.CancelledError:
            if activity.is_worker_shutdown():
                raise  # leave the container running: the next attempt adopts it
            await self.process.stop(handle, dep.spec.timeout_s + DRAIN_GRACE_S, tick=lambda: activity.heartbeat(handle.pid))
            raise

    async def _image_venv(self, image_dict: dict[str, Any]) -> VenvImage:
        """Build or reuse the image's virtual environment, heartbeating while it builds."""
        image = Image.from_dict(image_dict)
        lines: list[str] = []
        build = asyncio.ensure_future(
            ensure_venv(image, root=apothic_home() / "venvs", on_output=lambda line: lines.append(line))
        )
        while not build.done():
            await asyncio.wait({build}, timeout=HEARTBEAT_EVERY_S)
            activity.heartbeat(0)
        try:
            path = build.result()
        except Exception as e:  # noqa: BLE001 - a failed build fails this container, clearly
            tail = "\n".join(lines[-40:])
            raise ApplicationError(
                f"building image {image.tag} failed: {e}\n{tail}", type="ContainerStartFailed", non_retryable=True
            ) from None
        return read_venv_image(path)

    def _container_env(self, inp: RunContainerInput) -> dict[str, str]:
        dep = inp.deployment
        env = self.settings.connection_env()
        env.update(
            APOTHIC_CONTAINER_WORKFLOW_ID=inp.container_workflow_id,
            APOTHIC_APP=dep.app,
            APOTHIC_FUNCTION=dep.function,
            APOTHIC_VERSION=str(dep.version),
            APOTHIC_TASK_QUEUE=dep.task_queue,
            APOTHIC_CONCURRENCY=str(max(1, dep.spec.concurrent_requests)),
            APOTHIC_IDLE_S=str(dep.idle_s or self.settings.worker.container_idle_s),
        )
        return env

    def _ended(self, inp: RunContainerInput, code: int) -> RunContainerOutput:
        if code in (EXIT_OK, EXIT_REPLACE):
            reason = "exited" if code == EXIT_OK else "retired: an input ignored its interruption"
            return RunContainerOutput(container_id=inp.container_id, exit_code=code, reason=reason)
        raise ApplicationError(
            f"container {inp.container_id} exited with code {code}; its last output:\n"
            f"{self.process.log_tail(inp.container_id)}",
            type="ContainerExited",
            non_retryable=True,
        )

    @activity.defn(name=RELEASE_CONTAINER_ACTIVITY)
    async def release_container(self, inp: ReleaseInput) -> None:
        """Make sure nothing of the container is left (idempotent)."""
        if inp.provider == "process":
            killed = await asyncio.to_thread(self.process.release, inp.container_id)
            if killed:
                activity.logger.warning("released leftover processes of %s: %s", inp.container_id, killed)
