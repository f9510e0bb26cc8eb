"""The client side of ``map``, ``starmap`` and ``for_each``: feed inputs, read results in order."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from .._contracts import (
    MAP_WORKFLOW,
    Deployment,
    FleetPending,
    MapFeed,
    MapFeedResult,
    MapInput,
    MapItem,
    MapResultItem,
    MapResults,
    MapResultsRequest,
    fleet_slots,
)
from .._control._client import get_client, search_attributes
from .._data._blobs import load, offload
from .._data._serialization import CloudPickled
from ..exceptions import CallTimeoutError, InvalidError
from ._ephemeral import note_started
from ._job import translate_failure
from ._output import OUTPUT
from ._progress import PROGRESS, Bar, _NullBar

if TYPE_CHECKING:
    from ._function import _Invocable

# Inputs per feed update, and their pickled size at most.
FEED_ITEMS = 500
FEED_BYTES = 500_000
# What an input that goes to the blob store weighs in a feed: its reference.
REFERENCE_BYTES = 300
DEFAULT_IN_FLIGHT = 64
# Batches in flight of one map at most, however large its fleet (Temporal allows a workflow
# 2,000 pending activities).
MAX_IN_FLIGHT = 1000
_POLL_MIN_S, _POLL_MAX_S = 0.01, 0.2
# Between two reads while results flow (each read is a query the control worker answers).
_POLL_BUSY_S = 0.02
# A map whose results keep coming is read with queries (they add nothing to its history); once
# this many in a row found nothing (about 70 ms without a result, the polls 10, 20 and 40 ms
# apart), the client waits in the workflow (update ``wait_results``) for the next result instead
# of polling (each long poll adds two events and a workflow task: long-polling after the first
# empty query cost a no-op map 5 to 11 % of its rate in bench/map_throughput.py).
LONG_POLL_AFTER = 4
ACK_EVERY = 256
ACK_INTERVAL_S = 0.5


class _Inputs:
    """Pulls items from the user's iterable (in a thread: it may block) and pickles them."""

    def __init__(self, fn: "_Invocable[Any, Any]", items: Iterable[Any], star: bool) -> None:
        self.fn = fn
        self.iterator: Iterator[Any] = iter(items)
        self.star = star
        self.index = 0
        self.exhausted = False
        self.blobs = fn._cp.settings.blobs

    def _pack(self, item: Any) -> CloudPickled:
        if self.star:
            try:
                args = tuple(item)
            except TypeError:
                raise InvalidError(
                    f"starmap() input {self.index} is {type(item).__name__}, not an iterable of arguments. "
                    "Fix: pass tuples, e.g. starmap([(1, 2), (3, 4)]), or use map()."
                ) from None
            return self.fn._pack(args, {})
        return self.fn._pack((item,), {})

    def next_batch(self) -> list[MapItem]:
        batch: list[MapItem] = []
        size = 0
        while len(batch) < FEED_ITEMS and size < FEED_BYTES:
            try:
                item = next(self.iterator)
            except StopIteration:
                self.exhausted = True
                break
            packed = self._pack(item)
            batch.append(MapItem(index=self.index, args=packed))
            size += packed.size if packed.size < self.blobs.threshold_bytes else REFERENCE_BYTES
            self.index += 1
        return batch


async def _connect_and_resolve(fn: "_Invocable[Any, Any]") -> tuple[Any, Any]:
    client = await get_client(fn._cp.settings)
    return client, await fn._resolve()


async def run_map(
    fn: "_Invocable[Any, Any]",
    items: Iterable[Any],
    *,
    star: bool,
    collect: bool,
    timeout_s: float | None,
    return_exceptions: bool,
) -> list[Any] | None:
    """Run ``fn`` over ``items`` in one MapWorkflow; results in input order (``collect``)."""
    out: list[Any] = []
    results = iter_map(fn, items, star=star, timeout_s=timeout_s, return_exceptions=return_exceptions)
    async with contextlib.aclosing(results):
        async for value in results:
            if collect:
                out.append(value)
    return out if collect else None


