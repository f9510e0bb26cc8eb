"""Live output: what remote functions print, shown on the caller's terminal as it happens.

On during ``apothic run``, inside ``with app.run()``, and after :func:`enable_output`. Lines
go to this process's ``sys.stderr`` (the caller's own ``stdout`` stays its own), written from
the SDK's event loop, never in the way of a result:

- **Jobs** (``remote``, ``spawn``, ``remote_events``, ``spawn_map``): each job started here
  while output is on gets a watcher on its event stream (§2c of the architecture), from its
  first event: ``log`` lines (stdout and stderr together), ``image`` build lines (once per
  process, however many jobs waited on that build) and a line per ``retry``. At most
  ``MAX_WATCHERS`` watch at once; later jobs wait their turn (they read from the start, so
  nothing is lost). ``remote_gen`` prints the lines of its own stream, in order with the items.
- **Maps** carry no event stream: each input's output travels with its result (the map asks
  its containers for it when output is on) and is printed when the result is read, in input
  order.
- **Order.** ``remote()`` and ``Job.wait()`` return after the job's watcher has printed the
  job's last lines, waiting for it at most ``SETTLE_S``: a result is never held longer for
  printing.
- **Marks.** A job watched while another is (from the moment the second one starts), and each
  input of a map of several inputs, marks its lines ``[function job-1a2b3c]`` or
  ``[function #3]``; a job alone prints bare lines.
- **Progress.** On a terminal, a build also shows a spinner line (its step, its time; see
  ``_progress.py``), and ``built image`` says how long the build took. Every line goes above
  whatever progress line is drawn (erased, printed, redrawn), so none is garbled.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from datetime import datetime
from typing import Any

from ..exceptions import InvalidError
from ._progress import PROGRESS

MAX_WATCHERS = 64
SETTLE_S = 1.0
_SEEN_LIMIT = 4096
_WATCHED = ["log", "image", "retry"]


class _Output:
    """The process's live output (one per process; its tasks run on the SDK's loop)."""

    def __init__(self) -> None:
        self.enabled = False
        self.lock = threading.Lock()
        self.watchers: dict[str, asyncio.Task[None]] = {}
        self.live: set[str] = set()  # jobs whose watcher reads now
        self.marked: set[str] = set()  # jobs watched beside another: their lines are marked
        self.seen: set[tuple[Any, ...]] = set()
        self.builds: dict[str, Any] = {}  # image tag -> when its build began (as its event says)
        self.slots: asyncio.Semaphore | None = None

    # --- printing -------------------------------------------------------------------------

    def write(self, lines: list[str], label: str = "", *, mark: bool = False) -> None:
        """Print ``lines``, each marked ``[label]`` with ``mark``."""
        if not lines:
            return
        prefix = f"[{label}] " if mark and label else ""
        text = "".join(f"{prefix}{line}\n" for line in lines)
        with self.lock, PROGRESS.above():  # a progress line drawn is erased first, then redrawn
            stream = sys.stderr
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):  # a closed or broken terminal: output is best effort
                pass

    def event(self, function: str, job_id: str, event: str, data: dict[str, Any], at: Any = None) -> None:
        """Print one job event's lines (``log``, ``image``, ``retry``; others print nothing)."""
        label = f"{function} {job_id[:10]}"
        mark = job_id in self.marked
        if event == "log":
            lines = [str(line) for line in data.get("lines", [])]
            if data.get("truncated"):
                lines.append("(output cut here: the job printed more than its event log keeps; `apothic jobs logs "
                             f"{job_id}` has the rest)")
            self.write(lines, label, mark=mark)
        elif event == "image":
            key = ("image", at, data.get("image"), data.get("status"), len(data.get("lines") or ()))
            if key in self.seen:  # every job waiting on a build hears of it: print it once
                return
            if len(self.seen) > _SEEN_LIMIT:
                self.seen.clear()
            self.seen.add(key)
            self.write(self._image(data, at))
        elif event == "retry":
            wait, kind = data.get("retry_in_s"), data.get("kind")
            why = data.get("reason") if kind == "user" else f"{kind}: {data.get('reason')}"
            self.write([f"{function}: attempt {data.get('attempt')} failed ({why}); retrying"
                        + (f" in {wait:g} s" if isinstance(wait, (int, float)) else "")], label, mark=mark)

    def _image(self, data: dict[str, Any], at: Any) -> list[str]:
        """An image event's lines; on a terminal, the build's spinner too (its step, its time)."""
        tag, status = str(data.get("image", "?")), data.get("status")
        if status == "building":
            self.builds[tag] = at
            PROGRESS.spin(tag, f"building image {tag}", at)
        elif status == "output":
            steps = [str(line)[4:] for line in data.get("lines") or () if str(line).startswith("==> ")]
            if steps:
                PROGRESS.step(tag, steps[-1])
        elif status in ("built", "cached", "ready", "failed"):
            PROGRESS.stop(tag)
            began = self.builds.pop(tag, None)
            if status == "built" and isinstance(at, datetime) and isinstance(began, datetime):
                return [f"built image {tag} in {max(0.0, (at - began).total_seconds()):.1f} s"]
        return _image_lines(data)

    def map_item(self, function: str, index: int, logs: str, several: bool) -> None:
        """Print one map input's output (``several``: the map has more than one input)."""
        self.write(logs.splitlines(), f"{function} #{index}", mark=several)

    # --- watchers (on the SDK's loop) ------------------------------------------------------

    def watch(self, fn: Any, job_id: str) -> None:
        """Start printing the events of ``job_id`` (a job of ``fn`` just started here)."""
        if not self.enabled or job_id in self.watchers:
            return
        if self.slots is None:
            self.slots = asyncio.Semaphore(MAX_WATCHERS)
        task = asyncio.get_running_loop().create_task(self._watch(fn, job_id))
        self.watchers[job_id] = task
        task.add_done_callback(lambda _t: self.watchers.pop(job_id, None))

    async def _watch(self, fn: Any, job_id: str) -> None:
        from .._control._client import get_client
        from ._watch import stream_events

        assert self.slots is not None
        async with self.slots:
            self.live.add(job_id)
            if len(self.live) > 1:  # several at once: from now on each of them marks its lines
                self.marked |= self.live
            try:
                client = await get_client(fn._cp.settings)
                events = stream_events(client, fn._cp.settings, job_id, 0, list(_WATCHED))
                async with contextlib.aclosing(events):
                    async for ev in events:
                        self.event(fn.function_name, job_id, ev.event, ev.data, ev.timestamp)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - output is best effort; the call reports its own errors
                pass
            finally:
                self.live.discard(job_id)
                self.marked.discard(job_id)
                if not self.live:  # no watcher hears of a build any more: no spinner stays up
                    PROGRESS.stop()

    async def settle(self, job_id: str, timeout_s: float = SETTLE_S) -> None:
        """Let the watcher of a finished job print its last lines (at most ``timeout_s``)."""
        task = self.watchers.get(job_id)
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=timeout_s)

    async def drain(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) for every watcher to reach its job's end."""
        tasks = [t for t in self.watchers.values() if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)


