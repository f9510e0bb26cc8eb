"""What the SDK and the CLI do with volumes: create, list, delete, and read and write files.

The methods of :class:`VolumeMethods` are part of every ``StorageMount`` of kind
``volume`` (``Volume.from_name("x").listdir("/")``); their names follow Modal's
``Volume`` (``listdir``, ``read_file``, ``read_file_into_fileobj``, ``remove_file``,
``batch_upload``, plus ``put_file`` and ``write_file``). Each blocks, and has an ``.aio``
twin.

Where a volume is: a ``default`` volume is a folder of the control plane's host
(``$APOTHIC_HOME/volumes/<name>``, :mod:`._registry`), which the SDK and the CLI reach
directly: they act on the control plane's volumes when they run on its host (always true
of the embedded dev server's clients). A ``cloud`` volume is a prefix of the S3 store
(:mod:`._s3`), the same from every host. The files of a ``vast_local`` volume are on its
rented machine only; only a function that mounts it reaches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .._control._loop import AioNamespace, synced
from ..exceptions import InvalidError, NotFoundError, NotSupportedError
from ._files import FileEntry, FolderFiles, S3Files, clean_path
from ._registry import Registry, VolumeRecord, check_volume_name
from ._s3 import (
    cloud_index_key,
    cloud_volume_place,
    is_botocore_error,
    s3_client,
    s3_problem,
    store_place,
)

BACKENDS = ("default", "cloud", "vast_local")


@dataclasses.dataclass(frozen=True)
class VolumeInfo:
    """One volume, as ``Volume.list()`` and ``apothic volume list`` show it."""

    name: str
    backend: str
    created_at: float
    location: str


def _blobs() -> Any:
    from .._control._config import load_settings

    return load_settings().blobs


# --- cloud volumes: their records are objects of the S3 store ---


def cloud_get(blobs: Any, name: str) -> VolumeRecord | None:
    place, key = cloud_index_key(blobs, name)
    try:
        body = s3_client(place).get_object(Bucket=place.bucket, Key=key)["Body"].read()
    except Exception as e:
        code = getattr(e, "response", {}).get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404", "NotFound"):
            return None
        if not is_botocore_error(e):
            raise
        raise s3_problem(e, place, f"reading cloud volume {name!r}") from None
    raw = json.loads(body)
    return VolumeRecord(name=name, backend="cloud", created_at=float(raw.get("created_at", 0)))


def cloud_create(blobs: Any, name: str) -> tuple[VolumeRecord, bool]:
    found = cloud_get(blobs, name)
    if found is not None:
        return found, False
    place, key = cloud_index_key(blobs, name)
    rec = VolumeRecord(name=name, backend="cloud", created_at=time.time())
    try:
        s3_client(place).put_object(Bucket=place.bucket, Key=key, Body=json.dumps(dataclasses.asdict(rec)).encode())
    except Exception as e:
        if not is_botocore_error(e):
            raise
        raise s3_problem(e, place, f"creating cloud volume {name!r}") from None
    return rec, True


def cloud_list(blobs: Any) -> list[VolumeRecord]:
    place = store_place(blobs)
    if place is None:
        return []
    prefix = place.key("volume-index") + "/"
    names = []
    try:
        for page in s3_client(place).get_paginator("list_objects_v2").paginate(Bucket=place.bucket, Prefix=prefix):
            names += [o["Key"][len(prefix):-len(".json")] for o in page.get("Contents") or []
                      if o["Key"].endswith(".json")]
    except Exception as e:
        if not is_botocore_error(e):
            raise
        raise s3_problem(e, place, "listing cloud volumes") from None
    return [r for r in (cloud_get(blobs, n) for n in sorted(names)) if r is not None]


def cloud_delete(blobs: Any, name: str) -> None:
    files = S3Files(name, cloud_volume_place(blobs, name))
    with contextlib.suppress(NotFoundError):
        files.remove("", recursive=True)
    place, key = cloud_index_key(blobs, name)
    s3_client(place).delete_object(Bucket=place.bucket, Key=key)


# --- one volume, whatever its backend ---


def find(name: str, blobs: Any = None, registry: Registry | None = None) -> VolumeRecord:
    """The volume called ``name``: this host's registry first, then the S3 store's."""
    check_volume_name(name)
    registry = registry or Registry()
    rec = registry.get(name)
    if rec is not None:
        return rec
    blobs = blobs if blobs is not None else _blobs()
    if store_place(blobs) is not None:
        rec = cloud_get(blobs, name)
        if rec is not None:
            return rec
    raise NotFoundError(
        f"volume {name!r} does not exist (looked in {registry.root}"
        + (f" and {store_place(blobs).where()}" if store_place(blobs) else "")  # type: ignore[union-attr]
        + f"). Fix: create it with `apothic volume create {name}`, or list the volumes with `apothic volume list`."
    )


def create(name: str, backend: str = "default", *, exist_ok: bool = True) -> tuple[VolumeRecord, bool]:
    """Create volume ``name`` of ``backend``; returns (record, created)."""
    check_volume_name(name)
    if backend not in BACKENDS:
        raise InvalidError(f"backend {backend!r} is not one of {BACKENDS}. Fix: pick one of them.")
    registry = Registry()
    if backend == "cloud":
        other = registry.get(name)
        if other is not None:
            raise InvalidError(f"volume {name!r} exists already as a {other.backend!r} volume. Fix: pick another name.")
        rec, made = cloud_create(_blobs(), name)
        if not made and not exist_ok:
            raise InvalidError(f"volume {name!r} exists already. Fix: use it, or pick another name.")
        return rec, made
    blobs = _blobs()
    if store_place(blobs) is not None and cloud_get(blobs, name) is not None:
        raise InvalidError(f"volume {name!r} exists already as a 'cloud' volume. Fix: pick another name.")
    return registry.create(name, backend, exist_ok=exist_ok)


def list_volumes() -> list[VolumeInfo]:
    registry = Registry()
    out = [VolumeInfo(r.name, r.backend, r.created_at, _location(registry, r)) for r in registry.list()]
    blobs = _blobs()
    if store_place(blobs) is not None:
        out += [VolumeInfo(r.name, "cloud", r.created_at, cloud_volume_place(blobs, r.name).where())
                for r in cloud_list(blobs)]
    return sorted(out, key=lambda v: v.name)


def _location(registry: Registry, rec: VolumeRecord) -> str:
    if rec.backend == "default":
        return str(registry.folder(rec.name))
    if rec.vast.get("volume_id"):
        return f"Vast volume {rec.vast['volume_id']} on machine {rec.vast.get('machine_id')}"
    return "Vast (not placed yet)"


async def delete(name: str) -> VolumeRecord:
    """Delete volume ``name`` and all its files (a vast_local volume: on Vast too)."""
    rec = await asyncio.to_thread(find, name)
    if rec.backend == "cloud":
        await asyncio.to_thread(cloud_delete, _blobs(), name)
        return rec
    if rec.backend == "vast_local" and rec.vast.get("volume_id"):
        from ..placement.providers.vast import VastClient, VastError

        try:
            async with VastClient() as client:
                await client.delete_volume(int(rec.vast["volume_id"]))
        except VastError as e:
            raise InvalidError(f"deleting vast_local volume {name!r} (Vast volume {rec.vast['volume_id']}): {e}. "
                               "Fix: end the containers that use it (their instances must be destroyed first) "
                               "and try again.") from None
    removed = await asyncio.to_thread(Registry().delete, name)
    if removed.backend == "default" and store_place(_blobs()) is not None:  # its copy for rented machines
        from ._s3 import mirror_place

        with contextlib.suppress(NotFoundError):
            await asyncio.to_thread(S3Files(name, mirror_place(_blobs(), name)).remove, "", True)
    return removed


def files_for(name: str, backend: str, create_if_missing: bool = False) -> FolderFiles | S3Files:
    """The files of volume ``name`` (created first when ``create_if_missing``)."""
    registry = Registry()
    if backend == "vast_local":
        raise NotSupportedError(
            f"the files of vast_local volume {name!r} are on its rented machine only; the SDK and the CLI cannot "
            "reach them. Fix: read or write them from a function that mounts the volume, or use a default or "
            "cloud volume.")
    if backend == "cloud":
        blobs = _blobs()
        if create_if_missing:
            cloud_create(blobs, name)
        elif cloud_get(blobs, name) is None:
            raise NotFoundError(f"cloud volume {name!r} does not exist in {cloud_volume_place(blobs, name).where()}. "
                                f"Fix: create it with `apothic volume create {name} --backend cloud`, or use "
                                f"Volume.cloud({name!r}, create_if_missing=True).")
        return S3Files(name, cloud_volume_place(blobs, name))
    rec = registry.create(name, "default")[0] if create_if_missing else registry.require(name, "default")
    return FolderFiles(rec.name, registry.folder(rec.name))


def files_of_record(rec: VolumeRecord) -> FolderFiles | S3Files:
    return files_for(rec.name, rec.backend)


class Uploader:
    """What ``with vol.batch_upload() as batch:`` gives: queue files, uploaded on leaving."""

    def __init__(self, force: bool) -> None:
        self.force = force
        self.items: list[tuple[Any, str]] = []

    def put_file(self, local_file: str | os.PathLike[str] | BinaryIO, remote_path: str) -> None:
        self.items.append((local_file, remote_path))

    def put_directory(self, local_path: str | os.PathLike[str], remote_path: str) -> None:
        root = Path(local_path)
        if not root.is_dir():
            raise InvalidError(f"put_directory({str(local_path)!r}): not a directory. Fix: give a local folder.")
        for p in sorted(root.rglob("*")):
            if p.is_file():
                self.items.append((p, f"{remote_path.rstrip('/')}/{p.relative_to(root).as_posix()}"))


def _put(files: FolderFiles | S3Files, local: Any, remote: str, force: bool = True) -> int:
    rel = clean_path(remote, files.name)
    if not force:
        try:
            files.listdir(rel)
        except NotFoundError:
            pass
        else:
            raise InvalidError(f"{('/' + rel)!r} exists in volume {files.name!r}. Fix: pass force=True to replace it.")
    if isinstance(local, (str, os.PathLike)):
        path = Path(local)
        if not path.is_file():
            raise InvalidError(f"put_file({str(local)!r}, ...): no such local file. Fix: give a file that exists.")
        with open(path, "rb") as f:
            return files.write(rel, f)
    return files.write(rel, local)


class VolumeMethods:
    """File methods of a volume (mixed into ``StorageMount``; ``kind='volume'`` only)."""

    aio = AioNamespace.descriptor()

    # Fields of StorageMount.
    kind: str
    name: str
    backend: str
    create_if_missing: bool

    def _files(self) -> FolderFiles | S3Files:
        if self.kind != "volume":
            raise InvalidError(f"{self.describe()} is a bucket mount: its files are the bucket's. "  # type: ignore[attr-defined]
                               "Fix: use an S3 client for the bucket, or mount it in a function.")
        return files_for(self.name, self.backend, self.create_if_missing)

    @synced
    async def listdir(self, path: str = "/", *, recursive: bool = False) -> list[FileEntry]:
        """The files and directories at ``path`` (all below it with ``recursive=True``)."""
        return await asyncio.to_thread(lambda: self._files().listdir(clean_path(path, self.name), recursive))

    @synced
    async def read_file(self, path: str) -> bytes:
        """The contents of the file at ``path``."""
        def read() -> bytes:
            buf = io.BytesIO()
            self._files().read(clean_path(path, self.name), buf)
            return buf.getvalue()
        return await asyncio.to_thread(read)

    @synced
    async def read_file_into_fileobj(self, path: str, fileobj: BinaryIO) -> int:
        """Write the file at ``path`` into ``fileobj``; returns the number of bytes."""
        return await asyncio.to_thread(lambda: self._files().read(clean_path(path, self.name), fileobj))

    @synced
    async def put_file(self, local_file: str | os.PathLike[str] | BinaryIO, remote_path: str, *,
                       force: bool = True) -> int:
        """Upload a local file (a path or a binary file object) to ``remote_path``."""
        return await asyncio.to_thread(lambda: _put(self._files(), local_file, remote_path, force))

    @synced
    async def write_file(self, remote_path: str, data: bytes) -> int:
        """Write ``data`` to the file at ``remote_path`` (replacing it)."""
        return await asyncio.to_thread(lambda: _put(self._files(), io.BytesIO(bytes(data)), remote_path))

    @synced
    async def remove_file(self, path: str, *, recursive: bool = False) -> int:
        """Remove a file (or a directory with ``recursive=True``); returns the files removed."""
        return await asyncio.to_thread(lambda: self._files().remove(clean_path(path, self.name), recursive))

    @contextlib.contextmanager
    def batch_upload(self, *, force: bool = False) -> Iterator[Uploader]:
        """``with vol.batch_upload() as batch: batch.put_file(...); batch.put_directory(...)``:
        uploaded when the block ends (``force=False`` refuses to replace a file)."""
        batch = Uploader(force)
        yield batch
        self._upload(batch)

    def _upload(self, batch: Uploader) -> None:
        files = self._files()
        for local, remote in batch.items:
            _put(files, local, remote, batch.force)
