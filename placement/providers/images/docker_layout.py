"""Where things are in the docker provider's images: tags, labels, paths; and :class:`ImageRef`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from .errors import ImageNotSupported

__all__ = [
    "BASE_IMAGES",
    "BUILD_MOUNT",
    "BUILD_ROOT",
    "DERIVED_REPOSITORY",
    "LABEL_HASH",
    "LABEL_PYTHON",
    "LABEL_PYTHON_VERSION",
    "LABEL_RUNTIME",
    "RUNTIME_LAYER_REPOSITORY",
    "RUNTIME_PYTHON",
    "RUNTIME_VENV",
    "SOURCES_ROOT",
    "WHEELS_MOUNT",
    "ImageRef",
    "base_image_tag",
]

#: Local base images by Python version, built by ``scripts/docker-services`` (tag scheme
#: ``apothic/debian-slim:<major.minor>``). Debian bookworm ships Python 3.11 only.
BASE_IMAGES: Mapping[str, str] = {"3.11": "apothic/debian-slim:3.11"}
#: Repository of derived images; the tag is :attr:`apothic.Image.tag`.
DERIVED_REPOSITORY = "apothic/image"
#: Repository of runtime layers (start image + Apothic runtime), shared by derived images.
RUNTIME_LAYER_REPOSITORY = "apothic/runtime-layer"

#: The runtime's virtual environment inside derived images, and its interpreter.
RUNTIME_VENV = "/opt/apothic/venv"
RUNTIME_PYTHON = f"{RUNTIME_VENV}/bin/python"
#: Import root of ``add_local_python_source`` inside images (on the venv's path via a .pth).
SOURCES_ROOT = "/opt/apothic/python"
# Build containers get a tmpfs here and their bind mounts inside it, so that no mount point
# is committed into an image.
BUILD_ROOT = "/run/apothic"
BUILD_MOUNT = f"{BUILD_ROOT}/build"
WHEELS_MOUNT = f"{BUILD_ROOT}/wheels"
LABEL_HASH = "apothic.image.hash"
LABEL_RUNTIME = "apothic.runtime"
LABEL_PYTHON = "apothic.runtime.python"
LABEL_PYTHON_VERSION = "apothic.runtime.python_version"


@dataclasses.dataclass(frozen=True)
class ImageRef:
    """A Docker image ready to start a function container from.

    Attributes:
        ref: the reference to run on this engine (a local tag, or the ref as given).
        image_id: the engine's image id (``sha256:...``).
        has_runtime: whether ``python -m apothic.runtime`` works in the image by itself.
            When False, the docker provider mounts this host's Apothic environment.
        python: the interpreter inside the image that runs the runtime.
        python_version: its ``"3.X"``.
        built: whether this call built the image (False: reused or used as is).
        pushed_ref: ``<registry>/apothic/image:<tag>`` when pushed to a registry.
        digest: the registry manifest digest (``sha256:...``) when pushed.
    """

    ref: str
    image_id: str
    has_runtime: bool
    python: str
    python_version: str
    built: bool = False
    pushed_ref: str | None = None
    digest: str | None = None

    @property
    def pinned_ref(self) -> str | None:
        """``<registry>/<repository>@<digest>``, for hosts that pull it; None when not pushed."""
        if not self.pushed_ref or not self.digest:
            return None
        return f"{self.pushed_ref.rsplit(':', 1)[0]}@{self.digest}"


def base_image_tag(python_version: str) -> str:
    """The local base image tag of a ``debian_slim`` base.

    Raises:
        ImageNotSupported: no local base image provides that Python.
    """
    try:
        return BASE_IMAGES[python_version]
    except KeyError:
        have = ", ".join(sorted(BASE_IMAGES))
        raise ImageNotSupported(
            f"Image.debian_slim(python_version={python_version!r})",
            reason=(
                f"no local base image provides Python {python_version} (available: {have}); "
                "Fix: use one of those versions, or Image.from_registry(...) of a local image "
                "that has that Python"
            ),
        ) from None
