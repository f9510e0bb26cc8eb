"""Deployed apps as a whole: list them, stop (drain) their containers, remove them.

``apothic.App.objects`` (like ``Dict.objects`` and ``Secret.objects``) and ``apothic apps
list|stop|remove`` share these functions:

- **list** reads every running app registry (``AppWorkflow``, one per app) with its memo
  (``AppMemo``: current version, functions and their schedules) and counts the running
  ``ContainerWorkflow``s of each app, all from the server's visibility store: two list calls,
  no control worker needed.
- **stop** signals ``drain`` to every running fleet of the app: each container takes no new
  input, finishes the inputs it runs, and is released. The app stays deployed: its schedules
  keep firing, and the next call (or a call that was waiting) starts a container again.
- **remove** (:func:`remove_app`, also the end of an ephemeral run) cancels the app's running
  jobs and maps, removes it from its registry (its fleets retire, its schedules are deleted)
  and waits until its fleets, and with them its containers, have ended. Calls to it then fail
  with ``NotFoundError`` ("app X is not deployed ...: it was removed at ...").
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from .._contracts import (
    APP_MEMO_KEY,
    APP_WORKFLOW,
    CONTAINER_WORKFLOW,
    FLEET_WORKFLOW,
    INVOCATION_WORKFLOW,
    MAP_WORKFLOW,
    SEARCH_ATTR_APP,
    AppMemo,
    ScheduleConfig,
    app_workflow_id,
    fleet_workflow_id,
)
from .._control._client import get_client
from .._control._connection import ControlPlaneClient
from .._control._loop import AioNamespace, synced
from .._options._names import check_name
from ..exceptions import ApothicError, NotFoundError

if TYPE_CHECKING:
    from .._control._config import Settings

# How long the removal waits for cancelled jobs to end, and for the fleets to end.
CANCEL_WAIT_S = 30.0
# A job or map still running when the removal starts gets this long to end by itself before it is cancelled.
ENDING_GRACE_S = 1.0
FLEETS_WAIT_S = 90.0
REMOVE_TIMEOUT_S = 60.0
# How long ``stop`` waits, by default, for the containers it drains to be released.
STOP_WAIT_S = 120.0


@dataclasses.dataclass(frozen=True)
class AppInfo:
    """One deployed app, as ``App.objects.list()`` returns it.

    Attributes:
        name: the app's name (what ``RemoteFunction.from_name`` takes).
        version: its current version (new calls run it).
        deployed_at: when that version was deployed (UTC).
        functions: the functions (and classes) of that version, sorted.
        schedules: function name -> its schedule (``"every 5m"``, ``"cron '0 9 * * *' UTC"``),
            for the functions with ``schedule=``.
        containers: function containers of the app running now (every version: a call still
            running on an older version keeps its container), starting and draining ones
            included.
        ephemeral: deployed by a run (``with app.run():``, ``apothic run``) that removes it when
            it ends.
    """

    name: str
    version: int
    deployed_at: datetime | None
    functions: tuple[str, ...]
    schedules: dict[str, str]
    containers: int
    ephemeral: bool


@dataclasses.dataclass(frozen=True)
class Stopping:
    """What :func:`stop_app` did."""

    app: str
    fleets: tuple[str, ...]  # the fleets told to drain
    containers: tuple[str, ...]  # the container workflows running when it started
    left: tuple[str, ...]  # those still running when it stopped waiting


@dataclasses.dataclass(frozen=True)
class Removal:
    """What :func:`remove_app` did."""

    app: str
    version: int  # the last version (0: nothing was deployed)
    cancelled: tuple[str, ...]  # jobs and maps it cancelled
    fleets_left: tuple[str, ...]  # fleets still running when it stopped waiting (usually none)
    removed: bool = True  # False: the app was not deployed (it cancelled and released what ran)


def schedule_text(c: ScheduleConfig) -> str:
    """A schedule as ``apothic schedules list`` writes it (``every 2s``, ``cron '0 9 * * *' UTC``)."""
    from .._schedule._schedules import _duration

    what = f"cron '{c.cron}' {c.timezone}" if c.kind == "cron" else f"every {_duration(c.every_s)}"
    return what if c.overlap == "skip" else f"{what}, overlap={c.overlap}"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _time(value: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


async def _running(client: Any, query: str) -> list[str]:
    return [wf.id async for wf in client.list_workflows(query)]


def _app_of_container(workflow_id: str) -> str:
    """The app of a container workflow id ``apothic-container:<app>:<function>:v<N>:<id>``."""
    parts = workflow_id.split(":")
    return parts[1] if len(parts) >= 5 else ""


def _running_containers(app: str) -> str:
    return (f"WorkflowType = '{CONTAINER_WORKFLOW}' AND WorkflowId STARTS_WITH 'apothic-container:{_quote(app)}:' "
            "AND ExecutionStatus = 'Running'")


def _running_fleets(app: str) -> str:
    return (f"WorkflowType = '{FLEET_WORKFLOW}' AND WorkflowId STARTS_WITH 'apothic-fleet:{_quote(app)}:' "
            "AND ExecutionStatus = 'Running'")


async def list_apps(settings: Settings) -> list[AppInfo]:
    """Every deployed app (its registry runs), by name, with its running containers."""
    client = await get_client(settings)
    memos: list[AppMemo] = []
    async for wf in client.list_workflows(f"WorkflowType = '{APP_WORKFLOW}' AND ExecutionStatus = 'Running'"):
        memo: AppMemo | None = await wf.memo_value(APP_MEMO_KEY, None, type_hint=AppMemo)
        if memo is not None and memo.version and not memo.removed:
            memos.append(memo)
    counts: dict[str, int] = {}
    query = f"WorkflowType = '{CONTAINER_WORKFLOW}' AND ExecutionStatus = 'Running'"
    async for wf in client.list_workflows(query):
        name = _app_of_container(wf.id)
        counts[name] = counts.get(name, 0) + 1
    return [
        AppInfo(
            name=m.app,
            version=m.version,
            deployed_at=_time(m.deployed_at),
            functions=tuple(sorted(f.name for f in m.functions)),
            schedules={f.name: schedule_text(f.schedule) for f in sorted(m.functions, key=lambda f: f.name)
                       if f.schedule is not None},
            containers=counts.get(m.app, 0),
            ephemeral=m.ephemeral,
        )
        for m in sorted(memos, key=lambda m: m.app)
    ]


async def not_deployed(settings: Settings, app: str) -> NotFoundError:
    """The error for ``app`` when it is not deployed: it never was, or it was removed (when)."""
    client = await get_client(settings)
    where = f"on {settings.address} (namespace {settings.namespace!r})"
    try:
        desc = await client.get_workflow_handle(app_workflow_id(app)).describe()
    except RPCError as e:
        if e.status != RPCStatusCode.NOT_FOUND:
            raise
        desc = None
    memo: AppMemo | None = await desc.memo_value(APP_MEMO_KEY, None, type_hint=AppMemo) if desc else None
    closed = desc is not None and desc.status != WorkflowExecutionStatus.RUNNING
    if desc is not None and (closed or (memo is not None and memo.removed)):
        when = f" at {desc.close_time.isoformat(timespec='seconds')}" if closed and desc.close_time else ""
        return NotFoundError(
            f"app {app!r} is not deployed {where}: it was removed{when}. Fix: deploy it again "
            "(`app.deploy()` or `apothic deploy path/to/app.py`)."
        )
    return NotFoundError(
        f"app {app!r} is not deployed {where}. Fix: deploy it first (`app.deploy()` or "
        "`apothic deploy path/to/app.py`); `apothic apps list` shows the deployed apps."
    )


async def stop_app(settings: Settings, app: str, *, wait_s: float = STOP_WAIT_S) -> Stopping:
    """Drain every container of ``app`` and wait (at most ``wait_s``) until they are released.

    Each of the app's running fleets (every version, class instances included) gets the signal
    ``drain``: its containers take no new input, finish the inputs they run and are released.
    Jobs that run or wait then start no container until those are gone; later calls start
    containers as usual. The app stays deployed, and its schedules keep firing.

    Raises:
        NotFoundError: the app is not deployed (never, or it was removed).
    """
    from .._app import read_app_memo

    client = await get_client(settings)
    memo, running = await read_app_memo(client, app)
    if not running or memo is None or memo.removed or not memo.version:
        raise await not_deployed(settings, app)
    containers = await _running(client, _running_containers(app))
    fleets = set(await _running(client, _running_fleets(app)))
    fleets |= {fleet_workflow_id(app, f.name, memo.version) for f in memo.functions}  # the listing may lag

    async def drain(fleet_id: str) -> str:
        try:
            await client.get_workflow_handle(fleet_id).signal("drain")
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:  # no fleet runs for it (ended, or never started)
                return ""
            raise
        return fleet_id

    told = [f for f in await asyncio.gather(*(drain(f) for f in sorted(fleets))) if f]
    left = await _wait_ended(client, containers, wait_s) if wait_s > 0 else list(containers)
    return Stopping(app=app, fleets=tuple(told), containers=tuple(sorted(containers)), left=tuple(sorted(left)))


async def remove_app(
    settings: Settings,
    app: str,
    *,
    also_cancel: tuple[str, ...] | list[str] | set[str] = (),
    cancel_wait_s: float = CANCEL_WAIT_S,
    fleets_wait_s: float = FLEETS_WAIT_S,
) -> Removal:
    """Remove ``app``: cancel its running jobs and maps (those the server lists, and
    ``also_cancel``, which it may not list yet), remove it from its registry (its fleets retire
    and its schedules are deleted), then wait until its fleets have ended, and with them its
    containers. Removing an app that is not deployed (or was removed) cancels what still runs
    and returns ``version`` 0."""
    from .._app import read_app_memo

    client = await get_client(settings)
    memo, running = await read_app_memo(client, app)
    where = f"{SEARCH_ATTR_APP} = '{_quote(app)}' AND ExecutionStatus = 'Running'"
    listed = await _running(client, f"WorkflowType IN ('{INVOCATION_WORKFLOW}', '{MAP_WORKFLOW}') AND {where}")
    cancelled = await _cancel_all(client, sorted(set(listed) | set(also_cancel)), cancel_wait_s)
    version = 0
    if running:
        try:
            version = await asyncio.wait_for(
                client.get_workflow_handle(app_workflow_id(app)).execute_update("remove", result_type=int),
                REMOVE_TIMEOUT_S,
            )
        except TimeoutError:
            raise ApothicError(
                f"removing app {app!r}: no control worker answered within {REMOVE_TIMEOUT_S:g} s on task queue "
                f"{settings.worker.control_task_queue!r} at {settings.address}. Fix: start one with `apothic worker` "
                "(or `apothic dev`), then remove it again: the next removal finishes what this one left."
            ) from None
    elif memo is not None:
        version = memo.version
    fleets = await _running(client, _running_fleets(app))
    if memo is not None:  # the current version's, which the listing may not show yet
        fleets = sorted(set(fleets) | {fleet_workflow_id(app, f.name, memo.version) for f in memo.functions})
    # The registry retires the fleets it can name; a class instance's fleet (``_cls/_identity``) it cannot.
    await asyncio.gather(*(client.get_workflow_handle(f).signal("retire") for f in fleets), return_exceptions=True)
    left = await _wait_ended(client, fleets, fleets_wait_s)
    return Removal(app=app, version=version, cancelled=cancelled, fleets_left=tuple(left), removed=running)


async def _cancel_all(client: Any, ids: list[str], wait_s: float) -> tuple[str, ...]:
    """Cancel the workflows that still run; wait (at most ``wait_s``) for them to end.
    Returns the ids it cancelled."""
    cancelled: list[str] = []

    async def one(workflow_id: str) -> None:
        handle = client.get_workflow_handle(workflow_id)
        try:
            if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                return  # ended already (a cancel request would be accepted and do nothing)
            try:  # one that delivered its result and is closing ends on its own: not cancelled
                await asyncio.wait_for(handle.result(), ENDING_GRACE_S)
                return
            except TimeoutError:
                pass
            except WorkflowFailureError:
                return
            await handle.cancel()
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                return  # never started
            raise
        cancelled.append(workflow_id)
        try:
            await handle.result()
        except (WorkflowFailureError, RPCError):
            pass  # cancelled (or failed): either way it ended

    tasks = [asyncio.ensure_future(one(i)) for i in ids]
    if tasks:
        await asyncio.wait(tasks, timeout=wait_s)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return tuple(sorted(cancelled))


async def _wait_ended(client: Any, workflow_ids: list[str], wait_s: float) -> list[str]:
    """Wait for each workflow to end (a long poll on its result); the ones still running after
    ``wait_s``."""
    async def one(workflow_id: str) -> None:
        handle = client.get_workflow_handle(workflow_id)
        try:
            desc = await handle.describe()
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                return
            raise
        if desc.status != WorkflowExecutionStatus.RUNNING:
            return
        try:
            await handle.result()
        except (WorkflowFailureError, RPCError):
            pass

    tasks = {i: asyncio.ensure_future(one(i)) for i in workflow_ids}
    if not tasks:
        return []
    await asyncio.wait(tasks.values(), timeout=wait_s)
    left = [i for i, t in tasks.items() if not t.done()]
    for t in tasks.values():
        t.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    return left


class AppManager:
    """Deployed apps (``apothic.App.objects``): list them, stop their containers, remove them."""

    aio = AioNamespace.descriptor()

    def __repr__(self) -> str:
        return "apothic.App.objects"

    @synced
    async def list(self, *, client: ControlPlaneClient | None = None) -> list[AppInfo]:
        """Every deployed app, by name: its current version, functions, schedules and running
        containers (:class:`AppInfo`). Ephemeral apps (of a run in progress) are marked."""
        return await list_apps((client or ControlPlaneClient()).settings)

    @synced
    async def stop(self, name: str, *, wait_s: float = STOP_WAIT_S, client: ControlPlaneClient | None = None) -> None:
        """Drain the containers of app ``name``, and wait (at most ``wait_s``; 0: not at all)
        until they are released.

        Its containers take no new input, finish the inputs they run and release their machines.
        The app stays deployed: the next call starts a container again, and its schedules keep
        firing (``apothic schedules pause`` pauses one; :meth:`remove` deletes them). Calls that
        were waiting for a container get one once the drained containers are gone.

        Raises:
            NotFoundError: the app is not deployed (never, or it was removed).
        """
        check_name("app", name)
        await stop_app((client or ControlPlaneClient()).settings, name, wait_s=max(0.0, float(wait_s)))

    @synced
    async def remove(self, name: str, *, allow_missing: bool = False,
                     client: ControlPlaneClient | None = None) -> None:
        """Undeploy app ``name``: cancel its running jobs and maps, delete its schedules, drain
        its fleets and release their containers, and wait until they are gone (up to 90 s, after
        which the rest stops on its own).

        Calls to the app then raise ``NotFoundError`` ("... it was removed at ..."); deploying it
        again makes a new version (numbers go on).

        Raises:
            NotFoundError: the app is not deployed (unless ``allow_missing``, which still cancels
                and releases whatever of it runs).
        """
        check_name("app", name)
        await remove_deployed((client or ControlPlaneClient()).settings, name, allow_missing=allow_missing)


async def remove_deployed(settings: Settings, name: str, *, allow_missing: bool = False) -> Removal:
    """:func:`remove_app` for a user's removal: an app that is not deployed is an error, unless
    ``allow_missing`` (what still runs of it is then cancelled and released all the same)."""
    from .._app import read_app_memo

    memo, running = await read_app_memo(await get_client(settings), name)
    if not allow_missing and (not running or memo is None or memo.removed or not memo.version):
        raise await not_deployed(settings, name)
    return await remove_app(settings, name)


APPS = AppManager()
