"""Deployed code keeps its file names and carries its source lines (``apothic._data._code``):
a fresh interpreter without the user's file formats a traceback with both."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

from apothic._data._code import SOURCE_LIMIT_BYTES, UserCode, dump_code, load_code
from apothic._data._serialization import CloudPickled

USER_FILE = textwrap.dedent('''\
    import json
    import sys

    from apothic._data._code import dump_code

    NOT_SHIPPED = "a line of no pickled function"


    def parse(text):
        return json.loads(text)["value"]


    def handler(text):
        value = parse(text)
        return value * 2


    if __name__ == "__main__":
        code = dump_code(handler)
        sys.stdout.write(code.data)
''')

CONTAINER = textwrap.dedent('''\
    import sys, traceback
    from apothic._data._code import load_code
    from apothic._data._serialization import CloudPickled

    fn = load_code(CloudPickled(data=sys.stdin.read(), kind="code"))
    print(fn('{"value": 21}'))
    try:
        fn("{}")
    except KeyError as e:
        traceback.print_exception(e)
''')


def deploy(tmp_path: Path, text: str) -> str:
    user = tmp_path / "user_app.py"
    user.write_text(text)
    out = subprocess.run([sys.executable, str(user)], capture_output=True, text=True, check=True, cwd=tmp_path)
    user.unlink()  # the container has no copy of it
    return out.stdout


def run_container(data: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CONTAINER], input=data, capture_output=True, text=True, check=True)


def line_no(text: str) -> int:
    return USER_FILE.splitlines().index(text) + 1


def test_a_traceback_shows_the_users_file_and_lines_without_the_file(tmp_path: Path) -> None:
    run = run_container(deploy(tmp_path, USER_FILE))
    assert run.stdout == "42\n"
    user = tmp_path / "user_app.py"
    handler, parse = "    value = parse(text)", '    return json.loads(text)["value"]'
    assert f'File "{user}", line {line_no(handler)}, in handler\n{handler}\n' in run.stderr, run.stderr
    assert f'File "{user}", line {line_no(parse)}, in parse\n{parse}\n' in run.stderr, run.stderr
    assert "<dynamic-code>" not in run.stderr


def test_only_the_lines_of_the_pickled_code_travel(tmp_path: Path) -> None:
    shipped = CloudPickled(data=deploy(tmp_path, USER_FILE), kind="code").load()
    assert isinstance(shipped, UserCode)
    (name, data), = shipped.sources.items()
    text = zlib.decompress(data).decode()
    lines = text.splitlines()
    assert name == str(tmp_path / "user_app.py")
    assert "def parse(text):" in lines and "    return value * 2" in lines
    assert "NOT_SHIPPED" not in text and "import json" not in text
    assert lines[line_no("def handler(text):") - 1] == "def handler(text):"  # line numbers hold


def test_a_file_over_the_limit_is_not_shipped(tmp_path: Path) -> None:
    filler = "        # a long comment inside the function\n" * (SOURCE_LIMIT_BYTES // 40)
    big = USER_FILE.replace("    value = parse(text)\n", "    value = parse(text)\n" + filler)
    code = CloudPickled(data=deploy(tmp_path, big), kind="code")
    shipped = code.load()
    assert isinstance(shipped, UserCode) and shipped.sources == {}
    run = run_container(code.data)  # file names and line numbers still; no lines
    line = line_no("    value = parse(text)")
    assert f'File "{tmp_path / "user_app.py"}", line {line}, in handler\n  File' in run.stderr, run.stderr


def test_installed_files_are_not_shipped_and_old_code_still_loads() -> None:
    import json

    code = dump_code(lambda text: json.loads(text))  # this test file is the user's; json is not
    shipped = code.load()
    assert list(shipped.sources) == [__file__]
    assert load_code(code)('{"a": 1}') == {"a": 1}
    old = CloudPickled.dump(lambda: "pickled before sources were shipped", kind="code")
    assert load_code(old)() == "pickled before sources were shipped"
