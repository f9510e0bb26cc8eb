"""Volumes and bucket mounts of a container, prepared where it starts (``run_container``).

For each ``MountSpec`` of the function, before its container starts:

- ``default`` volume: its folder ``$APOTHIC_HOME/volumes/<name>`` (created when
  ``create_if_missing``; a missing one fails the start, naming it and the fix). On the
  process and docker providers the folder itself is bind-mounted at the mount path: every
  write is at once in the folder, for every container of this host. On a rented machine the
  folder travels through the S3 store: it is pushed to ``volume-mirrors/<name>/`` first, the
  container syncs with that copy like with a cloud volume, and what it wrote comes back into
  the folder while it runs and when it ends (:func:`pull_mirrors`).
- ``cloud`` volume and bucket: a cache folder per container (``$APOTHIC_HOME/mounts/<container>/<i>``,
  or on a rented machine the mount path itself) that the runtime fills from S3 at start and
  uploads from after each input (``apothic/runtime/_mounts.py``). The bucket and the credentials
  are checked here first: a missing bucket or refused credentials fail the start for good,
  naming the bucket, the endpoint and the fix, before anything is mounted.
- ``vast_local`` volume: a Vast.ai volume on the rented machine (``_vast_local``).

A bucket's credentials are the values of the two secrets it names (each one ``KEY=VALUE``
pair whose value is the key), read here from the secret store and given to the container in
its environment only (``APOTHIC_MOUNT_<i>_ACCESS_KEY``/``_SECRET_KEY``, removed from the
runtime's environment before user code runs): never in an event, a log line or a workflow.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from apothic.placement.providers.process import Bind

from apothic._contracts import FunctionSpec, MountSpec
from apothic._control._config import Settings, apothic_home
from apothic._volumes._registry import Registry
from apothic._volumes._s3 import (
    S3Place,
    check_bucket,
    cloud_volume_place,
    mirror_place,
    store_place,
)
from apothic._volumes._sdk import cloud_create, cloud_get
from apothic._volumes._sync import Mirror
from apothic.exceptions import ApothicError

MOUNTS_ENV = "APOTHIC_MOUNTS"


class MountFailed(Exception):
    """A mount cannot be prepared; retrying the start does not help (the message says why)."""


@dataclasses.dataclass
class MountPlan:
    """What a host needs to mount a function's storage.

    ``binds``: host folder -> mount path (process, docker); ``shared``: host folders the
    runtime writes at their own path (the caches it syncs); ``env``: the runtime's
    ``APOTHIC_MOUNTS`` and bucket credentials; ``events``: one ``volume`` event per mount;
    ``mirrors``: default volumes copied to S3 for a rented machine (folder, S3 place).
    """

    binds: list[Bind] = dataclasses.field(default_factory=list)
    shared: list[str] = dataclasses.field(default_factory=list)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    mirrors: list[Mirror] = dataclasses.field(default_factory=list)
    vast_local: MountSpec | None = None

    @property
    def empty(self) -> bool:
        return not (self.binds or self.env or self.mirrors or self.vast_local)


def mirror_manifest(name: str) -> Path:
    """What the folder of default volume ``name`` and its S3 copy last agreed on."""
    return Registry().meta / "mirrors" / f"{name}.json"


def cache_root(container_id: str) -> Path:
    return apothic_home() / "mounts" / container_id


def unusable_on(spec: FunctionSpec, provider: str, settings: Settings) -> str | None:
    """Why ``provider`` cannot mount this function's storage (None: it can)."""
    local = [m for m in spec.mounts if m.kind == "volume" and m.backend == "vast_local"]
    if local and provider != "vast":
        return (f"vast_local volume {local[0].name!r} lives on a rented Vast.ai machine; the {provider} provider "
                "cannot mount it")
    if provider == "vast" and store_place(settings.blobs) is None:
        default = [m for m in spec.mounts if m.kind == "volume" and m.backend in ("default", "cloud")]
        if default:
            return (f"volume {default[0].name!r} reaches a rented machine through the S3 store, but blobs.store is "
                    f"the folder {settings.blobs.location()}. Fix: set blobs.store (APOTHIC_BLOB_STORE) to an "
                    "s3:// bucket both this host and rented machines reach")
    return None


