"""No ``temporalio`` exception reaches a user: every entry point, against a real server (and
against servers that are missing, silent or gone), raises errors of the Apothic tree only.

Each check looks at the exception actually raised: its type is an ``apothic`` type and no
class of its MRO comes from ``temporalio``; where the translation layer made it, the
original Temporal exception is chained as ``__cause__``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import apothic
from apothic import ControlPlaneClient, InvalidError, Job, NotFoundError, RemoteFunction
from apothic._schedule._schedules import Schedules
from apothic.exceptions import (
    ApothicError,
    CallTimeoutError,
    ConnectionError,
    ServerError,
    ServerTimeoutError,
)

from ..conftest import ROOT, free_port, start_dev_server, stop
from ..e2e.cli import apothic as apothic_cli


def from_temporalio(exc: BaseException) -> bool:
    return any(c.__module__.split(".")[0] == "temporalio" for c in type(exc).__mro__)


def assert_apothic(exc: BaseException, kind: type[ApothicError] = ApothicError) -> None:
    """``exc`` is an Apothic error of ``kind``, and nothing about its type is Temporal's."""
    assert isinstance(exc, kind), f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
    assert type(exc).__module__.startswith("apothic"), type(exc).__module__
    assert not from_temporalio(exc), [c.__module__ for c in type(exc).__mro__]


def raised(call) -> BaseException:
    try:
        call()
    except BaseException as e:  # noqa: BLE001 - the point is to look at whatever it is
        return e
    raise AssertionError("no exception was raised")


async def araised(aw) -> BaseException:
    try:
        await aw
    except BaseException as e:  # noqa: BLE001
        return e
    raise AssertionError("no exception was raised")


@pytest.fixture
def closed_port() -> int:
    return free_port()  # bound once, then closed: nothing listens there


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A plain listening socket that accepts connections (the kernel does) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


# --- a real server: every entry point on something that does not exist ------------------------


def test_missing_app_and_job_raise_apothic_errors_only(temporal: str) -> None:
    missing = RemoteFunction.from_name(f"no-app-{uuid.uuid4().hex[:6]}", "f")
    for call in (missing.remote, missing.spawn, lambda: missing.map([1, 2]), lambda: missing.spawn_map([1]),
                 lambda: list(missing.remote_gen()), lambda: list(missing.remote_events())):
        e = raised(call)
        assert_apothic(e, NotFoundError)
        assert missing.app_name in str(e) and temporal in str(e)

    job = Job.from_id(f"job-{uuid.uuid4().hex[:20]}")
    for call in (job.status, job.wait, job.logs, job.cancel, lambda: list(job.watch()),
                 lambda: list(job.watch(snapshot=True)), lambda: list(job.watch(after_seq=2))):
        e = raised(call)
        assert_apothic(e, NotFoundError)
        assert job.job_id in str(e)

    for bad in ("", "  ", None, 7):
        e = raised(lambda bad=bad: Job.from_id(bad))  # type: ignore[arg-type]
        assert_apothic(e, InvalidError)
        assert repr(bad) in str(e) and "Fix:" in str(e)


def test_the_aio_forms_raise_the_same(temporal: str) -> None:
    async def main() -> None:
        job = Job.from_id(f"job-{uuid.uuid4().hex[:20]}")
        for aw in (job.aio.status(), job.aio.wait(), job.aio.cancel()):
            assert_apothic(await araised(aw), NotFoundError)

        async def watch() -> None:
            async for _ in job.aio.watch(snapshot=True):
                pass

        assert_apothic(await araised(watch()), NotFoundError)
        missing = RemoteFunction.from_name(f"no-app-{uuid.uuid4().hex[:6]}", "f")
        assert_apothic(await araised(missing.aio.remote()), NotFoundError)
        assert_apothic(await araised(Schedules().aio.pause(missing.app_name, "f")), NotFoundError)

    asyncio.run(main())


