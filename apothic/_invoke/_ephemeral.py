"""Ephemeral runs (``with app.run():``, ``apothic run``).

A run deploys the app under its own name, marked ephemeral (``DeployRequest.ephemeral``), and
when it ends removes it with :func:`~apothic._invoke._apps.remove_app` (what ``apothic apps
remove`` does too): the app's running jobs and maps are cancelled, its registry's ``remove``
update retires its fleets and deletes its schedules, and the run waits until every fleet of the
app has ended (a fleet ends once its containers are stopped and released). An app that was
deployed persistently before the run (``apothic deploy``) is not the run's: the run deploys its
code as a new version and leaves the app deployed.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

from .._control._loop import _Edge, run_async, run_blocking
from ..exceptions import InvalidError
from ._apps import FLEETS_WAIT_S, remove_app
from ._output import OUTPUT, OutputSwitch

if TYPE_CHECKING:
    from .._app import App, AppDeployment

# How long a run's end waits for the last output lines of its jobs.
OUTPUT_DRAIN_S = 2.0

# Apps with a run in this process -> the ids of the jobs and maps started here during it.
_RUNS: dict[str, set[str]] = {}
_runs_lock = threading.Lock()


def note_started(app: str, workflow_id: str) -> None:
    """A job or map of ``app`` was started by this process (cancelled at the end of its run)."""
    started = _RUNS.get(app)
    if started is not None:
        started.add(workflow_id)


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
