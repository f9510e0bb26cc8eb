"""Ephemeral runs (``with app.run():``, ``apothic run``) and removing an app.

A run deploys the app under its own name, marked ephemeral (``DeployRequest.ephemeral``), and
when it ends removes it with :func:`remove_app`: the app's running jobs and maps are cancelled,
its registry's ``remove`` update retires its fleets and deletes its schedules, and the run waits
until every fleet of the app has ended (a fleet ends once its containers are stopped and
released). An app that was deployed persistently before the run (``apothic deploy``) is not the
run's: the run deploys its code as a new version and leaves the app deployed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
from typing import TYPE_CHECKING, Any

from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from .._contracts import (
    FLEET_WORKFLOW,
    INVOCATION_WORKFLOW,
    MAP_WORKFLOW,
    SEARCH_ATTR_APP,
    app_workflow_id,
)
from .._control._client import get_client
from .._control._loop import _Edge, run_async, run_blocking
from ..exceptions import ApothicError, InvalidError
from ._output import OUTPUT, OutputSwitch

if TYPE_CHECKING:
    from .._app import App, AppDeployment
    from .._control._config import Settings

# How long the removal waits for cancelled jobs to end, and for the fleets to end.
CANCEL_WAIT_S = 30.0
# A job or map still running when the run ends gets this long to end by itself before it is cancelled.
ENDING_GRACE_S = 1.0
FLEETS_WAIT_S = 90.0
# How long a run's end waits for the last output lines of its jobs.
OUTPUT_DRAIN_S = 2.0
REMOVE_TIMEOUT_S = 60.0

# Apps with a run in this process -> the ids of the jobs and maps started here during it.
_RUNS: dict[str, set[str]] = {}
_runs_lock = threading.Lock()


def note_started(app: str, workflow_id: str) -> None:
    """A job or map of ``app`` was started by this process (cancelled at the end of its run)."""
    started = _RUNS.get(app)
    if started is not None:
        started.add(workflow_id)


@dataclasses.dataclass(frozen=True)
class Removal:
    """What :func:`remove_app` did."""

    app: str
    version: int  # the last version (0: nothing was deployed)
    cancelled: tuple[str, ...]  # jobs and maps it cancelled
    fleets_left: tuple[str, ...]  # fleets still running when it stopped waiting (usually none)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


async def _running(client: Any, query: str) -> list[str]:
    return [wf.id async for wf in client.list_workflows(query)]


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
                "(or `apothic dev`), then run again: the next run removes what this one left."
            ) from None
    elif memo is not None:
        version = memo.version
    fleets = await _running(
        client, f"WorkflowType = '{FLEET_WORKFLOW}' AND WorkflowId STARTS_WITH 'apothic-fleet:{_quote(app)}:' "
                "AND ExecutionStatus = 'Running'"
    )
    if memo is not None:  # the current version's, which the listing may not show yet
        from .._contracts import fleet_workflow_id

        fleets = sorted(set(fleets) | {fleet_workflow_id(app, f.name, memo.version) for f in memo.functions})
    # The registry retires the fleets it can name; a class instance's fleet (``_cls/_identity``) it cannot.
    await asyncio.gather(*(client.get_workflow_handle(f).signal("retire") for f in fleets), return_exceptions=True)
    left = await _wait_ended(client, fleets, fleets_wait_s)
    return Removal(app=app, version=version, cancelled=cancelled, fleets_left=tuple(left))


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


def _say(text: str) -> None:
    try:
        sys.stderr.write(f"{text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class AppRun:
    """``with app.run():`` / ``async with app.run():`` (what :meth:`App.run` returns)."""

    def __init__(self, app: App, *, detach: bool) -> None:
        self.app = app
        self.detach = detach
        self.deployment: AppDeployment | None = None
        self.own = False  # deployed by this run: removed at its end
        self._switch: OutputSwitch | None = None

    async def _start(self) -> AppDeployment:
        name = self.app.name
        with _runs_lock:
            if name in _RUNS:
                raise InvalidError(
                    f"app {name!r} already runs in this process (`with app.run():` inside another). "
                    "Fix: call its functions inside the run that is open."
                )
            _RUNS[name] = set()
        try:
            self.deployment, self.own = await self.app._deploy(ephemeral=not self.detach)
        except BaseException:
            _RUNS.pop(name, None)
            raise
        d = self.deployment
        if self.own:
            _say(f"{name}: version {d.version} deployed for this run ({', '.join(d.functions)}); "
                 "removed when it ends")
        else:
            state = "deployed" if d.created else "unchanged,"
            _say(f"{name}: {state} version {d.version} ({', '.join(d.functions)}); the app stays deployed after "
                 "the run" + ("" if self.detach else " (it was deployed with `apothic deploy` before)"))
        return d

    async def _stop(self) -> None:
        name = self.app.name
        started = _RUNS.get(name, set())
        try:
            if not self.own:
                await OUTPUT.drain(OUTPUT_DRAIN_S)
                return
            removal = await remove_app(self.app._cp.settings, name, also_cancel=tuple(started))
            await OUTPUT.drain(OUTPUT_DRAIN_S)
            stopped = f", cancelled {len(removal.cancelled)} running job(s)" if removal.cancelled else ""
            if removal.fleets_left:
                _say(f"{name}: removed{stopped}; still draining after {FLEETS_WAIT_S:g} s: "
                     f"{', '.join(removal.fleets_left)} (they stop on their own)")
            else:
                _say(f"{name}: stopped{stopped}; its schedules, fleets and containers are gone")
        finally:
            _RUNS.pop(name, None)

    def _begin(self) -> None:
        self._switch = OutputSwitch(True)

    def _end(self) -> None:
        if self._switch is not None:
            self._switch.__exit__(None, None, None)
            self._switch = None

    def __enter__(self) -> App:
        self._begin()
        try:
            run_blocking(_Edge(self.app, "run").run(self._start()))
        except BaseException:
            self._end()
            raise
        return self.app

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            run_blocking(_Edge(self.app, "run").run(self._stop()))
        except Exception as e:
            if exc is None:
                raise
            _say(f"{self.app.name}: could not remove the app after the run: {e}")
        finally:
            self._end()

    async def __aenter__(self) -> App:
        self._begin()
        try:
            await run_async(_Edge(self.app, "run").run(self._start()))
        except BaseException:
            self._end()
            raise
        return self.app

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await run_async(_Edge(self.app, "run").run(self._stop()))
        except Exception as e:
            if exc is None:
                raise
            _say(f"{self.app.name}: could not remove the app after the run: {e}")
        finally:
            self._end()
