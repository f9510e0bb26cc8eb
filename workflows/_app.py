"""AppWorkflow: the durable registry of one app's deployments (one workflow per app)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from apothic._contracts import (
    APP_MEMO_KEY,
    APP_WORKFLOW,
    SYNC_SCHEDULES_ACTIVITY,
    AppMemo,
    AppState,
    AppSummary,
    AppVersion,
    CodeRequest,
    DeployRequest,
    DeployResult,
    LivRecord,
    Deployment,
    ResolveRequest,
    SyncSchedulesRequest,
    SyncSchedulesResult,
    fleet_workflow_id,
    make_deployment,
)
from apothic._data._serialization import CloudPickled

# Versions whose code stays available to containers (running calls finish on their own
# version; a call that needs a container of a version older than this fails clearly). The
# state travels as one payload through continue-as-new, so old versions are also dropped
# once their code adds up to more than KEEP_CODE_BYTES (the newest is always kept).
KEEP_VERSIONS = 10
KEEP_CODE_BYTES = 1_500_000
# Patch id prefix of the schedule sync (one marker per update: histories recorded before
# schedules existed replay without it, whichever update comes first after an upgrade).
SCHEDULES_PATCH = "apothic-schedules"


@workflow.defn(name=APP_WORKFLOW)
class AppWorkflow:
    """Holds every deployed version of an app; ``deploy`` adds one, queries read them.

    Deploying code identical to the current version (same code hash) returns the current
    version instead of adding one. A new version retires the fleets of the previous one:
    their running calls finish there, new calls go to the new version.
    """

    @workflow.init
    def __init__(self, state: AppState) -> None:
        self.state = state
        # Schedule syncs run one at a time, each for the state current when it starts.
        self.schedules_lock = asyncio.Lock()

    def _publish(self) -> None:
        """Keep the memo on the current version, so clients resolve it with one describe."""
        last = self.state.versions[-1] if self.state.versions else None
        workflow.upsert_memo(
            {
                APP_MEMO_KEY: AppMemo(
                    app=self.state.app,
                    version=last.version if last else 0,
                    deployed_at=last.deployed_at if last else "",
                    functions=[f.spec for f in last.functions] if last else [],
                    removed=self.state.removed,
                    ephemeral=self.state.ephemeral,
                )
            }
        )

    @workflow.run
    async def run(self, state: AppState) -> None:
        self._publish()
        await workflow.wait_condition(
            lambda: self.state.removed or workflow.info().is_continue_as_new_suggested()
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self.state.removed:
            return
        workflow.continue_as_new(self.state)

    @workflow.update
    async def deploy(self, req: DeployRequest) -> DeployResult:
        versions = list(self.state.versions)
        names = [f.spec.name for f in req.functions]
        if versions and versions[-1].code_hash == req.code_hash and not self.state.removed:
            if req.ephemeral != self.state.ephemeral:  # `apothic deploy` of what a run deployed: persistent now
                self.state = dataclasses.replace(self.state, ephemeral=req.ephemeral)
                self._publish()
            await self._sync_schedules()  # a no-op unless an earlier sync failed
            return DeployResult(app=req.app, version=versions[-1].version, created=False, functions=names)
        previous = versions[-1] if versions else None
        number = (previous.version if previous else self.state.versions_before) + 1
        versions.append(
            AppVersion(
                version=number,
                code_hash=req.code_hash,
                deployed_at=workflow.now().isoformat(),
                functions=list(req.functions),
            )
        )
        kept = versions[-KEEP_VERSIONS:]
        while len(kept) > 1 and sum(f.code.size for v in kept for f in v.functions) > KEEP_CODE_BYTES:
            kept = kept[1:]
        self.state = dataclasses.replace(self.state, versions=kept, removed=False, ephemeral=req.ephemeral)
        self._publish()
        if previous is not None:
            await self._retire(previous)
        await self._sync_schedules()
        return DeployResult(app=req.app, version=number, created=True, functions=names)

    @deploy.validator
    def _validate_deploy(self, req: DeployRequest) -> None:
        if req.app != self.state.app:
            raise ValueError(f"deploy for app {req.app!r} sent to the registry of {self.state.app!r}")
        if not req.functions:
            raise ValueError("an app needs at least one function to deploy")

    @workflow.update
    async def remove(self) -> int:
        """Mark the app removed; its fleets drain and stop. Returns the last version."""
        last = self.state.versions[-1] if self.state.versions else None
        if last is not None:
            await self._retire(last)
        self.state = dataclasses.replace(self.state, versions=list(self.state.versions), removed=True)
        self._publish()
        await self._sync_schedules()
        return last.version if last else 0

    async def _sync_schedules(self) -> None:
        """Make the app's Temporal Schedules match its current version (none once removed).

        Runs the activity ``apothic.sync_schedules`` (the workflow does no I/O itself); the
        update that called it fails if the schedules could not be synced.
        """
        update = workflow.current_update_info()
        if not workflow.patched(f"{SCHEDULES_PATCH}:{update.id if update else ''}"):
            return
        async with self.schedules_lock:
            last = self.state.versions[-1] if self.state.versions and not self.state.removed else None
            known = sorted({f.spec.name for v in self.state.versions for f in v.functions})
            try:
                await workflow.execute_activity(
                    SYNC_SCHEDULES_ACTIVITY,
                    SyncSchedulesRequest(
                        app=self.state.app, functions=[f.spec for f in last.functions] if last else [], known=known
                    ),
                    result_type=SyncSchedulesResult,
                    start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=RetryPolicy(maximum_attempts=5),
                    summary="sync schedules",
                )
            except ActivityError as e:
                raise ApplicationError(
                    f"app {self.state.app!r}: its schedules could not be synced with Temporal: "
                    f"{e.cause or e}. Deploy again to retry.",
                    type="ScheduleSyncFailed",
                ) from None

    async def _retire(self, version: AppVersion) -> None:
        async def one(fleet_id: str) -> None:
            try:
                await workflow.get_external_workflow_handle(fleet_id).signal("retire")
            except Exception:  # no fleet ever started for it: nothing to retire
                pass

        await asyncio.gather(
            *(one(fleet_workflow_id(self.state.app, f.spec.name, version.version)) for f in version.functions)
        )

    def _version(self, number: int) -> AppVersion:
        if self.state.removed and number == 0:
            raise ApplicationError(f"app {self.state.app!r} was removed", type="NotFound")
        if not self.state.versions:
            raise ApplicationError(f"app {self.state.app!r} has no deployed version", type="NotFound")
        if number == 0:
            return self.state.versions[-1]
        for v in self.state.versions:
            if v.version == number:
                return v
        raise ApplicationError(
            f"app {self.state.app!r} has no version {number} (kept: "
            f"{[v.version for v in self.state.versions]})",
            type="NotFound",
        )

    @workflow.query
    def resolve(self, req: ResolveRequest) -> Deployment:
        version = self._version(req.version)
        for f in version.functions:
            if f.spec.name == req.function:
                # Platform timeouts are filled in by the control worker that asks.
                return make_deployment(self.state.app, f.spec, version.version, 0.0, 0.0)
        raise ApplicationError(
            f"app {self.state.app!r} (version {version.version}) has no function {req.function!r}; "
            f"it has {sorted(f.spec.name for f in version.functions)}",
            type="NotFound",
        )

    @workflow.query
    def code(self, req: CodeRequest) -> CloudPickled:
        for f in self._version(req.version).functions:
            if f.spec.name == req.function:
                return f.code
        raise ApplicationError(f"no function {req.function!r} in version {req.version}", type="NotFound")

    @workflow.query
    def liv(self, req: CodeRequest) -> LivRecord | None:
        """A generated function's frozen code and where it came from (None: not generated)."""
        for f in self._version(req.version).functions:
            if f.spec.name == req.function:
                return f.liv
        raise ApplicationError(f"no function {req.function!r} in version {req.version}", type="NotFound")

    @workflow.query
    def summary(self) -> AppSummary:
        last = self._version(0)
        return AppSummary(
            app=self.state.app,
            version=last.version,
            deployed_at=last.deployed_at,
            functions=[f.spec.name for f in last.functions],
        )
