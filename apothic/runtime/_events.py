"""Events of one running input, sent from its container to its job's workflow.

One ``EventPublisher`` per attempt sends, in order, with the signal ``runtime_events``
(``JobEventsIn``, numbered batches so that a resent batch is added once): ``started`` (for a
batched function's input, when its batch starts, naming the batch) and the first ``log``
lines after ``FIRST_SEND_S`` (0.25 s), then log lines every ``LOG_EVERY_S``
(0.5 s), and each ``output`` (a value a generator function yielded) as soon as it is yielded,
after the lines printed before it. An input that succeeds hands what is still unsent to its
activity's result (:meth:`EventPublisher.finish`): a call that ends within 0.25 s sends no
signal at all, which keeps a warm call at one workflow task per step. A failed or cancelled
input flushes by signal before the activity ends. Either way a job's events precede its
terminal event.

Limits per attempt (beyond them, logs stop streaming with a ``truncated`` mark; outputs fail
the generator with ``apothic.InvalidResult``): ``MAX_LOG_BYTES`` of log lines, lines cut at
``MAX_LINE_CHARS``; ``MAX_OUTPUT_BYTES`` per yielded value (pickled), ``MAX_OUTPUTS_BYTES``
and ``MAX_OUTPUTS`` in all. Yielded values travel through the job's Temporal history.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from .._contracts import RUNTIME_EVENTS_SIGNAL, JobEventIn, JobEventsIn
from .._data._serialization import CloudPickled

LOG_EVERY_S = 0.5
# The first batch waits this long: an input done sooner returns its events with its result.
FIRST_SEND_S = 0.25
# After this many log batches an attempt sends logs less often (bounds the job's history).
SLOW_LOGS_AFTER = 240
SLOW_LOG_EVERY_S = 5.0
MAX_LOG_BYTES = 1024 * 1024
MAX_LINE_CHARS = 8 * 1024
MAX_OUTPUT_BYTES = 512 * 1024
MAX_OUTPUTS_BYTES = 8 * 1024 * 1024
MAX_OUTPUTS = 10_000
# A signal carries at most this much (one larger event still goes alone).
MAX_BATCH_BYTES = 256 * 1024
# How long the end of an input waits for its last events to be sent.
FLUSH_TIMEOUT_S = 15.0


class OutputError(Exception):
    """A yielded value cannot travel (unpicklable or too large); fails the input for good."""


class LogTail:
    """Complete lines appended to a captured log file since the last read."""

    def __init__(self) -> None:
        self.offset = 0
        self._partial = b""

    def read(self, path: str, upto: int | None = None, final: bool = False) -> list[str]:
        if not path:
            return []
        try:
            with open(path, "rb") as f:
                f.seek(self.offset)
                data = f.read(-1 if upto is None else max(0, upto - self.offset))
        except OSError:
            return []
        self.offset += len(data)
        data = self._partial + data
        *complete, rest = data.split(b"\n")
        if final or len(rest) > MAX_LINE_CHARS:
            if rest:
                complete.append(rest)
            rest = b""
        self._partial = rest
        return [cut(line.decode("utf-8", "replace").rstrip("\r")) for line in complete]


def cut(line: str) -> str:
    return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " [... line cut]"


class EventPublisher:
    """Sends one attempt's events to its job's workflow; see the module docstring."""

    def __init__(
        self, client: Client, workflow_id: str, attempt: int, container_id: str, item: Any, started: bool = True,
        where: dict[str, Any] | None = None,
    ) -> None:
        self._handle = client.get_workflow_handle(workflow_id)
        self._attempt = attempt
        self._container_id = container_id
        self._item = item  # the WorkItem: its log_path is set once it starts
        self._loop = asyncio.get_running_loop()
        # The container's placement (runtime/_where.py), named in the started event.
        self._where = {"where": where} if where else {}
        # started=False: the input waits (for its batch); mark_started() adds the event then.
        self._pending: list[JobEventIn] = [JobEventIn(event="started", data=dict(self._where), at=_now())] if started else []
        self._unsent: JobEventsIn | None = None
        self._batch = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._detaching = False  # finish(): stop after the batch in flight, keep the rest
        self._gone = False  # the workflow has ended: nothing more to send
        self._tail = LogTail()
        self._log_bytes = 0
        self._log_batches = 0
        self._log_cut = False
        self._outputs = 0
        self._outputs_bytes = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def mark_started(self, data: dict[str, Any]) -> None:
        """The input starts now (on the runtime's loop); ``data`` goes into its started event
        (a batched input's ``batch`` and ``batch_size``)."""
        self._pending.insert(0, JobEventIn(event="started", data={**data, **self._where}, at=_now()))

    # Called in the main thread, where the generator runs.
    def output(self, index: int, value: Any) -> None:
        """Queue one yielded value (pickled now, so later changes to it do not travel)."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        try:
            pickled = CloudPickled.dump(value, kind="output")
        except Exception as e:  # noqa: BLE001
            raise OutputError(f"item {index} the generator yielded ({type(value).__name__}) cannot be pickled: {e}")
        if pickled.size > MAX_OUTPUT_BYTES:
            raise OutputError(
                f"item {index} the generator yielded is {pickled.size / 1e6:.2f} MB pickled; at most "
                f"{MAX_OUTPUT_BYTES / 1e6:.2f} MB per item. Fix: yield a reference (a path or URL) to large data."
            )
        self._outputs += 1
        self._outputs_bytes += pickled.size
        if self._outputs > MAX_OUTPUTS or self._outputs_bytes > MAX_OUTPUTS_BYTES:
            raise OutputError(
                f"the generator yielded more than {MAX_OUTPUTS} items or {MAX_OUTPUTS_BYTES / 1e6:.0f} MB in one "
                "attempt; yielded items travel through the job's history. Fix: yield fewer, larger batches, or "
                "write the data to storage and yield references."
            )
        log_size = _size(self._item.log_path)
        self._loop.call_soon_threadsafe(self._add_output, index, pickled, log_size, _now())

    def _add_output(self, index: int, pickled: CloudPickled, log_size: int | None, at: str) -> None:
        self._collect_logs(upto=log_size, at=at)  # the lines printed before the yield come first
        self._pending.append(JobEventIn(event="output", data={"index": index, "value": pickled}, at=at))
        self._wake.set()

    def _collect_logs(self, upto: int | None = None, final: bool = False, at: str = "") -> None:
        if self._log_cut:
            return
        lines = self._tail.read(self._item.log_path, upto, final)
        if not lines:
            return
        size = sum(len(line) + 1 for line in lines)
        at = at or _now()
        if self._log_bytes + size > MAX_LOG_BYTES:
            self._log_cut = True
            self._pending.append(JobEventIn(event="log", data={"lines": lines[:1], "truncated": True}, at=at))
            return
        self._log_bytes += size
        self._log_batches += 1
        self._pending.append(JobEventIn(event="log", data={"lines": lines}, at=at))

    async def close(self) -> None:
        """Send what is left (the last, unfinished line too), waiting at most FLUSH_TIMEOUT_S."""
        self._closing = True
        self._wake.set()
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), FLUSH_TIMEOUT_S)
        except (TimeoutError, Exception):  # noqa: BLE001 - events are best effort at the end
            task.cancel()

    async def finish(self) -> JobEventsIn | None:
        """The input succeeded: the events not sent yet, as the next batch, to travel in the
        activity's result (None: nothing left). A batch already in flight is sent first, so
        the order holds; what would not fit one batch is sent by signal instead (``close``)."""
        self._detaching = True
        self._wake.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), FLUSH_TIMEOUT_S)
            except (TimeoutError, Exception):  # noqa: BLE001 - events are best effort at the end
                task.cancel()
        if self._gone:
            return None
        self._collect_logs(final=True)
        if self._unsent is not None or sum(_event_size(e) for e in self._pending) > MAX_BATCH_BYTES:
            self._detaching = False
            self._task = asyncio.create_task(self._run())
            await self.close()
            return None
        if not self._pending:
            return None
        self._batch += 1
        events, self._pending = self._pending, []
        return JobEventsIn(attempt=self._attempt, batch=self._batch, events=events, container_id=self._container_id)

    async def _run(self) -> None:
        first = self._batch == 0
        while not self._gone:
            if first:
                interval, first = FIRST_SEND_S, False
            else:
                interval = LOG_EVERY_S if self._log_batches < SLOW_LOGS_AFTER else SLOW_LOG_EVERY_S
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._detaching and self._unsent is None:
                return
            closing = self._closing
            self._collect_logs(final=closing)
            await self._send_all(closing)
            if closing and self._unsent is None and not self._pending:
                return

    async def _send_all(self, closing: bool) -> None:
        while (self._unsent is not None or self._pending) and not self._gone:
            if self._unsent is None:
                if self._detaching:
                    return  # finish() takes the rest
                self._batch += 1
                self._unsent = JobEventsIn(
                    attempt=self._attempt, batch=self._batch, events=self._take(), container_id=self._container_id
                )
            try:
                await self._handle.signal(RUNTIME_EVENTS_SIGNAL, self._unsent)
            except RPCError as e:
                if e.status == RPCStatusCode.NOT_FOUND:  # the job has ended
                    self._gone = True
                    return
                # Resent later with the same batch number (added once).
                await asyncio.sleep(0.2 if closing else LOG_EVERY_S)
                continue
            self._unsent = None

    def _take(self) -> list[JobEventIn]:
        taken, size = [], 0
        while self._pending:
            ev = self._pending[0]
            n = _event_size(ev)
            if taken and size + n > MAX_BATCH_BYTES:
                break
            taken.append(self._pending.pop(0))
            size += n
        return taken


def _event_size(ev: JobEventIn) -> int:
    value = ev.data.get("value")
    if isinstance(value, CloudPickled):
        return len(value.data) + 200
    return sum(len(line) + 4 for line in ev.data.get("lines", ())) + 100


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _size(path: str) -> int | None:
    if not path:
        return None
    try:
        return os.path.getsize(path)
    except OSError:
        return None
