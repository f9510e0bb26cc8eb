"""Providers: each is the only code that talks to its backend (no Temporal here).

- ``process`` (this host, the embedded default): a function container is a process.
- ``docker``: containers on the local Docker engine, with built images (``docker_images``).
- ``vast``: the Vast.ai REST API (``VastClient``, ``provision``).
- ``venv_images``: images of the process provider, as cached virtual environments.
"""

from .docker import DockerHandle, DockerProvider
from .docker_images import ImageBuildFailed, ImageRef, ensure_image
from .process import ProcessHandle, ProcessProvider
from .vast import OfferGone, ProvisionFailed, VastClient, VastError, provision
from .venv_images import ensure_venv

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