async def iter_map(
    fn: "_Invocable[Any, Any]",
    items: Iterable[Any],
    *,
    star: bool,
    timeout_s: float | None,
    return_exceptions: bool,
) -> AsyncIterator[Any]:
    """Run ``fn`` over ``items`` in one MapWorkflow, yielding the results in input order as
    they are read (``fn.map.aio``). Leaving early cancels the map."""
    if timeout_s is not None and timeout_s <= 0:
        raise InvalidError(f"timeout_s={timeout_s!r}: allowed: > 0. Fix: give seconds to wait, e.g. 600.")
    inputs = _Inputs(fn, items, star)
    first = await _next_batch(inputs)  # an iterator that raises fails here
    if not first:
        return
    size_hint = getattr(items, "__len__", None)
    # On a terminal: inputs done and failed, rate, time left (the total once it is known).
    with PROGRESS.bar(fn.function_name, len(items) if size_hint is not None else None) as bar:  # type: ignore[arg-type]
        async with contextlib.aclosing(_run_map(fn, items, inputs, first, timeout_s, return_exceptions, bar)) as run:
            async for value in run:
                yield value


async def _run_map(
    fn: _Invocable[Any, Any],
    items: Iterable[Any],
    inputs: _Inputs,
    first: list[MapItem],
    timeout_s: float | None,
    return_exceptions: bool,
    bar: Bar | _NullBar,
) -> AsyncIterator[Any]:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    settings = fn._cp.settings
    try:  # the caller's clock covers connecting to a server that accepts and never answers
        client, dep = await asyncio.wait_for(_connect_and_resolve(fn), timeout_s)
    except asyncio.TimeoutError:
        raise CallTimeoutError(
            f"{fn.app_name}.{fn.function_name} map: the Temporal server at {settings.address} did not take the "
            f"map within the caller's timeout_s={timeout_s:g} (connecting and submitting count against it). "
            "Fix: check that the server at that address is up and answering, or give a longer timeout_s."
        ) from None
    size_hint = getattr(items, "__len__", None)
    in_flight = _in_flight(dep)
    if size_hint is not None:
        in_flight = max(1, min(in_flight, len(items)))  # type: ignore[arg-type]
    map_id = f"map-{uuid.uuid4().hex[:20]}"
    shown = OUTPUT.enabled  # each input's output comes back with its result, to be printed here
    await client.start_workflow(
        MAP_WORKFLOW,
        MapInput(map_id=map_id, app=fn.app_name, function=fn.function_name, deployment=dep, max_in_flight=in_flight,
                 output=shown),
        id=map_id,
        task_queue=settings.worker.control_task_queue,
        search_attributes=search_attributes(fn.app_name, fn.function_name),
        static_summary=f"map {fn.app_name}.{fn.function_name}",
        result_type=int,
    )
    note_started(fn.app_name, map_id)
    # Not bound to the first run: the map continues as new, and messages go to the current run.
    handle = client.get_workflow_handle(map_id, result_type=int)
    feeder = asyncio.create_task(_feed(handle, inputs, first))
    several = size_hint is None or len(items) > 1  # type: ignore[arg-type]
    show = _Shown(fn.function_name, several, batched=dep.spec.batch is not None) if shown else None
    try:
        async with contextlib.aclosing(
            _read(handle, feeder, inputs, return_exceptions, deadline, map_id, show, bar)
        ) as read:
            async for value in read:
                yield value
    except BaseException:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        try:
            await handle.cancel()
        except Exception:  # noqa: BLE001 - it may have finished already
            pass
        raise
    try:
        await handle.result()
    except WorkflowFailureError as e:
        raise translate_failure(e, map_id) from None


