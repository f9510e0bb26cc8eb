"""One derived build of the docker provider: build containers, committed step by step.

Each filesystem step is one short-lived build container (host network, run as root) started
from the previous image and committed with ``docker commit``; ``env`` and ``workdir`` only
change the image config. Build containers see, read-only under ``/run/apothic/build``, a
``pip.conf`` written from this host's pip configuration (index URLs, find-links,
constraints), this host's CA bundle, and the runtime wheels; local index folders and
find-links folders are mounted at their own paths. None of this is committed: bind mounts
never enter an image and the build-only variables are exported inside the step's shell, so
no index credential is baked into an image. The host's pip cache is mounted read-write to
save downloads.

A ``from_dockerfile`` base is built by the engine's classic builder (docker-py has no
BuildKit): no ``RUN --mount``, and ``FROM`` images must be local.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apothic._image import Image, walk_tree

from .docker_layout import BUILD_MOUNT, BUILD_ROOT, DERIVED_REPOSITORY
from .docker_python import EXIT_NO_PYTHON, no_python_reason
from .errors import ImageBuildFailed
from .output import BuildOutput
from .pip_settings import QUIET_PIP_ENV, host_ca_bundle, host_pip_settings
from .runtime import wanted_python

if TYPE_CHECKING:
    import docker

__all__ = ["Builder", "dir_entries", "write_tar"]


class Builder:
    """One derived build: an image id that advances step by step, plus its config."""

    def __init__(self, client: docker.DockerClient, image: Image, out: BuildOutput) -> None:
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
            **QUIET_PIP_ENV,
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
                if code == EXIT_NO_PYTHON:
                    reason = no_python_reason(wanted_python(self.image))
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
        count = await asyncio.to_thread(write_tar, tar_path, entries)
        self.out.line(f"adding {count} file(s)")
        await asyncio.to_thread(self.put_blocking, name, tar_path)
        tar_path.unlink(missing_ok=True)


def write_tar(tar_path: Path, entries: list[tuple[str, str]]) -> int:
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


def dir_entries(local: str, remote: str, ignore: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(local, remote)`` pairs of a tree, as :func:`apothic._image.walk_tree` (which the
    image hash also walks) gives it."""
    base = remote.rstrip("/")
    return [(local, remote)] + [(full, f"{base}/{rel}") for full, rel, _ in walk_tree(local, ignore)]
