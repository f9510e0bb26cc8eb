"""FleetWorkflow: the autoscaler of one deployment (app, function, version)."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from apothic._contracts import (
    CLOSED_JOBS_ACTIVITY,
    CONTAINER_WORKFLOW,
    FLEET_PENDING_MEMO_KEY,
    FLEET_WORKFLOW,
    ClosedJobsRequest,
    ClosedJobsResult,
    ContainerInput,
    ContainerRecord,
    ContainerStopped,
    Demand,
    FleetInput,
    FleetPending,
    FleetStatus,
    container_slots,
    container_target,
    container_workflow_id,
    fleet_slots,
)

# Consecutive container failures after which the jobs waiting for capacity are failed.
MAX_START_FAILURES = 3
MAX_BACKOFF_S = 60.0
# Continue-as-new well before Temporal's history limits.
MAX_HISTORY_EVENTS = 4000
FLEET_CHANGED_EARLY_PATCH = "apothic-fleet-changed-early"
# Marks fleets that count draining containers against max_containers and publish their
# pending count (memo apothic.pending) for max_pending_tasks.
FLEET_KNOBS_PATCH = "apothic-fleet-knobs"


@workflow.defn(name=FLEET_WORKFLOW)
class FleetWorkflow:
    """Starts containers for the jobs that wait for this deployment.

    A job that is not finished shortly after it was submitted signals ``demand`` (and
    ``demand(active=False)`` when it ends); calls served at once by a warm container never
    involve the fleet. A map's demand weighs the batches it has in flight. The fleet runs
    ``ceil(demand / container_target)`` containers (``target_inputs``, default
    ``concurrent_requests``, per process, times ``tasks_per_container``), at most
    ``max_containers``, draining ones included. It publishes how many inputs wait beyond the
    ceiling's slots in its memo (``FleetPending``), which clients read before a spawn to
    enforce ``max_pending_tasks``. A container drains itself after the idle window without inputs;
    each is a ContainerWorkflow (abandoned child) that signals ``container_stopped`` once it
    has released its machine. A fleet with no container and no waiting job ends. A retired
    fleet (its version was superseded or the app removed) still serves the jobs that started on
    its version, and drains its containers as soon as none waits.

    The signal ``drain`` (``apothic apps stop``) drains every container now and keeps the fleet:
    the jobs outstanding at that moment are "held" (their inputs run on the draining
    containers, so they start no container) until no draining container is left; jobs that
    come later start containers as usual, and so do held ones still waiting after that.
    """

    @workflow.init
    def __init__(self, inp: FleetInput) -> None:
        self.dep = inp.deployment
        self.containers: dict[str, ContainerRecord] = {c.container_id: c for c in inp.containers}
        # job id -> how many inputs at once it can use
        self.outstanding: dict[str, int] = {j: inp.weights.get(j, 1) for j in inp.outstanding}
        self.failures = inp.failures
        self.retired = inp.retired
        self.last_error = ""
        self.refused = False  # the last failure was permanent (ContainerStopped.permanent)
        self.changed = False
        self.knobs = False  # FLEET_KNOBS_PATCH, decided in the first round
        self.published = FleetPending()  # what the memo says (carried by continue-as-new)
        # The signal ``drain`` (``apothic apps stop``): done in the next round.
        self.drain_requested = inp.drain
        # Jobs outstanding when the containers were drained: not counted when scaling up while a
        # draining container is left (they run there, or get a container once those are gone).
        self.held: set[str] = set(inp.held)

    @workflow.signal
    def demand(self, d: Demand) -> None:
        if d.active:
            if not self.outstanding and self.failures >= MAX_START_FAILURES:
                self.failures = 0  # past failures failed the jobs of their time; try afresh
            self.outstanding[d.job_id] = max(1, d.weight)
        else:
            self.outstanding.pop(d.job_id, None)
            self.held.discard(d.job_id)
        self.changed = True

    @workflow.signal
    def container_stopped(self, s: ContainerStopped) -> None:
        self.containers.pop(s.container_id, None)
        if s.ok:
            self.failures = 0
        else:
            self.failures += 1
            self.last_error = s.reason
            if s.permanent:  # no other start can pass (an image that cannot be built): fail the jobs now
                self.refused, self.failures = True, max(self.failures, MAX_START_FAILURES)
        self._release_held()
        self.changed = True

    @workflow.signal
    def retire(self) -> None:
        self.retired = True
        self.changed = True

    @workflow.signal
    def drain(self) -> None:
        """Drain every container now (``apothic apps stop``); the fleet stays for later calls."""
        self.drain_requested = True
        self.changed = True

    def _release_held(self) -> None:
        """Held jobs count again once no draining container is left to finish their inputs."""
        if self.held and not any(c.draining for c in self.containers.values()):
            self.held.clear()

    @workflow.query
    def status(self) -> FleetStatus:
        spec = self.dep.spec
        return FleetStatus(
            deployment=self.dep,
            containers=list(self.containers.values()),
            outstanding=list(self.outstanding),
            failures=self.failures,
            retired=self.retired,
            last_error=self.last_error,
            demand=self._demand(),
            waiting=max(0, self._demand() - fleet_slots(spec)),
            slots_per_container=container_slots(spec),
            wanted=self._wanted(),
        )

    @workflow.run
    async def run(self, inp: FleetInput) -> None:
        self.published = workflow.memo_value(FLEET_PENDING_MEMO_KEY, FleetPending(), type_hint=FleetPending)
        while True:
            # Cleared before this round's awaits, so that a signal arriving while it starts
            # containers wakes the next round at once (older runs cleared it after them and
            # could sleep until the timer with demand waiting).
            changed_early = workflow.patched(FLEET_CHANGED_EARLY_PATCH)
            if changed_early:
                self.changed = False
            self.knobs = workflow.patched(FLEET_KNOBS_PATCH)
            if self.failures >= MAX_START_FAILURES and self.outstanding and not self.containers:
                # No container is alive, so none of these jobs is running: they all wait in vain.
                await self._fail_waiting_jobs()
            if self.knobs:
                self._publish_pending()  # before starting containers, which takes a task each
            if self.drain_requested:  # never true in histories from before the signal existed
                self.drain_requested = False
                self.held |= set(self.outstanding)
                await self._drain_all()
                self._release_held()
            if self.retired and not self.outstanding:
                await self._drain_all()
            else:
                await self._scale_up()
            if self.knobs:
                self._publish_pending()
            if not self.containers and not self.outstanding:
                return  # nothing to hold; the next job that waits starts the fleet again
            if self._should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._carry())
            timeout = self._next_wakeup()
            if not changed_early:
                self.changed = False
            try:
                await workflow.wait_condition(lambda: self.changed, timeout=timeout)
            except asyncio.TimeoutError:
                await self._on_timer()

    def _active(self) -> list[ContainerRecord]:
        return [c for c in self.containers.values() if not c.draining]

    def _demand(self) -> int:
        """Inputs the outstanding callers run or wait to run (a job: 1, a map: its batches)."""
        return sum(self.outstanding.values())

    def _wanted(self) -> int:
        if not self.outstanding:
            return 0
        # target_inputs (default concurrent_requests) per process, tasks_per_container processes
        # (both 1 for deployments from before they existed: the old rule).
        per = container_target(self.dep.spec)
        demand = sum(w for j, w in self.outstanding.items() if j not in self.held) if self.held else self._demand()
        return min(self.dep.spec.max_containers, math.ceil(demand / per))

    def _to_start(self) -> int:
        """Containers to start now: what the demand wants beyond the active ones, and never
        past ``max_containers`` alive, counting those still draining (older runs did not)."""
        missing = self._wanted() - len(self._active())
        if self.knobs:
            missing = min(missing, self.dep.spec.max_containers - len(self.containers))
        return missing

    async def _scale_up(self) -> None:
        if self._to_start() <= 0 or self.failures >= MAX_START_FAILURES:
            return
        if self.failures:
            await workflow.sleep(min(MAX_BACKOFF_S, 2.0**self.failures))
        # Recount after the backoff: jobs may have ended or containers stopped meanwhile.
        for _ in range(self._to_start()):
            cid = f"c-{str(workflow.uuid4())[:12]}"
            record = ContainerRecord(container_id=cid, started_at=workflow.now().isoformat())
            self.containers[cid] = record
            await workflow.start_child_workflow(
                CONTAINER_WORKFLOW,
                ContainerInput(container_id=cid, deployment=self.dep, fleet_id=workflow.info().workflow_id),
                id=container_workflow_id(self.dep.app, self.dep.function, self.dep.version, cid),
                task_queue=workflow.info().task_queue,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=f"container {cid} of {self.dep.app}.{self.dep.function} v{self.dep.version}",
            )

    def _publish_pending(self) -> None:
        """Keep the memo ``apothic.pending`` (read by clients before they submit) in step:
        written only when ``full`` or ``saturated`` changes, so that a steady fleet adds nothing
        to its history."""
        spec = self.dep.spec
        slots = fleet_slots(spec)
        demand = self._demand()
        full = demand - slots >= spec.max_pending_tasks
        saturated = demand >= slots
        if (full, saturated) == (self.published.full, self.published.saturated):
            return
        self.published = FleetPending(
            full=full, saturated=saturated, waiting=max(0, demand - slots), limit=spec.max_pending_tasks, slots=slots
        )
        workflow.upsert_memo({FLEET_PENDING_MEMO_KEY: self.published})

    def _next_wakeup(self) -> timedelta | None:
        if self.outstanding:
            # Re-check now and then that waiting jobs still exist (a terminated job sends no signal).
            return timedelta(seconds=max(self.dep.idle_s, 30.0))
        return None

    async def _on_timer(self) -> None:
        result = await workflow.execute_activity(
            CLOSED_JOBS_ACTIVITY,
            ClosedJobsRequest(job_ids=list(self.outstanding)),
            result_type=ClosedJobsResult,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
        for job_id in result.closed:
            self.outstanding.pop(job_id, None)
            self.held.discard(job_id)

    async def _drain_all(self) -> None:
        for cid, record in list(self.containers.items()):
            if record.draining:
                continue
            self.containers[cid] = ContainerRecord(container_id=cid, started_at=record.started_at, draining=True)
            handle = workflow.get_external_workflow_handle(
                container_workflow_id(self.dep.app, self.dep.function, self.dep.version, cid)
            )
            try:
                await handle.signal("drain")
            except Exception:  # already gone: forget it
                self.containers.pop(cid, None)

    async def _fail_waiting_jobs(self) -> None:
        reason = (
            f"no container of {self.dep.app}.{self.dep.function} v{self.dep.version} could start "
            + ("(a start that cannot succeed)" if self.refused else f"({self.failures} attempts)")
            + f"; last error: {self.last_error}"
        )
        self.refused = False
        for job_id in list(self.outstanding):
            try:
                await workflow.get_external_workflow_handle(job_id).signal("capacity_failed", reason)
            except Exception:
                pass
            self.outstanding.pop(job_id, None)
            self.held.discard(job_id)
        # Let a later job try again from scratch.
        self.failures = 0

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > MAX_HISTORY_EVENTS

    def _carry(self) -> FleetInput:
        return FleetInput(
            deployment=self.dep,
            containers=list(self.containers.values()),
            outstanding=list(self.outstanding),
            failures=self.failures,
            retired=self.retired,
            weights=dict(self.outstanding),
            held=sorted(self.held),
            drain=self.drain_requested,
        )
