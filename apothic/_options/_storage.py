"""Secrets and mounted storage: ``Secret``, ``Volume``, ``CloudBucketMount``, ``StorageMount``.

Every argument is checked when the value is made, all problems at once; ``@app.function``
checks how they combine (mount paths, one ``vast_local`` volume, the image's workdir). Volumes
and buckets are mounted by the control plane (``activities/_volumes.py``, ``apothic/_volumes``).
"""

from __future__ import annotations

import difflib
import ipaddress
import posixpath
import re
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._volumes._sdk import VolumeMethods
from ..exceptions import InvalidError
from ._names import name_problem
from ._problems import format_problem, format_validation_error, raise_problems, show

BACKENDS: tuple[str, ...] = ("default", "cloud", "vast_local")
"""Volume backends: the default named backend, ``cloud`` (portable, S3) and ``vast_local``
(a Vast.ai local volume: fastest, pins later placements to its host)."""

PATH_ALLOWED = "an absolute, normalised path other than '/', e.g. '/data' (no '..', no '//', no trailing '/')"
# Where a mount would hide what the container needs to run.
_SYSTEM_DIRS = frozenset({"/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin",
                          "/sys", "/usr"})
_UNDER_SYSTEM = ("/proc/", "/sys/", "/dev/")

BUCKET_ALLOWED = ("3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit, "
                  "no '..', not an IP address (S3 bucket naming rules)")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
BUCKET_OPTIONS = ("access_key_secret", "secret_key_secret", "endpoint_url", "prefix", "read_only")


def _strict() -> ConfigDict:
    return ConfigDict(frozen=True, extra="forbid", strict=True)


def _unknown(extra: dict[str, Any], known: tuple[str, ...]) -> list[str]:
    problems = []
    for key, value in extra.items():
        close = difflib.get_close_matches(str(key), known, n=1)
        fix = f"did you mean {close[0]}=...?" if close else f"remove it (known: {', '.join(known) or 'none'})"
        problems.append(format_problem(str(key), value, ", ".join(known) or "no options", fix, "unknown option"))
    return problems


def path_problem(loc: str, path: Any) -> str | None:
    """The problem line for a bad mount path (``None`` when it is good)."""
    if not isinstance(path, str):
        return format_problem(loc, path, PATH_ALLOWED, "give the path as a string, e.g. '/data'", "not a string")
    msg, fix = "", ""
    clean = posixpath.normpath(path) if path.startswith("/") else "/" + posixpath.normpath(path).lstrip("./")
    if not path.strip():
        msg, fix = "empty", "give a directory such as '/data'"
    elif "\0" in path:
        msg, fix = "contains a NUL character", "remove it"
    elif not path.startswith("/"):
        msg, fix = "not absolute", f"write {clean!r}"
    elif ".." in path.split("/"):
        msg, fix = "contains '..'", "give the final path, e.g. '/data'"
    elif posixpath.normpath(path) != path or path.startswith("//"):
        msg, fix = "not normalised", f"write {('/' + clean.lstrip('/'))!r}"
    elif path == "/":
        msg, fix = "the root would hide the container's own files", "mount under a directory, e.g. '/data'"
    elif path in _SYSTEM_DIRS or path.startswith(_UNDER_SYSTEM):
        msg, fix = "a system directory the container needs", "mount elsewhere, e.g. '/data'"
    return format_problem(loc, path, PATH_ALLOWED, fix, msg) if msg else None


def bucket_problem(loc: str, name: Any) -> str | None:
    """The problem line for a bucket name that breaks the S3 naming rules (``None`` when good)."""
    if isinstance(name, str) and _BUCKET_RE.fullmatch(name) and ".." not in name:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            if not name.startswith(_BUCKET_PREFIXES) and not name.endswith(_BUCKET_SUFFIXES):
                return None
    guess = re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip(".-") if isinstance(name, str) else ""
    good = 3 <= len(guess) <= 63 and guess != name
    fix = f"use the bucket's real name, e.g. {guess!r}" if good else "use the bucket's real name"
    return format_problem(loc, name, BUCKET_ALLOWED, fix, "not a valid S3 bucket name")


