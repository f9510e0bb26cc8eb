"""``App``: a named group of functions, deployed together as one version."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import inspect
import json
import sys
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, overload

import cloudpickle
from temporalio.client import WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy

from ._contracts import (
    APP_WORKFLOW,
    AppState,
    DeployFunction,
    DeployRequest,
    DeployResult,
    FunctionSpec,
    RetrySpec,
    app_workflow_id,
)
from ._control._client import get_client
from ._control._connection import ControlPlaneClient
from ._control._loop import AioNamespace, synced
from ._data._digest import canonical_module, code_digest
from ._data._code import dump_code
from ._data._serialization import MAX_INLINE_BYTES, CloudPickled
from ._invoke._function import Function, check_name
from ._options._resources import Cron, LivConfig, Period, Retries, Secret, StorageMount
from ._options._concurrency import concurrency_spec
from ._options._problems import show
from ._options._validation import FunctionOptions, placement_options, validate_options
from ._schedule._schedules import schedule_config
from ._volumes._deploy import check_deploy_volumes, mount_specs
from .exceptions import ApothicError, InvalidError

P = ParamSpec("P")
R = TypeVar("R")

# How long deploy waits for a control worker to take the update.
DEPLOY_TIMEOUT_S = 60.0


@dataclasses.dataclass(frozen=True)
class AppDeployment:
    """What ``app.deploy()`` returns.

    Attributes:
        app: the app's name.
        version: the version now current (new calls run it).
        created: False when the code was identical to the current version (nothing changed).
        functions: the functions of that version.
    """

    app: str
    version: int
    created: bool
    functions: tuple[str, ...]


def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(str(Path(paths[k]).resolve()) for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths)


def _user_roots() -> list[str]:
    """Top-level modules of the user's own code (not installed, not apothic): pickled by value,
    so that a container needs none of the user's files."""
    installed = _installed_roots()
    roots = set()
    for name, mod in list(sys.modules.items()):
        top = name.split(".")[0]
        if top in roots or top in ("apothic", "__main__") or "." in name:
            continue
        path = getattr(mod, "__file__", None)
        if not path:
            continue
        resolved = str(Path(path).resolve())
        if not resolved.startswith(installed) and "site-packages" not in resolved:
            roots.add(top)
    return sorted(roots)


@contextlib.contextmanager
def _user_code_by_value() -> Iterator[None]:
    """While inside, cloudpickle pickles the user's own modules by value."""
    registered = []
    for root in _user_roots():
        try:
            cloudpickle.register_pickle_by_value(sys.modules[root])
            registered.append(root)
        except (ValueError, KeyError):
            pass
    try:
        yield
    finally:
        for root in registered:
            cloudpickle.unregister_pickle_by_value(sys.modules[root])


def pickle_function(fn: Callable[..., Any]) -> tuple[CloudPickled, str]:
    """Pickle a user function by value, with the user's own modules it uses.

    Returns the pickle and the digest of its code (:func:`code_digest`: the same for the same
    code whether the file ran as a script or was loaded by ``apothic deploy``).
    """
    with _user_code_by_value():
        try:
            code = dump_code(fn)  # code objects keep their file names; their files' source goes along
        except Exception as e:  # noqa: BLE001
            raise InvalidError(
                f"function {fn.__qualname__} cannot be pickled for deploy: {e}. Fix: keep module-level state the "
                "function uses picklable (no open files, locks or clients at import time)."
            ) from None
        return code, code_digest(fn, fallback=code.sha256)


