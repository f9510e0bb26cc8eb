"""The volume registry of the control plane's host: ``$APOTHIC_HOME/volumes/``.

- ``$APOTHIC_HOME/volumes/<name>/`` holds the files of a volume of the ``default`` backend;
- ``$APOTHIC_HOME/volumes/.registry/<name>.json`` records every volume of this host's
  backends (``default`` and ``vast_local``): its name, backend, creation time and, for a
  ``vast_local`` volume once it was first placed, its Vast volume id and machine.

A volume name is one volume: the same name cannot be a ``default`` and a ``vast_local``
volume (``cloud`` volumes are recorded in the S3 store, see ``_store``). Records are
created with ``O_EXCL`` (two creators race safely) and replaced atomically under a lock.
The client reads this registry directly when it runs on the control plane's host (see
``_deploy``); the control worker always does, and says so when it starts
(:meth:`Registry.mark_control_plane`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._contracts import NAME_RE
from ..exceptions import InvalidError, NotFoundError

LOCAL_BACKENDS = ("default", "vast_local")


@dataclasses.dataclass(frozen=True)
class VolumeRecord:
    """One registered volume.

    Attributes:
        name: its name.
        backend: ``default``, ``cloud`` or ``vast_local``.
        created_at: seconds since the epoch.
        vast: for ``vast_local`` once placed: ``volume_id``, ``machine_id``, ``size_gb``.
    """

    name: str
    backend: str
    created_at: float = 0.0
    vast: dict[str, Any] = dataclasses.field(default_factory=dict)


def check_volume_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidError(
            f"volume name {name!r} is not valid; allowed: 1-63 letters, digits, '_', '-' or '.', starting with a "
            "letter or digit. Fix: use a name like 'model-cache'."
        )
    return name


class Registry:
    """The registry under ``root`` (default ``$APOTHIC_HOME/volumes``)."""

    def __init__(self, root: Path | None = None) -> None:
        if root is None:
            from .._control._config import apothic_home

            root = apothic_home() / "volumes"
        self.root = Path(root)
        self.meta = self.root / ".registry"

    def folder(self, name: str) -> Path:
        """Where the files of default-backend volume ``name`` live."""
        return self.root / check_volume_name(name)

    def _record_path(self, name: str) -> Path:
        return self.meta / f"{check_volume_name(name)}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.meta.mkdir(parents=True, exist_ok=True)
        with open(self.meta / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def get(self, name: str) -> VolumeRecord | None:
        try:
            raw = json.loads(self._record_path(name).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise InvalidError(
                f"the record of volume {name!r} ({self._record_path(name)}) cannot be read: {e}. Fix: remove the "
                "file and create the volume again (its files stay)."
            ) from None
        return VolumeRecord(name=raw["name"], backend=raw["backend"], created_at=float(raw.get("created_at", 0)),
                            vast=dict(raw.get("vast") or {}))

    def require(self, name: str, backend: str | None = None) -> VolumeRecord:
        """The record of ``name``; :class:`NotFoundError` naming the volume and the fix when missing."""
        rec = self.get(name)
        if rec is None:
            flag = f" --backend {backend}" if backend and backend != "default" else ""
            raise NotFoundError(
                f"volume {name!r} does not exist on this control plane ({self.root}). Fix: create it with "
                f"`apothic volume create {name}{flag}`, or use Volume.from_name({name!r}, create_if_missing=True)."
            )
        if backend is not None and rec.backend != backend:
            raise InvalidError(_other_backend(name, rec.backend, backend))
        return rec

    def create(self, name: str, backend: str = "default", *, exist_ok: bool = True) -> tuple[VolumeRecord, bool]:
        """Register ``name`` (and make its folder for ``default``); returns (record, created)."""
        check_volume_name(name)
        if backend not in LOCAL_BACKENDS:
            raise InvalidError(f"backend {backend!r} is not kept in this registry; allowed: {LOCAL_BACKENDS}.")
        rec = VolumeRecord(name=name, backend=backend, created_at=time.time())
        self.meta.mkdir(parents=True, exist_ok=True)
        path = self._record_path(name)
        # Written whole to a private file, then linked into place: the link fails if the record
        # exists, and a racing creator never reads a record that is still being written.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
        tmp.write_text(json.dumps(dataclasses.asdict(rec)))
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, path)
        except FileExistsError:
            found = self.get(name)
            if found is None:  # removed meanwhile: try once more
                return self.create(name, backend, exist_ok=exist_ok)
            if found.backend != backend:
                raise InvalidError(_other_backend(name, found.backend, backend)) from None
            if not exist_ok:
                raise InvalidError(f"volume {name!r} exists already. Fix: use it, or pick another name.") from None
            if backend == "default":
                self.folder(name).mkdir(parents=True, exist_ok=True)
            return found, False
        finally:
            tmp.unlink(missing_ok=True)
        if backend == "default":
            self.folder(name).mkdir(parents=True, exist_ok=True)
        return rec, True

    def update(self, name: str, **vast: Any) -> VolumeRecord:
        """Merge ``vast`` into the record's ``vast`` facts (atomic replace, under the lock)."""
        with self._locked():
            rec = self.require(name)
            new = dataclasses.replace(rec, vast={**rec.vast, **vast})
            tmp = self._record_path(name).with_suffix(".tmp")
            tmp.write_text(json.dumps(dataclasses.asdict(new)))
            os.replace(tmp, self._record_path(name))
            return new

    def _plane(self, address: str, namespace: str) -> Path:
        digest = hashlib.sha256(f"{address}\0{namespace}".encode()).hexdigest()[:16]
        return self.meta / "planes" / f"{digest}.json"

    def mark_control_plane(self, address: str, namespace: str) -> None:
        """Say that the control workers of this Temporal server and namespace keep their
        volumes here (a control worker does, when it starts)."""
        path = self._plane(address, namespace)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"address": address, "namespace": namespace}))

    def serves(self, address: str, namespace: str) -> bool:
        """Whether a control worker of that server and namespace keeps its volumes here."""
        return self._plane(address, namespace).is_file()

    def list(self) -> list[VolumeRecord]:
        if not self.meta.is_dir():
            return []
        out = []
        for path in sorted(self.meta.glob("*.json")):
            rec = self.get(path.stem)
            if rec is not None:
                out.append(rec)
        return out

    def delete(self, name: str) -> VolumeRecord:
        """Remove the record (and the folder of a ``default`` volume, with its files)."""
        with self._locked():
            rec = self.require(name)
            self._record_path(name).unlink(missing_ok=True)
        if rec.backend == "default":
            shutil.rmtree(self.folder(name), ignore_errors=True)
        return rec


def _other_backend(name: str, have: str, want: str) -> str:
    return (f"volume {name!r} is a {have!r} volume, not a {want!r} one. Fix: use the {have} volume as it is "
            f"(e.g. {_constructor(name, have)}), or pick another name for a {want} volume.")


def _constructor(name: str, backend: str) -> str:
    if backend == "cloud":
        return f"Volume.cloud({name!r})"
    if backend == "vast_local":
        return f"Volume.create({name!r}, backend='vast_local')"
    return f"Volume.from_name({name!r})"
