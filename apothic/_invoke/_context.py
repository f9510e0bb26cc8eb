"""Where code runs: ``apothic.is_local()`` and ``apothic.current_job_id()``."""

from __future__ import annotations

import os


def is_local() -> bool:
    """False inside a function container (and the processes its code starts), True elsewhere:
    on the caller's machine, in a local entrypoint, in a direct call ``fn(x)`` / ``fn.local(x)``."""
    return not os.environ.get("APOTHIC_CONTAINER_ID")


def current_job_id() -> str | None:
    """The id of the job whose input runs here (``Job.from_id`` finds it), or None outside a
    function container. A map's input answers ``<map id>#<index>``; a ``@batched`` call, which
    serves several jobs at once, None."""
    from .._data._checkpoint import (
        _slot,  # the runtime binds each input there (its thread or context)
    )

    slot = _slot()
    job_id = getattr(slot, "job_id", "") if slot is not None else ""
    return job_id or None
