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
import contextlib
import dis
import functools
import inspect
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from .._trace import with_caller_context
from ..exceptions import InvalidError
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


def run_blocking(coro: Coroutine[Any, Any, T], *, aio_hint: str = "", stacklevel: int = 3) -> T:
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
        hint = f" Use {aio_hint} instead." if aio_hint else " Use the `.aio` form instead."
        warnings.warn(
            f"A blocking Apothic call was made inside a running event loop; it blocks that loop.{hint}",
            stacklevel=stacklevel,
        )
    # The caller's OpenTelemetry span (if any) is the parent of what the call does (apothic/_trace).
    future = asyncio.run_coroutine_threadsafe(with_caller_context(coro), loop)
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
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(with_caller_context(coro), loop))


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


def _caller_awaits(frame: Any) -> bool:
    """True when ``frame`` is about to ``await`` the value of the call it is making now
    (``await obj.m(...)``): its next instruction is ``GET_AWAITABLE``. Read from the bytecode,
    only when a blocking call is made inside a running event loop, so that the mistake can be
    named before the call blocks that loop."""
    try:
        key = (frame.f_code, frame.f_lasti)
        found = _AWAITS.get(key)
        if found is None:
            found = False
            instructions = list(dis.get_instructions(frame.f_code))
            for i, ins in enumerate(instructions[:-1]):
                if ins.offset == frame.f_lasti:
                    found = instructions[i + 1].opname == "GET_AWAITABLE"
                    break
            if len(_AWAITS) < 4096:
                _AWAITS[key] = found
        return found
    except Exception:  # noqa: BLE001 - an interpreter without this bytecode: no early error
        return False


_AWAITS: dict[tuple[Any, int], bool] = {}

# How the SDK's objects are called in the hints of its errors.
_SPELLING = {"Function": "fn", "RemoteFunction": "fn", "Job": "job", "App": "app", "type": "Job"}


def spelling(obj: Any, method: str) -> str:
    """``fn.remote``: how a user names ``obj.method`` (for hints)."""
    if isinstance(obj, type):
        return f"{obj.__name__}.{method}"
    name = type(obj).__name__
    return f"{_SPELLING.get(name, name[:1].lower() + name[1:])}.{method}"


