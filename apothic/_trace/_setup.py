"""An OpenTelemetry SDK for Apothic's own processes, set up from the standard ``OTEL_*`` variables.

The control worker and the function containers are Apothic's processes: nobody else can set
up an SDK in them before their spans start. :func:`configure_from_env` does it the way the
SDK's own auto-configuration (``opentelemetry-instrument``) would, for traces only:

* Nothing happens unless the environment asks for an exporter: ``OTEL_TRACES_EXPORTER``
  (comma-separated names; ``none`` for none), or, without it, ``OTEL_EXPORTER_OTLP_ENDPOINT``
  / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (meaning ``otlp``); ``OTEL_SDK_DISABLED=true``
  turns it off. Nor when a tracer provider is set already.
* Exporters are found by name among the ``opentelemetry_traces_exporter`` entry points
  (``console`` comes with ``opentelemetry-sdk``; ``otlp_proto_http`` with
  ``opentelemetry-exporter-otlp-proto-http``; ``otlp_proto_grpc`` with ``...-proto-grpc``).
  ``otlp`` takes the protocol of ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` or
  ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc``, ``http/protobuf``); with neither set, gRPC when
  its exporter is installed, else HTTP. The exporters read their own variables (endpoint,
  headers, timeout, TLS).
* Each exporter gets a ``BatchSpanProcessor`` (``OTEL_BSP_*``); the provider's sampler
  follows ``OTEL_TRACES_SAMPLER``; its resource ``OTEL_RESOURCE_ATTRIBUTES`` and
  ``OTEL_SERVICE_NAME``, with ``service.name`` defaulting to the process's role
  (``apothic-worker``, ``apothic-container``).

A process that asks for traces it cannot have (the SDK or the exporter is not installed, a
name is unknown) says so once on its log, naming the variable, the value and the fix, and runs
without traces: observability never stops a worker or a container.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

log = logging.getLogger("apothic.trace")

_ENDPOINT_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
_PACKAGE_OF = {
    "otlp_proto_http": "opentelemetry-exporter-otlp-proto-http",
    "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "otlp": "opentelemetry-exporter-otlp-proto-grpc",
    "zipkin": "opentelemetry-exporter-zipkin",
    "console": "opentelemetry-sdk",
}


def exporter_names(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The trace exporters the environment asks for (empty: none)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not raw:
        return ["otlp"] if any(environ.get(k, "").strip() for k in _ENDPOINT_ENV) else []
    return [n for n in (part.strip() for part in raw.split(",")) if n and n != "none"]


def configure_from_env(
    service: str, attributes: Mapping[str, str] | None = None, environ: Mapping[str, str] = os.environ
) -> bool:
    """Set up a global tracer provider from the ``OTEL_*`` variables (see the module's doc).

    ``service`` is the default ``service.name``; ``attributes`` join the resource (ids of the
    process: its container, app, function). Returns whether a provider was set up here.
    """
    names = exporter_names(environ)
    if not names or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_TRACES_EXPORTER/OTEL_EXPORTER_OTLP_ENDPOINT ask for traces, but opentelemetry-sdk is not installed "
            "in this Python; running without traces. Fix: install opentelemetry-sdk and an exporter (e.g. "
            "opentelemetry-exporter-otlp-proto-http) here (for a function container: in its image)."
        )
        return False
    exporters = []
    for name in names:
        exporter = _exporter(name, environ)
        if exporter is not None:
            exporters.append(exporter)
    if not exporters:
        return False
    resource_attrs: dict[str, Any] = dict(attributes or {})
    given = environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if not environ.get("OTEL_SERVICE_NAME", "").strip() and "service.name=" not in given.replace(" ", ""):
        resource_attrs["service.name"] = service
    provider = TracerProvider(resource=Resource.create(resource_attrs))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def _exporter(name: str, environ: Mapping[str, str]) -> Any:
    """A new exporter for ``name``, or None (said on the log) when there is none to make."""
    from importlib.metadata import entry_points

    available = {ep.name: ep for ep in entry_points(group="opentelemetry_traces_exporter")}
    chosen = name
    if name == "otlp":
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
        protocol = protocol.strip()
        if protocol and protocol not in _OTLP_BY_PROTOCOL:
            log.warning(
                "OTEL_EXPORTER_OTLP_PROTOCOL=%r is not a protocol the Python exporters speak (allowed: %s); running "
                "without the otlp exporter. Fix: set it to http/protobuf or grpc.",
                protocol, ", ".join(_OTLP_BY_PROTOCOL),
            )
            return None
        if protocol:
            chosen = _OTLP_BY_PROTOCOL[protocol]
        else:
            http_only = "otlp_proto_http" in available and "otlp_proto_grpc" not in available
            chosen = "otlp_proto_http" if http_only else "otlp_proto_grpc"
    ep = available.get(chosen)
    if ep is None:
        package = _PACKAGE_OF.get(chosen)
        fix = f"install {package} in this Python" if package else "name an installed exporter"
        log.warning(
            "OTEL_TRACES_EXPORTER=%r: no trace exporter %r is installed (installed: %s); running without it. Fix: %s.",
            environ.get("OTEL_TRACES_EXPORTER", name), chosen, ", ".join(sorted(available)) or "none", fix,
        )
        return None
    try:
        return ep.load()()
    except Exception as e:  # noqa: BLE001 - a broken exporter must not stop the process
        log.warning("the trace exporter %r could not be made (%s: %s); running without it.",
                    chosen, type(e).__name__, e)
        return None


def flush(timeout_s: float = 5.0) -> None:
    """Export the spans still buffered (before a process leaves with ``os._exit``, which skips
    the SDK's own exit hook), waiting at most ``timeout_s``. Any provider: ours or the user's."""
    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is None:
        return
    try:
        force_flush(int(timeout_s * 1000))
    except Exception as e:  # noqa: BLE001 - leaving must not fail on a collector
        log.warning("could not export the last spans: %s: %s", type(e).__name__, e)
