"""Volumes and bucket mounts against real parts: the dev server, a control worker, process and
Docker containers, SeaweedFS for S3.

What one call writes under the mount path is there for a later call in another container, on
the same provider and across providers; the path the function opens is the user's own.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from temporalio.client import Client

import apothic
from apothic import App, Image, Volume
from apothic._secrets import encoded_forms

from ..conftest import ROOT, S3Server, start_worker, stop, wait_until

pytestmark = pytest.mark.usefixtures("control_worker")

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
# An image with a shell step: only the docker provider can run it.
DOCKER_IMAGE = Image.debian_slim(python_version=PY).run_commands("echo docker-only > /etc/apothic-docker-only")


def inside(path: str) -> dict:
    """What a function sees at ``path``: its real path, its files, and where it runs."""
    import os

    files = {}
    for folder, _, names in os.walk(path):
        for name in names:
            full = os.path.join(folder, name)
            with open(full, "rb") as f:
                files[os.path.relpath(full, path)] = f.read()
    return {"realpath": os.path.realpath(path), "files": files, "docker": os.path.exists("/etc/apothic-docker-only"),
            "pid": os.getpid()}


def test_a_default_volume_written_in_one_call_is_read_by_another_container_at_the_users_path(
        app_name: str, state_dir: Path) -> None:
    app = App(app_name)
    vol = Volume.from_name(f"{app_name}-vol", create_if_missing=True)

    @app.function(volumes={"/cache": vol})
    def write(data: bytes) -> dict:
        import os

        os.makedirs("/cache/models", exist_ok=True)
        with open("/cache/models/model.bin", "wb") as f:
            f.write(data)
        return {"pid": os.getpid(), "realpath": os.path.realpath("/cache/models/model.bin")}

    @app.function(volumes=[vol.mounted_at("/cache")])
    def read() -> dict:
        return inside("/cache")

    app.deploy()
    payload = os.urandom(100_000)
    wrote = write.remote(payload)
    got = read.remote()
    assert got["files"] == {"models/model.bin": payload}
    assert wrote["realpath"] == "/cache/models/model.bin" and got["realpath"] == "/cache"
    assert got["pid"] != wrote["pid"] and not got["docker"]
    # The files are the volume's folder on the control plane's host; the host's /cache is untouched.
    assert (state_dir / "volumes" / f"{app_name}-vol" / "models" / "model.bin").read_bytes() == payload
    assert not Path("/cache/models").exists()
    # The SDK reads the same files.
    assert [e.path for e in vol.listdir("/models")] == ["models/model.bin"]
    assert vol.read_file("/models/model.bin") == payload


def test_a_default_volume_is_shared_across_the_process_and_docker_providers(app_name: str, state_dir: Path) -> None:
    app = App(app_name)
    vol = Volume.from_name(f"{app_name}-vol", create_if_missing=True)

    @app.function(volumes={"/data": vol})
    def on_process(name: str, data: bytes) -> dict:
        with open(f"/data/{name}", "wb") as f:
            f.write(data)
        return inside("/data")

    @app.function(volumes={"/data": vol}, image=DOCKER_IMAGE, timeout_s=120)
    def on_docker(name: str, data: bytes) -> dict:
        with open(f"/data/{name}", "wb") as f:
            f.write(data)
        return inside("/data")

    app.deploy()
    first = on_process.remote("from-process.bin", b"p" * 1000)
    assert first["files"] == {"from-process.bin": b"p" * 1000} and not first["docker"]
    second = on_docker.remote("from-docker.bin", b"d" * 2000, timeout_s=600)
    assert second["docker"] and second["realpath"] == "/data"
    assert second["files"] == {"from-process.bin": b"p" * 1000, "from-docker.bin": b"d" * 2000}
    third = on_process.remote("again.bin", b"a")
    assert set(third["files"]) == {"from-process.bin", "from-docker.bin", "again.bin"}
    folder = state_dir / "volumes" / f"{app_name}-vol"
    assert sorted(p.name for p in folder.iterdir()) == ["again.bin", "from-docker.bin", "from-process.bin"]


# --- bucket mounts: a real S3 server (SeaweedFS) ---


def bucket_keys(s3_server: S3Server, prefix: str) -> dict[str, bytes]:
    client = s3_server.client()
    out = {}
    for obj in client.list_objects_v2(Bucket=s3_server.bucket, Prefix=prefix).get("Contents") or []:
        out[obj["Key"][len(prefix):]] = client.get_object(Bucket=s3_server.bucket, Key=obj["Key"])["Body"].read()
    return out


def histories_text(address: str, *workflow_ids: str) -> str:
    """The JSON of these workflows' histories (every run), to look for what must not be there."""
    async def fetch() -> str:
        client = await Client.connect(address)
        out = []
        for wid in workflow_ids:
            history = await client.get_workflow_handle(wid).fetch_history()
            out.append(history.to_json())
        return "\n".join(out)

    return asyncio.run(fetch())


