"""One call is one OpenTelemetry trace across the client, the control worker and the container.

Real processes throughout: a dev server; a control worker whose ``OTEL_*`` variables point the
standard OTLP/HTTP exporter at a small collector run by this test (it decodes the protobuf
requests), and whose function containers get those variables from it; a client script that
sets up the SDK with its in-memory exporter, as a user would, and prints what it recorded.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ..conftest import (
    ROOT,
    container_pids,
    free_port,
    start_dev_server,
    start_worker,
    stop,
    wait_until,
)

SECRET_ARG = "s3cr3t-argument-value-7f3a"


class Collector:
    """An OTLP/HTTP trace receiver: ``POST /v1/traces`` with an ``ExportTraceServiceRequest``."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                    ExportTraceServiceRequest,
                    ExportTraceServiceResponse,
                )

                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.add(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, request: Any) -> None:
        rows = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    rows.append({
                        "name": s.name,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_id": s.parent_span_id.hex(),
                        "attributes": {kv.key: _value(kv.value) for kv in s.attributes},
                        "status": s.status.message,
                        "events": [e.name for e in s.events],
                        "service": resource.get("service.name"),
                        "resource": resource,
                    })
        with self.lock:
            self.spans.extend(rows)

    def named(self, trace_id: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {s["name"]: s for s in self.spans if s["trace_id"] == trace_id}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind in ("string_value", "int_value", "bool_value", "double_value") else str(v)


@pytest.fixture
def traced_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app_name: str) -> Iterator[dict[str, Any]]:
    """A dev server and a control worker that export spans to a collector of this test."""
    monkeypatch.setenv("APOTHIC_HOME", str(tmp_path))  # one payload key for every process here
    monkeypatch.delenv("APOTHIC_PAYLOAD_KEY_FILE", raising=False)
    from apothic._data._signing import home_key

    home_key()  # made before any process races to make it
    collector = Collector()
    port = free_port()
    address = f"127.0.0.1:{port}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    base.update(APOTHIC_TEMPORAL_ADDRESS=address, APOTHIC_HOME=str(tmp_path), APOTHIC_CONTAINER_IDLE_S="3")
    otel = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    }
    server = start_dev_server(tmp_path / "temporal.db", port)
    worker = start_worker({**base, **otel}, tmp_path / "worker.log")
    try:
        yield {"env": base, "otel": otel, "collector": collector, "home": tmp_path}
    finally:
        stop(worker)
        for pid in container_pids(app_name, supervisors=True):  # idle ones leave by themselves, soon
            os.kill(pid, 9)
        stop(server)
        collector.close()


CLIENT = '''
import json, sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

# The user's own SDK, set up before the first call: spans stay in this process's memory.
memory = InMemorySpanExporter()
provider = TracerProvider(resource=Resource.create({"service.name": "test-client"}))
provider.add_span_processor(SimpleSpanProcessor(memory))
trace.set_tracer_provider(provider)

import apothic

app = apothic.App(sys.argv[1])
marker = sys.argv[2]


@app.function(retries=apothic.Retries(max_retries=1, initial_delay=0.1))
def work(token: str) -> dict:
    import os

    from opentelemetry import trace

    with trace.get_tracer("user-code").start_as_current_span("user.work") as span:
        span.set_attribute("user.pid", os.getpid())
        ids = {"trace_id": format(span.get_span_context().trace_id, "032x"),
               "span_id": format(span.get_span_context().span_id, "016x")}
        if not os.path.exists(marker):  # the first attempt fails: its retry is a span of its own
            open(marker, "w").close()
            raise RuntimeError("the first attempt fails")
        return ids


@app.function()
@apothic.concurrent(max_inputs=2)
async def awork() -> str:
    from opentelemetry import trace

    with trace.get_tracer("user-code").start_as_current_span("user.awork") as span:
        return format(span.get_span_context().trace_id, "032x")


@app.function(image=apothic.Image.debian_slim().env({"TRACED_IMAGE": "1"}))
def imaged() -> str:
    import os

    return os.environ["TRACED_IMAGE"]


tracer = trace.get_tracer("test-client")
with tracer.start_as_current_span("test.deploy"):
    app.deploy()
with tracer.start_as_current_span("test.client"):
    result = work.remote(sys.argv[3])
with tracer.start_as_current_span("test.async"):
    aresult = awork.remote()
with tracer.start_as_current_span("test.image"):
    assert imaged.remote() == "1"
spans = [
    {"name": s.name, "trace_id": format(s.context.trace_id, "032x"), "span_id": format(s.context.span_id, "016x"),
     "parent_id": format(s.parent.span_id, "016x") if s.parent else "", "attributes": dict(s.attributes or {}),
     "status": s.status.description or ""}
    for s in memory.get_finished_spans()
]
print(json.dumps({"result": result, "aresult": aresult, "spans": spans}))
'''


