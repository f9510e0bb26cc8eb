"""The volume registry, the SDK's volume methods, the S3 sync and the checks at decoration and
deploy: against real folders and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from apothic.placement.providers.process import Bind, MountRefused, mount_command

import apothic
from apothic import App, Image, Volume
from apothic._contracts import DeployFunction, DeployRequest, FunctionSpec, MountSpec
from apothic._control._config import load_settings
from apothic._data._serialization import CloudPickled
from apothic._volumes._deploy import check_deploy_volumes, mount_specs
from apothic._volumes._registry import Registry
from apothic._volumes._s3 import S3Place, check_bucket
from apothic._volumes._sync import Mirror, download, scan, upload_changes
from apothic.exceptions import InvalidError, NotFoundError, NotSupportedError

from ..conftest import S3Server


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh APOTHIC_HOME with a folder blob store."""
    monkeypatch.setenv("APOTHIC_HOME", str(tmp_path / "home"))
    for key in ("APOTHIC_BLOB_STORE", "APOTHIC_BLOB_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path / "home"


@pytest.fixture
def s3_home(home: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """The blob store in S3 under a prefix of this test's own; returns that prefix."""
    prefix = f"unit-{request.node.name[:40]}-{os.getpid()}-{time.monotonic_ns()}"
    monkeypatch.setenv("APOTHIC_BLOB_STORE", f"s3://{s3_server.bucket}/{prefix}")
    monkeypatch.setenv("APOTHIC_BLOB_S3_ENDPOINT_URL", s3_server.endpoint_url)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return prefix


def place(s3_server: S3Server, prefix: str, **kw: object) -> S3Place:
    return S3Place(bucket=s3_server.bucket, prefix=prefix, endpoint_url=s3_server.endpoint_url,
                   access_key=s3_server.access_key, secret_key=s3_server.secret_key, **kw)  # type: ignore[arg-type]


# --- the registry ---


def test_the_registry_creates_once_even_when_creators_race(home: Path) -> None:
    registry = Registry()
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(registry.create("shared")[1])) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert (home / "volumes" / "shared").is_dir()
    assert [r.name for r in registry.list()] == ["shared"]
    with pytest.raises(InvalidError, match="'shared' is a 'default' volume, not a 'vast_local' one"):
        registry.create("shared", "vast_local")
    registry.create("fast", "vast_local")
    assert not (home / "volumes" / "fast").exists()  # its files are on the rented machine
    assert registry.update("fast", volume_id=7, machine_id=9).vast == {"volume_id": 7, "machine_id": 9}
    assert registry.get("fast").vast["machine_id"] == 9  # type: ignore[union-attr]
    with pytest.raises(InvalidError, match="volume name 'a b' is not valid"):
        registry.create("a b")
    registry.delete("shared")
    assert registry.get("shared") is None and not (home / "volumes" / "shared").exists()
    with pytest.raises(NotFoundError, match="apothic volume create shared"):
        registry.require("shared")


def test_the_control_plane_marks_the_registry_it_uses(home: Path) -> None:
    registry = Registry()
    assert not registry.serves("127.0.0.1:7233", "default")
    registry.mark_control_plane("127.0.0.1:7233", "default")
    assert registry.serves("127.0.0.1:7233", "default") and not registry.serves("127.0.0.1:7233", "other")


# --- the SDK ---


def test_the_file_methods_of_a_default_volume(home: Path, tmp_path: Path) -> None:
    missing = Volume.from_name("absent")
    with pytest.raises(NotFoundError, match="volume 'absent' does not exist.*create_if_missing=True"):
        missing.listdir("/")
    vol = Volume.from_name("files", create_if_missing=True)
    assert vol.listdir("/") == []
    assert vol.write_file("/a/b/c.txt", b"hello") == 5
    local = tmp_path / "local.bin"
    local.write_bytes(b"\x01" * 300)
    vol.put_file(local, "/local.bin")
    vol.put_file(io.BytesIO(b"from a file object"), "obj.txt")
    with pytest.raises(InvalidError, match="exists in volume 'files'.*force=True"):
        vol.put_file(local, "/local.bin", force=False)
    tree = tmp_path / "tree"
    (tree / "x").mkdir(parents=True)
    (tree / "x" / "y.txt").write_text("y")
    with vol.batch_upload() as batch:
        batch.put_directory(tree, "/tree")
        batch.put_file(local, "/again.bin")
    entries = {e.path: e for e in vol.listdir("/", recursive=True)}
    assert {p for p, e in entries.items() if e.type == "file"} == {"a/b/c.txt", "local.bin", "obj.txt",
                                                                   "tree/x/y.txt", "again.bin"}
    assert entries["a"].type == "directory" and entries["local.bin"].size == 300
    assert vol.read_file("a/b/c.txt") == b"hello"
    buf = io.BytesIO()
    assert vol.read_file_into_fileobj("/local.bin", buf) == 300 and buf.getvalue() == b"\x01" * 300
    with pytest.raises(InvalidError, match="contains '..'"):
        vol.read_file("/a/../../etc/passwd")
    with pytest.raises(InvalidError, match="is a directory.*recursive=True"):
        vol.remove_file("/a")
    assert vol.remove_file("/a", recursive=True) == 1
    with pytest.raises(NotFoundError, match="no such file or directory '/a'"):
        vol.listdir("/a")
    assert (home / "volumes" / "files" / "obj.txt").read_bytes() == b"from a file object"
    assert [v.name for v in Volume.list()] == ["files"]
    Volume.delete("files")
    assert Volume.list() == [] and not (home / "volumes" / "files").exists()


def test_the_aio_twins_of_the_file_methods(home: Path) -> None:
    import asyncio

    vol = Volume.from_name("twins", create_if_missing=True)

    async def run() -> bytes:
        await vol.aio.write_file("t.txt", b"async")
        return await vol.aio.read_file("t.txt")

    assert asyncio.run(run()) == b"async"


def test_a_cloud_volume_lives_in_the_s3_store(s3_home: str, s3_server: S3Server) -> None:
    vol = Volume.cloud("shared-models", create_if_missing=True)
    vol.write_file("/m/weights.bin", b"w" * 1000)
    vol.write_file("/m/deep/more.bin", b"m")
    vol.write_file("/top.txt", b"t")
    keys = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=s3_home)["Contents"]}
    assert f"{s3_home}/volumes/shared-models/m/weights.bin" in keys
    assert f"{s3_home}/volume-index/shared-models.json" in keys
    assert [(e.path, e.type) for e in vol.listdir("/")] == [("m", "directory"), ("top.txt", "file")]
    assert [(e.path, e.type) for e in vol.listdir("/m")] == [("m/deep", "directory"), ("m/weights.bin", "file")]
    assert {e.path for e in vol.listdir("/", recursive=True)} == {"m", "m/deep", "m/deep/more.bin", "m/weights.bin",
                                                                   "top.txt"}
    assert vol.read_file("m/weights.bin") == b"w" * 1000
    with pytest.raises(NotFoundError, match="no such file '/nope'"):
        vol.read_file("nope")
    with pytest.raises(InvalidError, match="is a directory"):
        vol.remove_file("/m")
    assert vol.remove_file("/m", recursive=True) == 2
    listed = {v.name: v for v in Volume.list()}
    assert listed["shared-models"].backend == "cloud" and s3_server.endpoint_url in listed["shared-models"].location
    with pytest.raises(InvalidError, match="exists already as a 'cloud' volume"):
        apothic._volumes._sdk.create("shared-models", "default")
    Volume.delete("shared-models")
    with pytest.raises(NotFoundError, match="cloud volume 'shared-models' does not exist"):
        Volume.cloud("shared-models").listdir("/")


