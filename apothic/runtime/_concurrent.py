"""Several inputs at once in one container: sync functions on threads, async ones as tasks.

``@apothic.concurrent(max_inputs=N)`` (or ``concurrent_requests=N``) lets a container run up
to N inputs at the same time. A plain function runs each input on a thread of its own
(:class:`ThreadExecutor`, at most N threads, started as needed); an ``async def`` runs each
input as a task on one event loop, in thread ``apothic-user-loop`` (:class:`LoopExecutor`).

**Output.** With several inputs at once the process-wide fds 1 and 2 cannot be redirected per
input. ``sys.stdout`` and ``sys.stderr`` become a dispatcher (:class:`_Dispatch`) that writes
to the file of the input running in the current context (a ``contextvars`` variable: a thread
of the pool, an asyncio task and the tasks it creates). What is printed through ``sys.stdout``
/ ``sys.stderr`` (``print``, ``logging`` handlers made during the input, ``sys.stdout.buffer``)
is the input's; what a C extension or a subprocess writes to fd 1 or 2, and what threads the
user code starts itself print (they do not inherit the context), goes to the container's log.

**Interruption.** A cancel or a timeout stops one input and leaves the others running: a
thread gets :class:`Interrupted` raised asynchronously (``PyThreadState_SetAsyncExc``, checked
between bytecodes), or is woken from ``time.sleep`` (replaced in the container by one that
an interruption ends); a task is cancelled. A thread blocked in other C code stops once it
runs Python code again; an input still running after the runtime's grace period makes the
container retire itself once its other inputs have finished.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import ctypes
import inspect
import io
import os
import queue
import sys
import tempfile
import threading
import time
from typing import Any

from .._data import _checkpoint
from ._channel import scratch_dir
from ._executor import Interrupted, WorkItem, _adrain, _awaited, _drain

# The log of the input running in this context (None: the container's own output).
_sink: contextvars.ContextVar["_Sink | None"] = contextvars.ContextVar("apothic_input_log", default=None)


class _Sink:
    """One input's output file (line-buffered, shared by its stdout and stderr)."""

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="apothic-log-", suffix=".txt", dir=scratch_dir())
        self.file = open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
        self._lock = threading.Lock()

    def write(self, text: str, fallback: Any) -> int:
        with self._lock:
            if not self.file.closed:
                return self.file.write(text)
        return fallback.write(text)  # printed after its input ended (a task it left behind)

    def flush(self) -> None:
        with self._lock:
            if not self.file.closed:
                self.file.flush()

    def close(self) -> None:
        with self._lock:
            self.file.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class _Dispatch(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` while several inputs run: each write goes to the file of the
    input of the current context, or to the stream it replaced."""

    def __init__(self, fallback: Any) -> None:
        super().__init__()
        self._fallback = fallback

    def write(self, text: str) -> int:
        sink = _sink.get()
        if sink is None:
            return self._fallback.write(text)
        return sink.write(text, self._fallback)

    def flush(self) -> None:
        sink = _sink.get()
        (sink or self._fallback).flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return _sink.get() is None and self._fallback.isatty()

    def fileno(self) -> int:
        return self._fallback.fileno()  # fd-level writes are the container's (see the module doc)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8" if _sink.get() is not None else self._fallback.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return "backslashreplace" if _sink.get() is not None else self._fallback.errors

    @property
    def buffer(self) -> Any:
        sink = _sink.get()
        if sink is None:
            return self._fallback.buffer
        sink.flush()
        return sink.file.buffer

    @property
    def line_buffering(self) -> bool:
        return True

    def reconfigure(self, **kwargs: Any) -> None:
        """Accepted and ignored: each input's file is line-buffered UTF-8."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fallback, name)


def install_dispatch() -> None:
    """Replace ``sys.stdout`` and ``sys.stderr`` with dispatchers (once)."""
    if not isinstance(sys.stdout, _Dispatch):
        sys.stdout = _Dispatch(sys.stdout)
    if not isinstance(sys.stderr, _Dispatch):
        sys.stderr = _Dispatch(sys.stderr)


def _settle(item: WorkItem, ok: bool, value: Any) -> None:
    """Complete the input's future once (an interruption names the reason it was given)."""
    fut = item.future
    if fut.done():
        return
    if isinstance(value, Interrupted) and not value.reason:
        value.reason = item.interrupt_reason
    try:
        fut.set_result(value) if ok else fut.set_exception(value)
    except concurrent.futures.InvalidStateError:
        pass


def _call(item: WorkItem) -> Any:
    """Run one input in the current context (a fresh one per input), as the main thread would."""
    _sink.set(item.capture)
    _checkpoint._bind_context(item)
    result = item.fn(*item.args, **item.kwargs)
    if inspect.isgenerator(result):
        return _drain(result, item)
    if inspect.isasyncgen(result):
        return asyncio.run(_adrain(result, item))
    if inspect.isawaitable(result):
        return asyncio.run(_awaited(result))
    return result


# --- threads ------------------------------------------------------------------------------

_real_sleep = time.sleep
_thread = threading.local()  # .slot: the _Slot of a pool thread


class _Slot:
    """A pool thread and the input it runs; guarded by its executor's lock."""

    def __init__(self, executor: "ThreadExecutor") -> None:
        self.executor = executor
        self.ident = threading.get_ident()
        self.item: WorkItem | None = None
        self.delivered = False  # this input's interruption was raised or woke a sleep
        self.raised = False  # ... by an asynchronous exception, maybe still pending
        self.sleeping = False
        self.wake = threading.Event()


def _set_async_exc(ident: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in thread ``ident`` at its next bytecode (None: clear a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc) if exc else None)


def _interruptible_sleep(secs: float) -> None:
    """``time.sleep`` in a function container: in an input's thread, an interruption ends it."""
    slot = getattr(_thread, "slot", None)
    if slot is None or slot.item is None:
        return _real_sleep(secs)
    return slot.executor.sleep(slot, secs)


class ThreadExecutor:
    """Runs inputs of a plain function on up to ``workers`` threads at once."""

    def __init__(self, workers: int) -> None:
        self._workers = max(1, workers)
        self._queue: queue.SimpleQueue[WorkItem] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._queued = 0
        install_dispatch()
        time.sleep = _interruptible_sleep

    def submit(self, item: WorkItem) -> concurrent.futures.Future:
        item.capture = _Sink()
        item.log_path = item.capture.path
        with self._lock:
            self._queued += 1
            start = self._queued > self._idle and self._threads < self._workers
            if start:
                self._threads += 1
                number = self._threads
        self._queue.put(item)
        if start:
            threading.Thread(target=self._serve, name=f"apothic-input-{number}", daemon=True).start()
        return item.future

    def done_with(self, item: WorkItem) -> None:
        if isinstance(item.capture, _Sink):
            item.capture.close()

    def interrupt(self, item: WorkItem, reason: str) -> None:
        """Raise :class:`Interrupted` in the input's thread (or fail it if it has not started)."""
        item.interrupt_reason = reason
        with self._lock:
            slot = item.slot
            if slot is None:
                _settle(item, False, Interrupted(reason))  # still queued: it will not start
                return
            if slot.item is not item or slot.delivered:
                return  # done already, or told once
            slot.delivered = True
            if slot.sleeping:
                slot.wake.set()
            else:
                slot.raised = True
                _set_async_exc(slot.ident, Interrupted)

    def sleep(self, slot: _Slot, secs: Any) -> None:
        try:
            seconds = float(secs)
        except (TypeError, ValueError):
            return _real_sleep(secs)  # raises as time.sleep does
        if not seconds > 0:
            return _real_sleep(secs)  # 0, negative, NaN: as time.sleep
        with self._lock:
            told = slot.delivered
            slot.sleeping = not told
        if told:  # interrupted once already: the code chose to carry on
            return _real_sleep(seconds)
        try:
            deadline = time.monotonic() + seconds
            while not slot.wake.wait(min(deadline - time.monotonic(), threading.TIMEOUT_MAX)):
                if time.monotonic() >= deadline:
                    break
        finally:
            with self._lock:
                slot.sleeping = False
                woke = slot.wake.is_set()
                slot.wake.clear()
        if woke:
            raise Interrupted(slot.item.interrupt_reason if slot.item is not None else "")
        return None

    def _serve(self) -> None:
        slot = _Slot(self)
        _thread.slot = slot
        while True:
            with self._lock:
                self._idle += 1
            item = self._queue.get()
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            self._run(slot, item)

    def _run(self, slot: _Slot, item: WorkItem) -> None:
        with self._lock:
            if item.future.done():  # interrupted while queued
                return
            slot.item, slot.delivered, slot.raised = item, False, False
            slot.wake.clear()
            item.slot = slot
            item.started_at = time.monotonic()
        ok, value = False, None
        try:
            try:
                value, ok = contextvars.Context().run(_call, item), True
            except BaseException as e:  # noqa: BLE001 - everything goes back to the caller
                value = e
            finally:
                self._release(slot)  # from here on no interruption of this input can arrive
        except BaseException as e:  # noqa: BLE001 - an interruption that arrived as the code ended
            ok, value = False, e
        _settle(item, ok, value)

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            slot.item = None
            if slot.raised:
                _set_async_exc(slot.ident, None)  # drop it if it has not fired yet
                slot.raised = False


# --- one event loop -----------------------------------------------------------------------


class LoopExecutor:
    """Runs inputs of an ``async def`` function as tasks on one event loop (its own thread)."""

    def __init__(self) -> None:
        install_dispatch()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="apothic-user-loop", daemon=True)
        self._thread.start()

    def submit(self, item: WorkItem) -> concurrent.futures.Future:
        item.capture = _Sink()
        item.log_path = item.capture.path
        # A fresh context: the task sees none of the runtime's (its activity's) variables.
        self._loop.call_soon_threadsafe(self._start, item, context=contextvars.Context())
        return item.future

    def done_with(self, item: WorkItem) -> None:
        if isinstance(item.capture, _Sink):
            item.capture.close()

    def interrupt(self, item: WorkItem, reason: str) -> None:
        item.interrupt_reason = reason
        self._loop.call_soon_threadsafe(self._cancel, item)

    def _start(self, item: WorkItem) -> None:
        if not item.future.done():
            item.slot = self._loop.create_task(self._run(item))

    def _cancel(self, item: WorkItem) -> None:
        task = item.slot
        if task is None:
            _settle(item, False, Interrupted(item.interrupt_reason))  # not started: it will not
        elif not task.done():
            task.cancel()

    async def _run(self, item: WorkItem) -> None:
        _sink.set(item.capture)
        _checkpoint._bind_context(item)
        item.started_at = time.monotonic()
        try:
            result = item.fn(*item.args, **item.kwargs)
            if inspect.isasyncgen(result):
                result = await _adrain(result, item)
            elif inspect.isawaitable(result):
                result = await result
            elif inspect.isgenerator(result):
                result = _drain(result, item)
        except asyncio.CancelledError as e:
            _settle(item, False, Interrupted(item.interrupt_reason) if item.interrupt_reason else e)
        except BaseException as e:  # noqa: BLE001 - everything goes back to the caller
            _settle(item, False, e)
        else:
            _settle(item, True, result)