class _Shown:
    """Prints each input's output as its result is read (live output on). The inputs of one
    call of a ``@batched`` function share that call's output: it is printed once, with the
    first of them."""

    def __init__(self, function: str, several: bool, batched: bool) -> None:
        self.function = function
        self.several = several
        self.batched = batched
        self.last = ""

    def item(self, item: MapResultItem) -> None:
        logs = item.logs if item.ok else str(item.error_detail.get("logs") or "")
        if self.batched and logs == self.last:
            return
        self.last = logs
        if logs:
            OUTPUT.map_item(self.function, item.index, logs, self.several)


async def _feed(handle: WorkflowHandle, inputs: _Inputs, first: list[MapItem]) -> int:
    batch = first
    while True:
        final = inputs.exhausted
        delay = _POLL_MIN_S
        while True:
            res: MapFeedResult = await handle.execute_update(
                "feed", MapFeed(items=batch, final=final), result_type=MapFeedResult
            )
            if res.accepted:
                break
            await asyncio.sleep(delay)  # the map's pending budget is full: wait for it to drain
            delay = min(delay * 2, _POLL_MAX_S)
        if final:
            return inputs.index
        batch = await _next_batch(inputs)


async def _next_batch(inputs: _Inputs) -> list[MapItem]:
    """The next batch of inputs, the large ones moved to the blob store (the feed holds references)."""
    batch = await asyncio.to_thread(inputs.next_batch)
    args = await asyncio.gather(*(offload(item.args, inputs.blobs) for item in batch))
    return [dataclasses.replace(item, args=a) for item, a in zip(batch, args)]


async def _read(
    handle: WorkflowHandle,
    feeder: asyncio.Task[int],
    inputs: _Inputs,
    return_exceptions: bool,
    deadline: float | None,
    map_id: str,
    show: _Shown | None,
    bar: Bar | _NullBar,
) -> AsyncIterator[Any]:
    next_index = acked = 0
    last_ack = time.monotonic()
    delay = _POLL_MIN_S
    long_poll = True  # until the map cannot answer its update (a worker from before it)
    empty = 0  # queries in a row that found no result
    poll: asyncio.Task[MapResults | None] | None = None
    try:
        while True:
            if feeder.done():
                feeder.result()  # the iterator raised, or feeding failed: surface it
                bar.set_total(inputs.index)
                if next_index >= inputs.index:
                    if acked < next_index:
                        await handle.signal("ack", next_index)
                    return
            if deadline is not None and time.monotonic() > deadline:
                raise CallTimeoutError(f"map {map_id}: not all results within the caller's timeout_s; it was cancelled")
            if poll is None:
                batch: MapResults | None = await handle.query(
                    "results", MapResultsRequest(from_index=next_index), result_type=MapResults
                )
            else:  # the long poll asked earlier, still waiting when the feeder finished
                batch, poll = await _poll_until(poll, feeder, deadline)
            if batch is not None and not batch.items:
                if acked < next_index:  # idle: let the map free what was read
                    await handle.signal("ack", next_index)
                    acked, last_ack = next_index, time.monotonic()
                empty += 1
                if not long_poll or empty < LONG_POLL_AFTER:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _POLL_MAX_S)
                    continue
                # Wait in the workflow for the next result instead of asking again and again.
                poll = asyncio.ensure_future(_wait_results(handle, next_index))
                batch, poll = await _poll_until(poll, feeder, deadline)
                if batch is None and poll is None:
                    long_poll = False  # it cannot: poll the query as before
                if batch is None or not batch.items:
                    continue
            if batch is None:
                continue
            delay, empty = _POLL_MIN_S, 0
            async for value in _take(batch, handle, map_id, return_exceptions, inputs, show, bar):
                yield value
            next_index = batch.items[-1].index + 1
            # Acknowledge in batches: each signal is an event in the map's history.
            if next_index - acked >= ACK_EVERY or time.monotonic() - last_ack > ACK_INTERVAL_S:
                await handle.signal("ack", next_index)
                acked, last_ack = next_index, time.monotonic()
            await asyncio.sleep(_POLL_BUSY_S)
    finally:
        if poll is not None:
            poll.cancel()


