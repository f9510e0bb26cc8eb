"""``ControlPlaneClient``: which Temporal server and namespace SDK calls go to."""

from __future__ import annotations

import dataclasses
import re

from ..exceptions import InvalidError
from ._config import Settings, load_settings

_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")


def check_address(address: object, where: str) -> str:
    """``address`` if it is ``host:port`` (port 1-65535), else an :class:`InvalidError` naming it."""
    m = _ADDRESS.fullmatch(address) if isinstance(address, str) else None
    if m is None or not 1 <= int(m.group(2)) <= 65535:
        raise InvalidError(
            f"{where}={address!r}: allowed: a Temporal frontend as host:port (port 1-65535), without a scheme. "
            "Fix: e.g. '127.0.0.1:7233' or 'my-ns.abc12.tmprl.cloud:7233'."
        )
    return address  # type: ignore[return-value]


class ControlPlaneClient:
    """Names the Apothic control plane (a Temporal server) to talk to.

    Args:
        address: ``host:port`` of a Temporal frontend; default: ``APOTHIC_TEMPORAL_ADDRESS``,
            else the embedded dev server of ``temporal-dev.yaml``.
        namespace: the Temporal namespace; default ``APOTHIC_TEMPORAL_NAMESPACE`` or ``default``.

    Raises:
        InvalidError: ``address`` is not ``host:port``, or ``namespace`` is not a name.
    """

    def __init__(self, address: str | None = None, *, namespace: str | None = None) -> None:
        if address is not None:
            check_address(address, "ControlPlaneClient(address)")
        if namespace is not None and (not isinstance(namespace, str) or not namespace or any(c.isspace() for c in namespace)):
            raise InvalidError(
                f"ControlPlaneClient(namespace={namespace!r}): allowed: a namespace name without spaces. "
                "Fix: e.g. namespace='default'."
            )
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
