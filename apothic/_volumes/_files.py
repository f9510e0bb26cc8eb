"""The files of one volume, wherever they are: a folder of this host or an S3 prefix.

Paths inside a volume are POSIX paths relative to its root (``/`` and ``""`` are the root;
a leading ``/`` is ignored); ``..`` is refused. Blocking: the SDK runs these in a thread.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO

from ..exceptions import InvalidError, NotFoundError
from ._s3 import S3Place, is_botocore_error, s3_client, s3_problem


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """One entry of :meth:`StorageMount.listdir`: ``path`` relative to the volume's root,
    ``type`` ``"file"`` or ``"directory"``, ``size`` in bytes, ``mtime`` in seconds (0 when
    the backend does not say)."""

    path: str
    type: str
    size: int = 0
    mtime: float = 0.0


def clean_path(path: Any, volume: str) -> str:
    """``path`` inside volume ``volume`` as a relative POSIX path (``""`` for the root)."""
    if not isinstance(path, str) or "\0" in path:
        raise InvalidError(f"path {path!r} in volume {volume!r} is not valid; allowed: a string such as "
                           "'/models/a.bin'. Fix: give the path as a string.")
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidError(f"path {path!r} in volume {volume!r} contains '..'; allowed: a path inside the volume. "
                           "Fix: give the final path, e.g. '/models/a.bin'.")
    return "/".join(parts)


class FolderFiles:
    """A default-backend volume: the folder ``root`` of the control plane's host."""

    def __init__(self, name: str, root: Path) -> None:
        self.name, self.root = name, Path(root)

    def _path(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def listdir(self, rel: str, recursive: bool = False) -> list[FileEntry]:
        base = self._path(rel)
        if base.is_file():
            st = base.stat()
            return [FileEntry(rel, "file", st.st_size, st.st_mtime)]
        if not base.is_dir():
            raise NotFoundError(f"no such file or directory {('/' + rel)!r} in volume {self.name!r}.")
        out = []
        walker = base.rglob("*") if recursive else base.iterdir()
        for p in sorted(walker):
            st = p.lstat()
            kind = "directory" if p.is_dir() and not p.is_symlink() else "file"
            out.append(FileEntry(p.relative_to(self.root).as_posix(), kind, st.st_size if kind == "file" else 0,
                                 st.st_mtime))
        return out

    def read(self, rel: str, into: BinaryIO) -> int:
        path = self._path(rel)
        if not path.is_file():
            what = "a directory" if path.is_dir() else "no such file"
            raise NotFoundError(f"{('/' + rel)!r} in volume {self.name!r}: {what}.")
        with open(path, "rb") as f:
            shutil.copyfileobj(f, into, 1024 * 1024)
        return path.stat().st_size

    def write(self, rel: str, data: BinaryIO) -> int:
        if not rel:
            raise InvalidError(f"cannot write the root of volume {self.name!r}. Fix: give a file path.")
        path = self._path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.apothic-upload")
        with open(tmp, "wb") as f:
            shutil.copyfileobj(data, f, 1024 * 1024)
        os.replace(tmp, path)
        return path.stat().st_size

    def remove(self, rel: str, recursive: bool = False) -> int:
        path = self._path(rel)
        if not rel:
            if not recursive:
                raise InvalidError(f"removing the root of volume {self.name!r} needs recursive=True (-r).")
            count = sum(1 for p in path.rglob("*") if p.is_file())
            for child in path.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            return count
        if path.is_dir() and not path.is_symlink():
            if not recursive:
                raise InvalidError(f"{('/' + rel)!r} in volume {self.name!r} is a directory. Fix: pass "
                                   "recursive=True (-r) to remove it with its files.")
            count = sum(1 for p in path.rglob("*") if p.is_file())
            shutil.rmtree(path)
            return count
        if not path.exists() and not path.is_symlink():
            raise NotFoundError(f"no such file or directory {('/' + rel)!r} in volume {self.name!r}.")
        path.unlink()
        return 1


class _Counting(io.RawIOBase):
    """A readable stream that counts what was read from ``inner`` (and never closes it)."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner, self.count = inner, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self.inner.read(size)
        self.count += len(chunk)
        return chunk

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[:len(chunk)] = chunk
        return len(chunk)


class S3Files:
    """A cloud volume: the objects under an S3 prefix (folders are key prefixes)."""

    def __init__(self, name: str, place: S3Place) -> None:
        self.name, self.place = name, place
        self.client = s3_client(place)

    def _fail(self, e: Exception, what: str) -> Exception:
        if not is_botocore_error(e):
            return e
        return s3_problem(e, self.place, f"{what} in volume {self.name!r}")

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.place.bucket, Key=key)
            return True
        except Exception as e:  # noqa: BLE001
            if getattr(e, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail(e, "reading") from None

    def listdir(self, rel: str, recursive: bool = False) -> list[FileEntry]:
        key = self.place.key(rel)
        if rel and self._exists(key):
            head = self.client.head_object(Bucket=self.place.bucket, Key=key)
            return [FileEntry(rel, "file", int(head.get("ContentLength") or 0),
                              head["LastModified"].timestamp() if head.get("LastModified") else 0.0)]
        base = self.place.prefix.strip("/")
        prefix = key + "/" if key else ""
        args: dict[str, Any] = {"Bucket": self.place.bucket, "Prefix": prefix}
        if not recursive:
            args["Delimiter"] = "/"
        out: list[FileEntry] = []
        dirs: set[str] = set()
        strip = len(base) + 1 if base else 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**args):
                for cp in page.get("CommonPrefixes") or []:
                    dirs.add(cp["Prefix"][strip:].rstrip("/"))
                for obj in page.get("Contents") or []:
                    path = obj["Key"][strip:]
                    if path.endswith("/"):
                        continue
                    out.append(FileEntry(path, "file", int(obj.get("Size") or 0), obj["LastModified"].timestamp()))
                    if recursive:
                        parts = path.split("/")[:-1]
                        dirs.update("/".join(parts[:i]) for i in range(len(rel.split("/")) + 1 if rel else 1,
                                                                        len(parts) + 1))
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, "listing") from None
        out += [FileEntry(d, "directory") for d in dirs if d and d != rel]
        if not out and rel:
            raise NotFoundError(f"no such file or directory {('/' + rel)!r} in volume {self.name!r}.")
        return sorted(out, key=lambda f: f.path)

    def read(self, rel: str, into: BinaryIO) -> int:
        if not rel:
            raise InvalidError(f"the root of volume {self.name!r} is a directory. Fix: give a file path.")
        try:
            self.client.download_fileobj(self.place.bucket, self.place.key(rel), into)
        except Exception as e:  # noqa: BLE001
            if getattr(e, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise NotFoundError(f"no such file {('/' + rel)!r} in volume {self.name!r}.") from None
            raise self._fail(e, "reading") from None
        return into.tell() if hasattr(into, "tell") else 0

    def write(self, rel: str, data: BinaryIO) -> int:
        if not rel:
            raise InvalidError(f"cannot write the root of volume {self.name!r}. Fix: give a file path.")
        counted = _Counting(data)
        try:
            self.client.upload_fileobj(counted, self.place.bucket, self.place.key(rel))
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, "writing") from None
        return counted.count

    def remove(self, rel: str, recursive: bool = False) -> int:
        key = self.place.key(rel)
        if rel and self._exists(key):
            keys = [key]
        else:
            entries = self.listdir(rel, recursive=True) if (recursive or not rel) else self.listdir(rel)
            files = [self.place.key(e.path) for e in entries if e.type == "file"]
            if not recursive:
                raise InvalidError(f"{('/' + rel)!r} in volume {self.name!r} is a directory. Fix: pass "
                                   "recursive=True (-r) to remove it with its files.")
            keys = files
        try:
            for i in range(0, len(keys), 1000):
                self.client.delete_objects(Bucket=self.place.bucket, Delete={
                    "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, "removing") from None
        return len(keys)
