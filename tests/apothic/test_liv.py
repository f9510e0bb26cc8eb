"""Generated functions without a server: the surface and its checks, the answer checks, the
type checks, and the shipped form loaded as a container loads it."""

from __future__ import annotations

import asyncio
import pickle
import traceback
from typing import Any, Literal, Optional

import pytest

import apothic
from apothic import App, InvalidError, LivConfig
from apothic._app import pickle_function
from apothic._data._code import load_code
from apothic._liv._check import check_answer
from apothic._liv._config import as_config
from apothic._liv._frozen import LivCode, LivExampleFailed, LivLoadError
from apothic._liv._stub import signature_of, stub_source
from apothic._liv._types import fits

EXAMPLE = [((" READY ",), {})]


def make_app() -> App:
    return App("liv-unit")


def test_the_reference_example_decorates() -> None:
    app = make_app()

    @apothic.liv(self_debug=True, cache="account", examples=[((" READY ",), {})])
    @app.function(cpu=1, memory_mb=512, timeout_s=60)
    def normalize_status(status: str) -> str:
        """Return exactly `status:` followed by the lowercase input stripped of outer whitespace."""
        raise NotImplementedError

    cfg = normalize_status.options.liv
    assert isinstance(cfg, LivConfig) and cfg.self_debug and cfg.cache == "account" and cfg.rounds == 3
    assert cfg.examples == (((" READY ",), {}),)
    with pytest.raises(NotImplementedError):  # calling it here runs the stub: generated code never runs here
        normalize_status("x")


@pytest.mark.parametrize("given", [
    LivConfig(self_debug=True, examples=EXAMPLE, cache="app"),
    {"self_debug": True, "examples": EXAMPLE, "cache": "app"},
    (True, "app", EXAMPLE),
    (("self_debug", True), ("cache", "app"), ("examples", EXAMPLE)),
])
def test_liv_takes_a_config_a_dict_or_a_tuple_with_the_same_meaning(given: Any) -> None:
    app = make_app()

    @app.function(liv=given)
    def f(status: str) -> str:
        """Return the status."""

    assert f.options.liv == LivConfig(self_debug=True, examples=EXAMPLE, cache="app")