def _secret_value(settings: Settings, name: str, what: str) -> str:
    """The value of the one ``KEY=VALUE`` pair of secret ``name`` (never shown anywhere)."""
    from apothic._secrets import store_for

    try:
        pairs = store_for(settings).read(name)
    except ApothicError as e:
        raise MountFailed(f"{what}: {e}") from None
    if len(pairs) != 1:
        keys = ", ".join(sorted(pairs)) or "none"
        raise MountFailed(f"{what}: secret {name!r} holds {len(pairs)} pairs (keys: {keys}); allowed: exactly one "
                          f"KEY=VALUE pair whose value is the key. Fix: `apothic secret create {name} KEY=VALUE "
                          "--force` with the one key.")
    return next(iter(pairs.values()))


def _bucket_place(mount: MountSpec, settings: Settings) -> tuple[S3Place, tuple[str, str] | None]:
    opts = mount.options
    names = (opts.get("access_key_secret"), opts.get("secret_key_secret"))
    what = f"bucket mount {mount.name!r} at {mount.path}"
    if names[0] and names[1]:
        access, secret = _secret_value(settings, names[0], what), _secret_value(settings, names[1], what)
        return S3Place(bucket=mount.name, prefix=str(opts.get("prefix") or ""),
                       endpoint_url=str(opts.get("endpoint_url") or ""), access_key=access, secret_key=secret), \
            (names[0], names[1])
    return S3Place(bucket=mount.name, prefix=str(opts.get("prefix") or ""),
                   endpoint_url=str(opts.get("endpoint_url") or ""), anonymous=True), None


def _check(place: S3Place, what: str, secrets: tuple[str, str] | None) -> None:
    try:
        check_bucket(place, what, secrets)
    except ApothicError as e:
        raise MountFailed(str(e)) from None


def plan_mounts(spec: FunctionSpec, provider: str, container_id: str, settings: Settings) -> MountPlan:
    """Check and prepare every mount of ``spec`` for a container on ``provider`` (blocking).

    Raises :class:`MountFailed` naming the mount and the fix; nothing is left behind then.
    """
    plan = MountPlan()
    try:
        _plan(plan, spec, provider, container_id, settings)
    except BaseException:
        release_mounts(container_id)
        raise
    return plan


def _plan(plan: MountPlan, spec: FunctionSpec, provider: str, container_id: str, settings: Settings) -> None:
    registry = Registry()
    syncs: list[dict[str, Any]] = []
    rented = provider == "vast"
    for i, mount in enumerate(spec.mounts):
        event: dict[str, Any] = {"status": "ready", "kind": mount.kind, "name": mount.name, "path": mount.path,
                                 "read_only": mount.read_only, "provider": provider}
        if mount.kind == "volume":
            event["backend"] = mount.backend
        if mount.kind == "volume" and mount.backend == "vast_local":
            plan.vast_local = mount  # created or attached with the instance (vast_volume_info)
            continue
        if mount.kind == "volume" and mount.backend == "default":
            if mount.options.get("create_if_missing"):
                rec, made = registry.create(mount.name, "default")
                event["created"] = made
            else:
                rec = registry.get(mount.name)
                if rec is None:
                    raise MountFailed(
                        f"volume {mount.name!r} (mounted at {mount.path}) does not exist on this control plane "
                        f"({registry.root}). Fix: create it with `apothic volume create {mount.name}`, or write "
                        f"Volume.from_name({mount.name!r}, create_if_missing=True).")
                if rec.backend != "default":
                    raise MountFailed(f"volume {mount.name!r} is a {rec.backend!r} volume, mounted at {mount.path} "
                                      "as a default one. Fix: mount it with its own constructor, or rename one.")
            folder = registry.folder(mount.name)
            folder.mkdir(parents=True, exist_ok=True)
            if not rented:
                plan.binds.append(Bind(str(folder), mount.path, mount.read_only))
                event["folder"] = str(folder)
                plan.events.append(event)
                continue
            place = mirror_place(settings.blobs, mount.name)
            plan.mirrors.append(Mirror(folder, place, f"default volume {mount.name!r}", mirror_manifest(mount.name)))
            syncs.append({"path": mount.path, "source": mount.path, "kind": "volume", "name": mount.name,
                          "place": place.public(), "read_only": mount.read_only, "folder": str(folder)})
            event["through"] = place.where()
            plan.events.append(event)
            continue
        if mount.kind == "volume":  # cloud
            place = _cloud_place(mount, settings)
            secrets = None
        else:
            place, secrets = _bucket_place(mount, settings)
            _check(place, f"bucket mount {mount.name!r} at {mount.path}", secrets)
            event.update(bucket=mount.name, prefix=place.prefix, endpoint_url=place.endpoint_url or "AWS")
        entry: dict[str, Any] = {"path": mount.path, "kind": mount.kind, "name": mount.name,
                                 "place": place.public(), "read_only": mount.read_only}
        if secrets:
            entry["creds"] = f"APOTHIC_MOUNT_{i}"
            plan.env[f"APOTHIC_MOUNT_{i}_ACCESS_KEY"] = place.access_key or ""
            plan.env[f"APOTHIC_MOUNT_{i}_SECRET_KEY"] = place.secret_key or ""
            entry["secrets"] = list(secrets)
        if rented:
            entry["source"] = mount.path
        else:
            cache = cache_root(container_id) / str(i)
            cache.mkdir(parents=True, exist_ok=True)
            entry["source"] = str(cache)
            plan.binds.append(Bind(str(cache), mount.path, mount.read_only))
            plan.shared.append(str(cache))
        syncs.append(entry)
        plan.events.append(event)
    if syncs:
        plan.env[MOUNTS_ENV] = json.dumps(syncs)