async def _wait_results(handle: WorkflowHandle, from_index: int) -> MapResults | None:
    """The map's long poll for the result at ``from_index`` (``None``: the map cannot answer it,
    e.g. it ended meanwhile or its worker predates the update; the caller polls the query)."""
    try:
        return await handle.execute_update(
            "wait_results", MapResultsRequest(from_index=from_index), result_type=MapResults
        )
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - the query path tells what the matter is
        return None


async def _poll_until(
    poll: asyncio.Task[MapResults | None], feeder: asyncio.Task[int], deadline: float | None
) -> tuple[MapResults | None, asyncio.Task[MapResults | None] | None]:
    """Wait for the long poll, but no longer than the caller's deadline, and not past the
    feeder's end (which may have failed). Returns its answer and ``None``, or, if it is still
    waiting, ``None`` and the poll (asked again on the next round)."""
    waits: set[asyncio.Future[Any]] = {poll} if feeder.done() else {poll, feeder}
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if poll.done():
        return poll.result(), None
    return None, poll


async def _take(
    batch: MapResults,
    handle: WorkflowHandle,
    map_id: str,
    return_exceptions: bool,
    inputs: _Inputs,
    show: _Shown | None,
    bar: Bar | _NullBar,
) -> AsyncIterator[Any]:
    """The values of one batch of results, in order."""
    # Results in the blob store are fetched together; inline ones are loaded as they come.
    stored = [i for i in batch.items if i.ok and i.value is not None and i.value.blob is not None]
    fetched = dict(zip((i.index for i in stored), await asyncio.gather(*(load(i.value, inputs.blobs) for i in stored))))
    for item in batch.items:
        if show is not None:
            show.item(item)
        if item.index in fetched:
            value = fetched[item.index]
        else:
            value = await _value(item, map_id, return_exceptions, inputs)
        bar.advance(failed=0 if item.ok else 1)
        yield value


async def _value(item: MapResultItem, map_id: str, return_exceptions: bool, inputs: _Inputs) -> Any:
    if item.ok:
        assert item.value is not None
        return await load(item.value, inputs.blobs)
    error = translate_failure(
        ApplicationError(item.error_message, item.error_detail, type=item.error_type), f"{map_id} input {item.index}"
    )
    if return_exceptions:
        return error
    raise error


def _in_flight(dep: Deployment) -> int:
    """Batches a map may keep in flight: enough for every slot of the fleet at its ceiling and
    as many queued (the workflow lowers it to what ``max_pending_tasks`` allows)."""
    return max(DEFAULT_IN_FLIGHT, min(MAX_IN_FLIGHT, 2 * fleet_slots(dep.spec)))


# spawn_map: submissions at a time; how often it reads the fleet's memo while it submits;
# jobs it waits on at once (the oldest first), to learn when there is room again.
SPAWN_CONCURRENCY = 32
PENDING_READ_S = 0.2
_FULL_POLL_S = 0.1
MAX_WATCHERS = 256


