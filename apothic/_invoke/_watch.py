"""Typed job events, read from the job workflow's event stream.

A job's InvocationWorkflow keeps its events in a Temporal workflow stream
(``temporalio.contrib.workflow_streams``); see ``apothic/workflows/_events.py``. A watcher
long-polls it with ``WorkflowStreamClient.subscribe`` (an update per poll; a closed job is
read by query) and resumes from the last sequence number it saw, so that events arrive in
order, with no gap and no duplicate, also across reconnects.

Limits (Temporal's): a job's workflow admits 10 blocked polls at a time and 2,000 updates in
all; a watcher refused by either reads the stream by query every ``QUERY_POLL_S`` instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.contrib.workflow_streams import (
    PollInput,
    PollResult,
    WorkflowStreamClient,
)
from temporalio.service import RPCError, RPCStatusCode

from .._contracts import (
    EVENT_TYPES,
    INVOCATION_WORKFLOW,
    MAP_WORKFLOW,
    TERMINAL_EVENT_TYPES,
    JobEventRecord,
)
from .._control._config import Settings
from .._data._blobs import load
from .._data._serialization import CloudPickled
from ..exceptions import ApothicError, InvalidError, NotFoundError

# Pause between two long-polls of a watcher that is caught up (each poll is an update in the
# job's history).
POLL_COOLDOWN = timedelta(milliseconds=250)
# Interval of the query fallback.
QUERY_POLL_S = 0.5
_POLL = "__temporal_workflow_stream_poll"
_OFFSET = "__temporal_workflow_stream_offset"


def _decode_payload(wire: str) -> Payload:
    """One item of a stream poll's result as it travels: base64 of a serialized ``Payload``.

    ``temporalio.contrib.workflow_streams`` decodes items only inside ``subscribe`` and exports
    no decoder, so the query fallback, which reads ``PollResult`` itself, decodes them here
    (the wire shape is documented on its ``PublishEntry``).
    """
    payload = Payload()
    payload.ParseFromString(base64.b64decode(wire))
    return payload


@dataclasses.dataclass(frozen=True)
class JobEvent:
    """One typed execution event of a job.

    Attributes:
        event: the type: ``queued``, ``placement``, ``provisioning``, ``image``, ``volume``,
            ``container``, ``started``, ``log``, ``output``, ``retry``, then exactly one of
            ``completed``, ``failed``, ``cancelled`` (always the last event).
        data: small JSON-like details. ``log``: ``lines`` (stdout and stderr together) and
            ``attempt``; ``output``: ``index`` and ``value`` (what the generator yielded,
            unpickled); ``started``: ``attempt``, ``container_id``; ``retry``: ``attempt``,
            ``kind``, ``reason``, ``retry_in_s``; ``failed``: ``type``, ``message``.
        seq: position in the job's event log, from 1, without gaps (a watcher that filters
            types sees gaps between the events it asked for). Resume with
            ``job.watch(after_seq=seq)``.
        timestamp: when the job's workflow recorded the event (UTC).
        job_id: the job.
    """

    event: str
    data: dict[str, Any]
    seq: int
    timestamp: datetime
    job_id: str = ""

    @property
    def terminal(self) -> bool:
        """True for ``completed``, ``failed`` and ``cancelled``."""
        return self.event in TERMINAL_EVENT_TYPES


def check_event_types(event_types: Iterable[str] | None, where: str) -> list[str] | None:
    """The event types asked for (None: all), refusing unknown ones."""
    if event_types is None:
        return None
    if isinstance(event_types, str):
        raise InvalidError(
            f"{where}(event_types={event_types!r}): allowed: a list of event types. "
            f"Fix: event_types=[{event_types!r}]."
        )
    types = list(event_types)
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown or not types:
        raise InvalidError(
            f"{where}(event_types={types!r}): unknown or empty; allowed: {list(EVENT_TYPES)}. "
            "Fix: name types from that list, or pass None for all."
        )
    return types


def not_a_job(job_id: str, workflow_type: str) -> NotFoundError:
    """The error for an id whose workflow is not a job (a map, a fleet, ...)."""
    if workflow_type == MAP_WORKFLOW:
        what = "a map (fn.map, starmap or for_each): its inputs are not jobs, and its caller receives the results"
    else:
        what = f"a {workflow_type} workflow"
    return NotFoundError(
        f"{job_id!r} is {what}, not a job. Fix: pass a job id (what spawn() returned, `Job.job_id`, "
        "`apothic jobs list`)."
    )


def _is_not_found(e: BaseException) -> bool:
    return isinstance(e, RPCError) and e.status == RPCStatusCode.NOT_FOUND


async def start_offset(client: Client, job_id: str, *, snapshot: bool, after_seq: int | None) -> int:
    """Where a watch starts: after ``after_seq``, at the start (snapshot) or at the end.

    A finished job's terminal event is always delivered, also without ``snapshot``.
    """
    if after_seq is not None:
        if not isinstance(after_seq, int) or after_seq < 0:
            raise InvalidError(f"watch(after_seq={after_seq!r}): allowed: an int >= 0 (a JobEvent.seq).")
        return after_seq
    if snapshot:
        return 0
    handle = client.get_workflow_handle(job_id)
    try:
        desc = await handle.describe()
        offset: int = await handle.query(_OFFSET, result_type=int)
    except RPCError as e:
        if _is_not_found(e):
            raise NotFoundError(f"no job {job_id!r} on this server") from None
        raise
    except WorkflowQueryFailedError as e:
        if desc.workflow_type != INVOCATION_WORKFLOW:
            raise not_a_job(job_id, desc.workflow_type) from None
        raise NotFoundError(f"job {job_id!r} has no event log (it was started by an older Apothic): {e}") from None
    if desc.status != WorkflowExecutionStatus.RUNNING:
        offset = max(0, offset - 1)
    return offset


async def stream_events(
    client: Client, settings: Settings, job_id: str, from_offset: int, event_types: list[str] | None
) -> AsyncIterator[JobEvent]:
    """The job's events from ``from_offset`` (0-based) until its terminal event."""
    wanted = set(event_types) if event_types is not None else None
    # Terminal events are always read, to know when to stop.
    topics = sorted(wanted | set(TERMINAL_EVENT_TYPES)) if wanted is not None else None
    offset = from_offset
    stream = WorkflowStreamClient.create(client, job_id)
    polls = stream.subscribe(topics, from_offset=offset, result_type=JobEventRecord, poll_cooldown=POLL_COOLDOWN)
    try:
        async with contextlib.aclosing(polls):
            async for item in polls:
                offset = item.offset + 1
                ev = await _event(item.data, item.offset, job_id, settings)
                if wanted is None or ev.event in wanted:
                    yield ev
                if ev.terminal:
                    return
        return  # the job ended and its stream is drained
    except (RPCError, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError) as e:
        if _is_not_found(e):
            raise NotFoundError(f"no job {job_id!r} on this server") from None
        # The long-poll was refused (too many watchers or updates on this job, or the server
        # hiccupped): read the same stream by query from where this watcher is.
    async for ev in _by_query(client, settings, job_id, offset, topics, wanted):
        yield ev