def test_schedules_of_a_missing_app(temporal: str) -> None:
    app = f"no-app-{uuid.uuid4().hex[:6]}"
    s = Schedules()
    assert s.list(app) == [] and s.delete(app) == [] and s.delete(app, "f") == []
    now = datetime.now()
    for call in (lambda: s.get(app, "f"), lambda: s.pause(app, "f"), lambda: s.resume(app, "f"),
                 lambda: s.trigger(app, "f"), lambda: s.backfill(app, "f", now - timedelta(hours=1), now)):
        e = raised(call)
        assert_apothic(e, NotFoundError)
        assert f"{app}.f" in str(e)


def test_a_missing_namespace_is_not_found_naming_it(temporal: str) -> None:
    cp = ControlPlaneClient(temporal, namespace="no-such-namespace")
    e = raised(lambda: Schedules(client=cp).list())
    assert_apothic(e, NotFoundError)
    assert "no-such-namespace" in str(e) and temporal in str(e)
    assert from_temporalio(e.__cause__)  # the translation keeps the original chained
    assert_apothic(raised(Job.from_id("job-x", client=cp).status), NotFoundError)


def test_a_bad_address_is_invalid_before_any_connection() -> None:
    for bad in ("garbage", "http://127.0.0.1:7233", "127.0.0.1:0", "127.0.0.1:99999", ""):
        e = raised(lambda bad=bad: ControlPlaneClient(bad))
        assert_apothic(e, InvalidError)
        assert repr(bad) in str(e) and "host:port" in str(e)
        assert_apothic(raised(lambda bad=bad: RemoteFunction.from_name("a", "f", base_url=bad)), InvalidError)


def test_a_query_nobody_answers_is_a_server_timeout(temporal: str) -> None:
    """A job whose workflow no worker runs (the control worker is down): its events are a
    query, which the server gives up on after 30 s."""
    from temporalio.client import Client

    job_id = f"job-{uuid.uuid4().hex[:20]}"

    async def start() -> None:
        client = await Client.connect(temporal)
        await client.start_workflow("InvocationWorkflow", id=job_id, task_queue=f"nobody-{job_id}")

    asyncio.run(start())
    job = Job.from_id(job_id)
    assert str(job.status()) == "queued"  # a describe needs no worker
    started = time.monotonic()
    e = raised(lambda: next(iter(job.watch())))
    assert_apothic(e, ServerTimeoutError)
    assert time.monotonic() - started < 60
    assert job_id in str(e) and temporal in str(e) and "control worker" in str(e)
    assert from_temporalio(e.__cause__)
    job.cancel(wait_s=0)


# --- servers that are missing, silent or gone -----------------------------------------------------


def test_a_closed_port_fails_at_once_naming_the_address(monkeypatch: pytest.MonkeyPatch, closed_port: int) -> None:
    address = f"127.0.0.1:{closed_port}"
    monkeypatch.setenv("APOTHIC_TEMPORAL_ADDRESS", address)
    app = apothic.App(f"closed-{uuid.uuid4().hex[:6]}")

    @app.function()
    def f() -> int:
        return 1

    fn = RemoteFunction.from_name(app.name, "f")
    job = Job.from_id("job-x")
    for call in (app.deploy, f.remote, fn.remote, fn.spawn, lambda: fn.map([1]), lambda: list(fn.remote_gen()),
                 job.status, job.wait, job.logs, job.cancel, lambda: list(job.watch()),
                 lambda: Schedules().list(), lambda: Schedules().pause(app.name, "f")):
        started = time.monotonic()
        e = raised(call)
        assert time.monotonic() - started < 5
        assert_apothic(e, ConnectionError)
        assert address in str(e) and e.address == address
        assert "nothing listens there" in str(e) and "APOTHIC_TEMPORAL_ADDRESS" in str(e) and "apothic dev" in str(e)


