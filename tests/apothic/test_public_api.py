"""The public surface is frozen: names, signatures (checked against the API reference), and
the packages' import rules."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import apothic

ROOT = Path(__file__).resolve().parents[2]

PUBLIC = [
    "ApothicError", "App", "AppDeployment", "AppInfo", "CallTimeoutError", "CloudBucketMount", "Cls", "ControlPlaneClient", "Cron", "Dict",
    "Function", "FunctionTimeoutError", "Image", "InvalidError", "Job", "JobCancelledError", "JobEvent", "JobStatus",
    "LivConfig", "LivError", "LocalEntrypoint",
    "NotFoundError", "NotSupportedError", "PendingLimitError", "Period", "PlacementError", "Queue", "RemoteError", "RemoteFunction", "Retries",
    "Secret", "SecretInfo", "StorageMount", "Volume", "batched", "checkpoint", "concurrent", "current_job_id",
    "enable_output", "enter", "exit", "is_local", "last_checkpoint", "liv", "method", "parameter",
]


def test_public_names_are_frozen_and_sorted() -> None:
    assert apothic.__all__ == sorted(apothic.__all__)
    assert apothic.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(apothic, name) is not None


def test_job_and_function_surfaces() -> None:
    for name in ("status", "logs", "wait", "cancel", "watch"):
        assert callable(getattr(apothic.Job, name))
    for name in ("remote", "spawn", "remote_gen", "remote_events", "spawn_map", "map", "starmap", "for_each"):
        assert callable(getattr(apothic.RemoteFunction, name))
        assert callable(getattr(apothic.Function, name))


def imported_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


def test_the_sdk_never_imports_the_backend_packages() -> None:
    mods = imported_after("import apothic")
    assert not {m for m in mods if m.startswith(("apothic.workflows", "apothic.activities", "apothic.worker"))}


def imports_of(folder: str, exclude: str = "") -> set[str]:
    """Every module a package's files import (statically, from their source)."""
    names: set[str] = set()
    for path in (ROOT / folder).rglob("*.py"):
        if exclude and (ROOT / exclude) in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return names


def test_placement_is_pure() -> None:
    pure = {n.split(".")[0] for n in imports_of("placement", exclude="placement/providers")}
    providers = {n.split(".")[0] for n in imports_of("placement/providers")}
    assert not pure & {"temporalio", "httpx", "docker", "boto3", "pydantic", "cloudpickle", "apothic"}, pure
    # Providers talk to their backends but not to Temporal.
    assert "temporalio" not in providers


def test_workflows_import_only_temporal_and_the_contracts() -> None:
    allowed_apothic = {"apothic._contracts", "apothic._data._serialization"}
    for name in imports_of("workflows"):
        top = name.split(".")[0]
        assert top in {"temporalio", "apothic", "__future__", "asyncio", "math", "datetime", "dataclasses", "typing", "collections"}, name
        if top == "apothic":
            assert name in allowed_apothic, name


# --- Signatures: the API reference's contract, and today's exact signatures -----------------

# The signatures the API reference prints, verbatim ("Core signatures"). Every parameter it
# names must exist with the same kind, default and annotation; the SDK may add parameters only
# as keyword-only ones with a default (every call the reference shows still works).
REFERENCE = {
    "App.function": """(
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
        image: Image | None = None,
        secrets: list[Secret] | None = None,
        volumes: dict[str, StorageMount] | list[StorageMount] | None = None,
    )""",
    "RemoteFunction.from_name": """(
        app_name: str,
        function_name: str,
        *,
        client: ControlPlaneClient | None = None,
        base_url: str | None = None,
    ) -> RemoteFunction""",
    "fn.remote": "(*args, timeout_s: float = 600.0, **kwargs) -> Any",
    "fn.spawn": "(*args, **kwargs) -> Job",
    "fn.remote_gen": "(*args, timeout_s: float = 600.0, **kwargs)",
    "fn.remote_events": (
        "(*args, snapshot: bool = False, event_types: list[str] | tuple[str, ...] | None = None, **kwargs)"
    ),
    "fn.spawn_map": "(items: Iterable[Any]) -> list[Job]",
    "fn.map": "(items: Iterable[Any], *, timeout_s: float = 600.0) -> list[Any]",
    "fn.starmap": "(items: Iterable[Any], *, timeout_s: float = 600.0) -> list[Any]",
    "fn.for_each": "(items: Iterable[Any], *, timeout_s: float = 600.0) -> None",
}

