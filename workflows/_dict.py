"""DictWorkflow: the state of one ``apothic.Dict`` (one long-running workflow per Dict).

Writes (``put``, ``pop``, ``clear``, ``delete``) are updates; reads (``get``, ``contains``,
``len``, ``page``, ``stats``) are queries, which add nothing to the history. Keys arrive as a
key id (a hash of the key's canonical form, made by the client) plus the key's pickle; values
as stored strings (an inline pickle, or a reference to the blob store): the workflow never
unpickles anything. Before its history or its update count nears Temporal's limits it
continues as new with its entries. ``delete`` ends it; an ephemeral Dict (``lease_s`` > 0)
also ends itself when its owner has not been heard from for ``lease_s``.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from apothic._contracts import (
    COORD_MAX_STATE_BYTES,
    DICT_WORKFLOW,
    CoordPageRequest,
    CoordStats,
    DictEntry,
    DictKeyRequest,
    DictLookup,
    DictPage,
    DictPutRequest,
    DictState,
)

from ._coord import CoordEntity

# JSON around one entry (its key id, field names, quotes, the seq), counted generously.
ENTRY_OVERHEAD = 48


def entry_bytes(key_id: str, key: str, value: str) -> int:
    """What one entry adds to the state that continue-as-new carries."""
    return len(key_id) + len(key) + len(value) + ENTRY_OVERHEAD


@workflow.defn(name=DICT_WORKFLOW)
class DictWorkflow(CoordEntity):
    KIND = "Dict"

    @workflow.init
    def __init__(self, state: DictState) -> None:
        self._begin(state.name, state.lease_s, state.runs)
        self.entries: dict[str, DictEntry] = dict(state.entries)
        self.next_seq = state.next_seq
        self.size = sum(entry_bytes(k, e.key, e.value) for k, e in self.entries.items())

    # --- the run: wait for a reason to stop, then end or continue as new ---

    @workflow.run
    async def run(self, state: DictState) -> None:
        while not (self.deleted or self._continue_due()):
            timeout = None
            if self.lease_s > 0:
                left = self.last_seen + self.lease_s - workflow.now().timestamp()
                if left <= 0:
                    self.deleted = True  # the owner of this ephemeral Dict is gone
                    break
                timeout = timedelta(seconds=left)
            try:
                await workflow.wait_condition(
                    lambda: self.deleted or self._continue_due(), timeout=timeout, timeout_summary="lease"
                )
            except TimeoutError:
                pass
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self.deleted:
            self.entries.clear()
            return
        workflow.continue_as_new(
            DictState(name=self.name, entries=self.entries, next_seq=self.next_seq, lease_s=self.lease_s,
                      runs=self.runs + 1)
        )

    # --- writes ---

    def _growth(self, req: DictPutRequest) -> int:
        grow = 0
        seen: dict[str, int] = {}
        for item in req.items:
            old = self.entries.get(item.key_id)
            if old is not None and req.skip_if_exists:
                continue
            before = seen.get(item.key_id)
            if before is None:
                before = entry_bytes(item.key_id, old.key, old.value) if old is not None else 0
            after = entry_bytes(item.key_id, old.key if old is not None else item.key, item.value)
            grow += after - before
            seen[item.key_id] = after
        return grow

    @workflow.update
    async def put(self, req: DictPutRequest) -> int:
        """Write the items (all or none); returns how many were written (skip_if_exists skips keys present)."""
        self._refuse_if_deleted()
        self._touch()
        grow = self._growth(req)
        if self.size + grow > COORD_MAX_STATE_BYTES:
            raise self._full(grow)
        written = 0
        for item in req.items:
            old = self.entries.get(item.key_id)
            if old is not None:
                if req.skip_if_exists:
                    continue
                # As in Python, an existing key keeps its first key object and its place.
                self.size -= entry_bytes(item.key_id, old.key, old.value)
                entry = DictEntry(key=old.key, value=item.value, seq=old.seq)
            else:
                entry = DictEntry(key=item.key, value=item.value, seq=self.next_seq)
                self.next_seq += 1
            self.entries[item.key_id] = entry
            self.size += entry_bytes(item.key_id, entry.key, entry.value)
            written += 1
        return written

    @put.validator
    def _validate_put(self, req: DictPutRequest) -> None:
        self._refuse_if_deleted()
        if req.skip_if_exists and all(item.key_id in self.entries for item in req.items):
            raise ApplicationError("every key exists", type="Exists", non_retryable=True)  # no history for it
        grow = self._growth(req)
        if self.size + grow > COORD_MAX_STATE_BYTES:
            raise self._full(grow)

    def _full(self, grow: int) -> ApplicationError:
        return ApplicationError(
            f"Dict {self.name!r} is full: this write needs {grow:,} bytes more of its state, which holds "
            f"{self.size:,} of {COORD_MAX_STATE_BYTES:,} bytes ({len(self.entries):,} keys)",
            type="Full", non_retryable=True,
        )

    @workflow.update
    async def pop(self, req: DictKeyRequest) -> DictLookup:
        self._refuse_if_deleted()
        self._touch()
        entry = self.entries.pop(req.key_id, None)
        if entry is None:
            return DictLookup(found=False)
        self.size -= entry_bytes(req.key_id, entry.key, entry.value)
        return DictLookup(found=True, value=entry.value)

    @pop.validator
    def _validate_pop(self, req: DictKeyRequest) -> None:
        self._refuse_if_deleted()
        if req.key_id not in self.entries:  # nothing to do: no history for it
            raise ApplicationError("no such key", type="Missing", non_retryable=True)

    @workflow.update
    async def clear(self) -> int:
        self._refuse_if_deleted()
        self._touch()
        count = len(self.entries)
        self.entries.clear()
        self.size = 0
        return count

    @clear.validator
    def _validate_clear(self) -> None:
        self._refuse_if_deleted()

    @workflow.update
    async def delete(self) -> int:
        """End this Dict (its entries go with it); returns how many keys it held."""
        self._refuse_if_deleted()
        self._touch()
        self.deleted = True
        return len(self.entries)

    @delete.validator
    def _validate_delete(self) -> None:
        self._refuse_if_deleted()

    # --- reads ---

    @workflow.query
    def get(self, req: DictKeyRequest) -> DictLookup:
        self._refuse_if_deleted()
        entry = self.entries.get(req.key_id)
        return DictLookup(found=False) if entry is None else DictLookup(found=True, value=entry.value)

    @workflow.query
    def contains(self, req: DictKeyRequest) -> bool:
        self._refuse_if_deleted()
        return req.key_id in self.entries

    @workflow.query(name="len")
    def len_(self) -> int:
        self._refuse_if_deleted()
        return len(self.entries)

    @workflow.query
    def page(self, req: CoordPageRequest) -> DictPage:
        """Entries with seq > ``req.after`` in insertion order, up to ``max_bytes`` of keys and values."""
        self._refuse_if_deleted()
        out: list[DictEntry] = []
        used = 0
        for entry in self.entries.values():  # insertion order is seq order (kept through continue-as-new)
            if entry.seq <= req.after:
                continue
            cost = len(entry.key) + len(entry.value) + ENTRY_OVERHEAD
            if out and used + cost > req.max_bytes:
                return DictPage(entries=out, done=False)
            out.append(entry)
            used += cost
        return DictPage(entries=out, done=True)

    @workflow.query
    def stats(self) -> CoordStats:
        return CoordStats(name=self.name, count=len(self.entries), state_bytes=self.size,
                          max_state_bytes=COORD_MAX_STATE_BYTES, runs=self.runs)
