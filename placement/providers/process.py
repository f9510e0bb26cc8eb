"""The ``process`` provider: a function container is a child process on this host.

The container runs ``python -m apothic.runtime`` with the control worker's own
interpreter, in its own session. It dies with the process that started it (it sets a
parent-death signal on itself and also watches its parent), and :meth:`release` finds any
straggler by the container id in its environment, so no container outlives its workflow.
Not enforced here: ``cpu``, ``memory_mb`` and ``disk_gb`` limits (the docker provider
enforces them).
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


@dataclasses.dataclass
class ProcessHandle:
    container_id: str
    proc: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


class ProcessProvider:
    """Start, watch, stop and release container processes on this host."""

    name = "process"

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)

    async def start(self, container_id: str, env: Mapping[str, str]) -> ProcessHandle:
        log_path = self.log_dir / f"{container_id}.log"
        full_env = dict(os.environ)
        full_env.update(env)
        full_env[CONTAINER_ENV] = container_id
        full_env["APOTHIC_PARENT_PID"] = str(os.getpid())
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        with open(log_path, "ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "apothic.runtime",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
            )
        return ProcessHandle(container_id=container_id, proc=proc, log_path=log_path)

    async def wait(self, handle: ProcessHandle, timeout: float) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(asyncio.shield(handle.proc.wait()), timeout)
        except asyncio.TimeoutError:
            return None

    async def stop(self, handle: ProcessHandle, grace_s: float, tick: Callable[[], None] | None = None) -> int:
        """SIGTERM (the runtime drains: in-flight inputs finish), then SIGKILL after ``grace_s``.

        ``tick`` is called every two seconds while waiting (to heartbeat).
        """
        if handle.proc.returncode is None:
            try:
                handle.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = asyncio.get_running_loop().time() + grace_s
            code = None
            while code is None and asyncio.get_running_loop().time() < deadline:
                code = await self.wait(handle, min(2.0, max(0.0, deadline - asyncio.get_running_loop().time())))
                if code is None and tick is not None:
                    tick()
            if code is None:
                try:
                    os.killpg(handle.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return await handle.proc.wait()

    def log_tail(self, container_id: str, limit: int = 4000) -> str:
        path = self.log_dir / f"{container_id}.log"
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def release(self, container_id: str) -> list[int]:
        """Kill every process on this host that carries ``container_id``; returns their pids."""
        marker = f"{CONTAINER_ENV}={container_id}".encode()
        killed = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0"):
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed.append(int(entry.name))
                except ProcessLookupError:
                    pass
        return killed
