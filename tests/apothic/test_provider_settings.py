"""Which providers are on, in which order: temporal-dev.yaml's `providers`, and the environment."""

from __future__ import annotations

import pytest

from apothic import InvalidError
from apothic._control._config import ProviderSettings


def enabled(raw: dict, **env: str) -> tuple[str, ...]:
    return ProviderSettings.from_raw(raw, env).enabled


def test_defaults_when_the_section_or_a_provider_is_left_out() -> None:
    assert enabled({}) == ("process", "docker")  # docker auto; vast auto needs a key
    assert enabled({}, VAST_API_KEY="k") == ("process", "docker", "vast")
    assert enabled({"process": None}) == ("process", "docker")  # a bare key keeps its default
    assert enabled({"vast": {"enabled": True}}) == ("vast", "process", "docker")


def test_the_order_of_the_section_is_the_preference_and_false_turns_one_off() -> None:
    raw = {"docker": {"enabled": True, "registry": "127.0.0.1:5000"}, "process": {"enabled": False},
           "vast": {"enabled": "auto", "max_offers": 3}}
    s = ProviderSettings.from_raw(raw, {"VAST_API_KEY": "k"})
    assert s.enabled == ("docker", "vast") and s.auto == ("vast",)
    assert s.docker_registry == "127.0.0.1:5000" and s.vast_max_offers == 3


def test_the_environment_replaces_the_list_and_the_registries() -> None:
    s = ProviderSettings.from_raw({}, {"APOTHIC_PROVIDERS": "docker, process", "APOTHIC_VAST_REGISTRY": "r:5000"})
    assert s.enabled == ("docker", "process") and s.vast_registry == "r:5000"


def test_unknown_providers_are_refused_with_the_allowed_names() -> None:
    with pytest.raises(InvalidError, match="allowed|Allowed"):
        ProviderSettings.from_raw({"lambda": {"enabled": True}}, {})
    with pytest.raises(InvalidError, match="APOTHIC_PROVIDERS"):
        ProviderSettings.from_raw({}, {"APOTHIC_PROVIDERS": "process,k8s"})
