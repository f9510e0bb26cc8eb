"""Traces: one call is one OpenTelemetry trace, from the client into the user's code.

Apothic speaks only the OpenTelemetry *API* (``opentelemetry-api``). Where no SDK is set up,
every span here is the API's no-op and nothing is exported. Where one is, spans go wherever
it exports them:

* in a user's process (a script, the CLI), the user's own SDK set up with
  ``opentelemetry.trace.set_tracer_provider``: Apothic never sets one up there;
* in Apothic's own processes, the control worker and the function containers, an SDK set up
  from the standard ``OTEL_*`` variables (:func:`configure_from_env`) when they ask for an
  exporter and ``opentelemetry-sdk`` (with the exporter's package) is installed.

Context travels in Temporal headers (``temporalio.contrib.opentelemetry.TracingInterceptor``
on every client Apothic connects, hence on the workers made with them), from the client's
``apothic.call`` span to the workflows, the control activities and the container's
``apothic.execute`` span, under which the user's function runs with that span current.
Spans carry names and ids only, never argument values or secrets.
"""

from ._setup import configure_from_env, flush
from ._spans import (
    ATTR_APP,
    ATTR_ATTEMPT,
    ATTR_CONTAINER,
    ATTR_FUNCTION,
    ATTR_IMAGE,
    ATTR_JOB,
    ATTR_OFFER,
    ATTR_PROVIDER,
    ATTR_VERSION,
    call_span,
    env_carrier,
    env_context,
    in_context,
    interceptors,
    note_job,
    passed_env,
    span,
    spanned,
    tracing_configured,
    with_caller_context,
)

__all__ = [
    "ATTR_APP",
    "ATTR_ATTEMPT",
    "ATTR_CONTAINER",
    "ATTR_FUNCTION",
    "ATTR_IMAGE",
    "ATTR_JOB",
    "ATTR_OFFER",
    "ATTR_PROVIDER",
    "ATTR_VERSION",
    "call_span",
    "configure_from_env",
    "env_carrier",
    "env_context",
    "flush",
    "in_context",
    "interceptors",
    "note_job",
    "passed_env",
    "span",
    "spanned",
    "tracing_configured",
    "with_caller_context",
]
