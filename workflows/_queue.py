"""QueueWorkflow: the state of one ``apothic.Queue`` (one long-running workflow per Queue).

Each partition is a FIFO of stored items (inline pickles or blob references, never
unpickled here) with a TTL: a partition not written for ``ttl_s`` is cleared. ``put`` and
``get`` are updates. A ``get`` that finds its partition empty either is refused at once
(``wait_s`` 0: the refusal leaves no history) or waits for an item up to ``wait_s``; at most
``QUEUE_MAX_WAITERS`` wait at once (Temporal admits 10 updates in flight per workflow, and
puts need room too), later ones are refused as busy and the client asks again. A waiter
whose caller went away is released by the ``cancel_get`` signal, so that it takes no item
for nobody. ``len``, ``page`` (read without removing) and ``stats`` are queries.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from apothic._contracts import (
    COORD_MAX_STATE_BYTES,
    QUEUE_MAX_PARTITION_ITEMS,
    QUEUE_MAX_WAITERS,
    QUEUE_WORKFLOW,
    CoordPageRequest,
    CoordStats,
    QueueClearRequest,
    QueueGetRequest,
    QueueGetResult,
    QueueLenRequest,
    QueuePage,
    QueuePartition,
    QueuePutRequest,
    QueueState,
)

from ._coord import CoordEntity

ITEM_OVERHEAD = 4  # quotes and a comma in the JSON state
PARTITION_OVERHEAD = 96  # a partition's name, fields and numbers


class _Partition:
    __slots__ = ("expires_at", "items", "removed", "ttl_s")

    def __init__(self, p: QueuePartition) -> None:
        self.items: collections.deque[str] = collections.deque(p.items)
        self.removed = p.removed
        self.ttl_s = p.ttl_s
        self.expires_at = p.expires_at

    def frozen(self) -> QueuePartition:
        return QueuePartition(items=list(self.items), removed=self.removed, ttl_s=self.ttl_s,
                              expires_at=self.expires_at)


def partition_bytes(name: str, items: Iterable[str] = ()) -> int:
    return PARTITION_OVERHEAD + len(name) + sum(len(i) + ITEM_OVERHEAD for i in items)


@workflow.defn(name=QUEUE_WORKFLOW)
class QueueWorkflow(CoordEntity):
    KIND = "Queue"

    @workflow.init
    def __init__(self, state: QueueState) -> None:
        self._begin(state.name, state.lease_s, state.runs)
        self.parts: dict[str, _Partition] = {k: _Partition(p) for k, p in state.partitions.items()}
        self.size = sum(partition_bytes(k, p.items) for k, p in self.parts.items())
        self.stopping = False  # ending or continuing as new: waiters let go
        self.waiting = 0
        self.cancelled: dict[str, None] = {}  # update ids of gets whose caller went away
        self.alarm = math.inf  # when the run loop's timer fires
        self.rearm = False

    # --- the run: expire partitions, end with the lease, continue as new ---

    def _expire(self, now: float) -> None:
        for name in [n for n, p in self.parts.items() if p.expires_at <= now]:
            self.size -= partition_bytes(name, self.parts.pop(name).items)

    @workflow.run
    async def run(self, state: QueueState) -> None:
        while not (self.deleted or self._continue_due()):
            now = workflow.now().timestamp()
            self._expire(now)
            deadlines = [p.expires_at for p in self.parts.values()]
            if self.lease_s > 0:
                if now >= self.last_seen + self.lease_s:
                    self.deleted = True  # the owner of this ephemeral Queue is gone
                    break
                deadlines.append(self.last_seen + self.lease_s)
            self.alarm = min(deadlines, default=math.inf)
            self.rearm = False
            timeout = None if self.alarm == math.inf else timedelta(seconds=max(self.alarm - now, 0.001))
            try:
                await workflow.wait_condition(
                    lambda: self.deleted or self.rearm or self._continue_due(), timeout=timeout,
                    timeout_summary="expiry",
                )
            except TimeoutError:
                pass
        self.stopping = True
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self.deleted:
            self.parts.clear()
            return
        workflow.continue_as_new(
            QueueState(name=self.name, partitions={k: p.frozen() for k, p in self.parts.items()},
                       lease_s=self.lease_s, runs=self.runs + 1)
        )

    # --- put ---

    def _check_room(self, req: QueuePutRequest) -> None:
        part = self.parts.get(req.partition)
        have = len(part.items) if part is not None else 0
        grow = partition_bytes(req.partition, req.items) - (PARTITION_OVERHEAD + len(req.partition) if part else 0)
        where = f"partition {req.partition!r}" if req.partition else "the default partition"
        if have + len(req.items) > QUEUE_MAX_PARTITION_ITEMS:
            raise ApplicationError(
                f"Queue {self.name!r} is full: {where} holds {have:,} items of at most {QUEUE_MAX_PARTITION_ITEMS:,}",
                type="Full", non_retryable=True)
        if self.size + grow > COORD_MAX_STATE_BYTES:
            raise ApplicationError(
                f"Queue {self.name!r} is full: these items need {grow:,} bytes of its state, which holds "
                f"{self.size:,} of {COORD_MAX_STATE_BYTES:,} bytes", type="Full", non_retryable=True)

    @workflow.update
    async def put(self, req: QueuePutRequest) -> int:
        """Append the items to the partition (all or none); returns its new length."""
        self._refuse_if_deleted()
        self._touch()
        self._check_room(req)
        part = self.parts.get(req.partition)
        if part is None:
            part = self.parts[req.partition] = _Partition(QueuePartition(ttl_s=req.ttl_s))
            self.size += PARTITION_OVERHEAD + len(req.partition)
        part.items.extend(req.items)
        self.size += sum(len(i) + ITEM_OVERHEAD for i in req.items)
        part.ttl_s = req.ttl_s
        part.expires_at = workflow.now().timestamp() + req.ttl_s
        if part.expires_at < self.alarm:
            self.rearm = True
        return len(part.items)

    @put.validator
    def _validate_put(self, req: QueuePutRequest) -> None:
        self._refuse_if_deleted()
        self._check_room(req)

    # --- get ---

    def _take(self, name: str, n: int, max_bytes: int) -> list[str]:
        part = self.parts.get(name)
        out: list[str] = []
        used = 0
        while part is not None and part.items and len(out) < n:
            item = part.items[0]
            if out and used + len(item) > max_bytes:
                break
            out.append(part.items.popleft())
            used += len(item)
            part.removed += 1
            self.size -= len(item) + ITEM_OVERHEAD
        return out

    def _has(self, name: str) -> bool:
        part = self.parts.get(name)
        return part is not None and bool(part.items)

    @workflow.update
    async def get(self, req: QueueGetRequest) -> QueueGetResult:
        """Up to ``n`` items from the front of the partition, waiting up to ``wait_s`` for the first."""
        self._refuse_if_deleted()
        self._touch()
        items = self._take(req.partition, req.n, req.max_bytes)
        if items or req.wait_s <= 0:
            return QueueGetResult(items=items)
        if self.stopping:
            return QueueGetResult(items=[], retry=True)
        info = workflow.current_update_info()
        uid = info.id if info is not None else ""
        deadline = workflow.now().timestamp() + req.wait_s
        self.waiting += 1
        try:
            while True:
                left = deadline - workflow.now().timestamp()
                if left <= 0:
                    return QueueGetResult(items=[])
                try:
                    await workflow.wait_condition(
                        lambda: self._has(req.partition) or self.stopping or uid in self.cancelled,
                        timeout=timedelta(seconds=left), timeout_summary="get",
                    )
                except TimeoutError:
                    return QueueGetResult(items=[])
                if uid in self.cancelled or self.stopping:
                    return QueueGetResult(items=[], retry=True)
                items = self._take(req.partition, req.n, req.max_bytes)
                if items:
                    return QueueGetResult(items=items)
                # another get took it first: wait again for what is left of the time
        finally:
            self.waiting -= 1
            self.cancelled.pop(uid, None)

    @get.validator
    def _validate_get(self, req: QueueGetRequest) -> None:
        self._refuse_if_deleted()
        if self._has(req.partition):
            return
        # Refusals leave no history: an empty poll, or a waiter that would crowd out the puts.
        if req.wait_s <= 0:
            raise ApplicationError("empty", type="Empty", non_retryable=True)
        if self.stopping or self.waiting >= QUEUE_MAX_WAITERS:
            raise ApplicationError(f"{self.waiting} gets wait already", type="Busy", non_retryable=True)

    @workflow.signal
    def cancel_get(self, update_id: str) -> None:
        """Release the waiting get with this update id (its caller stopped waiting)."""
        self.cancelled[update_id] = None
        while len(self.cancelled) > 100:
            self.cancelled.pop(next(iter(self.cancelled)))

    # --- the rest ---

    @workflow.update
    async def clear(self, req: QueueClearRequest) -> int:
        """Remove every item of the partition (or of all of them); returns how many."""
        self._refuse_if_deleted()
        self._touch()
        names = list(self.parts) if req.all else [req.partition]
        count = 0
        for name in names:
            part = self.parts.get(name)
            if part is None:
                continue
            count += len(part.items)
            part.removed += len(part.items)
            self.size -= sum(len(i) + ITEM_OVERHEAD for i in part.items)
            part.items.clear()
        return count

    @clear.validator
    def _validate_clear(self, req: QueueClearRequest) -> None:
        self._refuse_if_deleted()

    @workflow.update
    async def delete(self) -> int:
        """End this Queue (its items go with it); returns how many items it held."""
        self._refuse_if_deleted()
        self._touch()
        self.deleted = True
        self.stopping = True
        return sum(len(p.items) for p in self.parts.values())

    @delete.validator
    def _validate_delete(self) -> None:
        self._refuse_if_deleted()

    @workflow.query(name="len")
    def len_(self, req: QueueLenRequest) -> int:
        self._refuse_if_deleted()
        if req.total:
            return sum(len(p.items) for p in self.parts.values())
        part = self.parts.get(req.partition)
        return len(part.items) if part is not None else 0

    @workflow.query
    def page(self, req: CoordPageRequest) -> QueuePage:
        """Items of ``req.partition`` from absolute index ``req.after`` on, without removing them."""
        self._refuse_if_deleted()
        part = self.parts.get(req.partition)
        if part is None:
            return QueuePage(items=[], first=req.after)
        start = max(req.after - part.removed, 0)
        out: list[str] = []
        used = 0
        for i in range(start, len(part.items)):
            item = part.items[i]
            if out and used + len(item) > req.max_bytes:
                break
            out.append(item)
            used += len(item)
        return QueuePage(items=out, first=part.removed + start)

    @workflow.query
    def stats(self) -> CoordStats:
        return CoordStats(name=self.name, count=sum(len(p.items) for p in self.parts.values()),
                          state_bytes=self.size, max_state_bytes=COORD_MAX_STATE_BYTES, runs=self.runs,
                          partitions=len(self.parts), waiting=self.waiting)
