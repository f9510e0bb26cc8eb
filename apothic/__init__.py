"""Apothic: run Python functions on rented GPUs as durable Temporal workflows.

This module only re-exports; everything else is private.
"""

from ._app import App, AppDeployment
from ._control._connection import ControlPlaneClient
from ._data._checkpoint import checkpoint, last_checkpoint
from ._image._image import Image
from ._invoke._function import Function, RemoteFunction
from ._invoke._job import Job, JobStatus
from ._invoke._watch import JobEvent
from ._options._resources import (
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
from .exceptions import (
    ApothicError,
    CallTimeoutError,
    FunctionTimeoutError,
    InvalidError,
    JobCancelledError,
    NotFoundError,
    NotSupportedError,
    PlacementError,
    RemoteError,
)

__version__ = "0.1.0"

__all__ = [
    "ApothicError",
    "App",
    "AppDeployment",
    "CallTimeoutError",
    "CloudBucketMount",
    "ControlPlaneClient",
    "Cron",
    "Function",
    "FunctionTimeoutError",
    "Image",
    "InvalidError",
    "Job",
    "JobCancelledError",
    "JobEvent",
    "JobStatus",
    "LivConfig",
    "NotFoundError",
    "NotSupportedError",
    "Period",
    "PlacementError",
    "RemoteError",
    "RemoteFunction",
    "Retries",
    "Secret",
    "StorageMount",
    "Volume",
    "batched",
    "checkpoint",
    "concurrent",
    "last_checkpoint",
    "liv",
]
