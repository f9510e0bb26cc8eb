"""Large values travel by reference: the blob store.

A :class:`~apothic._data._serialization.CloudPickled` whose pickle is at least
``BlobSettings.threshold_bytes`` long is written to the blob store by the process that made
it (the client for arguments, the container for results) and travels as a reference
(``CloudPickled.blob``, a few hundred bytes): workflow histories, the control worker and the
map's state never hold the bytes. The process that unpickles it (the container, the client)
reads it back.

The stores are Temporal's external-storage drivers (``temporalio.converter.StorageDriver``):
Temporal's own ``S3StorageDriver`` over boto3, and :class:`LocalStorageDriver` for a folder
(default ``$APOTHIC_HOME/blobs``, which every process on one host shares). Both key a blob by
the sha256 of its bytes (``v0/d/sha256/<hex>``), skip the write when that key exists (a retry
or a repeated argument costs no second upload) and check the hash when reading.

Limits: blobs are never deleted (expire them with a bucket lifecycle rule, or delete old files
of the folder); a folder store serves one host only, so containers on other machines need S3.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.contrib.aws.s3driver import S3StorageDriver, S3StorageDriverClient
from temporalio.converter import (
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

from .._control._config import BlobSettings
from ..exceptions import InvalidError
from ._serialization import CloudPickled

# What a stored payload holds: the raw cloudpickle bytes.
ENCODING = b"binary/cloudpickle"
# S3 takes at most 5 GiB in one PUT; memory is the practical limit long before.
MAX_BLOB_BYTES = 5 * 1024**3
LOCAL_DRIVER = "apothic.local"
S3_DRIVER = "aws.s3driver"  # the name Temporal's S3StorageDriver stores (never rename)


class LocalStorageDriver(StorageDriver):
    """Payloads as files under ``root`` (``v0/d/sha256/<hex>``), written atomically."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def name(self) -> str:
        return LOCAL_DRIVER

    def type(self) -> str:
        return LOCAL_DRIVER

    def _write(self, payload: Payload) -> StorageDriverClaim:
        data = payload.SerializeToString()
        digest = hashlib.sha256(data).hexdigest()
        key = f"v0/d/sha256/{digest}"
        path = self.root / key
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        return StorageDriverClaim({"key": key, "hash_algorithm": "sha256", "hash_value": digest})

    def _read(self, claim: StorageDriverClaim) -> Payload:
        key = claim.claim_data["key"]
        path = self.root / key
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise ValueError(f"blob key {key!r} leaves the store folder {self.root}")
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != claim.claim_data.get("hash_value"):
            raise ValueError(f"blob {path} is corrupt: its sha256 is {digest}, expected {claim.claim_data.get('hash_value')}")
        payload = Payload()
        payload.ParseFromString(data)
        return payload

    async def store(self, context: StorageDriverStoreContext, payloads: Sequence[Payload]) -> list[StorageDriverClaim]:
        return await asyncio.to_thread(lambda: [self._write(p) for p in payloads])

    async def retrieve(self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]) -> list[Payload]:
        return await asyncio.to_thread(lambda: [self._read(c) for c in claims])


