"""Images for the ``process`` provider: a cached virtual environment per image hash.

:func:`ensure_venv` turns an :class:`apothic.Image` into a virtual environment under
``root`` whose ``bin/python -m apothic.runtime`` runs a function container:

* The venv is made with ``uv`` when it is installed (``$APOTHIC_UV``, ``uv`` on ``PATH``, or
  the ``uv`` Python package), else with ``python -m venv`` and pip, from *this* interpreter:
  the image's Python must be this interpreter's major.minor.
* Apothic itself is installed first: editable from its checkout when this Apothic runs from
  one (so code changes show without a rebuild), else from a wheel repacked from the installed
  distribution; its runtime dependencies are pinned to the versions installed here.
* Then the steps in order: ``pip_install`` (pip, with this host's pip configuration),
  ``uv_pip_install`` (uv when installed, else pip, said in the output), ``env`` and
  ``workdir`` (recorded for the caller, see :class:`VenvImage`), and the local files.
* ``apt_install``, ``run_commands``, ``from_registry`` and ``from_dockerfile`` need a real
  container: :class:`ImageNotSupported` lists every such step and names the docker provider.

Local files keep their absolute paths: a file added at ``/app/data.txt`` is copied to
``<venv>/fs/app/data.txt`` and the container sees it at ``/app/data.txt``, through an overlay
mount of ``<venv>/fs/app`` over the host's ``/app`` in its own mount namespace (the process
provider, :mod:`apothic.placement.providers.process`); ``workdir("/app")`` is the folder it
starts in. :func:`image_paths` names those folders: where files were added (the folder of a
file, the target of a directory) and the workdir, the outermost of nested ones. Nothing is
rebased. Python sources from ``add_local_python_source`` go to ``<venv>/apothic-src``,
which a ``.pth`` file puts on the venv's ``sys.path``.

Caching and concurrency: the venv of an image lives at ``root/<image.tag>-<runtime key>``
(the runtime key covers this Apothic and its pinned dependencies). That path is a symlink,
made last, to the folder the venv was built in (``root/.store/...``, never moved, since
venvs are not relocatable), so a venv is either complete or absent; checking for it is one
``stat``. Builders of the same image on one host take a file lock, so the second waits and
reuses the first's venv; were the lock unavailable, the symlink still makes one win and the
other's build is discarded. Nothing removes old venvs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import posixpath
import shutil
import sys
import sysconfig
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from apothic._image import (
    PYTHON_SOURCE_EXCLUDES,
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
    walk_tree,
)

from .errors import ImageBuildFailed, ImageNotSupported
from .output import BuildOutput, OnOutput, step_name
from .pip_settings import QUIET_PIP_ENV, host_ca_bundle, host_pip_settings, step_pip_options
from .runtime import host_python, installed_record, runtime_pins, runtime_source
from .wheels import runtime_wheels

__all__ = ["MANIFEST", "VenvImage", "check_venv_image", "ensure_venv", "find_uv", "image_paths", "read_venv_image"]

#: The file in each venv that records what the caller needs to run in it.
MANIFEST = "apothic-image.json"


@dataclasses.dataclass(frozen=True)
class VenvImage:
    """What a built venv asks of the process that runs in it.

    Attributes:
        path: the venv (the stable symlink under ``root``).
        python: ``<path>/bin/python``.
        env: the image's environment variables (``env`` steps, in order); add them to the
            container's environment.
        workdir: the image's ``workdir`` (an absolute path in the image), or None.
        image_hash: :attr:`apothic.Image.hash`.
        fs: the folder holding the image's files at their paths (``<fs>/app/data.txt`` is
            ``/app/data.txt``).
        paths: the image's folders (:func:`image_paths`) to show at their paths.
    """

    path: Path
    python: Path
    env: Mapping[str, str]
    workdir: str | None
    image_hash: str
    fs: Path = Path("/nonexistent")
    paths: tuple[str, ...] = ()

    def folder(self, image_path: str) -> Path:
        """The folder holding what the image put at ``image_path``."""
        return self.fs / image_path.lstrip("/")


def read_venv_image(path: Path) -> VenvImage:
    """Read the :class:`VenvImage` of a venv made by :func:`ensure_venv`.

    Raises:
        OSError: ``path`` is not such a venv.
    """
    data = json.loads((path / MANIFEST).read_text())
    return VenvImage(
        path=path,
        python=path / "bin" / "python",
        env=dict(data["env"]),
        workdir=data.get("workdir") or None,
        image_hash=data["image_hash"],
        fs=path / "fs",
        paths=tuple(data.get("paths") or ()),
    )


def image_paths(image: Image) -> list[str]:
    """The image's folders a container shows at their paths: the folder of each added file, each
    added directory, the workdir; the outermost of nested ones, ``/`` excluded when only the
    workdir is there (a file added at ``/x`` gives ``/``, which the caller refuses)."""
    found = []
    for step in image.steps:
        if isinstance(step, AddLocalFileStep):
            found.append(posixpath.dirname(step.remote_path))
        elif isinstance(step, AddLocalDirStep):
            found.append(step.remote_path)
        elif isinstance(step, WorkdirStep) and step.path != "/":
            found.append(step.path)
    outer: list[str] = []
    for p in sorted(set(found), key=len):
        if not any(p == o or p.startswith(o.rstrip("/") + "/") for o in outer):
            outer.append(p)
    return outer


def find_uv() -> str | None:
    """The ``uv`` executable to use, or None: ``$APOTHIC_UV``, ``uv`` on PATH, the uv package."""
    env = os.environ.get("APOTHIC_UV")
    if env and os.access(env, os.X_OK):
        return env
    found = shutil.which("uv")
    if found:
        return found
    if importlib.util.find_spec("uv") is not None:
        with contextlib.suppress(Exception):
            import uv  # type: ignore[import-not-found]

            return str(uv.find_uv_bin())
    return None


def check_venv_image(image: Image) -> None:
    """Raise :class:`ImageNotSupported` listing every part a venv cannot honour."""
    problems = []
    base = image.base
    if base.kind == "registry":
        problems.append(f"Image.from_registry({base.ref!r}) is a container image")
    elif base.kind == "dockerfile":
        problems.append(
            f"Image.from_dockerfile({base.dockerfile_path or '<dockerfile>'!r}) needs a container build"
        )
    elif base.python_version and base.python_version != host_python():
        problems.append(
            f"Image.debian_slim(python_version={base.python_version!r}) needs Python "
            f"{base.python_version}, but this host runs Python {host_python()}"
        )
    for step in image.steps:
        if isinstance(step, AptInstallStep):
            problems.append(f"{step_name(step)} installs Debian packages, which needs a container")
        elif isinstance(step, RunCommandsStep):
            problems.append(f"{step_name(step)} runs shell commands, which needs a container")
    if problems:
        listed = "; ".join(problems)
        first = problems[0].split(" ", 1)[0]
        fixes = []
        if base.kind != "debian_slim" or (base.python_version and base.python_version != host_python()):
            fixes.append(f"start from Image.debian_slim({host_python()!r})")
        if any(isinstance(st, (AptInstallStep, RunCommandsStep)) for st in image.steps):
            fixes.append("remove the container-only steps")
        other = " and ".join(fixes)
        raise ImageNotSupported(
            first,
            reason=(
                f"the process provider builds virtual environments and cannot honour: {listed}. "
                f"Fix: run this function on the docker provider, or {other}"
            ),
        )


@functools.cache
def _runtime_key() -> str:
    src = runtime_source()
    digest = hashlib.sha256(b"apothic-venv-runtime-v2\n")
    digest.update(f"{sys.version_info[:2]}\n{src.version}\n{src.requirements}\n".encode())
    digest.update(runtime_pins().encode())
    if src.source_root is not None:
        digest.update(f"editable:{src.source_root}\n".encode())
    else:
        digest.update(installed_record().encode())
    return digest.hexdigest()[:10]


class _Runner:
    """Runs build commands, streaming their output and keeping each step's tail."""

    def __init__(self, on_output: OnOutput | None, venv: Path) -> None:
        self.out = BuildOutput(on_output)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(
            VIRTUAL_ENV=str(venv),
            PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            **QUIET_PIP_ENV,
        )
        # uv reads no pip configuration: give it the CA bundle pip trusts, as the Docker
        # builds do, so that uv installs work wherever pip's do.
        bundle = host_ca_bundle()
        if bundle:
            env.setdefault("SSL_CERT_FILE", bundle)
        self.env = env

    def line(self, text: str) -> None:
        self.out.line(text)

    def start(self, step: str) -> None:
        self.out.start_step(step)

    async def run(self, step: str, argv: Sequence[str], reason: str = "") -> None:
        """Run ``argv``; raise ImageBuildFailed naming ``step`` when it fails."""
        self.line("$ " + " ".join(argv))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
            )
        except OSError as e:
            raise ImageBuildFailed(step, self.out.tail_text(), reason=f"cannot run {argv[0]}: {e}") from None
        assert proc.stdout is not None
        try:
            partial = b""
            while chunk := await proc.stdout.read(65536):  # no line-length limit, unlike readline
                *lines, partial = (partial + chunk).split(b"\n")
                for raw in lines:
                    self.line(raw.decode("utf-8", "replace").rstrip("\r").rsplit("\r", 1)[-1])
            if partial:
                self.line(partial.decode("utf-8", "replace").rstrip("\r"))
            code = await proc.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if code != 0:
            raise ImageBuildFailed(step, self.out.tail_text(), reason=reason or f"exited with status {code}")


