"""Decoration-time validation of @app.function options (no server needed)."""

from __future__ import annotations

import inspect
import math

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
    assert "memory_mb = 'lots'" in text and "a string is not a number" in text and ">= 64 and <= 4194304" in text
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


def test_liv_is_checked_at_decoration_not_refused() -> None:
    app = make_app()
    with pytest.raises(InvalidError) as info:

        @app.function(liv=apothic.LivConfig())
        def f() -> None: ...

    assert not isinstance(info.value, NotSupportedError)
    text = str(info.value)
    assert "f.__doc__ = None" in text and "the stub has no docstring" in text and "Fix: " in text


def test_every_invalid_option_is_listed_at_once() -> None:
    app = make_app()
    with pytest.raises(InvalidError) as info:

        @app.function(cpu=-1, gpu="A100", offer_filters={"bogus": {"eq": 1}}, liv={"cache": "nowhere"})
        def f() -> None:
            """Return nothing."""

    assert not isinstance(info.value, NotSupportedError)
    text = str(info.value)
    assert "cpu = -1" in text and "offer_filters.bogus" in text and "cache = 'nowhere'" in text


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

    @app.function()
    @apothic.concurrent(max_inputs=16, target_inputs=12)
    def many(x: str) -> str:
        return x

    spec = app._spec(many)
    assert (spec.concurrent_requests, spec.target_inputs, spec.batch) == (16, 12, None)


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


# --- strict types -----------------------------------------------------------------------


def problem_line(text: str, loc: str) -> str:
    """The one line of an error message about ``loc``."""
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"  - {loc} = ")]
    return line


def test_no_bool_string_or_float_is_taken_as_a_number() -> None:
    app = make_app()
    with pytest.raises(InvalidError) as info:

        @app.function(timeout_s=True, cpu="4", memory_mb=2048.0, max_retries=1.0, disk_gb=True, max_containers=False)
        def f() -> None: ...

    text = str(info.value)
    assert "6 problem(s)" in text
    line = problem_line(text, "timeout_s")
    assert "timeout_s = True: a bool is not a number" in line and ">= 1 and <= 604800" in line
    assert "Fix: give the per-attempt limit in whole seconds, e.g. timeout_s=300." in line
    line = problem_line(text, "cpu")
    assert "cpu = '4': a string is not a number (write the number without quotes)" in line
    assert "allowed: an int (not a bool or float) >= 1 and <= 256" in line and "Fix: give a whole number" in line
    line = problem_line(text, "memory_mb")
    assert "memory_mb = 2048.0: a float is not accepted here" in line and ">= 64" in line and "Fix:" in line
    assert "max_retries = 1.0" in text and "disk_gb = True" in text and "max_containers = False" in text
    assert "allowed: a finite number (int or float, not a bool) > 0 and <= 100000, or None" in text


def test_nan_infinity_and_huge_numbers_are_refused_by_name() -> None:
    app = make_app()
    with pytest.raises(InvalidError) as info:

        @app.function(min_cpu_cores=math.nan, max_cost_per_hour_usd=math.inf, min_cpu_ghz=10**400, cpu=10**5000,
                      offer_filters={"gpu_ram": {"gte": 10**400}, "dph_total": {"in": [0.5, 10**400]}})
        def f() -> None: ...

    text = str(info.value)
    assert "min_cpu_cores = nan: Input should be a finite number; allowed: a finite number" in text
    assert "max_cost_per_hour_usd = inf" in text and "Fix: give USD per hour as a number" in text
    assert "min_cpu_ghz = <an int of about 401 digits>: too large for a float" in text
    assert "cpu = <an int of about 5001 digits>" in text and "<= 256" in text
    line = problem_line(text, "offer_filters.gpu_ram.gte")
    assert "<an int of about 401 digits>: not a value an offer field holds" in line
    assert "(numbers within float range)" in line and "Fix: write e.g. {'gpu_ram': {'gte': ...}}" in line
    assert "offer_filters.dph_total.in = <an int of about 401 digits>" in text


