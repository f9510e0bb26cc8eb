"""InvocationWorkflow: one call of a function (a Job)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    TimeoutError as TemporalTimeoutError,
    TimeoutType,
)

from apothic._contracts import (
    ENSURE_FLEET_ACTIVITY,
    EXECUTE_ACTIVITY,
    INVOCATION_WORKFLOW,
    RESOLVE_ACTIVITY,
    Demand,
    Deployment,
    EnsureFleetRequest,
    ExecuteInput,
    ExecuteOutput,
    InvocationInput,
    InvocationResult,
    JobInfo,
    ResolveRequest,
)

# The function container heartbeats every second while a function runs; this is how long
# silence means the container is gone.
EXECUTE_HEARTBEAT = timedelta(seconds=15)
# A job not finished this soon asks its fleet for capacity (a warm call never does).
DEMAND_AFTER = timedelta(milliseconds=250)
# Extra time the server allows beyond the function's own timeout, which the container
# enforces itself (and reports as FunctionTimeoutError).
TIMEOUT_GRACE = timedelta(seconds=15)


@workflow.defn(name=INVOCATION_WORKFLOW)
class InvocationWorkflow:
    """Resolve the deployment, ask its fleet for capacity, run the input, return its result.

    Failures are returned as ``ApplicationError`` with a stable ``type``: the user's own
    exception type (details carry the pickled exception and the remote traceback),
    ``FunctionTimeoutError``, ``PlacementError`` or ``NotFound``.
    """

    @workflow.init
    def __init__(self, inp: InvocationInput) -> None:
        self.inp = inp
        self.status = "queued"
        self.version = inp.version
        self.error = ""
        self.capacity_error = ""
        self.demanded = False

    @workflow.run
    async def run(self, inp: InvocationInput) -> InvocationResult:
        dep = inp.deployment
        if dep is None:  # started without a client that resolved it (e.g. by a schedule)
            try:
                dep = await workflow.execute_local_activity(
                    RESOLVE_ACTIVITY,
                    ResolveRequest(app=inp.app, function=inp.function, version=inp.version),
                    result_type=Deployment,
                    start_to_close_timeout=timedelta(seconds=10),
                    retry_policy=RetryPolicy(maximum_attempts=5, non_retryable_error_types=["NotFound"]),
                )
            except ActivityError as e:
                self.status = "failed"
                raise self._translate(e, 0, 0) from None
        self.version = dep.version
        spec = dep.spec
        retry = spec.retry
        startup_s = dep.startup_timeout_s

        execute = workflow.start_activity(
            EXECUTE_ACTIVITY,
            ExecuteInput(
                job_id=inp.job_id, function=dep.function, version=dep.version, args=inp.args, timeout_s=spec.timeout_s
            ),
            task_queue=dep.task_queue,
            result_type=ExecuteOutput,
            schedule_to_start_timeout=timedelta(seconds=startup_s),
            start_to_close_timeout=timedelta(seconds=spec.timeout_s) + TIMEOUT_GRACE,
            heartbeat_timeout=EXECUTE_HEARTBEAT,
            retry_policy=RetryPolicy(
                maximum_attempts=retry.max_retries + 1,
                initial_interval=timedelta(seconds=retry.initial_delay),
                backoff_coefficient=retry.backoff_coefficient,
                maximum_interval=timedelta(seconds=max(retry.max_delay, retry.initial_delay)),
                non_retryable_error_types=["apothic.InvalidInput"],
            ),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"{dep.app}.{dep.function} v{dep.version}",
        )
        fleet = workflow.get_external_workflow_handle(dep.fleet_id)
        try:
            # A warm container takes the input at once: the fleet is not involved. Only a job
            # still unfinished after DEMAND_AFTER tells the fleet that it wants capacity.
            try:
                await workflow.wait_condition(execute.done, timeout=DEMAND_AFTER)
            except asyncio.TimeoutError:
                await self._demand(fleet, dep)
            await workflow.wait_condition(lambda: execute.done() or bool(self.capacity_error))
            if not execute.done():
                execute.cancel()
                raise ApplicationError(self.capacity_error, type="PlacementError", non_retryable=True)
            out = await execute
        except ActivityError as e:
            self.status = "failed"
            await self._release_demand(fleet)
            raise self._translate(e, spec.timeout_s, startup_s) from None
        except (asyncio.CancelledError, CancelledError):
            self.status = "cancelled"
            if not execute.done():
                # Wait until the container has stopped the function (or it finished anyway).
                execute.cancel()
                try:
                    await execute
                except (ActivityError, asyncio.CancelledError, CancelledError):
                    pass
            await self._release_demand(fleet)
            raise
        except ApplicationError:
            self.status = "failed"
            await self._release_demand(fleet)
            raise
        self.status = "completed"
        await self._release_demand(fleet)
        return InvocationResult(value=out.value, logs=out.logs, version=dep.version, container_id=out.container_id)

    async def _release_demand(self, fleet: workflow.ExternalWorkflowHandle) -> None:
        """Tell the fleet this job no longer needs capacity (only if it asked for some).

        Called on every way out but eviction (hence no ``finally``). Awaited: a signal command
        left pending when the workflow completes is not sent.
        """
        if self.demanded:
            try:
                await fleet.signal("demand", Demand(job_id=self.inp.job_id, active=False))
            except Exception:  # the fleet has ended: nothing to release
                pass

    async def _demand(self, fleet: workflow.ExternalWorkflowHandle, dep: Deployment) -> None:
        self.demanded = True
        demand = Demand(job_id=self.inp.job_id)
        try:
            await fleet.signal("demand", demand)
        except Exception:
            # The fleet is not running (first call of this version, or it ended): start it.
            await workflow.execute_local_activity(
                ENSURE_FLEET_ACTIVITY,
                EnsureFleetRequest(deployment=dep, demand=demand),
                start_to_close_timeout=timedelta(seconds=30),
            )

    def _translate(self, e: ActivityError, timeout_s: int, startup_s: float) -> BaseException:
        cause = e.cause
        if isinstance(cause, ApplicationError):
            self.error = f"{cause.type}: {cause.message}"
            return ApplicationError(cause.message, *cause.details, type=cause.type, non_retryable=True)
        if isinstance(cause, TemporalTimeoutError):
            if cause.type == TimeoutType.SCHEDULE_TO_START:
                self.error = f"no container took the input within {startup_s:.0f} s"
                return ApplicationError(
                    f"{self.error}. Look at the control worker's log and the fleet workflow "
                    f"apothic-fleet:{self.inp.app}:{self.inp.function}:v{self.version} in the Temporal UI; "
                    "raise worker.startup_timeout_s in temporal-dev.yaml if containers start slowly.",
                    type="PlacementError",
                    non_retryable=True,
                )
            if cause.type == TimeoutType.HEARTBEAT:
                self.error = "the function's container stopped responding"
                return ApplicationError(self.error, type="ContainerLost", non_retryable=True)
            self.error = f"the function ran longer than its timeout_s={timeout_s}"
            return ApplicationError(self.error, type="FunctionTimeoutError", non_retryable=True)
        if isinstance(cause, CancelledError):
            return cause
        self.error = str(cause or e)
        return ApplicationError(self.error, type="RemoteError", non_retryable=True)

    @workflow.signal
    def capacity_failed(self, reason: str) -> None:
        """From the fleet: no container could be started for this job."""
        self.capacity_error = reason

    @workflow.query
    def info(self) -> JobInfo:
        return JobInfo(
            job_id=self.inp.job_id,
            app=self.inp.app,
            function=self.inp.function,
            version=self.version,
            status=self.status,
            error=self.error,
        )