def _copy_file(src: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)


def _copy_tree(src: str, dest: Path, ignore: tuple[str, ...]) -> None:
    """Copy a tree as :func:`apothic._image.walk_tree` (which the image hash also walks) gives it."""
    dest.mkdir(parents=True, exist_ok=True)
    for full, rel, kind in walk_tree(src, ignore):
        if kind == "dir":
            (dest / rel).mkdir(exist_ok=True)
        elif kind == "link":
            os.symlink(os.readlink(full), dest / rel)
        else:
            shutil.copy2(full, dest / rel)


def _in_fs(fs: Path, remote: str) -> Path:
    """Where the venv keeps what the image puts at ``remote``."""
    return fs / remote.lstrip("/")


async def _build(image: Image, store: Path, run: _Runner) -> dict[str, Any]:
    """Build the venv in ``store``; returns the manifest data."""
    uv = find_uv()
    py = store / "bin" / "python"
    settings = host_pip_settings()
    src = runtime_source()

    run.start("create virtual environment")
    if uv:
        await run.run(
            "create virtual environment", [uv, "venv", "--seed", "--python", sys.executable, str(store)]
        )
    else:
        await run.run("create virtual environment", [sys.executable, "-m", "venv", str(store)])

    run.start("apothic runtime")
    pins = store / "apothic-pins.txt"
    pins.write_text(runtime_pins())
    if src.source_root is not None:
        target = ["-e", str(src.source_root)]
    else:
        wheels = await asyncio.to_thread(runtime_wheels)
        target = [str(next(wheels.glob("apothic-*.whl")))]
    if uv:
        base = [uv, "pip", "install", "--python", str(py), *settings.uv_args()]
        await run.run("apothic runtime", [*base, "--no-deps", *target])
        await run.run("apothic runtime", [*base, "-c", str(pins), *src.requirements])
    else:
        base = [str(py), "-m", "pip", "install"]
        await run.run("apothic runtime", [*base, "--no-deps", *target])
        await run.run("apothic runtime", [*base, "-c", str(pins), *src.requirements])

    fs = store / "fs"
    sources = store / "apothic-src"
    env: dict[str, str] = {}
    workdir: str | None = None
    for step in image.steps:
        name = step_name(step)
        run.start(name)
        if isinstance(step, (PipInstallStep, UvPipInstallStep)):
            opts = step_pip_options(step)
            if isinstance(step, UvPipInstallStep) and uv:
                argv = [uv, "pip", "install", "--python", str(py), *settings.uv_args(), *opts, *step.packages]
            else:
                if isinstance(step, UvPipInstallStep):
                    run.line("apothic: uv is not installed on this host; installing with pip instead")
                argv = [str(py), "-m", "pip", "install", *opts, *step.packages]
            await run.run(name, argv)
        elif isinstance(step, EnvStep):
            env.update(step.as_dict())
        elif isinstance(step, WorkdirStep):
            workdir = step.path
            _in_fs(fs, step.path).mkdir(parents=True, exist_ok=True)
        elif isinstance(step, AddLocalFileStep):
            await asyncio.to_thread(_copy_file, step.local_path, _in_fs(fs, step.remote_path))
        elif isinstance(step, AddLocalDirStep):
            await asyncio.to_thread(_copy_tree, step.local_path, _in_fs(fs, step.remote_path), step.ignore)
        elif isinstance(step, AddLocalPythonSourceStep):
            for s in step.sources:
                dest = sources / s.target
                if s.is_package:
                    await asyncio.to_thread(_copy_tree, s.local_path, dest, PYTHON_SOURCE_EXCLUDES)
                else:
                    await asyncio.to_thread(_copy_file, s.local_path, dest)
        else:  # check_venv_image refused the rest
            raise ImageNotSupported(name, reason="this step needs a container")

    sources.mkdir(exist_ok=True)
    fs.mkdir(exist_ok=True)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(store), "platbase": str(store)}))
    (purelib / "apothic-sources.pth").write_text(f"{sources}\n")
    run.start("check")
    await run.run(
        "check",
        [str(py), "-c", "import apothic.runtime, sys; print('apothic runtime on', sys.version.split()[0])"],
    )
    return {"image_hash": image.hash, "env": env, "workdir": workdir, "paths": image_paths(image)}


