"""The one translation of Temporal's exceptions into the Apothic error tree.

No ``temporalio`` exception reaches a user. Every public SDK method goes through
``_loop.synced``/``synced_iter``, which pass whatever escapes a call to
:func:`translate_error`; connecting (``_client.connect``) words its failures with
:func:`connect_error`; the CLI passes what escapes a command through
:func:`translate_error` too. The original exception stays chained (``raise ... from e``).

What passes through untouched: an :class:`~apothic.exceptions.ApothicError` (already
worded), any exception that does not come from ``temporalio``, and a user function's own
exception re-raised by ``_job.translate_failure`` (marked with :func:`mark_user_exception`,
whatever its type).

======================================  =====================================================
Temporal                                Apothic
======================================  =====================================================
``RPCError`` NOT_FOUND                  ``NotFoundError`` (what the server did not find)
``RPCError`` UNAVAILABLE                ``ConnectionError`` (the address and the fix)
``RPCError`` DEADLINE_EXCEEDED, an      ``ServerTimeoutError``
RPC cancelled by its timeout,
``RPCTimeoutOrCancelledError``
``RPCError`` UNAUTHENTICATED,           ``PermissionDeniedError`` (the fix: credentials,
PERMISSION_DENIED                       namespace)
``RPCError`` (any other status)         ``ServerError`` (the server's message, ``status``)
``WorkflowFailureError`` and failures   what ``translate_failure`` makes of a job's failure
(``ApplicationError``, cancellation,    (the user's own exception, ``JobCancelledError``,
timeouts)                               ``RemoteError``, ...)
``WorkflowQueryFailedError``,           ``RemoteError`` (the workflow's message)
``WorkflowUpdateFailedError``
already started / already running       ``ServerError`` (status ``ALREADY_EXISTS``)
anything else from ``temporalio``       ``ServerError`` (its message)
======================================  =====================================================
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from ..exceptions import (
    ApothicError,
    ConnectionError,
    NotFoundError,
    PermissionDeniedError,
    RemoteError,
    ServerError,
    ServerTimeoutError,
)

if TYPE_CHECKING:
    from ._config import Settings

_USER_MARK = "__apothic_user_exception__"


def mark_user_exception(exc: BaseException) -> BaseException:
    """Mark ``exc`` as a user function's own exception, which is never translated."""
    with contextlib.suppress(Exception):  # an exotic type that refuses attributes stays unmarked
        setattr(exc, _USER_MARK, True)
    return exc


def is_user_exception(exc: BaseException) -> bool:
    try:
        return vars(exc).get(_USER_MARK) is True
    except TypeError:
        return False


def from_temporalio(exc: BaseException) -> bool:
    """Whether ``exc``'s type is (or derives from) a ``temporalio`` exception type."""
    return any(c.__module__.partition(".")[0] == "temporalio" for c in type(exc).__mro__)


# --- wording ---


def unreachable_fix(settings: Settings | None) -> str:
    """What to do about a server that cannot be reached, for these settings."""
    if settings is None:
        return (
            "Fix: start a server and a control worker with `apothic dev`, or check that "
            "APOTHIC_TEMPORAL_ADDRESS names a running Temporal frontend."
        )
    if settings.embedded:
        return (
            "Fix: start it with `apothic dev` (the dev server and a control worker, at the address of "
            f"{settings.config_file or 'temporal-dev.yaml'}), or set APOTHIC_TEMPORAL_ADDRESS to a running "
            "Temporal frontend."
        )
    if os.environ.get("APOTHIC_TEMPORAL_ADDRESS") == settings.address:
        return (
            f"Fix: check APOTHIC_TEMPORAL_ADDRESS={settings.address}: it must name a running Temporal frontend "
            "(host:port) reachable from here; for a local one, unset it and run `apothic dev`."
        )
    return (
        f"Fix: check the address {settings.address} given to ControlPlaneClient (or base_url=): it must name "
        "a running Temporal frontend (host:port) reachable from here; `apothic dev` starts a local one."
    )


def _where(settings: Settings | None) -> str:
    if settings is None:
        return "the Temporal server"
    return f"the Temporal server at {settings.address} (namespace {settings.namespace!r})"


def _prefix(operation: str) -> str:
    return f"{operation}: " if operation else ""


def _permission_fix(settings: Settings | None) -> str:
    namespace = f" namespace {settings.namespace!r}" if settings is not None else " the namespace"
    return (
        "Fix: check the credentials: APOTHIC_TEMPORAL_API_KEY, or the client certificate in "
        "APOTHIC_TEMPORAL_TLS_CERT/APOTHIC_TEMPORAL_TLS_KEY (with APOTHIC_TEMPORAL_TLS=1), and that they "
        f"may use{namespace} (APOTHIC_TEMPORAL_NAMESPACE)."
    )


_WORKER_HINT = (
    "A query or an update (events, map results, deploy) waits for a control worker: check that one "
    "runs (`apothic dev` or `apothic worker`)"
)


