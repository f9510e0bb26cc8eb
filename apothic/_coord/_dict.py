"""``apothic.Dict``: a durable dictionary shared by clients and functions (after ``modal.Dict``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, ClassVar

from .._contracts import (
    COORD_MAX_STATE_BYTES,
    DICT_WORKFLOW,
    CoordPageRequest,
    DictEntry,
    DictItem,
    DictKeyRequest,
    DictLookup,
    DictPage,
    DictPutRequest,
    DictState,
    dict_workflow_id,
)
from .._control._connection import ControlPlaneClient
from .._control._loop import synced, synced_iter
from ..exceptions import InvalidError
from ._keys import canonical, key_id
from ._object import CoordObject, Manager, Refused, unexpected
from ._values import MAX_KEY_BYTES, inline, pack_all, pickle_of, show, unpack, unpack_all

_MISSING: Any = object()
KEY_FIX = "use a key of a plain type (str, int, float, bytes, or a tuple of them), e.g. str(key) or an id"
VALUE_FIX = ("store plain data (numbers, strings, lists, dicts, dataclasses, arrays), or objects whose state "
             "pickles (close files, connections and locks first)")
# JSON around one entry in the state (its key id, field names, quotes, the seq): see workflows/_dict.py.
_ENTRY_BYTES = 32 + 48


class Dict(CoordObject):
    """A dictionary held by the control plane, usable from clients and from functions.

    ``from_name(name, create_if_missing=True)`` refers to a named one, ``ephemeral()`` makes
    one for a ``with`` block. Every method blocks and has an ``.aio`` twin
    (``await d.get.aio(k)``, or ``await d.aio.get(k)``); ``d[k]``, ``d[k] = v``, ``del d[k]``,
    ``k in d`` and ``len(d)`` are blocking forms. Keys and values are pickled with cloudpickle; keys of plain types
    (str, int, float, bytes, tuples of them) compare by value, others by their pickle.

    Stored in one workflow ``apothic-dict:<name>`` on the control task queue: writes are
    updates, reads queries. Limits: the whole Dict (keys, inline values, references) fits in
    about 1.5 MB of state; a key pickles to at most 4 KiB; values from 4 KiB up live in the
    blob store and cost the state about 250 bytes each. Durable across restarts of the
    control worker and of the Temporal server.
    """

    KIND: ClassVar[str] = "Dict"
    WORKFLOW: ClassVar[str] = DICT_WORKFLOW
    objects: ClassVar[Manager]

    @staticmethod
    def _id_for(name: str) -> str:
        return dict_workflow_id(name)

    def _state(self) -> DictState:
        return DictState(name=self.name or self.workflow_id, lease_s=self._lease_s)

    @staticmethod
    def delete(name: str, *, allow_missing: bool = False, client: ControlPlaneClient | None = None) -> None:
        """Delete the named Dict and its contents (``await Dict.objects.delete.aio(name)`` awaits).

        Raises:
            NotFoundError: no such Dict (unless ``allow_missing``).
        """
        Dict.objects.delete(name, allow_missing=allow_missing, client=client)

    # --- keys and values ---

    def _id(self, key: Any, where: str) -> str:
        if canonical(key) is not None:
            return key_id(key)
        return key_id(key, pickle_of(key, what=f"{where}: the key", fix=KEY_FIX))

    async def _items(self, pairs: Iterable[tuple[Any, Any]], where: str) -> list[DictItem]:
        keys: list[tuple[str, bytes]] = []
        raws: list[bytes] = []
        for key, value in pairs:
            raw_key = pickle_of(key, what=f"{where}: the key", fix=KEY_FIX)
            if len(raw_key) > MAX_KEY_BYTES:
                raise InvalidError(
                    f"{where}: the key {show(key)} pickles to {len(raw_key):,} bytes, over the {MAX_KEY_BYTES:,}-byte "
                    "limit of a Dict key. Fix: use a shorter key, e.g. hashlib.sha256(data).hexdigest()."
                )
            keys.append((key_id(key, raw_key), raw_key))
            raws.append(pickle_of(value, what=f"{where}: the value for key {show(key)}", fix=VALUE_FIX))
        blobs = self._settings.blobs
        values = await pack_all(raws, blobs, what=f"{where}: a value")
        items = [DictItem(key_id=k, key=inline(raw_key), value=v) for (k, raw_key), v in zip(keys, values)]
        need = sum(len(i.key) + len(i.value) + _ENTRY_BYTES for i in items)
        if need > COORD_MAX_STATE_BYTES:
            raise InvalidError(
                f"{where}: these {len(items):,} entries need {need:,} bytes of state, more than a whole Dict holds "
                f"({COORD_MAX_STATE_BYTES:,}). Fix: write fewer entries at a time, or spread them over several Dicts."
            )
        return items

    async def _write(self, items: list[DictItem], skip_if_exists: bool) -> int:
        try:
            return int(await self._update("put", DictPutRequest(items=items, skip_if_exists=skip_if_exists), int))
        except Refused as r:
            if r.kind == "Exists":
                return 0
            if r.kind == "Full":
                raise InvalidError(
                    f"{r.message}. Fix: delete keys you no longer need (pop, clear), keep big values out of it (from "
                    "4 KiB up they are stored by reference, about 250 bytes each), or spread the data over several "
                    "Dicts."
                ) from None
            raise unexpected(self, r) from None

    async def _value(self, stored: str, key: Any) -> Any:
        return await unpack(stored, self._settings.blobs, what=f"the value for key {show(key)} in {self._label()}")

    # --- the dict API ---

    @synced
    async def get(self, key: Any, default: Any = None) -> Any:
        """The value for ``key``, or ``default`` when it is not there."""
        found: DictLookup = await self._query("get", DictKeyRequest(key_id=self._id(key, "Dict.get")), DictLookup)
        return await self._value(found.value, key) if found.found else default

    @synced
    async def contains(self, key: Any) -> bool:
        """Whether ``key`` is there (``key in d``)."""
        return bool(await self._query("contains", DictKeyRequest(key_id=self._id(key, "Dict.contains")), bool))

    @synced
    async def len(self) -> int:
        """How many keys it holds (``len(d)``)."""
        return int(await self._query("len", result_type=int))

    @synced
    async def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        """Set ``key`` to ``value``; returns False when ``skip_if_exists`` and the key was there (then nothing
        changes), else True.

        Raises:
            InvalidError: the key or the value cannot be pickled, the key is too long, or the Dict is full.
        """
        items = await self._items([(key, value)], "Dict.put")
        return await self._write(items, skip_if_exists) > 0

    @synced
    async def update(self, other: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None = None, /,
                     **kwargs: Any) -> None:
        """Set several keys in one step (all or none), like ``dict.update``."""
        pairs: list[tuple[Any, Any]] = []
        if other is not None:
            if isinstance(other, Mapping):
                pairs += list(other.items())
            else:
                pairs += [(k, v) for k, v in other]
        pairs += list(kwargs.items())
        if pairs:
            await self._write(await self._items(pairs, "Dict.update"), False)

    @synced
    async def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value; ``default`` (or KeyError) when it is not there."""
        try:
            found: DictLookup = await self._update("pop", DictKeyRequest(key_id=self._id(key, "Dict.pop")), DictLookup)
        except Refused as r:
            if r.kind != "Missing":
                raise unexpected(self, r) from None
            found = DictLookup(found=False)
        if found.found:
            return await self._value(found.value, key)
        if default is _MISSING:
            raise KeyError(key)
        return default

    @synced
    async def clear(self) -> None:
        """Remove every key."""
        await self._update("clear", result_type=int)

    async def _entries(self) -> AsyncIterator[DictEntry]:
        after = 0
        while True:
            page: DictPage = await self._query("page", CoordPageRequest(after=after), DictPage)
            for entry in page.entries:
                yield entry
            if page.done or not page.entries:
                return
            after = page.entries[-1].seq

    @synced_iter
    async def keys(self) -> AsyncIterator[Any]:
        """Its keys, in insertion order (read page by page: writes meanwhile may or may not show)."""
        async for entry in self._entries():
            yield await unpack(entry.key, self._settings.blobs, what=f"a key of {self._label()}")

    @synced_iter
    async def values(self) -> AsyncIterator[Any]:
        """Its values, in the order of their keys."""
        async for entry in self._entries():
            yield await unpack(entry.value, self._settings.blobs, what=f"a value of {self._label()}")

    @synced_iter
    async def items(self) -> AsyncIterator[tuple[Any, Any]]:
        """Its ``(key, value)`` pairs, in insertion order."""
        blobs = self._settings.blobs
        async for entry in self._entries():
            key, value = await unpack_all([entry.key, entry.value], blobs, what=f"an entry of {self._label()}")
            yield key, value

    @synced
    async def _getitem(self, key: Any) -> Any:
        value = await Dict.get.afn(self, key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __getitem__(self, key: Any) -> Any:
        return self._getitem(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: Any) -> None:
        self.pop(key)

    def __contains__(self, key: Any) -> bool:
        return self.contains(key)

    def __len__(self) -> int:
        return self.len()

    def __iter__(self) -> Iterator[Any]:
        """``for key in d``: its keys, as :meth:`keys`."""
        return iter(self.keys())


Dict.objects = Manager(Dict)
