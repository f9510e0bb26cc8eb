"""The ``docker`` provider: a function container is a Docker container on this host's engine.

The container runs ``python -m apothic.runtime`` on the host network (it dials the Temporal
server on loopback like a process would; it opens no port), with the environment given to
:meth:`DockerProvider.start` and nothing of the worker's own. It carries the labels
``apothic.container_id=<id>`` and ``apothic.provider=docker`` (plus ``apothic.app``,
``apothic.function`` and ``apothic.version`` when the environment names them), which is how
:meth:`DockerProvider.release` and :meth:`DockerProvider.adopt` find it; it is not removed when
it exits, so that its exit code and logs stay readable until :meth:`release` (which also
removes its anonymous volumes). The runtime's ``APOTHIC_PARENT_PID`` is never passed: the
worker is not the container's parent, and a container outlives a worker restart. Files the
environment names on the host (``APOTHIC_TEMPORAL_TLS_CERT`` and the like) are not mounted.

Limits are enforced by the engine: ``cpu`` as CFS quota (``nano_cpus``), ``memory_mb`` as a
hard limit without swap, ``disk_gb`` as a writable-layer quota only where the storage driver
supports one (overlay2 on xfs with ``pquota``, btrfs, zfs, devicemapper): elsewhere it is not
enforced and the handle's ``notes`` say so. GPUs are passed with a device request only when
the host has NVIDIA GPUs (``nvidia-smi`` lists them); asking for more than the host has fails.

An image without the runtime (:attr:`ImageRef.has_runtime` False, e.g. the bare base image)
gets this host's Apothic environment bind-mounted read-only at the same paths, and its own
Python runs the runtime from there: that works only when the image's Python has this
interpreter's major.minor and glibc, which ``ensure_image`` checks.

Blocking docker-py calls of the async methods run in threads. :meth:`log_tail`,
:meth:`release` and :meth:`adopt` block (briefly), like their twins in the process provider:
call them with ``asyncio.to_thread`` from async code.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import shutil
import site
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apothic.exceptions import ApothicError
from apothic.placement import Offer

from .images import ImageRef
from .process import CONTAINER_ENV, EXIT_UNKNOWN

if TYPE_CHECKING:
    import docker

__all__ = [
    "CONTAINER_LABEL",
    "ContainerStartFailed",
    "DockerHandle",
    "DockerProvider",
    "DockerProviderError",
    "DockerUnavailable",
    "GpuInfo",
]

CONTAINER_LABEL = "apothic.container_id"
PROVIDER_LABEL = "apothic.provider"
# Storage drivers whose containers accept `--storage-opt size=` (overlay2 only on xfs+pquota).
_QUOTA_DRIVERS = {"btrfs", "zfs", "devicemapper", "windowsfilter"}
_POLL_S = 0.25


class DockerProviderError(ApothicError):
    """The Docker engine failed a request; the message carries the engine's explanation.

    ::

        DockerProviderError
        ├── DockerUnavailable      the engine cannot be reached (says how to start it)
        └── ContainerStartFailed   the engine refused to create or start a container
    """


class DockerUnavailable(DockerProviderError):
    """The Docker engine cannot be reached (the message says how to start it)."""


class ContainerStartFailed(DockerProviderError):
    """The engine refused to create or start a container (missing image, bad limits, ...)."""


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn docker-py and HTTP errors into :class:`DockerProviderError` (ours pass through)."""
    try:
        yield
    except ApothicError:
        raise
    except Exception as e:  # noqa: BLE001 - docker-py raises docker, requests and OS errors
        import docker.errors
        import requests.exceptions

        if isinstance(e, requests.exceptions.ConnectionError):
            raise DockerUnavailable(
                f"{what}: the Docker engine stopped answering ({e}); Fix: run scripts/docker-services"
            ) from None
        if isinstance(e, (docker.errors.DockerException, requests.exceptions.RequestException, OSError)):
            explanation = getattr(e, "explanation", None) or e
            raise DockerProviderError(f"{what}: {explanation}") from None
        raise


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    """One NVIDIA GPU of this host, as ``nvidia-smi`` reports it."""

    name: str
    memory_mb: float
    compute_cap: int  # times 100, e.g. 860
    cuda_version: float


