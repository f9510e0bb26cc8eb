"""Which keys of a Dict are the same key: a key id from the key's canonical form.

The workflow that holds a Dict never unpickles, so keys are compared by bytes the client
computes: the sha256 (first 32 hex digits) of a canonical form.

- ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str`` and ``bytes`` (and their
  subclasses, such as ``IntEnum`` or ``StrEnum`` members), and tuples and frozensets of them:
  their value, the same in every process and on every Python version. Equal numbers are one
  key, as in a Python dict (``1``, ``1.0`` and ``True``).
- Anything else: its pickle, as Modal does. Two equal keys of other types are the same key
  only if they pickle to the same bytes; that holds for a dataclass or an enum member of an
  installed module, not for a class defined in a script (pickled by value, with its code).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

KEY_ID_HEX = 32


def canonical(key: Any) -> bytes | None:
    """The canonical form of a key of a plain type; None for a key of any other type."""
    out = bytearray()
    return bytes(out) if _write(key, out) else None


def key_id(key: Any, pickle: bytes | None = None) -> str:
    """The id of ``key``: from its canonical form, else from its pickle (``pickle``, or made here)."""
    form = canonical(key)
    if form is None:
        if pickle is None:
            import cloudpickle

            pickle = cloudpickle.dumps(key, protocol=5)
        form = b"p" + pickle
    return hashlib.sha256(form).hexdigest()[:KEY_ID_HEX]


def _number(x: float) -> bytes | None:
    """The form of a real number; integral values share the form of the int."""
    if math.isnan(x):
        return b"fnan"
    if math.isinf(x):
        return b"finf" if x > 0 else b"f-inf"
    if x.is_integer():
        return _int(int(x))
    return b"f" + float.hex(x).encode()


def _int(i: int) -> bytes:
    return b"i" + format(i, "x").encode()  # hex: no digit limit for huge ints


def _atom(key: Any) -> bytes | None:
    if key is None:
        return b"N"
    if isinstance(key, (bool, int)):
        return _int(int(key))
    if isinstance(key, float):
        return _number(float(key))
    if isinstance(key, complex):
        if key.imag == 0:
            return _number(key.real)
        return b"c" + float.hex(key.real).encode() + b"," + float.hex(key.imag).encode()
    if isinstance(key, str):
        return b"s" + str.__str__(key).encode("utf-8", "surrogatepass")  # the value, also of a str subclass
    if isinstance(key, (bytes, bytearray, memoryview)):
        return b"b" + bytes(key)
    return None


def _write(key: Any, out: bytearray) -> bool:
    """Append ``key``'s canonical form (length-prefixed parts); False if it has none."""
    atom = _atom(key)
    if atom is not None:
        out += str(len(atom)).encode() + b":" + atom
        return True
    if isinstance(key, tuple):
        out += b"t" + str(len(key)).encode() + b"("
        for k in key:
            if not _write(k, out):
                return False
        out += b")"
        return True
    if isinstance(key, frozenset):
        parts = []
        for k in key:
            part = bytearray()
            if not _write(k, part):
                return False
            parts.append(bytes(part))
        out += b"z" + str(len(parts)).encode() + b"(" + b"".join(sorted(parts)) + b")"
        return True
    return False
