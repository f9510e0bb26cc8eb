"""One implementation, two faces: blocking calls and their ``.aio`` async twins.

Every I/O method of the SDK is written once, as a coroutine. The Temporal client belongs to
one background event loop (a daemon thread started on first use): the blocking face submits
the coroutine there and waits; the ``.aio`` face submits it there and awaits it from the
caller's own loop. There is never an ``asyncio.run()`` per call, and the client is only ever
used on the loop it was connected in.

This is also the SDK's error edge: whatever escapes a ``synced`` method or a step of a
``synced_iter`` iterator (blocking or ``.aio``) passes through
``_errors.translate_error``, so that no ``temporalio`` exception reaches a user.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from ._errors import describe_call, translate_error

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The SDK's event loop, started on first use in a daemon thread."""
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed() or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            _thread = threading.Thread(target=run, name="apothic-loop", daemon=True)
            _thread.start()
            ready.wait()
            _loop = loop
        return _loop


def _stop_background_loop() -> None:
    """At exit: cancel what still runs on the SDK's loop and stop it before the interpreter goes."""
    loop, thread = _loop, _thread
    if loop is None or thread is None or not thread.is_alive():
        return

    async def cancel_all() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(timeout=2)
    except Exception:  # noqa: BLE001 - best effort at exit
        pass
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=2)
    # Drop the Temporal clients while the interpreter is still whole (their native side
    # must not outlive it).
    from . import _client

    _client._clients.clear()
    import gc

    gc.collect()


atexit.register(_stop_background_loop)


