"""How the client asks for TLS: an API key alone means TLS (as Temporal Cloud needs)."""

from __future__ import annotations

import pytest

from apothic._control._client import _tls
from apothic._control._config import Settings


def settings(**kw: object) -> Settings:
    return Settings(address="example.tmprl.cloud:7233", namespace="ns.acct", embedded=False, **kw)  # type: ignore[arg-type]


def test_no_tls_and_no_key_is_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APOTHIC_TEMPORAL_TLS", raising=False)
    assert _tls(settings()) is False


def test_an_api_key_alone_leaves_tls_to_the_sdk_which_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APOTHIC_TEMPORAL_TLS", raising=False)
    assert _tls(settings(api_key="k")) is None


def test_an_explicit_tls_off_keeps_it_off_with_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APOTHIC_TEMPORAL_TLS", "0")
    assert _tls(settings(api_key="k")) is False


def test_tls_on_is_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APOTHIC_TEMPORAL_TLS", "1")
    assert _tls(settings(tls=True)) is True