@pytest.fixture
def bucket_secrets(s3_server: S3Server, app_name: str) -> tuple[str, str]:
    """Two secrets holding the S3 server's keys, one KEY=VALUE pair each."""
    access, secret = f"{app_name}-access"[:60], f"{app_name}-secret"[:60]
    apothic.Secret.objects.create(access, {"AWS_ACCESS_KEY_ID": s3_server.access_key}, overwrite=True)
    apothic.Secret.objects.create(secret, {"AWS_SECRET_ACCESS_KEY": s3_server.secret_key}, overwrite=True)
    return access, secret


def test_a_bucket_mount_shows_the_objects_and_the_writes_are_in_the_bucket_when_the_call_returns(
        s3_server: S3Server, bucket_secrets: tuple[str, str], app_name: str, temporal: str) -> None:
    client = s3_server.client()
    prefix = f"{app_name}/data/"
    for key, body in {"a.txt": b"alpha", "sub/b.bin": b"\x00" * 5000, "gone.txt": b"delete me"}.items():
        client.put_object(Bucket=s3_server.bucket, Key=prefix + key, Body=body)
    client.put_object(Bucket=s3_server.bucket, Key=f"{app_name}/outside.txt", Body=b"not under the prefix")
    app = App(app_name)
    bucket = apothic.CloudBucketMount(s3_server.bucket, access_key_secret=bucket_secrets[0],
                                      secret_key_secret=bucket_secrets[1], endpoint_url=s3_server.endpoint_url,
                                      prefix=f"{app_name}/data").mounted_at("/bucket")

    @app.function(volumes=[bucket])
    def work() -> dict:
        import os

        seen = inside("/bucket")
        with open("/bucket/result.txt", "w") as f:
            f.write("written in the function")
        with open("/bucket/a.txt", "ab") as f:
            f.write(b" and more")
        os.remove("/bucket/gone.txt")
        env = {k for k in os.environ if k.startswith("APOTHIC_MOUNT")}
        return {**seen, "env": sorted(env)}

    app.deploy()
    job = work.spawn()
    got = job.wait(timeout_s=300)
    assert got["files"] == {"a.txt": b"alpha", "sub/b.bin": b"\x00" * 5000, "gone.txt": b"delete me"}
    assert got["realpath"] == "/bucket" and got["env"] == []  # the keys never reach user code
    # In the bucket as soon as the call has returned.
    assert bucket_keys(s3_server, prefix) == {"a.txt": b"alpha and more", "sub/b.bin": b"\x00" * 5000,
                                              "result.txt": b"written in the function"}
    events = [e for e in job.watch(snapshot=True) if e.event == "volume"]
    assert [e.data["status"] for e in events] == ["ready", "synced"], events
    assert events[1].data["files"] == 2 and events[1].data["deleted"] == 1
    # The keys are in no event, log or workflow history.
    text = repr([e.data for e in events]) + job.logs() + histories_text(temporal, job.job_id)
    assert not [form for form in encoded_forms(s3_server.secret_key) if form in text]


def test_a_read_only_bucket_refuses_writes_and_leaves_the_bucket_as_it_was(
        s3_server: S3Server, bucket_secrets: tuple[str, str], app_name: str) -> None:
    client = s3_server.client()
    prefix = f"{app_name}/ro/"
    client.put_object(Bucket=s3_server.bucket, Key=prefix + "keep.txt", Body=b"as it was")
    app = App(app_name)
    bucket = apothic.CloudBucketMount(s3_server.bucket, access_key_secret=bucket_secrets[0],
                                      secret_key_secret=bucket_secrets[1], endpoint_url=s3_server.endpoint_url,
                                      prefix=f"{app_name}/ro", read_only=True)

    @app.function(volumes={"/ro": bucket})
    def try_writes() -> list[str]:
        import errno

        refused = []
        for attempt in (lambda: open("/ro/new.txt", "w"), lambda: open("/ro/keep.txt", "a"),
                        lambda: __import__("os").remove("/ro/keep.txt")):
            try:
                attempt()
            except OSError as e:
                refused.append(errno.errorcode[e.errno])
        return refused + [open("/ro/keep.txt").read()]

    app.deploy()
    assert try_writes.remote() == ["EROFS", "EROFS", "EROFS", "as it was"]
    assert bucket_keys(s3_server, prefix) == {"keep.txt": b"as it was"}


