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

Mounts: the paths of the function's image, its volumes and bucket caches are where the user
wrote them, as in a container. With any of them (or a cgroup to show), the runtime starts in a
private mount namespace (``unshare --mount`` from util-linux, then ``mount`` per path, then
``cd`` to the image's workdir, then ``exec``: the pid stays the runtime's, so signals, exit
codes and adoption work as without mounts), so that each folder appears at its path for this
process only. Needs root (``CAP_SYS_ADMIN``).

- An image's folders (:class:`Overlay`: where its files were added, its ``workdir``) are
  overlay mounts: the host's folder below, the image's files on top, the container's writes in
  a layer of its own (``<state folder>/<container id>.fs``, removed with the container), never
  in the host's folder or the cached image. An image path that would take the writes meant
  for the host (a folder holding the state folder, the blob store or a volume's folder), or
  hide a mount below it, or is ``/`` itself, is refused.
- Volumes and bucket caches (:class:`Bind`) are bind mounts over them (read-only ones
  remounted ``ro``). A mount path over a folder the runtime needs (its interpreter, the
  Apothic package, the state folder) is refused.
- The container's cgroup folders (``activities/_limits.py``) are bound read-only over
  ``/sys/fs/cgroup`` (or its v1 ``memory`` and ``cpu`` hierarchies), in a cgroup namespace of
  its own (``unshare --cgroup``): the function reads its limits where a container does.

A mount path missing on the host is created there as an empty directory (the mount point; it
stays), unless it lies under one of the image's paths: then it is made in the container's layer.

Limits: one host (adoption and release see only this host's processes). ``cpu`` and
``memory_mb`` are enforced by the container's cgroup when this host allows one (its first
process joins it before anything runs, :func:`join_command`, and a process of its own removes it once
it has emptied); ``disk_gb`` is not enforced (the docker
provider enforces it where its storage driver allows).
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


@dataclasses.dataclass(frozen=True)
class Overlay:
    """The image folder ``source`` shown at ``target`` over the host's folder there."""

    source: str
    target: str


class MountRefused(Exception):
    """The mounts cannot be made on this host (the message names the path or tool and the fix)."""


# Runs first, in the container's first process: start the cgroups' remover (outside them, in a
# session of its own, without the container's variables: it is no process of the container),
# join each cgroup, exec the rest.
_JOIN_SCRIPT = (
    'set -e; dirs=""; while [ "$1" != "--" ]; do dirs="$dirs $1"; shift; done; shift; '
    'own=""; if command -v setsid >/dev/null; then own=setsid; fi; '  # out of the container's process group
    'env -u APOTHIC_CONTAINER_ID -u APOTHIC_STATUS_FILE $own /bin/sh -c "$0" apothic-limits-remover $$ $dirs '
    '</dev/null >/dev/null 2>&1 & '
    'for d in $dirs; do echo $$ > "$d/cgroup.procs"; done; exec "$@"'
)
# Waits until the container's process (pid $1) has ended and the first cgroup has no process
# left (what user code started), then removes each cgroup and its parent when empty. The
# control worker removes them too, when it sees the container end; this covers a container
# that ends with no worker left to see it.
_REMOVER_SCRIPT = (
    'trap "" HUP INT TERM; pid=$1; shift; while kill -0 "$pid" 2>/dev/null; do sleep 1; done; '
    'while read -r _ < "$1/cgroup.procs"; do sleep 1; done; '
    'for d; do rmdir "$d" 2>/dev/null || true; rmdir "${d%/*}" 2>/dev/null || true; done'
)

# Runs in the private mount namespace: each operation (3 words), then exec the rest.
_MOUNT_SCRIPT = (
    'set -e; while [ "$1" != "--" ]; do case "$1" in '
    'bind) mount --bind "$2" "$3";; '
    'ro) mount --bind "$2" "$3"; mount -o remount,bind,ro "$3";; '
    'overlay) mount -t overlay apothic-image -o "$2" "$3";; '
    'dir) mkdir -p "$2";; '
    'cd) cd "$2";; '
    'esac; shift 3; done; shift; exec "$@"'
)
# Characters overlayfs cannot take in a folder's name in its options.
_OVERLAY_UNSAFE = (",", ":", "\\")


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def namespace_unavailable() -> str | None:
    """Why this host cannot give a container its own mount namespace (None: it can)."""
    missing = [tool for tool in ("unshare", "mount") if shutil.which(tool) is None]
    if missing:
        return (f"{' and '.join(missing)} (Debian package util-linux, and mount) is missing; "
                "Fix: apt-get install util-linux mount")
    if os.geteuid() != 0:
        return "it needs root (a private mount namespace); Fix: run the control worker as root"
    return None


def overlay_refused(target: str, writable: list[str]) -> str | None:
    """Why image path ``target`` cannot be an overlay on this host (None: it can).

    ``writable``: folders whose writes the host must see (the state folder, the blob store,
    the volumes' folders), which an overlay over them would keep in the container's layer.
    """
    if target == "/":
        return ("files added at the image's root / cannot be shown on the process provider (it would "
                "cover the whole host); Fix: add them under a folder such as /srv")
    if any(c in target for c in _OVERLAY_UNSAFE):
        return f"image path {target} holds a ',', ':' or '\\', which an overlay mount cannot take; Fix: rename it"
    for folder in writable:
        if folder and (_under(os.path.realpath(folder), target) or _under(folder, target)):
            return (f"image path {target} holds {folder}, which the process provider's container writes to for "
                    "this host; Fix: add the image's files under another folder, e.g. /srv")
    return None


def _mounts_below(target: str) -> list[str]:
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4].replace("\\040", " ") for line in f]
    except OSError:
        return []
    return [p for p in points if p != target and _under(p, target)]