def test_a_cloud_volume_needs_an_s3_store(home: Path) -> None:
    with pytest.raises(InvalidError) as info:
        Volume.cloud("portable", create_if_missing=True).listdir("/")
    text = str(info.value)
    assert "cloud volume 'portable' needs an S3 store" in text and "blobs.store" in text and "APOTHIC_BLOB_STORE" in text


def test_a_vast_local_volume_is_reached_only_by_its_functions(home: Path) -> None:
    with pytest.raises(NotSupportedError, match="on its rented machine only.*mounts the volume"):
        Volume.create("fast", backend="vast_local").listdir("/")


# --- the sync of a folder with S3 ---


def test_a_folder_follows_a_prefix_and_uploads_what_changed(s3_server: S3Server, tmp_path: Path) -> None:
    p = place(s3_server, f"sync-{time.monotonic_ns()}")
    client = s3_server.client()
    # (SeaweedFS refuses keys with '..' itself; a key that is also a folder of others is the case here)
    for key, body in {"a.txt": b"a", "d/b.txt": b"b", "d/e/c.txt": b"c", "clash": b"1",
                      "clash/inner": b"2", "folder/": b""}.items():
        client.put_object(Bucket=p.bucket, Key=f"{p.prefix}/{key}", Body=body)
    root = tmp_path / "cache"
    snap, stats = download(p, root, "test")
    assert set(snap) == {"a.txt", "d/b.txt", "d/e/c.txt", "clash/inner"}
    assert stats.skipped == ["clash"] and stats.files == 4
    (root / "a.txt").write_bytes(b"A")  # same size: seen by its time
    os.replace(root / "d" / "b.txt", root / "d" / "moved.txt")
    (root / "new").mkdir()
    (root / "new" / "n.bin").write_bytes(b"n" * 10)
    (root / "empty").mkdir()  # S3 has no folders: nothing to upload
    snap, stats = upload_changes(p, root, snap, "test")
    assert (stats.files, stats.deleted) == (3, 1)
    keys = {o["Key"][len(p.prefix) + 1:] for o in client.list_objects_v2(Bucket=p.bucket, Prefix=p.prefix + "/")["Contents"]}
    assert keys == {"a.txt", "d/moved.txt", "d/e/c.txt", "new/n.bin", "clash", "clash/inner", "folder/"}
    assert client.get_object(Bucket=p.bucket, Key=f"{p.prefix}/a.txt")["Body"].read() == b"A"
    again, stats = upload_changes(p, root, snap, "test")
    assert (stats.files, stats.deleted) == (0, 0) and again == scan(root)
    big = os.urandom(9 * 1024 * 1024)  # over SMALL_BYTES: moved in parallel parts both ways
    (root / "big.bin").write_bytes(big)
    upload_changes(p, root, again, "test")
    fresh, _ = download(p, tmp_path / "fresh", "test")
    assert (tmp_path / "fresh" / "big.bin").read_bytes() == big and set(fresh) == set(scan(root))


