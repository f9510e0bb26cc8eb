"""Apothic's spans, the Temporal interceptor that carries their context, and the context of
the code that runs elsewhere (the user's function, a blocking call's coroutine).

Everything here costs next to nothing without an SDK: a span is the API's non-recording span,
and :func:`in_context` / :func:`with_caller_context` return what they were given when there
is no span to carry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
)
from contextvars import ContextVar, Token
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

T = TypeVar("T")

# Attribute names: ids and names only (never argument values, results or secrets).
ATTR_APP = "apothic.app"
ATTR_FUNCTION = "apothic.function"
ATTR_VERSION = "apothic.version"
ATTR_JOB = "apothic.job_id"
ATTR_ATTEMPT = "apothic.attempt"
ATTR_CONTAINER = "apothic.container_id"
ATTR_PROVIDER = "apothic.provider"
ATTR_OFFER = "apothic.offer_id"
ATTR_IMAGE = "apothic.image"

# A proxy until a tracer provider is set, then that provider's tracer: a provider set up after
# this import (the user's, or configure_from_env) is used from then on.
_TRACER = trace.get_tracer("apothic")
_interceptor: Any = None  # made on first use; False: it cannot be (no opentelemetry-sdk)
log = logging.getLogger("apothic.trace")


def exporter_asked() -> bool:
    """Whether this process's environment asks for trace exports (``apothic/_trace/_setup``)."""
    from ._setup import exporter_names

    return bool(exporter_names())