def _cloud_place(mount: MountSpec, settings: Settings) -> S3Place:
    what = f"cloud volume {mount.name!r} at {mount.path}"
    try:
        place = cloud_volume_place(settings.blobs, mount.name)
        if mount.options.get("create_if_missing"):
            cloud_create(settings.blobs, mount.name)
        elif cloud_get(settings.blobs, mount.name) is None:
            raise MountFailed(
                f"{what}: it does not exist in {place.where()}. Fix: create it with `apothic volume create "
                f"{mount.name} --backend cloud`, or write Volume.cloud({mount.name!r}, create_if_missing=True).")
    except ApothicError as e:
        raise MountFailed(str(e)) from None
    return place


def release_mounts(container_id: str) -> list[str]:
    """Remove the container's caches (idempotent); returns what was removed."""
    root = cache_root(container_id)
    if not root.exists():
        return []
    shutil.rmtree(root, ignore_errors=True)
    return [str(root)]


async def emit_events(plan: MountPlan, progress: Any) -> None:
    for data in plan.events:
        result = progress("volume", data)
        if asyncio.iscoroutine(result):
            await result


async def prepare_mounts(spec: FunctionSpec, provider: str, container_id: str, settings: Settings,
                         progress: Any, tick: Any) -> MountPlan:
    """:func:`plan_mounts` in a thread while heartbeating, each mount told as a ``volume``
    event; a mount that cannot be made fails the start for good (``StartFailed``)."""
    from ._hosts import StartFailed, heartbeating

    if not spec.mounts:
        return MountPlan()
    try:
        plan = await heartbeating(asyncio.to_thread(plan_mounts, spec, provider, container_id, settings), tick)
    except MountFailed as e:
        result = progress("volume", {"status": "failed", "provider": provider, "error": str(e)})
        if asyncio.iscoroutine(result):
            await result
        raise StartFailed(str(e)) from None
    await emit_events(plan, progress)
    return plan


def mark_volume_registry(settings: Settings) -> None:
    """Mark this host's volume registry as this control plane's (see ``apothic/_volumes/_deploy.py``)."""
    try:
        Registry().mark_control_plane(settings.address, settings.namespace)
    except OSError as e:  # the worker runs on; deploys from this host then skip the early check
        print(f"apothic: the volume registry cannot be marked: {e}", file=sys.stderr)


async def push_mirrors(plan: MountPlan | None, progress: Any, tick: Any) -> list[Mirror]:
    """Copy the default volumes of a container on a rented machine to the S3 store first."""
    from ._hosts import StartFailed, heartbeating

    for mirror in plan.mirrors if plan else []:
        try:
            stats = await heartbeating(asyncio.to_thread(mirror.push), tick)
        except ApothicError as e:
            raise StartFailed(f"{mirror.what}: copying it to the S3 store for a rented machine failed: {e}") from None
        result = progress("volume", {"status": "pushed", "name": mirror.what, "to": mirror.place.where(),
                                     **stats.as_event()})
        if asyncio.iscoroutine(result):
            await result
    return list(plan.mirrors) if plan else []


async def pull_mirrors(mirrors: list[Mirror]) -> None:
    """Bring what containers on a rented machine wrote back into the volumes' folders (best
    effort: a failure is logged and tried again at the next call)."""
    for mirror in mirrors:
        try:
            await asyncio.to_thread(mirror.pull)
        except Exception as e:  # noqa: BLE001 - the container runs on; the next pull tries again
            print(f"apothic: {mirror.what}: bringing back the rented machine's writes failed: {e}", file=sys.stderr)


