"""InvocationWorkflow: one call of a function (a Job)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

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
    AttemptRecord,
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
from apothic._serialization import CloudPickled

# The function container heartbeats every second while a function runs; this long a silence
# means its container (or host) is gone.
EXECUTE_HEARTBEAT = timedelta(seconds=5)
# A job not finished this soon asks its fleet for capacity (a warm call never does).
DEMAND_AFTER = timedelta(milliseconds=250)
# Extra time the server allows beyond the function's own timeout, which the container
# enforces itself (and reports as FunctionTimeoutError).
TIMEOUT_GRACE = timedelta(seconds=15)
# Infrastructure failures (a lost container or host) retried before the job fails; they never
# count against the function's own retries.
MAX_INFRA_RETRIES = 5
INFRA_BACKOFF_MAX_S = 30.0
# Error types that no retry can fix.
NEVER_RETRY = {"apothic.InvalidInput", "apothic.InvalidResult", "apothic.exceptions.InvalidError",
               "apothic.exceptions.NotSupportedError"}


class _Failure(Exception):
    """One failed attempt, classified."""

    def __init__(self, kind: str, reason: str, error: BaseException, checkpoint: Any = None) -> None:
        super().__init__(reason)
        self.kind = kind  # "user", "infrastructure", "final"
        self.reason = reason
        self.error = error
        self.checkpoint = checkpoint


@workflow.defn(name=INVOCATION_WORKFLOW)
class InvocationWorkflow:
    """Resolve the deployment, run the input (retrying as the policy says), return its result.

    Retries are driven here, one activity per attempt, so that the two kinds stay apart: the
    function's own errors and timeouts use its ``Retries`` (with their backoff, durable across
    restarts); a lost container or host is retried up to ``MAX_INFRA_RETRIES`` times without
    touching that budget, and hands the function's last checkpoint to the next attempt.

    Failures are returned as ``ApplicationError`` with a stable ``type``: the user's own
    exception type (details carry the pickled exception and the remote traceback),
    ``FunctionTimeoutError``, ``PlacementError``, ``ContainerLost`` or ``NotFound``.
    """

    @workflow.init
    def __init__(self, inp: InvocationInput) -> None:
        self.inp = inp
        self.status = "queued"
        self.version = inp.version
        self.error = ""
        self.capacity_error = ""
        self.demanded = False
        self.attempt = 0
        self.attempts: list[AttemptRecord] = []

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
                cause = e.cause
                message = cause.message if isinstance(cause, ApplicationError) else str(cause or e)
                raise ApplicationError(message, type="NotFound", non_retryable=True) from None
        self.version = dep.version
        fleet = workflow.get_external_workflow_handle(dep.fleet_id)
        user_retries = infra_retries = 0
        checkpoint: CloudPickled | None = None
        try:
            while True:
                self.attempt += 1
                try:
                    out = await self._attempt(dep, fleet, checkpoint)
                    break
                except _Failure as f:
                    retry = dep.spec.retry
                    if f.kind == "infrastructure" and infra_retries < MAX_INFRA_RETRIES:
                        infra_retries += 1
                        checkpoint = f.checkpoint or checkpoint
                        delay = min(2.0 ** (infra_retries - 1), INFRA_BACKOFF_MAX_S)
                    elif f.kind == "user" and user_retries < retry.max_retries:
                        user_retries += 1
                        delay = retry.delay(user_retries)
                    else:
                        self._record(f, 0.0, retried=False)
                        raise f.error from None
                    self._record(f, delay, retried=True)
                    self.status = "queued"
                    await workflow.sleep(timedelta(seconds=delay), summary=f"{f.kind} retry {self.attempt}")
        except ApplicationError:
            self.status = "failed"
            await self._release_demand(fleet)
            raise
        except (asyncio.CancelledError, CancelledError):
            self.status = "cancelled"
            await self._release_demand(fleet)
            raise
        self.status = "completed"
        await self._release_demand(fleet)
        return InvocationResult(value=out.value, logs=out.logs, version=dep.version, container_id=out.container_id)

    async def _attempt(
        self, dep: Deployment, fleet: workflow.ExternalWorkflowHandle, checkpoint: CloudPickled | None
    ) -> ExecuteOutput:
        spec = dep.spec
        execute = workflow.start_activity(
            EXECUTE_ACTIVITY,
            ExecuteInput(
                job_id=self.inp.job_id,
                function=dep.function,
                version=dep.version,
                args=self.inp.args,
                timeout_s=spec.timeout_s,
                attempt=self.attempt,
                checkpoint=checkpoint,
            ),
            task_queue=dep.task_queue,
            result_type=ExecuteOutput,
            schedule_to_start_timeout=timedelta(seconds=dep.startup_timeout_s),
            start_to_close_timeout=timedelta(seconds=spec.timeout_s) + TIMEOUT_GRACE,
            heartbeat_timeout=EXECUTE_HEARTBEAT,
            retry_policy=RetryPolicy(maximum_attempts=1),  # attempts are counted here, by kind
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"{dep.app}.{dep.function} v{dep.version} attempt {self.attempt}",
        )
        self.status = "queued"
        try:
            if not self.demanded:
                # A warm container takes the input at once: the fleet is not involved. Only a
                # job still unfinished after DEMAND_AFTER tells the fleet it wants capacity.
                try:
                    await workflow.wait_condition(execute.done, timeout=DEMAND_AFTER)
                except asyncio.TimeoutError:
                    await self._demand(fleet, dep)
            await workflow.wait_condition(lambda: execute.done() or bool(self.capacity_error))
            if not execute.done():
                execute.cancel()
                raise _Failure(
                    "final",
                    self.capacity_error,
                    ApplicationError(self.capacity_error, type="PlacementError", non_retryable=True),
                )
            return await execute
        except ActivityError as e:
            raise self._classify(e, dep) from None
        except (asyncio.CancelledError, CancelledError):
            if not execute.done():
                # Wait until the container has stopped the function (or it finished anyway).
                execute.cancel()
                try:
                    await execute
                except (ActivityError, asyncio.CancelledError, CancelledError):
                    pass
            raise

    def _classify(self, e: ActivityError, dep: Deployment) -> _Failure:
        cause = e.cause
        spec = dep.spec
        if isinstance(cause, ApplicationError):
            error = ApplicationError(cause.message, *cause.details, type=cause.type, non_retryable=True)
            kind = cause.type or ""
            if kind in NEVER_RETRY or kind in spec.retry.non_retryable or cause.non_retryable:
                return _Failure("final", f"{kind}: {cause.message}", error)
            return _Failure("user", f"{kind}: {cause.message}", error)
        if isinstance(cause, TemporalTimeoutError):
            if cause.type == TimeoutType.SCHEDULE_TO_START:
                reason = f"no container took the input within {dep.startup_timeout_s:.0f} s"
                return _Failure(
                    "final",
                    reason,
                    ApplicationError(
                        f"{reason}. Look at the control worker's log and the fleet workflow {dep.fleet_id} in the "
                        "Temporal UI; raise worker.startup_timeout_s in temporal-dev.yaml if containers start slowly.",
                        type="PlacementError",
                        non_retryable=True,
                    ),
                )
            details = cause.last_heartbeat_details
            checkpoint = None
            if details and isinstance(details[0], dict) and isinstance(details[0].get("checkpoint"), dict):
                checkpoint = CloudPickled(**details[0]["checkpoint"])
            what = "stopped responding" if cause.type == TimeoutType.HEARTBEAT else "never answered"
            reason = f"the function's container {what} (attempt {self.attempt})"
            return _Failure(
                "infrastructure",
                reason,
                ApplicationError(
                    f"{reason}; gave up after {MAX_INFRA_RETRIES} infrastructure retries",
                    type="ContainerLost",
                    non_retryable=True,
                ),
                checkpoint,
            )
        if isinstance(cause, CancelledError):
            return _Failure("final", "cancelled", cause)
        return _Failure("final", str(cause or e), ApplicationError(str(cause or e), type="RemoteError", non_retryable=True))

    def _record(self, f: _Failure, delay: float, retried: bool) -> None:
        self.error = f.reason
        self.attempts.append(
            AttemptRecord(
                attempt=self.attempt,
                kind=f.kind,
                reason=f.reason[:2000],
                at=workflow.now().isoformat(),
                retry_in_s=delay,
                retried=retried,
            )
        )
        if retried:
            workflow.set_current_details(
                f"attempt {self.attempt} failed ({f.kind}): {f.reason[:500]}\n\nretrying in {delay:g} s"
            )

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
            attempt=self.attempt,
            error=self.error,
            attempts=list(self.attempts),
        )
