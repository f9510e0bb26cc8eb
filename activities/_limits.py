"""``cpu`` and ``memory_mb`` on the process provider: one control group per container.

A function container on this host runs in a cgroup of its own, made under the control
worker's own cgroup (``<own>/apothic/<container id>``: what the worker may hand down, never a
sibling elsewhere in the tree), before the container's first instruction: the wrapper that
starts it writes its own pid into the group's ``cgroup.procs`` and then ``exec``s the
supervisor, so the supervisor, its runtimes and whatever the user code starts are all inside
(:func:`apothic.placement.providers.process.join_command`).

- **memory_mb**: the most the container's processes may use together (page cache included),
  swap excluded (cgroups v2: ``memory.max`` and ``memory.swap.max`` = 0; v1:
  ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes``). Past it the kernel's
  out-of-memory killer kills the biggest process, the runtime running the input; the
  supervisor sees the group's ``oom_kill`` counter grow and fails the input as out of memory.
- **cpu**: ``cpu`` cores of CPU time per 100 ms period (v2 ``cpu.max``; v1
  ``cpu.cfs_quota_us``/``cpu.cfs_period_us``).

Inside the container the group is where a container's own is: the mount namespace
(:func:`apothic.placement.providers.process.mount_command`) binds the group's folder over
``/sys/fs/cgroup`` (v2) or ``/sys/fs/cgroup/memory`` and ``/sys/fs/cgroup/cpu`` (v1), and a
cgroup namespace makes ``/proc/self/cgroup`` read ``/``, as in Docker: code that reads its
limits there reads the function's.

Which hierarchy: cgroups v2 when its ``memory`` and ``cpu`` controllers can be enabled for
the worker's group, else the v1 ``memory`` and ``cpu`` hierarchies (a hybrid host such as a
Docker engine's with ``Cgroup Version: 1``). Both need write access to the worker's group:
root, or a group delegated to the worker's user. :func:`unavailable` says why not, once per
process. The group is removed (its leftover processes killed first) when the container is
released or seen to exit; the folders made are recorded in the provider's state folder so that
whichever worker releases the container finds them. A container that ends with no worker left
to see it (the worker was stopped first) removes its own: the starting shell leaves a small
process outside the group that waits for it to empty, then removes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import time
from pathlib import Path

from apothic.placement.providers.process import Bind

ROOT = "/sys/fs/cgroup"
GROUP = "apothic"
PERIOD_US = 100_000


class LimitsUnavailable(Exception):
    """This host cannot enforce cpu/memory for a process (the message says why)."""


@dataclasses.dataclass(frozen=True)
class _Hierarchy:
    """One mounted hierarchy: where it is, and the worker's own group in it."""

    mount: str  # e.g. /sys/fs/cgroup/memory
    own: str  # the worker's own group's folder
    version: int


@dataclasses.dataclass(frozen=True)
class Cgroup:
    """A container's group(s), made by :func:`create`.

    Attributes:
        views: the group folders to bind over their hierarchy's mount point inside the
            container (so that it reads its own limits where a container does).
        dirs: the folders made, removed by :func:`remove`.
        memory: the folder of the group holding the memory limit (its ``memory.events`` or
            ``memory.oom_control`` count the out-of-memory kills), and where the container
            sees it once :attr:`views` are bound.
    """

    views: tuple[Bind, ...]
    dirs: tuple[str, ...]
    memory: tuple[str, str]


def _mountinfo() -> list[tuple[str, str, str, str]]:
    """(root, mount point, fs type, super options) of each mount this process sees."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            if len(fields) >= 5 and len(rest) >= 3:
                out.append((fields[3], fields[4].replace("\\040", " "), rest[0], rest[2]))
    return out


def _own_groups() -> dict[str, str]:
    """Controller (``""`` for v2) -> this process's group path, from ``/proc/self/cgroup``."""
    groups: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                groups[name] = path
    return groups


def _folder(mount_root: str, mount: str, own: str) -> str:
    """The folder of group ``own`` in a hierarchy whose ``mount_root`` is mounted at ``mount``."""
    rel = own.removeprefix(mount_root)
    return os.path.join(mount, rel.lstrip("/")).rstrip("/") or "/"


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _v2() -> _Hierarchy | None:
    own = _own_groups().get("")
    for root, mount, fstype, _ in _mountinfo():
        if fstype == "cgroup2" and own is not None:
            folder = _folder(root, mount, own)
            try:
                available = Path(mount, "cgroup.controllers").read_text().split()
            except OSError:
                continue
            if {"memory", "cpu"} <= set(available):
                return _Hierarchy(mount, folder, 2)
    return None


def _v1() -> dict[str, _Hierarchy]:
    own = _own_groups()
    found: dict[str, _Hierarchy] = {}
    for root, mount, fstype, options in _mountinfo():
        if fstype != "cgroup":
            continue
        names = options.split(",")
        for controller in ("memory", "cpu"):
            if controller in names and controller in own and controller not in found:
                found[controller] = _Hierarchy(mount, _folder(root, mount, own[controller]), 1)
    return found


def _prepare_v2(h: _Hierarchy) -> None:
    """Enable memory and cpu for ``<own>/apothic``'s children (raises OSError if it cannot)."""
    parent = os.path.join(h.own, GROUP)
    os.makedirs(parent, exist_ok=True)
    enabled = Path(h.own, "cgroup.subtree_control").read_text().split()
    if not {"memory", "cpu"} <= set(enabled):
        _write(os.path.join(h.own, "cgroup.subtree_control"), "+memory +cpu")
    _write(os.path.join(parent, "cgroup.subtree_control"), "+memory +cpu")


