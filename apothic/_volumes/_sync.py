"""A folder kept in step with an S3 prefix: download it all, then upload what changed.

A container that mounts a bucket or a cloud volume gets its objects under the prefix as
files (:func:`download`); after each input, the files written, changed or deleted since the
last sync are uploaded or deleted (:func:`upload_changes`). A file counts as changed when its
size, modification time, change time or inode differ from the last snapshot, so a rewrite
in place and a write-then-rename are both seen. S3 has no folders: empty folders are not
uploaded, and an object whose key cannot be a file here (``..``, an empty segment, a key
that is also a folder of other keys) is skipped and counted.

Transfers run ``WORKERS`` at a time in threads (boto3's client is thread-safe). Blocking:
call from a thread in async code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ._s3 import S3Place, is_botocore_error, s3_client, s3_problem

WORKERS = 16
# Objects up to this size move in one request; larger ones in parallel parts.
SMALL_BYTES = 8 * 1024 * 1024
# Objects S3 deletes per request at most.
DELETE_BATCH = 1000

Snapshot = dict[str, tuple[int, int, int, int]]


@dataclasses.dataclass
class SyncStats:
    files: int = 0
    bytes: int = 0
    deleted: int = 0
    skipped: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def as_event(self) -> dict[str, Any]:
        out: dict[str, Any] = {"files": self.files, "bytes": self.bytes, "deleted": self.deleted,
                               "seconds": round(self.seconds, 3)}
        if self.skipped:
            out["skipped"] = self.skipped[:20]
        return out


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def scan(root: str | Path) -> Snapshot:
    """Every regular file under ``root`` (relative POSIX path -> size, mtime, ctime, inode).
    Symbolic links are not followed and not listed."""
    root = os.fspath(root)
    out: Snapshot = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        for name in files:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            out[os.path.relpath(path, root).replace(os.sep, "/")] = _stamp(st)
    return out


def usable_key(rel: str) -> bool:
    parts = rel.split("/")
    return bool(rel) and all(p and p not in (".", "..") for p in parts) and "\0" not in rel


def list_objects(place: S3Place, what: str, secrets: tuple[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Relative path -> {size, etag, key, mtime} of every object under ``place``'s prefix."""
    client = s3_client(place)
    base = place.prefix.strip("/")
    start = f"{base}/" if base else ""
    out: dict[str, dict[str, Any]] = {}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=place.bucket, Prefix=start):
            for obj in page.get("Contents") or []:
                rel = obj["Key"][len(start):]
                out[rel] = {"size": int(obj.get("Size") or 0), "etag": str(obj.get("ETag") or ""), "key": obj["Key"],
                            "mtime": obj["LastModified"].timestamp() if obj.get("LastModified") else 0.0}
    except Exception as e:
        if not is_botocore_error(e):
            raise
        raise s3_problem(e, place, what, secrets) from None
    return out


def get_to_file(client: Any, bucket: str, key: str, dest: str | Path, size: int) -> None:
    """Download one object: a single GET for a small one (much less overhead per file than
    boto3's transfer manager), the transfer manager's parallel ranges for a large one."""
    if size > SMALL_BYTES:
        client.download_file(bucket, key, str(dest))
        return
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    with open(dest, "wb") as f:
        shutil.copyfileobj(body, f, 1024 * 1024)


def put_from_file(client: Any, bucket: str, key: str, path: str | Path, size: int) -> None:
    """Upload one file: a single PUT when small, multipart when large."""
    if size > SMALL_BYTES:
        client.upload_file(str(path), bucket, key)
        return
    with open(path, "rb") as f:
        client.put_object(Bucket=bucket, Key=key, Body=f.read())


def _run(jobs: Iterable[Callable[[], Any]]) -> list[Any]:
    jobs = list(jobs)
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(jobs))) as pool:
        return [f.result() for f in [pool.submit(j) for j in jobs]]


