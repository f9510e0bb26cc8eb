"""How a problem with an option is worded: location, bad value, allowed range, fix.

Shared by the option types (``_resources``, ``_storage``, ``_concurrency``) and the decorator's
checks (``_validation``). Every check collects its problems as lines, then raises once.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from ..exceptions import InvalidError

_FIXES = {
    "schedule": "give apothic.Cron('0 * * * *') or apothic.Period(minutes=5)",
    "liv": "give liv=apothic.LivConfig(self_debug=True, examples=[((arg,), {})]) or a dict of its settings",
    "gpu": "give a GPU model name like 'RTX_4090' or a list of names",
    "gpu_count": "give how many GPUs one machine must have, e.g. gpu_count=1, or leave it None",
    "min_vram_gb": "give the GPU memory in whole GB, e.g. min_vram_gb=24, or leave it None",
    "geolocation": "give two-letter country codes, e.g. geolocation='US' or geolocation=['US', 'CA']",
    "offer_filters": "give a dict like offer_filters={'gpu_ram': {'gte': 10240}}",
    "max_cost_per_hour_usd": "give USD per hour as a number, e.g. max_cost_per_hour_usd=1.5, or leave it None",
    "max_cost_per_tflop_hour_usd": "give USD per TFLOPS-hour as a number, e.g. 0.05, or leave it None",
    "min_total_flops": "give TFLOPS as a number, e.g. min_total_flops=40, or leave it None",
    "min_gpu_ram_bandwidth_gbps": "give GB/s as a number, e.g. min_gpu_ram_bandwidth_gbps=500, or leave it None",
    "min_cpu_cores": "give vCPUs as a number, e.g. min_cpu_cores=8, or leave it None",
    "min_cpu_ram_gb": "give GB of RAM as a number, e.g. min_cpu_ram_gb=32, or leave it None",
    "min_cpu_ghz": "give GHz as a number, e.g. min_cpu_ghz=3.0, or leave it None",
    "min_disk_bandwidth_mb_s": "give MB/s as a number, e.g. min_disk_bandwidth_mb_s=500, or leave it None",
    "min_internet_upload_mbps": "give Mbit/s as a number, e.g. min_internet_upload_mbps=100, or leave it None",
    "min_internet_download_mbps": "give Mbit/s as a number, e.g. min_internet_download_mbps=500, or leave it None",
    "secure_cloud_only": "write secure_cloud_only=True (datacenter machines only), False or None",
    "cpu": "give a whole number of cores, e.g. cpu=2",
    "memory_mb": "give memory in MiB, e.g. memory_mb=2048",
    "disk_gb": "give disk in GB, e.g. disk_gb=50",
    "timeout_s": "give the per-attempt limit in whole seconds, e.g. timeout_s=300",
    "retries": "give an int (retries=3) or apothic.Retries(max_retries=3, initial_delay=1.0)",
    "max_retries": "give how many times to retry after the first attempt, e.g. max_retries=3",
    "concurrent_requests": "give how many inputs one container runs at once, e.g. concurrent_requests=1",
    "max_pending_tasks": "give how many inputs may wait for capacity, e.g. max_pending_tasks=100",
    "max_containers": "give the most containers this function may run at once, e.g. max_containers=4",
    "tasks_per_container": "give how many function processes one container runs side by side, e.g. "
    "tasks_per_container=2 (one per GPU of a 2-GPU machine)",
    "image": "give an apothic.Image, e.g. image=apothic.Image.debian_slim()",
    "secrets": "give a list like secrets=[apothic.Secret.from_name('HF_TOKEN')]",
    "volumes": "give a list like volumes=[apothic.Volume.from_name('cache').mounted_at('/cache')] "
    "or a dict like volumes={'/cache': apothic.Volume.from_name('cache')}",
    # Retries(...), Period(...)
    "initial_delay": "give the first retry's delay in seconds, e.g. initial_delay=1.0",
    "backoff_coefficient": "give the growth factor of the delay, e.g. backoff_coefficient=2.0",
    "max_delay": "give the longest delay in seconds, e.g. max_delay=60.0",
    "days": "give a number of days, e.g. Period(days=1)",
    "hours": "give a number of hours, e.g. Period(hours=6)",
    "minutes": "give a number of minutes, e.g. Period(minutes=15)",
    "seconds": "give a number of seconds, e.g. Period(seconds=30)",
    "overlap": "leave the default overlap='skip' or pick one of the allowed policies",
}

# Error types that only say "wrong type": in a union, another member's error says more.
_TYPE_ERRORS = frozenset({
    "int_type", "float_type", "bool_type", "string_type", "list_type", "dict_type", "tuple_type",
    "is_instance_of", "model_type", "model_attributes_type", "dataclass_type", "literal_error",
})

_MAX_SHOWN = 120


def show(value: Any) -> str:
    """``repr(value)``, shortened, and never raising (huge ints, broken ``__repr__``)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        digits = int(value.bit_length() * 0.30103) + 1
        return f"{'-' if value < 0 else ''}<an int of about {digits} digits>"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a user object whose __repr__ fails
        return f"<{type(value).__name__} object>"
    if len(text) > _MAX_SHOWN:
        return text[: _MAX_SHOWN - 20] + f"... ({len(text)} characters)"
    return text


