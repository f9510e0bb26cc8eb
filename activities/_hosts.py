"""Hosts: the enabled providers behind one shape, for the control activities.

Each host lists its offers, starts a function container from a deployment (building or
reusing its image first), adopts one a lost worker left running, watches it, stops it and
releases whatever is left of it. ``run_container`` picks the host by one ranking of every
host's offers (:func:`apothic.placement.choose`).

- ``process``: this host, a plain process; images become cached virtual environments.
- ``docker``: this host's Docker engine; cpu/memory (and disk where the driver allows) are
  enforced; images are built (and pushed when a registry is configured).
- ``vast``: a rented Vast.ai machine (or the simulator of its API); the image is built with
  the runtime inside, pushed to the configured registry, and run as the instance's main
  process. The instance is destroyed on release.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import activity

from apothic._control._config import ProviderSettings, apothic_home
from apothic._data._signing import KEY_ENV, container_env
from apothic._trace import ATTR_IMAGE, spanned
from apothic._contracts import FunctionSpec
from apothic._image import Image
from apothic.placement import Offer, placement_query
from apothic.placement.providers import (
    DockerProvider,
    ImageRef,
    ProcessProvider,
    VastClient,
    ensure_image,
    ensure_venv,
    provision,
)
from apothic.placement.providers.docker import DockerUnavailable
from apothic.placement.providers.process import (
    EXIT_UNKNOWN,
    MountRefused,
    Overlay,
    namespace_unavailable,
    overlay_refused,
)

from ._volumes import mirrors_in, pull_mirrors, push_mirrors, record_vast_volume, vast_volume_info
from apothic.placement.providers.vast import InstanceNotFound, ProvisionFailed, VastError, VastRateLimited
from apothic.placement.providers.images import ImageNotSupported, check_venv_image, image_paths, read_venv_image

from . import _limits

# Called with (event, data) for each step worth telling the job (image build, provisioning).
Progress = Callable[[str, dict[str, Any]], Awaitable[None] | None]
# Called while something slow runs, to heartbeat.
Tick = Callable[[], None]

# The runtime prints this as its last line; a host that cannot report exit codes (a rented
# machine whose API only says "exited") reads it from the instance's log.
_EXIT_LINE = re.compile(r"apothic-runtime: exit (-?\d+)")


class StartFailed(Exception):
    """The container could not be started.

    ``retryable``: the same attempt may succeed later (the engine did not answer, the API rate
    limited us); the activity retries it. ``permanent``: no other start of this deployment can
    succeed either (an image that cannot be built or pulled, no offer at all); the fleet fails
    the jobs that wait at once instead of starting another container.
    """

    def __init__(self, message: str, retryable: bool = False, permanent: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.permanent = permanent and not retryable


# Output of a failed image build that says the failure may pass (the network, a registry that
# was busy, an engine that did not answer): such a build is not a permanent failure.
_TRANSIENT_BUILD = re.compile(
    r"temporary failure in name resolution|could not resolve|connection (reset|refused|timed out)|timed? ?out"
    r"|tls handshake|i/o timeout|too ?many ?requests|(?:status|http|error)[ :]*(?:429|50[234])|bad gateway"
    r"|service unavailable"
    r"|network is unreachable|cannot connect to the docker daemon|no space left on device",
    re.IGNORECASE,
)


def build_failure_is_permanent(text: str) -> bool:
    """Whether a failed image build will fail again: a base image that does not exist, an apt
    or pip package that does not exist, a command of the image that fails are; a network or
    registry hiccup is not."""
    return not _TRANSIENT_BUILD.search(text)


def gets_payload_key(start: Callable[..., Awaitable[Started]]) -> Callable[..., Awaitable[Started]]:
    """A host's ``start`` whose container also gets, in its environment and only there, the
    payload key this worker's client signs with (``APOTHIC_PAYLOAD_KEY``, over any other value):
    the runtime checks and signs payloads with it. A failed start's message never quotes it."""

    @functools.wraps(start)
    async def with_key(self: Any, container_id: str, env: dict[str, str], *args: Any, **kwargs: Any) -> Started:
        key_env = container_env(activity.client().data_converter.payload_codec)
        try:
            return await start(self, container_id, {**env, **key_env}, *args, **kwargs)
        except Exception as e:
            key = key_env.get(KEY_ENV)
            if key and key in str(e):
                raise StartFailed(str(e).replace(key, "<payload key>"), getattr(e, "retryable", False),
                                  getattr(e, "permanent", False)) from None
            raise

    return with_key


