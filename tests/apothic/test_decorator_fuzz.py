"""`@app.function(...)` with random options: a Function, or InvalidError / NotSupportedError.

No other exception may escape the decorator, whatever the names and values (bools, strings,
huge ints, NaN and infinity, nested containers, objects whose own methods fail).
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import apothic
from apothic import App, InvalidError, NotSupportedError
from apothic._options._validation import FunctionOptions

OPTION_NAMES = sorted(FunctionOptions.model_fields)
NUMERIC = set(OPTION_NAMES) - {"schedule", "liv", "gpu", "geolocation", "offer_filters", "secure_cloud_only",
                               "retries", "image", "secrets", "volumes"}


class Hostile:
    """An object whose every protocol method fails."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")

    def __hash__(self) -> int:
        return 1

    def __bool__(self) -> bool:
        raise RuntimeError("no bool")

    def __len__(self) -> int:
        raise RuntimeError("no len")

    def __iter__(self) -> Any:
        raise RuntimeError("no iter")

    def __float__(self) -> float:
        raise RuntimeError("no float")

    def __index__(self) -> int:
        raise RuntimeError("no index")


def _values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-5, max_value=2000),
        st.integers(),
        st.sampled_from([400, 5000, -400]).map(lambda e: 10 ** abs(e) * (1 if e > 0 else -1)),  # huge ints
        st.sampled_from([2**63, -(2**63), 2**1000]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([math.nan, math.inf, -math.inf, 0.5, 1.0, 2.0]),
        st.text(max_size=12),
        st.sampled_from(["4", "RTX_4090", "rtx 4090", "RTX_9999", "H100", "US", "", " ", "0 * * * *"]),
        st.binary(max_size=4),
        st.sampled_from([object(), App, print, type, ValueError]),
        st.builds(Hostile),
    )
    domain = st.sampled_from([
        apothic.Retries(max_retries=2),
        apothic.Cron("0 * * * *"),
        apothic.Period(minutes=5),
        apothic.Secret.from_name("HF_TOKEN"),
        apothic.Volume.from_name("cache").mounted_at("/cache"),
        apothic.Volume.create("fast", backend="vast_local").mounted_at("/fast"),
        apothic.Volume.create("fast2", backend="vast_local").mounted_at("/fast/inner"),
        apothic.CloudBucketMount("team-datasets"),
        apothic.LivConfig(),
        apothic.Image.debian_slim(),
    ])
    leaves = st.one_of(scalars, domain)
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.tuples(inner, inner),
            st.frozensets(st.one_of(st.integers(), st.text(max_size=4), st.none()), max_size=3),
            st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(["gpu_ram", "gte", "eq", "in", "/a"])),
                            inner, max_size=3),
        ),
        max_leaves=6,
    )


EDGES = st.sampled_from([10**400, -(10**400), 2**1000, 2**1100, math.inf, -math.inf, math.nan, True, False, 0, -1,
                         None, "", "4"])
LEAVES = st.one_of(
    EDGES, st.integers(-3, 20_000), st.floats(), st.text(max_size=6),
    st.sampled_from([400, 5000]).map(lambda e: 10**e), st.builds(Hostile), st.builds(object),
    st.sampled_from(["verified", "amd64", "RTX_4090", "US", "us", "H100"]),
)


def _near(name: str) -> st.SearchStrategy[Any]:
    """Values close to what ``name`` takes, to reach the checks behind the type check."""
    if name == "offer_filters":
        ops = st.dictionaries(st.sampled_from(["gte", "lte", "eq", "neq", "in", "notin", "approx"]),
                              st.one_of(LEAVES, st.lists(LEAVES, max_size=3), st.frozensets(st.integers(), max_size=2)),
                              max_size=3)
        return st.dictionaries(st.sampled_from(["gpu_ram", "num_gpus", "verification", "gpu_name", "geolocation",
                                                "dph_total", "cpu_arch", "bogus"]), ops, max_size=3)
    if name in ("gpu", "geolocation"):
        names = st.sampled_from(["RTX_4090", "rtx 3080", "H100", "A100_SXM4", "RTX_9999", "US", "ca", "", "USA"])
        return st.one_of(names, st.lists(st.one_of(names, LEAVES), max_size=3))
    if name == "volumes":
        mounts = st.sampled_from([
            apothic.Volume.from_name("cache").mounted_at("/cache"),
            apothic.Volume.from_name("plain"),
            apothic.Volume.create("fast", backend="vast_local").mounted_at("/fast"),
            apothic.Volume.create("fast2", backend="vast_local").mounted_at("/fast/inner"),
            apothic.CloudBucketMount("team-datasets").mounted_at("/bucket"),
        ])
        paths = st.sampled_from(["/a", "/a/b", "/cache", "relative", "/", "/x/../y", "/fast"])
        return st.one_of(st.lists(st.one_of(mounts, LEAVES), max_size=3),
                         st.dictionaries(st.one_of(paths, st.text(max_size=4)), st.one_of(mounts, LEAVES), max_size=3))
    if name == "secrets":
        return st.lists(st.one_of(st.just(apothic.Secret.from_name("HF_TOKEN")), LEAVES), max_size=3)
    if name == "schedule":
        return st.sampled_from([apothic.Cron("0 * * * *"), apothic.Period(seconds=30), {"expression": "* * * * *"}])
    if name == "retries":
        return st.one_of(st.integers(-2, 120), st.just(apothic.Retries(max_retries=2)), st.just({}))
    return st.one_of(st.integers(-2, 2000), st.floats(min_value=-1, max_value=1e6), st.booleans())


