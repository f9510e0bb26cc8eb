"""How a problem with an option is worded: location, bad value, allowed range, fix.

Shared by the option types (``_resources``) and the decorator's checks (``_validation``).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

_FIXES = {
    "cpu": "give a whole number of cores, e.g. cpu=2",
    "memory_mb": "give memory in MiB, e.g. memory_mb=2048",
    "timeout_s": "give the per-attempt limit in whole seconds, e.g. timeout_s=300",
    "max_retries": "give how many times to retry after the first attempt, e.g. max_retries=3",
    "retries": "give an int (retries=3) or apothic.Retries(max_retries=3, initial_delay=1.0)",
    "concurrent_requests": "give how many inputs one container runs at once, e.g. concurrent_requests=1",
    "max_pending_tasks": "give how many inputs may wait for capacity, e.g. max_pending_tasks=100",
    "max_containers": "give the most containers this function may run at once, e.g. max_containers=4",
    "tasks_per_container": "give how many inputs a container serves before it is replaced",
    "disk_gb": "give disk in GB, e.g. disk_gb=50",
    "gpu": "give a GPU model name like 'RTX_4090' or a list of names",
    "schedule": "give apothic.Cron('0 * * * *') or apothic.Period(minutes=5)",
}


def _allowed(err: dict[str, Any]) -> str:
    ctx = err.get("ctx") or {}
    parts = []
    for key, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in ctx:
            parts.append(f"{sym} {ctx[key]}")
    if "min_length" in ctx:
        parts.append(f"length >= {ctx['min_length']}")
    if parts:
        return " and ".join(parts)
    if "expected" in ctx:
        return str(ctx["expected"])
    kind = err.get("type", "")
    return {
        "int_type": "a whole number",
        "int_parsing": "a whole number",
        "int_from_float": "a whole number",
        "float_type": "a number",
        "float_parsing": "a number",
        "bool_type": "True or False",
        "bool_parsing": "True or False",
        "string_type": "a string",
        "list_type": "a list",
        "dict_type": "a dict",
        "extra_forbidden": "no such option",
    }.get(kind, err.get("msg", ""))


def format_problem(loc: str, value: Any, allowed: str, fix: str, msg: str = "") -> str:
    line = f"  - {loc} = {value!r}: "
    line += f"{msg}; " if msg else ""
    line += f"allowed: {allowed}. Fix: {fix}."
    return line


def format_validation_error(e: ValidationError, where: str) -> str:
    lines = [f"{where}: {e.error_count()} invalid option(s):"]
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        head = str(err["loc"][0]) if err["loc"] else ""
        lines.append(
            format_problem(loc, err.get("input"), _allowed(err), _FIXES.get(head, "correct the value"), err["msg"])
        )
    return "\n".join(lines)