async def heartbeating(aw: Awaitable[Any], tick: Tick, every_s: float = 2.0) -> Any:
    """Await ``aw`` while calling ``tick`` every ``every_s`` seconds (a slow API, a long poll):
    the caller's activity keeps heartbeating whatever it waits for."""
    task = asyncio.ensure_future(aw)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=every_s)
            if not task.done():
                tick()
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _building(image: Image, build: Callable[[Callable[[str], None]], Awaitable[Any]], progress: Progress,
                    tick: Tick, every_s: float = 1.0) -> Any:
    """Run ``build(on_output)`` while heartbeating, streaming its output as ``image`` events.

    Lines are sent in batches every ``every_s`` seconds (``{"status": "output", "lines": [...]}``,
    at most 200 lines a batch: a flood keeps its last lines); a failure raises
    :class:`StartFailed` naming the image, with the error (which names the failing step) and
    the last 40 lines.
    """
    pending: list[str] = []
    tail: list[str] = []

    def on_output(line: str) -> None:
        pending.append(line)
        tail.append(line)
        if len(tail) > 80:
            del tail[:40]

    async def flush() -> None:
        if pending:
            batch = pending[-200:]
            pending.clear()
            await _emit(progress, "image", {"status": "output", "image": image.tag, "lines": batch})

    await _emit(progress, "image", {"status": "building", "image": image.tag})
    task = asyncio.ensure_future(spanned("apothic.image.build", {ATTR_IMAGE: image.tag}, build(on_output)))
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=every_s)
            tick()
            await flush()
        result = task.result()
    except Exception as e:  # noqa: BLE001 - a failed build fails this container, clearly
        await flush()
        await _emit(progress, "image", {"status": "failed", "image": image.tag, "error": str(e)})
        last = "\n".join(tail[-40:])
        text = f"building image {image.tag} failed: {e}"
        if last and last not in text:
            text += f"\n--- last output ---\n{last}"
        raise StartFailed(text, permanent=build_failure_is_permanent(text)) from None
    finally:
        if not task.done():
            task.cancel()
    return result


def _image_of(spec: FunctionSpec) -> Image:
    """The function's image, or this host's Python on debian_slim for functions without one."""
    if spec.image:
        return Image.from_dict(spec.image)
    return Image.debian_slim(python_version=f"{sys.version_info.major}.{sys.version_info.minor}")


async def _build_image(
    spec: FunctionSpec, registry: str | None, always_derive: bool, progress: Progress, tick: Tick
) -> ImageRef:
    image = _image_of(spec)
    ref: ImageRef = await _building(
        image,
        lambda on_output: ensure_image(image, registry=registry, on_output=on_output, always_derive=always_derive),
        progress,
        tick,
    )
    await _emit(progress, "image", {"status": "built" if ref.built else "cached", "image": image.tag,
                                    "ref": ref.pinned_ref or ref.ref})
    return ref


async def _emit(progress: Progress, event: str, data: dict[str, Any]) -> None:
    result = progress(event, data)
    if asyncio.iscoroutine(result):
        await result


@dataclasses.dataclass
class Started:
    """A running container: ``token`` (heartbeated) lets another worker adopt it."""

    token: int
    handle: Any
    where: dict[str, Any] = dataclasses.field(default_factory=dict)


