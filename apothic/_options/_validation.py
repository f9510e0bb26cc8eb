"""Decoration-time validation of ``@app.function(...)`` options.

Every problem is collected, then raised once as :class:`apothic.InvalidError` (or
:class:`apothic.NotSupportedError` when the only problems are options whose behaviour is not
built yet), each with its location, the bad value, the allowed range and the fix. Types are
strict: no bool or string where a number is expected, no float where an int is, no NaN or
infinity; no other exception escapes, whatever the values.
"""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    InstanceOf,
    ValidationError,
    field_validator,
)

from ..exceptions import InvalidError, NotSupportedError
from ..placement import PLACEMENT_OPTIONS, FilterError, placement_query
from ..placement._fields import KNOWN_GPU_NAMES, closest_gpu_names, is_known_gpu
from ._concurrency import mark_problems
from ._problems import (
    _FIXES,
    field_allowed,
    format_problem,
    raise_problems,
    validation_problems,
)
from ._resources import Cron, LivConfig, Period, Retries, Secret, StorageMount
from ._storage import storage_problems, workdir_problems


def _finite(**kw: Any) -> Any:
    return Field(allow_inf_nan=False, **kw)


class FunctionOptions(BaseModel):
    """The validated options of one function (names and defaults of the API reference)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True, strict=True)

    schedule: InstanceOf[Cron] | InstanceOf[Period] | None = None
    liv: InstanceOf[LivConfig] | dict[str, Any] | tuple[Any, ...] | None = None
    gpu: str | list[str] | None = None
    gpu_count: int | None = Field(default=None, ge=1, le=16)
    min_vram_gb: int | None = Field(default=None, ge=1, le=1024)
    geolocation: str | list[str] | None = None
    offer_filters: dict[str, dict[str, Any]] | None = None
    max_cost_per_hour_usd: float | None = _finite(default=None, gt=0)
    max_cost_per_tflop_hour_usd: float | None = _finite(default=None, gt=0)
    min_total_flops: float | None = _finite(default=None, ge=0)
    min_gpu_ram_bandwidth_gbps: float | None = _finite(default=None, ge=0)
    min_cpu_cores: float | None = _finite(default=None, ge=0)
    min_cpu_ram_gb: float | None = _finite(default=None, ge=0)
    min_cpu_ghz: float | None = _finite(default=None, ge=0)
    min_disk_bandwidth_mb_s: float | None = _finite(default=None, ge=0)
    min_internet_upload_mbps: float | None = _finite(default=None, ge=0)
    min_internet_download_mbps: float | None = _finite(default=None, ge=0)
    secure_cloud_only: bool | None = None
    cpu: int = Field(default=1, ge=1, le=256)
    memory_mb: int = Field(default=1024, ge=64, le=4 * 1024 * 1024)
    disk_gb: float | None = _finite(default=None, gt=0, le=100_000)
    timeout_s: int = Field(default=600, ge=1, le=7 * 86400)
    retries: int | InstanceOf[Retries] | None = None
    max_retries: int = Field(default=0, ge=0, le=100)
    concurrent_requests: int = Field(default=1, ge=1, le=1000)
    max_pending_tasks: int = Field(default=100, ge=1, le=1_000_000)
    max_containers: int = Field(default=1, ge=1, le=1000)
    tasks_per_container: int = Field(default=1, ge=1, le=64)
    image: Any = None
    secrets: list[InstanceOf[Secret]] | None = None
    volumes: dict[str, InstanceOf[StorageMount]] | list[InstanceOf[StorageMount]] | None = None

    @field_validator("retries")
    @classmethod
    def _retries_range(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= 100:
            raise ValueError("retries must be between 0 and 100")
        return v

    @field_validator("image")
    @classmethod
    def _image_type(cls, v: Any) -> Any:
        from .._image import Image

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


# What the options whose annotation says little take, in words.
_ALLOWED = {
    "schedule": "apothic.Cron(...), apothic.Period(...) or None",
    "liv": "an apothic.LivConfig(...), a dict or a tuple of its settings, or None",
    "gpu": "a GPU model name such as 'RTX_4090', or a non-empty list of them, or None",
    "geolocation": "a two-letter country code such as 'US', or a list of them, or None",
    "offer_filters": "a dict of Vast offer field name -> {operator: value}, or None",
    "retries": "an int (not a bool or float) >= 0 and <= 100, apothic.Retries(...), or None",
    "image": "an apothic.Image, or None",
    "secrets": "a list of apothic.Secret.from_name(...), or None",
    "volumes": "a list of mounted storage (Volume.from_name(...).mounted_at('/path'), CloudBucketMount(...)"
    ".mounted_at(...)), or a dict {'/path': storage}, or None",
}

# Options whose behaviour is not built yet: refused when set (what, what would happen).
_NOT_YET: dict[str, tuple[str, str]] = {}
_DEFAULTS_NOT_YET: dict[str, tuple[Any, str]] = {}


def placement_options(opts: FunctionOptions) -> dict[str, Any]:
    """The placement filters that are set, by option name (the arguments of ``compile_filters``)."""
    return {name: getattr(opts, name) for name in PLACEMENT_OPTIONS if getattr(opts, name) is not None}


def _check_model(raw: dict[str, Any]) -> tuple[FunctionOptions, dict[str, str]]:
    """The options that are valid on their own, and a problem line per option that is not.

    A value whose own methods fail while pydantic looks at it is found by checking the
    options one by one, so that even then each problem names its option.
    """
    lines: dict[str, str] = {}
    try:
        return FunctionOptions(**raw), lines
    except ValidationError as e:
        lines = validation_problems(e, FunctionOptions, raw, _ALLOWED)
    except Exception:  # noqa: BLE001 - checked one by one below
        for name, value in raw.items():
            try:
                FunctionOptions(**{name: value})
            except ValidationError as e:
                lines.update(validation_problems(e, FunctionOptions, {name: value}, _ALLOWED))
            except Exception as e:  # noqa: BLE001 - a value that breaks while being looked at
                lines[name] = format_problem(
                    name, value, _ALLOWED.get(name) or field_allowed(FunctionOptions, name),
                    _FIXES.get(name, "correct the value"),
                    f"cannot be checked ({type(e).__name__})")
    return FunctionOptions(**{k: v for k, v in raw.items() if k not in lines}), lines


def _plain(value: Any) -> bool:
    """A value a filter can hold: None, a bool, a string, or a number a float can represent."""
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, float):
        return True  # NaN and infinity are refused by the filter model itself
    if isinstance(value, int):
        return abs(value) <= 2**1000
    return False


def _filter_value_problems(filters: dict[str, dict[str, Any]] | None) -> list[str]:
    """offer_filters values that are not plain data (objects, nested containers, huge ints)."""
    problems = []
    for field, ops in (filters or {}).items():
        for op, value in ops.items():
            items = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
            bad = [v for v in items if not _plain(v)]
            if bad:
                problems.append(format_problem(
                    f"offer_filters.{field}.{op}", bad[0], "a number, a string, a bool, or a list of them "
                    "(numbers within float range)", f"write e.g. {{'{field}': {{'{op}': ...}}}} with a plain value",
                    "not a value an offer field holds"))
    return problems


def _gpu_problems(gpu: str | list[str] | None) -> list[str]:
    """GPU models Vast does not list (a typo, or a family name such as 'H100')."""
    names = [gpu] if isinstance(gpu, str) else list(gpu or [])
    problems = []
    for i, name in enumerate(names):
        if not name.strip() or is_known_gpu(name):
            continue  # an empty name is the filter model's to refuse
        close = closest_gpu_names(name)
        hint = f"did you mean {' or '.join(repr(c.replace(' ', '_')) for c in close)}?" if close else (
            "pick a model Vast lists")
        problems.append(format_problem(
            "gpu" if isinstance(gpu, str) else f"gpu.{i}", name,
            f"one of the {len(KNOWN_GPU_NAMES)} GPU models Vast lists, in any case, '_' or ' ' (e.g. 'RTX_4090', "
            "'A100_SXM4', 'H100_SXM')",
            f"{hint} (offer_filters={{'gpu_name': {{'eq': ...}}}} takes a model not listed here)",
            "unknown GPU model"))
    return problems


def _placement_problems(opts: FunctionOptions, skip: set[str]) -> list[str]:
    """The placement filters compiled as the control plane will compile them: every problem,
    as lines (options in ``skip`` were refused already)."""
    options = {k: v for k, v in placement_options(opts).items() if k not in skip}
    try:
        placement_query(options)
    except FilterError as e:
        return [
            format_problem(".".join(p.loc), p.value, p.allowed, p.fix.rstrip("."), p.message.rstrip("."))
            for p in e.problems
        ]
    except (ArithmeticError, TypeError, ValueError) as e:  # a value the filter model does not expect
        return [format_problem(", ".join(sorted(options)), "(these options)", "values the filter model takes",
                               "check the placement options", f"cannot be compiled ({type(e).__name__}: {e})")]
    return []


def _schedule_problems(schedule: Any, fn: Any) -> list[str]:
    """A scheduled function is called with no arguments."""
    if not isinstance(schedule, (Cron, Period)) or fn is None:
        return []
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    required = [p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if not required:
        return []
    return [
        format_problem(
            "schedule", schedule, "a function callable with no arguments",
            f"give {', '.join(required)} defaults, or drop schedule=",
            f"a scheduled run calls {getattr(fn, '__name__', 'it')}() with no arguments, "
            f"but it requires {', '.join(required)}",
        )
    ]


def _liv_problems(opts: FunctionOptions, fn: Any, refused: set[str]) -> tuple[FunctionOptions, list[str]]:
    """``liv=`` as a LivConfig (apothic/_liv), and what stops the stub being generated."""
    if opts.liv is None or "liv" in refused:
        return opts, []
    from .._liv._config import as_config, stub_problems

    try:
        cfg = as_config(opts.liv)
    except InvalidError as e:
        return opts, [line for line in str(e).splitlines()[1:]]
    return opts.model_copy(update={"liv": cfg}), stub_problems(cfg, fn) if fn is not None else []


def _is_set(value: Any) -> bool:
    return value is not None and not (isinstance(value, (list, tuple, dict)) and not value)


def validate_options(fn_name: str, raw: dict[str, Any], fn: Any = None) -> FunctionOptions:
    """Validate ``@app.function(**raw)`` for ``fn_name``; raise once with every problem."""
    where = f"@app.function(...) on {fn_name!r}"
    opts, refused = _check_model(raw)
    problems = list(refused.values())
    filter_values = _filter_value_problems(opts.offer_filters)
    problems += filter_values + _gpu_problems(opts.gpu)
    problems += _placement_problems(opts, {"offer_filters"} if filter_values else set())
    if opts.retries is not None and opts.max_retries:
        problems.append(
            format_problem(
                "retries/max_retries", (opts.retries, opts.max_retries), "one of the two",
                "set retries=Retries(max_retries=..., ...) or max_retries=..., not both", "both set",
            )
        )
    problems += _schedule_problems(opts.schedule, fn)
    problems += storage_problems(opts.secrets, opts.volumes)
    problems += workdir_problems(opts.image, opts.volumes)
    mark_invalid, unsupported = mark_problems(fn, raw) if fn is not None else ([], [])
    problems += mark_invalid
    opts, liv_invalid = _liv_problems(opts, fn, set(refused))
    problems += liv_invalid
    for name, (what, consequence) in _NOT_YET.items():
        if _is_set(getattr(opts, name)):
            unsupported.insert(0, format_problem(
                name, getattr(opts, name), "None for now", f"remove `{name}=...`",
                f"{what}: not supported yet ({consequence})"))
    for name, (default, what) in _DEFAULTS_NOT_YET.items():
        if name in raw and name not in refused and getattr(opts, name) != default:
            unsupported.append(
                format_problem(name, getattr(opts, name), f"{default} for now", f"remove `{name}=...`",
                               f"{what}: not supported yet")
            )
    raise_problems(where, problems + unsupported, InvalidError if problems else NotSupportedError)
    return opts
