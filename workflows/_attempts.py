"""Running one input on a deployment, with Apothic's retry rules (shared by every workflow
that runs inputs: InvocationWorkflow, MapWorkflow)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

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
    EXECUTE_ACTIVITY,
    NOT_RUN,
    RESOLVE_ACTIVITY,
    AttemptLogs,
    AttemptRecord,
    Deployment,
    ExecuteInput,
    ExecuteOutput,
    JobLogs,
    ResolveRequest,
)
from apothic._data._serialization import CloudPickled

if TYPE_CHECKING:
    from ._events import JobEvents

# The function container heartbeats every second while a function runs; this long a silence
# means its container (or host) is gone.
EXECUTE_HEARTBEAT = timedelta(seconds=5)
# Extra time the server allows beyond the function's own timeout, which the container
# enforces itself (and reports as FunctionTimeoutError).
TIMEOUT_GRACE = timedelta(seconds=15)
# Infrastructure failures (a lost container or host) retried before the input fails; they
# never count against the function's own retries.
MAX_INFRA_RETRIES = 5
INFRA_BACKOFF_MAX_S = 30.0
# Error types that no retry can fix.
NEVER_RETRY = {
    "apothic.InvalidInput",
    "apothic.InvalidResult",
    "apothic.exceptions.InvalidError",
    "apothic.exceptions.NotSupportedError",
}

# The output of a job's failed attempts is kept (each is at most the runtime's 256 KiB): the
# last LOGS_KEPT_FULL in full, older ones cut to their last LOGS_TAIL_BYTES, and only the last
# LOGS_KEPT attempts at all, so that what the job's result or failure carries stays bounded.
LOGS_KEPT_FULL = 2
LOGS_TAIL_BYTES = 4 * 1024
LOGS_KEPT = 20
# Marks jobs whose result or failure carries the output of their earlier attempts.
ATTEMPT_LOGS_PATCH = "apothic-attempt-logs"
# Marks jobs that read apothic.NotRun from execute (a container that retired before running
# the input, e.g. a batch ahead of it ignored its interruption) as an infrastructure failure.
NOT_RUN_PATCH = "apothic-not-run-infrastructure"


def execute_timeout(spec: Any, inputs: int = 1) -> timedelta:
    """The server's start-to-close of an execute (``inputs``: of an execute_batch), beyond the
    function's own timeout that the container enforces. A batched input may first wait for the
    batch running ahead of it and for its own batch to gather."""
    timeout = timedelta(seconds=spec.timeout_s * inputs) + TIMEOUT_GRACE
    if spec.batch is not None:
        timeout += timedelta(seconds=spec.timeout_s + spec.batch.wait_ms / 1000)
    return timeout

# Called with the started activity; returns when it is done (or raises to abandon it).
Waiter = Callable[[workflow.ActivityHandle[ExecuteOutput]], Awaitable[None]]


def error_kind(error_type: str, non_retryable: bool, dep: Deployment) -> str:
    """``final`` or ``user`` for an error the function's container reported."""
    if error_type in NEVER_RETRY or error_type in dep.spec.retry.non_retryable or non_retryable:
        return "final"
    return "user"


async def cancel_and_wait(execute: workflow.ActivityHandle[Any]) -> None:
    """Cancel a running input and wait until its container has stopped it (or it finished)."""
    if not execute.done():
        execute.cancel()
        try:
            await execute
        except (ActivityError, asyncio.CancelledError, CancelledError):
            pass


class Failure(Exception):
    """One failed attempt, classified: ``user``, ``infrastructure`` or ``final``."""

    def __init__(self, kind: str, reason: str, error: BaseException, checkpoint: Any = None, logs: str = "") -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.error = error
        self.checkpoint = checkpoint
        self.logs = logs  # what the attempt printed, as far as it is known

    @property
    def outcome(self) -> str:
        """How the attempt ended, as ``job.logs()`` heads its output."""
        if self.kind == "infrastructure":
            return "container lost"
        if self.reason == "cancelled":
            return "cancelled"
        text = self.reason
        if isinstance(self.error, ApplicationError):
            short = (self.error.type or "").rsplit(".", 1)[-1]
            text = self.error.message
            if short and not text.startswith(f"{short}:"):
                text = f"{short}: {text}"
        return "failed: " + (text.strip().splitlines() or [""])[0][:300]


