"""Bucket mounts and cloud volumes inside a function container.

The control worker lists them in ``APOTHIC_MOUNTS`` (JSON: mount path, the folder to fill
(``source``: a cache folder bind-mounted at the mount path, or on a rented machine the mount
path itself), the S3 bucket and prefix, ``read_only``); a bucket's keys come in
``APOTHIC_MOUNT_<i>_ACCESS_KEY``/``_SECRET_KEY``, which :meth:`Mounts.from_env` removes from
the environment before any user code runs.

- At start (:meth:`Mounts.start`), before the container takes an input, every object under
  each prefix is downloaded. A failure ends the container with ``EXIT_BAD_MOUNT`` and the
  reason (bucket, endpoint, fix) as its last output.
- After each input (:meth:`Mounts.around`), before its result is reported, the files written,
  changed or deleted under each writable mount are uploaded or deleted; the job gets a
  ``volume`` event saying how many. A failed upload fails the input
  (``apothic.MountSyncFailed``), so "in the bucket when the call returns" holds. Syncs run one
  at a time; with several inputs at once in one container, a sync also takes the files the
  others wrote so far (a file still being written is uploaded again after its input ends).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from .._contracts import CONTAINER_EVENT_SIGNAL, JobEventIn
from .._volumes._s3 import S3Place
from .._volumes._sync import Snapshot, changes, download, upload_changes

MOUNTS_ENV = "APOTHIC_MOUNTS"
# Exit code of a container whose mounts could not be filled.
EXIT_BAD_MOUNT = 5


class MountError(Exception):
    """A mount could not be filled at start (the message names it and the fix)."""


@dataclasses.dataclass
class Synced:
    """One mount the runtime keeps in step with S3."""

    path: str
    source: str
    kind: str
    name: str
    place: S3Place
    read_only: bool = False
    secrets: tuple[str, str] | None = None
    snapshot: Snapshot = dataclasses.field(default_factory=dict)

    def what(self) -> str:
        kind = "bucket" if self.kind == "bucket" else "volume"
        return f"{kind} {self.name!r} at {self.path}"


class Mounts:
    """The synced mounts of this container (none: every method does nothing)."""

    def __init__(self, entries: list[Synced]) -> None:
        self.entries = entries
        self._lock = asyncio.Lock()

    @classmethod
    def from_env(cls, env: Any = None) -> Mounts:
        env = os.environ if env is None else env
        raw = env.get(MOUNTS_ENV, "")
        entries = []
        for item in json.loads(raw) if raw else []:
            place = S3Place(**item["place"])
            creds = item.get("creds")
            if creds:
                place = dataclasses.replace(place, access_key=env.pop(f"{creds}_ACCESS_KEY", None),
                                            secret_key=env.pop(f"{creds}_SECRET_KEY", None))
            secrets = tuple(item["secrets"]) if item.get("secrets") else None
            entries.append(Synced(item["path"], item.get("source") or item["path"], item["kind"], item["name"], place,
                                  bool(item.get("read_only")), secrets))  # type: ignore[arg-type]
        env.pop(MOUNTS_ENV, None)
        return cls(entries)

    async def start(self) -> None:
        """Download every mount's objects (raises :class:`MountError`)."""
        for m in self.entries:
            try:
                m.snapshot, stats = await asyncio.to_thread(download, m.place, m.source, f"mounting {m.what()}",
                                                            m.secrets)
            except Exception as e:  # noqa: BLE001 - any failure ends the container with its reason
                raise MountError(f"mounting {m.what()} failed: {e}") from None
            skipped = f", {len(stats.skipped)} object(s) skipped: {stats.skipped[:5]}" if stats.skipped else ""
            print(f"apothic: {m.what()}: {stats.files} file(s), {stats.bytes} bytes from {m.place.where()} in "
                  f"{stats.seconds:.2f} s{skipped}", flush=True)

    async def around(self, aw: Any, client: Client | None, events_to: str, container_id: str) -> Any:
        """Await the input ``aw``, then upload its writes before its result is reported.

        A failed input's writes are uploaded too (an upload error then only goes to the log,
        the input's own failure stands). A cancelled input's writes wait for the next sync.
        """
        if not self.entries:
            return await aw
        try:
            out = await aw
        except asyncio.CancelledError:
            raise
        except BaseException:
            try:
                await self.sync(client, events_to, container_id)
            except ApplicationError as e:
                print(f"apothic: {e.message}", flush=True)
            raise
        await self.sync(client, events_to, container_id)
        return out

    async def sync(self, client: Client | None, events_to: str, container_id: str) -> None:
        async with self._lock:
            for m in self.entries:
                if m.read_only:
                    if m.source == m.path:  # a rented machine: nothing stops a write; say it is not kept
                        _, changed, deleted = await asyncio.to_thread(changes, m.source, m.snapshot)
                        if changed or deleted:
                            print(f"apothic: {m.what()} is read_only: {len(changed)} written and {len(deleted)} "
                                  "deleted file(s) there are not uploaded", flush=True)
                    continue
                try:
                    m.snapshot, stats = await asyncio.to_thread(upload_changes, m.place, m.source, m.snapshot,
                                                                f"syncing {m.what()}", m.secrets)
                except Exception as e:  # noqa: BLE001 - the input fails with the reason
                    raise ApplicationError(
                        f"the files written under {m.path} could not be uploaded to {m.place.where()}: {e}",
                        type="apothic.MountSyncFailed",
                    ) from None
                if (stats.files or stats.deleted) and client is not None and events_to:
                    await _tell(client, events_to, container_id, {
                        "status": "synced", "kind": m.kind, "name": m.name, "path": m.path, **stats.as_event()})


async def _tell(client: Client, workflow_id: str, container_id: str, data: dict[str, Any]) -> None:
    ev = JobEventIn("volume", data, datetime.now(UTC).isoformat(), container_id)
    try:
        await client.get_workflow_handle(workflow_id).signal(CONTAINER_EVENT_SIGNAL, ev)
    except Exception as e:  # noqa: BLE001 - an event is best effort; the files are uploaded
        print(f"apothic: the volume event could not be sent: {type(e).__name__}", flush=True)