async def _by_query(
    client: Client, settings: Settings, job_id: str, offset: int, topics: list[str] | None, wanted: set[str] | None
) -> AsyncIterator[JobEvent]:
    handle = client.get_workflow_handle(job_id)
    failures = 0
    while True:
        try:
            result = await handle.query(_POLL, PollInput(topics=topics or [], from_offset=offset), result_type=PollResult)
        except WorkflowQueryFailedError as e:
            raise NotFoundError(f"job {job_id!r} has no event log (it was started by an older Apothic): {e}") from None
        except RPCError as e:
            failures += 1
            if _is_not_found(e):
                raise NotFoundError(f"no job {job_id!r} on this server") from None
            if failures > 20:
                raise ApothicError(f"could not read the events of job {job_id!r}: {e.message}") from None
            await asyncio.sleep(min(QUERY_POLL_S * failures, 5.0))
            continue
        failures = 0
        converter = client.data_converter.payload_converter
        for wire in result.items:
            record = converter.from_payload(_decode_payload(wire.data), JobEventRecord)
            ev = await _event(record, wire.offset, job_id, settings)
            if wanted is None or ev.event in wanted:
                yield ev
            if ev.terminal:
                return
        offset = result.next_offset
        if not result.more_ready:
            await asyncio.sleep(QUERY_POLL_S)


async def _event(record: JobEventRecord, offset: int, job_id: str, settings: Settings) -> JobEvent:
    data = dict(record.data)
    if record.event == "output" and isinstance(data.get("value"), dict):
        try:
            data["value"] = await load(CloudPickled(**data["value"]), settings.blobs)
        except Exception as e:  # noqa: BLE001 - e.g. a class this process cannot import
            data["error"] = f"{type(e).__name__}: {e}"
    return JobEvent(
        event=record.event,
        data=data,
        seq=offset + 1,
        timestamp=datetime.fromisoformat(record.at),
        job_id=job_id,
    )
