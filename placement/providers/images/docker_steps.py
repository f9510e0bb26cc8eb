"""The steps of a spec, as the docker builder runs them: shell scripts and file copies."""

from __future__ import annotations

import asyncio
import shlex

from apothic._image import (
    PYTHON_SOURCE_EXCLUDES,
    AddLocalDirStep,
    AddLocalFileStep,
    AddLocalPythonSourceStep,
    AptInstallStep,
    EnvStep,
    PipInstallStep,
    RunCommandsStep,
    UvPipInstallStep,
    WorkdirStep,
)

from .docker_builder import Builder, dir_entries
from .docker_layout import BUILD_MOUNT, RUNTIME_PYTHON, SOURCES_ROOT
from .errors import ImageNotSupported
from .output import step_name
from .pip_settings import step_pip_options

__all__ = ["apply_steps", "apt_command", "pip_command"]


def pip_command(step: PipInstallStep | UvPipInstallStep) -> str:
    """The build script of a ``pip_install`` or ``uv_pip_install`` step (uv falls back to pip)."""
    pkgs = " ".join(shlex.quote(p) for p in step.packages)
    opts = " ".join(shlex.quote(o) for o in step_pip_options(step))
    pip = f'"$PY" -m pip install {opts} {pkgs}'.replace("  ", " ")
    if isinstance(step, PipInstallStep):
        return f"set -e\nPY={RUNTIME_PYTHON}\n{pip}\n"
    uv = f'uv pip install --python "$PY" $(cat {BUILD_MOUNT}/uv-args) {opts} {pkgs}'.replace("  ", " ")
    return (
        f"set -e\nPY={RUNTIME_PYTHON}\n"
        f"if command -v uv >/dev/null 2>&1; then\n  {uv}\nelse\n"
        f"  echo 'apothic: uv is not installed in this image; installing with pip instead'\n  {pip}\nfi\n"
    )


def apt_command(step: AptInstallStep) -> str:
    """The build script of an ``apt_install`` step."""
    pkgs = " ".join(shlex.quote(p) for p in step.packages)
    return (
        "set -e\nif ! command -v apt-get >/dev/null 2>&1; then\n"
        "  echo 'apothic: apt_install needs a Debian or Ubuntu image (no apt-get here)' >&2; exit 1\nfi\n"
        f"apt-get update -q\napt-get install -y -q --no-install-recommends {pkgs}\n"
        "rm -rf /var/lib/apt/lists/*\n"
    )


async def apply_steps(b: Builder) -> None:
    """Run the spec's steps, in order, on top of the builder's current image."""
    for step in b.image.steps:
        name = step_name(step)
        if isinstance(step, (PipInstallStep, UvPipInstallStep)):
            await b.run(name, pip_command(step))
        elif isinstance(step, AptInstallStep):
            await b.run(name, apt_command(step))
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
            entries = await asyncio.to_thread(dir_entries, step.local_path, step.remote_path, step.ignore)
            await b.put(name, entries)
        elif isinstance(step, AddLocalPythonSourceStep):
            entries: list[tuple[str, str]] = []
            for src in step.sources:
                remote = f"{SOURCES_ROOT}/{src.target}"
                if src.is_package:
                    entries += await asyncio.to_thread(
                        dir_entries, src.local_path, remote, PYTHON_SOURCE_EXCLUDES
                    )
                else:
                    entries.append((src.local_path, remote))
            await b.put(name, entries)
        else:  # pragma: no cover - Image validates step types
            raise ImageNotSupported(name, reason=f"unknown step type {type(step).__name__}")
