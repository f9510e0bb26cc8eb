"""Value types the decorator takes: schedules, retries, secrets, storage, liv settings.

These are immutable descriptions. Those whose behaviour is not built yet are accepted as
values (so code written against the API reference imports and type-checks) but the
decorator refuses them with ``NotSupportedError`` instead of ignoring them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..exceptions import InvalidError

F = TypeVar("F", bound=Callable[..., Any])


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def _build(cls, **kwargs: Any) -> Any:
        from ._problems import format_validation_error

        try:
            return cls(**kwargs)
        except ValidationError as e:
            raise InvalidError(format_validation_error(e, f"{cls.__name__}(...)")) from None


class Retries(_Value):
    """A retry policy for the function's own errors (exceptions and timeouts).

    Retry ``n`` (``n >= 1``) starts ``min(initial_delay * backoff_coefficient**(n-1), max_delay)``
    seconds after the attempt before it failed; ``max_retries=0`` runs the function once. The
    wait is a durable timer: it survives restarts of workers and server.

    Never retried, whatever the policy: the exception types listed in ``non_retryable`` (types
    or their ``"module.Qualname"``; subclasses are not matched), ``apothic.InvalidError`` raised
    by the function, arguments the container cannot load, and results that cannot be returned.
    A lost container or host is not a user error: it is retried separately and never counts
    here (see the architecture page).
    """

    max_retries: int = Field(ge=0, le=100)
    initial_delay: float = Field(default=1.0, ge=0.001, le=3600.0)
    backoff_coefficient: float = Field(default=2.0, ge=1.0, le=10.0)
    max_delay: float = Field(default=60.0, ge=0.001, le=86400.0)
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
        from ._problems import format_validation_error

        names = []
        for item in non_retryable if isinstance(non_retryable, (list, tuple, set)) else [non_retryable]:
            if isinstance(item, type) and issubclass(item, BaseException):
                names.append(f"{item.__module__}.{item.__qualname__}")
            elif isinstance(item, str) and item:
                names.append(item)
            else:
                raise InvalidError(
                    f"Retries(non_retryable=...): {item!r} is not an exception type or its 'module.Qualname'. "
                    "Fix: list exception classes, e.g. non_retryable=[ValueError]."
                )
        try:
            super().__init__(
                max_retries=max_retries,
                initial_delay=initial_delay,
                backoff_coefficient=backoff_coefficient,
                max_delay=max_delay,
                non_retryable=tuple(sorted(set(names))),
                **extra,
            )
        except ValidationError as e:
            raise InvalidError(format_validation_error(e, "Retries(...)")) from None


# What a schedule does with a run that is due while the previous one still runs.
Overlap = Literal["skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"]
OVERLAP_POLICIES: tuple[str, ...] = get_args(Overlap)


def _check_schedule(where: str, problems: list[str], overlap: object) -> None:
    from ._problems import format_problem

    if overlap not in OVERLAP_POLICIES:
        problems.append(
            format_problem(
                "overlap", overlap, ", ".join(repr(o) for o in OVERLAP_POLICIES),
                "leave the default overlap='skip' or pick one of the allowed policies", "unknown overlap policy",
            )
        )
    if problems:
        raise InvalidError(f"{where}: {len(problems)} problem(s):\n" + "\n".join(problems))


class Cron(_Value):
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
        from ._problems import format_problem

        problems = [
            format_problem(
                "expression", expression, "five cron fields such as '0 * * * *', or @hourly, @daily, @weekly, "
                "@monthly, @yearly", "write five fields, e.g. Cron('*/15 * * * *'), or use apothic.Period(...) "
                "for a fixed interval", msg,
            )
            for msg in cron_problems(expression)
        ] + [
            format_problem("timezone", timezone, "an IANA time zone name", "e.g. timezone='America/New_York'", msg)
            for msg in timezone_problems(timezone)
        ]
        _check_schedule(f"Cron({expression!r})", problems, overlap)
        from ._problems import format_validation_error

        try:
            super().__init__(expression=expression.strip(), timezone=timezone, overlap=overlap, **extra)
        except ValidationError as e:
            raise InvalidError(format_validation_error(e, "Cron(...)")) from None

    def temporal_expressions(self) -> list[str]:
        """The Temporal cron strings this schedule runs as (fired as their union)."""
        from .._schedule._cron import temporal_cron

        return temporal_cron(self.expression)


class Period(_Value):
    """Run every fixed period: the sum of the given parts, a whole number of seconds (at least
    one). Runs are aligned to the Unix epoch, not to the deploy: ``Period(hours=1)`` runs on
    the hour (UTC), ``Period(days=1)`` at 00:00 UTC. ``overlap`` and the rest: as for :class:`Cron`.
    """

    days: float = Field(default=0, ge=0)
    hours: float = Field(default=0, ge=0)
    minutes: float = Field(default=0, ge=0)
    seconds: float = Field(default=0, ge=0)
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
        from ._problems import format_problem, format_validation_error

        try:
            super().__init__(
                days=days, hours=hours, minutes=minutes, seconds=seconds,
                overlap=overlap if overlap in OVERLAP_POLICIES else "skip", **extra,
            )
        except ValidationError as e:
            raise InvalidError(format_validation_error(e, "Period(...)")) from None
        problems = []
        total = self.total_seconds()
        if total < 1 or abs(total - round(total)) > 1e-6:
            problems.append(
                format_problem(
                    "days*86400 + hours*3600 + minutes*60 + seconds", total, "a whole number of seconds, at least 1",
                    "e.g. Period(seconds=30) or Period(minutes=5)", "Temporal schedules have one-second resolution",
                )
            )
        _check_schedule("Period(...)", problems, overlap)

    def total_seconds(self) -> float:
        return self.days * 86400 + self.hours * 3600 + self.minutes * 60 + self.seconds


class LivConfig(_Value):
    """Settings for generating a function's implementation before deploy."""

    self_debug: bool = False
    cache: str = "account"
    examples: tuple[Any, ...] = ()
    model: str | None = None


