"""Whether a container that is still starting is needed: no paying for a machine nobody waits for.

A running container drains itself after the idle window without inputs (its runtime does), but
one that is still starting (its image building, its rented machine loading) has no runtime yet.
``run_container`` therefore asks the fleet, while the start runs, whether this container is
still among the ones it wants; once it has not been for the idle window, the start is
cancelled (which destroys what was rented) and the container ends as not needed.

The decisions are pure functions (:func:`needed_by`, :class:`IdleClock`), property-tested on
their own; :func:`until_not_needed` applies them to a start in progress.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from apothic._contracts import FleetStatus

# How often a start in progress asks its fleet whether it is still needed.
NEEDED_POLL_S = 2.0
QUERY_TIMEOUT = timedelta(seconds=10)

T = TypeVar("T")


class NotNeeded(Exception):
    """The fleet has not wanted this starting container for the idle window."""


def needed_by(status: FleetStatus, container_id: str) -> bool:
    """Whether the fleet wants ``container_id``: it is among its ``wanted`` oldest active
    (not draining) containers. The oldest are kept, so that when demand falls the containers
    that started last (those most likely still loading) are the ones given up."""
    active = sorted((c for c in status.containers if not c.draining), key=lambda c: (c.started_at, c.container_id))
    ids = [c.container_id for c in active]
    return container_id in ids and ids.index(container_id) < status.wanted


class IdleClock:
    """When a starting container has gone unneeded for ``idle_s`` seconds in a row.

    ``observe(now, needed)`` takes one answer of the fleet (None: no answer, which neither
    starts nor resets the window) and says whether the window has passed.
    """

    def __init__(self, idle_s: float) -> None:
        self.idle_s = max(0.0, idle_s)
        self.since: float | None = None

    def observe(self, now: float, needed: bool | None) -> bool:
        if needed is None:
            return self.since is not None and now - self.since >= self.idle_s
        if needed:
            self.since = None
            return False
        if self.since is None:
            self.since = now
        return now - self.since >= self.idle_s


def fleet_asker(client: Client, fleet_id: str, container_id: str) -> Callable[[], Awaitable[bool | None]]:
    """Asks the fleet (its ``status`` query) whether it needs ``container_id``: True, False
    (also when the fleet does not exist), or None when it did not answer."""
    handle = client.get_workflow_handle(fleet_id)

    async def ask() -> bool | None:
        try:
            status = await handle.query("status", result_type=FleetStatus, rpc_timeout=QUERY_TIMEOUT)
        except RPCError as e:
            return False if e.status == RPCStatusCode.NOT_FOUND else None
        except Exception:  # noqa: BLE001 - no answer says nothing either way
            return None
        return needed_by(status, container_id)

    return ask


async def until_not_needed(aw: Awaitable[T], ask: Callable[[], Awaitable[bool | None]], idle_s: float,
                           every_s: float = NEEDED_POLL_S) -> T:
    """Await ``aw`` (a container's start), asking every ``every_s`` seconds whether it is
    still needed; cancel it and raise :class:`NotNeeded` once it has not been for ``idle_s``.
    The start's own cleanup (a rental's destroy) runs before this returns."""
    task: asyncio.Future[Any] = asyncio.ensure_future(aw)
    clock = IdleClock(idle_s)
    loop = asyncio.get_running_loop()
    try:
        while True:
            await asyncio.wait({task}, timeout=every_s)
            if task.done():
                return task.result()
            unneeded = clock.observe(loop.time(), await ask())
            if task.done():  # started meanwhile: a running container idles out by itself
                return task.result()
            if unneeded:
                raise NotNeeded(f"no job needed it for the idle window ({idle_s:g} s) while it started")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