async def _lock(path: Path) -> int:
    """Take an exclusive lock on ``path`` (polling, so that cancellation leaves no lock behind)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                await asyncio.sleep(0.2)
    except BaseException:
        os.close(fd)
        raise


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


async def ensure_venv(image: Image, *, root: Path, on_output: OnOutput | None = None) -> Path:
    """Build or reuse the virtual environment of ``image`` under ``root``.

    Args:
        image: the spec; only ``debian_slim`` bases with this interpreter's Python and steps
            that need no container are accepted.
        root: the folder holding the venvs (created if missing).
        on_output: called with each line of build output.

    Returns:
        The venv's path; ``<path>/bin/python -m apothic.runtime`` runs a container, and
        :func:`read_venv_image` gives its environment and working directory.

    Raises:
        ImageNotSupported: the spec needs a container (apt, shell commands, a registry or
            Dockerfile base) or another Python; nothing is built.
        ImageBuildFailed: a step failed; ``step`` names it and ``output_tail`` has its output.
    """
    link = root / f"{image.tag}-{_runtime_key()}"
    if os.path.exists(link / MANIFEST):
        return link
    check_venv_image(image)
    root.mkdir(parents=True, exist_ok=True)
    (root / ".store").mkdir(exist_ok=True)
    fd = await _lock(root / f".{link.name}.lock")
    try:
        if os.path.exists(link / MANIFEST):
            return link
        store = root / ".store" / f"{link.name}-{uuid.uuid4().hex[:8]}"
        run = _Runner(on_output, store)
        try:
            manifest = await _build(image, store, run)
            (store / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            try:
                os.symlink(store, link)
            except FileExistsError:  # another builder (without the lock) won
                await asyncio.to_thread(shutil.rmtree, store, True)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, store, True))
            raise
        return link
    finally:
        _unlock(fd)