def tracing_configured() -> bool:
    """Whether a tracer provider has been set in this process (by the user or from the env)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def interceptors(always: bool = False) -> list[Any]:
    """The interceptors of a Temporal client Apothic connects (and so of the workers made
    with it): Temporal's ``TracingInterceptor``, which puts the current context in the headers
    of what a client starts, signals or queries and of what a workflow schedules, and opens
    the ``StartWorkflow``/``RunWorkflow``/``StartActivity``/``RunActivity`` spans.

    A user's process gets it only when a tracer provider is set before it connects
    (importing it costs about 0.3 s): none when ``always`` is False and none is set. Apothic's
    workers and containers pass ``always``: without an exporter of their own its spans are
    the API's non-recording ones, which still carry a caller's context on to what they start.
    Temporal's interceptor needs ``opentelemetry-sdk`` installed (its package imports it):
    without it, no interceptor, and a trace does not cross this process.
    """
    global _interceptor
    if _interceptor is False or (not always and not tracing_configured()):
        return []
    if _interceptor is None:
        try:
            from temporalio.contrib.opentelemetry import TracingInterceptor
        except ImportError as e:  # opentelemetry-sdk is not installed: the API alone cannot carry it
            _interceptor = False
            if tracing_configured() or exporter_asked():
                log.warning("traces do not cross this process: Temporal's tracing interceptor needs %s (%s). "
                            "Fix: install opentelemetry-sdk here.", e.name or "opentelemetry-sdk", e)
            return []
        _interceptor = TracingInterceptor()
    return [_interceptor]


@contextlib.contextmanager
def span(
    name: str,
    attributes: dict[str, AttributeValue] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    context: Context | None = None,
) -> Iterator[Span]:
    """A span named ``name``, current for the block, a child of the current span (or of the
    one in ``context``). An exception marks it failed with the exception's type only
    (``error.type``): its message may quote values, so it stays out."""
    with _TRACER.start_as_current_span(
        name, context=context, kind=kind, attributes=attributes, record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as e:
            if current.is_recording():
                failed(current, e)
            raise


async def spanned(
    name: str,
    attributes: dict[str, AttributeValue] | None,
    aw: Awaitable[T],
    result_attributes: Callable[[T], dict[str, AttributeValue]] | None = None,
) -> T:
    """Await ``aw`` inside a span (see :func:`span`); ``result_attributes`` names attributes
    of what it returned (an offer's provider and id). A coroutine to hand on as it is (to a
    task, to a wrapper that heartbeats): the span is opened where it runs."""
    with span(name, attributes) as current:
        result = await aw
        if result_attributes is not None and current.is_recording():
            current.set_attributes(result_attributes(result))
        return result


# The span of the SDK call in progress in this context (apothic.call/apothic.spawn), which
# note_job names the job of.
_CALL: ContextVar[Span | None] = ContextVar("apothic_call_span", default=None)


def call_span(verb: str) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Decorate an ``async def`` method of a function handle (``app_name``, ``function_name``)
    so that each call is one span ``apothic.<verb> <app>.<function>``, the parent of what the
    call starts (its job's workflow, hence its whole trace)."""

    def decorate(afn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(afn)
        async def traced(self: Any, *args: Any, **kwargs: Any) -> T:
            app, fn = self.app_name, self.function_name
            with span(f"apothic.{verb} {app}.{fn}", {ATTR_APP: app, ATTR_FUNCTION: fn}) as current:
                token = _CALL.set(current)
                try:
                    return await afn(self, *args, **kwargs)
                finally:
                    _CALL.reset(token)

        return traced

    return decorate


def note_job(job_id: str) -> None:
    """Name ``job_id`` on the span of the SDK call that submitted it (if any, and recording)."""
    current = _CALL.get()
    if current is not None and current.is_recording():
        current.set_attribute(ATTR_JOB, job_id)


def failed(current: Span, e: BaseException) -> None:
    """Mark ``current`` failed by ``e``: an error status and ``error.type`` (for Temporal's
    ``ApplicationError`` its ``type``, e.g. ``ContainerStartFailed``); a cancellation is no
    error, only ``apothic.cancelled``."""
    if isinstance(e, asyncio.CancelledError):
        current.set_attribute("apothic.cancelled", True)
        return
    kind = getattr(e, "type", None)
    if not isinstance(kind, str) or not kind:
        kind = f"{type(e).__module__}.{type(e).__qualname__}"
    current.set_attribute("error.type", kind)
    current.set_status(Status(StatusCode.ERROR, kind))


def passed_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``OTEL_*`` variables of the control worker a function container gets, so that the
    same SDK settings (exporter, endpoint, headers, sampler, resource) apply where the user's
    code runs; ``OTEL_SERVICE_NAME`` names the worker and stays (containers are
    ``apothic-container`` unless their own environment says otherwise)."""
    return {k: v for k, v in environ.items() if k.startswith("OTEL_") and k != "OTEL_SERVICE_NAME"}


def env_carrier() -> dict[str, str]:
    """The current trace context as environment variables (``TRACEPARENT``, ``TRACESTATE``,
    ``BAGGAGE``: the W3C headers, the convention of OpenTelemetry's environment carriers), for
    a process started here to continue the trace; empty without a span to carry."""
    if not _carries(otel_context.get_current()):
        return {}
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return {k.upper(): v for k, v in carrier.items()}


def env_context(environ: Mapping[str, str]) -> Context | None:
    """The trace context :func:`env_carrier` left in ``environ`` (None: there is none)."""
    if "TRACEPARENT" not in environ:
        return None
    from opentelemetry.propagate import extract

    return extract({k.lower(): environ[k] for k in ("TRACEPARENT", "TRACESTATE", "BAGGAGE") if k in environ})


def _carries(ctx: Context) -> bool:
    """Whether ``ctx`` holds anything to carry: a valid span (or baggage)."""
    if trace.get_current_span(ctx).get_span_context().is_valid:
        return True
    from opentelemetry import baggage

    return bool(baggage.get_all(ctx))


def in_context(fn: Callable[..., T], ctx: Context | None = None) -> Callable[..., T]:
    """``fn`` called with ``ctx`` (default: the current context) as the current context, on
    whatever thread or event loop calls it, so that a span the user's code opens with
    ``tracer.start_as_current_span(...)`` is a child of the span current here.

    What ``fn`` returns lazily (a generator, a coroutine, an async generator) runs its steps
    under ``ctx`` too. Without a span to carry, ``fn`` itself is returned.
    """
    ctx = otel_context.get_current() if ctx is None else ctx
    if not _carries(ctx):
        return fn

    def call(*args: Any, **kwargs: Any) -> Any:
        token = otel_context.attach(ctx)
        try:
            result = fn(*args, **kwargs)
        finally:
            _detach(token)
        if inspect.isgenerator(result):
            return _generator(result, ctx)
        if inspect.isasyncgen(result):
            return _async_generator(result, ctx)
        if inspect.iscoroutine(result):
            return _coroutine(result, ctx)
        return result

    return call


def with_caller_context(coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    """``coro`` to run on another event loop (the SDK's background loop) under the caller's
    current context: the ``apothic.call`` span of a blocking ``fn.remote()`` is then a child of
    the span the caller has open. Without one, ``coro`` itself."""
    ctx = otel_context.get_current()
    if not _carries(ctx):
        return coro
    return _coroutine(coro, ctx)


async def _coroutine(coro: Coroutine[Any, Any, T], ctx: Context) -> T:
    token = otel_context.attach(ctx)
    try:
        return await coro
    finally:
        _detach(token)


def _generator(gen: Any, ctx: Context) -> Any:
    token = otel_context.attach(ctx)
    try:
        return (yield from gen)
    finally:
        _detach(token)


async def _async_generator(agen: Any, ctx: Context) -> AsyncIterator[Any]:
    token = otel_context.attach(ctx)
    try:
        async for value in agen:
            yield value
    finally:
        try:
            await agen.aclose()
        finally:
            _detach(token)


def _detach(token: Token[Context]) -> None:
    """Detach quietly: a generator closed from another context (garbage collection) holds a
    token that is not valid there, and nothing is left to detach."""
    var = getattr(token, "var", None)
    if var is None:  # a runtime context other than contextvars' (OTEL_PYTHON_CONTEXT)
        otel_context.detach(token)
        return
    try:
        var.reset(token)
    except ValueError:
        pass
