"""Secrets at a container's start: read in ``run_container``, handed to the container only.

``resolve_secrets`` reads the function's named secrets from the store
(``apothic/_secrets/_store.py``) just before the container is placed. Their values go into the
environment given to the host's ``start`` and nowhere else: not into events, heartbeats,
results, log lines or error texts (``redact`` scrubs what a failure could echo). A secret that
is missing, or a store that cannot be read, fails at once and for good: the jobs waiting on the
fleet are told (``capacity_failed``, so each fails with the secret's name and the fix) and the
activity raises a non-retryable ``SecretNotFound`` (``SecretStoreInvalid``), so the fleet does
not start container after container in vain.
"""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from apothic._control._config import Settings
from apothic._contracts import FleetStatus, RunContainerInput
from apothic._secrets import MissingSecretsError, redact, store_for
from apothic.exceptions import ApothicError

__all__ = ["redact", "resolve_secrets", "secret_values"]


async def resolve_secrets(settings: Settings, inp: RunContainerInput) -> dict[str, str]:
    """The environment the deployment's secrets give its container ({} when it names none).

    Raises:
        ApplicationError: non-retryable ``SecretNotFound`` or ``SecretStoreInvalid``, after
            the fleet's waiting jobs were failed with the same text.
    """
    dep = inp.deployment
    names = list(getattr(dep.spec, "secrets", None) or [])
    if not names:
        return {}
    try:
        return await asyncio.to_thread(store_for(settings).resolve, names)
    except ApothicError as e:  # missing secrets, or a store that cannot be read (never a value in the text)
        kind = "SecretNotFound" if isinstance(e, MissingSecretsError) else "SecretStoreInvalid"
        message = f"cannot start a container of {dep.app}.{dep.function} v{dep.version}: {e}"
        activity.logger.warning("container %s: %s", inp.container_id, message)
        await _fail_waiting_jobs(inp, message)
        raise ApplicationError(message, type=kind, non_retryable=True) from None


async def secret_values(settings: Settings, inp: RunContainerInput) -> list[str]:
    """The values of the deployment's secrets as the store has them now, for redaction only
    (best effort: [] when they cannot be read)."""
    names = list(getattr(inp.deployment.spec, "secrets", None) or [])
    if not names:
        return []
    try:
        return list((await asyncio.to_thread(store_for(settings).resolve, names)).values())
    except ApothicError:
        return []


async def _fail_waiting_jobs(inp: RunContainerInput, reason: str) -> None:
    """Signal ``capacity_failed`` to every job the fleet has waiting (best effort: without it
    the fleet fails them itself after its start failures)."""
    client = activity.client()
    try:
        status = await client.get_workflow_handle(inp.deployment.fleet_id).query("status", result_type=FleetStatus)
    except Exception as e:  # noqa: BLE001 - the fleet's own failure handling still applies
        activity.logger.warning("could not read the waiting jobs of %s: %s", inp.deployment.fleet_id, e)
        return

    async def tell(job_id: str) -> None:
        try:
            await client.get_workflow_handle(job_id).signal("capacity_failed", reason)
        except RPCError as e:  # that job has ended meanwhile
            activity.logger.info("could not tell %s that its container cannot start: %s", job_id, e)

    activity.logger.info("failing the jobs waiting on %s: %s", inp.deployment.fleet_id, status.outstanding)
    await asyncio.gather(*(tell(job_id) for job_id in status.outstanding))