def download(place: S3Place, root: str | Path, what: str,
             secrets: tuple[str, str] | None = None) -> tuple[Snapshot, SyncStats]:
    """Fill ``root`` with the objects under ``place``; returns the snapshot of ``root`` after."""
    t0 = time.monotonic()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stats = SyncStats()
    objects = list_objects(place, what, secrets)
    folders = {rel.rsplit("/", 1)[0] for rel in objects if "/" in rel}
    folders = {"/".join(f.split("/")[:i]) for f in folders for i in range(1, f.count("/") + 2)}
    wanted = []
    for rel, obj in objects.items():
        if rel.endswith("/") and obj["size"] == 0:
            continue  # a folder marker
        if not usable_key(rel) or rel in folders:
            stats.skipped.append(rel)
            continue
        wanted.append((rel, obj))
    client = s3_client(place)

    def fetch(rel: str, key: str, size: int) -> int:
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            get_to_file(client, place.bucket, key, dest, size)
        except Exception as e:
            if not is_botocore_error(e):
                raise
            raise s3_problem(e, place, f"{what}: downloading {rel}", secrets) from None
        return dest.stat().st_size

    sizes = _run([lambda rel=rel, key=obj["key"], size=obj["size"]: fetch(rel, key, size) for rel, obj in wanted])
    stats.files, stats.bytes = len(sizes), sum(sizes)
    stats.seconds = time.monotonic() - t0
    return scan(root), stats


def changes(root: str | Path, before: Snapshot) -> tuple[Snapshot, list[str], list[str]]:
    """(snapshot now, files written or changed, files deleted) since ``before``."""
    now = scan(root)
    changed = sorted(rel for rel, stamp in now.items() if before.get(rel) != stamp)
    deleted = sorted(rel for rel in before if rel not in now)
    return now, changed, deleted


def upload_changes(place: S3Place, root: str | Path, before: Snapshot, what: str,
                   secrets: tuple[str, str] | None = None) -> tuple[Snapshot, SyncStats]:
    """Upload the files of ``root`` changed since ``before`` and delete the removed ones."""
    t0 = time.monotonic()
    root = Path(root)
    now, changed, deleted = changes(root, before)
    stats = SyncStats()
    client = s3_client(place)

    def put(rel: str) -> int:
        try:
            put_from_file(client, place.bucket, place.key(rel), root / rel, now[rel][0])
        except FileNotFoundError:
            return -1  # deleted meanwhile: the next sync deletes it
        except Exception as e:
            if not is_botocore_error(e):
                raise
            raise s3_problem(e, place, f"{what}: uploading {rel}", secrets) from None
        return now[rel][0]

    sizes = _run([lambda rel=rel: put(rel) for rel in changed])
    for rel, size in zip(changed, sizes):
        if size < 0:
            now.pop(rel, None)
    stats.files = sum(1 for s in sizes if s >= 0)
    stats.bytes = sum(s for s in sizes if s >= 0)
    for i in range(0, len(deleted), DELETE_BATCH):
        batch = deleted[i:i + DELETE_BATCH]
        try:
            client.delete_objects(Bucket=place.bucket,
                                  Delete={"Objects": [{"Key": place.key(rel)} for rel in batch], "Quiet": True})
        except Exception as e:
            if not is_botocore_error(e):
                raise
            raise s3_problem(e, place, f"{what}: deleting {len(batch)} file(s)", secrets) from None
    stats.deleted = len(deleted)
    stats.seconds = time.monotonic() - t0
    return now, stats