def test_values_of_the_wrong_kind_are_refused_not_crashed_on() -> None:
    """Once a TypeError escaped for these, or a dict was built into a Cron without its checks."""
    app = make_app()
    with pytest.raises(InvalidError) as info:

        @app.function(schedule={"expression": "* * * * *"}, retries={}, gpu=("RTX_4090",), image="debian",
                      secrets=["HF_TOKEN"], volumes={"/data": "model-cache"}, offer_filters={"gpu_ram": 10240})
        def f() -> None: ...

    text = str(info.value)
    assert "7 problem(s)" in text
    assert ("schedule = {'expression': '* * * * *'}: a dict is not accepted here; allowed: apothic.Cron(...), "
            "apothic.Period(...) or None. Fix: give apothic.Cron('0 * * * *')") in text
    assert "retries = {}: a dict is not accepted here; allowed: an int (not a bool or float) >= 0 and <= 100, " \
        "apothic.Retries(...), or None. Fix: give an int (retries=3)" in text
    assert "gpu = ('RTX_4090',)" in text and "or a non-empty list of them" in text
    assert "secrets = ['HF_TOKEN']: 'HF_TOKEN': a str is not accepted here" in text
    assert "Fix: give a list like secrets=[apothic.Secret.from_name('HF_TOKEN')]" in text
    assert "volumes = {'/data': 'model-cache'}" in text and "offer_filters = {'gpu_ram': 10240}: 10240:" in text
    assert "image = 'debian'" in text and "Fix: give an apothic.Image" in text


def test_unknown_gpu_models_are_refused_with_the_closest_known_ones() -> None:
    app = make_app()
    with pytest.raises(InvalidError) as info:

        @app.function(gpu="RTX_9999")
        def f() -> None: ...

    line = problem_line(str(info.value), "gpu")
    assert "gpu = 'RTX_9999': unknown GPU model" in line
    assert "GPU models Vast lists, in any case, '_' or ' ' (e.g. 'RTX_4090'" in line
    assert "Fix: did you mean 'RTX_5090' or 'RTX_4090' or 'RTX_3090'?" in line
    assert "offer_filters={'gpu_name': {'eq': ...}} takes a model not listed here" in line

    with pytest.raises(InvalidError) as info:

        @app.function(gpu=["RTX_4090", "H100"])
        def g() -> None: ...

    assert "gpu.1 = 'H100': unknown GPU model" in str(info.value)
    assert "did you mean 'H100_NVL' or 'H100_PCIE' or 'H100_SXM'?" in str(info.value)

    # Known models in any spelling; Vast's own is what the placement filter gets. A model not
    # listed yet goes through offer_filters, which takes any name.
    @app.function(gpu=["rtx_6000_ada", "RTX 4070 TI", "a10G"])
    def ok() -> None: ...

    @app.function(offer_filters={"gpu_name": {"eq": "Some New GPU"}})
    def newer() -> None: ...

    from apothic.placement import placement_query

    constraints = placement_query(app._spec(ok).placement or {}).constraints
    assert ("gpu_name", "in", ("RTX 6000Ada", "RTX 4070 Ti", "A10g")) in [(c.field, c.op, c.value) for c in constraints]
    assert app._spec(newer).placement == {"offer_filters": {"gpu_name": {"eq": "Some New GPU"}}}


def test_the_known_gpu_models_live_in_placement_and_cover_the_simulated_market() -> None:
    from apothic.placement._fields import KNOWN_GPU_NAMES, is_known_gpu
    from apothic.vastsim._catalogue import _GPUS

    assert len(set(KNOWN_GPU_NAMES)) == len(KNOWN_GPU_NAMES)
    assert all(is_known_gpu(row[0]) for row in _GPUS)


