"""A simulator of the Vast.ai API for one test or module, and a client of it that retries fast."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from apothic.placement.providers.vast import RetryPolicy, VastClient
from apothic.vastsim import Simulator, marked_pids

# Retries short enough for a test, as many as the provider makes.
FAST = RetryPolicy(attempts=4, base_s=0.01, max_s=0.05)


@contextlib.contextmanager
def running_simulator(**kwargs: Any) -> Iterator[Simulator]:
    """A started simulator; when it stops, no process of its instances may be left."""
    s = Simulator(**kwargs)
    s.start()
    try:
        yield s
    finally:
        s.stop()
        assert marked_pids(s.token + ":") == [], "an instance process outlived the simulator"


@contextlib.asynccontextmanager
async def fast_client(sim: Simulator, api_key: str) -> AsyncIterator[VastClient]:
    async with VastClient(api_key=api_key, base_url=sim.url, retry=FAST, timeout_s=5, reconcile_interval_s=0.05) as c:
        yield c
