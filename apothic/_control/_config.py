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

from ..exceptions import InvalidError

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


PROVIDERS = ("process", "docker", "vast")
# What a provider left out of temporal-dev.yaml's `providers` section is set to.
PROVIDER_DEFAULTS: dict[str, Any] = {"process": True, "docker": "auto", "vast": "auto"}


@dataclasses.dataclass(frozen=True)
class ProviderSettings:
    """Which providers may run function containers, from ``temporal-dev.yaml``'s ``providers``.

    Attributes:
        enabled: provider names in order of preference among equally priced offers. ``docker``
            set to ``auto`` is listed and used when its engine answers; ``vast`` set to ``auto``
            is listed when ``VAST_API_KEY`` is set. A provider the section leaves out keeps its
            default (``process`` on, ``docker`` and ``vast`` auto), after the listed ones. ``APOTHIC_PROVIDERS`` (``"docker,process"``)
            replaces the list.
        docker_registry: ``host:port`` the docker provider pushes derived images to, or None.
        vast_registry: ``host:port`` rented machines pull images from; None runs the local
            reference (only hosts that share this engine, such as the simulator, have it).
        vast_ready_timeout_s: how long one rented instance may take to reach ``running``.
        vast_max_offers: how many ranked offers one container start tries.
        vast_search_limit: how many offers one search asks the API for.
        auto: the providers enabled as ``auto`` (checked when used).
    """

    enabled: tuple[str, ...] = ("process",)
    docker_registry: str | None = None
    vast_registry: str | None = None
    vast_ready_timeout_s: float = 600.0
    vast_max_offers: int = 5
    vast_search_limit: int = 64
    auto: tuple[str, ...] = ()

    @classmethod
    def from_raw(cls, raw: dict[str, Any], env: Any = os.environ) -> ProviderSettings:
        if not isinstance(raw, dict):
            raise InvalidError(f"'providers' must be a mapping, got {raw!r}.")
        unknown = sorted(set(raw) - set(PROVIDERS))
        if unknown:
            raise InvalidError(
                f"unknown provider(s) {unknown} in 'providers'. Allowed: {list(PROVIDERS)}. Fix: remove or rename them."
            )
        enabled: list[str] = []
        auto: list[str] = []
        # Providers the section leaves out keep their defaults, after the ones it lists.
        sections = {**raw, **{name: None for name in PROVIDER_DEFAULTS if name not in raw}}
        for name, section in sections.items():
            if section is None:
                flag = PROVIDER_DEFAULTS[name]
            elif isinstance(section, dict):
                flag = section.get("enabled", PROVIDER_DEFAULTS[name])
            else:
                flag = section
            if isinstance(flag, str) and flag.lower() == "auto":
                if name != "vast" or env.get("VAST_API_KEY"):
                    enabled.append(name)
                    auto.append(name)
            elif flag is True or (isinstance(flag, str) and flag.lower() in _TRUE):
                enabled.append(name)
        if env.get("APOTHIC_PROVIDERS"):
            wanted = [p.strip() for p in env["APOTHIC_PROVIDERS"].split(",") if p.strip()]
            bad = [p for p in wanted if p not in PROVIDERS]
            if bad:
                raise InvalidError(
                    f"APOTHIC_PROVIDERS={env['APOTHIC_PROVIDERS']!r} names unknown provider(s) {bad}. "
                    f"Allowed: {list(PROVIDERS)}."
                )
            enabled, auto = wanted, []
        docker = raw.get("docker") if isinstance(raw.get("docker"), dict) else {}
        vast = raw.get("vast") if isinstance(raw.get("vast"), dict) else {}
        return cls(
            enabled=tuple(enabled),
            docker_registry=env.get("APOTHIC_DOCKER_REGISTRY") or docker.get("registry") or None,
            vast_registry=env.get("APOTHIC_VAST_REGISTRY") or vast.get("registry") or None,
            vast_ready_timeout_s=float(vast.get("ready_timeout_s", 600.0)),
            vast_max_offers=int(vast.get("max_offers", 5)),
            vast_search_limit=int(vast.get("search_limit", 64)),
            auto=tuple(auto),
        )


# The standard AWS variables a container needs to read and write an S3 blob store.
_AWS_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
)