class Boto3S3Client(S3StorageDriverClient):
    """``S3StorageDriverClient`` over a (thread-safe) boto3 client, calls in threads.

    A ``bucket`` of the form ``name/prefix`` puts every key under ``prefix/`` in bucket
    ``name``, so that the driver's claims (bucket, key) name the object completely.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    @staticmethod
    def _where(bucket: str, key: str) -> tuple[str, str]:
        name, _, prefix = bucket.partition("/")
        return name, f"{prefix}/{key}" if prefix else key

    def describe(self) -> Mapping[str, str]:
        meta = self._client.meta
        return {"endpoint": meta.endpoint_url, **({"region": meta.region_name} if meta.region_name else {})}

    async def put_object(self, *, bucket: str, key: str, data: bytes) -> None:
        name, key = self._where(bucket, key)
        await asyncio.to_thread(self._client.put_object, Bucket=name, Key=key, Body=data)

    async def object_exists(self, *, bucket: str, key: str) -> bool:
        from botocore.exceptions import ClientError

        name, key = self._where(bucket, key)
        try:
            await asyncio.to_thread(self._client.head_object, Bucket=name, Key=key)
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return False
            raise

    async def get_object(self, *, bucket: str, key: str) -> bytes:
        name, key = self._where(bucket, key)

        def read() -> bytes:
            return self._client.get_object(Bucket=name, Key=key)["Body"].read()

        return await asyncio.to_thread(read)


class BlobStore:
    """The store ``settings`` name (one driver), as this process reaches it."""

    def __init__(self, settings: BlobSettings) -> None:
        self.settings = settings
        self.url = settings.location()
        self.driver = self._driver()

    def _driver(self) -> StorageDriver:
        bucket = self.settings.s3_bucket()
        if bucket is None:
            return LocalStorageDriver(self.url)
        import boto3
        from botocore.config import Config

        s = self.settings
        config = Config(
            retries={"mode": "standard", "max_attempts": 5},
            # Path-style URLs work with every S3-compatible server on a custom endpoint.
            s3={"addressing_style": "path"} if s.s3_endpoint_url else None,
        )
        client = boto3.session.Session().client(
            "s3", endpoint_url=s.s3_endpoint_url or None, region_name=s.s3_region or None, config=config
        )
        return S3StorageDriver(client=Boto3S3Client(client), bucket=bucket, max_payload_size=MAX_BLOB_BYTES)

    async def put(self, raw: bytes) -> dict[str, str]:
        """Store ``raw`` (idempotent: same bytes, same key) and return its reference."""
        payload = Payload(metadata={"encoding": ENCODING}, data=raw)
        # No target: the key depends on the bytes only, not on which job or attempt wrote them.
        [claim] = await self.driver.store(StorageDriverStoreContext(target=None), [payload])
        return {"driver": self.driver.name(), **claim.claim_data}

    async def get(self, ref: Mapping[str, str]) -> bytes:
        """The bytes behind a reference that :meth:`put` returned (in this or another process)."""
        driver = ref.get("driver", "")
        if driver != self.driver.name():
            raise ValueError(f"the blob is in a {driver!r} store but this process uses {self.driver.name()!r}")
        claim = StorageDriverClaim({k: v for k, v in ref.items() if k != "driver"})
        [payload] = await self.driver.retrieve(StorageDriverRetrieveContext(), [claim])
        return payload.data


@functools.lru_cache(maxsize=8)
def blob_store(settings: BlobSettings) -> BlobStore:
    """The (cached) store for ``settings``; S3 clients are made once per process."""
    return BlobStore(settings)


async def offload(value: CloudPickled, settings: BlobSettings, *, force: bool = False) -> CloudPickled:
    """``value`` itself when its pickle is under the threshold, else a reference to it in the store.

    ``force`` stores it whatever its size (a batch whose inline values would grow too big).

    Raises:
        InvalidError: the store could not be written (missing bucket, no credentials, ...).
    """
    if value.blob is not None or (value.size < settings.threshold_bytes and not force):
        return value
    store = blob_store(settings)
    try:
        ref = await store.put(await asyncio.to_thread(value.raw))
    except Exception as e:  # noqa: BLE001 - OSError, botocore errors, ...
        raise InvalidError(
            f"could not write the {value.kind or 'value'} ({value.size / 1e6:.1f} MB pickled) to the blob store "
            f"{store.url}: {_reason(e)}. Fix: check APOTHIC_BLOB_STORE (an existing bucket, or a writable folder) "
            "and its credentials."
        ) from e
    return dataclasses.replace(value, data="", blob=ref)


async def load(value: CloudPickled, settings: BlobSettings) -> Any:
    """Unpickle ``value``, reading its pickle from the store first when it is a reference.

    Raises:
        InvalidError: the referenced blob could not be read (another store, deleted, ...).
        Exception: whatever unpickling raises.
    """
    if value.blob is None:
        return value.load()
    store = blob_store(settings)
    try:
        raw = await store.get(value.blob)
    except Exception as e:  # noqa: BLE001
        raise InvalidError(
            f"could not read the {value.kind or 'value'} ({value.size / 1e6:.1f} MB pickled) from the blob store "
            f"{store.url} (reference {value.blob.get('key', value.blob)}): {_reason(e)}. Fix: give every process "
            "the same APOTHIC_BLOB_STORE and credentials; blobs are never deleted by Apothic."
        ) from e
    return value.load(raw)


def _reason(e: BaseException) -> str:
    """The error and its causes in one line (drivers wrap boto3's errors)."""
    parts = []
    while e is not None and len(parts) < 3:
        parts.append(f"{type(e).__name__}: {e}")
        e = e.__cause__  # type: ignore[assignment]
    return " <- ".join(parts)
