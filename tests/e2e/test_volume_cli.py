"""`apothic volume ...` run as a user runs it: on its own, and around a deployed function that
mounts the volume."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from ..conftest import S3Server
from .cli import apothic


@pytest.mark.parametrize("cmd", ["create", "list", "ls", "put", "get", "rm", "delete"])
def test_every_volume_command_has_help(cmd: str) -> None:
    assert apothic("volume", cmd, "--help").stdout.startswith(f"usage: apothic volume {cmd}")


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("APOTHIC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("APOTHIC_BLOB_STORE", raising=False)
    return tmp_path / "home"


def test_create_put_ls_get_rm_and_delete_a_default_volume(fresh_home: Path, tmp_path: Path) -> None:
    assert apothic("volume", "create", "notes").stdout == "notes: created (default)\n"
    assert apothic("volume", "create", "notes").stdout == "notes: exists already (default)\n"
    listed = json.loads(apothic("volume", "list", "--json").stdout)
    assert [(v["name"], v["backend"], v["location"]) for v in listed] == [
        ("notes", "default", str(fresh_home / "volumes" / "notes"))]
    src = tmp_path / "src"
    (src / "deep").mkdir(parents=True)
    (src / "one.txt").write_text("one")
    (src / "deep" / "two.txt").write_text("two")
    assert "put 2 file(s)" in apothic("volume", "put", "notes", str(src), "/docs").stdout
    assert "put 1 file(s)" in apothic("volume", "put", "notes", str(src / "one.txt"), "/top/").stdout
    failed = apothic("volume", "put", "notes", str(src / "one.txt"), "/top/", check=False)
    assert failed.returncode == 1 and "exists in volume 'notes'" in failed.stderr and "--force" not in failed.stdout
    assert apothic("volume", "ls", "notes").stdout.split() == ["docs/", "top/"]
    assert apothic("volume", "ls", "notes", "/", "-r").stdout.splitlines() == [
        "docs/", "docs/deep/", "docs/deep/two.txt\t3 B", "docs/one.txt\t3 B", "top/", "top/one.txt\t3 B"]
    assert apothic("volume", "get", "notes", "/docs/deep/two.txt", "-").stdout == "two"
    out = tmp_path / "out"
    assert "got 2 file(s)" in apothic("volume", "get", "notes", "/docs", str(out)).stdout
    assert (out / "deep" / "two.txt").read_text() == "two" and (out / "one.txt").read_text() == "one"
    again = apothic("volume", "get", "notes", "/docs", str(out), check=False)
    assert again.returncode == 1 and "exists. Fix: pass --force" in again.stderr
    refused = apothic("volume", "rm", "notes", "/docs", check=False)
    assert refused.returncode == 1 and "is a directory" in refused.stderr
    assert apothic("volume", "rm", "notes", "/docs", "-r").stdout == "notes: removed 2 file(s)\n"
    assert apothic("volume", "ls", "notes").stdout.split() == ["top/"]
    unconfirmed = apothic("volume", "delete", "notes", check=False)
    assert unconfirmed.returncode == 1 and "confirm with --yes" in unconfirmed.stderr
    assert apothic("volume", "delete", "notes", "--yes").stdout == "notes: deleted\n"
    gone = apothic("volume", "ls", "notes", check=False)
    assert gone.returncode == 1 and "apothic: error: volume 'notes' does not exist" in gone.stderr
    assert "apothic volume create notes" in gone.stderr
    bad = apothic("volume", "create", "no/slash", check=False)
    assert bad.returncode == 1 and "volume name 'no/slash' is not valid" in bad.stderr


def test_a_cloud_volume_from_the_cli(fresh_home: Path, s3_server: S3Server, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch, app_name: str) -> None:
    refused = apothic("volume", "create", "portable", "--backend", "cloud", check=False)
    assert refused.returncode == 1 and "needs an S3 store" in refused.stderr
    monkeypatch.setenv("APOTHIC_BLOB_STORE", f"s3://{s3_server.bucket}/{app_name}")
    monkeypatch.setenv("APOTHIC_BLOB_S3_ENDPOINT_URL", s3_server.endpoint_url)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    assert apothic("volume", "create", "portable", "--backend", "cloud").stdout == "portable: created (cloud)\n"
    (tmp_path / "w.bin").write_bytes(b"w" * 2048)
    apothic("volume", "put", "portable", str(tmp_path / "w.bin"), "/weights/w.bin")
    assert apothic("volume", "ls", "portable", "/weights").stdout == "weights/w.bin\t2.0 KiB\n"
    assert [v["backend"] for v in json.loads(apothic("volume", "list", "--json").stdout)] == ["cloud"]
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_server.bucket,
                                                                 Prefix=f"{app_name}/volumes/")["Contents"]]
    assert keys == [f"{app_name}/volumes/portable/weights/w.bin"]
    apothic("volume", "delete", "portable", "--yes")
    assert json.loads(apothic("volume", "list", "--json").stdout) == []


@pytest.mark.usefixtures("control_worker")
def test_files_put_with_the_cli_are_at_the_mount_path_and_the_functions_writes_come_back(
        tmp_path: Path, app_name: str) -> None:
    volume = f"{app_name}-files"[:60]
    (tmp_path / "input.txt").write_text("given by hand")
    apothic("volume", "create", volume)
    apothic("volume", "put", volume, str(tmp_path / "input.txt"), "/in/input.txt")
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(f"""
        import apothic

        app = apothic.App({app_name!r})

        @app.function(volumes={{"/files": apothic.Volume.from_name({volume!r})}})
        def shout() -> str:
            text = open("/files/in/input.txt").read()
            with open("/files/result.txt", "w") as f:
                f.write(text.upper())
            return text
    """))
    run = apothic("run", f"{script}::shout", timeout=300)
    assert run.stdout.strip() == "given by hand"
    assert apothic("volume", "get", volume, "/result.txt", "-").stdout == "GIVEN BY HAND"