def run_blocking(coro: Coroutine[Any, Any, T], *, aio_hint: str = "") -> T:
    """Run ``coro`` on the background loop and wait for it in this thread."""
    loop = background_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError("a blocking Apothic call was made from Apothic's own event loop")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        hint = f" Use `await {aio_hint}` instead." if aio_hint else " Use the `.aio` form instead."
        warnings.warn(
            f"A blocking Apothic call was made inside a running event loop; it blocks that loop.{hint}",
            stacklevel=3,
        )
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except KeyboardInterrupt:
        future.cancel()
        raise


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` from any event loop, running it on the background loop."""
    loop = background_loop()
    try:
        current = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    if current is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


class _Edge:
    """Where a call came from (an SDK object and its method), to word a translated error.

    The wording is worked out only when an error happens.
    """

    __slots__ = ("method", "obj")

    def __init__(self, obj: Any, method: str) -> None:
        self.obj = obj
        self.method = method

    async def run(self, aw: Awaitable[T]) -> T:
        """Await ``aw``; a ``temporalio`` exception comes out as an Apothic error chained to it."""
        try:
            return await aw
        except Exception as e:
            translated = translate_error(e, **describe_call(self.obj, self.method))
            if translated is e:
                raise
            raise translated from e


class synced(Generic[T]):
    """Decorator for an ``async def`` method: ``obj.m(...)`` blocks, ``obj.aio.m(...)`` awaits.

    The class must expose ``aio = AioNamespace.descriptor()``.
    """

    def __init__(self, afn: Callable[..., Awaitable[T]]) -> None:
        self.afn = afn
        self.name = afn.__name__
        functools.update_wrapper(self, afn)  # type: ignore[arg-type]

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __call__(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Called on the class (``Job.status(job)``): the blocking form."""
        return self.__get__(obj, type(obj))(*args, **kwargs)

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        afn = self.afn
        hint = f"<{type(obj).__name__}>.aio.{self.name}(...)"
        edge = _Edge(obj, self.name)

        @functools.wraps(afn)
        def blocking(*args: Any, **kwargs: Any) -> Any:
            return run_blocking(edge.run(afn(obj, *args, **kwargs)), aio_hint=hint)

        return blocking

    def twin(self, obj: Any) -> Callable[..., Any]:
        """The ``.aio`` form for ``obj``: runs the coroutine on the background loop."""
        afn = self.afn
        edge = _Edge(obj, self.name)

        @functools.wraps(afn)
        async def twin(*args: Any, **kwargs: Any) -> Any:
            return await run_async(edge.run(afn(obj, *args, **kwargs)))

        return twin


class synced_iter(synced[Any]):
    """Decorator for an async generator method: ``obj.m(...)`` returns a blocking iterator,
    ``obj.aio.m(...)`` an async iterator (``async for x in obj.aio.m(...)``).

    Both drive the same async generator, which runs on the background loop one step at a
    time. Leaving a ``for`` loop early closes the generator (``close()``/``aclose()``, or at
    garbage collection).
    """

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        afn = self.afn
        hint = f"<{type(obj).__name__}>.aio.{self.name}(...)"
        edge = _Edge(obj, self.name)

        @functools.wraps(afn)
        def blocking(*args: Any, **kwargs: Any) -> BlockingIterator[Any]:
            return BlockingIterator(afn(obj, *args, **kwargs), aio_hint=hint, edge=edge)

        return blocking

    def twin(self, obj: Any) -> Callable[..., Any]:
        afn = self.afn
        edge = _Edge(obj, self.name)

        @functools.wraps(afn)
        def twin(*args: Any, **kwargs: Any) -> AsyncIteratorTwin[Any]:
            return AsyncIteratorTwin(afn(obj, *args, **kwargs), edge=edge)

        return twin


_END = object()


async def _step(agen: Any) -> Any:
    try:
        return await agen.__anext__()
    except StopAsyncIteration:
        return _END


async def _aclose(agen: Any) -> None:
    await agen.aclose()


class BlockingIterator(Generic[T]):
    """The blocking face of an async generator that runs on the background loop."""

    def __init__(self, agen: AsyncIterator[T], *, aio_hint: str = "", edge: _Edge | None = None) -> None:
        self._agen = agen
        self._hint = aio_hint
        self._edge = edge or _Edge(None, "")
        self._done = False

    def __iter__(self) -> "BlockingIterator[T]":
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        try:
            value = run_blocking(self._edge.run(_step(self._agen)), aio_hint=self._hint)
        except BaseException:
            self._done = True
            raise
        if value is _END:
            self._done = True
            raise StopIteration
        return value

    def close(self) -> None:
        """Stop early: closes the generator (its cleanup runs) and waits for that."""
        if not self._done:
            self._done = True
            run_blocking(self._edge.run(_aclose(self._agen)), aio_hint=self._hint)

    def __enter__(self) -> "BlockingIterator[T]":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self._done = True
            loop = _loop
            if loop is not None and not loop.is_closed() and loop.is_running():
                asyncio.run_coroutine_threadsafe(_aclose(self._agen), loop)


class AsyncIteratorTwin(Generic[T]):
    """The ``.aio`` face of an async generator that runs on the background loop."""

    def __init__(self, agen: AsyncIterator[T], *, edge: _Edge | None = None) -> None:
        self._agen = agen
        self._edge = edge or _Edge(None, "")
        self._done = False

    def __aiter__(self) -> "AsyncIteratorTwin[T]":
        return self

    async def __anext__(self) -> T:
        if self._done:
            raise StopAsyncIteration
        try:
            value = await run_async(self._edge.run(_step(self._agen)))
        except BaseException:
            self._done = True
            raise
        if value is _END:
            self._done = True
            raise StopAsyncIteration
        return value

    async def aclose(self) -> None:
        """Stop early: closes the generator (its cleanup runs)."""
        if not self._done:
            self._done = True
            await run_async(self._edge.run(_aclose(self._agen)))

    async def __aenter__(self) -> "AsyncIteratorTwin[T]":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self._done = True
            loop = _loop
            if loop is not None and not loop.is_closed() and loop.is_running():
                asyncio.run_coroutine_threadsafe(_aclose(self._agen), loop)


class AioNamespace:
    """``obj.aio``: the async twins of ``obj``'s blocking methods."""

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __getattr__(self, name: str) -> Any:
        attr = getattr(type(self._obj), name, None)
        if not isinstance(attr, synced):
            raise AttributeError(f"{type(self._obj).__name__}.aio has no method {name!r}")
        return attr.twin(self._obj)

    def __dir__(self) -> list[str]:
        return sorted(n for n, v in vars(type(self._obj)).items() if isinstance(v, synced))

    @staticmethod
    def descriptor() -> Any:
        return property(lambda self: AioNamespace(self), doc="Async twins of this object's blocking methods.")
