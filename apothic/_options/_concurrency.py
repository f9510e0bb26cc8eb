"""``@concurrent(...)`` and ``@batched(...)``: marks on the user's function, checked when made.

Both go *under* ``@app.function(...)``, which reads the mark when it registers the function::

    @app.function(...)
    @apothic.concurrent(max_inputs=16)
    def process(item): ...

Their arguments are checked when the factory is called; where the mark sits, when it is
applied (above ``@app.function`` it would be ignored, so it is refused); how the mark combines
with the decorator's options, by ``@app.function`` (:func:`mark_problems`), which then puts
it in the function's spec (:func:`concurrency_spec`). The container runs a ``@concurrent``
function's inputs several at once and gathers a ``@batched`` function's inputs into lists
(``apothic/runtime``).
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from .._contracts import BatchSpec
from ..exceptions import InvalidError
from ._problems import format_problem, raise_problems, show

F = TypeVar("F", bound=Callable[..., Any])

CONCURRENT_ATTR = "__apothic_concurrent__"
BATCHED_ATTR = "__apothic_batched__"

MAX_INPUTS = 1000
MAX_BATCH_SIZE = 1000
MAX_WAIT_MS = 10 * 60 * 1000


def render(kind: str, args: dict[str, Any]) -> str:
    """``@apothic.concurrent(max_inputs=16, target_inputs=12)``: the decorator as written."""
    return f"@apothic.{kind}(" + ", ".join(f"{k}={show(v)}" for k, v in args.items() if v is not None) + ")"


def _int_problem(name: str, value: Any, low: int, high: int, example: str, high_text: str = "") -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return None
    if value is None:
        msg = "required"
    elif isinstance(value, bool) or not isinstance(value, int):
        msg = f"a {type(value).__name__} is not accepted: ints only"
    else:
        msg = "out of range"
    allowed = f"an int >= {low} and <= {high_text or high}"
    return format_problem(name, value, allowed, f"write {example}", msg)


def _order_error(kind: str, args: dict[str, Any], fn: Any) -> InvalidError:
    name = getattr(fn, "__name__", "f")
    return InvalidError(
        f"{render(kind, args)} is placed above @app.function(...) on {name!r}, where it would be ignored. "
        "Fix: put @app.function(...) on top, then the mark, then the function:\n"
        f"    @app.function(...)\n    {render(kind, args)}\n    def {name}(...): ..."
    )


def _mark(kind: str, attr: str, args: dict[str, Any], fn: Any, check: Callable[[Any], None] | None = None) -> Any:
    """Put the mark on ``fn`` after checking where it sits (and ``check(fn)``, if given)."""
    invocable = getattr(sys.modules.get("apothic._invoke._function"), "_Invocable", None)
    if invocable is not None and isinstance(fn, invocable):
        raise _order_error(kind, args, fn)
    if not callable(fn) or not hasattr(fn, "__name__"):
        raise InvalidError(f"{render(kind, args)} decorates a function, got {show(fn)}. Fix: put it on a `def`.")
    other = {CONCURRENT_ATTR: ("batched", BATCHED_ATTR), BATCHED_ATTR: ("concurrent", CONCURRENT_ATTR)}[attr]
    if getattr(fn, attr, None) is not None:
        raise InvalidError(
            f"{render(kind, args)}: {fn.__name__!r} already has @apothic.{kind}(...). Fix: apply it once."
        )
    if getattr(fn, other[1], None) is not None:
        raise InvalidError(
            f"{render(kind, args)} and @apothic.{other[0]}(...) are both on {fn.__name__!r}: a function takes "
            "single inputs several at once (@concurrent) or lists of inputs (@batched), not both. "
            "Fix: keep one of the two."
        )
    if check is not None:
        check(fn)
    try:
        setattr(fn, attr, dict(args))
    except (AttributeError, TypeError):
        raise InvalidError(
            f"{render(kind, args)} cannot mark {show(fn)} (it takes no attributes). Fix: put it on a `def`."
        ) from None
    return fn


def concurrent(*, max_inputs: int, target_inputs: int | None = None) -> Callable[[F], F]:
    """Mark a function to take several inputs at once in one container.

    Args:
        max_inputs: the most inputs one container runs at once, an int from 1 to 1000.
        target_inputs: the inputs per container the autoscaler aims for, an int from 1 to
            ``max_inputs`` (default: ``max_inputs``).

    Raises:
        InvalidError: a bad argument (checked here), the mark above ``@app.function`` or
            together with ``@batched``; ``@app.function`` refuses it with
            ``concurrent_requests=`` as well (the same limit, given twice).
    """
    example = "max_inputs=16"
    where = "@apothic.concurrent(...)"
    problems = [p for p in [_int_problem("max_inputs", max_inputs, 1, MAX_INPUTS, example)] if p]
    if target_inputs is not None:
        high, text = (MAX_INPUTS, "max_inputs") if problems else (max_inputs, f"max_inputs ({max_inputs})")
        fix = "target_inputs=12 (at most max_inputs), or leave it None for max_inputs"
        problems += [p for p in [_int_problem("target_inputs", target_inputs, 1, high, fix, text)] if p]
    raise_problems(where, problems)
    args = {"max_inputs": max_inputs, "target_inputs": target_inputs}
    return lambda fn: _mark("concurrent", CONCURRENT_ATTR, args, fn)


def _one_required_parameter(fn: Any) -> str | None:
    """Why ``fn`` cannot take batches (``None`` when it takes exactly one required parameter)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return "its signature cannot be read"
    required = [p for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if len(required) != 1 or required[0].kind is inspect.Parameter.KEYWORD_ONLY:
        names = ", ".join(p.name for p in required) or "none"
        return f"it has {len(required)} required parameter(s) ({names})"
    return None


# Annotations that say "a list" (also as strings, under ``from __future__ import annotations``).
_LIST_TYPES = ("list", "List", "Sequence", "MutableSequence")


def _is_list_annotation(annotation: Any) -> bool:
    """A list, a sequence, or one of them or None (``list[int] | None``, ``Optional[list]``)."""
    if annotation is inspect.Parameter.empty or annotation is list:
        return True
    if isinstance(annotation, str):
        text = annotation.strip().strip("'\"")
        if text.startswith(("Optional[", "typing.Optional[")) and text.endswith("]"):
            return _is_list_annotation(text.split("[", 1)[1][:-1])
        arms = [a.strip() for a in _split_union(text)]
        if len(arms) > 1:
            return all(a == "None" or _is_list_annotation(a) for a in arms) and any(a != "None" for a in arms)
        return text.split("[", 1)[0].strip().rsplit(".", 1)[-1] in _LIST_TYPES
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        arms = typing.get_args(annotation)
        return all(a is type(None) or _is_list_annotation(a) for a in arms) and any(a is not type(None) for a in arms)
    target = origin if origin is not None else annotation
    name = getattr(target, "__qualname__", None) or getattr(target, "_name", None) or ""
    return name in _LIST_TYPES


def _split_union(text: str) -> list[str]:
    """``list[int] | None`` -> ``["list[int]", "None"]`` (``|`` outside brackets only)."""
    arms, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "|" and depth == 0:
            arms.append(text[start:i])
            start = i + 1
    arms.append(text[start:])
    return arms


def _batch_signature_problem(fn: Any) -> str | None:
    """Why ``fn``'s parameters cannot each receive a list (None: they can)."""
    params = list(inspect.signature(fn).parameters.values())
    variadic = [p for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if variadic:
        shown = ", ".join(("*" if p.kind is p.VAR_POSITIONAL else "**") + p.name for p in variadic)
        return f"it takes {shown}"
    for p in params:
        if not _is_list_annotation(p.annotation):
            shown = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", p.annotation)
            return (
                f"its parameter {p.name!r} is annotated {shown!s} (allowed: list, list[...], Sequence[...], "
                "one of them | None, or no annotation)"
            )
    return None


def batched(*, max_batch_size: int, wait_ms: int) -> Callable[[F], F]:
    """Mark a function to receive lists of inputs gathered by the runtime.

    The function takes exactly one required parameter, the list of inputs, and returns a list of
    as many results.

    Args:
        max_batch_size: the most inputs in one list, an int from 1 to 1000.
        wait_ms: how long to wait for more inputs before calling with a shorter list, an int
            of milliseconds from 0 to 600000 (10 minutes).

    Raises:
        InvalidError: a bad argument (checked here); a function that does not take exactly one
            required parameter, has ``*args``/``**kwargs``, a parameter annotated other than a
            list, or yields; the mark above ``@app.function`` or together with ``@concurrent``;
            ``@app.function`` refuses it with ``concurrent_requests=`` as well.
    """
    where = "@apothic.batched(...)"
    problems = [
        p for p in (
            _int_problem("max_batch_size", max_batch_size, 1, MAX_BATCH_SIZE, "max_batch_size=8"),
            _int_problem("wait_ms", wait_ms, 0, MAX_WAIT_MS, "wait_ms=50 (milliseconds)"),
        ) if p
    ]
    raise_problems(where, problems)
    args = {"max_batch_size": max_batch_size, "wait_ms": wait_ms}

    def one_list_parameter(fn: Any) -> None:
        why = _one_required_parameter(fn)
        if why is not None:
            raise InvalidError(
                f"{render('batched', args)} on {fn.__name__!r}: a batched function takes exactly one required "
                f"parameter, the list of inputs, but {why}. Fix: write `def {fn.__name__}(items: list) -> list`."
            )
        why = _batch_signature_problem(fn)
        if why is not None:
            raise InvalidError(
                f"{render('batched', args)} on {fn.__name__!r}: a batched function is called with one list per "
                f"parameter (one value per input), but {why}. Fix: write `def {fn.__name__}(items: list) -> list` (other parameters "
                "with defaults, each annotated list or not at all)."
            )
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise InvalidError(
                f"{render('batched', args)} on {fn.__name__!r}: a batched function returns a list with one result "
                "per input; a generator (a function with `yield`) cannot. Fix: build the list and `return` it."
            )

    def mark(fn: F) -> F:
        return _mark("batched", BATCHED_ATTR, args, fn, one_list_parameter)  # type: ignore[no-any-return]

    return mark


def mark_problems(fn: Any, raw: dict[str, Any]) -> tuple[list[str], list[str]]:
    """At ``@app.function``: (invalid combinations, marks not supported yet: none now)."""
    problems: list[str] = []
    conc = getattr(fn, CONCURRENT_ATTR, None)
    batch = getattr(fn, BATCHED_ATTR, None)
    if isinstance(conc, dict) and "concurrent_requests" in raw:
        problems.append(
            format_problem(
                "concurrent_requests", raw["concurrent_requests"], f"not set together with {render('concurrent', conc)}",
                "give the inputs per container once: drop concurrent_requests=... or the @apothic.concurrent mark",
                "two settings for the same limit",
            )
        )
    if isinstance(batch, dict) and "concurrent_requests" in raw:
        problems.append(
            format_problem(
                "concurrent_requests", raw["concurrent_requests"], f"not set together with {render('batched', batch)}",
                "drop concurrent_requests=...: a batched function's container takes max_batch_size inputs at once "
                "and runs one batch at a time",
                "a batched function runs its batches one at a time",
            )
        )
    return problems, []


def concurrency_spec(fn: Any, concurrent_requests: int) -> dict[str, Any]:
    """The ``FunctionSpec`` fields the marks set: ``concurrent_requests`` (the most inputs one
    container takes at once: ``max_inputs``, a batched function's ``max_batch_size``, else the
    option), ``target_inputs`` and ``batch``."""
    conc = getattr(fn, CONCURRENT_ATTR, None)
    batch = getattr(fn, BATCHED_ATTR, None)
    if isinstance(conc, dict):
        return {"concurrent_requests": conc["max_inputs"], "target_inputs": conc.get("target_inputs"), "batch": None}
    if isinstance(batch, dict):
        return {
            "concurrent_requests": batch["max_batch_size"],
            "target_inputs": None,
            "batch": BatchSpec(max_batch_size=batch["max_batch_size"], wait_ms=batch["wait_ms"]),
        }
    return {"concurrent_requests": concurrent_requests, "target_inputs": None, "batch": None}