def _blocking_in_loop(obj: Any, method: str, frame: Any) -> None:
    """Refuse ``await obj.m(...)`` (the blocking form awaited) before it blocks the caller's loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    if frame is not None and _caller_awaits(frame):
        name = spelling(obj, method)
        head, _, tail = name.partition(".")
        raise InvalidError(
            f"`await {name}(...)`: {name}(...) is the blocking form, it returns a result, not an awaitable. "
            f"Fix: in async code write `await {name}.aio(...)` (or `await {head}.aio.{tail}(...)`); "
            f"outside an event loop call `{name}(...)` without await."
        )


class synced(Generic[T]):
    """Decorator for an ``async def`` method: ``obj.m(...)`` blocks, ``await obj.m.aio(...)``
    and ``await obj.aio.m(...)`` await (both spellings: one implementation).

    The class must expose ``aio = AioNamespace.descriptor()``. With :meth:`iterating`, the
    ``.aio`` form is an async iterator instead (``fn.map``: a list when blocking, results one
    by one with ``async for``).
    """

    aio_iter: Callable[..., AsyncIterator[Any]] | None = None

    def __init__(self, afn: Callable[..., Awaitable[T]]) -> None:
        self.afn = afn
        self.name = afn.__name__
        functools.update_wrapper(self, afn)  # type: ignore[arg-type]

    @classmethod
    def iterating(cls, agen: Callable[..., AsyncIterator[Any]]) -> Callable[[Callable[..., Awaitable[T]]], "synced[T]"]:
        """``@synced.iterating(agen)``: the blocking form runs the decorated coroutine; the
        ``.aio`` form iterates ``agen(obj, *args, **kwargs)`` (same arguments)."""

        def decorate(afn: Callable[..., Awaitable[T]]) -> "synced[T]":
            made = cls(afn)
            made.aio_iter = agen
            return made

        return decorate

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __call__(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Called on the class (``Job.status(job)``): the blocking form."""
        return self._blocking(obj, sys._getframe(1))(*args, **kwargs)

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return Bound(self, obj)

    def _blocking(self, obj: Any, frame: Any) -> Callable[..., Any]:
        afn = self.afn
        name = spelling(obj, self.name)
        head, _, tail = name.partition(".")
        hint = f"`await {name}.aio(...)` (or `await {head}.aio.{tail}(...)`)"
        edge = _Edge(obj, self.name)

        def blocking(*args: Any, **kwargs: Any) -> Any:
            _blocking_in_loop(obj, self.name, frame)
            return run_blocking(edge.run(afn(obj, *args, **kwargs)), aio_hint=hint, stacklevel=4)

        return blocking

    def twin(self, obj: Any) -> Callable[..., Any]:
        """The ``.aio`` form for ``obj``: runs the coroutine on the background loop."""
        afn = self.afn
        edge = _Edge(obj, self.name)
        if self.aio_iter is not None:
            agen, name = self.aio_iter, spelling(obj, self.name)

            @functools.wraps(afn)
            def iterate(*args: Any, **kwargs: Any) -> AsyncIteratorTwin[Any]:
                return AsyncIteratorTwin(agen(obj, *args, **kwargs), edge=edge, name=name)

            iterate.__signature__ = _bound_signature(agen)  # type: ignore[attr-defined]
            return iterate

        @functools.wraps(afn)
        async def twin(*args: Any, **kwargs: Any) -> Any:
            return await run_async(edge.run(afn(obj, *args, **kwargs)))

        twin.__signature__ = _bound_signature(afn)  # type: ignore[attr-defined]
        return twin


class synced_class(synced[T]):
    """Like :class:`synced` for a method of the class itself (``Job.gather(*jobs)``,
    ``await Job.gather.aio(*jobs)``): the coroutine gets the class, not an instance."""

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return Bound(self, owner if owner is not None else type(obj))

    def twin(self, obj: Any) -> Callable[..., Any]:
        return super().twin(obj if isinstance(obj, type) else type(obj))


def _bound_signature(fn: Callable[..., Any]) -> inspect.Signature:
    """``fn``'s signature without its first parameter (``self``, or the class)."""
    sig = inspect.signature(fn)
    return sig.replace(parameters=list(sig.parameters.values())[1:])


