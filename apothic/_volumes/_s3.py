"""S3 for volumes and bucket mounts: clients, where things are, what an error means.

Cloud volumes and the S3 copies of default volumes live in the S3 store of the blob store
(``blobs.store: s3://bucket/prefix``), beside the blobs:

- ``<prefix>/volumes/<name>/<path>``: the files of cloud volume ``name``;
- ``<prefix>/volume-index/<name>.json``: its record (a cloud volume exists when this does);
- ``<prefix>/volume-mirrors/<name>/<path>``: the copy of default volume ``name`` that a
  rented machine works on (see ``activities/_volumes.py``).

boto3 is imported only when a client is made. Every botocore error is turned into an
:class:`apothic.InvalidError` (or :class:`apothic.NotFoundError`) naming the bucket, the
endpoint and the fix (:func:`s3_problem`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..exceptions import InvalidError, NotFoundError


@dataclasses.dataclass(frozen=True)
class S3Place:
    """A bucket and key prefix at an endpoint, with the credentials to use (None: boto3's chain;
    ``anonymous``: unsigned requests, for a public bucket)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str = ""
    region: str = ""
    access_key: str | None = dataclasses.field(default=None, repr=False)
    secret_key: str | None = dataclasses.field(default=None, repr=False)
    anonymous: bool = False

    def key(self, rel: str) -> str:
        rel = rel.strip("/")
        base = self.prefix.strip("/")
        return f"{base}/{rel}" if base and rel else (base or rel)

    def under(self, rel: str) -> S3Place:
        return dataclasses.replace(self, prefix=self.key(rel))

    def where(self) -> str:
        url = f"s3://{self.bucket}/{self.prefix.strip('/')}".rstrip("/")
        return f"{url} at {self.endpoint_url or 'AWS'}"

    def public(self) -> dict[str, Any]:
        """The fields that may be shown or passed on (never the keys)."""
        return {"bucket": self.bucket, "prefix": self.prefix, "endpoint_url": self.endpoint_url, "region": self.region,
                "anonymous": self.anonymous}


_clients: dict[tuple[Any, ...], Any] = {}


def s3_client(place: S3Place) -> Any:
    """A (cached, thread-safe) boto3 S3 client for ``place``."""
    cache_key = (place.endpoint_url, place.region, place.access_key, place.secret_key, place.anonymous)
    client = _clients.get(cache_key)
    if client is None:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        config = Config(
            retries={"mode": "standard", "max_attempts": 4},
            s3={"addressing_style": "path"} if place.endpoint_url else None,
            max_pool_connections=32,
            connect_timeout=10,
            read_timeout=60,
            signature_version=UNSIGNED if place.anonymous else None,
        )
        client = boto3.session.Session().client(
            "s3", endpoint_url=place.endpoint_url or None, region_name=place.region or None,
            aws_access_key_id=place.access_key, aws_secret_access_key=place.secret_key, config=config,
        )
        _clients[cache_key] = client
    return client


def store_place(blobs: Any) -> S3Place | None:
    """The S3 store of blob settings ``blobs`` (``BlobSettings``), or None for a folder store."""
    bucket_prefix = blobs.s3_bucket()
    if bucket_prefix is None:
        return None
    bucket, _, prefix = bucket_prefix.partition("/")
    return S3Place(bucket=bucket, prefix=prefix, endpoint_url=blobs.s3_endpoint_url, region=blobs.s3_region)


def require_store(blobs: Any, what: str) -> S3Place:
    place = store_place(blobs)
    if place is None:
        raise InvalidError(
            f"{what} needs an S3 store, but the blob store is the folder {blobs.location()}; allowed: "
            "blobs.store = s3://bucket/prefix. Fix: set blobs.store in temporal-dev.yaml (or APOTHIC_BLOB_STORE) "
            "to an S3 bucket that the control worker and the containers can reach."
        )
    return place


def cloud_volume_place(blobs: Any, name: str) -> S3Place:
    return require_store(blobs, f"cloud volume {name!r}").under(f"volumes/{name}")


def cloud_index_key(blobs: Any, name: str) -> tuple[S3Place, str]:
    place = require_store(blobs, f"cloud volume {name!r}")
    return place, place.key(f"volume-index/{name}.json")


def mirror_place(blobs: Any, name: str) -> S3Place:
    return require_store(blobs, f"default volume {name!r} on a rented machine").under(f"volume-mirrors/{name}")


def error_code(e: BaseException) -> str:
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        err = response.get("Error") or {}
        code = str(err.get("Code") or "")
        if code:
            return code
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return str(status or "")
    return type(e).__name__


def s3_problem(e: BaseException, place: S3Place, what: str, secrets: tuple[str, str] | None = None) -> Exception:
    """An Apothic error for botocore error ``e`` met while doing ``what`` on ``place``."""
    code = error_code(e)
    where = f"bucket {place.bucket!r} at {place.endpoint_url or 'AWS S3'}"
    creds = (f"the secrets {secrets[0]!r} and {secrets[1]!r}" if secrets else
             "the AWS credentials of the control worker and the containers (AWS_ACCESS_KEY_ID, ...)")
    if code == "NoSuchBucket" or (code == "404" and what.startswith("checking")):
        return NotFoundError(f"{what}: {where} does not exist. Fix: create the bucket, or correct the bucket name "
                             "and endpoint_url.")
    if code in ("NoSuchKey", "404"):
        return NotFoundError(f"{what}: no such file in {place.where()}.")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken",
                "ExpiredToken", "AuthorizationHeaderMalformed", "NoCredentialsError", "PartialCredentialsError"):
        reason = "no credentials were found" if "Credentials" in code else f"the server refused the credentials ({code})"
        return InvalidError(f"{what}: {where}: {reason}. Fix: check {creds}: each KEY=VALUE secret must hold the "
                            "right key for this endpoint.")
    if code in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"):
        return InvalidError(f"{what}: the S3 endpoint {place.endpoint_url or 'AWS S3'} cannot be reached ({e}). "
                            "Fix: check endpoint_url and that the server runs and is reachable from here.")
    return InvalidError(f"{what}: {where} failed: {code}: {e}. Fix: check the bucket, endpoint_url and credentials.")


def is_botocore_error(e: BaseException) -> bool:
    return type(e).__module__.startswith(("botocore", "boto3", "s3transfer"))


def check_bucket(place: S3Place, what: str, secrets: tuple[str, str] | None = None) -> None:
    """Raise a clear error unless the bucket exists and the credentials may list it (blocking)."""
    client = s3_client(place)
    try:
        client.list_objects_v2(Bucket=place.bucket, Prefix=place.prefix.strip("/"), MaxKeys=1)
    except Exception as e:
        if not is_botocore_error(e):
            raise
        raise s3_problem(e, place, f"checking {what}", secrets) from None
