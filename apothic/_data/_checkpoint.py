"""Checkpoints: a long function records its progress; after an infrastructure failure the
next attempt gets it back instead of starting over.

::

    @app.function(timeout_s=3600)
    def train(steps: int) -> float:
        state = apothic.last_checkpoint() or {"step": 0, "loss": None}
        for step in range(state["step"], steps):
            state = {"step": step + 1, "loss": run_one_step(step)}
            apothic.checkpoint(state)
        return state["loss"]

A checkpoint travels with the job (in Temporal), so it survives the container, the host and
the control worker. Limits: it is cloudpickled and at most 1 MB; the latest one is sent within
about a second, so a crash loses at most the last second of checkpoints; it is handed back
after an *infrastructure* failure (a container or host lost), not after the function's own
exception (a user retry starts from the arguments). Outside a function container (a local
call) ``checkpoint`` does nothing and ``last_checkpoint`` returns None.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any, Protocol

from ..exceptions import InvalidError

MAX_CHECKPOINT_BYTES = 1_000_000

_local = threading.local()
# Where several inputs run at once (threads, asyncio tasks): the input of the current context.
_context_slot: contextvars.ContextVar[Any] = contextvars.ContextVar("apothic_checkpoint_slot", default=None)


class _Slot(Protocol):
    def save_checkpoint(self, blob: Any) -> None: ...

    def previous_checkpoint(self) -> Any: ...


def _bind(slot: _Slot | None) -> None:
    """Used by the container runtime around each input (same thread as the user code)."""
    _local.slot = slot


def _bind_context(slot: _Slot | None) -> None:
    """Used by the container runtime for an input that runs beside others (its own context)."""
    _context_slot.set(slot)


def _slot() -> _Slot | None:
    return _context_slot.get() or getattr(_local, "slot", None)


def checkpoint(state: Any) -> None:
    """Record ``state`` as this job's progress (replaces the previous checkpoint).

    Raises:
        InvalidError: ``state`` cannot be pickled or is over 1 MB pickled.
    """
    slot = _slot()
    if slot is None:
        return
    from ._serialization import CloudPickled

    try:
        blob = CloudPickled.dump(state, kind="checkpoint")
    except Exception as e:  # noqa: BLE001
        raise InvalidError(f"apothic.checkpoint(): the state cannot be pickled: {e}") from None
    if blob.size > MAX_CHECKPOINT_BYTES:
        raise InvalidError(
            f"apothic.checkpoint(): the state is {blob.size / 1e6:.2f} MB pickled; at most "
            f"{MAX_CHECKPOINT_BYTES / 1e6:.0f} MB. Fix: checkpoint a small summary and write bulk data to storage."
        )
    slot.save_checkpoint(blob)


def last_checkpoint() -> Any:
    """The job's latest checkpoint (this attempt's, else the one an earlier attempt left), or None."""
    slot = _slot()
    if slot is None:
        return None
    return slot.previous_checkpoint()