def test_a_missing_bucket_or_wrong_keys_fail_the_call_naming_the_bucket_and_the_fix(
        s3_server: S3Server, bucket_secrets: tuple[str, str], app_name: str, state_dir: Path) -> None:
    wrong = f"{app_name}-wrong"[:60]
    apothic.Secret.objects.create(wrong, {"KEY": "not-the-secret-key"}, overwrite=True)
    app = App(app_name)
    missing = apothic.CloudBucketMount("no-such-bucket-here", access_key_secret=bucket_secrets[0],
                                       secret_key_secret=bucket_secrets[1], endpoint_url=s3_server.endpoint_url)
    refused = apothic.CloudBucketMount(s3_server.bucket, access_key_secret=bucket_secrets[0],
                                       secret_key_secret=wrong, endpoint_url=s3_server.endpoint_url)

    @app.function(volumes={"/b": missing})
    def on_missing() -> None: ...

    @app.function(volumes={"/b": refused})
    def on_refused() -> None: ...

    app.deploy()
    with pytest.raises(apothic.PlacementError) as info:
        on_missing.remote(timeout_s=120)
    text = str(info.value)
    assert "'no-such-bucket-here'" in text and s3_server.endpoint_url in text and "does not exist" in text
    assert "Fix: create the bucket" in text
    with pytest.raises(apothic.PlacementError) as info:
        on_refused.remote(timeout_s=120)
    text = str(info.value)
    assert repr(s3_server.bucket) in text and "refused the credentials" in text and repr(wrong) in text
    assert "not-the-secret-key" not in text
    # Nothing half-mounted: no cache folder of these containers is left.
    wait_until(lambda: not any((state_dir / "mounts").glob("*")) if (state_dir / "mounts").exists() else True,
               timeout=30, what="the mount caches to be removed")


# --- cloud volumes (and default volumes on a rented machine): the blob store is S3 ---

S3_QUEUE = "apothic-control-volumes-s3"


