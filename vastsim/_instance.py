"""One simulated instance: its record, how a create body is checked, and how it is shown."""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._catalogue import Ask, Machine
from ._runners import ProcessRunner
from ._volumes import Volume

MIN_DISK_GB = 8.0


@dataclass
class Instance:
    """The state of one rented instance (what ``/_sim/state`` and the API rows are made of)."""

    id: int
    ask: Ask
    machine: Machine
    label: str | None
    image: str
    env: dict[str, str]
    onstart: str | None
    args: list[str] | None
    args_str: str | None
    runtype: str
    disk_gb: float
    price: float | None
    api_key: str
    created_at: float
    workdir: Path
    log_path: Path
    marker: str
    actual_status: str | None = "loading"
    intended_status: str = "running"
    status_msg: str = ""
    running_since: float | None = None
    exit_code: int | None = None
    onstart_exit_code: int | None = None
    stuck: bool = False
    pull_error: str = ""
    runner: ProcessRunner | None = None
    pids: list[int] = field(default_factory=list)
    host_ports: dict[str, str] = field(default_factory=dict)
    volumes: list[Volume] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    generation: int = 0
    destroyed: bool = False


def instance_row(inst: Instance, now: float) -> dict[str, Any]:
    """An instance as ``GET /api/v0/instances/{id}/`` shows it (``vast-api.md`` §5 fields)."""
    a = inst.ask.row
    running = inst.actual_status == "running"
    storage_total = a["storage_cost"] * inst.disk_gb / 720.0
    base = float(inst.price) if inst.price is not None else a["dph_base"]
    row = {k: a[k] for k in _SHARED_WITH_OFFER}
    state = "stopped" if inst.intended_status == "stopped" else "running"
    row.update({
        "id": inst.id, "bundle_id": a["bundle_id"], "label": inst.label,
        "actual_status": inst.actual_status, "intended_status": inst.intended_status,
        "cur_state": state, "next_state": state, "status_msg": inst.status_msg,
        "image_uuid": inst.image, "image_runtype": inst.runtype, "image_args": inst.args or [],
        "args_str": inst.args_str, "onstart": inst.onstart,
        "extra_env": [[k, v] for k, v in inst.env.items()],
        "public_ipaddr": "127.0.0.1", "local_ipaddrs": "127.0.0.1 ",
        "ssh_host": "127.0.0.1", "ssh_port": 20000 + inst.id % 40000, "ssh_idx": "0",
        "direct_port_start": 40000, "direct_port_end": 59999,
        "ports": {k: [{"HostIp": "0.0.0.0", "HostPort": v}] for k, v in inst.host_ports.items()}
        if running else None,
        "start_date": inst.created_at, "end_date": a["end_date"],
        "uptime_mins": round((now - inst.running_since) / 60.0, 3) if running and inst.running_since else 0.0,
        "dph_base": base, "dph_total": round(base + storage_total, 6),
        "storage_total_cost": round(storage_total, 6), "disk_space": inst.disk_gb,
        "disk_usage": 0.0, "disk_util": 0.0, "gpu_util": 0.0, "cpu_util": 0.0,
        "mem_usage": 0.0, "mem_limit": a["cpu_ram"] * a["gpu_frac"],
        "gpu_totalram": a["gpu_total_ram"], "is_bid": inst.price is not None,
        "volume_info": [{"volume_id": v.id, "mount_path": v.mount_path} for v in inst.volumes] or None,
        "template_id": None, "template_name": None,
    })
    return row


_SHARED_WITH_OFFER = ("machine_id", "host_id", "gpu_name", "num_gpus", "gpu_frac", "gpu_ram", "gpu_total_ram",
                      "gpu_mem_bw", "total_flops", "dlperf", "compute_cap", "cuda_max_good", "driver_version",
                      "gpu_arch", "cpu_name", "cpu_arch", "cpu_cores", "cpu_cores_effective", "cpu_ghz",
                      "cpu_ram", "disk_bw", "disk_name", "inet_up", "inet_down", "inet_up_cost",
                      "inet_down_cost", "pci_gen", "pcie_bw", "storage_cost", "geolocation", "reliability2",
                      "verification", "hosting_type", "min_bid", "static_ip", "os_version")

