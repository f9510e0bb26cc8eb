"""Signed payloads as pure logic: the codec, which key a process uses, the key file (mode,
folder, racing creators) and the settings that name a key."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import secrets
import stat
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError

from apothic import InvalidError
from apothic._control._config import Settings, load_settings
from apothic._data._signing import (
    KEY_ENV,
    REFUSED_TYPE,
    SIGNATURE,
    PayloadKey,
    PayloadRefusedError,
    SigningCodec,
    container_env,
    data_converter,
    home_key,
    payload_key,
)
from apothic.exceptions import PermissionDeniedError

KEY_VARS = ("APOTHIC_PAYLOAD_KEY", "APOTHIC_PAYLOAD_KEY_FILE", "APOTHIC_TEMPORAL_ADDRESS", "APOTHIC_TEMPORAL_API_KEY",
            "APOTHIC_TEMPORAL_TLS", "APOTHIC_TEMPORAL_TLS_CERT", "APOTHIC_TEMPORAL_TLS_KEY", "APOTHIC_TEMPORAL_TLS_CA",
            "APOTHIC_CONFIG")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("APOTHIC_HOME", str(home))
    return home


def key(tag: str = "test") -> PayloadKey:
    return PayloadKey(secrets.token_bytes(32), tag)


def run(coro):
    return asyncio.run(coro)


# --- the codec ---


def test_a_signed_payload_keeps_its_data_and_encoding_and_verifies() -> None:
    codec = SigningCodec(key())
    converter = DataConverter(payload_codec=codec)
    values = [{"job_id": "job-1", "args": {"data": "gASV"}}, "text", None, 7]
    payloads = run(converter.encode(values))
    plain = DataConverter.default.payload_converter.to_payloads(values)
    for signed, unsigned in zip(payloads, plain, strict=True):
        assert signed.data == unsigned.data and signed.metadata["encoding"] == unsigned.metadata["encoding"]
        assert set(signed.metadata) == {*unsigned.metadata, SIGNATURE}
        assert signed.metadata[SIGNATURE].startswith(f"v1:{codec.key.key_id}:".encode())
    assert run(converter.decode(payloads)) == values
    assert SIGNATURE not in codec.verify(payloads[0]).metadata
    # A reader without the key (the Temporal UI, the replayer, an older Apothic) reads them as before.
    assert run(DataConverter.default.decode(payloads)) == values


def test_the_input_payload_is_not_changed() -> None:
    codec = SigningCodec(key())
    original = DataConverter.default.payload_converter.to_payloads(["x"])[0]
    copy = Payload()
    copy.CopyFrom(original)
    signed = codec.sign(original)
    assert original == copy and SIGNATURE in signed.metadata
    codec.verify(signed)
    assert SIGNATURE in signed.metadata


def refusal(codec: SigningCodec, payload: Payload) -> BaseException:
    with pytest.raises(Exception) as info:  # the type is checked by the callers
        codec.verify(payload)
    return info.value


def test_unsigned_changed_and_forged_payloads_are_refused() -> None:
    codec = SigningCodec(key())
    unsigned = DataConverter.default.payload_converter.to_payloads([{"a": 1}])[0]
    e = refusal(codec, unsigned)
    assert isinstance(e, PayloadRefusedError) and isinstance(e, PermissionDeniedError)
    assert "refused a payload: it is not signed" in str(e) and "Fix: " in str(e)

    signed = codec.sign(unsigned)
    for change in ("data", "encoding", "extra metadata", "signature"):
        tampered = Payload()
        tampered.CopyFrom(signed)
        if change == "data":
            tampered.data = b'{"a":2}'
        elif change == "encoding":
            tampered.metadata["encoding"] = b"binary/plain"
        elif change == "extra metadata":
            tampered.metadata["messageType"] = b"x"
        else:
            tampered.metadata[SIGNATURE] = signed.metadata[SIGNATURE][:-1] + b"0"
            if tampered.metadata[SIGNATURE] == signed.metadata[SIGNATURE]:
                tampered.metadata[SIGNATURE] = signed.metadata[SIGNATURE][:-1] + b"1"
        e = refusal(codec, tampered)
        assert isinstance(e, PayloadRefusedError) and "does not match its content" in str(e), change

    # A signature naming this key but made with another: forged.
    forger = SigningCodec(key("forger"))
    forger._tag = f"v1:{codec.key.key_id}:".encode()
    assert "does not match its content" in str(refusal(codec, forger.sign(unsigned)))
    for damaged in (b"v1:only-two", b"v2:" + codec.key.key_id.encode() + b":00", b"\xff\xfe"):
        tampered = Payload()
        tampered.CopyFrom(signed)
        tampered.metadata[SIGNATURE] = damaged
        assert "damaged or does not match" in str(refusal(codec, tampered)), damaged


def test_the_servers_own_constant_passes_unsigned_and_nothing_like_it() -> None:
    codec = SigningCodec(key())
    (made,) = DataConverter.default.payload_converter.to_payloads(["ACTIVITY_ID_NOT_STARTED"])
    assert codec.verify(made) == made  # what the server writes when an unstarted activity is cancelled
    for value in ("ACTIVITY_ID_NOT_STARTED ", "OTHER", ["ACTIVITY_ID_NOT_STARTED"]):
        (other,) = DataConverter.default.payload_converter.to_payloads([value])
        assert isinstance(refusal(codec, other), PayloadRefusedError), value
    extra = Payload()
    extra.CopyFrom(made)
    extra.metadata["messageType"] = b"x"
    assert isinstance(refusal(codec, extra), PayloadRefusedError)


def test_in_the_control_worker_a_refusal_fails_the_workflow_but_another_key_is_retried() -> None:
    mine, theirs = key("mine"), key("theirs")
    codec = SigningCodec(mine, in_workflows=True)
    unsigned = DataConverter.default.payload_converter.to_payloads(["x"])[0]
    e = refusal(codec, unsigned)
    assert isinstance(e, ApplicationError) and e.non_retryable and e.type == REFUSED_TYPE
    e = refusal(codec, SigningCodec(theirs).sign(unsigned))
    assert isinstance(e, PayloadRefusedError) and not isinstance(e, ApplicationError)  # fails the task: retried
    assert f"another key (id {theirs.key_id}) than this process's (id {mine.key_id}, from mine)" in str(e)


def test_a_refusal_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    codec = SigningCodec(key())
    with caplog.at_level("WARNING", logger="apothic.signing"):
        refusal(codec, DataConverter.default.payload_converter.to_payloads(["x"])[0])
    assert any("refused a payload: it is not signed" in r.getMessage() for r in caplog.records)


def test_the_key_never_shows_in_reprs_or_messages() -> None:
    k = key()
    assert k.secret.hex() not in repr(k)
    settings = Settings(address="127.0.0.1:7233", namespace="default", embedded=True, payload_key=k.secret.hex())
    assert k.secret.hex() not in repr(settings)
    codec = SigningCodec(k)
    e = refusal(codec, SigningCodec(key()).sign(DataConverter.default.payload_converter.to_payloads([1])[0]))
    assert k.secret.hex() not in str(e)
    assert container_env(codec) == {KEY_ENV: k.secret.hex()}
    assert container_env(None) == {}


# --- which key ---


def test_the_embedded_server_and_a_server_on_this_host_use_the_home_key(home: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    made = payload_key(load_settings())
    assert made is not None and made.origin == str(home / "payload.key")
    for address in ("127.0.0.1:7233", "localhost:7233", "[::1]:7233", "127.0.0.2:7233"):
        monkeypatch.setenv("APOTHIC_TEMPORAL_ADDRESS", address)
        got = payload_key(load_settings())
        assert got is not None and got.key_id == made.key_id, address


def test_a_key_made_next_to_an_older_database_says_what_it_cannot_read(home: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    home.mkdir()
    (home / "temporal.db").write_bytes(b"SQLite format 3\0")  # a dev server's database from before the key
    with caplog.at_level("WARNING", logger="apothic.signing"):
        payload_key(load_settings())
        payload_key(load_settings())  # the key exists now: said once
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and f"database {home / 'temporal.db'} holds from before" in said[0], said
    assert "remove that database, and deploy again" in said[0]


def test_a_given_key_wins(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given = secrets.token_hex(32)
    monkeypatch.setenv("APOTHIC_PAYLOAD_KEY", given)
    got = payload_key(load_settings())
    assert got is not None and got.secret.hex() == given and got.origin == "APOTHIC_PAYLOAD_KEY"
    assert not (home / "payload.key").exists()
    monkeypatch.delenv("APOTHIC_PAYLOAD_KEY")
    path = tmp_path / "keys" / "k"
    path.parent.mkdir(mode=0o700)
    path.write_text(given.upper() + "\n")
    path.chmod(0o600)
    monkeypatch.setenv("APOTHIC_PAYLOAD_KEY_FILE", str(path))
    got = payload_key(load_settings())
    assert got is not None and got.secret.hex() == given and got.origin == f"APOTHIC_PAYLOAD_KEY_FILE={path}"
    assert not (home / "payload.key").exists()


def test_another_hosts_server_needs_a_key_unless_it_authenticates_clients(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    monkeypatch.setenv("APOTHIC_TEMPORAL_ADDRESS", "temporal.example.com:7233")
    with pytest.raises(InvalidError) as info:
        payload_key(load_settings())
    text = str(info.value)
    assert text.startswith("the Temporal server at temporal.example.com:7233 is on another host, and no payload key")
    assert "APOTHIC_PAYLOAD_KEY_FILE=<its path>" in text and "APOTHIC_TEMPORAL_API_KEY" in text
    with pytest.raises(InvalidError):
        data_converter(load_settings())  # what connect() does first: it refuses before connecting
    monkeypatch.setenv("APOTHIC_TEMPORAL_API_KEY", "key-of-the-server")
    assert payload_key(load_settings()) is None
    assert data_converter(load_settings()).payload_codec is None
    monkeypatch.delenv("APOTHIC_TEMPORAL_API_KEY")
    cert, pem = tmp_path / "c.pem", tmp_path / "c.key"
    cert.write_text("PEM")
    pem.write_text("PEM")
    monkeypatch.setenv("APOTHIC_TEMPORAL_TLS_CERT", str(cert))
    monkeypatch.setenv("APOTHIC_TEMPORAL_TLS_KEY", str(pem))
    assert payload_key(load_settings()) is None
    monkeypatch.setenv("APOTHIC_PAYLOAD_KEY", secrets.token_hex(32))  # given: signed there too
    assert isinstance(data_converter(load_settings()).payload_codec, SigningCodec)


# --- the key file ---


def test_the_home_key_is_made_once_mode_0600_and_kept(home: Path) -> None:
    first = home_key()
    path = home / "payload.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) == 64 and bytes.fromhex(path.read_text().strip()) == first.secret
    assert home_key().secret == first.secret
    assert sorted(p.name for p in home.iterdir()) == ["payload.key"]  # no temporary file left


def _race(home: str, barrier: object, out: object) -> None:
    os.environ["APOTHIC_HOME"] = home
    barrier.wait()  # type: ignore[attr-defined]
    out.put(home_key().key_id)  # type: ignore[attr-defined]


def test_racing_creators_end_with_one_key(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    n = 8
    for round_ in range(5):
        home = tmp_path / f"race-{round_}"
        home.mkdir()
        barrier, out = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(str(home), barrier, out)) for _ in range(n)]
        for p in procs:
            p.start()
        ids = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        on_disk = bytes.fromhex((home / "payload.key").read_text().strip())
        assert set(ids) == {PayloadKey(on_disk, "").key_id}, ids
        assert sorted(p.name for p in home.iterdir()) == ["payload.key"]


def key_problem(path: Path) -> str:
    with pytest.raises(InvalidError) as info:
        payload_key(load_settings())
    text = str(info.value)
    assert text.startswith(f"the payload key {path}: ") and "Fix: " in text
    return text


def test_a_key_file_others_may_read_or_replace_is_refused(home: Path) -> None:
    home_key()
    path = home / "payload.key"
    secret = path.read_text().strip()
    path.chmod(0o644)
    text = key_problem(path)
    assert "others may read it (mode 0644)" in text and f"chmod 600 {path}" in text and secret not in text
    path.chmod(0o600)
    home.chmod(0o777)
    try:
        text = key_problem(path)
        assert "its folder may be written by others (mode 0777)" in text and f"chmod 700 {home}" in text
        home.chmod(0o1777)  # sticky, like /tmp: others cannot replace our file
        assert payload_key(load_settings()) is not None
    finally:
        home.chmod(0o700)


def test_a_key_file_without_a_key_is_refused(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home.mkdir()
    path = home / "payload.key"
    for content, problem in (("", "it has 0 digits"), ("abc", "odd number"), ("zz" * 32, "not hexadecimal"),
                             ("ab" * 16, "it has 32 digits (16 bytes)"), ("ab" * 16 + " " + "ab" * 16, "spaces"),
                             ("é", "not hexadecimal")):
        path.write_text(content)
        path.chmod(0o600)
        text = key_problem(path)
        assert "holds no payload key (" in text and problem in text, (content, text)
    path.unlink()
    path.mkdir()
    assert "is not a regular file" in key_problem(path)


def test_the_key_settings_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused() -> str:
        with pytest.raises(InvalidError) as info:
            load_settings()
        return str(info.value)

    for bad, detail in (("ab" * 16, "it has 32 digits (16 bytes)"), ("g" * 64, "not hexadecimal"),
                        ("ab" * 32 + "\n", "spaces or a line break")):
        monkeypatch.setenv("APOTHIC_PAYLOAD_KEY", bad)
        text = refused()
        assert "APOTHIC_PAYLOAD_KEY=<hidden>: allowed: the hexadecimal digits of at least 32 random bytes" in text
        assert detail in text and bad.strip() not in text and "Fix: make a key with (umask 077;" in text
    monkeypatch.delenv("APOTHIC_PAYLOAD_KEY")
    monkeypatch.setenv("APOTHIC_PAYLOAD_KEY_FILE", str(tmp_path / "missing.key"))
    text = refused()
    assert f"APOTHIC_PAYLOAD_KEY_FILE={str(tmp_path / 'missing.key')!r}: allowed: the path of a file" in text
    assert "no such file" in text
    path = tmp_path / "k"
    path.write_text(secrets.token_hex(32))
    monkeypatch.setenv("APOTHIC_PAYLOAD_KEY_FILE", str(path))
    monkeypatch.setenv("APOTHIC_PAYLOAD_KEY", secrets.token_hex(32))
    assert "APOTHIC_PAYLOAD_KEY_FILE (with APOTHIC_PAYLOAD_KEY): allowed: one of the two" in refused()