# Where the SDK's annotation differs from the reference's today, the SDK's exact text. Each is a
# known deviation: when the SDK comes to match the reference, this test fails; drop the entry.
ANNOTATION_DEVIATIONS = {
    ("App.function", "image"): "Any",  # reference: Image | None
    ("RemoteFunction.from_name", "return"): "'RemoteFunction'",  # a quoted annotation inside a string one
    ("fn.remote_events", "event_types"): "Iterable[str] | None",  # reference: list[str] | tuple[str, ...] | None
}

# Today's exact signatures of every public callable the reference names (``self`` included for
# methods; ``Function`` and ``RemoteFunction`` share the ``fn.*`` rows). A change to any of
# them is a change of the public API: update this table on purpose, and the reference with it.
SIGNATURES = {
    "App": (
        "(name: str, *, image: Any = None, secrets: list[Secret] | None = None, "
        "volumes: dict[str, StorageMount] | list[StorageMount] | None = None, "
        "client: ControlPlaneClient | None = None) -> None"
    ),
    "App.function": (
        "(self, _fn: None = None, /, *, schedule: Cron | Period | None = None, "
        "liv: LivConfig | dict[str, Any] | tuple[Any, ...] | None = None, gpu: str | list[str] | None = None, "
        "gpu_count: int | None = None, min_vram_gb: int | None = None, geolocation: str | list[str] | None = None, "
        "offer_filters: dict[str, dict[str, Any]] | None = None, max_cost_per_hour_usd: float | None = None, "
        "max_cost_per_tflop_hour_usd: float | None = None, min_total_flops: float | None = None, "
        "min_gpu_ram_bandwidth_gbps: float | None = None, min_cpu_cores: float | None = None, "
        "min_cpu_ram_gb: float | None = None, min_cpu_ghz: float | None = None, "
        "min_disk_bandwidth_mb_s: float | None = None, min_internet_upload_mbps: float | None = None, "
        "min_internet_download_mbps: float | None = None, secure_cloud_only: bool | None = None, cpu: int = 1, "
        "memory_mb: int = 1024, disk_gb: float | None = None, timeout_s: int = 600, "
        "retries: int | Retries | None = None, max_retries: int = 0, concurrent_requests: int = 1, "
        "max_pending_tasks: int = 100, max_containers: int = 1, tasks_per_container: int = 1, image: Any = None, "
        "secrets: list[Secret] | None = None, volumes: dict[str, StorageMount] | list[StorageMount] | None = None)"
        " -> Callable[[Callable[P, R]], Function[P, R]]"
    ),
    "App.deploy": "(self) -> AppDeployment",
    "RemoteFunction.from_name": (
        "(app_name: str, function_name: str, *, client: ControlPlaneClient | None = None, "
        "base_url: str | None = None) -> 'RemoteFunction'"
    ),
    "fn.remote": "(self, *args: Any, timeout_s: float = 600.0, **kwargs: Any) -> Any",
    "fn.spawn": "(self, *args: Any, idempotency_key: str | None = None, **kwargs: Any) -> Job",
    "fn.remote_gen": "(self, *args: Any, timeout_s: float = 600.0, **kwargs: Any) -> AsyncIterator[Any]",
    "fn.remote_events": (
        "(self, *args: Any, snapshot: bool = False, event_types: Iterable[str] | None = None, **kwargs: Any)"
        " -> AsyncIterator[JobEvent]"
    ),
    "fn.spawn_map": "(self, items: Iterable[Any]) -> list[Job]",
    "fn.map": "(self, items: Iterable[Any], *, timeout_s: float = 600.0, return_exceptions: bool = False) -> list[Any]",
    "fn.starmap": (
        "(self, items: Iterable[Any], *, timeout_s: float = 600.0, return_exceptions: bool = False) -> list[Any]"
    ),
    "fn.for_each": "(self, items: Iterable[Any], *, timeout_s: float = 600.0, return_exceptions: bool = False) -> None",
    "Job.from_id": "(job_id: str, *, client: ControlPlaneClient | None = None) -> 'Job'",
    "Job.status": "(self) -> JobStatus",
    "Job.logs": "(self) -> str",
    "Job.wait": "(self, timeout_s: float | None = None) -> Any",
    "Job.cancel": "(self, wait_s: float = 30.0) -> None",
    "Job.watch": (
        "(self, snapshot: bool = False, *, event_types: Iterable[str] | None = None, after_seq: int | None = None)"
        " -> AsyncIterator[JobEvent]"
    ),
    "Retries": (
        "(max_retries: int, initial_delay: float = 1.0, backoff_coefficient: float = 2.0, max_delay: float = 60.0, "
        "*, non_retryable: Any = ()) -> None"
    ),
    "Cron": "(expression: str, timezone: str = 'UTC', *, overlap: Overlap = 'skip') -> None",
    "Period": (
        "(*, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0, overlap: Overlap = 'skip')"
        " -> None"
    ),
    "Volume.from_name": (
        "(name: str, *, create_if_missing: bool = False, mount_path_default: str | None = None) -> StorageMount"
    ),
    "Volume.cloud": "(name: str, *, mount_path_default: str | None = None, **options: Any) -> StorageMount",
    "Volume.create": (
        "(name: str, *, backend: str = 'default', mount_path_default: str | None = None) -> StorageMount"
    ),
    "StorageMount.mounted_at": "(self, path: str) -> 'StorageMount'",
    "CloudBucketMount": (
        "(bucket_name: str, *, access_key_secret: str | None = None, secret_key_secret: str | None = None, "
        "endpoint_url: str | None = None, prefix: str | None = None, read_only: bool = False) -> StorageMount"
    ),
    "Secret.from_name": "(name: str) -> 'Secret'",
    # Methods of an object (bound: without ``self``).
    "Secret.objects.create": (
        "(name: str, env_dict: dict[str, str], *, allow_existing: bool = False, overwrite: bool = False)"
        " -> None"
    ),
    "Secret.objects.list": "() -> list[SecretInfo]",
    "Secret.objects.delete": "(name: str, *, allow_missing: bool = False) -> None",
    "SecretInfo": "(name: str, keys: tuple[str, ...], created_at: datetime, updated_at: datetime) -> None",
    "App.objects.list": "(*, client: ControlPlaneClient | None = None) -> list[AppInfo]",
    "App.objects.stop": "(name: str, *, wait_s: float = 120.0, client: ControlPlaneClient | None = None) -> None",
    "App.objects.remove": (
        "(name: str, *, allow_missing: bool = False, client: ControlPlaneClient | None = None) -> None"
    ),
    "AppInfo": (
        "(name: str, version: int, deployed_at: datetime | None, functions: tuple[str, ...], "
        "schedules: dict[str, str], containers: int, ephemeral: bool) -> None"
    ),
    "concurrent": "(*, max_inputs: int, target_inputs: int | None = None) -> Callable[[F], F]",
    "batched": "(*, max_batch_size: int, wait_ms: int) -> Callable[[F], F]",
    "liv": "(**settings: Any) -> Callable[[Any], Any]",
    "LivConfig": (
        "(*, self_debug: bool = False, cache: str = 'account', examples: tuple[Any, ...] = (), "
        "model: str | None = None, rounds: int = 3) -> None"
    ),
    "Image.debian_slim": "(python_version: str | None = None) -> Image",
    "Image.from_registry": "(ref: str, *, add_python: str | None = None) -> Image",
    "Image.from_dockerfile": (
        "(path: str | os.PathLike[str], *, context_dir: str | os.PathLike[str] | None = None, "
        "add_python: str | None = None) -> Image"
    ),
    "Image.pip_install": (
        "(self, *packages: str | Iterable[str], index_url: str | None = None, extra_index_url: str | None = None, "
        "pre: bool = False) -> Image"
    ),
    "Image.uv_pip_install": (
        "(self, *packages: str | Iterable[str], index_url: str | None = None, extra_index_url: str | None = None, "
        "pre: bool = False) -> Image"
    ),
    "Image.apt_install": "(self, *packages: str | Iterable[str]) -> Image",
    "Image.env": "(self, vars: Mapping[str, str] | None = None, **kwargs: str) -> Image",
    "Image.workdir": "(self, path: str | os.PathLike[str]) -> Image",
    "Image.run_commands": "(self, *commands: str | Iterable[str]) -> Image",
    "Image.add_local_python_source": "(self, *module_names: str | Iterable[str]) -> Image",
    "Image.add_local_file": (
        "(self, local_path: str | os.PathLike[str], remote_path: str | os.PathLike[str]) -> Image"
    ),
    "Image.add_local_dir": (
        "(self, local_path: str | os.PathLike[str], remote_path: str | os.PathLike[str], *, "
        "ignore: Iterable[str] = ()) -> Image"
    ),
    "checkpoint": "(state: Any) -> None",
    "last_checkpoint": "() -> Any",
    "ControlPlaneClient": "(address: str | None = None, *, namespace: str | None = None) -> None",
}

