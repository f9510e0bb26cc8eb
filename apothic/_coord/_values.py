"""How a Dict's keys and values and a Queue's items are stored in their workflow's state.

Each is pickled with cloudpickle where it is put and unpickled where it is read (a client, a
function container); the workflow holds strings it never unpickles:

- ``"<py>:<base64 pickle>"`` for a pickle under ``inline_limit`` (4 KiB, or the blob store's
  threshold when that is lower);
- ``"<py>@<JSON reference>"`` for a larger one, whose bytes are in the blob store (§6a of the
  architecture page), so that a large value costs the state about 250 bytes.

``<py>`` is the Python (major.minor) that pickled it: pickles do not cross versions.
"""

from __future__ import annotations

import asyncio
import base64
import json
import reprlib
from typing import Any

from .._control._config import BlobSettings
from .._data._blobs import blob_store, load
from .._data._serialization import PY_VERSION, CloudPickled
from ..exceptions import InvalidError

INLINE_MAX_BYTES = 4096
MAX_KEY_BYTES = 4096
MAX_QUEUE_ITEM_BYTES = 1024 * 1024

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60


def show(value: Any) -> str:
    """A short readable form of a user's value for an error message."""
    try:
        return _repr.repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails
        return f"<{type(value).__qualname__} object>"


def pickle_of(value: Any, *, what: str, fix: str) -> bytes:
    """``value`` pickled (cloudpickle, protocol 5), or an InvalidError naming it and the fix."""
    import cloudpickle

    try:
        return cloudpickle.dumps(value, protocol=5)
    except Exception as e:  # noqa: BLE001 - TypeError, PicklingError, whatever __reduce__ raises
        raise InvalidError(
            f"{what} {show(value)} (type {type(value).__qualname__}) cannot be pickled: {type(e).__name__}: {e}. "
            f"Fix: {fix}"
        ) from None


def inline_limit(blobs: BlobSettings) -> int:
    return min(INLINE_MAX_BYTES, blobs.threshold_bytes)


def inline(raw: bytes) -> str:
    return f"{PY_VERSION}:{base64.b64encode(raw).decode('ascii')}"


async def pack(raw: bytes, blobs: BlobSettings, *, what: str) -> str:
    """The stored form of a pickle: inline when small, else a reference to the blob store."""
    if len(raw) < inline_limit(blobs):
        return inline(raw)
    store = blob_store(blobs)
    try:
        ref = await store.put(raw)
    except Exception as e:
        raise InvalidError(
            f"{what} ({len(raw) / 1e6:.2f} MB pickled) could not be written to the blob store {store.url}: "
            f"{type(e).__name__}: {e}. Fix: check APOTHIC_BLOB_STORE (an existing bucket, or a writable folder) "
            "and its credentials, or store a smaller value."
        ) from e
    return f"{PY_VERSION}@{json.dumps({'size': len(raw), **ref}, separators=(',', ':'), sort_keys=True)}"


async def pack_all(raws: list[bytes], blobs: BlobSettings, *, what: str) -> list[str]:
    if all(len(r) < inline_limit(blobs) for r in raws):
        return [inline(r) for r in raws]
    return list(await asyncio.gather(*(pack(r, blobs, what=what) for r in raws)))


def _cut(stored: str) -> int:
    return min((i for i in (stored.find(":"), stored.find("@")) if i >= 0), default=-1)


def is_reference(stored: str) -> bool:
    cut = _cut(stored)
    return cut > 0 and stored[cut] == "@"


def envelope(stored: str) -> CloudPickled:
    """The stored string as the SDK's pickle envelope (inline, or a blob reference)."""
    cut = _cut(stored)
    if cut <= 0:
        raise InvalidError(f"a stored value is malformed ({stored[:40]!r}). Fix: put it again.")
    py, mark, rest = stored[:cut], stored[cut], stored[cut + 1:]
    if mark == ":":
        return CloudPickled(data=rest, py=py, kind="value")
    ref = json.loads(rest)
    size = int(ref.pop("size", 0))
    return CloudPickled(data="", py=py, kind="value", size=size, blob=ref)


async def unpack(stored: str, blobs: BlobSettings, *, what: str) -> Any:
    """The value a stored string holds (read from the blob store when it is a reference)."""
    value = envelope(stored)
    try:
        return await load(value, blobs)
    except InvalidError as e:  # another Python version, an unreadable blob
        raise InvalidError(f"{what}: {e}") from None
    except Exception as e:
        raise InvalidError(
            f"{what} cannot be unpickled here: {type(e).__name__}: {e}. Fix: make the module that defines it "
            "importable in this process (for a function: install it in its image), in the version that stored it."
        ) from e


async def unpack_all(stored: list[str], blobs: BlobSettings, *, what: str) -> list[Any]:
    if not any(is_reference(s) for s in stored):
        return [await unpack(s, blobs, what=what) for s in stored]
    return list(await asyncio.gather(*(unpack(s, blobs, what=what) for s in stored)))
