"""Decoration-time validation of @app.function options (no server needed)."""

from __future__ import annotations

import inspect

import pytest

import apothic
from apothic import App, InvalidError, NotSupportedError, Retries


def make_app() -> App:
    return App("validation")


def test_every_problem_is_reported_at_once_with_value_range_and_fix() -> None:
    app = make_app()
    with pytest.raises(InvalidError) as info:

        @app.function(cpu=0, memory_mb="lots", timeout_s=-5, max_containers=0)
        def f() -> None: ...

    text = str(info.value)
    assert "4 problem(s)" in text
    assert "cpu = 0" in text and ">= 1" in text and "Fix:" in text
    assert "memory_mb = 'lots'" in text and "a whole number" in text
    assert "timeout_s = -5" in text
    assert "max_containers = 0" in text
    assert "'f'" in text


def test_without_parentheses_says_so() -> None:
    app = make_app()
    with pytest.raises(InvalidError, match=r"Did you forget parentheses\? Fix: write `@app.function\(\)`"):

        @app.function
        def f() -> None: ...


def test_positional_and_unknown_options() -> None:
    app = make_app()
    with pytest.raises(InvalidError, match="keyword options only"):
        app.function(5)  # type: ignore[call-overload]
    with pytest.raises(InvalidError, match="did you mean 'timeout_s'"):
        app.function(timeout=5)  # type: ignore[call-overload]


def test_not_built_options_are_refused_not_ignored() -> None:
    app = make_app()
    with pytest.raises(NotSupportedError) as info:

        @app.function(secrets=[apothic.Secret.from_name("TOKEN")], volumes=[], concurrent_requests=4)
        def f() -> None: ...

    text = str(info.value)
    assert "secrets" in text and "concurrent_requests" in text
    assert text.count("not supported yet") == 2


def test_invalid_beats_not_supported_and_both_are_listed() -> None:
    app = make_app()
    with pytest.raises(InvalidError) as info:

        @app.function(cpu=-1, gpu="A100", offer_filters={"bogus": {"eq": 1}}, secrets=[apothic.Secret.from_name("T")])
        def f() -> None: ...

    assert not isinstance(info.value, NotSupportedError)
    text = str(info.value)
    assert "cpu = -1" in text and "offer_filters.bogus" in text and "secrets" in text


def test_retries_and_max_retries_combine_as_documented() -> None:
    app = make_app()

    @app.function(retries=3)
    def a() -> None: ...

    @app.function(max_retries=2)
    def b() -> None: ...

    @app.function(retries=Retries(max_retries=4, initial_delay=2.0, backoff_coefficient=3.0, max_delay=30.0))
    def c() -> None: ...

    assert a.options.retry_policy().max_retries == 3
    assert b.options.retry_policy().max_retries == 2
    assert c.options.retry_policy() == Retries(max_retries=4, initial_delay=2.0, backoff_coefficient=3.0, max_delay=30.0)
    with pytest.raises(InvalidError, match="not both"):

        @app.function(retries=1, max_retries=1)
        def d() -> None: ...

    with pytest.raises(InvalidError, match="max_retries"):
        Retries(max_retries=-1)
    with pytest.raises(InvalidError, match="backoff_coefficient"):
        Retries(max_retries=1, backoff_coefficient=0.5)


def test_placement_filters_are_checked_when_the_decorator_runs() -> None:
    app = make_app()
    with pytest.raises(InvalidError) as info:

        @app.function(
            gpu="RTX_4090",
            min_vram_gb=8,
            offer_filters={"gpu_ram": {"gte": 30_000, "lte": 20_000}, "num_gpuz": {"eq": 1}, "pci_gen": {"approx": 3}},
        )
        def f() -> None: ...

    text = str(info.value)
    assert "gpu_ram" in text and "num_gpuz" in text and "approx" in text
    assert "Fix:" in text

    with pytest.raises(InvalidError, match="geolocation"):

        @app.function(geolocation="United States")
        def g() -> None: ...

    @app.function(
        gpu=["RTX_4070", "RTX 3080"], gpu_count=1, min_vram_gb=10, geolocation=["US", "CA"],
        max_cost_per_hour_usd=1.5, offer_filters={"verification": {"eq": "verified"}, "pci_gen": {"gte": 3}},
        disk_gb=20,
    )
    def ok() -> str:
        return "ok"

    spec = app._spec(ok)
    assert spec.placement is not None and spec.placement["gpu"] == ["RTX_4070", "RTX 3080"]
    assert spec.disk_gb == 20 and spec.provider == ""


def test_names_and_duplicates() -> None:
    with pytest.raises(InvalidError, match="app name"):
        App("no spaces please")
    app = make_app()

    @app.function()
    def twice() -> None: ...

    with pytest.raises(InvalidError, match="already has a function"):

        @app.function()  # noqa: F811
        def twice() -> None: ...  # type: ignore[no-redef]


def test_generators_are_marked_and_decorators_not_built_yet() -> None:
    app = make_app()

    @app.function()
    def gen():  # type: ignore[no-untyped-def]
        yield 1

    @app.function()
    async def agen():  # type: ignore[no-untyped-def]
        yield 1

    assert app._spec(gen).is_generator and not app._spec(gen).is_async
    assert app._spec(agen).is_generator and app._spec(agen).is_async

    with pytest.raises(NotSupportedError, match="@concurrent"):

        @app.function()
        @apothic.concurrent(max_inputs=16, target_inputs=12)
        def many(x: str) -> str:
            return x


def test_decorator_signature_is_the_references() -> None:
    """Names, order and defaults of the API reference's @app.function signature."""
    expected = {
        "schedule": None, "liv": None, "gpu": None, "gpu_count": None, "min_vram_gb": None,
        "geolocation": None, "offer_filters": None, "max_cost_per_hour_usd": None,
        "max_cost_per_tflop_hour_usd": None, "min_total_flops": None, "min_gpu_ram_bandwidth_gbps": None,
        "min_cpu_cores": None, "min_cpu_ram_gb": None, "min_cpu_ghz": None, "min_disk_bandwidth_mb_s": None,
        "min_internet_upload_mbps": None, "min_internet_download_mbps": None, "secure_cloud_only": None,
        "cpu": 1, "memory_mb": 1024, "disk_gb": None, "timeout_s": 600, "retries": None, "max_retries": 0,
        "concurrent_requests": 1, "max_pending_tasks": 100, "max_containers": 1, "tasks_per_container": 1,
        "image": None, "secrets": None, "volumes": None,
    }
    from typing import get_overloads

    keyword_overload = get_overloads(App.function)[1]
    params = inspect.signature(keyword_overload).parameters
    got = {n: p.default for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert list(got) == list(expected)
    assert got == expected
    from apothic._options._validation import FunctionOptions

    assert {n: f.default for n, f in FunctionOptions.model_fields.items()} == expected
    remote = inspect.signature(apothic.RemoteFunction.from_name).parameters
    assert list(remote) == ["app_name", "function_name", "client", "base_url"]
