"""Schedules: a function's ``schedule=`` as a Temporal Schedule, and the calls that manage them.

Deploy keeps them in step (``sync_app_schedules``, run by the control worker's activity
``apothic.sync_schedules`` from the AppWorkflow's ``deploy`` and ``remove`` updates): one
Schedule per scheduled function, id ``apothic-schedule:<app>:<function>``, whose action starts
an ordinary ``InvocationWorkflow`` (a job: search attributes, logs, retries, cancellation) with
no arguments and no deployment, so that each run resolves the version current when it starts.
Temporal names each run ``job-sched-<app>.<function>-<time>Z``.

:class:`Schedules` lists, pauses, resumes, triggers, backfills and deletes them; every method
blocks, and ``Schedules().aio.<method>`` is its async twin.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleBackfill,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from .._contracts import (
    INVOCATION_WORKFLOW,
    FunctionSpec,
    InvocationInput,
    ScheduleConfig,
    SyncSchedulesRequest,
    SyncSchedulesResult,
    schedule_id,
    scheduled_job_prefix,
)
from .._control._client import get_client, search_attributes
from .._control._connection import ControlPlaneClient
from .._control._loop import AioNamespace, synced
from .._data._serialization import CloudPickled
from .._options._resources import Cron, Period
from ..exceptions import InvalidError, NotFoundError
from ._cron import next_cron_times, next_period_times

SCHEDULE_PREFIX = "apothic-schedule:"
# The action's memo key: the ScheduleConfig as written (Temporal keeps only the compiled spec).
SCHEDULE_MEMO_KEY = "apothic.schedule"

OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}


def schedule_config(schedule: Cron | Period | None) -> ScheduleConfig | None:
    """The deployable form of a decorator's ``schedule=``."""
    if isinstance(schedule, Cron):
        return ScheduleConfig(
            kind="cron",
            cron=schedule.expression,
            temporal_cron=schedule.temporal_expressions(),
            timezone=schedule.timezone,
            overlap=schedule.overlap,
        )
    if isinstance(schedule, Period):
        return ScheduleConfig(kind="period", every_s=round(schedule.total_seconds()), overlap=schedule.overlap)
    return None


def build_schedule(app: str, spec: FunctionSpec, task_queue: str) -> Schedule:
    """The Temporal Schedule of one scheduled function (``spec.schedule`` is set)."""
    config = spec.schedule
    assert config is not None
    if config.kind == "cron":
        temporal_spec = ScheduleSpec(cron_expressions=list(config.temporal_cron), time_zone_name=config.timezone)
    else:
        temporal_spec = ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=config.every_s))])
    call = InvocationInput(
        job_id="",  # each run's job id is its workflow id
        app=app,
        function=spec.name,
        args=CloudPickled.dump(((), {}), kind="args", qualname=f"{app}.{spec.name}"),
        version=0,
        deployment=None,  # resolved by the run: a redeploy's code is used from then on
    )
    return Schedule(
        action=ScheduleActionStartWorkflow(
            INVOCATION_WORKFLOW,
            call,
            id=scheduled_job_prefix(app, spec.name),
            task_queue=task_queue,
            typed_search_attributes=search_attributes(app, spec.name),
            static_summary=f"{app}.{spec.name} (scheduled)",
            memo={SCHEDULE_MEMO_KEY: config},
        ),
        spec=temporal_spec,
        policy=SchedulePolicy(overlap=OVERLAP[config.overlap]),
        state=ScheduleState(note="created by apothic deploy"),
    )


def _not_found(e: RPCError) -> bool:
    return e.status == RPCStatusCode.NOT_FOUND


async def _app_schedule_ids(client: Client, app: str | None) -> list[str]:
    prefix = f"{SCHEDULE_PREFIX}{app}:" if app else SCHEDULE_PREFIX
    return sorted([s.id async for s in await client.list_schedules() if s.id.startswith(prefix)])


