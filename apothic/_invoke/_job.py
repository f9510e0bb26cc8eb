"""Jobs: handles on invocations, from any process."""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from typing import Any

from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.service import RPCError, RPCStatusCode

from .._contracts import (
    EXECUTE_ACTIVITY,
    INVOCATION_WORKFLOW,
    AttemptLogs,
    InvocationResult,
    JobInfo,
    JobLogs,
)
from .._control._client import get_client
from .._control._connection import ControlPlaneClient
from .._control._errors import mark_user_exception
from .._control._loop import AioNamespace, synced, synced_class, synced_iter
from .._data._blobs import load
from .._data._serialization import CloudPickled
from ..exceptions import (
    ApothicError,
    CallTimeoutError,
    FunctionTimeoutError,
    InvalidError,
    JobCancelledError,
    NotFoundError,
    PlacementError,
    RemoteError,
)
from ._watch import JobEvent, check_event_types, not_a_job, start_offset, stream_events


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


def status_of(desc: Any) -> JobStatus:
    """A job's status from its workflow's description: a closed one's outcome; an open one is
    ``running`` once a container started its ``apothic.execute`` activity, else ``queued``."""
    if desc.status in _CLOSED:
        return _CLOSED[desc.status]
    for pending in desc.raw_description.pending_activities:
        if pending.activity_type.name == EXECUTE_ACTIVITY and pending.state == 2:  # STARTED
            return JobStatus.RUNNING
    return JobStatus.QUEUED


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
            return mark_user_exception(exc)  # re-raised as it is, never translated
    return RemoteError(cause.message, str(detail.get("type") or kind), tb)


def _job_logs(value: Any) -> JobLogs | None:
    """The ``earlier`` detail of a failure (JSON) as a :class:`JobLogs`."""
    if not isinstance(value, dict):
        return None
    try:
        attempts = [AttemptLogs(int(a["attempt"]), str(a["outcome"]), str(a.get("logs") or "")) for a in value["attempts"]]
        return JobLogs(attempts, int(value["attempt"]), str(value.get("outcome") or ""), int(value.get("not_kept") or 0))
    except (KeyError, TypeError, ValueError):
        return None


