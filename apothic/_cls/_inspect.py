"""What ``@app.cls`` reads from a class: its methods, lifecycle hooks and parameters.

Every problem is collected and raised once (InvalidError, or NotSupportedError when the only
problems are features not built for classes yet), each naming the place, the value, what is
allowed and the fix, like the checks of ``@app.function``.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from .._contracts import ClassSpec, MethodSpec, ParameterSpec
from .._options._concurrency import BATCHED_ATTR, CONCURRENT_ATTR
from .._options._problems import format_problem, show
from ._identity import ALLOWED_TYPES, PARAMETER_TYPES, canonical, encode, type_problem
from ._marks import GENERATOR_ATTR, NO_DEFAULT, ROLE_ATTR, Parameter

METHOD_EXAMPLE = "    @apothic.method()\n    def predict(self, x): ..."


def _members(cls: type) -> dict[str, Any]:
    """Attributes of the class and its bases (the most derived definition of each name), in the
    order names were first defined, bases first."""
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__[:-1]):  # object's members are not the user's
        for name, attr in vars(klass).items():
            out[name] = attr
    return out


def _annotation(cls: type, name: str) -> Any:
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: read it as written
        hints = {}
    if name in hints:
        return hints[name]
    for klass in cls.__mro__:
        if name in getattr(klass, "__annotations__", {}):
            return klass.__annotations__[name]
    return inspect.Parameter.empty


def _type_name(annotation: Any) -> str | None:
    if isinstance(annotation, str):
        text = annotation.strip().strip("'\"").rsplit(".", 1)[-1]
        return text if text in PARAMETER_TYPES else None
    for name, t in PARAMETER_TYPES.items():
        if annotation is t:
            return name
    return None


def _parameter(cls: type, name: str, attr: Parameter, problems: list[str]) -> ParameterSpec | None:
    annotation = _annotation(cls, name)
    type_name = _type_name(annotation)
    if type_name is None:
        written = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", annotation)
        problems.append(format_problem(
            f"{cls.__name__}.{name}", "no annotation" if annotation is inspect.Parameter.empty else written,
            f"an annotation of {ALLOWED_TYPES}",
            f"write `{name}: str = apothic.parameter(...)` (a parameter is part of an instance's identity, so "
            "it is a plain value)", "parameter type"))
        return None
    if attr.default is NO_DEFAULT:
        return ParameterSpec(name=name, type=type_name, required=True)
    why = type_problem(type_name, attr.default)
    if why is not None:
        problems.append(format_problem(
            f"{cls.__name__}.{name} default", attr.default, f"a {type_name} (the annotation)",
            f"give a {type_name} default, or change the annotation", why))
        return None
    return ParameterSpec(name=name, type=type_name, required=False, default=canonical(encode(type_name, attr.default)))


def _takes_only_self(fn: Any) -> str | None:
    try:
        params = list(inspect.signature(fn).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    required = [p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return ", ".join(required) or None


def describe_class(cls: type) -> tuple[ClassSpec, list[str], list[str]]:
    """The class's spec, the problems found and the features it uses that are not built yet."""
    problems: list[str] = []
    unsupported: list[str] = []
    name = cls.__name__
    if cls.__init__ is not object.__init__:
        problems.append(format_problem(
            f"{name}.__init__", cls.__init__, "no __init__ (Apothic builds the instance in each container)",
            "declare constructor arguments as parameters, `size: str = apothic.parameter(default='small')`, "
            "and put setup in a method marked @apothic.enter()", "a class of an app has no constructor of its own"))
    if getattr(cls, BATCHED_ATTR, None) is not None:
        unsupported.append(format_problem(
            f"@apothic.batched on {name}", getattr(cls, BATCHED_ATTR), "not on a class for now",
            "remove the mark, or make the batched code an @app.function", "batched classes: not supported yet"))
    methods: list[MethodSpec] = []
    hooks: dict[str, list[str]] = {"enter": [], "exit": []}
    parameters: list[ParameterSpec] = []
    for attr_name, attr in _members(cls).items():
        if isinstance(attr, Parameter):
            spec = _parameter(cls, attr_name, attr, problems)
            if spec is not None:
                parameters.append(spec)
            continue
        inner = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
        role = getattr(inner, ROLE_ATTR, None)
        if role is None:
            continue
        where = f"{name}.{attr_name}"
        if inner is not attr:
            problems.append(format_problem(
                where, f"@{type(attr).__name__}", f"a plain method taking self under @apothic.{role}()",
                f"drop @{type(attr).__name__}", "not an instance method"))
            continue
        if role in hooks:
            required = _takes_only_self(attr)
            if required:
                problems.append(format_problem(
                    where, f"def {attr_name}(self, {required})", "a method that takes only self",
                    f"give {required} defaults, or read them from parameters (self.<name>)",
                    f"@apothic.{role}() is called with no arguments"))
            if inspect.isgeneratorfunction(attr) or inspect.isasyncgenfunction(attr):
                problems.append(format_problem(
                    where, attr, "a plain or async method", "return instead of yield", f"@apothic.{role}() yields"))
            hooks[role].append(attr_name)
            continue
        if attr_name.startswith("_"):
            problems.append(format_problem(
                where, attr_name, "a public name (not starting with '_')", "rename the method", "private method name"))
            continue
        if getattr(attr, CONCURRENT_ATTR, None) is not None:
            problems.append(format_problem(
                f"@apothic.concurrent on {where}", getattr(attr, CONCURRENT_ATTR), "on the class, under @app.cls(...)",
                "move it above the class: `@app.cls(...)` then `@apothic.concurrent(max_inputs=...)` then `class`",
                "one container serves every method of a class"))
        if getattr(attr, BATCHED_ATTR, None) is not None:
            unsupported.append(format_problem(
                f"@apothic.batched on {where}", getattr(attr, BATCHED_ATTR), "not on a method for now",
                "remove the mark, or make the batched code an @app.function", "batched methods: not supported yet"))
        generator = getattr(attr, GENERATOR_ATTR, None)
        if generator is None:
            generator = inspect.isgeneratorfunction(attr) or inspect.isasyncgenfunction(attr)
        methods.append(MethodSpec(
            name=attr_name,
            is_async=inspect.iscoroutinefunction(attr) or inspect.isasyncgenfunction(attr),
            is_generator=generator,
        ))
    if not methods:
        problems.append(format_problem(
            name, cls, "a class with at least one method marked @apothic.method()",
            f"mark the methods callers call:\n{METHOD_EXAMPLE}", "no method to call"))
    spec = ClassSpec(methods=methods, parameters=parameters, enter=hooks["enter"], exit=hooks["exit"])
    return spec, problems, unsupported


def class_problem_where(cls: Any) -> str:
    return f"@app.cls(...) on {show(getattr(cls, '__name__', cls))}"