INVOKE = ("remote", "spawn", "remote_gen", "remote_events", "spawn_map", "map", "starmap", "for_each")


def public_callable(name: str, owner: type | None = None) -> Any:
    """The object a SIGNATURES/REFERENCE row names (``fn.*`` on ``owner``); ``App.function``
    is its keyword overload, since the implementation takes ``**options``."""
    if name == "App.function":
        overloads = typing.get_overloads(apothic.App.function)
        (keyword_form,) = [o for o in overloads if "schedule" in inspect.signature(o).parameters]
        return keyword_form
    head, *attrs = name.split(".")
    obj = owner if head == "fn" else getattr(apothic, head)
    for attr in attrs:  # Secret.objects.create: a method of a namespace object
        obj = getattr(obj, attr)
    return obj


class _Text:
    """An annotation shown as its source text (these modules use postponed annotations)."""

    def __init__(self, annotation: Any) -> None:
        self.text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)

    def __repr__(self) -> str:
        return self.text


def render(sig: inspect.Signature) -> str:
    params = [p if p.annotation is p.empty else p.replace(annotation=_Text(p.annotation))
              for p in sig.parameters.values()]
    ret = sig.return_annotation
    return str(sig.replace(parameters=params, return_annotation=ret if ret is sig.empty else _Text(ret)))