def _mount_point(target: str, what: str) -> None:
    try:
        os.makedirs(target, exist_ok=True)
    except OSError as e:
        raise MountRefused(f"{what} {target} cannot be a directory on this host ({e.strerror}); "
                           "Fix: use another path, e.g. /data") from None
    if not os.path.isdir(os.path.realpath(target)):
        raise MountRefused(f"{what} {target} is a file on this host; Fix: use another path, e.g. /data")


def mount_command(
    binds: list[Bind], argv: list[str], needed: list[str], *, overlays: list[Overlay] | None = None,
    layer: Path | None = None, writable: list[str] | None = None, views: list[Bind] | None = None,
    cwd: str | None = None,
) -> list[str]:
    """``argv`` run in a private mount namespace (see the module docstring): ``overlays``
    (their writable layers made under ``layer``), then ``binds``, then ``views`` (read-only,
    in a cgroup namespace of its own), then ``cd cwd``.

    Raises:
        MountRefused: not root, ``unshare``/``mount`` missing, a mount path over a folder in
            ``needed``, an overlay refused by :func:`overlay_refused` or over another mount,
            or a mount path that cannot be a directory on this host.
    """
    why = namespace_unavailable()
    if why:
        raise MountRefused(f"mounting the image's paths and volumes on the process provider: {why}, "
                           "or use the docker provider")
    ops: list[str] = []
    for i, o in enumerate(sorted(overlays or [], key=lambda o: o.target.count("/"))):
        refused = overlay_refused(o.target, [*(writable or []), *(b.source for b in binds)])
        if refused is None and any(c in o.source or c in str(layer) for c in _OVERLAY_UNSAFE):
            refused = f"the image's folder {o.source} holds a ',', ':' or '\\'; Fix: set APOTHIC_HOME to a plain path"
        if refused is None and _mounts_below(o.target):
            refused = (f"image path {o.target} would hide the mount at {_mounts_below(o.target)[0]} of this host; "
                       "Fix: add the image's files under another folder, e.g. /srv")
        if refused:
            raise MountRefused(f"{refused} (or use the docker provider)")
        assert layer is not None
        _mount_point(o.target, "image path")
        upper, work = layer / str(i) / "upper", layer / str(i) / "work"
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        ops += ["overlay", f"lowerdir={o.source}:{o.target},upperdir={upper},workdir={work}", o.target]
    for b in binds:
        for need in needed:
            if _under(os.path.realpath(need), b.target) or _under(need, b.target):
                raise MountRefused(f"mount path {b.target} would hide {need}, which the process provider's "
                                   "container needs; Fix: mount it elsewhere, e.g. /data, or use the docker provider")
        if any(_under(b.target, o.target) for o in overlays or []):
            ops += ["dir", b.target, "-"]  # in the container's layer, not on the host
        else:
            _mount_point(b.target, "mount path")
        ops += ["ro" if b.read_only else "bind", b.source, b.target]
    for v in views or []:
        ops += ["ro", v.source, v.target]
    if cwd:
        ops += ["cd", cwd, "-"]
    namespaces = ["--mount", *(["--cgroup"] if views else [])]
    return ["unshare", *namespaces, "--propagation", "private", "--", "/bin/sh", "-c", _MOUNT_SCRIPT,
            "apothic-mounts", *ops, "--", *argv]


