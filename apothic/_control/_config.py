"""Where Apothic finds its Temporal server, and the embedded default's settings.

Resolution, first match wins:

1. ``APOTHIC_TEMPORAL_ADDRESS`` (``host:port``) with ``APOTHIC_TEMPORAL_NAMESPACE``,
   ``APOTHIC_TEMPORAL_TLS`` (``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``),
   ``APOTHIC_TEMPORAL_TLS_CERT``, ``APOTHIC_TEMPORAL_TLS_KEY``, ``APOTHIC_TEMPORAL_TLS_CA``
   (PEM file paths; a certificate or CA turns TLS on unless ``APOTHIC_TEMPORAL_TLS`` says
   otherwise) and ``APOTHIC_TEMPORAL_API_KEY``: an external cluster; Apothic starts nothing.
2. ``temporal-dev.yaml`` (``$APOTHIC_CONFIG``, else ``./temporal-dev.yaml`` or the nearest
   parent folder's, else the copy installed with the package): the embedded dev server;
   clients start it (and a control worker) when nothing answers on its port.

Every value is checked when the settings load, strictly (pydantic): a quoted ``"7233"`` is not
a port and ``"false"`` not a bool; an unknown key is refused with the nearest known one
suggested. The file's sections are checked against the field types of the dataclasses below,
each environment override (``APOTHIC_BLOB_*``, ``APOTHIC_CONTAINER_IDLE_S``, ...) against the
key it replaces. All problems are raised at once as one :class:`apothic.InvalidError`; each
names the file (full path) or the variable, the key path (``server.port``), the bad value, the
allowed range and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from collections.abc import Hashable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Strict, ValidationError, field_validator

from ..exceptions import InvalidError
from ._config_rules import (
    FALSE,
    PAYLOAD_KEY_ALLOWED,
    PAYLOAD_KEY_MAKE,
    TRUE,
    ConfigKey,
    ConfigValue,
    DbFile,
    Enabled,
    EndpointUrl,
    Flag,
    Host,
    LogLevel,
    MaxOffers,
    ModelName,
    ModelUrl,
    Name,
    Port,
    PragmaName,
    PragmaValue,
    Region,
    Registry,
    Report,
    Rule,
    SearchLimit,
    SecretsFile,
    Seconds,
    Store,
    Threshold,
    fix_for,
    host_port,
    is_url,
    payload_key_problem,
    report_errors,
    setting,
    show,
)

CONFIG_FILENAME = "temporal-dev.yaml"


def apothic_home() -> Path:
    """The folder for Apothic's local state (dev server database, logs, pid files)."""
    raw = os.environ.get("APOTHIC_HOME")
    home = Path(raw or Path.home() / ".apothic").expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        where = f"APOTHIC_HOME={raw!r}" if raw else f"the Apothic home {str(home)!r}"
        raise InvalidError(
            f"{where}: {e.strerror}; allowed: a folder Apothic can create and write. "
            "Fix: point APOTHIC_HOME at such a folder (default ~/.apothic)."
        ) from None
    return home


def find_config_file() -> Path:
    """The ``temporal-dev.yaml`` in force (see the module docstring for the order), absolute."""
    env = os.environ.get("APOTHIC_CONFIG")
    if env:
        p = Path(env).expanduser().absolute()
        if not p.is_file():
            what = "is a folder" if p.is_dir() else "does not exist"
            raise InvalidError(
                f"APOTHIC_CONFIG={env!r}: {p} {what}; allowed: the path of a {CONFIG_FILENAME}. "
                f"Fix: point APOTHIC_CONFIG at one (the packaged copy lists every key), or unset it "
                f"to use ./{CONFIG_FILENAME}."
            )
        return p
    here = Path.cwd()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_FILENAME
        if candidate.is_file():
            return candidate
    return Path(__file__).resolve().parent.parent / CONFIG_FILENAME


