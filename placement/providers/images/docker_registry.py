"""Registries: which missing images may be pulled (and pulling them), and pushing derived ones."""

from __future__ import annotations

import ipaddress
import os
from typing import TYPE_CHECKING, Any

from .docker_layout import DERIVED_REPOSITORY
from .errors import ImageBuildFailed
from .output import BuildOutput

if TYPE_CHECKING:
    import docker

__all__ = ["PULL_ENV", "find_local", "is_loopback_registry", "may_pull", "push_blocking", "pushed_digest"]

#: Environment variable choosing which missing images may be pulled: ``loopback`` (default:
#: registries on 127.0.0.0/8, ``localhost`` or ``[::1]``), ``any`` or ``never``.
PULL_ENV = "APOTHIC_DOCKER_PULL"


def is_loopback_registry(ref: str) -> bool:
    """Whether ``ref`` names a registry on this machine (127.0.0.0/8, ``localhost``, ``[::1]``)."""
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


def may_pull(ref: str) -> bool:
    """Whether :data:`PULL_ENV` allows pulling ``ref`` when it is not on the engine."""
    policy = os.environ.get(PULL_ENV, "loopback").strip().lower()
    if policy == "any":
        return True
    if policy == "never":
        return False
    return is_loopback_registry(ref)


def find_local(client: docker.DockerClient, ref: str, step: str, out: BuildOutput) -> Any:
    """The local image for ``ref``, pulling it from an allowed registry if missing (blocking)."""
    import docker.errors

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        pass
    if not may_pull(ref):
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


def push_blocking(
    client: docker.DockerClient, image_obj: Any, registry: str, tag: str, out: BuildOutput
) -> tuple[str, str]:
    """Push ``image_obj`` as ``<registry>/apothic/image:<tag>``; returns that ref and its digest."""
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


def pushed_digest(image_obj: Any, registry: str) -> str | None:
    """The digest the engine records for the image in ``registry``, or None when never pushed."""
    repo = f"{registry.rstrip('/')}/{DERIVED_REPOSITORY}@"
    for rd in image_obj.attrs.get("RepoDigests") or []:
        if rd.startswith(repo):
            return rd[len(repo) :]
    return None
