"""ContainerWorkflow: one function container's life, always ending in its release."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

from apothic._contracts import (
    CONTAINER_PLACED_SIGNAL,
    CONTAINER_WORKFLOW,
    EXIT_OK,
    EXIT_REPLACE,
    PLACEMENT_MEMO_KEY,
    RELEASE_CONTAINER_ACTIVITY,
    RUN_CONTAINER_ACTIVITY,
    ContainerInput,
    ContainerStopped,
    Placement,
    ReleaseInput,
    RunContainerInput,
    RunContainerOutput,
)

# How long the provider activity may go without a heartbeat before its control worker is
# considered lost (another worker then adopts the container).
RUN_HEARTBEAT = timedelta(seconds=10)
# Marks container workflows that keep their placement in the memo apothic.placement.
PLACED_PATCH = "apothic-container-placed"


@workflow.defn(name=CONTAINER_WORKFLOW)
class ContainerWorkflow:
    """Start → watch → (drain | failure | cancel) → release, then tell the fleet.

    The provider activity starts the container, heartbeats while it lives and stops it
    gracefully when cancelled (a drain lets in-flight inputs finish). Whatever happened, the
    ``release`` activity runs last, so no process, container or rented machine outlives its
    workflow.
    """

    @workflow.init
    def __init__(self, inp: ContainerInput) -> None:
        self.inp = inp
        self.drain_requested = False
        self.state = "starting"
        self.placement: Placement | None = None
        self.placed_at: datetime | None = None

    @workflow.signal
    def drain(self) -> None:
        self.drain_requested = True

    @workflow.signal(name=CONTAINER_PLACED_SIGNAL)
    def placed(self, placement: Placement) -> None:
        """From ``run_container``: where the container was started. Kept in the memo
        ``apothic.placement`` (its runtime reads it there) and returned with the result."""
        if self.placement == placement:
            return
        self.placement = placement
        self.placed_at = self.placed_at or workflow.now()
        if workflow.patched(PLACED_PATCH):  # a new command: not where an older worker handled the signal
            workflow.upsert_memo({PLACEMENT_MEMO_KEY: placement})
        workflow.set_current_details(placement_text(placement))

    @workflow.query
    def status(self) -> str:
        return self.state

    @workflow.run
    async def run(self, inp: ContainerInput) -> RunContainerOutput:
        dep = inp.deployment
        ok, reason, exit_code = True, "drained", 0
        permanent = False  # a start that no retry can fix (ContainerStartRefused)
        provider = dep.spec.provider  # "" until the run says where it was placed
        where: dict[str, Any] = {}
        run = workflow.start_activity(
            RUN_CONTAINER_ACTIVITY,
            RunContainerInput(
                container_id=inp.container_id, container_workflow_id=workflow.info().workflow_id, deployment=dep
            ),
            result_type=RunContainerOutput,
            start_to_close_timeout=timedelta(days=365),
            heartbeat_timeout=RUN_HEARTBEAT,
            # A lost or restarted control worker is retried without limit (the next attempt
            # adopts the running container); a container that exited is final.
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                maximum_interval=timedelta(seconds=10),
                non_retryable_error_types=["ContainerExited", "ContainerStartFailed", "ContainerStartRefused"],
            ),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"run container {inp.container_id}",
        )
        self.state = "running"
        cancelled = False
        try:
            await workflow.wait_condition(lambda: self.drain_requested or run.done())
            if not run.done():
                self.state = "draining"
                run.cancel()
            try:
                out = await run
                exit_code, reason = out.exit_code, out.reason or "exited"
                provider, where = out.provider or provider, out.where
                ok = out.exit_code in (EXIT_OK, EXIT_REPLACE)
            except ActivityError as e:
                if self.drain_requested and isinstance(e.cause, CancelledError):
                    ok, reason = True, "drained"
                else:
                    cause = e.cause
                    ok, exit_code = False, _exit_code(cause)
                    reason = cause.message if isinstance(cause, ApplicationError) else str(cause or e)
                    permanent = isinstance(cause, ApplicationError) and cause.type == "ContainerStartRefused"
        except (asyncio.CancelledError, CancelledError):
            # Cancelled from outside (UI, CLI): stop the container, then release as below.
            # (Not a `finally`: that would also run when the worker evicts this workflow.)
            cancelled, ok, reason = True, True, "cancelled"
            if not run.done():
                run.cancel()
                try:
                    await run
                except (ActivityError, asyncio.CancelledError, CancelledError):
                    pass
        ended_at = workflow.now()
        if self.placement is not None:
            provider = self.placement.provider  # release on the provider it ran on
        self.state = "releasing"
        release_error = ""
        try:
            await workflow.execute_activity(
                RELEASE_CONTAINER_ACTIVITY,
                ReleaseInput(container_id=inp.container_id, provider=provider),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=30)),
            )
            self.state = "released"
        except ActivityError as e:
            # Tell the fleet anyway (it must not wait for a container that is gone), then end
            # failed so that the Temporal UI shows what may be left behind.
            cause = e.cause
            release_error = cause.message if isinstance(cause, ApplicationError) else str(cause or e)
            ok, reason, self.state = False, f"{reason}; release failed: {release_error}", "release_failed"
        try:
            await workflow.get_external_workflow_handle(inp.fleet_id).signal(
                "container_stopped",
                ContainerStopped(container_id=inp.container_id, ok=ok, reason=reason, permanent=permanent),
            )
        except Exception:
            pass  # the fleet has ended; nobody is waiting for this container
        if release_error:
            raise ApplicationError(f"container {inp.container_id} was not released: {release_error}")
        if cancelled:
            raise CancelledError("container workflow cancelled")
        return self._output(exit_code, reason, provider, where, ended_at)

    def _output(self, exit_code: int, reason: str, provider: str, where: dict[str, Any], ended_at: datetime) -> RunContainerOutput:
        """The result: how the container ended and, truthfully, where it ran and for how long."""
        placement = self.placement
        rented_s = max(0.0, (ended_at - self.placed_at).total_seconds()) if self.placed_at else 0.0
        if placement is not None:
            provider = placement.provider
            facts = {k: v for k, v in dataclasses.asdict(placement).items() if v not in ("", 0, 0.0)}
            where = {**facts, **where}
        return RunContainerOutput(
            container_id=self.inp.container_id, exit_code=exit_code, reason=reason, provider=provider, where=where,
            placement=placement, rented_s=round(rented_s, 3),
            cost_usd=round(rented_s * placement.dph / 3600, 6) if placement is not None else 0.0,
        )


def _exit_code(cause: BaseException | None) -> int:
    """The code a failed container exited with (``ContainerExited`` details), -1 if unknown."""
    if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0], dict):
        code = cause.details[0].get("exit_code")
        if isinstance(code, int):
            return code
    return -1


def placement_text(p: Placement) -> str:
    """The placement as the Temporal UI shows it in the workflow's current details (Markdown)."""
    parts = [f"**{p.provider}**" + (f" on {p.host}" if p.host else "")]
    if p.instance:
        parts.append({"process": "pid", "docker": "docker container", "vast": "instance"}.get(p.provider, "instance")
                     + f" {p.instance}")
    if p.offer_id:
        parts.append(f"offer {p.offer_id}")
    if p.image:
        parts.append(f"image `{p.image}`")
    if p.gpu_name:
        parts.append(f"{p.num_gpus} x {p.gpu_name}")
    if p.geolocation:
        parts.append(p.geolocation)
    parts.append(f"${p.dph:.4f}/h")
    return f"container `{p.container_id}`: " + ", ".join(parts)