def _attempts_text(earlier: JobLogs | None, last: str, state: str = "") -> str:
    """``last`` (the last attempt's output) after the earlier attempts' output, each under a
    ``--- attempt N (outcome) ---`` line; just ``last`` for a job that ran once."""
    if earlier is None or not (earlier.attempts or earlier.not_kept):
        return last

    def section(label: str, outcome: str, text: str) -> str:
        return f"--- {label} ({outcome}) ---\n" + text + ("\n" if text and not text.endswith("\n") else "")

    n = earlier.not_kept
    parts = [section(f"attempts 1-{n}" if n > 1 else "attempt 1", "output not kept", "")] if n else []
    parts += [section(f"attempt {a.attempt}", a.outcome, a.logs) for a in earlier.attempts]
    if earlier.attempt > (earlier.attempts[-1].attempt if earlier.attempts else n):  # not between attempts
        parts.append(section(f"attempt {earlier.attempt}", earlier.outcome or state or "running", last))
    return "".join(parts)


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
    def from_id(cls, job_id: str, *, client: ControlPlaneClient | None = None) -> "Job":  # noqa: UP037 - frozen signature
        """A handle on an existing job (no I/O; a missing job fails on first use with NotFoundError)."""
        if not isinstance(job_id, str) or not job_id.strip():
            raise InvalidError(
                f"Job.from_id({job_id!r}): allowed: a job id, a non-empty string such as 'job-3f2a…' "
                "(`Job.job_id`, `apothic jobs list`). Fix: pass the id of a job."
            )
        return cls(job_id, client=client)

    def __repr__(self) -> str:
        return f"Job({self.job_id!r})"

    async def _handle(self) -> WorkflowHandle:
        client = await get_client(self._cp.settings)
        return client.get_workflow_handle(self.job_id, result_type=InvocationResult)

    async def _describe(self) -> Any:
        handle = await self._handle()
        try:
            desc = await handle.describe()
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                raise NotFoundError(f"no job {self.job_id!r} on this server") from None
            raise
        if desc.workflow_type != INVOCATION_WORKFLOW:
            raise not_a_job(self.job_id, desc.workflow_type)
        return desc

    @synced
    async def status(self) -> JobStatus:
        """The job's status now (works without a running worker)."""
        return status_of(await self._describe())

    @synced
    async def info(self) -> JobInfo:
        """What the job's workflow knows of it (a control worker answers): status, attempts and,
        once a container took it, where it ran: ``placement`` (provider, offer, instance, host,
        image, container id, price per hour), ``ran`` (each attempt's, with its rented seconds
        and cost), ``rented_s`` and ``cost_usd`` in all."""
        from ._info import job_info

        return await job_info(await self._handle(), self.job_id)

    @synced
    async def wait(self, timeout_s: float | None = None) -> Any:
        """Wait for the result and return it; raise the function's own exception.

        Raises:
            CallTimeoutError: ``timeout_s`` passed first (the job goes on).
            JobCancelledError, FunctionTimeoutError, PlacementError, RemoteError.
        """
        from ._output import OUTPUT

        try:
            result = await self._result(timeout_s)
        except CallTimeoutError:
            raise
        except Exception:
            await OUTPUT.settle(self.job_id)  # what it printed shows before its error
            raise
        await OUTPUT.settle(self.job_id)
        return await load(result.value, self._cp.settings.blobs)

    @synced_class
    async def gather(cls, *jobs: "Job") -> list[Any]:  # noqa: UP037 - frozen signature
        """Wait for every job and return their results, in the order given.

        ``Job.gather(a, b, c)`` blocks; ``await Job.gather.aio(a, b, c)`` awaits. The first
        error (in time) is raised, the function's own exception as with :meth:`wait`; the
        other waits stop there (their jobs keep running: cancel them with :meth:`cancel`).
        """
        bad = [j for j in jobs if not isinstance(j, Job)]
        if bad:
            raise InvalidError(
                f"Job.gather(...) takes Jobs, got {', '.join(sorted({type(b).__name__ for b in bad}))}. Fix: pass "
                "what spawn() returned, e.g. Job.gather(*[fn.spawn(x) for x in xs]) (a list: Job.gather(*jobs))."
            )
        waits = [asyncio.ensure_future(j.wait.aio()) for j in jobs]
        try:
            return list(await asyncio.gather(*waits))
        finally:
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _result(self, timeout_s: float | None) -> InvocationResult:
        handle = await self._handle()
        try:
            return await asyncio.wait_for(handle.result(), timeout_s)
        except TimeoutError:
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
        """The function's own stdout and stderr, so far or final.

        A job that ran more than once shows every attempt's output, each headed by a line such
        as ``--- attempt 1 (failed: ValueError: boom) ---`` (the one running now: ``(running)``).
        Each attempt keeps its last 256 KiB (a running one: the last 32 KiB); of many failed
        attempts the last two keep all of theirs, older ones their tail, the first ones beyond
        twenty none (said in the text).
        """
        desc = await self._describe()
        handle = await self._handle()
        if desc.status == WorkflowExecutionStatus.RUNNING:
            client = await get_client(self._cp.settings)
            current, state = "", "running"
            for pending in desc.raw_description.pending_activities:
                if pending.activity_type.name != EXECUTE_ACTIVITY:
                    continue
                state = "waiting for a container" if pending.state == 1 else "running"  # 1: SCHEDULED
                if pending.heartbeat_details.payloads:
                    values = await client.data_converter.decode(pending.heartbeat_details.payloads)
                    if values and isinstance(values[0], dict):
                        current = str(values[0].get("logs", ""))
                break
            try:  # the earlier attempts' output, kept by the workflow
                earlier = await handle.query("logs", result_type=JobLogs, rpc_timeout=timedelta(seconds=5))
            except (WorkflowQueryFailedError, RPCError, TimeoutError):  # no worker answers: this attempt's only
                earlier = None
            return _attempts_text(earlier, current, state)
        try:
            result = await handle.result()
        except WorkflowFailureError as e:
            cause = e.cause
            while cause is not None and not isinstance(cause, ApplicationError):
                cause = cause.cause
            if not isinstance(cause, ApplicationError):
                return ""
            detail = _detail(cause)
            return _attempts_text(_job_logs(detail.get("earlier")), str(detail.get("logs", "")))
        return _attempts_text(result.earlier, result.logs)

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
        except (TimeoutError, WorkflowFailureError, RPCError):
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
