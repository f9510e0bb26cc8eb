"""Whether a value fits a type annotation, as far as it can be told at run time.

Used on the examples of a generated function: at decoration (an expected result against the
stub's return annotation) and in the candidate's container (each result against it). What
cannot be checked at run time (a ``TypeVar``, a ``Protocol`` that is not runtime-checkable, a
string annotation that does not resolve, ``Callable`` signatures) counts as fitting; containers
are checked on their first ``ITEMS_CHECKED`` items.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

ITEMS_CHECKED = 200
_MAX_DEPTH = 6


def return_annotation(fn: Any) -> Any:
    """The resolved return annotation of ``fn``, or ``inspect.Parameter.empty`` (none, or one
    that does not resolve)."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # noqa: BLE001 - a name the annotation uses is not known here
        raw = getattr(fn, "__annotations__", {}).get("return", inspect.Parameter.empty)
        return inspect.Parameter.empty if isinstance(raw, str) else raw
    return hints.get("return", inspect.Parameter.empty)


def describe(tp: Any) -> str:
    """The annotation as it is written (``str``, ``list[int]``, ``int | None``)."""
    if tp is type(None) or tp is None:
        return "None"
    if isinstance(tp, type) and not get_args(tp):
        return tp.__qualname__ if tp.__module__ == "builtins" else f"{tp.__module__}.{tp.__qualname__}"
    return repr(tp).replace("typing.", "")


def fits(value: Any, tp: Any, depth: int = 0) -> bool:
    """Whether ``value`` is of type ``tp`` (see the module's notes for what is not checked)."""
    if depth > _MAX_DEPTH or tp is Any or tp is inspect.Parameter.empty or isinstance(tp, (str, typing.TypeVar)):
        return True
    if tp is None or tp is type(None):
        return value is None
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is typing.Annotated:
        return fits(value, args[0], depth + 1)
    if origin is Union or origin is types.UnionType:
        return any(fits(value, a, depth + 1) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if tp is float:  # PEP 484: an int is acceptable where a float is expected
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is complex:
        return isinstance(value, (int, float, complex)) and not isinstance(value, bool)
    if origin is None:
        return _instance(value, tp)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(fits(v, args[0], depth + 1) for v in value[:ITEMS_CHECKED])
        if args == ((),):
            return value == ()
        return not args or (len(value) == len(args) and all(fits(v, a, depth + 1) for v, a in zip(value, args)))
    if origin is type:
        return isinstance(value, type) and (not args or not isinstance(args[0], type) or issubclass(value, args[0]))
    if isinstance(origin, type) and issubclass(origin, collections.abc.Callable):  # type: ignore[arg-type]
        return callable(value)
    if not _instance(value, origin):
        return False
    if isinstance(value, collections.abc.Mapping) and len(args) == 2:
        items = list(value.items())[:ITEMS_CHECKED]
        return all(fits(k, args[0], depth + 1) and fits(v, args[1], depth + 1) for k, v in items)
    if isinstance(value, (list, tuple, set, frozenset, collections.deque)) and len(args) == 1:
        return all(fits(v, args[0], depth + 1) for v in list(value)[:ITEMS_CHECKED])
    return True


def _instance(value: Any, tp: Any) -> bool:
    if not isinstance(tp, type):
        return True  # NewType, a special form: not checked
    try:
        return isinstance(value, tp)
    except TypeError:  # a Protocol that is not runtime-checkable
        return True