def reference_signature(text: str) -> inspect.Signature:
    """The reference's printed signature, parsed by Python (annotations stay text)."""
    scope: dict[str, Any] = {}
    exec(compile(f"from __future__ import annotations\ndef stub{text}: ...", "<reference>", "exec"), scope)  # noqa: S102
    return inspect.signature(scope["stub"])


def test_every_public_signature_is_frozen() -> None:
    rows = [(name, None) for name in SIGNATURES if not name.startswith("fn.")]
    rows += [(name, owner) for name in SIGNATURES if name.startswith("fn.")
             for owner in (apothic.Function, apothic.RemoteFunction)]
    changed = {}
    for name, owner in rows:
        got = render(inspect.signature(public_callable(name, owner)))
        if got != SIGNATURES[name]:
            changed[f"{owner.__name__}.{name[3:]}" if owner else name] = got
    assert not changed, "signatures changed:\n" + "\n".join(f"  {k}: {v}" for k, v in changed.items())
    # Every invocation helper of the reference is in the table, on both kinds of handle.
    assert sorted(n[3:] for n in SIGNATURES if n.startswith("fn.")) == sorted(INVOKE)


def test_signatures_keep_the_reference_contract() -> None:
    problems = []
    for name, text in REFERENCE.items():
        want = reference_signature(text)
        for owner in (apothic.Function, apothic.RemoteFunction) if name.startswith("fn.") else (None,):
            where = f"{owner.__name__}.{name[3:]}" if owner else name
            got = inspect.signature(public_callable(name, owner))
            params = {p.name: p for p in got.parameters.values() if p.name not in ("self", "_fn")}
            for ref in want.parameters.values():
                have = params.pop(ref.name, None)
                if have is None:
                    problems.append(f"{where}: no parameter {ref.name!r}")
                    continue
                if (have.kind, have.default) != (ref.kind, ref.default):
                    problems.append(f"{where}({ref.name}): {have.kind.name} = {have.default!r}, "
                                    f"reference: {ref.kind.name} = {ref.default!r}")
                if ref.annotation is not ref.empty:
                    problems += annotation_problems(f"{where}({ref.name})", (name, ref.name), have.annotation,
                                                    ref.annotation)
            # Additions must leave every reference call valid: keyword-only, with a default.
            for extra in params.values():
                if extra.kind is not extra.KEYWORD_ONLY or extra.default is extra.empty:
                    problems.append(f"{where}: added parameter {extra.name!r} is not keyword-only with a default")
            if want.return_annotation is not want.empty:
                problems += annotation_problems(f"{where} returns", (name, "return"), got.return_annotation,
                                                want.return_annotation)
    assert not problems, "\n".join(problems)