class _Room:
    """spawn_map's back-pressure: at most ``fleet_slots + max_pending_tasks`` of its own jobs
    unfinished (so that no more than ``max_pending_tasks`` of them wait beyond the fleet's
    slots), and none submitted while the fleet says the limit is reached (other callers'
    inputs count there too). It learns that a job has ended from a long poll on its result
    (the way ``Job.wait`` waits; the oldest ``MAX_WATCHERS`` jobs at a time), so room opens as
    soon as one ends. With no more items than the bound it never waits on its own jobs."""

    def __init__(self, fn: "_Invocable[Any, Any]", dep: Deployment, items: int) -> None:
        self.fn = fn
        self.dep = dep
        self.bound = fleet_slots(dep.spec) + dep.spec.max_pending_tasks
        self.track = items > self.bound
        self.unfinished = 0  # taken and not yet seen to end (submitting, or submitted)
        self.unwatched: collections.deque[str] = collections.deque()
        self.watchers: set[asyncio.Task[None]] = set()
        self.ended = asyncio.Event()
        self.state = FleetPending()
        self.read_at = -1e9

    async def take(self) -> FleetPending:
        """Wait until one more job may be submitted; returns the fleet's memo as last read."""
        while True:
            if self.unfinished < self.bound:
                now = time.monotonic()
                if now - self.read_at >= PENDING_READ_S or self.state.full:
                    self.state = await self.fn._fleet_pending(self.dep)
                    self.read_at = now
                if not self.state.full:
                    self.unfinished += 1
                    return self.state
                await asyncio.sleep(_FULL_POLL_S)  # other callers fill it: look again soon
            else:
                self.ended.clear()
                await self.ended.wait()

    def submitted(self, job_id: str | None) -> None:
        """The submission taken by :meth:`take` is done (``None``: it failed)."""
        if job_id is None:
            self._end()
        elif self.track:
            self.unwatched.append(job_id)
            self._watch_more()

    def _watch_more(self) -> None:
        while self.unwatched and len(self.watchers) < MAX_WATCHERS:
            task = asyncio.create_task(self._watch(self.unwatched.popleft()))
            self.watchers.add(task)
            task.add_done_callback(self.watchers.discard)

    def _end(self) -> None:
        self.unfinished -= 1
        self.ended.set()

    async def _watch(self, job_id: str) -> None:
        client = await get_client(self.fn._cp.settings)
        handle = client.get_workflow_handle(job_id)
        try:
            while True:
                try:
                    await handle.result(follow_runs=False)
                    return
                except (WorkflowFailureError, ApplicationError):
                    return  # it ended (failed, cancelled, timed out): its outcome is the Job's
                except RPCError as e:
                    if e.status == RPCStatusCode.NOT_FOUND:
                        return
                    await asyncio.sleep(1.0)  # the server is busy or away: keep waiting
                except Exception:  # noqa: BLE001 - e.g. a result this client cannot decode: it ended
                    return
        finally:
            self._end()
            self.watchers.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._watch_more()

    async def close(self) -> None:
        for task in list(self.watchers):
            task.cancel()
        await asyncio.gather(*self.watchers, return_exceptions=True)


async def spawn_each(fn: "_Invocable[Any, Any]", items: Iterable[Any]) -> list[Any]:
    """One job per item (at most 32 submissions at a time), in input order, with
    back-pressure for ``max_pending_tasks`` (see :class:`_Room`)."""
    pending = [fn._pack((item,), {}) for item in items]  # fail early on an unpicklable item
    if not pending:
        return []
    # On a terminal: jobs submitted out of the total (spawn_map returns once all are).
    with PROGRESS.bar(f"{fn.function_name} spawn_map", len(pending), " submitted") as bar:
        return await _spawn_all(fn, pending, bar)


async def _spawn_all(fn: _Invocable[Any, Any], pending: list[CloudPickled], bar: Bar | _NullBar) -> list[Any]:
    dep = await fn._resolve()  # once for all of them
    room = _Room(fn, dep, len(pending))
    jobs: list[Any] = [None] * len(pending)
    semaphore = asyncio.Semaphore(SPAWN_CONCURRENCY)
    failed: list[BaseException] = []

    async def one(index: int, state: FleetPending) -> None:
        job = None
        try:
            job = await fn._start_packed(pending[index], dep=dep, pending=state, limit=False)
            jobs[index] = job
            bar.advance()
        except BaseException as e:
            failed.append(e)
            bar.advance(failed=1)
            raise
        finally:
            room.submitted(job.job_id if job is not None else None)
            semaphore.release()

    tasks: list[asyncio.Task[None]] = []
    try:
        for index in range(len(pending)):
            await semaphore.acquire()
            if failed:  # a submission failed: submit no more, raise it below
                semaphore.release()
                break
            try:
                state = await room.take()
            except BaseException:
                semaphore.release()
                raise
            tasks.append(asyncio.create_task(one(index, state)))
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        await room.close()
    return jobs
