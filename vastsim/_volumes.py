"""Local volumes: volume offers, create, attach at instance create, list and delete.

A volume is a directory of this host, tied to the machine it was created on (``vast-api.md``
§6): it can only be attached to an instance of that machine, one instance at a time. Limit: it
is free again as soon as its instance is destroyed (Vast takes about 30 s).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._catalogue import Machine, volume_offer_row
from ._reply import Reply, error
from ._search import SEARCH_CONTROL, Filter, QueryError, parse_filters, parse_order, select, sort_rows

if TYPE_CHECKING:
    import threading

_VOLUME_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
_LEGACY_VOLUME_KEY = re.compile(r"-v\s+V\.(\d+):(\S+)$")


@dataclass
class Volume:
    """A volume: its directory, its machine, and the instance it is attached to (if any)."""

    id: int
    name: str
    size_gb: int
    machine: Machine
    created_at: float
    path: Path
    instance_id: int | None = None
    mount_path: str | None = None


class VolumesMixin:
    """The volume half of :class:`~._core.SimCore` (see there for the state it uses)."""

    _lock: threading.RLock
    machines: dict[int, Machine]
    volumes: dict[int, Volume]
    data_dir: Path
    _next_volume: int

    def _limit(self, raw: Any) -> int:
        raise NotImplementedError

    def _volumes_for(self, body: Mapping[str, Any], env: Mapping[str, str],
                     machine: Machine) -> tuple[list[tuple[Volume, str]], Reply | None]:
        wanted: list[tuple[Volume, str]] = []
        info = body.get("volume_info")
        for key in env:
            m = _LEGACY_VOLUME_KEY.match(key)
            if m:
                vol = self.volumes.get(int(m.group(1)))
                if vol is None:
                    return [], error(404, "no_such_volume", "Volume with that ID does not exist.")
                wanted.append((vol, m.group(2)))
        if info:
            if not isinstance(info, Mapping) or not info.get("mount_path") or info.get("volume_id") is None:
                return [], error(400, "invalid_args", "volume_info needs volume_id and mount_path")
            if info.get("create_new"):
                if int(info["volume_id"]) != machine.volume_offer_id:
                    return [], error(400, "invalid_args", f"Volume offer {info['volume_id']} is not on machine "
                                     f"{machine.machine_id}: a volume must be on the instance's machine.")
                made = self._make_volume(machine, info.get("size", 15), info.get("name"))
                if isinstance(made, Reply):
                    return [], made
                wanted.append((made, str(info["mount_path"])))
            else:
                vol = self.volumes.get(int(info["volume_id"]))
                if vol is None:
                    return [], error(404, "no_such_volume", "Volume with that ID does not exist.")
                wanted.append((vol, str(info["mount_path"])))
        for vol, _ in wanted:
            if vol.machine is not machine:
                return [], error(400, "invalid_args", f"Volume {vol.id} is on machine {vol.machine.machine_id}, "
                                 f"not on machine {machine.machine_id}.")
            if vol.instance_id is not None:
                return [], error(400, "invalid_args", f"Volume {vol.id} is in use by instance {vol.instance_id}.")
        return wanted, None

    def volume_search(self, body: Any) -> Reply:
        """``POST /api/v0/volumes/search/``: the volume offers, ``{"offers": [...]}``."""
        if not isinstance(body, Mapping):
            return error(400, "invalid_args", "The search body must be a JSON object")
        now = time.time()
        try:
            allocated = float(body.get("allocated_storage", 1.0))
            limit = self._limit(body.get("limit"))
            with self._lock:
                rows = [volume_offer_row(m, now=now, allocated_storage=allocated)
                        for m in self.machines.values() if m.online and m.volume_free_gb > 0]
                sample = volume_offer_row(next(iter(self.machines.values())), now=now, allocated_storage=allocated)
            filters = parse_filters(body, columns=sample, control=SEARCH_CONTROL)
            filters.append(Filter("allocated_storage", "disk_space", "gte", allocated, "number"))
            order = parse_order(body.get("order"), sample, [["storage_cost", "asc"]])
        except (QueryError, TypeError, ValueError) as e:
            return error(400, "invalid_args", str(e))
        return Reply(200, {"offers": sort_rows(select(rows, filters, now), order)[:limit]})

    def volume_create(self, body: Any) -> Reply:
        """``PUT /api/v0/volumes/`` with ``{"id": volume_offer_id, "size": GB, "name": ...}``."""
        if not isinstance(body, Mapping) or body.get("id") is None:
            return error(400, "invalid_args", "id (a volume offer id) is required")
        with self._lock:
            machine = next((m for m in self.machines.values() if m.volume_offer_id == _int(body["id"])), None)
            if machine is None or not machine.online:
                return error(404, "no_such_ask", f"Volume offer {body['id']} is not available.")
            made = self._make_volume(machine, body.get("size", 15), body.get("name"))
        if isinstance(made, Reply):
            return made
        return Reply(200, {"success": True, "volume_name": f"V.{made.id}", "volume_id": made.id})

    def _make_volume(self, machine: Machine, size: Any, name: Any) -> Volume | Reply:
        try:
            size_gb = int(size)
        except (TypeError, ValueError):
            return error(400, "invalid_args", f"size must be an integer number of GB, got {size!r}")
        if size_gb < 1 or size_gb > machine.volume_free_gb:
            return error(400, "invalid_args", f"size must be 1..{machine.volume_free_gb:g} GB on machine "
                         f"{machine.machine_id}, got {size_gb}")
        if name is not None and not _VOLUME_NAME.fullmatch(str(name)):
            return error(400, "invalid_args", "name must be 1-64 letters, digits or '_'")
        self._next_volume += 1
        path = self.data_dir / "volumes" / f"V.{self._next_volume}"
        path.mkdir(parents=True, exist_ok=True)
        vol = Volume(self._next_volume, str(name) if name else f"V.{self._next_volume}", size_gb, machine,
                     time.time(), path)
        machine.volume_free_gb -= size_gb
        self.volumes[vol.id] = vol
        return vol

    def volume_list(self, kind: str | None) -> Reply:
        """``GET /api/v0/volumes?owner=me&type=...``: ``{"volumes": [...]}`` (local volumes only)."""
        if kind == "network_volume":
            return Reply(200, {"volumes": []})
        with self._lock:
            rows = [{
                "id": v.id, "label": v.name, "volume_name": f"V.{v.id}", "type": "local_volume",
                "disk_space": v.size_gb, "status": "attached" if v.instance_id else "available",
                "machine_id": v.machine.machine_id, "host_id": v.machine.host_id,
                "instances": [v.instance_id] if v.instance_id else [], "start_date": v.created_at,
                "storage_total_cost": round(v.machine.row["storage_cost"] * v.size_gb / 720.0, 6),
                "geolocation": v.machine.row["geolocation"], "verification": v.machine.row["verification"],
            } for v in sorted(self.volumes.values(), key=lambda v: v.id)]
        return Reply(200, {"volumes": rows})

    def volume_delete(self, volume_id: Any) -> Reply:
        """``DELETE /api/v0/volumes/`` (``?id=`` or body ``{"id": ...}``); 404 ``no_such_volume``."""
        vid = _int(volume_id)
        if vid is None:
            return error(400, "invalid_args", "id (a volume id) is required")
        with self._lock:
            vol = self.volumes.get(vid)
            if vol is None:
                return error(404, "no_such_volume", "Volume with that ID does not exist.")
            if vol.instance_id is not None:
                return error(400, "invalid_args", f"Volume {vid} is attached to instance {vol.instance_id}: "
                             "destroy the instance first.")
            del self.volumes[vid]
            vol.machine.volume_free_gb += vol.size_gb
        shutil.rmtree(vol.path, ignore_errors=True)
        return Reply(200, {"success": True})


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