def test_retries_cron_and_period_are_as_strict() -> None:
    with pytest.raises(InvalidError) as info:
        Retries(max_retries=True, initial_delay="1", max_delay=math.inf, non_retryable=[1], bogus=2)  # type: ignore[arg-type, call-arg]
    text = str(info.value)
    assert "Retries(...): 5 problem(s)" in text
    assert "max_retries = True: a bool is not a number here; allowed: an int (not a bool or float) >= 0 and <= 100. " \
        "Fix: give how many times to retry" in text
    assert "initial_delay = '1': a string is not a number" in text and ">= 0.001 and <= 3600" in text
    assert "max_delay = inf: Input should be a finite number" in text
    assert "non_retryable = 1: not an exception type" in text
    assert "bogus = 2: unknown option; allowed: one of max_retries, initial_delay" in text
    assert Retries(max_retries=2, initial_delay=1, max_delay=30).initial_delay == 1.0  # ints are numbers

    with pytest.raises(InvalidError) as info:
        apothic.Cron(5, timezone=3, overlap=["skip"])  # type: ignore[arg-type]
    text = str(info.value)
    assert "Cron(5): 3 problem(s)" in text
    assert "expression = 5: not a string; allowed: five cron fields" in text and "Fix: write five fields" in text
    assert "timezone = 3: not a string; allowed: an IANA time zone name" in text
    assert "overlap = ['skip']: unknown overlap policy" in text

    with pytest.raises(InvalidError) as info:
        apothic.Period(days=math.inf, hours=True, seconds=10**400, overlap="sometimes")  # type: ignore[arg-type]
    text = str(info.value)
    assert "Period(...): 4 problem(s)" in text
    assert "days = inf: Input should be a finite number; allowed: a finite number (int or float, not a bool) >= 0 " \
        "and <= 36600. Fix: give a number of days" in text
    assert "hours = True: a bool is not a number here" in text
    assert "seconds = <an int of about 401 digits>: too large for a float" in text
    assert "overlap = 'sometimes'" in text
    with pytest.raises(InvalidError, match=r"= 3162240001: longer than 100 years; allowed: a whole number of seconds"):
        apothic.Period(days=36600, seconds=1)
    with pytest.raises(InvalidError, match=r"= 0.5: shorter than one second"):
        apothic.Period(seconds=0.5)
    assert apothic.Period(minutes=1.5).total_seconds() == 90


# --- @concurrent and @batched -----------------------------------------------------------


def test_concurrent_and_batched_check_their_arguments_when_called() -> None:
    with pytest.raises(InvalidError) as info:
        apothic.concurrent(max_inputs=0, target_inputs=2.5)  # type: ignore[arg-type]
    text = str(info.value)
    assert "@apothic.concurrent(...): 2 problem(s)" in text
    assert "max_inputs = 0: out of range; allowed: an int >= 1 and <= 1000. Fix: write max_inputs=16." in text
    assert "target_inputs = 2.5: a float is not accepted: ints only; allowed: an int >= 1 and <= max_inputs" in text
    with pytest.raises(InvalidError) as info:
        apothic.concurrent(max_inputs=4, target_inputs=5)
    assert ("target_inputs = 5: out of range; allowed: an int >= 1 and <= max_inputs (4). "
            "Fix: write target_inputs=12 (at most max_inputs)") in str(info.value)
    with pytest.raises(InvalidError, match=r"max_inputs = True: a bool is not accepted: ints only; allowed: an int >= 1"):
        apothic.concurrent(max_inputs=True)

    with pytest.raises(InvalidError) as info:
        apothic.batched(max_batch_size="8", wait_ms=50.0)  # type: ignore[arg-type]
    text = str(info.value)
    assert "@apothic.batched(...): 2 problem(s)" in text
    assert "max_batch_size = '8': a str is not accepted: ints only; allowed: an int >= 1 and <= 1000. " \
        "Fix: write max_batch_size=8." in text
    assert "wait_ms = 50.0: a float is not accepted: ints only; allowed: an int >= 0 and <= 600000. " \
        "Fix: write wait_ms=50 (milliseconds)." in text
    with pytest.raises(InvalidError, match=r"wait_ms = -1: out of range; allowed: an int >= 0"):
        apothic.batched(max_batch_size=8, wait_ms=-1)
    assert callable(apothic.batched(max_batch_size=8, wait_ms=0))


def test_a_mark_above_app_function_is_refused_with_the_right_order() -> None:
    app = make_app()

    @app.function()
    def process(item: str) -> str:
        return item

    with pytest.raises(InvalidError) as info:
        apothic.concurrent(max_inputs=16, target_inputs=12)(process)
    assert str(info.value) == (
        "@apothic.concurrent(max_inputs=16, target_inputs=12) is placed above @app.function(...) on 'process', "
        "where it would be ignored. Fix: put @app.function(...) on top, then the mark, then the function:\n"
        "    @app.function(...)\n"
        "    @apothic.concurrent(max_inputs=16, target_inputs=12)\n"
        "    def process(...): ..."
    )
    with pytest.raises(InvalidError, match=r"(?s)@apothic.batched\(max_batch_size=8, wait_ms=50\) is placed above "
                                           r"@app.function.*    @app.function\(...\)\n    @apothic.batched"):
        apothic.batched(max_batch_size=8, wait_ms=50)(process)


