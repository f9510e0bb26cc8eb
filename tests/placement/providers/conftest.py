"""The local Docker engine and registry that ``scripts/docker-services`` starts.

A provider test that needs them fails (never skips) when they are missing, with the fix.
"""

from __future__ import annotations

import os
import urllib.request

import pytest
from apothic.placement.providers.images import BASE_IMAGES

BASE = BASE_IMAGES["3.11"]
REGISTRY = os.environ.get("APOTHIC_TEST_REGISTRY", "127.0.0.1:5000")


def docker_engine(timeout: int = 120):
    """A client of the local engine, which holds the base image; fails the test otherwise."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        client.ping()
        client.images.get(BASE)
        return client
    except Exception as e:  # noqa: BLE001 - any reason is the same fix
        pytest.fail(f"Docker engine or base image {BASE} unavailable ({e}); run scripts/docker-services as root")


def require_registry() -> None:
    try:
        urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=5).close()
    except OSError as e:
        pytest.fail(f"local registry {REGISTRY} unavailable ({e}); run scripts/docker-services as root")
