"""At deploy: every volume a function mounts exists, or is created when it may be.

Deploy runs in the client. A ``default`` or ``vast_local`` volume is recorded in the volume
registry of the control plane's host; the client reads it directly when that registry is
this host's: with the embedded dev server (``Settings.embedded``), or when a control worker
of the same Temporal server and namespace has marked this host's registry as its own
(it does when it starts). Otherwise (a client on another host than the control plane) the
client checks nothing there and the control worker checks when a container starts: the
first call fails with the same message. ``cloud``
volumes are recorded in the S3 store, which every host reaches: they are checked in both
modes. A missing volume without ``create_if_missing`` fails the deploy with
:class:`apothic.NotFoundError` naming it and the fix; nothing is deployed then.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._contracts import DeployRequest, MountSpec
from ..exceptions import NotFoundError
from ._registry import Registry
from ._s3 import cloud_volume_place
from ._sdk import cloud_create, cloud_get


def check_mount(mount: MountSpec, blobs: Any, registry: Registry | None, where: str) -> bool:
    """Check (or create) one volume; returns whether it was created (blocking)."""
    if mount.kind != "volume":
        return False
    create = bool(mount.options.get("create_if_missing")) or mount.backend == "vast_local"
    if mount.backend == "cloud":
        if create:
            return cloud_create(blobs, mount.name)[1]
        if cloud_get(blobs, mount.name) is None:
            raise NotFoundError(
                f"{where}: cloud volume {mount.name!r} (mounted at {mount.path}) does not exist in "
                f"{cloud_volume_place(blobs, mount.name).where()}. Fix: create it with `apothic volume create "
                f"{mount.name} --backend cloud`, or write Volume.cloud({mount.name!r}, create_if_missing=True).")
        return False
    if registry is None:
        return False
    if create:
        return registry.create(mount.name, mount.backend)[1]
    rec = registry.get(mount.name)
    if rec is None:
        raise NotFoundError(
            f"{where}: volume {mount.name!r} (mounted at {mount.path}) does not exist. Fix: create it with "
            f"`apothic volume create {mount.name}`, or write Volume.from_name({mount.name!r}, "
            "create_if_missing=True).")
    registry.require(mount.name, mount.backend)
    return False


async def check_deploy_volumes(settings: Any, req: DeployRequest) -> list[str]:
    """Check every mounted volume of ``req``; returns the names of the volumes created."""
    mounts = [(f.spec.name, m) for f in req.functions for m in f.spec.mounts if m.kind == "volume"]
    if not mounts:
        return []

    def run() -> list[str]:
        registry: Registry | None = Registry()
        if not (settings.embedded or registry.serves(settings.address, settings.namespace)):  # type: ignore[union-attr]
            registry = None
        made = []
        for fn, mount in mounts:
            if check_mount(mount, settings.blobs, registry, f"deploying {req.app}.{fn}"):
                made.append(mount.name)
        return made

    return await asyncio.to_thread(run)


def mount_specs(volumes: Any) -> list[MountSpec]:
    """The validated ``volumes=`` of a function as its spec's mounts, in mount-path order."""
    if not volumes:
        return []
    pairs = list(volumes.items()) if isinstance(volumes, dict) else [(m.mount_path, m) for m in volumes]
    out = []
    for path, m in sorted(pairs, key=lambda pm: pm[0]):
        options = {k: v for k, v in m.options.items() if v is not None and k != "read_only"}
        if m.kind == "volume" and m.create_if_missing:
            options["create_if_missing"] = True
        out.append(MountSpec(path=path, kind=m.kind, name=m.name, backend=m.backend,
                             read_only=bool(m.options.get("read_only", False)), options=options))
    return out