def _rpc_error(exc: Any, operation: str, settings: Settings | None) -> ApothicError:
    from temporalio.service import RPCStatusCode

    status = exc.status
    message = (exc.message or str(exc)).strip() or "no message"
    head = _prefix(operation)
    if status == RPCStatusCode.NOT_FOUND:
        return NotFoundError(f"{head}not found on {_where(settings)}: {message}")
    if status == RPCStatusCode.UNAVAILABLE:
        address = settings.address if settings is not None else ""
        return ConnectionError(
            f"{head}{_where(settings)} is unreachable ({message}). {unreachable_fix(settings)}", address
        )
    if status == RPCStatusCode.DEADLINE_EXCEEDED or (
        status == RPCStatusCode.CANCELLED and "timeout" in message.lower()
    ):
        return ServerTimeoutError(
            f"{head}no answer from {_where(settings)} in time ({message}). {_WORKER_HINT}, and that the "
            "server answers."
        )
    if status in (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED):
        return PermissionDeniedError(f"{head}{_where(settings)} refused: {message}. {_permission_fix(settings)}")
    name = getattr(status, "name", str(status))
    return ServerError(f"{head}{_where(settings)} refused the request ({name}): {message}", name)


def translate_error(
    exc: BaseException, *, operation: str = "", settings: Settings | None = None, job_id: str = ""
) -> BaseException:
    """The exception a user should see instead of ``exc`` (``exc`` itself when it needs none).

    Args:
        operation: what was being done, e.g. ``"Job.status(job-…)"``, put first in the message.
        settings: the settings of the call (the address, namespace and fix in the message).
        job_id: the job or map the call was about, for a failure of its workflow.
    """
    if isinstance(exc, ApothicError) or is_user_exception(exc) or not from_temporalio(exc):
        return exc
    from temporalio import client as tc
    from temporalio import exceptions as tx
    from temporalio.service import RPCError

    head = _prefix(operation)
    if isinstance(exc, RPCError):
        return _rpc_error(exc, operation, settings)
    if isinstance(exc, tc.RPCTimeoutOrCancelledError):
        return ServerTimeoutError(f"{head}no answer from {_where(settings)} in time ({exc}). {_WORKER_HINT}.")
    if isinstance(exc, tx.WorkflowAlreadyStartedError):
        return ServerError(f"{head}workflow {exc.workflow_id!r} already runs on {_where(settings)}", "ALREADY_EXISTS")
    if isinstance(exc, tc.ScheduleAlreadyRunningError):
        return ServerError(f"{head}the schedule already exists on {_where(settings)}", "ALREADY_EXISTS")
    if isinstance(exc, (tc.WorkflowFailureError, tx.FailureError)):
        from .._invoke._job import translate_failure

        translated = translate_failure(exc, job_id or "?")
        return translated if isinstance(translated, ApothicError) else mark_user_exception(translated)
    if isinstance(exc, tc.WorkflowQueryFailedError):
        return RemoteError(f"{head}a query failed in the workflow: {exc.message}")
    if isinstance(exc, tc.WorkflowUpdateFailedError):
        cause = exc.cause
        kind = str(getattr(cause, "type", "") or "") if cause is not None else ""
        text = getattr(cause, "message", None) or str(cause or exc)
        return RemoteError(f"{head}an update failed in the workflow: {text}", kind)
    text = str(exc).strip() or "the Temporal client failed without a message"
    return ServerError(f"{head}{text} ({_where(settings)})")


def connect_error(exc: BaseException | None, settings: Settings, timeout_s: float) -> ApothicError:
    """The error for a connection to ``settings.address`` that failed with ``exc`` (None: no
    answer within ``timeout_s``). It names the address, what happened and the fix."""
    from temporalio.service import RPCError, RPCStatusCode

    if isinstance(exc, RPCError) and exc.status in (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED):
        return PermissionDeniedError(
            f"{_where(settings)} refused the connection: {exc.message}. {_permission_fix(settings)}"
        )
    address = settings.address
    tls = " over TLS" if settings.tls else ""
    if exc is None:
        what = (
            f"accepted the connection but did not answer{tls} within {timeout_s:g} s (is it a Temporal "
            "frontend, and is it up? a plain-text server reached over TLS, or the reverse, also hangs)"
        )
    else:
        raw = str(exc)
        low = raw.lower()
        if "connection refused" in low or "connectionrefused" in low:
            what = "refused the connection: nothing listens there"
        elif "dns error" in low or "failed to lookup address" in low:
            host = address.rpartition(":")[0] if ":" in address else address
            what = f"cannot be resolved: no host {host!r} is known"
        elif "timeout" in low or "timed out" in low:
            what = f"did not answer within {timeout_s:g} s"
        elif "invalid" in low and ("uri" in low or "url" in low):
            what = "is not a valid address (allowed: host:port, e.g. 127.0.0.1:7233)"
        elif "tls" in low or "certificate" in low or "handshake" in low:
            what = f"failed the TLS handshake ({raw})"
        else:
            what = f"could not be connected to ({raw})"
    return ConnectionError(
        f"cannot reach the Temporal server at {address} (namespace {settings.namespace!r}): it {what}. "
        f"{unreachable_fix(settings)}",
        address,
    )


def describe_call(obj: Any, method: str) -> dict[str, Any]:
    """``translate_error``'s keyword arguments for ``obj.method(...)`` of an SDK object."""
    if obj is None:
        return {"operation": method}
    cls = type(obj).__name__
    subject = ""
    job_id = str(getattr(obj, "job_id", "") or "")
    if job_id:
        subject = job_id
    elif getattr(obj, "app_name", None) and getattr(obj, "function_name", None):
        subject = f"{obj.app_name}.{obj.function_name}"
    elif isinstance(getattr(obj, "name", None), str):
        subject = obj.name
    settings = None
    try:
        cp = getattr(obj, "_cp", None)
        settings = cp.settings if cp is not None else None
    except Exception:  # noqa: BLE001 - the message does without it
        settings = None
    operation = f"{cls}.{method}" + (f"({subject})" if subject else "")
    return {"operation": operation, "settings": settings, "job_id": job_id}