# --- the settings ---


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """The embedded dev server's settings, from ``temporal-dev.yaml``'s ``server`` section."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    ip: Host = "127.0.0.1"
    port: Port = 7233
    ui_port: Port = 8233
    headless: Flag = False
    # The codec server that shows Apothic's payloads readably (apothic/_codec): started with the
    # dev server on server.ip, its URL given to the Web UI (--ui-codec-endpoint).
    codec_server: Flag = True
    codec_port: Port = 8234
    namespace: Name = "default"
    db_filename: DbFile = "temporal.db"
    log_level: LogLevel = "warn"
    sqlite_pragmas: Annotated[dict[PragmaName, PragmaValue], Strict(), Rule("a mapping", "{journal_mode: WAL}")] = (
        dataclasses.field(default_factory=dict)
    )
    dynamic_config: Annotated[dict[ConfigKey, ConfigValue], Strict(), Rule("a mapping", "{frontend.namespaceCount: 4000}")] = (
        dataclasses.field(default_factory=dict)
    )

    def db_path(self) -> Path:
        p = Path(self.db_filename).expanduser()
        return p if p.is_absolute() else apothic_home() / p


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """Control-plane settings, from ``temporal-dev.yaml``'s ``worker`` section."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    control_task_queue: Name = "apothic-control"
    container_idle_s: Seconds = 60.0
    startup_timeout_s: Seconds = 300.0
    connect_timeout_s: Seconds = 10.0  # one connection attempt to the Temporal server, at most
    # A function container whose Temporal server has not answered for this long exits by itself.
    server_unreachable_s: Seconds = 300.0


PROVIDERS = ("process", "docker", "vast")
# What a provider left out of temporal-dev.yaml's `providers` section is set to.
PROVIDER_DEFAULTS: dict[str, Any] = {"process": True, "docker": "auto", "vast": "auto"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ProcessSection(_Section):
    enabled: Enabled = PROVIDER_DEFAULTS["process"]


class _DockerSection(_Section):
    enabled: Enabled = PROVIDER_DEFAULTS["docker"]
    registry: Registry | None = None


class _VastSection(_Section):
    enabled: Enabled = PROVIDER_DEFAULTS["vast"]
    registry: Registry | None = None
    ready_timeout_s: Seconds = 600.0
    max_offers: MaxOffers = 5
    search_limit: SearchLimit = 64


_PROVIDER_RULE = Rule("true, false, auto, or a mapping (enabled: ...)", "{enabled: auto}")


class _Providers(_Section):
    process: Annotated[_ProcessSection, _PROVIDER_RULE] = _ProcessSection()
    docker: Annotated[_DockerSection, _PROVIDER_RULE] = _DockerSection()
    vast: Annotated[_VastSection, _PROVIDER_RULE] = _VastSection()

    @field_validator("*", mode="before")
    @classmethod
    def _bare_flag(cls, v: Any) -> Any:
        """``docker: auto`` is ``docker: {enabled: auto}``; a bare ``docker:`` keeps the defaults."""
        if v is None:
            return {}
        return {"enabled": v} if isinstance(v, (bool, str)) else v


@dataclasses.dataclass(frozen=True)
class ProviderSettings:
    """Which providers may run function containers, from ``temporal-dev.yaml``'s ``providers``.

    Attributes:
        enabled: provider names in order of preference among equally priced offers. ``docker``
            set to ``auto`` is listed and used when its engine answers; ``vast`` set to ``auto``
            is listed when ``VAST_API_KEY`` is set. A provider the section leaves out keeps its
            default (``process`` on, ``docker`` and ``vast`` auto), after the listed ones.
            ``APOTHIC_PROVIDERS`` (``"docker,process"``) replaces the list.
        docker_registry: ``host:port`` the docker provider pushes derived images to, or None.
        vast_registry: ``host:port`` rented machines pull images from; None runs the local
            reference (only hosts that share this engine, such as the simulator, have it).
        vast_ready_timeout_s: how long one rented instance may take to reach ``running``.
        vast_max_offers: how many ranked offers one container start tries (1 to 100).
        vast_search_limit: how many offers one search asks the API for (1 to 1000).
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
    def from_raw(
        cls, raw: Any, env: Mapping[str, str] = os.environ, where: str = "the providers section"
    ) -> ProviderSettings:
        """The ``providers`` section ``raw`` (from the file ``where``) with ``env``'s overrides.

        Raises:
            InvalidError: every problem of the section and of ``APOTHIC_PROVIDERS``,
                ``APOTHIC_DOCKER_REGISTRY``, ``APOTHIC_VAST_REGISTRY`` and ``VAST_API_KEY``.
        """
        report = Report()
        checked = _check_file({"providers": raw}, where, report)
        overlay = _check_env(env, _PROVIDER_ENV, report)
        wanted = _check_provider_env(env, report)
        report.raise_if_any()
        assert checked is not None and overlay is not None
        sections = checked.providers
        enabled: list[str] = []
        auto: list[str] = []
        # The section's order is the preference; providers it leaves out follow, with their defaults.
        listed = list(raw) if isinstance(raw, dict) else []
        for name in [*listed, *(p for p in PROVIDERS if p not in listed)]:
            flag = getattr(sections, name).enabled
            if flag == "auto":
                if name != "vast" or env.get("VAST_API_KEY"):
                    enabled.append(name)
                    auto.append(name)
            elif flag is True:
                enabled.append(name)
        if wanted is not None:
            enabled, auto = wanted, []
        return cls(
            enabled=tuple(enabled),
            docker_registry=overlay.providers.docker.registry or sections.docker.registry,
            vast_registry=overlay.providers.vast.registry or sections.vast.registry,
            vast_ready_timeout_s=sections.vast.ready_timeout_s,
            vast_max_offers=sections.vast.max_offers,
            vast_search_limit=sections.vast.search_limit,
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

    __pydantic_config__ = ConfigDict(extra="forbid")

    store: Store = ""
    threshold_bytes: Threshold = 256 * 1024
    s3_endpoint_url: EndpointUrl = ""
    s3_region: Region = ""

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


@dataclasses.dataclass(frozen=True)
class SecretSettings:
    """Where the secret store is, from ``temporal-dev.yaml``'s ``secrets`` section.

    Attributes:
        file: the store's file (``~`` expands; a relative path is under ``$APOTHIC_HOME``;
            empty: ``$APOTHIC_HOME/secrets/secrets.json``). The CLI and the SDK write it, the
            control workers read it: with an external cluster, give them all the same file.
            Env: ``APOTHIC_SECRETS_FILE``.
    """

    __pydantic_config__ = ConfigDict(extra="forbid")

    file: SecretsFile = ""

    def path(self) -> Path:
        """The store's absolute path."""
        if not self.file:
            return apothic_home() / "secrets" / "secrets.json"
        p = Path(self.file).expanduser()
        return p if p.is_absolute() else apothic_home() / p


