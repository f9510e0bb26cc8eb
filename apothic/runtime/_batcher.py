"""``@apothic.batched``: single inputs gathered into lists, one call per list.

Callers submit single inputs (``remote``, ``spawn``, ``map``, from any process); each reaches
the container as its own ``apothic.execute`` activity (a map's as items of
``apothic.execute_batch``). The :class:`Batcher`, on the runtime's event loop, gathers what
arrives: a batch starts when ``max_batch_size`` inputs wait or ``wait_ms`` after the first
of them arrived, whichever comes first, and never while the previous batch runs (batches run
one at a time, in the main thread, with fd-level capture into a file of the batch's own).

The function is called once per batch with one list per parameter (each input's arguments
bound to the signature, defaults filled in), and must return a list of as many results, in
order: each input gets its own element. A result that is not such a list fails every input
of the batch with ``apothic.InvalidResult``; an exception fails each with that exception
(each job then retries by its own policy). Each input's ``started`` event names its batch
(``batch``, ``batch_size``); every input of a batch shows the batch's output as its logs.

A single call (``execute``) goes before map items, so that it waits for at most the running
batch. Cancelling one input of a running batch settles that input only; the call goes on for
the others and is interrupted once every input of it is cancelled or timed out. A call that
ignores its interruption for the grace period retires the container: the inputs still
waiting fail as ``apothic.NotRun`` (rerun elsewhere, never counted as the user's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
import traceback
from collections.abc import Callable
from typing import Any

from .._contracts import BatchSpec
from ._concurrent import _settle
from ._events import OutputError
from ._executor import Interrupted, MainThreadExecutor, WorkItem, _Capture


class NotRun(Exception):
    """An input the container did not get to because it retires (rerun elsewhere)."""


@dataclasses.dataclass(eq=False)
class _Member:
    item: WorkItem
    arguments: dict[str, Any]
    arrived: float
    log: "_BatchLog | None" = None


class _BatchLog:
    """A batch's capture file, removed once the batch and each of its inputs are done with it."""

    def __init__(self, users: int) -> None:
        self.capture = _Capture()
        self._users = users

    def release(self) -> None:
        self._users -= 1
        if self._users == 0:
            self.capture.remove()


