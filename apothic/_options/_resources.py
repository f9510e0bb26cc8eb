"""Value types the decorator takes: schedules, retries, secrets, storage, liv settings.

These are immutable descriptions, checked strictly when made (no bool or string where a
number is expected, no float where an int is), every problem at once as ``InvalidError``.
Those whose behaviour is not built yet are accepted as values (so code written against the
API reference imports and type-checks) but the decorator refuses them with
``NotSupportedError`` instead of ignoring them. Secrets and storage live in ``_storage``,
``@concurrent``/``@batched`` in ``_concurrency``, ``LivConfig``/``@liv`` in ``apothic/_liv``; all are
re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._liv._config import LivConfig, liv  # generated functions: apothic/_liv
from ._concurrency import batched, concurrent
from ._problems import format_problem, format_validation_error, raise_problems, show
from ._storage import CloudBucketMount, Secret, StorageMount, Volume

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "CloudBucketMount", "Cron", "LivConfig", "Period", "Retries", "Secret", "StorageMount", "Volume",
    "batched", "concurrent", "liv",
]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    @classmethod
    def _make(cls, self: Any, where: str, problems: list[str], fields: dict[str, Any]) -> None:
        """Validate ``fields`` into ``self``; raise once with ``problems`` and the model's own."""
        try:
            BaseModel.__init__(self, **fields)
        except ValidationError as e:
            refused = format_validation_error(e, where, cls, fields).splitlines()[1:]
            problems = problems + refused
        raise_problems(where, problems)


class Retries(_Strict):
    """A retry policy for the function's own errors (exceptions and timeouts).

    Retry ``n`` (``n >= 1``) starts ``min(initial_delay * backoff_coefficient**(n-1), max_delay)``
    seconds after the attempt before it failed; ``max_retries=0`` runs the function once. The
    wait is a durable timer: it survives restarts of workers and server.

    Never retried, whatever the policy: the exception types listed in ``non_retryable`` (types
    or their ``"module.Qualname"``; subclasses are not matched), ``apothic.InvalidError`` raised
    by the function, arguments the container cannot load, and results that cannot be returned.
    A lost container or host is not a user error: it is retried separately and never counts
    here (see the architecture page).

    ``max_retries`` is an int (not a bool, not a float); the delays are finite numbers.
    """

    max_retries: int = Field(ge=0, le=100)
    initial_delay: float = Field(default=1.0, ge=0.001, le=3600.0, allow_inf_nan=False)
    backoff_coefficient: float = Field(default=2.0, ge=1.0, le=10.0, allow_inf_nan=False)
    max_delay: float = Field(default=60.0, ge=0.001, le=86400.0, allow_inf_nan=False)
    non_retryable: tuple[str, ...] = ()

    def __init__(
        self,
        max_retries: int,
        initial_delay: float = 1.0,
        backoff_coefficient: float = 2.0,
        max_delay: float = 60.0,
        *,
        non_retryable: Any = (),
        **extra: Any,
    ) -> None:
        names, problems = [], []
        items = list(non_retryable) if isinstance(non_retryable, (list, tuple, set, frozenset)) else [non_retryable]
        for item in items:
            if isinstance(item, type) and issubclass(item, BaseException):
                names.append(f"{item.__module__}.{item.__qualname__}")
            elif isinstance(item, str) and item:
                names.append(item)
            else:
                problems.append(format_problem(
                    "non_retryable", item, "exception types or their 'module.Qualname' names",
                    "list exception classes, e.g. non_retryable=[ValueError]", "not an exception type"))
        fields = {"max_retries": max_retries, "initial_delay": initial_delay,
                  "backoff_coefficient": backoff_coefficient, "max_delay": max_delay,
                  "non_retryable": tuple(sorted(set(names))), **extra}
        self._make(self, "Retries(...)", problems, fields)


# What a schedule does with a run that is due while the previous one still runs.
Overlap = Literal["skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"]
OVERLAP_POLICIES: tuple[str, ...] = get_args(Overlap)


def _overlap_problems(overlap: object) -> list[str]:
    if isinstance(overlap, str) and overlap in OVERLAP_POLICIES:
        return []
    return [format_problem("overlap", overlap, ", ".join(repr(o) for o in OVERLAP_POLICIES),
                           "leave the default overlap='skip' or pick one of the allowed policies",
                           "unknown overlap policy")]


def _unknown_problems(extra: dict[str, Any], known: str) -> list[str]:
    return [format_problem(str(k), v, known, f"remove `{k}=...`", "unknown option") for k, v in extra.items()]


