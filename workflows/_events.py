"""A job's event log: typed, ordered, bounded, served by Temporal's workflow streams.

The log is a ``temporalio.contrib.workflow_streams.WorkflowStream`` owned by the job's
InvocationWorkflow: one stream item per event, its topic the event type, its value a
``JobEventRecord`` (type, workflow time, small data). Watchers long-poll it with the stream's
update ``__temporal_workflow_stream_poll`` and read a closed job with the query of the same
name; an event's sequence number is its stream offset + 1.

Events enter only through this class, never through the stream's own publish signal: the
workflow stamps the time, drops duplicates (a batch is keyed by attempt and batch number, an
output by its index) and stale attempts, and keeps the log bounded (log lines and container
steps are capped; see the constants).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from temporalio import workflow
from temporalio.contrib.workflow_streams import WorkflowStream

from apothic._contracts import (
    CONTAINER_EVENT_TYPES,
    MAX_EVENT_DATA_BYTES,
    TERMINAL_EVENT_TYPES,
    JobEventIn,
    JobEventRecord,
    JobEventsIn,
)

# Log lines kept in a job's event log (all attempts together). Beyond this a single log event
# with ``truncated: True`` says so and later lines are dropped; ``Job.logs()`` still has the tail.
MAX_LOG_EVENTS = 2000
MAX_LOG_BYTES = 2 * 1024 * 1024
# Container-side steps (placement, provisioning, image, volume, container) kept per job.
MAX_CONTAINER_EVENTS = 500


class JobEvents:
    """The event log of one job (construct the ``WorkflowStream`` in ``@workflow.init``)."""

    def __init__(self, stream: WorkflowStream) -> None:
        self.stream = stream
        self.count = 0
        self.closed = False
        self.outputs = 0  # generator outputs delivered (the next expected index)
        self._batches: dict[int, int] = {}
        self._log_events = 0
        self._log_bytes = 0
        self._log_cut = False
        self._container_events = 0
        self._last_at: datetime | None = None

    def emit(self, event: str, data: dict[str, Any] | None = None, at: str = "") -> None:
        """Append one event (ignored once a terminal event has been written).

        ``at``: when the sender says it happened (it travels in the signal, so a replay sees
        the same time); default ``workflow.now()``. Times never go backwards in the log.
        """
        if self.closed:
            return
        stamp = _parse_time(at) or workflow.now()
        if self._last_at is not None and stamp < self._last_at:
            stamp = self._last_at
        self._last_at = stamp
        record = JobEventRecord(event=event, at=stamp.isoformat(), data=data or {})
        payload = workflow.payload_converter().to_payloads([record])[0]
        self.stream.topic(event).publish(payload)
        self.count += 1
        if event in TERMINAL_EVENT_TYPES:
            self.closed = True

    def add_container_event(self, ev: JobEventIn) -> None:
        """A container-side step, from the control worker's ``run_container`` activity."""
        if ev.event not in CONTAINER_EVENT_TYPES:
            workflow.logger.warning("job event %r dropped: container_event takes %s", ev.event, CONTAINER_EVENT_TYPES)
            return
        if self._container_events >= MAX_CONTAINER_EVENTS:
            return
        self._container_events += 1
        data = small(ev.data)
        if ev.container_id:
            data = {**data, "container_id": ev.container_id}
        self.emit(ev.event, data, ev.at)

    def add_runtime_batch(self, batch: JobEventsIn, attempt: int) -> bool:
        """Events of the running attempt from its container; True if it reported ``started``.

        Batches of another attempt (a container that was given up on) and batches seen before
        are dropped.
        """
        if batch.attempt != attempt or batch.batch <= self._batches.get(attempt, 0):
            return False
        self._batches[attempt] = batch.batch
        started = False
        for ev in batch.events:
            if ev.event == "started":
                started = True
                batched = {k: ev.data[k] for k in ("batch", "batch_size") if k in ev.data}  # @batched inputs
                if isinstance(ev.data.get("where"), dict):  # the container's placement (workflows/_where.py)
                    batched["where"] = ev.data["where"]
                self.emit("started", {"attempt": attempt, "container_id": batch.container_id, **batched}, ev.at)
            elif ev.event == "log":
                self._add_log(ev.data, attempt, ev.at)
            elif ev.event == "output":
                index = ev.data.get("index")
                if not isinstance(index, int) or index < self.outputs:
                    continue  # already delivered by an earlier attempt
                self.outputs = index + 1
                self.emit("output", {**ev.data, "attempt": attempt}, ev.at)
        return started

    def _add_log(self, data: dict[str, Any], attempt: int, at: str) -> None:
        if self._log_cut:
            return
        lines = [str(line) for line in data.get("lines", [])]
        size = sum(len(line) + 1 for line in lines)
        if self._log_events >= MAX_LOG_EVENTS or self._log_bytes + size > MAX_LOG_BYTES:
            self._log_cut = True
            self.emit(
                "log",
                {
                    "lines": [],
                    "attempt": attempt,
                    "truncated": True,
                    "note": f"log streaming stopped after {self._log_events} events / {self._log_bytes} bytes; "
                    "job.logs() has the tail",
                },
                at,
            )
            return
        self._log_events += 1
        self._log_bytes += size
        extra = {"truncated": True} if data.get("truncated") else {}
        self.emit("log", {"lines": lines, "attempt": attempt, **extra}, at)

    async def close(self) -> None:
        """Before the workflow ends: release waiting watchers (they read the rest by query)."""
        self.stream.detach_pollers()
        await workflow.wait_condition(workflow.all_handlers_finished)


def _parse_time(at: str) -> datetime | None:
    if not at:
        return None
    try:
        stamp = datetime.fromisoformat(at)
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def small(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` if its payload is at most MAX_EVENT_DATA_BYTES, else a truncated summary."""
    payload = workflow.payload_converter().to_payloads([data])[0]
    if payload.ByteSize() <= MAX_EVENT_DATA_BYTES:
        return data
    return {"summary": str(data)[: MAX_EVENT_DATA_BYTES // 2], "truncated": True}