class Mirror:
    """A folder of this host and its copy under an S3 prefix, for a container elsewhere.

    A manifest (``manifest``, a JSON file; in memory when None) records, per file, the size and
    modification time it had and the object's ETag when the two last matched. :meth:`push`
    makes the copy match the folder: a file is uploaded when the manifest does not know it,
    its size or time changed, or its object is missing or another than the manifest's;
    objects of files that are gone are deleted. :meth:`pull` brings back what changed in the
    copy since the last push or pull (by ETag): written files are downloaded, deleted ones
    removed. A file changed on both sides between two syncs keeps the version of the side
    that syncs last.
    """

    def __init__(self, folder: str | Path, place: S3Place, what: str, manifest: str | Path | None = None) -> None:
        self.folder, self.place, self.what = Path(folder), place, what
        self.manifest_path = Path(manifest) if manifest else None
        self.manifest: dict[str, list[Any]] = self._load()
        self.known: dict[str, str] = {}

    def _load(self) -> dict[str, list[Any]]:
        if self.manifest_path is None:
            return {}
        try:
            return dict(json.loads(self.manifest_path.read_text()))
        except (OSError, ValueError):
            return {}

    def _save(self) -> None:
        if self.manifest_path is not None:
            self.manifest_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.manifest_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.manifest))
            os.replace(tmp, self.manifest_path)

    def _matched(self, local: Snapshot, remote: dict[str, dict[str, Any]]) -> None:
        self.manifest = {rel: [local[rel][0], local[rel][1], remote[rel]["etag"]] for rel in local if rel in remote}
        self.known = {rel: obj["etag"] for rel, obj in remote.items()}
        self._save()

    def push(self) -> SyncStats:
        t0 = time.monotonic()
        self.folder.mkdir(parents=True, exist_ok=True)
        remote = list_objects(self.place, self.what)
        local = scan(self.folder)
        client = s3_client(self.place)

        def stale(rel: str) -> bool:
            seen = self.manifest.get(rel)
            return (seen is None or rel not in remote or seen[0] != local[rel][0] or seen[1] != local[rel][1]
                    or seen[2] != remote[rel]["etag"])

        wanted = [rel for rel in local if stale(rel)]

        def put(rel: str) -> int:
            try:
                put_from_file(client, self.place.bucket, self.place.key(rel), self.folder / rel, local[rel][0])
            except FileNotFoundError:
                return 0
            except Exception as e:
                if not is_botocore_error(e):
                    raise
                raise s3_problem(e, self.place, f"{self.what}: uploading {rel}") from None
            return local[rel][0]

        stats = SyncStats()
        sizes = _run([lambda rel=rel: put(rel) for rel in wanted])
        stats.files, stats.bytes = len(wanted), sum(sizes)
        extra = [remote[rel]["key"] for rel in remote if rel not in local]
        for i in range(0, len(extra), DELETE_BATCH):
            client.delete_objects(Bucket=self.place.bucket,
                                  Delete={"Objects": [{"Key": k} for k in extra[i:i + DELETE_BATCH]], "Quiet": True})
        stats.deleted = len(extra)
        self._matched(local, list_objects(self.place, self.what))
        stats.seconds = time.monotonic() - t0
        return stats

    def resume(self) -> None:
        """Take up the copy after another process pushed it: the objects the manifest says
        match the folder's files count as known; the others come back with the next pull."""
        local = scan(self.folder) if self.folder.is_dir() else {}
        self.known = {rel: obj["etag"] for rel, obj in list_objects(self.place, self.what).items()
                      if rel in local and self.manifest.get(rel) == [local[rel][0], local[rel][1], obj["etag"]]}

    def pull(self) -> SyncStats:
        t0 = time.monotonic()
        remote = list_objects(self.place, self.what)
        client = s3_client(self.place)
        changed = [rel for rel, obj in remote.items() if self.known.get(rel) != obj["etag"] and usable_key(rel)]

        def fetch(rel: str) -> int:
            dest = self.folder / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.apothic-pull")
            try:
                get_to_file(client, self.place.bucket, remote[rel]["key"], tmp, remote[rel]["size"])
            except Exception as e:
                tmp.unlink(missing_ok=True)
                if not is_botocore_error(e):
                    raise
                raise s3_problem(e, self.place, f"{self.what}: downloading {rel}") from None
            os.replace(tmp, dest)
            return remote[rel]["size"]

        stats = SyncStats()
        if not changed and all(rel in remote for rel in self.known):
            return stats
        sizes = _run([lambda rel=rel: fetch(rel) for rel in changed])
        stats.files, stats.bytes = len(changed), sum(sizes)
        for rel in changed:  # only what came back is recorded: local changes still wait for a push
            st = (self.folder / rel).stat()
            self.manifest[rel] = [st.st_size, st.st_mtime_ns, remote[rel]["etag"]]
        for rel in [r for r in self.known if r not in remote and usable_key(r)]:
            (self.folder / rel).unlink(missing_ok=True)
            self.manifest.pop(rel, None)
            stats.deleted += 1
        self.known = {rel: obj["etag"] for rel, obj in remote.items()}
        self._save()
        stats.seconds = time.monotonic() - t0
        return stats