class ProcessHost:
    """This host: a container is a process (``placement/providers/process.py``), its image a
    cached virtual environment whose paths are shown where the image put them, its ``cpu`` and
    ``memory_mb`` enforced by a cgroup of its own (``_limits``)."""

    name = "process"

    def __init__(self, settings: ProviderSettings | None = None) -> None:
        self.settings = settings
        self.provider = ProcessProvider(apothic_home() / "logs" / "containers")

    def usable_for(self, spec: FunctionSpec) -> str | None:
        """Why this function cannot run here (None: it can): an image a virtual environment
        cannot be, image paths this host cannot show at their paths, or ``cpu``/``memory_mb``
        this host cannot enforce while the docker provider, which enforces them, is on."""
        if spec.image:
            image = Image.from_dict(spec.image)
            try:
                check_venv_image(image)
            except ImageNotSupported as e:
                return e.reason
            paths = image_paths(image)
            why = namespace_unavailable() if paths else None
            if why:
                return (f"the image puts files at {paths[0]}, which the process provider shows at that path in a "
                        f"private mount namespace, and {why}, or run this function on the docker provider")
            for path in paths:
                refused = overlay_refused(path, [str(self.provider.state_dir)])
                if refused:
                    return f"{refused}, or run this function on the docker provider"
        why = _limits.unavailable()
        if why and self.settings is not None and "docker" in self.settings.enabled:
            return (f"this host cannot enforce cpu={spec.cpu} and memory_mb={spec.memory_mb} for a process ({why}); "
                    "the docker provider enforces them")
        return None

    @gets_payload_key
    async def start(
        self, container_id: str, env: dict[str, str], spec: FunctionSpec, offer: Offer | None,
        progress: Progress, tick: Tick, candidates: list[Offer] | None = None, mounts: Any = None,
    ) -> Started:
        python = cwd = None
        overlays: list[Overlay] = []
        if spec.image:
            image = Image.from_dict(spec.image)
            path = await _building(
                image,
                lambda on_output: ensure_venv(image, root=apothic_home() / "venvs", on_output=on_output),
                progress,
                tick,
            )
            venv = read_venv_image(path)
            await _emit(progress, "image", {"status": "ready", "image": image.tag, "venv": str(path)})
            env = {**venv.env, **env}  # the image's variables; the given ones (secrets included) win
            python = str(venv.python)
            overlays = [Overlay(str(venv.folder(p)), p) for p in venv.paths]
            cwd = venv.workdir
        env = _with_tasks(env, spec, None)  # GPUs: the worker's CUDA_VISIBLE_DEVICES, if any
        where: dict[str, Any] = {}
        cgroup = None
        why = _limits.unavailable()
        if why is None:
            try:
                cgroup = await asyncio.to_thread(_limits.create, self.provider.state_dir, container_id, spec.cpu,
                                                 spec.memory_mb)
            except _limits.LimitsUnavailable as e:
                raise StartFailed(f"cpu={spec.cpu} and memory_mb={spec.memory_mb} cannot be enforced: {e}; "
                                  "Fix: run this function on the docker provider") from None
            views = list(cgroup.views) if namespace_unavailable() is None else []
            env["APOTHIC_MEMORY_CGROUP"] = cgroup.memory[1] if views else cgroup.memory[0]
            where.update(cpu=spec.cpu, memory_mb=spec.memory_mb)
        else:
            views = []
            where["not_enforced"] = ["cpu", "memory_mb"]
            await _emit(progress, "container", {
                "warning": f"cpu={spec.cpu} and memory_mb={spec.memory_mb} are not enforced: this host gives the "
                f"process provider no cgroup ({why}). Fix: enable the docker provider, which enforces them."})
        try:
            handle = await self.provider.start(container_id, env, python=python, cwd=cwd,
                                               binds=mounts.binds if mounts else None, overlays=overlays,
                                               views=views, join=list(cgroup.dirs) if cgroup else None)
        except MountRefused as e:
            await asyncio.to_thread(self._clean, container_id)
            raise StartFailed(str(e)) from None
        except BaseException:
            await asyncio.to_thread(self._clean, container_id)
            raise
        return Started(handle.pid, handle, {"pid": handle.pid, **where})

    def _clean(self, container_id: str) -> None:
        """Remove what a container that no longer runs leaves: its cgroup, its image layers."""
        _limits.remove(self.provider.state_dir, container_id)
        self.provider.remove_layer(container_id)

    async def adopt(self, container_id: str, token: int) -> Any:
        return self.provider.adopt(container_id, token)

    def token(self, handle: Any) -> int:
        return int(handle.pid)

    async def wait(self, handle: Any, timeout: float) -> int | None:
        code = await self.provider.wait(handle, timeout)
        if code is not None:
            await asyncio.to_thread(self._clean, handle.container_id)
        return code

    async def stop(self, handle: Any, grace_s: float, tick: Tick) -> int:
        code = await self.provider.stop(handle, grace_s, tick=tick)
        await asyncio.to_thread(self._clean, handle.container_id)
        return code

    async def exit_status(self, container_id: str) -> int:
        return self.provider.exit_status(container_id)

    async def log_tail(self, container_id: str) -> str:
        return self.provider.log_tail(container_id)

    async def release(self, container_id: str) -> list[str]:
        killed = await asyncio.to_thread(self.provider.release, container_id)
        await asyncio.to_thread(self._clean, container_id)
        return [str(p) for p in killed]

    async def close(self, handle: Any) -> None:
        pass


