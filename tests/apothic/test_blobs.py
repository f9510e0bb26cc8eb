"""The blob store: large pickles travel as references to a folder or to S3 (a real SeaweedFS)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from apothic._data._blobs import LOCAL_DRIVER, S3_DRIVER, blob_store, load, offload
from apothic._control._config import BlobSettings, Settings, load_settings
from apothic._data._serialization import CloudPickled
from apothic.exceptions import InvalidError

from ..conftest import S3Server


@pytest.fixture(autouse=True)
def fresh_stores() -> Iterator[None]:
    blob_store.cache_clear()  # stores (and their boto3 clients) are cached per settings
    yield
    blob_store.cache_clear()


def local(tmp_path: Path, threshold: int = 1000) -> BlobSettings:
    return BlobSettings(store=str(tmp_path / "blobs"), threshold_bytes=threshold)


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def test_a_small_value_stays_inline(tmp_path: Path) -> None:
    value = CloudPickled.dump([1, 2, 3], kind="args")
    assert await offload(value, local(tmp_path)) is value
    assert not (tmp_path / "blobs").exists()
    assert await load(value, local(tmp_path)) == [1, 2, 3]


async def test_a_large_value_travels_as_a_reference_to_a_content_addressed_file(tmp_path: Path) -> None:
    settings = local(tmp_path)
    data = os.urandom(3_000_000)
    value = CloudPickled.dump(data, kind="result")
    ref = await offload(value, settings)
    assert ref.data == "" and ref.size == value.size and ref.sha256 == value.sha256
    assert ref.blob is not None and ref.blob["driver"] == LOCAL_DRIVER
    assert ref.blob["key"] == f"v0/d/sha256/{ref.blob['hash_value']}"
    # The reference is small: this is what a workflow history holds.
    assert len(str(dataclasses.asdict(ref))) < 500
    [stored] = files(tmp_path / "blobs")
    assert stored == tmp_path / "blobs" / ref.blob["key"]
    assert await load(ref, settings) == data
    # Another process (a fresh store on the same folder) reads it too.
    blob_store.cache_clear()
    assert await load(ref, settings) == data
    with pytest.raises(ValueError, match="blob store"):
        ref.load()


async def test_the_same_bytes_are_stored_once(tmp_path: Path) -> None:
    settings = local(tmp_path)
    value = CloudPickled.dump(b"x" * 10_000, kind="args")
    first = await offload(value, settings)
    [path] = files(tmp_path / "blobs")
    mtime = path.stat().st_mtime_ns
    second = await offload(value, settings)  # a retry, or the same argument again
    assert second.blob == first.blob
    assert files(tmp_path / "blobs") == [path] and path.stat().st_mtime_ns == mtime
    assert await offload(first, settings) is first  # already a reference


async def test_threshold_zero_sends_everything_and_force_sends_small_values(tmp_path: Path) -> None:
    assert (await offload(CloudPickled.dump(None, kind="args"), local(tmp_path, threshold=0))).blob
    assert (await offload(CloudPickled.dump(1, kind="args"), local(tmp_path), force=True)).blob


async def test_a_corrupt_or_missing_blob_is_refused(tmp_path: Path) -> None:
    settings = local(tmp_path)
    ref = await offload(CloudPickled.dump(b"y" * 5000, kind="result"), settings)
    path = tmp_path / "blobs" / ref.blob["key"]  # type: ignore[index]
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    with pytest.raises(InvalidError, match="corrupt"):
        await load(ref, settings)
    path.unlink()
    with pytest.raises(InvalidError, match=r"could not read the result .* blob store"):
        await load(ref, settings)
    escaping = dataclasses.replace(ref, blob={**ref.blob, "key": "../../etc/passwd"})  # type: ignore[arg-type]
    with pytest.raises(InvalidError, match="leaves the store folder"):
        await load(escaping, settings)


async def test_a_reference_from_another_kind_of_store_is_refused(tmp_path: Path) -> None:
    ref = await offload(CloudPickled.dump(b"z" * 5000, kind="args"), local(tmp_path))
    other = dataclasses.replace(ref, blob={**ref.blob, "driver": S3_DRIVER})  # type: ignore[arg-type]
    with pytest.raises(InvalidError, match="'aws.s3driver' store but this process uses 'apothic.local'"):
        await load(other, local(tmp_path))


async def test_an_unwritable_folder_fails_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    settings = BlobSettings(store=str(tmp_path / "file" / "blobs"), threshold_bytes=0)
    with pytest.raises(InvalidError, match=r"could not write the args .* Fix: check APOTHIC_BLOB_STORE"):
        await offload(CloudPickled.dump(1, kind="args"), settings)


# --- S3 (SeaweedFS) ---


def s3(server: S3Server, prefix: str = "apothic/blobs", threshold: int = 1000) -> BlobSettings:
    return BlobSettings(
        store=f"s3://{server.bucket}/{prefix}", threshold_bytes=threshold, s3_endpoint_url=server.endpoint_url
    )


@pytest.fixture
def aws_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


async def test_s3_round_trip_under_the_prefix(aws_env: S3Server) -> None:
    settings = s3(aws_env, prefix="round-trip/p")
    data = os.urandom(6_000_000)
    ref = await offload(CloudPickled.dump(data, kind="args"), settings)
    assert ref.blob is not None and ref.blob["driver"] == S3_DRIVER
    assert ref.blob["bucket"] == f"{aws_env.bucket}/round-trip/p"
    assert ref.blob["key"] == f"v0/d/sha256/{ref.blob['hash_value']}"
    listed = aws_env.client().list_objects_v2(Bucket=aws_env.bucket, Prefix="round-trip/")
    assert [o["Key"] for o in listed["Contents"]] == [f"round-trip/p/{ref.blob['key']}"]
    blob_store.cache_clear()  # as another process would
    assert await load(ref, settings) == data


async def test_s3_stores_the_same_bytes_once(aws_env: S3Server) -> None:
    settings = s3(aws_env, prefix="dedup")
    value = CloudPickled.dump(b"q" * 50_000, kind="result")
    first = await offload(value, settings)
    client = aws_env.client()
    before = client.head_object(Bucket=aws_env.bucket, Key=f"dedup/{first.blob['key']}")  # type: ignore[index]
    second = await offload(value, settings)
    after = client.head_object(Bucket=aws_env.bucket, Key=f"dedup/{first.blob['key']}")  # type: ignore[index]
    assert second.blob == first.blob
    assert after["LastModified"] == before["LastModified"] and after["ETag"] == before["ETag"]
    assert client.list_objects_v2(Bucket=aws_env.bucket, Prefix="dedup/")["KeyCount"] == 1


async def test_s3_without_the_bucket_or_with_bad_credentials_fails_with_the_fix(
    aws_env: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = CloudPickled.dump(b"w" * 5000, kind="args")
    missing = dataclasses.replace(s3(aws_env), store="s3://no-such-bucket/x")
    with pytest.raises(InvalidError, match=r"could not write the args .*s3://no-such-bucket/x.*NoSuchBucket"):
        await offload(value, missing)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    blob_store.cache_clear()
    with pytest.raises(InvalidError, match="could not write the args"):
        await offload(value, s3(aws_env))


# --- settings ---


def write_config(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "temporal-dev.yaml"
    path.write_text(text)
    monkeypatch.setenv("APOTHIC_CONFIG", str(path))
    for key in ("APOTHIC_BLOB_STORE", "APOTHIC_BLOB_THRESHOLD_BYTES", "APOTHIC_BLOB_S3_ENDPOINT_URL", "APOTHIC_BLOB_S3_REGION"):
        monkeypatch.delenv(key, raising=False)


def test_the_default_store_is_a_folder_under_apothic_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APOTHIC_HOME", str(tmp_path / "home"))
    write_config(tmp_path, "server: {port: 7233}\n", monkeypatch)
    settings = load_settings()
    assert settings.blobs.threshold_bytes == 256 * 1024
    env = settings.connection_env()
    assert env["APOTHIC_BLOB_STORE"] == str(tmp_path / "home" / "blobs")
    assert env["APOTHIC_BLOB_THRESHOLD_BYTES"] == str(256 * 1024)
    assert Settings("a:1", "default", False).blobs.location() == str(tmp_path / "home" / "blobs")


def test_the_blobs_section_and_its_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APOTHIC_HOME", str(tmp_path / "home"))
    write_config(tmp_path, "blobs:\n  store: big\n  threshold_bytes: 1000\n", monkeypatch)
    blobs = load_settings().blobs
    assert blobs.store == str(tmp_path / "home" / "big") and blobs.threshold_bytes == 1000
    monkeypatch.setenv("APOTHIC_BLOB_STORE", "s3://bucket/some/prefix/")
    monkeypatch.setenv("APOTHIC_BLOB_THRESHOLD_BYTES", "0")
    monkeypatch.setenv("APOTHIC_BLOB_S3_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id")
    settings = load_settings()
    assert settings.blobs.s3_bucket() == "bucket/some/prefix" and settings.blobs.threshold_bytes == 0
    # A container started by a worker with these settings gets the same store and credentials.
    env = settings.connection_env()
    assert env["APOTHIC_BLOB_STORE"] == "s3://bucket/some/prefix/"
    assert env["APOTHIC_BLOB_S3_ENDPOINT_URL"] == "http://127.0.0.1:1"
    assert env["AWS_ACCESS_KEY_ID"] == "key-id"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert load_settings().blobs == settings.blobs


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("blobs:\n  threshold_bytes: 3000000\n", r"threshold_bytes=3000000: allowed: an integer from 0 to 1400000"),
        ("blobs:\n  threshold_bytes: -1\n", "allowed: an integer from 0"),
        ("blobs:\n  threshold_bytes: lots\n", "allowed: an integer from 0"),
        ("blobs:\n  store: gs://bucket\n", r"store='gs://bucket': allowed: a folder, or s3://bucket/prefix"),
        ("blobs:\n  store: s3:///prefix\n", "allowed: a folder, or s3://bucket/prefix"),
        ("blobs:\n  bucket: x\n", r"unknown key\(s\) \['bucket'\] in 'blobs'"),
    ],
)
def test_bad_blob_settings_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yaml_text: str, message: str
) -> None:
    write_config(tmp_path, yaml_text, monkeypatch)
    with pytest.raises(InvalidError, match=message):
        load_settings()
