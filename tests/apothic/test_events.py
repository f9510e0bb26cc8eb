"""The pure pieces of job events: log tails, the container's publisher, generator draining,
event-type checks and the blocking/async iterator twins."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path
from typing import Any

import pytest

from apothic import InvalidError
from apothic._contracts import EVENT_TYPES
from apothic._control._loop import AioNamespace, BlockingIterator, synced_iter
from apothic._invoke._watch import check_event_types
from apothic.runtime._events import MAX_LINE_CHARS, LogTail
from apothic.runtime._executor import MainThreadExecutor, WorkItem


def test_log_tail_returns_complete_lines_once(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"one\ntw")
    tail = LogTail()
    assert tail.read(str(log)) == ["one"]
    assert tail.read(str(log)) == []
    with open(log, "ab") as f:
        f.write(b"o\r\nthree\nfour")
    assert tail.read(str(log), upto=len(b"one\ntwo\r\n")) == ["two"]
    assert tail.read(str(log)) == ["three"]
    assert tail.read(str(log), final=True) == ["four"]
    assert tail.read("") == [] and tail.read(str(tmp_path / "missing")) == []


def test_log_tail_cuts_endless_lines(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"x" * (MAX_LINE_CHARS + 10))
    (line,) = LogTail().read(str(log))
    assert line.endswith("[... line cut]") and len(line) < MAX_LINE_CHARS + 20


def test_event_types_are_checked() -> None:
    assert check_event_types(None, "watch") is None
    assert check_event_types(("log", "output"), "watch") == ["log", "output"]
    with pytest.raises(InvalidError, match=r"unknown or empty; allowed: \['queued'"):
        check_event_types(["log", "stdout"], "watch")
    with pytest.raises(InvalidError, match=r"Fix: event_types=\['log'\]"):
        check_event_types("log", "remote_events")
    assert EVENT_TYPES[0] == "queued" and EVENT_TYPES[-3:] == ("completed", "failed", "cancelled")


class Counter:
    aio = AioNamespace.descriptor()

    def __init__(self) -> None:
        self.closed: list[int] = []

    @synced_iter
    async def count(self, n: int, fail_at: int = -1):  # type: ignore[no-untyped-def]
        try:
            for i in range(n):
                if i == fail_at:
                    raise KeyError(i)
                await asyncio.sleep(0)
                yield i
        finally:
            self.closed.append(n)


def test_one_async_generator_two_faces() -> None:
    c = Counter()
    it = c.count(3)
    assert isinstance(it, BlockingIterator)
    assert list(it) == [0, 1, 2] and c.closed == [3]
    with pytest.raises(KeyError):
        list(c.count(5, fail_at=2))

    async def aio() -> list[int]:
        return [i async for i in c.aio.count(4)]

    assert asyncio.run(aio()) == [0, 1, 2, 3]
    assert "count" in dir(c.aio)


def test_leaving_early_closes_the_generator() -> None:
    c = Counter()
    with c.count(100) as it:
        assert next(it) == 0
    assert c.closed == [100]

    async def aio() -> None:
        it = c.aio.count(50)
        assert await it.__anext__() == 0
        await it.aclose()
        with pytest.raises(StopAsyncIteration):
            await it.__anext__()

    asyncio.run(aio())
    assert c.closed == [100, 50]


def run_item(fn: Any, *args: Any, skip: int = 0) -> tuple[WorkItem, list[tuple[int, Any, str]]]:
    """Run ``fn`` as the container's main thread would, recording (index, value, log so far)."""
    seen: list[tuple[int, Any, str]] = []
    item = WorkItem(fn, args, {}, skip_outputs=skip)
    item.on_output = lambda i, v: seen.append((i, v, Path(item.log_path).read_text()))
    MainThreadExecutor()._run(item)
    return item, seen


def test_generators_are_drained_in_the_main_thread_and_skip_what_was_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As in a container: a block-buffered stdout on fd 1 (pytest's own capture is not on fd 1).
    stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=False)
    monkeypatch.setattr(sys, "stdout", stdout)

    def gen(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            print(f"making {i}")  # no flush: lines reach the log as they are printed
            yield i * 10

    item, seen = run_item(gen, 3, skip=1)
    assert stdout.line_buffering is False  # restored after the run
    assert item.future.result() is None
    assert [(i, v) for i, v, _ in seen] == [(1, 10), (2, 20)]
    assert seen[0][2] == "making 0\nmaking 1\n"

    async def agen(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    item, seen = run_item(agen, 2)
    assert [(i, v) for i, v, _ in seen] == [(0, 0), (1, 1)] and item.future.result() is None

    def broken():  # type: ignore[no-untyped-def]
        yield 1
        raise ValueError("mid-way")

    item, seen = run_item(broken)
    assert [v for _, v, _ in seen] == [1]
    with pytest.raises(ValueError, match="mid-way"):
        item.future.result()


def test_every_blocking_call_of_the_reference_has_one_aio_twin() -> None:
    """deploy, invoke and job inspection: one async implementation behind both faces."""
    import apothic
    from apothic._control._loop import AsyncIteratorTwin, synced

    surfaces = {
        apothic.App: ["deploy"],
        apothic.Function: ["remote", "spawn", "remote_gen", "remote_events", "spawn_map", "map", "starmap", "for_each"],
        apothic.RemoteFunction: ["remote", "spawn", "remote_gen", "remote_events", "spawn_map", "map", "starmap", "for_each"],
        apothic.Job: ["status", "logs", "wait", "cancel", "watch"],
    }
    for cls, names in surfaces.items():
        for name in names:
            assert isinstance(vars(cls).get(name) or getattr(cls, name), synced), f"{cls.__name__}.{name}"
    iterators = {"watch", "remote_gen", "remote_events"}
    job = apothic.Job("job-0")
    # No I/O until the first item is asked for.
    assert isinstance(job.watch(), BlockingIterator) and isinstance(job.aio.watch(), AsyncIteratorTwin)
    assert iterators <= {n for cls in surfaces for n in dir(cls) if isinstance(getattr(cls, n, None), synced_iter)}