@dataclasses.dataclass(frozen=True)
class BlobSettings:
    """Where large arguments and results go, from ``temporal-dev.yaml``'s ``blobs`` section.

    Attributes:
        store: a folder (``~`` expands; a relative path is under ``$APOTHIC_HOME``; empty:
            ``$APOTHIC_HOME/blobs``, shared by every process on this host) or
            ``s3://bucket/prefix`` (the bucket must exist). Env: ``APOTHIC_BLOB_STORE``.
        threshold_bytes: pickles of at least this many bytes travel as a reference to the
            store (0: all of them); at most 1,400,000 (Temporal refuses payloads over 2 MiB).
            Env: ``APOTHIC_BLOB_THRESHOLD_BYTES``.
        s3_endpoint_url: an S3-compatible server, e.g. ``http://127.0.0.1:8333``; empty: AWS
            (or ``AWS_ENDPOINT_URL``). Env: ``APOTHIC_BLOB_S3_ENDPOINT_URL``.
        s3_region: the bucket's region; empty: ``AWS_REGION`` or the AWS config. Env:
            ``APOTHIC_BLOB_S3_REGION``. Credentials come from boto3's usual chain
            (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance role).
    """

    store: str = ""
    threshold_bytes: int = 256 * 1024
    s3_endpoint_url: str = ""
    s3_region: str = ""

    def location(self) -> str:
        """The absolute folder, or the ``s3://`` URL, of the store."""
        if self.store.startswith("s3://"):
            return self.store
        if not self.store:
            return str(apothic_home() / "blobs")
        p = Path(self.store).expanduser()
        return str(p if p.is_absolute() else apothic_home() / p)

    def s3_bucket(self) -> str | None:
        """``bucket`` or ``bucket/prefix`` of an S3 store; None for a folder."""
        if not self.store.startswith("s3://"):
            return None
        bucket, _, prefix = self.store[len("s3://"):].partition("/")
        return f"{bucket}/{prefix.strip('/')}" if prefix.strip("/") else bucket

    def env(self) -> dict[str, str]:
        """The variables that give a child process this store (and, for S3, the AWS ones set here)."""
        env = {"APOTHIC_BLOB_STORE": self.location(), "APOTHIC_BLOB_THRESHOLD_BYTES": str(self.threshold_bytes)}
        if self.s3_endpoint_url:
            env["APOTHIC_BLOB_S3_ENDPOINT_URL"] = self.s3_endpoint_url
        if self.s3_region:
            env["APOTHIC_BLOB_S3_REGION"] = self.s3_region
        if self.s3_bucket() is not None:
            env.update({k: os.environ[k] for k in _AWS_ENV if os.environ.get(k)})
        return env

    @classmethod
    def resolve(cls, section: BlobSettings, where: str, env: Any = os.environ) -> BlobSettings:
        """``section`` with the environment's overrides, checked, its folder made absolute."""
        from .._data._serialization import MAX_INLINE_BYTES

        values: dict[str, Any] = dataclasses.asdict(section)
        source = {name: f"{where} {name}" for name in values}
        for name in values:
            if env.get(f"APOTHIC_BLOB_{name.upper()}"):
                values[name] = env[f"APOTHIC_BLOB_{name.upper()}"]
                source[name] = f"APOTHIC_BLOB_{name.upper()}"
        threshold = values["threshold_bytes"]
        try:
            values["threshold_bytes"] = int(threshold)
        except (TypeError, ValueError):
            values["threshold_bytes"] = -1
        if not 0 <= values["threshold_bytes"] <= MAX_INLINE_BYTES or isinstance(threshold, (bool, float)):
            raise InvalidError(
                f"{source['threshold_bytes']}={threshold!r}: allowed: an integer from 0 to {MAX_INLINE_BYTES}. "
                "Fix: e.g. 262144 (256 KiB), or 0 to send every argument and result through the store."
            )
        store = str(values["store"] or "")
        if "://" in store and not (store.startswith("s3://") and store[len("s3://"):].split("/")[0]):
            raise InvalidError(
                f"{source['store']}={store!r}: allowed: a folder, or s3://bucket/prefix. "
                "Fix: e.g. s3://my-bucket/apothic, or leave it empty for $APOTHIC_HOME/blobs."
            )
        blobs = cls(**{**values, "store": store})
        if store and not store.startswith("s3://"):
            blobs = dataclasses.replace(blobs, store=blobs.location())
        return blobs


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a client, worker or container needs to reach Temporal.

    Attributes:
        address: ``host:port`` of the Temporal frontend.
        namespace: the Temporal namespace.
        embedded: True when the address comes from ``temporal-dev.yaml`` (Apothic may start
            the dev server and a control worker); False for an external cluster.
        blobs: the blob store for large arguments and results (the ``blobs`` section).
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
    blobs: BlobSettings = dataclasses.field(default_factory=BlobSettings)

    def connection_env(self) -> dict[str, str]:
        """Environment variables that make a child process (a container) reach this server
        and its blob store."""
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
        env.update(self.blobs.env())
        return env

    def provider_settings(self) -> ProviderSettings:
        """The ``providers`` section, with the environment's overrides."""
        return ProviderSettings.from_raw(self.providers)


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
    blobs = BlobSettings.resolve(_section(raw, "blobs", BlobSettings, path), f"{path}: blobs")
    common = dict(server=server, worker=worker, providers=providers, config_file=str(path), blobs=blobs)
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
