"""The secret store: its file, permissions, writers, checks and wording; ``apothic.Secret.objects``.

Every error is read whole: it names the secret, the key or the file, never a value.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import multiprocessing
import os
import stat
import threading
from pathlib import Path

import pytest

import apothic
from apothic import InvalidError, NotFoundError
from apothic._control._config import load_settings
from apothic._secrets import MissingSecretsError, SecretExistsError, SecretStore, encoded_forms, redact, store_for
from apothic._secrets import _store
from apothic.placement.providers.process import passed_env

VALUE = 'v-9f1c"q\\ü'  # JSON escapes it, base64 hides it: both forms are looked for


@pytest.fixture
def store(tmp_path: Path) -> SecretStore:
    return SecretStore(tmp_path / "home" / "secrets" / "secrets.json", private_folder=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_list_read_delete(store: SecretStore) -> None:
    assert store.list() == [] and not store.path.exists()
    assert store.create("HF_TOKEN", {"HF_TOKEN": VALUE, "HF_HOME": "/cache"}) == "created"
    assert store.create("db.prod", {"PGPASSWORD": "pw-1"}) == "created"
    infos = store.list()
    assert [(i.name, i.keys) for i in infos] == [("HF_TOKEN", ("HF_HOME", "HF_TOKEN")), ("db.prod", ("PGPASSWORD",))]
    assert infos[0].created_at == infos[0].updated_at and infos[0].created_at.tzinfo is not None
    assert store.read("HF_TOKEN") == {"HF_TOKEN": VALUE, "HF_HOME": "/cache"}
    # Several secrets merge in order: a later one's key wins.
    store.create("override", {"HF_HOME": "/other"})
    assert store.resolve(["HF_TOKEN", "override"])["HF_HOME"] == "/other"
    assert store.resolve(["override", "HF_TOKEN"])["HF_HOME"] == "/cache"
    assert store.resolve([]) == {}
    assert store.delete("db.prod") is True
    assert [i.name for i in store.list()] == ["HF_TOKEN", "override"]
    with pytest.raises(NotFoundError) as info:
        store.delete("db.prod")
    assert str(info.value) == (
        f"secret 'db.prod' is not in the secret store {store.path}. Fix: check the name with `apothic secret list`, "
        "or pass --allow-missing (SDK: allow_missing=True).")
    assert store.delete("db.prod", allow_missing=True) is False


def test_an_existing_secret_is_refused_kept_or_replaced(store: SecretStore) -> None:
    store.create("tok", {"A": "one", "B": "two"})
    created = store.list()[0].created_at
    with pytest.raises(SecretExistsError) as info:
        store.create("tok", {"A": "three"})
    assert str(info.value) == (
        "secret 'tok' already exists (keys A, B); allowed: a name not in the store. Fix: replace it with "
        "`apothic secret create tok ... --force` (SDK: overwrite=True), or delete it first.")
    assert isinstance(info.value, InvalidError)
    assert store.create("tok", {"A": "three"}, allow_existing=True) == "kept"
    assert store.read("tok") == {"A": "one", "B": "two"}
    assert store.create("tok", {"A": "three"}, overwrite=True) == "replaced"
    assert store.read("tok") == {"A": "three"}  # replaced whole, not merged
    (info_after,) = store.list()
    assert info_after.created_at == created and info_after.updated_at > created
    with pytest.raises(InvalidError, match="overwrite=True and allow_existing=True contradict each other"):
        store.create("tok", {"A": "x"}, overwrite=True, allow_existing=True)


def test_missing_secrets_are_named_with_the_fix(store: SecretStore) -> None:
    store.create("present", {"A": "1"})
    with pytest.raises(MissingSecretsError) as info:
        store.resolve(["present", "HF_TOKEN", "other"])
    assert info.value.names == ["HF_TOKEN", "other"]
    assert isinstance(info.value, NotFoundError)
    assert str(info.value) == (
        f"secrets 'HF_TOKEN', 'other' are not in the secret store {store.path}. Fix: create it where the control worker "
        "reads it: `apothic secret create HF_TOKEN KEY=VALUE`; `apothic secret create other KEY=VALUE` (or "
        "apothic.Secret.objects.create(name, {KEY: VALUE})).")
    with pytest.raises(MissingSecretsError, match=r"^secret 'HF_TOKEN' is not in the secret store .*Fix: create it "
                                                  r"where the control worker reads it: `apothic secret create HF_TOKEN "
                                                  r"KEY=VALUE`"):
        store.read("HF_TOKEN")


def test_the_file_is_the_owners_only_and_its_folder_private(store: SecretStore) -> None:
    os.umask(0o022)
    store.create("tok", {"A": VALUE})
    assert mode(store.path) == 0o600
    assert mode(store.path.parent) == 0o700
    assert mode(store.lock_path) == 0o600
    data = json.loads(store.path.read_text())
    assert data == {"format": "apothic-secrets", "version": 1, "secrets": {"tok": {
        "values": {"A": VALUE}, "created_at": data["secrets"]["tok"]["created_at"],
        "updated_at": data["secrets"]["tok"]["updated_at"]}}}
    # The default folder is kept private; a store others may read is refused, naming the chmod.
    store.path.parent.chmod(0o755)
    store.create("tok2", {"A": "1"})
    assert mode(store.path.parent) == 0o700
    store.path.chmod(0o644)
    with pytest.raises(InvalidError) as info:
        store.list()
    assert str(info.value) == (
        f"the secret store {store.path}: others may read it (mode 0644); allowed: mode 0600, its owner only. "
        f"Fix: chmod 600 {store.path}.")
    store.path.chmod(0o600)
    assert [i.name for i in store.list()] == ["tok", "tok2"]


def test_a_folder_others_may_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    store = SecretStore(shared / "secrets.json")  # a configured path: its folder is not Apothic's to change
    with pytest.raises(InvalidError) as info:
        store.create("tok", {"A": "1"})
    assert str(info.value) == (
        f"the secret store {store.path}: its folder {shared} may be written by others (mode 0777), who could replace "
        f"the store. Fix: chmod 700 {shared}, or keep the store in a private folder.")
    assert mode(shared) == 0o777 and not store.path.exists()
    # A folder Apothic creates for a configured path is private.
    made = SecretStore(tmp_path / "new" / "deeper" / "secrets.json")
    made.create("tok", {"A": "1"})
    assert mode(made.path.parent) == 0o700


@pytest.mark.parametrize("content, detail", [
    (b"{not json", "is not valid JSON (Expecting property name enclosed in double quotes at line 1, column 2)"),
    (b"\xff\xfe", "is not UTF-8 text"),
    (b'{"secrets": {}}', 'is not an Apothic secret store (no "format": \'apothic-secrets\' and "secrets")'),
    (b'{"format": "apothic-secrets", "version": 7, "secrets": {}}', "has version 7; this Apothic reads version 1"),
    (b'{"format": "apothic-secrets", "version": 1, "secrets": {"t": {"values": {"A": 5}}}}',
     "the entry of secret 't' is damaged"),
])
def test_a_damaged_store_is_named_never_shown(store: SecretStore, content: bytes, detail: str) -> None:
    store.create("tok", {"A": "1"})
    store.path.write_bytes(content)
    with pytest.raises(InvalidError) as info:
        store.resolve(["tok"])
    assert str(info.value).startswith(f"the secret store {store.path}: {detail}. Fix: ")


def test_bad_names_keys_and_values_are_all_listed_without_values(store: SecretStore) -> None:
    with pytest.raises(InvalidError) as info:
        store.create("bad name", {"1X": "a", "APOTHIC_TEMPORAL_ADDRESS": "b", "OK": 5, "NUL": "x\0" + VALUE,
                                  "LONG": "y" * 40_000, "has-dash": VALUE})
    text = str(info.value)
    assert text.startswith("secret 'bad name': 7 problem(s):\n"), text
    lines = text.splitlines()[1:]
    assert lines == [
        "  - name = 'bad name': invalid name; allowed: 1-63 letters, digits, '_', '-' and '.', starting with a letter "
        "or digit. Fix: rename it, e.g. Secret.from_name('HF_TOKEN').",
        f"  - key = '1X': not an environment variable name; allowed: {_store.KEY_ALLOWED}. Fix: write '_1X'.",
        f"  - key = 'APOTHIC_TEMPORAL_ADDRESS': reserved for the runtime's own variables; allowed: {_store.KEY_ALLOWED}."
        " Fix: rename it, e.g. 'TEMPORAL_ADDRESS'.",
        f"  - OK = <a value of type int>: not a string; allowed: {_store.VALUE_ALLOWED}. Fix: give the value as a string.",
        f"  - NUL = <hidden, {len(VALUE) + 2} characters>: contains a NUL character; allowed: {_store.VALUE_ALLOWED}. "
        "Fix: remove the NUL characters.",
        f"  - LONG = <hidden, 40000 characters>: too long; allowed: {_store.VALUE_ALLOWED}. Fix: put large data in a "
        "volume or a bucket instead.",
        f"  - key = 'has-dash': not an environment variable name; allowed: {_store.KEY_ALLOWED}. Fix: write 'has_dash'.",
    ]
    assert all(form not in text for form in encoded_forms(VALUE))
    for values, detail in (({}, "no pairs"), ("A=1", "not a dict")):
        with pytest.raises(InvalidError, match=detail):
            store.create("tok", values)  # type: ignore[arg-type]
    assert not store.path.exists()  # nothing was written


def _writer(path: str, worker: int, count: int) -> None:
    s = SecretStore(Path(path))
    for i in range(count):
        s.create(f"w{worker}-{i}", {"K": f"{worker}-{i}"})


def test_concurrent_writers_lose_nothing_and_readers_see_whole_files(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    store = SecretStore(path)
    store.create("seed", {"K": "0"})
    seen: list[int] = []
    done = threading.Event()

    def read_all_the_time() -> None:
        while not done.is_set():
            seen.append(len(store.list()))  # a torn file would raise here

    reader = threading.Thread(target=read_all_the_time)
    reader.start()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 15)) for w in range(4)]
    threads = [threading.Thread(target=_writer, args=(str(path), 10 + w, 15)) for w in range(3)]
    try:
        for p in procs:
            p.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
    finally:
        done.set()
        reader.join()
    names = {i.name for i in store.list()}
    assert names == {"seed"} | {f"w{w}-{i}" for w in (0, 1, 2, 3, 10, 11, 12) for i in range(15)}
    assert seen == sorted(seen) and len(seen) > 1  # readers only ever saw the store grow
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temporary file left


def test_a_writer_waits_for_the_lock_and_gives_up_naming_it(store: SecretStore,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    store.create("tok", {"A": "1"})
    monkeypatch.setattr(_store, "LOCK_TIMEOUT_S", 0.5)
    fd = os.open(store.lock_path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another writer, stuck
    try:
        with pytest.raises(apothic.ApothicError) as info:
            store.create("other", {"A": "2"})
        assert str(info.value) == (
            f"the secret store {store.path}: another writer has held {store.lock_path} for 0.5 s. Fix: wait for it, "
            f"or end the process that holds it (`fuser {store.lock_path}`).")
        assert store.resolve(["tok"]) == {"A": "1"}  # readers do not wait
    finally:
        os.close(fd)
    store.create("other", {"A": "2"})
    assert [i.name for i in store.list()] == ["other", "tok"]


def test_the_store_is_where_the_settings_say(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APOTHIC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("APOTHIC_SECRETS_FILE", raising=False)
    monkeypatch.delenv("APOTHIC_CONFIG", raising=False)
    assert store_for(load_settings()).path == tmp_path / "home" / "secrets" / "secrets.json"
    monkeypatch.setenv("APOTHIC_SECRETS_FILE", "shared/s.json")
    assert store_for(load_settings()).path == tmp_path / "home" / "shared" / "s.json"
    config = tmp_path / "temporal-dev.yaml"
    config.write_text(f"secrets:\n  file: {tmp_path / 'cfg.json'}\n")
    monkeypatch.setenv("APOTHIC_CONFIG", str(config))
    assert store_for(load_settings()).path == tmp_path / "home" / "shared" / "s.json"  # the variable wins
    monkeypatch.delenv("APOTHIC_SECRETS_FILE")
    assert store_for(load_settings()).path == tmp_path / "cfg.json"
    config.write_text(f"secrets:\n  file: {tmp_path}\n  files: x\n")
    with pytest.raises(InvalidError) as info:
        load_settings()
    assert str(info.value).splitlines()[1:] == [
        f"  - {config}: secrets.file={str(tmp_path)!r}: allowed: a file path (relative: under $APOTHIC_HOME); that is "
        'a folder; name the file. Fix: in the secrets section, write e.g. "file: /srv/apothic/secrets.json", or "" '
        "for $APOTHIC_HOME/secrets/secrets.json.",
        f"  - {config}: unknown key(s) ['files'] in 'secrets' (secrets.files='x'): allowed: file. Fix: rename "
        "secrets.files to secrets.file.",
    ]
    config.write_text("secrets:\n  file: 5\n")
    with pytest.raises(InvalidError, match=r"secrets\.file.*allowed: a file path \(relative: under \$APOTHIC_HOME\)"):
        load_settings()


def test_container_api_key_is_checked_and_replaces_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APOTHIC_TEMPORAL_ADDRESS", "127.0.0.1:7233")
    monkeypatch.setenv("APOTHIC_TEMPORAL_API_KEY", "worker-key")
    monkeypatch.delenv("APOTHIC_CONTAINER_TEMPORAL_API_KEY", raising=False)
    assert load_settings().connection_env()["APOTHIC_TEMPORAL_API_KEY"] == "worker-key"
    monkeypatch.setenv("APOTHIC_CONTAINER_TEMPORAL_API_KEY", "container-key")
    settings = load_settings()
    assert settings.api_key == "worker-key"  # the worker itself connects with its own
    assert settings.connection_env()["APOTHIC_TEMPORAL_API_KEY"] == "container-key"
    assert "worker-key" not in json.dumps(settings.connection_env())
    assert "APOTHIC_TEMPORAL_TLS" not in settings.connection_env()  # unsaid: a key turns TLS on, there too
    monkeypatch.setenv("APOTHIC_TEMPORAL_TLS", "0")
    assert load_settings().connection_env()["APOTHIC_TEMPORAL_TLS"] == "0"  # said off: off in containers too
    monkeypatch.delenv("APOTHIC_TEMPORAL_TLS")
    monkeypatch.setenv("APOTHIC_CONTAINER_TEMPORAL_API_KEY", "container key\n")
    with pytest.raises(InvalidError) as info:
        load_settings()
    assert "APOTHIC_CONTAINER_TEMPORAL_API_KEY=<hidden>: allowed: a key without spaces or newlines" in str(info.value)
    assert "container key" not in str(info.value)


def test_process_containers_get_only_the_basics_of_the_workers_environment() -> None:
    worker = {"PATH": "/usr/bin", "HOME": "/root", "LC_ALL": "C.UTF-8", "APOTHIC_HOME": "/state",
              "VAST_API_KEY": "vk", "AWS_ACCESS_KEY_ID": "ak", "AWS_SECRET_ACCESS_KEY": "sk",
              "APOTHIC_TEMPORAL_API_KEY": "tk", "APOTHIC_CONTAINER_TEMPORAL_API_KEY": "ck", "HF_TOKEN": "hf",
              "APOTHIC_SECRETS_FILE": "/s.json", "DOCKER_HOST": "unix:///x"}
    assert passed_env(worker) == {"PATH": "/usr/bin", "HOME": "/root", "LC_ALL": "C.UTF-8", "APOTHIC_HOME": "/state"}


def test_redaction_finds_plain_json_and_base64_forms() -> None:
    text = (f"plain {VALUE}; json {json.dumps({'v': VALUE})}; "
            f"b64 {base64.b64encode(b'xy' + VALUE.encode()).decode()}; short 'ab' stays")
    out = redact(text, [VALUE, "ab"])
    assert all(form not in out for form in encoded_forms(VALUE)), out
    assert out.count("<secret>") == 3 and "short 'ab' stays" in out
    for shift in range(3):  # every base64 alignment is found
        blob = base64.b64encode(b"z" * shift + VALUE.encode() + b"tail").decode()
        assert any(form in blob for form in encoded_forms(VALUE)), shift


def test_the_sdk_writes_the_store_of_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APOTHIC_SECRETS_FILE", str(tmp_path / "sdk" / "secrets.json"))
    objects = apothic.Secret.objects
    assert objects is apothic.Secret.from_name("X").objects
    assert objects.create("HF_TOKEN", {"HF_TOKEN": VALUE}) is None
    assert objects.create("HF_TOKEN", {"HF_TOKEN": "ignored"}, allow_existing=True) is None
    (info,) = objects.list()
    assert isinstance(info, apothic.SecretInfo) and (info.name, info.keys) == ("HF_TOKEN", ("HF_TOKEN",))
    assert SecretStore(tmp_path / "sdk" / "secrets.json").read("HF_TOKEN") == {"HF_TOKEN": VALUE}
    with pytest.raises(SecretExistsError):
        objects.create("HF_TOKEN", {"HF_TOKEN": "x"})

    async def twins() -> list[str]:
        await objects.aio.create("HF_TOKEN", {"HF_TOKEN": "new"}, overwrite=True)
        await objects.aio.create("other", {"K": "v"})
        await objects.aio.delete("other")
        return [i.name for i in await objects.aio.list()]

    assert asyncio.run(twins()) == ["HF_TOKEN"]
    assert SecretStore(tmp_path / "sdk" / "secrets.json").read("HF_TOKEN") == {"HF_TOKEN": "new"}
    objects.delete("HF_TOKEN")
    objects.delete("HF_TOKEN", allow_missing=True)
    with pytest.raises(NotFoundError, match="secret 'HF_TOKEN' is not in the secret store"):
        objects.delete("HF_TOKEN")
    assert objects.list() == []
