"""InvocationWorkflow: one call of a function (a Job)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.contrib.workflow_streams import WorkflowStream
from temporalio.exceptions import ApplicationError, CancelledError

from apothic._contracts import (
    CONTAINER_EVENT_SIGNAL,
    ENSURE_FLEET_ACTIVITY,
    INVOCATION_WORKFLOW,
    RUNTIME_EVENTS_SIGNAL,
    AttemptRecord,
    Demand,
    Deployment,
    EnsureFleetRequest,
    ExecuteOutput,
    InvocationInput,
    InvocationResult,
    JobEventIn,
    JobEventsIn,
    JobInfo,
    JobLogs,
)

from ._attempts import ATTEMPT_LOGS_PATCH, Failure, InputRunner, resolve
from ._events import JobEvents
from ._where import JobWhere

# A job not finished this soon asks its fleet for capacity (a warm call never does).
DEMAND_AFTER = timedelta(milliseconds=250)
# Marks workflows that ask for capacity with signal-with-start (see demand_capacity).
DEMAND_WITH_START_PATCH = "apothic-demand-with-start"


@workflow.defn(name=INVOCATION_WORKFLOW)
class InvocationWorkflow:
    """Resolve the deployment, run the input (retrying by kind, see ``InputRunner``), return its
    result.

    Failures are returned as ``ApplicationError`` with a stable ``type``: the user's own
    exception type (details carry the pickled exception and the remote traceback),
    ``FunctionTimeoutError``, ``PlacementError``, ``ContainerLost`` or ``NotFound``.

    It keeps the job's typed event log (``_events.JobEvents``, a workflow stream): queued,
    placement and the other container-side steps (signal ``container_event``), started, log and
    output (signal ``runtime_events`` from the function container), retry, and one terminal
    event: completed, failed or cancelled.
    """

    @workflow.init
    def __init__(self, inp: InvocationInput) -> None:
        if not inp.job_id:  # started by a schedule: the job id is the workflow id (action id + time)
            inp = dataclasses.replace(inp, job_id=workflow.info().workflow_id)
        self.inp = inp
        self.status = "queued"
        self.version = inp.version
        self.error = ""
        self.capacity_error = ""
        self.demanded = False
        self.runner: InputRunner | None = None
        self.fleet: workflow.ExternalWorkflowHandle | None = None
        self.container_id = ""
        # Built here: WorkflowStream registers its handlers and must be made in __init__.
        self.events = JobEvents(WorkflowStream())
        self.where = JobWhere()  # where each attempt ran (from its started event)
        self.retry_text = ""

    @workflow.run
    async def run(self, inp: InvocationInput) -> InvocationResult:
        inp = self.inp
        self.events.emit(
            "queued", {"job_id": inp.job_id, "app": inp.app, "function": inp.function, "version": inp.version}
        )
        dep = inp.deployment
        if dep is None:  # started without a client that resolved it (e.g. by a schedule)
            try:
                dep = await resolve(inp.app, inp.function, inp.version)
            except ApplicationError as e:
                self.status = "failed"
                self.events.emit("failed", {"type": e.type or "", "message": e.message, "attempt": 0})
                await self.events.close()
                raise
        self.version = dep.version
        self.fleet = workflow.get_external_workflow_handle(dep.fleet_id)
        self.runner = InputRunner(dep, inp.job_id, events=self.events)
        self.runner.on_retry = self._on_retry
        try:
            out = await self.runner.run(inp.args, wait=lambda execute: self._wait(dep, execute))
        except ApplicationError as e:
            self.status = "failed"
            self.error = e.message
            self.events.emit(
                "failed", {"type": e.type or "", "message": e.message[:2000], "attempt": self.runner.attempt}
            )
            await self._release_demand()
            await self.events.close()
            raise
        except (asyncio.CancelledError, CancelledError):
            self.status = "cancelled"
            self._attempt_ended(self.runner.attempt)
            self.events.emit("cancelled", {"attempt": self.runner.attempt})
            await self._release_demand()
            await self.events.close()
            raise
        self.status = "completed"
        self.container_id = out.container_id
        if out.events is not None:
            self._runtime_batch(out.events)
        self.events.emit(
            "completed",
            {"attempt": self.runner.attempt, "container_id": out.container_id, "outputs": self.events.outputs},
        )
        await self._release_demand()
        await self.events.close()
        earlier = None
        if self.runner.logs and workflow.patched(ATTEMPT_LOGS_PATCH):  # retried: every attempt's output
            earlier = self.runner.earlier("completed")
        return InvocationResult(
            value=out.value, logs=out.logs, version=dep.version, container_id=out.container_id, earlier=earlier
        )

    async def _wait(self, dep: Deployment, execute: workflow.ActivityHandle[ExecuteOutput]) -> None:
        self.status = "queued"
        if not self.demanded:
            # A warm container takes the input at once: the fleet is not involved. Only a job
            # still unfinished after DEMAND_AFTER tells the fleet it wants capacity, unless the
            # client saw every slot taken (it will wait: the fleet counts it at once, which
            # keeps its pending count, and max_pending_tasks, close to the truth in a burst).
            if self.inp.demand_now:
                await self._demand(dep)
            else:
                try:
                    await workflow.wait_condition(execute.done, timeout=DEMAND_AFTER)
                except asyncio.TimeoutError:
                    await self._demand(dep)
        await workflow.wait_condition(lambda: execute.done() or bool(self.capacity_error))
        if execute.done():
            self._attempt_ended(self.runner.attempt if self.runner else 0)
        else:
            raise Failure(
                "final",
                self.capacity_error,
                ApplicationError(self.capacity_error, type="PlacementError", non_retryable=True),
            )

    def _on_retry(self, record: AttemptRecord) -> None:
        self.error = record.reason
        self.events.emit(
            "retry",
            {"attempt": record.attempt, "kind": record.kind, "reason": record.reason, "retry_in_s": record.retry_in_s},
        )
        self.retry_text = (
            f"attempt {record.attempt} failed ({record.kind}): {record.reason[:500]}\n\n"
            f"retrying in {record.retry_in_s:g} s"
        )
        self._show()

    def _show(self) -> None:
        """The job's current details in the Temporal UI: where its attempts ran, the last retry."""
        workflow.set_current_details("\n\n".join(t for t in (self.where.text(), self.retry_text) if t))

    def _attempt_ended(self, attempt: int) -> None:
        self.where.ended_attempt(attempt)
        self._show()

    def _runtime_batch(self, batch: JobEventsIn) -> bool:
        """Events of the running attempt from its container (signal, or the result of a quick
        call); True if it reported ``started``."""
        attempt = self.runner.attempt if self.runner else 0
        if self.where.started(batch, attempt):
            self._show()
        return self.events.add_runtime_batch(batch, attempt)

    async def _release_demand(self) -> None:
        """Tell the fleet this job no longer needs capacity (only if it asked for some).

        Called on every way out but eviction (hence no ``finally``). Awaited: a signal command
        left pending when the workflow completes is not sent.
        """
        if self.demanded and self.fleet is not None:
            try:
                await self.fleet.signal("demand", Demand(job_id=self.inp.job_id, active=False))
            except Exception:  # the fleet has ended: nothing to release
                pass

    async def _demand(self, dep: Deployment) -> None:
        self.demanded = True
        self.events.emit("placement", {"status": "requested", "fleet_id": dep.fleet_id})
        await demand_capacity(dep, Demand(job_id=self.inp.job_id))

    @workflow.signal
    def capacity_failed(self, reason: str) -> None:
        """From the fleet: no container could be started for this job."""
        self.capacity_error = reason
        self.events.emit("placement", {"status": "failed", "reason": reason[:2000]})

    @workflow.signal(name=CONTAINER_EVENT_SIGNAL)
    def container_event(self, ev: JobEventIn) -> None:
        """From the control worker's ``run_container``: a container-side step (placement,
        provisioning, image, volume, container) to add to the job's event log."""
        self.events.add_container_event(ev)

    @workflow.signal(name=RUNTIME_EVENTS_SIGNAL)
    def runtime_events(self, batch: JobEventsIn) -> None:
        """From the function container: the running attempt's started, log and output events."""
        if self._runtime_batch(batch):
            self.status = "running"
            self.container_id = batch.container_id

    @workflow.query
    def info(self) -> JobInfo:
        runner = self.runner
        return JobInfo(
            job_id=self.inp.job_id,
            app=self.inp.app,
            function=self.inp.function,
            version=self.version,
            status=self.status,
            attempt=runner.attempt if runner else 0,
            container_id=self.container_id,
            error=self.error,
            attempts=list(runner.records) if runner else [],
            **self.where.info(),
        )

    @workflow.query
    def logs(self) -> JobLogs:
        """The output of the attempts before the current one (the running attempt's own output
        is in its activity's heartbeat)."""
        return self.runner.earlier() if self.runner else JobLogs()


async def demand_capacity(dep: Deployment, demand: Demand) -> None:
    """Signal demand to the deployment's fleet, starting the fleet if none runs.

    The local activity ``apothic.ensure_fleet`` signal-with-starts the fleet: one request that
    works whether the fleet runs or not, so the first call of a version (no fleet yet) leaves no
    failed signal in its history. Workflows from before it signal first and start the fleet
    only when that signal fails.
    """
    if not workflow.patched(DEMAND_WITH_START_PATCH):
        try:
            await workflow.get_external_workflow_handle(dep.fleet_id).signal("demand", demand)
            return
        except Exception:  # noqa: BLE001, S110 - the fleet is not running (first call, or it ended): start it
            pass
    await workflow.execute_local_activity(
        ENSURE_FLEET_ACTIVITY,
        EnsureFleetRequest(deployment=dep, demand=demand),
        start_to_close_timeout=timedelta(seconds=30),
    )
