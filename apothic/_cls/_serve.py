"""A class in its container: one instance per container, ``@enter`` before the first input,
``@exit`` after the last.

The runtime (``apothic/runtime/_runtime.py``) calls three hooks, and only for a class:

- :meth:`ClassLifecycle.prepare` once the deployment is resolved: an instance with parameters
  or option overrides runs on a queue of its own, and its parameters and options are those of
  the deployment its fleet was started with (the fleet's ``status`` query), which then stands
  for the app's in this container (runner choice, concurrency).
- :meth:`ClassLifecycle.enter` after the code and the mounts are loaded, before the worker
  polls: it builds the instance (parameters set as attributes) and runs the ``@enter``
  methods in order, where the inputs will run (the main thread, or, for a class whose
  methods are all ``async``, one event loop for the container's life, ``LoopExecutor``);
  their output goes to the container's log.
  An exception ends the container with ``EXIT_ENTER_FAILED``. Then each input is
  ``Dispatch(instance)(method, *args, **kwargs)``.
- :meth:`ClassLifecycle.exit` after the worker has stopped and the last input finished
  (idle, SIGTERM, owner gone): the ``@exit`` methods, at most ``EXIT_HOOKS_S`` seconds.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from .._contracts import Deployment, FleetStatus
from ..exceptions import InvalidError
from ._identity import fleet_of_queue, load_params

# Exit code of a container whose @enter method raised (its jobs see the traceback).
EXIT_ENTER_FAILED = 6
# How long the @exit methods may take at drain before the container exits anyway.
EXIT_HOOKS_S = 30.0


def build_instance(user_cls: type, values: dict[str, Any]) -> Any:
    """An instance of the user's class with its parameter values as attributes (no __init__:
    ``@app.cls`` refuses classes with one)."""
    obj = user_cls.__new__(user_cls)
    for name, value in values.items():
        setattr(obj, name, value)
    return obj


def call_hooks(obj: Any, names: list[str]) -> Any:
    """Call ``obj``'s methods ``names`` in order; returns ``obj``, or a coroutine that finishes
    the calls and returns it once one of them is ``async``."""
    for i, name in enumerate(names):
        result = getattr(obj, name)()
        if inspect.isawaitable(result):
            rest = names[i + 1:]

            async def finish(first: Any = result) -> Any:
                await first
                for other in rest:
                    more = getattr(obj, other)()
                    if inspect.isawaitable(more):
                        await more
                return obj

            return finish()
    return obj


class Dispatch:
    """The container's callable for a class: ``(method, *args, **kwargs)`` on its one instance."""

    def __init__(self, instance: Any, methods: set[str], cls_name: str) -> None:
        self.instance = instance
        self.methods = methods
        self.cls_name = cls_name

    def __call__(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        if method not in self.methods:
            raise InvalidError(
                f"class {self.cls_name} has no method {method!r} marked @apothic.method() in this version; it has "
                f"{sorted(self.methods)}. Fix: mark it and redeploy, or call one of those."
            )
        return getattr(self.instance, method)(*args, **kwargs)


def _user_class(loaded: Any) -> type:
    """The deployed class (a class pickled by reference comes back as its ``Cls`` handle)."""
    return loaded if inspect.isclass(loaded) else getattr(loaded, "raw_f", loaded)


def _traceback(e: BaseException) -> str:
    """The traceback from the first frame of user code on (as a failed input's)."""
    from ..runtime._runtime import _user_frames

    return "".join(traceback.format_exception(type(e), e, _user_frames(e.__traceback__))).rstrip()


def _log(line: str) -> None:
    print(line, flush=True)


class ClassLifecycle:
    """One container's instance of a class and its hooks (see the module's description)."""

    def __init__(self, deployment: Deployment, values: dict[str, Any]) -> None:
        self.deployment = deployment
        self.values = values
        self.instance: Any = None

    @classmethod
    async def prepare(cls, client: Any, task_queue: str, dep: Deployment) -> "ClassLifecycle | None":
        """None for a function; for a class, its lifecycle with the instance's deployment."""
        if dep.spec.cls is None:
            return None
        fleet_id = fleet_of_queue(task_queue)
        if fleet_id:  # an instance of its own: its fleet holds its parameters and options
            status: FleetStatus = await client.get_workflow_handle(fleet_id).query("status", result_type=FleetStatus)
            dep = status.deployment
        assert dep.spec.cls is not None
        return cls(dep, load_params(dep.spec.cls.parameters, dep.params))

    async def _run(self, runtime: Any, fn: Callable[[], Any], timeout: float | None) -> tuple[bool, Any]:
        """Run ``fn`` where the inputs run; its output goes to the container's log.
        Returns (ok, value or exception); raises TimeoutError after ``timeout``."""
        from ..runtime._concurrent import LoopExecutor
        from ..runtime._executor import WorkItem, read_log

        runner = runtime.runner if isinstance(runtime.runner, LoopExecutor) else runtime.executor
        item = WorkItem(fn, (), {})
        future = asyncio.wrap_future(runner.submit(item))
        done, _ = await asyncio.wait({future}, timeout=timeout)
        output = read_log(item.log_path)
        if output:
            sys.stdout.write(output if output.endswith("\n") else output + "\n")
            sys.stdout.flush()
        if not done:
            raise asyncio.TimeoutError
        runner.done_with(item)
        error = future.exception()
        return (error is None, future.result() if error is None else error)

    async def enter(self, runtime: Any) -> bool:
        """Build the instance and run the @enter methods; False (exit code set) if one failed."""
        spec = self.deployment.spec.cls
        assert spec is not None
        user_cls = _user_class(runtime.fn)
        name = self.deployment.function
        if self.deployment.spec.is_async and runtime.runner is runtime.executor:
            from ..runtime._concurrent import LoopExecutor

            # Every method is async: one event loop for the container's life, so that what
            # @enter makes on its loop (a client session, a lock) serves every input.
            runtime.runner = LoopExecutor()
        started = time.monotonic()
        if spec.enter:
            _log(f"apothic: {name}: running @enter {', '.join(spec.enter)}")
        ok, value = await self._run(runtime, lambda: call_hooks(build_instance(user_cls, self.values), spec.enter), None)
        if not ok:
            _log(f"apothic: {name}: an @enter method raised; the container stops:\n{_traceback(value)}")
            runtime.exit_code = EXIT_ENTER_FAILED
            return False
        if spec.enter:
            _log(f"apothic: {name}: @enter done in {time.monotonic() - started:.2f} s")
        self.instance = value
        runtime.fn = Dispatch(value, {m.name for m in spec.methods}, name)
        runtime._last_busy = time.monotonic()  # the idle window starts once the container can serve
        return True

    async def exit(self, runtime: Any) -> None:
        """Run the @exit methods once the last input finished (not after a failed @enter, nor
        while an input that ignored its interruption still holds the thread)."""
        spec = self.deployment.spec.cls
        if spec is None or not spec.exit or self.instance is None or runtime.stuck:
            return
        name = self.deployment.function
        _log(f"apothic: {name}: running @exit {', '.join(spec.exit)}")
        try:
            ok, value = await self._run(runtime, lambda: call_hooks(self.instance, spec.exit), EXIT_HOOKS_S)
        except asyncio.TimeoutError:
            _log(f"apothic: {name}: @exit did not finish within {EXIT_HOOKS_S:g} s; the container exits anyway")
            runtime.stuck = True  # the thread is still in user code: exit without waiting for it
            return
        if not ok:
            _log(f"apothic: {name}: an @exit method raised:\n{_traceback(value)}")