def test_batched_needs_one_required_parameter_and_not_concurrent_too() -> None:
    with pytest.raises(InvalidError) as info:

        @apothic.batched(max_batch_size=8, wait_ms=50)
        def pairs(a: int, b: int) -> list[int]:
            return [a, b]

    assert ("@apothic.batched(max_batch_size=8, wait_ms=50) on 'pairs': a batched function takes exactly one "
            "required parameter, the list of inputs, but it has 2 required parameter(s) (a, b). "
            "Fix: write `def pairs(items: list) -> list`.") == str(info.value)
    with pytest.raises(InvalidError, match=r"it has 0 required parameter\(s\) \(none\)"):

        @apothic.batched(max_batch_size=8, wait_ms=50)
        def nothing(*values: int) -> list[int]:
            return list(values)

    @apothic.batched(max_batch_size=8, wait_ms=50)
    def score(values: list[str], scale: list[int] | None = None) -> list[int]:
        return [len(v) for v in values]

    with pytest.raises(InvalidError) as info:
        apothic.concurrent(max_inputs=2)(score)
    assert "@apothic.concurrent(max_inputs=2) and @apothic.batched(...) are both on 'score'" in str(info.value)
    assert "Fix: keep one of the two." in str(info.value)

    def both(values: list[str]) -> list[str]:
        return values

    apothic.concurrent(max_inputs=2)(both)
    with pytest.raises(InvalidError, match="both on 'both'"):
        apothic.batched(max_batch_size=2, wait_ms=0)(both)
    with pytest.raises(InvalidError, match=r"already has @apothic.concurrent\(...\). Fix: apply it once"):
        apothic.concurrent(max_inputs=3)(both)


def test_marks_under_app_function_set_the_spec_and_conflict_with_concurrent_requests() -> None:
    app = make_app()

    @app.function()
    @apothic.batched(max_batch_size=8, wait_ms=50)
    def score(values: list[str]) -> list[int]:
        return [len(v) for v in values]

    spec = app._spec(score)
    assert (spec.concurrent_requests, spec.target_inputs) == (8, None)
    assert (spec.batch.max_batch_size, spec.batch.wait_ms) == (8, 50)

    with pytest.raises(InvalidError) as info:

        @app.function(concurrent_requests=1)
        @apothic.concurrent(max_inputs=16)
        def many(x: str) -> str:
            return x

    assert not isinstance(info.value, NotSupportedError)
    line = problem_line(str(info.value), "concurrent_requests")
    assert "concurrent_requests = 1: two settings for the same limit; allowed: not set together with " \
        "@apothic.concurrent(max_inputs=16). Fix: give the inputs per container once" in line

    with pytest.raises(InvalidError) as info:

        @app.function(concurrent_requests=4)
        @apothic.batched(max_batch_size=8, wait_ms=50)
        def batch_and_limit(values: list[str]) -> list[str]:
            return values

    line = problem_line(str(info.value), "concurrent_requests")
    assert "concurrent_requests = 4: a batched function runs its batches one at a time; allowed: not set together " \
        "with @apothic.batched(max_batch_size=8, wait_ms=50). Fix: drop concurrent_requests=..." in line

    @app.function(concurrent_requests=4)
    def plain(x: str) -> str:
        return x

    assert app._spec(plain).concurrent_requests == 4 and app._spec(plain).batch is None


def test_batched_parameters_each_take_a_list() -> None:
    for annotation, shown in ((int, "int"), ("dict[str, int]", "dict[str, int]"), (str | None, "str | None")):
        def wrong(values):  # type: ignore[no-untyped-def]
            return values

        wrong.__annotations__ = {"values": annotation}
        with pytest.raises(InvalidError) as info:
            apothic.batched(max_batch_size=8, wait_ms=50)(wrong)
        assert (f"@apothic.batched(max_batch_size=8, wait_ms=50) on 'wrong': a batched function is called with one "
                f"list per parameter (one value per input), but its parameter 'values' is annotated {shown} "
                "(allowed: list, list[...], Sequence[...], one of them | None, or no annotation). "
                "Fix: write `def wrong(items: list) -> list`") in str(info.value)
    with pytest.raises(InvalidError, match=r"but it takes \*rest, \*\*options. Fix: write `def spread"):

        @apothic.batched(max_batch_size=8, wait_ms=50)
        def spread(values: list, *rest: list, **options: list) -> list:
            return values

    with pytest.raises(InvalidError, match=r"a generator \(a function with `yield`\) cannot. Fix: build the list"):

        @apothic.batched(max_batch_size=8, wait_ms=50)
        def stream(values: list):  # type: ignore[no-untyped-def]
            yield from values

    for ok in ("list[int]", "Sequence[str]", "list[int] | None", "Optional[list[str]]", list, inspect.Parameter.empty):
        def fine(values, extra=None):  # type: ignore[no-untyped-def]
            return values

        fine.__annotations__ = {} if ok is inspect.Parameter.empty else {"values": ok, "extra": ok}
        assert apothic.batched(max_batch_size=2, wait_ms=0)(fine) is fine


