"""How a runtime lets its supervisor watch it (the notes of ``_channel``).

A worker interceptor tells the supervisor each activity it starts and ends (with its task
token, so that the supervisor can fail it or heartbeat it in the runtime's place), and mirrors
each heartbeat's details to a file in the runtime's scratch folder. ``Runtime._execute`` adds
the ``run`` and ``done`` notes of each input's user code (:func:`watch_item`).
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.api.common.v1 import Payloads
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from .._contracts import EXECUTE_BATCH_ACTIVITY
from ._channel import Channel
from ._executor import WorkItem


@dataclasses.dataclass
class _Held:
    """An activity of this runtime that the supervisor knows of."""

    id: int
    hb: str  # its heartbeat mirror ("" : none)
    items: dict[int, int]  # a map batch's inputs: id() of each item's args -> its index


_held: contextvars.ContextVar[_Held | None] = contextvars.ContextVar("apothic_supervised", default=None)


class SupervisedInterceptor(Interceptor):
    """Notes each activity's start and end, and mirrors its heartbeats (see the module doc)."""

    def __init__(self, channel: Channel, scratch: str | None) -> None:
        self.channel = channel
        self.scratch = scratch

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, owner: SupervisedInterceptor) -> None:
        super().__init__(next)
        self._owner = owner

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        super().init(_Outbound(outbound))

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        channel = self._owner.channel
        inp = input.args[0] if input.args else None
        timeout_s = getattr(inp, "timeout_s", None)
        if not channel.on or timeout_s is None:
            return await self.next.execute_activity(input)
        info = activity.info()
        held_id = channel.new_id()
        batch = info.activity_type == EXECUTE_BATCH_ACTIVITY
        items = list(getattr(inp, "items", None) or []) if batch else []
        hb = os.path.join(self._owner.scratch, f"hb-{held_id}.bin") if self._owner.scratch else ""
        channel.start(held_id, info.task_token, float(timeout_s), "batch" if batch else "execute",
                      [i.index for i in items] if batch else None, hb)
        token = _held.set(_Held(held_id, hb, {id(i.args): i.index for i in items}))
        try:
            return await self.next.execute_activity(input)
        finally:
            _held.reset(token)
            channel.end(held_id)
            if hb:
                for path in (hb, hb + ".tmp"):
                    try:
                        os.unlink(path)
                    except OSError:
                        pass


# While set (a map batch: ``_mapbatch.BatchProgress.heartbeats``), what every heartbeat of the
# activity carries instead of its own details.
heartbeat_details: contextvars.ContextVar[Callable[[], Any] | None] = contextvars.ContextVar(
    "apothic_heartbeat_details", default=None
)


class _Outbound(ActivityOutboundInterceptor):
    def heartbeat(self, *details: Any) -> None:
        override = heartbeat_details.get()
        if override is not None:
            details = (override(),)
        held = _held.get()
        if held is not None and held.hb:
            _mirror(held.hb, details)
        super().heartbeat(*details)


def _mirror(path: str, details: tuple[Any, ...]) -> None:
    """Write the heartbeat's details (payloads, before any codec) where the supervisor reads them."""
    try:
        data = Payloads(payloads=activity.payload_converter().to_payloads(list(details))).SerializeToString()
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
    except Exception:  # noqa: BLE001 - the mirror is a help for the supervisor, never a failure
        pass


def watch_item(channel: Channel, item: WorkItem, args: Any, job_id: str) -> None:
    """Note when ``item``'s user code runs and when it is done (an input of the current activity)."""
    held = _held.get()
    if held is None or not channel.on:
        return
    index: int | None = None
    if held.items:  # a map batch: which of its inputs this is
        index = held.items.get(id(args))
        if index is None and "#" in job_id:
            tail = job_id.rsplit("#", 1)[1]
            index = int(tail) if tail.isdigit() else None
    held_id = held.id
    item.on_run = lambda it: channel.run(held_id, index, it.log_path)
    item.future.add_done_callback(lambda _: channel.done(held_id, index))
