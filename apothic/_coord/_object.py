"""What a Dict and a Queue share: a name, the workflow that holds the state, and the calls to it.

A handle is lazy, as in Modal: ``from_name`` does no I/O. The first call either starts the
workflow (``create_if_missing=True``; a running one is used as it is) or checks that it runs
(else ``NotFoundError``). Writes are Temporal updates, each with its own update id, so that
a call retried after a lost connection (a server restart) is applied once by the server;
reads are queries, which cost no history and are refused by the server for a Dict that was
deleted (``reject_condition=NOT_OPEN``). Transient failures (the server unreachable or
restarting, too many updates in flight) are retried for up to ``RETRY_WINDOW_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import warnings
from typing import Any, ClassVar, Self, TypeVar

from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import QueryRejectCondition, WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from .._contracts import NAME_RE
from .._control._client import get_client
from .._control._config import Settings
from .._control._connection import ControlPlaneClient
from .._control._loop import AioNamespace, synced
from .._options._names import NAME_ALLOWED
from ..exceptions import InvalidError, NotFoundError, RemoteError, ServerTimeoutError
from ._values import show

# How long transient failures are retried (a dev server restarting takes a few seconds).
RETRY_WINDOW_S = 60.0
# How long a write waits for a control worker to take it, beyond its own wait.
WORKER_WAIT_S = 60.0
# An ephemeral object deletes itself this long after its owner was last heard from.
EPHEMERAL_LEASE_S = 600.0
EPHEMERAL_HEARTBEAT_S = 60.0
_TRANSIENT = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.ABORTED}
_NO_ARG: Any = object()

H = TypeVar("H", bound="CoordObject")


class Refused(Exception):
    """The workflow refused or failed an update on purpose (``kind``: Full, Empty, Busy, ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # marks it retrieved: no "exception was never retrieved" for a call given up on


async def _bounded(coro: Any, timeout: float) -> Any:
    """``await coro`` for at most ``timeout`` seconds (asyncio.TimeoutError after), cancelling it when
    given up on. Unlike ``asyncio.wait_for``, no warning follows when the SDK turns that cancellation
    into an exception of its own."""
    task = asyncio.ensure_future(coro)
    task.add_done_callback(_retrieved)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        raise TimeoutError()
    return task.result()


def unexpected(obj: CoordObject, r: Refused) -> RemoteError:
    """A refusal the caller has no meaning for (e.g. a control worker of another version)."""
    return RemoteError(f"{obj._label()}: the request was refused: {r.message}", r.kind)


def _restore(cls: type[H], name: str | None, workflow_id: str) -> H:
    return cls._new(name, workflow_id, create_if_missing=False, cp=None)


class CoordObject:
    """A named (or ephemeral) Dict or Queue: the handle on its workflow."""

    KIND: ClassVar[str] = ""
    WORKFLOW: ClassVar[str] = ""
    aio = AioNamespace.descriptor()

    name: str | None
    workflow_id: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kind = self.KIND or type(self).__name__
        raise InvalidError(
            f"apothic.{kind}(...) cannot be made directly. Fix: use apothic.{kind}.from_name('my-{kind.lower()}', "
            f"create_if_missing=True), or `with apothic.{kind}.ephemeral() as x:`."
        )

    # --- making handles ---

    @classmethod
    def _new(cls, name: str | None, workflow_id: str, *, create_if_missing: bool,
             cp: ControlPlaneClient | None, lease_s: float = 0.0) -> Self:
        obj = object.__new__(cls)
        obj.name = name
        obj.workflow_id = workflow_id
        obj._create = create_if_missing
        obj._cp = cp or ControlPlaneClient()
        obj._lease_s = lease_s
        obj._ready = False
        obj._beat = None  # an ephemeral owner's heartbeat task
        return obj

    @staticmethod
    def _id_for(name: str) -> str:  # pragma: no cover - each kind names its workflows
        raise NotImplementedError

    def _state(self) -> Any:  # pragma: no cover - each kind makes its workflow's input
        raise NotImplementedError

    @classmethod
    def _check_name(cls, name: Any, where: str) -> str:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise InvalidError(
                f"{where}: the name {show(name)} is invalid: allowed are {NAME_ALLOWED}. "
                f"Fix: rename it, e.g. apothic.{cls.KIND}.from_name('my-{cls.KIND.lower()}')."
            )
        return name

    @classmethod
    def from_name(cls, name: str, *, create_if_missing: bool = False,
                  client: ControlPlaneClient | None = None) -> Self:
        """A handle on the named object; no I/O happens here.

        The first call on it creates it when ``create_if_missing`` (an existing one is used as
        it is), else fails with NotFoundError if it does not exist.

        Raises:
            InvalidError: ``name`` is not 1-63 letters, digits, '_', '-' and '.'.
        """
        cls._check_name(name, f"{cls.KIND}.from_name")
        if client is not None and not isinstance(client, ControlPlaneClient):
            raise InvalidError(f"{cls.KIND}.from_name(client={show(client)}): allowed: an apothic.ControlPlaneClient "
                               "or None. Fix: pass client=apothic.ControlPlaneClient('host:port').")
        return cls._new(name, cls._id_for(name), create_if_missing=create_if_missing, cp=client)

    @classmethod
    def ephemeral(cls, *, client: ControlPlaneClient | None = None) -> Ephemeral[Self]:
        """A new anonymous object for the duration of a ``with`` (or ``async with``) block.

        It is deleted when the block ends, and deletes itself if its owner stops being heard
        from for 10 minutes (a process that was killed). It can be passed to functions.
        """
        obj = cls._new(None, cls._id_for("~" + uuid.uuid4().hex[:20]), create_if_missing=False, cp=client,
                       lease_s=EPHEMERAL_LEASE_S)
        return Ephemeral(obj)

    def __reduce__(self) -> tuple[Any, ...]:
        # Only the names travel: where it is unpickled (a function container), it uses that
        # process's own connection, which reaches the same control plane.
        return (_restore, (type(self), self.name, self.workflow_id))

    def __repr__(self) -> str:
        if self.name is None:
            return f"<apothic.{self.KIND} ephemeral {self.workflow_id.rpartition('~')[2]}>"
        return f"apothic.{self.KIND}.from_name({self.name!r})"

    def __bool__(self) -> bool:
        return True

    def _label(self) -> str:
        return f"{self.KIND} {self.name!r}" if self.name is not None else f"ephemeral {self.KIND} {self.workflow_id}"

    @property
    def _settings(self) -> Settings:
        return self._cp.settings

    # --- the workflow ---

    def _missing(self, deleted: bool = False) -> NotFoundError:
        s = self._settings
        what = "was deleted" if deleted else "does not exist"
        fix = (f"create it with apothic.{self.KIND}.from_name({self.name!r}, create_if_missing=True)"
               if self.name is not None else f"use it inside its `with apothic.{self.KIND}.ephemeral()` block")
        return NotFoundError(f"{self._label()} {what} on the Temporal server at {s.address} "
                             f"(namespace {s.namespace!r}). Fix: {fix}.")

    async def _handle(self) -> WorkflowHandle[Any, Any]:
        """The handle on the workflow, created or checked on first use."""
        settings = self._settings
        client = await get_client(settings)
        handle = client.get_workflow_handle(self.workflow_id)
        if self._ready:
            return handle
        if self._create:
            await client.start_workflow(
                self.WORKFLOW, self._state(), id=self.workflow_id, task_queue=settings.worker.control_task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING, static_summary=self._label(),
            )
        elif not await self._running(handle):
            raise self._missing()
        self._ready = True
        return handle

    async def _running(self, handle: WorkflowHandle[Any, Any]) -> bool:
        try:
            desc = await handle.describe()
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return desc.status == WorkflowExecutionStatus.RUNNING

    async def _retry_wait(self, e: BaseException, deadline: float, delay: float) -> float:
        """Sleep before another try of a transient failure, or re-raise it when time is up."""
        loop = asyncio.get_running_loop()
        if loop.time() + delay > deadline:
            raise e
        await asyncio.sleep(delay)
        return min(delay * 2, 2.0)

    async def _update(self, update: str, arg: Any = _NO_ARG, result_type: type | None = None, *,
                      wait_s: float = 0.0, op_id: str | None = None) -> Any:
        """Run an update; a refusal (validator) or failure on purpose raises :class:`Refused`."""
        handle = await self._handle()
        args = [] if arg is _NO_ARG else [arg]
        op_id = op_id or uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WORKER_WAIT_S + wait_s
        retry_until = loop.time() + RETRY_WINDOW_S + wait_s
        delay = 0.1
        while True:
            left = deadline - loop.time()
            try:
                upd = await _bounded(
                    handle.start_update(update, args=args, id=op_id, wait_for_stage=WorkflowUpdateStage.COMPLETED,
                                        result_type=result_type),
                    max(left, 0.001),
                )
                return await upd.result()
            except WorkflowUpdateFailedError as e:
                cause = e.cause
                kind = str(getattr(cause, "type", "") or "")
                message = str(getattr(cause, "message", "") or cause or e)
                if kind == "Deleted":
                    raise self._missing(deleted=True) from None
                raise Refused(kind, message) from None
            except RPCError as e:
                if e.status == RPCStatusCode.NOT_FOUND:
                    # Ended (deleted), or caught between two runs of a continue-as-new.
                    if loop.time() < retry_until and await self._running(handle):
                        await asyncio.sleep(0.05)
                        continue
                    raise self._missing(deleted=self._ready) from None
                if e.status not in _TRANSIENT:
                    raise
                delay = await self._retry_wait(e, retry_until, delay)
            except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as e:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError() from None
                if loop.time() >= deadline:
                    s = self._settings
                    raise ServerTimeoutError(
                        f"{self._label()}: no control worker took the {update!r} request within "
                        f"{WORKER_WAIT_S + wait_s:g} s on task queue {s.worker.control_task_queue!r} at {s.address}. "
                        "Fix: start one with `apothic worker` (or `apothic dev`); a write may still be applied "
                        "when one starts."
                    ) from e
                delay = await self._retry_wait(e, retry_until, delay)

    async def _query(self, query: str, arg: Any = _NO_ARG, result_type: type | None = None) -> Any:
        handle = await self._handle()
        args = [] if arg is _NO_ARG else [arg]
        loop = asyncio.get_running_loop()
        retry_until = loop.time() + RETRY_WINDOW_S
        delay = 0.1
        while True:
            try:
                return await handle.query(query, args=args, result_type=result_type,
                                          reject_condition=QueryRejectCondition.NOT_OPEN)
            except WorkflowQueryRejectedError as e:
                if e.status == WorkflowExecutionStatus.CONTINUED_AS_NEW and loop.time() < retry_until:
                    continue  # between two runs: the next one answers
                raise self._missing(deleted=True) from None
            except WorkflowQueryFailedError as e:
                if "was deleted" in (e.message or ""):
                    raise self._missing(deleted=True) from None
                raise RemoteError(f"{self._label()}: the {query!r} query failed: {e.message}") from None
            except RPCError as e:
                if e.status == RPCStatusCode.NOT_FOUND:
                    raise self._missing(deleted=self._ready) from None
                if e.status not in _TRANSIENT:
                    raise
                delay = await self._retry_wait(e, retry_until, delay)

    async def _signal(self, signal: str, arg: Any = _NO_ARG) -> None:
        client = await get_client(self._settings)
        handle = client.get_workflow_handle(self.workflow_id)
        await (handle.signal(signal) if arg is _NO_ARG else handle.signal(signal, arg))

    # --- the public calls every kind has ---

    @synced
    async def hydrate(self) -> Self:
        """Create it (``create_if_missing``) or check that it exists, now rather than on first use.

        Raises:
            NotFoundError: it does not exist (or was deleted).
        """
        await self._handle()
        return self

    @synced
    async def _open(self) -> None:
        """Start an ephemeral object's workflow and its owner's heartbeat."""
        settings = self._settings
        client = await get_client(settings)
        await client.start_workflow(
            self.WORKFLOW, self._state(), id=self.workflow_id, task_queue=settings.worker.control_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL, static_summary=self._label(),
        )
        self._ready = True
        self._beat = asyncio.get_running_loop().create_task(self._heartbeat())

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(EPHEMERAL_HEARTBEAT_S)
            with contextlib.suppress(Exception):  # a missed beat: the lease allows ten
                await self._signal("touch")

    @synced
    async def _close(self) -> None:
        """Delete an ephemeral object (a failure only warns: its lease ends it anyway)."""
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None
        try:
            await self._update("delete", result_type=int)
        except NotFoundError:
            pass  # deleted already
        except Exception as e:  # noqa: BLE001 - the block's own error matters more
            warnings.warn(f"{self._label()} could not be deleted ({type(e).__name__}: {e}); it deletes itself "
                          f"{EPHEMERAL_LEASE_S / 60:g} minutes after its owner stops.", stacklevel=2)


class Ephemeral(contextlib.AbstractContextManager, contextlib.AbstractAsyncContextManager):  # type: ignore[type-arg]
    """What ``Dict.ephemeral()`` / ``Queue.ephemeral()`` return: ``with`` or ``async with`` it."""

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __enter__(self) -> Any:
        self._obj._open()
        return self._obj

    def __exit__(self, *exc: object) -> None:
        self._obj._close()

    async def __aenter__(self) -> Any:
        await self._obj.aio._open()
        return self._obj

    async def __aexit__(self, *exc: object) -> None:
        await self._obj.aio._close()


class Manager:
    """``Dict.objects`` / ``Queue.objects``: create, list and delete named ones."""

    aio = AioNamespace.descriptor()

    def __init__(self, cls: type[CoordObject]) -> None:
        self._cls = cls

    def __repr__(self) -> str:
        return f"apothic.{self._cls.KIND}.objects"

    @synced
    async def create(self, name: str, *, allow_existing: bool = False,
                     client: ControlPlaneClient | None = None) -> None:
        """Create the named one now (an existing one is an error unless ``allow_existing``).

        Raises:
            InvalidError: a bad name, or it exists and ``allow_existing`` is False.
        """
        obj = self._cls.from_name(name, client=client)
        settings = obj._settings
        c = await get_client(settings)
        try:
            await c.start_workflow(
                obj.WORKFLOW, obj._state(), id=obj.workflow_id, task_queue=settings.worker.control_task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL, static_summary=obj._label(),
            )
        except WorkflowAlreadyStartedError:
            if not allow_existing:
                raise InvalidError(f"{obj._label()} exists already. Fix: use apothic.{obj.KIND}.from_name({name!r}), "
                                   "or pass allow_existing=True.") from None

    @synced
    async def list(self, *, client: ControlPlaneClient | None = None) -> list[Any]:
        """Handles on every named one that exists, by name (ephemeral ones are not listed)."""
        cp = client or ControlPlaneClient()
        c = await get_client(cp.settings)
        prefix = self._cls._id_for("")
        names = set()
        async for wf in c.list_workflows(f"WorkflowType = '{self._cls.WORKFLOW}' AND ExecutionStatus = 'Running'"):
            name = wf.id[len(prefix):] if wf.id.startswith(prefix) else ""
            if name and not name.startswith("~"):
                names.add(name)
        return [self._cls.from_name(n, client=client) for n in sorted(names)]

    @synced
    async def delete(self, name: str, *, allow_missing: bool = False,
                     client: ControlPlaneClient | None = None) -> None:
        """Delete the named one and everything in it; handles on it fail with NotFoundError.

        Raises:
            NotFoundError: it does not exist (unless ``allow_missing``).
        """
        obj = self._cls.from_name(name, client=client)
        try:
            await obj._update("delete", result_type=int)
        except NotFoundError:
            if not allow_missing:
                raise
