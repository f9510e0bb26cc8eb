"""The simulated marketplace: offers, instances and volumes, with the API's answers.

Every public method of :class:`SimCore` that serves the Vast API returns a :class:`Reply`
(status, JSON body); the HTTP layer (``_server.py``) only routes and authenticates. Faults
are armed by the methods of ``_faults.FaultsMixin`` (also ``POST /_sim/faults``), volumes are
served by ``_volumes.VolumesMixin``, and an instance's record and checks are in ``_instance``.

Instance life (``vast-api.md`` §5): ``actual_status`` is ``"loading"`` for ``loading_s``
seconds after the create, then ``"running"`` while its command runs, then ``"exited"`` when
the main command ends by itself; ``"offline"`` when its host dies; ``"stopped"`` after a stop
request. An image that cannot be pulled (the ``fail_pull`` fault, or in ``docker`` mode an
image this host's engine does not have) leaves the instance ``loading`` with the daemon's
error in ``status_msg`` (``manifest for X not found: manifest unknown``), as a host does
that keeps retrying the pull. ``intended_status``/``cur_state``/``next_state`` are ``"running"`` unless stopped.
A destroyed instance disappears: a read answers ``{"instances": null}``.

What runs (``runtype``, as the real service interprets it):

- ``"args"``: the image's entrypoint, overridden by ``onstart`` when given (the official CLI
  puts ``--entrypoint`` there), is run with ``args`` (or ``args_str`` split as a shell would).
  The instance is ``exited`` when that command ends. ``{"runtype": "args", "onstart":
  "/bin/sh", "args": ["-c", script]}`` runs a shell script as the container's main process.
- ``ssh``/``jupyter`` (the default when ``runtype`` is absent): ``onstart`` is a shell script
  run by ``/bin/sh -c``; the instance stays ``running`` after the script ends, since Vast's
  ssh daemon keeps such a container alive. Its exit code shows in ``/_sim/state``.

The process of an instance (``process`` mode) runs in its own working directory (also its
HOME) with only PATH, LANG, LC_ALL, TZ and TMPDIR of the simulator's environment (all of it
with ``inherit_env``), the create's ``env`` entries that are variables (keys starting with
``-`` are docker flags: ``-p H:C`` is recorded as a port and exposed as ``VAST_TCP_PORT_C``),
and what Vast's documentation says a container gets: ``CONTAINER_ID``, ``VAST_CONTAINERLABEL``
(``C.<id>``), ``CONTAINER_API_KEY`` and ``PUBLIC_IPADDR``. Attached volumes appear as
symlinks at their mount path under the working directory and in ``VASTSIM_MOUNTS`` (JSON).

Limits: one user (every valid key sees the same instances); no billing, credit or
interruptible outbidding (a ``price`` below ``min_bid`` creates a ``stopped`` instance and
answers 400 ``invalid_price`` carrying its ``new_contract``: Vast does answer an error that
holds ``new_contract``, its status is not documented); no templates; no SSH;
volumes are directories of this host; a volume is free again as soon as its instance is
destroyed (Vast takes about 30 s).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._catalogue import Ask, Machine, build_catalogue, priced_row
from ._faults import FaultsMixin, pull_error_text
from ._reply import Reply, error
from ._runners import DockerRunner, ProcessRunner, kill_marked
from ._search import SEARCH_CONTROL, Filter, QueryError, parse_filters, parse_order, select, sort_rows
from ._instance import ROW_TEMPLATE, Instance, env_of, instance_row, validate_create
from ._volumes import Volume, VolumesMixin

INSTANCE_ID_BASE = 21_000_000
VOLUME_ID_BASE = 40_000_000
DEFAULT_ALLOCATED_STORAGE = 8.0
V1_PAGE_MAX = 25
_COMPUTED_INSTANCE_COLUMNS = frozenset({"dph_total", "uptime_mins", "duration", "storage_total_cost",
                                        "disk_util", "gpu_util", "cpu_util", "mem_usage", "ports"})
_PORT_KEY = re.compile(r"-p\s+(\d+):(\d+)(?:/(tcp|udp))?$")
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")


class SimCore(FaultsMixin, VolumesMixin):
    """State and behaviour of the simulated Vast.ai service (see the module docstring).

    Thread-safe: every request runs under one lock, except process start and kill.
    """

    def __init__(self, *, api_key: str | list[str] = "vastsim-key", catalogue_seed: int = 0,
                 machines: int = 130, instance_mode: str = "process", loading_s: float = 0.5,
                 search_limit: int = 64, data_dir: str | Path | None = None,
                 inherit_env: bool = False, docker: str = "docker") -> None:
        if instance_mode not in ("process", "docker"):
            raise ValueError(f"instance_mode must be 'process' or 'docker', got {instance_mode!r}")
        self.api_keys = frozenset([api_key] if isinstance(api_key, str) else api_key)
        self.instance_mode = instance_mode
        self.loading_s = float(loading_s)
        self.search_limit = int(search_limit)
        self.inherit_env = inherit_env
        self.docker = docker
        self.token = secrets.token_hex(6)
        self.base_url = ""
        self._own_data_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="vastsim-"))
        self._lock = threading.RLock()
        machine_list, asks = build_catalogue(catalogue_seed, machines, now=time.time())
        self.machines = {m.machine_id: m for m in machine_list}
        self.asks = {a.id: a for a in asks}
        self.instances: dict[int, Instance] = {}
        self.destroyed: dict[int, Instance] = {}
        self.volumes: dict[int, Volume] = {}
        self._next_instance = INSTANCE_ID_BASE + catalogue_seed % 1000 * 1000
        self._next_volume = VOLUME_ID_BASE
        self._log_tokens: dict[str, str] = {}
        self._threads: list[threading.Thread] = []
        self._timers: list[threading.Timer] = []
        self._requests: list[dict[str, Any]] = []
        self._clear_faults()

    # ------------------------------------------------------------------ bookkeeping

    def record(self, method: str, path: str, status: int, note: str = "") -> None:
        with self._lock:
            self._requests.append({"t": time.time(), "method": method, "path": path,
                                   "status": status, "note": note})
            del self._requests[:-10_000]

    def requests(self) -> list[dict[str, Any]]:
        """Every API request answered (or dropped: status 0), oldest first; at most 10,000."""
        with self._lock:
            return [dict(r) for r in self._requests]

    def state(self) -> dict[str, Any]:
        """What is rented, what is running, what is broken: for tests to assert on."""
        with self._lock:
            return {
                "instances": [self._inst_state(i) for i in self.instances.values()],
                "destroyed": [self._inst_state(i) for i in self.destroyed.values()],
                "rented_offers": sorted(a.id for a in self.asks.values() if a.rented_by_me),
                "taken_offers": sorted(a.id for a in self.asks.values() if a.gone_status),
                "offline_machines": sorted(m.machine_id for m in self.machines.values() if not m.online),
                "offers": len(self.asks),
                "listed_offers": sum(1 for a in self.asks.values() if self._listed(a)),
                "volumes": [{"id": v.id, "name": v.name, "size": v.size_gb, "machine_id": v.machine.machine_id,
                             "instance_id": v.instance_id, "path": str(v.path)} for v in self.volumes.values()],
                "faults": {"rules": [{"status": r.status, "remaining": r.remaining, "method": r.method,
                                      "path": r.path.pattern if r.path else None} for r in self._rules],
                           "stuck_offers": sorted(self._stuck_offers), "stuck_next": self._stuck_next,
                           "lost_creates": len(self._lost_creates),
                           "ignored_filters": sorted(self._ignored_filters),
                           "armed_host_deaths": {str(k): v for k, v in self._armed_deaths.items()},
                           "pull_failures": [{"image": r.image.pattern if r.image else None, "remaining": r.remaining}
                                             for r in self._pull_failures]},
                "marker": f"{self.token}:",
                "instance_mode": self.instance_mode,
            }

    def _inst_state(self, inst: Instance) -> dict[str, Any]:
        return {"id": inst.id, "offer_id": inst.ask.id, "machine_id": inst.machine.machine_id,
                "label": inst.label, "actual_status": inst.actual_status, "pids": list(inst.pids),
                "exit_code": inst.exit_code, "onstart_exit_code": inst.onstart_exit_code,
                "runtype": inst.runtype, "image": inst.image, "log_path": str(inst.log_path),
                "workdir": str(inst.workdir), "marker": inst.marker, "created_at": inst.created_at,
                "running_since": inst.running_since, "destroyed": inst.destroyed}

    def instance_log(self, instance_id: int, tail: int | None = None) -> str:
        """The output (stdout and stderr) of an instance, live or destroyed.

        Raises:
            KeyError: no such instance was ever created.
        """
        with self._lock:
            inst = self.instances.get(instance_id) or self.destroyed.get(instance_id)
            if inst is None:
                raise KeyError(f"no instance {instance_id}")
            path = inst.log_path
        try:
            text = path.read_text(errors="replace")
        except OSError:
            text = ""
        if tail is not None:
            text = "\n".join(text.splitlines()[-tail:]) + ("\n" if text.endswith("\n") else "")
        return text

    def log_by_token(self, token: str) -> str | None:
        with self._lock:
            return self._log_tokens.get(token)

    def catalogue(self, allocated_storage: float = DEFAULT_ALLOCATED_STORAGE) -> list[dict[str, Any]]:
        """Every offer as an unfiltered on-demand search would show it, listed or not."""
        now = time.time()
        with self._lock:
            return [priced_row(a, now=now, allocated_storage=allocated_storage, offer_type="on-demand")
                    | {"listed": self._listed(a)} for a in self.asks.values()]

    def shutdown_instances(self) -> None:
        """Kill every instance and timer (the simulator is stopping)."""
        with self._lock:
            for timer in self._timers:
                timer.cancel()
            ids = list(self.instances)
        for instance_id in ids:
            self.destroy(instance_id)
        for thread in list(self._threads):
            thread.join(timeout=5)
        kill_marked(f"{self.token}:")
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # ------------------------------------------------------------------ search

    def _listed(self, ask: Ask) -> bool:
        machine = self.machines[ask.machine_id]
        if not machine.online or ask.gone_status is not None:
            return False
        return ask.rented_by_me or machine.free_gpus >= ask.num_gpus

    def search(self, body: Any) -> Reply:
        """``POST /api/v0/bundles/``: the offers matching the body, ``{"offers": [...]}``."""
        if not isinstance(body, Mapping):
            return error(400, "invalid_args", "The search body must be a JSON object")
        offer_type = str(body.get("type", "on-demand")).lower()
        offer_type = {"ondemand": "on-demand", "interruptible": "bid"}.get(offer_type, offer_type)
        if offer_type not in ("on-demand", "bid", "reserved"):
            return error(400, "invalid_args", f"type must be on-demand, bid or reserved, got {body.get('type')!r}")
        now = time.time()
        try:
            allocated = float(body.get("allocated_storage", DEFAULT_ALLOCATED_STORAGE))
            limit = self._limit(body.get("limit"))
            with self._lock:
                rows = [priced_row(a, now=now, allocated_storage=allocated, offer_type=offer_type)
                        for a in self.asks.values() if self._listed(a)]
                sample = priced_row(next(iter(self.asks.values())), now=now, allocated_storage=allocated,
                                    offer_type=offer_type)
                ignored = set(self._ignored_filters)
            filters = parse_filters(body, columns=sample, control=SEARCH_CONTROL)
            if not any(f.column == "rented" for f in filters):
                rows = [r for r in rows if not r["rented"]]
            filters.append(Filter("allocated_storage", "disk_space", "gte", allocated, "number"))
            order = parse_order(body.get("order"), sample, [["score", "desc"]])
        except (QueryError, TypeError, ValueError) as e:
            return error(400, "invalid_args", str(e))
        found = select(rows, filters, now, ignored=lambda f: f.name in ignored or f.column in ignored)
        return Reply(200, {"offers": sort_rows(found, order)[:limit]})

    def _limit(self, raw: Any) -> int:
        if raw is None:
            return self.search_limit
        limit = int(float(raw))
        if limit < 1:
            raise QueryError(f"limit must be >= 1, got {raw!r}")
        return min(limit, self.search_limit)

    # ------------------------------------------------------------------ create

    def create(self, ask_id: int, body: Any) -> Reply:
        """``PUT /api/v0/asks/{id}/``: rent an offer; ``{"success": true, "new_contract": id}``."""
        if not isinstance(body, Mapping):
            return error(400, "invalid_args", "The create body must be a JSON object")
        with self._lock:
            ask = self.asks.get(ask_id)
            if ask is None or not self._listed(ask) or ask.rented_by_me:
                if ask is not None and ask.gone_status == 410:
                    return error(410, "no_such_ask", f"error 410/3907: no_such_ask Instance type {ask_id} "
                                 "is no longer available.", ask_id=ask_id)
                return error(404, "no_such_ask", f"error 404/3603: no_such_ask Instance type by id {ask_id} "
                             "is not available.", ask_id=ask_id)
            problem = validate_create(body, ask)
            if problem:
                return error(400, "invalid_args", problem, ask_id=ask_id)
            env, env_problem = env_of(body.get("env"))
            if env_problem:
                return error(400, "invalid_args", env_problem, ask_id=ask_id)
            machine = self.machines[ask.machine_id]
            vols, vol_reply = self._volumes_for(body, env, machine)
            if vol_reply is not None:
                return vol_reply
            self._next_instance += 1
            inst = self._new_instance(self._next_instance, ask, machine, body, env)
            for vol, mount in vols:
                vol.instance_id, vol.mount_path = inst.id, mount
                inst.volumes.append(vol)
            ask.rented_by_me = True
            machine.free_gpus -= ask.num_gpus
            self.instances[inst.id] = inst
            if ask_id in self._stuck_offers or self._stuck_next > 0:
                inst.stuck = True
                if ask_id not in self._stuck_offers:
                    self._stuck_next -= 1
            inst.pull_error = self.pull_error_for(inst.image) or ""
            if ask_id in self._armed_deaths:
                self._schedule(self._armed_deaths.pop(ask_id), self._kill_machine, machine.machine_id)
            price = body.get("price")
            low_bid = price is not None and float(price) < ask.row["min_bid"]
            if low_bid:
                inst.actual_status = inst.intended_status = "stopped"
                inst.status_msg = "bid below the minimum price: instance created stopped"
            lost = self._lost_creates.pop(0) if self._lost_creates and not low_bid else None
        if not low_bid:
            self._start_lifecycle(inst)
        if low_bid:
            return error(400, "invalid_price", f"Your bid {price} is below the minimum price "
                         f"{ask.row['min_bid']} of offer {ask_id}", new_contract=inst.id)
        ok = {"success": True, "new_contract": inst.id, "instance_api_key": inst.api_key}
        if lost is None:
            return Reply(200, ok)
        mode, delay = lost
        if mode == "500":
            return error(500, "server_error", "Internal Server Error")
        return Reply(200, ok, action=mode, delay_s=delay)

    def _new_instance(self, instance_id: int, ask: Ask, machine: Machine, body: Mapping[str, Any],
                      env: dict[str, str]) -> Instance:
        workdir = self.data_dir / "instances" / str(instance_id)
        workdir.mkdir(parents=True, exist_ok=True)
        args = body.get("args")
        runtype = str(body.get("runtype") or "ssh")
        inst = Instance(
            id=instance_id, ask=ask, machine=machine, label=body.get("label"),
            image=str(body.get("image") or body.get("template_hash_id") or ""), env=env,
            onstart=body.get("onstart"), args=[str(a) for a in args] if isinstance(args, list) else None,
            args_str=body.get("args_str"), runtype=runtype, disk_gb=float(body.get("disk", 10)),
            price=body.get("price"), api_key=secrets.token_hex(16), created_at=time.time(),
            workdir=workdir, log_path=workdir.with_suffix(".log"), marker=f"{self.token}:{instance_id}",
        )
        inst.log_path.touch()
        inst.status_msg = f"Pulling image {inst.image}"
        port = 40000 + instance_id % 20000
        for key in env:
            m = _PORT_KEY.match(key)
            if m:
                inst.host_ports[f"{m.group(2)}/{m.group(3) or 'tcp'}"] = str(port)
                port += 1
        if "ssh_direc" in runtype:
            inst.host_ports.setdefault("22/tcp", str(port))
        return inst

    # ------------------------------------------------------------------ instance life

    def _start_lifecycle(self, inst: Instance) -> None:
        thread = threading.Thread(target=self._lifecycle, args=(inst, inst.generation),
                                  name=f"vastsim-instance-{inst.id}", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _lifecycle(self, inst: Instance, generation: int) -> None:
        if inst.stop_event.wait(self.loading_s):
            return
        missing = (not inst.pull_error and self.instance_mode == "docker" and inst.image
                   and not self._image_present(inst.image))
        with self._lock:
            if inst.destroyed or inst.generation != generation or inst.actual_status != "loading" or inst.stuck:
                return
            if inst.pull_error or missing:
                inst.status_msg = inst.pull_error or pull_error_text(inst.image)
                return
            argv, keepalive = self._command(inst)
            runner = None
            if argv:
                runner = (DockerRunner(inst.marker, f"vastsim-{inst.marker.replace(':', '-')}", self.docker)
                          if self.instance_mode == "docker" else ProcessRunner(inst.marker))
                try:
                    runner.start(argv, self._process_env(inst), inst.workdir, inst.log_path, inst.image,
                                 {v.mount_path or "": v.path for v in inst.volumes})
                except OSError as e:
                    inst.actual_status = "created"
                    inst.status_msg = f"Error response from daemon: failed to create task: {e}"
                    return
                inst.runner = runner
                if runner.pid is not None:
                    inst.pids.append(runner.pid)
            inst.actual_status = "running"
            inst.running_since = time.time()
            inst.status_msg = f"success, running {inst.image}/{inst.runtype.split()[0]}"
        if runner is None:
            return
        code = runner.wait(kill_group=not keepalive)
        with self._lock:
            if inst.destroyed or inst.generation != generation or inst.actual_status != "running":
                return
            if keepalive:
                inst.onstart_exit_code = code
                return
            inst.actual_status = "exited"
            inst.exit_code = code
            inst.status_msg = f"Exited ({code})"

    def _image_present(self, image: str) -> bool:
        """Whether this host's engine has ``image`` (what a host's registry would serve)."""
        try:
            done = subprocess.run([self.docker, "image", "inspect", image], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return True  # the engine did not answer: let the run say what is wrong
        return done.returncode == 0

    def _command(self, inst: Instance) -> tuple[list[str], bool]:
        """The argv of the instance's main process, and whether the container outlives it."""
        if "args" in inst.runtype.split():
            rest = inst.args if inst.args is not None else shlex.split(inst.args_str or "")
            entry = [inst.onstart] if inst.onstart else []
            argv = entry + rest
            if not argv and self.instance_mode == "process":
                argv = ["/bin/sh", "-c", "exec sleep 2147483647"]  # an image whose entrypoint idles
            return argv, False
        script = inst.onstart or ""
        if self.instance_mode == "docker":
            keep = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"
            return ["/bin/sh", "-c", f'/bin/sh -c "$VASTSIM_ONSTART"; {keep}'], False
        return (["/bin/sh", "-c", script] if script.strip() else []), True

    def _process_env(self, inst: Instance) -> dict[str, str]:
        if self.inherit_env:
            env = dict(os.environ)
        else:
            env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        env["HOME"] = str(inst.workdir)
        env.update({k: v for k, v in inst.env.items() if not k.startswith("-")})
        env.update({
            "CONTAINER_ID": str(inst.id),
            "VAST_CONTAINERLABEL": f"C.{inst.id}",
            "CONTAINER_API_KEY": inst.api_key,
            "PUBLIC_IPADDR": "127.0.0.1",
        })
        for key, port in inst.host_ports.items():
            number, proto = key.split("/")
            env[f"VAST_{proto.upper()}_PORT_{number}"] = port
        if inst.onstart and self.instance_mode == "docker":
            env["VASTSIM_ONSTART"] = inst.onstart
        if inst.volumes:
            mounts = {}
            for vol in inst.volumes:
                link = inst.workdir / (vol.mount_path or "").strip("/")
                if self.instance_mode == "process" and not link.exists():
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(vol.path, target_is_directory=True)
                mounts[vol.mount_path or ""] = str(vol.path)
            env["VASTSIM_MOUNTS"] = json.dumps(mounts)
        return env

    def _schedule(self, delay: float, fn: Any, *args: Any) -> None:
        if delay <= 0:
            fn(*args)
            return
        timer = threading.Timer(delay, fn, args)
        timer.daemon = True
        with self._lock:
            self._timers = [t for t in self._timers if t.is_alive()]
            self._timers.append(timer)
        timer.start()

    def _kill_machine(self, machine_id: int) -> None:
        with self._lock:
            machine = self.machines[machine_id]
            machine.online = False
            victims = [i for i in self.instances.values() if i.machine is machine]
            for inst in victims:
                inst.actual_status = "offline"
                inst.status_msg = "Host machine is offline (no heartbeat)"
                inst.stop_event.set()
        for inst in victims:
            if inst.runner is not None:
                inst.runner.kill()

    # ------------------------------------------------------------------ read, manage, destroy

    def show(self, instance_id: int) -> Reply:
        """``GET /api/v0/instances/{id}/``: ``{"instances": {...}}``, or null when unknown."""
        with self._lock:
            inst = self.instances.get(instance_id)
            return Reply(200, {"instances": None if inst is None else instance_row(inst, time.time())})

    def list_v0(self) -> Reply:
        """``GET /api/v0/instances/`` (deprecated by Vast): every instance, ``{"instances": [...]}``."""
        now = time.time()
        with self._lock:
            return Reply(200, {"instances": [instance_row(i, now) for i in sorted(self.instances.values(),
                                                                                key=lambda i: i.id)]})

    def list_v1(self, params: Mapping[str, str]) -> Reply:
        """``GET /api/v1/instances/``: one page (at most 25) with ``next_token``."""
        try:
            filters_raw = json.loads(params.get("select_filters") or "{}")
            order_raw = json.loads(params.get("order_by") or '[{"col": "id", "dir": "asc"}]')
            cols = json.loads(params["select_cols"]) if params.get("select_cols") else None
            limit = max(1, min(int(params.get("limit") or V1_PAGE_MAX), V1_PAGE_MAX))
            offset = _decode_token(params.get("after_token"))
            if not isinstance(filters_raw, dict) or not isinstance(order_raw, list):
                raise QueryError("select_filters must be an object and order_by a list")
            bad = sorted(set(filters_raw) & _COMPUTED_INSTANCE_COLUMNS)
            if bad:
                raise QueryError(f"Cannot filter on computed column(s): {', '.join(bad)}")
            now = time.time()
            with self._lock:
                rows = [instance_row(i, now) for i in self.instances.values()]
                sample = {**(rows[0] if rows else {}), **ROW_TEMPLATE}
            filters = parse_filters(filters_raw, columns=sample, control=(), virtual=False)
            order = parse_order([[o.get("col"), o.get("dir", "asc")] if isinstance(o, dict) else o
                                 for o in order_raw], sample, [])
        except (QueryError, ValueError, TypeError, KeyError) as e:
            return error(400, "invalid_args", str(e))
        found = sort_rows(select(rows, filters, now), order)
        page = found[offset:offset + limit]
        labels: dict[str, int] = {}
        for row in found:
            labels[row.get("label") or ""] = labels.get(row.get("label") or "", 0) + 1
        if cols and "*" not in cols:
            page = [{k: r.get(k) for k in ["id", *cols]} for r in page]
        more = offset + limit < len(found)
        return Reply(200, {"success": True, "instances_found": len(page), "total_instances": len(found),
                           "label_counts": labels, "next_token": _encode_token(offset + limit) if more else None,
                           "instances": page})

    def instance_filters(self) -> Reply:
        """``GET /api/v0/instances/filters/`` (used by the CLI's table): distinct value combos."""
        with self._lock:
            combos = {(i.actual_status, i.ask.row["verification"], i.ask.row["gpu_name"])
                      for i in self.instances.values()}
        return Reply(200, {"filters": [{"actual_status": s, "verification": v, "gpu_name": g}
                                       for s, v, g in sorted(combos, key=str)]})

    def manage(self, instance_id: int, body: Any) -> Reply:
        """``PUT /api/v0/instances/{id}/``: ``{"state": "stopped"|"running"}`` and/or ``{"label": ...}``."""
        if not isinstance(body, Mapping):
            return error(400, "invalid_args", "The body must be a JSON object")
        restart = False
        with self._lock:
            inst = self.instances.get(instance_id)
            if inst is None:
                return error(404, "no_such_instance", f"Instance {instance_id} not found")
            if "label" in body:
                inst.label = body["label"]
            state = body.get("state")
            if state not in (None, "running", "stopped"):
                return error(400, "invalid_args", f"state must be 'running' or 'stopped', got {state!r}")
            runner = None
            if state == "stopped" and inst.actual_status != "stopped":
                inst.generation += 1
                inst.stop_event.set()
                inst.actual_status = inst.intended_status = "stopped"
                inst.status_msg = "Stopped by the user"
                runner, inst.runner = inst.runner, None
            elif state == "running" and inst.actual_status in ("stopped", "exited"):
                if not inst.machine.online:
                    return error(400, "invalid_args", "Required resources are currently unavailable, "
                                 "state change queued")
                inst.generation += 1
                inst.stop_event = threading.Event()
                inst.actual_status, inst.intended_status = "loading", "running"
                inst.status_msg = f"Pulling image {inst.image}"
                restart = True
        if runner is not None:
            runner.kill()
        if restart:
            self._start_lifecycle(inst)
        return Reply(200, {"success": True})

    def destroy(self, instance_id: int) -> Reply:
        """``DELETE /api/v0/instances/{id}/``: kill its processes and release the offer.

        An unknown or already destroyed instance answers 404 ``not_found``.
        """
        with self._lock:
            inst = self.instances.pop(instance_id, None)
            if inst is None:
                return error(404, "not_found", "Instance not found")
            inst.destroyed = True
            inst.stop_event.set()
            inst.ask.rented_by_me = False
            inst.machine.free_gpus += inst.ask.num_gpus
            for vol in inst.volumes:
                vol.instance_id = vol.mount_path = None
            self.destroyed[instance_id] = inst
            runner = inst.runner
        if runner is not None:
            runner.kill()
        kill_marked(inst.marker)
        return Reply(200, {"success": True})

    def destroy_many(self, body: Any) -> Reply:
        """``DELETE /api/v0/instances/`` with ``{"instance_ids": [...]}``."""
        ids = body.get("instance_ids") if isinstance(body, Mapping) else None
        if not isinstance(ids, list):
            return error(400, "invalid_args", "instance_ids must be a list")
        results = {str(i): self.destroy(int(i)).status == 200 for i in ids}
        return Reply(200, {"success": True, "results": results})

    def request_logs(self, instance_id: int, body: Any) -> Reply:
        """``PUT /api/v0/instances/request_logs/{id}/``: a ``result_url`` serving the log tail."""
        tail = None
        if isinstance(body, Mapping) and body.get("tail") is not None:
            try:
                tail = int(body["tail"])
            except (TypeError, ValueError):
                return error(400, "invalid_args", "tail must be an integer")
        with self._lock:
            if instance_id not in self.instances:
                return error(404, "invalid_id", f"Instance {instance_id} not found")
        text = self.instance_log(instance_id, tail)
        if isinstance(body, Mapping) and body.get("filter"):
            text = "".join(line for line in text.splitlines(True) if str(body["filter"]) in line)
        token = secrets.token_urlsafe(12)
        with self._lock:
            self._log_tokens[token] = text
        return Reply(200, {"success": True, "result_url": f"{self.base_url}/_sim/logs/{token}"})

    # ------------------------------------------------------------------ misc

    def user(self) -> Reply:
        """``GET /api/v0/users/current/``: the simulated account (credit never runs out)."""
        return Reply(200, {"id": 1, "username": "vastsim", "email": "vastsim@localhost", "credit": 1000.0,
                           "balance": 0.0, "has_billing": True, "host_agreement_accepted": False})

    def gpu_names(self) -> Reply:
        """``GET /api/v0/gpu_names/unique/`` (read by the CLI at start): the GPU models offered."""
        with self._lock:
            names = sorted({a.row["gpu_name"] for a in self.asks.values()})
        return Reply(200, {"gpu_names": names})


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def _decode_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["o"])
    except (ValueError, KeyError, TypeError):
        raise QueryError(f"after_token {token!r} is not a token this server gave") from None
