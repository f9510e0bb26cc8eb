"""The container's Temporal worker and its ``apothic.execute`` activity."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sysconfig
import time
import traceback
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from .._contracts import (
    EXECUTE_ACTIVITY,
    EXECUTE_BATCH_ACTIVITY,
    EXIT_BAD_CODE,
    EXIT_REPLACE,
    NOT_RUN,
    CodeRequest,
    Deployment,
    ExecuteBatchInput,
    ExecuteBatchOutput,
    ExecuteInput,
    ExecuteOutput,
    FunctionSpec,
    MapResultItem,
    ResolveRequest,
    app_workflow_id,
)
from .._cls._serve import ClassLifecycle
from .._control._client import connect
from .._control._config import Settings
from .._data._blobs import load, offload
from .._data._code import load_code
from .._data._serialization import CloudPickled
from .._trace import ATTR_APP, ATTR_ATTEMPT, ATTR_CONTAINER, ATTR_FUNCTION, ATTR_JOB, ATTR_VERSION
from .._trace import env_context, in_context, span
from ..exceptions import InvalidError
from ._batcher import Batcher, NotRun
from ._concurrent import LoopExecutor, ThreadExecutor
from ._mounts import EXIT_BAD_MOUNT, MountError, Mounts
from ._events import EventPublisher, OutputError
from ._where import Whereabouts
from ._channel import ALIVE_EVERY_S, HEARTBEAT_LOG_BYTES, Channel, scratch_dir
from ._executor import Interrupted, MainThreadExecutor, WorkItem, read_log
from ._mapbatch import BatchProgress, Reporter, lost_on_server
from ._supervised import SupervisedInterceptor, watch_item

# How long user code gets to stop after a cancel or timeout before its container is replaced.
INTERRUPT_GRACE_S = 5.0
HEARTBEAT_EVERY_S = 1.0
# How often a container checks that its ContainerWorkflow still runs (and that its server
# answers: see WorkerSettings.server_unreachable_s), and how long one check may take.
OWNER_CHECK_S = 5.0
OWNER_CHECK_TIMEOUT_S = 10.0
# Inline (base64) result bytes one execute_batch returns at most; later results of the batch go
# to the blob store even when small, so that the batch's output stays under Temporal's 2 MiB.
BATCH_INLINE_BYTES = 1_000_000


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    container_id: str
    app: str
    function: str
    version: int
    task_queue: str
    concurrency: int = 1
    idle_s: float = 60.0
    container_workflow_id: str = ""
    status_file: str = ""

    @classmethod
    def from_env(cls) -> "RuntimeConfig":
        env = os.environ
        return cls(
            container_id=env["APOTHIC_CONTAINER_ID"],
            app=env["APOTHIC_APP"],
            function=env["APOTHIC_FUNCTION"],
            version=int(env["APOTHIC_VERSION"]),
            task_queue=env["APOTHIC_TASK_QUEUE"],
            concurrency=int(env.get("APOTHIC_CONCURRENCY", "1")),
            idle_s=float(env.get("APOTHIC_IDLE_S", "60")),
            container_workflow_id=env.get("APOTHIC_CONTAINER_WORKFLOW_ID", ""),
            status_file=env.get("APOTHIC_STATUS_FILE", ""),
        )


def _internal_roots() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Folders whose frames come before user code (Apothic, the standard library with asyncio)
    and, inside them, folders that may hold user code (installed packages)."""
    paths = sysconfig.get_paths()
    apothic_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    internal = {apothic_dir, *(paths[k] for k in ("stdlib", "platstdlib") if k in paths)}
    packages = {paths[k] for k in ("purelib", "platlib") if k in paths}
    return _folders(internal), _folders(packages)


def _folders(paths: set[str]) -> tuple[str, ...]:
    """Real paths with a trailing separator, to test a file's path with ``startswith``."""
    return tuple(sorted({os.path.join(os.path.realpath(p), "") for p in paths}))


_INTERNAL, _PACKAGES = _internal_roots()


def _is_internal(filename: str) -> bool:
    if not os.path.isabs(filename):
        return filename.startswith("<frozen ")
    path = os.path.realpath(filename)
    return path.startswith(_INTERNAL) and not path.startswith(_PACKAGES)