def classify(e: ActivityError, dep: Deployment, attempt: int = 0) -> Failure:
    """Sort a failed execute activity into ``user``, ``infrastructure`` or ``final``."""
    cause = e.cause
    if isinstance(cause, ApplicationError) and cause.type == NOT_RUN and workflow.patched(NOT_RUN_PATCH):
        reason = "the function's container retired before running the input" + (f" (attempt {attempt})" if attempt else "")
        return Failure(
            "infrastructure",
            reason,
            ApplicationError(
                f"{reason}; gave up after {MAX_INFRA_RETRIES} infrastructure retries", type="ContainerLost",
                non_retryable=True,
            ),
        )
    if isinstance(cause, ApplicationError):
        error = ApplicationError(cause.message, *cause.details, type=cause.type, non_retryable=True)
        kind = cause.type or ""
        detail = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
        return Failure(
            error_kind(kind, cause.non_retryable, dep), _typed(kind, cause.message), error,
            logs=str(detail.get("logs") or ""),
        )
    if isinstance(cause, TemporalTimeoutError):
        if cause.type == TimeoutType.SCHEDULE_TO_START:
            reason = f"no container took the input within {dep.startup_timeout_s:.0f} s"
            return Failure(
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
        logs = str(details[0].get("logs") or "") if details and isinstance(details[0], dict) else ""
        what = "stopped responding" if cause.type == TimeoutType.HEARTBEAT else "never answered"
        reason = f"the function's container {what}" + (f" (attempt {attempt})" if attempt else "")
        return Failure(
            "infrastructure",
            reason,
            ApplicationError(
                f"{reason}; gave up after {MAX_INFRA_RETRIES} infrastructure retries",
                type="ContainerLost",
                non_retryable=True,
            ),
            checkpoint,
            logs=logs,
        )
    if isinstance(cause, CancelledError):
        return Failure("final", "cancelled", cause)
    text = str(cause or e)
    return Failure("final", text, ApplicationError(text, type="RemoteError", non_retryable=True))


def _typed(kind: str, message: str) -> str:
    """A failure's reason: its message, after its type unless the message names it already (a
    user's exception arrives as ``builtins.ValueError`` with the message ``ValueError: boom``)."""
    short = kind.rsplit(".", 1)[-1]
    return message if short and message.startswith(f"{short}:") else f"{kind}: {message}"


async def resolve(app: str, function: str, version: int = 0) -> Deployment:
    """The deployment of a job started without one (e.g. by a schedule), by local activity."""
    try:
        return await workflow.execute_local_activity(
            RESOLVE_ACTIVITY,
            ResolveRequest(app=app, function=function, version=version),
            result_type=Deployment,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=5, non_retryable_error_types=["NotFound"]),
        )
    except ActivityError as e:
        cause = e.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause or e)
        raise ApplicationError(message, type="NotFound", non_retryable=True) from None


