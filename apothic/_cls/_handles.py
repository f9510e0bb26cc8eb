"""Class handles: what ``@app.cls(...)`` returns, ``Cls.from_name`` lookups, instances, methods.

A class deploys as one function of its app, named after the class, whose input names the
method (``FunctionSpec.cls`` lists the methods and parameters). ``Model(size="large")`` is an
instance; ``instance.predict`` a :class:`Method`, which calls like a function (``remote``,
``spawn``, ``map``, ...; jobs are named ``Model.predict``). Instances with parameters or option
overrides run on fleets of their own (``_identity``); the container side is ``_serve``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import TYPE_CHECKING, Any


from .._contracts import (
    ClassSpec,
    Deployment,
    FunctionSpec,
    RetrySpec,
    make_deployment,
)
from .._control._connection import ControlPlaneClient
from .._data._serialization import CloudPickled
from .._invoke._function import _Invocable, deployed_app
from .._options._names import check_name
from .._options._problems import raise_problems, show
from ..exceptions import InvalidError, NotFoundError, NotSupportedError
from ._identity import bind, instance_key, keyed, params_json
from ._inspect import describe_class
from ._serve import build_instance, call_hooks

if TYPE_CHECKING:
    from .._app import App
    from .._options._validation import FunctionOptions

# Options that are no option of one class's instances (what to do instead).
NOT_OVERRIDABLE = {
    "schedule": "schedule an @app.function that calls Model().method.remote(...)",
    "image": "decorate another class with that image (an image is built at deploy)",
    "liv": "drop it",
}
# FunctionSpec fields that are the option of the same name.
SAME_NAME = ("cpu", "memory_mb", "timeout_s", "disk_gb", "max_pending_tasks", "max_containers", "tasks_per_container")


def _validate(where: str, name: str, raw: dict[str, Any], target: Any = None) -> "FunctionOptions":
    """``@app.function``'s checks of ``raw``, worded for ``where``."""
    from .._options._validation import validate_options

    try:
        return validate_options(name, raw, target)
    except InvalidError as e:
        text, prefix = str(e), f"@app.function(...) on {name!r}"
        if text.startswith(prefix):
            raise type(e)(where + text[len(prefix):]) from None
        raise


