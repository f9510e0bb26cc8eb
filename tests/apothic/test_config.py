"""Settings: temporal-dev.yaml and the environment, checked strictly, every problem at once.

Each problem names its source (the file's full path, or the variable), the key path, the bad
value, the allowed range and the fix."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import apothic
from apothic import InvalidError
from apothic._control._config import (
    CONFIG_FILENAME,
    BlobSettings,
    ProviderSettings,
    ServerSettings,
    WorkerSettings,
    apothic_home,
    find_config_file,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGED = Path(apothic.__file__).resolve().parent / CONFIG_FILENAME

SETTINGS_ENV = (
    "APOTHIC_CONFIG", "APOTHIC_CONTAINER_IDLE_S", "APOTHIC_STARTUP_TIMEOUT_S", "APOTHIC_CONNECT_TIMEOUT_S",
    "APOTHIC_BLOB_STORE",
    "APOTHIC_BLOB_THRESHOLD_BYTES", "APOTHIC_BLOB_S3_ENDPOINT_URL", "APOTHIC_BLOB_S3_REGION",
    "APOTHIC_DOCKER_REGISTRY", "APOTHIC_VAST_REGISTRY", "APOTHIC_PROVIDERS", "APOTHIC_TEMPORAL_ADDRESS",
    "APOTHIC_TEMPORAL_NAMESPACE", "APOTHIC_TEMPORAL_TLS", "APOTHIC_TEMPORAL_TLS_CERT", "APOTHIC_TEMPORAL_TLS_KEY",
    "APOTHIC_TEMPORAL_TLS_CA", "APOTHIC_TEMPORAL_API_KEY", "VAST_API_KEY", "VAST_URL",
)


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in SETTINGS_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("APOTHIC_HOME", str(tmp_path / "home"))


def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "conf" / CONFIG_FILENAME
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    monkeypatch.setenv("APOTHIC_CONFIG", str(path))
    return path


def refused(**overrides: object) -> str:
    with pytest.raises(InvalidError) as info:
        load_settings(**overrides)
    return str(info.value)


# --- good files ---


def test_a_good_file_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config(tmp_path, monkeypatch, """
server:
  ip: 0.0.0.0
  port: 17233
  ui_port: 18233
  headless: true
  namespace: team-a
  db_filename: ":memory:"
  log_level: error
  sqlite_pragmas: {journal_mode: WAL, busy_timeout: 5000}
  dynamic_config: {frontend.namespaceCount: 10, history.someList: [1, 2]}
worker:
  control_task_queue: my-control
  container_idle_s: 2.5
  startup_timeout_s: 30
blobs:
  store: s3://my-bucket/some/prefix
  threshold_bytes: 0
  s3_endpoint_url: http://127.0.0.1:8333
  s3_region: us-east-1
providers:
  docker: {enabled: true, registry: 127.0.0.1:5000}
  vast: {enabled: false, max_offers: 3, search_limit: 100, ready_timeout_s: 60}
  process: auto