def annotation_problems(where: str, key: tuple[str, str], annotation: Any, reference: str) -> list[str]:
    got = _Text(annotation).text
    if key in ANNOTATION_DEVIATIONS and got == reference:
        return [f"{where}: {got} matches the reference now; drop {key} from ANNOTATION_DEVIATIONS"]
    expected = ANNOTATION_DEVIATIONS.get(key, reference)
    return [] if got == expected else [f"{where}: annotated {got}, expected {expected} (reference: {reference})"]


def test_function_options_carry_the_reference_defaults() -> None:
    from apothic._options._validation import FunctionOptions

    # The decorator validates its keywords with FunctionOptions: the same names, in the same
    # order, with the same defaults as the reference's signature.
    ref = reference_signature(REFERENCE["App.function"]).parameters
    fields = FunctionOptions.model_fields
    assert list(fields) == list(ref)
    defaults = {n: p.default for n, p in ref.items()}
    assert {n: f.get_default(call_default_factory=True) for n, f in fields.items()} == defaults
    # And a function decorated without options gets them.
    app = apothic.App("signature-defaults")

    @app.function()
    def plain() -> None: ...

    assert {n: getattr(plain.options, n) for n in ref} == defaults
    stated = {"cpu": 1, "memory_mb": 1024, "timeout_s": 600, "max_retries": 0, "concurrent_requests": 1,
              "max_pending_tasks": 100, "max_containers": 1, "tasks_per_container": 1}  # the reference, once more
    assert {n: defaults[n] for n in stated} == stated
    assert {n: getattr(plain.options, n) for n in stated} == stated
    for owner in (apothic.Function, apothic.RemoteFunction):
        for method in ("remote", "remote_gen", "map", "starmap", "for_each"):
            assert inspect.signature(getattr(owner, method)).parameters["timeout_s"].default == 600.0, (owner, method)