class DockerHost:
    name = "docker"

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self.provider = DockerProvider()

    def usable_for(self, spec: FunctionSpec) -> str | None:
        return None

    @gets_payload_key
    async def start(
        self, container_id: str, env: dict[str, str], spec: FunctionSpec, offer: Offer | None,
        progress: Progress, tick: Tick, candidates: list[Offer] | None = None, mounts: Any = None,
    ) -> Started:
        ref = await _build_image(spec, self.settings.docker_registry, False, progress, tick)
        gpus = _gpus_for(spec, offer)
        env = _with_tasks(env, spec, str(gpus))
        try:
            handle = await self.provider.start(
                container_id, env, image_ref=ref, cpu=spec.cpu, memory_mb=spec.memory_mb,
                disk_gb=spec.disk_gb, gpus=gpus,
                shared_dirs=_local_blob_store(env) + tuple(mounts.shared if mounts else ()),
                binds=mounts.binds if mounts else (),
            )
        except DockerUnavailable as e:
            raise StartFailed(str(e), retryable=True) from None
        except Exception as e:  # noqa: BLE001 - the provider's refusal, said once
            raise StartFailed(str(e)) from None
        where = {"docker_id": handle.docker_id[:12], "image": ref.ref, "cpu": spec.cpu, "memory_mb": spec.memory_mb}
        if handle.notes:
            where["not_enforced"] = list(handle.notes)
        return Started(handle.pid or 1, handle, where)

    async def adopt(self, container_id: str, token: int) -> Any:
        return await asyncio.to_thread(self.provider.adopt, container_id)

    def token(self, handle: Any) -> int:
        return int(handle.pid or 1)  # found by its label, whatever the token

    async def wait(self, handle: Any, timeout: float) -> int | None:
        # Watching a long-lived container: once a second is enough (the default polls 4x/s).
        return await self.provider.wait(handle, timeout, poll_s=1.0)

    async def stop(self, handle: Any, grace_s: float, tick: Tick) -> int:
        return await self.provider.stop(handle, grace_s, tick=tick)

    async def exit_status(self, container_id: str) -> int:
        return await asyncio.to_thread(self.provider.exit_status, container_id)

    async def log_tail(self, container_id: str) -> str:
        return await asyncio.to_thread(self.provider.log_tail, container_id)

    async def release(self, container_id: str) -> list[str]:
        return await asyncio.to_thread(self.provider.release, container_id)

    async def close(self, handle: Any) -> None:
        pass


def _local_blob_store(env: dict[str, str]) -> tuple[str, ...]:
    """The blob store's folder when it is one (a container on this host shares it), else ()."""
    store = env.get("APOTHIC_BLOB_STORE", "")
    return (store,) if store and not store.startswith("s3://") else ()


