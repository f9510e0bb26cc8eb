"""The Apothic error tree.

Every error Apothic raises on purpose derives from :class:`ApothicError`. No
``temporalio`` or ``docker`` exception reaches a user: they are translated at the
edge (``apothic/_control/_errors.py``; the original stays chained as ``__cause__``). A
user function's own exception is re-raised as its own type, with the remote traceback
attached as a note (``exc.__notes__``).

::

    ApothicError
    ├── InvalidError            bad option, argument or name; nothing was submitted
    │   └── NotSupportedError   a valid option whose behaviour is not built yet
    ├── NotFoundError           no such app, function, deployment, job, schedule or namespace
    ├── ConnectionError         the Temporal server could not be reached: nothing listens at
    │                           the address, it does not answer, or the connection broke
    ├── ServerTimeoutError      a request got no answer within its deadline (a query or an
    │                           update also waits for a control worker)
    ├── PermissionDeniedError   the server refused the credentials (API key, TLS certificate)
    │                           or this caller may not do that in the namespace
    ├── ServerError             the server refused or failed a request for another reason
    │                           (``status``: the gRPC status name; the message is the server's)
    ├── PlacementError          no machine fits, or none could be started
    ├── RemoteError             the remote side failed in a way that has no local type
    ├── FunctionTimeoutError    the function's own ``timeout_s`` expired
    ├── CallTimeoutError        the caller's ``remote(timeout_s=...)`` wait expired
    ├── PendingLimitError       ``max_pending_tasks`` inputs already wait for capacity; nothing
    │                           was submitted
    ├── LivError                a generated function (``@apothic.liv``) could not be generated;
    │                           nothing was deployed
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
    "LivError",
    "NotFoundError",
    "NotSupportedError",
    "PendingLimitError",
    "PermissionDeniedError",
    "PlacementError",
    "RemoteError",
    "ServerError",
    "ServerTimeoutError",
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
    """The Temporal server could not be reached: nothing listens at the address, the host
    name does not resolve, it accepted the connection but did not answer in time, or the
    connection broke. The message names the address and the fix.

    Attributes:
        address: the ``host:port`` that was tried ("" when not known).
    """

    def __init__(self, message: str, address: str = "") -> None:
        super().__init__(message)
        self.address = address


class ServerTimeoutError(ApothicError):
    """A request to the Temporal server got no answer within its deadline.

    A query or an update (a job's events, a map's results, a deploy) is answered by a
    control worker, so this also means that none is running.
    """


class PermissionDeniedError(ApothicError):
    """The server refused the credentials (``APOTHIC_TEMPORAL_API_KEY``, the TLS
    certificate) or does not let this caller do that in the namespace."""


class ServerError(ApothicError):
    """The Temporal server refused or failed a request for a reason that has no more
    specific type here. The message is the server's.

    Attributes:
        status: the gRPC status name (``"INVALID_ARGUMENT"``, ``"RESOURCE_EXHAUSTED"``, ...),
            or "" when the failure did not come with one.
    """

    def __init__(self, message: str, status: str = "") -> None:
        super().__init__(message)
        self.status = status


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


class PendingLimitError(ApothicError):
    """A ``spawn``/``remote`` was refused at once: ``max_pending_tasks`` inputs of the function
    already wait for capacity. Nothing was submitted.

    ``map``, ``starmap``, ``for_each`` and ``spawn_map`` never raise it: they wait for room.

    Attributes:
        limit: the function's ``max_pending_tasks``.
        waiting: inputs the fleet counted waiting when it closed the queue.
    """

    def __init__(self, message: str, limit: int = 0, waiting: int = 0) -> None:
        super().__init__(message)
        self.limit = limit
        self.waiting = waiting


class JobCancelledError(ApothicError):
    """The job was cancelled before it produced a result."""


class LivError(ApothicError):
    """A generated function (``@apothic.liv``) could not be generated at deploy: no model is
    configured or reachable, the model refused the request, or its answer still failed its
    checks after the last round. Nothing was deployed.

    Attributes:
        code: the last generated code ("" when the model gave none).
        rounds: how many rounds ran.
        workflow_id: the generation's workflow (its history shows each round).
    """

    def __init__(self, message: str, code: str = "", rounds: int = 0, workflow_id: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.rounds = rounds
        self.workflow_id = workflow_id
