"""Progress where a person waits: one status line at the bottom of the caller's terminal.

``map``, ``starmap``, ``for_each`` and ``spawn_map`` draw a bar (inputs done out of the
total, how many failed, the rate and the time left); an image build that live output shows
draws a spinner with the step it is on and the time it has taken. The line is redrawn in
place (``\\r``) on ``sys.stderr`` at most ``1 / INTERVAL_S`` times a second, cut to the
terminal's width, and erased (or, for a map that finished, left as its summary) at the end.

It is drawn only where a person can see it: when ``sys.stderr`` is a terminal and ``TERM``
is not ``dumb``, on the caller's machine (never inside a function container), unless
``APOTHIC_PROGRESS=0`` or ``apothic.enable_output(False)`` asks for quiet. Piped or logged
output never carries a ``\\r`` or an escape sequence. No colour is used, so ``NO_COLOR``
holds by construction.

One :class:`Renderer` owns the line. Everything else that writes to the terminal while it is
drawn goes through it so that no line is garbled: live output lines (``_output.py``) are
written inside :meth:`Renderer.above` (erase the bar, print, redraw), and while a bar is up
``sys.stdout`` and ``sys.stderr`` (those that are terminals) are wrapped so that the user's
own ``print`` between results (``async for r in fn.map.aio(...)``) does the same.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import datetime
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Self, TextIO

from ..exceptions import InvalidError
from ._context import is_local

#: At most this often a redraw (10 a second).
INTERVAL_S = 0.1
#: The rate is measured over about the last this many seconds (ETA follows changes in speed).
RATE_WINDOW_S = 10.0
ENV = "APOTHIC_PROGRESS"
_ON = {"", "1", "true", "yes", "on", "auto"}
_OFF = {"0", "false", "no", "off"}
_ERASE = "\r\x1b[K"
_SPIN_UNICODE = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_SPIN_ASCII = "|/-\\"
_GAP = "  "
_BAR_MAX = 30
_BAR_MIN = 6


def wanted(stream: Any, *, strict: bool = True) -> bool:
    """Whether a progress line may be drawn on ``stream`` now.

    ``strict``: a value of ``APOTHIC_PROGRESS`` that is neither on nor off raises
    :class:`InvalidError` (a map checks it before it submits anything); otherwise it counts as
    off (an image spinner must not break the output it decorates).
    """
    value = os.environ.get(ENV, "").strip().lower()
    if value in _OFF:
        return False
    if value not in _ON:
        if not strict:
            return False
        raise InvalidError(
            f"{ENV}={os.environ.get(ENV)!r}: allowed: 0/false/off (no progress bars) or "
            "1/true/on/auto (bars where stderr is a terminal). "
            f"Fix: set {ENV}=0 to turn them off, or unset it."
        )
    if not is_local() or PROGRESS.quiet or os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def _clock_text(seconds: float) -> str:
    """``1:05`` or ``2:03:09``."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _rate_text(rate: float) -> str:
    return f"{rate:.0f}/s" if rate >= 100 else f"{rate:.1f}/s"


