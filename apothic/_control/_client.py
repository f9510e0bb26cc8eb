"""The Temporal connection every SDK call shares (one per event loop and server)."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Any

from temporalio.client import Client, TLSConfig
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
)

from .._contracts import SEARCH_ATTR_APP, SEARCH_ATTR_FUNCTION
from .._trace import interceptors
from ._config import Settings, load_settings
from ._errors import connect_error

_clients: dict[tuple[int, str, str], Client] = {}
# How long a connection waits for a server that is up but still starting.
STARTING_SERVER_WAIT_S = 30.0
_locks: dict[int, asyncio.Lock] = {}


def _tls(settings: Settings) -> TLSConfig | bool | None:
    if not settings.tls:
        # An API key without a word on TLS: leave it to the SDK, which turns TLS on (as Temporal
        # Cloud needs); only an explicit APOTHIC_TEMPORAL_TLS=0 keeps it off then.
        off = os.environ.get("APOTHIC_TEMPORAL_TLS", "").strip().lower() in ("0", "false", "no", "off")
        return None if settings.api_key and not off else False
    if not (settings.tls_cert or settings.tls_ca):
        return True

    def read(path: str | None) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    return TLSConfig(
        client_cert=read(settings.tls_cert),
        client_private_key=read(settings.tls_key),
        server_root_ca_cert=read(settings.tls_ca),
    )


async def connect(
    settings: Settings, *, start_embedded: bool = True, in_workflows: bool = False, traced: bool = False
) -> Client:
    """Connect to the server ``settings`` names.

    The client signs every payload it sends and refuses every payload it receives that is not
    signed with the control plane's key (``apothic/_data/_signing.py``); ``in_workflows`` (the
    control worker) makes a refused payload fail the workflow it came to. With the embedded
    default, a server (and a control worker) are started first when none
    answers, unless ``start_embedded`` is False. One attempt takes at most
    ``settings.worker.connect_timeout_s`` (10 s; ``APOTHIC_CONNECT_TIMEOUT_S``): a closed
    port fails at once, a port that accepts the connection but never answers (Temporal's
    client alone waits 30 s for it, and forever over TLS) fails after that time.

    The OpenTelemetry context travels in Temporal headers (``apothic/_trace``) when a tracer
    provider is set before this connects, or always with ``traced`` (the control worker and
    the containers), for the workers made with the client too.

    Raises:
        apothic.exceptions.ConnectionError: the server cannot be reached (the message names the
            address and the fix).
        apothic.exceptions.PermissionDeniedError: the server refused the credentials.
        apothic.exceptions.InvalidError: the payload key is unusable, or missing for a server on
            another host without credentials.
    """
    from .._data._signing import data_converter

    converter = data_converter(settings, in_workflows=in_workflows)  # before anything starts: a bad key fails here
    if settings.embedded and start_embedded:
        from ._embedded import ensure_embedded

        await ensure_embedded(settings)
    timeout_s = settings.worker.connect_timeout_s
    kwargs: dict[str, Any] = {
        "namespace": settings.namespace,
        "tls": _tls(settings),
        "connect_timeout": timedelta(seconds=timeout_s),
        "data_converter": converter,
        # OpenTelemetry context in Temporal headers (apothic/_trace): a no-op without an SDK.
        "interceptors": interceptors(always=traced),
    }
    if settings.api_key:
        kwargs["api_key"] = settings.api_key
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTING_SERVER_WAIT_S
    while True:
        try:
            return await asyncio.wait_for(Client.connect(settings.address, **kwargs), timeout_s)
        except TimeoutError as e:
            raise connect_error(None, settings, timeout_s) from e
        except Exception as e:  # the bridge raises RuntimeError, the server RPCError
            # A server that is still starting answers "not healthy yet": wait for it, briefly.
            if "not healthy" in str(e) and loop.time() < deadline:
                await asyncio.sleep(0.2)
                continue
            raise connect_error(e, settings, timeout_s) from e


async def get_client(settings: Settings | None = None) -> Client:
    """The shared client of the running loop for ``settings`` (default: the settings in force)."""
    settings = settings or load_settings()
    loop = asyncio.get_running_loop()
    key = (id(loop), settings.address, settings.namespace)
    client = _clients.get(key)
    if client is not None:
        return client
    lock = _locks.setdefault(id(loop), asyncio.Lock())
    async with lock:
        client = _clients.get(key)
        if client is None:
            client = await connect(settings)
            _clients[key] = client
    return client


_APP_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTR_APP)
_FN_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTR_FUNCTION)


def search_attributes(app: str, function: str) -> TypedSearchAttributes:
    """The search attributes of a job or map of ``app.function`` (filterable in the Temporal UI)."""
    return TypedSearchAttributes([SearchAttributePair(_APP_KEY, app), SearchAttributePair(_FN_KEY, function)])
