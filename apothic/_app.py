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
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar, overload

import cloudpickle
from temporalio.client import WithStartWorkflowOperation, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from ._contracts import (
    APP_MEMO_KEY,
    APP_WORKFLOW,
    AppMemo,
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
from ._invoke._apps import APPS, AppManager
from ._invoke._entrypoint import LocalEntrypoint
from ._invoke._function import Function, check_name
from ._liv._deploy import freeze_generated, frozen_code, frozen_record
from ._options._resources import Cron, LivConfig, Period, Retries, Secret, StorageMount
from ._options._concurrency import concurrency_spec
from ._options._problems import show
from ._options._validation import FunctionOptions, placement_options, validate_options
from ._schedule._schedules import schedule_config
from ._trace import ATTR_APP, span
from ._volumes._deploy import check_deploy_volumes, mount_specs
from .exceptions import ApothicError, InvalidError

if TYPE_CHECKING:
    from ._invoke._ephemeral import AppRun

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


# The options an App gives every function that does not set its own.
APP_DEFAULTS = ("image", "secrets", "volumes")


def _app_defaults(name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """``App(name, image=..., secrets=..., volumes=...)`` checked as the decorator checks them."""
    from ._options._problems import raise_problems
    from ._options._storage import storage_problems, workdir_problems
    from ._options._validation import _check_model

    given = {k: v for k, v in raw.items() if v is not None}
    opts, refused = _check_model(given)
    problems = list(refused.values())
    if not refused:
        problems += storage_problems(opts.secrets, opts.volumes) + workdir_problems(opts.image, opts.volumes)
    raise_problems(f"App({name!r}, ...)", problems)
    return given


class App:
    """A named group of functions deployed together.

    Args:
        name: 1-63 letters, digits, ``_``, ``-`` or ``.``.
        image, secrets, volumes: defaults for every function of the app that does not set its
            own (a function's own value replaces the app's; nothing is merged).
        client: the control plane to deploy to (default: the settings in force).

    ``App.objects`` lists the deployed apps, stops their containers and removes them
    (``App.objects.list()``, ``.stop(name)``, ``.remove(name)``; ``apothic apps``).
    """

    aio = AioNamespace.descriptor()
    objects: ClassVar[AppManager] = APPS

    def __init__(
        self,
        name: str,
        *,
        image: Any = None,
        secrets: list[Secret] | None = None,
        volumes: dict[str, StorageMount] | list[StorageMount] | None = None,
        client: ControlPlaneClient | None = None,
    ) -> None:
        self.name = check_name("app", name)
        self._defaults = _app_defaults(self.name, {"image": image, "secrets": secrets, "volumes": volumes})
        self.image = image
        self.secrets = list(secrets) if secrets is not None else None
        self.volumes = volumes
        self._cp = client or ControlPlaneClient()
        self._functions: dict[str, Function[Any, Any]] = {}
        self._entrypoints: dict[str, LocalEntrypoint] = {}

    def __repr__(self) -> str:
        return f"App({self.name!r}, functions={sorted(self._functions)})"

    @property
    def registered_functions(self) -> dict[str, Function[Any, Any]]:
        return dict(self._functions)

    @property
    def registered_entrypoints(self) -> dict[str, LocalEntrypoint]:
        return dict(self._entrypoints)

    def local_entrypoint(self, _fn: Any = None, /, *, name: str | None = None) -> Callable[[Callable[P, R]], Any]:
        """Register a function that runs on this machine while the app is live.

        ``apothic run app.py`` (or ``app.py::NAME``) deploys the app for the run, calls the
        entrypoint with its parameters taken from command-line flags (``--n 5``), shows what
        the app's functions print, and removes the app when the entrypoint returns. The
        entrypoint may be ``async def``. The decorated function stays callable as it was.
        """
        if _fn is not None:
            raise InvalidError(
                f"@app.local_entrypoint was used without parentheses on {show(getattr(_fn, '__name__', _fn))}. "
                "Fix: write `@app.local_entrypoint()`."
            )
        if name is not None:
            check_name("entrypoint", name)

        def decorate(fn: Callable[P, R]) -> Any:
            if isinstance(fn, (Function, LocalEntrypoint)) or not callable(fn) or not hasattr(fn, "__name__"):
                raise InvalidError(
                    f"@app.local_entrypoint() decorates a plain function, got {show(fn)}. Fix: put it on a `def`."
                )
            entry_name = name or fn.__name__
            if entry_name in self._entrypoints:
                raise InvalidError(
                    f"app {self.name!r} already has a local entrypoint named {entry_name!r}. "
                    "Fix: rename one, or give it `name=`."
                )
            entry = LocalEntrypoint(self, fn, entry_name)
            self._entrypoints[entry_name] = entry
            return entry

        return decorate

    def run(self, *, detach: bool = False) -> "AppRun":
        """Deploy the app for the duration of a ``with`` block (``async with`` works too).

        Inside, the app's functions can be called and what they print shows on this terminal
        (as after :func:`apothic.enable_output`). When the block ends, the run cancels the
        app's running jobs and removes the app: its schedules, fleets and containers are gone.
        With ``detach=True`` the app stays deployed instead, as after :meth:`deploy`. An app
        already deployed with :meth:`deploy` (or ``apothic deploy``) gets the run's code as a
        new version and stays deployed.
        """
        from ._invoke._ephemeral import AppRun

        if not isinstance(detach, bool):
            raise InvalidError(f"app.run(detach={detach!r}): allowed: True or False. Fix: pass a bool.")
        return AppRun(self, detach=detach)

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
            given = {**{k: v for k, v in self._defaults.items() if k not in options}, **options}
            opts = validate_options(name, given, fn)
            if name in self._functions:
                raise InvalidError(f"app {self.name!r} already has a function named {name!r}. Fix: rename one.")
            handle: Function[P, R] = Function(self, fn, opts)
            self._functions[name] = handle
            return handle

        return decorate

    def cls(self, _cls: Any = None, /, **options: Any) -> Any:
        """Register a class of this app; it takes the options of :meth:`function`.

        Its ``@apothic.method()`` methods are called remotely (``Model().predict.remote(x)``),
        its ``@apothic.enter()``/``@apothic.exit()`` methods run as each container starts and
        drains, and its ``apothic.parameter()`` attributes make instances with containers of
        their own (``Model(size="large")``). See ``apothic/_cls``.
        """
        from ._cls._handles import register_class

        return register_class(self, _cls, options)

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
            if hasattr(fn, "deploy_spec"):  # a class (@app.cls): its methods and parameters
                spec = fn.deploy_spec(spec)
            code, code_hash = frozen_code(fn) or pickle_function(fn.raw_f)  # @apothic.liv: the generated code
            functions.append(DeployFunction(spec=spec, code=code, liv=frozen_record(fn)))
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
        with span(f"apothic.deploy {self.name}", {ATTR_APP: self.name}):  # apothic/_trace
            deployment, _ = await self._deploy(ephemeral=False)
        return deployment

    async def _deploy(self, *, ephemeral: bool) -> tuple[AppDeployment, bool]:
        """Deploy; returns the deployment and whether it is the run's own (``ephemeral`` and the
        app was not deployed persistently before: only then does the run remove it)."""
        await freeze_generated(self)  # @apothic.liv functions: generated (or taken from the cache) first
        req = self._deploy_request()
        settings = self._cp.settings
        await check_deploy_volumes(settings, req)  # missing volumes fail here, named, with the fix
        client = await get_client(settings)
        memo, running = await read_app_memo(client, self.name)
        persistent = running and memo is not None and memo.version > 0 and not memo.removed and not memo.ephemeral
        own = ephemeral and not persistent
        req = dataclasses.replace(req, ephemeral=own)
        start = WithStartWorkflowOperation(
            APP_WORKFLOW,
            # A registry that ended (the app was removed): numbers go on from its last version.
            AppState(app=self.name, versions_before=memo.version if memo is not None and not running else 0),
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
        deployment = AppDeployment(app=res.app, version=res.version, created=res.created, functions=tuple(res.functions))
        return deployment, own


async def read_app_memo(client: Any, name: str) -> tuple[AppMemo | None, bool]:
    """The app registry's memo (None: never deployed) and whether the registry still runs
    (an app that was removed has ended)."""
    try:
        desc = await client.get_workflow_handle(app_workflow_id(name)).describe()
    except RPCError as e:
        if e.status != RPCStatusCode.NOT_FOUND:
            raise
        return None, False
    memo: AppMemo | None = await desc.memo_value(APP_MEMO_KEY, None, type_hint=AppMemo)
    return memo, desc.status == WorkflowExecutionStatus.RUNNING
