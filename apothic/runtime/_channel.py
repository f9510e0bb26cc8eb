"""What a runtime tells its supervisor: the inputs it holds and when their user code runs.

The container's supervisor (``_supervisor``) starts each runtime with the write end of a pipe
(its number in ``APOTHIC_SUPERVISOR_FD``) and a scratch folder of its own
(``APOTHIC_SCRATCH_DIR``, where the runtime keeps its capture files). Over the pipe the runtime
sends one JSON line per note, each written with a single ``os.write`` shorter than the pipe's
atomic size, so that notes from several threads never interleave:

- ``start``: an activity began (``id``, its task ``token`` in base64, ``timeout_s``, ``kind``
  ``execute`` or ``batch`` with the map ``items``' indices, ``hb``: the file that mirrors its
  heartbeats).
- ``run``: the user code of an input starts (``id``, ``index`` of a map item or None, ``at`` on
  the monotonic clock, ``log``: its capture file). Sent by the thread that calls the user code,
  before it does.
- ``done``: that user code has returned or raised.
- ``end``: the activity is over (its outcome is the runtime's to report).
- ``alive``: every half second from the runtime's event loop. A runtime that stops sending it
  cannot heartbeat either (native code holding the interpreter's lock, say): the supervisor
  then heartbeats its inputs in its place.

The runtime also mirrors each heartbeat's details (converted to payloads, not yet encoded) to
its ``hb`` file, so that the supervisor repeats what the runtime last sent.

Without a supervisor (``APOTHIC_SUPERVISOR_FD`` unset) every note is dropped. A note that
cannot be written (the supervisor is gone, or user code closed the descriptor) turns the
channel off for good.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from typing import Any

FD_ENV = "APOTHIC_SUPERVISOR_FD"
SCRATCH_ENV = "APOTHIC_SCRATCH_DIR"
PARENT_ENV = "APOTHIC_SUPERVISOR_PID"
ALIVE_EVERY_S = 0.5
LOG_LIMIT = 256 * 1024
# A heartbeat carries the last this many bytes of the input's output.
HEARTBEAT_LOG_BYTES = 32 * 1024
# Notes stay below the size a pipe writes at once (POSIX: at least 512; Linux: 4096).
NOTE_LIMIT = 4000


def scratch_dir() -> str | None:
    """Where the runtime keeps its temporary files: its supervisor's folder for it (removed when
    the runtime exits, however it exits), else the system's temporary folder."""
    folder = os.environ.get(SCRATCH_ENV, "")
    return folder if folder and os.path.isdir(folder) else None


class Channel:
    """The runtime's end of the pipe to its supervisor (a no-op without one)."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd
        self._ids = 0
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> Channel:
        text = os.environ.get(FD_ENV, "")
        if not text.isdigit():
            return cls(None)
        fd = int(text)
        try:
            os.set_inheritable(fd, False)  # user code's subprocesses do not get it
        except OSError:
            return cls(None)
        return cls(fd)

    @property
    def on(self) -> bool:
        return self._fd is not None

    def new_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def note(self, op: str, **fields: Any) -> None:
        fd = self._fd
        if fd is None:
            return
        line = json.dumps({"op": op, **fields}, separators=(",", ":")).encode() + b"\n"
        if len(line) > NOTE_LIMIT:  # a batch of many items: the supervisor then knows fewer
            fields.pop("items", None)
            line = json.dumps({"op": op, **fields, "items": None}, separators=(",", ":")).encode() + b"\n"
        try:
            os.write(fd, line)
        except OSError:
            self._fd = None

    def start(self, input_id: int, token: bytes, timeout_s: float, kind: str, items: list[int] | None,
              hb: str) -> None:
        self.note("start", id=input_id, token=base64.b64encode(token).decode(), timeout_s=timeout_s, kind=kind,
                  items=items, hb=hb)

    def run(self, input_id: int, index: int | None, log: str) -> None:
        self.note("run", id=input_id, index=index, at=time.monotonic(), log=log)

    def done(self, input_id: int, index: int | None) -> None:
        self.note("done", id=input_id, index=index)

    def end(self, input_id: int) -> None:
        self.note("end", id=input_id)

    def alive(self) -> None:
        self.note("alive")


def parse(line: bytes) -> dict[str, Any] | None:
    """One note (None: not a note)."""
    try:
        note = json.loads(line)
    except ValueError:
        return None
    return note if isinstance(note, dict) and isinstance(note.get("op"), str) else None


def read_log(path: str, limit: int = LOG_LIMIT) -> str:
    """The last ``limit`` bytes of a captured log, marked when cut."""
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    if size > limit:
        text = f"[... {size - limit} earlier bytes cut ...]\n" + text
    return text
