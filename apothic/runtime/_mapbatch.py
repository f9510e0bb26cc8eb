"""What a map's batch has finished, kept so that a lost batch reruns only the rest.

``apothic.execute_batch`` (``_runtime.py``) runs a map's inputs one after the other (a batched
function's all at once). The map keeps what a lost batch finished (``workflows/_map.py``,
``MapWorkflow._salvage``) from two sources:

- **Heartbeats** (``BatchProgress``). Every heartbeat of the batch carries the results finished
  so far, as the batch's output will carry them (inline within the batch's budget, larger ones
  already in the blob store). A container that dies loses only the input it was running and
  those finished since its last heartbeat reached the server (one a second at most).
- **Reports** (``Reporter``). A server that was down for longer than the heartbeat timeout
  times the batch out as soon as it is back, before the container's next heartbeat or its result
  can reach it, and then refuses both. So while batches run the container asks the server once
  a second whether it answers. A batch that ended while the server was down, or shortly before
  it was found down, or that the server gave up on (its heartbeat was refused), is sent to the
  map by signal (``MAP_REPORT_SIGNAL``) once the server answers again, and the map takes its
  results instead of running those inputs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from .._contracts import MAP_REPORT_SIGNAL, NOT_RUN, MapBatchReport, MapItem, MapResultItem
from ._supervised import heartbeat_details

# How often the container asks the server whether it answers, while batches run.
PROBE_EVERY_S = 1.0
# A batch heartbeats after an input at most this often (the SDK sends one a second to the server,
# the latest it was given; encoding each one costs more than a no-op input).
BEAT_EVERY_S = 0.25
# A batch that ended this long before a check that found the server up had its result taken.
COMPLETION_MARGIN_S = 0.5
# A report that could not be sent for this long is dropped (its map has rerun those inputs).
REPORT_TTL_S = 300.0


class BatchProgress:
    """The results one ``execute_batch`` has finished, in the form its heartbeats carry."""

    def __init__(self, items: Sequence[MapItem]) -> None:
        self.items = [i.index for i in items]
        self.results: dict[int, MapResultItem] = {}
        self.inline = 0  # bytes of inline values, logs and details so far (BATCH_INLINE_BYTES)
        self._finished: list[MapResultItem] = []
        self._carried: list[dict[str, Any]] = []  # the first finished results, converted once
        self._last_beat = 0.0
        self._flush: asyncio.TimerHandle | None = None

    def add(self, result: MapResultItem) -> None:
        self.results[result.index] = result
        if result.error_type != NOT_RUN:
            self._finished.append(result)

    def beat(self) -> None:
        """Heartbeat after an input; if the batch did less than BEAT_EVERY_S ago, at the end of
        that interval instead (once, with what is finished by then)."""
        wait = self._last_beat + BEAT_EVERY_S - time.monotonic()
        if wait <= 0:
            activity.heartbeat()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(wait, self._beat_late, context=contextvars.copy_context())

    def _beat_late(self) -> None:
        self._flush = None
        activity.heartbeat()

    def ordered(self) -> list[MapResultItem]:
        return [self.results[i] for i in self.items]

    def report(self) -> MapBatchReport:
        return MapBatchReport(
            items=list(self.items), results=[r for r in self.results.values() if r.error_type != NOT_RUN]
        )

    def details(self) -> dict[str, Any]:
        """The heartbeat details: ``done`` (how many) and ``results`` (``MapResultItem`` fields)."""
        self._last_beat = time.monotonic()
        self._carried.extend(_fields(r) for r in self._finished[len(self._carried):])
        return {"done": len(self._carried), "results": list(self._carried)}

    @contextlib.contextmanager
    def heartbeats(self) -> Iterator[None]:
        """Every heartbeat sent while the batch runs (also the one the runtime sends while an
        input runs, with its logs and checkpoint, which maps do not read) carries the batch's
        progress instead, so that no heartbeat hides what the batch finished."""
        # The runtime's worker interceptor (``_supervised``) puts these details in their place.
        token = heartbeat_details.set(self.details)
        try:
            yield
        finally:
            if self._flush is not None:
                self._flush.cancel()
                self._flush = None
            heartbeat_details.reset(token)


_RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(MapResultItem))


def _fields(result: MapResultItem) -> dict[str, Any]:
    """``dataclasses.asdict(result)``, quicker for a result without details (the usual one)."""
    if result.error_detail or result.value is None:
        return dataclasses.asdict(result)
    out = {name: getattr(result, name) for name in _RESULT_FIELDS}
    out["value"] = dict(vars(result.value))
    return out


def lost_on_server() -> bool:
    """The activity was cancelled because the server no longer holds it (it timed out there,
    e.g. while the server was down), not because the map asked."""
    details = activity.cancellation_details()
    return details is not None and (details.not_found or details.timed_out)


@dataclasses.dataclass
class _Ended:
    at: float
    map_id: str
    report: MapBatchReport


class Reporter:
    """Sends a batch's results to its map by signal when the server may have missed them.

    Batches that ended recently are kept until a check that began after them finds the server
    up (their results were taken then). A check that fails makes them, and every batch that
    ends while the server is down, owed: sent once a check finds the server up again.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.down = False
        self.outages = 0  # times the server was found down (a batch compares it before and after)
        self._recent: list[_Ended] = []
        self._owed: list[_Ended] = []
        self._running = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """While a batch runs, the server is checked every PROBE_EVERY_S."""
        self._running += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._check_loop())
        try:
            yield
        finally:
            self._running -= 1

    def ended(self, map_id: str, progress: BatchProgress, suspect: bool) -> None:
        """A batch is over. ``suspect``: the server may not take its result (it was found down
        while the batch ran, or refused the batch); the report is then sent once it answers."""
        ended = _Ended(time.monotonic(), map_id, progress.report())
        if suspect or self.down:
            self._owed.append(ended)
            self._wake.set()
        else:
            self._recent.append(ended)

    async def _check_loop(self) -> None:
        while self._running or self._recent or self._owed:
            self._wake.clear()
            began = time.monotonic()
            up = await self._server_up()
            if up:
                self.down = False
                self._recent = [e for e in self._recent if e.at + COMPLETION_MARGIN_S >= began]
                await self._send_owed()
            else:
                if not self.down:
                    self.outages += 1
                self.down = True
                self._owed.extend(self._recent)
                self._recent.clear()
                self._owed = [e for e in self._owed if time.monotonic() - e.at < REPORT_TTL_S]
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), PROBE_EVERY_S)

    async def _server_up(self) -> bool:
        try:
            return await self.client.service_client.check_health(timeout=timedelta(seconds=PROBE_EVERY_S))
        except Exception:  # noqa: BLE001 - unreachable, refused, timed out: down
            return False

    async def _send_owed(self) -> None:
        owed, self._owed = self._owed, []
        for ended in owed:
            try:
                await self.client.get_workflow_handle(ended.map_id).signal(MAP_REPORT_SIGNAL, ended.report)
                print(
                    f"apothic: reported {len(ended.report.results)} finished inputs of batch "
                    f"{ended.report.items[0]}..{ended.report.items[-1]} to {ended.map_id}",
                    flush=True,
                )
            except RPCError as e:
                if e.status == RPCStatusCode.NOT_FOUND:  # the map has ended
                    continue
                if time.monotonic() - ended.at < REPORT_TTL_S:
                    self._owed.append(ended)  # the next check that finds the server up sends it
            except Exception as e:  # noqa: BLE001 - e.g. a payload the server refuses: the map reruns them
                print(f"apothic: could not report batch {ended.report.items[0]}..{ended.report.items[-1]}: {e}", flush=True)