def _url_problem(loc: str, url: Any) -> str | None:
    allowed = "None or an http(s) URL such as 'https://s3.example.com'"
    if url is None:
        return None
    if not isinstance(url, str):
        return format_problem(loc, url, allowed, "give the endpoint as a string", "not a string")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        return format_problem(loc, url, allowed, "write scheme://host[:port]", str(e))
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        return format_problem(loc, url, allowed, f"write e.g. 'https://{parts.hostname or 'host'}'",
                              "not an http(s) URL with a host")
    if parts.username is not None or parts.password is not None:
        return format_problem(loc, url, allowed, "remove the credentials; name them with access_key_secret= and "
                              "secret_key_secret=", "credentials in the URL")
    return None


def _bucket_option_problems(options: dict[str, Any]) -> list[str]:
    problems = _unknown({k: v for k, v in options.items() if k not in BUCKET_OPTIONS},
                        BUCKET_OPTIONS)
    keys = {k: options.get(k) for k in ("access_key_secret", "secret_key_secret")}
    for key, value in keys.items():
        if value is not None:
            problems += [p for p in [name_problem(key, value, f"{key}='BUCKET_KEY'")] if p]
    if (keys["access_key_secret"] is None) != (keys["secret_key_secret"] is None):
        problems.append(format_problem(
            "access_key_secret/secret_key_secret", tuple(keys.values()), "both secret names, or neither (a public "
            "bucket)", "name both secrets, or drop both", "only one of the two keys"))
    problems += [p for p in [_url_problem("endpoint_url", options.get("endpoint_url"))] if p]
    prefix = options.get("prefix")
    if prefix is not None and (not isinstance(prefix, str) or prefix.startswith("/") or "\0" in prefix):
        fix = f"write {prefix.lstrip('/')!r}" if isinstance(prefix, str) else "give the prefix as a string"
        problems.append(format_problem("prefix", prefix, "None or a key prefix without a leading '/', e.g. "
                                       "'examples/training'", fix, "a bad key prefix"))
    if not isinstance(options.get("read_only", False), bool):
        problems.append(format_problem("read_only", options["read_only"], "True or False",
                                       "write read_only=True or read_only=False", "not a bool"))
    return problems


def mount_problems(data: dict[str, Any]) -> list[str]:
    """Every problem of a :class:`StorageMount`'s fields (as given, any types)."""
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in ("volume", "bucket"):
        return [format_problem("kind", kind, "'volume' or 'bucket'", "make it with apothic.Volume.from_name(...) or "
                               "apothic.CloudBucketMount(...)", "unknown kind")]
    problems = _unknown({k: v for k, v in data.items() if k not in StorageMount.model_fields},
                        tuple(StorageMount.model_fields))
    name = data.get("name", "")
    backend = data.get("backend", "default")
    options = data.get("options", {})
    create = data.get("create_if_missing", False)
    if kind == "volume":
        problems += [p for p in [name_problem("name", name, "Volume.from_name('model-cache')")] if p]
        if not isinstance(backend, str) or backend not in BACKENDS:
            close = difflib.get_close_matches(backend, BACKENDS, n=1) if isinstance(backend, str) else []
            problems.append(format_problem("backend", backend, ", ".join(repr(b) for b in BACKENDS),
                                           f"write backend={close[0]!r}" if close else "pick one of the backends",
                                           "unknown backend"))
        if isinstance(options, dict) and options:
            problems += _unknown(options, ())
    else:
        problems += [p for p in [bucket_problem("bucket_name", name)] if p]
        if not isinstance(backend, str) or backend != "default":
            problems.append(format_problem("backend", backend, "'default' (a bucket has no backend)",
                                           "drop backend=", "not used by a bucket"))
        if create is not False:
            problems.append(format_problem("create_if_missing", create, "False (a bucket must exist)",
                                           "create the bucket first", "not used by a bucket"))
        if isinstance(options, dict):
            problems += _bucket_option_problems(options)
    if not isinstance(options, dict):
        problems.append(format_problem("options", options, "a dict", "make the value with its constructor",
                                       "not a dict"))
    if not isinstance(create, bool):
        problems.append(format_problem("create_if_missing", create, "True or False",
                                       "write create_if_missing=True or False", "not a bool"))
    mount_path = data.get("mount_path")
    if mount_path is not None:
        problems += [p for p in [path_problem("mount_path", mount_path)] if p]
    return problems


class _SecretObjects:
    """``Secret.objects``, loaded on first use (so that ``apothic.Secret`` stays cheap)."""

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        from .._secrets._sdk import SECRETS

        return SECRETS


