"""The ``process`` provider: a function container is a process on this host.

The container runs ``python -m apothic.runtime`` with the control worker's own interpreter,
in its own session: the container's supervisor (``apothic/runtime/_supervisor.py``), which
starts the runtime(s) as its children, each in a process group of its own and dying with it,
so the pid this provider knows is the supervisor's (killing it kills the container). Its
temporary files live in an ``apothic-container-*`` folder of the system's temporary folder,
removed when it exits. It is not tied to the worker that started it: when that worker dies or
restarts, the container carries on with its inputs, and the worker that takes over its
ContainerWorkflow *adopts* it by pid. A container stops by itself once its ContainerWorkflow
has ended or after its idle window, and :meth:`ProcessProvider.release` kills whatever still
carries its container id, so no container outlives its workflow.

Environment: the container gets the environment it is given (connection, deployment, the
function's secrets) on top of a few variables of the worker's own (:data:`PASSED_ENV`: the
system's, locale, Python's path, Apothic's home and config), never the rest: the worker's
credentials (``VAST_API_KEY``, ``AWS_*``, its Temporal API key) reach a container only when
the given environment carries them. It runs as the worker's user on the worker's host,
though: this keeps credentials out of its environment, not out of its reach (``docker`` is
the provider that isolates).

Mounts (volumes, bucket caches): with ``binds``, the runtime starts in a private mount
namespace (``unshare --mount`` from util-linux, then ``mount --bind`` per mount, read-only
ones remounted ``ro``, then ``exec``: the pid stays the runtime's, so signals, exit codes and
adoption work as without mounts), so that each folder appears at the user's own path for
this process only. Needs root (``CAP_SYS_ADMIN``). A mount path missing on the host is
created there as an empty directory (the mount point; it stays). A mount path over a folder
the runtime needs (its interpreter, the Apothic package, the state folder) is refused.

Limits: one host (adoption and release see only this host's processes); ``cpu``,
``memory_mb`` and ``disk_gb`` are not enforced (the docker provider enforces them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

CONTAINER_ENV = "APOTHIC_CONTAINER_ID"
# Exit code reported for a container that vanished without leaving its status.
EXIT_UNKNOWN = -9
# What a container takes from the worker's environment (variables starting with LC_ too).
PASSED_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "PYTHONPATH",
    "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
    "APOTHIC_HOME", "APOTHIC_CONFIG", "APOTHIC_DEBUG", "APOTHIC_CONNECT_TIMEOUT_S",
)


def passed_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The part of ``environ`` (the worker's) a container gets: :data:`PASSED_ENV` and ``LC_*``."""
    return {k: v for k, v in environ.items() if k in PASSED_ENV or k.startswith("LC_")}


@dataclasses.dataclass(frozen=True)
class Bind:
    """A host folder ``source`` mounted at ``target`` in a container (read-only if ``read_only``)."""

    source: str
    target: str
    read_only: bool = False


class MountRefused(Exception):
    """The mounts cannot be made on this host (the message names the path or tool and the fix)."""


# Runs in the private mount namespace: bind each (source, target, ro) triple, then exec the rest.
_MOUNT_SCRIPT = (
    'set -e; while [ "$1" != "--" ]; do mount --bind "$1" "$2"; '
    'if [ "$3" = ro ]; then mount -o remount,bind,ro "$2"; fi; shift 3; done; shift; exec "$@"'
)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def mount_command(binds: list[Bind], argv: list[str], needed: list[str]) -> list[str]:
    """``argv`` run in a private mount namespace with ``binds`` (see the module docstring).

    Raises:
        MountRefused: not root, ``unshare``/``mount`` missing, a mount path over a folder in
            ``needed``, or a mount path that cannot be a directory on this host.
    """
    missing = [tool for tool in ("unshare", "mount") if shutil.which(tool) is None]
    if missing:
        raise MountRefused(f"mounting volumes on the process provider needs {' and '.join(missing)} (Debian package "
                           "util-linux, and mount); Fix: apt-get install util-linux mount, or use the docker provider")
    if os.geteuid() != 0:
        raise MountRefused("mounting volumes on the process provider needs root (a private mount namespace); "
                           "Fix: run the control worker as root, or use the docker provider")
    args: list[str] = []
    for b in binds:
        for need in needed:
            if _under(os.path.realpath(need), b.target) or _under(need, b.target):
                raise MountRefused(f"mount path {b.target} would hide {need}, which the process provider's "
                                   "container needs; Fix: mount it elsewhere, e.g. /data, or use the docker provider")
        try:
            os.makedirs(b.target, exist_ok=True)
        except OSError as e:
            raise MountRefused(f"mount path {b.target} cannot be a directory on this host ({e.strerror}); "
                               "Fix: mount it elsewhere, e.g. /data") from None
        if not os.path.isdir(b.target):
            raise MountRefused(f"mount path {b.target} is a file on this host; Fix: mount it elsewhere, e.g. /data")
        args += [b.source, b.target, "ro" if b.read_only else "rw"]
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _MOUNT_SCRIPT,
            "apothic-mounts", *args, "--", *argv]


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
        self, container_id: str, env: Mapping[str, str], *, python: str | None = None, cwd: str | None = None,
        binds: list[Bind] | None = None,
    ) -> ProcessHandle:
        """Start ``python -m apothic.runtime`` (the worker's interpreter unless ``python`` names
        an image's virtual environment) with ``env``, in ``cwd`` if given, with ``binds``
        mounted in its own mount namespace (:func:`mount_command`; :class:`MountRefused`)."""
        argv = [python or sys.executable, "-m", "apothic.runtime"]
        if binds:
            import apothic

            needed = [argv[0], sys.prefix, os.path.dirname(os.path.dirname(os.path.abspath(apothic.__file__))),
                      str(self.state_dir), *([cwd] if cwd else [])]
            store = env.get("APOTHIC_BLOB_STORE", "")
            if store and not store.startswith("s3://"):
                needed.append(store)
            argv = mount_command(binds, argv, needed)
        log_path, status_path = self._paths(container_id)
        status_path.unlink(missing_ok=True)
        full_env = passed_env()
        full_env.update(env)
        full_env[CONTAINER_ENV] = container_id
        full_env["APOTHIC_STATUS_FILE"] = str(status_path)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        with open(log_path, "ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv,
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