OUTPUT = _Output()


def _image_lines(data: dict[str, Any]) -> list[str]:
    tag, status = data.get("image", "?"), data.get("status")
    if status == "building":
        return [f"building image {tag}"]
    if status == "output":
        return [f"  {line}" for line in data.get("lines") or ()]
    if status == "built":
        return [f"built image {tag}"]
    if status == "failed":
        return [f"image {tag} failed: {data.get('error', '')}"]
    return []  # cached, ready: nothing to say


class OutputSwitch:
    """What :func:`enable_output` returns: output is on already; as a context manager it
    puts back the previous setting at the end of the ``with`` block."""

    def __init__(self, show: bool) -> None:
        self._before = OUTPUT.enabled, PROGRESS.quiet
        OUTPUT.enabled = show
        PROGRESS.quiet = not show  # enable_output(False) quiets the progress bars too

    def __enter__(self) -> OutputSwitch:
        return self

    def __exit__(self, *exc: object) -> None:
        OUTPUT.enabled, PROGRESS.quiet = self._before


def enable_output(show: bool = True) -> OutputSwitch:
    """Show what remote functions print (and image builds) on this terminal, as it happens.

    ``apothic.enable_output()`` turns it on for the rest of the process;
    ``with apothic.enable_output(): ...`` for a block. ``apothic run`` and ``with app.run()``
    turn it on for their duration. Lines go to ``sys.stderr``; while several inputs run at
    once, each line is marked with its function and job (``[square job-1a2b3c]``) or map
    input (``[square #3]``).

    Progress bars (``map``, ``spawn_map``, image builds) show on a terminal either way;
    ``enable_output(False)`` (or ``APOTHIC_PROGRESS=0``) turns them off too.

    Args:
        show: False turns it off (``with apothic.enable_output(False):`` for a quiet block).
    """
    if not isinstance(show, bool):
        raise InvalidError(f"enable_output(show={show!r}): allowed: True or False. Fix: pass a bool.")
    return OutputSwitch(show)


def output_enabled() -> bool:
    return OUTPUT.enabled