class Secret(_Value):
    """A named secret, resolved when a container starts and put in its environment."""

    name: str = Field(min_length=1)

    @classmethod
    def from_name(cls, name: str) -> "Secret":
        return cls._build(name=name)


class StorageMount(_Value):
    """Something mounted into the function's filesystem at ``mount_path``."""

    kind: Literal["volume", "bucket"]
    mount_path: str | None = None
    name: str = ""
    backend: str = "default"
    create_if_missing: bool = False
    options: dict[str, Any] = Field(default_factory=dict)

    def mounted_at(self, path: str) -> "StorageMount":
        if not path.startswith("/"):
            raise InvalidError(f"mount path {path!r} is not absolute. Fix: give a path like '/data'.")
        return self.model_copy(update={"mount_path": path})


class Volume:
    """Named persistent storage (constructors return :class:`StorageMount` values)."""

    @staticmethod
    def from_name(name: str, *, create_if_missing: bool = False, mount_path_default: str | None = None) -> StorageMount:
        return StorageMount._build(
            kind="volume", name=name, create_if_missing=create_if_missing, mount_path=mount_path_default
        )

    @staticmethod
    def cloud(name: str, *, mount_path_default: str | None = None, **options: Any) -> StorageMount:
        return StorageMount._build(
            kind="volume", name=name, backend="cloud", mount_path=mount_path_default, options=options
        )

    @staticmethod
    def create(name: str, *, backend: str = "default", mount_path_default: str | None = None) -> StorageMount:
        return StorageMount._build(
            kind="volume", name=name, backend=backend, create_if_missing=True, mount_path=mount_path_default
        )


def CloudBucketMount(  # noqa: N802 - a constructor by the API reference's name
    bucket_name: str,
    *,
    access_key_secret: str | None = None,
    secret_key_secret: str | None = None,
    endpoint_url: str | None = None,
    prefix: str | None = None,
    read_only: bool = False,
) -> StorageMount:
    """An existing S3-compatible bucket (credentials are secret names, not values)."""
    return StorageMount._build(
        kind="bucket",
        name=bucket_name,
        options={
            "access_key_secret": access_key_secret,
            "secret_key_secret": secret_key_secret,
            "endpoint_url": endpoint_url,
            "prefix": prefix,
            "read_only": read_only,
        },
    )


def concurrent(*, max_inputs: int, target_inputs: int | None = None) -> Callable[[F], F]:
    """Mark a function to take several inputs at once in one container."""

    def mark(fn: F) -> F:
        fn.__apothic_concurrent__ = {"max_inputs": max_inputs, "target_inputs": target_inputs}  # type: ignore[attr-defined]
        return fn

    return mark


def batched(*, max_batch_size: int, wait_ms: int) -> Callable[[F], F]:
    """Mark a function to receive lists of inputs gathered by the runtime."""

    def mark(fn: F) -> F:
        fn.__apothic_batched__ = {"max_batch_size": max_batch_size, "wait_ms": wait_ms}  # type: ignore[attr-defined]
        return fn

    return mark


def liv(**settings: Any) -> Callable[[Any], Any]:
    """Generate a function's implementation from its stub before deploy."""

    def mark(fn: Any) -> Any:
        from ..exceptions import NotSupportedError

        raise NotSupportedError(
            "@apothic.liv(...) is not supported yet: generated implementations are not built. "
            "Fix: write the function body yourself and remove @apothic.liv."
        )

    return mark
