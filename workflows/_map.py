"""MapWorkflow: one ``map``/``starmap``/``for_each`` call over any number of inputs."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.converter import value_to_type
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

from apothic._contracts import (
    CONTAINER_EVENT_SIGNAL,
    EXECUTE_BATCH_ACTIVITY,
    MAP_REPORT_SIGNAL,
    MAP_WORKFLOW,
    NOT_RUN,
    ExecuteBatchInput,
    ExecuteBatchOutput,
    Demand,
    Deployment,
    JobEventIn,
    MapBatchReport,
    MapFeed,
    MapFeedResult,
    MapInput,
    MapItem,
    MapProgress,
    MapResultItem,
    MapResults,
    MapResultsRequest,
    MapState,
    container_target,
    fleet_slots,
)

from ._attempts import (
    EXECUTE_HEARTBEAT,
    MAX_INFRA_RETRIES,
    cancel_and_wait,
    classify,
    error_kind,
    execute_timeout,
    resolve,
)
from ._invocation import demand_capacity

# Inputs accepted but not yet running, and results not yet taken by the client, are bounded
# in bytes: they are the state carried across continue-as-new (one payload, at most 2 MiB).
PENDING_BUDGET_BYTES = 600_000
RESULTS_BUDGET_BYTES = 800_000
# Inputs per execute_batch activity at most (fewer when there are few: they spread over
# max_in_flight batches, one per container).
MAX_BATCH = 32
# Continue-as-new well before Temporal's history limits (51,200 events, 50 MB); batches carry
# their inputs and outputs, so the size counts too.
MAX_HISTORY_EVENTS = 4000
MAX_HISTORY_BYTES = 2_000_000
# Marks maps that size their batches in flight by the fleet's slots and max_pending_tasks, and
# tell the fleet when the batches they can use change (older maps asked for a fixed weight).
MAP_DEMAND_PATCH = "apothic-map-demand"
# Marks maps that keep what a lost batch finished (the results its last heartbeat carried, or
# that its container reported later) and rerun only the rest (older maps reran the whole batch).
MAP_SALVAGE_PATCH = "apothic-map-salvage"
# How long a map waits, after a batch timed out, for its container's report before it reruns the
# inputs the batch's heartbeats did not name: a server back from an outage times the batch out at
# once, and the container, still alive, reports within a second or two.
LATE_REPORT = timedelta(seconds=3)


def batch_slots(dep: Deployment) -> int:
    """Slots of a container one of a map's batches fills: one (its inputs run one after the
    other), or all ``max_batch_size`` of a process for a ``@batched`` function (its inputs
    join the batcher's lists at once)."""
    return max(1, dep.spec.concurrent_requests) if dep.spec.batch is not None else 1


def map_batches(dep: Deployment, max_in_flight: int) -> int:
    """Batches a map keeps in flight: one per slot of the fleet at its ceiling (running),
    plus as many again queued behind them so that no slot waits for the next batch, but
    never more queued than ``max_pending_tasks``."""
    slots = max(1, fleet_slots(dep.spec) // batch_slots(dep))
    return max(1, min(max_in_flight, slots + min(slots, dep.spec.max_pending_tasks)))


def _heartbeat_results(e: ActivityError) -> list[MapResultItem]:
    """The results a lost execute_batch's last heartbeat carried (none from older containers)."""
    cause = e.cause
    details = cause.last_heartbeat_details if isinstance(cause, TemporalTimeoutError) else ()
    carried = details[0].get("results") if details and isinstance(details[0], dict) else None
    if not isinstance(carried, list):
        return []
    out = []
    for raw in carried:
        try:
            out.append(value_to_type(MapResultItem, raw))
        except Exception:  # noqa: BLE001, S112 - not a result: that input runs again
            continue
    return out


def _size(item: MapItem | MapResultItem) -> int:
    """Bytes the item takes as JSON (base64 data plus the envelope's fields)."""
    envelope = 250
    if isinstance(item, MapItem):
        return len(item.args.data) + len(item.args.qualname) + envelope
    value = len(item.value.data) + len(item.value.qualname) if item.value else 0
    return value + len(item.error_message) + len(str(item.error_detail)) + len(item.logs) + envelope


@workflow.defn(name=MAP_WORKFLOW)
class MapWorkflow:
    """Runs a stream of inputs on one deployment, at most ``max_in_flight`` at a time.

    The client feeds inputs in batches (update ``feed``, refused while the pending budget is
    full), reads results in input order (query ``results``, or its long poll ``wait_results``
    when there was none) and acknowledges them (signal ``ack``), so that neither inputs nor
    results pile up here. Each input runs with the
    function's retry rules (``InputRunner``). When the history grows long the workflow stops
    starting inputs, lets the running ones finish, waits until the client has taken every
    result, and continues as new with what is left: any number of inputs fits.
    """

    @workflow.init
    def __init__(self, inp: MapInput) -> None:
        st = inp.state or MapState()
        self.inp = inp
        self.pending: list[MapItem] = list(st.pending)
        self.fed = st.fed
        self.final = st.final
        self.done = st.done
        self.failed = st.failed
        self.acked = st.acked
        self.runs = st.runs
        self.results: dict[int, MapResultItem] = {}
        self.in_flight: dict[int, asyncio.Task[None]] = {}  # batch number -> its task
        self.capacity_error = ""
        self.last_container_step = ""
        self.changed = False
        self.results_bytes = 0
        self.details_done = -1
        self.retries: dict[str, list[int]] = {k: list(v) for k, v in st.retries.items()}
        self.waiting: dict[int, asyncio.Task[None]] = {}  # inputs sleeping before a user retry
        self.batch_seq = 0
        # The inputs of each batch in flight, and for each of those inputs the result a container
        # reported (batch_report) in case its batch is lost; batches whose container is done.
        self.batch_of: dict[int, list[int]] = {}
        self.running_index: dict[int, int] = {}
        self.reports: dict[int, MapResultItem] = {}
        self.reported: set[int] = set()
        spec = inp.deployment.spec if inp.deployment else None
        # A batched function's container takes max_batch_size inputs (concurrent_requests), but a
        # map's execute_batch carries many: two per container, as for one input at a time.
        per_container = 1 if spec is None or spec.batch is not None else spec.concurrent_requests or 1
        containers = spec.max_containers if spec else 1
        # Two batches per container: one runs while the next waits on its task queue (maps
        # from before MAP_DEMAND_PATCH; newer ones size this in run(), see map_batches).
        self.max_batches = max(1, min(inp.max_in_flight, 2 * containers * per_container))
        self.weight = self.max_batches  # what the fleet was last told (Demand.weight)
        self.knobs = False
        self.draining = False  # continuing as new soon: long polls of results return

    # --- messages -----------------------------------------------------------------------

    @workflow.update
    def feed(self, batch: MapFeed) -> MapFeedResult:
        """Accept a batch of inputs (idempotent: indexes already fed are ignored)."""
        if self.final:
            return MapFeedResult(accepted=True, fed=self.fed)
        if batch.items and self.pending and sum(_size(i) for i in self.pending) >= PENDING_BUDGET_BYTES:
            return MapFeedResult(accepted=False, fed=self.fed)
        for item in batch.items:
            if item.index == self.fed:
                self.pending.append(item)
                self.fed += 1
        if batch.final and (not batch.items or batch.items[-1].index < self.fed):
            self.final = True
        self.changed = True
        return MapFeedResult(accepted=True, fed=self.fed)

    @workflow.signal
    def ack(self, upto: int) -> None:
        """The client has taken every result before index ``upto``."""
        for index in [i for i in self.results if i < upto]:
            self.results_bytes -= _size(self.results.pop(index))
        self.acked = max(self.acked, upto)
        self.changed = True

    @workflow.signal
    def capacity_failed(self, reason: str) -> None:
        """From the fleet: no container could be started."""
        self.capacity_error = reason
        self.changed = True

    @workflow.signal(name=CONTAINER_EVENT_SIGNAL)
    def container_event(self, e: JobEventIn) -> None:
        """From ``run_container``: a container start step. Maps keep no event log: the newest
        step is kept for the Temporal UI's details only."""
        self.last_container_step = f"{e.event} {e.container_id}: {e.data.get('status') or e.data.get('step') or ''}"

    @workflow.signal(name=MAP_REPORT_SIGNAL)
    def batch_report(self, report: MapBatchReport) -> None:
        """From a container: what one of its batches finished, sent when the server may not have
        taken the batch's own result (it was down meanwhile). Kept for inputs still in a batch in
        flight, and used only if that batch is lost (``_salvage``)."""
        for result in report.results:
            if result.index in self.running_index:
                self.reports[result.index] = result
        seq = self.running_index.get(report.items[0]) if report.items else None
        if seq is not None and self.batch_of.get(seq) == report.items:
            self.reported.add(seq)

    @workflow.query
    def results(self, req: MapResultsRequest) -> MapResults:
        return self._page(req)

    @workflow.update
    async def wait_results(self, req: MapResultsRequest) -> MapResults:
        """The long poll of ``results``, for a client that has read every result there is: returns
        once the result at ``req.from_index`` is in, or once none will come in this run (every
        input fed has been read, or the run drains to continue as new: the client asks the next
        run). A query adds nothing to the history; this adds its two update events, so the client
        asks only when the query found nothing."""
        await workflow.wait_condition(
            lambda: req.from_index in self.results or (self.final and req.from_index >= self.fed) or self.draining
        )
        return self._page(req)

    def _page(self, req: MapResultsRequest) -> MapResults:
        out: list[MapResultItem] = []
        size = 0
        index = req.from_index
        while index in self.results and (not out or size < req.max_bytes):
            item = self.results[index]
            out.append(item)
            size += _size(item)
            index += 1
        return MapResults(items=out)

    @workflow.query
    def progress(self) -> MapProgress:
        return MapProgress(
            map_id=self.inp.map_id,
            fed=self.fed,
            final=self.final,
            done=self.done,
            failed=self.failed,
            in_flight=len(self.in_flight) + len(self.waiting),
            pending=len(self.pending),
            acked=self.acked,
            runs=self.runs,
        )

    # --- the run ------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: MapInput) -> int:
        dep = inp.deployment or await resolve(inp.app, inp.function)
        self.knobs = workflow.patched(MAP_DEMAND_PATCH)
        if self.knobs:
            self.max_batches = map_batches(dep, inp.max_in_flight)
            self.weight = self._weight_wanted(dep)
        demand = Demand(job_id=inp.map_id, weight=self.weight)
        await demand_capacity(dep, demand)
        try:
            while True:
                draining = self.draining = self._history_long()
                if not draining:
                    self._start_inputs(dep)
                idle = not self.in_flight and not self.waiting
                if self.final and not self.pending and idle and self.acked >= self.fed:
                    break
                if draining and idle and self.acked >= self.done:
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    workflow.continue_as_new(self._carry())
                self.changed = False
                if self.done - self.details_done >= 100 or not self.in_flight:
                    self.details_done = self.done
                    workflow.set_current_details(
                        f"{self.done} of {self.fed}{'' if self.final else '+'} inputs done, {self.failed} failed, "
                        f"{len(self.in_flight)} running (run {self.runs})"
                        + (f"; {self.last_container_step}" if self.done == 0 and self.last_container_step else "")
                    )
                if self.knobs:  # after clearing `changed`: what arrives meanwhile wakes the next round
                    await self._tell_demand(dep)
                await workflow.wait_condition(lambda: self.changed)
        except (asyncio.CancelledError, CancelledError):
            tasks = [*self.in_flight.values(), *self.waiting.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._release(dep)
            raise
        await self._release(dep)
        return self.done

    def _weight_wanted(self, dep: Deployment) -> int:
        """The slots this map can use now (its Demand.weight): those of all the batches it may
        have in flight while inputs are pending, else of those running (one at least while the
        map lives)."""
        batches = self.max_batches if self.pending or not self.fed else max(1, len(self.in_flight))
        return batches * batch_slots(dep)

    async def _tell_demand(self, dep: Deployment) -> None:
        """Tell the fleet when the containers this map's batches ask for change (a map fed
        slowly, or in its last batches, wants fewer; one fed again, more). Only a change of
        containers is told, so a long map sends a handful of signals."""
        if self.capacity_error:  # the fleet gave up on this map's demand: do not restart it
            return
        wanted = self._weight_wanted(dep)
        per = container_target(dep.spec)
        cap = max(1, dep.spec.max_containers)
        if min(cap, math.ceil(wanted / per)) == min(cap, math.ceil(self.weight / per)):
            return
        self.weight = wanted
        await demand_capacity(dep, Demand(job_id=self.inp.map_id, weight=wanted))

    async def _release(self, dep: Deployment) -> None:
        try:
            await workflow.get_external_workflow_handle(dep.fleet_id).signal(
                "demand", Demand(job_id=self.inp.map_id, active=False)
            )
        except Exception:
            pass

    def _history_long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > MAX_HISTORY_EVENTS
            or info.get_current_history_size() > MAX_HISTORY_BYTES
        )

    def _start_inputs(self, dep: Deployment) -> None:
        """Start batches of pending inputs while there is room (batches spread the inputs over
        up to ``max_batches`` containers; a batch is at most MAX_BATCH inputs)."""
        while (
            self.pending
            and len(self.in_flight) < self.max_batches
            and self.results_bytes < RESULTS_BUDGET_BYTES
        ):
            size = max(1, min(MAX_BATCH, math.ceil(len(self.pending) / self.max_batches)))
            batch, self.pending = self.pending[:size], self.pending[size:]
            self.batch_seq += 1
            self.in_flight[self.batch_seq] = asyncio.create_task(self._run_batch(dep, self.batch_seq, batch))

    async def _run_batch(self, dep: Deployment, seq: int, batch: list[MapItem]) -> None:
        spec = dep.spec
        first, last = batch[0].index, batch[-1].index
        self.batch_of[seq] = [i.index for i in batch]
        for item in batch:
            self.running_index[item.index] = seq
        execute = workflow.start_activity(
            EXECUTE_BATCH_ACTIVITY,
            ExecuteBatchInput(
                job_id=self.inp.map_id, function=dep.function, version=dep.version, items=batch,
                timeout_s=spec.timeout_s, output=self.inp.output,
            ),
            task_queue=dep.task_queue,
            result_type=ExecuteBatchOutput,
            schedule_to_start_timeout=timedelta(seconds=dep.startup_timeout_s),
            start_to_close_timeout=execute_timeout(spec, len(batch)),
            heartbeat_timeout=EXECUTE_HEARTBEAT,
            retry_policy=RetryPolicy(maximum_attempts=1),  # retries are counted per input, by kind
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"{dep.app}.{dep.function} inputs {first}..{last}",
        )
        try:
            await workflow.wait_condition(lambda: execute.done() or bool(self.capacity_error))
            if not execute.done():
                execute.cancel()
                self._fail_all(batch, "PlacementError", self.capacity_error)
            else:
                out = await execute
                for result in out.results:
                    self._settle(dep, result, next(i for i in batch if i.index == result.index))
        except ActivityError as e:
            failure = classify(e, dep)
            if failure.kind == "infrastructure":
                if workflow.patched(MAP_SALVAGE_PATCH):
                    batch = await self._salvage(dep, seq, batch, e)
                for item in batch:
                    counts = self.retries.setdefault(str(item.index), [0, 0])
                    if counts[1] < MAX_INFRA_RETRIES:
                        counts[1] += 1
                        self.pending.insert(0, item)
                    else:
                        self._fail_one(item.index, "ContainerLost", failure.reason)
                self.pending.sort(key=lambda i: i.index)
            else:
                error = failure.error
                message = error.message if isinstance(error, ApplicationError) else failure.reason
                kind = error.type if isinstance(error, ApplicationError) else "RemoteError"
                self._fail_all(batch, kind or "RemoteError", message)
        except (asyncio.CancelledError, CancelledError):
            await cancel_and_wait(execute)
            raise
        finally:
            for index in self.batch_of.pop(seq, []):
                self.running_index.pop(index, None)
                self.reports.pop(index, None)
            self.reported.discard(seq)
            self.in_flight.pop(seq, None)
            self.changed = True

    async def _salvage(self, dep: Deployment, seq: int, batch: list[MapItem], e: ActivityError) -> list[MapItem]:
        """Settle what a lost batch finished: the results its last heartbeat carried, and those
        its container reported (waiting LATE_REPORT for them after a timeout). Returns the
        inputs left to run again."""
        wanted = [item.index for item in batch]
        got = {r.index: r for r in _heartbeat_results(e) if r.index in wanted}

        def accounted() -> bool:
            return seq in self.reported or all(i in got or i in self.reports for i in wanted)

        if isinstance(e.cause, TemporalTimeoutError) and not accounted():
            try:
                await workflow.wait_condition(
                    accounted, timeout=LATE_REPORT, timeout_summary=f"late report of inputs {wanted[0]}..{wanted[-1]}"
                )
            except TimeoutError:  # no report: the container is gone
                pass
        for index in wanted:
            if index not in got and index in self.reports:
                got[index] = self.reports[index]
        rest = []
        for item in batch:
            if item.index in got and got[item.index].error_type != NOT_RUN:
                self._settle(dep, got[item.index], item)
            else:
                rest.append(item)
        return rest

    def _settle(self, dep: Deployment, result: MapResultItem, item: MapItem) -> None:
        if result.ok:
            self._store(result)
            return
        if result.error_type == NOT_RUN:
            self.pending.insert(0, item)
            self.pending.sort(key=lambda i: i.index)
            return
        counts = self.retries.setdefault(str(item.index), [0, 0])
        retry = dep.spec.retry
        if error_kind(result.error_type, result.final, dep) == "user" and counts[0] < retry.max_retries:
            counts[0] += 1
            self.waiting[item.index] = asyncio.create_task(self._requeue(item, retry.delay(counts[0])))
            return
        self.failed += 1
        self._store(result)

    async def _requeue(self, item: MapItem, delay: float) -> None:
        await workflow.sleep(timedelta(seconds=delay), summary=f"user retry of input {item.index}")
        self.waiting.pop(item.index, None)
        self.pending.insert(0, item)
        self.pending.sort(key=lambda i: i.index)
        self.changed = True

    def _fail_all(self, batch: list[MapItem], kind: str, message: str) -> None:
        for item in batch:
            self._fail_one(item.index, kind, message)

    def _fail_one(self, index: int, kind: str, message: str) -> None:
        self.failed += 1
        self._store(MapResultItem(index=index, ok=False, error_message=message, error_type=kind, final=True))

    def _store(self, result: MapResultItem) -> None:
        self.retries.pop(str(result.index), None)
        self.results[result.index] = result
        self.results_bytes += _size(result)
        self.done += 1

    def _carry(self) -> MapInput:
        return MapInput(
            map_id=self.inp.map_id,
            app=self.inp.app,
            function=self.inp.function,
            deployment=self.inp.deployment,
            max_in_flight=self.inp.max_in_flight,
            output=self.inp.output,
            state=MapState(
                pending=list(self.pending),
                fed=self.fed,
                final=self.final,
                done=self.done,
                failed=self.failed,
                acked=self.acked,
                runs=self.runs + 1,
                retries={k: list(v) for k, v in self.retries.items()},
            ),
        )
