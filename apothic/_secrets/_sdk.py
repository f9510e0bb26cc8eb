"""``apothic.Secret.objects``: create, list and delete named secrets from Python.

The names follow Modal's ``modal.Secret.objects`` (``create(name, env_dict, *,
allow_existing=False)``, ``list()``, ``delete(name, *, allow_missing=False)``), plus
``overwrite=True`` for what ``apothic secret create --force`` does. Each call writes or reads
the secret store of the settings in force (``secrets.file``, ``APOTHIC_SECRETS_FILE``)
directly: the store is on the control plane's host, so run these where its control workers
read it. Blocking, with ``.aio`` twins like every I/O method of the SDK.
"""

from __future__ import annotations

import asyncio
from .._control._loop import AioNamespace, synced
from ._store import SecretInfo, SecretStore


def _store() -> SecretStore:
    from .._control._config import load_settings
    from . import store_for

    return store_for(load_settings())


class SecretManager:
    """Named secrets in the secret store (``apothic.Secret.objects``)."""

    aio = AioNamespace.descriptor()

    def __repr__(self) -> str:
        return "apothic.Secret.objects"

    @synced
    async def create(self, name: str, env_dict: dict[str, str], *, allow_existing: bool = False,
                     overwrite: bool = False) -> None:
        """Create the secret ``name`` holding ``env_dict`` (``{"HF_TOKEN": "hf_..."}``).

        Functions with ``secrets=[Secret.from_name(name)]`` get these pairs in their
        environment from their next container on. An existing secret is an error unless
        ``allow_existing=True`` (keep it as it is) or ``overwrite=True`` (replace its pairs).

        Raises:
            InvalidError: a bad name, key or value (values are never shown), the secret
                exists, or the store cannot be written.
        """
        await asyncio.to_thread(_store().create, name, env_dict, overwrite=overwrite, allow_existing=allow_existing)

    @synced
    async def list(self) -> list[SecretInfo]:
        """Every secret's name, keys and times, by name; never a value."""
        return await asyncio.to_thread(_store().list)

    @synced
    async def delete(self, name: str, *, allow_missing: bool = False) -> None:
        """Delete the secret ``name``; new containers no longer get it (running ones keep it).

        Raises:
            NotFoundError: no such secret (unless ``allow_missing=True``).
        """
        await asyncio.to_thread(_store().delete, name, allow_missing=allow_missing)


SECRETS = SecretManager()

