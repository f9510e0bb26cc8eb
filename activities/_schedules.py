"""The schedule-sync activity: an app's Temporal Schedules follow its current version."""

from __future__ import annotations

from temporalio import activity

from apothic._control._config import Settings
from apothic._contracts import (
    SYNC_SCHEDULES_ACTIVITY,
    SyncSchedulesRequest,
    SyncSchedulesResult,
)
from apothic._schedule._schedules import sync_app_schedules


class ScheduleActivities:
    """Bound to the control worker's settings (scheduled runs start on its task queue)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name=SYNC_SCHEDULES_ACTIVITY)
    async def sync_schedules(self, req: SyncSchedulesRequest) -> SyncSchedulesResult:
        """Create, update or delete the app's Schedules (idempotent; run by AppWorkflow)."""
        return await sync_app_schedules(activity.client(), req, self.settings.worker.control_task_queue)
