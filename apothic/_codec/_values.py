"""Unpickling a user's value where nothing of theirs may run, and rendering it as JSON.

The codec server loads a pickle only with :class:`GuardedUnpickler`, which resolves a global
(a class, a function) only from a module already imported, the standard library or an
installed package: it never imports the user's own modules (that would run their top-level
code), and a value whose type lives in one of them is reported as not loadable here. A value
is then rendered without calling any of its own methods: containers and plain data as JSON,
objects of the user's types by their fields (read from the instance's ``__dict__`` or slots,
never through ``__repr__``, properties or ``__getattr__``), objects of library types by a
bounded ``repr``.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import functools
import importlib.util
import io
import math
import os
import pathlib
import pickle
import sys
import sysconfig
import uuid
from typing import Any

# Bounds of one rendering (a value of a million items shows its first ones, marked).
MAX_ITEMS = 100
MAX_STRING = 2000
MAX_REPR = 1000
MAX_DEPTH = 12
MAX_NODES = 5000
# JSON numbers beyond this lose precision in a browser: shown as text.
MAX_SAFE_INT = 2**53


class NotLoadable(Exception):
    """The pickle refers to something the codec server does not load (said in the rendering)."""


def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots |= {p for p in sys.path if p and os.path.basename(p) in ("site-packages", "dist-packages")}
    return tuple(sorted({os.path.join(os.path.realpath(p), "") for p in roots}))


_LIBRARY_ROOTS = _library_roots()


def _is_library_file(path: str | None) -> bool:
    return bool(path) and os.path.realpath(str(path)).startswith(_LIBRARY_ROOTS)


@functools.lru_cache(maxsize=1024)
def is_library_module(module: str) -> bool:
    """Whether ``module`` is Python's own, an installed package's or Apothic's (not the user's code)."""
    top = module.partition(".")[0]
    if module == "__main__" or not top:
        return False
    if top == "apothic" or top in sys.builtin_module_names or top in sys.stdlib_module_names:
        return True
    loaded = sys.modules.get(module) or sys.modules.get(top)
    if loaded is not None:
        path = getattr(loaded, "__file__", None)
        return path is None or _is_library_file(path)
    try:
        spec = importlib.util.find_spec(top)  # finds, imports nothing
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    origin = spec.origin if spec.origin not in (None, "namespace") else next(iter(spec.submodule_search_locations or []), None)
    return _is_library_file(origin)


class GuardedUnpickler(pickle.Unpickler):
    """An unpickler that imports no module of the user's (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        if not is_library_module(module):
            raise NotLoadable(
                f"its type {module}.{name} is defined in the user's module {module!r}, which the codec "
                "server does not import (that would run the module's code); the client and the function's "
                "container load it"
            )
        return super().find_class(module, name)


def guarded_loads(raw: bytes) -> Any:
    return GuardedUnpickler(io.BytesIO(raw)).load()


def type_name(value: Any) -> str:
    cls = type(value)
    module = getattr(cls, "__module__", "") or ""
    qualname = getattr(cls, "__qualname__", cls.__name__)
    return qualname if module == "builtins" else f"{module}.{qualname}"


def _is_user_type(cls: type) -> bool:
    return not is_library_module(getattr(cls, "__module__", "") or "")


class _Budget:
    def __init__(self) -> None:
        self.nodes = 0
        self.cut = False


def to_json(value: Any) -> tuple[Any, bool]:
    """``value`` as JSON-able data, and whether parts were left out to keep it bounded."""
    budget = _Budget()
    return _render(value, 0, budget), budget.cut


def _text(s: str, limit: int = MAX_STRING) -> str:
    return s if len(s) <= limit else f"{s[:limit]}... [{len(s) - limit} more characters]"


def _bounded_repr(value: Any) -> str:
    try:
        return _text(repr(value), MAX_REPR)
    except Exception as e:  # noqa: BLE001 - a library's repr that fails still gets a line
        return f"<{type_name(value)}: repr failed: {type(e).__name__}>"


_PLAIN_KEYS = (str, int, float, bool, type(None))