@pytest.fixture(scope="module")
def s3_settings(temporal: str, s3_server: S3Server, worker_env: dict[str, str],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A control worker of its own (queue ``apothic-control-volumes-s3``) whose blob store is
    SeaweedFS; yields the environment a client needs to use the same settings."""
    folder = tmp_path_factory.mktemp("volumes-s3-worker")
    config = yaml.safe_load((ROOT / "temporal-dev.yaml").read_text())
    config["worker"]["control_task_queue"] = S3_QUEUE
    config["blobs"] = {"store": f"s3://{s3_server.bucket}/store", "s3_endpoint_url": s3_server.endpoint_url}
    (folder / "temporal-dev.yaml").write_text(yaml.safe_dump(config))
    env = {"APOTHIC_CONFIG": str(folder / "temporal-dev.yaml"), **s3_server.env()}
    proc: subprocess.Popen = start_worker({**worker_env, **env}, folder / "worker.log")
    try:
        yield env
    finally:
        stop(proc)


@pytest.fixture
def on_s3(s3_settings: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in s3_settings.items():
        monkeypatch.setenv(key, value)
    return s3_settings


def test_a_cloud_volume_is_the_same_files_from_process_and_docker(
        on_s3: dict[str, str], s3_server: S3Server, app_name: str) -> None:
    app = App(app_name)
    vol = Volume.cloud(f"{app_name}-cv"[:60], create_if_missing=True)

    @app.function(volumes={"/models": vol})
    def on_process(name: str, data: bytes) -> dict:
        with open(f"/models/{name}", "wb") as f:
            f.write(data)
        return inside("/models")

    @app.function(volumes={"/models": vol}, image=DOCKER_IMAGE, timeout_s=120)
    def on_docker(name: str, data: bytes) -> dict:
        import os

        os.makedirs("/models/deep/er", exist_ok=True)
        with open(f"/models/deep/er/{name}", "wb") as f:
            f.write(data)
        return inside("/models")

    app.deploy()
    first = on_process.remote("one.bin", b"1" * 3000)
    assert first["files"] == {"one.bin": b"1" * 3000} and not first["docker"]
    # In S3 when the call returns, under the volume's prefix of the store.
    assert bucket_keys(s3_server, f"store/volumes/{vol.name}/") == {"one.bin": b"1" * 3000}
    second = on_docker.remote("two.bin", b"2", timeout_s=600)
    assert second["docker"] and second["files"] == {"one.bin": b"1" * 3000, "deep/er/two.bin": b"2"}
    assert sorted(e.path for e in vol.listdir("/", recursive=True) if e.type == "file") == ["deep/er/two.bin",
                                                                                           "one.bin"]
    assert vol.read_file("deep/er/two.bin") == b"2"


def test_a_missing_volume_fails_the_deploy_naming_it_and_the_fix(on_s3: dict[str, str], app_name: str) -> None:
    for vol, fix in ((Volume.from_name(f"{app_name}-none"), "apothic volume create"),
                     (Volume.cloud(f"{app_name}-none"), "--backend cloud")):
        app = App(app_name)

        @app.function(volumes={"/v": vol})
        def f() -> None: ...

        with pytest.raises(apothic.NotFoundError) as info:
            app.deploy()
        text = str(info.value)
        assert repr(vol.name) in text and "does not exist" in text and fix in text and "create_if_missing=True" in text
        with pytest.raises(apothic.NotFoundError):
            apothic.RemoteFunction.from_name(app_name, "f").remote()  # nothing was deployed


def test_a_bucket_mount_in_docker_reads_writes_and_a_read_only_one_refuses(
        s3_server: S3Server, bucket_secrets: tuple[str, str], app_name: str) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_server.bucket, Key=f"{app_name}/rw/in.txt", Body=b"in")
    client.put_object(Bucket=s3_server.bucket, Key=f"{app_name}/ro/fixed.txt", Body=b"fixed")
    keys = dict(access_key_secret=bucket_secrets[0], secret_key_secret=bucket_secrets[1],
                endpoint_url=s3_server.endpoint_url)
    app = App(app_name)

    @app.function(image=DOCKER_IMAGE, timeout_s=120, volumes={
        "/rw": apothic.CloudBucketMount(s3_server.bucket, prefix=f"{app_name}/rw", **keys),
        "/ro": apothic.CloudBucketMount(s3_server.bucket, prefix=f"{app_name}/ro", read_only=True, **keys)})
    def work() -> dict:
        seen = {"rw": inside("/rw"), "ro": inside("/ro")}
        with open("/rw/out.txt", "w") as f:
            f.write("out")
        try:
            open("/ro/nope.txt", "w")
            seen["ro_write"] = "allowed"
        except OSError as e:
            seen["ro_write"] = type(e).__name__ + ":" + str(e.errno)
        return seen

    app.deploy()
    got = work.remote(timeout_s=600)
    assert got["rw"]["docker"] and got["rw"]["files"] == {"in.txt": b"in"} and got["ro"]["files"] == {
        "fixed.txt": b"fixed"}
    assert got["ro_write"] == "OSError:30"  # EROFS
    assert bucket_keys(s3_server, f"{app_name}/rw/") == {"in.txt": b"in", "out.txt": b"out"}
    assert bucket_keys(s3_server, f"{app_name}/ro/") == {"fixed.txt": b"fixed"}


def test_volumes_and_a_bucket_reach_a_rented_machine_through_s3(
        on_s3: dict[str, str], s3_server: S3Server, bucket_secrets: tuple[str, str], vast_sim, app_name: str,
        state_dir: Path) -> None:
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=f"{app_name}/in/object.txt", Body=b"from the bucket")
    vol = Volume.from_name(f"{app_name}-dv"[:60], create_if_missing=True)
    cloud = Volume.cloud(f"{app_name}-cv"[:60], create_if_missing=True)
    bucket = apothic.CloudBucketMount(s3_server.bucket, access_key_secret=bucket_secrets[0],
                                      secret_key_secret=bucket_secrets[1], endpoint_url=s3_server.endpoint_url,
                                      prefix=f"{app_name}/in")
    mounts = {"/cache": vol, "/cloud": cloud, "/bucket": bucket}
    app = App(app_name)

    @app.function(volumes=mounts)
    def here(name: str, data: bytes) -> dict:
        for root in ("/cache", "/cloud"):
            with open(f"{root}/{name}", "wb") as f:
                f.write(data)
        return {root: inside(root) for root in mounts}

    @app.function(volumes=mounts, gpu_count=1, timeout_s=120)
    def rented(name: str, data: bytes) -> dict:
        import os

        seen = {root: inside(root) for root in mounts}
        for root in ("/cache", "/cloud", "/bucket"):
            with open(f"{root}/{name}", "wb") as f:
                f.write(data)
        return {**seen, "marker": os.environ.get("VASTSIM_MARKER", "")}

    @app.function(volumes=mounts)
    def afterwards() -> dict:  # a container started after the rented machine's call
        return {root: inside(root) for root in mounts}

    app.deploy()
    here.remote("local.bin", b"L" * 100)
    got = rented.remote("remote.bin", b"R" * 200, timeout_s=900)
    assert got["marker"], "ran on the Vast simulator"
    assert got["/cache"]["files"] == {"local.bin": b"L" * 100} and got["/cache"]["realpath"] == "/cache"
    assert got["/cloud"]["files"] == {"local.bin": b"L" * 100}
    assert got["/bucket"]["files"] == {"object.txt": b"from the bucket"}
    # The bucket and the cloud volume have the rented machine's writes when the call returns; the
    # default volume's folder gets them back from the S3 copy within seconds.
    assert bucket_keys(s3_server, f"{app_name}/in/") == {"object.txt": b"from the bucket", "remote.bin": b"R" * 200}
    assert bucket_keys(s3_server, f"store/volumes/{cloud.name}/")["remote.bin"] == b"R" * 200
    folder = state_dir / "volumes" / vol.name
    wait_until(lambda: (folder / "remote.bin").is_file(), timeout=20, what="the rented machine's write in the folder")
    back = afterwards.remote()
    assert back["/cache"]["files"]["remote.bin"] == b"R" * 200 and back["/cloud"]["files"]["remote.bin"] == b"R" * 200


def test_a_vast_local_volume_holds_later_containers_to_its_machine_and_says_so_when_it_is_gone(
        vast_sim, app_name: str) -> None:
    vol = Volume.create(f"{app_name}-vl"[:60], backend="vast_local")
    app = App(app_name)

    @app.function(volumes={"/fast": vol}, gpu_count=1, timeout_s=120)
    def step(name: str, data: bytes) -> dict:
        import os

        seen = inside("/fast")
        with open(f"/fast/{name}", "wb") as f:
            f.write(data)
        return {**seen, "instance": int(os.environ["VASTSIM_MARKER"].rsplit(":", 1)[1])}

    def machine_of(instance_id: int) -> int:
        state = vast_sim.state()
        return next(i["machine_id"] for i in state["instances"] + state["destroyed"] if i["id"] == instance_id)

    def destroyed(instance_id: int) -> bool:
        return any(i["id"] == instance_id for i in vast_sim.state()["destroyed"])

    app.deploy()
    first = step.remote("one.bin", b"1" * 500, timeout_s=900)
    assert first["files"] == {} and first["realpath"] == "/fast"
    machine = machine_of(first["instance"])
    wait_until(lambda: destroyed(first["instance"]), timeout=120, what="the first instance to be released")
    second = step.remote("two.bin", b"2", timeout_s=900)
    assert second["instance"] != first["instance"] and machine_of(second["instance"]) == machine
    assert second["files"] == {"one.bin": b"1" * 500}  # the volume's files stayed on the machine
    volumes = [v for v in vast_sim.state()["volumes"] if v["name"].startswith("apothic_")
               and v["machine_id"] == machine]
    assert len(volumes) == 1
    wait_until(lambda: destroyed(second["instance"]), timeout=120, what="the second instance to be released")
    vast_sim.host_dies(machine_id=machine)
    with pytest.raises(apothic.PlacementError) as info:
        step.remote("three.bin", b"3", timeout_s=300)
    text = str(info.value)
    assert f"vast_local volume {vol.name!r}" in text and f"machine {machine}" in text and "gone, or full" in text
    assert "apothic volume delete" in text


def test_a_volume_a_provider_cannot_mount_is_refused_with_the_reason_and_nothing_is_left_mounted(
        app_name: str, state_dir: Path) -> None:
    vol = Volume.from_name(f"{app_name}-v"[:60], create_if_missing=True)
    venv = str(Path(sys.executable).parent.parent)  # the control worker's own interpreter lives here
    app = App(app_name)

    @app.function(volumes={"/cache": vol}, gpu_count=1)
    def rented_without_s3() -> None: ...

    @app.function(volumes={venv: vol})
    def over_the_runtime() -> None: ...

    app.deploy()
    with pytest.raises(apothic.PlacementError) as info:
        rented_without_s3.remote(timeout_s=120)
    text = str(info.value)
    assert f"vast not used: volume {vol.name!r} reaches a rented machine through the S3 store" in text
    assert "Fix: set blobs.store (APOTHIC_BLOB_STORE) to an s3:// bucket" in text
    with pytest.raises(apothic.PlacementError) as info:
        over_the_runtime.remote(timeout_s=120)
    text = str(info.value)
    assert f"mount path {venv} would hide" in text and "Fix: mount it elsewhere" in text
    assert not os.listdir(state_dir / "volumes" / vol.name)
    caches = state_dir / "mounts"
    assert not caches.exists() or not list(caches.iterdir())