def format_problem(loc: str, value: Any, allowed: str, fix: str, msg: str = "") -> str:
    line = f"  - {loc} = {show(value)}: "
    line += f"{msg}; " if msg else ""
    line += f"allowed: {allowed}. Fix: {fix}."
    return line


def raise_problems(where: str, problems: list[str], cls: type[InvalidError] = InvalidError) -> None:
    """Raise ``cls`` listing every problem (does nothing when there are none)."""
    if problems:
        raise cls(f"{where}: {len(problems)} problem(s):\n" + "\n".join(problems))


def _bounds(metadata: list[Any]) -> str:
    parts = []
    for item in metadata:
        for key, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(item, key, None)
            if bound is not None:
                whole = isinstance(bound, float) and bound.is_integer()
                parts.append(f"{sym} {int(bound) if whole else bound}")
        if getattr(item, "min_length", None):
            parts.append(f"at least {item.min_length} character(s)")
    return " and ".join(parts)


_WORDS = {int: "an int (not a bool or float)", float: "a finite number (int or float, not a bool)",
          bool: "True or False", str: "a string"}


def field_allowed(model: type[BaseModel], name: str) -> str:
    """What an option takes, in words, from its annotation and bounds ("an int >= 1 and <= 256")."""
    info = model.model_fields.get(name)
    if info is None:
        return "no such option"
    ann = info.annotation
    args = get_args(ann) if get_origin(ann) in (typing.Union, types.UnionType) else (ann,)
    core = [a for a in args if a is not type(None)]
    words = []
    for a in core:
        if a in _WORDS:
            bounds = _bounds(info.metadata)
            words.append(_WORDS[a] + (f" {bounds}" if bounds else ""))
        elif get_origin(a) is Literal:
            words.append("one of " + ", ".join(repr(v) for v in get_args(a)))
        else:
            words.append(getattr(a, "__name__", None) or str(a))
    text = " or ".join(words)
    return text + (", or None" if type(None) in args else "")


def _reason(err: dict[str, Any]) -> str:
    value = err.get("input")
    if err.get("type") in _TYPE_ERRORS:
        if isinstance(value, bool) and err.get("type") in ("int_type", "float_type"):
            return "a bool is not a number here"
        if isinstance(value, str) and err.get("type") in ("int_type", "float_type"):
            return "a string is not a number (write the number without quotes)"
        if isinstance(value, float) and err.get("type") == "int_type":
            return "a float is not accepted here: write a whole number, e.g. 2 rather than 2.0"
        if isinstance(value, int) and err.get("type") == "float_type":
            return "too large for a float"
        name = type(value).__name__
        return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name} is not accepted here"
    if err.get("type") == "extra_forbidden":
        return "unknown option"
    return str(err.get("msg", ""))


def validation_problems(
    e: ValidationError, model: type[BaseModel], raw: dict[str, Any], allowed: dict[str, str] | None = None
) -> dict[str, str]:
    """One problem line per option a model refused, keyed by the option's name.

    The line shows the option's value as given (``raw``) and its whole allowed range; of the
    errors a union's members report, the most specific one (not a mere type mismatch) is the
    reason, with the offending item first when it is not the whole value.
    """
    by_field: dict[str, list[dict[str, Any]]] = {}
    for err in e.errors():
        head = str(err["loc"][0]) if err["loc"] else "value"
        by_field.setdefault(head, []).append(err)
    lines = {}
    for head, errs in by_field.items():
        # Not a mere type mismatch if there is one; else the deepest (an item of a list, say).
        err = ([x for x in errs if x.get("type") not in _TYPE_ERRORS] or sorted(errs, key=lambda x: -len(x["loc"])))[0]
        value = raw.get(head, err.get("input"))
        reason = _reason(err)
        if err.get("input") is not value and err.get("type") != "missing":
            reason = f"{show(err.get('input'))}: {reason}"
        if err.get("type") == "extra_forbidden":
            text, fix = "one of " + ", ".join(model.model_fields), f"remove `{head}=...`"
        else:
            text = (allowed or {}).get(head) or field_allowed(model, head)
            fix = _FIXES.get(head, "correct the value")
        lines[head] = format_problem(head, value, text, fix, reason)
    return lines


def format_validation_error(e: ValidationError, where: str, model: type[BaseModel], raw: dict[str, Any]) -> str:
    lines = list(validation_problems(e, model, raw).values())
    return f"{where}: {len(lines)} problem(s):\n" + "\n".join(lines)