class Bar:
    """The counters of one ``map`` (or ``spawn_map``), drawn by a :class:`Renderer`.

    ``done`` counts inputs finished, failed ones included; ``failed`` those among them that
    failed. ``total`` is None while unknown (an iterator whose end is not read yet): the line
    then shows the count and the rate without a time left.
    """

    def __init__(
        self, renderer: Renderer, label: str, total: int | None, verb: str
    ) -> None:
        self.renderer = renderer
        self.label = label
        self.total = total
        self.verb = verb
        self.done = 0
        self.failed = 0
        self.start = renderer.clock()
        # (time, done) samples within the rate window; the first is the window's anchor.
        self.samples: collections.deque[tuple[float, int]] = collections.deque(
            [(self.start, 0)]
        )
        self.closed = False

    def advance(self, n: int = 1, *, failed: int = 0) -> None:
        """``n`` more inputs done, ``failed`` of them failed."""
        with self.renderer.lock:
            self.done += n
            self.failed += failed
            now = self.renderer.clock()
            if now - self.samples[-1][0] >= INTERVAL_S:
                self.samples.append((now, self.done))
            self._prune(now)
        self.renderer.refresh()

    def _prune(self, now: float) -> None:
        """Keep as first sample the last one at or before the window's start."""
        while len(self.samples) > 1 and self.samples[1][0] <= now - RATE_WINDOW_S:
            self.samples.popleft()

    def set_total(self, total: int) -> None:
        """The total became known (the inputs' iterator ended)."""
        with self.renderer.lock:
            self.total = total

    def rate(self, now: float) -> float | None:
        """Inputs a second over the last ``RATE_WINDOW_S`` (None before the first one): what
        was done since the window's start (the count then is the first sample's) over the
        window, or over the time since the start while the bar is younger than the window."""
        if self.done == 0:
            return None
        with self.renderer.lock:
            self._prune(now)
            t0, d0 = self.samples[0]
        span = min(now - t0, RATE_WINDOW_S)
        return (self.done - d0) / span if span > 0 else None

    def text(
        self, now: float, width: int, unicode: bool, *, final: bool = False
    ) -> str:
        """The bar's line: ``label  [####----]  12/20  2 failed  4.1/s  ETA 0:02``; when
        ``final``, the time taken and the mean rate instead of a time left."""
        elapsed = now - self.start
        count = (
            f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        )
        count += self.verb if self.total is not None or self.verb else " done"
        parts = [count, f"{self.failed} failed"]
        if final:
            if elapsed > 0 and self.done:
                parts.append(_rate_text(self.done / elapsed))
            parts.append(f"in {_clock_text(elapsed)}")
        else:
            rate = self.rate(now)
            if rate is not None:
                parts.append(_rate_text(rate))
            if self.total is not None and rate:
                parts.append(
                    f"ETA {_clock_text(max(0, self.total - self.done) / rate)}"
                )
            else:  # no time left to tell (no total, or nothing done lately): the time taken
                parts.append(_clock_text(elapsed))
        tail = _GAP.join(parts)
        room = width - len(self.label) - len(tail) - 2 * len(_GAP) - 2
        if self.total is None or room < _BAR_MIN:
            return f"{self.label}{_GAP}{tail}"
        cells = min(_BAR_MAX, room)
        filled = (
            cells if self.total == 0 else min(cells, cells * self.done // self.total)
        )
        if unicode:
            graphic = "█" * filled + "░" * (cells - filled)
        else:
            graphic = "[" + "#" * filled + "-" * (cells - filled) + "]"
        return f"{self.label}{_GAP}{graphic}{_GAP}{tail}"

    def close(self, ok: bool = True) -> None:
        """Take the bar off the line; ``ok`` leaves its summary as a line of its own."""
        if self.closed:
            return
        self.closed = True
        self.renderer.remove(self, keep=ok)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close(ok=exc_type is None)


class Spinner:
    """A step that takes a while with no count to show (an image build): spinner, label,
    the current step, time taken."""

    def __init__(self, renderer: Renderer, label: str, ago_s: float = 0.0) -> None:
        self.renderer = renderer
        self.label = label
        self.step = ""
        self.start = renderer.clock() - max(0.0, ago_s)
        self.closed = False

    def text(
        self, now: float, width: int, unicode: bool, *, final: bool = False
    ) -> str:
        frames = _SPIN_UNICODE if unicode else _SPIN_ASCII
        frame = frames[int(max(0.0, now - self.start) / INTERVAL_S) % len(frames)]
        step = f": {self.step}" if self.step else ""
        return f"{frame} {self.label}{step}{_GAP}{_clock_text(now - self.start)}"

    def set_step(self, step: str) -> None:
        with self.renderer.lock:
            self.step = step
        self.renderer.refresh()

    def close(self, ok: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        self.renderer.remove(self, keep=False)


class _NullBar:
    """What :meth:`Progress.bar` gives when no bar is drawn: the same calls, doing nothing."""

    done = failed = 0
    total: int | None = None

    def advance(self, n: int = 1, *, failed: int = 0) -> None:
        pass

    def set_total(self, total: int) -> None:
        pass

    def close(self, ok: bool = True) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        pass


Entry = Bar | Spinner


class _Guard:
    """``sys.stdout``/``sys.stderr`` while a bar is up: a write first erases the bar, and the
    bar comes back (at the next redraw) once the cursor is at the start of a line again."""

    def __init__(self, renderer: Renderer, stream: TextIO) -> None:
        self._renderer = renderer
        self._stream = stream

    def write(self, text: str) -> int:
        r = self._renderer
        with r.lock:
            if r.depth == 0:
                r.erase()
            n = self._stream.write(text)
            if text:
                r.at_line_start = text.endswith("\n")
                if r.at_line_start:
                    with contextlib.suppress(OSError, ValueError):
                        self._stream.flush()
            if r.at_line_start and r.depth == 0:
                r.refresh()
        return n

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class Renderer:
    """Owns the progress line on one terminal stream.

    Thread-safe (one re-entrant lock): bars advance on the SDK's event loop, a ticker thread
    redraws the time-dependent parts (ETA, spinner) while nothing else happens, and the user's
    threads may print. ``clock``, ``width``, ``ticker`` and ``redirect`` exist for tests.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
        interval_s: float = INTERVAL_S,
        ticker: bool = True,
        redirect: bool = True,
    ) -> None:
        self.stream = stream
        self.clock = clock
        self.fixed_width = width
        self.interval_s = interval_s
        self.use_ticker = ticker
        self.redirect = redirect
        self.lock = threading.RLock()
        self.entries: list[Entry] = []
        self.shown = ""  # what the line shows now ("" = nothing drawn)
        self.last_draw = -math.inf
        self.at_line_start = True
        self.depth = 0  # inside above(): lines are being printed, no redraw
        self.closed = False
        self.unicode = "utf" in str(getattr(stream, "encoding", "") or "").lower()
        self._stop: threading.Event | None = None
        self._guards: dict[str, _Guard] = {}

    # --- entries ----------------------------------------------------------------------------

    def bar(self, label: str, total: int | None, verb: str = "") -> Bar:
        bar = Bar(self, label, total, verb)
        self._add(bar)
        return bar

    def spinner(self, label: str, ago_s: float = 0.0) -> Spinner:
        spinner = Spinner(self, label, ago_s)
        self._add(spinner)
        return spinner

    def _add(self, entry: Entry) -> None:
        with self.lock:
            if self.closed:
                return
            self.entries.append(entry)
            if len(self.entries) == 1:
                self._install()
                self._start_ticker()
        self.refresh(force=True)

    def remove(self, entry: Entry, *, keep: bool) -> None:
        """Take ``entry`` off the line; ``keep`` prints its final text as a line first."""
        with self.lock:
            if entry not in self.entries:
                return
            self.erase()
            if keep and not self.closed and self.at_line_start:
                self._write(
                    entry.text(self.clock(), self.width(), self.unicode, final=True)[
                        : self.width() - 1
                    ]
                    + "\n"
                )
            self.entries.remove(entry)
            if self.entries:
                self.refresh(force=True)
            else:
                self._stop_ticker()
                self._uninstall()

    # --- drawing ----------------------------------------------------------------------------

    def width(self) -> int:
        if self.fixed_width is not None:
            return self.fixed_width
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            return shutil.get_terminal_size().columns

    def line(self, now: float) -> str:
        """The text of the line now: every entry's, side by side, cut to the width."""
        width = self.width()
        text = " | ".join(e.text(now, width, self.unicode) for e in self.entries)
        return text[
            : max(1, width - 1)
        ]  # never the last column: the terminal would wrap

    def refresh(self, force: bool = False) -> None:
        """Redraw if ``INTERVAL_S`` passed since the last redraw (``force``: now)."""
        with self.lock:
            if self.closed or self.depth or not self.at_line_start or not self.entries:
                return
            now = self.clock()
            if not force and now - self.last_draw < self.interval_s:
                return
            text = self.line(now)
            self.last_draw = now
            if text == self.shown:
                return
            self._write("\r" + text + "\x1b[K")
            self.shown = text

    def erase(self) -> None:
        """Clear the line (the cursor goes back to its start)."""
        with self.lock:
            if self.shown:
                self._write(_ERASE)
                self.shown = ""

    @contextlib.contextmanager
    def above(self) -> Iterator[None]:
        """Print complete lines above the bar: erase it, let the caller write, redraw (at the
        next redraw the throttle allows; the ticker brings it back if nothing else does)."""
        with self.lock:
            self.erase()
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                self.at_line_start = True
                self.refresh()  # throttled: a flood of lines redraws it 10 times a second

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (
            OSError,
            ValueError,
        ):  # a closed or broken terminal: progress is best effort
            self.closed = True

    def shutdown(self) -> None:
        """At exit: erase the line and draw no more."""
        with self.lock:
            self.erase()
            self.closed = True
            self._stop_ticker()
            self._uninstall()

    # --- the ticker and the guarded streams ------------------------------------------------------

    def _start_ticker(self) -> None:
        if not self.use_ticker or self._stop is not None:
            return
        stop = self._stop = threading.Event()

        def tick() -> None:
            while not stop.wait(self.interval_s):
                self.refresh()

        threading.Thread(target=tick, name="apothic-progress", daemon=True).start()

    def _stop_ticker(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None

    def _install(self) -> None:
        if not self.redirect:
            return
        for name in ("stdout", "stderr"):
            current = getattr(sys, name)
            if isinstance(current, _Guard) or current is None:
                continue
            try:
                terminal = current.isatty()
            except (AttributeError, OSError, ValueError):
                terminal = False
            if terminal:
                guard = _Guard(self, current)
                setattr(sys, name, guard)
                self._guards[name] = guard

    def _uninstall(self) -> None:
        for name, guard in self._guards.items():
            if (
                getattr(sys, name) is guard
            ):  # someone who wrapped it since keeps their wrapper
                setattr(sys, name, guard._stream)
        self._guards.clear()


class Progress:
    """The process's progress line (one per process): bars and spinners on ``sys.stderr``."""

    def __init__(self) -> None:
        self.quiet = False  # apothic.enable_output(False) in force
        self.renderer: Renderer | None = None
        self.lock = threading.Lock()
        self.spinners: dict[str, Spinner] = {}

    def _renderer(self, strict: bool) -> Renderer | None:
        stream = sys.stderr
        if isinstance(stream, _Guard):
            stream = stream._stream
        if not wanted(stream, strict=strict):
            return None
        with self.lock:
            r = self.renderer
            if r is None or r.closed or (not r.entries and r.stream is not stream):
                r = self.renderer = Renderer(stream)
            return r

    def bar(self, label: str, total: int | None, verb: str = "") -> Bar | _NullBar:
        """A bar for a map (``verb`` after the count, e.g. ``" submitted"``), or one that draws
        nothing where no progress is shown. Raises :class:`InvalidError` for a bad
        ``APOTHIC_PROGRESS``."""
        r = self._renderer(strict=True)
        return _NullBar() if r is None else r.bar(label, total, verb)

    def spin(self, key: str, label: str, started: Any = None) -> None:
        """Show a spinner for ``key`` (an image tag); ``started``: the UTC time the step began."""
        r = self._renderer(strict=False)
        if r is None or key in self.spinners:
            return
        ago = 0.0
        if isinstance(started, datetime.datetime) and started.tzinfo is not None:
            ago = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
        self.spinners[key] = r.spinner(label, ago)

    def step(self, key: str, step: str) -> None:
        spinner = self.spinners.get(key)
        if spinner is not None:
            spinner.set_step(step)

    def stop(self, key: str | None = None) -> None:
        """Take the spinner of ``key`` off the line (None: every spinner)."""
        for k in [key] if key is not None else list(self.spinners):
            spinner = self.spinners.pop(k, None)
            if spinner is not None:
                spinner.close()

    @contextlib.contextmanager
    def above(self) -> Iterator[None]:
        """Around printing complete lines: they go above the progress line, if one is drawn."""
        r = self.renderer
        if r is None or not r.entries:
            yield
            return
        with r.above():
            yield

    def shutdown(self) -> None:
        if self.renderer is not None:
            self.renderer.shutdown()


PROGRESS = Progress()
atexit.register(PROGRESS.shutdown)
