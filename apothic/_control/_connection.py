"""``ControlPlaneClient``: which Temporal server and namespace SDK calls go to."""

from __future__ import annotations

import dataclasses

from ._config import Settings, load_settings


class ControlPlaneClient:
    """Names the Apothic control plane (a Temporal server) to talk to.

    Args:
        address: ``host:port`` of a Temporal frontend; default: ``APOTHIC_TEMPORAL_ADDRESS``,
            else the embedded dev server of ``temporal-dev.yaml``.
        namespace: the Temporal namespace; default ``APOTHIC_TEMPORAL_NAMESPACE`` or ``default``.
    """

    def __init__(self, address: str | None = None, *, namespace: str | None = None) -> None:
        self._address = address
        self._namespace = namespace
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            settings = load_settings()
            if self._address:
                settings = dataclasses.replace(settings, address=self._address, embedded=False)
            if self._namespace:
                settings = dataclasses.replace(settings, namespace=self._namespace)
            self._settings = settings
        return self._settings

    def __repr__(self) -> str:
        return f"ControlPlaneClient({self.settings.address!r}, namespace={self.settings.namespace!r})"