class Secret(BaseModel):
    """A named secret, resolved when a container starts and put in its environment.

    Only the name travels (in the function's spec); the value stays in the secret store.
    ``Secret.objects`` creates, lists and deletes secrets (``apothic/_secrets/_sdk.py``).
    """

    model_config = _strict()

    name: str = Field(min_length=1)
    objects: ClassVar[Any] = _SecretObjects()

    def __init__(self, **data: Any) -> None:
        name = data.get("name")
        problems = [p for p in [name_problem("name", name, "Secret.from_name('HF_TOKEN')")] if p]
        problems += _unknown({k: v for k, v in data.items() if k != "name"}, ("name",))
        raise_problems(f"Secret.from_name({show(name)})", problems)
        super().__init__(**data)

    @classmethod
    def from_name(cls, name: str) -> "Secret":
        """The secret called ``name`` (same rule as app names: 1-63 letters, digits, ``_-.``)."""
        return cls(name=name)


class StorageMount(BaseModel, VolumeMethods):
    """Something mounted into the function's filesystem at ``mount_path``.

    Made by :class:`Volume`'s constructors and :func:`CloudBucketMount`; every field is checked
    when it is made (``InvalidError`` listing every problem). ``mounted_at(path)`` returns a
    copy mounted at ``path``. A volume also has file methods (``listdir``, ``read_file``,
    ``put_file``, ``remove_file``, ``batch_upload``, ...: see ``apothic/_volumes/_sdk.py``).
    """

    model_config = _strict()

    kind: Literal["volume", "bucket"]
    mount_path: str | None = None
    name: str = ""
    backend: str = "default"
    create_if_missing: bool = False
    options: dict[str, Any] = Field(default_factory=dict)

    def __init__(self, **data: Any) -> None:
        where = str(data.pop("_where", "StorageMount(...)"))
        raise_problems(where, mount_problems(data))
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise InvalidError(format_validation_error(e, where, StorageMount, data)) from None

    def mounted_at(self, path: str) -> "StorageMount":
        """This storage, mounted at ``path`` (absolute, normalised, not ``/``)."""
        raise_problems(f"{self.describe()}.mounted_at({show(path)})", [p for p in [path_problem("path", path)] if p])
        return self.model_copy(update={"mount_path": path})

    def describe(self) -> str:
        if self.kind == "bucket":
            return f"CloudBucketMount({self.name!r})"
        return f"Volume({self.name!r}, backend={self.backend!r})"


class Volume:
    """Named persistent storage (constructors return :class:`StorageMount` values).

    ``name`` follows the rule of app names; ``mount_path_default`` (optional) is where it is
    mounted unless ``.mounted_at(path)`` says otherwise.
    """

    @staticmethod
    def from_name(name: str, *, create_if_missing: bool = False, mount_path_default: str | None = None) -> StorageMount:
        """A volume of the default backend; ``create_if_missing=True`` creates it on first use."""
        where = f"Volume.from_name({show(name)})"
        return StorageMount(_where=where, kind="volume", name=name, create_if_missing=create_if_missing,
                            mount_path=mount_path_default)

    @staticmethod
    def cloud(name: str, *, mount_path_default: str | None = None, **options: Any) -> StorageMount:
        """A portable volume kept in the S3 store (``blobs.store``), the same from every provider
        and host. The one option: ``create_if_missing=True`` creates it on first use."""
        where = f"Volume.cloud({show(name)})"
        create = options.pop("create_if_missing", False)
        return StorageMount(_where=where, kind="volume", name=name, backend="cloud", mount_path=mount_path_default,
                            create_if_missing=create, options=options)

    @staticmethod
    def list() -> list[Any]:
        """Every volume: this host's (``default``, ``vast_local``) and the S3 store's (``cloud``)."""
        from .._volumes._sdk import list_volumes

        return list_volumes()

    @staticmethod
    def delete(name: str) -> None:
        """Delete volume ``name`` with all its files (a ``vast_local`` one on Vast.ai too)."""
        from .._control._loop import run_blocking
        from .._volumes._sdk import delete

        run_blocking(delete(name))

    @staticmethod
    def create(name: str, *, backend: str = "default", mount_path_default: str | None = None) -> StorageMount:
        """A volume of ``backend`` (``"default"``, ``"cloud"`` or ``"vast_local"``), created if missing."""
        where = f"Volume.create({show(name)})"
        return StorageMount(_where=where, kind="volume", name=name, backend=backend, create_if_missing=True,
                            mount_path=mount_path_default)