@dataclasses.dataclass
class DockerHandle:
    """A started (or adopted) container.

    Attributes:
        container_id: Apothic's container id (the label value).
        docker_id: the engine's container id.
        name: the container name, ``apothic-<container_id>``.
        pid: the host pid of the container's init process (0 once it has exited).
        notes: limits that were asked for but are not enforced on this host.
    """

    container_id: str
    docker_id: str
    name: str
    pid: int = 0
    notes: tuple[str, ...] = ()


def _container_name(container_id: str) -> str:
    safe = re.sub(r"[^a-zA-Z0-9_.-]", "-", container_id).strip("-.") or "container"
    return f"apothic-{safe}"[:200]


def _runtime_mounts() -> tuple[list[str], list[str]]:
    """(site folders to add in the container, host paths to bind-mount) of this environment."""
    import apothic

    sites = [p for p in site.getsitepackages() if os.path.isdir(p)]
    mounts = list(sites)
    root = str(Path(apothic.__file__).resolve().parent.parent)
    if not any(root == s or root.startswith(s.rstrip("/") + "/") for s in sites):
        mounts.append(root)  # an editable checkout
    return sites, mounts


def _bootstrap_code(sites: Sequence[str]) -> str:
    """Python code that puts the mounted host site folders first on sys.path, then runs the runtime."""
    return (
        "import runpy, site, sys\n"
        "before = list(sys.path)\n"
        f"for p in {list(sites)!r}:\n"
        "    site.addsitedir(p)\n"
        "added = [p for p in sys.path if p not in before]\n"
        "sys.path[:] = added + before\n"
        "runpy.run_module('apothic.runtime', run_name='__main__', alter_sys=True)\n"
    )


