"""The ``process`` provider: a function container is a process on this host.

The container runs ``python -m apothic.runtime`` with the control worker's own interpreter,
in its own session. It is not tied to the worker that started it: when that worker dies or
restarts, the container carries on with its inputs, and the worker that takes over its
ContainerWorkflow *adopts* it by pid. A container stops by itself once its ContainerWorkflow
has ended or after its idle window, and :meth:`ProcessProvider.release` kills whatever still
carries its container id, so no container outlives its workflow.

Limits: one host (adoption and release see only this host's processes); ``cpu``,
``memory_mb`` and ``disk_gb`` are not enforced (the docker provider enforces them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

CONTAINER_ENV = "APOTHIC_CONTAINER_ID"
# Exit code reported for a container that vanished without leaving its status.
EXIT_UNKNOWN = -9


@dataclasses.dataclass
class ProcessHandle:
    container_id: str
    pid: int
    log_path: Path
    status_path: Path
    proc: asyncio.subprocess.Process | None = None  # None: adopted, not our child


class ProcessProvider:
    """Start, adopt, watch, stop and release container processes on this host."""

    name = "process"

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)

    def _paths(self, container_id: str) -> tuple[Path, Path]:
        return self.state_dir / f"{container_id}.log", self.state_dir / f"{container_id}.exit"

    async def start(
        self, container_id: str, env: Mapping[str, str], *, python: str | None = None, cwd: str | None = None
    ) -> ProcessHandle:
        """Start ``python -m apothic.runtime`` (the worker's interpreter unless ``python`` names
        an image's virtual environment) with ``env``, in ``cwd`` if given."""
        log_path, status_path = self._paths(container_id)
        status_path.unlink(missing_ok=True)
        full_env = dict(os.environ)
        full_env.update(env)
        full_env[CONTAINER_ENV] = container_id
        full_env["APOTHIC_STATUS_FILE"] = str(status_path)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        with open(log_path, "ab") as log:
            proc = await asyncio.create_subprocess_exec(
                python or sys.executable,
                "-m",
                "apothic.runtime",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
                cwd=cwd,
            )
        return ProcessHandle(container_id, proc.pid, log_path, status_path, proc)

    def adopt(self, container_id: str, pid: int) -> ProcessHandle | None:
        """A handle on a container started by another worker of this host, if it still runs.

        ``pid`` 0 (its starter died before recording it): the runtime is found by the
        container id in its environment (the leader of its own session).
        """
        log_path, status_path = self._paths(container_id)
        if pid <= 0:
            pid = next((p for p in _pids_carrying(container_id) if _leads_session(p)), 0)
        if pid <= 0 or not _running(pid, container_id):
            return None
        return ProcessHandle(container_id, pid, log_path, status_path, None)

    async def wait(self, handle: ProcessHandle, timeout: float) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""
        if handle.proc is not None:
            try:
                return await asyncio.wait_for(asyncio.shield(handle.proc.wait()), timeout)
            except asyncio.TimeoutError:
                return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while _running(handle.pid, handle.container_id):
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))
        return self.exit_status(handle.container_id)

    async def stop(self, handle: ProcessHandle, grace_s: float, tick: Callable[[], None] | None = None) -> int:
        """SIGTERM (the runtime drains: in-flight inputs finish), then SIGKILL after ``grace_s``.

        ``tick`` is called every two seconds while waiting (to heartbeat).
        """
        code = await self.wait(handle, 0)
        if code is None:
            try:
                os.kill(handle.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace_s
            while code is None and loop.time() < deadline:
                code = await self.wait(handle, min(2.0, max(0.0, deadline - loop.time())))
                if code is None and tick is not None:
                    tick()
            if code is None:
                try:
                    os.killpg(handle.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                code = await self.wait(handle, 10)
        return EXIT_UNKNOWN if code is None else code

    def exit_status(self, container_id: str) -> int:
        """The exit code a finished container left, or EXIT_UNKNOWN."""
        try:
            return int(self._paths(container_id)[1].read_text().strip())
        except (OSError, ValueError):
            return EXIT_UNKNOWN

    def log_tail(self, container_id: str, limit: int = 4000) -> str:
        log_path, _ = self._paths(container_id)
        try:
            with open(log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def release(self, container_id: str) -> list[int]:
        """Kill every process on this host that carries ``container_id``; returns their pids."""
        killed = []
        for pid in _pids_carrying(container_id):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        return killed


def containers_in(state_dir: Path, env: Mapping[str, str] | None = None) -> dict[str, list[int]]:
    """The container processes of this host that a provider on ``state_dir`` started.

    Returns container id -> pids (the runtime and whatever it started), found by the
    ``APOTHIC_STATUS_FILE`` in their environment, which lies in ``state_dir``, and which holds
    ``env`` too if given (e.g. a Temporal address). Finds them whichever worker started them,
    even one that is gone.
    """
    folder = os.path.realpath(state_dir)
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        values = dict(item.decode("utf-8", "replace").partition("=")[::2] for item in environ if b"=" in item)
        container_id = values.get(CONTAINER_ENV)
        status = values.get("APOTHIC_STATUS_FILE", "")
        if (container_id and status and os.path.realpath(os.path.dirname(status)) == folder
                and all(values.get(k) == v for k, v in (env or {}).items())
                and _running(int(entry.name), container_id)):
            found.setdefault(container_id, []).append(int(entry.name))
    return found


def _leads_session(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except OSError:
        return False


def _pids_carrying(container_id: str) -> list[int]:
    """Pids of this host's processes whose environment carries ``container_id``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _carries(int(entry.name), container_id):
            out.append(int(entry.name))
    return out


def _carries(pid: int, container_id: str) -> bool:
    """Whether live process ``pid`` belongs to container ``container_id``."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{CONTAINER_ENV}={container_id}".encode() in environ.split(b"\0")


def _running(pid: int, container_id: str) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state not in "ZX" and _carries(pid, container_id)