@dataclasses.dataclass(frozen=True)
class LivSettings:
    """The model that writes generated functions (``@apothic.liv``), from ``temporal-dev.yaml``'s
    ``liv`` section; only the control worker uses it.

    Attributes:
        base_url: an OpenAI-compatible API (``.../v1``; chat completions are posted to
            ``<base_url>/chat/completions``). Env: ``APOTHIC_LIV_BASE_URL``.
        model: the model asked when ``LivConfig(model=...)`` names none. Env: ``APOTHIC_LIV_MODEL``.
        timeout_s: how long one answer may take. Env: ``APOTHIC_LIV_TIMEOUT_S``.
    The API key is read from the control worker's environment only (``APOTHIC_LIV_API_KEY``),
    never from a file or a workflow.
    """

    __pydantic_config__ = ConfigDict(extra="forbid")

    base_url: ModelUrl = ""
    model: ModelName = ""
    timeout_s: Seconds = 120.0


class _ConfigFile(_Section):
    """The layout of ``temporal-dev.yaml``; an empty or left-out section keeps its defaults."""

    server: Annotated[ServerSettings, Rule("a mapping of server settings", "{port: 7233}")] = ServerSettings()
    worker: Annotated[WorkerSettings, Rule("a mapping of worker settings", "{container_idle_s: 60}")] = (
        WorkerSettings()
    )
    blobs: Annotated[BlobSettings, Rule("a mapping of blob store settings", "{store: ''}")] = BlobSettings()
    providers: Annotated[_Providers, Rule("a mapping of providers", "{process: true}")] = _Providers()
    secrets: Annotated[SecretSettings, Rule("a mapping of secret store settings", "{file: ''}")] = SecretSettings()
    liv: Annotated[LivSettings, Rule("a mapping of generated-function settings", "{model: ''}")] = LivSettings()

    @field_validator("*", mode="before")
    @classmethod
    def _empty_section(cls, v: Any) -> Any:
        return {} if v is None else v


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a client, worker or container needs to reach Temporal.

    Attributes:
        address: ``host:port`` of the Temporal frontend.
        namespace: the Temporal namespace.
        embedded: True when the address comes from ``temporal-dev.yaml`` (Apothic may start
            the dev server and a control worker); False for an external cluster.
        blobs: the blob store for large arguments and results (the ``blobs`` section).
        secrets: where the secret store is (the ``secrets`` section).
        container_api_key: the Temporal API key function containers get instead of
            ``api_key`` (``APOTHIC_CONTAINER_TEMPORAL_API_KEY``), or None.
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
    secrets: SecretSettings = dataclasses.field(default_factory=SecretSettings)
    container_api_key: str | None = None
    liv: LivSettings = dataclasses.field(default_factory=LivSettings)
    # The key payloads are signed with (``apothic/_data/_signing.py``): APOTHIC_PAYLOAD_KEY's
    # hex, or APOTHIC_PAYLOAD_KEY_FILE's absolute path; neither: the default of the mode.
    payload_key: str | None = dataclasses.field(default=None, repr=False)
    payload_key_file: str | None = None

    def connection_env(self) -> dict[str, str]:
        """Environment variables that make a child process (a container) reach this server
        and its blob store."""
        env = {"APOTHIC_TEMPORAL_ADDRESS": self.address, "APOTHIC_TEMPORAL_NAMESPACE": self.namespace}
        if self.tls:
            env["APOTHIC_TEMPORAL_TLS"] = "1"
        elif (self.api_key or self.container_api_key) and os.environ.get("APOTHIC_TEMPORAL_TLS", "").lower() in FALSE:
            env["APOTHIC_TEMPORAL_TLS"] = "0"  # said off: else a container holding a key turns TLS on (_client._tls)
        for key, value in (
            ("APOTHIC_TEMPORAL_TLS_CERT", self.tls_cert),
            ("APOTHIC_TEMPORAL_TLS_KEY", self.tls_key),
            ("APOTHIC_TEMPORAL_TLS_CA", self.tls_ca),
            # A container needs a key to poll its queue; it gets the one made for containers if set.
            ("APOTHIC_TEMPORAL_API_KEY", self.container_api_key or self.api_key),
        ):
            if value:
                env[key] = value
        env.update(self.blobs.env())
        return env

    def provider_settings(self) -> ProviderSettings:
        """The ``providers`` section, with the environment's overrides."""
        return ProviderSettings.from_raw(self.providers, where=self.config_file or "the providers section")