@dataclasses.dataclass(eq=False)
class _Running:
    run: WorkItem
    members: list[_Member]
    changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class Batcher:
    """Gathers the inputs of a batched function and runs them as batches (see the module doc)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        spec: BatchSpec,
        executor: MainThreadExecutor,
        container_id: str,
        grace_s: float,
        on_stuck: Callable[[str], None],
    ) -> None:
        self._fn = fn
        self._signature = inspect.signature(fn)
        self._params = [
            p for p in self._signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        self._max = spec.max_batch_size
        self._wait_s = spec.wait_ms / 1000
        self._executor = executor
        self._container_id = container_id
        self._grace_s = grace_s
        self._on_stuck = on_stuck
        self._urgent: list[_Member] = []  # single calls
        self._bulk: list[_Member] = []  # map items
        self._running: _Running | None = None
        self._seq = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.stuck = False

    def start(self) -> None:
        """Begin gathering (on the runtime's event loop)."""
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._serve())

    # --- the runner interface (called on the runtime's loop) ---------------------------------

    def submit(self, item: WorkItem, bulk: bool = False) -> Any:
        if self.stuck:
            _settle(item, False, NotRun("the container retires: an earlier batch ignored its interruption"))
            return item.future
        try:
            bound = self._signature.bind(*item.args, **item.kwargs)
        except TypeError as e:  # as the call itself would fail: this input alone
            _settle(item, False, TypeError(f"{self._fn.__name__}(): {e}"))
            return item.future
        bound.apply_defaults()
        member = _Member(item, dict(bound.arguments), time.monotonic())
        item.slot = member
        (self._bulk if bulk else self._urgent).append(member)
        assert self._wake is not None
        self._wake.set()
        return item.future

    def interrupt(self, item: WorkItem, reason: str) -> None:
        item.interrupt_reason = reason
        member = item.slot
        for waiting in (self._urgent, self._bulk):
            if member in waiting:
                waiting.remove(member)
                _settle(item, False, Interrupted(reason))
                if self._wake is not None:
                    self._wake.set()
                return
        running = self._running
        _settle(item, False, Interrupted(reason))  # this input ends now; its batch goes on
        if running is not None and member in running.members:
            running.changed.set()

    def done_with(self, item: WorkItem) -> None:
        member = item.slot
        if isinstance(member, _Member) and member.log is not None:
            member.log.release()
            member.log = None

    # --- gathering ------------------------------------------------------------------------------

    async def _serve(self) -> None:
        try:
            await self._gather()
        except Exception:  # noqa: BLE001 - a bug here must not leave inputs waiting for ever
            traceback.print_exc()
            self._retire("its batcher failed")

    async def _gather(self) -> None:
        assert self._wake is not None
        while not self.stuck:
            while not self._waiting():
                self._wake.clear()
                await self._wake.wait()
            while self._waiting() < self._max:
                remaining = self._oldest() + self._wait_s - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except TimeoutError:
                    pass
                if not self._waiting():
                    break  # all cancelled
            members = self._take()
            if members:
                await self._run_batch(members)

    def _waiting(self) -> int:
        return len(self._urgent) + len(self._bulk)

    def _oldest(self) -> float:
        return min(m.arrived for m in (self._urgent[:1] + self._bulk[:1]))

    def _take(self) -> list[_Member]:
        taken = self._urgent[: self._max]
        self._urgent = self._urgent[len(taken) :]
        more = self._max - len(taken)
        if more:
            taken += self._bulk[:more]
            self._bulk = self._bulk[more:]
        return taken

    def _call_arguments(self, members: list[_Member]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """One list per parameter, each input's value at its position."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for p in self._params:
            values = [m.arguments[p.name] for m in members]
            if p.kind is p.POSITIONAL_ONLY:
                args.append(values)
            else:
                kwargs[p.name] = values
        return tuple(args), kwargs

    # --- one batch ------------------------------------------------------------------------------

    async def _run_batch(self, members: list[_Member]) -> None:
        self._seq += 1
        size = len(members)
        info = {"batch": f"{self._container_id}.b{self._seq}", "batch_size": size}
        log = _BatchLog(users=size + 1)
        args, kwargs = self._call_arguments(members)
        run = WorkItem(self._fn, args, kwargs, capture=log.capture)
        started = time.monotonic()
        for m in members:
            m.log = log
            m.item.log_path = log.capture.path
            m.item.started_at = started
            if m.item.on_start is not None:
                m.item.on_start(dict(info))
        running = self._running = _Running(run, members)
        fut = asyncio.wrap_future(self._executor.submit(run))
        try:
            if not await self._wait_run(running, fut):
                return
            try:
                result = fut.result()
            except BaseException as e:  # noqa: BLE001 - the call's exception fails each input
                for m in members:
                    _settle(m.item, False, e)
                return
            problem = self._result_problem(result, size)
            for m, value in zip(members, result if problem is None else [None] * size):
                if problem is None:
                    _settle(m.item, True, value)
                else:
                    _settle(m.item, False, OutputError(problem))
        finally:
            self._running = None
            log.release()

    async def _wait_run(self, running: _Running, fut: asyncio.Future[Any]) -> bool:
        """Wait for the call; interrupt it once no input wants its result. False: it ignored the
        interruption for the grace period (the container retires)."""
        deadline: float | None = None
        while not fut.done():
            if deadline is None and all(m.item.future.done() for m in running.members):
                reasons = {m.item.interrupt_reason for m in running.members}
                self._executor.interrupt(running.run, "timeout" if "timeout" in reasons else "cancelled")
                deadline = time.monotonic() + self._grace_s
            if deadline is not None and time.monotonic() >= deadline:
                self._retire("a batch ignored its interruption")
                return False
            running.changed.clear()
            changed = asyncio.ensure_future(running.changed.wait())
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            await asyncio.wait({fut, changed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
        return True

    def _retire(self, reason: str) -> None:
        self.stuck = True
        for m in self._urgent + self._bulk:
            _settle(m.item, False, NotRun(f"the container retires: {reason}"))
        self._urgent, self._bulk = [], []
        self._on_stuck(reason)

    def _result_problem(self, result: Any, size: int) -> str | None:
        name = self._fn.__name__
        if not isinstance(result, list):
            return (
                f"the batched function {name} returned {type(result).__name__} for a batch of {size} input(s); "
                f"it must return a list with one result per input, in order. Fix: `return [result_for(x) for x in "
                "items]`."
            )
        if len(result) != size:
            return (
                f"the batched function {name} returned a list of {len(result)} result(s) for a batch of {size} "
                "input(s); it must return exactly one result per input, in order."
            )
        return None