def join_command(groups: list[str], argv: list[str]) -> list[str]:
    """``argv`` run by a process that first joins the cgroup folders ``groups`` (without spaces),
    which a process of their own removes once they have emptied (see ``_REMOVER_SCRIPT``)."""
    return ["/bin/sh", "-c", _JOIN_SCRIPT, _REMOVER_SCRIPT, *groups, "--", *argv]


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

    def layer(self, container_id: str) -> Path:
        """The folder of the writable layers of a container's image paths."""
        return self.state_dir / f"{container_id}.fs"

    async def start(
        self, container_id: str, env: Mapping[str, str], *, python: str | None = None, cwd: str | None = None,
        binds: list[Bind] | None = None, overlays: list[Overlay] | None = None, views: list[Bind] | None = None,
        join: list[str] | None = None,
    ) -> ProcessHandle:
        """Start ``python -m apothic.runtime`` (the worker's interpreter unless ``python`` names
        an image's virtual environment) with ``env``, in ``cwd`` if given, having joined the
        cgroup folders ``join`` first, with ``overlays`` and ``binds`` mounted and ``views`` shown in
        its own mount namespace (:func:`mount_command`; :class:`MountRefused`)."""
        argv = [python or sys.executable, "-m", "apothic.runtime"]
        if binds or overlays or views:
            import apothic

            needed = [argv[0], sys.prefix, os.path.dirname(os.path.dirname(os.path.abspath(apothic.__file__))),
                      str(self.state_dir), *([cwd] if cwd else [])]
            store = env.get("APOTHIC_BLOB_STORE", "")
            writable = [str(self.state_dir)]
            if store and not store.startswith("s3://"):
                needed.append(store)
                writable.append(store)
            if overlays:
                # The image's workdir is among its own paths: it is entered after the mounts.
                needed = [n for n in needed if n != cwd]
            argv = mount_command(binds or [], argv, needed, overlays=overlays, layer=self.layer(container_id),
                                 writable=writable, views=views, cwd=cwd)
            cwd = None
        if join:
            argv = join_command(join, argv)
        log_path, status_path = self._paths(container_id)
        status_path.unlink(missing_ok=True)
        full_env = passed_env()
        full_env.update(env)
        full_env[CONTAINER_ENV] = container_id
        full_env["APOTHIC_STATUS_FILE"] = str(status_path)
        # Where its supervisor counts out-of-memory kills: its own cgroup, never the host's.
        full_env.setdefault("APOTHIC_MEMORY_CGROUP", "")
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
        """Kill every process on this host that carries ``container_id``; returns their pids.

        Its image paths' writable layers go too.
        """
        killed = []
        for pid in _pids_carrying(container_id):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        self.remove_layer(container_id)
        return killed

    def remove_layer(self, container_id: str) -> None:
        """Remove the writable layers of a container that no longer runs (idempotent)."""
        shutil.rmtree(self.layer(container_id), ignore_errors=True)


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
