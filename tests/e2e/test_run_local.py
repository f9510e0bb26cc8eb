"""The pieces of the developer loop that need no server: entrypoint flags, app-wide defaults,
the spellings of the async forms (and the errors of the wrong ones), image-only imports."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import cloudpickle
import pytest

import apothic
from apothic import InvalidError

from ..conftest import ROOT

# No server: a call that would reach one fails at once instead of starting the embedded default.
pytestmark = pytest.mark.usefixtures("no_server")


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from ..conftest import free_port

    monkeypatch.setenv("APOTHIC_TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")


def flags_app() -> tuple[apothic.App, object]:
    app = apothic.App("flags-demo")

    @app.local_entrypoint()
    def main(n: int, name: str = "x", rate: float = 0.5, shout: bool = False, limit: int | None = None,
             max_items=3) -> None: ...

    return app, main


def test_entrypoint_flags_are_typed_from_the_signature() -> None:
    app, main = flags_app()
    assert app.registered_entrypoints == {"main": main}
    parse = lambda *argv: main.parse(list(argv), "run")
    assert parse("--n", "5") == {"n": 5}
    assert parse("--n=5", "--name", "Ada", "--rate", "2", "--shout", "--limit", "7", "--max-items", "9") == {
        "n": 5, "name": "Ada", "rate": 2.0, "shout": True, "limit": 7, "max_items": 9}
    assert parse("--n", "1", "--no-shout", "--max_items", "4") == {"n": 1, "shout": False, "max_items": 4}
    assert parse("--n", "-3", "--shout=false") == {"n": -3, "shout": False}
    usage = main.usage("app.py::main")
    assert usage.splitlines()[0] == ("usage: apothic run app.py::main --n INT [--name STR] [--rate FLOAT] "
                                     "[--shout/--no-shout] [--limit INT] [--max-items INT]")
    assert "int, required" in usage and "float, default 0.5" in usage


@pytest.mark.parametrize("argv, words", [
    (["--n", "five"], ["--n 'five' is not an int", "parameter n: int", "Fix: pass a whole number, e.g. --n 5"]),
    (["--n", "1", "--rate", "fast"], ["--rate 'fast' is not a float", "e.g. --rate 0.5"]),
    (["--n", "1", "--shout=maybe"], ["--shout='maybe' is not a bool", "--no-shout for False"]),
    (["--n"], ["--n needs a value (int)", "Fix: write --n 5"]),
    (["--name", "x"], ["missing required flag(s) --n", "Fix: pass them, e.g. --n 5"]),
    (["--n", "1", "--nmae", "x"], ["unknown flag --nmae (did you mean --name?)"]),
    (["--n", "1", "--n", "2"], ["--n is given twice"]),
    (["5"], ["'5' is not a flag", "Fix: write `--NAME VALUE`"]),
])
def test_a_bad_flag_names_the_flag_the_value_and_the_fix(argv: list[str], words: list[str]) -> None:
    _, main = flags_app()
    with pytest.raises(InvalidError) as e:
        main.parse(argv, "apothic run app.py")
    assert str(e.value).startswith("apothic run app.py: ")
    for word in words:
        assert word in str(e.value)


def test_entrypoints_that_a_command_line_cannot_call_are_refused_when_decorated() -> None:
    app = apothic.App("flags-refused")
    with pytest.raises(InvalidError, match=r"parameter xs \(list\[int\]\): a flag is a str, int, float or bool"):
        @app.local_entrypoint()
        def lists(xs: list[int]) -> None: ...
    with pytest.raises(InvalidError, match=r"parameter \*args: a command line gives named flags only"):
        @app.local_entrypoint()
        def star(*args: int) -> None: ...
    with pytest.raises(InvalidError, match=r"without parentheses.*Fix: write `@app.local_entrypoint\(\)`"):
        @app.local_entrypoint
        def bare() -> None: ...

    @app.local_entrypoint(name="go")
    def first() -> int:
        return 7

    assert first() == 7 and list(app.registered_entrypoints) == ["go"]
    with pytest.raises(InvalidError, match="already has a local entrypoint named 'go'"):
        app.local_entrypoint(name="go")(lambda: None)


def test_app_wide_defaults_apply_where_a_function_sets_none() -> None:
    image = apothic.Image.debian_slim().env(A="1")
    own = apothic.Image.debian_slim().env(B="2")
    token = apothic.Secret.from_name("token")
    cache = apothic.Volume.from_name("cache")
    app = apothic.App("defaults-demo", image=image, secrets=[token], volumes={"/cache": cache})

    @app.function()
    def plain() -> None: ...

    @app.function(image=own, secrets=[], volumes=None)
    def custom() -> None: ...

    assert plain.options.image is image and [s.name for s in plain.options.secrets] == ["token"]
    assert app._spec(plain).mounts[0].path == "/cache" and app._spec(plain).secrets == ["token"]
    assert custom.options.image is own and app._spec(custom).secrets == [] and app._spec(custom).mounts == []
    with pytest.raises(InvalidError) as e:
        apothic.App("defaults-bad", image="python:3.11", secrets=token)  # type: ignore[arg-type]
    assert str(e.value).startswith("App('defaults-bad', ...): 2 problem(s)") and "image" in str(e.value)


def test_async_forms_have_two_spellings_and_wrong_ones_name_the_right_one() -> None:
    app = apothic.App("aio-spellings")

    @app.function()
    def f(x: int) -> int:
        return x

    job = apothic.Job.from_id("job-aio-spellings")
    assert f.remote.aio.__name__ == f.aio.remote.__name__ == "remote"
    assert callable(job.wait.aio) and callable(apothic.Job.gather.aio)
    assert "remote" in dir(f.aio) and "gather" in dir(job.aio)

    async def wrong() -> list[str]:
        errors = []
        try:
            await f.remote(1)  # the blocking form, awaited: refused before it blocks the loop (no I/O)
        except InvalidError as e:
            errors.append(str(e))
        try:
            await job.wait()
        except InvalidError as e:
            errors.append(str(e))
        for it in (f.map.aio([1]), f.aio.map([1])):
            try:
                await it  # type: ignore[misc]
            except InvalidError as e:
                errors.append(str(e))
        try:
            async for _ in f.remote_gen(1):  # type: ignore[attr-defined]
                pass
        except InvalidError as e:
            errors.append(str(e))
        return errors

    errors = asyncio.run(wrong())
    assert len(errors) == 5, errors
    assert "Fix: in async code write `await fn.remote.aio(...)` (or `await fn.aio.remote(...)`)" in errors[0]
    assert "`await job.wait.aio(...)`" in errors[1]
    assert errors[2] == errors[3] and "`async for x in fn.map.aio(...)`" in errors[2]
    assert "`[x async for x in fn.map.aio(...)]`" in errors[2]
    assert "write `async for x in fn.remote_gen.aio(...)`" in errors[4]
    with pytest.raises(InvalidError, match=r"the \.aio form is an async iterator\. Fix: write `async for"):
        for _ in f.map.aio([1]):
            pass


def test_gather_takes_jobs_only() -> None:
    with pytest.raises(InvalidError, match=r"Job.gather\(\.\.\.\) takes Jobs, got str"):
        apothic.Job.gather(apothic.Job.from_id("job-x"), "job-y")  # type: ignore[arg-type]
    assert apothic.Job.gather() == []


def test_is_local_and_current_job_id_here() -> None:
    assert apothic.is_local() is True
    assert apothic.current_job_id() is None


def test_image_only_imports_become_placeholders_that_import_in_the_container(tmp_path: Path) -> None:
    script = tmp_path / "imports_demo.py"
    script.write_text(textwrap.dedent("""
        import pickle, cloudpickle, apothic
        image = apothic.Image.debian_slim()
        with image.imports():
            import json as js
            import apothic_no_such_module as missing
            from apothic_other_missing import helper
        def uses():
            return missing.compute(), helper
        print(js.__name__, type(missing).__name__, type(helper).__name__)
        try:
            missing.compute
        except apothic.InvalidError as e:
            print("local use:", e)
        try:
            pickle.loads(cloudpickle.dumps(uses))()
        except ModuleNotFoundError as e:
            print("unpickled:", e)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=str(ROOT), check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "json ImageOnly ImageOnly"
    assert lines[1].startswith("local use: apothic_no_such_module is imported only inside the function's image")
    assert "Fix: use it inside a function that runs remotely" in lines[1]
    # Unpickled where the module is missing too, the placeholder imports it (in a container it exists).
    assert lines[2] == "unpickled: No module named 'apothic_no_such_module'"


def test_inside_a_container_image_imports_raise() -> None:
    code = "import apothic\nwith apothic.Image.debian_slim().imports():\n    import apothic_no_such_module\n"
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                          env={"APOTHIC_CONTAINER_ID": "c-test", "PATH": "/usr/bin"})
    assert proc.returncode == 1 and "ModuleNotFoundError" in proc.stderr
    ok = cloudpickle.loads(cloudpickle.dumps(apothic.Image.debian_slim()))  # images still pickle
    assert pickle.dumps(ok)
