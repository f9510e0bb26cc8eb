"""Jobs: handles on invocations, from any process."""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator, Iterable
from typing import Any

from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.service import RPCError, RPCStatusCode

from .._contracts import EXECUTE_ACTIVITY, InvocationResult
from .._control._client import get_client
from .._control._connection import ControlPlaneClient
from .._control._loop import AioNamespace, synced, synced_iter
from .._data._blobs import load
from .._data._serialization import CloudPickled
from ..exceptions import (
    ApothicError,
    CallTimeoutError,
    FunctionTimeoutError,
    JobCancelledError,
    NotFoundError,
    PlacementError,
    RemoteError,
)
from ._watch import JobEvent, check_event_types, start_offset, stream_events


class JobStatus(str, enum.Enum):
    """Where a job is. ``queued``: waiting for a container; ``running``: its function runs."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TERMINATED = "terminated"
    TIMED_OUT = "timed_out"

    def __str__(self) -> str:
        return self.value

    @property
    def done(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


_CLOSED = {
    WorkflowExecutionStatus.COMPLETED: JobStatus.COMPLETED,
    WorkflowExecutionStatus.FAILED: JobStatus.FAILED,
    WorkflowExecutionStatus.CANCELED: JobStatus.CANCELLED,
    WorkflowExecutionStatus.TERMINATED: JobStatus.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT: JobStatus.TIMED_OUT,
}


def _detail(err: ApplicationError) -> dict[str, Any]:
    if err.details and isinstance(err.details[0], dict):
        return err.details[0]
    return {}


def translate_failure(err: BaseException, job_id: str) -> BaseException:
    """Turn a Temporal failure into the user's own exception or an Apothic error."""
    cause = err.cause if isinstance(err, WorkflowFailureError) else err
    if isinstance(cause, (CancelledError, TerminatedError)):
        return JobCancelledError(f"job {job_id} was cancelled" + (" (terminated)" if isinstance(cause, TerminatedError) else ""))
    if isinstance(cause, TemporalTimeoutError):
        return CallTimeoutError(f"job {job_id} timed out in Temporal: {cause}")
    if not isinstance(cause, ApplicationError):
        return RemoteError(f"job {job_id} failed: {cause or err}")
    detail = _detail(cause)
    kind = cause.type or ""
    if kind == "FunctionTimeoutError":
        return FunctionTimeoutError(f"job {job_id}: {cause.message}")
    if kind == "PlacementError":
        return PlacementError(f"job {job_id}: {cause.message}")
    if kind == "NotFound":
        return NotFoundError(cause.message)
    if kind in ("ContainerLost", "RemoteError", "apothic.InvalidInput", "apothic.InvalidResult"):
        return RemoteError(f"job {job_id}: {cause.message}", kind)
    tb = str(detail.get("traceback") or "")
    pickled = detail.get("exc")
    if isinstance(pickled, dict):
        try:
            exc = CloudPickled(**pickled).load()
        except Exception:  # noqa: BLE001 - the type may not exist here
            exc = None
        if isinstance(exc, BaseException):
            if tb:
                exc.add_note(f"\nRemote traceback (job {job_id}):\n{tb.rstrip()}")
            return exc
    return RemoteError(cause.message, str(detail.get("type") or kind), tb)