def _with_tasks(env: dict[str, str], spec: FunctionSpec, gpus: str | None) -> dict[str, str]:
    """``env`` plus what ``python -m apothic.runtime`` needs to run ``tasks_per_container``
    runtimes (``apothic/runtime/_tasks.py``): their number and, when given, the container's GPU
    count (``all``: what the machine has) that it splits among them."""
    out = {**env, "APOTHIC_TASKS_PER_CONTAINER": str(max(1, spec.tasks_per_container))}
    if gpus is not None:
        out["APOTHIC_GPUS"] = gpus
    return out


def _gpus_for(spec: FunctionSpec, offer: Offer | None) -> int:
    """GPUs to pass into a container: its ``gpu_count`` (else 1) when its filters need a GPU."""
    if offer is None or not offer.num_gpus or not spec.placement:
        return 0
    if not placement_query(spec.placement).wants_gpu:
        return 0
    return min(int(spec.placement.get("gpu_count") or 1), offer.num_gpus)


@dataclasses.dataclass
class VastHandle:
    instance_id: int
    client: VastClient
    # Default volumes the machine works on through S3 (their writes come back while it runs).
    mirrors: list[Any] = dataclasses.field(default_factory=list)


class VastHost:
    """Rented machines through the Vast.ai API (``VAST_API_KEY``, ``VAST_URL``)."""

    name = "vast"
    POLL_S = 2.0

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings

    def _client(self) -> VastClient:
        return VastClient()

    def usable_for(self, spec: FunctionSpec) -> str | None:
        return None

    @gets_payload_key
    async def start(
        self, container_id: str, env: dict[str, str], spec: FunctionSpec, offer: Offer | None,
        progress: Progress, tick: Tick, candidates: list[Offer] | None = None, mounts: Any = None,
    ) -> Started:
        """Rent the first of ``candidates`` (ranked offers of this provider) that runs."""
        ref = await _build_image(spec, self.settings.vast_registry, True, progress, tick)
        image = ref.pinned_ref or ref.pushed_ref or ref.ref
        env = {**env, "APOTHIC_CONTAINER_ID": container_id, "PYTHONUNBUFFERED": "1"}
        wants_gpu = bool(spec.placement) and placement_query(spec.placement).wants_gpu
        env = _with_tasks(env, spec, "all" if wants_gpu else "0")  # the machine's GPUs, split among its tasks
        if _local_blob_store(env):
            await _emit(progress, "container", {
                "warning": f"the blob store is a folder of this host ({env['APOTHIC_BLOB_STORE']}): a rented "
                "machine cannot read large arguments or write large results there. Fix: set blobs.store "
                "(APOTHIC_BLOB_STORE) to an s3:// bucket both can reach."})
        offers = candidates or ([offer] if offer is not None else [])

        async def on_event(kind: str, data: dict[str, Any]) -> None:
            tick()
            await _emit(progress, "provisioning", {"step": kind, **data})

        mirrors = await push_mirrors(mounts, progress, tick)
        client = self._client()
        try:
            instance_id, chosen = await heartbeating(provision(
                client, offers, image=image, env=env, onstart=f"exec {ref.python} -m apothic.runtime",
                disk_gb=max(float(spec.disk_gb or 10), 10.0), label=container_id,
                ready_timeout_s=self.settings.vast_ready_timeout_s, on_event=on_event,
                max_offers=self.settings.vast_max_offers, volume=vast_volume_info(mounts),
            ), tick)
            await record_vast_volume(mounts, client, chosen, progress)
        except VastError as e:
            await client.aclose()
            # Rate limited: this start may pass later (the activity retries it). An image no
            # host can pull, or no offer at all: no other start can pass (the fleet stops).
            raise StartFailed(f"no Vast.ai offer could be rented: {e}", retryable=isinstance(e, VastRateLimited),
                              permanent=isinstance(e, ProvisionFailed) and e.permanent) from None
        except BaseException:
            await client.aclose()
            raise
        where = {"instance_id": instance_id, "offer_id": chosen.offer_id, "gpu_name": chosen.gpu_name,
                 "num_gpus": chosen.num_gpus, "dph_total": chosen.dph_total, "geolocation": chosen.geolocation,
                 "image": image}
        return Started(instance_id, VastHandle(instance_id, client, mirrors), where)

    async def adopt(self, container_id: str, token: int) -> Any:
        """The instance carrying this container's label (``token``: its id; 0: look it up),
        whatever its state (``wait`` reads how it ended). None when it is gone; an API error
        propagates (the activity is retried, nothing is released on a guess).

        ``token`` 0 means the worker that rented it was lost before the rental completed
        (still loading, or not yet created): nobody waits for such an instance to become ready
        or knows whether it is still needed, so the ones not ``running`` are destroyed here and
        the start begins again (the new attempt then asks whether it is still needed).
        """
        client = self._client()
        try:
            if token:
                try:
                    row = await client.show(token)
                except InstanceNotFound:
                    row = None
                rows = [row] if row is not None and row.get("label") == container_id else []
            else:
                rows = []
                for row in await client.list_instances(label=container_id):
                    if row.get("actual_status") == "running":
                        rows.append(row)
                    else:
                        await client.destroy(int(row["id"]))
        except BaseException:
            await client.aclose()
            raise
        if not rows:
            await client.aclose()
            return None
        env = {str(k): str(v) for k, v in rows[0].get("extra_env") or []}
        return VastHandle(int(rows[0]["id"]), client, await asyncio.to_thread(mirrors_in, env))

    def token(self, handle: VastHandle) -> int:
        return handle.instance_id

    async def wait(self, handle: VastHandle, timeout: float) -> int | None:
        code = await self._wait(handle, timeout)
        if handle.mirrors:
            await pull_mirrors(handle.mirrors)  # what it wrote into default volumes comes back
        return code

    async def _wait(self, handle: VastHandle, timeout: float) -> int | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                row = await handle.client.show(handle.instance_id)
                status = row.get("actual_status")
            except InstanceNotFound:
                status = "destroyed"
            except VastError:
                status = "running"  # a failed read says nothing; look again
            if status == "exited":
                return await self._exit_code(handle.client, handle.instance_id)
            if status not in ("running", "loading", "created"):
                return EXIT_UNKNOWN  # offline, stopped or destroyed: the machine is lost
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(self.POLL_S, remaining))

    async def _exit_code(self, client: VastClient, instance_id: int) -> int:
        try:
            text = await client.logs(instance_id, tail=50)
        except VastError:
            return EXIT_UNKNOWN
        found = _EXIT_LINE.findall(text)
        return int(found[-1]) if found else EXIT_UNKNOWN

    async def stop(self, handle: VastHandle, grace_s: float, tick: Tick) -> int:
        """Stop the instance (its runtime drains on SIGTERM); release destroys it."""
        try:
            await handle.client.set_state(handle.instance_id, "stopped")
        except VastError:
            pass
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        code: int | None = None
        while code is None and loop.time() < deadline:
            code = await self.wait(handle, min(2.0, max(0.0, deadline - loop.time())))
            tick()
        return EXIT_UNKNOWN if code is None else code

    async def close(self, handle: VastHandle) -> None:
        await handle.client.aclose()

    async def exit_status(self, container_id: str) -> int:
        return EXIT_UNKNOWN

    async def log_tail(self, container_id: str) -> str:
        async with self._client() as client:
            try:
                rows = await client.list_instances(label=container_id)
                if rows:
                    return (await client.logs(int(rows[0]["id"]), tail=80))[-4000:]
            except VastError as e:
                return f"(no log: {e})"
        return ""

    async def release(self, container_id: str) -> list[str]:
        async with self._client() as client:
            gone = []
            for row in await client.list_instances(label=container_id):
                await client.destroy(int(row["id"]))
                gone.append(str(row["id"]))
            return gone


Host = ProcessHost | DockerHost | VastHost