class DockerProvider:
    """Start, adopt, watch, stop and release function containers on the local Docker engine.

    Args:
        client: a ``docker.DockerClient``; by default one from the environment
            (``DOCKER_HOST`` or the local socket), created on first use.

    The provider holds one client, used from worker threads; it is safe to share within one
    process.
    """

    name = "docker"

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._quota: tuple[bool, str] | None = None
        self._gpus: list[GpuInfo] | None = None

    # ------------------------------------------------------------------ engine facts

    @property
    def client(self) -> docker.DockerClient:
        """The Docker client (blocking on first use).

        Raises:
            DockerUnavailable: the engine does not answer.
        """
        with self._lock:
            if self._client is None:
                import docker as docker_mod

                try:
                    client = docker_mod.from_env(timeout=120)
                    client.ping()
                except Exception as e:  # noqa: BLE001 - docker raises many kinds here
                    raise DockerUnavailable(
                        f"cannot reach the Docker engine ({e}); Fix: run scripts/docker-services "
                        "(or start dockerd) and check DOCKER_HOST"
                    ) from None
                self._client = client
            return self._client

    def disk_quota(self) -> tuple[bool, str]:
        """Whether ``disk_gb`` can be enforced here, and why (blocking; cached).

        A driver that should support quotas but refuses one at the first start is
        remembered as unsupported.
        """
        if self._quota is None:
            with _translated("reading the engine's info"):
                info = self.client.info()
            driver = info.get("Driver", "")
            backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem", "")
            if driver in _QUOTA_DRIVERS:
                self._quota = (True, f"storage driver {driver} supports size quotas")
            elif driver == "overlay2" and backing == "xfs":
                self._quota = (True, "overlay2 on xfs (needs the pquota mount option)")
            else:
                where = f"{driver} on {backing}" if backing else driver
                self._quota = (False, f"storage driver {where} has no per-container size quota")
        return self._quota

    def host_gpus(self) -> list[GpuInfo]:
        """NVIDIA GPUs of this host (blocking; cached; empty without ``nvidia-smi``)."""
        if self._gpus is None:
            self._gpus = _query_gpus()
        return self._gpus

    # ------------------------------------------------------------------ lifecycle

    async def start(
        self,
        container_id: str,
        env: Mapping[str, str],
        *,
        image_ref: ImageRef | str,
        cpu: float,
        memory_mb: int,
        disk_gb: float | None = None,
        gpus: int = 0,
        command: Sequence[str] | None = None,
        shared_dirs: Sequence[str] = (),
        binds: Sequence[Any] = (),
    ) -> DockerHandle:
        """Start a container that runs ``python -m apothic.runtime``.

        A leftover container of the same ``container_id`` (a retried start) is removed first.

        Args:
            container_id: Apothic's id for it; becomes a label, the name and
                ``APOTHIC_CONTAINER_ID``.
            env: the whole environment of the runtime (connection settings, deployment).
            image_ref: from ``ensure_image``, or a local image reference whose ``python``
                has Apothic installed.
            cpu: CPU cores (fractions allowed); 0 means no limit.
            memory_mb: memory limit in MiB (no swap beyond it); 0 means no limit.
            disk_gb: writable-layer size limit, where the storage driver supports one.
            gpus: NVIDIA GPUs to pass in.
            command: run this instead of the runtime (diagnostics and tests).
            shared_dirs: host folders bind-mounted read-write at the same path (the local
                blob store, which the runtime reads arguments from and writes results to).
            binds: volumes and bucket caches: ``process.Bind`` (host folder ``source`` at the
                user's mount path ``target``, read-only if ``read_only``).

        Raises:
            ContainerStartFailed: the image is missing, the host lacks the GPUs, or the
                engine refused the container.
            DockerUnavailable: the engine does not answer.
        """
        with _translated(f"starting container {container_id}"):
            return await asyncio.to_thread(
                self._start_blocking,
                container_id,
                dict(env),
                image_ref,
                cpu,
                memory_mb,
                disk_gb,
                gpus,
                command,
                tuple(shared_dirs),
                tuple(binds),
            )

    def _start_blocking(
        self,
        container_id: str,
        env: dict[str, str],
        image_ref: ImageRef | str,
        cpu: float,
        memory_mb: int,
        disk_gb: float | None,
        gpus: int,
        command: Sequence[str] | None,
        shared_dirs: tuple[str, ...] = (),
        binds: tuple[Any, ...] = (),
    ) -> DockerHandle:
        import docker.errors
        from docker.types import DeviceRequest, Mount

        client = self.client
        ref = image_ref if isinstance(image_ref, ImageRef) else None
        image = ref.ref if ref else str(image_ref)
        env[CONTAINER_ENV] = container_id
        env.pop("APOTHIC_PARENT_PID", None)  # the worker is not this container's parent
        env.setdefault("PYTHONUNBUFFERED", "1")
        mounts: list[Any] = []
        if command is not None:
            argv = list(command)
        elif ref is None or ref.has_runtime:
            argv = [ref.python if ref else "python", "-m", "apothic.runtime"]
        else:
            sites, paths = _runtime_mounts()
            mounts = [Mount(p, p, type="bind", read_only=True) for p in paths]
            env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
            argv = [ref.python, "-c", _bootstrap_code(sites)]
        for folder in shared_dirs:
            os.makedirs(folder, exist_ok=True)
            mounts.append(Mount(folder, folder, type="bind", read_only=False))
        for bind in binds:
            taken = [m["Target"] for m in mounts]
            if bind.target in taken:
                raise ContainerStartFailed(
                    f"container {container_id}: mount path {bind.target} is also where this host's runtime or blob "
                    "store is mounted; Fix: mount the volume elsewhere, e.g. /data")
            mounts.append(Mount(bind.target, bind.source, type="bind", read_only=bind.read_only))

        labels = {CONTAINER_LABEL: container_id, PROVIDER_LABEL: "docker"}
        for key, label in (
            ("APOTHIC_APP", "app"),
            ("APOTHIC_FUNCTION", "function"),
            ("APOTHIC_VERSION", "version"),
        ):
            if env.get(key):
                labels[f"apothic.{label}"] = env[key]
        kwargs: dict[str, Any] = dict(
            entrypoint=argv,
            environment=env,
            labels=labels,
            name=_container_name(container_id),
            network_mode="host",
            init=True,
            detach=True,
            mounts=mounts,
        )
        notes: list[str] = []
        if cpu and cpu > 0:
            kwargs["nano_cpus"] = int(round(cpu * 1e9))
        if memory_mb and memory_mb > 0:
            kwargs["mem_limit"] = f"{int(memory_mb)}m"
            kwargs["memswap_limit"] = f"{int(memory_mb)}m"
        if disk_gb:
            ok, why = self.disk_quota()
            if ok:
                kwargs["storage_opt"] = {"size": f"{int(disk_gb * 1024)}M"}
            else:
                notes.append(f"disk_gb={disk_gb} is not enforced: {why}")
        if gpus:
            have = self.host_gpus()
            if len(have) < gpus:
                raise ContainerStartFailed(
                    f"container {container_id} asks for {gpus} GPU(s) but this host has {len(have)}; "
                    "Fix: place it on a host with GPUs, or set gpu=None"
                )
            kwargs["device_requests"] = [DeviceRequest(count=gpus, capabilities=[["gpu"]])]

        self._remove_named(kwargs["name"])
        try:
            try:
                ct = client.containers.create(image, **kwargs)
            except docker.errors.APIError as e:
                if "storage_opt" in kwargs and "storage" in str(e).lower():
                    # The driver refused the quota (e.g. xfs without pquota): remember, go on.
                    why = f"the engine refused a size quota ({e.explanation or e})"
                    self._quota = (False, why)
                    notes.append(f"disk_gb={disk_gb} is not enforced: {why}")
                    del kwargs["storage_opt"]
                    ct = client.containers.create(image, **kwargs)
                else:
                    raise
            ct.start()
            ct.reload()
        except docker.errors.ImageNotFound:
            raise ContainerStartFailed(
                f"container {container_id}: image {image!r} is not on this Docker engine; "
                "Fix: build it with ensure_image() first"
            ) from None
        except docker.errors.APIError as e:
            self._remove_named(kwargs["name"])
            raise ContainerStartFailed(
                f"container {container_id}: the engine refused to start it: {e.explanation or e}"
            ) from None
        pid = int((ct.attrs.get("State") or {}).get("Pid") or 0)
        return DockerHandle(container_id, ct.id, kwargs["name"], pid, tuple(notes))

    def _remove_named(self, name: str) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(name).remove(force=True, v=True)

    def adopt(self, container_id: str, pid: int = 0) -> DockerHandle | None:
        """A handle on this container if the engine still has it (blocking).

        ``pid`` is accepted for the process provider's shape and ignored: the label finds it.
        """
        with _translated(f"looking for container {container_id}"):
            found = self._by_label(container_id)
        if not found:
            return None
        ct = found[0]
        state = ct.attrs.get("State") or {}
        return DockerHandle(container_id, ct.id, ct.name, int(state.get("Pid") or 0))

    def _state(self, handle: DockerHandle) -> dict[str, Any] | None:
        import docker.errors

        with _translated(f"watching container {handle.container_id}"):
            try:
                return self.client.api.inspect_container(handle.docker_id).get("State") or {}
            except docker.errors.NotFound:
                return None

    async def wait(self, handle: DockerHandle, timeout: float, poll_s: float = _POLL_S) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds (the engine is
        asked every ``poll_s`` seconds).

        A container removed meanwhile reports ``EXIT_UNKNOWN`` (-9).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            state = await asyncio.to_thread(self._state, handle)
            if state is None:
                return EXIT_UNKNOWN
            if not state.get("Running") and state.get("Status") in ("exited", "dead"):
                handle.pid = 0
                return int(state.get("ExitCode", EXIT_UNKNOWN))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(poll_s, remaining))

    async def stop(self, handle: DockerHandle, grace_s: float, tick: Callable[[], None] | None = None) -> int:
        """SIGTERM (the runtime drains: in-flight inputs finish), then SIGKILL after ``grace_s``.

        ``tick`` is called every two seconds while waiting (to heartbeat). The container is
        kept (stopped) for its logs until :meth:`release`.
        """
        import docker.errors

        code = await self.wait(handle, 0)
        if code is not None:
            return code
        what = f"stopping container {handle.container_id}"
        with _translated(what), contextlib.suppress(docker.errors.APIError):  # gone: wait() tells
            await asyncio.to_thread(self.client.api.kill, handle.docker_id, "SIGTERM")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while code is None and loop.time() < deadline:
            code = await self.wait(handle, min(2.0, max(0.0, deadline - loop.time())))
            if code is None and tick is not None:
                tick()
        if code is None:
            with _translated(what), contextlib.suppress(docker.errors.APIError):
                await asyncio.to_thread(self.client.api.kill, handle.docker_id, "SIGKILL")
            code = await self.wait(handle, 10)
        return EXIT_UNKNOWN if code is None else code

    def exit_status(self, container_id: str) -> int:
        """The exit code of a finished container, or EXIT_UNKNOWN (blocking)."""
        with _translated(f"looking for container {container_id}"):
            found = self._by_label(container_id)
        if not found:
            return EXIT_UNKNOWN
        state = found[0].attrs.get("State") or {}
        if state.get("Running"):
            return EXIT_UNKNOWN
        return int(state.get("ExitCode", EXIT_UNKNOWN))

    def log_tail(self, container_id: str, limit: int = 4000) -> str:
        """The last ``limit`` characters of the container's output ("" if none; blocking)."""
        import docker.errors

        try:
            found = self._by_label(container_id)
            if not found:
                return ""
            data = found[0].logs(stdout=True, stderr=True, tail=max(50, limit // 20))
        except (docker.errors.DockerException, OSError, DockerProviderError):
            return ""
        return data.decode("utf-8", "replace")[-limit:]

    def release(self, container_id: str) -> list[str]:
        """Remove every container carrying ``container_id`` (running or not); idempotent.

        Blocking. Returns the engine ids removed.
        """
        import docker.errors

        removed = []
        with _translated(f"releasing container {container_id}"):
            for ct in self._by_label(container_id):
                try:
                    ct.remove(force=True, v=True)
                    removed.append(ct.id)
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as e:
                    if "already in progress" not in str(e):
                        raise
        return removed

    def _by_label(self, container_id: str) -> list[Any]:
        return self.client.containers.list(all=True, filters={"label": f"{CONTAINER_LABEL}={container_id}"})

    # ------------------------------------------------------------------ offers

    async def list_offers(self) -> list[Offer]:
        """This host as one offer: cores and RAM from the engine, GPUs from ``nvidia-smi``.

        ``dph_total`` is 0; ``extra`` holds ``docker_version``, ``storage_driver`` and
        ``disk_quota`` (whether ``disk_gb`` is enforced).

        Raises:
            DockerUnavailable: the engine does not answer.
        """
        with _translated("listing this host's offer"):
            return await asyncio.to_thread(self._offers_blocking)

    def _offers_blocking(self) -> list[Offer]:
        info = self.client.info()
        gpus = self.host_gpus()
        quota, why = self.disk_quota()
        try:
            free_gb = shutil.disk_usage(info.get("DockerRootDir") or "/").free / 1e9
        except OSError:
            free_gb = 0.0
        arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "amd64": "amd64"}.get(
            info.get("Architecture", ""), info.get("Architecture", "")
        )
        first = gpus[0] if gpus else None
        offer = Offer(
            provider="docker",
            offer_id=f"docker:{info.get('Name') or socket.gethostname()}",
            gpu_name=first.name if first else "",
            num_gpus=len(gpus),
            gpu_ram_mb=first.memory_mb if first else 0.0,
            cpu_cores=float(info.get("NCPU") or os.cpu_count() or 0),
            cpu_ram_gb=round(float(info.get("MemTotal") or 0) / 1e9, 3),
            disk_space_gb=round(free_gb, 3),
            dph_total=0.0,
            reliability=1.0,
            cpu_arch=arch,
            compute_cap=first.compute_cap if first else 0,
            cuda_max_good=first.cuda_version if first else 0.0,
            extra={
                "docker_version": info.get("ServerVersion", ""),
                "storage_driver": info.get("Driver", ""),
                "disk_quota": quota,
                "disk_quota_reason": why,
            },
        )
        return [offer]


def _query_gpus() -> list[GpuInfo]:
    """NVIDIA GPUs from ``nvidia-smi``; empty when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        rows = subprocess.run(
            [exe, "--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        banner = subprocess.run([exe], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    m = re.search(r"CUDA Version:\s*([0-9.]+)", banner)
    cuda = float(m.group(1)) if m else 0.0
    out = []
    for row in rows.strip().splitlines():
        parts = [p.strip() for p in row.split(",")]
        if len(parts) < 3:
            continue
        try:
            mem = float(parts[1])
        except ValueError:
            mem = 0.0
        try:
            cap = int(round(float(parts[2]) * 100))
        except ValueError:
            cap = 0
        out.append(GpuInfo(parts[0], mem, cap, cuda))
    return out
