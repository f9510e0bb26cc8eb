"""Runs user code in the main thread, interruptibly, with its output captured.

This is the executor of a function that takes one input at a time (and of a batched
function's calls, one batch at a time): fds 1 and 2 go to the input's capture file, so the
output of C extensions and subprocesses is caught too, and a cancel or timeout interrupts the
main thread with SIGUSR1. Several inputs at once run in ``_concurrent``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import inspect
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from .._data import _checkpoint
from ._channel import LOG_LIMIT, read_log, scratch_dir  # noqa: F401 - read_log is imported from here


class Interrupted(BaseException):
    """Raised inside user code when its input is cancelled or times out.

    A BaseException, like KeyboardInterrupt, so that ``except Exception`` in user code does
    not swallow it.
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass
class WorkItem:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: concurrent.futures.Future = dataclasses.field(default_factory=concurrent.futures.Future)
    interrupt_reason: str = ""
    log_path: str = ""
    checkpoint_in: Any = None  # CloudPickled from an earlier attempt
    checkpoint_out: Any = None  # CloudPickled saved by this attempt
    # Generator functions: called with (index, value) for each yield (in the main thread);
    # the first ``skip_outputs`` yields (delivered by an earlier attempt) are not passed on.
    on_output: Callable[[int, Any], None] | None = None
    skip_outputs: int = 0
    outputs: int = 0
    # time.monotonic() when the user code started (0: not yet); the timeout counts from here.
    started_at: float = 0.0
    # A capture of its own (a batch's call); None: the executor's shared one.
    capture: Any = None
    # The job (a map's: ``<map id>#<index>``) whose input this is: ``apothic.current_job_id()``.
    job_id: str = ""
    # Concurrent executors: where the input runs (a thread slot or an asyncio task).
    slot: Any = None
    # Batched functions: called (on the runtime's loop) with the started event's data
    # (batch id and size) when the input's batch starts.
    on_start: Callable[[dict[str, Any]], None] | None = None
    # Called with the item by the thread that starts its user code, as ``started_at`` is set
    # (before the code runs): the runtime tells its supervisor (``_channel``).
    on_run: Callable[["WorkItem"], None] | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name == "started_at" and value:
            on_run = self.__dict__.get("on_run")
            if on_run is not None:
                on_run(self)

    def yielded(self, value: Any) -> None:
        index = self.outputs
        self.outputs += 1
        if index >= self.skip_outputs and self.on_output is not None:
            self.on_output(index, value)

    def save_checkpoint(self, blob: Any) -> None:
        self.checkpoint_out = blob

    def previous_checkpoint(self) -> Any:
        latest = self.checkpoint_out or self.checkpoint_in
        return latest.load() if latest is not None else None


class MainThreadExecutor:
    """A queue of inputs served by the main thread, one at a time."""

    def __init__(self) -> None:
        self._queue: queue.Queue[WorkItem | None] = queue.Queue()
        self._current: WorkItem | None = None
        self._in_user_code = False
        self._main_ident = threading.main_thread().ident
        self._capture = _Capture()

    def submit(self, item: WorkItem) -> concurrent.futures.Future:
        self._queue.put(item)
        return item.future

    def stop(self) -> None:
        self._queue.put(None)

    def remove_files(self) -> None:
        """Remove the capture file (the process exits)."""
        self._capture.remove()

    def done_with(self, item: WorkItem) -> None:
        """The runtime has read what ``item`` printed (nothing to free: the capture is reused)."""

    def interrupt(self, item: WorkItem, reason: str) -> None:
        """Ask the main thread to abandon ``item`` by raising :class:`Interrupted` in it."""
        item.interrupt_reason = reason
        if self._current is item and self._main_ident is not None:
            signal.pthread_kill(self._main_ident, signal.SIGUSR1)
        elif not item.future.done():
            item.future.set_exception(Interrupted(reason))

    def _on_signal(self, signum: int, frame: Any) -> None:
        item = self._current
        if item is not None and item.interrupt_reason and self._in_user_code:
            raise Interrupted(item.interrupt_reason)

    def serve_forever(self) -> None:
        signal.signal(signal.SIGUSR1, self._on_signal)
        while True:
            item = self._queue.get()
            if item is None:
                return
            if item.future.done():  # interrupted before it started
                continue
            self._run(item)

    def _run(self, item: WorkItem) -> None:
        self._current = item
        capture = item.capture if item.capture is not None else self._capture.reset()
        item.log_path = capture.path
        item.started_at = time.monotonic()
        _checkpoint._bind(item)
        try:
            with capture:
                self._in_user_code = True
                try:
                    result = item.fn(*item.args, **item.kwargs)
                    if inspect.isgenerator(result):
                        result = _drain(result, item)
                    elif inspect.isasyncgen(result):
                        result = asyncio.run(_adrain(result, item))
                    elif inspect.isawaitable(result):
                        result = asyncio.run(_awaited(result))
                finally:
                    self._in_user_code = False
        except BaseException as e:  # noqa: BLE001 - everything goes back to the caller
            if not item.future.done():
                item.future.set_exception(e)
        else:
            if not item.future.done():
                item.future.set_result(result)
        finally:
            self._current = None
            _checkpoint._bind(None)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _drain(gen: Any, item: WorkItem) -> None:
    """Run a generator to its end, passing each yielded value on (a generator's result is None)."""
    try:
        for value in gen:
            item.yielded(value)
    finally:
        gen.close()


async def _adrain(agen: Any, item: WorkItem) -> None:
    try:
        async for value in agen:
            item.yielded(value)
    finally:
        await agen.aclose()


class _Capture:
    """Send fds 1 and 2 (and sys.stdout/err) to a file while user code runs.

    One file per container, emptied before each input (one input runs at a time); a batch
    gets a file of its own (its inputs read it after the next batch has started).
    """

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="apothic-log-", suffix=".txt", dir=scratch_dir())
        self._fd = fd

    def remove(self) -> None:
        try:
            os.close(self._fd)
            os.unlink(self.path)
        except OSError:
            pass

    def reset(self) -> "_Capture":
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        return self

    def __enter__(self) -> "_Capture":
        for stream in (sys.stdout, sys.stderr):
            _flush(stream)
        self._saved = (os.dup(1), os.dup(2))
        os.dup2(self._fd, 1)
        os.dup2(self._fd, 2)
        # Line-buffered while user code runs: printed lines reach the file (and the job's
        # log events) as they are printed.
        self._buffering = [_line_buffering(stream, True) for stream in (sys.stdout, sys.stderr)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for stream, before in zip((sys.stdout, sys.stderr), self._buffering):
            _line_buffering(stream, before)
        for stream in (sys.stdout, sys.stderr):
            _flush(stream)
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        os.close(self._saved[0])
        os.close(self._saved[1])


def _line_buffering(stream: Any, on: bool | None) -> bool | None:
    """Set a text stream's line buffering; returns what it was (None: not a reconfigurable stream)."""
    before = getattr(stream, "line_buffering", None)
    if on is not None and before is not None and before != on:
        try:
            stream.reconfigure(line_buffering=on)
        except Exception:  # noqa: BLE001 - an odd stream keeps its buffering
            pass
    return before


def _flush(stream: Any) -> None:
    try:
        stream.flush()
    except Exception:  # noqa: BLE001 - a closed or odd stream must not break a run
        pass
