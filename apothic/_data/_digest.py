"""A stable digest of a function's code, the same however its file was loaded.

An app file run as a script defines its functions in ``__main__``; ``apothic deploy app.py``
loads the same file as the module ``app``. cloudpickle's bytes differ between the two (the
module name is inside) and between any two processes when the file defines a class (each class
pickled by value carries a random tracking id). The version of an app is chosen by the digest
of its code, so both would make a new version of unchanged code and cold fleets.

:func:`code_digest` pickles once more, for hashing only, with those differences taken out:
``__main__`` is named after its file, empty package markers are dropped, and class tracking ids
are derived from the class's module and qualified name. The pickle that is shipped is the
ordinary one (its tracking ids keep their meaning when unpickled).
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path
from typing import Any

import cloudpickle


def canonical_module(name: str) -> str:
    """The module name of user code, with ``__main__`` named after its file (``app.py`` → ``app``)."""
    if name != "__main__":
        return name
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return sys.intern(Path(path).stem) if path else name


class _CanonicalPickler(cloudpickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        rv = super().reducer_override(obj)
        if not isinstance(rv, tuple) or len(rv) < 3:
            return rv
        args = list(rv[1]) if isinstance(rv[1], tuple) else rv[1]
        if isinstance(obj, type) and isinstance(args, list) and len(args) >= 5 and isinstance(args[4], str):
            module = canonical_module(getattr(obj, "__module__", "") or "")
            args[4] = hashlib.sha256(f"{module}.{obj.__qualname__}".encode()).hexdigest()[:32]
        for part in ([args] if isinstance(args, list) else []) + [rv[2]]:
            _canonicalise(part)
        return (rv[0], tuple(args) if isinstance(args, list) else args, *rv[2:])


def _canonicalise(value: Any, depth: int = 0) -> None:
    """Rename ``__main__`` in module markers of reduce arguments and state, in place."""
    if depth > 2:
        return
    if isinstance(value, dict):
        for key in ("__module__", "__name__"):
            if isinstance(value.get(key), str):
                # One interned object per name, so that pickle's memo is the same both ways.
                value[key] = sys.intern(canonical_module(value[key]))
        if "__package__" in value and not value["__package__"]:
            del value["__package__"]
        for v in value.values():
            if isinstance(v, dict | list | tuple):
                _canonicalise(v, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            _canonicalise(v, depth + 1)


def code_digest(obj: Any, fallback: str) -> str:
    """The hex sha256 of ``obj``'s code, stable across processes and ways of loading its file.

    ``fallback`` (the ordinary pickle's hash) is returned if the canonical pickle fails: the
    worst case is then a new version of unchanged code, never a wrong one.
    """
    buf = io.BytesIO()
    try:
        _CanonicalPickler(buf, protocol=5).dump(obj)
    except Exception:  # noqa: BLE001 - hashing must never fail a deploy
        return fallback
    return hashlib.sha256(buf.getvalue()).hexdigest()
