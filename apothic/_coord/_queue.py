"""``apothic.Queue``: a durable FIFO queue shared by clients and functions (after ``modal.Queue``)."""

from __future__ import annotations

import asyncio
import queue as stdlib_queue
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterable
from typing import Any, ClassVar

from .._contracts import (
    COORD_MAX_STATE_BYTES,
    QUEUE_MAX_PARTITION_ITEMS,
    QUEUE_WORKFLOW,
    CoordPageRequest,
    QueueClearRequest,
    QueueGetRequest,
    QueueGetResult,
    QueueLenRequest,
    QueuePage,
    QueuePutRequest,
    QueueState,
    queue_workflow_id,
)
from .._control._connection import ControlPlaneClient
from .._control._loop import synced, synced_iter
from ..exceptions import InvalidError
from ._object import CoordObject, Manager, Refused, unexpected
from ._values import MAX_QUEUE_ITEM_BYTES, pack_all, pickle_of, show, unpack_all

DEFAULT_TTL_S = 24 * 3600
MAX_TTL_S = 30 * 24 * 3600
MAX_PARTITION_KEY_BYTES = 64
# One blocking get waits this long in the workflow at most, then asks again (a caller that
# went away leaves its waiter behind for no longer than this).
LONG_POLL_S = 20.0
ITEM_FIX = "put plain data, or objects whose state pickles (close files, connections and locks first)"


def check_partition(partition: Any, where: str) -> str:
    """The partition key ("" for the default partition), or an InvalidError naming the rule."""
    if partition is None:
        return ""
    size = len(partition.encode("utf-8", "surrogatepass")) if isinstance(partition, str) else -1
    if not 1 <= size <= MAX_PARTITION_KEY_BYTES:
        raise InvalidError(
            f"{where}(partition={show(partition)}): allowed: None (the default partition) or a string of 1-"
            f"{MAX_PARTITION_KEY_BYTES} bytes (UTF-8). Fix: e.g. partition='worker-1'."
        )
    return partition


def check_timeout(timeout: Any, where: str) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise InvalidError(f"{where}(timeout={show(timeout)}): allowed: None (wait as long as it takes) or seconds "
                           ">= 0. Fix: e.g. timeout=10.")
    return float(timeout)