def test_a_silent_server_fails_within_the_connect_timeout(monkeypatch: pytest.MonkeyPatch, silent_port: int) -> None:
    address = f"127.0.0.1:{silent_port}"
    monkeypatch.setenv("APOTHIC_TEMPORAL_ADDRESS", address)
    monkeypatch.delenv("APOTHIC_CONNECT_TIMEOUT_S", raising=False)
    started = time.monotonic()
    e = raised(Job.from_id("job-x").status)  # the default: 10 s (Temporal's own client waits 30)
    took = time.monotonic() - started
    assert_apothic(e, ConnectionError)
    assert 9 < took < 25, took  # the bound, plus room for a busy machine
    assert address in str(e) and "did not answer within 10 s" in str(e) and "APOTHIC_TEMPORAL_ADDRESS" in str(e)

    # The bound is a setting; over TLS the same socket would otherwise hang for ever.
    monkeypatch.setenv("APOTHIC_CONNECT_TIMEOUT_S", "2")
    monkeypatch.setenv("APOTHIC_TEMPORAL_TLS", "1")

    async def aio() -> BaseException:
        return await araised(RemoteFunction.from_name("a", "f").aio.remote())

    started = time.monotonic()
    e = asyncio.run(aio())
    took = time.monotonic() - started
    assert_apothic(e, ConnectionError)
    assert 1.5 < took < 15, took
    assert address in str(e) and "over TLS within 2 s" in str(e)


def test_the_callers_timeout_covers_connecting(monkeypatch: pytest.MonkeyPatch, silent_port: int) -> None:
    """remote(timeout_s=2) against a server that accepts and never answers returns after about
    2 s, not after the 10 s connect bound: the caller's clock covers connecting too."""
    address = f"127.0.0.1:{silent_port}"
    monkeypatch.setenv("APOTHIC_TEMPORAL_ADDRESS", address)
    monkeypatch.delenv("APOTHIC_CONNECT_TIMEOUT_S", raising=False)
    fn = RemoteFunction.from_name("a", "f")
    for call in (lambda: fn.remote(1, timeout_s=2), lambda: list(fn.remote_gen(timeout_s=2)),
                 lambda: fn.map([1, 2], timeout_s=2)):
        started = time.monotonic()
        e = raised(call)
        took = time.monotonic() - started
        assert_apothic(e, CallTimeoutError)
        assert 1.5 < took < 8, took  # well inside the 10 s connect bound
        assert address in str(e) and "timeout_s=2" in str(e) and "connecting" in str(e)


def test_a_server_that_goes_away_gives_connection_errors(tmp_path: Path) -> None:
    """Connected first, then the server is killed: every call's RPC fails as UNAVAILABLE,
    which the translation layer turns into ConnectionError naming the address."""
    port = free_port()
    proc = start_dev_server(tmp_path / "gone.db", port)
    address = f"127.0.0.1:{port}"
    cp = ControlPlaneClient(address)
    try:
        job = Job.from_id("job-x", client=cp)
        assert_apothic(raised(job.status), NotFoundError)  # connected, and the server answers
    finally:
        stop(proc, sig_kill=True)
    fn = RemoteFunction.from_name("gone", "f", client=cp)
    schedules = Schedules(client=cp)

    async def watch() -> None:
        async for _ in job.aio.watch():
            pass

    async def main() -> list[BaseException]:
        calls = [job.aio.status(), job.aio.wait(), job.aio.logs(), job.aio.cancel(), watch(), fn.aio.remote(),
                 fn.aio.spawn(), fn.aio.for_each([1, 2]), schedules.aio.list(), schedules.aio.get("gone", "f")]
        return list(await asyncio.gather(*(araised(c) for c in calls)))

    started = time.monotonic()
    errors = asyncio.run(main())
    assert time.monotonic() - started < 30
    for e in errors:
        assert_apothic(e, ConnectionError)
        assert address in str(e) and "unreachable" in str(e) and "Fix:" in str(e)
        assert from_temporalio(e.__cause__), repr(e.__cause__)
    assert "Job.status(job-x)" in str(errors[0]) and "Schedules.list" in str(errors[8])