""")
    s = load_settings()
    assert s.embedded and s.address == "0.0.0.0:17233" and s.namespace == "team-a"
    assert s.server == ServerSettings(
        ip="0.0.0.0", port=17233, ui_port=18233, headless=True, namespace="team-a", db_filename=":memory:",
        log_level="error", sqlite_pragmas={"journal_mode": "WAL", "busy_timeout": 5000},
        dynamic_config={"frontend.namespaceCount": 10, "history.someList": [1, 2]},
    )
    assert s.worker == WorkerSettings("my-control", 2.5, 30.0)
    assert s.blobs == BlobSettings("s3://my-bucket/some/prefix", 0, "http://127.0.0.1:8333", "us-east-1")
    p = s.provider_settings()
    assert p.enabled == ("docker", "process") and p.auto == ("process",)
    assert p.docker_registry == "127.0.0.1:5000" and (p.vast_max_offers, p.vast_search_limit) == (3, 100)
    assert p.vast_ready_timeout_s == 60.0


def test_good_environment_values_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config(tmp_path, monkeypatch, "worker: {container_idle_s: 60}\n")
    monkeypatch.setenv("APOTHIC_CONTAINER_IDLE_S", "0.5")
    monkeypatch.setenv("APOTHIC_STARTUP_TIMEOUT_S", "1e3")
    monkeypatch.setenv("APOTHIC_BLOB_THRESHOLD_BYTES", "1400000")
    monkeypatch.setenv("APOTHIC_TEMPORAL_ADDRESS", "[::1]:7233")
    monkeypatch.setenv("APOTHIC_TEMPORAL_NAMESPACE", "prod.a1b2c")
    s = load_settings()
    assert (s.worker.container_idle_s, s.worker.startup_timeout_s) == (0.5, 1000.0)
    assert s.blobs.threshold_bytes == 1_400_000
    assert (s.address, s.namespace, s.embedded, s.tls) == ("[::1]:7233", "prod.a1b2c", False, False)


def test_the_shipped_files_are_identical_and_load(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (ROOT / CONFIG_FILENAME).read_bytes() == PACKAGED.read_bytes()
    for path in (ROOT / CONFIG_FILENAME, PACKAGED):
        monkeypatch.setenv("APOTHIC_CONFIG", str(path))
        s = load_settings()
        # The dataclasses' defaults are the shipped file's values.
        assert dataclasses.replace(s.server, sqlite_pragmas={}, dynamic_config={}) == ServerSettings()
        assert s.worker == WorkerSettings() and s.blobs == BlobSettings()
        assert s.server.sqlite_pragmas == {"journal_mode": "WAL", "synchronous": "NORMAL"}
        assert ProviderSettings.from_raw(s.providers, {}) == ProviderSettings.from_raw({}, {})


def test_the_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nested = tmp_path / "project" / "src" / "pkg"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    assert find_config_file() == PACKAGED  # nothing above tmp_path has one
    (tmp_path / "project" / CONFIG_FILENAME).write_text("server: {port: 1111}\n")
    assert load_settings().server.port == 1111  # the nearest parent's
    (nested / CONFIG_FILENAME).write_text("server: {port: 2222}\n")
    assert load_settings().server.port == 2222  # ./temporal-dev.yaml
    explicit = config(tmp_path, monkeypatch, "server: {port: 3333}\n")
    assert load_settings().server.port == 3333 and load_settings().config_file == str(explicit)
    explicit.write_text("server: {port: 44444}\n")  # an edited file is read again
    assert load_settings().server.port == 44444


# --- bad values in the file ---

FILE_CASES = [
    # (yaml, key path=value as shown, allowed, fix)
    ('server: {port: "not-a-port"}', "server.port='not-a-port'", "an integer from 1 to 65535", 'write e.g. "port: 7233"'),
    ('server: {port: "7233"}', "server.port='7233'", "an integer from 1 to 65535", 'without quotes: "port: 7233"'),
    ("server: {port: 0}", "server.port=0", "an integer from 1 to 65535", '"port: 7233"'),
    ("server: {port: true}", "server.port=True", "an integer from 1 to 65535", '"port: 7233"'),
    ("server: {ui_port: 70000}", "server.ui_port=70000", "an integer from 1 to 65535", '"ui_port: 8233"'),
    ('server: {headless: "false"}', "server.headless='false'", "true or false", 'without quotes: "headless: false"'),
    ('server: {ip: "bad host!"}', "server.ip='bad host!'", "an IP address or host name", '"ip: 127.0.0.1"'),
    ("server: {log_level: loud}", "server.log_level='loud'", "one of debug, info, warn, error, never",
     '"log_level: warn"'),
    ('server: {namespace: "my ns"}', "server.namespace='my ns'", "a non-empty name without spaces",
     '"namespace: default"'),
    ('server: {sqlite_pragmas: {journal_mode: "WAL; DROP TABLE x"}}',
     "server.sqlite_pragmas.journal_mode='WAL; DROP TABLE x'", "a word or a whole number", '"journal_mode: WAL"'),
    ("server: {dynamic_config: {history.x: .inf}}", "server.dynamic_config.history.x=inf", "a JSON value",
     '"history.x: 1000"'),
    ("server: {port: 9000, ui_port: 9000}", "server.ui_port=9000", "a port other than server.port (9000)",
     '"ui_port: 9001" or "headless: true"'),
    ("server: 5", "server=5", "a mapping of server settings", 'at the top level, write e.g. "server: {port: 7233}"'),
    ("worker: {container_idle_s: 0}", "worker.container_idle_s=0", "a number of seconds > 0",
     '"container_idle_s: 60"'),
    ("worker: {startup_timeout_s: -5}", "worker.startup_timeout_s=-5", "a number of seconds > 0",
     '"startup_timeout_s: 300"'),
    ('worker: {startup_timeout_s: "300"}', "worker.startup_timeout_s='300'", "a number of seconds > 0",
     'without quotes: "startup_timeout_s: 300"'),
    ("worker: {container_idle_s: .nan}", "worker.container_idle_s=nan", "a number of seconds > 0",
     '"container_idle_s: 60"'),
    ('worker: {control_task_queue: ""}', "worker.control_task_queue=''", "a non-empty name without spaces",
     '"control_task_queue: apothic-control"'),
    ("blobs: {threshold_bytes: 1400001}", "blobs.threshold_bytes=1400001", "an integer from 0 to 1400000",
     '"threshold_bytes: 262144" (256 KiB), or 0 to send every argument and result through the store'),
    ("blobs: {threshold_bytes: 1000.0}", "blobs.threshold_bytes=1000.0", "an integer from 0 to 1400000",
     '"threshold_bytes: 262144"'),
    ("blobs: {store: gs://bucket/p}", "blobs.store='gs://bucket/p'", "a folder, or s3://bucket/prefix",
     '"store: s3://my-bucket/apothic", or empty for $APOTHIC_HOME/blobs'),
    ("blobs: {store: s3:///prefix}", "blobs.store='s3:///prefix'", "a folder, or s3://bucket/prefix", "s3://my-bucket"),
    ("blobs: {s3_endpoint_url: ftp://x}", "blobs.s3_endpoint_url='ftp://x'", "an http:// or https:// URL",
     '"s3_endpoint_url: http://127.0.0.1:8333"'),
    ('providers: {docker: {enabled: "yes"}}', "providers.docker.enabled='yes'", "true, false or auto",
     '"enabled: auto"'),
    ("providers: {process: maybe}", "providers.process.enabled='maybe'", "true, false or auto", '"enabled: true"'),
    ("providers: {docker: 5}", "providers.docker=5", "true, false, auto, or a mapping", '"docker: {enabled: auto}"'),
    ("providers: {docker: {registry: 'http://r:5000'}}", "providers.docker.registry='http://r:5000'",
     "host:port of an image registry, or null", '"registry: 127.0.0.1:5000"'),
    ("providers: {vast: {max_offers: 0}}", "providers.vast.max_offers=0", "an integer from 1 to 100",
     '"max_offers: 5"'),
    ("providers: {vast: {search_limit: 5000}}", "providers.vast.search_limit=5000", "an integer from 1 to 1000",
     '"search_limit: 64"'),
    ("providers: {vast: {ready_timeout_s: 0}}", "providers.vast.ready_timeout_s=0", "a number of seconds > 0",
     '"ready_timeout_s: 600"'),
]


@pytest.mark.parametrize(("text", "shown", "allowed", "fix"), FILE_CASES, ids=[c[1] for c in FILE_CASES])
def test_a_bad_value_in_the_file_names_file_key_value_range_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, shown: str, allowed: str, fix: str
) -> None:
    path = config(tmp_path, monkeypatch, text + "\n")
    msg = refused()
    line = next(line for line in msg.splitlines() if shown in line)
    assert line.startswith(f"  - {path}: {shown}: allowed: {allowed}"), msg
    assert "Fix: " in line and fix in line.split("Fix: ", 1)[1], msg
    assert "(1 problem)" in msg, msg


UNKNOWN_CASES = [
    ("server: {prot: 1}", "unknown key(s) ['prot'] in 'server' (server.prot=1)", "rename server.prot to server.port"),
    ("sever: {port: 1}", "unknown key(s) ['sever'] at the top level", "rename sever to server"),
    ("blobs: {treshold_bytes: 5}", "in 'blobs'", "rename blobs.treshold_bytes to blobs.threshold_bytes"),
    ("providers: {dokcer: true}", "in 'providers'", "rename providers.dokcer to providers.docker"),
    ("providers: {vast: {max_offer: 3}}", "in 'providers.vast'", "rename providers.vast.max_offer to providers.vast.max_offers"),
    ("worker: {idle: 5}", "in 'worker'", "remove worker.idle"),
    ("providers: {process: {registry: x}}", "in 'providers.process'", "remove providers.process.registry"),
]


@pytest.mark.parametrize(("text", "head", "fix"), UNKNOWN_CASES, ids=[c[2] for c in UNKNOWN_CASES])
def test_an_unknown_key_is_refused_with_the_nearest_known_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, head: str, fix: str
) -> None:
    path = config(tmp_path, monkeypatch, text + "\n")
    msg = refused()
    assert f"{path}: " in msg and head in msg and f"Fix: {fix}." in msg, msg
    assert "allowed: " in msg


def test_unreadable_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = config(tmp_path, monkeypatch, "server:\n  port: 7233\n port: 1\n")
    assert re.search(rf"{re.escape(str(path))}: line 3, column 2: .*Fix: ", refused()), refused()
    config(tmp_path, monkeypatch, "server:\n  port: 7233\n  port: 7234\n")
    assert "line 3, column 3: the key 'port' is given twice" in refused()
    config(tmp_path, monkeypatch, "- server\n")
    assert "the top level is ['server']; allowed: a YAML mapping" in refused()
    monkeypatch.setenv("APOTHIC_CONFIG", str(tmp_path / "missing.yaml"))
    msg = refused()
    assert f"APOTHIC_CONFIG={str(tmp_path / 'missing.yaml')!r}" in msg and "does not exist" in msg and "Fix: " in msg


def test_apothic_home_must_be_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("APOTHIC_HOME", str(tmp_path / "a-file"))
    with pytest.raises(InvalidError, match=r"APOTHIC_HOME='.*a-file'.*allowed: a folder.*Fix: "):
        apothic_home()


# --- bad values in the environment ---

ENV_CASES = [
    # (variable, value, what the message says it is for, allowed, fix)
    ("APOTHIC_BLOB_THRESHOLD_BYTES", "lots", "sets blobs.threshold_bytes", "an integer from 0 to 1400000",
     "APOTHIC_BLOB_THRESHOLD_BYTES=262144"),
    ("APOTHIC_BLOB_THRESHOLD_BYTES", "3000000", "sets blobs.threshold_bytes", "an integer from 0 to 1400000",
     "or 0 to send every argument"),
    ("APOTHIC_BLOB_THRESHOLD_BYTES", "1.5", "sets blobs.threshold_bytes", "an integer from 0", "unset APOTHIC_BLOB_"),
    ("APOTHIC_BLOB_STORE", "gs://bucket", "sets blobs.store", "a folder, or s3://bucket/prefix",
     "APOTHIC_BLOB_STORE=s3://my-bucket/apothic"),
    ("APOTHIC_BLOB_S3_ENDPOINT_URL", "127.0.0.1:8333", "sets blobs.s3_endpoint_url", "an http:// or https:// URL",
     "APOTHIC_BLOB_S3_ENDPOINT_URL=http://127.0.0.1:8333"),
    ("APOTHIC_BLOB_S3_REGION", "us east", "sets blobs.s3_region", "a region name", "APOTHIC_BLOB_S3_REGION=us-east-1"),
    ("APOTHIC_CONTAINER_IDLE_S", "0", "sets worker.container_idle_s", "a number of seconds > 0",
     "APOTHIC_CONTAINER_IDLE_S=60"),
    ("APOTHIC_CONTAINER_IDLE_S", "soon", "sets worker.container_idle_s", "a number of seconds > 0", "or unset"),
    ("APOTHIC_CONTAINER_IDLE_S", "inf", "sets worker.container_idle_s", "a number of seconds > 0", "=60"),
    ("APOTHIC_STARTUP_TIMEOUT_S", "-1", "sets worker.startup_timeout_s", "a number of seconds > 0",
     "APOTHIC_STARTUP_TIMEOUT_S=300"),
    ("APOTHIC_CONNECT_TIMEOUT_S", "10s", "sets worker.connect_timeout_s", "a number of seconds > 0",
     "APOTHIC_CONNECT_TIMEOUT_S=10"),
    ("APOTHIC_DOCKER_REGISTRY", "http://127.0.0.1:5000", "sets providers.docker.registry", "host:port of an image registry",
     "APOTHIC_DOCKER_REGISTRY=127.0.0.1:5000"),
    ("APOTHIC_VAST_REGISTRY", "a b", "sets providers.vast.registry", "host:port", "APOTHIC_VAST_REGISTRY=127.0.0.1:5000"),
    ("APOTHIC_PROVIDERS", "process,k8s", "replaces the providers list", "a comma-separated list of process, docker, vast",
     "APOTHIC_PROVIDERS=docker,process"),
    ("APOTHIC_PROVIDERS", "docker,dokcer", "replaces the providers list", "a comma-separated list", "did you mean 'docker'"),
    ("APOTHIC_PROVIDERS", ",", "replaces the providers list", "a comma-separated list", "APOTHIC_PROVIDERS=docker,process"),
    ("APOTHIC_PROVIDERS", "docker,docker", "replaces the providers list", "a comma-separated list", "or unset it"),
    ("APOTHIC_TEMPORAL_ADDRESS", "localhost", None, "host:port with a port from 1 to 65535",
     "APOTHIC_TEMPORAL_ADDRESS=127.0.0.1:7233"),
    ("APOTHIC_TEMPORAL_ADDRESS", "http://localhost:7233", None, "(no scheme)", "APOTHIC_TEMPORAL_ADDRESS="),
    ("APOTHIC_TEMPORAL_ADDRESS", "localhost:99999", None, "a port from 1 to 65535", "or unset it"),
    ("APOTHIC_TEMPORAL_NAMESPACE", "my ns", None, "a namespace name without spaces",
     "APOTHIC_TEMPORAL_NAMESPACE=default"),
    ("APOTHIC_TEMPORAL_TLS", "maybe", None, "1, true, yes, on, or 0, false, no, off", "APOTHIC_TEMPORAL_TLS=1"),
    ("APOTHIC_TEMPORAL_TLS_CA", "/no/such/ca.pem", None, "the path of a PEM file that exists",
     "point APOTHIC_TEMPORAL_TLS_CA at the file"),
    ("VAST_URL", "console.vast.ai", "the Vast.ai API", "an http:// or https:// URL", "VAST_URL=https://console.vast.ai"),
]


@pytest.mark.parametrize(("var", "value", "sets", "allowed", "fix"), ENV_CASES, ids=[f"{c[0]}={c[1]}" for c in ENV_CASES])
def test_a_bad_environment_value_names_variable_value_range_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str, value: str, sets: str | None, allowed: str, fix: str
) -> None:
    config(tmp_path, monkeypatch, "")
    monkeypatch.setenv(var, value)
    msg = refused()
    line = next((line for line in msg.splitlines() if line.startswith(f"  - {var}=")), msg)
    head = f"  - {var}={value!r}" + (f" ({sets})" if sets else "")
    assert line.startswith(f"{head}: allowed: ") and allowed in line, msg
    assert "Fix: " in line and fix in line.split("Fix: ", 1)[1], msg
    assert "(1 problem)" in msg, msg


@pytest.mark.parametrize("var", ["APOTHIC_TEMPORAL_API_KEY", "VAST_API_KEY"])
def test_a_key_with_a_line_break_is_refused_without_showing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    config(tmp_path, monkeypatch, "")
    monkeypatch.setenv(var, "secret-value\n")
    msg = refused()
    assert f"{var}=<hidden>" in msg and "secret-value" not in msg and "Fix: remove the spaces" in msg


def test_tls_files_must_exist_and_come_in_pairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config(tmp_path, monkeypatch, "")
    cert, key, ca = (tmp_path / n for n in ("client.pem", "client.key", "ca.pem"))
    for f in (cert, key, ca):
        f.write_text("PEM")
    monkeypatch.setenv("APOTHIC_TEMPORAL_ADDRESS", "temporal.example.com:7233")
    monkeypatch.setenv("APOTHIC_TEMPORAL_TLS_CERT", str(cert))
    msg = refused()
    assert f"APOTHIC_TEMPORAL_TLS_CERT={str(cert)!r}: allowed: a client certificate together with its private key" in msg
    assert "Fix: set APOTHIC_TEMPORAL_TLS_KEY too" in msg
    monkeypatch.setenv("APOTHIC_TEMPORAL_TLS_KEY", str(tmp_path / "missing.key"))
    msg = refused()
    assert f"APOTHIC_TEMPORAL_TLS_KEY={str(tmp_path / 'missing.key')!r}: allowed: the path of a PEM file" in msg
    monkeypatch.setenv("APOTHIC_TEMPORAL_TLS_KEY", str(key))
    monkeypatch.setenv("APOTHIC_TEMPORAL_TLS_CA", str(ca))
    s = load_settings()
    assert (s.tls, s.tls_cert, s.tls_key, s.tls_ca, s.embedded) == (True, str(cert), str(key), str(ca), False)
    assert s.connection_env()["APOTHIC_TEMPORAL_TLS"] == "1"
    monkeypatch.setenv("APOTHIC_TEMPORAL_TLS", "off")  # files that would be ignored
    msg = refused()
    assert "APOTHIC_TEMPORAL_TLS='off': allowed: TLS on when a certificate or CA is given" in msg
    assert "APOTHIC_TEMPORAL_TLS_CERT, APOTHIC_TEMPORAL_TLS_KEY, APOTHIC_TEMPORAL_TLS_CA would be ignored" in msg


def test_every_problem_is_reported_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = config(tmp_path, monkeypatch, "server: {port: x, prot: 1}\nblobs: {threshold_bytes: -1}\n")
    monkeypatch.setenv("APOTHIC_CONTAINER_IDLE_S", "never")
    monkeypatch.setenv("APOTHIC_TEMPORAL_TLS", "maybe")
    msg = refused(ui_port=0)
    assert msg.startswith("invalid Apothic settings (6 problems):\n"), msg
    for part in (f"{path}: server.port='x'", f"{path}: unknown key(s) ['prot']", f"{path}: blobs.threshold_bytes=-1",
                 "APOTHIC_CONTAINER_IDLE_S='never'", "APOTHIC_TEMPORAL_TLS='maybe'", "--ui-port=0 (sets server.ui_port)"):
        assert part in msg, (part, msg)


def test_arguments_are_checked_like_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config(tmp_path, monkeypatch, "")
    assert "--port=0 (sets server.port): allowed: an integer from 1 to 65535. Fix: e.g. --port 7233." in refused(port=0)
    assert "--port='7233' (sets server.port)" in refused(port="7233")
    assert "--ui-port=7233 (sets server.ui_port): allowed: a port other than server.port" in refused(ui_port=7233)
    assert "unknown key(s) ['prot'] in 'server'" in refused(prot=1)
    assert load_settings(port=7000, headless=True, db_filename="x.db").server.port == 7000


def test_provider_settings_from_a_section_name_where_it_came_from() -> None:
    with pytest.raises(InvalidError, match=r"/etc/x.yaml: providers.docker.enabled='on': allowed: true, false or auto"):
        ProviderSettings.from_raw({"docker": {"enabled": "on"}}, {}, where="/etc/x.yaml")
    with pytest.raises(InvalidError, match=r"APOTHIC_DOCKER_REGISTRY='http://r:1' \(sets providers.docker.registry\)"):
        ProviderSettings.from_raw({}, {"APOTHIC_DOCKER_REGISTRY": "http://r:1"})