def test_a_mirror_pushes_a_folder_and_brings_back_what_changed_in_s3(s3_server: S3Server, tmp_path: Path) -> None:
    p = place(s3_server, f"mirror-{time.monotonic_ns()}")
    folder = tmp_path / "vol"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    (folder / "sub").mkdir()
    (folder / "sub" / "x.txt").write_text("x")
    manifest = tmp_path / "manifest.json"
    mirror = Mirror(folder, p, "test volume", manifest)
    assert mirror.push().files == 2
    assert mirror.push().files == 0  # nothing changed
    client = s3_server.client()
    client.put_object(Bucket=p.bucket, Key=f"{p.prefix}/remote.txt", Body=b"from elsewhere")
    client.delete_object(Bucket=p.bucket, Key=f"{p.prefix}/sub/x.txt")
    stats = mirror.pull()
    assert (stats.files, stats.deleted) == (1, 1)
    assert (folder / "remote.txt").read_bytes() == b"from elsewhere" and not (folder / "sub" / "x.txt").exists()
    assert mirror.push().files == 0  # what was pulled is not pushed back
    (folder / "keep.txt").write_text("KEEP")  # changed here meanwhile, same size
    assert mirror.pull().files == 0 and mirror.push().files == 1  # a pull does not hide a local change
    other = Mirror(folder, p, "test volume", manifest)  # another worker takes it up
    client.put_object(Bucket=p.bucket, Key=f"{p.prefix}/later.txt", Body=b"later")
    other.resume()
    assert other.pull().files == 1 and (folder / "later.txt").read_bytes() == b"later"
    assert client.get_object(Bucket=p.bucket, Key=f"{p.prefix}/keep.txt")["Body"].read() == b"KEEP"


