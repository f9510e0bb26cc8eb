"""The codec server as a user meets it: ``apothic codec-server`` beside a real server, read through
``temporal workflow show/describe --codec-endpoint`` (the protocol the Web UI speaks), and the
embedded default starting it with the Web UI pointed at it and ``apothic stop`` ending it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import apothic
from apothic import App
from apothic._control._embedded import port_open, temporal_binary, wait_for_port

from ..conftest import ROOT, free_port, wait_until
from .test_quickstart import APOTHIC, Embedded


def temporal_json(address: str, *args: str, codec: str | None = None) -> dict:
    """``temporal ARGS -o json`` against ``address`` (through the codec server ``codec``)."""
    cmd = [temporal_binary(), *args, "--address", address, "-o", "json"]
    if codec:
        cmd += ["--codec-endpoint", codec]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout)


def payload_values(node: object) -> list[object]:
    """``node`` (a history, a description) and every JSON payload in it decoded from its base64
    (the CLI shows some payloads as their JSON already, others as they travel)."""
    return [node, *_encoded(node)]


def _encoded(node: object) -> list[object]:
    found: list[object] = []
    if isinstance(node, dict):
        metadata = node.get("metadata")
        if isinstance(metadata, dict) and isinstance(node.get("data"), str) and \
                base64.b64decode(metadata.get("encoding", "")) == b"json/plain":
            found.append(json.loads(base64.b64decode(node["data"])))
        for v in node.values():
            found += _encoded(v)
    elif isinstance(node, list):
        for v in node:
            found += _encoded(v)
    return found


def pickled(values: list[object], kind: str) -> list[dict]:
    """The renderings of the given kind anywhere in ``values``."""
    out: list[dict] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("cloudpickle") == kind:
                out.append(node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(values)
    return out


@pytest.fixture(scope="module")
def codec(temporal: str) -> Iterator[str]:
    """``apothic codec-server --port P`` with this session's settings (and so its payload key)."""
    port = free_port()
    log = open(Path(os.environ["APOTHIC_HOME"]) / f"codec-{port}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "apothic", "codec-server", "--port", str(port)], cwd=ROOT,
                            env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, timeout=60, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.usefixtures("control_worker")
def test_temporal_workflow_show_reads_arguments_results_and_errors(temporal: str, codec: str, app_name: str) -> None:
    app = App(app_name)

    def script_types() -> tuple[type, type]:
        import dataclasses

        @dataclasses.dataclass
        class Basket:
            items: list[str]
            coupon: str | None = None

        class OutOfStock(Exception):
            pass

        return Basket, OutOfStock

    Basket, OutOfStock = script_types()

    @app.function()
    def checkout(basket: Basket, *, express: bool = False) -> dict:
        if "caviar" in basket.items:
            raise OutOfStock("caviar", 0)
        return {"total": 3 * len(basket.items), "express": express}

    app.deploy()
    ok = checkout.spawn(Basket(["apple", "pear"]), express=True)
    assert ok.wait() == {"total": 6, "express": True}
    bad = checkout.spawn(Basket(["caviar"]))
    with pytest.raises(OutOfStock):
        bad.wait()

    history = temporal_json(temporal, "workflow", "show", "-w", ok.job_id, codec=codec)
    values = payload_values(history)
    basket = {"$type": f"{__name__}.Basket", "fields": {"items": ["apple", "pear"], "coupon": None}}
    args = pickled(values, "args")  # the job's input and each attempt's
    assert args and all(a.get("args") == [basket] and a.get("kwargs") == {"express": True} for a in args), args
    assert args[0]["function"] == f"{app_name}.checkout" and args[0]["size"] > 0
    (result, *_) = pickled(values, "result")
    assert result["type"] == "dict" and result["value"] == {"total": 6, "express": True}
    # The same history without the codec server: base64 cloudpickle, nothing readable.
    raw = payload_values(temporal_json(temporal, "workflow", "show", "-w", ok.job_id))
    assert not pickled(raw, "args") and "apple" not in json.dumps(raw)

    failed = payload_values(temporal_json(temporal, "workflow", "show", "-w", bad.job_id, codec=codec))
    (error, *_) = pickled(failed, "exception")
    assert error["type"] == f"{__name__}.OutOfStock"
    assert error["value"]["message"] == "('caviar', 0)" and error["value"]["args"] == ["caviar", 0]


@pytest.mark.usefixtures("control_worker")
def test_checkpoints_and_blob_references_read_through_the_codec(temporal: str, codec: str, app_name: str,
                                                               tmp_path: Path) -> None:
    release = tmp_path / "release"
    app = App(app_name)

    @app.function()
    def train(blob: bytes) -> int:

        apothic.checkpoint({"epoch": 3, "loss": 0.25})
        while not release.exists():
            time.sleep(0.05)
        return len(blob)

    app.deploy()
    job = train.spawn(b"x" * 400_000)  # beyond the blob threshold: it travels as a reference
    try:
        def checkpoint_shown() -> bool:
            described = payload_values(temporal_json(temporal, "workflow", "describe", "-w", job.job_id, codec=codec))
            return any(c.get("value") == {"epoch": 3, "loss": 0.25} for c in pickled(described, "checkpoint"))

        wait_until(checkpoint_shown, timeout=120, interval=0.5, what="the checkpoint in the running attempt's heartbeat")
    finally:
        release.write_text("go")
    assert job.wait() == 400_000
    values = payload_values(temporal_json(temporal, "workflow", "show", "-w", job.job_id, codec=codec))
    (ref, *_) = pickled(values, "args")
    assert ref["size"] > 400_000 and ref["blob"]["key"].startswith("v0/d/sha256/")
    assert ref["note"] == "in the blob store: not read by the codec server" and "args" not in ref


def test_the_embedded_default_starts_it_for_the_web_ui_and_stop_ends_it(tmp_path: Path) -> None:
    embedded = Embedded(tmp_path)
    config = yaml.safe_load(Path(embedded.env["APOTHIC_CONFIG"]).read_text())
    codec_port = config["server"]["codec_port"]
    try:
        subprocess.run([str(APOTHIC), "jobs", "list"], cwd=ROOT, env=embedded.env, capture_output=True, text=True,
                       timeout=180, check=True)  # the first client starts what is missing
        assert [name.split("-")[0] for name in embedded.pid_files()] == ["codec", "server", "worker"]
        wait_for_port("127.0.0.1", codec_port, timeout=60)
        # The Web UI's own settings name the codec server as its endpoint ...
        wait_for_port("127.0.0.1", embedded.ui_port, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{embedded.ui_port}/api/v1/settings", timeout=10) as r:
            settings = json.loads(r.read())
        assert settings["Codec"]["Endpoint"] == f"http://127.0.0.1:{codec_port}"
        # ... which answers the UI's origin (the browser's preflight).
        preflight = urllib.request.Request(f"http://127.0.0.1:{codec_port}/decode", method="OPTIONS", headers={
            "Origin": f"http://127.0.0.1:{embedded.ui_port}", "Access-Control-Request-Method": "POST"})
        with urllib.request.urlopen(preflight, timeout=10) as r:
            assert r.headers["Access-Control-Allow-Origin"] == f"http://127.0.0.1:{embedded.ui_port}"
        stopped = embedded.stop()
        assert stopped.returncode == 0, stopped.stderr
        assert any(line.startswith("stopped codec ") for line in stopped.stdout.splitlines()), stopped.stdout
        embedded.assert_all_stopped()
        assert not port_open("127.0.0.1", codec_port)
    finally:
        embedded.stop()