def mirrors_in(env: dict[str, str]) -> list[Mirror]:
    """The mirrors a container's environment names: a worker that adopts it takes them up
    (blocking; a copy that cannot be read is skipped, and said)."""
    out = []
    for entry in json.loads(env.get(MOUNTS_ENV) or "[]"):
        if entry.get("folder"):
            mirror = Mirror(entry["folder"], S3Place(**entry["place"]), f"default volume {entry['name']!r}",
                            mirror_manifest(entry["name"]))
            try:
                mirror.resume()
            except ApothicError as e:
                print(f"apothic: {mirror.what}: its S3 copy cannot be read: {e}", file=sys.stderr)
                continue
            out.append(mirror)
    return out


# --- vast_local: a Vast.ai volume on the rented machine, which later containers follow ---

VAST_LOCAL_SIZE_GB = 15  # Vast's default size of a new local volume


def _vast_local(spec: FunctionSpec) -> MountSpec | None:
    return next((m for m in spec.mounts if m.kind == "volume" and m.backend == "vast_local"), None)


def vast_volume_name(name: str) -> str:
    """The Vast label of volume ``name`` (Vast allows letters, digits and '_' only)."""
    return "apothic_" + "".join(c if c.isalnum() or c == "_" else "_" for c in name)[:56]


def affine_placement(spec: FunctionSpec) -> dict[str, Any] | None:
    """The function's placement filters, plus its vast_local volume's machine once it has one."""
    mount = _vast_local(spec)
    rec = Registry().get(mount.name) if mount else None
    machine = rec.vast.get("machine_id") if rec else None
    if machine is None:
        return spec.placement
    placement = dict(spec.placement or {})
    filters = dict(placement.get("offer_filters") or {})
    filters["machine_id"] = {"eq": int(machine)}
    placement["offer_filters"] = filters
    return placement


def affinity_note(spec: FunctionSpec) -> str:
    """Why the offers are limited to one machine (for the no-match explanation), or ''."""
    mount = _vast_local(spec)
    rec = Registry().get(mount.name) if mount else None
    if not rec or rec.vast.get("machine_id") is None:
        return ""
    return (f"; vast_local volume {mount.name!r} (Vast volume {rec.vast.get('volume_id')}) lives on machine "  # type: ignore[union-attr]
            f"{rec.vast['machine_id']}, so its functions are placed on that machine only, which has no matching offer "
            f"now (gone, or full). Fix: wait until it is offered again, or delete the volume (`apothic volume delete "
            f"{mount.name}`, its files go with it) to start afresh on another machine")  # type: ignore[union-attr]


def vast_volume_info(plan: MountPlan | None) -> Any:
    """For ``provision``: the ``volume_info`` that creates or attaches the vast_local volume."""
    mount = plan.vast_local if plan else None
    if mount is None:
        return None
    rec = Registry().create(mount.name, "vast_local")[0]

    def info(offer: Any) -> dict[str, Any] | None:
        if rec.vast.get("volume_id"):
            return {"create_new": False, "volume_id": int(rec.vast["volume_id"]), "mount_path": mount.path}
        ask = offer.extra.get("avail_vol_ask_id")
        if ask is None:
            return None
        return {"create_new": True, "volume_id": int(ask), "size": VAST_LOCAL_SIZE_GB, "mount_path": mount.path,
                "name": vast_volume_name(mount.name)}

    return info


async def record_vast_volume(plan: MountPlan | None, client: Any, offer: Any, progress: Any) -> None:
    """After the first placement: remember the volume's id and machine (later containers follow it)."""
    mount = plan.vast_local if plan else None
    if mount is None:
        return
    registry = Registry()
    rec = registry.require(mount.name)
    if not rec.vast.get("volume_id"):
        machine = offer.extra.get("machine_id")
        found = [v for v in await client.list_volumes()
                 if v.get("label") == vast_volume_name(mount.name) and v.get("machine_id") == machine]
        if not found:
            result = progress("volume", {"status": "unrecorded", "name": mount.name, "warning": (
                f"Vast lists no volume {vast_volume_name(mount.name)!r} on machine {machine} after the instance "
                "started: later containers are not held to this machine")})
            if asyncio.iscoroutine(result):
                await result
            return
        vol = found[0]
        rec = registry.update(mount.name, volume_id=int(vol["id"]), machine_id=int(vol["machine_id"]),
                              size_gb=vol.get("disk_space"))
        status = "created"
    else:
        status = "attached"
    result = progress("volume", {"status": status, "kind": "volume", "backend": "vast_local", "name": mount.name,
                                 "path": mount.path, "vast_volume_id": rec.vast["volume_id"],
                                 "machine_id": rec.vast["machine_id"]})
    if asyncio.iscoroutine(result):
        await result