class Cron(_Strict):
    """Run on a cron schedule: five fields (minute hour day-of-month month day-of-week) as
    croniter reads them, or ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``,
    in ``timezone`` (an IANA name such as ``"Europe/London"``).

    The expression is checked here, when the decorator runs. Refused, because Temporal (which
    fires the schedule) would read it differently: a sixth field (seconds to croniter, a year
    to Temporal), ``L``, ``W``, ``#`` and hashed ``H``. Day-of-month together with
    day-of-week means either (croniter's OR), as with cron. Around daylight-saving changes the
    times are Temporal's: a wall time that does not exist that day is skipped.

    ``overlap`` says what happens when a run is due while the previous one still runs:
    ``"skip"`` (the default: that run does not happen), ``"buffer_one"`` (it starts when the
    previous one ends; at most one waits), ``"buffer_all"`` (every such run waits its turn),
    ``"cancel_other"`` (the previous one is cancelled first), ``"terminate_other"`` (the
    previous one is terminated first) or ``"allow_all"`` (runs overlap).

    A scheduled run is an ordinary job of the function (``apothic jobs list``), called with no
    arguments, on the version current when it starts. ``app.deploy()`` creates the Temporal
    Schedule (id ``apothic-schedule:<app>:<function>``); a redeploy updates it, or deletes it
    when the function or its schedule is gone. Raises :class:`InvalidError` listing every problem.
    """

    expression: str
    timezone: str = "UTC"
    overlap: Overlap = "skip"

    def __init__(self, expression: str, timezone: str = "UTC", *, overlap: Overlap = "skip", **extra: Any) -> None:
        from .._schedule._cron import cron_problems, timezone_problems

        allowed = "five cron fields such as '0 * * * *', or @hourly, @daily, @weekly, @monthly, @yearly"
        fix = "write five fields, e.g. Cron('*/15 * * * *'), or use apothic.Period(...) for a fixed interval"
        problems: list[str] = []
        if not isinstance(expression, str):
            problems.append(format_problem("expression", expression, allowed, fix, "not a string"))
        else:
            problems += [format_problem("expression", expression, allowed, fix, m) for m in cron_problems(expression)]
        tz_fix = "e.g. timezone='America/New_York'"
        if not isinstance(timezone, str):
            problems.append(format_problem("timezone", timezone, "an IANA time zone name", tz_fix, "not a string"))
        else:
            problems += [format_problem("timezone", timezone, "an IANA time zone name", tz_fix, m)
                         for m in timezone_problems(timezone)]
        problems += _overlap_problems(overlap) + _unknown_problems(extra, "expression, timezone, overlap")
        raise_problems(f"Cron({show(expression)})", problems)
        self._make(self, f"Cron({show(expression)})", [],
                   {"expression": expression.strip(), "timezone": timezone, "overlap": overlap})

    def temporal_expressions(self) -> list[str]:
        """The Temporal cron strings this schedule runs as (fired as their union)."""
        from .._schedule._cron import temporal_cron

        return temporal_cron(self.expression)


# The longest period: Temporal keeps intervals as Go durations (at most about 292 years).
MAX_PERIOD_S = 100 * 366 * 86400
_UNIT_S = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}


class Period(_Strict):
    """Run every fixed period: the sum of the given parts, a whole number of seconds (at least
    one, at most 100 years). Runs are aligned to the Unix epoch, not to the deploy:
    ``Period(hours=1)`` runs on the hour (UTC), ``Period(days=1)`` at 00:00 UTC. Each part is a
    finite number >= 0 (int or float, not a bool). ``overlap`` and the rest: as for :class:`Cron`.
    """

    days: float = Field(default=0, ge=0, le=MAX_PERIOD_S / 86400, allow_inf_nan=False)
    hours: float = Field(default=0, ge=0, le=MAX_PERIOD_S / 3600, allow_inf_nan=False)
    minutes: float = Field(default=0, ge=0, le=MAX_PERIOD_S / 60, allow_inf_nan=False)
    seconds: float = Field(default=0, ge=0, le=MAX_PERIOD_S, allow_inf_nan=False)
    overlap: Overlap = "skip"

    def __init__(
        self,
        *,
        days: float = 0,
        hours: float = 0,
        minutes: float = 0,
        seconds: float = 0,
        overlap: Overlap = "skip",
        **extra: Any,
    ) -> None:
        known = isinstance(overlap, str) and overlap in OVERLAP_POLICIES
        fields = {"days": days, "hours": hours, "minutes": minutes, "seconds": seconds,
                  "overlap": overlap if known else "skip"}
        problems = _overlap_problems(overlap) + _unknown_problems(extra, "days, hours, minutes, seconds, overlap")
        parts = {"days": days, "hours": hours, "minutes": minutes, "seconds": seconds}
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= MAX_PERIOD_S / _UNIT_S[k]
               for k, v in parts.items()):
            total = days * 86400 + hours * 3600 + minutes * 60 + seconds
            why = ("shorter than one second" if total < 1 else "longer than 100 years" if total > MAX_PERIOD_S else
                   "not a whole number of seconds (Temporal schedules have one-second resolution)"
                   if abs(total - round(total)) > 1e-6 else "")
            if why:
                problems.append(format_problem(
                    "days*86400 + hours*3600 + minutes*60 + seconds", total,
                    f"a whole number of seconds, at least 1 and at most {MAX_PERIOD_S} (100 years)",
                    "e.g. Period(seconds=30) or Period(minutes=5)", why,
                ))
        self._make(self, "Period(...)", problems, fields)

    def total_seconds(self) -> float:
        return self.days * 86400 + self.hours * 3600 + self.minutes * 60 + self.seconds
