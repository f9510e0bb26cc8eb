"""The image steps: frozen dataclasses, each normalised and checked by its ``_build``.

Every step method of :class:`~apothic._image._spec.Image` and :meth:`Image.from_dict` build
their steps through the same ``_build`` class methods, so a spec read back from its dict is
checked and normalised exactly as one defined in code.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from ._canonical import LOCAL_ONLY
from ._checks import (
    MODULE_NAME,
    Problems,
    check_bool,
    check_hash,
    check_packages,
    check_remote_path,
    check_str,
    check_url,
    expect_keys,
    flatten,
)
from ._tree import normalise_ignore

__all__ = [
    "STEP_TYPES",
    "AddLocalDirStep",
    "AddLocalFileStep",
    "AddLocalPythonSourceStep",
    "AptInstallStep",
    "EnvStep",
    "ImageStep",
    "PipInstallStep",
    "PythonSource",
    "RunCommandsStep",
    "UvPipInstallStep",
    "WorkdirStep",
]

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
        p = Problems(where)
        pkgs = check_packages(packages, "package", False, p)
        index = check_url(index_url, "index_url", p)
        extra = check_url(extra_index_url, "extra_index_url", p)
        pre_ok = check_bool(pre, "pre", p)
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
        p = Problems(where)
        pkgs = check_packages(packages, "apt package", True, p)
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
        p = Problems(where)
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
        p = Problems(where)
        norm = check_remote_path(path, "path", p)
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
        p = Problems(where)
        cmds = []
        for cmd in flatten(commands, "command", p):
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

    local_path: str = field(metadata=LOCAL_ONLY)
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
        p = Problems(where)
        lp = check_str(local_path, "local_path", p)
        rp = check_remote_path(remote_path, "remote_path", p)
        ch = check_hash(content_hash, "content_hash", p)
        ex = check_bool(executable, "executable", p)
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

    local_path: str = field(metadata=LOCAL_ONLY)
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
        p = Problems(where)
        lp = check_str(local_path, "local_path", p)
        rp = check_remote_path(remote_path, "remote_path", p)
        ch = check_hash(content_hash, "content_hash", p)
        ig = normalise_ignore(ignore, p)
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
    local_path: str = field(metadata=LOCAL_ONLY)
    target: str
    is_package: bool
    content_hash: str

    @classmethod
    def _build(cls, where: str, raw: object) -> PythonSource | None:
        if isinstance(raw, PythonSource):
            return raw
        p = Problems(where)
        if not isinstance(raw, Mapping):
            p.add(f"python source {raw!r} must be a dict")
            p.raise_if_any()
        assert isinstance(raw, Mapping)
        if not expect_keys(raw, [f.name for f in dataclasses.fields(cls)], p):
            p.raise_if_any()
        module = raw.get("module")
        if not isinstance(module, str) or not MODULE_NAME.fullmatch(module):
            p.add(f"module={module!r} is not a dotted module name")
        lp = check_str(raw.get("local_path"), "local_path", p)
        target = check_str(raw.get("target"), "target", p)
        is_pkg = check_bool(raw.get("is_package"), "is_package", p)
        ch = check_hash(raw.get("content_hash"), "content_hash", p)
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
        p = Problems(where)
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

STEP_TYPES: dict[str, type] = {
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
