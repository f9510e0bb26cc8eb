"""``LivConfig``, ``@apothic.liv(...)`` and the checks a generated function gets at decoration.

``@apothic.liv(...)`` goes above ``@app.function(...)`` (it marks the function handle);
``@app.function(liv=...)`` takes the same settings as a ``LivConfig``, a dict of its fields, or a
tuple (of its fields in order, or of ``(name, value)`` pairs). Either way the stub is checked
now: it has a docstring, no body of its own (``raise NotImplementedError``, ``...`` or
``pass``), is not a generator or a batched function, and each example fits its signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from .._options._problems import format_problem, raise_problems, show
from ..exceptions import InvalidError

CACHE_SCOPES = ("account", "app", "none")
MAX_ROUNDS = 10
MAX_EXAMPLES = 50
_FIELDS = ("self_debug", "cache", "examples", "model", "rounds")
_EXAMPLE_SHAPE = "(args, kwargs) or (args, kwargs, expected), args a tuple and kwargs a dict of str keys"


class LivConfig(BaseModel):
    """How a function's implementation is generated at deploy (``@apothic.liv``).

    Attributes:
        self_debug: before the deploy completes, run each example as a job of the function (in
            its own image and container) and send any failure back to the model, for up to
            ``rounds`` rounds; needs examples.
        cache: ``"account"`` (a generation is reused by every app of this control plane),
            ``"app"`` (by this app only) or ``"none"`` (always generate). The key covers the
            stub's source and docstring, the examples, ``self_debug`` and the model.
        examples: ``(args, kwargs)`` pairs, optionally with the expected result as a third
            element, e.g. ``[(("x",), {}), (("y",), {}, "status:y")]``.
        model: the model to ask (default: the control worker's ``APOTHIC_LIV_MODEL``).
        rounds: how many answers the model may give before the deploy fails (1 to 10).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    self_debug: bool = False
    cache: str = "account"
    examples: tuple[Any, ...] = ()
    model: str | None = None
    rounds: int = 3

    def __init__(self, *, self_debug: bool = False, cache: str = "account", examples: tuple[Any, ...] = (),
                 model: str | None = None, rounds: int = 3, **extra: Any) -> None:
        problems = [format_problem(k, v, "one of " + ", ".join(_FIELDS), f"remove `{k}=...`", "unknown setting")
                    for k, v in extra.items()]
        if not isinstance(self_debug, bool):
            problems.append(format_problem("self_debug", self_debug, "True or False", "write self_debug=True"))
        if not (isinstance(cache, str) and cache in CACHE_SCOPES):
            problems.append(format_problem("cache", cache, ", ".join(repr(c) for c in CACHE_SCOPES),
                                           "write cache='account' (shared), 'app' or 'none' (always generate)"))
        if model is not None and not (isinstance(model, str) and model.strip() and not any(c.isspace() for c in model)):
            problems.append(format_problem("model", model, "a model name without spaces, or None for the control "
                                           "worker's APOTHIC_LIV_MODEL", "e.g. model='gpt-4o-mini', or leave it out"))
        if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_ROUNDS:
            problems.append(format_problem("rounds", rounds, f"an int from 1 to {MAX_ROUNDS}", "e.g. rounds=3"))
        normal, example_problems = _normal_examples(examples)
        problems += example_problems
        raise_problems("LivConfig(...)", problems)
        super().__init__(self_debug=self_debug, cache=cache, examples=normal, model=model, rounds=rounds)


def _normal_examples(examples: Any) -> tuple[tuple[Any, ...], list[str]]:
    """The examples as tuples ``(args, kwargs[, expected])``, and a problem line per bad one."""
    if isinstance(examples, (str, bytes, dict)) or not isinstance(examples, (list, tuple)):
        return (), [format_problem("examples", examples, f"a list of examples, each {_EXAMPLE_SHAPE}",
                                   "write e.g. examples=[((' READY ',), {})]")]
    if len(examples) > MAX_EXAMPLES:
        return (), [format_problem("examples", f"<{len(examples)} examples>", f"at most {MAX_EXAMPLES}",
                                   "keep the examples that matter")]
    normal, problems = [], []
    for i, ex in enumerate(examples):
        fix = ("write ((arg1, arg2), {'key': value}) or, with the expected result, ((arg1,), {}, expected); "
               "a single argument is ((arg,), {})")
        ok = isinstance(ex, (list, tuple)) and len(ex) in (2, 3) and isinstance(ex[0], (list, tuple)) \
            and isinstance(ex[1], dict) and all(isinstance(k, str) for k in ex[1])
        if not ok:
            problems.append(format_problem(f"examples[{i}]", ex, _EXAMPLE_SHAPE, fix, "not an example"))
            continue
        normal.append((tuple(ex[0]), dict(ex[1]), *ex[2:]))
    return tuple(normal), problems


def as_config(value: Any, where: str = "liv") -> Any:
    """``value`` (a LivConfig, a dict of its fields, a tuple of its fields in order or of
    ``(name, value)`` pairs, or None) as a ``LivConfig`` or None; raises ``InvalidError``."""
    if value is None or isinstance(value, LivConfig):
        return value
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise InvalidError(f"{where}: {len(bad)} problem(s):\n" + format_problem(
                f"{where} key", bad[0], "the names " + ", ".join(_FIELDS), "write e.g. liv={'self_debug': True}"))
        return LivConfig(**value)
    if isinstance(value, tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 and v[0] in _FIELDS for v in value):
            return LivConfig(**dict(value))
        if len(value) > len(_FIELDS):
            raise InvalidError(f"{where}: 1 problem(s):\n" + format_problem(
                where, value, f"at most {len(_FIELDS)} values in the order {', '.join(_FIELDS)}",
                "write liv=apothic.LivConfig(...) or a dict, e.g. liv={'examples': [...]}"))
        return LivConfig(**dict(zip(_FIELDS, value)))
    raise InvalidError(f"{where}: 1 problem(s):\n" + format_problem(
        where, value, "an apothic.LivConfig(...), a dict or a tuple of its settings, or None",
        "write liv=apothic.LivConfig(self_debug=True, examples=[...])"))


def stub_problems(cfg: Any, fn: Callable[..., Any], where: str = "liv") -> list[str]:
    """What stops ``fn`` being generated with ``cfg``: one problem line each."""
    from .._options._concurrency import BATCHED_ATTR
    from ._stub import StubError, stub_body_problem, stub_source
    from ._types import describe, fits, return_annotation

    name = getattr(fn, "__name__", "?")
    problems = []
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        problems.append(format_problem(where, cfg, "a plain function or an async def",
                                       "make the stub return its result instead of yielding, or remove the liv "
                                       "setting", f"{name} is a generator (generated functions return one result)"))
    if getattr(fn, BATCHED_ATTR, None) is not None:
        problems.append(format_problem(where, cfg, "a function that takes one input per call",
                                       "remove @apothic.batched or the liv setting",
                                       f"{name} is batched (its examples would be lists of inputs)"))
    if not (fn.__doc__ or "").strip():
        problems.append(format_problem(
            f"{name}.__doc__", fn.__doc__, "a docstring saying what the function returns",
            'add one under the def, e.g. """Return ... of ..."""; it is what the model implements',
            "the stub has no docstring"))
    try:
        _, node = stub_source(fn)
    except StubError as e:
        problems.append(format_problem(name, fn, "a stub defined in a file", str(e).split(". Fix: ")[-1],
                                       str(e).split(". Fix: ")[0]))
        node = None
    if node is not None and (why := stub_body_problem(node)):
        problems.append(format_problem(
            f"the body of {name}", "<code>", "a docstring and `raise NotImplementedError` (or `...`, `pass`)",
            "make the body `raise NotImplementedError`, or keep your own code and remove the liv setting", why))
    if cfg.self_debug and not cfg.examples:
        problems.append(format_problem("self_debug", True, "True with at least one example, or False",
                                       "give examples=[((args...), {kwargs})] to run, or self_debug=False",
                                       "there are no examples to run"))
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    ret = return_annotation(fn)
    for i, ex in enumerate(cfg.examples):
        if sig is not None:
            try:
                sig.bind(*ex[0], **ex[1])
            except TypeError as e:
                problems.append(format_problem(f"examples[{i}]", ex, f"arguments {name}{sig} takes",
                                               "give the arguments the stub's parameters take", str(e)))
                continue
        if len(ex) == 3 and not fits(ex[2], ret):
            problems.append(format_problem(
                f"examples[{i}] expected result", ex[2], f"a value of the return annotation {describe(ret)}",
                "correct the expected result or the annotation", f"{show(ex[2])} is not {describe(ret)}"))
    return problems


def check_liv(cfg: Any, fn: Callable[..., Any], where: str) -> None:
    """Raise ``InvalidError`` listing every problem of generating ``fn`` with ``cfg``."""
    raise_problems(where, stub_problems(cfg, fn))


def liv(**settings: Any) -> Callable[[Any], Any]:
    """Generate a function's implementation from its stub at deploy (see :class:`LivConfig`).

    Put it above ``@app.function(...)`` on a stub: a ``def`` with type hints, a docstring saying
    what it returns, and ``raise NotImplementedError`` as its body. At ``deploy`` the control
    plane's model writes the body; the answer is checked (and, with ``self_debug``, run on the
    examples in the function's own container), then shipped as ordinary Python: calls never
    reach the model. Calling the handle locally runs the stub.
    """
    cfg = LivConfig(**settings)

    def mark(fn: Any) -> Any:
        from .._invoke._function import Function

        if not isinstance(fn, Function):
            what = getattr(fn, "__name__", None) or show(fn)
            raise InvalidError(
                f"@apothic.liv(...) on {what!s}: it marks an app function. Fix: put @apothic.liv(...) above "
                "@app.function(...), e.g.\n    @apothic.liv(examples=[...])\n    @app.function()\n    def f(x: str) -> str: ...")
        where = f"@apothic.liv(...) on {fn.function_name!r}"
        if fn.options.liv is not None:
            raise InvalidError(f"{where}: the function already has liv={show(fn.options.liv)}. Fix: give the "
                               "settings once, in @apothic.liv(...) or in @app.function(liv=...).")
        check_liv(cfg, fn.raw_f, where)
        fn.options = fn.options.model_copy(update={"liv": cfg})
        return fn

    return mark