# Columns an instance row has, for validating filters while no instance exists.
ROW_TEMPLATE: dict[str, Any] = {
    **{k: 0 for k in _SHARED_WITH_OFFER},
    **{k: "" for k in ("gpu_name", "driver_version", "gpu_arch", "cpu_name", "cpu_arch", "disk_name",
                       "geolocation", "verification", "os_version", "label", "actual_status",
                       "intended_status", "cur_state", "next_state", "status_msg", "image_uuid",
                       "image_runtype", "onstart", "public_ipaddr", "ssh_host", "args_str",
                       "template_name", "local_ipaddrs", "ssh_idx")},
    "id": 0, "bundle_id": 0, "start_date": 0.0, "end_date": 0.0, "disk_space": 0.0, "static_ip": False,
    "is_bid": False,
}


def validate_create(body: Mapping[str, Any], ask: Ask) -> str | None:
    image = body.get("image")
    if not image and not body.get("template_hash_id"):
        return "image is required (or template_hash_id)"
    if image is not None and (not isinstance(image, str) or len(image) > 1024):
        return "image must be a string of at most 1024 characters"
    try:
        disk = float(body.get("disk", 10))
    except (TypeError, ValueError):
        return f"disk must be a number of GB, got {body.get('disk')!r}"
    if disk < MIN_DISK_GB:
        return f"disk must be at least {MIN_DISK_GB:g} GB, got {disk:g}"
    if disk > ask.row["disk_space"]:
        return f"disk {disk:g} GB exceeds the {ask.row['disk_space']:g} GB offer {ask.id} has"
    label = body.get("label")
    if label is not None and (not isinstance(label, str) or len(label) > 256):
        return "label must be a string of at most 256 characters"
    args = body.get("args")
    if args is not None and not (isinstance(args, list) and all(isinstance(a, (str, int, float)) for a in args)):
        return "args must be a list of strings"
    onstart = body.get("onstart")
    if onstart is not None and not isinstance(onstart, str):
        return "onstart must be a string"
    size = len(onstart or "") + len(body.get("args_str") or "") + sum(len(str(a)) for a in args or [])
    if size > 4096:
        return f"args, args_str and onstart together must be at most 4096 characters, got {size}"
    price = body.get("price")
    if price is not None:
        try:
            if not 0.001 <= float(price) <= 128:
                return f"price must be 0.001..128 $/hour, got {price}"
        except (TypeError, ValueError):
            return f"price must be a number, got {price!r}"
    runtype = body.get("runtype")
    if runtype is not None and not isinstance(runtype, str):
        return "runtype must be a string"
    return None


def env_of(raw: Any) -> tuple[dict[str, str], str | None]:
    """The env dict of a create body. A docker-flag *string* is kept only for ``-e``, ``-p``
    and ``-v`` flags (the CLI's reading); values that are not text are rejected."""
    if raw is None:
        return {}, None
    if isinstance(raw, str):
        env: dict[str, str] = {}
        words = shlex.split(raw)
        for flag, value in zip(words[::2], words[1::2]):
            if flag == "-e" and "=" in value:
                k, v = value.split("=", 1)
                env[k] = v
            elif flag in ("-p", "-v", "-h"):
                env[f"{flag} {value}"] = "1"
        return env, None
    if not isinstance(raw, Mapping):
        return {}, f"env must be an object of strings, got {type(raw).__name__}"
    env = {}
    for key, value in raw.items():
        if isinstance(value, (dict, list)) or value is None:
            return {}, f"env[{key!r}] must be a string, got {value!r}"
        env[str(key)] = value if isinstance(value, str) else json.dumps(value)
    if sum(len(k) + len(v) for k, v in env.items()) > 32768:
        return {}, "env must total at most 32768 characters"
    return env, None