async def sync_app_schedules(client: Client, req: SyncSchedulesRequest, task_queue: str) -> SyncSchedulesResult:
    """Create, update or delete ``req.app``'s Schedules so that they match ``req.functions``.

    Idempotent: running it again changes nothing. An update keeps the schedule's state
    (paused, note). Schedules to delete are those listed under the app's id prefix (a list is
    only eventually consistent) plus those of every function name in ``req.known``.
    """
    wanted = {schedule_id(req.app, s.name): s for s in req.functions if s.schedule is not None}
    created: list[str] = []
    updated: list[str] = []
    for sid, spec in sorted(wanted.items()):
        schedule = build_schedule(req.app, spec, task_queue)
        try:
            await client.create_schedule(
                sid, schedule, search_attributes=search_attributes(req.app, spec.name)
            )
            created.append(sid)
            continue
        except ScheduleAlreadyRunningError:
            pass

        def keep_state(inp: ScheduleUpdateInput, schedule: Schedule = schedule) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=dataclasses.replace(schedule, state=inp.description.schedule.state))

        await client.get_schedule_handle(sid).update(keep_state)
        updated.append(sid)
    stale = set(await _app_schedule_ids(client, req.app)) | {schedule_id(req.app, n) for n in req.known}
    deleted = await _delete_schedules(client, sorted(stale - set(wanted)))
    return SyncSchedulesResult(created=created, updated=updated, deleted=deleted)


async def _delete_schedules(client: Any, ids: list[str]) -> list[str]:
    """Delete these schedules; the ids actually deleted (one already gone is not an error)."""
    deleted: list[str] = []
    for sid in ids:
        try:
            await client.get_schedule_handle(sid).delete()
            deleted.append(sid)
        except RPCError as e:
            if not _not_found(e):
                raise
    return deleted


@dataclasses.dataclass(frozen=True)
class ScheduleInfo:
    """One schedule, as ``Schedules.list`` reports it.

    Attributes:
        next_runs: the next runs as Apothic computes them (UTC): croniter's reading of the
            expression, stepped as Temporal's scheduler steps, in the schedule's time zone.
        temporal_next_runs: the same, as the Temporal server reports them (``next_action_times``).
        last_run_at: when the latest run started, and ``last_job_id`` its job.
    """

    schedule_id: str
    app: str
    function: str
    config: ScheduleConfig | None
    paused: bool
    note: str
    last_run_at: datetime | None
    last_job_id: str
    running_job_ids: list[str]
    next_runs: list[datetime]
    temporal_next_runs: list[datetime]
    num_runs: int

    @property
    def timezone(self) -> str:
        return self.config.timezone if self.config and self.config.kind == "cron" else "UTC"

    def spec_text(self) -> str:
        c = self.config
        if c is None:
            return "?"
        what = f"cron '{c.cron}' {c.timezone}" if c.kind == "cron" else f"every {_duration(c.every_s)}"
        return what if c.overlap == "skip" else f"{what}, overlap={c.overlap}"


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def next_runs(config: ScheduleConfig, after: datetime, count: int = 10) -> list[datetime]:
    """The next ``count`` runs (UTC) of a schedule after ``after``."""
    if config.kind == "cron":
        return next_cron_times(config.cron, config.timezone, after, count)
    return next_period_times(config.every_s, after, count)


