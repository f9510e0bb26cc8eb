"""Providers: each is the only code that talks to its backend (no Temporal here).

- ``process`` (this host, the embedded default): a function container is a process.
- ``docker``: containers on the local Docker engine, with built images (``images``).
- ``vast``: the Vast.ai REST API (``VastClient``, ``provision``).
- ``images``: images of the docker provider (Docker images) and of the process provider
  (cached virtual environments).
"""

from .docker import DockerHandle, DockerProvider
from .images import ImageBuildFailed, ImageRef, ensure_image, ensure_venv
from .process import ProcessHandle, ProcessProvider
from .vast import OfferGone, ProvisionFailed, VastClient, VastError, provision

__all__ = [
    "DockerHandle",
    "DockerProvider",
    "ImageBuildFailed",
    "ImageRef",
    "OfferGone",
    "ProcessHandle",
    "ProcessProvider",
    "ProvisionFailed",
    "VastClient",
    "VastError",
    "ensure_image",
    "ensure_venv",
    "provision",
]