class App:
    """A named group of functions deployed together.

    Args:
        name: 1-63 letters, digits, ``_``, ``-`` or ``.``.
        client: the control plane to deploy to (default: the settings in force).
    """

    aio = AioNamespace.descriptor()

    def __init__(self, name: str, *, client: ControlPlaneClient | None = None) -> None:
        self.name = check_name("app", name)
        self._cp = client or ControlPlaneClient()
        self._functions: dict[str, Function[Any, Any]] = {}

    def __repr__(self) -> str:
        return f"App({self.name!r}, functions={sorted(self._functions)})"

    @property
    def registered_functions(self) -> dict[str, Function[Any, Any]]:
        return dict(self._functions)

    @overload
    def function(self, _fn: Callable[P, R], /) -> Function[P, R]: ...

    @overload
    def function(
        self,
        _fn: None = None,
        /,
        *,
        schedule: Cron | Period | None = None,
        liv: LivConfig | dict[str, Any] | tuple[Any, ...] | None = None,
        gpu: str | list[str] | None = None,
        gpu_count: int | None = None,
        min_vram_gb: int | None = None,
        geolocation: str | list[str] | None = None,
        offer_filters: dict[str, dict[str, Any]] | None = None,
        max_cost_per_hour_usd: float | None = None,
        max_cost_per_tflop_hour_usd: float | None = None,
        min_total_flops: float | None = None,
        min_gpu_ram_bandwidth_gbps: float | None = None,
        min_cpu_cores: float | None = None,
        min_cpu_ram_gb: float | None = None,
        min_cpu_ghz: float | None = None,
        min_disk_bandwidth_mb_s: float | None = None,
        min_internet_upload_mbps: float | None = None,
        min_internet_download_mbps: float | None = None,
        secure_cloud_only: bool | None = None,
        cpu: int = 1,
        memory_mb: int = 1024,
        disk_gb: float | None = None,
        timeout_s: int = 600,
        retries: int | Retries | None = None,
        max_retries: int = 0,
        concurrent_requests: int = 1,
        max_pending_tasks: int = 100,
        max_containers: int = 1,
        tasks_per_container: int = 1,
        image: Any = None,
        secrets: list[Secret] | None = None,
        volumes: dict[str, StorageMount] | list[StorageMount] | None = None,
    ) -> Callable[[Callable[P, R]], Function[P, R]]: ...

    def function(self, _fn: Any = None, /, **options: Any) -> Any:
        """Register a function of this app (see the API reference for every option).

        Options are validated now, all at once: a bad value raises :class:`InvalidError`
        with its location, the value, the allowed range and the fix; an option whose
        behaviour is not built yet raises :class:`NotSupportedError`.
        """
        if _fn is not None:
            if callable(_fn):
                raise InvalidError(
                    f"@app.function was used without parentheses on {show(getattr(_fn, '__name__', _fn))}. "
                    "Did you forget parentheses? Fix: write `@app.function()`."
                )
            raise InvalidError(
                f"@app.function takes keyword options only, got the positional value {show(_fn)}. "
                "Fix: name the option, e.g. `@app.function(timeout_s=60)`."
            )
        unknown = sorted(set(options) - set(FunctionOptions.model_fields))
        if unknown:
            import difflib

            hints = {u: difflib.get_close_matches(u, FunctionOptions.model_fields, n=1) for u in unknown}
            detail = ", ".join(f"{u!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for u, h in hints.items())
            raise InvalidError(
                f"@app.function(...): unknown option(s) {detail}. Allowed: {sorted(FunctionOptions.model_fields)}."
            )

        def decorate(fn: Callable[P, R]) -> Function[P, R]:
            if isinstance(fn, Function):
                raise InvalidError(f"{fn.__name__!r} is already an app function. Fix: decorate it once.")
            if not callable(fn) or not hasattr(fn, "__name__"):
                raise InvalidError(f"@app.function(...) decorates a function, got {show(fn)}. Fix: put it on a `def`.")
            name = check_name("function", fn.__name__)
            opts = validate_options(name, options, fn)
            if name in self._functions:
                raise InvalidError(f"app {self.name!r} already has a function named {name!r}. Fix: rename one.")
            handle: Function[P, R] = Function(self, fn, opts)
            self._functions[name] = handle
            return handle

        return decorate

    def _spec(self, fn: Function[Any, Any]) -> FunctionSpec:
        o = fn.options
        r = o.retry_policy()
        return FunctionSpec(
            name=fn.function_name,
            qualname=fn.__qualname__,
            module=canonical_module(fn.__module__),
            cpu=o.cpu,
            memory_mb=o.memory_mb,
            timeout_s=o.timeout_s,
            retry=RetrySpec(
                max_retries=r.max_retries,
                initial_delay=r.initial_delay,
                backoff_coefficient=r.backoff_coefficient,
                max_delay=r.max_delay,
                non_retryable=list(r.non_retryable),
            ),
            **concurrency_spec(fn.raw_f, o.concurrent_requests),  # concurrent_requests, target_inputs, batch
            max_pending_tasks=o.max_pending_tasks,
            max_containers=o.max_containers,
            tasks_per_container=o.tasks_per_container,
            is_async=inspect.iscoroutinefunction(fn.raw_f) or inspect.isasyncgenfunction(fn.raw_f),
            is_generator=inspect.isgeneratorfunction(fn.raw_f) or inspect.isasyncgenfunction(fn.raw_f),
            image=o.image.to_dict() if o.image is not None else None,
            placement=placement_options(o) or None,
            schedule=schedule_config(o.schedule),
            disk_gb=o.disk_gb,
            provider="",
            secrets=[s.name for s in o.secrets or []],  # names only: values are read where a container starts
            mounts=mount_specs(o.volumes),
        )

    def _deploy_request(self) -> DeployRequest:
        if not self._functions:
            raise InvalidError(f"app {self.name!r} has no functions. Fix: decorate one with @app.function().")
        functions = []
        digest = hashlib.sha256()
        for name in sorted(self._functions):
            fn = self._functions[name]
            spec = self._spec(fn)
            code, code_hash = pickle_function(fn.raw_f)
            functions.append(DeployFunction(spec=spec, code=code))
            digest.update(json.dumps(dataclasses.asdict(spec), sort_keys=True).encode())
            digest.update(code_hash.encode())
        total = sum(f.code.size for f in functions)
        if total > MAX_INLINE_BYTES:
            raise InvalidError(
                f"app {self.name!r} pickles to {total / 1e6:.1f} MB; at most {MAX_INLINE_BYTES / 1e6:.1f} MB deploy "
                "inline. Fix: keep large data out of module globals the functions use."
            )
        return DeployRequest(app=self.name, functions=functions, code_hash=digest.hexdigest())

    @synced
    async def deploy(self) -> AppDeployment:
        """Deploy every function of this app as a new version (durable; survives restarts).

        Identical code redeploys to the current version. New calls run the new version;
        calls already running finish on the version they started on.
        """
        req = self._deploy_request()
        settings = self._cp.settings
        await check_deploy_volumes(settings, req)  # missing volumes fail here, named, with the fix
        client = await get_client(settings)
        start = WithStartWorkflowOperation(
            APP_WORKFLOW,
            AppState(app=self.name),
            id=app_workflow_id(self.name),
            task_queue=settings.worker.control_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"app {self.name}",
        )
        try:
            res: DeployResult = await asyncio.wait_for(
                client.execute_update_with_start_workflow(
                    "deploy", req, start_workflow_operation=start, result_type=DeployResult
                ),
                DEPLOY_TIMEOUT_S,
            )
        except asyncio.TimeoutError:
            raise ApothicError(
                f"deploying {self.name!r}: no control worker answered within {DEPLOY_TIMEOUT_S:g} s on task queue "
                f"{settings.worker.control_task_queue!r} at {settings.address}. Fix: start one with `apothic worker` "
                "(or `apothic dev`)."
            ) from None
        except WorkflowUpdateFailedError as e:
            raise InvalidError(f"deploying {self.name!r} was refused: {e.cause or e}") from None
        return AppDeployment(app=res.app, version=res.version, created=res.created, functions=tuple(res.functions))
