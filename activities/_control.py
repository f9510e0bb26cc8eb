"""Control-plane activities: deployment lookup, fleets, and running containers."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from datetime import datetime, timezone
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from apothic._control._config import Settings, apothic_home
from apothic._trace import ATTR_APP, ATTR_CONTAINER, ATTR_FUNCTION, ATTR_OFFER, ATTR_PROVIDER, ATTR_VERSION
from apothic._trace import env_carrier, passed_env, spanned
from apothic._contracts import (
    CLOSED_JOBS_ACTIVITY,
    ENSURE_FLEET_ACTIVITY,
    EXIT_OK,
    EXIT_REPLACE,
    FLEET_WORKFLOW,
    RELEASE_CONTAINER_ACTIVITY,
    RESOLVE_ACTIVITY,
    RUN_CONTAINER_ACTIVITY,
    ClosedJobsRequest,
    ClosedJobsResult,
    CONTAINER_EVENT_SIGNAL,
    Deployment,
    JobEventIn,
    EnsureFleetRequest,
    FleetStatus,
    FleetInput,
    ReleaseInput,
    ResolveRequest,
    RunContainerInput,
    RunContainerOutput,
    app_workflow_id,
)
from apothic.placement import Offer, choose, placement_query
from apothic.placement.providers.offers import explain_no_match, gather_offers

from ._hosts import DockerHost, Host, ProcessHost, Progress, Started, StartFailed, VastHost, heartbeating
from ._needed import NotNeeded, fleet_asker, until_not_needed
from ._schedules import ScheduleActivities
from ._secrets import redact, resolve_secrets, secret_values
from ._where import placement_of, tell_placed
from ._volumes import (
    affine_placement,
    affinity_note,
    mark_volume_registry,
    prepare_mounts,
    release_mounts,
    unusable_on,
)

HEARTBEAT_EVERY_S = 2.0
# Container start steps are told to at most this many waiting jobs (the first to wait), with
# the fleet's list of them read again at most this often.
MAX_EVENT_WAITERS = 50
WAITERS_REFRESH_S = 5.0
# How long a draining container may take to finish its in-flight inputs, beyond the function's
# own timeout_s (the activity heartbeats meanwhile).
DRAIN_GRACE_S = 30.0


def _span_attrs(inp: RunContainerInput) -> dict[str, Any]:
    """The attributes of a container's placement and provisioning spans (names and ids)."""
    dep = inp.deployment
    return {ATTR_APP: dep.app, ATTR_FUNCTION: dep.function, ATTR_VERSION: dep.version, ATTR_CONTAINER: inp.container_id}