class Schedules:
    """Deployed functions' schedules: list, pause, resume, trigger, backfill, delete.

    A function is named by ``(app, function)``. A schedule exists while the app's current
    version gives the function a ``schedule=``; ``delete`` removes it until the next deploy.

    Args:
        client: the control plane (default: the settings in force).
    """

    aio = AioNamespace.descriptor()

    def __init__(self, *, client: ControlPlaneClient | None = None) -> None:
        self._cp = client or ControlPlaneClient()

    async def _client(self) -> Client:
        return await get_client(self._cp.settings)

    async def _handle(self, app: str, function: str) -> tuple[ScheduleHandle, Any]:
        handle = (await self._client()).get_schedule_handle(schedule_id(app, function))
        try:
            return handle, await handle.describe()
        except RPCError as e:
            if _not_found(e):
                raise NotFoundError(
                    f"{app}.{function} has no schedule on {self._cp.settings.address}. Fix: give it "
                    "schedule=apothic.Cron(...) or apothic.Period(...) and deploy the app."
                ) from None
            raise

    async def _info(self, sid: str, desc: Any, count: int, now: datetime) -> ScheduleInfo:
        client = await self._client()
        _, app, function = sid.split(":", 2)
        config = None
        raw = (desc.schedule.action.memo or {}).get(SCHEDULE_MEMO_KEY)
        if raw is not None:
            config = client.data_converter.payload_converter.from_payload(raw, ScheduleConfig)
        recent = desc.info.recent_actions
        last = recent[-1] if recent else None
        return ScheduleInfo(
            schedule_id=sid,
            app=app,
            function=function,
            config=config,
            paused=desc.schedule.state.paused,
            note=desc.schedule.state.note or "",
            last_run_at=last.started_at if last else None,
            last_job_id=getattr(last.action, "workflow_id", "") if last else "",
            running_job_ids=[r.workflow_id for r in desc.info.running_actions],
            next_runs=next_runs(config, now, count) if config else [],
            temporal_next_runs=list(desc.info.next_action_times[:count]),
            num_runs=desc.info.num_actions,
        )

    @synced
    async def list(self, app: str | None = None, *, count: int = 5) -> list[ScheduleInfo]:
        """Every Apothic schedule (of ``app`` only, if given) with its last run and next ``count`` runs."""
        client = await self._client()
        now = datetime.now(timezone.utc)
        infos = []
        for sid in await _app_schedule_ids(client, app):
            try:
                desc = await client.get_schedule_handle(sid).describe()
            except RPCError as e:
                if _not_found(e):  # deleted since it was listed
                    continue
                raise
            infos.append(await self._info(sid, desc, count, now))
        return infos

    @synced
    async def get(self, app: str, function: str, *, count: int = 5) -> ScheduleInfo:
        """One function's schedule (raises NotFoundError when it has none)."""
        _, desc = await self._handle(app, function)
        return await self._info(schedule_id(app, function), desc, count, datetime.now(timezone.utc))

    @synced
    async def pause(self, app: str, function: str, note: str = "") -> None:
        """Stop starting runs until :meth:`resume` (a run in progress goes on). Kept across deploys."""
        handle, _ = await self._handle(app, function)
        await handle.pause(note=note or "paused with apothic")

    @synced
    async def resume(self, app: str, function: str, note: str = "") -> None:
        """Start runs again from the next due time (runs missed while paused do not happen)."""
        handle, _ = await self._handle(app, function)
        await handle.unpause(note=note or "resumed with apothic")

    @synced
    async def trigger(self, app: str, function: str, *, overlap: str | None = None) -> None:
        """Start a run now, paused or not. With the schedule's overlap policy (default), a
        trigger while a run is in progress is skipped under ``"skip"``; ``overlap="allow_all"``
        starts it anyway."""
        handle, _ = await self._handle(app, function)
        await handle.trigger(overlap=_overlap(overlap) if overlap else None)

    @synced
    async def backfill(
        self, app: str, function: str, start: datetime, end: datetime, *, overlap: str = "buffer_all"
    ) -> None:
        """Run every time the schedule would have run from ``start`` to ``end`` (both included),
        now. Naive datetimes are in the schedule's time zone. With ``"buffer_all"`` (default)
        the runs go one after another."""
        handle, desc = await self._handle(app, function)
        info = await self._info(schedule_id(app, function), desc, 0, datetime.now(timezone.utc))
        start, end = _aware(start, info.timezone), _aware(end, info.timezone)
        if end < start:
            raise InvalidError(f"backfill: end {end.isoformat()} is before start {start.isoformat()}. Fix: swap them.")
        await handle.backfill(ScheduleBackfill(start_at=start, end_at=end, overlap=_overlap(overlap)))

    @synced
    async def delete(self, app: str, function: str | None = None) -> list[str]:
        """Delete one function's schedule, or all of ``app``'s; returns the ids deleted.

        A later deploy of an app that still gives the function ``schedule=`` creates it again.
        """
        client = await self._client()
        ids = [schedule_id(app, function)] if function else await _app_schedule_ids(client, app)
        return await _delete_schedules(client, ids)


def _overlap(name: str) -> ScheduleOverlapPolicy:
    if name not in OVERLAP:
        raise InvalidError(f"overlap={name!r}: allowed: {', '.join(OVERLAP)}. Fix: pick one of them.")
    return OVERLAP[name]


def _aware(dt: datetime, tz: str) -> datetime:
    return dt.replace(tzinfo=ZoneInfo(tz)) if dt.tzinfo is None else dt