class Queue(CoordObject):
    """A FIFO queue held by the control plane, usable from clients and from functions.

    ``from_name(name, create_if_missing=True)`` refers to a named one, ``ephemeral()`` makes
    one for a ``with`` block. Every method blocks and has an ``.aio`` twin
    (``await q.get.aio()``, or ``await q.aio.get()``). Items are pickled with cloudpickle.
    ``partition=`` names an independent FIFO inside the same queue; a partition not written
    for ``partition_ttl`` seconds (default 24 hours) is cleared.

    Stored in one workflow ``apothic-queue:<name>`` on the control task queue: put and get are
    updates (a blocking get waits inside the workflow, at most 20 s per request), len and
    iterate are queries. Limits: an item pickles to at most 1 MiB (from 4 KiB up it lives in
    the blob store); at most 5,000 items per partition; the whole queue fits in about 1.5 MB
    of state. Durable across restarts of the control worker and of the Temporal server.
    """

    KIND: ClassVar[str] = "Queue"
    WORKFLOW: ClassVar[str] = QUEUE_WORKFLOW
    objects: ClassVar[Manager]

    @staticmethod
    def _id_for(name: str) -> str:
        return queue_workflow_id(name)

    def _state(self) -> QueueState:
        return QueueState(name=self.name or self.workflow_id, lease_s=self._lease_s)

    @staticmethod
    def delete(name: str, *, allow_missing: bool = False, client: ControlPlaneClient | None = None) -> None:
        """Delete the named Queue and its items (``await Queue.objects.delete.aio(name)`` awaits).

        Raises:
            NotFoundError: no such Queue (unless ``allow_missing``).
        """
        Queue.objects.delete(name, allow_missing=allow_missing, client=client)

    def _where(self, partition: str) -> str:
        return f"{self._label()}" + (f" (partition {partition!r})" if partition else "")

    # --- put ---

    async def _put(self, vs: Iterable[Any], block: bool, timeout: Any, partition: Any, partition_ttl: Any,
                   where: str) -> None:
        part = check_partition(partition, where)
        wait = check_timeout(timeout, where)
        if isinstance(partition_ttl, bool) or not isinstance(partition_ttl, (int, float)) or \
                not 1 <= partition_ttl <= MAX_TTL_S:
            raise InvalidError(f"{where}(partition_ttl={show(partition_ttl)}): allowed: 1 to {MAX_TTL_S:,} seconds "
                               f"(30 days). Fix: e.g. partition_ttl={DEFAULT_TTL_S}.")
        if not block and wait is not None:
            warnings.warn(f"{where}: timeout is ignored when block=False", stacklevel=2)
        values = list(vs)
        if len(values) > QUEUE_MAX_PARTITION_ITEMS:
            raise InvalidError(f"{where}: {len(values):,} items at once, more than a partition holds "
                               f"({QUEUE_MAX_PARTITION_ITEMS:,}). Fix: put them in smaller batches.")
        raws = []
        for v in values:
            raw = pickle_of(v, what=f"{where}: the item", fix=ITEM_FIX)
            if len(raw) > MAX_QUEUE_ITEM_BYTES:
                raise InvalidError(
                    f"{where}: the item {show(v)} pickles to {len(raw):,} bytes, over the 1 MiB "
                    f"({MAX_QUEUE_ITEM_BYTES:,}-byte) limit of one Queue item. Fix: store the data in an apothic.Dict "
                    "or a Volume and put its key on the queue, or split it into smaller items."
                )
            raws.append(raw)
        if not raws:
            return
        items = await pack_all(raws, self._settings.blobs, what=f"{where}: an item")
        need = sum(len(i) + 4 for i in items)
        if need > COORD_MAX_STATE_BYTES:
            raise InvalidError(f"{where}: these {len(items):,} items need {need:,} bytes of state, more than a whole "
                               f"Queue holds ({COORD_MAX_STATE_BYTES:,}). Fix: put them in smaller batches.")
        req = QueuePutRequest(items=items, partition=part, ttl_s=float(partition_ttl))
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        delay = 0.05
        while True:
            try:
                await self._update("put", req, int)
                return
            except Refused as r:
                if r.kind != "Full":
                    raise unexpected(self, r) from None
                if not block or (deadline is not None and loop.time() >= deadline):
                    raise stdlib_queue.Full(f"{r.message}. Fix: get items from it, wait (block=True, timeout=...), "
                                            "or use another partition or queue.") from None
            pause = delay if deadline is None else min(delay, max(deadline - loop.time(), 0.0))
            await asyncio.sleep(pause)
            delay = min(delay * 2, 1.0)

    @synced
    async def put(self, v: Any, block: bool = True, timeout: float | None = None, *, partition: str | None = None,
                  partition_ttl: int = DEFAULT_TTL_S) -> None:
        """Add ``v`` at the end of the partition.

        When the partition is full (5,000 items, or the queue's state budget), wait for room
        (``block=True``, up to ``timeout`` seconds) or raise ``queue.Full`` at once (``block=False``).

        Raises:
            InvalidError: ``v`` cannot be pickled or pickles to more than 1 MiB; a bad argument.
            queue.Full: no room (after ``timeout``).
        """
        await self._put([v], block, timeout, partition, partition_ttl, "Queue.put")

    @synced
    async def put_many(self, vs: Iterable[Any], block: bool = True, timeout: float | None = None, *,
                       partition: str | None = None, partition_ttl: int = DEFAULT_TTL_S) -> None:
        """Add several items at the end of the partition, in order, in one step (all or none)."""
        await self._put(vs, block, timeout, partition, partition_ttl, "Queue.put_many")

    # --- get ---

    async def _get(self, n: int, block: bool, timeout: Any, partition: Any, where: str) -> list[Any]:
        part = check_partition(partition, where)
        wait = check_timeout(timeout, where)
        if not block and wait is not None:
            warnings.warn(f"{where}: timeout is ignored when block=False", stacklevel=2)
        n = min(n, QUEUE_MAX_PARTITION_ITEMS)
        loop = asyncio.get_running_loop()
        deadline = None if not block or wait is None else loop.time() + wait
        delay = 0.05
        while True:
            left = LONG_POLL_S if deadline is None else deadline - loop.time()
            wait_s = min(max(left, 0.0), LONG_POLL_S) if block else 0.0
            op_id = uuid.uuid4().hex
            try:
                res: QueueGetResult = await self._update(
                    "get", QueueGetRequest(partition=part, n=n, wait_s=wait_s), QueueGetResult,
                    wait_s=wait_s, op_id=op_id,
                )
            except Refused as r:
                if r.kind == "Empty":
                    res = QueueGetResult(items=[])
                elif r.kind == "Busy":  # other gets wait already: ask again soon
                    res = QueueGetResult(items=[], retry=True)
                    await asyncio.sleep(delay if deadline is None else min(delay, max(deadline - loop.time(), 0)))
                    delay = min(delay * 2, 1.0)
                else:
                    raise unexpected(self, r) from None
            except asyncio.CancelledError:
                # The caller stopped waiting: release the waiter so that it takes no item for nobody.
                asyncio.get_running_loop().create_task(self._release(op_id))
                raise
            if res.items:
                return await unpack_all(res.items, self._settings.blobs, what=f"an item of {self._where(part)}")
            if not block:
                return []
            if deadline is not None and loop.time() >= deadline:
                raise stdlib_queue.Empty()

    async def _release(self, op_id: str) -> None:
        try:
            await self._signal("cancel_get", op_id)
        except Exception:  # noqa: BLE001 - best effort: the waiter ends by itself within LONG_POLL_S
            pass

    @synced
    async def get(self, block: bool = True, timeout: float | None = None, *, partition: str | None = None) -> Any:
        """Remove and return the next item of the partition.

        Empty partition: ``block=True`` waits for an item (up to ``timeout`` seconds, then
        raises ``queue.Empty``); ``block=False`` returns None at once.
        """
        items = await self._get(1, block, timeout, partition, "Queue.get")
        return items[0] if items else None

    @synced
    async def get_many(self, n_values: int, block: bool = True, timeout: float | None = None, *,
                       partition: str | None = None) -> list[Any]:
        """Remove and return up to ``n_values`` items (fewer when fewer are there, or when they add
        up to more than 1 MB stored); waits like :meth:`get` for the first one (``block=False``: [])."""
        if isinstance(n_values, bool) or not isinstance(n_values, int) or n_values < 1:
            raise InvalidError(f"Queue.get_many(n_values={show(n_values)}): allowed: an int >= 1. Fix: e.g. "
                               "n_values=10.")
        return await self._get(n_values, block, timeout, partition, "Queue.get_many")

    # --- the rest ---

    @synced
    async def len(self, *, partition: str | None = None, total: bool = False) -> int:
        """How many items the partition holds (``total=True``: all partitions together)."""
        if partition is not None and total:
            raise InvalidError("Queue.len: give partition= or total=True, not both. Fix: drop one of them.")
        req = QueueLenRequest(partition=check_partition(partition, "Queue.len"), total=bool(total))
        return int(await self._query("len", req, int))

    @synced
    async def clear(self, *, partition: str | None = None, all: bool = False) -> None:
        """Remove every item of the partition (``all=True``: of every partition)."""
        if partition is not None and all:
            raise InvalidError("Queue.clear: give partition= or all=True, not both. Fix: drop one of them.")
        req = QueueClearRequest(partition=check_partition(partition, "Queue.clear"), all=bool(all))
        await self._update("clear", req, int)

    @synced_iter
    async def iterate(self, *, partition: str | None = None, item_poll_timeout: float = 0.0) -> AsyncIterator[Any]:
        """The items of the partition, front to back, without removing them.

        Ends when no new item arrived for ``item_poll_timeout`` seconds after the last one
        (0: at the current end).
        """
        part = check_partition(partition, "Queue.iterate")
        poll = check_timeout(item_poll_timeout, "Queue.iterate") or 0.0
        after = 0
        last = time.monotonic()
        while True:
            page: QueuePage = await self._query("page", CoordPageRequest(after=after, partition=part), QueuePage)
            if page.items:
                for value in await unpack_all(page.items, self._settings.blobs, what=f"an item of {self._where(part)}"):
                    yield value
                after = page.first + len(page.items)
                last = time.monotonic()
                continue
            if time.monotonic() - last >= poll:
                return
            await asyncio.sleep(min(0.2, poll))

    def __len__(self) -> int:
        return self.len()


Queue.objects = Manager(Queue)