# --- the command line ----------------------------------------------------------------------------


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("apothic: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "temporalio" not in proc.stderr
    return lines[0]


def test_the_cli_prints_one_line_and_the_traceback_only_with_debug(
    monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    address = f"127.0.0.1:{closed_port}"
    monkeypatch.setenv("APOTHIC_TEMPORAL_ADDRESS", address)
    monkeypatch.delenv("APOTHIC_DEBUG", raising=False)
    for args in (["jobs", "status", "job-x"], ["jobs", "list"], ["schedules", "list"]):
        proc = apothic_cli(*args, check=False, timeout=60)
        assert proc.returncode == 1
        line = one_error_line(proc)
        assert address in line and "nothing listens there" in line

    for args, env in ((["--debug", "jobs", "status", "job-x"], {}), (["jobs", "status", "job-x", "--debug"], {}),
                      (["jobs", "status", "job-x"], {"APOTHIC_DEBUG": "1"})):
        monkeypatch.delenv("APOTHIC_DEBUG", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        proc = apothic_cli(*args, check=False, timeout=60)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.startswith("Traceback (most recent call last):"), proc.stderr
        # The cause (Temporal's own error) is chained above Apothic's.
        assert "RuntimeError: Failed client connect" in proc.stderr
        assert "The above exception was the direct cause of the following exception" in proc.stderr
        assert proc.stderr.splitlines()[-1].startswith(f"apothic: error: cannot reach the Temporal server at {address}")

    usage = apothic_cli("jobs", "frobnicate", check=False)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr


def test_the_cli_translates_what_a_command_lets_through(temporal: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # `jobs list` calls the Temporal client itself (not through an SDK method): the CLI
    # translates what it raises, here the server's "namespace not found".
    monkeypatch.setenv("APOTHIC_TEMPORAL_NAMESPACE", "no-such-namespace")
    proc = apothic_cli("jobs", "list", check=False, timeout=60)
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "not found" in line and "no-such-namespace" in line and temporal in line
    monkeypatch.delenv("APOTHIC_TEMPORAL_NAMESPACE")

    missing = apothic_cli("jobs", "status", f"job-{uuid.uuid4().hex[:20]}", check=False, timeout=60)
    assert missing.returncode == 1 and "no job" in one_error_line(missing)


def test_the_cli_bounds_a_silent_server(monkeypatch: pytest.MonkeyPatch, silent_port: int) -> None:
    address = f"127.0.0.1:{silent_port}"
    monkeypatch.setenv("APOTHIC_TEMPORAL_ADDRESS", address)
    monkeypatch.setenv("APOTHIC_CONNECT_TIMEOUT_S", "2")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "apothic", "jobs", "status", "job-x"], capture_output=True, text=True,
                          env=dict(os.environ), cwd=str(ROOT), timeout=60, check=False)
    assert time.monotonic() - started < 8
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert address in line and "did not answer within 2 s" in line


def test_server_error_keeps_the_status(temporal: str) -> None:
    """A refusal with no more specific type is a ServerError carrying the gRPC status name."""
    from apothic._control._client import get_client
    from apothic._control._errors import translate_error
    from apothic._control._loop import run_blocking

    async def bad_query() -> None:
        client = await get_client(ControlPlaneClient(temporal).settings)
        async for _ in client.list_workflows("WorkflowType = 'unterminated"):
            pass

    e = raised(lambda: run_blocking(bad_query()))
    assert from_temporalio(e)  # the raw call, outside the SDK's methods
    shown = translate_error(e)
    assert_apothic(shown, ServerError)
    assert shown.status == "INVALID_ARGUMENT" and str(e) in str(shown)


class UpstreamError(Exception):
    """A user's exception type; below, one that derives from a Temporal type."""


def test_a_users_own_exception_is_never_translated(app_name: str, control_worker) -> None:
    """The function's own exception comes back as its own type, even one that derives from a
    ``temporalio`` type (code that uses Temporal itself): the layer leaves it alone."""
    from temporalio.exceptions import TemporalError

    app = apothic.App(app_name)

    class TemporalFlavoured(TemporalError):
        pass

    @app.function()
    def fails(kind: str) -> None:
        raise (TemporalFlavoured if kind == "temporal" else UpstreamError)(f"{kind} went wrong")

    app.deploy()
    e = raised(lambda: fails.remote("temporal"))
    assert type(e).__name__ == "TemporalFlavoured" and isinstance(e, TemporalError), repr(e)
    assert str(e) == "temporal went wrong" and "Remote traceback (job" in "\n".join(e.__notes__)
    e = raised(lambda: fails.remote("plain"))
    assert type(e) is UpstreamError and str(e) == "plain went wrong"
    job = fails.spawn("temporal")
    assert type(raised(job.wait)).__name__ == "TemporalFlavoured"
