"""Image specifications: an immutable, hashable description of an execution image.

An :class:`Image` is a value: a base (:class:`ImageBase`) plus an ordered tuple of steps.
Building it is somebody else's job (a provider turns it into a virtual environment or a
container image); this module only describes the image and computes its hash.

Hashing rules, chosen so that the hash is a good cache key:

* Within one install step, packages are de-duplicated and sorted, so
  ``pip_install("b", "a")`` and ``pip_install("a", "b", "a")`` are the same step. The order
  of *steps* is kept: ``pip_install("a").apt_install("b")`` differs from the reverse.
* Environment variables are sorted by key; remote paths are normalised POSIX paths.
* Local files, directories and Python sources are hashed by *content* (bytes, relative
  layout, executable bit), never by modification time. Hashing happens once, when the
  step is defined: every byte is read through SHA-256, so adding a large directory costs
  one full read of it (narrow it with ``ignore=``). Edits made after the step was defined
  are not seen by that image; define it again to pick them up.
* The absolute local path of an added file or directory is recorded (the builder needs it)
  but is not part of the hash: the same content copied to the same remote path gives the
  same image on every machine and in every checkout.
* The hash is SHA-256 over canonical JSON (sorted keys) of :meth:`Image.to_dict` minus the
  local paths, so it is the same across processes, machines and Python versions. Python's
  ``hash()`` is never involved.

Limits: a registry tag (``python:3.11-slim``) is hashed as written; when the registry moves
the tag, the hash does not change. Pin ``@sha256:...`` when that matters.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import posixpath
import re
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, ClassVar, NoReturn, TypeAlias

__all__ = [
    "SUPPORTED_PYTHON_VERSIONS",
    "AddLocalDirStep",
    "AddLocalFileStep",
    "AddLocalPythonSourceStep",
    "AptInstallStep",
    "EnvStep",
    "Image",
    "ImageBase",
    "ImageStep",
    "PipInstallStep",
    "PythonSource",
    "RunCommandsStep",
    "UvPipInstallStep",
    "WorkdirStep",
]

#: Python versions a ``debian_slim`` base (or ``add_python=``) can provide, as "3.X".
SUPPORTED_PYTHON_VERSIONS: tuple[str, ...] = ("3.9", "3.10", "3.11", "3.12", "3.13")

_FORMAT = "apothic.image/v1"
_CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")

# Excluded from the Dockerfile context hash and from Python source hashes.
_CONTEXT_EXCLUDES = (".git", "__pycache__")
_PYTHON_SOURCE_EXCLUDES = (".git", "__pycache__", "*.pyc", "*.pyo")

# Field metadata: {"hash": False} keeps a field out of the hash (still in to_dict);
# {"json": "mapping"} serialises a tuple of (key, value) pairs as a JSON object.
_LOCAL_ONLY = {"hash": False}


def _invalid(message: str) -> NoReturn:
    from ..exceptions import InvalidError

    raise InvalidError(message)


class _Problems:
    """Collects every problem of one definition, then raises once."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if len(self.items) == 1:
            _invalid(f"{self.where}: {self.items[0]}")
        lines = "\n".join(f"  - {m}" for m in self.items)
        _invalid(f"{self.where}: {len(self.items)} problems:\n{lines}")


# --------------------------------------------------------------------------- validation


def _check_python_version(value: object, param: str, problems: _Problems) -> str | None:
    if isinstance(value, str) and value in SUPPORTED_PYTHON_VERSIONS:
        return value
    allowed = ", ".join(repr(v) for v in SUPPORTED_PYTHON_VERSIONS)
    hint = ""
    if isinstance(value, str):
        m = re.fullmatch(r"(3\.\d+)\.\d+", value.strip())
        if m and m.group(1) in SUPPORTED_PYTHON_VERSIONS:
            hint = f"; drop the patch version: {param}={m.group(1)!r}"
    elif isinstance(value, (int, float)):
        hint = f"; pass a string, e.g. {param}='3.11'"
    problems.add(f"{param}={value!r} is not supported; use one of {allowed} (form '3.X'){hint}")
    return None


def _flatten(items: Iterable[Any], what: str, problems: _Problems) -> list[str]:
    """Flatten strings and (nested) iterables of strings; report every other leaf."""
    out: list[str] = []

    def visit(x: Any) -> None:
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, (bytes, bytearray, Mapping)) or not isinstance(x, Iterable):
            problems.add(
                f"{what} {x!r} has type {type(x).__name__}; pass strings, or lists of strings"
            )
        else:
            for y in x:
                visit(y)

    visit(items)
    return out


def _check_packages(raw: Iterable[Any], what: str, apt: bool, problems: _Problems) -> list[str]:
    result = []
    for pkg in _flatten(raw, what, problems):
        name = pkg.strip()
        if not name:
            problems.add(f"{what} {pkg!r} is empty; each {what} must be a non-empty name")
        elif name.startswith("-"):
            fix = (
                "apt options are not supported; use run_commands(...) for unusual installs"
                if apt
                else "use index_url=, extra_index_url= or pre=, or run_commands(...)"
            )
            problems.add(f"{what} {pkg!r} looks like a command-line option; {fix}")
        elif apt and any(c.isspace() for c in name):
            problems.add(
                f"{what} {pkg!r} contains whitespace; pass each apt package as its own "
                "string, e.g. apt_install('git', 'curl')"
            )
        elif any(c in name for c in "\r\n\0"):
            problems.add(
                f"{what} {pkg!r} contains a line break or NUL; pass one requirement per string"
            )
        else:
            result.append(name)
    return result


def _check_url(value: object, param: str, problems: _Problems) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and _URL.fullmatch(value.strip()):
        return value.strip()
    problems.add(
        f"{param}={value!r} is not a URL; pass e.g. {param}='https://pypi.example.com/simple'"
    )
    return None


