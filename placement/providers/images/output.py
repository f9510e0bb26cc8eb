"""Build output: streamed line by line to the caller, with the tail of each step kept."""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["TAIL_LINES", "BuildOutput", "OnOutput", "step_name"]

#: How many of a step's last lines an :class:`ImageBuildFailed` carries.
TAIL_LINES = 60

OnOutput = Callable[[str], None]


def step_name(step: Any) -> str:
    """A step as the spec writes it, e.g. ``"pip_install('torch')"``."""
    return step._repr().lstrip(".")


class BuildOutput:
    """Streams build output line by line to ``on_output`` and keeps each step's tail.

    Lines fed from worker threads reach ``on_output`` on the event loop thread, in order.
    Make it on the event loop.
    """

    def __init__(self, on_output: OnOutput | None) -> None:
        self._cb = on_output
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._partial = ""
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.step = ""

    def start_step(self, name: str) -> None:
        self.flush()
        self.tail.clear()
        self.step = name
        self.line(f"==> {name}")

    def line(self, text: str) -> None:
        self.tail.append(text)
        if self._cb is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._cb(text)
        else:
            self._loop.call_soon_threadsafe(self._cb, text)

    def feed(self, text: str) -> None:
        text = self._partial + text.replace("\r\n", "\n")
        *lines, self._partial = text.split("\n")
        for ln in lines:
            self.line(ln.rsplit("\r", 1)[-1])

    def flush(self) -> None:
        if self._partial:
            self.line(self._partial)
            self._partial = ""

    def tail_text(self) -> str:
        self.flush()
        return "\n".join(self.tail)
