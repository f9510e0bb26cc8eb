"""Secrets: named sets of KEY=VALUE pairs kept in a store on the control plane's host.

``_store`` is the store file (format, permissions, atomic writes, locking) and what a
container's start needs of it (``resolve``, ``redact``); ``_sdk`` is ``apothic.Secret.objects``.
The CLI's ``apothic secret`` group lives in ``apothic/_cli/_secrets.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._store import (
    MissingSecretsError,
    SecretExistsError,
    SecretInfo,
    SecretStore,
    create_fix,
    encoded_forms,
    redact,
)

if TYPE_CHECKING:
    from .._control._config import Settings

__all__ = [
    "MissingSecretsError", "SecretExistsError", "SecretInfo", "SecretStore", "create_fix", "encoded_forms",
    "redact", "store_for",
]


def store_for(settings: "Settings") -> SecretStore:
    """The store these settings name (``secrets.file``, ``APOTHIC_SECRETS_FILE``; default
    ``$APOTHIC_HOME/secrets/secrets.json``)."""
    return SecretStore(settings.secrets.path(), private_folder=not settings.secrets.file)
