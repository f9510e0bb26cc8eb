"""Apothic: run Python functions on rented GPUs as durable Temporal workflows.

This module only re-exports; everything else is private. Names load on first use, so that
``import apothic`` (and ``import apothic.placement``, which runs this file first) stays cheap
and loads neither Temporal nor any I/O client library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the private module that defines it
_EXPORTS: dict[str, str] = {
    "ApothicError": ".exceptions",
    "App": "._app",
    "AppDeployment": "._app",
    "AppInfo": "._invoke._apps",
    "CallTimeoutError": ".exceptions",
    "CloudBucketMount": "._options._resources",
    "Cls": "._cls._handles",
    "ControlPlaneClient": "._control._connection",
    "Cron": "._options._resources",
    "Dict": "._coord._dict",
    "Function": "._invoke._function",
    "FunctionTimeoutError": ".exceptions",
    "Image": "._image",
    "InvalidError": ".exceptions",
    "Job": "._invoke._job",
    "JobCancelledError": ".exceptions",
    "JobEvent": "._invoke._watch",
    "JobStatus": "._invoke._job",
    "LocalEntrypoint": "._invoke._entrypoint",
    "LivConfig": "._options._resources",
    "LivError": ".exceptions",
    "NotFoundError": ".exceptions",
    "NotSupportedError": ".exceptions",
    "PendingLimitError": ".exceptions",
    "Period": "._options._resources",
    "PlacementError": ".exceptions",
    "Queue": "._coord._queue",
    "RemoteError": ".exceptions",
    "RemoteFunction": "._invoke._function",
    "Retries": "._options._resources",
    "Secret": "._options._resources",
    "SecretInfo": "._secrets._store",
    "StorageMount": "._options._resources",
    "Volume": "._options._resources",
    "batched": "._options._resources",
    "checkpoint": "._data._checkpoint",
    "concurrent": "._options._resources",
    "current_job_id": "._invoke._context",
    "enable_output": "._invoke._output",
    "enter": "._cls._marks",
    "exit": "._cls._marks",
    "is_local": "._invoke._context",
    "last_checkpoint": "._data._checkpoint",
    "liv": "._options._resources",
    "method": "._cls._marks",
    "parameter": "._cls._marks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'apothic' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    # For type checkers and editors only: at run time the names load lazily (above).
    from ._app import App, AppDeployment  # noqa: F401
    from ._cls._handles import Cls  # noqa: F401
    from ._cls._marks import enter, exit, method, parameter  # noqa: F401
    from ._coord._dict import Dict  # noqa: F401
    from ._coord._queue import Queue  # noqa: F401
    from ._control._connection import ControlPlaneClient  # noqa: F401
    from ._data._checkpoint import checkpoint, last_checkpoint  # noqa: F401
    from ._image import Image  # noqa: F401
    from ._invoke._apps import AppInfo  # noqa: F401
    from ._invoke._context import current_job_id, is_local  # noqa: F401
    from ._invoke._entrypoint import LocalEntrypoint  # noqa: F401
    from ._invoke._output import enable_output  # noqa: F401
    from ._invoke._function import Function, RemoteFunction  # noqa: F401
    from ._invoke._job import Job, JobStatus  # noqa: F401
    from ._invoke._watch import JobEvent  # noqa: F401
    from ._options._resources import (  # noqa: F401
        CloudBucketMount,
        Cron,
        LivConfig,
        Period,
        Retries,
        Secret,
        StorageMount,
        Volume,
        batched,
        concurrent,
        liv,
    )
    from ._secrets._store import SecretInfo  # noqa: F401
    from .exceptions import (  # noqa: F401
        ApothicError,
        CallTimeoutError,
        FunctionTimeoutError,
        InvalidError,
        JobCancelledError,
        LivError,
        NotFoundError,
        NotSupportedError,
        PendingLimitError,
        PlacementError,
        RemoteError,
    )