def test_a_bucket_check_names_the_bucket_the_endpoint_and_the_fix(s3_server: S3Server) -> None:
    check_bucket(place(s3_server, ""), "bucket mount")
    with pytest.raises(NotFoundError) as info:
        check_bucket(S3Place(bucket="no-such-bucket-x", endpoint_url=s3_server.endpoint_url,
                             access_key=s3_server.access_key, secret_key=s3_server.secret_key), "bucket mount")
    assert "bucket 'no-such-bucket-x' at " + s3_server.endpoint_url in str(info.value)
    assert "Fix: create the bucket" in str(info.value)
    with pytest.raises(InvalidError) as info:
        check_bucket(S3Place(bucket=s3_server.bucket, endpoint_url=s3_server.endpoint_url, access_key="wrong",
                             secret_key="wrong"), "bucket mount", ("ACCESS", "SECRET"))
    assert "refused the credentials" in str(info.value) and "'ACCESS' and 'SECRET'" in str(info.value)
    with pytest.raises(InvalidError, match="cannot be reached.*Fix: check endpoint_url"):
        check_bucket(S3Place(bucket="b-x", endpoint_url="http://127.0.0.1:9", access_key="a", secret_key="b"), "x")


# --- decoration, the spec and deploy ---


def test_a_mount_at_or_above_the_images_workdir_is_refused() -> None:
    app = App("workdir-check")
    image = Image.debian_slim().workdir("/app/src")
    for path in ("/app/src", "/app"):
        with pytest.raises(InvalidError) as info:

            @app.function(image=image, volumes={path: Volume.from_name("v")})
            def f() -> None: ...

        assert "it would hide the image's workdir '/app/src'" in str(info.value)

    @app.function(image=image, volumes={"/app/src/data": Volume.from_name("v")})
    def inside_is_fine() -> None: ...


def test_the_spec_carries_each_mount_with_its_options() -> None:
    bucket = apothic.CloudBucketMount("team", access_key_secret="A", secret_key_secret="B", read_only=True,
                                      prefix="p")
    specs = mount_specs({"/z": Volume.from_name("v", create_if_missing=True), "/b": bucket,
                         "/c": Volume.cloud("c"), "/f": Volume.create("f", backend="vast_local")})
    assert [m.path for m in specs] == ["/b", "/c", "/f", "/z"]
    assert specs[0] == MountSpec(path="/b", kind="bucket", name="team", read_only=True,
                                 options={"access_key_secret": "A", "secret_key_secret": "B", "prefix": "p"})
    assert specs[1].backend == "cloud" and specs[1].options == {}
    assert specs[2].options == {"create_if_missing": True} and specs[3].options == {"create_if_missing": True}
    assert mount_specs([Volume.from_name("v").mounted_at("/v")]) == [MountSpec(path="/v", kind="volume", name="v")]


def _request(*mounts: MountSpec) -> DeployRequest:
    code = CloudPickled.dump(None, kind="code")
    return DeployRequest(app="a", functions=[DeployFunction(FunctionSpec(name="f", mounts=list(mounts)), code)],
                         code_hash="h")


def test_deploy_checks_volumes_in_the_control_planes_registry_only(home: Path, monkeypatch) -> None:
    import asyncio

    monkeypatch.setenv("APOTHIC_TEMPORAL_ADDRESS", "127.0.0.1:1")  # an external cluster, not this host's
    settings = load_settings()
    missing = MountSpec(path="/v", kind="volume", name="nowhere")
    assert asyncio.run(check_deploy_volumes(settings, _request(missing))) == []  # not this host's: checked at start
    Registry().mark_control_plane(settings.address, settings.namespace)
    with pytest.raises(NotFoundError, match="deploying a.f: volume 'nowhere' .mounted at /v. does not exist"):
        asyncio.run(check_deploy_volumes(settings, _request(missing)))
    made = MountSpec(path="/v", kind="volume", name="made", options={"create_if_missing": True})
    assert asyncio.run(check_deploy_volumes(settings, _request(made))) == ["made"]
    assert asyncio.run(check_deploy_volumes(settings, _request(made))) == []


# --- the process provider's mount namespace ---


def test_a_process_mount_over_what_the_runtime_needs_or_over_a_file_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    python_home = str(Path(sys.executable).resolve().parents[1])
    with pytest.raises(MountRefused, match=f"mount path {python_home} would hide"):
        mount_command([Bind(str(src), python_home)], ["python"], [sys.executable])
    (tmp_path / "file").write_text("x")
    with pytest.raises(MountRefused, match="cannot be a directory on this host"):
        mount_command([Bind(str(src), str(tmp_path / "file"))], ["python"], [])
    argv = mount_command([Bind(str(src), str(tmp_path / "target"), read_only=True)], ["python", "-V"], [])
    assert argv[:3] == ["unshare", "--mount", "--propagation"] and argv[-3:] == ["--", "python", "-V"]
