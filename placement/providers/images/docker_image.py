"""Build or reuse an :class:`apothic.Image` as a Docker image for the docker provider.

:func:`ensure_image` turns an image spec into something ``docker run`` can start:

* ``Image.debian_slim("3.11")`` with no steps resolves to the local base image
  ``apothic/debian-slim:3.11`` (built by ``scripts/docker-services``; see
  :data:`.docker_layout.BASE_IMAGES`). Nothing is built. The base has no Apothic in it: :class:`ImageRef.has_runtime` is False
  and the docker provider mounts this host's Apothic into the container.
* ``Image.from_registry(ref)`` with no steps uses that image as it is, when it is on the
  engine (or can be pulled from a loopback registry, see :data:`.docker_registry.PULL_ENV`).
  An image that Apothic built carries its runtime; any other is probed for a Python of the
  right version (:mod:`.docker_python`).
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

How a step runs is told in :mod:`.docker_builder`: one build container per step, committed;
this host's pip configuration, CA bundle and the runtime wheels are mounted, never committed.

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

import asyncio
import hashlib
import weakref
from typing import TYPE_CHECKING, Any

from apothic._image import Image

from .docker_builder import Builder
from .docker_engine import docker_client, find_local_or_explain, get_or_none
from .docker_layout import (
    DERIVED_REPOSITORY,
    LABEL_HASH,
    LABEL_PYTHON,
    LABEL_PYTHON_VERSION,
    LABEL_RUNTIME,
    RUNTIME_LAYER_REPOSITORY,
    RUNTIME_PYTHON,
    RUNTIME_VENV,
    WHEELS_MOUNT,
    ImageRef,
    base_image_tag,
)
from .docker_python import probe_python, runtime_script
from .docker_registry import find_local, push_blocking, pushed_digest
from .docker_steps import apply_steps
from .errors import ImageBuildFailed
from .output import BuildOutput, OnOutput
from .runtime import host_python, runtime_fingerprint, runtime_source, wanted_python
from .wheels import runtime_wheels

if TYPE_CHECKING:
    import docker

__all__ = ["ensure_image"]

# One lock per derived tag and event loop: concurrent ensures of one spec build it once.
_build_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


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
    out = BuildOutput(on_output)
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


async def _ensure(image: Image, registry: str | None, out: BuildOutput, always_derive: bool) -> ImageRef:
    client = await asyncio.to_thread(docker_client)
    want = wanted_python(image)
    base = image.base
    if image.is_base_only() and not always_derive:
        if base.kind == "debian_slim":
            ref = base_image_tag(base.python_version or want)
            name = f"Image.debian_slim({base.python_version!r})"
            img = await asyncio.to_thread(find_local_or_explain, client, ref, name)
            if want == host_python():
                return ImageRef(
                    ref=ref, image_id=img.id, has_runtime=False, python="python3", python_version=want
                )
        elif base.kind == "registry":
            ref = base.ref or ""
            name = f"Image.from_registry({ref!r})"
            img = await asyncio.to_thread(find_local, client, ref, name, out)
            labels = (img.attrs.get("Config") or {}).get("Labels") or {}
            if labels.get(LABEL_PYTHON) and labels.get(LABEL_RUNTIME):
                version = labels.get(LABEL_PYTHON_VERSION) or want
                return ImageRef(
                    ref=ref,
                    image_id=img.id,
                    has_runtime=True,
                    python=labels[LABEL_PYTHON],
                    python_version=version,
                )
            probe = await asyncio.to_thread(probe_python, client, img.id, want)
            if probe.get("python") and probe.get("runtime"):
                return ImageRef(
                    ref=ref, image_id=img.id, has_runtime=True, python=probe["python"], python_version=want
                )
            if probe.get("python") and probe.get("libc") != "musl" and want == host_python():
                return ImageRef(
                    ref=ref, image_id=img.id, has_runtime=False, python=probe["python"], python_version=want
                )
            # Otherwise derive: the build installs the runtime or explains what is missing.

    tag = image.tag
    local = f"{DERIVED_REPOSITORY}:{tag}"
    locks = _build_locks.setdefault(asyncio.get_running_loop(), {})
    lock = locks.setdefault(tag, asyncio.Lock())
    async with lock:
        img = await asyncio.to_thread(get_or_none, client, local)
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
            digest = None if built else pushed_digest(img, registry)
            if digest is None:
                out.start_step(f"push {registry}/{DERIVED_REPOSITORY}:{tag}")
                pushed_ref, digest = await asyncio.to_thread(push_blocking, client, img, registry, tag, out)
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


async def _build(client: docker.DockerClient, image: Image, out: BuildOutput, tag: str) -> Any:
    """Build the derived image and tag it ``apothic/image:<tag>``; returns the image object."""
    b = Builder(client, image, out)
    failed = True
    try:
        base = image.base
        want = wanted_python(image)
        if base.kind == "debian_slim":
            name = f"Image.debian_slim({base.python_version!r})"
            ref = base_image_tag(base.python_version or want)
            out.start_step(name)
            b.set_start(await asyncio.to_thread(find_local_or_explain, client, ref, name))
        elif base.kind == "registry":
            name = f"Image.from_registry({base.ref!r})"
            out.start_step(name)
            b.set_start(await asyncio.to_thread(find_local, client, base.ref, name, out))
        else:
            name = f"from_dockerfile({base.dockerfile_path or '<dockerfile>'!r})"
            out.start_step(name)
            b.set_start(await asyncio.to_thread(b.dockerfile_blocking, name))

        await asyncio.to_thread(b.prepare_mounts)
        # The runtime layer depends only on the start image, the runtime and the Python: it is
        # kept under its own tag and shared by every derived image of that start image.
        fingerprint = runtime_fingerprint()
        key = hashlib.sha256(f"{b.start_id}\n{fingerprint}\n{want}".encode()).hexdigest()[:16]
        layer = await asyncio.to_thread(get_or_none, client, f"{RUNTIME_LAYER_REPOSITORY}:{key}")
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
            await b.run("apothic runtime", runtime_script(want, runtime_source().requirements))
            await asyncio.to_thread(client.api.tag, b.current, RUNTIME_LAYER_REPOSITORY, key)
            b.start_id = b.current

        await apply_steps(b)

        out.start_step(f"tag {DERIVED_REPOSITORY}:{tag}")
        b.config["Cmd"] = ["python", "-m", "apothic.runtime"]
        b.config["Labels"].update(
            {
                LABEL_HASH: image.hash,
                LABEL_RUNTIME: runtime_fingerprint(),
                LABEL_PYTHON: RUNTIME_PYTHON,
                LABEL_PYTHON_VERSION: want,
                "apothic.spec": repr(image)[:2000],
            }
        )
        await asyncio.to_thread(b.finalize_blocking, tag)
        failed = False
        return await asyncio.to_thread(client.images.get, f"{DERIVED_REPOSITORY}:{tag}")
    finally:
        await asyncio.shield(asyncio.to_thread(b.cleanup_blocking, failed))