# --- reading and checking ---


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} is given twice", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


@lru_cache(maxsize=8)
def _read_config(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    """The parsed file (cached while it is unchanged)."""
    layout = "a YAML mapping of the sections server, worker, blobs, providers, secrets, liv"
    fix = "correct it (the packaged temporal-dev.yaml shows the layout)"
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.load(f, Loader=_UniqueKeyLoader) or {}  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise InvalidError(f"{path}: {at}{problem}; allowed: {layout}. Fix: {fix}.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidError(f"{path}: cannot be read ({e}); allowed: {layout} in UTF-8. Fix: {fix}.") from None
    if not isinstance(raw, dict):
        raise InvalidError(f"{path}: the top level is {show(raw)}; allowed: {layout}. Fix: {fix}.")
    return raw


def _load_file(path: Path) -> dict[str, Any]:
    st = path.stat()
    return _read_config(str(path), st.st_mtime_ns, st.st_size)


def _check_file(raw: dict[str, Any], label: str, report: Report) -> _ConfigFile | None:
    """``raw`` (the file's content) checked; None when it has problems (added to ``report``)."""
    try:
        return _ConfigFile.model_validate(raw)
    except ValidationError as e:
        report_errors(_ConfigFile, e, report, lambda loc: ("file", label, None))
        return None


# Environment variables that replace one key of the file.
_ENV_KEYS: dict[str, tuple[str, ...]] = {
    "APOTHIC_CONTAINER_IDLE_S": ("worker", "container_idle_s"),
    "APOTHIC_STARTUP_TIMEOUT_S": ("worker", "startup_timeout_s"),
    "APOTHIC_CONNECT_TIMEOUT_S": ("worker", "connect_timeout_s"),
    "APOTHIC_SERVER_UNREACHABLE_S": ("worker", "server_unreachable_s"),
    "APOTHIC_BLOB_STORE": ("blobs", "store"),
    "APOTHIC_BLOB_THRESHOLD_BYTES": ("blobs", "threshold_bytes"),
    "APOTHIC_BLOB_S3_ENDPOINT_URL": ("blobs", "s3_endpoint_url"),
    "APOTHIC_BLOB_S3_REGION": ("blobs", "s3_region"),
    "APOTHIC_DOCKER_REGISTRY": ("providers", "docker", "registry"),
    "APOTHIC_VAST_REGISTRY": ("providers", "vast", "registry"),
    "APOTHIC_SECRETS_FILE": ("secrets", "file"),
    "APOTHIC_LIV_BASE_URL": ("liv", "base_url"),
    "APOTHIC_LIV_MODEL": ("liv", "model"),
    "APOTHIC_LIV_TIMEOUT_S": ("liv", "timeout_s"),
}
_PROVIDER_ENV = ("APOTHIC_DOCKER_REGISTRY", "APOTHIC_VAST_REGISTRY")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _check_env(env: Mapping[str, str], names: typing.Iterable[str], report: Report) -> _ConfigFile | None:
    """The variables ``names`` that are set, as a file with only those keys; None on problems."""
    overlay: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    ok = True
    for var in names:
        text = env.get(var)
        if not text:
            continue
        loc = _ENV_KEYS[var]
        rule, tp, default = setting(_ConfigFile, loc)
        value: Any = text
        if tp is int and re.fullmatch(r"[+-]?\d+", text.strip()):
            value = int(text)
        elif tp is float and _NUMBER.fullmatch(text.strip()):
            value = float(text)
        elif tp in (int, float):
            assert rule is not None
            report.add(f"{var}={text!r} (sets {'.'.join(loc)})", rule.allowed,
                       fix_for("env", var, loc, text, rule, tp, default), "not a number")
            ok = False
            continue
        node = overlay
        for part in loc[:-1]:
            node = node.setdefault(part, {})
        node[loc[-1]] = value
        origin[loc] = var
    try:
        checked = _ConfigFile.model_validate(overlay)
    except ValidationError as e:
        report_errors(_ConfigFile, e, report, lambda loc: ("env", origin[loc], env[origin[loc]]))
        return None
    return checked if ok else None


def _check_provider_env(env: Mapping[str, str], report: Report) -> list[str] | None:
    """``APOTHIC_PROVIDERS`` as a list (None when unset) and ``VAST_API_KEY``, ``VAST_URL`` checked."""
    key = env.get("VAST_API_KEY")
    if key and (key != key.strip() or any(c.isspace() for c in key)):
        report.add("VAST_API_KEY=<hidden> (enables vast: auto)", "a key without spaces or newlines",
                   "remove the spaces or the line break (e.g. from $(cat file))")
    url = env.get("VAST_URL")
    if url and not is_url(url):
        report.add(f"VAST_URL={url!r} (the Vast.ai API)", "an http:// or https:// URL with a host",
                   "e.g. VAST_URL=https://console.vast.ai, or unset VAST_URL")
    text = env.get("APOTHIC_PROVIDERS")
    if not text:
        return None
    wanted = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in wanted if p not in PROVIDERS]
    twice = sorted({p for p in wanted if wanted.count(p) > 1})
    if bad or twice or not wanted:
        detail = (
            f"unknown provider(s) {bad}" if bad else f"{twice} given twice" if twice else "no provider named"
        )
        close = [difflib.get_close_matches(p, PROVIDERS, n=1) for p in bad]
        hint = "; ".join(f"{p!r}: did you mean {c[0]!r}?" for p, c in zip(bad, close) if c)
        report.add(f"APOTHIC_PROVIDERS={text!r} (replaces the providers list)",
                   f"a comma-separated list of {', '.join(PROVIDERS)}",
                   f"e.g. APOTHIC_PROVIDERS=docker,process{' (' + hint + ')' if hint else ''}, or unset it",
                   detail)
        return None
    return wanted


def _check_temporal_env(env: Mapping[str, str], report: Report) -> dict[str, Any]:
    """The external cluster's settings (``APOTHIC_TEMPORAL_*``), checked, as ``Settings`` fields."""
    address = env.get("APOTHIC_TEMPORAL_ADDRESS") or ""
    if address and host_port(address) is None:
        report.add(
            f"APOTHIC_TEMPORAL_ADDRESS={address!r}",
            "host:port with a port from 1 to 65535 (no scheme)",
            "e.g. APOTHIC_TEMPORAL_ADDRESS=127.0.0.1:7233 or my-ns.abc12.tmprl.cloud:7233, or unset it for the "
            "embedded dev server",
            "a URL" if "://" in address else "",
        )
    namespace = env.get("APOTHIC_TEMPORAL_NAMESPACE") or ""
    if namespace and any(c.isspace() for c in namespace):
        report.add(f"APOTHIC_TEMPORAL_NAMESPACE={namespace!r}", "a namespace name without spaces",
                   "e.g. APOTHIC_TEMPORAL_NAMESPACE=default")
    flag_text = env.get("APOTHIC_TEMPORAL_TLS") or ""
    flag: bool | None = None
    if flag_text.lower() in TRUE | FALSE:
        flag = flag_text.lower() in TRUE
    elif flag_text:
        report.add(f"APOTHIC_TEMPORAL_TLS={flag_text!r}", "1, true, yes, on, or 0, false, no, off",
                   "e.g. APOTHIC_TEMPORAL_TLS=1, or unset it")
    files = {
        name: env.get(f"APOTHIC_TEMPORAL_TLS_{name.upper()}") or None for name in ("cert", "key", "ca")
    }
    tls = flag if flag is not None else bool(files["cert"] or files["ca"])
    if flag is False and any(files.values()):
        given = ", ".join(f"APOTHIC_TEMPORAL_TLS_{n.upper()}" for n, v in files.items() if v)
        report.add(f"APOTHIC_TEMPORAL_TLS={flag_text!r}", "TLS on when a certificate or CA is given",
                   f"unset {given}, or set APOTHIC_TEMPORAL_TLS=1", f"{given} would be ignored")
    for name, value in files.items():
        var = f"APOTHIC_TEMPORAL_TLS_{name.upper()}"
        if value and tls:
            p = Path(value).expanduser()
            if not p.is_file():
                report.add(f"{var}={value!r}", "the path of a PEM file that exists",
                           f"point {var} at the file, or unset it", "a folder" if p.is_dir() else "no such file")
            else:
                files[name] = str(p.absolute())
    if tls and bool(files["cert"]) != bool(files["key"]):
        have, lack = ("CERT", "KEY") if files["cert"] else ("KEY", "CERT")
        report.add(f"APOTHIC_TEMPORAL_TLS_{have}={env.get(f'APOTHIC_TEMPORAL_TLS_{have}')!r}",
                   "a client certificate together with its private key",
                   f"set APOTHIC_TEMPORAL_TLS_{lack} too, or unset APOTHIC_TEMPORAL_TLS_{have}",
                   f"APOTHIC_TEMPORAL_TLS_{lack} is not set")
    api_key = env.get("APOTHIC_TEMPORAL_API_KEY") or None
    container_key = env.get("APOTHIC_CONTAINER_TEMPORAL_API_KEY") or None
    for var, key in (("APOTHIC_TEMPORAL_API_KEY", api_key), ("APOTHIC_CONTAINER_TEMPORAL_API_KEY", container_key)):
        if key and any(c.isspace() for c in key):
            report.add(f"{var}=<hidden>", "a key without spaces or newlines",
                       "remove the spaces or the line break (e.g. from $(cat file))")
    return {"address": address, "namespace": namespace or "default", "tls": tls, "api_key": api_key,
            "container_api_key": container_key,
            "tls_cert": files["cert"], "tls_key": files["key"], "tls_ca": files["ca"]}


def _check_payload_env(env: Mapping[str, str], report: Report) -> dict[str, Any]:
    """``APOTHIC_PAYLOAD_KEY`` (never quoted) and ``APOTHIC_PAYLOAD_KEY_FILE``, checked, as
    ``Settings`` fields; the file's content and mode are checked when it is read."""
    key = env.get("APOTHIC_PAYLOAD_KEY") or None
    file = env.get("APOTHIC_PAYLOAD_KEY_FILE") or None
    fix = f"make a key with {PAYLOAD_KEY_MAKE} and give every process of the control plane the same one"
    if key and (problem := payload_key_problem(key)):
        report.add("APOTHIC_PAYLOAD_KEY=<hidden>", PAYLOAD_KEY_ALLOWED, fix, problem)
    if file:
        p = Path(file).expanduser().absolute()
        if not p.is_file():
            report.add(f"APOTHIC_PAYLOAD_KEY_FILE={file!r}", "the path of a file that holds the payload key",
                       f"point it at the file, or unset it; {fix}", "a folder" if p.is_dir() else "no such file")
        file = str(p)
    if key and file:
        report.add("APOTHIC_PAYLOAD_KEY_FILE (with APOTHIC_PAYLOAD_KEY)", "one of the two",
                   "unset one of them", "both are set")
    return {"payload_key": key, "payload_key_file": file}


def _check_overrides(overrides: dict[str, Any], report: Report) -> dict[str, Any]:
    """``load_settings(port=..., ...)`` (the CLI's ``--port`` and the like), checked."""
    given = {k: v for k, v in overrides.items() if v is not None}

    def option(loc: tuple[str, ...]) -> tuple[str, str, None]:
        return "arg", f"--{loc[-1].replace('_', '-')}" if len(loc) > 1 else "load_settings()", None

    try:
        checked = _ConfigFile.model_validate({"server": given}).server
    except ValidationError as e:
        report_errors(_ConfigFile, e, report, option)
        return {}
    return {k: getattr(checked, k) for k in given}


def load_settings(**overrides: Any) -> Settings:
    """Resolve the settings in force now (environment first, then ``temporal-dev.yaml``).

    Args:
        **overrides: ``ServerSettings`` fields (``port``, ``ui_port``, ``db_filename``, ...)
            that replace the file's values, as ``apothic server --port`` does.

    Raises:
        InvalidError: every problem of the file, the environment and ``overrides`` at once.
    """
    report = Report()
    env = os.environ
    path: Path | None = None
    raw: dict[str, Any] = {}
    try:
        path = find_config_file()
        raw = _load_file(path)
    except InvalidError as e:
        report.lines.append(str(e))
    checked = _check_file(raw, str(path), report)
    overlay = _check_env(env, _ENV_KEYS, report)
    _check_provider_env(env, report)
    external = _check_temporal_env(env, report)
    payload_key = _check_payload_env(env, report)
    server_args = _check_overrides(overrides, report)
    if checked is not None:
        server = dataclasses.replace(checked.server, **server_args)
        if not server.headless and server.port == server.ui_port:
            allowed = f"a port other than server.port ({server.port})"
            detail = "the Web UI cannot share the gRPC port"
            other = server.port + 1 if server.port < 65535 else server.port - 1
            if {"port", "ui_port"} & set(server_args):
                report.add(f"--ui-port={server.ui_port} (sets server.ui_port)", allowed,
                           f"e.g. --ui-port {other}, or --headless", detail)
            else:
                report.add(f"{path}: server.ui_port={server.ui_port}", allowed,
                           f'in the server section, write e.g. "ui_port: {other}" or "headless: true"', detail)
    report.raise_if_any()
    assert checked is not None and overlay is not None and path is not None

    def merged(section: str, base: Any) -> Any:
        values = {loc[1]: getattr(getattr(overlay, section), loc[1])
                  for var, loc in _ENV_KEYS.items() if loc[0] == section and env.get(var)}
        return dataclasses.replace(base, **values)

    worker = merged("worker", checked.worker)
    blobs = merged("blobs", checked.blobs)
    if blobs.store and not blobs.store.startswith("s3://"):
        blobs = dataclasses.replace(blobs, store=blobs.location())
    common: dict[str, Any] = {"server": server, "worker": worker, "providers": raw.get("providers") or {},
                              "config_file": str(path), "blobs": blobs, "secrets": merged("secrets", checked.secrets),
                              "liv": merged("liv", checked.liv), **payload_key}
    if external["address"]:
        return Settings(embedded=False, **external, **common)
    return Settings(address=f"{server.ip}:{server.port}", namespace=server.namespace, embedded=True, **common)
