"""The public image specification: :class:`Image`, its constructors and step methods.

An :class:`Image` is a value: a base (:class:`~apothic._image._base.ImageBase`) plus an
ordered tuple of steps. Building it is somebody else's job (a provider turns it into a
virtual environment or a container image); this module only describes the image. How it is
hashed is in :mod:`apothic._image._canonical`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._base import ImageBase, dockerfile_uses_context
from ._canonical import FORMAT, canonical_form, form_hash
from ._checks import Problems, check_local_path, check_remote_path, expect_keys, flatten, invalid
from ._sources import python_source_for
from ._steps import (
    STEP_TYPES,
    AddLocalDirStep,
    AddLocalFileStep,
    AddLocalPythonSourceStep,
    AptInstallStep,
    EnvStep,
    ImageStep,
    PipInstallStep,
    RunCommandsStep,
    UvPipInstallStep,
    WorkdirStep,
)
from ._tree import (
    CONTEXT_EXCLUDES,
    PYTHON_SOURCE_EXCLUDES,
    hash_file_or_fail,
    hash_tree_or_fail,
    normalise_ignore,
)

__all__ = ["Image"]


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
            invalid(
                f"Image(base={self.base!r}): base must be an ImageBase; "
                "start from Image.debian_slim() or another constructor"
            )
        if not isinstance(self.steps, tuple) or not all(
            type(s) in STEP_TYPES.values() for s in self.steps
        ):
            invalid(f"Image(steps={self.steps!r}): steps must be a tuple of image steps")

    def imports(self) -> Any:
        """``with image.imports(): import numpy``: imports that exist only inside this image.

        On the caller's machine an ``ImportError`` in the block is swallowed and the names it
        would bind become placeholders that unpickle, in the function's container, as the real
        modules; inside a container the block raises as usual (``_image/_imports.py``).
        """
        from ._imports import ImageImports

        return ImageImports(self)

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
        p = Problems(where)
        dockerfile = check_local_path(path, "path", p)
        context = None
        if context_dir is not None:
            context = check_local_path(context_dir, "context_dir", p)
        p.raise_if_any()
        assert dockerfile is not None
        if not os.path.isfile(dockerfile):
            what = "is a directory" if os.path.isdir(dockerfile) else "does not exist"
            invalid(f"{where}: Dockerfile {dockerfile!r} {what}; pass the path of the file")
        if context is None:
            context = os.path.dirname(dockerfile)
        elif not os.path.isdir(context):
            invalid(f"{where}: context_dir {context!r} is not a directory")
        try:
            with open(dockerfile, "rb") as f:
                data = f.read()
        except OSError as e:
            invalid(f"{where}: cannot read Dockerfile {dockerfile!r}: {e.strerror or e}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            invalid(f"{where}: Dockerfile {dockerfile!r} is not UTF-8 text")
        context_hash = None
        if dockerfile_uses_context(text):
            context_hash = hash_tree_or_fail(context, CONTEXT_EXCLUDES, where)
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
        p = Problems(where)
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
        p = Problems(where)
        local = check_local_path(local_path, "local_path", p)
        remote = os.fspath(remote_path) if isinstance(remote_path, os.PathLike) else remote_path
        if local is not None and isinstance(remote, str) and remote.endswith("/"):
            remote = remote + os.path.basename(local)
        remote = check_remote_path(remote, "remote_path", p)
        p.raise_if_any()
        assert local is not None
        try:
            st = os.stat(local)
        except OSError:
            invalid(f"{where}: local file {local!r} does not exist; check the path")
        if stat.S_ISDIR(st.st_mode):
            invalid(f"{where}: {local!r} is a directory; use add_local_dir() for directories")
        if not stat.S_ISREG(st.st_mode):
            invalid(f"{where}: {local!r} is not a regular file")
        digest = hash_file_or_fail(local, where)
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
        p = Problems(where)
        local = check_local_path(local_path, "local_path", p)
        remote = check_remote_path(remote_path, "remote_path", p)
        patterns = normalise_ignore(ignore, p)
        p.raise_if_any()
        assert local is not None
        if not os.path.isdir(local):
            what = "is a file; use add_local_file()" if os.path.exists(local) else "does not exist"
            invalid(f"{where}: local directory {local!r} {what}")
        digest = hash_tree_or_fail(local, patterns, where)
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
        p = Problems(where)
        names = sorted(set(flatten(module_names, "module name", p)))
        sources = []
        for name in names:
            src, problem = python_source_for(name)
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
                digest = hash_tree_or_fail(src.local_path, PYTHON_SOURCE_EXCLUDES, where)
            else:
                digest = hash_file_or_fail(src.local_path, where)
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
        return canonical_form(self.base, self.steps, for_hash=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Image:
        """Rebuild an image from :meth:`to_dict` output (also after a JSON round trip).

        Local files are not read again: the recorded content hashes are trusted.

        Raises:
            InvalidError: the dict is malformed, has unknown fields or kinds, or a value
                fails the same checks as the step methods.
        """
        where = "Image.from_dict()"
        p = Problems(where)
        if not isinstance(data, Mapping):
            invalid(f"{where}: expected a dict from Image.to_dict(), got {type(data).__name__}")
        expect_keys(data, ("format", "base", "steps"), p)
        if data.get("format") != FORMAT:
            p.add(f"format={data.get('format')!r} is not supported; expected {FORMAT!r}")
        base, steps = data.get("base"), data.get("steps", [])
        if not isinstance(base, Mapping):
            p.add(f"base={base!r} must be a dict")
        if not isinstance(steps, list):
            p.add(f"steps={steps!r} must be a list")
        p.raise_if_any()
        assert isinstance(base, Mapping) and isinstance(steps, list)
        bp = Problems(f"{where}: base")
        expect_keys(base, [f.name for f in dataclasses.fields(ImageBase)], bp)
        bp.raise_if_any()
        built_base = ImageBase._build(f"{where}: base", **base)
        built_steps = []
        for i, raw in enumerate(steps):
            sp = Problems(f"{where}: steps[{i}]")
            if not isinstance(raw, Mapping) or raw.get("kind") not in STEP_TYPES:
                kind = raw.get("kind") if isinstance(raw, Mapping) else raw
                sp.add(f"{kind!r} is not a step kind; expected one of {', '.join(STEP_TYPES)}")
                sp.raise_if_any()
            step_cls = STEP_TYPES[raw["kind"]]
            kwargs = {k: v for k, v in raw.items() if k != "kind"}
            expect_keys(kwargs, [f.name for f in dataclasses.fields(step_cls)], sp)
            sp.raise_if_any()
            built_steps.append(step_cls._build(sp.where, **kwargs))
        return cls(built_base, tuple(built_steps))

    @functools.cached_property
    def hash(self) -> str:
        """Hex SHA-256 of the canonical form without local paths. Stable across processes."""
        return form_hash(canonical_form(self.base, self.steps, for_hash=True))

    @property
    def tag(self) -> str:
        """The first 16 hex characters of :attr:`hash`, for image tags and cache keys."""
        return self.hash[:16]

    def __repr__(self) -> str:
        return self.base._repr() + "".join(s._repr() for s in self.steps)
