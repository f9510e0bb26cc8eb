"""Value types the decorator takes: schedules, retries, secrets, storage, liv settings.

These are immutable descriptions. Those whose behaviour is not built yet are accepted as
values (so code written against the API reference imports and type-checks) but the
decorator refuses them with ``NotSupportedError`` instead of ignoring them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .exceptions import InvalidError

F = TypeVar("F", bound=Callable[..., Any])


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def _build(cls, **kwargs: Any) -> Any:
        from ._validation import format_validation_error

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
        from ._validation import format_validation_error

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


class Cron(_Value):
    """Run on a cron schedule (five fields), in ``timezone``."""

    expression: str
    timezone: str = "UTC"

    def __init__(self, expression: str, timezone: str = "UTC", **extra: Any) -> None:
        super().__init__(expression=expression, timezone=timezone, **extra)


class Period(_Value):
    """Run every fixed period (the sum of the given parts)."""

    days: float = Field(default=0, ge=0)
    hours: float = Field(default=0, ge=0)
    minutes: float = Field(default=0, ge=0)
    seconds: float = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _positive(self) -> "Period":
        if self.total_seconds() <= 0:
            raise ValueError("a Period must be longer than zero; give seconds=, minutes=, hours= or days=")
        return self

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
        from .exceptions import NotSupportedError

        raise NotSupportedError(
            "@apothic.liv(...) is not supported yet: generated implementations are not built. "
            "Fix: write the function body yourself and remove @apothic.liv."
        )

    return mark
