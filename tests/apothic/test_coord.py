"""apothic.Dict and apothic.Queue without a server: key identity, stored values, argument checks.

Everything here fails before any I/O (or needs none); the behaviour against a real control
plane is in tests/workflows/test_coord.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import cloudpickle
import pytest

import apothic
from apothic._control._config import BlobSettings
from apothic._coord import _values
from apothic._coord._keys import canonical, key_id
from apothic._data._serialization import PY_VERSION


class Color(enum.IntEnum):
    RED = 1


class Name(str, enum.Enum):
    ADA = "ada"


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


# --- key identity ---


@pytest.mark.parametrize("a,b", [
    (1, 1.0), (1, True), (0, -0.0), (0, False), (2, complex(2, 0)), (Color.RED, 1), (Name.ADA, "ada"),
    ((1, "a"), (1.0, "a")), (frozenset({"x", "y", "z"}), frozenset({"z", "y", "x"})), (b"k", bytearray(b"k")),
    (float("nan"), float("nan")),
])
def test_equal_keys_share_an_id(a: object, b: object) -> None:
    assert key_id(a) == key_id(b)


@pytest.mark.parametrize("a,b", [
    (1, "1"), ("a", b"a"), (1, 1.5), ((1, 2), (2, 1)), (("ab", "c"), ("a", "bc")), ((), ""), (None, 0),
    ((1,), 1), (frozenset({1}), (1,)), (float("inf"), float("-inf")), (0.1, 0.1000000001),
])
def test_different_keys_have_different_ids(a: object, b: object) -> None:
    assert key_id(a) != key_id(b)


def test_tuples_made_of_separate_but_equal_strings_share_an_id() -> None:
    # Pickles differ here (the memo refers to the first string object), canonical forms do not.
    s1, s2 = "same text", "".join(["same ", "text"])
    assert s1 is not s2
    assert pickle.dumps((s1, s1)) != pickle.dumps((s1, s2))
    assert key_id((s1, s1)) == key_id((s1, s2))


def test_frozenset_ids_do_not_depend_on_the_hash_seed() -> None:
    code = ("from apothic._coord._keys import key_id; "
            "print(key_id(frozenset({'alpha', 'beta', 'gamma', 'delta', ('t', 1)})))")
    ids = {
        subprocess.run([sys.executable, "-c", code], env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin"},
                       capture_output=True, text=True, check=True).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert len(ids) == 1


def test_keys_of_other_types_are_identified_by_their_pickle() -> None:
    assert canonical(Point(1, 2)) is None
    assert key_id(Point(1, 2)) == key_id(Point(1, 2))
    assert key_id(Point(1, 2)) != key_id(Point(2, 1))
    assert key_id((1, Point(1, 2))) == key_id((1, Point(1, 2)))


def test_an_unpicklable_key_is_an_invalid_error_naming_it_and_the_fix() -> None:
    d = apothic.Dict.from_name("no-io-here")
    with pytest.raises(apothic.InvalidError) as e:
        d.get(threading.Lock())
    msg = str(e.value)
    assert "Dict.get: the key" in msg and "cannot be pickled" in msg and "Fix: use a key of a plain type" in msg
    with pytest.raises(apothic.InvalidError, match="Dict.put: the key .* cannot be pickled"):
        d.put((1, threading.Lock()), "v")
    with pytest.raises(apothic.InvalidError, match="Dict.put: the value for key 'k' .* cannot be pickled"):
        d["k"] = threading.Lock()


def test_a_key_over_the_limit_is_refused_with_the_fix() -> None:
    with pytest.raises(apothic.InvalidError, match=r"pickles to 5,01\d bytes, over the 4,096-byte limit.*sha256"):
        apothic.Dict.from_name("no-io-here").put("k" * 5000, 1)


# --- stored values ---


@pytest.fixture
def blobs(tmp_path: Path) -> BlobSettings:
    return BlobSettings(store=str(tmp_path / "blobs"))


def run(coro):
    return asyncio.run(coro)


def test_small_values_are_inline_and_large_ones_references(blobs: BlobSettings, tmp_path: Path) -> None:
    small = cloudpickle.dumps({"a": 1})
    stored = run(_values.pack(small, blobs, what="v"))
    assert stored.startswith(f"{PY_VERSION}:") and not _values.is_reference(stored)
    assert run(_values.unpack(stored, blobs, what="v")) == {"a": 1}

    big_value = list(range(5000))
    big = cloudpickle.dumps(big_value)
    assert len(big) >= _values.INLINE_MAX_BYTES
    ref = run(_values.pack(big, blobs, what="v"))
    assert _values.is_reference(ref) and len(ref) < 300
    assert run(_values.unpack(ref, blobs, what="v")) == big_value
    assert len(list((tmp_path / "blobs").rglob("*"))) > 0


def test_the_inline_limit_follows_a_lower_blob_threshold(tmp_path: Path) -> None:
    low = BlobSettings(store=str(tmp_path / "b"), threshold_bytes=100)
    assert _values.inline_limit(low) == 100
    assert _values.is_reference(run(_values.pack(b"x" * 200, low, what="v")))


def test_a_value_from_another_python_is_refused_clearly(blobs: BlobSettings) -> None:
    stored = _values.inline(cloudpickle.dumps(1)).replace(PY_VERSION, "2.7", 1)
    with pytest.raises(apothic.InvalidError, match="pickled by Python 2.7.*same Python minor version"):
        run(_values.unpack(stored, blobs, what="the value for key 'k'"))


def test_a_value_whose_module_is_missing_here_names_the_fix(blobs: BlobSettings) -> None:
    # A pickle of a class from a module this process cannot import.
    module = Point.__module__.encode()
    raw = pickle.dumps(Point(1, 2)).replace(module, b"zz" + b"_" * (len(module) - 2))  # same length
    with pytest.raises(apothic.InvalidError, match="cannot be unpickled here: ModuleNotFoundError.*install it"):
        run(_values.unpack(_values.inline(raw), blobs, what="the value for key 'k'"))


# --- arguments, checked before any I/O ---


@pytest.mark.parametrize("name", ["", "has space", "x" * 64, "-lead", "a:b", 7, None])
def test_bad_names_are_refused(name: object) -> None:
    for cls in (apothic.Dict, apothic.Queue):
        with pytest.raises(apothic.InvalidError, match="name .* is invalid: allowed are 1-63"):
            cls.from_name(name)  # type: ignore[arg-type]


def test_the_constructor_points_to_from_name_and_ephemeral() -> None:
    with pytest.raises(apothic.InvalidError, match=r"from_name\('my-dict', create_if_missing=True\).*ephemeral"):
        apothic.Dict()
    with pytest.raises(apothic.InvalidError, match=r"apothic.Queue.from_name\('my-queue'"):
        apothic.Queue()


def test_a_queue_item_over_one_mib_is_refused_with_the_fix() -> None:
    q = apothic.Queue.from_name("no-io-here")
    with pytest.raises(apothic.InvalidError) as e:
        q.put(b"x" * (1024 * 1024 + 1))
    msg = str(e.value)
    assert "over the 1 MiB (1,048,576-byte) limit of one Queue item" in msg
    assert "Fix: store the data in an apothic.Dict or a Volume and put its key on the queue" in msg
    with pytest.raises(apothic.InvalidError, match="Queue.put_many: the item"):
        q.put_many([1, b"y" * (2 * 1024 * 1024)])
    with pytest.raises(apothic.InvalidError, match="Queue.put: the item .* cannot be pickled"):
        q.put(threading.Lock())


@pytest.mark.parametrize("call,match", [
    (lambda q: q.put(1, partition=""), r"partition=''\): allowed: None .* 1-64 bytes"),
    (lambda q: q.put(1, partition="é" * 40), "1-64 bytes"),
    (lambda q: q.get(partition=3), r"partition=3\)"),
    (lambda q: q.get(timeout=-1), r"timeout=-1\): allowed: None .* seconds >= 0"),
    (lambda q: q.get_many(0), r"n_values=0\): allowed: an int >= 1"),
    (lambda q: q.put(1, partition_ttl=0), r"partition_ttl=0\): allowed: 1 to 2,592,000 seconds"),
    (lambda q: q.len(partition="a", total=True), "not both"),
    (lambda q: q.clear(partition="a", all=True), "not both"),
    (lambda q: q.put_many([0] * 5001), "5,001 items at once"),
])
def test_bad_queue_arguments_are_refused(call, match: str) -> None:
    with pytest.raises(apothic.InvalidError, match=match):
        call(apothic.Queue.from_name("no-io-here"))


def test_handles_pickle_by_name_without_their_connection() -> None:
    d = apothic.Dict.from_name("shared", create_if_missing=True, client=apothic.ControlPlaneClient("10.0.0.1:7233"))
    again = pickle.loads(cloudpickle.dumps(d))
    assert type(again) is apothic.Dict and again.name == "shared" and again.workflow_id == "apothic-dict:shared"
    assert again._cp._address is None  # it uses the connection of the process that unpickles it
    assert repr(again) == "apothic.Dict.from_name('shared')"
    q = pickle.loads(cloudpickle.dumps(apothic.Queue.from_name("jobs")))
    assert q.workflow_id == "apothic-queue:jobs" and bool(q)
    assert repr(apothic.Dict.objects) == "apothic.Dict.objects"