# --- secrets and storage ----------------------------------------------------------------


def test_volumes_check_every_argument_when_made() -> None:
    with pytest.raises(InvalidError) as info:
        apothic.Volume.from_name("model cache", create_if_missing=1, mount_path_default="cache/")  # type: ignore[arg-type]
    text = str(info.value)
    assert "Volume.from_name('model cache'): 3 problem(s)" in text
    assert ("name = 'model cache': invalid name; allowed: 1-63 letters, digits, '_', '-' and '.', starting with a "
            "letter or digit. Fix: rename it, e.g. Volume.from_name('model-cache').") in text
    assert "create_if_missing = 1: not a bool; allowed: True or False." in text
    assert "mount_path = 'cache/': not absolute; allowed: an absolute, normalised path other than '/'" in text
    assert "Fix: write '/cache'." in text
    with pytest.raises(InvalidError) as info:
        apothic.Volume.create("fast", backend="vast-local")
    assert ("backend = 'vast-local': unknown backend; allowed: 'default', 'cloud', 'vast_local'. "
            "Fix: write backend='vast_local'.") in str(info.value)
    with pytest.raises(InvalidError, match=r"region = 'eu': unknown option; allowed: no options. Fix: remove it"):
        apothic.Volume.cloud("shared", region="eu")
    with pytest.raises(InvalidError, match=r"kind = 'disk': unknown kind"):
        apothic.StorageMount(kind="disk")  # type: ignore[arg-type]
    for backend in ("default", "cloud", "vast_local"):
        assert apothic.Volume.create("v", backend=backend).backend == backend
    assert apothic.Volume.cloud("v", mount_path_default="/v").mount_path == "/v"


@pytest.mark.parametrize(
    ("path", "why", "fix"),
    [
        ("/", "the root would hide the container's own files", "mount under a directory, e.g. '/data'"),
        ("data", "not absolute", "write '/data'"),
        ("/data/../etc", "contains '..'", "give the final path"),
        ("/data/", "not normalised", "write '/data'"),
        ("//data", "not normalised", "write '/data'"),
        ("/a/./b", "not normalised", "write '/a/b'"),
        ("/proc/x", "a system directory the container needs", "mount elsewhere"),
        ("/usr", "a system directory the container needs", "mount elsewhere"),
        (5, "not a string", "give the path as a string"),
    ],
)
def test_mount_paths_are_absolute_normalised_and_not_the_root(path: object, why: str, fix: str) -> None:
    with pytest.raises(InvalidError) as info:
        apothic.Volume.from_name("cache").mounted_at(path)  # type: ignore[arg-type]
    text = str(info.value)
    assert f"path = {path!r}: {why}; allowed: an absolute, normalised path other than '/'" in text
    assert f"Fix: {fix}" in text
    assert apothic.Volume.from_name("cache").mounted_at("/cache/models").mount_path == "/cache/models"


def test_bucket_mounts_follow_the_s3_rules() -> None:
    with pytest.raises(InvalidError) as info:
        apothic.CloudBucketMount("Team_Datasets", access_key_secret="KEY", endpoint_url="ftp://files.example.com",
                                 prefix="/examples", read_only="yes")  # type: ignore[arg-type]
    text = str(info.value)
    assert "CloudBucketMount('Team_Datasets'): 5 problem(s)" in text
    assert ("bucket_name = 'Team_Datasets': not a valid S3 bucket name; allowed: 3-63 lowercase letters, digits, '.' "
            "and '-'") in text and "Fix: use the bucket's real name, e.g. 'team-datasets'." in text
    assert "access_key_secret/secret_key_secret = ('KEY', None): only one of the two keys" in text
    assert "endpoint_url = 'ftp://files.example.com': not an http(s) URL with a host; allowed: None or an http(s) " \
        "URL" in text
    assert "prefix = '/examples': a bad key prefix; allowed: None or a key prefix without a leading '/'" in text
    assert "Fix: write 'examples'." in text
    assert "read_only = 'yes': not a bool; allowed: True or False" in text
    for bad in ("ab", "a" * 64, "192.168.1.1", "my..bucket", "-bucket", "xn--bucket", "bucket-s3alias"):
        with pytest.raises(InvalidError, match="not a valid S3 bucket name"):
            apothic.CloudBucketMount(bad)
    with pytest.raises(InvalidError, match=r"credentials in the URL.*Fix: remove the credentials"):
        apothic.CloudBucketMount("team", endpoint_url="https://user:pw@s3.example.com")
    with pytest.raises(InvalidError, match=r"endpoint_url = 'https://s3.example.com:99999': Port out of range"):
        apothic.CloudBucketMount("team", endpoint_url="https://s3.example.com:99999")
    bucket = apothic.CloudBucketMount(
        "team-datasets", access_key_secret="APOTHIC_BUCKET_ACCESS_KEY_SECRET",
        secret_key_secret="APOTHIC_BUCKET_SECRET_KEY_SECRET", endpoint_url="https://fly.storage.tigris.dev",
        prefix="examples/training").mounted_at("/bucket")
    assert bucket.options["prefix"] == "examples/training" and bucket.mount_path == "/bucket"


