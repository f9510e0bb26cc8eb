"""Where this container runs, as its control worker placed it: named in each input's started event.

``run_container`` signals the placement to the container's ContainerWorkflow right after the
start, which keeps it in its memo ``apothic.placement``. The runtime reads that memo with
``describe()`` (no worker needed) when it starts serving, then every ``READ_EVERY_S`` until it
is there (it stops asking then: a placement never changes). An input that starts before the
placement is known waits for it at most ``WAIT_S``, once per container: after that, inputs go
on without it (their jobs show only the container id) while the reads continue.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from temporalio.client import Client

from .._contracts import PLACEMENT_MEMO_KEY, Placement

READ_EVERY_S = 0.5
READ_SLOWLY_AFTER_S = 60.0
READ_SLOWLY_EVERY_S = 10.0
WAIT_S = 3.0


class Whereabouts:
    """The placement of this container, read once from its ContainerWorkflow's memo."""

    def __init__(self, client: Client, container_workflow_id: str) -> None:
        self._handle = client.get_workflow_handle(container_workflow_id) if container_workflow_id else None
        self.known: dict[str, Any] | None = None
        self._found = asyncio.Event()
        self._waited = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._handle is not None:
            self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        while self.known is None:
            try:
                desc = await self._handle.describe()  # type: ignore[union-attr]
                value = await desc.memo_value(PLACEMENT_MEMO_KEY, None, type_hint=Placement)
                if isinstance(value, Placement):
                    self.known = dataclasses.asdict(value)
                    self._found.set()
                    return
            except Exception:  # noqa: BLE001, S110 - not there yet, no answer, a refused payload: look again
                pass
            slow = loop.time() - began > READ_SLOWLY_AFTER_S
            await asyncio.sleep(READ_SLOWLY_EVERY_S if slow else READ_EVERY_S)

    async def get(self) -> dict[str, Any] | None:
        """The placement (a dict of ``Placement``'s fields), or None if it is not known yet."""
        if self.known is not None or self._waited or self._task is None:
            return self.known
        self._waited = True
        try:
            await asyncio.wait_for(self._found.wait(), WAIT_S)
        except TimeoutError:
            pass
        return self.known