def _unknown(where: str, options: dict[str, Any]) -> None:
    import difflib

    from .._options._validation import FunctionOptions

    unknown = sorted(set(options) - set(FunctionOptions.model_fields))
    if unknown:
        hints = {u: difflib.get_close_matches(u, FunctionOptions.model_fields, n=1) for u in unknown}
        detail = ", ".join(f"{u!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for u, h in hints.items())
        raise InvalidError(f"{where}: unknown option(s) {detail}. Allowed: {sorted(FunctionOptions.model_fields)}.")


def _problem_lines(e: InvalidError) -> list[str]:
    """The problem lines of an error raised by ``raise_problems`` (each starts with "  - ")."""
    parts = str(e).split(":\n", 1)[-1].split("\n  - ")
    return [parts[0]] + ["  - " + p for p in parts[1:]]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def override_fields(base: FunctionSpec, opts: "FunctionOptions", given: set[str]) -> dict[str, Any]:
    """The FunctionSpec fields that the options named in ``given`` set (on top of ``base``)."""
    from .._volumes._deploy import mount_specs
    from ..placement import PLACEMENT_OPTIONS

    out: dict[str, Any] = {k: getattr(opts, k) for k in SAME_NAME if k in given}
    if "concurrent_requests" in given:
        out.update(concurrent_requests=opts.concurrent_requests, target_inputs=None)
    if given & {"retries", "max_retries"}:
        r = opts.retry_policy()
        out["retry"] = RetrySpec(
            max_retries=r.max_retries, initial_delay=r.initial_delay, backoff_coefficient=r.backoff_coefficient,
            max_delay=r.max_delay, non_retryable=list(r.non_retryable),
        )
    placement = given & set(PLACEMENT_OPTIONS)
    if placement:
        merged = dict(base.placement or {})
        for k in sorted(placement):
            value = getattr(opts, k)
            if value is None:
                merged.pop(k, None)  # with_options(gpu=None) drops the class's filter
            else:
                merged[k] = value
        out["placement"] = merged or None
    if "secrets" in given:
        out["secrets"] = [s.name for s in opts.secrets or []]
    if "volumes" in given:
        out["mounts"] = mount_specs(opts.volumes)
    return out


class _NoMark:
    """A mark (``@apothic.concurrent``/``@batched``) put above ``@app.cls`` would be ignored: refused."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __get__(self, obj: Any, owner: Any = None) -> None:
        return None

    def __set__(self, obj: Any, value: Any) -> None:
        raise InvalidError(
            f"@apothic.{self.kind}(...) is placed above @app.cls(...) on {obj.name!r}, where it would be ignored. "
            f"Fix: put @app.cls(...) on top, then the mark, then the class:\n"
            f"    @app.cls(...)\n    @apothic.{self.kind}(...)\n    class {obj.name}: ..."
        )


class Cls:
    """A class of an app: what ``@app.cls(...)`` returns, or :meth:`from_name` finds.

    Calling it makes an instance (``Model(size="large")``, keyword parameters only), whose
    ``@apothic.method()`` methods are called remotely: ``Model().predict.remote(x)``.
    """

    __apothic_concurrent__ = _NoMark("concurrent")
    __apothic_batched__ = _NoMark("batched")

    def __init__(
        self,
        app_name: str,
        name: str,
        cp: ControlPlaneClient,
        *,
        app: "App | None" = None,
        raw: type | None = None,
        spec: ClassSpec | None = None,
        options: "FunctionOptions | None" = None,
        raw_options: dict[str, Any] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.app_name = app_name
        self.name = name
        self.__name__ = name
        self._cp = cp
        self.app = app
        self.raw_f = raw  # the user's class (None for a lookup by name)
        self.spec = spec
        self.options = options
        self._raw_options = raw_options
        self._overrides = dict(overrides or {})  # with_options(...) so far, as given
        self._override_opts: FunctionOptions | None = None
        if raw is not None:
            self.__doc__ = raw.__doc__
            self.__qualname__ = raw.__qualname__
            self.__module__ = raw.__module__
            self.__wrapped__ = raw

    # --- what App's deploy reads, as of an @app.function handle ---

    @property
    def function_name(self) -> str:
        return self.name

    def deploy_spec(self, spec: FunctionSpec) -> FunctionSpec:
        """The class's FunctionSpec: its methods and parameters; ``is_async`` when every method
        is (its container then runs every input on one event loop, ``_serve``)."""
        assert self.spec is not None
        methods = self.spec.methods
        return dataclasses.replace(
            spec, cls=self.spec, is_async=all(m.is_async for m in methods), is_generator=False
        )

    # --- the public surface ---

    @classmethod
    def from_name(
        cls, app_name: str, name: str, *, client: ControlPlaneClient | None = None, base_url: str | None = None
    ) -> "Cls":
        """A handle on the class ``name`` of the deployed app ``app_name`` (no I/O here).

        Methods, parameters and option overrides are checked against the deployed class when
        a method is called (NotFoundError when the app, the class or the method is missing).
        """
        check_name("app", app_name)
        check_name("class", name)
        if client is not None and base_url is not None:
            raise InvalidError("give client= or base_url=, not both. Fix: drop one of them.")
        return cls(app_name, name, client or ControlPlaneClient(base_url))

    def __call__(self, *args: Any, **params: Any) -> "ClsInstance":
        if args:
            raise InvalidError(
                f"{self.name}({', '.join(show(a) for a in args)}): parameters are passed by name. "
                f"Fix: write e.g. {self.name}(size={show(args[0])})."
            )
        values = None
        if self.spec is not None:  # checked now; a lookup by name is checked at the call
            values = bind(f"{self.name}(...)", self.spec.parameters, params)
        return ClsInstance(self, params, values)

    def with_options(self, **options: Any) -> "Cls":
        """A handle on the same class with options overridden (``gpu=``, ``timeout_s=``,
        ``max_containers=``, ... any option of ``@app.function`` but ``schedule``, ``image``
        and ``liv``), checked now as the decorator checks them. Its instances run on fleets
        of their own; calling it again adds to the overrides."""
        where = f"{self.name}.with_options(...)"
        _unknown(where, options)
        refused = sorted(set(options) & set(NOT_OVERRIDABLE))
        if refused:
            raise InvalidError(
                f"{where}: {', '.join(refused)} cannot be overridden per instance. Fix: "
                + "; ".join(f"{k}: {NOT_OVERRIDABLE[k]}" for k in refused) + "."
            )
        overrides = {**self._overrides, **options}
        if self._raw_options is not None:  # all the class's options, as one decorator would take them
            raw = dict(self._raw_options)
            if overrides.keys() & {"retries", "max_retries"}:
                raw.pop("retries", None)
                raw.pop("max_retries", None)
            opts = _validate(where, self.name, {**raw, **overrides}, self.raw_f)
        else:
            opts = _validate(where, self.name, overrides)
        other = Cls(
            self.app_name, self.name, self._cp, app=self.app, raw=self.raw_f, spec=self.spec,
            options=self.options, raw_options=self._raw_options, overrides=overrides,
        )
        other._override_opts = opts
        return other

    def _fields(self, base: FunctionSpec) -> dict[str, Any]:
        if not self._overrides or self._override_opts is None:
            return {}
        return override_fields(base, self._override_opts, set(self._overrides))

    def __repr__(self) -> str:
        extra = f" with {sorted(self._overrides)}" if self._overrides else ""
        return f"<apothic.Cls {self.app_name}.{self.name}{extra}>"


class ClsInstance:
    """An instance of a class (its parameter values); its methods are :class:`Method` handles."""

    def __init__(self, cls: Cls, params: dict[str, Any], values: dict[str, Any] | None) -> None:
        self._cls = cls
        self._params = params
        self._values = values
        self._handles: dict[str, Method] = {}
        self._local: Any = None

    def __getattr__(self, name: str) -> "Method":
        if name.startswith("_"):
            raise AttributeError(name)
        spec = self._cls.spec
        if spec is not None and name not in {m.name for m in spec.methods}:
            raise AttributeError(
                f"class {self._cls.name} has no method {name!r} marked @apothic.method(); it has "
                f"{sorted(m.name for m in spec.methods)}. Fix: mark it with @apothic.method(), or call one of those."
            )
        if name not in self._handles:
            self._handles[name] = Method(self, name)
        return self._handles[name]

    def _local_object(self) -> Any:
        """The instance of the user's class in this process (its @enter methods run once)."""
        if self._local is None:
            raw, spec = self._cls.raw_f, self._cls.spec
            if raw is None or spec is None or self._values is None:
                raise InvalidError(
                    f"{self._cls.name} was looked up by name: its code is not in this process. "
                    "Fix: call its methods with .remote(...), or import the app's file to run them locally."
                )
            obj = call_hooks(build_instance(raw, self._values), spec.enter)
            if inspect.isawaitable(obj):
                import asyncio

                obj = asyncio.run(obj)
            self._local = obj
        return self._local

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={show(v)}" for k, v in sorted(self._params.items()))
        return f"<apothic.Cls {self._cls.app_name}.{self._cls.name}({shown})>"


class Method(_Invocable[..., Any]):
    """One method of one instance: ``remote``, ``spawn``, ``map``, ``starmap``, ``for_each``,
    ``spawn_map``, ``remote_gen``, ``remote_events`` and their ``.aio`` forms, as for a function;
    ``local(...)`` (or a plain call) runs it here. Its jobs are named ``<Class>.<method>``."""

    def __init__(self, instance: ClsInstance, name: str) -> None:
        cls = instance._cls
        super().__init__(cls.app_name, f"{cls.name}.{name}", cls._cp)
        self._instance = instance
        self.method_name = name

    def _pack(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CloudPickled:
        return super()._pack((self.method_name, *args), kwargs)  # the container's Dispatch takes the name first

    async def _resolve(self) -> Deployment:
        """The instance's deployment: the class's current version, the method's flags, the
        instance's own queue and fleet (``_identity``)."""
        cls = self._instance._cls
        settings = self._cp.settings
        memo, where = await deployed_app(self._cp, cls.app_name)
        spec = next((s for s in memo.functions if s.name == cls.name), None)
        if spec is None or spec.cls is None:
            what = "is a function, not a class" if spec is not None else "is not in it"
            fix = (f"apothic.RemoteFunction.from_name({cls.app_name!r}, {cls.name!r})" if spec is not None
                   else "check the name, or redeploy the app")
            raise NotFoundError(
                f"app {cls.app_name!r} (version {memo.version}) has no class {cls.name!r} {where}: it {what}. "
                f"Its classes: {sorted(s.name for s in memo.functions if s.cls is not None)}. Fix: {fix}."
            )
        method = next((m for m in spec.cls.methods if m.name == self.method_name), None)
        if method is None:
            raise NotFoundError(
                f"class {cls.name!r} of app {cls.app_name!r} (version {memo.version}) has no method "
                f"{self.method_name!r} {where}; it has {sorted(m.name for m in spec.cls.methods)}. "
                "Fix: check the name, or mark it @apothic.method() and redeploy."
            )
        values = bind(f"{cls.name}(...)", spec.cls.parameters, self._instance._params)
        params = params_json(spec.cls.parameters, values)
        fields = cls._fields(spec)
        key = instance_key(params, {k: _plain(v) for k, v in fields.items()})
        spec = dataclasses.replace(spec, **fields, is_generator=method.is_generator)
        w = settings.worker
        dep = keyed(make_deployment(cls.app_name, spec, memo.version, w.startup_timeout_s, w.container_idle_s),
                    key, params)
        self._last_dep = dep
        return dep

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Run the method in this process, on this instance (its @enter methods ran once first)."""
        return getattr(self._instance._local_object(), self.method_name)(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.local(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<apothic.Method {self.app_name}.{self.function_name} of {self._instance!r}>"


def register_class(app: "App", target: Any, options: dict[str, Any]) -> Any:
    """``@app.cls(**options)``: check the options now, then the class when it is decorated."""
    if target is not None:
        if inspect.isclass(target):
            raise InvalidError(
                f"@app.cls was used without parentheses on {target.__name__!r}. "
                "Did you forget parentheses? Fix: write `@app.cls()`."
            )
        raise InvalidError(
            f"@app.cls takes keyword options only, got the positional value {show(target)}. "
            "Fix: name the option, e.g. `@app.cls(timeout_s=60)`."
        )
    _unknown("@app.cls(...)", options)

    def decorate(user_cls: Any) -> Cls:
        if isinstance(user_cls, Cls):
            raise InvalidError(f"{user_cls.name!r} is already an app class. Fix: decorate it once.")
        if not inspect.isclass(user_cls):
            what = "a function: use @app.function(...)" if callable(user_cls) else show(user_cls)
            raise InvalidError(f"@app.cls(...) decorates a class, got {what}. Fix: put it on a `class`.")
        name = check_name("class", user_cls.__name__)
        where = f"@app.cls(...) on {name!r}"
        spec, problems, unsupported = describe_class(user_cls)
        opts: FunctionOptions | None = None
        if "schedule" in options and options["schedule"] is not None:
            problems.append(
                f"  - schedule = {show(options['schedule'])}: a schedule calls a function with no arguments, a class "
                "has methods; allowed: None. Fix: schedule an @app.function that calls "
                f"{name}().<method>.remote(...)."
            )
        if options.get("liv") is not None:
            problems.append(
                f"  - liv = {show(options['liv'])}: liv generates the body of a function from its stub; a class's "
                "methods are its own code; allowed: None. Fix: drop liv=..., or generate the code as an "
                "@app.function and call it from a method."
            )
        defaults = getattr(app, "_defaults", {})  # App(name, image=..., secrets=..., volumes=...)
        given = {**{k: v for k, v in defaults.items() if k not in options}, **options}
        raw = {k: v for k, v in given.items() if k not in ("schedule", "liv")}
        try:
            opts = _validate(where, name, raw, user_cls)
        except NotSupportedError as e:
            unsupported += _problem_lines(e)
        except InvalidError as e:
            problems += _problem_lines(e)
        raise_problems(where, problems + unsupported, InvalidError if problems else NotSupportedError)
        assert opts is not None
        if name in app._functions:
            raise InvalidError(f"app {app.name!r} already has a function or class named {name!r}. Fix: rename one.")
        handle = Cls(app.name, name, app._cp, app=app, raw=user_cls, spec=spec, options=opts, raw_options=raw)
        app._functions[name] = handle  # type: ignore[assignment] - deployed as one function (deploy_spec)
        return handle

    return decorate
