"""The client side of ``map``, ``starmap`` and ``for_each``: feed inputs, read results in order."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from .._contracts import (
    MAP_WORKFLOW,
    MapFeed,
    MapFeedResult,
    MapInput,
    MapItem,
    MapResultItem,
    MapResults,
    MapResultsRequest,
)
from .._control._client import get_client, search_attributes
from .._data._blobs import load, offload
from .._data._serialization import CloudPickled
from ..exceptions import CallTimeoutError, InvalidError
from ._job import translate_failure

if TYPE_CHECKING:
    from ._function import _Invocable

# Inputs per feed update, and their pickled size at most.
FEED_ITEMS = 500
FEED_BYTES = 500_000
# What an input that goes to the blob store weighs in a feed: its reference.
REFERENCE_BYTES = 300
DEFAULT_IN_FLIGHT = 64
_POLL_MIN_S, _POLL_MAX_S = 0.01, 0.2
# Between two reads while results flow (each read is a query the control worker answers).
_POLL_BUSY_S = 0.02
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


async def run_map(
    fn: "_Invocable[Any, Any]",
    items: Iterable[Any],
    *,
    star: bool,
    collect: bool,
    timeout_s: float | None,
    return_exceptions: bool,
) -> list[Any] | None:
    """Run ``fn`` over ``items`` in one MapWorkflow; results in input order."""
    if timeout_s is not None and timeout_s <= 0:
        raise InvalidError(f"timeout_s={timeout_s!r}: allowed: > 0. Fix: give seconds to wait, e.g. 600.")
    inputs = _Inputs(fn, items, star)
    first = await _next_batch(inputs)  # an iterator that raises fails here
    if not first:
        return [] if collect else None
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    settings = fn._cp.settings
    client = await get_client(settings)
    dep = await fn._resolve()
    size_hint = getattr(items, "__len__", None)
    in_flight = DEFAULT_IN_FLIGHT if size_hint is None else max(1, min(DEFAULT_IN_FLIGHT, len(items)))  # type: ignore[arg-type]
    map_id = f"map-{uuid.uuid4().hex[:20]}"
    await client.start_workflow(
        MAP_WORKFLOW,
        MapInput(map_id=map_id, app=fn.app_name, function=fn.function_name, deployment=dep, max_in_flight=in_flight),
        id=map_id,
        task_queue=settings.worker.control_task_queue,
        search_attributes=search_attributes(fn.app_name, fn.function_name),
        static_summary=f"map {fn.app_name}.{fn.function_name}",
        result_type=int,
    )
    # Not bound to the first run: the map continues as new, and messages go to the current run.
    handle = client.get_workflow_handle(map_id, result_type=int)
    feeder = asyncio.create_task(_feed(handle, inputs, first))
    try:
        results = await _read(handle, feeder, inputs, collect, return_exceptions, deadline, map_id)
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
    return results if collect else None


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
    collect: bool,
    return_exceptions: bool,
    deadline: float | None,
    map_id: str,
) -> list[Any]:
    out: list[Any] = []
    next_index = acked = 0
    last_ack = time.monotonic()
    delay = _POLL_MIN_S
    while True:
        if feeder.done():
            feeder.result()  # the iterator raised, or feeding failed: surface it
            if next_index >= inputs.index:
                if acked < next_index:
                    await handle.signal("ack", next_index)
                return out
        if deadline is not None and time.monotonic() > deadline:
            raise CallTimeoutError(f"map {map_id}: not all results within the caller's timeout_s; it was cancelled")
        batch: MapResults = await handle.query("results", MapResultsRequest(from_index=next_index), result_type=MapResults)
        if not batch.items:
            if acked < next_index:  # idle: let the map free what was read
                await handle.signal("ack", next_index)
                acked, last_ack = next_index, time.monotonic()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX_S)
            continue
        delay = _POLL_MIN_S
        # Results in the blob store are fetched together; inline ones are loaded as they come.
        stored = [i for i in batch.items if i.ok and i.value is not None and i.value.blob is not None]
        fetched = dict(zip((i.index for i in stored), await asyncio.gather(*(load(i.value, inputs.blobs) for i in stored))))
        for item in batch.items:
            if item.index in fetched:
                value = fetched[item.index]
            else:
                value = await _value(item, map_id, return_exceptions, inputs)
            if collect:
                out.append(value)
        next_index = batch.items[-1].index + 1
        # Acknowledge in batches: each signal is an event in the map's history.
        if next_index - acked >= ACK_EVERY or time.monotonic() - last_ack > ACK_INTERVAL_S:
            await handle.signal("ack", next_index)
            acked, last_ack = next_index, time.monotonic()
        await asyncio.sleep(_POLL_BUSY_S)


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


async def spawn_each(fn: "_Invocable[Any, Any]", items: Iterable[Any]) -> list[Any]:
    """One job per item (at most 32 submissions at a time), in input order."""
    semaphore = asyncio.Semaphore(32)
    pending = [fn._pack((item,), {}) for item in items]  # fail early on an unpicklable item
    if not pending:
        return []
    dep = await fn._resolve()  # once for all of them

    async def one(index: int) -> Any:
        async with semaphore:
            return await fn._start_packed(pending[index], dep=dep)

    return list(await asyncio.gather(*(one(i) for i in range(len(pending)))))

