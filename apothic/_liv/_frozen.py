"""A generated function as it is shipped, and how it becomes a function: in its container only.

The deploy ships a ``LivCode`` (the stub's own deploy pickle and the generated source text). Its
pickle names :func:`materialize`, so unpickling it, which only the function's container does
(``_data/_code.py:load_code`` in the runtime), compiles the source and runs it into a namespace
that has the stub's globals and annotation types: the client and the control worker handle the
source as text and never compile it. The source is registered in :mod:`linecache` under
``<apothic-liv app.function>``, so tracebacks show its lines.

Code that fails to load (an import missing from the image, an error at its top level) does not
stop the container: the function raises ``LivLoadError`` (with the cause and its traceback) at
each call, which is the input's failure. A candidate (``check=True``, the examples' jobs of
``self_debug``) is wrapped by a checker that runs one example per call and raises
``LivExampleFailed`` when the result is not of the annotated type or not the expected one.
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import inspect
import pickle
from collections.abc import Callable
from typing import Any

from .._data._code import UserCode, register_sources
from .._data._serialization import CloudPickled

_MAX_REPR = 600


class LivLoadError(RuntimeError):
    """The generated code of a function could not be loaded in its container."""


class LivExampleFailed(AssertionError):
    """An example's result is not of the stub's annotated type, or not the expected result."""


@dataclasses.dataclass(frozen=True)
class LivCode:
    """What a generated function's deploy pickle holds (see the module's notes)."""

    stub: bytes  # the stub's deploy pickle (a UserCode), opaque until the container loads it
    source: str
    function: str
    filename: str
    check: bool = False

    def __reduce__(self) -> Any:
        return materialize, (dataclasses.asdict(self),)

    def pickled(self, qualname: str) -> CloudPickled:
        """The deploy's ``CloudPickled`` (kind ``code``): a ``UserCode`` holding this."""
        return CloudPickled.from_bytes(pickle.dumps(UserCode(function=pickle.dumps(self, protocol=5)), protocol=5),
                                       kind="code", qualname=qualname)


def filename_for(app: str, function: str) -> str:
    return f"<apothic-liv {app}.{function}>"


def materialize(state: dict[str, Any]) -> Callable[..., Any]:
    """The function of a ``LivCode`` (run when its pickle loads, in the function's container)."""
    value = pickle.loads(state["stub"])
    stub = value.load() if isinstance(value, UserCode) else value
    fn = _compile(stub, state["source"], state["function"], state["filename"])
    return _checker(stub, fn) if state.get("check") else fn


def _namespace(stub: Callable[..., Any], filename: str) -> dict[str, Any]:
    """The stub's globals (what cloudpickle shipped of them), the types its annotations name,
    and the names a module has."""
    ns: dict[str, Any] = {"__builtins__": builtins, "__name__": stub.__module__, "__file__": filename}
    for key, value in getattr(stub, "__globals__", {}).items():
        if not key.startswith("__"):
            ns.setdefault(key, value)
    for ann in getattr(stub, "__annotations__", {}).values():
        name = getattr(ann, "__name__", None)
        if isinstance(ann, type) and name and ann.__module__ != "builtins":
            ns.setdefault(name, ann)
    return ns


def _compile(stub: Callable[..., Any], source: str, function: str, filename: str) -> Callable[..., Any]:
    register_sources({filename: source})
    try:
        ns = _namespace(stub, filename)
        exec(compile(source, filename, "exec"), ns)  # noqa: S102 - the generated code, in its own container
        fn = ns[function]
        if not callable(fn):
            raise TypeError(f"{function} is a {type(fn).__name__}, not a function")
    except Exception as e:  # noqa: BLE001 - becomes each call's failure
        return _failing(stub, function, e)
    try:
        fn.__qualname__ = stub.__qualname__
        fn.__module__ = stub.__module__
        if not fn.__doc__:
            fn.__doc__ = stub.__doc__
    except (AttributeError, TypeError):
        pass
    return fn


def _failing(stub: Callable[..., Any], function: str, error: Exception) -> Callable[..., Any]:
    message = f"the generated code of {function} failed to load: {type(error).__name__}: {error}"

    def fail() -> None:
        raise LivLoadError(message) from error

    if inspect.iscoroutinefunction(stub):
        @functools.wraps(stub)
        async def failing_async(*args: Any, **kwargs: Any) -> Any:
            fail()

        return failing_async

    @functools.wraps(stub)
    def failing(*args: Any, **kwargs: Any) -> Any:
        fail()

    return failing


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001
        return f"<{type(value).__name__} object>"
    return text if len(text) <= _MAX_REPR else text[:_MAX_REPR] + f"... ({len(text)} characters)"


def verify(stub: Callable[..., Any], index: int, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any,
           has_expected: bool, expected: Any) -> str:
    """Raise ``LivExampleFailed`` unless ``result`` fits the stub's return annotation and equals
    ``expected`` (when given); return a one-line summary."""
    from ._stub import example_call
    from ._types import describe, fits, return_annotation

    call = example_call(stub.__name__, args, kwargs)
    ret = return_annotation(stub)
    if not fits(result, ret):
        raise LivExampleFailed(
            f"example {index + 1}: {call} returned {_short(result)} (a {type(result).__qualname__}), but {stub.__name__} "
            f"is annotated to return {describe(ret)}")
    if has_expected:
        try:
            same = bool(result == expected)
        except Exception as e:  # noqa: BLE001
            raise LivExampleFailed(f"example {index + 1}: {call} returned {_short(result)}, which cannot be "
                                   f"compared with the expected {_short(expected)}: {type(e).__name__}: {e}") from None
        if not same:
            raise LivExampleFailed(f"example {index + 1}: {call} returned {_short(result)}; expected "
                                   f"{_short(expected)}")
    return f"example {index + 1}: {call} returned {_short(result)}"


def _checker(stub: Callable[..., Any], fn: Callable[..., Any]) -> Callable[..., Any]:
    """A candidate's function: each call runs one example, ``(index, args, kwargs, has_expected,
    expected)``, and checks its result."""
    if inspect.iscoroutinefunction(stub):
        async def check_async(index: int, args: tuple[Any, ...], kwargs: dict[str, Any], has_expected: bool,
                              expected: Any) -> str:
            return verify(stub, index, args, kwargs, await fn(*args, **kwargs), has_expected, expected)

        check_async.__qualname__ = check_async.__name__ = stub.__name__
        return check_async

    def check(index: int, args: tuple[Any, ...], kwargs: dict[str, Any], has_expected: bool, expected: Any) -> str:
        return verify(stub, index, args, kwargs, fn(*args, **kwargs), has_expected, expected)

    check.__qualname__ = check.__name__ = stub.__name__
    return check