def test_the_reference_examples_bind() -> None:
    """Every call the reference shows binds to today's signatures."""
    calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = [
        (apothic.Retries, (), dict(max_retries=4, initial_delay=2.0, backoff_coefficient=2.0, max_delay=30.0)),
        (apothic.concurrent, (), dict(max_inputs=16, target_inputs=12)),
        (apothic.batched, (), dict(max_batch_size=8, wait_ms=50)),
        (apothic.liv, (), dict(self_debug=True, cache="account", examples=[((" READY ",), {})])),
        (apothic.LivConfig, (), dict(self_debug=True, cache="account", examples=[((" READY ",), {})])),
        (apothic.Image.debian_slim, (), dict(python_version="3.11")),
        (apothic.Image.uv_pip_install, (None, "numpy", "pandas"), {}),
        (apothic.Image.env, (None,), dict(PYTHONUNBUFFERED="1")),
        (apothic.Image.run_commands, (None, "mkdir -p /app/cache"), {}),
        (apothic.Image.add_local_python_source, (None, "my_package"), {}),
        (apothic.Secret.from_name, ("HF_TOKEN",), {}),
        (apothic.Volume.from_name, ("model-cache",), dict(create_if_missing=True, mount_path_default="/cache")),
        (apothic.Volume.cloud, ("model-cache",), {}),
        (apothic.Volume.create, ("fast",), dict(backend="vast_local")),
        (apothic.StorageMount.mounted_at, (None, "/cache"), {}),
        (apothic.CloudBucketMount, (), dict(
            bucket_name="team-datasets", access_key_secret="APOTHIC_BUCKET_ACCESS_KEY_SECRET",
            secret_key_secret="APOTHIC_BUCKET_SECRET_KEY_SECRET", endpoint_url="https://fly.storage.tigris.dev",
            prefix="examples/training")),
        (apothic.Cron, ("0 9 * * *",), {}),
        (apothic.Period, (), dict(hours=1)),
        (apothic.RemoteFunction.from_name, ("async-demo", "infer"), {}),
        (apothic.Job.watch, (None,), dict(snapshot=True)),
        (apothic.Function.remote_events, (None, "hello"), dict(snapshot=True)),
        (apothic.Function.remote, (None, "long input here"), {}),
        (apothic.Function.spawn, (None, "generate a summary"), {}),
    ]
    for fn, args, kwargs in calls:
        inspect.signature(fn).bind(*args, **kwargs)
    for name in ("status", "logs", "wait", "cancel", "watch"):
        inspect.signature(getattr(apothic.Job, name)).bind(None)
    inspect.signature(public_callable("App.function")).bind(None, cpu=1, memory_mb=1024, timeout_s=300)


def test_the_async_twins_have_the_blocking_signatures() -> None:
    """``obj.aio.m`` takes what ``obj.m`` takes (the reference's ``app.aio.deploy()``,
    ``remote.aio.spawn(...)``, ``job.aio.status()``, ``job.aio.wait()``)."""
    app = apothic.App("signature-twins")

    @app.function()
    def infer(value: str) -> str:
        return value.upper()

    faces = [
        (app, ["deploy"]),
        (infer, list(INVOKE)),
        (apothic.RemoteFunction.from_name("signature-twins", "infer"), list(INVOKE)),
        (apothic.Job.from_id("job-signature-twins"), ["status", "logs", "wait", "cancel", "watch"]),
    ]
    streams = {"remote_gen", "remote_events", "watch", "map", "starmap"}  # async iterators, not coroutines
    for obj, names in faces:
        for name in names:
            blocking, twin = getattr(obj, name), getattr(obj.aio, name)
            assert inspect.signature(twin).parameters == inspect.signature(blocking).parameters, (
                type(obj).__name__, name)
            assert inspect.signature(getattr(obj, name).aio) == inspect.signature(twin)  # one twin, two spellings
            assert inspect.iscoroutinefunction(twin) is (name not in streams), (type(obj).__name__, name)
            assert not inspect.iscoroutinefunction(blocking), (type(obj).__name__, name)
