"""`apothic secret ...` run as a user runs it: the store, the checks, and a function that uses one.

The store commands run against a store of their own (``APOTHIC_SECRETS_FILE``); the last tests
use the default store under the session's ``APOTHIC_HOME``, which the session's control worker
reads, and deploy and run an app file with ``apothic run``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import stat
import textwrap
from pathlib import Path

import pytest

from apothic._secrets import SecretStore, encoded_forms

from .cli import apothic

pytestmark = pytest.mark.usefixtures("control_worker")


@pytest.fixture
def own_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "store" / "secrets.json"
    monkeypatch.setenv("APOTHIC_SECRETS_FILE", str(path))
    return path


def failed(*args: str) -> str:
    """The stderr of a command that must fail with exit code 1 (one error line, no traceback)."""
    proc = apothic(*args, check=False)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("apothic: error: ") and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


@pytest.mark.parametrize("cmd", [["secret"], ["secret", "create"], ["secret", "list"], ["secret", "delete"]])
def test_every_secret_command_has_help(cmd: list[str]) -> None:
    out = apothic(*cmd, "--help").stdout
    assert out.startswith(f"usage: apothic {' '.join(cmd)}"), out


def test_create_list_replace_delete(own_store: Path) -> None:
    value = f"hf_{secrets.token_hex(12)}"
    out = apothic("secret", "create", "HF_TOKEN", f"HF_TOKEN={value}", "HF_HOME=/cache").stdout
    assert out == (f"created secret 'HF_TOKEN' with the keys HF_HOME, HF_TOKEN in {own_store}\n"
                   "use it with @app.function(secrets=[apothic.Secret.from_name('HF_TOKEN')])\n")
    assert stat.S_IMODE(own_store.stat().st_mode) == 0o600
    assert stat.S_IMODE(own_store.parent.stat().st_mode) == 0o700
    assert SecretStore(own_store).read("HF_TOKEN") == {"HF_TOKEN": value, "HF_HOME": "/cache"}

    table = apothic("secret", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "KEYS", "UPDATED"]
    assert table[1].split()[:3] == ["HF_TOKEN", "HF_HOME,", "HF_TOKEN"] and table[1].endswith(" UTC")
    listed = json.loads(apothic("secret", "list", "--json").stdout)
    assert [(s["name"], s["keys"]) for s in listed] == [("HF_TOKEN", ["HF_HOME", "HF_TOKEN"])]
    assert value not in json.dumps(listed) and value not in "\n".join(table)

    err = failed("secret", "create", "HF_TOKEN", "HF_TOKEN=other")
    assert err == ("apothic: error: secret 'HF_TOKEN' already exists (keys HF_HOME, HF_TOKEN); allowed: a name not in "
                   "the store. Fix: replace it with `apothic secret create HF_TOKEN ... --force` (SDK: "
                   "overwrite=True), or delete it first.\n")
    out = apothic("secret", "create", "HF_TOKEN", "HF_TOKEN=other", "--force").stdout
    assert out.startswith(f"replaced secret 'HF_TOKEN' with the keys HF_TOKEN in {own_store}\n")
    assert SecretStore(own_store).read("HF_TOKEN") == {"HF_TOKEN": "other"}

    assert apothic("secret", "delete", "HF_TOKEN").stdout == f"deleted secret 'HF_TOKEN' from {own_store}\n"
    err = failed("secret", "delete", "HF_TOKEN")
    assert err == (f"apothic: error: secret 'HF_TOKEN' is not in the secret store {own_store}. Fix: check the name "
                   "with `apothic secret list`, or pass --allow-missing (SDK: allow_missing=True).\n")
    proc = apothic("secret", "delete", "HF_TOKEN", "--allow-missing")
    assert proc.stderr == f"no secret 'HF_TOKEN' in {own_store} (nothing to delete)\n"
    assert apothic("secret", "list").stdout == (
        f"no secrets in {own_store} (create one with `apothic secret create NAME KEY=VALUE`)\n")
    assert json.loads(apothic("secret", "list", "--json").stdout) == []


def test_bad_input_is_named_and_values_are_never_echoed(own_store: Path) -> None:
    value = f"ghp_{secrets.token_hex(16)}"
    err = failed("secret", "create", "bad name", value, "1X=a", f"APOTHIC_TOKEN={value}", "A=1", "A=2")
    assert err.splitlines() == [
        "apothic: error: apothic secret create bad name: 5 problem(s):",
        "  - name = 'bad name': invalid name; allowed: 1-63 letters, digits, '_', '-' and '.', starting with a letter "
        "or digit. Fix: rename it, e.g. Secret.from_name('HF_TOKEN').",
        f"  - pair 1 (<hidden, {len(value)} characters>): no '='; allowed: KEY=VALUE, e.g. HF_TOKEN=hf_abc. Fix: "
        "write KEY=VALUE, with the variable's name before the '='.",
        "  - A: given twice; allowed: each key once. Fix: keep one A=VALUE.",
        "  - key = '1X': not an environment variable name; allowed: an environment variable name: letters, digits and "
        "'_', not starting with a digit, at most 16384 characters, not starting with APOTHIC_ (the runtime's own). "
        "Fix: write '_1X'.",
        "  - key = 'APOTHIC_TOKEN': reserved for the runtime's own variables; allowed: an environment variable name: "
        "letters, digits and '_', not starting with a digit, at most 16384 characters, not starting with APOTHIC_ "
        "(the runtime's own). Fix: rename it, e.g. 'TOKEN'.",
    ]
    assert all(form not in err for form in encoded_forms(value))
    err = failed("secret", "create", "empty")
    assert err == ("apothic: error: apothic secret create empty: 1 problem(s):\n  - KEY=VALUE: none given; allowed: at "
                   "least one pair. Fix: e.g. apothic secret create empty HF_TOKEN=hf_abc, or --from-dotenv .env.\n")
    assert not own_store.exists()  # nothing was written
    proc = apothic("secret", "create", check=False)
    assert proc.returncode == 2 and "the following arguments are required: NAME" in proc.stderr


def test_pairs_from_a_dotenv_or_json_file(own_store: Path, tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text('# the database\nexport PGUSER=app\nPGPASSWORD="p w\\"1\\n"\nPGHOST=db # inline\n'
                      "PGOPTIONS='-c x=1'\n\n")
    apothic("secret", "create", "db", "--from-dotenv", str(dotenv), "PGHOST=override")
    assert SecretStore(own_store).read("db") == {"PGUSER": "app", "PGPASSWORD": 'p w"1\n', "PGHOST": "override",
                                                 "PGOPTIONS": "-c x=1"}
    data = tmp_path / "s.json"
    data.write_text(json.dumps({"TOKEN": "t-1", "N": 5}))
    err = failed("secret", "create", "fromjson", "--from-json", str(data))
    assert "  - N = <a value of type int>: not a string" in err
    data.write_text(json.dumps({"TOKEN": "t-1"}))
    apothic("secret", "create", "fromjson", "--from-json", str(data))
    assert SecretStore(own_store).read("fromjson") == {"TOKEN": "t-1"}
    dotenv.write_text(f"OK=1\nsecret-{secrets.token_hex(8)} and more\n")
    err = failed("secret", "create", "x", "--from-dotenv", str(dotenv))
    assert err == (f"apothic: error: --from-dotenv {dotenv}: line 2 is not KEY=VALUE; allowed: KEY=VALUE lines, '#' "
                   "comments and blank lines (quoted values on one line). Fix: correct that line.\n")
    err = failed("secret", "create", "x", "--from-json", str(tmp_path / "none.json"))
    assert err.startswith(f"apothic: error: --from-json {tmp_path / 'none.json'}: cannot be read (No such file")


def test_a_function_gets_its_secret_and_a_missing_one_fails_with_the_fix(tmp_path: Path, app_name: str) -> None:
    name = f"cli-{app_name}"[:63]
    value = f"tok-{secrets.token_hex(16)}"
    script = tmp_path / "uses_secret.py"
    script.write_text(textwrap.dedent(f"""
        import hashlib, os
        import apothic

        app = apothic.App("{app_name}")

        @app.function(secrets=[apothic.Secret.from_name("{name}")])
        def digest() -> str:
            return hashlib.sha256(os.environ["API_TOKEN"].encode()).hexdigest()
    """))
    apothic("secret", "create", name, f"API_TOKEN={value}")  # the default store: the control worker's
    try:
        proc = apothic("run", f"{script}::digest")
        assert proc.stdout.strip() == hashlib.sha256(value.encode()).hexdigest()
        assert value not in proc.stdout + proc.stderr
    finally:
        apothic("secret", "delete", name)
    # A new version, deployed after the secret is gone, cannot start: the job fails at once, saying so.
    script.write_text(script.read_text().replace('return hashlib', 'return "v2:" + hashlib'))
    proc = apothic("run", f"{script}::digest", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(line for line in proc.stderr.splitlines() if line.startswith("apothic: error: "))
    assert line.startswith("apothic: error: job job-"), line
    assert f": cannot start a container of {app_name}.digest v2: secret {name!r} is not in the secret store " in line
    assert f"Fix: create it where the control worker reads it: `apothic secret create {name} KEY=VALUE`" in line