@pytest.mark.parametrize(("settings", "words"), [
    (dict(examples=[(" READY ",)]), ["examples[0] = (' READY ',)", "not an example", "((arg,), {})"]),
    (dict(examples=(("a",), {})), ["examples[0] = ('a',)", "examples[1] = {}"]),
    (dict(examples="abc"), ["examples = 'abc'", "a list of examples"]),
    (dict(cache="global"), ["cache = 'global'", "'account', 'app', 'none'"]),
    (dict(rounds=0), ["rounds = 0", "an int from 1 to 10"]),
    (dict(model="my model"), ["model = 'my model'", "without spaces"]),
    (dict(self_debug="yes"), ["self_debug = 'yes'", "True or False"]),
    (dict(seed=3), ["seed = 3", "unknown setting"]),
])
def test_bad_settings_are_refused_with_the_fix(settings: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(InvalidError) as info:
        apothic.liv(**settings)
    text = str(info.value)
    assert all(w in text for w in words), text
    assert "Fix: " in text


def test_the_stub_is_checked_at_decoration() -> None:
    app = make_app()
    with pytest.raises(InvalidError) as info:

        @apothic.liv(self_debug=True, examples=[(("a", "b"), {}), ((1,), {}, 5)])
        @app.function()
        def no_doc(status: str) -> str:
            return status.upper()

    text = str(info.value)
    assert "no_doc.__doc__ = None: the stub has no docstring" in text
    assert "the body of no_doc" in text and "make the body `raise NotImplementedError`" in text
    assert "examples[0]" in text and "too many positional arguments" in text
    assert "examples[1] expected result = 5" in text and "5 is not str" in text


def test_self_debug_needs_examples_and_generators_are_refused() -> None:
    app = make_app()
    with pytest.raises(InvalidError, match="there are no examples to run"):

        @apothic.liv(self_debug=True)
        @app.function()
        def f(x: int) -> int:
            """Return x."""
            raise NotImplementedError

    with pytest.raises(InvalidError, match="is a generator"):

        @app.function(liv={"examples": [((1,), {})]})
        def g(x: int):
            """Yield x."""
            yield x


def test_liv_goes_above_app_function_and_once() -> None:
    app = make_app()
    with pytest.raises(InvalidError, match="put @apothic.liv\\(...\\) above @app.function"):

        @app.function()
        @apothic.liv()
        def f(x: int) -> int:
            """Return x."""
            raise NotImplementedError

    with pytest.raises(InvalidError, match="give the settings once"):

        @apothic.liv()
        @app.function(liv={"cache": "none"})
        def g(x: int) -> int:
            """Return x."""
            raise NotImplementedError


def test_as_config_refuses_other_values() -> None:
    with pytest.raises(InvalidError, match="liv = 3"):
        as_config(3)
    with pytest.raises(InvalidError, match="at most 5 values"):
        as_config((True, "app", (), None, 3, "extra"))


SIG = "def f(x: int, *, scale: float=1.0) -> list[int]"  # as ast.unparse writes it


@pytest.mark.parametrize(("content", "problem"), [
    ("```python\ndef f(x: int, *, scale: float = 1.0) -> list[int]:\n    return [x]\n```", ""),
    ("Sure!\n```py\nimport math\n\ndef f(x: int, *, scale: float = 1.0) -> list[int]:\n    return [x]\n```\nDone.", ""),
    ("def f(x: int, *, scale: float = 1.0) -> list[int]:\n    return [x]\n", ""),  # no fence: the whole text
    ("```python\ndef f(x, *, scale=1.0):\n    return [x]\n```", "the signature differs from the stub's: expected "
     "`def f(x: int, *, scale: float=1.0) -> list[int]`, got `def f(x, *, scale=1.0)`"),
    ("```python\ndef f(x: int, *, scale: float = 1.0) -> list[int]\n    return [x]\n```", "the code does not parse: line 1"),
    ("```python\ndef g(x):\n    return x\n```", "defines no top-level function named f (it defines g)"),
    ("I cannot help with that.", "the code does not parse"),
    ("```javascript\nfunction f() {}\n```", "not one of Python"),
    ("", "the answer holds no code"),
])
def test_an_answer_is_checked_without_running_it(content: str, problem: str) -> None:
    source, got = check_answer(content, "f", SIG)
    assert problem in got if problem else got == "", got
    if not problem:
        assert "def f(" in source and "```" not in source


def test_the_stubs_signature_and_source_leave_the_decorators_out() -> None:
    app = make_app()

    @apothic.liv(examples=[((2,), {"scale": 2.0})])
    @app.function(timeout_s=5)
    def f(x: int, *, scale: float = 1.0) -> list[int]:
        """Return x scaled, as a list."""
        raise NotImplementedError

    source, node = stub_source(f.raw_f)
    assert source.startswith("def f(") and "@" not in source and signature_of(node) == SIG


@pytest.mark.parametrize(("value", "tp", "ok"), [
    ("a", str, True), (1, str, False), (1, float, True), (True, float, False), (None, Optional[int], True),
    ([1, 2], list[int], True), ([1, "2"], list[int], False), ({"a": 1}, dict[str, int], True),
    ({"a": "b"}, dict[str, int], False), ((1, "a"), tuple[int, str], True), ((1, 2, 3), tuple[int, ...], True),
    ((1,), tuple[int, str], False), ("x", Literal["x", "y"], True), ("z", Literal["x", "y"], False),
    (3, int | None, True), ("3", int | None, False), (object(), Any, True),
])
def test_results_are_checked_against_the_annotation(value: Any, tp: Any, ok: bool) -> None:
    assert fits(value, tp) is ok


def _stub(status: str) -> str:
    """Return the status."""
    raise NotImplementedError


async def _astub(n: int) -> int:
    """Return n doubled."""
    raise NotImplementedError


def shipped(stub: Any, source: str, check: bool = False) -> Any:
    """Pickle as the deploy does, then load as the container does."""
    code, _ = pickle_function(stub)
    frozen = LivCode(stub=code.raw(), source=source, function=stub.__name__, filename="<apothic-liv t.f>", check=check)
    blob = frozen.pickled(stub.__qualname__)
    assert source.encode() in pickle.loads(blob.raw()).function  # the source travels as text
    return load_code(blob)


def test_the_shipped_form_becomes_the_generated_function_where_it_loads() -> None:
    fn = shipped(_stub, "import re\n\ndef _stub(status: str) -> str:\n    return re.sub('s', 'S', status)\n")
    assert fn("status") == "StatuS" and fn.__qualname__ == "_stub" and fn.__doc__ == "Return the status."


def test_code_that_fails_to_load_fails_each_call_with_its_traceback() -> None:
    fn = shipped(_stub, "import not_a_module_anywhere\n\ndef _stub(status: str) -> str:\n    return status\n")
    with pytest.raises(LivLoadError, match="failed to load: ModuleNotFoundError") as info:
        fn("x")
    text = "".join(traceback.format_exception(info.value))
    assert '<apothic-liv t.f>", line 1' in text and "import not_a_module_anywhere" in text


def test_a_candidate_checks_each_example() -> None:
    check = shipped(_stub, "def _stub(status: str) -> str:\n    return len(status)\n", check=True)
    with pytest.raises(LivExampleFailed, match=r"returned 2 \(a int\), but _stub is annotated to return str"):
        check(0, ("ab",), {}, False, None)
    check = shipped(_stub, "def _stub(status: str) -> str:\n    return status * 2\n", check=True)
    assert check(0, ("ab",), {}, True, "abab") == "example 1: _stub('ab') returned 'abab'"
    with pytest.raises(LivExampleFailed, match=r"example 2: _stub\('ab'\) returned 'abab'; expected 'ab'"):
        check(1, ("ab",), {}, True, "ab")


def test_an_async_candidate_is_awaited_and_checked() -> None:
    check = shipped(_astub, "async def _astub(n: int) -> int:\n    return n * 2\n", check=True)
    assert asyncio.run(check(0, (4,), {}, True, 8)) == "example 1: _astub(4) returned 8"
    with pytest.raises(LivExampleFailed, match="expected 9"):
        asyncio.run(check(0, (4,), {}, True, 9))