def _render(value: Any, depth: int, budget: _Budget) -> Any:  # one case per kind of value
    budget.nodes += 1
    if budget.nodes > MAX_NODES or depth > MAX_DEPTH:
        budget.cut = True
        return "..."
    cls = type(value)
    if value is None or cls is bool:
        return value
    if cls is int:
        return value if abs(value) < MAX_SAFE_INT else str(value)
    if cls is float:
        return value if math.isfinite(value) else str(value)
    if cls is str:
        if len(value) > MAX_STRING:
            budget.cut = True
        return _text(value)
    if cls in (bytes, bytearray):
        return {"$type": cls.__name__, "size": len(value), "start": _text(repr(bytes(value[:64])), 200)}
    if cls in (list, tuple):
        return _items(list(value), depth, budget)
    if cls is dict:
        return _render_mapping(value, depth, budget)
    if issubclass(cls, enum.Enum):
        return f"{cls.__name__}.{object.__getattribute__(value, '_name_')}"
    if issubclass(cls, BaseException):
        return _render_exception(value, depth, budget)
    if cls in (datetime.datetime, datetime.date, datetime.time):
        return value.isoformat()
    if cls in (datetime.timedelta, decimal.Decimal, uuid.UUID, complex) or issubclass(cls, pathlib.PurePath):
        return {"$type": type_name(value), "value": str(value)}
    if _is_user_type(cls):
        return _render_object(value, depth, budget)
    # Containers of the standard library (OrderedDict, deque, sets, ...): item by item, since
    # their repr would run the repr of what they hold.
    held = _held_items(value)
    if held is not None:
        return {"$type": type_name(value), "items": held(depth, budget)}
    # Another library's type (numpy, pandas, ...): its own repr, bounded.
    return {"$type": type_name(value), "repr": _bounded_repr(value)}


def _items(items: list[Any], depth: int, budget: _Budget) -> list[Any]:
    out = [_render(v, depth + 1, budget) for v in items[:MAX_ITEMS]]
    if len(items) > MAX_ITEMS:
        budget.cut = True
        out.append(f"... {len(items) - MAX_ITEMS} more items")
    return out


def _held_items(value: Any) -> Any:
    """For a dict, list, tuple, set or deque (or a subclass): a renderer of its items that
    iterates with the base type's own methods; None for anything else."""
    cls = type(value)
    if issubclass(cls, dict):
        return lambda depth, budget: _render_mapping(dict(dict.items(value)), depth, budget)
    for base in (list, tuple, set, frozenset, collections.deque):
        if issubclass(cls, base):
            return lambda depth, budget: _items(list(base.__iter__(value)), depth, budget)
    return None


def _render_mapping(value: dict, depth: int, budget: _Budget) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, (k, v) in enumerate(dict.items(value)):
        if i >= MAX_ITEMS:
            budget.cut = True
            out["..."] = f"{len(value) - MAX_ITEMS} more keys"
            break
        key = k if type(k) is str else _key_text(k)
        if key in out:  # two keys shown alike (objects of one type): both kept
            key = f"{key} #{i}"
        out[key] = _render(v, depth + 1, budget)
    return out


def _key_text(k: Any) -> str:
    if type(k) in _PLAIN_KEYS:
        return str(k)
    if type(k) is tuple and all(type(x) in _PLAIN_KEYS for x in k):
        return _text(repr(k), 200)
    return f"<{type_name(k)}>"


def _instance_fields(value: Any) -> dict[str, Any] | None:
    """An object's own fields, read without running its code (``__dict__`` and slots)."""
    fields: dict[str, Any] = {}
    try:
        own = object.__getattribute__(value, "__dict__")
    except AttributeError:
        own = None
    if type(own) is dict:
        fields.update(dict.items(own))
    for klass in type(value).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for slot in (slots,) if type(slots) is str else slots if type(slots) in (tuple, list) else ():
            if slot in ("__dict__", "__weakref__") or slot in fields:
                continue
            try:
                fields[slot] = object.__getattribute__(value, slot)
            except AttributeError:
                continue
    return fields if own is not None or fields else None


def _render_object(value: Any, depth: int, budget: _Budget) -> dict[str, Any]:
    """An object of the user's type: its items (a subclass of a container) and its fields."""
    out: dict[str, Any] = {"$type": type_name(value)}
    held = _held_items(value)
    if held is not None:
        out["items"] = held(depth, budget)
    fields = _instance_fields(value)
    if fields and dataclasses.is_dataclass(value):  # the declared fields first, in order
        names = [f.name for f in dataclasses.fields(value) if f.name in fields]
        fields = {n: fields[n] for n in names} | {k: v for k, v in fields.items() if k not in names}
    if fields:
        out["fields"] = _render_mapping(fields, depth, budget)
    elif held is None:
        out["note"] = "no fields to show (the codec server does not run the object's own repr)"
    return out


def _render_exception(e: BaseException, depth: int, budget: _Budget) -> dict[str, Any]:
    out: dict[str, Any] = {"$type": type_name(e)}
    try:
        out["message"] = _text(BaseException.__str__(e))
    except Exception:  # noqa: BLE001 - an argument whose str fails
        out["message"] = ""
    args = BaseException.args.__get__(e)
    if args and not (len(args) == 1 and type(args[0]) is str and args[0] == out["message"]):
        out["args"] = _items(list(args), depth, budget)
    fields = _instance_fields(e) or {}
    notes = fields.pop("__notes__", None)
    fields = {k: v for k, v in fields.items() if not k.startswith("__")}
    if fields:
        out["fields"] = _render_mapping(fields, depth, budget)
    if type(notes) is list and notes:
        out["notes"] = _items(notes, depth, budget)
    return out
