"""Where Apothic finds its Temporal server, and the embedded default's settings.

Resolution, first match wins:

1. ``APOTHIC_TEMPORAL_ADDRESS`` (``host:port``) with ``APOTHIC_TEMPORAL_NAMESPACE``,
   ``APOTHIC_TEMPORAL_TLS`` (``1``/``true``), ``APOTHIC_TEMPORAL_TLS_CERT``,
   ``APOTHIC_TEMPORAL_TLS_KEY``, ``APOTHIC_TEMPORAL_TLS_CA`` (PEM file paths) and
   ``APOTHIC_TEMPORAL_API_KEY``: an external cluster; Apothic starts nothing.
2. ``temporal-dev.yaml``: the embedded dev server; clients start it (and a control worker)
   when nothing answers on its port.
"""

from __future__ import annotations

import dataclasses
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .exceptions import InvalidError

CONFIG_FILENAME = "temporal-dev.yaml"
_TRUE = {"1", "true", "yes", "on"}


def apothic_home() -> Path:
    """The folder for Apothic's local state (dev server database, logs, pid files)."""
    home = Path(os.environ.get("APOTHIC_HOME") or Path.home() / ".apothic").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def find_config_file() -> Path:
    """The ``temporal-dev.yaml`` in force (see the module docstring for the order)."""
    env = os.environ.get("APOTHIC_CONFIG")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise InvalidError(f"APOTHIC_CONFIG={env!r} is not a file. Fix: point it at a temporal-dev.yaml.")
        return p
    here = Path.cwd()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_FILENAME
        if candidate.is_file():
            return candidate
    return Path(__file__).with_name(CONFIG_FILENAME)


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """The embedded dev server's settings, from ``temporal-dev.yaml``'s ``server`` section."""

    ip: str = "127.0.0.1"
    port: int = 7233
    ui_port: int = 8233
    headless: bool = False
    namespace: str = "default"
    db_filename: str = "temporal.db"
    log_level: str = "warn"
    sqlite_pragmas: dict[str, Any] = dataclasses.field(default_factory=dict)
    dynamic_config: dict[str, Any] = dataclasses.field(default_factory=dict)

    def db_path(self) -> Path:
        p = Path(self.db_filename).expanduser()
        return p if p.is_absolute() else apothic_home() / p


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """Control-plane settings, from ``temporal-dev.yaml``'s ``worker`` section."""

    control_task_queue: str = "apothic-control"
    container_idle_s: float = 60.0
    startup_timeout_s: float = 300.0


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a client, worker or container needs to reach Temporal.

    Attributes:
        address: ``host:port`` of the Temporal frontend.
        namespace: the Temporal namespace.
        embedded: True when the address comes from ``temporal-dev.yaml`` (Apothic may start
            the dev server and a control worker); False for an external cluster.
    """

    address: str
    namespace: str
    embedded: bool
    tls: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    api_key: str | None = None
    server: ServerSettings = dataclasses.field(default_factory=ServerSettings)
    worker: WorkerSettings = dataclasses.field(default_factory=WorkerSettings)
    providers: dict[str, Any] = dataclasses.field(default_factory=dict)
    config_file: str = ""

    def connection_env(self) -> dict[str, str]:
        """Environment variables that make a child process (a container) reach this server."""
        env = {"APOTHIC_TEMPORAL_ADDRESS": self.address, "APOTHIC_TEMPORAL_NAMESPACE": self.namespace}
        if self.tls:
            env["APOTHIC_TEMPORAL_TLS"] = "1"
        for key, value in (
            ("APOTHIC_TEMPORAL_TLS_CERT", self.tls_cert),
            ("APOTHIC_TEMPORAL_TLS_KEY", self.tls_key),
            ("APOTHIC_TEMPORAL_TLS_CA", self.tls_ca),
            ("APOTHIC_TEMPORAL_API_KEY", self.api_key),
        ):
            if value:
                env[key] = value
        return env


def _section(raw: dict[str, Any], name: str, cls: type, path: Path) -> Any:
    data = raw.get(name) or {}
    if not isinstance(data, dict):
        raise InvalidError(f"{path}: '{name}' must be a mapping, got {data!r}.")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidError(
            f"{path}: unknown key(s) {unknown} in '{name}'. Allowed: {sorted(known)}. Fix: remove or rename them."
        )
    return cls(**data)


@lru_cache(maxsize=8)
def _load_file(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise InvalidError(f"{path}: expected a mapping at the top level.")
    return raw


def load_settings(**overrides: Any) -> Settings:
    """Resolve the settings in force now (environment first, then ``temporal-dev.yaml``).

    Args:
        **overrides: ``ServerSettings`` fields (``port``, ``ui_port``, ``db_filename``, ...)
            that replace the file's values, as ``apothic server --port`` does.
    """
    path = find_config_file()
    raw = _load_file(str(path))
    server = _section(raw, "server", ServerSettings, path)
    if overrides:
        server = dataclasses.replace(server, **{k: v for k, v in overrides.items() if v is not None})
    worker = _section(raw, "worker", WorkerSettings, path)
    # Environment overrides for the worker section: APOTHIC_CONTAINER_IDLE_S and so on.
    worker_env = {
        f.name: float(os.environ[f"APOTHIC_{f.name.upper()}"])
        for f in dataclasses.fields(WorkerSettings)
        if f.type == "float" and os.environ.get(f"APOTHIC_{f.name.upper()}")
    }
    if worker_env:
        worker = dataclasses.replace(worker, **worker_env)
    providers = raw.get("providers") or {}
    env = os.environ
    address = env.get("APOTHIC_TEMPORAL_ADDRESS")
    common = dict(server=server, worker=worker, providers=providers, config_file=str(path))
    if address:
        return Settings(
            address=address,
            namespace=env.get("APOTHIC_TEMPORAL_NAMESPACE") or "default",
            embedded=False,
            tls=(env.get("APOTHIC_TEMPORAL_TLS", "").lower() in _TRUE) or bool(env.get("APOTHIC_TEMPORAL_TLS_CERT")),
            tls_cert=env.get("APOTHIC_TEMPORAL_TLS_CERT"),
            tls_key=env.get("APOTHIC_TEMPORAL_TLS_KEY"),
            tls_ca=env.get("APOTHIC_TEMPORAL_TLS_CA"),
            api_key=env.get("APOTHIC_TEMPORAL_API_KEY"),
            **common,
        )
    return Settings(address=f"{server.ip}:{server.port}", namespace=server.namespace, embedded=True, **common)