class Job:
    """A handle on one invocation. Cheap to create; every method asks the server.

    ``Job.from_id(job_id)`` re-attaches from any process. All methods have ``.aio`` twins:
    ``await job.aio.wait()``.
    """

    aio = AioNamespace.descriptor()

    def __init__(self, job_id: str, *, client: ControlPlaneClient | None = None) -> None:
        self.job_id = job_id
        self._cp = client or ControlPlaneClient()

    @classmethod
    def from_id(cls, job_id: str, *, client: ControlPlaneClient | None = None) -> "Job":
        """A handle on an existing job (no I/O; a missing job fails on first use with NotFoundError)."""
        return cls(job_id, client=client)

    def __repr__(self) -> str:
        return f"Job({self.job_id!r})"

    async def _handle(self) -> WorkflowHandle:
        client = await get_client(self._cp.settings)
        return client.get_workflow_handle(self.job_id, result_type=InvocationResult)

    async def _describe(self) -> Any:
        handle = await self._handle()
        try:
            return await handle.describe()
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                raise NotFoundError(f"no job {self.job_id!r} on this server") from None
            raise

    @synced
    async def status(self) -> JobStatus:
        """The job's status now (works without a running worker)."""
        desc = await self._describe()
        if desc.status in _CLOSED:
            return _CLOSED[desc.status]
        for pending in desc.raw_description.pending_activities:
            if pending.activity_type.name == EXECUTE_ACTIVITY and pending.state == 2:  # STARTED
                return JobStatus.RUNNING
        return JobStatus.QUEUED

    @synced
    async def wait(self, timeout_s: float | None = None) -> Any:
        """Wait for the result and return it; raise the function's own exception.

        Raises:
            CallTimeoutError: ``timeout_s`` passed first (the job goes on).
            JobCancelledError, FunctionTimeoutError, PlacementError, RemoteError.
        """
        result = await self._result(timeout_s)
        return await load(result.value, self._cp.settings.blobs)

    async def _result(self, timeout_s: float | None) -> InvocationResult:
        handle = await self._handle()
        try:
            return await asyncio.wait_for(handle.result(), timeout_s)
        except asyncio.TimeoutError:
            raise CallTimeoutError(
                f"waited {timeout_s:g} s for job {self.job_id}; it is still running "
                f"(`Job.from_id({self.job_id!r}).wait()` picks it up again)"
            ) from None
        except WorkflowFailureError as e:
            raise translate_failure(e, self.job_id) from None
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                raise NotFoundError(f"no job {self.job_id!r} on this server") from None
            raise

    @synced
    async def logs(self) -> str:
        """The function's own stdout and stderr (the last 256 KiB), so far or final."""
        desc = await self._describe()
        if desc.status == WorkflowExecutionStatus.RUNNING:
            client = await get_client(self._cp.settings)
            for pending in desc.raw_description.pending_activities:
                if pending.activity_type.name == EXECUTE_ACTIVITY and pending.heartbeat_details.payloads:
                    values = await client.data_converter.decode(pending.heartbeat_details.payloads)
                    if values and isinstance(values[0], dict):
                        return str(values[0].get("logs", ""))
            return ""
        handle = await self._handle()
        try:
            return (await handle.result()).logs
        except WorkflowFailureError as e:
            cause = e.cause
            while cause is not None and not isinstance(cause, ApplicationError):
                cause = cause.cause
            return str(_detail(cause).get("logs", "")) if isinstance(cause, ApplicationError) else ""

    @synced
    async def cancel(self, wait_s: float = 30.0) -> None:
        """Cancel the job and wait (up to ``wait_s``) until its function has stopped.

        Cancelling a finished or already cancelled job does nothing.
        """
        handle = await self._handle()
        try:
            await handle.cancel()
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                desc = await self._describe()  # raises NotFoundError for a job that never existed
                if desc.status != WorkflowExecutionStatus.RUNNING:
                    return
            raise
        try:
            await asyncio.wait_for(handle.result(), wait_s)
        except (WorkflowFailureError, asyncio.TimeoutError, RPCError):
            pass

    @synced_iter
    async def watch(
        self,
        snapshot: bool = False,
        *,
        event_types: Iterable[str] | None = None,
        after_seq: int | None = None,
    ) -> AsyncIterator[JobEvent]:
        """Iterate over the job's typed events (:class:`JobEvent`) until it ends.

        ``for event in job.watch(): ...`` blocks; ``async for event in job.aio.watch(): ...``
        is its twin. Events come in order, each once; the last one is ``completed``,
        ``failed`` or ``cancelled``, after which the iteration stops.

        Args:
            snapshot: False: from now on (a finished job still yields its terminal event);
                True: every event since ``queued``.
            event_types: only these types (see :class:`JobEvent`); default: all.
            after_seq: resume after the event with this ``seq`` (overrides ``snapshot``), e.g.
                to reconnect without a gap or a duplicate.

        Raises:
            NotFoundError: no such job. InvalidError: an unknown event type.
        """
        types = check_event_types(event_types, "watch")
        client = await get_client(self._cp.settings)
        offset = await start_offset(client, self.job_id, snapshot=snapshot, after_seq=after_seq)
        async with contextlib.aclosing(
            stream_events(client, self._cp.settings, self.job_id, offset, types)
        ) as events:
            async for event in events:
                yield event


__all__ = ["ApothicError", "Job", "JobEvent", "JobStatus", "translate_failure"]