class ControlActivities:
    """The control worker's activities, bound to its settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.providers = settings.provider_settings()
        self.hosts: dict[str, Host] = {"process": ProcessHost(self.providers)}
        mark_volume_registry(settings)  # clients of this server on this host check volumes at deploy

    def all(self) -> list[Any]:
        return [
            self.resolve_deployment, self.ensure_fleet, self.closed_jobs, self.run_container, self.release_container,
            ScheduleActivities(self.settings).sync_schedules,
        ]

    @activity.defn(name=RESOLVE_ACTIVITY)
    async def resolve_deployment(self, req: ResolveRequest) -> Deployment:
        """The deployment a job runs on (run as a local activity by InvocationWorkflow)."""
        handle = activity.client().get_workflow_handle(app_workflow_id(req.app))
        try:
            dep: Deployment = await handle.query("resolve", req, result_type=Deployment)
        except WorkflowQueryFailedError as e:
            raise ApplicationError(str(e), type="NotFound", non_retryable=True) from None
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                raise ApplicationError(
                    f"app {req.app!r} is not deployed. Fix: deploy it first (`app.deploy()` or "
                    f"`apothic deploy path/to/app.py`).",
                    type="NotFound",
                    non_retryable=True,
                ) from None
            raise
        worker = self.settings.worker
        return dataclasses.replace(dep, startup_timeout_s=worker.startup_timeout_s, idle_s=worker.container_idle_s)

    @activity.defn(name=ENSURE_FLEET_ACTIVITY)
    async def ensure_fleet(self, req: EnsureFleetRequest) -> None:
        """Signal-with-start the deployment's FleetWorkflow."""
        dep = req.deployment
        await activity.client().start_workflow(
            FLEET_WORKFLOW,
            FleetInput(deployment=dep),
            id=dep.fleet_id,
            task_queue=self.settings.worker.control_task_queue,
            start_signal="demand",
            start_signal_args=[req.demand],
            static_summary=f"fleet of {dep.app}.{dep.function} v{dep.version}",
        )

    @activity.defn(name=CLOSED_JOBS_ACTIVITY)
    async def closed_jobs(self, req: ClosedJobsRequest) -> ClosedJobsResult:
        client: Client = activity.client()

        async def closed(job_id: str) -> bool:
            try:
                desc = await client.get_workflow_handle(job_id).describe()
            except RPCError as e:
                if e.status == RPCStatusCode.NOT_FOUND:
                    return True
                raise
            return desc.status != WorkflowExecutionStatus.RUNNING

        flags = await asyncio.gather(*(closed(j) for j in req.job_ids))
        return ClosedJobsResult(closed=[j for j, c in zip(req.job_ids, flags) if c])

    @activity.defn(name=RUN_CONTAINER_ACTIVITY)
    async def run_container(self, inp: RunContainerInput) -> RunContainerOutput:
        """Place, start (or adopt) a container, heartbeat while it lives, stop it on cancel.

        Placement ranks the offers of every enabled provider with the function's filters
        (:func:`apothic.placement.choose`). The heartbeat carries ``(token, provider)`` (a
        pid, or a rented instance id): when this worker dies or shuts down, the container
        keeps running and the next attempt of this activity adopts it instead of starting
        another.
        """
        dep = inp.deployment
        started: Started | None = None
        host: Host | None = None
        fresh = False
        details = activity.info().heartbeat_details
        if details:
            token, name = int(details[0]), (str(details[1]) if len(details) > 1 else "process")
            if name:  # a previous attempt had placed it (token 0: perhaps not started yet)
                host = self._host(name)
                handle = await heartbeating(
                    host.adopt(inp.container_id, token), lambda: activity.heartbeat(token, name)
                )
                if handle is not None:
                    started = Started(host.token(handle), handle)
                    activity.logger.info("adopted container %s on %s (%s)", inp.container_id, name, started.token)
                elif token:  # it ended while no worker watched it
                    code = await heartbeating(
                        host.exit_status(inp.container_id), lambda: activity.heartbeat(token, name)
                    )
                    return await self._ended(inp, host, code)
        progress = self._progress(inp)
        needed = fleet_asker(activity.client(), dep.fleet_id, inp.container_id)
        if started is None and details and await needed() is False:
            # A start a lost worker left unfinished (its rental destroyed by adopt), and no job
            # needs this container any more: nothing is rented again.
            return RunContainerOutput(container_id=inp.container_id, exit_code=EXIT_OK,
                                      reason="not needed: no job needed it when its start was resumed")
        if started is None:
            # Read first: a missing secret fails the waiting jobs before anything is built or rented.
            secret_env = await resolve_secrets(self.settings, inp)
            host, offer, candidates = await heartbeating(spanned(
                "apothic.placement", _span_attrs(inp), self._place(dep, progress),
                lambda placed: {ATTR_PROVIDER: placed[1].provider, ATTR_OFFER: str(placed[1].offer_id)},
            ), lambda: activity.heartbeat(0, ""))
            placed = host
            tick = lambda: activity.heartbeat(0, placed.name)  # noqa: E731
            tick()
            env = self._container_env(inp, secret_env)
            try:
                mounts = await prepare_mounts(dep.spec, host.name, inp.container_id, self.settings, progress, tick)
                env.update(mounts.env)
                # A start that no job needs for the idle window (the job was cancelled while the
                # rented machine loaded) is cancelled: its cleanup destroys what was rented.
                started = await until_not_needed(
                    spanned(f"apothic.provision {host.name}",
                            {**_span_attrs(inp), ATTR_PROVIDER: host.name, ATTR_OFFER: str(offer.offer_id)},
                            host.start(inp.container_id, env, dep.spec, offer, progress, tick, candidates, mounts=mounts)),
                    needed, dep.idle_s or self.settings.worker.container_idle_s,
                )
            except NotNeeded as e:
                await progress("container", {"status": "not_needed", "provider": host.name, "reason": str(e)})
                return RunContainerOutput(container_id=inp.container_id, exit_code=EXIT_OK,
                                          reason=f"not needed: {e}", provider=host.name)
            except StartFailed as e:
                # A retryable failure (the engine did not answer) is retried by the activity's
                # policy; a permanent one (an image that cannot be built or pulled) makes the
                # fleet fail the waiting jobs at once; the others end this container (the fleet
                # decides what next).
                kind = ("ContainerStartUnavailable" if e.retryable else
                        "ContainerStartRefused" if e.permanent else "ContainerStartFailed")
                raise ApplicationError(redact(str(e), secret_env.values()), type=kind,
                                       non_retryable=not e.retryable) from None
            except Exception as e:
                if redact(str(e), secret_env.values()) == str(e):
                    raise
                # An unexpected error that quotes the environment: retried as it would be, words scrubbed.
                raise ApplicationError(redact(str(e), secret_env.values()), type=type(e).__name__) from None
            fresh = True
            placement = placement_of(inp.container_id, host.name, dep.spec, offer, started.where, candidates)
        assert host is not None and started is not None
        running, handle = host, started.handle
        beat = lambda: activity.heartbeat(started.token, running.name)  # noqa: E731
        beat()
        try:
            if fresh:
                await tell_placed(activity.client(), inp.container_workflow_id, placement)
                await progress("container", {"status": "started", "provider": running.name, **started.where})
            while True:
                code = await heartbeating(running.wait(handle, HEARTBEAT_EVERY_S), beat)
                if code is not None:
                    return await heartbeating(self._ended(inp, running, code, started.where), beat)
                beat()
        except asyncio.CancelledError:
            if activity.is_worker_shutdown():
                raise  # leave the container running: the next attempt adopts it
            await heartbeating(running.stop(handle, dep.spec.timeout_s + DRAIN_GRACE_S, tick=beat), beat)
            raise
        finally:
            await running.close(handle)

    def _host(self, name: str) -> Host:
        if name not in self.hosts:
            if name == "docker":
                self.hosts[name] = DockerHost(self.providers)
            elif name == "vast":
                self.hosts[name] = VastHost(self.providers)
            else:
                raise ApplicationError(f"unknown provider {name!r}", type="ContainerStartFailed", non_retryable=True)
        return self.hosts[name]

    async def _place(self, dep: Deployment, progress: Progress) -> tuple[Host, Offer, list[Offer]]:
        """The host and offer to start on: one ranking of every enabled provider's offers."""
        spec = dep.spec
        names = [spec.provider] if spec.provider else list(self.providers.enabled)
        query = placement_query(affine_placement(spec), cpu=spec.cpu, memory_mb=spec.memory_mb, disk_gb=spec.disk_gb)
        skipped: dict[str, str] = {}
        for name in names:
            why = self._host(name).usable_for(spec) or unusable_on(spec, name, self.settings)
            if why:
                skipped[name] = why
        usable = [n for n in names if n not in skipped]
        docker = self.hosts["docker"].provider if "docker" in self.hosts else None
        offers, down = await gather_offers(
            usable, query, disk_path=apothic_home(), docker=docker, vast_limit=self.providers.vast_search_limit
        )
        skipped.update(down)
        ranked = choose(query, offers, names)
        if not ranked:
            why_not = await explain_no_match([n for n in usable if n not in skipped], query, offers)
            notes = "".join(f"; {n} not used: {why}" for n, why in skipped.items()) + affinity_note(spec)
            message = (
                f"no machine matches {dep.app}.{dep.function} ({query}): {why_not}{notes}. "
                "Fix: relax the function's placement filters or enable another provider."
            )
            await progress("placement", {"status": "no_match", "reason": message})
            raise ApplicationError(message, type="ContainerStartRefused", non_retryable=True)
        best = ranked[0]
        await progress(
            "placement",
            {
                "provider": best.provider, "offer_id": best.offer_id, "gpu_name": best.gpu_name,
                "num_gpus": best.num_gpus, "dph_total": best.dph_total, "geolocation": best.geolocation,
                "matched": len(ranked), "offers": len(offers), "skipped": skipped,
            },
        )
        candidates = [o for o in ranked if o.provider == best.provider]
        return self._host(best.provider), best, candidates

    def _progress(self, inp: RunContainerInput) -> Progress:
        """Tell the jobs waiting on this container's fleet each step of its start.

        The waiting jobs come from the fleet's ``status`` query (read again at most every
        ``WAITERS_REFRESH_S``); at most ``MAX_EVENT_WAITERS`` of them are told, by signals sent
        from here, so that neither the fleet's history nor its workflow tasks grow with them.
        """
        client = activity.client()
        fleet = client.get_workflow_handle(inp.deployment.fleet_id)
        cache: dict[str, Any] = {"at": -1e9, "jobs": []}

        async def waiting() -> list[str]:
            now = asyncio.get_running_loop().time()
            if now - cache["at"] >= WAITERS_REFRESH_S:
                cache["at"] = now
                try:
                    status = await fleet.query("status", result_type=FleetStatus)
                    cache["jobs"] = list(status.outstanding)[:MAX_EVENT_WAITERS]
                except Exception:  # noqa: BLE001 - events are best effort; the container starts anyway
                    cache["jobs"] = []
            return cache["jobs"]

        async def tell(job_id: str, ev: JobEventIn) -> None:
            try:
                await client.get_workflow_handle(job_id).signal(CONTAINER_EVENT_SIGNAL, ev)
            except RPCError:
                pass  # that job has ended meanwhile

        async def emit(event: str, data: dict[str, Any]) -> None:
            activity.logger.info("container %s: %s %s", inp.container_id, event, data)
            ev = JobEventIn(event, data, datetime.now(timezone.utc).isoformat(), inp.container_id)
            await asyncio.gather(*(tell(job_id, ev) for job_id in await waiting()))

        return emit

    def _container_env(self, inp: RunContainerInput, secrets: dict[str, str]) -> dict[str, str]:
        """The runtime's environment: the function's secrets, then (never overridden by them)
        the connection and the deployment. The host adds its own few (container id, ...)."""
        dep = inp.deployment
        # The worker's OTEL_* and this trace's context (apothic/_trace); a secret's win.
        env = {**passed_env(os.environ), **env_carrier(), **secrets}
        env.update(self.settings.connection_env())
        env.update(
            APOTHIC_CONTAINER_WORKFLOW_ID=inp.container_workflow_id,
            APOTHIC_APP=dep.app,
            APOTHIC_FUNCTION=dep.function,
            APOTHIC_VERSION=str(dep.version),
            APOTHIC_TASK_QUEUE=dep.task_queue,
            APOTHIC_CONCURRENCY=str(max(1, dep.spec.concurrent_requests)),
            APOTHIC_IDLE_S=str(dep.idle_s or self.settings.worker.container_idle_s),
            APOTHIC_SERVER_UNREACHABLE_S=str(self.settings.worker.server_unreachable_s),
        )
        return env

    async def _ended(
        self, inp: RunContainerInput, host: Host, code: int, where: dict[str, Any] | None = None
    ) -> RunContainerOutput:
        if code in (EXIT_OK, EXIT_REPLACE):
            reason = "exited" if code == EXIT_OK else "retired: an input ignored its interruption"
            return RunContainerOutput(
                container_id=inp.container_id, exit_code=code, reason=reason, provider=host.name, where=where or {}
            )
        tail = redact(await host.log_tail(inp.container_id), await secret_values(self.settings, inp))
        raise ApplicationError(
            f"container {inp.container_id} on {host.name} exited with code {code}; its last output:\n{tail}",
            {"exit_code": code},
            type="ContainerExited",
            non_retryable=True,
        )

    @activity.defn(name=RELEASE_CONTAINER_ACTIVITY)
    async def release_container(self, inp: ReleaseInput) -> None:
        """Make sure nothing of the container is left on any provider it may have used (idempotent).

        Every enabled provider is asked, not only the one that ran it: a worker lost between
        renting a machine and its first heartbeat leaves no record of where it was placed.
        """
        names = dict.fromkeys([inp.provider] if inp.provider else [])
        names.update(dict.fromkeys(self.providers.enabled))
        errors = []
        await asyncio.to_thread(release_mounts, inp.container_id)  # its bucket and cloud volume caches
        for name in names:
            try:
                gone = await self._host(name).release(inp.container_id)
            except Exception as e:  # noqa: BLE001 - one provider's failure must not hide another's leftovers
                if inp.provider and name != inp.provider:
                    # Placed elsewhere: this one is only checked in case; say it, do not fail.
                    activity.logger.warning("could not check %s for leftovers of %s: %s", name, inp.container_id, e)
                elif name == inp.provider or not (name == "docker" and name in self.providers.auto):
                    # (an auto-enabled engine that never answered holds nothing of ours)
                    errors.append(f"{name}: {type(e).__name__}: {e}")
                continue
            if gone:
                activity.logger.warning("released leftovers of %s on %s: %s", inp.container_id, name, gone)
        if errors:
            raise ApplicationError(f"releasing {inp.container_id} failed: " + "; ".join(errors), type="ReleaseFailed")