class Bound:
    """``obj.m``: calling it blocks; ``obj.m.aio`` is the async twin of the same coroutine.

    Made on each attribute read, like a bound method. It carries the method's name, doc and
    signature (without ``self``) for ``help()`` and editors.
    """

    def __init__(self, method: synced[Any], obj: Any) -> None:
        self._method = method
        self._obj = obj
        self.__name__ = method.name
        self.__qualname__ = getattr(method.afn, "__qualname__", method.name)
        self.__doc__ = method.afn.__doc__
        self.__wrapped__ = method.afn

    @property
    def __signature__(self) -> inspect.Signature:
        return _bound_signature(self._method.afn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._method._blocking(self._obj, sys._getframe(1))(*args, **kwargs)

    @property
    def aio(self) -> Callable[..., Any]:
        """The async form: ``await obj.m.aio(...)`` (an async iterator for iterators and maps)."""
        return self._method.twin(self._obj)

    def __repr__(self) -> str:
        return f"<bound apothic method {spelling(self._obj, self.__name__)}>"


class synced_iter(synced[Any]):
    """Decorator for an async generator method: ``obj.m(...)`` returns a blocking iterator,
    ``obj.m.aio(...)`` and ``obj.aio.m(...)`` an async iterator (``async for x in ...``).

    Both drive the same async generator, which runs on the background loop one step at a
    time. Leaving a ``for`` loop early closes the generator (``close()``/``aclose()``, or at
    garbage collection).
    """

    def _blocking(self, obj: Any, frame: Any) -> Callable[..., Any]:
        afn = self.afn
        name = spelling(obj, self.name)
        edge = _Edge(obj, self.name)

        def blocking(*args: Any, **kwargs: Any) -> BlockingIterator[Any]:
            return BlockingIterator(afn(obj, *args, **kwargs), aio_hint=f"`async for x in {name}.aio(...)`",
                                    edge=edge, name=name)

        return blocking

    def twin(self, obj: Any) -> Callable[..., Any]:
        afn = self.afn
        edge = _Edge(obj, self.name)
        name = spelling(obj, self.name)

        @functools.wraps(afn)
        def twin(*args: Any, **kwargs: Any) -> AsyncIteratorTwin[Any]:
            return AsyncIteratorTwin(afn(obj, *args, **kwargs), edge=edge, name=name)

        twin.__signature__ = _bound_signature(afn)  # type: ignore[attr-defined]
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

    def __init__(
        self, agen: AsyncIterator[T], *, aio_hint: str = "", edge: _Edge | None = None, name: str = ""
    ) -> None:
        self._agen = agen
        self._hint = aio_hint
        self._edge = edge or _Edge(None, "")
        self._name = name or "this iterator"
        self._done = False

    def __iter__(self) -> "BlockingIterator[T]":
        return self

    def __aiter__(self) -> Any:
        self.close_unstarted()
        raise InvalidError(
            f"`async for ... in {self._name}(...)`: {self._name}(...) is the blocking iterator. "
            f"Fix: write `async for x in {self._name}.aio(...)`, or `for x in {self._name}(...)` outside an event loop."
        )

    def close_unstarted(self) -> None:
        """Drop the generator that never ran (a wrong use): nothing to clean up on the loop."""
        if not self._done:
            self._done = True
            close = getattr(self._agen, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close().close()  # an async generator that never started needs no loop

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


def _both(name: str) -> str:
    """``fn.map.aio(...)`` / ``fn.aio.map(...)``: the two spellings of an async form."""
    head, _, tail = name.partition(".")
    return f"{name}.aio(...)` / `{head}.aio.{tail}(...)" if tail else f"{name}.aio(...)"


class AsyncIteratorTwin(Generic[T]):
    """The ``.aio`` face of an async generator that runs on the background loop."""

    def __init__(self, agen: AsyncIterator[T], *, edge: _Edge | None = None, name: str = "") -> None:
        self._agen = agen
        self._edge = edge or _Edge(None, "")
        self._name = name or "this iterator"
        self._done = False

    def __aiter__(self) -> "AsyncIteratorTwin[T]":
        return self

    def _unstarted(self) -> None:
        if not self._done:
            self._done = True
            with contextlib.suppress(Exception):
                self._agen.aclose().close()  # type: ignore[attr-defined] - never started: no loop needed

    def __iter__(self) -> Any:
        self._unstarted()
        raise InvalidError(
            f"`for ... in {_both(self._name)}`: the .aio form is an async iterator. Fix: write "
            f"`async for x in {self._name}.aio(...)` inside async code, or `for x in {self._name}(...)` (blocking)."
        )

    def __await__(self) -> Any:
        self._unstarted()
        raise InvalidError(
            f"`await {_both(self._name)}`: it is an async iterator, not an awaitable. Fix: iterate it, "
            f"`async for x in {self._name}.aio(...)`, or collect a list with "
            f"`[x async for x in {self._name}.aio(...)]` (blocking: `{self._name}(...)`)."
        )

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
        attr = inspect.getattr_static(type(self._obj), name, None)
        if not isinstance(attr, synced):
            raise AttributeError(f"{type(self._obj).__name__}.aio has no method {name!r}")
        return attr.twin(self._obj)

    def __dir__(self) -> list[str]:
        return sorted({n for k in type(self._obj).__mro__ for n, v in vars(k).items() if isinstance(v, synced)})

    @staticmethod
    def descriptor() -> Any:
        return property(lambda self: AioNamespace(self), doc="Async twins of this object's blocking methods.")
