"""Images of the providers: an :class:`apothic.Image` as a Docker image or as a venv.

- :func:`ensure_image` (docker provider, and the images pushed for rented machines): reuse or
  build a Docker image. :func:`ensure_venv` (process provider): reuse or build a cached
  virtual environment, for specs that need no container (:func:`check_venv_image`).

Modules, from the bottom up (each imports only those before it):

* shared by both builders: ``errors`` (:class:`ImageBuildFailed`, :class:`ImageNotSupported`),
  ``output`` (build output streamed, each step's tail kept), ``pip_settings`` (this host's
  package-index configuration and CA bundle, and a step's index options), ``runtime`` (this
  host's Apothic, its pinned dependencies and fingerprint), ``wheels`` (the runtime's wheels);
* the docker builder: ``docker_layout`` (tags, labels, paths in images; :class:`ImageRef`),
  ``docker_engine`` (the client, local lookups), ``docker_registry`` (pull policy, pulls,
  pushes), ``docker_python`` (Python in images: the probe, the runtime layer's script),
  ``docker_builder`` (build containers committed step by step), ``docker_steps`` (each step
  as the builder runs it), ``docker_image`` (:func:`ensure_image`: reuse, derive, push);
* the venv builder: ``venv`` (:func:`ensure_venv`).
"""

from .docker_image import ensure_image
from .docker_layout import BASE_IMAGES, DERIVED_REPOSITORY, ImageRef, base_image_tag
from .errors import ImageBuildFailed, ImageNotSupported
from .pip_settings import PipSettings, host_pip_settings
from .venv import MANIFEST, VenvImage, check_venv_image, ensure_venv, find_uv, image_paths, read_venv_image
from .wheels import repack_distribution

__all__ = [
    "BASE_IMAGES",
    "DERIVED_REPOSITORY",
    "MANIFEST",
    "ImageBuildFailed",
    "ImageNotSupported",
    "ImageRef",
    "PipSettings",
    "VenvImage",
    "base_image_tag",
    "check_venv_image",
    "ensure_image",
    "ensure_venv",
    "find_uv",
    "host_pip_settings",
    "image_paths",
    "read_venv_image",
    "repack_distribution",
]