def _remote_path(value: object, param: str, problems: _Problems) -> str | None:
    """Validate and normalise an absolute POSIX path inside the image."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        problems.add(f"{param}={value!r} must be a non-empty absolute path such as '/app'")
        return None
    if "\0" in value:
        problems.add(f"{param}={value!r} contains a NUL character")
        return None
    if not value.startswith("/"):
        problems.add(
            f"{param}={value!r} is relative; paths inside the image must be absolute, "
            f"e.g. {param}={'/' + value.lstrip('./')!r}"
        )
        return None
    norm = posixpath.normpath(value)
    if norm.startswith("//"):  # POSIX keeps a leading '//'; it means '/' here.
        norm = "/" + norm.lstrip("/")
    return norm


def _check_hash(value: object, param: str, problems: _Problems) -> str | None:
    if isinstance(value, str) and _HEX64.fullmatch(value):
        return value
    problems.add(f"{param}={value!r} must be a lowercase hex SHA-256 (64 characters)")
    return None


def _check_str(value: object, param: str, problems: _Problems) -> str | None:
    if isinstance(value, str) and value:
        return value
    problems.add(f"{param}={value!r} must be a non-empty string")
    return None


def _check_bool(value: object, param: str, problems: _Problems) -> bool:
    if isinstance(value, bool):
        return value
    problems.add(f"{param}={value!r} must be True or False")
    return False


def _local_path(value: object, param: str, problems: _Problems) -> str | None:
    """Absolute, normalised local path (symlinks are not resolved)."""
    if isinstance(value, (str, os.PathLike)):
        try:
            text = os.fspath(value)
        except TypeError:
            text = None
        if isinstance(text, str) and text:
            return os.path.abspath(os.path.expanduser(text))
    problems.add(f"{param}={value!r} must be a path (str or os.PathLike) to a local file")
    return None


# --------------------------------------------------------------------------- content hashing


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _normalise_ignore(patterns: object, problems: _Problems) -> tuple[str, ...]:
    if isinstance(patterns, str):
        patterns = (patterns,)
    if callable(patterns):
        problems.add(
            "ignore= must be glob patterns such as ['*.log', 'data/raw']; callables "
            "cannot be hashed or serialised"
        )
        return ()
    out = set()
    for pat in _flatten(patterns, "ignore pattern", problems):
        p = pat.strip()
        while p.startswith("./"):
            p = p[2:]
        p = p.rstrip("/")
        if not p:
            problems.add(f"ignore pattern {pat!r} is empty; remove it")
        else:
            out.add(p)
    return tuple(sorted(out))


def _ignored(rel: str, patterns: tuple[str, ...]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    for pat in patterns:
        if fnmatchcase(rel, pat):
            return True
        if "/" not in pat and fnmatchcase(name, pat):
            return True
        if pat.startswith("**/") and (fnmatchcase(rel, pat[3:]) or fnmatchcase(name, pat[3:])):
            return True
    return False


def _walk_tree(root: str, ignore: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
    """``(path, relative path, kind)`` of every entry of a tree that an image takes, top-down
    (a folder before what it holds): kind ``"dir"``, ``"file"`` (regular) or ``"link"``.

    The one walk behind the tree hash and every copy of a tree (the Docker build context, the
    virtual-environment image), so that what is copied is what was hashed: ``ignore`` patterns
    (see :func:`_ignored`) drop entries and whole folders; symlinks, to folders too, are not
    followed; sockets, FIFOs and devices are skipped. Raises OSError on an unreadable folder.
    """

    def onerror(err: OSError) -> None:
        raise err

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        prefix = "" if rel_dir == "." else rel_dir + "/"
        kept = []
        for d in sorted(dirnames):
            rel = prefix + d
            if _ignored(rel, ignore):
                continue
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                yield full, rel, "link"
            else:
                yield full, rel, "dir"
                kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = prefix + name
            if _ignored(rel, ignore):
                continue
            full = os.path.join(dirpath, name)
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                yield full, rel, "link"
            elif stat.S_ISREG(mode):
                yield full, rel, "file"


def _hash_tree(root: str, ignore: tuple[str, ...]) -> str:
    """SHA-256 over a sorted manifest of a directory: relative paths, kinds, exec bits, bytes.

    Symlinked directories are recorded by their target text and not followed; symlinked
    files are recorded by target text and, when the target is a regular file, its content.
    Sockets, FIFOs and devices are skipped. Raises OSError on unreadable entries.
    """
    entries: list[bytes] = []

    def add(kind: bytes, rel: str, payload: bytes = b"") -> None:
        entries.append(kind + b"\0" + os.fsencode(rel) + b"\0" + payload)

    for full, rel, kind in _walk_tree(root, ignore):
        if kind == "dir":
            add(b"d", rel)
        elif kind == "link":
            payload = os.fsencode(os.readlink(full))
            try:
                st = os.stat(full)
            except OSError:
                st = None
            if st is not None and stat.S_ISREG(st.st_mode):
                payload += b"\0" + _sha256_file(full).encode()
            add(b"l", rel, payload)
        else:
            exec_bit = b"x" if os.lstat(full).st_mode & 0o111 else b"-"
            add(b"f", rel, exec_bit + _sha256_file(full).encode())
    entries.sort()
    digest = hashlib.sha256(b"apothic-tree-v1\n")
    for e in entries:
        digest.update(e + b"\n")
    return digest.hexdigest()


def _hash_file_or_fail(path: str, where: str) -> str:
    try:
        return _sha256_file(path)
    except OSError as e:
        _invalid(f"{where}: cannot read {path!r}: {e.strerror or e}; check its permissions")


def _hash_tree_or_fail(path: str, ignore: tuple[str, ...], where: str) -> str:
    try:
        return _hash_tree(path, ignore)
    except OSError as e:
        name = e.filename or path
        _invalid(
            f"{where}: cannot read {name!r}: {e.strerror or e}; fix its permissions or ignore it"
        )


# --------------------------------------------------------------------------- base


@dataclass(frozen=True)
class ImageBase:
    """What an image starts from.

    Attributes:
        kind: ``"debian_slim"``, ``"registry"`` or ``"dockerfile"``.
        python_version: the Python of a ``debian_slim`` base, as ``"3.X"``.
        ref: the registry reference of a ``registry`` base, exactly as given.
        add_python: for ``registry``/``dockerfile`` bases, a Python to install on top
            (``None``: use the image's own Python).
        dockerfile: the Dockerfile text of a ``dockerfile`` base (hashed).
        dockerfile_path: where that Dockerfile was read from (not hashed).
        context_dir: the local build context directory (not hashed).
        context_hash: content hash of ``context_dir``, or ``None`` when the Dockerfile has
            no ``ADD``/``COPY`` from the context and so needs none.
    """

    kind: str
    python_version: str | None = None
    ref: str | None = None
    add_python: str | None = None
    dockerfile: str | None = None
    dockerfile_path: str | None = field(default=None, metadata=_LOCAL_ONLY)
    context_dir: str | None = field(default=None, metadata=_LOCAL_ONLY)
    context_hash: str | None = None

    _KINDS: ClassVar[tuple[str, ...]] = ("debian_slim", "registry", "dockerfile")

    @classmethod
    def _build(cls, where: str, **raw: Any) -> ImageBase:
        p = _Problems(where)
        kind = raw.get("kind")
        if kind not in cls._KINDS:
            p.add(f"base kind {kind!r} is unknown; expected one of {', '.join(cls._KINDS)}")
            p.raise_if_any()
        allowed = {
            "debian_slim": {"kind", "python_version"},
            "registry": {"kind", "ref", "add_python"},
            "dockerfile": {
                "kind",
                "dockerfile",
                "dockerfile_path",
                "context_dir",
                "context_hash",
                "add_python",
            },
        }[kind]
        for key in sorted(k for k, v in raw.items() if v is not None and k not in allowed):
            p.add(f"field {key!r} does not apply to a {kind!r} base")
        out: dict[str, Any] = {"kind": kind}
        if kind == "debian_slim":
            out["python_version"] = _check_python_version(
                raw.get("python_version"), "python_version", p
            )
        if kind == "registry":
            out["ref"] = _check_registry_ref(raw.get("ref"), p)
        if kind in ("registry", "dockerfile") and raw.get("add_python") is not None:
            out["add_python"] = _check_python_version(raw["add_python"], "add_python", p)
        if kind == "dockerfile":
            text = raw.get("dockerfile")
            if not isinstance(text, str):
                p.add(f"dockerfile={text!r} must be the Dockerfile's text")
            out["dockerfile"] = text
            for key in ("dockerfile_path", "context_dir"):
                if raw.get(key) is not None:
                    out[key] = _check_str(raw[key], key, p)
            if raw.get("context_hash") is not None:
                out["context_hash"] = _check_hash(raw["context_hash"], "context_hash", p)
        p.raise_if_any()
        return cls(**out)

    def _repr(self) -> str:
        if self.kind == "debian_slim":
            return f"Image.debian_slim(python_version={self.python_version!r})"
        extra = f", add_python={self.add_python!r}" if self.add_python else ""
        if self.kind == "registry":
            return f"Image.from_registry({self.ref!r}{extra})"
        ctx = f", context_dir={self.context_dir!r}" if self.context_dir else ""
        return f"Image.from_dockerfile({self.dockerfile_path or '<dockerfile>'!r}{ctx}{extra})"


# Reference grammar (distribution/reference), restricted to sha256 digests.
_REF_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_REF_DOMAIN = re.compile(
    r"(?:(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
    r"(?:\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]))*"
    r"|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
)
_REF_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_REF_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_REF_FORM = (
    "expected [registry[:port]/]name[:tag][@sha256:<64 hex>], "
    "e.g. 'python:3.11-slim' or 'ghcr.io/org/app@sha256:<digest>'"
)


def _check_registry_ref(ref: object, problems: _Problems) -> str | None:
    if not isinstance(ref, str) or not ref:
        problems.add(f"ref={ref!r} must be a non-empty image reference; {_REF_FORM}")
        return None

    def bad(reason: str) -> None:
        problems.add(f"{ref!r} is not a valid image reference: {reason}; {_REF_FORM}")

    if ref != ref.strip() or any(c.isspace() for c in ref):
        bad("it contains whitespace")
        return None
    rest, _, digest = ref.partition("@")
    if "@" in ref and not _REF_DIGEST.fullmatch(digest):
        bad(f"digest {digest!r} must be 'sha256:' followed by 64 lowercase hex digits")
        return None
    name, tag = rest, None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        name, tag = rest[:colon], rest[colon + 1 :]
        if not _REF_TAG.fullmatch(tag):
            bad(f"tag {tag!r} must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'")
            return None
    if not name:
        bad("the repository name is empty")
        return None
    if len(name) > 255:
        bad(f"the repository name is {len(name)} characters long; the limit is 255")
        return None
    parts = name.split("/")
    first = parts[0]
    if len(parts) > 1 and (
        "." in first or ":" in first or first == "localhost" or first != first.lower()
    ):
        if not _REF_DOMAIN.fullmatch(first):
            bad(f"registry host {first!r} is not a valid host[:port]")
            return None
        parts = parts[1:]
    for comp in parts:
        if not _REF_PATH_COMPONENT.fullmatch(comp):
            bad(
                f"repository path component {comp!r} must be lowercase letters and digits, "
                "optionally separated by '.', '_', '__' or '-'"
            )
            return None
    return ref


# --------------------------------------------------------------------------- steps


def _expect_keys(raw: Mapping[str, Any], allowed: Iterable[str], p: _Problems) -> bool:
    extra = sorted(set(raw) - set(allowed))
    for key in extra:
        p.add(f"unknown field {key!r} (written by a newer Apothic?)")
    return not extra


@dataclass(frozen=True)
class _PackageStep:
    packages: tuple[str, ...]
    index_url: str | None = None
    extra_index_url: str | None = None
    pre: bool = False

    kind: ClassVar[str]
    _method: ClassVar[str]

    @classmethod
    def _build(
        cls,
        where: str,
        packages: Iterable[Any] = (),
        index_url: object = None,
        extra_index_url: object = None,
        pre: object = False,
        *,
        empty_ok: bool = False,
    ) -> Any:
        p = _Problems(where)
        pkgs = _check_packages(packages, "package", False, p)
        index = _check_url(index_url, "index_url", p)
        extra = _check_url(extra_index_url, "extra_index_url", p)
        pre_ok = _check_bool(pre, "pre", p)
        if not pkgs and not p.items and not empty_ok:
            p.add("no packages given; list at least one package")
        p.raise_if_any()
        if not pkgs:
            return None
        return cls(tuple(sorted(set(pkgs))), index, extra, pre_ok)

    def _repr(self) -> str:
        args = [repr(x) for x in self.packages]
        if self.index_url:
            args.append(f"index_url={self.index_url!r}")
        if self.extra_index_url:
            args.append(f"extra_index_url={self.extra_index_url!r}")
        if self.pre:
            args.append("pre=True")
        return f".{self._method}({', '.join(args)})"


@dataclass(frozen=True)
class PipInstallStep(_PackageStep):
    """``pip install`` of ``packages`` (sorted, de-duplicated requirement strings)."""

    kind: ClassVar[str] = "pip"
    _method: ClassVar[str] = "pip_install"


@dataclass(frozen=True)
class UvPipInstallStep(_PackageStep):
    """``uv pip install`` of ``packages`` (sorted, de-duplicated requirement strings)."""

    kind: ClassVar[str] = "uv_pip"
    _method: ClassVar[str] = "uv_pip_install"


@dataclass(frozen=True)
class AptInstallStep:
    """``apt-get install`` of ``packages`` (sorted, de-duplicated). Needs a container."""

    packages: tuple[str, ...]
    kind: ClassVar[str] = "apt"

    @classmethod
    def _build(
        cls, where: str, packages: Iterable[Any] = (), *, empty_ok: bool = False
    ) -> AptInstallStep | None:
        p = _Problems(where)
        pkgs = _check_packages(packages, "apt package", True, p)
        if not pkgs and not p.items and not empty_ok:
            p.add("no packages given; list at least one package")
        p.raise_if_any()
        return cls(tuple(sorted(set(pkgs)))) if pkgs else None

    def _repr(self) -> str:
        return f".apt_install({', '.join(repr(x) for x in self.packages)})"


@dataclass(frozen=True)
class EnvStep:
    """Environment variables, as ``(key, value)`` pairs sorted by key."""

    vars: tuple[tuple[str, str], ...] = field(metadata={"json": "mapping"})
    kind: ClassVar[str] = "env"

    def as_dict(self) -> dict[str, str]:
        """Return the variables as a new dict."""
        return dict(self.vars)

    @classmethod
    def _build(cls, where: str, vars: object = None, *, empty_ok: bool = False) -> EnvStep | None:
        p = _Problems(where)
        out: dict[str, str] = {}
        if not isinstance(vars, Mapping):
            p.add(f"vars={vars!r} must be a dict of str to str, e.g. {{'HF_HOME': '/cache'}}")
            vars = {}
        for key, value in vars.items():
            if not isinstance(key, str) or not _ENV_KEY.fullmatch(key):
                p.add(
                    f"environment variable name {key!r} is invalid; use letters, digits and "
                    "'_', not starting with a digit"
                )
            elif not isinstance(value, str):
                p.add(
                    f"environment variable {key}={value!r} has type {type(value).__name__}; "
                    f"values must be strings, e.g. {key}={str(value)!r}"
                )
            elif "\0" in value:
                p.add(f"environment variable {key} contains a NUL character")
            else:
                out[key] = value
        if not out and not p.items and not empty_ok:
            p.add("no variables given")
        p.raise_if_any()
        return cls(tuple(sorted(out.items()))) if out else None

    def _repr(self) -> str:
        return f".env({dict(self.vars)!r})"


@dataclass(frozen=True)
class WorkdirStep:
    """Set the working directory (an absolute, normalised POSIX path)."""

    path: str
    kind: ClassVar[str] = "workdir"

    @classmethod
    def _build(cls, where: str, path: object = None) -> WorkdirStep:
        p = _Problems(where)
        norm = _remote_path(path, "path", p)
        p.raise_if_any()
        return cls(norm)  # type: ignore[arg-type]

    def _repr(self) -> str:
        return f".workdir({self.path!r})"


@dataclass(frozen=True)
class RunCommandsStep:
    """Shell commands, run in order, verbatim. Needs a container."""

    commands: tuple[str, ...]
    kind: ClassVar[str] = "run"

    @classmethod
    def _build(
        cls, where: str, commands: Iterable[Any] = (), *, empty_ok: bool = False
    ) -> RunCommandsStep | None:
        p = _Problems(where)
        cmds = []
        for cmd in _flatten(commands, "command", p):
            if not cmd.strip():
                p.add(f"command {cmd!r} is empty; remove it")
            elif "\0" in cmd:
                p.add(f"command {cmd!r} contains a NUL character")
            else:
                cmds.append(cmd)
        if not cmds and not p.items and not empty_ok:
            p.add("no commands given")
        p.raise_if_any()
        return cls(tuple(cmds)) if cmds else None

    def _repr(self) -> str:
        return f".run_commands({', '.join(repr(c) for c in self.commands)})"


@dataclass(frozen=True)
class AddLocalFileStep:
    """Copy one local file to ``remote_path``.

    Attributes:
        local_path: absolute local path at definition time (not hashed).
        remote_path: absolute path inside the image.
        content_hash: SHA-256 of the file's bytes at definition time.
        executable: whether any execute bit was set.
    """

    local_path: str = field(metadata=_LOCAL_ONLY)
    remote_path: str
    content_hash: str
    executable: bool = False
    kind: ClassVar[str] = "add_local_file"

    @classmethod
    def _build(
        cls,
        where: str,
        local_path: object = None,
        remote_path: object = None,
        content_hash: object = None,
        executable: object = False,
    ) -> AddLocalFileStep:
        p = _Problems(where)
        lp = _check_str(local_path, "local_path", p)
        rp = _remote_path(remote_path, "remote_path", p)
        ch = _check_hash(content_hash, "content_hash", p)
        ex = _check_bool(executable, "executable", p)
        p.raise_if_any()
        return cls(lp, rp, ch, ex)  # type: ignore[arg-type]

    def _repr(self) -> str:
        return f".add_local_file({self.local_path!r}, {self.remote_path!r})"


@dataclass(frozen=True)
class AddLocalDirStep:
    """Copy a local directory tree to ``remote_path``.

    Attributes:
        local_path: absolute local path at definition time (not hashed).
        remote_path: absolute path inside the image.
        content_hash: hash of the tree (relative paths, bytes, exec bits) minus ``ignore``.
        ignore: sorted glob patterns; see :meth:`Image.add_local_dir`.
    """

    local_path: str = field(metadata=_LOCAL_ONLY)
    remote_path: str
    content_hash: str
    ignore: tuple[str, ...] = ()
    kind: ClassVar[str] = "add_local_dir"

    @classmethod
    def _build(
        cls,
        where: str,
        local_path: object = None,
        remote_path: object = None,
        content_hash: object = None,
        ignore: object = (),
    ) -> AddLocalDirStep:
        p = _Problems(where)
        lp = _check_str(local_path, "local_path", p)
        rp = _remote_path(remote_path, "remote_path", p)
        ch = _check_hash(content_hash, "content_hash", p)
        ig = _normalise_ignore(ignore, p)
        p.raise_if_any()
        return cls(lp, rp, ch, ig)  # type: ignore[arg-type]

    def _repr(self) -> str:
        ig = f", ignore={list(self.ignore)!r}" if self.ignore else ""
        return f".add_local_dir({self.local_path!r}, {self.remote_path!r}{ig})"


@dataclass(frozen=True)
class PythonSource:
    """One local module or package resolved by :meth:`Image.add_local_python_source`.

    Attributes:
        module: the dotted import name.
        local_path: the ``.py`` file or the package directory (not hashed).
        target: where it goes relative to an import root in the image, e.g.
            ``"pkg"``, ``"mod.py"`` or ``"pkg/sub.py"``.
        is_package: whether ``local_path`` is a package directory.
        content_hash: hash of the file, or of the directory tree without ``__pycache__``,
            ``*.pyc``, ``*.pyo`` and ``.git``.
    """

    module: str
    local_path: str = field(metadata=_LOCAL_ONLY)
    target: str
    is_package: bool
    content_hash: str

    @classmethod
    def _build(cls, where: str, raw: object) -> PythonSource | None:
        if isinstance(raw, PythonSource):
            return raw
        p = _Problems(where)
        if not isinstance(raw, Mapping):
            p.add(f"python source {raw!r} must be a dict")
            p.raise_if_any()
        assert isinstance(raw, Mapping)
        if not _expect_keys(raw, [f.name for f in dataclasses.fields(cls)], p):
            p.raise_if_any()
        module = raw.get("module")
        if not isinstance(module, str) or not _MODULE_NAME.fullmatch(module):
            p.add(f"module={module!r} is not a dotted module name")
        lp = _check_str(raw.get("local_path"), "local_path", p)
        target = _check_str(raw.get("target"), "target", p)
        is_pkg = _check_bool(raw.get("is_package"), "is_package", p)
        ch = _check_hash(raw.get("content_hash"), "content_hash", p)
        p.raise_if_any()
        return cls(module, lp, target, is_pkg, ch)  # type: ignore[arg-type]


@dataclass(frozen=True)
class AddLocalPythonSourceStep:
    """Local Python modules/packages to make importable in the image, sorted by name."""

    sources: tuple[PythonSource, ...]
    kind: ClassVar[str] = "add_local_python_source"

    @property
    def modules(self) -> tuple[str, ...]:
        """The module names, sorted."""
        return tuple(s.module for s in self.sources)

    @classmethod
    def _build(cls, where: str, sources: Iterable[Any] = ()) -> AddLocalPythonSourceStep:
        p = _Problems(where)
        if isinstance(sources, (str, Mapping)) or not isinstance(sources, Iterable):
            p.add(f"sources={sources!r} must be a list")
            p.raise_if_any()
        by_name: dict[str, PythonSource] = {}
        for i, raw in enumerate(sources):
            src = PythonSource._build(f"{where}: sources[{i}]", raw)
            if src is not None:
                by_name[src.module] = src
        if not by_name:
            p.add("no modules given")
        p.raise_if_any()
        return cls(tuple(by_name[k] for k in sorted(by_name)))

    def _repr(self) -> str:
        return f".add_local_python_source({', '.join(repr(m) for m in self.modules)})"


ImageStep: TypeAlias = (
    PipInstallStep
    | UvPipInstallStep
    | AptInstallStep
    | EnvStep
    | WorkdirStep
    | RunCommandsStep
    | AddLocalFileStep
    | AddLocalDirStep
    | AddLocalPythonSourceStep
)

_STEP_TYPES: dict[str, type] = {
    cls.kind: cls
    for cls in (
        PipInstallStep,
        UvPipInstallStep,
        AptInstallStep,
        EnvStep,
        WorkdirStep,
        RunCommandsStep,
        AddLocalFileStep,
        AddLocalDirStep,
        AddLocalPythonSourceStep,
    )
}


# --------------------------------------------------------------------------- canonical form


def _to_json(obj: Any, for_hash: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kind = getattr(type(obj), "kind", None)
    if isinstance(kind, str):  # steps carry kind as a class attribute
        out["kind"] = kind
    for f in dataclasses.fields(obj):
        if for_hash and not f.metadata.get("hash", True):
            continue
        value = getattr(obj, f.name)
        if value is None:
            continue  # absent optional fields keep old hashes stable when fields are added
        if f.metadata.get("json") == "mapping":
            value = {k: v for k, v in value}
        elif isinstance(value, tuple):
            value = [_to_json(v, for_hash) if dataclasses.is_dataclass(v) else v for v in value]
        out[f.name] = value
    return out


def _python_source_for(name: str) -> tuple[PythonSource | None, str | None]:
    """Resolve one module name to a PythonSource, or return a problem message."""
    if not isinstance(name, str) or not _MODULE_NAME.fullmatch(name):
        return None, (
            f"{name!r} is not a module name; pass the import name, e.g. 'my_package' "
            "(underscores, not dashes)"
        )
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as e:
        spec, err = None, e
    except Exception as e:  # importing a parent package ran user code that failed
        return None, f"module {name!r}: importing its parent package failed: {e!r}"
    else:
        err = None
    if spec is None:
        detail = f" ({err})" if err else ""
        return None, (
            f"module {name!r} was not found{detail}; install it, or add the directory that "
            "contains it to sys.path or PYTHONPATH"
        )
    origin = spec.origin
    locations = list(spec.submodule_search_locations or [])
    target = name.replace(".", "/")
    if spec.submodule_search_locations is not None:  # a package
        if origin and os.path.basename(origin).startswith("__init__."):
            if not origin.endswith(".py"):
                return None, (
                    f"package {name!r} has a compiled __init__ ({origin}); only pure-Python "
                    "sources can be added; install it with pip_install(...) instead"
                )
            path = os.path.dirname(origin)
        elif len(locations) == 1:  # namespace package in one directory
            path = locations[0]
        else:
            return None, (
                f"{name!r} is a namespace package spread over {len(locations)} directories "
                f"({', '.join(locations)}); add its subpackages one by one, or use add_local_dir"
            )
        if not os.path.isdir(path):
            return None, f"package {name!r} resolves to {path!r}, which is not a directory"
        return PythonSource(name, path, target, True, ""), None
    if origin in (None, "built-in", "frozen") or not spec.has_location:
        return None, (
            f"module {name!r} is built into the interpreter; it has no source to add and is "
            "already available wherever that Python runs"
        )
    if origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
        return None, (
            f"module {name!r} is a compiled extension ({origin}); only pure-Python sources can "
            "be added; install it with pip_install(...) instead"
        )
    if not origin.endswith((".py", ".pyw")) or not os.path.isfile(origin):
        return None, (
            f"module {name!r} has no source file on disk (found {origin!r}); only .py files "
            "and packages of them can be added"
        )
    return PythonSource(name, origin, target + ".py", False, ""), None


# --------------------------------------------------------------------------- image


@dataclass(frozen=True)
class Image:
    """An immutable image specification: a base and an ordered tuple of steps.

    Build one with :meth:`debian_slim`, :meth:`from_registry` or :meth:`from_dockerfile`,
    then chain steps; every step method returns a *new* image and leaves this one unchanged.
    Nothing is built or downloaded here. Images compare equal when their bases and steps
    are equal (local paths included); use :attr:`hash` to compare what would be built.

    Attributes:
        base: what the image starts from.
        steps: the steps, in order.
    """

    base: ImageBase
    steps: tuple[ImageStep, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.base, ImageBase):
            _invalid(
                f"Image(base={self.base!r}): base must be an ImageBase; "
                "start from Image.debian_slim() or another constructor"
            )
        if not isinstance(self.steps, tuple) or not all(
            type(s) in _STEP_TYPES.values() for s in self.steps
        ):
            _invalid(f"Image(steps={self.steps!r}): steps must be a tuple of image steps")

    # ---------------------------------------------------------------- constructors

    @classmethod
    def debian_slim(cls, python_version: str | None = None) -> Image:
        """A slim Debian base image with the given Python.

        Args:
            python_version: ``"3.9"`` to ``"3.13"``. Defaults to the calling interpreter's
                major.minor version.

        Raises:
            InvalidError: the version is not one of :data:`SUPPORTED_PYTHON_VERSIONS`
                (including when defaulted from an unsupported calling interpreter).
        """
        where = "Image.debian_slim()"
        if python_version is None:
            python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
            where = (
                f"Image.debian_slim() (defaulted from this interpreter, Python {python_version})"
            )
        return cls(ImageBase._build(where, kind="debian_slim", python_version=python_version))

    @classmethod
    def from_registry(cls, ref: str, *, add_python: str | None = None) -> Image:
        """An arbitrary image from a container registry.

        The reference is checked for syntax only (``[registry[:port]/]name[:tag]
        [@sha256:<digest>]``); nothing is pulled. It is hashed exactly as written: ``python``
        and ``docker.io/library/python:latest`` hash differently, and a moved tag is not
        noticed. Pin a digest for reproducible builds.

        Args:
            ref: the image reference, e.g. ``"nvidia/cuda:12.4.1-runtime-ubuntu22.04"``.
            add_python: a Python (``"3.9"``..``"3.13"``) to install on top; ``None`` uses
                the image's own Python.

        Raises:
            InvalidError: the reference or ``add_python`` is invalid.
        """
        return cls(
            ImageBase._build(
                "Image.from_registry()", kind="registry", ref=ref, add_python=add_python
            )
        )

    @classmethod
    def from_dockerfile(
        cls,
        path: str | os.PathLike[str],
        *,
        context_dir: str | os.PathLike[str] | None = None,
        add_python: str | None = None,
    ) -> Image:
        """An image built from a local Dockerfile.

        The Dockerfile's text is read now and hashed. The build context (``context_dir``,
        default: the Dockerfile's directory) is approximated: when the Dockerfile has any
        ``ADD``/``COPY`` instruction that does not use ``--from=``, the *whole* context
        directory is hashed by content, except ``.git`` and ``__pycache__`` directories.
        ``.dockerignore`` is not read, so a change to an ignored file still changes the hash
        (an extra rebuild, never a stale one). Without such instructions the context is not
        hashed at all.

        Args:
            path: the Dockerfile.
            context_dir: the build context directory.
            add_python: a Python to install on top; ``None`` uses the image's own Python.

        Raises:
            InvalidError: the Dockerfile or context cannot be read, or is not text.
        """
        where = "Image.from_dockerfile()"
        p = _Problems(where)
        dockerfile = _local_path(path, "path", p)
        context = None
        if context_dir is not None:
            context = _local_path(context_dir, "context_dir", p)
        p.raise_if_any()
        assert dockerfile is not None
        if not os.path.isfile(dockerfile):
            what = "is a directory" if os.path.isdir(dockerfile) else "does not exist"
            _invalid(f"{where}: Dockerfile {dockerfile!r} {what}; pass the path of the file")
        if context is None:
            context = os.path.dirname(dockerfile)
        elif not os.path.isdir(context):
            _invalid(f"{where}: context_dir {context!r} is not a directory")
        try:
            with open(dockerfile, "rb") as f:
                data = f.read()
        except OSError as e:
            _invalid(f"{where}: cannot read Dockerfile {dockerfile!r}: {e.strerror or e}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            _invalid(f"{where}: Dockerfile {dockerfile!r} is not UTF-8 text")
        context_hash = None
        if _dockerfile_uses_context(text):
            context_hash = _hash_tree_or_fail(context, _CONTEXT_EXCLUDES, where)
        return cls(
            ImageBase._build(
                where,
                kind="dockerfile",
                dockerfile=text,
                dockerfile_path=dockerfile,
                context_dir=context,
                context_hash=context_hash,
                add_python=add_python,
            )
        )

    # ---------------------------------------------------------------- steps

    def _with(self, step: Any) -> Image:
        return Image(self.base, (*self.steps, step))

    def pip_install(
        self,
        *packages: str | Iterable[str],
        index_url: str | None = None,
        extra_index_url: str | None = None,
        pre: bool = False,
    ) -> Image:
        """Return a new image that ``pip install``\\ s the packages.

        Args:
            *packages: requirement strings (``"torch==2.4.0"``), or lists of them. Surrounding
                whitespace is stripped; duplicates are dropped and the order is not kept.
            index_url: replaces the package index.
            extra_index_url: an additional package index.
            pre: allow pre-releases.

        Returns:
            A new image, or this image unchanged when no package is given.

        Raises:
            InvalidError: a package is empty, not a string or looks like an option; a URL
                is malformed. Every problem is reported at once.
        """
        step = PipInstallStep._build(
            "Image.pip_install()", packages, index_url, extra_index_url, pre, empty_ok=True
        )
        return self if step is None else self._with(step)

    def uv_pip_install(
        self,
        *packages: str | Iterable[str],
        index_url: str | None = None,
        extra_index_url: str | None = None,
        pre: bool = False,
    ) -> Image:
        """Like :meth:`pip_install`, installing with ``uv pip install``.

        Raises:
            InvalidError: as :meth:`pip_install`.
        """
        step = UvPipInstallStep._build(
            "Image.uv_pip_install()", packages, index_url, extra_index_url, pre, empty_ok=True
        )
        return self if step is None else self._with(step)

    def apt_install(self, *packages: str | Iterable[str]) -> Image:
        """Return a new image that ``apt-get install``\\ s Debian packages.

        Needs a container: a process-based provider cannot honour it.

        Args:
            *packages: package names (``"git"``, ``"libgl1=1.7.0-1"``), or lists of them;
                de-duplicated and sorted.

        Raises:
            InvalidError: a name is empty, not a string, contains whitespace or starts
                with ``-``.
        """
        step = AptInstallStep._build("Image.apt_install()", packages, empty_ok=True)
        return self if step is None else self._with(step)

    def env(self, vars: Mapping[str, str] | None = None, **kwargs: str) -> Image:
        """Return a new image with environment variables set.

        Args:
            vars: variables as a dict (needed for names that are not Python identifiers).
            **kwargs: more variables; a name given both ways must have the same value.

        Raises:
            InvalidError: a name is not ``[A-Za-z_][A-Za-z0-9_]*``, a value is not a string,
                or a name is given twice with different values.
        """
        where = "Image.env()"
        p = _Problems(where)
        merged: dict[Any, Any] = {}
        if vars is not None:
            if isinstance(vars, Mapping):
                merged.update(vars)
            else:
                p.add(f"vars={vars!r} must be a dict, e.g. env({{'HF_HOME': '/cache'}})")
        for key, value in kwargs.items():
            if key in merged and merged[key] != value:
                p.add(f"{key!r} is given as {merged[key]!r} in vars and as {value!r}; keep one")
            merged[key] = value
        p.raise_if_any()
        step = EnvStep._build(where, merged, empty_ok=True)
        return self if step is None else self._with(step)

    def workdir(self, path: str | os.PathLike[str]) -> Image:
        """Return a new image whose working directory is ``path`` (absolute, POSIX).

        Raises:
            InvalidError: the path is empty or relative.
        """
        return self._with(WorkdirStep._build("Image.workdir()", path))

    def run_commands(self, *commands: str | Iterable[str]) -> Image:
        """Return a new image that runs shell commands, in order, verbatim.

        Needs a container: a process-based provider cannot honour it. Commands are hashed
        as text; what they download is not (``curl ... | sh`` is not re-run when the remote
        content changes).

        Raises:
            InvalidError: a command is empty or not a string.
        """
        step = RunCommandsStep._build("Image.run_commands()", commands, empty_ok=True)
        return self if step is None else self._with(step)

    def add_local_file(
        self, local_path: str | os.PathLike[str], remote_path: str | os.PathLike[str]
    ) -> Image:
        """Return a new image with a local file copied in.

        The file is read and hashed now (bytes and executable bit, not mtime); later edits
        are not seen by this image.

        Args:
            local_path: an existing regular file (symlinks are followed).
            remote_path: absolute path in the image; ending in ``/`` puts the file inside
                that directory under its own name.

        Raises:
            InvalidError: the file does not exist, is a directory or cannot be read; the
                remote path is relative.
        """
        where = "Image.add_local_file()"
        p = _Problems(where)
        local = _local_path(local_path, "local_path", p)
        remote = os.fspath(remote_path) if isinstance(remote_path, os.PathLike) else remote_path
        if local is not None and isinstance(remote, str) and remote.endswith("/"):
            remote = remote + os.path.basename(local)
        remote = _remote_path(remote, "remote_path", p)
        p.raise_if_any()
        assert local is not None
        try:
            st = os.stat(local)
        except OSError:
            _invalid(f"{where}: local file {local!r} does not exist; check the path")
        if stat.S_ISDIR(st.st_mode):
            _invalid(f"{where}: {local!r} is a directory; use add_local_dir() for directories")
        if not stat.S_ISREG(st.st_mode):
            _invalid(f"{where}: {local!r} is not a regular file")
        digest = _hash_file_or_fail(local, where)
        return self._with(
            AddLocalFileStep._build(where, local, remote, digest, bool(st.st_mode & 0o111))
        )

    def add_local_dir(
        self,
        local_path: str | os.PathLike[str],
        remote_path: str | os.PathLike[str],
        *,
        ignore: Iterable[str] = (),
    ) -> Image:
        """Return a new image with a local directory tree copied in.

        The tree is walked and hashed now: relative paths, bytes and executable bits (not
        mtimes). Symlinked directories are not followed. Nothing is excluded by default.

        Args:
            local_path: an existing directory.
            remote_path: absolute path in the image.
            ignore: glob patterns (``fnmatch``, where ``*`` also crosses ``/``) matched
                against each path relative to ``local_path``; a pattern without ``/`` also
                matches any file or directory of that name, a matched directory is skipped
                whole, and a leading ``**/`` matches at any depth. A trailing ``/`` is
                dropped. Negation (``!``) and callables are not supported.

        Raises:
            InvalidError: the directory does not exist or a file in it cannot be read; the
                remote path is relative; a pattern is not a string.
        """
        where = "Image.add_local_dir()"
        p = _Problems(where)
        local = _local_path(local_path, "local_path", p)
        remote = _remote_path(remote_path, "remote_path", p)
        patterns = _normalise_ignore(ignore, p)
        p.raise_if_any()
        assert local is not None
        if not os.path.isdir(local):
            what = "is a file; use add_local_file()" if os.path.exists(local) else "does not exist"
            _invalid(f"{where}: local directory {local!r} {what}")
        digest = _hash_tree_or_fail(local, patterns, where)
        return self._with(AddLocalDirStep._build(where, local, remote, digest, patterns))

    def add_local_python_source(self, *module_names: str | Iterable[str]) -> Image:
        """Return a new image to which local Python modules or packages are added.

        Each name is resolved now with :func:`importlib.util.find_spec` (for a dotted name
        that imports its parent packages, running their ``__init__``). A module adds its
        ``.py`` file, a package its whole directory except ``__pycache__``, ``*.pyc``,
        ``*.pyo`` and ``.git``; both are hashed by content now. The builder places each at
        :attr:`PythonSource.target` under an import root; for a dotted name only that
        submodule is added, not its parents.

        Args:
            *module_names: import names (``"my_package"``, ``"my_package.utils"``), or
                lists of them; order and duplicates do not matter.

        Raises:
            InvalidError: naming every module that is not found, is built in, is a compiled
                extension, has no source file, or is a namespace package over several
                directories.
        """
        where = "Image.add_local_python_source()"
        p = _Problems(where)
        names = sorted(set(_flatten(module_names, "module name", p)))
        sources = []
        for name in names:
            src, problem = _python_source_for(name)
            if problem:
                p.add(problem)
            elif src is not None:
                sources.append(src)
        if not names and not p.items:
            return self
        p.raise_if_any()
        hashed = []
        for src in sources:
            if src.is_package:
                digest = _hash_tree_or_fail(src.local_path, _PYTHON_SOURCE_EXCLUDES, where)
            else:
                digest = _hash_file_or_fail(src.local_path, where)
            hashed.append(dataclasses.replace(src, content_hash=digest))
        return self._with(AddLocalPythonSourceStep._build(where, hashed))

    # ---------------------------------------------------------------- queries

    @property
    def python_version(self) -> str | None:
        """The Python this image provides as ``"3.X"``, or ``None`` when the base decides."""
        return self.base.python_version or self.base.add_python

    def needs_container(self) -> bool:
        """Whether only a container provider can build this image.

        True when the base is a registry image or a Dockerfile, or when any step is
        ``apt_install`` or ``run_commands``. A process-based provider (a virtual
        environment on the host) can honour the rest.
        """
        if self.base.kind != "debian_slim":
            return True
        return any(isinstance(s, (AptInstallStep, RunCommandsStep)) for s in self.steps)

    def is_base_only(self) -> bool:
        """Whether the image is its base with no steps."""
        return not self.steps

    def to_dict(self) -> dict[str, Any]:
        """The canonical, JSON-able form, including local paths.

        Optional fields that are ``None`` are omitted. Local files are represented by
        their path and content hash; their bytes are not included.
        """
        return {
            "format": _FORMAT,
            "base": _to_json(self.base, for_hash=False),
            "steps": [_to_json(s, for_hash=False) for s in self.steps],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Image:
        """Rebuild an image from :meth:`to_dict` output (also after a JSON round trip).

        Local files are not read again: the recorded content hashes are trusted.

        Raises:
            InvalidError: the dict is malformed, has unknown fields or kinds, or a value
                fails the same checks as the step methods.
        """
        where = "Image.from_dict()"
        p = _Problems(where)
        if not isinstance(data, Mapping):
            _invalid(f"{where}: expected a dict from Image.to_dict(), got {type(data).__name__}")
        _expect_keys(data, ("format", "base", "steps"), p)
        if data.get("format") != _FORMAT:
            p.add(f"format={data.get('format')!r} is not supported; expected {_FORMAT!r}")
        base, steps = data.get("base"), data.get("steps", [])
        if not isinstance(base, Mapping):
            p.add(f"base={base!r} must be a dict")
        if not isinstance(steps, list):
            p.add(f"steps={steps!r} must be a list")
        p.raise_if_any()
        assert isinstance(base, Mapping) and isinstance(steps, list)
        bp = _Problems(f"{where}: base")
        _expect_keys(base, [f.name for f in dataclasses.fields(ImageBase)], bp)
        bp.raise_if_any()
        built_base = ImageBase._build(f"{where}: base", **base)
        built_steps = []
        for i, raw in enumerate(steps):
            sp = _Problems(f"{where}: steps[{i}]")
            if not isinstance(raw, Mapping) or raw.get("kind") not in _STEP_TYPES:
                kind = raw.get("kind") if isinstance(raw, Mapping) else raw
                sp.add(f"{kind!r} is not a step kind; expected one of {', '.join(_STEP_TYPES)}")
                sp.raise_if_any()
            step_cls = _STEP_TYPES[raw["kind"]]
            kwargs = {k: v for k, v in raw.items() if k != "kind"}
            _expect_keys(kwargs, [f.name for f in dataclasses.fields(step_cls)], sp)
            sp.raise_if_any()
            built_steps.append(step_cls._build(sp.where, **kwargs))
        return cls(built_base, tuple(built_steps))

    @functools.cached_property
    def hash(self) -> str:
        """Hex SHA-256 of the canonical form without local paths. Stable across processes."""
        form = {
            "format": _FORMAT,
            "base": _to_json(self.base, for_hash=True),
            "steps": [_to_json(s, for_hash=True) for s in self.steps],
        }
        text = json.dumps(form, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("ascii")).hexdigest()

    @property
    def tag(self) -> str:
        """The first 16 hex characters of :attr:`hash`, for image tags and cache keys."""
        return self.hash[:16]

    def __repr__(self) -> str:
        return self.base._repr() + "".join(s._repr() for s in self.steps)


_DOCKERFILE_COPY = re.compile(
    r"^\s*(?:ONBUILD\s+)?(?:ADD|COPY)\s+(.*)$", re.IGNORECASE | re.MULTILINE
)


def _dockerfile_uses_context(text: str) -> bool:
    """Whether any ADD/COPY may read the build context (errs towards True)."""
    for match in _DOCKERFILE_COPY.finditer(text):
        if not re.match(r"(?:--\S+\s+)*?--from=", match.group(1), re.IGNORECASE):
            return True
    return False