def _user_frames(tb: Any) -> Any:
    """The traceback from its first frame of user code on: the runtime's frames (and those of
    asyncio that ran an ``async def``) before it are left out. A traceback with no user frame
    is kept whole."""
    first = tb
    while first is not None and _is_internal(first.tb_frame.f_code.co_filename):
        first = first.tb_next
    return first if first is not None else tb


def user_error(e: BaseException, logs: str) -> ApplicationError:
    """Wrap a user exception: its pickle, type and traceback travel as details."""
    cls = type(e)
    qualname = f"{cls.__module__}.{cls.__qualname__}"
    tb = "".join(traceback.format_exception(type(e), e, _user_frames(e.__traceback__)))
    try:
        pickled: CloudPickled | None = CloudPickled.dump(e, kind="exception")
    except Exception:  # noqa: BLE001 - unpicklable exceptions travel as text
        pickled = None
    return ApplicationError(
        f"{cls.__name__}: {e}",
        {"exc": pickled, "type": qualname, "traceback": tb, "logs": logs},
        type=qualname,
    )


class Runtime:
    """Loads the function's code, then serves its inputs until drained.

    Inputs run in the main thread one at a time (``MainThreadExecutor``), or, for a function
    that takes several at once (``FunctionSpec.concurrent_requests`` > 1), on threads or as
    asyncio tasks (``_concurrent``), or, for a batched function, gathered into calls with
    lists by the ``Batcher`` (the calls run in the main thread, one batch at a time).
    """

    def __init__(self, config: RuntimeConfig, settings: Settings, executor: MainThreadExecutor) -> None:
        self.config = config
        self.settings = settings
        self.executor = executor
        # Where inputs go: the main thread, a concurrent executor or the batcher (see serve).
        self.runner: Any = executor
        self.batcher: Batcher | None = None
        self.slots = max(1, config.concurrency)
        self.exit_code = 0
        self.stuck = False
        # The server has not answered for worker.server_unreachable_s: the container exits at
        # once, without waiting for its inputs (their results could not be delivered).
        self.abandoned = False
        self.fn: Any = None
        self.channel = Channel.from_env()  # to the container's supervisor (a no-op without one)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._shutdown_reason = ""
        self._in_flight = 0
        self._last_busy = time.monotonic()
        self._client: Client | None = None
        self.mounts = Mounts.from_env()  # takes bucket keys out of the environment before user code runs

    def request_shutdown(self, reason: str) -> None:
        """Thread-safe: stop polling, let in-flight inputs finish, exit."""
        self._shutdown_reason = reason
        if self._loop is not None and self._shutdown is not None:
            self._loop.call_soon_threadsafe(self._shutdown.set)

    async def serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._shutdown = asyncio.Event()
        if self._shutdown_reason:
            return
        cfg = self.config
        # The container's start (code, mounts, @enter) continues the trace of the
        # run_container activity that started it (TRACEPARENT in its environment).
        attrs = {ATTR_APP: cfg.app, ATTR_FUNCTION: cfg.function, ATTR_VERSION: cfg.version,
                 ATTR_CONTAINER: cfg.container_id}
        with span("apothic.container.start", attrs, context=env_context(os.environ)):
            started = await self._start()
        if started is None:
            return
        client, lifecycle = started
        worker = Worker(
            client,
            task_queue=cfg.task_queue,
            activities=[self.execute, self.execute_batch],
            max_concurrent_activities=self.slots,
            max_heartbeat_throttle_interval=timedelta(seconds=HEARTBEAT_EVERY_S),
            default_heartbeat_throttle_interval=timedelta(seconds=HEARTBEAT_EVERY_S),
            graceful_shutdown_timeout=timedelta(hours=24),
            interceptors=[SupervisedInterceptor(self.channel, scratch_dir())],  # also a map batch's heartbeats
        )
        watch = asyncio.create_task(self._watch(client))
        alive = asyncio.create_task(self._tell_alive())
        run = asyncio.create_task(worker.run())
        print(f"apothic container {cfg.container_id} serving {cfg.task_queue}", flush=True)
        await asyncio.wait({run, asyncio.create_task(self._shutdown.wait())}, return_when=asyncio.FIRST_COMPLETED)
        watch.cancel()
        if self.abandoned:
            return  # main exits the process: no drain (it would wait for the server)
        alive.cancel()
        print(f"apothic container {cfg.container_id} draining ({self._shutdown_reason or 'worker stopped'})", flush=True)
        if not run.done():
            await worker.shutdown()
        await run
        if lifecycle is not None:
            await lifecycle.exit(self)  # @exit, after the last input

    async def _start(self) -> tuple[Client, ClassLifecycle | None] | None:
        """Connect, load the code, start the mounts and (a class) run @enter; None (the exit
        code set) when the container cannot serve."""
        cfg = self.config
        # Traced: each input's apothic.execute span continues the trace its job's headers carry.
        client = await connect(self.settings, start_embedded=False, traced=True)
        self._client = client
        self.where = Whereabouts(client, cfg.container_workflow_id)  # named in each input's started event
        self.where.start()
        app = client.get_workflow_handle(app_workflow_id(cfg.app))
        code, dep = await asyncio.gather(
            app.query("code", CodeRequest(function=cfg.function, version=cfg.version), result_type=CloudPickled),
            app.query("resolve", ResolveRequest(cfg.app, cfg.function, cfg.version), result_type=Deployment),
        )
        # A class (@app.cls): its instance's deployment and hooks around serving (apothic/_cls/_serve.py).
        lifecycle = await ClassLifecycle.prepare(client, cfg.task_queue, dep)
        dep = lifecycle.deployment if lifecycle is not None else dep
        self._choose_runner(dep.spec)  # before the code loads: its modules see the container's time.sleep
        try:
            self.fn = load_code(code)  # registers the source of the user's files in linecache
        except Exception:
            traceback.print_exc()
            self.exit_code = EXIT_BAD_CODE
            return None
        try:
            await self.mounts.start()  # bucket and cloud volume files are in place before the first input
        except MountError as e:
            print(f"apothic: {e}", flush=True)
            self.exit_code = EXIT_BAD_MOUNT
            return None
        if dep.spec.batch is not None:
            self.batcher = Batcher(
                self.fn, dep.spec.batch, self.executor, cfg.container_id, INTERRUPT_GRACE_S, self._retire
            )
            self.batcher.start()
            self.runner = self.batcher
        if lifecycle is not None and not await lifecycle.enter(self):  # @enter, before the first poll
            return None
        return client, lifecycle

    def _choose_runner(self, spec: FunctionSpec) -> None:
        """Where inputs run, and how many activities the worker takes at once: one (the main
        thread); ``concurrent_requests`` (threads, or tasks of one loop for ``async def``); or,
        batched, ``max_batch_size`` (so that a whole batch can gather)."""
        if spec.batch is not None:
            self.slots = max(1, spec.batch.max_batch_size)
        elif spec.concurrent_requests > 1:
            self.slots = spec.concurrent_requests
            self.runner = LoopExecutor() if spec.is_async else ThreadExecutor(spec.concurrent_requests)
        else:
            self.slots = 1

    def _retire(self, reason: str) -> None:
        """An input ignored its interruption: stop polling, let the other inputs finish, exit
        with EXIT_REPLACE: the container's supervisor starts a fresh runtime in its place."""
        self.stuck = True
        self.exit_code = EXIT_REPLACE
        self.request_shutdown(reason)

    async def _watch(self, client: Client) -> None:
        """Drain when idle for the idle window, or when nothing owns this container any more.

        The owner is the container's ContainerWorkflow: while it runs, the container lives on
        even if the control worker that started it dies (another worker adopts it). Once that
        workflow has ended, the container stops by itself, wherever it runs.
        """
        last_owner_check = last_answer = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, self.config.idle_s / 4))
            if not self._in_flight and time.monotonic() - self._last_busy >= self.config.idle_s:
                self.request_shutdown(f"idle for {self.config.idle_s:g} s")
                return
            if time.monotonic() - last_owner_check >= OWNER_CHECK_S:
                last_owner_check = time.monotonic()
                state = await self._owner_state(client)
                if state == "ended":
                    self.request_shutdown("its container workflow has ended")
                    return
                if state == "running":
                    last_answer = time.monotonic()
                elif time.monotonic() - last_answer >= self.settings.worker.server_unreachable_s:
                    self._abandon(time.monotonic() - last_answer)
                    return

    async def _owner_state(self, client: Client) -> str:
        """``running``, ``ended`` (its ContainerWorkflow), or ``unreachable`` (no answer from
        the server within OWNER_CHECK_TIMEOUT_S). Without a ContainerWorkflow: the server's health."""
        try:
            if not self.config.container_workflow_id:
                await asyncio.wait_for(client.service_client.check_health(), OWNER_CHECK_TIMEOUT_S)
                return "running"
            handle = client.get_workflow_handle(self.config.container_workflow_id)
            desc = await asyncio.wait_for(handle.describe(), OWNER_CHECK_TIMEOUT_S)
        except RPCError as e:
            return "ended" if e.status == RPCStatusCode.NOT_FOUND else "unreachable"
        except Exception:  # noqa: BLE001 - a timeout, a closed connection: no answer
            return "unreachable"
        return "running" if desc.status == WorkflowExecutionStatus.RUNNING else "ended"

    def _abandon(self, silent_s: float) -> None:
        """The server has not answered for ``worker.server_unreachable_s``: exit now. The inputs
        still running here cannot report (their jobs retry them elsewhere once a server answers)."""
        limit = self.settings.worker.server_unreachable_s
        print(f"apothic container {self.config.container_id}: the Temporal server at {self.settings.address} has not "
              f"answered for {silent_s:.0f} s (worker.server_unreachable_s = {limit:g}, env "
              f"APOTHIC_SERVER_UNREACHABLE_S); exiting", flush=True)
        self.channel.note("leaving", reason="server unreachable")
        self.abandoned = True
        self.request_shutdown("the server is unreachable")

    async def _tell_alive(self) -> None:
        """Tell the supervisor that this loop runs (it heartbeats for us when it stops)."""
        if not self.channel.on:
            return
        while True:
            self.channel.alive()
            await asyncio.sleep(ALIVE_EVERY_S)

    def _check_input(self, function: str, version: int) -> None:
        cfg = self.config
        if function != cfg.function or version != cfg.version:
            raise ApplicationError(
                f"input for {function} v{version} reached the container of {cfg.function} v{cfg.version}",
                type="apothic.InvalidInput",
                non_retryable=True,
            )

    def _span(self, name: str, job_id: str, **extra: Any) -> Any:
        """A span of this container's (``apothic.execute ...``), under the activity's."""
        cfg = self.config
        return span(name, {ATTR_APP: cfg.app, ATTR_FUNCTION: cfg.function, ATTR_VERSION: cfg.version,
                           ATTR_CONTAINER: cfg.container_id, ATTR_JOB: job_id, **extra})

    @activity.defn(name=EXECUTE_ACTIVITY)
    async def execute(self, inp: ExecuteInput) -> ExecuteOutput:
        self._check_input(inp.function, inp.version)
        self._in_flight += 1
        cfg = self.config
        try:
            with self._span(f"apothic.execute {cfg.app}.{cfg.function} attempt {inp.attempt}", inp.job_id,
                            **{ATTR_ATTEMPT: inp.attempt}):
                return await self._execute(inp)
        finally:
            self._in_flight -= 1
            self._last_busy = time.monotonic()

    # Sends a batch's results to its map when the server may have missed them (made on the first batch).
    _reporter: Reporter | None = None

    @activity.defn(name=EXECUTE_BATCH_ACTIVITY)
    async def execute_batch(self, inp: ExecuteBatchInput) -> ExecuteBatchOutput:
        """Run a map's inputs one after the other, each with its own timeout and result (for a
        batched function, all at once: they join the batcher's lists, results in order).

        Each heartbeat carries the results finished so far, and a batch the server may have
        missed the result of (it was down meanwhile, or gave up on the batch) is reported to
        its map by signal once the server answers (``_mapbatch``): a lost batch's map reruns
        only the inputs it never heard of."""
        self._check_input(inp.function, inp.version)
        progress = BatchProgress(inp.items)
        if self._reporter is None:
            assert self._client is not None  # serve() connects before the worker takes inputs
            self._reporter = Reporter(self._client)
        reporter = self._reporter
        outages = reporter.outages
        self._in_flight += 1
        try:
            with progress.heartbeats(), reporter.batch():
                try:
                    if self.batcher is not None:
                        outcomes = await asyncio.gather(*(self._map_item(inp, item, bulk=True) for item in inp.items))
                        for item, outcome in zip(inp.items, outcomes):
                            progress.add(await self._map_result(inp, item.index, outcome, progress))
                        activity.heartbeat()  # carries the progress (see BatchProgress.heartbeats)
                    else:
                        for item in inp.items:
                            outcome = await self._map_item(inp, item)
                            progress.add(await self._map_result(inp, item.index, outcome, progress))
                            progress.beat()
                except asyncio.CancelledError:
                    if lost_on_server():  # the server gave up on the batch: it will refuse its result
                        reporter.ended(inp.job_id, progress, suspect=True)
                    raise
                reporter.ended(inp.job_id, progress, suspect=reporter.outages != outages)
        finally:
            self._in_flight -= 1
            self._last_busy = time.monotonic()
        return ExecuteBatchOutput(results=progress.ordered(), container_id=self.config.container_id)

    async def _map_result(self, inp: ExecuteBatchInput, index: int, outcome: Any, progress: BatchProgress) -> MapResultItem:
        """A map input's outcome as its result: inline while the batch's values, logs and
        details fit in BATCH_INLINE_BYTES, later values in the blob store, later details cut."""
        if outcome is None:  # an earlier input ignored its interruption: left to others
            return MapResultItem(index=index, ok=False, error_type=NOT_RUN)
        if isinstance(outcome, ExecuteOutput):
            value = outcome.value
            if progress.inline + len(value.data) > BATCH_INLINE_BYTES:
                value = await self._offload_result(value, "", force=True)
            logs = outcome.logs[-8192:] if inp.output else ""  # the caller shows it (live output)
            progress.inline += len(value.data) + len(logs)
            return MapResultItem(index=index, ok=True, value=value, logs=logs)
        e = outcome
        detail = e.details[0] if e.details and isinstance(e.details[0], dict) else {}
        detail = _fit_detail(detail, BATCH_INLINE_BYTES - progress.inline)
        progress.inline += _detail_size(detail)
        return MapResultItem(
            index=index, ok=False, error_message=e.message, error_type=e.type or "",
            error_detail=detail, final=e.non_retryable,
        )

    async def _map_item(self, inp: ExecuteBatchInput, item: Any, bulk: bool = False) -> Any:
        """One map input: its ExecuteOutput, its ApplicationError, or None if not run."""
        if self.stuck:
            return None
        one = ExecuteInput(
            job_id=f"{inp.job_id}#{item.index}", function=inp.function, version=inp.version,
            args=item.args, timeout_s=inp.timeout_s,
        )
        cfg = self.config
        try:
            with self._span(f"apothic.execute {cfg.app}.{cfg.function} item {item.index}", one.job_id,
                            **{"apothic.map_index": item.index}):
                return await self._execute(one, bulk=bulk)
        except ApplicationError as e:
            return e

    async def _execute(self, inp: ExecuteInput, bulk: bool = False) -> ExecuteOutput:
        try:
            args, kwargs = await load(inp.args, self.settings.blobs)
        except InvalidError as e:  # its blob cannot be read, or another Python pickled it
            raise ApplicationError(str(e), type="apothic.InvalidInput", non_retryable=True) from None
        # The user's code runs with this input's span current (a span it opens is its child),
        # on whichever thread or loop runs it.
        item = WorkItem(in_context(self.fn), tuple(args), dict(kwargs), checkpoint_in=inp.checkpoint,
                        skip_outputs=inp.skip_outputs, job_id=inp.job_id)
        watch_item(self.channel, item, inp.args, inp.job_id)  # the supervisor learns when its code runs
        publisher: EventPublisher | None = None
        batched = self.batcher is not None
        if inp.events_to and self._client is not None:
            publisher = EventPublisher(
                self._client, inp.events_to, inp.attempt, self.config.container_id, item, started=not batched,
                where=await self.where.get(),
            )
            item.on_output = publisher.output
            if batched:
                item.on_start = publisher.mark_started  # names the batch the input runs in
            publisher.start()
        runner = self.runner
        try:
            fut = asyncio.wrap_future(runner.submit(item, bulk) if batched else runner.submit(item))
            try:
                out = await self.mounts.around(  # writes under the mount paths are uploaded first
                    self._supervise(inp, item, fut), self._client, inp.events_to, self.config.container_id)
            except BaseException:
                if publisher is not None:
                    await publisher.close()  # the job's events arrive before its activity's outcome
                raise
            if publisher is not None:
                rest = await publisher.finish()  # the last events travel with the result
                if rest is not None:
                    out = dataclasses.replace(out, events=rest)
            return out
        finally:
            runner.done_with(item)  # its output has been read: a file of its own can go

    async def _supervise(self, inp: ExecuteInput, item: WorkItem, fut: asyncio.Future) -> ExecuteOutput:
        try:
            while not fut.done():
                # The timeout counts from the start of the user code (a batched input may wait
                # for its batch first).
                remaining = item.started_at + inp.timeout_s - time.monotonic() if item.started_at else inp.timeout_s
                if remaining <= 0:
                    await self._interrupt(item, fut, "timeout")
                    break
                await asyncio.wait({fut}, timeout=min(HEARTBEAT_EVERY_S, remaining))
                if not fut.done():
                    activity.heartbeat(
                        {"logs": read_log(item.log_path, HEARTBEAT_LOG_BYTES), "checkpoint": item.checkpoint_out}
                    )
        except asyncio.CancelledError:
            await self._interrupt(item, fut, "cancelled")
            raise
        logs = read_log(item.log_path)
        if not fut.done():
            raise ApplicationError(
                f"the function ran longer than its timeout_s={inp.timeout_s:g} and ignored the interruption; "
                "its process was replaced",
                {"logs": logs},
                type="FunctionTimeoutError",
            )
        try:
            result = fut.result()
        except Interrupted as e:
            if (item.interrupt_reason or e.reason) == "timeout":
                raise ApplicationError(
                    f"the function ran longer than its timeout_s={inp.timeout_s:g}",
                    {"logs": logs},
                    type="FunctionTimeoutError",
                ) from None
            raise asyncio.CancelledError() from None
        except OutputError as e:
            raise ApplicationError(str(e), {"logs": logs}, type="apothic.InvalidResult", non_retryable=True) from None
        except NotRun as e:  # the container retires before this input ran: rerun elsewhere, not counted
            raise ApplicationError(str(e), {"logs": logs}, type=NOT_RUN) from None
        except BaseException as e:  # noqa: BLE001 - the user's own error
            raise user_error(e, logs) from None
        try:
            value = CloudPickled.dump(result, kind="result")
        except Exception as e:  # noqa: BLE001
            raise ApplicationError(
                f"the function's result ({type(result).__name__}) cannot be pickled: {e}",
                {"logs": logs},
                type="apothic.InvalidResult",
                non_retryable=True,
            ) from None
        value = await self._offload_result(value, logs)
        return ExecuteOutput(value=value, logs=logs, container_id=self.config.container_id)

    async def _offload_result(self, value: CloudPickled, logs: str, force: bool = False) -> CloudPickled:
        """A large result goes to the blob store; the activity returns its reference."""
        try:
            return await offload(value, self.settings.blobs, force=force)
        except InvalidError as e:
            raise ApplicationError(str(e), {"logs": logs}, type="apothic.InvalidResult", non_retryable=True) from None

    async def _interrupt(self, item: WorkItem, fut: asyncio.Future, reason: str) -> None:
        self.runner.interrupt(item, reason)
        deadline = time.monotonic() + INTERRUPT_GRACE_S
        while not fut.done() and time.monotonic() < deadline:
            await asyncio.wait({fut}, timeout=min(HEARTBEAT_EVERY_S, deadline - time.monotonic()))
            if not fut.done():  # still alive: keep heartbeating through the grace period
                activity.heartbeat({"logs": read_log(item.log_path, HEARTBEAT_LOG_BYTES), "checkpoint": item.checkpoint_out})
        if not fut.done():
            # The code ignores interruption: retire this container once this input is reported
            # (and the others running beside it have finished).
            self._retire(f"an input ignored its {reason} for {INTERRUPT_GRACE_S:g} s")


def _detail_size(detail: dict[str, Any]) -> int:
    """About how many bytes a failure's details take in the batch's output."""
    return sum(len(v) if isinstance(v, str) else len(getattr(v, "data", "") or "") for v in detail.values())


def _fit_detail(detail: dict[str, Any], room: int) -> dict[str, Any]:
    """A failed map input's details cut to ``room`` bytes, so that a batch of failures that
    printed a lot stays under Temporal's payload limit: first the logs keep only their last
    lines, then the pickled exception goes (the type, message and traceback remain)."""
    if _detail_size(detail) <= room:
        return detail
    logs = str(detail.get("logs") or "")
    detail = {**detail, "logs": "(earlier output cut: the batch's output was full)\n" + logs[-2048:]}
    if _detail_size(detail) > room and detail.get("exc") is not None:
        detail["exc"] = None
    return detail

