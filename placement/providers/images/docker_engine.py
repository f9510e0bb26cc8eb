"""The Docker engine, for image work: one shared client, and lookups of local images."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .errors import ImageBuildFailed

if TYPE_CHECKING:
    import docker

__all__ = ["docker_client", "find_local_or_explain", "get_or_none"]

_client_lock = threading.Lock()
_client: docker.DockerClient | None = None


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


def get_or_none(client: docker.DockerClient, ref: str) -> Any:
    """The local image ``ref``, or None (blocking)."""
    import docker.errors

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def find_local_or_explain(client: docker.DockerClient, ref: str, step: str) -> Any:
    """The local base image ``ref``; raises :class:`ImageBuildFailed` naming ``step`` when missing."""
    img = get_or_none(client, ref)
    if img is None:
        raise ImageBuildFailed(
            step,
            reason=f"the local base image {ref!r} is missing; Fix: run scripts/docker-services to build it",
        )
    return img
