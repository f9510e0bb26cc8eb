"""The marks inside an ``@app.cls`` class: ``@apothic.method()``, ``@apothic.enter()``,
``@apothic.exit()`` and ``apothic.parameter()``.

A mark only records what it is on the function (``ROLE_ATTR``); ``@app.cls`` reads the marks
when it registers the class (``_inspect.describe_class``) and refuses what does not fit.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from ..exceptions import InvalidError

F = TypeVar("F", bound=Callable[..., Any])

# On a marked function: "method", "enter" or "exit".
ROLE_ATTR = "__apothic_role__"
# On a function marked @apothic.method(is_generator=...): that override (None: from its code).
GENERATOR_ATTR = "__apothic_is_generator__"

ROLES = ("method", "enter", "exit")


def _name(obj: Any) -> str:
    return str(getattr(obj, "__name__", None) or type(obj).__name__)


def _bare(kind: str, target: Any) -> None:
    if target is not None:
        raise InvalidError(
            f"@apothic.{kind} was used without parentheses on {_name(target)!r}. "
            f"Fix: write `@apothic.{kind}()`."
        )


def _mark(kind: str, fn: Any, generator: bool | None = None) -> Any:
    if isinstance(fn, (staticmethod, classmethod, property)):
        raise InvalidError(
            f"@apothic.{kind}() is on a {type(fn).__name__} ({_name(getattr(fn, '__func__', fn))!r}); it marks a "
            f"plain method, called on the class's instance. Fix: drop @{type(fn).__name__} and take `self`:\n"
            f"    @apothic.{kind}()\n    def {_name(getattr(fn, '__func__', fn))}(self, ...): ..."
        )
    if not inspect.isfunction(fn):
        raise InvalidError(
            f"@apothic.{kind}() marks a method (a `def` inside an @app.cls class), got {_name(fn)!r} "
            f"({type(fn).__name__}). Fix: put it on a `def` in the class body."
        )
    role = getattr(fn, ROLE_ATTR, None)
    if role is not None:
        what = "already" if role == kind else f"already @apothic.{role}(), and"
        raise InvalidError(
            f"@apothic.{kind}(): {fn.__name__!r} is {what} marked. A method is either called by callers "
            "(@apothic.method()) or run as a container starts (@apothic.enter()) or drains (@apothic.exit()). "
            "Fix: keep one mark; call a shared helper from both if needed."
        )
    setattr(fn, ROLE_ATTR, kind)
    if kind == "method":
        setattr(fn, GENERATOR_ATTR, generator)
    return fn


def method(_fn: Any = None, /, *, is_generator: bool | None = None) -> Callable[[F], F]:
    """Mark a method of an ``@app.cls`` class as callable remotely::

        @app.cls(gpu="RTX_4090")
        class Model:
            @apothic.method()
            def predict(self, x): ...

        Model().predict.remote(x)   # also .spawn, .map, .starmap, .for_each, .spawn_map, .remote_gen

    Args:
        is_generator: whether callers iterate it (``remote_gen``); default: it has ``yield``.
    """
    _bare("method", _fn)
    if is_generator is not None and not isinstance(is_generator, bool):
        raise InvalidError(
            f"@apothic.method(is_generator={is_generator!r}): allowed: True, False or None (from the code). "
            "Fix: leave it out, or write is_generator=True."
        )
    return lambda fn: _mark("method", fn, is_generator)  # type: ignore[return-value]


def enter(_fn: Any = None, /) -> Callable[[F], F]:
    """Mark a method of an ``@app.cls`` class to run once as each container starts, before it
    takes its first input (load a model once, not per call). It takes only ``self``; what it
    sets on ``self`` every method call of that container sees. An exception in it stops the
    container (its calls fail with the traceback once the fleet gives up, after 3 starts)."""
    _bare("enter", _fn)
    return lambda fn: _mark("enter", fn)  # type: ignore[return-value]


def exit(_fn: Any = None, /) -> Callable[[F], F]:  # noqa: A001 - the name callers know (modal.exit)
    """Mark a method of an ``@app.cls`` class to run once as its container drains (idle, stopped,
    or replaced by a new version), after the last input finished. It takes only ``self``."""
    _bare("exit", _fn)
    return lambda fn: _mark("exit", fn)  # type: ignore[return-value]


class _NoDefault:
    def __repr__(self) -> str:
        return "<required>"


NO_DEFAULT: Any = _NoDefault()


class Parameter:
    """What ``apothic.parameter()`` returns: the declaration of one constructor argument."""

    __slots__ = ("default",)

    def __init__(self, default: Any) -> None:
        self.default = default

    def __repr__(self) -> str:
        return "apothic.parameter()" if self.default is NO_DEFAULT else f"apothic.parameter(default={self.default!r})"


def parameter(*, default: Any = NO_DEFAULT) -> Any:
    """Declare a constructor argument of an ``@app.cls`` class, as an annotated class attribute::

        @app.cls()
        class Model:
            size: str = apothic.parameter(default="small")

        Model(size="large").predict.remote(x)

    The annotation is ``str``, ``int``, ``float``, ``bool`` or ``bytes``. Each set of values is
    its own instance, with containers of its own; inside them ``self.size`` is the value.
    """
    return Parameter(default)
