"""The supervisor's link to Temporal: heartbeats in a silent runtime's place, and the outcome
of the inputs of a runtime that died or was killed (``_supervisor``).

Made once a runtime serves (``ActivityReports.warm``): only then does the supervisor import
Temporal's SDK and connect (once, with the container's settings, as a runtime does, signing
included), on an event loop in a thread of its own, so that the supervisor's loop never waits
for the server. Each call returns at once.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import threading
import time
import traceback
from typing import Any

from ._channel import HEARTBEAT_LOG_BYTES, read_log

# A connection that failed is tried again after this long at the soonest.
RECONNECT_S = 2.0


class ActivityReports:
    """Heartbeats and completes activities by task token (Temporal's asynchronous completion)."""

    def __init__(self, container_id: str) -> None:
        self.container_id = container_id
        self.grace_s = 300.0  # worker.server_unreachable_s, once the settings are read
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="apothic-supervisor-reports", daemon=True)
        self._thread.start()
        self._client: Any = None
        self._lock: asyncio.Lock | None = None
        self._failed_at = 0.0
        self._unanswered_since = 0.0
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._pending_lock = threading.Lock()
        self._import_lock = threading.Lock()
        self._imported = False

    # --- called from the supervisor's thread ---------------------------------------------------

    def warm(self) -> None:
        """Import and connect now, in the background: a report may be due soon, within the
        server's heartbeat timeout (5 s) of an input's start."""
        threading.Thread(target=self._warm, name="apothic-supervisor-warm", daemon=True).start()

    def _warm(self) -> None:
        self._imports()
        self._submit(self._connected(), track=False)

    def _imports(self) -> None:
        """Import what the reports use, once, in one thread at a time (two threads importing the
        same package at once can deadlock on its modules' locks)."""
        with self._import_lock:
            if self._imported:
                return
            import temporalio.api.common.v1
            import temporalio.client
            import temporalio.converter
            import temporalio.exceptions
            import temporalio.service  # noqa: F401

            from .._contracts import ExecuteBatchOutput  # noqa: F401
            from .._control import _client, _config  # noqa: F401

            self._imported = True

    def heartbeat(self, inp: Any) -> concurrent.futures.Future[Any]:
        """Heartbeat ``inp`` as its runtime last did (with its output as it is now); a cancel
        the server answers with sets ``inp.cancel_seen``."""
        log = next(iter(inp.running.values()))[1] if inp.running else inp.last_log
        return self._submit(self._heartbeat(inp, _token(inp), inp.hb, log), track=False)

    def fail(self, inp: Any, message: str, error_type: str, details: dict[str, Any]) -> None:
        self._submit(self._fail(_token(inp), message, error_type, details))

    def cancelled(self, inp: Any) -> None:
        self._submit(self._cancelled(_token(inp)))

    def complete_batch(self, inp: Any, failed: dict[int, dict[str, Any]], not_run: str) -> None:
        """Complete a map's batch: the results its last heartbeat carried, ``failed`` (index ->
        MapResultItem fields), ``apothic.NotRun`` for the rest. The heartbeat mirror is read now
        (the runtime's folder goes next)."""
        self._submit(self._complete_batch(_token(inp), list(inp.items or []), failed, not_run, _read(inp.hb)))

    def unreachable_for(self) -> float:
        """How long the server has not answered (0: it answered last time)."""
        since = self._unanswered_since
        return time.monotonic() - since if since else 0.0

    def wait(self, timeout: float) -> None:
        """Wait for the reports sent so far (at most ``timeout`` seconds)."""
        with self._pending_lock:
            pending = list(self._pending)
        if pending:
            concurrent.futures.wait(pending, timeout=timeout)

    def _submit(self, coro: Any, track: bool = True) -> concurrent.futures.Future[Any]:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        if track:
            with self._pending_lock:
                self._pending.add(fut)
            fut.add_done_callback(self._done)
        return fut

    def _done(self, fut: concurrent.futures.Future[Any]) -> None:
        with self._pending_lock:
            self._pending.discard(fut)

    # --- on the reports' loop ------------------------------------------------------------------

    async def _connected(self) -> Any:
        if self._client is not None:
            return self._client
        self._imports()
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client is None:
                wait = self._failed_at + RECONNECT_S - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                from .._control._client import connect
                from .._control._config import load_settings

                settings = load_settings()
                self.grace_s = settings.worker.server_unreachable_s
                try:
                    self._client = await connect(settings, start_embedded=False)
                except Exception:
                    self._failed_at = time.monotonic()
                    raise
                print(f"apothic container supervisor: connected to {settings.address} (to report for its runtimes)",
                      flush=True)
        return self._client

    def _answer(self, answered: bool) -> None:
        if answered:
            self._unanswered_since = 0.0
        elif not self._unanswered_since:
            self._unanswered_since = time.monotonic()

    async def _call(self, what: str, call: Any) -> Any:
        """Run ``call(client)``; a server that does not answer is noted (and the call dropped)."""
        self._imports()
        from temporalio.service import RPCError, RPCStatusCode

        try:
            client = await self._connected()
            result = await call(client)
        except RPCError as e:
            unavailable = e.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)
            self._answer(not unavailable)
            if e.status != RPCStatusCode.NOT_FOUND:  # not found: the activity has ended meanwhile
                print(f"apothic container supervisor: {what} failed: {e}", flush=True)
            return None
        except Exception as e:  # noqa: BLE001 - the supervisor carries on
            self._answer(False)
            print(f"apothic container supervisor: {what} failed: {type(e).__name__}: {e}", flush=True)
            return None
        self._answer(True)
        return result

    async def _heartbeat(self, inp: Any, token: bytes, hb: str, log: str) -> None:
        self._imports()
        from temporalio.client import AsyncActivityCancelledError

        async def beat(client: Any) -> None:
            details = _details(client, _read(hb), log)
            try:
                await client.get_async_activity_handle(task_token=token).heartbeat(*details)
            except AsyncActivityCancelledError:
                inp.cancel_seen = inp.cancel_seen or time.monotonic()

        await self._call("a heartbeat", beat)

    async def _fail(self, token: bytes, message: str, error_type: str, details: dict[str, Any]) -> None:
        self._imports()
        from temporalio.exceptions import ApplicationError

        async def fail(client: Any) -> None:
            await client.get_async_activity_handle(task_token=token).fail(
                ApplicationError(message, details, type=error_type)
            )

        await self._call(f"reporting {error_type}", fail)

    async def _cancelled(self, token: bytes) -> None:
        async def cancelled(client: Any) -> None:
            await client.get_async_activity_handle(task_token=token).report_cancellation()

        await self._call("reporting a cancel", cancelled)

    async def _complete_batch(self, token: bytes, items: list[int], failed: dict[int, dict[str, Any]],
                              not_run: str, mirror: bytes | None) -> None:
        self._imports()
        from temporalio.converter import value_to_type

        from .._contracts import NOT_RUN, ExecuteBatchOutput, MapResultItem

        async def complete(client: Any) -> None:
            finished: dict[int, MapResultItem] = {}
            details = _details(client, mirror, "")
            carried = details[0].get("results") if details and isinstance(details[0], dict) else None
            for raw in carried if isinstance(carried, list) else []:
                try:
                    result = value_to_type(MapResultItem, raw)
                except Exception:  # noqa: BLE001 - not a result: that input runs again
                    continue
                finished[result.index] = result
            results = []
            for index in items:
                if index in failed:
                    results.append(MapResultItem(index=index, ok=False, **failed[index]))
                elif index in finished:
                    results.append(finished[index])
                else:
                    results.append(MapResultItem(index=index, ok=False, error_type=NOT_RUN, error_message=not_run))
            await client.get_async_activity_handle(task_token=token).complete(
                ExecuteBatchOutput(results=results, container_id=self.container_id)
            )

        await self._call("completing a map batch", complete)


def _token(inp: Any) -> bytes:
    return base64.b64decode(inp.token)


def _read(path: str) -> bytes | None:
    """A heartbeat mirror's bytes (None: there is none)."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _details(client: Any, mirror: bytes | None, log: str) -> list[Any]:
    """What the runtime's last heartbeat carried (its ``mirror``), with the output as it is now."""
    values: list[Any] = []
    if mirror:
        try:
            from temporalio.api.common.v1 import Payloads

            payloads = Payloads.FromString(mirror)
            values = list(client.data_converter.payload_converter.from_payloads(list(payloads.payloads)))
        except Exception:  # noqa: BLE001 - an odd mirror: heartbeat without it
            traceback.print_exc()
            values = []
    if not values:
        return [{"logs": read_log(log, HEARTBEAT_LOG_BYTES), "checkpoint": None}] if log else []
    if log and isinstance(values[0], dict) and "logs" in values[0]:
        values[0] = {**values[0], "logs": read_log(log, HEARTBEAT_LOG_BYTES)}
    return values