def _run_client(cluster: dict[str, Any], app: str, tmp_path: Path) -> dict[str, Any]:
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(CLIENT))
    # The user's process has the OTEL_* variables too: Apothic sets up no SDK there, so nothing
    # of it reaches the collector (its spans are the in-memory exporter's alone).
    env = {**cluster["env"], **cluster["otel"]}
    proc = subprocess.run(
        [sys.executable, str(script), app, str(tmp_path / "attempted"), SECRET_ARG], check=False,
        capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_one_trace_from_the_client_through_the_worker_into_the_users_code(
    traced_cluster: dict[str, Any], app_name: str, tmp_path: Path
) -> None:
    out = _run_client(traced_cluster, app_name, tmp_path)
    roots = {s["name"]: s for s in out["spans"] if not s["parent_id"]}
    trace_id = roots["test.client"]["trace_id"]
    client = {s["name"]: s for s in out["spans"] if s["trace_id"] == trace_id}
    call = client[f"apothic.call {app_name}.work"]
    root = client["test.client"]
    # Client: the user's span, Apothic's call span under it, Temporal's start under that.
    assert call["trace_id"] == trace_id and call["parent_id"] == root["span_id"]
    assert call["attributes"]["apothic.job_id"].startswith("job-")
    start = client["StartWorkflow:InvocationWorkflow"]
    assert start["trace_id"] == trace_id and start["parent_id"] == call["span_id"]
    deploy = {s["name"]: s for s in out["spans"] if s["trace_id"] == roots["test.deploy"]["trace_id"]}
    assert deploy[f"apothic.deploy {app_name}"]["parent_id"] == roots["test.deploy"]["span_id"]
    # The user's span inside the function saw the same trace.
    assert out["result"]["trace_id"] == trace_id

    collector: Collector = traced_cluster["collector"]
    wanted = {
        "apothic-worker": {"RunWorkflow:InvocationWorkflow", "RunWorkflow:FleetWorkflow",
                           "RunWorkflow:ContainerWorkflow", "apothic.placement", "apothic.provision process",
                           "RunActivity:apothic.ensure_fleet"},
        "apothic-container": {"apothic.container.start", "QueryWorkflow:code",
                              "RunActivity:apothic.execute", f"apothic.execute {app_name}.work attempt 1",
                              f"apothic.execute {app_name}.work attempt 2", "user.work"},
    }

    def arrived() -> bool:
        have: dict[str, set[str]] = {}
        for s in collector.named(trace_id).values():
            have.setdefault(s["service"], set()).add(s["name"])
        return all(names <= have.get(service, set()) for service, names in wanted.items())

    wait_until(arrived, timeout=60, what=f"the worker's and the container's spans of trace {trace_id}")
    spans = collector.named(trace_id)
    # Each retry is a span of its own, and the user's span is the child of the attempt it ran in.
    second = spans[f"apothic.execute {app_name}.work attempt 2"]
    assert second["attributes"]["apothic.attempt"] == 2
    assert second["attributes"]["apothic.job_id"] == call["attributes"]["apothic.job_id"]
    first = spans[f"apothic.execute {app_name}.work attempt 1"]
    assert first["attributes"]["error.type"] == "builtins.RuntimeError"
    users = [s for s in collector.spans if s["name"] == "user.work" and s["trace_id"] == trace_id]
    assert {u["parent_id"] for u in users} == {first["span_id"], second["span_id"]}
    assert out["result"]["span_id"] in {u["span_id"] for u in users}
    # Where each span came from: the container's resource names it; the env's resource applies.
    assert second["resource"]["apothic.container_id"].startswith("c-")
    assert second["resource"]["deployment.environment"] == "test"
    assert spans["apothic.placement"]["attributes"]["apothic.provider"] == "process"
    # The container's start is a step of the activity that started it; its reads of the code, of it.
    run_container = spans["RunActivity:apothic.run_container"]
    assert spans["apothic.placement"]["parent_id"] == run_container["span_id"]
    assert spans["apothic.provision process"]["parent_id"] == run_container["span_id"]
    assert spans["apothic.container.start"]["parent_id"] == run_container["span_id"]
    assert spans["QueryWorkflow:code"]["parent_id"] == spans["apothic.container.start"]["span_id"]
    # The client exported nothing through OTLP (no SDK is set up in a user's process) ...
    assert not [s for s in collector.spans if s["service"] == "test-client"]
    # ... and no span anywhere carries the call's argument.
    everything = json.dumps(collector.spans) + json.dumps(out["spans"])
    assert SECRET_ARG not in everything

    # An async function taking several inputs at once: its user span joins the call's trace too.
    atrace = roots["test.async"]["trace_id"]
    assert out["aresult"] == atrace
    wait_until(lambda: "user.awork" in collector.named(atrace), timeout=60, what="the async function's span")
    aspans = collector.named(atrace)
    assert aspans["user.awork"]["parent_id"] == aspans[f"apothic.execute {app_name}.awork attempt 1"]["span_id"]

    # A function with an image: its build is a span of the provisioning.
    itrace = roots["test.image"]["trace_id"]
    wait_until(lambda: "apothic.image.build" in collector.named(itrace), timeout=60, what="the image build's span")
    ispans = collector.named(itrace)
    assert ispans["apothic.image.build"]["parent_id"] == ispans["apothic.provision process"]["span_id"]
    assert len(ispans["apothic.image.build"]["attributes"]["apothic.image"]) == 16  # the image's tag


def _python(code: str, env: dict[str, str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=False, capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_a_process_without_a_tracer_provider_adds_no_interceptor() -> None:
    """No SDK set up: a user's client gets no interceptor (not even imported); a worker or a
    container gets it always (it passes a caller's context on) and sets up no provider."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    assert _python("""
        import sys
        from opentelemetry import trace
        from apothic._trace import interceptors, configure_from_env
        print(len(interceptors()), "temporalio.contrib.opentelemetry" in sys.modules)
        print(len(interceptors(always=True)), configure_from_env("x"),
              type(trace.get_tracer_provider()).__name__)
    """, env) == ["0", "False", "1", "False", "ProxyTracerProvider"]


def test_without_opentelemetry_sdk_a_process_runs_untraced_and_says_why() -> None:
    """Temporal's interceptor needs opentelemetry-sdk: a process without it gets none and
    runs (a worker asked for traces says on its log why there are none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"
    out = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import sys
        sys.modules["opentelemetry.sdk"] = None  # as if only opentelemetry-api were installed
        from apothic._trace import configure_from_env, interceptors
        print(configure_from_env("x"), len(interceptors(always=True)))
    """)], check=False, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "0"]
    assert "opentelemetry-sdk is not installed" in out.stderr
    assert "traces do not cross this process" in out.stderr and "Fix: install opentelemetry-sdk" in out.stderr


def test_traces_asked_for_with_a_missing_exporter_are_refused_clearly(caplog: pytest.LogCaptureFixture) -> None:
    from apothic._trace._setup import configure_from_env, exporter_names

    assert exporter_names({}) == []
    assert exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == ["otlp"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert exporter_names({"OTEL_TRACES_EXPORTER": "otlp,console", "OTEL_SDK_DISABLED": "true"}) == []
    with caplog.at_level("WARNING", logger="apothic.trace"):
        assert not configure_from_env("x", environ={"OTEL_TRACES_EXPORTER": "zipkin"})
        http_json = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
        assert not configure_from_env("x", environ=http_json)
    text = caplog.text
    assert "OTEL_TRACES_EXPORTER='zipkin'" in text and "install opentelemetry-exporter-zipkin" in text
    assert "'http/json'" in text and "http/protobuf" in text
