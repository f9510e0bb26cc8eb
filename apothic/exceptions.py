"""The Apothic error tree.

Every error Apothic raises on purpose derives from :class:`ApothicError`. No
``temporalio`` or ``docker`` exception reaches a user: they are translated at the
edge. A user function's own exception is re-raised as its own type, with the
remote traceback attached as a note (``exc.__notes__``).

::

    ApothicError
    ├── InvalidError            bad option, argument or name; nothing was submitted
    │   └── NotSupportedError   a valid option whose behaviour is not built yet
    ├── NotFoundError           no such app, function, deployment or job
    ├── ConnectionError         the Temporal server could not be reached
    ├── PlacementError          no machine fits, or none could be started
    ├── RemoteError             the remote side failed in a way that has no local type
    ├── FunctionTimeoutError    the function's own ``timeout_s`` expired
    ├── CallTimeoutError        the caller's ``remote(timeout_s=...)`` wait expired
    └── JobCancelledError       the job was cancelled before it produced a result
"""

from __future__ import annotations

__all__ = [
    "ApothicError",
    "CallTimeoutError",
    "ConnectionError",
    "FunctionTimeoutError",
    "InvalidError",
    "JobCancelledError",
    "NotFoundError",
    "NotSupportedError",
    "PlacementError",
    "RemoteError",
]


class ApothicError(Exception):
    """Base of every error Apothic raises on purpose."""


class InvalidError(ApothicError):
    """An option, argument or name is invalid. Nothing was submitted."""


class NotSupportedError(InvalidError):
    """A valid option whose behaviour is not built yet was set to a non-default value."""


class NotFoundError(ApothicError):
    """No such app, function, deployment or job."""


class ConnectionError(ApothicError):  # noqa: A001 - deliberate, namespaced as apothic.exceptions
    """The Temporal server could not be reached or refused the connection."""


class PlacementError(ApothicError):
    """No machine fits the function's requirements, or none could be started."""


class RemoteError(ApothicError):
    """The remote side failed and the failure has no importable local type.

    Attributes:
        remote_type: qualified name of the remote exception type.
        remote_traceback: the traceback text as formatted remotely.
    """

    def __init__(self, message: str, remote_type: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        base = super().__str__()
        if self.remote_traceback:
            return f"{base}\n\nRemote traceback:\n{self.remote_traceback}"
        return base


class FunctionTimeoutError(ApothicError):
    """The function ran longer than its ``timeout_s`` (per attempt)."""


class CallTimeoutError(ApothicError):
    """The caller's wait (``remote(timeout_s=...)`` or ``job.wait(timeout_s=...)``) expired.

    The job itself may still be running unless the message says it was cancelled.
    """


class JobCancelledError(ApothicError):
    """The job was cancelled before it produced a result."""
