"""Decoration-time validation of ``@app.function(...)`` options.

Every problem is collected, then raised once as :class:`apothic.InvalidError` (or
:class:`apothic.NotSupportedError` when the only problems are options whose behaviour is not
built yet), each with its location, the bad value, the allowed range and the fix.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..exceptions import InvalidError, NotSupportedError
from ..placement import PLACEMENT_OPTIONS, FilterError, placement_query
from ._problems import format_problem, format_validation_error
from ._resources import Cron, LivConfig, Period, Retries, Secret, StorageMount


class FunctionOptions(BaseModel):
    """The validated options of one function (names and defaults of the API reference)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True, strict=False)

    schedule: Cron | Period | None = None
    liv: LivConfig | dict[str, Any] | tuple[Any, ...] | None = None
    gpu: str | list[str] | None = None
    gpu_count: int | None = Field(default=None, ge=1, le=16)
    min_vram_gb: int | None = Field(default=None, ge=1, le=1024)
    geolocation: str | list[str] | None = None
    offer_filters: dict[str, dict[str, Any]] | None = None
    max_cost_per_hour_usd: float | None = Field(default=None, gt=0)
    max_cost_per_tflop_hour_usd: float | None = Field(default=None, gt=0)
    min_total_flops: float | None = Field(default=None, ge=0)
    min_gpu_ram_bandwidth_gbps: float | None = Field(default=None, ge=0)
    min_cpu_cores: float | None = Field(default=None, ge=0)
    min_cpu_ram_gb: float | None = Field(default=None, ge=0)
    min_cpu_ghz: float | None = Field(default=None, ge=0)
    min_disk_bandwidth_mb_s: float | None = Field(default=None, ge=0)
    min_internet_upload_mbps: float | None = Field(default=None, ge=0)
    min_internet_download_mbps: float | None = Field(default=None, ge=0)
    secure_cloud_only: bool | None = None
    cpu: int = Field(default=1, ge=1, le=256)
    memory_mb: int = Field(default=1024, ge=64, le=4 * 1024 * 1024)
    disk_gb: float | None = Field(default=None, gt=0, le=100_000)
    timeout_s: int = Field(default=600, ge=1, le=7 * 86400)
    retries: int | Retries | None = None
    max_retries: int = Field(default=0, ge=0, le=100)
    concurrent_requests: int = Field(default=1, ge=1, le=1000)
    max_pending_tasks: int = Field(default=100, ge=1, le=1_000_000)
    max_containers: int = Field(default=1, ge=1, le=1000)
    tasks_per_container: int = Field(default=1, ge=1, le=1_000_000)
    image: Any = None
    secrets: list[Secret] | None = None
    volumes: dict[str, StorageMount] | list[StorageMount] | None = None

    @field_validator("retries")
    @classmethod
    def _retries_range(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= 100:
            raise ValueError("retries must be between 0 and 100")
        return v

    @field_validator("image")
    @classmethod
    def _image_type(cls, v: Any) -> Any:
        from .._image._image import Image

        if v is not None and not isinstance(v, Image):
            raise ValueError(f"image must be an apothic.Image, got {type(v).__name__}")
        return v

    def retry_policy(self) -> Retries:
        """How ``retries`` and ``max_retries`` combine (at most one may be set).

        ``retries=Retries(...)`` is used as given; ``retries=n`` or ``max_retries=n`` mean
        ``Retries(max_retries=n)`` with its default backoff (1 s, doubling, at most 60 s).
        """
        if isinstance(self.retries, Retries):
            return self.retries
        if isinstance(self.retries, int):
            return Retries(max_retries=self.retries)
        return Retries(max_retries=self.max_retries)


# Options whose behaviour is not built yet: refused when not at their default.
_NOT_YET = {
    "liv": "generated implementations (liv)",
    "secrets": "secrets",
    "volumes": "volumes",
}
_DEFAULTS_NOT_YET = {
    "concurrent_requests": (1, "several inputs at once in one container"),
    "max_pending_tasks": (100, "a custom pending-input limit"),
    "tasks_per_container": (1, "recycling containers after N inputs"),
}


def placement_options(opts: FunctionOptions) -> dict[str, Any]:
    """The placement filters that are set, by option name (the arguments of ``compile_filters``)."""
    return {name: getattr(opts, name) for name in PLACEMENT_OPTIONS if getattr(opts, name) is not None}


def _placement_problems(raw: dict[str, Any], already: set[str]) -> list[str]:
    """The placement filters compiled as the control plane will compile them: every problem,
    as lines, except for options the option model already refused (``already``)."""
    options = {name: raw[name] for name in PLACEMENT_OPTIONS if raw.get(name) is not None and name not in already}
    try:
        placement_query(options)
    except FilterError as e:
        return [
            format_problem(".".join(p.loc), p.value, p.allowed, p.fix.rstrip("."), p.message.rstrip("."))
            for p in e.problems
        ]
    return []


def _schedule_problems(schedule: Any, fn: Any) -> list[str]:
    """A scheduled function is called with no arguments; a Cron built from a dict is checked too."""
    if not isinstance(schedule, (Cron, Period)):
        return []
    problems = []
    if isinstance(schedule, Cron):
        from .._schedule._cron import cron_problems, timezone_problems

        for msg in cron_problems(schedule.expression) + timezone_problems(schedule.timezone):
            problems.append(format_problem("schedule", schedule, "a valid apothic.Cron", "see apothic.Cron", msg))
    if fn is not None:
        import inspect

        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            params = []  # type: ignore[assignment]
        required = [
            p.name for p in params
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if required:
            problems.append(
                format_problem(
                    "schedule", schedule, "a function callable with no arguments",
                    f"give {', '.join(required)} defaults, or drop schedule=",
                    f"a scheduled run calls {getattr(fn, '__name__', 'it')}() with no arguments, "
                    f"but it requires {', '.join(required)}",
                )
            )
    return problems


def validate_options(fn_name: str, raw: dict[str, Any], fn: Any = None) -> FunctionOptions:
    """Validate ``@app.function(**raw)`` for ``fn_name``; raise once with every problem."""
    where = f"@app.function(...) on {fn_name!r}"
    problems: list[str] = []
    refused: set[str] = set()
    try:
        opts = FunctionOptions(**raw)
    except ValidationError as e:
        problems.extend(format_validation_error(e, where).splitlines()[1:])
        refused = {str(err["loc"][0]) for err in e.errors() if err["loc"]}
        opts = None
    problems.extend(_placement_problems(raw, refused))
    if raw.get("retries") is not None and raw.get("max_retries"):
        problems.append(
            format_problem(
                "retries/max_retries",
                (raw["retries"], raw["max_retries"]),
                "one of the two",
                "set retries=Retries(max_retries=..., ...) or max_retries=..., not both",
                "both set",
            )
        )
    problems.extend(_schedule_problems(raw.get("schedule"), fn))
    unsupported: list[str] = []
    for name, what in _NOT_YET.items():
        if raw.get(name) not in (None, [], {}):
            unsupported.append(
                format_problem(name, raw[name], "the default (None)", f"remove {name}=...", f"{what}: not supported yet")
            )
    for name, (default, what) in _DEFAULTS_NOT_YET.items():
        if name in raw and raw[name] != default:
            unsupported.append(
                format_problem(name, raw[name], f"{default}", f"remove {name}=...", f"{what}: not supported yet")
            )
    for attr, what in (("__apothic_concurrent__", "@concurrent(...)"), ("__apothic_batched__", "@batched(...)")):
        if fn is not None and getattr(fn, attr, None) is not None:
            unsupported.append(
                format_problem(what, getattr(fn, attr), "not used", f"remove {what}", "not supported yet")
            )
    if problems or unsupported:
        cls = InvalidError if problems else NotSupportedError
        lines = problems + unsupported
        raise cls(f"{where}: {len(lines)} problem(s):\n" + "\n".join(lines))
    assert opts is not None
    return opts
