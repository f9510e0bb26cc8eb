"""Function handles: ``@app.function`` results and ``RemoteFunction.from_name`` lookups."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import (
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from .._contracts import (
    APP_MEMO_KEY,
    FLEET_PENDING_MEMO_KEY,
    INVOCATION_WORKFLOW,
    TERMINAL_EVENT_TYPES,
    AppMemo,
    Deployment,
    FleetPending,
    InvocationInput,
    InvocationResult,
    app_workflow_id,
    make_deployment,
)
from .._control._client import get_client, search_attributes
from .._control._connection import ControlPlaneClient
from .._control._loop import AioNamespace, synced, synced_iter
from .._data._blobs import load, offload
from .._data._serialization import CloudPickled
from .._options._names import check_name
from .._trace import call_span, note_job
from ..exceptions import CallTimeoutError, InvalidError, NotFoundError, PendingLimitError, RemoteError
from ._ephemeral import note_started
from ._job import Job, translate_failure
from ._mapping import iter_map, run_map, spawn_each
from ._output import OUTPUT
from ._watch import JobEvent, check_event_types, start_offset, stream_events

if TYPE_CHECKING:
    from .._app import App
    from .._options._validation import FunctionOptions

P = ParamSpec("P")
R = TypeVar("R")



# How long a read of the fleet's pending memo that found room is reused by the same handle.
PENDING_REUSE_S = 0.1


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex[:20]}"


async def _attach_offset(client: Any, job_id: str) -> int:
    """Where a watch without snapshot of a job this call just started begins: the end of the
    job's event log now (``Job.watch(snapshot=False)``), and never before the end of ``queued``,
    the event the job records first, as it starts. A position query that fails (no control
    worker ran the job's first workflow task within the server's RPC timeout) gives that
    position too."""
    try:
        offset = await start_offset(client, job_id, snapshot=False, after_seq=None)
    except RPCError:
        offset = 1
    return max(1, offset)


async def deployed_app(cp: ControlPlaneClient, app_name: str) -> tuple[AppMemo, str]:
    """The memo of a deployed app (one describe of its registry, no worker needed) and the words
    for where it was looked up; ``NotFoundError`` when the app is not deployed there."""
    settings = cp.settings
    client = await get_client(settings)
    try:
        desc = await client.get_workflow_handle(app_workflow_id(app_name)).describe()
        memo: AppMemo | None = await desc.memo_value(APP_MEMO_KEY, None, type_hint=AppMemo)
    except RPCError as e:
        if e.status != RPCStatusCode.NOT_FOUND:
            raise
        memo = None
    where = f"on {settings.address} (namespace {settings.namespace!r})"
    if memo is None or memo.removed or not memo.version:
        from ._apps import not_deployed

        raise await not_deployed(settings, app_name)  # says when it was removed, if it was
    return memo, where


class _Invocable(Generic[P, R]):
    """The invocation surface shared by deployed Function handles and RemoteFunction lookups."""

    aio = AioNamespace.descriptor()

    def __init__(self, app_name: str, function_name: str, cp: ControlPlaneClient) -> None:
        self.app_name = app_name
        self.function_name = function_name
        self._cp = cp
        self._last_dep: Deployment | None = None  # the last resolve's, to read its fleet alongside the next
        self._pending_read: tuple[str, float, FleetPending] | None = None  # (fleet id, when, what)

    def _pack(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CloudPickled:
        try:
            packed = CloudPickled.dump((args, kwargs), kind="args", qualname=f"{self.app_name}.{self.function_name}")
        except Exception as e:  # noqa: BLE001 - pickling errors are the caller's
            raise InvalidError(
                f"the arguments of {self.function_name}() cannot be pickled: {e}. "
                "Fix: pass plain data (or objects cloudpickle can serialise)."
            ) from None
        return packed

    async def _resolve(self) -> Deployment:
        """The function's current deployment, from the app's memo (one describe, no worker needed)."""
        settings = self._cp.settings
        memo, where = await deployed_app(self._cp, self.app_name)
        for spec in memo.functions:
            if spec.name == self.function_name:
                w = settings.worker
                dep = make_deployment(self.app_name, spec, memo.version, w.startup_timeout_s, w.container_idle_s)
                self._last_dep = dep
                return dep
        raise NotFoundError(
            f"app {self.app_name!r} (version {memo.version}) has no function {self.function_name!r} {where}; "
            f"it has {sorted(s.name for s in memo.functions)}. Fix: check the name, or redeploy the app."
        )

    async def _fleet_pending(self, dep: Deployment) -> FleetPending:
        """What the deployment's fleet last published about its waiting inputs (one describe,
        no worker needed). No fleet, or one that has ended, holds no waiting input and no
        container either: ``saturated`` (the job will wait for a cold start, so it asks for
        capacity at once instead of after 250 ms). A read that found room
        is reused for ``PENDING_REUSE_S`` (a quick series of calls does not describe each
        time; the fleet's own count trails by more than that); a full one is read again."""
        read = self._pending_read
        if read is not None and read[0] == dep.fleet_id and time.monotonic() - read[1] < PENDING_REUSE_S:
            return read[2]
        state = await self._read_fleet_pending(dep)
        self._pending_read = None if state.full else (dep.fleet_id, time.monotonic(), state)
        return state

    async def _read_fleet_pending(self, dep: Deployment) -> FleetPending:
        client = await get_client(self._cp.settings)
        try:
            desc = await client.get_workflow_handle(dep.fleet_id).describe()
        except RPCError as e:
            if e.status != RPCStatusCode.NOT_FOUND:
                raise
            return FleetPending(saturated=True)
        if desc.status != WorkflowExecutionStatus.RUNNING:
            return FleetPending(saturated=True)
        state: FleetPending = await desc.memo_value(FLEET_PENDING_MEMO_KEY, FleetPending(), type_hint=FleetPending)
        return state

    async def _resolve_checked(self) -> tuple[Deployment, FleetPending]:
        """The deployment and its fleet's pending memo. The fleet of the version seen last is
        read alongside the app's memo (the two describes overlap: no extra wait on a warm
        call); only a new version's fleet is read after."""
        guess = self._last_dep
        read = self._pending_read
        if guess is None or (read is not None and read[0] == guess.fleet_id
                             and time.monotonic() - read[1] < PENDING_REUSE_S):
            dep = await self._resolve()
            return dep, await self._fleet_pending(dep)
        resolved, read = await asyncio.gather(self._resolve(), self._fleet_pending(guess), return_exceptions=True)
        if isinstance(resolved, BaseException):
            raise resolved
        if resolved.fleet_id != guess.fleet_id:
            return resolved, await self._fleet_pending(resolved)
        if isinstance(read, BaseException):
            raise read
        return resolved, read

    def _pending_error(self, dep: Deployment, state: FleetPending) -> PendingLimitError:
        spec = dep.spec
        return PendingLimitError(
            f"{self.app_name}.{self.function_name}: {state.waiting} inputs already wait for capacity, the limit "
            f"max_pending_tasks={spec.max_pending_tasks} (beyond the {state.slots} slots of max_containers="
            f"{spec.max_containers}); nothing was submitted. Fix: raise max_pending_tasks, raise max_containers, "
            "or submit with fn.map(...) / fn.spawn_map(...), which wait for room instead of failing.",
            limit=spec.max_pending_tasks,
            waiting=state.waiting,
        )

    async def _start(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], idempotency_key: str | None = None
    ) -> Job:
        return await self._start_packed(self._pack(args, kwargs), idempotency_key)

    async def _start_packed(
        self,
        packed: CloudPickled,
        idempotency_key: str | None = None,
        dep: Deployment | None = None,
        pending: FleetPending | None = None,
        *,
        limit: bool = True,
        watch: bool = True,
    ) -> Job:
        """Start one job. ``pending`` is the fleet's memo (read here if not given); with
        ``limit``, a full one raises :class:`PendingLimitError` (``spawn_map`` waits for room
        instead and passes ``limit=False``). With live output on, the job's output is printed
        as it comes (``watch``; ``remote_gen`` prints its own stream's)."""
        settings = self._cp.settings
        client = await get_client(settings)
        if dep is None:
            dep, pending = await self._resolve_checked()
        elif pending is None:
            pending = await self._fleet_pending(dep)
        if idempotency_key is not None:
            if not isinstance(idempotency_key, str) or not idempotency_key:
                raise InvalidError(
                    f"idempotency_key={idempotency_key!r}: allowed: a non-empty string. "
                    "Fix: pass a key that names this piece of work, e.g. f'invoice-{invoice_id}'."
                )
            digest = hashlib.sha256(f"{self.app_name}\0{self.function_name}\0{idempotency_key}".encode())
            job_id = f"job-{digest.hexdigest()[:20]}"
        else:
            job_id = new_job_id()
        note_job(job_id)
        if limit and pending.full:
            if idempotency_key is not None and await self._job_exists(job_id):
                return Job(job_id, client=self._cp)  # the key's job: found, not submitted
            raise self._pending_error(dep, pending)
        # Large arguments go to the blob store; the workflow gets a reference.
        packed = await offload(packed, settings.blobs)
        try:
            await client.start_workflow(
                INVOCATION_WORKFLOW,
                InvocationInput(
                    job_id=job_id,
                    app=self.app_name,
                    function=self.function_name,
                    args=packed,
                    version=dep.version,
                    deployment=dep,
                    demand_now=pending.saturated,
                ),
                id=job_id,
                task_queue=settings.worker.control_task_queue,
                search_attributes=search_attributes(self.app_name, self.function_name),
                static_summary=f"{self.app_name}.{self.function_name}",
                # A key submitted again finds its job, running or finished.
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            if idempotency_key is None:
                raise
        note_started(self.app_name, job_id)
        if watch:
            OUTPUT.watch(self, job_id)
        return Job(job_id, client=self._cp)

    async def _job_exists(self, job_id: str) -> bool:
        client = await get_client(self._cp.settings)
        try:
            await client.get_workflow_handle(job_id).describe()
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def _submit_within(self, call: str, packed: CloudPickled, timeout_s: float | None, *, generator: bool) -> Job:
        """Resolve, check and start one job within the caller's ``timeout_s``: connecting to a
        server that accepts and never answers counts against it too (``CallTimeoutError``)."""

        async def submit() -> Job:
            dep, pending = await self._resolve_checked()
            if dep.spec.is_generator and not generator:
                raise InvalidError(
                    f"{self.app_name}.{self.function_name} is a generator function; remote() has no single result "
                    "to return. Fix: iterate `fn.remote_gen(...)` (or `fn.remote_events(...)`)."
                )
            if generator and not dep.spec.is_generator:
                raise InvalidError(
                    f"{self.app_name}.{self.function_name} is not a generator function (it has no `yield`). "
                    "Fix: call it with remote(), or make it yield its items."
                )
            return await self._start_packed(packed, dep=dep, pending=pending, watch=not generator)

        try:
            return await asyncio.wait_for(submit(), timeout_s)
        except asyncio.TimeoutError:
            raise CallTimeoutError(
                f"{self.app_name}.{self.function_name}.{call}(): the Temporal server at {self._cp.settings.address} "
                f"did not take the call within the caller's timeout_s={timeout_s:g} (connecting and submitting "
                "count against it). Fix: check that the server at that address is up and answering, or give a longer "
                "timeout_s."
            ) from None

    @synced
    @call_span("spawn")
    async def spawn(self, *args: Any, idempotency_key: str | None = None, **kwargs: Any) -> Job:
        """Submit one call and return its :class:`Job` at once.

        Raises :class:`PendingLimitError` at once when ``max_pending_tasks`` inputs of the
        function already wait for capacity (``spawn_map`` and ``map`` wait instead).
        With ``idempotency_key``, submitting the same key again (from any process, while the
        server keeps the job's history) returns the same job instead of running it again; the
        arguments of the repeat are ignored. The key is scoped to this app and function.
        """
        return await self._start(args, kwargs, idempotency_key)

    @synced
    @call_span("call")  # one trace: this span, the job's workflows, its container, the user's code
    async def remote(self, *args: Any, timeout_s: float = 600.0, **kwargs: Any) -> Any:
        """Call the function remotely and return its result.

        ``timeout_s`` is how long this caller waits (the function's own limit is its
        decorator's ``timeout_s``); when it passes, the job is cancelled and
        :class:`CallTimeoutError` raised. A failing function re-raises its own exception
        with the remote traceback attached as a note. Past ``max_pending_tasks`` waiting
        inputs it raises :class:`PendingLimitError` at once, like :meth:`spawn`.
        """
        if timeout_s is not None and timeout_s <= 0:
            raise InvalidError(f"remote(timeout_s={timeout_s!r}): allowed: > 0. Fix: give seconds to wait, e.g. 60.")
        packed = self._pack(args, kwargs)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        job = await self._submit_within("remote", packed, timeout_s, generator=False)
        client = await get_client(self._cp.settings)
        handle = client.get_workflow_handle(job.job_id, result_type=InvocationResult)
        try:
            remaining = max(0.001, deadline - loop.time())
            result: InvocationResult = await asyncio.wait_for(handle.result(), remaining)
        except asyncio.TimeoutError:
            await job.aio.cancel(wait_s=10)
            raise CallTimeoutError(
                f"{self.app_name}.{self.function_name}: no result within the caller's timeout_s={timeout_s:g}; "
                f"job {job.job_id} was cancelled"
            ) from None
        except WorkflowFailureError as e:
            await OUTPUT.settle(job.job_id)  # what it printed shows before its error
            raise translate_failure(e, job.job_id) from None
        await OUTPUT.settle(job.job_id)
        return await load(result.value, self._cp.settings.blobs)

    async def _map_iter(
        self, items: Iterable[Any], *, timeout_s: float = 600.0, return_exceptions: bool = False
    ) -> AsyncIterator[Any]:
        async with contextlib.aclosing(
            iter_map(self, items, star=False, timeout_s=timeout_s, return_exceptions=return_exceptions)
        ) as results:
            async for value in results:
                yield value

    async def _starmap_iter(
        self, items: Iterable[Any], *, timeout_s: float = 600.0, return_exceptions: bool = False
    ) -> AsyncIterator[Any]:
        async with contextlib.aclosing(
            iter_map(self, items, star=True, timeout_s=timeout_s, return_exceptions=return_exceptions)
        ) as results:
            async for value in results:
                yield value

    @synced.iterating(_map_iter)
    async def map(
        self, items: Iterable[Any], *, timeout_s: float = 600.0, return_exceptions: bool = False
    ) -> list[Any]:
        """Call the function once per item (one argument each); results in input order.

        ``async for r in fn.map.aio(items)`` (or ``fn.aio.map``) yields the same results one
        by one, in input order, as they are read.

        All inputs run in one MapWorkflow, in batches of up to 32 inputs, one batch per slot
        of up to ``max_containers`` containers plus as many queued (never more than
        ``max_pending_tasks``); any number of inputs works (they are fed and read back in
        batches), and the limit never fails a map: it waits for room.
        A failing input raises its own exception (the rest is cancelled) unless
        ``return_exceptions=True``, which puts the exception in its place. An iterator that
        raises fails the call with that error; an empty one returns ``[]`` at once.
        ``timeout_s`` bounds the whole call (``CallTimeoutError``, the map is cancelled).
        """
        return await run_map(
            self, items, star=False, collect=True, timeout_s=timeout_s, return_exceptions=return_exceptions
        )  # type: ignore[return-value]

    @synced.iterating(_starmap_iter)
    async def starmap(
        self, items: Iterable[Any], *, timeout_s: float = 600.0, return_exceptions: bool = False
    ) -> list[Any]:
        """Like :meth:`map`, each item being the tuple of positional arguments of one call
        (``async for r in fn.starmap.aio(items)`` too)."""
        return await run_map(
            self, items, star=True, collect=True, timeout_s=timeout_s, return_exceptions=return_exceptions
        )  # type: ignore[return-value]

    @synced
    async def for_each(
        self, items: Iterable[Any], *, timeout_s: float = 600.0, return_exceptions: bool = False
    ) -> None:
        """Like :meth:`map` for its effects: results are not kept; a failure still raises."""
        await run_map(self, items, star=False, collect=False, timeout_s=timeout_s, return_exceptions=return_exceptions)

    @synced
    async def spawn_map(self, items: Iterable[Any]) -> list[Job]:
        """Submit one job per item (one argument each) and return the jobs, in order.

        It applies back-pressure instead of raising :class:`PendingLimitError`: it keeps at
        most ``max_pending_tasks`` of its jobs waiting beyond the fleet's slots, and waits
        while the fleet counts the limit reached, so it returns once the last job is submitted.
        On a terminal a progress bar counts the submissions meanwhile.
        """
        return await spawn_each(self, items)

    @synced_iter
    async def remote_gen(self, *args: Any, timeout_s: float = 600.0, **kwargs: Any) -> AsyncIterator[Any]:
        """Call a generator function (``def``/``async def`` with ``yield``) and iterate over
        its items as the remote generator yields them.

        ``for x in fn.remote_gen(...)`` blocks; ``async for x in fn.aio.remote_gen(...)`` is
        its twin. The first item arrives while the generator still runs. An exception the
        generator raises is re-raised here as its own type, after the items before it.
        ``timeout_s`` bounds the whole iteration (:class:`CallTimeoutError`, the job is
        cancelled); leaving the loop early cancels the job too.

        A retried attempt (``retries=`` or a lost container) runs the generator again and
        skips, by position, the items an earlier attempt delivered: each position arrives once.
        Each item may be at most 0.5 MB pickled, and an attempt may yield 10,000 items / 8 MB
        (they travel through the job's history); beyond that the job fails with
        :class:`RemoteError` (``apothic.InvalidResult``).
        """
        if timeout_s is not None and timeout_s <= 0:
            raise InvalidError(f"remote_gen(timeout_s={timeout_s!r}): allowed: > 0. Fix: give seconds, e.g. 60.")
        packed = self._pack(args, kwargs)
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        job = await self._submit_within("remote_gen", packed, timeout_s, generator=True)
        client = await get_client(self._cp.settings)
        finished = False
        shown = ["log", "image", "retry"] if OUTPUT.enabled else []  # printed in order with the items
        try:
            async with contextlib.aclosing(
                stream_events(client, self._cp.settings, job.job_id, 0, ["output", *shown, *TERMINAL_EVENT_TYPES])
            ) as events:
                while True:
                    remaining = None if deadline is None else max(0.001, deadline - loop.time())
                    try:
                        ev = await asyncio.wait_for(anext(events), remaining)
                    except asyncio.TimeoutError:
                        raise CallTimeoutError(
                            f"{self.app_name}.{self.function_name}: not finished within the caller's "
                            f"timeout_s={timeout_s:g}; job {job.job_id} was cancelled"
                        ) from None
                    except StopAsyncIteration:
                        finished = True
                        return
                    if ev.event in shown:
                        OUTPUT.event(self.function_name, job.job_id, ev.event, ev.data, ev.timestamp)
                        continue
                    if ev.event == "output":
                        if "error" in ev.data:
                            raise RemoteError(
                                f"job {job.job_id}: item {ev.data.get('index')} cannot be unpickled here: "
                                f"{ev.data['error']}"
                            )
                        yield ev.data["value"]
                        continue
                    finished = True
                    if ev.event != "completed":
                        await job.aio.wait()  # raises the generator's own exception (or cancellation)
                    return
        finally:
            if not finished:
                with contextlib.suppress(Exception):
                    await asyncio.shield(job.aio.cancel(wait_s=0))

    @synced_iter
    async def remote_events(
        self,
        *args: Any,
        snapshot: bool = False,
        event_types: Iterable[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[JobEvent]:
        """Submit one call and iterate over its typed events (:class:`JobEvent`) until it ends.

        The same as ``job = fn.spawn(...)`` then ``job.watch(snapshot=..., event_types=...)``, in
        one step; ``snapshot`` means what it means for :meth:`Job.watch`:

        - ``snapshot=True``: every event of the job, from ``queued`` (``seq`` 1) on.
        - ``snapshot=False`` (the default): the events from the moment the watch attaches to the
          new job, at the end of its event log then. That is always after ``queued`` (the job
          records it as it starts, before it can be watched), and, when a warm container runs a
          short call at once, may be later still (``started``, logs); the terminal event is
          always delivered.

        ``event.job_id`` names the job; leaving the loop early leaves the job running.
        ``async for e in fn.aio.remote_events(...)`` is the async twin.

        Raises:
            InvalidError: ``snapshot`` is not a bool, or an unknown event type.
        """
        if not isinstance(snapshot, bool):
            raise InvalidError(
                f"remote_events(snapshot={snapshot!r}): allowed: True (every event from 'queued') or False (from "
                "the moment the watch attaches). Fix: pass snapshot=True or snapshot=False."
            )
        types = check_event_types(event_types, "remote_events")
        job = await self._start(args, kwargs)
        client = await get_client(self._cp.settings)
        offset = 0 if snapshot else await _attach_offset(client, job.job_id)
        async with contextlib.aclosing(stream_events(client, self._cp.settings, job.job_id, offset, types)) as events:
            async for ev in events:
                yield ev

    if TYPE_CHECKING:

        def remote(self, *args: P.args, **kwargs: P.kwargs) -> R: ...  # type: ignore[no-redef]

        def spawn(self, *args: P.args, **kwargs: P.kwargs) -> Job: ...  # type: ignore[no-redef]


class Function(_Invocable[P, R]):
    """What ``@app.function(...)`` returns: the user's function plus its remote surface.

    Calling it directly (``fn(x)`` or ``fn.local(x)``) runs it here; ``fn.remote(x)`` runs
    the deployed version (``app.deploy()`` first).
    """

    def __init__(self, app: "App", raw: Callable[P, R], options: "FunctionOptions") -> None:
        super().__init__(app.name, raw.__name__, app._cp)
        self.app = app
        self.raw_f = raw
        self.options = options
        self.__doc__ = raw.__doc__
        self.__name__ = raw.__name__
        self.__qualname__ = getattr(raw, "__qualname__", raw.__name__)
        self.__module__ = raw.__module__
        self.__wrapped__ = raw

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.raw_f(*args, **kwargs)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.raw_f(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<apothic.Function {self.app_name}.{self.function_name}>"


class RemoteFunction(_Invocable[..., Any]):
    """A deployed function looked up by name, from any process."""

    @classmethod
    def from_name(
        cls,
        app_name: str,
        function_name: str,
        *,
        client: ControlPlaneClient | None = None,
        base_url: str | None = None,
    ) -> "RemoteFunction":
        """A handle on ``function_name`` of the deployed app ``app_name``.

        No I/O happens here; a call fails with NotFoundError if the app or the function is not
        deployed. Each call runs the version current when it starts.

        Args:
            client: the control plane to use (default: the settings in force).
            base_url: a Temporal address ``host:port`` (shorthand for ``client=ControlPlaneClient(base_url)``).
        """
        check_name("app", app_name)
        check_name("function", function_name)
        if client is not None and base_url is not None:
            raise InvalidError("give client= or base_url=, not both. Fix: drop one of them.")
        cp = client or ControlPlaneClient(base_url)
        return cls(app_name, function_name, cp)

    def __repr__(self) -> str:
        return f"<apothic.RemoteFunction {self.app_name}.{self.function_name}>"