@functools.cache
def _hierarchies() -> tuple[_Hierarchy, ...] | str:
    """The hierarchies to use, or why none can be (probed once: mkdir, write, rmdir)."""
    reasons = []
    v2 = _v2()
    if v2 is not None:
        try:
            _prepare_v2(v2)
            _probe([v2])
            return (v2,)
        except OSError as e:
            reasons.append(f"cgroups v2 at {v2.mount}: cannot enable memory and cpu under {v2.own} ({e.strerror})")
    v1 = _v1()
    if {"memory", "cpu"} <= set(v1):
        chosen = list({h.mount: h for h in (v1["memory"], v1["cpu"])}.values())  # co-mounted: one
        try:
            _probe(chosen)
            return tuple(chosen)
        except OSError as e:
            reasons.append(f"cgroups v1 memory and cpu: cannot make a group under {chosen[0].own} ({e.strerror})")
    elif v2 is None:
        reasons.append(f"no cgroup hierarchy with the memory and cpu controllers is mounted under {ROOT}")
    return "; ".join(reasons)


def _probe(hierarchies: list[_Hierarchy]) -> None:
    """Make and remove a group with limits in each hierarchy (OSError if not allowed)."""
    name = f"probe-{os.getpid()}"
    for h in hierarchies:
        folder = os.path.join(h.own, GROUP, name)
        os.makedirs(folder, exist_ok=True)
        try:
            _limit(h, folder, 1, 64)
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(h.own, GROUP))  # v2: prepared again when used


def _limit(h: _Hierarchy, folder: str, cpu: int, memory_mb: int) -> None:
    """Write the limits into group ``folder`` of ``h`` (v1: those of the controllers it has)."""
    memory, quota = str(memory_mb << 20), str(cpu * PERIOD_US)
    if h.version == 2:
        _write(os.path.join(folder, "memory.max"), memory)
        if os.path.exists(os.path.join(folder, "memory.swap.max")):
            _write(os.path.join(folder, "memory.swap.max"), "0")
        _write(os.path.join(folder, "cpu.max"), f"{quota} {PERIOD_US}")
        return
    if os.path.exists(os.path.join(folder, "memory.limit_in_bytes")):
        _write(os.path.join(folder, "memory.limit_in_bytes"), memory)
        if os.path.exists(os.path.join(folder, "memory.memsw.limit_in_bytes")):
            _write(os.path.join(folder, "memory.memsw.limit_in_bytes"), memory)
    if os.path.exists(os.path.join(folder, "cpu.cfs_quota_us")):
        _write(os.path.join(folder, "cpu.cfs_period_us"), str(PERIOD_US))
        _write(os.path.join(folder, "cpu.cfs_quota_us"), quota)


def unavailable() -> str | None:
    """Why this host cannot enforce ``cpu`` and ``memory_mb`` for a process (None: it can)."""
    found = _hierarchies()
    return found if isinstance(found, str) else None


def _record(state_dir: Path, container_id: str) -> Path:
    return state_dir / f"{container_id}.cgroup"


def create(state_dir: Path, container_id: str, cpu: int, memory_mb: int) -> Cgroup:
    """Make the container's group with its limits (see the module docstring).

    Raises:
        LimitsUnavailable: the host cannot (:func:`unavailable`), or making the group failed.
    """
    found = _hierarchies()
    if isinstance(found, str):
        raise LimitsUnavailable(found)
    dirs: list[str] = []
    views: list[Bind] = []
    memory = ("", "")
    try:
        for h in found:
            if h.version == 2:
                _prepare_v2(h)
            folder = os.path.join(h.own, GROUP, container_id)
            if any(c.isspace() for c in folder):  # the starting shell splits the folders on spaces
                raise LimitsUnavailable(f"the cgroup folder {folder!r} holds a space")
            _mkdir(folder)
            dirs.append(folder)
            _record(state_dir, container_id).write_text("\n".join(dirs) + "\n")
            _limit(h, folder, cpu, memory_mb)
            views.append(Bind(folder, h.mount, read_only=True))
            if h.version == 2 or os.path.exists(os.path.join(folder, "memory.limit_in_bytes")):
                memory = (folder, h.mount)
    except OSError as e:
        remove(state_dir, container_id)
        raise LimitsUnavailable(f"cannot make the cgroup of {container_id} ({e.filename}: {e.strerror})") from None
    return Cgroup(tuple(views), tuple(dirs), memory)


def _mkdir(folder: str) -> None:
    """Make ``folder`` (and its ``apothic`` parent), even while another container's removal
    takes away the parent it found empty."""
    for _ in range(5):
        try:
            os.makedirs(folder, exist_ok=True)
            return
        except FileNotFoundError:
            continue
    os.makedirs(folder, exist_ok=True)


def remove(state_dir: Path, container_id: str, grace_s: float = 2.0) -> None:
    """Remove the container's groups: kill what is left in them, then ``rmdir`` (idempotent).

    The ``apothic`` parent goes too when it is empty, so that the worker's own group can be
    removed once the worker is gone.
    """
    record = _record(state_dir, container_id)
    try:
        dirs = [d for d in record.read_text().splitlines() if d]
    except OSError:
        return
    left = []
    for folder in dirs:
        if not _rmdir(folder, grace_s):
            left.append(folder)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(folder))
    if left:
        record.write_text("\n".join(left) + "\n")
    else:
        record.unlink(missing_ok=True)


def _rmdir(folder: str, grace_s: float) -> bool:
    deadline = time.monotonic() + grace_s
    while True:
        try:
            os.rmdir(folder)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            pass
        try:
            pids = [int(p) for p in Path(folder, "cgroup.procs").read_text().split()]
        except OSError:
            pids = []
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
