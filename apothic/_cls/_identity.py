"""Who an instance of a class is: its parameter values and option overrides.

An instance with neither (a class without parameters, no ``with_options``) runs on the class's
own deployment: task queue ``apothic:<app>:<Class>:v<N>``, fleet ``apothic-fleet:<app>:<Class>:v<N>``.
Any other instance gets ``:p<16 hex>`` appended to both, the hash of its canonical parameters and
overrides, so that each parameter set (and each ``with_options``) has a fleet, a queue and
containers of its own, created by its first call. The deployment carries the parameters
(``Deployment.params``); the container reads them from its fleet (``_serve``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

from .._contracts import Deployment, ParameterSpec
from ..exceptions import InvalidError

PARAMETER_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool, "bytes": bytes}
ALLOWED_TYPES = "str, int, float, bool or bytes"
KEY_PREFIX = "p"


def _a(type_name: str) -> str:
    return f"an {type_name}" if type_name[0] in "aeiou" else f"a {type_name}"


def type_problem(type_name: str, value: Any) -> str | None:
    """Why ``value`` is not a ``type_name`` parameter value (None: it is)."""
    given = _a(type(value).__name__)
    if type_name not in PARAMETER_TYPES:
        return f"the parameter type {type_name!r} is not one of {ALLOWED_TYPES}"
    if type_name == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{given} is not a number"
        return None if math.isfinite(value) else "not a finite number"
    if isinstance(value, bool) != (type_name == "bool") or not isinstance(value, PARAMETER_TYPES[type_name]):
        return f"{given} is not {_a(type_name)}"
    return None


def encode(type_name: str, value: Any) -> Any:
    """The JSON form of a checked value (bytes as hex, floats as floats)."""
    if type_name == "bytes":
        return {"hex": bytes(value).hex()}
    if type_name == "float":
        return float(value)
    return value


def decode(type_name: str, data: Any) -> Any:
    if type_name == "bytes":
        return bytes.fromhex(data["hex"])
    if type_name == "float":
        return float(data)
    return data


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def bind(where: str, parameters: list[ParameterSpec], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check constructor arguments against the parameters; the values with defaults filled in.

    Raises InvalidError listing every unknown, missing or mistyped argument.
    """
    import difflib

    from .._options._problems import format_problem, raise_problems

    known = {p.name: p for p in parameters}
    problems = []
    for name in sorted(set(kwargs) - set(known)):
        close = difflib.get_close_matches(name, known, n=1)
        problems.append(format_problem(
            name, kwargs[name], f"the class's parameters: {', '.join(sorted(known)) or 'none'}",
            (f"did you mean {close[0]!r}? " if close else "")
            + "drop it, or declare it in the class as `name: str = apothic.parameter()`", "unknown parameter"))
    values: dict[str, Any] = {}
    for p in parameters:
        if p.name not in kwargs:
            if p.required:
                problems.append(format_problem(
                    p.name, NO_VALUE, _a(p.type), f"pass {p.name}=... (it has no default)", "required"))
            else:
                values[p.name] = decode(p.type, json.loads(p.default))
            continue
        why = type_problem(p.type, kwargs[p.name])
        if why is not None:
            problems.append(format_problem(p.name, kwargs[p.name], _a(p.type), f"pass {_a(p.type)}", why))
            continue
        values[p.name] = float(kwargs[p.name]) if p.type == "float" else kwargs[p.name]
    raise_problems(where, problems)
    return values


class _Missing:
    def __repr__(self) -> str:
        return "(not given)"


NO_VALUE = _Missing()


def params_json(parameters: list[ParameterSpec], values: dict[str, Any]) -> str:
    """The canonical JSON of bound values ("" for a class without parameters)."""
    if not parameters:
        return ""
    types = {p.name: p.type for p in parameters}
    return canonical({name: encode(types[name], value) for name, value in values.items()})


def load_params(parameters: list[ParameterSpec], data: str) -> dict[str, Any]:
    """The values of ``params_json`` again (in the container)."""
    if not data:
        return {}
    raw = json.loads(data)
    types = {p.name: p.type for p in parameters}
    return {name: decode(types.get(name, ""), value) for name, value in raw.items()}


def instance_key(params: str, overrides: dict[str, Any]) -> str:
    """"" for the class's own deployment, else ``p<16 hex>`` of the parameters and overrides."""
    if not params and not overrides:
        return ""
    digest = hashlib.sha256(canonical({"params": params, "options": overrides}).encode()).hexdigest()
    return f"{KEY_PREFIX}{digest[:16]}"


def keyed(dep: Deployment, key: str, params: str) -> Deployment:
    """The instance's deployment: its own queue and fleet, its parameters along."""
    if not key:
        return dataclasses.replace(dep, params=params)
    return dataclasses.replace(
        dep, task_queue=f"{dep.task_queue}:{key}", fleet_id=f"{dep.fleet_id}:{key}", params=params
    )


def fleet_of_queue(task_queue: str) -> str:
    """The fleet id of an instance's task queue when it carries a key ("" when it does not)."""
    parts = task_queue.split(":")
    if len(parts) != 5 or parts[0] != "apothic" or not parts[4].startswith(KEY_PREFIX):
        return ""
    return "apothic-fleet:" + ":".join(parts[1:])