def test_secrets_check_their_names() -> None:
    with pytest.raises(InvalidError) as info:
        apothic.Secret.from_name("HF TOKEN")
    assert ("Secret.from_name('HF TOKEN'): 1 problem(s):\n  - name = 'HF TOKEN': invalid name; allowed: 1-63 "
            "letters, digits, '_', '-' and '.', starting with a letter or digit. Fix: rename it, e.g. "
            "Secret.from_name('HF_TOKEN').") == str(info.value)
    with pytest.raises(InvalidError, match=r"name = 5: invalid name"):
        apothic.Secret(name=5)  # type: ignore[arg-type]
    assert apothic.Secret.from_name("HF_TOKEN").name == "HF_TOKEN"


def test_volumes_option_mount_paths_and_one_vast_local_volume() -> None:
    app = make_app()
    cache = apothic.Volume.from_name("cache")
    with pytest.raises(InvalidError) as info:

        @app.function(volumes=[cache.mounted_at("/data"), apothic.Volume.from_name("more").mounted_at("/data/more"),
                               apothic.Volume.from_name("loose"), cache.mounted_at("/data")])
        def f() -> None: ...

    text = str(info.value)
    assert "volumes[2] = \"Volume('loose', backend='default')\": no mount path; allowed: a volume with a mount " \
        "path. Fix: write Volume('loose', backend='default').mounted_at('/data')" in text
    assert ("volumes = ('/data', '/data/more'): one mount inside another (Volume('cache', backend='default') and "
            "Volume('more', backend='default')); allowed: distinct mount paths, none inside another. "
            "Fix: mount each at its own directory") in text
    assert "volumes = ('/data', '/data'): the same path" in text
    assert "volumes: not supported" not in text  # volumes are built: only the real problems are listed

    with pytest.raises(InvalidError) as info:

        @app.function(volumes={"/a": apothic.Volume.create("a", backend="vast_local"),
                               "/b": apothic.Volume.create("b", backend="vast_local"),
                               "rel": cache, "/c": cache.mounted_at("/elsewhere")})
        def g() -> None: ...

    text = str(info.value)
    assert ("volumes = [\"Volume('a', backend='vast_local')\", \"Volume('b', backend='vast_local')\"]: "
            "2 vast_local volumes; allowed: at most one vast_local volume per function. Fix: keep one") in text
    assert "volumes['rel'] = 'rel': not absolute" in text and "Fix: write '/rel'" in text
    assert "volumes['/c'] = \"Volume('cache', backend='default')\": also mounted at '/elsewhere'" in text

    with pytest.raises(InvalidError, match=r"secrets = \['T', 'T'\]: a secret listed twice; allowed: each secret "
                                           r"once. Fix: list T once"):

        @app.function(secrets=[apothic.Secret.from_name("T"), apothic.Secret.from_name("T")])
        def h() -> None: ...


def test_secrets_reach_the_spec_by_name_only() -> None:
    app = make_app()

    @app.function(secrets=[apothic.Secret.from_name("HF_TOKEN"), apothic.Secret.from_name("db.prod")])
    def f() -> None: ...

    @app.function(secrets=[])
    def g() -> None: ...

    assert app._spec(f).secrets == ["HF_TOKEN", "db.prod"]  # in order: a later secret's key wins
    assert app._spec(g).secrets == []