def CloudBucketMount(
    bucket_name: str,
    *,
    access_key_secret: str | None = None,
    secret_key_secret: str | None = None,
    endpoint_url: str | None = None,
    prefix: str | None = None,
    read_only: bool = False,
) -> StorageMount:
    """An existing S3-compatible bucket (credentials are secret names, not values).

    ``bucket_name`` follows the S3 naming rules; ``endpoint_url`` is an http(s) URL (default:
    AWS); ``prefix`` is a key prefix without a leading ``/``; ``read_only`` a bool. Mount it
    with ``.mounted_at("/path")``.
    """
    where = f"CloudBucketMount({show(bucket_name)})"
    return StorageMount(
        _where=where,
        kind="bucket",
        name=bucket_name,
        options={
            "access_key_secret": access_key_secret,
            "secret_key_secret": secret_key_secret,
            "endpoint_url": endpoint_url,
            "prefix": prefix,
            "read_only": read_only,
        },
    )


def _nested(a: str, b: str) -> bool:
    return a == b or b.startswith(a + "/") or a.startswith(b + "/")


def storage_problems(secrets: list[Secret] | None, volumes: Any) -> list[str]:
    """At ``@app.function``: duplicate secrets; mount paths (each volume has one, none inside
    another) and at most one ``vast_local`` volume."""
    problems = []
    names = [s.name for s in secrets or []]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(format_problem("secrets", names, "each secret once", f"list {', '.join(dupes)} once",
                                       "a secret listed twice"))
    mounts: list[tuple[str, StorageMount]] = []
    if isinstance(volumes, dict):
        for path, mount in volumes.items():
            p = path_problem(f"volumes[{show(path)}]", path)
            if p:
                problems.append(p)
                continue
            if mount.mount_path is not None and mount.mount_path != path:
                problems.append(format_problem(
                    f"volumes[{path!r}]", mount.describe(), "one mount path per volume",
                    f"drop .mounted_at({mount.mount_path!r}), or use the key {mount.mount_path!r}",
                    f"also mounted at {mount.mount_path!r}"))
                continue
            mounts.append((path, mount))
    elif isinstance(volumes, list):
        for i, mount in enumerate(volumes):
            if mount.mount_path is None:
                problems.append(format_problem(
                    f"volumes[{i}]", mount.describe(), "a volume with a mount path",
                    f"write {mount.describe()}.mounted_at('/data'), or volumes={{'/data': ...}}", "no mount path"))
            else:
                mounts.append((mount.mount_path, mount))
    for i, (path, mount) in enumerate(mounts):
        for other, other_mount in mounts[:i]:
            if _nested(path, other):
                what = "the same path" if path == other else "one mount inside another"
                problems.append(format_problem(
                    "volumes", (other, path), "distinct mount paths, none inside another",
                    "mount each at its own directory, e.g. '/a' and '/b'",
                    f"{what} ({other_mount.describe()} and {mount.describe()})"))
    local = [m.describe() for _, m in mounts if m.kind == "volume" and m.backend == "vast_local"]
    if len(local) > 1:
        problems.append(format_problem("volumes", local, "at most one vast_local volume per function",
                                       "keep one vast_local volume; make the others Volume.cloud(...)",
                                       f"{len(local)} vast_local volumes"))
    return problems


def workdir_problems(image: Any, volumes: Any) -> list[str]:
    """A mount at the image's workdir, or above it, would hide the files the image put there."""
    steps = getattr(image, "steps", ()) or ()
    workdirs = [s.path for s in steps if getattr(s, "kind", "") == "workdir"]
    if not workdirs:
        return []
    workdir = workdirs[-1]
    if isinstance(volumes, dict):
        paths = [(p, m) for p, m in volumes.items() if isinstance(p, str)]
    elif isinstance(volumes, list):
        paths = [(m.mount_path, m) for m in volumes if isinstance(m, StorageMount) and m.mount_path]
    else:
        paths = []
    return [
        format_problem(f"volumes[{path!r}]", mount.describe(), "a mount path that is not the image's workdir "
                       f"({workdir!r}) nor a folder above it",
                       f"mount it elsewhere, e.g. {workdir.rstrip('/') + '/data'!r}, or change Image.workdir()",
                       f"it would hide the image's workdir {workdir!r}")
        for path, mount in paths
        if workdir == path or workdir.startswith(path.rstrip("/") + "/")
    ]
