"""``Job.info()``: what a job's workflow knows of it, where it ran included."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from .._contracts import JobInfo
from ..exceptions import ApothicError, NotFoundError

INFO_TIMEOUT = timedelta(seconds=10)


async def job_info(handle: Any, job_id: str) -> JobInfo:
    """The ``info`` query of the job's InvocationWorkflow (answered by a control worker)."""
    try:
        return await handle.query("info", result_type=JobInfo, rpc_timeout=INFO_TIMEOUT)
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            raise NotFoundError(f"no job {job_id!r} on this server") from None
        raise ApothicError(
            f"job {job_id} did not answer ({e.message}): its details come from a control worker. Fix: start one "
            "(`apothic worker`, or any client of the embedded server starts it) and ask again."
        ) from None
    except WorkflowQueryFailedError as e:
        raise ApothicError(f"job {job_id} could not tell its details: {e}") from None