class InputRunner:
    """Runs one input until it succeeds or fails for good.

    The function's own errors and timeouts use its ``Retries`` (durable backoff); a lost
    container or host is retried up to ``MAX_INFRA_RETRIES`` times without touching that
    budget, and hands the function's last checkpoint to the next attempt. Each failed attempt
    is recorded in ``records``, and its output in ``logs`` (bounded, see ``LOGS_KEPT_FULL``).

    With ``events``, each attempt's container sends its started, log and output events to this
    workflow, and a retried generator skips the outputs earlier attempts delivered.
    """

    def __init__(self, dep: Deployment, job_id: str, *, summary: str = "", events: "JobEvents | None" = None) -> None:
        self.dep = dep
        self.job_id = job_id
        self.events = events
        self.summary = summary or f"{dep.app}.{dep.function} v{dep.version}"
        self.attempt = 0
        self.records: list[AttemptRecord] = []
        self.logs: list[AttemptLogs] = []  # of the failed attempts, the last LOGS_KEPT
        self.logs_not_kept = 0  # failed attempts before those
        self.on_retry: Callable[[AttemptRecord], None] | None = None

    async def run(self, args: CloudPickled, wait: Waiter | None = None) -> ExecuteOutput:
        """The input's output; raises the final failure as a non-retryable ApplicationError
        (or CancelledError when cancelled)."""
        user_retries = infra_retries = 0
        checkpoint: CloudPickled | None = None
        retry = self.dep.spec.retry
        while True:
            self.attempt += 1
            try:
                return await self._attempt(args, checkpoint, wait)
            except Failure as f:
                if f.kind == "infrastructure" and infra_retries < MAX_INFRA_RETRIES:
                    infra_retries += 1
                    checkpoint = f.checkpoint or checkpoint
                    delay = min(2.0 ** (infra_retries - 1), INFRA_BACKOFF_MAX_S)
                elif f.kind == "user" and user_retries < retry.max_retries:
                    user_retries += 1
                    delay = retry.delay(user_retries)
                else:
                    self._record(f, 0.0, retried=False)
                    raise self._final_error(f) from None
                record = self._record(f, delay, retried=True)
                if self.on_retry is not None:
                    self.on_retry(record)
                await workflow.sleep(timedelta(seconds=delay), summary=f"{f.kind} retry of attempt {self.attempt}")

    async def _attempt(self, args: CloudPickled, checkpoint: CloudPickled | None, wait: Waiter | None) -> ExecuteOutput:
        dep, spec = self.dep, self.dep.spec
        execute = workflow.start_activity(
            EXECUTE_ACTIVITY,
            ExecuteInput(
                job_id=self.job_id,
                function=dep.function,
                version=dep.version,
                args=args,
                timeout_s=spec.timeout_s,
                attempt=self.attempt,
                checkpoint=checkpoint,
                events_to=workflow.info().workflow_id if self.events is not None else "",
                skip_outputs=self.events.outputs if self.events is not None else 0,
            ),
            task_queue=dep.task_queue,
            result_type=ExecuteOutput,
            schedule_to_start_timeout=timedelta(seconds=dep.startup_timeout_s),
            start_to_close_timeout=execute_timeout(spec),
            heartbeat_timeout=EXECUTE_HEARTBEAT,
            retry_policy=RetryPolicy(maximum_attempts=1),  # attempts are counted here, by kind
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"{self.summary} attempt {self.attempt}",
        )
        try:
            if wait is not None:
                await wait(execute)
            return await execute
        except ActivityError as e:
            raise self._classify(e) from None
        except (asyncio.CancelledError, CancelledError):
            await cancel_and_wait(execute)
            raise
        except Failure:
            if not execute.done():
                execute.cancel()
            raise

    def _classify(self, e: ActivityError) -> Failure:
        return classify(e, self.dep, self.attempt)

    def _record(self, f: Failure, delay: float, retried: bool) -> AttemptRecord:
        record = AttemptRecord(
            attempt=self.attempt,
            kind=f.kind,
            reason=f.reason[:2000],
            at=workflow.now().isoformat(),
            retry_in_s=delay,
            retried=retried,
        )
        self.records.append(record)
        self.logs.append(AttemptLogs(attempt=self.attempt, outcome=f.outcome, logs=f.logs))
        if len(self.logs) > LOGS_KEPT:
            del self.logs[0]
            self.logs_not_kept += 1
        if len(self.logs) > LOGS_KEPT_FULL:
            older = len(self.logs) - LOGS_KEPT_FULL - 1  # the one that just left the full window
            self.logs[older] = _tail(self.logs[older])
        return record

    def earlier(self, outcome: str = "") -> JobLogs:
        """The output of the failed attempts before the current one. ``outcome``: how the
        last attempt ended (``completed``); "" while it runs."""
        return JobLogs(attempts=list(self.logs), attempt=self.attempt, outcome=outcome, not_kept=self.logs_not_kept)

    def _final_error(self, f: Failure) -> BaseException:
        """The error a failed input ends with; after several attempts its details carry the
        earlier attempts' output too (``earlier``, a ``JobLogs``)."""
        error = f.error
        if len(self.logs) + self.logs_not_kept < 2 or not isinstance(error, ApplicationError):
            return error
        details = list(error.details)
        if details and not isinstance(details[0], dict):
            return error
        if not workflow.patched(ATTEMPT_LOGS_PATCH):  # a job from before: as it was
            return error
        earlier = JobLogs(
            attempts=self.logs[:-1], attempt=self.attempt, outcome=f.outcome, not_kept=self.logs_not_kept
        )
        first = {**(details[0] if details else {"logs": f.logs}), "earlier": dataclasses.asdict(earlier)}
        return ApplicationError(error.message, first, *details[1:], type=error.type, non_retryable=True)


def _tail(entry: AttemptLogs) -> AttemptLogs:
    """An attempt's output cut to its last ``LOGS_TAIL_BYTES`` (from a line start), marked."""
    data = entry.logs.encode("utf-8")
    if len(data) <= LOGS_TAIL_BYTES:
        return entry
    tail = data[-LOGS_TAIL_BYTES:].decode("utf-8", "ignore")
    if "\n" in tail[:-1]:
        tail = tail[tail.index("\n") + 1 :]
    cut = len(data) - len(tail.encode("utf-8"))
    return dataclasses.replace(entry, logs=f"[... {cut} earlier bytes of this attempt's output cut ...]\n{tail}")