VALUES = _values()
NEAR = {name: st.one_of(_near(name), _near(name), VALUES) for name in OPTION_NAMES}  # mostly near values
NAMES = st.one_of(st.sampled_from(OPTION_NAMES), st.sampled_from(["timeout", "gpus", "volume"]), st.text(max_size=8))
OPTIONS = st.one_of(
    st.dictionaries(NAMES, VALUES, max_size=5),
    st.lists(st.sampled_from(OPTION_NAMES), unique=True, max_size=5).flatmap(
        lambda names: st.fixed_dictionaries({n: NEAR[n] for n in names})),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(options=OPTIONS)
# Values that once escaped as TypeError, OverflowError or ValueError, or were taken as numbers.
@example(options={"offer_filters": {"gpu_ram": {"gte": 10**400}}})
@example(options={"offer_filters": {"dph_total": {"in": [1, 10**400]}}})
@example(options={"max_cost_per_hour_usd": 10**400, "cpu": 10**5000})
@example(options={"schedule": {"expression": "* * * * *"}, "retries": {}})
@example(options={"timeout_s": True, "cpu": "4", "memory_mb": 2048.0, "disk_gb": True})
@example(options={"offer_filters": {"gpu_ram": {"in": frozenset({object()})}}, "gpu": [object()]})
def test_random_options_give_a_function_or_an_apothic_refusal(options: dict[str, Any]) -> None:
    app = App("fuzz")
    try:
        decorator = app.function(**options)

        def fn() -> None: ...

        handle = decorator(fn)
    except NotSupportedError as e:
        assert "not supported yet" in str(e)
        return
    except InvalidError as e:
        text = str(e)
        assert "Fix:" in text or "Allowed:" in text, text
        return
    assert isinstance(handle, apothic.Function)
    # Whatever was accepted is what the function carries, in the declared types.
    assert app._spec(handle).timeout_s == handle.options.timeout_s
    for name in set(options) & NUMERIC:
        value = getattr(handle.options, name)
        assert value is None or (type(value) in (int, float) and math.isfinite(value)), (name, value)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["max_inputs", "target_inputs", "max_batch_size", "wait_ms"]),
                       st.one_of(st.integers(-2, 1200), VALUES),
                       max_size=4))
def test_random_marks_refuse_with_invalid_error_or_mark(kwargs: dict[str, Any]) -> None:
    for factory, names in ((apothic.concurrent, ("max_inputs", "target_inputs")),
                           (apothic.batched, ("max_batch_size", "wait_ms"))):
        args = {k: v for k, v in kwargs.items() if k in names}
        try:
            mark = factory(**args)
        except InvalidError:
            continue
        except TypeError as e:  # a required argument missing: Python's own check of the signature
            assert "required keyword-only argument" in str(e)
            continue

        def one(items: list[Any]) -> list[Any]:
            return items

        assert mark(one) is one


TEXTS = st.one_of(st.text(max_size=10), st.sampled_from(["cache", "/cache", "/", "a/../b", "team-datasets",
                                                          "https://s3.example.com", "vast_local", "cloud"]))


@settings(max_examples=200, deadline=None)
@given(name=st.one_of(TEXTS, LEAVES), path=st.one_of(TEXTS, LEAVES), backend=st.one_of(TEXTS, LEAVES),
       flag=st.one_of(st.booleans(), LEAVES),
       extra=st.dictionaries(st.text(max_size=5).filter(lambda k: k not in ("name", "mount_path_default")), LEAVES,
                             max_size=2))
def test_random_storage_and_secrets_are_made_or_refused_with_invalid_error(
    name: Any, path: Any, backend: Any, flag: Any, extra: dict[str, Any]
) -> None:
    makers = [
        lambda: apothic.Secret.from_name(name),
        lambda: apothic.Volume.from_name(name, create_if_missing=flag, mount_path_default=path),
        lambda: apothic.Volume.create(name, backend=backend, mount_path_default=path),
        lambda: apothic.Volume.cloud(name, mount_path_default=path, **extra),
        lambda: apothic.CloudBucketMount(name, access_key_secret=backend, secret_key_secret=backend,
                                         endpoint_url=path, prefix=backend, read_only=flag),
        lambda: apothic.Volume.from_name("cache").mounted_at(path),
    ]
    for make in makers:
        try:
            made = make()
        except InvalidError as e:
            assert "Fix:" in str(e)
            continue
        assert isinstance(made, (apothic.Secret, apothic.StorageMount))
